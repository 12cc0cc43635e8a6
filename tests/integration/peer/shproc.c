/* shproc — see shproc.h. */
#include "shproc.h"

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

int64_t sh_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void sh_sleep_ms(int ms)
{
	struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&t, NULL);
}

void sh_node_hex(const char *name, char out[33])
{
	uint8_t id[16];
	assert_int_equal(pt_ca_nodeid(name, id), 0);
	pt_hex(id, 16, out);
}

/* Starts `psc-peer shell` as a CA identity with stdin from a pipe and
 * stdout+stderr to a log; extra: NULL-terminated further options. */
void sh_start(shproc *s, const kmsfx *fx, const char *name, const char *const *extra)
{
	memset(s, 0, sizeof(*s));
	s->name = name;
	sh_node_hex(name, s->node);
	snprintf(s->ep, sizeof(s->ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(s->log, sizeof(s->log), "%s/%s.shell.log", fx->dir, name);
	char cert[4200], key[4200];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	const char *argv[32] = {
	    PSC_PEER_CLI,  "shell",    "--kms",	     fx->endpoint, "--kms-cert", fx->cert,
	    "--kms-curve", fx->curve,  "--cert",     cert,	   "--key",	 key,
	    "--overlay",   "psc.test", "--endpoint", s->ep,	   "--timeout",	 "20000"};
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

void sh_say(shproc *s, const char *fmt, ...)
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

char *sh_log(const shproc *s)
{
	size_t n = 0;
	char *t = pt_read_text(s->log, &n);
	return t ? t : calloc(1, 1);
}

/* The first line after s->mark that contains every needle (NULL-terminated
 * list), copied into line; moves the mark past it. Fails after the guard. */
void sh_expect_v(shproc *s, char *line, size_t cap, const char *const *needles)
{
	int64_t end = sh_now_ms() + SHPROC_GUARD_MS;
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
		if (gone || sh_now_ms() > end) {
			print_message("---- %s's output ----\n%s\n----\n", s->name, t);
			free(t);
			fail_msg("%s %s a line with '%s'", s->name,
				 gone ? "exited without printing" : "never printed", needles[0]);
		}
		free(t);
		sh_sleep_ms(50);
	}
}

/* 1 if a line after `from` contains needle (no waiting). */
int sh_has_since(const shproc *s, size_t from, const char *needle)
{
	char *t = sh_log(s);
	int hit = strlen(t) > from && strstr(t + from, needle) != NULL;
	free(t);
	return hit;
}

size_t sh_len(const shproc *s)
{
	char *t = sh_log(s);
	size_t n = strlen(t);
	free(t);
	return n;
}

int sh_finish(shproc *s)
{
	if (s->pid <= 0)
		return -1;
	sh_say(s, "quit");
	close(s->in);
	int st = 0;
	int64_t end = sh_now_ms() + SHPROC_GUARD_MS;
	while (waitpid(s->pid, &st, WNOHANG) == 0) {
		if (sh_now_ms() > end) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			s->pid = 0;
			return -1;
		}
		sh_sleep_ms(50);
	}
	s->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void sh_kill(shproc *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		close(s->in);
		s->pid = 0;
	}
}
