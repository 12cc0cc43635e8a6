/*
 * aud_log — audit log writer (see aud_log.h for the contract).
 *
 * State is kept twice: `committed` (what fdatasync made durable) and `pending`
 * (committed + the batch being built). A failed write or sync throws the batch
 * away by copying committed over pending, so a refused record never leaves a
 * number, a chain hash or a leaf behind.
 * Never: write outside the log directory, acknowledge before fdatasync, or
 * truncate below the committed size.
 */
#include "aud_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aud_ckpt.h"
#include "aud_scan.h"

#define DEFAULT_CP_EVERY 1000
#define DEFAULT_CP_SECS 300
#define DEFAULT_SEG_MAX (64ull << 20)
#define BATCH_MAX (16u << 20) /* bytes of one group commit */

struct aud_log {
	char dir[AUD_PATH_MAX];
	char kms[AUD_KMS_ID_MAX + 1];
	EVP_PKEY *key;
	uint64_t cp_every;
	unsigned cp_secs;
	uint64_t seg_max;

	int dir_fd, lock_fd, seg_fd, cp_fd;
	unsigned seg_no;
	uint64_t seg_size;     /* committed bytes of the current segment */
	uint64_t cp_file_size; /* committed bytes of checkpoints.jsonl */
	uint64_t cp_size;      /* records covered by the last checkpoint */
	struct timespec cp_at; /* CLOCK_MONOTONIC of the last checkpoint (or open) */

	aud_chain committed, pending;
	char *batch;
	size_t batch_len, batch_cap;

	psc_rc failed;         /* PSC_OK, or the error that closed the log */
	int failed_errno;
	uint64_t refused_from, refused_to; /* seqs of the batch that was refused */
	const char *failed_what;

	proto_merkle_hasher *hasher; /* reused for every leaf, node and chain hash */
	char line[AUD_LINE_MAX + 1];
	aud_parsed scratch;
};

/* ---- small helpers ----------------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double mono_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static psc_rc errno_rc(int e)
{
	return (e == ENOSPC || e == EDQUOT) ? PSC_E_AUDIT_NOSPACE : PSC_E_AUDIT_IO;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int sync_fd(int fd)
{
	int r;
	do {
		r = fdatasync(fd);
	} while (r < 0 && errno == EINTR);
	return r;
}

/* Closes the log to key events: the pending batch is refused. */
static void close_log(aud_log *log, psc_rc rc, int e, const char *what)
{
	log->failed = rc;
	log->failed_errno = e;
	log->failed_what = what;
	if (log->pending.count > log->committed.count) {
		log->refused_from = log->committed.count + 1;
		log->refused_to = log->pending.count;
	} else {
		log->refused_from = log->refused_to = 0;
	}
	log->pending = log->committed;
	log->batch_len = 0;
}

/* close_log for an errno; returns the error for this call. */
static psc_rc fail_closed(aud_log *log, int e, const char *what, psc_err *err)
{
	psc_rc rc = errno_rc(e);
	close_log(log, rc, e, what);
	return psc_err_set(err, rc,
			   "audit: %s in %s failed: %s; the key event was not recorded and key "
			   "events are refused until the log recovers (free space or fix the "
			   "device, then recover)",
			   what, log->dir, strerror(e));
}

static psc_rc refuse(const aud_log *log, psc_err *err)
{
	return psc_err_set(err, PSC_E_AUDIT,
			   "audit: log %s is failed closed since %s failed (%s); key events are "
			   "refused until aud_log_recover() succeeds",
			   log->dir, log->failed_what ? log->failed_what : "a write",
			   log->failed == PSC_E_AUDIT_SIGN ? "signing error"
							    : strerror(log->failed_errno));
}

/* "<dir>/<name>"; the directory's length was checked at open, so this only
 * fails for a name longer than the slack left for it. */
static psc_rc dir_file(const aud_log *log, const char *name, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%s", log->dir, name);
	return (n < 0 || (size_t)n >= cap) ? PSC_E_TOO_LARGE : PSC_OK;
}

static void fill_time(aud_rec *r)
{
	aud_time_format(now_ms(), r->time);
}

/* Formats r into the batch and advances pending. seq and prev are filled here;
 * kms and time too unless `checked` says the caller filled and validated r. */
static psc_rc batch_add(aud_log *log, aud_rec *r, bool checked, uint64_t *seq, psc_err *err)
{
	psc_rc rc;
	r->seq = log->pending.count + 1;
	memcpy(r->prev, log->pending.last, 32);
	if (!checked) {
		r->kms = log->kms;
		fill_time(r);
		if ((rc = aud_rec_check(r, err)) != PSC_OK)
			return rc;
	}
	size_t n = 0;
	if (aud_rec_format(r, log->line, sizeof(log->line) - 1, &n) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE,
				   "audit: record for '%s' is longer than %d bytes", r->event,
				   AUD_LINE_MAX);
	if (log->batch_len + n + 1 > BATCH_MAX)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE,
				   "audit: pending batch exceeds %u bytes; commit more often",
				   BATCH_MAX);
	if (log->batch_cap - log->batch_len < n + 1) {
		size_t cap = log->batch_cap ? log->batch_cap : 65536;
		while (cap - log->batch_len < n + 1)
			cap *= 2;
		char *nb = realloc(log->batch, cap);
		if (!nb)
			return psc_err_set(err, PSC_E_NOMEM, "audit: out of memory for the batch");
		log->batch = nb;
		log->batch_cap = cap;
	}
	uint8_t leaf[32];
	proto_merkle_leaf_h(log->hasher, (const uint8_t *)log->line, n, leaf);
	if (proto_merkle_acc_add_h(log->hasher, &log->pending.acc, leaf) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE, "audit: log is full (2^64 records)");
	memcpy(log->batch + log->batch_len, log->line, n);
	log->batch[log->batch_len + n] = '\n';
	log->batch_len += n + 1;
	aud_line_hash(log->hasher, log->line, n, log->pending.last);
	log->pending.count = r->seq;
	if (seq)
		*seq = r->seq;
	return PSC_OK;
}

/* ---- checkpoints and segments ------------------------------------------ */

static psc_rc write_checkpoint(aud_log *log, psc_err *err)
{
	aud_ckpt c;
	memset(&c, 0, sizeof(c));
	snprintf(c.kms, sizeof(c.kms), "%s", log->kms);
	c.size = log->committed.count;
	proto_merkle_acc_root(&log->committed.acc, c.root);
	aud_time_format(now_ms(), c.time);
	psc_rc rc = aud_ckpt_sign(&c, log->key, err);
	if (rc != PSC_OK) {
		close_log(log, PSC_E_AUDIT_SIGN, 0, "signing a checkpoint");
		return rc;
	}
	char line[AUD_CKPT_LINE_MAX + 2];
	size_t n = 0;
	if ((rc = aud_ckpt_format(&c, line, sizeof(line) - 1, &n)) != PSC_OK)
		return psc_err_set(err, rc, "audit: checkpoint line does not fit");
	line[n++] = '\n';
	if (write_all(log->cp_fd, line, n) != 0)
		return fail_closed(log, errno, "writing " AUD_CKPT_FILE, err);
	if (sync_fd(log->cp_fd) != 0)
		return fail_closed(log, errno, "syncing " AUD_CKPT_FILE, err);
	log->cp_file_size += n;
	log->cp_size = c.size;
	clock_gettime(CLOCK_MONOTONIC, &log->cp_at);
	return PSC_OK;
}

static psc_rc open_segment(aud_log *log, unsigned n, bool create, psc_err *err)
{
	char p[AUD_PATH_MAX];
	if (aud_seg_path(log->dir, n, p, sizeof(p)) != PSC_OK)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: directory path too long");
	int fl = O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0);
	int fd = open(p, fl, 0640);
	if (fd < 0)
		return fail_closed(log, errno, "opening a segment", err);
	if (create && fsync(log->dir_fd) != 0) {
		int e = errno;
		close(fd);
		return fail_closed(log, e, "syncing the log directory", err);
	}
	if (log->seg_fd >= 0)
		close(log->seg_fd);
	log->seg_fd = fd;
	log->seg_no = n;
	return PSC_OK;
}

/* Called with an empty batch: checkpoint what the old segment holds, start the
 * next one. Its segment.link record is added by add_link_if_needed(). */
static psc_rc rotate(aud_log *log, psc_err *err)
{
	psc_rc rc;
	if (log->committed.count > log->cp_size && (rc = write_checkpoint(log, err)) != PSC_OK)
		return rc;
	if ((rc = open_segment(log, log->seg_no + 1, true, err)) != PSC_OK)
		return rc;
	log->seg_size = 0;
	return PSC_OK;
}

/* A segment after the first opens with a segment.link record; its `prev` (like
 * every record's) is the hash of the previous segment's last line. */
static psc_rc add_link_if_needed(aud_log *log, psc_err *err)
{
	if (log->batch_len != 0 || log->seg_size != 0 || log->seg_no <= 1)
		return PSC_OK;
	char prevname[32];
	snprintf(prevname, sizeof(prevname), "audit-%08u.jsonl", log->seg_no - 1);
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.event = aud_event_name(AUD_EV_SEGMENT_LINK);
	r.result = "ok";
	r.n_detail = 3;
	r.detail[0] = (aud_kv){.key = "segment", .num = log->seg_no};
	r.detail[1] = (aud_kv){.key = "prev_segment", .str = prevname};
	r.detail[2] = (aud_kv){.key = "prev_last_seq", .num = log->committed.count};
	return batch_add(log, &r, false, NULL, err);
}

/* ---- public API -------------------------------------------------------- */

uint64_t aud_log_last_seq(const aud_log *log)
{
	return log ? log->committed.count : 0;
}

bool aud_log_failed(const aud_log *log)
{
	return log && log->failed != PSC_OK;
}

void aud_log_set_sign_key(aud_log *log, EVP_PKEY *sign_key)
{
	if (log && sign_key)
		log->key = sign_key;
}

/* Everything append needs before a record can join the batch. */
static psc_rc prepare_append(aud_log *log, psc_err *err)
{
	psc_rc rc;
	if (log->failed != PSC_OK)
		return refuse(log, err);
	if (log->batch_len == 0 && log->seg_size >= log->seg_max &&
	    (rc = rotate(log, err)) != PSC_OK)
		return rc;
	return add_link_if_needed(log, err);
}

psc_rc aud_log_append(aud_log *log, const aud_event *ev, uint64_t *seq, psc_err *err)
{
	psc_rc rc;
	if (!log || !ev)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log or event");
	if (ev->type == AUD_EV_SEGMENT_LINK || ev->type == AUD_EV_LOG_REPAIR ||
	    ev->type == AUD_EV_LOG_RECOVER || ev->type == AUD_EV_ABORTED ||
	    !aud_event_name(ev->type))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit: event type %d is not one a caller may append",
				   (int)ev->type);
	if (ev->n_detail > AUD_DETAIL_MAX || (ev->n_detail && !ev->detail))
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE, "audit: too many detail entries");
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.event = aud_event_name(ev->type);
	r.req = ev->request_id;
	if (ev->actor) {
		r.has_actor = true;
		r.node = ev->actor->node_id;
		r.cert = ev->actor->cert_sha256;
		r.subject = ev->actor->subject;
		r.issuer = ev->actor->issuer;
	}
	r.psc = ev->psc_id;
	r.has_epoch = ev->has_epoch;
	r.epoch = ev->epoch;
	r.key = ev->key_id;
	if (ev->decision) {
		r.has_decision = true;
		r.outcome = ev->decision->outcome;
		r.rule = ev->decision->rule;
		r.rev = ev->decision->policy_rev;
	}
	r.result = ev->result;
	r.n_detail = ev->n_detail;
	for (size_t i = 0; i < ev->n_detail; i++)
		r.detail[i] = ev->detail[i];
	/* Validate before touching the batch, so a bad field costs no link record. */
	r.seq = 1;
	r.kms = log->kms;
	fill_time(&r);
	if ((rc = aud_rec_check(&r, err)) != PSC_OK)
		return rc;
	size_t before = log->batch_len;
	if ((rc = prepare_append(log, err)) != PSC_OK)
		return rc;
	if (log->batch_len != before)
		fill_time(&r); /* a segment.link went first: keep times in seq order */
	return batch_add(log, &r, true, seq, err);
}

psc_rc aud_log_append_aborted(aud_log *log, uint64_t first, uint64_t last,
			      const char *request_id, uint64_t *seq, psc_err *err)
{
	psc_rc rc;
	if (!log)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log");
	if (first == 0 || first > last || last > log->pending.count)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "audit: aborted range %llu..%llu is not within 1..%llu",
				   (unsigned long long)first, (unsigned long long)last,
				   (unsigned long long)log->pending.count);
	if ((rc = prepare_append(log, err)) != PSC_OK)
		return rc;
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.event = aud_event_name(AUD_EV_ABORTED);
	r.req = request_id;
	r.result = "aborted";
	r.n_detail = 2;
	r.detail[0] = (aud_kv){.key = "first_seq", .num = first};
	r.detail[1] = (aud_kv){.key = "last_seq", .num = last};
	return batch_add(log, &r, false, seq, err);
}

void aud_log_rollback(aud_log *log)
{
	if (!log)
		return;
	log->pending = log->committed;
	log->batch_len = 0;
}

static bool checkpoint_due(const aud_log *log)
{
	if (log->committed.count <= log->cp_size)
		return false;
	return log->committed.count - log->cp_size >= log->cp_every ||
	       mono_since(&log->cp_at) >= (double)log->cp_secs;
}

psc_rc aud_log_commit(aud_log *log, uint64_t *last_seq, psc_err *err)
{
	psc_rc rc;
	if (!log)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log");
	if (log->failed != PSC_OK)
		return refuse(log, err);
	if (log->batch_len > 0) {
		/* A due checkpoint covers what is already durable, before the batch, so a
		 * checkpoint failure never leaves written-but-refused records behind. */
		if (checkpoint_due(log) && (rc = write_checkpoint(log, err)) != PSC_OK)
			return rc;
		if (write_all(log->seg_fd, log->batch, log->batch_len) != 0)
			return fail_closed(log, errno, "writing a segment", err);
		if (sync_fd(log->seg_fd) != 0)
			return fail_closed(log, errno, "syncing a segment", err);
		log->seg_size += log->batch_len;
		log->committed = log->pending;
		log->batch_len = 0;
	}
	if (last_seq)
		*last_seq = log->committed.count;
	return PSC_OK;
}

psc_rc aud_log_checkpoint(aud_log *log, psc_err *err)
{
	if (!log)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log");
	if (log->failed != PSC_OK)
		return refuse(log, err);
	if (log->committed.count <= log->cp_size)
		return PSC_OK;
	return write_checkpoint(log, err);
}

psc_rc aud_log_tick(aud_log *log, psc_err *err)
{
	if (!log)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log");
	if (log->failed != PSC_OK)
		return refuse(log, err);
	if (log->committed.count > log->cp_size &&
	    mono_since(&log->cp_at) >= (double)log->cp_secs)
		return write_checkpoint(log, err);
	return PSC_OK;
}

static psc_rc reopen_cp(aud_log *log, psc_err *err)
{
	char p[AUD_PATH_MAX];
	if (dir_file(log, AUD_CKPT_FILE, p, sizeof(p)) != PSC_OK)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: path too long");
	int fd = open(p, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return psc_err_set(err, errno_rc(errno), "audit: cannot open %s: %s", p,
				   strerror(errno));
	if (log->cp_fd >= 0)
		close(log->cp_fd);
	log->cp_fd = fd;
	return PSC_OK;
}

psc_rc aud_log_recover(aud_log *log, psc_err *err)
{
	psc_rc rc;
	if (!log)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit: NULL log");
	if (log->failed == PSC_OK)
		return PSC_OK;
	/* The original cause is what the log.recover record reports; a failed attempt
	 * keeps it (the new error is returned to the caller). */
	psc_rc cause = log->failed;
	int cause_errno = log->failed_errno;
	const char *cause_what = log->failed_what;
	uint64_t from = log->refused_from, to = log->refused_to;

	/* Fresh descriptors: after a failed fsync the kernel may have dropped the dirty
	 * pages and cleared the error, so the old fd proves nothing. Cut what a short
	 * write may have left past the committed size, and make the cut durable. */
	char p[AUD_PATH_MAX];
	if (aud_seg_path(log->dir, log->seg_no, p, sizeof(p)) != PSC_OK)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: path too long");
	int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0 || ftruncate(fd, (off_t)log->seg_size) != 0 || sync_fd(fd) != 0 ||
	    fsync(log->dir_fd) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return psc_err_set(err, errno_rc(e), "audit: recovery of %s failed: %s", p,
				   strerror(e));
	}
	if (log->seg_fd >= 0)
		close(log->seg_fd);
	log->seg_fd = fd;
	if ((rc = reopen_cp(log, err)) != PSC_OK)
		return rc;
	if (ftruncate(log->cp_fd, (off_t)log->cp_file_size) != 0 || sync_fd(log->cp_fd) != 0) {
		int e = errno;
		return psc_err_set(err, errno_rc(e), "audit: recovery of %s failed: %s",
				   AUD_CKPT_FILE, strerror(e));
	}

	/* Record the recovery exactly as any record is written (rotation, link, one
	 * write + fdatasync): if that cannot be made durable the log stays closed. */
	log->failed = PSC_OK;
	log->pending = log->committed;
	log->batch_len = 0;
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.event = aud_event_name(AUD_EV_LOG_RECOVER);
	r.result = "ok";
	r.detail[r.n_detail++] = (aud_kv){.key = "error", .str = psc_rc_name(cause)};
	r.detail[r.n_detail++] = (aud_kv){.key = "errno", .num = (uint64_t)cause_errno};
	r.detail[r.n_detail++] = (aud_kv){.key = "during", .str = cause_what ? cause_what : "?"};
	r.detail[r.n_detail++] = (aud_kv){.key = "refused_first_seq", .num = from};
	r.detail[r.n_detail++] = (aud_kv){.key = "refused_last_seq", .num = to};
	if ((rc = prepare_append(log, err)) == PSC_OK &&
	    (rc = batch_add(log, &r, false, NULL, err)) == PSC_OK &&
	    (rc = aud_log_commit(log, NULL, err)) == PSC_OK)
		return PSC_OK;
	log->failed = cause == PSC_OK ? PSC_E_AUDIT_IO : cause;
	log->failed_errno = cause_errno;
	log->failed_what = cause_what;
	log->refused_from = from;
	log->refused_to = to;
	log->pending = log->committed;
	log->batch_len = 0;
	return rc;
}

void aud_log_free(aud_log **p)
{
	if (!p || !*p)
		return;
	aud_log *log = *p;
	if (log->seg_fd >= 0)
		close(log->seg_fd);
	if (log->cp_fd >= 0)
		close(log->cp_fd);
	if (log->lock_fd >= 0)
		close(log->lock_fd); /* releases the flock */
	if (log->dir_fd >= 0)
		close(log->dir_fd);
	proto_merkle_hasher_free(&log->hasher);
	free(log->batch);
	free(log);
	*p = NULL;
}

psc_rc aud_log_close(aud_log **p, psc_err *err)
{
	if (!p || !*p)
		return PSC_OK;
	aud_log *log = *p;
	psc_rc rc = PSC_OK;
	aud_log_rollback(log);
	if (log->failed != PSC_OK)
		rc = refuse(log, err); /* no final checkpoint: say so */
	else if (log->committed.count > log->cp_size)
		rc = write_checkpoint(log, err);
	aud_log_free(p);
	return rc;
}

/* ---- open: replay, repair -------------------------------------------- */

/* Copies bytes [off, EOF) of path into dir/torn-<tag>-<off>.bin, then cuts the
 * file there, durably. *saved names the copy; *cut_len and sha are filled. */
static psc_rc cut_tail(aud_log *log, const char *path, const char *tag, uint64_t off,
		       char *saved, size_t saved_cap, uint64_t *cut_len, uint8_t sha[32],
		       psc_err *err)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot open %s: %s", path, strerror(e));
	}
	uint64_t n = (uint64_t)st.st_size - off;
	char *buf = malloc(n ? n : 1);
	ssize_t got = buf ? pread(fd, buf, n, (off_t)off) : -1;
	if (got < 0 || (uint64_t)got != n) {
		free(buf);
		close(fd);
		return psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot read the torn tail of %s", path);
	}
	aud_line_hash(log->hasher, buf, n, sha);
	int sn = snprintf(saved, saved_cap, "torn-%s-%012llu.bin", tag, (unsigned long long)off);
	if (sn < 0 || (size_t)sn >= saved_cap) {
		free(buf);
		close(fd);
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: torn-tail file name too long");
	}
	char sp[AUD_PATH_MAX];
	int sfd = -1;
	if (dir_file(log, saved, sp, sizeof(sp)) == PSC_OK)
		sfd = open(sp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	int ok = sfd >= 0 && write_all(sfd, buf, n) == 0 && fsync(sfd) == 0 &&
		 fsync(log->dir_fd) == 0 && ftruncate(fd, (off_t)off) == 0 && fsync(fd) == 0;
	int e = errno;
	free(buf);
	if (sfd >= 0)
		close(sfd);
	close(fd);
	if (!ok)
		return psc_err_set(err, errno_rc(e), "audit: cannot repair the torn tail of %s: %s",
				   path, strerror(e));
	*cut_len = n;
	return PSC_OK;
}

typedef struct repair {
	bool needed;
	char file[64];
	uint64_t off, len;
	uint8_t sha[32];
	char saved[80];
} repair;

/* Replays segment n into log->committed. For the last segment a torn or
 * unparseable tail (with no valid record after it) is cut and described in rep. */
static psc_rc replay_segment(aud_log *log, unsigned n, bool last, repair *rep, psc_err *err)
{
	char p[AUD_PATH_MAX];
	psc_rc rc;
	if (aud_seg_path(log->dir, n, p, sizeof(p)) != PSC_OK)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: path too long");
	aud_lines *rd = NULL;
	if ((rc = aud_lines_open(&rd, p, err)) != PSC_OK)
		return rc;
	aud_chain_begin_segment(&log->committed, n);
	const char *line;
	size_t len;
	uint64_t off;
	bool cutting = false;
	uint64_t cut_at = 0, first_line = 0;
	psc_err first;
	psc_err_clear(&first);
	for (;;) {
		aud_line_kind k = aud_lines_next(rd, &line, &len, &off);
		if (k == AUD_LINE_EOF)
			break;
		if (k == AUD_LINE_IOERR) {
			aud_lines_free(&rd);
			return psc_err_set(err, PSC_E_AUDIT_IO, "audit: read error in %s", p);
		}
		if (k == AUD_LINE_OK && !cutting) {
			psc_err e;
			psc_err_clear(&e);
			if (aud_chain_feed(&log->committed, line, len, &log->scratch, log->hasher, &e) == PSC_OK)
				continue;
			first = e;
			first_line = aud_lines_lineno(rd);
		}
		if (!last || (k == AUD_LINE_OK && cutting &&
			      aud_rec_parse(line, len, &log->scratch, NULL) == PSC_OK)) {
			/* Damage followed by intact records is not a torn write. */
			uint64_t lineno = first_line ? first_line : aud_lines_lineno(rd);
			aud_lines_free(&rd);
			if (first.rc == PSC_OK)
				psc_err_set(&first, PSC_E_AUDIT_MALFORMED, "line too long");
			return psc_err_set(err, first.rc == PSC_E_AUDIT_TAMPERED ? PSC_E_AUDIT_TAMPERED
										 : PSC_E_AUDIT_MALFORMED,
					   "audit: %s line %llu: %s; refusing to open the log: run "
					   "psc-audit verify %s",
					   p, (unsigned long long)lineno,
					   psc_err_text(&first), log->dir);
		}
		if (!cutting) {
			cutting = true;
			cut_at = off;
		}
		if (k == AUD_LINE_TORN || k == AUD_LINE_TOO_LONG)
			break;
	}
	aud_lines_free(&rd);
	log->seg_no = n;
	if (cutting) {
		rep->needed = true;
		snprintf(rep->file, sizeof(rep->file), "audit-%08u.jsonl", n);
		char tag[16];
		snprintf(tag, sizeof(tag), "%08u", n);
		rep->off = cut_at;
		if ((rc = cut_tail(log, p, tag, cut_at, rep->saved, sizeof(rep->saved), &rep->len,
				   rep->sha, err)) != PSC_OK)
			return rc;
	}
	struct stat st;
	if (stat(p, &st) != 0)
		return psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot stat %s", p);
	log->seg_size = (uint64_t)st.st_size;
	return PSC_OK;
}

/* Reads checkpoints.jsonl: last checkpoint size, a torn tail cut like a segment's. */
static psc_rc replay_checkpoints(aud_log *log, repair *rep, psc_err *err)
{
	char p[AUD_PATH_MAX];
	psc_rc rc;
	if (dir_file(log, AUD_CKPT_FILE, p, sizeof(p)) != PSC_OK)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: path too long");
	if ((rc = reopen_cp(log, err)) != PSC_OK)
		return rc;
	aud_lines *rd = NULL;
	if ((rc = aud_lines_open(&rd, p, err)) != PSC_OK)
		return rc;
	const char *line;
	size_t len;
	uint64_t off;
	for (;;) {
		aud_line_kind k = aud_lines_next(rd, &line, &len, &off);
		if (k == AUD_LINE_EOF)
			break;
		aud_ckpt c;
		if (k == AUD_LINE_OK && aud_ckpt_parse(line, len, &c, NULL) == PSC_OK) {
			if (c.size < log->cp_size || c.size > log->committed.count) {
				aud_lines_free(&rd);
				return psc_err_set(err, PSC_E_AUDIT_TAMPERED,
						   "audit: %s line %llu covers %llu records but the "
						   "log holds %llu (records removed?); run psc-audit "
						   "verify %s",
						   p, (unsigned long long)aud_lines_lineno(rd),
						   (unsigned long long)c.size,
						   (unsigned long long)log->committed.count, log->dir);
			}
			log->cp_size = c.size;
			continue;
		}
		if (k == AUD_LINE_TORN) {
			aud_lines_free(&rd);
			rep->needed = true;
			snprintf(rep->file, sizeof(rep->file), "%s", AUD_CKPT_FILE);
			rep->off = off;
			if ((rc = cut_tail(log, p, "checkpoints", off, rep->saved, sizeof(rep->saved),
					   &rep->len, rep->sha, err)) != PSC_OK)
				return rc;
			break;
		}
		uint64_t ln = aud_lines_lineno(rd);
		aud_lines_free(&rd);
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				   "audit: %s line %llu is not a checkpoint; run psc-audit verify %s",
				   p, (unsigned long long)ln, log->dir);
	}
	aud_lines_free(&rd);
	struct stat st;
	if (fstat(log->cp_fd, &st) != 0)
		return psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot stat %s", p);
	log->cp_file_size = (uint64_t)st.st_size;
	return PSC_OK;
}

static psc_rc add_repair_record(aud_log *log, const repair *rep, psc_err *err)
{
	char sha[65];
	aud_hex(rep->sha, 32, sha);
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.event = aud_event_name(AUD_EV_LOG_REPAIR);
	r.result = "ok";
	r.detail[r.n_detail++] = (aud_kv){.key = "file", .str = rep->file};
	r.detail[r.n_detail++] = (aud_kv){.key = "offset", .num = rep->off};
	r.detail[r.n_detail++] = (aud_kv){.key = "bytes_cut", .num = rep->len};
	r.detail[r.n_detail++] = (aud_kv){.key = "sha256", .str = sha};
	r.detail[r.n_detail++] = (aud_kv){.key = "saved_as", .str = rep->saved};
	return batch_add(log, &r, false, NULL, err);
}

static bool kms_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > AUD_KMS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

psc_rc aud_log_open(aud_log **out, const aud_log_opts *o, psc_err *err)
{
	psc_rc rc;
	if (!out || !o || !o->dir || !o->sign_key)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "audit: open needs a directory and a signing key");
	*out = NULL;
	if (!kms_id_ok(o->kms_id))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit: KMS id must be 1..%d of [A-Za-z0-9._-]", AUD_KMS_ID_MAX);
	if (strlen(o->dir) + 64 >= AUD_PATH_MAX)
		return psc_err_set(err, PSC_E_TOO_LARGE, "audit: directory path too long");
	aud_log *log = calloc(1, sizeof(*log));
	if (!log)
		return psc_err_set(err, PSC_E_NOMEM, "audit: out of memory");
	log->dir_fd = log->lock_fd = log->seg_fd = log->cp_fd = -1;
	snprintf(log->dir, sizeof(log->dir), "%s", o->dir);
	snprintf(log->kms, sizeof(log->kms), "%s", o->kms_id);
	log->key = o->sign_key;
	log->cp_every = o->checkpoint_every ? o->checkpoint_every : DEFAULT_CP_EVERY;
	log->cp_secs = o->checkpoint_secs ? o->checkpoint_secs : DEFAULT_CP_SECS;
	log->seg_max = o->segment_max_bytes ? o->segment_max_bytes : DEFAULT_SEG_MAX;
	aud_chain_init(&log->committed);
	if (proto_merkle_hasher_new(&log->hasher) != PSC_OK) {
		rc = psc_err_set(err, PSC_E_CRYPTO, "audit: cannot set up SHA-256");
		goto fail;
	}

	if (mkdir(log->dir, 0750) != 0 && errno != EEXIST) {
		rc = psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot create %s: %s", log->dir,
				 strerror(errno));
		goto fail;
	}
	log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char p[AUD_PATH_MAX];
	if (dir_file(log, "lock", p, sizeof(p)) == PSC_OK)
		log->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (log->dir_fd < 0 || log->lock_fd < 0) {
		rc = psc_err_set(err, PSC_E_AUDIT_IO, "audit: cannot open %s: %s", log->dir,
				 strerror(errno));
		goto fail;
	}
	if (flock(log->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = psc_err_set(err, PSC_E_AUDIT_LOCKED,
				 "audit: %s is in use by another process (lock held on %s)",
				 log->dir, p);
		goto fail;
	}

	unsigned nseg = 0;
	if ((rc = aud_seg_count(log->dir, &nseg, err)) != PSC_OK)
		goto fail;
	repair rep[2];
	memset(rep, 0, sizeof(rep));
	for (unsigned i = 1; i <= nseg; i++)
		if ((rc = replay_segment(log, i, i == nseg, &rep[0], err)) != PSC_OK)
			goto fail;
	if ((rc = replay_checkpoints(log, &rep[1], err)) != PSC_OK)
		goto fail;
	/* One log, one KMS id: checkpoints name it and the verifier holds them to it. */
	if (log->committed.count > 0 && strcmp(log->committed.kms, log->kms) != 0) {
		rc = psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				 "audit: %s belongs to KMS '%s', not '%s'; use another directory "
				 "or the old KMS id",
				 log->dir, log->committed.kms, log->kms);
		goto fail;
	}
	if ((rc = open_segment(log, nseg ? nseg : 1, true, err)) != PSC_OK)
		goto fail;
	if (nseg == 0)
		log->seg_size = 0;
	log->pending = log->committed;
	clock_gettime(CLOCK_MONOTONIC, &log->cp_at);

	if (rep[0].needed || rep[1].needed) {
		if ((rc = add_link_if_needed(log, err)) != PSC_OK)
			goto fail;
		for (int i = 0; i < 2; i++)
			if (rep[i].needed && (rc = add_repair_record(log, &rep[i], err)) != PSC_OK)
				goto fail;
		if ((rc = aud_log_commit(log, NULL, err)) != PSC_OK)
			goto fail;
	}
	*out = log;
	return PSC_OK;
fail:
	aud_log_free(&log);
	return rc;
}
