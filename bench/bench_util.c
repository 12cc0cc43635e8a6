#include "bench_util.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

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

double bench_self_cpu(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return NAN;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Sum of the first field of /proc/<pid>/task/<tid>/schedstat (ns on CPU) over
 * every thread: exact, where /proc/<pid>/stat counts in clock ticks (10 ms). */
static double proc_cpu_schedstat(int pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return NAN;
	double sum = 0;
	int any = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[320];
		unsigned long long ns = 0;
		snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(p, "r");
		if (f && fscanf(f, "%llu", &ns) == 1) {
			sum += (double)ns / 1e9;
			any = 1;
		}
		if (f)
			fclose(f);
	}
	closedir(d);
	return any ? sum : NAN;
}

/* user + system CPU seconds from a /proc stat file (clock-tick resolution). */
static double stat_cpu(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(line, 1, sizeof(line) - 1, f) : 0;
	if (f)
		fclose(f);
	line[n] = '\0';
	/* the command name in parentheses may contain spaces: fields follow the last ')' */
	const char *p = strrchr(line, ')');
	unsigned long ut = 0, st = 0;
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return NAN;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double bench_proc_cpu(int pid)
{
	double s = proc_cpu_schedstat(pid);
	if (!isnan(s))
		return s;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	return stat_cpu(path);
}

double bench_thread_cpu(int pid, int tid)
{
	char path[96];
	unsigned long long ns = 0;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", pid, tid);
	FILE *f = fopen(path, "r");
	int ok = f && fscanf(f, "%llu", &ns) == 1;
	if (f)
		fclose(f);
	if (ok)
		return (double)ns / 1e9;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	return stat_cpu(path);
}

double bench_loadavg(void)
{
	double l = NAN;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = NAN;
		fclose(f);
	}
	return l;
}
