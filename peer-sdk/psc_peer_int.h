/*
 * psc_peer_int — what the SDK's own modules share about a psc_peer; not
 * installed, not exported from the shared library (see pscpeer.map).
 *
 * Owns: the psc_peer structure, the transport and request helpers used by the
 * flows (psc_flows.c), and the epoch-secret accessor for the group-messaging
 * layer that comes later.
 * Never: expose an epoch secret through the public header.
 */
#ifndef PSC_PEER_INT_H
#define PSC_PEER_INT_H

#include <stdint.h>

#include <openssl/evp.h>

#include "proto_msg.h"
#include "proto_reload.h"
#include "psc/peer.h"
#include "psc_replay.h"
#include "psc_store.h"

#define PSC_PEER_CURVE_Z85_LEN 40
#define PSC_PEER_REINIT_BACKOFF_MS 1000 /* between automatic re-Initialize attempts */
#define PSC_PEER_MONITOR_POLL_MS 1000	/* longest psc_peer_next_timeout_ms() with auto_reconnect */

struct psc_peer {
	/* configuration (copied) */
	char *kms_endpoint;
	char *overlay;
	char *data_endpoint;
	int request_timeout_ms;
	int decision_timeout_ms;
	uint64_t freshness_ms;
	int auto_reconnect;
	psc_peer_callbacks cb;
	void *user;
	/* questions the application answers later (psc_peer_decide) */
	struct psc_open_decision {
		uint64_t id;	      /* the KMS request's transaction id */
		uint16_t code;	      /* the answer's message code */
		uint64_t deadline_ms; /* wall clock: the KMS stops waiting */
	} open_decisions[PSC_PEER_OPEN_DECISIONS];
	int curve;
	char kms_curve_pub[PSC_PEER_CURVE_Z85_LEN + 1];

	/* identity */
	EVP_PKEY *key;
	struct psc_p11key *p11; /* the token behind key, when it is on one */
	uint8_t *cert_der;
	size_t cert_len;
	uint8_t node_id[PSC_NODE_ID_LEN];
	int key_is_rsa;
	uint32_t overlay_hash;

	/* the KMS */
	EVP_PKEY *kms_pub;
	uint8_t *kms_cert_der;
	size_t kms_cert_len;
	uint8_t kms_node_id[PSC_NODE_ID_LEN];

	/* transport: one ZeroMQ context per peer (no global state) */
	void *zctx;
	void *dealer;
	void *monitor;
	unsigned monitor_seq;
	int disconnected; /* the link dropped since the last (re)Initialize */
	int have_curve_keys;
	char curve_pub[PSC_PEER_CURVE_Z85_LEN + 1];
	char curve_sec[PSC_PEER_CURVE_Z85_LEN + 1]; /* wiped at free */

	/* protocol state */
	int initialized;
	int registered;	      /* Initialize succeeded at least once */
	int64_t reinit_after; /* monotonic ms: no automatic re-Initialize before */
	int need_reinit;      /* a timeout or a KMS restart was seen */
	int in_request;	      /* a blocking request is running (callbacks must not nest) */
	int in_reinit;
	int in_process;
	psc_store *store;
	psc_replay *replay;
	psc_peer_kms_error last_error;
	uint64_t last_kms_time;
};

/* Clocks, in milliseconds. */
uint64_t psc_sdk_wall_ms(void);
int64_t psc_sdk_mono_ms(void);

/* An answer to one of our requests: the frame it lives in (decoded pointers
 * borrow it) and its decoded body. */
typedef struct psc_answer {
	uint8_t *frame;
	size_t frame_len;
	proto_message msg;
	psc_body body;
} psc_answer;
void psc_answer_clear(psc_answer *a);

/*
 * Sends `req` (a request body; its timestamp is filled in here) to the KMS and
 * processes incoming messages until the matching answer (code ans_code) or an
 * ErrorResponse arrives, or the request timeout. An ErrorResponse becomes a
 * psc_rc (PSC_E_PEER_FORBIDDEN, ...) with err naming the message, the RELOAD
 * code, the PSC reason and the KMS's text. On PSC_OK *ans holds the answer.
 */
psc_rc psc_sdk_request(psc_peer *p, psc_body *req, uint16_t ans_code, psc_answer *ans,
		       psc_err *err) PSC_WUR;

/*
 * Unwraps material addressed to this peer and installs it as the PSC's new
 * current epoch, unless it is stale (then *applied = 0 and PSC_OK).
 * Runs on_epoch with `reason` when applied.
 */
psc_rc psc_sdk_apply_material(psc_peer *p, const proto_material *m, psc_peer_reason reason,
			      int *applied, psc_err *err) PSC_WUR;

/* Forgets a PSC (wiping its epochs) and runs on_gone if it was held. */
void psc_sdk_forget(psc_peer *p, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t last_epoch,
		    psc_peer_reason reason, int notify);

/* Reports a problem to the application's on_error callback. */
void psc_sdk_report(psc_peer *p, const psc_err *err);

/* Re-Initialize + Catchup after a restart/reconnect (used by the flows). */
psc_rc psc_sdk_reinit(psc_peer *p, psc_err *err) PSC_WUR;

/*
 * For the SDK's group-messaging layer only: copies the secret of `epoch` of a
 * PSC (0 = the current epoch) into out, if held: the current epoch, or the
 * previous one while its grace period runs. *epoch_out (nullable) names the
 * epoch copied. The caller wipes out with OPENSSL_cleanse when done and never
 * logs it. PSC_E_PEER_UNKNOWN_PSC / PSC_E_PEER_NO_EPOCH otherwise.
 */
psc_rc psc_sdk_epoch_secret(psc_peer *p, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    uint64_t *epoch_out, uint8_t out[PSC_EPOCH_SECRET_LEN]) PSC_WUR;

/* --- psc_transport.c ---------------------------------------------- */
/* Creates the DEALER (+ connection monitor) and connects it to the KMS. */
psc_rc psc_sdk_connect(psc_peer *p, psc_err *err) PSC_WUR;
/* Closes the DEALER and its monitor (pending messages are dropped). */
void psc_sdk_disconnect(psc_peer *p);
/* Signs and sends an answer to a KMS request, or an ErrorResponse. A failure
 * is reported through on_error: nobody else could act on it. */
void psc_sdk_send_answer(psc_peer *p, const proto_message *req, uint16_t code,
			 const psc_body *body);
void psc_sdk_send_error(psc_peer *p, const proto_message *req, uint16_t error_code, uint16_t reason,
			const char *text);

/* --- psc_kmsreq.c ----------------------------------------------------- */
/* Handles one verified KMS request (freshness, replay, dispatch, answer). */
void psc_sdk_kms_request(psc_peer *p, const proto_message *m, const psc_body *b);

/* --- psc_util.c ------------------------------------------------------- */
/* Name of a PSC reason ("policy_denied"), "" for 0, "unknown" otherwise. */
const char *psc_sdk_reason_name(uint16_t reason);
/* Copies untrusted text for people: at most cap-1 bytes, control characters
 * replaced by '?', NUL-terminated. */
void psc_sdk_copy_text(char *dst, size_t cap, const uint8_t *src, size_t len);
/* The psc_rc for a RELOAD error code in an ErrorResponse. */
psc_rc psc_sdk_rc_for_error(uint16_t error_code);

#endif
