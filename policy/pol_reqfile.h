/*
 * pol_reqfile — request and test files for psc-policy (and the unit tests).
 *
 * Owns: the YAML form of a pol_request (docs/policy.md "Request files"),
 * including rate history ("recent" events) replayed into a fresh pol_state,
 * and the test-file format (cases with an expected outcome and rules).
 * Never: used by the KMS on its hot path; the KMS builds pol_request itself.
 */
#ifndef POL_REQFILE_H
#define POL_REQFILE_H

#include "pol_policy.h"
#include "pol_yaml.h"

#define POL_RECENT_MAX 64
#define POL_TESTS_MAX 10000

typedef struct pol_recent {
	pol_action action;
	uint32_t count;
	int64_t ago; /* seconds before now */
} pol_recent;

/* A request with all the storage its pointers borrow. */
typedef struct pol_reqdoc {
	pol_request req;
	pol_psc psc;
	pol_peer invitee;
	pol_label labels[POL_LABELS_MAX];
	uint16_t suites[POL_ALGS_MAX];
	uint8_t wrap_algs[POL_ALGS_MAX];
	pol_recent recent[POL_RECENT_MAX];
	size_t n_recent;
} pol_reqdoc;

/* Parses a request mapping. Strings are borrowed from the document's arena. */
psc_rc pol_reqdoc_parse(const pol_ydoc *d, const pol_ynode *n, pol_reqdoc *out,
			psc_err *err) PSC_WUR;
psc_rc pol_reqdoc_load(pol_arena *a, const char *path, pol_reqdoc *out, psc_err *err) PSC_WUR;
/* A new state holding the request's "recent" events. Caller frees. */
psc_rc pol_reqdoc_state(const pol_reqdoc *r, pol_state **out) PSC_WUR;

typedef struct pol_testcase {
	const char *name;
	unsigned line, col;
	pol_reqdoc *req;
	pol_outcome expect;
	bool has_rules;
	const char **rules; /* expected deciding rule ids, any order */
	size_t n_rules;
} pol_testcase;

psc_rc pol_testfile_load(pol_arena *a, const char *path, pol_testcase **cases, size_t *n,
			 psc_err *err) PSC_WUR;

/* "2026-03-29T01:30:00Z", "...+02:00" or a plain integer (UTC seconds). */
bool pol_parse_time(const char *s, int64_t *out);

#endif
