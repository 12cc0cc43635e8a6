/*
 * psc-kmsctl against a running psc-kmsd over the admin socket (issue 8):
 * status --json tracks the store's counts, psc list/show see a PSC, peer ban
 * evicts a member everywhere (the others are rekeyed, the banned peer is told
 * and its next Initialize is refused as banned) and is audited, policy reload
 * and audit checkpoint answer ok, and the socket file is not world-accessible.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmsadmin", NULL, NULL) != 0 || kmsfx_start(&fx) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kmsfx_cleanup(&fx);
	return 0;
}

/* psc-kmsctl with up to four words (kmsfx_ctl); *out its output. */
static int ctl(char **out, const char *a1, const char *a2, const char *a3, const char *a4)
{
	const char *w[] = {a1, a2, a3, a4, NULL};
	return kmsfx_ctl(&fx, out, w);
}

/* The number after "key": inside the object "obj" (or anywhere when NULL). */
static unsigned long long jnum(const char *json, const char *obj, const char *key)
{
	const char *v = kmsfx_json_find(json, obj, key);
	if (!v)
		fail_msg("no %s.%s in %s", obj ? obj : "", key, json);
	return strtoull(v, NULL, 10);
}

static rawpeer *init_peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	assert_true(rp_initialize_wait(p, WAIT));
	assert_false(p->is_error);
	return p;
}

static void refresh(rawpeer *p, const uint8_t psc[16], uint8_t reason)
{
	if (!rp_wait_refresh(p, psc, reason, WAIT))
		fail_msg("%s: no Refresh (reason %u)", p->name, reason);
}

static void status_lists_ban_reload_checkpoint(void **state)
{
	(void)state;
	char *out = NULL;

	/* the socket file: owner and group only */
	char path[4300];
	snprintf(path, sizeof(path), "%s/admin.sock", fx.kmsdir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0007, 0);

	/* a fresh KMS */
	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL), 0);
	assert_true(strncmp(out, "{\"ok\":true", 10) == 0);
	assert_int_equal(jnum(out, "counts", "peers"), 0);
	assert_int_equal(jnum(out, "counts", "pscs_live"), 0);
	assert_int_equal(jnum(out, NULL, "connected_peers"), 0);
	assert_non_null(strstr(out, "\"hsm\":{\"healthy\":true"));
	assert_non_null(strstr(out, "\"audit\":{\"healthy\":true"));
	assert_true(jnum(out, "audit", "last_seq") >= 1);
	assert_non_null(strstr(out, "\"policy\":{\"revision\":\""));
	assert_int_equal(jnum(out, "hsm", "workers"), 2); /* mkkms.sh's hsm.workers */
	assert_int_equal(jnum(out, "hsm", "fanouts_busy"), 0);
	free(out);
	assert_int_equal(ctl(&out, "status", NULL, NULL, NULL), 0); /* human-readable */
	assert_non_null(strstr(out, "uptime_s: "));
	assert_non_null(strstr(out, "counts:\n"));
	assert_non_null(strstr(out, "  pscs_live: 0\n"));
	free(out);

	/* three peers and a PSC */
	rawpeer *a = init_peer("peer1"), *b = init_peer("peer2"), *c = init_peer("peer3");
	proto_node_id_t members[2];
	memcpy(members[0], b->node_id, 16);
	memcpy(members[1], c->node_id, 16);
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"admin-room", 10};
	est.u.establish_req.params.members.items = members;
	est.u.establish_req.params.members.n = 2;
	uint64_t tx = rp_send(a, &est, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	uint8_t psc[16];
	memcpy(psc, a->b.u.establish_ans.material.psc_id, 16);
	refresh(b, psc, PSC_REFRESH_ESTABLISH);
	refresh(c, psc, PSC_REFRESH_ESTABLISH);
	char psc_hex[33], c_hex[33];
	pt_hex(psc, 16, psc_hex);
	pt_hex(c->node_id, 16, c_hex);

	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL), 0);
	assert_int_equal(jnum(out, "counts", "peers"), 3);
	assert_int_equal(jnum(out, "counts", "pscs_live"), 1);
	assert_int_equal(jnum(out, "counts", "memberships"), 3);
	assert_int_equal(jnum(out, "counts", "peers_banned"), 0);
	assert_int_equal(jnum(out, NULL, "connected_peers"), 3);
	free(out);

	assert_int_equal(ctl(&out, "psc", "list", "--json", NULL), 0);
	assert_non_null(strstr(out, psc_hex));
	assert_non_null(strstr(out, "\"name\":\"admin-room\""));
	assert_int_equal(jnum(out, NULL, "members"), 3);
	free(out);
	assert_int_equal(ctl(&out, "psc", "list", NULL, NULL), 0);
	assert_non_null(strstr(out, "name: admin-room"));
	free(out);
	assert_int_equal(ctl(&out, "psc", "show", psc_hex, "--json"), 0);
	assert_non_null(strstr(out, c_hex));
	free(out);
	assert_int_equal(ctl(&out, "peer", "list", "--json", NULL), 0);
	assert_non_null(strstr(out, c_hex));
	assert_null(strstr(out, "\"banned\":true"));
	free(out);

	/* ban peer3: peer1 and peer2 get an evict rekey, peer3 is told it is out */
	assert_int_equal(ctl(&out, "peer", "ban", c_hex, "--json"), 0);
	assert_non_null(strstr(out, "\"ok\":true"));
	assert_int_equal(jnum(out, NULL, "evicted_from"), 1);
	free(out);
	refresh(a, psc, PSC_REFRESH_EVICT);
	assert_int_equal(a->b.u.refresh_req.material.members.n, 2);
	uint8_t sa[32], sb[32];
	assert_true(rp_unwrap(a, &a->b.u.refresh_req.material, sa));
	refresh(b, psc, PSC_REFRESH_EVICT);
	assert_true(rp_unwrap(b, &b->b.u.refresh_req.material, sb));
	assert_memory_equal(sa, sb, 32);
	refresh(c, psc, PSC_REFRESH_REMOVED);
	tx = rp_initialize(c, 0, NULL, NULL);
	assert_true(rp_wait_answer(c, tx, WAIT));
	assert_true(c->is_error);
	assert_int_equal(c->err.psc_reason, PSC_REASON_BANNED);

	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL), 0);
	assert_int_equal(jnum(out, "counts", "peers_banned"), 1);
	assert_int_equal(jnum(out, "counts", "memberships"), 2);
	free(out);
	assert_int_equal(ctl(&out, "peer", "list", "--json", NULL), 0);
	assert_non_null(strstr(out, "\"banned\":true"));
	free(out);
	/* unknown Node-ID and malformed input are errors, with a message */
	assert_int_equal(ctl(&out, "peer", "ban", "00112233445566778899aabbccddeeff", NULL), 1);
	assert_non_null(strstr(out, "psc-kmsctl: "));
	free(out);
	assert_int_equal(ctl(&out, "peer", "ban", "xyz", "--json"), 2); /* checked locally */
	assert_non_null(strstr(out, "peer ban needs a Node-ID of 32 hex digits, not 'xyz'"));
	free(out);

	/* peer show: the record and its memberships */
	char a_hex[33];
	pt_hex(a->node_id, 16, a_hex);
	assert_int_equal(ctl(&out, "peer", "show", a_hex, "--json"), 0);
	assert_non_null(strstr(out, "\"subject\":\""));
	assert_non_null(strstr(out, "\"banned\":false"));
	assert_non_null(strstr(out, "\"connected\":true"));
	assert_non_null(strstr(out, psc_hex));
	free(out);
	assert_int_equal(ctl(&out, "peer", "show", c_hex, NULL), 0); /* human-readable */
	assert_non_null(strstr(out, "banned: true"));
	assert_non_null(strstr(out, "memberships:\n"));
	free(out);
	assert_int_equal(ctl(&out, "peer", "show", "00112233445566778899aabbccddeeff", NULL), 1);
	assert_non_null(strstr(out, "psc-kmsctl: peer 00112233445566778899aabbccddeeff"));
	free(out);

	/* unban: audited, the peer may Initialize again (its memberships stay gone) */
	assert_int_equal(ctl(&out, "peer", "unban", c_hex, "--json"), 0);
	assert_non_null(strstr(out, "\"unbanned\":\""));
	free(out);
	assert_int_equal(ctl(&out, "peer", "unban", c_hex, NULL), 1);
	assert_non_null(strstr(out, "is not banned"));
	free(out);
	assert_true(rp_initialize_wait(c, WAIT));
	assert_false(c->is_error);
	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL), 0);
	assert_int_equal(jnum(out, "counts", "peers_banned"), 0);
	assert_int_equal(jnum(out, "counts", "memberships"), 2);
	free(out);

	/* psc destroy by the operator: members told, the PSC a tombstone */
	if (ctl(&out, "psc", "destroy", psc_hex, "--json") != 0)
		fail_msg("psc destroy: %s", out);
	assert_non_null(strstr(out, "\"destroyed\":\""));
	free(out);
	refresh(a, psc, PSC_REFRESH_DESTROYED);
	refresh(b, psc, PSC_REFRESH_DESTROYED);
	assert_int_equal(ctl(&out, "psc", "list", "--json", NULL), 0);
	assert_null(strstr(out, psc_hex));
	free(out);
	assert_int_equal(ctl(&out, "psc", "show", psc_hex, "--json"), 0);
	assert_non_null(strstr(out, "\"destroyed\":true"));
	free(out);
	assert_int_equal(ctl(&out, "psc", "destroy", psc_hex, NULL), 1);
	assert_non_null(strstr(out, "no live PSC"));
	free(out);

	/* unknown commands and misplaced options are usage errors */
	assert_int_equal(ctl(&out, "peer", "frobnicate", c_hex, NULL), 2);
	assert_non_null(strstr(out, "unknown command"));
	free(out);
	assert_int_equal(ctl(&out, "status", "--wait", NULL, NULL), 2);
	free(out);

	/* policy reload and audit checkpoint */
	assert_int_equal(ctl(&out, "policy", "reload", "--json", NULL), 0);
	assert_non_null(strstr(out, "\"revision\":\""));
	free(out);
	assert_int_equal(ctl(&out, "audit", "checkpoint", NULL, NULL), 0);
	assert_non_null(strstr(out, "last_seq: "));
	free(out);

	/* the ban and the eviction are in the audit log, which still verifies */
	char cmd[40000];
	snprintf(cmd, sizeof(cmd),
		 "grep -h '\"peer.ban\"' '%s'/audit/audit-*.jsonl | grep -q '%s' && "
		 "grep -h '\"psc.evict\"' '%s'/audit/audit-*.jsonl | grep -q 'banned by the operator' && "
		 "grep -h '\"peer.ban\"' '%s'/audit/audit-*.jsonl | grep -q '\"action\":\"unban\"' && "
		 "grep -h '\"psc.destroy\"' '%s'/audit/audit-*.jsonl | grep -q 'psc-kmsctl'",
		 fx.kmsdir, c_hex, fx.kmsdir, fx.kmsdir, fx.kmsdir);
	assert_int_equal(kmsfx_sh(cmd), 0);

	/* the audit public key, exported from the token, verifies the log offline
	 * (init wrote the same key next to the CSR) */
	char pub[4400], pub2[4400];
	snprintf(pub, sizeof(pub), "%s/audit-pub.pem", fx.kmsdir);
	snprintf(pub2, sizeof(pub2), "%s/exported-pub.pem", fx.dir);
	setenv("SOFTHSM2_CONF", fx.softhsm, 1);
	assert_int_equal(ctl(&out, "audit", "pubkey", "-o", pub2), 0);
	free(out);
	snprintf(cmd, sizeof(cmd), "cmp '%s' '%s' && grep -q 'BEGIN PUBLIC KEY' '%s'", pub, pub2,
		 pub);
	assert_int_equal(kmsfx_sh(cmd), 0);
	assert_int_equal(kmsfx_audit(&fx, "verify", "--pubkey", pub2, &out), 0);
	assert_non_null(strstr(out, "signature"));
	free(out);

	rp_free(&a);
	rp_free(&b);
	rp_free(&c);

	/* the daemon gone: a clear error */
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(ctl(&out, "status", NULL, NULL, NULL), 1);
	assert_non_null(strstr(out, "cannot reach psc-kmsd at ipc://"));
	assert_non_null(strstr(out, "is it running?"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(status_lists_ban_reload_checkpoint),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
