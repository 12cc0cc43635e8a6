/*
 * psc_flows — the requests a peer makes (docs/protocol.md §7, §10): build the
 * body, run it through psc_sdk_request(), apply what the answer carries.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "proto_cert.h"
#include "psc_peer_int.h"

static psc_rc check_peer(psc_peer *p, psc_err *err)
{
	if (!p)
		return psc_err_set(err, PSC_E_INVALID_ARG, "peer is NULL");
	return PSC_OK;
}

static void hex(const uint8_t *id, char out[33])
{
	proto_id_hex(id, out);
}

/* EstablishParams from the public struct; *labels_out is malloc'd. */
static psc_rc make_params(const psc_peer_establish_params *in, proto_establish_params *out,
			  proto_label **labels_out, psc_err *err)
{
	memset(out, 0, sizeof(*out));
	*labels_out = NULL;
	size_t nl = in->name ? strlen(in->name) : 0;
	if (nl < 1 || nl > PSC_MAX_NAME)
		return psc_err_set(err, PSC_E_INVALID_ARG, "PSC name must be 1..%d bytes",
				   PSC_MAX_NAME);
	if (in->n_labels > PSC_MAX_LABELS)
		return psc_err_set(err, PSC_E_INVALID_ARG, "%zu labels; at most %d", in->n_labels,
				   PSC_MAX_LABELS);
	if (in->n_members > PSC_MAX_MEMBERS_WIRE || (in->n_members && !in->members))
		return psc_err_set(err, PSC_E_INVALID_ARG, "initial member list is invalid");
	out->name = (proto_bytes){(const uint8_t *)in->name, nl};
	if (in->n_labels) {
		if (!in->labels)
			return psc_err_set(err, PSC_E_INVALID_ARG, "labels is NULL");
		proto_label *l = calloc(in->n_labels, sizeof(*l));
		if (!l)
			return psc_err_set(err, PSC_E_NOMEM, "out of memory");
		for (size_t i = 0; i < in->n_labels; i++) {
			const char *k = in->labels[i].key, *v = in->labels[i].value;
			size_t kl = k ? strlen(k) : 0, vl = v ? strlen(v) : 0;
			if (kl < 1 || kl > PSC_MAX_LABEL_KEY || vl > PSC_MAX_LABEL_VALUE) {
				free(l);
				return psc_err_set(err, PSC_E_INVALID_ARG,
						   "label %zu: key must be 1..%d bytes, value at "
						   "most %d",
						   i, PSC_MAX_LABEL_KEY, PSC_MAX_LABEL_VALUE);
			}
			l[i].key = (proto_bytes){(const uint8_t *)k, kl};
			l[i].value = (proto_bytes){(const uint8_t *)(v ? v : ""), vl};
		}
		out->labels.items = l;
		out->labels.n = in->n_labels;
		*labels_out = l;
	}
	out->members.items = (const proto_node_id_t *)in->members;
	out->members.n = in->n_members;
	out->refresh_s = in->refresh_s;
	out->max_members = in->max_members;
	out->flags = in->sender_signatures ? PSC_FLAG_SENDER_SIGNATURES : 0;
	return PSC_OK;
}

static void fill_outcome(psc_peer_outcome *o, int requested, const proto_outcome *in)
{
	memset(o, 0, sizeof(*o));
	o->requested = requested;
	o->status = in->status;
	memcpy(o->psc_id, in->psc_id, PSC_PSC_ID_LEN);
	psc_sdk_copy_text(o->info, sizeof(o->info), in->info.p, in->info.len);
}

psc_rc psc_peer_initialize(psc_peer *p, const psc_peer_init_options *opts,
			   psc_peer_init_result *res, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	static const uint16_t suites[] = {PSC_SUITE_AES256GCM_HKDF_SHA256};
	/* What our key can unwrap, best first (docs/protocol.md §6.1). */
	static const uint8_t ec_algs[] = {PSC_WRAP_ECDH_P256_AESPRF_KWP};
	static const uint8_t rsa_algs[] = {PSC_WRAP_RSA_OAEP_SHA256, PSC_WRAP_RSA_OAEP_SHA1};
	psc_body b = {.code = PSC_MSG_INITIALIZE_REQ};
	psc_initialize_req *r = &b.u.initialize_req;
	memcpy(r->node_id, p->node_id, PSC_NODE_ID_LEN);
	r->suites.items = suites;
	r->suites.n = 1;
	r->wrap_algs.items = p->key_is_rsa ? rsa_algs : ec_algs;
	r->wrap_algs.n = p->key_is_rsa ? 2 : 1;
	r->endpoint = (proto_bytes){(const uint8_t *)p->data_endpoint, strlen(p->data_endpoint)};
	proto_label *labels = NULL;
	if (opts && opts->join_psc) {
		r->flags |= PSC_INIT_JOIN;
		memcpy(r->join_psc, opts->join_psc, PSC_PSC_ID_LEN);
	}
	if (opts && opts->establish) {
		rc = make_params(opts->establish, &r->establish, &labels, err);
		if (rc != PSC_OK)
			return rc;
		r->flags |= PSC_INIT_ESTABLISH;
	}
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_INITIALIZE_ANS, &a, err);
	free(labels);
	if (rc != PSC_OK)
		return rc;
	const psc_initialize_ans *ia = &a.body.u.initialize_ans;
	p->initialized = 1;
	p->registered = 1;
	p->need_reinit = 0;
	p->last_kms_time = ia->kms_time;

	size_t n = 0;
	proto_iter it;
	proto_material m;
	proto_iter_init(&it, ia->memberships.raw, ia->memberships.raw_len);
	while (proto_next_material(&it, &m)) {
		int applied = 0;
		psc_err e;
		if (psc_sdk_apply_material(p, &m, PSC_PEER_REASON_ANSWER, &applied, &e) != PSC_OK)
			psc_sdk_report(p, &e);
		n++;
	}
	if (res) {
		memset(res, 0, sizeof(*res));
		res->kms_time = ia->kms_time;
		res->clock_skew_ms = (int64_t)(ia->kms_time - psc_sdk_wall_ms());
		res->suite = ia->suite;
		res->wrap_alg = ia->wrap_alg;
		fill_outcome(&res->join, opts && opts->join_psc, &ia->join);
		fill_outcome(&res->establish, opts && opts->establish, &ia->establish);
		res->n_memberships = n;
	}
	psc_answer_clear(&a);
	return PSC_OK;
}

/* Applies material from an answer; an answer whose key we cannot use fails. */
static psc_rc apply_answer(psc_peer *p, const proto_material *m, psc_peer_reason reason,
			   psc_err *err)
{
	int applied = 0;
	return psc_sdk_apply_material(p, m, reason, &applied, err);
}

psc_rc psc_peer_establish(psc_peer *p, const psc_peer_establish_params *params,
			  uint8_t psc_id_out[PSC_PEER_ID_LEN], uint64_t *epoch_out,
			  size_t *n_pending, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (!params || !psc_id_out)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "establish: params and psc_id_out needed");
	psc_body b = {.code = PSC_MSG_ESTABLISH_REQ};
	proto_label *labels = NULL;
	rc = make_params(params, &b.u.establish_req.params, &labels, err);
	if (rc != PSC_OK)
		return rc;
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_ESTABLISH_ANS, &a, err);
	free(labels);
	if (rc != PSC_OK)
		return rc;
	const psc_establish_ans *ea = &a.body.u.establish_ans;
	rc = apply_answer(p, &ea->material, PSC_PEER_REASON_ESTABLISH, err);
	if (rc == PSC_OK) {
		memcpy(psc_id_out, ea->material.psc_id, PSC_PSC_ID_LEN);
		if (epoch_out)
			*epoch_out = ea->material.epoch;
		if (n_pending)
			*n_pending = ea->pending.n;
	}
	psc_answer_clear(&a);
	return rc;
}

psc_rc psc_peer_join(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], uint64_t *epoch_out,
		     psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (!psc_id)
		return psc_err_set(err, PSC_E_INVALID_ARG, "join: psc_id is NULL");
	psc_body b = {.code = PSC_MSG_JOIN_REQ};
	memcpy(b.u.psc_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_JOIN_ANS, &a, err);
	if (rc != PSC_OK)
		return rc;
	const proto_material *m = &a.body.u.join_ans.material;
	if (memcmp(m->psc_id, psc_id, PSC_PSC_ID_LEN) != 0) {
		char want[33], got[33];
		hex(psc_id, want);
		hex(m->psc_id, got);
		rc = psc_err_set(err, PSC_E_PEER_BAD_ANSWER,
				 "KMS answered PscJoin for PSC %s with material of PSC %s", want,
				 got);
	} else {
		rc = apply_answer(p, m, PSC_PEER_REASON_JOIN, err);
		if (rc == PSC_OK && epoch_out)
			*epoch_out = psc_store_held_epoch(p->store, psc_id);
	}
	psc_answer_clear(&a);
	return rc;
}

psc_rc psc_peer_lookup(psc_peer *p, const char *name, psc_peer_lookup_result *out, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	size_t nl = name ? strlen(name) : 0;
	if (nl < 1 || nl > PSC_MAX_NAME || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "lookup: name must be 1..%d bytes",
				   PSC_MAX_NAME);
	psc_body b = {.code = PSC_MSG_LOOKUP_REQ};
	b.u.lookup_req.name = (proto_bytes){(const uint8_t *)name, nl};
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_LOOKUP_ANS, &a, err);
	if (rc != PSC_OK)
		return rc;
	memcpy(out->psc_id, a.body.u.lookup_ans.psc_id, PSC_PSC_ID_LEN);
	memcpy(out->owner, a.body.u.lookup_ans.owner, PSC_NODE_ID_LEN);
	out->member_count = a.body.u.lookup_ans.member_count;
	psc_answer_clear(&a);
	return PSC_OK;
}

psc_rc psc_peer_invite(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
		       const uint8_t invitee[PSC_PEER_ID_LEN], psc_peer_invite_outcome *outcome,
		       uint64_t *epoch_out, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (!psc_id || !invitee || !outcome)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "invite: psc_id, invitee, outcome needed");
	psc_body b = {.code = PSC_MSG_INVITE_INIT_REQ};
	memcpy(b.u.invite_init_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	memcpy(b.u.invite_init_req.invitee, invitee, PSC_NODE_ID_LEN);
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_INVITE_INIT_ANS, &a, err);
	if (rc != PSC_OK)
		return rc;
	*outcome = (psc_peer_invite_outcome)a.body.u.invite_init_ans.outcome;
	if (epoch_out)
		*epoch_out = a.body.u.invite_init_ans.epoch;
	psc_answer_clear(&a);
	return PSC_OK;
}

/* Leave and Destroy: same body, empty answer, then forget the PSC here. */
static psc_rc psc_request_and_forget(psc_peer *p, uint16_t code,
				     const uint8_t psc_id[PSC_PEER_ID_LEN], psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (!psc_id)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_id is NULL");
	psc_body b = {.code = code};
	memcpy(b.u.psc_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	psc_answer a;
	rc = psc_sdk_request(p, &b, (uint16_t)(code + 1), &a, err);
	if (rc != PSC_OK)
		return rc;
	psc_answer_clear(&a);
	psc_sdk_forget(
	    p, psc_id, psc_store_held_epoch(p->store, psc_id),
	    code == PSC_MSG_LEAVE_REQ ? PSC_PEER_REASON_LEAVE : PSC_PEER_REASON_DESTROYED, 0);
	return PSC_OK;
}

psc_rc psc_peer_leave(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], psc_err *err)
{
	return psc_request_and_forget(p, PSC_MSG_LEAVE_REQ, psc_id, err);
}

psc_rc psc_peer_destroy(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], psc_err *err)
{
	return psc_request_and_forget(p, PSC_MSG_DESTROY_REQ, psc_id, err);
}

psc_rc psc_peer_report_departure(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
				 const uint8_t suspect[PSC_PEER_ID_LEN],
				 psc_peer_departure_outcome *outcome, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (!psc_id || !suspect || !outcome)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "report_departure: psc_id, suspect, outcome needed");
	psc_body b = {.code = PSC_MSG_DEPARTURE_REQ};
	memcpy(b.u.departure_req.psc_id, psc_id, PSC_PSC_ID_LEN);
	memcpy(b.u.departure_req.suspect, suspect, PSC_NODE_ID_LEN);
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_DEPARTURE_ANS, &a, err);
	if (rc != PSC_OK)
		return rc;
	*outcome = (psc_peer_departure_outcome)a.body.u.departure_ans.outcome;
	psc_answer_clear(&a);
	return PSC_OK;
}

psc_rc psc_peer_catchup(psc_peer *p, psc_peer_catchup_result *res, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	psc_peer_catchup_result r = {0};
	size_t n = psc_store_count(p->store);
	proto_held *held = calloc(n ? n : 1, sizeof(*held));
	if (!held)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const psc_entry *e = psc_store_at(p->store, i);
		memcpy(held[i].psc_id, e->id, PSC_PSC_ID_LEN);
		held[i].epoch = e->cur.epoch;
	}
	psc_body b = {.code = PSC_MSG_CATCHUP_REQ};
	b.u.catchup_req.held.items = held;
	b.u.catchup_req.held.n = n;
	psc_answer a;
	rc = psc_sdk_request(p, &b, PSC_MSG_CATCHUP_ANS, &a, err);
	free(held);
	if (rc != PSC_OK)
		return rc;
	proto_iter it;
	proto_catchup_entry ce;
	const proto_catchups *es = &a.body.u.catchup_ans.entries;
	proto_iter_init(&it, es->raw, es->raw_len);
	while (proto_next_catchup(&it, &ce)) {
		switch (ce.status) {
		case PSC_CATCHUP_NEWER: {
			int applied = 0;
			psc_err e;
			if (psc_sdk_apply_material(p, &ce.material, PSC_PEER_REASON_CATCHUP,
						   &applied, &e) != PSC_OK) {
				psc_sdk_report(p, &e);
				r.failed++;
			} else if (applied) {
				r.updated++;
			} else {
				r.current++;
			}
			break;
		}
		case PSC_CATCHUP_CURRENT:
			r.current++;
			break;
		case PSC_CATCHUP_DESTROYED:
		case PSC_CATCHUP_NOT_MEMBER:
			psc_sdk_forget(p, ce.psc_id, ce.epoch,
				       ce.status == PSC_CATCHUP_DESTROYED
					   ? PSC_PEER_REASON_DESTROYED
					   : PSC_PEER_REASON_REMOVED,
				       1);
			r.gone++;
			break;
		default:
			break;
		}
	}
	psc_answer_clear(&a);
	if (res)
		*res = r;
	return PSC_OK;
}

psc_rc psc_sdk_reinit(psc_peer *p, psc_err *err)
{
	p->in_reinit = 1;
	p->initialized = 0;
	psc_rc rc = psc_peer_initialize(p, NULL, NULL, err);
	if (rc == PSC_OK)
		rc = psc_peer_catchup(p, NULL, err);
	p->in_reinit = 0;
	if (rc == PSC_OK) {
		p->need_reinit = 0;
		if (p->cb.on_reconnect)
			p->cb.on_reconnect(p->user);
	} else {
		/* Do not hammer a KMS that is down: the event loop retries later. */
		p->need_reinit = 1;
		p->reinit_after = psc_sdk_mono_ms() + PSC_PEER_REINIT_BACKOFF_MS;
	}
	return rc;
}

psc_rc psc_peer_reconnect(psc_peer *p, psc_err *err)
{
	psc_rc rc = check_peer(p, err);
	if (rc != PSC_OK)
		return rc;
	if (p->in_request || p->in_process)
		return psc_err_set(err, PSC_E_PEER_BUSY,
				   "psc_peer_reconnect must not be called from a callback");
	psc_sdk_disconnect(p);
	rc = psc_sdk_connect(p, err);
	if (rc != PSC_OK)
		return rc;
	return psc_sdk_reinit(p, err);
}
