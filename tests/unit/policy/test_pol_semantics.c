/* Decision semantics: forbid > permit > ask_owner > deny, errors, order,
 * limits, rate limits, explain traces, reload. */
#include <stdlib.h>
#include <unistd.h>

#include "pol_testutil.h"
#include "psc_test.h"

#define HDR                                                                                        \
	"version: 1\nprincipals:\n  nobody: {subject_cn: {eq: nobody}}\n"                          \
	"  ou_ops: {subject_ou: {eq: Operations}}\nrules:\n"

static const char *rule_text(const char *id, const char *effect, bool matches)
{
	static char buf[3][256];
	static int k;
	char *b = buf[k++ % 3];
	snprintf(b, 256, "  - {id: %s, effect: %s, actions: [join]%s}\n", id, effect,
		 matches ? "" : ", principals: [nobody]");
	return b;
}

static pol_decision decide_join(const pol_policy *pol)
{
	pol_request q;
	pol_psc psc;
	req_init(&q, &psc, POL_ACT_JOIN, 1000);
	pol_decision d;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	return d;
}

/* Every combination of a matching / non-matching forbid, permit and ask_owner,
 * in both rule orders, with and without explain. */
static void every_effect_combination(void **state)
{
	(void)state;
	for (int mask = 0; mask < 8; mask++) {
		bool f = mask & 1, p = mask & 2, a = mask & 4;
		const char *rf = rule_text("f", "forbid", f);
		const char *rp = rule_text("p", "permit", p);
		const char *ra = rule_text("a", "ask_owner", a);
		char y1[1024], y2[1024];
		snprintf(y1, sizeof(y1), HDR "%s%s%s", rf, rp, ra);
		snprintf(y2, sizeof(y2), HDR "%s%s%s", ra, rp, rf);
		pol_outcome want = f ? POL_DENY : p ? POL_PERMIT : a ? POL_ASK_OWNER : POL_DENY;
		const char *want_rule = f ? "f" : p ? "p" : a ? "a" : NULL;
		for (int order = 0; order < 2; order++) {
			pol_policy *pol = load_ok(order ? y2 : y1);
			for (int ex = 0; ex < 2; ex++) {
				pol_request q;
				pol_psc psc;
				req_init(&q, &psc, POL_ACT_JOIN, 1000);
				char buf[4096];
				unsigned char hits[3];
				pol_explain e = {
				    .buf = buf, .cap = sizeof(buf), .hits = hits, .hits_len = 3};
				pol_decision d;
				assert_int_equal(pol_decide(pol, NULL, &q, &d, ex ? &e : NULL),
						 PSC_OK);
				assert_int_equal(d.outcome, want);
				assert_false(d.forbid_error);
				if (want_rule) {
					assert_int_equal(d.n_rules, 1);
					assert_string_equal(d.rules[0], want_rule);
				} else {
					assert_int_equal(d.n_rules, 0);
				}
				assert_string_equal(d.revision, pol_policy_revision(pol));
				if (ex) {
					/* rules are sorted by id: a, f, p */
					assert_int_equal(hits[0], a);
					assert_int_equal(hits[1], f);
					assert_int_equal(hits[2], p);
				}
			}
			pol_policy_free(&pol);
			assert_null(pol);
		}
	}
}

/* Several matching rules of the deciding effect are all reported, sorted. */
static void all_deciding_rules_reported_sorted(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(HDR "  - {id: z-permit, effect: permit, actions: [join]}\n"
				      "  - {id: a-permit, effect: permit, actions: [join]}\n"
				      "  - {id: m-ask, effect: ask_owner, actions: [join]}\n");
	pol_decision d = decide_join(pol);
	assert_int_equal(d.outcome, POL_PERMIT);
	assert_int_equal(d.n_rules, 2);
	assert_string_equal(d.rules[0], "a-permit");
	assert_string_equal(d.rules[1], "z-permit");
	pol_policy_free(&pol);
}

/* A forbid that cannot be evaluated denies; a permit that cannot is skipped. */
static void errors_in_forbid_deny_errors_in_permit_skip(void **state)
{
	(void)state;
	pol_request q;
	pol_psc psc;
	pol_decision d;
	/* forbid on OU; requester has no OU -> error -> deny, even with a permit */
	pol_policy *pol =
	    load_ok(HDR "  - {id: f, effect: forbid, actions: [join], principals: [ou_ops]}\n"
			"  - {id: p, effect: permit, actions: [join]}\n");
	req_init(&q, &psc, POL_ACT_JOIN, 0);
	q.requester.subject_ou = NULL;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_true(d.forbid_error);
	assert_string_equal(d.rules[0], "f");
	/* the same forbid with a non-matching later predicate does not deny */
	pol_policy_free(&pol);
	pol = load_ok(HDR "  - {id: f, effect: forbid, actions: [join], principals: [ou_ops],\n"
			  "     when: {members: {min: 100}}}\n"
			  "  - {id: p, effect: permit, actions: [join]}\n");
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	pol_policy_free(&pol);
	/* permit that errors is skipped: falls through to ask_owner */
	pol = load_ok(HDR "  - {id: p, effect: permit, actions: [join], principals: [ou_ops]}\n"
			  "  - {id: a, effect: ask_owner, actions: [join]}\n");
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_ASK_OWNER);
	assert_string_equal(d.rules[0], "a");
	/* ask_owner that errors is skipped too: default deny */
	pol_policy_free(&pol);
	pol =
	    load_ok(HDR "  - {id: a, effect: ask_owner, actions: [join], principals: [ou_ops]}\n");
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_int_equal(d.n_rules, 0);
	assert_false(d.forbid_error);
	/* rate condition without state: forbid denies */
	pol_policy_free(&pol);
	pol = load_ok(
	    HDR "  - {id: f, effect: forbid, actions: [join], when: {rate: {max: 3, per: 60}}}\n"
		"  - {id: p, effect: permit, actions: [join]}\n");
	req_init(&q, &psc, POL_ACT_JOIN, 0);
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_true(d.forbid_error);
	pol_policy_free(&pol);
	/* a missing label is an error: forbid denies */
	pol = load_ok(
	    HDR
	    "  - {id: f, effect: forbid, actions: [join], psc: {labels: {tier: {eq: secret}}}}\n"
	    "  - {id: p, effect: permit, actions: [join]}\n");
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_true(d.forbid_error);
	pol_label lb = {"tier", "public"};
	psc.labels = &lb;
	psc.n_labels = 1;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	pol_policy_free(&pol);
}

/* The owner is asked only when no forbid and no permit matched. */
static void ask_owner_never_overrides_forbid(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(HDR "  - {id: f, effect: forbid, actions: [join, invite]}\n"
				      "  - {id: a, effect: ask_owner, actions: [join, invite]}\n");
	pol_decision d = decide_join(pol);
	assert_int_equal(d.outcome, POL_DENY);
	assert_string_equal(d.rules[0], "f");
	pol_policy_free(&pol);
}

static void matchers_eq_in_prefix_glob_set(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(
	    "version: 1\n"
	    "sets:\n"
	    "  cns: {strings: [bob, carol]}\n"
	    "  nodes: {node_ids: [\"02020202020202020202020202020202\"]}\n"
	    "  fps: {fingerprints: "
	    "[\"0303030303030303030303030303030303030303030303030303030303030303\"]}\n"
	    "principals:\n"
	    "  eq: {subject_cn: {eq: alice}}\n"
	    "  in: {subject_ou: {in: [Sales, Operations]}}\n"
	    "  prefix: {issuer: {prefix: \"CN=Ro\"}}\n"
	    "  glob: {subject_cn: {glob: \"a?i*e\"}}\n"
	    "  set: {subject_cn: {in_set: cns}}\n"
	    "  node: {node_id: {in_set: nodes}}\n"
	    "  nodeeq: {node_id: {eq: \"01:01:01:01:01:01:01:01:01:01:01:01:01:01:01:01\"}}\n"
	    "  fp: {fingerprint: {in_set: fps}}\n"
	    "  esc: {subject_cn: {glob: \"a\\\\*\"}}\n"
	    "rules:\n"
	    "  - {id: r-eq, effect: permit, actions: [join], principals: [eq]}\n"
	    "  - {id: r-in, effect: permit, actions: [join], principals: [in]}\n"
	    "  - {id: r-prefix, effect: permit, actions: [join], principals: [prefix]}\n"
	    "  - {id: r-glob, effect: permit, actions: [join], principals: [glob]}\n"
	    "  - {id: r-set, effect: permit, actions: [join], principals: [set]}\n"
	    "  - {id: r-node, effect: permit, actions: [join], principals: [node]}\n"
	    "  - {id: r-nodeeq, effect: permit, actions: [join], principals: [nodeeq]}\n"
	    "  - {id: r-fp, effect: permit, actions: [join], principals: [fp]}\n"
	    "  - {id: r-esc, effect: permit, actions: [join], principals: [esc]}\n");
	pol_request q;
	pol_psc psc;
	pol_decision d;
	req_init(&q, &psc, POL_ACT_JOIN, 0); /* alice, Operations, CN=Root, node 01 */
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	const char *want[] = {"r-eq", "r-glob", "r-in", "r-nodeeq", "r-prefix"};
	assert_int_equal(d.n_rules, 5);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(d.rules[i], want[i]);

	peer_init(&q.requester, "carol", "Sales", 2);
	q.requester.issuer = "CN=Other";
	memset(q.requester.fingerprint, 3, 32);
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	const char *want2[] = {"r-fp", "r-in", "r-node", "r-set"};
	assert_int_equal(d.n_rules, 4);
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(d.rules[i], want2[i]);

	peer_init(&q.requester, "a*", "X", 7);
	q.requester.issuer = "X";
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.n_rules, 1);
	assert_string_equal(d.rules[0], "r-esc");
	peer_init(&q.requester, "ab", "X", 7);
	q.requester.issuer = "X";
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	pol_policy_free(&pol);
}

static void owner_members_invitee_conditions(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(
	    "version: 1\nprincipals:\n  partner: {subject_o: {eq: Partner}}\n"
	    "rules:\n"
	    "  - {id: own, effect: permit, actions: [invite], when: {owner: true, members: {min: "
	    "1, max: 9}}}\n"
	    "  - {id: nopartner, effect: forbid, actions: [invite], when: {invitee: [partner]}}\n"
	    "  - {id: notowner, effect: permit, actions: [destroy], when: {owner: false}}\n");
	pol_request q;
	pol_psc psc;
	pol_peer inv;
	pol_decision d;
	req_init(&q, &psc, POL_ACT_INVITE, 0);
	peer_init(&inv, "bob", "Ops", 5);
	q.invitee = &inv;
	memcpy(psc.owner_node_id, q.requester.node_id, 16);
	psc.member_count = 9;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	psc.member_count = 10;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	psc.member_count = 5;
	inv.subject_o = "Partner";
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_string_equal(d.rules[0], "nopartner");
	inv.subject_o = "Example";
	memset(psc.owner_node_id, 9, 16);
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	/* invite without an invitee is a malformed request: deny + error code */
	q.invitee = NULL;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_E_POLICY_REQUEST);
	assert_int_equal(d.outcome, POL_DENY);
	/* destroy by a non-owner (rule says owner: false) */
	q.action = POL_ACT_DESTROY;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	memcpy(psc.owner_node_id, q.requester.node_id, 16);
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	/* bad arguments */
	assert_int_equal(pol_decide(NULL, NULL, &q, &d, NULL), PSC_E_INVALID_ARG);
	q.action = POL_ACT_COUNT;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_E_INVALID_ARG);
	assert_int_equal(d.outcome, POL_DENY);
	q.action = POL_ACT_DESTROY;
	q.now = INT64_MAX;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_E_POLICY_REQUEST);
	assert_int_equal(d.outcome, POL_DENY);
	q.now = 0;
	q.action = POL_ACT_JOIN;
	q.psc = NULL;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_E_POLICY_REQUEST);
	pol_policy_free(&pol);
}

static const char LIMITS_POLICY[] =
    "version: 1\n"
    "groups:\n"
    "  ops: {psc: {name: {prefix: ops-}}, limits: {max_members: 50,\n"
    "        refresh: {min: 300, max: 3600, default: 900}, wrap_algs: [rsa-oaep-sha256, "
    "ecdh-p256-aesprf-kwp]}}\n"
    "  secret: {psc: {labels: {tier: {eq: secret}}}, limits: {max_members: 20, refresh: {max: "
    "1800, default: 1200},\n"
    "        wrap_algs: [ecdh-p256-aesprf-kwp]}}\n"
    "  legacy: {psc: {name: {eq: legacy}}, limits: {wrap_algs: [rsa-oaep-sha1]}}\n"
    "  strange: {psc: {name: {eq: ops-strange}}, limits: {wrap_algs: [rsa-oaep-sha1]}}\n"
    "defaults: {max_members: 500, refresh: {min: 60, max: 86400, default: 3600}}\n"
    "rules:\n"
    "  - {id: p, effect: permit, actions: [establish, join, invite]}\n";

static void limits_merge_most_restrictive(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(LIMITS_POLICY);
	pol_limits l;
	psc_err err;
	assert_int_equal(pol_limits_for(pol, "misc", NULL, 0, &l, &err), PSC_OK);
	assert_int_equal(l.max_members, 500);
	assert_int_equal(l.refresh_min, 60);
	assert_int_equal(l.refresh_max, 86400);
	assert_int_equal(l.refresh_default, 3600);
	assert_int_equal(l.n_suites, 1);
	assert_int_equal(l.suites[0], PSC_SUITE_AES256GCM_HKDF_SHA256);
	assert_int_equal(l.n_wrap_algs, 3);
	assert_int_equal(pol_limits_for(pol, "ops-a", NULL, 0, &l, &err), PSC_OK);
	assert_int_equal(l.max_members, 50);
	assert_int_equal(l.refresh_min, 300);
	assert_int_equal(l.refresh_max, 3600);
	assert_int_equal(l.refresh_default, 900);
	assert_int_equal(l.n_wrap_algs, 2);
	pol_label lb = {"tier", "secret"};
	assert_int_equal(pol_limits_for(pol, "ops-a", &lb, 1, &l, &err), PSC_OK);
	assert_int_equal(l.max_members, 20);
	assert_int_equal(l.refresh_min, 300);
	assert_int_equal(l.refresh_max, 1800);
	assert_int_equal(l.refresh_default, 900); /* smallest group default */
	assert_int_equal(l.n_wrap_algs, 1);
	assert_int_equal(l.wrap_algs[0], PSC_WRAP_ECDH_P256_AESPRF_KWP);
	assert_int_equal(pol_limits_for(pol, "ops-strange", NULL, 0, &l, &err),
			 PSC_E_POLICY_CONFLICT);
	assert_non_null(strstr(err.detail, "PSC 'ops-strange': group 'strange' leaves no allowed"));
	pol_policy_free(&pol);
}

static void limits_enforced_as_builtin_forbids(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(LIMITS_POLICY);
	pol_request q;
	pol_psc psc;
	pol_decision d;
	req_init(&q, &psc, POL_ACT_JOIN, 0);
	psc.name = "ops-a";
	psc.member_count = 49;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	psc.member_count = 50;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_string_equal(d.rules[0], "limit.max_members");
	q.action = POL_ACT_ESTABLISH; /* establish counts the initial list itself */
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	psc.member_count = 51;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	psc.member_count = 1;
	const uint8_t sha1_only[] = {PSC_WRAP_RSA_OAEP_SHA1};
	q.wrap_algs = sha1_only;
	q.n_wrap_algs = 1;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_string_equal(d.rules[0], "limit.wrap_algs");
	const uint8_t both[] = {PSC_WRAP_RSA_OAEP_SHA1, PSC_WRAP_RSA_OAEP_SHA256};
	q.wrap_algs = both;
	q.n_wrap_algs = 2;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	const uint16_t bad_suite[] = {0x7777};
	q.suites = bad_suite;
	q.n_suites = 1;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_string_equal(d.rules[0], "limit.suites");
	q.n_suites = 0;
	psc.name = "ops-strange";
	assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	assert_true(d.forbid_error);
	assert_string_equal(d.rules[0], "limit.conflict");
	pol_policy_free(&pol);
}

static void rate_limits_slide_and_are_per_requester_and_action(void **state)
{
	(void)state;
	pol_policy *pol = load_ok("version: 1\nrules:\n"
				  "  - {id: p, effect: permit, actions: [join, invite], when: "
				  "{rate: {max: 3, per: 60}}}\n");
	pol_state *st = NULL;
	assert_int_equal(pol_state_new(&st, 16), PSC_OK);
	pol_request q;
	pol_psc psc;
	pol_decision d;
	req_init(&q, &psc, POL_ACT_JOIN, 1000);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
		assert_int_equal(d.outcome, POL_PERMIT);
		pol_state_record(st, q.requester.node_id, q.action, q.now + i);
	}
	q.now = 1002;
	assert_int_equal(pol_state_count(st, q.requester.node_id, POL_ACT_JOIN, q.now, 60), 3);
	assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	/* another action and another requester are counted apart */
	pol_peer inv;
	peer_init(&inv, "x", "y", 4);
	q.invitee = &inv;
	q.action = POL_ACT_INVITE;
	assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	q.action = POL_ACT_JOIN;
	q.invitee = NULL;
	memset(q.requester.node_id, 2, 16);
	assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	memset(q.requester.node_id, 1, 16);
	/* window (now-60, now]: the event at 1000 drops out at 1060 */
	q.now = 1059;
	assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_DENY);
	q.now = 1060;
	assert_int_equal(pol_state_count(st, q.requester.node_id, POL_ACT_JOIN, q.now, 60), 2);
	assert_int_equal(pol_decide(pol, st, &q, &d, NULL), PSC_OK);
	assert_int_equal(d.outcome, POL_PERMIT);
	pol_state_free(&st);
	assert_null(st);
	pol_state_free(&st); /* NULL-safe */
	pol_policy_free(&pol);
}

static void rate_state_keeps_at_most_rate_max_and_evicts_idle_keys(void **state)
{
	(void)state;
	pol_state *st = NULL;
	assert_int_equal(pol_state_new(&st, 64), PSC_OK);
	uint8_t node[16] = {7};
	for (int i = 0; i < POL_RATE_MAX + 50; i++)
		pol_state_record(st, node, POL_ACT_JOIN, 100);
	assert_int_equal(pol_state_count(st, node, POL_ACT_JOIN, 100, 10), POL_RATE_MAX);
	/* Far more keys than capacity: the table stays bounded and the newest
	 * keys are kept. */
	for (uint32_t k = 0; k < 10000; k++) {
		uint8_t n2[16] = {0};
		memcpy(n2, &k, sizeof(k));
		n2[15] = 0xee;
		pol_state_record(st, n2, POL_ACT_INVITE, 200 + k);
	}
	uint8_t last[16] = {0};
	uint32_t k = 9999;
	memcpy(last, &k, sizeof(k));
	last[15] = 0xee;
	assert_int_equal(pol_state_count(st, last, POL_ACT_INVITE, 200 + k, 10), 1);
	pol_state_free(&st);
}

static void explain_trace_names_failing_predicate_and_value(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(
	    "version: 1\nprincipals:\n  ops: {subject_ou: {eq: Operations}, subject_cn: {prefix: "
	    "ops-}}\n"
	    "rules:\n"
	    "  - {id: a-cn, effect: permit, actions: [join], principals: [ops]}\n"
	    "  - {id: b-members, effect: permit, actions: [join], when: {members: {max: 2}}}\n"
	    "  - {id: c-time, effect: permit, actions: [join], when: {time: {zone: UTC, from: "
	    "\"09:00\", to: \"17:00\"}}}\n"
	    "  - {id: d-destroy, effect: permit, actions: [destroy]}\n"
	    "  - {id: e-ask, effect: ask_owner, actions: [join]}\n");
	pol_request q;
	pol_psc psc;
	pol_decision d;
	req_init(&q, &psc, POL_ACT_JOIN, 8 * 3600); /* 1970-01-01 08:00 UTC */
	char buf[4096];
	pol_explain ex = {.buf = buf, .cap = sizeof(buf)};
	assert_int_equal(pol_decide(pol, NULL, &q, &d, &ex), PSC_OK);
	assert_int_equal(d.outcome, POL_ASK_OWNER);
	assert_string_equal(buf, "rule a-cn (permit): no: requester subject_cn 'alice' is not "
				 "prefix 'ops-' (principal 'ops')\n"
				 "rule b-members (permit): no: member count 3 is outside 0..2\n"
				 "rule c-time (permit): no: local time 1970-01-01 08:00 (UTC) is "
				 "outside UTC 09:00-17:00\n"
				 "rule d-destroy (permit): no: action join is not listed\n"
				 "rule e-ask (ask_owner): matched\n"
				 "decision: ask_owner (rules: e-ask)\n");
	assert_false(ex.truncated);
	/* a tiny buffer truncates, never overflows */
	char tiny[16];
	pol_explain ex2 = {.buf = tiny, .cap = sizeof(tiny)};
	assert_int_equal(pol_decide(pol, NULL, &q, &d, &ex2), PSC_OK);
	assert_true(ex2.truncated);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	/* A missing attribute is an error, reported as such; a predicate that
	 * fails outright (the CN prefix) makes the rule simply not match. */
	q.requester.subject_ou = NULL;
	assert_int_equal(pol_decide(pol, NULL, &q, &d, &ex), PSC_OK);
	assert_non_null(
	    strstr(buf, "rule a-cn (permit): no: requester subject_cn 'alice' is not prefix"));
	q.requester.subject_cn = "ops-alice";
	assert_int_equal(pol_decide(pol, NULL, &q, &d, &ex), PSC_OK);
	assert_non_null(strstr(buf,
			       "rule a-cn (permit): error: requester certificate has no subject_ou "
			       "(principal 'ops') (skipped)\n"));
	pol_policy_free(&pol);
}

static void revision_is_sha256_of_bytes_and_reload_keeps_old_on_error(void **state)
{
	(void)state;
	const char *y = "version: 1\nrules: []\n";
	pol_policy *pol = load_ok(y);
	/* sha256sum of the exact bytes */
	assert_string_equal(pol_policy_revision(pol),
			    "7f2c43106364d8112fcc3060e4ab8b20f5d1a17d9cbf3c2540529663004adff8");
	assert_int_equal(pol_policy_warning_count(pol), 1);
	assert_string_equal(pol_policy_warning(pol, 0),
			    "t.yaml:2:8: warning: no rules: every request is denied");
	char dir[4096], path[4200];
	assert_int_equal(pt_tmpdir(dir, "policy"), 0);
	snprintf(path, sizeof(path), "%s/p.yaml", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(y, f);
	fclose(f);
	pol_policy *active = NULL;
	psc_err err;
	assert_int_equal(pol_policy_reload(&active, path, NULL, &err), PSC_OK);
	assert_string_equal(pol_policy_revision(active), pol_policy_revision(pol));
	const pol_policy *before = active;
	f = fopen(path, "w");
	fputs("version: 1\nrules: [{id: x, effect: ask_owner, actions: [destroy]}]\n", f);
	fclose(f);
	char want[4400];
	snprintf(want, sizeof(want),
		 "%s:2:46: rule 'x': ask_owner cannot apply to destroy (the "
		 "owner cannot be asked to authorise destroying its PSC)",
		 path);
	assert_int_equal(pol_policy_reload(&active, path, NULL, &err), PSC_E_POLICY_RULE);
	assert_string_equal(err.detail, want);
	assert_ptr_equal(active, before);
	f = fopen(path, "w");
	fputs("version: 1\nrules: [{id: x, effect: permit, actions: [destroy]}]\n", f);
	fclose(f);
	assert_int_equal(pol_policy_reload(&active, path, NULL, &err), PSC_OK);
	assert_string_not_equal(pol_policy_revision(active), pol_policy_revision(pol));
	assert_int_equal(pol_policy_rule_count(active), 1);
	unlink(path);
	assert_int_equal(pol_policy_reload(&active, path, NULL, &err), PSC_E_POLICY_IO);
	assert_int_equal(pol_policy_rule_count(active), 1);
	pt_rm_rf(dir);
	pol_policy_free(&active);
	pol_policy_free(&pol);
	pol_policy_free(&pol);
}

/* The fast path (principal prefilter, memoised groups, early exits) and the
 * explaining path (every rule, no memo) must decide identically. */
static void fast_path_and_explain_agree(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(
	    "version: 1\n"
	    "sets: {orgs: {strings: [Example, Partner]}}\n"
	    "principals:\n"
	    "  ops: {subject_ou: {eq: Operations}}\n"
	    "  org: {subject_o: {in_set: orgs}, subject_cn: {glob: \"*a*\"}}\n"
	    "  pre: {subject_cn: {prefix: b}}\n"
	    "  iss: {issuer: {eq: \"CN=Root\"}, subject_ou: {in: [Sales, Ops]}}\n"
	    "groups:\n"
	    "  g1: {psc: {name: {prefix: ops-}}, limits: {max_members: 7}}\n"
	    "  g2: {psc: {labels: {tier: {eq: gold}}}}\n"
	    "rules:\n"
	    "  - {id: f1, effect: forbid, actions: [join, invite], principals: [pre], groups: "
	    "[g2]}\n"
	    "  - {id: f2, effect: forbid, actions: [join], principals: [iss], when: {members: "
	    "{min: 5}}}\n"
	    "  - {id: p1, effect: permit, actions: [join, invite], principals: [ops, org]}\n"
	    "  - {id: p2, effect: permit, actions: [join], groups: [g1, g2]}\n"
	    "  - {id: p3, effect: permit, actions: [destroy], when: {owner: true}}\n"
	    "  - {id: a1, effect: ask_owner, actions: [join, invite], principals: [pre, iss]}\n"
	    "  - {id: a2, effect: ask_owner, actions: [report_departure], groups: [g2]}\n");
	const char *cns[] = {"alice", "bob", "carl", NULL};
	const char *ous[] = {"Operations", "Sales", NULL};
	const char *os[] = {"Example", "Other", NULL};
	const char *names[] = {"ops-1", "misc"};
	const char *tiers[] = {"gold", "tin", NULL};
	const pol_action acts[] = {POL_ACT_JOIN, POL_ACT_INVITE, POL_ACT_DESTROY,
				   POL_ACT_REPORT_DEPARTURE};
	/* Every combination of action, CN, OU, O, PSC name, label and member
	 * count: one counter decoded digit by digit, instead of seven loops. */
	const size_t total = 4 * 4 * 3 * 3 * 2 * 3 * 2;
	size_t seen[3] = {0}, errors = 0, limits = 0;
	for (size_t v = 0; v < total; v++) {
		size_t x = v;
		size_t a = x % 4, i = (x /= 4) % 4, j = (x /= 4) % 3, k = (x /= 3) % 3;
		size_t n = (x /= 3) % 2, t = (x /= 2) % 3;
		uint32_t m = (x / 3) % 2 ? 7 : 1;
		pol_request q;
		pol_psc psc;
		pol_peer inv;
		req_init(&q, &psc, acts[a], 0);
		q.requester.subject_cn = cns[i];
		q.requester.subject_ou = ous[j];
		q.requester.subject_o = os[k];
		peer_init(&inv, "x", "y", 5);
		q.invitee = &inv;
		psc.name = names[n];
		pol_label lb = {"tier", tiers[t]};
		psc.labels = &lb;
		psc.n_labels = tiers[t] ? 1 : 0;
		psc.member_count = m;
		if (m > 5)
			memcpy(psc.owner_node_id, q.requester.node_id, 16);
		pol_decision d1, d2;
		char buf[4096];
		pol_explain ex = {.buf = buf, .cap = sizeof(buf)};
		assert_int_equal(pol_decide(pol, NULL, &q, &d1, NULL), PSC_OK);
		assert_int_equal(pol_decide(pol, NULL, &q, &d2, &ex), PSC_OK);
		assert_int_equal(d1.outcome, d2.outcome);
		assert_int_equal(d1.forbid_error, d2.forbid_error);
		assert_int_equal(d1.n_rules, d2.n_rules);
		for (size_t r = 0; r < d1.n_rules; r++)
			assert_string_equal(d1.rules[r], d2.rules[r]);
		seen[d1.outcome]++;
		errors += d1.forbid_error;
		limits += d1.n_rules && strncmp(d1.rules[0], "limit.", 6) == 0;
	}
	/* The grid reaches every outcome, erroring forbids and limit denials. */
	assert_true(seen[POL_PERMIT] && seen[POL_DENY] && seen[POL_ASK_OWNER]);
	assert_true(errors > 0 && limits > 0);
	pol_policy_free(&pol);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_effect_combination),
	    cmocka_unit_test(fast_path_and_explain_agree),
	    cmocka_unit_test(all_deciding_rules_reported_sorted),
	    cmocka_unit_test(errors_in_forbid_deny_errors_in_permit_skip),
	    cmocka_unit_test(ask_owner_never_overrides_forbid),
	    cmocka_unit_test(matchers_eq_in_prefix_glob_set),
	    cmocka_unit_test(owner_members_invitee_conditions),
	    cmocka_unit_test(limits_merge_most_restrictive),
	    cmocka_unit_test(limits_enforced_as_builtin_forbids),
	    cmocka_unit_test(rate_limits_slide_and_are_per_requester_and_action),
	    cmocka_unit_test(rate_state_keeps_at_most_rate_max_and_evicts_idle_keys),
	    cmocka_unit_test(explain_trace_names_failing_predicate_and_value),
	    cmocka_unit_test(revision_is_sha256_of_bytes_and_reload_keeps_old_on_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
