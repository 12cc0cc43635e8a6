/*
 * psc-relay — an untrusted forwarder for sealed PSC group frames (docs/relay.md).
 *
 * Members in relay mode (psc_peer_chan_relay) connect their PUB socket to the
 * relay's publish endpoint (an XSUB bound here) and their SUB socket to its
 * subscribe endpoint (an XPUB bound here); the relay passes frames from the
 * first to the second and subscriptions the other way, so libzmq filters by
 * the 20-byte PSC prefix at both hops. A group of N members costs 2N
 * connections instead of N(N-1).
 *
 * Owns: the two sockets, the forwarding loop, its counters, the optional CURVE
 * server key (transport confidentiality of the metadata toward passive
 * observers, not of the messages: those are sealed end to end).
 * Never: hold or need a PSC key, open, alter or originate a frame (it cannot:
 * AES-256-GCM under keys only members hold), forward a frame above
 * --max-frame, forward a multipart message, log frame contents.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zmq.h>

#include "psc/peer.h"

#define RELAY_EX_OK 0
#define RELAY_EX_FAIL 1
#define RELAY_EX_USAGE 2

#define RELAY_HWM_DEFAULT 10000
#define RELAY_HWM_MAX 10000000
/* Largest frame the SDK can produce (a 1 MiB message, signed). */
#define RELAY_FRAME_DEFAULT ((long long)PSC_PEER_MSG_FRAME_MAX(PSC_PEER_MSG_MAX))
#define RELAY_FRAME_MIN 92 /* a sealed empty message (72 + 16 + 2 + 2) is never below */
#define RELAY_FRAME_MAX (64LL << 20)
#define RELAY_SUB_MAX 256 /* subscription message bytes (ours are 21) */
/* ZMQ_MAXMSGSIZE of the subscribe side: it also bounds the CURVE handshake
 * commands (INITIATE is about 250 bytes plus metadata), so not RELAY_SUB_MAX. */
#define RELAY_SUB_WIRE_MAX 4096
#define RELAY_BATCH 4096  /* messages per socket per wake-up */
#define RELAY_STATS_MAX 86400
#define RELAY_KEY_Z85 40
#define RELAY_ENDPOINT_MAX 255 /* as the data endpoints of the protocol (PSC_MAX_ENDPOINT) */

/* The only globals: a signal handler can reach nothing else. The pipe wakes
 * zmq_poll even when a signal lands between the flag check and the poll. */
static volatile sig_atomic_t relay_stop, relay_dump;
static int relay_wake[2] = {-1, -1};

static void on_signal(int sig)
{
	int e = errno;
	if (sig == SIGUSR1)
		relay_dump = 1;
	else
		relay_stop = 1;
	if (relay_wake[1] >= 0)
		(void)!write(relay_wake[1], "", 1);
	errno = e;
}

typedef struct relay_opts {
	const char *pub_ep, *sub_ep, *curve_file, *keygen_file;
	long long hwm, max_frame, stats_s;
} relay_opts;

typedef struct relay_stats {
	uint64_t forwarded, forwarded_bytes;
	uint64_t dropped_oversize, dropped_multipart, dropped_send;
	uint64_t subscribes, unsubscribes, dropped_subs;
} relay_stats;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: psc-relay --publish-endpoint EP --subscribe-endpoint EP [options]\n"
		"       psc-relay --curve-keygen FILE\n"
		"\n"
		"Forwards sealed PSC group frames between members in relay mode\n"
		"(docs/relay.md). It holds no PSC key and cannot read or forge messages:\n"
		"they are sealed end to end with the PSC epoch key.\n"
		"\n"
		"  --publish-endpoint EP    bind here for the members' PUB sockets (XSUB),\n"
		"                           e.g. tcp://0.0.0.0:7301\n"
		"  --subscribe-endpoint EP  bind here for the members' SUB sockets (XPUB),\n"
		"                           e.g. tcp://0.0.0.0:7302\n"
		"  --hwm N                  ZeroMQ high-water mark per connection, each\n"
		"                           direction (default %d, 1..%d); a member that\n"
		"                           falls this far behind loses frames\n"
		"  --max-frame BYTES        frames above this are dropped and counted\n"
		"                           (default %lld, the SDK's largest; %d..%lld)\n"
		"  --curve-secret-file F    CURVE server secret key (Z85, 40 characters) for\n"
		"                           both endpoints; members then need the public key\n"
		"                           this prints. Hides PSC IDs, Node-IDs and sizes\n"
		"                           from the network, not from the relay operator.\n"
		"  --stats-interval S       print the counters every S seconds (default 0:\n"
		"                           at exit and on SIGUSR1 only)\n"
		"  --curve-keygen FILE      write a new CURVE secret key to FILE (mode 0600,\n"
		"                           never overwrites), print its public key, exit\n"
		"  --help                   this text\n"
		"\n"
		"SIGTERM or SIGINT stops it (exit 0). Exit 2: bad arguments; 1: runtime\n"
		"failure (an endpoint that cannot be bound, an unreadable key).\n",
		RELAY_HWM_DEFAULT, RELAY_HWM_MAX, RELAY_FRAME_DEFAULT, RELAY_FRAME_MIN,
		RELAY_FRAME_MAX);
}

__attribute__((format(printf, 1, 2))) static int bad_arg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "psc-relay: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n(psc-relay --help for the options)\n");
	va_end(ap);
	return RELAY_EX_USAGE;
}

static int parse_num(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < lo || v > hi) {
		(void)bad_arg("%s '%s': must be an integer from %lld to %lld", opt, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

/* A ZeroMQ endpoint we can bind: transport://address, no trailing junk. */
static int check_endpoint(const char *opt, const char *ep)
{
	if (!strstr(ep, "://") || strlen(ep) > RELAY_ENDPOINT_MAX) {
		fprintf(stderr,
			"psc-relay: %s '%s': not a ZeroMQ endpoint (transport://address, e.g. "
			"tcp://0.0.0.0:7301, at most %d bytes)\n(psc-relay --help for the "
			"options)\n",
			opt, ep, RELAY_ENDPOINT_MAX);
		return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv, relay_opts *o)
{
	*o = (relay_opts){.hwm = RELAY_HWM_DEFAULT, .max_frame = RELAY_FRAME_DEFAULT};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(RELAY_EX_OK);
		}
		const char *names[] = {"--publish-endpoint", "--subscribe-endpoint", "--hwm",
				       "--max-frame",	     "--curve-secret-file",  "--stats-interval",
				       "--curve-keygen"};
		size_t k = 0, nn = sizeof(names) / sizeof(names[0]);
		while (k < nn && strcmp(a, names[k]) != 0)
			k++;
		if (k == nn)
			return bad_arg("unknown argument '%s'", a);
		if (i + 1 >= argc)
			return bad_arg("%s needs a value", a);
		const char *v = argv[++i];
		switch (k) {
		case 0:
			o->pub_ep = v;
			break;
		case 1:
			o->sub_ep = v;
			break;
		case 2:
			if (parse_num(a, v, 1, RELAY_HWM_MAX, &o->hwm))
				return RELAY_EX_USAGE;
			break;
		case 3:
			if (parse_num(a, v, RELAY_FRAME_MIN, RELAY_FRAME_MAX, &o->max_frame))
				return RELAY_EX_USAGE;
			break;
		case 4:
			o->curve_file = v;
			break;
		case 5:
			if (parse_num(a, v, 0, RELAY_STATS_MAX, &o->stats_s))
				return RELAY_EX_USAGE;
			break;
		default:
			o->keygen_file = v;
			break;
		}
	}
	if (o->keygen_file)
		return 0;
	if (!o->pub_ep)
		return bad_arg("--publish-endpoint is required (where the members' PUB sockets "
			       "connect)");
	if (!o->sub_ep)
		return bad_arg("--subscribe-endpoint is required (where the members' SUB sockets "
			       "connect)");
	if (check_endpoint("--publish-endpoint", o->pub_ep) ||
	    check_endpoint("--subscribe-endpoint", o->sub_ep))
		return RELAY_EX_USAGE;
	size_t pl = strlen(o->pub_ep);
	if (!strcmp(o->pub_ep, o->sub_ep) && o->pub_ep[pl - 1] != '*') /* '*': any free port */
		return bad_arg("--publish-endpoint and --subscribe-endpoint are both '%s': they "
			       "must differ",
			       o->pub_ep);
	return 0;
}

/* Reads a Z85 secret key: 40 characters, optionally a newline, nothing else. */
static int read_secret(const char *path, char key[RELAY_KEY_Z85 + 1])
{
	char buf[RELAY_KEY_Z85 + 3];
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "psc-relay: --curve-secret-file '%s': %s\n", path, strerror(errno));
		return -1;
	}
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	uint8_t raw[32];
	int ok = n == RELAY_KEY_Z85;
	if (ok) {
		memcpy(key, buf, RELAY_KEY_Z85);
		key[RELAY_KEY_Z85] = '\0';
		ok = zmq_z85_decode(raw, key) != NULL;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (!ok) {
		OPENSSL_cleanse(key, RELAY_KEY_Z85 + 1);
		fprintf(stderr,
			"psc-relay: --curve-secret-file '%s': not a Z85 CURVE secret key (40 "
			"characters; psc-relay --curve-keygen FILE makes one)\n",
			path);
		return -1;
	}
	return 0;
}

static int keygen(const char *path)
{
	char pub[RELAY_KEY_Z85 + 1], sec[RELAY_KEY_Z85 + 1];
	if (zmq_curve_keypair(pub, sec) != 0) {
		fprintf(stderr, "psc-relay: zmq_curve_keypair: %s (libzmq built without CURVE?)\n",
			zmq_strerror(zmq_errno()));
		return RELAY_EX_FAIL;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	int ok = fd >= 0 && write(fd, sec, RELAY_KEY_Z85) == RELAY_KEY_Z85 &&
		 write(fd, "\n", 1) == 1;
	int e = errno;
	if (fd >= 0 && close(fd) != 0 && ok) {
		ok = 0;
		e = errno;
	}
	OPENSSL_cleanse(sec, sizeof(sec));
	if (!ok) {
		fprintf(stderr, "psc-relay: --curve-keygen '%s': %s\n", path, strerror(e));
		if (fd >= 0)
			unlink(path);
		return RELAY_EX_FAIL;
	}
	printf("%s\n", pub);
	return RELAY_EX_OK;
}

static void print_stats(const relay_stats *s, const char *when)
{
	fprintf(stderr,
		"psc-relay: %s: forwarded %" PRIu64 " frames (%" PRIu64 " bytes); dropped %" PRIu64
		" oversize, %" PRIu64 " multipart, %" PRIu64 " unsendable; subscriptions %" PRIu64
		" added, %" PRIu64 " removed, %" PRIu64 " malformed\n",
		when, s->forwarded, s->forwarded_bytes, s->dropped_oversize, s->dropped_multipart,
		s->dropped_send, s->subscribes, s->unsubscribes, s->dropped_subs);
}

static int64_t mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Receives one message; 1 = got one (*more: further parts followed and were
 * discarded), 0 = none waiting, -1 = error. */
static int recv_one(void *s, zmq_msg_t *m, int *more)
{
	*more = 0;
	if (zmq_msg_recv(m, s, ZMQ_DONTWAIT) < 0)
		return zmq_errno() == EAGAIN ? 0 : -1;
	while (zmq_msg_more(m)) {
		zmq_msg_t part;
		zmq_msg_init(&part);
		int r = zmq_msg_recv(&part, s, ZMQ_DONTWAIT);
		int again = r >= 0 && zmq_msg_more(&part);
		zmq_msg_close(&part);
		*more = 1;
		if (r < 0 || !again)
			break;
	}
	return 1;
}

/* Frames from the members' PUBs (XSUB) to their SUBs (XPUB). */
static int pump_frames(void *xsub, void *xpub, const relay_opts *o, relay_stats *st)
{
	for (int n = 0; n < RELAY_BATCH; n++) {
		zmq_msg_t m;
		int more = 0;
		zmq_msg_init(&m);
		int r = recv_one(xsub, &m, &more);
		if (r <= 0) {
			zmq_msg_close(&m);
			return r;
		}
		size_t len = zmq_msg_size(&m);
		if (more) {
			st->dropped_multipart++;
		} else if ((long long)len > o->max_frame) {
			st->dropped_oversize++;
		} else if (zmq_msg_send(&m, xpub, ZMQ_DONTWAIT) < 0) {
			/* An XPUB drops at a member's high-water mark without an error;
			 * anything else (EINTR) loses this frame only. */
			st->dropped_send++;
		} else {
			st->forwarded++;
			st->forwarded_bytes += len;
			continue; /* sent: the message is gone */
		}
		zmq_msg_close(&m);
	}
	return 0;
}

/* Subscriptions from the members' SUBs (XPUB) up to their PUBs (XSUB). */
static int pump_subs(void *xpub, void *xsub, relay_stats *st)
{
	for (int n = 0; n < RELAY_BATCH; n++) {
		zmq_msg_t m;
		int more = 0;
		zmq_msg_init(&m);
		int r = recv_one(xpub, &m, &more);
		if (r <= 0) {
			zmq_msg_close(&m);
			return r;
		}
		size_t len = zmq_msg_size(&m);
		const uint8_t *b = zmq_msg_data(&m);
		if (more || len < 1 || len > RELAY_SUB_MAX || b[0] > 1) {
			st->dropped_subs++;
		} else {
			if (b[0] == 1)
				st->subscribes++;
			else
				st->unsubscribes++;
			if (zmq_msg_send(&m, xsub, ZMQ_DONTWAIT) >= 0)
				continue;
			st->dropped_subs++;
		}
		zmq_msg_close(&m);
	}
	return 0;
}

static int setup_socket(void *s, const char *opt, const char *ep, const relay_opts *o,
			const char *secret, int64_t maxmsg)
{
	int hwm = (int)o->hwm, zero = 0, one = 1;
	(void)zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	(void)zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
	(void)zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	/* Memory bound per message read: larger ones close the connection in
	 * libzmq before they are buffered (the member reconnects). */
	(void)zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
	if (secret && (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
		       zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret, RELAY_KEY_Z85) != 0)) {
		fprintf(stderr, "psc-relay: CURVE on %s: %s (libzmq built without CURVE?)\n", opt,
			zmq_strerror(zmq_errno()));
		return RELAY_EX_FAIL;
	}
	if (zmq_bind(s, ep) != 0) {
		int e = zmq_errno();
		fprintf(stderr, "psc-relay: %s '%s': cannot bind: %s\n", opt, ep, zmq_strerror(e));
		/* A malformed endpoint is a bad argument; a busy port is not. */
		return (e == EINVAL || e == EPROTONOSUPPORT || e == ENODEV || e == ENOENT)
			   ? RELAY_EX_USAGE
			   : RELAY_EX_FAIL;
	}
	char last[RELAY_ENDPOINT_MAX + 64];
	size_t ll = sizeof(last);
	if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &ll) != 0)
		snprintf(last, sizeof(last), "%s", ep);
	fprintf(stderr, "psc-relay: %s bound at %s\n", opt, last);
	return RELAY_EX_OK;
}

static int run(const relay_opts *o)
{
	char secret[RELAY_KEY_Z85 + 1] = "", pub[RELAY_KEY_Z85 + 1] = "";
	if (o->curve_file) {
		if (read_secret(o->curve_file, secret) != 0)
			return RELAY_EX_FAIL;
		if (zmq_curve_public(pub, secret) != 0) {
			OPENSSL_cleanse(secret, sizeof(secret));
			fprintf(stderr, "psc-relay: zmq_curve_public: %s\n",
				zmq_strerror(zmq_errno()));
			return RELAY_EX_FAIL;
		}
	}
	void *ctx = zmq_ctx_new();
	void *xsub = ctx ? zmq_socket(ctx, ZMQ_XSUB) : NULL;
	void *xpub = ctx ? zmq_socket(ctx, ZMQ_XPUB) : NULL;
	int rc = RELAY_EX_FAIL;
	if (!xsub || !xpub) {
		fprintf(stderr, "psc-relay: ZeroMQ: %s\n", zmq_strerror(zmq_errno()));
		goto out;
	}
	int64_t cap = 2 * o->max_frame + 65536;
	const char *sec = o->curve_file ? secret : NULL;
	rc = setup_socket(xsub, "--publish-endpoint", o->pub_ep, o, sec, cap);
	if (rc == RELAY_EX_OK)
		rc = setup_socket(xpub, "--subscribe-endpoint", o->sub_ep, o, sec,
				  RELAY_SUB_WIRE_MAX);
	OPENSSL_cleanse(secret, sizeof(secret));
	if (rc != RELAY_EX_OK)
		goto out;
	if (o->curve_file)
		fprintf(stderr, "psc-relay: CURVE on, server public key %s\n", pub);
	else
		fprintf(stderr, "psc-relay: CURVE off (plain TCP; frames are sealed end to end "
				"either way)\n");
	fprintf(stderr, "psc-relay: ready (hwm %lld, max frame %lld bytes)\n", o->hwm,
		o->max_frame);

	relay_stats st = {0};
	int64_t next_stats = o->stats_s ? mono_ms() + o->stats_s * 1000 : 0;
	while (!relay_stop) {
		zmq_pollitem_t items[3] = {{xsub, 0, ZMQ_POLLIN, 0},
					   {xpub, 0, ZMQ_POLLIN, 0},
					   {NULL, relay_wake[0], ZMQ_POLLIN, 0}};
		long wait = -1;
		if (next_stats) {
			int64_t left = next_stats - mono_ms();
			wait = left > 0 ? (long)left : 0;
		}
		if (zmq_poll(items, 3, wait) < 0) {
			if (zmq_errno() == EINTR)
				goto signals;
			fprintf(stderr, "psc-relay: zmq_poll: %s\n", zmq_strerror(zmq_errno()));
			rc = RELAY_EX_FAIL;
			break;
		}
		if (((items[1].revents & ZMQ_POLLIN) && pump_subs(xpub, xsub, &st) < 0) ||
		    ((items[0].revents & ZMQ_POLLIN) && pump_frames(xsub, xpub, o, &st) < 0)) {
			if (zmq_errno() == EINTR)
				goto signals;
			fprintf(stderr, "psc-relay: receive: %s\n", zmq_strerror(zmq_errno()));
			rc = RELAY_EX_FAIL;
			break;
		}
	signals:
		if (items[2].revents & ZMQ_POLLIN) {
			char drain[64];
			while (read(relay_wake[0], drain, sizeof(drain)) > 0)
				;
		}
		if (relay_dump) {
			relay_dump = 0;
			print_stats(&st, "stats");
		}
		if (next_stats && mono_ms() >= next_stats) {
			print_stats(&st, "stats");
			next_stats = mono_ms() + o->stats_s * 1000;
		}
	}
	print_stats(&st, relay_stop ? "stopped" : "failed");
out:
	if (xsub)
		zmq_close(xsub);
	if (xpub)
		zmq_close(xpub);
	if (ctx)
		zmq_ctx_term(ctx);
	return rc;
}

int main(int argc, char **argv)
{
	relay_opts o;
	int rc = parse_args(argc, argv, &o);
	if (rc != 0)
		return rc;
	if (o.keygen_file)
		return keygen(o.keygen_file);
	if (pipe2(relay_wake, O_NONBLOCK | O_CLOEXEC) != 0) {
		fprintf(stderr, "psc-relay: pipe: %s\n", strerror(errno));
		return RELAY_EX_FAIL;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: zmq_poll must return EINTR so the loop sees the flag. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stderr, NULL, _IOLBF, 0);
	return run(&o);
}
