#include "rawpeer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <zmq.h>

#include "proto_cert.h"
#include "proto_keywrap.h"
#include "psc_test.h"

uint64_t rp_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	return x;
}

rawpeer *rp_new(void *zctx, const char *name, const char *endpoint, const char *kms_cert_pem,
		const char *kms_curve_pub)
{
	rawpeer *p = calloc(1, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	char file[128];
	snprintf(file, sizeof(file), "%s.key.pem", name);
	FILE *f = fopen(pt_ca_path(file), "r");
	p->key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	snprintf(file, sizeof(file), "%s.crt.pem", name);
	X509 *x = read_cert(pt_ca_path(file));
	int len = x ? i2d_X509(x, &p->cert_der) : -1;
	p->cert_len = len > 0 ? (size_t)len : 0;
	if (x)
		(void)!proto_cert_node_id(x, NULL, p->node_id, NULL);
	X509_free(x);
	X509 *k = read_cert(kms_cert_pem);
	len = k ? i2d_X509(k, &p->kms_der) : -1;
	p->kms_der_len = len > 0 ? (size_t)len : 0;
	if (k)
		p->kms_pub = X509_get_pubkey(k);
	X509_free(k);
	p->overlay = proto_overlay_hash("psc.test");
	p->zctx = zctx;
	p->sock = zmq_socket(zctx, ZMQ_DEALER);
	char pub[41], sec[41];
	zmq_curve_keypair(pub, sec);
	int zero = 0;
	zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(p->sock, ZMQ_CURVE_SERVERKEY, kms_curve_pub, 40);
	zmq_setsockopt(p->sock, ZMQ_CURVE_PUBLICKEY, pub, 40);
	zmq_setsockopt(p->sock, ZMQ_CURVE_SECRETKEY, sec, 40);
	zmq_connect(p->sock, endpoint);
	if (!p->key || !p->cert_len || !p->kms_pub) {
		rp_free(&p);
		return NULL;
	}
	return p;
}

void rp_free(rawpeer **pp)
{
	if (!pp || !*pp)
		return;
	rawpeer *p = *pp;
	if (p->sock)
		zmq_close(p->sock);
	EVP_PKEY_free(p->key);
	EVP_PKEY_free(p->kms_pub);
	OPENSSL_free(p->cert_der);
	OPENSSL_free(p->kms_der);
	free(p->buf);
	for (size_t i = 0; i < p->n_held; i++)
		free(p->held[i]);
	free(p);
	*pp = NULL;
}

static uint64_t send_msg(rawpeer *p, uint64_t txid, const psc_body *b, bool with_cert)
{
	uint8_t *body = NULL, *msg = NULL;
	size_t blen = 0, mlen = 0;
	if (proto_body_encode(b, &body, &blen, NULL) != PSC_OK)
		return 0;
	proto_envelope env = {.overlay = p->overlay, .transaction_id = txid, .code = b->code};
	proto_signer s = {.key = p->key, .cert_der = p->cert_der, .cert_len = p->cert_len,
			  .omit_certificates = !with_cert};
	if (proto_message_build(&env, body, blen, &s, &msg, &mlen, NULL) == PSC_OK)
		zmq_send(p->sock, msg, mlen, 0);
	free(body);
	free(msg);
	return txid;
}

uint64_t rp_send(rawpeer *p, const psc_body *b, bool with_cert)
{
	uint64_t txid;
	RAND_bytes((unsigned char *)&txid, sizeof(txid));
	p->last_txid = txid;
	return send_msg(p, txid, b, with_cert);
}

void rp_send_raw(rawpeer *p, const void *data, size_t len)
{
	zmq_send(p->sock, data, len, 0);
}

void rp_answer(rawpeer *p, uint64_t txid, const psc_body *b)
{
	send_msg(p, txid, b, false);
}

bool rp_recv(rawpeer *p, int timeout_ms)
{
	free(p->buf);
	p->buf = NULL;
	if (p->n_held) {
		p->buf = p->held[0];
		p->len = p->held_len[0];
		memmove(p->held, p->held + 1, (p->n_held - 1) * sizeof(p->held[0]));
		memmove(p->held_len, p->held_len + 1, (p->n_held - 1) * sizeof(p->held_len[0]));
		p->n_held--;
	} else {
		zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
		if (zmq_poll(&it, 1, timeout_ms) <= 0)
			return false;
		zmq_msg_t msg;
		zmq_msg_init(&msg);
		if (zmq_msg_recv(&msg, p->sock, 0) < 0) {
			zmq_msg_close(&msg);
			return false;
		}
		p->len = zmq_msg_size(&msg);
		p->buf = malloc(p->len);
		memcpy(p->buf, zmq_msg_data(&msg), p->len);
		zmq_msg_close(&msg);
	}
	psc_err e;
	if (proto_message_decode(p->buf, p->len, &p->m, &e) != PSC_OK) {
		fprintf(stderr, "%s: undecodable KMS message: %s\n", p->name, psc_err_text(&e));
		return false;
	}
	if (!proto_message_signed_by(&p->m, p->kms_der, p->kms_der_len) ||
	    proto_message_verify(&p->m, p->kms_pub, &e) != PSC_OK) {
		fprintf(stderr, "%s: KMS message not signed by the KMS: %s\n", p->name,
			psc_err_text(&e));
		return false;
	}
	p->is_error = p->m.code == PSC_MSG_ERROR;
	if (p->is_error)
		return proto_error_decode(p->m.body, p->m.body_len, &p->err, &e) == PSC_OK;
	if (proto_body_decode(p->m.code, p->m.body, p->m.body_len, &p->b, &e) != PSC_OK) {
		fprintf(stderr, "%s: bad body: %s\n", p->name, psc_err_text(&e));
		return false;
	}
	return true;
}

static void auto_handle(rawpeer *p)
{
	if (p->is_error || !(p->m.code & 1))
		return;
	if (p->m.code == PSC_MSG_REFRESH_REQ) {
		psc_body ack = {.code = PSC_MSG_REFRESH_ANS};
		memcpy(ack.u.refresh_ans.psc_id, p->b.u.refresh_req.psc_id, 16);
		ack.u.refresh_ans.epoch = p->b.u.refresh_req.epoch;
		rp_answer(p, p->m.transaction_id, &ack);
	} else if (p->m.code == PSC_MSG_LIVENESS_REQ) {
		psc_body ans = {.code = PSC_MSG_LIVENESS_ANS};
		ans.u.liveness.timestamp = rp_now_ms();
		ans.u.liveness.challenge = p->b.u.liveness.challenge;
		rp_answer(p, p->m.transaction_id, &ans);
	}
}

bool rp_wait_answer(rawpeer *p, uint64_t txid, int timeout_ms)
{
	uint64_t end = rp_now_ms() + (uint64_t)timeout_ms;
	uint8_t *kept[64];
	size_t kept_len[64], n_kept = 0;
	bool found = false;
	while (!found && rp_now_ms() < end) {
		if (!rp_recv(p, (int)(end - rp_now_ms())))
			continue;
		if (p->m.transaction_id == txid && (!(p->m.code & 1) || p->is_error)) {
			found = true;
		} else if ((p->m.code & 1) && !p->is_error && n_kept < 64) {
			kept[n_kept] = p->buf; /* a KMS request: the test reads it next */
			kept_len[n_kept++] = p->len;
			p->buf = NULL;
		}
	}
	/* the kept requests go in front of anything still held, in arrival order */
	uint8_t *all[128];
	size_t all_len[128], n = 0;
	for (size_t i = 0; i < n_kept; i++, n++) {
		all[n] = kept[i];
		all_len[n] = kept_len[i];
	}
	for (size_t i = 0; i < p->n_held; i++, n++) {
		all[n] = p->held[i];
		all_len[n] = p->held_len[i];
	}
	p->n_held = 0;
	for (size_t i = 0; i < n; i++) {
		if (p->n_held < 64) {
			p->held[p->n_held] = all[i];
			p->held_len[p->n_held++] = all_len[i];
		} else {
			free(all[i]);
		}
	}
	return found;
}

bool rp_wait_request(rawpeer *p, uint16_t code, int timeout_ms)
{
	uint64_t end = rp_now_ms() + (uint64_t)timeout_ms;
	while (rp_now_ms() < end) {
		if (!rp_recv(p, (int)(end - rp_now_ms())))
			continue;
		if (!p->is_error && p->m.code == code)
			return true;
		auto_handle(p);
	}
	return false;
}

bool rp_unwrap(rawpeer *p, const proto_material *m, uint8_t secret[32])
{
	psc_err e;
	if (proto_keywrap_unwrap(p->key, m->wrap_alg, m->psc_id, m->epoch, p->node_id,
				 m->ephemeral.p, m->ephemeral.len, m->wrapped.p, m->wrapped.len,
				 secret, &e) != PSC_OK) {
		fprintf(stderr, "%s: unwrap epoch %llu: %s\n", p->name,
			(unsigned long long)m->epoch, psc_err_text(&e));
		return false;
	}
	return true;
}

uint64_t rp_initialize(rawpeer *p, uint8_t flags, const uint8_t *join_psc,
		       const proto_establish_params *est)
{
	static const uint16_t suites[] = {PSC_SUITE_AES256GCM_HKDF_SHA256};
	static const uint8_t wraps[] = {PSC_WRAP_ECDH_P256_AESPRF_KWP, PSC_WRAP_RSA_OAEP_SHA256,
					PSC_WRAP_RSA_OAEP_SHA1};
	psc_body b = {.code = PSC_MSG_INITIALIZE_REQ};
	psc_initialize_req *q = &b.u.initialize_req;
	q->timestamp = rp_now_ms();
	memcpy(q->node_id, p->node_id, 16);
	q->suites.items = suites;
	q->suites.n = 1;
	q->wrap_algs.items = wraps;
	q->wrap_algs.n = 3;
	char ep[64];
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", 20000u + (p->node_id[15] & 0xff));
	q->endpoint = (proto_bytes){(const uint8_t *)ep, strlen(ep)};
	q->flags = flags;
	if (join_psc)
		memcpy(q->join_psc, join_psc, 16);
	if (est)
		q->establish = *est;
	return rp_send(p, &b, true);
}

uint64_t rp_psc_req(rawpeer *p, uint16_t code, const uint8_t psc_id[16])
{
	psc_body b = {.code = code};
	b.u.psc_req.timestamp = rp_now_ms();
	memcpy(b.u.psc_req.psc_id, psc_id, 16);
	return rp_send(p, &b, false);
}

bool rp_initialize_wait(rawpeer *p, int timeout_ms)
{
	return rp_wait_answer(p, rp_initialize(p, 0, NULL, NULL), timeout_ms);
}

bool rp_wait_refresh(rawpeer *p, const uint8_t psc_id[16], uint8_t reason, int timeout_ms)
{
	uint64_t end = rp_now_ms() + (uint64_t)timeout_ms;
	while (rp_now_ms() < end) {
		if (!rp_wait_request(p, PSC_MSG_REFRESH_REQ, (int)(end - rp_now_ms())))
			return false;
		if (memcmp(p->b.u.refresh_req.psc_id, psc_id, 16) == 0 &&
		    p->b.u.refresh_req.reason == reason)
			return true;
	}
	return false;
}
