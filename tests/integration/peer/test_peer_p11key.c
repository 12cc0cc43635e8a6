/*
 * A peer whose private key lives on a PKCS#11 token (psc_peer_config.key_pkcs11,
 * through libp11): a throwaway SoftHSM token holding peer1's EC P-256 key and
 * rsa1's RSA key, a real psc-kmsd (../kmsfx.c). The token key signs the
 * requests, unwraps the epoch secrets (ECDH or RSA-OAEP in the token) and signs
 * group messages of a sender-signature PSC; members with file keys read them.
 * Misconfigurations fail with a sentence naming what is wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kmsfx.h"
#include "psc/peer.h"

static kmsfx FX;
static pt_token *TOK;
static char PIN_FILE[4300], BAD_PIN_FILE[4300];

/* peer1's and rsa1's keys onto the token, usable for what a peer does. */
static int import_key(const char *name, const char *usage)
{
	char cmd[9000];
	snprintf(cmd, sizeof(cmd),
		 "set -e; openssl pkey -in '%s.key.pem' -outform DER -out '%s/%s.der'; "
		 "pkcs11-tool --module '%s' --token-label '%s' --login --pin '%s' "
		 "--write-object '%s/%s.der' --type privkey --label '%s' --id 0%d %s >/dev/null",
		 pt_ca_path(name), TOK->dir, name, TOK->module, TOK->label, TOK->pin, TOK->dir,
		 name, name, name[0] == 'r' ? 2 : 1, usage);
	return kmsfx_sh(cmd);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&FX, "p11key", NULL, NULL) != 0 || kmsfx_start(&FX) != 0)
		return -1;
	/* The peers' token: this process's SOFTHSM2_CONF (psc-kmsd has its own). */
	if (pt_token_new(&TOK, "peer-keys") != 0)
		return -1;
	if (import_key("peer1", "--usage-sign --usage-derive") != 0 ||
	    import_key("rsa1", "--usage-sign --usage-decrypt") != 0)
		return -1;
	snprintf(PIN_FILE, sizeof(PIN_FILE), "%s/user.pin", TOK->dir);
	snprintf(BAD_PIN_FILE, sizeof(BAD_PIN_FILE), "%s/bad.pin", TOK->dir);
	char pin[64];
	snprintf(pin, sizeof(pin), "%s\n", TOK->pin);
	if (write_file(PIN_FILE, pin) != 0 || write_file(BAD_PIN_FILE, "000000\n") != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pt_token_free(&TOK);
	kmsfx_cleanup(&FX);
	return 0;
}

static psc_rc new_peer(psc_peer **out, const char *name, const psc_peer_pkcs11 *p11,
		       psc_err *err)
{
	char cert[4096], key[4096];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	psc_peer_config cfg = {
	    .cert_file = cert,
	    .key_file = p11 ? NULL : key,
	    .key_pkcs11 = p11,
	    .kms_endpoint = FX.endpoint,
	    .kms_cert_file = FX.cert,
	    .kms_curve_key = FX.curve,
	    .overlay = "psc.test",
	    .request_timeout_ms = 15000,
	};
	return psc_peer_new(out, &cfg, err);
}

static psc_peer *peer(const char *name, const psc_peer_pkcs11 *p11)
{
	psc_peer *p = NULL;
	psc_err err = {0};
	if (new_peer(&p, name, p11, &err) != PSC_OK)
		fail_msg("psc_peer_new(%s): %s", name, psc_err_text(&err));
	if (psc_peer_initialize(p, NULL, NULL, &err) != PSC_OK)
		fail_msg("initialize(%s): %s", name, psc_err_text(&err));
	return p;
}

/* Certificates for sender signatures: the test CA's, by Node-ID. */
typedef struct member_cert {
	uint8_t id[16];
	uint8_t der[4096];
	size_t len;
} member_cert;
static member_cert CERTS[3];

static void learn_cert(int i, psc_peer *p, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s.crt.pem", pt_ca_path(name));
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	uint8_t *d = CERTS[i].der;
	int n = i2d_X509(x, &d);
	X509_free(x);
	assert_true(n > 0);
	CERTS[i].len = (size_t)n;
	psc_peer_node_id(p, CERTS[i].id);
}

static psc_rc sender_cert(void *user, const uint8_t psc_id[16], const uint8_t node[16],
			  uint8_t *der, size_t cap, size_t *len)
{
	(void)user;
	(void)psc_id;
	for (size_t i = 0; i < 3; i++) {
		if (memcmp(CERTS[i].id, node, 16) != 0)
			continue;
		if (CERTS[i].len > cap)
			return PSC_E_TOO_LARGE;
		memcpy(der, CERTS[i].der, CERTS[i].len);
		*len = CERTS[i].len;
		return PSC_OK;
	}
	return PSC_E_PEER_NOT_FOUND;
}

/* from seals a message of its own; to opens it: same epoch secret, and the
 * signature made by from's key verifies. */
static void message_passes(psc_peer *from, psc_peer *to, const uint8_t psc[16])
{
	psc_peer_msg_config mc = {.sender_cert = sender_cert};
	psc_peer_msg *ms = NULL, *mr = NULL;
	psc_err err = {0};
	assert_int_equal(psc_peer_msg_new(&ms, from, &mc, &err), PSC_OK);
	assert_int_equal(psc_peer_msg_new(&mr, to, &mc, &err), PSC_OK);
	static const char text[] = "signed and unwrapped in the token";
	uint8_t frame[1024], out[256];
	size_t flen = 0, olen = 0;
	if (psc_peer_seal(ms, psc, (const uint8_t *)text, sizeof(text), frame, sizeof(frame), &flen,
			  &err) != PSC_OK)
		fail_msg("seal: %s", psc_err_text(&err));
	psc_peer_msg_info info;
	if (psc_peer_open(mr, frame, flen, out, sizeof(out), &olen, &info, &err) != PSC_OK)
		fail_msg("open: %s", psc_err_text(&err));
	assert_int_equal(olen, sizeof(text));
	assert_memory_equal(out, text, sizeof(text));
	assert_true(info.sender_verified);
	psc_peer_msg_free(&ms);
	psc_peer_msg_free(&mr);
}

static void keys_on_a_token_sign_unwrap_and_sign_messages(void **state)
{
	(void)state;
	psc_peer_pkcs11 ec = {.module = TOK->module, .token = TOK->label, .pin_file = PIN_FILE,
			      .key_label = "peer1"};
	psc_peer_pkcs11 rsa = ec;
	rsa.key_label = "rsa1";
	psc_peer *a = peer("peer1", &ec); /* token, EC: ECDH in the token */
	psc_peer *b = peer("peer2", NULL); /* file key */
	psc_peer *c = peer("rsa1", &rsa); /* token, RSA: OAEP in the token */
	learn_cert(0, a, "peer1");
	learn_cert(1, b, "peer2");
	learn_cert(2, c, "rsa1");

	psc_peer_establish_params ep = {.name = "token-room", .sender_signatures = 1};
	uint8_t psc[16];
	uint64_t epoch = 0;
	psc_err err = {0};
	if (psc_peer_establish(a, &ep, psc, &epoch, NULL, &err) != PSC_OK)
		fail_msg("establish: %s", psc_err_text(&err));
	if (psc_peer_join(b, psc, &epoch, &err) != PSC_OK)
		fail_msg("join (peer2): %s", psc_err_text(&err));
	if (psc_peer_join(c, psc, &epoch, &err) != PSC_OK)
		fail_msg("join (rsa1): %s", psc_err_text(&err));
	/* a and b learn the newest epoch from their Refreshes */
	for (int i = 0; i < 50; i++) {
		(void)psc_peer_process(a, 100);
		(void)psc_peer_process(b, 100);
		psc_peer_psc_info ia, ib;
		if (psc_peer_psc_get(a, psc, &ia) == PSC_OK && ia.epoch == epoch &&
		    psc_peer_psc_get(b, psc, &ib) == PSC_OK && ib.epoch == epoch)
			break;
	}
	/* The CLI with the same token key: psc-peer --key-pkcs11. */
	char spec[9000], cert[4096], out_id[33];
	snprintf(spec, sizeof(spec), "module=%s,token=%s,key=peer1,pin-file=%s", TOK->module,
		 TOK->label, PIN_FILE);
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path("peer1"));
	char *argv[] = {PSC_PEER_CLI, "lookup", "token-room", "--kms", FX.endpoint,
			"--kms-cert", FX.cert, "--kms-curve", FX.curve, "--cert", cert,
			"--key-pkcs11", spec, "--overlay", "psc.test", NULL};
	char *out = NULL;
	int rc = pt_run(argv, &out, 60000);
	if (rc != 0)
		fail_msg("psc-peer --key-pkcs11 lookup: exit %d\n%s", rc, out ? out : "");
	psc_peer_id_hex(psc, out_id);
	assert_non_null(strstr(out, out_id));
	free(out);
	argv[12] = "module=/x,token=t,pin-file=/y"; /* no key= */
	assert_int_equal(pt_run(argv, &out, 60000), 2);
	assert_non_null(strstr(out, "--key-pkcs11 needs key="));
	free(out);

	message_passes(a, b, psc); /* the token signs; a file key verifies */
	message_passes(b, a, psc); /* a unwrapped with ECDH in the token */
	message_passes(c, b, psc); /* RSA key in the token: OAEP + signature */
	message_passes(b, c, psc);
	psc_peer_free(&a);
	psc_peer_free(&b);
	psc_peer_free(&c);
}

static void misconfigured_token_keys_say_what_is_wrong(void **state)
{
	(void)state;
	psc_peer *p = NULL;
	psc_err err = {0};
	psc_peer_pkcs11 bad = {.module = TOK->module, .token = TOK->label,
			       .pin_file = BAD_PIN_FILE, .key_label = "peer1"};
	assert_int_equal(new_peer(&p, "peer1", &bad, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(psc_err_text(&err), "refused the PIN"));
	bad.pin_file = PIN_FILE;
	bad.key_label = "nobody";
	assert_int_equal(new_peer(&p, "peer1", &bad, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(psc_err_text(&err), "no private key labelled 'nobody'"));
	bad.key_label = "peer1";
	bad.token = "no-such-token";
	assert_int_equal(new_peer(&p, "peer1", &bad, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(psc_err_text(&err), "no token labelled 'no-such-token'"));
	bad.token = TOK->label;
	bad.module = "/nonexistent/pkcs11.so";
	assert_int_equal(new_peer(&p, "peer1", &bad, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(psc_err_text(&err), "/nonexistent/pkcs11.so"));
	/* the key on the token is peer1's, not peer2's */
	bad.module = TOK->module;
	assert_int_equal(new_peer(&p, "peer2", &bad, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(psc_err_text(&err), "does not belong to certificate"));
	assert_null(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(keys_on_a_token_sign_unwrap_and_sign_messages),
		cmocka_unit_test(misconfigured_token_keys_say_what_is_wrong),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
