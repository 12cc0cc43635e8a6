/* Peer authentication against the real test CA: every bad-certificate variant
 * gets its own error; CRL trust; freshness; the replay cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>

#include "kms_auth.h"
#include "psc_test.h"

/* The test CA is made when the suite runs, so verification uses the real clock. */
#define NOW_MS ((uint64_t)time(NULL) * 1000)

static X509 *load_cert(const char *name)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.crt.pem", name);
	FILE *f = fopen(pt_ca_path(file), "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static kms_trust *trust(int with_crl)
{
	char ca[4200], crl[4200];
	snprintf(ca, sizeof(ca), "%s", pt_ca_path("ca.crt.pem"));
	snprintf(crl, sizeof(crl), "%s", pt_ca_path("crl.pem"));
	kms_trust *t = NULL;
	psc_err e;
	if (kms_trust_new(&t, ca, with_crl ? crl : NULL, &e) != PSC_OK)
		fail_msg("%s", psc_err_text(&e));
	return t;
}

static void good_peers_verify_and_bind_their_node_id(void **state)
{
	(void)state;
	kms_trust *t = trust(1);
	const char *names[] = {"peer1", "peer2", "rsa1", "kms"};
	for (size_t i = 0; i < 4; i++) {
		X509 *x = load_cert(names[i]);
		uint8_t id[16], want[16];
		psc_err e;
		if (kms_trust_verify(t, x, NULL, NOW_MS, "psc.test", id, &e) != PSC_OK)
			fail_msg("%s: %s", names[i], psc_err_text(&e));
		assert_int_equal(pt_ca_nodeid(names[i], want), 0);
		assert_memory_equal(id, want, 16);
		X509_free(x);
	}
	kms_trust_free(&t);
	assert_null(t);
}

static void every_bad_certificate_has_its_own_error(void **state)
{
	(void)state;
	kms_trust *t = trust(1);
	struct {
		const char *name;
		psc_rc want;
		const char *words;
	} cases[] = {
		{"expired", PSC_E_KMSD_CERT_EXPIRED, "expired"},
		{"notyet", PSC_E_KMSD_CERT_NOT_YET, "not yet valid"},
		{"revoked", PSC_E_KMSD_CERT_REVOKED, "revoked"},
		{"wrongca", PSC_E_KMSD_CERT_UNTRUSTED, "CN=wrongca"},
		{"nonodeid", PSC_E_NO_NODE_ID, "reload://"},
		{"badnodeid", PSC_E_BAD_NODE_ID_URI, "malformed"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *x = load_cert(cases[i].name);
		uint8_t id[16];
		psc_err e;
		psc_rc rc = kms_trust_verify(t, x, NULL, NOW_MS, "psc.test", id, &e);
		if (rc != cases[i].want)
			fail_msg("%s: got %s (%s)", cases[i].name, psc_rc_name(rc), psc_err_text(&e));
		if (!strstr(e.detail, cases[i].words))
			fail_msg("%s: '%s' lacks '%s'", cases[i].name, e.detail, cases[i].words);
		X509_free(x);
	}
	/* Another overlay's binding is refused. */
	X509 *x = load_cert("peer1");
	uint8_t id[16];
	psc_err e;
	assert_int_equal(kms_trust_verify(t, x, NULL, NOW_MS, "other.overlay", id, &e),
			 PSC_E_OVERLAY);
	assert_true(kms_trust_is_revoked(t, x) == 0);
	X509_free(x);
	x = load_cert("revoked");
	assert_true(kms_trust_is_revoked(t, x));
	X509_free(x);
	kms_trust_free(&t);
}

static void without_crl_a_revoked_certificate_is_not_known(void **state)
{
	(void)state;
	kms_trust *t = trust(0);
	X509 *x = load_cert("revoked");
	uint8_t id[16];
	psc_err e;
	assert_int_equal(kms_trust_verify(t, x, NULL, NOW_MS, "psc.test", id, &e), PSC_OK);
	assert_int_equal(kms_trust_crl_next_update(t), 0);
	X509_free(x);
	kms_trust_free(&t);
}

static void crl_must_be_signed_by_the_ca_and_current(void **state)
{
	(void)state;
	char dir[4096], path[4200], ca[4200];
	assert_int_equal(pt_tmpdir(dir, "crl"), 0);
	/* A CRL issued by the other CA is refused. */
	snprintf(path, sizeof(path), "%s/other.crl.pem", dir);
	snprintf(ca, sizeof(ca), "%s", pt_ca_path("other/ca.cnf"));
	char *gen[] = {"openssl", "ca", "-batch", "-config", ca, "-gencrl", "-out", path, NULL};
	setenv("PSC_SAN", "email:x", 1);
	char *out = NULL;
	assert_int_equal(pt_run(gen, &out, 10000), 0);
	free(out);
	kms_trust *t = NULL;
	psc_err e;
	snprintf(ca, sizeof(ca), "%s", pt_ca_path("ca.crt.pem"));
	assert_int_equal(kms_trust_new(&t, ca, path, &e), PSC_E_KMSD_CRL);
	assert_non_null(strstr(e.detail, "not signed by a CA"));
	assert_null(t);
	/* Garbage is refused with the file named. */
	FILE *f = fopen(path, "w");
	fputs("not a crl\n", f);
	fclose(f);
	assert_int_equal(kms_trust_new(&t, ca, path, &e), PSC_E_KMSD_CRL);
	assert_non_null(strstr(e.detail, path));
	/* A missing CA bundle is named. */
	assert_int_equal(kms_trust_new(&t, "/nonexistent/ca.pem", NULL, &e), PSC_E_KMSD_TRUST_FILE);
	assert_non_null(strstr(e.detail, "/nonexistent/ca.pem"));
	/* Past the real CRL's nextUpdate every peer is refused (fail closed). */
	t = trust(1);
	int64_t next = kms_trust_crl_next_update(t);
	assert_true(next > 0);
	X509 *x = load_cert("peer1");
	uint8_t id[16];
	assert_int_equal(kms_trust_verify(t, x, NULL, (uint64_t)(next + 60) * 1000, "psc.test", id,
					  &e),
			 PSC_E_KMSD_CRL);
	assert_non_null(strstr(e.detail, "fresh CRL"));
	X509_free(x);
	kms_trust_free(&t);
	pt_rm_rf(dir);
}

static void freshness_window_and_restart(void **state)
{
	(void)state;
	psc_err e;
	const uint64_t w = 300000, started = NOW_MS - 1000;
	assert_int_equal(kms_fresh(NOW_MS, NOW_MS, w, started, &e), PSC_OK);
	assert_int_equal(kms_fresh(NOW_MS + w, NOW_MS, w, started, &e), PSC_OK);
	assert_int_equal(kms_fresh(NOW_MS + w + 1, NOW_MS, w, started, &e), PSC_E_KMSD_STALE);
	assert_non_null(strstr(e.detail, "ahead of"));
	assert_int_equal(kms_fresh(started, NOW_MS, w, started, &e), PSC_OK);
	assert_int_equal(kms_fresh(started - 1, NOW_MS, w, started, &e), PSC_E_KMSD_STALE);
	assert_non_null(strstr(e.detail, "before this KMS started"));
	assert_int_equal(kms_fresh(NOW_MS - w - 1, NOW_MS + 0, w, 0, &e), PSC_E_KMSD_STALE);
	assert_non_null(strstr(e.detail, "behind"));
}

static void replay_cache_remembers_until_expiry_and_fails_closed(void **state)
{
	(void)state;
	kms_replay *r = NULL;
	assert_int_equal(kms_replay_new(&r, 100, 1000), PSC_OK);
	uint8_t a[32] = {1}, b[32] = {2};
	assert_int_equal(kms_replay_check(r, a, 7, 0), PSC_OK);
	assert_int_equal(kms_replay_check(r, a, 7, 10), PSC_E_KMSD_REPLAY);
	assert_int_equal(kms_replay_check(r, b, 7, 10), PSC_OK); /* other signer */
	assert_int_equal(kms_replay_check(r, a, 8, 10), PSC_OK); /* other txid */
	assert_int_equal(kms_replay_check(r, a, 7, 999), PSC_E_KMSD_REPLAY);
	assert_int_equal(kms_replay_check(r, a, 7, 1001), PSC_OK); /* expired: new again */
	/* Thousands of requests over time: old ones expire, recent ones are caught. */
	for (uint64_t i = 0; i < 20000; i++) {
		uint64_t now = 2000 + i * 20; /* 50 live at any time */
		assert_int_equal(kms_replay_check(r, a, 100 + i, now), PSC_OK);
		if (i > 10)
			assert_int_equal(kms_replay_check(r, a, 100 + i - 10, now), PSC_E_KMSD_REPLAY);
	}
	assert_true(kms_replay_live(r, 2000 + 20000 * 20) <= 60);
	kms_replay_free(&r);
	/* More live entries than the table holds: refuse, never forget. */
	assert_int_equal(kms_replay_new(&r, 10, 1000000), PSC_OK);
	psc_rc rc = PSC_OK;
	uint64_t i;
	for (i = 0; i < 1000 && rc == PSC_OK; i++)
		rc = kms_replay_check(r, b, i, 5);
	assert_int_equal(rc, PSC_E_KMSD_REPLAY_FULL);
	for (uint64_t j = 0; j + 1 < i; j++)
		assert_int_equal(kms_replay_check(r, b, j, 6), PSC_E_KMSD_REPLAY);
	kms_replay_free(&r);
	assert_null(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_peers_verify_and_bind_their_node_id),
		cmocka_unit_test(every_bad_certificate_has_its_own_error),
		cmocka_unit_test(without_crl_a_revoked_certificate_is_not_known),
		cmocka_unit_test(crl_must_be_signed_by_the_ca_and_current),
		cmocka_unit_test(freshness_window_and_restart),
		cmocka_unit_test(replay_cache_remembers_until_expiry_and_fails_closed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
