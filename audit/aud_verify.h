/*
 * aud_verify — offline verification of an audit directory (psc-audit verify).
 *
 * Owns: the auditor's verdict: every record parses in canonical form, seq has no
 * gaps, the prev chain holds across segments, every segment after the first opens
 * with its link, every checkpoint's root equals the Merkle root of the records it
 * counts and (with a public key) its signature verifies, and a checkpoint held
 * outside the appliance (--trusted) is consistent with the log, which is what
 * exposes a truncated tail or a rewritten history.
 * Never: modify the directory, or stop at the first checkpoint: the first failure
 * in log order is the one reported.
 */
#ifndef AUD_VERIFY_H
#define AUD_VERIFY_H

#include <openssl/evp.h>
#include <stdint.h>

#include "aud_ckpt.h"
#include "psc_rc.h"

enum { AUD_VERIFY_OK = 0, AUD_VERIFY_TAMPERED = 1, AUD_VERIFY_MALFORMED = 2 };

typedef struct aud_verify_opts {
	const char *dir;
	EVP_PKEY *pubkey;           /* NULL: signatures are not checked (and reported so) */
	const aud_ckpt *trusted;    /* NULL: no outside checkpoint */
} aud_verify_opts;

typedef struct aud_verify_report {
	int status;                 /* AUD_VERIFY_* */
	uint64_t records;           /* records that passed every check */
	uint64_t bad_seq;           /* first bad seq, 0 if none */
	unsigned segments;
	uint64_t checkpoints, signatures_checked;
	uint64_t covered;           /* records covered by the last checkpoint */
	uint64_t repairs, recoveries, aborted;
	char why[PSC_ERR_DETAIL_MAX]; /* what failed and where */
} aud_verify_report;

/* PSC_OK; PSC_E_AUDIT_TAMPERED or PSC_E_AUDIT_MALFORMED with rep->why filled. */
psc_rc aud_verify_dir(const aud_verify_opts *o, aud_verify_report *rep) PSC_WUR;

/* Reads a one-line checkpoint file (an exported trusted checkpoint). */
psc_rc aud_ckpt_read_file(const char *path, aud_ckpt *out, psc_err *err) PSC_WUR;

#endif
