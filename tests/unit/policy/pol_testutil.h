/*
 * pol_testutil — helpers shared by the policy unit tests: load a policy from a
 * string (asserting success or a precise error) and build requests.
 */
#ifndef POL_TESTUTIL_H
#define POL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pol_policy.h"

static inline pol_policy *load_ok(const char *yaml)
{
	pol_policy *pol = NULL;
	psc_err err;
	psc_err_clear(&err);
	psc_rc rc = pol_policy_load_buffer(&pol, yaml, strlen(yaml), "t.yaml", NULL, &err);
	if (rc != PSC_OK)
		fail_msg("policy did not load: %s\n%s", psc_err_text(&err), yaml);
	return pol;
}

/* A requester in OU Operations, O Example; node 01.. */
static inline void peer_init(pol_peer *p, const char *cn, const char *ou, uint8_t node)
{
	memset(p, 0, sizeof(*p));
	p->subject_cn = cn;
	p->subject_ou = ou;
	p->subject_o = "Example";
	p->issuer = "CN=Root";
	memset(p->node_id, node, sizeof(p->node_id));
	p->has_fingerprint = true;
	memset(p->fingerprint, node, sizeof(p->fingerprint));
}

static inline void req_init(pol_request *q, pol_psc *psc, pol_action a, int64_t now)
{
	memset(q, 0, sizeof(*q));
	q->action = a;
	q->now = now;
	peer_init(&q->requester, "alice", "Operations", 1);
	if (psc) {
		memset(psc, 0, sizeof(*psc));
		psc->name = "ops-1";
		memset(psc->owner_node_id, 9, sizeof(psc->owner_node_id));
		psc->member_count = 3;
		q->psc = psc;
	}
}

#endif
