/*
 * psc-wire — decode and verify PSC messages for people.
 *
 *   psc-wire decode [--hex] [FILE]         print a message's structure
 *   psc-wire verify --cert PEM [--hex] [FILE]  check its signature with a certificate
 *
 * Reads one RELOAD message (binary, or hex with --hex) from FILE or stdin.
 * Exit codes: 0 ok, 1 signature does not verify, 2 malformed input or usage.
 * Never prints secrets: wrapped secrets are shown only by size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/sha.h>

#include "proto_cert.h"
#include "proto_msg.h"
#include "proto_reload.h"

static const char usage[] =
	"usage: psc-wire decode [--hex] [FILE]\n"
	"       psc-wire verify --cert CERT.pem [--hex] [FILE]\n"
	"\n"
	"Decodes one PSC (RELOAD) message and prints its header, body and signature,\n"
	"or verifies its signature with the public key of CERT.pem.\n"
	"FILE defaults to standard input; --hex accepts a hex dump (whitespace ignored).\n"
	"Exit status: 0 ok, 1 bad signature, 2 malformed input or usage error.\n";

#define WIRE_MAX_INPUT (2u * (1u << 20) + 1)

static uint8_t *read_input(const char *path, int hex, size_t *len)
{
	FILE *f = path ? fopen(path, "rb") : stdin;
	if (!f) {
		fprintf(stderr, "psc-wire: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	uint8_t *buf = malloc(WIRE_MAX_INPUT);
	size_t n = buf ? fread(buf, 1, WIRE_MAX_INPUT, f) : 0;
	if (path)
		fclose(f);
	if (!buf)
		return NULL;
	if (n == WIRE_MAX_INPUT) {
		fprintf(stderr, "psc-wire: %s: larger than %u bytes, the message cap\n",
			path ? path : "stdin", PROTO_MAX_MESSAGE);
		free(buf);
		return NULL;
	}
	if (hex) {
		size_t o = 0;
		int hi = -1;
		for (size_t i = 0; i < n; i++) {
			char c = (char)buf[i];
			int v = c >= '0' && c <= '9' ? c - '0'
				: c >= 'a' && c <= 'f' ? c - 'a' + 10
				: c >= 'A' && c <= 'F' ? c - 'A' + 10
						       : -1;
			if (v < 0) {
				if (c == ' ' || c == '\n' || c == '\t' || c == '\r')
					continue;
				fprintf(stderr, "psc-wire: %s: byte %zu is not a hex digit\n",
					path ? path : "stdin", i);
				free(buf);
				return NULL;
			}
			if (hi < 0) {
				hi = v;
			} else {
				buf[o++] = (uint8_t)(hi << 4 | v);
				hi = -1;
			}
		}
		if (hi >= 0) {
			fprintf(stderr, "psc-wire: odd number of hex digits\n");
			free(buf);
			return NULL;
		}
		n = o;
	}
	*len = n;
	return buf;
}

static void hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static void id(const char *label, const uint8_t v[16])
{
	printf("    %-14s ", label);
	hex(v, 16);
	printf("\n");
}

static void text(const char *label, proto_bytes b)
{
	printf("    %-14s \"", label);
	for (size_t i = 0; i < b.len; i++)
		putchar(b.p[i] >= 0x20 && b.p[i] < 0x7f && b.p[i] != '"' ? b.p[i] : '?');
	printf("\"\n");
}

static void timestamp(uint64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char buf[64] = "?";
	if (gmtime_r(&s, &tm))
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("    %-14s %llu (%s.%03lluZ)\n", "timestamp", (unsigned long long)ms, buf,
	       (unsigned long long)(ms % 1000));
}

static const char *wrap_name(uint8_t a)
{
	switch (a) {
	case PSC_WRAP_RSA_OAEP_SHA1: return "RSA-OAEP-SHA1";
	case PSC_WRAP_RSA_OAEP_SHA256: return "RSA-OAEP-SHA256";
	case PSC_WRAP_ECDH_P256_AESPRF_KWP: return "ECDH-P256-AESPRF-KWP";
	default: return "?";
	}
}

static void material(const proto_material *m)
{
	id("psc_id", m->psc_id);
	printf("    %-14s %llu\n", "epoch", (unsigned long long)m->epoch);
	text("name", m->name);
	id("owner", m->owner);
	printf("    %-14s 0x%04x   flags 0x%02x%s   grace %u ms\n", "suite", m->suite, m->flags,
	       m->flags & PSC_FLAG_SENDER_SIGNATURES ? " (sender signatures)" : "", m->grace_ms);
	printf("    %-14s %s, ephemeral %zu bytes, wrapped secret %zu bytes\n", "wrap",
	       wrap_name(m->wrap_alg), m->ephemeral.len, m->wrapped.len);
	if (!m->members_full) {
		printf("    %-14s unchanged\n", "members");
		return;
	}
	printf("    %-14s %zu\n", "members", m->members.n);
	proto_iter it;
	proto_member mem;
	proto_iter_init(&it, m->members.raw, m->members.raw_len);
	while (proto_next_member(&it, &mem)) {
		printf("      ");
		hex(mem.node_id, 16);
		printf(" %.*s\n", (int)mem.endpoint.len, (const char *)mem.endpoint.p);
	}
}

static void outcome(const char *label, const proto_outcome *o)
{
	printf("    %-14s %s", label,
	       o->status == PSC_STATUS_OK ? "ok" : o->status == PSC_STATUS_NOT_REQUESTED
							  ? "not requested"
							  : proto_reload_error_name(o->status));
	if (o->status == PSC_STATUS_OK) {
		printf(", psc ");
		hex(o->psc_id, 16);
	}
	printf("\n");
}

static void params(const proto_establish_params *p)
{
	text("name", p->name);
	printf("    %-14s refresh %u s, max members %u, flags 0x%02x\n", "limits", p->refresh_s,
	       p->max_members, p->flags);
	proto_iter it;
	proto_label l;
	proto_iter_init(&it, p->labels.raw, p->labels.raw_len);
	while (proto_next_label(&it, &l))
		printf("    %-14s %.*s=%.*s\n", "label", (int)l.key.len, (const char *)l.key.p,
		       (int)l.value.len, (const char *)l.value.p);
	uint8_t n[16];
	proto_iter_init(&it, p->members.raw, p->members.raw_len);
	while (proto_next_node_id(&it, n))
		id("member", n);
}

static void body(const psc_body *b)
{
	uint64_t ts = proto_body_timestamp(b);
	if (proto_msg_is_request(b->code))
		timestamp(ts);
	proto_iter it;
	switch (b->code) {
	case PSC_MSG_INITIALIZE_REQ: {
		const psc_initialize_req *q = &b->u.initialize_req;
		id("node_id", q->node_id);
		text("endpoint", q->endpoint);
		printf("    %-14s %zu suites, %zu wrap algorithms, flags 0x%02x\n", "offers",
		       q->suites.n, q->wrap_algs.n, q->flags);
		if (q->flags & PSC_INIT_JOIN)
			id("join", q->join_psc);
		if (q->flags & PSC_INIT_ESTABLISH)
			params(&q->establish);
		break;
	}
	case PSC_MSG_INITIALIZE_ANS: {
		const psc_initialize_ans *a = &b->u.initialize_ans;
		printf("    %-14s suite 0x%04x, wrap %s\n", "chosen", a->suite,
		       wrap_name(a->wrap_alg));
		outcome("join", &a->join);
		outcome("establish", &a->establish);
		proto_material m;
		proto_iter_init(&it, a->memberships.raw, a->memberships.raw_len);
		while (proto_next_material(&it, &m))
			material(&m);
		break;
	}
	case PSC_MSG_ESTABLISH_REQ: params(&b->u.establish_req.params); break;
	case PSC_MSG_ESTABLISH_ANS: material(&b->u.establish_ans.material); break;
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ: id("psc_id", b->u.psc_req.psc_id); break;
	case PSC_MSG_JOIN_ANS: material(&b->u.join_ans.material); break;
	case PSC_MSG_QUERY_REQ:
		id("psc_id", b->u.query_req.psc_id);
		id("requester", b->u.query_req.requester);
		text("subject", b->u.query_req.requester_subject);
		printf("    %-14s %u ms\n", "timeout", b->u.query_req.timeout_ms);
		break;
	case PSC_MSG_QUERY_ANS:
	case PSC_MSG_INVITE_ANS:
		printf("    %-14s %s\n", "decision", b->u.decision_ans.accept ? "accept" : "refuse");
		break;
	case PSC_MSG_INVITE_INIT_REQ:
		id("psc_id", b->u.invite_init_req.psc_id);
		id("invitee", b->u.invite_init_req.invitee);
		break;
	case PSC_MSG_INVITE_INIT_ANS:
		printf("    %-14s %u, epoch %llu\n", "outcome", b->u.invite_init_ans.outcome,
		       (unsigned long long)b->u.invite_init_ans.epoch);
		break;
	case PSC_MSG_INVITE_REQ:
		id("psc_id", b->u.invite_req.psc_id);
		text("name", b->u.invite_req.psc_name);
		id("inviter", b->u.invite_req.inviter);
		break;
	case PSC_MSG_REFRESH_REQ:
		printf("    %-14s %u\n", "reason", b->u.refresh_req.reason);
		if (b->u.refresh_req.reason == PSC_REFRESH_DESTROYED ||
		    b->u.refresh_req.reason == PSC_REFRESH_REMOVED) {
			id("psc_id", b->u.refresh_req.psc_id);
			printf("    %-14s %llu\n", "epoch", (unsigned long long)b->u.refresh_req.epoch);
		} else {
			material(&b->u.refresh_req.material);
		}
		break;
	case PSC_MSG_REFRESH_ANS:
		id("psc_id", b->u.refresh_ans.psc_id);
		printf("    %-14s %llu\n", "applied epoch", (unsigned long long)b->u.refresh_ans.epoch);
		break;
	case PSC_MSG_DEPARTURE_REQ:
		id("psc_id", b->u.departure_req.psc_id);
		id("suspect", b->u.departure_req.suspect);
		break;
	case PSC_MSG_DEPARTURE_ANS:
		printf("    %-14s %s\n", "outcome",
		       b->u.departure_ans.outcome == PSC_DEPARTURE_ALIVE ? "alive" : "evicted");
		break;
	case PSC_MSG_LIVENESS_REQ:
	case PSC_MSG_LIVENESS_ANS:
		printf("    %-14s %016llx\n", "challenge",
		       (unsigned long long)b->u.liveness.challenge);
		break;
	case PSC_MSG_LOOKUP_REQ: text("name", b->u.lookup_req.name); break;
	case PSC_MSG_LOOKUP_ANS:
		id("psc_id", b->u.lookup_ans.psc_id);
		id("owner", b->u.lookup_ans.owner);
		printf("    %-14s %u\n", "members", b->u.lookup_ans.member_count);
		break;
	case PSC_MSG_CATCHUP_REQ: printf("    %-14s %zu PSCs\n", "held", b->u.catchup_req.held.n); break;
	case PSC_MSG_CATCHUP_ANS: {
		proto_catchup_entry e;
		proto_iter_init(&it, b->u.catchup_ans.entries.raw, b->u.catchup_ans.entries.raw_len);
		while (proto_next_catchup(&it, &e)) {
			printf("    %-14s status %u\n", "entry", e.status);
			if (e.status == PSC_CATCHUP_NEWER)
				material(&e.material);
			else
				id("psc_id", e.psc_id);
		}
		break;
	}
	default: break;
	}
}

static int decode(const uint8_t *buf, size_t len, proto_message *m)
{
	psc_err e;
	if (proto_message_decode(buf, len, m, &e) != PSC_OK) {
		fprintf(stderr, "psc-wire: malformed message: %s (%s)\n", psc_err_text(&e),
			psc_rc_name(e.rc));
		return 2;
	}
	return 0;
}

static int cmd_decode(const uint8_t *buf, size_t len)
{
	proto_message m;
	int rc = decode(buf, len, &m);
	if (rc)
		return rc;
	printf("RELOAD message, %zu bytes\n", len);
	printf("  overlay 0x%08x  transaction %016llx  ttl %u\n", m.overlay,
	       (unsigned long long)m.transaction_id, m.ttl);
	if (m.has_dest_node) {
		printf("  destination ");
		hex(m.dest_node, 16);
		printf("\n");
	}
	const char *name = m.code == PSC_MSG_ERROR ? "ErrorResponse" : proto_msg_name(m.code);
	printf("  code 0x%04x %s%s, body %zu bytes, %zu extensions\n", m.code,
	       name ? name : "(not a PSC message)",
	       m.code == PSC_MSG_ERROR ? "" : (m.code & 1) ? " request" : " answer", m.body_len,
	       m.n_ext);
	psc_err e;
	if (m.code == PSC_MSG_ERROR) {
		proto_error pe;
		if (proto_error_decode(m.body, m.body_len, &pe, &e) != PSC_OK) {
			fprintf(stderr, "psc-wire: malformed ErrorResponse: %s\n", psc_err_text(&e));
			return 2;
		}
		printf("    %-14s %u %s, reason %u: %.*s\n", "error", pe.error_code,
		       proto_reload_error_name(pe.error_code), pe.psc_reason, (int)pe.text_len,
		       (const char *)pe.text);
	} else if (name) {
		psc_body b;
		if (proto_body_decode(m.code, m.body, m.body_len, &b, &e) != PSC_OK) {
			fprintf(stderr, "psc-wire: malformed body: %s\n", psc_err_text(&e));
			return 2;
		}
		body(&b);
	}
	printf("  signature: hash %u, algorithm %u%s, signer certificate sha256 ", m.sig_hash,
	       m.sig_alg, m.sig_alg >= PROTO_SIG_BATCH_ECDSA ? " (batch)" : "");
	hex(m.identity_hash, m.identity_hash_len);
	printf("\n  certificates: %zu\n", m.n_certs);
	for (size_t i = 0; i < m.n_certs; i++) {
		X509 *x = NULL;
		if (proto_cert_parse(m.cert[i], m.cert_len[i], &x, &e) != PSC_OK) {
			printf("    [%zu] unparsable: %s\n", i, psc_err_text(&e));
			continue;
		}
		char subject[256];
		X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
		uint8_t nid[16];
		printf("    [%zu] %s", i, subject);
		if (proto_cert_node_id(x, NULL, nid, NULL) == PSC_OK) {
			printf(" node ");
			hex(nid, 16);
		}
		printf("\n");
		X509_free(x);
	}
	return 0;
}

static int cmd_verify(const uint8_t *buf, size_t len, const char *cert_path)
{
	proto_message m;
	int rc = decode(buf, len, &m);
	if (rc)
		return rc;
	FILE *f = fopen(cert_path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!x) {
		fprintf(stderr, "psc-wire: %s: not a PEM certificate\n", cert_path);
		return 2;
	}
	uint8_t *der = NULL;
	int der_len = i2d_X509(x, &der);
	psc_err e;
	rc = 0;
	if (der_len <= 0 || !proto_message_signed_by(&m, der, (size_t)der_len)) {
		printf("signer identity does not name %s\n", cert_path);
		rc = 1;
	} else if (proto_message_verify(&m, X509_get0_pubkey(x), &e) != PSC_OK) {
		printf("signature does NOT verify: %s\n", psc_err_text(&e));
		rc = 1;
	} else {
		printf("signature verifies with %s\n", cert_path);
	}
	OPENSSL_free(der);
	X509_free(x);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1], *file = NULL, *cert = NULL;
	int hexin = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--hex") == 0)
			hexin = 1;
		else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc)
			cert = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "psc-wire: unknown option %s\n%s", argv[i], usage);
			return 2;
		} else
			file = argv[i];
	}
	if (strcmp(cmd, "decode") != 0 && strcmp(cmd, "verify") != 0) {
		fprintf(stderr, "psc-wire: unknown command '%s'\n%s", cmd, usage);
		return 2;
	}
	if (strcmp(cmd, "verify") == 0 && !cert) {
		fprintf(stderr, "psc-wire: verify needs --cert CERT.pem\n");
		return 2;
	}
	size_t len = 0;
	uint8_t *buf = read_input(file, hexin, &len);
	if (!buf)
		return 2;
	int rc = strcmp(cmd, "decode") == 0 ? cmd_decode(buf, len) : cmd_verify(buf, len, cert);
	free(buf);
	return rc;
}
