/*
 * proto_merkle — RFC 9162 (Certificate Transparency v2) Merkle tree hashing.
 *
 * Owns: leaf and node hashing with the RFC's domain separation (0x00 / 0x01
 * prefixes), the Merkle Tree Hash over n leaves, inclusion proofs and their
 * verification, and a streaming accumulator that keeps O(log n) subtree roots so
 * an audit log of millions of records is hashed without holding it in memory.
 * Used by the audit log (checkpoint roots) and by the wire protocol (one signed
 * root per batch of Refresh messages, one inclusion path per member).
 * Never: allocate, keep state between calls outside the caller's accumulator, or
 * accept a leaf index outside the tree. Depends only on OpenSSL.
 */
#ifndef PROTO_MERKLE_H
#define PROTO_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

#define PROTO_MERKLE_HASH_LEN 32
/* A tree of at most 2^64 leaves has inclusion paths of at most 64 hashes. */
#define PROTO_MERKLE_MAX_PATH 64

/* leaf hash = SHA-256(0x00 || data); node hash = SHA-256(0x01 || left || right) */
void proto_merkle_leaf(const uint8_t *data, size_t len, uint8_t out[32]);
void proto_merkle_node(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/*
 * Reusable hashing context. The functions above allocate an OpenSSL digest
 * context (and look SHA-256 up) per hash; hot loops such as the audit writer keep
 * one hasher instead (about twice as fast for short inputs). Same results; h may
 * be NULL (then they behave as the one-shot functions). Not thread-safe: one per
 * owner.
 */
typedef struct proto_merkle_hasher proto_merkle_hasher;
psc_rc proto_merkle_hasher_new(proto_merkle_hasher **out) PSC_WUR;
void proto_merkle_hasher_free(proto_merkle_hasher **h);
void proto_merkle_leaf_h(proto_merkle_hasher *h, const uint8_t *data, size_t len,
			 uint8_t out[32]);
void proto_merkle_node_h(proto_merkle_hasher *h, const uint8_t left[32], const uint8_t right[32],
			 uint8_t out[32]);
/* Plain SHA-256 (no RFC 9162 prefix), e.g. the audit chain's prev hash. */
void proto_merkle_sha256_h(proto_merkle_hasher *h, const uint8_t *data, size_t len,
			   uint8_t out[32]);

/* MTH over n leaf hashes (RFC 9162 §2.1.1); n == 0 -> SHA-256 of the empty string.
 * PSC_E_INVALID_ARG if leaves is NULL while n > 0 or out is NULL. */
psc_rc proto_merkle_root(const uint8_t (*leaves)[32], size_t n, uint8_t out[32]) PSC_WUR;

/*
 * Inclusion proof for leaf `index` in a tree of n leaves (RFC 9162 §2.1.3.1),
 * written bottom-up (path[0] is the sibling nearest the leaf). Costs O(n) hashes.
 * PSC_E_INVALID_ARG if index >= n; PSC_E_TOO_LARGE if max_path is too small
 * (PROTO_MERKLE_MAX_PATH always suffices).
 */
psc_rc proto_merkle_path(const uint8_t (*leaves)[32], size_t n, size_t index,
			 uint8_t (*path)[32], size_t max_path, size_t *path_len) PSC_WUR;

/* Verifies an inclusion proof per RFC 9162 §2.1.3.2; PSC_OK or PSC_E_BAD_SIGNATURE
 * (also for index >= n and for paths of the wrong length). */
psc_rc proto_merkle_verify_path(const uint8_t leaf[32], size_t index, size_t n,
				const uint8_t (*path)[32], size_t path_len,
				const uint8_t root[32]) PSC_WUR;

/*
 * Streaming builder: the compact range of a tree (one perfect-subtree root per set
 * bit of the leaf count). A plain value type: copy it to snapshot a tree, no
 * new/free needed. Fields are private to proto_merkle.c.
 */
typedef struct proto_merkle_acc {
	uint64_t n;                                  /* leaves added so far */
	unsigned top;                                /* subtree roots held */
	uint8_t stack[PROTO_MERKLE_MAX_PATH][32];    /* largest (leftmost) first */
} proto_merkle_acc;

void proto_merkle_acc_init(proto_merkle_acc *acc);
/* PSC_E_TOO_LARGE once 2^64 - 1 leaves are held (never in practice). */
psc_rc proto_merkle_acc_add(proto_merkle_acc *acc, const uint8_t leaf[32]) PSC_WUR;
/* Root of the leaves added so far (MTH); the accumulator is unchanged. */
psc_rc proto_merkle_acc_add_h(proto_merkle_hasher *h, proto_merkle_acc *acc,
			      const uint8_t leaf[32]) PSC_WUR;
void proto_merkle_acc_root(const proto_merkle_acc *acc, uint8_t out[32]);
uint64_t proto_merkle_acc_size(const proto_merkle_acc *acc);

/*
 * A whole tree built once, for producing many inclusion paths (a batch
 * signature needs one per message): O(n) hashes to build, O(log n) per path,
 * where proto_merkle_path costs O(n) per call. Same tree as RFC 9162: built
 * bottom-up, an unpaired last node is carried up unchanged.
 */
typedef struct proto_merkle_tree proto_merkle_tree;
psc_rc proto_merkle_tree_new(proto_merkle_tree **out, const uint8_t (*leaves)[32], size_t n)
	PSC_WUR;
void proto_merkle_tree_root(const proto_merkle_tree *t, uint8_t out[32]);
psc_rc proto_merkle_tree_path(const proto_merkle_tree *t, size_t index, uint8_t (*path)[32],
			      size_t max_path, size_t *path_len) PSC_WUR;
void proto_merkle_tree_free(proto_merkle_tree **t);

#endif
