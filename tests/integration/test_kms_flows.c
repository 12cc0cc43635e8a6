/*
 * Every PSC flow between a real psc-kmsd (SoftHSM token, test CA, CURVE on
 * loopback) and peers, asserting the outcome on every party; then peers that
 * misbehave; then psc-audit verifies the log the run produced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "proto_cert.h"
#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;
static rawpeer *p1, *p2, *p3, *p4;

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmsflows", NULL, NULL) != 0 || kmsfx_start(&fx) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	(void)kmsfx_stop(&fx);
	rp_free(&p1); /* zmq_ctx_term waits for every socket */
	rp_free(&p2);
	rp_free(&p3);
	rp_free(&p4);
	kmsfx_cleanup(&fx);
	return 0;
}

static rawpeer *peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	return p;
}

/* Initialize and require success. */
static rawpeer *joined(const char *name)
{
	rawpeer *p = peer(name);
	uint64_t tx = rp_initialize(p, 0, NULL, NULL);
	assert_true(rp_wait_answer(p, tx, WAIT));
	if (p->is_error)
		fail_msg("%s Initialize refused: %u/%u %.*s", name, p->err.error_code,
			 p->err.psc_reason, (int)p->err.text_len, (const char *)p->err.text);
	assert_int_equal(p->m.code, PSC_MSG_INITIALIZE_ANS);
	return p;
}

static void expect_error(rawpeer *p, uint64_t tx, uint16_t code, uint16_t reason)
{
	assert_true(rp_wait_answer(p, tx, WAIT));
	if (!p->is_error || p->err.error_code != code || p->err.psc_reason != reason)
		fail_msg("%s: expected error %u/%u, got %s %u/%u %.*s", p->name, code, reason,
			 p->is_error ? "error" : "answer", p->err.error_code, p->err.psc_reason,
			 (int)p->err.text_len, (const char *)p->err.text);
}

static uint64_t establish(rawpeer *owner, const char *name, rawpeer **members, size_t n,
			  uint8_t psc_id[16], uint8_t secret[32])
{
	proto_node_id_t ids[8];
	for (size_t i = 0; i < n; i++)
		memcpy(ids[i], members[i]->node_id, 16);
	psc_body b = {.code = PSC_MSG_ESTABLISH_REQ};
	b.u.establish_req.timestamp = rp_now_ms();
	b.u.establish_req.params.name = (proto_bytes){(const uint8_t *)name, strlen(name)};
	b.u.establish_req.params.members.items = ids;
	b.u.establish_req.params.members.n = n;
	uint64_t tx = rp_send(owner, &b, false);
	assert_true(rp_wait_answer(owner, tx, WAIT));
	if (owner->is_error)
		fail_msg("establish %s: %u/%u %.*s", name, owner->err.error_code,
			 owner->err.psc_reason, (int)owner->err.text_len,
			 (const char *)owner->err.text);
	const proto_material *m = &owner->b.u.establish_ans.material;
	memcpy(psc_id, m->psc_id, 16);
	assert_true(rp_unwrap(owner, m, secret));
	return m->epoch;
}

/* The Refresh of epoch `want` for psc_id at `p` (older ones still queued are
 * acknowledged and skipped), unwrapped; returns its epoch. */
static uint64_t refresh_at(rawpeer *p, const uint8_t psc_id[16], uint8_t reason, uint64_t want,
			   uint8_t secret[32], uint32_t *grace)
{
	for (;;) {
		if (!rp_wait_request(p, PSC_MSG_REFRESH_REQ, WAIT))
			fail_msg("%s: no Refresh of epoch %llu arrived", p->name,
				 (unsigned long long)want);
		const psc_refresh_req *q = &p->b.u.refresh_req;
		if (memcmp(q->psc_id, psc_id, 16) != 0 || q->epoch < want)
			continue;
		if (q->epoch != want)
			fail_msg("%s: Refresh of epoch %llu, expected %llu", p->name,
				 (unsigned long long)q->epoch, (unsigned long long)want);
		assert_int_equal(q->reason, reason);
		if (secret)
			assert_true(rp_unwrap(p, &q->material, secret));
		if (grace)
			*grace = q->material.grace_ms;
		uint64_t epoch = q->epoch;
		psc_body ack = {.code = PSC_MSG_REFRESH_ANS};
		memcpy(ack.u.refresh_ans.psc_id, psc_id, 16);
		ack.u.refresh_ans.epoch = epoch;
		rp_answer(p, p->m.transaction_id, &ack);
		return epoch;
	}
}

static uint8_t room_a[16], secret_a[32];

static void establish_gives_every_initial_member_the_same_secret(void **state)
{
	(void)state;
	p1 = joined("peer1");
	p2 = joined("peer2");
	p3 = peer("peer3"); /* named at establish before it ever initialised */
	rawpeer *members[] = {p2, p3};
	assert_int_equal(establish(p1, "room-a", members, 2, room_a, secret_a), 1);
	/* pending: peer3 has not initialised */
	assert_int_equal(p1->b.u.establish_ans.pending.n, 1);
	assert_int_equal(p1->b.u.establish_ans.material.members.n, 3);
	uint8_t s2[32];
	assert_int_equal(refresh_at(p2, room_a, PSC_REFRESH_ESTABLISH, 1, s2, NULL), 1);
	assert_memory_equal(s2, secret_a, 32);
	/* peer3's first Initialize brings its membership and the same secret */
	uint64_t tx = rp_initialize(p3, 0, NULL, NULL);
	assert_true(rp_wait_answer(p3, tx, WAIT));
	assert_false(p3->is_error);
	assert_int_equal(p3->b.u.initialize_ans.memberships.n, 1);
	proto_iter it;
	proto_material m;
	proto_iter_init(&it, p3->b.u.initialize_ans.memberships.raw,
			p3->b.u.initialize_ans.memberships.raw_len);
	assert_true(proto_next_material(&it, &m));
	assert_memory_equal(m.psc_id, room_a, 16);
	uint8_t s3[32];
	assert_true(rp_unwrap(p3, &m, s3));
	assert_memory_equal(s3, secret_a, 32);
	/* a second PSC with the same name is refused */
	uint64_t tx2;
	psc_body b = {.code = PSC_MSG_ESTABLISH_REQ};
	b.u.establish_req.timestamp = rp_now_ms();
	b.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"room-a", 6};
	tx2 = rp_send(p2, &b, false);
	expect_error(p2, tx2, PSC_RERR_FORBIDDEN, PSC_REASON_NAME_TAKEN);
}

static void lookup_and_join_rekey_for_backward_secrecy(void **state)
{
	(void)state;
	p4 = joined("peer4");
	psc_body b = {.code = PSC_MSG_LOOKUP_REQ};
	b.u.lookup_req.timestamp = rp_now_ms();
	b.u.lookup_req.name = (proto_bytes){(const uint8_t *)"room-a", 6};
	uint64_t tx = rp_send(p4, &b, false);
	assert_true(rp_wait_answer(p4, tx, WAIT));
	assert_false(p4->is_error);
	assert_memory_equal(p4->b.u.lookup_ans.psc_id, room_a, 16);
	assert_int_equal(p4->b.u.lookup_ans.member_count, 3);
	tx = rp_psc_req(p4, PSC_MSG_JOIN_REQ, room_a);
	assert_true(rp_wait_answer(p4, tx, WAIT));
	assert_false(p4->is_error);
	const proto_material *m = &p4->b.u.join_ans.material;
	assert_int_equal(m->epoch, 2);
	assert_int_equal(m->members.n, 4);
	uint8_t s4[32], s1[32], s2[32];
	assert_true(rp_unwrap(p4, m, s4));
	assert_memory_not_equal(s4, secret_a, 32); /* the joiner never sees epoch 1 */
	uint32_t grace = 0;
	assert_int_equal(refresh_at(p1, room_a, PSC_REFRESH_JOIN, 2, s1, &grace), 2);
	assert_int_equal(grace, 2000); /* join rekey: the old epoch stays valid a while */
	assert_int_equal(refresh_at(p2, room_a, PSC_REFRESH_JOIN, 2, s2, NULL), 2);
	assert_memory_equal(s1, s4, 32);
	assert_memory_equal(s2, s4, 32);
	memcpy(secret_a, s4, 32);
	/* joining twice is refused */
	tx = rp_psc_req(p4, PSC_MSG_JOIN_REQ, room_a);
	expect_error(p4, tx, PSC_RERR_FORBIDDEN, PSC_REASON_ALREADY_MEMBER);
}

static void forbidden_joiner_is_denied_and_lookup_hides_the_psc(void **state)
{
	(void)state;
	rawpeer *p6 = joined("peer6");
	uint64_t tx = rp_psc_req(p6, PSC_MSG_JOIN_REQ, room_a);
	expect_error(p6, tx, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED);
	psc_body b = {.code = PSC_MSG_LOOKUP_REQ};
	b.u.lookup_req.timestamp = rp_now_ms();
	b.u.lookup_req.name = (proto_bytes){(const uint8_t *)"room-a", 6};
	tx = rp_send(p6, &b, false);
	expect_error(p6, tx, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC);
	uint8_t nowhere[16] = {9};
	tx = rp_psc_req(p6, PSC_MSG_JOIN_REQ, nowhere);
	expect_error(p6, tx, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC);
	rp_free(&p6);
}

/* ask_owner: the owner's answer decides; silence denies. */
static void ask_owner_allow_deny_and_timeout(void **state)
{
	(void)state;
	rawpeer *p5 = joined("peer5");
	uint8_t room_b[16], room_c[16], sb[32], sc[32];
	assert_int_equal(establish(p1, "room-b", NULL, 0, room_b, sb), 1);
	assert_int_equal(establish(p1, "room-c", NULL, 0, room_c, sc), 1);
	/* allow */
	uint64_t tx = rp_psc_req(p5, PSC_MSG_JOIN_REQ, room_a);
	assert_true(rp_wait_request(p1, PSC_MSG_QUERY_REQ, WAIT));
	assert_memory_equal(p1->b.u.query_req.requester, p5->node_id, 16);
	assert_non_null(memmem(p1->b.u.query_req.requester_subject.p,
			       p1->b.u.query_req.requester_subject.len, "CN=peer5", 8));
	psc_body yes = {.code = PSC_MSG_QUERY_ANS};
	yes.u.decision_ans.accept = 1;
	rp_answer(p1, p1->m.transaction_id, &yes);
	assert_true(rp_wait_answer(p5, tx, WAIT));
	assert_false(p5->is_error);
	assert_int_equal(p5->b.u.join_ans.material.epoch, 3);
	uint8_t s5[32], s1[32];
	assert_true(rp_unwrap(p5, &p5->b.u.join_ans.material, s5));
	assert_int_equal(refresh_at(p1, room_a, PSC_REFRESH_JOIN, 3, s1, NULL), 3);
	assert_memory_equal(s1, s5, 32);
	/* deny */
	tx = rp_psc_req(p5, PSC_MSG_JOIN_REQ, room_b);
	assert_true(rp_wait_request(p1, PSC_MSG_QUERY_REQ, WAIT));
	psc_body no = {.code = PSC_MSG_QUERY_ANS};
	rp_answer(p1, p1->m.transaction_id, &no);
	expect_error(p5, tx, PSC_RERR_FORBIDDEN, PSC_REASON_OWNER_DENIED);
	/* timeout: the owner stays silent */
	tx = rp_psc_req(p5, PSC_MSG_JOIN_REQ, room_c);
	assert_true(rp_wait_request(p1, PSC_MSG_QUERY_REQ, WAIT));
	expect_error(p5, tx, PSC_RERR_REQUEST_TIMEOUT, PSC_REASON_OWNER_TIMEOUT);
	rp_free(&p5);
	/* the others in room-a keep up */
	uint8_t s2[32], s3[32], s4[32];
	assert_int_equal(refresh_at(p2, room_a, PSC_REFRESH_JOIN, 3, s2, NULL), 3);
	assert_int_equal(refresh_at(p3, room_a, PSC_REFRESH_JOIN, 3, s3, NULL), 3);
	assert_int_equal(refresh_at(p4, room_a, PSC_REFRESH_JOIN, 3, s4, NULL), 3);
	memcpy(secret_a, s1, 32);
}

static void invite_accept_and_decline(void **state)
{
	(void)state;
	rawpeer *r1 = joined("rsa1"), *r2 = joined("rsa2");
	psc_body b = {.code = PSC_MSG_INVITE_INIT_REQ};
	b.u.invite_init_req.timestamp = rp_now_ms();
	memcpy(b.u.invite_init_req.psc_id, room_a, 16);
	memcpy(b.u.invite_init_req.invitee, r1->node_id, 16);
	uint64_t tx = rp_send(p1, &b, false);
	assert_true(rp_wait_request(r1, PSC_MSG_INVITE_REQ, WAIT));
	assert_memory_equal(r1->b.u.invite_req.inviter, p1->node_id, 16);
	psc_body yes = {.code = PSC_MSG_INVITE_ANS};
	yes.u.decision_ans.accept = 1;
	rp_answer(r1, r1->m.transaction_id, &yes);
	uint8_t sr[32], s1[32];
	/* the owner learns the outcome (its epoch-4 Refresh may come first) */
	bool owner_refreshed = false;
	for (;;) {
		assert_true(rp_recv(p1, WAIT));
		if (p1->m.transaction_id == tx)
			break;
		if (p1->m.code == PSC_MSG_REFRESH_REQ && p1->b.u.refresh_req.epoch == 4) {
			assert_true(rp_unwrap(p1, &p1->b.u.refresh_req.material, s1));
			owner_refreshed = true;
		}
	}
	assert_false(p1->is_error);
	assert_int_equal(p1->b.u.invite_init_ans.outcome, PSC_INVITE_ACCEPTED);
	assert_int_equal(p1->b.u.invite_init_ans.epoch, 4);
	/* the invitee gets the key through a Refresh, wrapped with RSA-OAEP */
	assert_int_equal(refresh_at(r1, room_a, PSC_REFRESH_JOIN, 4, sr, NULL), 4);
	assert_true(r1->b.u.refresh_req.material.wrap_alg == PSC_WRAP_RSA_OAEP_SHA1 ||
		    r1->b.u.refresh_req.material.wrap_alg == PSC_WRAP_RSA_OAEP_SHA256);
	if (!owner_refreshed)
		assert_int_equal(refresh_at(p1, room_a, PSC_REFRESH_JOIN, 4, s1, NULL), 4);
	assert_memory_equal(s1, sr, 32);
	/* decline */
	memcpy(b.u.invite_init_req.invitee, r2->node_id, 16);
	b.u.invite_init_req.timestamp = rp_now_ms();
	tx = rp_send(p1, &b, false);
	assert_true(rp_wait_request(r2, PSC_MSG_INVITE_REQ, WAIT));
	psc_body no = {.code = PSC_MSG_INVITE_ANS};
	rp_answer(r2, r2->m.transaction_id, &no);
	assert_true(rp_wait_answer(p1, tx, WAIT));
	assert_false(p1->is_error);
	assert_int_equal(p1->b.u.invite_init_ans.outcome, PSC_INVITE_DECLINED);
	/* members catch up on epoch 4 */
	uint8_t s[32];
	refresh_at(p2, room_a, PSC_REFRESH_JOIN, 4, s, NULL);
	refresh_at(p3, room_a, PSC_REFRESH_JOIN, 4, s, NULL);
	refresh_at(p4, room_a, PSC_REFRESH_JOIN, 4, s, NULL);
	memcpy(secret_a, s, 32);
	/* rsa1 leaves again right away */
	tx = rp_psc_req(r1, PSC_MSG_LEAVE_REQ, room_a);
	assert_true(rp_wait_answer(r1, tx, WAIT));
	assert_false(r1->is_error);
	rp_free(&r1);
	rp_free(&r2);
	uint32_t grace = 99;
	refresh_at(p1, room_a, PSC_REFRESH_LEAVE, 5, secret_a, &grace);
	assert_int_equal(grace, 0);
	refresh_at(p2, room_a, PSC_REFRESH_LEAVE, 5, s, NULL);
	refresh_at(p3, room_a, PSC_REFRESH_LEAVE, 5, s, NULL);
	refresh_at(p4, room_a, PSC_REFRESH_LEAVE, 5, s, NULL);
}

static void leave_excludes_the_leaver_from_the_new_epoch(void **state)
{
	(void)state;
	uint64_t tx = rp_psc_req(p4, PSC_MSG_LEAVE_REQ, room_a);
	assert_true(rp_wait_answer(p4, tx, WAIT));
	assert_false(p4->is_error);
	uint8_t s1[32], s2[32];
	uint32_t grace = 99;
	uint64_t e = refresh_at(p1, room_a, PSC_REFRESH_LEAVE, 6, s1, &grace);
	assert_int_equal(grace, 0); /* removal: no grace for the old epoch */
	assert_int_equal(refresh_at(p2, room_a, PSC_REFRESH_LEAVE, e, s2, NULL), e);
	assert_memory_equal(s1, s2, 32);
	assert_int_equal(p1->b.u.refresh_req.material.members.n, 4); /* p1, p2, p3, p5 */
	/* peer4 gets nothing for the new epoch, and peer1's copy does not open for it */
	assert_false(rp_wait_request(p4, PSC_MSG_REFRESH_REQ, 500));
	uint8_t stolen[32];
	assert_false(rp_unwrap(p4, &p1->b.u.refresh_req.material, stolen));
	refresh_at(p3, room_a, PSC_REFRESH_LEAVE, 6, NULL, NULL);
	/* the owner cannot leave while others remain */
	tx = rp_psc_req(p1, PSC_MSG_LEAVE_REQ, room_a);
	expect_error(p1, tx, PSC_RERR_FORBIDDEN, PSC_REASON_OWNER_MUST_DESTROY);
	memcpy(secret_a, s1, 32);
	rp_free(&p4);
}

static void departure_of_a_live_peer_and_of_a_dead_one(void **state)
{
	(void)state;
	psc_body b = {.code = PSC_MSG_DEPARTURE_REQ};
	b.u.departure_req.timestamp = rp_now_ms();
	memcpy(b.u.departure_req.psc_id, room_a, 16);
	memcpy(b.u.departure_req.suspect, p3->node_id, 16);
	uint64_t tx = rp_send(p2, &b, false);
	/* p3 is alive: it answers the liveness check */
	assert_true(rp_wait_request(p3, PSC_MSG_LIVENESS_REQ, WAIT));
	psc_body alive = {.code = PSC_MSG_LIVENESS_ANS};
	alive.u.liveness.timestamp = rp_now_ms();
	alive.u.liveness.challenge = p3->b.u.liveness.challenge;
	rp_answer(p3, p3->m.transaction_id, &alive);
	assert_true(rp_wait_answer(p2, tx, WAIT));
	assert_false(p2->is_error);
	assert_int_equal(p2->b.u.departure_ans.outcome, PSC_DEPARTURE_ALIVE);
	/* now p3 really dies */
	uint8_t p3_node[16];
	memcpy(p3_node, p3->node_id, 16);
	rp_free(&p3);
	b.u.departure_req.timestamp = rp_now_ms();
	tx = rp_send(p2, &b, false);
	assert_true(rp_wait_answer(p2, tx, WAIT));
	assert_false(p2->is_error);
	assert_int_equal(p2->b.u.departure_ans.outcome, PSC_DEPARTURE_EVICTED);
	uint8_t s1[32], s2[32];
	uint32_t grace = 99;
	uint64_t e = refresh_at(p1, room_a, PSC_REFRESH_EVICT, 7, s1, &grace);
	assert_int_equal(grace, 0);
	assert_int_equal(refresh_at(p2, room_a, PSC_REFRESH_EVICT, e, s2, NULL), e);
	assert_memory_equal(s1, s2, 32);
	assert_int_equal(p1->b.u.refresh_req.material.members.n, 3); /* p1, p2, p5 */
	memcpy(secret_a, s1, 32);
}

static void offline_member_catches_up(void **state)
{
	(void)state;
	/* p2 goes offline; a join rekeys room-a meanwhile */
	rp_free(&p2);
	rawpeer *p8 = joined("peer8");
	uint64_t tx = rp_psc_req(p8, PSC_MSG_JOIN_REQ, room_a);
	assert_true(rp_wait_answer(p8, tx, WAIT));
	assert_false(p8->is_error);
	uint64_t epoch = p8->b.u.join_ans.material.epoch;
	uint8_t s8[32];
	assert_true(rp_unwrap(p8, &p8->b.u.join_ans.material, s8));
	refresh_at(p1, room_a, PSC_REFRESH_JOIN, epoch, NULL, NULL);
	/* p2 comes back on a new connection: Initialize rebinds, Catchup brings the epoch */
	p2 = joined("peer2");
	psc_body c = {.code = PSC_MSG_CATCHUP_REQ};
	c.u.catchup_req.timestamp = rp_now_ms();
	proto_held held = {.epoch = epoch - 1};
	memcpy(held.psc_id, room_a, 16);
	c.u.catchup_req.held.items = &held;
	c.u.catchup_req.held.n = 1;
	tx = rp_send(p2, &c, false);
	assert_true(rp_wait_answer(p2, tx, WAIT));
	assert_false(p2->is_error);
	proto_iter it;
	proto_catchup_entry en;
	proto_iter_init(&it, p2->b.u.catchup_ans.entries.raw, p2->b.u.catchup_ans.entries.raw_len);
	assert_true(proto_next_catchup(&it, &en));
	assert_int_equal(en.status, PSC_CATCHUP_NEWER);
	assert_int_equal(en.epoch, epoch);
	uint8_t s2[32];
	assert_true(rp_unwrap(p2, &en.material, s2));
	assert_memory_equal(s2, s8, 32);
	rp_free(&p8);
}

static void destroy_by_non_owner_is_denied_by_owner_works(void **state)
{
	(void)state;
	uint64_t tx = rp_psc_req(p2, PSC_MSG_DESTROY_REQ, room_a);
	expect_error(p2, tx, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED);
	tx = rp_psc_req(p1, PSC_MSG_DESTROY_REQ, room_a);
	assert_true(rp_wait_answer(p1, tx, WAIT));
	assert_false(p1->is_error);
	assert_int_equal(p1->m.code, PSC_MSG_DESTROY_ANS);
	assert_true(rp_wait_request(p2, PSC_MSG_REFRESH_REQ, WAIT));
	while (memcmp(p2->b.u.refresh_req.psc_id, room_a, 16) != 0)
		assert_true(rp_wait_request(p2, PSC_MSG_REFRESH_REQ, WAIT));
	assert_int_equal(p2->b.u.refresh_req.reason, PSC_REFRESH_DESTROYED);
	tx = rp_psc_req(p2, PSC_MSG_JOIN_REQ, room_a);
	expect_error(p2, tx, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC);
}

/* ---- bad peers ------------------------------------------------------------ */

static void bad_certificates_are_refused_with_their_reason(void **state)
{
	(void)state;
	struct {
		const char *name;
		uint16_t reason;
	} cases[] = {{"expired", PSC_REASON_CERT_INVALID},   {"notyet", PSC_REASON_CERT_INVALID},
		     {"revoked", PSC_REASON_CERT_REVOKED},    {"wrongca", PSC_REASON_CERT_INVALID},
		     {"nonodeid", PSC_REASON_NODE_ID_MISMATCH},
		     {"peer7", PSC_REASON_POLICY_DENIED}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rawpeer *p = peer(cases[i].name);
		uint64_t tx = rp_initialize(p, 0, NULL, NULL);
		expect_error(p, tx, PSC_RERR_FORBIDDEN, cases[i].reason);
		rp_free(&p);
	}
	/* a good certificate claiming another Node-ID in the body */
	rawpeer *p = peer("peer3");
	p->node_id[0] ^= 1;
	uint64_t tx = rp_initialize(p, 0, NULL, NULL);
	expect_error(p, tx, PSC_RERR_FORBIDDEN, PSC_REASON_NODE_ID_MISMATCH);
	rp_free(&p);
}

static void forged_replayed_stale_and_malformed_requests(void **state)
{
	(void)state;
	rawpeer *p = joined("peer3");
	/* a request on a connection that never initialised */
	rawpeer *q = peer("peer3");
	uint8_t any[16] = {0};
	uint64_t tx = rp_psc_req(q, PSC_MSG_JOIN_REQ, any);
	expect_error(q, tx, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_INITIALIZED);
	rp_free(&q);
	/* replay: the same bytes twice */
	psc_body b = {.code = PSC_MSG_LOOKUP_REQ};
	b.u.lookup_req.timestamp = rp_now_ms();
	b.u.lookup_req.name = (proto_bytes){(const uint8_t *)"room-b", 6};
	uint64_t txid = 0x1234abcd5678ef00ull;
	rp_answer(p, txid, &b); /* rp_answer sends with a chosen txid */
	assert_true(rp_wait_answer(p, txid, WAIT));
	rp_answer(p, txid, &b);
	expect_error(p, txid, PSC_RERR_FORBIDDEN, PSC_REASON_REPLAYED);
	/* stale timestamp */
	b.u.lookup_req.timestamp = rp_now_ms() - 3600 * 1000;
	tx = rp_send(p, &b, false);
	expect_error(p, tx, PSC_RERR_FORBIDDEN, PSC_REASON_STALE_TIMESTAMP);
	/* bad signature: flip a signature byte of an otherwise valid request */
	b.u.lookup_req.timestamp = rp_now_ms();
	uint8_t *body = NULL, *msg = NULL;
	size_t blen, mlen;
	assert_int_equal(proto_body_encode(&b, &body, &blen, NULL), PSC_OK);
	proto_envelope env = {.overlay = p->overlay, .transaction_id = 77, .code = b.code};
	proto_signer s = {.key = p->key, .cert_der = p->cert_der, .cert_len = p->cert_len,
			  .omit_certificates = 1};
	assert_int_equal(proto_message_build(&env, body, blen, &s, &msg, &mlen, NULL), PSC_OK);
	msg[mlen - 5] ^= 0x40;
	rp_send_raw(p, msg, mlen);
	expect_error(p, 77, PSC_RERR_FORBIDDEN, PSC_REASON_BAD_SIGNATURE);
	/* malformed: a truncated message (length field disagrees) */
	msg[mlen - 5] ^= 0x40;
	rp_send_raw(p, msg, mlen - 10);
	expect_error(p, 77, PSC_RERR_INVALID_MESSAGE, PSC_REASON_MALFORMED);
	/* a KMS-only request from a peer */
	psc_body r = {.code = PSC_MSG_REFRESH_REQ};
	r.u.refresh_req.timestamp = rp_now_ms();
	r.u.refresh_req.reason = PSC_REFRESH_DESTROYED;
	tx = rp_send(p, &r, false);
	expect_error(p, tx, PSC_RERR_FORBIDDEN, PSC_REASON_MALFORMED);
	/* garbage gets no answer, oversized frames drop the connection */
	rp_send_raw(p, "garbage", 7);
	static uint8_t big[2 * 1048576];
	rp_send_raw(p, big, sizeof(big));
	free(body);
	free(msg);
	rp_free(&p);
	/* the KMS still serves others */
	rawpeer *ok = joined("peer3");
	rp_free(&ok);
}

static void flood_above_the_rate_limit_is_dropped_and_others_are_served(void **state)
{
	(void)state;
	rawpeer *p = joined("peer4");
	psc_body b = {.code = PSC_MSG_LOOKUP_REQ};
	b.u.lookup_req.name = (proto_bytes){(const uint8_t *)"room-b", 6};
	int answers = 0;
	for (int i = 0; i < 1500; i++) {
		b.u.lookup_req.timestamp = rp_now_ms();
		rp_send(p, &b, false);
	}
	while (rp_recv(p, 1500))
		answers++;
	assert_true(answers < 1500); /* burst 400 + 200/s refill: the rest is dropped */
	assert_true(answers >= 300);
	rp_free(&p);
	rawpeer *other = joined("peer8");
	rp_free(&other);
}

static void audit_log_of_the_run_verifies(void **state)
{
	(void)state;
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(kmsfx_audit_verify(&fx), 0);
	/* Key events are in it, and no key material is. */
	char *out = NULL;
	int rc = kmsfx_audit(&fx, "show", NULL, NULL, &out);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "psc.establish"));
	assert_non_null(strstr(out, "psc.join"));
	assert_non_null(strstr(out, "psc.evict"));
	assert_non_null(strstr(out, "psc.destroy"));
	char hex[65];
	pt_hex(secret_a, 32, hex);
	assert_null(strstr(out, hex));
	free(out);
	/* restart: the KMS starts on the same state and log */
	assert_int_equal(kmsfx_start(&fx), 0);
	rawpeer *p = joined("peer1");
	rp_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(establish_gives_every_initial_member_the_same_secret),
		cmocka_unit_test(lookup_and_join_rekey_for_backward_secrecy),
		cmocka_unit_test(forbidden_joiner_is_denied_and_lookup_hides_the_psc),
		cmocka_unit_test(ask_owner_allow_deny_and_timeout),
		cmocka_unit_test(invite_accept_and_decline),
		cmocka_unit_test(leave_excludes_the_leaver_from_the_new_epoch),
		cmocka_unit_test(departure_of_a_live_peer_and_of_a_dead_one),
		cmocka_unit_test(offline_member_catches_up),
		cmocka_unit_test(destroy_by_non_owner_is_denied_by_owner_works),
		cmocka_unit_test(bad_certificates_are_refused_with_their_reason),
		cmocka_unit_test(forged_replayed_stale_and_malformed_requests),
		cmocka_unit_test(flood_above_the_rate_limit_is_dropped_and_others_are_served),
		cmocka_unit_test(audit_log_of_the_run_verifies),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
