/* Every rejection of a bad policy file, with its exact message and position,
 * and the warnings `psc-policy check` prints. */
#include <stdlib.h>

#include "pol_testutil.h"

struct bad {
	const char *yaml;
	psc_rc rc;
	const char *msg; /* exact err.detail */
};

#define R1 "rules:\n  - {id: r, effect: permit, actions: [join]}\n"

static const struct bad cases[] = {
    {"version: 1\nrules: [\n", PSC_E_POLICY_SYNTAX,
     "t.yaml:3:1: YAML syntax error: did not find expected node content while parsing a flow node"},
    {"version: 1\n  rules: []\n", PSC_E_POLICY_SYNTAX,
     "t.yaml:2:8: YAML syntax error: mapping values are not allowed in this context"},
    {"version: 1\nrulez: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:2:1: unknown key 'rulez' in the policy (allowed: version, description, sets, "
     "principals, groups, defaults, rules)"},
    {"version: 1\nversion: 1\nrules: []\n", PSC_E_POLICY_DUPLICATE,
     "t.yaml:2:1: duplicate key 'version' (first at line 1, column 1)"},
    {"version: 1\nrules:\n  - &r {id: a, effect: permit, actions: [join]}\n", PSC_E_POLICY_FEATURE,
     "t.yaml:3:5: anchors (&name) are not allowed in policy files; write the value out or use a "
     "named set"},
    {"version: 1\nrules: *r\n", PSC_E_POLICY_FEATURE,
     "t.yaml:2:8: aliases (*name) are not allowed in policy files"},
    {"version: !!int 1\nrules: []\n", PSC_E_POLICY_FEATURE,
     "t.yaml:1:10: tags (!name) are not allowed in policy files"},
    {"version: 1\nrules: []\n---\nversion: 1\n", PSC_E_POLICY_FEATURE,
     "t.yaml:3:1: a second YAML document; a file holds exactly one"},
    {"", PSC_E_POLICY_SCHEMA, "t.yaml:1:1: the file is empty"},
    {"- 1\n", PSC_E_POLICY_SCHEMA, "t.yaml:1:1: the policy must be a mapping, found a sequence"},
    {"version: 1\nrules: {}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:2:8: 'rules' must be a sequence, found a mapping"},
    {"version: one\nrules: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:1:10: version must be an integer, found 'one'"},
    {"version: \"1\"\nrules: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:1:10: version must be an integer, found '1'"},
    {"version: 2\nrules: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:1:10: version must be between 1 and 1, found 2"},
    {"rules: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:1:1: missing 'version: 1' at the top of the policy"},
    {"version: 1\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:1:1: missing 'rules' (a list; without rules every request is denied)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], principals: [ghost]}\n",
     PSC_E_POLICY_REF, "t.yaml:3:59: principals refers to undefined principal 'ghost'"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], groups: [ghost]}\n",
     PSC_E_POLICY_REF, "t.yaml:3:55: rule 'r' refers to undefined group 'ghost'"},
    {"version: 1\nprincipals:\n  p: {node_id: {in_set: ghost}}\n" R1, PSC_E_POLICY_REF,
     "t.yaml:3:25: principal 'p' node_id refers to undefined set 'ghost'"},
    {"version: 1\nprincipals: {i: {subject_o: {eq: x}}}\nrules:\n"
     "  - {id: r, effect: permit, actions: [invite], when: {invitee: [ghost]}}\n",
     PSC_E_POLICY_REF, "t.yaml:4:65: when.invitee refers to undefined principal 'ghost'"},
    {"version: 1\nrules:\n  - {id: r, effect: ask_owner, actions: [join, destroy]}\n",
     PSC_E_POLICY_RULE,
     "t.yaml:3:48: rule 'r': ask_owner cannot apply to destroy (the owner cannot be asked to "
     "authorise destroying its PSC)"},
    {"version: 1\nrules:\n  - {id: r, effect: ask_owner, actions: [initialize]}\n",
     PSC_E_POLICY_RULE,
     "t.yaml:3:42: rule 'r': ask_owner cannot apply to initialize (there is no PSC owner yet)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: []}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:3:38: rule 'r' has an empty action list"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [jion]}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:3:39: unknown action 'jion' (use initialize, establish, join, invite, destroy, "
     "report_departure)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join, join]}\n",
     PSC_E_POLICY_DUPLICATE, "t.yaml:3:45: action 'join' is listed twice"},
    {"version: 1\nrules:\n  - {id: r, effect: allow, actions: [join]}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:3:21: unknown effect 'allow' (use permit, forbid or ask_owner)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join]}\n"
     "  - {id: r, effect: forbid, actions: [join]}\n",
     PSC_E_POLICY_DUPLICATE, "t.yaml:4:10: rule id 'r' is used twice (first at line 3)"},
    {"version: 1\nrules:\n  - {effect: permit, actions: [join]}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:3:5: rule without 'id'"},
    {"version: 1\nrules:\n  - {id: r, effect: permit}\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:3:5: rule 'r' needs 'effect' and 'actions'"},
    {"version: 1\nrules:\n  - {id: \"bad id\", effect: permit, actions: [join]}\n",
     PSC_E_POLICY_SCHEMA,
     "t.yaml:3:10: rule id 'bad id' must be 1-64 characters of A-Z a-z 0-9 _ - ."},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {owner: yes}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:60: when.owner must be true or false, found 'yes'"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], effects: x}\n",
     PSC_E_POLICY_SCHEMA,
     "t.yaml:3:46: unknown key 'effects' in a rule (allowed: id, description, effect, actions, "
     "principals, groups, psc, when)"},
    {"version: 1\nprincipals:\n  p: {subject_cn: {regex: \"a.*\"}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:20: unknown matcher 'regex' in principal 'p' subject_cn (allowed: eq, in, prefix, "
     "glob, in_set)"},
    {"version: 1\nprincipals:\n  p: {subject_cn: {eq: a, prefix: b}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:19: principal 'p' subject_cn needs exactly one matcher (eq, in, prefix, glob or "
     "in_set), found 2"},
    {"version: 1\nprincipals:\n  p: {subject_cn: alice}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:19: principal 'p' subject_cn must be a mapping, found a scalar"},
    {"version: 1\nprincipals:\n  p: {node_id: {prefix: \"0101\"}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:17: matcher 'prefix' does not apply to a node_id (use eq, in or in_set)"},
    {"version: 1\nprincipals:\n  p: {node_id: {eq: \"0101\"}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:21: principal 'p' node_id must be 32 hex digits (colons allowed between bytes), "
     "found '0101'"},
    {"version: 1\nprincipals:\n  p: {subject_cn: {in: []}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:24: principal 'p' subject_cn must list at least one value"},
    {"version: 1\nprincipals:\n  p: {}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:6: principal 'p' has no attributes; to match any requester, omit 'principals' in "
     "the rule"},
    {"version: 1\nprincipals:\n  p: {email: {eq: a}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:7: unknown key 'email' in principal 'p' (allowed: subject_cn, subject_ou, "
     "subject_o, issuer, node_id, fingerprint, description)"},
    {"version: 1\nsets:\n  s: {strings: [a]}\nprincipals:\n  p: {node_id: {in_set: s}}\n" R1,
     PSC_E_POLICY_SCHEMA,
     "t.yaml:5:25: set 's' holds strings but principal 'p' node_id is a node_id"},
    {"version: 1\nsets:\n  s: {strings: [a, b, a]}\n" R1, PSC_E_POLICY_DUPLICATE,
     "t.yaml:3:23: 'a' is listed twice in members of set 's'"},
    {"version: 1\nsets:\n  s: {strings: [a], node_ids: []}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:6: set 's' needs exactly one of node_ids, fingerprints, strings"},
    {"version: 1\nsets:\n  s: {node_ids: [\"zz\"]}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:3:18: members of set 's' must be 32 hex digits (colons allowed between bytes), found "
     "'zz'"},
    {"version: 1\nprincipals: {i: {subject_o: {eq: x}}}\nrules:\n"
     "  - {id: r, effect: forbid, actions: [invite, join], when: {invitee: [i]}}\n",
     PSC_E_POLICY_RULE,
     "t.yaml:4:70: rule 'r': when.invitee applies only to action invite; put the other actions "
     "in a separate rule"},
    {"version: 1\ngroups: {g: {psc: {name: {eq: x}}}}\nrules:\n"
     "  - {id: r, effect: permit, actions: [initialize, join], groups: [g]}\n",
     PSC_E_POLICY_RULE,
     "t.yaml:4:66: rule 'r': initialize has no PSC, so groups, psc, when.owner and when.members "
     "cannot apply to it; put initialize in a separate rule"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [initialize], when: {owner: "
     "true}}\n",
     PSC_E_POLICY_RULE,
     "t.yaml:3:66: rule 'r': initialize has no PSC, so groups, psc, when.owner and when.members "
     "cannot apply to it; put initialize in a separate rule"},
    {"version: 1\ngroups: {g: {limits: {max_members: 3}}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:13: group 'g' needs 'psc' (which PSCs belong to it)"},
    {"version: 1\ngroups: {g: {psc: {}}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:19: group 'g' psc needs 'name' or 'labels'"},
    {"version: 1\ndefaults: {refresh: {min: 600, max: 60}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:21: refresh.min (600) is greater than refresh.max (60)"},
    {"version: 1\ndefaults: {refresh: {min: 7200}}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:11: defaults: refresh min 7200 / default 3600 / max 86400 are not ordered min <= "
     "default <= max (built-in: 60 / 3600 / 86400)"},
    {"version: 1\ndefaults: {max_members: 0}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:25: max_members must be between 1 and 1000000, found 0"},
    {"version: 1\ndefaults: {suites: [aes128]}\n" R1, PSC_E_POLICY_SCHEMA,
     "t.yaml:2:21: unknown suite 'aes128' (known: aes256gcm-hkdf-sha256)"},
    {"version: 1\ndefaults: {wrap_algs: [rsa-oaep-sha1, rsa-oaep-sha1]}\n" R1,
     PSC_E_POLICY_DUPLICATE, "t.yaml:2:39: wrap algorithm 'rsa-oaep-sha1' is listed twice"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: Mars/Olympus, from: \"08:00\", to: \"18:00\"}}}\n",
     PSC_E_POLICY_ZONE,
     "t.yaml:4:26: time zone 'Mars/Olympus': unknown time zone (/usr/share/zoneinfo/Mars/Olympus: "
     "No such file or directory); is tzdata installed?"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: ../etc/passwd, from: \"08:00\", to: \"18:00\"}}}\n",
     PSC_E_POLICY_ZONE,
     "t.yaml:4:26: time zone '../etc/passwd': not a zone name: use an IANA name like "
     "Europe/Berlin (letters, digits, '/', '_', '+', '-'), UTC, or +HH:MM"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: \"+25:00\", from: \"08:00\", to: \"18:00\"}}}\n",
     PSC_E_POLICY_ZONE,
     "t.yaml:4:26: time zone '+25:00': a UTC offset must look like +HH:MM or -HH:MM, at most 18 "
     "hours"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: UTC, from: \"08:00\", to: \"08:00\"}}}\n",
     PSC_E_POLICY_SCHEMA,
     "t.yaml:4:50: time window 'from' and 'to' are equal; an empty window never matches (for all "
     "day use 00:00 to 24:00)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: UTC, from: \"8am\", to: \"18:00\"}}}\n",
     PSC_E_POLICY_SCHEMA,
     "t.yaml:4:37: from must be a time HH:MM between 00:00 and 24:00, found '8am'"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: UTC, days: [mon, moon], from: \"08:00\", to: \"18:00\"}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:4:43: unknown day 'moon' (use mon tue wed thu fri sat sun)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join],\n"
     "     when: {time: {zone: UTC, to: \"18:00\"}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:4:19: time window needs 'zone', 'from' and 'to'"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {rate: {max: 257, "
     "per: 60}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:65: when.rate.max must be between 1 and 256, found 257"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {rate: {max: 5}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:59: when.rate needs 'max' (events) and 'per' (seconds)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:52: when is empty; omit it for no conditions"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], principals: []}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:58: principals is empty; omit it to match anyone"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], psc: {name: {eq: ~}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:63: psc name must be a string, found nothing (null)"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], psc: {labels: {}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:60: psc labels is empty; omit it or name a label"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {members: {min: "
     "-1}}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:68: when.members.min must be between 0 and 1000000, found -1"},
    {"version: 1\nrules:\n  - {id: r, effect: permit, actions: [join], when: {time: \"9-5\"}}\n",
     PSC_E_POLICY_SCHEMA, "t.yaml:3:59: when.time must be a mapping or a sequence of mappings"},
    {"version: 1\nrules: [{id: r, effect: permit, actions: [join], \"x\": [1, 2]: 3}]\n",
     PSC_E_POLICY_SYNTAX, NULL},
    {"version: 1\n? [a]\n: b\nrules: []\n", PSC_E_POLICY_SCHEMA,
     "t.yaml:2:3: mapping keys must be plain strings, found a sequence"},
};

static void every_bad_file_is_rejected_with_position(void **state)
{
	(void)state;
	size_t failures = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pol_policy *pol = NULL;
		psc_err err;
		psc_err_clear(&err);
		psc_rc rc = pol_policy_load_buffer(&pol, cases[i].yaml, strlen(cases[i].yaml),
						   "t.yaml", NULL, &err);
		if (rc != cases[i].rc || (cases[i].msg && strcmp(err.detail, cases[i].msg) != 0)) {
			print_message("case %zu:\n%s\nwant %s: %s\ngot  %s: %s\n", i, cases[i].yaml,
				      psc_rc_name(cases[i].rc),
				      cases[i].msg ? cases[i].msg : "(any)", psc_rc_name(rc),
				      err.detail);
			failures++;
			continue;
		}
		assert_null(pol);
		assert_int_equal(err.rc, rc);
	}
	assert_int_equal(failures, 0);
}

static void limits_on_size_depth_and_scalars(void **state)
{
	(void)state;
	pol_policy *pol = NULL;
	psc_err err;
	/* file size */
	size_t big = POL_FILE_MAX + 1;
	char *buf = malloc(big);
	assert_non_null(buf);
	memset(buf, '#', big);
	assert_int_equal(pol_policy_load_buffer(&pol, buf, big, "t.yaml", NULL, &err),
			 PSC_E_POLICY_LIMIT);
	assert_string_equal(err.detail, "t.yaml: file is larger than 1048576 bytes (POL_FILE_MAX)");
	free(buf);
	/* nesting */
	char deep[256] = "version: 1\nrules: ";
	for (int i = 0; i < 20; i++)
		strcat(deep, "[");
	assert_int_equal(pol_policy_load_buffer(&pol, deep, strlen(deep), "t.yaml", NULL, &err),
			 PSC_E_POLICY_LIMIT);
	assert_string_equal(err.detail,
			    "t.yaml:2:23: nesting deeper than 16 levels (POL_DEPTH_MAX)");
	/* scalar length */
	char *lng = malloc(POL_SCALAR_MAX + 64);
	assert_non_null(lng);
	strcpy(lng, "version: 1\ndescription: ");
	size_t off = strlen(lng);
	memset(lng + off, 'x', POL_SCALAR_MAX + 1);
	strcpy(lng + off + POL_SCALAR_MAX + 1, "\nrules: []\n");
	assert_int_equal(pol_policy_load_buffer(&pol, lng, strlen(lng), "t.yaml", NULL, &err),
			 PSC_E_POLICY_LIMIT);
	assert_string_equal(err.detail,
			    "t.yaml:2:14: scalar longer than 1024 bytes (POL_SCALAR_MAX)");
	free(lng);
	/* missing file */
	assert_int_equal(pol_policy_load_file(&pol, "/nonexistent/p.yaml", NULL, &err),
			 PSC_E_POLICY_IO);
	assert_string_equal(err.detail,
			    "/nonexistent/p.yaml: cannot open: No such file or directory");
	assert_null(pol);
}

static void warnings_for_rules_that_never_match(void **state)
{
	(void)state;
	pol_policy *pol = load_ok(
	    "version: 1\n"
	    "sets:\n"
	    "  empty: {node_ids: []}\n"
	    "  spare: {strings: [a]}\n"
	    "principals:\n"
	    "  nobody: {node_id: {in_set: empty}}\n"
	    "  unused: {subject_cn: {eq: x}}\n"
	    "groups:\n"
	    "  idle: {psc: {name: {eq: x}}}\n"
	    "rules:\n"
	    "  - {id: a, effect: permit, actions: [join], principals: [nobody]}\n"
	    "  - {id: b, effect: permit, actions: [join], when: {members: {min: 5, max: 2}}}\n"
	    "  - {id: c, effect: forbid, actions: [destroy]}\n"
	    "  - {id: d, effect: permit, actions: [destroy]}\n"
	    "  - {id: e, effect: permit, actions: [join, destroy]}\n");
	const char *want[] = {
	    "t.yaml:12:62: warning: rule 'b' can never match: when.members.min 5 is greater than "
	    "max 2",
	    "t.yaml:11:5: warning: rule 'a' can never match: every principal it names needs an "
	    "empty "
	    "set, or its member range is empty",
	    "t.yaml:12:5: warning: rule 'b' can never match: every principal it names needs an "
	    "empty "
	    "set, or its member range is empty",
	    "t.yaml:14:5: warning: rule 'd' (permit) can never decide: an unconditional forbid "
	    "covers "
	    "all its actions",
	    "t.yaml:4:3: warning: set 'spare' is never used",
	    "t.yaml:7:3: warning: principal 'unused' is never used",
	    "t.yaml:9:3: warning: group 'idle' is never used and sets no limits",
	};
	size_t n = sizeof(want) / sizeof(want[0]);
	if (pol_policy_warning_count(pol) != n)
		for (size_t i = 0; i < pol_policy_warning_count(pol); i++)
			print_message("%s\n", pol_policy_warning(pol, i));
	assert_int_equal(pol_policy_warning_count(pol), n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(pol_policy_warning(pol, i), want[i]);
	assert_null(pol_policy_warning(pol, n));
	pol_policy_free(&pol);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_bad_file_is_rejected_with_position),
	    cmocka_unit_test(limits_on_size_depth_and_scalars),
	    cmocka_unit_test(warnings_for_rules_that_never_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
