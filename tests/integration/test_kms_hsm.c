/*
 * psc-kmsd when its HSM fails (docs/hsm.md "Failure and health"): the daemon is
 * pointed at tests/p11fault, a PKCS#11 module that forwards every call to the
 * real SoftHSM token and fails calls on command (control file). The token goes
 * away and comes back; its sessions are invalidated under the daemon. The KMS
 * must refuse key events without changing its state, keep running, recover by
 * itself (worker sessions included), sign with its fetched-again keys, and
 * deliver the Refreshes it made after the recovery; the audit log verifies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;
static char ctl[4300];
static rawpeer *pa, *pb, *pc; /* closed in teardown: zmq_ctx_term waits for every socket */

static void ctl_write(const char *text)
{
	char tmp[4400];
	snprintf(tmp, sizeof(tmp), "%s.tmp", ctl);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, ctl), 0); /* p11fault never sees half a command */
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmshsm", NULL, NULL) != 0)
		return -1;
	/* The same token, through the fault module. */
	char cmd[9000];
	snprintf(cmd, sizeof(cmd), "sed -i 's|^  module: .*|  module: %s|' '%s'", P11FAULT_PATH,
		 fx.config);
	if (kmsfx_sh(cmd) != 0)
		return -1;
	snprintf(ctl, sizeof(ctl), "%s/p11fault.ctl", fx.dir);
	ctl_write("");
	setenv("P11FAULT_CTL", ctl, 1); /* inherited by psc-kmsd */
	return kmsfx_start(&fx);
}

static int teardown(void **state)
{
	(void)state;
	rp_free(&pa);
	rp_free(&pb);
	rp_free(&pc);
	kmsfx_cleanup(&fx);
	return 0;
}

static rawpeer *peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	uint64_t tx = rp_initialize(p, 0, NULL, NULL);
	assert_true(rp_wait_answer(p, tx, WAIT));
	assert_false(p->is_error);
	return p;
}

static bool kmsd_alive(void)
{
	return pt_proc_wait(&fx.kmsd, 0) == -1;
}

/* Joins, retrying while the KMS recovers; the new epoch's secret in s. */
static uint64_t join_when_back(rawpeer *p, const uint8_t psc[16], uint8_t s[32])
{
	for (int attempt = 0; attempt < 40; attempt++) {
		uint64_t tx = rp_psc_req(p, PSC_MSG_JOIN_REQ, psc);
		if (rp_wait_answer(p, tx, 2000) && !p->is_error) {
			assert_int_equal(p->m.code, PSC_MSG_JOIN_ANS);
			assert_true(rp_unwrap(p, &p->b.u.join_ans.material, s));
			return p->b.u.join_ans.material.epoch;
		}
		if (p->is_error && p->err.psc_reason != PSC_REASON_HSM_UNAVAILABLE &&
		    p->err.psc_reason != PSC_REASON_INTERNAL)
			fail_msg("%s: join refused: %u/%u %.*s", p->name, p->err.error_code,
				 p->err.psc_reason, (int)p->err.text_len, (const char *)p->err.text);
		sleep_ms(250);
	}
	fail_msg("%s: no join within 40 attempts after the HSM came back", p->name);
	return 0;
}

/* The member's Refresh for `epoch`, opened to the same secret as `want`. */
static void refresh_arrives(rawpeer *p, const uint8_t psc[16], uint64_t epoch,
			    const uint8_t want[32])
{
	for (int i = 0; i < 8; i++) {
		if (!rp_wait_refresh(p, psc, PSC_REFRESH_JOIN, WAIT))
			fail_msg("%s: no Refresh for epoch %llu", p->name, (unsigned long long)epoch);
		if (p->b.u.refresh_req.material.epoch != epoch)
			continue; /* an older one */
		uint8_t s[32];
		assert_true(rp_unwrap(p, &p->b.u.refresh_req.material, s));
		assert_memory_equal(s, want, 32);
		return;
	}
	fail_msg("%s: Refreshes arrived, none for epoch %llu", p->name, (unsigned long long)epoch);
}

static void token_gone_then_back_sessions_lost_and_the_kms_recovers_alone(void **state)
{
	(void)state;
	rawpeer *a = pa = peer("peer1"), *b = pb = peer("peer2");
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"hsm-room", 8};
	uint64_t tx = rp_send(a, &est, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	uint8_t room[16];
	memcpy(room, a->b.u.establish_ans.material.psc_id, 16);
	assert_int_equal(a->b.u.establish_ans.material.epoch, 1);

	/* The token goes away. A join cannot be done: it is refused (if the KMS can
	 * still sign the refusal: its identity key is on that token too) or left
	 * unanswered, and it changes nothing. */
	ctl_write("absent\n");
	tx = rp_psc_req(b, PSC_MSG_JOIN_REQ, room);
	if (rp_wait_answer(b, tx, 2000)) {
		assert_true(b->is_error);
		assert_int_equal(b->err.psc_reason, PSC_REASON_HSM_UNAVAILABLE);
	}
	assert_true(kmsd_alive());

	/* It comes back: the KMS reconnects by itself. The join gets epoch 2 (the
	 * failed one left no member and no epoch behind), and the owner's Refresh,
	 * made by an HSM worker whose session had to be reopened, carries it. */
	ctl_write("");
	uint8_t s2[32];
	assert_int_equal(join_when_back(b, room, s2), 2);
	refresh_arrives(a, room, 2, s2);

	/* Every session is invalidated under the daemon (a token reset: the login
	 * is lost too). */
	ctl_write("invalidate 1\n");
	rawpeer *c = pc = peer("peer3");
	uint8_t s3[32];
	assert_int_equal(join_when_back(c, room, s3), 3);
	refresh_arrives(a, room, 3, s3);
	refresh_arrives(b, room, 3, s3);
	assert_true(kmsd_alive());

	/* The daemon said what happened, and its log of it verifies. */
	size_t n = 0;
	char *log = (char *)pt_read_file(fx.log, &n);
	assert_non_null(log);
	assert_non_null(memmem(log, n, "HSM healthy again", 17));
	free(log);
	rp_free(&pa);
	rp_free(&pb);
	rp_free(&pc);
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(kmsfx_audit_verify(&fx), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(token_gone_then_back_sessions_lost_and_the_kms_recovers_alone),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
