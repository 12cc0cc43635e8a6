/*
 * kms_int — the KMS daemon's internal state, shared by kms_core.c (setup, event
 * loop, batches, timers) and kms_flows.c (one handler per PSC message).
 *
 * Owns: the daemon context. Only the event-loop thread touches it; the HSM
 * workers (kms_pool.h) get copies of what a fan-out needs, never this.
 * Never: expose key material. Epoch secrets exist only as HSM session objects
 * (hsm_key handles) for the duration of one rekey or catch-up.
 */
#ifndef KMS_INT_H
#define KMS_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "aud_log.h"
#include "hsm_ctx.h"
#include "hsm_epoch.h"
#include "hsm_wrap.h"
#include "kms_auth.h"
#include "kms_config.h"
#include "kms_net.h"
#include "kms_pool.h"
#include "kms_store.h"
#include "pol_policy.h"
#include "proto_msg.h"
#include "proto_reload.h"

#define KMSD_MAX_BINDINGS 65536
#define KMSD_MAX_PENDING 4096
#define KMSD_BATCH_MAX 64 /* inbound messages handled per durability batch */
/* Fan-outs waiting for or running on the HSM workers above which the loop stops
 * reading requests (backpressure: answers must not run ahead of the Refreshes
 * without bound). Counted in jobs, so one large rekey never pauses anyone. */
#define KMSD_POOL_BACKLOG 16

/* A peer currently connected: Node-ID <-> routing id + CURVE key. */
typedef struct kmsd_binding {
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint8_t rid[KMS_ROUTING_ID_MAX];
	size_t rid_len;
	char user_id[KMS_Z85_KEY_LEN + 1];
	bool used;
} kmsd_binding;

/* A member's certificate public key, parsed once: a rekey wraps to every
 * member, and parsing a certificate costs more than the HSM wrap itself. */
typedef struct kmsd_pubkey {
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint8_t cert_sha256[PSC_HASH_LEN]; /* a re-Initialize with a new certificate replaces it */
	EVP_PKEY *pub;
} kmsd_pubkey;
#define KMSD_PUBKEY_SLOTS 8192 /* power of two */

/* What a KMS-initiated request is waiting for. */
typedef enum kmsd_wait {
	KMSD_WAIT_REFRESH_ACK = 1,
	KMSD_WAIT_QUERY,    /* owner decides a join */
	KMSD_WAIT_INVITE,   /* invitee decides */
	KMSD_WAIT_LIVENESS, /* suspect proves it is alive */
} kmsd_wait;

/* The original request a pending exchange will answer. */
typedef struct kmsd_origin {
	uint8_t node_id[PSC_NODE_ID_LEN]; /* requester */
	uint8_t rid[KMS_ROUTING_ID_MAX];
	size_t rid_len;
	uint64_t txid;  /* the requester's transaction id */
	uint16_t code;  /* the requester's request code */
	char request_id[40];
} kmsd_origin;

typedef struct kmsd_pending {
	bool used;
	kmsd_wait wait;
	uint64_t txid;       /* of our request */
	uint64_t deadline_ms;
	uint8_t peer[PSC_NODE_ID_LEN]; /* who must answer */
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;      /* refresh: the epoch sent */
	uint64_t challenge;  /* liveness */
	kmsd_origin origin;  /* query / invite / liveness: whom to answer at the end */
	uint8_t subject[PSC_NODE_ID_LEN]; /* query: joiner; invite: invitee; liveness: suspect */
} kmsd_pending;

/* One outbound message queued by a batch, sent after it is durable. */
typedef struct kmsd_out {
	uint8_t rid[KMS_ROUTING_ID_MAX];
	size_t rid_len;
	uint8_t *msg;
	size_t len;
} kmsd_out;

typedef struct kmsd {
	kms_config *cfg;
	void *zctx;
	kms_net *net;
	hsm_ctx *hsm;
	hsm_session *hs;
	EVP_PKEY *id_key;
	EVP_PKEY *audit_key;
	X509 *cert;
	uint8_t *cert_der;
	size_t cert_len;
	uint8_t node_id[PSC_NODE_ID_LEN];
	proto_signer signer;
	char kek_id[2 * HSM_KEK_ID_LEN + 1];
	kms_trust *trust;
	pol_policy *pol;
	pol_state *pol_state;
	aud_log *audit;
	kms_store *store;
	kms_replay *replay;
	struct kms_admin *admin; /* psc-kmsctl's socket (kms_admin.c) */
	kms_pool *pool;		 /* HSM workers: rekey fan-outs (kms_pool.h) */
	kms_fanout *staged;	 /* fan-outs of the open batch, submitted once it is durable */
	kms_fanout *retry;	 /* fan-outs that failed (HSM down), retried while current */
	uint8_t (*running)[PSC_PSC_ID_LEN]; /* PSC of each fan-out in the pool */
	size_t n_running, cap_running;
	bool hsm_was_down; /* re-fetch the identity key once the HSM is back */
	uint32_t overlay_hash;
	uint64_t started_ms;
	uint64_t now_ms; /* the batch's clock: read once per batch */

	kmsd_binding *bind;
	size_t n_bind;
	kmsd_pubkey *pubkeys; /* KMSD_PUBKEY_SLOTS, allocated on first use */
	uint64_t crl_next_reload_ms; /* 0: at the first timer turn */
	uint64_t audit_retry_ms;     /* next aud_log_recover() attempt while failed */
	kmsd_pending *pend;

	/* the open batch */
	kmsd_out *out;
	size_t n_out, cap_out;
	bool batch_open;
	bool batch_dirty; /* commands applied or records appended */

	bool started; /* kms.start is in the audit log: kms.stop will follow */
	volatile sig_atomic_t *stop;
	volatile sig_atomic_t *reload;
	uint64_t request_seq; /* for request ids */
} kmsd;

/* kms_core.c */
uint64_t kmsd_clock_ms(void);
kmsd_binding *kmsd_binding_by_node(kmsd *k, const uint8_t node_id[PSC_NODE_ID_LEN]);
kmsd_binding *kmsd_binding_by_rid(kmsd *k, const uint8_t *rid, size_t rid_len);
psc_rc kmsd_bind(kmsd *k, const uint8_t node_id[PSC_NODE_ID_LEN], const uint8_t *rid,
		 size_t rid_len, const char *user_id) PSC_WUR;
kmsd_pending *kmsd_pending_new(kmsd *k, kmsd_wait wait, uint64_t timeout_ms);
kmsd_pending *kmsd_pending_by_txid(kmsd *k, uint64_t txid);
void kmsd_pending_drop(kmsd_pending *p);
uint64_t kmsd_txid(kmsd *k);
/* Queue a body as a signed message to a routing id (sent when the batch is durable). */
psc_rc kmsd_queue(kmsd *k, const uint8_t *rid, size_t rid_len, uint16_t code, uint64_t txid,
		  const psc_body *body, const uint8_t *dest_node) PSC_WUR;
psc_rc kmsd_queue_error(kmsd *k, const uint8_t *rid, size_t rid_len, uint64_t txid,
			uint16_t error_code, uint16_t reason, const char *text) PSC_WUR;
psc_rc kmsd_queue_raw(kmsd *k, const uint8_t *rid, size_t rid_len, uint8_t *msg, size_t len)
	PSC_WUR;
/* Apply one command to the open store transaction. */
psc_rc kmsd_apply(kmsd *k, const kms_cmd *cmd, psc_err *err) PSC_WUR;
/* One request's commands all-or-nothing inside the batch: kmsd_mark before the
 * first, kmsd_mark_end(keep) after the last (keep = false undoes them all, e.g.
 * a member added whose rekey then failed in the HSM). */
psc_rc kmsd_mark(kmsd *k, psc_err *err) PSC_WUR;
void kmsd_mark_end(kmsd *k, bool keep);
/* Hands a rekey's fan-out to the batch: submitted to the HSM workers once the
 * batch is durable, dropped if it fails. Takes ownership. */
void kmsd_fanout_stage(kmsd *k, kms_fanout *job);
/* Whether a fan-out of this PSC is in the pool (staged, running or retrying). */
bool kmsd_fanout_running(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN]);
/* Append one audit record to the open batch. */
psc_rc kmsd_audit(kmsd *k, const aud_event *ev, psc_err *err) PSC_WUR;

/* kms_flows.c */
void kmsd_flows_free(kmsd *k); /* releases the flows' caches */
void kmsd_handle(kmsd *k, const kms_inbound *in);
void kmsd_timers(kmsd *k);
uint64_t kmsd_next_deadline(kmsd *k);
/* Removes a node from every PSC it is in (rekeying each), tells it so and
 * forgets its connection; in the open batch (CRL reload, psc-kmsctl peer ban). */
void kmsd_evict_everywhere(kmsd *k, const uint8_t node[PSC_NODE_ID_LEN], const char *why);
/* Rekeys (reason restore, no grace) a bounded number of live PSCs whose epoch
 * is below the floor a restore recorded; returns how many were due (0: none
 * left). In the open batch. */
size_t kmsd_rekey_restored(kmsd *k);
/* psc-kmsctl psc destroy: destroy-Refresh to every connected member, then
 * PSC_DESTROY, in the open batch; *out gets the PSC as it was. */
psc_rc kmsd_destroy_by_operator(kmsd *k, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_psc *out,
				psc_err *err) PSC_WUR;

#endif
