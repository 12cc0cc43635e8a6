/*
 * pol_tz — TZif (RFC 8536) reader and UTC-offset lookup (see pol_tz.h).
 *
 * Only the version 2+ 64-bit section is used: the 32-bit block ends in 2038
 * and exists for old readers. Leap-second records are skipped (zoneinfo's
 * "right/" zones are not meant for civil time windows).
 */
#include "pol_tz.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_policy.h"

enum rule_kind { RULE_JULIAN1, RULE_JULIAN0, RULE_MWD };

struct tz_rule {
	enum rule_kind kind;
	int m, w, d;  /* Mm.w.d */
	int n;	      /* Jn (1..365) or n (0..365) */
	int32_t time; /* seconds after local midnight (may be negative or > 24h) */
};

struct pol_tz {
	const char *name;
	bool fixed;
	int32_t fixed_off;
	/* transitions */
	size_t n;
	const int64_t *times;
	const uint8_t *idx;
	size_t ntypes;
	const int32_t *type_off;
	/* footer (after the last transition) */
	bool has_footer, footer_dst;
	int32_t std_off, dst_off; /* seconds east of UTC */
	struct tz_rule start, end;
};

static void why_set(char *why, size_t len, const char *s)
{
	if (why && len)
		snprintf(why, len, "%s", s);
}

int64_t pol_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

void pol_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ---- POSIX TZ string (the TZif footer) ------------------------------------- */

static bool p_name(const char **sp)
{
	const char *s = *sp;
	if (*s == '<') {
		s++;
		while (*s && *s != '>')
			s++;
		if (*s != '>' || s - *sp < 4)
			return false;
		*sp = s + 1;
		return true;
	}
	while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
		s++;
	if (s - *sp < 3)
		return false;
	*sp = s;
	return true;
}

static bool p_num(const char **sp, int lo, int hi, int *out)
{
	const char *s = *sp;
	int v = 0, digits = 0;
	while (*s >= '0' && *s <= '9' && digits < 4) {
		v = v * 10 + (*s - '0');
		s++;
		digits++;
	}
	if (!digits || v < lo || v > hi)
		return false;
	*sp = s;
	*out = v;
	return true;
}

/* [+-]hh[:mm[:ss]] in seconds, hours up to max_h. */
static bool p_hms(const char **sp, int max_h, int32_t *out)
{
	const char *s = *sp;
	int sign = 1, h, m = 0, sec = 0;
	if (*s == '+' || *s == '-') {
		sign = *s == '-' ? -1 : 1;
		s++;
	}
	if (!p_num(&s, 0, max_h, &h))
		return false;
	if (*s == ':') {
		s++;
		if (!p_num(&s, 0, 59, &m))
			return false;
		if (*s == ':') {
			s++;
			if (!p_num(&s, 0, 59, &sec))
				return false;
		}
	}
	*out = sign * (h * 3600 + m * 60 + sec);
	*sp = s;
	return true;
}

static bool p_rule(const char **sp, struct tz_rule *r)
{
	const char *s = *sp;
	if (*s == 'M') {
		s++;
		r->kind = RULE_MWD;
		if (!p_num(&s, 1, 12, &r->m) || *s++ != '.' || !p_num(&s, 1, 5, &r->w) ||
		    *s++ != '.' || !p_num(&s, 0, 6, &r->d))
			return false;
	} else if (*s == 'J') {
		s++;
		r->kind = RULE_JULIAN1;
		if (!p_num(&s, 1, 365, &r->n))
			return false;
	} else {
		r->kind = RULE_JULIAN0;
		if (!p_num(&s, 0, 365, &r->n))
			return false;
	}
	r->time = 2 * 3600;
	if (*s == '/') {
		s++;
		if (!p_hms(&s, 167, &r->time))
			return false;
	}
	*sp = s;
	return true;
}

static bool parse_footer(struct pol_tz *tz, const char *s)
{
	int32_t off;
	if (!p_name(&s) || !p_hms(&s, 24, &off))
		return false;
	tz->std_off = -off; /* POSIX offsets are west-positive */
	tz->has_footer = true;
	if (!*s)
		return true;
	if (!p_name(&s))
		return false;
	tz->footer_dst = true;
	tz->dst_off = tz->std_off + 3600;
	if (*s && *s != ',') {
		if (!p_hms(&s, 24, &off))
			return false;
		tz->dst_off = -off;
	}
	if (*s++ != ',' || !p_rule(&s, &tz->start) || *s++ != ',' || !p_rule(&s, &tz->end))
		return false;
	return *s == '\0';
}

/* Local-midnight day number (days since epoch) a rule names in year y. */
static int64_t rule_day(const struct tz_rule *r, int64_t y)
{
	switch (r->kind) {
	case RULE_JULIAN1: {
		int64_t d = pol_days_from_civil(y, 1, 1) + r->n - 1;
		if (is_leap(y) && r->n >= 60)
			d++; /* Jn never counts February 29 */
		return d;
	}
	case RULE_JULIAN0:
		return pol_days_from_civil(y, 1, 1) + r->n;
	case RULE_MWD:
	default: {
		int64_t first = pol_days_from_civil(y, (unsigned)r->m, 1);
		int wd = (int)((first + 4) % 7 + 7) % 7; /* 1970-01-01 was a Thursday */
		int64_t d = first + (r->d - wd + 7) % 7 + (int64_t)(r->w - 1) * 7;
		unsigned nm = r->m == 12 ? 1 : (unsigned)r->m + 1;
		int64_t next = pol_days_from_civil(r->m == 12 ? y + 1 : y, nm, 1);
		while (d >= next)
			d -= 7;
		return d;
	}
	}
}

static int32_t footer_offset(const struct pol_tz *tz, int64_t t)
{
	if (!tz->footer_dst)
		return tz->std_off;
	int64_t y;
	unsigned m, d;
	pol_civil_from_days(floor_div(t + tz->std_off, 86400), &y, &m, &d);
	int64_t start = rule_day(&tz->start, y) * 86400 + tz->start.time - tz->std_off;
	int64_t end = rule_day(&tz->end, y) * 86400 + tz->end.time - tz->dst_off;
	bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
	return dst ? tz->dst_off : tz->std_off;
}

/* ---- TZif ----------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_hdr {
	uint32_t isut, isstd, leap, timecnt, typecnt, charcnt;
};

static bool read_hdr(const uint8_t *p, size_t left, struct tzif_hdr *h, char *ver)
{
	if (left < 44 || memcmp(p, "TZif", 4) != 0)
		return false;
	*ver = (char)p[4];
	h->isut = be32(p + 20);
	h->isstd = be32(p + 24);
	h->leap = be32(p + 28);
	h->timecnt = be32(p + 32);
	h->typecnt = be32(p + 36);
	h->charcnt = be32(p + 40);
	return true;
}

static uint64_t block_len(const struct tzif_hdr *h, unsigned tsize)
{
	return (uint64_t)h->timecnt * tsize + h->timecnt + (uint64_t)h->typecnt * 6 + h->charcnt +
	       (uint64_t)h->leap * (tsize + 4) + h->isstd + h->isut;
}

psc_rc pol_tz_parse(pol_arena *a, const uint8_t *buf, size_t len, const pol_tz **out, char *why,
		    size_t why_len)
{
	struct tzif_hdr h;
	char ver;
	if (!read_hdr(buf, len, &h, &ver)) {
		why_set(why, why_len, "not a TZif file");
		return PSC_E_POLICY_ZONE;
	}
	if (ver < '2') {
		why_set(why, why_len, "TZif version 1 file; version 2 or later is needed");
		return PSC_E_POLICY_ZONE;
	}
	uint64_t skip = 44 + block_len(&h, 4);
	if (skip > len || !read_hdr(buf + skip, len - skip, &h, &ver)) {
		why_set(why, why_len, "truncated TZif file (no 64-bit section)");
		return PSC_E_POLICY_ZONE;
	}
	const uint8_t *p = buf + skip + 44;
	size_t left = len - (size_t)skip - 44;
	if (h.typecnt == 0 || h.typecnt > POL_TZ_TYPES_MAX || h.timecnt > POL_TZ_TRANSITIONS_MAX ||
	    h.charcnt == 0 || (h.isstd != 0 && h.isstd != h.typecnt) ||
	    (h.isut != 0 && h.isut != h.typecnt) || block_len(&h, 8) > left) {
		why_set(why, why_len, "TZif header counts are inconsistent or too large");
		return PSC_E_POLICY_ZONE;
	}
	struct pol_tz *tz = pol_arena_alloc(a, sizeof(*tz));
	int64_t *times = pol_arena_alloc(a, (h.timecnt + 1) * sizeof(*times));
	uint8_t *idx = pol_arena_alloc(a, h.timecnt + 1);
	int32_t *offs = pol_arena_alloc(a, h.typecnt * sizeof(*offs));
	if (!tz || !times || !idx || !offs)
		return PSC_E_NOMEM;
	for (uint32_t i = 0; i < h.timecnt; i++) {
		times[i] = be64(p + 8 * i);
		if (i && times[i] <= times[i - 1]) {
			why_set(why, why_len, "TZif transition times are not ascending");
			return PSC_E_POLICY_ZONE;
		}
	}
	p += 8 * (size_t)h.timecnt;
	for (uint32_t i = 0; i < h.timecnt; i++) {
		idx[i] = p[i];
		if (idx[i] >= h.typecnt) {
			why_set(why, why_len, "TZif transition names an undefined time type");
			return PSC_E_POLICY_ZONE;
		}
	}
	p += h.timecnt;
	for (uint32_t i = 0; i < h.typecnt; i++) {
		int32_t off = (int32_t)be32(p + 6 * i);
		if (off < -25 * 3600 || off > 26 * 3600) {
			why_set(why, why_len, "TZif time type has an offset beyond +-26 hours");
			return PSC_E_POLICY_ZONE;
		}
		offs[i] = off;
	}
	size_t rest = (size_t)block_len(&h, 8) - 9 * (size_t)h.timecnt;
	p += rest;
	left -= (size_t)block_len(&h, 8);
	tz->times = times;
	tz->idx = idx;
	tz->n = h.timecnt;
	tz->type_off = offs;
	tz->ntypes = h.typecnt;
	/* Footer: "\n" POSIX-TZ "\n"; empty means "no rule after the last transition". */
	if (left < 2 || p[0] != '\n') {
		why_set(why, why_len, "TZif file has no footer line");
		return PSC_E_POLICY_ZONE;
	}
	const uint8_t *nl = memchr(p + 1, '\n', left - 1);
	if (!nl || nl - p - 1 > 128) {
		why_set(why, why_len, "TZif footer is unterminated or too long");
		return PSC_E_POLICY_ZONE;
	}
	char footer[130];
	memcpy(footer, p + 1, (size_t)(nl - p - 1));
	footer[nl - p - 1] = '\0';
	if (footer[0] && !parse_footer(tz, footer)) {
		why_set(why, why_len,
			"TZif footer is not a POSIX TZ string this reader understands");
		return PSC_E_POLICY_ZONE;
	}
	*out = tz;
	return PSC_OK;
}

static bool zone_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > POL_TZ_NAME_MAX || name[0] == '/' || name[0] == '-')
		return false;
	for (const char *c = name; *c; c++) {
		bool ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			  (*c >= '0' && *c <= '9') || *c == '/' || *c == '_' || *c == '+' ||
			  *c == '-';
		if (!ok || (*c == '/' && c[1] == '/'))
			return false;
	}
	return name[n - 1] != '/';
}

/* "+HH:MM" / "-HH:MM" / "UTC". */
static bool fixed_offset(const char *s, int32_t *off)
{
	if (strcmp(s, "UTC") == 0) {
		*off = 0;
		return true;
	}
	if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':')
		return false;
	for (int i = 1; i < 6; i++)
		if (i != 3 && (s[i] < '0' || s[i] > '9'))
			return false;
	int h = (s[1] - '0') * 10 + (s[2] - '0');
	int m = (s[4] - '0') * 10 + (s[5] - '0');
	if (h > 18 || m > 59)
		return false;
	*off = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
	return true;
}

psc_rc pol_tz_load(pol_arena *a, const char *name, const char *dir, const pol_tz **out, char *why,
		   size_t why_len)
{
	int32_t off;
	if (name[0] == '+' || name[0] == '-' || strcmp(name, "UTC") == 0) {
		if (!fixed_offset(name, &off)) {
			why_set(why, why_len,
				"a UTC offset must look like +HH:MM or -HH:MM, at most 18 hours");
			return PSC_E_POLICY_ZONE;
		}
		struct pol_tz *tz = pol_arena_alloc(a, sizeof(*tz));
		if (!tz || !(tz->name = pol_arena_strndup(a, name, strlen(name))))
			return PSC_E_NOMEM;
		tz->fixed = true;
		tz->fixed_off = off;
		*out = tz;
		return PSC_OK;
	}
	if (!zone_name_ok(name)) {
		why_set(why, why_len,
			"not a zone name: use an IANA name like Europe/Berlin (letters, digits, "
			"'/', '_', '+', '-'), UTC, or +HH:MM");
		return PSC_E_POLICY_ZONE;
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/usr/share/zoneinfo", name);
	FILE *f = fopen(path, "rb");
	if (!f) {
		if (why && why_len)
			snprintf(why, why_len, "unknown time zone (%s: %s); is tzdata installed?",
				 path, strerror(errno));
		return PSC_E_POLICY_ZONE;
	}
	uint8_t *buf = malloc(POL_TZ_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return PSC_E_NOMEM;
	}
	size_t n = fread(buf, 1, POL_TZ_FILE_MAX + 1, f);
	fclose(f);
	psc_rc rc;
	const pol_tz *tz = NULL;
	if (n > POL_TZ_FILE_MAX) {
		why_set(why, why_len, "zoneinfo file is too large");
		rc = PSC_E_POLICY_ZONE;
	} else {
		rc = pol_tz_parse(a, buf, n, &tz, why, why_len);
	}
	free(buf);
	if (rc != PSC_OK)
		return rc;
	((struct pol_tz *)tz)->name = pol_arena_strndup(a, name, strlen(name));
	if (!tz->name)
		return PSC_E_NOMEM;
	*out = tz;
	return PSC_OK;
}

int32_t pol_tz_offset(const pol_tz *tz, int64_t t)
{
	if (tz->fixed)
		return tz->fixed_off;
	if (tz->n == 0 || t < tz->times[0]) {
		if (tz->n == 0 && tz->has_footer)
			return footer_offset(tz, t);
		return tz->type_off[0];
	}
	if (t >= tz->times[tz->n - 1] && tz->has_footer)
		return footer_offset(tz, t);
	/* Last transition at or before t. */
	size_t lo = 0, hi = tz->n; /* times[lo] <= t < times[hi] */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (tz->times[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return tz->type_off[tz->idx[lo]];
}

const char *pol_tz_name(const pol_tz *tz)
{
	return tz->name ? tz->name : "?";
}
