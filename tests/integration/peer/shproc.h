/*
 * shproc — a `psc-peer shell` child process for integration tests: stdin from
 * a pipe the test writes commands to, stdout+stderr to a log the test reads,
 * the way a person at a terminal would use it. Waits are bounded hang guards
 * (SHPROC_GUARD_MS), never speed assertions.
 */
#ifndef SHPROC_H
#define SHPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kmsfx.h"

#define SHPROC_GUARD_MS 30000

typedef struct shproc {
	const char *name; /* test-CA identity */
	pid_t pid;
	int in; /* its stdin */
	char log[4200];
	char ep[64];   /* its data endpoint */
	char node[33]; /* its Node-ID, hex */
	size_t mark;   /* log offset: sh_expect looks after it */
} shproc;

int64_t sh_now_ms(void);
void sh_sleep_ms(int ms);
/* The hex Node-ID of a test-CA identity. */
void sh_node_hex(const char *name, char out[33]);

/* Starts `psc-peer shell` as a test-CA identity against fx's KMS with a fresh
 * data endpoint; extra: NULL or NULL-terminated further options. */
void sh_start(shproc *s, const kmsfx *fx, const char *name, const char *const *extra);
/* Writes one command line. */
void sh_say(shproc *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Its output so far (caller frees; never NULL). */
char *sh_log(const shproc *s);
size_t sh_len(const shproc *s);
/* 1 if the output after offset `from` contains needle (no waiting). */
int sh_has_since(const shproc *s, size_t from, const char *needle);
/* Waits for the first complete line after s->mark that contains every needle
 * (NULL-terminated), copies it into line (nullable) and moves the mark past
 * it. Fails the test (with the output) after the guard or if the process
 * exited. */
void sh_expect_v(shproc *s, char *line, size_t cap, const char *const *needles);
#define sh_expect(s, line, cap, ...)                                                               \
	sh_expect_v(s, line, cap, (const char *const[]){__VA_ARGS__, NULL})
/* `quit`, close stdin, wait; returns the exit status (128+signal; -1 if it
 * had to be killed). */
int sh_finish(shproc *s);
/* SIGKILL if still running (teardown). */
void sh_kill(shproc *s);

#endif
