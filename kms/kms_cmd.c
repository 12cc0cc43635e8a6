/*
 * kms_cmd — state commands and their encoding (see kms_cmd.h).
 *
 * One table of rules (validate) serves encode and decode, so anything the
 * leader can encode every follower can decode, and a decoded command has passed
 * the same checks as one built in memory.
 */
#include "kms_cmd.h"

#include <stdlib.h>
#include <string.h>

#include "proto_buf.h"

const char *kms_cmd_type_name(kms_cmd_type t)
{
	switch (t) {
	case KMS_CMD_PEER_UPSERT:
		return "PEER_UPSERT";
	case KMS_CMD_PEER_BAN:
		return "PEER_BAN";
	case KMS_CMD_PSC_CREATE:
		return "PSC_CREATE";
	case KMS_CMD_MEMBER_ADD:
		return "MEMBER_ADD";
	case KMS_CMD_MEMBER_REMOVE:
		return "MEMBER_REMOVE";
	case KMS_CMD_EPOCH_NEW:
		return "EPOCH_NEW";
	case KMS_CMD_MEMBER_ACK:
		return "MEMBER_ACK";
	case KMS_CMD_PSC_DESTROY:
		return "PSC_DESTROY";
	case KMS_CMD_KEK_REWRAP:
		return "KEK_REWRAP";
	case KMS_CMD_EPOCH_FLOOR:
		return "EPOCH_FLOOR";
	}
	return "UNKNOWN";
}

/* ---- validation ---------------------------------------------------------- */

static psc_rc bad(psc_err *err, kms_cmd_type t, const char *field, const char *why)
{
	return psc_err_set(err, PSC_E_KMS_CMD_FIELD, "%s command: field '%s': %s",
			   kms_cmd_type_name(t), field, why);
}

/* Byte string within [min, max]; text fields must not hold NUL (they are
 * stored and returned as C strings). */
static psc_rc check_bytes(psc_err *err, kms_cmd_type t, const char *field, proto_bytes b,
			  size_t min, size_t max, bool text)
{
	if (b.len && !b.p)
		return bad(err, t, field, "NULL data with a non-zero length");
	if (b.len < min)
		return bad(err, t, field, min == 1 ? "must not be empty" : "too short");
	if (b.len > max)
		return psc_err_set(err, PSC_E_TOO_LARGE,
				   "%s command: field '%s': %zu bytes exceeds the maximum of %zu",
				   kms_cmd_type_name(t), field, b.len, max);
	if (text && b.len && memchr(b.p, '\0', b.len))
		return bad(err, t, field, "contains a NUL byte");
	return PSC_OK;
}

/* The store keeps integers in SQLite's signed 64-bit columns; 2^63 ms is 292
 * million years and 2^63 epochs are never reached, so the top bit is refused
 * rather than stored with a changed meaning. */
static psc_rc check_u63(psc_err *err, kms_cmd_type t, const char *field, uint64_t v)
{
	return v > KMS_CMD_U64_MAX ? bad(err, t, field, "must be below 2^63") : PSC_OK;
}

static psc_rc check_epoch(psc_err *err, kms_cmd_type t, uint64_t epoch)
{
	if (epoch == 0)
		return bad(err, t, "epoch", "must be at least 1");
	return check_u63(err, t, "epoch", epoch);
}

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		psc_rc rc_ = (x);                                                                  \
		if (rc_ != PSC_OK)                                                                 \
			return rc_;                                                                \
	} while (0)

static psc_rc validate_peer_upsert(const kms_cmd_peer_upsert *c, psc_err *err)
{
	const kms_cmd_type t = KMS_CMD_PEER_UPSERT;
	CHECK(check_bytes(err, t, "cert_der", c->cert_der, 1, KMS_CERT_DER_MAX, false));
	CHECK(check_bytes(err, t, "subject", c->subject, 0, KMS_SUBJECT_MAX, true));
	CHECK(check_bytes(err, t, "endpoint", c->endpoint, 0, KMS_ENDPOINT_MAX, true));
	CHECK(check_bytes(err, t, "transport_key", c->transport_key, 0, KMS_TRANSPORT_KEY_MAX,
			  false));
	if (c->transport_key.len != 0 && c->transport_key.len != KMS_TRANSPORT_KEY_MAX)
		return bad(err, t, "transport_key", "must be empty or exactly 32 bytes");
	if (c->wrap_alg == 0)
		return bad(err, t, "wrap_alg", "must not be 0");
	if (c->n_suites > KMS_SUITES_MAX)
		return bad(err, t, "suites", "more than 16 entries");
	for (size_t i = 0; i < c->n_suites; i++)
		if (c->suites[i] == 0)
			return bad(err, t, "suites", "suite id 0 is not allowed");
	return check_u63(err, t, "now_ms", c->now_ms);
}

static psc_rc validate_psc_create(const kms_cmd_psc_create *c, psc_err *err)
{
	const kms_cmd_type t = KMS_CMD_PSC_CREATE;
	CHECK(check_bytes(err, t, "name", c->name, 1, KMS_NAME_MAX, true));
	if (c->n_labels > KMS_LABELS_MAX)
		return bad(err, t, "labels", "more than 32 entries");
	for (size_t i = 0; i < c->n_labels; i++) {
		CHECK(check_bytes(err, t, "labels.key", c->labels[i].key, 1, KMS_LABEL_KEY_MAX,
				  true));
		CHECK(check_bytes(err, t, "labels.value", c->labels[i].value, 0,
				  KMS_LABEL_VALUE_MAX, true));
		for (size_t j = 0; j < i; j++)
			if (c->labels[j].key.len == c->labels[i].key.len &&
			    memcmp(c->labels[j].key.p, c->labels[i].key.p, c->labels[i].key.len) ==
				0)
				return bad(err, t, "labels.key", "duplicate label key");
	}
	if (c->flags & ~(uint32_t)KMS_PSC_FLAGS_KNOWN)
		return bad(err, t, "flags", "unknown flag bits");
	if (c->suite == 0)
		return bad(err, t, "suite", "must not be 0");
	return check_u63(err, t, "now_ms", c->now_ms);
}

psc_rc kms_cmd_validate(const kms_cmd *cmd, psc_err *err)
{
	if (!cmd)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_cmd_validate: NULL command");
	switch (cmd->type) {
	case KMS_CMD_PEER_UPSERT:
		return validate_peer_upsert(&cmd->peer_upsert, err);
	case KMS_CMD_PEER_BAN:
		return check_u63(err, cmd->type, "now_ms", cmd->peer_ban.now_ms);
	case KMS_CMD_MEMBER_ADD:
		return check_u63(err, cmd->type, "now_ms", cmd->member_add.now_ms);
	case KMS_CMD_MEMBER_REMOVE:
		return PSC_OK;
	case KMS_CMD_PSC_DESTROY:
		return check_u63(err, cmd->type, "now_ms", cmd->psc_destroy.now_ms);
	case KMS_CMD_PSC_CREATE:
		return validate_psc_create(&cmd->psc_create, err);
	case KMS_CMD_EPOCH_NEW:
		CHECK(check_epoch(err, cmd->type, cmd->epoch_new.epoch));
		CHECK(check_u63(err, cmd->type, "now_ms", cmd->epoch_new.now_ms));
		CHECK(check_bytes(err, cmd->type, "kek_id", cmd->epoch_new.kek_id, 1,
				  KMS_KEK_ID_MAX, true));
		return check_bytes(err, cmd->type, "wrapped", cmd->epoch_new.wrapped, 1,
				   KMS_WRAPPED_MAX, false);
	case KMS_CMD_MEMBER_ACK:
		return check_epoch(err, cmd->type, cmd->member_ack.epoch);
	case KMS_CMD_KEK_REWRAP:
		CHECK(check_epoch(err, cmd->type, cmd->kek_rewrap.epoch));
		CHECK(check_bytes(err, cmd->type, "kek_id", cmd->kek_rewrap.kek_id, 1,
				  KMS_KEK_ID_MAX, true));
		return check_bytes(err, cmd->type, "wrapped", cmd->kek_rewrap.wrapped, 1,
				   KMS_WRAPPED_MAX, false);
	case KMS_CMD_EPOCH_FLOOR:
		return check_epoch(err, cmd->type, cmd->epoch_floor.epoch);
	}
	return psc_err_set(err, PSC_E_KMS_CMD_TYPE, "unknown state command type %d",
			   (int)cmd->type);
}

/* ---- encoding ------------------------------------------------------------ */

/* Vector prefixes, part of the format: 2 bytes where the cap exceeds 255. */
#define PFX_CERT 2
#define PFX_SUBJECT 2
#define PFX_SHORT 1
#define PFX_LABELS 2
#define PFX_WRAPPED 2
/* Encoded label list: per label 1 + key + 1 + value. */
#define LABELS_BYTES_MAX (KMS_LABELS_MAX * (2 + KMS_LABEL_KEY_MAX + KMS_LABEL_VALUE_MAX))

static void wr_b(proto_wr *w, unsigned prefix, size_t max, proto_bytes b, const char *field)
{
	proto_wr_vec(w, prefix, 0, max, b.p, b.len, field);
}

static void encode_body(proto_wr *w, const kms_cmd *cmd)
{
	switch (cmd->type) {
	case KMS_CMD_PEER_UPSERT: {
		const kms_cmd_peer_upsert *c = &cmd->peer_upsert;
		proto_wr_bytes(w, c->node_id, PSC_NODE_ID_LEN);
		wr_b(w, PFX_CERT, KMS_CERT_DER_MAX, c->cert_der, "cert_der");
		proto_wr_bytes(w, c->cert_sha256, PSC_HASH_LEN);
		wr_b(w, PFX_SUBJECT, KMS_SUBJECT_MAX, c->subject, "subject");
		wr_b(w, PFX_SHORT, KMS_ENDPOINT_MAX, c->endpoint, "endpoint");
		wr_b(w, PFX_SHORT, KMS_TRANSPORT_KEY_MAX, c->transport_key, "transport_key");
		proto_wr_u8(w, c->wrap_alg);
		size_t m = proto_wr_vec_open(w, PFX_SHORT);
		for (size_t i = 0; i < c->n_suites; i++)
			proto_wr_u16(w, c->suites[i]);
		proto_wr_vec_close(w, m, PFX_SHORT, 0, 2 * KMS_SUITES_MAX, "suites");
		proto_wr_u64(w, c->now_ms);
		break;
	}
	case KMS_CMD_PEER_BAN:
		proto_wr_bytes(w, cmd->peer_ban.node_id, PSC_NODE_ID_LEN);
		proto_wr_u8(w, cmd->peer_ban.banned ? 1 : 0);
		proto_wr_u64(w, cmd->peer_ban.now_ms);
		break;
	case KMS_CMD_PSC_CREATE: {
		const kms_cmd_psc_create *c = &cmd->psc_create;
		proto_wr_bytes(w, c->psc_id, PSC_PSC_ID_LEN);
		wr_b(w, PFX_SHORT, KMS_NAME_MAX, c->name, "name");
		proto_wr_bytes(w, c->owner, PSC_NODE_ID_LEN);
		size_t m = proto_wr_vec_open(w, PFX_LABELS);
		for (size_t i = 0; i < c->n_labels; i++) {
			wr_b(w, PFX_SHORT, KMS_LABEL_KEY_MAX, c->labels[i].key, "labels.key");
			wr_b(w, PFX_SHORT, KMS_LABEL_VALUE_MAX, c->labels[i].value, "labels.value");
		}
		proto_wr_vec_close(w, m, PFX_LABELS, 0, LABELS_BYTES_MAX, "labels");
		proto_wr_u32(w, c->flags);
		proto_wr_u16(w, c->suite);
		proto_wr_u32(w, c->refresh_s);
		proto_wr_u32(w, c->max_members);
		proto_wr_u64(w, c->now_ms);
		break;
	}
	case KMS_CMD_MEMBER_ADD:
		proto_wr_bytes(w, cmd->member_add.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, cmd->member_add.node_id, PSC_NODE_ID_LEN);
		proto_wr_u64(w, cmd->member_add.now_ms);
		break;
	case KMS_CMD_MEMBER_REMOVE:
		proto_wr_bytes(w, cmd->member_remove.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, cmd->member_remove.node_id, PSC_NODE_ID_LEN);
		break;
	case KMS_CMD_EPOCH_NEW: {
		const kms_cmd_epoch_new *c = &cmd->epoch_new;
		proto_wr_bytes(w, c->psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, c->epoch);
		wr_b(w, PFX_SHORT, KMS_KEK_ID_MAX, c->kek_id, "kek_id");
		wr_b(w, PFX_WRAPPED, KMS_WRAPPED_MAX, c->wrapped, "wrapped");
		proto_wr_u32(w, c->prev_grace_ms);
		proto_wr_u64(w, c->now_ms);
		break;
	}
	case KMS_CMD_MEMBER_ACK:
		proto_wr_bytes(w, cmd->member_ack.psc_id, PSC_PSC_ID_LEN);
		proto_wr_bytes(w, cmd->member_ack.node_id, PSC_NODE_ID_LEN);
		proto_wr_u64(w, cmd->member_ack.epoch);
		break;
	case KMS_CMD_PSC_DESTROY:
		proto_wr_bytes(w, cmd->psc_destroy.psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, cmd->psc_destroy.now_ms);
		break;
	case KMS_CMD_KEK_REWRAP:
		proto_wr_bytes(w, cmd->kek_rewrap.psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, cmd->kek_rewrap.epoch);
		wr_b(w, PFX_SHORT, KMS_KEK_ID_MAX, cmd->kek_rewrap.kek_id, "kek_id");
		wr_b(w, PFX_WRAPPED, KMS_WRAPPED_MAX, cmd->kek_rewrap.wrapped, "wrapped");
		break;
	case KMS_CMD_EPOCH_FLOOR:
		proto_wr_bytes(w, cmd->epoch_floor.psc_id, PSC_PSC_ID_LEN);
		proto_wr_u64(w, cmd->epoch_floor.epoch);
		break;
	}
}

psc_rc kms_cmd_encode(const kms_cmd *cmd, uint8_t **out, size_t *out_len, psc_err *err)
{
	if (!out || !out_len)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_cmd_encode: NULL output");
	*out = NULL;
	*out_len = 0;
	psc_rc rc = kms_cmd_validate(cmd, err);
	if (rc != PSC_OK)
		return rc;
	proto_wr w;
	proto_wr_init(&w, KMS_CMD_MAX);
	proto_wr_u8(&w, KMS_CMD_VERSION);
	proto_wr_u8(&w, (uint8_t)cmd->type);
	encode_body(&w, cmd);
	if (w.err) {
		rc = psc_err_set(err, w.err, "encoding %s command: field '%s': %s",
				 kms_cmd_type_name(cmd->type), w.err_field ? w.err_field : "?",
				 psc_strerror(w.err));
		proto_wr_free(&w);
		return rc;
	}
	rc = proto_wr_take(&w, out, out_len);
	proto_wr_free(&w);
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "encoding %s command: %s", kms_cmd_type_name(cmd->type),
				   psc_strerror(rc));
	return PSC_OK;
}

/* ---- decoding ------------------------------------------------------------ */

static proto_bytes rd_b(proto_rd *r, unsigned prefix, size_t max, const char *field)
{
	proto_bytes b = {0};
	b.p = proto_rd_vec(r, prefix, 0, max, &b.len, field);
	return b;
}

static void decode_peer_upsert(proto_rd *r, kms_cmd_peer_upsert *c)
{
	proto_rd_bytes(r, c->node_id, PSC_NODE_ID_LEN, "node_id");
	c->cert_der = rd_b(r, PFX_CERT, KMS_CERT_DER_MAX, "cert_der");
	proto_rd_bytes(r, c->cert_sha256, PSC_HASH_LEN, "cert_sha256");
	c->subject = rd_b(r, PFX_SUBJECT, KMS_SUBJECT_MAX, "subject");
	c->endpoint = rd_b(r, PFX_SHORT, KMS_ENDPOINT_MAX, "endpoint");
	c->transport_key = rd_b(r, PFX_SHORT, KMS_TRANSPORT_KEY_MAX, "transport_key");
	c->wrap_alg = proto_rd_u8(r, "wrap_alg");
	proto_rd sub;
	proto_rd_subvec(r, &sub, PFX_SHORT, 0, 2 * KMS_SUITES_MAX, "suites");
	if (proto_rd_left(&sub) % 2)
		proto_rd_fail(&sub, PSC_E_BAD_VALUE, "suites");
	while (!sub.err && proto_rd_left(&sub) > 0)
		c->suites[c->n_suites++] = proto_rd_u16(&sub, "suites");
	proto_rd_sub_done(r, &sub);
	c->now_ms = proto_rd_u64(r, "now_ms");
}

static void decode_psc_create(proto_rd *r, kms_cmd_psc_create *c)
{
	proto_rd_bytes(r, c->psc_id, PSC_PSC_ID_LEN, "psc_id");
	c->name = rd_b(r, PFX_SHORT, KMS_NAME_MAX, "name");
	proto_rd_bytes(r, c->owner, PSC_NODE_ID_LEN, "owner");
	proto_rd sub;
	proto_rd_subvec(r, &sub, PFX_LABELS, 0, LABELS_BYTES_MAX, "labels");
	while (!sub.err && proto_rd_left(&sub) > 0) {
		if (c->n_labels == KMS_LABELS_MAX) {
			proto_rd_fail(&sub, PSC_E_TOO_LARGE, "labels");
			break;
		}
		proto_label *l = &c->labels[c->n_labels++];
		l->key = rd_b(&sub, PFX_SHORT, KMS_LABEL_KEY_MAX, "labels.key");
		l->value = rd_b(&sub, PFX_SHORT, KMS_LABEL_VALUE_MAX, "labels.value");
	}
	proto_rd_sub_done(r, &sub);
	c->flags = proto_rd_u32(r, "flags");
	c->suite = proto_rd_u16(r, "suite");
	c->refresh_s = proto_rd_u32(r, "refresh_s");
	c->max_members = proto_rd_u32(r, "max_members");
	c->now_ms = proto_rd_u64(r, "now_ms");
}

psc_rc kms_cmd_decode(const uint8_t *buf, size_t len, kms_cmd *cmd, psc_err *err)
{
	if (!cmd || (!buf && len))
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_cmd_decode: NULL argument");
	memset(cmd, 0, sizeof(*cmd));
	if (len > KMS_CMD_MAX)
		return psc_err_set(err, PSC_E_TOO_LARGE,
				   "state command of %zu bytes exceeds the maximum of %u", len,
				   (unsigned)KMS_CMD_MAX);
	proto_rd r;
	proto_rd_init(&r, buf, len);
	uint8_t version = proto_rd_u8(&r, "version");
	uint8_t type = proto_rd_u8(&r, "type");
	if (r.err)
		return psc_err_set(err, r.err, "state command: field '%s' at byte %zu: %s",
				   r.err_field ? r.err_field : "?", r.err_off, psc_strerror(r.err));
	if (version != KMS_CMD_VERSION)
		return psc_err_set(err, PSC_E_KMS_CMD_VERSION,
				   "state command: encoding version %u, this psc-kms reads only "
				   "version %u; upgrade every KMS node to the same release",
				   version, KMS_CMD_VERSION);
	if (type < 1 || type > KMS_CMD_TYPE_MAX)
		return psc_err_set(err, PSC_E_KMS_CMD_TYPE, "state command: unknown type %u", type);
	cmd->type = (kms_cmd_type)type;
	switch (cmd->type) {
	case KMS_CMD_PEER_UPSERT:
		decode_peer_upsert(&r, &cmd->peer_upsert);
		break;
	case KMS_CMD_PEER_BAN: {
		proto_rd_bytes(&r, cmd->peer_ban.node_id, PSC_NODE_ID_LEN, "node_id");
		uint8_t b = proto_rd_u8(&r, "banned");
		if (b > 1)
			proto_rd_fail(&r, PSC_E_BAD_VALUE, "banned");
		cmd->peer_ban.banned = b == 1;
		cmd->peer_ban.now_ms = proto_rd_u64(&r, "now_ms");
		break;
	}
	case KMS_CMD_PSC_CREATE:
		decode_psc_create(&r, &cmd->psc_create);
		break;
	case KMS_CMD_MEMBER_ADD:
		proto_rd_bytes(&r, cmd->member_add.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(&r, cmd->member_add.node_id, PSC_NODE_ID_LEN, "node_id");
		cmd->member_add.now_ms = proto_rd_u64(&r, "now_ms");
		break;
	case KMS_CMD_MEMBER_REMOVE:
		proto_rd_bytes(&r, cmd->member_remove.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(&r, cmd->member_remove.node_id, PSC_NODE_ID_LEN, "node_id");
		break;
	case KMS_CMD_EPOCH_NEW: {
		kms_cmd_epoch_new *c = &cmd->epoch_new;
		proto_rd_bytes(&r, c->psc_id, PSC_PSC_ID_LEN, "psc_id");
		c->epoch = proto_rd_u64(&r, "epoch");
		c->kek_id = rd_b(&r, PFX_SHORT, KMS_KEK_ID_MAX, "kek_id");
		c->wrapped = rd_b(&r, PFX_WRAPPED, KMS_WRAPPED_MAX, "wrapped");
		c->prev_grace_ms = proto_rd_u32(&r, "prev_grace_ms");
		c->now_ms = proto_rd_u64(&r, "now_ms");
		break;
	}
	case KMS_CMD_MEMBER_ACK:
		proto_rd_bytes(&r, cmd->member_ack.psc_id, PSC_PSC_ID_LEN, "psc_id");
		proto_rd_bytes(&r, cmd->member_ack.node_id, PSC_NODE_ID_LEN, "node_id");
		cmd->member_ack.epoch = proto_rd_u64(&r, "epoch");
		break;
	case KMS_CMD_PSC_DESTROY:
		proto_rd_bytes(&r, cmd->psc_destroy.psc_id, PSC_PSC_ID_LEN, "psc_id");
		cmd->psc_destroy.now_ms = proto_rd_u64(&r, "now_ms");
		break;
	case KMS_CMD_KEK_REWRAP:
		proto_rd_bytes(&r, cmd->kek_rewrap.psc_id, PSC_PSC_ID_LEN, "psc_id");
		cmd->kek_rewrap.epoch = proto_rd_u64(&r, "epoch");
		cmd->kek_rewrap.kek_id = rd_b(&r, PFX_SHORT, KMS_KEK_ID_MAX, "kek_id");
		cmd->kek_rewrap.wrapped = rd_b(&r, PFX_WRAPPED, KMS_WRAPPED_MAX, "wrapped");
		break;
	case KMS_CMD_EPOCH_FLOOR:
		proto_rd_bytes(&r, cmd->epoch_floor.psc_id, PSC_PSC_ID_LEN, "psc_id");
		cmd->epoch_floor.epoch = proto_rd_u64(&r, "epoch");
		break;
	}
	psc_rc rc = proto_rd_finish(&r, kms_cmd_type_name(cmd->type));
	if (rc != PSC_OK) {
		rc = psc_err_set(err, rc, "%s command: field '%s' at byte %zu: %s",
				 kms_cmd_type_name(cmd->type), r.err_field ? r.err_field : "?",
				 r.err_off, psc_strerror(rc));
		memset(cmd, 0, sizeof(*cmd));
		return rc;
	}
	rc = kms_cmd_validate(cmd, err);
	if (rc != PSC_OK)
		memset(cmd, 0, sizeof(*cmd));
	return rc;
}
