/*
 * proto_keywrap — the member side of epoch-secret distribution, in plain OpenSSL.
 *
 * Owns: the EC wrap context (docs/keywrap.md §2), the AES-PRF KEK step (§3) and the
 * peer-side unwrap of every member wrap algorithm (PSC_WRAP_* in psc_codes.h). The
 * KMS's HSM layer calls proto_keywrap_context() too, so both ends hash the same
 * bytes by construction.
 * Never: wrap (the KMS wraps inside its HSM), log or keep secrets. Every
 * intermediate (Z, KEK, decrypted buffers) is wiped with OPENSSL_cleanse before
 * return, on success and on failure.
 * Depends only on OpenSSL and psc_rc.
 */
#ifndef PROTO_KEYWRAP_H
#define PROTO_KEYWRAP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "psc_codes.h"
#include "psc_rc.h"

#define PROTO_KEYWRAP_CONTEXT_LEN 32  /* SHA-256 output */
#define PROTO_KEYWRAP_EC_POINT_LEN 65 /* uncompressed P-256 point 04||X||Y */
#define PROTO_KEYWRAP_KWP_LEN 40      /* RFC 5649 wrap of a 32-byte secret */
#define PROTO_KEYWRAP_RSA_MIN_BITS 2048
#define PROTO_KEYWRAP_RSA_MAX_BITS 8192
#define PROTO_KEYWRAP_MAX_WRAPPED (PROTO_KEYWRAP_RSA_MAX_BITS / 8)

/*
 * context = SHA-256("PSC wrap v1" || psc_id(16) || epoch (uint64 big-endian) ||
 *                   node_id(16) || eph_pub(65)).
 * eph_len must be PROTO_KEYWRAP_EC_POINT_LEN and eph_pub an uncompressed point
 * (first byte 0x04); anything else is PSC_E_BAD_VALUE.
 */
psc_rc proto_keywrap_context(const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			     const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *eph_pub,
			     size_t eph_len, uint8_t out[PROTO_KEYWRAP_CONTEXT_LEN],
			     psc_err *err) PSC_WUR;

/* KEK = AES-256-ECB_Z(context) (two blocks, no padding): the AES-PRF KDF step. */
psc_rc proto_keywrap_kek(const uint8_t z[32], const uint8_t context[PROTO_KEYWRAP_CONTEXT_LEN],
			 uint8_t kek_out[32], psc_err *err) PSC_WUR;

/*
 * Recovers the 32-byte epoch secret a KMS wrapped for this member.
 * member_private_key: the member's own key (RSA for algs 1 and 2, EC P-256 for 3).
 * eph_pub/eph_len: the KMS's ephemeral point for alg 3; ignored (may be NULL) for RSA.
 * Errors: PSC_E_UNSUPPORTED_ALG (unknown alg id or key type that does not match it),
 * PSC_E_BAD_VALUE (malformed ephemeral point), PSC_E_UNWRAP (blob tampered, wrong
 * key, wrong context), PSC_E_CRYPTO (OpenSSL failure). secret_out is zeroed on error.
 */
psc_rc proto_keywrap_unwrap(EVP_PKEY *member_private_key, uint8_t wrap_alg,
			    const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *eph_pub,
			    size_t eph_len, const uint8_t *wrapped, size_t wrapped_len,
			    uint8_t secret_out[PSC_EPOCH_SECRET_LEN], psc_err *err) PSC_WUR;

/* "RSA-OAEP-SHA1", "RSA-OAEP-SHA256", "ECDH-P256-AESPRF-KWP", or "unknown". */
const char *proto_keywrap_alg_name(uint8_t wrap_alg);

#endif
