/* XXH3 (seed 0) of bulk data: pages, blocks, whole backup files.
 *
 * The numbers are libxxhash's (XXH3_64bits, XXH3_128bits): an XXH3 is the same whatever
 * code computes it. Debian's libxxhash is built for any x86-64, so it hashes with SSE2;
 * the same header's AVX2 code hashes about 1.8 times as fast (bench/bench_hash.c), which
 * a restore or a backup of 1 GiB feels: the digest and block checksums of every file,
 * the hash of every page. So the AVX2 code is compiled here too (hash_avx2.c, its CPU
 * target on its own functions only) and used when the CPU has AVX2, as chosen at the
 * first call. (AVX-512 measured 3-7% faster than AVX2 here: not worth a third copy.) Short
 * fixed-size inputs (headers, footers) may keep calling libxxhash: the answer is the same.
 *
 * A stream gives both widths: XXH3's 64- and 128-bit streams share their reset and
 * update, and differ only in the digest. Thread-safe: no shared state but the choice,
 * made once. */
#ifndef CAIRN_HASH_H
#define CAIRN_HASH_H

#include <stddef.h>
#include <stdint.h>

struct hash128 {
    uint64_t low64, high64;
};

struct hash_stream;

/* XXH3-64 of [p, p + n). */
uint64_t hash64(const void *p, size_t n);

/* A stream, reset; NULL when out of memory. */
struct hash_stream *hashStreamNew(void);
void hashStreamFree(struct hash_stream *s);
void hashStreamReset(struct hash_stream *s);
void hashStreamUpdate(struct hash_stream *s, const void *p, size_t n);
/* Of what was fed since the reset; the stream may go on after. */
uint64_t hashStreamDigest64(const struct hash_stream *s);
struct hash128 hashStreamDigest128(const struct hash_stream *s);

/* The code in use: "avx2" or "library" (SSE2). */
const char *hashCode(void);

#endif
