/*
 * Fail-closed audit, end to end (DESIGN.md §5): with the audit log's
 * filesystem really full (a size-limited tmpfs), psc-kmsd refuses key events
 * with In_Progress / audit_unavailable and keeps answering read-only requests;
 * once space is back it recovers by itself, and the log still verifies.
 * Needs root (mount); skipped with a message where mounting is not allowed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>

#include <zmq.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;
static char audit[4300];
static int mounted;
static rawpeer *pa, *pb; /* closed in teardown: zmq_ctx_term waits for every socket */

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmsfull", NULL, NULL) != 0)
		return -1;
	snprintf(audit, sizeof(audit), "%s/audit", fx.kmsdir);
	/* A really small filesystem under the audit log. */
	mounted = mount("tmpfs", audit, "tmpfs", 0, "size=256k,mode=0750") == 0;
	if (!mounted)
		return 0; /* the test skips */
	return kmsfx_start(&fx);
}

static int teardown(void **state)
{
	(void)state;
	if (fx.kmsd.pid)
		(void)kmsfx_stop(&fx);
	rp_free(&pa);
	rp_free(&pb);
	if (mounted)
		umount(audit);
	kmsfx_cleanup(&fx);
	return 0;
}

static rawpeer *peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	return p;
}

static void key_events_fail_closed_read_only_goes_on_and_it_recovers(void **state)
{
	(void)state;
	if (!mounted)
		skip(); /* mounting a tmpfs needs root: run the suite as root to exercise this */
	rawpeer *a = pa = peer("peer1"), *b = pb = peer("peer2");
	uint64_t tx = rp_initialize(a, 0, NULL, NULL);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"full-room", 9};
	tx = rp_send(a, &est, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);

	/* The disk fills up. */
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of='%s/fill' bs=4096 2>/dev/null; true", audit);
	assert_int_equal(kmsfx_sh(cmd), 0);

	/* tmpfs allocates whole pages: events keep fitting into the log's last page
	 * for a little while. Once one cannot be recorded it does not happen (that
	 * one is never acknowledged) and the following ones are refused. */
	bool refused = false;
	int succeeded = 0;
	for (int attempt = 0; attempt < 40 && !refused; attempt++) {
		tx = rp_initialize(b, 0, NULL, NULL);
		if (!rp_wait_answer(b, tx, 2000))
			continue; /* the batch that hit the full disk: no answer */
		if (!b->is_error) {
			succeeded++;
			continue;
		}
		assert_int_equal(b->err.error_code, PSC_RERR_IN_PROGRESS);
		assert_int_equal(b->err.psc_reason, PSC_REASON_AUDIT_UNAVAILABLE);
		refused = true;
	}
	assert_true(refused);
	assert_true(succeeded < 30); /* it did fill up */
	/* Read-only requests are still answered. */
	psc_body lk = {.code = PSC_MSG_LOOKUP_REQ};
	lk.u.lookup_req.timestamp = rp_now_ms();
	lk.u.lookup_req.name = (proto_bytes){(const uint8_t *)"full-room", 9};
	tx = rp_send(a, &lk, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	assert_int_equal(a->b.u.lookup_ans.member_count, 1);

	/* Space comes back: the KMS recovers by itself and key events go on. */
	snprintf(cmd, sizeof(cmd), "rm -f '%s/fill'", audit);
	assert_int_equal(kmsfx_sh(cmd), 0);
	bool served = false;
	for (int attempt = 0; attempt < 10 && !served; attempt++) {
		tx = rp_initialize(b, 0, NULL, NULL);
		served = rp_wait_answer(b, tx, 3000) && !b->is_error;
		if (!served) {
			struct timespec ts = {0, 500 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	assert_true(served);
	tx = rp_psc_req(b, PSC_MSG_JOIN_REQ, a->b.u.lookup_ans.psc_id);
	assert_true(rp_wait_answer(b, tx, WAIT));
	assert_false(b->is_error);
	rp_free(&pa);
	rp_free(&pb);

	/* The log of all that still verifies, and says it recovered. */
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(kmsfx_audit_verify(&fx), 0);
	char *out = NULL;
	assert_int_equal(kmsfx_audit(&fx, "show", "--event", "log.recover", &out), 0);
	assert_non_null(strstr(out, "log.recover"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_events_fail_closed_read_only_goes_on_and_it_recovers),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
