/*
 * hsm_kek — master KEK rotation on the token (docs/hsm.md, "KEK rotation").
 *
 * Owns: making the next master KEK (same key policy as the ceremony's, label
 * HSM_LABEL_KEK_NEXT while a rotation runs), switching the context's current
 * KEK to it (new blobs are wrapped under it; a recovery after an HSM fault
 * keeps it), re-wrapping one stored blob under the current KEK inside the
 * token, and retiring the old KEK once nothing references it.
 * Never: let a KEK leave the token, or destroy a KEK the caller has not proven
 * unused (hsm_kek_retire_old trusts the caller: the KMS calls it only when its
 * state store holds no blob under any other KEK id).
 *
 * The token is the rotation's durable marker: a key labelled
 * HSM_LABEL_KEK_NEXT means "a rotation to this KEK is in progress", so a KMS
 * restarted mid-way finds it (hsm_kek_next_find) and resumes. The finishing
 * steps are ordered so a crash between them is recovered at the next open:
 * the old KEK is destroyed first, then the new one is relabelled
 * HSM_LABEL_KEK; a token holding no HSM_LABEL_KEK but exactly one
 * HSM_LABEL_KEK_NEXT has that key adopted as current by hsm_ctx_new.
 *
 * Threads: like the ceremony, these take the context lock and use its control
 * session; hsm_epoch_rewrap runs on a worker session like hsm_epoch_load.
 */
#ifndef HSM_KEK_H
#define HSM_KEK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsm_ctx.h"
#include "hsm_epoch.h"

#define HSM_LABEL_KEK_NEXT "psc-master-kek-next"

/* The next KEK of a rotation in progress: *found, and its id when found. */
psc_rc hsm_kek_next_find(hsm_ctx *ctx, bool *found, uint8_t id[HSM_KEK_ID_LEN],
			 psc_err *err) PSC_WUR;

/* Creates the next KEK (AES-256, sensitive, never extractable, wrap/unwrap
 * only, random 16-byte id, label HSM_LABEL_KEK_NEXT) unless one exists, whose
 * id is then returned (*created false). */
psc_rc hsm_kek_next_create(hsm_ctx *ctx, uint8_t id[HSM_KEK_ID_LEN], bool *created,
			   psc_err *err) PSC_WUR;

/* Makes the KEK with this id the current one (hsm_epoch_generate wraps under
 * it, hsm_kek_id reports it). Its key policy is checked as at open.
 * PSC_E_HSM_WRONG_KEK if the token holds no such KEK. */
psc_rc hsm_kek_use(hsm_ctx *ctx, const uint8_t id[HSM_KEK_ID_LEN], psc_err *err) PSC_WUR;

/* Whether the token holds a KEK (label current or next) with this id. */
psc_rc hsm_kek_present(hsm_ctx *ctx, const uint8_t id[HSM_KEK_ID_LEN], bool *present,
		       psc_err *err) PSC_WUR;

/*
 * Re-wraps one blob (any KEK still on the token) under the current KEK:
 * unwrap into a session object, wrap, destroy the object. The secret never
 * leaves the token. Errors as hsm_epoch_load.
 */
psc_rc hsm_epoch_rewrap(hsm_session *s, const uint8_t *blob, size_t blob_len,
			uint8_t out[HSM_EPOCH_BLOB_LEN], psc_err *err) PSC_WUR;

/*
 * Ends a rotation: destroys every KEK labelled HSM_LABEL_KEK whose id is not
 * the current one, then labels the current KEK HSM_LABEL_KEK. *destroyed (may
 * be NULL) gets the number of keys destroyed.
 */
psc_rc hsm_kek_retire_old(hsm_ctx *ctx, unsigned *destroyed, psc_err *err) PSC_WUR;

#endif
