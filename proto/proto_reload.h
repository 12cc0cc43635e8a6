/*
 * proto_reload — RELOAD message framing (RFC 6940 §6.3) and its SecurityBlock.
 *
 * Owns: ForwardingHeader ‖ MessageContents ‖ SecurityBlock encoding and bounded
 * decoding, the signature input and signing/verifying it with an OpenSSL
 * EVP_PKEY (a file key in the peer SDK, an HSM key through libp11 in the KMS:
 * the same call), and ErrorResponse (message_code 0xffff).
 * Never: interpret PSC message bodies (proto_msg does), allocate while decoding
 * (a decoded message borrows the input buffer), or trust a length before it is
 * checked against the bytes present and the named caps below.
 */
#ifndef PROTO_RELOAD_H
#define PROTO_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "psc_codes.h"
#include "psc_rc.h"

/* Named caps (bytes unless stated). A KMS may lower the message cap in kms.yaml. */
#define PROTO_MAX_MESSAGE (1u << 20)   /* whole RELOAD message */
#define PROTO_FWD_FIXED_LEN 38         /* fixed part of the ForwardingHeader */
#define PROTO_MAX_ROUTE_LIST 1024      /* via / destination list bytes */
#define PROTO_MAX_OPTIONS 1024         /* forwarding options bytes */
#define PROTO_MAX_EXTENSIONS 8         /* extensions per message */
#define PROTO_MAX_EXTENSION 4096       /* one extension's contents */
#define PROTO_MAX_CERTS 4              /* certificates in a SecurityBlock */
#define PROTO_MAX_CERT 4096            /* one DER certificate */
#define PROTO_MAX_SIGNATURE 2048       /* signature_value (a batch one carries a path) */
#define PROTO_MAX_ERROR_INFO 1024      /* ErrorResponse.error_info */

/* TLS 1.2 SignatureAndHashAlgorithm values used by PSC. */
#define PROTO_HASH_SHA256 4
#define PROTO_SIG_RSA 1   /* RSASSA-PKCS1-v1_5 */
#define PROTO_SIG_ECDSA 3 /* DER-encoded ECDSA */
/* Private-use (224-255) values for one signature over a Merkle root that covers
 * a batch of messages (docs/protocol.md "Batch signatures"). */
#define PROTO_SIG_BATCH_ECDSA 224
#define PROTO_SIG_BATCH_RSA 225
#define PROTO_MAX_BATCH_PATH 32 /* hashes in an inclusion path: 2^32 messages */

/* SignerIdentityType (RFC 6940 §6.3.4). */
#define PROTO_ID_CERT_HASH 1

/* RELOAD DestinationType. */
#define PROTO_DEST_NODE 1

typedef struct proto_ext {
	uint16_t type;
	uint8_t critical;
	const uint8_t *data;
	size_t len;
} proto_ext;

/* A decoded RELOAD message. Every pointer borrows the buffer given to
 * proto_message_decode(), which must outlive this struct. */
typedef struct proto_message {
	/* ForwardingHeader */
	uint32_t overlay;
	uint16_t config_seq;
	uint8_t version;
	uint8_t ttl;
	uint32_t fragment;
	uint32_t length;
	uint64_t transaction_id;
	uint32_t max_response_length;
	const uint8_t *via;
	size_t via_len;
	const uint8_t *dest;
	size_t dest_len;
	const uint8_t *options;
	size_t options_len;
	/* First destination when it is a Node-ID (has_dest_node), else zeros. */
	int has_dest_node;
	uint8_t dest_node[PSC_NODE_ID_LEN];
	/* MessageContents */
	const uint8_t *contents; /* the encoded MessageContents (signature input) */
	size_t contents_len;
	uint16_t code;
	const uint8_t *body;
	size_t body_len;
	proto_ext ext[PROTO_MAX_EXTENSIONS];
	size_t n_ext;
	/* SecurityBlock */
	const uint8_t *cert[PROTO_MAX_CERTS];
	size_t cert_len[PROTO_MAX_CERTS];
	size_t n_certs;
	uint8_t sig_hash;
	uint8_t sig_alg;
	const uint8_t *identity; /* the encoded SignerIdentity (signature input) */
	size_t identity_len;
	uint8_t identity_type;
	uint8_t identity_hash_alg;
	const uint8_t *identity_hash;
	size_t identity_hash_len;
	const uint8_t *sig_value;
	size_t sig_len;
} proto_message;

/*
 * Decodes and structurally validates a whole message: relo_token, version,
 * unfragmented, length field == len, caps, destination list syntax, no unknown
 * critical extension (PSC_E_UNKNOWN_EXT; the KMS answers Unknown_Extension), no
 * trailing bytes. Does not check the signature (proto_message_verify does).
 * err->detail names the field and byte offset on failure.
 */
psc_rc proto_message_decode(const uint8_t *buf, size_t len, proto_message *m, psc_err *err)
	PSC_WUR;

/* What to put around a body when building a message. */
typedef struct proto_envelope {
	uint32_t overlay;
	uint64_t transaction_id;
	uint16_t code;
	uint32_t max_response_length; /* 0 = no limit */
	const uint8_t *dest_node;     /* NULL = empty destination list */
	const proto_ext *ext;
	size_t n_ext;
} proto_envelope;

/* The signer: a private key (file or HSM) and its DER certificate (borrowed). */
typedef struct proto_signer {
	EVP_PKEY *key;
	const uint8_t *cert_der;
	size_t cert_len;
	/* Optional chain certificates sent after the signer's certificate. */
	const uint8_t *const *chain;
	const size_t *chain_len;
	size_t n_chain;
	/* Send an empty certificate list (the SignerIdentity still names the
	 * certificate): for receivers that already hold it (docs/protocol.md §4). */
	int omit_certificates;
} proto_signer;

/* Builds and signs one message; *out is malloc'd, caller frees. */
psc_rc proto_message_build(const proto_envelope *env, const uint8_t *body, size_t body_len,
			   const proto_signer *signer, uint8_t **out, size_t *out_len,
			   psc_err *err) PSC_WUR;

/*
 * Builds n messages (e.g. every Refresh of one rekey) under ONE signature: the
 * signer signs the Merkle root (RFC 9162) over the messages' signature inputs,
 * and each message carries the root, its inclusion path and that signature
 * (PROTO_SIG_BATCH_*; docs/protocol.md "Batch signatures"). outs[i] are
 * malloc'd; on failure none are returned. n must be at least 1.
 */
psc_rc proto_message_build_batch(const proto_envelope *envs, const uint8_t *const *bodies,
				 const size_t *body_lens, size_t n, const proto_signer *signer,
				 uint8_t **outs, size_t *out_lens, psc_err *err) PSC_WUR;
#define PROTO_BATCH_LABEL "PSC batch v1"
#define PROTO_MAX_BATCH 65536 /* messages under one batch signature */

/*
 * The signer's certificate as carried in the message: the certificate whose
 * SHA-256 equals the SignerIdentity's cert_hash. PSC_E_NO_CERT if none matches.
 */
psc_rc proto_message_signer_cert(const proto_message *m, const uint8_t **der, size_t *len)
	PSC_WUR;

/* True if the SignerIdentity names the certificate with this DER encoding. */
int proto_message_signed_by(const proto_message *m, const uint8_t *cert_der, size_t cert_len);

/* Verifies the signature with the given public key (plain or batch). */
psc_rc proto_message_verify(const proto_message *m, EVP_PKEY *pub, psc_err *err) PSC_WUR;

/* ErrorResponse (RFC 6940 §6.3.3.1) with PSC's structured error_info. */
typedef struct proto_error {
	uint16_t error_code;   /* PSC_RERR_* */
	uint16_t psc_reason;   /* PSC_REASON_* (docs/protocol.md), 0 if none */
	const uint8_t *text;   /* UTF-8, not NUL-terminated (borrowed) */
	size_t text_len;
} proto_error;
#define PROTO_MAX_ERROR_TEXT 1000

psc_rc proto_error_encode(const proto_error *e, uint8_t **out, size_t *out_len) PSC_WUR;
psc_rc proto_error_decode(const uint8_t *body, size_t len, proto_error *e, psc_err *err) PSC_WUR;

/* RELOAD overlay field: low 32 bits of SHA-1(overlay name). */
uint32_t proto_overlay_hash(const char *overlay_name);

/* Name of a RELOAD error code ("Forbidden"), or "Unknown". */
const char *proto_reload_error_name(uint16_t code);

#endif
