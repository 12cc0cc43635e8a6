/*
 * hsm_int — private to hsm/: the context and session structs and the helpers the
 * hsm_*.c files share. Nothing outside hsm/ includes this.
 */
#ifndef HSM_INT_H
#define HSM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <libp11.h>
#include <p11-kit/pkcs11.h>

#include "hsm_ctx.h"
#include "hsm_epoch.h"

struct hsm_session {
	hsm_ctx *ctx;
	unsigned idx;
	CK_SESSION_HANDLE h;
	bool open;
	unsigned gen; /* ctx generation when h was opened */
};

enum { HSM_OAEP_UNKNOWN = 0, HSM_OAEP_SHA256 = 1, HSM_OAEP_SHA1 = 2 };

struct hsm_ctx {
	char *module;
	char label[33];
	char pin[HSM_PIN_MAX + 1]; /* wiped at free */
	unsigned retry_ms;

	PKCS11_CTX *p11;
	bool p11_loaded;
	PKCS11_SLOT *slots;
	unsigned nslots;
	PKCS11_SLOT *slot;

	void *dl; /* our dlopen of the same module */
	CK_FUNCTION_LIST *f;

	pthread_mutex_t lock; /* recovery, control session, libp11 key lookups */
	CK_SESSION_HANDLE ctl;
	bool ctl_open;
	EVP_PKEY *identity, *audit; /* cached libp11 keys, under lock */
	unsigned keys_gen;	    /* ctx generation the cached keys belong to */

	_Atomic CK_SLOT_ID slot_id;
	atomic_bool healthy;
	atomic_uint gen;
	atomic_llong next_try_ms;
	atomic_int oaep;
	atomic_bool pin_rejected; /* never retry a PIN the token refused */

	_Atomic CK_OBJECT_HANDLE kek;
	atomic_bool have_kek;
	uint8_t kek_id[HSM_KEK_ID_LEN]; /* written under lock before have_kek is set */
	/* kek + kek_id change together during a KEK rotation (hsm_kek.c): readers
	 * that need both take kek_lock. Pinned: the current KEK was chosen by id
	 * (rotation), so a recovery finds it by id, not by label. */
	pthread_mutex_t kek_lock;
	bool kek_pinned;

	hsm_session sess[HSM_MAX_SESSIONS];
	unsigned nsess;
};

/*
 * Turns a CK_RV into a psc_rc with a sentence: "<fn> failed on token 'L' (module
 * M): CKR_NAME (0x..): <hint>". Transient faults mark the HSM down and give
 * PSC_E_HSM_DOWN whatever `rc` says; otherwise `rc` is returned.
 */
/* Generates a master KEK on the token (wrap/unwrap only, sensitive, never
 * extractable) labelled `label`, with a random CKA_ID written to id. Uses the
 * control session: the caller serialises (ceremony alone, or ctx->lock). */
psc_rc hsm_kek_generate(hsm_ctx *ctx, const char *label, uint8_t id[HSM_KEK_ID_LEN],
			CK_OBJECT_HANDLE *h, psc_err *err) PSC_WUR;
psc_rc hsm_p11_fail(hsm_ctx *ctx, CK_RV rv, const char *fn, psc_rc rc, const char *hint,
		    psc_err *err);
bool hsm_rv_transient(CK_RV rv);
/*
 * The same for a call on worker session s. A call cut short by a fault can fail
 * with anything (CKR_FUNCTION_FAILED, CKR_KEY_FUNCTION_NOT_PERMITTED when the
 * objects vanish mid-call...), so on a non-transient value it asks the token
 * whether the session still exists, and treats a dead session as a fault.
 */
psc_rc hsm_s_fail(hsm_session *s, CK_RV rv, const char *fn, psc_rc rc, const char *hint,
		  psc_err *err);

/* True if s is current and the token still knows it (one C_GetSessionInfo);
 * a dead session marks the HSM down. */
bool hsm_s_alive(hsm_session *s);

/* Makes s usable: recovers the HSM if needed (or fails fast) and reopens s after
 * a recovery. Every operation on a session starts with it. */
psc_rc hsm_session_enter(hsm_session *s, psc_err *err) PSC_WUR;

/* PSC_E_HSM_STALE_KEY if k was made before the last recovery. */
psc_rc hsm_key_check(const hsm_session *s, const hsm_key *k, const char *what,
		     psc_err *err) PSC_WUR;

/* C_FindObjects wrapper: up to max handles matching tmpl, count in *n. */
CK_RV hsm_find(hsm_ctx *ctx, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl,
	       CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n);

/* Finds and checks the master KEK by label (current) with ctx->lock held. */
psc_rc hsm_kek_find_locked(hsm_ctx *ctx, bool required, psc_err *err) PSC_WUR;
/* Finds the pinned current KEK by id (hsm_kek.c), ctx->lock held. */
psc_rc hsm_kek_pin_find_locked(hsm_ctx *ctx, psc_err *err) PSC_WUR;
/* Drops cached libp11 keys (after the ceremony replaced them), lock held. */
void hsm_keys_forget_locked(hsm_ctx *ctx);

#endif
