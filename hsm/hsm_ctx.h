/*
 * hsm_ctx — the KMS's one connection to its PKCS#11 token (docs/hsm.md).
 *
 * Owns: loading the PKCS#11 module, finding the token by label, the user login,
 * one PKCS#11 session per KMS HSM worker, health tracking and recovery, and the
 * KMS's long-lived token keys as OpenSSL EVP_PKEYs (through libp11).
 * Never: hold a PSC key (epoch secret, KEK, derived key) in plaintext, log or
 * keep the PIN anywhere but its own wiped copy, call C_Finalize while libp11 may
 * still use the module, or let two threads use one hsm_session at once.
 *
 * Two views of one module. libp11 loads the module (C_Initialize, slot and token
 * discovery, C_Login) and gives the identity and audit private keys as EVP_PKEYs.
 * This module also dlopen()s the same path and calls its C_GetFunctionList for
 * what libp11 cannot do (secret keys, wrap/unwrap, derive, attribute checks); its
 * C_Initialize returns CKR_CRYPTOKI_ALREADY_INITIALIZED, which is expected, and
 * its sessions share libp11's login (PKCS#11 login is per application and token).
 * The dlopen handle and function list are the only process-wide state; they
 * belong to the hsm_ctx that opened them.
 *
 * Thread rules (the KMS calls this from an HSM worker pool):
 *   - hsm_ctx_new/hsm_ctx_free: one thread, with no other call in flight.
 *   - hsm_session_get(ctx, i, ...) hands out worker session i; worker i alone
 *     uses it (and everything made with it: ephemeral keys, epoch handles it
 *     created) until hsm_ctx_free. Different sessions run in parallel (the token
 *     may serialise them internally; SoftHSM does).
 *   - hsm_healthy, hsm_ctx_sessions and hsm_identity_key/hsm_audit_key are safe
 *     from any thread. EVP_PKEYs from libp11 may be used from any thread (libp11
 *     keeps its own locked session pool).
 *
 * Failure model: a call that returns CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 * CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_ERROR or
 * CKR_USER_NOT_LOGGED_IN marks the HSM down: that call fails with PSC_E_HSM_DOWN
 * and hsm_healthy() turns false. The next call on any session tries once to
 * recover (find the token again by label, open a fresh session, log in again);
 * if that fails, calls fail fast with PSC_E_HSM_DOWN, without touching the token,
 * until the retry interval has passed. After a recovery every worker session is
 * reopened lazily by its own worker; session objects (epoch secret handles,
 * ephemeral keys) made before the fault are gone and report PSC_E_HSM_STALE_KEY:
 * reload epoch secrets from their blobs. A PIN the token refused is never sent
 * again (tokens lock the PIN after a few tries): recovery then fails with
 * PSC_E_HSM_PIN until the process restarts with the right PIN.
 */
#ifndef HSM_CTX_H
#define HSM_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "psc_rc.h"

typedef struct hsm_ctx hsm_ctx;
typedef struct hsm_session hsm_session;

/* Labels and ids of the objects psc-kms keeps on its token (docs/hsm.md). */
#define HSM_LABEL_KEK "psc-master-kek"
#define HSM_LABEL_IDENTITY "psc-kms-identity"
#define HSM_LABEL_AUDIT "psc-kms-audit"
#define HSM_KEK_ID_LEN 16
#define HSM_ID_IDENTITY 0x01 /* CKA_ID (one byte) of the identity key pair */
#define HSM_ID_AUDIT 0x02    /* CKA_ID (one byte) of the audit key pair */
#define HSM_MAX_SESSIONS 64
#define HSM_PIN_MAX 256

typedef struct hsm_config {
	const char *module_path; /* PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so */
	const char *token_label; /* CKA_LABEL of the token (<= 32 bytes) */
	const char *pin;	 /* user PIN; copied, the copy is wiped at free */
	unsigned sessions;	 /* worker sessions wanted (1..HSM_MAX_SESSIONS) */
	unsigned retry_ms;	 /* fail-fast interval between recovery tries; 0 = 500 */
	bool allow_no_kek;	 /* open a token without psc-kms keys (the ceremony) */
} hsm_config;

/*
 * Opens the module and the token and logs in. Without allow_no_kek the token
 * must hold the master KEK (PSC_E_HSM_NOT_READY otherwise), whose attributes are
 * checked (PSC_E_HSM_KEY_POLICY if it is extractable or not sensitive).
 * The number of sessions is capped by the token's ulMaxSessionCount (less one
 * for control work); hsm_ctx_sessions() tells how many were opened.
 * Errors: PSC_E_HSM_MODULE, PSC_E_HSM_NO_TOKEN, PSC_E_HSM_PIN, PSC_E_HSM_P11,
 * PSC_E_HSM_MECHANISM, with a sentence naming the module, token, PKCS#11
 * function and CKR_* value, and what to do.
 */
psc_rc hsm_ctx_new(hsm_ctx **out, const hsm_config *cfg, psc_err *err) PSC_WUR;
void hsm_ctx_free(hsm_ctx **ctx);

unsigned hsm_ctx_sessions(const hsm_ctx *ctx);
/* False from the first transient failure until a recovery succeeds. */
bool hsm_healthy(const hsm_ctx *ctx);
/* Whether the token offered RSA-OAEP with SHA-256 when probed at open. */
bool hsm_oaep_sha256(const hsm_ctx *ctx);
/* Id of the current master KEK (zeroes when the token has none yet). */
void hsm_kek_id(const hsm_ctx *ctx, uint8_t out[HSM_KEK_ID_LEN]);

/* Worker session i (0 <= i < hsm_ctx_sessions). Borrowed; lives until ctx free. */
psc_rc hsm_session_get(hsm_ctx *ctx, unsigned i, hsm_session **out, psc_err *err) PSC_WUR;

/*
 * The KMS identity / audit private key as an EVP_PKEY (libp11), usable with
 * EVP_DigestSign (ECDSA signatures come out DER-encoded, as OpenSSL makes them).
 * *out gets a new reference: EVP_PKEY_free it, before hsm_ctx_free (the key
 * points into libp11's state, which hsm_ctx_free unloads). PSC_E_HSM_NO_KEY with "run
 * psc-kmsctl init" if the ceremony has not run; PSC_E_HSM_DOWN while down.
 * After a recovery the token may have renumbered its objects: keys fetched
 * before the fault can fail to sign, so fetch them again whenever a signature
 * fails or hsm_healthy() has been false (cheap: cached per recovery).
 */
psc_rc hsm_identity_key(hsm_ctx *ctx, EVP_PKEY **out, psc_err *err) PSC_WUR;
psc_rc hsm_audit_key(hsm_ctx *ctx, EVP_PKEY **out, psc_err *err) PSC_WUR;

/* n random bytes from the token's RNG (C_GenerateRandom). */
psc_rc hsm_random(hsm_session *s, uint8_t *buf, size_t n, psc_err *err) PSC_WUR;

#endif
