/*
 * psc_chan — the group channel over ZeroMQ PUB/SUB (see psc_chan.h for why
 * PUB/SUB, the relay mode and what this module owns).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <zmq.h>

#include "psc_chan.h"
#include "psc_peer_int.h"
#include "psc_seal.h"

typedef struct chan_prefix {
	uint8_t b[PSC_CHAN_PREFIX_LEN];
} chan_prefix;

struct psc_peer_chan {
	psc_peer *peer; /* borrowed */
	psc_peer_msg *msg;
	void *pub;
	void *sub;
	psc_peer_chan_recv_fn on_message;
	void *user;
	int relay; /* relay mode: both sockets connected to a psc-relay */

	char **conns; /* endpoints the SUB socket is connected to */
	size_t n_conns;
	chan_prefix *subs; /* prefixes subscribed */
	size_t n_subs;
	uint64_t fingerprint; /* of the PSC set and epochs at the last sync */
	int64_t synced_at;    /* monotonic ms */
	int synced;

	uint8_t *buf; /* plaintext buffer for opening */
	size_t buf_cap;
	psc_peer_chan_stats st;
};

void psc_chan_prefix(const uint8_t psc_id[PSC_PEER_ID_LEN], uint16_t suite, int sender_signatures,
		     uint8_t out[PSC_CHAN_PREFIX_LEN])
{
	out[0] = PSC_SEAL_VERSION;
	out[1] = sender_signatures ? PSC_SEAL_FLAG_SIGNED : 0;
	out[2] = (uint8_t)(suite >> 8);
	out[3] = (uint8_t)suite;
	memcpy(out + 4, psc_id, PSC_PEER_ID_LEN);
}

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
	const uint8_t *b = data;
	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* A cheap summary of what decides the connections: the PSCs held, their
 * epochs (membership changes rekey) and member counts. */
static uint64_t chan_fingerprint(const psc_peer *p)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	size_t n = psc_peer_psc_count(p);
	h = fnv(h, &n, sizeof(n));
	for (size_t i = 0; i < n; i++) {
		psc_peer_psc_info in;
		if (psc_peer_psc_at(p, i, &in) != PSC_OK)
			continue;
		h = fnv(h, in.psc_id, sizeof(in.psc_id));
		h = fnv(h, &in.epoch, sizeof(in.epoch));
		h = fnv(h, &in.n_members, sizeof(in.n_members));
	}
	return h;
}

static int has_str(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return 1;
	return 0;
}

static int has_prefix(const chan_prefix *v, size_t n, const uint8_t *b)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(v[i].b, b, PSC_CHAN_PREFIX_LEN) == 0)
			return 1;
	return 0;
}

static void free_strs(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

psc_rc psc_chan_sync(psc_peer_chan *c, int force, psc_err *err)
{
	psc_peer *p = c->peer;
	/* Relay mode: only the subscriptions; the relay does the fan-out. */
	const int relay = c->relay;
	uint64_t fp = chan_fingerprint(p);
	int64_t now = psc_sdk_mono_ms();
	if (!force && c->synced && fp == c->fingerprint && now - c->synced_at < PSC_CHAN_RESYNC_MS)
		return PSC_OK;

	/* The wanted sets. */
	size_t n_psc = psc_peer_psc_count(p);
	chan_prefix *want_subs = calloc(n_psc ? n_psc : 1, sizeof(*want_subs));
	size_t n_want_subs = 0, n_want_conns = 0, cap_conns = 0;
	char **want_conns = NULL;
	psc_rc rc = PSC_OK;
	if (!want_subs)
		return psc_err_set(err, PSC_E_NOMEM, "group channel: out of memory");
	for (size_t i = 0; i < n_psc && rc == PSC_OK; i++) {
		psc_peer_psc_info in;
		if (psc_peer_psc_at(p, i, &in) != PSC_OK)
			continue;
		psc_chan_prefix(in.psc_id, in.suite, in.sender_signatures,
				want_subs[n_want_subs].b);
		if (!has_prefix(want_subs, n_want_subs, want_subs[n_want_subs].b))
			n_want_subs++;
		for (size_t j = 0; !relay && j < in.n_members; j++) {
			psc_peer_member m;
			if (psc_peer_psc_member(p, in.psc_id, j, &m) != PSC_OK)
				break;
			if (memcmp(m.node_id, p->node_id, PSC_PEER_ID_LEN) == 0 || !m.endpoint[0] ||
			    (p->data_endpoint && strcmp(m.endpoint, p->data_endpoint) == 0) ||
			    has_str(want_conns, n_want_conns, m.endpoint))
				continue;
			if (n_want_conns == cap_conns) {
				size_t nc = cap_conns ? cap_conns * 2 : 16;
				char **nv = realloc(want_conns, nc * sizeof(*nv));
				if (!nv) {
					rc = psc_err_set(err, PSC_E_NOMEM,
							 "group channel: out of memory");
					break;
				}
				want_conns = nv;
				cap_conns = nc;
			}
			want_conns[n_want_conns] = strdup(m.endpoint);
			if (!want_conns[n_want_conns]) {
				rc = psc_err_set(err, PSC_E_NOMEM, "group channel: out of memory");
				break;
			}
			n_want_conns++;
		}
	}
	if (rc != PSC_OK) {
		free(want_subs);
		free_strs(want_conns, n_want_conns);
		return rc;
	}

	/* Subscriptions: drop the PSCs no longer held, add the new ones. */
	for (size_t i = 0; i < c->n_subs; i++)
		if (!has_prefix(want_subs, n_want_subs, c->subs[i].b))
			(void)zmq_setsockopt(c->sub, ZMQ_UNSUBSCRIBE, c->subs[i].b,
					     PSC_CHAN_PREFIX_LEN);
	for (size_t i = 0; i < n_want_subs; i++)
		if (!has_prefix(c->subs, c->n_subs, want_subs[i].b) &&
		    zmq_setsockopt(c->sub, ZMQ_SUBSCRIBE, want_subs[i].b, PSC_CHAN_PREFIX_LEN) != 0)
			rc = psc_err_set(err, PSC_E_PEER_TRANSPORT, "group channel: subscribe: %s",
					 zmq_strerror(zmq_errno()));
	free(c->subs);
	c->subs = want_subs;
	c->n_subs = n_want_subs;

	/* Connections: members gone are disconnected, new ones connected. A
	 * member whose endpoint does not connect is skipped (and retried at the
	 * next sync): one bad entry must not cut the others off. */
	for (size_t i = 0; i < c->n_conns; i++)
		if (!has_str(want_conns, n_want_conns, c->conns[i]))
			(void)zmq_disconnect(c->sub, c->conns[i]);
	size_t kept = 0;
	for (size_t i = 0; i < n_want_conns; i++) {
		if (has_str(c->conns, c->n_conns, want_conns[i]) ||
		    zmq_connect(c->sub, want_conns[i]) == 0) {
			want_conns[kept++] = want_conns[i];
		} else {
			psc_err e = {0};
			psc_err_set(&e, PSC_E_PEER_TRANSPORT,
				    "group channel: cannot connect to member endpoint '%s': %s",
				    want_conns[i], zmq_strerror(zmq_errno()));
			psc_sdk_report(p, &e);
			free(want_conns[i]);
		}
	}
	free_strs(c->conns, c->n_conns);
	c->conns = want_conns;
	c->n_conns = kept;
	c->fingerprint = fp;
	c->synced_at = now;
	c->synced = 1;
	return rc;
}

size_t psc_chan_test_connections(const psc_peer_chan *c)
{
	return c ? c->n_conns : 0;
}

/* Checks the relay settings before any socket exists: a clear error naming
 * the field instead of a connection that silently never comes up. */
static psc_rc relay_check(const psc_peer_chan_relay *r, psc_err *err)
{
	const char *eps[2] = {r->publish_endpoint, r->subscribe_endpoint};
	const char *names[2] = {"publish_endpoint", "subscribe_endpoint"};
	for (int i = 0; i < 2; i++) {
		if (!eps[i] || !eps[i][0])
			return psc_err_set(err, PSC_E_PEER_CONFIG,
					   "group channel: relay %s is missing", names[i]);
		if (strlen(eps[i]) > PSC_MAX_ENDPOINT)
			return psc_err_set(err, PSC_E_PEER_CONFIG,
					   "group channel: relay %s is %zu bytes (at most %d)",
					   names[i], strlen(eps[i]), PSC_MAX_ENDPOINT);
	}
	if (strcmp(eps[0], eps[1]) == 0)
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "group channel: relay publish_endpoint and subscribe_endpoint "
				   "are both '%s': they are the relay's two different endpoints",
				   eps[0]);
	if (r->curve_key) {
		uint8_t k[32];
		if (strlen(r->curve_key) != 40 || !zmq_z85_decode(k, r->curve_key))
			return psc_err_set(err, PSC_E_PEER_CONFIG,
					   "group channel: relay curve_key is not a Z85 CURVE "
					   "public key (40 characters; psc-relay prints it at start)");
	}
	return PSC_OK;
}

/* Relay mode: a fresh CURVE client key pair for one socket (the relay accepts
 * any client: CURVE here protects the transport, not membership). */
static psc_rc relay_curve(void *sock, const char *server_key, psc_err *err)
{
	char pub[41], sec[41];
	psc_rc rc = PSC_OK;
	if (zmq_curve_keypair(pub, sec) != 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_key, 40) != 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
	    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0)
		rc = psc_err_set(err, PSC_E_PEER_TRANSPORT, "group channel: relay CURVE setup: %s",
				 zmq_strerror(zmq_errno()));
	OPENSSL_cleanse(sec, sizeof(sec));
	return rc;
}

static psc_rc relay_connect(psc_peer_chan *c, const psc_peer_chan_relay *r, psc_err *err)
{
	if (r->curve_key) {
		psc_rc rc = relay_curve(c->pub, r->curve_key, err);
		if (rc == PSC_OK)
			rc = relay_curve(c->sub, r->curve_key, err);
		if (rc != PSC_OK)
			return rc;
	}
	if (zmq_connect(c->pub, r->publish_endpoint) != 0)
		return psc_err_set(err, PSC_E_PEER_TRANSPORT,
				   "group channel: cannot connect to the relay publish endpoint "
				   "'%s': %s",
				   r->publish_endpoint, zmq_strerror(zmq_errno()));
	if (zmq_connect(c->sub, r->subscribe_endpoint) != 0)
		return psc_err_set(err, PSC_E_PEER_TRANSPORT,
				   "group channel: cannot connect to the relay subscribe endpoint "
				   "'%s': %s",
				   r->subscribe_endpoint, zmq_strerror(zmq_errno()));
	return PSC_OK;
}

psc_rc psc_peer_chan_new(psc_peer_chan **out, psc_peer *peer, const psc_peer_chan_config *cfg,
			 psc_err *err)
{
	if (!out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_chan_new: missing argument");
	*out = NULL;
	if (!peer)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_chan_new: missing argument");
	const psc_peer_chan_relay *relay = cfg ? cfg->relay : NULL;
	psc_rc rc = relay ? relay_check(relay, err) : PSC_OK;
	if (rc != PSC_OK)
		return rc;
	if (!relay && (!peer->data_endpoint || !peer->data_endpoint[0]))
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "group channel: the peer has no data endpoint to publish on");
	psc_peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return psc_err_set(err, PSC_E_NOMEM, "group channel: out of memory");
	c->peer = peer;
	c->relay = relay != NULL;
	if (cfg) {
		c->on_message = cfg->on_message;
		c->user = cfg->user;
	}
	rc = psc_peer_msg_new(&c->msg, peer, cfg ? cfg->msg : NULL, err);
	if (rc != PSC_OK) {
		free(c);
		return rc;
	}
	c->pub = zmq_socket(peer->zctx, ZMQ_PUB);
	c->sub = zmq_socket(peer->zctx, ZMQ_SUB);
	if (!c->pub || !c->sub) {
		rc = psc_err_set(err, PSC_E_PEER_TRANSPORT, "group channel: zmq_socket: %s",
				 zmq_strerror(zmq_errno()));
		goto fail;
	}
	int linger = PSC_CHAN_PUB_LINGER_MS, zero = 0;
	int64_t maxsz = (int64_t)PSC_PEER_MSG_FRAME_MAX(PSC_PEER_MSG_MAX);
	(void)zmq_setsockopt(c->pub, ZMQ_LINGER, &linger, sizeof(linger));
	(void)zmq_setsockopt(c->sub, ZMQ_LINGER, &zero, sizeof(zero));
	(void)zmq_setsockopt(c->sub, ZMQ_MAXMSGSIZE, &maxsz, sizeof(maxsz));
	if (relay) {
		rc = relay_connect(c, relay, err);
		if (rc != PSC_OK)
			goto fail;
	} else if (zmq_bind(c->pub, peer->data_endpoint) != 0) {
		rc = psc_err_set(err, PSC_E_PEER_TRANSPORT,
				 "group channel: cannot bind the data endpoint '%s': %s",
				 peer->data_endpoint, zmq_strerror(zmq_errno()));
		goto fail;
	}
	rc = psc_chan_sync(c, 1, err);
	if (rc != PSC_OK)
		goto fail;
	*out = c;
	return PSC_OK;
fail:
	psc_peer_chan_free(&c);
	return rc;
}

void psc_peer_chan_free(psc_peer_chan **cp)
{
	if (!cp || !*cp)
		return;
	psc_peer_chan *c = *cp;
	if (c->pub)
		zmq_close(c->pub);
	if (c->sub)
		zmq_close(c->sub);
	psc_peer_msg_free(&c->msg);
	free_strs(c->conns, c->n_conns);
	free(c->subs);
	if (c->buf) {
		OPENSSL_cleanse(c->buf, c->buf_cap);
		free(c->buf);
	}
	free(c);
	*cp = NULL;
}

psc_rc psc_peer_send(psc_peer_chan *c, const uint8_t psc_id[PSC_PEER_ID_LEN], const uint8_t *buf,
		     size_t len, psc_err *err)
{
	if (!c || !psc_id || (!buf && len))
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_send: missing argument");
	if (len > PSC_PEER_MSG_MAX)
		return psc_err_set(err, PSC_E_PEER_SEAL_TOO_LARGE,
				   "group message of %zu bytes exceeds %d", len, PSC_PEER_MSG_MAX);
	size_t cap = PSC_PEER_MSG_FRAME_MAX(len), flen = 0;
	zmq_msg_t zm;
	if (zmq_msg_init_size(&zm, cap) != 0)
		return psc_err_set(err, PSC_E_NOMEM, "group channel: out of memory");
	psc_rc rc = psc_peer_seal(c->msg, psc_id, buf ? buf : (const uint8_t *)"", len,
				  zmq_msg_data(&zm), cap, &flen, err);
	if (rc != PSC_OK) {
		zmq_msg_close(&zm);
		return rc;
	}
	/* The frame is ciphertext; shrink it to its real size by copying. */
	zmq_msg_t out;
	if (zmq_msg_init_size(&out, flen) != 0) {
		zmq_msg_close(&zm);
		return psc_err_set(err, PSC_E_NOMEM, "group channel: out of memory");
	}
	memcpy(zmq_msg_data(&out), zmq_msg_data(&zm), flen);
	zmq_msg_close(&zm);
	/* A PUB never blocks: at the high-water mark a subscriber loses the frame.
	 * libzmq learns that a subscriber drained its queue only when the socket
	 * processes its pending commands; asking for ZMQ_EVENTS makes it do so
	 * now, so a burst does not hit a high-water mark that is already gone
	 * (seal_bench lost frames without this). */
	int events = 0;
	size_t ev_len = sizeof(events);
	(void)zmq_getsockopt(c->pub, ZMQ_EVENTS, &events, &ev_len);
	if (zmq_msg_send(&out, c->pub, ZMQ_DONTWAIT) < 0) {
		int e = zmq_errno();
		zmq_msg_close(&out);
		return psc_err_set(err, PSC_E_PEER_TRANSPORT, "group channel: publish: %s",
				   zmq_strerror(e));
	}
	c->st.sent++;
	return PSC_OK;
}

static void count_drop(psc_peer_chan *c, psc_rc rc)
{
	c->st.dropped++;
	switch (rc) {
	case PSC_E_PEER_SEAL_STALE_EPOCH:
	case PSC_E_PEER_SEAL_FUTURE_EPOCH:
		c->st.dropped_epoch++;
		break;
	case PSC_E_PEER_SEAL_REPLAY:
		c->st.dropped_replay++;
		break;
	case PSC_E_PEER_SEAL_BAD_TAG:
	case PSC_E_PEER_SEAL_BAD_SIGNATURE:
	case PSC_E_PEER_SEAL_UNSIGNED:
	case PSC_E_PEER_SEAL_NO_CERT:
		c->st.dropped_auth++;
		break;
	case PSC_E_PEER_UNKNOWN_PSC:
		c->st.dropped_unknown_psc++;
		break;
	default:
		break;
	}
}

/* Opens and delivers every frame waiting on the SUB socket (bounded). */
static int drain(psc_peer_chan *c)
{
	int n = 0;
	while (n < PSC_CHAN_DRAIN_MAX) {
		zmq_msg_t zm;
		zmq_msg_init(&zm);
		if (zmq_msg_recv(&zm, c->sub, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&zm);
			break;
		}
		n++;
		size_t len = zmq_msg_size(&zm);
		/* Through a relay a member gets its own frames back: skip them
		 * unopened (the sender Node-ID sits at a fixed offset, §13.2). */
		if (c->relay && len >= PSC_CHAN_SENDER_OFF + PSC_PEER_ID_LEN &&
		    memcmp((const uint8_t *)zmq_msg_data(&zm) + PSC_CHAN_SENDER_OFF,
			   c->peer->node_id, PSC_PEER_ID_LEN) == 0) {
			zmq_msg_close(&zm);
			continue;
		}
		if (len > c->buf_cap) {
			uint8_t *nb = malloc(len);
			if (!nb) {
				zmq_msg_close(&zm);
				count_drop(c, PSC_E_NOMEM);
				continue;
			}
			if (c->buf) {
				OPENSSL_cleanse(c->buf, c->buf_cap);
				free(c->buf);
			}
			c->buf = nb;
			c->buf_cap = len;
		}
		size_t out_len = 0;
		psc_peer_msg_info info;
		psc_rc rc = psc_peer_open(c->msg, zmq_msg_data(&zm), len, c->buf, c->buf_cap,
					  &out_len, &info, NULL);
		zmq_msg_close(&zm);
		if (rc != PSC_OK) {
			count_drop(c, rc);
			continue;
		}
		c->st.delivered++;
		if (c->on_message)
			c->on_message(c->user, &info, c->buf, out_len);
		OPENSSL_cleanse(c->buf, out_len);
	}
	return n;
}

/* A failed sync goes to on_error and is retried at the next call. */
static void sync_or_report(psc_peer_chan *c)
{
	psc_err e = {0};
	if (psc_chan_sync(c, 0, &e) != PSC_OK) {
		c->synced = 0;
		psc_sdk_report(c->peer, &e);
	}
}

int psc_peer_chan_process(psc_peer_chan *c, int timeout_ms)
{
	if (!c)
		return PSC_E_INVALID_ARG;
	psc_peer *p = c->peer;
	int r = psc_peer_process(p, 0);
	if (r < 0)
		return r;
	int n = r;
	sync_or_report(c);
	n += drain(c);
	if (n > 0 || timeout_ms == 0)
		return n;

	int wait = timeout_ms;
	int t = psc_peer_next_timeout_ms(p);
	if (t >= 0 && (wait < 0 || t < wait))
		wait = t;
	zmq_pollitem_t items[2] = {{c->sub, 0, ZMQ_POLLIN, 0}, {p->dealer, 0, ZMQ_POLLIN, 0}};
	if (zmq_poll(items, p->dealer ? 2 : 1, wait) < 0 && zmq_errno() != EINTR)
		return PSC_E_PEER_TRANSPORT;
	r = psc_peer_process(p, 0);
	if (r < 0)
		return r;
	n += r;
	sync_or_report(c);
	n += drain(c);
	return n;
}

int psc_peer_chan_fd(const psc_peer_chan *c)
{
	if (!c)
		return -1;
	int fd = -1;
	size_t sz = sizeof(fd);
	if (zmq_getsockopt(c->sub, ZMQ_FD, &fd, &sz) != 0)
		return -1;
	return fd;
}

psc_rc psc_peer_chan_update(psc_peer_chan *c, psc_err *err)
{
	if (!c)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "psc_peer_chan_update: missing argument");
	return psc_chan_sync(c, 1, err);
}

void psc_peer_chan_stats_get(const psc_peer_chan *c, psc_peer_chan_stats *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	*out = c->st;
	out->connections = c->relay ? 1 : c->n_conns;
	out->subscriptions = c->n_subs;
}
