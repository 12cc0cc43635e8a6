/*
 * kms_store — the KMS's durable state: peers, PSCs, members, wrapped epoch
 * secrets, the highest epoch ever issued per PSC, and the last audit sequence
 * number the state covers. SQLite (WAL, synchronous=FULL, foreign keys on).
 *
 * Owns: the schema and its version, and the ONE function that changes state,
 * kms_store_apply(), which applies a kms_cmd deterministically: the same
 * commands applied in the same order to two empty stores give identical
 * stores (DESIGN.md §9: they are what KMS nodes replicate).
 * Never: read a clock, draw randomness, call the HSM, or hold plaintext keys
 * (epoch secrets are stored only wrapped under the master KEK); let a pointer
 * into SQLite escape (queries copy into caller-provided structs).
 *
 * Threads: one thread owns a kms_store (the KMS event loop). Nothing here locks;
 * a second thread must not call into the same store. The database file is
 * opened in exclusive locking mode, so a second process (another psc-kmsd on
 * the same file) is refused at open with PSC_E_KMS_DB_LOCKED.
 *
 * Durability (DESIGN.md §5): a batch is kms_store_begin, any number of
 * kms_store_apply, then kms_store_commit(seq) with the last audit sequence
 * number the batch's records carry (already fdatasync'ed by the audit log).
 * The seq is written in the same SQLite transaction, so after a crash
 * kms_store_last_audit_seq() says which audit records the state includes.
 *
 * Errors from apply come in two kinds:
 *  - rejections (PSC_E_KMS_UNKNOWN_PSC, _NAME_TAKEN, _EPOCH_NOT_INCREASING, ...):
 *    the command changed nothing; the transaction stays open and usable;
 *  - database failures (PSC_E_KMS_DB*, PSC_E_NOMEM): roll the batch back.
 * Error details name the database path and the SQLite message.
 */
#ifndef KMS_STORE_H
#define KMS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kms_cmd.h"
#include "psc_codes.h"
#include "psc_rc.h"

/* Schema version this code writes; newer files are refused (PSC_E_KMS_SCHEMA_NEWER). */
#define KMS_STORE_SCHEMA_VERSION 1

typedef struct kms_store kms_store;

/*
 * Opens (creating if missing) the state database at path. The directory must
 * exist. Runs a quick integrity check: a corrupt or non-database file fails with
 * PSC_E_KMS_DB_CORRUPT, a newer schema with PSC_E_KMS_SCHEMA_NEWER.
 */
psc_rc kms_store_open(kms_store **out, const char *path, psc_err *err) PSC_WUR;
/* Rolls back an open transaction, closes, frees, sets *p = NULL. NULL-safe. */
void kms_store_close(kms_store **p);
/* The path given to open (for messages). */
const char *kms_store_path(const kms_store *s);

/* ---- changes ------------------------------------------------------------- */

/* Starts a batch. PSC_E_KMS_TXN if one is already open. */
psc_rc kms_store_begin(kms_store *s, psc_err *err) PSC_WUR;
/* Applies one command inside the batch (PSC_E_KMS_TXN outside one). */
psc_rc kms_store_apply(kms_store *s, const kms_cmd *cmd, psc_err *err) PSC_WUR;
/*
 * Commits the batch and records audit_seq as the last audit record it covers.
 * audit_seq must be >= kms_store_last_audit_seq() (PSC_E_KMS_AUDIT_SEQ; the
 * batch stays open so the caller can roll back). On a database failure the
 * batch is rolled back.
 */
psc_rc kms_store_commit(kms_store *s, uint64_t audit_seq, psc_err *err) PSC_WUR;
/* Discards the open batch; no-op without one. */
void kms_store_rollback(kms_store *s);
/*
 * Inside an open batch: one request's commands all-or-nothing. A savepoint
 * marks the state; kms_store_undo returns to it (the batch stays open),
 * kms_store_keep forgets it. Marks nest.
 */
psc_rc kms_store_savepoint(kms_store *s, psc_err *err) PSC_WUR;
psc_rc kms_store_keep(kms_store *s, psc_err *err) PSC_WUR;
void kms_store_undo(kms_store *s);
bool kms_store_in_txn(const kms_store *s);
/* Last audit seq committed (0 for a new store). Sees the committed value only. */
uint64_t kms_store_last_audit_seq(const kms_store *s);

/* ---- queries ------------------------------------------------------------- */
/*
 * Queries read the connection's view, so inside a batch they see its
 * uncommitted changes (the event loop decides the next command from them).
 * Callback iterations call fn once per row in a stable order; fn returns 0 to
 * go on, non-zero to stop early (the query then returns PSC_OK). fn must not
 * call back into the store. Rows passed to fn are valid only during the call.
 */

typedef struct kms_peer {
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint8_t cert_der[KMS_CERT_DER_MAX];
	size_t cert_der_len;
	uint8_t cert_sha256[PSC_HASH_LEN];
	char subject[KMS_SUBJECT_MAX + 1];   /* NUL-terminated */
	char endpoint[KMS_ENDPOINT_MAX + 1]; /* NUL-terminated */
	uint8_t transport_key[KMS_TRANSPORT_KEY_MAX];
	size_t transport_key_len; /* 0: none recorded */
	uint8_t wrap_alg;
	uint16_t suites[KMS_SUITES_MAX];
	size_t n_suites;
	bool banned;
	uint64_t first_seen_ms; /* first PEER_UPSERT */
	uint64_t updated_ms;	/* last PEER_UPSERT */
	uint64_t banned_ms;	/* last PEER_BAN (either way); 0 never */
} kms_peer;

typedef struct kms_label {
	char key[KMS_LABEL_KEY_MAX + 1];
	char value[KMS_LABEL_VALUE_MAX + 1];
} kms_label;

typedef struct kms_psc {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	char name[KMS_NAME_MAX + 1]; /* NUL-terminated; kept on a tombstone */
	uint8_t owner[PSC_NODE_ID_LEN];
	kms_label labels[KMS_LABELS_MAX]; /* in the order of PSC_CREATE */
	size_t n_labels;
	uint32_t flags;
	uint16_t suite;
	uint32_t refresh_s;
	uint32_t max_members;
	uint64_t created_ms;
	uint64_t epoch;		/* current epoch; 0: none yet. On a tombstone: the last one */
	uint64_t last_rekey_ms; /* now_ms of the last EPOCH_NEW; 0: none yet */
	uint64_t highest_epoch; /* highest ever issued for this PSC id (>= epoch) */
	uint32_t n_members;
	bool destroyed; /* tombstone: no members, no blobs */
	uint64_t destroyed_ms;
} kms_psc;

typedef struct kms_member {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint64_t added_ms;
	uint64_t acked_epoch; /* 0: nothing acknowledged yet */
	uint64_t psc_epoch;   /* the PSC's current epoch (a member is behind if acked < this) */
} kms_member;

typedef struct kms_epoch {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	char kek_id[KMS_KEK_ID_MAX + 1];
	uint8_t wrapped[KMS_WRAPPED_MAX];
	size_t wrapped_len;
	uint64_t created_ms;
	uint32_t prev_grace_ms; /* from the EPOCH_NEW that created this epoch */
} kms_epoch;

typedef struct kms_store_counts {
	uint64_t peers;
	uint64_t peers_banned;
	uint64_t pscs_live;
	uint64_t pscs_destroyed;
	uint64_t memberships;
	uint64_t epoch_blobs;
} kms_store_counts;

/* PSC_E_KMS_UNKNOWN_PEER if absent. */
psc_rc kms_store_peer_get(kms_store *s, const uint8_t node_id[PSC_NODE_ID_LEN], kms_peer *out,
			  psc_err *err) PSC_WUR;

/* Every known peer ordered by node id (CRL reload: find revoked members;
 * psc-kmsctl peer list). */
psc_rc kms_store_peer_foreach(kms_store *s, int (*fn)(void *arg, const kms_peer *p), void *arg,
			      psc_err *err) PSC_WUR;

/* By id, live or tombstone (check out->destroyed). PSC_E_KMS_UNKNOWN_PSC if never created. */
psc_rc kms_store_psc_get(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_psc *out,
			 psc_err *err) PSC_WUR;
/* By name among live PSCs (exact bytes). PSC_E_KMS_UNKNOWN_PSC if none. */
psc_rc kms_store_psc_by_name(kms_store *s, const char *name, kms_psc *out, psc_err *err) PSC_WUR;
/* Every PSC ordered by name then id; tombstones only if include_destroyed. */
psc_rc kms_store_psc_foreach(kms_store *s, bool include_destroyed,
			     int (*fn)(void *arg, const kms_psc *p), void *arg,
			     psc_err *err) PSC_WUR;

/* One membership. PSC_E_KMS_NOT_MEMBER if absent (PSC_E_KMS_UNKNOWN_PSC if no such PSC). */
psc_rc kms_store_member_get(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN],
			    const uint8_t node_id[PSC_NODE_ID_LEN], kms_member *out,
			    psc_err *err) PSC_WUR;
/* Members of a PSC ordered by node id. PSC_E_KMS_UNKNOWN_PSC if never created. */
psc_rc kms_store_members(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN],
			 int (*fn)(void *arg, const kms_member *m), void *arg,
			 psc_err *err) PSC_WUR;
/* Live PSCs a node is a member of, ordered by psc id. */
psc_rc kms_store_pscs_of_node(kms_store *s, const uint8_t node_id[PSC_NODE_ID_LEN],
			      int (*fn)(void *arg, const kms_member *m), void *arg,
			      psc_err *err) PSC_WUR;

/* Current epoch and its blob. PSC_E_KMS_NO_EPOCH if none yet or destroyed. */
psc_rc kms_store_epoch_current(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_epoch *out,
			       psc_err *err) PSC_WUR;
/*
 * The previous epoch while it is still in its grace period at now_ms
 * (now_ms < current.created_ms + current.prev_grace_ms). PSC_E_KMS_NO_EPOCH
 * otherwise (none, or grace over, or no grace after a removal).
 */
psc_rc kms_store_epoch_previous(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t now_ms,
				kms_epoch *out, psc_err *err) PSC_WUR;
/* Every stored blob wrapped under kek_id (KEK rotation), ordered by psc id, epoch. */
psc_rc kms_store_epochs_by_kek(kms_store *s, const char *kek_id,
			       int (*fn)(void *arg, const kms_epoch *e), void *arg,
			       psc_err *err) PSC_WUR;
/* Every stored blob NOT wrapped under kek_id ("" for all blobs), ordered by psc
 * id, epoch: what a KEK rotation still has to re-wrap, what a restore checks. */
psc_rc kms_store_epochs_not_kek(kms_store *s, const char *kek_id,
				int (*fn)(void *arg, const kms_epoch *e), void *arg,
				psc_err *err) PSC_WUR;
/* How many blobs are not wrapped under kek_id (KEK rotation progress). */
psc_rc kms_store_count_not_kek(kms_store *s, const char *kek_id, uint64_t *n,
			       psc_err *err) PSC_WUR;
/* Called per PSC id (with its refresh due time where there is one, else 0);
 * non-zero stops the walk. */
typedef int (*kms_psc_due_fn)(void *arg, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t due_ms);

/*
 * Live PSCs whose highest epoch (raised by EPOCH_FLOOR at a restore) is above
 * their current epoch: the daemon rekeys them above the floor (reason
 * "restore") so no epoch number is ever issued twice. Ordered by psc id.
 */
psc_rc kms_store_restore_due(kms_store *s, kms_psc_due_fn fn, void *arg, psc_err *err) PSC_WUR;
/* Highest epoch ever issued (or floored) for a PSC id; 0 if never. */
psc_rc kms_store_highest_epoch(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t *out,
			       psc_err *err) PSC_WUR;

/*
 * Live PSCs whose timer rekey is due at now_ms: refresh_s > 0, an epoch exists
 * and last_rekey_ms + refresh_s * 1000 <= now_ms. Ordered by due time, then id.
 */
psc_rc kms_store_refresh_due(kms_store *s, uint64_t now_ms, kms_psc_due_fn fn, void *arg,
			     psc_err *err) PSC_WUR;
/* Earliest due time of any timer rekey (to arm the event loop's timer);
 * *found = false if no PSC has one. */
psc_rc kms_store_next_refresh(kms_store *s, uint64_t *due_ms, bool *found, psc_err *err) PSC_WUR;

psc_rc kms_store_counts_get(kms_store *s, kms_store_counts *out, psc_err *err) PSC_WUR;

/*
 * Writes a consistent copy of the committed state to dest_path (psc-kmsctl
 * backup). The daemon holds the database exclusively, so backups go through
 * the store's own connection. dest_path must not exist; it is created 0600,
 * written with SQLite's backup API and synced. Not inside a batch
 * (PSC_E_KMS_TXN): a backup never contains half a batch.
 */
psc_rc kms_store_backup(kms_store *s, const char *dest_path, psc_err *err) PSC_WUR;

/*
 * The same in steps, for the daemon: a large database is copied a bounded
 * number of pages per event-loop turn so peers are served meanwhile. Steps run
 * between batches (PSC_E_KMS_TXN inside one); SQLite keeps the copy up to date
 * with what the store's own connection commits between steps, so the finished
 * file is the committed state at the last step, audit position included. On
 * any error the partial file is removed and *b freed.
 */
typedef struct kms_store_bk kms_store_bk;
psc_rc kms_store_backup_begin(kms_store *s, const char *dest_path, kms_store_bk **b,
			      psc_err *err) PSC_WUR;
/* Copies up to `pages` pages (-1: all); *done once the file is complete,
 * synced and *b freed. */
psc_rc kms_store_backup_step(kms_store_bk **b, int pages, bool *done, psc_err *err) PSC_WUR;
/* Pages left and in total after the last step (progress). */
void kms_store_backup_progress(const kms_store_bk *b, int *remaining, int *total);
/* Stops a backup, removing the partial file. NULL-safe. */
void kms_store_backup_abort(kms_store_bk **b);

/*
 * SHA-256 over a canonical listing of every data table (peers, pscs, members,
 * epochs, epoch_hwm; not meta, whose audit seq is per node), rows in primary
 * key order, each value tagged with its type and length. Two stores that
 * applied the same commands have the same digest: KMS nodes can compare it to
 * detect divergence (§9), and tests use it to show a rejected command changed
 * nothing. Sees the open batch, like every query.
 */
psc_rc kms_store_digest(kms_store *s, uint8_t out[PSC_HASH_LEN], psc_err *err) PSC_WUR;

#endif
