/* Unit tests of src/lib/hash.c: every compilation of XXH3 the CPU runs gives
 * libxxhash's numbers, one-shot and streamed in any pieces, for every length class
 * XXH3 treats apart (0, 1-3, 4-8, 9-16, 17-128, 129-240, longer; stripes and blocks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "hash.h"
#include "hash_impl.h"

#define MAX_LEN (3u << 20)

static unsigned char *data;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int setup(void **state)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    (void)state;
    data = malloc(MAX_LEN);
    if (data == NULL) {
        return -1;
    }
    for (size_t i = 0; i < MAX_LEN; i++) {
        data[i] = (unsigned char)rnd(&s);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(data);
    return 0;
}

/* The lengths tried: each class's edges, page and block sizes, odd ones, and random. */
static size_t lengthAt(size_t i, uint64_t *s)
{
    static const size_t fixed[] = {0,    1,    3,    4,    8,     9,     16,       17,
                                   128,  129,  240,  241,  255,   256,   1023,     1024,
                                   1025, 4096, 4097, 8191, 65536, 65537, 1u << 20, MAX_LEN};
    if (i < sizeof fixed / sizeof fixed[0]) {
        return fixed[i];
    }
    return (size_t)(rnd(s) % (rnd(s) % 2 ? 5000 : MAX_LEN));
}

#define TRIES 220

static void checkImpl(const struct hash_impl *im)
{
    uint64_t s = 42;
    void *st = im->stream_new();
    assert_non_null(st);
    for (size_t i = 0; i < TRIES; i++) {
        size_t n = lengthAt(i, &s), off = (size_t)(rnd(&s) % 64), at = 0;
        const unsigned char *p;
        XXH128_hash_t want128;
        struct hash128 got128;
        if (off + n > MAX_LEN) {
            off = MAX_LEN - n;
        }
        p = data + off; /* unaligned too */
        want128 = XXH3_128bits(p, n);
        if (im->h64(p, n) != XXH3_64bits(p, n)) {
            fail_msg("%s: hash64 of %zu bytes at offset %zu differs from libxxhash's", im->name, n,
                     off);
        }
        im->reset(st);
        while (at < n) {
            /* Pieces of every size, across XXH3's internal buffer of 256 bytes. */
            size_t piece = (size_t)(rnd(&s) % (rnd(&s) % 3 == 0 ? 300 : 200000)) + 1;
            if (piece > n - at) {
                piece = n - at;
            }
            im->update(st, p + at, piece);
            at += piece;
        }
        if (im->digest64(st) != XXH3_64bits(p, n)) {
            fail_msg("%s: streamed 64-bit digest of %zu bytes differs", im->name, n);
        }
        got128 = im->digest128(st);
        if (got128.low64 != want128.low64 || got128.high64 != want128.high64) {
            fail_msg("%s: streamed 128-bit digest of %zu bytes differs", im->name, n);
        }
    }
    im->stream_free(st);
}

static void test_every_code_gives_libxxhash_numbers(void **state)
{
    unsigned tried = 0;
    (void)state;
    checkImpl(hashLibrary);
    tried++;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (hashAvx2 != NULL && __builtin_cpu_supports("avx2")) {
        checkImpl(hashAvx2);
        tried++;
    }
#endif
    print_message("codes compared with libxxhash: %u (in use: %s)\n", tried, hashCode());
}

/* The public entry points, whichever code they chose. */
static void test_public_api(void **state)
{
    struct hash_stream *h = hashStreamNew();
    struct hash128 d;
    XXH128_hash_t w = XXH3_128bits(data, 1000000);
    (void)state;
    assert_non_null(h);
    assert_int_equal(hash64(data, 4096), XXH3_64bits(data, 4096));
    hashStreamUpdate(h, data, 123);
    hashStreamUpdate(h, data + 123, 1000000 - 123);
    d = hashStreamDigest128(h);
    assert_true(d.low64 == w.low64 && d.high64 == w.high64);
    assert_int_equal(hashStreamDigest64(h), XXH3_64bits(data, 1000000));
    hashStreamReset(h);
    assert_int_equal(hashStreamDigest64(h), XXH3_64bits(NULL, 0));
    hashStreamFree(h);
    hashStreamFree(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_gives_libxxhash_numbers),
        cmocka_unit_test(test_public_api),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
