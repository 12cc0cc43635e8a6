/*
 * `psc-peer shell` driven through pipes, three processes against a real
 * psc-kmsd (kmsfx: SoftHSM token, key ceremony, CURVE), the way a person at
 * three terminals would use it.
 * What this proves: one session runs several flows; the ask_owner join of
 * peer5 is put to the owner (peer1) as a numbered query and decided by the
 * owner's `allow N` typed at its prompt; an invitation is accepted with
 * `accept N` at the invitee's (rsa1) prompt; group messages appear in the
 * other members' output with the sender's Node-ID; in a PSC with sender
 * signatures a member given the others' certificates (--member-cert) shows
 * them as verified while a member without them drops the frames (counted);
 * bad input gets a clear message and the session goes on.
 * Waits are bounded hang guards (30 s), never speed assertions.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kmsfx.h"

#define HANG_GUARD_MS 30000

typedef struct shproc {
	const char *name;
	pid_t pid;
	int in; /* its stdin */
	char log[4200];
	char ep[64];
	char node[33];
	size_t mark; /* log offset: waits look after it */
} shproc;

static kmsfx FX;
static shproc A, E, R; /* peer1 owns; peer5 asks to join; rsa1 is invited */
static char PSC_ID[33];

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&t, NULL);
}

static void node_hex(const char *name, char out[33])
{
	uint8_t id[16];
	assert_int_equal(pt_ca_nodeid(name, id), 0);
	pt_hex(id, 16, out);
}

/* Starts `psc-peer shell` as a CA identity with stdin from a pipe and
 * stdout+stderr to a log; extra: NULL-terminated further options. */
static void sh_start(shproc *s, const char *name, const char *const *extra)
{
	memset(s, 0, sizeof(*s));
	s->name = name;
	node_hex(name, s->node);
	snprintf(s->ep, sizeof(s->ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(s->log, sizeof(s->log), "%s/%s.shell.log", FX.dir, name);
	char cert[4200], key[4200];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	const char *argv[32] = {PSC_PEER_CLI, "shell",	     "--kms",	  FX.endpoint, "--kms-cert",
				FX.cert,      "--kms-curve", FX.curve,	  "--cert",    cert,
				"--key",      key,	     "--overlay", "psc.test",  "--endpoint",
				s->ep,	      "--timeout",   "20000"};
	size_t n = 18;
	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || dup2(fds[0], 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(127);
		close(fds[0]);
		close(fds[1]);
		close(fd);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[0]);
	s->in = fds[1];
	signal(SIGPIPE, SIG_IGN);
}

static void sh_say(shproc *s, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(line) - 1);
	line[n++] = '\n';
	assert_int_equal(write(s->in, line, (size_t)n), n);
}

static char *sh_log(const shproc *s)
{
	size_t n = 0;
	char *t = pt_read_text(s->log, &n);
	return t ? t : calloc(1, 1);
}

/* The first line after s->mark that contains every needle (NULL-terminated
 * list), copied into line; moves the mark past it. Fails after the guard. */
static void sh_expect_v(shproc *s, char *line, size_t cap, const char *const *needles)
{
	int64_t end = now_ms() + HANG_GUARD_MS;
	for (;;) {
		char *t = sh_log(s);
		for (char *l = t + (s->mark < strlen(t) ? s->mark : strlen(t)); *l;) {
			size_t len = strcspn(l, "\n");
			if (l[len] != '\n')
				break; /* an incomplete line: wait for the rest */
			int all = 1;
			for (size_t i = 0; needles[i] && all; i++) {
				char *hit = strstr(l, needles[i]);
				all = hit && hit < l + len;
			}
			if (all) {
				if (line)
					snprintf(line, cap, "%.*s", (int)len, l);
				s->mark = (size_t)(l - t) + len + 1;
				free(t);
				return;
			}
			l += len + 1;
		}
		int st = 0, gone = s->pid > 0 && waitpid(s->pid, &st, WNOHANG) == s->pid;
		if (gone)
			s->pid = 0;
		if (gone || now_ms() > end) {
			print_message("---- %s's output ----\n%s\n----\n", s->name, t);
			free(t);
			fail_msg("%s %s a line with '%s'", s->name,
				 gone ? "exited without printing" : "never printed", needles[0]);
		}
		free(t);
		sleep_ms(50);
	}
}

#define sh_expect(s, line, cap, ...)                                                               \
	sh_expect_v(s, line, cap, (const char *const[]){__VA_ARGS__, NULL})

/* 1 if a line after `from` contains needle (no waiting). */
static int sh_has_since(const shproc *s, size_t from, const char *needle)
{
	char *t = sh_log(s);
	int hit = strlen(t) > from && strstr(t + from, needle) != NULL;
	free(t);
	return hit;
}

static size_t sh_len(const shproc *s)
{
	char *t = sh_log(s);
	size_t n = strlen(t);
	free(t);
	return n;
}

static int sh_finish(shproc *s)
{
	if (s->pid <= 0)
		return -1;
	sh_say(s, "quit");
	close(s->in);
	int st = 0;
	int64_t end = now_ms() + HANG_GUARD_MS;
	while (waitpid(s->pid, &st, WNOHANG) == 0) {
		if (now_ms() > end) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			s->pid = 0;
			return -1;
		}
		sleep_ms(50);
	}
	s->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sh_kill(shproc *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		close(s->in);
		s->pid = 0;
	}
}

/* Sends text from `from` (a fresh numbered copy every second: PUB/SUB drops
 * what leaves before a member's subscription arrived) until `to` printed it
 * from `from`'s Node-ID, marked `how` ("verified" or "claimed"). */
static void deliver(shproc *from, shproc *to, const char *text, const char *how)
{
	char want[256];
	int64_t end = now_ms() + HANG_GUARD_MS;
	size_t start = sh_len(to);
	for (int i = 1;; i++) {
		sh_say(from, "send %s %s #%d", PSC_ID, text, i);
		for (int k = 0; k < 20; k++) {
			snprintf(want, sizeof(want), "from %s (%s): %s #", from->node, how, text);
			if (sh_has_since(to, start, want))
				return;
			sleep_ms(50);
		}
		if (now_ms() > end) {
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
	assert_int_equal(pt_run(argv, &out, HANG_GUARD_MS), 3);
	assert_non_null(strstr(out, "--member-cert"));
	assert_non_null(strstr(out, "no-such-cert.pem"));
	free(out);
	/* A file without a certificate in it (a private key). */
	argv[15] = key;
	assert_int_equal(pt_run(argv, &out, HANG_GUARD_MS), 3);
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
	assert_int_equal(pt_run(argv2, &out, HANG_GUARD_MS), 3);
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
	sh_start(&A, "peer1",
		 (const char *const[]){"--sender-signatures", "--member-cert", cadir, "--member-ca",
				       cafile, NULL});
	sh_start(&E, "peer5",
		 (const char *const[]){"--member-cert", cadir, "--member-ca", cafile, NULL});
	sh_start(&R, "rsa1", NULL);
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
	sh_say(&A, "list");		  /* harmless while the KMS waits */
	sh_say(&A, "destroy shell-room"); /* not now: the answer comes first */
	sh_expect(&A, NULL, 0, "the KMS is waiting for the answer to query 1");
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
	int64_t end = now_ms() + HANG_GUARD_MS;
	for (int i = 1; d_auth == 0; i++) {
		assert_true(now_ms() < end);
		sh_say(&A, "send %s for every member #%d", PSC_ID, i);
		sleep_ms(300);
		sh_say(&R, "status");
		sh_expect(&R, line, sizeof(line), "group channel:");
		unsigned long sent = 0, d_epoch = 0, d_replay = 0;
		assert_int_equal(sscanf(line,
					"group channel: %lu sent, %lu received, %lu dropped (epoch "
					"%lu, replay %lu, authentication %lu",
					&sent, &recv, &drop, &d_epoch, &d_replay, &d_auth),
				 6);
		assert_int_equal(recv, 0);
		assert_int_equal(d_auth, drop);
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
