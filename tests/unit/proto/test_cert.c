/* Node-ID <-> certificate binding, and message signatures with the test CA's
 * real EC P-256 and RSA-2048 keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "proto_cert.h"
#include "proto_msg.h"
#include "proto_reload.h"
#include "psc_test.h"

static X509 *load_cert(const char *name)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.crt.pem", name);
	FILE *f = fopen(pt_ca_path(file), "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *load_key(const char *name)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.key.pem", name);
	FILE *f = fopen(pt_ca_path(file), "r");
	assert_non_null(f);
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(k);
	return k;
}

static void node_id_comes_from_the_reload_uri(void **state)
{
	(void)state;
	const char *good[] = {"peer1", "peer2", "kms", "rsa1", "p384", "expired", "wrongca"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		X509 *x = load_cert(good[i]);
		uint8_t id[16], want[16];
		psc_err e;
		assert_int_equal(pt_ca_nodeid(good[i], want), 0);
		assert_int_equal(proto_cert_node_id(x, "psc.test", id, &e), PSC_OK);
		assert_memory_equal(id, want, 16);
		/* Any overlay when none is required. */
		assert_int_equal(proto_cert_node_id(x, NULL, id, &e), PSC_OK);
		X509_free(x);
	}
}

static void missing_malformed_and_foreign_bindings_have_their_own_errors(void **state)
{
	(void)state;
	uint8_t id[16];
	psc_err e;
	X509 *x = load_cert("nonodeid");
	assert_int_equal(proto_cert_node_id(x, "psc.test", id, &e), PSC_E_NO_NODE_ID);
	assert_non_null(strstr(e.detail, "CN=nonodeid"));
	assert_non_null(strstr(e.detail, "reissue"));
	X509_free(x);
	x = load_cert("badnodeid");
	assert_int_equal(proto_cert_node_id(x, "psc.test", id, &e), PSC_E_BAD_NODE_ID_URI);
	assert_non_null(strstr(e.detail, "malformed"));
	X509_free(x);
	x = load_cert("peer1");
	assert_int_equal(proto_cert_node_id(x, "other.overlay", id, &e), PSC_E_OVERLAY);
	assert_non_null(strstr(e.detail, "other.overlay"));
	X509_free(x);
}

static void uri_parser_edge_cases(void **state)
{
	(void)state;
	uint8_t id[16];
	struct {
		const char *uri;
		psc_rc want;
	} cases[] = {
		{"reload://00112233445566778899aabbccddeeff@psc.test/", PSC_OK},
		{"reload://00112233445566778899AABBCCDDEEFF@psc.test/", PSC_OK},
		{"reload://00112233445566778899aabbccddeeff@psc.test", PSC_E_BAD_NODE_ID_URI},
		{"reload://00112233445566778899aabbccddee@psc.test/", PSC_E_BAD_NODE_ID_URI},
		{"reload://00112233445566778899aabbccddeeffaa@psc.test/", PSC_E_BAD_NODE_ID_URI},
		{"reload://0011223344556677889gaabbccddeeff@psc.test/", PSC_E_BAD_NODE_ID_URI},
		{"reload://00112233445566778899aabbccddeeff@/", PSC_E_BAD_NODE_ID_URI},
		{"reload://00112233445566778899aabbccddeeff@a/b/", PSC_E_BAD_NODE_ID_URI},
		{"reload://00112233445566778899aabbccddeeff@other/", PSC_E_OVERLAY},
		{"http://example.com/", PSC_E_NO_NODE_ID},
		{"", PSC_E_NO_NODE_ID},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		psc_rc rc = proto_parse_node_uri(cases[i].uri, strlen(cases[i].uri), "psc.test", id);
		if (rc != cases[i].want)
			fail_msg("%s: got %s", cases[i].uri, psc_rc_name(rc));
	}
	const char *ok = "reload://00112233445566778899aabbccddeeff@psc.test/";
	assert_int_equal(proto_parse_node_uri(ok, strlen(ok), "psc.test", id), PSC_OK);
	assert_int_equal(id[0], 0x00);
	assert_int_equal(id[15], 0xff);
	char hex[33];
	proto_id_hex(id, hex);
	assert_string_equal(hex, "00112233445566778899aabbccddeeff");
	uint8_t back[16];
	assert_int_equal(proto_id_from_hex(hex, back), PSC_OK);
	assert_memory_equal(back, id, 16);
	assert_int_equal(proto_id_from_hex("zz", back), PSC_E_BAD_VALUE);
}

static void der_parse_rejects_garbage_and_trailing_bytes(void **state)
{
	(void)state;
	X509 *x = load_cert("peer1");
	uint8_t *der = NULL;
	int len = i2d_X509(x, &der);
	assert_true(len > 0);
	X509 *y = NULL;
	psc_err e;
	assert_int_equal(proto_cert_parse(der, (size_t)len, &y, &e), PSC_OK);
	X509_free(y);
	uint8_t *longer = malloc((size_t)len + 1);
	memcpy(longer, der, (size_t)len);
	longer[len] = 0;
	assert_int_equal(proto_cert_parse(longer, (size_t)len + 1, &y, &e), PSC_E_BAD_CERT);
	assert_non_null(strstr(e.detail, "trailing"));
	assert_int_equal(proto_cert_parse(der, (size_t)len / 2, &y, &e), PSC_E_BAD_CERT);
	assert_null(y);
	free(longer);
	OPENSSL_free(der);
	X509_free(x);
}

/* Sign with each key type of the test CA; the receiver finds the signer's
 * certificate in the SecurityBlock, binds the Node-ID and verifies. */
static void sign_and_verify_with_ec_and_rsa_peers(void **state)
{
	(void)state;
	const char *who[] = {"peer1", "rsa1"};
	for (size_t i = 0; i < 2; i++) {
		X509 *x = load_cert(who[i]);
		EVP_PKEY *k = load_key(who[i]);
		uint8_t *der = NULL;
		int der_len = i2d_X509(x, &der);
		psc_body b = {.code = PSC_MSG_JOIN_REQ};
		b.u.psc_req.timestamp = 1;
		uint8_t *body, *msg;
		size_t body_len, msg_len;
		assert_int_equal(proto_body_encode(&b, &body, &body_len, NULL), PSC_OK);
		proto_envelope env = {.overlay = proto_overlay_hash("psc.test"),
				      .transaction_id = 99,
				      .code = PSC_MSG_JOIN_REQ};
		proto_signer s = {.key = k, .cert_der = der, .cert_len = (size_t)der_len};
		psc_err e;
		assert_int_equal(proto_message_build(&env, body, body_len, &s, &msg, &msg_len, &e),
				 PSC_OK);
		proto_message m;
		assert_int_equal(proto_message_decode(msg, msg_len, &m, &e), PSC_OK);
		assert_int_equal(m.sig_alg, i == 0 ? PROTO_SIG_ECDSA : PROTO_SIG_RSA);
		const uint8_t *cder;
		size_t clen;
		assert_int_equal(proto_message_signer_cert(&m, &cder, &clen), PSC_OK);
		X509 *got = NULL;
		assert_int_equal(proto_cert_parse(cder, clen, &got, &e), PSC_OK);
		uint8_t id[16], want[16];
		assert_int_equal(proto_cert_node_id(got, "psc.test", id, &e), PSC_OK);
		assert_int_equal(pt_ca_nodeid(who[i], want), 0);
		assert_memory_equal(id, want, 16);
		assert_int_equal(proto_message_verify(&m, X509_get0_pubkey(got), &e), PSC_OK);
		/* Another peer's key does not verify it. */
		EVP_PKEY *other = load_key(i == 0 ? "peer2" : "rsa2");
		assert_int_equal(proto_message_verify(&m, other, &e), PSC_E_BAD_SIGNATURE);
		EVP_PKEY_free(other);
		X509_free(got);
		free(body);
		free(msg);
		OPENSSL_free(der);
		EVP_PKEY_free(k);
		X509_free(x);
	}
}

static void identity_names_a_certificate_not_in_the_message(void **state)
{
	(void)state;
	X509 *x = load_cert("peer1");
	EVP_PKEY *k = load_key("peer1");
	uint8_t *der = NULL;
	int der_len = i2d_X509(x, &der);
	uint8_t body[24] = {0};
	proto_envelope env = {.overlay = 1, .transaction_id = 2, .code = PSC_MSG_JOIN_REQ};
	proto_signer s = {.key = k, .cert_der = der, .cert_len = (size_t)der_len,
			  .omit_certificates = 1};
	uint8_t *msg;
	size_t msg_len;
	psc_err e;
	assert_int_equal(proto_message_build(&env, body, sizeof(body), &s, &msg, &msg_len, &e),
			 PSC_OK);
	proto_message m;
	assert_int_equal(proto_message_decode(msg, msg_len, &m, &e), PSC_OK);
	assert_int_equal(m.n_certs, 0);
	const uint8_t *cder;
	size_t clen;
	assert_int_equal(proto_message_signer_cert(&m, &cder, &clen), PSC_E_NO_CERT);
	/* A receiver that holds the certificate checks the binding and verifies. */
	assert_true(proto_message_signed_by(&m, der, (size_t)der_len));
	assert_int_equal(proto_message_verify(&m, k, &e), PSC_OK);
	free(msg);
	OPENSSL_free(der);
	EVP_PKEY_free(k);
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(node_id_comes_from_the_reload_uri),
		cmocka_unit_test(missing_malformed_and_foreign_bindings_have_their_own_errors),
		cmocka_unit_test(uri_parser_edge_cases),
		cmocka_unit_test(der_parse_rejects_garbage_and_trailing_bytes),
		cmocka_unit_test(sign_and_verify_with_ec_and_rsa_peers),
		cmocka_unit_test(identity_names_a_certificate_not_in_the_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
