/*
 * psc_kmsreq — the peer's side of KMS-initiated requests: PscRefresh (apply
 * and acknowledge, docs/protocol.md §10.5), PscQuery (owner decides),
 * PscInvite (invitee decides), PscLiveness (answered at once).
 * Runs only on messages whose KMS signature verified (psc_transport.c); still
 * applies freshness and replay checks (§9) before acting.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_cert.h"
#include "psc_peer_int.h"

static void report(psc_peer *p, psc_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(psc_peer *p, psc_rc rc, const char *fmt, ...)
{
	psc_err e;
	va_list ap;
	va_start(ap, fmt);
	psc_err_vset(&e, rc, fmt, ap);
	va_end(ap);
	psc_sdk_report(p, &e);
}

static void ack(psc_peer *p, const proto_message *m, const uint8_t psc_id[PSC_PSC_ID_LEN],
		uint64_t epoch)
{
	psc_body a = {.code = PSC_MSG_REFRESH_ANS};
	memcpy(a.u.refresh_ans.psc_id, psc_id, PSC_PSC_ID_LEN);
	a.u.refresh_ans.epoch = epoch;
	psc_sdk_send_answer(p, m, PSC_MSG_REFRESH_ANS, &a);
}

static void on_refresh(psc_peer *p, const proto_message *m, const psc_refresh_req *r)
{
	psc_peer_reason reason = (psc_peer_reason)r->reason;
	if (r->reason == PSC_REFRESH_DESTROYED || r->reason == PSC_REFRESH_REMOVED) {
		psc_sdk_forget(p, r->psc_id, r->epoch, reason, 1);
		ack(p, m, r->psc_id, r->epoch);
		return;
	}
	int applied = 0;
	psc_err e;
	if (psc_sdk_apply_material(p, &r->material, reason, &applied, &e) != PSC_OK) {
		/* Not acknowledged: the KMS keeps us out of date and we catch up. */
		psc_sdk_report(p, &e);
		return;
	}
	/* Stale or not, acknowledge the epoch we now hold. */
	ack(p, m, r->material.psc_id, psc_store_held_epoch(p->store, r->material.psc_id));
}

static void decision(psc_peer *p, const proto_message *m, uint16_t code, int accept)
{
	psc_body a = {.code = code};
	a.u.decision_ans.accept = accept ? 1 : 0;
	psc_sdk_send_answer(p, m, code, &a);
}

/* The application's verdict: answered now, or kept open for psc_peer_decide.
 * A full table (or a verdict that is none of the three) denies at once. */
static void verdict(psc_peer *p, const proto_message *m, uint16_t code, int v,
		    uint32_t timeout_ms)
{
	if (v == PSC_PEER_DECIDE_LATER && m->transaction_id) { /* 0 names nothing */
		uint64_t now = psc_sdk_wall_ms();
		struct psc_open_decision *slot = NULL;
		for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS; i++) {
			struct psc_open_decision *d = &p->open_decisions[i];
			if (d->id && d->deadline_ms < now)
				memset(d, 0, sizeof(*d)); /* the KMS gave up on it */
			if (!d->id && !slot)
				slot = d;
		}
		if (slot) {
			*slot = (struct psc_open_decision){.id = m->transaction_id, .code = code,
							   .deadline_ms = now + timeout_ms};
			return;
		}
		report(p, PSC_E_TOO_LARGE, "%d questions already open: %s denied at once",
		       PSC_PEER_OPEN_DECISIONS, proto_msg_name(m->code));
		v = 0;
	}
	decision(p, m, code, v == 1);
}

psc_rc psc_peer_decide(psc_peer *p, uint64_t decision_id, int accept, psc_err *err)
{
	if (!p || !decision_id)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_decide: missing argument");
	uint64_t now = psc_sdk_wall_ms();
	for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS; i++) {
		struct psc_open_decision *d = &p->open_decisions[i];
		if (d->id != decision_id)
			continue;
		struct psc_open_decision open = *d;
		memset(d, 0, sizeof(*d));
		if (open.deadline_ms < now)
			break;
		proto_message req = {.transaction_id = open.id};
		decision(p, &req, open.code, accept == 1);
		return PSC_OK;
	}
	return psc_err_set(err, PSC_E_PEER_NOT_FOUND,
			   "question %016llx is not open: answered already, or the KMS's timeout "
			   "passed and it decided 'no' by itself",
			   (unsigned long long)decision_id);
}

static void on_query(psc_peer *p, const proto_message *m, const psc_query_req *q)
{
	/* Only the owner decides, and only about a PSC it holds; anything else is
	 * denied without asking the application. */
	const psc_entry *e = psc_store_find(p->store, q->psc_id);
	int accept = 0;
	if (e && memcmp(e->owner, p->node_id, PSC_NODE_ID_LEN) == 0 && p->cb.on_query) {
		char subject[PSC_MAX_SUBJECT + 1];
		psc_sdk_copy_text(subject, sizeof(subject), q->requester_subject.p,
				  q->requester_subject.len);
		psc_peer_query pq = {.requester_subject = subject, .timeout_ms = q->timeout_ms,
				     .decision_id = m->transaction_id};
		memcpy(pq.psc_id, q->psc_id, PSC_PSC_ID_LEN);
		memcpy(pq.requester, q->requester, PSC_NODE_ID_LEN);
		accept = p->cb.on_query(p->user, &pq);
	}
	verdict(p, m, PSC_MSG_QUERY_ANS, accept, q->timeout_ms);
}

static void on_invite(psc_peer *p, const proto_message *m, const psc_invite_req *r)
{
	int accept = 0;
	if (p->cb.on_invite) {
		char name[PSC_MAX_NAME + 1];
		psc_sdk_copy_text(name, sizeof(name), r->psc_name.p, r->psc_name.len);
		psc_peer_invitation inv = {.psc_name = name, .timeout_ms = r->timeout_ms,
					   .decision_id = m->transaction_id};
		memcpy(inv.psc_id, r->psc_id, PSC_PSC_ID_LEN);
		memcpy(inv.inviter, r->inviter, PSC_NODE_ID_LEN);
		accept = p->cb.on_invite(p->user, &inv);
	}
	verdict(p, m, PSC_MSG_INVITE_ANS, accept, r->timeout_ms);
}

static void on_liveness(psc_peer *p, const proto_message *m, const psc_liveness *l)
{
	/* The signature on the answer is what proves we are alive. */
	psc_body a = {.code = PSC_MSG_LIVENESS_ANS};
	a.u.liveness.timestamp = psc_sdk_wall_ms();
	a.u.liveness.challenge = l->challenge;
	psc_sdk_send_answer(p, m, PSC_MSG_LIVENESS_ANS, &a);
}

void psc_sdk_kms_request(psc_peer *p, const proto_message *m, const psc_body *b)
{
	const char *name = proto_msg_name(m->code);
	switch (m->code) {
	case PSC_MSG_REFRESH_REQ:
	case PSC_MSG_QUERY_REQ:
	case PSC_MSG_INVITE_REQ:
	case PSC_MSG_LIVENESS_REQ:
		break;
	default:
		report(p, PSC_E_WRONG_DIRECTION, "the KMS sent a %s request, which only peers send",
		       name);
		psc_sdk_send_error(p, m, PSC_RERR_FORBIDDEN, PSC_REASON_NONE,
				   "a peer does not answer this request");
		return;
	}
	uint64_t now = psc_sdk_wall_ms(), ts = proto_body_timestamp(b);
	uint64_t skew = ts > now ? ts - now : now - ts;
	if (skew > p->freshness_ms) {
		report(p, PSC_E_PEER_STALE,
		       "rejected %s (transaction %016llx): timestamp is %llu ms off our clock, "
		       "more than the %llu ms window (check the clocks)",
		       name, (unsigned long long)m->transaction_id, (unsigned long long)skew,
		       (unsigned long long)p->freshness_ms);
		psc_sdk_send_error(p, m, PSC_RERR_FORBIDDEN, PSC_REASON_STALE_TIMESTAMP,
				   "timestamp outside the peer's freshness window");
		return;
	}
	psc_rc rc = psc_replay_check(p->replay, m->transaction_id, ts, now, p->freshness_ms);
	if (rc == PSC_E_PEER_REPLAYED) {
		/* Already answered once; answering again would serve the replayer. */
		report(p, rc, "ignored a replayed %s (transaction %016llx)", name,
		       (unsigned long long)m->transaction_id);
		return;
	}
	if (rc != PSC_OK) {
		report(p, rc,
		       "ignored %s (transaction %016llx): replay cache full of live "
		       "entries",
		       name, (unsigned long long)m->transaction_id);
		return;
	}
	switch (m->code) {
	case PSC_MSG_REFRESH_REQ:
		on_refresh(p, m, &b->u.refresh_req);
		break;
	case PSC_MSG_QUERY_REQ:
		on_query(p, m, &b->u.query_req);
		break;
	case PSC_MSG_INVITE_REQ:
		on_invite(p, m, &b->u.invite_req);
		break;
	case PSC_MSG_LIVENESS_REQ:
		on_liveness(p, m, &b->u.liveness);
		break;
	default:
		break;
	}
}
