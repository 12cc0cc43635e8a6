#include "kms_core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <zmq.h>

#include "kms_admin.h"
#include "kms_failpoint.h"
#include "kms_int.h"
#include "proto_cert.h"

#define PIN_MAX 256

uint64_t kmsd_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void logf_(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const char *level, const char *fmt, ...)
{
	char ts[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s psc-kmsd %s: ", ts, level);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
#define LOG_INFO(...) logf_("info", __VA_ARGS__)
#define LOG_WARN(...) logf_("warning", __VA_ARGS__)
#define LOG_ERR(...) logf_("error", __VA_ARGS__)

/* ---- bindings and pending exchanges ------------------------------------ */

kmsd_binding *kmsd_binding_by_node(kmsd *k, const uint8_t node_id[PSC_NODE_ID_LEN])
{
	for (size_t i = 0; i < k->n_bind; i++)
		if (k->bind[i].used && memcmp(k->bind[i].node_id, node_id, PSC_NODE_ID_LEN) == 0)
			return &k->bind[i];
	return NULL;
}

kmsd_binding *kmsd_binding_by_rid(kmsd *k, const uint8_t *rid, size_t rid_len)
{
	for (size_t i = 0; i < k->n_bind; i++)
		if (k->bind[i].used && k->bind[i].rid_len == rid_len &&
		    memcmp(k->bind[i].rid, rid, rid_len) == 0)
			return &k->bind[i];
	return NULL;
}

psc_rc kmsd_bind(kmsd *k, const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *rid,
		 size_t rid_len, const char *user_id)
{
	/* A routing id belongs to one Node-ID: drop whatever it was bound to. */
	kmsd_binding *old = kmsd_binding_by_rid(k, rid, rid_len);
	if (old && memcmp(old->node_id, node_id, PSC_NODE_ID_LEN) != 0)
		old->used = false;
	kmsd_binding *b = kmsd_binding_by_node(k, node_id);
	if (!b) {
		for (size_t i = 0; i < k->n_bind && !b; i++)
			if (!k->bind[i].used)
				b = &k->bind[i];
		if (!b) {
			if (k->n_bind == KMSD_MAX_BINDINGS)
				return PSC_E_TOO_LARGE;
			b = &k->bind[k->n_bind++];
		}
	}
	memcpy(b->node_id, node_id, PSC_NODE_ID_LEN);
	memcpy(b->rid, rid, rid_len);
	b->rid_len = rid_len;
	snprintf(b->user_id, sizeof(b->user_id), "%s", user_id);
	b->used = true;
	return PSC_OK;
}

uint64_t kmsd_txid(kmsd *k)
{
	uint64_t t = 0;
	psc_err e;
	if (hsm_random(k->hs, (uint8_t *)&t, sizeof(t), &e) != PSC_OK)
		t = kmsd_clock_ms() ^ ((uint64_t)rand() << 32) ^ (uint64_t)rand();
	return t ? t : 1;
}

kmsd_pending *kmsd_pending_new(kmsd *k, kmsd_wait wait, uint64_t timeout_ms)
{
	for (size_t i = 0; i < KMSD_MAX_PENDING; i++) {
		kmsd_pending *p = &k->pend[i];
		if (!p->used) {
			memset(p, 0, sizeof(*p));
			p->used = true;
			p->wait = wait;
			p->txid = kmsd_txid(k);
			p->deadline_ms = k->now_ms + timeout_ms;
			return p;
		}
	}
	return NULL;
}

kmsd_pending *kmsd_pending_by_txid(kmsd *k, uint64_t txid)
{
	for (size_t i = 0; i < KMSD_MAX_PENDING; i++)
		if (k->pend[i].used && k->pend[i].txid == txid)
			return &k->pend[i];
	return NULL;
}

void kmsd_pending_drop(kmsd_pending *p)
{
	memset(p, 0, sizeof(*p));
}

/* ---- the durability batch ---------------------------------------------- */

static psc_rc out_push(kmsd *k, const uint8_t *rid, size_t rid_len, uint8_t *msg, size_t len)
{
	if (k->n_out == k->cap_out) {
		size_t cap = k->cap_out ? 2 * k->cap_out : 64;
		kmsd_out *o = realloc(k->out, cap * sizeof(*o));
		if (!o) {
			free(msg);
			return PSC_E_NOMEM;
		}
		k->out = o;
		k->cap_out = cap;
	}
	kmsd_out *o = &k->out[k->n_out++];
	memcpy(o->rid, rid, rid_len);
	o->rid_len = rid_len;
	o->msg = msg;
	o->len = len;
	return PSC_OK;
}

static bool refetch_keys(kmsd *k, bool force);

/* Builds and signs; a failed signature is retried once with the identity key
 * fetched again (the token may have recovered inside this very batch). */
static psc_rc build_signed(kmsd *k, const proto_envelope *env, const uint8_t *b, size_t blen,
			   uint8_t **msg, size_t *mlen, psc_err *e)
{
	psc_rc rc = proto_message_build(env, b, blen, &k->signer, msg, mlen, e);
	if (rc == PSC_OK)
		return rc;
	/* libp11 does not tell us why. Probe the token through our own session: a
	 * dead session marks the HSM down and the next call tries to recover it
	 * (hsm_ctx.h), after which the keys are fetched again. */
	uint8_t probe;
	psc_err pe;
	if (hsm_random(k->hs, &probe, 1, &pe) != PSC_OK)
		(void)!hsm_random(k->hs, &probe, 1, &pe);
	if (refetch_keys(k, true))
		rc = proto_message_build(env, b, blen, &k->signer, msg, mlen, e);
	return rc;
}

psc_rc kmsd_queue_raw(kmsd *k, const uint8_t *rid, size_t rid_len, uint8_t *msg, size_t len)
{
	return out_push(k, rid, rid_len, msg, len);
}

psc_rc kmsd_queue(kmsd *k, const uint8_t *rid, size_t rid_len, uint16_t code, uint64_t txid,
		  const psc_body *body, const uint8_t *dest_node)
{
	uint8_t *b = NULL, *msg = NULL;
	size_t blen = 0, mlen = 0;
	psc_err e;
	psc_rc rc = proto_body_encode(body, &b, &blen, &e);
	if (rc != PSC_OK) {
		LOG_ERR("encoding %s: %s", proto_msg_name(code), psc_err_text(&e));
		return rc;
	}
	proto_envelope env = {.overlay = k->overlay_hash, .transaction_id = txid, .code = code,
			      .dest_node = dest_node};
	rc = build_signed(k, &env, b, blen, &msg, &mlen, &e);
	free(b);
	if (rc != PSC_OK) {
		LOG_ERR("signing %s: %s", proto_msg_name(code), psc_err_text(&e));
		return rc;
	}
	return out_push(k, rid, rid_len, msg, mlen);
}

psc_rc kmsd_queue_error(kmsd *k, const uint8_t *rid, size_t rid_len, uint64_t txid,
			uint16_t error_code, uint16_t reason, const char *text)
{
	proto_error pe = {.error_code = error_code, .psc_reason = reason,
			  .text = (const uint8_t *)text,
			  .text_len = text ? strnlen(text, PROTO_MAX_ERROR_TEXT) : 0};
	uint8_t *b = NULL, *msg = NULL;
	size_t blen = 0, mlen = 0;
	psc_rc rc = proto_error_encode(&pe, &b, &blen);
	if (rc != PSC_OK)
		return rc;
	proto_envelope env = {.overlay = k->overlay_hash, .transaction_id = txid,
			      .code = PSC_MSG_ERROR};
	psc_err e;
	rc = build_signed(k, &env, b, blen, &msg, &mlen, &e);
	free(b);
	if (rc != PSC_OK)
		return rc;
	return out_push(k, rid, rid_len, msg, mlen);
}

psc_rc kmsd_apply(kmsd *k, const kms_cmd *cmd, psc_err *err)
{
	if (!kms_store_in_txn(k->store)) {
		psc_rc rc = kms_store_begin(k->store, err);
		if (rc != PSC_OK)
			return rc;
	}
	k->batch_dirty = true;
	return kms_store_apply(k->store, cmd, err);
}

psc_rc kmsd_mark(kmsd *k, psc_err *err)
{
	if (!kms_store_in_txn(k->store)) {
		psc_rc rc = kms_store_begin(k->store, err);
		if (rc != PSC_OK)
			return rc;
	}
	return kms_store_savepoint(k->store, err);
}

void kmsd_mark_end(kmsd *k, bool keep)
{
	psc_err e;
	if (keep && kms_store_keep(k->store, &e) == PSC_OK)
		return;
	kms_store_undo(k->store);
}

psc_rc kmsd_audit(kmsd *k, const aud_event *ev, psc_err *err)
{
	k->batch_dirty = true;
	return aud_log_append(k->audit, ev, NULL, err);
}

static void batch_drop_outputs(kmsd *k)
{
	for (size_t i = 0; i < k->n_out; i++)
		free(k->out[i].msg);
	k->n_out = 0;
}

/* ---- HSM worker pool: rekey fan-outs (kms_pool.h) ------------------------ */

void kmsd_fanout_stage(kmsd *k, kms_fanout *job)
{
	job->next = k->staged;
	k->staged = job;
}

static bool list_has(const kms_fanout *j, const uint8_t psc_id[PSC_PSC_ID_LEN])
{
	for (; j; j = j->next)
		if (memcmp(j->psc_id, psc_id, PSC_PSC_ID_LEN) == 0)
			return true;
	return false;
}

bool kmsd_fanout_running(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN])
{
	for (size_t i = 0; i < k->n_running; i++)
		if (memcmp(k->running[i], psc_id, PSC_PSC_ID_LEN) == 0)
			return true;
	return list_has(k->staged, psc_id) || list_has(k->retry, psc_id);
}

static void fanout_submit(kmsd *k, kms_fanout *job)
{
	if (k->n_running == k->cap_running) {
		size_t cap = k->cap_running ? 2 * k->cap_running : 16;
		void *a = realloc(k->running, cap * sizeof(*k->running));
		if (!a) {
			/* Members catch up at their next Initialize / Catchup. */
			LOG_ERR("fan-out of an epoch: out of memory; members will catch up");
			kms_fanout_free(&job);
			return;
		}
		k->running = a;
		k->cap_running = cap;
	}
	memcpy(k->running[k->n_running++], job->psc_id, PSC_PSC_ID_LEN);
	kms_pool_submit(k->pool, job);
}

static void fanout_forget(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN])
{
	for (size_t i = 0; i < k->n_running; i++)
		if (memcmp(k->running[i], psc_id, PSC_PSC_ID_LEN) == 0) {
			memmove(k->running[i], k->running[k->n_running - 1], PSC_PSC_ID_LEN);
			k->n_running--;
			return;
		}
}

static void fanout_list_free(kms_fanout **head)
{
	while (*head) {
		kms_fanout *j = *head;
		*head = j->next;
		kms_fanout_free(&j);
	}
}

/* Still the PSC's current epoch? A fan-out overtaken by a later rekey (or a
 * destroy) is dropped: its members get the newer one. Epoch numbers are never
 * reused (a job is submitted only once its epoch is durable), so the number
 * decides; the stored blob is taken over, because a master-KEK rotation may
 * have re-wrapped it (same secret) and retired the KEK of the job's copy. */
static bool fanout_current(kmsd *k, kms_fanout *j)
{
	kms_epoch ep;
	psc_err e;
	if (kms_store_epoch_current(k->store, j->psc_id, &ep, &e) != PSC_OK ||
	    ep.epoch != j->epoch)
		return false;
	if (ep.wrapped_len == sizeof(j->blob))
		memcpy(j->blob, ep.wrapped, sizeof(j->blob));
	return true;
}

/* A finished fan-out: its Refreshes join the open batch (the epoch they carry
 * is already durable) and go to each member's current connection. */
static void fanout_done(kmsd *k, kms_fanout *j)
{
	fanout_forget(k, j->psc_id);
	char psc[33];
	proto_id_hex(j->psc_id, psc);
	if (!fanout_current(k, j)) {
		kms_fanout_free(&j);
		return;
	}
	if (j->rc != PSC_OK) {
		/* HSM down or busy, or a key handle gone stale: try again while this
		 * epoch is current, with the identity key as fetched then. */
		(void)refetch_keys(k, true);
		uint64_t backoff = 250ull << (j->attempts < 7 ? j->attempts : 7);
		j->attempts++;
		j->retry_at_ms = k->now_ms + backoff;
		LOG_WARN("Refreshes of PSC %s epoch %llu to %zu members failed (%s); retrying in "
			 "%llu ms", psc, (unsigned long long)j->epoch, j->n_dest,
			 psc_err_text(&j->err), (unsigned long long)backoff);
		j->next = k->retry;
		k->retry = j;
		return;
	}
	size_t sent = 0;
	for (size_t i = 0; i < j->n_dest; i++) {
		kmsd_binding *b = kmsd_binding_by_node(k, j->dest[i].node_id);
		if (!b || !j->dest[i].msg)
			continue; /* gone meanwhile: it catches up (PscCatchup) */
		if (kmsd_queue_raw(k, b->rid, b->rid_len, j->dest[i].msg, j->dest[i].len) == PSC_OK)
			sent++;
		j->dest[i].msg = NULL; /* the batch owns it now (freed even on failure) */
	}
	if (j->attempts)
		LOG_INFO("Refreshes of PSC %s epoch %llu sent after %u retries", psc,
			 (unsigned long long)j->epoch, j->attempts);
	if (j->run_us + j->wait_us > 250000) /* worth an operator's attention */
		LOG_INFO("Refreshes of PSC %s epoch %llu to %zu members: %.0f ms queued, %.0f ms "
			 "in the HSM worker", psc, (unsigned long long)j->epoch, sent,
			 (double)j->wait_us / 1e3, (double)j->run_us / 1e3);
	kms_fanout_free(&j);
}

static void fanout_poll(kmsd *k)
{
	kms_fanout *j;
	while ((j = kms_pool_take(k->pool)) != NULL)
		fanout_done(k, j);
	for (kms_fanout **pp = &k->retry; *pp;) {
		j = *pp;
		if (j->retry_at_ms > k->now_ms) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		if (!fanout_current(k, j)) {
			kms_fanout_free(&j);
			continue;
		}
		j->timestamp_ms = k->now_ms; /* a fresh Refresh, not a stale one */
		EVP_PKEY_free(j->signer.key);
		j->signer = k->signer;
		EVP_PKEY_up_ref(j->signer.key);
		fanout_submit(k, j);
	}
}

static uint64_t fanout_next_retry(const kmsd *k)
{
	uint64_t next = 0;
	for (const kms_fanout *j = k->retry; j; j = j->next)
		if (!next || j->retry_at_ms < next)
			next = j->retry_at_ms;
	return next;
}

/* DESIGN.md §5: (1) audit records written + fdatasync, (2) SQLite commit
 * recording the last audit seq, (3) sends. A failure at (1) or (2) sends
 * nothing: the requesters time out and retry, and nothing was acknowledged. */
static void batch_end(kmsd *k)
{
	psc_err e;
	uint64_t seq = aud_log_last_seq(k->audit);
	bool audited = false;
	if (k->batch_dirty) {
		psc_rc rc = aud_log_commit(k->audit, &seq, &e);
		if (rc != PSC_OK) {
			LOG_ERR("audit log: %s: refusing key events until it recovers",
				psc_err_text(&e));
			if (kms_store_in_txn(k->store))
				kms_store_rollback(k->store);
			batch_drop_outputs(k);
			fanout_list_free(&k->staged);
			k->batch_dirty = false;
			return;
		}
		audited = true;
		KMS_FAILPOINT(KMS_FP_AFTER_AUDIT_SYNC);
		/* Records with no state change (kms.start/stop, answered denials) still
		 * advance the state's last seq: otherwise restart reconciliation would
		 * mark them `aborted`, i.e. claim they never happened. */
		if (!kms_store_in_txn(k->store) && kms_store_begin(k->store, &e) != PSC_OK)
			LOG_ERR("state store: %s: these audit records will be marked aborted "
				"at the next start", psc_err_text(&e));
	}
	if (kms_store_in_txn(k->store)) {
		psc_rc rc = kms_store_commit(k->store, seq, &e);
		if (rc != PSC_OK) {
			LOG_ERR("state store commit failed: %s", psc_err_text(&e));
			kms_store_rollback(k->store);
			batch_drop_outputs(k);
			fanout_list_free(&k->staged);
			/* The records just synced describe changes that did not happen. */
			uint64_t first = kms_store_last_audit_seq(k->store) + 1;
			if (audited && first <= seq &&
			    aud_log_append_aborted(k->audit, first, seq, NULL, NULL, &e) == PSC_OK)
				(void)!aud_log_commit(k->audit, NULL, &e);
			k->batch_dirty = false;
			return;
		}
		KMS_FAILPOINT(KMS_FP_AFTER_STATE_COMMIT);
	}
	k->batch_dirty = false;
	/* The epochs are durable: their Refreshes may be made now (in order). */
	kms_fanout *staged = NULL;
	while (k->staged) {
		kms_fanout *j = k->staged;
		k->staged = j->next;
		j->next = staged;
		staged = j;
	}
	while (staged) {
		kms_fanout *j = staged;
		staged = j->next;
		fanout_submit(k, j);
	}
	for (size_t i = 0; i < k->n_out; i++) {
		(void)!kms_net_send(k->net, k->out[i].rid, k->out[i].rid_len, k->out[i].msg,
				    k->out[i].len);
		if (i == 0 && k->n_out > 1)
			KMS_FAILPOINT(KMS_FP_MID_SEND);
	}
	batch_drop_outputs(k);
}

/* ---- startup ------------------------------------------------------------ */

static psc_rc load_identity(kmsd *k, psc_err *err)
{
	FILE *f = fopen(k->cfg->identity.certificate, "r");
	if (!f)
		return psc_err_set(err, PSC_E_BAD_CERT, "KMS certificate %s: %s: install the "
				   "certificate issued for the CSR of psc-kmsctl init",
				   k->cfg->identity.certificate, strerror(errno));
	k->cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!k->cert)
		return psc_err_set(err, PSC_E_BAD_CERT, "KMS certificate %s is not a PEM "
				   "certificate", k->cfg->identity.certificate);
	int len = i2d_X509(k->cert, &k->cert_der);
	if (len <= 0)
		return psc_err_set(err, PSC_E_BAD_CERT, "KMS certificate cannot be encoded");
	k->cert_len = (size_t)len;
	psc_rc rc = proto_cert_node_id(k->cert, k->cfg->overlay, k->node_id, err);
	if (rc != PSC_OK)
		return rc;
	if (EVP_PKEY_eq(X509_get0_pubkey(k->cert), k->id_key) == 0)
		return psc_err_set(err, PSC_E_BAD_CERT, "KMS certificate %s does not match the "
				   "identity key on the token: install the certificate issued "
				   "for this token's CSR", k->cfg->identity.certificate);
	k->signer = (proto_signer){.key = k->id_key, .cert_der = k->cert_der,
				   .cert_len = k->cert_len, .omit_certificates = 1};
	return PSC_OK;
}

static psc_rc open_hsm(kmsd *k, psc_err *err)
{
	uint8_t pin[PIN_MAX + 1];
	size_t pin_len = 0;
	psc_rc rc = kms_secret_read(k->cfg->hsm.pin_file, pin, PIN_MAX, &pin_len, err);
	if (rc != PSC_OK)
		return rc;
	pin[pin_len] = '\0';
	hsm_config hc = {.module_path = k->cfg->hsm.module,
			 .token_label = k->cfg->hsm.token_label,
			 .pin = (const char *)pin,
			 .sessions = k->cfg->hsm.workers + 1}; /* + the loop's own */
	rc = hsm_ctx_new(&k->hsm, &hc, err);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (rc != PSC_OK)
		return rc;
	if ((rc = hsm_session_get(k->hsm, 0, &k->hs, err)) != PSC_OK ||
	    (rc = hsm_identity_key(k->hsm, &k->id_key, err)) != PSC_OK ||
	    (rc = hsm_audit_key(k->hsm, &k->audit_key, err)) != PSC_OK)
		return rc;
	uint8_t kek[HSM_KEK_ID_LEN];
	hsm_kek_id(k->hsm, kek);
	for (size_t i = 0; i < HSM_KEK_ID_LEN; i++)
		snprintf(k->kek_id + 2 * i, 3, "%02x", kek[i]);
	return PSC_OK;
}

static psc_rc open_sockets(kmsd *k, psc_err *err)
{
	char secret[128] = "";
	if (k->cfg->curve.enabled) {
		size_t len = 0;
		psc_rc rc = kms_secret_read(k->cfg->curve.secret_key_file, (uint8_t *)secret,
					    sizeof(secret) - 1, &len, err);
		if (rc != PSC_OK)
			return rc;
		secret[len] = '\0';
		if (len != KMS_Z85_KEY_LEN) {
			OPENSSL_cleanse(secret, sizeof(secret));
			return psc_err_set(err, PSC_E_INVALID_ARG, "CURVE secret key file %s holds %zu "
					   "characters, not a 40-character Z85 key: regenerate it "
					   "with psc-kmsd --gen-curve-keys",
					   k->cfg->curve.secret_key_file, len);
		}
	}
	k->zctx = zmq_ctx_new();
	if (!k->zctx)
		return psc_err_set(err, PSC_E_NOMEM, "cannot create a ZeroMQ context");
	kms_net_opts o = {.endpoint = k->cfg->listen,
			  .curve = k->cfg->curve.enabled,
			  .secret_key_z85 = secret,
			  .max_message_bytes = k->cfg->limits.max_message_bytes,
			  .sndhwm = (int)k->cfg->limits.sndhwm,
			  .rcvhwm = (int)k->cfg->limits.rcvhwm,
			  .msgs_per_s = k->cfg->limits.per_connection_msgs_per_s,
			  .burst = k->cfg->limits.per_connection_burst};
	psc_rc rc = kms_net_new(&k->net, k->zctx, &o, err);
	OPENSSL_cleanse(secret, sizeof(secret));
	return rc;
}

static void audit_system(kmsd *k, aud_event_type type, const char *result)
{
	aud_event ev = {.type = type, .result = result};
	psc_err e;
	if (kmsd_audit(k, &ev, &e) != PSC_OK)
		LOG_ERR("audit: %s", psc_err_text(&e));
}

/* DESIGN.md §5: records beyond the state's last seq belong to batches whose
 * state commit never happened; say so in the log before anything else. */
static psc_rc reconcile(kmsd *k, psc_err *err)
{
	uint64_t state_seq = kms_store_last_audit_seq(k->store);
	uint64_t audit_seq = aud_log_last_seq(k->audit);
	if (audit_seq > state_seq) {
		LOG_WARN("audit records %llu..%llu were never committed to the state store: "
			 "recording them as aborted", (unsigned long long)state_seq + 1,
			 (unsigned long long)audit_seq);
		uint64_t seq = audit_seq;
		psc_rc rc = aud_log_append_aborted(k->audit, state_seq + 1, audit_seq, NULL, NULL, err);
		if (rc == PSC_OK)
			rc = aud_log_commit(k->audit, &seq, err);
		/* The state now covers the `aborted` record too: a kill right after this
		 * must not have the next start call that record aborted. */
		if (rc == PSC_OK && (rc = kms_store_begin(k->store, err)) == PSC_OK)
			rc = kms_store_commit(k->store, seq, err);
		return rc;
	}
	if (audit_seq < state_seq)
		return psc_err_set(err, PSC_E_AUDIT, "the state store covers audit records up to "
				   "%llu but the audit log ends at %llu: the audit log was "
				   "truncated or replaced; restore it before starting "
				   "(psc-audit verify %s)", (unsigned long long)state_seq,
				   (unsigned long long)audit_seq, k->cfg->audit.dir);
	return PSC_OK;
}

psc_rc kmsd_open(kmsd **out, kms_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload, psc_err *err)
{
	*out = NULL;
	kmsd *k = calloc(1, sizeof(*k));
	if (!k)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	k->cfg = cfg;
	k->stop = stop;
	k->reload = reload;
	k->started_ms = kmsd_clock_ms();
	k->now_ms = k->started_ms;
	k->overlay_hash = proto_overlay_hash(cfg->overlay);
	/* Zeroed pages are only touched as bindings are used. */
	k->bind = calloc(KMSD_MAX_BINDINGS, sizeof(*k->bind));
	k->pend = calloc(KMSD_MAX_PENDING, sizeof(*k->pend));
	psc_rc rc = PSC_E_NOMEM;
	if (!k->bind || !k->pend)
		goto fail;
	if ((rc = open_hsm(k, err)) != PSC_OK || (rc = load_identity(k, err)) != PSC_OK)
		goto fail;
	if ((rc = kms_trust_new(&k->trust, cfg->trust.ca_file,
				cfg->trust.crl_file[0] ? cfg->trust.crl_file : NULL, err)) != PSC_OK)
		goto fail;
	pol_load_opts po = {0};
	if ((rc = pol_policy_load_file(&k->pol, cfg->policy_file, &po, err)) != PSC_OK ||
	    (rc = pol_state_new(&k->pol_state, 65536)) != PSC_OK)
		goto fail;
	aud_log_opts ao = {.dir = cfg->audit.dir, .kms_id = cfg->kms_id, .sign_key = k->audit_key,
			   .checkpoint_every = cfg->audit.checkpoint_every,
			   .checkpoint_secs = cfg->audit.checkpoint_interval_s,
			   .segment_max_bytes = cfg->audit.segment_bytes};
	if ((rc = aud_log_open(&k->audit, &ao, err)) != PSC_OK ||
	    (rc = kms_store_open(&k->store, cfg->state_db, err)) != PSC_OK ||
	    (rc = reconcile(k, err)) != PSC_OK)
		goto fail;
	uint64_t window = (uint64_t)cfg->timers.freshness_window_s * 1000;
	if ((rc = kms_replay_new(&k->replay, 1 << 18, 2 * window)) != PSC_OK)
		goto fail;
	if ((rc = open_sockets(k, err)) != PSC_OK ||
	    (rc = kms_admin_open(&k->admin, k, err)) != PSC_OK)
		goto fail;
	unsigned sessions = hsm_ctx_sessions(k->hsm);
	if (sessions < 2) {
		rc = psc_err_set(err, PSC_E_HSM_P11, "token '%s' allows only %u session(s) for "
				 "psc-kmsd: it needs one for its event loop and one per HSM worker "
				 "(hsm.workers)", cfg->hsm.token_label, sessions);
		goto fail;
	}
	unsigned workers = cfg->hsm.workers < sessions - 1 ? cfg->hsm.workers : sessions - 1;
	if (workers < cfg->hsm.workers)
		LOG_WARN("the token allows %u sessions: running %u HSM workers instead of %u",
			 sessions, workers, (unsigned)cfg->hsm.workers);
	if ((rc = kms_pool_new(&k->pool, k->zctx, k->hsm, workers, err)) != PSC_OK)
		goto fail;
	audit_system(k, AUD_EV_KMS_START, "ok");
	kms_admin_start(k->admin); /* rekeys after a restore, before any peer is served */
	batch_end(k);
	k->started = true;
	char nid[33];
	proto_id_hex(k->node_id, nid);
	LOG_INFO("listening on %s (%s), KMS node %s, token '%s', policy %.12s, audit seq %llu",
		 cfg->listen, cfg->curve.enabled ? "CURVE" : "no CURVE", nid, cfg->hsm.token_label,
		 pol_policy_revision(k->pol), (unsigned long long)aud_log_last_seq(k->audit));
	*out = k;
	return PSC_OK;
fail:
	kmsd_close(&k);
	return rc;
}

static void reload_policy(kmsd *k)
{
	psc_err e;
	pol_load_opts po = {0};
	const char *before = pol_policy_revision(k->pol);
	char old_rev[80];
	snprintf(old_rev, sizeof(old_rev), "%s", before);
	psc_rc rc = pol_policy_reload(&k->pol, k->cfg->policy_file, &po, &e);
	aud_decision d = {.outcome = rc == PSC_OK ? "reloaded" : "rejected",
			  .policy_rev = pol_policy_revision(k->pol)};
	aud_kv kv[1] = {{.key = "previous_revision", .str = old_rev}};
	aud_event ev = {.type = AUD_EV_POLICY_RELOAD, .decision = &d,
			.result = rc == PSC_OK ? "ok" : psc_err_text(&e), .detail = kv, .n_detail = 1};
	if (kmsd_audit(k, &ev, &e) != PSC_OK)
		LOG_ERR("audit: %s", psc_err_text(&e));
	if (rc == PSC_OK)
		LOG_INFO("policy reloaded: revision %.12s", pol_policy_revision(k->pol));
	else
		LOG_ERR("policy reload rejected, previous policy stays active: %s", psc_err_text(&e));
}

/* After the token recovered from a fault its objects may have new handles:
 * libp11's EVP_PKEYs fetched before can fail to sign (docs/hsm.md). `force`:
 * a signature just failed although the HSM looks healthy. */
static bool refetch_keys(kmsd *k, bool force)
{
	if (!hsm_healthy(k->hsm)) {
		k->hsm_was_down = true;
		return false;
	}
	if (!k->hsm_was_down && !force)
		return false;
	EVP_PKEY *id = NULL, *au = NULL;
	psc_err e;
	if (hsm_identity_key(k->hsm, &id, &e) != PSC_OK ||
	    hsm_audit_key(k->hsm, &au, &e) != PSC_OK) {
		EVP_PKEY_free(id);
		LOG_WARN("HSM back, but its keys cannot be fetched yet: %s", psc_err_text(&e));
		return false;
	}
	/* Fan-outs in flight hold their own reference to the old key. */
	EVP_PKEY_free(k->id_key);
	k->id_key = id;
	k->signer.key = id;
	aud_log_set_sign_key(k->audit, au);
	EVP_PKEY_free(k->audit_key);
	k->audit_key = au;
	if (k->hsm_was_down)
		LOG_INFO("HSM healthy again: identity and audit keys fetched again");
	k->hsm_was_down = false;
	return true;
}

/* SIGTERM: the Refreshes being made are finished and sent (bounded wait). */
static void fanout_drain(kmsd *k)
{
	uint64_t until = kmsd_clock_ms() + 5000;
	while (k->pool && kms_pool_busy(k->pool) && kmsd_clock_ms() < until) {
		zmq_pollitem_t it = {kms_pool_socket(k->pool), 0, ZMQ_POLLIN, 0};
		(void)zmq_poll(&it, 1, 100);
		k->now_ms = kmsd_clock_ms();
		kms_fanout *j;
		while ((j = kms_pool_take(k->pool)) != NULL)
			fanout_done(k, j);
		batch_end(k);
	}
	if (k->pool && kms_pool_busy(k->pool))
		LOG_WARN("stopping with %zu rekey fan-outs unfinished: their members catch up "
			 "at their next connection", kms_pool_busy(k->pool));
}

psc_rc kmsd_run(kmsd *k, psc_err *err)
{
	while (!*k->stop) {
		k->now_ms = kmsd_clock_ms();
		uint64_t next = kmsd_next_deadline(k);
		uint64_t retry = fanout_next_retry(k);
		if (retry && (!next || retry < next))
			next = retry;
		uint64_t admin_next = kms_admin_next_ms(k->admin); /* restore rekeys, KEK rotation */
		if (admin_next && (!next || admin_next < next))
			next = admin_next;
		long timeout = 1000;
		if (next && next <= k->now_ms)
			timeout = 0;
		else if (next && next - k->now_ms < 1000)
			timeout = (long)(next - k->now_ms);
		bool paused = kms_pool_busy(k->pool) >= KMSD_POOL_BACKLOG;
		zmq_pollitem_t items[] = {{kms_net_zap(k->net), 0, ZMQ_POLLIN, 0},
					  {kms_net_router(k->net), 0, paused ? 0 : ZMQ_POLLIN, 0},
					  {kms_admin_socket(k->admin), 0, ZMQ_POLLIN, 0},
					  {kms_pool_socket(k->pool), 0, ZMQ_POLLIN, 0}};
		if (zmq_poll(items, 4, timeout) < 0 && zmq_errno() != EINTR)
			return psc_err_set(err, PSC_E_IO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
		if (items[0].revents & ZMQ_POLLIN)
			kms_net_zap_serve(k->net);
		k->now_ms = kmsd_clock_ms();
		if (*k->reload) {
			*k->reload = 0;
			reload_policy(k);
		}
		(void)refetch_keys(k, false);
		fanout_poll(k);
		paused = kms_pool_busy(k->pool) >= KMSD_POOL_BACKLOG;
		for (int i = 0; !paused && i < KMSD_BATCH_MAX; i++) {
			kms_inbound in;
			int got = 0;
			if (kms_net_recv(k->net, &in, &got, k->now_ms) != PSC_OK || !got)
				break;
			kmsd_handle(k, &in);
		}
		if (items[2].revents & ZMQ_POLLIN)
			kms_admin_serve(k->admin);
		kmsd_timers(k);
		kms_admin_tick(k->admin);
		batch_end(k);
		kms_admin_after_batch(k->admin); /* replies once the batch is durable */
		psc_err e;
		if (aud_log_tick(k->audit, &e) != PSC_OK)
			LOG_ERR("audit checkpoint: %s", psc_err_text(&e));
		/* Fail-closed until the log can write again: retry once a second. */
		if (aud_log_failed(k->audit) && k->now_ms >= k->audit_retry_ms) {
			k->audit_retry_ms = k->now_ms + 1000;
			if (aud_log_recover(k->audit, &e) == PSC_OK)
				LOG_INFO("audit log recovered: key events are accepted again");
		}
	}
	return PSC_OK;
}

void kmsd_close(kmsd **p)
{
	if (!p || !*p)
		return;
	kmsd *k = *p;
	psc_err e;
	if (k->started) {
		batch_end(k);
		fanout_drain(k);
		audit_system(k, AUD_EV_KMS_STOP, "ok");
		batch_end(k);
	}
	kms_pool_free(&k->pool); /* before the HSM sessions and sockets it uses */
	fanout_list_free(&k->staged);
	fanout_list_free(&k->retry);
	free(k->running);
	if (k->audit && aud_log_close(&k->audit, &e) != PSC_OK)
		LOG_ERR("audit log close: %s", psc_err_text(&e));
	aud_log_free(&k->audit);
	batch_drop_outputs(k);
	free(k->out);
	kms_admin_close(&k->admin);
	kms_net_free(&k->net);
	if (k->zctx)
		zmq_ctx_term(k->zctx);
	kms_store_close(&k->store);
	kmsd_flows_free(k);
	kms_replay_free(&k->replay);
	pol_state_free(&k->pol_state);
	pol_policy_free(&k->pol);
	kms_trust_free(&k->trust);
	X509_free(k->cert);
	OPENSSL_free(k->cert_der);
	EVP_PKEY_free(k->id_key);
	EVP_PKEY_free(k->audit_key);
	hsm_ctx_free(&k->hsm);
	free(k->bind);
	free(k->pend);
	free(k);
	*p = NULL;
}
