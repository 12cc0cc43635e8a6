/*
 * psc_seal — group message protection (docs/protocol.md §13): the key schedule,
 * the frame layout, sealing with a sender key and opening with a replay
 * window. The psc_peer_msg object of psc/peer.h binds these to the epoch
 * secrets a psc_peer holds; the functions here take the epoch secret directly
 * so tests, vectors and benchmarks need no KMS.
 *
 * Owns: derived sender keys (inside EVP_CIPHER_CTX key schedules) and nonce
 * bases, per-sender sequence counters, replay windows.
 * Never: reuse a (key, nonce) pair — a sender key is used for at most
 * PSC_SEAL_SEQ_LIMIT messages and each new one gets a fresh random
 * incarnation; return plaintext that did not authenticate; keep a derived key
 * after its state is cleared (OPENSSL_cleanse / EVP_CIPHER_CTX_free).
 */
#ifndef PSC_SEAL_H
#define PSC_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "psc/peer.h"
#include "psc_codes.h"
#include "psc_rc.h"

#define PSC_SEAL_VERSION 1
#define PSC_SEAL_SUITE PSC_SUITE_AES256GCM_HKDF_SHA256 /* 0x0001 (§6.1) */
#define PSC_SEAL_FLAG_SIGNED 0x01
#define PSC_SEAL_INC_LEN 16
#define PSC_SEAL_KEY_LEN 32
#define PSC_SEAL_NONCE_LEN 12
#define PSC_SEAL_TAG_LEN 16
#define PSC_SEAL_HEADER_LEN 72 /* 1+1+2+16+8+16+16+8+4 */
#define PSC_SEAL_MAX_PLAINTEXT 1048576
#define PSC_SEAL_MAX_SIG 1024
#define PSC_SEAL_SEQ_LIMIT (UINT64_C(1) << 32) /* messages per sender key */
#define PSC_SEAL_WINDOW 1024		       /* replay window, in sequence numbers */
#define PSC_SEAL_WINDOW_WORDS 17	       /* ring of 64-bit words: 1024 + one spare word */
#define PSC_SEAL_SALT "PSC group v1"
#define PSC_SEAL_SIG_LABEL "PSC group sig v1"

typedef struct psc_seal_header {
	uint8_t version;
	uint8_t flags;
	uint16_t suite;
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	uint8_t sender[PSC_NODE_ID_LEN];
	uint8_t incarnation[PSC_SEAL_INC_LEN];
	uint64_t seq;
	uint32_t ct_len; /* ciphertext bytes including the tag */
} psc_seal_header;

/* A frame split into its parts (pointers borrow the frame). */
typedef struct psc_seal_frame {
	psc_seal_header h;
	const uint8_t *header; /* the PSC_SEAL_HEADER_LEN header bytes (the AAD) */
	const uint8_t *ct;     /* h.ct_len bytes, tag last */
	const uint8_t *sig;    /* NULL unless flags has SIGNED */
	size_t sig_len;
} psc_seal_frame;

/* A derived sender key ready for use: the AES key lives only in ctx. */
typedef struct psc_seal_key {
	EVP_CIPHER_CTX *ctx;
	uint8_t nonce_base[PSC_SEAL_NONCE_LEN];
} psc_seal_key;

/*
 * HKDF-SHA256(salt = PSC_SEAL_SALT, ikm = secret, info = psc_id || uint64
 * epoch || sender || incarnation, L = 44) = key(32) || nonce_base(12).
 * The caller wipes key and nonce_base.
 */
psc_rc psc_seal_derive(const uint8_t secret[PSC_EPOCH_SECRET_LEN],
		       const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
		       const uint8_t sender[PSC_NODE_ID_LEN],
		       const uint8_t incarnation[PSC_SEAL_INC_LEN], uint8_t key[PSC_SEAL_KEY_LEN],
		       uint8_t nonce_base[PSC_SEAL_NONCE_LEN]) PSC_WUR;

/* Derives and loads a key for encryption (enc = 1) or decryption (0). */
psc_rc psc_seal_key_init(psc_seal_key *k, int enc, const uint8_t secret[PSC_EPOCH_SECRET_LEN],
			 const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			 const uint8_t sender[PSC_NODE_ID_LEN],
			 const uint8_t incarnation[PSC_SEAL_INC_LEN]) PSC_WUR;
/* Frees the key schedule (OpenSSL wipes it) and wipes the nonce base. */
void psc_seal_key_clear(psc_seal_key *k);

/* Writes the 72 header bytes. */
void psc_seal_header_write(const psc_seal_header *h, uint8_t out[PSC_SEAL_HEADER_LEN]);

/*
 * Splits a frame: exact lengths, version 1, suite 0x0001, no undefined flag,
 * ct_len in 16..PSC_SEAL_MAX_PLAINTEXT+16, seq < PSC_SEAL_SEQ_LIMIT, signature
 * 1..PSC_SEAL_MAX_SIG bytes when SIGNED, no trailing bytes.
 * PSC_E_PEER_SEAL_MALFORMED otherwise, with err naming the field.
 */
psc_rc psc_seal_parse(const uint8_t *frame, size_t len, psc_seal_frame *f, psc_err *err) PSC_WUR;

/* --- sending ------------------------------------------------------------ */

/* One sender key: (psc, epoch, sender, incarnation) and its next seq. */
typedef struct psc_seal_sender {
	psc_seal_header h; /* template: version, flags, suite, ids, epoch, incarnation */
	uint64_t seq;	   /* next sequence number */
	psc_seal_key key;
} psc_seal_sender;

/*
 * Sets up a sender key. incarnation NULL = draw 16 random bytes (the normal
 * case); tests and vectors pass a fixed one. signed_ = 1 for PSCs with sender
 * signatures. seq starts at 0.
 */
psc_rc psc_seal_sender_init(psc_seal_sender *s, const uint8_t secret[PSC_EPOCH_SECRET_LEN],
			    const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    const uint8_t sender[PSC_NODE_ID_LEN], const uint8_t *incarnation,
			    int signed_) PSC_WUR;
void psc_seal_sender_clear(psc_seal_sender *s);

/*
 * Seals one message with the next seq. sign_key is required when the sender
 * was set up signed (the sender's certificate key), ignored otherwise.
 * PSC_E_PEER_SEAL_LIMIT once PSC_SEAL_SEQ_LIMIT messages were sealed: the
 * caller sets up a new sender (new incarnation). out must hold the frame.
 */
psc_rc psc_seal_sender_seal(psc_seal_sender *s, EVP_PKEY *sign_key, const uint8_t *pt, size_t len,
			    uint8_t *out, size_t cap, size_t *out_len, psc_err *err) PSC_WUR;

/* Size of the frame sealing len bytes (sig_len 0 = unsigned). */
size_t psc_seal_frame_size(size_t len, size_t sig_len);

/* --- receiving ---------------------------------------------------------- */

typedef struct psc_seal_window {
	uint64_t top; /* highest seq accepted */
	int used;
	uint64_t bits[PSC_SEAL_WINDOW_WORDS];
} psc_seal_window;

/* PSC_OK if seq was not accepted before and is within the window,
 * PSC_E_PEER_SEAL_REPLAY otherwise. Does not record it. */
psc_rc psc_seal_window_check(const psc_seal_window *w, uint64_t seq) PSC_WUR;
/* Records seq as accepted (after it authenticated). */
void psc_seal_window_mark(psc_seal_window *w, uint64_t seq);

/*
 * Decrypts and authenticates a parsed frame with a decryption key derived for
 * its header. out must hold f->h.ct_len - 16 bytes. On a bad tag, out is
 * wiped and PSC_E_PEER_SEAL_BAD_TAG returned.
 */
psc_rc psc_seal_decrypt(psc_seal_key *k, const psc_seal_frame *f, uint8_t *out, size_t cap,
			size_t *out_len, psc_err *err) PSC_WUR;

/* Verifies a signed frame's signature with the sender's public key. */
psc_rc psc_seal_verify(const psc_seal_frame *f, EVP_PKEY *pub, psc_err *err) PSC_WUR;

/*
 * One-shot open with the epoch secret given (tests, vectors, tools): parse,
 * derive, decrypt. No replay window and no epoch rules: those need state (the
 * psc_peer_msg object). Does not check a signature.
 */
psc_rc psc_seal_open_with_secret(const uint8_t secret[PSC_EPOCH_SECRET_LEN], const uint8_t *frame,
				 size_t len, uint8_t *out, size_t cap, size_t *out_len,
				 psc_seal_header *h, psc_err *err) PSC_WUR;

/* --- hooks for tests ------------------------------------------------------ */

/* Sets the next seq of the send state a psc_peer_msg holds for psc_id (it
 * must have sealed once in the current epoch). */
psc_rc psc_seal_test_set_seq(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN],
			     uint64_t seq) PSC_WUR;
/* The incarnation of that send state. */
psc_rc psc_seal_test_incarnation(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN],
				 uint8_t out[PSC_SEAL_INC_LEN]) PSC_WUR;

/* Receive states (derived keys + windows) held. */
size_t psc_seal_test_recv_count(const psc_peer_msg *m);
/* Send states (derived sender keys) held. */
size_t psc_seal_test_send_count(const psc_peer_msg *m);

#endif
