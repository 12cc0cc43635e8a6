/*
 * hsm_wrap — wrapping an epoch secret to one member's certificate key, inside
 * the HSM (normative spec: docs/keywrap.md).
 *
 * Owns: the per-rekey ephemeral P-256 key pair, and the member wraps
 *   RSA  -> C_WrapKey(CKM_RSA_PKCS_OAEP) with SHA-256 if the token offers it,
 *           else SHA-1 (SoftHSM 2.6); PSC_WRAP_RSA_OAEP_SHA256 / _SHA1;
 *   P-256 -> CKM_ECDH1_DERIVE(CKD_NULL) -> Z (AES-256) -> CKM_AES_ECB_ENCRYPT_DATA
 *           over proto_keywrap_context() -> KEK -> C_WrapKey(CKM_AES_KEY_WRAP_PAD);
 *           PSC_WRAP_ECDH_P256_AESPRF_KWP, 40 bytes.
 * Never: see the epoch secret, Z or the KEK in plaintext (all are sensitive,
 * non-extractable HSM objects destroyed after each wrap), or reuse an ephemeral
 * key across rekeys (one hsm_eph per rekey; its private half never leaves the HSM).
 */
#ifndef HSM_WRAP_H
#define HSM_WRAP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "hsm_epoch.h"
#include "proto_keywrap.h"
#include "psc_codes.h"

typedef struct hsm_eph hsm_eph;

/* A fresh ephemeral P-256 key pair in the HSM for one rekey, owned by session s. */
psc_rc hsm_eph_new(hsm_session *s, hsm_eph **out, psc_err *err) PSC_WUR;
/*
 * Known-answer use only (self-tests, docs/keywrap.md's test vector): the same,
 * with a caller-chosen private scalar imported as a sensitive session key.
 */
psc_rc hsm_eph_import(hsm_session *s, const uint8_t priv[32], hsm_eph **out, psc_err *err) PSC_WUR;
/* Destroys the HSM key pair and frees; NULL-safe. Call it from the worker that
 * owns the session it was made on (it uses that session). */
void hsm_eph_free(hsm_eph **eph);
/* The uncompressed public point (PROTO_KEYWRAP_EC_POINT_LEN bytes), borrowed. */
const uint8_t *hsm_eph_public(const hsm_eph *eph);

/*
 * Wraps epoch secret `secret` for the member whose certificate public key is
 * member_public. eph is required for EC members and ignored for RSA (may be NULL).
 * On success *alg_out is the PSC_WRAP_* id used and wrapped[0..*wrapped_len) the
 * bytes to send (PROTO_KEYWRAP_KWP_LEN for EC, the modulus size for RSA;
 * wrapped_cap >= PROTO_KEYWRAP_MAX_WRAPPED always suffices).
 * Errors: PSC_E_HSM_UNSUPPORTED_KEY (curve other than P-256, key type other than
 * RSA/EC, RSA outside 2048..8192 bits), PSC_E_HSM_BAD_PUBKEY, PSC_E_INVALID_ARG,
 * PSC_E_HSM_STALE_KEY, PSC_E_HSM_DOWN, PSC_E_HSM_P11.
 */
psc_rc hsm_wrap_for_member(hsm_session *s, const hsm_key *secret, const hsm_eph *eph,
			   EVP_PKEY *member_public, const uint8_t psc_id[PSC_PSC_ID_LEN],
			   uint64_t epoch, const uint8_t node_id[PSC_NODE_ID_LEN], uint8_t *alg_out,
			   uint8_t *wrapped, size_t wrapped_cap, size_t *wrapped_len,
			   psc_err *err) PSC_WUR;

#endif
