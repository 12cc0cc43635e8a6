/*
 * docs/sdk.md §2.1 works as printed: the tutorial program (extracted from the
 * doc at build time, built against the shared libpscpeer) joins a PSC that a
 * `psc-peer shell` member established, against a real psc-kmsd (kmsfx), and
 * the two exchange group messages: the shell prints the tutorial's hello with
 * its Node-ID, the tutorial prints the shell's messages and exits 0.
 * Waits are bounded hang guards, never speed assertions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kmsfx.h"
#include "shproc.h"

static kmsfx FX;
static shproc A;

static int setup(void **state)
{
	(void)state;
	if (kmsfx_install(&FX, "sdk-tutorial", NULL, NULL) != 0 || kmsfx_start(&FX) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sh_kill(&A);
	kmsfx_cleanup(&FX);
	return 0;
}

static void test_tutorial_chats_with_a_member(void **state)
{
	(void)state;
	sh_start(&A, &FX, "peer1", NULL);
	sh_expect(&A, NULL, 0, "shell ready");
	sh_say(&A, "establish tutorial-room");
	sh_expect(&A, NULL, 0, "established PSC 'tutorial-room'");

	/* The tutorial as peer2 (policy lets it join freely). */
	char cert[4200], key[4200], ep[64], log[4200], peer2[33];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path("peer2"));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path("peer2"));
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(log, sizeof(log), "%s/psc_chat.log", FX.dir);
	sh_node_hex("peer2", peer2);
	char *argv[] = {PSC_CHAT_BIN, cert,	  key, FX.endpoint,	FX.cert,
			FX.curve,     "psc.test", ep,  "tutorial-room", NULL};
	pt_proc chat;
	assert_int_equal(pt_proc_start(&chat, argv, NULL, log), 0);

	/* The shell answers until the tutorial heard it and ended. */
	char hello[128];
	snprintf(hello, sizeof(hello), "from %s (claimed): hello from psc_chat", peer2);
	int rc = -1;
	int64_t end = sh_now_ms() + SHPROC_GUARD_MS;
	for (int i = 1; rc < 0 && sh_now_ms() < end; i++) {
		if (sh_has_since(&A, 0, hello))
			sh_say(&A, "send tutorial-room hi psc_chat, this is peer1 #%d", i);
		rc = pt_proc_wait(&chat, 300);
	}
	if (rc < 0)
		pt_proc_kill(&chat, 9);
	size_t n = 0;
	char *out = pt_read_text(log, &n);
	assert_non_null(out);
	if (rc != 0)
		print_message("---- psc_chat ----\n%s\n----\n", out);
	assert_int_equal(rc, 0);
	char want[128];
	snprintf(want, sizeof(want), "from %s (claimed): hi psc_chat, this is peer1 #", A.node);
	assert_non_null(strstr(out, want));
	free(out);
	assert_true(sh_has_since(&A, 0, hello));
	sh_say(&A, "list");
	sh_expect(&A, NULL, 0, peer2);
	assert_int_equal(sh_finish(&A), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tutorial_chats_with_a_member),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
