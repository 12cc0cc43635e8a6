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

#endif
