/*
 * psc_vs_tls: does a PSC give a group secure communication with "less expense
 * and low latency" than RELOAD's TLS/DTLS mode (draft-chen-p2psip-psc-00)?
 * For N = 4, 16, 64, 256 members on loopback, each with an EC P-256
 * certificate from the same temp CA, in one run:
 *   PSC         a real psc-kmsd on a throwaway SoftHSM token (mkca.sh +
 *               mkkms.sh); members are libpscpeer peers in this process: all
 *               Initialize, member 0 establishes the PSC naming the others, every
 *               Refresh is applied; then the group channel (ZeroMQ PUB/SUB) is
 *               opened and every member sends M messages that every member opens.
 *   PSC (joins) the same N, other identities: the owner establishes alone and
 *               the others join one by one (a rekey each).
 *   PSC (relay) as PSC, other identities, with the channel in relay mode: every
 *               member's PUB and SUB connect to one psc-relay process (2N
 *               connections, run in full at every N); its CPU is counted.
 *   TLS 1.3 / DTLS 1.2 mesh   psc_vs_tls_mesh.c.
 * Figures: setup CPU (this process's getrusage, all threads, plus psc-kmsd's
 * /proc/<pid>/stat), setup wall time until every member can send, time to the
 * first delivered message, CPU per delivered message, bytes on the wire
 * (TCP/UDP payload), and the cost of one member leaving and one joining.
 * Usage: psc_vs_tls [--quick] [--n N] [--section FILE] [--data FILE] [--command TEXT]
 * --n N: only that group size (2..256) instead of 4, 16, 64, 256.
 * --quick: N=4, M=10, exits 1 unless every message was delivered and opened
 * (never on time). Prints figures; never passes or fails on time.
 */
#include <errno.h>
#include <dirent.h>
#include <linux/tcp.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <openssl/opensslv.h>
#include <zmq.h>

#include "bench_util.h"
#include "psc/peer.h"
#include "psc_test.h"
#include "psc_vs_tls.h"

#define OVERLAY "psc.test"
#define WAIT_S 120.0	 /* anything slower than this is a failure, not a figure */
#define PROBE_S 0.01	 /* a member repeats its readiness probe after this, */
#define PROBE_MAX_S 0.16 /* doubling up to this */
#define MSG_IDLE_S 3.0	 /* no delivery for this long ends the message phase */
#define SWEEP_S 0.1	 /* every peer is processed at least this often */

static const size_t full_ns[] = {4, 16, 64, 256};

static struct {
	char dir[4096];
	char ca[4200], kmsdir[4200], config[4200], cert[4200], softhsm[4200], log[4200];
	char curve[64], endpoint[64];
	int kms_port;
	int relay_ports[2]; /* psc-relay: publish (XSUB), subscribe (XPUB) */
	char relay_ep[2][64], relay_log[4200];
	pt_proc relay;
	int next_port; /* data endpoints: below the ephemeral range, see data_port() */
	pt_proc kmsd;
} fx;

_Noreturn static void die(const char *what)
{
	fprintf(stderr, "psc_vs_tls: %s\n", what);
	if (fx.kmsd.pid > 0)
		pt_proc_stop(&fx.kmsd, 5000);
	if (fx.relay.pid > 0 && !fx.relay.exited)
		pt_proc_stop(&fx.relay, 5000);
	if (fx.dir[0] && !getenv("PSC_KEEP"))
		pt_rm_rf(fx.dir);
	else if (fx.dir[0])
		fprintf(stderr, "psc_vs_tls: kept %s (psc-kmsd log: %s)\n", fx.dir, fx.log);
	exit(2);
}

/* ---- CPU and bytes --------------------------------------------------------- */

static double relay_cpu(void)
{
	return fx.relay.pid > 0 && !fx.relay.exited ? bench_proc_cpu((int)fx.relay.pid) : 0;
}

static double cpu_all(void)
{
	return bench_self_cpu() + bench_proc_cpu((int)fx.kmsd.pid) + relay_cpu();
}

/* TCP payload bytes by socket inode: what this process's sockets received,
 * plus what they sent to psc-kmsd (the KMS end is not in this process; both
 * ends of a member-to-member connection are, so each byte counts once). */
typedef struct sockb {
	unsigned long ino;
	double bytes;
} sockb;

typedef struct snap {
	sockb *s;
	size_t n;
} snap;

static int cmp_sockb(const void *a, const void *b)
{
	unsigned long x = ((const sockb *)a)->ino, y = ((const sockb *)b)->ino;
	return x < y ? -1 : x > y;
}

static void snap_take(snap *out)
{
	free(out->s);
	out->s = NULL;
	out->n = 0;
	size_t cap = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name);
		struct stat st;
		int type = 0;
		socklen_t tl = sizeof(type);
		if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) != 0 ||
		    !S_ISSOCK(st.st_mode) || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) ||
		    type != SOCK_STREAM)
			continue;
		struct tcp_info ti;
		socklen_t il = sizeof(ti);
		memset(&ti, 0, sizeof(ti));
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &il) != 0)
			continue;
		double b = (double)ti.tcpi_bytes_received;
		struct sockaddr_in pa;
		socklen_t pl = sizeof(pa);
		/* the other end in another process (psc-kmsd, psc-relay): count what
		 * we sent too */
		if (getpeername(fd, (struct sockaddr *)&pa, &pl) == 0 && pa.sin_family == AF_INET &&
		    (ntohs(pa.sin_port) == fx.kms_port || ntohs(pa.sin_port) == fx.relay_ports[0] ||
		     ntohs(pa.sin_port) == fx.relay_ports[1]))
			b += (double)ti.tcpi_bytes_acked;
		if (out->n == cap) {
			cap = cap ? 2 * cap : 1024;
			sockb *ns = realloc(out->s, cap * sizeof(*ns));
			if (!ns)
				die("out of memory");
			out->s = ns;
		}
		out->s[out->n++] = (sockb){.ino = (unsigned long)st.st_ino, .bytes = b};
	}
	if (d)
		closedir(d);
	if (out->n)
		qsort(out->s, out->n, sizeof(*out->s), cmp_sockb);
}

/* Bytes between two snapshots (sockets closed meanwhile lose their last bytes). */
static double snap_delta(const snap *a, const snap *b)
{
	double sum = 0;
	for (size_t i = 0; i < b->n; i++) {
		sockb *o = a->n ? bsearch(&b->s[i], a->s, a->n, sizeof(*a->s), cmp_sockb) : NULL;
		sum += b->s[i].bytes - (o ? o->bytes : 0);
	}
	return sum;
}

/* ---- installation ------------------------------------------------------- */

static const char policy_yaml[] =
    "# psc_vs_tls: every member of the test CA may initialise, establish and join.\n"
    "version: 1\n"
    "description: psc_vs_tls benchmark\n"
    "principals:\n"
    "  member:\n"
    "    issuer: {eq: \"CN=PSC Test CA,O=PSC Test\"}\n"
    "defaults:\n"
    "  max_members: 1000\n"
    "  refresh: {min: 60, max: 86400, default: 3600}\n"
    "rules:\n"
    "  - id: bench-members\n"
    "    effect: permit\n"
    "    actions: [initialize, establish, join, destroy]\n"
    "    principals: [member]\n";

static int line_value(const char *out, const char *key, char *val, size_t cap)
{
	const char *p = strstr(out, key);
	if (!p)
		return -1;
	p += strlen(key);
	snprintf(val, cap, "%.*s", (int)strcspn(p, "\n"), p);
	return 0;
}

static void install(void)
{
	if (pt_tmpdir(fx.dir, "pscvstls") != 0)
		die("cannot make a temp dir");
	snprintf(fx.ca, sizeof(fx.ca), "%s/ca", fx.dir);
	char script[4200], *out = NULL;
	snprintf(script, sizeof(script), "%s/mkca.sh", PSC_FIXTURES_DIR);
	char *ca_argv[] = {script, fx.ca, NULL};
	if (pt_run(ca_argv, &out, 120000) != 0) {
		fprintf(stderr, "%s\n", out ? out : "");
		die("mkca.sh failed");
	}
	free(out);
	out = NULL;
	char policy[4200];
	snprintf(policy, sizeof(policy), "%s/policy.yaml", fx.dir);
	FILE *f = fopen(policy, "w");
	if (!f || fputs(policy_yaml, f) < 0 || fclose(f) != 0)
		die("cannot write the bench policy");
	fx.kms_port = pt_free_port();
	snprintf(fx.endpoint, sizeof(fx.endpoint), "tcp://127.0.0.1:%d", fx.kms_port);
	char portstr[16], bindir[4200];
	snprintf(portstr, sizeof(portstr), "%d", fx.kms_port);
	snprintf(fx.kmsdir, sizeof(fx.kmsdir), "%s/kms", fx.dir);
	snprintf(bindir, sizeof(bindir), "%s/kms", PSC_BINARY_DIR);
	snprintf(script, sizeof(script), "%s/tests/integration/mkkms.sh", PSC_SOURCE_DIR);
	/* 256 members Initialize back to back from one host: no flood limit in the way */
	setenv("PSC_TEST_RATE", "100000", 1);
	setenv("PSC_TEST_BURST", "1000000", 1);
	char *argv[] = {script, fx.kmsdir, fx.ca, bindir, portstr, policy, NULL};
	if (pt_run(argv, &out, 120000) != 0) {
		fprintf(stderr, "%s\n", out ? out : "");
		die("mkkms.sh failed");
	}
	if (line_value(out, "KMS_CONFIG=", fx.config, sizeof(fx.config)) ||
	    line_value(out, "KMS_CERT=", fx.cert, sizeof(fx.cert)) ||
	    line_value(out, "KMS_CURVE_PUB=", fx.curve, sizeof(fx.curve)) ||
	    line_value(out, "SOFTHSM2_CONF=", fx.softhsm, sizeof(fx.softhsm)))
		die("mkkms.sh printed no KMS_CONFIG/KMS_CERT/KMS_CURVE_PUB/SOFTHSM2_CONF");
	free(out);
	snprintf(fx.log, sizeof(fx.log), "%s/kmsd.log", fx.dir);

	if (pt_kmsd_start(&fx.kmsd, fx.config, fx.softhsm, fx.log) != 0)
		die("psc-kmsd did not start listening (see its log)");
}

/* A fresh psc-relay (plain TCP, like the direct channel) for one relay run;
 * started before the run like psc-kmsd, its CPU counted while it runs. */
static void relay_start(void)
{
	char bin[4200], hwm[] = "100000";
	snprintf(bin, sizeof(bin), "%s/peer-sdk/psc-relay", PSC_BINARY_DIR);
	for (int i = 0; i < 2; i++) {
		fx.relay_ports[i] = pt_free_port();
		snprintf(fx.relay_ep[i], sizeof(fx.relay_ep[i]), "tcp://127.0.0.1:%d",
			 fx.relay_ports[i]);
	}
	snprintf(fx.relay_log, sizeof(fx.relay_log), "%s/relay.log", fx.dir);
	char *argv[] = {bin, "--publish-endpoint", fx.relay_ep[0], "--subscribe-endpoint",
			fx.relay_ep[1], "--hwm", hwm, NULL};
	if (pt_proc_start(&fx.relay, argv, NULL, fx.relay_log) != 0)
		die("cannot start psc-relay");
	for (int i = 0; i < 500; i++) {
		size_t n = 0;
		char *txt = (char *)pt_read_file(fx.relay_log, &n);
		bool ready = txt && memmem(txt, n, "psc-relay: ready", 16);
		free(txt);
		if (ready)
			return;
		if (pt_proc_wait(&fx.relay, 20) != -1)
			die("psc-relay exited at startup (see its log)");
	}
	die("psc-relay did not start");
}

static void relay_stop(void)
{
	if (pt_proc_stop(&fx.relay, 5000) != 0)
		die("psc-relay did not stop cleanly");
	fx.relay_ports[0] = fx.relay_ports[1] = 0;
}

/* ---- PSC members ------------------------------------------------------------ */

/*
 * A port for a member's data endpoint. It is advertised at Initialize and bound
 * later (psc_peer_chan_new), so it must not be handed out meanwhile as the
 * ephemeral port of one of the hundreds of connections the members open: take
 * it below the kernel's ephemeral range, where only explicit binds go.
 */
static int data_port(void)
{
	if (!fx.next_port) {
		int lo = 32768, hi = 60999;
		FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
		if (f) {
			if (fscanf(f, "%d %d", &lo, &hi) != 2)
				lo = 32768;
			fclose(f);
		}
		fx.next_port = lo > 12000 ? lo - 10000 + (int)(getpid() % 4000) : 10000;
	}
	for (int tries = 0; tries < 2000; tries++) {
		int port = fx.next_port++;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			return port;
	}
	die("no free port for a data endpoint below the ephemeral range");
}

typedef struct prun prun;

typedef struct pmem {
	prun *run;
	size_t idx;
	psc_peer *p;
	psc_peer_chan *c;
	uint64_t epoch; /* of the run's PSC */
	double last_probe, probe_gap;
	size_t heard_by; /* members that opened a probe of ours */
} pmem;

struct prun {
	pmem *mm;
	size_t n, s; /* members, members with a channel */
	int m;
	int relay; /* channel in relay mode (fx.relay) */
	uint8_t psc[16];
	int have_psc;
	uint8_t (*heard)[PVT_MAX_N]; /* heard[sender][receiver] */
	uint64_t data_got, data_bad;
	double t0, t_first;
	struct pollfd *pfd;
	size_t *pfd_mem;
	double last_sweep;
};

static void on_epoch(void *user, const uint8_t psc_id[16], uint64_t epoch, psc_peer_reason why)
{
	pmem *me = user;
	(void)why;
	if (me->run->have_psc && memcmp(psc_id, me->run->psc, 16) == 0 && epoch > me->epoch)
		me->epoch = epoch;
}

static void on_error(void *user, const psc_err *err)
{
	pmem *me = user;
	fprintf(stderr, "psc_vs_tls: member %zu: %s\n", me->idx, err->detail);
}

/* Message layout: type ('P' probe, 'D' data), sender index (2 bytes), seq (4). */
static void on_message(void *user, const psc_peer_msg_info *info, const uint8_t *data, size_t len)
{
	pmem *me = user;
	prun *r = me->run;
	(void)info;
	if (len != PVT_MSG_BYTES) {
		r->data_bad++;
		return;
	}
	size_t from = (size_t)data[1] << 8 | data[2];
	if (from >= r->s || from == me->idx) {
		r->data_bad++;
		return;
	}
	if (data[0] == 'P') {
		if (r->t_first == 0)
			r->t_first = bench_now() - r->t0;
		if (!r->heard[from][me->idx]) {
			r->heard[from][me->idx] = 1;
			r->mm[from].heard_by++;
		}
	} else if (data[0] == 'D' && data[PVT_MSG_BYTES - 1] == (uint8_t)(from ^ data[6])) {
		r->data_got++;
	} else {
		r->data_bad++;
	}
}

static const psc_peer_callbacks callbacks = {
    .on_epoch = on_epoch,
    .on_error = on_error,
};

static void member_new(prun *r, size_t i, const pvt_ident *id, int with_endpoint)
{
	pmem *me = &r->mm[i];
	me->run = r;
	me->idx = i;
	char ep[64];
	if (with_endpoint)
		snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", data_port());
	psc_peer_config cfg = {
	    .cert_file = id->crt,
	    .key_file = id->key,
	    .kms_endpoint = fx.endpoint,
	    .kms_cert_file = fx.cert,
	    .kms_curve_key = fx.curve,
	    .overlay = OVERLAY,
	    .data_endpoint = with_endpoint ? ep : NULL,
	    .request_timeout_ms = 60000,
	    .callbacks = &callbacks,
	    .user = me,
	};
	psc_err err = {0};
	if (psc_peer_new(&me->p, &cfg, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: member %zu (%s): %s\n", i, id->crt, err.detail);
		die("psc_peer_new failed");
	}
}

static void member_init(pmem *me)
{
	psc_err err = {0};
	if (psc_peer_initialize(me->p, NULL, NULL, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: member %zu Initialize: %s\n", me->idx, err.detail);
		die("Initialize failed");
	}
}

static void chan_open(pmem *me)
{
	psc_peer_chan_relay relay = {.publish_endpoint = fx.relay_ep[0],
				     .subscribe_endpoint = fx.relay_ep[1]};
	psc_peer_chan_config cc = {
	    .on_message = on_message, .user = me, .relay = me->run->relay ? &relay : NULL};
	psc_err err = {0};
	if (psc_peer_chan_new(&me->c, me->p, &cc, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: member %zu channel: %s\n", me->idx, err.detail);
		die("psc_peer_chan_new failed");
	}
}

static void member_free(pmem *me)
{
	psc_peer_chan_free(&me->c);
	psc_peer_free(&me->p);
}

static void process(pmem *me)
{
	int rc = me->c ? psc_peer_chan_process(me->c, 0) : psc_peer_process(me->p, 0);
	if (rc < 0)
		fprintf(stderr, "psc_vs_tls: member %zu: %s\n", me->idx, psc_strerror((psc_rc)rc));
}

/* Waits up to ms for any member's KMS connection or channel, then processes
 * the members whose descriptors fired (every member every SWEEP_S: ZMQ_FD is
 * edge-triggered). Members [0, first_n) of r.mm; extra = one more member or NULL.
 * Returns how many descriptors fired (0: nothing arrived within ms). */
static int pump_some(prun *r, size_t first_n, pmem *extra, int ms)
{
	size_t k = 0, n = first_n + (extra ? 1 : 0);
	for (size_t i = 0; i < n; i++) {
		pmem *me = i < first_n ? &r->mm[i] : extra;
		if (!me->p)
			continue;
		r->pfd[k] = (struct pollfd){.fd = psc_peer_fd(me->p), .events = POLLIN};
		r->pfd_mem[k++] = i;
		if (me->c) {
			r->pfd[k] =
			    (struct pollfd){.fd = psc_peer_chan_fd(me->c), .events = POLLIN};
			r->pfd_mem[k++] = i;
		}
	}
	int fired_n = poll(r->pfd, k, ms);
	double now = bench_now();
	bool sweep = now - r->last_sweep > SWEEP_S;
	if (sweep)
		r->last_sweep = now;
	size_t prev = (size_t)-1;
	for (size_t j = 0; j < k; j++) {
		size_t i = r->pfd_mem[j];
		if (i == prev)
			continue; /* both descriptors of one member: one process() */
		bool fired = r->pfd[j].revents ||
			     (j + 1 < k && r->pfd_mem[j + 1] == i && r->pfd[j + 1].revents);
		if (fired || sweep) {
			process(i < first_n ? &r->mm[i] : extra);
			prev = i;
		}
	}
	return fired_n > 0 ? fired_n : 0;
}

static void pump(prun *r, pmem *extra, int ms)
{
	pump_some(r, r->n, extra, ms);
}

/* Only the members with a channel: in the channel and message phases the
 * others have nothing to do, and polling them would charge PSC for the
 * driver's bookkeeping (scaled, in sampled runs). */
static int pump_chan(prun *r, int ms)
{
	return pump_some(r, r->s, NULL, ms);
}

static size_t holding(const prun *r, uint64_t epoch, pmem *extra)
{
	size_t h = 0;
	for (size_t i = 0; i < r->n; i++)
		h += r->mm[i].p && r->mm[i].epoch >= epoch;
	return h + (extra && extra->epoch >= epoch);
}

static void wait_epoch(prun *r, uint64_t epoch, size_t want, pmem *extra, const char *what)
{
	double start = bench_now();
	while (holding(r, epoch, extra) < want) {
		if (bench_now() - start > WAIT_S) {
			fprintf(stderr, "psc_vs_tls: %s: %zu of %zu members hold epoch %llu\n",
				what, holding(r, epoch, extra), want, (unsigned long long)epoch);
			die("members did not get their key");
		}
		pump(r, extra, 10);
	}
}

static void prun_alloc(prun *r, size_t n, size_t s, int m)
{
	memset(r, 0, sizeof(*r));
	r->n = n;
	r->s = s;
	r->m = m;
	r->mm = calloc(n, sizeof(*r->mm));
	r->heard = calloc(PVT_MAX_N, sizeof(*r->heard));
	r->pfd = calloc(2 * (n + 1), sizeof(*r->pfd));
	r->pfd_mem = calloc(2 * (n + 1), sizeof(*r->pfd_mem));
	if (!r->mm || !r->heard || !r->pfd || !r->pfd_mem)
		die("out of memory");
}

static void prun_free(prun *r)
{
	for (size_t i = 0; i < r->n; i++)
		member_free(&r->mm[i]);
	free(r->mm);
	free(r->heard);
	free(r->pfd);
	free(r->pfd_mem);
}

static void send_msg(pmem *me, char type, uint32_t seq)
{
	uint8_t buf[PVT_MSG_BYTES];
	memset(buf, (int)(seq & 0xff), sizeof(buf));
	buf[0] = (uint8_t)type;
	buf[1] = (uint8_t)(me->idx >> 8);
	buf[2] = (uint8_t)me->idx;
	memcpy(buf + 3, &seq, sizeof(seq));
	buf[PVT_MSG_BYTES - 1] = (uint8_t)(me->idx ^ buf[6]);
	psc_err err = {0};
	if (psc_peer_send(me->c, me->run->psc, buf, sizeof(buf), &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: member %zu send: %s\n", me->idx, err.detail);
		die("psc_peer_send failed");
	}
}

static void establish(prun *r, const pvt_ident *ids, size_t n_named, const char *name)
{
	uint8_t(*named)[16] = calloc(n_named ? n_named : 1, 16);
	if (!named)
		die("out of memory");
	for (size_t i = 0; i < n_named; i++)
		memcpy(named[i], ids[i + 1].node_id, 16);
	psc_peer_establish_params ep = {
	    .name = name, .members = (const uint8_t(*)[16])named, .n_members = n_named};
	psc_err err = {0};
	uint64_t epoch = 0;
	if (psc_peer_establish(r->mm[0].p, &ep, r->psc, &epoch, NULL, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: Establish %s: %s\n", name, err.detail);
		die("Establish failed");
	}
	free(named);
	r->have_psc = 1;
	r->mm[0].epoch = epoch;
}

/*
 * PSC, established: setup = keys (every member created, Initialized, the
 * Establish naming all, every Refresh applied) + channel (PUB/SUB opened by
 * the members with a channel, each repeating a probe until every other such
 * member opened one). Sampled for n > PVT_SAMPLE: the channel runs among the
 * first PVT_SAMPLE members and its costs are scaled by the link ratio.
 */
static void psc_run(const pvt_ident *ids, size_t n, int m, int relay, pvt_fig *out)
{
	memset(out, 0, sizeof(*out));
	/* relay mode: 2N connections, so the channel runs with every member */
	size_t s = relay ? n : n < PVT_SAMPLE ? n : PVT_SAMPLE;
	prun r;
	prun_alloc(&r, n, s, m);
	r.relay = relay;
	double r0 = relay_cpu();
	snap b0 = {0}, b1 = {0};
	snap_take(&b0);
	double c0 = cpu_all(), k0 = bench_proc_cpu((int)fx.kmsd.pid);
	r.t0 = bench_now();
	for (size_t i = 0; i < n; i++)
		member_new(&r, i, &ids[i], i < s && !relay);
	double c_new = cpu_all();
	for (size_t i = 0; i < n; i++)
		member_init(&r.mm[i]);
	double c_init = cpu_all(), t_init = bench_now(), k_init = bench_proc_cpu((int)fx.kmsd.pid);
	char name[64];
	snprintf(name, sizeof(name), relay ? "pvt-relay-%zu" : "pvt-%zu", n);
	establish(&r, ids, n - 1, name);
	wait_epoch(&r, 1, n, NULL, "establish");
	double c_keys = cpu_all(), t_keys = bench_now();
	out->new_cpu = c_new - c0;
	out->init_cpu = c_init - c_new;
	out->est_cpu = c_keys - c_init;
	out->est_wall = t_keys - t_init;
	out->est_kms_cpu = bench_proc_cpu((int)fx.kmsd.pid) - k_init;
	out->keys_kms_cpu = bench_proc_cpu((int)fx.kmsd.pid) - k0;
	snap_take(&b1);
	double bytes_keys = snap_delta(&b0, &b1);

	for (size_t i = 0; i < s; i++)
		chan_open(&r.mm[i]);
	size_t ready = 0;
	bool idle = true; /* the last pump found nothing to process */
	while (ready < s) {
		double now = bench_now();
		if (now - t_keys > WAIT_S)
			die("group channel: probes not delivered");
		ready = 0;
		for (size_t i = 0; i < s; i++) {
			pmem *me = &r.mm[i];
			if (me->heard_by + 1 >= s) {
				ready++;
			} else if (now - me->last_probe > me->probe_gap &&
				   (idle || me->last_probe == 0)) {
				/* a repeat only once the probes sent so far were
				 * processed: a repeat while members are still opening
				 * them measures the driver's lag, not the channel */
				/* backing off: a probe costs every connected member an open */
				send_msg(me, 'P', 0);
				out->probes++;
				me->last_probe = now;
				me->probe_gap = me->probe_gap ? 2 * me->probe_gap : PROBE_S;
				if (me->probe_gap > PROBE_MAX_S)
					me->probe_gap = PROBE_MAX_S;
			}
		}
		idle = pump_chan(&r, 5) == 0;
	}
	double c_chan = cpu_all(), t_chan = bench_now();
	out->relay_setup_cpu = relay_cpu() - r0;
	snap_take(&b0);
	double bytes_chan = snap_delta(&b1, &b0);
	out->links_run = s * (s - 1) / 2;
	out->links_full = relay ? out->links_run : n * (n - 1) / 2;
	out->scale = (double)out->links_full / (double)out->links_run;
	out->setup_cpu = (c_keys - c0) + (c_chan - c_keys) * out->scale;
	out->setup_wall = (t_keys - r.t0) + (t_chan - t_keys) * out->scale;
	out->setup_bytes = bytes_keys + bytes_chan * out->scale;
	out->first_msg = r.t_first;
	out->keys_cpu = c_keys - c0;
	out->keys_wall = t_keys - r.t0;
	out->chan_cpu = (c_chan - c_keys) * out->scale;
	out->chan_wall = (t_chan - t_keys) * out->scale;

	/* messages: every channel member sends M, every other one opens them
	 * (relay mode above PVT_SAMPLE: the first PVT_SAMPLE send, all N receive) */
	size_t senders = s < PVT_SAMPLE ? s : PVT_SAMPLE;
	double c1 = cpu_all(), r1 = relay_cpu();
	for (int k = 0; k < m; k++) {
		for (size_t i = 0; i < senders; i++)
			send_msg(&r.mm[i], 'D', (uint32_t)k);
		pump_chan(&r, 0);
	}
	out->expected = (uint64_t)senders * (s - 1) * (uint64_t)m;
	double last = bench_now();
	uint64_t seen = 0;
	while (r.data_got < out->expected && bench_now() - last < MSG_IDLE_S) {
		pump_chan(&r, 10);
		if (r.data_got != seen)
			seen = r.data_got, last = bench_now();
	}
	out->delivered = r.data_got;
	out->msg_cpu = cpu_all() - c1;
	out->relay_msg_cpu = relay_cpu() - r1;
	snap_take(&b1);
	out->msg_bytes = snap_delta(&b0, &b1);
	if (r.data_bad)
		fprintf(stderr, "psc_vs_tls: PSC%s N=%zu: %llu messages malformed\n",
			relay ? " via relay" : "", n, (unsigned long long)r.data_bad);

	/* leave: the last member leaves (a rekey; every other member applies it) */
	pmem *leaver = &r.mm[n - 1];
	uint64_t e = r.mm[0].epoch;
	psc_err err = {0};
	c1 = cpu_all();
	double t1 = bench_now();
	if (psc_peer_leave(leaver->p, r.psc, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: Leave: %s\n", err.detail);
		die("Leave failed");
	}
	leaver->epoch = 0;
	wait_epoch(&r, e + 1, n - 1, NULL, "leave");
	out->leave_cpu = cpu_all() - c1;
	out->leave_wall = bench_now() - t1;
	snap_take(&b0);
	out->leave_bytes = snap_delta(&b1, &b0);

	/* join: a new member (no channel) Initializes and joins: a rekey */
	pmem joiner = {0};
	joiner.run = &r;
	joiner.idx = n;
	c1 = cpu_all();
	t1 = bench_now();
	{
		prun tmp = r; /* member_new writes into r.mm[i]: give it a slot */
		tmp.mm = &joiner;
		member_new(&tmp, 0, &ids[n], 0);
		joiner.run = &r;
		joiner.idx = n;
	}
	member_init(&joiner);
	uint64_t je = 0;
	if (psc_peer_join(joiner.p, r.psc, &je, &err) != PSC_OK) {
		fprintf(stderr, "psc_vs_tls: Join: %s\n", err.detail);
		die("Join failed");
	}
	joiner.epoch = je;
	wait_epoch(&r, e + 2, n, &joiner, "join");
	out->join_cpu = cpu_all() - c1;
	out->join_wall = bench_now() - t1;
	snap_take(&b1);
	out->join_bytes = snap_delta(&b0, &b1);
	out->ok = 1;
	member_free(&joiner);
	prun_free(&r);
	free(b0.s);
	free(b1.s);
}

/* PSC, joins one by one: the owner establishes alone, then every other member
 * Initializes and joins in turn (each join a rekey of the members so far). */
static void psc_join_run(const pvt_ident *ids, size_t n, pvt_fig *out)
{
	memset(out, 0, sizeof(*out));
	prun r;
	prun_alloc(&r, n, 0, 0);
	snap b0 = {0}, b1 = {0};
	snap_take(&b0);
	double c0 = cpu_all();
	r.t0 = bench_now();
	for (size_t i = 0; i < n; i++)
		member_new(&r, i, &ids[i], 0);
	member_init(&r.mm[0]);
	char name[64];
	snprintf(name, sizeof(name), "pvt-joins-%zu", n);
	establish(&r, ids, 0, name);
	for (size_t i = 1; i < n; i++) {
		psc_err err = {0};
		uint64_t e = 0;
		member_init(&r.mm[i]);
		if (psc_peer_join(r.mm[i].p, r.psc, &e, &err) != PSC_OK) {
			fprintf(stderr, "psc_vs_tls: member %zu Join: %s\n", i, err.detail);
			die("Join failed");
		}
		r.mm[i].epoch = e;
		pump(&r, NULL, 0);
	}
	wait_epoch(&r, (uint64_t)n, n, NULL, "joins");
	out->setup_cpu = cpu_all() - c0;
	out->setup_wall = bench_now() - r.t0;
	snap_take(&b1);
	out->setup_bytes = snap_delta(&b0, &b1);
	out->scale = 1;
	out->ok = 1;
	prun_free(&r);
	free(b0.s);
	free(b1.s);
}

/*
 * Reference for the group channel, same run: bare ZeroMQ with the SDK's
 * pattern (one context per member, a PUB bound per member, a SUB connected to
 * every other member's PUB), no PSC, no keys, no sealing. Setup = sockets up
 * and every member's probe received by every other (the same backing-off
 * probes); then every member publishes M messages of the same size.
 */
typedef struct zref {
	void *ctx, *pub, *sub;
	double last, gap;
	size_t heard_by;
} zref;

static void zref_run(size_t s, int m, double *setup_cpu, double *msg_cpu, uint64_t *delivered)
{
	zref *z = calloc(s, sizeof(*z));
	uint8_t(*heard)[PVT_SAMPLE] = calloc(PVT_SAMPLE, sizeof(*heard));
	struct pollfd *pf = calloc(s, sizeof(*pf));
	char(*ep)[64] = calloc(s, sizeof(*ep));
	if (!z || !heard || !pf || !ep)
		die("out of memory");
	double c0 = bench_self_cpu();
	for (size_t i = 0; i < s; i++) {
		int zero = 0;
		snprintf(ep[i], sizeof(ep[i]), "tcp://127.0.0.1:%d", data_port());
		z[i].ctx = zmq_ctx_new();
		z[i].pub = z[i].ctx ? zmq_socket(z[i].ctx, ZMQ_PUB) : NULL;
		z[i].sub = z[i].ctx ? zmq_socket(z[i].ctx, ZMQ_SUB) : NULL;
		if (!z[i].pub || !z[i].sub || zmq_bind(z[i].pub, ep[i]) != 0 ||
		    zmq_setsockopt(z[i].sub, ZMQ_SUBSCRIBE, "", 0) != 0 ||
		    zmq_setsockopt(z[i].pub, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
		    zmq_setsockopt(z[i].sub, ZMQ_LINGER, &zero, sizeof(zero)) != 0)
			die("bare ZeroMQ reference: socket setup failed");
	}
	for (size_t i = 0; i < s; i++)
		for (size_t j = 0; j < s; j++)
			if (i != j && zmq_connect(z[i].sub, ep[j]) != 0)
				die("bare ZeroMQ reference: connect failed");
	uint8_t buf[PVT_MSG_BYTES + PSC_PEER_MSG_OVERHEAD];
	size_t ready = 0;
	double start = bench_now();
	uint64_t got = 0;
	bool zidle = true;
	for (int phase = 0; phase < 2; phase++) {
		uint64_t want = (uint64_t)s * (s - 1) * (uint64_t)m, seen = 0;
		double last = bench_now();
		if (phase == 1) {
			*setup_cpu = bench_self_cpu() - c0;
			c0 = bench_self_cpu();
			for (int k = 0; k < m; k++)
				for (size_t i = 0; i < s; i++) {
					memset(buf, 'D', sizeof(buf));
					buf[1] = (uint8_t)i;
					(void)zmq_send(z[i].pub, buf, sizeof(buf), ZMQ_DONTWAIT);
				}
		}
		while (phase == 0 ? ready < s : (got < want && bench_now() - last < MSG_IDLE_S)) {
			double now = bench_now();
			if (now - start > WAIT_S)
				die("bare ZeroMQ reference: probes not delivered");
			ready = 0;
			for (size_t i = 0; phase == 0 && i < s; i++) {
				if (z[i].heard_by + 1 >= s) {
					ready++;
				} else if (now - z[i].last > z[i].gap && (zidle || z[i].last == 0)) {
					memset(buf, 'P', sizeof(buf));
					buf[1] = (uint8_t)i;
					(void)zmq_send(z[i].pub, buf, sizeof(buf), ZMQ_DONTWAIT);
					z[i].last = now;
					z[i].gap = z[i].gap ? 2 * z[i].gap : PROBE_S;
					if (z[i].gap > PROBE_MAX_S)
						z[i].gap = PROBE_MAX_S;
				}
			}
			for (size_t i = 0; i < s; i++) {
				size_t fl = sizeof(int);
				int fd = -1;
				(void)zmq_getsockopt(z[i].sub, ZMQ_FD, &fd, &fl);
				pf[i] = (struct pollfd){.fd = fd, .events = POLLIN};
			}
			zidle = poll(pf, s, 5) <= 0; /* same repeat rule as psc_run */
			for (size_t i = 0; i < s; i++) {
				int r;
				while ((r = zmq_recv(z[i].sub, buf, sizeof(buf), ZMQ_DONTWAIT)) >
				       0) {
					size_t from = buf[1];
					if (buf[0] == 'P' && from < s && !heard[from][i]) {
						heard[from][i] = 1;
						z[from].heard_by++;
					} else if (buf[0] == 'D') {
						got++;
					}
				}
			}
			if (phase == 1 && got != seen)
				seen = got, last = bench_now();
		}
	}
	*msg_cpu = bench_self_cpu() - c0;
	*delivered = got;
	for (size_t i = 0; i < s; i++) {
		zmq_close(z[i].pub);
		zmq_close(z[i].sub);
		zmq_ctx_term(z[i].ctx);
	}
	free(z);
	free(heard);
	free(pf);
	free(ep);
}

/* ---- report ------------------------------------------------------------------ */

typedef struct row {
	size_t n;
	pvt_fig psc, relay, join, tls, dtls;
	/* bare ZeroMQ reference for the channel (zref_run), setup scaled like PSC's */
	double zref_setup_cpu, zref_msg_cpu;
	uint64_t zref_delivered, zref_expected;
} row;

static const char *human_bytes(double b, char *buf, size_t cap)
{
	if (b >= 1e9)
		snprintf(buf, cap, "%.2f GB", b / 1e9);
	else if (b >= 1e6)
		snprintf(buf, cap, "%.2f MB", b / 1e6);
	else if (b >= 1e3)
		snprintf(buf, cap, "%.1f kB", b / 1e3);
	else
		snprintf(buf, cap, "%.0f B", b);
	return buf;
}

static const char *mark(const pvt_fig *g)
{
	return g->scale > 1 ? " *" : "";
}

/* Table 1: setup, from nothing to every member able to send. */
static void print_setup(FILE *f, const row *rows, size_t nr)
{
	char b[32];
	fprintf(f, "| N | way | setup CPU s | setup wall s | first message ms | setup bytes | "
		   "TLS 1.3 mesh CPU / this |\n|---:|---|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < nr; i++) {
		const row *r = &rows[i];
		const pvt_fig *g[] = {&r->psc, &r->relay, &r->join, &r->tls, &r->dtls};
		const char *names[] = {"PSC (direct channel)", "PSC via relay",
				       "PSC, joins one by one (keys only, no channel)",
				       "TLS 1.3 mesh", "DTLS 1.2 mesh"};
		for (size_t k = 0; k < 5; k++) {
			fprintf(f, "| %zu | %s%s | %.3f | %.3f | ", r->n, names[k], mark(g[k]),
				g[k]->setup_cpu, g[k]->setup_wall);
			if (k == 2)
				fprintf(f, "— | ");
			else
				fprintf(f, "%.1f | ", g[k]->first_msg * 1e3);
			fprintf(f, "%s | %.1fx |\n", human_bytes(g[k]->setup_bytes, b, sizeof(b)),
				r->tls.setup_cpu / g[k]->setup_cpu);
		}
	}
}

/* Table 2: where the setup CPU goes. */
static void print_split(FILE *f, const row *rows, size_t nr)
{
	fprintf(f, "| N | PSC: member objects | PSC: Initialize all | PSC: Establish + every "
		   "Refresh (of which psc-kmsd) | PSC: direct group channel | PSC via relay: "
		   "group channel (of which psc-relay) | bare ZeroMQ, direct channel shape | "
		   "TLS 1.3: contexts | TLS 1.3: handshakes | DTLS 1.2: "
		   "handshakes | TLS 1.3 handshakes / PSC Establish + Refreshes "
		   "|\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < nr; i++) {
		const row *r = &rows[i];
		fprintf(f,
			"| %zu | %.3f | %.3f | %.4f (%.4f) | %.3f%s | %.3f (%.3f) | %.3f%s | %.3f | "
			"%.3f%s | %.3f%s | **%.0fx** |\n",
			r->n, r->psc.new_cpu, r->psc.init_cpu, r->psc.est_cpu, r->psc.est_kms_cpu,
			r->psc.chan_cpu, mark(&r->psc), r->relay.chan_cpu, r->relay.relay_setup_cpu,
			r->zref_setup_cpu, mark(&r->psc),
			r->tls.setup_cpu - r->tls.hs_cpu, r->tls.hs_cpu, mark(&r->tls),
			r->dtls.hs_cpu, mark(&r->dtls), r->tls.hs_cpu / r->psc.est_cpu);
	}
}

/* Table 3: messages, leave, join. */
static void print_run(FILE *f, const row *rows, size_t nr)
{
	char b1[32], b2[32];
	fprintf(
	    f, "| N | way | CPU us / delivered msg | bytes / delivered msg | delivered / "
	       "expected | leave CPU ms | leave wall ms | leave bytes | join CPU ms | join "
	       "wall ms | join bytes |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < nr; i++) {
		const row *r = &rows[i];
		const pvt_fig *g[] = {&r->psc, &r->relay, &r->tls, &r->dtls};
		const char *names[] = {"PSC (direct channel)", "PSC via relay", "TLS 1.3 mesh",
				       "DTLS 1.2 mesh"};
		for (size_t k = 0; k < 4; k++) {
			double d = g[k]->delivered ? (double)g[k]->delivered : NAN;
			fprintf(
			    f,
			    "| %zu | %s%s | %.2f | %.0f | %llu / %llu | %.2f | %.2f | %s | %.2f | "
			    "%.2f | %s |\n",
			    r->n, names[k], mark(g[k]), g[k]->msg_cpu / d * 1e6,
			    g[k]->msg_bytes / d, (unsigned long long)g[k]->delivered,
			    (unsigned long long)g[k]->expected, g[k]->leave_cpu * 1e3,
			    g[k]->leave_wall * 1e3, human_bytes(g[k]->leave_bytes, b1, sizeof(b1)),
			    g[k]->join_cpu * 1e3, g[k]->join_wall * 1e3,
			    human_bytes(g[k]->join_bytes, b2, sizeof(b2)));
		}
		fprintf(f,
			"| %zu | bare ZeroMQ PUB/SUB, no crypto (reference)%s | %.2f | — | %llu / "
			"%llu | — | — | — | — | — | — |\n",
			r->n, mark(&r->psc),
			r->zref_msg_cpu / (double)(r->zref_delivered ? r->zref_delivered : 1) * 1e6,
			(unsigned long long)r->zref_delivered,
			(unsigned long long)r->zref_expected);
	}
}

static void print_table(FILE *f, const row *rows, size_t nr)
{
	fprintf(f, "Setup (CPU of every process, s):\n\n");
	print_setup(f, rows, nr);
	fprintf(f, "\nWhere the setup CPU goes (s):\n\n");
	print_split(f, rows, nr);
	fprintf(f, "\nMessages (M per sender and receiver), one member leaving, one joining:\n\n");
	print_run(f, rows, nr);
}

static const row *row_n(const row *rows, size_t nr, size_t n)
{
	for (size_t i = 0; i < nr; i++)
		if (rows[i].n == n)
			return &rows[i];
	return NULL;
}

static const char *more_less(double a, double b)
{
	return a > b ? "more" : "less";
}

/* The reading: goal and where PSC is worse, in words, from this run's figures. */
static void write_reading(FILE *f, const row *rows, size_t nr)
{
	const row *r16 = row_n(rows, nr, 16), *r256 = row_n(rows, nr, 256);
	const row *lo = &rows[0], *hi = &rows[nr - 1];
	char jb1[32], jb2[32];
	fprintf(f, "**Goal** (PSC setup CPU at least 10x lower than the TLS 1.3 mesh at N=16, "
		   "100x at N=256, same run).");
	if (r16 && r256) {
		double g16 = r16->tls.setup_cpu / r16->psc.setup_cpu;
		double g256 = r256->tls.setup_cpu / r256->psc.setup_cpu;
		double v16 = r16->tls.setup_cpu / r16->relay.setup_cpu;
		double v256 = r256->tls.setup_cpu / r256->relay.setup_cpu;
		double k16 = r16->tls.hs_cpu / r16->psc.est_cpu;
		double k256 = r256->tls.hs_cpu / r256->psc.est_cpu;
		fprintf(f,
			" Whole setup, from nothing to every member able to send, with the SDK's "
			"default direct channel (every member's SUB connected to every other "
			"member's PUB): %.1fx at N=16 (%s) and %.1fx at N=256 (%s). With the "
			"channel in relay mode (every member connects its PUB and SUB to one "
			"psc-relay; the relay's CPU counted): %.1fx at N=16 (%s) and %.1fx at "
			"N=256 (%s). Key distribution alone - PSC's Establish "
			"and every member applying its Refresh, against the mesh's handshakes, "
			"both with members already registered (PSC: Initialized; mesh: contexts "
			"loaded): %.0fx at N=16 (%s) and %.0fx at N=256 (%s). So the draft's claim "
			"%s for what it compares - one KMS key distribution instead of "
			"N(N-1)/2 handshakes. ",
			g16, g16 >= 10 ? "met" : "not met", g256, g256 >= 100 ? "met" : "not met",
			v16, v16 >= 10 ? "met" : "not met", v256, v256 >= 100 ? "met" : "not met",
			k16, k16 >= 10 ? "met" : "not met", k256, k256 >= 100 ? "met" : "not met",
			(k16 >= 10 && k256 >= 100) ? "holds" : "does not fully hold even");
		const pvt_fig *a = &r16->relay, *b = &r256->relay;
		fprintf(f,
			"Relay mode takes the channel's mesh away (at N=256 the whole setup goes "
			"from %.1fx to %.1fx). What %s is the cost every member pays before any "
			"channel, in both modes (below): member objects and Initialize took "
			"%.3f s at N=16, where the goal allows %.3f s for the whole setup, and "
			"%.3f s at N=256, where it allows %.3f s; member objects alone cost "
			"%.2f ms per member. In relay mode the channel then added %.3f s at N=16 "
			"and %.3f s at N=256, where the readiness check alone sent %llu probe "
			"frames, each opened by the %zu other members (a probe is repeated, "
			"backing off, until every member opened one).\n\n",
			g256, v256,
			(v16 >= 10 && v256 >= 100) ? "remains" : "keeps relay mode from the goal",
			a->new_cpu + a->init_cpu, r16->tls.setup_cpu / 10, b->new_cpu + b->init_cpu,
			r256->tls.setup_cpu / 100, a->new_cpu / (double)r16->n * 1e3, a->chan_cpu,
			b->chan_cpu, (unsigned long long)b->probes, r256->n - 1);
	} else {
		fprintf(f, " Not assessed: this run did not include N=16 and N=256.\n\n");
	}
	fprintf(f, "**Where PSC is worse or no better** (figures from the tables above):\n\n");
	fprintf(f,
		"- *In direct mode the group channel, not the keys, dominates PSC's setup at "
		"large N.* The SDK's default channel is ZeroMQ PUB/SUB with every member's SUB "
		"connected to every other member's PUB: two TCP connections per pair (the mesh "
		"has one), each with a ZMTP handshake, O(N^2) like the mesh. No cryptography, "
		"but at N=%zu it cost %.3f s of the %.3f s PSC setup CPU%s, against %.4f s for "
		"Establish and every Refresh. Bare ZeroMQ with the same shape (a context per "
		"member, no PSC) took %.3f s in the same run, so this is the transport's cost, "
		"not the keys'. Relay mode removes it: 2N connections to one psc-relay, run in "
		"full at every N (no sampling), %.3f s CPU for the channel at N=%zu of which "
		"%.3f s in psc-relay.\n",
		hi->n, hi->psc.chan_cpu, hi->psc.setup_cpu,
		hi->psc.scale > 1 ? " (sampled and scaled, see above)" : "", hi->psc.est_cpu,
		hi->zref_setup_cpu, hi->relay.chan_cpu, hi->n, hi->relay.relay_setup_cpu);
	{
		double rd = hi->relay.delivered ? (double)hi->relay.delivered : NAN;
		double pd = hi->psc.delivered ? (double)hi->psc.delivered : NAN;
		double ld = lo->relay.delivered ? (double)lo->relay.delivered : NAN;
		double lp = lo->psc.delivered ? (double)lo->psc.delivered : NAN;
		fprintf(f,
			"- *What the relay costs.* Every frame takes one more hop (member -> "
			"psc-relay -> members) and the relay copies it to every subscriber, "
			"including back to its sender (the SDK drops its own frames unopened). "
			"Per delivered message relay mode took %.2f us CPU at N=%zu (%.2f us of "
			"it in psc-relay) against %.2f us for the direct channel, and %.0f bytes "
			"on the wire against %.0f (both hops counted); at N=%zu %.2f us against "
			"%.2f us. The first message arrived after %.1f ms at N=%zu and %.1f ms at "
			"N=%zu (direct: %.1f and %.1f ms). The relay is a single point of failure "
			"for the data plane: while it is down nobody hears anybody (members "
			"reconnect by themselves when it is back; what was sent meanwhile is lost, "
			"test_peer_relay shows it), and one relay process on one core forwards "
			"every frame of every PSC it carries. It cannot read or forge messages - "
			"they are sealed end to end with the PSC key, which it never has - but "
			"its operator sees the metadata: PSC IDs, sender Node-IDs, sizes and "
			"timing of every frame, and which endpoints subscribe to which PSC "
			"(CURVE on the relay hides these from the network, not from the relay). "
			"Details in docs/relay.md.\n",
			hi->relay.msg_cpu / rd * 1e6, hi->n, hi->relay.relay_msg_cpu / rd * 1e6,
			hi->psc.msg_cpu / pd * 1e6, hi->relay.msg_bytes / rd, hi->psc.msg_bytes / pd,
			lo->n, lo->relay.msg_cpu / ld * 1e6, lo->psc.msg_cpu / lp * 1e6,
			lo->relay.first_msg * 1e3, lo->n, hi->relay.first_msg * 1e3, hi->n,
			lo->psc.first_msg * 1e3, hi->psc.first_msg * 1e3);
		fprintf(f,
			"- *Where direct mode is still preferable.* Small groups gain little "
			"from a relay: at N=%zu relay mode's setup took %.3f s CPU against %.3f s "
			"direct (a mesh of a few members is a few connections), each delivered "
			"message %.2f us against %.2f us (%s) and the first message %.1f ms "
			"against %.1f ms. Groups whose members must not depend on one more "
			"always-on component, and groups whose membership and traffic pattern "
			"must not be visible to a third party: direct mode has no central hop for "
			"data and no relay operator.\n",
			lo->n, lo->relay.setup_cpu, lo->psc.setup_cpu,
			lo->relay.msg_cpu / ld * 1e6, lo->psc.msg_cpu / lp * 1e6,
			lo->relay.msg_cpu / ld > lo->psc.msg_cpu / lp
			    ? "the extra hop costs more than the few connections it saves"
			    : "the hop costs no more than the connections it saves",
			lo->relay.first_msg * 1e3, lo->psc.first_msg * 1e3);
	}
	fprintf(f,
		"- *Fixed cost per member.* Each PSC member loads its certificate and key, "
		"creates a ZeroMQ context and connects to psc-kmsd over CURVE (%.2f ms CPU per "
		"member at N=%zu, counted until the first Initialize starts) and runs "
		"Initialize (%.2f ms per member: signatures both ways, certificate checks, "
		"an audit record with fdatasync and a SQLite commit in psc-kmsd). A mesh "
		"member only loads its certificate and key (%.2f ms per member; OpenSSL 3's "
		"PEM decoding is most of both). For small groups this decides: at N=%zu PSC's "
		"whole setup takes %.3f s CPU against %.3f s for the TLS 1.3 mesh (%s).\n",
		hi->psc.new_cpu / (double)hi->n * 1e3, hi->n,
		hi->psc.init_cpu / (double)hi->n * 1e3,
		(hi->tls.setup_cpu - hi->tls.hs_cpu) / (double)hi->n * 1e3, lo->n,
		lo->psc.setup_cpu, lo->tls.setup_cpu,
		lo->psc.setup_cpu > lo->tls.setup_cpu ? "PSC is worse" : "PSC is still cheaper");
	fprintf(f,
		"- *Latency of the first message.* No PSC member can send before psc-kmsd has "
		"answered the Initializes, wrapped a key for every named member and the "
		"Refreshes have arrived, and a member is heard only once the channel's "
		"connections are up: the first message arrived after %.1f ms at N=%zu and "
		"%.1f ms at N=%zu, against %.1f ms and %.1f ms in the TLS 1.3 mesh, where one "
		"handshake lets the first pair talk.\n",
		lo->psc.first_msg * 1e3, lo->n, hi->psc.first_msg * 1e3, hi->n,
		lo->tls.first_msg * 1e3, hi->tls.first_msg * 1e3);
	fprintf(f,
		"- *Leaving is free in a mesh, a rekey in PSC.* The mesh's leaver sends "
		"close_notify on its links (%.2f ms CPU at N=%zu) and nobody else changes keys; "
		"PSC's forward secrecy costs a rekey whose Refresh every remaining member "
		"applies: %.2f ms CPU, %.2f ms until all hold the new key. A PSC join "
		"(Initialize + one rekey, %.2f ms CPU at N=%zu) costs %s than the mesh "
		"joiner's N-1 handshakes (%.2f ms), but it touches every member, and every "
		"join/leave Refresh carries the whole member list (%s on the wire per PSC join "
		"at N=%zu against %s for the mesh joiner's handshakes).\n",
		hi->tls.leave_cpu * 1e3, hi->n, hi->psc.leave_cpu * 1e3, hi->psc.leave_wall * 1e3,
		hi->psc.join_cpu * 1e3, hi->n, more_less(hi->psc.join_cpu, hi->tls.join_cpu),
		hi->tls.join_cpu * 1e3, human_bytes(hi->psc.join_bytes, jb1, sizeof(jb1)), hi->n,
		human_bytes(hi->tls.join_bytes, jb2, sizeof(jb2)));
	fprintf(f,
		"- *Joining one by one is quadratic.* When members join one at a time each "
		"join is a rekey of everyone so far: %.3f s CPU at N=%zu (keys only, no "
		"channel) against %.3f s for the same member objects, Initializes and one "
		"Establish naming them all.\n",
		hi->join.setup_cpu, hi->n, hi->psc.keys_cpu);
	fprintf(f,
		"- *The KMS is a central point.* Every Initialize, Establish, join and leave "
		"goes through one psc-kmsd (one event-loop thread, one HSM session): %.4f s of "
		"the %.4f s Establish + Refresh CPU at N=%zu was psc-kmsd's. While it is down "
		"nobody can join, leave or establish (members keep talking on the keys they "
		"hold until the next rekey); a mesh has no such component. Its rekey rate "
		"bounds churn (see kms_bench above).\n",
		hi->psc.est_kms_cpu, hi->psc.est_cpu, hi->n);
	double pl = lo->psc.msg_cpu / (double)lo->psc.delivered * 1e6;
	double ph = hi->psc.msg_cpu / (double)hi->psc.delivered * 1e6;
	double tl = lo->tls.msg_cpu / (double)lo->tls.delivered * 1e6;
	double th = hi->tls.msg_cpu / (double)hi->tls.delivered * 1e6;
	double dh = hi->dtls.msg_cpu / (double)hi->dtls.delivered * 1e6;
	double zh = hi->zref_msg_cpu / (double)(hi->zref_delivered ? hi->zref_delivered : 1) * 1e6;
	fprintf(f,
		"- *Per message.* PSC seals once per group message and every receiver opens it; "
		"the meshes encrypt once per receiver. Per delivered message PSC (direct) took %.2f us "
		"at N=%zu and %.2f us at N=%zu, the TLS 1.3 mesh %.2f and %.2f us, the DTLS 1.2 "
		"mesh %.2f us at N=%zu: at N=%zu PSC is %s per delivered message than the TLS "
		"1.3 mesh. Bare ZeroMQ fan-out of the same frames without any cryptography took "
		"%.2f us at N=%zu, %.0f%% of PSC's figure: that share is the transport (N-1 "
		"connections per publisher, a context and I/O thread per member, all on 2 "
		"cores here), the rest sealing, opening and the SDK.\n\n",
		pl, lo->n, ph, hi->n, tl, th, dh, hi->n, hi->n, ph > th ? "dearer" : "cheaper", zh,
		hi->n, 100.0 * zh / ph);
}

static void write_section(const char *path, const row *rows, size_t nr, int m, double load0,
			  double load1, double secs, const char *command)
{
	FILE *f = fopen(path, "w");
	if (!f)
		die("cannot write the doc section");
	char cpu[256], date[64];
	struct utsname u;
	uname(&u);
	bench_cpu_model(cpu, sizeof(cpu));
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
	fprintf(f, "## PSC vs a TLS 1.3 / DTLS 1.2 mesh (`bench/psc_vs_tls`)\n\n");
	fprintf(f,
		"Run %s on %s, %s, %ld cores online, %s; 1-minute load average %.2f at start, "
		"%.2f at end (the end figure counts this run's own threads: every PSC member has "
		"a ZeroMQ I/O thread; the machine is shared, other engineers' builds and tests "
		"ran meanwhile, so wall times move between runs and CPU times less; the least "
		"stable figure is PSC's CPU per delivered message at N >= 64 - it depends on how "
		"many frames ZeroMQ batches per wake-up, i.e. on scheduling - which ranged from 2 "
		"to 17 us over seven development runs while the meshes' stayed within 10%%). "
		"Whole run %.0f s. "
		"psc-kmsd as built (RelWithDebInfo) with `mkkms.sh`'s config (SoftHSM 2 token, "
		"`hsm.workers: 2`, CURVE on, audit log with fdatasync and SQLite state on the "
		"local disk). Command: `%s` (it builds, runs `psc_vs_tls --section ... --data "
		"...`, plots and rewrites this section).\n\n",
		date, u.machine, cpu, sysconf(_SC_NPROCESSORS_ONLN), OPENSSL_VERSION_TEXT, load0,
		load1, secs, command);
	fprintf(f,
		"**What runs.** N members on 127.0.0.1, each with its own EC P-256 certificate "
		"(reload:// Node-ID URI) issued by the same temp CA. *PSC*: every member is a "
		"libpscpeer peer (its own ZeroMQ context and CURVE connection to psc-kmsd); all "
		"Initialize, member 0 establishes the PSC naming the N-1 others, every member "
		"applies its Refresh (KMS signature check, ECDH P-256 unwrap); then the members "
		"open the SDK's group channel (ZeroMQ PUB/SUB: each member's SUB socket "
		"connects to every other member's PUB, plain TCP, no handshake cryptography) "
		"and each repeats a probe (after 10 ms, then doubling up to 160 ms, and only "
		"once every probe sent so far was processed, so that a repeat measures lost "
		"probes, not the driver's lag) until every other member opened one. *PSC via relay*: the same with other identities and "
		"the channel in relay mode (`psc_peer_chan_relay`, docs/relay.md): every "
		"member's PUB and SUB connect to one psc-relay process (XSUB/XPUB, plain TCP "
		"like the direct channel, started before the run like psc-kmsd), 2N "
		"connections in all. *PSC, joins one by one*: other identities; the owner "
		"establishes alone and the others Initialize and join in turn (each join is a "
		"rekey of the members so far). *TLS 1.3 mesh*: one TCP connection and one "
		"mutually authenticated full handshake per pair (ECDHE P-256, ECDSA P-256 "
		"certificates verified against the CA, no session cache, no tickets: no "
		"resumption). *DTLS 1.2 mesh*: the same over UDP with OpenSSL's cookie exchange "
		"(`DTLSv1_listen`, HelloVerifyRequest). Then every member sends M = %d messages "
		"of %d bytes: PSC to the group (one sealed frame, AES-256-GCM, fanned out by "
		"ZeroMQ), the meshes to every other member over its links. *Leave*: the last "
		"member leaves (PSC: `PscLeave`, a rekey whose Refresh every remaining member "
		"applies; mesh: it sends close_notify on its links and closes them - no "
		"cryptography, no one rekeys). *Join*: a new member (PSC: Initialize + "
		"`PscJoin`, a rekey, without opening a channel; mesh: a context and N-1 new full "
		"handshakes). *Bare ZeroMQ* (reference for the channel): the same PUB/SUB shape "
		"with a context per member but no PSC, no keys, no sealing - setup until every "
		"probe arrived, then the same messages.\n\n",
		m, PVT_MSG_BYTES);
	fprintf(f,
		"**How it is measured.** Members are objects in one process (the PSC peers with "
		"their ZeroMQ I/O threads; for the meshes two worker threads drive both ends of "
		"each link), so *CPU* = this process's `getrusage` (all threads) plus, for PSC, "
		"psc-kmsd's and (relay mode) psc-relay's scheduler run time summed over their "
		"threads (`/proc/<pid>/task/*/schedstat`, ns). Certificates and the KMS "
		"installation are made beforehand and not counted. *Setup* starts before the "
		"first member object (PSC peer, or SSL_CTX with certificate and key) is created "
		"and ends when every member can send and be heard: PSC = the key held by all "
		"and every member's probe opened by every other; mesh = every handshake done "
		"and the peer certificate verified. On 2 cores setup wall time is bounded by "
		"CPU / 2, not by round trips. *First message* = from the start of setup until "
		"the first application message is opened by a member. *CPU per delivered "
		"message* = CPU of the message phase / messages delivered (sender and receiver "
		"work; the KMS idles). *Bytes on the wire* = TCP/UDP payload: for PSC the "
		"`TCP_INFO` counters of every socket of this process (bytes received, plus bytes "
		"sent to psc-kmsd and psc-relay, whose ends are in other processes; ZMTP and CURVE framing "
		"included), for the meshes the bytes OpenSSL handed to the sockets (records "
		"with headers, both ends); IP/TCP/UDP headers not counted. Not the loopback "
		"interface counters: other tests use loopback at the same time. *Leave / join* "
		"= CPU and wall time until every remaining member holds the new key (PSC) or "
		"every new link is up (mesh).\n\n");
	fprintf(f,
		"**Sampled (rows marked \\*).** Above N = %d the data plane runs among the "
		"first %d members only: the meshes run %d handshakes (not N(N-1)/2) and the PSC "
		"channel connects %d member pairs; their CPU, wall time and bytes are scaled by "
		"N(N-1) / (%d x %d) (links are independent, so their cost is linear in links), "
		"and the meshes' leave and join by (N-1) / %d. PSC's key management "
		"(Initialize, Establish, every Refresh, the leave and join rekeys) always runs "
		"with all N members, and so does PSC via relay's channel (2N connections): "
		"there the first %d members send and all N receive. Per-message figures "
		"are measured, not scaled.\n\n",
		PVT_SAMPLE, PVT_SAMPLE, PVT_SAMPLE * (PVT_SAMPLE - 1) / 2,
		PVT_SAMPLE * (PVT_SAMPLE - 1) / 2, PVT_SAMPLE, PVT_SAMPLE - 1, PVT_SAMPLE - 1,
		PVT_SAMPLE);
	print_table(f, rows, nr);
	fprintf(f, "\n![setup CPU vs N, log-log](psc_vs_tls.png)\n\n");
	write_reading(f, rows, nr);
	fclose(f);
}

static void write_data(const char *path, const row *rows, size_t nr)
{
	FILE *f = fopen(path, "w");
	if (!f)
		die("cannot write the plot data");
	fprintf(f, "# N psc_setup_cpu_s psc_joins_setup_cpu_s tls13_setup_cpu_s "
		   "dtls12_setup_cpu_s psc_establish_refresh_cpu_s psc_relay_setup_cpu_s\n");
	for (size_t i = 0; i < nr; i++)
		fprintf(f, "%zu %.6f %.6f %.6f %.6f %.6f %.6f\n", rows[i].n, rows[i].psc.setup_cpu,
			rows[i].join.setup_cpu, rows[i].tls.setup_cpu, rows[i].dtls.setup_cpu,
			rows[i].psc.est_cpu, rows[i].relay.setup_cpu);
	fclose(f);
}

int main(int argc, char **argv)
{
	int quick = 0, m = 100;
	size_t only = 0;
	const char *section = NULL, *data = NULL, *command = "bash bench/psc_vs_tls.sh";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--section") && i + 1 < argc)
			section = argv[++i];
		else if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--command") && i + 1 < argc)
			command = argv[++i];
		else if (!strcmp(argv[i], "--n") && i + 1 < argc)
			only = (size_t)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr,
				"psc_vs_tls: unknown argument '%s'\nusage: psc_vs_tls [--quick] "
				"[--n N] [--section FILE] [--data FILE] [--command TEXT]\n",
				argv[i]);
			return 2;
		}
	}
	if (quick)
		m = 10;
	const size_t *ns = full_ns;
	size_t nn = quick ? 1 : sizeof(full_ns) / sizeof(full_ns[0]);
	if (only) {
		if (only < 2 || only > PVT_MAX_N) {
			fprintf(stderr, "psc_vs_tls: --n %zu: a group has 2 to %d members\n", only,
				PVT_MAX_N);
			return 2;
		}
		ns = &only;
		nn = 1;
	}
	double load0 = bench_loadavg(), start = bench_now();
	install();
	printf("psc_vs_tls: KMS at %s, scratch %s; M = %d messages of %d bytes\n", fx.endpoint,
	       fx.dir, m, PVT_MSG_BYTES);

	row rows[sizeof(full_ns) / sizeof(full_ns[0])];
	memset(rows, 0, sizeof(rows));
	char ca_file[4300];
	snprintf(ca_file, sizeof(ca_file), "%s/ca.crt.pem", fx.ca);
	int bad = 0;
	for (size_t k = 0; k < nn; k++) {
		size_t n = ns[k];
		row *r = &rows[k];
		r->n = n;
		pvt_ident *ids = calloc(3 * n + 2, sizeof(*ids));
		if (!ids)
			die("out of memory");
		char prefix[32];
		snprintf(prefix, sizeof(prefix), "n%zu-m", n);
		double t = bench_now();
		/* ids[0..n]: established group + joiner (and the meshes); ids[n+1..2n]:
		 * joins; ids[2n+1..3n+1]: the relay run's group + joiner */
		if (pvt_issue(fx.ca, fx.ca, OVERLAY, prefix, (unsigned)(k * 1024), 3 * n + 2, ids))
			die("issuing member certificates failed");
		printf("N=%zu: %zu certificates issued in %.2f s (not counted)\n", n, 3 * n + 2,
		       bench_now() - t);
		fflush(stdout);
		psc_run(ids, n, m, 0, &r->psc);
		printf("N=%zu PSC: setup %.3f s CPU, %.3f s wall (keys %.3f s CPU of which "
		       "psc-kmsd %.3f, %.3f s wall; channel %.3f s CPU, %.3f s wall%s); %llu/%llu "
		       "delivered\n",
		       n, r->psc.setup_cpu, r->psc.setup_wall, r->psc.keys_cpu, r->psc.keys_kms_cpu,
		       r->psc.keys_wall, r->psc.chan_cpu, r->psc.chan_wall,
		       r->psc.scale > 1 ? ", scaled" : "", (unsigned long long)r->psc.delivered,
		       (unsigned long long)r->psc.expected);
		fflush(stdout);
		{
			size_t zs = n < PVT_SAMPLE ? n : PVT_SAMPLE;
			zref_run(zs, m, &r->zref_setup_cpu, &r->zref_msg_cpu, &r->zref_delivered);
			r->zref_setup_cpu *= r->psc.scale;
			r->zref_expected = (uint64_t)zs * (zs - 1) * (uint64_t)m;
			printf("N=%zu bare ZeroMQ channel reference: setup %.3f s CPU%s, %.2f us "
			       "per delivered message\n",
			       n, r->zref_setup_cpu, r->psc.scale > 1 ? " (scaled)" : "",
			       r->zref_msg_cpu /
				   (double)(r->zref_delivered ? r->zref_delivered : 1) * 1e6);
		}
		relay_start();
		psc_run(ids + 2 * n + 1, n, m, 1, &r->relay);
		relay_stop();
		printf("N=%zu PSC via relay: setup %.3f s CPU, %.3f s wall (keys %.3f s CPU; "
		       "channel %.3f s CPU of which psc-relay %.3f, %.3f s wall); %llu/%llu "
		       "delivered, %.2f us CPU per delivered message (psc-relay %.2f); %llu "
		       "readiness probes\n",
		       n, r->relay.setup_cpu, r->relay.setup_wall, r->relay.keys_cpu,
		       r->relay.chan_cpu, r->relay.relay_setup_cpu, r->relay.chan_wall,
		       (unsigned long long)r->relay.delivered, (unsigned long long)r->relay.expected,
		       r->relay.msg_cpu / (double)(r->relay.delivered ? r->relay.delivered : 1) * 1e6,
		       r->relay.relay_msg_cpu /
			   (double)(r->relay.delivered ? r->relay.delivered : 1) * 1e6,
		       (unsigned long long)r->relay.probes);
		fflush(stdout);
		psc_join_run(ids + n + 1, n, &r->join);
		printf("N=%zu PSC keys: member objects %.3f s CPU, Initialize %.3f s CPU, "
		       "Establish + Refreshes %.4f s CPU (psc-kmsd %.4f), %.4f s wall\n",
		       n, r->psc.new_cpu, r->psc.init_cpu, r->psc.est_cpu, r->psc.est_kms_cpu,
		       r->psc.est_wall);
		printf("N=%zu PSC joins one by one: setup %.3f s CPU, %.3f s wall\n", n,
		       r->join.setup_cpu, r->join.setup_wall);
		fflush(stdout);
		if (pvt_mesh_run(PVT_TLS, ids, n, m, ca_file, &r->tls) != 0)
			die("TLS 1.3 mesh failed");
		printf("N=%zu TLS 1.3 mesh: setup %.3f s CPU, %.3f s wall%s; %llu/%llu delivered\n",
		       n, r->tls.setup_cpu, r->tls.setup_wall,
		       r->tls.scale > 1 ? " (sampled, scaled)" : "",
		       (unsigned long long)r->tls.delivered, (unsigned long long)r->tls.expected);
		fflush(stdout);
		if (pvt_mesh_run(PVT_DTLS, ids, n, m, ca_file, &r->dtls) != 0)
			die("DTLS 1.2 mesh failed");
		printf(
		    "N=%zu DTLS 1.2 mesh: setup %.3f s CPU, %.3f s wall%s; %llu/%llu delivered\n",
		    n, r->dtls.setup_cpu, r->dtls.setup_wall,
		    r->dtls.scale > 1 ? " (sampled, scaled)" : "",
		    (unsigned long long)r->dtls.delivered, (unsigned long long)r->dtls.expected);
		fflush(stdout);
		bad |= r->psc.delivered != r->psc.expected ||
		       r->relay.delivered != r->relay.expected || r->tls.delivered != r->tls.expected ||
		       r->dtls.delivered != r->dtls.expected;
		free(ids);
	}
	double secs = bench_now() - start, load1 = bench_loadavg();
	printf("\n");
	print_table(stdout, rows, nn);
	for (size_t k = 0; k < nn; k++)
		printf("N=%zu: setup CPU TLS 1.3 mesh / PSC = %.1fx (via relay %.1fx), DTLS 1.2 "
		       "mesh / PSC = %.1fx\n",
		       rows[k].n, rows[k].tls.setup_cpu / rows[k].psc.setup_cpu,
		       rows[k].tls.setup_cpu / rows[k].relay.setup_cpu,
		       rows[k].dtls.setup_cpu / rows[k].psc.setup_cpu);
	if (rows[nn - 1].n > PVT_SAMPLE)
		printf("* sampled: the data plane of N > %d ran among %d members and its costs are "
		       "scaled to N (see docs/benchmarks.md)\n",
		       PVT_SAMPLE, PVT_SAMPLE);
	printf("whole run %.0f s, load average %.2f -> %.2f\n", secs, load0, load1);
	if (section)
		write_section(section, rows, nn, m, load0, load1, secs, command);
	if (data)
		write_data(data, rows, nn);
	pt_proc_stop(&fx.kmsd, 10000);
	if (!getenv("PSC_KEEP"))
		pt_rm_rf(fx.dir);
	if (bad)
		fprintf(stderr, "psc_vs_tls: not every message was delivered and opened\n");
	return bad ? 1 : 0;
}
