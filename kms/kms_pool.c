#include "kms_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <zmq.h>

#define POOL_MAX_WORKERS 64

struct kms_pool;

typedef struct pool_worker {
	struct kms_pool *pool;
	unsigned index; /* HSM session index */
	pthread_t thread;
	bool started;
} pool_worker;

struct kms_pool {
	void *zctx;
	hsm_ctx *hsm;
	char endpoint[64];
	void *pull; /* event loop side */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	kms_fanout *head, *tail; /* queued, not yet running */
	bool stopping;
	size_t busy; /* submitted and not taken back (event-loop thread only) */
	unsigned n_workers;
	pool_worker workers[POOL_MAX_WORKERS];
};

psc_rc kms_wrap_to(hsm_session *hs, const hsm_key *secret, hsm_eph **eph, EVP_PKEY *pub,
		   const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
		   const uint8_t node_id[PSC_NODE_ID_LEN], kms_wrapped *w, psc_err *err)
{
	if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC && !*eph) {
		psc_rc rc = hsm_eph_new(hs, eph, err);
		if (rc != PSC_OK)
			return rc;
	}
	psc_rc rc = hsm_wrap_for_member(hs, secret, *eph, pub, psc_id, epoch, node_id, &w->alg,
					w->bytes, sizeof(w->bytes), &w->len, err);
	w->eph_len = 0;
	if (rc == PSC_OK && w->alg == PSC_WRAP_ECDH_P256_AESPRF_KWP) {
		memcpy(w->eph, hsm_eph_public(*eph), PROTO_KEYWRAP_EC_POINT_LEN);
		w->eph_len = PROTO_KEYWRAP_EC_POINT_LEN;
	}
	return rc;
}

psc_rc kms_fanout_new(kms_fanout **out, size_t n_dest, const proto_member *members,
		      size_t n_members)
{
	*out = NULL;
	kms_fanout *j = calloc(1, sizeof(*j));
	if (!j)
		return PSC_E_NOMEM;
	size_t ep_bytes = 0;
	for (size_t i = 0; i < n_members; i++)
		ep_bytes += members[i].endpoint.len;
	j->dest = calloc(n_dest ? n_dest : 1, sizeof(*j->dest));
	j->members = calloc(n_members ? n_members : 1, sizeof(*j->members));
	j->endpoints = malloc(ep_bytes ? ep_bytes : 1);
	if (!j->dest || !j->members || !j->endpoints) {
		kms_fanout_free(&j);
		return PSC_E_NOMEM;
	}
	j->n_dest = n_dest;
	size_t off = 0;
	for (size_t i = 0; i < n_members; i++) {
		j->members[i] = members[i];
		if (members[i].endpoint.len)
			memcpy(j->endpoints + off, members[i].endpoint.p, members[i].endpoint.len);
		j->members[i].endpoint = (proto_bytes){(const uint8_t *)j->endpoints + off,
						       members[i].endpoint.len};
		off += members[i].endpoint.len;
	}
	j->tmpl.members.items = j->members;
	j->tmpl.members.n = n_members;
	*out = j;
	return PSC_OK;
}

void kms_fanout_free(kms_fanout **p)
{
	if (!p || !*p)
		return;
	kms_fanout *j = *p;
	for (size_t i = 0; j->dest && i < j->n_dest; i++) {
		EVP_PKEY_free(j->dest[i].pub);
		free(j->dest[i].msg);
	}
	EVP_PKEY_free(j->signer.key);
	OPENSSL_cleanse(j->blob, sizeof(j->blob));
	free(j->dest);
	free(j->members);
	free(j->endpoints);
	free(j);
	*p = NULL;
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The work itself: every wrap, every Refresh body, one batch signature. */
static psc_rc fanout_run(hsm_session *hs, kms_fanout *j, psc_err *err)
{
	hsm_key key;
	psc_rc rc = hsm_epoch_load(hs, j->blob, sizeof(j->blob), &key, err);
	if (rc != PSC_OK)
		return rc;
	size_t n = j->n_dest ? j->n_dest : 1;
	hsm_eph *eph = NULL;
	kms_wrapped w;
	uint8_t **enc = calloc(n, sizeof(*enc));
	size_t *enc_len = calloc(n, sizeof(*enc_len));
	proto_envelope *envs = calloc(n, sizeof(*envs));
	uint8_t **outs = calloc(n, sizeof(*outs));
	size_t *out_lens = calloc(n, sizeof(*out_lens));
	if (!enc || !enc_len || !envs || !outs || !out_lens) {
		rc = psc_err_set(err, PSC_E_NOMEM, "fan-out to %zu members: out of memory", j->n_dest);
		goto out;
	}
	for (size_t i = 0; i < j->n_dest; i++) {
		kms_fanout_dest *d = &j->dest[i];
		rc = kms_wrap_to(hs, &key, &eph, d->pub, j->psc_id, j->epoch, d->node_id, &w, err);
		if (rc != PSC_OK)
			goto out;
		psc_body body = {.code = PSC_MSG_REFRESH_REQ};
		body.u.refresh_req.timestamp = j->timestamp_ms;
		body.u.refresh_req.reason = j->reason;
		proto_material *m = &body.u.refresh_req.material;
		*m = j->tmpl;
		m->wrap_alg = w.alg;
		m->ephemeral = (proto_bytes){w.eph, w.eph_len};
		m->wrapped = (proto_bytes){w.bytes, w.len};
		rc = proto_body_encode(&body, &enc[i], &enc_len[i], err);
		if (rc != PSC_OK)
			goto out;
		uint64_t txid = 0;
		rc = hsm_random(hs, (uint8_t *)&txid, sizeof(txid), err);
		if (rc != PSC_OK)
			goto out;
		envs[i] = (proto_envelope){.overlay = j->overlay,
					   .transaction_id = txid ? txid : 1,
					   .code = PSC_MSG_REFRESH_REQ,
					   .dest_node = d->node_id};
	}
	if (j->n_dest) {
		rc = proto_message_build_batch(envs, (const uint8_t *const *)enc, enc_len, j->n_dest,
					       &j->signer, outs, out_lens, err);
		if (rc != PSC_OK)
			goto out;
		for (size_t i = 0; i < j->n_dest; i++) {
			j->dest[i].msg = outs[i];
			j->dest[i].len = out_lens[i];
			outs[i] = NULL;
		}
	}
out:
	{
		psc_err ignore;
		(void)!hsm_key_destroy(hs, &key, &ignore);
	}
	hsm_eph_free(&eph);
	OPENSSL_cleanse(&w, sizeof(w));
	for (size_t i = 0; enc && i < j->n_dest; i++)
		free(enc[i]);
	free(enc);
	free(enc_len);
	free(envs);
	free(outs);
	free(out_lens);
	return rc;
}

static void *worker_main(void *arg)
{
	pool_worker *w = arg;
	kms_pool *pool = w->pool;
	char name[16];
	snprintf(name, sizeof(name), "psc-hsm-%u", w->index);
	(void)pthread_setname_np(pthread_self(), name); /* for top -H, perf, gdb */
	void *push = zmq_socket(pool->zctx, ZMQ_PUSH);
	int linger = 0;
	if (push) {
		(void)zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof(linger));
		if (zmq_connect(push, pool->endpoint) != 0) {
			zmq_close(push);
			push = NULL;
		}
	}
	for (;;) {
		pthread_mutex_lock(&pool->lock);
		while (!pool->head && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->stopping) {
			pthread_mutex_unlock(&pool->lock);
			break;
		}
		kms_fanout *j = pool->head;
		pool->head = j->next;
		if (!pool->head)
			pool->tail = NULL;
		j->next = NULL;
		pthread_mutex_unlock(&pool->lock);

		uint64_t t0 = mono_us();
		j->wait_us = t0 - j->queued_us;
		hsm_session *hs = NULL;
		j->rc = hsm_session_get(pool->hsm, w->index, &hs, &j->err);
		if (j->rc == PSC_OK)
			j->rc = fanout_run(hs, j, &j->err);
		j->run_us = mono_us() - t0;
		/* The pointer travels; the job stays in this process's memory. A
		 * failed send (only at shutdown) leaves it to kms_pool_free. */
		if (!push || zmq_send(push, &j, sizeof(j), 0) != (int)sizeof(j)) {
			pthread_mutex_lock(&pool->lock);
			j->next = pool->head;
			pool->head = j;
			if (!pool->tail)
				pool->tail = j;
			pthread_mutex_unlock(&pool->lock);
			break;
		}
	}
	if (push)
		zmq_close(push);
	return NULL;
}

psc_rc kms_pool_new(kms_pool **out, void *zctx, hsm_ctx *hsm, unsigned workers, psc_err *err)
{
	*out = NULL;
	if (workers < 1 || workers > POOL_MAX_WORKERS)
		return psc_err_set(err, PSC_E_INVALID_ARG, "HSM worker pool: %u workers (1..%d)",
				   workers, POOL_MAX_WORKERS);
	kms_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	p->zctx = zctx;
	p->hsm = hsm;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	snprintf(p->endpoint, sizeof(p->endpoint), "inproc://psc-kmsd-pool-%p", (void *)p);
	p->pull = zmq_socket(zctx, ZMQ_PULL);
	int linger = 0;
	if (!p->pull || zmq_setsockopt(p->pull, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
	    zmq_bind(p->pull, p->endpoint) != 0) {
		psc_rc rc = psc_err_set(err, PSC_E_IO, "HSM worker pool: %s: %s", p->endpoint,
					zmq_strerror(zmq_errno()));
		kms_pool_free(&p);
		return rc;
	}
	for (unsigned i = 0; i < workers; i++) {
		pool_worker *w = &p->workers[i];
		w->pool = p;
		w->index = i + 1;
		int e = pthread_create(&w->thread, NULL, worker_main, w);
		if (e != 0) {
			psc_rc rc = psc_err_set(err, PSC_E_NOMEM, "HSM worker pool: starting worker "
						"%u: %s", i, strerror(e));
			kms_pool_free(&p);
			return rc;
		}
		w->started = true;
		p->n_workers++;
	}
	*out = p;
	return PSC_OK;
}

void kms_pool_free(kms_pool **pp)
{
	if (!pp || !*pp)
		return;
	kms_pool *p = *pp;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n_workers; i++)
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
	kms_fanout *j;
	while (p->pull && (j = kms_pool_take(p)) != NULL)
		kms_fanout_free(&j);
	while ((j = p->head) != NULL) {
		p->head = j->next;
		kms_fanout_free(&j);
	}
	if (p->pull)
		zmq_close(p->pull);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	*pp = NULL;
}

void kms_pool_submit(kms_pool *p, kms_fanout *j)
{
	j->next = NULL;
	j->rc = PSC_OK;
	j->queued_us = mono_us();
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	p->busy++;
}

void *kms_pool_socket(kms_pool *p)
{
	return p->pull;
}

kms_fanout *kms_pool_take(kms_pool *p)
{
	kms_fanout *j = NULL;
	int n = zmq_recv(p->pull, &j, sizeof(j), ZMQ_DONTWAIT);
	if (n != (int)sizeof(j))
		return NULL;
	if (p->busy)
		p->busy--;
	return j;
}

size_t kms_pool_busy(const kms_pool *p)
{
	return p->busy;
}

unsigned kms_pool_workers(const kms_pool *p)
{
	return p->n_workers;
}
