/* hsm/ against a throwaway SoftHSM token: every operation, HSM wrap -> OpenSSL
 * unwrap, key attributes, and the errors a person sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hsm_ckr.h"
#include "hsm_test_util.h"
#include "proto_keywrap.h"

static const uint8_t PSC_ID[16] = {0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
				   0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0};
static const uint64_t EPOCH = 7;

static int setup(void **state)
{
	th_env *e = calloc(1, sizeof(*e));
	if (!e || th_open(e, "psc", NULL, 4) != 0)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	th_env *e = *state;
	th_close(e);
	free(e);
	return 0;
}

/* Wraps the secret for `name` and unwraps it with the member's OpenSSL key. */
static void wrap_unwrap(th_env *e, const hsm_key *k, const hsm_eph *eph, const char *name,
			uint8_t secret_out[32], uint8_t *alg_out)
{
	EVP_PKEY *pub = th_cert_pub(name), *priv = th_priv(name);
	assert_non_null(pub);
	assert_non_null(priv);
	uint8_t nid[16], wrapped[PROTO_KEYWRAP_MAX_WRAPPED];
	assert_int_equal(pt_ca_nodeid(name, nid), 0);
	size_t wl = 0;
	psc_err err = {0};
	psc_rc rc = hsm_wrap_for_member(e->s, k, eph, pub, PSC_ID, EPOCH, nid, alg_out, wrapped,
					sizeof(wrapped), &wl, &err);
	if (rc != PSC_OK)
		fail_msg("wrap for %s: %s", name, psc_err_text(&err));
	rc = proto_keywrap_unwrap(priv, *alg_out, PSC_ID, EPOCH, nid, hsm_eph_public(eph),
				  PROTO_KEYWRAP_EC_POINT_LEN, wrapped, wl, secret_out, &err);
	if (rc != PSC_OK)
		fail_msg("unwrap for %s: %s", name, psc_err_text(&err));
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
}

static CK_RV read_value(th_env *e, CK_OBJECT_HANDLE h, CK_BBOOL *sens, CK_BBOOL *extr)
{
	CK_FUNCTION_LIST *f = th_p11(e->tok->module);
	assert_non_null(f);
	CK_SESSION_HANDLE s = th_p11_session(f, e->tok->label);
	assert_int_not_equal(s, CK_INVALID_HANDLE);
	CK_ATTRIBUTE a[] = {{CKA_SENSITIVE, sens, sizeof(*sens)},
			    {CKA_EXTRACTABLE, extr, sizeof(*extr)}};
	assert_int_equal(f->C_GetAttributeValue(s, h, a, 2), CKR_OK);
	uint8_t v[64];
	CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof(v)};
	CK_RV rv = f->C_GetAttributeValue(s, h, &va, 1);
	f->C_CloseSession(s);
	return rv;
}

static void master_kek_and_epoch_secrets_cannot_be_read(void **state)
{
	th_env *e = *state;
	CK_FUNCTION_LIST *f = th_p11(e->tok->module);
	CK_SESSION_HANDLE s = th_p11_session(f, e->tok->label);
	CK_ATTRIBUTE t = {CKA_LABEL, (void *)HSM_LABEL_KEK, strlen(HSM_LABEL_KEK)};
	CK_OBJECT_HANDLE kek;
	CK_ULONG n = 0;
	assert_int_equal(f->C_FindObjectsInit(s, &t, 1), CKR_OK);
	assert_int_equal(f->C_FindObjects(s, &kek, 1, &n), CKR_OK);
	f->C_FindObjectsFinal(s);
	assert_int_equal(n, 1);
	CK_BBOOL tok = 0, never = 0, wrap = 0, enc = 1;
	uint8_t id[32];
	CK_ATTRIBUTE a[] = {{CKA_TOKEN, &tok, 1},
			    {CKA_NEVER_EXTRACTABLE, &never, 1},
			    {CKA_WRAP, &wrap, 1},
			    {CKA_ENCRYPT, &enc, 1},
			    {CKA_ID, id, 32}};
	assert_int_equal(f->C_GetAttributeValue(s, kek, a, 5), CKR_OK);
	assert_true(tok && never && wrap && !enc);
	assert_int_equal(a[4].ulValueLen, HSM_KEK_ID_LEN);
	assert_memory_equal(id, e->kek_id, HSM_KEK_ID_LEN);
	f->C_CloseSession(s);

	CK_BBOOL sens = 0, extr = 1;
	assert_int_equal(read_value(e, kek, &sens, &extr), CKR_ATTRIBUTE_SENSITIVE);
	assert_true(sens);
	assert_false(extr);

	hsm_key k, k2;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	psc_err err = {0};
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	assert_int_equal(read_value(e, k.handle, &sens, &extr), CKR_ATTRIBUTE_SENSITIVE);
	assert_true(sens);
	assert_true(extr); /* needed for member wraps: docs/hsm.md caveat */
	if (hsm_epoch_load(e->s, blob, sizeof(blob), &k2, &err) != PSC_OK)
		fail_msg("load: %s", psc_err_text(&err));
	assert_int_equal(read_value(e, k2.handle, &sens, &extr), CKR_ATTRIBUTE_SENSITIVE);
	assert_true(sens);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(e->s, &k2, &err), PSC_OK);
}

static void generate_store_load_gives_the_same_secret(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	hsm_key k, k2;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], blob2[HSM_EPOCH_BLOB_LEN];
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	assert_int_equal(blob[0], HSM_EPOCH_BLOB_VERSION);
	assert_memory_equal(blob + 1, e->kek_id, HSM_KEK_ID_LEN);
	/* Two secrets differ. */
	assert_int_equal(hsm_epoch_generate(e->s, &k2, blob2, &err), PSC_OK);
	assert_memory_not_equal(blob + 17, blob2 + 17, 40);
	assert_int_equal(hsm_key_destroy(e->s, &k2, &err), PSC_OK);

	hsm_eph *eph = NULL;
	assert_int_equal(hsm_eph_new(e->s, &eph, &err), PSC_OK);
	uint8_t s1[32], s2[32], s3[32], alg = 0;
	wrap_unwrap(e, &k, eph, "peer1", s1, &alg);
	/* Loaded from its blob on another worker session: same secret. */
	hsm_session *w2;
	assert_int_equal(hsm_session_get(e->ctx, 2, &w2, &err), PSC_OK);
	assert_int_equal(hsm_epoch_load(w2, blob, sizeof(blob), &k2, &err), PSC_OK);
	wrap_unwrap(e, &k2, eph, "peer1", s2, &alg);
	assert_memory_equal(s1, s2, 32);
	/* Destroyed means gone: the HSM refuses to wrap it. */
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
	assert_int_equal(k.handle, 0);
	hsm_key dead = k2;
	assert_int_equal(hsm_key_destroy(w2, &k2, &err), PSC_OK);
	EVP_PKEY *pub = th_cert_pub("peer1");
	uint8_t nid[16], wrapped[64];
	size_t wl;
	assert_int_equal(pt_ca_nodeid("peer1", nid), 0);
	assert_int_equal(hsm_wrap_for_member(e->s, &dead, eph, pub, PSC_ID, EPOCH, nid, &alg,
					     wrapped, sizeof(wrapped), &wl, &err),
			 PSC_E_HSM_P11);
	assert_true(th_has(err.detail, "C_WrapKey"));
	assert_true(th_has(err.detail, "HANDLE_INVALID"));
	/* The blob is still good. */
	assert_int_equal(hsm_epoch_load(e->s, blob, sizeof(blob), &k, &err), PSC_OK);
	wrap_unwrap(e, &k, eph, "peer1", s3, &alg);
	assert_memory_equal(s1, s3, 32);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
	EVP_PKEY_free(pub);
	hsm_eph_free(&eph);
	assert_null(eph);
}

static void hsm_wrap_openssl_unwrap_rsa_and_ec_agree(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	hsm_eph *eph = NULL;
	assert_int_equal(hsm_eph_new(e->s, &eph, &err), PSC_OK);
	const uint8_t *pt = hsm_eph_public(eph);
	assert_int_equal(pt[0], 0x04);
	uint8_t r1[32], r2[32], p1[32], p2[32], a_r1 = 0, a_r2 = 0, a_p1 = 0, a_p2 = 0;
	wrap_unwrap(e, &k, eph, "rsa1", r1, &a_r1);
	wrap_unwrap(e, &k, NULL, "rsa2", r2, &a_r2); /* RSA needs no ephemeral */
	wrap_unwrap(e, &k, eph, "peer1", p1, &a_p1);
	wrap_unwrap(e, &k, eph, "peer2", p2, &a_p2);
	/* SoftHSM 2.6 offers OAEP with SHA-1 only; the id says what was used. */
	assert_true(a_r1 == PSC_WRAP_RSA_OAEP_SHA1 || a_r1 == PSC_WRAP_RSA_OAEP_SHA256);
	assert_int_equal(a_r1, hsm_oaep_sha256(e->ctx) ? PSC_WRAP_RSA_OAEP_SHA256
						       : PSC_WRAP_RSA_OAEP_SHA1);
	assert_int_equal(a_r2, a_r1);
	assert_int_equal(a_p1, PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_int_equal(a_p2, PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_memory_equal(r1, r2, 32);
	assert_memory_equal(r1, p1, 32);
	assert_memory_equal(r1, p2, 32);
	static const uint8_t zero[32];
	assert_memory_not_equal(r1, zero, 32);

	/* Tampering, another member's key, or another context all fail cleanly. */
	EVP_PKEY *pub1 = th_cert_pub("peer1"), *priv1 = th_priv("peer1"), *priv2 = th_priv("peer2"),
		 *rsapub = th_cert_pub("rsa1"), *rsapriv2 = th_priv("rsa2");
	uint8_t nid1[16], w[PROTO_KEYWRAP_MAX_WRAPPED], out[32], alg;
	size_t wl;
	assert_int_equal(pt_ca_nodeid("peer1", nid1), 0);
	assert_int_equal(hsm_wrap_for_member(e->s, &k, eph, pub1, PSC_ID, EPOCH, nid1, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_OK);
	assert_int_equal(wl, PROTO_KEYWRAP_KWP_LEN);
	assert_int_equal(
	    proto_keywrap_unwrap(priv2, alg, PSC_ID, EPOCH, nid1, pt, 65, w, wl, out, &err),
	    PSC_E_UNWRAP);
	assert_int_equal(
	    proto_keywrap_unwrap(priv1, alg, PSC_ID, EPOCH + 1, nid1, pt, 65, w, wl, out, &err),
	    PSC_E_UNWRAP);
	assert_true(th_has(err.detail, "integrity"));
	w[5] ^= 1;
	assert_int_equal(
	    proto_keywrap_unwrap(priv1, alg, PSC_ID, EPOCH, nid1, pt, 65, w, wl, out, &err),
	    PSC_E_UNWRAP);
	assert_memory_equal(out, zero, 32);
	assert_int_equal(hsm_wrap_for_member(e->s, &k, NULL, rsapub, PSC_ID, EPOCH, nid1, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_OK);
	assert_int_equal(wl, 256);
	assert_int_equal(
	    proto_keywrap_unwrap(rsapriv2, alg, PSC_ID, EPOCH, nid1, NULL, 0, w, wl, out, &err),
	    PSC_E_UNWRAP);
	/* The algorithm id must match the key. */
	assert_int_equal(proto_keywrap_unwrap(priv1, PSC_WRAP_RSA_OAEP_SHA1, PSC_ID, EPOCH, nid1,
					      NULL, 0, w, wl, out, &err),
			 PSC_E_UNSUPPORTED_ALG);
	/* An EC member without the rekey's ephemeral key is a caller error. */
	assert_int_equal(hsm_wrap_for_member(e->s, &k, NULL, pub1, PSC_ID, EPOCH, nid1, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_E_INVALID_ARG);
	assert_true(th_has(err.detail, "ephemeral"));
	EVP_PKEY_free(pub1);
	EVP_PKEY_free(priv1);
	EVP_PKEY_free(priv2);
	EVP_PKEY_free(rsapub);
	EVP_PKEY_free(rsapriv2);
	hsm_eph_free(&eph);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
}

static void known_secret_reaches_members_byte_for_byte(void **state)
{
	th_env *e = *state;
	uint8_t known[32];
	for (int i = 0; i < 32; i++)
		known[i] = (uint8_t)(0x40 + i);
	hsm_key k;
	assert_int_equal(th_import_secret(e, known, &k), 0);
	psc_err err = {0};
	hsm_eph *eph = NULL;
	assert_int_equal(hsm_eph_new(e->s, &eph, &err), PSC_OK);
	uint8_t got[32], alg;
	wrap_unwrap(e, &k, eph, "peer3", got, &alg);
	assert_memory_equal(got, known, 32);
	wrap_unwrap(e, &k, eph, "rsa1", got, &alg);
	assert_memory_equal(got, known, 32);

	/* A P-256 key kept in compressed point form wraps the same way. */
	EVP_PKEY *full = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(full);
	uint8_t enc[100];
	size_t encl = 0;
	assert_int_equal(EVP_PKEY_get_octet_string_param(full, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
							 enc, sizeof(enc), &encl),
			 1);
	OSSL_PARAM prm[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
	    OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, enc, encl),
	    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
					     "compressed", 0),
	    OSSL_PARAM_construct_end(),
	};
	EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *cmp = NULL;
	assert_int_equal(EVP_PKEY_fromdata_init(fc), 1);
	assert_int_equal(EVP_PKEY_fromdata(fc, &cmp, EVP_PKEY_PUBLIC_KEY, prm), 1);
	EVP_PKEY_CTX_free(fc);
	/* (OpenSSL 3.0 still encodes it uncompressed; other providers may not, which
	 * is what hsm_wrap's X/Y fallback is for.) */
	uint8_t nid[16] = {9}, w[64];
	size_t wl;
	assert_int_equal(hsm_wrap_for_member(e->s, &k, eph, cmp, PSC_ID, EPOCH, nid, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_OK);
	assert_int_equal(proto_keywrap_unwrap(full, alg, PSC_ID, EPOCH, nid, hsm_eph_public(eph),
					      65, w, wl, got, &err),
			 PSC_OK);
	assert_memory_equal(got, known, 32);
	EVP_PKEY_free(full);
	EVP_PKEY_free(cmp);
	hsm_eph_free(&eph);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
}

static void unsupported_and_malformed_member_keys(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], nid[16] = {0}, w[PROTO_KEYWRAP_MAX_WRAPPED], alg;
	size_t wl;
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	hsm_eph *eph = NULL;
	assert_int_equal(hsm_eph_new(e->s, &eph, &err), PSC_OK);

	EVP_PKEY *p384 = th_cert_pub("p384");
	assert_int_equal(hsm_wrap_for_member(e->s, &k, eph, p384, PSC_ID, EPOCH, nid, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_E_HSM_UNSUPPORTED_KEY);
	assert_true(th_has(err.detail, "unsupported curve secp384r1"));
	assert_true(th_has(err.detail, "P-256"));
	EVP_PKEY_free(p384);

	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	assert_int_equal(hsm_wrap_for_member(e->s, &k, eph, ed, PSC_ID, EPOCH, nid, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_E_HSM_UNSUPPORTED_KEY);
	assert_true(th_has(err.detail, "key type ED25519 is not supported"));
	EVP_PKEY_free(ed);

	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	assert_non_null(small);
	assert_int_equal(hsm_wrap_for_member(e->s, &k, eph, small, PSC_ID, EPOCH, nid, &alg, w,
					     sizeof(w), &wl, &err),
			 PSC_E_HSM_BAD_PUBKEY);
	assert_true(th_has(err.detail, "1024 bits"));
	EVP_PKEY_free(small);

	/* Output buffer too small for the modulus is refused, not truncated. */
	EVP_PKEY *rsa = th_cert_pub("rsa1");
	assert_int_equal(
	    hsm_wrap_for_member(e->s, &k, eph, rsa, PSC_ID, EPOCH, nid, &alg, w, 100, &wl, &err),
	    PSC_E_INVALID_ARG);
	EVP_PKEY_free(rsa);

	/* Peer side: malformed ephemeral points. */
	EVP_PKEY *priv1 = th_priv("peer1");
	uint8_t bad[65], out[32];
	memset(bad, 0x11, sizeof(bad));
	bad[0] = 0x04; /* right size and tag, not on the curve */
	assert_int_equal(proto_keywrap_unwrap(priv1, PSC_WRAP_ECDH_P256_AESPRF_KWP, PSC_ID, EPOCH,
					      nid, bad, 65, w, 40, out, &err),
			 PSC_E_BAD_VALUE);
	assert_int_equal(proto_keywrap_unwrap(priv1, PSC_WRAP_ECDH_P256_AESPRF_KWP, PSC_ID, EPOCH,
					      nid, hsm_eph_public(eph), 33, w, 40, out, &err),
			 PSC_E_BAD_VALUE);
	assert_true(th_has(err.detail, "65-byte"));
	assert_int_equal(
	    proto_keywrap_unwrap(priv1, 9, PSC_ID, EPOCH, nid, NULL, 0, w, 40, out, &err),
	    PSC_E_UNSUPPORTED_ALG);
	EVP_PKEY_free(priv1);
	hsm_eph_free(&eph);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
}

static void corrupted_blobs_are_refused_with_reasons(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	hsm_key k, k2;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], b[HSM_EPOCH_BLOB_LEN];
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	assert_int_equal(hsm_epoch_load(e->s, blob, sizeof(blob) - 1, &k2, &err),
			 PSC_E_HSM_BAD_BLOB);
	assert_true(th_has(err.detail, "56 bytes"));
	memcpy(b, blob, sizeof(b));
	b[0] = 2;
	assert_int_equal(hsm_epoch_load(e->s, b, sizeof(b), &k2, &err), PSC_E_HSM_BAD_BLOB);
	assert_true(th_has(err.detail, "version 2"));
	memcpy(b, blob, sizeof(b));
	b[3] ^= 0x80;
	assert_int_equal(hsm_epoch_load(e->s, b, sizeof(b), &k2, &err), PSC_E_HSM_WRONG_KEK);
	assert_true(th_has(err.detail, "KEK id"));
	for (size_t i = 17; i < HSM_EPOCH_BLOB_LEN; i += 7) {
		memcpy(b, blob, sizeof(b));
		b[i] ^= 0x01;
		assert_int_equal(hsm_epoch_load(e->s, b, sizeof(b), &k2, &err), PSC_E_HSM_UNWRAP);
	}
	assert_true(th_has(err.detail, "C_UnwrapKey"));
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
}

/* Token B lives in a child process (one PKCS#11 module instance per process). */
static void foreign_blob(uint8_t blob[HSM_EPOCH_BLOB_LEN])
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		th_env b;
		hsm_key k;
		uint8_t out[HSM_EPOCH_BLOB_LEN];
		psc_err err;
		int ok = th_open(&b, "psc", NULL, 1) == 0 &&
			 hsm_epoch_generate(b.s, &k, out, &err) == PSC_OK &&
			 write(fds[1], out, sizeof(out)) == (ssize_t)sizeof(out);
		th_close(&b);
		_exit(ok ? 0 : 1);
	}
	close(fds[1]);
	size_t got = 0;
	while (got < HSM_EPOCH_BLOB_LEN) {
		ssize_t r = read(fds[0], blob + got, HSM_EPOCH_BLOB_LEN - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fds[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(got, HSM_EPOCH_BLOB_LEN);
}

static void blob_from_another_token_does_not_unwrap(void **state)
{
	(void)state;
	uint8_t other[HSM_EPOCH_BLOB_LEN];
	foreign_blob(other);
	th_env e;
	assert_int_equal(th_open(&e, "psc", NULL, 1), 0);
	psc_err err = {0};
	hsm_key k;
	assert_int_equal(hsm_epoch_load(e.s, other, sizeof(other), &k, &err), PSC_E_HSM_WRONG_KEK);
	assert_true(th_has(err.detail, "does not hold"));
	/* Even relabelled with our KEK id, the other token's wrap fails integrity. */
	memcpy(other + 1, e.kek_id, HSM_KEK_ID_LEN);
	assert_int_equal(hsm_epoch_load(e.s, other, sizeof(other), &k, &err), PSC_E_HSM_UNWRAP);
	th_close(&e);
}

static void ceremony_refuses_to_overwrite_and_rotates_when_told(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	uint8_t id[HSM_KEK_ID_LEN], blob[HSM_EPOCH_BLOB_LEN];
	char *csr = NULL;
	hsm_key k;
	assert_int_equal(hsm_epoch_generate(e->s, &k, blob, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);
	hsm_ceremony_opts o = {.subject = "/CN=kms", .uri_san = "reload://00@x/"};
	assert_int_equal(hsm_ceremony(e->ctx, &o, id, &csr, &err), PSC_E_HSM_KEY_EXISTS);
	assert_true(th_has(err.detail, "refusing to overwrite"));
	assert_null(csr);
	/* still usable after the refusal */
	assert_int_equal(hsm_epoch_load(e->s, blob, sizeof(blob), &k, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(e->s, &k, &err), PSC_OK);

	o.overwrite = true;
	o.rsa_bits = 2048;
	if (hsm_ceremony(e->ctx, &o, id, &csr, &err) != PSC_OK)
		fail_msg("ceremony --force: %s", psc_err_text(&err));
	assert_memory_not_equal(id, e->kek_id, HSM_KEK_ID_LEN);
	uint8_t cur[HSM_KEK_ID_LEN];
	hsm_kek_id(e->ctx, cur);
	assert_memory_equal(cur, id, HSM_KEK_ID_LEN);
	assert_int_equal(hsm_epoch_load(e->s, blob, sizeof(blob), &k, &err), PSC_E_HSM_WRONG_KEK);
	EVP_PKEY *idk = NULL;
	assert_int_equal(hsm_identity_key(e->ctx, &idk, &err), PSC_OK);
	assert_true(EVP_PKEY_is_a(idk, "RSA"));
	EVP_PKEY_free(idk);
	free(csr);

	o.subject = "CN=no-slash";
	assert_int_equal(hsm_ceremony(e->ctx, &o, id, &csr, &err), PSC_E_INVALID_ARG);
	o.subject = "/CN=x";
	o.uri_san = "http://example/";
	assert_int_equal(hsm_ceremony(e->ctx, &o, id, &csr, &err), PSC_E_INVALID_ARG);
	assert_true(th_has(err.detail, "reload://"));
}

static int sign_and_verify(EVP_PKEY *signer, EVP_PKEY *verifier)
{
	static const char msg[] = "audit checkpoint size=42 root=...";
	uint8_t sig[1024];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, signer) == 1 &&
		 EVP_DigestSign(m, sig, &sl, (const uint8_t *)msg, sizeof(msg)) == 1;
	EVP_MD_CTX_free(m);
	if (!ok)
		return -1;
	m = EVP_MD_CTX_new();
	ok = EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, verifier) == 1 &&
	     EVP_DigestVerify(m, sig, sl, (const uint8_t *)msg, sizeof(msg)) == 1;
	EVP_MD_CTX_free(m);
	return ok ? 0 : -2;
}

static void identity_csr_and_signing_keys(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	BIO *bio = BIO_new_mem_buf(e->csr, -1);
	X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(req);
	EVP_PKEY *csr_pub = X509_REQ_get0_pubkey(req);
	assert_int_equal(X509_REQ_verify(req, csr_pub), 1);
	char cn[64];
	assert_true(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, "kms");
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = NULL;
	for (int i = 0; i < sk_X509_EXTENSION_num(exts) && !gens; i++) {
		X509_EXTENSION *x = sk_X509_EXTENSION_value(exts, i);
		if (OBJ_obj2nid(X509_EXTENSION_get_object(x)) == NID_subject_alt_name)
			gens = X509V3_EXT_d2i(x);
	}
	assert_non_null(gens);
	int type;
	ASN1_IA5STRING *uri = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 0), &type);
	assert_int_equal(type, GEN_URI);
	assert_string_equal((const char *)ASN1_STRING_get0_data(uri),
			    "reload://5053430a000000000000000000000001@psc.test/");
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

	EVP_PKEY *idk = NULL, *aud = NULL;
	assert_int_equal(hsm_identity_key(e->ctx, &idk, &err), PSC_OK);
	assert_true(EVP_PKEY_is_a(idk, "EC"));
	assert_int_equal(EVP_PKEY_eq(idk, csr_pub), 1);
	assert_int_equal(sign_and_verify(idk, csr_pub), 0);
	assert_int_equal(hsm_audit_key(e->ctx, &aud, &err), PSC_OK);
	assert_int_not_equal(EVP_PKEY_eq(aud, csr_pub), 1);
	assert_int_equal(sign_and_verify(aud, aud), 0);
	assert_int_not_equal(sign_and_verify(aud, csr_pub), 0);
	EVP_PKEY_free(idk);
	EVP_PKEY_free(aud);
	X509_REQ_free(req);
}

static void random_and_sessions(void **state)
{
	th_env *e = *state;
	psc_err err = {0};
	uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
	assert_int_equal(hsm_random(e->s, a, sizeof(a), &err), PSC_OK);
	assert_int_equal(hsm_random(e->s, b, sizeof(b), &err), PSC_OK);
	assert_memory_not_equal(a, b, 32);
	assert_memory_not_equal(a, zero, 32);
	assert_int_equal(hsm_ctx_sessions(e->ctx), 4);
	hsm_session *s;
	assert_int_equal(hsm_session_get(e->ctx, 3, &s, &err), PSC_OK);
	assert_int_equal(hsm_random(s, a, 1, &err), PSC_OK);
	assert_int_equal(hsm_session_get(e->ctx, 4, &s, &err), PSC_E_INVALID_ARG);
	assert_true(hsm_healthy(e->ctx));
}

static void open_errors_say_what_to_do(void **state)
{
	(void)state;
	pt_token *tok = NULL;
	assert_int_equal(pt_token_new(&tok, "psc"), 0);
	hsm_ctx *ctx = NULL;
	psc_err err = {0};
	hsm_config c = {
	    .module_path = tok->module, .token_label = "psc", .pin = "9999", .sessions = 2};
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_HSM_PIN);
	assert_null(ctx);
	assert_true(th_has(err.detail, "CKR_PIN_INCORRECT"));
	assert_true(th_has(err.detail, "PIN file"));

	c.pin = tok->pin;
	c.module_path = "/nonexistent/libnothere.so";
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_HSM_MODULE);
	assert_true(th_has(err.detail, "cannot load PKCS#11 module /nonexistent/libnothere.so"));

	c.module_path = tok->module;
	c.token_label = "nope";
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_HSM_NO_TOKEN);
	assert_true(th_has(err.detail, "token 'nope' not found in module"));
	assert_true(th_has(err.detail, "'psc'"));
	assert_true(th_has(err.detail, "psc-kmsctl init"));

	/* An initialised token without the ceremony. */
	c.token_label = "psc";
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_HSM_NOT_READY);
	assert_true(th_has(err.detail, "no master KEK"));
	assert_true(th_has(err.detail, "psc-kmsctl init"));
	c.allow_no_kek = true;
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_OK);
	EVP_PKEY *k = NULL;
	assert_int_equal(hsm_identity_key(ctx, &k, &err), PSC_E_HSM_NO_KEY);
	assert_true(th_has(err.detail, "'psc-kms-identity' not found"));
	assert_int_equal(hsm_audit_key(ctx, &k, &err), PSC_E_HSM_NO_KEY);
	hsm_session *s;
	assert_int_equal(hsm_session_get(ctx, 0, &s, &err), PSC_OK);
	hsm_key key;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	assert_int_equal(hsm_epoch_generate(s, &key, blob, &err), PSC_E_HSM_NOT_READY);
	hsm_ctx_free(&ctx);
	assert_null(ctx);

	c.sessions = 0;
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_INVALID_ARG);
	c.sessions = 1;
	c.token_label = "a-label-that-is-longer-than-32-bytes!";
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_INVALID_ARG);
	pt_token_free(&tok);
}

static void ckr_names(void **state)
{
	(void)state;
	assert_string_equal(hsm_ckr_name(CKR_OK), "CKR_OK");
	assert_string_equal(hsm_ckr_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
	assert_string_equal(hsm_ckr_name(CKR_DEVICE_REMOVED), "CKR_DEVICE_REMOVED");
	assert_string_equal(hsm_ckr_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID");
	assert_string_equal(hsm_ckr_name(CKR_WRAPPED_KEY_INVALID), "CKR_WRAPPED_KEY_INVALID");
	assert_string_equal(hsm_ckr_name(CKR_VENDOR_DEFINED + 5), "CKR_VENDOR_DEFINED");
	assert_string_equal(hsm_ckr_name(0x7777), "CKR_(unknown)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(master_kek_and_epoch_secrets_cannot_be_read, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(generate_store_load_gives_the_same_secret, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(hsm_wrap_openssl_unwrap_rsa_and_ec_agree, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(known_secret_reaches_members_byte_for_byte, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(unsupported_and_malformed_member_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(corrupted_blobs_are_refused_with_reasons, setup,
					    teardown),
	    cmocka_unit_test(blob_from_another_token_does_not_unwrap),
	    cmocka_unit_test_setup_teardown(ceremony_refuses_to_overwrite_and_rotates_when_told,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(identity_csr_and_signing_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(random_and_sessions, setup, teardown),
	    cmocka_unit_test(open_errors_say_what_to_do),
	    cmocka_unit_test(ckr_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
