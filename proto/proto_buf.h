/*
 * proto_buf — bounded wire reader and writer with a sticky error.
 *
 * Owns: every byte-level read and write of untrusted or outgoing wire data.
 * After the first failure every further call is a no-op that returns zeros, so a
 * decoder reads a whole structure and checks the error once at the end (Knot
 * DNS's wire_ctx model). The first failure records the field name and offset so
 * errors can say "field 'psc_id' at offset 42: input ends before the field".
 * Never: read past the input, allocate, or size anything by an unchecked length.
 * All integers are big-endian (network order), as in RELOAD.
 */
#ifndef PROTO_BUF_H
#define PROTO_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

typedef struct proto_rd {
	const uint8_t *p;
	size_t len;
	size_t off;
	psc_rc err;
	const char *err_field; /* static string naming the field that failed */
	size_t err_off;
} proto_rd;

void proto_rd_init(proto_rd *r, const uint8_t *p, size_t len);
/* Records the first error only; later ones are ignored (sticky). */
void proto_rd_fail(proto_rd *r, psc_rc rc, const char *field);
size_t proto_rd_left(const proto_rd *r);

uint8_t proto_rd_u8(proto_rd *r, const char *field);
uint16_t proto_rd_u16(proto_rd *r, const char *field);
uint32_t proto_rd_u32(proto_rd *r, const char *field);
uint64_t proto_rd_u64(proto_rd *r, const char *field);
/* Copies exactly n bytes into out (zeroes out on failure). */
void proto_rd_bytes(proto_rd *r, void *out, size_t n, const char *field);
/* Borrows n bytes without copying; NULL on failure. */
const uint8_t *proto_rd_borrow(proto_rd *r, size_t n, const char *field);

/*
 * Length-prefixed vector (TLS `opaque x<min..max>`): prefix is 1, 2, 3 or 4
 * bytes. Borrows the contents; fails with PSC_E_TOO_LARGE above max, PSC_E_BAD_VALUE
 * below min, PSC_E_TRUNCATED if the input is shorter than the prefix says.
 */
const uint8_t *proto_rd_vec(proto_rd *r, unsigned prefix, size_t min, size_t max,
			    size_t *out_len, const char *field);
/* Same, giving a sub-reader over the vector's contents (errors stay separate
 * until proto_rd_sub_done() folds the sub-reader's error back into the parent). */
void proto_rd_subvec(proto_rd *r, proto_rd *sub, unsigned prefix, size_t min, size_t max,
		     const char *field);
void proto_rd_sub_done(proto_rd *r, const proto_rd *sub);
/* Marks PSC_E_TRAILING if bytes remain (for sub-readers whose error is folded
 * into the parent with proto_rd_sub_done). */
void proto_rd_expect_end(proto_rd *r, const char *what);
/* Fails with PSC_E_TRAILING if bytes remain; returns the sticky error. */
psc_rc proto_rd_finish(proto_rd *r, const char *what) PSC_WUR;

/*
 * Writer: grows a heap buffer up to a hard cap named by the caller (the maximum
 * size of the message being built). Exceeding the cap is PSC_E_TOO_LARGE, never
 * a silent truncation.
 */
typedef struct proto_wr {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t max;
	psc_rc err;
	const char *err_field;
} proto_wr;

void proto_wr_init(proto_wr *w, size_t max);
void proto_wr_free(proto_wr *w);
void proto_wr_fail(proto_wr *w, psc_rc rc, const char *field);
void proto_wr_u8(proto_wr *w, uint8_t v);
void proto_wr_u16(proto_wr *w, uint16_t v);
void proto_wr_u32(proto_wr *w, uint32_t v);
void proto_wr_u64(proto_wr *w, uint64_t v);
void proto_wr_bytes(proto_wr *w, const void *p, size_t n);
/* Writes a vector with its length prefix; fails if n is outside [min, max]. */
void proto_wr_vec(proto_wr *w, unsigned prefix, size_t min, size_t max, const void *p,
		  size_t n, const char *field);
/* Open a vector whose contents are written next; close it to fill the prefix. */
size_t proto_wr_vec_open(proto_wr *w, unsigned prefix);
void proto_wr_vec_close(proto_wr *w, size_t mark, unsigned prefix, size_t min, size_t max,
			const char *field);
/* Overwrite a uint32 at an absolute offset (RELOAD length field). */
void proto_wr_put_u32_at(proto_wr *w, size_t off, uint32_t v);
/* Hands the buffer to the caller (who frees it with free()); w becomes empty. */
psc_rc proto_wr_take(proto_wr *w, uint8_t **out, size_t *out_len) PSC_WUR;

/* Largest value a length prefix of `prefix` bytes can carry. */
size_t proto_prefix_max(unsigned prefix);

#endif
