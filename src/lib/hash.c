/* The choice of XXH3's code (hash.h), and libxxhash's own as the fallback. */
#include "hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "hash_impl.h"

struct hash_stream {
    const struct hash_impl *impl; /* the one whose state st is */
    void *st;
};

#define HASH_TABLE_NAME "library"
#include "hash_table.h"

const struct hash_impl *const hashLibrary = &hashTable;

/* AVX2's code when the CPU has it, unless CAIRN_HASH_CODE=library asks for the
 * library's (to compare them). */
static const struct hash_impl *choose(void)
{
    const char *want = getenv("CAIRN_HASH_CODE");
    if (want != NULL && strcmp(want, "library") == 0) {
        return &hashTable;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (hashAvx2 != NULL && __builtin_cpu_supports("avx2")) {
        return hashAvx2;
    }
#endif
    return &hashTable;
}

static const struct hash_impl *impl(void)
{
    static const struct hash_impl *chosen;
    const struct hash_impl *c = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (c == NULL) {
        /* Threads that race here choose the same: no lock needed. */
        c = choose();
        __atomic_store_n(&chosen, c, __ATOMIC_RELEASE);
    }
    return c;
}

uint64_t hash64(const void *p, size_t n)
{
    return impl()->h64(p, n);
}

struct hash_stream *hashStreamNew(void)
{
    struct hash_stream *s = malloc(sizeof *s);
    if (s == NULL) {
        return NULL;
    }
    s->impl = impl();
    if ((s->st = s->impl->stream_new()) == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void hashStreamFree(struct hash_stream *s)
{
    if (s != NULL) {
        s->impl->stream_free(s->st);
        free(s);
    }
}

void hashStreamReset(struct hash_stream *s)
{
    s->impl->reset(s->st);
}

void hashStreamUpdate(struct hash_stream *s, const void *p, size_t n)
{
    assert(n == 0 || p != NULL);
    s->impl->update(s->st, p, n);
}

uint64_t hashStreamDigest64(const struct hash_stream *s)
{
    return s->impl->digest64(s->st);
}

struct hash128 hashStreamDigest128(const struct hash_stream *s)
{
    return s->impl->digest128(s->st);
}

const char *hashCode(void)
{
    return impl()->name;
}
