/*
 * aud_testutil — helpers shared by the audit tests: throwaway signing keys, a log
 * filled with varied records, line-level file surgery for tamper cases, and
 * running the real psc-audit binary.
 * Never: reach into aud_log's internals; tests go through the public API and files.
 */
#ifndef AUD_TESTUTIL_H
#define AUD_TESTUTIL_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "aud_log.h"

#define PSC_AUDIT_BIN PSC_BINARY_DIR "/audit/psc-audit"

/* Fresh EC P-256 key; its public half written as PEM to pub_path (if non-NULL). */
EVP_PKEY *at_new_key(const char *pub_path);
/* Opens dir with small segments/checkpoints so a few hundred records rotate. */
aud_log *at_open(const char *dir, EVP_PKEY *key, uint64_t seg_max, uint64_t cp_every);
/* Appends n varied records in batches of `batch`, committing each batch. */
void at_fill(aud_log *log, unsigned n, unsigned batch);
/* Runs psc-audit with up to 6 arguments (NULL-terminated); returns exit code,
 * *out gets the output (caller frees). */
int at_audit(char **out, const char *a1, const char *a2, const char *a3, const char *a4,
	     const char *a5, const char *a6);
/* Whole-file read/write; lines split on '\n' (the last, if unterminated, too). */
char *at_read(const char *path, size_t *len);
void at_write(const char *path, const char *data, size_t len);
void at_append(const char *path, const char *data, size_t len);
/* Segment path into a static buffer. */
const char *at_seg(const char *dir, unsigned n);
/* Number of segment files. */
unsigned at_nseg(const char *dir);
/* cp -a src dst */
void at_copy_dir(const char *src, const char *dst);
/* Copies line `idx` (0-based) of path into out (no '\n'); returns its length. */
size_t at_line(const char *path, size_t idx, char *out, size_t cap);
/* Number of lines. */
size_t at_nlines(const char *path);

#endif
