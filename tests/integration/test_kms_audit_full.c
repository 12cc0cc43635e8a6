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

#include "psc_test.h"
#include "rawpeer.h"

#define WAIT 8000

static struct {
	char dir[4096], audit[4200], config[4200], cert[4200], curve[64], endpoint[64],
		softhsm[4200], log[4200];
	pt_proc kmsd;
	void *zctx;
	int mounted;
	rawpeer *a, *b; /* closed in teardown: zmq_ctx_term waits for every socket */
} fx;

static void value(const char *out, const char *key, char *val, size_t cap)
{
	const char *p = strstr(out, key);
	val[0] = '\0';
	if (p)
		snprintf(val, cap, "%.*s", (int)strcspn(p + strlen(key), "\n"), p + strlen(key));
}

static int sh(const char *cmd)
{
	char *argv[] = {"sh", "-c", (char *)cmd, NULL};
	char *out = NULL;
	int rc = pt_run(argv, &out, 60000);
	free(out);
	return rc;
}

static int setup(void **state)
{
	(void)state;
	if (pt_tmpdir(fx.dir, "kmsfull") != 0)
		return -1;
	int port = pt_free_port();
	snprintf(fx.endpoint, sizeof(fx.endpoint), "tcp://127.0.0.1:%d", port);
	char script[4200], kmsdir[4200], bindir[4200], portstr[16], ca[4200];
	snprintf(script, sizeof(script), "%s/tests/integration/mkkms.sh", PSC_SOURCE_DIR);
	snprintf(kmsdir, sizeof(kmsdir), "%s/kms", fx.dir);
	snprintf(bindir, sizeof(bindir), "%s/kms", PSC_BINARY_DIR);
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(ca, sizeof(ca), "%s", pt_ca_dir());
	char *argv[] = {script, kmsdir, ca, bindir, portstr, NULL};
	char *out = NULL;
	if (pt_run(argv, &out, 60000) != 0) {
		free(out);
		return -1;
	}
	value(out, "KMS_CONFIG=", fx.config, sizeof(fx.config));
	value(out, "KMS_CERT=", fx.cert, sizeof(fx.cert));
	value(out, "KMS_CURVE_PUB=", fx.curve, sizeof(fx.curve));
	value(out, "SOFTHSM2_CONF=", fx.softhsm, sizeof(fx.softhsm));
	free(out);
	snprintf(fx.audit, sizeof(fx.audit), "%s/kms/audit", fx.dir);
	/* A really small filesystem under the audit log. */
	fx.mounted = mount("tmpfs", fx.audit, "tmpfs", 0, "size=256k,mode=0750") == 0;
	if (!fx.mounted)
		return 0; /* the test skips */
	snprintf(fx.log, sizeof(fx.log), "%s/kmsd.log", fx.dir);
	char env_conf[4300], bin[4200];
	snprintf(env_conf, sizeof(env_conf), "SOFTHSM2_CONF=%s", fx.softhsm);
	snprintf(bin, sizeof(bin), "%s/kms/psc-kmsd", PSC_BINARY_DIR);
	char *env[] = {env_conf, NULL};
	char *kargv[] = {bin, "-c", fx.config, NULL};
	if (pt_proc_start(&fx.kmsd, kargv, env, fx.log) != 0)
		return -1;
	for (int i = 0; i < 500; i++) {
		size_t n = 0;
		char *txt = (char *)pt_read_file(fx.log, &n);
		int ready = txt && memmem(txt, n, "listening on", 12);
		free(txt);
		if (ready) {
			fx.zctx = zmq_ctx_new();
			return 0;
		}
		if (pt_proc_wait(&fx.kmsd, 20) != -1)
			return -1;
	}
	return -1;
}

static int teardown(void **state)
{
	(void)state;
	if (fx.kmsd.pid)
		pt_proc_stop(&fx.kmsd, 10000);
	rp_free(&fx.a);
	rp_free(&fx.b);
	if (fx.zctx)
		zmq_ctx_term(fx.zctx);
	if (fx.mounted)
		umount(fx.audit);
	pt_rm_rf(fx.dir);
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
	if (!fx.mounted)
		skip(); /* mounting a tmpfs needs root: run the suite as root to exercise this */
	rawpeer *a = fx.a = peer("peer1"), *b = fx.b = peer("peer2");
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
	snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of='%s/fill' bs=4096 2>/dev/null; true", fx.audit);
	assert_int_equal(sh(cmd), 0);

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
	snprintf(cmd, sizeof(cmd), "rm -f '%s/fill'", fx.audit);
	assert_int_equal(sh(cmd), 0);
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
	rp_free(&fx.a);
	rp_free(&fx.b);

	/* The log of all that still verifies, and says it recovered. */
	assert_int_equal(pt_proc_stop(&fx.kmsd, 10000), 0);
	fx.kmsd.pid = 0;
	char bin[4200];
	snprintf(bin, sizeof(bin), "%s/audit/psc-audit", PSC_BINARY_DIR);
	char *argv[] = {bin, "verify", fx.audit, NULL};
	char *out = NULL;
	int rc = pt_run(argv, &out, 60000);
	if (rc != 0)
		fail_msg("psc-audit verify: exit %d\n%s", rc, out ? out : "");
	free(out);
	char *show[] = {bin, "show", fx.audit, "--event", "log.recover", NULL};
	assert_int_equal(pt_run(show, &out, 60000), 0);
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
