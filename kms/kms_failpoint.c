#include "kms_failpoint.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FP_NAME_MAX 64

/*
 * Process-wide by nature (it reads the process environment and kills the
 * process), so this is the one place in kms/ with file-scope state; only the
 * event-loop thread calls it.
 */
static struct {
	bool parsed;
	bool armed;
	char name[FP_NAME_MAX];
	unsigned long at; /* the hit that kills, 1-based */
	unsigned long hits;
} fp;

static void fp_parse(void)
{
	fp.parsed = true;
	const char *spec = getenv("PSC_FAILPOINT");
	if (!spec || !*spec)
		return;
	size_t n = strcspn(spec, ":");
	if (n == 0 || n >= sizeof(fp.name)) {
		fprintf(stderr, "psc-kmsd: PSC_FAILPOINT='%s' ignored: want <name>[:<n>]\n", spec);
		return;
	}
	memcpy(fp.name, spec, n);
	fp.name[n] = '\0';
	fp.at = 1;
	if (spec[n] == ':') {
		char *end = NULL;
		unsigned long at = strtoul(spec + n + 1, &end, 10);
		if (!end || *end || at == 0) {
			fprintf(stderr,
				"psc-kmsd: PSC_FAILPOINT='%s' ignored: the hit count "
				"must be a positive integer\n",
				spec);
			return;
		}
		fp.at = at;
	}
	fp.armed = true;
	fprintf(stderr, "psc-kmsd: failpoint %s armed: SIGKILL at hit %lu\n", fp.name, fp.at);
}

void kms_failpoint_hit(const char *name)
{
	if (!fp.parsed)
		fp_parse();
	if (!fp.armed || strcmp(name, fp.name) != 0)
		return;
	if (++fp.hits == fp.at)
		raise(SIGKILL);
}
