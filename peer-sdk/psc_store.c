/* The PSCs a peer holds and their epoch secrets; see psc_store.h. */
#include "psc_store.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

typedef struct tombstone {
	uint8_t id[PSC_PSC_ID_LEN];
	uint64_t epoch;
} tombstone;

struct psc_store {
	psc_entry **v;
	size_t n, cap;
	tombstone tomb[PSC_STORE_MAX_TOMBSTONES];
	size_t n_tomb, next_tomb;
};

psc_rc psc_store_new(psc_store **out)
{
	if (!out)
		return PSC_E_INVALID_ARG;
	*out = calloc(1, sizeof(**out));
	return *out ? PSC_OK : PSC_E_NOMEM;
}

static void wipe_key(psc_epoch_key *k)
{
	OPENSSL_cleanse(k->secret, sizeof(k->secret));
	k->held = 0;
	k->epoch = 0;
}

static void entry_free(psc_entry *e)
{
	if (!e)
		return;
	wipe_key(&e->cur);
	wipe_key(&e->prev);
	free(e->members);
	OPENSSL_cleanse(e, sizeof(*e));
	free(e);
}

void psc_store_free(psc_store **s)
{
	if (!s || !*s)
		return;
	for (size_t i = 0; i < (*s)->n; i++)
		entry_free((*s)->v[i]);
	free((*s)->v);
	free(*s);
	*s = NULL;
}

size_t psc_store_count(const psc_store *s)
{
	return s ? s->n : 0;
}

const psc_entry *psc_store_at(const psc_store *s, size_t i)
{
	return s && i < s->n ? s->v[i] : NULL;
}

static psc_entry *find(const psc_store *s, const uint8_t *id, size_t *idx)
{
	for (size_t i = 0; s && i < s->n; i++)
		if (memcmp(s->v[i]->id, id, PSC_PSC_ID_LEN) == 0) {
			if (idx)
				*idx = i;
			return s->v[i];
		}
	return NULL;
}

const psc_entry *psc_store_find(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN])
{
	return find(s, id, NULL);
}

static const tombstone *find_tomb(const psc_store *s, const uint8_t *id)
{
	for (size_t i = 0; i < s->n_tomb; i++)
		if (memcmp(s->tomb[i].id, id, PSC_PSC_ID_LEN) == 0)
			return &s->tomb[i];
	return NULL;
}

uint64_t psc_store_held_epoch(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN])
{
	const psc_entry *e = find(s, id, NULL);
	if (e)
		return e->cur.epoch;
	const tombstone *t = s ? find_tomb(s, id) : NULL;
	return t ? t->epoch : 0;
}

int psc_store_is_stale(const psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch)
{
	const psc_entry *e = find(s, id, NULL);
	if (e)
		return epoch <= e->cur.epoch;
	const tombstone *t = find_tomb(s, id);
	return t && epoch <= t->epoch;
}

/* Copies a wire member list; endpoints are at most 255 bytes by the decoder. */
static psc_rc copy_members(psc_entry *e, const proto_members *ms)
{
	psc_peer_member *v = NULL;
	size_t n = 0;
	if (ms->n) {
		v = calloc(ms->n, sizeof(*v));
		if (!v)
			return PSC_E_NOMEM;
		proto_iter it;
		proto_member m;
		proto_iter_init(&it, ms->raw, ms->raw_len);
		while (n < ms->n && proto_next_member(&it, &m)) {
			memcpy(v[n].node_id, m.node_id, PSC_NODE_ID_LEN);
			size_t l = m.endpoint.len < PSC_PEER_ENDPOINT_MAX ? m.endpoint.len
									  : PSC_PEER_ENDPOINT_MAX;
			memcpy(v[n].endpoint, m.endpoint.p, l);
			v[n].endpoint[l] = '\0';
			n++;
		}
	}
	free(e->members);
	e->members = v;
	e->n_members = n;
	return PSC_OK;
}

psc_rc psc_store_apply(psc_store *s, const proto_material *m,
		       const uint8_t secret[PSC_EPOCH_SECRET_LEN], int64_t now)
{
	if (!s || !m || !secret)
		return PSC_E_INVALID_ARG;
	psc_entry *e = find(s, m->psc_id, NULL);
	int fresh = 0;
	if (!e) {
		if (s->n >= PSC_STORE_MAX_PSCS)
			return PSC_E_TOO_LARGE;
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 8;
			psc_entry **v = realloc(s->v, cap * sizeof(*v));
			if (!v)
				return PSC_E_NOMEM;
			s->v = v;
			s->cap = cap;
		}
		e = calloc(1, sizeof(*e));
		if (!e)
			return PSC_E_NOMEM;
		memcpy(e->id, m->psc_id, PSC_PSC_ID_LEN);
		fresh = 1;
	}
	if (m->members_full || fresh) {
		psc_rc rc = copy_members(e, &m->members);
		if (rc != PSC_OK) {
			if (fresh)
				entry_free(e);
			return rc;
		}
	}
	if (fresh)
		s->v[s->n++] = e;

	size_t nl = m->name.len < PSC_MAX_NAME ? m->name.len : PSC_MAX_NAME;
	memcpy(e->name, m->name.p, nl);
	e->name[nl] = '\0';
	memcpy(e->owner, m->owner, PSC_NODE_ID_LEN);
	e->suite = m->suite;
	e->flags = m->flags;
	e->grace_ms = m->grace_ms;

	/* At most two epochs: the one being superseded becomes previous (only if
	 * the new epoch grants a grace period); an older previous goes now. */
	wipe_key(&e->prev);
	if (e->cur.held && m->grace_ms > 0) {
		e->prev = e->cur;
		e->prev_expiry = now + (int64_t)m->grace_ms;
	}
	wipe_key(&e->cur);
	e->cur.held = 1;
	e->cur.epoch = m->epoch;
	memcpy(e->cur.secret, secret, PSC_EPOCH_SECRET_LEN);
	return PSC_OK;
}

int psc_store_remove(psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t last_epoch)
{
	if (!s)
		return 0;
	size_t idx = 0;
	psc_entry *e = find(s, id, &idx);
	uint64_t ep = last_epoch;
	if (e && e->cur.epoch > ep)
		ep = e->cur.epoch;
	/* Remember the PSC even if it was not held: a delayed Refresh for it must
	 * not resurrect it. */
	tombstone *t = (tombstone *)find_tomb(s, id);
	if (!t) {
		t = &s->tomb[s->next_tomb];
		s->next_tomb = (s->next_tomb + 1) % PSC_STORE_MAX_TOMBSTONES;
		if (s->n_tomb < PSC_STORE_MAX_TOMBSTONES)
			s->n_tomb++;
		memcpy(t->id, id, PSC_PSC_ID_LEN);
		t->epoch = 0;
	}
	if (ep > t->epoch)
		t->epoch = ep;
	if (!e)
		return 0;
	entry_free(e);
	memmove(&s->v[idx], &s->v[idx + 1], (s->n - idx - 1) * sizeof(*s->v));
	s->n--;
	return 1;
}

void psc_store_expire(psc_store *s, int64_t now)
{
	for (size_t i = 0; s && i < s->n; i++) {
		psc_entry *e = s->v[i];
		if (e->prev.held && e->prev_expiry <= now)
			wipe_key(&e->prev);
	}
}

int64_t psc_store_next_expiry(const psc_store *s)
{
	int64_t best = -1;
	for (size_t i = 0; s && i < s->n; i++) {
		const psc_entry *e = s->v[i];
		if (e->prev.held && (best < 0 || e->prev_expiry < best))
			best = e->prev_expiry;
	}
	return best;
}

psc_rc psc_store_secret(psc_store *s, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch, int64_t now,
			uint64_t *epoch_out, uint8_t out[PSC_EPOCH_SECRET_LEN])
{
	if (!s || !id || !out)
		return PSC_E_INVALID_ARG;
	psc_store_expire(s, now);
	psc_entry *e = find(s, id, NULL);
	if (!e)
		return PSC_E_PEER_UNKNOWN_PSC;
	const psc_epoch_key *k = NULL;
	if (e->cur.held && (epoch == 0 || epoch == e->cur.epoch))
		k = &e->cur;
	else if (e->prev.held && epoch == e->prev.epoch)
		k = &e->prev;
	if (!k)
		return PSC_E_PEER_NO_EPOCH;
	memcpy(out, k->secret, PSC_EPOCH_SECRET_LEN);
	if (epoch_out)
		*epoch_out = k->epoch;
	return PSC_OK;
}
