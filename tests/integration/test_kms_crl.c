/*
 * A CRL reload that revokes a member evicts it from every PSC and rekeys them
 * (DESIGN.md §5); a broken CRL file is refused and the previous one stays.
 * Runs its own psc-kmsd on a private copy of the test CA, which it revokes in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "kmsfx.h"
#include "rawpeer.h"

#define WAIT 8000

static kmsfx fx;
static char ca[4200]; /* a private copy of the test CA: this test revokes in it */

static int setup(void **state)
{
	(void)state;
	char tmp[4096], cmd[65536];
	if (pt_tmpdir(tmp, "kmscrl-ca") != 0)
		return -1;
	snprintf(ca, sizeof(ca), "%s/ca", tmp);
	/* the copy's openssl configuration must point at the copy */
	snprintf(cmd, sizeof(cmd),
		 "cp -r '%s' '%s' && sed -i 's#%s#%s#g' '%s/ca/ca.cnf' '%s/other/ca.cnf'",
		 pt_ca_dir(), ca, pt_ca_dir(), ca, ca, ca);
	if (kmsfx_sh(cmd) != 0)
		return -1;
	static const char *const env[] = {"PSC_TEST_CRL_RELOAD_S=1", NULL};
	if (kmsfx_install(&fx, "kmscrl", ca, env) != 0 || kmsfx_start(&fx) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kmsfx_cleanup(&fx);
	char *slash = strrchr(ca, '/');
	if (slash) {
		*slash = '\0';
		pt_rm_rf(ca);
	}
	return 0;
}

static rawpeer *init_peer(const char *name)
{
	rawpeer *p = rp_new(fx.zctx, name, fx.endpoint, fx.cert, fx.curve);
	assert_non_null(p);
	assert_true(rp_initialize_wait(p, WAIT));
	return p;
}

static void refresh(rawpeer *p, const uint8_t psc[16], uint8_t reason)
{
	if (!rp_wait_refresh(p, psc, reason, WAIT))
		fail_msg("%s: no Refresh (reason %u)", p->name, reason);
}

static void revoked_member_is_evicted_and_the_psc_rekeyed(void **state)
{
	(void)state;
	rawpeer *a = init_peer("peer1"), *b = init_peer("peer2"), *c = init_peer("peer3");
	assert_false(a->is_error || b->is_error || c->is_error);
	proto_node_id_t members[2];
	memcpy(members[0], b->node_id, 16);
	memcpy(members[1], c->node_id, 16);
	psc_body est = {.code = PSC_MSG_ESTABLISH_REQ};
	est.u.establish_req.timestamp = rp_now_ms();
	est.u.establish_req.params.name = (proto_bytes){(const uint8_t *)"crl-room", 8};
	est.u.establish_req.params.members.items = members;
	est.u.establish_req.params.members.n = 2;
	uint64_t tx = rp_send(a, &est, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	uint8_t psc[16];
	memcpy(psc, a->b.u.establish_ans.material.psc_id, 16);
	refresh(b, psc, PSC_REFRESH_ESTABLISH);
	refresh(c, psc, PSC_REFRESH_ESTABLISH);

	/* The CA revokes peer3 and publishes a new CRL; the KMS reloads it within ~1 s. */
	char cmd[65536];
	snprintf(cmd, sizeof(cmd),
		 "export PSC_SAN=email:x; openssl ca -batch -config '%s/ca/ca.cnf' -revoke "
		 "'%s/peer3.crt.pem' 2>&1 && openssl ca -batch -config '%s/ca/ca.cnf' -gencrl "
		 "-out '%s/crl.pem.new' 2>&1 && mv '%s/crl.pem.new' '%s/crl.pem'",
		 ca, ca, ca, ca, ca, ca);
	assert_int_equal(kmsfx_sh(cmd), 0);

	refresh(a, psc, PSC_REFRESH_EVICT);
	assert_int_equal(a->b.u.refresh_req.material.grace_ms, 0);
	assert_int_equal(a->b.u.refresh_req.material.members.n, 2);
	uint8_t sa[32], sb[32];
	assert_true(rp_unwrap(a, &a->b.u.refresh_req.material, sa));
	refresh(b, psc, PSC_REFRESH_EVICT);
	assert_true(rp_unwrap(b, &b->b.u.refresh_req.material, sb));
	assert_memory_equal(sa, sb, 32);
	/* peer3 is told it is out, and cannot come back with that certificate */
	refresh(c, psc, PSC_REFRESH_REMOVED);
	rp_free(&c);
	c = rp_new(fx.zctx, "peer3", fx.endpoint, fx.cert, fx.curve);
	tx = rp_initialize(c, 0, NULL, NULL);
	assert_true(rp_wait_answer(c, tx, WAIT));
	assert_true(c->is_error);
	assert_int_equal(c->err.psc_reason, PSC_REASON_CERT_REVOKED);

	/* A broken CRL is refused: the previous one stays (peer3 still refused, peer1 served). */
	snprintf(cmd, sizeof(cmd), "echo garbage > '%s/crl.pem'", ca);
	assert_int_equal(kmsfx_sh(cmd), 0);
	struct timespec ts = {2, 0};
	nanosleep(&ts, NULL);
	tx = rp_initialize(c, 0, NULL, NULL);
	assert_true(rp_wait_answer(c, tx, WAIT));
	assert_true(c->is_error);
	assert_int_equal(c->err.psc_reason, PSC_REASON_CERT_REVOKED);
	psc_body lk = {.code = PSC_MSG_LOOKUP_REQ};
	lk.u.lookup_req.timestamp = rp_now_ms();
	lk.u.lookup_req.name = (proto_bytes){(const uint8_t *)"crl-room", 8};
	tx = rp_send(a, &lk, false);
	assert_true(rp_wait_answer(a, tx, WAIT));
	assert_false(a->is_error);
	assert_int_equal(a->b.u.lookup_ans.member_count, 2);
	size_t n = 0;
	char *log = (char *)pt_read_file(fx.log, &n);
	assert_non_null(memmem(log, n, "keeping the previous CRL", 24));
	free(log);
	rp_free(&a);
	rp_free(&b);
	rp_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(revoked_member_is_evicted_and_the_psc_rekeyed),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
