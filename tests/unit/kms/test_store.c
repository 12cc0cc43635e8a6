/*
 * kms_store: every command applied and queried; every rejection leaves the
 * store unchanged (state digest) and the batch usable; batches, audit seq,
 * rollback, reopen; epochs never reused, also across destroy + re-create and
 * EPOCH_FLOOR; refresh timers; determinism (two stores, same commands: same
 * queries, same digest, same table dump).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kms_store.h"
#include "psc_test.h"
#include "test_cmd_samples.h"

/* ---- fixtures ------------------------------------------------------------ */

struct fx {
	char dir[4096];
	char path[4200];
	kms_store *s;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || pt_tmpdir(f->dir, "kms-store") != 0)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_open(&f->s, f->path, &e) != PSC_OK) {
		fprintf(stderr, "open: %s\n", psc_err_text(&e));
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kms_store_close(&f->s);
	assert_null(f->s);
	pt_rm_rf(f->dir);
	free(f);
	return 0;
}

static void begin(kms_store *s)
{
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_begin(s, &e) != PSC_OK)
		fail_msg("begin: %s", psc_err_text(&e));
}

static void commit(kms_store *s)
{
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_commit(s, kms_store_last_audit_seq(s) + 1, &e) != PSC_OK)
		fail_msg("commit: %s", psc_err_text(&e));
}

static void apply_ok_in(kms_store *s, kms_cmd c)
{
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_apply(s, &c, &e) != PSC_OK)
		fail_msg("apply %s: %s", kms_cmd_type_name(c.type), psc_err_text(&e));
}

/* One command in its own batch. */
static void ok(kms_store *s, kms_cmd c)
{
	begin(s);
	apply_ok_in(s, c);
	commit(s);
}

static void digest(kms_store *s, uint8_t out[32])
{
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_digest(s, out, &e) != PSC_OK)
		fail_msg("digest: %s", psc_err_text(&e));
}

/*
 * A rejected command: the expected code, a message containing needle, the
 * state digest unchanged, and the batch still usable (a later command in the
 * same batch applies and commits).
 */
static void rejected(kms_store *s, kms_cmd c, psc_rc want, const char *needle)
{
	uint8_t before[32], after[32];
	begin(s);
	digest(s, before);
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_store_apply(s, &c, &e);
	if (rc != want)
		fail_msg("%s: want %s, got %s (%s)", kms_cmd_type_name(c.type), psc_rc_name(want),
			 psc_rc_name(rc), psc_err_text(&e));
	if (needle && !strstr(e.detail, needle))
		fail_msg("'%s' not in '%s'", needle, e.detail);
	digest(s, after);
	assert_memory_equal(before, after, 32);
	assert_true(kms_store_in_txn(s));
	apply_ok_in(s, ks_floor(999, 1)); /* the batch goes on */
	commit(s);
}

static kms_psc *psc_get(kms_store *s, unsigned psc)
{
	static kms_psc p;
	uint8_t id[16];
	ks_id(id, psc);
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_psc_get(s, id, &p, &e) != PSC_OK)
		fail_msg("psc_get: %s", psc_err_text(&e));
	return &p;
}

static psc_rc psc_get_rc(kms_store *s, unsigned psc)
{
	kms_psc *p = malloc(sizeof(*p));
	uint8_t id[16];
	ks_id(id, psc);
	psc_err e;
	psc_rc rc = kms_store_psc_get(s, id, p, &e);
	free(p);
	return rc;
}

static uint64_t highest(kms_store *s, unsigned psc)
{
	uint8_t id[16];
	ks_id(id, psc);
	uint64_t v = 0;
	psc_err e;
	assert_int_equal(kms_store_highest_epoch(s, id, &v, &e), PSC_OK);
	return v;
}

struct collect {
	kms_member m[64];
	size_t n;
	size_t stop_after; /* 0: never */
};

static int collect_member(void *arg, const kms_member *m)
{
	struct collect *c = arg;
	if (c->n < 64)
		c->m[c->n++] = *m;
	return c->stop_after && c->n >= c->stop_after;
}

static struct collect members(kms_store *s, unsigned psc)
{
	struct collect c;
	memset(&c, 0, sizeof(c));
	uint8_t id[16];
	ks_id(id, psc);
	psc_err e;
	psc_err_clear(&e);
	if (kms_store_members(s, id, collect_member, &c, &e) != PSC_OK)
		fail_msg("members: %s", psc_err_text(&e));
	return c;
}

static struct collect pscs_of(kms_store *s, unsigned node)
{
	struct collect c;
	memset(&c, 0, sizeof(c));
	uint8_t id[16];
	ks_id(id, node);
	psc_err e;
	assert_int_equal(kms_store_pscs_of_node(s, id, collect_member, &c, &e), PSC_OK);
	return c;
}

static bool id_is(const uint8_t id[16], unsigned n)
{
	uint8_t x[16];
	ks_id(x, n);
	return memcmp(id, x, 16) == 0;
}

/* ---- peers --------------------------------------------------------------- */

/* Visiting order as text: node number, '!' when banned. */
static int peer_seen(void *arg, const kms_peer *p)
{
	char *out = arg;
	size_t n = strlen(out);
	snprintf(out + n, 16, "%u%s ", p->node_id[15], p->banned ? "!" : "");
	return 0;
}

static void test_peers(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	kms_peer *p = malloc(sizeof(*p));
	uint8_t id[16];
	ks_id(id, 1);
	psc_err e;
	assert_int_equal(kms_store_peer_get(s, id, p, &e), PSC_E_KMS_UNKNOWN_PEER);

	kms_cmd c = ks_peer(1, 1000);
	ok(s, c);
	assert_int_equal(kms_store_peer_get(s, id, p, &e), PSC_OK);
	assert_memory_equal(p->node_id, id, 16);
	assert_int_equal(p->cert_der_len, c.peer_upsert.cert_der.len);
	assert_memory_equal(p->cert_der, c.peer_upsert.cert_der.p, p->cert_der_len);
	assert_memory_equal(p->cert_sha256, c.peer_upsert.cert_sha256, 32);
	assert_string_equal(p->subject, "CN=peer,O=Example Corp");
	assert_string_equal(p->endpoint, "tcp://127.0.0.1:7500");
	assert_int_equal(p->transport_key_len, 32);
	assert_memory_equal(p->transport_key, c.peer_upsert.transport_key.p, 32);
	assert_int_equal(p->wrap_alg, PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_int_equal(p->n_suites, 2);
	assert_int_equal(p->suites[0], 1);
	assert_int_equal(p->suites[1], 0xff);
	assert_false(p->banned);
	assert_int_equal(p->first_seen_ms, 1000);
	assert_int_equal(p->updated_ms, 1000);
	assert_int_equal(p->banned_ms, 0);

	/* Ban, then a new Initialize: the ban and first_seen stay. */
	ok(s, ks_ban(1, true, 1500));
	c = ks_peer(1, 2000);
	c.peer_upsert.endpoint = (proto_bytes){(const uint8_t *)"tcp://10.0.0.1:9", 16};
	c.peer_upsert.transport_key.len = 0;
	c.peer_upsert.n_suites = 1;
	ok(s, c);
	assert_int_equal(kms_store_peer_get(s, id, p, &e), PSC_OK);
	assert_true(p->banned);
	assert_int_equal(p->banned_ms, 1500);
	assert_int_equal(p->first_seen_ms, 1000);
	assert_int_equal(p->updated_ms, 2000);
	assert_string_equal(p->endpoint, "tcp://10.0.0.1:9");
	assert_int_equal(p->transport_key_len, 0);
	assert_int_equal(p->n_suites, 1);
	ok(s, ks_ban(1, false, 2500));
	assert_int_equal(kms_store_peer_get(s, id, p, &e), PSC_OK);
	assert_false(p->banned);
	assert_int_equal(p->banned_ms, 2500);

	rejected(s, ks_ban(2, true, 1), PSC_E_KMS_UNKNOWN_PEER, "5a5a5a5a5a5a5a5a5a5a5a5a00000002");

	ok(s, ks_peer(2, 3000));
	ok(s, ks_ban(2, true, 3001));
	kms_store_counts n;
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal(n.peers, 2);
	assert_int_equal(n.peers_banned, 1);
	char seen[64] = "";
	assert_int_equal(kms_store_peer_foreach(s, peer_seen, seen, &e), PSC_OK);
	assert_string_equal(seen, "1 2! ");
	free(p);
}

/* ---- PSCs ---------------------------------------------------------------- */

static int collect_names(void *arg, const kms_psc *p)
{
	char *out = arg;
	strcat(out, p->name);
	strcat(out, p->destroyed ? "(d) " : " ");
	return 0;
}

static void test_psc_create_and_lookup(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	ok(s, ks_create(1, "ops", 7, 600, 10, 3, 5000));
	kms_psc *p = psc_get(s, 1);
	assert_true(id_is(p->psc_id, 1));
	assert_string_equal(p->name, "ops");
	assert_true(id_is(p->owner, 7));
	assert_int_equal(p->n_labels, 3);
	assert_string_equal(p->labels[0].key, "k0");
	assert_string_equal(p->labels[2].value, "v2");
	assert_int_equal(p->flags, KMS_PSC_FLAG_SENDER_SIGNATURES);
	assert_int_equal(p->suite, PSC_SUITE_AES256GCM_HKDF_SHA256);
	assert_int_equal(p->refresh_s, 600);
	assert_int_equal(p->max_members, 10);
	assert_int_equal(p->created_ms, 5000);
	assert_int_equal(p->epoch, 0);
	assert_int_equal(p->last_rekey_ms, 0);
	assert_int_equal(p->n_members, 0);
	assert_false(p->destroyed);

	kms_psc *q = malloc(sizeof(*q));
	psc_err e;
	assert_int_equal(kms_store_psc_by_name(s, "ops", q, &e), PSC_OK);
	assert_memory_equal(q, p, sizeof(*q));
	assert_int_equal(kms_store_psc_by_name(s, "OPS", q, &e), PSC_E_KMS_UNKNOWN_PSC);
	assert_int_equal(psc_get_rc(s, 2), PSC_E_KMS_UNKNOWN_PSC);

	rejected(s, ks_create(2, "ops", 7, 0, 0, 0, 1), PSC_E_KMS_NAME_TAKEN, "'ops'");
	rejected(s, ks_create(1, "other", 7, 0, 0, 0, 1), PSC_E_KMS_PSC_EXISTS, "already exists");

	/* A maximal PSC (255-byte name, 32 labels of maximal size) stores and reads back. */
	kms_cmd big = ks_max(KMS_CMD_PSC_CREATE);
	ok(s, big);
	assert_int_equal(kms_store_psc_get(s, big.psc_create.psc_id, q, &e), PSC_OK);
	assert_int_equal(strlen(q->name), KMS_NAME_MAX);
	assert_int_equal(q->n_labels, KMS_LABELS_MAX);
	assert_int_equal(strlen(q->labels[31].key), KMS_LABEL_KEY_MAX);
	assert_int_equal(strlen(q->labels[31].value), KMS_LABEL_VALUE_MAX);
	assert_int_equal(q->refresh_s, UINT32_MAX);

	ok(s, ks_create(3, "alpha", 7, 0, 0, 0, 1));
	char names[4096] = "";
	assert_int_equal(kms_store_psc_foreach(s, false, collect_names, names, &e), PSC_OK);
	char want[4096];
	snprintf(want, sizeof(want), "%s alpha ops ", q->name); /* "abcd..." sorts first */
	assert_string_equal(names, want);
	free(q);
}

/* ---- members ------------------------------------------------------------- */

static void test_members(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	rejected(s, ks_add(1, 5, 1), PSC_E_KMS_UNKNOWN_PSC, "is unknown");
	ok(s, ks_create(1, "team", 5, 0, 3, 0, 100));
	ok(s, ks_create(2, "other", 5, 0, 0, 0, 100));
	begin(s);
	apply_ok_in(s, ks_add(1, 9, 200));
	apply_ok_in(s, ks_add(1, 5, 201));
	apply_ok_in(s, ks_add(2, 9, 202));
	commit(s);
	rejected(s, ks_add(1, 9, 300), PSC_E_KMS_ALREADY_MEMBER, "already a member");
	ok(s, ks_add(1, 7, 301));
	rejected(s, ks_add(1, 8, 302), PSC_E_KMS_PSC_FULL, "maximum of 3 members");

	struct collect c = members(s, 1);
	assert_int_equal(c.n, 3);
	assert_true(id_is(c.m[0].node_id, 5)); /* ordered by node id */
	assert_true(id_is(c.m[1].node_id, 7));
	assert_true(id_is(c.m[2].node_id, 9));
	assert_int_equal(c.m[0].added_ms, 201);
	assert_int_equal(c.m[2].acked_epoch, 0);
	assert_true(id_is(c.m[1].psc_id, 1));
	assert_int_equal(psc_get(s, 1)->n_members, 3);

	/* A callback can stop early. */
	memset(&c, 0, sizeof(c));
	c.stop_after = 1;
	uint8_t id[16];
	ks_id(id, 1);
	psc_err e;
	assert_int_equal(kms_store_members(s, id, collect_member, &c, &e), PSC_OK);
	assert_int_equal(c.n, 1);

	c = pscs_of(s, 9);
	assert_int_equal(c.n, 2);
	assert_true(id_is(c.m[0].psc_id, 1));
	assert_true(id_is(c.m[1].psc_id, 2));
	assert_int_equal(pscs_of(s, 42).n, 0);

	kms_member m;
	uint8_t node[16];
	ks_id(node, 7);
	assert_int_equal(kms_store_member_get(s, id, node, &m, &e), PSC_OK);
	assert_int_equal(m.added_ms, 301);
	ks_id(node, 8);
	assert_int_equal(kms_store_member_get(s, id, node, &m, &e), PSC_E_KMS_NOT_MEMBER);
	ks_id(id, 77);
	assert_int_equal(kms_store_member_get(s, id, node, &m, &e), PSC_E_KMS_UNKNOWN_PSC);
	assert_int_equal(kms_store_members(s, id, collect_member, &c, &e), PSC_E_KMS_UNKNOWN_PSC);

	ok(s, ks_remove(1, 7));
	rejected(s, ks_remove(1, 7), PSC_E_KMS_NOT_MEMBER, "is not a member");
	rejected(s, ks_remove(3, 7), PSC_E_KMS_UNKNOWN_PSC, NULL);
	ok(s, ks_add(1, 8, 400)); /* room again */
	assert_int_equal(members(s, 1).n, 3);
	kms_store_counts n;
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal(n.memberships, 4);
	assert_int_equal(n.pscs_live, 2);
}

/* ---- epochs -------------------------------------------------------------- */

static psc_rc current(kms_store *s, unsigned psc, kms_epoch *out)
{
	uint8_t id[16];
	ks_id(id, psc);
	psc_err e;
	return kms_store_epoch_current(s, id, out, &e);
}

static psc_rc previous(kms_store *s, unsigned psc, uint64_t now, kms_epoch *out)
{
	uint8_t id[16];
	ks_id(id, psc);
	psc_err e;
	return kms_store_epoch_previous(s, id, now, out, &e);
}

static int count_epoch(void *arg, const kms_epoch *e)
{
	(void)e;
	++*(int *)arg;
	return 0;
}

static void test_epochs(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	kms_epoch *ep = malloc(sizeof(*ep));
	rejected(s, ks_epoch(1, 1, 0, 1), PSC_E_KMS_UNKNOWN_PSC, NULL);
	ok(s, ks_create(1, "e", 5, 0, 0, 0, 100));
	assert_int_equal(current(s, 1, ep), PSC_E_KMS_NO_EPOCH);
	assert_int_equal(current(s, 9, ep), PSC_E_KMS_UNKNOWN_PSC);

	ok(s, ks_epoch(1, 1, 0, 1000));
	assert_int_equal(current(s, 1, ep), PSC_OK);
	assert_int_equal(ep->epoch, 1);
	assert_string_equal(ep->kek_id, KS_KEK);
	assert_int_equal(ep->wrapped_len, KS_WRAPPED_LEN);
	assert_memory_equal(ep->wrapped, ks_wrapped(1, 1), KS_WRAPPED_LEN);
	assert_int_equal(ep->created_ms, 1000);
	assert_true(id_is(ep->psc_id, 1));
	assert_int_equal(psc_get(s, 1)->epoch, 1);
	assert_int_equal(psc_get(s, 1)->last_rekey_ms, 1000);
	assert_int_equal(previous(s, 1, 1000, ep), PSC_E_KMS_NO_EPOCH);

	rejected(s, ks_epoch(1, 1, 0, 2000), PSC_E_KMS_EPOCH_NOT_INCREASING, "never reused");

	/* Jumps are allowed; a grace period keeps the previous epoch for a while. */
	ok(s, ks_epoch(1, 5, 3000, 10000));
	assert_int_equal(current(s, 1, ep), PSC_OK);
	assert_int_equal(ep->epoch, 5);
	assert_int_equal(ep->prev_grace_ms, 3000);
	assert_int_equal(previous(s, 1, 12999, ep), PSC_OK);
	assert_int_equal(ep->epoch, 1);
	assert_memory_equal(ep->wrapped, ks_wrapped(1, 1), KS_WRAPPED_LEN);
	assert_int_equal(previous(s, 1, 13000, ep), PSC_E_KMS_NO_EPOCH);
	rejected(s, ks_epoch(1, 4, 0, 2000), PSC_E_KMS_EPOCH_NOT_INCREASING, NULL);

	/* A rekey after a removal grants no grace: the previous blob is gone. */
	ok(s, ks_epoch(1, 6, 0, 20000));
	assert_int_equal(previous(s, 1, 20000, ep), PSC_E_KMS_NO_EPOCH);
	kms_store_counts n;
	psc_err e;
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal(n.epoch_blobs, 1);
	/* Only the current and the previous are ever kept. */
	ok(s, ks_epoch(1, 7, 500, 21000));
	ok(s, ks_epoch(1, 8, 500, 22000));
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal(n.epoch_blobs, 2);
	assert_int_equal(previous(s, 1, 22000, ep), PSC_OK);
	assert_int_equal(ep->epoch, 7);

	/* KEK rotation rewraps current and previous; unknown epochs are refused. */
	int cnt = 0;
	assert_int_equal(kms_store_epochs_by_kek(s, KS_KEK, count_epoch, &cnt, &e), PSC_OK);
	assert_int_equal(cnt, 2);
	ok(s, ks_rewrap(1, 8, "kek-2"));
	ok(s, ks_rewrap(1, 7, "kek-2"));
	rejected(s, ks_rewrap(1, 6, "kek-2"), PSC_E_KMS_EPOCH_UNKNOWN, "no blob for epoch 6");
	rejected(s, ks_rewrap(2, 1, "kek-2"), PSC_E_KMS_UNKNOWN_PSC, NULL);
	cnt = 0;
	assert_int_equal(kms_store_epochs_by_kek(s, KS_KEK, count_epoch, &cnt, &e), PSC_OK);
	assert_int_equal(cnt, 0);
	assert_int_equal(kms_store_epochs_by_kek(s, "kek-2", count_epoch, &cnt, &e), PSC_OK);
	assert_int_equal(cnt, 2);
	assert_int_equal(current(s, 1, ep), PSC_OK);
	kms_cmd rw = ks_rewrap(1, 8, "kek-2");
	assert_string_equal(ep->kek_id, "kek-2");
	assert_int_equal(ep->wrapped_len, rw.kek_rewrap.wrapped.len);
	assert_memory_equal(ep->wrapped, rw.kek_rewrap.wrapped.p, ep->wrapped_len);
	assert_int_equal(ep->created_ms, 22000); /* rewrap keeps the epoch's time */
	assert_int_equal(highest(s, 1), 8);
	free(ep);
}

static void test_acks(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	ok(s, ks_create(1, "a", 5, 0, 0, 0, 100));
	ok(s, ks_add(1, 5, 100));
	rejected(s, ks_ack(1, 5, 1), PSC_E_KMS_EPOCH_UNKNOWN, "never issued");
	ok(s, ks_epoch(1, 1, 0, 200));
	ok(s, ks_ack(1, 5, 1));
	ok(s, ks_ack(1, 5, 1)); /* a repeated ack is harmless */
	rejected(s, ks_ack(1, 5, 2), PSC_E_KMS_EPOCH_UNKNOWN, NULL);
	rejected(s, ks_ack(1, 6, 1), PSC_E_KMS_NOT_MEMBER, NULL);
	rejected(s, ks_ack(2, 5, 1), PSC_E_KMS_UNKNOWN_PSC, NULL);
	ok(s, ks_epoch(1, 3, 0, 300));
	struct collect c = members(s, 1);
	assert_int_equal(c.m[0].acked_epoch, 1);
	assert_int_equal(c.m[0].psc_epoch, 3); /* behind */
	ok(s, ks_ack(1, 5, 3));
	rejected(s, ks_ack(1, 5, 1), PSC_E_KMS_ACK_STALE, "older than the acknowledged 3");
	c = members(s, 1);
	assert_int_equal(c.m[0].acked_epoch, 3);
}

/* ---- destroy, re-create, floors ------------------------------------------ */

static void test_destroy_and_recreate(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	kms_epoch *ep = malloc(sizeof(*ep));
	begin(s);
	apply_ok_in(s, ks_create(1, "doomed", 5, 60, 0, 2, 100));
	apply_ok_in(s, ks_add(1, 5, 100));
	apply_ok_in(s, ks_add(1, 6, 100));
	apply_ok_in(s, ks_epoch(1, 4, 1000, 100));
	apply_ok_in(s, ks_epoch(1, 7, 1000, 200));
	commit(s);

	ok(s, ks_destroy(1, 999));
	kms_psc *p = psc_get(s, 1);
	assert_true(p->destroyed);
	assert_int_equal(p->destroyed_ms, 999);
	assert_int_equal(p->epoch, 7); /* the tombstone keeps the last epoch for Catchup */
	assert_int_equal(p->highest_epoch, 7);
	assert_int_equal(p->n_members, 0);
	assert_string_equal(p->name, "doomed");
	assert_int_equal(current(s, 1, ep), PSC_E_KMS_NO_EPOCH);
	assert_int_equal(members(s, 1).n, 0);
	assert_int_equal(pscs_of(s, 5).n, 0);
	kms_store_counts n;
	psc_err e;
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal(n.epoch_blobs, 0);
	assert_int_equal(n.memberships, 0);
	assert_int_equal(n.pscs_destroyed, 1);
	assert_int_equal(n.pscs_live, 0);
	kms_psc *q = malloc(sizeof(*q));
	assert_int_equal(kms_store_psc_by_name(s, "doomed", q, &e), PSC_E_KMS_UNKNOWN_PSC);
	uint64_t due;
	bool found;
	assert_int_equal(kms_store_next_refresh(s, &due, &found, &e), PSC_OK);
	assert_false(found);

	/* Everything on a tombstone is refused. */
	rejected(s, ks_destroy(1, 1000), PSC_E_KMS_PSC_DESTROYED, "was destroyed");
	rejected(s, ks_add(1, 5, 1000), PSC_E_KMS_PSC_DESTROYED, NULL);
	rejected(s, ks_remove(1, 5), PSC_E_KMS_PSC_DESTROYED, NULL);
	rejected(s, ks_epoch(1, 8, 0, 1000), PSC_E_KMS_PSC_DESTROYED, NULL);
	rejected(s, ks_ack(1, 5, 7), PSC_E_KMS_PSC_DESTROYED, NULL);
	rejected(s, ks_rewrap(1, 7, "k"), PSC_E_KMS_PSC_DESTROYED, NULL);

	/* The name is free again; the tombstone stays listed with include_destroyed. */
	ok(s, ks_create(2, "doomed", 5, 0, 0, 0, 1100));
	char names[256] = "";
	assert_int_equal(kms_store_psc_foreach(s, true, collect_names, names, &e), PSC_OK);
	assert_string_equal(names, "doomed(d) doomed ");

	/* Re-creating the same PSC id (a restore) starts without an epoch, and the
	 * epochs it had are never issued again. */
	ok(s, ks_create(1, "reborn", 5, 0, 0, 0, 1200));
	p = psc_get(s, 1);
	assert_false(p->destroyed);
	assert_int_equal(p->epoch, 0);
	assert_int_equal(p->highest_epoch, 7);
	assert_int_equal(p->n_labels, 0);
	rejected(s, ks_epoch(1, 1, 0, 1300), PSC_E_KMS_EPOCH_NOT_INCREASING,
		 "highest ever issued 7");
	rejected(s, ks_epoch(1, 7, 0, 1300), PSC_E_KMS_EPOCH_NOT_INCREASING, NULL);
	ok(s, ks_epoch(1, 8, 0, 1300));
	assert_int_equal(highest(s, 1), 8);

	/* EPOCH_FLOOR (restore from an older backup; the audit log knows more). */
	ok(s, ks_floor(1, 20));
	ok(s, ks_floor(1, 3)); /* never lowers */
	assert_int_equal(highest(s, 1), 20);
	assert_int_equal(psc_get(s, 1)->epoch, 8);
	rejected(s, ks_epoch(1, 20, 0, 1400), PSC_E_KMS_EPOCH_NOT_INCREASING, NULL);
	ok(s, ks_epoch(1, 21, 0, 1400));
	/* A floor for a PSC id never seen holds when it is created later. */
	ok(s, ks_floor(3, 50));
	assert_int_equal(highest(s, 3), 50);
	assert_int_equal(psc_get_rc(s, 3), PSC_E_KMS_UNKNOWN_PSC);
	ok(s, ks_create(3, "late", 5, 0, 0, 0, 1500));
	rejected(s, ks_epoch(3, 50, 0, 1500), PSC_E_KMS_EPOCH_NOT_INCREASING, NULL);
	ok(s, ks_epoch(3, 51, 0, 1500));
	assert_int_equal(highest(s, 4), 0);
	free(q);
	free(ep);
}

/* ---- refresh timers ------------------------------------------------------ */

struct due {
	unsigned n;
	uint8_t ids[8][16];
	uint64_t due[8];
};

static int collect_due(void *arg, const uint8_t id[16], uint64_t due_ms)
{
	struct due *d = arg;
	memcpy(d->ids[d->n], id, 16);
	d->due[d->n++] = due_ms;
	return d->n == 8;
}

static struct due due_at(kms_store *s, uint64_t now)
{
	struct due d;
	memset(&d, 0, sizeof(d));
	psc_err e;
	assert_int_equal(kms_store_refresh_due(s, now, collect_due, &d, &e), PSC_OK);
	return d;
}

static void test_refresh_due(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	begin(s);
	apply_ok_in(s, ks_create(1, "a", 5, 10, 0, 0, 0)); /* every 10 s */
	apply_ok_in(s, ks_create(2, "b", 5, 0, 0, 0, 0));  /* no timer */
	apply_ok_in(s, ks_create(3, "c", 5, 5, 0, 0, 0));  /* every 5 s */
	apply_ok_in(s, ks_create(4, "d", 5, 1, 0, 0, 0));  /* no epoch yet: nothing to refresh */
	apply_ok_in(s, ks_epoch(1, 1, 0, 1000));
	apply_ok_in(s, ks_epoch(2, 1, 0, 1000));
	apply_ok_in(s, ks_epoch(3, 1, 0, 2000));
	commit(s);
	uint64_t next;
	bool found;
	psc_err e;
	assert_int_equal(kms_store_next_refresh(s, &next, &found, &e), PSC_OK);
	assert_true(found);
	assert_int_equal(next, 7000);
	assert_int_equal(due_at(s, 6999).n, 0);
	struct due d = due_at(s, 7000);
	assert_int_equal(d.n, 1);
	assert_true(id_is(d.ids[0], 3));
	d = due_at(s, 20000);
	assert_int_equal(d.n, 2);
	assert_true(id_is(d.ids[0], 3)); /* most overdue first */
	assert_int_equal(d.due[0], 7000);
	assert_true(id_is(d.ids[1], 1));
	assert_int_equal(d.due[1], 11000);
	/* A rekey moves the PSC's timer. */
	ok(s, ks_epoch(3, 2, 0, 20000));
	d = due_at(s, 20000);
	assert_int_equal(d.n, 1);
	assert_true(id_is(d.ids[0], 1));
	assert_int_equal(kms_store_next_refresh(s, &next, &found, &e), PSC_OK);
	assert_int_equal(next, 11000);
	ok(s, ks_destroy(1, 21000));
	assert_int_equal(kms_store_next_refresh(s, &next, &found, &e), PSC_OK);
	assert_int_equal(next, 25000);
	/* A far-future time saturates instead of wrapping. */
	ok(s, ks_create(5, "e", 5, UINT32_MAX, 0, 0, 0));
	ok(s, ks_epoch(5, 1, 0, INT64_MAX - 5));
	d = due_at(s, UINT64_MAX);
	assert_int_equal(d.n, 2);
	assert_int_equal(d.due[1], INT64_MAX);
}

/* ---- batches ------------------------------------------------------------- */

static void test_transactions(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	psc_err e;
	kms_cmd c = ks_create(1, "t", 5, 0, 0, 0, 1);
	psc_err_clear(&e);
	assert_int_equal(kms_store_apply(s, &c, &e), PSC_E_KMS_TXN);
	assert_non_null(strstr(e.detail, "outside a batch"));
	assert_int_equal(kms_store_commit(s, 1, &e), PSC_E_KMS_TXN);
	assert_int_equal(kms_store_last_audit_seq(s), 0);

	begin(s);
	assert_int_equal(kms_store_begin(s, &e), PSC_E_KMS_TXN);
	apply_ok_in(s, c);
	apply_ok_in(s, ks_add(1, 5, 1));
	/* Queries inside a batch see its changes. */
	assert_int_equal(psc_get(s, 1)->n_members, 1);
	kms_store_rollback(s);
	assert_false(kms_store_in_txn(s));
	assert_int_equal(psc_get_rc(s, 1), PSC_E_KMS_UNKNOWN_PSC);
	assert_int_equal(kms_store_last_audit_seq(s), 0);
	kms_store_rollback(s); /* no-op without a batch */

	begin(s);
	apply_ok_in(s, c);
	assert_int_equal(kms_store_commit(s, 41, &e), PSC_OK);
	assert_int_equal(kms_store_last_audit_seq(s), 41);
	assert_int_equal(psc_get_rc(s, 1), PSC_OK);

	/* The audit seq never goes back: the batch stays open for a rollback. */
	begin(s);
	apply_ok_in(s, ks_add(1, 5, 2));
	psc_err_clear(&e);
	assert_int_equal(kms_store_commit(s, 40, &e), PSC_E_KMS_AUDIT_SEQ);
	assert_non_null(strstr(e.detail, "audit seq 40 below the last committed 41"));
	assert_true(kms_store_in_txn(s));
	kms_store_rollback(s);
	assert_int_equal(psc_get(s, 1)->n_members, 0);
	/* An equal seq is fine (a batch without audit records, e.g. an ack). */
	begin(s);
	apply_ok_in(s, ks_add(1, 5, 3));
	assert_int_equal(kms_store_commit(s, 41, &e), PSC_OK);

	/* A rejection in the middle of a batch undoes only itself. */
	begin(s);
	apply_ok_in(s, ks_add(1, 6, 4));
	psc_err_clear(&e);
	kms_cmd dup = ks_add(1, 6, 4);
	assert_int_equal(kms_store_apply(s, &dup, &e), PSC_E_KMS_ALREADY_MEMBER);
	apply_ok_in(s, ks_add(1, 7, 4));
	assert_int_equal(kms_store_commit(s, 50, &e), PSC_OK);
	assert_int_equal(members(s, 1).n, 3);

	/* An invalid command is refused before touching anything. */
	kms_cmd bad = ks_epoch(1, 0, 0, 1);
	begin(s);
	assert_int_equal(kms_store_apply(s, &bad, &e), PSC_E_KMS_CMD_FIELD);
	kms_store_rollback(s);

	/* Closing with an open batch discards it. */
	begin(s);
	apply_ok_in(s, ks_add(1, 8, 5));
	kms_store_close(&f->s);
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
	assert_int_equal(members(f->s, 1).n, 3);
	assert_int_equal(kms_store_last_audit_seq(f->s), 50);
}

/* ---- determinism and durability ------------------------------------------ */

/* A history touching every command type, with some rejections on the way. */
static void script(kms_store *s)
{
	psc_err e;
	kms_cmd bad[] = {ks_add(1, 2, 1), ks_epoch(2, 1, 0, 1), ks_ban(77, true, 1)};
	begin(s);
	for (unsigned n = 1; n <= 6; n++)
		apply_ok_in(s, ks_peer(n, 1000 + n));
	apply_ok_in(s, ks_ban(3, true, 1100));
	commit(s);
	begin(s);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_not_equal(kms_store_apply(s, &bad[i], &e), PSC_OK);
	apply_ok_in(s, ks_create(1, "one", 1, 60, 0, 4, 2000));
	apply_ok_in(s, ks_create(2, "two", 2, 0, 5, 1, 2000));
	for (unsigned n = 1; n <= 4; n++)
		apply_ok_in(s, ks_add(1, n, 2000 + n));
	apply_ok_in(s, ks_add(2, 2, 2100));
	apply_ok_in(s, ks_epoch(1, 1, 0, 2200));
	apply_ok_in(s, ks_epoch(2, 1, 0, 2200));
	commit(s);
	begin(s);
	apply_ok_in(s, ks_ack(1, 1, 1));
	apply_ok_in(s, ks_ack(1, 2, 1));
	apply_ok_in(s, ks_remove(1, 4));
	apply_ok_in(s, ks_epoch(1, 2, 0, 3000));
	apply_ok_in(s, ks_epoch(1, 3, 5000, 4000));
	apply_ok_in(s, ks_rewrap(1, 3, "kek-2"));
	apply_ok_in(s, ks_destroy(2, 5000));
	apply_ok_in(s, ks_floor(9, 12));
	apply_ok_in(s, ks_create(2, "two-again", 2, 30, 0, 0, 6000));
	apply_ok_in(s, ks_epoch(2, 2, 0, 6000));
	commit(s);
}

struct psc_list {
	kms_psc p[4];
	size_t n;
};

static int psc_into(void *arg, const kms_psc *p)
{
	struct psc_list *l = arg;
	assert_true(l->n < 4);
	memcpy(&l->p[l->n++], p, sizeof(*p));
	return 0;
}

/* Text dump of the data tables through SQLite itself (after close). */
static char *dump_tables(const char *path)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	static const char *const q[] = {
	    "SELECT 'peers', quote(node_id), quote(cert_der), quote(cert_sha256), subject, "
	    "endpoint, quote(transport_key), wrap_alg, quote(suites), banned, first_seen_ms, "
	    "updated_ms, banned_ms FROM peers ORDER BY node_id",
	    "SELECT 'pscs', quote(psc_id), name, quote(owner), quote(labels), flags, suite, "
	    "refresh_s, max_members, created_ms, epoch, last_rekey_ms, quote(due_ms), destroyed, "
	    "destroyed_ms FROM pscs ORDER BY psc_id",
	    "SELECT 'members', quote(psc_id), quote(node_id), added_ms, acked_epoch FROM members "
	    "ORDER BY psc_id, node_id",
	    "SELECT 'epochs', quote(psc_id), epoch, kek_id, quote(wrapped), created_ms, "
	    "prev_grace_ms FROM epochs ORDER BY psc_id, epoch",
	    "SELECT 'hwm', quote(psc_id), epoch FROM epoch_hwm ORDER BY psc_id",
	};
	size_t cap = 1 << 20, len = 0;
	char *out = calloc(1, cap);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		sqlite3_stmt *st;
		assert_int_equal(sqlite3_prepare_v2(db, q[i], -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(st); c++) {
				const char *t = (const char *)sqlite3_column_text(st, c);
				len +=
				    (size_t)snprintf(out + len, cap - len, "%s|", t ? t : "NULL");
				assert_true(len < cap);
			}
			out[len++] = '\n';
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return out;
}

static void test_determinism(void **state)
{
	struct fx *a = *state;
	struct fx *b = NULL;
	assert_int_equal(setup((void **)&b), 0);
	script(a->s);
	script(b->s);

	uint8_t da[32], db[32];
	digest(a->s, da);
	digest(b->s, db);
	assert_memory_equal(da, db, 32);

	/* Same answers to the queries. */
	struct psc_list *pa = calloc(1, sizeof(*pa)), *pb = calloc(1, sizeof(*pb));
	psc_err e;
	assert_int_equal(kms_store_psc_foreach(a->s, true, psc_into, pa, &e), PSC_OK);
	assert_int_equal(kms_store_psc_foreach(b->s, true, psc_into, pb, &e), PSC_OK);
	assert_int_equal(pa->n, 2);
	assert_memory_equal(pa, pb, sizeof(*pa));
	for (unsigned id = 1; id <= 2; id++) {
		kms_psc *x = malloc(sizeof(*x));
		memcpy(x, psc_get(a->s, id), sizeof(*x));
		assert_memory_equal(x, psc_get(b->s, id), sizeof(*x));
		free(x);
		struct collect ma = members(a->s, id), mb = members(b->s, id);
		assert_memory_equal(&ma, &mb, sizeof(ma));
		kms_epoch *ea = calloc(1, sizeof(*ea)), *eb = calloc(1, sizeof(*eb));
		assert_int_equal(current(a->s, id, ea), PSC_OK);
		assert_int_equal(current(b->s, id, eb), PSC_OK);
		assert_memory_equal(ea, eb, sizeof(*ea));
		free(ea);
		free(eb);
	}
	kms_store_counts ca, cb;
	assert_int_equal(kms_store_counts_get(a->s, &ca, &e), PSC_OK);
	assert_int_equal(kms_store_counts_get(b->s, &cb, &e), PSC_OK);
	assert_memory_equal(&ca, &cb, sizeof(ca));
	assert_int_equal(ca.peers, 6);
	assert_int_equal(ca.pscs_live, 2);

	/* Same bytes in every data table, read by SQLite itself after close. */
	kms_store_close(&a->s);
	kms_store_close(&b->s);
	char *ta = dump_tables(a->path), *tb = dump_tables(b->path);
	assert_true(strlen(ta) > 1000);
	assert_string_equal(ta, tb);
	free(ta);
	free(tb);
	/* And through the sqlite3 CLI's .dump where it is installed. */
	if (access("/usr/bin/sqlite3", X_OK) == 0) {
		char *outs[2] = {NULL, NULL};
		const char *paths[2] = {a->path, b->path};
		for (int i = 0; i < 2; i++) {
			char *argv[] = {"/usr/bin/sqlite3", (char *)paths[i],
					".dump peers pscs members epochs epoch_hwm", NULL};
			assert_int_equal(pt_run(argv, &outs[i], 30000), 0);
		}
		assert_non_null(strstr(outs[0], "INSERT INTO epochs"));
		assert_string_equal(outs[0], outs[1]);
		free(outs[0]);
		free(outs[1]);
	}
	free(pa);
	free(pb);
	teardown((void **)&b);
	psc_err_clear(&e);
	assert_int_equal(kms_store_open(&a->s, a->path, &e), PSC_OK);
}

static void test_reopen_keeps_everything(void **state)
{
	struct fx *f = *state;
	script(f->s);
	uint8_t before[32], after[32];
	digest(f->s, before);
	uint64_t seq = kms_store_last_audit_seq(f->s);
	assert_int_equal(seq, 3);
	kms_store_close(&f->s);
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
	digest(f->s, after);
	assert_memory_equal(before, after, 32);
	assert_int_equal(kms_store_last_audit_seq(f->s), seq);
	assert_int_equal(psc_get(f->s, 1)->epoch, 3);
	assert_int_equal(highest(f->s, 9), 12);
	/* WAL journal, full sync, foreign keys: what the design asks for. */
	kms_store_close(&f->s);
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
}

static void test_backup(void **state)
{
	struct fx *f = *state;
	script(f->s);
	char copy[4300];
	snprintf(copy, sizeof(copy), "%s/backup.db", f->dir);
	psc_err e;
	psc_err_clear(&e);
	begin(f->s);
	assert_int_equal(kms_store_backup(f->s, copy, &e), PSC_E_KMS_TXN);
	apply_ok_in(f->s, ks_floor(77, 7)); /* uncommitted: must not be in the copy */
	kms_store_rollback(f->s);
	if (kms_store_backup(f->s, copy, &e) != PSC_OK)
		fail_msg("backup: %s", psc_err_text(&e));
	struct stat st;
	assert_int_equal(stat(copy, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char side[4400];
	snprintf(side, sizeof(side), "%s-wal", copy);
	assert_int_not_equal(access(side, F_OK), 0); /* one self-contained file */

	/* Never overwrites. */
	psc_err_clear(&e);
	assert_int_equal(kms_store_backup(f->s, copy, &e), PSC_E_KMS_DB_OPEN);
	assert_non_null(strstr(e.detail, "File exists"));

	/* The copy opens as a store with the same state and audit seq, while the
	 * original stays open and usable. */
	uint8_t a[32], b[32];
	digest(f->s, a);
	kms_store *c = NULL;
	if (kms_store_open(&c, copy, &e) != PSC_OK)
		fail_msg("open backup: %s", psc_err_text(&e));
	digest(c, b);
	assert_memory_equal(a, b, 32);
	assert_int_equal(kms_store_last_audit_seq(c), kms_store_last_audit_seq(f->s));
	assert_int_equal(highest(c, 77), 0);
	kms_store_close(&c);
	ok(f->s, ks_floor(77, 7));
}

/* ---- bad files ----------------------------------------------------------- */

static void expect_open_fails(const char *path, psc_rc want, const char *needle)
{
	kms_store *s = NULL;
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_store_open(&s, path, &e);
	if (rc != want)
		fail_msg("open %s: want %s, got %s (%s)", path, psc_rc_name(want), psc_rc_name(rc),
			 psc_err_text(&e));
	assert_null(s);
	if (!strstr(e.detail, path))
		fail_msg("path not named in '%s'", e.detail);
	if (needle && !strstr(e.detail, needle))
		fail_msg("'%s' not in '%s'", needle, e.detail);
}

static void set_meta(const char *path, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void test_newer_schema_refused(void **state)
{
	struct fx *f = *state;
	kms_store_close(&f->s);
	set_meta(f->path, "UPDATE meta SET value = 2 WHERE key = 'schema_version'");
	expect_open_fails(f->path, PSC_E_KMS_SCHEMA_NEWER,
			  "schema version 2 was written by a newer psc-kms (this one reads up to "
			  "version 1)");
	set_meta(f->path, "UPDATE meta SET value = 1 WHERE key = 'schema_version'");
	psc_err e;
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	fclose(fp);
}

static void test_bad_files(void **state)
{
	struct fx *f = *state;
	char path[4300];

	/* Not a database at all. */
	snprintf(path, sizeof(path), "%s/garbage.db", f->dir);
	char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)("not a database "[i % 15]);
	write_file(path, junk, sizeof(junk));
	expect_open_fails(path, PSC_E_KMS_DB_CORRUPT, "restore it from a backup");

	/* Some other application's SQLite database. */
	snprintf(path, sizeof(path), "%s/foreign.db", f->dir);
	set_meta(path, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
	expect_open_fails(path, PSC_E_KMS_DB_CORRUPT, "not a psc-kms state database");

	/* Our database, damaged: the second half is overwritten. */
	script(f->s);
	kms_store_close(&f->s);
	size_t len = 0;
	uint8_t *db = pt_read_file(f->path, &len);
	assert_non_null(db);
	assert_true(len > 8192);
	memset(db + len / 2, 0xff, len - len / 2);
	for (size_t i = 100; i < 4096; i++) /* and the page headers after the file header */
		db[i] ^= 0x5a;
	snprintf(path, sizeof(path), "%s/damaged.db", f->dir);
	write_file(path, db, len);
	free(db);
	expect_open_fails(path, PSC_E_KMS_DB_CORRUPT, NULL);

	/* Truncated to a partial page. */
	snprintf(path, sizeof(path), "%s/truncated.db", f->dir);
	db = pt_read_file(f->path, &len);
	write_file(path, db, 1000);
	free(db);
	expect_open_fails(path, PSC_E_KMS_DB_CORRUPT, NULL);

	/* Unwritable places. */
	snprintf(path, sizeof(path), "%s/no/such/dir/state.db", f->dir);
	expect_open_fails(path, PSC_E_KMS_DB_OPEN, "service user can write");
	snprintf(path, sizeof(path), "%s", f->dir);
	expect_open_fails(path, PSC_E_KMS_DB_OPEN, NULL);
	if (geteuid() != 0) {
		/* Root ignores file modes; everyone else gets a read-only file refused. */
		snprintf(path, sizeof(path), "%s/ro.db", f->dir);
		psc_err e;
		kms_store *s = NULL;
		assert_int_equal(kms_store_open(&s, path, &e), PSC_OK);
		kms_store_close(&s);
		assert_int_equal(chmod(path, 0400), 0);
		expect_open_fails(path, PSC_E_KMS_DB_OPEN, "read-only");
	}
	psc_err e;
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
}

/*
 * A full disk: RLIMIT_FSIZE makes every write past the limit fail with EFBIG,
 * as ENOSPC would. The failing call reports an I/O error naming the file and
 * the next step; the batch is gone, the committed state is intact, and once
 * space is back the store works without a restart.
 */
static void test_disk_full(void **state)
{
	struct fx *f = *state;
	kms_store *s = f->s;
	script(s);
	uint8_t before[32], after[32];
	struct rlimit old;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	struct rlimit lim = {.rlim_cur = (rlim_t)st.st_size + 8192, .rlim_max = old.rlim_max};
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_store_begin(s, &e);
	for (unsigned n = 100; rc == PSC_OK && n < 400; n++) {
		kms_cmd c = ks_max(KMS_CMD_PEER_UPSERT);
		ks_id(c.peer_upsert.node_id, n);
		rc = kms_store_apply(s, &c, &e);
		if (rc == PSC_OK && n % 20 == 0) /* commit now and then: WAL writes */
			rc = kms_store_commit(s, kms_store_last_audit_seq(s) + 1, &e);
		if (rc == PSC_OK && n % 20 == 0)
			rc = kms_store_begin(s, &e);
	}
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, prev);
	if (rc != PSC_E_KMS_DB_IO)
		fail_msg("want PSC_E_KMS_DB_IO, got %s (%s)", psc_rc_name(rc), psc_err_text(&e));
	assert_non_null(strstr(e.detail, f->path));
	assert_non_null(strstr(e.detail, "check free space"));
	print_message("full disk reported as: %s\n", e.detail);
	kms_store_rollback(s);
	assert_false(kms_store_in_txn(s));

	/* What the store shows now is what is on disk: the batches committed before
	 * the disk filled, nothing of the failed one. */
	uint64_t seq = kms_store_last_audit_seq(s);
	assert_true(seq >= 3);
	digest(s, after);
	kms_store_counts n;
	assert_int_equal(kms_store_counts_get(s, &n, &e), PSC_OK);
	assert_int_equal((n.peers - 6) % 20, 0); /* whole batches of 20 only */
	kms_store_close(&f->s);
	assert_int_equal(kms_store_open(&f->s, f->path, &e), PSC_OK);
	digest(f->s, before);
	assert_memory_equal(before, after, 32);
	assert_int_equal(kms_store_last_audit_seq(f->s), seq);
	/* And it takes changes again. */
	ok(f->s, ks_floor(500, 1));
	assert_int_equal(highest(f->s, 500), 1);
}

static void test_second_process_locked_out(void **state)
{
	struct fx *f = *state;
	/* The fixture's store holds the lock; a second open (as another psc-kmsd
	 * would) is refused at once instead of corrupting or waiting. */
	expect_open_fails(f->path, PSC_E_KMS_DB_LOCKED, "another psc-kmsd");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_peers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_psc_create_and_lookup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_members, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_epochs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_destroy_and_recreate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_due, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_determinism, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_process_locked_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
