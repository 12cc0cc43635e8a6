/*
 * `psc-peer shell` driven through pipes, three processes against a real
 * psc-kmsd (kmsfx: SoftHSM token, key ceremony, CURVE), the way a person at
 * three terminals would use it.
 * What this proves: one session runs several flows; the ask_owner join of
 * peer5 is put to the owner (peer1) as a numbered query and decided by the
 * owner's `allow N` typed at its prompt while the session goes on; an
 * invitation is accepted with `accept N` at the invitee's (rsa1) prompt; group messages appear in the
 * other members' output with the sender's Node-ID; in a PSC with sender
 * signatures a member given the others' certificates (--member-cert) shows
 * them as verified while a member without them drops the frames (counted);
 * bad input gets a clear message and the session goes on.
 * Waits are bounded hang guards (30 s), never speed assertions.
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
static shproc A, E, R; /* peer1 owns; peer5 asks to join; rsa1 is invited */
static char PSC_ID[33];

/* Sends text from `from` (a fresh numbered copy every second: PUB/SUB drops
 * what leaves before a member's subscription arrived) until `to` printed it
 * from `from`'s Node-ID, marked `how` ("verified" or "claimed"). */
static void deliver(shproc *from, shproc *to, const char *text, const char *how)
{
	char want[256];
	int64_t end = sh_now_ms() + SHPROC_GUARD_MS;
	size_t start = sh_len(to);
	for (int i = 1;; i++) {
		sh_say(from, "send %s %s #%d", PSC_ID, text, i);
		for (int k = 0; k < 20; k++) {
			snprintf(want, sizeof(want), "from %s (%s): %s #", from->node, how, text);
			if (sh_has_since(to, start, want))
				return;
			sh_sleep_ms(50);
		}
		if (sh_now_ms() > end) {
			char *t = sh_log(to);
			print_message("---- %s's output ----\n%s\n----\n", to->name, t);
			free(t);
			fail_msg("'%s' from %s never reached %s as %s", text, from->name, to->name,
				 how);
		}
	}
}

static int setup(void **state)
{
	(void)state;
	/* Long KMS waits: a person (here: the test) answers at a prompt. */
	static const char *const env[] = {"PSC_TEST_QUERY_MS=25000", "PSC_TEST_INVITE_MS=25000",
					  NULL};
	if (kmsfx_install(&FX, "peer-shell", NULL, env) != 0 || kmsfx_start(&FX) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sh_kill(&A);
	sh_kill(&E);
	sh_kill(&R);
	kmsfx_cleanup(&FX);
	return 0;
}

static void test_bad_member_cert(void **state)
{
	(void)state;
	char cert[4200], key[4200], missing[4300];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path("peer1"));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path("peer1"));
	snprintf(missing, sizeof(missing), "%s/no-such-cert.pem", FX.dir);
	char *argv[] = {PSC_PEER_CLI, "init",	     "--kms",	  FX.endpoint, "--kms-cert",
			FX.cert,      "--kms-curve", FX.curve,	  "--cert",    cert,
			"--key",      key,	     "--overlay", "psc.test",  "--member-cert",
			missing,      NULL};
	char *out = NULL;
	assert_int_equal(pt_run(argv, &out, SHPROC_GUARD_MS), 3);
	assert_non_null(strstr(out, "--member-cert"));
	assert_non_null(strstr(out, "no-such-cert.pem"));
	free(out);
	/* A file without a certificate in it (a private key). */
	argv[15] = key;
	assert_int_equal(pt_run(argv, &out, SHPROC_GUARD_MS), 3);
	assert_non_null(strstr(out, "no PEM certificate"));
	free(out);
	/* A certificate from another CA does not pass --member-ca. */
	char wrong[4200], ca[4200];
	snprintf(wrong, sizeof(wrong), "%s", pt_ca_path("wrongca.crt.pem"));
	snprintf(ca, sizeof(ca), "%s", pt_ca_path("ca.crt.pem"));
	char *argv2[] = {PSC_PEER_CLI, "init",	      "--kms",	   FX.endpoint, "--kms-cert",
			 FX.cert,      "--kms-curve", FX.curve,	   "--cert",	cert,
			 "--key",      key,	      "--overlay", "psc.test",	"--member-cert",
			 wrong,	       "--member-ca", ca,	   NULL};
	assert_int_equal(pt_run(argv2, &out, SHPROC_GUARD_MS), 3);
	assert_non_null(strstr(out, "does not verify against --member-ca"));
	free(out);
}

static void test_three_shells(void **state)
{
	(void)state;
	char line[1024], cadir[4200], cafile[4200];
	snprintf(cadir, sizeof(cadir), "%s", pt_ca_dir());
	snprintf(cafile, sizeof(cafile), "%s", pt_ca_path("ca.crt.pem"));
	/* The owner's PSCs require sender signatures; peer1 and peer5 get the
	 * test CA's directory of certificates (checked against the CA), rsa1
	 * gets none. */
	sh_start(&A, &FX, "peer1",
		 (const char *const[]){"--sender-signatures", "--member-cert", cadir, "--member-ca",
				       cafile, NULL});
	sh_start(&E, &FX, "peer5",
		 (const char *const[]){"--member-cert", cadir, "--member-ca", cafile, NULL});
	sh_start(&R, &FX, "rsa1", NULL);
	sh_expect(&A, NULL, 0, "shell ready");
	sh_expect(&E, NULL, 0, "shell ready");
	sh_expect(&R, NULL, 0, "shell ready");

	/* Bad input: a clear message, the session goes on. */
	sh_say(&A, "frobnicate now");
	sh_expect(&A, NULL, 0, "unknown command 'frobnicate'");
	sh_say(&A, "allow 3");
	sh_expect(&A, NULL, 0, "no query or invitation is pending");
	sh_say(&A, "leave 0123");
	sh_expect(&A, NULL, 0, "PSC '0123' is neither a PSC ID");

	sh_say(&A, "establish shell-room");
	sh_expect(&A, NULL, 0, "established PSC 'shell-room'");
	sh_expect(&A, line, sizeof(line), "  id ");
	assert_int_equal(sscanf(line, " id %32s", PSC_ID), 1);

	/* ask_owner: the KMS asks peer1, which answers at its prompt. */
	sh_say(&E, "join %s", PSC_ID);
	sh_expect(&A, line, sizeof(line), "query 1: ", E.node, "asks to join PSC", PSC_ID,
		  "'shell-room'");
	sh_expect(&A, NULL, 0, "answer 'allow 1' or 'deny 1'");
	/* The session goes on while the question is open (the answer is sent
	 * later with psc_peer_decide): commands run, the KMS is served. */
	sh_say(&A, "status");
	sh_expect(&A, NULL, 0, "questions open: 1");
	sh_say(&A, "allow 2");
	sh_expect(&A, NULL, 0, "query 2 is not pending");
	sh_say(&A, "allow 1");
	sh_expect(&A, NULL, 0, "query 1: allowed");
	sh_expect(&E, NULL, 0, "joined PSC", PSC_ID);

	/* Invitation: rsa1 accepts at its prompt. */
	sh_say(&A, "invite shell-room %s", R.node);
	sh_expect(&R, NULL, 0, "invitation 1: ", A.node, "invites us to PSC", PSC_ID,
		  "'shell-room'");
	sh_say(&R, "accept 1");
	sh_expect(&R, NULL, 0, "invitation 1: accepted");
	sh_expect(&A, NULL, 0, "invitation accepted");

	/* Group messages, signed by their senders. */
	deliver(&A, &E, "hello from the owner", "verified");
	deliver(&E, &A, "hello from peer5", "verified");
	/* rsa1 holds the key but no certificates: the signed frames it gets
	 * are dropped as unverifiable, never printed. (More copies until one
	 * reached it: its subscription may still have been on its way.) */
	size_t r_start = sh_len(&R);
	unsigned long drop = 0, recv = 0, d_auth = 0;
	int64_t end = sh_now_ms() + SHPROC_GUARD_MS;
	for (int i = 1; d_auth == 0; i++) {
		assert_true(sh_now_ms() < end);
		sh_say(&A, "send %s for every member #%d", PSC_ID, i);
		sh_sleep_ms(300);
		sh_say(&R, "status");
		sh_expect(&R, line, sizeof(line), "group channel:");
		unsigned long sent = 0, d_epoch = 0, d_replay = 0;
		assert_int_equal(sscanf(line,
					"group channel: %lu sent, %lu received, %lu dropped (epoch "
					"%lu, replay %lu, authentication %lu",
					&sent, &recv, &drop, &d_epoch, &d_replay, &d_auth),
				 6);
		assert_int_equal(recv, 0);
	}
	assert_false(sh_has_since(&R, r_start, "from "));

	/* The owner destroys the PSC: everybody is told. */
	sh_say(&A, "destroy shell-room");
	sh_expect(&A, NULL, 0, "destroyed PSC", PSC_ID);
	sh_expect(&E, NULL, 0, "gone   PSC", PSC_ID, "destroyed");
	sh_expect(&R, NULL, 0, "gone   PSC", PSC_ID, "destroyed");

	assert_int_equal(sh_finish(&A), 0);
	assert_int_equal(sh_finish(&E), 0);
	assert_int_equal(sh_finish(&R), 0);
	char *t = sh_log(&A);
	assert_non_null(strstr(t, "session ends:"));
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_member_cert),
	    cmocka_unit_test(test_three_shells),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
