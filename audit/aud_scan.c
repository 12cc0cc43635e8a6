/*
 * aud_scan — segment naming, bounded line reading, and the chain rules (see
 * aud_scan.h). Never: write to the files it reads.
 */
#include "aud_scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

psc_rc aud_seg_path(const char *dir, unsigned n, char *out, size_t cap)
{
	int k = snprintf(out, cap, "%s/audit-%08u.jsonl", dir, n);
	return (k < 0 || (size_t)k >= cap) ? PSC_E_TOO_LARGE : PSC_OK;
}

/* Segment number of a file name, or 0 if it is not a segment. */
static unsigned seg_number(const char *name)
{
	unsigned n = 0;
	if (strlen(name) != strlen("audit-00000000.jsonl") || strncmp(name, "audit-", 6) != 0 ||
	    strcmp(name + 14, ".jsonl") != 0)
		return 0;
	for (int i = 6; i < 14; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		n = n * 10 + (unsigned)(name[i] - '0');
	}
	return n;
}

psc_rc aud_seg_count(const char *dir, unsigned *count, psc_err *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return psc_err_set(err, PSC_E_IO, "audit: cannot read directory %s: %s", dir,
				   strerror(errno));
	unsigned max = 0, seen = 0;
	bool zero = false;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t nl = strlen(e->d_name);
		/* Other files (keys, notes) may live here; only audit-*.jsonl are segments. */
		if (strncmp(e->d_name, "audit-", 6) != 0 || nl < 12 ||
		    strcmp(e->d_name + nl - 6, ".jsonl") != 0)
			continue;
		unsigned n = seg_number(e->d_name);
		if (n == 0) {
			zero = true;
			continue;
		}
		seen++;
		if (n > max)
			max = n;
	}
	closedir(d);
	if (zero)
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				   "audit: %s holds a file named audit-*.jsonl that is not a "
				   "segment name (audit-00000001.jsonl ...)",
				   dir);
	if (seen != max) {
		/* Names are unique, so seen < max means a number in 1..max is missing. */
		char p[AUD_PATH_MAX];
		for (unsigned i = 1; i <= max; i++) {
			if (aud_seg_path(dir, i, p, sizeof(p)) == PSC_OK && access(p, F_OK) != 0)
				return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
						   "audit: segment %s is missing (segments 1..%u "
						   "expected): a whole segment was removed",
						   p, max);
		}
	}
	*count = max;
	return PSC_OK;
}

/* ---- line reader ------------------------------------------------------- */

#define LINES_BUF (AUD_LINE_MAX + 1 + 65536)

struct aud_lines {
	int fd;
	uint64_t base;  /* file offset of buf[0] */
	size_t start, end;
	bool eof;
	uint64_t lineno;
	char buf[LINES_BUF];
};

psc_rc aud_lines_open(aud_lines **out, const char *path, psc_err *err)
{
	aud_lines *l = calloc(1, sizeof(*l));
	if (!l)
		return psc_err_set(err, PSC_E_NOMEM, "audit: out of memory");
	l->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (l->fd < 0) {
		int e = errno;
		free(l);
		return psc_err_set(err, PSC_E_IO, "audit: cannot open %s: %s", path, strerror(e));
	}
	*out = l;
	return PSC_OK;
}

void aud_lines_free(aud_lines **p)
{
	if (!p || !*p)
		return;
	close((*p)->fd);
	free(*p);
	*p = NULL;
}

uint64_t aud_lines_lineno(const aud_lines *l)
{
	return l->lineno;
}

aud_line_kind aud_lines_next(aud_lines *l, const char **line, size_t *len, uint64_t *off)
{
	for (;;) {
		char *nl = memchr(l->buf + l->start, '\n', l->end - l->start);
		if (nl) {
			size_t n = (size_t)(nl - (l->buf + l->start));
			if (n > AUD_LINE_MAX)
				return AUD_LINE_TOO_LONG;
			*line = l->buf + l->start;
			*len = n;
			*off = l->base + l->start;
			l->start += n + 1;
			l->lineno++;
			return AUD_LINE_OK;
		}
		if (l->end - l->start > AUD_LINE_MAX)
			return AUD_LINE_TOO_LONG;
		if (l->eof) {
			if (l->start == l->end)
				return AUD_LINE_EOF;
			*line = l->buf + l->start;
			*len = l->end - l->start;
			*off = l->base + l->start;
			l->start = l->end;
			l->lineno++;
			return AUD_LINE_TORN;
		}
		/* Slide the partial line to the front and read more. */
		memmove(l->buf, l->buf + l->start, l->end - l->start);
		l->base += l->start;
		l->end -= l->start;
		l->start = 0;
		ssize_t r;
		do {
			r = read(l->fd, l->buf + l->end, sizeof(l->buf) - l->end);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			return AUD_LINE_IOERR;
		if (r == 0)
			l->eof = true;
		l->end += (size_t)r;
	}
}

/* ---- chain ------------------------------------------------------------- */

void aud_line_hash(proto_merkle_hasher *h, const char *line, size_t len, uint8_t out[32])
{
	/* On a digest failure out is all-zero: never a real hash, so it fails closed. */
	proto_merkle_sha256_h(h, (const uint8_t *)line, len, out);
}

void aud_chain_init(aud_chain *ch)
{
	memset(ch, 0, sizeof(*ch));
	proto_merkle_acc_init(&ch->acc);
}

void aud_chain_begin_segment(aud_chain *ch, unsigned segno)
{
	ch->segment = segno;
	ch->seg_first = true;
}

static const aud_kv *detail_get(const aud_rec *r, const char *key)
{
	for (size_t i = 0; i < r->n_detail; i++)
		if (strcmp(r->detail[i].key, key) == 0)
			return &r->detail[i];
	return NULL;
}

psc_rc aud_chain_feed(aud_chain *ch, const char *line, size_t len, aud_parsed *p,
		      proto_merkle_hasher *h, psc_err *err)
{
	psc_err sub;
	psc_err_clear(&sub);
	if (aud_rec_parse(line, len, p, &sub) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED, "record after seq %llu: %s",
				   (unsigned long long)ch->count, psc_err_text(&sub));
	const aud_rec *r = &p->rec;
	if (r->seq != ch->count + 1)
		return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
				   "seq %llu: expected seq %llu here (a record was removed, "
				   "inserted or reordered)",
				   (unsigned long long)r->seq, (unsigned long long)ch->count + 1);
	if (CRYPTO_memcmp(r->prev, ch->last, 32) != 0)
		return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
				   "seq %llu: prev is not the SHA-256 of record %llu (record %llu "
				   "was changed, or records were removed or reordered)",
				   (unsigned long long)r->seq, (unsigned long long)ch->count,
				   (unsigned long long)ch->count);
	bool is_link = strcmp(r->event, "segment.link") == 0;
	if (ch->seg_first && ch->segment > 1) {
		const aud_kv *s = detail_get(r, "segment");
		if (!is_link || !s || s->str || s->num != ch->segment)
			return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
					   "seq %llu: segment %u does not start with its "
					   "segment.link record (segment replaced or reordered)",
					   (unsigned long long)r->seq, ch->segment);
	} else if (is_link) {
		return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
				   "seq %llu: segment.link record inside segment %u",
				   (unsigned long long)r->seq, ch->segment);
	}
	if (strcmp(r->event, "aborted") == 0) {
		/* An aborted record can only name records before it. */
		const aud_kv *f = detail_get(r, "first_seq"), *l = detail_get(r, "last_seq");
		if (!f || !l || f->str || l->str || f->num == 0 || f->num > l->num || l->num >= r->seq)
			return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
					   "seq %llu: aborted record must name first_seq <= "
					   "last_seq before it",
					   (unsigned long long)r->seq);
	}
	uint8_t leaf[32];
	proto_merkle_leaf_h(h, (const uint8_t *)line, len, leaf);
	/* Only fails at 2^64 - 1 leaves, and then leaves acc unchanged. */
	if (proto_merkle_acc_add_h(h, &ch->acc, leaf) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE, "audit: log too large");
	aud_line_hash(h, line, len, ch->last);
	if (ch->count == 0)
		snprintf(ch->kms, sizeof(ch->kms), "%s", r->kms);
	ch->count = r->seq;
	ch->seg_first = false;
	return PSC_OK;
}
