/*
 * proto_samples — one representative message per PSC message code, with fixed
 * contents, and the fixed vector signer. Shared by the round-trip and vector
 * tests (tests/unit/proto), the fuzz seed corpus and the codec benchmark, so
 * docs/protocol.md's vectors, the fuzz seeds and the bench all use the same bytes.
 */
#ifndef PROTO_SAMPLES_H
#define PROTO_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proto_msg.h"
#include "proto_reload.h"

#define SAMPLE_OVERLAY "psc.test"
extern const uint16_t sample_codes[];
extern const size_t sample_count;

/* Fills b with the sample body for code (pointers into static data). */
void sample_body(uint16_t code, psc_body *b);
/* A Refresh with n members (n <= 1024), for benchmarks. */
void sample_refresh(size_t n, psc_body *b);
/* A deterministic transaction id for a code. */
uint64_t sample_txid(uint16_t code);

/* The vector signer (fixed RSA key + self-signed certificate). */
typedef struct sample_signer {
	EVP_PKEY *key;
	uint8_t *cert_der;
	size_t cert_len;
	proto_signer signer;
} sample_signer;
int sample_signer_load(sample_signer *s);
void sample_signer_free(sample_signer *s);

/* Builds the complete signed RELOAD message for a sample code (no certificates
 * in the SecurityBlock unless with_cert). Caller frees *out. 0 on success. */
int sample_message(const sample_signer *s, uint16_t code, int with_cert, uint8_t **out,
		   size_t *out_len);

#endif
