/*
 * hsm_bench — what psc_hsm costs on top of the token.
 *
 * For each operation the KMS performs (new epoch secret + KEK wrap, blob unwrap,
 * RSA and EC member wraps, signing with the identity key) it measures psc_hsm's
 * call and, in the same run, a bare loop of the same PKCS#11 calls (same
 * mechanisms and templates) on a session of its own (no checks, no messages,
 * inputs precomputed). Rounds of the two
 * alternate and the median rate is kept, so drift on a noisy machine hits both.
 * Makes its own throwaway SoftHSM token and test CA in a temp dir, prints a
 * table and writes its section into docs/benchmarks.md (bench/update-doc.sh).
 * Usage: hsm_bench [--no-doc] [--round-ms N] [--profile ROW m|b]
 * (--profile runs one side of one table row for 3 s, e.g. under perf record)
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "bench_util.h"
#include "hsm_ceremony.h"
#include "hsm_ctx.h"
#include "hsm_epoch.h"
#include "hsm_wrap.h"
#include "proto_keywrap.h"

#define ROUNDS 7

static int round_ms = 300;

/* CPU time of this thread: SoftHSM runs in-process, so this counts all the work
 * of an operation, and other processes on a shared machine barely disturb it. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "hsm_bench: %s: %s\n", what, detail ? detail : "");
	exit(1);
}

#define CK(call)                                                                                   \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != CKR_OK) {                                                               \
			fprintf(stderr, "hsm_bench: %s -> 0x%lx\n", #call, rv_);                   \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/* Shared state of one run. */
static struct {
	hsm_ctx *ctx;
	hsm_session *s;
	CK_FUNCTION_LIST *f;
	CK_SESSION_HANDLE h; /* bare session */
	CK_OBJECT_HANDLE kek, epoch_obj, eph_priv, idkey;
	hsm_key epoch;
	hsm_eph *eph;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	EVP_PKEY *rsa_pub, *ec_pub, *signer;
	uint8_t rsa_n[1024], rsa_e[16], ec_point[65], context[32];
	int rsa_nl, rsa_el;
	uint8_t psc_id[16], node_id[16];
} B;

typedef void (*op_fn)(void);

/* ---- psc_hsm side ---- */
static void m_generate(void)
{
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	psc_err err;
	if (hsm_epoch_generate(B.s, &k, blob, &err) != PSC_OK ||
	    hsm_key_destroy(B.s, &k, &err) != PSC_OK)
		die("hsm_epoch_generate", psc_err_text(&err));
}

static void m_unwrap(void)
{
	hsm_key k;
	psc_err err;
	if (hsm_epoch_load(B.s, B.blob, sizeof(B.blob), &k, &err) != PSC_OK ||
	    hsm_key_destroy(B.s, &k, &err) != PSC_OK)
		die("hsm_epoch_load", psc_err_text(&err));
}

static void m_wrap(EVP_PKEY *pub)
{
	uint8_t w[PROTO_KEYWRAP_MAX_WRAPPED], alg;
	size_t wl;
	psc_err err;
	if (hsm_wrap_for_member(B.s, &B.epoch, B.eph, pub, B.psc_id, 9, B.node_id, &alg, w,
				sizeof(w), &wl, &err) != PSC_OK)
		die("hsm_wrap_for_member", psc_err_text(&err));
}
static void m_wrap_rsa(void)
{
	m_wrap(B.rsa_pub);
}
static void m_wrap_ec(void)
{
	m_wrap(B.ec_pub);
}

static void m_sign(void)
{
	static const char msg[] = "PscRefresh manifest, 300 bytes or so ...";
	uint8_t sig[128];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, B.signer) != 1 ||
	    EVP_DigestSign(m, sig, &sl, (const uint8_t *)msg, sizeof(msg)) != 1)
		die("EVP_DigestSign", "libp11 identity key");
	EVP_MD_CTX_free(m);
}

/* ---- bare PKCS#11 side: the same calls, nothing else ---- */
static CK_OBJECT_CLASS c_secret = CKO_SECRET_KEY, c_pub = CKO_PUBLIC_KEY;
static CK_KEY_TYPE k_gen = CKK_GENERIC_SECRET, k_aes = CKK_AES, k_rsa = CKK_RSA;
static CK_ULONG len32 = 32;
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

static void b_generate(void)
{
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &c_secret, sizeof(c_secret)},
	    {CKA_KEY_TYPE, &k_gen, sizeof(k_gen)},
	    {CKA_VALUE_LEN, &len32, sizeof(len32)},
	    {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &yes, sizeof(yes)},
	    {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_SIGN, &no, sizeof(no)},
	    {CKA_VERIFY, &no, sizeof(no)},
	    {CKA_WRAP, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},
	    {CKA_DERIVE, &no, sizeof(no)},
	};
	CK_MECHANISM g = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0}, w = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE o;
	uint8_t out[40];
	CK_ULONG ol = sizeof(out);
	CK(B.f->C_GenerateKey(B.h, &g, t, 14, &o));
	CK(B.f->C_WrapKey(B.h, &w, B.kek, o, out, &ol));
	CK(B.f->C_DestroyObject(B.h, o));
}

static void b_unwrap(void)
{
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &c_secret, sizeof(c_secret)},
	    {CKA_KEY_TYPE, &k_gen, sizeof(k_gen)},
	    {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &yes, sizeof(yes)},
	    {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_SIGN, &no, sizeof(no)},
	    {CKA_VERIFY, &no, sizeof(no)},
	    {CKA_WRAP, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},
	    {CKA_DERIVE, &no, sizeof(no)},
	};
	CK_MECHANISM w = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE o;
	CK(B.f->C_UnwrapKey(B.h, &w, B.kek, B.blob + 17, 40, t, 13, &o));
	CK(B.f->C_DestroyObject(B.h, o));
}

static void b_wrap_rsa(void)
{
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &c_pub, sizeof(c_pub)},
	    {CKA_KEY_TYPE, &k_rsa, sizeof(k_rsa)},
	    {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_WRAP, &yes, sizeof(yes)},
	    {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_VERIFY, &no, sizeof(no)},
	    {CKA_MODULUS, B.rsa_n, (CK_ULONG)B.rsa_nl},
	    {CKA_PUBLIC_EXPONENT, B.rsa_e, (CK_ULONG)B.rsa_el},
	};
	CK_RSA_PKCS_OAEP_PARAMS op = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL, 0};
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &op, sizeof(op)};
	CK_OBJECT_HANDLE o;
	uint8_t out[512];
	CK_ULONG ol = sizeof(out);
	CK(B.f->C_CreateObject(B.h, t, 8, &o));
	CK(B.f->C_WrapKey(B.h, &m, o, B.epoch_obj, out, &ol));
	CK(B.f->C_DestroyObject(B.h, o));
}

static void b_wrap_ec(void)
{
	CK_ATTRIBUTE zt[] = {
	    {CKA_CLASS, &c_secret, sizeof(c_secret)}, {CKA_KEY_TYPE, &k_aes, sizeof(k_aes)},
	    {CKA_VALUE_LEN, &len32, sizeof(len32)},   {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},	      {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},	      {CKA_DERIVE, &yes, sizeof(yes)},
	};
	CK_ATTRIBUTE kt[] = {
	    {CKA_CLASS, &c_secret, sizeof(c_secret)}, {CKA_KEY_TYPE, &k_aes, sizeof(k_aes)},
	    {CKA_VALUE_LEN, &len32, sizeof(len32)},   {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},	      {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},	      {CKA_WRAP, &yes, sizeof(yes)},
	};
	CK_ECDH1_DERIVE_PARAMS ep = {CKD_NULL, 0, NULL, 65, B.ec_point};
	CK_MECHANISM m1 = {CKM_ECDH1_DERIVE, &ep, sizeof(ep)};
	CK_KEY_DERIVATION_STRING_DATA sd = {B.context, 32};
	CK_MECHANISM m2 = {CKM_AES_ECB_ENCRYPT_DATA, &sd, sizeof(sd)};
	CK_MECHANISM m3 = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE z, kek;
	uint8_t out[40];
	CK_ULONG ol = sizeof(out);
	CK(B.f->C_DeriveKey(B.h, &m1, B.eph_priv, zt, 8, &z));
	CK(B.f->C_DeriveKey(B.h, &m2, z, kt, 8, &kek));
	CK(B.f->C_DestroyObject(B.h, z));
	CK(B.f->C_WrapKey(B.h, &m3, kek, B.epoch_obj, out, &ol));
	CK(B.f->C_DestroyObject(B.h, kek));
}

static void b_sign(void)
{
	static uint8_t digest[32] = {1, 2, 3};
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	uint8_t sig[64];
	CK_ULONG sl = sizeof(sig);
	CK(B.f->C_SignInit(B.h, &m, B.idkey));
	CK(B.f->C_Sign(B.h, digest, 32, sig, &sl));
}

/* Runs fn for about round_ms of CPU time; returns ops per CPU-second. */
static double rate(op_fn fn)
{
	long n = 0;
	double t0 = cpu_s(), t;
	do {
		for (int i = 0; i < 8; i++)
			fn();
		n += 8;
		t = cpu_s();
	} while (t - t0 < round_ms / 1000.0);
	return (double)n / (t - t0);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct row {
	const char *name, *calls;
	op_fn mod, bare;
	double m, b;
};

static void measure(struct row *r)
{
	double m[ROUNDS], b[ROUNDS];
	r->mod();
	r->bare();			   /* warm-up */
	for (int i = 0; i < ROUNDS; i++) { /* alternate which side goes first */
		if (i & 1) {
			b[i] = rate(r->bare);
			m[i] = rate(r->mod);
		} else {
			m[i] = rate(r->mod);
			b[i] = rate(r->bare);
		}
	}
	if (getenv("HSM_BENCH_VERBOSE"))
		for (int i = 0; i < ROUNDS; i++)
			fprintf(stderr, "  %s round %d: psc_hsm %.0f bare %.0f\n", r->name, i, m[i],
				b[i]);
	qsort(m, ROUNDS, sizeof(double), cmp_d);
	qsort(b, ROUNDS, sizeof(double), cmp_d);
	r->m = m[ROUNDS / 2];
	r->b = b[ROUNDS / 2];
}

static int run(const char *cmd)
{
	int rc = system(cmd);
	return rc == 0 ? 0 : -1;
}

static CK_OBJECT_HANDLE find_one(CK_OBJECT_CLASS cls, const char *label)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
			    {CKA_LABEL, (void *)label, strlen(label)}};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	CK(B.f->C_FindObjectsInit(B.h, t, 2));
	CK(B.f->C_FindObjects(B.h, &o, 1, &n));
	CK(B.f->C_FindObjectsFinal(B.h));
	if (n != 1)
		die("token object not found", label);
	return o;
}

static EVP_PKEY *cert_pub(const char *dir, const char *name)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s.crt.pem", dir, name);
	FILE *fp = fopen(path, "r");
	if (!fp)
		die("cannot open", path);
	X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
	X509_free(x);
	if (!k)
		die("bad certificate", path);
	return k;
}

int main(int argc, char **argv)
{
	int write_doc = 1, prof_row = -1;
	char prof_side = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--no-doc") == 0)
			write_doc = 0;
		else if (strcmp(argv[i], "--profile") == 0 && i + 2 < argc) {
			/* run one side of one row for 3 s, for perf record */
			prof_row = atoi(argv[++i]);
			prof_side = argv[++i][0];
		} else if (strcmp(argv[i], "--round-ms") == 0 && i + 1 < argc)
			round_ms = atoi(argv[++i]);
		else
			die("usage", "hsm_bench [--no-doc] [--round-ms N] [--profile ROW m|b]");
	}
	double t_start = bench_now();
	char dir[] = "/tmp/psc-hsm-bench-XXXXXX";
	if (!mkdtemp(dir))
		die("mkdtemp", dir);
	char cmd[8192], conf[4200];
	snprintf(cmd, sizeof(cmd),
		 "%s/tests/fixtures/mkca.sh %s/ca >/dev/null && "
		 "%s/tests/fixtures/mktoken.sh %s/token bench 1234 5678 >/dev/null",
		 PSC_SOURCE_DIR, dir, PSC_SOURCE_DIR, dir);
	if (run(cmd) != 0)
		die("fixture setup failed", cmd);
	snprintf(conf, sizeof(conf), "%s/token/softhsm2.conf", dir);
	setenv("SOFTHSM2_CONF", conf, 1);

	psc_err err = {0};
	hsm_config cfg = {.module_path = PSC_SOFTHSM_MODULE,
			  .token_label = "bench",
			  .pin = "1234",
			  .sessions = 1,
			  .allow_no_kek = true};
	if (hsm_ctx_new(&B.ctx, &cfg, &err) != PSC_OK)
		die("hsm_ctx_new", psc_err_text(&err));
	uint8_t kek_id[HSM_KEK_ID_LEN];
	char *csr = NULL;
	hsm_ceremony_opts o = {.subject = "/O=PSC/CN=bench", .uri_san = "reload://00@bench/"};
	if (hsm_ceremony(B.ctx, &o, kek_id, &csr, &err) != PSC_OK)
		die("hsm_ceremony", psc_err_text(&err));
	free(csr);
	if (hsm_session_get(B.ctx, 0, &B.s, &err) != PSC_OK ||
	    hsm_epoch_generate(B.s, &B.epoch, B.blob, &err) != PSC_OK ||
	    hsm_eph_new(B.s, &B.eph, &err) != PSC_OK || hsm_identity_key(B.ctx, &B.signer, &err))
		die("setup", psc_err_text(&err));

	/* The bare side: our own view of the module, same login. */
	void *dl = dlopen(PSC_SOFTHSM_MODULE, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
	if (!gfl || gfl(&B.f) != CKR_OK)
		die("dlopen", PSC_SOFTHSM_MODULE);
	CK_SLOT_ID slots[8];
	CK_ULONG ns = 8;
	CK(B.f->C_GetSlotList(CK_TRUE, slots, &ns));
	CK(B.f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &B.h));
	B.kek = find_one(CKO_SECRET_KEY, HSM_LABEL_KEK);
	B.idkey = find_one(CKO_PRIVATE_KEY, HSM_LABEL_IDENTITY);
	B.epoch_obj = B.epoch.handle; /* session objects are visible to every session */
	{
		/* bare ephemeral key, as hsm_eph_new makes it */
		static const uint8_t oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x03, 0x01, 0x07};
		CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)oid, sizeof(oid)},
				     {CKA_TOKEN, &no, 1}};
		CK_ATTRIBUTE st[] = {{CKA_TOKEN, &no, 1},
				     {CKA_PRIVATE, &yes, 1},
				     {CKA_SENSITIVE, &yes, 1},
				     {CKA_EXTRACTABLE, &no, 1},
				     {CKA_DERIVE, &yes, 1}};
		CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
		CK_OBJECT_HANDLE pub;
		CK(B.f->C_GenerateKeyPair(B.h, &m, pt, 2, st, 5, &pub, &B.eph_priv));
	}
	char cadir[4200];
	snprintf(cadir, sizeof(cadir), "%s/ca", dir);
	B.rsa_pub = cert_pub(cadir, "rsa1");
	B.ec_pub = cert_pub(cadir, "peer1");
	BIGNUM *n = NULL, *e = NULL, *x = NULL, *y = NULL;
	if (EVP_PKEY_get_bn_param(B.rsa_pub, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
	    EVP_PKEY_get_bn_param(B.rsa_pub, OSSL_PKEY_PARAM_RSA_E, &e) != 1 ||
	    EVP_PKEY_get_bn_param(B.ec_pub, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(B.ec_pub, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1)
		die("member keys", "cannot read");
	B.rsa_nl = BN_bn2bin(n, B.rsa_n);
	B.rsa_el = BN_bn2bin(e, B.rsa_e);
	B.ec_point[0] = 4;
	BN_bn2binpad(x, B.ec_point + 1, 32);
	BN_bn2binpad(y, B.ec_point + 33, 32);
	BN_free(n);
	BN_free(e);
	BN_free(x);
	BN_free(y);
	memset(B.psc_id, 0xab, 16);
	memset(B.node_id, 0xcd, 16);
	if (proto_keywrap_context(B.psc_id, 9, B.node_id, hsm_eph_public(B.eph), 65, B.context,
				  &err) != PSC_OK)
		die("context", psc_err_text(&err));

	struct row rows[] = {
	    {"new epoch secret + KEK wrap (blob)", "C_GenerateKey, C_WrapKey(KWP), C_DestroyObject",
	     m_generate, b_generate, 0, 0},
	    {"load blob (KEK unwrap)", "C_UnwrapKey(KWP), C_DestroyObject", m_unwrap, b_unwrap, 0,
	     0},
	    {"member wrap, RSA-2048 (OAEP)", "C_CreateObject, C_WrapKey(OAEP), C_DestroyObject",
	     m_wrap_rsa, b_wrap_rsa, 0, 0},
	    {"member wrap, EC P-256 (ECDH+AES-PRF+KWP)",
	     "2x C_DeriveKey, C_WrapKey(KWP), 2x C_DestroyObject", m_wrap_ec, b_wrap_ec, 0, 0},
	    {"sign, identity key ECDSA P-256",
	     "libp11 EVP_DigestSign vs C_SignInit+C_Sign(CKM_ECDSA)", m_sign, b_sign, 0, 0},
	};
	size_t nrows = sizeof(rows) / sizeof(rows[0]);
	if (prof_row >= 0 && (size_t)prof_row < nrows) {
		round_ms = 3000;
		printf("%s (%c): %.0f/s\n", rows[prof_row].name, prof_side,
		       rate(prof_side == 'b' ? rows[prof_row].bare : rows[prof_row].mod));
		return 0;
	}
	for (size_t i = 0; i < nrows; i++)
		measure(&rows[i]);

	char cpu[256], date[64];
	bench_cpu_model(cpu, sizeof(cpu));
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
	struct utsname u;
	uname(&u);
	char sec[4200];
	snprintf(sec, sizeof(sec), "%s/section.md", dir);
	FILE *out = fopen(sec, "w");
	if (!out)
		die("cannot write", sec);
	fprintf(out, "## hsm_bench — psc_hsm vs bare PKCS#11 (SoftHSM 2.6)\n\n");
	fprintf(out,
		"Run %s on %s, %s, %ld cores; `build/bench/hsm_bench`. One worker "
		"session, one thread; rates are operations per CPU-second of the calling "
		"thread (SoftHSM runs in-process, so this is all the work, and it is "
		"robust on a shared machine); %d alternating rounds of %d ms CPU per "
		"side, median shown. \"bare\" is the same PKCS#11 calls (same mechanisms "
		"and templates) in a loop on a session of its own, with precomputed "
		"inputs and no checks; overhead = bare/psc_hsm - 1.\n\n",
		date, u.machine, cpu, sysconf(_SC_NPROCESSORS_ONLN), ROUNDS, round_ms);
	fprintf(out, "| operation | psc_hsm ops/CPU-s | bare ops/CPU-s | overhead | bare loop |\n");
	fprintf(out, "|---|---:|---:|---:|---|\n");
	printf("%-42s %12s %12s %9s\n", "operation", "psc_hsm/s", "bare/s", "overhead");
	for (size_t i = 0; i < nrows; i++) {
		double ov = (rows[i].b / rows[i].m - 1.0) * 100.0;
		printf("%-42s %12.0f %12.0f %8.1f%%\n", rows[i].name, rows[i].m, rows[i].b, ov);
		fprintf(out, "| %s | %.0f | %.0f | %+.1f%% | %s |\n", rows[i].name, rows[i].m,
			rows[i].b, ov, rows[i].calls);
	}
	fprintf(out, "\nThe signing row compares libp11's EVP_PKEY path (which psc_hsm hands "
		     "out unchanged: SHA-256 in OpenSSL, libp11's session pool, DER encoding of "
		     "the signature) with a bare CKM_ECDSA over a ready digest; that gap is "
		     "libp11's, not psc_hsm's.\n");
	fclose(out);
	printf("(total %.1f s)\n", bench_now() - t_start);

	hsm_eph_free(&B.eph);
	EVP_PKEY_free(B.signer);
	EVP_PKEY_free(B.rsa_pub);
	EVP_PKEY_free(B.ec_pub);
	B.f->C_CloseSession(B.h);
	if (hsm_key_destroy(B.s, &B.epoch, &err) != PSC_OK)
		fprintf(stderr, "hsm_bench: %s\n", psc_err_text(&err));
	hsm_ctx_free(&B.ctx);
	int rc = 0;
	if (write_doc) {
		snprintf(cmd, sizeof(cmd), "%s/bench/update-doc.sh hsm_bench %s", PSC_SOURCE_DIR,
			 sec);
		rc = run(cmd);
		if (rc == 0)
			printf("wrote the hsm_bench section of docs/benchmarks.md\n");
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)run(cmd);
	return rc == 0 ? 0 : 1;
}
