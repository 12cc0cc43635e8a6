/*
 * kms_pool — psc-kmsd's HSM worker pool (DESIGN.md §5).
 *
 * Owns: the worker threads, each with its own HSM session (worker i uses
 * session i + 1; the event loop keeps session 0); a queue of fan-out jobs; the
 * inproc socket on which finished jobs come back to the event loop.
 * Never: touch the daemon's state (store, bindings, audit, pending table). A job
 * carries copies of everything it needs and the event loop alone decides what to
 * do with its result. No epoch secret exists outside the HSM: a job carries the
 * KEK-wrapped blob and its worker unwraps it into its own session.
 *
 * A fan-out is the bulk of a rekey: the epoch secret wrapped to each connected
 * member (one ephemeral key per job) and one Refresh per member, all under ONE
 * batch signature. The event loop does the O(1) part of a rekey itself (new
 * secret, EPOCH_NEW command, the requester's own wrap), makes the batch durable,
 * then submits the fan-out; so a 1,000-member rekey costs the loop a few
 * milliseconds and the members' Refreshes arrive when the workers are done.
 */
#ifndef KMS_POOL_H
#define KMS_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "hsm_ctx.h"
#include "hsm_epoch.h"
#include "hsm_wrap.h"
#include "proto_keywrap.h"
#include "proto_msg.h"
#include "proto_reload.h"
#include "psc_rc.h"

#define KMS_FANOUT_NAME_MAX 255 /* >= KMS_NAME_MAX (checked in kms_flows.c) */

/* The epoch secret wrapped to one member. */
typedef struct kms_wrapped {
	uint8_t alg; /* PSC_WRAP_* */
	uint8_t bytes[PROTO_KEYWRAP_MAX_WRAPPED];
	size_t len;
	uint8_t eph[PROTO_KEYWRAP_EC_POINT_LEN];
	size_t eph_len; /* 0 for RSA-OAEP */
} kms_wrapped;

/*
 * Wraps `secret` to a member's certificate key; EC members share one ephemeral
 * key per rekey (*eph, created on first need, hsm_eph_free by the caller).
 * Used by the workers and by the event loop for single wraps (answers, catch-up).
 */
psc_rc kms_wrap_to(hsm_session *hs, const hsm_key *secret, hsm_eph **eph, EVP_PKEY *pub,
		   const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
		   const uint8_t node_id[PSC_NODE_ID_LEN], kms_wrapped *w, psc_err *err) PSC_WUR;

typedef struct kms_fanout_dest {
	uint8_t node_id[PSC_NODE_ID_LEN];
	EVP_PKEY *pub; /* a reference owned by the job */
	uint8_t *msg;  /* out: the signed Refresh (owned by the job until taken) */
	size_t len;
} kms_fanout_dest;

typedef struct kms_fanout {
	/* in: set by the event loop before kms_pool_submit */
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	uint8_t blob[HSM_EPOCH_BLOB_LEN]; /* the epoch secret under the master KEK */
	uint8_t reason;			  /* PSC_REFRESH_* */
	uint64_t timestamp_ms;		  /* the Refreshes' timestamp */
	uint32_t overlay;
	proto_material tmpl; /* name, owner, suite, flags, grace, members: wrap fields unset */
	char name[KMS_FANOUT_NAME_MAX + 1];
	proto_member *members; /* tmpl.members points here; endpoints into `endpoints` */
	char *endpoints;
	kms_fanout_dest *dest;
	size_t n_dest;
	proto_signer signer; /* key: a reference owned by the job */
	/* out: set by the worker */
	psc_rc rc;
	psc_err err;
	uint64_t queued_us; /* monotonic: submitted */
	uint64_t wait_us;   /* submitted -> a worker took it */
	uint64_t run_us;    /* time the worker spent on it */
	/* bookkeeping of the event loop */
	unsigned attempts;
	uint64_t retry_at_ms;
	struct kms_fanout *next;
} kms_fanout;

/*
 * A job for `n_dest` members and a member list of `n_members` entries (copied,
 * with their endpoints). The caller fills the rest of the input fields.
 */
psc_rc kms_fanout_new(kms_fanout **out, size_t n_dest, const proto_member *members,
		      size_t n_members) PSC_WUR;
void kms_fanout_free(kms_fanout **job);

typedef struct kms_pool kms_pool;

/*
 * Starts `workers` threads on HSM sessions 1..workers of `hsm` (the caller made
 * at least workers + 1 sessions). Finished jobs come back on an inproc socket
 * of `zctx`.
 */
psc_rc kms_pool_new(kms_pool **out, void *zctx, hsm_ctx *hsm, unsigned workers,
		    psc_err *err) PSC_WUR;
/* Stops the workers (a running job is finished, queued ones are dropped) and frees
 * every job still held. */
void kms_pool_free(kms_pool **pool);
/* Queues a job; the pool owns it until kms_pool_take hands it back. */
void kms_pool_submit(kms_pool *pool, kms_fanout *job);
/* The socket to poll for ZMQ_POLLIN: a finished job is ready. */
void *kms_pool_socket(kms_pool *pool);
/* A finished job (rc tells how it went), or NULL when none is ready; never blocks. */
kms_fanout *kms_pool_take(kms_pool *pool);
/* Jobs submitted and not yet taken back. */
size_t kms_pool_busy(const kms_pool *pool);
unsigned kms_pool_workers(const kms_pool *pool);

#endif
