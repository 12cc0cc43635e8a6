/*
 * proto_msg — every PSC message body (DESIGN.md §2), request and answer.
 *
 * Owns: the byte layout of each body (normative text: docs/protocol.md), its
 * encoder, and a bounded, allocation-free decoder. A decoded body borrows the
 * input buffer; lists are validated completely at decode time and kept as raw
 * vectors with an item count, read back with the proto_next_* iterators.
 * Encoders take either items (items != NULL) or a raw vector from a decoded
 * body (raw != NULL), so a decoded message re-encodes byte for byte.
 * Never: allocate while decoding, accept trailing bytes, unknown flag bits or
 * unknown enum values, or hold secrets (wrapped secrets are opaque here).
 */
#ifndef PROTO_MSG_H
#define PROTO_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "psc_codes.h"
#include "psc_rc.h"

/* Named caps. */
#define PSC_MAX_NAME 255          /* PSC name bytes */
#define PSC_MAX_ENDPOINT 255      /* data endpoint bytes (ZeroMQ endpoint) */
#define PSC_MAX_LABELS 32
#define PSC_MAX_LABEL_KEY 64
#define PSC_MAX_LABEL_VALUE 255
#define PSC_MAX_SUITES 16
#define PSC_MAX_WRAP_ALGS 16
#define PSC_MAX_MEMBERS_WIRE 65535 /* members in one list */
#define PSC_MAX_EPHEMERAL 133      /* uncompressed point up to P-521 */
#define PSC_MAX_WRAPPED 1024       /* RSA-8192 */
#define PSC_MAX_SUBJECT 1024
#define PSC_MAX_HELD 4096          /* PSCs in one Catchup */
#define PROTO_MAX_BODY (1u << 20)  /* one body; the RELOAD message cap also applies */

/* PscMaterial.flags and EstablishParams.flags */
#define PSC_FLAG_SENDER_SIGNATURES 0x01
/* InitializeReq.flags */
#define PSC_INIT_JOIN 0x01
#define PSC_INIT_ESTABLISH 0x02

/* Outcome.status: 0 ok, 1 not requested, else a PSC_RERR_* code. */
#define PSC_STATUS_OK 0
#define PSC_STATUS_NOT_REQUESTED 1

enum psc_refresh_reason {
	PSC_REFRESH_ESTABLISH = 1,
	PSC_REFRESH_TIMER = 2,
	PSC_REFRESH_JOIN = 3,
	PSC_REFRESH_LEAVE = 4,
	PSC_REFRESH_EVICT = 5,
	PSC_REFRESH_DESTROYED = 6, /* no key: the PSC is gone */
	PSC_REFRESH_REMOVED = 7,   /* no key: the receiver is no longer a member */
	PSC_REFRESH_RESTORE = 8,
	PSC_REFRESH_CATCHUP = 9,
};

enum psc_invite_outcome {
	PSC_INVITE_ACCEPTED = 1,
	PSC_INVITE_DECLINED = 2,
	PSC_INVITE_TIMEOUT = 3,
	PSC_INVITE_UNREACHABLE = 4,
};

enum psc_departure_outcome {
	PSC_DEPARTURE_ALIVE = 1,   /* suspect answered PscLiveness: not evicted */
	PSC_DEPARTURE_EVICTED = 2, /* suspect did not answer: evicted, PSC rekeyed */
};

enum psc_catchup_status {
	PSC_CATCHUP_NEWER = 1,      /* material follows */
	PSC_CATCHUP_CURRENT = 2,    /* the peer already holds the current epoch */
	PSC_CATCHUP_DESTROYED = 3,
	PSC_CATCHUP_NOT_MEMBER = 4,
};

typedef struct proto_bytes {
	const uint8_t *p;
	size_t len;
} proto_bytes;

typedef struct proto_label {
	proto_bytes key;
	proto_bytes value;
} proto_label;

typedef struct proto_member {
	uint8_t node_id[PSC_NODE_ID_LEN];
	proto_bytes endpoint;
} proto_member;

typedef struct proto_held {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
} proto_held;

/* A list field: items to encode, or (decoded) raw vector contents + count. */
#define PROTO_LIST(name, item_type)                                                        \
	typedef struct name {                                                              \
		const item_type *items;                                                    \
		size_t n;                                                                  \
		const uint8_t *raw;                                                        \
		size_t raw_len;                                                            \
	} name

typedef uint8_t proto_node_id_t[PSC_NODE_ID_LEN];
PROTO_LIST(proto_u16s, uint16_t);
PROTO_LIST(proto_u8s, uint8_t);
PROTO_LIST(proto_labels, proto_label);
PROTO_LIST(proto_node_ids, proto_node_id_t);
PROTO_LIST(proto_members, proto_member);
PROTO_LIST(proto_helds, proto_held);

/* Everything a member needs for one epoch of one PSC. */
typedef struct proto_material {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	proto_bytes name;
	uint8_t owner[PSC_NODE_ID_LEN];
	uint16_t suite;
	uint8_t flags;     /* PSC_FLAG_* */
	uint32_t grace_ms; /* how long the previous epoch stays valid; 0 after a removal */
	uint8_t wrap_alg;  /* PSC_WRAP_* */
	proto_bytes ephemeral; /* ECDH: the KMS's ephemeral point; RSA: empty */
	proto_bytes wrapped;   /* the epoch secret wrapped to this member */
	uint8_t members_full;  /* 1: members is the full list; 0: unchanged */
	proto_members members;
} proto_material;

PROTO_LIST(proto_materials, proto_material);

typedef struct proto_catchup_entry {
	uint8_t status; /* psc_catchup_status */
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	proto_material material; /* status == NEWER */
} proto_catchup_entry;

PROTO_LIST(proto_catchups, proto_catchup_entry);

typedef struct proto_establish_params {
	proto_bytes name;
	proto_labels labels;
	proto_node_ids members; /* initial members besides the constructor */
	uint32_t refresh_s;     /* 0 = policy default */
	uint32_t max_members;   /* 0 = policy limit */
	uint8_t flags;          /* PSC_FLAG_* */
} proto_establish_params;

typedef struct proto_outcome {
	uint16_t status; /* PSC_STATUS_* or PSC_RERR_* */
	uint8_t psc_id[PSC_PSC_ID_LEN];
	proto_bytes info;
} proto_outcome;

typedef struct psc_initialize_req {
	uint64_t timestamp;
	uint8_t node_id[PSC_NODE_ID_LEN];
	proto_u16s suites;
	proto_u8s wrap_algs;
	proto_bytes endpoint;
	uint8_t flags; /* PSC_INIT_* */
	uint8_t join_psc[PSC_PSC_ID_LEN];
	proto_establish_params establish;
} psc_initialize_req;

typedef struct psc_initialize_ans {
	uint64_t kms_time;
	uint16_t suite;
	uint8_t wrap_alg;
	proto_outcome join;
	proto_outcome establish;
	proto_materials memberships;
} psc_initialize_ans;

typedef struct psc_establish_req {
	uint64_t timestamp;
	proto_establish_params params;
} psc_establish_req;

typedef struct psc_establish_ans {
	proto_material material;
	proto_node_ids pending; /* named members that have not initialised yet */
} psc_establish_ans;

typedef struct psc_psc_req { /* Join, Leave, Destroy */
	uint64_t timestamp;
	uint8_t psc_id[PSC_PSC_ID_LEN];
} psc_psc_req;

typedef struct psc_join_ans {
	proto_material material;
} psc_join_ans;

typedef struct psc_query_req {
	uint64_t timestamp;
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t requester[PSC_NODE_ID_LEN];
	proto_bytes requester_subject;
	uint32_t timeout_ms;
} psc_query_req;

typedef struct psc_decision_ans { /* Query and Invite answers */
	uint8_t accept; /* 0 or 1 */
} psc_decision_ans;

typedef struct psc_invite_init_req {
	uint64_t timestamp;
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t invitee[PSC_NODE_ID_LEN];
} psc_invite_init_req;

typedef struct psc_invite_init_ans {
	uint8_t outcome; /* psc_invite_outcome */
	uint64_t epoch;  /* the new epoch when accepted, else 0 */
} psc_invite_init_ans;

typedef struct psc_invite_req {
	uint64_t timestamp;
	uint8_t psc_id[PSC_PSC_ID_LEN];
	proto_bytes psc_name;
	uint8_t inviter[PSC_NODE_ID_LEN];
	uint32_t timeout_ms;
} psc_invite_req;

typedef struct psc_refresh_req {
	uint64_t timestamp;
	uint8_t reason; /* psc_refresh_reason */
	/* reason DESTROYED / REMOVED: psc_id + epoch only; otherwise material */
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	proto_material material;
} psc_refresh_req;

typedef struct psc_refresh_ans {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch; /* the epoch the member applied (acknowledgement) */
} psc_refresh_ans;

typedef struct psc_departure_req {
	uint64_t timestamp;
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t suspect[PSC_NODE_ID_LEN];
} psc_departure_req;

typedef struct psc_departure_ans {
	uint8_t outcome; /* psc_departure_outcome */
} psc_departure_ans;

typedef struct psc_liveness { /* request and answer: the answer echoes the challenge */
	uint64_t timestamp;
	uint64_t challenge;
} psc_liveness;

typedef struct psc_lookup_req {
	uint64_t timestamp;
	proto_bytes name;
} psc_lookup_req;

typedef struct psc_lookup_ans {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t owner[PSC_NODE_ID_LEN];
	uint32_t member_count;
} psc_lookup_ans;

typedef struct psc_catchup_req {
	uint64_t timestamp;
	proto_helds held;
} psc_catchup_req;

typedef struct psc_catchup_ans {
	proto_catchups entries;
} psc_catchup_ans;

/* One message body of any PSC code. */
typedef struct psc_body {
	uint16_t code;
	union {
		psc_initialize_req initialize_req;
		psc_initialize_ans initialize_ans;
		psc_establish_req establish_req;
		psc_establish_ans establish_ans;
		psc_psc_req psc_req; /* JOIN_REQ, LEAVE_REQ, DESTROY_REQ */
		psc_join_ans join_ans;
		psc_query_req query_req;
		psc_decision_ans decision_ans; /* QUERY_ANS, INVITE_ANS */
		psc_invite_init_req invite_init_req;
		psc_invite_init_ans invite_init_ans;
		psc_invite_req invite_req;
		psc_refresh_req refresh_req;
		psc_refresh_ans refresh_ans;
		psc_departure_req departure_req;
		psc_departure_ans departure_ans;
		psc_liveness liveness; /* LIVENESS_REQ, LIVENESS_ANS */
		psc_lookup_req lookup_req;
		psc_lookup_ans lookup_ans;
		psc_catchup_req catchup_req;
		psc_catchup_ans catchup_ans;
	} u; /* LEAVE_ANS and DESTROY_ANS have empty bodies */
} psc_body;

/* Encodes b into a malloc'd buffer (caller frees). Checks every cap and enum. */
psc_rc proto_body_encode(const psc_body *b, uint8_t **out, size_t *out_len, psc_err *err)
	PSC_WUR;
/* Appends the encoding of b to an open writer (used by the encoder above). */
void proto_body_write(proto_wr *w, const psc_body *b);

/* Decodes a body of message code `code`; borrows p. PSC_E_UNKNOWN_CODE for codes
 * that are not PSC messages. err->detail names the field and offset. */
psc_rc proto_body_decode(uint16_t code, const uint8_t *p, size_t len, psc_body *b,
			 psc_err *err) PSC_WUR;

/* Message name ("PscJoin"; request and answer share it, the code parity tells
 * which), or NULL for codes PSC does not define. */
const char *proto_msg_name(uint16_t code);
/* True for PSC request codes (odd, defined). */
int proto_msg_is_request(uint16_t code);
/* The request timestamp, for codes that carry one; 0 otherwise. */
uint64_t proto_body_timestamp(const psc_body *b);

/* Iterators over decoded (raw) lists; return 1 and fill *out while items remain.
 * The list was validated at decode time, so iteration cannot fail. */
typedef struct proto_iter {
	proto_rd r;
} proto_iter;
void proto_iter_init(proto_iter *it, const uint8_t *raw, size_t raw_len);
int proto_next_u16(proto_iter *it, uint16_t *out);
int proto_next_u8(proto_iter *it, uint8_t *out);
int proto_next_label(proto_iter *it, proto_label *out);
int proto_next_node_id(proto_iter *it, uint8_t out[PSC_NODE_ID_LEN]);
int proto_next_member(proto_iter *it, proto_member *out);
int proto_next_held(proto_iter *it, proto_held *out);
int proto_next_material(proto_iter *it, proto_material *out);
int proto_next_catchup(proto_iter *it, proto_catchup_entry *out);

#endif
