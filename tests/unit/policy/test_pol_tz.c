/* Time zones: TZif offsets against glibc, DST changes in Europe/Berlin and
 * America/New_York, time windows across them, fixed offsets, bad TZif data. */
#include <stdlib.h>
#include <time.h>

#include "pol_testutil.h"
#include "pol_tz.h"
#include "psc_test.h"

static const pol_tz *zone(pol_arena *a, const char *name)
{
	const pol_tz *tz = NULL;
	char why[300];
	psc_rc rc = pol_tz_load(a, name, NULL, &tz, why, sizeof(why));
	if (rc != PSC_OK)
		fail_msg("zone %s: %s", name, why);
	return tz;
}

/* Known instants from the tz database (2026 rules). */
static void dst_changes_berlin_and_new_york(void **state)
{
	(void)state;
	pol_arena *a = NULL;
	assert_int_equal(pol_arena_new(&a), PSC_OK);
	const pol_tz *be = zone(a, "Europe/Berlin"), *ny = zone(a, "America/New_York");
	/* Berlin: 2026-03-29 01:00 UTC spring forward, 2026-10-25 01:00 UTC fall back */
	int64_t spring = 1774746000; /* 2026-03-29T01:00:00Z */
	int64_t fall = 1792890000;   /* 2026-10-25T01:00:00Z */
	assert_int_equal(pol_tz_offset(be, spring - 1), 3600);
	assert_int_equal(pol_tz_offset(be, spring), 7200);
	assert_int_equal(pol_tz_offset(be, fall - 1), 7200);
	assert_int_equal(pol_tz_offset(be, fall), 3600);
	/* New York: 2026-03-08 07:00 UTC and 2026-11-01 06:00 UTC */
	int64_t ny_spring = 1772953200, ny_fall = 1793512800;
	assert_int_equal(pol_tz_offset(ny, ny_spring - 1), -5 * 3600);
	assert_int_equal(pol_tz_offset(ny, ny_spring), -4 * 3600);
	assert_int_equal(pol_tz_offset(ny, ny_fall - 1), -4 * 3600);
	assert_int_equal(pol_tz_offset(ny, ny_fall), -5 * 3600);
	/* Past the file's last transition the POSIX footer rule applies. */
	assert_int_equal(pol_tz_offset(be, 2224540800), 7200); /* 2040-06-29 */
	assert_int_equal(pol_tz_offset(be, 2208988800), 3600); /* 2040-01-01 */
	assert_string_equal(pol_tz_name(be), "Europe/Berlin");
	pol_arena_free(&a);
	assert_null(a);
}

static int32_t glibc_offset(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	localtime_r(&tt, &tm);
	return (int32_t)tm.tm_gmtoff;
}

/* Every 6 hours from 1900 to 2100 in several zones (northern and southern
 * DST, half-hour offsets, no DST): our reader agrees with glibc. The test,
 * not the library, sets TZ. */
static void offsets_agree_with_glibc(void **state)
{
	(void)state;
	const char *zones[] = {
	    "Europe/Berlin",	 "America/New_York", "Australia/Sydney", "Asia/Kolkata",
	    "America/Sao_Paulo", "Pacific/Chatham",  "Europe/London",	 "UTC"};
	pol_arena *a = NULL;
	assert_int_equal(pol_arena_new(&a), PSC_OK);
	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		const pol_tz *tz = zone(a, zones[z]);
		char env[128];
		snprintf(env, sizeof(env), ":%s", zones[z]);
		setenv("TZ", env, 1);
		tzset();
		size_t bad = 0;
		for (int64_t t = -2208988800LL; t < 4102444800LL; t += 6 * 3600 + 17) {
			if (pol_tz_offset(tz, t) != glibc_offset(t) && bad++ < 3)
				print_message("%s at %lld: ours %d glibc %d\n", zones[z],
					      (long long)t, pol_tz_offset(tz, t), glibc_offset(t));
		}
		assert_int_equal(bad, 0);
	}
	unsetenv("TZ");
	pol_arena_free(&a);
}

/* "09:00-17:00 Berlin, Mon-Fri" is 08:00-16:00 UTC in winter and 07:00-15:00
 * UTC in summer; the week of the change shows both. New York likewise. */
static void time_windows_follow_dst(void **state)
{
	(void)state;
	pol_policy *pol =
	    load_ok("version: 1\nrules:\n"
		    "  - {id: be, effect: permit, actions: [join],\n"
		    "     when: {time: {zone: Europe/Berlin, days: [mon, tue, wed, thu, fri], "
		    "from: \"09:00\", to: \"17:00\"}}}\n"
		    "  - {id: ny, effect: permit, actions: [invite],\n"
		    "     when: {time: {zone: America/New_York, from: \"22:00\", to: \"06:00\"}}}\n"
		    "  - {id: fixed, effect: permit, actions: [destroy],\n"
		    "     when: {time: [{zone: \"+05:30\", from: \"09:00\", to: \"10:00\"},\n"
		    "                   {zone: \"-03:00\", from: \"23:00\", to: \"24:00\"}]}}\n");
	struct {
		pol_action a;
		int64_t now;
		pol_outcome want;
	} v[] = {
	    /* Fri 2026-03-27 (CET, UTC+1) */
	    {POL_ACT_JOIN, 1774598400 - 1, POL_DENY},	/* 07:59:59Z = 08:59:59 CET */
	    {POL_ACT_JOIN, 1774598400, POL_PERMIT},	/* 08:00Z = 09:00 CET */
	    {POL_ACT_JOIN, 1774627200 - 1, POL_PERMIT}, /* 15:59:59Z = 16:59:59 CET */
	    {POL_ACT_JOIN, 1774627200, POL_DENY},	/* 16:00Z = 17:00 CET */
	    /* Mon 2026-03-30 (CEST, UTC+2) */
	    {POL_ACT_JOIN, 1774854000 - 1, POL_DENY},	/* 06:59:59Z = 08:59:59 CEST */
	    {POL_ACT_JOIN, 1774854000, POL_PERMIT},	/* 07:00Z = 09:00 CEST */
	    {POL_ACT_JOIN, 1774882800 - 1, POL_PERMIT}, /* 14:59:59Z */
	    {POL_ACT_JOIN, 1774882800, POL_DENY},	/* 15:00Z = 17:00 CEST */
	    /* Sun 2026-03-29 12:00 CEST: weekend */
	    {POL_ACT_JOIN, 1774778400, POL_DENY},
	    /* New York overnight window across the 2026-03-08 change */
	    {POL_ACT_INVITE, 1772938800, POL_PERMIT}, /* Sun 03:00Z = Sat 22:00 EST */
	    {POL_ACT_INVITE, 1772938800 - 1, POL_DENY},
	    {POL_ACT_INVITE, 1772960400 - 1, POL_PERMIT}, /* 08:59:59Z = 04:59:59 EDT */
	    {POL_ACT_INVITE, 1772964000 - 1, POL_PERMIT}, /* 09:59:59Z = 05:59:59 EDT */
	    {POL_ACT_INVITE, 1772964000, POL_DENY},	  /* 10:00Z = 06:00 EDT */
	    {POL_ACT_INVITE, 1772361000, POL_PERMIT},	  /* a week before, 10:30Z = 05:30 EST */
	    {POL_ACT_INVITE, 1772361000 + 7 * 86400, POL_DENY}, /* same UTC time, 06:30 EDT */
	    /* Fixed offsets: 03:30Z = 09:00 +05:30; 02:00Z = 23:00 -03:00 */
	    {POL_ACT_DESTROY, 3 * 3600 + 1800, POL_PERMIT},
	    {POL_ACT_DESTROY, 3 * 3600 + 1799, POL_DENY},
	    {POL_ACT_DESTROY, 2 * 3600, POL_PERMIT},
	    {POL_ACT_DESTROY, 3 * 3600 - 1, POL_PERMIT},
	    {POL_ACT_DESTROY, 3 * 3600, POL_DENY},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		pol_request q;
		pol_psc psc;
		pol_peer inv;
		pol_decision d;
		req_init(&q, &psc, v[i].a, v[i].now);
		peer_init(&inv, "i", "i", 4);
		q.invitee = &inv;
		assert_int_equal(pol_decide(pol, NULL, &q, &d, NULL), PSC_OK);
		if (d.outcome != v[i].want)
			fail_msg("case %zu (now %lld): want %s got %s", i, (long long)v[i].now,
				 pol_outcome_name(v[i].want), pol_outcome_name(d.outcome));
	}
	pol_policy_free(&pol);
}

static void corrupt_tzif_is_rejected(void **state)
{
	(void)state;
	pol_arena *a = NULL;
	assert_int_equal(pol_arena_new(&a), PSC_OK);
	size_t len = 0;
	uint8_t *buf = pt_read_file("/usr/share/zoneinfo/Europe/Berlin", &len);
	assert_non_null(buf);
	const pol_tz *tz = NULL;
	char why[200];
	assert_int_equal(pol_tz_parse(a, buf, len, &tz, why, sizeof(why)), PSC_OK);
	/* every truncation fails cleanly */
	for (size_t n = 0; n < len; n += 7)
		assert_int_equal(pol_tz_parse(a, buf, n, &tz, why, sizeof(why)), PSC_E_POLICY_ZONE);
	assert_int_equal(pol_tz_parse(a, buf, 10, &tz, why, sizeof(why)), PSC_E_POLICY_ZONE);
	assert_string_equal(why, "not a TZif file");
	buf[4] = 0; /* version 1 */
	assert_int_equal(pol_tz_parse(a, buf, len, &tz, why, sizeof(why)), PSC_E_POLICY_ZONE);
	assert_string_equal(why, "TZif version 1 file; version 2 or later is needed");
	free(buf);
	/* a directory is not a zone */
	assert_int_equal(pol_tz_load(a, "Europe", NULL, &tz, why, sizeof(why)), PSC_E_POLICY_ZONE);
	pol_arena_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(dst_changes_berlin_and_new_york),
	    cmocka_unit_test(offsets_agree_with_glibc),
	    cmocka_unit_test(time_windows_follow_dst),
	    cmocka_unit_test(corrupt_tzif_is_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
