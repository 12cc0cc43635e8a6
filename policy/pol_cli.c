/*
 * psc-policy — check, evaluate and test PSC policy files (docs/policy.md "CLI").
 *
 * Owns: the admin's command line: argument parsing, output wording, exit codes.
 * Never: decide anything itself (all semantics live in the library), or read
 * the clock (requests carry their own "now").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_internal.h"
#include "pol_reqfile.h"

enum {
	EXIT_OK = 0,	/* check: valid; eval: permit; test: all passed */
	EXIT_NO = 1,	/* eval: deny; test: a case failed or a rule is uncovered;
			   check --strict: warnings */
	EXIT_INPUT = 2, /* a file is unreadable or invalid, or bad usage */
	EXIT_ASK = 3,	/* eval: ask_owner */
};

#define EXPLAIN_BUF (256 * 1024)

static const char usage_text[] =
    "NAME\n"
    "    psc-policy - check, evaluate and test PSC policy files\n"
    "\n"
    "SYNOPSIS\n"
    "    psc-policy [--zoneinfo DIR] check [--strict] POLICY.yaml\n"
    "    psc-policy [--zoneinfo DIR] eval POLICY.yaml REQUEST.yaml [--explain]\n"
    "    psc-policy [--zoneinfo DIR] test POLICY.yaml TESTS.yaml [--coverage] [--verbose]\n"
    "    psc-policy --help\n"
    "\n"
    "DESCRIPTION\n"
    "    check   Loads POLICY.yaml exactly as psc-kmsd would, prints its revision\n"
    "            (SHA-256 of the file) and every warning (rules that can never match,\n"
    "            unused principals, groups or sets). Errors are printed as\n"
    "            FILE:LINE:COLUMN: what is wrong.\n"
    "    eval    Decides the request in REQUEST.yaml and prints the outcome (permit,\n"
    "            deny, ask_owner), the rules that decided and the policy revision.\n"
    "            --explain adds one line per rule: matched, or the first predicate\n"
    "            that failed with the actual value, or why it could not be evaluated.\n"
    "            Rate history comes from the request's 'recent' list.\n"
    "    test    Runs every case of TESTS.yaml (a request, the expected outcome and\n"
    "            optionally the expected deciding rules) and reports failures with an\n"
    "            explain trace. --coverage also fails if a rule matched in no case.\n"
    "            --verbose prints every case.\n"
    "\n"
    "OPTIONS\n"
    "    --zoneinfo DIR   read IANA time zones from DIR (default /usr/share/zoneinfo)\n"
    "    --strict         check: exit 1 when there are warnings\n"
    "\n"
    "EXIT STATUS\n"
    "    0  check: valid | eval: permit | test: every case passed (and covered)\n"
    "    1  check --strict: warnings | eval: deny | test: a case failed or a rule\n"
    "       is uncovered\n"
    "    2  bad usage, unreadable or invalid policy, request or test file\n"
    "    3  eval: ask_owner (the KMS would ask the PSC owner)\n"
    "\n"
    "EXAMPLES\n"
    "    psc-policy check /etc/psc-kms/policy.yaml\n"
    "    psc-policy eval /etc/psc-kms/policy.yaml join.yaml --explain\n"
    "    psc-policy test /etc/psc-kms/policy.yaml policy-tests.yaml --coverage\n"
    "\n"
    "SEE ALSO\n"
    "    docs/policy.md (file formats, semantics, error catalogue), psc-kmsctl(1)\n";

static int usage_error(const char *msg)
{
	fprintf(stderr, "psc-policy: %s\nTry 'psc-policy --help'.\n", msg);
	return EXIT_INPUT;
}

static int load(const char *path, const pol_load_opts *o, pol_policy **pol)
{
	psc_err err;
	psc_err_clear(&err);
	if (pol_policy_load_file(pol, path, o, &err) != PSC_OK) {
		fprintf(stderr, "%s\n", psc_err_text(&err));
		return EXIT_INPUT;
	}
	return EXIT_OK;
}

static int cmd_check(int argc, char **argv, const pol_load_opts *o)
{
	bool strict = false;
	const char *file = NULL;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--strict") == 0)
			strict = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return usage_error("check: unknown option");
		else if (!file)
			file = argv[i];
		else
			return usage_error("check takes one POLICY file");
	}
	if (!file)
		return usage_error("check needs a POLICY file");
	pol_policy *pol = NULL;
	int rc = load(file, o, &pol);
	if (rc != EXIT_OK)
		return rc;
	size_t nw = pol_policy_warning_count(pol);
	for (size_t i = 0; i < nw; i++)
		fprintf(stderr, "%s\n", pol_policy_warning(pol, i));
	printf("%s: ok: %zu rules, %zu warnings, revision %s\n", file, pol_policy_rule_count(pol),
	       nw, pol_policy_revision(pol));
	pol_policy_free(&pol);
	return strict && nw ? EXIT_NO : EXIT_OK;
}

static void print_decision(const pol_decision *d)
{
	printf("decision: %s\n", pol_outcome_name(d->outcome));
	printf("rules:");
	if (!d->n_rules)
		printf(" (none: default deny)");
	for (size_t i = 0; i < d->n_rules; i++)
		printf(" %s", d->rules[i]);
	printf("%s\n", d->rules_truncated ? " ..." : "");
	if (d->forbid_error)
		printf("note: a forbid could not be evaluated, so the request is denied\n");
	printf("revision: %s\n", d->revision ? d->revision : "");
}

static int cmd_eval(int argc, char **argv, const pol_load_opts *o)
{
	bool explain = false;
	const char *files[2] = {NULL, NULL};
	int nf = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--explain") == 0)
			explain = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return usage_error("eval: unknown option");
		else if (nf < 2)
			files[nf++] = argv[i];
		else
			return usage_error("eval takes a POLICY and a REQUEST file");
	}
	if (nf != 2)
		return usage_error("eval needs a POLICY and a REQUEST file");
	pol_policy *pol = NULL;
	int rc = load(files[0], o, &pol);
	if (rc != EXIT_OK)
		return rc;
	pol_arena *a = NULL;
	pol_reqdoc *req = NULL;
	pol_state *st = NULL;
	char *buf = NULL;
	psc_err err;
	psc_err_clear(&err);
	rc = EXIT_INPUT;
	if (pol_arena_new(&a) != PSC_OK || !(req = pol_arena_alloc(a, sizeof(*req))))
		goto out;
	if (pol_reqdoc_load(a, files[1], req, &err) != PSC_OK) {
		fprintf(stderr, "%s\n", psc_err_text(&err));
		goto out;
	}
	if (pol_reqdoc_state(req, &st) != PSC_OK || !(buf = malloc(EXPLAIN_BUF)))
		goto out;
	pol_explain ex = {.buf = buf, .cap = EXPLAIN_BUF};
	pol_decision d;
	psc_rc prc = pol_decide(pol, st, &req->req, &d, explain ? &ex : NULL);
	if (prc != PSC_OK) {
		fprintf(stderr, "%s: %s\n", files[1], psc_strerror(prc));
		goto out;
	}
	if (explain)
		fputs(buf, stdout);
	print_decision(&d);
	rc = d.outcome == POL_PERMIT ? EXIT_OK : d.outcome == POL_ASK_OWNER ? EXIT_ASK : EXIT_NO;
out:
	free(buf);
	pol_state_free(&st);
	pol_arena_free(&a);
	pol_policy_free(&pol);
	return rc;
}

static bool same_rules(const pol_testcase *c, const pol_decision *d)
{
	if (c->n_rules != d->n_rules)
		return false;
	for (size_t i = 0; i < c->n_rules; i++) {
		bool found = false;
		for (size_t j = 0; j < d->n_rules; j++)
			found |= strcmp(c->rules[i], d->rules[j]) == 0;
		if (!found)
			return false;
	}
	return true;
}

static int cmd_test(int argc, char **argv, const pol_load_opts *o)
{
	bool coverage = false, verbose = false;
	const char *files[2] = {NULL, NULL};
	int nf = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--coverage") == 0)
			coverage = true;
		else if (strcmp(argv[i], "--verbose") == 0)
			verbose = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return usage_error("test: unknown option");
		else if (nf < 2)
			files[nf++] = argv[i];
		else
			return usage_error("test takes a POLICY and a TESTS file");
	}
	if (nf != 2)
		return usage_error("test needs a POLICY and a TESTS file");
	pol_policy *pol = NULL;
	int rc = load(files[0], o, &pol);
	if (rc != EXIT_OK)
		return rc;
	pol_arena *a = NULL;
	pol_testcase *cases = NULL;
	size_t n = 0, failed = 0, uncovered = 0;
	size_t nr = pol_policy_rule_count(pol);
	unsigned char *hits = calloc(nr + 1, 1), *all = calloc(nr + 1, 1);
	char *buf = malloc(EXPLAIN_BUF);
	psc_err err;
	psc_err_clear(&err);
	rc = EXIT_INPUT;
	if (!hits || !all || !buf || pol_arena_new(&a) != PSC_OK)
		goto out;
	if (pol_testfile_load(a, files[1], &cases, &n, &err) != PSC_OK) {
		fprintf(stderr, "%s\n", psc_err_text(&err));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const pol_testcase *c = &cases[i];
		pol_state *st = NULL;
		if (pol_reqdoc_state(c->req, &st) != PSC_OK)
			goto out;
		pol_explain ex = {.buf = buf, .cap = EXPLAIN_BUF, .hits = hits, .hits_len = nr};
		pol_decision d;
		psc_rc prc = pol_decide(pol, st, &c->req->req, &d, &ex);
		pol_state_free(&st);
		if (prc != PSC_OK) {
			fprintf(stderr, "%s:%u:%u: test '%s': %s\n", files[1], c->line, c->col,
				c->name, psc_strerror(prc));
			goto out;
		}
		for (size_t k = 0; k < nr; k++)
			all[k] |= hits[k];
		bool ok = d.outcome == c->expect && (!c->has_rules || same_rules(c, &d));
		if (!ok) {
			failed++;
			printf("FAIL %s:%u:%u: test '%s': expected %s", files[1], c->line, c->col,
			       c->name, pol_outcome_name(c->expect));
			if (c->has_rules) {
				printf(" by");
				for (size_t k = 0; k < c->n_rules; k++)
					printf(" %s", c->rules[k]);
			}
			printf(", got %s by", pol_outcome_name(d.outcome));
			for (size_t k = 0; k < d.n_rules; k++)
				printf(" %s", d.rules[k]);
			printf("%s\n", d.n_rules ? "" : " (no rule)");
			printf("%s", buf);
		} else if (verbose) {
			printf("ok   %s\n", c->name);
		}
	}
	if (coverage)
		for (size_t k = 0; k < nr; k++)
			if (!all[k]) {
				uncovered++;
				printf("UNCOVERED rule '%s': no test case matches it\n",
				       pol_policy_rule_id(pol, k));
			}
	printf("%zu tests, %zu passed, %zu failed", n, n - failed, failed);
	if (coverage)
		printf("; %zu of %zu rules covered", nr - uncovered, nr);
	printf("\n");
	rc = failed || uncovered ? EXIT_NO : EXIT_OK;
out:
	free(buf);
	free(hits);
	free(all);
	pol_arena_free(&a);
	pol_policy_free(&pol);
	return rc;
}

int main(int argc, char **argv)
{
	pol_load_opts opts = {0};
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
		    strcmp(argv[i], "help") == 0) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		}
		if (strcmp(argv[i], "--zoneinfo") == 0) {
			if (++i >= argc)
				return usage_error("--zoneinfo needs a directory");
			opts.zoneinfo_dir = argv[i];
			continue;
		}
		break;
	}
	if (i >= argc)
		return usage_error("missing command (check, eval or test)");
	const char *cmd = argv[i++];
	for (int j = i; j < argc; j++)
		if (strcmp(argv[j], "--help") == 0) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		}
	if (strcmp(cmd, "check") == 0)
		return cmd_check(argc - i, argv + i, &opts);
	if (strcmp(cmd, "eval") == 0)
		return cmd_eval(argc - i, argv + i, &opts);
	if (strcmp(cmd, "test") == 0)
		return cmd_test(argc - i, argv + i, &opts);
	return usage_error("unknown command (use check, eval or test)");
}
