/*
 * pol_state — rate counters the KMS keeps between decisions.
 *
 * Owns: recent event times per (requester Node-ID, action), in a fixed-size
 * set-associative table allocated once by pol_state_new(); a full bucket
 * forgets the key idle longest.
 * Never: allocate after pol_state_new(), read the clock (times come from the
 * caller), or survive into a decision as anything but a read-only count.
 * Kept apart from the compiled policy so a reload keeps the counts.
 */
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"

#define WAYS 8

struct entry {
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint8_t action;
	bool used;
	uint16_t n;    /* events stored (<= POL_RATE_MAX) */
	uint16_t head; /* next slot to write */
	int64_t last;  /* newest event, for eviction */
	int64_t ev[POL_RATE_MAX];
};

struct pol_state {
	size_t nbuckets; /* power of two */
	struct entry *e; /* nbuckets * WAYS */
};

psc_rc pol_state_new(pol_state **out, size_t capacity)
{
	if (!out)
		return PSC_E_INVALID_ARG;
	size_t nb = 8;
	while (nb * WAYS < capacity && nb < ((size_t)1 << 24))
		nb *= 2;
	pol_state *st = calloc(1, sizeof(*st));
	if (!st)
		return PSC_E_NOMEM;
	st->e = calloc(nb * WAYS, sizeof(*st->e));
	if (!st->e) {
		free(st);
		return PSC_E_NOMEM;
	}
	st->nbuckets = nb;
	*out = st;
	return PSC_OK;
}

void pol_state_free(pol_state **st)
{
	if (!st || !*st)
		return;
	free((*st)->e);
	free(*st);
	*st = NULL;
}

static size_t bucket(const pol_state *st, const uint8_t *node_id, pol_action a)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (int i = 0; i < PSC_NODE_ID_LEN; i++)
		h = (h ^ node_id[i]) * 1099511628211ull;
	h = (h ^ (uint64_t)a) * 1099511628211ull;
	return (size_t)(h ^ (h >> 29)) & (st->nbuckets - 1);
}

static struct entry *find(const pol_state *st, const uint8_t *node_id, pol_action a)
{
	struct entry *b = &st->e[bucket(st, node_id, a) * WAYS];
	for (int i = 0; i < WAYS; i++)
		if (b[i].used && b[i].action == a &&
		    memcmp(b[i].node_id, node_id, PSC_NODE_ID_LEN) == 0)
			return &b[i];
	return NULL;
}

void pol_state_record(pol_state *st, const uint8_t node_id[PSC_NODE_ID_LEN], pol_action a,
		      int64_t now)
{
	if (!st || !node_id || (unsigned)a >= POL_ACT_COUNT)
		return;
	struct entry *e = find(st, node_id, a);
	if (!e) {
		struct entry *b = &st->e[bucket(st, node_id, a) * WAYS];
		e = &b[0];
		for (int i = 0; i < WAYS; i++) {
			if (!b[i].used) {
				e = &b[i];
				break;
			}
			if (b[i].last < e->last)
				e = &b[i];
		}
		memset(e, 0, sizeof(*e));
		memcpy(e->node_id, node_id, PSC_NODE_ID_LEN);
		e->action = (uint8_t)a;
		e->used = true;
	}
	e->ev[e->head] = now;
	e->head = (uint16_t)((e->head + 1) % POL_RATE_MAX);
	if (e->n < POL_RATE_MAX)
		e->n++;
	if (now > e->last || e->n == 1)
		e->last = now;
}

uint32_t pol_state_count(const pol_state *st, const uint8_t node_id[PSC_NODE_ID_LEN], pol_action a,
			 int64_t now, int64_t window)
{
	if (!st || !node_id || (unsigned)a >= POL_ACT_COUNT || window <= 0 ||
	    window > ((int64_t)1 << 40) || now > ((int64_t)1 << 40) || now < -((int64_t)1 << 40))
		return 0;
	const struct entry *e = find(st, node_id, a);
	if (!e)
		return 0;
	uint32_t cnt = 0;
	for (uint16_t i = 0; i < e->n; i++) {
		int64_t t = e->ev[i];
		/* (now - window, now]: events from the future (clock steps) count too. */
		if (t > now - window)
			cnt++;
	}
	return cnt;
}
