/*
 * kms_kekrot — master KEK rotation inside the running psc-kmsd
 * (psc-kmsctl rotate master-kek; docs/operator.md, "Rotating the master KEK").
 *
 * Owns: the rotation's progress in this process: starting it (a new KEK made
 * in the token and made current, so every new blob is wrapped under it),
 * re-wrapping the stored blobs still under another KEK in bounded chunks, one
 * chunk per event-loop turn (each blob one KEK_REWRAP command in the turn's
 * durability batch), and finishing it (old KEK destroyed once the committed
 * state has held no blob under it for a settle period of 1 s, so HSM work
 * begun before the switch has come back). Every phase is audited (kek.rotate).
 * Never: see an epoch secret (re-wrapping happens inside the token), or
 * destroy a KEK while a committed blob still names it.
 *
 * Durable state: the blobs' KEK ids are in the state store (KEK_REWRAP
 * commands), the rotation's target is the token's HSM_LABEL_KEK_NEXT key
 * (hsm_kek.h). A restarted daemon finds that key (kms_kekrot_resume) and
 * continues where the committed state stands; nothing else needs saving.
 *
 * Threads: the event-loop thread only.
 */
#ifndef KMS_KEKROT_H
#define KMS_KEKROT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

struct kmsd;
typedef struct kms_kekrot kms_kekrot;

#define KMS_KEKROT_CHUNK_DEFAULT 64 /* blobs re-wrapped per event-loop turn */
#define KMS_KEKROT_CHUNK_MAX 4096
#define KMS_KEKROT_PAUSE_MAX_MS 60000

typedef struct kms_kekrot_status {
	bool active;
	char from[33], to[33]; /* KEK ids (hex); from is "" when the old id is unknown */
	uint64_t rewrapped;    /* by this process */
	uint64_t remaining;    /* blobs not yet under the new KEK (committed view) */
	uint64_t started_ms;
	unsigned chunk, pause_ms;
	char last_error[256]; /* "" when the last step worked */
	/* the last finished rotation (this process) */
	char done_to[33];
	uint64_t done_ms;
} kms_kekrot_status;

psc_rc kms_kekrot_new(kms_kekrot **out, struct kmsd *k, psc_err *err) PSC_WUR;
void kms_kekrot_free(kms_kekrot **p);

/* At startup: a next KEK on the token means a rotation was running; make it
 * current again and carry on (audited, phase "resume"). */
psc_rc kms_kekrot_resume(kms_kekrot *r, psc_err *err) PSC_WUR;

/* Starts a rotation (audited, phase "start"): chunk blobs per turn (0 =
 * default), pause_ms between chunks (0 = none). A rotation already running
 * has only its pace changed. */
psc_rc kms_kekrot_start(kms_kekrot *r, unsigned chunk, unsigned pause_ms, psc_err *err) PSC_WUR;

/* Inside the open batch: re-wraps one chunk if one is due. */
void kms_kekrot_step(kms_kekrot *r);
/* After the batch committed: finishes the rotation when no blob is left. */
void kms_kekrot_after_batch(kms_kekrot *r);
/* Next time a step is due (ms since the epoch), 0 if none. */
uint64_t kms_kekrot_next_ms(const kms_kekrot *r);

void kms_kekrot_status_get(kms_kekrot *r, kms_kekrot_status *out);

#endif
