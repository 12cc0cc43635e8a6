/*
 * psc_store — the PSCs one peer belongs to and the epoch secrets it holds.
 *
 * Owns: per PSC the current epoch and at most one previous epoch kept for its
 * grace period (docs/protocol.md §10.5), the last known member list, and
 * tombstones of PSCs this peer left or lost, so a delayed Refresh cannot bring
 * a forgotten PSC back.
 * Never: log or copy a secret anywhere but the caller's buffer; every secret
 * is wiped with OPENSSL_cleanse when superseded, expired or removed. Times
 * are CLOCK_MONOTONIC milliseconds given by the caller (no clock reads here).
 */
#ifndef PSC_STORE_H
#define PSC_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "proto_msg.h"
#include "psc/peer.h"

#define PSC_STORE_MAX_PSCS 4096	     /* as many as one Catchup may list */
#define PSC_STORE_MAX_TOMBSTONES 256 /* forgotten PSCs remembered */

typedef struct psc_epoch_key {
	int held;
	uint64_t epoch;
	uint8_t secret[PSC_EPOCH_SECRET_LEN];
} psc_epoch_key;

typedef struct psc_entry {
	uint8_t id[PSC_PSC_ID_LEN];
	char name[PSC_MAX_NAME + 1];
	uint8_t owner[PSC_NODE_ID_LEN];
	uint16_t suite;
	uint8_t flags;
	uint32_t grace_ms;
	psc_epoch_key cur;
	psc_epoch_key prev;
	int64_t prev_expiry; /* monotonic ms; meaningful while prev.held */
	psc_peer_member *members;
	size_t n_members;
} psc_entry;

typedef struct psc_store psc_store;

psc_rc psc_store_new(psc_store **out) PSC_WUR;
/* Wipes every secret and frees; NULL-safe, nulls *s. */
void psc_store_free(psc_store **s);

size_t psc_store_count(const psc_store *s);
const psc_entry *psc_store_at(const psc_store *s, size_t i);
const psc_entry *psc_store_find(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN]);

/* The epoch to acknowledge for a PSC: current if held, else the tombstone's
 * last epoch, else 0. */
uint64_t psc_store_held_epoch(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN]);

/* 1 if material for (id, epoch) would be stale: not above the held epoch, or
 * not above the epoch at which this PSC was forgotten. */
int psc_store_is_stale(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch);

/*
 * Installs `secret` as the new current epoch of m->psc_id (creating the entry)
 * with m's name, owner, suite, flags and members (when members_full). The old
 * current epoch becomes previous until now + m->grace_ms, or is wiped at once
 * when grace_ms is 0. Caller checked !psc_store_is_stale(). Copies secret; the
 * caller wipes its own copy.
 */
psc_rc psc_store_apply(psc_store *s, const proto_material *m,
		       const uint8_t secret[PSC_EPOCH_SECRET_LEN], int64_t now) PSC_WUR;

/* Wipes and forgets a PSC, remembering last_epoch in a tombstone. 1 if it was held. */
int psc_store_remove(psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t last_epoch);

/* Wipes previous epochs whose grace period ended at or before now. */
void psc_store_expire(psc_store *s, int64_t now);
/* Earliest grace expiry (monotonic ms), or -1 if none. */
int64_t psc_store_next_expiry(const psc_store *s);

/*
 * Copies the secret of `epoch` (0 = current) of a PSC into out if it is held:
 * the current epoch, or the previous one while its grace period runs (checked
 * against now). PSC_E_PEER_UNKNOWN_PSC / PSC_E_PEER_NO_EPOCH otherwise.
 */
psc_rc psc_store_secret(psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch, int64_t now,
			uint64_t *epoch_out, uint8_t out[PSC_EPOCH_SECRET_LEN]) PSC_WUR;

#endif
