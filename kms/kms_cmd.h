/*
 * kms_cmd — the commands that change KMS state, and their binary encoding.
 *
 * Owns: the closed set of state changes (DESIGN.md §5: "every change is a
 * command"), their field caps, and a versioned, bounded encoding so the same
 * commands can be written to a Raft log and replicated between KMS nodes (§9).
 * A command carries every value its application needs — timestamps, ids,
 * wrapped blobs — decided beforehand by the leader, so applying it is
 * deterministic (kms_store_apply never reads a clock, draws randomness or calls
 * the HSM).
 * Never: hold plaintext key material (blobs are wrapped under the master KEK),
 * allocate while decoding, accept trailing bytes, unknown versions, unknown
 * types, out-of-range flags or fields over their caps.
 *
 * Encoding (all integers big-endian, vectors length-prefixed as in proto_buf):
 *   u8 version (KMS_CMD_VERSION) ‖ u8 type ‖ type-specific fields in the order
 *   of the structs below. Caps: the KMS_CMD_*_MAX constants.
 *
 * A decoded command BORROWS the input buffer (proto_bytes point into it): keep
 * the buffer alive while the command is used. Small lists (suites, labels) are
 * copied into the struct's fixed arrays.
 */
#ifndef KMS_CMD_H
#define KMS_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_msg.h"
#include "psc_codes.h"
#include "psc_rc.h"

#define KMS_CMD_VERSION 1

/* Field caps (bytes unless noted). Shared with kms_store's query structs. */
#define KMS_CERT_DER_MAX 16384		/* one peer certificate, DER */
#define KMS_SUBJECT_MAX PSC_MAX_SUBJECT /* certificate subject, text */
#define KMS_ENDPOINT_MAX PSC_MAX_ENDPOINT
#define KMS_TRANSPORT_KEY_MAX 32      /* CURVE public key (raw), or empty */
#define KMS_SUITES_MAX PSC_MAX_SUITES /* suites in one list (count) */
#define KMS_NAME_MAX PSC_MAX_NAME     /* PSC name, text, >= 1 byte */
#define KMS_LABELS_MAX PSC_MAX_LABELS /* labels on one PSC (count) */
#define KMS_LABEL_KEY_MAX PSC_MAX_LABEL_KEY
#define KMS_LABEL_VALUE_MAX PSC_MAX_LABEL_VALUE
#define KMS_KEK_ID_MAX 64		       /* master KEK id, text, >= 1 byte */
#define KMS_WRAPPED_MAX 1024		       /* epoch secret wrapped under the KEK */
#define KMS_CMD_MAX (KMS_CERT_DER_MAX + 16384) /* one encoded command */
/* Epochs and timestamps are uint64 on the wire but stored in SQLite's signed
 * integers: commands carrying a larger value are refused (PSC_E_KMS_CMD_FIELD). */
#define KMS_CMD_U64_MAX ((uint64_t)INT64_MAX)

/* Flags a PSC may carry (kms_cmd_psc_create.flags); others are rejected. */
#define KMS_PSC_FLAG_SENDER_SIGNATURES PSC_FLAG_SENDER_SIGNATURES
#define KMS_PSC_FLAGS_KNOWN (KMS_PSC_FLAG_SENDER_SIGNATURES)

/* Wire values: append only, never renumber (they are in Raft logs). */
typedef enum kms_cmd_type {
	KMS_CMD_PEER_UPSERT = 1,
	KMS_CMD_PEER_BAN = 2,
	KMS_CMD_PSC_CREATE = 3,
	KMS_CMD_MEMBER_ADD = 4,
	KMS_CMD_MEMBER_REMOVE = 5,
	KMS_CMD_EPOCH_NEW = 6,
	KMS_CMD_MEMBER_ACK = 7,
	KMS_CMD_PSC_DESTROY = 8,
	KMS_CMD_KEK_REWRAP = 9,
	KMS_CMD_EPOCH_FLOOR = 10,
} kms_cmd_type;
#define KMS_CMD_TYPE_MAX KMS_CMD_EPOCH_FLOOR

/* A peer ran Initialize: record (or replace) what its certificate says. Keeps
 * banned state and first_seen_ms of an existing row. */
typedef struct kms_cmd_peer_upsert {
	uint8_t node_id[PSC_NODE_ID_LEN];
	proto_bytes cert_der; /* 1..KMS_CERT_DER_MAX */
	uint8_t cert_sha256[PSC_HASH_LEN];
	proto_bytes subject;	   /* 0..KMS_SUBJECT_MAX, no NUL */
	proto_bytes endpoint;	   /* 0..KMS_ENDPOINT_MAX, no NUL (data endpoint) */
	proto_bytes transport_key; /* 0 or KMS_TRANSPORT_KEY_MAX: CURVE key bound at Initialize */
	uint8_t wrap_alg;	   /* PSC_WRAP_* chosen for this peer; 1..255 */
	uint16_t suites[KMS_SUITES_MAX];
	size_t n_suites; /* 0..KMS_SUITES_MAX */
	uint64_t now_ms;
} kms_cmd_peer_upsert;

/* Operator ban / unban of a known peer. */
typedef struct kms_cmd_peer_ban {
	uint8_t node_id[PSC_NODE_ID_LEN];
	bool banned;
	uint64_t now_ms;
} kms_cmd_peer_ban;

typedef struct kms_cmd_psc_create {
	uint8_t psc_id[PSC_PSC_ID_LEN]; /* may reuse a destroyed PSC's id (epochs continue) */
	proto_bytes name;		/* 1..KMS_NAME_MAX, no NUL; unique among live PSCs */
	uint8_t owner[PSC_NODE_ID_LEN];
	proto_label labels[KMS_LABELS_MAX]; /* keys 1..KMS_LABEL_KEY_MAX, unique; values 0.. */
	size_t n_labels;
	uint32_t flags;	      /* KMS_PSC_FLAG_* */
	uint16_t suite;	      /* non-zero */
	uint32_t refresh_s;   /* 0: no timer rekeys */
	uint32_t max_members; /* 0: unlimited */
	uint64_t now_ms;
} kms_cmd_psc_create;

typedef struct kms_cmd_member {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint64_t now_ms; /* MEMBER_ADD only; not encoded for MEMBER_REMOVE */
} kms_cmd_member;

/* A rekey: the new epoch's secret, wrapped under the master KEK by the leader. */
typedef struct kms_cmd_epoch_new {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;		/* > current and > highest ever issued for this PSC */
	proto_bytes kek_id;	/* 1..KMS_KEK_ID_MAX, no NUL */
	proto_bytes wrapped;	/* 1..KMS_WRAPPED_MAX */
	uint32_t prev_grace_ms; /* how long the previous epoch stays valid; 0 after a removal */
	uint64_t now_ms;	/* becomes the PSC's last rekey time (refresh timer) */
} kms_cmd_epoch_new;

typedef struct kms_cmd_member_ack {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint8_t node_id[PSC_NODE_ID_LEN];
	uint64_t epoch; /* <= current epoch; an older ack than held is PSC_E_KMS_ACK_STALE */
} kms_cmd_member_ack;

typedef struct kms_cmd_psc_destroy {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t now_ms;
} kms_cmd_psc_destroy;

/* KEK rotation: replace one stored epoch blob with one wrapped under a new KEK. */
typedef struct kms_cmd_kek_rewrap {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;	     /* the current or the retained previous epoch */
	proto_bytes kek_id;  /* new KEK id */
	proto_bytes wrapped; /* new blob */
} kms_cmd_kek_rewrap;

/* Restore: raise the highest epoch ever issued for a PSC to at least `epoch`
 * (known from the audit log), so a restored PSC is rekeyed above it (§8). The
 * PSC need not exist. Never lowers. */
typedef struct kms_cmd_epoch_floor {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
} kms_cmd_epoch_floor;

typedef struct kms_cmd {
	kms_cmd_type type;
	union {
		kms_cmd_peer_upsert peer_upsert;
		kms_cmd_peer_ban peer_ban;
		kms_cmd_psc_create psc_create;
		kms_cmd_member member_add;
		kms_cmd_member member_remove;
		kms_cmd_epoch_new epoch_new;
		kms_cmd_member_ack member_ack;
		kms_cmd_psc_destroy psc_destroy;
		kms_cmd_kek_rewrap kek_rewrap;
		kms_cmd_epoch_floor epoch_floor;
	};
} kms_cmd;

/* "PEER_UPSERT", ...; "UNKNOWN" for other values. */
const char *kms_cmd_type_name(kms_cmd_type t);

/*
 * Checks every field against its cap and rules (the checks decode applies), so
 * a command that encodes also decodes. err names the field.
 */
psc_rc kms_cmd_validate(const kms_cmd *cmd, psc_err *err) PSC_WUR;

/* Encodes cmd into a new heap buffer (*out, freed with free()). Validates first. */
psc_rc kms_cmd_encode(const kms_cmd *cmd, uint8_t **out, size_t *out_len, psc_err *err) PSC_WUR;

/*
 * Decodes exactly one command from buf[0..len). cmd borrows buf. Fails with
 * PSC_E_KMS_CMD_VERSION, PSC_E_KMS_CMD_TYPE, PSC_E_TRUNCATED, PSC_E_TOO_LARGE,
 * PSC_E_TRAILING or PSC_E_KMS_CMD_FIELD; err names the field and offset.
 */
psc_rc kms_cmd_decode(const uint8_t *buf, size_t len, kms_cmd *cmd, psc_err *err) PSC_WUR;

#endif
