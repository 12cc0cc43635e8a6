/*
 * kms_backup — restoring a state backup onto a stopped KMS (psc-kmsctl restore;
 * docs/operator.md, "Backup and restore"). Backups themselves are taken online
 * by the daemon (kms_admin.c: `backup FILE`, kms_store_backup).
 *
 * Owns: the restore procedure and its checks, and reading the audit log for
 * the highest epoch ever issued per PSC.
 *   1. The daemon must be stopped: the audit directory's lock and the state
 *      database's exclusive lock are taken here, so a running psc-kmsd makes the
 *      restore fail (PSC_E_AUDIT_LOCKED / PSC_E_KMS_DB_LOCKED) before anything
 *      changes.
 *   2. The backup is copied next to the live database and opened there (its
 *      application id, schema and integrity are checked; the original file is
 *      never modified).
 *   3. Every wrapped blob in it is unwrapped in the token: the master KEK never
 *      leaves the HSM, so a backup only restores onto a token holding the KEK it
 *      names (PSC_E_HSM_WRONG_KEK otherwise, naming the KEK id).
 *   4. The audit log must reach at least the backup's audit position (else it is
 *      older than the backup: PSC_E_AUDIT). Its records give the highest epoch
 *      ever issued per PSC.
 *   5. One EPOCH_FLOOR per PSC: for a live PSC with an epoch, one above the
 *      highest epoch the audit log or the backup knows (that number is reserved,
 *      never issued), so the daemon rekeys every restored PSC at its next start
 *      (reason "restore") above anything ever issued; for other PSC ids the
 *      highest epoch itself, so a re-created id continues above it.
 *   6. A kms.restore audit record is made durable, the floors commit with its
 *      seq, the live database is renamed aside (state.db.replaced-<UTC time>)
 *      and the restored copy takes its place.
 * A failure before step 6's renames leaves the live state untouched; a crash
 * after the audit record but before the rename leaves the old state, and the
 * daemon's start-up reconciliation records that kms.restore as aborted.
 * Never: hold or log key material (blobs are checked inside the token and the
 * test unwraps are destroyed at once), overwrite or delete the replaced
 * database.
 */
#ifndef KMS_BACKUP_H
#define KMS_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "hsm_ctx.h"
#include "kms_config.h"
#include "psc_codes.h"
#include "psc_rc.h"

/* Highest epoch seen per PSC id in an audit log. */
typedef struct kms_epoch_map kms_epoch_map;

/* Reads every segment of audit_dir (already validated by aud_log_open) and
 * collects, per PSC id, the highest epoch any record carries (psc.refresh and
 * every other record with a PSC and an epoch, aborted batches included: an
 * epoch that was ever written down is never reused). */
psc_rc kms_audit_highest_epochs(const char *audit_dir, kms_epoch_map **out, psc_err *err) PSC_WUR;
/* 0 if the PSC id never appears with an epoch. */
uint64_t kms_epoch_map_get(const kms_epoch_map *m, const uint8_t psc_id[PSC_PSC_ID_LEN]);
size_t kms_epoch_map_count(const kms_epoch_map *m);
/* Calls fn for every entry (any order). */
void kms_epoch_map_foreach(const kms_epoch_map *m,
			   void (*fn)(void *arg, const uint8_t psc_id[PSC_PSC_ID_LEN],
				      uint64_t epoch),
			   void *arg);
void kms_epoch_map_free(kms_epoch_map **p);

typedef struct kms_restore_opts {
	const char *backup;    /* the backup file (psc-kmsctl backup) */
	const kms_config *cfg; /* the installation to restore into */
	hsm_ctx *hsm;	       /* its token, open */
	EVP_PKEY *audit_key;   /* the token's audit key (checkpoints) */
	FILE *progress;	       /* progress lines, or NULL */
} kms_restore_opts;

typedef struct kms_restore_result {
	uint64_t backup_seq; /* audit position the backup covers */
	uint64_t audit_seq;  /* seq of the kms.restore record */
	uint64_t pscs_live;  /* live PSCs in the backup */
	uint64_t blobs;	     /* wrapped blobs checked in the token */
	uint64_t floors;     /* EPOCH_FLOOR commands applied */
	uint64_t rekeys_due; /* PSCs the daemon will rekey at its next start */
	char replaced[4200]; /* where the previous database went ("" if none) */
} kms_restore_result;

psc_rc kms_restore(const kms_restore_opts *o, kms_restore_result *res, psc_err *err) PSC_WUR;

#endif
