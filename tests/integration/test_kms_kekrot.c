/*
 * Master KEK rotation (issue 8): psc-kmsctl rotate master-kek makes a new KEK
 * in the token and re-wraps every stored blob under it in small steps,
 * showing progress in status; psc-kmsd is killed (SIGKILL) in the middle and,
 * restarted, resumes by itself and completes. Afterwards every PSC's secret is unchanged
 * (members catch up to the same key), the token holds exactly one master KEK
 * (the new one: pkcs11-tool lists the objects), a backup from before the
 * rotation can no longer be restored (its KEK is gone, and restore says so),
 * and the rotation is in the audit log, which verifies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000
#define N_PSC 24

static kmsfx fx;

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmskekrot", NULL, NULL) != 0 || kmsfx_start(&fx) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kmsfx_cleanup(&fx);
	return 0;
}

static int ctl(char **out, const char *a1, const char *a2, const char *a3, const char *a4,
	       const char *a5, const char *a6)
{
	const char *w[] = {a1, a2, a3, a4, a5, a6, NULL};
	return kmsfx_ctl(&fx, out, w);
}

/* The number or string after "key": (inside the object named obj, if any). */
static const char *jfind(const char *json, const char *obj, const char *key)
{
	const char *v = kmsfx_json_find(json, obj, key);
	if (!v)
		fail_msg("no %s.%s in %s", obj ? obj : "", key, json);
	return v;
}

static unsigned long long jnum(const char *json, const char *obj, const char *key)
{
	return strtoull(jfind(json, obj, key), NULL, 10);
}

static void jstr(const char *json, const char *obj, const char *key, char out[33])
{
	const char *p = jfind(json, obj, key);
	assert_int_equal(*p, '"');
	snprintf(out, 33, "%.32s", p + 1);
}

static rawpeer *init_peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	assert_true(rp_initialize_wait(p, WAIT));
	assert_false(p->is_error);
	return p;
}

/* Secret of every PSC, as the member peer2 unwraps it. */
static uint8_t ids[N_PSC][16], secrets[N_PSC][32];

static void catch_up_all(rawpeer *p, bool compare)
{
	psc_body c = {.code = PSC_MSG_CATCHUP_REQ};
	c.u.catchup_req.timestamp = rp_now_ms();
	proto_held held[N_PSC];
	for (int i = 0; i < N_PSC; i++) {
		memcpy(held[i].psc_id, ids[i], 16);
		held[i].epoch = 0;
	}
	c.u.catchup_req.held.items = held;
	c.u.catchup_req.held.n = N_PSC;
	uint64_t tx = rp_send(p, &c, false);
	assert_true(rp_wait_answer(p, tx, WAIT));
	assert_false(p->is_error);
	proto_iter it;
	proto_catchup_entry en;
	int seen = 0;
	proto_iter_init(&it, p->b.u.catchup_ans.entries.raw, p->b.u.catchup_ans.entries.raw_len);
	while (proto_next_catchup(&it, &en)) {
		for (int i = 0; i < N_PSC; i++) {
			if (memcmp(en.psc_id, ids[i], 16) != 0)
				continue;
			assert_int_equal(en.status, PSC_CATCHUP_NEWER);
			assert_int_equal(en.epoch, 1);
			uint8_t s[32];
			assert_true(rp_unwrap(p, &en.material, s));
			if (compare)
				assert_memory_equal(s, secrets[i], 32);
			else
				memcpy(secrets[i], s, 32);
			seen++;
		}
	}
	assert_int_equal(seen, N_PSC);
}

/* Secret-key objects on the token as "label id" lines (pkcs11-tool). */
static char *token_keys(void)
{
	char cmd[9000], *out = NULL;
	snprintf(cmd, sizeof(cmd),
		 "SOFTHSM2_CONF='%s' pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so "
		 "--token-label psc-test --login --pin 1234 --list-objects --type secrkey "
		 "2>/dev/null",
		 fx.softhsm);
	char *argv[] = {"sh", "-c", cmd, NULL};
	assert_int_equal(pt_run(argv, &out, 60000), 0);
	return out;
}

static void rotation_survives_restart(void **state)
{
	(void)state;
	char *out = NULL;
	rawpeer *a = init_peer("peer1"), *b = init_peer("peer2");
	for (int i = 0; i < N_PSC; i++) {
		char name[32];
		snprintf(name, sizeof(name), "kek-room-%02d", i);
		proto_node_id_t m;
		memcpy(m, b->node_id, 16);
		psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
		est.u.establish_req.timestamp = rp_now_ms();
		est.u.establish_req.params.name =
		    (proto_bytes){(const uint8_t *)name, strlen(name)};
		est.u.establish_req.params.members.items = &m;
		est.u.establish_req.params.members.n = 1;
		uint64_t tx = rp_send(a, &est, false);
		assert_true(rp_wait_answer(a, tx, WAIT));
		assert_false(a->is_error);
		memcpy(ids[i], a->b.u.establish_ans.material.psc_id, 16);
		assert_true(rp_wait_refresh(b, ids[i], PSC_REFRESH_ESTABLISH, WAIT));
	}
	catch_up_all(b, false);

	char k0[33], k1[33];
	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL, NULL, NULL), 0);
	jstr(out, "hsm", "kek_id", k0);
	assert_int_equal(jnum(out, "counts", "epoch_blobs"), N_PSC);
	assert_non_null(strstr(out, "\"kek_rotation\":{\"active\":false"));
	free(out);
	char backup[4300];
	snprintf(backup, sizeof(backup), "%s/before-rotation.db", fx.dir);
	assert_int_equal(ctl(&out, "backup", backup, NULL, NULL, NULL, NULL), 0);
	free(out);

	/* bad pace values are refused with a message */
	assert_int_equal(ctl(&out, "rotate", "master-kek", "--chunk", "0", NULL, NULL), 2);
	assert_non_null(strstr(out, "--chunk must be at least 1"));
	free(out);
	assert_int_equal(ctl(&out, "rotate", "master-kek", "--chunk", "x", "--json", NULL), 1);
	assert_non_null(strstr(out, "\"ok\":false"));
	free(out);

	/* slowly: one blob per step, 150 ms apart */
	assert_int_equal(ctl(&out, "rotate", "master-kek", "--chunk", "1", "--pause-ms", "150"), 0);
	assert_non_null(strstr(out, "from: "));
	free(out);
	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL, NULL, NULL), 0);
	assert_non_null(strstr(out, "\"kek_rotation\":{\"active\":true"));
	jstr(out, "kek_rotation", "to", k1);
	assert_string_not_equal(k0, k1);
	char from[33];
	jstr(out, "kek_rotation", "from", from);
	assert_string_equal(from, k0);
	free(out);
	/* progress, then a stop in the middle */
	unsigned long long done = 0, left = N_PSC;
	for (int i = 0; i < 200 && done < 5; i++) {
		usleep(100 * 1000);
		assert_int_equal(ctl(&out, "status", "--json", NULL, NULL, NULL, NULL), 0);
		done = jnum(out, "kek_rotation", "rewrapped");
		left = jnum(out, "kek_rotation", "remaining");
		free(out);
	}
	assert_true(done >= 5);
	assert_true(left > 0 && left < N_PSC);
	/* the daemon dies mid-way (SIGKILL: no orderly shutdown) */
	rp_free(&a);
	rp_free(&b);
	pt_proc_kill(&fx.kmsd, SIGKILL);
	assert_int_equal(pt_proc_wait(&fx.kmsd, 10000), 128 + SIGKILL);
	fx.kmsd.pid = 0;
	out = token_keys();
	assert_non_null(strstr(out, "psc-master-kek-next"));
	free(out);

	/* restarted: it resumes (default pace) and completes */
	assert_int_equal(kmsfx_start(&fx), 0);
	for (int i = 0; i < 300; i++) {
		assert_int_equal(ctl(&out, "status", "--json", NULL, NULL, NULL, NULL), 0);
		if (strstr(out, "\"kek_rotation\":{\"active\":false"))
			break;
		free(out);
		out = NULL;
		usleep(100 * 1000);
	}
	assert_non_null(out);
	assert_non_null(strstr(out, "\"kek_rotation\":{\"active\":false"));
	char cur[33];
	jstr(out, "hsm", "kek_id", cur);
	assert_string_equal(cur, k1);
	jstr(out, "kek_rotation", "last_done_to", cur);
	assert_string_equal(cur, k1);
	free(out);

	/* one master KEK left on the token: the new one, under the usual label */
	out = token_keys();
	assert_null(strstr(out, "psc-master-kek-next"));
	const char *l = strstr(out, "psc-master-kek\n");
	assert_non_null(l);
	assert_null(strstr(l + 1, "psc-master-kek"));
	assert_null(strstr(strstr(out, "label:") + 1, "label:")); /* one secret key */
	assert_null(strstr(out, k0));
	assert_non_null(strstr(out, k1));
	free(out);

	/* every secret survived the re-wrap */
	b = init_peer("peer2");
	catch_up_all(b, true);
	rp_free(&b);

	/* a backup from before the rotation names the destroyed KEK */
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(ctl(&out, "restore", backup, NULL, NULL, NULL, NULL), 1);
	assert_non_null(strstr(out, "restore refused, nothing changed"));
	assert_non_null(strstr(out, k0));
	free(out);
	assert_int_equal(kmsfx_start(&fx), 0);
	b = init_peer("peer2");
	catch_up_all(b, true);
	rp_free(&b);

	/* a second rotation at the default pace, followed to its end with --wait */
	if (ctl(&out, "rotate", "master-kek", "--wait", NULL, NULL, NULL) != 0)
		fail_msg("rotate --wait: %s", out);
	assert_non_null(strstr(out, "KEK rotation done: current KEK "));
	free(out);
	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL, NULL, NULL), 0);
	jstr(out, "hsm", "kek_id", cur);
	assert_string_not_equal(cur, k1);
	free(out);
	b = init_peer("peer2");
	catch_up_all(b, true);
	rp_free(&b);

	/* audited: start, resume, done; the log verifies */
	char cmd[40000];
	snprintf(cmd, sizeof(cmd),
		 "cat '%s'/audit/audit-*.jsonl | grep '\"kek.rotate\"' > '%s/rot.jsonl'; "
		 "grep -q '\"phase\":\"start\"' '%s/rot.jsonl' && "
		 "grep -q '\"phase\":\"resume\"' '%s/rot.jsonl' && "
		 "grep -q '\"phase\":\"done\"' '%s/rot.jsonl'",
		 fx.kmsdir, fx.dir, fx.dir, fx.dir, fx.dir);
	assert_int_equal(kmsfx_sh(cmd), 0);
	char pub[4400];
	snprintf(pub, sizeof(pub), "%s/audit-pub.pem", fx.kmsdir);
	assert_int_equal(kmsfx_audit(&fx, "verify", "--pubkey", pub, &out), 0);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(rotation_survives_restart),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
