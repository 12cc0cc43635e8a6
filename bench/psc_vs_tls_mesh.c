/*
 * psc_vs_tls_mesh — the reference psc_vs_tls compares PSC against: RELOAD's
 * TLS/DTLS mode, where every pair of members that talk runs its own mutually
 * authenticated handshake. Members are OpenSSL contexts in this process (one
 * per member: its certificate and key, the test CA as trust anchor); every
 * link is a real TCP (TLS 1.3) or UDP (DTLS 1.2, with OpenSSL's cookie
 * exchange through DTLSv1_listen) socket pair on 127.0.0.1, both ends driven
 * by one of two worker threads (the machine has 2 cores), so the CPU of both
 * ends is this process's CPU (getrusage). Full handshakes only: no session
 * cache, no tickets, so no resumption. Key exchange P-256 and ECDSA P-256
 * signatures, the same curve PSC uses.
 * Bytes on the wire = bytes the TLS/DTLS layer hands to its sockets (records
 * with their headers; BIO_number_written of both ends), i.e. TCP/UDP payload.
 * Never: reuse a session, or count a link as up whose peer certificate did not
 * verify against the CA.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "bench_util.h"
#include "psc_vs_tls.h"

#define N_THREADS 2
#define STEP_S 10.0 /* a handshake or message batch stuck this long is a failure */
#define WINDOW 32   /* records in flight per direction of a link */

typedef struct mlink {
	size_t i, j; /* client member i, server member j */
	SSL *a, *b;
	int fa, fb;
	int up;
	uint64_t got; /* messages delivered on this link (both directions) */
} mlink;

typedef struct mesh {
	pvt_kind kind;
	int m;
	SSL_CTX **ctx; /* per member (n + 1: the joiner last) */
	size_t n_ctx;
	int lfd[PVT_SAMPLE + 1][N_THREADS]; /* listeners of the sampled members */
	struct sockaddr_in laddr[PVT_SAMPLE + 1][N_THREADS];
	mlink *links;
	double t0;
	_Atomic int first_done;
	double t_first;
	_Atomic int failed;
	unsigned char cookie_key[32];
} mesh;

/* The DTLS cookie callbacks carry no user pointer; the key lives in the SSL_CTX. */
static int cookie_idx = -1;

static void ssl_fail(const char *what, size_t i, size_t j)
{
	char buf[256];
	unsigned long e = ERR_get_error();
	ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "psc_vs_tls: %s (link %zu-%zu): %s\n", what, i, j, e ? buf : "no detail");
	ERR_clear_error();
}

static int cookie_mac(SSL *ssl, unsigned char *out, unsigned int *len)
{
	const unsigned char *key = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), cookie_idx);
	BIO_ADDR *peer = BIO_ADDR_new();
	unsigned char raw[32];
	size_t rl = 0;
	int ok = key && peer && BIO_dgram_get_peer(SSL_get_rbio(ssl), peer) > 0 &&
		 BIO_ADDR_rawaddress(peer, NULL, &rl) && rl <= sizeof(raw) - 2 &&
		 BIO_ADDR_rawaddress(peer, raw, &rl);
	if (ok) {
		unsigned short port = BIO_ADDR_rawport(peer);
		memcpy(raw + rl, &port, 2);
		ok = HMAC(EVP_sha256(), key, 32, raw, rl + 2, out, len) != NULL;
	}
	BIO_ADDR_free(peer);
	return ok;
}

static int cookie_gen(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
	return cookie_mac(ssl, cookie, len);
}

static int cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int len)
{
	unsigned char want[EVP_MAX_MD_SIZE];
	unsigned int wl = 0;
	return cookie_mac(ssl, want, &wl) && wl == len && CRYPTO_memcmp(want, cookie, len) == 0;
}

static SSL_CTX *member_ctx(mesh *ms, const pvt_ident *id, const char *ca_file)
{
	int tls = ms->kind == PVT_TLS;
	SSL_CTX *c = SSL_CTX_new(tls ? TLS_method() : DTLS_method());
	if (!c)
		return NULL;
	int v = tls ? TLS1_3_VERSION : DTLS1_2_VERSION;
	if (SSL_CTX_set_min_proto_version(c, v) != 1 || SSL_CTX_set_max_proto_version(c, v) != 1 ||
	    SSL_CTX_use_certificate_file(c, id->crt, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(c, id->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c) != 1 ||
	    SSL_CTX_load_verify_locations(c, ca_file, NULL) != 1 ||
	    SSL_CTX_set1_groups_list(c, "P-256") != 1 ||
	    SSL_CTX_set1_sigalgs_list(c, "ECDSA+SHA256") != 1) {
		fprintf(stderr, "psc_vs_tls: TLS context for %s: ", id->crt);
		ERR_print_errors_fp(stderr);
		SSL_CTX_free(c);
		return NULL;
	}
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* full handshakes only: no session cache, no tickets */
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
	if (tls)
		(void)SSL_CTX_set_num_tickets(c, 0);
	else {
		SSL_CTX_set_ex_data(c, cookie_idx, ms->cookie_key);
		SSL_CTX_set_cookie_generate_cb(c, cookie_gen);
		SSL_CTX_set_cookie_verify_cb(c, cookie_verify);
	}
	return c;
}

static int new_listener(mesh *ms, size_t j, int t)
{
	int dgram = ms->kind == PVT_DTLS;
	int fd = socket(AF_INET, dgram ? SOCK_DGRAM | SOCK_NONBLOCK : SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    (!dgram && listen(fd, 16) != 0) || getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
		fprintf(stderr, "psc_vs_tls: listener for member %zu: %s\n", j, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	ms->lfd[j][t] = fd;
	ms->laddr[j][t] = a;
	return 0;
}

/* Steps both ends' handshakes in turn until both are done (loopback: each
 * flight is readable at once, poll only when neither end moved). */
static int handshake(mesh *ms, mlink *l, int t)
{
	int dtls = ms->kind == PVT_DTLS;
	struct sockaddr_in ca, srv = ms->laddr[l->j][t];
	socklen_t cal = sizeof(ca);
	int one = 1;
	l->fa = socket(AF_INET, (dtls ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
	if (l->fa < 0 || (!dtls && setsockopt(l->fa, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))))
		return -1;
	if (connect(l->fa, (struct sockaddr *)&srv, sizeof(srv)) != 0 && errno != EINPROGRESS)
		return -1;
	if (getsockname(l->fa, (struct sockaddr *)&ca, &cal) != 0)
		return -1;
	l->a = SSL_new(ms->ctx[l->i]);
	l->b = SSL_new(ms->ctx[l->j]);
	if (!l->a || !l->b)
		return -1;
	int listened = 1;
	BIO_ADDR *peer = NULL;
	if (dtls) {
		/* the member's listening socket becomes this link's socket once the
		 * cookie exchange verified the client; a new one listens for the next */
		l->fb = ms->lfd[l->j][t];
		if (new_listener(ms, l->j, t) != 0)
			return -1;
		BIO *ba = BIO_new_dgram(l->fa, BIO_NOCLOSE),
		    *bb = BIO_new_dgram(l->fb, BIO_NOCLOSE);
		peer = BIO_ADDR_new();
		if (!ba || !bb || !peer) {
			BIO_free(ba);
			BIO_free(bb);
			BIO_ADDR_free(peer);
			return -1;
		}
		if (!BIO_ADDR_rawmake(peer, AF_INET, &srv.sin_addr, sizeof(srv.sin_addr),
				      srv.sin_port)) {
			BIO_ADDR_free(peer);
			return -1;
		}
		BIO_ctrl(ba, BIO_CTRL_DGRAM_SET_CONNECTED, 0, peer);
		SSL_set_bio(l->a, ba, ba);
		SSL_set_bio(l->b, bb, bb);
		SSL_set_options(l->b, SSL_OP_COOKIE_EXCHANGE);
		listened = 0;
	} else {
		l->fb = accept4(ms->lfd[l->j][t], NULL, NULL, SOCK_NONBLOCK);
		if (l->fb < 0 || setsockopt(l->fb, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
		    SSL_set_fd(l->a, l->fa) != 1 || SSL_set_fd(l->b, l->fb) != 1)
			return -1;
	}
	SSL_set_connect_state(l->a);
	SSL_set_accept_state(l->b);
	int da = 0, db = 0, rc = -1;
	double start = bench_now();
	while (!(da && db)) {
		int moved = 0;
		if (!da) {
			int r = SSL_do_handshake(l->a);
			int e = r == 1 ? 0 : SSL_get_error(l->a, r);
			if (r == 1)
				da = moved = 1;
			else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ssl_fail("client handshake", l->i, l->j);
				goto out;
			}
		}
		if (!listened) {
			int r = DTLSv1_listen(l->b, peer);
			if (r < 0) {
				ssl_fail("DTLSv1_listen", l->i, l->j);
				goto out;
			}
			if (r > 0) {
				if (connect(l->fb, (struct sockaddr *)&ca, sizeof(ca)) != 0)
					goto out;
				BIO_ctrl(SSL_get_rbio(l->b), BIO_CTRL_DGRAM_SET_CONNECTED, 0, peer);
				listened = moved = 1;
			}
		} else if (!db) {
			int r = SSL_do_handshake(l->b);
			int e = r == 1 ? 0 : SSL_get_error(l->b, r);
			if (r == 1)
				db = moved = 1;
			else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ssl_fail("server handshake", l->i, l->j);
				goto out;
			}
		}
		if (moved || (da && db))
			continue;
		struct pollfd p[2] = {{.fd = l->fa, .events = POLLIN},
				      {.fd = l->fb, .events = POLLIN}};
		if (poll(p, 2, 50) == 0 && dtls) {
			/* a lost datagram (the loopback drops when a buffer is full) */
			(void)DTLSv1_handle_timeout(l->a);
			if (listened)
				(void)DTLSv1_handle_timeout(l->b);
		}
		if (bench_now() - start > STEP_S) {
			fprintf(stderr, "psc_vs_tls: handshake %zu-%zu stuck\n", l->i, l->j);
			goto out;
		}
	}
	if (SSL_get_verify_result(l->a) != X509_V_OK || SSL_get_verify_result(l->b) != X509_V_OK ||
	    !SSL_get0_peer_certificate(l->a) || !SSL_get0_peer_certificate(l->b) ||
	    SSL_session_reused(l->a) || SSL_session_reused(l->b)) {
		fprintf(stderr, "psc_vs_tls: link %zu-%zu: peer not verified or session reused\n",
			l->i, l->j);
		goto out;
	}
	l->up = 1;
	rc = 0;
out:
	BIO_ADDR_free(peer);
	return rc;
}

static void fill_msg(uint8_t *buf, size_t from, size_t to, int seq)
{
	memset(buf, (int)(seq & 0xff), PVT_MSG_BYTES);
	memcpy(buf, &from, sizeof(from));
	memcpy(buf + 8, &to, sizeof(to));
	memcpy(buf + 16, &seq, sizeof(seq));
}

/* Sends k messages from x (member `from`) to y and reads them there; returns
 * how many arrived intact. TLS is a stream: records are reassembled into
 * 256-byte messages; DTLS: one record = one message. */
static int one_way(mesh *ms, SSL *x, SSL *y, int fy, size_t from, size_t to, int k)
{
	uint8_t out[PVT_MSG_BYTES], in[PVT_MSG_BYTES * 2], want[PVT_MSG_BYTES];
	int sent = 0, got = 0;
	size_t have = 0;
	double last = bench_now();
	while (got < k) {
		int moved = 0;
		if (sent < k && sent - got < WINDOW) {
			fill_msg(out, from, to, sent);
			int r = SSL_write(x, out, PVT_MSG_BYTES);
			if (r == PVT_MSG_BYTES)
				sent++, moved = 1;
			else if (r <= 0 && SSL_get_error(x, r) != SSL_ERROR_WANT_WRITE &&
				 SSL_get_error(x, r) != SSL_ERROR_WANT_READ)
				break;
		}
		int r = SSL_read(y, in + have, (int)(sizeof(in) - have));
		if (r > 0) {
			moved = 1;
			if (ms->kind == PVT_DTLS && r != PVT_MSG_BYTES)
				break;
			have += (size_t)r;
			while (have >= PVT_MSG_BYTES) {
				fill_msg(want, from, to, got);
				if (memcmp(in, want, PVT_MSG_BYTES) != 0)
					return got; /* lost or reordered: stop counting */
				got++;
				memmove(in, in + PVT_MSG_BYTES, have - PVT_MSG_BYTES);
				have -= PVT_MSG_BYTES;
			}
		} else if (SSL_get_error(y, r) != SSL_ERROR_WANT_READ) {
			break;
		}
		if (moved) {
			last = bench_now();
			continue;
		}
		if (sent == k || sent - got >= WINDOW) {
			struct pollfd p = {.fd = fy, .events = POLLIN};
			(void)poll(&p, 1, 20);
		}
		if (bench_now() - last > (ms->kind == PVT_DTLS ? 1.0 : STEP_S))
			break; /* DTLS: a datagram the loopback dropped is not resent */
	}
	return got;
}

typedef struct job {
	mesh *ms;
	mlink *links;
	size_t n;
	int t;
	int op; /* 0 handshake, 1 messages */
} job;

static void *worker(void *arg)
{
	job *jb = arg;
	mesh *ms = jb->ms;
	for (size_t k = (size_t)jb->t; k < jb->n && !atomic_load(&ms->failed); k += N_THREADS) {
		mlink *l = &jb->links[k];
		if (jb->op == 0) {
			if (handshake(ms, l, jb->t) != 0) {
				atomic_store(&ms->failed, 1);
				break;
			}
			if (!atomic_exchange(&ms->first_done, 1)) {
				/* time to the first delivered message: one message on
				 * the first link that is up (not counted below) */
				if (one_way(ms, l->a, l->b, l->fb, l->i, l->j, 1) == 1)
					ms->t_first = bench_now() - ms->t0;
			}
		} else if (l->up) {
			l->got += (uint64_t)one_way(ms, l->a, l->b, l->fb, l->i, l->j, ms->m);
			l->got += (uint64_t)one_way(ms, l->b, l->a, l->fa, l->j, l->i, ms->m);
		}
	}
	return NULL;
}

static int run_jobs(mesh *ms, mlink *links, size_t n, int op)
{
	pthread_t th[N_THREADS];
	job jb[N_THREADS];
	for (int t = 0; t < N_THREADS; t++) {
		jb[t] = (job){.ms = ms, .links = links, .n = n, .t = t, .op = op};
		if (pthread_create(&th[t], NULL, worker, &jb[t]) != 0)
			return -1;
	}
	for (int t = 0; t < N_THREADS; t++)
		pthread_join(th[t], NULL);
	return atomic_load(&ms->failed) ? -1 : 0;
}

static double link_bytes(const mlink *links, size_t n)
{
	double b = 0;
	for (size_t k = 0; k < n; k++) {
		if (links[k].a)
			b += (double)BIO_number_written(SSL_get_wbio(links[k].a));
		if (links[k].b)
			b += (double)BIO_number_written(SSL_get_wbio(links[k].b));
	}
	return b;
}

static void link_close(mlink *l, int notify)
{
	if (notify && l->up) {
		(void)SSL_shutdown(l->a); /* close_notify: the leaver's last records */
		(void)SSL_shutdown(l->b);
	}
	SSL_free(l->a);
	SSL_free(l->b);
	l->a = l->b = NULL;
	if (l->fa >= 0)
		close(l->fa);
	if (l->fb >= 0)
		close(l->fb);
	l->fa = l->fb = -1;
	l->up = 0;
}

int pvt_mesh_run(pvt_kind kind, const pvt_ident *ids, size_t n, int m, const char *ca_file,
		 pvt_fig *out)
{
	memset(out, 0, sizeof(*out));
	mesh *ms = calloc(1, sizeof(*ms));
	size_t s = n < PVT_SAMPLE ? n : PVT_SAMPLE; /* members whose links run */
	size_t n_links = s * (s - 1) / 2, n_join = s - 1;
	mlink *links = calloc(n_links + n_join, sizeof(*links));
	int rc = -1;
	if (!ms || !links)
		goto done;
	if (cookie_idx < 0)
		cookie_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ms->kind = kind;
	ms->m = m;
	if (RAND_bytes(ms->cookie_key, sizeof(ms->cookie_key)) != 1)
		goto done;
	for (size_t k = 0; k < n_links + n_join; k++)
		links[k].fa = links[k].fb = -1;
	for (size_t i = 0; i <= s; i++)
		for (int t = 0; t < N_THREADS; t++)
			ms->lfd[i][t] = -1;
	ms->ctx = calloc(n + 1, sizeof(*ms->ctx));
	if (!ms->ctx)
		goto done;

	/* setup: every member's context (all n), listeners, every link's handshake */
	double c0 = bench_self_cpu();
	ms->t0 = bench_now();
	for (size_t i = 0; i < n; i++) {
		if (!(ms->ctx[i] = member_ctx(ms, &ids[i], ca_file)))
			goto done;
		ms->n_ctx = i + 1;
	}
	for (size_t j = 0; j < s; j++)
		for (int t = 0; t < N_THREADS; t++)
			if (new_listener(ms, j, t) != 0)
				goto done;
	double c1 = bench_self_cpu(), t1 = bench_now();
	size_t k = 0;
	for (size_t i = 0; i < s; i++)
		for (size_t j = i + 1; j < s; j++)
			links[k].i = i, links[k].j = j, k++;
	if (run_jobs(ms, links, n_links, 0) != 0)
		goto done;
	double c2 = bench_self_cpu(), t2 = bench_now();
	out->links_run = n_links;
	out->links_full = n * (n - 1) / 2;
	out->scale = (double)out->links_full / (double)n_links;
	out->hs_cpu = (c2 - c1) * out->scale;
	out->hs_wall = (t2 - t1) * out->scale;
	out->setup_cpu = (c1 - c0) + (c2 - c1) * out->scale;
	out->setup_wall = (t1 - ms->t0) + (t2 - t1) * out->scale;
	out->first_msg = ms->t_first;
	double b_setup = link_bytes(links, n_links);
	out->setup_bytes = b_setup * out->scale;

	/* messages: M each way on every link */
	c0 = bench_self_cpu();
	if (run_jobs(ms, links, n_links, 1) != 0)
		goto done;
	out->msg_cpu = bench_self_cpu() - c0;
	out->msg_bytes = link_bytes(links, n_links) - b_setup;
	for (k = 0; k < n_links; k++)
		out->delivered += links[k].got;
	out->expected = (uint64_t)n_links * 2 * (uint64_t)m;

	/* leave: the last sampled member closes its links (close_notify) */
	size_t leaver = s - 1;
	double bl = 0;
	c0 = bench_self_cpu();
	double t0 = bench_now();
	for (k = 0; k < n_links; k++)
		if (links[k].i == leaver || links[k].j == leaver) {
			double before = link_bytes(&links[k], 1);
			if (links[k].up) {
				(void)SSL_shutdown(links[k].a);
				(void)SSL_shutdown(links[k].b);
			}
			bl += link_bytes(&links[k], 1) - before;
			link_close(&links[k], 0);
		}
	double lscale = (double)(n - 1) / (double)(s - 1);
	out->leave_cpu = (bench_self_cpu() - c0) * lscale;
	out->leave_wall = (bench_now() - t0) * lscale;
	out->leave_bytes = bl * lscale;

	/* join: a new member (ids[n]) handshakes with every remaining member; it
	 * takes the leaver's slot in the listener tables (it is only a client) */
	c0 = bench_self_cpu();
	t0 = bench_now();
	if (!(ms->ctx[n] = member_ctx(ms, &ids[n], ca_file)))
		goto done;
	double cj = bench_self_cpu(), tj = bench_now();
	mlink *jl = links + n_links;
	for (size_t j = 0; j < n_join; j++)
		jl[j].i = n, jl[j].j = j;
	if (run_jobs(ms, jl, n_join, 0) != 0)
		goto done;
	lscale = (double)(n - 1) / (double)n_join;
	out->join_cpu = (cj - c0) + (bench_self_cpu() - cj) * lscale;
	out->join_wall = (tj - t0) + (bench_now() - tj) * lscale;
	out->join_bytes = link_bytes(jl, n_join) * lscale;
	out->ok = 1;
	rc = 0;
done:
	if (links)
		for (k = 0; k < n_links + n_join; k++)
			link_close(&links[k], 0);
	free(links);
	if (ms) {
		for (size_t i = 0; i <= s && i <= PVT_SAMPLE; i++)
			for (int t = 0; t < N_THREADS; t++)
				if (ms->lfd[i][t] >= 0)
					close(ms->lfd[i][t]);
		for (size_t i = 0; ms->ctx && i <= n; i++)
			SSL_CTX_free(ms->ctx[i]);
		free(ms->ctx);
		OPENSSL_cleanse(ms->cookie_key, sizeof(ms->cookie_key));
	}
	free(ms);
	return rc;
}
