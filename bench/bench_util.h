/*
 * bench_util — what every benchmark program needs besides what it measures:
 * a monotonic clock and a description of the machine for docs/benchmarks.md.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now(void);
/* The CPU model from /proc/cpuinfo ("unknown CPU" if absent). */
void bench_cpu_model(char *out, size_t cap);
/* CPU seconds (user + system) of this process, all threads (getrusage). */
double bench_self_cpu(void);
/* CPU seconds of another process, all its threads: from the scheduler's
 * per-thread run time (/proc/<pid>/task/<tid>/schedstat, nanoseconds; threads
 * that already exited are not counted), else /proc/<pid>/stat (clock ticks);
 * NAN if neither can be read. */
double bench_proc_cpu(int pid);
/* CPU seconds of one thread of another process (schedstat, else stat). */
double bench_thread_cpu(int pid, int tid);
/* The 1-minute load average (/proc/loadavg), NAN if absent. */
double bench_loadavg(void);

#endif
