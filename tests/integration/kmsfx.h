/*
 * kmsfx — one complete local KMS for an integration test: a temp dir with a
 * SoftHSM token through the key ceremony, a KMS certificate from the test CA
 * (mkkms.sh), and a psc-kmsd process that can be started, stopped and
 * restarted on the same state.
 */
#ifndef KMSFX_H
#define KMSFX_H

#include "psc_test.h"

typedef struct kmsfx {
	char dir[4096];     /* temp dir holding everything */
	char kmsdir[4200];  /* the installation (kms.yaml, token, audit/, state/) */
	char config[4200], cert[4200], softhsm[4200], log[4200];
	char curve[64];     /* KMS CURVE public key (Z85) */
	char endpoint[64];  /* tcp://127.0.0.1:PORT */
	pt_proc kmsd;
	void *zctx;         /* for the test's peers */
} kmsfx;

/* Installs a KMS in a new temp dir named after tag. ca: a test-CA directory
 * (NULL = the suite's). env: NULL or NULL-terminated "NAME=VALUE" settings for
 * mkkms.sh (PSC_TEST_QUERY_MS, PSC_TEST_CRL_RELOAD_S, ...). 0 on success. */
int kmsfx_install(kmsfx *fx, const char *tag, const char *ca, const char *const *env);
/* Starts psc-kmsd and waits for this run's "listening on" line. 0 on success. */
int kmsfx_start(kmsfx *fx);
/* SIGTERM (then SIGKILL after 10 s); returns the exit status. */
int kmsfx_stop(kmsfx *fx);
/* Stops psc-kmsd if running, terminates the ZeroMQ context (close the peers
 * first) and removes the temp dir unless PSC_KEEP is set. */
void kmsfx_cleanup(kmsfx *fx);
/* Runs a shell command; prints its output when it fails. Returns the exit code. */
int kmsfx_sh(const char *cmd);
/* Runs psc-audit with up to three arguments after the subcommand; *out gets
 * its output (caller frees). Returns the exit code. */
int kmsfx_audit(kmsfx *fx, const char *sub, const char *a1, const char *a2, char **out);
/* psc-kmsctl WORDS... -c CONFIG (words: NULL-terminated, at most 8), with the
 * installation's SoftHSM config in the environment. *out gets its output
 * (caller frees; "" rather than NULL). Returns its exit code. */
int kmsfx_ctl(const kmsfx *fx, char **out, const char *const *words);
/* Where the value of "key": starts in json, inside the object "obj":{ when obj
 * is not NULL; NULL if absent. For tests reading psc-kmsctl's --json output. */
const char *kmsfx_json_find(const char *json, const char *obj, const char *key);
/* psc-audit verify on the installation's log (the daemon stopped first);
 * prints psc-audit's output when it fails. Returns its exit code. */
int kmsfx_audit_verify(kmsfx *fx);

#endif
