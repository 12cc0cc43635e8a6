/*
 * SIGHUP reloads the policy of a running psc-kmsd: a broken file is rejected
 * and the previous policy stays in force; a good one takes effect at once;
 * both outcomes are in the audit log with the policy revisions.
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

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;
static rawpeer *owner, *outcast;

static int setup(void **state)
{
	(void)state;
	return kmsfx_install(&fx, "kmsreload", NULL, NULL) == 0 && kmsfx_start(&fx) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	rp_free(&owner);
	rp_free(&outcast);
	kmsfx_cleanup(&fx);
	return 0;
}

/* Rewrites the installed policy: the test policy, with `from` replaced by `to`. */
static void write_policy(const char *from, const char *to)
{
	char src[4200], dst[4300];
	snprintf(src, sizeof(src), "%s/tests/integration/policy.yaml", PSC_SOURCE_DIR);
	snprintf(dst, sizeof(dst), "%s/policy.yaml", fx.kmsdir);
	char *text = pt_read_text(src, NULL);
	assert_non_null(text);
	char *at = strstr(text, from);
	assert_non_null(at);
	FILE *f = fopen(dst, "w");
	assert_non_null(f);
	fwrite(text, 1, (size_t)(at - text), f);
	fputs(to, f);
	fputs(at + strlen(from), f);
	fclose(f);
	free(text);
}

/* SIGHUP, then wait until the daemon logs the outcome (`what`) once more. */
static void reload(const char *what)
{
	size_t before = 0, n = 0;
	char *txt = (char *)pt_read_file(fx.log, &before);
	int seen_before = 0;
	for (char *p = txt; p && (p = memmem(p, before - (size_t)(p - txt), what, strlen(what)));
	     p++)
		seen_before++;
	free(txt);
	assert_int_equal(kill(fx.kmsd.pid, SIGHUP), 0);
	for (int i = 0; i < 250; i++) {
		txt = (char *)pt_read_file(fx.log, &n);
		int seen = 0;
		for (char *p = txt; p && (p = memmem(p, n - (size_t)(p - txt), what, strlen(what)));
		     p++)
			seen++;
		free(txt);
		if (seen > seen_before)
			return;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	fail_msg("psc-kmsd did not log '%s' after SIGHUP", what);
}

static uint64_t join(rawpeer *p, const uint8_t psc[16])
{
	uint64_t tx = rp_psc_req(p, PSC_MSG_JOIN_REQ, psc);
	assert_true(rp_wait_answer(p, tx, WAIT));
	return tx;
}

static void sighup_reloads_rejects_broken_files_and_audits_both(void **state)
{
	(void)state;
	owner = rp_new(fx.zctx, "peer1", fx.endpoint, fx.cert, fx.curve);
	outcast = rp_new(fx.zctx, "peer6", fx.endpoint, fx.cert, fx.curve);
	uint64_t tx = rp_initialize(owner, 0, NULL, NULL);
	assert_true(rp_wait_answer(owner, tx, WAIT));
	tx = rp_initialize(outcast, 0, NULL, NULL);
	assert_true(rp_wait_answer(outcast, tx, WAIT));
	assert_false(outcast->is_error);
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"reload-room", 11};
	tx = rp_send(owner, &est, false);
	assert_true(rp_wait_answer(owner, tx, WAIT));
	assert_false(owner->is_error);
	uint8_t psc[16];
	memcpy(psc, owner->b.u.establish_ans.material.psc_id, 16);

	/* The test policy forbids peer6 to join. */
	join(outcast, psc);
	assert_true(outcast->is_error);
	assert_int_equal(outcast->err.psc_reason, PSC_REASON_POLICY_DENIED);

	/* A broken policy is rejected with its position; the old one stays. */
	write_policy("rules:", "rules: [unclosed\n");
	reload("policy reload rejected");
	size_t n = 0;
	char *log = (char *)pt_read_file(fx.log, &n);
	assert_non_null(memmem(log, n, "policy.yaml:", 12)); /* file:line:col in the message */
	free(log);
	join(outcast, psc);
	assert_true(outcast->is_error);
	assert_int_equal(outcast->err.psc_reason, PSC_REASON_POLICY_DENIED);

	/* A good policy that lets peer6 join takes effect at once. */
	write_policy("subject_cn: {in: [peer1, peer2, peer3, peer4, peer8, rsa1, rsa2]}",
		     "subject_cn: {in: [peer1, peer2, peer3, peer4, peer6, peer8, rsa1, rsa2]}");
	char dst[4300];
	snprintf(dst, sizeof(dst), "%s/policy.yaml", fx.kmsdir);
	size_t len = 0;
	char *text = pt_read_text(dst, &len);
	assert_non_null(text);
	char *forbid = strstr(text, "  - id: forbid-outcast-join");
	assert_non_null(forbid);
	char *next = strstr(forbid + 1, "  - id: ");
	memmove(forbid, next, len - (size_t)(next - text) + 1);
	FILE *f = fopen(dst, "w");
	fputs(text, f);
	fclose(f);
	free(text);
	reload("policy reloaded");
	join(outcast, psc);
	assert_false(outcast->is_error);
	assert_int_equal(outcast->m.code, PSC_MSG_JOIN_ANS);

	/* Both reloads are in the audit log. */
	assert_int_equal(kmsfx_stop(&fx), 0);
	char *out = NULL;
	assert_int_equal(kmsfx_audit(&fx, "show", "--event", "policy.reload", &out), 0);
	assert_non_null(strstr(out, "rejected"));
	assert_non_null(strstr(out, "reloaded"));
	free(out);
	assert_int_equal(kmsfx_audit(&fx, "verify", NULL, NULL, &out), 0);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sighup_reloads_rejects_broken_files_and_audits_both),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
