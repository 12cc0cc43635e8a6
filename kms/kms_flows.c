/*
 * kms_flows — one handler per PSC message (docs/protocol.md §7, §10).
 *
 * Every inbound message goes through the same gate: decode, overlay, signer
 * certificate (carried at Initialize, stored afterwards), transport key of the
 * connection, signature, freshness, replay. Then policy decides, the HSM
 * generates and wraps, commands change the state and records go to the audit
 * log, all inside the loop's open batch; answers are queued and leave only once
 * the batch is durable (kms_core.c). A rekey's Refreshes to the other members
 * are made by the HSM workers after that (kms_pool.h) and sent in a later batch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "kms_int.h"
#include "proto_cert.h"
#include "proto_keywrap.h"

#define TIMER_REKEYS_PER_TURN 16

typedef struct req {
	kmsd *k;
	const kms_inbound *in;
	proto_message m;
	psc_body b;
	uint8_t node[PSC_NODE_ID_LEN];
	X509 *cert;      /* the requester's certificate (owned) */
	kms_peer *peer;  /* stored row, NULL at Initialize (owned) */
	uint8_t cert_sha256[PSC_HASH_LEN];
	char subject[512], issuer[512], cn[128], ou[128], o[128];
	char request_id[40];
	pol_peer pp;
	aud_actor actor;
} req;

/* ---- small helpers ----------------------------------------------------- */

static void name_field(X509_NAME *n, int nid, char *out, size_t cap)
{
	out[0] = '\0';
	int idx = X509_NAME_get_index_by_NID(n, nid, -1);
	if (idx < 0)
		return;
	ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
	unsigned char *utf8 = NULL;
	int len = ASN1_STRING_to_UTF8(&utf8, s);
	if (len > 0) {
		snprintf(out, cap, "%.*s", len, (const char *)utf8);
		OPENSSL_free(utf8);
	}
}

/* RFC 2253 one-line form ("CN=peer1,OU=peers,O=PSC Test"), as policies match it. */
static void rfc2253(X509_NAME *n, char *out, size_t cap)
{
	out[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	if (X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) >= 0) {
		int len = BIO_read(b, out, (int)cap - 1);
		out[len > 0 ? len : 0] = '\0';
	}
	BIO_free(b);
}

/* Policy and audit attributes of a certificate. */
static void describe_cert(X509 *x, const uint8_t node[PSC_NODE_ID_LEN], pol_peer *pp,
			  char *subject, size_t scap, char *issuer, size_t icap, char *cn, char *ou,
			  char *o, uint8_t sha[PSC_HASH_LEN])
{
	rfc2253(X509_get_subject_name(x), subject, scap);
	rfc2253(X509_get_issuer_name(x), issuer, icap);
	name_field(X509_get_subject_name(x), NID_commonName, cn, 128);
	name_field(X509_get_subject_name(x), NID_organizationalUnitName, ou, 128);
	name_field(X509_get_subject_name(x), NID_organizationName, o, 128);
	if (proto_cert_fingerprint(x, sha) != PSC_OK)
		memset(sha, 0, PSC_HASH_LEN);
	memset(pp, 0, sizeof(*pp));
	pp->subject_cn = cn;
	pp->subject_ou = ou;
	pp->subject_o = o;
	pp->issuer = issuer;
	memcpy(pp->node_id, node, PSC_NODE_ID_LEN);
	pp->has_fingerprint = true;
	memcpy(pp->fingerprint, sha, PSC_HASH_LEN);
}

static void req_free(req *r)
{
	X509_free(r->cert);
	free(r->peer);
	r->cert = NULL;
	r->peer = NULL;
}

static const char *decision_rule(const pol_decision *d)
{
	return d->n_rules ? d->rules[0] : NULL;
}

/* Queue an ErrorResponse to the requester and audit the refusal. */
static void refuse(req *r, aud_event_type ev_type, const uint8_t *psc_id, uint16_t rerr,
		   uint16_t reason, const pol_decision *d, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
static void refuse(req *r, aud_event_type ev_type, const uint8_t *psc_id, uint16_t rerr,
		   uint16_t reason, const pol_decision *d, const char *fmt, ...)
{
	char text[PROTO_MAX_ERROR_TEXT];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	kmsd *k = r->k;
	(void)!kmsd_queue_error(k, r->in->routing_id, r->in->routing_id_len, r->m.transaction_id,
				rerr, reason, text);
	if (aud_log_failed(k->audit))
		return;
	char result[PROTO_MAX_ERROR_TEXT + 16];
	snprintf(result, sizeof(result), "denied: %s", text);
	aud_decision ad = {0};
	if (d) {
		ad.outcome = pol_outcome_name(d->outcome);
		ad.rule = decision_rule(d);
		ad.policy_rev = d->revision;
	}
	aud_kv kv[1] = {{.key = "message", .str = proto_msg_name(r->m.code)}};
	aud_event ev = {.type = ev_type, .request_id = r->request_id,
			.actor = r->actor.node_id ? &r->actor : NULL, .psc_id = psc_id,
			.decision = d ? &ad : NULL, .result = result, .detail = kv, .n_detail = 1};
	psc_err e;
	(void)!kmsd_audit(k, &ev, &e);
}

static void reply(req *r, const psc_body *body)
{
	(void)!kmsd_queue(r->k, r->in->routing_id, r->in->routing_id_len, (uint16_t)(r->m.code + 1),
			  r->m.transaction_id, body, NULL);
}

static void reply_origin(kmsd *k, const kmsd_origin *o, const psc_body *body)
{
	(void)!kmsd_queue(k, o->rid, o->rid_len, (uint16_t)(o->code + 1), o->txid, body, NULL);
}

static void error_origin(kmsd *k, const kmsd_origin *o, uint16_t rerr, uint16_t reason,
			 const char *text)
{
	(void)!kmsd_queue_error(k, o->rid, o->rid_len, o->txid, rerr, reason, text);
}

static void audit_ok(kmsd *k, aud_event_type type, const char *request_id, const aud_actor *actor,
		     const uint8_t *psc_id, bool has_epoch, uint64_t epoch, const pol_decision *d,
		     const aud_kv *kv, size_t n_kv)
{
	aud_decision ad = {0};
	if (d) {
		ad.outcome = pol_outcome_name(d->outcome);
		ad.rule = decision_rule(d);
		ad.policy_rev = d->revision;
	}
	aud_event ev = {.type = type, .request_id = request_id, .actor = actor, .psc_id = psc_id,
			.has_epoch = has_epoch, .epoch = epoch, .key_id = has_epoch ? k->kek_id : NULL,
			.decision = d ? &ad : NULL, .result = "ok", .detail = kv, .n_detail = n_kv};
	psc_err e;
	(void)!kmsd_audit(k, &ev, &e);
}

/* A permitted operation that could not be carried out (HSM down, store error). */
static void audit_failed(kmsd *k, aud_event_type type, const char *request_id,
			 const aud_actor *actor, const uint8_t *psc_id, const pol_decision *d,
			 const char *why)
{
	aud_decision ad = {0};
	if (d) {
		ad.outcome = pol_outcome_name(d->outcome);
		ad.rule = decision_rule(d);
		ad.policy_rev = d->revision;
	}
	char result[PROTO_MAX_ERROR_TEXT + 16];
	snprintf(result, sizeof(result), "error: %s", why);
	aud_event ev = {.type = type, .request_id = request_id, .actor = actor, .psc_id = psc_id,
			.decision = d ? &ad : NULL, .result = result};
	psc_err e;
	(void)!kmsd_audit(k, &ev, &e);
}

static uint16_t hsm_error_reason(psc_rc rc)
{
	return rc == PSC_E_HSM_DOWN ? PSC_REASON_HSM_UNAVAILABLE : PSC_REASON_INTERNAL;
}

/* ---- PSC views ----------------------------------------------------------- */

typedef struct psc_view {
	kms_psc psc;
	pol_label labels[KMS_LABELS_MAX];
	pol_psc pp;
} psc_view;

static void view_of(psc_view *v)
{
	for (size_t i = 0; i < v->psc.n_labels; i++) {
		v->labels[i].key = v->psc.labels[i].key;
		v->labels[i].value = v->psc.labels[i].value;
	}
	v->pp = (pol_psc){.name = v->psc.name, .labels = v->labels, .n_labels = v->psc.n_labels,
			  .member_count = v->psc.n_members};
	memcpy(v->pp.owner_node_id, v->psc.owner, PSC_NODE_ID_LEN);
}

static psc_rc load_psc(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN], psc_view *v)
{
	psc_err e;
	psc_rc rc = kms_store_psc_get(k->store, psc_id, &v->psc, &e);
	if (rc == PSC_OK && v->psc.destroyed)
		rc = PSC_E_KMS_UNKNOWN_PSC;
	if (rc == PSC_OK)
		view_of(v);
	return rc;
}

static bool is_member(kmsd *k, const uint8_t psc_id[16], const uint8_t node[16])
{
	kms_member m;
	psc_err e;
	return kms_store_member_get(k->store, psc_id, node, &m, &e) == PSC_OK;
}

/* ---- wrapping epoch secrets ---------------------------------------------- */

/* Members of a PSC as the wire lists them, plus what wrapping needs. */
typedef struct member_set {
	size_t n, cap;
	proto_member *items;
	char (*endpoints)[KMS_ENDPOINT_MAX + 1];
	kms_peer **peers; /* NULL where the member never initialised */
} member_set;

static int collect_member(void *arg, const kms_member *m)
{
	member_set *s = arg;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		void *a = realloc(s->items, cap * sizeof(*s->items));
		if (!a)
			return 1;
		s->items = a;
		a = realloc(s->endpoints, cap * sizeof(*s->endpoints));
		if (!a)
			return 1;
		s->endpoints = a;
		a = realloc(s->peers, cap * sizeof(*s->peers));
		if (!a)
			return 1;
		s->peers = a;
		s->cap = cap;
	}
	memset(&s->items[s->n], 0, sizeof(s->items[s->n]));
	memcpy(s->items[s->n].node_id, m->node_id, PSC_NODE_ID_LEN);
	s->endpoints[s->n][0] = '\0';
	s->peers[s->n] = NULL;
	s->n++;
	return 0;
}

static void member_set_free(member_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->peers[i]);
	free(s->items);
	free(s->endpoints);
	free(s->peers);
	memset(s, 0, sizeof(*s));
}

static psc_rc member_set_load(kmsd *k, const uint8_t psc_id[16], member_set *s)
{
	memset(s, 0, sizeof(*s));
	psc_err e;
	psc_rc rc = kms_store_members(k->store, psc_id, collect_member, s, &e);
	if (rc != PSC_OK)
		return rc;
	for (size_t i = 0; i < s->n; i++) {
		kms_peer *p = malloc(sizeof(*p));
		if (!p)
			return PSC_E_NOMEM;
		if (kms_store_peer_get(k->store, s->items[i].node_id, p, &e) != PSC_OK) {
			free(p);
			continue; /* named at establish, never initialised: no key yet */
		}
		s->peers[i] = p;
		snprintf(s->endpoints[i], sizeof(s->endpoints[i]), "%s", p->endpoint);
		s->items[i].endpoint = (proto_bytes){(const uint8_t *)s->endpoints[i],
						     strlen(s->endpoints[i])};
	}
	return PSC_OK;
}


/* The member's public key from the cache, parsing its certificate on a miss.
 * Borrowed: valid until the next call (an eviction may free it). */
static psc_rc peer_pubkey(kmsd *k, const kms_peer *p, EVP_PKEY **out, psc_err *err)
{
	*out = NULL;
	if (!k->pubkeys) {
		k->pubkeys = calloc(KMSD_PUBKEY_SLOTS, sizeof(*k->pubkeys));
		if (!k->pubkeys)
			return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	}
	size_t h = 0;
	for (int i = 0; i < PSC_NODE_ID_LEN; i++)
		h = h * 131 + p->node_id[i];
	kmsd_pubkey *slot = &k->pubkeys[h & (KMSD_PUBKEY_SLOTS - 1)];
	if (slot->pub && memcmp(slot->node_id, p->node_id, PSC_NODE_ID_LEN) == 0 &&
	    memcmp(slot->cert_sha256, p->cert_sha256, PSC_HASH_LEN) == 0) {
		*out = slot->pub;
		return PSC_OK;
	}
	X509 *x = NULL;
	psc_rc rc = proto_cert_parse(p->cert_der, p->cert_der_len, &x, err);
	if (rc != PSC_OK)
		return rc;
	EVP_PKEY *pub = X509_get_pubkey(x); /* a reference of our own */
	X509_free(x);
	if (!pub)
		return psc_err_set(err, PSC_E_BAD_CERT, "certificate without a usable public key");
	EVP_PKEY_free(slot->pub); /* direct-mapped: a collision replaces the older entry */
	memcpy(slot->node_id, p->node_id, PSC_NODE_ID_LEN);
	memcpy(slot->cert_sha256, p->cert_sha256, PSC_HASH_LEN);
	slot->pub = pub;
	*out = pub;
	return PSC_OK;
}

void kmsd_flows_free(kmsd *k)
{
	for (size_t i = 0; k->pubkeys && i < KMSD_PUBKEY_SLOTS; i++)
		EVP_PKEY_free(k->pubkeys[i].pub);
	free(k->pubkeys);
	k->pubkeys = NULL;
}

static psc_rc wrap_for(kmsd *k, const hsm_key *secret, hsm_eph **eph, const kms_peer *p,
		       const uint8_t psc_id[16], uint64_t epoch, kms_wrapped *w, psc_err *err)
{
	EVP_PKEY *pub = NULL;
	psc_rc rc = peer_pubkey(k, p, &pub, err);
	if (rc != PSC_OK)
		return rc;
	return kms_wrap_to(k->hs, secret, eph, pub, psc_id, epoch, p->node_id, w, err);
}

static void fill_material(proto_material *m, const kms_psc *p, uint64_t epoch, uint32_t grace_ms,
			  const kms_wrapped *w, const member_set *ms, bool full)
{
	memset(m, 0, sizeof(*m));
	memcpy(m->psc_id, p->psc_id, PSC_PSC_ID_LEN);
	m->epoch = epoch;
	m->name = (proto_bytes){(const uint8_t *)p->name, strlen(p->name)};
	memcpy(m->owner, p->owner, PSC_NODE_ID_LEN);
	m->suite = p->suite;
	m->flags = (uint8_t)p->flags;
	m->grace_ms = grace_ms;
	m->wrap_alg = w->alg;
	m->ephemeral = (proto_bytes){w->eph, w->eph_len};
	m->wrapped = (proto_bytes){w->bytes, w->len};
	m->members_full = full ? 1 : 0;
	if (full && ms) {
		m->members.items = ms->items;
		m->members.n = ms->n;
	}
}

/*
 * Current material of a PSC for one member (catch-up, Initialize memberships):
 * the stored blob is unwrapped into an HSM session object and wrapped to the
 * member; the secret never leaves the HSM.
 */
static psc_rc material_for_member(kmsd *k, const kms_psc *p, const kms_peer *peer,
				  member_set *ms, kms_wrapped *w, proto_material *out, psc_err *err)
{
	kms_epoch ep;
	psc_rc rc = kms_store_epoch_current(k->store, p->psc_id, &ep, err);
	if (rc != PSC_OK)
		return rc;
	hsm_key key;
	rc = hsm_epoch_load(k->hs, ep.wrapped, ep.wrapped_len, &key, err);
	if (rc != PSC_OK)
		return rc;
	hsm_eph *eph = NULL;
	rc = wrap_for(k, &key, &eph, peer, p->psc_id, ep.epoch, w, err);
	hsm_eph_free(&eph);
	psc_err ignore;
	(void)!hsm_key_destroy(k->hs, &key, &ignore);
	if (rc != PSC_OK)
		return rc;
	rc = member_set_load(k, p->psc_id, ms);
	if (rc != PSC_OK)
		return rc;
	fill_material(out, p, ep.epoch, ep.prev_grace_ms, w, ms, true);
	return PSC_OK;
}

_Static_assert(KMS_FANOUT_NAME_MAX >= KMS_NAME_MAX, "fan-out jobs carry the PSC name");

/* The fan-out of one rekey (kms_pool.h) for the connected members other than
 * `skip`; *out stays NULL when nobody is to be told. */
static psc_rc fanout_for(kmsd *k, const kms_psc *p, uint8_t reason, uint32_t grace_ms,
			 uint64_t epoch, const uint8_t blob[HSM_EPOCH_BLOB_LEN],
			 const member_set *ms, bool full, const uint8_t *skip, kms_fanout **out,
			 psc_err *err)
{
	*out = NULL;
	size_t n = 0;
	for (size_t i = 0; i < ms->n; i++)
		if (ms->peers[i] && kmsd_binding_by_node(k, ms->items[i].node_id) &&
		    !(skip && memcmp(ms->items[i].node_id, skip, PSC_NODE_ID_LEN) == 0))
			n++;
	if (!n)
		return PSC_OK;
	kms_fanout *j = NULL;
	if (kms_fanout_new(&j, n, ms->items, full ? ms->n : 0) != PSC_OK)
		return psc_err_set(err, PSC_E_NOMEM, "rekey of %zu members: out of memory", ms->n);
	memcpy(j->psc_id, p->psc_id, PSC_PSC_ID_LEN);
	j->epoch = epoch;
	memcpy(j->blob, blob, HSM_EPOCH_BLOB_LEN);
	j->reason = reason;
	j->timestamp_ms = k->now_ms;
	j->overlay = k->overlay_hash;
	snprintf(j->name, sizeof(j->name), "%s", p->name);
	proto_members members = j->tmpl.members;
	kms_wrapped none = {0};
	fill_material(&j->tmpl, p, epoch, grace_ms, &none, NULL, full);
	j->tmpl.name = (proto_bytes){(const uint8_t *)j->name, strlen(j->name)};
	j->tmpl.members = members;
	j->signer = k->signer;
	EVP_PKEY_up_ref(j->signer.key); /* the loop may swap its key after an HSM recovery */
	size_t d = 0;
	psc_rc rc = PSC_OK;
	for (size_t i = 0; i < ms->n && d < n; i++) {
		if (!ms->peers[i] || !kmsd_binding_by_node(k, ms->items[i].node_id) ||
		    (skip && memcmp(ms->items[i].node_id, skip, PSC_NODE_ID_LEN) == 0))
			continue;
		EVP_PKEY *pub = NULL;
		rc = peer_pubkey(k, ms->peers[i], &pub, err);
		if (rc != PSC_OK)
			break;
		EVP_PKEY_up_ref(pub); /* the cache may drop its own reference meanwhile */
		j->dest[d].pub = pub;
		memcpy(j->dest[d].node_id, ms->items[i].node_id, PSC_NODE_ID_LEN);
		d++;
	}
	if (rc != PSC_OK) {
		kms_fanout_free(&j);
		return rc;
	}
	*out = j;
	return PSC_OK;
}

/*
 * A rekey: new epoch secret generated in the HSM and stored wrapped under the
 * master KEK (EPOCH_NEW). `answer_to` (may be NULL) gets its material in
 * `answer` (backed by `aw` and `ams`) because its answer carries it: that one
 * wrap happens here. Every other connected member gets a Refresh from the HSM
 * worker pool, which starts once this batch is durable (kmsd_fanout_stage):
 * all wraps under one ephemeral key, all Refreshes under one batch signature.
 */
static psc_rc rekey(kmsd *k, const kms_psc *p, uint8_t reason, uint32_t grace_ms,
		    const uint8_t *answer_to, member_set *ams, kms_wrapped *aw, proto_material *answer,
		    uint64_t *epoch_out, psc_err *err)
{
	member_set ms;
	psc_rc rc = member_set_load(k, p->psc_id, &ms);
	if (rc != PSC_OK) {
		member_set_free(&ms);
		return psc_err_set(err, rc, "loading members");
	}
	uint64_t epoch = (p->highest_epoch > p->epoch ? p->highest_epoch : p->epoch) + 1;
	hsm_key key;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	rc = hsm_epoch_generate(k->hs, &key, blob, err);
	if (rc != PSC_OK) {
		member_set_free(&ms);
		return rc;
	}
	hsm_eph *eph = NULL;
	kms_fanout *job = NULL;
	/* A timer rekey leaves the member list out, unless an earlier fan-out that
	 * carries it is still running: it may be superseded and dropped. */
	bool full = reason != PSC_REFRESH_TIMER || kmsd_fanout_running(k, p->psc_id);
	rc = fanout_for(k, p, reason, grace_ms, epoch, blob, &ms, full, answer_to, &job, err);
	if (rc != PSC_OK)
		goto out;
	for (size_t i = 0; answer_to && aw && i < ms.n; i++) {
		if (!ms.peers[i] || memcmp(ms.items[i].node_id, answer_to, PSC_NODE_ID_LEN) != 0)
			continue;
		rc = wrap_for(k, &key, &eph, ms.peers[i], p->psc_id, epoch, aw, err);
		if (rc != PSC_OK)
			goto out;
	}
	kms_cmd cmd = {.type = KMS_CMD_EPOCH_NEW};
	memcpy(cmd.epoch_new.psc_id, p->psc_id, PSC_PSC_ID_LEN);
	cmd.epoch_new.epoch = epoch;
	cmd.epoch_new.kek_id = (proto_bytes){(const uint8_t *)k->kek_id, strlen(k->kek_id)};
	cmd.epoch_new.wrapped = (proto_bytes){blob, sizeof(blob)};
	cmd.epoch_new.prev_grace_ms = grace_ms;
	cmd.epoch_new.now_ms = k->now_ms;
	rc = kmsd_apply(k, &cmd, err);
	if (rc != PSC_OK)
		goto out;
	size_t n_fanout = job ? job->n_dest : 0;
	if (job) {
		kmsd_fanout_stage(k, job);
		job = NULL;
	}
	if (answer_to && answer) {
		/* The answer's member list must outlive this function: hand ms over. */
		*ams = ms;
		memset(&ms, 0, sizeof(ms));
		fill_material(answer, p, epoch, grace_ms, aw, ams, true);
	}
	static const char *const reasons[] = {"", "establish", "timer", "join", "leave", "evict",
					      "destroyed", "removed", "restore", "catchup"};
	aud_kv kv[2] = {{.key = "reason", .str = reason < 10 ? reasons[reason] : "?"},
			{.key = "refreshes", .num = n_fanout, .str = NULL}};
	audit_ok(k, AUD_EV_PSC_REFRESH, NULL, NULL, p->psc_id, true, epoch, NULL, kv, 2);
	*epoch_out = epoch;
out:
	{
		psc_err ignore;
		(void)!hsm_key_destroy(k->hs, &key, &ignore);
	}
	hsm_eph_free(&eph);
	OPENSSL_cleanse(blob, sizeof(blob));
	kms_fanout_free(&job);
	member_set_free(&ms);
	return rc;
}

/* Refresh with no key (destroyed / removed) to one connected member. */
static void notify_gone(kmsd *k, const uint8_t node[16], const uint8_t psc_id[16], uint64_t epoch,
			uint8_t reason)
{
	kmsd_binding *b = kmsd_binding_by_node(k, node);
	if (!b)
		return;
	psc_body body = {.code = PSC_MSG_REFRESH_REQ};
	body.u.refresh_req.timestamp = k->now_ms;
	body.u.refresh_req.reason = reason;
	memcpy(body.u.refresh_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	body.u.refresh_req.epoch = epoch;
	(void)!kmsd_queue(k, b->rid, b->rid_len, PSC_MSG_REFRESH_REQ, kmsd_txid(k), &body, node);
}

/* ---- the gate -------------------------------------------------------------- */

static void raw_error(kmsd *k, const kms_inbound *in, uint16_t rerr, const char *text)
{
	/* Malformed input: answer only if a transaction id can be read at all. */
	if (in->len < 28)
		return;
	uint64_t txid = 0;
	for (int i = 0; i < 8; i++)
		txid = txid << 8 | in->data[20 + i];
	(void)!kmsd_queue_error(k, in->routing_id, in->routing_id_len, txid, rerr,
				PSC_REASON_MALFORMED, text);
}

/* Authenticates a peer request; on failure it has already answered. */
static bool authenticate(req *r)
{
	kmsd *k = r->k;
	psc_err e;
	if (r->m.code == PSC_MSG_INITIALIZE_REQ) {
		const uint8_t *der;
		size_t len;
		if (proto_message_signer_cert(&r->m, &der, &len) != PSC_OK) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_CERT_INVALID,
			       NULL, "Initialize must carry the signer's certificate");
			return false;
		}
		if (proto_cert_parse(der, len, &r->cert, &e) != PSC_OK) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_CERT_INVALID,
			       NULL, "%s", psc_err_text(&e));
			return false;
		}
		STACK_OF(X509) *chain = sk_X509_new_null();
		for (size_t i = 0; chain && i < r->m.n_certs; i++) {
			X509 *x = NULL;
			if (r->m.cert[i] != der &&
			    proto_cert_parse(r->m.cert[i], r->m.cert_len[i], &x, NULL) == PSC_OK)
				sk_X509_push(chain, x);
		}
		psc_rc rc = kms_trust_verify(k->trust, r->cert, chain, k->now_ms, k->cfg->overlay,
					     r->node, &e);
		sk_X509_pop_free(chain, X509_free);
		describe_cert(r->cert, r->node, &r->pp, r->subject, sizeof(r->subject), r->issuer,
			      sizeof(r->issuer), r->cn, r->ou, r->o, r->cert_sha256);
		r->actor = (aud_actor){.node_id = r->node, .cert_sha256 = r->cert_sha256,
				       .subject = r->subject, .issuer = r->issuer};
		if (rc != PSC_OK) {
			uint16_t reason = rc == PSC_E_KMSD_CERT_REVOKED ? PSC_REASON_CERT_REVOKED
					  : (rc == PSC_E_NO_NODE_ID || rc == PSC_E_BAD_NODE_ID_URI ||
					     rc == PSC_E_OVERLAY)
						  ? PSC_REASON_NODE_ID_MISMATCH
						  : PSC_REASON_CERT_INVALID;
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, reason, NULL, "%s",
			       psc_err_text(&e));
			return false;
		}
	} else {
		kmsd_binding *b = kmsd_binding_by_rid(k, r->in->routing_id, r->in->routing_id_len);
		if (!b) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN,
			       PSC_REASON_NOT_INITIALIZED, NULL,
			       "this connection has not run Initialize (a restarted KMS forgets "
			       "connections: Initialize again)");
			return false;
		}
		memcpy(r->node, b->node_id, PSC_NODE_ID_LEN);
		if (strcmp(b->user_id, r->in->user_id) != 0) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN,
			       PSC_REASON_TRANSPORT_KEY_MISMATCH, NULL,
			       "the connection's CURVE key is not the one bound at Initialize");
			return false;
		}
		r->peer = malloc(sizeof(*r->peer));
		if (!r->peer || kms_store_peer_get(k->store, r->node, r->peer, &e) != PSC_OK ||
		    proto_cert_parse(r->peer->cert_der, r->peer->cert_der_len, &r->cert, &e) != PSC_OK) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN,
			       PSC_REASON_NOT_INITIALIZED, NULL, "unknown peer: Initialize first");
			return false;
		}
		describe_cert(r->cert, r->node, &r->pp, r->subject, sizeof(r->subject), r->issuer,
			      sizeof(r->issuer), r->cn, r->ou, r->o, r->cert_sha256);
		r->actor = (aud_actor){.node_id = r->node, .cert_sha256 = r->cert_sha256,
				       .subject = r->subject, .issuer = r->issuer};
		if (r->peer->banned) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_BANNED,
			       NULL, "this Node-ID is banned by the operator");
			return false;
		}
		/* Certificates expire and get revoked between requests. */
		uint8_t again[PSC_NODE_ID_LEN];
		psc_rc rc = kms_trust_verify(k->trust, r->cert, NULL, k->now_ms, k->cfg->overlay,
					     again, &e);
		if (rc != PSC_OK) {
			refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN,
			       rc == PSC_E_KMSD_CERT_REVOKED ? PSC_REASON_CERT_REVOKED
							     : PSC_REASON_CERT_INVALID,
			       NULL, "%s", psc_err_text(&e));
			return false;
		}
	}
	if (!proto_message_signed_by(&r->m, r->peer ? r->peer->cert_der : NULL,
				     r->peer ? r->peer->cert_der_len : 0) &&
	    r->peer) {
		refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_BAD_SIGNATURE,
		       NULL, "the signer identity does not name this peer's certificate");
		return false;
	}
	if (proto_message_verify(&r->m, X509_get0_pubkey(r->cert), &e) != PSC_OK) {
		refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_BAD_SIGNATURE,
		       NULL, "%s", psc_err_text(&e));
		return false;
	}
	return true;
}

/* ---- handlers ------------------------------------------------------------- */

static bool decide(req *r, pol_action action, const pol_psc *psc, const pol_peer *invitee,
		   pol_decision *d)
{
	pol_request pr = {.action = action, .now = (int64_t)(r->k->now_ms / 1000),
			  .requester = r->pp, .psc = psc, .invitee = invitee};
	if (action == POL_ACT_INITIALIZE) {
		const psc_initialize_req *q = &r->b.u.initialize_req;
		static uint16_t suites[PSC_MAX_SUITES];
		static uint8_t algs[PSC_MAX_WRAP_ALGS];
		proto_iter it;
		size_t n = 0;
		proto_iter_init(&it, q->suites.raw, q->suites.raw_len);
		while (n < PSC_MAX_SUITES && proto_next_u16(&it, &suites[n]))
			n++;
		pr.suites = suites;
		pr.n_suites = n;
		n = 0;
		proto_iter_init(&it, q->wrap_algs.raw, q->wrap_algs.raw_len);
		while (n < PSC_MAX_WRAP_ALGS && proto_next_u8(&it, &algs[n]))
			n++;
		pr.wrap_algs = algs;
		pr.n_wrap_algs = n;
	}
	psc_err e;
	if (pol_decide(r->k->pol, r->k->pol_state, &pr, d, NULL) != PSC_OK) {
		memset(d, 0, sizeof(*d));
		d->outcome = POL_DENY;
		d->revision = pol_policy_revision(r->k->pol);
		(void)e;
	}
	if (d->outcome != POL_DENY)
		pol_state_record(r->k->pol_state, r->node, action, pr.now);
	return d->outcome != POL_DENY;
}

static uint8_t choose_wrap(kmsd *k, X509 *cert, const psc_initialize_req *q)
{
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	int type = pub ? EVP_PKEY_get_base_id(pub) : 0;
	uint8_t want[2] = {0, 0};
	if (type == EVP_PKEY_EC) {
		want[0] = PSC_WRAP_ECDH_P256_AESPRF_KWP;
	} else if (type == EVP_PKEY_RSA) {
		want[0] = hsm_oaep_sha256(k->hsm) ? PSC_WRAP_RSA_OAEP_SHA256 : PSC_WRAP_RSA_OAEP_SHA1;
		want[1] = PSC_WRAP_RSA_OAEP_SHA1;
	}
	for (int w = 0; w < 2; w++) {
		proto_iter it;
		uint8_t a;
		proto_iter_init(&it, q->wrap_algs.raw, q->wrap_algs.raw_len);
		while (want[w] && proto_next_u8(&it, &a))
			if (a == want[w])
				return a;
	}
	return 0;
}

typedef struct establish_out {
	bool ok;
	uint16_t rerr, reason;
	char text[PROTO_MAX_ERROR_TEXT];
	uint8_t psc_id[PSC_PSC_ID_LEN];
	proto_material material;
	member_set ms;
	kms_wrapped w;
	uint8_t (*pending)[PSC_NODE_ID_LEN];
	size_t n_pending;
	bool decided; /* d holds the policy decision (for the refusal's audit record) */
	pol_decision d;
} establish_out;

static void establish_out_free(establish_out *o)
{
	member_set_free(&o->ms);
	free(o->pending);
	o->pending = NULL;
}

static void establish(req *r, const proto_establish_params *prm, establish_out *o)
{
	kmsd *k = r->k;
	memset(o, 0, sizeof(*o));
	psc_err e;
	char name[KMS_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%.*s", (int)prm->name.len, (const char *)prm->name.p);
	if (strlen(name) != prm->name.len) {
		o->rerr = PSC_RERR_INVALID_MESSAGE;
		o->reason = PSC_REASON_MALFORMED;
		snprintf(o->text, sizeof(o->text), "PSC name contains a NUL byte");
		return;
	}
	psc_view existing;
	if (kms_store_psc_by_name(k->store, name, &existing.psc, &e) == PSC_OK) {
		o->rerr = PSC_RERR_FORBIDDEN;
		o->reason = PSC_REASON_NAME_TAKEN;
		snprintf(o->text, sizeof(o->text), "a PSC named '%s' exists", name);
		return;
	}
	kms_cmd create = {.type = KMS_CMD_PSC_CREATE};
	kms_cmd_psc_create *c = &create.psc_create;
	pol_label labels[KMS_LABELS_MAX];
	char lk[KMS_LABELS_MAX][KMS_LABEL_KEY_MAX + 1], lv[KMS_LABELS_MAX][KMS_LABEL_VALUE_MAX + 1];
	proto_iter it;
	proto_label l;
	proto_iter_init(&it, prm->labels.raw, prm->labels.raw_len);
	while (c->n_labels < KMS_LABELS_MAX && proto_next_label(&it, &l)) {
		snprintf(lk[c->n_labels], sizeof(lk[0]), "%.*s", (int)l.key.len, (const char *)l.key.p);
		snprintf(lv[c->n_labels], sizeof(lv[0]), "%.*s", (int)l.value.len,
			 (const char *)l.value.p);
		labels[c->n_labels] = (pol_label){lk[c->n_labels], lv[c->n_labels]};
		c->labels[c->n_labels] = l;
		c->n_labels++;
	}
	pol_limits lim;
	if (pol_limits_for(k->pol, name, labels, c->n_labels, &lim, &e) != PSC_OK) {
		o->rerr = PSC_RERR_FORBIDDEN;
		o->reason = PSC_REASON_POLICY_DENIED;
		snprintf(o->text, sizeof(o->text), "%s", psc_err_text(&e));
		return;
	}
	uint32_t refresh = prm->refresh_s ? prm->refresh_s
					  : (lim.refresh_default ? lim.refresh_default
								 : k->cfg->timers.refresh_default_s);
	if ((lim.refresh_min && refresh < lim.refresh_min) ||
	    (lim.refresh_max && refresh > lim.refresh_max)) {
		o->rerr = PSC_RERR_FORBIDDEN;
		o->reason = PSC_REASON_POLICY_DENIED;
		snprintf(o->text, sizeof(o->text), "refresh interval %u s is outside the policy's "
			 "%u..%u s", refresh, lim.refresh_min, lim.refresh_max);
		return;
	}
	uint32_t max = prm->max_members;
	if (lim.max_members && (max == 0 || max > lim.max_members))
		max = lim.max_members;
	if (max && prm->members.n + 1 > max) {
		o->rerr = PSC_RERR_FORBIDDEN;
		o->reason = PSC_REASON_TOO_MANY_MEMBERS;
		snprintf(o->text, sizeof(o->text), "%zu initial members exceed the limit of %u",
			 prm->members.n + 1, max);
		return;
	}
	pol_psc pp = {.name = name, .labels = labels, .n_labels = c->n_labels,
		      .member_count = (uint32_t)(prm->members.n + 1)};
	memcpy(pp.owner_node_id, r->node, PSC_NODE_ID_LEN);
	pol_decision d;
	if (!decide(r, POL_ACT_ESTABLISH, &pp, NULL, &d) || d.outcome != POL_PERMIT) {
		o->rerr = PSC_RERR_FORBIDDEN;
		o->reason = PSC_REASON_POLICY_DENIED;
		snprintf(o->text, sizeof(o->text), "policy denies establishing '%s'%s%s", name,
			 d.n_rules ? " (rule " : "", d.n_rules ? d.rules[0] : "");
		if (d.n_rules)
			strncat(o->text, ")", sizeof(o->text) - strlen(o->text) - 1);
		o->decided = true;
		o->d = d;
		return;
	}
	if (hsm_random(k->hs, o->psc_id, PSC_PSC_ID_LEN, &e) != PSC_OK) {
		o->rerr = PSC_RERR_IN_PROGRESS;
		o->reason = PSC_REASON_HSM_UNAVAILABLE;
		snprintf(o->text, sizeof(o->text), "%s", psc_err_text(&e));
		return;
	}
	memcpy(c->psc_id, o->psc_id, PSC_PSC_ID_LEN);
	c->name = prm->name;
	memcpy(c->owner, r->node, PSC_NODE_ID_LEN);
	c->flags = prm->flags;
	c->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	c->refresh_s = refresh;
	c->max_members = max;
	c->now_ms = k->now_ms;
	psc_rc rc = kmsd_mark(k, &e);
	bool marked = rc == PSC_OK;
	if (rc == PSC_OK)
		rc = kmsd_apply(k, &create, &e);
	kms_cmd add = {.type = KMS_CMD_MEMBER_ADD};
	memcpy(add.member_add.psc_id, o->psc_id, PSC_PSC_ID_LEN);
	add.member_add.now_ms = k->now_ms;
	memcpy(add.member_add.node_id, r->node, PSC_NODE_ID_LEN);
	if (rc == PSC_OK)
		rc = kmsd_apply(k, &add, &e);
	o->pending = calloc(prm->members.n + 1, PSC_NODE_ID_LEN);
	proto_iter_init(&it, prm->members.raw, prm->members.raw_len);
	uint8_t node[PSC_NODE_ID_LEN];
	while (rc == PSC_OK && o->pending && proto_next_node_id(&it, node)) {
		if (memcmp(node, r->node, PSC_NODE_ID_LEN) == 0)
			continue;
		memcpy(add.member_add.node_id, node, PSC_NODE_ID_LEN);
		rc = kmsd_apply(k, &add, &e);
		if (rc == PSC_E_KMS_ALREADY_MEMBER) { /* listed twice */
			rc = PSC_OK;
			continue;
		}
		kms_peer *p = malloc(sizeof(*p));
		if (p && kms_store_peer_get(k->store, node, p, NULL) != PSC_OK)
			memcpy(o->pending[o->n_pending++], node, PSC_NODE_ID_LEN);
		free(p);
	}
	kms_psc created;
	if (rc == PSC_OK)
		rc = kms_store_psc_get(k->store, o->psc_id, &created, &e);
	uint64_t epoch = 0;
	if (rc == PSC_OK)
		rc = rekey(k, &created, PSC_REFRESH_ESTABLISH, 0, r->node, &o->ms, &o->w, &o->material,
			   &epoch, &e);
	if (marked)
		kmsd_mark_end(k, rc == PSC_OK); /* no PSC without its first epoch */
	if (rc != PSC_OK) {
		o->rerr = PSC_RERR_IN_PROGRESS;
		o->reason = hsm_error_reason(rc);
		snprintf(o->text, sizeof(o->text), "establishing failed: %s", psc_err_text(&e));
		return;
	}
	audit_ok(k, AUD_EV_PSC_ESTABLISH, r->request_id, &r->actor, o->psc_id, true, epoch, &d,
		 NULL, 0);
	o->ok = true;
}

static void on_establish(req *r)
{
	establish_out o;
	establish(r, &r->b.u.establish_req.params, &o);
	if (o.ok) {
		psc_body body = {.code = PSC_MSG_ESTABLISH_ANS};
		body.u.establish_ans.material = o.material;
		body.u.establish_ans.pending.items = (const proto_node_id_t *)o.pending;
		body.u.establish_ans.pending.n = o.n_pending;
		reply(r, &body);
	} else {
		refuse(r, AUD_EV_PSC_ESTABLISH, NULL, o.rerr, o.reason, o.decided ? &o.d : NULL, "%s",
		       o.text);
	}
	establish_out_free(&o);
}

/* Adds `node` to the PSC and rekeys; the joiner's material goes into `answer`. */
static psc_rc admit(kmsd *k, const kms_psc *p, const uint8_t node[16], member_set *ams,
		    kms_wrapped *aw, proto_material *answer, uint64_t *epoch, psc_err *err)
{
	kms_cmd add = {.type = KMS_CMD_MEMBER_ADD};
	memcpy(add.member_add.psc_id, p->psc_id, PSC_PSC_ID_LEN);
	memcpy(add.member_add.node_id, node, PSC_NODE_ID_LEN);
	add.member_add.now_ms = k->now_ms;
	psc_rc rc = kmsd_mark(k, err);
	if (rc != PSC_OK)
		return rc;
	rc = kmsd_apply(k, &add, err);
	kms_psc now;
	if (rc == PSC_OK)
		rc = kms_store_psc_get(k->store, p->psc_id, &now, err);
	if (rc == PSC_OK)
		rc = rekey(k, &now, PSC_REFRESH_JOIN, k->cfg->timers.old_epoch_grace_ms, node, ams, aw,
			   answer, epoch, err);
	/* No member without the epoch made for it: it would hold the previous one. */
	kmsd_mark_end(k, rc == PSC_OK);
	return rc;
}

static void finish_join(kmsd *k, const kmsd_origin *o, const uint8_t psc_id[16],
			const pol_decision *d)
{
	psc_view v;
	psc_err e;
	if (load_psc(k, psc_id, &v) != PSC_OK) {
		error_origin(k, o, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC, "the PSC is gone");
		return;
	}
	member_set ms = {0};
	kms_wrapped w;
	proto_material mat;
	uint64_t epoch = 0;
	psc_rc rc = admit(k, &v.psc, o->node_id, &ms, &w, &mat, &epoch, &e);
	if (rc != PSC_OK) {
		error_origin(k, o, PSC_RERR_IN_PROGRESS, hsm_error_reason(rc), psc_err_text(&e));
		aud_actor actor = {.node_id = o->node_id};
		audit_failed(k, AUD_EV_PSC_JOIN, o->request_id, &actor, psc_id, d, psc_err_text(&e));
	} else {
		psc_body body = {.code = PSC_MSG_JOIN_ANS};
		body.u.join_ans.material = mat;
		reply_origin(k, o, &body);
		aud_actor actor = {.node_id = o->node_id};
		audit_ok(k, AUD_EV_PSC_JOIN, o->request_id, &actor, psc_id, true, epoch, d, NULL, 0);
	}
	member_set_free(&ms);
}

static void origin_of(const req *r, kmsd_origin *o)
{
	memcpy(o->node_id, r->node, PSC_NODE_ID_LEN);
	memcpy(o->rid, r->in->routing_id, r->in->routing_id_len);
	o->rid_len = r->in->routing_id_len;
	o->txid = r->m.transaction_id;
	o->code = r->m.code;
	snprintf(o->request_id, sizeof(o->request_id), "%s", r->request_id);
}

static void on_join(req *r)
{
	kmsd *k = r->k;
	const uint8_t *psc_id = r->b.u.psc_req.psc_id;
	psc_view v;
	if (load_psc(k, psc_id, &v) != PSC_OK) {
		refuse(r, AUD_EV_PSC_JOIN, psc_id, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC, NULL,
		       "no such PSC");
		return;
	}
	if (is_member(k, psc_id, r->node)) {
		refuse(r, AUD_EV_PSC_JOIN, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_ALREADY_MEMBER, NULL,
		       "already a member");
		return;
	}
	if (v.psc.max_members && v.psc.n_members >= v.psc.max_members) {
		refuse(r, AUD_EV_PSC_JOIN, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_TOO_MANY_MEMBERS,
		       NULL, "the PSC is full (%u members)", v.psc.max_members);
		return;
	}
	pol_decision d;
	if (!decide(r, POL_ACT_JOIN, &v.pp, NULL, &d)) {
		refuse(r, AUD_EV_PSC_JOIN, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED, &d,
		       "policy denies joining '%s'", v.psc.name);
		return;
	}
	kmsd_origin o;
	origin_of(r, &o);
	if (d.outcome == POL_PERMIT) {
		finish_join(k, &o, psc_id, &d);
		return;
	}
	/* ask_owner: the owner decides within the query timeout; silence denies. */
	kmsd_binding *owner = kmsd_binding_by_node(k, v.psc.owner);
	kmsd_pending *p = owner ? kmsd_pending_new(k, KMSD_WAIT_QUERY, k->cfg->timers.query_timeout_ms)
				: NULL;
	if (!p) {
		refuse(r, AUD_EV_PSC_JOIN, psc_id, PSC_RERR_REQUEST_TIMEOUT,
		       owner ? PSC_REASON_BUSY : PSC_REASON_PEER_UNREACHABLE, &d,
		       "the owner must approve this join but is %s",
		       owner ? "busy" : "not connected");
		return;
	}
	memcpy(p->peer, v.psc.owner, PSC_NODE_ID_LEN);
	memcpy(p->psc_id, psc_id, PSC_PSC_ID_LEN);
	memcpy(p->subject, r->node, PSC_NODE_ID_LEN);
	p->origin = o;
	psc_body q = {.code = PSC_MSG_QUERY_REQ};
	q.u.query_req.timestamp = k->now_ms;
	memcpy(q.u.query_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	memcpy(q.u.query_req.requester, r->node, PSC_NODE_ID_LEN);
	q.u.query_req.requester_subject = (proto_bytes){(const uint8_t *)r->subject,
							strlen(r->subject)};
	q.u.query_req.timeout_ms = k->cfg->timers.query_timeout_ms;
	(void)!kmsd_queue(k, owner->rid, owner->rid_len, PSC_MSG_QUERY_REQ, p->txid, &q,
			  v.psc.owner);
	audit_ok(k, AUD_EV_PSC_QUERY, r->request_id, &r->actor, psc_id, false, 0, &d, NULL, 0);
}

static void on_invite_init(req *r)
{
	kmsd *k = r->k;
	const psc_invite_init_req *q = &r->b.u.invite_init_req;
	psc_view v;
	if (load_psc(k, q->psc_id, &v) != PSC_OK) {
		refuse(r, AUD_EV_PSC_INVITE, q->psc_id, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC,
		       NULL, "no such PSC");
		return;
	}
	if (!is_member(k, q->psc_id, r->node)) {
		refuse(r, AUD_EV_PSC_INVITE, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_MEMBER,
		       NULL, "only members may invite");
		return;
	}
	if (is_member(k, q->psc_id, q->invitee)) {
		refuse(r, AUD_EV_PSC_INVITE, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_ALREADY_MEMBER,
		       NULL, "the invitee is already a member");
		return;
	}
	kms_peer *inv = malloc(sizeof(*inv));
	X509 *ix = NULL;
	psc_err e;
	kmsd_binding *ib = kmsd_binding_by_node(k, q->invitee);
	if (!inv || kms_store_peer_get(k->store, q->invitee, inv, &e) != PSC_OK || !ib ||
	    proto_cert_parse(inv->cert_der, inv->cert_der_len, &ix, &e) != PSC_OK) {
		psc_body body = {.code = PSC_MSG_INVITE_INIT_ANS};
		body.u.invite_init_ans.outcome = PSC_INVITE_UNREACHABLE;
		reply(r, &body);
		free(inv);
		return;
	}
	pol_peer ipp;
	char s[512], is[512], cn[128], ou[128], o[128];
	uint8_t sha[32];
	describe_cert(ix, q->invitee, &ipp, s, sizeof(s), is, sizeof(is), cn, ou, o, sha);
	pol_decision d;
	bool ok = decide(r, POL_ACT_INVITE, &v.pp, &ipp, &d) && d.outcome == POL_PERMIT;
	X509_free(ix);
	free(inv);
	if (!ok) {
		refuse(r, AUD_EV_PSC_INVITE, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED,
		       &d, "policy denies this invitation");
		return;
	}
	kmsd_pending *p = kmsd_pending_new(k, KMSD_WAIT_INVITE, k->cfg->timers.invite_timeout_ms);
	if (!p) {
		refuse(r, AUD_EV_PSC_INVITE, q->psc_id, PSC_RERR_IN_PROGRESS, PSC_REASON_BUSY, &d,
		       "too many exchanges in progress");
		return;
	}
	memcpy(p->peer, q->invitee, PSC_NODE_ID_LEN);
	memcpy(p->psc_id, q->psc_id, PSC_PSC_ID_LEN);
	memcpy(p->subject, q->invitee, PSC_NODE_ID_LEN);
	origin_of(r, &p->origin);
	psc_body iq = {.code = PSC_MSG_INVITE_REQ};
	iq.u.invite_req.timestamp = k->now_ms;
	memcpy(iq.u.invite_req.psc_id, q->psc_id, PSC_PSC_ID_LEN);
	iq.u.invite_req.psc_name = (proto_bytes){(const uint8_t *)v.psc.name, strlen(v.psc.name)};
	memcpy(iq.u.invite_req.inviter, r->node, PSC_NODE_ID_LEN);
	iq.u.invite_req.timeout_ms = k->cfg->timers.invite_timeout_ms;
	(void)!kmsd_queue(k, ib->rid, ib->rid_len, PSC_MSG_INVITE_REQ, p->txid, &iq, q->invitee);
	audit_ok(k, AUD_EV_PSC_INVITE, r->request_id, &r->actor, q->psc_id, false, 0, &d, NULL, 0);
}

/* Removes a member and rekeys without grace (forward secrecy). */
static psc_rc remove_member(kmsd *k, const kms_psc *p, const uint8_t node[16], uint8_t reason,
			    uint64_t *epoch, psc_err *err)
{
	kms_cmd rm = {.type = KMS_CMD_MEMBER_REMOVE};
	memcpy(rm.member_remove.psc_id, p->psc_id, PSC_PSC_ID_LEN);
	memcpy(rm.member_remove.node_id, node, PSC_NODE_ID_LEN);
	psc_rc rc = kmsd_mark(k, err);
	if (rc != PSC_OK)
		return rc;
	rc = kmsd_apply(k, &rm, err);
	kms_psc now;
	if (rc == PSC_OK)
		rc = kms_store_psc_get(k->store, p->psc_id, &now, err);
	*epoch = p->epoch;
	if (rc == PSC_OK && now.n_members > 0)
		rc = rekey(k, &now, reason, 0, NULL, NULL, NULL, NULL, epoch, err);
	/* A removal stands only with the rekey that locks the member out. */
	kmsd_mark_end(k, rc == PSC_OK);
	return rc;
}

static psc_rc destroy_psc(kmsd *k, const kms_psc *p, const uint8_t *except, psc_err *err)
{
	member_set ms;
	psc_rc rc = member_set_load(k, p->psc_id, &ms);
	for (size_t i = 0; rc == PSC_OK && i < ms.n; i++)
		if (!except || memcmp(ms.items[i].node_id, except, PSC_NODE_ID_LEN) != 0)
			notify_gone(k, ms.items[i].node_id, p->psc_id, p->epoch, PSC_REFRESH_DESTROYED);
	member_set_free(&ms);
	kms_cmd d = {.type = KMS_CMD_PSC_DESTROY};
	memcpy(d.psc_destroy.psc_id, p->psc_id, PSC_PSC_ID_LEN);
	d.psc_destroy.now_ms = k->now_ms;
	return rc == PSC_OK ? kmsd_apply(k, &d, err) : rc;
}

static void on_leave(req *r)
{
	kmsd *k = r->k;
	const uint8_t *psc_id = r->b.u.psc_req.psc_id;
	psc_view v;
	psc_err e;
	if (load_psc(k, psc_id, &v) != PSC_OK || !is_member(k, psc_id, r->node)) {
		refuse(r, AUD_EV_PSC_LEAVE, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_MEMBER, NULL,
		       "not a member of that PSC");
		return;
	}
	bool owner = memcmp(v.psc.owner, r->node, PSC_NODE_ID_LEN) == 0;
	if (owner && v.psc.n_members > 1) {
		refuse(r, AUD_EV_PSC_LEAVE, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_OWNER_MUST_DESTROY,
		       NULL, "the owner cannot leave a PSC with other members: destroy it");
		return;
	}
	uint64_t epoch = v.psc.epoch;
	psc_rc rc = owner ? destroy_psc(k, &v.psc, r->node, &e)
			  : remove_member(k, &v.psc, r->node, PSC_REFRESH_LEAVE, &epoch, &e);
	if (rc != PSC_OK) {
		refuse(r, AUD_EV_PSC_LEAVE, psc_id, PSC_RERR_IN_PROGRESS, hsm_error_reason(rc), NULL,
		       "%s", psc_err_text(&e));
		return;
	}
	psc_body body = {.code = PSC_MSG_LEAVE_ANS};
	reply(r, &body);
	audit_ok(k, owner ? AUD_EV_PSC_DESTROY : AUD_EV_PSC_LEAVE, r->request_id, &r->actor, psc_id,
		 true, epoch, NULL, NULL, 0);
}

static void on_departure(req *r)
{
	kmsd *k = r->k;
	const psc_departure_req *q = &r->b.u.departure_req;
	psc_view v;
	if (load_psc(k, q->psc_id, &v) != PSC_OK || !is_member(k, q->psc_id, r->node)) {
		refuse(r, AUD_EV_PSC_EVICT, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_MEMBER, NULL,
		       "only members may report a departure");
		return;
	}
	if (!is_member(k, q->psc_id, q->suspect) || memcmp(q->suspect, r->node, 16) == 0) {
		refuse(r, AUD_EV_PSC_EVICT, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_MEMBER, NULL,
		       "the suspect is not another member of that PSC");
		return;
	}
	pol_decision d;
	if (!decide(r, POL_ACT_REPORT_DEPARTURE, &v.pp, NULL, &d) || d.outcome != POL_PERMIT) {
		refuse(r, AUD_EV_PSC_EVICT, q->psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED,
		       &d, "policy denies departure reports here");
		return;
	}
	kmsd_pending *p = kmsd_pending_new(k, KMSD_WAIT_LIVENESS, k->cfg->timers.liveness_timeout_ms);
	if (!p) {
		refuse(r, AUD_EV_PSC_EVICT, q->psc_id, PSC_RERR_IN_PROGRESS, PSC_REASON_BUSY, &d,
		       "too many exchanges in progress");
		return;
	}
	memcpy(p->peer, q->suspect, PSC_NODE_ID_LEN);
	memcpy(p->psc_id, q->psc_id, PSC_PSC_ID_LEN);
	memcpy(p->subject, q->suspect, PSC_NODE_ID_LEN);
	origin_of(r, &p->origin);
	p->challenge = kmsd_txid(k);
	kmsd_binding *sb = kmsd_binding_by_node(k, q->suspect);
	if (sb) {
		psc_body lq = {.code = PSC_MSG_LIVENESS_REQ};
		lq.u.liveness.timestamp = k->now_ms;
		lq.u.liveness.challenge = p->challenge;
		(void)!kmsd_queue(k, sb->rid, sb->rid_len, PSC_MSG_LIVENESS_REQ, p->txid, &lq,
				  q->suspect);
	}
	/* Not connected: it cannot answer; the timeout evicts it like any silent suspect. */
}

static void on_destroy(req *r)
{
	kmsd *k = r->k;
	const uint8_t *psc_id = r->b.u.psc_req.psc_id;
	psc_view v;
	psc_err e;
	if (load_psc(k, psc_id, &v) != PSC_OK) {
		refuse(r, AUD_EV_PSC_DESTROY, psc_id, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC, NULL,
		       "no such PSC");
		return;
	}
	pol_decision d;
	if (!decide(r, POL_ACT_DESTROY, &v.pp, NULL, &d) || d.outcome != POL_PERMIT) {
		refuse(r, AUD_EV_PSC_DESTROY, psc_id, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED, &d,
		       "policy denies destroying '%s'", v.psc.name);
		return;
	}
	if (destroy_psc(k, &v.psc, r->node, &e) != PSC_OK) {
		refuse(r, AUD_EV_PSC_DESTROY, psc_id, PSC_RERR_IN_PROGRESS, PSC_REASON_INTERNAL, &d,
		       "%s", psc_err_text(&e));
		return;
	}
	psc_body body = {.code = PSC_MSG_DESTROY_ANS};
	reply(r, &body);
	audit_ok(k, AUD_EV_PSC_DESTROY, r->request_id, &r->actor, psc_id, true, v.psc.epoch, &d,
		 NULL, 0);
}

static void on_lookup(req *r)
{
	kmsd *k = r->k;
	char name[KMS_NAME_MAX + 1];
	proto_bytes n = r->b.u.lookup_req.name;
	snprintf(name, sizeof(name), "%.*s", (int)n.len, (const char *)n.p);
	psc_view v;
	psc_err e;
	pol_decision d;
	bool found = strlen(name) == n.len &&
		     kms_store_psc_by_name(k->store, name, &v.psc, &e) == PSC_OK;
	if (found)
		view_of(&v);
	/* Unknown and not-allowed look the same from outside (docs/protocol.md §7.8). */
	if (!found || (!is_member(k, v.psc.psc_id, r->node) && !decide(r, POL_ACT_JOIN, &v.pp, NULL, &d))) {
		refuse(r, AUD_EV_PSC_LOOKUP, NULL, PSC_RERR_NOT_FOUND, PSC_REASON_UNKNOWN_PSC, NULL,
		       "no PSC by that name that you may join");
		return;
	}
	psc_body body = {.code = PSC_MSG_LOOKUP_ANS};
	memcpy(body.u.lookup_ans.psc_id, v.psc.psc_id, PSC_PSC_ID_LEN);
	memcpy(body.u.lookup_ans.owner, v.psc.owner, PSC_NODE_ID_LEN);
	body.u.lookup_ans.member_count = v.psc.n_members;
	reply(r, &body);
}

/* Material of every PSC the peer belongs to (Initialize memberships, Catchup). */
typedef struct memberships {
	kmsd *k;
	const kms_peer *peer;
	size_t n, cap;
	proto_material *mats;
	member_set *sets;
	kms_wrapped *w;
	proto_catchup_entry *entries;
	size_t n_entries;
	const uint8_t (*skip)[PSC_PSC_ID_LEN]; /* already listed (Catchup) */
	size_t n_skip;
} memberships;

static int add_membership(void *arg, const kms_member *m)
{
	memberships *s = arg;
	for (size_t i = 0; i < s->n_skip; i++)
		if (memcmp(s->skip[i], m->psc_id, PSC_PSC_ID_LEN) == 0)
			return 0;
	if (s->n == s->cap || s->n >= PSC_MAX_HELD)
		return s->n >= PSC_MAX_HELD;
	kms_psc p;
	psc_err e;
	if (kms_store_psc_get(s->k->store, m->psc_id, &p, &e) != PSC_OK || p.destroyed ||
	    p.epoch == 0)
		return 0;
	if (material_for_member(s->k, &p, s->peer, &s->sets[s->n], &s->w[s->n], &s->mats[s->n],
				&e) == PSC_OK)
		s->n++;
	else
		member_set_free(&s->sets[s->n]);
	return 0;
}

static psc_rc memberships_load(kmsd *k, const kms_peer *peer, memberships *s, size_t cap)
{
	s->k = k;
	s->peer = peer;
	s->cap = cap;
	s->mats = calloc(cap ? cap : 1, sizeof(*s->mats));
	s->sets = calloc(cap ? cap : 1, sizeof(*s->sets));
	s->w = calloc(cap ? cap : 1, sizeof(*s->w));
	if (!s->mats || !s->sets || !s->w)
		return PSC_E_NOMEM;
	psc_err e;
	return kms_store_pscs_of_node(k->store, peer->node_id, add_membership, s, &e);
}

static void memberships_free(memberships *s)
{
	for (size_t i = 0; s->sets && i < s->n; i++)
		member_set_free(&s->sets[i]);
	free(s->mats);
	free(s->sets);
	free(s->w);
	free(s->entries);
	memset(s, 0, sizeof(*s));
}

static void on_initialize(req *r)
{
	kmsd *k = r->k;
	const psc_initialize_req *q = &r->b.u.initialize_req;
	psc_err e;
	if (memcmp(q->node_id, r->node, PSC_NODE_ID_LEN) != 0) {
		refuse(r, AUD_EV_PEER_INITIALIZE, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_NODE_ID_MISMATCH,
		       NULL, "the Node-ID in the request is not the one the certificate binds");
		return;
	}
	bool suite_ok = false;
	proto_iter it;
	uint16_t s16;
	proto_iter_init(&it, q->suites.raw, q->suites.raw_len);
	while (proto_next_u16(&it, &s16))
		suite_ok |= s16 == PSC_SUITE_AES256GCM_HKDF_SHA256;
	uint8_t wrap = choose_wrap(k, r->cert, q);
	if (!suite_ok || !wrap) {
		refuse(r, AUD_EV_PEER_INITIALIZE, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_UNSUPPORTED_SUITE,
		       NULL, "no common %s (this KMS offers suite 0x0001 and wrap algorithms for "
		       "P-256 and RSA keys)", suite_ok ? "wrap algorithm" : "cipher suite");
		return;
	}
	kms_peer *known = malloc(sizeof(*known));
	bool banned = known && kms_store_peer_get(k->store, r->node, known, &e) == PSC_OK &&
		      known->banned;
	free(known);
	if (banned) {
		refuse(r, AUD_EV_PEER_INITIALIZE, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_BANNED, NULL,
		       "this Node-ID is banned by the operator");
		return;
	}
	pol_decision d;
	if (!decide(r, POL_ACT_INITIALIZE, NULL, NULL, &d) || d.outcome != POL_PERMIT) {
		refuse(r, AUD_EV_PEER_INITIALIZE, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_POLICY_DENIED,
		       &d, "policy denies this peer");
		return;
	}
	uint8_t tkey[KMS_CURVE_KEY_LEN];
	size_t tkey_len = 0;
	if (r->in->user_id[0] && zmq_z85_decode(tkey, r->in->user_id))
		tkey_len = sizeof(tkey);
	uint8_t *der = NULL;
	int der_len = i2d_X509(r->cert, &der);
	kms_cmd up = {.type = KMS_CMD_PEER_UPSERT};
	kms_cmd_peer_upsert *u = &up.peer_upsert;
	memcpy(u->node_id, r->node, PSC_NODE_ID_LEN);
	u->cert_der = (proto_bytes){der, der_len > 0 ? (size_t)der_len : 0};
	memcpy(u->cert_sha256, r->cert_sha256, PSC_HASH_LEN);
	u->subject = (proto_bytes){(const uint8_t *)r->subject, strlen(r->subject)};
	u->endpoint = q->endpoint;
	u->transport_key = (proto_bytes){tkey, tkey_len};
	u->wrap_alg = wrap;
	proto_iter_init(&it, q->suites.raw, q->suites.raw_len);
	while (u->n_suites < KMS_SUITES_MAX && proto_next_u16(&it, &u->suites[u->n_suites]))
		u->n_suites++;
	u->now_ms = k->now_ms;
	psc_rc rc = kmsd_apply(k, &up, &e);
	OPENSSL_free(der);
	if (rc == PSC_OK)
		rc = kmsd_bind(k, r->node, r->in->routing_id, r->in->routing_id_len, r->in->user_id);
	if (rc != PSC_OK) {
		refuse(r, AUD_EV_PEER_INITIALIZE, NULL, PSC_RERR_IN_PROGRESS, PSC_REASON_INTERNAL, &d,
		       "recording the peer failed: %s", psc_err_text(&e));
		return;
	}
	audit_ok(k, AUD_EV_PEER_INITIALIZE, r->request_id, &r->actor, NULL, false, 0, &d, NULL, 0);

	psc_body body = {.code = PSC_MSG_INITIALIZE_ANS};
	psc_initialize_ans *a = &body.u.initialize_ans;
	a->kms_time = k->now_ms;
	a->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	a->wrap_alg = wrap;
	a->join.status = PSC_STATUS_NOT_REQUESTED;
	a->establish.status = PSC_STATUS_NOT_REQUESTED;
	char join_info[128] = "", est_info[256] = "";
	if (q->flags & PSC_INIT_ESTABLISH) {
		establish_out o;
		establish(r, &q->establish, &o);
		a->establish.status = o.ok ? PSC_STATUS_OK : o.rerr;
		if (!o.ok) {
			aud_decision ad = {.outcome = o.decided ? pol_outcome_name(o.d.outcome) : "error",
					   .rule = o.decided ? decision_rule(&o.d) : NULL,
					   .policy_rev = pol_policy_revision(k->pol)};
			aud_event ev = {.type = AUD_EV_PSC_ESTABLISH, .request_id = r->request_id,
					.actor = &r->actor, .decision = &ad, .result = "denied"};
			(void)!kmsd_audit(k, &ev, &e);
		}
		memcpy(a->establish.psc_id, o.psc_id, PSC_PSC_ID_LEN);
		snprintf(est_info, sizeof(est_info), "%.255s", o.ok ? "" : o.text);
		establish_out_free(&o);
	}
	if (q->flags & PSC_INIT_JOIN) {
		psc_view v;
		pol_decision jd;
		memcpy(a->join.psc_id, q->join_psc, PSC_PSC_ID_LEN);
		if (load_psc(k, q->join_psc, &v) != PSC_OK) {
			a->join.status = PSC_RERR_NOT_FOUND;
			snprintf(join_info, sizeof(join_info), "no such PSC");
		} else if (is_member(k, q->join_psc, r->node)) {
			a->join.status = PSC_STATUS_OK;
		} else if (!decide(r, POL_ACT_JOIN, &v.pp, NULL, &jd) || jd.outcome != POL_PERMIT) {
			/* ask_owner needs an exchange with the owner: PscJoin does that. */
			a->join.status = PSC_RERR_FORBIDDEN;
			snprintf(join_info, sizeof(join_info), "%s",
				 jd.outcome == POL_ASK_OWNER ? "the owner must approve: send PscJoin"
							     : "policy denies joining");
		} else {
			member_set ms = {0};
			kms_wrapped w;
			proto_material mat;
			uint64_t epoch;
			rc = admit(k, &v.psc, r->node, &ms, &w, &mat, &epoch, &e);
			member_set_free(&ms);
			a->join.status = rc == PSC_OK ? PSC_STATUS_OK : PSC_RERR_IN_PROGRESS;
			if (rc == PSC_OK)
				audit_ok(k, AUD_EV_PSC_JOIN, r->request_id, &r->actor, q->join_psc,
					 true, epoch, &jd, NULL, 0);
			else
				snprintf(join_info, sizeof(join_info), "%s", psc_err_text(&e));
		}
	}
	a->join.info = (proto_bytes){(const uint8_t *)join_info, strlen(join_info)};
	a->establish.info = (proto_bytes){(const uint8_t *)est_info, strlen(est_info)};
	kms_peer *me = malloc(sizeof(*me));
	memberships ms = {0};
	if (me && kms_store_peer_get(k->store, r->node, me, &e) == PSC_OK &&
	    memberships_load(k, me, &ms, 256) == PSC_OK) {
		a->memberships.items = ms.mats;
		a->memberships.n = ms.n;
	}
	reply(r, &body);
	memberships_free(&ms);
	free(me);
}

static void on_catchup(req *r)
{
	kmsd *k = r->k;
	const psc_catchup_req *q = &r->b.u.catchup_req;
	size_t n_held = q->held.n;
	memberships ms = {0};
	uint8_t(*held_ids)[PSC_PSC_ID_LEN] = calloc(n_held ? n_held : 1, PSC_PSC_ID_LEN);
	proto_catchup_entry *entries = calloc(n_held + 256, sizeof(*entries));
	if (!held_ids || !entries) {
		free(held_ids);
		free(entries);
		refuse(r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_IN_PROGRESS, PSC_REASON_BUSY, NULL,
		       "out of memory");
		return;
	}
	size_t n = 0;
	proto_iter it;
	proto_held h;
	proto_iter_init(&it, q->held.raw, q->held.raw_len);
	for (size_t i = 0; proto_next_held(&it, &h); i++) {
		memcpy(held_ids[i], h.psc_id, PSC_PSC_ID_LEN);
		kms_psc p;
		psc_err e;
		proto_catchup_entry *en = &entries[n];
		memcpy(en->psc_id, h.psc_id, PSC_PSC_ID_LEN);
		if (kms_store_psc_get(k->store, h.psc_id, &p, &e) != PSC_OK) {
			en->status = PSC_CATCHUP_NOT_MEMBER;
		} else if (p.destroyed) {
			en->status = PSC_CATCHUP_DESTROYED;
			en->epoch = p.epoch;
		} else if (!is_member(k, h.psc_id, r->node)) {
			en->status = PSC_CATCHUP_NOT_MEMBER;
			en->epoch = p.epoch;
		} else {
			en->status = PSC_CATCHUP_CURRENT;
			en->epoch = p.epoch;
			if (p.epoch <= h.epoch) {
				n++;
				continue;
			}
			/* newer: served from the membership list below */
			continue;
		}
		n++;
	}
	/* Every membership with a newer epoch than held (and those not listed). */
	ms.skip = NULL;
	psc_err e;
	if (memberships_load(k, r->peer, &ms, n_held + 256) == PSC_OK) {
		for (size_t i = 0; i < ms.n; i++) {
			bool listed_current = false;
			for (size_t j = 0; j < n; j++)
				if (entries[j].status == PSC_CATCHUP_CURRENT &&
				    memcmp(entries[j].psc_id, ms.mats[i].psc_id, PSC_PSC_ID_LEN) == 0)
					listed_current = true;
			if (listed_current)
				continue;
			entries[n].status = PSC_CATCHUP_NEWER;
			entries[n].material = ms.mats[i];
			n++;
		}
	}
	(void)e;
	psc_body body = {.code = PSC_MSG_CATCHUP_ANS};
	body.u.catchup_ans.entries.items = entries;
	body.u.catchup_ans.entries.n = n;
	reply(r, &body);
	memberships_free(&ms);
	free(entries);
	free(held_ids);
}

/* ---- answers to the KMS's own requests ----------------------------------- */

static void on_answer(kmsd *k, const kms_inbound *in, const proto_message *m)
{
	kmsd_binding *b = kmsd_binding_by_rid(k, in->routing_id, in->routing_id_len);
	if (!b || strcmp(b->user_id, in->user_id) != 0)
		return; /* answers only count from a bound connection */
	kms_peer *peer = malloc(sizeof(*peer));
	X509 *x = NULL;
	psc_err e;
	if (!peer || kms_store_peer_get(k->store, b->node_id, peer, &e) != PSC_OK ||
	    !proto_message_signed_by(m, peer->cert_der, peer->cert_der_len) ||
	    proto_cert_parse(peer->cert_der, peer->cert_der_len, &x, &e) != PSC_OK ||
	    proto_message_verify(m, X509_get0_pubkey(x), &e) != PSC_OK) {
		X509_free(x);
		free(peer);
		return; /* an unverifiable answer is no answer: the exchange times out */
	}
	X509_free(x);
	free(peer);
	psc_body body;
	if (m->code == PSC_MSG_ERROR || proto_body_decode(m->code, m->body, m->body_len, &body, &e) != PSC_OK) {
		kmsd_pending *p = kmsd_pending_by_txid(k, m->transaction_id);
		(void)p; /* an error answer is treated like silence: the timeout decides */
		return;
	}
	if (m->code == PSC_MSG_REFRESH_ANS) {
		/* Acks need no pending entry: any signed ack from a member counts. */
		kms_cmd ack = {.type = KMS_CMD_MEMBER_ACK};
		memcpy(ack.member_ack.psc_id, body.u.refresh_ans.psc_id, PSC_PSC_ID_LEN);
		memcpy(ack.member_ack.node_id, b->node_id, PSC_NODE_ID_LEN);
		ack.member_ack.epoch = body.u.refresh_ans.epoch;
		kms_member mem;
		if (kms_store_member_get(k->store, ack.member_ack.psc_id, b->node_id, &mem, &e) ==
			    PSC_OK &&
		    ack.member_ack.epoch > mem.acked_epoch && ack.member_ack.epoch <= mem.psc_epoch)
			(void)!kmsd_apply(k, &ack, &e);
		return;
	}
	kmsd_pending *p = kmsd_pending_by_txid(k, m->transaction_id);
	if (!p || memcmp(p->peer, b->node_id, PSC_NODE_ID_LEN) != 0)
		return;
	switch (p->wait) {
	case KMSD_WAIT_QUERY:
		if (m->code != PSC_MSG_QUERY_ANS)
			return;
		if (body.u.decision_ans.accept) {
			pol_decision d = {.outcome = POL_PERMIT, .revision = pol_policy_revision(k->pol)};
			finish_join(k, &p->origin, p->psc_id, &d);
		} else {
			error_origin(k, &p->origin, PSC_RERR_FORBIDDEN, PSC_REASON_OWNER_DENIED,
				     "the owner refused this join");
			aud_actor actor = {.node_id = p->origin.node_id};
			aud_decision ad = {.outcome = "owner_denied"};
			aud_event ev = {.type = AUD_EV_PSC_JOIN, .request_id = p->origin.request_id,
					.actor = &actor, .psc_id = p->psc_id, .decision = &ad,
					.result = "denied: the owner refused"};
			(void)!kmsd_audit(k, &ev, &e);
		}
		break;
	case KMSD_WAIT_INVITE: {
		if (m->code != PSC_MSG_INVITE_ANS)
			return;
		psc_body ans = {.code = PSC_MSG_INVITE_INIT_ANS};
		ans.u.invite_init_ans.outcome = PSC_INVITE_DECLINED;
		psc_view v;
		if (body.u.decision_ans.accept && load_psc(k, p->psc_id, &v) == PSC_OK) {
			kms_cmd add = {.type = KMS_CMD_MEMBER_ADD};
			memcpy(add.member_add.psc_id, p->psc_id, PSC_PSC_ID_LEN);
			memcpy(add.member_add.node_id, p->subject, PSC_NODE_ID_LEN);
			add.member_add.now_ms = k->now_ms;
			kms_psc now;
			uint64_t epoch = 0;
			if (kmsd_apply(k, &add, &e) == PSC_OK &&
			    kms_store_psc_get(k->store, p->psc_id, &now, &e) == PSC_OK &&
			    rekey(k, &now, PSC_REFRESH_JOIN, k->cfg->timers.old_epoch_grace_ms, NULL,
				  NULL, NULL, NULL, &epoch, &e) == PSC_OK) {
				ans.u.invite_init_ans.outcome = PSC_INVITE_ACCEPTED;
				ans.u.invite_init_ans.epoch = epoch;
				aud_actor actor = {.node_id = p->subject};
				audit_ok(k, AUD_EV_PSC_JOIN, p->origin.request_id, &actor, p->psc_id,
					 true, epoch, NULL, NULL, 0);
			} else {
				error_origin(k, &p->origin, PSC_RERR_IN_PROGRESS, PSC_REASON_INTERNAL,
					     psc_err_text(&e));
				break;
			}
		}
		reply_origin(k, &p->origin, &ans);
		break;
	}
	case KMSD_WAIT_LIVENESS: {
		if (m->code != PSC_MSG_LIVENESS_ANS || body.u.liveness.challenge != p->challenge)
			return;
		psc_body ans = {.code = PSC_MSG_DEPARTURE_ANS};
		ans.u.departure_ans.outcome = PSC_DEPARTURE_ALIVE;
		reply_origin(k, &p->origin, &ans);
		break;
	}
	default:
		return;
	}
	kmsd_pending_drop(p);
}

/* ---- entry points --------------------------------------------------------- */

void kmsd_handle(kmsd *k, const kms_inbound *in)
{
	if (in->limited)
		return; /* counted by kms_net; a flood is not answered */
	req r;
	memset(&r, 0, sizeof(r));
	r.k = k;
	r.in = in;
	snprintf(r.request_id, sizeof(r.request_id), "%llx-%llu",
		 (unsigned long long)k->started_ms, (unsigned long long)++k->request_seq);
	psc_err e;
	if (proto_message_decode(in->data, in->len, &r.m, &e) != PSC_OK) {
		raw_error(k, in, e.rc == PSC_E_UNKNOWN_EXT ? PSC_RERR_UNKNOWN_EXTENSION
			  : e.rc == PSC_E_FORWARDING_OPTION ? PSC_RERR_UNSUPPORTED_FORWARDING_OPTION
							    : PSC_RERR_INVALID_MESSAGE,
			  psc_err_text(&e));
		return;
	}
	if (r.m.overlay != k->overlay_hash) {
		(void)!kmsd_queue_error(k, in->routing_id, in->routing_id_len, r.m.transaction_id,
					PSC_RERR_INCOMPATIBLE_WITH_OVERLAY, PSC_REASON_MALFORMED,
					"message for another overlay");
		return;
	}
	if (!(r.m.code & 1) || r.m.code == PSC_MSG_ERROR) {
		on_answer(k, in, &r.m);
		return;
	}
	switch (r.m.code) {
	case PSC_MSG_QUERY_REQ:
	case PSC_MSG_INVITE_REQ:
	case PSC_MSG_REFRESH_REQ:
	case PSC_MSG_LIVENESS_REQ:
		(void)!kmsd_queue_error(k, in->routing_id, in->routing_id_len, r.m.transaction_id,
					PSC_RERR_FORBIDDEN, PSC_REASON_MALFORMED,
					"only the KMS sends this request");
		return;
	default:
		break;
	}
	if (!proto_msg_name(r.m.code)) {
		(void)!kmsd_queue_error(k, in->routing_id, in->routing_id_len, r.m.transaction_id,
					PSC_RERR_INVALID_MESSAGE, PSC_REASON_MALFORMED,
					"unknown message code");
		return;
	}
	if (!authenticate(&r))
		goto done;
	if (proto_body_decode(r.m.code, r.m.body, r.m.body_len, &r.b, &e) != PSC_OK) {
		refuse(&r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_INVALID_MESSAGE, PSC_REASON_MALFORMED,
		       NULL, "%s", psc_err_text(&e));
		goto done;
	}
	uint64_t window = (uint64_t)k->cfg->timers.freshness_window_s * 1000;
	if (kms_fresh(proto_body_timestamp(&r.b), k->now_ms, window, k->started_ms, &e) != PSC_OK) {
		refuse(&r, AUD_EV_REQUEST_DENY, NULL, PSC_RERR_FORBIDDEN, PSC_REASON_STALE_TIMESTAMP,
		       NULL, "%s", psc_err_text(&e));
		goto done;
	}
	psc_rc rc = kms_replay_check(k->replay, r.m.identity_hash, r.m.transaction_id, k->now_ms);
	if (rc != PSC_OK) {
		refuse(&r, AUD_EV_REQUEST_DENY, NULL,
		       rc == PSC_E_KMSD_REPLAY ? PSC_RERR_FORBIDDEN : PSC_RERR_IN_PROGRESS,
		       rc == PSC_E_KMSD_REPLAY ? PSC_REASON_REPLAYED : PSC_REASON_BUSY, NULL,
		       "%s", rc == PSC_E_KMSD_REPLAY ? "this transaction was already seen"
						     : "replay cache full: retry later");
		goto done;
	}
	if (aud_log_failed(k->audit) && r.m.code != PSC_MSG_LOOKUP_REQ &&
	    r.m.code != PSC_MSG_CATCHUP_REQ) {
		(void)!kmsd_queue_error(k, in->routing_id, in->routing_id_len, r.m.transaction_id,
					PSC_RERR_IN_PROGRESS, PSC_REASON_AUDIT_UNAVAILABLE,
					"the audit log cannot record key events: retry later");
		goto done;
	}
	switch (r.m.code) {
	case PSC_MSG_INITIALIZE_REQ: on_initialize(&r); break;
	case PSC_MSG_ESTABLISH_REQ: on_establish(&r); break;
	case PSC_MSG_JOIN_REQ: on_join(&r); break;
	case PSC_MSG_INVITE_INIT_REQ: on_invite_init(&r); break;
	case PSC_MSG_LEAVE_REQ: on_leave(&r); break;
	case PSC_MSG_DEPARTURE_REQ: on_departure(&r); break;
	case PSC_MSG_DESTROY_REQ: on_destroy(&r); break;
	case PSC_MSG_LOOKUP_REQ: on_lookup(&r); break;
	case PSC_MSG_CATCHUP_REQ: on_catchup(&r); break;
	default: break;
	}
done:
	req_free(&r);
}

/* ---- CRL reload: revoked members are evicted and their PSCs rekeyed ------ */

typedef struct revoked_list {
	kmsd *k;
	uint8_t (*nodes)[PSC_NODE_ID_LEN];
	size_t n, cap;
} revoked_list;

static int find_revoked(void *arg, const kms_peer *p)
{
	revoked_list *r = arg;
	X509 *x = NULL;
	if (proto_cert_parse(p->cert_der, p->cert_der_len, &x, NULL) != PSC_OK)
		return 0;
	int revoked = kms_trust_is_revoked(r->k->trust, x);
	X509_free(x);
	if (!revoked)
		return 0;
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		void *a = realloc(r->nodes, cap * PSC_NODE_ID_LEN);
		if (!a)
			return 1;
		r->nodes = a;
		r->cap = cap;
	}
	memcpy(r->nodes[r->n++], p->node_id, PSC_NODE_ID_LEN);
	return 0;
}

static int collect_pscs(void *arg, const kms_member *m)
{
	revoked_list *r = arg; /* reused as a list of PSC ids */
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		void *a = realloc(r->nodes, cap * PSC_PSC_ID_LEN);
		if (!a)
			return 1;
		r->nodes = a;
		r->cap = cap;
	}
	memcpy(r->nodes[r->n++], m->psc_id, PSC_PSC_ID_LEN);
	return 0;
}

/* Removes a revoked peer from every PSC it is in (forward secrecy rekey each),
 * tells it so, and forgets its connection. */
void kmsd_evict_everywhere(kmsd *k, const uint8_t node[PSC_NODE_ID_LEN], const char *why)
{
	psc_err e;
	revoked_list pscs = {.k = k};
	if (kms_store_pscs_of_node(k->store, node, collect_pscs, &pscs, &e) != PSC_OK) {
		free(pscs.nodes);
		return;
	}
	char hex[33];
	proto_id_hex(node, hex);
	for (size_t i = 0; i < pscs.n; i++) {
		psc_view v;
		uint64_t epoch = 0;
		if (load_psc(k, pscs.nodes[i], &v) != PSC_OK)
			continue;
		psc_rc rc = remove_member(k, &v.psc, node, PSC_REFRESH_EVICT, &epoch, &e);
		if (rc != PSC_OK)
			continue;
		notify_gone(k, node, v.psc.psc_id, v.psc.epoch, PSC_REFRESH_REMOVED);
		aud_kv kv[2] = {{.key = "evicted", .str = hex}, {.key = "reason", .str = why}};
		audit_ok(k, AUD_EV_PSC_EVICT, NULL, NULL, v.psc.psc_id, true, epoch, NULL, kv, 2);
	}
	free(pscs.nodes);
	kmsd_binding *b = kmsd_binding_by_node(k, node);
	if (b)
		b->used = false; /* its next request must Initialize, and will be refused */
}

static void reload_crl(kmsd *k)
{
	psc_err e;
	kms_trust *fresh = NULL;
	if (!k->cfg->trust.crl_file[0])
		return;
	if (kms_trust_new(&fresh, k->cfg->trust.ca_file, k->cfg->trust.crl_file, &e) != PSC_OK) {
		/* Keep the trust store we have: a broken file must not open the door. */
		fprintf(stderr, "psc-kmsd: CRL reload failed, keeping the previous CRL: %s\n",
			psc_err_text(&e));
		return;
	}
	kms_trust_free(&k->trust);
	k->trust = fresh;
	revoked_list r = {.k = k};
	if (kms_store_peer_foreach(k->store, find_revoked, &r, &e) == PSC_OK)
		for (size_t i = 0; i < r.n; i++)
			kmsd_evict_everywhere(k, r.nodes[i], "certificate revoked (CRL)");
	free(r.nodes);
}

static int collect_due(void *arg, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t due_ms)
{
	(void)due_ms;
	uint8_t(*ids)[PSC_PSC_ID_LEN + 1] = arg;
	size_t n = ids[0][0];
	if (n >= TIMER_REKEYS_PER_TURN)
		return 1;
	memcpy(ids[1 + n], psc_id, PSC_PSC_ID_LEN);
	ids[0][0] = (uint8_t)(n + 1);
	return 0;
}

void kmsd_timers(kmsd *k)
{
	psc_err e;
	for (size_t i = 0; i < KMSD_MAX_PENDING; i++) {
		kmsd_pending *p = &k->pend[i];
		if (!p->used || p->deadline_ms > k->now_ms)
			continue;
		switch (p->wait) {
		case KMSD_WAIT_QUERY:
			error_origin(k, &p->origin, PSC_RERR_REQUEST_TIMEOUT, PSC_REASON_OWNER_TIMEOUT,
				     "the owner did not answer in time: join denied");
			break;
		case KMSD_WAIT_INVITE: {
			psc_body ans = {.code = PSC_MSG_INVITE_INIT_ANS};
			ans.u.invite_init_ans.outcome = PSC_INVITE_TIMEOUT;
			reply_origin(k, &p->origin, &ans);
			break;
		}
		case KMSD_WAIT_LIVENESS: {
			psc_view v;
			uint64_t epoch = 0;
			psc_body ans = {.code = PSC_MSG_DEPARTURE_ANS};
			ans.u.departure_ans.outcome = PSC_DEPARTURE_EVICTED;
			if (load_psc(k, p->psc_id, &v) == PSC_OK && is_member(k, p->psc_id, p->subject)) {
				if (remove_member(k, &v.psc, p->subject, PSC_REFRESH_EVICT, &epoch, &e) !=
				    PSC_OK) {
					error_origin(k, &p->origin, PSC_RERR_IN_PROGRESS,
						     PSC_REASON_INTERNAL, psc_err_text(&e));
					break;
				}
				notify_gone(k, p->subject, p->psc_id, v.psc.epoch, PSC_REFRESH_REMOVED);
				aud_actor actor = {.node_id = p->origin.node_id};
				aud_kv kv[1] = {{.key = "evicted", .str = NULL, .num = 0}};
				char hex[33];
				proto_id_hex(p->subject, hex);
				kv[0].str = hex;
				audit_ok(k, AUD_EV_PSC_EVICT, p->origin.request_id, &actor, p->psc_id,
					 true, epoch, NULL, kv, 1);
			}
			reply_origin(k, &p->origin, &ans);
			break;
		}
		default:
			break;
		}
		kmsd_pending_drop(p);
	}
	if (k->cfg->trust.crl_reload_s && k->now_ms >= k->crl_next_reload_ms &&
	    !aud_log_failed(k->audit)) {
		k->crl_next_reload_ms = k->now_ms + (uint64_t)k->cfg->trust.crl_reload_s * 1000;
		reload_crl(k);
	}
	/* Timer rekeys, a bounded number per turn so the loop stays responsive. */
	uint8_t ids[1 + TIMER_REKEYS_PER_TURN][PSC_PSC_ID_LEN + 1];
	ids[0][0] = 0;
	if (!aud_log_failed(k->audit) &&
	    kms_store_refresh_due(k->store, k->now_ms, collect_due, ids, &e) == PSC_OK) {
		for (size_t i = 0; i < ids[0][0]; i++) {
			psc_view v;
			uint64_t epoch;
			if (load_psc(k, ids[1 + i], &v) == PSC_OK)
				(void)!rekey(k, &v.psc, PSC_REFRESH_TIMER, k->cfg->timers.old_epoch_grace_ms,
					     NULL, NULL, NULL, NULL, &epoch, &e);
		}
	}
}

uint64_t kmsd_next_deadline(kmsd *k)
{
	uint64_t next = k->cfg->trust.crl_reload_s ? k->crl_next_reload_ms : 0;
	for (size_t i = 0; i < KMSD_MAX_PENDING; i++)
		if (k->pend[i].used && (!next || k->pend[i].deadline_ms < next))
			next = k->pend[i].deadline_ms;
	uint64_t due;
	bool found = false;
	psc_err e;
	if (kms_store_next_refresh(k->store, &due, &found, &e) == PSC_OK && found &&
	    (!next || due < next))
		next = due;
	return next;
}

/* ---- operator hooks (kms_admin.c) ---------------------------------------- */


size_t kmsd_rekey_restored(kmsd *k)
{
	psc_err e;
	uint8_t ids[1 + TIMER_REKEYS_PER_TURN][PSC_PSC_ID_LEN + 1];
	ids[0][0] = 0;
	if (aud_log_failed(k->audit) ||
	    kms_store_restore_due(k->store, collect_due, ids, &e) != PSC_OK)
		return 0;
	for (size_t i = 0; i < ids[0][0]; i++) {
		psc_view v;
		uint64_t epoch;
		if (load_psc(k, ids[1 + i], &v) != PSC_OK)
			continue;
		if (rekey(k, &v.psc, PSC_REFRESH_RESTORE, 0, NULL, NULL, NULL, NULL, &epoch, &e) !=
		    PSC_OK)
			fprintf(stderr, "psc-kmsd: rekey after restore failed (retried): %s\n",
				psc_err_text(&e));
	}
	return ids[0][0];
}

psc_rc kmsd_destroy_by_operator(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_psc *out,
				psc_err *err)
{
	psc_view v;
	if (load_psc(k, psc_id, &v) != PSC_OK)
		return psc_err_set(err, PSC_E_KMS_UNKNOWN_PSC, "no live PSC with that id");
	*out = v.psc;
	return destroy_psc(k, &v.psc, NULL, err);
}
