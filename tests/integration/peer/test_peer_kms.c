/*
 * libpscpeer against a real psc-kmsd: a SoftHSM token with the key ceremony
 * done, the KMS certificate issued by the test CA, CURVE on, the integration
 * policy (policy.yaml here: ../policy.yaml with a real ask_owner case). Several psc_peer objects in
 * this process play the peers; a peer that must answer the KMS while another one waits serves its
 * socket on a thread (psc_peer objects are independent; each is used by one
 * thread at a time).
 * What this proves beyond the unit tests: the HSM's wraps unwrap in the SDK
 * (members end up with the same epoch secret), and every flow's bytes, policy
 * decisions and KMS-initiated requests line up with the daemon.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "psc/peer.h"
#include "psc_peer_int.h"
#include "psc_test.h"

typedef struct kms {
	char dir[4096];
	char config[4096], cert[4096], curve[64], softhsm[4200];
	char log[4200];
	int port;
	pt_proc proc;
	int up;
} kms;

typedef struct agent {
	psc_peer *p;
	uint8_t id[16];
	int query_accept, invite_accept;
	int epochs, gones, queries, invites, errors, reconnects;
	psc_peer_reason last_reason;
	uint64_t last_epoch;
	pthread_t th;
	atomic_int stop;
	int serving;
} agent;

static kms K;

static void a_epoch(void *u, const uint8_t id[16], uint64_t e, psc_peer_reason r)
{
	(void)id;
	agent *a = u;
	a->epochs++;
	a->last_epoch = e;
	a->last_reason = r;
}

static void a_gone(void *u, const uint8_t id[16], uint64_t e, psc_peer_reason r)
{
	(void)id;
	agent *a = u;
	a->gones++;
	a->last_epoch = e;
	a->last_reason = r;
}

static int a_query(void *u, const psc_peer_query *q)
{
	(void)q;
	agent *a = u;
	a->queries++;
	return a->query_accept;
}

static int a_invite(void *u, const psc_peer_invitation *inv)
{
	(void)inv;
	agent *a = u;
	a->invites++;
	return a->invite_accept;
}

static void a_error(void *u, const psc_err *e)
{
	agent *a = u;
	a->errors++;
	print_message("  [peer warning] %s\n", psc_err_text(e));
}

static void a_reconnect(void *u)
{
	((agent *)u)->reconnects++;
}

static const psc_peer_callbacks callbacks = {a_epoch,  a_gone,	a_query,
					     a_invite, a_error, a_reconnect};

static agent *agent_new(const char *name, int invite_callback)
{
	agent *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	char cert[4096], key[4096];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	char ep[64];
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", 20000 + (int)(name[strlen(name) - 1]));
	psc_peer_callbacks cb = callbacks;
	if (!invite_callback)
		cb.on_invite = NULL;
	char kmsep[64];
	snprintf(kmsep, sizeof(kmsep), "tcp://127.0.0.1:%d", K.port);
	psc_peer_config cfg = {
	    .cert_file = cert,
	    .key_file = key,
	    .kms_endpoint = kmsep,
	    .kms_cert_file = K.cert,
	    .kms_curve_key = K.curve,
	    .overlay = "psc.test",
	    .data_endpoint = ep,
	    .request_timeout_ms = 15000,
	    .auto_reconnect = 1,
	    .callbacks = &cb,
	    .user = a,
	};
	psc_err err = {0};
	if (psc_peer_new(&a->p, &cfg, &err) != PSC_OK)
		fail_msg("psc_peer_new(%s): %s", name, psc_err_text(&err));
	psc_peer_node_id(a->p, a->id);
	psc_peer_init_result r;
	if (psc_peer_initialize(a->p, NULL, &r, &err) != PSC_OK)
		fail_msg("initialize(%s): %s", name, psc_err_text(&err));
	return a;
}

static void *serve(void *arg)
{
	agent *a = arg;
	while (!atomic_load(&a->stop))
		if (psc_peer_process(a->p, 50) < 0)
			break;
	return NULL;
}

static void agent_serve(agent *a)
{
	atomic_store(&a->stop, 0);
	assert_int_equal(pthread_create(&a->th, NULL, serve, a), 0);
	a->serving = 1;
}

static void agent_halt(agent *a)
{
	if (!a->serving)
		return;
	atomic_store(&a->stop, 1);
	pthread_join(a->th, NULL);
	a->serving = 0;
}

/* Lets a peer handle what the KMS sent it (e.g. Refreshes) for up to ms. */
static void agent_drain(agent *a, int ms)
{
	for (int waited = 0; waited < ms; waited += 50)
		assert_true(psc_peer_process(a->p, 50) >= 0);
}

static void agent_free(agent **a)
{
	if (!*a)
		return;
	agent_halt(*a);
	psc_peer_free(&(*a)->p);
	free(*a);
	*a = NULL;
}

static void establish(agent *a, const char *name, uint8_t id[16])
{
	psc_peer_establish_params ep = {.name = name};
	psc_err err = {0};
	uint64_t epoch = 0;
	if (psc_peer_establish(a->p, &ep, id, &epoch, NULL, &err) != PSC_OK)
		fail_msg("establish %s: %s", name, psc_err_text(&err));
	assert_int_equal(epoch, 1);
}

static void join(agent *a, const uint8_t id[16], uint64_t *epoch)
{
	psc_err err = {0};
	if (psc_peer_join(a->p, id, epoch, &err) != PSC_OK)
		fail_msg("join: %s", psc_err_text(&err));
}

static uint64_t epoch_of(agent *a, const uint8_t id[16], uint64_t *prev)
{
	psc_peer_psc_info in;
	if (psc_peer_psc_get(a->p, id, &in) != PSC_OK)
		return 0;
	if (prev)
		*prev = in.previous_epoch;
	return in.epoch;
}

static void same_secret(agent *a, agent *b, const uint8_t id[16], uint64_t epoch)
{
	uint8_t sa[32], sb[32];
	assert_int_equal(psc_sdk_epoch_secret(a->p, id, epoch, NULL, sa), PSC_OK);
	assert_int_equal(psc_sdk_epoch_secret(b->p, id, epoch, NULL, sb), PSC_OK);
	assert_memory_equal(sa, sb, 32);
}

/* --- the daemon ---------------------------------------------------------- */

static int wait_listening(int ms)
{
	for (int i = 0; i < ms / 100; i++) {
		size_t len = 0;
		uint8_t *log = pt_read_file(K.log, &len);
		int ok = log && memmem(log, len, "listening on", 12) != NULL;
		free(log);
		if (ok)
			return 0;
		if (pt_proc_wait(&K.proc, 100) >= 0)
			return -1; /* exited */
	}
	return -1;
}

static int kms_start(void)
{
	char *argv[] = {PSC_KMS_BIN_DIR "/psc-kmsd", "-c", K.config, NULL};
	char *env[] = {K.softhsm, NULL};
	if (pt_proc_start(&K.proc, argv, env, K.log) != 0)
		return -1;
	if (wait_listening(20000) != 0) {
		size_t len = 0;
		char *log = (char *)pt_read_file(K.log, &len);
		print_error("psc-kmsd did not start; log:\n%.*s\n", (int)len, log ? log : "");
		free(log);
		return -1;
	}
	K.up = 1;
	return 0;
}

static char *line_value(char *out, const char *key)
{
	char *p = strstr(out, key);
	if (!p)
		return NULL;
	p += strlen(key);
	char *e = strchr(p, '\n');
	if (e)
		*e = '\0';
	char *v = strdup(p);
	if (e)
		*e = '\n';
	return v;
}

static int group_setup(void **state)
{
	(void)state;
	if (pt_tmpdir(K.dir, "peer-kms") != 0)
		return -1;
	K.port = pt_free_port();
	char kmsdir[4200], port[16];
	snprintf(kmsdir, sizeof(kmsdir), "%s/kms", K.dir);
	snprintf(port, sizeof(port), "%d", K.port);
	snprintf(K.log, sizeof(K.log), "%s/kmsd.log", K.dir);
	char *argv[] = {"/bin/bash",	 PSC_MKKMS, kmsdir,	     (char *)pt_ca_dir(),
			PSC_KMS_BIN_DIR, port,	    PSC_PEER_POLICY, NULL};
	char *out = NULL;
	int rc = pt_run(argv, &out, 120000);
	if (rc != 0) {
		print_error("mkkms.sh failed (%d):\n%s\n", rc, out ? out : "");
		free(out);
		return -1;
	}
	char *cfg = line_value(out, "KMS_CONFIG="), *cert = line_value(out, "KMS_CERT=");
	char *curve = line_value(out, "KMS_CURVE_PUB="), *hsm = line_value(out, "SOFTHSM2_CONF=");
	free(out);
	if (!cfg || !cert || !curve || !hsm)
		return -1;
	snprintf(K.config, sizeof(K.config), "%s", cfg);
	snprintf(K.cert, sizeof(K.cert), "%s", cert);
	snprintf(K.curve, sizeof(K.curve), "%s", curve);
	snprintf(K.softhsm, sizeof(K.softhsm), "SOFTHSM2_CONF=%s", hsm);
	free(cfg);
	free(cert);
	free(curve);
	free(hsm);
	return kms_start();
}

static int group_teardown(void **state)
{
	(void)state;
	if (K.up)
		pt_proc_stop(&K.proc, 10000);
	if (getenv("PSC_KEEP_TMP"))
		print_message("kept %s\n", K.dir);
	else
		pt_rm_rf(K.dir);
	return 0;
}

/* --- tests ----------------------------------------------------------------- */

static void test_establish_join_refresh(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1), *b = agent_new("peer2", 1);
	uint8_t id[16];
	establish(a, "it-room-1", id);
	agent_serve(a); /* the owner receives Refresh(join) while b waits */
	uint64_t e = 0;
	join(b, id, &e);
	assert_int_equal(e, 2);
	agent_halt(a);
	agent_drain(a, 300);
	uint64_t prev = 0;
	assert_int_equal(epoch_of(a, id, &prev), 2);
	assert_int_equal(prev, 1); /* join rekey: epoch 1 stays for its grace period */
	assert_int_equal(a->last_reason, PSC_PEER_REASON_JOIN);
	/* The HSM wrapped one secret for two members; both unwrap the same bytes. */
	same_secret(a, b, id, 2);
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(b->p, id, &in), PSC_OK);
	assert_int_equal(in.n_members, 2);
	psc_peer_member m;
	int found = 0;
	for (size_t i = 0; i < in.n_members; i++)
		if (psc_peer_psc_member(b->p, id, i, &m) == PSC_OK &&
		    strcmp(m.endpoint, "tcp://127.0.0.1:20049") == 0) /* peer1's, '1' = 49 */
			found = 1;
	assert_true(found);
	/* Lookup by name from a third peer. */
	agent *c = agent_new("peer3", 1);
	psc_peer_lookup_result lr;
	psc_err err = {0};
	assert_int_equal(psc_peer_lookup(c->p, "it-room-1", &lr, &err), PSC_OK);
	assert_memory_equal(lr.psc_id, id, 16);
	assert_memory_equal(lr.owner, a->id, 16);
	assert_int_equal(lr.member_count, 2);
	assert_int_equal(psc_peer_lookup(c->p, "no-such-room", &lr, &err), PSC_E_PEER_NOT_FOUND);
	agent_free(&c);
	agent_free(&a);
	agent_free(&b);
}

static void test_policy_and_owner_decisions(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1), *asker = agent_new("peer5", 1),
	      *outcast = agent_new("peer6", 1);
	uint8_t id[16];
	establish(a, "it-room-2", id);
	psc_err err = {0};
	uint64_t e = 0;
	assert_int_equal(psc_peer_join(outcast->p, id, &e, &err), PSC_E_PEER_FORBIDDEN);
	assert_non_null(strstr(err.detail, "policy_denied"));

	a->query_accept = 0;
	agent_serve(a);
	assert_int_equal(psc_peer_join(asker->p, id, &e, &err), PSC_E_PEER_FORBIDDEN);
	assert_non_null(strstr(err.detail, "owner_denied"));
	agent_halt(a);
	assert_int_equal(a->queries, 1);

	a->query_accept = 1;
	agent_serve(a);
	join(asker, id, &e);
	agent_halt(a);
	assert_int_equal(a->queries, 2);
	assert_int_equal(e, 2);
	agent_drain(a, 300);
	same_secret(a, asker, id, 2);
	agent_free(&a);
	agent_free(&asker);
	agent_free(&outcast);
}

static void test_invite(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1), *yes = agent_new("peer3", 1), *no = agent_new("peer4", 0);
	uint8_t id[16];
	establish(a, "it-room-3", id);
	yes->invite_accept = 1;
	agent_serve(yes);
	psc_err err = {0};
	psc_peer_invite_outcome oc;
	uint64_t e = 0;
	if (psc_peer_invite(a->p, id, yes->id, &oc, &e, &err) != PSC_OK)
		fail_msg("invite: %s", psc_err_text(&err));
	assert_int_equal(oc, PSC_PEER_INVITE_ACCEPTED);
	assert_int_equal(e, 2);
	usleep(300 * 1000); /* the invitee's Refresh(join) */
	agent_halt(yes);
	assert_int_equal(yes->invites, 1);
	assert_int_equal(epoch_of(yes, id, NULL), 2);
	agent_drain(a, 300);
	same_secret(a, yes, id, 2);

	agent_serve(no); /* no on_invite callback: declines */
	assert_int_equal(psc_peer_invite(a->p, id, no->id, &oc, &e, &err), PSC_OK);
	agent_halt(no);
	assert_int_equal(oc, PSC_PEER_INVITE_DECLINED);
	assert_int_equal(epoch_of(no, id, NULL), 0);
	agent_free(&a);
	agent_free(&yes);
	agent_free(&no);
}

static void test_leave_departure_destroy(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1), *b = agent_new("peer2", 1), *c = agent_new("rsa1", 1);
	uint8_t id[16];
	establish(a, "it-room-4", id);
	uint64_t e = 0;
	agent_serve(a);
	join(b, id, &e);
	join(c, id, &e); /* an RSA member: RSA-OAEP wrap from the HSM */
	agent_halt(a);
	assert_int_equal(e, 3);
	agent_drain(a, 300);
	agent_drain(b, 300);
	same_secret(a, c, id, 3);
	same_secret(b, c, id, 3);

	/* Leave: a removal rekey, so the owner keeps no previous epoch. */
	psc_err err = {0};
	agent_serve(a);
	if (psc_peer_leave(c->p, id, &err) != PSC_OK)
		fail_msg("leave: %s", psc_err_text(&err));
	usleep(300 * 1000);
	agent_halt(a);
	assert_int_equal(epoch_of(c, id, NULL), 0);
	uint64_t prev = 9;
	assert_int_equal(epoch_of(a, id, &prev), 4);
	assert_int_equal(prev, 0);
	assert_int_equal(a->last_reason, PSC_PEER_REASON_LEAVE);

	/* Departure report about a live member: it answers PscLiveness itself. */
	psc_peer_departure_outcome oc;
	agent_drain(b, 200);
	agent_serve(b);
	if (psc_peer_report_departure(a->p, id, b->id, &oc, &err) != PSC_OK)
		fail_msg("report: %s", psc_err_text(&err));
	agent_halt(b);
	assert_int_equal(oc, PSC_PEER_DEPARTURE_ALIVE);

	/* The owner cannot leave a PSC with members. */
	assert_int_equal(psc_peer_leave(a->p, id, &err), PSC_E_PEER_FORBIDDEN);
	assert_non_null(strstr(err.detail, "owner_must_destroy"));

	/* Destroy: the member hears it and forgets the PSC. */
	agent_serve(b);
	if (psc_peer_destroy(a->p, id, &err) != PSC_OK)
		fail_msg("destroy: %s", psc_err_text(&err));
	usleep(300 * 1000);
	agent_halt(b);
	assert_int_equal(epoch_of(a, id, NULL), 0);
	assert_int_equal(b->gones, 1);
	assert_int_equal(b->last_reason, PSC_PEER_REASON_DESTROYED);
	assert_int_equal(epoch_of(b, id, NULL), 0);
	agent_free(&a);
	agent_free(&b);
	agent_free(&c);
}

static void test_eviction_of_silent_member(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1), *b = agent_new("peer2", 1);
	uint8_t id[16];
	establish(a, "it-room-5", id);
	uint64_t e = 0;
	agent_serve(a);
	join(b, id, &e);
	agent_halt(a);
	agent_free(&b); /* b goes away without leaving */
	psc_err err = {0};
	psc_peer_departure_outcome oc;
	if (psc_peer_report_departure(
		a->p, id, (uint8_t[16]){0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3},
		&oc, &err) != PSC_OK)
		fail_msg("report: %s", psc_err_text(&err));
	assert_int_equal(oc, PSC_PEER_DEPARTURE_EVICTED);
	agent_drain(a, 300);
	uint64_t prev = 9;
	assert_int_equal(epoch_of(a, id, &prev), 3);
	assert_int_equal(prev, 0);
	agent_free(&a);
}

static void test_kms_restart(void **state)
{
	(void)state;
	agent *a = agent_new("peer1", 1);
	uint8_t id[16];
	establish(a, "it-room-6", id);
	assert_int_equal(pt_proc_stop(&K.proc, 10000), 0);
	K.up = 0;
	assert_int_equal(kms_start(), 0);
	/* libzmq reconnects; the SDK notices and registers again by itself. */
	for (int i = 0; i < 100 && a->reconnects == 0; i++)
		assert_true(psc_peer_process(a->p, 100) >= 0);
	assert_int_equal(a->reconnects, 1);
	assert_int_equal(epoch_of(a, id, NULL), 1);
	psc_peer_lookup_result lr;
	psc_err err = {0};
	if (psc_peer_lookup(a->p, "it-room-6", &lr, &err) != PSC_OK)
		fail_msg("lookup after restart: %s", psc_err_text(&err));
	assert_memory_equal(lr.psc_id, id, 16);
	agent_free(&a);
}

/* psc-peer end to end: arguments, output for people, exit codes, and an
 * owner served by `psc-peer init --wait --accept-queries`. */
static int cli(char **out, const char *peer, ...)
{
	char *argv[40];
	int n = 0;
	static char cert[4096], key[4096], kmsep[64];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(peer));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(peer));
	snprintf(kmsep, sizeof(kmsep), "tcp://127.0.0.1:%d", K.port);
	argv[n++] = PSC_PEER_CLI;
	va_list ap;
	va_start(ap, peer);
	for (char *a = va_arg(ap, char *); a && n < 24; a = va_arg(ap, char *))
		argv[n++] = a;
	va_end(ap);
	char *common[] = {"--kms",     kmsep,	   "--kms-cert", K.cert,  "--kms-curve",
			  K.curve,     "--cert",   cert,	 "--key", key,
			  "--overlay", "psc.test", NULL};
	for (int i = 0; common[i]; i++)
		argv[n++] = common[i];
	argv[n] = NULL;
	return pt_run(argv, out, 60000);
}

static void test_cli(void **state)
{
	(void)state;
	char *out = NULL;
	assert_int_equal(
	    cli(&out, "peer3", "establish", "it-cli-room", "--label", "team=ops", NULL), 0);
	assert_non_null(strstr(out, "established PSC 'it-cli-room'"));
	char *idp = strstr(out, "id      ");
	assert_non_null(idp);
	char id[33];
	memcpy(id, idp + 8, 32);
	id[32] = '\0';
	free(out);

	assert_int_equal(cli(&out, "peer4", "lookup", "it-cli-room", NULL), 0);
	assert_non_null(strstr(out, id));
	free(out);
	assert_int_equal(cli(&out, "peer6", "join", id, NULL), 1);
	assert_non_null(strstr(out, "KMS refused PscJoin: Forbidden (policy_denied)"));
	free(out);

	/* The owner answers the KMS's Query from the command line. */
	char cert[4096], key[4096], kmsep[64], log[4200];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path("peer3"));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path("peer3"));
	snprintf(kmsep, sizeof(kmsep), "tcp://127.0.0.1:%d", K.port);
	snprintf(log, sizeof(log), "%s/owner-cli.log", K.dir);
	char *argv[] = {PSC_PEER_CLI, "init",	  "--wait",	"8",	 "--accept-queries",
			"--kms",      kmsep,	  "--kms-cert", K.cert,	 "--kms-curve",
			K.curve,      "--cert",	  cert,		"--key", key,
			"--overlay",  "psc.test", NULL};
	pt_proc owner;
	assert_int_equal(pt_proc_start(&owner, argv, NULL, log), 0);
	usleep(1500 * 1000); /* registered and serving */
	agent *asker = agent_new("peer5", 1);
	uint8_t bin[16];
	assert_int_equal(psc_peer_id_parse(id, bin), PSC_OK);
	uint64_t e = 0;
	join(asker, bin, &e);
	assert_int_equal(e, 2);
	agent_free(&asker);
	/* The owner's Refresh follows the joiner's answer (the KMS's HSM workers
	 * make it after the answer left): wait for it before stopping the owner. */
	size_t len = 0;
	char *olog = NULL;
	for (int i = 0; i < 100; i++) {
		free(olog);
		olog = (char *)pt_read_file(log, &len);
		if (olog && memmem(olog, len, "now at epoch 2 (join)", 21))
			break;
		usleep(50 * 1000);
	}
	pt_proc_stop(&owner, 5000); /* SIGTERM ends --wait cleanly */
	assert_non_null(olog);
	assert_non_null(memmem(olog, len, "asks to join PSC", 16));
	assert_non_null(memmem(olog, len, "accepted", 8));
	assert_non_null(memmem(olog, len, "now at epoch 2 (join)", 21));
	free(olog);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_establish_join_refresh),
	    cmocka_unit_test(test_policy_and_owner_decisions),
	    cmocka_unit_test(test_invite),
	    cmocka_unit_test(test_leave_departure_destroy),
	    cmocka_unit_test(test_eviction_of_silent_member),
	    cmocka_unit_test(test_kms_restart),
	    cmocka_unit_test(test_cli),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
