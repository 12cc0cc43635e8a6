/*
 * libpscpeer against a real ROUTER socket played by the test (fake_kms.c):
 * every flow the peer runs, every KMS request it answers, and every message it
 * must refuse. Messages are real, signed with the test CA's KMS key; epoch
 * secrets are really wrapped to the peer's key.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <zmq.h>

#include "fake_kms.h"
#include "proto_cert.h"
#include "psc/peer.h"
#include "psc_peer_int.h"
#include "psc_test.h"

/* What the callbacks saw. */
typedef struct seen {
	int epochs, gones, queries, invites, errors, reconnects;
	uint64_t last_epoch;
	psc_peer_reason last_reason;
	psc_rc last_error;
	char last_error_text[PSC_ERR_DETAIL_MAX];
	int query_answer, invite_answer;
	uint64_t last_decision; /* decision_id of the last query or invitation */
	char invite_name[256];
	psc_peer *self; /* for the callback that tries to re-enter */
	psc_rc reentry_rc;
} seen;

typedef struct t {
	fake_kms k;
	psc_peer *p;
	seen s;
	psc_peer_callbacks cb;
	uint8_t me[16];
	uint8_t other[16]; /* peer2's Node-ID, another member */
	uint8_t psc[16];
	uint8_t secret[32];
} t;

static void cb_epoch(void *u, const uint8_t id[16], uint64_t e, psc_peer_reason r)
{
	(void)id;
	seen *s = u;
	s->epochs++;
	s->last_epoch = e;
	s->last_reason = r;
}

static void cb_gone(void *u, const uint8_t id[16], uint64_t e, psc_peer_reason r)
{
	(void)id;
	seen *s = u;
	s->gones++;
	s->last_epoch = e;
	s->last_reason = r;
}

static int cb_query(void *u, const psc_peer_query *q)
{
	(void)q;
	seen *s = u;
	s->queries++;
	s->last_decision = q->decision_id;
	if (s->self) {
		uint64_t e;
		s->reentry_rc = psc_peer_join(s->self, q->psc_id, &e, NULL);
	}
	return s->query_answer;
}

static int cb_invite(void *u, const psc_peer_invitation *inv)
{
	seen *s = u;
	s->invites++;
	s->last_decision = inv->decision_id;
	snprintf(s->invite_name, sizeof(s->invite_name), "%s", inv->psc_name);
	return s->invite_answer;
}

static void cb_error(void *u, const psc_err *err)
{
	seen *s = u;
	s->errors++;
	s->last_error = err->rc;
	snprintf(s->last_error_text, sizeof(s->last_error_text), "%s", psc_err_text(err));
}

static void cb_reconnect(void *u)
{
	((seen *)u)->reconnects++;
}

static int new_peer(t *x, const char *name, int curve, int timeout_ms, int auto_reconnect)
{
	char cert[4096], key[4096], kcert[4096];
	snprintf(cert, sizeof(cert), "%s", pt_ca_path(name));
	strcat(cert, ".crt.pem");
	snprintf(key, sizeof(key), "%s", pt_ca_path(name));
	strcat(key, ".key.pem");
	snprintf(kcert, sizeof(kcert), "%s", pt_ca_path("kms.crt.pem"));
	x->cb =
	    (psc_peer_callbacks){cb_epoch, cb_gone, cb_query, cb_invite, cb_error, cb_reconnect};
	psc_peer_config cfg = {
	    .cert_file = cert,
	    .key_file = key,
	    .kms_endpoint = x->k.endpoint,
	    .kms_cert_file = kcert,
	    .kms_curve_key = curve ? x->k.curve_pub : NULL,
	    .overlay = FK_OVERLAY,
	    .data_endpoint = "tcp://127.0.0.1:7002",
	    .request_timeout_ms = timeout_ms,
	    .decision_timeout_ms = 2 * timeout_ms,
	    .auto_reconnect = auto_reconnect,
	    .callbacks = &x->cb,
	    .user = &x->s,
	};
	psc_err err = {0};
	psc_rc rc = psc_peer_new(&x->p, &cfg, &err);
	if (rc != PSC_OK)
		print_error("psc_peer_new: %s\n", psc_err_text(&err));
	return rc;
}

static int setup_named(void **state, const char *peer, int curve)
{
	t *x = calloc(1, sizeof(*x));
	assert_non_null(x);
	assert_int_equal(fk_open(&x->k, peer, curve), 0);
	assert_int_equal(new_peer(x, peer, curve, 2000, 0), PSC_OK);
	psc_peer_node_id(x->p, x->me);
	assert_memory_equal(x->me, x->k.peer_node, 16);
	assert_int_equal(pt_ca_nodeid("peer2", x->other), 0);
	memset(x->psc, 0xa5, sizeof(x->psc));
	for (int i = 0; i < 32; i++)
		x->secret[i] = (uint8_t)(i + 1);
	*state = x;
	return 0;
}

static int setup(void **state)
{
	return setup_named(state, "peer1", 0);
}

static int setup_rsa(void **state)
{
	return setup_named(state, "rsa1", 0);
}

static int teardown(void **state)
{
	t *x = *state;
	fk_serve_stop(&x->k);
	psc_peer_free(&x->p);
	assert_null(x->p);
	fk_close(&x->k);
	free(x);
	return 0;
}

/* --- scripted KMS answers ------------------------------------------------ */

typedef struct script {
	t *x;
	int n_init, n_catchup, n_lookup, n_other;
	uint8_t wrap_alg;
	uint64_t epoch;		      /* material epoch in Initialize memberships; 0 = none */
	int lookup_not_init;	      /* answer the first Lookup with Forbidden/not_initialized */
	int error_code, error_reason; /* answer every non-Initialize request with this */
	int query_first;	      /* on Join: send a Query first and wait for its answer */
	int query_answered, query_accept;
	fk_msg last; /* a copy of the last non-Initialize request's body fields */
	uint16_t last_code;
	int last_verified;
	psc_body last_body; /* pointers dangle after the handler returns: scalars only */
	size_t last_n_certs;
	int catchup_held;
} script;

static void answer_init(fake_kms *k, fk_msg *req, script *sc)
{
	t *x = sc->x;
	psc_body a = {.code = PSC_MSG_INITIALIZE_ANS};
	a.u.initialize_ans.kms_time = fk_now_ms();
	a.u.initialize_ans.suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	a.u.initialize_ans.wrap_alg = sc->wrap_alg;
	a.u.initialize_ans.join.status = PSC_STATUS_NOT_REQUESTED;
	a.u.initialize_ans.establish.status = PSC_STATUS_NOT_REQUESTED;
	proto_material m;
	fk_mat_store st;
	if (sc->epoch) {
		assert_int_equal(fk_material(k, &m, &st, sc->wrap_alg, x->psc, sc->epoch,
					     "ops-room", x->me, 1000, x->secret),
				 0);
		a.u.initialize_ans.memberships.items = &m;
		a.u.initialize_ans.memberships.n = 1;
	}
	assert_int_equal(fk_answer(k, req, &a), 0);
}

static void handler(fake_kms *k, fk_msg *req, void *arg)
{
	script *sc = arg;
	if (req->m.code == PSC_MSG_INITIALIZE_REQ) {
		sc->n_init++;
		sc->last_n_certs = req->m.n_certs;
		sc->last_verified = req->verified;
		answer_init(k, req, sc);
		return;
	}
	sc->last_code = req->m.code;
	sc->last_verified = req->verified;
	sc->last_n_certs = req->m.n_certs;
	sc->last_body = req->b;
	if (sc->error_code) {
		fk_error(k, req, (uint16_t)sc->error_code, (uint16_t)sc->error_reason,
			 "denied by rule r7");
		return;
	}
	switch (req->m.code) {
	case PSC_MSG_LOOKUP_REQ: {
		sc->n_lookup++;
		if (sc->lookup_not_init && sc->n_lookup == 1) {
			fk_error(k, req, PSC_RERR_FORBIDDEN, PSC_REASON_NOT_INITIALIZED,
				 "who are you?");
			return;
		}
		psc_body a = {.code = PSC_MSG_LOOKUP_ANS};
		memcpy(a.u.lookup_ans.psc_id, sc->x->psc, 16);
		memcpy(a.u.lookup_ans.owner, sc->x->other, 16);
		a.u.lookup_ans.member_count = 3;
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_CATCHUP_REQ: {
		sc->n_catchup++;
		sc->catchup_held = (int)req->b.u.catchup_req.held.n;
		psc_body a = {.code = PSC_MSG_CATCHUP_ANS};
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_JOIN_REQ: {
		if (sc->query_first) {
			/* A KMS-initiated request arrives while the peer waits for its
			 * own answer; only after the owner decided does the Join end. */
			psc_body q = {.code = PSC_MSG_QUERY_REQ};
			memcpy(q.u.query_req.psc_id, sc->x->psc, 16);
			memcpy(q.u.query_req.requester, sc->x->other, 16);
			q.u.query_req.requester_subject =
			    (proto_bytes){(const uint8_t *)"CN=peer2", 8};
			q.u.query_req.timeout_ms = 5000;
			fk_send_req(k, &q, 0, NULL);
			fk_msg qa;
			if (fk_recv(k, 3000, &qa) == 0 && qa.m.code == PSC_MSG_QUERY_ANS &&
			    qa.verified) {
				sc->query_answered = 1;
				sc->query_accept = qa.b.u.decision_ans.accept;
			}
			fk_msg_free(&qa);
		}
		psc_body a = {.code = PSC_MSG_JOIN_ANS};
		fk_mat_store st;
		assert_int_equal(fk_material(k, &a.u.join_ans.material, &st, sc->wrap_alg,
					     req->b.u.psc_req.psc_id, 7, "ops-room", sc->x->other,
					     1000, sc->x->secret),
				 0);
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_ESTABLISH_REQ: {
		psc_body a = {.code = PSC_MSG_ESTABLISH_ANS};
		fk_mat_store st;
		uint8_t id[16];
		memset(id, 0x3c, 16);
		assert_int_equal(fk_material(k, &a.u.establish_ans.material, &st, sc->wrap_alg, id,
					     1, "new-room", sc->x->me, 0, sc->x->secret),
				 0);
		proto_node_id_t pend[1];
		memcpy(pend[0], sc->x->other, 16);
		a.u.establish_ans.pending.items = pend;
		a.u.establish_ans.pending.n = 1;
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_INVITE_INIT_REQ: {
		psc_body a = {.code = PSC_MSG_INVITE_INIT_ANS};
		a.u.invite_init_ans.outcome = PSC_INVITE_ACCEPTED;
		a.u.invite_init_ans.epoch = 12;
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_DEPARTURE_REQ: {
		psc_body a = {.code = PSC_MSG_DEPARTURE_ANS};
		a.u.departure_ans.outcome = PSC_DEPARTURE_EVICTED;
		fk_answer(k, req, &a);
		return;
	}
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ: {
		psc_body a = {.code = (uint16_t)(req->m.code + 1)};
		fk_answer(k, req, &a);
		return;
	}
	default:
		sc->n_other++;
		return;
	}
}

/* Initialize with the peer holding x->psc at `epoch` (0 = nothing). */
static void init_with(t *x, script *sc, uint64_t epoch)
{
	memset(sc, 0, sizeof(*sc));
	sc->x = x;
	sc->wrap_alg = PSC_WRAP_ECDH_P256_AESPRF_KWP;
	sc->epoch = epoch;
	assert_int_equal(fk_serve_start(&x->k, handler, sc), 0);
	psc_peer_init_result r;
	psc_err err = {0};
	psc_rc rc = psc_peer_initialize(x->p, NULL, &r, &err);
	fk_serve_stop(&x->k);
	if (rc != PSC_OK)
		fail_msg("initialize: %s", psc_err_text(&err));
	assert_int_equal(r.n_memberships, epoch ? 1 : 0);
}

static void expect_secret(t *x, uint64_t epoch, const uint8_t want[32])
{
	uint8_t got[32];
	uint64_t e = 0;
	assert_int_equal(psc_sdk_epoch_secret(x->p, x->psc, epoch, &e, got), PSC_OK);
	assert_memory_equal(got, want, 32);
	if (epoch)
		assert_int_equal(e, epoch);
}

static void expect_no_secret(t *x, uint64_t epoch, psc_rc want)
{
	uint8_t got[32];
	assert_int_equal(psc_sdk_epoch_secret(x->p, x->psc, epoch, NULL, got), want);
}

/* Sends a Refresh with material for x->psc at epoch e. */
static void send_refresh(t *x, uint8_t reason, uint64_t e, uint32_t grace_ms,
			 const uint8_t secret[32])
{
	psc_body b = {.code = PSC_MSG_REFRESH_REQ};
	b.u.refresh_req.reason = reason;
	fk_mat_store st;
	assert_int_equal(fk_material(&x->k, &b.u.refresh_req.material, &st,
				     PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc, e, "ops-room", x->me,
				     grace_ms, secret),
			 0);
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
}

/* Lets the peer handle what arrived; returns what psc_peer_process said. */
static int pump(t *x)
{
	int total = 0;
	for (int i = 0; i < 20; i++) {
		int n = psc_peer_process(x->p, 100);
		assert_true(n >= 0);
		total += n;
		if (total > 0 && n == 0)
			break;
	}
	return total;
}

/* The peer's acknowledgement of a Refresh: verified, names the epoch. */
static void expect_ack(t *x, uint64_t epoch)
{
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_REFRESH_ANS);
	assert_true(a.verified);
	assert_memory_equal(a.b.u.refresh_ans.psc_id, x->psc, 16);
	assert_int_equal(a.b.u.refresh_ans.epoch, epoch);
	fk_msg_free(&a);
}

static void expect_silence(t *x)
{
	fk_msg a;
	int r = fk_recv(&x->k, 300, &a);
	if (r == 0) {
		uint16_t code = a.m.code;
		fk_msg_free(&a);
		fail_msg("expected no message from the peer, got code 0x%04x", code);
	}
}

/* --- tests ---------------------------------------------------------------- */

static void test_new_rejects_bad_config(void **state)
{
	t *x = *state;
	psc_peer *p = (psc_peer *)&p; /* must be set to NULL on failure */
	psc_err err = {0};
	psc_peer_config cfg = {0};
	assert_int_equal(psc_peer_new(&p, &cfg, &err), PSC_E_PEER_CONFIG);
	assert_null(p);

	char cert[4096], key[4096], kcert[4096];
	snprintf(cert, sizeof(cert), "%s", pt_ca_path("peer1.crt.pem"));
	snprintf(key, sizeof(key), "%s", pt_ca_path("peer2.key.pem"));
	snprintf(kcert, sizeof(kcert), "%s", pt_ca_path("kms.crt.pem"));
	cfg = (psc_peer_config){.cert_file = cert,
				.key_file = key,
				.kms_endpoint = x->k.endpoint,
				.kms_cert_file = kcert,
				.overlay = FK_OVERLAY};
	assert_int_equal(psc_peer_new(&p, &cfg, &err), PSC_E_PEER_IDENTITY);
	assert_non_null(strstr(err.detail, "does not belong"));

	snprintf(key, sizeof(key), "%s", pt_ca_path("peer1.key.pem"));
	cfg.overlay = "other.test";
	assert_int_equal(psc_peer_new(&p, &cfg, &err), PSC_E_PEER_IDENTITY);

	cfg.overlay = FK_OVERLAY;
	cfg.kms_curve_key = "not-a-key";
	assert_int_equal(psc_peer_new(&p, &cfg, &err), PSC_E_PEER_CURVE);

	cfg.kms_curve_key = NULL;
	cfg.kms_endpoint = "nonsense";
	assert_int_equal(psc_peer_new(&p, &cfg, &err), PSC_E_PEER_CONFIG);
	assert_null(p);

	/* Requests before Initialize say what to do. */
	uint64_t e;
	assert_int_equal(psc_peer_join(x->p, x->psc, &e, &err), PSC_E_PEER_NOT_INITIALIZED);
	psc_peer_free(&p); /* NULL-safe */
}

static void test_initialize_round_trip(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	assert_int_equal(sc.n_init, 1);
	assert_true(sc.last_verified);
	assert_true(sc.last_n_certs >= 1); /* Initialize carries the certificate */
	assert_true(psc_peer_is_initialized(x->p));
	assert_int_equal(psc_peer_psc_count(x->p), 1);
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &in), PSC_OK);
	assert_int_equal(in.epoch, 3);
	assert_string_equal(in.name, "ops-room");
	assert_true(in.is_owner);
	assert_int_equal(in.n_members, 1);
	psc_peer_member mb;
	assert_int_equal(psc_peer_psc_member(x->p, x->psc, 0, &mb), PSC_OK);
	assert_string_equal(mb.endpoint, "tcp://127.0.0.1:7002");
	assert_int_equal(x->s.epochs, 1);
	assert_int_equal(x->s.last_reason, PSC_PEER_REASON_ANSWER);
	expect_secret(x, 0, x->secret);
	expect_secret(x, 3, x->secret);
}

static void test_initialize_request_fields(void **state)
{
	t *x = *state;
	/* Read the Initialize ourselves to check every field the KMS relies on. */
	uint64_t before = fk_now_ms();
	psc_err err = {0};
	/* Nobody answers: the Initialize stays queued at the ROUTER for us. */
	psc_peer_free(&x->p);
	assert_int_equal(new_peer(x, "peer1", 0, 300, 0), PSC_OK);
	assert_int_equal(psc_peer_initialize(x->p, NULL, NULL, &err), PSC_E_PEER_TIMEOUT);
	fk_msg m;
	assert_int_equal(fk_recv(&x->k, 1000, &m), 0);
	assert_int_equal(m.m.code, PSC_MSG_INITIALIZE_REQ);
	assert_true(m.verified);
	assert_int_equal(m.m.overlay, proto_overlay_hash(FK_OVERLAY));
	assert_true(m.m.has_dest_node);
	assert_memory_equal(m.m.dest_node, x->k.node_id, 16);
	const psc_initialize_req *r = &m.b.u.initialize_req;
	assert_memory_equal(r->node_id, x->me, 16);
	assert_true(r->timestamp >= before && r->timestamp <= fk_now_ms());
	assert_int_equal(r->wrap_algs.n, 1);
	assert_int_equal(r->wrap_algs.raw[0], PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_int_equal(r->endpoint.len, strlen("tcp://127.0.0.1:7002"));
	assert_memory_equal(r->endpoint.p, "tcp://127.0.0.1:7002", r->endpoint.len);
	assert_int_equal(r->flags, 0);
	assert_true(m.m.transaction_id != 0);
	fk_msg_free(&m);
	assert_non_null(strstr(err.detail, "no answer to Initialize"));
}

static void test_refresh_applied_and_acked(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32];
	memset(s4, 0x44, 32);
	send_refresh(x, PSC_REFRESH_TIMER, 4, 1000, s4);
	assert_int_equal(pump(x), 1);
	expect_ack(x, 4);
	assert_int_equal(x->s.epochs, 2);
	assert_int_equal(x->s.last_epoch, 4);
	assert_int_equal(x->s.last_reason, PSC_PEER_REASON_TIMER);
	expect_secret(x, 0, s4);
	expect_secret(x, 3, x->secret); /* previous, within its grace period */
}

static void test_stale_refresh_ignored_but_acked(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 5);
	uint8_t old[32];
	memset(old, 0x22, 32);
	send_refresh(x, PSC_REFRESH_TIMER, 2, 1000, old);
	pump(x);
	expect_ack(x, 5);
	send_refresh(x, PSC_REFRESH_TIMER, 5, 1000, old); /* equal is stale too */
	pump(x);
	expect_ack(x, 5);
	assert_int_equal(x->s.epochs, 1);
	expect_secret(x, 0, x->secret);
	expect_no_secret(x, 2, PSC_E_PEER_NO_EPOCH);
}

static void test_refresh_wrong_signer_rejected(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32];
	memset(s4, 0x44, 32);
	psc_body b = {.code = PSC_MSG_REFRESH_REQ};
	b.u.refresh_req.reason = PSC_REFRESH_TIMER;
	fk_mat_store st;
	assert_int_equal(fk_material(&x->k, &b.u.refresh_req.material, &st,
				     PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc, 4, "ops-room", x->me,
				     1000, s4),
			 0);

	/* (a) Signed by peer2 with its own certificate: not the KMS. */
	FILE *f = fopen(pt_ca_path("peer2.key.pem"), "r");
	EVP_PKEY *k2 = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	size_t c2_len = 0;
	uint8_t *c2 = NULL;
	{
		f = fopen(pt_ca_path("peer2.crt.pem"), "r");
		X509 *xc = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		int n = i2d_X509(xc, &c2);
		c2_len = (size_t)n;
		X509_free(xc);
	}
	proto_signer other = {.key = k2, .cert_der = c2, .cert_len = c2_len};
	uint8_t *msg = NULL;
	size_t len = 0;
	assert_int_equal(fk_build_req(&x->k, &other, &b, 0, 77, &msg, &len), 0);
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR); /* never an acknowledgement */
	assert_int_equal(a.e.error_code, PSC_RERR_FORBIDDEN);
	assert_int_equal(a.e.psc_reason, PSC_REASON_BAD_SIGNATURE);
	fk_msg_free(&a);
	assert_int_equal(x->s.last_error, PSC_E_PEER_NOT_KMS);

	/* (b) Claims the KMS certificate but is signed by another key. */
	proto_signer liar = {.key = k2,
			     .cert_der = x->k.cert_der,
			     .cert_len = x->k.cert_len,
			     .omit_certificates = 1};
	assert_int_equal(fk_build_req(&x->k, &liar, &b, 0, 78, &msg, &len), 0);
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	fk_msg_free(&a);
	EVP_PKEY_free(k2);
	OPENSSL_free(c2);

	assert_int_equal(x->s.epochs, 1); /* only Initialize's */
	expect_secret(x, 0, x->secret);
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &in), PSC_OK);
	assert_int_equal(in.epoch, 3);
}

/* Builds a batch of 3 Refreshes (ours at index 1) under one KMS signature. */
static void batch_refresh(t *x, uint64_t epoch, const uint8_t secret[32], uint8_t **out,
			  size_t *out_len)
{
	psc_body bodies[3];
	fk_mat_store st[3];
	uint8_t *enc[3];
	size_t enc_len[3];
	proto_envelope env[3];
	uint8_t *outs[3];
	size_t lens[3];
	for (int i = 0; i < 3; i++) {
		bodies[i] = (psc_body){.code = PSC_MSG_REFRESH_REQ};
		bodies[i].u.refresh_req.timestamp = fk_now_ms();
		bodies[i].u.refresh_req.reason = PSC_REFRESH_JOIN;
		assert_int_equal(fk_material(&x->k, &bodies[i].u.refresh_req.material, &st[i],
					     PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc, epoch,
					     "ops-room", x->me, 1000, secret),
				 0);
		assert_int_equal(proto_body_encode(&bodies[i], &enc[i], &enc_len[i], NULL), PSC_OK);
		env[i] = (proto_envelope){.overlay = x->k.overlay,
					  .transaction_id = 1000 + (uint64_t)i + epoch * 10,
					  .code = PSC_MSG_REFRESH_REQ,
					  .dest_node = x->k.peer_node};
	}
	assert_int_equal(proto_message_build_batch(env, (const uint8_t *const *)enc, enc_len, 3,
						   &x->k.signer, outs, lens, NULL),
			 PSC_OK);
	for (int i = 0; i < 3; i++) {
		free(enc[i]);
		if (i != 1)
			free(outs[i]);
	}
	*out = outs[1];
	*out_len = lens[1];
}

static void test_batch_signed_refresh(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32], s5[32];
	memset(s4, 0x44, 32);
	memset(s5, 0x55, 32);
	uint8_t *msg;
	size_t len;
	batch_refresh(x, 4, s4, &msg, &len);
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	expect_ack(x, 4);
	expect_secret(x, 0, s4);

	/* The same shape with one byte of the inclusion path changed. */
	batch_refresh(x, 5, s5, &msg, &len);
	proto_message m;
	assert_int_equal(proto_message_decode(msg, len, &m, NULL), PSC_OK);
	assert_int_equal(m.sig_alg, PROTO_SIG_BATCH_ECDSA);
	size_t path_off = (size_t)(m.sig_value - msg) + 4 + 4 + 32 + 2;
	msg[path_off] ^= 0x01;
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	assert_int_equal(a.e.psc_reason, PSC_REASON_BAD_SIGNATURE);
	fk_msg_free(&a);
	expect_secret(x, 0, s4);
	expect_no_secret(x, 5, PSC_E_PEER_NO_EPOCH);
}

static void test_grace_period(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32], s5[32];
	memset(s4, 0x44, 32);
	memset(s5, 0x55, 32);
	/* Timer rekey with 300 ms of grace: epoch 3 stays usable, then goes. */
	send_refresh(x, PSC_REFRESH_TIMER, 4, 300, s4);
	pump(x);
	expect_ack(x, 4);
	expect_secret(x, 3, x->secret);
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &in), PSC_OK);
	assert_int_equal(in.previous_epoch, 3);
	int t_next = psc_peer_next_timeout_ms(x->p);
	assert_true(t_next > 0 && t_next <= 300);
	usleep(400 * 1000);
	assert_true(psc_peer_process(x->p, 0) >= 0);
	expect_no_secret(x, 3, PSC_E_PEER_NO_EPOCH);
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &in), PSC_OK);
	assert_int_equal(in.previous_epoch, 0);
	assert_int_equal(psc_peer_next_timeout_ms(x->p), -1);

	/* Removal rekey (grace 0): the previous epoch goes at once. */
	send_refresh(x, PSC_REFRESH_LEAVE, 5, 0, s5);
	pump(x);
	expect_ack(x, 5);
	expect_secret(x, 0, s5);
	expect_no_secret(x, 4, PSC_E_PEER_NO_EPOCH);
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &in), PSC_OK);
	assert_int_equal(in.previous_epoch, 0);
}

static void test_destroyed_wipes_psc(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	psc_body b = {.code = PSC_MSG_REFRESH_REQ};
	b.u.refresh_req.reason = PSC_REFRESH_DESTROYED;
	memcpy(b.u.refresh_req.psc_id, x->psc, 16);
	b.u.refresh_req.epoch = 3;
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	expect_ack(x, 3);
	assert_int_equal(x->s.gones, 1);
	assert_int_equal(x->s.last_reason, PSC_PEER_REASON_DESTROYED);
	assert_int_equal(psc_peer_psc_count(x->p), 0);
	expect_no_secret(x, 0, PSC_E_PEER_UNKNOWN_PSC);

	/* A delayed Refresh from before the destroy must not bring it back. */
	uint8_t s3[32];
	memset(s3, 0x33, 32);
	send_refresh(x, PSC_REFRESH_TIMER, 3, 1000, s3);
	pump(x);
	expect_ack(x, 3);
	assert_int_equal(psc_peer_psc_count(x->p), 0);
}

static void send_query(t *x, const uint8_t psc[16])
{
	psc_body q = {.code = PSC_MSG_QUERY_REQ};
	memcpy(q.u.query_req.psc_id, psc, 16);
	memcpy(q.u.query_req.requester, x->other, 16);
	q.u.query_req.requester_subject = (proto_bytes){(const uint8_t *)"CN=peer2\n", 9};
	q.u.query_req.timeout_ms = 5000;
	assert_int_equal(fk_send_req(&x->k, &q, 0, NULL), 0);
}

static int expect_decision(t *x, uint16_t code)
{
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, code);
	assert_true(a.verified); /* signed by the peer */
	int d = a.b.u.decision_ans.accept;
	fk_msg_free(&a);
	return d;
}

static void test_query_decisions(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3); /* the peer owns x->psc */
	x->s.query_answer = 1;
	send_query(x, x->psc);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 1);
	x->s.query_answer = 0;
	send_query(x, x->psc);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 0);
	assert_int_equal(x->s.queries, 2);

	/* Not our PSC: denied without asking the application. */
	uint8_t foreign[16];
	memset(foreign, 0x77, 16);
	x->s.query_answer = 1;
	send_query(x, foreign);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 0);
	assert_int_equal(x->s.queries, 2);

	/* No callback: deny. */
	x->p->cb.on_query = NULL;
	send_query(x, x->psc);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 0);
}

static void test_callbacks_cannot_nest_requests(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	x->s.self = x->p;
	x->s.query_answer = 1;
	send_query(x, x->psc);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 1);
	assert_int_equal(x->s.reentry_rc, PSC_E_PEER_BUSY);
}

static void test_invite_decisions(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	psc_body b = {.code = PSC_MSG_INVITE_REQ};
	memcpy(b.u.invite_req.psc_id, x->psc, 16);
	b.u.invite_req.psc_name = (proto_bytes){(const uint8_t *)"ops-room", 8};
	memcpy(b.u.invite_req.inviter, x->other, 16);
	b.u.invite_req.timeout_ms = 3000;
	x->s.invite_answer = 1;
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_INVITE_ANS), 1);
	assert_string_equal(x->s.invite_name, "ops-room");
	x->p->cb.on_invite = NULL; /* no callback = decline */
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	assert_int_equal(expect_decision(x, PSC_MSG_INVITE_ANS), 0);
}

static void send_liveness(t *x, uint64_t challenge, uint64_t ts, uint8_t **keep, size_t *keep_len);
static void liveness_answered(t *x, uint64_t challenge, uint64_t ts);

/* The application answers later (PSC_PEER_DECIDE_LATER + psc_peer_decide),
 * and the peer keeps serving the KMS meanwhile. */
static void test_decisions_answered_later(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	x->s.query_answer = PSC_PEER_DECIDE_LATER;
	send_query(x, x->psc);
	pump(x);
	uint64_t query = x->s.last_decision;
	assert_true(query != 0);
	/* While the question is open a liveness check is still answered (and no
	 * QueryAns comes before its answer). */
	liveness_answered(x, 7, 0);
	fk_msg a;
	assert_int_equal(psc_peer_decide(x->p, query, 1, NULL), PSC_OK);
	assert_int_equal(expect_decision(x, PSC_MSG_QUERY_ANS), 1);
	psc_err e;
	assert_int_equal(psc_peer_decide(x->p, query, 0, &e), PSC_E_PEER_NOT_FOUND);
	assert_non_null(strstr(psc_err_text(&e), "is not open"));

	/* An invitation declined later. */
	psc_body b = {.code = PSC_MSG_INVITE_REQ};
	memcpy(b.u.invite_req.psc_id, x->psc, 16);
	b.u.invite_req.psc_name = (proto_bytes){(const uint8_t *)"ops-room", 8};
	memcpy(b.u.invite_req.inviter, x->other, 16);
	b.u.invite_req.timeout_ms = 3000;
	x->s.invite_answer = PSC_PEER_DECIDE_LATER;
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	assert_true(x->s.last_decision != 0 && x->s.last_decision != query);
	assert_int_equal(psc_peer_decide(x->p, x->s.last_decision, 0, NULL), PSC_OK);
	assert_int_equal(expect_decision(x, PSC_MSG_INVITE_ANS), 0);

	/* A question whose KMS timeout passed is no longer open. */
	b.u.invite_req.timeout_ms = 1;
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
	assert_int_equal(psc_peer_decide(x->p, x->s.last_decision, 1, &e), PSC_E_PEER_NOT_FOUND);
	assert_int_equal(fk_recv(&x->k, 200, &a), -1); /* nothing sent for it */
}

static void send_liveness(t *x, uint64_t challenge, uint64_t ts, uint8_t **keep, size_t *keep_len)
{
	psc_body b = {.code = PSC_MSG_LIVENESS_REQ};
	b.u.liveness.challenge = challenge;
	uint8_t *msg = NULL;
	size_t len = 0;
	assert_int_equal(fk_build_req(&x->k, &x->k.signer, &b, ts, challenge ^ 0x5a5a, &msg, &len),
			 0);
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	if (keep) {
		*keep = msg;
		*keep_len = len;
	} else {
		free(msg);
	}
}

/* The peer still serves the KMS: a liveness check (timestamp ts, 0 = now) is
 * answered. */
static void liveness_answered(t *x, uint64_t challenge, uint64_t ts)
{
	send_liveness(x, challenge, ts, NULL, NULL);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_LIVENESS_ANS);
	fk_msg_free(&a);
}

static void test_liveness_and_replay(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	uint8_t *msg;
	size_t len;
	send_liveness(x, 0x0123456789abcdefULL, 0, &msg, &len);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_LIVENESS_ANS);
	assert_true(a.verified);
	assert_int_equal(a.b.u.liveness.challenge, 0x0123456789abcdefULL);
	uint64_t now = fk_now_ms();
	assert_true(a.b.u.liveness.timestamp <= now && a.b.u.liveness.timestamp + 5000 > now);
	fk_msg_free(&a);

	/* The same bytes again: a replay, ignored (no answer). */
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	expect_silence(x);
	assert_int_equal(x->s.last_error, PSC_E_PEER_REPLAYED);
}

static void test_stale_request_refused(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	send_liveness(x, 42, fk_now_ms() - 301 * 1000, NULL, NULL);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	assert_int_equal(a.e.error_code, PSC_RERR_FORBIDDEN);
	assert_int_equal(a.e.psc_reason, PSC_REASON_STALE_TIMESTAMP);
	fk_msg_free(&a);
	assert_int_equal(x->s.last_error, PSC_E_PEER_STALE);
	/* From the future beyond the window as well. */
	send_liveness(x, 43, fk_now_ms() + 301 * 1000, NULL, NULL);
	pump(x);
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	fk_msg_free(&a);
	/* Inside the window: answered. */
	liveness_answered(x, 44, fk_now_ms() - 200 * 1000);
}

static void test_unwrap_failure_not_acked(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32];
	memset(s4, 0x44, 32);
	psc_body b = {.code = PSC_MSG_REFRESH_REQ};
	b.u.refresh_req.reason = PSC_REFRESH_TIMER;
	fk_mat_store st;
	/* Wrapped for epoch 4, announced as epoch 5: the context differs. */
	assert_int_equal(fk_material(&x->k, &b.u.refresh_req.material, &st,
				     PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc, 4, "ops-room", x->me,
				     1000, s4),
			 0);
	b.u.refresh_req.material.epoch = 5;
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	pump(x);
	expect_silence(x);
	assert_int_equal(x->s.last_error, PSC_E_UNWRAP);
	assert_non_null(strstr(x->s.last_error_text, "not acknowledged"));
	expect_secret(x, 0, x->secret);
	assert_int_equal(x->s.epochs, 1);
}

static void test_error_response_mapped(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	sc.error_code = PSC_RERR_FORBIDDEN;
	sc.error_reason = PSC_REASON_POLICY_DENIED;
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_err err = {0};
	uint64_t e = 0;
	psc_rc rc = psc_peer_join(x->p, x->psc, &e, &err);
	fk_serve_stop(&x->k);
	assert_int_equal(rc, PSC_E_PEER_FORBIDDEN);
	assert_int_equal(err.rc, PSC_E_PEER_FORBIDDEN);
	assert_string_equal(err.detail,
			    "KMS refused PscJoin: Forbidden (policy_denied): denied by rule r7");
	psc_peer_kms_error ke;
	psc_peer_last_kms_error(x->p, &ke);
	assert_int_equal(ke.error_code, PSC_RERR_FORBIDDEN);
	assert_int_equal(ke.psc_reason, PSC_REASON_POLICY_DENIED);
	assert_string_equal(ke.reason_name, "policy_denied");
	assert_string_equal(ke.text, "denied by rule r7");
	assert_int_equal(sc.last_code, PSC_MSG_JOIN_REQ);
	assert_true(sc.last_verified);
	assert_int_equal(sc.last_n_certs, 0); /* the KMS holds our certificate */

	sc.error_code = PSC_RERR_IN_PROGRESS;
	sc.error_reason = PSC_REASON_HSM_UNAVAILABLE;
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_peer_lookup_result lr;
	rc = psc_peer_lookup(x->p, "ops-room", &lr, &err);
	fk_serve_stop(&x->k);
	assert_int_equal(rc, PSC_E_PEER_IN_PROGRESS);
	assert_non_null(strstr(err.detail, "In_Progress (hsm_unavailable)"));
}

static void test_request_timeout(void **state)
{
	t *x = *state;
	script sc;
	psc_peer_free(&x->p);
	assert_int_equal(new_peer(x, "peer1", 0, 300, 0), PSC_OK);
	init_with(x, &sc, 0);
	/* Nobody answers now. */
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	psc_err err = {0};
	psc_peer_lookup_result lr;
	assert_int_equal(psc_peer_lookup(x->p, "ops-room", &lr, &err), PSC_E_PEER_TIMEOUT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms >= 290 && ms < 3000);
	assert_non_null(strstr(err.detail, "no answer to PscLookup"));
	fk_msg lk;
	assert_int_equal(fk_recv(&x->k, 1000, &lk), 0);
	fk_msg_free(&lk);
	/* A Join waits longer: the KMS may be asking the owner. */
	uint64_t e = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(psc_peer_join(x->p, x->psc, &e, &err), PSC_E_PEER_TIMEOUT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms >= 590 && ms < 3000);
	/* A late answer to the timed-out request is dropped, not mistaken. */
	fk_msg m;
	assert_int_equal(fk_recv(&x->k, 1000, &m), 0);
	psc_body ans = {.code = PSC_MSG_LOOKUP_ANS};
	assert_int_equal(fk_answer(&x->k, &m, &ans), 0);
	fk_msg_free(&m);
	assert_int_equal(pump(x), 1);
	assert_int_equal(x->s.errors, 0);
}

static void test_query_during_join(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	sc.query_first = 1;
	x->s.query_answer = 1;
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_err err = {0};
	uint64_t e = 0;
	uint8_t other_psc[16];
	memcpy(other_psc, x->psc, 16); /* the Query is about our PSC */
	psc_rc rc = psc_peer_join(x->p, other_psc, &e, &err);
	fk_serve_stop(&x->k);
	if (rc != PSC_OK)
		fail_msg("join: %s", psc_err_text(&err));
	assert_int_equal(sc.query_answered, 1);
	assert_int_equal(sc.query_accept, 1);
	assert_int_equal(x->s.queries, 1);
	assert_int_equal(e, 7);
	assert_int_equal(x->s.last_reason, PSC_PEER_REASON_JOIN);
	expect_secret(x, 7, x->secret);
}

static void test_other_flows(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_err err = {0};

	psc_peer_label labels[] = {{"team", "ops"}};
	psc_peer_establish_params ep = {.name = "new-room",
					.labels = labels,
					.n_labels = 1,
					.members = (const uint8_t(*)[16])x->other,
					.n_members = 1,
					.refresh_s = 3600,
					.sender_signatures = 1};
	uint8_t id[16];
	uint64_t epoch = 0;
	size_t pending = 0;
	assert_int_equal(psc_peer_establish(x->p, &ep, id, &epoch, &pending, &err), PSC_OK);
	uint8_t want[16];
	memset(want, 0x3c, 16);
	assert_memory_equal(id, want, 16);
	assert_int_equal(epoch, 1);
	assert_int_equal(pending, 1);
	assert_int_equal(sc.last_body.u.establish_req.params.flags, PSC_FLAG_SENDER_SIGNATURES);
	assert_int_equal(sc.last_body.u.establish_req.params.refresh_s, 3600);
	assert_int_equal(psc_peer_psc_count(x->p), 2);

	psc_peer_lookup_result lr;
	assert_int_equal(psc_peer_lookup(x->p, "ops-room", &lr, &err), PSC_OK);
	assert_memory_equal(lr.psc_id, x->psc, 16);
	assert_memory_equal(lr.owner, x->other, 16);
	assert_int_equal(lr.member_count, 3);

	psc_peer_invite_outcome io;
	assert_int_equal(psc_peer_invite(x->p, x->psc, x->other, &io, &epoch, &err), PSC_OK);
	assert_int_equal(io, PSC_PEER_INVITE_ACCEPTED);
	assert_int_equal(epoch, 12);
	assert_int_equal(sc.last_code, PSC_MSG_INVITE_INIT_REQ);

	psc_peer_departure_outcome dout;
	assert_int_equal(psc_peer_report_departure(x->p, x->psc, x->other, &dout, &err), PSC_OK);
	assert_int_equal(dout, PSC_PEER_DEPARTURE_EVICTED);

	assert_int_equal(psc_peer_leave(x->p, x->psc, &err), PSC_OK);
	assert_int_equal(psc_peer_psc_get(x->p, x->psc, &(psc_peer_psc_info){0}),
			 PSC_E_PEER_UNKNOWN_PSC);
	assert_int_equal(psc_peer_destroy(x->p, id, &err), PSC_OK);
	assert_int_equal(psc_peer_psc_count(x->p), 0);
	fk_serve_stop(&x->k);
	assert_true(sc.last_verified);
}

static void catchup_handler(fake_kms *k, fk_msg *req, void *arg)
{
	script *sc = arg;
	t *x = sc->x;
	if (req->m.code != PSC_MSG_CATCHUP_REQ) {
		handler(k, req, arg);
		return;
	}
	sc->n_catchup++;
	sc->catchup_held = (int)req->b.u.catchup_req.held.n;
	proto_iter it;
	proto_held h;
	proto_iter_init(&it, req->b.u.catchup_req.held.raw, req->b.u.catchup_req.held.raw_len);
	assert_true(proto_next_held(&it, &h));
	assert_memory_equal(h.psc_id, x->psc, 16);
	assert_int_equal(h.epoch, 3);
	proto_catchup_entry e[2];
	memset(e, 0, sizeof(e));
	fk_mat_store st;
	uint8_t s9[32];
	memset(s9, 0x99, 32);
	e[0].status = PSC_CATCHUP_NEWER;
	assert_int_equal(fk_material(k, &e[0].material, &st, PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc,
				     9, "ops-room", x->me, 0, s9),
			 0);
	e[1].status = PSC_CATCHUP_DESTROYED;
	memset(e[1].psc_id, 0x3c, 16);
	e[1].epoch = 2;
	psc_body a = {.code = PSC_MSG_CATCHUP_ANS};
	a.u.catchup_ans.entries.items = e;
	a.u.catchup_ans.entries.n = 2;
	fk_answer(k, req, &a);
}

static void test_catchup(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	assert_int_equal(fk_serve_start(&x->k, catchup_handler, &sc), 0);
	psc_peer_catchup_result r;
	psc_err err = {0};
	assert_int_equal(psc_peer_catchup(x->p, &r, &err), PSC_OK);
	fk_serve_stop(&x->k);
	assert_int_equal(sc.catchup_held, 1);
	assert_int_equal(r.updated, 1);
	assert_int_equal(r.gone, 1);
	assert_int_equal(r.failed, 0);
	uint8_t s9[32];
	memset(s9, 0x99, 32);
	expect_secret(x, 9, s9);
	assert_int_equal(x->s.last_reason, PSC_PEER_REASON_CATCHUP);
}

static void test_reinitializes_when_kms_forgot_us(void **state)
{
	t *x = *state;
	psc_peer_free(&x->p);
	assert_int_equal(new_peer(x, "peer1", 0, 2000, 1), PSC_OK);
	script sc;
	init_with(x, &sc, 3);
	sc.lookup_not_init = 1;
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_err err = {0};
	psc_peer_lookup_result lr;
	psc_rc rc = psc_peer_lookup(x->p, "ops-room", &lr, &err);
	fk_serve_stop(&x->k);
	if (rc != PSC_OK)
		fail_msg("lookup: %s", psc_err_text(&err));
	assert_int_equal(sc.n_init, 2);	   /* the first one, and the re-Initialize */
	assert_int_equal(sc.n_catchup, 1); /* caught up after it */
	assert_int_equal(sc.n_lookup, 2);  /* retried with a new transaction id */
	assert_int_equal(x->s.reconnects, 1);
}

static void test_explicit_reconnect(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	psc_err err = {0};
	psc_rc rc = psc_peer_reconnect(x->p, &err);
	fk_serve_stop(&x->k);
	if (rc != PSC_OK)
		fail_msg("reconnect: %s", psc_err_text(&err));
	assert_int_equal(sc.n_init, 2); /* init_with's, then the reconnect's */
	assert_int_equal(sc.n_catchup, 1);
	assert_int_equal(sc.catchup_held, 1);
	assert_true(psc_peer_is_initialized(x->p));
	expect_secret(x, 0, x->secret); /* epochs survive a reconnect */
}

static void test_event_loop_fd(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	int fd = psc_peer_fd(x->p);
	assert_true(fd >= 0);
	send_liveness(x, 99, 0, NULL, NULL);
	/* ZMQ_FD is edge-triggered: wait for it, then process everything. */
	int answered = 0;
	for (int i = 0; i < 50 && !answered; i++) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		poll(&pfd, 1, 100);
		int n = psc_peer_process(x->p, 0);
		assert_true(n >= 0);
		answered = n > 0;
	}
	assert_true(answered);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_LIVENESS_ANS);
	fk_msg_free(&a);
}

static void test_rsa_member(void **state)
{
	t *x = *state;
	/* The Initialize offers the RSA wrap algorithms, best first. */
	script sc = {.x = x, .wrap_alg = PSC_WRAP_RSA_OAEP_SHA256};
	psc_peer_free(&x->p);
	assert_int_equal(new_peer(x, "rsa1", 0, 300, 0), PSC_OK);
	psc_err err = {0};
	assert_int_equal(psc_peer_initialize(x->p, NULL, NULL, &err), PSC_E_PEER_TIMEOUT);
	fk_msg m;
	assert_int_equal(fk_recv(&x->k, 1000, &m), 0);
	assert_true(m.verified);
	assert_int_equal(m.b.u.initialize_req.wrap_algs.n, 2);
	assert_int_equal(m.b.u.initialize_req.wrap_algs.raw[0], PSC_WRAP_RSA_OAEP_SHA256);
	assert_int_equal(m.b.u.initialize_req.wrap_algs.raw[1], PSC_WRAP_RSA_OAEP_SHA1);
	fk_msg_free(&m);

	psc_peer_free(&x->p);
	assert_int_equal(new_peer(x, "rsa1", 0, 2000, 0), PSC_OK);
	sc.epoch = 3;
	assert_int_equal(fk_serve_start(&x->k, handler, &sc), 0);
	assert_int_equal(psc_peer_initialize(x->p, NULL, NULL, &err), PSC_OK);
	fk_serve_stop(&x->k);
	expect_secret(x, 3, x->secret);
}

static void test_curve_transport(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	expect_secret(x, 3, x->secret);

	/* A peer with the wrong server key never gets through. */
	psc_peer_free(&x->p);
	char wrong_pub[41], wrong_sec[41];
	zmq_curve_keypair(wrong_pub, wrong_sec);
	memcpy(x->k.curve_pub, wrong_pub, 41);
	assert_int_equal(new_peer(x, "peer1", 1, 300, 0), PSC_OK);
	psc_err err = {0};
	assert_int_equal(psc_peer_initialize(x->p, NULL, NULL, &err), PSC_E_PEER_TIMEOUT);
	assert_int_equal(fk_recv(&x->k, 300, &(fk_msg){0}), -1);
}

/* An answer to our pending request that the KMS did not sign is ignored: the
 * request still gets the genuine answer that follows. */
static void forged_then_real(fake_kms *k, fk_msg *req, void *arg)
{
	script *sc = arg;
	if (req->m.code != PSC_MSG_LOOKUP_REQ) {
		handler(k, req, arg);
		return;
	}
	FILE *f = fopen(pt_ca_path("peer2.key.pem"), "r");
	EVP_PKEY *k2 = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	psc_body a = {.code = PSC_MSG_LOOKUP_ANS};
	memset(a.u.lookup_ans.psc_id, 0xee, 16);
	uint8_t *enc = NULL, *msg = NULL;
	size_t enc_len = 0, len = 0;
	assert_int_equal(proto_body_encode(&a, &enc, &enc_len, NULL), PSC_OK);
	proto_envelope env = {.overlay = k->overlay,
			      .transaction_id = req->m.transaction_id,
			      .code = PSC_MSG_LOOKUP_ANS};
	proto_signer liar = {
	    .key = k2, .cert_der = k->cert_der, .cert_len = k->cert_len, .omit_certificates = 1};
	assert_int_equal(proto_message_build(&env, enc, enc_len, &liar, &msg, &len, NULL), PSC_OK);
	fk_send_raw(k, msg, len);
	free(msg);
	free(enc);
	EVP_PKEY_free(k2);
	usleep(100 * 1000);
	handler(k, req, sc);
}

static void test_forged_answer_ignored(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	assert_int_equal(fk_serve_start(&x->k, forged_then_real, &sc), 0);
	psc_err err = {0};
	psc_peer_lookup_result lr;
	psc_rc rc = psc_peer_lookup(x->p, "ops-room", &lr, &err);
	fk_serve_stop(&x->k);
	if (rc != PSC_OK)
		fail_msg("lookup: %s", psc_err_text(&err));
	assert_memory_equal(lr.psc_id, x->psc, 16); /* not the forged 0xee.. */
	assert_int_equal(x->s.last_error, PSC_E_PEER_NOT_KMS);
}

static void test_misaddressed_and_malformed_requests(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 0);
	/* Addressed to another Node-ID. */
	psc_body b = {.code = PSC_MSG_LIVENESS_REQ};
	b.u.liveness.challenge = 5;
	uint8_t keep[16];
	memcpy(keep, x->k.peer_node, 16);
	memcpy(x->k.peer_node, x->other, 16);
	assert_int_equal(fk_send_req(&x->k, &b, 0, NULL), 0);
	memcpy(x->k.peer_node, keep, 16);
	pump(x);
	fk_msg a;
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	assert_int_equal(a.e.error_code, PSC_RERR_FORBIDDEN);
	fk_msg_free(&a);

	/* A signed request whose body does not decode: Invalid_Message. */
	uint8_t junk[3] = {1, 2, 3};
	proto_envelope env = {.overlay = x->k.overlay,
			      .transaction_id = 99,
			      .code = PSC_MSG_REFRESH_REQ,
			      .dest_node = x->k.peer_node};
	uint8_t *msg = NULL;
	size_t len = 0;
	assert_int_equal(
	    proto_message_build(&env, junk, sizeof(junk), &x->k.signer, &msg, &len, NULL), PSC_OK);
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	free(msg);
	pump(x);
	assert_int_equal(fk_recv(&x->k, 2000, &a), 0);
	assert_int_equal(a.m.code, PSC_MSG_ERROR);
	assert_int_equal(a.e.error_code, PSC_RERR_INVALID_MESSAGE);
	fk_msg_free(&a);

	/* Bytes that are not RELOAD at all, and a two-frame message: dropped. */
	assert_int_equal(fk_send_raw(&x->k, junk, sizeof(junk)), 0);
	assert_int_equal(zmq_send(x->k.router, x->k.rid, x->k.rid_len, ZMQ_SNDMORE),
			 (int)x->k.rid_len);
	assert_int_equal(zmq_send(x->k.router, junk, 1, ZMQ_SNDMORE), 1);
	assert_int_equal(zmq_send(x->k.router, junk, 1, 0), 1);
	pump(x);
	expect_silence(x);
	assert_true(x->s.errors >= 4);
	/* Still serving afterwards. */
	liveness_answered(x, 6, 0);
}

/* Damaged copies of one signed Refresh: none may change what the peer holds
 * (signed bytes fail verification; unsigned header bytes leave a message the
 * peer already saw, a replay), and the peer keeps serving. */
static void test_mutated_messages_change_nothing(void **state)
{
	t *x = *state;
	script sc;
	init_with(x, &sc, 3);
	uint8_t s4[32];
	memset(s4, 0x44, 32);
	psc_body b = {.code = PSC_MSG_REFRESH_REQ};
	b.u.refresh_req.reason = PSC_REFRESH_TIMER;
	fk_mat_store st;
	assert_int_equal(fk_material(&x->k, &b.u.refresh_req.material, &st,
				     PSC_WRAP_ECDH_P256_AESPRF_KWP, x->psc, 4, "ops-room", x->me,
				     1000, s4),
			 0);
	uint8_t *msg = NULL;
	size_t len = 0;
	assert_int_equal(fk_build_req(&x->k, &x->k.signer, &b, 0, 4242, &msg, &len), 0);
	/* The genuine one first, so header-only damage is a replay. */
	assert_int_equal(fk_send_raw(&x->k, msg, len), 0);
	pump(x);
	expect_ack(x, 4);
	uint8_t *copy = malloc(len);
	unsigned seed = 12345;
	for (int i = 0; i < 300; i++) {
		memcpy(copy, msg, len);
		int flips = 1 + (int)(rand_r(&seed) % 3);
		for (int f = 0; f < flips; f++)
			copy[rand_r(&seed) % len] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
		size_t l = len;
		if (i % 10 == 9)
			l = (size_t)rand_r(&seed) % len; /* truncated */
		assert_int_equal(fk_send_raw(&x->k, copy, l), 0);
		assert_true(psc_peer_process(x->p, 0) >= 0);
	}
	free(copy);
	free(msg);
	pump(x);
	/* Drain what the peer said (errors for bad signatures): no acknowledgement
	 * may name anything but epoch 4. */
	fk_msg a;
	while (fk_recv(&x->k, 200, &a) == 0) {
		if (a.m.code == PSC_MSG_REFRESH_ANS)
			assert_int_equal(a.b.u.refresh_ans.epoch, 4);
		fk_msg_free(&a);
	}
	assert_true(x->s.errors > 200); /* they did reach the peer, and were refused */
	expect_secret(x, 0, s4);
	expect_secret(x, 3, x->secret);
	assert_int_equal(psc_peer_psc_count(x->p), 1);
	liveness_answered(x, 7, 0);
}

static int setup_curve(void **state)
{
	return setup_named(state, "peer1", 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_new_rejects_bad_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_initialize_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_initialize_request_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_applied_and_acked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_refresh_ignored_but_acked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_wrong_signer_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_signed_refresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grace_period, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_destroyed_wipes_psc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_query_decisions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_callbacks_cannot_nest_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_invite_decisions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decisions_answered_later, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_liveness_and_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_request_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unwrap_failure_not_acked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_error_response_mapped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_query_during_join, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_flows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_catchup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reinitializes_when_kms_forgot_us, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_explicit_reconnect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_event_loop_fd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forged_answer_ignored, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_misaddressed_and_malformed_requests, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_mutated_messages_change_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rsa_member, setup_rsa, teardown),
	    cmocka_unit_test_setup_teardown(test_curve_transport, setup_curve, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
