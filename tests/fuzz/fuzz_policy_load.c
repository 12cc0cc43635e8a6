/* libFuzzer harness for the policy loader (pol_policy_load_buffer): any bytes
 * must either load or fail with a positioned error, never crash, leak or read
 * out of bounds. A policy that loads is also decided on for every action,
 * with and without explain, to exercise the compiled form. */
#include <stdint.h>
#include <string.h>

#include "pol_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pol_policy *pol = NULL;
	psc_err err;
	if (pol_policy_load_buffer(&pol, (const char *)data, size, "fuzz.yaml", NULL, &err) !=
	    PSC_OK) {
		/* Every error names the file. */
		if (strncmp(err.detail, "fuzz.yaml", 9) != 0 && err.rc != PSC_E_NOMEM)
			__builtin_trap();
		return 0;
	}
	pol_state *st = NULL;
	if (pol_state_new(&st, 64) != PSC_OK) {
		pol_policy_free(&pol);
		return 0;
	}
	pol_label labels[] = {{"classification", "secret"}, {"env", "prod"}};
	pol_psc psc = {.name = "ops-1", .labels = labels, .n_labels = 2, .member_count = 3};
	pol_peer inv = {.subject_cn = "bob", .subject_o = "Partner GmbH"};
	pol_request q = {.now = 1774854000, .psc = &psc, .invitee = &inv};
	q.requester.subject_cn = "field-alice";
	q.requester.subject_ou = "Operations";
	q.requester.subject_o = "Example Corp";
	q.requester.issuer = "CN=PSC Test Root CA,O=Example Corp";
	memset(q.requester.node_id, 0xde, sizeof(q.requester.node_id));
	char buf[2048];
	unsigned char hits[64];
	for (int a = 0; a < POL_ACT_COUNT; a++) {
		q.action = (pol_action)a;
		pol_decision d;
		pol_explain ex = {
		    .buf = buf, .cap = sizeof(buf), .hits = hits, .hits_len = sizeof(hits)};
		if (pol_decide(pol, st, &q, &d, &ex) != PSC_OK)
			__builtin_trap();
		pol_decision d2;
		if (pol_decide(pol, st, &q, &d2, NULL) != PSC_OK || d2.outcome != d.outcome ||
		    d2.n_rules != d.n_rules || d2.forbid_error != d.forbid_error)
			__builtin_trap(); /* explaining never changes the decision */
		for (size_t i = 0; i < d.n_rules; i++)
			if (strcmp(d.rules[i], d2.rules[i]) != 0)
				__builtin_trap();
		pol_outcome o = d.outcome;
		if (o == POL_PERMIT)
			pol_state_record(st, q.requester.node_id, q.action, q.now);
	}
	pol_limits lim;
	psc_rc rc = pol_limits_for(pol, psc.name, labels, 2, &lim, &err);
	if (rc == PSC_OK && (lim.refresh_default < lim.refresh_min ||
			     lim.refresh_default > lim.refresh_max || !lim.n_suites))
		__builtin_trap();
	for (size_t i = 0; i < pol_policy_warning_count(pol); i++)
		if (!pol_policy_warning(pol, i))
			__builtin_trap();
	pol_state_free(&st);
	pol_policy_free(&pol);
	return 0;
}
