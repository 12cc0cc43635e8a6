/*
 * kms_cmd: every command type round-trips (decode(encode(c)) == c and
 * re-encodes byte for byte), at minimum and maximum field sizes; every
 * truncation, trailing byte, unknown version or type and every over-cap or
 * forbidden field value is refused with a named error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms_cmd.h"
#include "test_cmd_samples.h"

static bool bytes_eq(proto_bytes a, proto_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Field-by-field equality (borrowed bytes compared by content). */
static bool cmd_eq(const kms_cmd *a, const kms_cmd *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case KMS_CMD_PEER_UPSERT: {
		const kms_cmd_peer_upsert *x = &a->peer_upsert, *y = &b->peer_upsert;
		return memcmp(x->node_id, y->node_id, 16) == 0 &&
		       bytes_eq(x->cert_der, y->cert_der) &&
		       memcmp(x->cert_sha256, y->cert_sha256, 32) == 0 &&
		       bytes_eq(x->subject, y->subject) && bytes_eq(x->endpoint, y->endpoint) &&
		       bytes_eq(x->transport_key, y->transport_key) && x->wrap_alg == y->wrap_alg &&
		       x->n_suites == y->n_suites &&
		       memcmp(x->suites, y->suites, x->n_suites * sizeof(x->suites[0])) == 0 &&
		       x->now_ms == y->now_ms;
	}
	case KMS_CMD_PEER_BAN:
		return memcmp(a->peer_ban.node_id, b->peer_ban.node_id, 16) == 0 &&
		       a->peer_ban.banned == b->peer_ban.banned &&
		       a->peer_ban.now_ms == b->peer_ban.now_ms;
	case KMS_CMD_PSC_CREATE: {
		const kms_cmd_psc_create *x = &a->psc_create, *y = &b->psc_create;
		if (memcmp(x->psc_id, y->psc_id, 16) || !bytes_eq(x->name, y->name) ||
		    memcmp(x->owner, y->owner, 16) || x->n_labels != y->n_labels ||
		    x->flags != y->flags || x->suite != y->suite || x->refresh_s != y->refresh_s ||
		    x->max_members != y->max_members || x->now_ms != y->now_ms)
			return false;
		for (size_t i = 0; i < x->n_labels; i++)
			if (!bytes_eq(x->labels[i].key, y->labels[i].key) ||
			    !bytes_eq(x->labels[i].value, y->labels[i].value))
				return false;
		return true;
	}
	case KMS_CMD_MEMBER_ADD:
	case KMS_CMD_MEMBER_REMOVE:
		return memcmp(&a->member_add, &b->member_add, sizeof(a->member_add)) == 0;
	case KMS_CMD_EPOCH_NEW: {
		const kms_cmd_epoch_new *x = &a->epoch_new, *y = &b->epoch_new;
		return memcmp(x->psc_id, y->psc_id, 16) == 0 && x->epoch == y->epoch &&
		       bytes_eq(x->kek_id, y->kek_id) && bytes_eq(x->wrapped, y->wrapped) &&
		       x->prev_grace_ms == y->prev_grace_ms && x->now_ms == y->now_ms;
	}
	case KMS_CMD_MEMBER_ACK:
		return memcmp(&a->member_ack, &b->member_ack, sizeof(a->member_ack)) == 0;
	case KMS_CMD_PSC_DESTROY:
		return memcmp(&a->psc_destroy, &b->psc_destroy, sizeof(a->psc_destroy)) == 0;
	case KMS_CMD_KEK_REWRAP: {
		const kms_cmd_kek_rewrap *x = &a->kek_rewrap, *y = &b->kek_rewrap;
		return memcmp(x->psc_id, y->psc_id, 16) == 0 && x->epoch == y->epoch &&
		       bytes_eq(x->kek_id, y->kek_id) && bytes_eq(x->wrapped, y->wrapped);
	}
	case KMS_CMD_EPOCH_FLOOR:
		return memcmp(&a->epoch_floor, &b->epoch_floor, sizeof(a->epoch_floor)) == 0;
	}
	return false;
}

/* Typical commands of every type (minimal sizes where a field may be empty). */
static kms_cmd typical(kms_cmd_type t)
{
	kms_cmd c;
	switch (t) {
	case KMS_CMD_PEER_UPSERT:
		c = ks_peer(1, 1000);
		c.peer_upsert.subject.len = 0;
		c.peer_upsert.endpoint.len = 0;
		c.peer_upsert.transport_key.len = 0;
		c.peer_upsert.n_suites = 0;
		c.peer_upsert.cert_der.len = 1;
		return c;
	case KMS_CMD_PEER_BAN:
		return ks_ban(2, false, 0);
	case KMS_CMD_PSC_CREATE:
		return ks_create(3, "n", 1, 0, 0, 0, 5);
	case KMS_CMD_MEMBER_ADD:
		return ks_add(3, 1, 6);
	case KMS_CMD_MEMBER_REMOVE:
		return ks_remove(3, 1);
	case KMS_CMD_EPOCH_NEW:
		return ks_epoch(3, 1, 0, 7);
	case KMS_CMD_MEMBER_ACK:
		return ks_ack(3, 1, 1);
	case KMS_CMD_PSC_DESTROY:
		return ks_destroy(3, 0);
	case KMS_CMD_KEK_REWRAP:
		return ks_rewrap(3, 1, "k");
	case KMS_CMD_EPOCH_FLOOR:
		return ks_floor(3, 1);
	}
	memset(&c, 0, sizeof(c));
	return c;
}

static void roundtrip(const kms_cmd *c)
{
	uint8_t *buf = NULL, *buf2 = NULL;
	size_t len = 0, len2 = 0;
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_cmd_encode(c, &buf, &len, &e);
	if (rc != PSC_OK)
		fail_msg("encode %s: %s", kms_cmd_type_name(c->type), psc_err_text(&e));
	assert_true(len <= KMS_CMD_MAX);
	assert_int_equal(buf[0], KMS_CMD_VERSION);
	assert_int_equal(buf[1], c->type);
	kms_cmd d;
	rc = kms_cmd_decode(buf, len, &d, &e);
	if (rc != PSC_OK)
		fail_msg("decode %s: %s", kms_cmd_type_name(c->type), psc_err_text(&e));
	assert_true(cmd_eq(c, &d));
	assert_int_equal(kms_cmd_encode(&d, &buf2, &len2, &e), PSC_OK);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);

	/* Every strict prefix is refused, never read past. Copies make ASan see
	 * any over-read of the shorter buffer. */
	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *p = malloc(cut ? cut : 1);
		memcpy(p, buf, cut);
		psc_err_clear(&e);
		rc = kms_cmd_decode(p, cut, &d, &e);
		if (rc == PSC_OK)
			fail_msg("%s truncated to %zu of %zu bytes decoded",
				 kms_cmd_type_name(c->type), cut, len);
		assert_true(e.detail[0] != '\0');
		free(p);
	}
	/* A trailing byte is refused. */
	uint8_t *t = malloc(len + 1);
	memcpy(t, buf, len);
	t[len] = 0;
	psc_err_clear(&e);
	assert_int_equal(kms_cmd_decode(t, len + 1, &d, &e), PSC_E_TRAILING);
	assert_non_null(strstr(e.detail, kms_cmd_type_name(c->type)));
	free(t);
	free(buf);
	free(buf2);
}

static void test_roundtrip_typical(void **state)
{
	(void)state;
	for (int t = 1; t <= KMS_CMD_TYPE_MAX; t++) {
		kms_cmd c = typical((kms_cmd_type)t);
		roundtrip(&c);
	}
}

static void test_roundtrip_max(void **state)
{
	(void)state;
	for (int t = 1; t <= KMS_CMD_TYPE_MAX; t++) {
		kms_cmd c = ks_max((kms_cmd_type)t);
		roundtrip(&c);
	}
	/* Typical sample commands used by the store tests round-trip too. */
	kms_cmd c = ks_peer(9, 12345);
	roundtrip(&c);
	c = ks_create(9, "ops", 1, 60, 10, 3, 1);
	roundtrip(&c);
}

static uint8_t *enc(const kms_cmd *c, size_t *len)
{
	uint8_t *buf = NULL;
	psc_err e;
	psc_err_clear(&e);
	if (kms_cmd_encode(c, &buf, len, &e) != PSC_OK)
		fail_msg("encode: %s", psc_err_text(&e));
	return buf;
}

static void expect_decode(const uint8_t *buf, size_t len, psc_rc want, const char *needle)
{
	kms_cmd d;
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_cmd_decode(buf, len, &d, &e);
	if (rc != want)
		fail_msg("decode: want %s, got %s (%s)", psc_rc_name(want), psc_rc_name(rc),
			 psc_err_text(&e));
	if (needle && !strstr(e.detail, needle))
		fail_msg("'%s' not in '%s'", needle, e.detail);
	/* A failed decode leaves nothing that looks like a command. */
	assert_int_equal(d.type, 0);
}

static void test_version_and_type(void **state)
{
	(void)state;
	kms_cmd c = ks_floor(1, 5);
	size_t len;
	uint8_t *buf = enc(&c, &len);
	buf[0] = 2;
	expect_decode(buf, len, PSC_E_KMS_CMD_VERSION, "version 2");
	buf[0] = 0;
	expect_decode(buf, len, PSC_E_KMS_CMD_VERSION, "version 0");
	buf[0] = KMS_CMD_VERSION;
	static const uint8_t bad_types[] = {0, KMS_CMD_TYPE_MAX + 1, 0x80, 0xff};
	for (size_t i = 0; i < sizeof(bad_types); i++) {
		buf[1] = bad_types[i];
		expect_decode(buf, len, PSC_E_KMS_CMD_TYPE, "unknown type");
	}
	free(buf);
	expect_decode(NULL, 0, PSC_E_TRUNCATED, "version");
	uint8_t big[1];
	expect_decode(big, (size_t)KMS_CMD_MAX + 1, PSC_E_TOO_LARGE, "exceeds");
}

/* Encode refuses what decode would refuse, naming the field. */
static void expect_invalid(const kms_cmd *c, psc_rc want, const char *field)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	psc_err e;
	psc_err_clear(&e);
	psc_rc rc = kms_cmd_encode(c, &buf, &len, &e);
	if (rc != want)
		fail_msg("encode: want %s, got %s (%s)", psc_rc_name(want), psc_rc_name(rc),
			 psc_err_text(&e));
	assert_null(buf);
	assert_int_equal(len, 0);
	char q[80];
	snprintf(q, sizeof(q), "'%s'", field);
	if (!strstr(e.detail, q))
		fail_msg("field %s not named in '%s'", q, e.detail);
}

static void test_field_rules(void **state)
{
	(void)state;
	kms_cmd c;
	static const char nul_name[] = {'a', '\0', 'b'};

	c = ks_peer(1, 1);
	c.peer_upsert.cert_der.len = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "cert_der");
	c.peer_upsert.cert_der.len = KMS_CERT_DER_MAX + 1;
	expect_invalid(&c, PSC_E_TOO_LARGE, "cert_der");
	c = ks_peer(1, 1);
	c.peer_upsert.transport_key.len = 5;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "transport_key");
	c = ks_peer(1, 1);
	c.peer_upsert.wrap_alg = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "wrap_alg");
	c = ks_peer(1, 1);
	c.peer_upsert.n_suites = KMS_SUITES_MAX + 1;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "suites");
	c = ks_peer(1, 1);
	c.peer_upsert.suites[1] = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "suites");
	c = ks_peer(1, 1);
	c.peer_upsert.subject = (proto_bytes){(const uint8_t *)nul_name, 3};
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "subject");
	c = ks_peer(1, (uint64_t)INT64_MAX + 1);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "now_ms");

	c = ks_create(1, "", 1, 0, 0, 0, 1);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "name");
	c = ks_create(1, "x", 1, 0, 0, 0, 1);
	c.psc_create.name = (proto_bytes){(const uint8_t *)nul_name, 3};
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "name");
	c.psc_create.name = ks_max(KMS_CMD_PSC_CREATE).psc_create.name;
	c.psc_create.name.len++;
	expect_invalid(&c, PSC_E_TOO_LARGE, "name");
	c = ks_create(1, "x", 1, 0, 0, 2, 1);
	c.psc_create.labels[1].key = c.psc_create.labels[0].key;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "labels.key");
	c = ks_create(1, "x", 1, 0, 0, 1, 1);
	c.psc_create.labels[0].key.len = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "labels.key");
	c = ks_create(1, "x", 1, 0, 0, 1, 1);
	c.psc_create.n_labels = KMS_LABELS_MAX + 1;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "labels");
	c = ks_create(1, "x", 1, 0, 0, 0, 1);
	c.psc_create.flags = 0x80;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "flags");
	c = ks_create(1, "x", 1, 0, 0, 0, 1);
	c.psc_create.suite = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "suite");

	c = ks_epoch(1, 0, 0, 1);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "epoch");
	c = ks_epoch(1, (uint64_t)INT64_MAX + 1, 0, 1);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "epoch");
	c = ks_epoch(1, 1, 0, 1);
	c.epoch_new.kek_id.len = 0;
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "kek_id");
	c = ks_epoch(1, 1, 0, 1);
	c.epoch_new.wrapped.len = KMS_WRAPPED_MAX + 1;
	expect_invalid(&c, PSC_E_TOO_LARGE, "wrapped");
	c = ks_ack(1, 1, 0);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "epoch");
	c = ks_rewrap(1, 1, "");
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "kek_id");
	c = ks_floor(1, 0);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "epoch");
	c = ks_destroy(1, UINT64_MAX);
	expect_invalid(&c, PSC_E_KMS_CMD_FIELD, "now_ms");

	memset(&c, 0, sizeof(c));
	c.type = (kms_cmd_type)99;
	uint8_t *buf = NULL;
	size_t len = 0;
	psc_err e;
	assert_int_equal(kms_cmd_encode(&c, &buf, &len, &e), PSC_E_KMS_CMD_TYPE);
	assert_string_equal(kms_cmd_type_name((kms_cmd_type)99), "UNKNOWN");
}

/* Decoder-side checks on hand-patched encodings (the encoder cannot make them). */
static void test_decode_patched(void **state)
{
	(void)state;
	/* PEER_BAN: banned must be 0 or 1. Layout: ver, type, node_id[16], banned. */
	kms_cmd c = ks_ban(1, true, 5);
	size_t len;
	uint8_t *buf = enc(&c, &len);
	buf[2 + 16] = 2;
	expect_decode(buf, len, PSC_E_BAD_VALUE, "'banned'");
	free(buf);

	/* PSC_CREATE with an empty name (prefix at offset 18 set to 0, the name's
	 * byte removed): well-formed bytes, refused by the field rules. */
	c = ks_create(1, "a", 1, 0, 0, 0, 1);
	buf = enc(&c, &len);
	assert_int_equal(buf[18], 1);
	buf[18] = 0;
	memmove(buf + 19, buf + 20, len - 20);
	expect_decode(buf, len - 1, PSC_E_KMS_CMD_FIELD, "'name': must not be empty");
	free(buf);

	/* PEER_UPSERT: cert_der length prefix (2 bytes at offset 18) over the cap. */
	c = ks_peer(1, 1);
	buf = enc(&c, &len);
	buf[18] = (uint8_t)((KMS_CERT_DER_MAX + 1) >> 8);
	buf[19] = (uint8_t)(KMS_CERT_DER_MAX + 1);
	expect_decode(buf, len, PSC_E_TOO_LARGE, "'cert_der'");
	free(buf);

	/* Odd-length suites vector. Find it: it is 8 bytes before the end (now_ms)
	 * minus the 2 suites (4 bytes) and its 1-byte prefix. */
	c = ks_peer(1, 1);
	buf = enc(&c, &len);
	size_t pfx = len - 8 - 4 - 1;
	assert_int_equal(buf[pfx], 4);
	buf[pfx] = 3;
	expect_decode(buf, len, PSC_E_BAD_VALUE, "'suites'");
	free(buf);

	/* 33 labels cannot be encoded, but can be forged: refused while decoding. */
	c = ks_create(1, "n", 1, 0, 0, 0, 1);
	buf = enc(&c, &len);
	/* labels vector (2-byte prefix) sits after psc_id(16) name(1+1) owner(16). */
	size_t lp = 2 + 16 + 2 + 16;
	assert_int_equal(buf[lp], 0);
	assert_int_equal(buf[lp + 1], 0);
	size_t extra = 33 * 3; /* 33 labels "a"="" as 01 'a' 00, keys duplicate too */
	uint8_t *f = malloc(len + extra);
	memcpy(f, buf, lp);
	f[lp] = (uint8_t)(extra >> 8);
	f[lp + 1] = (uint8_t)extra;
	for (size_t i = 0; i < 33; i++) {
		f[lp + 2 + 3 * i] = 1;
		f[lp + 2 + 3 * i + 1] = (uint8_t)('A' + i);
		f[lp + 2 + 3 * i + 2] = 0;
	}
	memcpy(f + lp + 2 + extra, buf + lp + 2, len - lp - 2);
	expect_decode(f, len + extra, PSC_E_TOO_LARGE, "'labels'");
	free(f);
	free(buf);
}

/* Seeds for tests/fuzz/corpus/kms_cmd: typical and maximal commands of every
 * type, commands that hit the fuzz fixture's store (ids 1 and 2), one truncated. */
static int write_corpus(const char *dir)
{
	kms_cmd seeds[2 * KMS_CMD_TYPE_MAX + 12];
	size_t n = 0;
	for (int t = 1; t <= KMS_CMD_TYPE_MAX; t++) {
		seeds[n++] = typical((kms_cmd_type)t);
		seeds[n++] = ks_max((kms_cmd_type)t);
	}
	seeds[n++] = ks_add(1, 3, 100);
	seeds[n++] = ks_add(1, 1, 100);
	seeds[n++] = ks_remove(1, 2);
	seeds[n++] = ks_ack(1, 1, 2);
	seeds[n++] = ks_epoch(1, 3, 500, 100);
	seeds[n++] = ks_rewrap(1, 1, "kek-2");
	seeds[n++] = ks_destroy(1, 100);
	seeds[n++] = ks_create(2, "two", 2, 30, 0, 1, 100);
	seeds[n++] = ks_create(3, "one", 2, 30, 0, 1, 100);
	seeds[n++] = ks_ban(2, true, 100);
	seeds[n++] = ks_floor(2, 9);
	seeds[n++] = ks_peer(2, 100);
	for (size_t i = 0; i <= n; i++) {
		const kms_cmd *c = &seeds[i < n ? i : 0];
		uint8_t *buf = NULL;
		size_t len = 0;
		psc_err e;
		if (kms_cmd_encode(c, &buf, &len, &e) != PSC_OK) {
			fprintf(stderr, "seed %zu: %s\n", i, psc_err_text(&e));
			return 1;
		}
		if (i == n)
			len /= 2; /* one truncated seed */
		char path[4096];
		snprintf(path, sizeof(path), "%s/%02zu-%s%s.bin", dir, i,
			 kms_cmd_type_name(c->type), i == n ? "-truncated" : "");
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
			fprintf(stderr, "%s: cannot write\n", path);
			return 1;
		}
		free(buf);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		return write_corpus(argv[2]);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_typical), cmocka_unit_test(test_roundtrip_max),
	    cmocka_unit_test(test_version_and_type),  cmocka_unit_test(test_field_rules),
	    cmocka_unit_test(test_decode_patched),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
