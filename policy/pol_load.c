/*
 * pol_load — policy YAML to a compiled, immutable pol_policy.
 *
 * Owns: the policy file schema (docs/policy.md "File format"), every load-time
 * rejection with its file:line:column message, the "can never match"
 * warnings, the revision hash, and reload.
 * Never: keep a reference to the input buffer or the YAML tree after
 * returning; accept a policy half-built (on any error nothing is returned).
 */
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"

struct ld {
	pol_arena *a; /* the policy's arena: compiled objects live here */
	const pol_ydoc *d;
	psc_err *err;
	const pol_load_opts *opts;
	pol_policy *pol;
	pol_set *sets;
	pol_principal *principals;
	pol_group *groups;
	const char *warnings[POL_WARNINGS_MAX];
	size_t n_warnings;
};

#define OOM(l) psc_err_set((l)->err, PSC_E_NOMEM, "%s: out of memory", (l)->d->file)

static void warn(struct ld *l, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void warn(struct ld *l, unsigned line, unsigned col, const char *fmt, ...)
{
	if (l->n_warnings >= POL_WARNINGS_MAX)
		return;
	char msg[400], full[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	int n = snprintf(full, sizeof(full), "%s:%u:%u: warning: %s", l->d->file, line, col, msg);
	const char *w = pol_arena_strndup(l->a, full, n > 0 ? strlen(full) : 0);
	if (w)
		l->warnings[l->n_warnings++] = w;
}

/* ---- names ---------------------------------------------------------------- */

static const char *const action_names[POL_ACT_COUNT] = {
    "initialize", "establish", "join", "invite", "destroy", "report_departure"};

const char *pol_action_name(pol_action a)
{
	return (unsigned)a < POL_ACT_COUNT ? action_names[a] : NULL;
}

int pol_action_from_name(const char *name)
{
	for (int i = 0; i < POL_ACT_COUNT; i++)
		if (strcmp(name, action_names[i]) == 0)
			return i;
	return -1;
}

const char *pol_outcome_name(pol_outcome o)
{
	switch (o) {
	case POL_PERMIT:
		return "permit";
	case POL_ASK_OWNER:
		return "ask_owner";
	case POL_DENY:
		return "deny";
	}
	return "deny";
}

const char *pol_effect_name(enum pol_effect e)
{
	static const char *const n[POL_E_COUNT] = {"forbid", "permit", "ask_owner"};
	return (unsigned)e < POL_E_COUNT ? n[e] : "?";
}

static const struct {
	const char *name;
	uint16_t id;
} suites[] = {{"aes256gcm-hkdf-sha256", PSC_SUITE_AES256GCM_HKDF_SHA256}};

static const struct {
	const char *name;
	uint8_t id;
} wraps[] = {{"rsa-oaep-sha1", PSC_WRAP_RSA_OAEP_SHA1},
	     {"rsa-oaep-sha256", PSC_WRAP_RSA_OAEP_SHA256},
	     {"ecdh-p256-aesprf-kwp", PSC_WRAP_ECDH_P256_AESPRF_KWP}};

#define N_SUITES (sizeof(suites) / sizeof(suites[0]))
#define N_WRAPS (sizeof(wraps) / sizeof(wraps[0]))

const char *pol_suite_name(uint16_t id)
{
	for (size_t i = 0; i < N_SUITES; i++)
		if (suites[i].id == id)
			return suites[i].name;
	return NULL;
}

const char *pol_wrap_name(uint8_t id)
{
	for (size_t i = 0; i < N_WRAPS; i++)
		if (wraps[i].id == id)
			return wraps[i].name;
	return NULL;
}

int pol_suite_from_name(const char *s)
{
	for (size_t i = 0; i < N_SUITES; i++)
		if (strcmp(suites[i].name, s) == 0)
			return suites[i].id;
	return -1;
}

int pol_wrap_from_name(const char *s)
{
	for (size_t i = 0; i < N_WRAPS; i++)
		if (strcmp(wraps[i].name, s) == 0)
			return wraps[i].id;
	return -1;
}

static psc_rc check_name(struct ld *l, const pol_ynode *n, const char *what)
{
	bool ok = n->kind == POL_Y_SCALAR && n->slen >= 1 && n->slen <= POL_NAME_MAX;
	for (size_t i = 0; ok && i < n->slen; i++) {
		char c = n->s[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		     c == '_' || c == '-' || c == '.';
	}
	if (!ok)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s '%s' must be 1-64 characters of A-Z a-z 0-9 _ - .", what,
				n->kind == POL_Y_SCALAR ? n->s : "");
	return PSC_OK;
}

/* ---- sorting helpers ------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* qsort has no context argument, so one comparator per width. */
static int cmp_node(const void *a, const void *b)
{
	return memcmp(a, b, PSC_NODE_ID_LEN);
}

static int cmp_fp(const void *a, const void *b)
{
	return memcmp(a, b, PSC_HASH_LEN);
}

/* A seq of scalars -> sorted unique values. Duplicate -> error at the 2nd one. */
static psc_rc read_values(struct ld *l, const pol_ynode *seq, enum pol_vtype t, const char *what,
			  bool allow_empty, const char ***strs_out, const uint8_t **bytes_out,
			  size_t *n_out)
{
	psc_rc rc = pol_yexpect(l->d, seq, POL_Y_SEQ, what, l->err);
	if (rc != PSC_OK)
		return rc;
	if (!allow_empty && seq->n == 0)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, seq,
				"%s must list at least one value", what);
	size_t w = t == POL_T_NODE ? PSC_NODE_ID_LEN : PSC_HASH_LEN;
	if (t == POL_T_STR) {
		const char **v = pol_arena_alloc(l->a, (seq->n + 1) * sizeof(*v));
		if (!v)
			return OOM(l);
		for (size_t i = 0; i < seq->n; i++) {
			rc = pol_ystr(l->d, seq->items[i], what, &v[i], l->err);
			if (rc != PSC_OK)
				return rc;
			for (size_t j = 0; j < i; j++)
				if (strcmp(v[j], v[i]) == 0)
					return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
							seq->items[i], "'%s' is listed twice in %s",
							v[i], what);
		}
		qsort(v, seq->n, sizeof(*v), cmp_str);
		*strs_out = v;
	} else {
		uint8_t *b = pol_arena_alloc(l->a, (seq->n + 1) * w);
		if (!b)
			return OOM(l);
		for (size_t i = 0; i < seq->n; i++) {
			rc = pol_yhex(l->d, seq->items[i], what, b + i * w, w, l->err);
			if (rc != PSC_OK)
				return rc;
			for (size_t j = 0; j < i; j++)
				if (memcmp(b + j * w, b + i * w, w) == 0)
					return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
							seq->items[i], "'%s' is listed twice in %s",
							seq->items[i]->s, what);
		}
		qsort(b, seq->n, w, t == POL_T_NODE ? cmp_node : cmp_fp);
		*bytes_out = b;
	}
	*n_out = seq->n;
	return PSC_OK;
}

/* ---- sets ----------------------------------------------------------------- */

static psc_rc load_sets(struct ld *l, const pol_ynode *n)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, "'sets'", l->err);
	if (rc != PSC_OK)
		return rc;
	l->sets = pol_arena_alloc(l->a, (n->n + 1) * sizeof(*l->sets));
	if (!l->sets)
		return OOM(l);
	static const char *const keys[] = {"node_ids", "fingerprints", "strings", "description",
					   NULL};
	for (size_t i = 0; i < n->n; i++) {
		pol_set *s = &l->sets[i];
		const pol_ynode *k = n->keys[i], *v = n->items[i];
		if ((rc = check_name(l, k, "set name")) != PSC_OK)
			return rc;
		s->name = k->s;
		s->line = k->line;
		s->col = k->col;
		char what[128];
		snprintf(what, sizeof(what), "set '%s'", k->s);
		if ((rc = pol_yexpect(l->d, v, POL_Y_MAP, what, l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, v, what, keys, l->err)) != PSC_OK)
			return rc;
		const pol_ynode *list = NULL;
		int kinds = 0;
		if (pol_yget(v, "node_ids")) {
			list = pol_yget(v, "node_ids");
			s->type = POL_T_NODE;
			kinds++;
		}
		if (pol_yget(v, "fingerprints")) {
			list = pol_yget(v, "fingerprints");
			s->type = POL_T_FP;
			kinds++;
		}
		if (pol_yget(v, "strings")) {
			list = pol_yget(v, "strings");
			s->type = POL_T_STR;
			kinds++;
		}
		if (kinds != 1)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, v,
					"%s needs exactly one of node_ids, fingerprints, strings",
					what);
		const pol_ynode *desc = pol_yget(v, "description");
		const char *ds;
		if (desc && (rc = pol_ystr(l->d, desc, "description", &ds, l->err)) != PSC_OK)
			return rc;
		snprintf(what, sizeof(what), "members of set '%s'", k->s);
		rc = read_values(l, list, s->type, what, true, &s->strs, &s->bytes, &s->n);
		if (rc != PSC_OK)
			return rc;
	}
	l->pol->sets = l->sets;
	l->pol->n_sets = n->n;
	return PSC_OK;
}

static pol_set *find_set(struct ld *l, const char *name)
{
	for (size_t i = 0; i < l->pol->n_sets; i++)
		if (strcmp(l->sets[i].name, name) == 0)
			return &l->sets[i];
	return NULL;
}

/* ---- matchers ------------------------------------------------------------- */

static const char *type_name(enum pol_vtype t)
{
	return t == POL_T_NODE ? "node_id" : t == POL_T_FP ? "fingerprint" : "string";
}

static psc_rc load_matcher(struct ld *l, const pol_ynode *n, enum pol_vtype t, const char *what,
			   pol_matcher *m)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, what, l->err);
	if (rc != PSC_OK)
		return rc;
	if (n->n != 1)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s needs exactly one matcher (eq, in, prefix, glob or in_set), "
				"found %zu",
				what, n->n);
	const pol_ynode *k = n->keys[0], *v = n->items[0];
	static const char *const names[] = {"eq", "in", "prefix", "glob", "in_set"};
	int kind = -1;
	for (int i = 0; i < 5; i++)
		if (strcmp(k->s, names[i]) == 0)
			kind = i;
	if (kind < 0)
		return pol_yerr(
		    l->err, PSC_E_POLICY_SCHEMA, l->d->file, k,
		    "unknown matcher '%s' in %s (allowed: eq, in, prefix, glob, in_set)", k->s,
		    what);
	m->kind = (enum pol_mkind)kind;
	m->type = t;
	if (t != POL_T_STR && (m->kind == POL_M_PREFIX || m->kind == POL_M_GLOB))
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, k,
				"matcher '%s' does not apply to a %s (use eq, in or in_set)", k->s,
				type_name(t));
	char text[256];
	size_t w = t == POL_T_NODE ? PSC_NODE_ID_LEN : PSC_HASH_LEN;
	switch (m->kind) {
	case POL_M_EQ:
	case POL_M_PREFIX:
	case POL_M_GLOB: {
		const char *s;
		if ((rc = pol_ystr(l->d, v, what, &s, l->err)) != PSC_OK)
			return rc;
		m->n = 1;
		if (t == POL_T_STR) {
			const char **strs = pol_arena_alloc(l->a, sizeof(*strs));
			size_t *lens = pol_arena_alloc(l->a, sizeof(*lens));
			if (!strs || !lens)
				return OOM(l);
			strs[0] = s;
			lens[0] = strlen(s);
			m->strs = strs;
			m->lens = lens;
		} else {
			uint8_t *b = pol_arena_alloc(l->a, w);
			if (!b)
				return OOM(l);
			if ((rc = pol_yhex(l->d, v, what, b, w, l->err)) != PSC_OK)
				return rc;
			m->bytes = b;
		}
		snprintf(text, sizeof(text), "%s '%s'", names[kind], s);
		break;
	}
	case POL_M_IN:
		if ((rc = read_values(l, v, t, what, false, &m->strs, &m->bytes, &m->n)) != PSC_OK)
			return rc;
		snprintf(text, sizeof(text), "in [%zu values]", m->n);
		break;
	case POL_M_SET: {
		const char *s;
		if ((rc = pol_ystr(l->d, v, what, &s, l->err)) != PSC_OK)
			return rc;
		pol_set *set = find_set(l, s);
		if (!set)
			return pol_yerr(l->err, PSC_E_POLICY_REF, l->d->file, v,
					"%s refers to undefined set '%s'", what, s);
		if (set->type != t)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, v,
					"set '%s' holds %ss but %s is a %s", s,
					type_name(set->type), what, type_name(t));
		set->used = true;
		m->set = set;
		snprintf(text, sizeof(text), "in_set '%s'", s);
		break;
	}
	}
	if (!(m->text = pol_arena_strndup(l->a, text, strlen(text))))
		return OOM(l);
	return PSC_OK;
}

static psc_rc load_pscmatch(struct ld *l, const pol_ynode *n, const char *what, pol_pscmatch *pm)
{
	static const char *const keys[] = {"name", "labels", NULL};
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, what, l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, n, what, keys, l->err)) != PSC_OK)
		return rc;
	if (n->n == 0)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s needs 'name' or 'labels'", what);
	const pol_ynode *nm = pol_yget(n, "name"), *lb = pol_yget(n, "labels");
	char w[160];
	if (nm) {
		snprintf(w, sizeof(w), "%s name", what);
		pm->has_name = true;
		if ((rc = load_matcher(l, nm, POL_T_STR, w, &pm->name)) != PSC_OK)
			return rc;
	}
	if (lb) {
		snprintf(w, sizeof(w), "%s labels", what);
		if ((rc = pol_yexpect(l->d, lb, POL_Y_MAP, w, l->err)) != PSC_OK)
			return rc;
		if (lb->n == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, lb,
					"%s is empty; omit it or name a label", w);
		pol_label_match *lm = pol_arena_alloc(l->a, lb->n * sizeof(*lm));
		if (!lm)
			return OOM(l);
		for (size_t i = 0; i < lb->n; i++) {
			lm[i].key = lb->keys[i]->s;
			snprintf(w, sizeof(w), "label '%s'", lb->keys[i]->s);
			if ((rc = load_matcher(l, lb->items[i], POL_T_STR, w, &lm[i].m)) != PSC_OK)
				return rc;
		}
		pm->labels = lm;
		pm->n_labels = lb->n;
	}
	return PSC_OK;
}

/* ---- principals ----------------------------------------------------------- */

static const char *const attr_keys[POL_A_COUNT] = {"subject_cn", "subject_ou", "subject_o",
						   "issuer",	 "node_id",    "fingerprint"};

static int matcher_cost(const pol_matcher *m)
{
	if (m->type != POL_T_STR)
		return m->kind == POL_M_EQ ? 0 : 2;
	switch (m->kind) {
	case POL_M_EQ:
		return 1;
	case POL_M_PREFIX:
		return 2;
	case POL_M_IN:
		return 3;
	case POL_M_SET:
		return 4;
	case POL_M_GLOB:
		return 5;
	}
	return 5;
}

static psc_rc load_principals(struct ld *l, const pol_ynode *n)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, "'principals'", l->err);
	if (rc != PSC_OK)
		return rc;
	if (n->n > POL_PRINCIPALS_MAX)
		return pol_yerr(l->err, PSC_E_POLICY_LIMIT, l->d->file, n,
				"more than %d principals (POL_PRINCIPALS_MAX); use sets",
				POL_PRINCIPALS_MAX);
	l->principals = pol_arena_alloc(l->a, (n->n + 1) * sizeof(*l->principals));
	if (!l->principals)
		return OOM(l);
	static const char *const keys[] = {"subject_cn", "subject_ou",	"subject_o",   "issuer",
					   "node_id",	 "fingerprint", "description", NULL};
	for (size_t i = 0; i < n->n; i++) {
		pol_principal *p = &l->principals[i];
		const pol_ynode *k = n->keys[i], *v = n->items[i];
		if ((rc = check_name(l, k, "principal name")) != PSC_OK)
			return rc;
		p->name = k->s;
		p->idx = (unsigned)i;
		p->line = k->line;
		p->col = k->col;
		char what[128];
		snprintf(what, sizeof(what), "principal '%s'", k->s);
		if ((rc = pol_yexpect(l->d, v, POL_Y_MAP, what, l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, v, what, keys, l->err)) != PSC_OK)
			return rc;
		pol_attr_match *am = pol_arena_alloc(l->a, (v->n + 1) * sizeof(*am));
		if (!am)
			return OOM(l);
		size_t na = 0;
		for (size_t j = 0; j < v->n; j++) {
			const char *key = v->keys[j]->s;
			if (strcmp(key, "description") == 0) {
				const char *ds;
				if ((rc = pol_ystr(l->d, v->items[j], "description", &ds,
						   l->err)) != PSC_OK)
					return rc;
				continue;
			}
			int a = 0;
			while (strcmp(attr_keys[a], key) != 0)
				a++;
			enum pol_vtype t = a == POL_A_NODE_ID	    ? POL_T_NODE
					   : a == POL_A_FINGERPRINT ? POL_T_FP
								    : POL_T_STR;
			char w[160];
			snprintf(w, sizeof(w), "%s %s", what, key);
			am[na].attr = (enum pol_attr)a;
			if ((rc = load_matcher(l, v->items[j], t, w, &am[na].m)) != PSC_OK)
				return rc;
			if (am[na].m.kind == POL_M_SET && am[na].m.set->n == 0)
				p->never = true;
			na++;
		}
		if (na == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, v,
					"%s has no attributes; to match any requester, omit "
					"'principals' in the rule",
					what);
		/* All attributes must match, so test the cheapest first (stable, so
		 * explain traces stay predictable). */
		for (size_t a1 = 1; a1 < na; a1++)
			for (size_t a2 = a1;
			     a2 > 0 && matcher_cost(&am[a2].m) < matcher_cost(&am[a2 - 1].m);
			     a2--) {
				pol_attr_match t = am[a2];
				am[a2] = am[a2 - 1];
				am[a2 - 1] = t;
			}
		p->m = am;
		p->n = na;
	}
	l->pol->principals = l->principals;
	l->pol->n_principals = n->n;
	return PSC_OK;
}

static psc_rc ref_principals(struct ld *l, const pol_ynode *n, const char *what,
			     const pol_principal ***out, size_t *n_out)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_SEQ, what, l->err);
	if (rc != PSC_OK)
		return rc;
	if (n->n == 0)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s is empty; omit it to match anyone", what);
	if (n->n > POL_RULE_REFS_MAX)
		return pol_yerr(l->err, PSC_E_POLICY_LIMIT, l->d->file, n,
				"%s names more than %d principals (POL_RULE_REFS_MAX); define one "
				"principal with an in or in_set matcher instead",
				what, POL_RULE_REFS_MAX);
	const pol_principal **v = pol_arena_alloc(l->a, n->n * sizeof(*v));
	if (!v)
		return OOM(l);
	for (size_t i = 0; i < n->n; i++) {
		const char *s;
		if ((rc = pol_ystr(l->d, n->items[i], what, &s, l->err)) != PSC_OK)
			return rc;
		v[i] = NULL;
		for (size_t j = 0; j < l->pol->n_principals; j++)
			if (strcmp(l->principals[j].name, s) == 0)
				v[i] = &l->principals[j];
		if (!v[i])
			return pol_yerr(l->err, PSC_E_POLICY_REF, l->d->file, n->items[i],
					"%s refers to undefined principal '%s'", what, s);
		for (size_t j = 0; j < i; j++)
			if (v[j] == v[i])
				return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
						n->items[i], "principal '%s' is listed twice in %s",
						s, what);
		l->principals[v[i]->idx].used = true;
	}
	*out = v;
	*n_out = n->n;
	return PSC_OK;
}

/* ---- limits and groups ---------------------------------------------------- */

#define REFRESH_MAX_S (366 * 86400)
#define MAX_MEMBERS_CAP 1000000

static psc_rc load_limits(struct ld *l, const pol_ynode *n, const char *what, pol_limits_spec *ls)
{
	static const char *const keys[] = {"max_members", "refresh", "suites", "wrap_algs", NULL};
	static const char *const rkeys[] = {"min", "max", "default", NULL};
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, what, l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, n, what, keys, l->err)) != PSC_OK)
		return rc;
	int64_t v;
	const pol_ynode *x;
	if ((x = pol_yget(n, "max_members"))) {
		if ((rc = pol_yint(l->d, x, "max_members", 1, MAX_MEMBERS_CAP, &v, l->err)) !=
		    PSC_OK)
			return rc;
		ls->has_max_members = true;
		ls->v.max_members = (uint32_t)v;
	}
	if ((x = pol_yget(n, "refresh"))) {
		if ((rc = pol_yexpect(l->d, x, POL_Y_MAP, "refresh", l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, x, "refresh", rkeys, l->err)) != PSC_OK)
			return rc;
		const pol_ynode *y;
		if ((y = pol_yget(x, "min"))) {
			if ((rc = pol_yint(l->d, y, "refresh.min", 1, REFRESH_MAX_S, &v, l->err)) !=
			    PSC_OK)
				return rc;
			ls->has_refresh_min = true;
			ls->v.refresh_min = (uint32_t)v;
		}
		if ((y = pol_yget(x, "max"))) {
			if ((rc = pol_yint(l->d, y, "refresh.max", 1, REFRESH_MAX_S, &v, l->err)) !=
			    PSC_OK)
				return rc;
			ls->has_refresh_max = true;
			ls->v.refresh_max = (uint32_t)v;
		}
		if ((y = pol_yget(x, "default"))) {
			if ((rc = pol_yint(l->d, y, "refresh.default", 1, REFRESH_MAX_S, &v,
					   l->err)) != PSC_OK)
				return rc;
			ls->has_refresh_default = true;
			ls->v.refresh_default = (uint32_t)v;
		}
		if (ls->has_refresh_min && ls->has_refresh_max &&
		    ls->v.refresh_min > ls->v.refresh_max)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"refresh.min (%u) is greater than refresh.max (%u)",
					ls->v.refresh_min, ls->v.refresh_max);
		if (ls->has_refresh_default &&
		    ((ls->has_refresh_min && ls->v.refresh_default < ls->v.refresh_min) ||
		     (ls->has_refresh_max && ls->v.refresh_default > ls->v.refresh_max)))
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file,
					pol_yget(x, "default"),
					"refresh.default (%u) lies outside refresh.min..max",
					ls->v.refresh_default);
	}
	if ((x = pol_yget(n, "suites"))) {
		if ((rc = pol_yexpect(l->d, x, POL_Y_SEQ, "suites", l->err)) != PSC_OK)
			return rc;
		if (x->n == 0 || x->n > POL_ALGS_MAX)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"suites must list 1 to %d suites", POL_ALGS_MAX);
		for (size_t i = 0; i < x->n; i++) {
			const char *s;
			if ((rc = pol_ystr(l->d, x->items[i], "suite", &s, l->err)) != PSC_OK)
				return rc;
			int id = pol_suite_from_name(s);
			if (id < 0)
				return pol_yerr(
				    l->err, PSC_E_POLICY_SCHEMA, l->d->file, x->items[i],
				    "unknown suite '%s' (known: aes256gcm-hkdf-sha256)", s);
			for (size_t j = 0; j < i; j++)
				if (ls->v.suites[j] == id)
					return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
							x->items[i], "suite '%s' is listed twice",
							s);
			ls->v.suites[i] = (uint16_t)id;
		}
		ls->has_suites = true;
		ls->v.n_suites = x->n;
	}
	if ((x = pol_yget(n, "wrap_algs"))) {
		if ((rc = pol_yexpect(l->d, x, POL_Y_SEQ, "wrap_algs", l->err)) != PSC_OK)
			return rc;
		if (x->n == 0 || x->n > POL_ALGS_MAX)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"wrap_algs must list 1 to %d algorithms", POL_ALGS_MAX);
		for (size_t i = 0; i < x->n; i++) {
			const char *s;
			if ((rc = pol_ystr(l->d, x->items[i], "wrap algorithm", &s, l->err)) !=
			    PSC_OK)
				return rc;
			int id = pol_wrap_from_name(s);
			if (id < 0)
				return pol_yerr(
				    l->err, PSC_E_POLICY_SCHEMA, l->d->file, x->items[i],
				    "unknown wrap algorithm '%s' (known: rsa-oaep-sha1, "
				    "rsa-oaep-sha256, ecdh-p256-aesprf-kwp)",
				    s);
			for (size_t j = 0; j < i; j++)
				if (ls->v.wrap_algs[j] == id)
					return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
							x->items[i],
							"wrap algorithm '%s' is listed twice", s);
			ls->v.wrap_algs[i] = (uint8_t)id;
		}
		ls->has_wrap = true;
		ls->v.n_wrap_algs = x->n;
	}
	return PSC_OK;
}

static psc_rc load_groups(struct ld *l, const pol_ynode *n)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, "'groups'", l->err);
	if (rc != PSC_OK)
		return rc;
	if (n->n > POL_GROUPS_MAX)
		return pol_yerr(l->err, PSC_E_POLICY_LIMIT, l->d->file, n,
				"more than %d groups (POL_GROUPS_MAX)", POL_GROUPS_MAX);
	l->groups = pol_arena_alloc(l->a, (n->n + 1) * sizeof(*l->groups));
	if (!l->groups)
		return OOM(l);
	static const char *const keys[] = {"psc", "limits", "description", NULL};
	for (size_t i = 0; i < n->n; i++) {
		pol_group *g = &l->groups[i];
		const pol_ynode *k = n->keys[i], *v = n->items[i];
		if ((rc = check_name(l, k, "group name")) != PSC_OK)
			return rc;
		g->name = k->s;
		g->idx = (unsigned)i;
		g->line = k->line;
		g->col = k->col;
		char what[128];
		snprintf(what, sizeof(what), "group '%s'", k->s);
		if ((rc = pol_yexpect(l->d, v, POL_Y_MAP, what, l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, v, what, keys, l->err)) != PSC_OK)
			return rc;
		const pol_ynode *psc = pol_yget(v, "psc"), *lim = pol_yget(v, "limits"),
				*desc = pol_yget(v, "description");
		const char *ds;
		if (desc && (rc = pol_ystr(l->d, desc, "description", &ds, l->err)) != PSC_OK)
			return rc;
		if (!psc)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, v,
					"%s needs 'psc' (which PSCs belong to it)", what);
		char w[160];
		snprintf(w, sizeof(w), "%s psc", what);
		if ((rc = load_pscmatch(l, psc, w, &g->psc)) != PSC_OK)
			return rc;
		if (lim) {
			snprintf(w, sizeof(w), "%s limits", what);
			if ((rc = load_limits(l, lim, w, &g->limits)) != PSC_OK)
				return rc;
		}
	}
	l->pol->groups = l->groups;
	l->pol->n_groups = n->n;
	return PSC_OK;
}

/* ---- rules ---------------------------------------------------------------- */

static psc_rc parse_hhmm(struct ld *l, const pol_ynode *n, const char *what, uint16_t *out)
{
	const char *s;
	psc_rc rc = pol_ystr(l->d, n, what, &s, l->err);
	if (rc != PSC_OK)
		return rc;
	bool ok = strlen(s) == 5 && s[2] == ':';
	for (int i = 0; ok && i < 5; i++)
		ok = i == 2 || (s[i] >= '0' && s[i] <= '9');
	int h = ok ? (s[0] - '0') * 10 + s[1] - '0' : 0;
	int m = ok ? (s[3] - '0') * 10 + s[4] - '0' : 0;
	if (!ok || h > 24 || m > 59 || (h == 24 && m != 0))
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s must be a time HH:MM between 00:00 and 24:00, found '%s'", what,
				s);
	*out = (uint16_t)(h * 60 + m);
	return PSC_OK;
}

static psc_rc load_window(struct ld *l, const pol_ynode *n, pol_window *w)
{
	static const char *const keys[] = {"zone", "days", "from", "to", NULL};
	static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, "time window", l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, n, "time window", keys, l->err)) != PSC_OK)
		return rc;
	const pol_ynode *z = pol_yget(n, "zone"), *d = pol_yget(n, "days"),
			*f = pol_yget(n, "from"), *t = pol_yget(n, "to");
	if (!z || !f || !t)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"time window needs 'zone', 'from' and 'to'");
	const char *zs;
	if ((rc = pol_ystr(l->d, z, "zone", &zs, l->err)) != PSC_OK)
		return rc;
	char why[300];
	rc =
	    pol_tz_load(l->a, zs, l->opts ? l->opts->zoneinfo_dir : NULL, &w->tz, why, sizeof(why));
	if (rc == PSC_E_NOMEM)
		return OOM(l);
	if (rc != PSC_OK)
		return pol_yerr(l->err, rc, l->d->file, z, "time zone '%s': %s", zs, why);
	if ((rc = parse_hhmm(l, f, "from", &w->from)) != PSC_OK ||
	    (rc = parse_hhmm(l, t, "to", &w->to)) != PSC_OK)
		return rc;
	if (w->from == w->to)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, t,
				"time window 'from' and 'to' are equal; an empty window never "
				"matches (for all day use 00:00 to 24:00)");
	if (w->from == 24 * 60)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, f,
				"'from' cannot be 24:00");
	char dtext[40] = "";
	if (d) {
		if ((rc = pol_yexpect(l->d, d, POL_Y_SEQ, "days", l->err)) != PSC_OK)
			return rc;
		if (d->n == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, d,
					"days is empty; omit it for every day");
		for (size_t i = 0; i < d->n; i++) {
			const char *s;
			if ((rc = pol_ystr(l->d, d->items[i], "day", &s, l->err)) != PSC_OK)
				return rc;
			int day = -1;
			for (int j = 0; j < 7; j++)
				if (strcmp(s, days[j]) == 0)
					day = j;
			if (day < 0)
				return pol_yerr(
				    l->err, PSC_E_POLICY_SCHEMA, l->d->file, d->items[i],
				    "unknown day '%s' (use mon tue wed thu fri sat sun)", s);
			if (w->days & (1u << day))
				return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
						d->items[i], "day '%s' is listed twice", s);
			w->days |= (uint8_t)(1u << day);
		}
		size_t off = 0;
		for (int j = 0; j < 7; j++)
			if (w->days & (1u << j))
				off += (size_t)snprintf(dtext + off, sizeof(dtext) - off, "%s%s",
							off ? "," : " ", days[j]);
	} else {
		w->days = 0x7f;
	}
	char text[200];
	snprintf(text, sizeof(text), "%s%s %02u:%02u-%02u:%02u", zs, dtext, w->from / 60,
		 w->from % 60, w->to / 60, w->to % 60);
	if (!(w->text = pol_arena_strndup(l->a, text, strlen(text))))
		return OOM(l);
	return PSC_OK;
}

static psc_rc load_when(struct ld *l, const pol_ynode *n, pol_rule *r, const char *what)
{
	static const char *const keys[] = {"owner", "invitee", "members", "time", "rate", NULL};
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, what, l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, n, what, keys, l->err)) != PSC_OK)
		return rc;
	if (n->n == 0)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"%s is empty; omit it for no conditions", what);
	const pol_ynode *x;
	if ((x = pol_yget(n, "owner"))) {
		bool b;
		if ((rc = pol_ybool(l->d, x, "when.owner", &b, l->err)) != PSC_OK)
			return rc;
		r->owner = b ? 1 : 0;
	}
	if ((x = pol_yget(n, "invitee"))) {
		if ((rc = ref_principals(l, x, "when.invitee", &r->invitee, &r->n_invitee)) !=
		    PSC_OK)
			return rc;
		for (size_t i = 0; i < r->n_invitee; i++)
			r->iidx[i] = (uint8_t)r->invitee[i]->idx;
		if (r->actions != (1u << POL_ACT_INVITE))
			return pol_yerr(l->err, PSC_E_POLICY_RULE, l->d->file, x,
					"rule '%s': when.invitee applies only to action invite; "
					"put the other actions in a separate rule",
					r->id);
	}
	if ((x = pol_yget(n, "members"))) {
		static const char *const mk[] = {"min", "max", NULL};
		if ((rc = pol_yexpect(l->d, x, POL_Y_MAP, "when.members", l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, x, "when.members", mk, l->err)) != PSC_OK)
			return rc;
		if (x->n == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"when.members needs 'min' or 'max'");
		int64_t v;
		r->has_members = true;
		r->members_min = 0;
		r->members_max = UINT32_MAX;
		const pol_ynode *y;
		if ((y = pol_yget(x, "min"))) {
			if ((rc = pol_yint(l->d, y, "when.members.min", 0, MAX_MEMBERS_CAP, &v,
					   l->err)) != PSC_OK)
				return rc;
			r->members_min = (uint32_t)v;
		}
		if ((y = pol_yget(x, "max"))) {
			if ((rc = pol_yint(l->d, y, "when.members.max", 0, MAX_MEMBERS_CAP, &v,
					   l->err)) != PSC_OK)
				return rc;
			r->members_max = (uint32_t)v;
		}
		if (r->members_min > r->members_max)
			warn(l, x->line, x->col,
			     "rule '%s' can never match: when.members.min %u is greater than "
			     "max %u",
			     r->id, r->members_min, r->members_max);
	}
	if ((x = pol_yget(n, "time"))) {
		size_t cnt = x->kind == POL_Y_SEQ ? x->n : 1;
		if (x->kind == POL_Y_SEQ && cnt == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"when.time is empty; omit it for any time");
		if (x->kind == POL_Y_SCALAR)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"when.time must be a mapping or a sequence of mappings");
		pol_window *w = pol_arena_alloc(l->a, cnt * sizeof(*w));
		if (!w)
			return OOM(l);
		for (size_t i = 0; i < cnt; i++)
			if ((rc = load_window(l, x->kind == POL_Y_SEQ ? x->items[i] : x, &w[i])) !=
			    PSC_OK)
				return rc;
		r->windows = w;
		r->n_windows = cnt;
	}
	if ((x = pol_yget(n, "rate"))) {
		static const char *const rk[] = {"max", "per", NULL};
		if ((rc = pol_yexpect(l->d, x, POL_Y_MAP, "when.rate", l->err)) != PSC_OK ||
		    (rc = pol_yonly(l->d, x, "when.rate", rk, l->err)) != PSC_OK)
			return rc;
		const pol_ynode *mx = pol_yget(x, "max"), *per = pol_yget(x, "per");
		if (!mx || !per)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"when.rate needs 'max' (events) and 'per' (seconds)");
		int64_t v;
		if ((rc = pol_yint(l->d, mx, "when.rate.max", 1, POL_RATE_MAX, &v, l->err)) !=
		    PSC_OK)
			return rc;
		r->rate_max = (uint32_t)v;
		if ((rc = pol_yint(l->d, per, "when.rate.per", 1, 31 * 86400, &v, l->err)) !=
		    PSC_OK)
			return rc;
		r->rate_per = v;
		r->has_rate = true;
	}
	return PSC_OK;
}

static psc_rc load_rule(struct ld *l, const pol_ynode *n, pol_rule *r)
{
	static const char *const keys[] = {
	    "id", "description", "effect", "actions", "principals", "groups", "psc", "when", NULL};
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_MAP, "a rule", l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, n, "a rule", keys, l->err)) != PSC_OK)
		return rc;
	r->line = n->line;
	r->col = n->col;
	r->owner = -1;
	const pol_ynode *id = pol_yget(n, "id"), *eff = pol_yget(n, "effect"),
			*act = pol_yget(n, "actions"), *x;
	if (!id)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n, "rule without 'id'");
	if ((rc = check_name(l, id, "rule id")) != PSC_OK)
		return rc;
	r->id = id->s;
	if (!eff || !act)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, n,
				"rule '%s' needs 'effect' and 'actions'", r->id);
	if ((x = pol_yget(n, "description"))) {
		const char *ds;
		if ((rc = pol_ystr(l->d, x, "description", &ds, l->err)) != PSC_OK)
			return rc;
	}
	const char *es;
	if ((rc = pol_ystr(l->d, eff, "effect", &es, l->err)) != PSC_OK)
		return rc;
	if (strcmp(es, "forbid") == 0)
		r->effect = POL_E_FORBID;
	else if (strcmp(es, "permit") == 0)
		r->effect = POL_E_PERMIT;
	else if (strcmp(es, "ask_owner") == 0)
		r->effect = POL_E_ASK_OWNER;
	else
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, eff,
				"unknown effect '%s' (use permit, forbid or ask_owner)", es);
	if ((rc = pol_yexpect(l->d, act, POL_Y_SEQ, "actions", l->err)) != PSC_OK)
		return rc;
	if (act->n == 0)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, act,
				"rule '%s' has an empty action list", r->id);
	for (size_t i = 0; i < act->n; i++) {
		const char *s;
		if ((rc = pol_ystr(l->d, act->items[i], "action", &s, l->err)) != PSC_OK)
			return rc;
		int a = pol_action_from_name(s);
		if (a < 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, act->items[i],
					"unknown action '%s' (use initialize, establish, join, "
					"invite, destroy, report_departure)",
					s);
		if (r->actions & (1u << a))
			return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file, act->items[i],
					"action '%s' is listed twice", s);
		if (r->effect == POL_E_ASK_OWNER &&
		    (a == POL_ACT_DESTROY || a == POL_ACT_INITIALIZE || a == POL_ACT_ESTABLISH))
			return pol_yerr(l->err, PSC_E_POLICY_RULE, l->d->file, act->items[i],
					"rule '%s': ask_owner cannot apply to %s (%s)", r->id, s,
					a == POL_ACT_DESTROY ? "the owner cannot be asked to "
							       "authorise destroying its PSC"
							     : "there is no PSC owner yet");
		r->actions |= (uint8_t)(1u << a);
	}
	if ((x = pol_yget(n, "principals")) &&
	    (rc = ref_principals(l, x, "principals", &r->principals, &r->n_principals)) != PSC_OK)
		return rc;
	for (size_t i = 0; i < r->n_principals; i++)
		r->pidx[i] = (uint8_t)r->principals[i]->idx;
	const pol_ynode *psc_cond = NULL;
	if ((x = pol_yget(n, "groups"))) {
		psc_cond = x;
		if ((rc = pol_yexpect(l->d, x, POL_Y_SEQ, "groups", l->err)) != PSC_OK)
			return rc;
		if (x->n == 0)
			return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
					"groups is empty; omit it to match any PSC");
		if (x->n > POL_RULE_REFS_MAX)
			return pol_yerr(l->err, PSC_E_POLICY_LIMIT, l->d->file, x,
					"groups names more than %d groups (POL_RULE_REFS_MAX)",
					POL_RULE_REFS_MAX);
		const pol_group **g = pol_arena_alloc(l->a, x->n * sizeof(*g));
		if (!g)
			return OOM(l);
		for (size_t i = 0; i < x->n; i++) {
			const char *s;
			if ((rc = pol_ystr(l->d, x->items[i], "group", &s, l->err)) != PSC_OK)
				return rc;
			g[i] = NULL;
			for (size_t j = 0; j < l->pol->n_groups; j++)
				if (strcmp(l->groups[j].name, s) == 0)
					g[i] = &l->groups[j];
			if (!g[i])
				return pol_yerr(l->err, PSC_E_POLICY_REF, l->d->file, x->items[i],
						"rule '%s' refers to undefined group '%s'", r->id,
						s);
			for (size_t j = 0; j < i; j++)
				if (g[j] == g[i])
					return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
							x->items[i], "group '%s' is listed twice",
							s);
			l->groups[g[i]->idx].used = true;
			r->gidx[i] = (uint8_t)g[i]->idx;
		}
		r->groups = g;
		r->n_groups = x->n;
	}
	if ((x = pol_yget(n, "psc"))) {
		psc_cond = x;
		r->has_psc = true;
		if ((rc = load_pscmatch(l, x, "psc", &r->psc)) != PSC_OK)
			return rc;
	}
	if ((x = pol_yget(n, "when")) && (rc = load_when(l, x, r, "when")) != PSC_OK)
		return rc;
	if (!psc_cond && (x = pol_yget(n, "when")))
		psc_cond = pol_yget(x, "owner") ? pol_yget(x, "owner") : pol_yget(x, "members");
	if (psc_cond && (r->actions & (1u << POL_ACT_INITIALIZE)))
		return pol_yerr(
		    l->err, PSC_E_POLICY_RULE, l->d->file, psc_cond,
		    "rule '%s': initialize has no PSC, so groups, psc, when.owner and "
		    "when.members cannot apply to it; put initialize in a separate rule",
		    r->id);
	return PSC_OK;
}

static bool rule_never(const pol_rule *r)
{
	if (r->n_principals) {
		bool any = false;
		for (size_t i = 0; i < r->n_principals; i++)
			any |= !r->principals[i]->never;
		if (!any)
			return true;
	}
	if (r->n_invitee) {
		bool any = false;
		for (size_t i = 0; i < r->n_invitee; i++)
			any |= !r->invitee[i]->never;
		if (!any)
			return true;
	}
	return r->has_members && r->members_min > r->members_max;
}

static bool rule_unconditional(const pol_rule *r)
{
	return !r->n_principals && !r->n_groups && !r->has_psc && r->owner < 0 && !r->n_invitee &&
	       !r->has_members && !r->n_windows && !r->has_rate;
}

static int cmp_rule(const void *a, const void *b)
{
	return strcmp(((const pol_rule *)a)->id, ((const pol_rule *)b)->id);
}

static psc_rc load_rules(struct ld *l, const pol_ynode *n)
{
	psc_rc rc = pol_yexpect(l->d, n, POL_Y_SEQ, "'rules'", l->err);
	if (rc != PSC_OK)
		return rc;
	if (n->n > POL_RULES_MAX)
		return pol_yerr(l->err, PSC_E_POLICY_LIMIT, l->d->file, n,
				"more than %d rules (POL_RULES_MAX)", POL_RULES_MAX);
	pol_rule *rules = pol_arena_alloc(l->a, (n->n + 1) * sizeof(*rules));
	if (!rules)
		return OOM(l);
	for (size_t i = 0; i < n->n; i++) {
		if ((rc = load_rule(l, n->items[i], &rules[i])) != PSC_OK)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (strcmp(rules[j].id, rules[i].id) == 0)
				return pol_yerr(l->err, PSC_E_POLICY_DUPLICATE, l->d->file,
						pol_yget(n->items[i], "id"),
						"rule id '%s' is used twice (first at line %u)",
						rules[i].id, rules[j].line);
	}
	if (n->n == 0)
		warn(l, n->line, n->col, "no rules: every request is denied");
	/* Warnings before sorting, so they come out in file order. */
	uint8_t uncond_forbid = 0;
	for (size_t i = 0; i < n->n; i++)
		if (rules[i].effect == POL_E_FORBID && rule_unconditional(&rules[i]))
			uncond_forbid |= rules[i].actions;
	for (size_t i = 0; i < n->n; i++) {
		const pol_rule *r = &rules[i];
		if (rule_never(r))
			warn(l, r->line, r->col,
			     "rule '%s' can never match: every principal it names needs an "
			     "empty set, or its member range is empty",
			     r->id);
		else if (r->effect != POL_E_FORBID && (r->actions & ~uncond_forbid) == 0)
			warn(l, r->line, r->col,
			     "rule '%s' (%s) can never decide: an unconditional forbid covers "
			     "all its actions",
			     r->id, pol_effect_name(r->effect));
	}
	qsort(rules, n->n, sizeof(*rules), cmp_rule);
	l->pol->rules = rules;
	l->pol->n_rules = n->n;
	uint64_t(*pm)[POL_PRINCIPALS_MAX / 64] = pol_arena_alloc(l->a, (n->n + 1) * sizeof(*pm));
	if (!pm)
		return OOM(l);
	for (size_t i = 0; i < n->n; i++)
		for (size_t k = 0; k < rules[i].n_principals; k++) {
			unsigned b = rules[i].pidx[k];
			pm[i][b / 64] |= 1ull << (b % 64);
			for (int a = 0; a < POL_ACT_COUNT; a++)
				if (rules[i].actions >> a & 1)
					l->pol->action_pmask[a][b / 64] |= 1ull << (b % 64);
		}
	l->pol->rule_pmask = (const uint64_t(*)[POL_PRINCIPALS_MAX / 64]) pm;
	for (int a = 0; a < POL_ACT_COUNT; a++)
		for (int e = 0; e < POL_E_COUNT; e++) {
			size_t cnt = 0;
			for (size_t i = 0; i < n->n; i++)
				cnt += (rules[i].actions >> a & 1) &&
				       rules[i].effect == (enum pol_effect)e;
			uint32_t *v = pol_arena_alloc(l->a, (cnt + 1) * sizeof(*v));
			if (!v)
				return OOM(l);
			cnt = 0;
			for (size_t i = 0; i < n->n; i++)
				if ((rules[i].actions >> a & 1) &&
				    rules[i].effect == (enum pol_effect)e)
					v[cnt++] = (uint32_t)i;
			l->pol->by_action[a][e] = v;
			l->pol->n_by_action[a][e] = cnt;
		}
	return PSC_OK;
}

/* ---- top level ------------------------------------------------------------ */

static void builtin_defaults(pol_limits *d)
{
	memset(d, 0, sizeof(*d));
	d->max_members = 1000;
	d->refresh_min = 60;
	d->refresh_max = 86400;
	d->refresh_default = 3600;
	d->suites[0] = PSC_SUITE_AES256GCM_HKDF_SHA256;
	d->n_suites = 1;
	for (size_t i = 0; i < N_WRAPS; i++)
		d->wrap_algs[i] = wraps[i].id;
	d->n_wrap_algs = N_WRAPS;
}

static psc_rc compile(struct ld *l, const pol_ynode *root)
{
	static const char *const keys[] = {"version", "description", "sets",  "principals",
					   "groups",  "defaults",    "rules", NULL};
	psc_rc rc = pol_yexpect(l->d, root, POL_Y_MAP, "the policy", l->err);
	if (rc != PSC_OK || (rc = pol_yonly(l->d, root, "the policy", keys, l->err)) != PSC_OK)
		return rc;
	const pol_ynode *ver = pol_yget(root, "version"), *x;
	if (!ver)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, root,
				"missing 'version: 1' at the top of the policy");
	int64_t v;
	if ((rc = pol_yint(l->d, ver, "version", 1, 1, &v, l->err)) != PSC_OK)
		return rc;
	if ((x = pol_yget(root, "description"))) {
		const char *ds;
		if ((rc = pol_ystr(l->d, x, "description", &ds, l->err)) != PSC_OK)
			return rc;
	}
	if ((x = pol_yget(root, "sets")) && (rc = load_sets(l, x)) != PSC_OK)
		return rc;
	if ((x = pol_yget(root, "principals")) && (rc = load_principals(l, x)) != PSC_OK)
		return rc;
	if ((x = pol_yget(root, "groups")) && (rc = load_groups(l, x)) != PSC_OK)
		return rc;
	builtin_defaults(&l->pol->defaults);
	if ((x = pol_yget(root, "defaults"))) {
		pol_limits_spec ls;
		memset(&ls, 0, sizeof(ls));
		if ((rc = load_limits(l, x, "defaults", &ls)) != PSC_OK)
			return rc;
		pol_limits *d = &l->pol->defaults;
		if (ls.has_max_members)
			d->max_members = ls.v.max_members;
		if (ls.has_refresh_min)
			d->refresh_min = ls.v.refresh_min;
		if (ls.has_refresh_max)
			d->refresh_max = ls.v.refresh_max;
		if (ls.has_refresh_default)
			d->refresh_default = ls.v.refresh_default;
		if (ls.has_suites) {
			memcpy(d->suites, ls.v.suites, sizeof(d->suites));
			d->n_suites = ls.v.n_suites;
		}
		if (ls.has_wrap) {
			memcpy(d->wrap_algs, ls.v.wrap_algs, sizeof(d->wrap_algs));
			d->n_wrap_algs = ls.v.n_wrap_algs;
		}
		if (d->refresh_min > d->refresh_max || d->refresh_default < d->refresh_min ||
		    d->refresh_default > d->refresh_max)
			return pol_yerr(
			    l->err, PSC_E_POLICY_SCHEMA, l->d->file, x,
			    "defaults: refresh min %u / default %u / max %u are not "
			    "ordered min <= default <= max (built-in: 60 / 3600 / 86400)",
			    d->refresh_min, d->refresh_default, d->refresh_max);
	}
	const pol_ynode *rules = pol_yget(root, "rules");
	if (!rules)
		return pol_yerr(l->err, PSC_E_POLICY_SCHEMA, l->d->file, root,
				"missing 'rules' (a list; without rules every request is denied)");
	if ((rc = load_rules(l, rules)) != PSC_OK)
		return rc;
	for (size_t i = 0; i < l->pol->n_sets; i++)
		if (!l->sets[i].used)
			warn(l, l->sets[i].line, l->sets[i].col, "set '%s' is never used",
			     l->sets[i].name);
	for (size_t i = 0; i < l->pol->n_principals; i++)
		if (!l->principals[i].used)
			warn(l, l->principals[i].line, l->principals[i].col,
			     "principal '%s' is never used", l->principals[i].name);
	for (size_t i = 0; i < l->pol->n_groups; i++)
		if (!l->groups[i].used && !l->groups[i].limits.has_max_members &&
		    !l->groups[i].limits.has_refresh_min && !l->groups[i].limits.has_refresh_max &&
		    !l->groups[i].limits.has_refresh_default && !l->groups[i].limits.has_suites &&
		    !l->groups[i].limits.has_wrap)
			warn(l, l->groups[i].line, l->groups[i].col,
			     "group '%s' is never used and sets no limits", l->groups[i].name);
	const char **w = pol_arena_alloc(l->a, (l->n_warnings + 1) * sizeof(*w));
	if (!w)
		return OOM(l);
	memcpy(w, l->warnings, l->n_warnings * sizeof(*w));
	l->pol->warnings = w;
	l->pol->n_warnings = l->n_warnings;
	return PSC_OK;
}

static psc_rc revision(const char *buf, size_t len, char out[POL_REVISION_LEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (!EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return PSC_E_CRYPTO;
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	return PSC_OK;
}

psc_rc pol_policy_load_buffer(pol_policy **out, const char *buf, size_t len, const char *name,
			      const pol_load_opts *opts, psc_err *err)
{
	if (!out || (!buf && len))
		return psc_err_set(err, PSC_E_INVALID_ARG, "pol_policy_load_buffer: NULL argument");
	psc_err_clear(err);
	pol_arena *a = NULL;
	psc_rc rc;
	if ((rc = pol_arena_new(&a)) != PSC_OK)
		return psc_err_set(err, rc, "out of memory");
	pol_policy *pol = pol_arena_alloc(a, sizeof(*pol));
	pol_ydoc doc;
	if (!pol) {
		rc = psc_err_set(err, PSC_E_NOMEM, "out of memory");
		goto fail;
	}
	pol->arena = a;
	/* The YAML tree lives in the policy arena too: compiled objects borrow its
	 * strings, and one arena per policy keeps freeing trivial. */
	if ((rc = pol_yaml_parse(a, buf ? buf : "", len, name, &doc, err)) != PSC_OK)
		goto fail;
	pol->file = doc.file;
	struct ld l = {.a = a, .d = &doc, .err = err, .opts = opts, .pol = pol};
	if ((rc = compile(&l, doc.root)) != PSC_OK)
		goto fail;
	if ((rc = revision(buf ? buf : "", len, pol->revision)) != PSC_OK) {
		psc_err_set(err, rc, "%s: cannot hash the policy (OpenSSL)", doc.file);
		goto fail;
	}
	*out = pol;
	return PSC_OK;
fail:
	pol_arena_free(&a);
	return rc;
}

psc_rc pol_policy_load_file(pol_policy **out, const char *path, const pol_load_opts *opts,
			    psc_err *err)
{
	if (!out || !path)
		return psc_err_set(err, PSC_E_INVALID_ARG, "pol_policy_load_file: NULL argument");
	char *buf;
	size_t len;
	psc_rc rc = pol_read_file(path, &buf, &len, err);
	if (rc != PSC_OK)
		return rc;
	rc = pol_policy_load_buffer(out, buf, len, path, opts, err);
	free(buf);
	return rc;
}

psc_rc pol_policy_reload(pol_policy **active, const char *path, const pol_load_opts *opts,
			 psc_err *err)
{
	if (!active)
		return psc_err_set(err, PSC_E_INVALID_ARG, "pol_policy_reload: NULL argument");
	pol_policy *fresh = NULL;
	psc_rc rc = pol_policy_load_file(&fresh, path, opts, err);
	if (rc != PSC_OK)
		return rc; /* the active policy stays as it was */
	pol_policy *old = *active;
	*active = fresh;
	pol_policy_free(&old);
	return PSC_OK;
}

void pol_policy_free(pol_policy **pol)
{
	if (!pol || !*pol)
		return;
	pol_arena *a = (*pol)->arena;
	pol_arena_free(&a);
	*pol = NULL;
}

const char *pol_policy_revision(const pol_policy *pol)
{
	return pol ? pol->revision : "";
}

size_t pol_policy_rule_count(const pol_policy *pol)
{
	return pol ? pol->n_rules : 0;
}

const char *pol_policy_rule_id(const pol_policy *pol, size_t i)
{
	return pol && i < pol->n_rules ? pol->rules[i].id : NULL;
}

size_t pol_policy_warning_count(const pol_policy *pol)
{
	return pol ? pol->n_warnings : 0;
}

const char *pol_policy_warning(const pol_policy *pol, size_t i)
{
	return pol && i < pol->n_warnings ? pol->warnings[i] : NULL;
}
