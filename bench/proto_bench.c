/*
 * proto_bench: cost of the wire codec around its signatures.
 * For a typical PscJoin request and a PscRefresh carrying 16 members, measures
 * encode+sign and decode+verify messages/s with an ECDSA P-256 key, beside
 * OpenSSL's raw EVP_DigestSign / EVP_DigestVerify rate over the same number of
 * bytes measured in the same run. The codec's own overhead is the difference.
 * Also: one rekey of N members signed message by message vs one batch signature.
 * Usage: proto_bench [--doc]   (--doc rewrites its section of docs/benchmarks.md)
 * Prints figures; never passes or fails on time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ec.h>

#include "bench_util.h"
#include "proto_msg.h"
#include "proto_reload.h"
#include "proto_samples.h"

#define MIN_SECONDS 0.5
#define ROUNDS 3 /* interleaved rounds; the best of each is kept (other load only slows) */

struct ctx {
	EVP_PKEY *key;
	proto_signer signer;
	uint8_t *body;
	size_t body_len;
	uint16_t code;
	uint8_t *msg;
	size_t msg_len;
	uint8_t sig[256];
	size_t sig_len;
	psc_body sample; /* built once: the timed operation is encode + sign only */
};

typedef void (*op_fn)(struct ctx *c);

static double rate(op_fn fn, struct ctx *c)
{
	unsigned long n = 0;
	double t0 = bench_now(), t;
	do {
		for (int i = 0; i < 64; i++)
			fn(c);
		n += 64;
		t = bench_now() - t0;
	} while (t < MIN_SECONDS);
	return (double)n / t;
}

static void encode_sign(struct ctx *c)
{
	uint8_t *body, *msg;
	size_t body_len, msg_len;
	proto_envelope env = {.overlay = 1, .transaction_id = 2, .code = c->code};
	if (proto_body_encode(&c->sample, &body, &body_len, NULL) != PSC_OK ||
	    proto_message_build(&env, body, body_len, &c->signer, &msg, &msg_len, NULL) != PSC_OK)
		abort();
	free(body);
	free(msg);
}

static void decode_verify(struct ctx *c)
{
	proto_message m;
	psc_body b;
	if (proto_message_decode(c->msg, c->msg_len, &m, NULL) != PSC_OK ||
	    proto_message_verify(&m, c->key, NULL) != PSC_OK ||
	    proto_body_decode(m.code, m.body, m.body_len, &b, NULL) != PSC_OK)
		abort();
}

/* The reference: the same signature over the same number of bytes, nothing else. */
static void raw_sign(struct ctx *c)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	uint8_t sig[256]; /* scratch: c->sig holds the signature raw_verify checks */
	size_t len = sizeof(sig);
	if (EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, c->key) != 1 ||
	    EVP_DigestSign(m, sig, &len, c->msg, c->msg_len) != 1)
		abort();
	EVP_MD_CTX_free(m);
}

static void raw_verify(struct ctx *c)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, c->key) != 1 ||
	    EVP_DigestVerify(m, c->sig, c->sig_len, c->msg, c->msg_len) != 1)
		abort();
	EVP_MD_CTX_free(m);
}

static size_t rekey_n;
static uint8_t **rekey_bodies;
static size_t *rekey_lens;
static proto_envelope *rekey_envs;

static void rekey_individual(struct ctx *c)
{
	for (size_t i = 0; i < rekey_n; i++) {
		uint8_t *msg;
		size_t len;
		if (proto_message_build(&rekey_envs[i], rekey_bodies[i], rekey_lens[i], &c->signer,
					&msg, &len, NULL) != PSC_OK)
			abort();
		free(msg);
	}
}

static void rekey_batch(struct ctx *c)
{
	uint8_t **outs = malloc(rekey_n * sizeof(*outs));
	size_t *lens = malloc(rekey_n * sizeof(*lens));
	if (proto_message_build_batch(rekey_envs, (const uint8_t *const *)rekey_bodies, rekey_lens,
				      rekey_n, &c->signer, outs, lens, NULL) != PSC_OK)
		abort();
	for (size_t i = 0; i < rekey_n; i++)
		free(outs[i]);
	free(outs);
	free(lens);
}

static void setup_rekey(size_t n)
{
	rekey_n = n;
	rekey_bodies = calloc(n, sizeof(*rekey_bodies));
	rekey_lens = calloc(n, sizeof(*rekey_lens));
	rekey_envs = calloc(n, sizeof(*rekey_envs));
	psc_body b;
	sample_body(PSC_MSG_REFRESH_REQ, &b);
	for (size_t i = 0; i < n; i++) {
		b.u.refresh_req.material.epoch = i + 1;
		if (proto_body_encode(&b, &rekey_bodies[i], &rekey_lens[i], NULL) != PSC_OK)
			abort();
		rekey_envs[i] = (proto_envelope){.overlay = 1, .transaction_id = i,
						 .code = PSC_MSG_REFRESH_REQ};
	}
}

static void free_rekey(void)
{
	for (size_t i = 0; i < rekey_n; i++)
		free(rekey_bodies[i]);
	free(rekey_bodies);
	free(rekey_lens);
	free(rekey_envs);
}

int main(int argc, char **argv)
{
	int doc = argc > 1 && strcmp(argv[1], "--doc") == 0;
	sample_signer vec;
	if (sample_signer_load(&vec) != 0)
		return 2;
	struct ctx c = {0};
	c.key = EVP_EC_gen("P-256");
	c.signer = vec.signer; /* identity bytes only; the key signs */
	c.signer.key = c.key;
	c.signer.omit_certificates = 1;
	char cpu[256];
	bench_cpu_model(cpu, sizeof(cpu));
	char out[8192];
	size_t o = 0;
	o += (size_t)snprintf(out + o, sizeof(out) - o,
		"## Wire codec (`bench/proto_bench`)\n\n"
		"Machine: %s, %ld cores. Key: ECDSA P-256 (OpenSSL %s). Each figure is "
		"messages/s on one core, best of %d interleaved rounds of at least %.1f s; the reference is OpenSSL's "
		"raw EVP_DigestSign/EVP_DigestVerify over the same number of bytes, measured "
		"in the same run. Overhead = extra time per message relative to the raw "
		"signature operation.\n\n"
		"| message | bytes | encode+sign /s | raw sign /s | overhead | decode+verify /s | raw verify /s | overhead |\n"
		"|---|---|---|---|---|---|---|---|\n",
		cpu, sysconf(_SC_NPROCESSORS_ONLN), OpenSSL_version(OPENSSL_VERSION_STRING), ROUNDS,
		MIN_SECONDS);
	const uint16_t codes[] = {PSC_MSG_JOIN_REQ, PSC_MSG_REFRESH_REQ};
	const char *names[] = {"PscJoin request", "PscRefresh, 16 members"};
	for (int k = 0; k < 2; k++) {
		c.code = codes[k];
		sample_body(c.code, &c.sample);
		if (c.code == PSC_MSG_REFRESH_REQ)
			sample_refresh(16, &c.sample);
		uint8_t *body;
		size_t body_len;
		proto_envelope env = {.overlay = 1, .transaction_id = 2, .code = c.code};
		if (proto_body_encode(&c.sample, &body, &body_len, NULL) != PSC_OK ||
		    proto_message_build(&env, body, body_len, &c.signer, &c.msg, &c.msg_len,
					NULL) != PSC_OK)
			return 2;
		free(body);
		c.sig_len = sizeof(c.sig);
		EVP_MD_CTX *m = EVP_MD_CTX_new();
		EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, c.key);
		EVP_DigestSign(m, c.sig, &c.sig_len, c.msg, c.msg_len);
		EVP_MD_CTX_free(m);
		double es = 0, rs = 0, dv = 0, rv = 0;
		for (int r = 0; r < ROUNDS; r++) {
			es = fmax(es, rate(encode_sign, &c));
			rs = fmax(rs, rate(raw_sign, &c));
			dv = fmax(dv, rate(decode_verify, &c));
			rv = fmax(rv, rate(raw_verify, &c));
		}
		double os = (1 / es - 1 / rs) / (1 / rs) * 100, ov = (1 / dv - 1 / rv) / (1 / rv) * 100;
		printf("%-24s %5zu B  encode+sign %8.0f/s (raw %8.0f/s, overhead %5.1f%%)  "
		       "decode+verify %8.0f/s (raw %8.0f/s, overhead %5.1f%%)\n",
		       names[k], c.msg_len, es, rs, os, dv, rv, ov);
		o += (size_t)snprintf(out + o, sizeof(out) - o,
				      "| %s | %zu | %.0f | %.0f | %.1f%% | %.0f | %.0f | %.1f%% |\n",
				      names[k], c.msg_len, es, rs, os, dv, rv, ov);
		free(c.msg);
	}
	o += (size_t)snprintf(out + o, sizeof(out) - o,
		"\nSigning one rekey's Refreshes (one message per member): each message signed "
		"on its own vs one batch signature over the Merkle root (docs/protocol.md §4.2). "
		"Figures are rekeys/s and the signatures each rekey costs.\n\n"
		"| members | individually signed rekeys/s | signatures | batch-signed rekeys/s | signatures | speed-up |\n"
		"|---|---|---|---|---|---|\n");
	const size_t sizes[] = {16, 256};
	for (int k = 0; k < 2; k++) {
		setup_rekey(sizes[k]);
		double ind = 0, bat = 0;
		for (int r = 0; r < ROUNDS; r++) {
			ind = fmax(ind, rate(rekey_individual, &c));
			bat = fmax(bat, rate(rekey_batch, &c));
		}
		printf("rekey of %4zu members: individually %7.1f/s (%zu signatures), batch %7.1f/s "
		       "(1 signature), x%.1f\n", sizes[k], ind, sizes[k], bat, bat / ind);
		o += (size_t)snprintf(out + o, sizeof(out) - o,
				      "| %zu | %.1f | %zu | %.1f | 1 | x%.1f |\n", sizes[k], ind,
				      sizes[k], bat, bat / ind);
		free_rekey();
	}
	o += (size_t)snprintf(out + o, sizeof(out) - o,
		"\nCommand: `build-rel/bench/proto_bench --doc` (RelWithDebInfo)\n");
	if (doc) {
		char tmp[] = "/tmp/proto_bench-XXXXXX";
		int fd = mkstemp(tmp);
		if (fd < 0 || write(fd, out, o) != (ssize_t)o)
			return 2;
		close(fd);
		char cmd[8192];
		snprintf(cmd, sizeof(cmd), "%s/bench/update-doc.sh proto_bench %s", PSC_SOURCE_DIR, tmp);
		int rc = system(cmd);
		unlink(tmp);
		if (rc != 0)
			return 2;
		printf("wrote docs/benchmarks.md section proto_bench\n");
	}
	EVP_PKEY_free(c.key);
	sample_signer_free(&vec);
	return 0;
}
