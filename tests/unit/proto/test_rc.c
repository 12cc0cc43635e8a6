#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "psc_rc.h"

struct seen {
	int count;
	int values[1024];
};

static void check_one(psc_rc rc, const char *name, const char *text, void *arg)
{
	struct seen *s = arg;
	assert_non_null(name);
	assert_non_null(text);
	assert_true(strlen(text) > 3);
	assert_string_not_equal(text, "unknown error code");
	assert_string_equal(psc_strerror(rc), text);
	assert_string_equal(psc_rc_name(rc), name);
	/* Codes are unique and non-positive. */
	assert_true((int)rc <= 0);
	for (int i = 0; i < s->count; i++)
		assert_int_not_equal(s->values[i], (int)rc);
	assert_true(s->count < 1024);
	s->values[s->count++] = (int)rc;
}

static void every_code_has_a_string(void **state)
{
	(void)state;
	struct seen s = {0};
	psc_rc_foreach(check_one, &s);
	assert_true(s.count > 20);
}

static void unknown_code_is_named_unknown(void **state)
{
	(void)state;
	assert_string_equal(psc_strerror((psc_rc)-9999), "unknown error code");
	assert_null(psc_rc_name((psc_rc)-9999));
}

static void err_detail_formats_and_falls_back(void **state)
{
	(void)state;
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(psc_err_set(&e, PSC_E_TRUNCATED, "field '%s' at offset %d", "psc_id", 42),
			 PSC_E_TRUNCATED);
	assert_string_equal(psc_err_text(&e), "field 'psc_id' at offset 42");
	psc_err_clear(&e);
	e.rc = PSC_E_BAD_TOKEN;
	assert_string_equal(psc_err_text(&e), psc_strerror(PSC_E_BAD_TOKEN));
	assert_int_equal(psc_err_set(NULL, PSC_E_NOMEM, "x"), PSC_E_NOMEM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_code_has_a_string),
		cmocka_unit_test(unknown_code_is_named_unknown),
		cmocka_unit_test(err_detail_formats_and_falls_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
