/* Every PSC message body and the RELOAD framing: round trips, and the malformed
 * input catalogue (each case its own named error, never a crash). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "proto_msg.h"
#include "proto_reload.h"
#include "proto_samples.h"

#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/sha.h>

static sample_signer signer;

static int setup(void **state)
{
	(void)state;
	return sample_signer_load(&signer);
}

static int teardown(void **state)
{
	(void)state;
	sample_signer_free(&signer);
	return 0;
}

static void body_of(uint16_t code, uint8_t **buf, size_t *len)
{
	psc_body b;
	sample_body(code, &b);
	psc_err e;
	assert_int_equal(proto_body_encode(&b, buf, len, &e), PSC_OK);
}

/* encode(items) -> decode -> encode(raw) must give the same bytes, for every code. */
static void every_body_round_trips(void **state)
{
	(void)state;
	for (size_t i = 0; i < sample_count; i++) {
		uint8_t *a = NULL, *b2 = NULL;
		size_t alen = 0, blen = 0;
		body_of(sample_codes[i], &a, &alen);
		psc_body d;
		psc_err e;
		if (proto_body_decode(sample_codes[i], a, alen, &d, &e) != PSC_OK)
			fail_msg("decode 0x%04x: %s", sample_codes[i], psc_err_text(&e));
		assert_int_equal(proto_body_encode(&d, &b2, &blen, &e), PSC_OK);
		assert_int_equal(alen, blen);
		assert_memory_equal(a, b2, alen);
		free(a);
		free(b2);
	}
}

static void decoded_fields_match_what_was_sent(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	body_of(PSC_MSG_INITIALIZE_REQ, &buf, &len);
	psc_body d;
	assert_int_equal(proto_body_decode(PSC_MSG_INITIALIZE_REQ, buf, len, &d, NULL), PSC_OK);
	psc_body want;
	sample_body(PSC_MSG_INITIALIZE_REQ, &want);
	const psc_initialize_req *q = &d.u.initialize_req;
	assert_true(q->timestamp == want.u.initialize_req.timestamp);
	assert_memory_equal(q->node_id, want.u.initialize_req.node_id, 16);
	assert_int_equal(q->flags, PSC_INIT_ESTABLISH);
	assert_int_equal(q->wrap_algs.n, 2);
	assert_int_equal(q->establish.labels.n, 2);
	assert_int_equal(q->establish.members.n, 2);
	assert_int_equal(q->establish.refresh_s, 3600);
	proto_iter it;
	proto_label l;
	proto_iter_init(&it, q->establish.labels.raw, q->establish.labels.raw_len);
	assert_true(proto_next_label(&it, &l));
	assert_int_equal(l.key.len, 4);
	assert_memory_equal(l.key.p, "team", 4);
	assert_true(proto_next_label(&it, &l));
	assert_memory_equal(l.value.p, "gold", 4);
	assert_false(proto_next_label(&it, &l));
	uint8_t wa;
	proto_iter_init(&it, q->wrap_algs.raw, q->wrap_algs.raw_len);
	assert_true(proto_next_u8(&it, &wa));
	assert_int_equal(wa, PSC_WRAP_ECDH_P256_AESPRF_KWP);
	free(buf);

	body_of(PSC_MSG_CATCHUP_ANS, &buf, &len);
	assert_int_equal(proto_body_decode(PSC_MSG_CATCHUP_ANS, buf, len, &d, NULL), PSC_OK);
	assert_int_equal(d.u.catchup_ans.entries.n, 2);
	proto_catchup_entry ce;
	proto_iter_init(&it, d.u.catchup_ans.entries.raw, d.u.catchup_ans.entries.raw_len);
	assert_true(proto_next_catchup(&it, &ce));
	assert_int_equal(ce.status, PSC_CATCHUP_NEWER);
	assert_true(ce.epoch == 7);
	assert_int_equal(ce.material.members.n, 3);
	assert_int_equal(ce.material.wrapped.len, 40);
	proto_member mem;
	proto_iter it2;
	proto_iter_init(&it2, ce.material.members.raw, ce.material.members.raw_len);
	assert_true(proto_next_member(&it2, &mem));
	assert_int_equal(mem.endpoint.len, strlen("tcp://127.0.0.1:7001"));
	assert_true(proto_next_catchup(&it, &ce));
	assert_int_equal(ce.status, PSC_CATCHUP_DESTROYED);
	assert_true(ce.epoch == 12);
	assert_false(proto_next_catchup(&it, &ce));
	free(buf);
}

/* Every strict prefix of every body is rejected with a named error. */
static void every_body_truncation_is_rejected(void **state)
{
	(void)state;
	for (size_t i = 0; i < sample_count; i++) {
		uint8_t *buf;
		size_t len;
		body_of(sample_codes[i], &buf, &len);
		for (size_t cut = 0; cut < len; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
			memcpy(copy, buf, cut);
			psc_body d;
			psc_err e;
			psc_rc rc = proto_body_decode(sample_codes[i], copy, cut, &d, &e);
			if (rc == PSC_OK)
				fail_msg("0x%04x truncated to %zu of %zu decoded", sample_codes[i],
					 cut, len);
			assert_true(rc == PSC_E_TRUNCATED || rc == PSC_E_BAD_VALUE);
			assert_non_null(strstr(e.detail, "field '"));
			free(copy);
		}
		free(buf);
	}
}

static void trailing_body_bytes_are_rejected(void **state)
{
	(void)state;
	for (size_t i = 0; i < sample_count; i++) {
		uint8_t *buf;
		size_t len;
		body_of(sample_codes[i], &buf, &len);
		uint8_t *longer = malloc(len + 1);
		memcpy(longer, buf, len);
		longer[len] = 0;
		psc_body d;
		psc_err e;
		assert_int_equal(proto_body_decode(sample_codes[i], longer, len + 1, &d, &e),
				 PSC_E_TRAILING);
		free(longer);
		free(buf);
	}
}

static void unknown_codes_are_rejected(void **state)
{
	(void)state;
	const uint16_t bad[] = {0, 1, 15, 0x0100, 0x011b, 0x0131, 0x7fff, 0xfffe};
	const uint8_t body[8] = {0};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		psc_body d;
		psc_err e;
		assert_int_equal(proto_body_decode(bad[i], body, sizeof(body), &d, &e),
				 PSC_E_UNKNOWN_CODE);
		assert_non_null(strstr(e.detail, "not a PSC message"));
	}
}

static void unknown_enum_and_flag_values_are_rejected(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	psc_body d;
	psc_err e;
	/* Refresh reason 0 and 200. */
	body_of(PSC_MSG_REFRESH_REQ, &buf, &len);
	buf[8] = 0;
	assert_int_equal(proto_body_decode(PSC_MSG_REFRESH_REQ, buf, len, &d, &e), PSC_E_BAD_VALUE);
	assert_non_null(strstr(e.detail, "refresh.reason"));
	buf[8] = 200;
	assert_int_equal(proto_body_decode(PSC_MSG_REFRESH_REQ, buf, len, &d, &e), PSC_E_BAD_VALUE);
	free(buf);
	/* Query answer is a boolean. */
	body_of(PSC_MSG_QUERY_ANS, &buf, &len);
	buf[0] = 2;
	assert_int_equal(proto_body_decode(PSC_MSG_QUERY_ANS, buf, len, &d, &e), PSC_E_BAD_VALUE);
	free(buf);
	/* Unknown Initialize flag bit. */
	psc_body b;
	sample_body(PSC_MSG_INITIALIZE_REQ, &b);
	b.u.initialize_req.flags = 0x80;
	assert_int_equal(proto_body_encode(&b, &buf, &len, &e), PSC_OK);
	assert_int_equal(proto_body_decode(PSC_MSG_INITIALIZE_REQ, buf, len, &d, &e),
			 PSC_E_BAD_VALUE);
	assert_non_null(strstr(e.detail, "initialize.flags"));
	free(buf);
}

static void oversized_lists_are_rejected_by_encoder_and_decoder(void **state)
{
	(void)state;
	psc_body b;
	sample_body(PSC_MSG_INITIALIZE_REQ, &b);
	uint16_t suites[PSC_MAX_SUITES + 1] = {0};
	b.u.initialize_req.suites.items = suites;
	b.u.initialize_req.suites.n = PSC_MAX_SUITES + 1;
	uint8_t *buf = NULL;
	size_t len;
	psc_err e;
	assert_int_equal(proto_body_encode(&b, &buf, &len, &e), PSC_E_TOO_LARGE);
	assert_non_null(strstr(e.detail, "initialize.suites"));
	/* Hand-made: 17 suites in a decoder input. */
	uint8_t raw[8 + 16 + 1 + 2 * 17 + 2 + 1 + 1];
	memset(raw, 0, sizeof(raw));
	raw[24] = 2 * 17;
	raw[8 + 16 + 1 + 34] = 1; /* one wrap alg */
	raw[8 + 16 + 1 + 34 + 1] = 3;
	psc_body d;
	assert_int_equal(proto_body_decode(PSC_MSG_INITIALIZE_REQ, raw, sizeof(raw), &d, &e),
			 PSC_E_TOO_LARGE);
	/* A name longer than 255 cannot be encoded. */
	sample_body(PSC_MSG_LOOKUP_REQ, &b);
	static uint8_t longname[300];
	b.u.lookup_req.name = (proto_bytes){longname, sizeof(longname)};
	assert_int_equal(proto_body_encode(&b, &buf, &len, &e), PSC_E_TOO_LARGE);
	/* An empty name is not allowed either. */
	b.u.lookup_req.name = (proto_bytes){longname, 0};
	assert_int_equal(proto_body_encode(&b, &buf, &len, &e), PSC_E_BAD_VALUE);
}

/* ---- framing ----------------------------------------------------------- */

static void message(uint16_t code, uint8_t **buf, size_t *len)
{
	assert_int_equal(sample_message(&signer, code, 1, buf, len), 0);
}

static void every_message_decodes_and_verifies(void **state)
{
	(void)state;
	for (size_t i = 0; i < sample_count; i++) {
		uint8_t *buf;
		size_t len;
		message(sample_codes[i], &buf, &len);
		proto_message m;
		psc_err e;
		if (proto_message_decode(buf, len, &m, &e) != PSC_OK)
			fail_msg("0x%04x: %s", sample_codes[i], psc_err_text(&e));
		assert_int_equal(m.code, sample_codes[i]);
		assert_true(m.transaction_id == sample_txid(sample_codes[i]));
		assert_int_equal(m.overlay, proto_overlay_hash(SAMPLE_OVERLAY));
		assert_int_equal(m.n_certs, 1);
		const uint8_t *der;
		size_t der_len;
		assert_int_equal(proto_message_signer_cert(&m, &der, &der_len), PSC_OK);
		assert_int_equal(der_len, signer.cert_len);
		assert_true(proto_message_signed_by(&m, signer.cert_der, signer.cert_len));
		assert_int_equal(proto_message_verify(&m, signer.key, &e), PSC_OK);
		psc_body d;
		assert_int_equal(proto_body_decode(m.code, m.body, m.body_len, &d, &e), PSC_OK);
		free(buf);
	}
}

static void every_message_truncation_is_rejected(void **state)
{
	(void)state;
	for (size_t i = 0; i < sample_count; i++) {
		uint8_t *buf;
		size_t len;
		message(sample_codes[i], &buf, &len);
		for (size_t cut = 0; cut < len; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1);
			memcpy(copy, buf, cut);
			proto_message m;
			psc_err e;
			/* As received: the length field disagrees. */
			psc_rc rc = proto_message_decode(copy, cut, &m, &e);
			assert_int_not_equal(rc, PSC_OK);
			/* With the length field patched to the cut size, the error must
			 * come from the structure itself. */
			if (cut >= 20) {
				copy[16] = (uint8_t)(cut >> 24);
				copy[17] = (uint8_t)(cut >> 16);
				copy[18] = (uint8_t)(cut >> 8);
				copy[19] = (uint8_t)cut;
				rc = proto_message_decode(copy, cut, &m, &e);
				if (rc == PSC_OK)
					fail_msg("0x%04x cut at %zu decoded", sample_codes[i], cut);
			}
			free(copy);
		}
		free(buf);
	}
}

static void patch_len(uint8_t *buf, size_t len)
{
	buf[16] = (uint8_t)(len >> 24);
	buf[17] = (uint8_t)(len >> 16);
	buf[18] = (uint8_t)(len >> 8);
	buf[19] = (uint8_t)len;
}

static void bad_relo_token_version_fragment_length(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	message(PSC_MSG_JOIN_REQ, &buf, &len);
	proto_message m;
	psc_err e;
	buf[0] ^= 0x80;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_BAD_TOKEN);
	assert_non_null(strstr(e.detail, "relo_token"));
	buf[0] ^= 0x80;
	buf[10] = 0x09;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_BAD_VERSION);
	buf[10] = PSC_RELOAD_VERSION;
	buf[12] = 0x80; /* fragment 0x80000000: not the last fragment */
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_FRAGMENTED);
	buf[12] = 0xc0;
	patch_len(buf, len + 1);
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_BAD_LENGTH);
	assert_non_null(strstr(e.detail, "length field"));
	patch_len(buf, len);
	buf[37] = 4; /* options_length */
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_FORWARDING_OPTION);
	buf[37] = 0;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_OK);
	free(buf);
}

static void trailing_message_bytes_are_rejected(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	message(PSC_MSG_LEAVE_REQ, &buf, &len);
	uint8_t *longer = malloc(len + 3);
	memcpy(longer, buf, len);
	memset(longer + len, 0, 3);
	patch_len(longer, len + 3);
	proto_message m;
	psc_err e;
	assert_int_equal(proto_message_decode(longer, len + 3, &m, &e), PSC_E_TRAILING);
	free(longer);
	free(buf);
}

static void oversize_message_is_rejected_before_parsing(void **state)
{
	(void)state;
	size_t len = PROTO_MAX_MESSAGE + 1;
	uint8_t *big = calloc(1, len);
	proto_message m;
	psc_err e;
	assert_int_equal(proto_message_decode(big, len, &m, &e), PSC_E_TOO_LARGE);
	free(big);
}

static void build_with(const proto_ext *ext, size_t n_ext, uint8_t **out, size_t *len)
{
	uint8_t body[24] = {0};
	proto_envelope env = {.overlay = proto_overlay_hash(SAMPLE_OVERLAY),
			      .transaction_id = 42,
			      .code = PSC_MSG_JOIN_REQ,
			      .ext = ext,
			      .n_ext = n_ext};
	psc_err e;
	assert_int_equal(proto_message_build(&env, body, sizeof(body), &signer.signer, out, len,
					     &e),
			 PSC_OK);
}

static void unknown_critical_extension_is_rejected(void **state)
{
	(void)state;
	const uint8_t data[3] = {1, 2, 3};
	proto_ext ext = {.type = 0x7777, .critical = 1, .data = data, .len = 3};
	uint8_t *buf;
	size_t len;
	build_with(&ext, 1, &buf, &len);
	proto_message m;
	psc_err e;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_UNKNOWN_EXT);
	assert_non_null(strstr(e.detail, "0x7777"));
	free(buf);
	/* The same extension, not critical, is ignored. */
	ext.critical = 0;
	build_with(&ext, 1, &buf, &len);
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_OK);
	assert_int_equal(m.n_ext, 1);
	assert_int_equal(proto_message_verify(&m, signer.key, &e), PSC_OK);
	free(buf);
}

static void too_many_extensions_are_rejected(void **state)
{
	(void)state;
	proto_ext ext[PROTO_MAX_EXTENSIONS + 1];
	for (size_t i = 0; i < PROTO_MAX_EXTENSIONS + 1; i++)
		ext[i] = (proto_ext){.type = (uint16_t)(0x100 + i), .critical = 0};
	uint8_t *buf;
	size_t len;
	build_with(ext, PROTO_MAX_EXTENSIONS + 1, &buf, &len);
	proto_message m;
	psc_err e;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_E_TOO_LARGE);
	assert_non_null(strstr(e.detail, "extensions"));
	free(buf);
}

static void any_flipped_byte_fails_verification_or_decoding(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	message(PSC_MSG_REFRESH_REQ, &buf, &len);
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		proto_message m;
		psc_err e;
		psc_rc rc = proto_message_decode(buf, len, &m, &e);
		if (rc == PSC_OK) {
			rc = proto_message_verify(&m, signer.key, &e);
			/* ForwardingHeader fields outside the signature input may
			 * change in transit by design (RFC 6940 §6.3.2, §7.1):
			 * configuration_sequence, ttl, max_response_length and the
			 * destination list. PSC semantics never depend on them. */
			int unsigned_field = i == 8 || i == 9 || i == 11 ||
					     (i >= 28 && i < 32) || (i >= 40 && i < 56);
			if (!unsigned_field && rc == PSC_OK) {
				const uint8_t *der;
				size_t dl;
				/* A flipped byte inside the carried certificate leaves
				 * the signature valid but breaks the identity binding. */
				if (proto_message_signer_cert(&m, &der, &dl) == PSC_OK)
					fail_msg("flipping byte %zu still verifies", i);
			}
		}
		buf[i] ^= 0x01;
	}
	free(buf);
}

static void signature_by_another_key_is_rejected(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	message(PSC_MSG_JOIN_REQ, &buf, &len);
	proto_message m;
	psc_err e;
	assert_int_equal(proto_message_decode(buf, len, &m, &e), PSC_OK);
	EVP_PKEY *other = EVP_RSA_gen(2048);
	assert_non_null(other);
	assert_int_equal(proto_message_verify(&m, other, &e), PSC_E_BAD_SIGNATURE);
	assert_non_null(strstr(e.detail, "does not verify"));
	EVP_PKEY_free(other);
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	assert_int_equal(proto_message_verify(&m, ec, &e), PSC_E_BAD_SIGNATURE);
	EVP_PKEY_free(ec);
	free(buf);
}

static void error_response_round_trip_and_bad_code(void **state)
{
	(void)state;
	proto_error pe = {.error_code = PSC_RERR_FORBIDDEN,
			  .psc_reason = PSC_REASON_POLICY_DENIED,
			  .text = (const uint8_t *)"denied by rule r7",
			  .text_len = 17};
	uint8_t *buf;
	size_t len;
	assert_int_equal(proto_error_encode(&pe, &buf, &len), PSC_OK);
	proto_error d;
	psc_err e;
	assert_int_equal(proto_error_decode(buf, len, &d, &e), PSC_OK);
	assert_int_equal(d.error_code, PSC_RERR_FORBIDDEN);
	assert_int_equal(d.psc_reason, PSC_REASON_POLICY_DENIED);
	assert_int_equal(d.text_len, 17);
	assert_memory_equal(d.text, "denied by rule r7", 17);
	assert_string_equal(proto_reload_error_name(d.error_code), "Forbidden");
	buf[1] = 99;
	assert_int_equal(proto_error_decode(buf, len, &d, &e), PSC_E_BAD_ERROR_CODE);
	free(buf);
}

static void overlay_hash_is_low_32_bits_of_sha1(void **state)
{
	(void)state;
	/* SHA-1("psc.test") = ...; its last 4 bytes, big-endian. */
	uint8_t h[20];
	SHA1((const uint8_t *)"psc.test", 8, h);
	uint32_t want = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
	assert_int_equal(proto_overlay_hash("psc.test"), want);
}

/* n Refresh messages under one signature; returns the messages. */
static void build_refresh_batch(const proto_signer *sg, size_t n, uint8_t **outs, size_t *lens)
{
	psc_body b;
	sample_body(PSC_MSG_REFRESH_REQ, &b);
	proto_envelope *envs = calloc(n, sizeof(*envs));
	const uint8_t **bodies = calloc(n, sizeof(*bodies));
	size_t *blens = calloc(n, sizeof(*blens));
	uint8_t **owned = calloc(n, sizeof(*owned));
	for (size_t i = 0; i < n; i++) {
		b.u.refresh_req.material.epoch = 100 + i; /* every member's part differs */
		assert_int_equal(proto_body_encode(&b, &owned[i], &blens[i], NULL), PSC_OK);
		bodies[i] = owned[i];
		envs[i] = (proto_envelope){.overlay = 7, .transaction_id = 1000 + i,
					   .code = PSC_MSG_REFRESH_REQ};
	}
	psc_err e;
	if (proto_message_build_batch(envs, bodies, blens, n, sg, outs, lens, &e) != PSC_OK)
		fail_msg("batch of %zu: %s", n, psc_err_text(&e));
	for (size_t i = 0; i < n; i++)
		free(owned[i]);
	free(owned);
	free(envs);
	free(bodies);
	free(blens);
}

static void batch_signature_covers_every_message(void **state)
{
	(void)state;
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	proto_signer ecs = signer.signer;
	ecs.key = ec;
	const proto_signer *signers[] = {&signer.signer, &ecs};
	const size_t sizes[] = {1, 2, 3, 7, 16, 33};
	for (size_t k = 0; k < 2; k++) {
		for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
			size_t n = sizes[si];
			uint8_t *outs[33];
			size_t lens[33];
			build_refresh_batch(signers[k], n, outs, lens);
			for (size_t i = 0; i < n; i++) {
				proto_message m;
				psc_err e;
				assert_int_equal(proto_message_decode(outs[i], lens[i], &m, &e),
						 PSC_OK);
				assert_int_equal(m.sig_alg, k == 0 ? PROTO_SIG_BATCH_RSA
								   : PROTO_SIG_BATCH_ECDSA);
				if (proto_message_verify(&m, signers[k]->key, &e) != PSC_OK)
					fail_msg("n=%zu i=%zu: %s", n, i, psc_err_text(&e));
				free(outs[i]);
			}
		}
	}
	EVP_PKEY_free(ec);
}

static void batch_tampering_is_detected(void **state)
{
	(void)state;
	uint8_t *outs[7];
	size_t lens[7];
	build_refresh_batch(&signer.signer, 7, outs, lens);
	proto_message m, m2;
	psc_err e;
	/* A flipped body byte takes the message out of the batch. */
	outs[3][60] ^= 1;
	assert_int_equal(proto_message_decode(outs[3], lens[3], &m, &e), PSC_OK);
	assert_int_equal(proto_message_verify(&m, signer.key, &e), PSC_E_BAD_SIGNATURE);
	assert_non_null(strstr(e.detail, "not in the signed batch"));
	outs[3][60] ^= 1;
	/* Message 2's signature value grafted onto message 5 does not verify. */
	assert_int_equal(proto_message_decode(outs[5], lens[5], &m, &e), PSC_OK);
	assert_int_equal(proto_message_decode(outs[2], lens[2], &m2, &e), PSC_OK);
	m.sig_value = m2.sig_value;
	m.sig_len = m2.sig_len;
	assert_int_equal(proto_message_verify(&m, signer.key, &e), PSC_E_BAD_SIGNATURE);
	/* A leaf index out of range is rejected. */
	assert_int_equal(proto_message_decode(outs[1], lens[1], &m, &e), PSC_OK);
	uint8_t *sv = (uint8_t *)m.sig_value; /* points into outs[1] */
	sv[7] = 9;
	assert_int_equal(proto_message_verify(&m, signer.key, &e), PSC_E_BAD_SIGNATURE);
	assert_non_null(strstr(e.detail, "not a valid position"));
	/* Another key does not verify the root. */
	assert_int_equal(proto_message_decode(outs[0], lens[0], &m, &e), PSC_OK);
	EVP_PKEY *other = EVP_RSA_gen(2048);
	assert_int_equal(proto_message_verify(&m, other, &e), PSC_E_BAD_SIGNATURE);
	EVP_PKEY_free(other);
	for (size_t i = 0; i < 7; i++)
		free(outs[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_body_round_trips),
		cmocka_unit_test(decoded_fields_match_what_was_sent),
		cmocka_unit_test(every_body_truncation_is_rejected),
		cmocka_unit_test(trailing_body_bytes_are_rejected),
		cmocka_unit_test(unknown_codes_are_rejected),
		cmocka_unit_test(unknown_enum_and_flag_values_are_rejected),
		cmocka_unit_test(oversized_lists_are_rejected_by_encoder_and_decoder),
		cmocka_unit_test(every_message_decodes_and_verifies),
		cmocka_unit_test(every_message_truncation_is_rejected),
		cmocka_unit_test(bad_relo_token_version_fragment_length),
		cmocka_unit_test(trailing_message_bytes_are_rejected),
		cmocka_unit_test(oversize_message_is_rejected_before_parsing),
		cmocka_unit_test(unknown_critical_extension_is_rejected),
		cmocka_unit_test(too_many_extensions_are_rejected),
		cmocka_unit_test(any_flipped_byte_fails_verification_or_decoding),
		cmocka_unit_test(signature_by_another_key_is_rejected),
		cmocka_unit_test(error_response_round_trip_and_bad_code),
		cmocka_unit_test(overlay_hash_is_low_32_bits_of_sha1),
		cmocka_unit_test(batch_signature_covers_every_message),
		cmocka_unit_test(batch_tampering_is_detected),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
