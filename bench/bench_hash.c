/* XXH3 throughput of each compilation cairn carries (src/lib/hash.h) against
 * libxxhash's own (SSE2), side by side in one run: one-shot 64-bit hashes of 4 KiB pages
 * (a page's hash in a backup's manifest, a page checksum) and a 128-bit stream over 1 MiB
 * pieces (a backup file's digest). Run: build/bench_hash [MiB, default 2048]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hash_impl.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define BUF (64u << 20)

/* MiB/s of one code over total bytes: [0] 4 KiB pages, [1] the 128-bit stream. */
static void run(const struct hash_impl *im, const unsigned char *buf, size_t total, double out[2])
{
    uint64_t x = 0;
    double t0 = now();
    void *st = im->stream_new();
    for (size_t done = 0; done < total; done += 4096) {
        x ^= im->h64(buf + done % BUF, 4096);
    }
    out[0] = (double)total / (now() - t0) / 1048576;
    t0 = now();
    im->reset(st);
    for (size_t done = 0; done < total; done += 1u << 20) {
        im->update(st, buf + done % BUF, 1u << 20);
    }
    x ^= im->digest128(st).low64;
    out[1] = (double)total / (now() - t0) / 1048576;
    im->stream_free(st);
    if (x == 42) {
        printf("(the hashes are used)\n");
    }
}

static int byValue(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define ROUNDS 5

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048;
    unsigned char *buf = malloc(BUF);
    if (buf == NULL || mib == 0) {
        fprintf(stderr, "usage: bench_hash [MiB > 0]\n");
        return 2;
    }
    for (size_t i = 0; i < BUF; i++) {
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    }
    {
        const struct hash_impl *codes[2] = {hashLibrary, NULL};
        double got[2][2][ROUNDS];
        unsigned ncodes = 1;
        __builtin_cpu_init();
        if (hashAvx2 != NULL && __builtin_cpu_supports("avx2")) {
            codes[ncodes++] = hashAvx2;
        }
        /* In turns, so that both meet the same moments of a shared machine. */
        for (int r = 0; r < ROUNDS; r++) {
            for (unsigned c = 0; c < ncodes; c++) {
                double o[2];
                run(codes[c], buf, mib << 20, o);
                got[c][0][r] = o[0];
                got[c][1][r] = o[1];
            }
        }
        printf("XXH3 over %zu MiB (a 64 MiB buffer), MiB/s, median (min-max) of %d rounds "
               "taken in turns\n\n",
               mib, ROUNDS);
        printf("| code | 4 KiB pages (XXH3-64) | 1 MiB pieces, one stream (XXH3-128) |\n"
               "|---|--:|--:|\n");
        for (unsigned c = 0; c < ncodes; c++) {
            printf("| %s |", codes[c]->name);
            for (int k = 0; k < 2; k++) {
                qsort(got[c][k], ROUNDS, sizeof(double), byValue);
                printf(" %.0f (%.0f-%.0f) |", got[c][k][ROUNDS / 2], got[c][k][0],
                       got[c][k][ROUNDS - 1]);
            }
            printf("\n");
        }
    }
    free(buf);
    return 0;
}
