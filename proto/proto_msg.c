#include "proto_msg.h"

#include <stdlib.h>
#include <string.h>

/* ---- item codecs -------------------------------------------------------- */

typedef void (*item_wr_fn)(proto_wr *w, const void *item);
typedef void (*item_rd_fn)(proto_rd *r, void *item);

static void wr_bytes(proto_wr *w, unsigned prefix, size_t min, size_t max, proto_bytes b,
		     const char *field)
{
	proto_wr_vec(w, prefix, min, max, b.p, b.len, field);
}

static proto_bytes rd_bytes(proto_rd *r, unsigned prefix, size_t min, size_t max,
			    const char *field)
{
	proto_bytes b;
	b.p = proto_rd_vec(r, prefix, min, max, &b.len, field);
	return b;
}

static void wr_u16_item(proto_wr *w, const void *item)
{
	proto_wr_u16(w, *(const uint16_t *)item);
}

static void rd_u16_item(proto_rd *r, void *item)
{
	*(uint16_t *)item = proto_rd_u16(r, "suite");
}

static void wr_u8_item(proto_wr *w, const void *item)
{
	proto_wr_u8(w, *(const uint8_t *)item);
}

static void rd_u8_item(proto_rd *r, void *item)
{
	*(uint8_t *)item = proto_rd_u8(r, "wrap_alg");
}

static void wr_label(proto_wr *w, const void *item)
{
	const proto_label *l = item;
	wr_bytes(w, 1, 1, PSC_MAX_LABEL_KEY, l->key, "label.key");
	wr_bytes(w, 1, 0, PSC_MAX_LABEL_VALUE, l->value, "label.value");
}

static void rd_label(proto_rd *r, void *item)
{
	proto_label *l = item;
	l->key = rd_bytes(r, 1, 1, PSC_MAX_LABEL_KEY, "label.key");
	l->value = rd_bytes(r, 1, 0, PSC_MAX_LABEL_VALUE, "label.value");
}

static void wr_node_id(proto_wr *w, const void *item)
{
	proto_wr_bytes(w, item, PSC_NODE_ID_LEN);
}

static void rd_node_id(proto_rd *r, void *item)
{
	proto_rd_bytes(r, item, PSC_NODE_ID_LEN, "node_id");
}

static void wr_member(proto_wr *w, const void *item)
{
	const proto_member *m = item;
	proto_wr_bytes(w, m->node_id, PSC_NODE_ID_LEN);
	wr_bytes(w, 1, 0, PSC_MAX_ENDPOINT, m->endpoint, "member.endpoint");
}

static void rd_member(proto_rd *r, void *item)
{
	proto_member *m = item;
	proto_rd_bytes(r, m->node_id, PSC_NODE_ID_LEN, "member.node_id");
	m->endpoint = rd_bytes(r, 1, 0, PSC_MAX_ENDPOINT, "member.endpoint");
}

static void wr_held(proto_wr *w, const void *item)
{
	const proto_held *h = item;
	proto_wr_bytes(w, h->psc_id, PSC_PSC_ID_LEN);
	proto_wr_u64(w, h->epoch);
}

static void rd_held(proto_rd *r, void *item)
{
	proto_held *h = item;
	proto_rd_bytes(r, h->psc_id, PSC_PSC_ID_LEN, "held.psc_id");
	h->epoch = proto_rd_u64(r, "held.epoch");
}

/* Lists: `prefix`-byte length, then items back to back. */
static void wr_list(proto_wr *w, unsigned prefix, const void *items, size_t n, size_t item_size,
		    const uint8_t *raw, size_t raw_len, size_t max_n, item_wr_fn fn,
		    const char *field)
{
	if (raw) {
		proto_wr_vec(w, prefix, 0, proto_prefix_max(prefix), raw, raw_len, field);
		return;
	}
	if (n > max_n) {
		proto_wr_fail(w, PSC_E_TOO_LARGE, field);
		return;
	}
	if (n && !items) {
		proto_wr_fail(w, PSC_E_INVALID_ARG, field);
		return;
	}
	size_t m = proto_wr_vec_open(w, prefix);
	for (size_t i = 0; i < n; i++)
		fn(w, (const uint8_t *)items + i * item_size);
	proto_wr_vec_close(w, m, prefix, 0, proto_prefix_max(prefix), field);
}

#define WR_LIST(w, prefix, list, max_n, fn, field)                                         \
	wr_list((w), (prefix), (list).items, (list).n, sizeof(*(list).items), (list).raw,  \
		(list).raw_len, (max_n), (fn), (field))

/* Reads a list into raw + n, validating every item with `fn` into `scratch`. */
static void rd_list(proto_rd *r, unsigned prefix, size_t min_n, size_t max_n, item_rd_fn fn,
		    void *scratch, const uint8_t **raw, size_t *raw_len, size_t *n,
		    const char *field)
{
	proto_rd sub;
	proto_rd_subvec(r, &sub, prefix, 0, proto_prefix_max(prefix), field);
	size_t count = 0;
	while (!sub.err && proto_rd_left(&sub) > 0) {
		if (count == max_n) {
			proto_rd_fail(&sub, PSC_E_TOO_LARGE, field);
			break;
		}
		fn(&sub, scratch);
		count++;
	}
	if (!sub.err && count < min_n)
		proto_rd_fail(&sub, PSC_E_BAD_VALUE, field);
	proto_rd_sub_done(r, &sub);
	*raw = r->err ? NULL : sub.p;
	*raw_len = r->err ? 0 : sub.len;
	*n = r->err ? 0 : count;
}

#define RD_LIST(r, prefix, min_n, max_n, fn, scratch, list, field)                         \
	do {                                                                               \
		(list).items = NULL;                                                       \
		rd_list((r), (prefix), (min_n), (max_n), (fn), (scratch), &(list).raw,     \
			&(list).raw_len, &(list).n, (field));                              \
	} while (0)

static int known_wrap_alg(uint8_t a)
{
	return a == PSC_WRAP_RSA_OAEP_SHA1 || a == PSC_WRAP_RSA_OAEP_SHA256 ||
	       a == PSC_WRAP_ECDH_P256_AESPRF_KWP;
}

static void check_flags(proto_rd *r, uint8_t v, uint8_t allowed, const char *field)
{
	if (v & (uint8_t)~allowed)
		proto_rd_fail(r, PSC_E_BAD_VALUE, field);
}

static void wr_material(proto_wr *w, const void *item)
{
	const proto_material *m = item;
	proto_wr_bytes(w, m->psc_id, PSC_PSC_ID_LEN);
	proto_wr_u64(w, m->epoch);
	wr_bytes(w, 1, 1, PSC_MAX_NAME, m->name, "material.name");
	proto_wr_bytes(w, m->owner, PSC_NODE_ID_LEN);
	proto_wr_u16(w, m->suite);
	proto_wr_u8(w, m->flags);
	proto_wr_u32(w, m->grace_ms);
	proto_wr_u8(w, m->wrap_alg);
	wr_bytes(w, 1, 0, PSC_MAX_EPHEMERAL, m->ephemeral, "material.ephemeral");
	wr_bytes(w, 2, 1, PSC_MAX_WRAPPED, m->wrapped, "material.wrapped");
	proto_wr_u8(w, m->members_full);
	WR_LIST(w, 3, m->members, PSC_MAX_MEMBERS_WIRE, wr_member, "material.members");
}

static void rd_material(proto_rd *r, void *item)
{
	proto_material *m = item;
	proto_member scratch;
	proto_rd_bytes(r, m->psc_id, PSC_PSC_ID_LEN, "material.psc_id");
	m->epoch = proto_rd_u64(r, "material.epoch");
	m->name = rd_bytes(r, 1, 1, PSC_MAX_NAME, "material.name");
	proto_rd_bytes(r, m->owner, PSC_NODE_ID_LEN, "material.owner");
	m->suite = proto_rd_u16(r, "material.suite");
	m->flags = proto_rd_u8(r, "material.flags");
	check_flags(r, m->flags, PSC_FLAG_SENDER_SIGNATURES, "material.flags");
	m->grace_ms = proto_rd_u32(r, "material.grace_ms");
	m->wrap_alg = proto_rd_u8(r, "material.wrap_alg");
	if (!r->err && !known_wrap_alg(m->wrap_alg))
		proto_rd_fail(r, PSC_E_BAD_VALUE, "material.wrap_alg");
	m->ephemeral = rd_bytes(r, 1, 0, PSC_MAX_EPHEMERAL, "material.ephemeral");
	m->wrapped = rd_bytes(r, 2, 1, PSC_MAX_WRAPPED, "material.wrapped");
	m->members_full = proto_rd_u8(r, "material.members_full");
	if (!r->err && m->members_full > 1)
		proto_rd_fail(r, PSC_E_BAD_VALUE, "material.members_full");
	RD_LIST(r, 3, 0, PSC_MAX_MEMBERS_WIRE, rd_member, &scratch, m->members,
		"material.members");
	if (!r->err && !m->members_full && m->members.n)
		proto_rd_fail(r, PSC_E_BAD_VALUE, "material.members");
}

static int refresh_has_key(uint8_t reason)
{
	return reason != PSC_REFRESH_DESTROYED && reason != PSC_REFRESH_REMOVED;
}

static void wr_catchup(proto_wr *w, const void *item)
{
	const proto_catchup_entry *e = item;
	proto_wr_u8(w, e->status);
	if (e->status == PSC_CATCHUP_NEWER) {
		wr_material(w, &e->material);
	} else {
		proto_wr_bytes(w, e->psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, e->epoch);
	}
}

static void rd_catchup(proto_rd *r, void *item)
{
	proto_catchup_entry *e = item;
	memset(e, 0, sizeof(*e));
	e->status = proto_rd_u8(r, "catchup.status");
	if (r->err)
		return;
	if (e->status < PSC_CATCHUP_NEWER || e->status > PSC_CATCHUP_NOT_MEMBER) {
		proto_rd_fail(r, PSC_E_BAD_VALUE, "catchup.status");
		return;
	}
	if (e->status == PSC_CATCHUP_NEWER) {
		rd_material(r, &e->material);
		memcpy(e->psc_id, e->material.psc_id, PSC_PSC_ID_LEN);
		e->epoch = e->material.epoch;
	} else {
		proto_rd_bytes(r, e->psc_id, PSC_PSC_ID_LEN, "catchup.psc_id");
		e->epoch = proto_rd_u64(r, "catchup.epoch");
	}
}

static void wr_params(proto_wr *w, const proto_establish_params *p)
{
	wr_bytes(w, 1, 1, PSC_MAX_NAME, p->name, "establish.name");
	WR_LIST(w, 2, p->labels, PSC_MAX_LABELS, wr_label, "establish.labels");
	WR_LIST(w, 3, p->members, PSC_MAX_MEMBERS_WIRE, wr_node_id, "establish.members");
	proto_wr_u32(w, p->refresh_s);
	proto_wr_u32(w, p->max_members);
	proto_wr_u8(w, p->flags);
}

static void rd_params(proto_rd *r, proto_establish_params *p)
{
	proto_label l;
	uint8_t id[PSC_NODE_ID_LEN];
	p->name = rd_bytes(r, 1, 1, PSC_MAX_NAME, "establish.name");
	RD_LIST(r, 2, 0, PSC_MAX_LABELS, rd_label, &l, p->labels, "establish.labels");
	RD_LIST(r, 3, 0, PSC_MAX_MEMBERS_WIRE, rd_node_id, id, p->members, "establish.members");
	p->refresh_s = proto_rd_u32(r, "establish.refresh_s");
	p->max_members = proto_rd_u32(r, "establish.max_members");
	p->flags = proto_rd_u8(r, "establish.flags");
	check_flags(r, p->flags, PSC_FLAG_SENDER_SIGNATURES, "establish.flags");
}

static void wr_outcome(proto_wr *w, const proto_outcome *o)
{
	proto_wr_u16(w, o->status);
	proto_wr_bytes(w, o->psc_id, PSC_PSC_ID_LEN);
	wr_bytes(w, 1, 0, 255, o->info, "outcome.info");
}

static void rd_outcome(proto_rd *r, proto_outcome *o, const char *field)
{
	o->status = proto_rd_u16(r, field);
	if (!r->err && o->status > PSC_STATUS_NOT_REQUESTED &&
	    (o->status < PSC_RERR_FORBIDDEN || o->status > PSC_RERR_INVALID_MESSAGE))
		proto_rd_fail(r, PSC_E_BAD_VALUE, field);
	proto_rd_bytes(r, o->psc_id, PSC_PSC_ID_LEN, "outcome.psc_id");
	o->info = rd_bytes(r, 1, 0, 255, "outcome.info");
}

static void rd_bool(proto_rd *r, uint8_t *out, const char *field)
{
	*out = proto_rd_u8(r, field);
	if (!r->err && *out > 1)
		proto_rd_fail(r, PSC_E_BAD_VALUE, field);
}

static void rd_enum(proto_rd *r, uint8_t *out, uint8_t lo, uint8_t hi, const char *field)
{
	*out = proto_rd_u8(r, field);
	if (!r->err && (*out < lo || *out > hi))
		proto_rd_fail(r, PSC_E_BAD_VALUE, field);
}

/* ---- names ------------------------------------------------------------- */

/* Request and answer share a name; the code's parity says which. */
static const char *const msg_names[] = {
	"Initialize", "PscEstablish", "PscJoin",  "PscQuery",    "PscInviteInitialize",
	"PscInvite",  "PscRefresh",   "PscLeave", "PscDepartureReport", "PscLiveness",
	"PscDestroy", "PscLookup",    "PscCatchup",
};

const char *proto_msg_name(uint16_t code)
{
	if (code < PSC_MSG_INITIALIZE_REQ || code > PSC_MSG_CATCHUP_ANS)
		return NULL;
	return msg_names[(code - PSC_MSG_INITIALIZE_REQ) / 2];
}

int proto_msg_is_request(uint16_t code)
{
	return code >= PSC_MSG_INITIALIZE_REQ && code <= PSC_MSG_CATCHUP_ANS && (code & 1);
}

uint64_t proto_body_timestamp(const psc_body *b)
{
	switch (b->code) {
	case PSC_MSG_INITIALIZE_REQ: return b->u.initialize_req.timestamp;
	case PSC_MSG_ESTABLISH_REQ: return b->u.establish_req.timestamp;
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ: return b->u.psc_req.timestamp;
	case PSC_MSG_QUERY_REQ: return b->u.query_req.timestamp;
	case PSC_MSG_INVITE_INIT_REQ: return b->u.invite_init_req.timestamp;
	case PSC_MSG_INVITE_REQ: return b->u.invite_req.timestamp;
	case PSC_MSG_REFRESH_REQ: return b->u.refresh_req.timestamp;
	case PSC_MSG_DEPARTURE_REQ: return b->u.departure_req.timestamp;
	case PSC_MSG_LIVENESS_REQ: return b->u.liveness.timestamp;
	case PSC_MSG_LOOKUP_REQ: return b->u.lookup_req.timestamp;
	case PSC_MSG_CATCHUP_REQ: return b->u.catchup_req.timestamp;
	default: return 0;
	}
}

/* ---- bodies ------------------------------------------------------------ */

void proto_body_write(proto_wr *w, const psc_body *b)
{
	switch (b->code) {
	case PSC_MSG_INITIALIZE_REQ: {
		const psc_initialize_req *q = &b->u.initialize_req;
		proto_wr_u64(w, q->timestamp);
		proto_wr_bytes(w, q->node_id, PSC_NODE_ID_LEN);
		WR_LIST(w, 1, q->suites, PSC_MAX_SUITES, wr_u16_item, "initialize.suites");
		WR_LIST(w, 1, q->wrap_algs, PSC_MAX_WRAP_ALGS, wr_u8_item, "initialize.wrap_algs");
		wr_bytes(w, 1, 0, PSC_MAX_ENDPOINT, q->endpoint, "initialize.endpoint");
		proto_wr_u8(w, q->flags);
		if (q->flags & PSC_INIT_JOIN)
			proto_wr_bytes(w, q->join_psc, PSC_PSC_ID_LEN);
		if (q->flags & PSC_INIT_ESTABLISH)
			wr_params(w, &q->establish);
		break;
	}
	case PSC_MSG_INITIALIZE_ANS: {
		const psc_initialize_ans *a = &b->u.initialize_ans;
		proto_wr_u64(w, a->kms_time);
		proto_wr_u16(w, a->suite);
		proto_wr_u8(w, a->wrap_alg);
		wr_outcome(w, &a->join);
		wr_outcome(w, &a->establish);
		WR_LIST(w, 3, a->memberships, PSC_MAX_HELD, wr_material, "initialize.memberships");
		break;
	}
	case PSC_MSG_ESTABLISH_REQ:
		proto_wr_u64(w, b->u.establish_req.timestamp);
		wr_params(w, &b->u.establish_req.params);
		break;
	case PSC_MSG_ESTABLISH_ANS:
		wr_material(w, &b->u.establish_ans.material);
		WR_LIST(w, 3, b->u.establish_ans.pending, PSC_MAX_MEMBERS_WIRE, wr_node_id,
			"establish.pending");
		break;
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ:
		proto_wr_u64(w, b->u.psc_req.timestamp);
		proto_wr_bytes(w, b->u.psc_req.psc_id, PSC_PSC_ID_LEN);
		break;
	case PSC_MSG_JOIN_ANS:
		wr_material(w, &b->u.join_ans.material);
		break;
	case PSC_MSG_QUERY_REQ: {
		const psc_query_req *q = &b->u.query_req;
		proto_wr_u64(w, q->timestamp);
		proto_wr_bytes(w, q->psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, q->requester, PSC_NODE_ID_LEN);
		wr_bytes(w, 2, 0, PSC_MAX_SUBJECT, q->requester_subject, "query.subject");
		proto_wr_u32(w, q->timeout_ms);
		break;
	}
	case PSC_MSG_QUERY_ANS:
	case PSC_MSG_INVITE_ANS:
		proto_wr_u8(w, b->u.decision_ans.accept);
		break;
	case PSC_MSG_INVITE_INIT_REQ:
		proto_wr_u64(w, b->u.invite_init_req.timestamp);
		proto_wr_bytes(w, b->u.invite_init_req.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, b->u.invite_init_req.invitee, PSC_NODE_ID_LEN);
		break;
	case PSC_MSG_INVITE_INIT_ANS:
		proto_wr_u8(w, b->u.invite_init_ans.outcome);
		proto_wr_u64(w, b->u.invite_init_ans.epoch);
		break;
	case PSC_MSG_INVITE_REQ: {
		const psc_invite_req *q = &b->u.invite_req;
		proto_wr_u64(w, q->timestamp);
		proto_wr_bytes(w, q->psc_id, PSC_PSC_ID_LEN);
		wr_bytes(w, 1, 1, PSC_MAX_NAME, q->psc_name, "invite.psc_name");
		proto_wr_bytes(w, q->inviter, PSC_NODE_ID_LEN);
		proto_wr_u32(w, q->timeout_ms);
		break;
	}
	case PSC_MSG_REFRESH_REQ: {
		const psc_refresh_req *q = &b->u.refresh_req;
		proto_wr_u64(w, q->timestamp);
		proto_wr_u8(w, q->reason);
		if (refresh_has_key(q->reason)) {
			wr_material(w, &q->material);
		} else {
			proto_wr_bytes(w, q->psc_id, PSC_PSC_ID_LEN);
			proto_wr_u64(w, q->epoch);
		}
		break;
	}
	case PSC_MSG_REFRESH_ANS:
		proto_wr_bytes(w, b->u.refresh_ans.psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, b->u.refresh_ans.epoch);
		break;
	case PSC_MSG_LEAVE_ANS:
	case PSC_MSG_DESTROY_ANS:
		break;
	case PSC_MSG_DEPARTURE_REQ:
		proto_wr_u64(w, b->u.departure_req.timestamp);
		proto_wr_bytes(w, b->u.departure_req.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, b->u.departure_req.suspect, PSC_NODE_ID_LEN);
		break;
	case PSC_MSG_DEPARTURE_ANS:
		proto_wr_u8(w, b->u.departure_ans.outcome);
		break;
	case PSC_MSG_LIVENESS_REQ:
	case PSC_MSG_LIVENESS_ANS:
		proto_wr_u64(w, b->u.liveness.timestamp);
		proto_wr_u64(w, b->u.liveness.challenge);
		break;
	case PSC_MSG_LOOKUP_REQ:
		proto_wr_u64(w, b->u.lookup_req.timestamp);
		wr_bytes(w, 1, 1, PSC_MAX_NAME, b->u.lookup_req.name, "lookup.name");
		break;
	case PSC_MSG_LOOKUP_ANS:
		proto_wr_bytes(w, b->u.lookup_ans.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, b->u.lookup_ans.owner, PSC_NODE_ID_LEN);
		proto_wr_u32(w, b->u.lookup_ans.member_count);
		break;
	case PSC_MSG_CATCHUP_REQ:
		proto_wr_u64(w, b->u.catchup_req.timestamp);
		WR_LIST(w, 3, b->u.catchup_req.held, PSC_MAX_HELD, wr_held, "catchup.held");
		break;
	case PSC_MSG_CATCHUP_ANS:
		WR_LIST(w, 3, b->u.catchup_ans.entries, PSC_MAX_HELD, wr_catchup,
			"catchup.entries");
		break;
	default:
		proto_wr_fail(w, PSC_E_UNKNOWN_CODE, "message_code");
	}
}

psc_rc proto_body_encode(const psc_body *b, uint8_t **out, size_t *out_len, psc_err *err)
{
	proto_wr w;
	proto_wr_init(&w, PROTO_MAX_BODY);
	proto_body_write(&w, b);
	if (w.err) {
		psc_rc rc = psc_err_set(err, w.err, "encoding %s: field '%s': %s",
					proto_msg_name(b->code) ? proto_msg_name(b->code)
								: "unknown message",
					w.err_field ? w.err_field : "?", psc_strerror(w.err));
		proto_wr_free(&w);
		return rc;
	}
	return proto_wr_take(&w, out, out_len);
}

static void rd_body(proto_rd *r, psc_body *b)
{
	switch (b->code) {
	case PSC_MSG_INITIALIZE_REQ: {
		psc_initialize_req *q = &b->u.initialize_req;
		uint16_t s;
		uint8_t a;
		q->timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, q->node_id, PSC_NODE_ID_LEN, "initialize.node_id");
		RD_LIST(r, 1, 1, PSC_MAX_SUITES, rd_u16_item, &s, q->suites, "initialize.suites");
		RD_LIST(r, 1, 1, PSC_MAX_WRAP_ALGS, rd_u8_item, &a, q->wrap_algs,
			"initialize.wrap_algs");
		q->endpoint = rd_bytes(r, 1, 0, PSC_MAX_ENDPOINT, "initialize.endpoint");
		q->flags = proto_rd_u8(r, "initialize.flags");
		check_flags(r, q->flags, PSC_INIT_JOIN | PSC_INIT_ESTABLISH, "initialize.flags");
		if (!r->err && (q->flags & PSC_INIT_JOIN))
			proto_rd_bytes(r, q->join_psc, PSC_PSC_ID_LEN, "initialize.join_psc");
		if (!r->err && (q->flags & PSC_INIT_ESTABLISH))
			rd_params(r, &q->establish);
		break;
	}
	case PSC_MSG_INITIALIZE_ANS: {
		psc_initialize_ans *a = &b->u.initialize_ans;
		proto_material m;
		a->kms_time = proto_rd_u64(r, "kms_time");
		a->suite = proto_rd_u16(r, "initialize.suite");
		a->wrap_alg = proto_rd_u8(r, "initialize.wrap_alg");
		if (!r->err && !known_wrap_alg(a->wrap_alg))
			proto_rd_fail(r, PSC_E_BAD_VALUE, "initialize.wrap_alg");
		rd_outcome(r, &a->join, "initialize.join");
		rd_outcome(r, &a->establish, "initialize.establish");
		RD_LIST(r, 3, 0, PSC_MAX_HELD, rd_material, &m, a->memberships,
			"initialize.memberships");
		break;
	}
	case PSC_MSG_ESTABLISH_REQ:
		b->u.establish_req.timestamp = proto_rd_u64(r, "timestamp");
		rd_params(r, &b->u.establish_req.params);
		break;
	case PSC_MSG_ESTABLISH_ANS: {
		uint8_t id[PSC_NODE_ID_LEN];
		rd_material(r, &b->u.establish_ans.material);
		RD_LIST(r, 3, 0, PSC_MAX_MEMBERS_WIRE, rd_node_id, id, b->u.establish_ans.pending,
			"establish.pending");
		break;
	}
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ:
		b->u.psc_req.timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, b->u.psc_req.psc_id, PSC_PSC_ID_LEN, "psc_id");
		break;
	case PSC_MSG_JOIN_ANS:
		rd_material(r, &b->u.join_ans.material);
		break;
	case PSC_MSG_QUERY_REQ: {
		psc_query_req *q = &b->u.query_req;
		q->timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, q->psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(r, q->requester, PSC_NODE_ID_LEN, "query.requester");
		q->requester_subject = rd_bytes(r, 2, 0, PSC_MAX_SUBJECT, "query.subject");
		q->timeout_ms = proto_rd_u32(r, "query.timeout_ms");
		break;
	}
	case PSC_MSG_QUERY_ANS:
	case PSC_MSG_INVITE_ANS:
		rd_bool(r, &b->u.decision_ans.accept, "accept");
		break;
	case PSC_MSG_INVITE_INIT_REQ:
		b->u.invite_init_req.timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, b->u.invite_init_req.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(r, b->u.invite_init_req.invitee, PSC_NODE_ID_LEN, "invitee");
		break;
	case PSC_MSG_INVITE_INIT_ANS:
		rd_enum(r, &b->u.invite_init_ans.outcome, PSC_INVITE_ACCEPTED,
			PSC_INVITE_UNREACHABLE, "invite.outcome");
		b->u.invite_init_ans.epoch = proto_rd_u64(r, "invite.epoch");
		break;
	case PSC_MSG_INVITE_REQ: {
		psc_invite_req *q = &b->u.invite_req;
		q->timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, q->psc_id, PSC_PSC_ID_LEN, "psc_id");
		q->psc_name = rd_bytes(r, 1, 1, PSC_MAX_NAME, "invite.psc_name");
		proto_rd_bytes(r, q->inviter, PSC_NODE_ID_LEN, "invite.inviter");
		q->timeout_ms = proto_rd_u32(r, "invite.timeout_ms");
		break;
	}
	case PSC_MSG_REFRESH_REQ: {
		psc_refresh_req *q = &b->u.refresh_req;
		q->timestamp = proto_rd_u64(r, "timestamp");
		rd_enum(r, &q->reason, PSC_REFRESH_ESTABLISH, PSC_REFRESH_CATCHUP,
			"refresh.reason");
		if (r->err)
			break;
		if (refresh_has_key(q->reason)) {
			rd_material(r, &q->material);
			memcpy(q->psc_id, q->material.psc_id, PSC_PSC_ID_LEN);
			q->epoch = q->material.epoch;
		} else {
			proto_rd_bytes(r, q->psc_id, PSC_PSC_ID_LEN, "psc_id");
			q->epoch = proto_rd_u64(r, "refresh.epoch");
		}
		break;
	}
	case PSC_MSG_REFRESH_ANS:
		proto_rd_bytes(r, b->u.refresh_ans.psc_id, PSC_PSC_ID_LEN, "psc_id");
		b->u.refresh_ans.epoch = proto_rd_u64(r, "refresh.epoch");
		break;
	case PSC_MSG_LEAVE_ANS:
	case PSC_MSG_DESTROY_ANS:
		break;
	case PSC_MSG_DEPARTURE_REQ:
		b->u.departure_req.timestamp = proto_rd_u64(r, "timestamp");
		proto_rd_bytes(r, b->u.departure_req.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(r, b->u.departure_req.suspect, PSC_NODE_ID_LEN, "suspect");
		break;
	case PSC_MSG_DEPARTURE_ANS:
		rd_enum(r, &b->u.departure_ans.outcome, PSC_DEPARTURE_ALIVE, PSC_DEPARTURE_EVICTED,
			"departure.outcome");
		break;
	case PSC_MSG_LIVENESS_REQ:
	case PSC_MSG_LIVENESS_ANS:
		b->u.liveness.timestamp = proto_rd_u64(r, "timestamp");
		b->u.liveness.challenge = proto_rd_u64(r, "liveness.challenge");
		break;
	case PSC_MSG_LOOKUP_REQ:
		b->u.lookup_req.timestamp = proto_rd_u64(r, "timestamp");
		b->u.lookup_req.name = rd_bytes(r, 1, 1, PSC_MAX_NAME, "lookup.name");
		break;
	case PSC_MSG_LOOKUP_ANS:
		proto_rd_bytes(r, b->u.lookup_ans.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(r, b->u.lookup_ans.owner, PSC_NODE_ID_LEN, "lookup.owner");
		b->u.lookup_ans.member_count = proto_rd_u32(r, "lookup.member_count");
		break;
	case PSC_MSG_CATCHUP_REQ: {
		proto_held h;
		b->u.catchup_req.timestamp = proto_rd_u64(r, "timestamp");
		RD_LIST(r, 3, 0, PSC_MAX_HELD, rd_held, &h, b->u.catchup_req.held, "catchup.held");
		break;
	}
	case PSC_MSG_CATCHUP_ANS: {
		proto_catchup_entry e;
		RD_LIST(r, 3, 0, PSC_MAX_HELD, rd_catchup, &e, b->u.catchup_ans.entries,
			"catchup.entries");
		break;
	}
	default:
		proto_rd_fail(r, PSC_E_UNKNOWN_CODE, "message_code");
	}
}

psc_rc proto_body_decode(uint16_t code, const uint8_t *p, size_t len, psc_body *b,
			 psc_err *err)
{
	memset(b, 0, sizeof(*b));
	b->code = code;
	if (!proto_msg_name(code))
		return psc_err_set(err, PSC_E_UNKNOWN_CODE,
				   "message code 0x%04x is not a PSC message", code);
	if (len > PROTO_MAX_BODY)
		return psc_err_set(err, PSC_E_TOO_LARGE, "%s body of %zu bytes exceeds %u",
				   proto_msg_name(code), len, PROTO_MAX_BODY);
	proto_rd r;
	proto_rd_init(&r, p, len);
	rd_body(&r, b);
	if (proto_rd_finish(&r, "body") != PSC_OK)
		return psc_err_set(err, r.err, "%s: field '%s' at byte %zu: %s",
				   proto_msg_name(code), r.err_field ? r.err_field : "?",
				   r.err_off, psc_strerror(r.err));
	psc_err_clear(err);
	return PSC_OK;
}

/* ---- iterators --------------------------------------------------------- */

void proto_iter_init(proto_iter *it, const uint8_t *raw, size_t raw_len)
{
	proto_rd_init(&it->r, raw, raw_len);
}

static int iter_next(proto_iter *it, item_rd_fn fn, void *out)
{
	if (it->r.err || proto_rd_left(&it->r) == 0)
		return 0;
	fn(&it->r, out);
	return it->r.err == PSC_OK;
}

int proto_next_u16(proto_iter *it, uint16_t *out)
{
	return iter_next(it, rd_u16_item, out);
}

int proto_next_u8(proto_iter *it, uint8_t *out)
{
	return iter_next(it, rd_u8_item, out);
}

int proto_next_label(proto_iter *it, proto_label *out)
{
	return iter_next(it, rd_label, out);
}

int proto_next_node_id(proto_iter *it, uint8_t out[PSC_NODE_ID_LEN])
{
	return iter_next(it, rd_node_id, out);
}

int proto_next_member(proto_iter *it, proto_member *out)
{
	return iter_next(it, rd_member, out);
}

int proto_next_held(proto_iter *it, proto_held *out)
{
	return iter_next(it, rd_held, out);
}

int proto_next_material(proto_iter *it, proto_material *out)
{
	return iter_next(it, rd_material, out);
}

int proto_next_catchup(proto_iter *it, proto_catchup_entry *out)
{
	return iter_next(it, rd_catchup, out);
}
