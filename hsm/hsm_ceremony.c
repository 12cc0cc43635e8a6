/* Token ceremony behind `psc-kmsctl init`; see hsm_ceremony.h and docs/hsm.md. */
#include "hsm_ceremony.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hsm_ckr.h"
#include "hsm_int.h"

static const uint8_t p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

static const char *const our_labels[] = {HSM_LABEL_KEK, HSM_LABEL_IDENTITY, HSM_LABEL_AUDIT};

/* Deletes (overwrite) or reports the psc-kms objects already on the token. */
static psc_rc clear_existing(hsm_ctx *ctx, bool overwrite, psc_err *err)
{
	for (size_t i = 0; i < sizeof(our_labels) / sizeof(our_labels[0]); i++) {
		CK_ATTRIBUTE t = {CKA_LABEL, (void *)our_labels[i], strlen(our_labels[i])};
		CK_OBJECT_HANDLE hs[16];
		CK_ULONG n = 0;
		CK_RV rv = hsm_find(ctx, ctx->ctl, &t, 1, hs, 16, &n);
		if (rv != CKR_OK)
			return hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11, NULL, err);
		if (n && !overwrite)
			return psc_err_set(err, PSC_E_HSM_KEY_EXISTS,
					   "token '%s' already holds '%s': refusing to overwrite "
					   "psc-kms keys (epoch blobs wrapped under an old KEK "
					   "would become unreadable); pass --force only if this "
					   "token's state is to be discarded",
					   ctx->label, our_labels[i]);
		for (CK_ULONG j = 0; j < n; j++) {
			rv = ctx->f->C_DestroyObject(ctx->ctl, hs[j]);
			if (rv != CKR_OK)
				return hsm_p11_fail(ctx, rv, "C_DestroyObject", PSC_E_HSM_P11,
						    "cannot remove an old psc-kms key", err);
		}
	}
	return PSC_OK;
}

/* The master KEK: one template for the ceremony and for rotation (hsm_kek.c). */
psc_rc hsm_kek_generate(hsm_ctx *ctx, const char *label, uint8_t id[HSM_KEK_ID_LEN],
			CK_OBJECT_HANDLE *h, psc_err *err)
{
	CK_RV rv = ctx->f->C_GenerateRandom(ctx->ctl, id, HSM_KEK_ID_LEN);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GenerateRandom", PSC_E_HSM_P11, NULL, err);
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	/* Wrap/unwrap only; sensitive and never extractable (DESIGN.md §3). */
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_VALUE_LEN, &len, sizeof(len)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_WRAP, &t, sizeof(t)},
	    {CKA_UNWRAP, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},
	    {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_SIGN, &f, sizeof(f)},
	    {CKA_VERIFY, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, id, HSM_KEK_ID_LEN},
	};
	CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
	rv = ctx->f->C_GenerateKey(ctx->ctl, &m, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), h);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GenerateKey(CKM_AES_KEY_GEN, master KEK)",
				    PSC_E_HSM_P11, "the token cannot make a master KEK", err);
	return PSC_OK;
}

static psc_rc make_pair(hsm_ctx *ctx, const char *label, uint8_t id, unsigned rsa_bits,
			CK_OBJECT_HANDLE made[2], psc_err *err)
{
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG bits = rsa_bits;
	static const uint8_t e65537[] = {0x01, 0x00, 0x01};
	CK_ATTRIBUTE pub_ec[] = {
	    {CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_VERIFY, &t, sizeof(t)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, &id, 1},
	};
	CK_ATTRIBUTE pub_rsa[] = {
	    {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	    {CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537)},
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_VERIFY, &t, sizeof(t)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, &id, 1},
	};
	/* Signing only: never extractable, never used to decrypt or derive. */
	CK_ATTRIBUTE priv[] = {
	    {CKA_TOKEN, &t, sizeof(t)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &f, sizeof(f)},
	    {CKA_SIGN, &t, sizeof(t)},
	    {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	    {CKA_UNWRAP, &f, sizeof(f)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, &id, 1},
	};
	CK_MECHANISM m = {rsa_bits ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_RV rv = ctx->f->C_GenerateKeyPair(ctx->ctl, &m, rsa_bits ? pub_rsa : pub_ec,
					     rsa_bits ? 6 : 5, priv, 10, &made[0], &made[1]);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv,
				    rsa_bits ? "C_GenerateKeyPair(CKM_RSA_PKCS_KEY_PAIR_GEN)"
					     : "C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN, P-256)",
				    PSC_E_HSM_P11, "the token cannot make the key pair", err);
	return PSC_OK;
}

/* "/O=PSC/CN=kms1" -> X509_NAME; values may not contain '/'. */
static X509_NAME *parse_subject(const char *s)
{
	if (!s || s[0] != '/' || strlen(s) > 1024)
		return NULL;
	X509_NAME *name = X509_NAME_new();
	char *copy = strdup(s + 1);
	bool ok = name && copy;
	char *save = NULL;
	int entries = 0;
	for (char *tok = ok ? strtok_r(copy, "/", &save) : NULL; ok && tok;
	     tok = strtok_r(NULL, "/", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok || !eq[1]) {
			ok = false;
			break;
		}
		*eq = '\0';
		ok = X509_NAME_add_entry_by_txt(name, tok, MBSTRING_UTF8,
						(const unsigned char *)(eq + 1), -1, -1, 0) == 1;
		entries++;
	}
	free(copy);
	if (!ok || entries == 0) {
		X509_NAME_free(name);
		ERR_clear_error();
		return NULL;
	}
	return name;
}

static psc_rc make_csr(hsm_ctx *ctx, const hsm_ceremony_opts *o, char **pem_out, psc_err *err)
{
	EVP_PKEY *key = NULL;
	psc_rc rc = hsm_identity_key(ctx, &key, err);
	if (rc != PSC_OK)
		return rc;
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = parse_subject(o->subject);
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
	STACK_OF(X509_EXTENSION) *exts = NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	rc = PSC_E_CRYPTO;
	if (!name) {
		rc = psc_err_set(err, PSC_E_INVALID_ARG,
				 "CSR subject '%s' is not of the form /O=org/CN=name",
				 o->subject ? o->subject : "(none)");
		goto out;
	}
	if (!req || !gens || !gn || !uri || !bio ||
	    ASN1_STRING_set(uri, o->uri_san, (int)strlen(o->uri_san)) != 1)
		goto out;
	GENERAL_NAME_set0_value(gn, GEN_URI, uri);
	uri = NULL;
	if (sk_GENERAL_NAME_push(gens, gn) <= 0)
		goto out;
	gn = NULL;
	if (X509_REQ_set_version(req, 0) != 1 || X509_REQ_set_subject_name(req, name) != 1 ||
	    X509_REQ_set_pubkey(req, key) != 1 ||
	    X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1 ||
	    X509_REQ_add_extensions(req, exts) != 1)
		goto out;
	/* Signed inside the HSM through libp11; then checked with the public key. */
	if (X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
		rc = psc_err_set(err, PSC_E_HSM_P11,
				 "signing the CSR with the HSM identity key failed (libp11)");
		goto out;
	}
	if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
		rc = psc_err_set(err, PSC_E_CRYPTO,
				 "the CSR signed by the HSM does not verify with its own "
				 "public key");
		goto out;
	}
	if (PEM_write_bio_X509_REQ(bio, req) != 1)
		goto out;
	char *data = NULL;
	long n = BIO_get_mem_data(bio, &data);
	char *pem = n > 0 ? malloc((size_t)n + 1) : NULL;
	if (!pem) {
		rc = psc_err_set(err, PSC_E_NOMEM, "CSR: out of memory");
		goto out;
	}
	memcpy(pem, data, (size_t)n);
	pem[n] = '\0';
	*pem_out = pem;
	rc = PSC_OK;
out:
	if (rc == PSC_E_CRYPTO && (!err || err->rc != PSC_E_CRYPTO))
		psc_err_set(err, rc, "building the CSR failed in OpenSSL");
	ERR_clear_error();
	BIO_free(bio);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	ASN1_IA5STRING_free(uri);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return rc;
}

psc_rc hsm_ceremony(hsm_ctx *ctx, const hsm_ceremony_opts *o, uint8_t kek_id_out[HSM_KEK_ID_LEN],
		    char **csr_pem_out, psc_err *err)
{
	if (!ctx || !o || !kek_id_out || !csr_pem_out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_ceremony: missing argument");
	*csr_pem_out = NULL;
	if (!o->uri_san || strncmp(o->uri_san, "reload://", 9) != 0 || strlen(o->uri_san) > 512)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "CSR subjectAltName must be a reload://<node-id>@<overlay>/ "
				   "URI (got '%s')",
				   o->uri_san ? o->uri_san : "(none)");
	X509_NAME *probe = parse_subject(o->subject);
	if (!probe)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "CSR subject '%s' is not of the form /O=org/CN=name",
				   o->subject ? o->subject : "(none)");
	X509_NAME_free(probe);
	if (o->rsa_bits && (o->rsa_bits < 2048 || o->rsa_bits > 4096))
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "identity RSA key size %u: use 2048..4096 (or 0 for P-256)",
				   o->rsa_bits);
	if (!atomic_load(&ctx->healthy))
		return psc_err_set(err, PSC_E_HSM_DOWN, "HSM token '%s' is down", ctx->label);

	pthread_mutex_lock(&ctx->lock);
	uint8_t id[HSM_KEK_ID_LEN];
	/* All or nothing: a half-made set would block the next run (it refuses to
	 * overwrite), so whatever this run made is destroyed again on failure. */
	CK_OBJECT_HANDLE made[5] = {CK_INVALID_HANDLE, CK_INVALID_HANDLE, CK_INVALID_HANDLE,
				    CK_INVALID_HANDLE, CK_INVALID_HANDLE};
	psc_rc rc = clear_existing(ctx, o->overwrite, err);
	if (rc == PSC_OK)
		rc = hsm_kek_generate(ctx, HSM_LABEL_KEK, id, &made[0], err);
	if (rc == PSC_OK)
		rc =
		    make_pair(ctx, HSM_LABEL_IDENTITY, HSM_ID_IDENTITY, o->rsa_bits, &made[1], err);
	if (rc == PSC_OK)
		rc = make_pair(ctx, HSM_LABEL_AUDIT, HSM_ID_AUDIT, 0, &made[3], err);
	if (rc != PSC_OK)
		for (int i = 0; i < 5; i++)
			if (made[i] != CK_INVALID_HANDLE)
				(void)ctx->f->C_DestroyObject(ctx->ctl, made[i]);
	hsm_keys_forget_locked(ctx);
	if (rc == PSC_OK)
		rc = hsm_kek_find_locked(ctx, true, err);
	pthread_mutex_unlock(&ctx->lock);
	if (rc != PSC_OK)
		return rc;
	memcpy(kek_id_out, id, HSM_KEK_ID_LEN);
	return make_csr(ctx, o, csr_pem_out, err);
}
