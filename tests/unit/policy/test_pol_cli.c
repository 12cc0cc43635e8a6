/* psc-policy as an admin runs it: exit codes, output, error positions. */
#include <stdlib.h>
#include <unistd.h>

#include "pol_testutil.h"
#include "psc_test.h"

static char dir[4096];

static const char *bin(void)
{
	static char b[4200];
	snprintf(b, sizeof(b), "%s/policy/psc-policy", PSC_BINARY_DIR);
	return b;
}

static const char *write_file(const char *name, const char *text)
{
	static char paths[8][4200];
	static int k;
	char *p = paths[k++ % 8];
	snprintf(p, 4200, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return p;
}

static int run(char **out, const char *a1, const char *a2, const char *a3, const char *a4)
{
	char *argv[] = {(char *)bin(), (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};
	return pt_run(argv, out, 30000);
}

static const char POLICY[] =
    "version: 1\n"
    "principals:\n  ops: {subject_ou: {eq: Operations}}\n"
    "rules:\n"
    "  - {id: ops-join, effect: permit, actions: [join], principals: [ops]}\n"
    "  - {id: ask, effect: ask_owner, actions: [join]}\n"
    "  - {id: no-big, effect: forbid, actions: [join], when: {members: {min: 100}}}\n"
    "  - {id: limited, effect: permit, actions: [invite], when: {rate: {max: 2, per: 60}}}\n";

static const char *request(const char *ou, int members)
{
	static char buf[1024];
	snprintf(buf, sizeof(buf),
		 "action: join\nnow: 2026-03-30T08:00:00Z\n"
		 "requester: {subject_cn: a, subject_ou: %s, node_id: "
		 "\"0101010101010101010101010101010a\"}\n"
		 "psc: {name: x, owner: \"09090909090909090909090909090909\", members: %d}\n",
		 ou, members);
	return buf;
}

static void eval_exit_codes_and_output(void **state)
{
	(void)state;
	const char *pol = write_file("p.yaml", POLICY);
	char *out = NULL;
	assert_int_equal(
	    run(&out, "eval", pol, write_file("r1.yaml", request("Operations", 3)), NULL), 0);
	assert_non_null(strstr(out, "decision: permit\nrules: ops-join\nrevision: "));
	free(out);
	assert_int_equal(run(&out, "eval", pol, write_file("r2.yaml", request("Sales", 3)), NULL),
			 3);
	assert_non_null(strstr(out, "decision: ask_owner\nrules: ask\n"));
	free(out);
	assert_int_equal(
	    run(&out, "eval", pol, write_file("r3.yaml", request("Sales", 100)), "--explain"), 1);
	assert_non_null(strstr(out, "rule no-big (forbid): matched\n"));
	assert_non_null(strstr(out, "rule ops-join (permit): no: requester subject_ou 'Sales' is "
				    "not eq 'Operations' (principal 'ops')\n"));
	assert_non_null(strstr(out, "decision: deny\nrules: no-big\n"));
	free(out);
	/* rate history from the request file */
	const char *inv =
	    write_file("r4.yaml", "action: invite\nnow: 1000\n"
				  "requester: {node_id: \"01010101010101010101010101010101\"}\n"
				  "psc: {name: x, owner: requester, members: 1}\n"
				  "invitee: {node_id: \"02020202020202020202020202020202\"}\n"
				  "recent: [{action: invite, count: 2, ago: 59}]\n");
	assert_int_equal(run(&out, "eval", pol, inv, "--explain"), 1);
	assert_non_null(strstr(
	    out,
	    "rule limited (permit): no: requester did invite 2 times in the last 60s (limit 2)\n"));
	free(out);
	const char *inv2 =
	    write_file("r5.yaml", "action: invite\nnow: 1000\n"
				  "requester: {node_id: \"01010101010101010101010101010101\"}\n"
				  "psc: {name: x, owner: requester, members: 1}\n"
				  "invitee: {node_id: \"02020202020202020202020202020202\"}\n"
				  "recent: [{action: invite, count: 2, ago: 60}]\n");
	assert_int_equal(run(&out, "eval", pol, inv2, NULL), 0);
	free(out);
	/* a bad request file: exit 2 with position */
	const char *bad = write_file("r6.yaml", "action: jump\n");
	assert_int_equal(run(&out, "eval", pol, bad, NULL), 2);
	char want[4400];
	snprintf(want, sizeof(want), "%s:1:9: unknown action 'jump'\n", bad);
	assert_string_equal(out, want);
	free(out);
}

static void check_reports_errors_and_warnings(void **state)
{
	(void)state;
	char *out = NULL;
	const char *bad = write_file(
	    "bad.yaml", "version: 1\nrules:\n  - {id: r, effect: ask_owner, actions: [destroy]}\n");
	assert_int_equal(run(&out, "check", bad, NULL, NULL), 2);
	char want[4400];
	snprintf(want, sizeof(want),
		 "%s:3:42: rule 'r': ask_owner cannot apply to destroy (the owner "
		 "cannot be asked to authorise destroying its PSC)\n",
		 bad);
	assert_string_equal(out, want);
	free(out);
	const char *warn = write_file(
	    "warn.yaml", "version: 1\nprincipals: {p: {subject_cn: {eq: a}}}\nrules: []\n");
	assert_int_equal(run(&out, "check", warn, NULL, NULL), 0);
	assert_non_null(strstr(out, "warn.yaml:2:14: warning: principal 'p' is never used\n"));
	assert_non_null(strstr(out, "ok: 0 rules, 2 warnings, revision "));
	free(out);
	assert_int_equal(run(&out, "check", "--strict", warn, NULL), 1);
	free(out);
	assert_int_equal(run(&out, "--help", NULL, NULL, NULL), 0);
	assert_non_null(strstr(out, "EXIT STATUS"));
	free(out);
	assert_int_equal(run(&out, "frobnicate", NULL, NULL, NULL), 2);
	free(out);
	assert_int_equal(run(&out, "check", NULL, NULL, NULL), 2);
	free(out);
}

static void test_command_failures_and_coverage(void **state)
{
	(void)state;
	const char *pol = write_file("p.yaml", POLICY);
	char tests[4096];
	snprintf(tests, sizeof(tests),
		 "tests:\n"
		 "  - name: ops join\n    request:\n      action: join\n      now: 0\n"
		 "      requester: {subject_ou: Operations, node_id: "
		 "\"01010101010101010101010101010101\"}\n"
		 "      psc: {name: x, owner: requester, members: 1}\n"
		 "    expect: permit\n    rules: [ops-join]\n");
	const char *t1 = write_file("t1.yaml", tests);
	char *out = NULL;
	assert_int_equal(run(&out, "test", pol, t1, NULL), 0);
	assert_non_null(strstr(out, "1 tests, 1 passed, 0 failed\n"));
	free(out);
	assert_int_equal(run(&out, "test", pol, t1, "--coverage"), 1);
	/* 'ask' matched too (coverage counts matches, not only deciding rules) */
	assert_null(strstr(out, "UNCOVERED rule 'ask'"));
	assert_non_null(strstr(out, "UNCOVERED rule 'limited': no test case matches it\n"));
	assert_non_null(strstr(out, "UNCOVERED rule 'no-big': no test case matches it\n"));
	assert_non_null(strstr(out, "1 tests, 1 passed, 0 failed; 2 of 4 rules covered\n"));
	free(out);
	/* a wrong expectation fails with the trace */
	char *p = strstr(tests, "expect: permit");
	memcpy(p, "expect: deny  ", 14);
	const char *t2 = write_file("t2.yaml", tests);
	assert_int_equal(run(&out, "test", pol, t2, NULL), 1);
	char want[4400];
	snprintf(
	    want, sizeof(want),
	    "FAIL %s:2:5: test 'ops join': expected deny by ops-join, got permit by ops-join\n",
	    t2);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "rule ops-join (permit): matched\n"));
	free(out);
}

static int setup(void **state)
{
	(void)state;
	return pt_tmpdir(dir, "polcli");
}

static int teardown(void **state)
{
	(void)state;
	pt_rm_rf(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(eval_exit_codes_and_output),
	    cmocka_unit_test(check_reports_errors_and_warnings),
	    cmocka_unit_test(test_command_failures_and_coverage),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
