/* kms_net over real ZeroMQ sockets on loopback with CURVE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "kms_net.h"
#include "psc_test.h"

struct fx {
	void *ctx;
	kms_net *net;
	char endpoint[64];
	char server_pub[41], server_sec[41];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fx_up(struct fx *f, double rate, double burst, size_t maxmsg)
{
	memset(f, 0, sizeof(*f));
	f->ctx = zmq_ctx_new();
	assert_int_equal(zmq_curve_keypair(f->server_pub, f->server_sec), 0);
	snprintf(f->endpoint, sizeof(f->endpoint), "tcp://127.0.0.1:%d", pt_free_port());
	kms_net_opts o = {.endpoint = f->endpoint, .curve = 1, .secret_key_z85 = f->server_sec,
			  .max_message_bytes = maxmsg, .sndhwm = 100, .rcvhwm = 100,
			  .msgs_per_s = rate, .burst = burst};
	psc_err e;
	if (kms_net_new(&f->net, f->ctx, &o, &e) != PSC_OK)
		fail_msg("%s", psc_err_text(&e));
}

static void fx_down(struct fx *f)
{
	kms_net_free(&f->net);
	zmq_ctx_term(f->ctx);
}

static void *client(struct fx *f, char pub[41])
{
	char sec[41];
	assert_int_equal(zmq_curve_keypair(pub, sec), 0);
	void *s = zmq_socket(f->ctx, ZMQ_DEALER);
	int zero = 0;
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, f->server_pub, 40);
	zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40);
	zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40);
	assert_int_equal(zmq_connect(s, f->endpoint), 0);
	return s;
}

/* Serve ZAP and the ROUTER until a message arrives or timeout. */
static int pump(struct fx *f, kms_inbound *in, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 10) {
		zmq_pollitem_t items[] = {{kms_net_zap(f->net), 0, ZMQ_POLLIN, 0},
					  {kms_net_router(f->net), 0, ZMQ_POLLIN, 0}};
		zmq_poll(items, 2, 10);
		if (items[0].revents & ZMQ_POLLIN)
			kms_net_zap_serve(f->net);
		int got = 0;
		assert_int_equal(kms_net_recv(f->net, in, &got, now_ms()), PSC_OK);
		if (got)
			return 1;
	}
	return 0;
}

static void curve_key_is_the_user_id_and_replies_route_back(void **state)
{
	(void)state;
	struct fx f;
	fx_up(&f, 0, 0, 65536);
	char pub[41];
	void *c = client(&f, pub);
	assert_int_equal(zmq_send(c, "hello", 5, 0), 5);
	kms_inbound in;
	assert_true(pump(&f, &in, 5000));
	assert_int_equal(in.len, 5);
	assert_memory_equal(in.data, "hello", 5);
	assert_string_equal(in.user_id, pub);
	assert_int_equal(in.limited, 0);
	assert_int_equal(kms_net_send(f.net, in.routing_id, in.routing_id_len,
				      (const uint8_t *)"world", 5),
			 PSC_OK);
	char buf[16];
	int rcvtimeo = 5000;
	zmq_setsockopt(c, ZMQ_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo));
	assert_int_equal(zmq_recv(c, buf, sizeof(buf), 0), 5);
	assert_memory_equal(buf, "world", 5);
	/* ROUTER_MANDATORY: an unknown routing id is an error, not a silent drop. */
	const uint8_t ghost[5] = {0, 1, 2, 3, 4};
	assert_int_equal(kms_net_send(f.net, ghost, 5, (const uint8_t *)"x", 1), PSC_E_IO);
	/* A multi-frame message is dropped; the next good one still arrives. */
	zmq_send(c, "a", 1, ZMQ_SNDMORE);
	zmq_send(c, "b", 1, 0);
	zmq_send(c, "ok", 2, 0);
	assert_true(pump(&f, &in, 5000));
	assert_int_equal(in.len, 2);
	kms_net_stats st;
	kms_net_stats_get(f.net, &st);
	assert_true(st.malformed_frames >= 1);
	assert_true(st.zap_requests >= 1);
	zmq_close(c);
	fx_down(&f);
}

static void plain_client_cannot_talk_to_a_curve_server(void **state)
{
	(void)state;
	struct fx f;
	fx_up(&f, 0, 0, 65536);
	void *c = zmq_socket(f.ctx, ZMQ_DEALER);
	int zero = 0;
	zmq_setsockopt(c, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_connect(c, f.endpoint);
	zmq_send(c, "hello", 5, ZMQ_DONTWAIT);
	kms_inbound in;
	assert_false(pump(&f, &in, 500));
	zmq_close(c);
	fx_down(&f);
}

static void flood_above_the_rate_is_flagged(void **state)
{
	(void)state;
	struct fx f;
	fx_up(&f, 1, 10, 65536); /* 1/s, burst 10: refill during the test barely matters */
	char pub[41];
	void *c = client(&f, pub);
	for (int i = 0; i < 40; i++)
		zmq_send(c, "m", 1, 0);
	int ok = 0, limited = 0;
	kms_inbound in;
	while (ok + limited < 40 && pump(&f, &in, 3000))
		in.limited ? limited++ : ok++;
	assert_int_equal(ok + limited, 40);
	assert_true(ok >= 10 && ok <= 15); /* the burst, plus what refilled meanwhile */
	assert_true(limited >= 25);
	zmq_close(c);
	fx_down(&f);
}

static void oversized_message_drops_the_connection(void **state)
{
	(void)state;
	struct fx f;
	fx_up(&f, 0, 0, 1024);
	char pub[41];
	void *c = client(&f, pub);
	static char big[4096];
	zmq_send(c, big, sizeof(big), 0);
	kms_inbound in;
	assert_false(pump(&f, &in, 500));
	zmq_close(c);
	/* Others are unaffected. */
	void *c2 = client(&f, pub);
	zmq_send(c2, "fine", 4, 0);
	assert_true(pump(&f, &in, 5000));
	assert_int_equal(in.len, 4);
	zmq_close(c2);
	fx_down(&f);
}

static void bad_endpoint_and_bad_key_are_explained(void **state)
{
	(void)state;
	void *ctx = zmq_ctx_new();
	kms_net *n = NULL;
	psc_err e;
	kms_net_opts o = {.endpoint = "tcp://256.1.1.1:1", .curve = 0, .sndhwm = 10, .rcvhwm = 10};
	assert_int_equal(kms_net_new(&n, ctx, &o, &e), PSC_E_IO);
	assert_non_null(strstr(e.detail, "cannot listen on tcp://256.1.1.1:1"));
	assert_null(n);
	o.endpoint = "tcp://127.0.0.1:0";
	o.curve = 1;
	o.secret_key_z85 = "short";
	assert_int_equal(kms_net_new(&n, ctx, &o, &e), PSC_E_INVALID_ARG);
	assert_non_null(strstr(e.detail, "gen-curve-keys"));
	assert_null(n);
	zmq_ctx_term(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(curve_key_is_the_user_id_and_replies_route_back),
		cmocka_unit_test(plain_client_cannot_talk_to_a_curve_server),
		cmocka_unit_test(flood_above_the_rate_is_flagged),
		cmocka_unit_test(oversized_message_drops_the_connection),
		cmocka_unit_test(bad_endpoint_and_bad_key_are_explained),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
