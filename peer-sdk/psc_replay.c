/* Replay cache of KMS request transaction ids; see psc_replay.h. */
#include "psc_replay.h"

#include <stdlib.h>

/* Open addressing with linear probing; the table is twice the cap so probes
 * stay short. Expired entries are purged lazily when the set looks full. */
#define SLOTS (2 * PSC_REPLAY_MAX)

typedef struct slot {
	uint64_t txid;
	uint64_t ts;
	int used;
} slot;

struct psc_replay {
	slot s[SLOTS];
	size_t n;
};

psc_rc psc_replay_new(psc_replay **out)
{
	if (!out)
		return PSC_E_INVALID_ARG;
	*out = calloc(1, sizeof(**out));
	return *out ? PSC_OK : PSC_E_NOMEM;
}

void psc_replay_free(psc_replay **r)
{
	if (!r || !*r)
		return;
	free(*r);
	*r = NULL;
}

static size_t hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)(x % SLOTS);
}

static int expired(const slot *e, uint64_t now, uint64_t window)
{
	return e->ts + window < now;
}

/* Rebuilds the table without expired entries (linear probing cannot simply
 * clear a slot in the middle of a probe chain). */
static void purge(psc_replay *r, uint64_t now, uint64_t window)
{
	slot *old = malloc(sizeof(r->s));
	if (!old)
		return;
	for (size_t i = 0; i < SLOTS; i++)
		old[i] = r->s[i];
	for (size_t i = 0; i < SLOTS; i++)
		r->s[i].used = 0;
	r->n = 0;
	for (size_t i = 0; i < SLOTS; i++) {
		if (!old[i].used || expired(&old[i], now, window))
			continue;
		size_t h = hash(old[i].txid);
		while (r->s[h].used)
			h = (h + 1) % SLOTS;
		r->s[h] = old[i];
		r->n++;
	}
	free(old);
}

psc_rc psc_replay_check(psc_replay *r, uint64_t txid, uint64_t timestamp, uint64_t now,
			uint64_t window)
{
	if (!r)
		return PSC_E_INVALID_ARG;
	size_t h = hash(txid);
	for (size_t probes = 0; probes < SLOTS && r->s[h].used; probes++) {
		if (r->s[h].txid == txid && !expired(&r->s[h], now, window))
			return PSC_E_PEER_REPLAYED;
		h = (h + 1) % SLOTS;
	}
	if (r->n >= PSC_REPLAY_MAX) {
		purge(r, now, window);
		if (r->n >= PSC_REPLAY_MAX)
			return PSC_E_TOO_LARGE;
		h = hash(txid);
		while (r->s[h].used)
			h = (h + 1) % SLOTS;
	}
	r->s[h] = (slot){.txid = txid, .ts = timestamp, .used = 1};
	r->n++;
	return PSC_OK;
}
