#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "proto_buf.h"

static void ints_round_trip_big_endian(void **state)
{
	(void)state;
	proto_wr w;
	proto_wr_init(&w, 64);
	proto_wr_u8(&w, 0x12);
	proto_wr_u16(&w, 0x3456);
	proto_wr_u32(&w, 0x789abcdeu);
	proto_wr_u64(&w, 0x0102030405060708ull);
	uint8_t *buf;
	size_t len;
	assert_int_equal(proto_wr_take(&w, &buf, &len), PSC_OK);
	const uint8_t want[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 1, 2, 3, 4, 5, 6, 7, 8};
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(buf, want, len);

	proto_rd r;
	proto_rd_init(&r, buf, len);
	assert_int_equal(proto_rd_u8(&r, "a"), 0x12);
	assert_int_equal(proto_rd_u16(&r, "b"), 0x3456);
	assert_int_equal(proto_rd_u32(&r, "c"), 0x789abcdeu);
	assert_true(proto_rd_u64(&r, "d") == 0x0102030405060708ull);
	assert_int_equal(proto_rd_finish(&r, "x"), PSC_OK);
	free(buf);
}

static void truncation_is_sticky_and_named(void **state)
{
	(void)state;
	const uint8_t in[] = {0, 1, 2};
	proto_rd r;
	proto_rd_init(&r, in, sizeof(in));
	assert_int_equal(proto_rd_u16(&r, "first"), 1);
	assert_int_equal(proto_rd_u32(&r, "second"), 0);
	assert_int_equal(r.err, PSC_E_TRUNCATED);
	assert_string_equal(r.err_field, "second");
	assert_int_equal(r.err_off, 2);
	/* Sticky: later reads are no-ops and keep the first error. */
	assert_int_equal(proto_rd_u8(&r, "third"), 0);
	assert_string_equal(r.err_field, "second");
	assert_int_equal(proto_rd_finish(&r, "msg"), PSC_E_TRUNCATED);
}

static void trailing_bytes_are_an_error(void **state)
{
	(void)state;
	const uint8_t in[] = {0, 1, 2};
	proto_rd r;
	proto_rd_init(&r, in, sizeof(in));
	(void)proto_rd_u16(&r, "x");
	assert_int_equal(proto_rd_finish(&r, "body"), PSC_E_TRAILING);
	assert_string_equal(r.err_field, "body");
}

static void vectors_check_bounds_every_prefix_width(void **state)
{
	(void)state;
	for (unsigned prefix = 1; prefix <= 4; prefix++) {
		uint8_t in[8] = {0};
		in[prefix - 1] = 3; /* length 3, then 3 bytes */
		in[prefix] = 'a';
		in[prefix + 1] = 'b';
		in[prefix + 2] = 'c';
		proto_rd r;
		size_t n;
		proto_rd_init(&r, in, prefix + 3);
		const uint8_t *p = proto_rd_vec(&r, prefix, 1, 8, &n, "v");
		assert_non_null(p);
		assert_int_equal(n, 3);
		assert_memory_equal(p, "abc", 3);
		assert_int_equal(proto_rd_finish(&r, "v"), PSC_OK);

		proto_rd_init(&r, in, prefix + 3);
		assert_null(proto_rd_vec(&r, prefix, 0, 2, &n, "over"));
		assert_int_equal(r.err, PSC_E_TOO_LARGE);
		assert_string_equal(r.err_field, "over");

		proto_rd_init(&r, in, prefix + 3);
		assert_null(proto_rd_vec(&r, prefix, 4, 8, &n, "under"));
		assert_int_equal(r.err, PSC_E_BAD_VALUE);

		proto_rd_init(&r, in, prefix + 2);
		assert_null(proto_rd_vec(&r, prefix, 0, 8, &n, "short"));
		assert_int_equal(r.err, PSC_E_TRUNCATED);
	}
}

static void huge_declared_length_never_allocates_or_reads(void **state)
{
	(void)state;
	const uint8_t in[] = {0xff, 0xff, 0xff, 0xff, 1};
	proto_rd r;
	size_t n = 99;
	proto_rd_init(&r, in, sizeof(in));
	assert_null(proto_rd_vec(&r, 4, 0, 0xffffffffu, &n, "big"));
	assert_int_equal(r.err, PSC_E_TRUNCATED);
	assert_int_equal(n, 0);
}

static void subreader_reports_absolute_offset(void **state)
{
	(void)state;
	const uint8_t in[] = {9, 0, 3, 1, 2, 3};
	proto_rd r, sub;
	proto_rd_init(&r, in, sizeof(in));
	(void)proto_rd_u8(&r, "lead");
	proto_rd_subvec(&r, &sub, 2, 0, 10, "inner");
	(void)proto_rd_u16(&sub, "a");
	(void)proto_rd_u16(&sub, "b"); /* only one byte left */
	proto_rd_sub_done(&r, &sub);
	assert_int_equal(r.err, PSC_E_TRUNCATED);
	assert_string_equal(r.err_field, "b");
	assert_int_equal(r.err_off, 5);
}

static void writer_cap_is_hard(void **state)
{
	(void)state;
	proto_wr w;
	proto_wr_init(&w, 4);
	proto_wr_u32(&w, 1);
	proto_wr_u8(&w, 2);
	assert_int_equal(w.err, PSC_E_TOO_LARGE);
	uint8_t *buf;
	size_t len;
	assert_int_equal(proto_wr_take(&w, &buf, &len), PSC_E_TOO_LARGE);
	assert_null(buf);
}

static void writer_vectors_fill_prefix_and_check_bounds(void **state)
{
	(void)state;
	proto_wr w;
	proto_wr_init(&w, 1024);
	size_t m = proto_wr_vec_open(&w, 2);
	proto_wr_bytes(&w, "hello", 5);
	proto_wr_vec_close(&w, m, 2, 1, 10, "greeting");
	proto_wr_vec(&w, 1, 0, 3, "abcd", 4, "toolong");
	assert_int_equal(w.err, PSC_E_TOO_LARGE);
	assert_string_equal(w.err_field, "toolong");
	proto_wr_free(&w);

	proto_wr_init(&w, 1024);
	m = proto_wr_vec_open(&w, 2);
	proto_wr_bytes(&w, "hello", 5);
	proto_wr_vec_close(&w, m, 2, 1, 10, "greeting");
	uint8_t *buf;
	size_t len;
	assert_int_equal(proto_wr_take(&w, &buf, &len), PSC_OK);
	assert_int_equal(len, 7);
	assert_int_equal(buf[0], 0);
	assert_int_equal(buf[1], 5);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ints_round_trip_big_endian),
		cmocka_unit_test(truncation_is_sticky_and_named),
		cmocka_unit_test(trailing_bytes_are_an_error),
		cmocka_unit_test(vectors_check_bounds_every_prefix_width),
		cmocka_unit_test(huge_declared_length_never_allocates_or_reads),
		cmocka_unit_test(subreader_reports_absolute_offset),
		cmocka_unit_test(writer_cap_is_hard),
		cmocka_unit_test(writer_vectors_fill_prefix_and_check_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
