/*
 * psc_store and psc_replay on their own: at most two epochs per PSC, grace
 * expiry by the caller's clock, tombstones against resurrection, secrets
 * wiped, and a replay cache that forgets only what freshness already rejects.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "psc_replay.h"
#include "psc_store.h"

static proto_material mat(uint8_t idb, uint64_t epoch, uint32_t grace)
{
	proto_material m;
	memset(&m, 0, sizeof(m));
	memset(m.psc_id, idb, sizeof(m.psc_id));
	m.epoch = epoch;
	m.name = (proto_bytes){(const uint8_t *)"room", 4};
	m.grace_ms = grace;
	m.members_full = 1;
	return m;
}

static void secret(uint8_t s[32], uint8_t v)
{
	memset(s, v, 32);
}

static void test_epochs_and_grace(void **state)
{
	(void)state;
	psc_store *s = NULL;
	assert_int_equal(psc_store_new(&s), PSC_OK);
	uint8_t k[32], out[32], id[16];
	uint64_t ep = 0;
	memset(id, 1, 16);
	proto_material m = mat(1, 1, 0);
	secret(k, 0x11);
	assert_int_equal(psc_store_apply(s, &m, k, 1000), PSC_OK);
	m = mat(1, 2, 500);
	secret(k, 0x22);
	assert_int_equal(psc_store_apply(s, &m, k, 1000), PSC_OK);
	assert_int_equal(psc_store_secret(s, id, 1, 1499, &ep, out), PSC_OK);
	assert_int_equal(ep, 1);
	assert_int_equal(out[0], 0x11);
	assert_int_equal(psc_store_next_expiry(s), 1500);
	assert_int_equal(psc_store_secret(s, id, 1, 1500, &ep, out), PSC_E_PEER_NO_EPOCH);
	assert_int_equal(psc_store_next_expiry(s), -1);
	assert_int_equal(psc_store_secret(s, id, 0, 1500, &ep, out), PSC_OK);
	assert_int_equal(ep, 2);
	assert_int_equal(out[0], 0x22);

	/* Three quick rekeys: only current and the one before remain. */
	m = mat(1, 3, 500);
	secret(k, 0x33);
	assert_int_equal(psc_store_apply(s, &m, k, 2000), PSC_OK);
	m = mat(1, 4, 500);
	secret(k, 0x44);
	assert_int_equal(psc_store_apply(s, &m, k, 2001), PSC_OK);
	assert_int_equal(psc_store_secret(s, id, 2, 2002, NULL, out), PSC_E_PEER_NO_EPOCH);
	assert_int_equal(psc_store_secret(s, id, 3, 2002, NULL, out), PSC_OK);
	assert_int_equal(out[0], 0x33);

	/* Removal rekey: grace 0 drops the previous epoch at once. */
	m = mat(1, 5, 0);
	secret(k, 0x55);
	assert_int_equal(psc_store_apply(s, &m, k, 2003), PSC_OK);
	assert_int_equal(psc_store_secret(s, id, 4, 2003, NULL, out), PSC_E_PEER_NO_EPOCH);
	assert_true(psc_store_is_stale(s, id, 5));
	assert_false(psc_store_is_stale(s, id, 6));
	assert_int_equal(psc_store_held_epoch(s, id), 5);
	psc_store_free(&s);
	assert_null(s);
}

static void test_tombstones(void **state)
{
	(void)state;
	psc_store *s = NULL;
	assert_int_equal(psc_store_new(&s), PSC_OK);
	uint8_t k[32], id[16], out[32];
	secret(k, 0x77);
	memset(id, 9, 16);
	proto_material m = mat(9, 4, 100);
	assert_int_equal(psc_store_apply(s, &m, k, 0), PSC_OK);
	assert_int_equal(psc_store_remove(s, id, 4), 1);
	assert_int_equal(psc_store_count(s), 0);
	assert_int_equal(psc_store_secret(s, id, 0, 0, NULL, out), PSC_E_PEER_UNKNOWN_PSC);
	assert_true(psc_store_is_stale(s, id, 4));
	assert_false(psc_store_is_stale(s, id, 5)); /* a re-join gets a newer epoch */
	assert_int_equal(psc_store_held_epoch(s, id), 4);
	/* Removing an unknown PSC still remembers it. */
	uint8_t id2[16];
	memset(id2, 8, 16);
	assert_int_equal(psc_store_remove(s, id2, 7), 0);
	assert_true(psc_store_is_stale(s, id2, 7));
	psc_store_free(&s);
}

static void test_members(void **state)
{
	(void)state;
	psc_store *s = NULL;
	assert_int_equal(psc_store_new(&s), PSC_OK);
	uint8_t k[32];
	secret(k, 1);
	proto_member ms[2];
	memset(ms, 0, sizeof(ms));
	ms[0].node_id[0] = 1;
	ms[0].endpoint = (proto_bytes){(const uint8_t *)"tcp://a:1", 9};
	ms[1].node_id[0] = 2;
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	/* Encode and decode a material so the member list is a raw wire vector. */
	psc_body b = {.code = PSC_MSG_JOIN_ANS};
	b.u.join_ans.material = mat(3, 1, 0);
	b.u.join_ans.material.wrap_alg = 3;
	b.u.join_ans.material.wrapped = (proto_bytes){(const uint8_t *)"x", 1};
	b.u.join_ans.material.members.items = ms;
	b.u.join_ans.material.members.n = 2;
	assert_int_equal(proto_body_encode(&b, &enc, &enc_len, NULL), PSC_OK);
	psc_body d;
	assert_int_equal(proto_body_decode(PSC_MSG_JOIN_ANS, enc, enc_len, &d, NULL), PSC_OK);
	assert_int_equal(psc_store_apply(s, &d.u.join_ans.material, k, 0), PSC_OK);
	const psc_entry *e = psc_store_at(s, 0);
	assert_non_null(e);
	assert_int_equal(e->n_members, 2);
	assert_string_equal(e->members[0].endpoint, "tcp://a:1");
	assert_string_equal(e->members[1].endpoint, "");
	/* members_full = 0: the list stays. */
	proto_material m2 = mat(3, 2, 0);
	m2.members_full = 0;
	assert_int_equal(psc_store_apply(s, &m2, k, 0), PSC_OK);
	assert_int_equal(psc_store_at(s, 0)->n_members, 2);
	free(enc);
	psc_store_free(&s);
}

static void test_replay_cache(void **state)
{
	(void)state;
	psc_replay *r = NULL;
	assert_int_equal(psc_replay_new(&r), PSC_OK);
	const uint64_t W = 300000, now = 10000000;
	assert_int_equal(psc_replay_check(r, 42, now, now, W), PSC_OK);
	assert_int_equal(psc_replay_check(r, 42, now, now + 1, W), PSC_E_PEER_REPLAYED);
	assert_int_equal(psc_replay_check(r, 43, now, now + 1, W), PSC_OK);
	/* Full of live entries: refuse rather than forget. */
	for (uint64_t i = 0; i < PSC_REPLAY_MAX - 2; i++)
		assert_int_equal(psc_replay_check(r, 1000 + i, now, now, W), PSC_OK);
	assert_int_equal(psc_replay_check(r, 7, now, now, W), PSC_E_TOO_LARGE);
	/* Once those left the window they can go, and new ids are taken again. */
	assert_int_equal(psc_replay_check(r, 7, now + W + 2, now + W + 2, W), PSC_OK);
	assert_int_equal(psc_replay_check(r, 7, now + W + 2, now + W + 3, W), PSC_E_PEER_REPLAYED);
	psc_replay_free(&r);
	assert_null(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_epochs_and_grace),
	    cmocka_unit_test(test_tombstones),
	    cmocka_unit_test(test_members),
	    cmocka_unit_test(test_replay_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
