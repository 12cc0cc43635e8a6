/* Master KEK rotation inside psc-kmsd; see kms_kekrot.h. */
#include "kms_kekrot.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "hsm_kek.h"
#include "kms_int.h"

struct kms_kekrot {
	kmsd *k;
	kms_kekrot_status st;
	uint64_t next_ms;	 /* next chunk; 0 when idle */
	bool drained;		 /* the last step found nothing to re-wrap */
	uint64_t quiet_since_ms; /* first drained check of the current quiet period; 0: none */
};

/* The old KEK is destroyed only after the committed state held no blob under
 * it in two checks this far apart: HSM work begun before the switch (a rekey
 * on a worker, DESIGN §5) has come back and been applied by then. */
#define KEKROT_SETTLE_MS 1000

static void hex_of(const uint8_t id[HSM_KEK_ID_LEN], char out[33])
{
	for (int i = 0; i < HSM_KEK_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("psc-kmsd: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void audit_phase(kms_kekrot *r, const char *phase, const char *result)
{
	aud_kv kv[4] = {{.key = "phase", .str = phase},
			{.key = "from", .str = r->st.from[0] ? r->st.from : "unknown"},
			{.key = "to", .str = r->st.to},
			{.key = "rewrapped", .num = r->st.rewrapped}};
	aud_event ev = {.type = AUD_EV_KEK_ROTATE,
			.key_id = r->st.to,
			.result = result,
			.detail = kv,
			.n_detail = 4};
	psc_err e;
	if (kmsd_audit(r->k, &ev, &e) != PSC_OK)
		log_line("audit (kek.rotate %s): %s", phase, psc_err_text(&e));
}

psc_rc kms_kekrot_new(kms_kekrot **out, kmsd *k, psc_err *err)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	(*out)->k = k;
	return PSC_OK;
}

void kms_kekrot_free(kms_kekrot **p)
{
	if (!p || !*p)
		return;
	free(*p);
	*p = NULL;
}

/* Makes `next` current in the token and in the daemon (new EPOCH_NEW blobs). */
static psc_rc switch_to(kms_kekrot *r, const uint8_t next[HSM_KEK_ID_LEN], psc_err *err)
{
	kmsd *k = r->k;
	snprintf(r->st.from, sizeof(r->st.from), "%s", k->kek_id);
	psc_rc rc = hsm_kek_use(k->hsm, next, err);
	if (rc != PSC_OK)
		return rc;
	hex_of(next, k->kek_id);
	snprintf(r->st.to, sizeof(r->st.to), "%s", k->kek_id);
	r->st.active = true;
	r->st.started_ms = k->now_ms;
	r->st.rewrapped = 0;
	r->st.last_error[0] = '\0';
	r->drained = false;
	r->quiet_since_ms = 0;
	r->next_ms = k->now_ms;
	return PSC_OK;
}

psc_rc kms_kekrot_resume(kms_kekrot *r, psc_err *err)
{
	uint8_t next[HSM_KEK_ID_LEN];
	bool found = false;
	psc_rc rc = hsm_kek_next_find(r->k->hsm, &found, next, err);
	if (rc != PSC_OK || !found)
		return rc;
	r->st.chunk = KMS_KEKROT_CHUNK_DEFAULT;
	r->st.pause_ms = 0;
	rc = switch_to(r, next, err);
	if (rc != PSC_OK)
		return rc;
	log_line("resuming the master KEK rotation %s -> %s", r->st.from, r->st.to);
	audit_phase(r, "resume", "ok");
	return PSC_OK;
}

psc_rc kms_kekrot_start(kms_kekrot *r, unsigned chunk, unsigned pause_ms, psc_err *err)
{
	if (chunk > KMS_KEKROT_CHUNK_MAX || pause_ms > KMS_KEKROT_PAUSE_MAX_MS)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "chunk must be 1..%d blobs and pause 0..%d ms",
				   KMS_KEKROT_CHUNK_MAX, KMS_KEKROT_PAUSE_MAX_MS);
	r->st.chunk = chunk ? chunk : KMS_KEKROT_CHUNK_DEFAULT;
	r->st.pause_ms = pause_ms;
	if (r->st.active)
		return PSC_OK;
	if (aud_log_failed(r->k->audit))
		return psc_err_set(err, PSC_E_AUDIT,
				   "the audit log is failed closed: a KEK rotation cannot be "
				   "recorded until it recovers");
	uint8_t next[HSM_KEK_ID_LEN];
	bool created = false;
	psc_rc rc = hsm_kek_next_create(r->k->hsm, next, &created, err);
	if (rc == PSC_OK)
		rc = switch_to(r, next, err);
	if (rc != PSC_OK)
		return rc;
	log_line("master KEK rotation started: %s -> %s", r->st.from, r->st.to);
	audit_phase(r, created ? "start" : "resume", "ok");
	return PSC_OK;
}

typedef struct chunk_arg {
	kms_epoch *rows;
	size_t n, cap;
} chunk_arg;

static int collect(void *arg, const kms_epoch *e)
{
	chunk_arg *c = arg;
	if (c->n >= c->cap)
		return 1;
	c->rows[c->n++] = *e;
	return 0;
}

void kms_kekrot_step(kms_kekrot *r)
{
	kmsd *k = r->k;
	if (!r->st.active || r->drained || k->now_ms < r->next_ms)
		return;
	r->next_ms = k->now_ms + r->st.pause_ms;
	if (aud_log_failed(k->audit))
		return; /* the batch could not commit: wait */
	chunk_arg c = {.cap = r->st.chunk};
	c.rows = calloc(c.cap, sizeof(*c.rows));
	psc_err e;
	if (!c.rows) {
		snprintf(r->st.last_error, sizeof(r->st.last_error), "out of memory");
		return;
	}
	if (kms_store_epochs_not_kek(k->store, k->kek_id, collect, &c, &e) != PSC_OK) {
		snprintf(r->st.last_error, sizeof(r->st.last_error), "state store: %s",
			 psc_err_text(&e));
		free(c.rows);
		return;
	}
	if (c.n == 0)
		r->drained = true; /* kms_kekrot_after_batch checks the committed state */
	else
		r->quiet_since_ms = 0;
	for (size_t i = 0; i < c.n; i++) {
		uint8_t blob[HSM_EPOCH_BLOB_LEN];
		psc_rc rc =
		    hsm_epoch_rewrap(k->hs, c.rows[i].wrapped, c.rows[i].wrapped_len, blob, &e);
		if (rc == PSC_OK) {
			kms_cmd cmd = {.type = KMS_CMD_KEK_REWRAP};
			memcpy(cmd.kek_rewrap.psc_id, c.rows[i].psc_id, PSC_PSC_ID_LEN);
			cmd.kek_rewrap.epoch = c.rows[i].epoch;
			cmd.kek_rewrap.kek_id =
			    (proto_bytes){(const uint8_t *)k->kek_id, strlen(k->kek_id)};
			cmd.kek_rewrap.wrapped = (proto_bytes){blob, sizeof(blob)};
			rc = kmsd_apply(k, &cmd, &e);
		}
		OPENSSL_cleanse(blob, sizeof(blob));
		if (rc != PSC_OK) {
			snprintf(r->st.last_error, sizeof(r->st.last_error), "%s",
				 psc_err_text(&e));
			log_line("KEK rotation: re-wrapping a blob failed (retried in 1 s): %s",
				 psc_err_text(&e));
			r->next_ms = k->now_ms + 1000;
			break;
		}
		r->st.rewrapped++;
		r->st.last_error[0] = '\0';
	}
	free(c.rows);
}

void kms_kekrot_after_batch(kms_kekrot *r)
{
	kmsd *k = r->k;
	if (!r->st.active || !r->drained)
		return;
	r->drained = false;
	psc_err e;
	uint64_t left = 0;
	/* The committed state decides: a batch that failed to commit leaves blobs
	 * under the old KEK, and the next steps re-wrap them again. */
	if (kms_store_in_txn(k->store) ||
	    kms_store_count_not_kek(k->store, k->kek_id, &left, &e) != PSC_OK || left != 0) {
		r->quiet_since_ms = 0;
		return;
	}
	if (!r->quiet_since_ms || k->now_ms < r->quiet_since_ms + KEKROT_SETTLE_MS) {
		if (!r->quiet_since_ms)
			r->quiet_since_ms = k->now_ms;
		r->next_ms = r->quiet_since_ms + KEKROT_SETTLE_MS; /* check again then */
		return;
	}
	unsigned destroyed = 0;
	if (hsm_kek_retire_old(k->hsm, &destroyed, &e) != PSC_OK) {
		snprintf(r->st.last_error, sizeof(r->st.last_error), "%s", psc_err_text(&e));
		log_line("KEK rotation: retiring the old KEK failed (retried in 1 s): %s",
			 psc_err_text(&e));
		r->drained = true;
		r->next_ms = k->now_ms + 1000;
		return;
	}
	log_line("master KEK rotation done: %llu blobs re-wrapped, %u old KEK(s) destroyed, "
		 "current KEK %s",
		 (unsigned long long)r->st.rewrapped, destroyed, r->st.to);
	audit_phase(r, "done", "ok"); /* committed with the next batch */
	r->st.active = false;
	snprintf(r->st.done_to, sizeof(r->st.done_to), "%s", r->st.to);
	r->st.done_ms = k->now_ms;
	r->next_ms = 0;
}

uint64_t kms_kekrot_next_ms(const kms_kekrot *r)
{
	return r && r->st.active ? r->next_ms : 0;
}

void kms_kekrot_status_get(kms_kekrot *r, kms_kekrot_status *out)
{
	*out = r->st;
	psc_err e;
	uint64_t left = 0;
	if (r->st.active && kms_store_count_not_kek(r->k->store, r->k->kek_id, &left, &e) == PSC_OK)
		out->remaining = left;
}
