/*
 * pol_policy — the public face of the PSC policy engine (DESIGN.md §6).
 *
 * Owns: loading a YAML policy into a compiled, immutable pol_policy; deciding
 * permit / deny / ask_owner for a request with an optional explain trace;
 * resolving per-PSC limits; the rate-counter state the KMS keeps between
 * decisions; hot reload (build, validate, swap).
 * Never: read the clock (the caller passes "now"), read TZ or call localtime(),
 * allocate or take locks while deciding, or let the owner override a forbid
 * (ask_owner is only ever the outcome when no forbid and no permit matched).
 *
 * A pol_policy may be shared read-only by any number of threads. A pol_state is
 * owned by one caller (the KMS event loop); it is not locked.
 * docs/policy.md documents the file format and the semantics.
 */
#ifndef POL_POLICY_H
#define POL_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_codes.h"
#include "psc_rc.h"

/* Named caps (docs/policy.md "Limits of the loader"). */
#define POL_FILE_MAX (1024 * 1024) /* bytes in one policy, request or test file */
#define POL_DEPTH_MAX 16	   /* nesting of YAML mappings and sequences */
#define POL_NODES_MAX 200000	   /* YAML nodes in one file */
#define POL_ITEMS_MAX 10000	   /* entries in one mapping or sequence */
#define POL_SCALAR_MAX 1024	   /* bytes in one YAML scalar */
#define POL_NAME_MAX 64		   /* rule ids, principal, group and set names */
#define POL_RATE_MAX 256	   /* largest rate.max (events kept per counter) */
#define POL_DECISION_RULES_MAX 8   /* rule ids a decision reports */
#define POL_LABELS_MAX 32	   /* labels on one PSC in a request */
#define POL_ALGS_MAX 16		   /* suites / wrap algorithms in a request or limit */
#define POL_REVISION_LEN 64	   /* hex SHA-256 of the policy bytes */

typedef enum pol_action {
	POL_ACT_INITIALIZE = 0,
	POL_ACT_ESTABLISH,
	POL_ACT_JOIN,
	POL_ACT_INVITE,
	POL_ACT_DESTROY,
	POL_ACT_REPORT_DEPARTURE,
	POL_ACT_COUNT
} pol_action;

typedef enum pol_outcome {
	POL_DENY = 0, /* zero value: an uninitialised decision denies */
	POL_PERMIT,
	POL_ASK_OWNER,
} pol_outcome;

/* "join" etc.; NULL for values out of range. */
const char *pol_action_name(pol_action a);
/* -1 if the name is not an action. */
int pol_action_from_name(const char *name);
const char *pol_outcome_name(pol_outcome o);

/* Certificate attributes of a peer. NULL strings mean "the certificate has none". */
typedef struct pol_peer {
	const char *subject_cn;
	const char *subject_ou;
	const char *subject_o;
	const char *issuer; /* one-line RFC 2253 form, as the KMS prints it */
	uint8_t node_id[PSC_NODE_ID_LEN];
	bool has_fingerprint;
	uint8_t fingerprint[PSC_HASH_LEN]; /* SHA-256 of the DER certificate */
} pol_peer;

typedef struct pol_label {
	const char *key;
	const char *value;
} pol_label;

/* The PSC a request is about (absent for initialize). */
typedef struct pol_psc {
	const char *name;
	const pol_label *labels;
	size_t n_labels;
	uint8_t owner_node_id[PSC_NODE_ID_LEN]; /* establish: the requester */
	uint32_t member_count; /* members now; establish: size of the initial list */
} pol_psc;

/*
 * One request. All pointers are borrowed for the duration of pol_decide().
 * suites / wrap_algs: what the requester offers (n == 0: not checked).
 */
typedef struct pol_request {
	pol_action action;
	int64_t now; /* UTC seconds since the Unix epoch, from the caller */
	pol_peer requester;
	const pol_psc *psc;	 /* NULL for initialize */
	const pol_peer *invitee; /* invite only */
	const uint16_t *suites;
	size_t n_suites;
	const uint8_t *wrap_algs;
	size_t n_wrap_algs;
} pol_request;

typedef struct pol_decision {
	pol_outcome outcome;
	/* Ids of the rules that decided, sorted; borrowed from the policy. A
	 * built-in limit check reports "limit.max_members", "limit.suites" or
	 * "limit.wrap_algs". Empty when nothing matched (default deny). */
	const char *rules[POL_DECISION_RULES_MAX];
	size_t n_rules;
	bool rules_truncated;
	bool forbid_error;    /* denied because a forbid could not be evaluated */
	const char *revision; /* policy revision that decided; borrowed */
} pol_decision;

/*
 * Explain trace: caller-owned buffer filled with one line per rule considered
 * ("rule ID (effect): matched" or "... no: <first failing predicate, actual
 * value>" or "... error: <what was missing>"), then the decision line.
 * hits (optional, hits_len >= pol_policy_rule_count()): hits[i] set to 1 for
 * every rule index i that matched. Rule indices follow pol_policy_rule_id().
 */
typedef struct pol_explain {
	char *buf;
	size_t cap;
	size_t len;
	bool truncated;
	unsigned char *hits;
	size_t hits_len;
} pol_explain;

typedef struct pol_limits {
	uint32_t max_members;
	uint32_t refresh_min; /* seconds */
	uint32_t refresh_max;
	uint32_t refresh_default;
	uint16_t suites[POL_ALGS_MAX];
	size_t n_suites;
	uint8_t wrap_algs[POL_ALGS_MAX];
	size_t n_wrap_algs;
} pol_limits;

typedef struct pol_policy pol_policy;
typedef struct pol_state pol_state;

typedef struct pol_load_opts {
	const char *zoneinfo_dir; /* NULL: /usr/share/zoneinfo */
} pol_load_opts;

/*
 * Loads and compiles a policy. On failure *out is untouched and err says
 * "file:line:column: what is wrong" (1-based). opts may be NULL.
 */
psc_rc pol_policy_load_file(pol_policy **out, const char *path, const pol_load_opts *opts,
			    psc_err *err) PSC_WUR;
/* name is used in messages only ("<buffer>" if NULL). */
psc_rc pol_policy_load_buffer(pol_policy **out, const char *buf, size_t len, const char *name,
			      const pol_load_opts *opts, psc_err *err) PSC_WUR;
void pol_policy_free(pol_policy **pol);

/*
 * Reload for the KMS: loads path; only if it compiles, frees *active and puts
 * the new policy there. On failure *active stays the old policy and the error
 * is returned. The swap is a single pointer store by the owning thread.
 */
psc_rc pol_policy_reload(pol_policy **active, const char *path, const pol_load_opts *opts,
			 psc_err *err) PSC_WUR;

/* Hex SHA-256 of the policy bytes (64 chars, NUL-terminated). */
const char *pol_policy_revision(const pol_policy *pol);
size_t pol_policy_rule_count(const pol_policy *pol);
const char *pol_policy_rule_id(const pol_policy *pol, size_t i);
/* Warnings from the loader (rules that can never match, ...), "file:line:col: text". */
size_t pol_policy_warning_count(const pol_policy *pol);
const char *pol_policy_warning(const pol_policy *pol, size_t i);

/*
 * Decides a request. state may be NULL (rules with a rate condition then fail
 * to evaluate: a forbid denies, a permit is skipped). ex may be NULL.
 * Returns PSC_E_INVALID_ARG on NULL pol/req/out or an action out of range; the
 * decision is then deny. Never allocates.
 */
psc_rc pol_decide(const pol_policy *pol, const pol_state *state, const pol_request *req,
		  pol_decision *out, pol_explain *ex) PSC_WUR;

/*
 * Limits for a PSC: the defaults narrowed by every group the PSC matches (the
 * most restrictive value of each). PSC_E_POLICY_CONFLICT if they leave no
 * allowed value (err names the groups).
 */
psc_rc pol_limits_for(const pol_policy *pol, const char *psc_name, const pol_label *labels,
		      size_t n_labels, pol_limits *out, psc_err *err) PSC_WUR;

/*
 * Rate counters, keyed by requester Node-ID + action. capacity: how many
 * keys are kept (rounded up to a power of two, at least 64); when full, the
 * key idle longest is forgotten.
 */
psc_rc pol_state_new(pol_state **out, size_t capacity) PSC_WUR;
void pol_state_free(pol_state **st);
/* The KMS calls this after it carried out a permitted action. */
void pol_state_record(pol_state *st, const uint8_t node_id[PSC_NODE_ID_LEN], pol_action a,
		      int64_t now);
/* Events recorded for the key in (now - window, now]; at most POL_RATE_MAX. */
uint32_t pol_state_count(const pol_state *st, const uint8_t node_id[PSC_NODE_ID_LEN], pol_action a,
			 int64_t now, int64_t window);

#endif
