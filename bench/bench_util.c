#include "bench_util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_cpu_model(char *out, size_t cap)
{
	snprintf(out, cap, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "model name", 10) == 0) {
			const char *c = strchr(line, ':');
			if (c) {
				snprintf(out, cap, "%s", c + 2);
				out[strcspn(out, "\n")] = '\0';
			}
			break;
		}
	}
	if (f)
		fclose(f);
}
