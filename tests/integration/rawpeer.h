/*
 * rawpeer — a PSC peer at the wire level, for integration tests: it builds,
 * signs and sends any message (including deliberately bad ones) and receives,
 * verifies and decodes what the KMS sends. Deliberately independent of the
 * peer SDK, so KMS tests do not depend on SDK behaviour.
 */
#ifndef RAWPEER_H
#define RAWPEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proto_msg.h"
#include "proto_reload.h"

typedef struct rawpeer {
	char name[32];
	void *zctx, *sock;
	EVP_PKEY *key;
	uint8_t *cert_der;
	size_t cert_len;
	uint8_t node_id[PSC_NODE_ID_LEN];
	EVP_PKEY *kms_pub;
	uint8_t *kms_der;
	size_t kms_der_len;
	uint32_t overlay;
	uint64_t last_txid;
	/* the last message received */
	uint8_t *buf;
	size_t len;
	proto_message m;
	psc_body b;
	proto_error err;
	bool is_error;
	/* KMS requests that arrived while waiting for an answer, replayed by rp_recv */
	uint8_t *held[64];
	size_t held_len[64];
	size_t n_held;
} rawpeer;

/* Connects peer NAME of the test CA to the KMS (CURVE with kms_curve_pub). */
rawpeer *rp_new(void *zctx, const char *name, const char *endpoint, const char *kms_cert_pem,
		const char *kms_curve_pub);
void rp_free(rawpeer **p);

/* Sends a request body; returns its transaction id. */
uint64_t rp_send(rawpeer *p, const psc_body *b, bool with_cert);
/* Sends raw bytes as one frame. */
void rp_send_raw(rawpeer *p, const void *data, size_t len);
/* Sends an answer to a KMS request. */
void rp_answer(rawpeer *p, uint64_t txid, const psc_body *b);

/* Receives the next KMS message within timeout_ms, verifies its signature with
 * the KMS certificate and decodes it. false on timeout or bad message. */
bool rp_recv(rawpeer *p, int timeout_ms);
/* Receives until the answer to `txid` arrives. KMS requests received meanwhile
 * are kept, in order, for the next rp_recv / rp_wait_request. */
bool rp_wait_answer(rawpeer *p, uint64_t txid, int timeout_ms);
/* Waits for a KMS request of `code`. */
bool rp_wait_request(rawpeer *p, uint16_t code, int timeout_ms);

/* Initialize (no join/establish) and wait for its answer (which may be an
 * error: check p->is_error). false if nothing arrived in time. */
bool rp_initialize_wait(rawpeer *p, int timeout_ms);
/* Waits for a Refresh of `psc_id` with `reason`, skipping other requests;
 * the Refresh is then in p->b. false if none arrived in time. */
bool rp_wait_refresh(rawpeer *p, const uint8_t psc_id[16], uint8_t reason, int timeout_ms);

/* Unwraps a material's epoch secret with this peer's key. */
bool rp_unwrap(rawpeer *p, const proto_material *m, uint8_t secret[32]);

/* A fully formed, signed request with the usual fields. */
uint64_t rp_initialize(rawpeer *p, uint8_t flags, const uint8_t *join_psc,
		       const proto_establish_params *est);
uint64_t rp_psc_req(rawpeer *p, uint16_t code, const uint8_t psc_id[16]);

uint64_t rp_now_ms(void);

#endif
