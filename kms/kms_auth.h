/*
 * kms_auth — who is talking to the KMS, and is the request fresh.
 *
 * Owns: the trust store (CA bundle + CRL, the draft's "certificate server"),
 * verification of a peer certificate (chain, validity at a given time, CRL,
 * Node-ID binding), request freshness (timestamp window and "not before this
 * process started") and the (signer, transaction id) replay cache.
 * Never: read the clock (callers pass now_ms, so tests and replays are exact),
 * accept a certificate when the CRL cannot be trusted (fail closed), or log
 * anything but public certificate facts.
 */
#ifndef KMS_AUTH_H
#define KMS_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "psc_codes.h"
#include "psc_rc.h"

typedef struct kms_trust kms_trust;

/* Loads the CA bundle (PEM, one or more certificates) and, if crl_file is not
 * NULL, a PEM CRL whose signature must verify with a CA in the bundle. */
psc_rc kms_trust_new(kms_trust **out, const char *ca_file, const char *crl_file, psc_err *err)
	PSC_WUR;
void kms_trust_free(kms_trust **t);

/* The CRL's nextUpdate (seconds since the epoch), 0 when there is no CRL. */
int64_t kms_trust_crl_next_update(const kms_trust *t);

/*
 * Verifies a peer certificate at time now_ms: chain to the CA bundle (extra
 * untrusted intermediates may be given), validity period, CRL (whose own
 * nextUpdate must not have passed), and extracts the Node-ID bound for
 * `overlay`. Distinct errors: PSC_E_KMSD_CERT_UNTRUSTED / _EXPIRED / _NOT_YET /
 * _REVOKED, PSC_E_KMSD_CRL, PSC_E_NO_NODE_ID / PSC_E_BAD_NODE_ID_URI / PSC_E_OVERLAY.
 */
psc_rc kms_trust_verify(const kms_trust *t, X509 *cert, STACK_OF(X509) *untrusted,
			uint64_t now_ms, const char *overlay, uint8_t node_id[PSC_NODE_ID_LEN],
			psc_err *err) PSC_WUR;

/* True if the CRL lists this certificate (for evicting members on CRL reload). */
int kms_trust_is_revoked(const kms_trust *t, X509 *cert);

/*
 * Freshness (docs/protocol.md §9): |ts - now| <= window and ts >= started.
 * PSC_E_KMSD_STALE otherwise, with the skew in the detail.
 */
psc_rc kms_fresh(uint64_t ts_ms, uint64_t now_ms, uint64_t window_ms, uint64_t started_ms,
		 psc_err *err) PSC_WUR;

/*
 * Replay cache of (signer certificate hash, transaction id), each remembered
 * for `ttl_ms` (twice the freshness window covers both edges). Bounded: when
 * every slot holds a live entry, new requests are refused (fail closed) with
 * PSC_E_KMSD_REPLAY_FULL rather than forgetting one.
 */
typedef struct kms_replay kms_replay;
psc_rc kms_replay_new(kms_replay **out, size_t capacity, uint64_t ttl_ms) PSC_WUR;
void kms_replay_free(kms_replay **r);
/* PSC_OK and remembers it if new; PSC_E_KMSD_REPLAY if seen and still live. */
psc_rc kms_replay_check(kms_replay *r, const uint8_t signer[PSC_HASH_LEN], uint64_t txid,
			uint64_t now_ms) PSC_WUR;
size_t kms_replay_live(const kms_replay *r, uint64_t now_ms);

#endif
