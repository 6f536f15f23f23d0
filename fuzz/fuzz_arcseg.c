/* libFuzzer target: the archive segment decoders (src/backup/arcseg.c), which read the
 * objects `archive-<timeline>-<first>.seg` of a repository that may be damaged or
 * written by someone else: arcsegDecodeHeader, arcsegDecode, arcsegParseName (on the
 * input's first bytes as a name) and arcsegCommandTime (docs/FORMAT.md, "Archive
 * segment").
 *
 * A segment ends with a digest of every byte before it and its body is a zstd frame,
 * so almost every mutation would stop at the digest, and the rest in the frame. Each
 * input is decoded as it is; again with its body length and digest made right (so
 * that mutations of the header reach its checks); and again with the header made to
 * say what the body holds (raw_len, count, first, last, the times: so that mutations
 * of the entries reach the entry checks and the success path). An input that starts
 * with `carc` (the magic in lowercase: seeds written by fuzz/gen_corpus.c) carries its
 * body uncompressed, without trailer: the target compresses it, repairs the header and
 * digest, and decodes that, so that the mutator works on the entries themselves.
 *
 * What the decoders promise, and the target checks:
 *   - a refusal is CAIRN_ECORRUPT (or CAIRN_ENOMEM) with a message, and holds no memory;
 *   - an accepted header's body may inflate only as far as arcsegRawBound allows, and
 *     its reserved bytes and the padding of its timeline's name are zeros;
 *   - arcsegDecodeHeader reads only the first ARCSEG_HEADER2_SIZE bytes (it is given
 *     an exact copy of those) and agrees with arcsegDecode's header;
 *   - a decoded segment: count entries, in increasing index order within [first, last],
 *     the last at last, their bytes inside the inflated body, which they fill exactly;
 *     the first, last and latest times as the header says;
 *   - encoded again (arcsegEncodeHistory, with the history it read) and decoded, the
 *     same header and entries, and the very same inflated body;
 *   - a header repaired from well-formed entries is decoded (no false refusal);
 *   - a name arcsegParseName accepts is the one arcsegObjectName makes of its parts;
 *   - arcsegCommandTime reads no byte past its length.
 * Any thread. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "arcseg.h"
#include "buf.h"
#include "cairn.h"
#include "cbk.h"
#include "error.h"
#include "fuzz.h"

/* The most the repairs inflate: larger bodies are decoded, not repaired. */
#define SEG_FIX_MAX_RAW (1u << 20)

static void segPutU32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void segPutU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

/* The header size the version field of p[0..n) names, or 0 when it names none. */
static size_t segHeaderLen(const unsigned char *p, size_t n)
{
    if (n < 8) {
        return 0;
    }
    if (getU16(p + 4) == 1 && getU16(p + 6) == ARCSEG_HEADER_SIZE) {
        return ARCSEG_HEADER_SIZE;
    }
    if (getU16(p + 4) == 2 && getU16(p + 6) == ARCSEG_HEADER2_SIZE) {
        return ARCSEG_HEADER2_SIZE;
    }
    return 0;
}

/* What the target reads of an inflated body, independently of the decoder. */
struct seg_walk {
    uint32_t count;       /* whole entries read */
    uint64_t first, last; /* their first and last indexes */
    int64_t first_ms, last_ms, max_ms;
    bool ascending; /* indexes strictly increasing */
    bool exact;     /* the entries end where the body ends */
    bool one_frame; /* the body is exactly one zstd frame */
};

static void segWalk(const unsigned char *raw, size_t len, struct seg_walk *w)
{
    size_t off = 0;
    memset(w, 0, sizeof *w);
    w->ascending = true;
    while (len - off >= ARCSEG_ENTRY_HEAD && w->count < UINT32_MAX) {
        uint64_t index = getU64(raw + off);
        int64_t ms = (int64_t)getU64(raw + off + 16);
        uint32_t n = getU32(raw + off + 24);
        if (n > len - off - ARCSEG_ENTRY_HEAD) {
            break;
        }
        if (w->count == 0) {
            w->first = index;
            w->first_ms = ms;
            w->max_ms = ms;
        } else if (index <= w->last) {
            w->ascending = false;
        }
        w->last = index;
        w->last_ms = ms;
        if (ms > w->max_ms) {
            w->max_ms = ms;
        }
        w->count++;
        off += ARCSEG_ENTRY_HEAD + (size_t)n;
    }
    w->exact = off == len;
}

/* Make the body length and the digest of the segment p[0..n) right (and, with full,
 * the header's raw_len, count, range and times what its body holds, when it inflates).
 * *walk receives what the body holds (count 0 when it does not inflate). */
static void segFix(unsigned char *p, size_t n, bool full, struct seg_walk *walk)
{
    size_t hl = segHeaderLen(p, n);
    memset(walk, 0, sizeof *walk);
    if (hl == 0 || n < hl + ARCSEG_TRAILER_SIZE) {
        return;
    }
    segPutU64(p + 56, n - hl - ARCSEG_TRAILER_SIZE);
    if (full) {
        const unsigned char *body = p + hl;
        size_t blen = n - hl - ARCSEG_TRAILER_SIZE;
        unsigned long long raw_len = ZSTD_getFrameContentSize(body, blen);
        if (raw_len != ZSTD_CONTENTSIZE_ERROR && raw_len != ZSTD_CONTENTSIZE_UNKNOWN &&
            raw_len > 0 && raw_len <= SEG_FIX_MAX_RAW) {
            unsigned char *raw = malloc((size_t)raw_len);
            FUZZ_CHECK(raw != NULL);
            size_t got = ZSTD_decompress(raw, (size_t)raw_len, body, blen);
            if (!ZSTD_isError(got) && got == raw_len) {
                segWalk(raw, (size_t)raw_len, walk);
                walk->one_frame = ZSTD_findFrameCompressedSize(body, blen) == blen;
                segPutU64(p + 48, raw_len);
                if (walk->count > 0) {
                    if (getU64(p + 8) > walk->first) {
                        segPutU64(p + 8, walk->first);
                    }
                    segPutU64(p + 16, walk->last);
                    segPutU32(p + 24, walk->count);
                    segPutU64(p + 32, (uint64_t)walk->first_ms);
                    segPutU64(p + 40, (uint64_t)walk->last_ms);
                    segPutU64(p + 120, (uint64_t)walk->max_ms);
                }
            }
            free(raw);
        }
    }
    XXH128_hash_t h = XXH3_128bits(p, n - ARCSEG_TRAILER_SIZE);
    cbkDigestBytes(h.low64, h.high64, p + n - ARCSEG_TRAILER_SIZE);
}

static bool segTimelineOk(const char *t)
{
    size_t n = strnlen(t, ARCSEG_TIMELINE_SIZE);
    if (n == 0 || n >= ARCSEG_TIMELINE_SIZE) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

/* The reserved bytes (offset 28) and the timeline name's padding are zeros (the
 * header at p has a terminated name). */
static bool segReservedZero(const unsigned char *p)
{
    size_t k = strnlen((const char *)p + 80, ARCSEG_TIMELINE_SIZE);
    for (size_t i = 28; i < 32; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    for (size_t i = 80 + k; i < 80 + ARCSEG_TIMELINE_SIZE; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

static bool segSameHeader(const struct arcseg_header *a, const struct arcseg_header *b)
{
    return strcmp(a->timeline, b->timeline) == 0 && a->first == b->first && a->last == b->last &&
           a->count == b->count && a->first_ms == b->first_ms && a->last_ms == b->last_ms &&
           a->max_ms == b->max_ms && a->raw_len == b->raw_len && a->body_len == b->body_len &&
           memcmp(a->prev, b->prev, BACKUP_DIGEST_SIZE) == 0 &&
           memcmp(a->history, b->history, ARCSEG_HISTORY_SIZE) == 0 &&
           a->header_len == b->header_len;
}

/* A timeline and first index make a name that parses back to them; from index 0 (no
 * Raft index), one that is no segment's. */
static void segCheckName(const char *timeline, uint64_t first)
{
    char name[ARCSEG_NAME_SIZE], tl[ARCSEG_TIMELINE_SIZE];
    uint64_t got = 0;
    arcsegObjectName(timeline, first, name);
    if (first == 0) {
        FUZZ_CHECK(!arcsegParseName(name, tl, &got));
        return;
    }
    FUZZ_CHECK(arcsegParseName(name, tl, &got));
    FUZZ_CHECK(strcmp(tl, timeline) == 0 && got == first);
}

/* arcsegDecodeHeader of p[0..n), given the whole object and an exact copy of its first
 * ARCSEG_HEADER2_SIZE bytes: both answers alike, and what a header promises. */
static int segHeaderOne(const unsigned char *p, size_t n, struct arcseg_header *h)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "", errmsg2[CAIRN_ERRMSG_SIZE] = "";
    size_t k = n < ARCSEG_HEADER2_SIZE ? n : ARCSEG_HEADER2_SIZE;
    struct arcseg_header h2;
    unsigned char *head = malloc(k ? k : 1);
    int rv, rv2;

    FUZZ_CHECK(head != NULL);
    memcpy(head, p, k);
    rv = arcsegDecodeHeader(p, n, "fuzz.seg", h, errmsg);
    rv2 = arcsegDecodeHeader(head, n, "fuzz.seg", &h2, errmsg2);
    free(head);
    FUZZ_CHECK(rv == rv2);
    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_ECORRUPT);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK_ERRMSG(errmsg2, sizeof errmsg2);
        return rv;
    }
    FUZZ_CHECK(segSameHeader(h, &h2));
    FUZZ_CHECK(h->header_len == ARCSEG_HEADER_SIZE || h->header_len == ARCSEG_HEADER2_SIZE);
    FUZZ_CHECK(segTimelineOk(h->timeline));
    FUZZ_CHECK(h->first <= h->last && h->count >= 1 && h->count - 1 <= h->last - h->first);
    FUZZ_CHECK(h->raw_len <= ARCSEG_MAX_RAW && h->raw_len <= arcsegRawBound(h->body_len));
    FUZZ_CHECK(segReservedZero(p));
    FUZZ_CHECK(h->raw_len >= (uint64_t)h->count * ARCSEG_ENTRY_HEAD);
    FUZZ_CHECK(h->body_len == n - h->header_len - ARCSEG_TRAILER_SIZE);
    segCheckName(h->timeline, h->first);
    return 0;
}

/* arcsegCommandTime of an entry, on an exact copy when it is short (so that a read
 * past its length is seen): what offset 8 of a CCMD command says, or 0. */
static void segCheckCommandTime(const unsigned char *p, size_t n)
{
    int64_t want = n >= 16 && memcmp(p, "CCMD", 4) == 0 ? (int64_t)getU64(p + 8) : 0;
    if (n < 16) {
        unsigned char *copy = malloc(n ? n : 1);
        FUZZ_CHECK(copy != NULL);
        if (n > 0) {
            memcpy(copy, p, n);
        }
        FUZZ_CHECK(arcsegCommandTime(copy, n) == want);
        free(copy);
    } else {
        FUZZ_CHECK(arcsegCommandTime(p, n) == want);
    }
}

/* What a decoded segment promises. */
static void segCheckDecoded(const struct arcseg *seg)
{
    const struct arcseg_header *h = &seg->h;
    uint64_t off = 0;
    int64_t max_ms;

    FUZZ_CHECK(seg->raw != NULL && seg->entries != NULL && h->count >= 1);
    max_ms = seg->entries[0].time_ms;
    for (uint32_t i = 0; i < h->count; i++) {
        const struct arcseg_entry *e = &seg->entries[i];
        FUZZ_CHECK(e->index >= h->first && e->index <= h->last);
        FUZZ_CHECK(i == 0 || e->index > seg->entries[i - 1].index);
        /* Entries follow one another in the body, each after its 28-byte head. */
        FUZZ_CHECK(e->bytes == seg->raw + off + ARCSEG_ENTRY_HEAD);
        FUZZ_CHECK(getU64(seg->raw + off) == e->index);
        FUZZ_CHECK((uint64_t)e->len <= h->raw_len - off - ARCSEG_ENTRY_HEAD);
        off += ARCSEG_ENTRY_HEAD + (uint64_t)e->len;
        if (e->time_ms > max_ms) {
            max_ms = e->time_ms;
        }
        segCheckCommandTime(e->bytes, e->len);
    }
    FUZZ_CHECK(off == h->raw_len);
    FUZZ_CHECK(seg->entries[h->count - 1].index == h->last);
    FUZZ_CHECK(seg->entries[0].time_ms == h->first_ms);
    FUZZ_CHECK(seg->entries[h->count - 1].time_ms == h->last_ms);
    FUZZ_CHECK(max_ms == h->max_ms);
}

/* Encode what was decoded and decode that: the same segment. */
static void segCheckRoundTrip(const struct arcseg *seg)
{
    static const unsigned char zeros[BACKUP_DIGEST_SIZE];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    unsigned char digest[BACKUP_DIGEST_SIZE];
    const struct arcseg_header *h = &seg->h;
    struct arcseg again;
    unsigned char *obj = NULL;
    size_t len = 0;
    int rv;

    rv = arcsegEncodeHistory(h->history, h->timeline, h->first,
                             memcmp(h->prev, zeros, BACKUP_DIGEST_SIZE) != 0 ? h->prev : NULL,
                             seg->entries, h->count, &obj, &len, digest, errmsg);
    if (rv == CAIRN_ENOMEM) {
        return;
    }
    FUZZ_CHECK(rv == 0);
    FUZZ_CHECK(arcsegDecode(obj, len, "again.seg", &again, errmsg) == 0);
    FUZZ_CHECK(memcmp(again.digest, digest, BACKUP_DIGEST_SIZE) == 0);
    FUZZ_CHECK(memcmp(obj + len - ARCSEG_TRAILER_SIZE, digest, BACKUP_DIGEST_SIZE) == 0);
    FUZZ_CHECK(again.h.header_len == ARCSEG_HEADER2_SIZE);
    FUZZ_CHECK(strcmp(again.h.timeline, h->timeline) == 0);
    FUZZ_CHECK(again.h.first == h->first && again.h.last == h->last);
    FUZZ_CHECK(again.h.count == h->count && again.h.raw_len == h->raw_len);
    FUZZ_CHECK(again.h.first_ms == h->first_ms && again.h.last_ms == h->last_ms);
    FUZZ_CHECK(again.h.max_ms == h->max_ms);
    FUZZ_CHECK(memcmp(again.h.prev, h->prev, BACKUP_DIGEST_SIZE) == 0);
    FUZZ_CHECK(memcmp(again.h.history, h->history, ARCSEG_HISTORY_SIZE) == 0);
    FUZZ_CHECK(memcmp(again.raw, seg->raw, (size_t)h->raw_len) == 0);
    for (uint32_t i = 0; i < h->count; i++) {
        const struct arcseg_entry *x = &seg->entries[i], *y = &again.entries[i];
        FUZZ_CHECK(x->index == y->index && x->term == y->term && x->time_ms == y->time_ms);
        FUZZ_CHECK(x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0);
    }
    arcsegFree(&again);
    free(obj);
}

/* Decode the object p[0..n) with every check; returns arcsegDecode's code. When
 * must_decode, its header checks out and its body holds well-formed entries that the
 * header describes: it must be accepted. */
static int segOne(const unsigned char *p, size_t n, bool must_decode)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct arcseg_header h;
    struct arcseg seg;
    int hrv = segHeaderOne(p, n, &h);
    int rv = arcsegDecode(p, n, "fuzz.seg", &seg, errmsg);

    if (hrv != 0) {
        FUZZ_CHECK(rv == hrv);
    }
    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_ECORRUPT || rv == CAIRN_ENOMEM);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(seg.raw == NULL && seg.entries == NULL);
        FUZZ_CHECK(!must_decode || rv == CAIRN_ENOMEM);
        return rv;
    }
    FUZZ_CHECK(hrv == 0 && segSameHeader(&seg.h, &h));
    {
        XXH128_hash_t d = XXH3_128bits(p, n - ARCSEG_TRAILER_SIZE);
        unsigned char want[BACKUP_DIGEST_SIZE];
        cbkDigestBytes(d.low64, d.high64, want);
        FUZZ_CHECK(memcmp(seg.digest, want, BACKUP_DIGEST_SIZE) == 0);
    }
    segCheckDecoded(&seg);
    segCheckRoundTrip(&seg);
    arcsegFree(&seg);
    FUZZ_CHECK(seg.raw == NULL && seg.entries == NULL);
    return 0;
}

/* arcsegParseName on the input's first bytes up to its first NUL (at most 127). */
static void segNameOne(const uint8_t *data, size_t size)
{
    char name[128];
    char tl[ARCSEG_TIMELINE_SIZE];
    char again[ARCSEG_NAME_SIZE];
    uint64_t first = 0;
    size_t k = size < sizeof name - 1 ? size : sizeof name - 1;

    memcpy(name, data, k);
    name[k] = '\0';
    if (!arcsegParseName(name, tl, &first)) {
        return;
    }
    FUZZ_CHECK(segTimelineOk(tl));
    arcsegObjectName(tl, first, again);
    FUZZ_CHECK(strcmp(again, name) == 0);
}

/* A `carc` input (header, uncompressed body) as the segment it stands for. *out
 * malloc'd; false when the header's version names no header size. */
static bool segWrap(const uint8_t *data, size_t size, unsigned char **out, size_t *len)
{
    size_t hl = segHeaderLen(data, size);
    size_t bound, clen;
    unsigned char *obj;
    if (hl == 0 || size < hl) {
        return false;
    }
    bound = ZSTD_compressBound(size - hl);
    obj = malloc(hl + bound + ARCSEG_TRAILER_SIZE);
    FUZZ_CHECK(obj != NULL);
    memcpy(obj, data, hl);
    memcpy(obj, ARCSEG_MAGIC, 4);
    clen = ZSTD_compress(obj + hl, bound, data + hl, size - hl, 1);
    FUZZ_CHECK(!ZSTD_isError(clen));
    *out = obj;
    *len = hl + clen + ARCSEG_TRAILER_SIZE;
    return true;
}

/* Whether the repaired segment p[0..n) is one a decoder must accept: a header of a
 * known version naming a valid timeline, over a body the repair read as well-formed
 * entries (which it made the header describe), its reserved bytes zeros. */
static bool segWellFormed(const unsigned char *p, size_t n, const struct seg_walk *w)
{
    size_t hl = segHeaderLen(p, n);
    char tl[ARCSEG_TIMELINE_SIZE];
    if (hl == 0 || n < hl + ARCSEG_TRAILER_SIZE || memcmp(p, ARCSEG_MAGIC, 4) != 0 ||
        memchr(p + 80, '\0', ARCSEG_TIMELINE_SIZE) == NULL) {
        return false;
    }
    memcpy(tl, p + 80, ARCSEG_TIMELINE_SIZE);
    return segTimelineOk(tl) && segReservedZero(p) && w->count > 0 && w->ascending && w->exact &&
           w->one_frame;
}

/* The input as it is, with its digest made right, with its header made right; a
 * `carc` input wrapped. Returns the code of the last decode. */
static int fuzzArcseg(const uint8_t *data, size_t size)
{
    struct seg_walk walk;
    unsigned char *copy, *fixed;
    int rv;

    segNameOne(data, size);
    segCheckCommandTime(data, size);
    rv = segOne(data, size, false);

    /* An exact-size heap copy, so that ASan sees any read past its end. */
    copy = malloc(size ? size : 1);
    fixed = malloc(size ? size : 1);
    FUZZ_CHECK(copy != NULL && fixed != NULL);
    memcpy(copy, data, size);
    segFix(copy, size, false, &walk);
    if (memcmp(copy, data, size) != 0) {
        rv = segOne(copy, size, false);
    }
    memcpy(fixed, copy, size);
    segFix(fixed, size, true, &walk);
    if (memcmp(fixed, copy, size) != 0) {
        rv = segOne(fixed, size, segWellFormed(fixed, size, &walk));
    }
    free(fixed);
    free(copy);

    if (size >= 4 && memcmp(data, "carc", 4) == 0) {
        unsigned char *obj;
        size_t len;
        if (segWrap(data, size, &obj, &len)) {
            segFix(obj, len, true, &walk);
            rv = segOne(obj, len, segWellFormed(obj, len, &walk));
            free(obj);
        }
    }
    return rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzArcseg(data, size);
    return 0;
}
#endif
