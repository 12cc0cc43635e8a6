/* Group message protection; see psc_seal.h and docs/protocol.md §13. */
#include "psc_seal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "proto_cert.h"
#include "proto_msg.h"
#include "psc_peer_int.h"

/* --- bytes ------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void psc_seal_header_write(const psc_seal_header *h, uint8_t out[PSC_SEAL_HEADER_LEN])
{
	out[0] = h->version;
	out[1] = h->flags;
	out[2] = (uint8_t)(h->suite >> 8);
	out[3] = (uint8_t)h->suite;
	memcpy(out + 4, h->psc_id, PSC_PSC_ID_LEN);
	put_u64(out + 20, h->epoch);
	memcpy(out + 28, h->sender, PSC_NODE_ID_LEN);
	memcpy(out + 44, h->incarnation, PSC_SEAL_INC_LEN);
	put_u64(out + 60, h->seq);
	put_u32(out + 68, h->ct_len);
}

size_t psc_seal_frame_size(size_t len, size_t sig_len)
{
	return PSC_SEAL_HEADER_LEN + len + PSC_SEAL_TAG_LEN + (sig_len ? 2 + sig_len : 0);
}

psc_rc psc_seal_parse(const uint8_t *frame, size_t len, psc_seal_frame *f, psc_err *err)
{
	if (!frame || !f)
		return PSC_E_INVALID_ARG;
	memset(f, 0, sizeof(*f));
	if (len < PSC_SEAL_HEADER_LEN)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: %zu bytes, shorter than its %d-byte header", len,
				   PSC_SEAL_HEADER_LEN);
	psc_seal_header *h = &f->h;
	h->version = frame[0];
	h->flags = frame[1];
	h->suite = (uint16_t)((frame[2] << 8) | frame[3]);
	memcpy(h->psc_id, frame + 4, PSC_PSC_ID_LEN);
	h->epoch = get_u64(frame + 20);
	memcpy(h->sender, frame + 28, PSC_NODE_ID_LEN);
	memcpy(h->incarnation, frame + 44, PSC_SEAL_INC_LEN);
	h->seq = get_u64(frame + 60);
	h->ct_len = get_u32(frame + 68);
	if (h->version != PSC_SEAL_VERSION)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: version %u (only %d is defined)", h->version,
				   PSC_SEAL_VERSION);
	if (h->flags & ~PSC_SEAL_FLAG_SIGNED)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: undefined flag bits 0x%02x", h->flags);
	if (h->suite != PSC_SEAL_SUITE)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: suite 0x%04x (only 0x0001 is defined)",
				   h->suite);
	if (h->epoch == 0)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED, "group message: epoch 0");
	if (h->seq >= PSC_SEAL_SEQ_LIMIT)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: seq %llu beyond the 2^32 limit per sender key",
				   (unsigned long long)h->seq);
	if (h->ct_len < PSC_SEAL_TAG_LEN || h->ct_len > PSC_SEAL_MAX_PLAINTEXT + PSC_SEAL_TAG_LEN)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: ciphertext_len %u outside 16..%d", h->ct_len,
				   PSC_SEAL_MAX_PLAINTEXT + PSC_SEAL_TAG_LEN);
	size_t rest = len - PSC_SEAL_HEADER_LEN;
	if (rest < h->ct_len)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: ciphertext truncated (%zu of %u bytes)", rest,
				   h->ct_len);
	f->header = frame;
	f->ct = frame + PSC_SEAL_HEADER_LEN;
	rest -= h->ct_len;
	const uint8_t *p = f->ct + h->ct_len;
	if (!(h->flags & PSC_SEAL_FLAG_SIGNED)) {
		if (rest != 0)
			return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
					   "group message: %zu trailing bytes", rest);
		return PSC_OK;
	}
	if (rest < 2)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: signed, but the signature is missing");
	size_t sl = ((size_t)p[0] << 8) | p[1];
	if (sl < 1 || sl > PSC_SEAL_MAX_SIG)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: signature length %zu outside 1..%d", sl,
				   PSC_SEAL_MAX_SIG);
	if (rest - 2 != sl)
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "group message: signature is %zu bytes but %zu follow", sl,
				   rest - 2);
	f->sig = p + 2;
	f->sig_len = sl;
	return PSC_OK;
}

/* --- key schedule -------------------------------------------------------- */

psc_rc psc_seal_derive(const uint8_t secret[PSC_EPOCH_SECRET_LEN],
		       const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
		       const uint8_t sender[PSC_NODE_ID_LEN],
		       const uint8_t incarnation[PSC_SEAL_INC_LEN], uint8_t key[PSC_SEAL_KEY_LEN],
		       uint8_t nonce_base[PSC_SEAL_NONCE_LEN])
{
	uint8_t info[PSC_PSC_ID_LEN + 8 + PSC_NODE_ID_LEN + PSC_SEAL_INC_LEN];
	memcpy(info, psc_id, PSC_PSC_ID_LEN);
	put_u64(info + PSC_PSC_ID_LEN, epoch);
	memcpy(info + PSC_PSC_ID_LEN + 8, sender, PSC_NODE_ID_LEN);
	memcpy(info + PSC_PSC_ID_LEN + 8 + PSC_NODE_ID_LEN, incarnation, PSC_SEAL_INC_LEN);
	uint8_t okm[PSC_SEAL_KEY_LEN + PSC_SEAL_NONCE_LEN];
	size_t okm_len = sizeof(okm);
	psc_rc rc = PSC_E_CRYPTO;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	if (c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) == 1 &&
	    EVP_PKEY_CTX_set1_hkdf_salt(c, (const unsigned char *)PSC_SEAL_SALT,
					(int)strlen(PSC_SEAL_SALT)) == 1 &&
	    EVP_PKEY_CTX_set1_hkdf_key(c, secret, PSC_EPOCH_SECRET_LEN) == 1 &&
	    EVP_PKEY_CTX_add1_hkdf_info(c, info, (int)sizeof(info)) == 1 &&
	    EVP_PKEY_derive(c, okm, &okm_len) == 1 && okm_len == sizeof(okm)) {
		memcpy(key, okm, PSC_SEAL_KEY_LEN);
		memcpy(nonce_base, okm + PSC_SEAL_KEY_LEN, PSC_SEAL_NONCE_LEN);
		rc = PSC_OK;
	}
	EVP_PKEY_CTX_free(c);
	OPENSSL_cleanse(okm, sizeof(okm));
	return rc;
}

psc_rc psc_seal_key_init(psc_seal_key *k, int enc, const uint8_t secret[PSC_EPOCH_SECRET_LEN],
			 const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			 const uint8_t sender[PSC_NODE_ID_LEN],
			 const uint8_t incarnation[PSC_SEAL_INC_LEN])
{
	memset(k, 0, sizeof(*k));
	uint8_t key[PSC_SEAL_KEY_LEN];
	psc_rc rc = psc_seal_derive(secret, psc_id, epoch, sender, incarnation, key, k->nonce_base);
	if (rc != PSC_OK)
		return rc;
	k->ctx = EVP_CIPHER_CTX_new();
	if (!k->ctx ||
	    EVP_CipherInit_ex(k->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc ? 1 : 0) != 1 ||
	    EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_GCM_SET_IVLEN, PSC_SEAL_NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(k->ctx, NULL, NULL, key, NULL, enc ? 1 : 0) != 1)
		rc = PSC_E_CRYPTO;
	OPENSSL_cleanse(key, sizeof(key));
	if (rc != PSC_OK)
		psc_seal_key_clear(k);
	return rc;
}

void psc_seal_key_clear(psc_seal_key *k)
{
	if (!k)
		return;
	EVP_CIPHER_CTX_free(k->ctx); /* cleanses the AES key schedule */
	OPENSSL_cleanse(k, sizeof(*k));
}

static void make_nonce(const psc_seal_key *k, uint64_t seq, uint8_t nonce[PSC_SEAL_NONCE_LEN])
{
	memcpy(nonce, k->nonce_base, PSC_SEAL_NONCE_LEN);
	for (int i = 0; i < 8; i++)
		nonce[PSC_SEAL_NONCE_LEN - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

/* --- sending ------------------------------------------------------------ */

psc_rc psc_seal_sender_init(psc_seal_sender *s, const uint8_t secret[PSC_EPOCH_SECRET_LEN],
			    const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    const uint8_t sender[PSC_NODE_ID_LEN], const uint8_t *incarnation,
			    int signed_)
{
	if (!s || !secret || !psc_id || !sender || epoch == 0)
		return PSC_E_INVALID_ARG;
	memset(s, 0, sizeof(*s));
	s->h.version = PSC_SEAL_VERSION;
	s->h.flags = signed_ ? PSC_SEAL_FLAG_SIGNED : 0;
	s->h.suite = PSC_SEAL_SUITE;
	memcpy(s->h.psc_id, psc_id, PSC_PSC_ID_LEN);
	s->h.epoch = epoch;
	memcpy(s->h.sender, sender, PSC_NODE_ID_LEN);
	if (incarnation)
		memcpy(s->h.incarnation, incarnation, PSC_SEAL_INC_LEN);
	else if (RAND_bytes(s->h.incarnation, PSC_SEAL_INC_LEN) != 1)
		return PSC_E_CRYPTO;
	return psc_seal_key_init(&s->key, 1, secret, psc_id, epoch, sender, s->h.incarnation);
}

void psc_seal_sender_clear(psc_seal_sender *s)
{
	if (!s)
		return;
	psc_seal_key_clear(&s->key);
	OPENSSL_cleanse(s, sizeof(*s));
}

static psc_rc sign_frame(EVP_PKEY *key, const uint8_t *signed_part, size_t n, uint8_t *sig,
			 size_t *sig_len)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	psc_rc rc = PSC_E_CRYPTO;
	if (m && EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSignUpdate(m, PSC_SEAL_SIG_LABEL, strlen(PSC_SEAL_SIG_LABEL)) == 1 &&
	    EVP_DigestSignUpdate(m, signed_part, n) == 1 &&
	    EVP_DigestSignFinal(m, sig, sig_len) == 1)
		rc = PSC_OK;
	EVP_MD_CTX_free(m);
	return rc;
}

psc_rc psc_seal_sender_seal(psc_seal_sender *s, EVP_PKEY *sign_key, const uint8_t *pt, size_t len,
			    uint8_t *out, size_t cap, size_t *out_len, psc_err *err)
{
	if (!s || !s->key.ctx || (!pt && len) || !out || !out_len)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_seal: missing argument");
	int sign = (s->h.flags & PSC_SEAL_FLAG_SIGNED) != 0;
	if (sign && !sign_key)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "psc_seal: this PSC requires sender signatures but no key");
	if (len > PSC_SEAL_MAX_PLAINTEXT)
		return psc_err_set(err, PSC_E_PEER_SEAL_TOO_LARGE,
				   "group message of %zu bytes: at most %d", len,
				   PSC_SEAL_MAX_PLAINTEXT);
	if (s->seq >= PSC_SEAL_SEQ_LIMIT)
		return psc_err_set(err, PSC_E_PEER_SEAL_LIMIT,
				   "sender key sealed 2^32 messages: set up a new incarnation");
	size_t sig_max = 0;
	if (sign) {
		int ks = EVP_PKEY_get_size(sign_key);
		if (ks <= 0 || ks > PSC_SEAL_MAX_SIG)
			return psc_err_set(err, PSC_E_PEER_IDENTITY,
					   "signing key size %d not usable for group messages", ks);
		sig_max = (size_t)ks;
	}
	size_t body = PSC_SEAL_HEADER_LEN + len + PSC_SEAL_TAG_LEN;
	if (cap < body + (sign ? 2 + sig_max : 0))
		return psc_err_set(err, PSC_E_PEER_SEAL_BUFFER,
				   "group message needs %zu bytes, buffer holds %zu",
				   body + (sign ? 2 + sig_max : 0), cap);
	psc_seal_header h = s->h;
	h.seq = s->seq;
	h.ct_len = (uint32_t)(len + PSC_SEAL_TAG_LEN);
	psc_seal_header_write(&h, out);
	uint8_t nonce[PSC_SEAL_NONCE_LEN];
	make_nonce(&s->key, h.seq, nonce);
	int n1 = 0, n2 = 0, ok;
	EVP_CIPHER_CTX *c = s->key.ctx;
	ok =
	    EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) == 1 &&
	    EVP_EncryptUpdate(c, NULL, &n1, out, PSC_SEAL_HEADER_LEN) == 1 &&
	    (len == 0 || EVP_EncryptUpdate(c, out + PSC_SEAL_HEADER_LEN, &n1, pt, (int)len) == 1) &&
	    EVP_EncryptFinal_ex(c, out + PSC_SEAL_HEADER_LEN + (len ? (size_t)n1 : 0), &n2) == 1 &&
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, PSC_SEAL_TAG_LEN,
				out + PSC_SEAL_HEADER_LEN + len) == 1;
	if (!ok) {
		OPENSSL_cleanse(out, body);
		return psc_err_set(err, PSC_E_CRYPTO, "AES-256-GCM encryption failed");
	}
	/* The seq is spent even if signing fails below: never reuse a nonce. */
	s->seq++;
	*out_len = body;
	if (!sign)
		return PSC_OK;
	size_t sl = sig_max;
	if (sign_frame(sign_key, out, body, out + body + 2, &sl) != PSC_OK || sl == 0 ||
	    sl > sig_max) {
		OPENSSL_cleanse(out, body);
		return psc_err_set(err, PSC_E_CRYPTO, "signing the group message failed");
	}
	out[body] = (uint8_t)(sl >> 8);
	out[body + 1] = (uint8_t)sl;
	*out_len = body + 2 + sl;
	return PSC_OK;
}

/* --- receiving ---------------------------------------------------------- */

/* A ring of 17 words: seq s lives in word (s / 64) % 17, bit s % 64. The 16
 * words before top's word plus top's word always cover top-1023..top. */
psc_rc psc_seal_window_check(const psc_seal_window *w, uint64_t seq)
{
	if (!w->used || seq > w->top)
		return PSC_OK;
	if (w->top - seq >= PSC_SEAL_WINDOW)
		return PSC_E_PEER_SEAL_REPLAY;
	uint64_t word = w->bits[(seq / 64) % PSC_SEAL_WINDOW_WORDS];
	return (word >> (seq % 64)) & 1 ? PSC_E_PEER_SEAL_REPLAY : PSC_OK;
}

void psc_seal_window_mark(psc_seal_window *w, uint64_t seq)
{
	if (!w->used) {
		memset(w->bits, 0, sizeof(w->bits));
		w->used = 1;
		w->top = seq;
	} else if (seq > w->top) {
		uint64_t from = w->top / 64, to = seq / 64;
		uint64_t d = to - from;
		if (d > PSC_SEAL_WINDOW_WORDS)
			d = PSC_SEAL_WINDOW_WORDS;
		for (uint64_t i = 1; i <= d; i++)
			w->bits[(from + i) % PSC_SEAL_WINDOW_WORDS] = 0;
		w->top = seq;
	}
	w->bits[(seq / 64) % PSC_SEAL_WINDOW_WORDS] |= UINT64_C(1) << (seq % 64);
}

psc_rc psc_seal_decrypt(psc_seal_key *k, const psc_seal_frame *f, uint8_t *out, size_t cap,
			size_t *out_len, psc_err *err)
{
	size_t n = f->h.ct_len - PSC_SEAL_TAG_LEN;
	if (cap < n || (!out && n))
		return psc_err_set(err, PSC_E_PEER_SEAL_BUFFER,
				   "group message holds %zu bytes, buffer %zu", n, cap);
	uint8_t nonce[PSC_SEAL_NONCE_LEN];
	make_nonce(k, f->h.seq, nonce);
	uint8_t tag[PSC_SEAL_TAG_LEN];
	memcpy(tag, f->ct + n, PSC_SEAL_TAG_LEN);
	int n1 = 0, n2 = 0;
	EVP_CIPHER_CTX *c = k->ctx;
	if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(c, NULL, &n1, f->header, PSC_SEAL_HEADER_LEN) != 1 ||
	    (n && EVP_DecryptUpdate(c, out, &n1, f->ct, (int)n) != 1) ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, PSC_SEAL_TAG_LEN, tag) != 1)
		return psc_err_set(err, PSC_E_CRYPTO, "AES-256-GCM decryption failed");
	if (EVP_DecryptFinal_ex(c, out ? out + (n ? (size_t)n1 : 0) : tag, &n2) != 1) {
		if (n)
			OPENSSL_cleanse(out, n);
		char hex[33];
		proto_id_hex(f->h.sender, hex);
		return psc_err_set(err, PSC_E_PEER_SEAL_BAD_TAG,
				   "group message from %s (epoch %llu, seq %llu) does not "
				   "authenticate: tampered, or sealed with another key",
				   hex, (unsigned long long)f->h.epoch,
				   (unsigned long long)f->h.seq);
	}
	*out_len = n;
	return PSC_OK;
}

psc_rc psc_seal_verify(const psc_seal_frame *f, EVP_PKEY *pub, psc_err *err)
{
	if (!f->sig)
		return psc_err_set(err, PSC_E_PEER_SEAL_UNSIGNED, "group message is not signed");
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = m && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pub) == 1 &&
		 EVP_DigestVerifyUpdate(m, PSC_SEAL_SIG_LABEL, strlen(PSC_SEAL_SIG_LABEL)) == 1 &&
		 EVP_DigestVerifyUpdate(m, f->header, PSC_SEAL_HEADER_LEN + f->h.ct_len) == 1 &&
		 EVP_DigestVerifyFinal(m, f->sig, f->sig_len) == 1;
	EVP_MD_CTX_free(m);
	if (!ok) {
		char hex[33];
		proto_id_hex(f->h.sender, hex);
		return psc_err_set(err, PSC_E_PEER_SEAL_BAD_SIGNATURE,
				   "group message claiming sender %s: signature does not verify "
				   "with that sender's certificate",
				   hex);
	}
	return PSC_OK;
}

psc_rc psc_seal_open_with_secret(const uint8_t secret[PSC_EPOCH_SECRET_LEN], const uint8_t *frame,
				 size_t len, uint8_t *out, size_t cap, size_t *out_len,
				 psc_seal_header *h, psc_err *err)
{
	psc_seal_frame f;
	psc_rc rc = psc_seal_parse(frame, len, &f, err);
	if (rc != PSC_OK)
		return rc;
	psc_seal_key k;
	rc = psc_seal_key_init(&k, 0, secret, f.h.psc_id, f.h.epoch, f.h.sender, f.h.incarnation);
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "deriving the sender key failed");
	rc = psc_seal_decrypt(&k, &f, out, cap, out_len, err);
	psc_seal_key_clear(&k);
	if (rc == PSC_OK && h)
		*h = f.h;
	return rc;
}

/* --- psc_peer_msg: the above bound to a psc_peer's epochs ---------------- */

#define MSG_MAX_RECV 1024    /* receive states (sender incarnations) kept at once */
#define MSG_SWEEP_EVERY 1024 /* opened messages between sweeps of ended epochs */

typedef struct send_state {
	psc_seal_sender s; /* s.key.ctx == NULL: unused slot */
} send_state;

typedef struct recv_state {
	uint8_t psc_id[PSC_PSC_ID_LEN];
	uint64_t epoch;
	uint8_t sender[PSC_NODE_ID_LEN];
	uint8_t incarnation[PSC_SEAL_INC_LEN];
	psc_seal_key key;
	psc_seal_window win;
	uint64_t last_used; /* m->tick at the last accepted message (LRU) */
	/* Signed PSCs: the sender's public key, from the certificate looked up
	 * for this incarnation's first message (a new epoch or incarnation
	 * looks it up again). */
	EVP_PKEY *pub;
} recv_state;

struct psc_peer_msg {
	psc_peer *peer; /* borrowed */
	psc_peer_sender_cert_fn sender_cert;
	void *user;
	send_state *send;
	size_t n_send, cap_send;
	recv_state *recv;
	size_t n_recv;
	uint64_t tick;
};

psc_rc psc_peer_msg_new(psc_peer_msg **out, psc_peer *peer, const psc_peer_msg_config *cfg,
			psc_err *err)
{
	if (!out || !peer)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_msg_new: no peer");
	*out = NULL;
	psc_peer_msg *m = calloc(1, sizeof(*m));
	if (m)
		m->recv = calloc(MSG_MAX_RECV, sizeof(*m->recv));
	if (!m || !m->recv) {
		free(m);
		return psc_err_set(err, PSC_E_NOMEM, "psc_peer_msg_new: out of memory");
	}
	m->peer = peer;
	if (cfg) {
		m->sender_cert = cfg->sender_cert;
		m->user = cfg->user;
	}
	*out = m;
	return PSC_OK;
}

static void recv_drop(psc_peer_msg *m, size_t i)
{
	psc_seal_key_clear(&m->recv[i].key);
	EVP_PKEY_free(m->recv[i].pub);
	m->recv[i] = m->recv[m->n_recv - 1];
	memset(&m->recv[m->n_recv - 1], 0, sizeof(m->recv[0]));
	m->n_recv--;
}

void psc_peer_msg_free(psc_peer_msg **mp)
{
	if (!mp || !*mp)
		return;
	psc_peer_msg *m = *mp;
	for (size_t i = 0; i < m->n_send; i++)
		psc_seal_sender_clear(&m->send[i].s);
	free(m->send);
	while (m->n_recv)
		recv_drop(m, m->n_recv - 1);
	free(m->recv);
	OPENSSL_cleanse(m, sizeof(*m));
	free(m);
	*mp = NULL;
}

static send_state *find_send(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN])
{
	for (size_t i = 0; i < m->n_send; i++)
		if (memcmp(m->send[i].s.h.psc_id, psc_id, PSC_PSC_ID_LEN) == 0)
			return &m->send[i];
	return NULL;
}

static void sweep_ended(psc_peer_msg *m);

/* The send state for the PSC's current epoch, set up (new random
 * incarnation, seq 0) when the epoch changed or the key is exhausted. */
static psc_rc send_state_for(psc_peer_msg *m, const psc_entry *e, send_state **out, psc_err *err)
{
	char hex[33];
	proto_id_hex(e->id, hex);
	uint8_t secret[PSC_EPOCH_SECRET_LEN];
	uint64_t epoch = 0;
	psc_rc rc = psc_sdk_epoch_secret(m->peer, e->id, 0, &epoch, secret);
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "PSC %s: no current epoch to seal with", hex);
	send_state *st = find_send(m, e->id);
	int sign = (e->flags & PSC_FLAG_SENDER_SIGNATURES) != 0;
	if (st && st->s.h.epoch == epoch && st->s.seq < PSC_SEAL_SEQ_LIMIT &&
	    ((st->s.h.flags & PSC_SEAL_FLAG_SIGNED) != 0) == sign) {
		OPENSSL_cleanse(secret, sizeof(secret));
		*out = st;
		return PSC_OK;
	}
	/* A new epoch may have ended other keys too (of this or other PSCs):
	 * wipe them first. That may remove st itself. */
	if (!st || st->s.h.epoch != epoch) {
		sweep_ended(m);
		st = find_send(m, e->id);
	}
	if (!st) {
		if (m->n_send == m->cap_send) {
			size_t cap = m->cap_send ? 2 * m->cap_send : 4;
			send_state *v = realloc(m->send, cap * sizeof(*v));
			if (!v) {
				OPENSSL_cleanse(secret, sizeof(secret));
				return psc_err_set(err, PSC_E_NOMEM, "out of memory");
			}
			m->send = v;
			m->cap_send = cap;
		}
		st = &m->send[m->n_send++];
		memset(st, 0, sizeof(*st));
	}
	/* Exhausted or set up with other flags: wipe, then a fresh incarnation. */
	psc_seal_sender_clear(&st->s);
	rc = psc_seal_sender_init(&st->s, secret, e->id, epoch, m->peer->node_id, NULL, sign);
	OPENSSL_cleanse(secret, sizeof(secret));
	if (rc != PSC_OK) {
		/* Keep the PSC ID so find_send() still finds the (unusable) slot. */
		memcpy(st->s.h.psc_id, e->id, PSC_PSC_ID_LEN);
		return psc_err_set(err, rc, "PSC %s: deriving the sender key failed", hex);
	}
	*out = st;
	return PSC_OK;
}

psc_rc psc_peer_seal(psc_peer_msg *m, const uint8_t psc_id[PSC_PEER_ID_LEN],
		     const uint8_t *plaintext, size_t len, uint8_t *out, size_t cap,
		     size_t *out_len, psc_err *err)
{
	if (!m || !psc_id || (!plaintext && len) || !out || !out_len)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_seal: missing argument");
	psc_store_expire(m->peer->store, psc_sdk_mono_ms());
	const psc_entry *e = psc_store_find(m->peer->store, psc_id);
	if (!e) {
		char hex[33];
		proto_id_hex(psc_id, hex);
		return psc_err_set(err, PSC_E_PEER_UNKNOWN_PSC, "PSC %s is not held by this peer",
				   hex);
	}
	send_state *st = NULL;
	psc_rc rc = send_state_for(m, e, &st, err);
	if (rc != PSC_OK)
		return rc;
	return psc_seal_sender_seal(&st->s, m->peer->key, plaintext, len, out, cap, out_len, err);
}

/* Drops receive states whose epoch this peer no longer accepts (wiping their
 * keys), so superseded keys do not linger until eviction. */
static void sweep_ended(psc_peer_msg *m)
{
	int64_t now = psc_sdk_mono_ms();
	for (size_t i = m->n_recv; i-- > 0;) {
		const recv_state *r = &m->recv[i];
		const psc_entry *e = psc_store_find(m->peer->store, r->psc_id);
		int held =
		    e && ((e->cur.held && e->cur.epoch == r->epoch) ||
			  (e->prev.held && e->prev.epoch == r->epoch && e->prev_expiry > now));
		if (!held)
			recv_drop(m, i);
	}
	/* Send keys of PSCs no longer held, or of an epoch no longer current. */
	for (size_t i = m->n_send; i-- > 0;) {
		const psc_entry *e = psc_store_find(m->peer->store, m->send[i].s.h.psc_id);
		if (e && e->cur.held && e->cur.epoch == m->send[i].s.h.epoch)
			continue;
		psc_seal_sender_clear(&m->send[i].s);
		m->send[i] = m->send[m->n_send - 1];
		memset(&m->send[m->n_send - 1], 0, sizeof(m->send[0]));
		m->n_send--;
	}
}

static void drop_epoch(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch)
{
	for (size_t i = m->n_recv; i-- > 0;)
		if (m->recv[i].epoch == epoch &&
		    memcmp(m->recv[i].psc_id, psc_id, PSC_PSC_ID_LEN) == 0)
			recv_drop(m, i);
}

static recv_state *find_recv(psc_peer_msg *m, const psc_seal_header *h)
{
	for (size_t i = 0; i < m->n_recv; i++) {
		recv_state *r = &m->recv[i];
		if (r->epoch == h->epoch && memcmp(r->sender, h->sender, PSC_NODE_ID_LEN) == 0 &&
		    memcmp(r->incarnation, h->incarnation, PSC_SEAL_INC_LEN) == 0 &&
		    memcmp(r->psc_id, h->psc_id, PSC_PSC_ID_LEN) == 0)
			return r;
	}
	return NULL;
}

/* Why an epoch is not accepted: older than what we hold (stale), or newer. */
static psc_rc epoch_refused(const psc_entry *e, const psc_seal_header *h, psc_err *err)
{
	char hex[33];
	proto_id_hex(h->psc_id, hex);
	if (e->cur.held && h->epoch > e->cur.epoch)
		return psc_err_set(err, PSC_E_PEER_SEAL_FUTURE_EPOCH,
				   "PSC %s: message under epoch %llu, this peer holds %llu "
				   "(a Refresh is on its way, or catch up)",
				   hex, (unsigned long long)h->epoch,
				   (unsigned long long)e->cur.epoch);
	return psc_err_set(err, PSC_E_PEER_SEAL_STALE_EPOCH,
			   "PSC %s: message under epoch %llu is no longer accepted (current %llu; "
			   "a removal rekey or an expired grace period ended it, or this peer "
			   "never held it)",
			   hex, (unsigned long long)h->epoch, (unsigned long long)e->cur.epoch);
}

/* Looks up the sender's certificate, checks its Node-ID binding and verifies
 * the frame; on PSC_OK *pub_out holds a reference to the key (caller frees). */
static psc_rc verify_sender(psc_peer_msg *m, const psc_seal_frame *f, EVP_PKEY **pub_out,
			    psc_err *err)
{
	*pub_out = NULL;
	char hex[33];
	proto_id_hex(f->h.sender, hex);
	if (!m->sender_cert)
		return psc_err_set(err, PSC_E_PEER_SEAL_NO_CERT,
				   "signed group message from %s: no sender_cert lookup configured",
				   hex);
	uint8_t *der = malloc(PSC_PEER_MSG_CERT_MAX);
	if (!der)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	size_t len = 0;
	psc_rc rc =
	    m->sender_cert(m->user, f->h.psc_id, f->h.sender, der, PSC_PEER_MSG_CERT_MAX, &len);
	X509 *x = NULL;
	if (rc != PSC_OK || len == 0 || len > PSC_PEER_MSG_CERT_MAX) {
		free(der);
		return psc_err_set(err, PSC_E_PEER_SEAL_NO_CERT,
				   "signed group message from %s: no certificate for that sender "
				   "(sender_cert: %s)",
				   hex, rc != PSC_OK ? psc_strerror(rc) : "empty");
	}
	psc_err e2;
	rc = proto_cert_parse(der, len, &x, &e2);
	free(der);
	uint8_t bound[PSC_NODE_ID_LEN];
	if (rc == PSC_OK)
		rc = proto_cert_node_id(x, m->peer->overlay, bound, &e2);
	if (rc == PSC_OK && memcmp(bound, f->h.sender, PSC_NODE_ID_LEN) != 0) {
		rc = PSC_E_PEER_SEAL_NO_CERT;
		psc_err_set(&e2, rc, "it binds another Node-ID");
	}
	if (rc != PSC_OK) {
		X509_free(x);
		return psc_err_set(err, PSC_E_PEER_SEAL_NO_CERT,
				   "signed group message from %s: the certificate for it is not "
				   "usable (%s)",
				   hex, psc_err_text(&e2));
	}
	EVP_PKEY *pub = X509_get0_pubkey(x);
	rc = pub ? psc_seal_verify(f, pub, err)
		 : psc_err_set(err, PSC_E_PEER_SEAL_NO_CERT,
			       "signed group message from %s: certificate has no usable key", hex);
	if (rc == PSC_OK && EVP_PKEY_up_ref(pub) == 1)
		*pub_out = pub;
	X509_free(x);
	return rc;
}

psc_rc psc_peer_open(psc_peer_msg *m, const uint8_t *frame, size_t len, uint8_t *out, size_t cap,
		     size_t *out_len, psc_peer_msg_info *info, psc_err *err)
{
	if (!m || !frame || !out_len)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_open: missing argument");
	psc_seal_frame f;
	psc_rc rc = psc_seal_parse(frame, len, &f, err);
	if (rc != PSC_OK)
		return rc;
	char hex[33];
	proto_id_hex(f.h.psc_id, hex);
	psc_store_expire(m->peer->store, psc_sdk_mono_ms());
	const psc_entry *e = psc_store_find(m->peer->store, f.h.psc_id);
	if (!e)
		return psc_err_set(err, PSC_E_PEER_UNKNOWN_PSC,
				   "group message for PSC %s, which this peer does not hold", hex);
	int need_sig = (e->flags & PSC_FLAG_SENDER_SIGNATURES) != 0;
	if (need_sig && !(f.h.flags & PSC_SEAL_FLAG_SIGNED))
		return psc_err_set(err, PSC_E_PEER_SEAL_UNSIGNED,
				   "PSC %s requires sender signatures; this message has none", hex);
	if (!need_sig && (f.h.flags & PSC_SEAL_FLAG_SIGNED))
		return psc_err_set(err, PSC_E_PEER_SEAL_MALFORMED,
				   "PSC %s has no sender signatures; a signed message is malformed",
				   hex);
	uint8_t secret[PSC_EPOCH_SECRET_LEN];
	rc = psc_sdk_epoch_secret(m->peer, f.h.psc_id, f.h.epoch, NULL, secret);
	if (rc != PSC_OK) {
		/* Keys of this epoch, no longer accepted, go now (only states
		 * matching it: junk frames must not cost a full sweep). */
		drop_epoch(m, f.h.psc_id, f.h.epoch);
		return rc == PSC_E_PEER_NO_EPOCH
			   ? epoch_refused(e, &f.h, err)
			   : psc_err_set(err, rc, "PSC %s: %s", hex, psc_strerror(rc));
	}
	recv_state *r = find_recv(m, &f.h);
	psc_seal_key fresh = {0};
	psc_seal_key *k;
	if (r) {
		rc = psc_seal_window_check(&r->win, f.h.seq);
		if (rc != PSC_OK) {
			OPENSSL_cleanse(secret, sizeof(secret));
			proto_id_hex(f.h.sender, hex);
			return psc_err_set(err, rc,
					   "group message from %s seq %llu: replayed, or older "
					   "than the %d-message window (newest seen %llu)",
					   hex, (unsigned long long)f.h.seq, PSC_SEAL_WINDOW,
					   (unsigned long long)r->win.top);
		}
		k = &r->key;
	} else {
		/* Derived keys are kept only once a message authenticated, so
		 * junk cannot fill the cache. */
		rc = psc_seal_key_init(&fresh, 0, secret, f.h.psc_id, f.h.epoch, f.h.sender,
				       f.h.incarnation);
		if (rc != PSC_OK) {
			OPENSSL_cleanse(secret, sizeof(secret));
			return psc_err_set(err, rc, "deriving the sender key failed");
		}
		k = &fresh;
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	rc = psc_seal_decrypt(k, &f, out, cap, out_len, err);
	EVP_PKEY *pub = NULL; /* a new reference to keep, if looked up now */
	if (rc == PSC_OK && f.sig) {
		if (r && r->pub)
			rc = psc_seal_verify(&f, r->pub, err);
		else
			rc = verify_sender(m, &f, &pub, err);
	}
	if (rc != PSC_OK) {
		if (rc != PSC_E_PEER_SEAL_BUFFER && out && cap)
			OPENSSL_cleanse(out, f.h.ct_len - PSC_SEAL_TAG_LEN <= cap
						 ? f.h.ct_len - PSC_SEAL_TAG_LEN
						 : cap);
		psc_seal_key_clear(&fresh);
		EVP_PKEY_free(pub);
		return rc;
	}
	if (!r) {
		if (m->n_recv == MSG_MAX_RECV)
			sweep_ended(m);
		if (m->n_recv == MSG_MAX_RECV) {
			/* Evict the least recently used sender: its replay window is
			 * lost (docs/protocol.md §13.6). */
			size_t lru = 0;
			for (size_t i = 1; i < m->n_recv; i++)
				if (m->recv[i].last_used < m->recv[lru].last_used)
					lru = i;
			recv_drop(m, lru);
		}
		r = &m->recv[m->n_recv++];
		memset(r, 0, sizeof(*r));
		memcpy(r->psc_id, f.h.psc_id, PSC_PSC_ID_LEN);
		r->epoch = f.h.epoch;
		memcpy(r->sender, f.h.sender, PSC_NODE_ID_LEN);
		memcpy(r->incarnation, f.h.incarnation, PSC_SEAL_INC_LEN);
		r->key = fresh; /* ownership moves */
	}
	if (pub && !r->pub)
		r->pub = pub; /* ownership moves */
	else
		EVP_PKEY_free(pub);
	psc_seal_window_mark(&r->win, f.h.seq);
	r->last_used = ++m->tick;
	/* Receive keys of epochs that ended (rekey, grace expiry) are wiped at
	 * the latest after MSG_SWEEP_EVERY messages, or at our next new epoch. */
	if (m->tick % MSG_SWEEP_EVERY == 0)
		sweep_ended(m);
	if (info) {
		memset(info, 0, sizeof(*info));
		memcpy(info->psc_id, f.h.psc_id, PSC_PSC_ID_LEN);
		info->epoch = f.h.epoch;
		memcpy(info->sender, f.h.sender, PSC_NODE_ID_LEN);
		info->sender_verified = f.sig != NULL;
		info->seq = f.h.seq;
	}
	return PSC_OK;
}

/* --- test hooks ---------------------------------------------------------- */

psc_rc psc_seal_test_set_seq(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t seq)
{
	send_state *st = m ? find_send(m, psc_id) : NULL;
	if (!st || !st->s.key.ctx)
		return PSC_E_INVALID_ARG;
	st->s.seq = seq;
	return PSC_OK;
}

psc_rc psc_seal_test_incarnation(psc_peer_msg *m, const uint8_t psc_id[PSC_PSC_ID_LEN],
				 uint8_t out[PSC_SEAL_INC_LEN])
{
	send_state *st = m ? find_send(m, psc_id) : NULL;
	if (!st || !st->s.key.ctx)
		return PSC_E_INVALID_ARG;
	memcpy(out, st->s.h.incarnation, PSC_SEAL_INC_LEN);
	return PSC_OK;
}

size_t psc_seal_test_recv_count(const psc_peer_msg *m)
{
	return m ? m->n_recv : 0;
}

size_t psc_seal_test_send_count(const psc_peer_msg *m)
{
	return m ? m->n_send : 0;
}
