/*
 * psc/peer.h — libpscpeer: the control plane a peer embeds to take part in
 * RELOAD Public Security Channels (PSC) managed by a psc-kms KMS.
 *
 * Owns: one peer identity (certificate + private key), one ZeroMQ DEALER
 * connection to the KMS, every PSC flow of docs/protocol.md seen from the peer
 * (Initialize, Establish, Join, Lookup, Invite, Leave, DepartureReport, Destroy,
 * Catchup) and the answers to KMS-initiated requests (Refresh, Query, Invite,
 * Liveness), and the epoch secrets this peer holds.
 * Never: log or hand out epoch secrets through this header (the group-messaging
 * layer of the SDK reads them internally), trust a KMS message before its
 * signature by the configured KMS certificate verifies, or keep global state:
 * every psc_peer is independent.
 *
 * Threads: a psc_peer is not thread-safe; use one from one thread at a time.
 * Different psc_peer objects may be used from different threads.
 *
 * Two ways to drive it (both may be mixed):
 *  - Blocking: each request function sends its request and then processes
 *    everything that arrives (Refreshes, Queries, ... from the KMS, which run
 *    their callbacks) until its answer arrives or the request timeout expires.
 *  - Event loop: poll psc_peer_fd() for readability (ZMQ_FD semantics: it is
 *    edge-triggered, so always call psc_peer_process() when it fires, and also
 *    when psc_peer_next_timeout_ms() elapses), and call psc_peer_process().
 *
 * Callbacks run inside psc_peer_process() or a blocking request. They must not
 * call request functions of the same peer (those return PSC_E_PEER_BUSY) nor
 * psc_peer_free() it; accessors are fine.
 *
 * IDs (PSC IDs, Node-IDs) are 16 raw bytes; psc_peer_id_hex() formats them.
 * Errors: functions return psc_rc (PSC_OK = 0, negative on error; psc_rc.h) and
 * fill an optional psc_err with a sentence for people, e.g.
 * "KMS refused PscJoin: Forbidden (policy_denied): denied by rule r7".
 */
#ifndef PSC_PEER_H
#define PSC_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PSC_PEER_ID_LEN 16	  /* Node-ID and PSC ID bytes */
#define PSC_PEER_NAME_MAX 255	  /* PSC name bytes */
#define PSC_PEER_ENDPOINT_MAX 255 /* data endpoint bytes */
#define PSC_PEER_TEXT_MAX 1000	  /* KMS error text bytes */

#define PSC_PEER_DEFAULT_REQUEST_TIMEOUT_MS 10000
#define PSC_PEER_DEFAULT_FRESHNESS_MS 300000 /* ±300 s, docs/protocol.md §9 */
/* Above the KMS's default query (30 s) and invite (60 s) timeouts. */
#define PSC_PEER_DEFAULT_DECISION_TIMEOUT_MS 75000

typedef struct psc_peer psc_peer;

/* Why an epoch changed (the wire's RefreshReason, docs/protocol.md §7.6). */
typedef enum psc_peer_reason {
	PSC_PEER_REASON_ESTABLISH = 1,
	PSC_PEER_REASON_TIMER = 2,
	PSC_PEER_REASON_JOIN = 3,
	PSC_PEER_REASON_LEAVE = 4,
	PSC_PEER_REASON_EVICT = 5,
	PSC_PEER_REASON_DESTROYED = 6, /* the PSC no longer exists */
	PSC_PEER_REASON_REMOVED = 7,   /* this peer is no longer a member */
	PSC_PEER_REASON_RESTORE = 8,
	PSC_PEER_REASON_CATCHUP = 9,
	/* Not on the wire: material that came in an Initialize answer. */
	PSC_PEER_REASON_ANSWER = 100,
} psc_peer_reason;

/* A Query from the KMS: `requester` asks to join a PSC this peer owns. */
typedef struct psc_peer_query {
	uint8_t psc_id[PSC_PEER_ID_LEN];
	uint8_t requester[PSC_PEER_ID_LEN];
	const char *requester_subject; /* RFC 2253 subject, NUL-terminated, borrowed */
	uint32_t timeout_ms;	       /* the KMS denies after this long */
	uint64_t decision_id;	       /* for psc_peer_decide() after PSC_PEER_DECIDE_LATER */
} psc_peer_query;

/* An Invite from the KMS: `inviter` (the owner) invites this peer. */
typedef struct psc_peer_invitation {
	uint8_t psc_id[PSC_PEER_ID_LEN];
	const char *psc_name; /* NUL-terminated, borrowed */
	uint8_t inviter[PSC_PEER_ID_LEN];
	uint32_t timeout_ms;
	uint64_t decision_id; /* for psc_peer_decide() after PSC_PEER_DECIDE_LATER */
} psc_peer_invitation;

/* From on_query / on_invite: no answer yet; the application answers later with
 * psc_peer_decide() (e.g. after asking a person) while psc_peer_process() keeps
 * serving the KMS. At most PSC_PEER_OPEN_DECISIONS are open at once (more are
 * denied at once); the KMS's timeout_ms still bounds the wait. */
#define PSC_PEER_DECIDE_LATER 2
#define PSC_PEER_OPEN_DECISIONS 32

/*
 * Application callbacks; every one is optional. `user` is psc_peer_config.user.
 * Pointers passed in are valid only during the call.
 */
typedef struct psc_peer_callbacks {
	/* A new epoch of a PSC is held (Refresh, Catchup, or our own request). */
	void (*on_epoch)(void *user, const uint8_t psc_id[PSC_PEER_ID_LEN], uint64_t epoch,
			 psc_peer_reason reason);
	/* The PSC is gone for this peer (reason DESTROYED or REMOVED); its epochs
	 * are already wiped. last_epoch is the last epoch the KMS says we held. */
	void (*on_gone)(void *user, const uint8_t psc_id[PSC_PEER_ID_LEN], uint64_t last_epoch,
			psc_peer_reason reason);
	/* Owner decision on a join; return 1 to accept, 0 to deny, or
	 * PSC_PEER_DECIDE_LATER to answer with psc_peer_decide(). Unset = deny. */
	int (*on_query)(void *user, const psc_peer_query *q);
	/* Invitee decision; return 1 to accept, 0 to decline, or
	 * PSC_PEER_DECIDE_LATER. Unset = decline. */
	int (*on_invite)(void *user, const psc_peer_invitation *inv);
	/* Something the KMS sent could not be applied (e.g. an epoch secret that
	 * does not unwrap: not acknowledged), or a KMS message was rejected (bad
	 * signature, stale, replayed). Informational; the peer keeps running. */
	void (*on_error)(void *user, const psc_err *err);
	/* The peer re-initialised with the KMS (restart or reconnect detected). */
	void (*on_reconnect)(void *user);
} psc_peer_callbacks;

/* The peer's private key on a PKCS#11 token instead of a file (through
 * libp11): requests are signed and epoch secrets unwrapped in the token. The
 * key needs CKA_SIGN, and CKA_DERIVE (EC P-256) or CKA_DECRYPT (RSA). */
typedef struct psc_peer_pkcs11 {
	const char *module;	/* PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so */
	const char *token;	/* token label */
	const char *pin_file;	/* file whose first line is the user PIN */
	const char *key_label;	/* CKA_LABEL of the private key */
} psc_peer_pkcs11;

typedef struct psc_peer_config {
	const char *cert_file;	   /* this peer's certificate, PEM (EC P-256 or RSA) */
	const char *key_file;	   /* its private key, PEM, unencrypted; NULL with key_pkcs11 */
	const char *kms_endpoint;  /* "tcp://host:port" */
	const char *kms_cert_file; /* the KMS certificate, PEM: every KMS message must be
				      signed by its key */
	/* The KMS's CURVE public key: 40 Z85 characters, or a path to a file whose
	 * first line holds them. NULL = plain TCP (tests, never production). */
	const char *kms_curve_key;
	const char *overlay;	   /* overlay name, e.g. "psc.example" */
	const char *data_endpoint; /* advertised at Initialize; NULL = none */
	int request_timeout_ms;	   /* 0 = PSC_PEER_DEFAULT_REQUEST_TIMEOUT_MS */
	/* Requests where the KMS waits on another party (Join may ask the owner,
	 * Invite the invitee, a departure report the suspect): must exceed the
	 * KMS's own waits. 0 = PSC_PEER_DEFAULT_DECISION_TIMEOUT_MS. */
	int decision_timeout_ms;
	int freshness_ms; /* accepted clock skew of KMS requests; 0 = default */
	/* Re-Initialize + Catchup by itself when the KMS restarted or the
	 * connection came back (0 = only on psc_peer_reconnect()). */
	int auto_reconnect;
	const psc_peer_callbacks *callbacks; /* copied; NULL = none */
	void *user;			     /* passed to every callback */
	const psc_peer_pkcs11 *key_pkcs11;   /* the key on a token (key_file NULL) */
} psc_peer_config;

/* Access-control information for a new PSC (docs/protocol.md §6.2). */
typedef struct psc_peer_label {
	const char *key;   /* 1..64 bytes */
	const char *value; /* 0..255 bytes */
} psc_peer_label;

typedef struct psc_peer_establish_params {
	const char *name; /* 1..255 bytes, unique among live PSCs */
	const psc_peer_label *labels;
	size_t n_labels;			   /* at most 32 */
	const uint8_t (*members)[PSC_PEER_ID_LEN]; /* initial members besides us */
	size_t n_members;
	uint32_t refresh_s;    /* 0 = policy default */
	uint32_t max_members;  /* 0 = policy limit */
	int sender_signatures; /* 1: every group message must be signed by its sender */
} psc_peer_establish_params;

/* The result of an optional join/establish inside Initialize. */
typedef struct psc_peer_outcome {
	int requested;	 /* 0: not asked for */
	uint16_t status; /* 0 ok, else a RELOAD error code (2 Forbidden, ...) */
	uint8_t psc_id[PSC_PEER_ID_LEN];
	char info[256]; /* NUL-terminated text from the KMS */
} psc_peer_outcome;

typedef struct psc_peer_init_options {
	const uint8_t *join_psc;		    /* 16 bytes, or NULL */
	const psc_peer_establish_params *establish; /* or NULL */
} psc_peer_init_options;

typedef struct psc_peer_init_result {
	uint64_t kms_time;     /* KMS clock (ms since the epoch) */
	int64_t clock_skew_ms; /* kms_time minus our clock at the answer */
	uint16_t suite;
	uint8_t wrap_alg;
	psc_peer_outcome join;
	psc_peer_outcome establish;
	size_t n_memberships; /* PSCs whose material came with the answer */
} psc_peer_init_result;

typedef struct psc_peer_lookup_result {
	uint8_t psc_id[PSC_PEER_ID_LEN];
	uint8_t owner[PSC_PEER_ID_LEN];
	uint32_t member_count;
} psc_peer_lookup_result;

typedef enum psc_peer_invite_outcome {
	PSC_PEER_INVITE_ACCEPTED = 1,
	PSC_PEER_INVITE_DECLINED = 2,
	PSC_PEER_INVITE_TIMEOUT = 3,
	PSC_PEER_INVITE_UNREACHABLE = 4,
} psc_peer_invite_outcome;

typedef enum psc_peer_departure_outcome {
	PSC_PEER_DEPARTURE_ALIVE = 1,	/* the suspect answered: nothing changed */
	PSC_PEER_DEPARTURE_EVICTED = 2, /* it did not: evicted, PSC rekeyed */
} psc_peer_departure_outcome;

typedef struct psc_peer_catchup_result {
	size_t updated; /* PSCs with a newer epoch applied */
	size_t current; /* already current */
	size_t gone;	/* destroyed or no longer a member: forgotten */
	size_t failed;	/* material that did not unwrap (reported via on_error) */
} psc_peer_catchup_result;

/* The last ErrorResponse the KMS sent this peer (docs/protocol.md §8). */
typedef struct psc_peer_kms_error {
	uint16_t error_code;		  /* RELOAD error code; 0 = none yet */
	uint16_t psc_reason;		  /* PSC reason, 0 = none */
	const char *code_name;		  /* "Forbidden" */
	const char *reason_name;	  /* "policy_denied", or "" */
	char text[PSC_PEER_TEXT_MAX + 1]; /* NUL-terminated; control characters replaced */
} psc_peer_kms_error;

/* A PSC this peer is a member of. */
typedef struct psc_peer_psc_info {
	uint8_t psc_id[PSC_PEER_ID_LEN];
	char name[PSC_PEER_NAME_MAX + 1];
	uint8_t owner[PSC_PEER_ID_LEN];
	uint64_t epoch;		 /* current epoch held */
	uint64_t previous_epoch; /* 0 unless the previous epoch is still in its grace period */
	uint16_t suite;
	int sender_signatures;
	uint32_t grace_ms; /* of the current epoch */
	size_t n_members;  /* known member list (may be 0 if never sent in full) */
	int is_owner;
} psc_peer_psc_info;

typedef struct psc_peer_member {
	uint8_t node_id[PSC_PEER_ID_LEN];
	char endpoint[PSC_PEER_ENDPOINT_MAX + 1];
} psc_peer_member;

/* --- lifetime ---------------------------------------------------------- */

/*
 * Loads the certificate (its Node-ID must be bound to cfg->overlay), the key
 * (must match the certificate), the KMS certificate and CURVE key, and connects
 * the DEALER (ZeroMQ connects lazily: nothing is sent until a request).
 * *out is NULL on failure. Strings in cfg are copied.
 */
psc_rc psc_peer_new(psc_peer **out, const psc_peer_config *cfg, psc_err *err) PSC_WUR;

/* Closes the connection, wipes every epoch secret and the private key, frees,
 * and sets *p to NULL. NULL-safe. */
void psc_peer_free(psc_peer **p);

/* --- requests (blocking; see the top of this file) --------------------- */

/* Registers with the KMS; optionally joins and/or establishes a PSC in the
 * same round trip. Must succeed before any other request. res may be NULL. */
psc_rc psc_peer_initialize(psc_peer *p, const psc_peer_init_options *opts,
			   psc_peer_init_result *res, psc_err *err) PSC_WUR;

/* Creates a PSC owned by this peer. psc_id_out receives the new PSC ID;
 * epoch_out (nullable) epoch 1; n_pending (nullable) how many named members have
 * not initialised yet. */
psc_rc psc_peer_establish(psc_peer *p, const psc_peer_establish_params *params,
			  uint8_t psc_id_out[PSC_PEER_ID_LEN], uint64_t *epoch_out,
			  size_t *n_pending, psc_err *err) PSC_WUR;

/* Joins a PSC (the KMS may ask its owner). epoch_out (nullable): the new epoch. */
psc_rc psc_peer_join(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], uint64_t *epoch_out,
		     psc_err *err) PSC_WUR;

/* PSC ID by name; answered only where policy would let this peer join
 * (otherwise PSC_E_PEER_NOT_FOUND, indistinguishable from no such PSC). */
psc_rc psc_peer_lookup(psc_peer *p, const char *name, psc_peer_lookup_result *out,
		       psc_err *err) PSC_WUR;

/* Owner: invite another registered peer. PSC_OK with the invitee's decision in
 * *outcome; *epoch_out (nullable) the new epoch when accepted, else 0. */
psc_rc psc_peer_invite(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
		       const uint8_t invitee[PSC_PEER_ID_LEN], psc_peer_invite_outcome *outcome,
		       uint64_t *epoch_out, psc_err *err) PSC_WUR;

/* Leaves a PSC (the owner of a PSC with other members must destroy it). On
 * success the PSC's epochs are wiped. */
psc_rc psc_peer_leave(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], psc_err *err) PSC_WUR;

/* Reports that `suspect` seems gone; the KMS checks its liveness. */
psc_rc psc_peer_report_departure(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
				 const uint8_t suspect[PSC_PEER_ID_LEN],
				 psc_peer_departure_outcome *outcome, psc_err *err) PSC_WUR;

/* Owner: destroys a PSC. On success its epochs are wiped here too. */
psc_rc psc_peer_destroy(psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], psc_err *err) PSC_WUR;

/* Asks the KMS for the current epoch of every PSC held (and of PSCs we were
 * added to meanwhile) and applies the answer. res may be NULL. */
psc_rc psc_peer_catchup(psc_peer *p, psc_peer_catchup_result *res, psc_err *err) PSC_WUR;

/* Recreates the connection, re-Initializes (same endpoint, no join/establish)
 * and catches up. Use after a KMS restart or a network change. */
psc_rc psc_peer_reconnect(psc_peer *p, psc_err *err) PSC_WUR;

/* --- event loop -------------------------------------------------------- */

/* The DEALER's ZMQ_FD (edge-triggered readability; see above). -1 on error. */
int psc_peer_fd(const psc_peer *p);

/*
 * Handles everything pending: KMS requests (answered, callbacks run), late
 * answers (dropped), grace-period expiry, connection events. Waits up to
 * timeout_ms (0 = do not wait, -1 = until something arrives) for the first
 * message. Returns the number of messages handled (>= 0) or a negative psc_rc.
 */
int psc_peer_process(psc_peer *p, int timeout_ms);

/*
 * Answers a query or invitation whose callback returned PSC_PEER_DECIDE_LATER
 * (decision_id from it): accept 1 = accept / allow, 0 = decline / deny.
 * PSC_E_PEER_NOT_FOUND if it is not open (answered already, or the KMS's
 * timeout passed: the KMS then denied it by itself).
 */
psc_rc psc_peer_decide(psc_peer *p, uint64_t decision_id, int accept, psc_err *err) PSC_WUR;

/* Milliseconds until psc_peer_process() must run again for a timer (grace
 * expiry; with auto_reconnect also at least every second, to notice a
 * connection that came back), or -1 if there is none. */
int psc_peer_next_timeout_ms(const psc_peer *p);

/* --- state ------------------------------------------------------------- */

/* This peer's Node-ID (from its certificate). */
void psc_peer_node_id(const psc_peer *p, uint8_t out[PSC_PEER_ID_LEN]);
/* 1 after a successful Initialize (until the connection is recreated). */
int psc_peer_is_initialized(const psc_peer *p);

size_t psc_peer_psc_count(const psc_peer *p);
/* i-th PSC held (0 <= i < count; order is stable until the set changes). */
psc_rc psc_peer_psc_at(const psc_peer *p, size_t i, psc_peer_psc_info *out) PSC_WUR;
/* PSC by ID; PSC_E_PEER_UNKNOWN_PSC if not held. */
psc_rc psc_peer_psc_get(const psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
			psc_peer_psc_info *out) PSC_WUR;
/* i-th member (with its data endpoint) of a PSC held. */
psc_rc psc_peer_psc_member(const psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], size_t i,
			   psc_peer_member *out) PSC_WUR;

/* The last ErrorResponse received (error_code 0 if none). */
void psc_peer_last_kms_error(const psc_peer *p, psc_peer_kms_error *out);

/* Lower-case hex of a 16-byte ID into out (33 bytes, NUL-terminated). */
void psc_peer_id_hex(const uint8_t id[PSC_PEER_ID_LEN], char out[33]);
/* Parses 32 hex digits. */
psc_rc psc_peer_id_parse(const char *hex, uint8_t out[PSC_PEER_ID_LEN]) PSC_WUR;
/* "timer", "join", ... */
const char *psc_peer_reason_name(psc_peer_reason r);

/* --- group messages (docs/protocol.md §13) ------------------------------
 *
 * Sealing and opening messages between the members of a PSC with keys derived
 * from the epoch secrets this peer holds: AES-256-GCM per sender and
 * incarnation, a replay window per sender, the epoch rules of §10.5 (previous
 * epoch only during its grace period; none after a removal rekey) and, in PSCs
 * established with sender_signatures, a signature by the sender's certificate
 * key. Transport-agnostic: a frame is a byte string to carry as one message.
 *
 * Without sender signatures the sender Node-ID is only *claimed*: the group
 * key proves membership, not which member sent (sender_verified = 0).
 *
 * A psc_peer_msg borrows its psc_peer (free it first) and, like the peer, is
 * used from one thread at a time. One per process and peer: each sender key
 * it derives gets a fresh random incarnation, so two processes with the same
 * Node-ID (a restart) never reuse a nonce. A forked child must not use its
 * parent's psc_peer_msg (it would continue the same sender keys): like the
 * ZeroMQ-based psc_peer itself, create new objects after fork().
 */
#define PSC_PEER_MSG_MAX 1048576 /* plaintext bytes per message */
#define PSC_PEER_MSG_OVERHEAD                                                                      \
	88 /* frame bytes beyond the plaintext, unsigned (header 72 + tag 16) */
#define PSC_PEER_MSG_SIG_MAX 1024  /* signature bytes (RSA up to 8192 bits) */
#define PSC_PEER_MSG_CERT_MAX 4096 /* sender certificate DER bytes */
/* Largest frame for a plaintext of len bytes, signed or not. */
#define PSC_PEER_MSG_FRAME_MAX(len)                                                                \
	((size_t)(len) + PSC_PEER_MSG_OVERHEAD + 2 + PSC_PEER_MSG_SIG_MAX)

typedef struct psc_peer_msg psc_peer_msg;

/*
 * Certificate of a sender, for PSCs with sender signatures. The KMS does not
 * distribute member certificates yet, so the application supplies them (from
 * its overlay's enrolment data, a directory, a previous exchange) and is
 * responsible for their authenticity (chain to the overlay CA, validity,
 * revocation). Write the DER certificate of `node_id` into der (cap bytes)
 * and its length into *len; return PSC_OK, or PSC_E_PEER_NOT_FOUND if
 * unknown. The SDK checks that the certificate binds node_id (§4.3).
 */
typedef psc_rc (*psc_peer_sender_cert_fn)(void *user, const uint8_t psc_id[PSC_PEER_ID_LEN],
					  const uint8_t node_id[PSC_PEER_ID_LEN], uint8_t *der,
					  size_t cap, size_t *len);

typedef struct psc_peer_msg_config {
	psc_peer_sender_cert_fn sender_cert; /* NULL: signed PSCs cannot be opened */
	void *user;			     /* passed to sender_cert */
} psc_peer_msg_config;

/* What psc_peer_open() learnt about a message. */
typedef struct psc_peer_msg_info {
	uint8_t psc_id[PSC_PEER_ID_LEN];
	uint64_t epoch;
	uint8_t sender[PSC_PEER_ID_LEN]; /* claimed unless sender_verified */
	int sender_verified;		 /* 1: signature by the sender's certificate checked */
	uint64_t seq;
} psc_peer_msg_info;

/* cfg may be NULL (no sender certificates). *out is NULL on failure. */
psc_rc psc_peer_msg_new(psc_peer_msg **out, psc_peer *peer, const psc_peer_msg_config *cfg,
			psc_err *err) PSC_WUR;
/* Wipes every derived key and frees; NULL-safe, nulls *m. */
void psc_peer_msg_free(psc_peer_msg **m);

/*
 * Seals len bytes (at most PSC_PEER_MSG_MAX) for the members of a PSC under
 * its current epoch; signs when the PSC has sender signatures. out must hold
 * PSC_PEER_MSG_FRAME_MAX(len) bytes (or at least the frame's real size);
 * *out_len receives the frame's size. PSC_E_PEER_UNKNOWN_PSC if not held.
 */
psc_rc psc_peer_seal(psc_peer_msg *m, const uint8_t psc_id[PSC_PEER_ID_LEN],
		     const uint8_t *plaintext, size_t len, uint8_t *out, size_t cap,
		     size_t *out_len, psc_err *err) PSC_WUR;

/*
 * Opens a frame from another member (or from ourselves). out must hold
 * len - PSC_PEER_MSG_OVERHEAD bytes (the frame's len is enough). info may be
 * NULL. out holds nothing useful unless PSC_OK (it is wiped). Errors: PSC_E_PEER_SEAL_*
 * (malformed, stale/future epoch, replay, bad tag, unsigned, bad signature,
 * no certificate), PSC_E_PEER_UNKNOWN_PSC.
 */
psc_rc psc_peer_open(psc_peer_msg *m, const uint8_t *frame, size_t len, uint8_t *out, size_t cap,
		     size_t *out_len, psc_peer_msg_info *info, psc_err *err) PSC_WUR;

/* --- group channel over ZeroMQ ------------------------------------------
 *
 * Carries the frames of psc_peer_seal() between the members of the PSCs this
 * peer holds: a PUB socket bound at the peer's data endpoint
 * (psc_peer_config.data_endpoint, required) and a SUB socket connected to the
 * data endpoints of the other members (from the KMS's member lists; updated
 * when an epoch changes, i.e. when membership changes), subscribed to each
 * PSC's 20-byte frame prefix. libzmq does the fan-out and the filtering; a
 * send never blocks. Delivery is best effort: a member that is not connected
 * yet (it just joined, or its connection is being set up) misses what is sent
 * meanwhile, and a slow member loses frames beyond the ZeroMQ high-water mark.
 *
 * psc_peer_chan_process() replaces psc_peer_process() in an event loop: it
 * serves the KMS connection and then opens every frame received. A frame that
 * does not open (stale or future epoch, replay, bad tag or signature, a PSC
 * not held) is dropped and counted. The channel borrows its psc_peer and its
 * sockets live in the peer's ZeroMQ context: free the channel first. One
 * thread at a time, like the peer. In relay mode (psc_peer_chan_relay below)
 * both sockets connect to a psc-relay instead.
 */
typedef struct psc_peer_chan psc_peer_chan;

/* A message that opened: plaintext (len bytes, valid during the call) and what
 * psc_peer_open() learnt (the sender is claimed unless info->sender_verified). */
typedef void (*psc_peer_chan_recv_fn)(void *user, const psc_peer_msg_info *info,
				      const uint8_t *data, size_t len);

/*
 * Relay mode (docs/relay.md): instead of a PUB bound at the data endpoint and
 * a SUB connected to every other member, the PUB connects to a psc-relay's
 * publish endpoint and the SUB to its subscribe endpoint, still subscribed per
 * PSC: two connections per member, O(N) for the group instead of N(N-1). The
 * relay forwards frames it cannot open or forge (they are sealed end to end,
 * as in direct mode); it sees their metadata (PSC IDs, sender Node-IDs, sizes,
 * timing). All the members of a PSC must use the same relay: a member in
 * direct mode does not hear one in relay mode. Frames this peer's Node-ID sent
 * are not delivered back to it.
 */
typedef struct psc_peer_chan_relay {
	const char *publish_endpoint;	/* the relay's --publish-endpoint (required) */
	const char *subscribe_endpoint; /* the relay's --subscribe-endpoint (required) */
	/* The relay's CURVE public key (Z85, 40 characters) if it runs with
	 * --curve-secret-file: both connections are then encrypted with a fresh
	 * client key pair. NULL: plain TCP (the frames are sealed either way). */
	const char *curve_key;
} psc_peer_chan_relay;

/* Zero-initialise (e.g. `psc_peer_chan_config cc = {.on_message = f}`): fields
 * added later default to zero. */
typedef struct psc_peer_chan_config {
	psc_peer_chan_recv_fn on_message; /* NULL: frames are opened and discarded */
	void *user;			  /* passed to on_message */
	const psc_peer_msg_config *msg;	  /* sender certificates; NULL = none */
	const psc_peer_chan_relay *relay; /* NULL: direct mode (the default); copied */
} psc_peer_chan_config;

typedef struct psc_peer_chan_stats {
	uint64_t sent;		/* frames published */
	uint64_t delivered;	/* frames opened and passed to on_message */
	uint64_t dropped;	/* frames that did not open (sum of the next four and others) */
	uint64_t dropped_epoch; /* stale or future epoch */
	uint64_t dropped_replay;
	uint64_t dropped_auth; /* bad tag, signature missing or wrong, no certificate */
	uint64_t dropped_unknown_psc;
	size_t connections; /* member endpoints the SUB socket is connected to (relay: 1) */
	size_t subscriptions;
} psc_peer_chan_stats;

/* Direct mode: binds the PUB socket at the peer's data endpoint and connects
 * to the members of the PSCs held. Relay mode (cfg->relay): connects both
 * sockets to the relay; no data endpoint needed. *out is NULL on failure. */
psc_rc psc_peer_chan_new(psc_peer_chan **out, psc_peer *peer, const psc_peer_chan_config *cfg,
			 psc_err *err) PSC_WUR;
/* Closes the sockets (frames still queued get up to 1 s to leave), wipes the
 * keys, frees and nulls *c. NULL-safe. */
void psc_peer_chan_free(psc_peer_chan **c);

/* Seals len bytes (at most PSC_PEER_MSG_MAX) for a PSC held and publishes
 * them to its members. Does not block; PSC_OK means queued, not delivered. */
psc_rc psc_peer_send(psc_peer_chan *c, const uint8_t psc_id[PSC_PEER_ID_LEN], const uint8_t *buf,
		     size_t len, psc_err *err) PSC_WUR;

/* psc_peer_process() for the KMS connection, membership update, then every
 * frame received (on_message runs). Waits up to timeout_ms (0 = no wait, -1 =
 * until something arrives) for the first KMS message or frame. Returns how
 * many KMS messages and frames were handled (>= 0), or a negative psc_rc. */
int psc_peer_chan_process(psc_peer_chan *c, int timeout_ms);

/* The SUB socket's ZMQ_FD (edge-triggered like psc_peer_fd(): poll both and
 * call psc_peer_chan_process() when either fires). -1 on error. */
int psc_peer_chan_fd(const psc_peer_chan *c);

/* Re-reads the member lists now (psc_peer_chan_process() does it by itself
 * whenever an epoch changed). */
psc_rc psc_peer_chan_update(psc_peer_chan *c, psc_err *err) PSC_WUR;

void psc_peer_chan_stats_get(const psc_peer_chan *c, psc_peer_chan_stats *out);

#ifdef __cplusplus
}
#endif

#endif
