/*
 * kms_net — the KMS's ZeroMQ side: one ROUTER for peers, the ZAP handler, and
 * per-connection flood limits.
 *
 * Owns: socket options (CURVE server, ROUTER_MANDATORY + ROUTER_HANDOVER, HWMs,
 * ZMQ_MAXMSGSIZE), the ZAP handler on inproc://zeromq.zap.01 that accepts any
 * CURVE client key and hands it back as the connection's User-Id, receiving one
 * message with its routing id and transport key, sending to a routing id, and a
 * token bucket per routing id.
 * Never: interpret PSC messages, block (all calls are non-blocking or bounded),
 * or let a peer allocate beyond the configured caps.
 */
#ifndef KMS_NET_H
#define KMS_NET_H

#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

#define KMS_ROUTING_ID_MAX 256
#define KMS_CURVE_KEY_LEN 32   /* binary CURVE public key */
#define KMS_Z85_KEY_LEN 40     /* its Z85 text */

typedef struct kms_net_opts {
	const char *endpoint;       /* e.g. tcp://127.0.0.1:7400 */
	int curve;                  /* 1: CURVE server (secret_key must be set) */
	const char *secret_key_z85; /* 40 chars */
	size_t max_message_bytes;   /* ZMQ_MAXMSGSIZE: larger frames drop the connection */
	int sndhwm, rcvhwm;
	double msgs_per_s;          /* per connection; 0 = unlimited */
	double burst;
} kms_net_opts;

typedef struct kms_net kms_net;

/* One received message: payload and who sent it. Valid until the next recv. */
typedef struct kms_inbound {
	uint8_t routing_id[KMS_ROUTING_ID_MAX];
	size_t routing_id_len;
	char user_id[KMS_Z85_KEY_LEN + 1]; /* Z85 CURVE key of the connection, "" without CURVE */
	const uint8_t *data;
	size_t len;
	int limited; /* 1: over the connection's rate: the caller drops it (and audits) */
} kms_inbound;

psc_rc kms_net_new(kms_net **out, void *zctx, const kms_net_opts *opts, psc_err *err) PSC_WUR;
void kms_net_free(kms_net **n);

/* Sockets to poll: the ROUTER and the ZAP handler. */
void *kms_net_router(kms_net *n);
void *kms_net_zap(kms_net *n);

/* Answers every pending ZAP request (call when the ZAP socket is readable). */
void kms_net_zap_serve(kms_net *n);

/* Receives one message if one is waiting: PSC_OK with *got = 1, or *got = 0.
 * Multi-frame or empty payloads are consumed and skipped. */
psc_rc kms_net_recv(kms_net *n, kms_inbound *in, int *got, uint64_t now_ms) PSC_WUR;

/* Sends one message to a routing id; PSC_E_IO when the peer is gone
 * (ROUTER_MANDATORY) or its queue is full. Never blocks. */
psc_rc kms_net_send(kms_net *n, const uint8_t *rid, size_t rid_len, const uint8_t *data,
		    size_t len) PSC_WUR;

/* Counters for status and tests. */
typedef struct kms_net_stats {
	uint64_t received, sent, send_failed, rate_limited, malformed_frames, zap_requests;
} kms_net_stats;
void kms_net_stats_get(const kms_net *n, kms_net_stats *out);

#endif
