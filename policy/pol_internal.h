/*
 * pol_internal — the compiled form of a policy, shared by the loader
 * (pol_load.c) and the evaluator (pol_eval.c). Not installed, not for the KMS.
 *
 * Owns: the layout of compiled principals, groups, sets and rules.
 * Never: hold anything the evaluator would have to allocate, lock or parse
 * at decision time; everything here is final once pol_policy_load_*() returns.
 */
#ifndef POL_INTERNAL_H
#define POL_INTERNAL_H

#include "pol_policy.h"
#include "pol_tz.h"
#include "pol_yaml.h"

#define POL_PRINCIPALS_MAX 256 /* the evaluator memoises principals per decision */
#define POL_GROUPS_MAX 256
#define POL_RULES_MAX 10000
#define POL_WARNINGS_MAX 200
#define POL_RULE_REFS_MAX 16 /* principals, invitee principals or groups one rule names */

enum pol_attr {
	POL_A_CN,
	POL_A_OU,
	POL_A_O,
	POL_A_ISSUER,
	POL_A_NODE_ID,
	POL_A_FINGERPRINT,
	POL_A_COUNT
};

enum pol_vtype { POL_T_STR, POL_T_NODE, POL_T_FP };
enum pol_mkind { POL_M_EQ, POL_M_IN, POL_M_PREFIX, POL_M_GLOB, POL_M_SET };
enum pol_effect { POL_E_FORBID, POL_E_PERMIT, POL_E_ASK_OWNER, POL_E_COUNT };

typedef struct pol_set {
	const char *name;
	enum pol_vtype type;
	size_t n;
	const char **strs;    /* POL_T_STR, sorted by strcmp */
	const uint8_t *bytes; /* POL_T_NODE / POL_T_FP, sorted, n * width */
	bool used;
	unsigned line, col;
} pol_set;

typedef struct pol_matcher {
	enum pol_mkind kind;
	enum pol_vtype type;
	size_t n;
	const char **strs; /* eq (n=1), in (sorted), prefix, glob */
	const size_t *lens;
	const uint8_t *bytes; /* binary eq / in, sorted */
	const pol_set *set;
	const char *text; /* "prefix 'ops-'" for explain traces */
} pol_matcher;

typedef struct pol_attr_match {
	enum pol_attr attr;
	pol_matcher m;
} pol_attr_match;

typedef struct pol_principal {
	const char *name;
	unsigned idx;
	size_t n;
	const pol_attr_match *m;
	bool used;
	bool never; /* references an empty set: can never match */
	unsigned line, col;
} pol_principal;

typedef struct pol_label_match {
	const char *key;
	pol_matcher m;
} pol_label_match;

typedef struct pol_pscmatch {
	bool has_name;
	pol_matcher name;
	size_t n_labels;
	const pol_label_match *labels;
} pol_pscmatch;

typedef struct pol_limits_spec {
	bool has_max_members, has_refresh_min, has_refresh_max, has_refresh_default;
	bool has_suites, has_wrap;
	pol_limits v;
} pol_limits_spec;

typedef struct pol_group {
	const char *name;
	unsigned idx;
	pol_pscmatch psc;
	pol_limits_spec limits;
	bool used;
	unsigned line, col;
} pol_group;

typedef struct pol_window {
	const pol_tz *tz;
	uint8_t days;	   /* bit 0 = Monday ... bit 6 = Sunday */
	uint16_t from, to; /* minutes after local midnight; from > to wraps midnight */
	const char *text;  /* "Europe/Berlin mon-fri 08:00-18:00" for traces */
} pol_window;

typedef struct pol_rule {
	/* Indices (< 256) of the principals and groups a rule names, kept inline
	 * so a decision reads them without chasing pointers. */
	uint8_t pidx[POL_RULE_REFS_MAX];
	uint8_t iidx[POL_RULE_REFS_MAX];
	uint8_t gidx[POL_RULE_REFS_MAX];
	const char *id;
	enum pol_effect effect;
	uint8_t actions; /* bit per pol_action */
	size_t n_principals;
	const pol_principal **principals;
	size_t n_groups;
	const pol_group **groups;
	bool has_psc;
	pol_pscmatch psc;
	int owner; /* -1: no condition */
	size_t n_invitee;
	const pol_principal **invitee;
	bool has_members;
	uint32_t members_min, members_max;
	size_t n_windows;
	const pol_window *windows;
	bool has_rate;
	uint32_t rate_max;
	int64_t rate_per;
	unsigned line, col;
} pol_rule;

struct pol_policy {
	pol_arena *arena;
	char revision[POL_REVISION_LEN + 1];
	const char *file;
	size_t n_rules;
	const pol_rule *rules; /* sorted by id: evaluation never depends on file order */
	/* Rule indices per action and effect, so a decision visits only its rules. */
	const uint32_t *by_action[POL_ACT_COUNT][POL_E_COUNT];
	size_t n_by_action[POL_ACT_COUNT][POL_E_COUNT];
	/* Prefilter: bit i of rule_pmask[r] is set when rule r names principal i
	 * (all zero: the rule names none); action_pmask[a] is the union over the
	 * rules of action a. A decision evaluates those principals once and skips
	 * rules none of whose principals matched, without touching the rule. */
	const uint64_t (*rule_pmask)[POL_PRINCIPALS_MAX / 64];
	uint64_t action_pmask[POL_ACT_COUNT][POL_PRINCIPALS_MAX / 64];
	size_t n_principals, n_groups, n_sets;
	const pol_principal *principals;
	const pol_group *groups;
	const pol_set *sets;
	pol_limits defaults;
	size_t n_warnings;
	const char **warnings;
};

/* Shared by the evaluator and pol_limits_for(). */
typedef enum pol_res { POL_R_MATCH, POL_R_NOMATCH, POL_R_ERROR } pol_res;
const char *pol_effect_name(enum pol_effect e);
const char *pol_suite_name(uint16_t id);
const char *pol_wrap_name(uint8_t id);
int pol_suite_from_name(const char *s);
int pol_wrap_from_name(const char *s);
/* PSC matcher against a PSC; missing labels are an error (reason set). */
pol_res pol_match_psc(const pol_pscmatch *m, const char *name, const pol_label *labels,
		      size_t n_labels, char *why, size_t why_len);

#endif
