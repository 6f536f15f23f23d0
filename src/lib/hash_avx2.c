/* XXH3 compiled with avx2 (hash.h): <xxhash.h> inline, every function of this file
 * under the CPU target "avx2"; hash.c calls them only when the CPU has AVX2. */
#include "hash_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2")
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

static uint64_t h64(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

static void *streamNew(void)
{
    XXH3_state_t *st = XXH3_createState();
    if (st != NULL) {
        XXH3_64bits_reset(st);
    }
    return st;
}

static void streamFree(void *st)
{
    XXH3_freeState(st);
}

static void reset(void *st)
{
    XXH3_64bits_reset(st);
}

static void update(void *st, const void *p, size_t n)
{
    XXH3_64bits_update(st, p, n);
}

static uint64_t digest64(const void *st)
{
    return XXH3_64bits_digest(st);
}

static struct hash128 digest128(const void *st)
{
    XXH128_hash_t h = XXH3_128bits_digest(st);
    return (struct hash128){h.low64, h.high64};
}

static const struct hash_impl impl = {"avx2", h64,    streamNew, streamFree,
                                      reset,  update, digest64,  digest128};
#pragma GCC pop_options
const struct hash_impl *const hashAvx2 = &impl;
#else
const struct hash_impl *const hashAvx2 = NULL;
#endif
