/*
 * psc_transport — the DEALER connection to the KMS: sending signed requests,
 * receiving frames, verifying that each came from the configured KMS, and
 * routing it (our answer, or a KMS request for psc_kmsreq.c).
 * Never: act on a message before its signature by the KMS certificate
 * verifies; everything that arrives is untrusted until then.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <zmq.h>

#include "psc_peer_int.h"

typedef struct pending {
	uint64_t txid;
	uint16_t ans_code;
	int done;
	psc_answer *ans;
} pending;

void psc_answer_clear(psc_answer *a)
{
	if (!a)
		return;
	free(a->frame);
	memset(a, 0, sizeof(*a));
}

static psc_rc zerr(psc_err *err, const char *what, const psc_peer *p)
{
	return psc_err_set(err, PSC_E_PEER_TRANSPORT, "%s (KMS %s): %s", what, p->kms_endpoint,
			   zmq_strerror(zmq_errno()));
}

psc_rc psc_sdk_connect(psc_peer *p, psc_err *err)
{
	p->dealer = zmq_socket(p->zctx, ZMQ_DEALER);
	if (!p->dealer)
		return zerr(err, "cannot create the DEALER socket", p);
	int linger = 0, ivl = 100, ivl_max = 2000;
	int64_t maxmsg = PROTO_MAX_MESSAGE;
	/* A routing id of our own (not libzmq's, which starts with a zero byte)
	 * stays the same across libzmq's reconnects, so the KMS can still reach
	 * this peer after either side restarts. */
	uint8_t rid[16];
	if (RAND_bytes(rid, sizeof(rid)) != 1)
		return psc_err_set(err, PSC_E_CRYPTO, "no random bytes for the routing id");
	if (rid[0] == 0)
		rid[0] = 1;
	if (zmq_setsockopt(p->dealer, ZMQ_LINGER, &linger, sizeof(linger)) ||
	    zmq_setsockopt(p->dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl)) ||
	    zmq_setsockopt(p->dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max)) ||
	    zmq_setsockopt(p->dealer, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) ||
	    zmq_setsockopt(p->dealer, ZMQ_ROUTING_ID, rid, sizeof(rid)))
		return zerr(err, "cannot configure the DEALER socket", p);
	if (p->curve) {
		if (!p->have_curve_keys) {
			if (zmq_curve_keypair(p->curve_pub, p->curve_sec) != 0)
				return zerr(err, "cannot generate a CURVE key pair", p);
			p->have_curve_keys = 1;
		}
		if (zmq_setsockopt(p->dealer, ZMQ_CURVE_SERVERKEY, p->kms_curve_pub,
				   PSC_PEER_CURVE_Z85_LEN) ||
		    zmq_setsockopt(p->dealer, ZMQ_CURVE_PUBLICKEY, p->curve_pub,
				   PSC_PEER_CURVE_Z85_LEN) ||
		    zmq_setsockopt(p->dealer, ZMQ_CURVE_SECRETKEY, p->curve_sec,
				   PSC_PEER_CURVE_Z85_LEN))
			return zerr(err, "cannot set the CURVE keys", p);
	}
	/* The monitor tells us when libzmq reconnected by itself: the KMS may
	 * have restarted, and then we must Initialize again. */
	char ep[96];
	snprintf(ep, sizeof(ep), "inproc://psc-peer-monitor-%u", p->monitor_seq++);
	if (zmq_socket_monitor(p->dealer, ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
		return zerr(err, "cannot monitor the DEALER socket", p);
	p->monitor = zmq_socket(p->zctx, ZMQ_PAIR);
	if (!p->monitor || zmq_setsockopt(p->monitor, ZMQ_LINGER, &linger, sizeof(linger)) ||
	    zmq_connect(p->monitor, ep) != 0)
		return zerr(err, "cannot attach the connection monitor", p);
	if (zmq_connect(p->dealer, p->kms_endpoint) != 0)
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "cannot connect to KMS endpoint '%s': %s (expected "
				   "tcp://host:port)",
				   p->kms_endpoint, zmq_strerror(zmq_errno()));
	p->disconnected = 0;
	return PSC_OK;
}

void psc_sdk_disconnect(psc_peer *p)
{
	if (p->dealer)
		(void)zmq_socket_monitor(p->dealer, NULL, 0);
	if (p->monitor)
		zmq_close(p->monitor);
	if (p->dealer)
		zmq_close(p->dealer);
	p->monitor = p->dealer = NULL;
	p->initialized = 0;
}

/* Reads connection events; a connect after a disconnect means the link came
 * back (possibly to a restarted KMS): Initialize again before relying on it. */
static void drain_monitor(psc_peer *p)
{
	while (p->monitor) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, p->monitor, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		uint16_t ev = 0;
		if (zmq_msg_size(&m) >= 2)
			memcpy(&ev, zmq_msg_data(&m), 2);
		int more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		while (more) {
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, p->monitor, ZMQ_DONTWAIT) < 0)
				more = 0;
			else
				more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		if (ev == ZMQ_EVENT_DISCONNECTED) {
			p->disconnected = 1;
		} else if (ev == ZMQ_EVENT_CONNECTED && p->disconnected) {
			p->disconnected = 0;
			if (p->registered)
				p->need_reinit = 1;
		}
	}
}

static psc_rc send_frame(psc_peer *p, const uint8_t *buf, size_t len, psc_err *err)
{
	if (!p->dealer)
		return psc_err_set(err, PSC_E_PEER_TRANSPORT, "not connected to the KMS");
	if (zmq_send(p->dealer, buf, len, ZMQ_DONTWAIT) < 0)
		return zerr(err, "cannot queue a message to the KMS", p);
	return PSC_OK;
}

static const proto_signer *signer_for(const psc_peer *p, proto_signer *s, int with_cert)
{
	memset(s, 0, sizeof(*s));
	s->key = p->key;
	s->cert_der = p->cert_der;
	s->cert_len = p->cert_len;
	/* The KMS holds our certificate from Initialize (docs/protocol.md §3). */
	s->omit_certificates = !with_cert;
	return s;
}

static psc_rc send_body(psc_peer *p, uint64_t txid, uint16_t code, const uint8_t *dest,
			const psc_body *body, psc_err *err)
{
	uint8_t *enc = NULL, *msg = NULL;
	size_t enc_len = 0, msg_len = 0;
	psc_err e2;
	psc_rc rc = proto_body_encode(body, &enc, &enc_len, &e2);
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "cannot encode %s: %s", proto_msg_name(code),
				   psc_err_text(&e2));
	proto_envelope env = {
	    .overlay = p->overlay_hash, .transaction_id = txid, .code = code, .dest_node = dest};
	proto_signer s;
	rc = proto_message_build(&env, enc, enc_len,
				 signer_for(p, &s, code == PSC_MSG_INITIALIZE_REQ), &msg, &msg_len,
				 &e2);
	free(enc);
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "cannot sign %s: %s", proto_msg_name(code),
				   psc_err_text(&e2));
	rc = send_frame(p, msg, msg_len, err);
	free(msg);
	return rc;
}

void psc_sdk_send_answer(psc_peer *p, const proto_message *req, uint16_t code, const psc_body *body)
{
	psc_err e;
	if (send_body(p, req->transaction_id, code, NULL, body, &e) != PSC_OK)
		psc_sdk_report(p, &e);
}

void psc_sdk_send_error(psc_peer *p, const proto_message *req, uint16_t error_code, uint16_t reason,
			const char *text)
{
	proto_error pe = {.error_code = error_code,
			  .psc_reason = reason,
			  .text = (const uint8_t *)text,
			  .text_len = text ? strlen(text) : 0};
	uint8_t *enc = NULL, *msg = NULL;
	size_t enc_len = 0, msg_len = 0;
	psc_err e;
	psc_rc rc = proto_error_encode(&pe, &enc, &enc_len);
	if (rc == PSC_OK) {
		proto_envelope env = {.overlay = p->overlay_hash,
				      .transaction_id = req->transaction_id,
				      .code = PSC_MSG_ERROR};
		proto_signer s;
		rc = proto_message_build(&env, enc, enc_len, signer_for(p, &s, 0), &msg, &msg_len,
					 &e);
	}
	free(enc);
	if (rc == PSC_OK)
		rc = send_frame(p, msg, msg_len, &e);
	free(msg);
	if (rc != PSC_OK) {
		psc_err_set(&e, rc, "cannot send an ErrorResponse to the KMS: %s",
			    psc_strerror(rc));
		psc_sdk_report(p, &e);
	}
}

static void reject(psc_peer *p, psc_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject(psc_peer *p, psc_rc rc, const char *fmt, ...)
{
	psc_err e;
	va_list ap;
	va_start(ap, fmt);
	psc_err_vset(&e, rc, fmt, ap);
	va_end(ap);
	psc_sdk_report(p, &e);
}

/* Handles one received frame; takes ownership of buf. */
static void handle_frame(psc_peer *p, uint8_t *buf, size_t len, pending *pd)
{
	proto_message m;
	psc_err e;
	if (proto_message_decode(buf, len, &m, &e) != PSC_OK) {
		reject(p, PSC_E_PEER_BAD_ANSWER, "dropped a malformed message from the KMS: %s",
		       psc_err_text(&e));
		goto drop;
	}
	if (m.overlay != p->overlay_hash) {
		reject(p, PSC_E_OVERLAY, "dropped a message for another overlay than %s",
		       p->overlay);
		goto drop;
	}
	int is_req = (m.code & 1) && m.code != PSC_MSG_ERROR;
	if (!proto_message_signed_by(&m, p->kms_cert_der, p->kms_cert_len) ||
	    proto_message_verify(&m, p->kms_pub, &e) != PSC_OK) {
		char what[160];
		snprintf(what, sizeof(what), "%s (transaction %016llx)",
			 proto_msg_name(m.code) ? proto_msg_name(m.code) : "message",
			 (unsigned long long)m.transaction_id);
		reject(p, PSC_E_PEER_NOT_KMS,
		       "rejected %s: not signed by the configured KMS certificate", what);
		if (is_req)
			psc_sdk_send_error(p, &m, PSC_RERR_FORBIDDEN, PSC_REASON_BAD_SIGNATURE,
					   "not signed by the KMS this peer trusts");
		goto drop;
	}
	if (is_req) {
		if (m.has_dest_node && memcmp(m.dest_node, p->node_id, PSC_NODE_ID_LEN) != 0) {
			reject(p, PSC_E_NODE_ID_MISMATCH,
			       "refused a KMS request addressed to another Node-ID (transaction "
			       "%016llx)",
			       (unsigned long long)m.transaction_id);
			psc_sdk_send_error(p, &m, PSC_RERR_FORBIDDEN, PSC_REASON_NONE,
					   "request is addressed to another Node-ID");
			goto drop;
		}
		psc_body b;
		if (!proto_msg_is_request(m.code) ||
		    proto_body_decode(m.code, m.body, m.body_len, &b, &e) != PSC_OK) {
			if (!proto_msg_is_request(m.code))
				psc_err_set(&e, PSC_E_UNKNOWN_CODE, "unknown code 0x%04x", m.code);
			reject(p, PSC_E_PEER_BAD_ANSWER, "rejected a malformed KMS request: %s",
			       psc_err_text(&e));
			psc_sdk_send_error(p, &m, PSC_RERR_INVALID_MESSAGE, PSC_REASON_MALFORMED,
					   "malformed request");
			goto drop;
		}
		psc_sdk_kms_request(p, &m, &b);
		goto drop;
	}
	if (pd && !pd->done && m.transaction_id == pd->txid &&
	    (m.code == pd->ans_code || m.code == PSC_MSG_ERROR)) {
		pd->ans->frame = buf;
		pd->ans->frame_len = len;
		pd->ans->msg = m;
		pd->done = 1;
		return;
	}
	/* A late answer to a request that already timed out, or one that fits no
	 * request: nothing to do. */
drop:
	free(buf);
}

/* Receives and handles every frame already queued. Returns how many. */
static int drain(psc_peer *p, pending *pd)
{
	int n = 0;
	drain_monitor(p);
	while (p->dealer) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, p->dealer, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			break;
		}
		n++;
		if (zmq_msg_more(&m)) {
			/* One frame = one RELOAD message: discard multi-part messages. */
			int more = 1;
			while (more) {
				zmq_msg_close(&m);
				zmq_msg_init(&m);
				more = zmq_msg_recv(&m, p->dealer, ZMQ_DONTWAIT) >= 0 &&
				       zmq_msg_more(&m);
			}
			zmq_msg_close(&m);
			reject(p, PSC_E_PEER_BAD_ANSWER, "%s",
			       "dropped a multi-frame message from the KMS");
			continue;
		}
		size_t len = zmq_msg_size(&m);
		uint8_t *buf = malloc(len ? len : 1);
		if (!buf) {
			zmq_msg_close(&m);
			reject(p, PSC_E_NOMEM, "%s", "out of memory receiving a KMS message");
			continue;
		}
		memcpy(buf, zmq_msg_data(&m), len);
		zmq_msg_close(&m);
		handle_frame(p, buf, len, pd);
	}
	drain_monitor(p);
	return n;
}

/* Waits up to timeout_ms (-1 = forever) for the DEALER or the monitor. */
static int wait_readable(psc_peer *p, long timeout_ms)
{
	zmq_pollitem_t items[2] = {{p->dealer, 0, ZMQ_POLLIN, 0}, {p->monitor, 0, ZMQ_POLLIN, 0}};
	int n = p->monitor ? 2 : 1;
	if (!p->dealer)
		return -1;
	return zmq_poll(items, n, timeout_ms);
}

static void set_timestamp(psc_body *b, uint64_t ts)
{
	switch (b->code) {
	case PSC_MSG_INITIALIZE_REQ:
		b->u.initialize_req.timestamp = ts;
		break;
	case PSC_MSG_ESTABLISH_REQ:
		b->u.establish_req.timestamp = ts;
		break;
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ:
		b->u.psc_req.timestamp = ts;
		break;
	case PSC_MSG_INVITE_INIT_REQ:
		b->u.invite_init_req.timestamp = ts;
		break;
	case PSC_MSG_DEPARTURE_REQ:
		b->u.departure_req.timestamp = ts;
		break;
	case PSC_MSG_LOOKUP_REQ:
		b->u.lookup_req.timestamp = ts;
		break;
	case PSC_MSG_CATCHUP_REQ:
		b->u.catchup_req.timestamp = ts;
		break;
	default:
		break;
	}
}

/* Turns an ErrorResponse into a psc_rc with a sentence; records it. */
static psc_rc map_error(psc_peer *p, const psc_answer *a, uint16_t req_code, psc_err *err)
{
	proto_error pe;
	psc_err e2;
	if (proto_error_decode(a->msg.body, a->msg.body_len, &pe, &e2) != PSC_OK)
		return psc_err_set(err, PSC_E_PEER_BAD_ANSWER,
				   "KMS sent a malformed ErrorResponse to %s: %s",
				   proto_msg_name(req_code), psc_err_text(&e2));
	psc_peer_kms_error *le = &p->last_error;
	memset(le, 0, sizeof(*le));
	le->error_code = pe.error_code;
	le->psc_reason = pe.psc_reason;
	le->code_name = proto_reload_error_name(pe.error_code);
	le->reason_name = psc_sdk_reason_name(pe.psc_reason);
	psc_sdk_copy_text(le->text, sizeof(le->text), pe.text, pe.text_len);
	psc_rc rc = psc_sdk_rc_for_error(pe.error_code);
	char reason[64] = "";
	if (pe.psc_reason)
		snprintf(reason, sizeof(reason), " (%s)", le->reason_name);
	return psc_err_set(err, rc, "KMS refused %s: %s%s%s%s", proto_msg_name(req_code),
			   le->code_name, reason, le->text[0] ? ": " : "", le->text);
}

/* Requests whose answer waits for another party's decision or liveness. */
static int waits_on_others(const psc_body *req)
{
	switch (req->code) {
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_INVITE_INIT_REQ:
	case PSC_MSG_DEPARTURE_REQ:
		return 1;
	case PSC_MSG_INITIALIZE_REQ:
		return (req->u.initialize_req.flags & PSC_INIT_JOIN) != 0;
	default:
		return 0;
	}
}

static psc_rc request_once(psc_peer *p, psc_body *req, uint16_t ans_code, psc_answer *ans,
			   psc_err *err)
{
	const char *name = proto_msg_name(req->code);
	memset(ans, 0, sizeof(*ans));
	set_timestamp(req, psc_sdk_wall_ms());
	uint64_t txid = 0;
	while (txid == 0)
		if (RAND_bytes((uint8_t *)&txid, sizeof(txid)) != 1)
			return psc_err_set(err, PSC_E_CRYPTO, "no random transaction id");
	psc_rc rc = send_body(p, txid, req->code, p->kms_node_id, req, err);
	if (rc != PSC_OK)
		return rc;

	pending pd = {.txid = txid, .ans_code = ans_code, .ans = ans};
	int timeout_ms = waits_on_others(req) ? p->decision_timeout_ms : p->request_timeout_ms;
	int64_t deadline = psc_sdk_mono_ms() + timeout_ms;
	p->in_request = 1;
	for (;;) {
		drain(p, &pd);
		if (pd.done)
			break;
		int64_t left = deadline - psc_sdk_mono_ms();
		if (left <= 0)
			break;
		if (wait_readable(p, (long)left) < 0 && zmq_errno() != EINTR)
			break;
	}
	/* Handle whatever else is queued now, so an edge-triggered psc_peer_fd()
	 * is re-armed for the application. */
	drain(p, &pd);
	p->in_request = 0;

	if (!pd.done) {
		/* The KMS may be down or restarted: Initialize again before the next
		 * request (docs/protocol.md §10.8). */
		if (p->registered)
			p->need_reinit = 1;
		return psc_err_set(err, PSC_E_PEER_TIMEOUT,
				   "no answer to %s from the KMS at %s within %d ms (is psc-kmsd "
				   "running, and are the endpoint and CURVE key right?)",
				   name, p->kms_endpoint, timeout_ms);
	}
	if (ans->msg.code == PSC_MSG_ERROR) {
		rc = map_error(p, ans, req->code, err);
		psc_answer_clear(ans);
		return rc;
	}
	psc_err e2;
	if (proto_body_decode(ans_code, ans->msg.body, ans->msg.body_len, &ans->body, &e2) !=
	    PSC_OK) {
		psc_answer_clear(ans);
		return psc_err_set(err, PSC_E_PEER_BAD_ANSWER, "KMS answer to %s is malformed: %s",
				   name, psc_err_text(&e2));
	}
	return PSC_OK;
}

psc_rc psc_sdk_request(psc_peer *p, psc_body *req, uint16_t ans_code, psc_answer *ans, psc_err *err)
{
	if (p->in_request || (p->in_process && !p->in_reinit))
		return psc_err_set(err, PSC_E_PEER_BUSY,
				   "%s: a request is already running on this peer (requests "
				   "must not be made from callbacks)",
				   proto_msg_name(req->code));
	int is_init = req->code == PSC_MSG_INITIALIZE_REQ;
	drain_monitor(p); /* learn of a reconnect before relying on the registration */
	if (!is_init && !p->initialized && !p->in_reinit &&
	    !(p->need_reinit && p->auto_reconnect && p->registered))
		return psc_err_set(err, PSC_E_PEER_NOT_INITIALIZED,
				   "%s: call psc_peer_initialize() first",
				   proto_msg_name(req->code));
	if (!is_init && p->need_reinit && p->auto_reconnect && !p->in_reinit) {
		psc_rc rc = psc_sdk_reinit(p, err);
		if (rc != PSC_OK)
			return rc;
	}
	psc_rc rc = request_once(p, req, ans_code, ans, err);
	/* A KMS that restarted without our registration says not_initialized:
	 * register again, catch up, and retry once with a new transaction id. */
	if (rc == PSC_E_PEER_FORBIDDEN && !is_init && p->auto_reconnect && !p->in_reinit &&
	    p->last_error.psc_reason == PSC_REASON_NOT_INITIALIZED) {
		p->initialized = 0;
		psc_err e2;
		if (psc_sdk_reinit(p, &e2) == PSC_OK)
			rc = request_once(p, req, ans_code, ans, err);
	}
	/* A restarted KMS refuses requests timestamped before it started (its
	 * replay cache is new); the protocol's answer is a retry with a new
	 * transaction id and timestamp (docs/protocol.md §9). Once. */
	else if (rc == PSC_E_PEER_FORBIDDEN &&
		 p->last_error.psc_reason == PSC_REASON_STALE_TIMESTAMP) {
		rc = request_once(p, req, ans_code, ans, err);
	}
	return rc;
}

int psc_peer_fd(const psc_peer *p)
{
	if (!p || !p->dealer)
		return -1;
	int fd = -1;
	size_t len = sizeof(fd);
	if (zmq_getsockopt(p->dealer, ZMQ_FD, &fd, &len) != 0)
		return -1;
	return fd;
}

int psc_peer_next_timeout_ms(const psc_peer *p)
{
	if (!p)
		return -1;
	if (p->need_reinit && p->auto_reconnect && p->registered) {
		int64_t wait = p->reinit_after - psc_sdk_mono_ms();
		return wait <= 0 ? 0 : (int)(wait > 0x7fffffff ? 0x7fffffff : wait);
	}
	int64_t at = psc_store_next_expiry(p->store);
	/* Connection events arrive on the monitor, not on psc_peer_fd(): an
	 * auto-reconnecting peer must look at them now and then. */
	int64_t cap = p->auto_reconnect && p->registered ? PSC_PEER_MONITOR_POLL_MS : -1;
	if (at < 0)
		return (int)cap;
	int64_t left = at - psc_sdk_mono_ms();
	if (left < 0)
		left = 0;
	if (cap >= 0 && left > cap)
		left = cap;
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

int psc_peer_process(psc_peer *p, int timeout_ms)
{
	if (!p)
		return PSC_E_INVALID_ARG;
	if (p->in_request || p->in_process)
		return PSC_E_PEER_BUSY;
	if (!p->dealer)
		return PSC_E_PEER_TRANSPORT;
	p->in_process = 1;
	psc_store_expire(p->store, psc_sdk_mono_ms());
	drain_monitor(p);
	if (p->need_reinit && p->auto_reconnect && p->registered &&
	    psc_sdk_mono_ms() >= p->reinit_after) {
		psc_err e;
		if (psc_sdk_reinit(p, &e) != PSC_OK)
			psc_sdk_report(p, &e);
	}
	int n = drain(p, NULL);
	if (n == 0 && timeout_ms != 0) {
		long wait = timeout_ms;
		int t = psc_peer_next_timeout_ms(p);
		if (t >= 0 && (wait < 0 || t < wait))
			wait = t;
		if (wait_readable(p, wait) > 0)
			n = drain(p, NULL);
	}
	psc_store_expire(p->store, psc_sdk_mono_ms());
	p->in_process = 0;
	return n;
}
