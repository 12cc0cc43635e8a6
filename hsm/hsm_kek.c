/* Master KEK rotation on the token; see hsm_kek.h and docs/hsm.md. */
#include "hsm_kek.h"

#include <stdio.h>
#include <string.h>

#include "hsm_ckr.h"
#include "hsm_int.h"

static void hex_id(const uint8_t id[HSM_KEK_ID_LEN], char out[2 * HSM_KEK_ID_LEN + 1])
{
	for (int i = 0; i < HSM_KEK_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static CK_RV find_label(hsm_ctx *ctx, const char *label, CK_OBJECT_HANDLE *hs, CK_ULONG max,
			CK_ULONG *n)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	};
	return hsm_find(ctx, ctx->ctl, t, 2, hs, max, n);
}

static CK_RV find_id(hsm_ctx *ctx, const uint8_t id[HSM_KEK_ID_LEN], CK_OBJECT_HANDLE *h,
		     CK_ULONG *n)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_ID, (void *)id, HSM_KEK_ID_LEN},
	};
	return hsm_find(ctx, ctx->ctl, t, 3, h, 1, n);
}

/* The key policy of a master KEK (as hsm_kek_find_locked checks it at open). */
static psc_rc kek_check(hsm_ctx *ctx, CK_OBJECT_HANDLE h, const char *what,
			uint8_t id_out[HSM_KEK_ID_LEN], psc_err *err)
{
	CK_KEY_TYPE kt = 0;
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, wrap = CK_FALSE, unwrap = CK_FALSE;
	CK_ULONG vlen = 0;
	uint8_t id[HSM_KEK_ID_LEN + 1];
	CK_ATTRIBUTE a[] = {
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_SENSITIVE, &sens, sizeof(sens)},
	    {CKA_EXTRACTABLE, &extr, sizeof(extr)},
	    {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
	    {CKA_ID, id, sizeof(id)},
	    {CKA_WRAP, &wrap, sizeof(wrap)},
	    {CKA_UNWRAP, &unwrap, sizeof(unwrap)},
	};
	CK_RV rv = ctx->f->C_GetAttributeValue(ctx->ctl, h, a, 7);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GetAttributeValue", PSC_E_HSM_P11,
				    "cannot read a master KEK's attributes", err);
	if (kt != CKK_AES || vlen != 32 || sens != CK_TRUE || extr != CK_FALSE || wrap != CK_TRUE ||
	    unwrap != CK_TRUE || a[4].ulValueLen != HSM_KEK_ID_LEN)
		return psc_err_set(err, PSC_E_HSM_KEY_POLICY,
				   "%s on token '%s' breaks the master KEK policy (AES-256, "
				   "CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, wrap and unwrap, "
				   "16-byte CKA_ID)",
				   what, ctx->label);
	memcpy(id_out, id, HSM_KEK_ID_LEN);
	return PSC_OK;
}

/* Publishes h / id as the current KEK; ctx->lock held. */
static void set_current_locked(hsm_ctx *ctx, CK_OBJECT_HANDLE h, const uint8_t id[HSM_KEK_ID_LEN])
{
	pthread_mutex_lock(&ctx->kek_lock);
	memcpy(ctx->kek_id, id, HSM_KEK_ID_LEN);
	atomic_store(&ctx->kek, h);
	atomic_store(&ctx->have_kek, true);
	ctx->kek_pinned = true;
	pthread_mutex_unlock(&ctx->kek_lock);
}

psc_rc hsm_kek_pin_find_locked(hsm_ctx *ctx, psc_err *err)
{
	uint8_t want[HSM_KEK_ID_LEN], got[HSM_KEK_ID_LEN];
	pthread_mutex_lock(&ctx->kek_lock);
	memcpy(want, ctx->kek_id, HSM_KEK_ID_LEN);
	pthread_mutex_unlock(&ctx->kek_lock);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	CK_RV rv = find_id(ctx, want, &h, &n);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				    "cannot search the token for the master KEK", err);
	if (n == 0) {
		char hex[2 * HSM_KEK_ID_LEN + 1];
		hex_id(want, hex);
		atomic_store(&ctx->have_kek, false);
		return psc_err_set(err, PSC_E_HSM_NOT_READY,
				   "token '%s' no longer holds the current master KEK (id %s)",
				   ctx->label, hex);
	}
	psc_rc rc = kek_check(ctx, h, "the current master KEK", got, err);
	if (rc == PSC_OK)
		set_current_locked(ctx, h, got);
	return rc;
}

static psc_rc need_healthy(hsm_ctx *ctx, psc_err *err)
{
	if (!atomic_load(&ctx->healthy))
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "HSM token '%s' is down: the KEK rotation continues once it is "
				   "back",
				   ctx->label);
	return PSC_OK;
}

psc_rc hsm_kek_next_find(hsm_ctx *ctx, bool *found, uint8_t id[HSM_KEK_ID_LEN], psc_err *err)
{
	if (!ctx || !found || !id)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_kek_next_find: missing argument");
	*found = false;
	psc_rc rc = need_healthy(ctx, err);
	if (rc != PSC_OK)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	CK_OBJECT_HANDLE hs[2];
	CK_ULONG n = 0;
	CK_RV rv = find_label(ctx, HSM_LABEL_KEK_NEXT, hs, 2, &n);
	if (rv != CKR_OK)
		rc = hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				  "cannot search the token for a next master KEK", err);
	else if (n > 1)
		rc = psc_err_set(err, PSC_E_HSM_KEY_POLICY,
				 "token '%s' holds several keys labelled '%s': destroy the ones "
				 "no blob uses (see docs/operator.md, KEK rotation)",
				 ctx->label, HSM_LABEL_KEK_NEXT);
	else if (n == 1 && (rc = kek_check(ctx, hs[0], "the next master KEK", id, err)) == PSC_OK)
		*found = true;
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

psc_rc hsm_kek_next_create(hsm_ctx *ctx, uint8_t id[HSM_KEK_ID_LEN], bool *created, psc_err *err)
{
	if (!ctx || !id || !created)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_kek_next_create: missing argument");
	*created = false;
	bool found = false;
	psc_rc rc = hsm_kek_next_find(ctx, &found, id, err);
	if (rc != PSC_OK || found)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	rc = hsm_kek_generate(ctx, HSM_LABEL_KEK_NEXT, id, &h, err);
	pthread_mutex_unlock(&ctx->lock);
	if (rc != PSC_OK)
		return rc;
	*created = true;
	return PSC_OK;
}

psc_rc hsm_kek_use(hsm_ctx *ctx, const uint8_t id[HSM_KEK_ID_LEN], psc_err *err)
{
	if (!ctx || !id)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_kek_use: missing argument");
	psc_rc rc = need_healthy(ctx, err);
	if (rc != PSC_OK)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	uint8_t got[HSM_KEK_ID_LEN];
	CK_RV rv = find_id(ctx, id, &h, &n);
	if (rv != CKR_OK) {
		rc = hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				  "cannot search the token for a master KEK", err);
	} else if (n == 0) {
		char hex[2 * HSM_KEK_ID_LEN + 1];
		hex_id(id, hex);
		rc = psc_err_set(err, PSC_E_HSM_WRONG_KEK, "token '%s' holds no KEK with id %s",
				 ctx->label, hex);
	} else if ((rc = kek_check(ctx, h, "the new master KEK", got, err)) == PSC_OK) {
		set_current_locked(ctx, h, got);
	}
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

psc_rc hsm_kek_present(hsm_ctx *ctx, const uint8_t id[HSM_KEK_ID_LEN], bool *present, psc_err *err)
{
	if (!ctx || !id || !present)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_kek_present: missing argument");
	*present = false;
	psc_rc rc = need_healthy(ctx, err);
	if (rc != PSC_OK)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	CK_OBJECT_HANDLE h;
	CK_ULONG n = 0;
	CK_RV rv = find_id(ctx, id, &h, &n);
	pthread_mutex_unlock(&ctx->lock);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				    "cannot search the token for a master KEK", err);
	*present = n > 0;
	return PSC_OK;
}

psc_rc hsm_epoch_rewrap(hsm_session *s, const uint8_t *blob, size_t blob_len,
			uint8_t out[HSM_EPOCH_BLOB_LEN], psc_err *err)
{
	if (!s || !blob || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_epoch_rewrap: missing argument");
	hsm_key key;
	psc_rc rc = hsm_epoch_load(s, blob, blob_len, &key, err);
	if (rc != PSC_OK)
		return rc;
	hsm_ctx *ctx = s->ctx;
	uint8_t id[HSM_KEK_ID_LEN];
	pthread_mutex_lock(&ctx->kek_lock);
	CK_OBJECT_HANDLE kek = atomic_load(&ctx->kek);
	memcpy(id, ctx->kek_id, HSM_KEK_ID_LEN);
	pthread_mutex_unlock(&ctx->kek_lock);
	CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_ULONG wl = HSM_EPOCH_BLOB_LEN - 1 - HSM_KEK_ID_LEN;
	CK_RV rv = ctx->f->C_WrapKey(s->h, &wrap, kek, key.handle, out + 1 + HSM_KEK_ID_LEN, &wl);
	psc_err ignore;
	(void)!hsm_key_destroy(s, &key, &ignore);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)", PSC_E_HSM_P11,
				  "cannot re-wrap the epoch secret under the new master KEK", err);
	if (wl != HSM_EPOCH_BLOB_LEN - 1 - HSM_KEK_ID_LEN)
		return psc_err_set(err, PSC_E_HSM_P11,
				   "C_WrapKey(CKM_AES_KEY_WRAP_PAD) gave %lu bytes, expected 40",
				   (unsigned long)wl);
	out[0] = HSM_EPOCH_BLOB_VERSION;
	memcpy(out + 1, id, HSM_KEK_ID_LEN);
	return PSC_OK;
}

psc_rc hsm_kek_retire_old(hsm_ctx *ctx, unsigned *destroyed, psc_err *err)
{
	if (!ctx)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_kek_retire_old: missing argument");
	if (destroyed)
		*destroyed = 0;
	psc_rc rc = need_healthy(ctx, err);
	if (rc != PSC_OK)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	uint8_t cur[HSM_KEK_ID_LEN];
	pthread_mutex_lock(&ctx->kek_lock);
	memcpy(cur, ctx->kek_id, HSM_KEK_ID_LEN);
	bool have = atomic_load(&ctx->have_kek);
	pthread_mutex_unlock(&ctx->kek_lock);
	CK_OBJECT_HANDLE hs[16];
	CK_ULONG n = 0;
	CK_RV rv = have ? find_label(ctx, HSM_LABEL_KEK, hs, 16, &n) : CKR_OK;
	if (!have)
		rc = psc_err_set(err, PSC_E_HSM_NOT_READY, "token '%s' has no current KEK",
				 ctx->label);
	else if (rv != CKR_OK)
		rc = hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				  "cannot search the token for the old master KEK", err);
	/* First destroy the old key(s), then relabel the new one: a crash between
	 * the two leaves only HSM_LABEL_KEK_NEXT, which hsm_ctx_new adopts. */
	for (CK_ULONG i = 0; rc == PSC_OK && i < n; i++) {
		uint8_t id[HSM_KEK_ID_LEN + 1];
		CK_ATTRIBUTE a = {CKA_ID, id, sizeof(id)};
		rv = ctx->f->C_GetAttributeValue(ctx->ctl, hs[i], &a, 1);
		if (rv != CKR_OK) {
			rc = hsm_p11_fail(ctx, rv, "C_GetAttributeValue(CKA_ID)", PSC_E_HSM_P11,
					  NULL, err);
			break;
		}
		if (a.ulValueLen == HSM_KEK_ID_LEN && memcmp(id, cur, HSM_KEK_ID_LEN) == 0)
			continue;
		rv = ctx->f->C_DestroyObject(ctx->ctl, hs[i]);
		if (rv != CKR_OK) {
			rc = hsm_p11_fail(ctx, rv, "C_DestroyObject(old master KEK)", PSC_E_HSM_P11,
					  "the token refuses to destroy the old master KEK", err);
			break;
		}
		if (destroyed)
			(*destroyed)++;
	}
	if (rc == PSC_OK) {
		CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
		rv = find_id(ctx, cur, &h, &n);
		if (rv == CKR_OK && n == 1) {
			CK_ATTRIBUTE l = {CKA_LABEL, (void *)HSM_LABEL_KEK, strlen(HSM_LABEL_KEK)};
			rv = ctx->f->C_SetAttributeValue(ctx->ctl, h, &l, 1);
		}
		if (rv != CKR_OK)
			rc = hsm_p11_fail(ctx, rv, "C_SetAttributeValue(CKA_LABEL)", PSC_E_HSM_P11,
					  "cannot label the new master KEK as current", err);
	}
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}
