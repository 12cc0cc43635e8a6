/*
 * pol_eval — decisions, limits and explain traces over a compiled policy.
 *
 * Owns: the decision semantics (docs/policy.md "Semantics"): any matching
 * forbid denies, else any permit permits, else any ask_owner asks the owner,
 * else deny; a forbid that cannot be evaluated denies, a permit or ask_owner
 * that cannot be evaluated is skipped; built-in limit checks act as forbids.
 * Never: allocate, read the clock, or depend on the order of rules in the file
 * (rules are sorted by id when compiled, and every matching rule is collected).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pol_internal.h"

#define POL_NOW_MAX ((int64_t)1 << 40)

/* ---- explain buffer --------------------------------------------------------- */

static void ex_printf(pol_explain *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ex_printf(pol_explain *ex, const char *fmt, ...)
{
	if (!ex || !ex->buf || ex->cap == 0)
		return;
	if (ex->len >= ex->cap - 1) {
		ex->truncated = true;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(ex->buf + ex->len, ex->cap - ex->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= ex->cap - ex->len) {
		ex->len = ex->cap - 1;
		ex->truncated = true;
	} else {
		ex->len += (size_t)n;
	}
}

/* ---- evaluation context ----------------------------------------------------- */

struct ctx {
	const pol_policy *pol;
	const pol_state *st;
	const pol_request *req;
	bool explain;
	/* Memoised results (0 = not yet, else pol_res + 1), only when not explaining:
	 * rules share principals, and a decision must stay cheap. */
	uint8_t preq[POL_PRINCIPALS_MAX];
	uint8_t pinv[POL_PRINCIPALS_MAX];
	uint8_t grp[POL_GROUPS_MAX];
	char why[320];
};

#define WHY(c, ...)                                                                                \
	do {                                                                                       \
		if ((c)->explain)                                                                  \
			snprintf((c)->why, sizeof((c)->why), __VA_ARGS__);                         \
	} while (0)

static const char *const attr_names[POL_A_COUNT] = {"subject_cn", "subject_ou", "subject_o",
						    "issuer",	  "node_id",	"fingerprint"};

static int bsearch_str(const char *const *v, size_t n, const char *s)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s, v[mid]);
		if (c == 0)
			return 1;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

static int bsearch_bytes(const uint8_t *v, size_t n, size_t w, const uint8_t *key)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(key, v + mid * w, w);
		if (c == 0)
			return 1;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

/* '*' any run, '?' any one byte, '\' escapes; linear-time backtracking to the last '*'. */
static bool glob_match(const char *p, const char *s)
{
	const char *star = NULL, *resume = NULL;
	while (*s) {
		if (*p == '*') {
			star = ++p;
			resume = s;
			continue;
		}
		char pc = *p;
		const char *next = p + 1;
		if (pc == '\\' && p[1]) {
			pc = p[1];
			next = p + 2;
		} else if (pc == '?') {
			p = next;
			s++;
			continue;
		}
		if (pc && pc == *s) {
			p = next;
			s++;
			continue;
		}
		if (!star)
			return false;
		p = star;
		s = ++resume;
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

static bool match_str(const pol_matcher *m, const char *v)
{
	switch (m->kind) {
	case POL_M_EQ:
		/* The first byte settles most mismatches without a call. */
		return v[0] == m->strs[0][0] && strcmp(v, m->strs[0]) == 0;
	case POL_M_IN:
		return bsearch_str(m->strs, m->n, v);
	case POL_M_PREFIX:
		return m->lens[0] == 0 ||
		       (v[0] == m->strs[0][0] && strncmp(v, m->strs[0], m->lens[0]) == 0);
	case POL_M_GLOB:
		return glob_match(m->strs[0], v);
	case POL_M_SET:
		return bsearch_str(m->set->strs, m->set->n, v);
	}
	return false;
}

static bool match_bytes(const pol_matcher *m, const uint8_t *v)
{
	size_t w = m->type == POL_T_NODE ? PSC_NODE_ID_LEN : PSC_HASH_LEN;
	switch (m->kind) {
	case POL_M_EQ:
		return memcmp(v, m->bytes, w) == 0;
	case POL_M_IN:
		return bsearch_bytes(m->bytes, m->n, w, v);
	case POL_M_SET:
		return bsearch_bytes(m->set->bytes, m->set->n, w, v);
	default:
		return false;
	}
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	static const char h[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = h[p[i] >> 4];
		out[2 * i + 1] = h[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static pol_res eval_principal(struct ctx *c, const pol_principal *p, const pol_peer *peer,
			      const char *who)
{
	pol_res res = POL_R_MATCH;
	for (size_t i = 0; i < p->n; i++) {
		const pol_attr_match *am = &p->m[i];
		bool ok;
		if (am->attr == POL_A_NODE_ID) {
			ok = match_bytes(&am->m, peer->node_id);
			if (!ok && c->explain) {
				char h[2 * PSC_NODE_ID_LEN + 1];
				hex(peer->node_id, PSC_NODE_ID_LEN, h);
				WHY(c, "%s node_id %s is not %s (principal '%s')", who, h,
				    am->m.text, p->name);
			}
		} else if (am->attr == POL_A_FINGERPRINT) {
			if (!peer->has_fingerprint) {
				WHY(c, "%s has no certificate fingerprint (principal '%s')", who,
				    p->name);
				res = POL_R_ERROR;
				continue;
			}
			ok = match_bytes(&am->m, peer->fingerprint);
			if (!ok && c->explain) {
				char h[2 * PSC_HASH_LEN + 1];
				hex(peer->fingerprint, PSC_HASH_LEN, h);
				WHY(c, "%s fingerprint %s is not %s (principal '%s')", who, h,
				    am->m.text, p->name);
			}
		} else {
			const char *v = am->attr == POL_A_CN   ? peer->subject_cn
					: am->attr == POL_A_OU ? peer->subject_ou
					: am->attr == POL_A_O  ? peer->subject_o
							       : peer->issuer;
			if (!v) {
				WHY(c, "%s certificate has no %s (principal '%s')", who,
				    attr_names[am->attr], p->name);
				res = POL_R_ERROR;
				continue;
			}
			ok = match_str(&am->m, v);
			if (!ok)
				WHY(c, "%s %s '%s' is not %s (principal '%s')", who,
				    attr_names[am->attr], v, am->m.text, p->name);
		}
		if (!ok)
			return POL_R_NOMATCH;
	}
	return res;
}

/* Any of the principals (by index); memoised per decision. */
static pol_res eval_principals(struct ctx *c, const uint8_t *idx, size_t n, const pol_peer *peer,
			       uint8_t *cache, const char *who)
{
	pol_res res = POL_R_NOMATCH;
	char first_why[sizeof(c->why)]; /* only touched when explaining */
	if (c->explain)
		first_why[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		uint8_t k = idx[i];
		pol_res r;
		if (!c->explain && cache[k]) {
			r = (pol_res)(cache[k] - 1);
		} else {
			r = eval_principal(c, &c->pol->principals[k], peer, who);
			cache[k] = (uint8_t)(r + 1);
		}
		if (r == POL_R_MATCH)
			return POL_R_MATCH;
		if (r == POL_R_ERROR)
			res = POL_R_ERROR;
		if (c->explain && (i == 0 || r == POL_R_ERROR))
			memcpy(first_why, c->why, sizeof(first_why));
	}
	if (c->explain) {
		if (n > 1 && res == POL_R_NOMATCH)
			snprintf(c->why, sizeof(c->why),
				 "%s matches none of %zu principals (first: %.200s)", who, n,
				 first_why);
		else
			memcpy(c->why, first_why, sizeof(c->why));
	}
	return res;
}

static const char *label_value(const pol_label *labels, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (labels[i].key && strcmp(labels[i].key, key) == 0)
			return labels[i].value;
	return NULL;
}

pol_res pol_match_psc(const pol_pscmatch *m, const char *name, const pol_label *labels,
		      size_t n_labels, char *why, size_t why_len)
{
	pol_res res = POL_R_MATCH;
	if (m->has_name) {
		if (!name) {
			if (why)
				snprintf(why, why_len, "PSC has no name");
			return POL_R_ERROR;
		}
		if (!match_str(&m->name, name)) {
			if (why)
				snprintf(why, why_len, "PSC name '%s' is not %s", name,
					 m->name.text);
			return POL_R_NOMATCH;
		}
	}
	for (size_t i = 0; i < m->n_labels; i++) {
		const char *v = label_value(labels, n_labels, m->labels[i].key);
		if (!v) {
			if (why && res == POL_R_MATCH)
				snprintf(why, why_len, "PSC has no label '%s'", m->labels[i].key);
			res = POL_R_ERROR;
			continue;
		}
		if (!match_str(&m->labels[i].m, v)) {
			if (why)
				snprintf(why, why_len, "PSC label %s='%s' is not %s",
					 m->labels[i].key, v, m->labels[i].m.text);
			return POL_R_NOMATCH;
		}
	}
	return res;
}

static bool in_window(const pol_window *w, int64_t now)
{
	int64_t local = now + pol_tz_offset(w->tz, now);
	int64_t day = local >= 0 ? local / 86400 : (local - 86399) / 86400;
	int64_t sec = local - day * 86400;
	int wd = (int)(((day + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday; 0 = Monday */
	int minute = (int)(sec / 60);
	if (!(w->days & (1u << wd)))
		return false;
	if (w->from < w->to)
		return minute >= w->from && minute < w->to;
	return minute >= w->from || minute < w->to; /* wraps midnight */
}

/* Evaluates one rule that lists the request's action. */
static pol_res eval_rule(struct ctx *c, const pol_rule *r)
{
	const pol_request *q = c->req;
	pol_res res = POL_R_MATCH;
	char err_why[sizeof(c->why)]; /* only touched when explaining */
	if (c->explain)
		err_why[0] = '\0';
#define STEP(expr)                                                                                 \
	do {                                                                                       \
		pol_res r_ = (expr);                                                               \
		if (r_ == POL_R_NOMATCH)                                                           \
			return POL_R_NOMATCH;                                                      \
		if (r_ == POL_R_ERROR && res == POL_R_MATCH) {                                     \
			res = POL_R_ERROR;                                                         \
			if (c->explain)                                                            \
				memcpy(err_why, c->why, sizeof(err_why));                          \
		}                                                                                  \
	} while (0)

	/* Cheapest predicates first; the result does not depend on the order. */
	if (r->owner >= 0) {
		bool is_owner =
		    memcmp(q->requester.node_id, q->psc->owner_node_id, PSC_NODE_ID_LEN) == 0;
		if (is_owner != (r->owner == 1)) {
			WHY(c, "requester %s the PSC owner", is_owner ? "is" : "is not");
			return POL_R_NOMATCH;
		}
	}
	if (r->has_members) {
		uint32_t m = q->psc->member_count;
		if (m < r->members_min || m > r->members_max) {
			WHY(c, "member count %u is outside %u..%u", m, r->members_min,
			    r->members_max);
			return POL_R_NOMATCH;
		}
	}
	if (r->n_principals)
		STEP(eval_principals(c, r->pidx, r->n_principals, &q->requester, c->preq,
				     "requester"));
	if (r->n_groups) {
		pol_res g = POL_R_NOMATCH;
		for (size_t i = 0; i < r->n_groups && g != POL_R_MATCH; i++) {
			const pol_group *gr = &c->pol->groups[r->gidx[i]];
			pol_res x;
			if (!c->explain && c->grp[gr->idx]) {
				x = (pol_res)(c->grp[gr->idx] - 1);
			} else {
				x = pol_match_psc(&gr->psc, q->psc->name, q->psc->labels,
						  q->psc->n_labels, c->explain ? c->why : NULL,
						  sizeof(c->why));
				c->grp[gr->idx] = (uint8_t)(x + 1);
			}
			if (x == POL_R_ERROR || x == POL_R_MATCH)
				g = x;
		}
		if (g == POL_R_NOMATCH && c->explain && r->n_groups > 1)
			snprintf(c->why, sizeof(c->why), "PSC '%s' is in none of the rule's groups",
				 q->psc->name ? q->psc->name : "");
		STEP(g);
	}
	if (r->has_psc)
		STEP(pol_match_psc(&r->psc, q->psc->name, q->psc->labels, q->psc->n_labels,
				   c->explain ? c->why : NULL, sizeof(c->why)));
	if (r->n_invitee)
		STEP(eval_principals(c, r->iidx, r->n_invitee, q->invitee, c->pinv, "invitee"));
	if (r->n_windows) {
		bool any = false;
		for (size_t i = 0; i < r->n_windows && !any; i++)
			any = in_window(&r->windows[i], q->now);
		if (!any) {
			if (c->explain) {
				const pol_window *w = &r->windows[0];
				int64_t local = q->now + pol_tz_offset(w->tz, q->now);
				int64_t day = local >= 0 ? local / 86400 : (local - 86399) / 86400;
				int64_t y;
				unsigned mo, d;
				pol_civil_from_days(day, &y, &mo, &d);
				int64_t sec = local - day * 86400;
				WHY(c,
				    "local time %04lld-%02u-%02u %02lld:%02lld (%s) is outside "
				    "%s%s",
				    (long long)y, mo, d, (long long)(sec / 3600),
				    (long long)(sec / 60 % 60), pol_tz_name(w->tz), w->text,
				    r->n_windows > 1 ? " and the other windows" : "");
			}
			return POL_R_NOMATCH;
		}
	}
	if (r->has_rate) {
		if (!c->st) {
			WHY(c, "no rate state given, so the rate limit cannot be evaluated");
			STEP(POL_R_ERROR);
		} else {
			uint32_t n = pol_state_count(c->st, q->requester.node_id, q->action, q->now,
						     r->rate_per);
			if (n >= r->rate_max) {
				WHY(c, "requester did %s %u times in the last %llds (limit %u)",
				    pol_action_name(q->action), n, (long long)r->rate_per,
				    r->rate_max);
				return POL_R_NOMATCH;
			}
		}
	}
#undef STEP
	if (res == POL_R_ERROR && c->explain)
		memcpy(c->why, err_why, sizeof(c->why));
	return res;
}

/* ---- limits --------------------------------------------------------------- */

/* gcache (nullable): the decision's group memo, filled as a side effect. */
static bool limits_merge(const pol_policy *pol, const char *name, const pol_label *labels,
			 size_t n_labels, pol_limits *out, const char **conflict, uint8_t *gcache)
{
	*out = pol->defaults;
	bool have_default = false;
	uint32_t dflt = 0;
	for (size_t i = 0; i < pol->n_groups; i++) {
		const pol_group *g = &pol->groups[i];
		/* A PSC lacking a label the group tests is not in the group. */
		pol_res in = pol_match_psc(&g->psc, name, labels, n_labels, NULL, 0);
		if (gcache)
			gcache[i] = (uint8_t)(in + 1);
		if (in != POL_R_MATCH)
			continue;
		const pol_limits_spec *s = &g->limits;
		if (s->has_max_members && s->v.max_members < out->max_members)
			out->max_members = s->v.max_members;
		if (s->has_refresh_min && s->v.refresh_min > out->refresh_min)
			out->refresh_min = s->v.refresh_min;
		if (s->has_refresh_max && s->v.refresh_max < out->refresh_max)
			out->refresh_max = s->v.refresh_max;
		if (s->has_refresh_default && (!have_default || s->v.refresh_default < dflt)) {
			dflt = s->v.refresh_default;
			have_default = true;
		}
		if (s->has_suites) {
			size_t k = 0;
			for (size_t a = 0; a < out->n_suites; a++)
				for (size_t b = 0; b < s->v.n_suites; b++)
					if (out->suites[a] == s->v.suites[b])
						out->suites[k++] = out->suites[a];
			out->n_suites = k;
		}
		if (s->has_wrap) {
			size_t k = 0;
			for (size_t a = 0; a < out->n_wrap_algs; a++)
				for (size_t b = 0; b < s->v.n_wrap_algs; b++)
					if (out->wrap_algs[a] == s->v.wrap_algs[b])
						out->wrap_algs[k++] = out->wrap_algs[a];
			out->n_wrap_algs = k;
		}
		if (out->refresh_min > out->refresh_max || !out->n_suites || !out->n_wrap_algs) {
			*conflict = g->name;
			return false;
		}
	}
	if (have_default)
		out->refresh_default = dflt;
	if (out->refresh_default < out->refresh_min)
		out->refresh_default = out->refresh_min;
	if (out->refresh_default > out->refresh_max)
		out->refresh_default = out->refresh_max;
	return true;
}

psc_rc pol_limits_for(const pol_policy *pol, const char *psc_name, const pol_label *labels,
		      size_t n_labels, pol_limits *out, psc_err *err)
{
	if (!pol || !out || (n_labels && !labels))
		return psc_err_set(err, PSC_E_INVALID_ARG, "pol_limits_for: NULL argument");
	const char *conflict = NULL;
	if (!limits_merge(pol, psc_name, labels, n_labels, out, &conflict, NULL))
		return psc_err_set(
		    err, PSC_E_POLICY_CONFLICT,
		    "PSC '%s': group '%s' leaves no allowed refresh interval, suite "
		    "or wrap algorithm together with the defaults and the PSC's other "
		    "groups; fix the groups' limits in %s",
		    psc_name ? psc_name : "", conflict, pol->file);
	return PSC_OK;
}

/* ---- decide --------------------------------------------------------------- */

static void add_rule(pol_decision *d, const char *id)
{
	if (d->n_rules < POL_DECISION_RULES_MAX)
		d->rules[d->n_rules++] = id;
	else
		d->rules_truncated = true;
}

/* Built-in forbids from the PSC's limits. Returns the pseudo-rule id, or NULL. */
static const char *check_limits(struct ctx *c, bool *error)
{
	const pol_request *q = c->req;
	if (q->action != POL_ACT_ESTABLISH && q->action != POL_ACT_JOIN &&
	    q->action != POL_ACT_INVITE)
		return NULL;
	pol_limits lim;
	const char *conflict = NULL;
	if (!limits_merge(c->pol, q->psc->name, q->psc->labels, q->psc->n_labels, &lim, &conflict,
			  c->explain ? NULL : c->grp)) {
		*error = true;
		WHY(c, "the limits of group '%s' conflict with the PSC's other limits", conflict);
		return "limit.conflict";
	}
	uint32_t after = q->psc->member_count + (q->action == POL_ACT_ESTABLISH ? 0u : 1u);
	if (after > lim.max_members) {
		WHY(c, "%u members would exceed max_members %u", after, lim.max_members);
		return "limit.max_members";
	}
	if (q->n_suites) {
		bool any = false;
		for (size_t i = 0; i < q->n_suites && !any; i++)
			for (size_t j = 0; j < lim.n_suites; j++)
				any |= q->suites[i] == lim.suites[j];
		if (!any) {
			WHY(c, "none of the %zu offered suites is allowed for this PSC",
			    q->n_suites);
			return "limit.suites";
		}
	}
	if (q->n_wrap_algs) {
		bool any = false;
		for (size_t i = 0; i < q->n_wrap_algs && !any; i++)
			for (size_t j = 0; j < lim.n_wrap_algs; j++)
				any |= q->wrap_algs[i] == lim.wrap_algs[j];
		if (!any) {
			WHY(c, "none of the %zu offered wrap algorithms is allowed for this PSC",
			    q->n_wrap_algs);
			return "limit.wrap_algs";
		}
	}
	return NULL;
}

/* False when rule i names principals and none of them is live. */
static inline bool prefilter(const pol_policy *pol, uint32_t i, const uint64_t *live)
{
	const uint64_t *m = pol->rule_pmask[i];
	uint64_t any = 0, hit = 0;
	for (unsigned w = 0; w < POL_PRINCIPALS_MAX / 64; w++) {
		any |= m[w];
		hit |= m[w] & live[w];
	}
	return !any || hit;
}

static void explain_rule(pol_explain *ex, const pol_rule *r, pol_res res, const char *why)
{
	const char *eff = pol_effect_name(r->effect);
	if (res == POL_R_MATCH)
		ex_printf(ex, "rule %s (%s): matched\n", r->id, eff);
	else if (res == POL_R_ERROR)
		ex_printf(ex, "rule %s (%s): error: %s (%s)\n", r->id, eff, why,
			  r->effect == POL_E_FORBID ? "a forbid that cannot be evaluated denies"
						    : "skipped");
	else
		ex_printf(ex, "rule %s (%s): no: %s\n", r->id, eff, why);
}

psc_rc pol_decide(const pol_policy *pol, const pol_state *state, const pol_request *req,
		  pol_decision *out, pol_explain *ex)
{
	if (!out)
		return PSC_E_INVALID_ARG;
	memset(out, 0, sizeof(*out));
	out->outcome = POL_DENY;
	if (!pol || !req || (unsigned)req->action >= POL_ACT_COUNT)
		return PSC_E_INVALID_ARG;
	out->revision = pol->revision;
	if (ex) {
		ex->len = 0;
		ex->truncated = false;
		if (ex->buf && ex->cap)
			ex->buf[0] = '\0';
		if (ex->hits)
			memset(ex->hits, 0, ex->hits_len);
	}
	/* Keeps now +- offsets and windows far from int64 overflow (34,000 years). */
	if (req->now > POL_NOW_MAX || req->now < -POL_NOW_MAX) {
		ex_printf(ex, "request is malformed: now is out of range\ndecision: deny\n");
		return PSC_E_POLICY_REQUEST;
	}
	if ((req->action != POL_ACT_INITIALIZE && !req->psc) ||
	    (req->action == POL_ACT_INVITE && !req->invitee) || (req->n_suites && !req->suites) ||
	    (req->n_wrap_algs && !req->wrap_algs) ||
	    (req->psc && req->psc->n_labels && !req->psc->labels)) {
		ex_printf(ex, "request is malformed: %s needs %s\ndecision: deny\n",
			  pol_action_name(req->action),
			  !req->psc	  ? "a PSC"
			  : !req->invitee ? "an invitee"
					  : "consistent lists");
		return PSC_E_POLICY_REQUEST;
	}
	struct ctx c;
	c.pol = pol;
	c.st = state;
	c.req = req;
	c.explain = ex != NULL;
	memset(c.preq, 0, pol->n_principals);
	memset(c.pinv, 0, pol->n_principals);
	memset(c.grp, 0, pol->n_groups);
	c.why[0] = '\0';

	bool denied = false;
	bool lim_err = false;
	const char *lim = req->psc ? check_limits(&c, &lim_err) : NULL;
	if (lim) {
		denied = true;
		out->forbid_error = lim_err;
		add_rule(out, lim);
		ex_printf(ex, "%s (built-in forbid): %s: %s\n", lim, lim_err ? "error" : "matched",
			  c.why);
	}

	if (ex) {
		/* Explaining: evaluate every rule, so the trace and hits are complete. */
		bool permit = false, ask = false;
		const char *permits[POL_DECISION_RULES_MAX], *asks[POL_DECISION_RULES_MAX];
		size_t np = 0, na = 0;
		bool ptrunc = false, atrunc = false;
		for (size_t i = 0; i < pol->n_rules; i++) {
			const pol_rule *r = &pol->rules[i];
			if (!(r->actions & (1u << req->action))) {
				ex_printf(ex, "rule %s (%s): no: action %s is not listed\n", r->id,
					  pol_effect_name(r->effect), pol_action_name(req->action));
				continue;
			}
			c.why[0] = '\0';
			pol_res res = eval_rule(&c, r);
			explain_rule(ex, r, res, c.why);
			if (res == POL_R_MATCH && ex->hits && i < ex->hits_len)
				ex->hits[i] = 1;
			if (r->effect == POL_E_FORBID && res != POL_R_NOMATCH) {
				if (!denied)
					out->n_rules = 0; /* only forbids decide a deny */
				denied = true;
				if (res == POL_R_ERROR)
					out->forbid_error = true;
				add_rule(out, r->id);
			} else if (res == POL_R_MATCH && r->effect == POL_E_PERMIT) {
				permit = true;
				if (np < POL_DECISION_RULES_MAX)
					permits[np++] = r->id;
				else
					ptrunc = true;
			} else if (res == POL_R_MATCH && r->effect == POL_E_ASK_OWNER) {
				ask = true;
				if (na < POL_DECISION_RULES_MAX)
					asks[na++] = r->id;
				else
					atrunc = true;
			}
		}
		if (!denied && (permit || ask)) {
			out->outcome = permit ? POL_PERMIT : POL_ASK_OWNER;
			out->n_rules = permit ? np : na;
			memcpy(out->rules, permit ? permits : asks, out->n_rules * sizeof(char *));
			out->rules_truncated = permit ? ptrunc : atrunc;
		}
	} else {
		/* Forbids are evaluated even after a limit denied, so both paths
		 * report the same rules. The action's principals are evaluated once;
		 * a rule naming principals of which none matched or failed to
		 * evaluate cannot match and is skipped. */
		uint64_t live[POL_PRINCIPALS_MAX / 64] = {0};
		for (unsigned w = 0; w < POL_PRINCIPALS_MAX / 64; w++)
			for (uint64_t m = pol->action_pmask[req->action][w]; m; m &= m - 1) {
				unsigned k = w * 64 + (unsigned)__builtin_ctzll(m);
				pol_res r = eval_principal(&c, &pol->principals[k], &req->requester,
							   "requester");
				c.preq[k] = (uint8_t)(r + 1);
				if (r != POL_R_NOMATCH)
					live[w] |= 1ull << (k % 64);
			}
		const uint32_t *idx = pol->by_action[req->action][POL_E_FORBID];
		size_t n = pol->n_by_action[req->action][POL_E_FORBID];
		for (size_t i = 0; i < n; i++) {
			if (!prefilter(pol, idx[i], live))
				continue;
			pol_res res = eval_rule(&c, &pol->rules[idx[i]]);
			if (res != POL_R_NOMATCH) {
				denied = true;
				if (res == POL_R_ERROR)
					out->forbid_error = true;
				add_rule(out, pol->rules[idx[i]].id);
			}
		}
		for (int e = POL_E_PERMIT; e <= POL_E_ASK_OWNER && !denied && !out->n_rules; e++) {
			idx = pol->by_action[req->action][e];
			n = pol->n_by_action[req->action][e];
			for (size_t i = 0; i < n; i++)
				if (prefilter(pol, idx[i], live) &&
				    eval_rule(&c, &pol->rules[idx[i]]) == POL_R_MATCH)
					add_rule(out, pol->rules[idx[i]].id);
			if (out->n_rules)
				out->outcome = e == POL_E_PERMIT ? POL_PERMIT : POL_ASK_OWNER;
		}
	}
	if (ex) {
		ex_printf(ex, "decision: %s", pol_outcome_name(out->outcome));
		if (out->n_rules) {
			ex_printf(ex, " (rules:");
			for (size_t i = 0; i < out->n_rules; i++)
				ex_printf(ex, " %s", out->rules[i]);
			ex_printf(ex, "%s)", out->rules_truncated ? " ..." : "");
		} else if (out->outcome == POL_DENY) {
			ex_printf(ex, " (no rule matched: default deny)");
		}
		ex_printf(ex, "\n");
	}
	return PSC_OK;
}
