/*
 * aud_rec — canonical JSON line of an audit record, and its strict parser.
 *
 * One serialiser (aud_rec_format) defines the encoding; the parser accepts a line
 * only if formatting what it parsed reproduces the line byte for byte. So the
 * parser can be a little lenient in what it decodes (e.g. upper-case \u hex) and
 * still never accept a second spelling of a record.
 * Never: read past `len`, write past a caller's cap, or trust a length in the line.
 */
#include "aud_rec.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const event_names[AUD_EV__COUNT] = {
	[AUD_EV_PEER_INITIALIZE] = "peer.initialize",
	[AUD_EV_PSC_ESTABLISH] = "psc.establish",
	[AUD_EV_PSC_JOIN] = "psc.join",
	[AUD_EV_PSC_QUERY] = "psc.query",
	[AUD_EV_PSC_INVITE] = "psc.invite",
	[AUD_EV_PSC_REFRESH] = "psc.refresh",
	[AUD_EV_PSC_LEAVE] = "psc.leave",
	[AUD_EV_PSC_EVICT] = "psc.evict",
	[AUD_EV_PSC_DESTROY] = "psc.destroy",
	[AUD_EV_PSC_LOOKUP] = "psc.lookup",
	[AUD_EV_POLICY_RELOAD] = "policy.reload",
	[AUD_EV_HSM_KEYGEN] = "hsm.keygen",
	[AUD_EV_KEK_ROTATE] = "kek.rotate",
	[AUD_EV_KMS_START] = "kms.start",
	[AUD_EV_KMS_STOP] = "kms.stop",
	[AUD_EV_KMS_BACKUP] = "kms.backup",
	[AUD_EV_KMS_RESTORE] = "kms.restore",
	[AUD_EV_PEER_BAN] = "peer.ban",
	[AUD_EV_REQUEST_DENY] = "request.deny",
	[AUD_EV_ABORTED] = "aborted",
	[AUD_EV_SEGMENT_LINK] = "segment.link",
	[AUD_EV_LOG_REPAIR] = "log.repair",
	[AUD_EV_LOG_RECOVER] = "log.recover",
};

const char *aud_event_name(aud_event_type t)
{
	if ((unsigned)t >= AUD_EV__COUNT)
		return NULL;
	return event_names[t];
}

void aud_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- UTF-8 ------------------------------------------------------------- */

/* Decodes one code point at s[i..n). Returns its byte length, or 0 for an
 * invalid sequence (overlong, surrogate, > U+10FFFF, bad continuation). */
static size_t utf8_next(const unsigned char *s, size_t i, size_t n, uint32_t *cp)
{
	unsigned char c = s[i];
	size_t len;
	uint32_t min, v;
	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2, min = 0x80, v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, min = 0x800, v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, min = 0x10000, v = c & 0x07;
	} else {
		return 0;
	}
	if (n - i < len)
		return 0;
	for (size_t k = 1; k < len; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i + k] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/* Length in bytes once invalid sequences are replaced by U+FFFD (3 bytes): the
 * length the parser will see, so caps mean the same thing on write and on read. */
static size_t utf8_clean_len(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0, out = 0;
	while (i < n) {
		uint32_t cp;
		size_t k = utf8_next(s, i, n, &cp);
		out += k ? k : 3;
		i += k ? k : 1;
	}
	return out;
}

size_t aud_json_escape(const char *str, char *out, size_t cap)
{
	static const char hexd[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0, o = 0;
	char tmp[12];
	while (i < n) {
		/* Fast path: a run of printable ASCII that needs no escape is copied. */
		size_t run = 0;
		while (i + run < n && s[i + run] >= 0x20 && s[i + run] < 0x7f && s[i + run] != '"' &&
		       s[i + run] != '\\')
			run++;
		if (run > 0) {
			if (cap - o < run)
				return (size_t)-1;
			memcpy(out + o, s + i, run);
			o += run;
			i += run;
			continue;
		}
		uint32_t cp;
		size_t k = utf8_next(s, i, n, &cp);
		if (k == 0) {
			cp = 0xfffd;
			k = 1;
		}
		i += k;
		size_t t = 0;
		if (cp == '"' || cp == '\\') {
			tmp[t++] = '\\';
			tmp[t++] = (char)cp;
		} else if (cp >= 0x20 && cp < 0x7f) {
			tmp[t++] = (char)cp;
		} else if (cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f') {
			tmp[t++] = '\\';
			tmp[t++] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : cp == '\t' ? 't' : cp == '\b' ? 'b' : 'f';
		} else {
			uint32_t units[2];
			int nu = 0;
			if (cp >= 0x10000) {
				uint32_t v = cp - 0x10000;
				units[nu++] = 0xd800 | (v >> 10);
				units[nu++] = 0xdc00 | (v & 0x3ff);
			} else {
				units[nu++] = cp;
			}
			for (int u = 0; u < nu; u++) {
				tmp[t++] = '\\';
				tmp[t++] = 'u';
				for (int sh = 12; sh >= 0; sh -= 4)
					tmp[t++] = hexd[(units[u] >> sh) & 15];
			}
		}
		if (cap - o < t || o > cap)
			return (size_t)-1;
		memcpy(out + o, tmp, t);
		o += t;
	}
	return o;
}

/* ---- time -------------------------------------------------------------- */

void aud_time_format(uint64_t ms, char out[AUD_TIME_LEN + 1])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
		memcpy(out, "1970-01-01T00:00:00.000Z", AUD_TIME_LEN + 1);
		return;
	}
	/* strftime keeps the compiler's truncation analysis quiet about tm's int ranges. */
	char base[32];
	if (strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
		memcpy(out, "1970-01-01T00:00:00.000Z", AUD_TIME_LEN + 1);
		return;
	}
	unsigned msec = (unsigned)(ms % 1000);
	memcpy(out, base, 19);
	out[19] = '.';
	out[20] = (char)('0' + msec / 100);
	out[21] = (char)('0' + msec / 10 % 10);
	out[22] = (char)('0' + msec % 10);
	out[23] = 'Z';
	out[24] = '\0';
}

static int digits_at(const char *s, size_t off, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[off + i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	return v;
}

bool aud_time_valid(const char *s)
{
	if (!s || strlen(s) != AUD_TIME_LEN)
		return false;
	if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
	    s[19] != '.' || s[23] != 'Z')
		return false;
	int y = digits_at(s, 0, 4), mo = digits_at(s, 5, 2), d = digits_at(s, 8, 2);
	int h = digits_at(s, 11, 2), mi = digits_at(s, 14, 2), se = digits_at(s, 17, 2);
	int ms = digits_at(s, 20, 3);
	return y >= 0 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h >= 0 && h <= 23 &&
	       mi >= 0 && mi <= 59 && se >= 0 && se <= 60 && ms >= 0;
}

/* ---- schema check ------------------------------------------------------ */

static bool charset_ok(const char *s, size_t max, const char *extra, bool upper)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  (upper && c >= 'A' && c <= 'Z') || (c && strchr(extra, c));
		if (!ok)
			return false;
	}
	return true;
}

static psc_rc check_text(const char *s, size_t max, bool required, const char *field,
			 psc_err *err)
{
	if (!s) {
		if (required)
			return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
					   "audit record: field '%s' is required", field);
		return PSC_OK;
	}
	if (utf8_clean_len(s) > max)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE,
				   "audit record: field '%s' is longer than %zu bytes", field, max);
	return PSC_OK;
}

psc_rc aud_rec_check(const aud_rec *r, psc_err *err)
{
	psc_rc rc;
	if (!r)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit record: NULL");
	if (r->seq == 0)
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD, "audit record: 'seq' starts at 1");
	if (!aud_time_valid(r->time))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit record: 'time' is not YYYY-MM-DDTHH:MM:SS.mmmZ");
	if (!r->kms || !charset_ok(r->kms, AUD_KMS_ID_MAX, "._-", true))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit record: 'kms' must be 1..%d of [A-Za-z0-9._-]",
				   AUD_KMS_ID_MAX);
	if (!r->event || !charset_ok(r->event, AUD_EVENT_MAX, "._", false) ||
	    !(r->event[0] >= 'a' && r->event[0] <= 'z'))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit record: 'event' must be 1..%d of [a-z0-9._], starting "
				   "with a letter",
				   AUD_EVENT_MAX);
	if (!r->has_actor && (r->node || r->cert || r->subject || r->issuer))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit record: actor fields set without an actor");
	if (!r->has_decision && (r->outcome || r->rule || r->rev))
		return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
				   "audit record: decision fields set without a decision");
	if ((rc = check_text(r->req, AUD_SHORT_MAX, false, "req", err)) ||
	    (rc = check_text(r->subject, AUD_TEXT_MAX, false, "actor.subject", err)) ||
	    (rc = check_text(r->issuer, AUD_TEXT_MAX, false, "actor.issuer", err)) ||
	    (rc = check_text(r->key, AUD_SHORT_MAX, false, "key", err)) ||
	    (rc = check_text(r->outcome, AUD_SHORT_MAX, r->has_decision, "decision.outcome",
			     err)) ||
	    (rc = check_text(r->rule, AUD_SHORT_MAX, false, "decision.rule", err)) ||
	    (rc = check_text(r->rev, AUD_SHORT_MAX, false, "decision.rev", err)) ||
	    (rc = check_text(r->result, AUD_SHORT_MAX, true, "result", err)))
		return rc;
	if (r->n_detail > AUD_DETAIL_MAX)
		return psc_err_set(err, PSC_E_AUDIT_TOO_LARGE,
				   "audit record: more than %d detail entries", AUD_DETAIL_MAX);
	for (size_t i = 0; i < r->n_detail; i++) {
		if (!r->detail[i].key || !charset_ok(r->detail[i].key, AUD_DETAIL_KEY_MAX, "_", false))
			return psc_err_set(err, PSC_E_AUDIT_BAD_FIELD,
					   "audit record: detail key %zu must be 1..%d of [a-z0-9_]",
					   i, AUD_DETAIL_KEY_MAX);
		if ((rc = check_text(r->detail[i].str, AUD_SHORT_MAX, false, "detail", err)))
			return rc;
	}
	return PSC_OK;
}

/* ---- formatting -------------------------------------------------------- */

typedef struct wbuf {
	char *p;
	size_t cap, len;
	bool over;
} wbuf;

static void w_raw(wbuf *w, const char *s, size_t n)
{
	if (w->over || w->cap - w->len < n) {
		w->over = true;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
}

static void w_lit(wbuf *w, const char *s)
{
	w_raw(w, s, strlen(s));
}

static void w_str(wbuf *w, const char *s)
{
	if (!s) {
		w_lit(w, "null");
		return;
	}
	w_lit(w, "\"");
	if (w->over)
		return;
	size_t n = aud_json_escape(s, w->p + w->len, w->cap - w->len);
	if (n == (size_t)-1) {
		w->over = true;
		return;
	}
	w->len += n;
	w_lit(w, "\"");
}

static void w_hex(wbuf *w, const uint8_t *p, size_t n)
{
	char h[2 * 32 + 1];
	if (!p) {
		w_lit(w, "null");
		return;
	}
	aud_hex(p, n, h);
	w_lit(w, "\"");
	w_raw(w, h, 2 * n);
	w_lit(w, "\"");
}

static void w_u64(wbuf *w, uint64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
	w_raw(w, b, (size_t)n);
}

psc_rc aud_rec_format(const aud_rec *r, char *out, size_t cap, size_t *len)
{
	wbuf w = {.p = out, .cap = cap};
	w_lit(&w, "{\"seq\":");
	w_u64(&w, r->seq);
	w_lit(&w, ",\"time\":");
	w_str(&w, r->time);
	w_lit(&w, ",\"kms\":");
	w_str(&w, r->kms);
	w_lit(&w, ",\"req\":");
	w_str(&w, r->req);
	w_lit(&w, ",\"event\":");
	w_str(&w, r->event);
	w_lit(&w, ",\"actor\":");
	if (r->has_actor) {
		w_lit(&w, "{\"node\":");
		w_hex(&w, r->node, 16);
		w_lit(&w, ",\"cert\":");
		w_hex(&w, r->cert, 32);
		w_lit(&w, ",\"subject\":");
		w_str(&w, r->subject);
		w_lit(&w, ",\"issuer\":");
		w_str(&w, r->issuer);
		w_lit(&w, "}");
	} else {
		w_lit(&w, "null");
	}
	w_lit(&w, ",\"psc\":");
	w_hex(&w, r->psc, 16);
	w_lit(&w, ",\"epoch\":");
	if (r->has_epoch)
		w_u64(&w, r->epoch);
	else
		w_lit(&w, "null");
	w_lit(&w, ",\"key\":");
	w_str(&w, r->key);
	w_lit(&w, ",\"decision\":");
	if (r->has_decision) {
		w_lit(&w, "{\"outcome\":");
		w_str(&w, r->outcome);
		w_lit(&w, ",\"rule\":");
		w_str(&w, r->rule);
		w_lit(&w, ",\"rev\":");
		w_str(&w, r->rev);
		w_lit(&w, "}");
	} else {
		w_lit(&w, "null");
	}
	w_lit(&w, ",\"result\":");
	w_str(&w, r->result);
	w_lit(&w, ",\"detail\":");
	if (r->n_detail == 0) {
		w_lit(&w, "null");
	} else {
		w_lit(&w, "{");
		for (size_t i = 0; i < r->n_detail && i < AUD_DETAIL_MAX; i++) {
			if (i)
				w_lit(&w, ",");
			w_str(&w, r->detail[i].key);
			w_lit(&w, ":");
			if (r->detail[i].str)
				w_str(&w, r->detail[i].str);
			else
				w_u64(&w, r->detail[i].num);
		}
		w_lit(&w, "}");
	}
	w_lit(&w, ",\"prev\":");
	w_hex(&w, r->prev, 32);
	w_lit(&w, "}");
	if (w.over || w.len > AUD_LINE_MAX)
		return PSC_E_AUDIT_TOO_LARGE;
	*len = w.len;
	return PSC_OK;
}

/* ---- parsing ----------------------------------------------------------- */

typedef struct cur {
	const char *s;
	size_t len, pos;
	char *arena;
	size_t arena_len, arena_cap;
	const char *field; /* field being read, for the error */
	bool bad;
	size_t bad_pos;
} cur;

static void c_fail(cur *c)
{
	if (!c->bad) {
		c->bad = true;
		c->bad_pos = c->pos;
	}
}

static void c_lit(cur *c, const char *lit)
{
	size_t n = strlen(lit);
	if (c->bad)
		return;
	if (c->len - c->pos < n || memcmp(c->s + c->pos, lit, n) != 0) {
		c_fail(c);
		return;
	}
	c->pos += n;
}

static bool c_peek(cur *c, char ch)
{
	return !c->bad && c->pos < c->len && c->s[c->pos] == ch;
}

static bool c_null(cur *c)
{
	if (!c_peek(c, 'n'))
		return false;
	c_lit(c, "null");
	return !c->bad;
}

static uint64_t c_u64(cur *c)
{
	uint64_t v = 0;
	size_t start = c->pos;
	if (c->bad)
		return 0;
	while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
		unsigned d = (unsigned)(c->s[c->pos] - '0');
		if (v > (UINT64_MAX - d) / 10) {
			c_fail(c);
			return 0;
		}
		v = v * 10 + d;
		c->pos++;
	}
	if (c->pos == start)
		c_fail(c);
	return v;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static bool c_arena_put(cur *c, const char *p, size_t n)
{
	if (c->arena_cap - c->arena_len < n) {
		c_fail(c);
		return false;
	}
	memcpy(c->arena + c->arena_len, p, n);
	c->arena_len += n;
	return true;
}

static int c_u4(cur *c)
{
	if (c->len - c->pos < 4) {
		c_fail(c);
		return -1;
	}
	int v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(c->s[c->pos + (size_t)i]);
		if (h < 0) {
			c_fail(c);
			return -1;
		}
		v = v << 4 | h;
	}
	c->pos += 4;
	return v;
}

/* A JSON string decoded into the arena, NUL-terminated; NULL on error. */
static const char *c_str(cur *c)
{
	c_lit(c, "\"");
	if (c->bad)
		return NULL;
	const char *start = c->arena + c->arena_len;
	while (!c->bad) {
		if (c->pos >= c->len) {
			c_fail(c);
			break;
		}
		unsigned char ch = (unsigned char)c->s[c->pos];
		if (ch == '"') {
			c->pos++;
			if (!c_arena_put(c, "", 1))
				return NULL;
			return start;
		}
		if (ch < 0x20 || ch >= 0x7f) { /* lines are ASCII: raw bytes never appear */
			c_fail(c);
			break;
		}
		if (ch != '\\') {
			/* Copy the whole run of plain characters at once. */
			size_t run = 1;
			while (c->pos + run < c->len) {
				unsigned char d = (unsigned char)c->s[c->pos + run];
				if (d < 0x20 || d >= 0x7f || d == '"' || d == '\\')
					break;
				run++;
			}
			c_arena_put(c, c->s + c->pos, run);
			c->pos += run;
			continue;
		}
		c->pos++;
		if (c->pos >= c->len) {
			c_fail(c);
			break;
		}
		char e = c->s[c->pos++];
		char out[4];
		switch (e) {
		case '"': case '\\': case '/':
			c_arena_put(c, &e, 1);
			continue;
		case 'b': c_arena_put(c, "\b", 1); continue;
		case 'f': c_arena_put(c, "\f", 1); continue;
		case 'n': c_arena_put(c, "\n", 1); continue;
		case 'r': c_arena_put(c, "\r", 1); continue;
		case 't': c_arena_put(c, "\t", 1); continue;
		case 'u': break;
		default:
			c->pos--;
			c_fail(c);
			continue;
		}
		int u = c_u4(c);
		if (u < 0)
			break;
		uint32_t cp = (uint32_t)u;
		if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
			c_fail(c);
			break;
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			c_lit(c, "\\u");
			int lo = c_u4(c);
			if (c->bad || lo < 0xdc00 || lo > 0xdfff) {
				c_fail(c);
				break;
			}
			cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
		}
		size_t n;
		if (cp < 0x80) {
			out[0] = (char)cp, n = 1;
		} else if (cp < 0x800) {
			out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
		} else if (cp < 0x10000) {
			out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
			out[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
		} else {
			out[0] = (char)(0xf0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
			out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[3] = (char)(0x80 | (cp & 0x3f));
			n = 4;
		}
		c_arena_put(c, out, n);
	}
	return NULL;
}

static const char *c_str_or_null(cur *c)
{
	if (c_null(c))
		return NULL;
	return c_str(c);
}

/* "hex" of exactly n bytes into out; false if null (when allowed) or bad. */
static bool c_hex(cur *c, uint8_t *out, size_t n, bool nullable, bool *is_null)
{
	if (nullable && c_null(c)) {
		*is_null = true;
		return true;
	}
	*is_null = false;
	c_lit(c, "\"");
	if (c->bad || c->len - c->pos < 2 * n + 1) {
		c_fail(c);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(c->s[c->pos]), lo = hexval(c->s[c->pos + 1]);
		if (hi < 0 || lo < 0) {
			c_fail(c);
			return false;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
		c->pos += 2;
	}
	c_lit(c, "\"");
	return !c->bad;
}

/* Names the field being read, unless an earlier one already failed. */
#define FIELD(c, name) ((c)->bad ? (void)0 : (void)((c)->field = (name)))

psc_rc aud_rec_parse(const char *line, size_t len, aud_parsed *out, psc_err *err)
{
	if (!line || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "audit record: NULL");
	if (len > AUD_LINE_MAX)
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				   "audit record: line is %zu bytes, more than %d", len, AUD_LINE_MAX);
	memset(&out->rec, 0, sizeof(out->rec));
	cur c = {.s = line, .len = len, .arena = out->arena, .arena_cap = sizeof(out->arena)};
	aud_rec *r = &out->rec;
	bool isnull;

	FIELD(&c, "seq");
	c_lit(&c, "{\"seq\":");
	r->seq = c_u64(&c);
	FIELD(&c, "time");
	c_lit(&c, ",\"time\":");
	const char *t = c_str(&c);
	if (t && strlen(t) == AUD_TIME_LEN)
		memcpy(r->time, t, AUD_TIME_LEN + 1);
	else
		c_fail(&c);
	FIELD(&c, "kms");
	c_lit(&c, ",\"kms\":");
	r->kms = c_str(&c);
	FIELD(&c, "req");
	c_lit(&c, ",\"req\":");
	r->req = c_str_or_null(&c);
	FIELD(&c, "event");
	c_lit(&c, ",\"event\":");
	r->event = c_str(&c);
	FIELD(&c, "actor");
	c_lit(&c, ",\"actor\":");
	if (!c_null(&c)) {
		r->has_actor = true;
		FIELD(&c, "actor.node");
		c_lit(&c, "{\"node\":");
		if (c_hex(&c, out->node, 16, true, &isnull) && !isnull)
			r->node = out->node;
		FIELD(&c, "actor.cert");
		c_lit(&c, ",\"cert\":");
		if (c_hex(&c, out->cert, 32, true, &isnull) && !isnull)
			r->cert = out->cert;
		FIELD(&c, "actor.subject");
		c_lit(&c, ",\"subject\":");
		r->subject = c_str_or_null(&c);
		FIELD(&c, "actor.issuer");
		c_lit(&c, ",\"issuer\":");
		r->issuer = c_str_or_null(&c);
		c_lit(&c, "}");
	}
	FIELD(&c, "psc");
	c_lit(&c, ",\"psc\":");
	if (c_hex(&c, out->psc, 16, true, &isnull) && !isnull)
		r->psc = out->psc;
	FIELD(&c, "epoch");
	c_lit(&c, ",\"epoch\":");
	if (!c_null(&c)) {
		r->has_epoch = true;
		r->epoch = c_u64(&c);
	}
	FIELD(&c, "key");
	c_lit(&c, ",\"key\":");
	r->key = c_str_or_null(&c);
	FIELD(&c, "decision");
	c_lit(&c, ",\"decision\":");
	if (!c_null(&c)) {
		r->has_decision = true;
		FIELD(&c, "decision.outcome");
		c_lit(&c, "{\"outcome\":");
		r->outcome = c_str(&c);
		FIELD(&c, "decision.rule");
		c_lit(&c, ",\"rule\":");
		r->rule = c_str_or_null(&c);
		FIELD(&c, "decision.rev");
		c_lit(&c, ",\"rev\":");
		r->rev = c_str_or_null(&c);
		c_lit(&c, "}");
	}
	FIELD(&c, "result");
	c_lit(&c, ",\"result\":");
	r->result = c_str(&c);
	FIELD(&c, "detail");
	c_lit(&c, ",\"detail\":");
	if (!c_null(&c)) {
		c_lit(&c, "{");
		while (!c.bad) {
			if (r->n_detail == AUD_DETAIL_MAX) {
				c_fail(&c);
				break;
			}
			aud_kv *kv = &r->detail[r->n_detail++];
			kv->key = c_str(&c);
			c_lit(&c, ":");
			if (c_peek(&c, '"'))
				kv->str = c_str(&c);
			else
				kv->num = c_u64(&c);
			if (c_peek(&c, ','))
				c_lit(&c, ",");
			else
				break;
		}
		c_lit(&c, "}");
	}
	FIELD(&c, "prev");
	c_lit(&c, ",\"prev\":");
	c_hex(&c, r->prev, 32, false, &isnull);
	FIELD(&c, "end of record");
	c_lit(&c, "}");
	if (!c.bad && c.pos != c.len)
		c_fail(&c);
	if (c.bad)
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				   "audit record: field '%s' is malformed at column %zu", c.field,
				   c.bad_pos + 1);

	psc_err sub;
	psc_err_clear(&sub);
	if (aud_rec_check(r, &sub) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED, "%s", psc_err_text(&sub));
	size_t n = 0;
	if (aud_rec_format(r, out->scratch, sizeof(out->scratch), &n) != PSC_OK || n != len ||
	    memcmp(out->scratch, line, len) != 0) {
		size_t col = 0;
		while (col < n && col < len && out->scratch[col] == line[col])
			col++;
		return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
				   "audit record: not in canonical form (first difference at "
				   "column %zu)",
				   col + 1);
	}
	return PSC_OK;
}
