/* The shared fixtures every later test stands on: process harness, free ports,
 * throwaway SoftHSM token, test CA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "psc_test.h"

static void process_output_is_captured_and_exit_code_reported(void **state)
{
	(void)state;
	char *argv[] = {"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3", NULL};
	char *out = NULL;
	assert_int_equal(pt_run(argv, &out, 10000), 3);
	assert_non_null(out);
	assert_non_null(strstr(out, "to-stdout"));
	assert_non_null(strstr(out, "to-stderr"));
	free(out);
}

static void long_running_process_is_stopped_and_killed(void **state)
{
	(void)state;
	char dir[4096], log[4200];
	assert_int_equal(pt_tmpdir(dir, "harness"), 0);
	snprintf(log, sizeof(log), "%s/p.log", dir);
	pt_proc p;
	char *argv[] = {"sleep", "60", NULL};
	assert_int_equal(pt_proc_start(&p, argv, NULL, log), 0);
	assert_int_equal(pt_proc_wait(&p, 50), -1); /* still running */
	assert_int_equal(pt_proc_stop(&p, 5000), 128 + SIGTERM);
	/* A process that ignores SIGTERM is killed. */
	char *stubborn[] = {"sh", "-c", "trap '' TERM; sleep 60", NULL};
	assert_int_equal(pt_proc_start(&p, stubborn, NULL, log), 0);
	struct timespec ts = {0, 100 * 1000 * 1000};
	nanosleep(&ts, NULL);
	int rc = pt_proc_stop(&p, 300);
	assert_true(rc == 128 + SIGKILL || rc == 128 + SIGTERM);
	/* Environment is passed. */
	char envv[] = "PT_HARNESS_X=42";
	char *env[] = {envv, NULL};
	char *show[] = {"sh", "-c", "echo value=$PT_HARNESS_X", NULL};
	assert_int_equal(pt_proc_start(&p, show, env, log), 0);
	assert_int_equal(pt_proc_wait(&p, 10000), 0);
	size_t n;
	char *txt = (char *)pt_read_file(log, &n);
	assert_non_null(txt);
	assert_non_null(memmem(txt, n, "value=42", 8));
	free(txt);
	pt_rm_rf(dir);
	struct stat st;
	assert_int_not_equal(stat(dir, &st), 0);
}

static void free_port_can_be_bound(void **state)
{
	(void)state;
	int port = pt_free_port();
	assert_true(port > 1024 && port < 65536);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	close(s);
}

static void throwaway_token_is_created_and_removed(void **state)
{
	(void)state;
	pt_token *t = NULL;
	assert_int_equal(pt_token_new(&t, "fixture"), 0);
	assert_string_equal(getenv("SOFTHSM2_CONF"), t->conf);
	char *argv[] = {"softhsm2-util", "--show-slots", NULL};
	char *out = NULL;
	assert_int_equal(pt_run(argv, &out, 10000), 0);
	assert_non_null(strstr(out, "fixture"));
	free(out);
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", t->dir);
	pt_token_free(&t);
	assert_null(t);
	struct stat st;
	assert_int_not_equal(stat(dir, &st), 0);
}

static void test_ca_has_every_variant(void **state)
{
	(void)state;
	const char *names[] = {"kms",     "peer1",  "peer8",   "rsa1",     "rsa2",    "p384",
			       "expired", "notyet", "revoked", "wrongca", "nonodeid", "badnodeid"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char f[128];
		struct stat st;
		snprintf(f, sizeof(f), "%s.crt.pem", names[i]);
		assert_int_equal(stat(pt_ca_path(f), &st), 0);
		snprintf(f, sizeof(f), "%s.key.pem", names[i]);
		assert_int_equal(stat(pt_ca_path(f), &st), 0);
	}
	/* openssl itself agrees on what is good and what is not. */
	struct {
		const char *name;
		int ok;
	} cases[] = {{"peer1", 1}, {"rsa1", 1}, {"expired", 0}, {"notyet", 0},
		     {"revoked", 0}, {"wrongca", 0}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char ca[4200], crl[4200], crt[4200];
		snprintf(ca, sizeof(ca), "%s", pt_ca_path("ca.crt.pem"));
		snprintf(crl, sizeof(crl), "%s", pt_ca_path("crl.pem"));
		char f[128];
		snprintf(f, sizeof(f), "%s.crt.pem", cases[i].name);
		snprintf(crt, sizeof(crt), "%s", pt_ca_path(f));
		char *argv[] = {"openssl", "verify", "-CAfile", ca, "-crl_check", "-CRLfile", crl,
				crt, NULL};
		char *out = NULL;
		int rc = pt_run(argv, &out, 10000);
		free(out);
		if ((rc == 0) != cases[i].ok)
			fail_msg("%s: openssl verify exit %d", cases[i].name, rc);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(process_output_is_captured_and_exit_code_reported),
		cmocka_unit_test(long_running_process_is_stopped_and_killed),
		cmocka_unit_test(free_port_can_be_bound),
		cmocka_unit_test(throwaway_token_is_created_and_removed),
		cmocka_unit_test(test_ca_has_every_variant),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
