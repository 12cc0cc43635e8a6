/*
 * aud_rec — one audit record: its fields, its canonical JSON line, and the strict
 * parser the verifier, `psc-audit show` and the writer's crash repair use.
 *
 * Owns: the record schema (field order, types, caps; docs/audit.md), JSON string
 * escaping of untrusted text (certificate subjects), and the rule that a line is
 * valid only if re-serialising its parsed record gives back the same bytes, so
 * there is exactly one encoding of every record and the hash chain covers meaning,
 * not formatting.
 * Never: hold key material (there is no field for it), allocate, or accept a line
 * longer than AUD_LINE_MAX. Lines are ASCII only: every other character is a
 * \uXXXX escape, so a terminal or grep never sees raw control bytes.
 */
#ifndef AUD_REC_H
#define AUD_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

#define AUD_LINE_MAX 16384       /* bytes of one line, without its '\n' */
#define AUD_KMS_ID_MAX 64        /* [A-Za-z0-9._-] */
#define AUD_EVENT_MAX 32         /* [a-z0-9._] */
#define AUD_TEXT_MAX 1024        /* subject, issuer (UTF-8 bytes before escaping) */
#define AUD_SHORT_MAX 256        /* req, key, rule, rev, outcome, result, detail strings */
#define AUD_DETAIL_MAX 16        /* detail entries */
#define AUD_DETAIL_KEY_MAX 32    /* [a-z0-9_] */
#define AUD_TIME_LEN 24          /* "2026-11-26T17:20:00.123Z" */

/* Events the KMS records (docs/audit.md lists what each one means). */
typedef enum aud_event_type {
	AUD_EV_PEER_INITIALIZE,
	AUD_EV_PSC_ESTABLISH,
	AUD_EV_PSC_JOIN,
	AUD_EV_PSC_QUERY,
	AUD_EV_PSC_INVITE,
	AUD_EV_PSC_REFRESH,
	AUD_EV_PSC_LEAVE,
	AUD_EV_PSC_EVICT,
	AUD_EV_PSC_DESTROY,
	AUD_EV_PSC_LOOKUP,
	AUD_EV_POLICY_RELOAD,
	AUD_EV_HSM_KEYGEN,
	AUD_EV_KEK_ROTATE,
	AUD_EV_KMS_START,
	AUD_EV_KMS_STOP,
	AUD_EV_KMS_BACKUP,
	AUD_EV_KMS_RESTORE,
	AUD_EV_PEER_BAN,
	AUD_EV_REQUEST_DENY,  /* a request refused before it named an operation */
	AUD_EV_ABORTED,       /* DESIGN §5 reconciliation: audited, never committed */
	AUD_EV_SEGMENT_LINK,  /* written by the log: first record of every segment > 1 */
	AUD_EV_LOG_REPAIR,    /* written by the log: a torn tail was cut at open */
	AUD_EV_LOG_RECOVER,   /* written by the log: it left the fail-closed state */
	AUD_EV__COUNT
} aud_event_type;

/* "psc.join" etc.; NULL outside the enum. */
const char *aud_event_name(aud_event_type t);

/* One detail entry: a string, or a number when str is NULL. */
typedef struct aud_kv {
	const char *key;
	const char *str;
	uint64_t num;
} aud_kv;

/*
 * A record as plain borrowed pointers. The writer fills one from the caller's
 * event; the parser fills one pointing into an aud_parsed arena. NULL / has_*
 * false means JSON null. Strings are NUL-terminated UTF-8; invalid UTF-8 from a
 * certificate is written as U+FFFD (the certificate's SHA-256 stays exact).
 */
typedef struct aud_rec {
	uint64_t seq;
	char time[AUD_TIME_LEN + 1];
	const char *kms;
	const char *req;
	const char *event;
	bool has_actor;
	const uint8_t *node;   /* 16 bytes or NULL */
	const uint8_t *cert;   /* SHA-256 of the DER certificate, 32 bytes or NULL */
	const char *subject;
	const char *issuer;
	const uint8_t *psc;    /* 16 bytes or NULL */
	bool has_epoch;
	uint64_t epoch;
	const char *key;
	bool has_decision;
	const char *outcome;   /* required when has_decision */
	const char *rule;
	const char *rev;
	const char *result;    /* required */
	size_t n_detail;
	aud_kv detail[AUD_DETAIL_MAX];
	uint8_t prev[32];
} aud_rec;

/* Checks every field against the schema (syntax, caps). PSC_E_AUDIT_BAD_FIELD with
 * the field's name in err, or PSC_E_AUDIT_TOO_LARGE. */
psc_rc aud_rec_check(const aud_rec *r, psc_err *err) PSC_WUR;

/* Writes the canonical line (no '\n') into out[0..cap), sets *len. Assumes
 * aud_rec_check passed; PSC_E_AUDIT_TOO_LARGE if the line exceeds cap. */
psc_rc aud_rec_format(const aud_rec *r, char *out, size_t cap, size_t *len) PSC_WUR;

/* A parsed line: the record plus the storage its pointers use. Large (~36 KiB):
 * allocate it or keep one per reader, not on a small stack. */
typedef struct aud_parsed {
	aud_rec rec;
	uint8_t node[16], cert[32], psc[16];
	char arena[AUD_LINE_MAX + 64];
	char scratch[AUD_LINE_MAX + 1];
} aud_parsed;

/* Parses one line (no '\n'). PSC_OK only for a canonical line of the schema;
 * PSC_E_AUDIT_MALFORMED otherwise, err saying which field and at which column. */
psc_rc aud_rec_parse(const char *line, size_t len, aud_parsed *out, psc_err *err) PSC_WUR;

/* UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" for a CLOCK_REALTIME value in ms. */
void aud_time_format(uint64_t ms, char out[AUD_TIME_LEN + 1]);
/* Strictly checks the shape above (digits where digits go, ranges of fields). */
bool aud_time_valid(const char *s);

/* Escapes s (UTF-8, may be invalid) as the JSON string body the log writes,
 * without quotes; output is ASCII. Returns bytes written, or (size_t)-1 if the
 * result would not fit in cap. Shared with `psc-audit show` so people see untrusted
 * text escaped exactly as in the file. */
size_t aud_json_escape(const char *s, char *out, size_t cap);

void aud_hex(const uint8_t *p, size_t n, char *out);

#endif
