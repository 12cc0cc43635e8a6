/* Module loading, login, sessions, health and recovery; see hsm_ctx.h. */
#include "hsm_int.h"
#include "hsm_kek.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "hsm_ckr.h"

#define HSM_RETRY_MS_DEFAULT 500

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool hsm_rv_transient(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_TOKEN_NOT_RECOGNIZED:
		return true;
	default:
		return false;
	}
}

static void mark_down(hsm_ctx *ctx)
{
	/* The first recovery try is allowed at once: a lost session usually comes
	 * back on the next open. Only a failed recovery starts the fail-fast wait. */
	if (atomic_exchange(&ctx->healthy, false))
		atomic_store(&ctx->next_try_ms, now_ms());
}

psc_rc hsm_p11_fail(hsm_ctx *ctx, CK_RV rv, const char *fn, psc_rc rc, const char *hint,
		    psc_err *err)
{
	if (hsm_rv_transient(rv)) {
		mark_down(ctx);
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "%s failed on token '%s' (module %s): %s (0x%lx): the HSM "
				   "is unavailable; psc-kms retries by itself, check the "
				   "device and its connection",
				   fn, ctx->label, ctx->module, hsm_ckr_name(rv),
				   (unsigned long)rv);
	}
	return psc_err_set(err, rc, "%s failed on token '%s' (module %s): %s (0x%lx): %s", fn,
			   ctx->label, ctx->module, hsm_ckr_name(rv), (unsigned long)rv,
			   hint ? hint : "see the token's documentation");
}

bool hsm_s_alive(hsm_session *s)
{
	hsm_ctx *ctx = s->ctx;
	if (!s->open || s->gen != atomic_load(&ctx->gen))
		return false;
	CK_SESSION_INFO si;
	CK_RV rv = ctx->f->C_GetSessionInfo(s->h, &si);
	if (hsm_rv_transient(rv))
		mark_down(ctx);
	return rv == CKR_OK;
}

psc_rc hsm_s_fail(hsm_session *s, CK_RV rv, const char *fn, psc_rc rc, const char *hint,
		  psc_err *err)
{
	hsm_ctx *ctx = s->ctx;
	/* This session predates the last recovery: the fault was already seen and
	 * handled; marking the HSM down again would reset every fresh session. */
	if (s->gen != atomic_load(&ctx->gen))
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "%s failed on token '%s': %s (0x%lx) while the HSM "
				   "sessions were being reset after a fault: retry",
				   fn, ctx->label, hsm_ckr_name(rv), (unsigned long)rv);
	if (!hsm_rv_transient(rv)) {
		CK_SESSION_INFO si;
		CK_RV srv = ctx->f->C_GetSessionInfo(s->h, &si);
		if (hsm_rv_transient(srv)) {
			mark_down(ctx);
			return psc_err_set(err, PSC_E_HSM_DOWN,
					   "%s failed on token '%s' (module %s): %s (0x%lx), and "
					   "the session is gone (%s): the HSM is unavailable; "
					   "psc-kms retries by itself, check the device",
					   fn, ctx->label, ctx->module, hsm_ckr_name(rv),
					   (unsigned long)rv, hsm_ckr_name(srv));
		}
	}
	return hsm_p11_fail(ctx, rv, fn, rc, hint, err);
}

CK_RV hsm_find(hsm_ctx *ctx, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl,
	       CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
	*n = 0;
	CK_RV rv = ctx->f->C_FindObjectsInit(h, tmpl, ntmpl);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->f->C_FindObjects(h, out, max, n);
	CK_RV rv2 = ctx->f->C_FindObjectsFinal(h);
	return rv != CKR_OK ? rv : rv2;
}

/* Token labels are 32 bytes, blank padded, not NUL-terminated. */
static bool label_matches(const CK_UTF8CHAR tl[32], const char *label)
{
	size_t n = strlen(label);
	if (n > 32 || memcmp(tl, label, n) != 0)
		return false;
	for (size_t i = n; i < 32; i++)
		if (tl[i] != ' ')
			return false;
	return true;
}

/* Finds the token's slot through the raw list (libp11's slot list is a snapshot). */
static psc_rc find_slot_raw(hsm_ctx *ctx, CK_SLOT_ID *out, psc_err *err)
{
	CK_SLOT_ID ids[64];
	CK_ULONG n = 64;
	CK_RV rv = ctx->f->C_GetSlotList(CK_TRUE, ids, &n);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GetSlotList", PSC_E_HSM_P11,
				    "the module cannot list its slots", err);
	for (CK_ULONG i = 0; i < n && i < 64; i++) {
		CK_TOKEN_INFO ti;
		if (ctx->f->C_GetTokenInfo(ids[i], &ti) == CKR_OK &&
		    label_matches(ti.label, ctx->label)) {
			*out = ids[i];
			return PSC_OK;
		}
	}
	return psc_err_set(err, PSC_E_HSM_DOWN,
			   "token '%s' is not present in module %s: reinsert or reconnect "
			   "the token; psc-kms retries by itself",
			   ctx->label, ctx->module);
}

static psc_rc login_rv(hsm_ctx *ctx, CK_RV rv, psc_err *err)
{
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return PSC_OK;
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID ||
	    rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED) {
		/* Tokens lock the PIN after a few wrong tries: a rejected PIN is never
		 * sent again by this context (recovery then fails fast). */
		atomic_store(&ctx->pin_rejected, true);
		return psc_err_set(err, PSC_E_HSM_PIN,
				   "C_Login as user on token '%s' (module %s) failed: %s: "
				   "check the PIN file named in kms.yaml%s",
				   ctx->label, ctx->module, hsm_ckr_name(rv),
				   rv == CKR_PIN_LOCKED ? "; the PIN is locked: the security "
							  "officer must reset it"
							: "");
	}
	return hsm_p11_fail(ctx, rv, "C_Login", PSC_E_HSM_P11, "cannot log in to the token", err);
}

/* Opens (or reopens) the control session and logs in; ctx->lock held. */
static psc_rc ctl_open_locked(hsm_ctx *ctx, psc_err *err)
{
	if (ctx->ctl_open) {
		(void)ctx->f->C_CloseSession(ctx->ctl);
		ctx->ctl_open = false;
	}
	CK_SESSION_HANDLE h;
	CK_RV rv = ctx->f->C_OpenSession(atomic_load(&ctx->slot_id),
					 CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_OpenSession", PSC_E_HSM_P11,
				    "the token refuses a read-write session", err);
	ctx->ctl = h;
	ctx->ctl_open = true;
	if (atomic_load(&ctx->pin_rejected))
		return psc_err_set(err, PSC_E_HSM_PIN,
				   "token '%s' refused the user PIN earlier; not trying it again "
				   "(the token would lock it): fix the PIN file and restart "
				   "psc-kms",
				   ctx->label);
	rv = ctx->f->C_Login(h, CKU_USER, (CK_UTF8CHAR *)ctx->pin, strlen(ctx->pin));
	return login_rv(ctx, rv, err);
}

psc_rc hsm_kek_find_locked(hsm_ctx *ctx, bool required, psc_err *err)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, (void *)HSM_LABEL_KEK, strlen(HSM_LABEL_KEK)},
	};
	if (ctx->kek_pinned)
		return hsm_kek_pin_find_locked(ctx, err);
	CK_OBJECT_HANDLE hs[2];
	CK_ULONG n = 0;
	CK_RV rv = hsm_find(ctx, ctx->ctl, t, 2, hs, 2, &n);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_FindObjects", PSC_E_HSM_P11,
				    "cannot search the token for the master KEK", err);
	if (n == 0) {
		/* A KEK rotation that stopped between destroying the old KEK and
		 * relabelling the new one (hsm_kek.h): adopt the new one. */
		CK_ATTRIBUTE tn[] = {
		    {CKA_CLASS, &cls, sizeof(cls)},
		    {CKA_LABEL, (void *)HSM_LABEL_KEK_NEXT, strlen(HSM_LABEL_KEK_NEXT)},
		};
		rv = hsm_find(ctx, ctx->ctl, tn, 2, hs, 2, &n);
		if (rv == CKR_OK && n == 1) {
			CK_ATTRIBUTE l = {CKA_LABEL, (void *)HSM_LABEL_KEK, strlen(HSM_LABEL_KEK)};
			if (ctx->f->C_SetAttributeValue(ctx->ctl, hs[0], &l, 1) != CKR_OK)
				n = 0;
		} else {
			n = 0;
		}
	}
	if (n == 0) {
		atomic_store(&ctx->have_kek, false);
		if (!required)
			return PSC_OK;
		return psc_err_set(err, PSC_E_HSM_NOT_READY,
				   "token '%s' (module %s) holds no master KEK (label '%s'): "
				   "run psc-kmsctl init",
				   ctx->label, ctx->module, HSM_LABEL_KEK);
	}
	if (n > 1)
		return psc_err_set(err, PSC_E_HSM_KEY_POLICY,
				   "token '%s' holds several keys labelled '%s': relabel the "
				   "retired ones (KEK rotation) so exactly one is current",
				   ctx->label, HSM_LABEL_KEK);
	CK_KEY_TYPE kt = 0;
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, never = CK_FALSE;
	CK_ULONG vlen = 0;
	uint8_t id[HSM_KEK_ID_LEN + 1];
	CK_ATTRIBUTE a[] = {
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},	    {CKA_SENSITIVE, &sens, sizeof(sens)},
	    {CKA_EXTRACTABLE, &extr, sizeof(extr)}, {CKA_NEVER_EXTRACTABLE, &never, sizeof(never)},
	    {CKA_VALUE_LEN, &vlen, sizeof(vlen)},   {CKA_ID, id, sizeof(id)},
	};
	rv = ctx->f->C_GetAttributeValue(ctx->ctl, hs[0], a, 6);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GetAttributeValue", PSC_E_HSM_P11,
				    "cannot read the master KEK's attributes", err);
	(void)never; /* informative only: a KEK shared per DESIGN.md §9 was extractable once */
	if (kt != CKK_AES || vlen != 32 || sens != CK_TRUE || extr != CK_FALSE ||
	    a[5].ulValueLen != HSM_KEK_ID_LEN)
		return psc_err_set(err, PSC_E_HSM_KEY_POLICY,
				   "master KEK '%s' on token '%s' breaks the key policy (must "
				   "be AES-256, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, "
				   "16-byte CKA_ID): recreate it with psc-kmsctl init",
				   HSM_LABEL_KEK, ctx->label);
	/* Workers read kek_id without the lock: write it only when it changes
	 * (the ceremony, which runs with no workers), not on every recovery. */
	pthread_mutex_lock(&ctx->kek_lock);
	if (!atomic_load(&ctx->have_kek) || memcmp(ctx->kek_id, id, HSM_KEK_ID_LEN) != 0)
		memcpy(ctx->kek_id, id, HSM_KEK_ID_LEN);
	atomic_store(&ctx->kek, hs[0]);
	atomic_store(&ctx->have_kek, true);
	pthread_mutex_unlock(&ctx->kek_lock);
	return PSC_OK;
}

/* Recovery after a transient fault; fails fast within the retry interval. */
static psc_rc ctx_recover(hsm_ctx *ctx, psc_err *err)
{
	long long t = now_ms();
	long long next = atomic_load(&ctx->next_try_ms);
	if (t < next)
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "HSM token '%s' (module %s) is down; next reconnection try "
				   "in %lld ms: check the device",
				   ctx->label, ctx->module, next - t);
	if (pthread_mutex_trylock(&ctx->lock) != 0)
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "HSM token '%s' is down; another worker is reconnecting",
				   ctx->label);
	psc_rc rc = PSC_OK;
	if (!atomic_load(&ctx->healthy)) {
		CK_SLOT_ID slot;
		bool had_kek = atomic_load(&ctx->have_kek);
		rc = find_slot_raw(ctx, &slot, err);
		if (rc == PSC_OK) {
			atomic_store(&ctx->slot_id, slot);
			rc = ctl_open_locked(ctx, err);
		}
		if (rc == PSC_OK)
			rc = hsm_kek_find_locked(ctx, had_kek, err);
		if (rc == PSC_OK) {
			/* libp11 keeps a pool of its own sessions, now dead too; reopening
			 * in the same (read-only) mode makes it forget them without
			 * C_CloseAllSessions, and it opens fresh ones on demand. */
			(void)PKCS11_open_session(ctx->slot, 0);
			atomic_fetch_add(&ctx->gen, 1);
			atomic_store(&ctx->healthy, true);
		} else {
			/* a fault inside the recovery itself must not reset the clock */
			atomic_store(&ctx->healthy, false);
			atomic_store(&ctx->next_try_ms, now_ms() + ctx->retry_ms);
			if (rc != PSC_E_HSM_PIN && rc != PSC_E_HSM_NOT_READY &&
			    rc != PSC_E_HSM_KEY_POLICY)
				rc = PSC_E_HSM_DOWN;
			if (err)
				err->rc = rc;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

psc_rc hsm_session_enter(hsm_session *s, psc_err *err)
{
	if (!s)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm: no session");
	hsm_ctx *ctx = s->ctx;
	if (!atomic_load(&ctx->healthy)) {
		psc_rc rc = ctx_recover(ctx, err);
		if (rc != PSC_OK)
			return rc;
	}
	unsigned g = atomic_load(&ctx->gen);
	if (s->open && s->gen == g)
		return PSC_OK;
	if (s->open) {
		(void)ctx->f->C_CloseSession(s->h); /* may already be gone */
		s->open = false;
	}
	CK_SESSION_HANDLE h;
	CK_RV rv = ctx->f->C_OpenSession(atomic_load(&ctx->slot_id),
					 CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_OpenSession", PSC_E_HSM_P11,
				    "the token refuses another session: lower the worker count",
				    err);
	s->h = h;
	s->gen = g;
	s->open = true;
	return PSC_OK;
}

psc_rc hsm_key_check(const hsm_session *s, const hsm_key *k, const char *what, psc_err *err)
{
	if (!k || k->handle == CK_INVALID_HANDLE)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm: no %s key", what);
	if (k->gen != atomic_load(&s->ctx->gen))
		return psc_err_set(err, PSC_E_HSM_STALE_KEY,
				   "%s handle was made before the HSM sessions were reopened "
				   "after a fault: load it again from its blob",
				   what);
	return PSC_OK;
}

static psc_rc check_mechanisms(hsm_ctx *ctx, psc_err *err)
{
	static const struct {
		CK_MECHANISM_TYPE m;
		const char *name;
	} need[] = {
	    {CKM_GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"},
	    {CKM_AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"},
	    {CKM_RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP"},
	    {CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"},
	    {CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE"},
	    {CKM_AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA"},
	    {CKM_ECDSA, "CKM_ECDSA"},
	};
	CK_MECHANISM_TYPE list[512];
	CK_ULONG n = 512;
	CK_RV rv = ctx->f->C_GetMechanismList(atomic_load(&ctx->slot_id), list, &n);
	if (rv != CKR_OK)
		return hsm_p11_fail(ctx, rv, "C_GetMechanismList", PSC_E_HSM_P11,
				    "cannot list the token's mechanisms", err);
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		bool found = false;
		for (CK_ULONG j = 0; j < n && !found; j++)
			found = list[j] == need[i].m;
		if (!found)
			return psc_err_set(err, PSC_E_HSM_MECHANISM,
					   "token '%s' (module %s) lacks %s, which psc-kms needs: "
					   "use a token that offers it (docs/hsm.md)",
					   ctx->label, ctx->module, need[i].name);
	}
	return PSC_OK;
}

static psc_rc open_p11(hsm_ctx *ctx, psc_err *err)
{
	ctx->p11 = PKCS11_CTX_new();
	if (!ctx->p11)
		return psc_err_set(err, PSC_E_NOMEM, "hsm: libp11 context allocation failed");
	if (PKCS11_CTX_load(ctx->p11, ctx->module) != 0) {
		ERR_clear_error();
		return psc_err_set(err, PSC_E_HSM_MODULE,
				   "cannot load PKCS#11 module %s (missing file, not a PKCS#11 "
				   "module, or C_Initialize failed): check hsm.module in "
				   "kms.yaml and that the token's package is installed",
				   ctx->module);
	}
	ctx->p11_loaded = true;
	/* Our own view of the same module: dlopen returns libp11's handle (refcount). */
	ctx->dl = dlopen(ctx->module, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl =
	    ctx->dl ? (CK_C_GetFunctionList)dlsym(ctx->dl, "C_GetFunctionList") : NULL;
	if (!gfl || gfl(&ctx->f) != CKR_OK || !ctx->f)
		return psc_err_set(err, PSC_E_HSM_MODULE,
				   "PKCS#11 module %s has no usable C_GetFunctionList: is it a "
				   "PKCS#11 module?",
				   ctx->module);
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	CK_RV rv = ctx->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return psc_err_set(err, PSC_E_HSM_MODULE,
				   "C_Initialize of module %s failed: %s: check the module's "
				   "own configuration (SoftHSM: SOFTHSM2_CONF)",
				   ctx->module, hsm_ckr_name(rv));
	if (PKCS11_enumerate_slots(ctx->p11, &ctx->slots, &ctx->nslots) != 0) {
		ERR_clear_error();
		return psc_err_set(err, PSC_E_HSM_MODULE,
				   "module %s cannot list its slots: check its configuration",
				   ctx->module);
	}
	char seen[256] = "";
	size_t off = 0;
	for (unsigned i = 0; i < ctx->nslots; i++) {
		PKCS11_TOKEN *tok = ctx->slots[i].token;
		if (!tok || !tok->initialized || !tok->label)
			continue;
		if (strcmp(tok->label, ctx->label) == 0) {
			ctx->slot = &ctx->slots[i];
			break;
		}
		int w =
		    snprintf(seen + off, sizeof(seen) - off, "%s'%s'", off ? ", " : "", tok->label);
		if (w > 0 && (size_t)w < sizeof(seen) - off)
			off += (size_t)w;
	}
	if (!ctx->slot)
		return psc_err_set(err, PSC_E_HSM_NO_TOKEN,
				   "token '%s' not found in module %s (tokens seen: %s): run "
				   "psc-kmsctl init, or fix hsm.token in kms.yaml",
				   ctx->label, ctx->module, off ? seen : "none");
	atomic_store(&ctx->slot_id, PKCS11_get_slotid_from_slot(ctx->slot));
	return PSC_OK;
}

psc_rc hsm_ctx_new(hsm_ctx **out, const hsm_config *cfg, psc_err *err)
{
	if (!out || !cfg || !cfg->module_path || !cfg->token_label || !cfg->pin)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm: module, token label and PIN "
				   "are required");
	*out = NULL;
	if (strlen(cfg->token_label) == 0 || strlen(cfg->token_label) > 32)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm: token label must be 1..32 bytes (got %zu)",
				   strlen(cfg->token_label));
	if (strlen(cfg->pin) > HSM_PIN_MAX)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm: PIN longer than %d bytes",
				   HSM_PIN_MAX);
	if (cfg->sessions < 1 || cfg->sessions > HSM_MAX_SESSIONS)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm: worker sessions must be 1..%d (got %u)", HSM_MAX_SESSIONS,
				   cfg->sessions);
	hsm_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return psc_err_set(err, PSC_E_NOMEM, "hsm: out of memory");
	ctx->module = strdup(cfg->module_path);
	snprintf(ctx->label, sizeof(ctx->label), "%s", cfg->token_label);
	snprintf(ctx->pin, sizeof(ctx->pin), "%s", cfg->pin);
	ctx->retry_ms = cfg->retry_ms ? cfg->retry_ms : HSM_RETRY_MS_DEFAULT;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_mutex_init(&ctx->kek_lock, NULL);
	atomic_store(&ctx->healthy, true);
	atomic_store(&ctx->gen, 1);
	if (!ctx->module) {
		hsm_ctx_free(&ctx);
		return psc_err_set(err, PSC_E_NOMEM, "hsm: out of memory");
	}

	psc_rc rc = open_p11(ctx, err);
	if (rc == PSC_OK) {
		pthread_mutex_lock(&ctx->lock);
		rc = ctl_open_locked(ctx, err);
		/* libp11's own login state (for its key lookups); the token already
		 * counts us as logged in, so this cannot fail on the PIN any more. */
		if (rc == PSC_OK && PKCS11_login(ctx->slot, 0, ctx->pin) != 0) {
			ERR_clear_error();
			rc = psc_err_set(err, PSC_E_HSM_PIN,
					 "libp11 login to token '%s' (module %s) failed: check "
					 "the PIN file named in kms.yaml",
					 ctx->label, ctx->module);
		}
		if (rc == PSC_OK)
			rc = check_mechanisms(ctx, err);
		if (rc == PSC_OK)
			rc = hsm_kek_find_locked(ctx, !cfg->allow_no_kek, err);
		pthread_mutex_unlock(&ctx->lock);
	}
	if (rc == PSC_OK) {
		/* Size the pool by the token: keep one session for control work and
		 * one for libp11. CK_EFFECTIVELY_INFINITE is 0; ~0 means unknown. */
		CK_TOKEN_INFO ti;
		unsigned want = cfg->sessions;
		CK_RV rv = ctx->f->C_GetTokenInfo(atomic_load(&ctx->slot_id), &ti);
		if (rv != CKR_OK)
			rc = hsm_p11_fail(ctx, rv, "C_GetTokenInfo", PSC_E_HSM_P11, NULL, err);
		else if (ti.ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
			 ti.ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION) {
			CK_ULONG room = ti.ulMaxSessionCount > 2 ? ti.ulMaxSessionCount - 2 : 0;
			if (room == 0)
				rc = psc_err_set(err, PSC_E_HSM_P11,
						 "token '%s' allows only %lu sessions; psc-kms "
						 "needs at least 3",
						 ctx->label, (unsigned long)ti.ulMaxSessionCount);
			else if (want > room)
				want = (unsigned)room;
		}
		for (unsigned i = 0; rc == PSC_OK && i < want; i++) {
			ctx->sess[i].ctx = ctx;
			ctx->sess[i].idx = i;
			ctx->nsess = i + 1;
			rc = hsm_session_enter(&ctx->sess[i], err);
		}
	}
	if (rc != PSC_OK) {
		hsm_ctx_free(&ctx);
		return rc;
	}
	*out = ctx;
	return PSC_OK;
}

void hsm_keys_forget_locked(hsm_ctx *ctx)
{
	EVP_PKEY_free(ctx->identity);
	EVP_PKEY_free(ctx->audit);
	ctx->identity = ctx->audit = NULL;
}

void hsm_ctx_free(hsm_ctx **pctx)
{
	if (!pctx || !*pctx)
		return;
	hsm_ctx *ctx = *pctx;
	hsm_keys_forget_locked(ctx);
	if (ctx->f) {
		for (unsigned i = 0; i < ctx->nsess; i++)
			if (ctx->sess[i].open)
				(void)ctx->f->C_CloseSession(ctx->sess[i].h);
		if (ctx->ctl_open)
			(void)ctx->f->C_CloseSession(ctx->ctl);
	}
	/* No C_Finalize here: libp11 finalizes the module in PKCS11_CTX_unload. */
	if (ctx->dl)
		dlclose(ctx->dl);
	if (ctx->p11) {
		if (ctx->slots)
			PKCS11_release_all_slots(ctx->p11, ctx->slots, ctx->nslots);
		if (ctx->p11_loaded)
			PKCS11_CTX_unload(ctx->p11);
		PKCS11_CTX_free(ctx->p11);
	}
	OPENSSL_cleanse(ctx->pin, sizeof(ctx->pin));
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->kek_lock);
	free(ctx->module);
	free(ctx);
	*pctx = NULL;
}

unsigned hsm_ctx_sessions(const hsm_ctx *ctx)
{
	return ctx ? ctx->nsess : 0;
}

bool hsm_healthy(const hsm_ctx *ctx)
{
	return ctx && atomic_load(&((hsm_ctx *)ctx)->healthy);
}

bool hsm_oaep_sha256(const hsm_ctx *ctx)
{
	return ctx && atomic_load(&((hsm_ctx *)ctx)->oaep) == HSM_OAEP_SHA256;
}

void hsm_kek_id(const hsm_ctx *ctx, uint8_t out[HSM_KEK_ID_LEN])
{
	memset(out, 0, HSM_KEK_ID_LEN);
	if (ctx && atomic_load(&((hsm_ctx *)ctx)->have_kek)) {
		pthread_mutex_lock(&((hsm_ctx *)ctx)->kek_lock);
		memcpy(out, ctx->kek_id, HSM_KEK_ID_LEN);
		pthread_mutex_unlock(&((hsm_ctx *)ctx)->kek_lock);
	}
}

psc_rc hsm_session_get(hsm_ctx *ctx, unsigned i, hsm_session **out, psc_err *err)
{
	if (!ctx || !out || i >= ctx->nsess)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "hsm: worker session %u does not exist (%u opened)", i,
				   ctx ? ctx->nsess : 0);
	*out = &ctx->sess[i];
	return PSC_OK;
}

static psc_rc get_key(hsm_ctx *ctx, const char *label, EVP_PKEY **cache, EVP_PKEY **out,
		      psc_err *err)
{
	if (!ctx || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm: missing argument");
	*out = NULL;
	if (!atomic_load(&ctx->healthy))
		return psc_err_set(err, PSC_E_HSM_DOWN,
				   "HSM token '%s' is down: cannot hand out key '%s' now",
				   ctx->label, label);
	pthread_mutex_lock(&ctx->lock);
	psc_rc rc = PSC_OK;
	/* After a recovery the token may have renumbered its objects (SoftHSM does
	 * when the login is lost), so libp11's key handles are stale: look again.
	 * libp11 appends the re-found keys and never frees the old entries, so
	 * EVP_PKEYs handed out before stay valid memory (they just fail to sign). */
	unsigned g = atomic_load(&ctx->gen);
	if (ctx->keys_gen != g) {
		hsm_keys_forget_locked(ctx);
		ctx->keys_gen = g;
	}
	if (!*cache) {
		PKCS11_KEY *keys = NULL;
		unsigned n = 0;
		if (PKCS11_enumerate_keys(ctx->slot->token, &keys, &n) != 0) {
			ERR_clear_error();
			rc = psc_err_set(err, PSC_E_HSM_P11,
					 "libp11 cannot list the private keys of token '%s': "
					 "check that the token is present and the PIN is right",
					 ctx->label);
		}
		/* libp11 0.4.12 keeps every key object it has ever seen in its list
		 * and appends new ones: after a forced ceremony the deleted old key
		 * is still listed, so the newest (last) match is the live one. */
		for (unsigned i = n; rc == PSC_OK && i-- > 0 && !*cache;)
			if (keys[i].isPrivate && keys[i].label && strcmp(keys[i].label, label) == 0)
				*cache = PKCS11_get_private_key(&keys[i]);
		if (rc == PSC_OK && !*cache) {
			ERR_clear_error();
			rc = psc_err_set(err, PSC_E_HSM_NO_KEY,
					 "private key '%s' not found on token '%s' (module %s): "
					 "run psc-kmsctl init",
					 label, ctx->label, ctx->module);
		}
	}
	if (rc == PSC_OK && EVP_PKEY_up_ref(*cache) == 1)
		*out = *cache;
	else if (rc == PSC_OK)
		rc = psc_err_set(err, PSC_E_CRYPTO, "hsm: EVP_PKEY_up_ref failed");
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

psc_rc hsm_identity_key(hsm_ctx *ctx, EVP_PKEY **out, psc_err *err)
{
	return get_key(ctx, HSM_LABEL_IDENTITY, ctx ? &ctx->identity : NULL, out, err);
}

psc_rc hsm_audit_key(hsm_ctx *ctx, EVP_PKEY **out, psc_err *err)
{
	return get_key(ctx, HSM_LABEL_AUDIT, ctx ? &ctx->audit : NULL, out, err);
}

psc_rc hsm_random(hsm_session *s, uint8_t *buf, size_t n, psc_err *err)
{
	if (!buf && n)
		return psc_err_set(err, PSC_E_INVALID_ARG, "hsm_random: no buffer");
	psc_rc rc = hsm_session_enter(s, err);
	if (rc != PSC_OK)
		return rc;
	CK_RV rv = s->ctx->f->C_GenerateRandom(s->h, buf, n);
	if (rv != CKR_OK)
		return hsm_s_fail(s, rv, "C_GenerateRandom", PSC_E_HSM_P11,
				  "the token's RNG failed", err);
	return PSC_OK;
}
