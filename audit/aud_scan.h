/*
 * aud_scan — reading an audit directory: segment names, a bounded line reader,
 * and the chain state machine that both the writer (at open) and the verifier run
 * over every record.
 *
 * Owns: the rules that tie records together — seq starts at 1 and has no gaps,
 * `prev` is the SHA-256 of the previous line (across segments), every segment
 * after the first starts with a segment.link record naming its own number, and
 * each line is one RFC 9162 leaf of the log's Merkle tree.
 * Never: modify files, or accept a line longer than AUD_LINE_MAX.
 */
#ifndef AUD_SCAN_H
#define AUD_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aud_rec.h"
#include "proto_merkle.h"
#include "psc_rc.h"

#define AUD_SEG_MAX_COUNT 99999999u
#define AUD_PATH_MAX 4096
#define AUD_CKPT_FILE "checkpoints.jsonl"

/* "<dir>/audit-%08u.jsonl"; PSC_E_TOO_LARGE if the path does not fit. */
psc_rc aud_seg_path(const char *dir, unsigned n, char *out, size_t cap) PSC_WUR;
/* Number of segments (0 for a new log). PSC_E_AUDIT_TAMPERED if numbering is not
 * 1..K without holes (a removed segment), PSC_E_IO if dir cannot be read. */
psc_rc aud_seg_count(const char *dir, unsigned *count, psc_err *err) PSC_WUR;

/* Bounded line reader over one file. */
typedef struct aud_lines aud_lines;
psc_rc aud_lines_open(aud_lines **out, const char *path, psc_err *err) PSC_WUR;
void aud_lines_free(aud_lines **p);
typedef enum aud_line_kind {
	AUD_LINE_OK,       /* a complete line, '\n' stripped */
	AUD_LINE_EOF,      /* clean end of file */
	AUD_LINE_TORN,     /* bytes after the last '\n' (no newline): *line holds them */
	AUD_LINE_TOO_LONG, /* a line over AUD_LINE_MAX */
	AUD_LINE_IOERR,
} aud_line_kind;
/* *off = file offset of the line's first byte. Borrowed line valid until next call. */
aud_line_kind aud_lines_next(aud_lines *l, const char **line, size_t *len, uint64_t *off);
/* 1-based number of the line last returned. */
uint64_t aud_lines_lineno(const aud_lines *l);

/* Chain state across all segments. A plain value type (copy to snapshot). */
typedef struct aud_chain {
	uint64_t count;         /* records accepted == last seq */
	uint8_t last[32];       /* SHA-256 of the last accepted line; zeros before seq 1 */
	proto_merkle_acc acc;   /* leaves = lines */
	unsigned segment;       /* segment being read */
	bool seg_first;         /* next record opens the segment */
	char kms[AUD_KMS_ID_MAX + 1]; /* KMS id of record 1 */
} aud_chain;

void aud_chain_init(aud_chain *ch);
void aud_chain_begin_segment(aud_chain *ch, unsigned segno);
/*
 * Accepts the next line: parses it (PSC_E_AUDIT_MALFORMED), checks seq, prev, the
 * segment link and the KMS id (PSC_E_AUDIT_TAMPERED, err naming the seq and why),
 * then advances. On error ch is unchanged. p is caller scratch (large); h is a
 * reusable hasher or NULL.
 */
psc_rc aud_chain_feed(aud_chain *ch, const char *line, size_t len, aud_parsed *p,
		      proto_merkle_hasher *h, psc_err *err) PSC_WUR;

/* SHA-256 of a line (the chain hash); h (nullable) is a reusable hasher. */
void aud_line_hash(proto_merkle_hasher *h, const char *line, size_t len, uint8_t out[32]);

#endif
