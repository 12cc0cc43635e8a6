/*
 * fuzz_audit_record — the verifier's record and checkpoint parsers on arbitrary
 * bytes. Invariants checked (abort on violation):
 *  - a line that parses re-formats to exactly the same bytes (one spelling only);
 *  - the writer's escaping of arbitrary (even invalid UTF-8) text always yields a
 *    line the parser accepts, and the subject survives the round trip.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aud_ckpt.h"
#include "aud_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	aud_parsed *p = malloc(sizeof(*p));
	char *out = malloc(AUD_LINE_MAX + 1);
	if (!p || !out)
		abort();
	size_t n = 0;
	if (aud_rec_parse((const char *)data, size, p, NULL) == PSC_OK) {
		if (aud_rec_format(&p->rec, out, AUD_LINE_MAX + 1, &n) != PSC_OK || n != size ||
		    memcmp(out, data, size) != 0)
			abort();
	}
	aud_ckpt c;
	if (aud_ckpt_parse((const char *)data, size, &c, NULL) == PSC_OK) {
		char line[AUD_CKPT_LINE_MAX + 1];
		if (aud_ckpt_format(&c, line, sizeof(line), &n) != PSC_OK || n != size ||
		    memcmp(line, data, size) != 0)
			abort();
	}

	/* The input as an untrusted certificate subject. */
	char *subject = malloc(size + 1);
	if (!subject)
		abort();
	memcpy(subject, data, size);
	subject[size] = '\0';
	aud_rec r;
	memset(&r, 0, sizeof(r));
	r.seq = 1;
	memcpy(r.time, "2026-11-26T17:20:00.123Z", AUD_TIME_LEN + 1);
	r.kms = "kms-1";
	r.event = "psc.join";
	r.has_actor = true;
	r.subject = subject;
	r.result = "ok";
	if (aud_rec_check(&r, NULL) == PSC_OK) {
		if (aud_rec_format(&r, out, AUD_LINE_MAX + 1, &n) != PSC_OK)
			abort(); /* AUD_TEXT_MAX escaped always fits in a line */
		if (aud_rec_parse(out, n, p, NULL) != PSC_OK)
			abort();
		/* Valid UTF-8 without NUL comes back byte for byte. */
		char esc[6 * AUD_TEXT_MAX + 1];
		size_t el = aud_json_escape(subject, esc, sizeof(esc));
		if (el == (size_t)-1 || !p->rec.subject)
			abort();
		char again[6 * AUD_TEXT_MAX + 1];
		size_t al = aud_json_escape(p->rec.subject, again, sizeof(again));
		if (al != el || memcmp(esc, again, el) != 0)
			abort();
	}
	free(subject);
	free(out);
	free(p);
	return 0;
}
