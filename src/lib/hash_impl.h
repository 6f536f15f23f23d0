/* The table of one compilation of XXH3 (hash.c chooses): libxxhash's own, and
 * hash_avx2.c's, which includes <xxhash.h> inline under its CPU target. Private to
 * src/lib/hash*.c (and to the tests and the benchmark that compare them). */
#ifndef CAIRN_HASH_IMPL_H
#define CAIRN_HASH_IMPL_H

#include "hash.h"

struct hash_impl {
    const char *name;
    uint64_t (*h64)(const void *p, size_t n);
    void *(*stream_new)(void);
    void (*stream_free)(void *st);
    void (*reset)(void *st);
    void (*update)(void *st, const void *p, size_t n);
    uint64_t (*digest64)(const void *st);
    struct hash128 (*digest128)(const void *st);
};

/* libxxhash's own. */
extern const struct hash_impl *const hashLibrary;
/* NULL where the compiler cannot target AVX2 (not GCC on x86-64). */
extern const struct hash_impl *const hashAvx2;

#endif
