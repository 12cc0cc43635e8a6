/*
 * The SDK's group channel (psc_peer_chan: PUB/SUB over ZeroMQ, frames sealed
 * with the PSC key) between peers of one process against a real psc-kmsd
 * (kmsfx: SoftHSM token, key ceremony, CURVE).
 * What this proves: members exchange messages both ways with the epoch
 * secrets the KMS distributed; a member that left gets nothing it can open
 * after the rekey (it unsubscribed, and a frame captured on the wire does not
 * open with what it holds); a new member cannot read what was sent before it
 * joined.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "kmsfx.h"
#include "psc/peer.h"
#include "psc_chan.h"
#include "psc_seal.h"

#define MAX_RX 32

typedef struct agent {
	const char *name;
	psc_peer *p;
	psc_peer_chan *c;
	uint8_t id[16];
	char ep[64];
	int n_rx;
	char rx[MAX_RX][128];
	uint8_t rx_sender[MAX_RX][16];
	int rx_verified[MAX_RX];
	pthread_t th;
	atomic_int stop;
	int serving;
} agent;

static kmsfx FX;
static agent *A, *B, *C, *D; /* peer1 owns the PSC; peer4 joins late */
static uint8_t PSC[16];

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void a_error(void *u, const psc_err *e)
{
	print_message("  [%s warning] %s\n", ((agent *)u)->name, psc_err_text(e));
}

static void a_message(void *u, const psc_peer_msg_info *info, const uint8_t *data, size_t len)
{
	agent *a = u;
	if (a->n_rx >= MAX_RX)
		return;
	snprintf(a->rx[a->n_rx], sizeof(a->rx[0]), "%.*s", (int)len, (const char *)data);
	memcpy(a->rx_sender[a->n_rx], info->sender, 16);
	a->rx_verified[a->n_rx] = info->sender_verified;
	a->n_rx++;
}

static agent *agent_new(const char *name)
{
	agent *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->name = name;
	char cert[4096], key[4096];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	snprintf(a->ep, sizeof(a->ep), "tcp://127.0.0.1:%d", pt_free_port());
	psc_peer_callbacks cb = {.on_error = a_error};
	psc_peer_config cfg = {
	    .cert_file = cert,
	    .key_file = key,
	    .kms_endpoint = FX.endpoint,
	    .kms_cert_file = FX.cert,
	    .kms_curve_key = FX.curve,
	    .overlay = "psc.test",
	    .data_endpoint = a->ep,
	    .request_timeout_ms = 15000,
	    .callbacks = &cb,
	    .user = a,
	};
	psc_err err = {0};
	if (psc_peer_new(&a->p, &cfg, &err) != PSC_OK)
		fail_msg("psc_peer_new(%s): %s", name, psc_err_text(&err));
	psc_peer_node_id(a->p, a->id);
	/* Bind before the next agent picks a free port. */
	psc_peer_chan_config cc = {.on_message = a_message, .user = a};
	if (psc_peer_chan_new(&a->c, a->p, &cc, &err) != PSC_OK)
		fail_msg("psc_peer_chan_new(%s): %s", name, psc_err_text(&err));
	if (psc_peer_initialize(a->p, NULL, NULL, &err) != PSC_OK)
		fail_msg("initialize(%s): %s", name, psc_err_text(&err));
	return a;
}

static void *serve(void *arg)
{
	agent *a = arg;
	while (!atomic_load(&a->stop))
		if (psc_peer_chan_process(a->c, 50) < 0)
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
	if (!a || !a->serving)
		return;
	atomic_store(&a->stop, 1);
	pthread_join(a->th, NULL);
	a->serving = 0;
}

static void agent_free(agent **a)
{
	if (!*a)
		return;
	agent_halt(*a);
	psc_peer_chan_free(&(*a)->c);
	psc_peer_free(&(*a)->p);
	free(*a);
	*a = NULL;
}

/* Runs every agent's event loop (in this thread) for ms. */
static void pump(agent *const *as, size_t n, int ms)
{
	int64_t end = now_ms() + ms;
	while (now_ms() < end)
		for (size_t i = 0; i < n; i++)
			assert_true(psc_peer_chan_process(as[i]->c, 5) >= 0);
}

static int has_rx(const agent *a, const char *text, const uint8_t sender[16])
{
	for (int i = 0; i < a->n_rx; i++)
		if (strcmp(a->rx[i], text) == 0 && memcmp(a->rx_sender[i], sender, 16) == 0 &&
		    a->rx_verified[i] == 0)
			return 1;
	return 0;
}

/* Pumps until each of the receivers got text from the sender (or 5 s). */
static void expect_rx(agent *const *all, size_t n_all, agent *const *rcv, size_t n_rcv,
		      const char *text, const agent *from)
{
	int64_t end = now_ms() + 5000;
	for (;;) {
		size_t got = 0;
		for (size_t i = 0; i < n_rcv; i++)
			got += (size_t)has_rx(rcv[i], text, from->id);
		if (got == n_rcv)
			return;
		if (now_ms() > end)
			fail_msg("'%s' from %s reached %zu of %zu members", text, from->name, got,
				 n_rcv);
		pump(all, n_all, 20);
	}
}

static uint64_t epoch_of(const agent *a)
{
	psc_peer_psc_info in;
	return psc_peer_psc_get(a->p, PSC, &in) == PSC_OK ? in.epoch : 0;
}

/* Pumps until every agent holds the same current epoch and is connected to
 * the other n-1 members, then lets the SUB connections settle. */
static void converge(agent *const *as, size_t n)
{
	int64_t end = now_ms() + 8000;
	for (;;) {
		int ok = 1;
		for (size_t i = 0; i < n; i++) {
			psc_peer_chan_stats st;
			psc_peer_chan_stats_get(as[i]->c, &st);
			if (epoch_of(as[i]) == 0 || epoch_of(as[i]) != epoch_of(as[0]) ||
			    st.connections != n - 1)
				ok = 0;
		}
		if (ok)
			break;
		if (now_ms() > end)
			fail_msg("members did not converge on one epoch and full connectivity");
		pump(as, n, 50);
	}
	pump(as, n, 400); /* TCP connect + subscription reach the publishers */
}

static void send_text(agent *a, const char *text)
{
	psc_err err = {0};
	if (psc_peer_send(a->c, PSC, (const uint8_t *)text, strlen(text), &err) != PSC_OK)
		fail_msg("psc_peer_send(%s): %s", a->name, psc_err_text(&err));
}

/* A SUB socket of the test itself on a member's data endpoint: what an
 * eavesdropper (or a former member) can capture on the wire. */
static void *tap(const agent *a)
{
	void *s = zmq_socket(FX.zctx, ZMQ_SUB);
	assert_non_null(s);
	int to = 5000, zero = 0;
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof(to));
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	assert_int_equal(zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0), 0);
	assert_int_equal(zmq_connect(s, a->ep), 0);
	return s;
}

static size_t tap_recv(void *s, uint8_t *buf, size_t cap)
{
	int n = zmq_recv(s, buf, cap, 0);
	assert_true(n > 0 && (size_t)n <= cap);
	return (size_t)n;
}

/* The epoch a captured frame is sealed under, read by the SDK's own parser
 * (which also proves the frame well-formed, docs/protocol.md §13.2). */
static uint64_t frame_epoch(const uint8_t *f, size_t len)
{
	psc_seal_frame sf;
	assert_int_equal(psc_seal_parse(f, len, &sf, NULL), PSC_OK);
	return sf.h.epoch;
}

static int group_setup(void **state)
{
	(void)state;
	if (kmsfx_install(&FX, "peer-chan", NULL, NULL) != 0 || kmsfx_start(&FX) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	agent_free(&A);
	agent_free(&B);
	agent_free(&C);
	agent_free(&D);
	kmsfx_cleanup(&FX);
	return 0;
}

static void test_three_members_exchange(void **state)
{
	(void)state;
	A = agent_new("peer1");
	B = agent_new("peer2");
	C = agent_new("peer3");
	psc_peer_establish_params ep = {.name = "chan-room"};
	psc_err err = {0};
	if (psc_peer_establish(A->p, &ep, PSC, NULL, NULL, &err) != PSC_OK)
		fail_msg("establish: %s", psc_err_text(&err));
	agent_serve(A);
	if (psc_peer_join(B->p, PSC, NULL, &err) != PSC_OK)
		fail_msg("join peer2: %s", psc_err_text(&err));
	agent_serve(B);
	if (psc_peer_join(C->p, PSC, NULL, &err) != PSC_OK)
		fail_msg("join peer3: %s", psc_err_text(&err));
	agent_halt(A);
	agent_halt(B);
	agent *all[] = {A, B, C};
	converge(all, 3);

	uint8_t prefix[PSC_CHAN_PREFIX_LEN];
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(A->p, PSC, &in), PSC_OK);
	psc_chan_prefix(PSC, in.suite, in.sender_signatures, prefix);
	assert_memory_equal(prefix + 4, PSC, 16);

	send_text(A, "hello from peer1");
	expect_rx(all, 3, (agent *[]){B, C}, 2, "hello from peer1", A);
	send_text(B, "hello from peer2");
	expect_rx(all, 3, (agent *[]){A, C}, 2, "hello from peer2", B);
	send_text(C, "hello from peer3");
	expect_rx(all, 3, (agent *[]){A, B}, 2, "hello from peer3", C);
	/* Nobody hears itself, nothing was dropped. */
	pump(all, 3, 200);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(all[i]->n_rx, 2);
		psc_peer_chan_stats st;
		psc_peer_chan_stats_get(all[i]->c, &st);
		assert_int_equal(st.sent, 1);
		assert_int_equal(st.delivered, 2);
		assert_int_equal(st.dropped, 0);
		assert_int_equal(st.subscriptions, 1);
	}
}

static void test_left_member_locked_out(void **state)
{
	(void)state;
	assert_non_null(C);
	uint64_t c_epoch = epoch_of(C);
	agent_serve(A);
	agent_serve(B);
	psc_err err = {0};
	if (psc_peer_leave(C->p, PSC, &err) != PSC_OK)
		fail_msg("leave: %s", psc_err_text(&err));
	agent_halt(A);
	agent_halt(B);
	agent *rest[] = {A, B};
	converge(rest, 2);
	assert_true(epoch_of(A) > c_epoch);
	psc_peer_psc_info in;
	assert_int_equal(psc_peer_psc_get(C->p, PSC, &in), PSC_E_PEER_UNKNOWN_PSC);

	void *s = tap(A);
	agent *all[] = {A, B, C};
	pump(all, 3, 400);
	int c_before = C->n_rx;
	send_text(A, "after peer3 left");
	static uint8_t frame[4096];
	size_t flen = tap_recv(s, frame, sizeof(frame));
	zmq_close(s);
	assert_true(frame_epoch(frame, flen) > c_epoch);
	expect_rx(all, 3, (agent *[]){B}, 1, "after peer3 left", A);
	pump(all, 3, 300);
	assert_int_equal(C->n_rx, c_before); /* unsubscribed: nothing arrives */

	/* And the frame captured on the wire does not open with what it holds. */
	psc_peer_msg *m = NULL;
	assert_int_equal(psc_peer_msg_new(&m, C->p, NULL, &err), PSC_OK);
	uint8_t out[4096];
	size_t olen = 0;
	psc_rc rc = psc_peer_open(m, frame, flen, out, sizeof(out), &olen, NULL, &err);
	assert_int_not_equal(rc, PSC_OK);
	print_message("  former member opening a post-rekey frame: %s\n", psc_rc_name(rc));
	psc_peer_msg_free(&m);

	/* The remaining members still talk both ways. */
	send_text(B, "peer2 after the rekey");
	expect_rx(all, 3, (agent *[]){A}, 1, "peer2 after the rekey", B);
	assert_int_equal(C->n_rx, c_before);
}

static void test_new_member_no_backlog(void **state)
{
	(void)state;
	assert_non_null(A);
	D = agent_new("peer4");
	void *s = tap(A);
	agent *all[] = {A, B, D};
	pump(all, 3, 400);
	send_text(A, "before peer4 joined");
	static uint8_t frame[4096];
	size_t flen = tap_recv(s, frame, sizeof(frame));
	zmq_close(s);
	uint64_t before = frame_epoch(frame, flen);

	agent_serve(A);
	agent_serve(B);
	psc_err err = {0};
	if (psc_peer_join(D->p, PSC, NULL, &err) != PSC_OK)
		fail_msg("join peer4: %s", psc_err_text(&err));
	agent_halt(A);
	agent_halt(B);
	converge(all, 3);
	assert_true(epoch_of(D) > before);
	assert_int_equal(D->n_rx, 0);

	/* The frame from before the join does not open for the newcomer. */
	psc_peer_msg *m = NULL;
	assert_int_equal(psc_peer_msg_new(&m, D->p, NULL, &err), PSC_OK);
	uint8_t out[4096];
	size_t olen = 0;
	assert_int_equal(psc_peer_open(m, frame, flen, out, sizeof(out), &olen, NULL, &err),
			 PSC_E_PEER_SEAL_STALE_EPOCH);
	psc_peer_msg_free(&m);

	/* Messages after the join reach it, and its own reach the others. */
	send_text(A, "welcome peer4");
	expect_rx(all, 3, (agent *[]){B, D}, 2, "welcome peer4", A);
	send_text(D, "hello from peer4");
	expect_rx(all, 3, (agent *[]){A, B}, 2, "hello from peer4", D);
	for (int i = 0; i < D->n_rx; i++)
		assert_string_not_equal(D->rx[i], "before peer4 joined");
}

/* psc-peer as peer8 (a free joiner of the policy), serving at ep. */
static int cli_argv(char **argv, const char *ep, const char *const *cmd)
{
	static char cert[4096], key[4096];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path("peer8"));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path("peer8"));
	int n = 0;
	argv[n++] = PSC_PEER_CLI;
	for (; *cmd; cmd++)
		argv[n++] = (char *)*cmd;
	const char *common[] = {"--kms",     FX.endpoint, "--kms-cert", FX.cert, "--kms-curve",
				FX.curve,    "--cert",	  cert,		"--key", key,
				"--overlay", "psc.test",  "--endpoint", ep};
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
		argv[n++] = (char *)common[i];
	argv[n] = NULL;
	return n;
}

static void test_cli_send_listen(void **state)
{
	(void)state;
	assert_non_null(D);
	char ep[64], hexid[33], ahex[33], log[4300];
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", pt_free_port());
	psc_peer_id_hex(PSC, hexid);
	psc_peer_id_hex(A->id, ahex);
	agent *all[] = {A, B, D};
	char *argv[40], *out = NULL;

	agent_serve(A);
	agent_serve(B);
	agent_serve(D);
	cli_argv(argv, ep, (const char *const[]){"init", "--join", hexid, NULL});
	int rc = pt_run(argv, &out, 30000);
	agent_halt(A);
	agent_halt(B);
	agent_halt(D);
	if (rc != 0)
		fail_msg("psc-peer init --join: %d\n%s", rc, out ? out : "");
	free(out);
	out = NULL;

	pt_proc lp;
	snprintf(log, sizeof(log), "%s/listen.log", FX.dir);
	cli_argv(argv, ep, (const char *const[]){"listen", "--wait", "4", NULL});
	assert_int_equal(pt_proc_start(&lp, argv, NULL, log), 0);
	/* Everyone connects to the listener's endpoint (peer8 is in the member
	 * lists since its join) and it to theirs. */
	int64_t end = now_ms() + 2500;
	for (;;) {
		size_t n = 0;
		uint8_t *l = pt_read_file(log, &n);
		int up = l && memmem(l, n, "listening", 9);
		free(l);
		if (up || now_ms() > end)
			break;
		pump(all, 3, 50);
	}
	pump(all, 3, 800);
	send_text(A, "to the cli");
	pump(all, 3, 200);
	int st = -1;
	for (int i = 0; i < 100 && st < 0; i++) {
		st = pt_proc_wait(&lp, 0);
		if (st < 0)
			pump(all, 3, 50);
	}
	if (st < 0)
		st = pt_proc_stop(&lp, 2000);
	size_t n = 0;
	char *l = (char *)pt_read_file(log, &n);
	char want[128];
	snprintf(want, sizeof(want), "from %s (claimed): to the cli", ahex);
	if (st != 0 || !l || !memmem(l, n, want, strlen(want)))
		fail_msg("psc-peer listen (exit %d) did not print '%s':\n%.*s", st, want, (int)n,
			 l ? l : "");
	free(l);

	/* psc-peer send: the members hear it. */
	uint8_t p8[16];
	assert_int_equal(pt_ca_nodeid("peer8", p8), 0);
	agent cli = {.name = "psc-peer"};
	memcpy(cli.id, p8, 16);
	pt_proc sp;
	snprintf(log, sizeof(log), "%s/send.log", FX.dir);
	cli_argv(argv, ep, (const char *const[]){"send", hexid, "from the cli", NULL});
	assert_int_equal(pt_proc_start(&sp, argv, NULL, log), 0);
	st = -1;
	for (int i = 0; i < 200 && st < 0; i++) {
		st = pt_proc_wait(&sp, 0);
		if (st < 0)
			pump(all, 3, 50);
	}
	assert_int_equal(st, 0);
	expect_rx(all, 3, (agent *[]){A, B, D}, 3, "from the cli", &cli);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_three_members_exchange),
	    cmocka_unit_test(test_left_member_locked_out),
	    cmocka_unit_test(test_new_member_no_backlog),
	    cmocka_unit_test(test_cli_send_listen),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
