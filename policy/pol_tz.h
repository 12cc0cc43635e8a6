/*
 * pol_tz — UTC offsets for time windows, from fixed offsets or TZif files.
 *
 * Owns: reading one IANA zone from the zoneinfo directory at policy load
 * (RFC 8536 TZif version 2+, the 64-bit section, and the POSIX TZ footer for
 * instants after the last transition), and mapping a UTC instant to the
 * zone's offset.
 * Never: read TZ, call localtime()/tzset(), or touch the file system after
 * loading (lookups are pure and allocation-free).
 */
#ifndef POL_TZ_H
#define POL_TZ_H

#include <stddef.h>
#include <stdint.h>

#include "pol_yaml.h"
#include "psc_rc.h"

#define POL_TZ_NAME_MAX 64
#define POL_TZ_FILE_MAX (256 * 1024)
#define POL_TZ_TRANSITIONS_MAX 4096
#define POL_TZ_TYPES_MAX 256

typedef struct pol_tz pol_tz;

/*
 * name: "UTC", "+HH:MM" / "-HH:MM", or an IANA name ("Europe/Berlin") read from
 * dir (NULL: /usr/share/zoneinfo). Allocates from the arena. On failure the
 * message says what is wrong (no position; the caller prefixes it).
 */
psc_rc pol_tz_load(pol_arena *a, const char *name, const char *dir, const pol_tz **out, char *why,
		   size_t why_len) PSC_WUR;

/* Parses TZif bytes (exposed for tests and the fuzzer). */
psc_rc pol_tz_parse(pol_arena *a, const uint8_t *buf, size_t len, const pol_tz **out, char *why,
		    size_t why_len) PSC_WUR;

/* Offset from UTC in seconds at UTC instant t (local = t + offset). */
int32_t pol_tz_offset(const pol_tz *tz, int64_t t);

const char *pol_tz_name(const pol_tz *tz);

/* Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm). */
int64_t pol_days_from_civil(int64_t y, unsigned m, unsigned d);
void pol_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

#endif
