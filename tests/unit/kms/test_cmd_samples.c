/* See test_cmd_samples.h. */
#include "test_cmd_samples.h"

#include <stdio.h>
#include <string.h>

/* Static backing for borrowed fields: 64 KiB of a fixed pattern. */
static uint8_t pool[65536];
static int pool_ready;

static const uint8_t *pat(size_t off)
{
	if (!pool_ready) {
		for (size_t i = 0; i < sizeof(pool); i++)
			pool[i] = (uint8_t)(i * 131u + (i >> 8) + 7u);
		pool_ready = 1;
	}
	return pool + off % 8192;
}

static char label_text[KMS_LABELS_MAX][2][16];

void ks_id(uint8_t out[16], unsigned n)
{
	memset(out, 0x5a, 16);
	out[12] = (uint8_t)(n >> 24);
	out[13] = (uint8_t)(n >> 16);
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
}

static proto_bytes pb(const void *p, size_t n)
{
	proto_bytes b = {p, n};
	return b;
}

static proto_bytes ps(const char *s)
{
	return pb(s, strlen(s));
}

kms_cmd ks_peer(unsigned node, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_PEER_UPSERT;
	kms_cmd_peer_upsert *u = &c.peer_upsert;
	ks_id(u->node_id, node);
	u->cert_der = pb(pat(node), 300 + node % 50);
	memcpy(u->cert_sha256, pat(node + 1000), 32);
	u->subject = ps("CN=peer,O=Example Corp");
	u->endpoint = ps("tcp://127.0.0.1:7500");
	u->transport_key = pb(pat(node + 2000), 32);
	u->wrap_alg = PSC_WRAP_ECDH_P256_AESPRF_KWP;
	u->suites[0] = PSC_SUITE_AES256GCM_HKDF_SHA256;
	u->suites[1] = 0x00ff;
	u->n_suites = 2;
	u->now_ms = now_ms;
	return c;
}

kms_cmd ks_ban(unsigned node, bool banned, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_PEER_BAN;
	ks_id(c.peer_ban.node_id, node);
	c.peer_ban.banned = banned;
	c.peer_ban.now_ms = now_ms;
	return c;
}

kms_cmd ks_create(unsigned psc, const char *name, unsigned owner, uint32_t refresh_s,
		  uint32_t max_members, unsigned n_labels, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_PSC_CREATE;
	kms_cmd_psc_create *p = &c.psc_create;
	ks_id(p->psc_id, psc);
	p->name = ps(name);
	ks_id(p->owner, owner);
	for (unsigned i = 0; i < n_labels && i < KMS_LABELS_MAX; i++) {
		snprintf(label_text[i][0], sizeof(label_text[i][0]), "k%u", i);
		snprintf(label_text[i][1], sizeof(label_text[i][1]), "v%u", i);
		p->labels[i].key = ps(label_text[i][0]);
		p->labels[i].value = ps(label_text[i][1]);
		p->n_labels++;
	}
	p->flags = KMS_PSC_FLAG_SENDER_SIGNATURES;
	p->suite = PSC_SUITE_AES256GCM_HKDF_SHA256;
	p->refresh_s = refresh_s;
	p->max_members = max_members;
	p->now_ms = now_ms;
	return c;
}

kms_cmd ks_add(unsigned psc, unsigned node, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_MEMBER_ADD;
	ks_id(c.member_add.psc_id, psc);
	ks_id(c.member_add.node_id, node);
	c.member_add.now_ms = now_ms;
	return c;
}

kms_cmd ks_remove(unsigned psc, unsigned node)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_MEMBER_REMOVE;
	ks_id(c.member_remove.psc_id, psc);
	ks_id(c.member_remove.node_id, node);
	return c;
}

const uint8_t *ks_wrapped(unsigned psc, uint64_t epoch)
{
	return pat((size_t)psc * 97u + (size_t)(epoch % 4096) * 13u);
}

kms_cmd ks_epoch(unsigned psc, uint64_t epoch, uint32_t prev_grace_ms, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_EPOCH_NEW;
	ks_id(c.epoch_new.psc_id, psc);
	c.epoch_new.epoch = epoch;
	c.epoch_new.kek_id = ps(KS_KEK);
	c.epoch_new.wrapped = pb(ks_wrapped(psc, epoch), KS_WRAPPED_LEN);
	c.epoch_new.prev_grace_ms = prev_grace_ms;
	c.epoch_new.now_ms = now_ms;
	return c;
}

kms_cmd ks_ack(unsigned psc, unsigned node, uint64_t epoch)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_MEMBER_ACK;
	ks_id(c.member_ack.psc_id, psc);
	ks_id(c.member_ack.node_id, node);
	c.member_ack.epoch = epoch;
	return c;
}

kms_cmd ks_destroy(unsigned psc, uint64_t now_ms)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_PSC_DESTROY;
	ks_id(c.psc_destroy.psc_id, psc);
	c.psc_destroy.now_ms = now_ms;
	return c;
}

kms_cmd ks_rewrap(unsigned psc, uint64_t epoch, const char *kek_id)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_KEK_REWRAP;
	ks_id(c.kek_rewrap.psc_id, psc);
	c.kek_rewrap.epoch = epoch;
	c.kek_rewrap.kek_id = ps(kek_id);
	c.kek_rewrap.wrapped = pb(pat(psc + 5000), 48);
	return c;
}

kms_cmd ks_floor(unsigned psc, uint64_t epoch)
{
	kms_cmd c;
	memset(&c, 0, sizeof(c));
	c.type = KMS_CMD_EPOCH_FLOOR;
	ks_id(c.epoch_floor.psc_id, psc);
	c.epoch_floor.epoch = epoch;
	return c;
}

/* Text of n bytes without NUL (the pattern may contain NUL: use letters). */
static char big_text[8192];

static proto_bytes text_n(size_t n)
{
	for (size_t i = 0; i < sizeof(big_text); i++)
		big_text[i] = (char)('a' + i % 26);
	return pb(big_text, n);
}

static char max_keys[KMS_LABELS_MAX][KMS_LABEL_KEY_MAX];

kms_cmd ks_max(kms_cmd_type t)
{
	kms_cmd c;
	switch (t) {
	case KMS_CMD_PEER_UPSERT:
		c = ks_peer(1, INT64_MAX);
		c.peer_upsert.cert_der = pb(pool, KMS_CERT_DER_MAX);
		c.peer_upsert.subject = text_n(KMS_SUBJECT_MAX);
		c.peer_upsert.endpoint = text_n(KMS_ENDPOINT_MAX);
		c.peer_upsert.wrap_alg = 255;
		for (size_t i = 0; i < KMS_SUITES_MAX; i++)
			c.peer_upsert.suites[i] = (uint16_t)(0xff00 + i);
		c.peer_upsert.n_suites = KMS_SUITES_MAX;
		return c;
	case KMS_CMD_PEER_BAN:
		return ks_ban(0xffffffffu, true, INT64_MAX);
	case KMS_CMD_PSC_CREATE:
		c = ks_create(2, "x", 3, UINT32_MAX, UINT32_MAX, KMS_LABELS_MAX, INT64_MAX);
		c.psc_create.name = text_n(KMS_NAME_MAX);
		for (size_t i = 0; i < KMS_LABELS_MAX; i++) {
			/* Unique keys of maximal length: a letter pattern with i in front. */
			memcpy(max_keys[i], big_text, KMS_LABEL_KEY_MAX);
			max_keys[i][0] = (char)('A' + i);
			c.psc_create.labels[i].key = pb(max_keys[i], KMS_LABEL_KEY_MAX);
			c.psc_create.labels[i].value = text_n(KMS_LABEL_VALUE_MAX);
		}
		c.psc_create.suite = 0xffff;
		return c;
	case KMS_CMD_MEMBER_ADD:
		return ks_add(0xffffffffu, 0xfffffffeu, INT64_MAX);
	case KMS_CMD_MEMBER_REMOVE:
		return ks_remove(0xffffffffu, 0xfffffffeu);
	case KMS_CMD_EPOCH_NEW:
		c = ks_epoch(4, INT64_MAX, UINT32_MAX, INT64_MAX);
		c.epoch_new.kek_id = text_n(KMS_KEK_ID_MAX);
		c.epoch_new.wrapped = pb(pool, KMS_WRAPPED_MAX);
		return c;
	case KMS_CMD_MEMBER_ACK:
		return ks_ack(5, 6, INT64_MAX);
	case KMS_CMD_PSC_DESTROY:
		return ks_destroy(7, INT64_MAX);
	case KMS_CMD_KEK_REWRAP:
		c = ks_rewrap(8, INT64_MAX, "k");
		c.kek_rewrap.kek_id = text_n(KMS_KEK_ID_MAX);
		c.kek_rewrap.wrapped = pb(pool, KMS_WRAPPED_MAX);
		return c;
	case KMS_CMD_EPOCH_FLOOR:
		return ks_floor(9, INT64_MAX);
	}
	memset(&c, 0, sizeof(c));
	return c;
}
