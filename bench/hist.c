/*
 * Log-linear latency histogram; see hist.h. Pure code, no locking: one owner per histogram.
 */
#include "hist.h"

#include <math.h>
#include <string.h>

/* Bucket of v: group 0 holds 0..127 exactly; group g >= 1 holds [2^(g+6), 2^(g+7)) cut
 * into 128 equal buckets, indexed by the 7 bits below the most significant one. */
static unsigned histIndex(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned group = msb - HIST_SUB_BITS + 1;
    unsigned sub = (unsigned)(v >> (msb - HIST_SUB_BITS)) - HIST_SUB;
    return group * HIST_SUB + sub;
}

/* Middle of bucket i, the inverse of histIndex up to the bucket's width. */
static uint64_t histValue(unsigned i)
{
    unsigned group = i / HIST_SUB;
    unsigned sub = i % HIST_SUB;
    if (group == 0)
        return sub;
    uint64_t width = 1ull << (group - 1);
    return ((uint64_t)(HIST_SUB + sub) << (group - 1)) + width / 2;
}

void histInit(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void histRecord(struct hist *h, uint64_t ns)
{
    h->bucket[histIndex(ns)]++;
    h->count++;
    h->sum += ns;
    if (ns < h->min)
        h->min = ns;
    if (ns > h->max)
        h->max = ns;
}

void histMerge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->bucket[i] += from->bucket[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t histQuantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = histValue(i);
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}
