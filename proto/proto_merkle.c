/*
 * proto_merkle — RFC 9162 Merkle tree hashing (see proto_merkle.h).
 *
 * The tree is the RFC's left-balanced tree: the left subtree of n > 1 leaves holds
 * the largest power of two strictly below n. Both the recursive functions and the
 * accumulator follow that definition; tests cross-check them.
 * Never: allocate beyond OpenSSL's digest context, or recurse deeper than 64 levels
 * (each level halves the range).
 */
#include "proto_merkle.h"

#include <stdlib.h>

#include <openssl/evp.h>
#include <string.h>

struct proto_merkle_hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

psc_rc proto_merkle_hasher_new(proto_merkle_hasher **out)
{
	if (!out)
		return PSC_E_INVALID_ARG;
	*out = NULL;
	proto_merkle_hasher *h = calloc(1, sizeof(*h));
	if (!h)
		return PSC_E_NOMEM;
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	if (!h->md || !h->ctx) {
		proto_merkle_hasher_free(&h);
		return PSC_E_CRYPTO;
	}
	*out = h;
	return PSC_OK;
}

void proto_merkle_hasher_free(proto_merkle_hasher **h)
{
	if (!h || !*h)
		return;
	EVP_MD_CTX_free((*h)->ctx);
	EVP_MD_free((*h)->md);
	free(*h);
	*h = NULL;
}

/* Hashes [prefix ||] a || b (prefix < 0: none), with h's context when given. A
 * digest failure can only be an allocation failure inside OpenSSL; the output is
 * then all-zero, which never equals a real hash, so every comparison against it
 * fails closed. */
static void hash3(proto_merkle_hasher *h, int prefix, const uint8_t *a, size_t alen,
		  const uint8_t *b, size_t blen, uint8_t out[32])
{
	EVP_MD_CTX *ctx = h ? h->ctx : EVP_MD_CTX_new();
	const EVP_MD *md = h ? h->md : EVP_sha256();
	uint8_t pre = (uint8_t)prefix;
	unsigned int outlen = 0;
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
		 (prefix < 0 || EVP_DigestUpdate(ctx, &pre, 1) == 1) &&
		 (alen == 0 || EVP_DigestUpdate(ctx, a, alen) == 1) &&
		 (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
		 EVP_DigestFinal_ex(ctx, out, &outlen) == 1 && outlen == 32;
	if (!h)
		EVP_MD_CTX_free(ctx);
	if (!ok)
		memset(out, 0, 32);
}

void proto_merkle_leaf(const uint8_t *data, size_t len, uint8_t out[32])
{
	hash3(NULL, 0x00, data, data ? len : 0, NULL, 0, out);
}

void proto_merkle_node(const uint8_t left[32], const uint8_t right[32], uint8_t out[32])
{
	hash3(NULL, 0x01, left, 32, right, 32, out);
}

void proto_merkle_leaf_h(proto_merkle_hasher *h, const uint8_t *data, size_t len,
			 uint8_t out[32])
{
	hash3(h, 0x00, data, data ? len : 0, NULL, 0, out);
}

void proto_merkle_node_h(proto_merkle_hasher *h, const uint8_t left[32], const uint8_t right[32],
			 uint8_t out[32])
{
	hash3(h, 0x01, left, 32, right, 32, out);
}

void proto_merkle_sha256_h(proto_merkle_hasher *h, const uint8_t *data, size_t len,
			   uint8_t out[32])
{
	hash3(h, -1, data, data ? len : 0, NULL, 0, out);
}

/* Largest power of two strictly less than n (n >= 2). */
static size_t split_point(size_t n)
{
	size_t k = 1;
	while (k << 1 < n)
		k <<= 1;
	return k;
}

static void mth(const uint8_t (*leaves)[32], size_t n, uint8_t out[32])
{
	if (n == 1) {
		memcpy(out, leaves[0], 32);
		return;
	}
	size_t k = split_point(n);
	uint8_t l[32], r[32];
	mth(leaves, k, l);
	mth(leaves + k, n - k, r);
	proto_merkle_node(l, r, out);
}

psc_rc proto_merkle_root(const uint8_t (*leaves)[32], size_t n, uint8_t out[32])
{
	if (!out || (n > 0 && !leaves))
		return PSC_E_INVALID_ARG;
	if (n == 0) {
		unsigned int outlen = 0;
		if (EVP_Digest("", 0, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != 32)
			return PSC_E_CRYPTO;
		return PSC_OK;
	}
	mth(leaves, n, out);
	return PSC_OK;
}

/* RFC 9162 §2.1.3.1: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k,
 * else PATH(m - k, D[k:n]) : MTH(D[0:k]). The sub-path comes first (bottom-up). */
static psc_rc path_rec(const uint8_t (*leaves)[32], size_t n, size_t m, uint8_t (*path)[32],
		       size_t max_path, size_t *len)
{
	if (n == 1)
		return PSC_OK;
	size_t k = split_point(n);
	psc_rc rc;
	uint8_t sib[32];
	if (m < k) {
		rc = path_rec(leaves, k, m, path, max_path, len);
		mth(leaves + k, n - k, sib);
	} else {
		rc = path_rec(leaves + k, n - k, m - k, path, max_path, len);
		mth(leaves, k, sib);
	}
	if (rc != PSC_OK)
		return rc;
	if (*len >= max_path)
		return PSC_E_TOO_LARGE;
	memcpy(path[*len], sib, 32);
	(*len)++;
	return PSC_OK;
}

psc_rc proto_merkle_path(const uint8_t (*leaves)[32], size_t n, size_t index,
			 uint8_t (*path)[32], size_t max_path, size_t *path_len)
{
	if (!leaves || !path_len || index >= n || (max_path > 0 && !path))
		return PSC_E_INVALID_ARG;
	*path_len = 0;
	psc_rc rc = path_rec(leaves, n, index, path, max_path, path_len);
	if (rc != PSC_OK)
		*path_len = 0;
	return rc;
}

psc_rc proto_merkle_verify_path(const uint8_t leaf[32], size_t index, size_t n,
				const uint8_t (*path)[32], size_t path_len, const uint8_t root[32])
{
	if (!leaf || !root || (path_len > 0 && !path) || index >= n)
		return PSC_E_BAD_SIGNATURE;
	size_t fn = index, sn = n - 1;
	uint8_t r[32];
	memcpy(r, leaf, 32);
	for (size_t i = 0; i < path_len; i++) {
		if (sn == 0)
			return PSC_E_BAD_SIGNATURE;
		if ((fn & 1) || fn == sn) {
			proto_merkle_node(path[i], r, r);
			if (!(fn & 1)) {
				while (fn != 0 && !(fn & 1)) {
					fn >>= 1;
					sn >>= 1;
				}
			}
		} else {
			proto_merkle_node(r, path[i], r);
		}
		fn >>= 1;
		sn >>= 1;
	}
	/* CRYPTO_memcmp: the root is public, but a constant-time compare costs nothing. */
	if (sn != 0 || CRYPTO_memcmp(r, root, 32) != 0)
		return PSC_E_BAD_SIGNATURE;
	return PSC_OK;
}

void proto_merkle_acc_init(proto_merkle_acc *acc)
{
	memset(acc, 0, sizeof(*acc));
}

psc_rc proto_merkle_acc_add(proto_merkle_acc *acc, const uint8_t leaf[32])
{
	return proto_merkle_acc_add_h(NULL, acc, leaf);
}

psc_rc proto_merkle_acc_add_h(proto_merkle_hasher *hs, proto_merkle_acc *acc,
			      const uint8_t leaf[32])
{
	if (!acc || !leaf)
		return PSC_E_INVALID_ARG;
	if (acc->n == UINT64_MAX)
		return PSC_E_TOO_LARGE;
	/* Each trailing one bit of n is a perfect subtree the new leaf completes. */
	uint8_t h[32];
	memcpy(h, leaf, 32);
	for (uint64_t size = acc->n; size & 1; size >>= 1)
		proto_merkle_node_h(hs, acc->stack[--acc->top], h, h);
	memcpy(acc->stack[acc->top++], h, 32);
	acc->n++;
	return PSC_OK;
}

void proto_merkle_acc_root(const proto_merkle_acc *acc, uint8_t out[32])
{
	if (acc->n == 0) {
		unsigned int outlen = 0;
		if (EVP_Digest("", 0, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != 32)
			memset(out, 0, 32);
		return;
	}
	/* Fold right to left: the smallest subtree is the deepest right child. */
	uint8_t h[32];
	memcpy(h, acc->stack[acc->top - 1], 32);
	for (unsigned i = acc->top - 1; i-- > 0;)
		proto_merkle_node(acc->stack[i], h, h);
	memcpy(out, h, 32);
}

uint64_t proto_merkle_acc_size(const proto_merkle_acc *acc)
{
	return acc->n;
}

/* ---- whole tree --------------------------------------------------------- */

struct proto_merkle_tree {
	size_t n_levels;
	size_t width[PROTO_MERKLE_MAX_PATH + 1]; /* nodes per level, leaves first */
	uint8_t (*level[PROTO_MERKLE_MAX_PATH + 1])[32];
};

psc_rc proto_merkle_tree_new(proto_merkle_tree **out, const uint8_t (*leaves)[32], size_t n)
{
	*out = NULL;
	if (n == 0 || !leaves)
		return PSC_E_INVALID_ARG;
	proto_merkle_tree *t = calloc(1, sizeof(*t));
	if (!t)
		return PSC_E_NOMEM;
	size_t w = n;
	for (size_t lv = 0;; lv++) {
		if (lv > PROTO_MERKLE_MAX_PATH) {
			proto_merkle_tree_free(&t);
			return PSC_E_TOO_LARGE;
		}
		t->level[lv] = malloc(w * 32);
		if (!t->level[lv]) {
			proto_merkle_tree_free(&t);
			return PSC_E_NOMEM;
		}
		t->width[lv] = w;
		t->n_levels = lv + 1;
		if (lv == 0) {
			memcpy(t->level[0], leaves, n * 32);
		} else {
			const uint8_t(*below)[32] = t->level[lv - 1];
			size_t bw = t->width[lv - 1];
			for (size_t i = 0; i < w; i++) {
				if (2 * i + 1 < bw)
					proto_merkle_node(below[2 * i], below[2 * i + 1], t->level[lv][i]);
				else /* unpaired last node: carried up unchanged (RFC 9162 shape) */
					memcpy(t->level[lv][i], below[2 * i], 32);
			}
		}
		if (w == 1)
			break;
		w = (w + 1) / 2;
	}
	*out = t;
	return PSC_OK;
}

void proto_merkle_tree_root(const proto_merkle_tree *t, uint8_t out[32])
{
	memcpy(out, t->level[t->n_levels - 1][0], 32);
}

psc_rc proto_merkle_tree_path(const proto_merkle_tree *t, size_t index, uint8_t (*path)[32],
			      size_t max_path, size_t *path_len)
{
	*path_len = 0;
	if (index >= t->width[0])
		return PSC_E_INVALID_ARG;
	for (size_t lv = 0; lv + 1 < t->n_levels; lv++, index /= 2) {
		size_t sib = index ^ 1;
		if (sib >= t->width[lv])
			continue; /* carried up: no sibling at this level */
		if (*path_len == max_path)
			return PSC_E_TOO_LARGE;
		memcpy(path[(*path_len)++], t->level[lv][sib], 32);
	}
	return PSC_OK;
}

void proto_merkle_tree_free(proto_merkle_tree **t)
{
	if (!t || !*t)
		return;
	for (size_t i = 0; i <= PROTO_MERKLE_MAX_PATH; i++)
		free((*t)->level[i]);
	free(*t);
	*t = NULL;
}
