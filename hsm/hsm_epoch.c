/* Epoch secrets: generate, KEK-wrap into blobs, unwrap, destroy; see hsm_epoch.h. */
#include "hsm_int.h"

#include <stdio.h>
#include <string.h>

#include "hsm_ckr.h"
#include "psc_codes.h"

static psc_rc need_kek(hsm_ctx *ctx, psc_err *err)
{
	if (!atomic_load(&ctx->have_kek))
		return psc_err_set(err, PSC_E_HSM_NOT_READY,
				   "token '%s' holds no master KEK (label '%s'): run psc-kmsctl "
				   "init",
				   ctx->label, HSM_LABEL_KEK);
	return PSC_OK;
}

psc_rc hsm_epoch_generate(hsm_session *s, hsm_key *key_out, uint8_t blob_out[HSM_EPOCH_BLOB_LEN],
			  psc_err *err)
{
	if (!key_out || !blob_out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_epoch_generate: missing argument");
	memset(key_out, 0, sizeof(*key_out));
	psc_rc rc = hsm_session_enter(s, err);
	if (rc == PSC_OK)
		rc = need_kek(s->ctx, err);
	if (rc != PSC_OK)
		return rc;
	hsm_ctx *ctx = s->ctx;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_ULONG len = PSC_EPOCH_SECRET_LEN;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	/* Extractable because member wraps need C_WrapKey on it; sensitive so its
	 * value never leaves the token unwrapped; a session object so nothing but
	 * the KEK-wrapped blob outlives the process. */
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},	{CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &f, sizeof(f)},
	    {CKA_PRIVATE, &t, sizeof(t)},	{CKA_SENSITIVE, &t, sizeof(t)},
	    {CKA_EXTRACTABLE, &t, sizeof(t)},	{CKA_ENCRYPT, &f, sizeof(f)},
	    {CKA_DECRYPT, &f, sizeof(f)},	{CKA_SIGN, &f, sizeof(f)},
	    {CKA_VERIFY, &f, sizeof(f)},	{CKA_WRAP, &f, sizeof(f)},
	    {CKA_UNWRAP, &f, sizeof(f)},	{CKA_DERIVE, &f, sizeof(f)},
	};
	CK_MECHANISM mech = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = ctx->f->C_GenerateKey(s->h, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN)", PSC_E_HSM_P11,
				  "the token cannot make the epoch secret", err);
	CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ULONG wl = HSM_EPOCH_BLOB_LEN - 1 - HSM_KEK_ID_LEN;
	/* The KEK handle and the id the blob is tagged with must belong together
	 * even while a KEK rotation switches them (hsm_kek.c). */
	uint8_t kek_id[HSM_KEK_ID_LEN];
	pthread_mutex_lock(&ctx->kek_lock);
	CK_OBJECT_HANDLE kek = atomic_load(&ctx->kek);
	memcpy(kek_id, ctx->kek_id, HSM_KEK_ID_LEN);
	pthread_mutex_unlock(&ctx->kek_lock);
	rv = ctx->f->C_WrapKey(s->h, &wrap, kek, h,
			       blob_out + 1 + HSM_KEK_ID_LEN, &wl);
	if (rv != CKR_OK || wl != HSM_EPOCH_BLOB_LEN - 1 - HSM_KEK_ID_LEN) {
		(void)ctx->f->C_DestroyObject(s->h, h);
		if (rv == CKR_OK)
			return psc_err_set(err, PSC_E_HSM_P11,
					   "C_WrapKey(CKM_AES_KEY_WRAP_PAD) gave %lu bytes, "
					   "expected 40: the token's RFC 5649 wrap is broken",
					   (unsigned long)wl);
		return hsm_s_fail(s, rv, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)", PSC_E_HSM_P11,
				  "cannot wrap the epoch secret under the master KEK", err);
	}
	blob_out[0] = HSM_EPOCH_BLOB_VERSION;
	memcpy(blob_out + 1, kek_id, HSM_KEK_ID_LEN);
	key_out->handle = h;
	key_out->gen = s->gen;
	key_out->session = s->idx;
	return PSC_OK;
}

psc_rc hsm_epoch_load(hsm_session *s, const uint8_t *blob, size_t blob_len, hsm_key *key_out,
		      psc_err *err)
{
	if (!key_out || !blob)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_epoch_load: missing argument");
	memset(key_out, 0, sizeof(*key_out));
	if (blob_len != HSM_EPOCH_BLOB_LEN)
		return psc_err_set(err, PSC_E_HSM_BAD_BLOB,
				   "epoch-secret blob is %zu bytes, version 1 blobs are %d: the "
				   "stored record is truncated or corrupt",
				   blob_len, HSM_EPOCH_BLOB_LEN);
	if (blob[0] != HSM_EPOCH_BLOB_VERSION)
		return psc_err_set(err, PSC_E_HSM_BAD_BLOB,
				   "epoch-secret blob has version %u, this build reads version "
				   "%u: corrupt record or a newer psc-kms wrote it",
				   blob[0], HSM_EPOCH_BLOB_VERSION);
	psc_rc rc = hsm_session_enter(s, err);
	if (rc == PSC_OK)
		rc = need_kek(s->ctx, err);
	if (rc != PSC_OK)
		return rc;
	hsm_ctx *ctx = s->ctx;
	pthread_mutex_lock(&ctx->kek_lock);
	CK_OBJECT_HANDLE kek = atomic_load(&ctx->kek);
	bool current = memcmp(blob + 1, ctx->kek_id, HSM_KEK_ID_LEN) == 0;
	pthread_mutex_unlock(&ctx->kek_lock);
	if (!current) {
		/* Not the current KEK: a retired one (rotation) may still be on the token. */
		CK_OBJECT_CLASS kc = CKO_SECRET_KEY;
		CK_BBOOL t = CK_TRUE;
		CK_ATTRIBUTE ft[] = {
		    {CKA_CLASS, &kc, sizeof(kc)},
		    {CKA_ID, (void *)(blob + 1), HSM_KEK_ID_LEN},
		    {CKA_UNWRAP, &t, sizeof(t)},
		};
		CK_ULONG n = 0;
		CK_RV frv = hsm_find(ctx, s->h, ft, 3, &kek, 1, &n);
		if (frv != CKR_OK)
			return hsm_s_fail(s, frv, "C_FindObjects", PSC_E_HSM_P11,
					  "cannot look up the blob's KEK", err);
		if (n == 0) {
			char hex[2 * HSM_KEK_ID_LEN + 1];
			for (int i = 0; i < HSM_KEK_ID_LEN; i++)
				snprintf(hex + 2 * i, 3, "%02x", blob[1 + i]);
			return psc_err_set(err, PSC_E_HSM_WRONG_KEK,
					   "epoch-secret blob was wrapped under KEK id %s, which "
					   "token '%s' does not hold: restore that KEK or the "
					   "matching state backup",
					   hex, ctx->label);
		}
	}
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &f, sizeof(f)},	    {CKA_PRIVATE, &t, sizeof(t)},
	    {CKA_SENSITIVE, &t, sizeof(t)}, {CKA_EXTRACTABLE, &t, sizeof(t)},
	    {CKA_ENCRYPT, &f, sizeof(f)},   {CKA_DECRYPT, &f, sizeof(f)},
	    {CKA_SIGN, &f, sizeof(f)},	    {CKA_VERIFY, &f, sizeof(f)},
	    {CKA_WRAP, &f, sizeof(f)},	    {CKA_UNWRAP, &f, sizeof(f)},
	    {CKA_DERIVE, &f, sizeof(f)},
	};
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = ctx->f->C_UnwrapKey(s->h, &mech, kek, (CK_BYTE_PTR)(blob + 1 + HSM_KEK_ID_LEN),
				       HSM_EPOCH_BLOB_LEN - 1 - HSM_KEK_ID_LEN, tmpl,
				       sizeof(tmpl) / sizeof(tmpl[0]), &h);
	/* SoftHSM 2.6 answers a failed RFC 5649 integrity check with
	 * CKR_GENERAL_ERROR; other tokens use the WRAPPED_KEY/ENCRYPTED_DATA codes.
	 * A call cut short by a fault can give the same codes, so the blob is
	 * only called bad if the session is still alive. */
	if ((rv == CKR_WRAPPED_KEY_INVALID || rv == CKR_WRAPPED_KEY_LEN_RANGE ||
	     rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_DATA_INVALID ||
	     rv == CKR_ENCRYPTED_DATA_LEN_RANGE || rv == CKR_GENERAL_ERROR) &&
	    hsm_s_alive(s))
		return psc_err_set(err, PSC_E_HSM_UNWRAP,
				   "C_UnwrapKey(CKM_AES_KEY_WRAP_PAD) on token '%s' rejected the "
				   "epoch-secret blob: %s: the blob is corrupt or was made by "
				   "another token with the same KEK id; restore it from backup",
				   ctx->label, hsm_ckr_name(rv));
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_UnwrapKey(CKM_AES_KEY_WRAP_PAD)", PSC_E_HSM_P11,
				  "cannot unwrap the epoch secret", err);
	/* No CKA_VALUE_LEN check here: SoftHSM reports 0 for unwrapped generic
	 * secrets and refuses the attribute in the unwrap template. A 40-byte KWP
	 * blob that passes RFC 5649's integrity check holds 25..32 bytes, and only
	 * a holder of the KEK can make one that is not 32 (docs/hsm.md). */
	key_out->handle = h;
	key_out->gen = s->gen;
	key_out->session = s->idx;
	return PSC_OK;
}

psc_rc hsm_key_destroy(hsm_session *s, hsm_key *key, psc_err *err)
{
	if (!key || key->handle == CK_INVALID_HANDLE)
		return PSC_OK;
	psc_rc rc = hsm_session_enter(s, err);
	if (rc != PSC_OK)
		return rc;
	if (key->gen == atomic_load(&s->ctx->gen)) {
		CK_RV rv = s->ctx->f->C_DestroyObject(s->h, key->handle);
		if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
			return hsm_s_fail(s, rv, "C_DestroyObject", PSC_E_HSM_P11, NULL, err);
	}
	memset(key, 0, sizeof(*key));
	return PSC_OK;
}
