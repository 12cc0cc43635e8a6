/*
 * pol_yaml — YAML text to a small, bounded node tree with source positions.
 *
 * Owns: the one place policy, request and test files meet libyaml; the arena
 * every loader allocates from; the limits on file size, nesting, node count
 * and scalar length; "file:line:col: ..." error formatting (1-based).
 * Never: accept anchors, aliases, explicit tags, several documents or duplicate
 * mapping keys; give a meaning to a node (that is the caller's job).
 */
#ifndef POL_YAML_H
#define POL_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

/* Arena: many small allocations, freed at once. */
typedef struct pol_arena pol_arena;
psc_rc pol_arena_new(pol_arena **out) PSC_WUR;
void pol_arena_free(pol_arena **a);
/* Zeroed memory; NULL on exhaustion. */
void *pol_arena_alloc(pol_arena *a, size_t n);
char *pol_arena_strndup(pol_arena *a, const char *s, size_t n);

typedef enum pol_ynode_kind { POL_Y_SCALAR, POL_Y_MAP, POL_Y_SEQ } pol_ynode_kind;

typedef struct pol_ynode pol_ynode;
struct pol_ynode {
	pol_ynode_kind kind;
	unsigned line, col; /* 1-based */
	bool plain;	    /* unquoted scalar (ints and bools must be plain) */
	const char *s;	    /* scalar text, NUL-terminated */
	size_t slen;
	size_t n;	   /* map: pairs; seq: items */
	pol_ynode **keys;  /* map keys (scalars) */
	pol_ynode **items; /* map values or sequence items */
};

typedef struct pol_ydoc {
	const char *file; /* name for messages (arena copy) */
	pol_ynode *root;
} pol_ydoc;

/* Parses one document. err: "file:line:col: what is wrong". */
psc_rc pol_yaml_parse(pol_arena *a, const char *buf, size_t len, const char *file, pol_ydoc *out,
		      psc_err *err) PSC_WUR;

/* Sets err to "file:line:col: <fmt>" and returns rc. */
psc_rc pol_yerr(psc_err *err, psc_rc rc, const char *file, const pol_ynode *at, const char *fmt,
		...) __attribute__((format(printf, 5, 6)));

/* Reads a whole file up to POL_FILE_MAX bytes. Caller frees *buf. */
psc_rc pol_read_file(const char *path, char **buf, size_t *len, psc_err *err) PSC_WUR;

/* Helpers for schema checks; each fails with a positioned message. */
const char *pol_ykind_name(pol_ynode_kind k);
psc_rc pol_yexpect(const pol_ydoc *d, const pol_ynode *n, pol_ynode_kind k, const char *what,
		   psc_err *err) PSC_WUR;
/* Map value for key, or NULL. */
const pol_ynode *pol_yget(const pol_ynode *map, const char *key);
/* Fails on any key of map that is not in the NULL-terminated list. */
psc_rc pol_yonly(const pol_ydoc *d, const pol_ynode *map, const char *what,
		 const char *const *allowed, psc_err *err) PSC_WUR;
/* Plain decimal integer in [lo, hi]. */
psc_rc pol_yint(const pol_ydoc *d, const pol_ynode *n, const char *what, int64_t lo, int64_t hi,
		int64_t *out, psc_err *err) PSC_WUR;
psc_rc pol_ybool(const pol_ydoc *d, const pol_ynode *n, const char *what, bool *out,
		 psc_err *err) PSC_WUR;
/* Any non-null scalar. */
psc_rc pol_ystr(const pol_ydoc *d, const pol_ynode *n, const char *what, const char **out,
		psc_err *err) PSC_WUR;
/* Hex bytes, exactly n of them; colons between byte pairs allowed. */
psc_rc pol_yhex(const pol_ydoc *d, const pol_ynode *node, const char *what, uint8_t *out, size_t n,
		psc_err *err) PSC_WUR;
/* Parses hex (with optional colons) into exactly n bytes; false if malformed. */
bool pol_parse_hex(const char *s, uint8_t *out, size_t n);

#endif
