/* Restoring a state backup onto a stopped KMS; see kms_backup.h. */
#include "kms_backup.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aud_log.h"
#include "aud_scan.h"
#include "hsm_epoch.h"
#include "kms_store.h"

/* ---- highest epoch per PSC ------------------------------------------------ */

typedef struct epoch_slot {
	uint8_t id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	bool used;
} epoch_slot;

struct kms_epoch_map {
	epoch_slot *slots;
	size_t cap, n; /* cap is a power of two, kept at most half full */
};

static size_t slot_of(const kms_epoch_map *m, const uint8_t id[PSC_PSC_ID_LEN])
{
	/* PSC ids are random 16-byte values: their first bytes hash well enough. */
	uint64_t h = 0;
	memcpy(&h, id, sizeof(h));
	size_t i = (size_t)h & (m->cap - 1);
	while (m->slots[i].used && memcmp(m->slots[i].id, id, PSC_PSC_ID_LEN) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static psc_rc map_raise(kms_epoch_map *m, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch)
{
	if (2 * (m->n + 1) > m->cap) {
		kms_epoch_map bigger = {.cap = m->cap ? 2 * m->cap : 1024};
		bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
		if (!bigger.slots)
			return PSC_E_NOMEM;
		for (size_t i = 0; i < m->cap; i++)
			if (m->slots[i].used)
				bigger.slots[slot_of(&bigger, m->slots[i].id)] = m->slots[i];
		bigger.n = m->n;
		free(m->slots);
		*m = bigger;
	}
	epoch_slot *s = &m->slots[slot_of(m, id)];
	if (!s->used) {
		s->used = true;
		memcpy(s->id, id, PSC_PSC_ID_LEN);
		m->n++;
	}
	if (epoch > s->epoch)
		s->epoch = epoch;
	return PSC_OK;
}

uint64_t kms_epoch_map_get(const kms_epoch_map *m, const uint8_t psc_id[PSC_PSC_ID_LEN])
{
	if (!m || !m->cap)
		return 0;
	const epoch_slot *s = &m->slots[slot_of(m, psc_id)];
	return s->used ? s->epoch : 0;
}

size_t kms_epoch_map_count(const kms_epoch_map *m)
{
	return m ? m->n : 0;
}

void kms_epoch_map_foreach(const kms_epoch_map *m,
			   void (*fn)(void *arg, const uint8_t psc_id[PSC_PSC_ID_LEN],
				      uint64_t epoch),
			   void *arg)
{
	for (size_t i = 0; m && i < m->cap; i++)
		if (m->slots[i].used)
			fn(arg, m->slots[i].id, m->slots[i].epoch);
}

void kms_epoch_map_free(kms_epoch_map **p)
{
	if (!p || !*p)
		return;
	free((*p)->slots);
	free(*p);
	*p = NULL;
}

psc_rc kms_audit_highest_epochs(const char *audit_dir, kms_epoch_map **out, psc_err *err)
{
	*out = NULL;
	unsigned nseg = 0;
	psc_rc rc = aud_seg_count(audit_dir, &nseg, err);
	if (rc != PSC_OK)
		return rc;
	kms_epoch_map *m = calloc(1, sizeof(*m));
	aud_parsed *p = malloc(sizeof(*p));
	if (!m || !p) {
		free(m);
		free(p);
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	}
	for (unsigned s = 1; rc == PSC_OK && s <= nseg; s++) {
		char path[AUD_PATH_MAX];
		aud_lines *rd = NULL;
		if ((rc = aud_seg_path(audit_dir, s, path, sizeof(path))) != PSC_OK) {
			psc_err_set(err, rc, "audit segment path under %s is too long", audit_dir);
			break;
		}
		if ((rc = aud_lines_open(&rd, path, err)) != PSC_OK)
			break;
		for (;;) {
			const char *line;
			size_t len;
			uint64_t off;
			aud_line_kind kind = aud_lines_next(rd, &line, &len, &off);
			if (kind == AUD_LINE_EOF || kind == AUD_LINE_TORN)
				break; /* a torn tail holds no committed record */
			if (kind != AUD_LINE_OK) {
				rc = psc_err_set(
				    err, PSC_E_AUDIT_MALFORMED,
				    "%s line %llu: unreadable (run psc-audit verify %s)", path,
				    (unsigned long long)aud_lines_lineno(rd), audit_dir);
				break;
			}
			if ((rc = aud_rec_parse(line, len, p, err)) != PSC_OK)
				break;
			if (p->rec.psc && p->rec.has_epoch &&
			    map_raise(m, p->rec.psc, p->rec.epoch) != PSC_OK) {
				rc = psc_err_set(err, PSC_E_NOMEM, "out of memory");
				break;
			}
		}
		aud_lines_free(&rd);
	}
	free(p);
	if (rc != PSC_OK) {
		kms_epoch_map_free(&m);
		return rc;
	}
	*out = m;
	return PSC_OK;
}

/* ---- restore ---------------------------------------------------------------- */

static void progress(const kms_restore_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void progress(const kms_restore_opts *o, const char *fmt, ...)
{
	if (!o->progress)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(o->progress, fmt, ap);
	va_end(ap);
	fputc('\n', o->progress);
	fflush(o->progress);
}

static void unlink_db(const char *path)
{
	char side[4400];
	unlink(path);
	snprintf(side, sizeof(side), "%s-wal", path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", path);
	unlink(side);
}

static psc_rc sync_dir_of(const char *path, psc_err *err)
{
	char dir[4200];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	psc_rc rc = PSC_OK;
	if (fd < 0 || fsync(fd) != 0)
		rc = psc_err_set(err, PSC_E_IO, "syncing directory %s: %s", dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Copies src to dst (created 0600, must not exist) and syncs it. */
static psc_rc copy_file(const char *src, const char *dst, psc_err *err)
{
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return psc_err_set(err, PSC_E_IO, "backup file %s: %s", src, strerror(errno));
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		close(in);
		return psc_err_set(err, PSC_E_IO, "cannot create %s: %s", dst, strerror(errno));
	}
	char buf[65536];
	psc_rc rc = PSC_OK;
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || write(out, buf, (size_t)n) != n) {
			rc = psc_err_set(err, PSC_E_IO, "copying %s to %s: %s", src, dst,
					 strerror(errno));
			break;
		}
	}
	if (rc == PSC_OK && fsync(out) != 0)
		rc = psc_err_set(err, PSC_E_IO, "syncing %s: %s", dst, strerror(errno));
	close(in);
	close(out);
	return rc;
}

typedef struct blob_check {
	const kms_restore_opts *o;
	hsm_session *hs;
	uint64_t n;
	psc_rc rc;
	psc_err *err;
} blob_check;

static int check_blob(void *arg, const kms_epoch *e)
{
	blob_check *c = arg;
	hsm_key k;
	psc_rc rc = hsm_epoch_load(c->hs, e->wrapped, e->wrapped_len, &k, c->err);
	if (rc != PSC_OK) {
		char hex[33];
		for (int i = 0; i < PSC_PSC_ID_LEN; i++)
			snprintf(hex + 2 * i, 3, "%02x", e->psc_id[i]);
		psc_err_set(c->err, rc,
			    "the backup's blob for PSC %s epoch %llu (KEK id %s) cannot be used on "
			    "this token: %s. A backup restores only onto a token holding the "
			    "master KEK it was made under (the KEK never leaves the HSM)",
			    hex, (unsigned long long)e->epoch, e->kek_id, psc_err_text(c->err));
		c->rc = rc;
		return 1;
	}
	psc_err ignore;
	(void)!hsm_key_destroy(c->hs, &k, &ignore);
	if (++c->n % 1000 == 0)
		progress(c->o, "token: %llu blobs checked ...", (unsigned long long)c->n);
	return 0;
}

typedef struct floor_ctx {
	kms_store *s;
	const kms_epoch_map *audit;
	kms_epoch_map *done; /* ids already floored from the backup's PSC list */
	kms_restore_result *res;
	psc_rc rc;
	psc_err *err;
} floor_ctx;

static void apply_floor(floor_ctx *f, const uint8_t id[PSC_PSC_ID_LEN], uint64_t floor)
{
	if (f->rc != PSC_OK || floor == 0)
		return;
	kms_cmd c = {.type = KMS_CMD_EPOCH_FLOOR};
	memcpy(c.epoch_floor.psc_id, id, PSC_PSC_ID_LEN);
	c.epoch_floor.epoch = floor;
	f->rc = kms_store_apply(f->s, &c, f->err);
	if (f->rc == PSC_OK)
		f->res->floors++;
}

static int floor_psc(void *arg, const kms_psc *p)
{
	floor_ctx *f = arg;
	uint64_t high = kms_epoch_map_get(f->audit, p->psc_id);
	if (p->highest_epoch > high)
		high = p->highest_epoch;
	if (p->epoch > high)
		high = p->epoch;
	bool live = !p->destroyed && p->epoch > 0;
	/* One above the highest for a live PSC: the daemon then sees it below its
	 * floor and rekeys it above everything ever issued. */
	apply_floor(f, p->psc_id, live ? high + 1 : high);
	if (live) {
		f->res->pscs_live++;
		f->res->rekeys_due++;
	}
	if (f->rc == PSC_OK && map_raise(f->done, p->psc_id, 1) != PSC_OK)
		f->rc = psc_err_set(f->err, PSC_E_NOMEM, "out of memory");
	return f->rc != PSC_OK;
}

static void floor_audit_only(void *arg, const uint8_t id[PSC_PSC_ID_LEN], uint64_t epoch)
{
	floor_ctx *f = arg;
	/* PSCs created after the backup: gone with the restore, but their ids keep
	 * their epochs should they ever be used again. */
	if (kms_epoch_map_get(f->done, id) == 0)
		apply_floor(f, id, epoch);
}

psc_rc kms_restore(const kms_restore_opts *o, kms_restore_result *res, psc_err *err)
{
	memset(res, 0, sizeof(*res));
	const kms_config *cfg = o->cfg;
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.restoring", cfg->state_db);
	struct stat st;
	if (stat(o->backup, &st) != 0 || !S_ISREG(st.st_mode))
		return psc_err_set(err, PSC_E_IO, "backup file %s: %s", o->backup,
				   errno ? strerror(errno) : "not a regular file");

	/* 1. the daemon must be stopped: its audit lock and database lock say so */
	aud_log *log = NULL;
	aud_log_opts ao = {.dir = cfg->audit.dir,
			   .kms_id = cfg->kms_id,
			   .sign_key = o->audit_key,
			   .checkpoint_every = cfg->audit.checkpoint_every,
			   .checkpoint_secs = cfg->audit.checkpoint_interval_s,
			   .segment_max_bytes = cfg->audit.segment_bytes};
	psc_rc rc = aud_log_open(&log, &ao, err);
	if (rc == PSC_E_AUDIT_LOCKED)
		return psc_err_set(err, rc,
				   "psc-kmsd is running (it holds the audit log %s): stop "
				   "it first (systemctl stop psc-kmsd)",
				   cfg->audit.dir);
	if (rc != PSC_OK)
		return rc;
	kms_store *s = NULL;
	kms_epoch_map *audit = NULL, *done = NULL;
	bool have_live = access(cfg->state_db, F_OK) == 0;
	if (have_live) {
		rc = kms_store_open(&s, cfg->state_db, err);
		kms_store_close(&s);
		if (rc == PSC_E_KMS_DB_LOCKED) {
			psc_err_set(err, rc, "psc-kmsd is running (it holds %s): stop it first",
				    cfg->state_db);
			goto fail_log;
		}
		/* A corrupt live database is a reason to restore, not to stop. */
		rc = PSC_OK;
	}

	/* 2. the backup, copied beside the live database */
	unlink_db(tmp); /* left over by an interrupted restore */
	if ((rc = copy_file(o->backup, tmp, err)) != PSC_OK)
		goto fail;
	if ((rc = kms_store_open(&s, tmp, err)) != PSC_OK) {
		psc_err_set(err, rc, "backup %s is not a usable psc-kms state backup: %s",
			    o->backup, psc_err_text(err));
		goto fail;
	}
	res->backup_seq = kms_store_last_audit_seq(s);
	progress(o, "backup %s: a psc-kms state database covering audit records up to %llu",
		 o->backup, (unsigned long long)res->backup_seq);

	/* 3. every blob unwraps on this token */
	hsm_session *hs = NULL;
	if ((rc = hsm_session_get(o->hsm, 0, &hs, err)) != PSC_OK)
		goto fail;
	blob_check bc = {.o = o, .hs = hs, .rc = PSC_OK, .err = err};
	if ((rc = kms_store_epochs_not_kek(s, "", check_blob, &bc, err)) != PSC_OK ||
	    (rc = bc.rc) != PSC_OK)
		goto fail;
	res->blobs = bc.n;
	progress(o, "token: all %llu wrapped epoch secrets of the backup unwrap under its KEK",
		 (unsigned long long)bc.n);

	/* 4. the audit log knows everything the backup knows, and more */
	uint64_t last = aud_log_last_seq(log);
	if (last < res->backup_seq) {
		rc = psc_err_set(err, PSC_E_AUDIT,
				 "the audit log %s ends at record %llu but the backup covers "
				 "records up to %llu: this audit log is older than the backup, so "
				 "it cannot say which epochs were issued since; restore the audit "
				 "log of this installation first",
				 cfg->audit.dir, (unsigned long long)last,
				 (unsigned long long)res->backup_seq);
		goto fail;
	}
	if ((rc = kms_audit_highest_epochs(cfg->audit.dir, &audit, err)) != PSC_OK)
		goto fail;
	progress(o, "audit log: %llu records, epochs of %zu PSC ids", (unsigned long long)last,
		 kms_epoch_map_count(audit));

	/* 5. epoch floors */
	done = calloc(1, sizeof(*done));
	if (!done) {
		rc = psc_err_set(err, PSC_E_NOMEM, "out of memory");
		goto fail;
	}
	if ((rc = kms_store_begin(s, err)) != PSC_OK)
		goto fail;
	floor_ctx fc = {.s = s, .audit = audit, .done = done, .res = res, .rc = PSC_OK, .err = err};
	if ((rc = kms_store_psc_foreach(s, true, floor_psc, &fc, err)) != PSC_OK ||
	    (rc = fc.rc) != PSC_OK)
		goto fail;
	kms_epoch_map_foreach(audit, floor_audit_only, &fc);
	if ((rc = fc.rc) != PSC_OK)
		goto fail;

	/* 6. audited, committed, swapped in */
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	if (have_live)
		snprintf(res->replaced, sizeof(res->replaced), "%s.replaced-%s", cfg->state_db,
			 when);
	aud_kv kv[6] = {{.key = "file", .str = o->backup},
			{.key = "backup_seq", .num = res->backup_seq},
			{.key = "pscs", .num = res->pscs_live},
			{.key = "epoch_floors", .num = res->floors},
			{.key = "replaced", .str = have_live ? res->replaced : "none"},
			{.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_KMS_RESTORE, .result = "ok", .detail = kv, .n_detail = 6};
	if ((rc = aud_log_append(log, &ev, &res->audit_seq, err)) != PSC_OK ||
	    (rc = aud_log_commit(log, NULL, err)) != PSC_OK ||
	    (rc = kms_store_commit(s, res->audit_seq, err)) != PSC_OK)
		goto fail;
	kms_store_close(&s); /* folds the WAL into the file */
	if (have_live && rename(cfg->state_db, res->replaced) != 0) {
		rc = psc_err_set(err, PSC_E_IO, "moving %s aside to %s: %s", cfg->state_db,
				 res->replaced, strerror(errno));
		goto fail;
	}
	if (have_live) {
		char a[4300], b[4300];
		for (int i = 0; i < 2; i++) {
			const char *suf = i ? "-shm" : "-wal";
			snprintf(a, sizeof(a), "%s%s", cfg->state_db, suf);
			snprintf(b, sizeof(b), "%s%s", res->replaced, suf);
			if (access(a, F_OK) == 0)
				(void)!rename(a, b);
		}
	}
	if (rename(tmp, cfg->state_db) != 0) {
		rc = psc_err_set(err, PSC_E_IO,
				 "moving the restored database %s to %s: %s (the "
				 "previous one is at %s)",
				 tmp, cfg->state_db, strerror(errno), res->replaced);
		goto fail;
	}
	if ((rc = sync_dir_of(cfg->state_db, err)) != PSC_OK)
		goto fail;
	kms_epoch_map_free(&audit);
	kms_epoch_map_free(&done);
	psc_err ce;
	if (aud_log_close(&log, &ce) != PSC_OK)
		progress(o, "warning: final audit checkpoint: %s", psc_err_text(&ce));
	return PSC_OK;
fail:
	kms_store_close(&s);
	unlink_db(tmp);
fail_log:
	kms_epoch_map_free(&audit);
	kms_epoch_map_free(&done);
	aud_log_free(&log);
	return rc;
}
