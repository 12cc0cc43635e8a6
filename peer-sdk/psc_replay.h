/*
 * psc_replay — the transaction ids of KMS requests accepted within the
 * freshness window (docs/protocol.md §9), so a replayed request is ignored.
 *
 * Owns: a bounded set of (transaction_id, timestamp). An entry can be dropped
 * once its timestamp has left the window: the freshness check then rejects a
 * replay of it anyway. Never: grow without bound; when the set is full of
 * entries still inside the window it refuses new requests (fail closed) rather
 * than forget one that could then be replayed.
 */
#ifndef PSC_REPLAY_H
#define PSC_REPLAY_H

#include <stdint.h>

#include "psc_rc.h"

#define PSC_REPLAY_MAX 16384 /* KMS requests remembered at once */

typedef struct psc_replay psc_replay;

psc_rc psc_replay_new(psc_replay **out) PSC_WUR;
void psc_replay_free(psc_replay **r);

/*
 * Records (txid, timestamp) if new. now and window in wall-clock ms.
 * PSC_OK: new and recorded; PSC_E_PEER_REPLAYED: seen within the window;
 * PSC_E_TOO_LARGE: the cache is full of live entries (refuse the request).
 */
psc_rc psc_replay_check(psc_replay *r, uint64_t txid, uint64_t timestamp, uint64_t now,
			uint64_t window) PSC_WUR;

#endif
