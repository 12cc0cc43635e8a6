/*
 * The member-wrap test vector of docs/keywrap.md §7: computed here in plain
 * OpenSSL from the fixed inputs, compared with the values printed in the doc
 * (parsed from the doc itself, so the doc cannot drift), unwrapped with
 * proto_keywrap_unwrap, and reproduced byte for byte by the HSM path.
 * PSC_KEYWRAP_PRINT=1 prints the vector block for the doc.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "hsm_test_util.h"
#include "proto_keywrap.h"

/* Fixed inputs (docs/keywrap.md §7). */
#define V_MEMBER_PRIV "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"
#define V_EPH_PRIV "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
#define V_PSC_ID "00112233445566778899aabbccddeeff"
#define V_EPOCH 42
#define V_NODE_ID "5053430a000000000000000000000002"
#define V_SECRET "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

struct vec {
	uint8_t member_priv[32], eph_priv[32], psc_id[16], node_id[16], secret[32];
	uint8_t member_pub[65], eph_pub[65], context[32], z[32], kek[32], wrapped[40];
};

static EVP_PKEY *p256_from_priv(const uint8_t d[32], uint8_t pub_out[65])
{
	BIGNUM *bn = BN_bin2bn(d, 32, NULL);
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *p = EC_POINT_new(g);
	assert_int_equal(EC_POINT_mul(g, p, bn, NULL, NULL, NULL), 1);
	assert_int_equal(EC_POINT_point2oct(g, p, POINT_CONVERSION_UNCOMPRESSED, pub_out, 65, NULL),
			 65);
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
	OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, bn);
	OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub_out, 65);
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *k = NULL;
	assert_int_equal(EVP_PKEY_fromdata_init(c), 1);
	assert_int_equal(EVP_PKEY_fromdata(c, &k, EVP_PKEY_KEYPAIR, params), 1);
	EVP_PKEY_CTX_free(c);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	EC_POINT_free(p);
	EC_GROUP_free(g);
	BN_clear_free(bn);
	return k;
}

/* The sender side in plain OpenSSL: what the HSM does, step by step. */
static void compute(struct vec *v)
{
	assert_int_equal(pt_unhex(V_MEMBER_PRIV, v->member_priv, 32), 32);
	assert_int_equal(pt_unhex(V_EPH_PRIV, v->eph_priv, 32), 32);
	assert_int_equal(pt_unhex(V_PSC_ID, v->psc_id, 16), 16);
	assert_int_equal(pt_unhex(V_NODE_ID, v->node_id, 16), 16);
	assert_int_equal(pt_unhex(V_SECRET, v->secret, 32), 32);
	EVP_PKEY *m = p256_from_priv(v->member_priv, v->member_pub);
	EVP_PKEY *e = p256_from_priv(v->eph_priv, v->eph_pub);
	EVP_PKEY_CTX *d = EVP_PKEY_CTX_new(e, NULL);
	size_t zl = 32;
	assert_int_equal(EVP_PKEY_derive_init(d), 1);
	assert_int_equal(EVP_PKEY_derive_set_peer(d, m), 1);
	assert_int_equal(EVP_PKEY_derive(d, v->z, &zl), 1);
	assert_int_equal(zl, 32);
	EVP_PKEY_CTX_free(d);
	psc_err err;
	assert_int_equal(
	    proto_keywrap_context(v->psc_id, V_EPOCH, v->node_id, v->eph_pub, 65, v->context, &err),
	    PSC_OK);
	assert_int_equal(proto_keywrap_kek(v->z, v->context, v->kek, &err), PSC_OK);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	int l = 0, l2 = 0;
	assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, v->kek, NULL), 1);
	assert_int_equal(EVP_EncryptUpdate(c, v->wrapped, &l, v->secret, 32), 1);
	assert_int_equal(EVP_EncryptFinal_ex(c, v->wrapped + l, &l2), 1);
	assert_int_equal(l + l2, 40);
	EVP_CIPHER_CTX_free(c);
	EVP_PKEY_free(m);
	EVP_PKEY_free(e);
}

/* Value of "name = hex..." in the doc's vector block (hex may wrap lines
 * that start with spaces). */
static size_t doc_value(const char *doc, const char *name, uint8_t *out, size_t max)
{
	char key[64];
	snprintf(key, sizeof(key), "\n%s ", name);
	const char *p = strstr(doc, key);
	if (!p)
		return 0;
	p = strchr(p, '=');
	if (!p)
		return 0;
	p++;
	char hex[1024];
	size_t n = 0;
	for (; *p && n < sizeof(hex) - 1; p++) {
		if (*p == '\n' && p[1] != ' ')
			break;
		hex[n++] = *p;
	}
	hex[n] = '\0';
	return pt_unhex(hex, out, max);
}

static void print_hex(const char *name, const uint8_t *p, size_t n)
{
	char h[256];
	pt_hex(p, n, h);
	printf("%-11s = %s\n", name, h);
}

static void vector_matches_the_doc(void **state)
{
	(void)state;
	struct vec v;
	compute(&v);
	if (getenv("PSC_KEYWRAP_PRINT")) {
		print_hex("member_priv", v.member_priv, 32);
		print_hex("member_pub", v.member_pub, 65);
		print_hex("eph_priv", v.eph_priv, 32);
		print_hex("eph_pub", v.eph_pub, 65);
		print_hex("psc_id", v.psc_id, 16);
		printf("%-11s = %d\n", "epoch", V_EPOCH);
		print_hex("node_id", v.node_id, 16);
		print_hex("secret", v.secret, 32);
		print_hex("z", v.z, 32);
		print_hex("context", v.context, 32);
		print_hex("kek", v.kek, 32);
		print_hex("wrapped", v.wrapped, 40);
	}
	char path[4200];
	snprintf(path, sizeof(path), "%s/docs/keywrap.md", PSC_SOURCE_DIR);
	size_t dl = 0;
	uint8_t *raw = pt_read_file(path, &dl);
	assert_non_null(raw);
	char *doc = realloc(raw, dl + 1);
	doc[dl] = '\0';
	const char *sec = strstr(doc, "## 7. Test vector");
	assert_non_null(sec);
	struct {
		const char *name;
		const uint8_t *want;
		size_t n;
	} f[] = {
	    {"member_priv", v.member_priv, 32}, {"member_pub", v.member_pub, 65},
	    {"eph_priv", v.eph_priv, 32},	{"eph_pub", v.eph_pub, 65},
	    {"psc_id", v.psc_id, 16},		{"node_id", v.node_id, 16},
	    {"secret", v.secret, 32},		{"z", v.z, 32},
	    {"context", v.context, 32},		{"kek", v.kek, 32},
	    {"wrapped", v.wrapped, 40},
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		uint8_t got[128];
		size_t n = doc_value(sec, f[i].name, got, sizeof(got));
		if (n != f[i].n || memcmp(got, f[i].want, n) != 0)
			fail_msg("docs/keywrap.md: '%s' disagrees with the computed vector",
				 f[i].name);
	}
	free(doc);
}

static void peer_unwrap_recovers_the_vector_secret(void **state)
{
	(void)state;
	struct vec v;
	compute(&v);
	EVP_PKEY *m = p256_from_priv(v.member_priv, v.member_pub);
	uint8_t out[32];
	psc_err err;
	assert_int_equal(proto_keywrap_unwrap(m, PSC_WRAP_ECDH_P256_AESPRF_KWP, v.psc_id, V_EPOCH,
					      v.node_id, v.eph_pub, 65, v.wrapped, 40, out, &err),
			 PSC_OK);
	assert_memory_equal(out, v.secret, 32);
	/* Every input is bound: change any one and the unwrap fails. */
	v.psc_id[0] ^= 1;
	assert_int_equal(proto_keywrap_unwrap(m, 3, v.psc_id, V_EPOCH, v.node_id, v.eph_pub, 65,
					      v.wrapped, 40, out, &err),
			 PSC_E_UNWRAP);
	v.psc_id[0] ^= 1;
	v.node_id[15] ^= 1;
	assert_int_equal(proto_keywrap_unwrap(m, 3, v.psc_id, V_EPOCH, v.node_id, v.eph_pub, 65,
					      v.wrapped, 40, out, &err),
			 PSC_E_UNWRAP);
	v.node_id[15] ^= 1;
	assert_int_equal(proto_keywrap_unwrap(m, 3, v.psc_id, V_EPOCH, v.node_id, v.eph_pub, 65,
					      v.wrapped, 39, out, &err),
			 PSC_E_UNWRAP);
	EVP_PKEY_free(m);
}

static void hsm_path_reproduces_the_vector(void **state)
{
	(void)state;
	struct vec v;
	compute(&v);
	th_env e;
	assert_int_equal(th_open(&e, "psc", NULL, 1), 0);
	hsm_key k;
	assert_int_equal(th_import_secret(&e, v.secret, &k), 0);
	hsm_eph *eph = NULL;
	psc_err err;
	assert_int_equal(hsm_eph_import(e.s, v.eph_priv, &eph, &err), PSC_OK);
	assert_memory_equal(hsm_eph_public(eph), v.eph_pub, 65);
	EVP_PKEY *m = p256_from_priv(v.member_priv, v.member_pub);
	uint8_t w[PROTO_KEYWRAP_MAX_WRAPPED], alg = 0;
	size_t wl = 0;
	if (hsm_wrap_for_member(e.s, &k, eph, m, v.psc_id, V_EPOCH, v.node_id, &alg, w, sizeof(w),
				&wl, &err) != PSC_OK)
		fail_msg("%s", psc_err_text(&err));
	assert_int_equal(alg, PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_int_equal(wl, 40);
	assert_memory_equal(w, v.wrapped, 40);
	uint8_t bad[32];
	memset(bad, 0xff, sizeof(bad)); /* >= group order */
	hsm_eph *no = NULL;
	assert_int_equal(hsm_eph_import(e.s, bad, &no, &err), PSC_E_INVALID_ARG);
	assert_null(no);
	hsm_eph_free(&eph);
	EVP_PKEY_free(m);
	assert_int_equal(hsm_key_destroy(e.s, &k, &err), PSC_OK);
	th_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(vector_matches_the_doc),
	    cmocka_unit_test(peer_unwrap_recovers_the_vector_secret),
	    cmocka_unit_test(hsm_path_reproduces_the_vector),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
