/*
 * fake_kms — the KMS end of the wire for peer-sdk tests: a real ZeroMQ ROUTER
 * driven by the test, real RELOAD messages signed with the test CA's KMS key,
 * and epoch secrets wrapped to the peer with plain OpenSSL the way the HSM
 * does it (docs/protocol.md §6, DESIGN.md §3). Every message from the peer is
 * decoded and its signature verified against the peer's certificate.
 * Not a KMS: no policy, no state; each test scripts what the KMS says.
 */
#ifndef FAKE_KMS_H
#define FAKE_KMS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proto_msg.h"
#include "proto_reload.h"

#define FK_OVERLAY "psc.test"

typedef struct fk_msg {
	uint8_t *buf;
	size_t len;
	proto_message m;
	psc_body b;    /* when m.code != 0xffff */
	proto_error e; /* when m.code == 0xffff */
	int verified;  /* signature verified with the peer's certificate */
} fk_msg;

typedef struct fake_kms fake_kms;
typedef void (*fk_handler)(fake_kms *k, fk_msg *req, void *arg);

struct fake_kms {
	void *ctx, *router;
	char endpoint[128];
	char curve_pub[41];
	/* KMS identity (test CA kms.*) */
	EVP_PKEY *key;
	uint8_t *cert_der;
	size_t cert_len;
	uint8_t node_id[16];
	proto_signer signer;
	/* the peer under test */
	EVP_PKEY *peer_pub;
	uint8_t peer_node[16];
	uint8_t rid[256];
	size_t rid_len;
	uint32_t overlay;
	/* threaded responder */
	pthread_t thread;
	int running;
	atomic_int stop;
	fk_handler handler;
	void *arg;
};

/* Binds a ROUTER on 127.0.0.1 (CURVE server if curve). peer: test CA name. */
int fk_open(fake_kms *k, const char *peer, int curve);
void fk_close(fake_kms *k);

/* Receives one message from the peer (0) or times out (-1). */
int fk_recv(fake_kms *k, int timeout_ms, fk_msg *out);
void fk_msg_free(fk_msg *m);

/* Builds and sends a KMS request to the peer; *out_txid (nullable) gets the id.
 * timestamp 0 = now. */
int fk_send_req(fake_kms *k, psc_body *b, uint64_t timestamp, uint64_t *out_txid);
int fk_send_raw(fake_kms *k, const uint8_t *buf, size_t len);
/* Builds a signed request (the caller frees *out). */
int fk_build_req(fake_kms *k, const proto_signer *s, psc_body *b, uint64_t timestamp, uint64_t txid,
		 uint8_t **out, size_t *out_len);
int fk_answer(fake_kms *k, const fk_msg *req, psc_body *b);
int fk_error(fake_kms *k, const fk_msg *req, uint16_t code, uint16_t reason, const char *text);

/* Material for the peer: the epoch secret wrapped to its key with `alg`. The
 * storage struct keeps the bytes the material points at. */
typedef struct fk_mat_store {
	uint8_t eph[65];
	uint8_t wrapped[1024];
	char name[256];
	proto_member members[4];
} fk_mat_store;
int fk_material(fake_kms *k, proto_material *m, fk_mat_store *st, uint8_t alg,
		const uint8_t psc_id[16], uint64_t epoch, const char *name, const uint8_t owner[16],
		uint32_t grace_ms, const uint8_t secret[32]);

/* Runs handler for each message the peer sends, on a thread, until stopped. */
int fk_serve_start(fake_kms *k, fk_handler h, void *arg);
void fk_serve_stop(fake_kms *k);

uint64_t fk_now_ms(void);

#endif
