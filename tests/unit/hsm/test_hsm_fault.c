/*
 * Recovery from HSM faults, with tests/p11fault (a PKCS#11 module that forwards
 * to SoftHSM and fails calls on command): a session invalidated under us, the
 * device removed and back, the token absent. Operations must fail fast with
 * PSC_E_HSM_DOWN, hsm_healthy() must say so, and the same hsm_ctx must recover
 * without a restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "hsm_test_util.h"
#include "proto_keywrap.h"

#ifndef P11FAULT_PATH
#error "P11FAULT_PATH must name the fault-injecting module"
#endif

#define RETRY_MS 200 /* th_open's retry interval */

static const uint8_t PSC_ID[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

typedef struct fx {
	th_env e;
	char dir[4096];
	char ctl[4200];
} fx;

/* p11fault may stay loaded between tests, keeping the last "invalidate" value:
 * every test uses values of its own. */
static void ctl_write(fx *f, const char *text)
{
	char tmp[4300];
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->ctl);
	FILE *fp = fopen(tmp, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(rename(tmp, f->ctl), 0);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	if (!f || pt_tmpdir(f->dir, "p11fault") != 0)
		return -1;
	snprintf(f->ctl, sizeof(f->ctl), "%s/ctl", f->dir);
	setenv("P11FAULT_CTL", f->ctl, 1);
	ctl_write(f, "");
	if (th_open(&f->e, "psc", P11FAULT_PATH, 2) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ctl_write(f, "");
	th_close(&f->e);
	pt_rm_rf(f->dir);
	free(f);
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Wraps k for peer1 and unwraps it in OpenSSL. */
static psc_rc peer1_secret(fx *f, hsm_session *s, const hsm_key *k, uint8_t out[32], psc_err *err)
{
	hsm_eph *eph = NULL;
	psc_rc rc = hsm_eph_new(s, &eph, err);
	if (rc != PSC_OK)
		return rc;
	EVP_PKEY *pub = th_cert_pub("peer1"), *priv = th_priv("peer1");
	uint8_t nid[16], w[64], alg;
	size_t wl;
	assert_int_equal(pt_ca_nodeid("peer1", nid), 0);
	rc = hsm_wrap_for_member(s, k, eph, pub, PSC_ID, 1, nid, &alg, w, sizeof(w), &wl, err);
	if (rc == PSC_OK)
		assert_int_equal(proto_keywrap_unwrap(priv, alg, PSC_ID, 1, nid,
						      hsm_eph_public(eph), 65, w, wl, out, err),
				 PSC_OK);
	hsm_eph_free(&eph);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
	(void)f;
	return rc;
}

static int sign_ok(hsm_ctx *ctx)
{
	EVP_PKEY *k = NULL;
	psc_err err;
	if (hsm_identity_key(ctx, &k, &err) != PSC_OK)
		return 0;
	uint8_t sig[128];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k) == 1 &&
		 EVP_DigestSign(m, sig, &sl, (const uint8_t *)"x", 1) == 1;
	EVP_MD_CTX_free(m);
	EVP_PKEY_free(k);
	if (!ok && getenv("HSM_TEST_DEBUG"))
		ERR_print_errors_fp(stderr);
	return ok;
}

static void healthy_path_through_the_fault_module(void **state)
{
	fx *f = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], s1[32];
	assert_true(hsm_healthy(f->e.ctx));
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	assert_int_equal(peer1_secret(f, f->e.s, &k, s1, &err), PSC_OK);
	assert_true(sign_ok(f->e.ctx));
	/* A non-transient failure is reported as such and does not flip health. */
	ctl_write(f, "fail C_GenerateRandom CKR_FUNCTION_FAILED\n");
	uint8_t r[8];
	assert_int_equal(hsm_random(f->e.s, r, sizeof(r), &err), PSC_E_HSM_P11);
	assert_true(th_has(err.detail, "C_GenerateRandom failed"));
	assert_true(th_has(err.detail, "CKR_FUNCTION_FAILED"));
	assert_true(hsm_healthy(f->e.ctx));
	ctl_write(f, "");
	assert_int_equal(hsm_random(f->e.s, r, sizeof(r), &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(f->e.s, &k, &err), PSC_OK);
}

static void session_invalidated_reopens_without_restart(void **state)
{
	fx *f = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], before[32], after[32], r[16];
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	assert_int_equal(peer1_secret(f, f->e.s, &k, before, &err), PSC_OK);

	ctl_write(f, "invalidate 11\n");
	assert_int_equal(hsm_random(f->e.s, r, sizeof(r), &err), PSC_E_HSM_DOWN);
	assert_true(th_has(err.detail, "CKR_SESSION_HANDLE_INVALID"));
	assert_true(th_has(err.detail, "C_GenerateRandom"));
	assert_false(hsm_healthy(f->e.ctx));

	/* The next call reconnects at once (sessions reopened, login redone). */
	if (hsm_random(f->e.s, r, sizeof(r), &err) != PSC_OK)
		fail_msg("no recovery: %s", psc_err_text(&err));
	assert_true(hsm_healthy(f->e.ctx));
	/* Session objects died with their session: say so, reload from the blob. */
	assert_int_equal(peer1_secret(f, f->e.s, &k, after, &err), PSC_E_HSM_STALE_KEY);
	assert_true(th_has(err.detail, "load it again from its blob"));
	hsm_key k2;
	assert_int_equal(hsm_epoch_load(f->e.s, blob, sizeof(blob), &k2, &err), PSC_OK);
	assert_int_equal(peer1_secret(f, f->e.s, &k2, after, &err), PSC_OK);
	assert_memory_equal(before, after, 32);
	/* The other worker's session is reopened lazily by its own next call. */
	hsm_session *w1;
	assert_int_equal(hsm_session_get(f->e.ctx, 1, &w1, &err), PSC_OK);
	assert_int_equal(hsm_epoch_generate(w1, &k, blob, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(w1, &k, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(f->e.s, &k2, &err), PSC_OK);
	assert_true(sign_ok(f->e.ctx));
}

static void device_removed_fails_fast_and_comes_back(void **state)
{
	fx *f = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], before[32], after[32];
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	assert_int_equal(peer1_secret(f, f->e.s, &k, before, &err), PSC_OK);
	assert_true(sign_ok(f->e.ctx));

	ctl_write(f, "fail * CKR_DEVICE_REMOVED\n");
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_E_HSM_DOWN);
	assert_true(th_has(err.detail, "CKR_DEVICE_REMOVED"));
	assert_true(th_has(err.detail, "check the device"));
	assert_false(hsm_healthy(f->e.ctx));
	/* First retry is immediate and fails; then calls fail fast. */
	assert_int_equal(hsm_epoch_load(f->e.s, blob, sizeof(blob), &k, &err), PSC_E_HSM_DOWN);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(hsm_epoch_load(f->e.s, blob, sizeof(blob), &k, &err),
				 PSC_E_HSM_DOWN);
		assert_true(th_has(err.detail, "next reconnection try"));
	}
	/* "next reconnection try" comes only from the branch that returns before
	 * any PKCS#11 call; the time bound is loose for loaded CI machines. */
	assert_true(ms_since(&t0) < 500.0);
	assert_false(hsm_healthy(f->e.ctx));
	/* Signing keys are refused while down, rather than hanging in libp11. */
	EVP_PKEY *idk = NULL;
	assert_int_equal(hsm_identity_key(f->e.ctx, &idk, &err), PSC_E_HSM_DOWN);

	ctl_write(f, "invalidate 21\n"); /* back, with fresh (empty) session state */
	usleep((RETRY_MS + 50) * 1000);
	if (hsm_epoch_load(f->e.s, blob, sizeof(blob), &k, &err) != PSC_OK)
		fail_msg("no recovery: %s", psc_err_text(&err));
	assert_true(hsm_healthy(f->e.ctx));
	assert_int_equal(peer1_secret(f, f->e.s, &k, after, &err), PSC_OK);
	assert_memory_equal(before, after, 32);
	assert_int_equal(hsm_key_destroy(f->e.s, &k, &err), PSC_OK);
	assert_true(sign_ok(f->e.ctx));
}

static void token_absent_then_present(void **state)
{
	fx *f = *state;
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], before[32], after[32];
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	assert_int_equal(peer1_secret(f, f->e.s, &k, before, &err), PSC_OK);

	ctl_write(f, "absent\n");
	hsm_eph *eph = NULL;
	assert_int_equal(hsm_eph_new(f->e.s, &eph, &err), PSC_E_HSM_DOWN);
	assert_null(eph);
	assert_false(hsm_healthy(f->e.ctx));
	/* The immediate retry finds no token and says so. */
	assert_int_equal(hsm_eph_new(f->e.s, &eph, &err), PSC_E_HSM_DOWN);
	assert_true(th_has(err.detail, "token 'psc' is not present"));
	usleep((RETRY_MS + 50) * 1000);
	assert_int_equal(hsm_eph_new(f->e.s, &eph, &err), PSC_E_HSM_DOWN);
	assert_false(hsm_healthy(f->e.ctx));

	ctl_write(f, "");
	usleep((RETRY_MS + 50) * 1000);
	/* Every session was closed underneath, so this needs a fresh login too. */
	if (hsm_epoch_load(f->e.s, blob, sizeof(blob), &k, &err) != PSC_OK)
		fail_msg("no recovery: %s", psc_err_text(&err));
	assert_true(hsm_healthy(f->e.ctx));
	assert_int_equal(peer1_secret(f, f->e.s, &k, after, &err), PSC_OK);
	assert_memory_equal(before, after, 32);
	assert_int_equal(hsm_key_destroy(f->e.s, &k, &err), PSC_OK);
	/* A new epoch secret (a private object: needs the login back). */
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	assert_int_equal(hsm_key_destroy(f->e.s, &k, &err), PSC_OK);
	/* The login was lost, so SoftHSM renumbered its objects: the signing
	 * key must be found again through libp11, which hsm_identity_key does. */
	assert_true(sign_ok(f->e.ctx));
}

/* Four workers, each on its own session, through faults injected under them. */
struct worker {
	hsm_ctx *ctx;
	unsigned idx;
	const uint8_t *blob;
	const uint8_t *ref;
	EVP_PKEY *pub, *priv;
	atomic_bool *stop;
	long ok, down, stale, bad, wrong;
	double last_ok_ms;
	char why[PSC_ERR_DETAIL_MAX];
};

static double mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	hsm_session *s = NULL;
	psc_err err = {0};
	if (hsm_session_get(w->ctx, w->idx, &s, &err) != PSC_OK) {
		w->bad++;
		return NULL;
	}
	uint8_t nid[16] = {0x77}, wr[64], got[32], alg;
	size_t wl;
	while (!atomic_load(w->stop)) {
		hsm_key k = {0};
		hsm_eph *eph = NULL;
		psc_rc rc = hsm_epoch_load(s, w->blob, HSM_EPOCH_BLOB_LEN, &k, &err);
		if (rc == PSC_OK)
			rc = hsm_eph_new(s, &eph, &err);
		if (rc == PSC_OK)
			rc = hsm_wrap_for_member(s, &k, eph, w->pub, PSC_ID, 3, nid, &alg, wr,
						 sizeof(wr), &wl, &err);
		if (rc == PSC_OK) {
			if (proto_keywrap_unwrap(w->priv, alg, PSC_ID, 3, nid, hsm_eph_public(eph),
						 65, wr, wl, got, &err) != PSC_OK ||
			    memcmp(got, w->ref, 32) != 0)
				w->wrong++;
			else {
				w->ok++;
				w->last_ok_ms = mono_ms();
			}
		} else if (rc == PSC_E_HSM_DOWN) {
			w->down++;
			usleep(2000);
		} else if (rc == PSC_E_HSM_STALE_KEY) {
			w->stale++;
		} else {
			w->bad++;
			snprintf(w->why, sizeof(w->why), "%s", psc_err_text(&err));
		}
		hsm_eph_free(&eph);
		psc_rc drc = hsm_key_destroy(s, &k, &err);
		(void)drc; /* may be DOWN during a fault; the object dies with its session */
	}
	return NULL;
}

static void workers_ride_through_faults(void **state)
{
	fx *f = *state;
	/* a context of its own with four worker sessions */
	th_close(&f->e);
	assert_int_equal(th_open(&f->e, "psc", P11FAULT_PATH, 4), 0);
	psc_err err = {0};
	hsm_key k;
	uint8_t blob[HSM_EPOCH_BLOB_LEN], ref[32];
	assert_int_equal(hsm_epoch_generate(f->e.s, &k, blob, &err), PSC_OK);
	{
		EVP_PKEY *pub = th_cert_pub("peer2"), *priv = th_priv("peer2");
		hsm_eph *eph = NULL;
		uint8_t nid[16] = {0x77}, wr[64], alg;
		size_t wl;
		assert_int_equal(hsm_eph_new(f->e.s, &eph, &err), PSC_OK);
		assert_int_equal(hsm_wrap_for_member(f->e.s, &k, eph, pub, PSC_ID, 3, nid, &alg, wr,
						     sizeof(wr), &wl, &err),
				 PSC_OK);
		assert_int_equal(proto_keywrap_unwrap(priv, alg, PSC_ID, 3, nid,
						      hsm_eph_public(eph), 65, wr, wl, ref, &err),
				 PSC_OK);
		hsm_eph_free(&eph);
		EVP_PKEY_free(pub);
		EVP_PKEY_free(priv);
	}
	assert_int_equal(hsm_key_destroy(f->e.s, &k, &err), PSC_OK);
	EVP_PKEY *pub = th_cert_pub("peer2"), *priv = th_priv("peer2");
	atomic_bool stop = false;
	struct worker w[4];
	pthread_t th[4];
	for (unsigned i = 0; i < 4; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i] = (struct worker){.ctx = f->e.ctx,
				       .idx = i,
				       .blob = blob,
				       .ref = ref,
				       .pub = pub,
				       .priv = priv,
				       .stop = &stop};
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	usleep(300 * 1000);
	ctl_write(f, "invalidate 31\n");
	usleep(400 * 1000);
	ctl_write(f, "invalidate 31\nfail * CKR_DEVICE_REMOVED\n");
	usleep(400 * 1000);
	ctl_write(f, "invalidate 32\n");
	double back = mono_ms();
	usleep(1200 * 1000);
	atomic_store(&stop, true);
	for (unsigned i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	long down = 0;
	for (unsigned i = 0; i < 4; i++) {
		if (w[i].bad)
			fail_msg("worker %u: unexpected error: %s", i, w[i].why);
		assert_int_equal(w[i].wrong, 0);
		assert_true(w[i].ok > 0);
		assert_true(w[i].last_ok_ms > back); /* every worker came back */
		down += w[i].down;
	}
	assert_true(down > 0); /* the faults were seen */
	assert_true(hsm_healthy(f->e.ctx));
	assert_true(sign_ok(f->e.ctx));
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
}

static void a_rejected_pin_is_never_retried(void **state)
{
	fx *f = *state;
	psc_err err = {0};
	uint8_t r[4];
	/* The token forgets the login and then refuses the PIN (changed under us). */
	ctl_write(f, "invalidate 41\nfail C_Login CKR_PIN_INCORRECT\n");
	assert_int_equal(hsm_random(f->e.s, r, sizeof(r), &err), PSC_E_HSM_DOWN);
	if (hsm_random(f->e.s, r, sizeof(r), &err) != PSC_E_HSM_PIN)
		fail_msg("got: %s", psc_err_text(&err));
	assert_true(th_has(err.detail, "CKR_PIN_INCORRECT"));
	assert_false(hsm_healthy(f->e.ctx));
	/* Even once the token would accept it, the context does not send it again:
	 * a token locks its PIN after a few wrong tries. */
	ctl_write(f, "invalidate 41\n");
	usleep((RETRY_MS + 50) * 1000);
	assert_int_equal(hsm_random(f->e.s, r, sizeof(r), &err), PSC_E_HSM_PIN);
	assert_true(th_has(err.detail, "not trying it again"));
	assert_true(th_has(err.detail, "restart"));
	assert_false(hsm_healthy(f->e.ctx));
}

static void failed_ceremony_leaves_nothing_behind(void **state)
{
	(void)state;
	char dir[4096], ctl[4200];
	assert_int_equal(pt_tmpdir(dir, "p11fault"), 0);
	snprintf(ctl, sizeof(ctl), "%s/ctl", dir);
	setenv("P11FAULT_CTL", ctl, 1);
	FILE *fp = fopen(ctl, "w");
	assert_non_null(fp);
	fputs("fail C_GenerateKeyPair CKR_DEVICE_MEMORY\n", fp);
	fclose(fp);
	pt_token *tok = NULL;
	assert_int_equal(pt_token_new(&tok, "psc"), 0);
	hsm_config c = {.module_path = P11FAULT_PATH,
			.token_label = "psc",
			.pin = tok->pin,
			.sessions = 1,
			.allow_no_kek = true};
	hsm_ctx *ctx = NULL;
	psc_err err = {0};
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_OK);
	hsm_ceremony_opts o = {.subject = "/CN=kms", .uri_san = "reload://01@x/"};
	uint8_t id[HSM_KEK_ID_LEN];
	char *csr = NULL;
	assert_int_equal(hsm_ceremony(ctx, &o, id, &csr, &err), PSC_E_HSM_P11);
	assert_true(th_has(err.detail, "C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN, P-256)"));
	assert_true(th_has(err.detail, "CKR_DEVICE_MEMORY"));
	uint8_t zero[HSM_KEK_ID_LEN] = {0}, cur[HSM_KEK_ID_LEN];
	hsm_kek_id(ctx, cur);
	assert_memory_equal(cur, zero, HSM_KEK_ID_LEN);
	/* The KEK made before the failure was removed: a plain rerun works. */
	fp = fopen(ctl, "w");
	fclose(fp);
	assert_int_equal(hsm_ceremony(ctx, &o, id, &csr, &err), PSC_OK);
	hsm_kek_id(ctx, cur);
	assert_memory_equal(cur, id, HSM_KEK_ID_LEN);
	free(csr);
	hsm_ctx_free(&ctx);
	pt_token_free(&tok);
	pt_rm_rf(dir);
}

static void sessions_are_sized_by_the_token(void **state)
{
	(void)state;
	char dir[4096], ctl[4200];
	assert_int_equal(pt_tmpdir(dir, "p11fault"), 0);
	snprintf(ctl, sizeof(ctl), "%s/ctl", dir);
	setenv("P11FAULT_CTL", ctl, 1);
	FILE *fp = fopen(ctl, "w");
	assert_non_null(fp);
	fputs("maxsessions 5\n", fp);
	fclose(fp);
	pt_token *tok = NULL;
	assert_int_equal(pt_token_new(&tok, "psc"), 0);
	hsm_config c = {.module_path = P11FAULT_PATH,
			.token_label = "psc",
			.pin = tok->pin,
			.sessions = 8,
			.allow_no_kek = true};
	hsm_ctx *ctx = NULL;
	psc_err err = {0};
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_OK);
	/* 5 minus one control session minus one for libp11 */
	assert_int_equal(hsm_ctx_sessions(ctx), 3);
	hsm_session *s;
	assert_int_equal(hsm_session_get(ctx, 2, &s, &err), PSC_OK);
	assert_int_equal(hsm_session_get(ctx, 3, &s, &err), PSC_E_INVALID_ARG);
	hsm_ctx_free(&ctx);
	fp = fopen(ctl, "w");
	fputs("maxsessions 2\n", fp);
	fclose(fp);
	assert_int_equal(hsm_ctx_new(&ctx, &c, &err), PSC_E_HSM_P11);
	assert_true(th_has(err.detail, "allows only 2 sessions"));
	fp = fopen(ctl, "w");
	fclose(fp);
	pt_token_free(&tok);
	pt_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(healthy_path_through_the_fault_module, setup, teardown),
	    cmocka_unit_test_setup_teardown(session_invalidated_reopens_without_restart, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(device_removed_fails_fast_and_comes_back, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(token_absent_then_present, setup, teardown),
	    cmocka_unit_test_setup_teardown(workers_ride_through_faults, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_rejected_pin_is_never_retried, setup, teardown),
	    cmocka_unit_test(failed_ceremony_leaves_nothing_behind),
	    cmocka_unit_test(sessions_are_sized_by_the_token),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
