/*
 * aud_log — the KMS's append-only, hash-chained, checkpointed audit log writer.
 *
 * Owns: one audit directory (exclusively, via a lock file): segment files
 * audit-NNNNNNNN.jsonl, checkpoints.jsonl, torn-*.bin copies of repaired tails.
 * It numbers records (gap-free seq), chains them (prev = SHA-256 of the previous
 * line), group-commits a batch with one write + one fdatasync, rotates segments by
 * size, writes signed checkpoints every N records / T seconds / at rotation / at
 * close, repairs a torn last line at open with a recorded truncation, and fails
 * closed: after a write or sync error it refuses every record until
 * aud_log_recover() succeeds.
 * Never: acknowledge a record before fdatasync returned, delete or rewrite a
 * committed byte, record key material (no field can hold it), or sign anything
 * but checkpoints.
 *
 * Durability contract for the KMS (DESIGN §5): append the batch's records, commit
 * (records are now durable), then commit state recording aud_log_last_seq(), then
 * answer. At restart, seqs in (state's last seq, aud_log_last_seq()] were audited
 * but never applied: append one aud_log_append_aborted() and commit.
 */
#ifndef AUD_LOG_H
#define AUD_LOG_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>

#include "aud_rec.h"
#include "psc_rc.h"

typedef struct aud_log aud_log;

typedef struct aud_log_opts {
	const char *dir;              /* created (0750) if missing */
	const char *kms_id;           /* [A-Za-z0-9._-], 1..64 */
	EVP_PKEY *sign_key;           /* borrowed, must outlive the log; only EVP_DigestSign* */
	uint64_t checkpoint_every;    /* records between checkpoints; 0 = 1000 */
	unsigned checkpoint_secs;     /* seconds between checkpoints; 0 = 300 */
	uint64_t segment_max_bytes;   /* rotate once a segment reaches this; 0 = 64 MiB */
} aud_log_opts;

/* Who asked. All fields optional (NULL = unknown). */
typedef struct aud_actor {
	const uint8_t *node_id;      /* 16 bytes */
	const uint8_t *cert_sha256;  /* 32 bytes: SHA-256 of the DER certificate */
	const char *subject;         /* RFC 2253 text from the certificate (untrusted) */
	const char *issuer;
} aud_actor;

typedef struct aud_decision {
	const char *outcome;         /* "permit", "deny", "ask_owner", ... (required) */
	const char *rule;            /* id of the deciding rule, or NULL */
	const char *policy_rev;      /* policy revision, or NULL */
} aud_decision;

/* One key event. Pointers are borrowed for the duration of aud_log_append. */
typedef struct aud_event {
	aud_event_type type;         /* not SEGMENT_LINK / LOG_REPAIR / LOG_RECOVER / ABORTED */
	const char *request_id;      /* NULL if none */
	const aud_actor *actor;      /* NULL for system events */
	const uint8_t *psc_id;       /* 16 bytes or NULL */
	bool has_epoch;
	uint64_t epoch;
	const char *key_id;          /* HSM key id / label, never key bytes */
	const aud_decision *decision;/* NULL if no policy decision was taken */
	const char *result;          /* "ok", "denied", "error: ..." (required) */
	const aud_kv *detail;        /* up to AUD_DETAIL_MAX entries */
	size_t n_detail;
} aud_event;

/* Opens (or creates) the log: replays every segment to rebuild the chain and the
 * Merkle state, repairs a torn tail with a log.repair record, refuses a log whose
 * committed part is broken (PSC_E_AUDIT_TAMPERED / _MALFORMED: run psc-audit
 * verify). PSC_E_AUDIT_LOCKED if another process holds the directory. */
psc_rc aud_log_open(aud_log **out, const aud_log_opts *opts, psc_err *err) PSC_WUR;

/* Last seq made durable by a commit (0 for an empty log). */
uint64_t aud_log_last_seq(const aud_log *log);

/* Adds a record to the pending batch; *seq (nullable) gets its number. Nothing is
 * written yet. PSC_E_AUDIT while the log is failed closed. */
psc_rc aud_log_append(aud_log *log, const aud_event *ev, uint64_t *seq, psc_err *err) PSC_WUR;

/* Adds an `aborted` record naming seqs first..last (records that were audited but
 * whose state change never committed, DESIGN §5). Needs first <= last <= last seq. */
psc_rc aud_log_append_aborted(aud_log *log, uint64_t first, uint64_t last,
			      const char *request_id, uint64_t *seq, psc_err *err) PSC_WUR;

/* Writes the pending batch with one write and one fdatasync; *last_seq (nullable)
 * is the last durable seq. On a write or sync error the batch is not acknowledged,
 * the error is PSC_E_AUDIT_NOSPACE (ENOSPC/EDQUOT) or PSC_E_AUDIT_IO, and the log
 * is failed closed (further calls give PSC_E_AUDIT) until aud_log_recover(). */
psc_rc aud_log_commit(aud_log *log, uint64_t *last_seq, psc_err *err) PSC_WUR;

/* Drops the pending batch (the operation it described will not happen). */
void aud_log_rollback(aud_log *log);

/* Writes a signed checkpoint of everything committed now, if anything is new. */
psc_rc aud_log_checkpoint(aud_log *log, psc_err *err) PSC_WUR;

/* For the KMS timer: writes a checkpoint if checkpoint_secs have passed since the
 * last one and records were committed since. */
psc_rc aud_log_tick(aud_log *log, psc_err *err) PSC_WUR;

/* True while failed closed. */
bool aud_log_failed(const aud_log *log);

/* Replaces the checkpoint signing key (borrowed, same rules as sign_key): the
 * KMS fetches its HSM key again after the token recovered from a fault. */
void aud_log_set_sign_key(aud_log *log, EVP_PKEY *sign_key);

/*
 * Leaves the failed state: cuts any partly written bytes back to the last
 * committed size (segment and checkpoint file), reopens the files, and commits a
 * log.recover record saying which seqs were refused and why. Fails (and stays
 * failed) while the cause persists, e.g. the disk is still full. The KMS calls it
 * from a timer (e.g. every 5 s) and on `psc-kmsctl audit recover`.
 */
psc_rc aud_log_recover(aud_log *log, psc_err *err) PSC_WUR;

/* Orderly shutdown: drops an uncommitted batch, writes a final checkpoint, frees
 * and nulls *p. Returns the checkpoint's result (the log is freed either way). */
psc_rc aud_log_close(aud_log **p, psc_err *err) PSC_WUR;

/* Frees without a final checkpoint (error paths). NULL-safe, nulls *p. */
void aud_log_free(aud_log **p);

#endif
