/*
 * psc_test — shared fixtures for unit and integration tests.
 *
 * Owns: temp dirs, the throwaway SoftHSM token (tests/fixtures/mktoken.sh), paths
 * into the test CA (tests/fixtures/mkca.sh, built once per ctest run and named by
 * PSC_TEST_CA), free loopback ports, and a harness that starts real processes
 * with their output captured to log files.
 * Never: mock a component that can run here.
 */
#ifndef PSC_TEST_H
#define PSC_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Directory of the test CA; aborts the test run with a clear message if unset. */
const char *pt_ca_dir(void);
/* "<ca dir>/<file>" in a static buffer that the next call overwrites. */
const char *pt_ca_path(const char *file);
/* Reads NAME.nodeid from the test CA into 16 bytes; 0 on success. */
int pt_ca_nodeid(const char *name, uint8_t out[16]);
/* Reads a whole file; caller frees. NULL on error. */
uint8_t *pt_read_file(const char *path, size_t *len);

/* A whole file as a NUL-terminated string (caller frees); NULL on error. */
char *pt_read_text(const char *path, size_t *len);
/* "<source dir>/docs/<name>" in a static buffer (PSC_SOURCE_DIR from the
 * environment or the build). */
const char *pt_doc_path(const char *name);
/* Generated doc sections live between two marker lines. Compares the section
 * (markers included) with `gen`: 0 equal, 1 stale, -1 file or markers missing. */
int pt_doc_section_check(const char *path, const char *begin, const char *end,
			 const char *gen);
/* Replaces the section (markers included) with `gen`. 0 on success, prints why not. */
int pt_doc_section_write(const char *path, const char *begin, const char *end,
			 const char *gen);

/* mkdtemp under $TMPDIR (or /tmp); out must hold 4096 bytes. 0 on success. */
int pt_tmpdir(char *out, const char *tag);
/* rm -rf; ignores missing paths. */
void pt_rm_rf(const char *path);

/* Throwaway SoftHSM token; sets SOFTHSM2_CONF for this process. */
typedef struct pt_token {
	char dir[4096];
	char conf[4200];
	char label[64];
	char pin[32];
	char so_pin[32];
	const char *module; /* PKCS#11 module path (SoftHSM) */
} pt_token;
int pt_token_new(pt_token **out, const char *label);
void pt_token_free(pt_token **tok);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int pt_free_port(void);

/* Process harness. */
typedef struct pt_proc {
	pid_t pid;
	char log[4200];
	int status;
	int exited;
} pt_proc;
/* Starts argv[0] with stdout+stderr to log (a path); extra env "K=V" strings may be NULL. */
int pt_proc_start(pt_proc *p, char *const argv[], char *const env[], const char *log);
/* Waits up to timeout_ms; returns exit status (0..255), 128+signal, or -1 on timeout. */
int pt_proc_wait(pt_proc *p, int timeout_ms);
/* Starts the build's psc-kmsd -c config with SOFTHSM2_CONF=softhsm_conf (output
 * appended to log) and waits up to 20 s for this run's "listening on" line.
 * 0 when it listens; -1 otherwise (the log is printed if it exited). */
int pt_kmsd_start(pt_proc *p, const char *config, const char *softhsm_conf, const char *log);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns as pt_proc_wait. */
int pt_proc_stop(pt_proc *p, int timeout_ms);
void pt_proc_kill(pt_proc *p, int sig);
/* Runs a command to completion, capturing output into *out (caller frees); returns exit code. */
int pt_run(char *const argv[], char **out, int timeout_ms);

/* Hex helpers for vectors. */
size_t pt_unhex(const char *hex, uint8_t *out, size_t max);
void pt_hex(const uint8_t *p, size_t n, char *out);

#endif
