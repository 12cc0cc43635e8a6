/* Member-side unwrap of epoch secrets; normative spec: docs/keywrap.md. */
#include "proto_keywrap.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

const char *proto_keywrap_alg_name(uint8_t wrap_alg)
{
	switch (wrap_alg) {
	case PSC_WRAP_RSA_OAEP_SHA1:
		return "RSA-OAEP-SHA1";
	case PSC_WRAP_RSA_OAEP_SHA256:
		return "RSA-OAEP-SHA256";
	case PSC_WRAP_ECDH_P256_AESPRF_KWP:
		return "ECDH-P256-AESPRF-KWP";
	default:
		return "unknown";
	}
}

psc_rc proto_keywrap_context(const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			     const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *eph_pub,
			     size_t eph_len, uint8_t out[PROTO_KEYWRAP_CONTEXT_LEN], psc_err *err)
{
	if (!psc_id || !node_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "keywrap context: missing argument");
	if (!eph_pub || eph_len != PROTO_KEYWRAP_EC_POINT_LEN || eph_pub[0] != 0x04)
		return psc_err_set(err, PSC_E_BAD_VALUE,
				   "keywrap context: ephemeral public key must be a %d-byte "
				   "uncompressed P-256 point (got %zu bytes)",
				   PROTO_KEYWRAP_EC_POINT_LEN, eph_pub ? eph_len : 0);
	uint8_t ep[8];
	for (int i = 0; i < 8; i++)
		ep[i] = (uint8_t)(epoch >> (56 - 8 * i));
	static const char label[] = PSC_WRAP_CONTEXT_LABEL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int olen = 0;
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(md, label, sizeof(label) - 1) == 1 &&
		 EVP_DigestUpdate(md, psc_id, PSC_PSC_ID_LEN) == 1 &&
		 EVP_DigestUpdate(md, ep, sizeof(ep)) == 1 &&
		 EVP_DigestUpdate(md, node_id, PSC_NODE_ID_LEN) == 1 &&
		 EVP_DigestUpdate(md, eph_pub, eph_len) == 1 &&
		 EVP_DigestFinal_ex(md, out, &olen) == 1 && olen == PROTO_KEYWRAP_CONTEXT_LEN;
	EVP_MD_CTX_free(md);
	if (!ok)
		return psc_err_set(err, PSC_E_CRYPTO, "keywrap context: SHA-256 failed");
	return PSC_OK;
}

psc_rc proto_keywrap_kek(const uint8_t z[32], const uint8_t context[PROTO_KEYWRAP_CONTEXT_LEN],
			 uint8_t kek_out[32], psc_err *err)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;
	int ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, z, NULL) == 1 &&
		 EVP_CIPHER_CTX_set_padding(c, 0) == 1 &&
		 EVP_EncryptUpdate(c, kek_out, &l1, context, PROTO_KEYWRAP_CONTEXT_LEN) == 1 &&
		 EVP_EncryptFinal_ex(c, kek_out + l1, &l2) == 1 && l1 + l2 == 32;
	EVP_CIPHER_CTX_free(c); /* also cleanses the expanded key schedule */
	if (!ok) {
		OPENSSL_cleanse(kek_out, 32);
		return psc_err_set(err, PSC_E_CRYPTO, "keywrap KEK: AES-256-ECB failed");
	}
	return PSC_OK;
}

/* RFC 5649 unwrap; exactly PSC_EPOCH_SECRET_LEN bytes must come out. */
static psc_rc kwp_unwrap(const uint8_t kek[32], const uint8_t *wrapped, size_t wrapped_len,
			 uint8_t secret_out[PSC_EPOCH_SECRET_LEN], psc_err *err)
{
	if (wrapped_len != PROTO_KEYWRAP_KWP_LEN)
		return psc_err_set(err, PSC_E_UNWRAP,
				   "EC member wrap: wrapped secret must be %d bytes, got %zu",
				   PROTO_KEYWRAP_KWP_LEN, wrapped_len);
	uint8_t buf[PROTO_KEYWRAP_KWP_LEN + 16];
	int outl = -1;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int ok = 0;
	if (c) {
		EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
		ok = EVP_DecryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kek, NULL) == 1 &&
		     EVP_DecryptUpdate(c, buf, &outl, wrapped, (int)wrapped_len) == 1 &&
		     outl == PSC_EPOCH_SECRET_LEN;
	}
	EVP_CIPHER_CTX_free(c);
	if (ok)
		memcpy(secret_out, buf, PSC_EPOCH_SECRET_LEN);
	OPENSSL_cleanse(buf, sizeof(buf));
	ERR_clear_error();
	if (!ok)
		return psc_err_set(err, PSC_E_UNWRAP,
				   "EC member wrap: AES key unwrap (RFC 5649) integrity check "
				   "failed: blob tampered, wrong member key or wrong PSC "
				   "ID/epoch/Node-ID/ephemeral key");
	return PSC_OK;
}

static int is_p256(EVP_PKEY *pk)
{
	char group[64] = {0};
	size_t glen = 0;
	if (!EVP_PKEY_is_a(pk, "EC"))
		return 0;
	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   &glen) != 1)
		return 0;
	return strcmp(group, "prime256v1") == 0;
}

static psc_rc unwrap_ec(EVP_PKEY *priv, const uint8_t *psc_id, uint64_t epoch,
			const uint8_t *node_id, const uint8_t *eph_pub, size_t eph_len,
			const uint8_t *wrapped, size_t wrapped_len, uint8_t *secret_out,
			psc_err *err)
{
	if (!is_p256(priv))
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "wrap algorithm %u (ECDH-P256-AESPRF-KWP) needs an EC P-256 "
				   "member key",
				   PSC_WRAP_ECDH_P256_AESPRF_KWP);
	uint8_t context[PROTO_KEYWRAP_CONTEXT_LEN];
	psc_rc rc = proto_keywrap_context(psc_id, epoch, node_id, eph_pub, eph_len, context, err);
	if (rc != PSC_OK)
		return rc;

	/* The ephemeral point as an EVP_PKEY; import rejects points off the curve. */
	EVP_PKEY *peer = NULL;
	EVP_PKEY_CTX *ictx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
	    OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)eph_pub, eph_len),
	    OSSL_PARAM_construct_end(),
	};
	if (!ictx || EVP_PKEY_fromdata_init(ictx) != 1 ||
	    EVP_PKEY_fromdata(ictx, &peer, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		EVP_PKEY_CTX_free(ictx);
		ERR_clear_error();
		return psc_err_set(err, PSC_E_BAD_VALUE,
				   "EC member wrap: ephemeral public key is not a point on P-256");
	}
	EVP_PKEY_CTX_free(ictx);

	uint8_t z[32], kek[32];
	size_t zlen = sizeof(z);
	EVP_PKEY_CTX *dctx = EVP_PKEY_CTX_new(priv, NULL);
	int ok = dctx && EVP_PKEY_derive_init(dctx) == 1 &&
		 EVP_PKEY_derive_set_peer(dctx, peer) == 1 &&
		 EVP_PKEY_derive(dctx, z, &zlen) == 1 && zlen == sizeof(z);
	EVP_PKEY_CTX_free(dctx);
	EVP_PKEY_free(peer);
	if (!ok) {
		OPENSSL_cleanse(z, sizeof(z));
		ERR_clear_error();
		return psc_err_set(err, PSC_E_CRYPTO, "EC member wrap: ECDH derive failed");
	}
	rc = proto_keywrap_kek(z, context, kek, err);
	OPENSSL_cleanse(z, sizeof(z));
	if (rc == PSC_OK)
		rc = kwp_unwrap(kek, wrapped, wrapped_len, secret_out, err);
	OPENSSL_cleanse(kek, sizeof(kek));
	return rc;
}

static psc_rc unwrap_rsa(EVP_PKEY *priv, uint8_t alg, const uint8_t *wrapped, size_t wrapped_len,
			 uint8_t *secret_out, psc_err *err)
{
	if (!EVP_PKEY_is_a(priv, "RSA"))
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "wrap algorithm %u (%s) needs an RSA member key", alg,
				   proto_keywrap_alg_name(alg));
	int bits = EVP_PKEY_get_bits(priv);
	if (bits < PROTO_KEYWRAP_RSA_MIN_BITS || bits > PROTO_KEYWRAP_RSA_MAX_BITS)
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "RSA member key of %d bits: %d..%d supported", bits,
				   PROTO_KEYWRAP_RSA_MIN_BITS, PROTO_KEYWRAP_RSA_MAX_BITS);
	if (wrapped_len != (size_t)EVP_PKEY_get_size(priv))
		return psc_err_set(
		    err, PSC_E_UNWRAP, "%s: wrapped secret is %zu bytes, the key's modulus is %d",
		    proto_keywrap_alg_name(alg), wrapped_len, EVP_PKEY_get_size(priv));
	const EVP_MD *md = alg == PSC_WRAP_RSA_OAEP_SHA1 ? EVP_sha1() : EVP_sha256();
	uint8_t buf[PROTO_KEYWRAP_MAX_WRAPPED];
	size_t outl = sizeof(buf);
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(priv, NULL);
	int ok = c && EVP_PKEY_decrypt_init(c) == 1 &&
		 EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
		 EVP_PKEY_CTX_set_rsa_oaep_md(c, md) == 1 &&
		 EVP_PKEY_CTX_set_rsa_mgf1_md(c, md) == 1 &&
		 EVP_PKEY_decrypt(c, buf, &outl, wrapped, wrapped_len) == 1 &&
		 outl == PSC_EPOCH_SECRET_LEN;
	EVP_PKEY_CTX_free(c);
	if (ok)
		memcpy(secret_out, buf, PSC_EPOCH_SECRET_LEN);
	OPENSSL_cleanse(buf, sizeof(buf));
	ERR_clear_error();
	if (!ok)
		return psc_err_set(err, PSC_E_UNWRAP,
				   "%s: OAEP decryption failed or did not yield %d bytes: blob "
				   "tampered or wrapped for another key",
				   proto_keywrap_alg_name(alg), PSC_EPOCH_SECRET_LEN);
	return PSC_OK;
}

psc_rc proto_keywrap_unwrap(EVP_PKEY *member_private_key, uint8_t wrap_alg,
			    const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *eph_pub,
			    size_t eph_len, const uint8_t *wrapped, size_t wrapped_len,
			    uint8_t secret_out[PSC_EPOCH_SECRET_LEN], psc_err *err)
{
	if (!member_private_key || !psc_id || !node_id || !wrapped || !secret_out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "keywrap unwrap: missing argument");
	memset(secret_out, 0, PSC_EPOCH_SECRET_LEN);
	switch (wrap_alg) {
	case PSC_WRAP_RSA_OAEP_SHA1:
	case PSC_WRAP_RSA_OAEP_SHA256:
		return unwrap_rsa(member_private_key, wrap_alg, wrapped, wrapped_len, secret_out,
				  err);
	case PSC_WRAP_ECDH_P256_AESPRF_KWP:
		return unwrap_ec(member_private_key, psc_id, epoch, node_id, eph_pub, eph_len,
				 wrapped, wrapped_len, secret_out, err);
	default:
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "unknown member wrap algorithm id %u (known: 1, 2, 3)",
				   wrap_alg);
	}
}
