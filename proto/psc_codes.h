/*
 * psc_codes — every number the PSC wire protocol assigns, in one place.
 *
 * Message codes are PROVISIONAL, pending IANA registration: RFC 6940 has no
 * private range (0x8000-0xfffe are reserved, 35-38 are for experiments), so PSC
 * uses the unassigned block 0x0101-0x013f. Requests are odd, the answer is the
 * request code + 1 (RFC 6940 §6.3.3). docs/protocol.md is the normative list.
 */
#ifndef PSC_CODES_H
#define PSC_CODES_H

#include <stdint.h>

/* Sizes fixed by the design ("Decisions at a glance"). */
#define PSC_NODE_ID_LEN 16
#define PSC_PSC_ID_LEN 16
#define PSC_EPOCH_SECRET_LEN 32
#define PSC_HASH_LEN 32 /* SHA-256 */

/* RELOAD constants (RFC 6940 §6.3.2). */
#define PSC_RELO_TOKEN 0xd2454c4fu
#define PSC_RELOAD_VERSION 0x0a
#define PSC_RELOAD_TTL_DEFAULT 100
#define PSC_RELOAD_FRAG_UNFRAGMENTED 0xc0000000u
#define PSC_MSG_ERROR 0xffffu

/* PSC message codes (provisional block). */
enum psc_msg_code {
	PSC_MSG_INITIALIZE_REQ = 0x0101,
	PSC_MSG_INITIALIZE_ANS = 0x0102,
	PSC_MSG_ESTABLISH_REQ = 0x0103,
	PSC_MSG_ESTABLISH_ANS = 0x0104,
	PSC_MSG_JOIN_REQ = 0x0105,
	PSC_MSG_JOIN_ANS = 0x0106,
	PSC_MSG_QUERY_REQ = 0x0107, /* KMS -> owner */
	PSC_MSG_QUERY_ANS = 0x0108,
	PSC_MSG_INVITE_INIT_REQ = 0x0109, /* owner -> KMS */
	PSC_MSG_INVITE_INIT_ANS = 0x010a,
	PSC_MSG_INVITE_REQ = 0x010b, /* KMS -> invitee */
	PSC_MSG_INVITE_ANS = 0x010c,
	PSC_MSG_REFRESH_REQ = 0x010d, /* KMS -> member */
	PSC_MSG_REFRESH_ANS = 0x010e, /* acknowledgement */
	PSC_MSG_LEAVE_REQ = 0x010f,
	PSC_MSG_LEAVE_ANS = 0x0110,
	PSC_MSG_DEPARTURE_REQ = 0x0111,
	PSC_MSG_DEPARTURE_ANS = 0x0112,
	PSC_MSG_LIVENESS_REQ = 0x0113, /* KMS -> suspect */
	PSC_MSG_LIVENESS_ANS = 0x0114,
	PSC_MSG_DESTROY_REQ = 0x0115,
	PSC_MSG_DESTROY_ANS = 0x0116,
	PSC_MSG_LOOKUP_REQ = 0x0117,
	PSC_MSG_LOOKUP_ANS = 0x0118,
	PSC_MSG_CATCHUP_REQ = 0x0119,
	PSC_MSG_CATCHUP_ANS = 0x011a,
	/* 0x0131-0x013f reserved for KmsSync* (DESIGN.md §9). */
	PSC_MSG_KMS_SYNC_FIRST = 0x0131,
	PSC_MSG_KMS_SYNC_LAST = 0x013f,
};

/* Cipher suites for group messages (uint16). */
enum psc_suite {
	PSC_SUITE_AES256GCM_HKDF_SHA256 = 0x0001,
};

/* Algorithms that wrap an epoch secret to one member (uint8). */
enum psc_wrap_alg {
	PSC_WRAP_RSA_OAEP_SHA1 = 1,   /* RSA-OAEP, SHA-1 + MGF1-SHA1, empty label */
	PSC_WRAP_RSA_OAEP_SHA256 = 2, /* RSA-OAEP, SHA-256 + MGF1-SHA256, empty label */
	PSC_WRAP_ECDH_P256_AESPRF_KWP = 3, /* DESIGN.md §3; docs/protocol.md "Key wrapping" */
};

/* Context label for the EC member wrap KDF (DESIGN.md §3). */
#define PSC_WRAP_CONTEXT_LABEL "PSC wrap v1"

/* RELOAD error codes (RFC 6940 §6.3.3.1). */
enum psc_reload_error {
	PSC_RERR_FORBIDDEN = 2,
	PSC_RERR_NOT_FOUND = 3,
	PSC_RERR_REQUEST_TIMEOUT = 4,
	PSC_RERR_GENERATION_COUNTER_TOO_LOW = 5,
	PSC_RERR_INCOMPATIBLE_WITH_OVERLAY = 6,
	PSC_RERR_UNSUPPORTED_FORWARDING_OPTION = 7,
	PSC_RERR_DATA_TOO_LARGE = 8,
	PSC_RERR_DATA_TOO_OLD = 9,
	PSC_RERR_TTL_EXCEEDED = 10,
	PSC_RERR_MESSAGE_TOO_LARGE = 11,
	PSC_RERR_UNKNOWN_KIND = 12,
	PSC_RERR_UNKNOWN_EXTENSION = 13,
	PSC_RERR_RESPONSE_TOO_LARGE = 14,
	PSC_RERR_CONFIG_TOO_OLD = 15,
	PSC_RERR_CONFIG_TOO_NEW = 16,
	PSC_RERR_IN_PROGRESS = 17,
	PSC_RERR_EXP_A = 18,
	PSC_RERR_EXP_B = 19,
	PSC_RERR_INVALID_MESSAGE = 20,
};

#endif
