/*
 * aud_verify — offline verifier (see aud_verify.h).
 * Never: write to the directory it checks.
 */
#include "aud_verify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aud_scan.h"

__attribute__((format(printf, 4, 5))) static psc_rc verdict(aud_verify_report *rep, int status,
							    uint64_t seq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rep->why, sizeof(rep->why), fmt, ap);
	va_end(ap);
	rep->status = status;
	rep->bad_seq = seq;
	return status == AUD_VERIFY_TAMPERED ? PSC_E_AUDIT_TAMPERED : PSC_E_AUDIT_MALFORMED;
}

psc_rc aud_ckpt_read_file(const char *path, aud_ckpt *out, psc_err *err)
{
	aud_lines *rd = NULL;
	psc_rc rc = aud_lines_open(&rd, path, err);
	if (rc != PSC_OK)
		return rc;
	const char *line;
	size_t len;
	uint64_t off;
	aud_line_kind k = aud_lines_next(rd, &line, &len, &off);
	if (k == AUD_LINE_OK || k == AUD_LINE_TORN)
		rc = aud_ckpt_parse(line, len, out, err);
	else
		rc = psc_err_set(err, PSC_E_AUDIT_MALFORMED, "%s: no checkpoint line", path);
	if (rc == PSC_OK && k == AUD_LINE_OK && aud_lines_next(rd, &line, &len, &off) != AUD_LINE_EOF)
		rc = psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				 "%s: expected exactly one checkpoint line", path);
	aud_lines_free(&rd);
	return rc;
}

/*
 * Checkpoints are read as a stream beside the records (sizes never decrease), so
 * memory stays constant however long the log: a year of checkpoints every 1000
 * records would not fit in memory as an array of signatures.
 */
typedef struct cpcur {
	aud_lines *rd;     /* NULL: no checkpoint file */
	char path[AUD_PATH_MAX];
	EVP_PKEY *pub;
	bool have;         /* cur is the next checkpoint still to match */
	aud_ckpt cur;
	uint64_t prev_size;
} cpcur;

/* Advances to the next checkpoint (have = false at the end of the file). */
static psc_rc cp_next(cpcur *c, aud_verify_report *rep)
{
	c->have = false;
	if (!c->rd)
		return PSC_OK;
	const char *line;
	size_t len;
	uint64_t off;
	aud_line_kind k = aud_lines_next(c->rd, &line, &len, &off);
	if (k == AUD_LINE_EOF)
		return PSC_OK;
	unsigned long long ln = (unsigned long long)aud_lines_lineno(c->rd);
	if (k != AUD_LINE_OK)
		return verdict(rep, AUD_VERIFY_MALFORMED, 0, "%s line %llu: %s", c->path, ln,
			       k == AUD_LINE_TORN ? "torn last line (a crash the KMS has not "
						    "repaired yet: let the KMS open the log)"
						  : "unreadable or too long");
	psc_err e;
	psc_err_clear(&e);
	if (aud_ckpt_parse(line, len, &c->cur, &e) != PSC_OK)
		return verdict(rep, AUD_VERIFY_MALFORMED, 0, "%s line %llu: %s", c->path, ln,
			       psc_err_text(&e));
	if (c->cur.size < c->prev_size)
		return verdict(rep, AUD_VERIFY_TAMPERED, c->cur.size,
			       "%s line %llu: checkpoint size %llu is smaller than the one before "
			       "it (%llu): checkpoints reordered or replaced",
			       c->path, ln, (unsigned long long)c->cur.size,
			       (unsigned long long)c->prev_size);
	if (c->pub) {
		if (aud_ckpt_verify(&c->cur, c->pub) != PSC_OK)
			return verdict(rep, AUD_VERIFY_TAMPERED, c->cur.size,
				       "%s line %llu: signature of the checkpoint at size %llu does "
				       "not verify with the given public key (forged or signed by "
				       "another key)",
				       c->path, ln, (unsigned long long)c->cur.size);
		rep->signatures_checked++;
	}
	c->prev_size = c->cur.size;
	rep->checkpoints++;
	c->have = true;
	return PSC_OK;
}

static psc_rc cp_open(cpcur *c, const aud_verify_opts *o, aud_verify_report *rep)
{
	memset(c, 0, sizeof(*c));
	c->pub = o->pubkey;
	snprintf(c->path, sizeof(c->path), "%s/%s", o->dir, AUD_CKPT_FILE);
	if (access(c->path, F_OK) != 0 && errno == ENOENT)
		return PSC_OK; /* a log that never reached a checkpoint */
	psc_err e;
	psc_err_clear(&e);
	if (aud_lines_open(&c->rd, c->path, &e) != PSC_OK)
		return verdict(rep, AUD_VERIFY_MALFORMED, 0, "%s", psc_err_text(&e));
	return cp_next(c, rep);
}

/* Compares the running tree with a checkpoint of exactly ch->count records. */
static psc_rc match_root(const aud_chain *ch, const aud_ckpt *cp, const char *what,
			 aud_verify_report *rep)
{
	uint8_t root[32];
	proto_merkle_acc_root(&ch->acc, root);
	if (CRYPTO_memcmp(root, cp->root, 32) != 0)
		return verdict(rep, AUD_VERIFY_TAMPERED, cp->size,
			       "%s at size %llu: its Merkle root does not match records 1..%llu "
			       "(history before it was rewritten)",
			       what, (unsigned long long)cp->size, (unsigned long long)cp->size);
	if (ch->count > 0 && strcmp(cp->kms, ch->kms) != 0)
		return verdict(rep, AUD_VERIFY_TAMPERED, cp->size,
			       "%s at size %llu names KMS '%s' but the log is KMS '%s'", what,
			       (unsigned long long)cp->size, cp->kms, ch->kms);
	return PSC_OK;
}

static void count_event(const aud_rec *r, aud_verify_report *rep)
{
	if (strcmp(r->event, "log.repair") == 0)
		rep->repairs++;
	else if (strcmp(r->event, "log.recover") == 0)
		rep->recoveries++;
	else if (strcmp(r->event, "aborted") == 0)
		rep->aborted++;
}

psc_rc aud_verify_dir(const aud_verify_opts *o, aud_verify_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	if (!o || !o->dir)
		return verdict(rep, AUD_VERIFY_MALFORMED, 0, "no directory given");
	psc_rc rc;
	cpcur c;
	memset(&c, 0, sizeof(c));
	aud_parsed *p = malloc(sizeof(*p));
	aud_chain *ch = malloc(sizeof(*ch));
	aud_lines *rd = NULL;
	proto_merkle_hasher *h = NULL;
	if (!p || !ch || proto_merkle_hasher_new(&h) != PSC_OK) {
		rc = verdict(rep, AUD_VERIFY_MALFORMED, 0, "out of memory");
		goto out;
	}
	aud_chain_init(ch);
	if (o->trusted && o->pubkey && aud_ckpt_verify(o->trusted, o->pubkey) != PSC_OK) {
		rc = verdict(rep, AUD_VERIFY_TAMPERED, o->trusted->size,
			     "trusted checkpoint at size %llu: signature does not verify with the "
			     "given public key",
			     (unsigned long long)o->trusted->size);
		goto out;
	}
	if ((rc = cp_open(&c, o, rep)) != PSC_OK)
		goto out;
	psc_err e;
	psc_err_clear(&e);
	unsigned nseg = 0;
	if (aud_seg_count(o->dir, &nseg, &e) != PSC_OK) {
		rc = verdict(rep, e.rc == PSC_E_AUDIT_TAMPERED ? AUD_VERIFY_TAMPERED
							       : AUD_VERIFY_MALFORMED,
			     0, "%s", psc_err_text(&e));
		goto out;
	}
	if (nseg == 0) {
		rc = verdict(rep, AUD_VERIFY_MALFORMED, 0,
			     "%s holds no audit segment (audit-00000001.jsonl): wrong directory?",
			     o->dir);
		goto out;
	}
	rep->segments = nseg;
	bool trusted_done = false;
	/* Checkpoints of size 0 (an empty log) hold before any record is read. */
	for (unsigned s = 1; s <= nseg + 1; s++) {
		while (c.have && c.cur.size == ch->count) {
			if ((rc = match_root(ch, &c.cur, "checkpoint", rep)) != PSC_OK)
				goto out;
			rep->covered = c.cur.size;
			if ((rc = cp_next(&c, rep)) != PSC_OK)
				goto out;
		}
		if (o->trusted && !trusted_done && o->trusted->size == ch->count) {
			if ((rc = match_root(ch, o->trusted, "trusted checkpoint", rep)) != PSC_OK)
				goto out;
			trusted_done = true;
		}
		if (s > nseg)
			break;
		char path[AUD_PATH_MAX];
		if (aud_seg_path(o->dir, s, path, sizeof(path)) != PSC_OK ||
		    aud_lines_open(&rd, path, &e) != PSC_OK) {
			rc = verdict(rep, AUD_VERIFY_MALFORMED, ch->count + 1, "%s", psc_err_text(&e));
			goto out;
		}
		aud_chain_begin_segment(ch, s);
		bool empty = true;
		for (;;) {
			const char *line;
			size_t len;
			uint64_t off;
			aud_line_kind k = aud_lines_next(rd, &line, &len, &off);
			if (k == AUD_LINE_EOF)
				break;
			unsigned long long ln = (unsigned long long)aud_lines_lineno(rd);
			if (k != AUD_LINE_OK) {
				rc = verdict(rep, AUD_VERIFY_MALFORMED, ch->count + 1,
					     "audit-%08u.jsonl line %llu: %s", s, ln,
					     k == AUD_LINE_TORN
						     ? "torn last line (a crash the KMS has not "
						       "repaired yet: let the KMS open the log)"
						     : k == AUD_LINE_TOO_LONG ? "line too long"
									      : "read error");
				goto out;
			}
			if ((rc = aud_chain_feed(ch, line, len, p, h, &e)) != PSC_OK) {
				int st = rc == PSC_E_AUDIT_TAMPERED ? AUD_VERIFY_TAMPERED
								    : AUD_VERIFY_MALFORMED;
				uint64_t seq = rc == PSC_E_AUDIT_TAMPERED ? p->rec.seq : ch->count + 1;
				rc = verdict(rep, st, seq, "audit-%08u.jsonl line %llu: %s", s, ln,
					     psc_err_text(&e));
				goto out;
			}
			empty = false;
			count_event(&p->rec, rep);
			rep->records = ch->count;
			while (c.have && c.cur.size == ch->count) {
				if ((rc = match_root(ch, &c.cur, "checkpoint", rep)) != PSC_OK)
					goto out;
				rep->covered = c.cur.size;
				if ((rc = cp_next(&c, rep)) != PSC_OK)
					goto out;
			}
			if (o->trusted && !trusted_done && o->trusted->size == ch->count) {
				if ((rc = match_root(ch, o->trusted, "trusted checkpoint", rep)) !=
				    PSC_OK)
					goto out;
				trusted_done = true;
			}
		}
		aud_lines_free(&rd);
		/* Only the newest segment may be empty (created just before a crash). */
		if (empty && s < nseg) {
			rc = verdict(rep, AUD_VERIFY_TAMPERED, ch->count + 1,
				     "audit-%08u.jsonl is empty but later segments exist", s);
			goto out;
		}
	}
	if (c.have) {
		rc = verdict(rep, AUD_VERIFY_TAMPERED, ch->count + 1,
			     "checkpoint at size %llu covers more records than the log holds "
			     "(%llu): records %llu..%llu were removed (tail truncated)",
			     (unsigned long long)c.cur.size, (unsigned long long)ch->count,
			     (unsigned long long)ch->count + 1, (unsigned long long)c.cur.size);
		goto out;
	}
	if (o->trusted && !trusted_done) {
		rc = verdict(rep, AUD_VERIFY_TAMPERED, ch->count + 1,
			     "trusted checkpoint at size %llu covers more records than the log "
			     "holds (%llu): records %llu..%llu were removed (tail truncated)",
			     (unsigned long long)o->trusted->size, (unsigned long long)ch->count,
			     (unsigned long long)ch->count + 1,
			     (unsigned long long)o->trusted->size);
		goto out;
	}
	rep->status = AUD_VERIFY_OK;
	rc = PSC_OK;
out:
	proto_merkle_hasher_free(&h);
	aud_lines_free(&rd);
	aud_lines_free(&c.rd);
	free(p);
	free(ch);
	return rc;
}
