/* The body of one compilation of XXH3 (hash_impl.h), included by hash.c against
 * libxxhash's functions and by hash_avx2.c against <xxhash.h>'s inline AVX2 copies: the
 * same text, the XXH3_* names bound to one or the other. Defines hashTable, named
 * HASH_TABLE_NAME. Not a header to include anywhere else. */
#ifndef HASH_TABLE_NAME
#error "define HASH_TABLE_NAME, and include <xxhash.h> as wanted, before hash_table.h"
#endif

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

/* The 64- and 128-bit streams share reset and update (hash.h). */
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

static const struct hash_impl hashTable = {HASH_TABLE_NAME, h64,    streamNew, streamFree,
                                           reset,           update, digest64,  digest128};
