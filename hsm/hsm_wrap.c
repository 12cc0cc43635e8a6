/* Member wraps inside the HSM; normative spec docs/keywrap.md; see hsm_wrap.h. */
#include "hsm_wrap.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

#include "hsm_ckr.h"
#include "hsm_int.h"

/* DER OID of prime256v1, as CKA_EC_PARAMS. */
static const uint8_t p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

struct hsm_eph {
	hsm_session *s;
	CK_OBJECT_HANDLE priv;
	unsigned gen;
	uint8_t point[PROTO_KEYWRAP_EC_POINT_LEN];
};

/* CKA_EC_POINT is a DER OCTET STRING (04 41 04 X Y); some tokens give it raw. */
static bool point_from_attr(const uint8_t *p, CK_ULONG n, uint8_t out[65])
{
	if (n == 67 && p[0] == 0x04 && p[1] == 0x41 && p[2] == 0x04) {
		memcpy(out, p + 2, 65);
		return true;
	}
	if (n == 65 && p[0] == 0x04) {
		memcpy(out, p, 65);
		return true;
	}
	return false;
}

psc_rc hsm_eph_new(hsm_session *s, hsm_eph **out, psc_err *err)
{
	if (!out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_eph_new: missing argument");
	*out = NULL;
	psc_rc rc = hsm_session_enter(s, err);
	if (rc != PSC_OK)
		return rc;
	hsm_ctx *ctx = s->ctx;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ATTRIBUTE pub_t[] = {
	    {CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)},
	    {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_VERIFY, &f, sizeof(f)},
	};
	/* The private half only ever derives (ECDH), never signs or leaves. */
	CK_ATTRIBUTE priv_t[] = {
	    {CKA_TOKEN, &f, sizeof(f)},	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)}, {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_DERIVE, &t, sizeof(t)},    {CKA_SIGN, &f, sizeof(f)},
	};
	CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	CK_RV rv = ctx->f->C_GenerateKeyPair(s->h, &mech, pub_t, 3, priv_t, 6, &pub, &priv);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN, P-256)",
				  PSC_E_HSM_P11, "cannot make the rekey's ephemeral key", err);
	uint8_t buf[80];
	CK_ATTRIBUTE a = {CKA_EC_POINT, buf, sizeof(buf)};
	rv = ctx->f->C_GetAttributeValue(s->h, pub, &a, 1);
	(void)ctx->f->C_DestroyObject(s->h, pub);
	hsm_eph *e = calloc(1, sizeof(*e));
	if (rv != CKR_OK || !e || !point_from_attr(buf, a.ulValueLen, e ? e->point : buf)) {
		(void)ctx->f->C_DestroyObject(s->h, priv);
		free(e);
		if (rv != CKR_OK)
			return hsm_s_fail(s, rv, "C_GetAttributeValue(CKA_EC_POINT)", PSC_E_HSM_P11,
					  NULL, err);
		if (!e)
			return psc_err_set(err, PSC_E_NOMEM, "hsm_eph_new: out of memory");
		return psc_err_set(err, PSC_E_HSM_P11,
				   "token '%s' returned a CKA_EC_POINT of %lu bytes that is not "
				   "an uncompressed P-256 point",
				   ctx->label, (unsigned long)a.ulValueLen);
	}
	e->s = s;
	e->priv = priv;
	e->gen = s->gen;
	*out = e;
	return PSC_OK;
}

psc_rc hsm_eph_import(hsm_session *s, const uint8_t priv[32], hsm_eph **out, psc_err *err)
{
	if (!out || !priv)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_eph_import: missing argument");
	*out = NULL;
	/* The public point from the scalar, with OpenSSL (known-answer use only). */
	hsm_eph *e = calloc(1, sizeof(*e));
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *pt = g ? EC_POINT_new(g) : NULL;
	BIGNUM *d = BN_bin2bn(priv, 32, NULL);
	int ok = e && pt && d && !BN_is_zero(d) && BN_cmp(d, EC_GROUP_get0_order(g)) < 0 &&
		 EC_POINT_mul(g, pt, d, NULL, NULL, NULL) == 1 &&
		 EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, e->point,
				    sizeof(e->point), NULL) == sizeof(e->point);
	BN_clear_free(d);
	EC_POINT_free(pt);
	EC_GROUP_free(g);
	if (!ok) {
		free(e);
		ERR_clear_error();
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm_eph_import: not a valid P-256 private scalar");
	}
	psc_rc rc = hsm_session_enter(s, err);
	if (rc != PSC_OK) {
		free(e);
		return rc;
	}
	hsm_ctx *ctx = s->ctx;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = CKK_EC;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)},
	    {CKA_VALUE, (void *)priv, 32},
	    {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_DERIVE, &t, sizeof(t)},
	};
	CK_RV rv = ctx->f->C_CreateObject(s->h, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &e->priv);
	if (rv != CKR_OK) {
		free(e);
		return hsm_s_fail(s, rv, "C_CreateObject(EC private key)", PSC_E_HSM_P11, NULL,
				  err);
	}
	e->s = s;
	e->gen = s->gen;
	*out = e;
	return PSC_OK;
}

void hsm_eph_free(hsm_eph **pe)
{
	if (!pe || !*pe)
		return;
	hsm_eph *e = *pe;
	/* Only destroy what the current session generation made; older objects
	 * died with their session. */
	if (e->s && e->s->open && e->gen == e->s->gen && e->gen == atomic_load(&e->s->ctx->gen))
		(void)e->s->ctx->f->C_DestroyObject(e->s->h, e->priv);
	free(e);
	*pe = NULL;
}

const uint8_t *hsm_eph_public(const hsm_eph *eph)
{
	return eph ? eph->point : NULL;
}

/* OSSL_PARAM BNs are native-endian, zero-padded to the buffer; PKCS#11 wants
 * big-endian. Takes the low `out_len` bytes of the number. */
static void native_to_be(const uint8_t *nat, size_t nat_len, uint8_t *out, size_t out_len)
{
	const uint16_t one = 1;
	bool little = *(const uint8_t *)&one == 1;
	for (size_t i = 0; i < out_len; i++)
		out[i] = little ? nat[out_len - 1 - i] : nat[nat_len - out_len + i];
}

static psc_rc wrap_rsa(hsm_session *s, const hsm_key *secret, EVP_PKEY *pub, uint8_t *alg_out,
		       uint8_t *wrapped, size_t cap, size_t *wlen, psc_err *err)
{
	hsm_ctx *ctx = s->ctx;
	int bits = EVP_PKEY_get_bits(pub);
	if (bits < PROTO_KEYWRAP_RSA_MIN_BITS || bits > PROTO_KEYWRAP_RSA_MAX_BITS)
		return psc_err_set(err, PSC_E_HSM_BAD_PUBKEY,
				   "member RSA public key has %d bits; psc-kms wraps only to "
				   "%d..%d-bit keys: the member needs a new certificate",
				   bits, PROTO_KEYWRAP_RSA_MIN_BITS, PROTO_KEYWRAP_RSA_MAX_BITS);
	size_t mod_len = (size_t)EVP_PKEY_get_size(pub);
	if (cap < mod_len)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm_wrap_for_member: output buffer of %zu bytes, need %zu", cap,
				   mod_len);
	/* One EVP_PKEY_get_params call into fixed buffers: BIGNUM getters cost
	 * ~5 us a wrap, a sixth of SoftHSM's own work (bench/hsm_bench.c). */
	uint8_t nnat[PROTO_KEYWRAP_MAX_WRAPPED], enat[16], nb[PROTO_KEYWRAP_MAX_WRAPPED], eb[16];
	OSSL_PARAM prm[] = {
	    OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_N, nnat, sizeof(nnat)),
	    OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_E, enat, sizeof(enat)),
	    OSSL_PARAM_construct_end(),
	};
	if (EVP_PKEY_get_params(pub, prm) != 1) {
		ERR_clear_error();
		return psc_err_set(err, PSC_E_HSM_BAD_PUBKEY,
				   "member RSA public key: cannot read modulus/exponent");
	}
	native_to_be(nnat, sizeof(nnat), nb, mod_len);
	native_to_be(enat, sizeof(enat), eb, sizeof(eb));
	int nl = (int)mod_len, el = (int)sizeof(eb);
	const uint8_t *ep = eb;
	while (el > 1 && *ep == 0) {
		ep++;
		el--;
	}
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt = CKK_RSA;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},  {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &f, sizeof(f)},	     {CKA_WRAP, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},    {CKA_VERIFY, &f, sizeof(f)},
	    {CKA_MODULUS, nb, (CK_ULONG)nl}, {CKA_PUBLIC_EXPONENT, (void *)ep, (CK_ULONG)el},
	};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = ctx->f->C_CreateObject(s->h, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_CreateObject(member RSA public key)", PSC_E_HSM_P11,
				  "the token rejects the member's RSA key", err);
	/* SHA-256 first unless the token already told us it only does SHA-1. */
	for (;;) {
		bool sha256 = atomic_load(&ctx->oaep) != HSM_OAEP_SHA1;
		CK_RSA_PKCS_OAEP_PARAMS op = {sha256 ? CKM_SHA256 : CKM_SHA_1,
					      sha256 ? CKG_MGF1_SHA256 : CKG_MGF1_SHA1,
					      CKZ_DATA_SPECIFIED, NULL, 0};
		CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &op, sizeof(op)};
		CK_ULONG wl = (CK_ULONG)cap;
		rv = ctx->f->C_WrapKey(s->h, &m, h, secret->handle, wrapped, &wl);
		if (sha256 && (rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID)) {
			atomic_store(&ctx->oaep, HSM_OAEP_SHA1);
			continue;
		}
		if (rv == CKR_OK) {
			if (sha256)
				atomic_store(&ctx->oaep, HSM_OAEP_SHA256);
			*alg_out = sha256 ? PSC_WRAP_RSA_OAEP_SHA256 : PSC_WRAP_RSA_OAEP_SHA1;
			*wlen = wl;
		}
		break;
	}
	(void)ctx->f->C_DestroyObject(s->h, h);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_WrapKey(CKM_RSA_PKCS_OAEP)", PSC_E_HSM_P11,
				  "cannot wrap the epoch secret to the member's RSA key", err);
	return PSC_OK;
}

static psc_rc member_point(EVP_PKEY *pub, uint8_t out[65], psc_err *err)
{
	/* Group and encoded point in one call: the X/Y BIGNUM getters convert the
	 * point to affine coordinates each time (~10 us, bench/hsm_bench.c). */
	char group[64] = {0};
	uint8_t enc[133];
	OSSL_PARAM prm[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group)),
	    OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, enc, sizeof(enc)),
	    OSSL_PARAM_construct_end(),
	};
	if (EVP_PKEY_get_params(pub, prm) != 1 || !OSSL_PARAM_modified(&prm[0])) {
		ERR_clear_error();
		return psc_err_set(err, PSC_E_HSM_UNSUPPORTED_KEY,
				   "member EC key has no named curve: only P-256 is supported "
				   "for key wrapping");
	}
	if (strcmp(group, "prime256v1") != 0)
		return psc_err_set(err, PSC_E_HSM_UNSUPPORTED_KEY,
				   "member EC key is on unsupported curve %s: psc-kms wraps epoch "
				   "secrets only to P-256 (prime256v1) or RSA keys; the member "
				   "needs a P-256 or RSA certificate",
				   group);
	if (OSSL_PARAM_modified(&prm[1]) && prm[1].return_size == 65 && enc[0] == 0x04) {
		memcpy(out, enc, 65);
		return PSC_OK;
	}
	/* A key kept in compressed form: ask for the coordinates instead. */
	BIGNUM *x = NULL, *y = NULL;
	int ok = EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
		 EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1 &&
		 BN_num_bytes(x) <= 32 && BN_num_bytes(y) <= 32;
	if (ok) {
		out[0] = 0x04;
		ok = BN_bn2binpad(x, out + 1, 32) == 32 && BN_bn2binpad(y, out + 33, 32) == 32;
	}
	BN_free(x);
	BN_free(y);
	if (!ok) {
		ERR_clear_error();
		return psc_err_set(err, PSC_E_HSM_BAD_PUBKEY,
				   "member P-256 public key has no usable point");
	}
	return PSC_OK;
}

static psc_rc wrap_ec(hsm_session *s, const hsm_key *secret, const hsm_eph *eph, EVP_PKEY *pub,
		      const uint8_t *psc_id, uint64_t epoch, const uint8_t *node_id,
		      uint8_t *alg_out, uint8_t *wrapped, size_t cap, size_t *wlen, psc_err *err)
{
	hsm_ctx *ctx = s->ctx;
	uint8_t point[65], context[PROTO_KEYWRAP_CONTEXT_LEN];
	psc_rc rc = member_point(pub, point, err);
	if (rc != PSC_OK)
		return rc;
	if (!eph)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm_wrap_for_member: EC member needs the rekey's ephemeral "
				   "key (hsm_eph_new)");
	if (eph->gen != atomic_load(&ctx->gen))
		return psc_err_set(err, PSC_E_HSM_STALE_KEY,
				   "ephemeral key was made before the HSM sessions were "
				   "reopened after a fault: make a new one (hsm_eph_new)");
	if (cap < PROTO_KEYWRAP_KWP_LEN)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm_wrap_for_member: output buffer of %zu bytes, need %d", cap,
				   PROTO_KEYWRAP_KWP_LEN);
	rc = proto_keywrap_context(psc_id, epoch, node_id, eph->point, sizeof(eph->point), context,
				   err);
	if (rc != PSC_OK)
		return rc;

	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_ULONG len32 = 32;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	/* Z must be an AES key with DERIVE for the ECB step (softhsm-notes.md). */
	CK_ATTRIBUTE z_t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},	    {CKA_KEY_TYPE, &aes, sizeof(aes)},
	    {CKA_VALUE_LEN, &len32, sizeof(len32)}, {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_PRIVATE, &t, sizeof(t)},	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},	    {CKA_DERIVE, &t, sizeof(t)},
	};
	CK_ATTRIBUTE k_t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},	    {CKA_KEY_TYPE, &aes, sizeof(aes)},
	    {CKA_VALUE_LEN, &len32, sizeof(len32)}, {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_PRIVATE, &t, sizeof(t)},	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},	    {CKA_WRAP, &t, sizeof(t)},
	};
	CK_ECDH1_DERIVE_PARAMS ep = {CKD_NULL, 0, NULL, sizeof(point), point};
	CK_MECHANISM m1 = {CKM_ECDH1_DERIVE, &ep, sizeof(ep)};
	CK_OBJECT_HANDLE z = CK_INVALID_HANDLE, kek = CK_INVALID_HANDLE;
	CK_RV rv = ctx->f->C_DeriveKey(s->h, &m1, eph->priv, z_t, 8, &z);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_DeriveKey(CKM_ECDH1_DERIVE)",
				  rv == CKR_MECHANISM_PARAM_INVALID ? PSC_E_HSM_BAD_PUBKEY
								    : PSC_E_HSM_P11,
				  "ECDH with the member's P-256 key failed", err);
	CK_KEY_DERIVATION_STRING_DATA sd = {context, sizeof(context)};
	CK_MECHANISM m2 = {CKM_AES_ECB_ENCRYPT_DATA, &sd, sizeof(sd)};
	rv = ctx->f->C_DeriveKey(s->h, &m2, z, k_t, 8, &kek);
	(void)ctx->f->C_DestroyObject(s->h, z);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA)", PSC_E_HSM_P11,
				  "AES-PRF KEK derivation failed", err);
	CK_MECHANISM m3 = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ULONG wl = (CK_ULONG)cap;
	rv = ctx->f->C_WrapKey(s->h, &m3, kek, secret->handle, wrapped, &wl);
	(void)ctx->f->C_DestroyObject(s->h, kek);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)", PSC_E_HSM_P11,
				  "cannot wrap the epoch secret under the member KEK", err);
	if (wl != PROTO_KEYWRAP_KWP_LEN)
		return psc_err_set(err, PSC_E_HSM_P11,
				   "C_WrapKey(CKM_AES_KEY_WRAP_PAD) gave %lu bytes, expected %d",
				   (unsigned long)wl, PROTO_KEYWRAP_KWP_LEN);
	*alg_out = PSC_WRAP_ECDH_P256_AESPRF_KWP;
	*wlen = wl;
	return PSC_OK;
}

psc_rc hsm_wrap_for_member(hsm_session *s, const hsm_key *secret, const hsm_eph *eph,
			   EVP_PKEY *member_public, const uint8_t psc_id[PSC_PSC_ID_LEN],
			   uint64_t epoch, const uint8_t node_id[PSC_NODE_ID_LEN], uint8_t *alg_out,
			   uint8_t *wrapped, size_t wrapped_cap, size_t *wrapped_len, psc_err *err)
{
	if (!member_public || !psc_id || !node_id || !alg_out || !wrapped || !wrapped_len)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_wrap_for_member: missing argument");
	*wrapped_len = 0;
	*alg_out = 0;
	psc_rc rc = hsm_session_enter(s, err);
	if (rc == PSC_OK)
		rc = hsm_key_check(s, secret, "epoch secret", err);
	if (rc != PSC_OK)
		return rc;
	if (EVP_PKEY_is_a(member_public, "RSA"))
		return wrap_rsa(s, secret, member_public, alg_out, wrapped, wrapped_cap,
				wrapped_len, err);
	if (EVP_PKEY_is_a(member_public, "EC"))
		return wrap_ec(s, secret, eph, member_public, psc_id, epoch, node_id, alg_out,
			       wrapped, wrapped_cap, wrapped_len, err);
	const char *tn = EVP_PKEY_get0_type_name(member_public);
	return psc_err_set(err, PSC_E_HSM_UNSUPPORTED_KEY,
			   "member key type %s is not supported for key wrapping: psc-kms "
			   "wraps only to RSA (2048..8192 bits) and EC P-256 keys",
			   tn ? tn : "(unknown)");
}
