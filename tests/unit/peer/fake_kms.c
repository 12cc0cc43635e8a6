/* The KMS end of the wire for peer-sdk tests; see fake_kms.h. */
#include "fake_kms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "proto_cert.h"
#include "proto_keywrap.h"
#include "psc_test.h"

uint64_t fk_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static X509 *read_cert(const char *name)
{
	FILE *f = fopen(pt_ca_path(name), "r");
	if (!f)
		return NULL;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return x;
}

static EVP_PKEY *read_key(const char *name)
{
	FILE *f = fopen(pt_ca_path(name), "r");
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

int fk_open(fake_kms *k, const char *peer, int curve)
{
	memset(k, 0, sizeof(*k));
	k->overlay = proto_overlay_hash(FK_OVERLAY);
	X509 *kc = read_cert("kms.crt.pem");
	k->key = read_key("kms.key.pem");
	if (!kc || !k->key)
		return -1;
	int n = i2d_X509(kc, NULL);
	k->cert_der = malloc((size_t)n);
	uint8_t *q = k->cert_der;
	i2d_X509(kc, &q);
	k->cert_len = (size_t)n;
	if (proto_cert_node_id(kc, FK_OVERLAY, k->node_id, NULL) != PSC_OK)
		return -1;
	X509_free(kc);
	k->signer = (proto_signer){.key = k->key,
				   .cert_der = k->cert_der,
				   .cert_len = k->cert_len,
				   .omit_certificates = 1};

	char fn[64];
	snprintf(fn, sizeof(fn), "%s.crt.pem", peer);
	X509 *pc = read_cert(fn);
	if (!pc)
		return -1;
	k->peer_pub = X509_get_pubkey(pc);
	if (proto_cert_node_id(pc, FK_OVERLAY, k->peer_node, NULL) != PSC_OK)
		return -1;
	X509_free(pc);

	k->ctx = zmq_ctx_new();
	k->router = zmq_socket(k->ctx, ZMQ_ROUTER);
	int linger = 0, one = 1;
	zmq_setsockopt(k->router, ZMQ_LINGER, &linger, sizeof(linger));
	zmq_setsockopt(k->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
	zmq_setsockopt(k->router, ZMQ_ROUTER_HANDOVER, &one, sizeof(one));
	if (curve) {
		char sec[41];
		zmq_curve_keypair(k->curve_pub, sec);
		zmq_setsockopt(k->router, ZMQ_CURVE_SERVER, &one, sizeof(one));
		zmq_setsockopt(k->router, ZMQ_CURVE_SECRETKEY, sec, 40);
	}
	if (zmq_bind(k->router, "tcp://127.0.0.1:*") != 0)
		return -1;
	size_t len = sizeof(k->endpoint);
	zmq_getsockopt(k->router, ZMQ_LAST_ENDPOINT, k->endpoint, &len);
	return 0;
}

void fk_close(fake_kms *k)
{
	fk_serve_stop(k);
	if (k->router)
		zmq_close(k->router);
	if (k->ctx)
		zmq_ctx_term(k->ctx);
	EVP_PKEY_free(k->key);
	EVP_PKEY_free(k->peer_pub);
	free(k->cert_der);
	memset(k, 0, sizeof(*k));
}

void fk_msg_free(fk_msg *m)
{
	free(m->buf);
	memset(m, 0, sizeof(*m));
}

int fk_recv(fake_kms *k, int timeout_ms, fk_msg *out)
{
	memset(out, 0, sizeof(*out));
	zmq_pollitem_t it = {k->router, 0, ZMQ_POLLIN, 0};
	if (zmq_poll(&it, 1, timeout_ms) <= 0)
		return -1;
	zmq_msg_t id, body;
	zmq_msg_init(&id);
	zmq_msg_init(&body);
	if (zmq_msg_recv(&id, k->router, 0) < 0 || zmq_msg_recv(&body, k->router, 0) < 0)
		return -1;
	k->rid_len = zmq_msg_size(&id) < sizeof(k->rid) ? zmq_msg_size(&id) : sizeof(k->rid);
	memcpy(k->rid, zmq_msg_data(&id), k->rid_len);
	out->len = zmq_msg_size(&body);
	out->buf = malloc(out->len);
	memcpy(out->buf, zmq_msg_data(&body), out->len);
	zmq_msg_close(&id);
	zmq_msg_close(&body);
	if (proto_message_decode(out->buf, out->len, &out->m, NULL) != PSC_OK)
		return 0;
	out->verified = proto_message_verify(&out->m, k->peer_pub, NULL) == PSC_OK;
	if (out->m.code == PSC_MSG_ERROR)
		(void)!proto_error_decode(out->m.body, out->m.body_len, &out->e, NULL);
	else
		(void)!proto_body_decode(out->m.code, out->m.body, out->m.body_len, &out->b, NULL);
	return 0;
}

int fk_send_raw(fake_kms *k, const uint8_t *buf, size_t len)
{
	if (zmq_send(k->router, k->rid, k->rid_len, ZMQ_SNDMORE) < 0)
		return -1;
	return zmq_send(k->router, buf, len, 0) < 0 ? -1 : 0;
}

static void set_ts(psc_body *b, uint64_t ts)
{
	switch (b->code) {
	case PSC_MSG_QUERY_REQ:
		b->u.query_req.timestamp = ts;
		break;
	case PSC_MSG_INVITE_REQ:
		b->u.invite_req.timestamp = ts;
		break;
	case PSC_MSG_REFRESH_REQ:
		b->u.refresh_req.timestamp = ts;
		break;
	case PSC_MSG_LIVENESS_REQ:
		b->u.liveness.timestamp = ts;
		break;
	default:
		break;
	}
}

int fk_build_req(fake_kms *k, const proto_signer *s, psc_body *b, uint64_t timestamp, uint64_t txid,
		 uint8_t **out, size_t *out_len)
{
	set_ts(b, timestamp ? timestamp : fk_now_ms());
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	if (proto_body_encode(b, &enc, &enc_len, NULL) != PSC_OK)
		return -1;
	proto_envelope env = {.overlay = k->overlay,
			      .transaction_id = txid,
			      .code = b->code,
			      .dest_node = k->peer_node};
	psc_rc rc = proto_message_build(&env, enc, enc_len, s, out, out_len, NULL);
	free(enc);
	return rc == PSC_OK ? 0 : -1;
}

int fk_send_req(fake_kms *k, psc_body *b, uint64_t timestamp, uint64_t *out_txid)
{
	uint64_t txid;
	RAND_bytes((uint8_t *)&txid, sizeof(txid));
	uint8_t *msg = NULL;
	size_t len = 0;
	if (fk_build_req(k, &k->signer, b, timestamp, txid, &msg, &len) != 0)
		return -1;
	int r = fk_send_raw(k, msg, len);
	free(msg);
	if (out_txid)
		*out_txid = txid;
	return r;
}

static int send_body(fake_kms *k, uint64_t txid, uint16_t code, const uint8_t *enc, size_t enc_len)
{
	proto_envelope env = {.overlay = k->overlay, .transaction_id = txid, .code = code};
	uint8_t *msg = NULL;
	size_t len = 0;
	if (proto_message_build(&env, enc, enc_len, &k->signer, &msg, &len, NULL) != PSC_OK)
		return -1;
	int r = fk_send_raw(k, msg, len);
	free(msg);
	return r;
}

int fk_answer(fake_kms *k, const fk_msg *req, psc_body *b)
{
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	if (proto_body_encode(b, &enc, &enc_len, NULL) != PSC_OK)
		return -1;
	int r = send_body(k, req->m.transaction_id, b->code, enc, enc_len);
	free(enc);
	return r;
}

int fk_error(fake_kms *k, const fk_msg *req, uint16_t code, uint16_t reason, const char *text)
{
	proto_error e = {.error_code = code,
			 .psc_reason = reason,
			 .text = (const uint8_t *)text,
			 .text_len = text ? strlen(text) : 0};
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	if (proto_error_encode(&e, &enc, &enc_len) != PSC_OK)
		return -1;
	int r = send_body(k, req->m.transaction_id, PSC_MSG_ERROR, enc, enc_len);
	free(enc);
	return r;
}

/* ECDH-P256-AESPRF-KWP as the HSM does it: ephemeral key, Z, context, KEK
 * = AES-256-ECB_Z(context), RFC 5649 wrap of the secret under KEK. */
static int wrap_ec(fake_kms *k, const uint8_t psc_id[16], uint64_t epoch, const uint8_t secret[32],
		   uint8_t eph[65], uint8_t *out, size_t *out_len)
{
	EVP_PKEY *e = EVP_EC_gen("P-256");
	size_t el = 0;
	uint8_t z[32], ctxh[32], kek[32];
	size_t zl = sizeof(z);
	int ok = e &&
		 EVP_PKEY_get_octet_string_param(e, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, eph, 65,
						 &el) == 1 &&
		 el == 65;
	EVP_PKEY_CTX *d = ok ? EVP_PKEY_CTX_new(e, NULL) : NULL;
	ok = ok && d && EVP_PKEY_derive_init(d) == 1 &&
	     EVP_PKEY_derive_set_peer(d, k->peer_pub) == 1 && EVP_PKEY_derive(d, z, &zl) == 1 &&
	     zl == 32;
	EVP_PKEY_CTX_free(d);
	EVP_PKEY_free(e);
	ok = ok &&
	     proto_keywrap_context(psc_id, epoch, k->peer_node, eph, 65, ctxh, NULL) == PSC_OK &&
	     proto_keywrap_kek(z, ctxh, kek, NULL) == PSC_OK;
	EVP_CIPHER_CTX *c = ok ? EVP_CIPHER_CTX_new() : NULL;
	int l1 = 0, l2 = 0;
	if (c) {
		EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
		ok = EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kek, NULL) == 1 &&
		     EVP_EncryptUpdate(c, out, &l1, secret, 32) == 1 &&
		     EVP_EncryptFinal_ex(c, out + l1, &l2) == 1;
	}
	EVP_CIPHER_CTX_free(c);
	*out_len = (size_t)(l1 + l2);
	return ok ? 0 : -1;
}

static int wrap_rsa(fake_kms *k, uint8_t alg, const uint8_t secret[32], uint8_t *out,
		    size_t *out_len)
{
	const EVP_MD *md = alg == PSC_WRAP_RSA_OAEP_SHA1 ? EVP_sha1() : EVP_sha256();
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k->peer_pub, NULL);
	*out_len = 1024;
	int ok = c && EVP_PKEY_encrypt_init(c) == 1 &&
		 EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
		 EVP_PKEY_CTX_set_rsa_oaep_md(c, md) == 1 &&
		 EVP_PKEY_CTX_set_rsa_mgf1_md(c, md) == 1 &&
		 EVP_PKEY_encrypt(c, out, out_len, secret, 32) == 1;
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -1;
}

int fk_material(fake_kms *k, proto_material *m, fk_mat_store *st, uint8_t alg,
		const uint8_t psc_id[16], uint64_t epoch, const char *name, const uint8_t owner[16],
		uint32_t grace_ms, const uint8_t secret[32])
{
	memset(m, 0, sizeof(*m));
	memset(st, 0, sizeof(*st));
	memcpy(m->psc_id, psc_id, 16);
	m->epoch = epoch;
	snprintf(st->name, sizeof(st->name), "%s", name);
	m->name = (proto_bytes){(const uint8_t *)st->name, strlen(st->name)};
	memcpy(m->owner, owner, 16);
	m->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	m->grace_ms = grace_ms;
	m->wrap_alg = alg;
	size_t wl = 0;
	if (alg == PSC_WRAP_ECDH_P256_AESPRF_KWP) {
		if (wrap_ec(k, psc_id, epoch, secret, st->eph, st->wrapped, &wl) != 0)
			return -1;
		m->ephemeral = (proto_bytes){st->eph, 65};
	} else if (wrap_rsa(k, alg, secret, st->wrapped, &wl) != 0) {
		return -1;
	}
	m->wrapped = (proto_bytes){st->wrapped, wl};
	/* Full member list: the owner and the peer under test. */
	m->members_full = 1;
	memcpy(st->members[0].node_id, owner, 16);
	st->members[0].endpoint = (proto_bytes){(const uint8_t *)"tcp://127.0.0.1:7001", 20};
	memcpy(st->members[1].node_id, k->peer_node, 16);
	st->members[1].endpoint = (proto_bytes){(const uint8_t *)"tcp://127.0.0.1:7002", 20};
	m->members.items = st->members;
	m->members.n = memcmp(owner, k->peer_node, 16) ? 2 : 1;
	if (m->members.n == 1)
		st->members[0].endpoint = st->members[1].endpoint;
	return 0;
}

static void *serve(void *arg)
{
	fake_kms *k = arg;
	while (!k->stop) {
		fk_msg m;
		if (fk_recv(k, 20, &m) != 0)
			continue;
		k->handler(k, &m, k->arg);
		fk_msg_free(&m);
	}
	return NULL;
}

int fk_serve_start(fake_kms *k, fk_handler h, void *arg)
{
	k->handler = h;
	k->arg = arg;
	k->stop = 0;
	if (pthread_create(&k->thread, NULL, serve, k) != 0)
		return -1;
	k->running = 1;
	return 0;
}

void fk_serve_stop(fake_kms *k)
{
	if (!k->running)
		return;
	k->stop = 1;
	pthread_join(k->thread, NULL);
	k->running = 0;
}
