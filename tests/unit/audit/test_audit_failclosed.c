/*
 * test_audit_failclosed — what happens when the log cannot write: a really full
 * filesystem (a 64 KiB tmpfs, mounted as root; skipped with a message where
 * mounting is not allowed) gives PSC_E_AUDIT_NOSPACE, then PSC_E_AUDIT for every
 * key event until recovery succeeds; a torn last line after a crash is cut at
 * open and recorded; damage before intact records is refused, never "repaired";
 * the restart path (last seq, aborted records), rollback, locking and a key that
 * cannot sign.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aud_ckpt.h"
#include "aud_rec.h"
#include "aud_scan.h"
#include "aud_testutil.h"
#include "psc_test.h"

struct fx {
	char tmp[4096];
	char dir[4200];
	char pub[4200];
	char mnt[4200];
	bool mounted;
	EVP_PKEY *key;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || pt_tmpdir(f->tmp, "auditfc") != 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/log", f->tmp);
	snprintf(f->pub, sizeof(f->pub), "%s/pub.pem", f->tmp);
	f->key = at_new_key(f->pub);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	/* Always unmount, even when an assertion jumped out of the test. */
	if (f->mounted && umount2(f->mnt, MNT_DETACH) != 0)
		fprintf(stderr, "warning: cannot unmount %s: %s\n", f->mnt, strerror(errno));
	pt_rm_rf(f->tmp);
	EVP_PKEY_free(f->key);
	free(f);
	return 0;
}

static void contains(const char *out, const char *needle)
{
	if (!out || !strstr(out, needle))
		fail_msg("expected \"%s\" in:\n%s", needle, out ? out : "(null)");
}

static psc_rc append_one(aud_log *log, uint64_t *seq, psc_err *e)
{
	uint8_t psc[16] = {1, 2, 3};
	aud_event ev = {.type = AUD_EV_PSC_REFRESH,
			.psc_id = psc,
			.has_epoch = true,
			.epoch = 9,
			.key_id = "k1",
			.result = "ok"};
	return aud_log_append(log, &ev, seq, e);
}

static void full_filesystem_fails_closed_until_recovered(void **state)
{
	struct fx *f = *state;
	snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->tmp);
	assert_int_equal(mkdir(f->mnt, 0700), 0);
	if (mount("tmpfs", f->mnt, "tmpfs", 0, "size=64k") != 0) {
		printf("SKIP: cannot mount a 64 KiB tmpfs at %s (%s): needs root or "
		       "CAP_SYS_ADMIN; the ENOSPC path is not exercised here\n",
		       f->mnt, strerror(errno));
		skip();
	}
	f->mounted = true;
	char dir[4300];
	snprintf(dir, sizeof(dir), "%s/log", f->mnt);
	/* segment_max 1: every batch opens a new segment, so every commit needs a fresh
	 * page and "full" is unambiguous (no slack left in a half-used page). */
	aud_log *log = at_open(dir, f->key, 1, 1000);
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = PSC_OK;
	uint64_t durable = 0, seq = 0;
	int i;
	for (i = 0; i < 1000 && rc == PSC_OK; i++) {
		for (int k = 0; k < 3 && rc == PSC_OK; k++)
			rc = append_one(log, &seq, &e);
		if (rc == PSC_OK)
			rc = aud_log_commit(log, &durable, &e);
	}
	printf("filesystem full after %d batches, last durable seq %llu: %s\n", i,
	       (unsigned long long)durable, psc_err_text(&e));
	assert_true(i > 1 && i < 1000);
	assert_int_equal(rc, PSC_E_AUDIT_NOSPACE);
	contains(e.detail, "No space left on device");
	assert_true(aud_log_failed(log));
	assert_int_equal(aud_log_last_seq(log), durable);

	/* Every key event is refused now, with the generic fail-closed error. */
	assert_int_equal(append_one(log, &seq, &e), PSC_E_AUDIT);
	contains(e.detail, "failed closed");
	assert_int_equal(aud_log_commit(log, NULL, &e), PSC_E_AUDIT);
	assert_int_equal(aud_log_checkpoint(log, &e), PSC_E_AUDIT);

	/* Take every page that is left, so recovery cannot succeed yet. */
	char filler[4400];
	snprintf(filler, sizeof(filler), "%s/filler", f->mnt);
	int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char page[4096] = {0};
	while (write(fd, page, sizeof(page)) > 0)
		;
	close(fd);
	assert_int_equal(aud_log_recover(log, &e), PSC_E_AUDIT_NOSPACE);
	assert_true(aud_log_failed(log));
	assert_int_equal(append_one(log, &seq, &e), PSC_E_AUDIT);
	assert_int_equal(aud_log_last_seq(log), durable);

	/* Space comes back (the operator grows the volume; the filler goes too):
	 * recovery records itself and key events flow again. */
	assert_int_equal(unlink(filler), 0);
	assert_int_equal(mount("tmpfs", f->mnt, "tmpfs", MS_REMOUNT, "size=1m"), 0);
	psc_err_clear(&e);
	if (aud_log_recover(log, &e) != PSC_OK)
		fail_msg("recover: %s", psc_err_text(&e));
	assert_false(aud_log_failed(log));
	uint64_t after = aud_log_last_seq(log);
	assert_true(after > durable); /* link + log.recover */
	assert_int_equal(append_one(log, &seq, &e), PSC_OK);
	assert_int_equal(seq, after + 2); /* segment_max 1: a new segment, its link first */
	uint64_t last = 0;
	assert_int_equal(aud_log_commit(log, &last, &e), PSC_OK);
	assert_int_equal(last, seq);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);

	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", dir, "--pubkey", f->pub, NULL, NULL), 0);
	contains(out, "1 fail-closed recovery");
	free(out);
	assert_int_equal(at_audit(&out, "show", dir, "--event", "log.recover", NULL, NULL), 0);
	contains(out, "error=\"PSC_E_AUDIT_NOSPACE\"");
	char want[64];
	snprintf(want, sizeof(want), "refused_first_seq=%llu", (unsigned long long)durable + 1);
	contains(out, want);
	free(out);
}

static void torn_last_line_is_cut_and_recorded(void **state)
{
	struct fx *f = *state;
	aud_log *log = at_open(f->dir, f->key, 1 << 20, 8);
	at_fill(log, 20, 5);
	aud_log_free(&log); /* a crash: no orderly close */
	assert_null(log);

	static const char torn[] = "{\"seq\":21,\"time\":\"2026-11-";
	const char *seg = at_seg(f->dir, 1);
	struct stat st;
	assert_int_equal(stat(seg, &st), 0);
	off_t off = st.st_size;
	at_append(seg, torn, strlen(torn));

	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", f->dir, NULL, NULL, NULL, NULL), 2);
	contains(out, "torn last line");
	free(out);

	log = at_open(f->dir, f->key, 1 << 20, 8);
	assert_int_equal(aud_log_last_seq(log), 21); /* 20 records + the repair record */
	assert_int_equal(aud_log_close(&log, NULL), PSC_OK);

	/* The cut bytes are kept, and the record says what was cut. */
	char saved[4500];
	snprintf(saved, sizeof(saved), "%s/torn-00000001-%012lld.bin", f->dir, (long long)off);
	size_t sl = 0;
	char *s = at_read(saved, &sl);
	assert_int_equal(sl, strlen(torn));
	assert_memory_equal(s, torn, sl);
	free(s);
	uint8_t sha[32];
	char hex[65];
	unsigned int hl = 0;
	EVP_Digest(torn, strlen(torn), sha, &hl, EVP_sha256(), NULL);
	aud_hex(sha, 32, hex);
	char line[AUD_LINE_MAX + 1];
	at_line(seg, 20, line, sizeof(line));
	contains(line, "\"seq\":21,");
	contains(line, "\"event\":\"log.repair\"");
	char want[256];
	snprintf(want, sizeof(want),
		 "\"detail\":{\"file\":\"audit-00000001.jsonl\",\"offset\":%lld,\"bytes_cut\":%zu,"
		 "\"sha256\":\"%s\"",
		 (long long)off, strlen(torn), hex);
	contains(line, want);
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	contains(out, "1 torn-tail repair");
	free(out);

	/* A garbage line and a torn one after it: both cut in one repair. */
	log = at_open(f->dir, f->key, 1 << 20, 8);
	at_fill(log, 3, 3);
	aud_log_free(&log);
	at_append(seg, "\0\0\0\0garbage\n{\"se", 17);
	log = at_open(f->dir, f->key, 1 << 20, 8);
	assert_int_equal(aud_log_last_seq(log), 25);
	assert_int_equal(aud_log_close(&log, NULL), PSC_OK);
	at_line(seg, 24, line, sizeof(line));
	contains(line, "\"bytes_cut\":17,");
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	contains(out, "2 torn-tail repair");
	free(out);
}

static void damage_before_intact_records_is_refused_not_repaired(void **state)
{
	struct fx *f = *state;
	aud_log *log = at_open(f->dir, f->key, 1 << 20, 8);
	at_fill(log, 20, 5);
	assert_int_equal(aud_log_close(&log, NULL), PSC_OK);
	const char *seg = at_seg(f->dir, 1);
	size_t len = 0;
	char *s = at_read(seg, &len);
	char *p = s;
	for (int i = 0; i < 9; i++)
		p = strchr(p, '\n') + 1;
	p[3] = 'X'; /* line 10 no longer parses; lines 11..20 are intact */
	at_write(seg, s, len);
	free(s);
	psc_err e;
	psc_err_clear(&e);
	aud_log_opts o = {.dir = f->dir, .kms_id = "kms-test.1", .sign_key = f->key};
	assert_int_equal(aud_log_open(&log, &o, &e), PSC_E_AUDIT_MALFORMED);
	assert_null(log);
	contains(e.detail, "line 10");
	contains(e.detail, "psc-audit verify");
	struct stat st;
	assert_int_equal(stat(seg, &st), 0);
	assert_int_equal((size_t)st.st_size, len); /* nothing was cut */
}

static void restart_reports_last_seq_and_records_aborted(void **state)
{
	struct fx *f = *state;
	aud_log *log = at_open(f->dir, f->key, 1 << 20, 100);
	assert_int_equal(aud_log_last_seq(log), 0);
	at_fill(log, 5, 5);
	aud_log_free(&log); /* crash after the audit commit, before the state commit */

	log = at_open(f->dir, f->key, 1 << 20, 100);
	assert_int_equal(aud_log_last_seq(log), 5);
	/* The state store says it covered seq 3: 4 and 5 never happened. */
	psc_err e;
	psc_err_clear(&e);
	uint64_t seq = 0, last = 0;
	assert_int_equal(aud_log_append_aborted(log, 6, 7, NULL, &seq, &e), PSC_E_INVALID_ARG);
	assert_int_equal(aud_log_append_aborted(log, 4, 5, "restart", &seq, &e), PSC_OK);
	assert_int_equal(seq, 6);
	assert_int_equal(aud_log_commit(log, &last, &e), PSC_OK);
	assert_int_equal(last, 6);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	contains(out, "1 aborted record");
	free(out);
	assert_int_equal(at_audit(&out, "show", f->dir, "--event", "aborted", NULL, NULL), 0);
	contains(out, "first_seq=4 last_seq=5");
	free(out);

	/* The verifier's chain rules refuse an aborted record naming itself or later seqs. */
	aud_chain ch;
	aud_chain_init(&ch);
	aud_chain_begin_segment(&ch, 1);
	aud_parsed *p = malloc(sizeof(*p));
	assert_non_null(p);
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.seq = 1;
	memcpy(r.time, "2026-11-26T17:20:00.123Z", AUD_TIME_LEN + 1);
	r.kms = "k";
	r.event = "kms.start";
	r.result = "ok";
	char line[AUD_LINE_MAX + 1];
	size_t n = 0;
	assert_int_equal(aud_rec_format(&r, line, sizeof(line), &n), PSC_OK);
	assert_int_equal(aud_chain_feed(&ch, line, n, p, NULL, &e), PSC_OK);
	r.seq = 2;
	memcpy(r.prev, ch.last, 32);
	r.event = "aborted";
	r.result = "aborted";
	r.n_detail = 2;
	r.detail[0] = (aud_kv){.key = "first_seq", .num = 1};
	r.detail[1] = (aud_kv){.key = "last_seq", .num = 2};
	assert_int_equal(aud_rec_format(&r, line, sizeof(line), &n), PSC_OK);
	assert_int_equal(aud_chain_feed(&ch, line, n, p, NULL, &e), PSC_E_AUDIT_TAMPERED);
	contains(e.detail, "aborted record must name");
	r.detail[1].num = 1;
	assert_int_equal(aud_rec_format(&r, line, sizeof(line), &n), PSC_OK);
	assert_int_equal(aud_chain_feed(&ch, line, n, p, NULL, &e), PSC_OK);
	free(p);
}

static void rollback_and_bad_input_leave_no_trace(void **state)
{
	struct fx *f = *state;
	aud_log *log = at_open(f->dir, f->key, 1 << 20, 100);
	psc_err e;
	psc_err_clear(&e);
	uint64_t seq = 0, last = 0;
	assert_int_equal(append_one(log, &seq, &e), PSC_OK);
	assert_int_equal(seq, 1);
	aud_log_rollback(log);
	/* Bad fields are refused before a number is taken. */
	aud_event ev = {.type = AUD_EV_PSC_JOIN, .result = NULL};
	assert_int_equal(aud_log_append(log, &ev, &seq, &e), PSC_E_AUDIT_BAD_FIELD);
	contains(e.detail, "'result'");
	ev.result = "ok";
	ev.type = AUD_EV_SEGMENT_LINK; /* reserved to the log */
	assert_int_equal(aud_log_append(log, &ev, &seq, &e), PSC_E_AUDIT_BAD_FIELD);
	ev.type = AUD_EV_PSC_JOIN;
	char big[AUD_TEXT_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	aud_actor a = {.subject = big};
	ev.actor = &a;
	assert_int_equal(aud_log_append(log, &ev, &seq, &e), PSC_E_AUDIT_TOO_LARGE);
	a.subject = "CN=ok";
	aud_kv kv = {.key = "Bad-Key", .str = "x"};
	ev.detail = &kv;
	ev.n_detail = 1;
	assert_int_equal(aud_log_append(log, &ev, &seq, &e), PSC_E_AUDIT_BAD_FIELD);
	ev.n_detail = 0;
	assert_int_equal(aud_log_append(log, &ev, &seq, &e), PSC_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(aud_log_commit(log, &last, &e), PSC_OK);
	assert_int_equal(last, 1);
	/* A second process (here: a second open) cannot take the directory. */
	aud_log *other = NULL;
	aud_log_opts o = {.dir = f->dir, .kms_id = "kms-test.1", .sign_key = f->key};
	assert_int_equal(aud_log_open(&other, &o, &e), PSC_E_AUDIT_LOCKED);
	assert_null(other);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);
	/* The directory belongs to one KMS id. */
	o.kms_id = "another-kms";
	assert_int_equal(aud_log_open(&other, &o, &e), PSC_E_AUDIT_BAD_FIELD);
	contains(e.detail, "belongs to KMS 'kms-test.1'");
	assert_null(other);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	contains(out, "OK: 1 records");
	free(out);
}

static void key_that_cannot_sign_fails_closed(void **state)
{
	struct fx *f = *state;
	/* The public half only: EVP_DigestSign fails, as a dead HSM session would. */
	FILE *pf = fopen(f->pub, "r");
	assert_non_null(pf);
	EVP_PKEY *pub = PEM_read_PUBKEY(pf, NULL, NULL, NULL);
	fclose(pf);
	assert_non_null(pub);
	aud_log *log = at_open(f->dir, pub, 1 << 20, 100);
	psc_err e;
	psc_err_clear(&e);
	uint64_t seq = 0;
	assert_int_equal(append_one(log, &seq, &e), PSC_OK);
	assert_int_equal(aud_log_commit(log, NULL, &e), PSC_OK);
	assert_int_equal(aud_log_checkpoint(log, &e), PSC_E_AUDIT_SIGN);
	contains(e.detail, "signing failed");
	assert_true(aud_log_failed(log));
	assert_int_equal(append_one(log, &seq, &e), PSC_E_AUDIT);
	/* Closing a failed log cannot write the final checkpoint, and says so. */
	assert_int_equal(aud_log_close(&log, &e), PSC_E_AUDIT);
	assert_null(log);
	EVP_PKEY_free(pub);
}

/* Sizes of all checkpoints in dir, in file order; returns how many. */
static size_t checkpoint_sizes(const char *dir, uint64_t *out, size_t max)
{
	char cpfile[4500], line[AUD_CKPT_LINE_MAX + 1];
	snprintf(cpfile, sizeof(cpfile), "%s/checkpoints.jsonl", dir);
	if (access(cpfile, F_OK) != 0)
		return 0;
	size_t n = at_nlines(cpfile);
	assert_true(n <= max);
	for (size_t i = 0; i < n; i++) {
		aud_ckpt c;
		size_t l = at_line(cpfile, i, line, sizeof(line));
		assert_int_equal(aud_ckpt_parse(line, l, &c, NULL), PSC_OK);
		out[i] = c.size;
	}
	return n;
}

static void checkpoints_follow_count_time_rotation_and_close(void **state)
{
	struct fx *f = *state;
	uint64_t sz[64];
	aud_log_opts o = {.dir = f->dir,
			  .kms_id = "kms-test.1",
			  .sign_key = f->key,
			  .checkpoint_every = 10,
			  .checkpoint_secs = 1,
			  .segment_max_bytes = 1 << 20};
	aud_log *log = NULL;
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(aud_log_open(&log, &o, &e), PSC_OK);
	/* Count: once 10 records are durable, the next commit checkpoints them first. */
	at_fill(log, 10, 10);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 0);
	at_fill(log, 1, 1);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 1);
	assert_int_equal(sz[0], 10);
	/* Time: after checkpoint_secs a tick covers what was committed since. */
	at_fill(log, 2, 2);
	assert_int_equal(aud_log_tick(log, &e), PSC_OK);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 1); /* too early */
	usleep(1100 * 1000);
	assert_int_equal(aud_log_tick(log, &e), PSC_OK);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 2);
	assert_int_equal(sz[1], 13);
	assert_int_equal(aud_log_tick(log, &e), PSC_OK); /* nothing new: no checkpoint */
	assert_int_equal(aud_log_checkpoint(log, &e), PSC_OK);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 2);
	/* Close: a final checkpoint of everything. */
	at_fill(log, 3, 3);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);
	assert_int_equal(checkpoint_sizes(f->dir, sz, 64), 3);
	assert_int_equal(sz[2], 16);

	/* Rotation: each closed segment is covered by a checkpoint of exactly its end. */
	o.segment_max_bytes = 2048;
	o.checkpoint_every = 1000;
	o.checkpoint_secs = 3600;
	assert_int_equal(aud_log_open(&log, &o, &e), PSC_OK);
	at_fill(log, 30, 2);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);
	size_t ncp = checkpoint_sizes(f->dir, sz, 64);
	unsigned nseg = at_nseg(f->dir);
	assert_true(nseg >= 3);
	for (unsigned s = 2; s <= nseg; s++) {
		char line[AUD_LINE_MAX + 1];
		at_line(at_seg(f->dir, s), 0, line, sizeof(line));
		const char *p = strstr(line, "\"prev_last_seq\":");
		assert_non_null(p);
		uint64_t last = strtoull(p + strlen("\"prev_last_seq\":"), NULL, 10);
		bool found = false;
		for (size_t i = 0; i < ncp; i++)
			found |= sz[i] == last;
		if (!found)
			fail_msg("no checkpoint at the end of segment %u (seq %llu)", s - 1,
				 (unsigned long long)last);
	}
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(full_filesystem_fails_closed_until_recovered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(torn_last_line_is_cut_and_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(damage_before_intact_records_is_refused_not_repaired,
						setup, teardown),
		cmocka_unit_test_setup_teardown(restart_reports_last_seq_and_records_aborted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(rollback_and_bad_input_leave_no_trace, setup,
						teardown),
		cmocka_unit_test_setup_teardown(key_that_cannot_sign_fails_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(checkpoints_follow_count_time_rotation_and_close,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
