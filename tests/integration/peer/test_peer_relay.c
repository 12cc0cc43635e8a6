/*
 * The group channel in relay mode: SDK peers of one process against a real
 * psc-kmsd (kmsfx) and a real psc-relay process (CURVE on), on loopback.
 * What this proves: three members exchange messages both ways through the
 * relay with two connections each; a former member and a peer that never was
 * one, connected to the relay and subscribed to the PSC's frames, receive
 * frames they cannot open; a frame altered (or replayed) by anyone at the
 * relay is rejected by every member; after the relay restarts the members'
 * ZeroMQ sockets reconnect by themselves and messages flow again; frames over
 * --max-frame and multipart messages are dropped and counted (SIGUSR1 prints
 * the counters); bad relay arguments exit 2 naming the argument.
 * Delivery is best effort (a frame published before a subscription reached
 * the publisher is lost), so steps that depend on connections being up repeat
 * their send until it arrives, within generous bounds: nothing here measures
 * time.
 */
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
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

#define MAX_RX 64
#define WAIT_MS 20000 /* a bound against hanging, not a speed requirement */

typedef struct agent {
	const char *name;
	psc_peer *p;
	psc_peer_chan *c;
	uint8_t id[16];
	int n_rx;
	char rx[MAX_RX][128];
	uint8_t rx_sender[MAX_RX][16];
} agent;

static kmsfx FX;
static agent *A, *B, *C, *E; /* peer1 owns the PSC; peer6 may never join */
static uint8_t PSC[16];
static struct {
	pt_proc proc;
	char pub_ep[64], sub_ep[64], key_file[4200], pubkey[41], log[4200];
	int runs;
} R;
static psc_peer_chan_relay RELAY;

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the psc-relay process ---------------------------------------------- */

static char *relay_log_text(size_t *n)
{
	return pt_read_text(R.log, n);
}

static void relay_start(void)
{
	snprintf(R.log, sizeof(R.log), "%s/relay-%d.log", FX.dir, ++R.runs);
	char *argv[] = {PSC_RELAY_BIN,
			"--publish-endpoint",
			R.pub_ep,
			"--subscribe-endpoint",
			R.sub_ep,
			"--curve-secret-file",
			R.key_file,
			"--hwm",
			"5000",
			NULL};
	assert_int_equal(pt_proc_start(&R.proc, argv, NULL, R.log), 0);
	int64_t end = now_ms() + WAIT_MS;
	for (;;) {
		size_t n = 0;
		char *t = relay_log_text(&n);
		int ready = t && strstr(t, "psc-relay: ready");
		if (ready) {
			/* It prints the public key of the secret it loaded. */
			assert_non_null(strstr(t, R.pubkey));
			free(t);
			return;
		}
		free(t);
		if (pt_proc_wait(&R.proc, 20) != -1 || now_ms() > end) {
			t = relay_log_text(&n);
			fail_msg("psc-relay did not start:\n%s", t ? t : "");
		}
	}
}

/* SIGTERM: a clean stop (exit 0) that prints its counters. */
static void relay_stop(void)
{
	assert_int_equal(pt_proc_stop(&R.proc, 10000), 0);
	size_t n = 0;
	char *t = relay_log_text(&n);
	assert_non_null(t);
	assert_non_null(strstr(t, "psc-relay: stopped: forwarded "));
	free(t);
}

/* ---- SDK members in relay mode ------------------------------------------- */

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
	a->n_rx++;
}

/* No data endpoint: relay mode needs none. */
static agent *agent_new(const char *name)
{
	agent *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->name = name;
	char cert[4096], key[4096];
	snprintf(cert, sizeof(cert), "%s.crt.pem", pt_ca_path(name));
	snprintf(key, sizeof(key), "%s.key.pem", pt_ca_path(name));
	psc_peer_callbacks cb = {.on_error = a_error};
	psc_peer_config cfg = {
	    .cert_file = cert,
	    .key_file = key,
	    .kms_endpoint = FX.endpoint,
	    .kms_cert_file = FX.cert,
	    .kms_curve_key = FX.curve,
	    .overlay = "psc.test",
	    .request_timeout_ms = 15000,
	    .callbacks = &cb,
	    .user = a,
	};
	psc_err err = {0};
	if (psc_peer_new(&a->p, &cfg, &err) != PSC_OK)
		fail_msg("psc_peer_new(%s): %s", name, psc_err_text(&err));
	psc_peer_node_id(a->p, a->id);
	psc_peer_chan_config cc = {.on_message = a_message, .user = a, .relay = &RELAY};
	if (psc_peer_chan_new(&a->c, a->p, &cc, &err) != PSC_OK)
		fail_msg("psc_peer_chan_new(%s): %s", name, psc_err_text(&err));
	if (psc_peer_initialize(a->p, NULL, NULL, &err) != PSC_OK)
		fail_msg("initialize(%s): %s", name, psc_err_text(&err));
	return a;
}

static void agent_free(agent **a)
{
	if (!*a)
		return;
	psc_peer_chan_free(&(*a)->c);
	psc_peer_free(&(*a)->p);
	free(*a);
	*a = NULL;
}

static void pump(agent *const *as, size_t n, int ms)
{
	int64_t end = now_ms() + ms;
	do {
		for (size_t i = 0; i < n; i++)
			assert_true(psc_peer_chan_process(as[i]->c, 5) >= 0);
	} while (now_ms() < end);
}

static int count_rx(const agent *a, const char *text, const uint8_t sender[16])
{
	int k = 0;
	for (int i = 0; i < a->n_rx; i++)
		k += strcmp(a->rx[i], text) == 0 && memcmp(a->rx_sender[i], sender, 16) == 0;
	return k;
}

static uint64_t epoch_of(const agent *a)
{
	psc_peer_psc_info in;
	return psc_peer_psc_get(a->p, PSC, &in) == PSC_OK ? in.epoch : 0;
}

static void send_text(agent *a, const char *text)
{
	psc_err err = {0};
	if (psc_peer_send(a->c, PSC, (const uint8_t *)text, strlen(text), &err) != PSC_OK)
		fail_msg("psc_peer_send(%s): %s", a->name, psc_err_text(&err));
}

/*
 * Sends text from `from` until every receiver got it at least once; a send
 * may be lost while connections and subscriptions are still being set up.
 */
static void deliver(agent *const *all, size_t n_all, agent *from, agent *const *rcv, size_t n_rcv,
		    const char *text)
{
	int64_t end = now_ms() + WAIT_MS;
	for (;;) {
		send_text(from, text);
		int64_t step = now_ms() + 300;
		while (now_ms() < step) {
			pump(all, n_all, 20);
			size_t got = 0;
			for (size_t i = 0; i < n_rcv; i++)
				got += count_rx(rcv[i], text, from->id) > 0;
			if (got == n_rcv)
				return;
		}
		if (now_ms() > end)
			fail_msg("'%s' from %s did not reach every member through the relay", text,
				 from->name);
	}
}

/* Pumps until the agents hold one current epoch (relay mode: one connection). */
static void converge(agent *const *as, size_t n)
{
	int64_t end = now_ms() + WAIT_MS;
	for (;;) {
		int ok = 1;
		for (size_t i = 0; i < n; i++) {
			psc_peer_chan_stats st;
			psc_peer_chan_stats_get(as[i]->c, &st);
			if (epoch_of(as[i]) == 0 || epoch_of(as[i]) != epoch_of(as[0]) ||
			    st.connections != 1 || st.subscriptions != 1)
				ok = 0;
		}
		if (ok)
			return;
		if (now_ms() > end)
			fail_msg("members did not converge on one epoch");
		pump(as, n, 50);
	}
}

/* ---- raw sockets at the relay: what anyone who can reach it can do -------- */

static void raw_curve(void *s)
{
	char pub[41], sec[41];
	assert_int_equal(zmq_curve_keypair(pub, sec), 0);
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, R.pubkey, 40), 0);
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40), 0);
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40), 0);
}

/* A SUB at the relay's subscribe endpoint, subscribed to this PSC's frames. */
static void *raw_sub(void)
{
	void *s = zmq_socket(FX.zctx, ZMQ_SUB);
	assert_non_null(s);
	int to = 300, zero = 0;
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof(to));
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	raw_curve(s);
	assert_int_equal(zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0), 0);
	assert_int_equal(zmq_connect(s, R.sub_ep), 0);
	return s;
}

/* Sends text from `from` until the raw SUB captures one of its frames. */
static size_t capture(agent *const *all, size_t n_all, agent *from, void *s, const char *text,
		      uint8_t *buf, size_t cap)
{
	int64_t end = now_ms() + WAIT_MS;
	while (now_ms() < end) {
		send_text(from, text);
		pump(all, n_all, 20);
		int n;
		while ((n = zmq_recv(s, buf, cap, 0)) > 0) {
			assert_true((size_t)n <= cap);
			if ((size_t)n > PSC_CHAN_SENDER_OFF + 16 &&
			    memcmp(buf + 4, PSC, 16) == 0 &&
			    memcmp(buf + PSC_CHAN_SENDER_OFF, from->id, 16) == 0)
				return (size_t)n;
		}
	}
	fail_msg("no frame of %s captured at the relay", from->name);
	return 0;
}

/* The epoch a captured frame is sealed under, read by the SDK's own parser
 * (which also proves the frame well-formed, docs/protocol.md §13.2). */
static uint64_t frame_epoch(const uint8_t *f, size_t len)
{
	psc_seal_frame sf;
	assert_int_equal(psc_seal_parse(f, len, &sf, NULL), PSC_OK);
	return sf.h.epoch;
}

/* ---- tests ------------------------------------------------------------------ */

static int group_setup(void **state)
{
	(void)state;
	if (kmsfx_install(&FX, "peer-relay", NULL, NULL) != 0 || kmsfx_start(&FX) != 0)
		return -1;
	snprintf(R.pub_ep, sizeof(R.pub_ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(R.sub_ep, sizeof(R.sub_ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(R.key_file, sizeof(R.key_file), "%s/relay.secret", FX.dir);
	char *argv[] = {PSC_RELAY_BIN, "--curve-keygen", R.key_file, NULL}, *out = NULL;
	if (pt_run(argv, &out, 10000) != 0 || !out || strlen(out) < 40) {
		fprintf(stderr, "psc-relay --curve-keygen: %s\n", out ? out : "");
		free(out);
		return -1;
	}
	snprintf(R.pubkey, sizeof(R.pubkey), "%.40s", out);
	free(out);
	RELAY = (psc_peer_chan_relay){
	    .publish_endpoint = R.pub_ep, .subscribe_endpoint = R.sub_ep, .curve_key = R.pubkey};
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	agent_free(&A);
	agent_free(&B);
	agent_free(&C);
	agent_free(&E);
	if (R.proc.pid > 0 && !R.proc.exited)
		(void)pt_proc_stop(&R.proc, 10000);
	kmsfx_cleanup(&FX);
	return 0;
}

static void test_three_members_exchange(void **state)
{
	(void)state;
	relay_start();
	A = agent_new("peer1");
	B = agent_new("peer2");
	C = agent_new("peer3");
	agent *all[] = {A, B, C};
	psc_peer_establish_params ep = {.name = "relay-room"};
	psc_err err = {0};
	if (psc_peer_establish(A->p, &ep, PSC, NULL, NULL, &err) != PSC_OK)
		fail_msg("establish: %s", psc_err_text(&err));
	if (psc_peer_join(B->p, PSC, NULL, &err) != PSC_OK)
		fail_msg("join peer2: %s", psc_err_text(&err));
	if (psc_peer_join(C->p, PSC, NULL, &err) != PSC_OK)
		fail_msg("join peer3: %s", psc_err_text(&err));
	converge(all, 3);

	deliver(all, 3, A, (agent *[]){B, C}, 2, "hello from peer1");
	deliver(all, 3, B, (agent *[]){A, C}, 2, "hello from peer2");
	deliver(all, 3, C, (agent *[]){A, B}, 2, "hello from peer3");
	pump(all, 3, 200);
	for (size_t i = 0; i < 3; i++) {
		/* Nobody hears itself (the relay sends a member's frames back; the
		 * SDK skips them unopened), nothing was dropped. */
		assert_int_equal(count_rx(all[i], "hello from peer1", A->id) +
				     count_rx(all[i], "hello from peer2", B->id) +
				     count_rx(all[i], "hello from peer3", C->id),
				 all[i]->n_rx);
		for (int k = 0; k < all[i]->n_rx; k++)
			assert_memory_not_equal(all[i]->rx_sender[k], all[i]->id, 16);
		psc_peer_chan_stats st;
		psc_peer_chan_stats_get(all[i]->c, &st);
		assert_int_equal(st.dropped, 0);
		assert_int_equal(st.connections, 1);
		assert_int_equal(st.delivered, (uint64_t)all[i]->n_rx);
	}
}

/* Anyone connected to the relay can receive the frames; only members open them. */
static void test_outsiders_cannot_open(void **state)
{
	(void)state;
	assert_non_null(C);
	agent *all[] = {A, B, C};
	uint64_t c_epoch = epoch_of(C);
	psc_err err = {0};
	E = agent_new("peer6"); /* policy: may initialise, never join */
	if (psc_peer_leave(C->p, PSC, &err) != PSC_OK)
		fail_msg("leave: %s", psc_err_text(&err));
	agent *rest[] = {A, B};
	int64_t end = now_ms() + WAIT_MS;
	while (epoch_of(A) <= c_epoch || epoch_of(B) <= c_epoch) {
		if (now_ms() > end)
			fail_msg("the leave rekey did not reach peer1 and peer2");
		pump(all, 3, 20);
	}
	converge(rest, 2);
	pump(all, 3, 100);
	int c_before = C->n_rx;

	void *s = raw_sub();
	static uint8_t frame[4096];
	size_t flen = capture(all, 3, A, s, "after peer3 left", frame, sizeof(frame));
	zmq_close(s);
	assert_true(frame_epoch(frame, flen) > c_epoch);
	deliver(all, 3, A, (agent *[]){B}, 1, "after peer3 left");
	pump(all, 3, 200);
	assert_int_equal(C->n_rx, c_before); /* its channel unsubscribed at the rekey */

	const agent *outs[] = {C, E};
	for (size_t i = 0; i < 2; i++) {
		psc_peer_msg *m = NULL;
		assert_int_equal(psc_peer_msg_new(&m, outs[i]->p, NULL, &err), PSC_OK);
		uint8_t out[4096];
		size_t olen = 0;
		psc_rc rc = psc_peer_open(m, frame, flen, out, sizeof(out), &olen, NULL, &err);
		print_message("  %s opening a frame captured at the relay: %s\n", outs[i]->name,
			      psc_rc_name(rc));
		assert_int_equal(rc, PSC_E_PEER_UNKNOWN_PSC);
		psc_peer_msg_free(&m);
	}
	/* The frame itself is genuine: a current member opens it. */
	psc_peer_msg *m = NULL;
	assert_int_equal(psc_peer_msg_new(&m, B->p, NULL, &err), PSC_OK);
	uint8_t out[4096];
	size_t olen = 0;
	assert_int_equal(psc_peer_open(m, frame, flen, out, sizeof(out), &olen, NULL, &err),
			 PSC_OK);
	psc_peer_msg_free(&m);
	agent_free(&C);
}

/* A PUB connected to the relay's publish endpoint injects altered and replayed
 * frames: every member drops them. */
static void test_tampered_frame_rejected(void **state)
{
	(void)state;
	assert_non_null(A);
	agent *all[] = {A, B};
	void *s = raw_sub();
	static uint8_t frame[4096], bad[4096];
	size_t flen = capture(all, 2, A, s, "original", frame, sizeof(frame));
	zmq_close(s);
	deliver(all, 2, A, (agent *[]){B}, 1, "original");
	int b_before = B->n_rx;
	psc_peer_chan_stats b0, a0;
	psc_peer_chan_stats_get(B->c, &b0);
	psc_peer_chan_stats_get(A->c, &a0);

	void *pub = zmq_socket(FX.zctx, ZMQ_PUB);
	assert_non_null(pub);
	int zero = 0;
	zmq_setsockopt(pub, ZMQ_LINGER, &zero, sizeof(zero));
	raw_curve(pub);
	assert_int_equal(zmq_connect(pub, R.pub_ep), 0);

	/* 1: a ciphertext bit flipped and the sequence number moved ahead (a
	 * replayed sequence number would be refused before the tag is checked);
	 * 2: the epoch in the header (AAD) changed; 3: the original replayed.
	 * Each repeated until B counted it. */
	for (int kind = 1; kind <= 3; kind++) {
		memcpy(bad, frame, flen);
		if (kind == 1) {
			bad[flen - 20] ^= 0x01;
			bad[66] ^= 0x01; /* seq (offset 60, big-endian) + 256 */
		} else if (kind == 2) {
			bad[27] ^= 0x01;
		}
		psc_peer_chan_stats before;
		psc_peer_chan_stats_get(B->c, &before);
		int64_t end = now_ms() + WAIT_MS;
		for (;;) {
			assert_true(zmq_send(pub, bad, flen, ZMQ_DONTWAIT) >= 0 ||
				    zmq_errno() == EAGAIN);
			pump(all, 2, 50);
			psc_peer_chan_stats st;
			psc_peer_chan_stats_get(B->c, &st);
			if (st.dropped > before.dropped)
				break;
			if (now_ms() > end)
				fail_msg("injected frame %d never reached peer2", kind);
		}
	}
	zmq_close(pub);
	pump(all, 2, 200);
	psc_peer_chan_stats b1, a1;
	psc_peer_chan_stats_get(B->c, &b1);
	psc_peer_chan_stats_get(A->c, &a1);
	print_message("  peer2 dropped: auth %llu, epoch %llu, replay %llu\n",
		      (unsigned long long)(b1.dropped_auth - b0.dropped_auth),
		      (unsigned long long)(b1.dropped_epoch - b0.dropped_epoch),
		      (unsigned long long)(b1.dropped_replay - b0.dropped_replay));
	assert_int_equal(B->n_rx, b_before); /* nothing delivered */
	assert_int_equal(b1.delivered, b0.delivered);
	assert_true(b1.dropped_auth > b0.dropped_auth);
	assert_true(b1.dropped_replay > b0.dropped_replay);
	/* A altered header (epoch + 1) is a future epoch or a bad tag: never delivered. */
	assert_true(b1.dropped_auth + b1.dropped_epoch >= b0.dropped_auth + b0.dropped_epoch + 2);
	/* The sender's own frames, replayed, are skipped by it unopened. */
	assert_int_equal(a1.delivered, a0.delivered);
	assert_int_equal(a1.dropped_replay, a0.dropped_replay);
}

static void test_relay_restart(void **state)
{
	(void)state;
	assert_non_null(A);
	agent *all[] = {A, B, E};
	relay_stop();
	pump(all, 3, 300); /* sends now go nowhere: no error, best effort */
	send_text(A, "while the relay is down");
	relay_start();
	deliver(all, 3, A, (agent *[]){B}, 1, "after the relay restart");
	deliver(all, 3, B, (agent *[]){A}, 1, "and back");
	assert_int_equal(E->n_rx, 0); /* never a member: nothing ever opened */
}

static int log_has(const char *path, const char *want)
{
	size_t n = 0;
	char *t = pt_read_text(path, &n);
	int yes = t && strstr(t, want);
	free(t);
	return yes;
}

/* --max-frame and multipart: a second relay (plain TCP) between raw sockets;
 * what it drops is counted, printed on SIGUSR1 and at exit. */
static void test_relay_drops_and_counts(void **state)
{
	(void)state;
	char pub_ep[64], sub_ep[64], log[4300];
	snprintf(pub_ep, sizeof(pub_ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(sub_ep, sizeof(sub_ep), "tcp://127.0.0.1:%d", pt_free_port());
	snprintf(log, sizeof(log), "%s/relay-limits.log", FX.dir);
	char *argv[] = {PSC_RELAY_BIN, "--publish-endpoint", pub_ep, "--subscribe-endpoint",
			sub_ep, "--max-frame", "200", NULL};
	pt_proc p;
	assert_int_equal(pt_proc_start(&p, argv, NULL, log), 0);
	int64_t end = now_ms() + WAIT_MS;
	while (!log_has(log, "psc-relay: ready")) {
		if (pt_proc_wait(&p, 20) != -1 || now_ms() > end)
			fail_msg("psc-relay --max-frame 200 did not start");
	}
	void *pub = zmq_socket(FX.zctx, ZMQ_PUB), *sub = zmq_socket(FX.zctx, ZMQ_SUB);
	int zero = 0, to = 100;
	zmq_setsockopt(pub, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(sub, ZMQ_RCVTIMEO, &to, sizeof(to));
	assert_int_equal(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0), 0);
	assert_int_equal(zmq_connect(sub, sub_ep), 0);
	assert_int_equal(zmq_connect(pub, pub_ep), 0);
	uint8_t small[100], big[300], buf[512];
	memset(small, 's', sizeof(small));
	memset(big, 'b', sizeof(big));
	/* Until one small frame went through: both connections and the
	 * subscription are up; from here on order is kept. */
	for (;;) {
		assert_int_equal(zmq_send(pub, small, sizeof(small), 0), (int)sizeof(small));
		if (zmq_recv(sub, buf, sizeof(buf), 0) == (int)sizeof(small))
			break;
		if (now_ms() > end)
			fail_msg("nothing went through psc-relay");
	}
	while (zmq_recv(sub, buf, sizeof(buf), 0) >= 0)
		; /* the other small ones */
	assert_int_equal(zmq_send(pub, big, sizeof(big), 0), (int)sizeof(big));
	assert_int_equal(zmq_send(pub, small, 50, ZMQ_SNDMORE), 50);
	assert_int_equal(zmq_send(pub, small, 50, 0), 50);
	small[0] = 'm';
	assert_int_equal(zmq_send(pub, small, sizeof(small), 0), (int)sizeof(small));
	int n;
	while ((n = zmq_recv(sub, buf, sizeof(buf), 0)) < 0)
		if (now_ms() > end)
			fail_msg("the marker frame did not go through psc-relay");
	assert_int_equal(n, (int)sizeof(small)); /* the oversize and multipart ones were not */
	assert_int_equal(buf[0], 'm');
	pt_proc_kill(&p, SIGUSR1);
	while (!log_has(log, "dropped 1 oversize, 1 multipart"))
		if (now_ms() > end)
			fail_msg("psc-relay did not print its counters on SIGUSR1");
		else
			usleep(20000);
	zmq_close(pub);
	zmq_close(sub);
	assert_int_equal(pt_proc_stop(&p, 10000), 0);
	assert_true(log_has(log, "psc-relay: stopped: forwarded"));
}

static void expect_usage(char *const *argv, const char *want)
{
	char *out = NULL;
	int rc = pt_run(argv, &out, 10000);
	if (rc != 2 || !out || !strstr(out, want))
		fail_msg("psc-relay %s: exit %d, wanted 2 and '%s' in:\n%s", argv[1], rc, want,
			 out ? out : "");
	free(out);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	char port[64];
	snprintf(port, sizeof(port), "tcp://127.0.0.1:%d", pt_free_port());
	expect_usage((char *[]){PSC_RELAY_BIN, "--subscribe-endpoint", port, NULL},
		     "--publish-endpoint is required");
	expect_usage((char *[]){PSC_RELAY_BIN, "--publish-endpoint", "127.0.0.1:7", "--subscribe-endpoint",
				port, NULL},
		     "--publish-endpoint '127.0.0.1:7': not a ZeroMQ endpoint");
	expect_usage((char *[]){PSC_RELAY_BIN, "--publish-endpoint", port, "--subscribe-endpoint",
				port, NULL},
		     "must differ");
	expect_usage((char *[]){PSC_RELAY_BIN, "--publish-endpoint", "tcp://127.0.0.1:*",
				"--subscribe-endpoint", "tcp://127.0.0.1:*", "--hwm", "lots", NULL},
		     "--hwm 'lots': must be an integer");
	expect_usage((char *[]){PSC_RELAY_BIN, "--publish-endpoint", "tcp://127.0.0.1:*",
				"--subscribe-endpoint", "tcp://127.0.0.1:*", "--max-frame", "10",
				NULL},
		     "--max-frame '10': must be an integer");
	expect_usage((char *[]){PSC_RELAY_BIN, "--publish-endpoint", "tcp://no-such-host.invalid:x",
				"--subscribe-endpoint", "tcp://127.0.0.1:*", NULL},
		     "--publish-endpoint 'tcp://no-such-host.invalid:x': cannot bind");
	expect_usage((char *[]){PSC_RELAY_BIN, "--verbose", NULL}, "unknown argument '--verbose'");
	expect_usage((char *[]){PSC_RELAY_BIN, "--hwm", NULL}, "--hwm needs a value");

	char *out = NULL;
	assert_int_equal(pt_run((char *[]){PSC_RELAY_BIN, "--help", NULL}, &out, 10000), 0);
	assert_non_null(out);
	assert_non_null(strstr(out, "--publish-endpoint"));
	free(out);
	out = NULL;
	/* A key file that is not a key: a runtime failure (1), named. */
	char bad[4300];
	snprintf(bad, sizeof(bad), "%s/not-a-key", FX.dir);
	FILE *f = fopen(bad, "w");
	assert_non_null(f);
	fputs("secret?\n", f);
	fclose(f);
	assert_int_equal(pt_run((char *[]){PSC_RELAY_BIN, "--publish-endpoint", "tcp://127.0.0.1:*",
					   "--subscribe-endpoint", "tcp://127.0.0.1:*",
					   "--curve-secret-file", bad, NULL},
				&out, 10000),
			 1);
	assert_non_null(out);
	assert_non_null(strstr(out, "not a Z85 CURVE secret key"));
	free(out);
	/* SDK side: a relay config with a missing endpoint is refused up front. */
	psc_peer_chan_relay half = {.publish_endpoint = R.pub_ep};
	psc_peer_chan_config cc = {.relay = &half};
	psc_peer_chan *c = NULL;
	psc_err err = {0};
	assert_int_equal(psc_peer_chan_new(&c, A->p, &cc, &err), PSC_E_PEER_CONFIG);
	assert_null(c);
	assert_non_null(strstr(psc_err_text(&err), "subscribe_endpoint"));
	half = (psc_peer_chan_relay){
	    .publish_endpoint = R.pub_ep, .subscribe_endpoint = R.sub_ep, .curve_key = "short"};
	assert_int_equal(psc_peer_chan_new(&c, A->p, &cc, &err), PSC_E_PEER_CONFIG);
	assert_non_null(strstr(psc_err_text(&err), "curve_key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_three_members_exchange),
	    cmocka_unit_test(test_outsiders_cannot_open),
	    cmocka_unit_test(test_tampered_frame_rejected),
	    cmocka_unit_test(test_relay_restart),
	    cmocka_unit_test(test_relay_drops_and_counts),
	    cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
