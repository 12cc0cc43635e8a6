#include "kms_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define LIMITER_SLOTS 4096 /* connections tracked by the flood limiter */

struct bucket {
	uint8_t rid[KMS_ROUTING_ID_MAX];
	size_t rid_len;
	double tokens;
	uint64_t last_ms;
	uint64_t used_ms; /* last time this slot saw traffic (LRU reuse) */
};

struct kms_net {
	void *router;
	void *zap;
	int curve;
	double rate, burst;
	struct bucket *buckets;
	zmq_msg_t last; /* the payload handed out by the last recv */
	int have_last;
	kms_net_stats stats;
};

static psc_rc zfail(psc_err *err, const char *what, const char *endpoint)
{
	return psc_err_set(err, PSC_E_IO, "%s %s: %s", what, endpoint ? endpoint : "",
			   zmq_strerror(zmq_errno()));
}

psc_rc kms_net_new(kms_net **out, void *zctx, const kms_net_opts *o, psc_err *err)
{
	*out = NULL;
	/* Arguments first: sockets (and the inproc ZAP endpoint) are released
	 * asynchronously, so a failed attempt should not have created any. */
	if (o->curve && (!o->secret_key_z85 || strlen(o->secret_key_z85) != KMS_Z85_KEY_LEN))
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "CURVE is enabled but the secret key is not a 40-character Z85 "
				   "key: run psc-kmsd --gen-curve-keys");
	kms_net *n = calloc(1, sizeof(*n));
	if (!n)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	n->curve = o->curve;
	n->rate = o->msgs_per_s;
	n->burst = o->burst > 0 ? o->burst : (o->msgs_per_s > 0 ? o->msgs_per_s : 1);
	n->buckets = calloc(LIMITER_SLOTS, sizeof(*n->buckets));
	n->zap = zmq_socket(zctx, ZMQ_REP);
	n->router = zmq_socket(zctx, ZMQ_ROUTER);
	if (!n->buckets || !n->zap || !n->router) {
		kms_net_free(&n);
		return psc_err_set(err, PSC_E_NOMEM, "cannot create ZeroMQ sockets");
	}
	/* The ZAP handler must be bound before the ROUTER accepts connections. */
	if (zmq_bind(n->zap, ZAP_ENDPOINT) != 0) {
		psc_rc rc = zfail(err, "binding the ZAP handler", ZAP_ENDPOINT);
		kms_net_free(&n);
		return rc;
	}
	int one = 1, zero = 0;
	int64_t maxmsg = (int64_t)o->max_message_bytes;
	const char *domain = "psc";
	if (zmq_setsockopt(n->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)) != 0 ||
	    zmq_setsockopt(n->router, ZMQ_ROUTER_HANDOVER, &one, sizeof(one)) != 0 ||
	    zmq_setsockopt(n->router, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	    zmq_setsockopt(n->router, ZMQ_SNDHWM, &o->sndhwm, sizeof(o->sndhwm)) != 0 ||
	    zmq_setsockopt(n->router, ZMQ_RCVHWM, &o->rcvhwm, sizeof(o->rcvhwm)) != 0 ||
	    (maxmsg > 0 && zmq_setsockopt(n->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) ||
	    zmq_setsockopt(n->router, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0) {
		psc_rc rc = zfail(err, "setting ROUTER options for", o->endpoint);
		kms_net_free(&n);
		return rc;
	}
	if (o->curve) {
		if (zmq_setsockopt(n->router, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
		    zmq_setsockopt(n->router, ZMQ_CURVE_SECRETKEY, o->secret_key_z85,
				   KMS_Z85_KEY_LEN) != 0) {
			psc_rc rc = zfail(err, "enabling CURVE on", o->endpoint);
			kms_net_free(&n);
			return rc;
		}
	}
	if (zmq_bind(n->router, o->endpoint) != 0) {
		psc_rc rc = psc_err_set(err, PSC_E_IO, "cannot listen on %s: %s (is another KMS "
				   "running, or the address wrong?)", o->endpoint,
				   zmq_strerror(zmq_errno()));
		kms_net_free(&n);
		return rc;
	}
	*out = n;
	return PSC_OK;
}

void kms_net_free(kms_net **p)
{
	if (!p || !*p)
		return;
	kms_net *n = *p;
	if (n->have_last)
		zmq_msg_close(&n->last);
	if (n->router)
		zmq_close(n->router);
	if (n->zap)
		zmq_close(n->zap);
	free(n->buckets);
	free(n);
	*p = NULL;
}

void *kms_net_router(kms_net *n)
{
	return n->router;
}

void *kms_net_zap(kms_net *n)
{
	return n->zap;
}

/* ZAP (RFC 27): version, request id, domain, address, identity, mechanism,
 * credentials... Any CURVE key is accepted; the KMS binds keys to Node-IDs at
 * Initialize. The reply's User-Id is the Z85 client key, which every message
 * from that connection then carries as its "User-Id" property. */
void kms_net_zap_serve(kms_net *n)
{
	for (;;) {
		zmq_msg_t part[8];
		int nparts = 0, more = 1;
		while (more && nparts < 8) {
			zmq_msg_init(&part[nparts]);
			if (zmq_msg_recv(&part[nparts], n->zap, nparts ? 0 : ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&part[nparts]);
				if (nparts == 0)
					return;
				more = 0;
				break;
			}
			more = zmq_msg_more(&part[nparts]);
			nparts++;
		}
		while (more) { /* drain an oversized request */
			zmq_msg_t junk;
			zmq_msg_init(&junk);
			if (zmq_msg_recv(&junk, n->zap, 0) < 0) {
				zmq_msg_close(&junk);
				break;
			}
			more = zmq_msg_more(&junk);
			zmq_msg_close(&junk);
		}
		n->stats.zap_requests++;
		char status[4] = "400", user[KMS_Z85_KEY_LEN + 1] = "";
		if (nparts >= 6) {
			const char *mech = zmq_msg_data(&part[5]);
			size_t mlen = zmq_msg_size(&part[5]);
			if (mlen == 5 && memcmp(mech, "CURVE", 5) == 0 && nparts >= 7 &&
			    zmq_msg_size(&part[6]) == KMS_CURVE_KEY_LEN) {
				zmq_z85_encode(user, zmq_msg_data(&part[6]), KMS_CURVE_KEY_LEN);
				memcpy(status, "200", 4);
			} else if (mlen == 4 && memcmp(mech, "NULL", 4) == 0 && !n->curve) {
				memcpy(status, "200", 4);
			}
		}
		const char *reqid = nparts >= 2 ? zmq_msg_data(&part[1]) : "";
		size_t reqid_len = nparts >= 2 ? zmq_msg_size(&part[1]) : 0;
		zmq_send(n->zap, "1.0", 3, ZMQ_SNDMORE);
		zmq_send(n->zap, reqid, reqid_len, ZMQ_SNDMORE);
		zmq_send(n->zap, status, 3, ZMQ_SNDMORE);
		zmq_send(n->zap, status[0] == '2' ? "OK" : "denied", status[0] == '2' ? 2 : 6,
			 ZMQ_SNDMORE);
		zmq_send(n->zap, user, strlen(user), ZMQ_SNDMORE);
		zmq_send(n->zap, "", 0, 0);
		for (int i = 0; i < nparts; i++)
			zmq_msg_close(&part[i]);
	}
}

static int over_limit(kms_net *n, const uint8_t *rid, size_t rid_len, uint64_t now_ms)
{
	if (n->rate <= 0)
		return 0;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < rid_len; i++)
		h = (h ^ rid[i]) * 1099511628211ull;
	/* Small set-associative table: 4 ways; the least recently used way is reused. */
	size_t base = (size_t)(h % (LIMITER_SLOTS / 4)) * 4, pick = base;
	struct bucket *b = NULL;
	for (size_t i = base; i < base + 4; i++) {
		if (n->buckets[i].rid_len == rid_len && memcmp(n->buckets[i].rid, rid, rid_len) == 0) {
			b = &n->buckets[i];
			break;
		}
		if (n->buckets[i].used_ms < n->buckets[pick].used_ms)
			pick = i;
	}
	if (!b) {
		b = &n->buckets[pick];
		memcpy(b->rid, rid, rid_len);
		b->rid_len = rid_len;
		b->tokens = n->burst;
		b->last_ms = now_ms;
	}
	b->used_ms = now_ms;
	b->tokens += (double)(now_ms - b->last_ms) / 1000.0 * n->rate;
	if (b->tokens > n->burst)
		b->tokens = n->burst;
	b->last_ms = now_ms;
	if (b->tokens < 1.0)
		return 1;
	b->tokens -= 1.0;
	return 0;
}

psc_rc kms_net_recv(kms_net *n, kms_inbound *in, int *got, uint64_t now_ms)
{
	*got = 0;
	if (n->have_last) {
		zmq_msg_close(&n->last);
		n->have_last = 0;
	}
	for (;;) {
		zmq_msg_t rid;
		zmq_msg_init(&rid);
		if (zmq_msg_recv(&rid, n->router, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&rid);
			return errno == EAGAIN ? PSC_OK : PSC_E_IO;
		}
		zmq_msg_init(&n->last);
		int ok = zmq_msg_more(&rid) && zmq_msg_recv(&n->last, n->router, 0) >= 0;
		int extra = ok && zmq_msg_more(&n->last);
		while (extra) { /* one ZeroMQ message = one frame = one RELOAD message */
			zmq_msg_t junk;
			zmq_msg_init(&junk);
			extra = zmq_msg_recv(&junk, n->router, 0) >= 0 && zmq_msg_more(&junk);
			zmq_msg_close(&junk);
			ok = 0;
		}
		if (!ok || zmq_msg_size(&n->last) == 0 || zmq_msg_size(&rid) > KMS_ROUTING_ID_MAX) {
			n->stats.malformed_frames++;
			zmq_msg_close(&n->last);
			zmq_msg_close(&rid);
			continue;
		}
		n->have_last = 1;
		n->stats.received++;
		in->routing_id_len = zmq_msg_size(&rid);
		memcpy(in->routing_id, zmq_msg_data(&rid), in->routing_id_len);
		zmq_msg_close(&rid);
		const char *uid = zmq_msg_gets(&n->last, "User-Id");
		snprintf(in->user_id, sizeof(in->user_id), "%s", uid ? uid : "");
		in->data = zmq_msg_data(&n->last);
		in->len = zmq_msg_size(&n->last);
		in->limited = over_limit(n, in->routing_id, in->routing_id_len, now_ms);
		if (in->limited)
			n->stats.rate_limited++;
		*got = 1;
		return PSC_OK;
	}
}

psc_rc kms_net_send(kms_net *n, const uint8_t *rid, size_t rid_len, const uint8_t *data,
		    size_t len)
{
	if (zmq_send(n->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(n->router, data, len, ZMQ_DONTWAIT) < 0) {
		n->stats.send_failed++;
		return PSC_E_IO;
	}
	n->stats.sent++;
	return PSC_OK;
}

void kms_net_stats_get(const kms_net *n, kms_net_stats *out)
{
	*out = n->stats;
}
