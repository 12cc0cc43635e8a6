/* proto_merkle_tree (build once, many paths) must agree with the RFC 9162
 * recursive definitions in proto_merkle for every tree size and leaf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "proto_merkle.h"

static void tree_matches_rfc_paths_and_roots(void **state)
{
	(void)state;
	uint8_t(*leaves)[32] = malloc(130 * 32);
	for (size_t i = 0; i < 130; i++) {
		uint8_t data[8] = {(uint8_t)i, (uint8_t)(i >> 8), 1, 2, 3, 4, 5, 6};
		proto_merkle_leaf(data, sizeof(data), leaves[i]);
	}
	for (size_t n = 1; n <= 130; n++) {
		proto_merkle_tree *t = NULL;
		assert_int_equal(proto_merkle_tree_new(&t, (const uint8_t(*)[32])leaves, n), PSC_OK);
		uint8_t r1[32], r2[32];
		proto_merkle_tree_root(t, r1);
		assert_int_equal(proto_merkle_root((const uint8_t(*)[32])leaves, n, r2), PSC_OK);
		assert_memory_equal(r1, r2, 32);
		for (size_t i = 0; i < n; i++) {
			uint8_t p1[64][32], p2[64][32];
			size_t l1 = 0, l2 = 0;
			assert_int_equal(proto_merkle_tree_path(t, i, p1, 64, &l1), PSC_OK);
			assert_int_equal(proto_merkle_path((const uint8_t(*)[32])leaves, n, i, p2, 64,
							   &l2),
					 PSC_OK);
			assert_int_equal(l1, l2);
			assert_memory_equal(p1, p2, l1 * 32);
			assert_int_equal(proto_merkle_verify_path(leaves[i], i, n,
								  (const uint8_t(*)[32])p1, l1, r1),
					 PSC_OK);
		}
		size_t l = 0;
		uint8_t p[64][32];
		assert_int_equal(proto_merkle_tree_path(t, n, p, 64, &l), PSC_E_INVALID_ARG);
		proto_merkle_tree_free(&t);
		assert_null(t);
	}
	proto_merkle_tree *t = NULL;
	assert_int_equal(proto_merkle_tree_new(&t, (const uint8_t(*)[32])leaves, 0),
			 PSC_E_INVALID_ARG);
	proto_merkle_tree_free(&t);
	free(leaves);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tree_matches_rfc_paths_and_roots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
