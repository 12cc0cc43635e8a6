/*
 * test_audit_log — the audit log end to end: records written through aud_log,
 * rotated and checkpointed, then judged by the real psc-audit binary. Each tamper
 * case edits the files the way an attacker would and expects the exit code and
 * the reason an auditor would read. The checkpoint signature is also checked with
 * the openssl CLI alone, using the commands docs/audit.md gives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aud_ckpt.h"
#include "aud_rec.h"
#include "aud_testutil.h"
#include "psc_test.h"

#define SEG_MAX (32 * 1024)
#define CP_EVERY 16
#define NREC 200

struct fx {
	char tmp[4096];
	char dir[4200];     /* the pristine log */
	char pub[4200];
	EVP_PKEY *key;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || pt_tmpdir(f->tmp, "audit") != 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/log", f->tmp);
	snprintf(f->pub, sizeof(f->pub), "%s/audit-pub.pem", f->tmp);
	f->key = at_new_key(f->pub);
	aud_log *log = at_open(f->dir, f->key, SEG_MAX, CP_EVERY);
	at_fill(log, NREC, 7);
	psc_err e;
	psc_err_clear(&e);
	if (aud_log_close(&log, &e) != PSC_OK)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	pt_rm_rf(f->tmp);
	EVP_PKEY_free(f->key);
	free(f);
	return 0;
}

/* A scratch copy of the pristine log for one tamper case. */
static const char *copy_of(struct fx *f, const char *name)
{
	static char p[4400];
	snprintf(p, sizeof(p), "%s/%s", f->tmp, name);
	at_copy_dir(f->dir, p);
	return p;
}

static void contains(const char *out, const char *needle)
{
	if (!strstr(out, needle))
		fail_msg("expected \"%s\" in:\n%s", needle, out);
}

static void appended_records_rotate_and_verify(void **state)
{
	struct fx *f = *state;
	unsigned nseg = at_nseg(f->dir);
	assert_true(nseg >= 3);
	/* Every record is on disk, once, in order, across segments. */
	size_t total = 0;
	for (unsigned s = 1; s <= nseg; s++)
		total += at_nlines(at_seg(f->dir, s));
	assert_int_equal(total, NREC + (nseg - 1)); /* + one segment.link per rotation */
	char line[AUD_LINE_MAX + 1];
	at_line(at_seg(f->dir, 2), 0, line, sizeof(line));
	assert_non_null(strstr(line, "\"event\":\"segment.link\""));
	assert_non_null(strstr(line, "\"detail\":{\"segment\":2,\"prev_segment\":\"audit-00000001.jsonl\""));

	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, NULL, NULL), 0);
	char want[64];
	snprintf(want, sizeof(want), "OK: %u records in %u segment(s)", NREC + nseg - 1, nseg);
	contains(out, want);
	contains(out, "signature(s) verified");
	free(out);

	/* Reopening continues the same chain and numbering. */
	aud_log *log = at_open(f->dir, f->key, SEG_MAX, CP_EVERY);
	assert_int_equal(aud_log_last_seq(log), NREC + nseg - 1);
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(aud_log_close(&log, &e), PSC_OK);
	assert_null(log);
}

static void records_escape_untrusted_text_and_never_hold_keys(void **state)
{
	struct fx *f = *state;
	char line[AUD_LINE_MAX + 1];
	size_t n = at_line(at_seg(f->dir, 1), 0, line, sizeof(line));
	/* ASCII only, with the certificate subject escaped, and it parses back exactly. */
	for (size_t i = 0; i < n; i++)
		assert_true(line[i] >= 0x20 && line[i] < 0x7f);
	assert_non_null(strstr(line, "\"subject\":\"CN=peer \\\"one\\\",O=Ex\\\\ample\\n\\u0001 "
				     "caf\\u00e9 \\ud83d\\udd11\""));
	aud_parsed *p = malloc(sizeof(*p));
	assert_non_null(p);
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(aud_rec_parse(line, n, p, &e), PSC_OK);
	assert_string_equal(p->rec.subject,
			    "CN=peer \"one\",O=Ex\\ample\n\x01 caf\xc3\xa9 \xf0\x9f\x94\x91");
	assert_int_equal(p->rec.seq, 1);
	assert_string_equal(p->rec.event, "peer.initialize");
	/* Field order is fixed. */
	const char *order[] = {"\"seq\"", "\"time\"", "\"kms\"", "\"req\"", "\"event\"",
			       "\"actor\"", "\"psc\"", "\"epoch\"", "\"key\"", "\"decision\"",
			       "\"result\"", "\"detail\"", "\"prev\""};
	const char *last = line;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const char *q = strstr(last, order[i]);
		assert_non_null(q);
		last = q;
	}
	/* Invalid UTF-8 becomes U+FFFD; a second spelling of a record is refused. */
	aud_rec r = p->rec;
	r.subject = "bad \xff\xfe";
	char buf[AUD_LINE_MAX + 1];
	size_t bl = 0;
	assert_int_equal(aud_rec_format(&r, buf, sizeof(buf), &bl), PSC_OK);
	buf[bl] = '\0';
	assert_non_null(strstr(buf, "bad \\ufffd\\ufffd"));
	char *alt = strdup(line);
	char *s = strstr(alt, "\\u00e9");
	assert_non_null(s);
	s[5] = 'E'; /* \u00E9: same character, other spelling */
	assert_int_equal(aud_rec_parse(alt, n, p, &e), PSC_E_AUDIT_MALFORMED);
	free(alt);
	free(p);
}

static void flipped_byte_is_detected(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "flip");
	size_t len = 0;
	char *s = at_read(at_seg(d, 1), &len);
	/* Line index 4 is seq 5; change one byte of its result ("ok" -> "oK"). */
	char *p = s;
	for (int i = 0; i < 4; i++)
		p = strchr(p, '\n') + 1;
	char *r = strstr(p, "\"result\":\"ok\"");
	assert_non_null(r);
	assert_true(r < strchr(p, '\n'));
	r[11] = 'K';
	at_write(at_seg(d, 1), s, len);
	free(s);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	contains(out, "TAMPERED: first bad seq 6");
	contains(out, "prev is not the SHA-256 of record 5");
	free(out);
}

/* Removes lines [from, to) of a file. */
static void delete_lines(const char *path, size_t from, size_t to)
{
	size_t len = 0;
	char *s = at_read(path, &len);
	char *a = s, *b;
	for (size_t i = 0; i < from; i++)
		a = strchr(a, '\n') + 1;
	b = a;
	for (size_t i = from; i < to; i++)
		b = strchr(b, '\n') + 1;
	memmove(a, b, (size_t)(s + len - b));
	at_write(path, s, len - (size_t)(b - a));
	free(s);
}

static void deleted_line_is_detected(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "delete");
	delete_lines(at_seg(d, 1), 9, 10); /* seq 10 */
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	contains(out, "first bad seq 11");
	contains(out, "expected seq 10");
	free(out);
}

static void swapped_lines_are_detected(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "swap");
	char a[AUD_LINE_MAX + 1], b[AUD_LINE_MAX + 1];
	size_t la = at_line(at_seg(d, 1), 19, a, sizeof(a)); /* seq 20 */
	size_t lb = at_line(at_seg(d, 1), 20, b, sizeof(b)); /* seq 21 */
	size_t len = 0;
	char *s = at_read(at_seg(d, 1), &len);
	char *pa = strstr(s, a);
	assert_non_null(pa);
	memcpy(pa, b, lb);
	pa[lb] = '\n';
	memcpy(pa + lb + 1, a, la);
	at_write(at_seg(d, 1), s, len);
	free(s);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	contains(out, "first bad seq 21");
	contains(out, "expected seq 20");
	free(out);
}

static void dropped_tail_is_detected_only_with_a_trusted_checkpoint(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "tail");
	char trusted[4500], cpfile[4500], cp[AUD_CKPT_LINE_MAX + 1];
	/* The auditor exported the newest checkpoint earlier. */
	snprintf(cpfile, sizeof(cpfile), "%s/checkpoints.jsonl", d);
	size_t ncp = at_nlines(cpfile);
	size_t cl = at_line(cpfile, ncp - 1, cp, sizeof(cp));
	snprintf(trusted, sizeof(trusted), "%s/trusted.json", f->tmp);
	at_write(trusted, cp, cl);
	aud_ckpt t;
	assert_int_equal(aud_ckpt_parse(cp, cl, &t, NULL), PSC_OK);

	/* The attacker drops the last 3 records and every checkpoint covering them. */
	unsigned nseg = at_nseg(d);
	size_t nl = at_nlines(at_seg(d, nseg));
	assert_true(nl >= 4);
	delete_lines(at_seg(d, nseg), nl - 3, nl);
	uint64_t kept = t.size - 3;
	size_t keep = 0;
	for (size_t i = 0; i < ncp; i++) {
		aud_ckpt c;
		size_t n = at_line(cpfile, i, cp, sizeof(cp));
		assert_int_equal(aud_ckpt_parse(cp, n, &c, NULL), PSC_OK);
		if (c.size <= kept)
			keep = i + 1;
	}
	delete_lines(cpfile, keep, ncp);

	char *out = NULL;
	/* Without an outside checkpoint the shortened log is self-consistent... */
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 0);
	free(out);
	/* ...with one, the truncation is exposed. */
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, "--trusted", trusted), 1);
	char want[128];
	snprintf(want, sizeof(want), "first bad seq %llu", (unsigned long long)kept + 1);
	contains(out, want);
	contains(out, "tail truncated");
	free(out);
	/* The pristine log matches the same trusted checkpoint. */
	assert_int_equal(at_audit(&out, "verify", f->dir, "--pubkey", f->pub, "--trusted", trusted),
			 0);
	contains(out, "trusted checkpoint at size");
	free(out);
}

static void checkpoint_signed_by_another_key_is_detected(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "forge");
	char cpfile[4500], cp[AUD_CKPT_LINE_MAX + 2];
	snprintf(cpfile, sizeof(cpfile), "%s/checkpoints.jsonl", d);
	size_t ncp = at_nlines(cpfile);
	size_t n = at_line(cpfile, ncp - 1, cp, sizeof(cp));
	aud_ckpt c;
	assert_int_equal(aud_ckpt_parse(cp, n, &c, NULL), PSC_OK);
	EVP_PKEY *other = at_new_key(NULL);
	assert_int_equal(aud_ckpt_sign(&c, other, NULL), PSC_OK);
	EVP_PKEY_free(other);
	assert_int_equal(aud_ckpt_format(&c, cp, sizeof(cp) - 1, &n), PSC_OK);
	cp[n++] = '\n';
	delete_lines(cpfile, ncp - 1, ncp);
	at_append(cpfile, cp, n);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	contains(out, "does not verify with the given public key");
	free(out);
	/* Without --pubkey nothing can tell, and verify says signatures went unchecked. */
	assert_int_equal(at_audit(&out, "verify", d, NULL, NULL, NULL, NULL), 0);
	contains(out, "signatures NOT checked");
	free(out);
}

static void replaced_segment_is_detected(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "replace");
	/* Another log written the same way: well-formed segments, other history. */
	char other[4400];
	snprintf(other, sizeof(other), "%s/other", f->tmp);
	aud_log *log = at_open(other, f->key, SEG_MAX, CP_EVERY);
	at_fill(log, NREC, 7);
	assert_int_equal(aud_log_close(&log, NULL), PSC_OK);
	size_t len = 0;
	char *s = at_read(at_seg(other, 2), &len);
	at_write(at_seg(d, 2), s, len);
	free(s);
	char first[AUD_LINE_MAX + 1];
	at_line(at_seg(d, 2), 0, first, sizeof(first));
	aud_parsed *p = malloc(sizeof(*p));
	assert_non_null(p);
	assert_int_equal(aud_rec_parse(first, strlen(first), p, NULL), PSC_OK);
	char want[64];
	snprintf(want, sizeof(want), "first bad seq %llu", (unsigned long long)p->rec.seq);
	free(p);
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	contains(out, want);
	contains(out, "prev is not the SHA-256");
	free(out);
	/* Removing a middle segment entirely is named too. */
	const char *d2 = copy_of(f, "remove");
	assert_int_equal(unlink(at_seg(d2, 2)), 0);
	assert_int_equal(at_audit(&out, "verify", d2, NULL, NULL, NULL, NULL), 1);
	contains(out, "audit-00000002.jsonl is missing");
	free(out);
}

/* Changes record `seq`'s result and recomputes every later prev: a chain that is
 * internally perfect again. Only the signed checkpoints can catch this. */
static void rewrite_history(const char *dir, uint64_t seq)
{
	aud_parsed *p = malloc(sizeof(*p));
	assert_non_null(p);
	uint8_t prev[32] = {0};
	char out[AUD_LINE_MAX + 2];
	for (unsigned s = 1; s <= at_nseg(dir); s++) {
		size_t len = 0;
		char *txt = at_read(at_seg(dir, s), &len);
		char *res = malloc(len + 4096);
		size_t rl = 0;
		for (char *l = txt; *l;) {
			char *nl = strchr(l, '\n');
			*nl = '\0';
			assert_int_equal(aud_rec_parse(l, (size_t)(nl - l), p, NULL), PSC_OK);
			memcpy(p->rec.prev, prev, 32);
			if (p->rec.seq == seq)
				p->rec.result = "denied";
			size_t n = 0;
			assert_int_equal(aud_rec_format(&p->rec, out, sizeof(out) - 1, &n), PSC_OK);
			unsigned int hl = 0;
			EVP_Digest(out, n, prev, &hl, EVP_sha256(), NULL);
			memcpy(res + rl, out, n);
			res[rl + n] = '\n';
			rl += n + 1;
			l = nl + 1;
		}
		at_write(at_seg(dir, s), res, rl);
		free(res);
		free(txt);
	}
	free(p);
}

static void rewritten_history_with_recomputed_chain_fails_checkpoints(void **state)
{
	struct fx *f = *state;
	const char *d = copy_of(f, "rewrite");
	rewrite_history(d, 30);
	/* The first checkpoint covering seq 30 is the first to disagree. */
	char cpfile[4500], cp[AUD_CKPT_LINE_MAX + 1];
	snprintf(cpfile, sizeof(cpfile), "%s/checkpoints.jsonl", d);
	uint64_t first = 0;
	for (size_t i = 0; i < at_nlines(cpfile) && !first; i++) {
		aud_ckpt c;
		size_t n = at_line(cpfile, i, cp, sizeof(cp));
		assert_int_equal(aud_ckpt_parse(cp, n, &c, NULL), PSC_OK);
		if (c.size >= 30)
			first = c.size;
	}
	assert_true(first >= 30);
	char want[128];
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", d, "--pubkey", f->pub, NULL, NULL), 1);
	snprintf(want, sizeof(want), "first bad seq %llu", (unsigned long long)first);
	contains(out, want);
	snprintf(want, sizeof(want), "Merkle root does not match records 1..%llu",
		 (unsigned long long)first);
	contains(out, want);
	free(out);
}

/* docs/audit.md, "Checking a checkpoint with openssl alone": the same commands. */
static const char openssl_script[] =
	"set -e\n"
	"line=$(tail -n 1 \"$DIR/checkpoints.jsonl\")\n"
	"field() { printf '%s' \"$line\" | sed -n \"s/.*\\\"$1\\\":\\\"\\{0,1\\}\\([^\\\",}]*\\).*/\\1/p\"; }\n"
	"printf 'psc-audit-checkpoint-v1\\nkms %s\\nsize %s\\nroot %s\\ntime %s\\n' \\\n"
	"  \"$(field kms)\" \"$(field size)\" \"$(field root)\" \"$(field time)\" > \"$OUT/signed.bin\"\n"
	"field sig | openssl base64 -d -A > \"$OUT/sig.der\"\n"
	"openssl dgst -sha256 -verify \"$PUB\" -signature \"$OUT/sig.der\" \"$OUT/signed.bin\"\n";

static void checkpoint_signature_verifies_with_openssl_cli(void **state)
{
	struct fx *f = *state;
	char out_dir[4400], env_dir[4500], env_out[4500], env_pub[4500];
	snprintf(out_dir, sizeof(out_dir), "%s", f->tmp);
	snprintf(env_dir, sizeof(env_dir), "DIR=%s", f->dir);
	snprintf(env_out, sizeof(env_out), "OUT=%s", out_dir);
	snprintf(env_pub, sizeof(env_pub), "PUB=%s", f->pub);
	char *argv[] = {"env", env_dir, env_out, env_pub, "sh", "-c", (char *)openssl_script, NULL};
	char *txt = NULL;
	int rc = pt_run(argv, &txt, 30000);
	printf("%s", txt ? txt : "");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(txt, "Verified OK"));
	free(txt);

	/* The signed bytes are exactly what aud_ckpt signs. */
	char cpfile[4500], cp[AUD_CKPT_LINE_MAX + 1], path[4500];
	snprintf(cpfile, sizeof(cpfile), "%s/checkpoints.jsonl", f->dir);
	size_t n = at_line(cpfile, at_nlines(cpfile) - 1, cp, sizeof(cp));
	aud_ckpt c;
	assert_int_equal(aud_ckpt_parse(cp, n, &c, NULL), PSC_OK);
	char want[AUD_CKPT_SIGNED_MAX];
	size_t wl = 0;
	assert_int_equal(aud_ckpt_signed_bytes(&c, want, sizeof(want), &wl), PSC_OK);
	snprintf(path, sizeof(path), "%s/signed.bin", out_dir);
	size_t gl = 0;
	char *got = at_read(path, &gl);
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);

	/* A changed size no longer verifies under openssl either. */
	got[strstr(got, "size ") - got + 5] ^= 1;
	at_write(path, got, gl);
	free(got);
	char sig[4500];
	snprintf(sig, sizeof(sig), "%s/sig.der", out_dir);
	char *argv2[] = {"openssl", "dgst", "-sha256", "-verify", f->pub, "-signature", sig, path, NULL};
	rc = pt_run(argv2, &txt, 30000);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(txt, "Verification failure"));
	free(txt);
}

static void cli_usage_and_show(void **state)
{
	struct fx *f = *state;
	char *out = NULL;
	assert_int_equal(at_audit(&out, "verify", "--help", NULL, NULL, NULL, NULL), 0);
	contains(out, "EXIT STATUS");
	contains(out, "--trusted CHECKPOINT");
	free(out);
	assert_int_equal(at_audit(&out, "show", "--help", NULL, NULL, NULL, NULL), 0);
	contains(out, "--since TIME");
	free(out);
	assert_int_equal(at_audit(&out, "bogus", NULL, NULL, NULL, NULL, NULL), 2);
	free(out);
	assert_int_equal(at_audit(&out, "verify", NULL, NULL, NULL, NULL, NULL), 2);
	free(out);
	/* A directory without a log is a wrong path, not an intact empty log. */
	assert_int_equal(at_audit(&out, "verify", f->tmp, NULL, NULL, NULL, NULL), 2);
	contains(out, "holds no audit segment");
	free(out);
	/* Malformed: a line that is not a record. */
	const char *d = copy_of(f, "malformed");
	delete_lines(at_seg(d, 1), 0, 0);
	at_append(at_seg(d, at_nseg(d)), "{\"seq\":\"x\"}\n", 13);
	assert_int_equal(at_audit(&out, "verify", d, NULL, NULL, NULL, NULL), 2);
	contains(out, "MALFORMED");
	free(out);

	/* Filters: PSC 02a5..., only psc.join events (i % 6 == 2 and i % 3 == 2). */
	assert_int_equal(at_audit(&out, "show", f->dir, "--psc", "02a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
				  "--event", "psc.join"),
			 0);
	size_t lines = 0;
	for (char *p = out; (p = strstr(p, " psc.join ")); p++)
		lines++;
	size_t want_lines = 0;
	for (unsigned i = 0; i < NREC; i++) /* at_fill: event i % 6, PSC byte i % 3 */
		want_lines += i % 6 == 2 && i % 3 == 2;
	assert_int_equal(lines, want_lines);
	assert_null(strstr(out, "psc.refresh"));
	contains(out, "subject=\"CN=peer \\\"one\\\"");
	free(out);
	assert_int_equal(at_audit(&out, "show", f->dir, "--event", "segment.", "--json", NULL), 0);
	contains(out, "{\"seq\":");
	contains(out, "\"event\":\"segment.link\"");
	free(out);
	/* Node-ID: at_fill gives record i the Node-ID i & 0xff repeated; only i = 0 here. */
	assert_int_equal(at_audit(&out, "show", f->dir, "--node", "00000000000000000000000000000000",
				  NULL, NULL),
			 0);
	contains(out, "req=\"req-0\"");
	assert_null(strstr(out, "req=\"req-1\""));
	free(out);
	/* Time range: everything was written after 2000 and before 9999. */
	assert_int_equal(at_audit(&out, "show", f->dir, "--since", "2000", "--until", "9999"), 0);
	contains(out, "req=\"req-199\"");
	free(out);
	assert_int_equal(at_audit(&out, "show", f->dir, "--since", "9999", NULL, NULL), 0);
	assert_null(strstr(out, "req="));
	free(out);
	assert_int_equal(at_audit(&out, "show", f->dir, "--node", "xyz", NULL, NULL), 2);
	free(out);
	assert_int_equal(at_audit(&out, "show", f->dir, "--until", "1999", NULL, NULL), 0);
	assert_null(strstr(out, "seq"));
	assert_null(strstr(out, "peer.initialize"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(appended_records_rotate_and_verify),
		cmocka_unit_test(records_escape_untrusted_text_and_never_hold_keys),
		cmocka_unit_test(flipped_byte_is_detected),
		cmocka_unit_test(deleted_line_is_detected),
		cmocka_unit_test(swapped_lines_are_detected),
		cmocka_unit_test(dropped_tail_is_detected_only_with_a_trusted_checkpoint),
		cmocka_unit_test(checkpoint_signed_by_another_key_is_detected),
		cmocka_unit_test(replaced_segment_is_detected),
		cmocka_unit_test(rewritten_history_with_recomputed_chain_fails_checkpoints),
		cmocka_unit_test(checkpoint_signature_verifies_with_openssl_cli),
		cmocka_unit_test(cli_usage_and_show),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
