/* Unit tests of archive segments (src/backup/arcseg.c): a round trip, every byte's
 * damage refused, truncation, a latest time that is not the entries' refused, the range
 * of every index, hostile bodies that claim more than they may hold and entries that
 * are not there refused without allocating for them, bodies that compress too well
 * stored, reserved bytes checked, names, a timeline walked in a posix repository with a
 * gap, a broken link and a damaged segment named, segments of two histories never
 * linked, and version 1 segments still read and continued. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "arcseg.h"
#include "cbk.h"
#include "error.h"
#include "repo.h"

/* A command-like entry: "CCMD", then a time at offset 8, then filler. */
static void makeEntry(unsigned char *p, size_t n, int64_t t, unsigned seed)
{
    memset(p, 0, n);
    memcpy(p, "CCMD", 4);
    for (int i = 0; i < 8; i++) {
        p[8 + i] = (unsigned char)((uint64_t)t >> (8 * i));
    }
    for (size_t i = 16; i < n; i++) {
        p[i] = (unsigned char)(seed * 31 + i);
    }
}

static unsigned char bytesA[64], bytesB[100], bytesC[40];

static size_t threeEntries(struct arcseg_entry e[3], uint64_t base)
{
    makeEntry(bytesA, sizeof bytesA, 1000, 1);
    makeEntry(bytesB, sizeof bytesB, 3000, 2);
    makeEntry(bytesC, sizeof bytesC, 2000, 3);
    e[0] = (struct arcseg_entry){base, 0, 1000, sizeof bytesA, bytesA};
    e[1] = (struct arcseg_entry){base + 2, 0, 3000, sizeof bytesB, bytesB}; /* base+1: a barrier */
    e[2] = (struct arcseg_entry){base + 3, 0, 2000, sizeof bytesC, bytesC};
    return 3;
}

static void test_round_trip(void **state)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE], prev[BACKUP_DIGEST_SIZE];
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    memset(prev, 7, sizeof prev);
    threeEntries(e, 10);
    assert_int_equal(arcsegEncode("t1", 9, prev, e, 3, &obj, &len, digest, errmsg), 0);
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    assert_string_equal(seg.h.timeline, "t1");
    assert_int_equal(seg.h.first, 9);
    assert_int_equal(seg.h.last, 13);
    assert_int_equal(seg.h.count, 3);
    assert_int_equal(seg.h.first_ms, 1000);
    assert_int_equal(seg.h.last_ms, 2000);
    assert_int_equal(seg.h.max_ms, 3000);
    assert_memory_equal(seg.h.prev, prev, sizeof prev);
    assert_memory_equal(seg.digest, digest, sizeof digest);
    assert_int_equal(seg.entries[1].index, 12);
    assert_int_equal(seg.entries[1].len, sizeof bytesB);
    assert_memory_equal(seg.entries[1].bytes, bytesB, sizeof bytesB);
    assert_int_equal(arcsegCommandTime(bytesB, sizeof bytesB), 3000);
    arcsegFree(&seg);
    free(obj);
}

static void test_every_damage_is_refused(void **state)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    threeEntries(e, 1);
    assert_int_equal(arcsegEncode("t1", 1, NULL, e, 3, &obj, &len, digest, errmsg), 0);
    for (size_t i = 0; i < len; i++) {
        obj[i] ^= 0x40;
        assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), CAIRN_ECORRUPT);
        obj[i] ^= 0x40;
    }
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(arcsegDecode(obj, n, "x", &seg, errmsg), CAIRN_ECORRUPT);
    }
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    arcsegFree(&seg);
    free(obj);
}

/* A header whose latest time is not its entries' is refused, its digest right or not
 * (found by fuzz/fuzz_arcseg.c: fuzz/regress/arcseg/max-ms-not-the-latest-time). */
static void test_latest_time_is_checked(void **state)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    threeEntries(e, 1);
    assert_int_equal(arcsegEncode("t1", 1, NULL, e, 3, &obj, &len, digest, errmsg), 0);
    for (int64_t said = 2000; said <= 4000; said += 1000) {
        XXH128_hash_t h;
        for (int i = 0; i < 8; i++) {
            obj[120 + i] = (unsigned char)((uint64_t)said >> (8 * i));
        }
        h = XXH3_128bits(obj, len - ARCSEG_TRAILER_SIZE);
        cbkDigestBytes(h.low64, h.high64, obj + len - ARCSEG_TRAILER_SIZE);
        assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg),
                         said == 3000 ? 0 : CAIRN_ECORRUPT);
        if (said == 3000) {
            assert_int_equal(seg.h.max_ms, 3000);
            arcsegFree(&seg);
        } else {
            assert_non_null(strstr(errmsg, "do not match its header"));
        }
    }
    free(obj);
}

/* A segment over every index, 0 to UINT64_MAX, is read (its range's size overflowed
 * to 0 and it was refused: fuzz/regress/arcseg/carc-whole-u64-range). */
static void test_whole_index_range(void **state)
{
    struct arcseg_entry e[2] = {{0, 1, 5, 0, NULL}, {UINT64_MAX, 1, 6, 0, NULL}};
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_int_equal(arcsegEncode("t1", 0, NULL, e, 2, &obj, &len, digest, errmsg), 0);
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    assert_int_equal(seg.h.count, 2);
    assert_true(seg.h.last == UINT64_MAX);
    arcsegFree(&seg);
    free(obj);
}

/* ---- objects a hostile repository could hold ------------------------------------- */

static void putLe(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

/* A zstd frame that says it inflates to `size` bytes of `byte` and does so in RLE
 * blocks of 128 KiB, 4 bytes each: 32768 times smaller than what it inflates to. out
 * malloc'd; *len its size. */
static unsigned char *rleFrame(uint64_t size, unsigned char byte, size_t *len)
{
    size_t blocks = (size_t)((size + (128u << 10) - 1) / (128u << 10));
    unsigned char *p = malloc(13 + 4 * blocks);
    uint64_t left = size;
    size_t o = 13;
    assert_non_null(p);
    putLe(p, 0xFD2FB528u, 4);
    p[4] = 0xE0; /* content size in 8 bytes, single segment */
    putLe(p + 5, size, 8);
    for (size_t i = 0; i < blocks; i++) {
        uint64_t k = left < (128u << 10) ? left : (128u << 10);
        left -= k;
        putLe(p + o, k << 3 | 1u << 1 | (left == 0 ? 1u : 0u), 3); /* type 1: RLE */
        p[o + 3] = byte;
        o += 4;
    }
    *len = o;
    return p;
}

/* A version 2 segment of timeline t1 over body (a frame inflating to raw_len), whose
 * header claims `count` entries in [0, count - 1], with its digest right. */
static unsigned char *hostileSegment(const unsigned char *body, size_t blen, uint64_t raw_len,
                                     uint32_t count, size_t *len)
{
    size_t n = ARCSEG_HEADER2_SIZE + blen + ARCSEG_TRAILER_SIZE;
    unsigned char *p = calloc(1, n);
    XXH128_hash_t h;
    assert_non_null(p);
    memcpy(p, ARCSEG_MAGIC, 4);
    putLe(p + 4, 2, 2);
    putLe(p + 6, ARCSEG_HEADER2_SIZE, 2);
    putLe(p + 8, 0, 8);
    putLe(p + 16, count - 1, 8);
    putLe(p + 24, count, 4);
    putLe(p + 48, raw_len, 8);
    putLe(p + 56, blen, 8);
    memcpy(p + 80, "t1", 2);
    memcpy(p + ARCSEG_HEADER2_SIZE, body, blen);
    h = XXH3_128bits(p, n - ARCSEG_TRAILER_SIZE);
    cbkDigestBytes(h.low64, h.high64, p + n - ARCSEG_TRAILER_SIZE);
    *len = n;
    return p;
}

/* A 32 KiB segment whose frame inflates to 1 GiB, and whose header claims 1 GiB / 28
 * entries: the decoder allocated 1 GiB for the body and 1.5 GiB for the entries'
 * array before finding the second entry wrong. It is refused from its header now, as
 * claiming more than its body may hold (fuzz/regress/arcseg/inflates-1gib-from-32k). */
static void test_hostile_inflation_refused(void **state)
{
    size_t blen, len;
    unsigned char *body = rleFrame(ARCSEG_MAX_RAW, 0, &blen);
    unsigned char *obj =
        hostileSegment(body, blen, ARCSEG_MAX_RAW, ARCSEG_MAX_RAW / ARCSEG_ENTRY_HEAD, &len);
    struct arcseg_header h;
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_true(len < 33000);
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "claims to inflate to 1073741824"));
    assert_null(seg.raw);
    assert_null(seg.entries);
    assert_int_equal(arcsegDecodeHeader(obj, len, "x", &h, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "claims to inflate"));
    /* The bound: 16 MiB, plus 4096 times the body, at most 1 GiB. */
    assert_int_equal(arcsegRawBound(0), ARCSEG_RAW_FREE);
    assert_int_equal(arcsegRawBound(blen), ARCSEG_RAW_FREE + (uint64_t)blen * ARCSEG_MAX_RATIO);
    assert_int_equal(arcsegRawBound(1u << 20), ARCSEG_MAX_RAW);
    assert_int_equal(arcsegRawBound(UINT64_MAX), ARCSEG_MAX_RAW);
    free(obj);
    free(body);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* The pages of address space this process holds (/proc/self/statm). */
static uint64_t addressSpace(void)
{
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu", &pages) != 1) {
            pages = 0;
        }
        fclose(f);
    }
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}
#endif

/* A segment whose body may inflate as it says (16 MiB, within what any body may) but
 * whose header claims 16 MiB / 28 entries when the body holds zeros (one entry, then
 * one out of order): the entries' array (23 MiB) was allocated from the claim before
 * any entry was read. Now only a body that holds them all gets one: decoded in a child
 * whose address space is held to the body and 8 MiB more, it is refused as corrupt,
 * not out of memory. (Not under ASan, which reserves terabytes of address space.) */
static void test_entries_allocated_once_proven(void **state)
{
    const uint64_t raw_len = ARCSEG_RAW_FREE;
    size_t blen, len;
    unsigned char *body = rleFrame(raw_len, 0, &blen);
    unsigned char *obj =
        hostileSegment(body, blen, raw_len, (uint32_t)(raw_len / ARCSEG_ENTRY_HEAD), &len);
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int status = 0;
    pid_t pid;
    (void)state;
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "do not match its header"));
#ifndef UNDER_ASAN
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl;
        int rv;
        rl.rlim_cur = rl.rlim_max = addressSpace() + raw_len + (8u << 20);
        if (setrlimit(RLIMIT_AS, &rl) != 0) {
            _exit(3);
        }
        rv = arcsegDecode(obj, len, "x", &seg, errmsg);
        _exit(rv == CAIRN_ECORRUPT ? 0 : rv == CAIRN_ENOMEM ? 1 : 2);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
#else
    (void)pid;
    (void)status;
#endif
    free(obj);
    free(body);
}

/* Entries that compress beyond what a reader accepts (here 20 MiB of zeros in one
 * entry, 32768 to 1 under zstd, beyond 16 MiB + 4096 times 650 bytes) are stored in
 * raw blocks, and read back. */
static void test_encoder_keeps_to_the_bound(void **state)
{
    const size_t big = ARCSEG_RAW_FREE + (4u << 20);
    unsigned char *bytes = calloc(1, big);
    struct arcseg_entry e[2] = {{5, 0, 7, 100, bytes}, {6, 0, 8, (uint32_t)big, bytes}};
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_non_null(bytes);
    assert_int_equal(arcsegEncode("t1", 5, NULL, e, 2, &obj, &len, digest, errmsg), 0);
    assert_true(len > big); /* stored, not compressed */
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    assert_int_equal(seg.h.count, 2);
    assert_int_equal(seg.entries[1].len, big);
    assert_memory_equal(seg.entries[1].bytes, bytes, big);
    assert_memory_equal(seg.digest, digest, BACKUP_DIGEST_SIZE);
    arcsegFree(&seg);
    free(obj);
    /* Within the bound, compressed as ever: 1 MiB of zeros. */
    e[1].len = 1u << 20;
    assert_int_equal(arcsegEncode("t1", 5, NULL, e, 2, &obj, &len, digest, errmsg), 0);
    assert_true(len < 4096);
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    arcsegFree(&seg);
    free(obj);
    free(bytes);
}

/* The reserved bytes (offset 28) and the padding of the timeline's name are zeros as
 * the encoder writes them; a segment with anything else there is refused, its digest
 * right or not. */
static void test_reserved_bytes_are_zero(void **state)
{
    static const size_t at[] = {28, 29, 31, 80 + 3, 80 + 10, 119}; /* "t1", NUL, padding */
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    struct arcseg_header h;
    struct arcseg seg;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    threeEntries(e, 1);
    assert_int_equal(arcsegEncode("t1", 1, NULL, e, 3, &obj, &len, digest, errmsg), 0);
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        XXH128_hash_t d;
        assert_int_equal(obj[at[i]], 0);
        obj[at[i]] = 'a';
        d = XXH3_128bits(obj, len - ARCSEG_TRAILER_SIZE);
        cbkDigestBytes(d.low64, d.high64, obj + len - ARCSEG_TRAILER_SIZE);
        assert_int_equal(arcsegDecodeHeader(obj, len, "x", &h, errmsg), CAIRN_ECORRUPT);
        assert_non_null(strstr(errmsg, "reserved bytes are not zero"));
        assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), CAIRN_ECORRUPT);
        assert_non_null(strstr(errmsg, "reserved bytes are not zero"));
        obj[at[i]] = 0;
        d = XXH3_128bits(obj, len - ARCSEG_TRAILER_SIZE);
        cbkDigestBytes(d.low64, d.high64, obj + len - ARCSEG_TRAILER_SIZE);
    }
    assert_int_equal(arcsegDecode(obj, len, "x", &seg, errmsg), 0);
    arcsegFree(&seg);
    free(obj);
}

static void test_encode_refuses_bad_input(void **state)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    threeEntries(e, 5);
    assert_int_equal(arcsegEncode("t1", 6, NULL, e, 3, &obj, &len, digest, errmsg), CAIRN_EINVAL);
    assert_int_equal(arcsegEncode("Bad/Name", 5, NULL, e, 3, &obj, &len, digest, errmsg),
                     CAIRN_EINVAL);
    e[2].index = e[1].index; /* not increasing */
    assert_int_equal(arcsegEncode("t1", 5, NULL, e, 3, &obj, &len, digest, errmsg), CAIRN_EINVAL);
    assert_int_equal(arcsegEncode("t1", 5, NULL, e, 0, &obj, &len, digest, errmsg), CAIRN_EINVAL);
}

static void test_names(void **state)
{
    char name[ARCSEG_NAME_SIZE], tl[ARCSEG_TIMELINE_SIZE], tl2[ARCSEG_TIMELINE_SIZE];
    uint64_t first;
    (void)state;
    arcsegTimelineName(101, NULL, tl);
    assert_int_equal(strncmp(tl, "t00000000000000000101-", 22), 0);
    arcsegObjectName(tl, 12345, name);
    assert_true(arcsegParseName(name, tl2, &first));
    assert_string_equal(tl, tl2);
    assert_int_equal(first, 12345);
    {
        unsigned char d[16] = {0xab, 0xcd, 0x01, 0x02};
        arcsegTimelineName(7, d, tl2);
        assert_string_equal(tl2, "t00000000000000000007-abcd0102");
    }
    assert_false(arcsegParseName("archive-x-123.seg", tl2, &first));
    assert_false(arcsegParseName("20261203T101010Z-abc.cbk", tl2, &first));
    assert_false(arcsegParseName("archive--00000000000000000001.seg", tl2, &first));
    /* From index 0: no segment's (a stray one would wrap its timeline's head) */
    arcsegObjectName(tl, 0, name);
    assert_false(arcsegParseName(name, tl2, &first));
    /* names sort by first index within a timeline */
    char a[ARCSEG_NAME_SIZE], b[ARCSEG_NAME_SIZE];
    arcsegObjectName("t1", 9, a);
    arcsegObjectName("t1", 10, b);
    assert_true(strcmp(a, b) < 0);
}

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void putSeg(struct repo *r, const char *tl, uint64_t first, const unsigned char *prev,
                   uint64_t base, unsigned char digest[BACKUP_DIGEST_SIZE], char *name)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct repo_writer *w;
    threeEntries(e, base);
    assert_int_equal(arcsegEncode(tl, first, prev, e, 3, &obj, &len, digest, errmsg), 0);
    arcsegObjectName(tl, first, name);
    assert_int_equal(repoCreate(r, name, &w, errmsg), 0);
    assert_int_equal(repoWrite(w, obj, len, errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), 0);
    free(obj);
}

static void test_walk_timelines(void **state)
{
    char dir[] = "/tmp/cairn-arcseg-test-XXXXXX";
    char errmsg[CAIRN_ERRMSG_SIZE], path[PATH_MAX];
    struct repo *r;
    unsigned char d1[16], d2[16], d3[16], dx[16];
    char n1[ARCSEG_NAME_SIZE], n2[ARCSEG_NAME_SIZE], n3[ARCSEG_NAME_SIZE], nx[ARCSEG_NAME_SIZE];
    struct arcseg_info *segs;
    struct arcseg_timeline *tls;
    size_t n, ntl;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(repoOpen(dir, &r, errmsg), 0);
    /* t1: [1,4] [5,8] [9,12]: sound. */
    putSeg(r, "t1", 1, NULL, 1, d1, n1);
    putSeg(r, "t1", 5, d1, 5, d2, n2);
    putSeg(r, "t1", 9, d2, 9, d3, n3);
    /* t2: [1,4], then [6,9]: a gap. t3: [1,4], [5,8] linked to the wrong digest. */
    putSeg(r, "t2", 1, NULL, 1, dx, nx);
    putSeg(r, "t2", 6, dx, 6, dx, nx);
    putSeg(r, "t3", 1, NULL, 1, dx, nx);
    putSeg(r, "t3", 5, d3, 5, dx, nx);
    assert_int_equal(arcsegList(r, &segs, &n, errmsg), 0);
    assert_int_equal(n, 7);
    assert_int_equal(arcsegWalk(r, segs, n, true, &tls, &ntl, errmsg), 0);
    assert_int_equal(ntl, 3);
    assert_string_equal(tls[0].name, "t1");
    assert_int_equal(tls[0].head, 12);
    assert_int_equal(tls[0].good, 3);
    assert_string_equal(tls[0].problem, "");
    assert_int_equal(tls[1].head, 4);
    assert_int_equal(tls[1].bad_index, 5);
    assert_non_null(strstr(tls[1].problem, "gap"));
    assert_int_equal(tls[2].head, 4);
    assert_non_null(strstr(tls[2].problem, "does not link"));
    free(tls);
    /* Damage t1's middle segment's body: a full walk names it; a header walk does not
     * see the body, but the damaged trailer does break the next link. */
    snprintf(path, sizeof path, "%s/%s", dir, n2);
    {
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, ARCSEG_HEADER2_SIZE + 3, SEEK_SET);
        int c = fgetc(f);
        fseek(f, ARCSEG_HEADER2_SIZE + 3, SEEK_SET);
        fputc(c ^ 0xff, f);
        fclose(f);
    }
    assert_int_equal(arcsegWalk(r, segs, n, true, &tls, &ntl, errmsg), 0);
    assert_int_equal(tls[0].head, 4);
    assert_int_equal(tls[0].bad_index, 5);
    assert_string_equal(tls[0].bad_object, n2);
    assert_non_null(strstr(tls[0].problem, "damaged"));
    free(tls);
    free(segs);
    repoClose(r);
    nftw(dir, rmOne, 8, FTW_DEPTH | FTW_PHYS);
}

/* The walk reads its segments several at a time: what it says is still what a walk in
 * order says. A timeline of 40 segments with a broken link at the 18th and a damaged
 * trailer further on: the first problem is the one named, the segments before it good;
 * a whole timeline reads sound; arcsegFetch gives an object's bytes as stored. */
static void test_walk_reads_ahead_and_judges_in_order(void **state)
{
    char dir[] = "/tmp/cairn-arcseg-many-XXXXXX";
    char errmsg[CAIRN_ERRMSG_SIZE], path[PATH_MAX];
    struct repo *r;
    unsigned char d[16], prev[16], other[16];
    char name[ARCSEG_NAME_SIZE], n17[ARCSEG_NAME_SIZE], n30[ARCSEG_NAME_SIZE];
    struct arcseg_info *segs;
    struct arcseg_timeline *tls;
    size_t n, ntl;
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(repoOpen(dir, &r, errmsg), 0);
    memset(other, 0x5a, sizeof other);
    for (int k = 0; k < 40; k++) {
        uint64_t first = 1 + 4 * (uint64_t)k;
        /* "ok": sound. "bad": the 18th names a wrong digest (a broken link). */
        putSeg(r, "ok", first, k ? prev : NULL, first, d, name);
        memcpy(prev, d, sizeof d);
    }
    for (int k = 0; k < 40; k++) {
        uint64_t first = 1 + 4 * (uint64_t)k;
        putSeg(r, "zbad", first, k == 0 ? NULL : (k == 17 ? other : prev), first, d, name);
        memcpy(prev, d, sizeof d);
        if (k == 17) {
            snprintf(n17, sizeof n17, "%s", name);
        } else if (k == 30) {
            snprintf(n30, sizeof n30, "%s", name);
        }
    }
    /* And a damaged trailer later on, which a walk in order never reaches. */
    snprintf(path, sizeof path, "%s/%s", dir, n30);
    {
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, -1, SEEK_END), 0);
        int c = fgetc(f);
        assert_int_equal(fseek(f, -1, SEEK_END), 0);
        fputc(c ^ 0xff, f);
        fclose(f);
    }
    assert_int_equal(arcsegList(r, &segs, &n, errmsg), 0);
    assert_int_equal(n, 80);
    for (int full = 0; full < 2; full++) {
        assert_int_equal(arcsegWalk(r, segs, n, full, &tls, &ntl, errmsg), 0);
        assert_int_equal(ntl, 2);
        assert_string_equal(tls[0].name, "ok");
        assert_string_equal(tls[0].problem, "");
        assert_int_equal(tls[0].good, 40);
        assert_int_equal(tls[0].head, 160);
        assert_string_equal(tls[1].name, "zbad");
        assert_int_equal(tls[1].good, 17);
        assert_int_equal(tls[1].head, 68);
        assert_int_equal(tls[1].bad_index, 69);
        assert_string_equal(tls[1].bad_object, n17);
        assert_non_null(strstr(tls[1].problem, "does not link"));
        free(tls);
    }
    {
        unsigned char *buf, *file;
        size_t len;
        struct arcseg seg;
        struct stat sb;
        FILE *f;
        snprintf(path, sizeof path, "%s/%s", dir, n17);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(arcsegFetch(r, n17, &buf, &len, errmsg), 0);
        assert_int_equal(len, (size_t)sb.st_size);
        file = malloc(len);
        f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fread(file, 1, len, f), len);
        fclose(f);
        assert_memory_equal(buf, file, len);
        assert_int_equal(arcsegDecode(buf, len, n17, &seg, errmsg), 0);
        assert_int_equal(seg.h.first, 69);
        arcsegFree(&seg);
        free(file);
        free(buf);
        assert_int_equal(
            arcsegFetch(r, "archive-none-00000000000000000001.seg", &buf, &len, errmsg),
            CAIRN_ENOTFOUND);
        assert_null(buf);
    }
    free(segs);
    repoClose(r);
    nftw(dir, rmOne, 8, FTW_DEPTH | FTW_PHYS);
}

/* Write obj (len bytes) as `name` into r. */
static void putObject(struct repo *r, const char *name, const unsigned char *obj, size_t len)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct repo_writer *w;
    assert_int_equal(repoCreate(r, name, &w, errmsg), 0);
    assert_int_equal(repoWrite(w, obj, len, errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), 0);
}

/* A segment of history h (NULL: none) at [first, first + 3]. */
static void putHistorySeg(struct repo *r, const unsigned char *h, const char *tl, uint64_t first,
                          const unsigned char *prev, unsigned char digest[BACKUP_DIGEST_SIZE],
                          char *name)
{
    struct arcseg_entry e[3];
    unsigned char *obj;
    size_t len;
    char errmsg[CAIRN_ERRMSG_SIZE];
    threeEntries(e, first);
    assert_int_equal(arcsegEncodeHistory(h, tl, first, prev, e, 3, &obj, &len, digest, errmsg), 0);
    arcsegObjectName(tl, first, name);
    putObject(r, name, obj, len);
    free(obj);
}

/* The same segment as version 1 wrote it: a 128-byte header, no history. */
static void putVersion1Seg(struct repo *r, const char *tl, uint64_t first,
                           const unsigned char *prev, unsigned char digest[BACKUP_DIGEST_SIZE],
                           char *name)
{
    struct arcseg_entry e[3];
    unsigned char *obj, *v1;
    size_t len, len1;
    char errmsg[CAIRN_ERRMSG_SIZE];
    XXH128_hash_t h;
    threeEntries(e, first);
    assert_int_equal(arcsegEncode(tl, first, prev, e, 3, &obj, &len, digest, errmsg), 0);
    len1 = len - (ARCSEG_HEADER2_SIZE - ARCSEG_HEADER_SIZE);
    v1 = malloc(len1);
    assert_non_null(v1);
    memcpy(v1, obj, ARCSEG_HEADER_SIZE);
    memcpy(v1 + ARCSEG_HEADER_SIZE, obj + ARCSEG_HEADER2_SIZE, len - ARCSEG_HEADER2_SIZE);
    v1[4] = 1;
    v1[6] = ARCSEG_HEADER_SIZE;
    h = XXH3_128bits(v1, len1 - ARCSEG_TRAILER_SIZE);
    cbkDigestBytes(h.low64, h.high64, digest);
    memcpy(v1 + len1 - ARCSEG_TRAILER_SIZE, digest, BACKUP_DIGEST_SIZE);
    arcsegObjectName(tl, first, name);
    putObject(r, name, v1, len1);
    free(v1);
    free(obj);
}

static void test_histories_never_link(void **state)
{
    char dir[] = "/tmp/cairn-arcseg-hist-XXXXXX";
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct repo *r;
    unsigned char ha[ARCSEG_HISTORY_SIZE], hb[ARCSEG_HISTORY_SIZE];
    unsigned char d1[16], d2[16], d3[16];
    char n1[ARCSEG_NAME_SIZE], n2[ARCSEG_NAME_SIZE], n3[ARCSEG_NAME_SIZE];
    struct arcseg_info *segs;
    struct arcseg_timeline *tls;
    struct arcseg seg;
    size_t n, ntl;
    (void)state;
    memset(ha, 0xa1, sizeof ha);
    memset(hb, 0xb2, sizeof hb);
    assert_non_null(mkdtemp(dir));
    assert_int_equal(repoOpen(dir, &r, errmsg), 0);
    /* h1: [1,4] [5,8] of history A, then [9,12] of history B that names [5,8]'s digest
     * (as a writer that took another cluster's head for its own would): not linked. */
    putHistorySeg(r, ha, "h1", 1, NULL, d1, n1);
    putHistorySeg(r, ha, "h1", 5, d1, d2, n2);
    putHistorySeg(r, hb, "h1", 9, d2, d3, n3);
    /* v1: [1,4] as version 1 wrote it, continued by a version 2 segment of no history
     * (what an archiver continuing a version 1 archive writes): linked. */
    putVersion1Seg(r, "v1", 1, NULL, d1, n1);
    assert_int_equal(arcsegRead(r, n1, &seg, errmsg), 0);
    assert_int_equal(seg.h.header_len, ARCSEG_HEADER_SIZE);
    assert_int_equal(seg.h.count, 3);
    arcsegFree(&seg);
    putHistorySeg(r, NULL, "v1", 5, d1, d2, n2);
    assert_int_equal(arcsegList(r, &segs, &n, errmsg), 0);
    assert_int_equal(n, 5);
    for (int full = 0; full < 2; full++) {
        assert_int_equal(arcsegWalk(r, segs, n, full, &tls, &ntl, errmsg), 0);
        assert_int_equal(ntl, 2);
        assert_string_equal(tls[0].name, "h1");
        assert_int_equal(tls[0].good, 2);
        assert_int_equal(tls[0].head, 8);
        assert_int_equal(tls[0].bad_index, 9);
        assert_string_equal(tls[0].bad_object, n3);
        assert_non_null(strstr(tls[0].problem, "belongs to history b2b2"));
        assert_non_null(strstr(tls[0].problem, "history a1a1"));
        assert_memory_equal(tls[0].history, ha, ARCSEG_HISTORY_SIZE); /* its first segment's */
        assert_string_equal(tls[1].name, "v1");
        assert_true(tls[1].history[0] == 0 &&
                    memcmp(tls[1].history, tls[1].history + 1, ARCSEG_HISTORY_SIZE - 1) == 0);
        assert_string_equal(tls[1].problem, "");
        assert_int_equal(tls[1].head, 8);
        free(tls);
    }
    free(segs);
    repoClose(r);
    nftw(dir, rmOne, 8, FTW_DEPTH | FTW_PHYS);
}

/* A backup at index idx of history h (NULL: none), its digest from seed. */
static struct backup_info bk(uint64_t idx, const unsigned char *h, unsigned seed)
{
    struct backup_info b;
    memset(&b, 0, sizeof b);
    snprintf(b.id, sizeof b.id, "b%u", seed);
    b.raft_index = idx;
    for (int i = 0; i < BACKUP_DIGEST_SIZE; i++) {
        b.digest[i] = (unsigned char)(seed * 7 + i);
    }
    if (h != NULL) {
        memcpy(b.history, h, BACKUP_HISTORY_SIZE);
    }
    return b;
}

/* A walked timeline [start, head] of history h, started on backup on. */
static struct arcseg_timeline tl(uint64_t start, uint64_t head, const unsigned char *h,
                                 const struct backup_info *on)
{
    struct arcseg_timeline t;
    memset(&t, 0, sizeof t);
    arcsegTimelineName(start, on->digest, t.name);
    t.start = start;
    t.head = head;
    memcpy(t.history, h, ARCSEG_HISTORY_SIZE);
    return t;
}

/* Which backups a timeline's replay may start from, when the repository holds two
 * histories (a cluster rebuilt from it archiving into it): any of the timeline's history
 * in its range, not only the one it was started on; never one of the other history,
 * though its index is in range; one that records no history only as before (with one
 * history). And a history that two logs' backups carry is not trusted. */
static void test_bases_by_history(void **state)
{
    unsigned char ha[ARCSEG_HISTORY_SIZE], hb[ARCSEG_HISTORY_SIZE], hr[ARCSEG_HISTORY_SIZE];
    struct backup_info v[8];
    struct arcseg_timeline t[3];
    (void)state;
    memset(ha, 0xa1, sizeof ha);
    memset(hb, 0xb2, sizeof hb);
    memset(hr, 0x3c, sizeof hr);
    v[0] = bk(0, ha, 1);    /* A's first: its timeline starts at 1 */
    v[1] = bk(50, ha, 2);   /* A's later backup */
    v[2] = bk(10, hb, 3);   /* B's first (the rebuilt cluster's): its timeline starts at 11 */
    v[3] = bk(40, hb, 4);   /* B's later backup: index 40 is in A's range too */
    v[4] = bk(45, NULL, 5); /* an older build's: no history */
    v[5] = bk(150, ha, 6);  /* past A's head */
    v[6] = bk(30, ha, 7);
    snprintf(v[6].error, sizeof v[6].error, "unreadable");
    t[0] = tl(1, 100, ha, &v[0]);
    t[1] = tl(11, 60, hb, &v[2]);
    arcsegSharedHistories(t, 2, v, 7);
    assert_false(t[0].history_shared);
    assert_false(t[1].history_shared);

    for (int several = 0; several < 2; several++) {
        assert_true(arcsegBaseFits(&t[0], several, &v[0]));
        assert_true(arcsegBaseFits(&t[0], several, &v[1]));
        assert_false(arcsegBaseFits(&t[0], several, &v[2])); /* before its start */
        assert_false(arcsegBaseFits(&t[0], several, &v[3])); /* B's: in range, another log */
        assert_int_equal(arcsegBaseFits(&t[0], several, &v[4]), !several);
        assert_false(arcsegBaseFits(&t[0], several, &v[5]));
        assert_false(arcsegBaseFits(&t[0], several, &v[6]));
        assert_true(arcsegBaseFits(&t[1], several, &v[2]));
        assert_true(arcsegBaseFits(&t[1], several, &v[3]));
        assert_false(arcsegBaseFits(&t[1], several, &v[1])); /* A's: in range, another log */
        assert_int_equal(arcsegBaseFits(&t[1], several, &v[4]), !several);
    }
    /* A timeline of no history recorded (an older archive): the rule without histories. */
    {
        static const unsigned char none[ARCSEG_HISTORY_SIZE];
        struct arcseg_timeline old = tl(1, 100, none, &v[0]);
        assert_true(arcsegBaseFits(&old, false, &v[3]));
        assert_false(arcsegBaseFits(&old, true, &v[3]));
        assert_true(arcsegBaseFits(&old, true, &v[0])); /* started on it */
    }

    /* A data directory of A copied to start a second cluster keeps A's id: its backups
     * say history A, its archiver a random one (R). Its timeline, started on one of its
     * backups of "history A", shows it: A's timelines then trust no backup's history. */
    v[7] = bk(20, ha, 8);
    t[2] = tl(21, 90, hr, &v[7]);
    arcsegSharedHistories(t, 3, v, 8);
    assert_true(t[0].history_shared);
    assert_false(t[1].history_shared);
    assert_false(t[2].history_shared);
    assert_true(arcsegBaseFits(&t[0], true, &v[0]));  /* started on it */
    assert_false(arcsegBaseFits(&t[0], true, &v[1])); /* A's or the copy's: cannot tell */
    assert_false(arcsegBaseFits(&t[0], true, &v[7]));
    assert_true(arcsegBaseFits(&t[2], true, &v[7]));
    assert_false(arcsegBaseFits(&t[2], true, &v[1]));
    assert_true(arcsegBaseFits(&t[1], true, &v[3]));
}

/* A backup of index 0 that records no history is what a standalone backup of a file that
 * is the state of no Raft log records (`cairn backup create --db` of a plain SQLite
 * file): never the base of a replay, not even of the timeline that starts at 1 in a
 * repository of one history, where a backup of no history is otherwise taken. A
 * server's backup at index 0 (a fresh cluster's) records its history and serves; an
 * older build's, without one, serves the timeline started on it. */
static void test_index_zero_without_history_is_no_base(void **state)
{
    static const unsigned char none[ARCSEG_HISTORY_SIZE];
    unsigned char ha[ARCSEG_HISTORY_SIZE];
    struct backup_info first, plain, older, later;
    struct arcseg_timeline t, old;
    (void)state;
    memset(ha, 0xa1, sizeof ha);
    first = bk(0, ha, 1);   /* the server's, the timeline's base */
    plain = bk(0, NULL, 2); /* a plain file's */
    older = bk(0, NULL, 3); /* an older build's first base: no history */
    later = bk(30, NULL, 4);
    t = tl(1, 100, ha, &first);
    old = tl(1, 100, none, &older);
    for (int several = 0; several < 2; several++) {
        assert_true(arcsegBaseFits(&t, several, &first));
        assert_false(arcsegBaseFits(&t, several, &plain));
        assert_false(arcsegBaseFits(&old, several, &plain));
        assert_true(arcsegBaseFits(&old, several, &older)); /* started on it */
        assert_false(arcsegBaseFits(&t, several, &older));
    }
    assert_true(arcsegBaseFits(&t, false, &later)); /* no history, index > 0: as before */
    assert_false(arcsegBaseFits(&t, true, &later));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_damage_is_refused),
        cmocka_unit_test(test_latest_time_is_checked),
        cmocka_unit_test(test_whole_index_range),
        cmocka_unit_test(test_hostile_inflation_refused),
        cmocka_unit_test(test_entries_allocated_once_proven),
        cmocka_unit_test(test_encoder_keeps_to_the_bound),
        cmocka_unit_test(test_reserved_bytes_are_zero),
        cmocka_unit_test(test_encode_refuses_bad_input),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_walk_timelines),
        cmocka_unit_test(test_walk_reads_ahead_and_judges_in_order),
        cmocka_unit_test(test_histories_never_link),
        cmocka_unit_test(test_bases_by_history),
        cmocka_unit_test(test_index_zero_without_history_is_no_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
