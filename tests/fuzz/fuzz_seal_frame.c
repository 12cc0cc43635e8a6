/*
 * libFuzzer harness for group message frames (docs/protocol.md §13): what a
 * member's SUB socket receives from anyone on the network.
 *  1. psc_seal_parse(): on success the parts must tile the input exactly and
 *     the header must re-encode to the same 72 bytes.
 *  2. psc_seal_open_with_secret() with a fixed epoch secret: decrypts only
 *     what authenticates; the plaintext length must match the header.
 *  3. psc_peer_open() on a fresh receiver of a real psc_peer that holds two
 *     PSCs (one unsigned at epoch 7, one with sender signatures at epoch 3,
 *     same secret): epoch rules, key derivation, AEAD, replay window, and for
 *     signed frames the certificate lookup, Node-ID binding and signature check.
 * The identity is fixed (a test-only key below), so seeds stay valid across
 * runs. PSC_SEAL_FUZZ_SEEDS=DIR writes fresh seeds (valid unsigned and signed
 * frames, and damaged variants) into DIR, as tests/fuzz/corpus/seal_frame was
 * made.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "psc/peer.h"
#include "psc_peer_int.h"
#include "psc_seal.h"
#include "psc_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OVERLAY "psc.fuzz"
#define NODE_HEX "5053430a00000000000000000000f022"

/* Test-only P-256 key of the harness identity (never used anywhere else). */
static const char KEY_PEM[] = "-----BEGIN PRIVATE KEY-----\n"
			      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgo+fvOBVh4MOrPPF/\n"
			      "jGy+6VpGvH3zBoB78HKwHl5ruB6hRANCAARWj8RznjU1UrU9yTXINyB9CszzcHRG\n"
			      "sYRN4aD4mNJdL5xLMAYVPCHyKFnyi/1M90CJbdzMokymzZm907//N8UB\n"
			      "-----END PRIVATE KEY-----\n";

static const uint8_t PSC_PLAIN[16] = {0xf1, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
				      0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01};
static const uint8_t PSC_SIGNED[16] = {0xf2, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
				       0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x02};

static struct {
	int ready;
	psc_peer *peer;
	uint8_t secret[32];
	uint8_t cert_der[2048];
	size_t cert_len;
	uint8_t out[PSC_SEAL_MAX_PLAINTEXT + 64];
} G;

static void die(const char *what)
{
	fprintf(stderr, "fuzz_seal_frame: setup: %s\n", what);
	abort();
}

static psc_rc cert_lookup(void *user, const uint8_t psc_id[16], const uint8_t node_id[16],
			  uint8_t *der, size_t cap, size_t *len)
{
	(void)user;
	(void)psc_id;
	(void)node_id; /* any sender gets our certificate: the SDK checks the binding */
	if (G.cert_len > cap)
		return PSC_E_PEER_NOT_FOUND;
	memcpy(der, G.cert_der, G.cert_len);
	*len = G.cert_len;
	return PSC_OK;
}

static void install(const uint8_t id[16], uint64_t epoch, int signed_)
{
	proto_material m;
	memset(&m, 0, sizeof(m));
	memcpy(m.psc_id, id, 16);
	m.epoch = epoch;
	m.name = (proto_bytes){(const uint8_t *)"fuzz", 4};
	m.suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	m.flags = signed_ ? PSC_FLAG_SENDER_SIGNATURES : 0;
	if (psc_store_apply(G.peer->store, &m, G.secret, psc_sdk_mono_ms()) != PSC_OK)
		die("cannot install an epoch");
}

static void write_file(const char *dir, const char *name, const uint8_t *b, size_t n)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "wb");
	if (!f || fwrite(b, 1, n, f) != n)
		die("cannot write a seed");
	fclose(f);
}

static void write_seeds(const char *dir)
{
	psc_peer_msg *m = NULL;
	if (psc_peer_msg_new(&m, G.peer, NULL, NULL) != PSC_OK)
		die("psc_peer_msg_new");
	static const char *const texts[] = {"", "hello group",
					    "a longer message, more than one AES block long"};
	uint8_t f[4096];
	size_t n;
	char name[64];
	for (int s = 0; s < 2; s++)
		for (size_t i = 0; i < 3; i++) {
			const uint8_t *id = s ? PSC_SIGNED : PSC_PLAIN;
			if (psc_peer_seal(m, id, (const uint8_t *)texts[i], strlen(texts[i]), f,
					  sizeof(f), &n, NULL) != PSC_OK)
				die("seal");
			snprintf(name, sizeof(name), "%s-%zu.bin", s ? "signed" : "plain", i);
			write_file(dir, name, f, n);
			if (i != 1)
				continue;
			/* Damaged variants of the middle one. */
			snprintf(name, sizeof(name), "%s-truncated.bin", s ? "signed" : "plain");
			write_file(dir, name, f, n - 1);
			f[PSC_SEAL_HEADER_LEN] ^= 0x01;
			snprintf(name, sizeof(name), "%s-badtag.bin", s ? "signed" : "plain");
			write_file(dir, name, f, n);
			f[PSC_SEAL_HEADER_LEN] ^= 0x01;
			f[20 + 7] ^= 0x02; /* epoch */
			snprintf(name, sizeof(name), "%s-epoch.bin", s ? "signed" : "plain");
			write_file(dir, name, f, n);
		}
	psc_peer_msg_free(&m);
	write_file(dir, "empty.bin", (const uint8_t *)"", 0);
}

static void setup(void)
{
	char dir[] = "/tmp/fuzz_seal-XXXXXX";
	if (!mkdtemp(dir))
		die("mkdtemp");
	BIO *b = BIO_new_mem_buf(KEY_PEM, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	X509 *x = X509_new();
	if (!k || !x)
		die("key");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -86400);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 3650);
	X509_set_pubkey(x, k);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1,
				   0);
	X509_set_issuer_name(x, nm);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
						  "URI:reload://" NODE_HEX "@" OVERLAY "/");
	if (!ext || X509_add_ext(x, ext, -1) != 1 || X509_sign(x, k, EVP_sha256()) <= 0)
		die("certificate");
	X509_EXTENSION_free(ext);
	uint8_t *w = G.cert_der;
	int dl = i2d_X509(x, NULL);
	if (dl <= 0 || (size_t)dl > sizeof(G.cert_der) || i2d_X509(x, &w) != dl)
		die("certificate encoding");
	G.cert_len = (size_t)dl;
	char cert[4200], key[4200];
	snprintf(cert, sizeof(cert), "%s/id.crt.pem", dir);
	snprintf(key, sizeof(key), "%s/id.key.pem", dir);
	FILE *f = fopen(cert, "w");
	if (!f || PEM_write_X509(f, x) != 1)
		die("write certificate");
	fclose(f);
	f = fopen(key, "w");
	if (!f || PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1)
		die("write key");
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
	/* Never connects: nothing here sends a request. */
	psc_peer_config cfg = {.cert_file = cert,
			       .key_file = key,
			       .kms_endpoint = "tcp://127.0.0.1:9",
			       .kms_cert_file = cert,
			       .overlay = OVERLAY};
	psc_err err = {0};
	if (psc_peer_new(&G.peer, &cfg, &err) != PSC_OK)
		die(psc_err_text(&err));
	unlink(cert);
	unlink(key);
	rmdir(dir);
	memset(G.secret, 0x5a, sizeof(G.secret));
	install(PSC_PLAIN, 6, 0);
	install(PSC_PLAIN, 7, 0);
	install(PSC_SIGNED, 3, 1);
	G.ready = 1;
	const char *seeds = getenv("PSC_SEAL_FUZZ_SEEDS");
	if (seeds)
		write_seeds(seeds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!G.ready)
		setup();

	psc_seal_frame f;
	if (psc_seal_parse(data, size, &f, NULL) == PSC_OK) {
		size_t sig = f.sig ? f.sig_len : 0;
		size_t expect = PSC_SEAL_HEADER_LEN + f.h.ct_len + (f.sig ? 2 + sig : 0);
		uint8_t hdr[PSC_SEAL_HEADER_LEN];
		psc_seal_header_write(&f.h, hdr);
		if (expect != size || f.header != data || f.ct != data + PSC_SEAL_HEADER_LEN ||
		    f.h.ct_len < PSC_SEAL_TAG_LEN || memcmp(hdr, data, sizeof(hdr)) != 0 ||
		    (f.sig && (f.sig < data || f.sig + sig != data + size)))
			abort();
	}

	size_t n = 0;
	psc_seal_header h;
	if (psc_seal_open_with_secret(G.secret, data, size, G.out, sizeof(G.out), &n, &h, NULL) ==
	    PSC_OK) {
		if (n + PSC_SEAL_TAG_LEN != h.ct_len)
			abort();
	}

	psc_peer_msg *m = NULL;
	psc_peer_msg_config mc = {.sender_cert = cert_lookup};
	if (psc_peer_msg_new(&m, G.peer, &mc, NULL) != PSC_OK)
		abort();
	psc_peer_msg_info info;
	psc_err err = {0};
	psc_rc rc = psc_peer_open(m, data, size, G.out, sizeof(G.out), &n, &info, &err);
	if (rc == PSC_OK) {
		if (n + PSC_PEER_MSG_OVERHEAD > size || info.epoch == 0 ||
		    (memcmp(info.psc_id, PSC_SIGNED, 16) == 0) != (info.sender_verified == 1))
			abort();
		/* The same frame again is a replay. */
		if (psc_peer_open(m, data, size, G.out, sizeof(G.out), &n, NULL, NULL) !=
		    PSC_E_PEER_SEAL_REPLAY)
			abort();
	} else if (rc >= 0 || psc_err_text(&err)[0] == '\0') {
		abort(); /* every refusal says why */
	}
	psc_peer_msg_free(&m);
	return 0;
}
