/*
 * pol_reqfile — request and test files (see pol_reqfile.h).
 * Same strictness as the policy loader: unknown keys, wrong types and
 * duplicates are errors with file:line:column.
 */
#include "pol_reqfile.h"

#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"

static bool digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool pol_parse_time(const char *s, int64_t *out)
{
	size_t len = strlen(s);
	bool all_digits = len > 0 && len <= 18;
	for (size_t i = 0; all_digits && i < len; i++)
		all_digits = s[i] >= '0' && s[i] <= '9';
	if (all_digits) {
		*out = strtoll(s, NULL, 10);
		return true;
	}
	int y, mo, d, h, mi, se, oh = 0, om = 0;
	if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
	    s[13] != ':' || s[16] != ':' || !digits(s, 4, &y) || !digits(s + 5, 2, &mo) ||
	    !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) ||
	    !digits(s + 17, 2, &se))
		return false;
	int sign = 0;
	if (len == 20 && s[19] == 'Z')
		sign = 0;
	else if (len == 25 && (s[19] == '+' || s[19] == '-') && s[22] == ':' &&
		 digits(s + 20, 2, &oh) && digits(s + 23, 2, &om))
		sign = s[19] == '-' ? -1 : 1;
	else
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || oh > 18 ||
	    om > 59)
		return false;
	int64_t days = pol_days_from_civil(y, (unsigned)mo, (unsigned)d);
	int64_t y2;
	unsigned m2, d2;
	pol_civil_from_days(days, &y2, &m2, &d2);
	if (m2 != (unsigned)mo || d2 != (unsigned)d)
		return false; /* 2026-02-30 */
	*out = days * 86400 + h * 3600 + mi * 60 + se - sign * (oh * 3600 + om * 60);
	return true;
}

static psc_rc parse_peer(const pol_ydoc *d, const pol_ynode *n, const char *what, pol_peer *p,
			 psc_err *err)
{
	static const char *const keys[] = {"subject_cn", "subject_ou",	"subject_o", "issuer",
					   "node_id",	 "fingerprint", NULL};
	psc_rc rc = pol_yexpect(d, n, POL_Y_MAP, what, err);
	if (rc != PSC_OK || (rc = pol_yonly(d, n, what, keys, err)) != PSC_OK)
		return rc;
	memset(p, 0, sizeof(*p));
	const pol_ynode *x;
	if ((x = pol_yget(n, "subject_cn")) &&
	    (rc = pol_ystr(d, x, "subject_cn", &p->subject_cn, err)))
		return rc;
	if ((x = pol_yget(n, "subject_ou")) &&
	    (rc = pol_ystr(d, x, "subject_ou", &p->subject_ou, err)))
		return rc;
	if ((x = pol_yget(n, "subject_o")) &&
	    (rc = pol_ystr(d, x, "subject_o", &p->subject_o, err)))
		return rc;
	if ((x = pol_yget(n, "issuer")) && (rc = pol_ystr(d, x, "issuer", &p->issuer, err)))
		return rc;
	if (!(x = pol_yget(n, "node_id")))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n, "%s needs 'node_id'", what);
	if ((rc = pol_yhex(d, x, "node_id", p->node_id, PSC_NODE_ID_LEN, err)) != PSC_OK)
		return rc;
	if ((x = pol_yget(n, "fingerprint"))) {
		if ((rc = pol_yhex(d, x, "fingerprint", p->fingerprint, PSC_HASH_LEN, err)) !=
		    PSC_OK)
			return rc;
		p->has_fingerprint = true;
	}
	return PSC_OK;
}

psc_rc pol_reqdoc_parse(const pol_ydoc *d, const pol_ynode *n, pol_reqdoc *out, psc_err *err)
{
	static const char *const keys[] = {"action", "now",	  "requester", "psc", "invitee",
					   "suites", "wrap_algs", "recent",    NULL};
	psc_rc rc = pol_yexpect(d, n, POL_Y_MAP, "the request", err);
	if (rc != PSC_OK || (rc = pol_yonly(d, n, "the request", keys, err)) != PSC_OK)
		return rc;
	memset(out, 0, sizeof(*out));
	pol_request *q = &out->req;
	const pol_ynode *x = pol_yget(n, "action");
	const char *s;
	if (!x)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n, "the request needs 'action'");
	if ((rc = pol_ystr(d, x, "action", &s, err)) != PSC_OK)
		return rc;
	int a = pol_action_from_name(s);
	if (a < 0)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, x, "unknown action '%s'", s);
	q->action = (pol_action)a;
	if (!(x = pol_yget(n, "now")))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"the request needs 'now' (e.g. 2026-03-29T09:30:00Z)");
	if ((rc = pol_ystr(d, x, "now", &s, err)) != PSC_OK)
		return rc;
	if (!pol_parse_time(s, &q->now))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, x,
				"now must be YYYY-MM-DDTHH:MM:SSZ, ...+HH:MM or UTC seconds, found "
				"'%s'",
				s);
	if (!(x = pol_yget(n, "requester")))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"the request needs 'requester'");
	if ((rc = parse_peer(d, x, "requester", &q->requester, err)) != PSC_OK)
		return rc;
	if ((x = pol_yget(n, "psc"))) {
		static const char *const pk[] = {"name", "labels", "owner", "members", NULL};
		if ((rc = pol_yexpect(d, x, POL_Y_MAP, "psc", err)) != PSC_OK ||
		    (rc = pol_yonly(d, x, "psc", pk, err)) != PSC_OK)
			return rc;
		const pol_ynode *y;
		if ((y = pol_yget(x, "name")) &&
		    (rc = pol_ystr(d, y, "psc.name", &out->psc.name, err)))
			return rc;
		if ((y = pol_yget(x, "labels"))) {
			if ((rc = pol_yexpect(d, y, POL_Y_MAP, "psc.labels", err)) != PSC_OK)
				return rc;
			if (y->n > POL_LABELS_MAX)
				return pol_yerr(err, PSC_E_POLICY_LIMIT, d->file, y,
						"more than %d labels", POL_LABELS_MAX);
			for (size_t i = 0; i < y->n; i++) {
				out->labels[i].key = y->keys[i]->s;
				if ((rc = pol_ystr(d, y->items[i], "label value",
						   &out->labels[i].value, err)) != PSC_OK)
					return rc;
			}
			out->psc.labels = out->labels;
			out->psc.n_labels = y->n;
		}
		if (!(y = pol_yget(x, "owner")))
			return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, x,
					"psc needs 'owner' (a Node-ID, or 'requester')");
		if (y->kind == POL_Y_SCALAR && strcmp(y->s, "requester") == 0)
			memcpy(out->psc.owner_node_id, q->requester.node_id, PSC_NODE_ID_LEN);
		else if ((rc = pol_yhex(d, y, "psc.owner", out->psc.owner_node_id, PSC_NODE_ID_LEN,
					err)) != PSC_OK)
			return rc;
		if ((y = pol_yget(x, "members"))) {
			int64_t v;
			if ((rc = pol_yint(d, y, "psc.members", 0, UINT32_MAX, &v, err)) != PSC_OK)
				return rc;
			out->psc.member_count = (uint32_t)v;
		}
		q->psc = &out->psc;
	} else if (q->action != POL_ACT_INITIALIZE) {
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n, "action %s needs 'psc'",
				pol_action_name(q->action));
	}
	if ((x = pol_yget(n, "invitee"))) {
		if ((rc = parse_peer(d, x, "invitee", &out->invitee, err)) != PSC_OK)
			return rc;
		q->invitee = &out->invitee;
	} else if (q->action == POL_ACT_INVITE) {
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"action invite needs 'invitee'");
	}
	if ((x = pol_yget(n, "suites"))) {
		if ((rc = pol_yexpect(d, x, POL_Y_SEQ, "suites", err)) != PSC_OK)
			return rc;
		if (x->n > POL_ALGS_MAX)
			return pol_yerr(err, PSC_E_POLICY_LIMIT, d->file, x, "too many suites");
		for (size_t i = 0; i < x->n; i++) {
			if ((rc = pol_ystr(d, x->items[i], "suite", &s, err)) != PSC_OK)
				return rc;
			int id = pol_suite_from_name(s);
			if (id < 0)
				return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, x->items[i],
						"unknown suite '%s'", s);
			out->suites[i] = (uint16_t)id;
		}
		q->suites = out->suites;
		q->n_suites = x->n;
	}
	if ((x = pol_yget(n, "wrap_algs"))) {
		if ((rc = pol_yexpect(d, x, POL_Y_SEQ, "wrap_algs", err)) != PSC_OK)
			return rc;
		if (x->n > POL_ALGS_MAX)
			return pol_yerr(err, PSC_E_POLICY_LIMIT, d->file, x, "too many wrap_algs");
		for (size_t i = 0; i < x->n; i++) {
			if ((rc = pol_ystr(d, x->items[i], "wrap algorithm", &s, err)) != PSC_OK)
				return rc;
			int id = pol_wrap_from_name(s);
			if (id < 0)
				return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, x->items[i],
						"unknown wrap algorithm '%s'", s);
			out->wrap_algs[i] = (uint8_t)id;
		}
		q->wrap_algs = out->wrap_algs;
		q->n_wrap_algs = x->n;
	}
	if ((x = pol_yget(n, "recent"))) {
		static const char *const rk[] = {"action", "count", "ago", NULL};
		if ((rc = pol_yexpect(d, x, POL_Y_SEQ, "recent", err)) != PSC_OK)
			return rc;
		if (x->n > POL_RECENT_MAX)
			return pol_yerr(err, PSC_E_POLICY_LIMIT, d->file, x,
					"more than %d entries in recent", POL_RECENT_MAX);
		for (size_t i = 0; i < x->n; i++) {
			const pol_ynode *e = x->items[i], *y;
			if ((rc = pol_yexpect(d, e, POL_Y_MAP, "a recent entry", err)) != PSC_OK ||
			    (rc = pol_yonly(d, e, "a recent entry", rk, err)) != PSC_OK)
				return rc;
			if (!(y = pol_yget(e, "action")) || !pol_yget(e, "count"))
				return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, e,
						"a recent entry needs 'action' and 'count'");
			if ((rc = pol_ystr(d, y, "action", &s, err)) != PSC_OK)
				return rc;
			if ((a = pol_action_from_name(s)) < 0)
				return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, y,
						"unknown action '%s'", s);
			int64_t v;
			if ((rc = pol_yint(d, pol_yget(e, "count"), "count", 0, POL_RATE_MAX, &v,
					   err)) != PSC_OK)
				return rc;
			out->recent[i].action = (pol_action)a;
			out->recent[i].count = (uint32_t)v;
			if ((y = pol_yget(e, "ago"))) {
				if ((rc = pol_yint(d, y, "ago", 0, 366 * 86400, &v, err)) != PSC_OK)
					return rc;
				out->recent[i].ago = v;
			}
		}
		out->n_recent = x->n;
	}
	return PSC_OK;
}

psc_rc pol_reqdoc_load(pol_arena *a, const char *path, pol_reqdoc *out, psc_err *err)
{
	char *buf;
	size_t len;
	psc_rc rc = pol_read_file(path, &buf, &len, err);
	if (rc != PSC_OK)
		return rc;
	pol_ydoc d;
	rc = pol_yaml_parse(a, buf, len, path, &d, err);
	free(buf);
	if (rc != PSC_OK)
		return rc;
	return pol_reqdoc_parse(&d, d.root, out, err);
}

psc_rc pol_reqdoc_state(const pol_reqdoc *r, pol_state **out)
{
	pol_state *st = NULL;
	psc_rc rc = pol_state_new(&st, 64);
	if (rc != PSC_OK)
		return rc;
	for (size_t i = 0; i < r->n_recent; i++)
		for (uint32_t k = 0; k < r->recent[i].count; k++)
			pol_state_record(st, r->req.requester.node_id, r->recent[i].action,
					 r->req.now - r->recent[i].ago);
	*out = st;
	return PSC_OK;
}

psc_rc pol_testfile_load(pol_arena *a, const char *path, pol_testcase **cases, size_t *n,
			 psc_err *err)
{
	char *buf;
	size_t len;
	psc_rc rc = pol_read_file(path, &buf, &len, err);
	if (rc != PSC_OK)
		return rc;
	pol_ydoc d;
	rc = pol_yaml_parse(a, buf, len, path, &d, err);
	free(buf);
	if (rc != PSC_OK)
		return rc;
	static const char *const top[] = {"description", "tests", NULL};
	static const char *const tk[] = {"name", "request", "expect", "rules", NULL};
	if ((rc = pol_yexpect(&d, d.root, POL_Y_MAP, "the test file", err)) != PSC_OK ||
	    (rc = pol_yonly(&d, d.root, "the test file", top, err)) != PSC_OK)
		return rc;
	const pol_ynode *t = pol_yget(d.root, "tests");
	if (!t)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d.file, d.root, "missing 'tests'");
	if ((rc = pol_yexpect(&d, t, POL_Y_SEQ, "tests", err)) != PSC_OK)
		return rc;
	if (t->n == 0)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d.file, t, "tests is empty");
	pol_testcase *c = pol_arena_alloc(a, t->n * sizeof(*c));
	if (!c)
		return PSC_E_NOMEM;
	for (size_t i = 0; i < t->n; i++) {
		const pol_ynode *e = t->items[i], *x;
		if ((rc = pol_yexpect(&d, e, POL_Y_MAP, "a test", err)) != PSC_OK ||
		    (rc = pol_yonly(&d, e, "a test", tk, err)) != PSC_OK)
			return rc;
		c[i].line = e->line;
		c[i].col = e->col;
		if (!(x = pol_yget(e, "name")) || !pol_yget(e, "request") || !pol_yget(e, "expect"))
			return pol_yerr(err, PSC_E_POLICY_SCHEMA, d.file, e,
					"a test needs 'name', 'request' and 'expect'");
		if ((rc = pol_ystr(&d, x, "name", &c[i].name, err)) != PSC_OK)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (strcmp(c[j].name, c[i].name) == 0)
				return pol_yerr(err, PSC_E_POLICY_DUPLICATE, d.file, x,
						"test name '%s' is used twice", c[i].name);
		if (!(c[i].req = pol_arena_alloc(a, sizeof(*c[i].req))))
			return PSC_E_NOMEM;
		if ((rc = pol_reqdoc_parse(&d, pol_yget(e, "request"), c[i].req, err)) != PSC_OK)
			return rc;
		const char *s;
		x = pol_yget(e, "expect");
		if ((rc = pol_ystr(&d, x, "expect", &s, err)) != PSC_OK)
			return rc;
		if (strcmp(s, "permit") == 0)
			c[i].expect = POL_PERMIT;
		else if (strcmp(s, "deny") == 0)
			c[i].expect = POL_DENY;
		else if (strcmp(s, "ask_owner") == 0)
			c[i].expect = POL_ASK_OWNER;
		else
			return pol_yerr(err, PSC_E_POLICY_SCHEMA, d.file, x,
					"expect must be permit, deny or ask_owner, found '%s'", s);
		if ((x = pol_yget(e, "rules"))) {
			if ((rc = pol_yexpect(&d, x, POL_Y_SEQ, "rules", err)) != PSC_OK)
				return rc;
			const char **r = pol_arena_alloc(a, (x->n + 1) * sizeof(*r));
			if (!r)
				return PSC_E_NOMEM;
			for (size_t j = 0; j < x->n; j++)
				if ((rc = pol_ystr(&d, x->items[j], "rule id", &r[j], err)) !=
				    PSC_OK)
					return rc;
			c[i].rules = r;
			c[i].n_rules = x->n;
			c[i].has_rules = true;
		}
	}
	*cases = c;
	*n = t->n;
	return PSC_OK;
}
