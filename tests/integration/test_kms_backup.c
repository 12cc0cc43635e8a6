/*
 * Backup and restore (issue 8): an online backup taken while a peer keeps
 * rekeying a PSC, the state wiped, the backup restored with psc-kmsd stopped;
 * at its next start every restored PSC is rekeyed above the highest epoch ever
 * issued (including the epochs issued after the backup, which only the audit
 * log knows), members catch up to the same new secret and keep working. Also:
 * restore refuses while the daemon runs, refuses a backup onto a token without
 * its KEK (another installation) and says why; restore is audited and the log
 * still verifies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&fx, "kmsbackup", NULL, NULL) != 0 || kmsfx_start(&fx) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kmsfx_cleanup(&fx);
	return 0;
}

/* psc-kmsctl with up to four words against installation f (kmsfx_ctl). */
static int ctl_at(const kmsfx *f, char **out, const char *a1, const char *a2, const char *a3,
		  const char *a4)
{
	const char *w[] = {a1, a2, a3, a4, NULL};
	return kmsfx_ctl(f, out, w);
}

static int ctl(char **out, const char *a1, const char *a2, const char *a3, const char *a4)
{
	return ctl_at(&fx, out, a1, a2, a3, a4);
}

static unsigned long long jnum(const char *json, const char *key)
{
	const char *v = kmsfx_json_find(json, NULL, key);
	if (!v)
		fail_msg("no %s in %s", key, json);
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

/* Establishes `name` owned by `owner` with the given other members. */
static void establish(rawpeer *owner, const char *name, rawpeer **others, size_t n, uint8_t id[16])
{
	proto_node_id_t members[4];
	for (size_t i = 0; i < n; i++)
		memcpy(members[i], others[i]->node_id, 16);
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)name, strlen(name)};
	est.u.establish_req.params.members.items = members;
	est.u.establish_req.params.members.n = n;
	uint64_t tx = rp_send(owner, &est, false);
	assert_true(rp_wait_answer(owner, tx, WAIT));
	assert_false(owner->is_error);
	memcpy(id, owner->b.u.establish_ans.material.psc_id, 16);
	for (size_t i = 0; i < n; i++)
		assert_true(rp_wait_refresh(others[i], id, PSC_REFRESH_ESTABLISH, WAIT));
}

/* Waits for the next Refresh of psc to p (any reason); returns its epoch. */
static uint64_t next_refresh(rawpeer *p, const uint8_t psc[16])
{
	for (int i = 0; i < 20; i++) {
		assert_true(rp_wait_request(p, PSC_MSG_REFRESH_REQ, WAIT));
		if (memcmp(p->b.u.refresh_req.psc_id, psc, 16) == 0)
			return p->b.u.refresh_req.material.epoch;
	}
	fail_msg("%s: no Refresh for the PSC", p->name);
	return 0;
}

/* Catchup for one PSC held at `held`; the entry must be NEWER: its epoch and
 * unwrapped secret. */
static uint64_t catch_up(rawpeer *p, const uint8_t psc[16], uint64_t held, uint8_t secret[32])
{
	psc_body c = {.code = PSC_MSG_CATCHUP_REQ};
	c.u.catchup_req.timestamp = rp_now_ms();
	proto_held h = {.epoch = held};
	memcpy(h.psc_id, psc, 16);
	c.u.catchup_req.held.items = &h;
	c.u.catchup_req.held.n = 1;
	uint64_t tx = rp_send(p, &c, false);
	assert_true(rp_wait_answer(p, tx, WAIT));
	assert_false(p->is_error);
	proto_iter it;
	proto_catchup_entry en;
	proto_iter_init(&it, p->b.u.catchup_ans.entries.raw, p->b.u.catchup_ans.entries.raw_len);
	do /* the answer may list the peer's other PSCs too */
		assert_true(proto_next_catchup(&it, &en));
	while (memcmp(en.psc_id, psc, 16) != 0);
	assert_int_equal(en.status, PSC_CATCHUP_NEWER);
	assert_true(rp_unwrap(p, &en.material, secret));
	return en.epoch;
}

static void backup_under_load_wipe_restore(void **state)
{
	(void)state;
	char *out = NULL;
	rawpeer *a = init_peer("peer1"), *b = init_peer("peer2"), *c = init_peer("peer3"),
		*d = init_peer("peer4");
	uint8_t room1[16], room2[16];
	rawpeer *r1[] = {b, c}, *r2[] = {b};
	establish(a, "restore-room1", r1, 2, room1);
	establish(a, "restore-room2", r2, 1, room2);

	/* bulk: destroyed PSCs whose tombstones keep 32 long labels each, so the
	 * database is large enough to be copied over several loop turns */
	for (int i = 0; i < 48; i++) {
		char name[32], keys[32][8], value[256];
		proto_label labels[32];
		memset(value, 'v', 255);
		value[255] = '\0';
		for (int j = 0; j < 32; j++) {
			snprintf(keys[j], sizeof(keys[j]), "k%02d", j);
			labels[j].key = (proto_bytes){(const uint8_t *)keys[j], strlen(keys[j])};
			labels[j].value = (proto_bytes){(const uint8_t *)value, 255};
		}
		snprintf(name, sizeof(name), "bulk-%02d", i);
		psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
		est.u.establish_req.timestamp = rp_now_ms();
		est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)name, strlen(name)};
		est.u.establish_req.params.labels.items = labels;
		est.u.establish_req.params.labels.n = 32;
		uint64_t tx = rp_send(a, &est, false);
		assert_true(rp_wait_answer(a, tx, WAIT));
		assert_false(a->is_error);
		uint8_t bulk[16];
		memcpy(bulk, a->b.u.establish_ans.material.psc_id, 16);
		tx = rp_psc_req(a, PSC_MSG_DESTROY_REQ, bulk);
		assert_true(rp_wait_answer(a, tx, WAIT));
		assert_false(a->is_error);
	}

	/* load: peer4 joins and leaves room1 over and over (a rekey each time);
	 * the backup is taken in the middle, by psc-kmsd, while this goes on */
	char backup[4300], bin[4200], blog[4400];
	snprintf(backup, sizeof(backup), "%s/state-backup.db", fx.dir);
	snprintf(bin, sizeof(bin), "%s/kms/psc-kmsctl", PSC_BINARY_DIR);
	snprintf(blog, sizeof(blog), "%s/backup.out", fx.dir);
	char *bargv[] = {bin, "backup", backup, "--json", "-c", fx.config, NULL};
	pt_proc bp;
	uint64_t high1 = 0;
	for (int i = 0; i < 8; i++) {
		if (i == 3)
			assert_int_equal(pt_proc_start(&bp, bargv, NULL, blog), 0);
		uint64_t tx = rp_psc_req(d, PSC_MSG_JOIN_REQ, room1);
		assert_true(rp_wait_answer(d, tx, WAIT));
		assert_false(d->is_error);
		high1 = next_refresh(a, room1);
		tx = rp_psc_req(d, PSC_MSG_LEAVE_REQ, room1);
		assert_true(rp_wait_answer(d, tx, WAIT));
		assert_false(d->is_error);
		high1 = next_refresh(a, room1);
	}
	assert_int_equal(pt_proc_wait(&bp, 60000), 0);
	size_t blen = 0;
	char *bout = (char *)pt_read_file(blog, &blen);
	assert_non_null(bout);
	assert_non_null(strstr(bout, "\"ok\":true"));
	unsigned long long backup_seq = jnum(bout, "audit_seq");
	assert_true(backup_seq > 0);
	assert_int_equal(jnum(bout, "pscs"), 2);
	assert_true(jnum(bout, "steps") >= 2); /* copied between batches, over several turns */
	free(bout);
	struct stat st;
	assert_int_equal(stat(backup, &st), 0);
	assert_int_equal(st.st_mode & 0077, 0); /* a backup is for the service user only */
	/* an existing file is never overwritten */
	assert_int_equal(ctl(&out, "backup", backup, NULL, NULL), 1);
	assert_non_null(strstr(out, "cannot create"));
	free(out);
	/* epochs issued after the backup: the audit log knows them, the backup not */
	assert_true(high1 >= 16);
	uint8_t old_secret[32];
	assert_true(rp_unwrap(a, &a->b.u.refresh_req.material, old_secret));

	/* restore is refused while psc-kmsd runs */
	assert_int_equal(ctl(&out, "restore", backup, NULL, NULL), 1);
	assert_non_null(strstr(out, "psc-kmsd is running"));
	free(out);

	/* and onto another installation's token (another master KEK) */
	kmsfx other;
	assert_int_equal(kmsfx_install(&other, "kmsbackup-other", NULL, NULL), 0);
	assert_int_equal(ctl_at(&other, &out, "restore", backup, NULL, NULL), 1);
	assert_non_null(strstr(out, "restore refused, nothing changed"));
	assert_non_null(strstr(out, "same master KEK")
			    ? strstr(out, "same master KEK")
			    : strstr(out, "master KEK it was made under"));
	free(out);
	kmsfx_cleanup(&other);
	setenv("SOFTHSM2_CONF", fx.softhsm, 1);

	/* stop, wipe the state, restore */
	rp_free(&a);
	rp_free(&b);
	rp_free(&c);
	rp_free(&d);
	assert_int_equal(kmsfx_stop(&fx), 0);
	char cmd[40000];
	snprintf(cmd, sizeof(cmd), "rm -f '%s'/state/state.db*", fx.kmsdir);
	assert_int_equal(kmsfx_sh(cmd), 0);
	assert_int_equal(ctl(&out, "restore", backup, "--json", NULL), 0);
	assert_non_null(strstr(out, "\"ok\":true"));
	assert_int_equal(jnum(out, "backup_seq"), backup_seq);
	assert_int_equal(jnum(out, "pscs"), 2);
	assert_int_equal(jnum(out, "rekeys_due"), 2);
	assert_true(jnum(out, "blobs") >= 2);
	free(out);
	/* the backup file itself is left as it was */
	assert_int_equal(stat(backup, &st), 0);

	/* the daemon rekeys both PSCs above everything ever issued */
	assert_int_equal(kmsfx_start(&fx), 0);
	a = init_peer("peer1");
	b = init_peer("peer2");
	c = init_peer("peer3");
	uint8_t sa[32], sb[32], sc[32];
	uint64_t e1 = catch_up(a, room1, 1, sa);
	if (e1 <= high1)
		fail_msg("restored epoch %llu is not above %llu", (unsigned long long)e1,
			 (unsigned long long)high1);
	assert_memory_not_equal(sa, old_secret, 32);
	assert_int_equal(catch_up(b, room1, 1, sb), e1);
	assert_int_equal(catch_up(c, room1, 1, sc), e1);
	assert_memory_equal(sa, sb, 32);
	assert_memory_equal(sa, sc, 32);
	uint64_t e2 = catch_up(a, room2, 1, sa);
	assert_true(e2 > 1);
	assert_int_equal(catch_up(b, room2, 1, sb), e2);
	assert_memory_equal(sa, sb, 32);

	/* and keeps working: a join (by a peer that was never a member) rekeys
	 * above the restore epoch */
	d = init_peer("peer8");
	uint64_t tx = rp_psc_req(d, PSC_MSG_JOIN_REQ, room1);
	assert_true(rp_wait_answer(d, tx, WAIT));
	assert_false(d->is_error);
	assert_int_equal(next_refresh(a, room1), e1 + 1);
	assert_true(rp_unwrap(a, &a->b.u.refresh_req.material, sa));
	assert_true(rp_unwrap(d, &d->b.u.join_ans.material, sb));
	assert_memory_equal(sa, sb, 32);

	assert_int_equal(ctl(&out, "status", "--json", NULL, NULL), 0);
	assert_non_null(strstr(out, "\"restore_rekeys_pending\":false"));
	assert_int_equal(jnum(out, "pscs_live"), 2);
	free(out);

	/* audited: kms.backup, kms.restore, refreshes with reason restore; the log verifies */
	snprintf(cmd, sizeof(cmd),
		 "cat '%s'/audit/audit-*.jsonl > '%s/all.jsonl' && "
		 "grep -q '\"kms.backup\"' '%s/all.jsonl' && grep -q '\"kms.restore\"' "
		 "'%s/all.jsonl' && test $(grep '\"psc.refresh\"' '%s/all.jsonl' | "
		 "grep -c '\"restore\"') -eq 2",
		 fx.kmsdir, fx.dir, fx.dir, fx.dir, fx.dir);
	assert_int_equal(kmsfx_sh(cmd), 0);
	char pub[4400];
	snprintf(pub, sizeof(pub), "%s/audit-pub.pem", fx.kmsdir);
	assert_int_equal(kmsfx_audit(&fx, "verify", "--pubkey", pub, &out), 0);
	free(out);

	/* a second restore keeps the database it replaces */
	rp_free(&a);
	rp_free(&b);
	rp_free(&c);
	rp_free(&d);
	assert_int_equal(kmsfx_stop(&fx), 0);
	assert_int_equal(ctl(&out, "restore", backup, NULL, NULL), 0);
	assert_non_null(strstr(out, "previous database is kept as"));
	free(out);
	snprintf(cmd, sizeof(cmd), "ls '%s'/state/state.db.replaced-* >/dev/null", fx.kmsdir);
	assert_int_equal(kmsfx_sh(cmd), 0);
	assert_int_equal(kmsfx_start(&fx), 0);
	a = init_peer("peer1");
	assert_true(catch_up(a, room1, 1, sa) > e1 + 1);
	rp_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(backup_under_load_wipe_restore),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
