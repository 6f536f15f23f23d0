/*
 * Latency histogram of the benchmark drivers (bench/ only, not part of libcairn).
 *
 * Log-linear buckets over nanoseconds, in the manner of HdrHistogram: values below 128 ns
 * have a bucket each, every larger power of two is cut into 128 buckets, so a reported
 * percentile is within 1/128 (0.8%) of the true sample. Constant memory (about 60 KiB)
 * whatever the run length, so a client thread records every request without allocating.
 *
 * Threads: each client thread owns one histogram; the main thread merges them after join.
 */
#ifndef CAIRN_BENCH_HIST_H
#define CAIRN_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t sum; /* ns; overflows only after 584 years of summed latency */
    uint64_t min;
    uint64_t max;
    uint64_t bucket[HIST_BUCKETS];
};

/* Empties h. The caller owns h (usually embedded in a per-thread struct). */
void histInit(struct hist *h);

/* Counts one sample of ns nanoseconds. */
void histRecord(struct hist *h, uint64_t ns);

/* Adds every sample of from into into; from is left unchanged. */
void histMerge(struct hist *into, const struct hist *from);

/* The value at quantile q (0 < q <= 1) in nanoseconds, clamped to [min, max]; 0 if h is
 * empty. The value is the middle of the bucket holding the ceil(q * count)-th sample. */
uint64_t histQuantile(const struct hist *h, double q);

#endif
