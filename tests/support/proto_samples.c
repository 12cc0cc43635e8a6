#include "proto_samples.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "proto_samples_keys.inc"

const uint16_t sample_codes[] = {
	PSC_MSG_INITIALIZE_REQ, PSC_MSG_INITIALIZE_ANS, PSC_MSG_ESTABLISH_REQ,
	PSC_MSG_ESTABLISH_ANS,  PSC_MSG_JOIN_REQ,       PSC_MSG_JOIN_ANS,
	PSC_MSG_QUERY_REQ,      PSC_MSG_QUERY_ANS,      PSC_MSG_INVITE_INIT_REQ,
	PSC_MSG_INVITE_INIT_ANS, PSC_MSG_INVITE_REQ,    PSC_MSG_INVITE_ANS,
	PSC_MSG_REFRESH_REQ,    PSC_MSG_REFRESH_ANS,    PSC_MSG_LEAVE_REQ,
	PSC_MSG_LEAVE_ANS,      PSC_MSG_DEPARTURE_REQ,  PSC_MSG_DEPARTURE_ANS,
	PSC_MSG_LIVENESS_REQ,   PSC_MSG_LIVENESS_ANS,   PSC_MSG_DESTROY_REQ,
	PSC_MSG_DESTROY_ANS,    PSC_MSG_LOOKUP_REQ,     PSC_MSG_LOOKUP_ANS,
	PSC_MSG_CATCHUP_REQ,    PSC_MSG_CATCHUP_ANS,
};
const size_t sample_count = sizeof(sample_codes) / sizeof(sample_codes[0]);

#define TS 1795651200000ull /* 2026-11-26T00:00:00Z in ms */
#define B(s) ((proto_bytes){(const uint8_t *)(s), sizeof(s) - 1})

static const uint8_t PSC_A[16] = {0x9f, 0x1c, 0x2b, 0x3a, 0x49, 0x58, 0x67, 0x76,
				  0x85, 0x94, 0xa3, 0xb2, 0xc1, 0xd0, 0xef, 0x01};
static const uint8_t NODE_1[16] = {0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t NODE_2[16] = {0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
static const uint8_t NODE_3[16] = {0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3};

/* 40 bytes: the size of an RFC 5649 wrap of a 32-byte secret. Not a real wrap. */
static const uint8_t WRAPPED[40] = {
	0xa6, 0x59, 0x59, 0xa6, 0x00, 0x00, 0x00, 0x20, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
	0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x10, 0x20, 0x30, 0x40,
	0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x01};
/* An uncompressed P-256 point (the generator G). */
static const uint8_t EPHEMERAL[65] = {
	0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63,
	0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39,
	0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e,
	0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e,
	0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5};

static const uint16_t SUITES[] = {PSC_SUITE_AES256GCM_HKDF_SHA256};
static const uint8_t WRAPS[] = {PSC_WRAP_ECDH_P256_AESPRF_KWP, PSC_WRAP_RSA_OAEP_SHA1};
static const proto_label LABELS[] = {{B("team"), B("ops")}, {B("tier"), B("gold")}};
static const proto_node_id_t INITIAL[] = {
	{0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2},
	{0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3},
};
static const proto_member MEMBERS[] = {
	{{0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, B("tcp://127.0.0.1:7001")},
	{{0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, B("tcp://127.0.0.1:7002")},
	{{0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}, B("")},
};
static const proto_held HELD[] = {
	{{0x9f, 0x1c, 0x2b, 0x3a, 0x49, 0x58, 0x67, 0x76, 0x85, 0x94, 0xa3, 0xb2, 0xc1, 0xd0,
	  0xef, 0x01}, 6},
};

static void sample_material(proto_material *m, uint64_t epoch, int full)
{
	memset(m, 0, sizeof(*m));
	memcpy(m->psc_id, PSC_A, 16);
	m->epoch = epoch;
	m->name = B("ops-room");
	memcpy(m->owner, NODE_1, 16);
	m->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	m->flags = PSC_FLAG_SENDER_SIGNATURES;
	m->grace_ms = full ? 0 : 30000;
	m->wrap_alg = PSC_WRAP_ECDH_P256_AESPRF_KWP;
	m->ephemeral = (proto_bytes){EPHEMERAL, sizeof(EPHEMERAL)};
	m->wrapped = (proto_bytes){WRAPPED, sizeof(WRAPPED)};
	m->members_full = full ? 1 : 0;
	if (full) {
		m->members.items = MEMBERS;
		m->members.n = 3;
	}
}

static void sample_params(proto_establish_params *p)
{
	p->name = B("ops-room");
	p->labels.items = LABELS;
	p->labels.n = 2;
	p->members.items = INITIAL;
	p->members.n = 2;
	p->refresh_s = 3600;
	p->max_members = 64;
	p->flags = PSC_FLAG_SENDER_SIGNATURES;
}

uint64_t sample_txid(uint16_t code)
{
	return 0x7073630000000000ull | code;
}

void sample_body(uint16_t code, psc_body *b)
{
	static proto_material MATS[1];
	static proto_catchup_entry ENTRIES[2];
	memset(b, 0, sizeof(*b));
	b->code = code;
	switch (code) {
	case PSC_MSG_INITIALIZE_REQ: {
		psc_initialize_req *q = &b->u.initialize_req;
		q->timestamp = TS;
		memcpy(q->node_id, NODE_1, 16);
		q->suites.items = SUITES;
		q->suites.n = 1;
		q->wrap_algs.items = WRAPS;
		q->wrap_algs.n = 2;
		q->endpoint = B("tcp://127.0.0.1:7001");
		q->flags = PSC_INIT_ESTABLISH;
		sample_params(&q->establish);
		break;
	}
	case PSC_MSG_INITIALIZE_ANS: {
		psc_initialize_ans *a = &b->u.initialize_ans;
		a->kms_time = TS + 3;
		a->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
		a->wrap_alg = PSC_WRAP_ECDH_P256_AESPRF_KWP;
		a->join.status = PSC_STATUS_NOT_REQUESTED;
		a->establish.status = PSC_STATUS_OK;
		memcpy(a->establish.psc_id, PSC_A, 16);
		sample_material(&MATS[0], 1, 1);
		a->memberships.items = MATS;
		a->memberships.n = 1;
		break;
	}
	case PSC_MSG_ESTABLISH_REQ:
		b->u.establish_req.timestamp = TS;
		sample_params(&b->u.establish_req.params);
		break;
	case PSC_MSG_ESTABLISH_ANS:
		sample_material(&b->u.establish_ans.material, 1, 1);
		b->u.establish_ans.pending.items = &INITIAL[1];
		b->u.establish_ans.pending.n = 1;
		break;
	case PSC_MSG_JOIN_REQ:
	case PSC_MSG_LEAVE_REQ:
	case PSC_MSG_DESTROY_REQ:
		b->u.psc_req.timestamp = TS;
		memcpy(b->u.psc_req.psc_id, PSC_A, 16);
		break;
	case PSC_MSG_JOIN_ANS:
		sample_material(&b->u.join_ans.material, 2, 1);
		break;
	case PSC_MSG_QUERY_REQ:
		b->u.query_req.timestamp = TS;
		memcpy(b->u.query_req.psc_id, PSC_A, 16);
		memcpy(b->u.query_req.requester, NODE_3, 16);
		b->u.query_req.requester_subject = B("CN=peer3,OU=peers,O=PSC Test");
		b->u.query_req.timeout_ms = 10000;
		break;
	case PSC_MSG_QUERY_ANS:
	case PSC_MSG_INVITE_ANS:
		b->u.decision_ans.accept = 1;
		break;
	case PSC_MSG_INVITE_INIT_REQ:
		b->u.invite_init_req.timestamp = TS;
		memcpy(b->u.invite_init_req.psc_id, PSC_A, 16);
		memcpy(b->u.invite_init_req.invitee, NODE_3, 16);
		break;
	case PSC_MSG_INVITE_INIT_ANS:
		b->u.invite_init_ans.outcome = PSC_INVITE_ACCEPTED;
		b->u.invite_init_ans.epoch = 3;
		break;
	case PSC_MSG_INVITE_REQ:
		b->u.invite_req.timestamp = TS;
		memcpy(b->u.invite_req.psc_id, PSC_A, 16);
		b->u.invite_req.psc_name = B("ops-room");
		memcpy(b->u.invite_req.inviter, NODE_1, 16);
		b->u.invite_req.timeout_ms = 30000;
		break;
	case PSC_MSG_REFRESH_REQ:
		b->u.refresh_req.timestamp = TS;
		b->u.refresh_req.reason = PSC_REFRESH_TIMER;
		sample_material(&b->u.refresh_req.material, 4, 0);
		memcpy(b->u.refresh_req.psc_id, PSC_A, 16);
		b->u.refresh_req.epoch = 4;
		break;
	case PSC_MSG_REFRESH_ANS:
		memcpy(b->u.refresh_ans.psc_id, PSC_A, 16);
		b->u.refresh_ans.epoch = 4;
		break;
	case PSC_MSG_LEAVE_ANS:
	case PSC_MSG_DESTROY_ANS:
		break;
	case PSC_MSG_DEPARTURE_REQ:
		b->u.departure_req.timestamp = TS;
		memcpy(b->u.departure_req.psc_id, PSC_A, 16);
		memcpy(b->u.departure_req.suspect, NODE_2, 16);
		break;
	case PSC_MSG_DEPARTURE_ANS:
		b->u.departure_ans.outcome = PSC_DEPARTURE_EVICTED;
		break;
	case PSC_MSG_LIVENESS_REQ:
		b->u.liveness.timestamp = TS;
		b->u.liveness.challenge = 0x0123456789abcdefull;
		break;
	case PSC_MSG_LIVENESS_ANS:
		b->u.liveness.timestamp = TS + 1;
		b->u.liveness.challenge = 0x0123456789abcdefull;
		break;
	case PSC_MSG_LOOKUP_REQ:
		b->u.lookup_req.timestamp = TS;
		b->u.lookup_req.name = B("ops-room");
		break;
	case PSC_MSG_LOOKUP_ANS:
		memcpy(b->u.lookup_ans.psc_id, PSC_A, 16);
		memcpy(b->u.lookup_ans.owner, NODE_1, 16);
		b->u.lookup_ans.member_count = 3;
		break;
	case PSC_MSG_CATCHUP_REQ:
		b->u.catchup_req.timestamp = TS;
		b->u.catchup_req.held.items = HELD;
		b->u.catchup_req.held.n = 1;
		break;
	case PSC_MSG_CATCHUP_ANS:
		memset(ENTRIES, 0, sizeof(ENTRIES));
		ENTRIES[0].status = PSC_CATCHUP_NEWER;
		sample_material(&ENTRIES[0].material, 7, 1);
		ENTRIES[1].status = PSC_CATCHUP_DESTROYED;
		memset(ENTRIES[1].psc_id, 0x5a, 16);
		ENTRIES[1].epoch = 12;
		b->u.catchup_ans.entries.items = ENTRIES;
		b->u.catchup_ans.entries.n = 2;
		break;
	default:
		break;
	}
}

void sample_refresh(size_t n, psc_body *b)
{
	static proto_member many[1024];
	static char endpoints[1024][32];
	if (n > 1024)
		n = 1024;
	for (size_t i = 0; i < n; i++) {
		memcpy(many[i].node_id, NODE_1, 16);
		many[i].node_id[14] = (uint8_t)(i >> 8);
		many[i].node_id[15] = (uint8_t)i;
		int len = snprintf(endpoints[i], sizeof(endpoints[i]), "tcp://127.0.0.1:%zu",
				   20000 + i);
		many[i].endpoint = (proto_bytes){(const uint8_t *)endpoints[i], (size_t)len};
	}
	sample_body(PSC_MSG_REFRESH_REQ, b);
	b->u.refresh_req.reason = PSC_REFRESH_JOIN;
	b->u.refresh_req.material.members_full = 1;
	b->u.refresh_req.material.members.items = many;
	b->u.refresh_req.material.members.n = n;
}

int sample_signer_load(sample_signer *s)
{
	memset(s, 0, sizeof(*s));
	BIO *kb = BIO_new_mem_buf(vector_key_pem, -1);
	BIO *cb = BIO_new_mem_buf(vector_cert_pem, -1);
	X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	s->key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
	BIO_free(kb);
	BIO_free(cb);
	int len = cert ? i2d_X509(cert, &s->cert_der) : -1;
	X509_free(cert);
	if (!s->key || len <= 0) {
		sample_signer_free(s);
		return -1;
	}
	s->cert_len = (size_t)len;
	s->signer.key = s->key;
	s->signer.cert_der = s->cert_der;
	s->signer.cert_len = s->cert_len;
	return 0;
}

void sample_signer_free(sample_signer *s)
{
	EVP_PKEY_free(s->key);
	OPENSSL_free(s->cert_der);
	memset(s, 0, sizeof(*s));
}

int sample_message(const sample_signer *s, uint16_t code, int with_cert, uint8_t **out,
		   size_t *out_len)
{
	psc_body b;
	uint8_t *body = NULL;
	size_t body_len = 0;
	sample_body(code, &b);
	if (proto_body_encode(&b, &body, &body_len, NULL) != PSC_OK)
		return -1;
	static const uint8_t KMS_NODE[16] = {0x50, 0x53, 0x43, 0x0a, 0, 0, 0, 0,
					     0, 0, 0, 0, 0, 0, 0, 0};
	proto_envelope env = {
		.overlay = proto_overlay_hash(SAMPLE_OVERLAY),
		.transaction_id = sample_txid(code),
		.code = code,
		.dest_node = (code & 1) ? KMS_NODE : NULL,
	};
	proto_signer signer = s->signer;
	signer.omit_certificates = !with_cert;
	psc_rc rc = proto_message_build(&env, body, body_len, &signer, out, out_len, NULL);
	free(body);
	return rc == PSC_OK ? 0 : -1;
}
