/*
 * aud_testutil — see aud_testutil.h.
 */
#include "aud_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "psc_test.h"

EVP_PKEY *at_new_key(const char *pub_path)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(k);
	if (pub_path) {
		FILE *f = fopen(pub_path, "w");
		assert_non_null(f);
		assert_int_equal(PEM_write_PUBKEY(f, k), 1);
		fclose(f);
	}
	return k;
}

aud_log *at_open(const char *dir, EVP_PKEY *key, uint64_t seg_max, uint64_t cp_every)
{
	aud_log_opts o = {.dir = dir,
			  .kms_id = "kms-test.1",
			  .sign_key = key,
			  .checkpoint_every = cp_every,
			  .segment_max_bytes = seg_max};
	aud_log *log = NULL;
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = aud_log_open(&log, &o, &e);
	if (rc != PSC_OK)
		fail_msg("aud_log_open(%s): %s", dir, psc_err_text(&e));
	return log;
}

void at_fill(aud_log *log, unsigned n, unsigned batch)
{
	static const aud_event_type types[] = {AUD_EV_PEER_INITIALIZE, AUD_EV_PSC_ESTABLISH,
					       AUD_EV_PSC_JOIN, AUD_EV_PSC_REFRESH,
					       AUD_EV_PSC_LEAVE, AUD_EV_HSM_KEYGEN};
	uint8_t node[16], psc[16], cert[32];
	for (unsigned i = 0; i < n; i++) {
		uint64_t before = aud_log_last_seq(log);
		memset(node, (int)(i & 0xff), sizeof(node));
		memset(psc, 0xa5, sizeof(psc));
		psc[0] = (uint8_t)(i % 3);
		memset(cert, 0x3c, sizeof(cert));
		char req[32];
		snprintf(req, sizeof(req), "req-%u", i);
		aud_actor actor = {.node_id = node,
				   .cert_sha256 = cert,
				   .subject = "CN=peer \"one\",O=Ex\\ample\n\x01 caf\xc3\xa9 \xf0\x9f\x94\x91",
				   .issuer = "CN=Test CA"};
		aud_decision dec = {.outcome = (i % 5) ? "permit" : "deny", .rule = "r-join-eng",
				    .policy_rev = "rev-7"};
		aud_kv kv[2] = {{.key = "members", .num = i}, {.key = "note", .str = "ok\ttab"}};
		aud_event ev = {.type = types[i % 6],
				.request_id = req,
				.actor = &actor,
				.psc_id = psc,
				.has_epoch = true,
				.epoch = i + 1,
				.key_id = "epoch-key-42",
				.decision = &dec,
				.result = (i % 5) ? "ok" : "denied",
				.detail = kv,
				.n_detail = 2};
		uint64_t seq = 0;
		psc_err e;
		psc_err_clear(&e);
		if (aud_log_append(log, &ev, &seq, &e) != PSC_OK)
			fail_msg("append: %s", psc_err_text(&e));
		assert_true(seq > before);
		if ((i + 1) % batch == 0 || i + 1 == n) {
			uint64_t last = 0;
			if (aud_log_commit(log, &last, &e) != PSC_OK)
				fail_msg("commit: %s", psc_err_text(&e));
			assert_int_equal(last, seq);
		}
	}
}

int at_audit(char **out, const char *a1, const char *a2, const char *a3, const char *a4,
	     const char *a5, const char *a6)
{
	char *argv[] = {(char *)PSC_AUDIT_BIN, (char *)a1, (char *)a2, (char *)a3,
			(char *)a4, (char *)a5, (char *)a6, NULL};
	char *txt = NULL;
	int rc = pt_run(argv, &txt, 60000);
	if (txt)
		printf("--- psc-audit %s %s: exit %d\n%s", a1 ? a1 : "", a2 ? a2 : "", rc, txt);
	if (out)
		*out = txt ? txt : strdup("");
	else
		free(txt);
	return rc;
}

char *at_read(const char *path, size_t *len)
{
	size_t n = 0;
	uint8_t *p = pt_read_file(path, &n);
	assert_non_null(p);
	char *s = realloc(p, n + 1);
	assert_non_null(s);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

void at_write(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

void at_append(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "ab");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

const char *at_seg(const char *dir, unsigned n)
{
	static char p[4200];
	snprintf(p, sizeof(p), "%s/audit-%08u.jsonl", dir, n);
	return p;
}

unsigned at_nseg(const char *dir)
{
	unsigned n = 0;
	while (access(at_seg(dir, n + 1), F_OK) == 0)
		n++;
	return n;
}

void at_copy_dir(const char *src, const char *dst)
{
	char *argv[] = {"cp", "-a", (char *)src, (char *)dst, NULL};
	assert_int_equal(pt_run(argv, NULL, 30000), 0);
}

size_t at_line(const char *path, size_t idx, char *out, size_t cap)
{
	size_t len = 0;
	char *s = at_read(path, &len);
	char *p = s;
	for (size_t i = 0; i < idx; i++) {
		p = strchr(p, '\n');
		assert_non_null(p);
		p++;
	}
	char *e = strchr(p, '\n');
	size_t n = e ? (size_t)(e - p) : strlen(p);
	assert_true(n < cap);
	memcpy(out, p, n);
	out[n] = '\0';
	free(s);
	return n;
}

size_t at_nlines(const char *path)
{
	char *s = at_read(path, NULL);
	size_t n = 0;
	for (char *p = s; *p; p++)
		n += *p == '\n';
	free(s);
	return n;
}
