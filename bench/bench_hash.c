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

static void run(const struct hash_impl *im, const unsigned char *buf, size_t total)
{
    uint64_t x = 0;
    double t0 = now(), pages, stream;
    void *st = im->stream_new();
    for (size_t done = 0; done < total; done += 4096) {
        x ^= im->h64(buf + done % BUF, 4096);
    }
    pages = now() - t0;
    t0 = now();
    im->reset(st);
    for (size_t done = 0; done < total; done += 1u << 20) {
        im->update(st, buf + done % BUF, 1u << 20);
    }
    x ^= im->digest128(st).low64;
    stream = now() - t0;
    im->stream_free(st);
    printf("| %-8s | %8.0f | %8.0f | (%llx)\n", im->name, (double)total / pages / 1048576,
           (double)total / stream / 1048576, (unsigned long long)(x & 0xf));
}

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
    printf("XXH3 over %zu MiB (a 64 MiB buffer, warm in memory), MiB/s\n\n", mib);
    printf("| code     | 4 KiB pages (XXH3-64) | 1 MiB stream (XXH3-128) |\n|---|---|---|\n");
    run(hashLibrary, buf, mib << 20);
    __builtin_cpu_init();
    if (hashAvx2 != NULL && __builtin_cpu_supports("avx2")) {
        run(hashAvx2, buf, mib << 20);
    }
    free(buf);
    return 0;
}
