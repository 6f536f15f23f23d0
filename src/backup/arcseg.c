/* Archive segments: encode, decode, list, walk (arcseg.h; the format is in
 * docs/FORMAT.md, "Archive segment"). Any thread; no state. */
#define _GNU_SOURCE
#include "arcseg.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>
#include <zstd.h>

#include "buf.h"
#include "cbk.h"
#include "error.h"
#include "lib.h"
#include "repo.h"

#define ZSTD_LEVEL 1 /* entries are often compressed already; the archiver must keep up */

static void putU32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void putU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void digestOf(const void *p, size_t n, unsigned char out[BACKUP_DIGEST_SIZE])
{
    XXH128_hash_t h = XXH3_128bits(p, n);
    cbkDigestBytes(h.low64, h.high64, out);
}

int64_t arcsegCommandTime(const void *p, size_t n)
{
    const unsigned char *b = p;
    if (n < 16 || memcmp(b, "CCMD", 4) != 0) {
        return 0;
    }
    return (int64_t)getU64(b + 8);
}

static bool timelineOk(const char *t)
{
    size_t n = strlen(t);
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

void arcsegTimelineName(uint64_t start, const unsigned char *base_digest,
                        char out[ARCSEG_TIMELINE_SIZE])
{
    uint32_t rnd = 0;
    if (base_digest != NULL) {
        rnd = (uint32_t)base_digest[0] << 24 | (uint32_t)base_digest[1] << 16 |
              (uint32_t)base_digest[2] << 8 | base_digest[3];
    } else if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rnd = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec;
    }
    snprintf(out, ARCSEG_TIMELINE_SIZE, "t%020llu-%08x", (unsigned long long)start, rnd);
}

void arcsegHistoryHex(const unsigned char *history, char out[2 * ARCSEG_HISTORY_SIZE + 1])
{
    libHexEncode(history, ARCSEG_HISTORY_SIZE, out);
}

void arcsegObjectName(const char *timeline, uint64_t first, char out[ARCSEG_NAME_SIZE])
{
    snprintf(out, ARCSEG_NAME_SIZE, ARCSEG_PREFIX "%s-%020llu" ARCSEG_SUFFIX, timeline,
             (unsigned long long)first);
}

bool arcsegParseName(const char *name, char timeline[ARCSEG_TIMELINE_SIZE], uint64_t *first)
{
    size_t n = strlen(name);
    size_t pre = strlen(ARCSEG_PREFIX), suf = strlen(ARCSEG_SUFFIX);
    if (n < pre + 1 + 1 + 20 + suf || strncmp(name, ARCSEG_PREFIX, pre) != 0 ||
        strcmp(name + n - suf, ARCSEG_SUFFIX) != 0) {
        return false;
    }
    const char *digits = name + n - suf - 20;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return false;
        }
        uint64_t d = (uint64_t)(digits[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    /* Raft indexes start at 1: no archiver names a segment from 0, and a timeline read
     * from there would have its head at start - 1, below 0. */
    if (digits[-1] != '-' || v == 0) {
        return false;
    }
    size_t tl = (size_t)(digits - 1 - (name + pre));
    if (tl == 0 || tl >= ARCSEG_TIMELINE_SIZE) {
        return false;
    }
    memcpy(timeline, name + pre, tl);
    timeline[tl] = '\0';
    if (!timelineOk(timeline)) {
        return false;
    }
    *first = v;
    return true;
}

uint64_t arcsegRawBound(uint64_t body_len)
{
    uint64_t room = ARCSEG_MAX_RAW - ARCSEG_RAW_FREE;
    if (body_len >= room / ARCSEG_MAX_RATIO) {
        return ARCSEG_MAX_RAW;
    }
    return ARCSEG_RAW_FREE + body_len * ARCSEG_MAX_RATIO;
}

#define ZSTD_BLOCK_MAX (128u << 10)

/* The size of rawFrame's frame of n bytes. */
static size_t rawFrameSize(size_t n)
{
    size_t blocks = n == 0 ? 1 : (n + ZSTD_BLOCK_MAX - 1) / ZSTD_BLOCK_MAX;
    return 4 + 1 + 8 + 3 * blocks + n;
}

/* p[0..n) as one zstd frame of raw (stored) blocks, into out (rawFrameSize(n) bytes):
 * for a body that zstd would compress beyond arcsegRawBound, which a reader refuses.
 * The frame says its content size (8 bytes, single segment), as ZSTD_compress's do. */
static size_t rawFrame(unsigned char *out, const unsigned char *p, size_t n)
{
    size_t o = 0, off = 0;
    putU32(out, 0xFD2FB528u);
    out[4] = 0xE0; /* content size in 8 bytes, single segment, no checksum, no dictionary */
    putU64(out + 5, n);
    o = 13;
    do {
        size_t k = n - off < ZSTD_BLOCK_MAX ? n - off : ZSTD_BLOCK_MAX;
        uint32_t bh = (uint32_t)k << 3 | (off + k == n ? 1u : 0u); /* type 0: raw */
        out[o] = (unsigned char)bh;
        out[o + 1] = (unsigned char)(bh >> 8);
        out[o + 2] = (unsigned char)(bh >> 16);
        memcpy(out + o + 3, p + off, k);
        o += 3 + k;
        off += k;
    } while (off < n);
    return o;
}

int arcsegEncode(const char *timeline, uint64_t first, const unsigned char *prev,
                 const struct arcseg_entry *e, size_t n, unsigned char **out, size_t *len,
                 unsigned char digest[BACKUP_DIGEST_SIZE], char *errmsg)
{
    return arcsegEncodeHistory(NULL, timeline, first, prev, e, n, out, len, digest, errmsg);
}

int arcsegEncodeHistory(const unsigned char *history, const char *timeline, uint64_t first,
                        const unsigned char *prev, const struct arcseg_entry *e, size_t n,
                        unsigned char **out, size_t *len, unsigned char digest[BACKUP_DIGEST_SIZE],
                        char *errmsg)
{
    const size_t hl = ARCSEG_HEADER2_SIZE;
    unsigned char *raw = NULL, *obj = NULL;
    uint64_t raw_len = 0;
    int64_t max_ms;
    size_t bound, clen, off = 0;

    *out = NULL;
    *len = 0;
    if (!timelineOk(timeline)) {
        errorf(errmsg, "archive segment: bad timeline name \"%s\"", timeline);
        return CAIRN_EINVAL;
    }
    if (n == 0 || n > UINT32_MAX || e[0].index < first) {
        errorf(errmsg, "archive segment: no entries, or the first is before index %llu",
               (unsigned long long)first);
        return CAIRN_EINVAL;
    }
    max_ms = e[0].time_ms;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && e[i].index <= e[i - 1].index) {
            errorf(errmsg, "archive segment: entry %llu after %llu", (unsigned long long)e[i].index,
                   (unsigned long long)e[i - 1].index);
            return CAIRN_EINVAL;
        }
        raw_len += ARCSEG_ENTRY_HEAD + (uint64_t)e[i].len;
        if (e[i].time_ms > max_ms) {
            max_ms = e[i].time_ms;
        }
    }
    if (raw_len > ARCSEG_MAX_RAW) {
        errorf(errmsg, "archive segment: %llu bytes of entries, more than a segment holds",
               (unsigned long long)raw_len);
        return CAIRN_ETOOBIG;
    }
    raw = malloc(raw_len);
    bound = ZSTD_compressBound(raw_len);
    obj = malloc(hl + bound + ARCSEG_TRAILER_SIZE);
    if (raw == NULL || obj == NULL) {
        free(raw);
        free(obj);
        errorf(errmsg, "out of memory encoding an archive segment of %llu bytes",
               (unsigned long long)raw_len);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        putU64(raw + off, e[i].index);
        putU64(raw + off + 8, e[i].term);
        putU64(raw + off + 16, (uint64_t)e[i].time_ms);
        putU32(raw + off + 24, e[i].len);
        if (e[i].len > 0) {
            memcpy(raw + off + ARCSEG_ENTRY_HEAD, e[i].bytes, e[i].len);
        }
        off += ARCSEG_ENTRY_HEAD + e[i].len;
    }
    clen = ZSTD_compress(obj + hl, bound, raw, raw_len, ZSTD_LEVEL);
    if (!ZSTD_isError(clen) && raw_len > arcsegRawBound(clen)) {
        /* Compressed too well for a reader to trust (arcsegRawBound): stored instead. */
        size_t rl = rawFrameSize(raw_len);
        unsigned char *bigger = rl > bound ? realloc(obj, hl + rl + ARCSEG_TRAILER_SIZE) : obj;
        if (bigger == NULL) {
            free(raw);
            free(obj);
            errorf(errmsg, "out of memory encoding an archive segment of %llu bytes",
                   (unsigned long long)raw_len);
            return CAIRN_ENOMEM;
        }
        obj = bigger;
        clen = rawFrame(obj + hl, raw, raw_len);
    }
    free(raw);
    if (ZSTD_isError(clen)) {
        free(obj);
        errorf(errmsg, "archive segment: zstd: %s", ZSTD_getErrorName(clen));
        return CAIRN_EIO;
    }
    memset(obj, 0, hl);
    memcpy(obj, ARCSEG_MAGIC, 4);
    obj[4] = ARCSEG_VERSION;
    obj[6] = (unsigned char)hl;
    putU64(obj + 8, first);
    putU64(obj + 16, e[n - 1].index);
    putU32(obj + 24, (uint32_t)n);
    putU64(obj + 32, (uint64_t)e[0].time_ms);
    putU64(obj + 40, (uint64_t)e[n - 1].time_ms);
    putU64(obj + 48, raw_len);
    putU64(obj + 56, clen);
    if (prev != NULL) {
        memcpy(obj + 64, prev, BACKUP_DIGEST_SIZE);
    }
    memcpy(obj + 80, timeline, strlen(timeline));
    putU64(obj + 120, (uint64_t)max_ms);
    /* the name takes bytes 80..119: at most 39 characters and a NUL */
    if (history != NULL) {
        memcpy(obj + ARCSEG_HEADER_SIZE, history, ARCSEG_HISTORY_SIZE);
    }
    *len = hl + clen + ARCSEG_TRAILER_SIZE;
    digestOf(obj, hl + clen, digest);
    memcpy(obj + hl + clen, digest, BACKUP_DIGEST_SIZE);
    *out = obj;
    return 0;
}

int arcsegDecodeHeader(const void *p, uint64_t size, const char *name, struct arcseg_header *h,
                       char *errmsg)
{
    const unsigned char *b = p;
    unsigned version, hl;
    memset(h, 0, sizeof *h);
    if (size < ARCSEG_HEADER_SIZE + ARCSEG_TRAILER_SIZE) {
        errorf(errmsg, "archive segment %s: %llu bytes, too short (truncated)", name,
               (unsigned long long)size);
        return CAIRN_ECORRUPT;
    }
    if (memcmp(b, ARCSEG_MAGIC, 4) != 0) {
        errorf(errmsg, "archive segment %s: bad magic", name);
        return CAIRN_ECORRUPT;
    }
    version = getU16(b + 4);
    hl = getU16(b + 6);
    if (!(version == 1 && hl == ARCSEG_HEADER_SIZE) &&
        !(version == 2 && hl == ARCSEG_HEADER2_SIZE)) {
        errorf(errmsg,
               "archive segment %s: version %u (header %u bytes) is not one this build reads", name,
               version, hl);
        return CAIRN_ECORRUPT;
    }
    if (size < (uint64_t)hl + ARCSEG_TRAILER_SIZE) {
        errorf(errmsg, "archive segment %s: %llu bytes, too short (truncated)", name,
               (unsigned long long)size);
        return CAIRN_ECORRUPT;
    }
    h->header_len = hl;
    if (version >= 2) {
        memcpy(h->history, b + ARCSEG_HEADER_SIZE, ARCSEG_HISTORY_SIZE);
    }
    h->first = getU64(b + 8);
    h->last = getU64(b + 16);
    h->count = getU32(b + 24);
    h->first_ms = (int64_t)getU64(b + 32);
    h->last_ms = (int64_t)getU64(b + 40);
    h->raw_len = getU64(b + 48);
    h->body_len = getU64(b + 56);
    memcpy(h->prev, b + 64, BACKUP_DIGEST_SIZE);
    h->max_ms = (int64_t)getU64(b + 120);
    if (memchr(b + 80, '\0', 40) == NULL) {
        errorf(errmsg, "archive segment %s: timeline name not terminated", name);
        return CAIRN_ECORRUPT;
    }
    memcpy(h->timeline, b + 80, 40);
    h->timeline[39] = '\0';
    if (!timelineOk(h->timeline)) {
        errorf(errmsg, "archive segment %s: bad timeline name in its header", name);
        return CAIRN_ECORRUPT;
    }
    /* Zeros, as the encoder writes them: a later version may give them a meaning. */
    if (!libIsZero(b + 28, 4) || !libIsZero(b + 80 + strlen(h->timeline), 40 - strlen(h->timeline))) {
        errorf(errmsg, "archive segment %s: reserved bytes are not zero", name);
        return CAIRN_ECORRUPT;
    }
    /* count - 1, not last - first + 1, which is 0 for the range of every index. */
    if (h->first > h->last || h->count == 0 || h->count - 1 > h->last - h->first ||
        h->raw_len > ARCSEG_MAX_RAW || h->raw_len < (uint64_t)h->count * ARCSEG_ENTRY_HEAD ||
        h->body_len != size - hl - ARCSEG_TRAILER_SIZE) {
        errorf(errmsg,
               "archive segment %s: inconsistent header (range %llu-%llu, %u entries, body "
               "%llu of %llu bytes)",
               name, (unsigned long long)h->first, (unsigned long long)h->last, h->count,
               (unsigned long long)h->body_len, (unsigned long long)size);
        return CAIRN_ECORRUPT;
    }
    if (h->raw_len > arcsegRawBound(h->body_len)) {
        errorf(errmsg,
               "archive segment %s: its body of %llu bytes claims to inflate to %llu, more "
               "than %llu (at most %u times its size, beyond %u bytes)",
               name, (unsigned long long)h->body_len, (unsigned long long)h->raw_len,
               (unsigned long long)arcsegRawBound(h->body_len), ARCSEG_MAX_RATIO, ARCSEG_RAW_FREE);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

void arcsegFree(struct arcseg *seg)
{
    free(seg->raw);
    free(seg->entries);
    seg->raw = NULL;
    seg->entries = NULL;
}

int arcsegDecode(const void *p, size_t n, const char *name, struct arcseg *seg, char *errmsg)
{
    const unsigned char *b = p;
    unsigned char d[BACKUP_DIGEST_SIZE];
    struct arcseg_header *h = &seg->h;
    size_t got, off = 0;
    unsigned long long fsz;
    struct arcseg_entry e = {0};
    uint64_t prev_index = 0;
    int64_t max_ms;
    int rv;

    memset(seg, 0, sizeof *seg);
    if ((rv = arcsegDecodeHeader(p, n, name, h, errmsg)) != 0) {
        return rv;
    }
    digestOf(b, n - ARCSEG_TRAILER_SIZE, d);
    if (memcmp(d, b + n - ARCSEG_TRAILER_SIZE, BACKUP_DIGEST_SIZE) != 0) {
        errorf(errmsg, "archive segment %s (indexes %llu-%llu): damaged, its digest differs", name,
               (unsigned long long)h->first, (unsigned long long)h->last);
        return CAIRN_ECORRUPT;
    }
    memcpy(seg->digest, d, BACKUP_DIGEST_SIZE);
    fsz = ZSTD_getFrameContentSize(b + h->header_len, h->body_len);
    if (fsz != h->raw_len ||
        ZSTD_findFrameCompressedSize(b + h->header_len, h->body_len) != h->body_len) {
        errorf(errmsg, "archive segment %s: its body is not one zstd frame of %llu bytes", name,
               (unsigned long long)h->raw_len);
        return CAIRN_ECORRUPT;
    }
    /* raw_len is the frame's own content size, within arcsegRawBound(body_len)
     * (arcsegDecodeHeader): what these n bytes may hold. */
    seg->raw = malloc(h->raw_len ? h->raw_len : 1);
    if (seg->raw == NULL) {
        errorf(errmsg, "out of memory reading archive segment %s", name);
        return CAIRN_ENOMEM;
    }
    got = ZSTD_decompress(seg->raw, h->raw_len, b + h->header_len, h->body_len);
    if (ZSTD_isError(got) || got != h->raw_len) {
        arcsegFree(seg);
        errorf(errmsg, "archive segment %s: its body does not inflate", name);
        return CAIRN_ECORRUPT;
    }
    /* Every entry is read and checked before the array that holds them is allocated:
     * the count is only a claim until the body is seen to hold that many. */
    max_ms = INT64_MIN;
    for (uint32_t i = 0; i < h->count; i++) {
        if (h->raw_len - off < ARCSEG_ENTRY_HEAD) {
            goto bad;
        }
        e.index = getU64(seg->raw + off);
        e.time_ms = (int64_t)getU64(seg->raw + off + 16);
        e.len = getU32(seg->raw + off + 24);
        off += ARCSEG_ENTRY_HEAD;
        if (h->raw_len - off < e.len || e.index < h->first || e.index > h->last ||
            (i > 0 && e.index <= prev_index)) {
            goto bad;
        }
        off += e.len;
        if (i == 0 && e.time_ms != h->first_ms) {
            goto bad;
        }
        if (e.time_ms > max_ms) {
            max_ms = e.time_ms;
        }
        prev_index = e.index;
    }
    /* max_ms too: a restore to a time picks the segment to stop in by the headers'
     * latest times (src/pitr.c), and the replay, which decodes every segment, must refuse
     * one whose header says less than its entries rather than replay past the target. */
    if (off != h->raw_len || e.index != h->last || e.time_ms != h->last_ms || max_ms != h->max_ms) {
        goto bad;
    }
    seg->entries = calloc(h->count, sizeof *seg->entries);
    if (seg->entries == NULL) {
        arcsegFree(seg);
        errorf(errmsg, "out of memory reading archive segment %s", name);
        return CAIRN_ENOMEM;
    }
    off = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        struct arcseg_entry *x = &seg->entries[i];
        x->index = getU64(seg->raw + off);
        x->term = getU64(seg->raw + off + 8);
        x->time_ms = (int64_t)getU64(seg->raw + off + 16);
        x->len = getU32(seg->raw + off + 24);
        x->bytes = seg->raw + off + ARCSEG_ENTRY_HEAD;
        off += ARCSEG_ENTRY_HEAD + x->len;
    }
    return 0;
bad:
    arcsegFree(seg);
    errorf(errmsg, "archive segment %s: its entries do not match its header", name);
    return CAIRN_ECORRUPT;
}

/* ---- the repository side ---------------------------------------------------------- */

struct list_ctx {
    struct arcseg_info *v;
    size_t n, cap;
    int oom;
};

static int listOne(void *arg, const char *name, uint64_t size, const char *version)
{
    struct list_ctx *c = arg;
    char tl[ARCSEG_TIMELINE_SIZE];
    uint64_t first;
    (void)version;
    if (strlen(name) >= ARCSEG_NAME_SIZE || !arcsegParseName(name, tl, &first)) {
        return 0; /* not a segment (a temporary name, another tool's object) */
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct arcseg_info *v = realloc(c->v, cap * sizeof *v);
        if (v == NULL) {
            return CAIRN_ENOMEM;
        }
        c->v = v;
        c->cap = cap;
    }
    memset(&c->v[c->n], 0, sizeof c->v[c->n]);
    snprintf(c->v[c->n].name, ARCSEG_NAME_SIZE, "%s", name);
    snprintf(c->v[c->n].timeline, ARCSEG_TIMELINE_SIZE, "%s", tl);
    c->v[c->n].first = first;
    c->v[c->n].size = size;
    c->n++;
    return 0;
}

static int byName(const void *a, const void *b)
{
    const struct arcseg_info *x = a, *y = b;
    int c = strcmp(x->timeline, y->timeline);
    if (c != 0) {
        return c;
    }
    return x->first < y->first ? -1 : x->first > y->first;
}

int arcsegList(struct repo *repo, struct arcseg_info **segs, size_t *n, char *errmsg)
{
    struct list_ctx c = {0};
    int rv = repoListNames(repo, ARCSEG_PREFIX, listOne, &c, errmsg);
    if (rv != 0) {
        if (rv == CAIRN_ENOMEM) {
            errorf(errmsg, "out of memory listing the archive");
        }
        free(c.v);
        return rv;
    }
    if (c.n > 1) {
        qsort(c.v, c.n, sizeof *c.v, byName);
    }
    *segs = c.v;
    *n = c.n;
    return 0;
}

/* Read `len` bytes at off of an open object. */
static int readAt(struct repo_reader *rd, const char *name, uint64_t off, void *buf, size_t len,
                  char *errmsg)
{
    int err = rd->io.read(rd->io.arg, off, buf, len);
    if (err != 0) {
        const char *why = rd->io.why != NULL ? rd->io.why(rd->io.arg) : NULL;
        errorf(errmsg, "archive segment %s: read failed: %s", name,
               why != NULL ? why : (err > 0 ? strerror(err) : "object ends early"));
        return err == -1 ? CAIRN_ECORRUPT : CAIRN_EIO;
    }
    return 0;
}

int arcsegFetch(struct repo *repo, const char *name, unsigned char **out, size_t *len, char *errmsg)
{
    struct repo_reader rd;
    unsigned char *buf;
    int rv;

    *out = NULL;
    *len = 0;
    if ((rv = repoOpenRead(repo, name, &rd, errmsg)) != 0) {
        return rv;
    }
    if (rd.size > (uint64_t)ARCSEG_MAX_RAW + ARCSEG_HEADER2_SIZE + ARCSEG_TRAILER_SIZE + 65536) {
        repoCloseRead(&rd);
        errorf(errmsg, "archive segment %s: %llu bytes, larger than any segment", name,
               (unsigned long long)rd.size);
        return CAIRN_ECORRUPT;
    }
    buf = malloc(rd.size ? rd.size : 1);
    if (buf == NULL) {
        repoCloseRead(&rd);
        errorf(errmsg, "out of memory reading archive segment %s", name);
        return CAIRN_ENOMEM;
    }
    rv = readAt(&rd, name, 0, buf, rd.size, errmsg);
    repoCloseRead(&rd);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    *out = buf;
    *len = (size_t)rd.size;
    return 0;
}

int arcsegRead(struct repo *repo, const char *name, struct arcseg *seg, char *errmsg)
{
    unsigned char *buf;
    size_t len;
    int rv;

    memset(seg, 0, sizeof *seg);
    if ((rv = arcsegFetch(repo, name, &buf, &len, errmsg)) != 0) {
        return rv;
    }
    rv = arcsegDecode(buf, len, name, seg, errmsg);
    free(buf);
    return rv;
}

/* Fill s from its object's header and trailer (or from the whole object with full).
 * A damaged object: CAIRN_ECORRUPT with errmsg. */
static int readInfo(struct repo *repo, struct arcseg_info *s, bool full, char *errmsg)
{
    struct arcseg_header h;
    int rv;
    s->read = false;
    if (full) {
        struct arcseg seg;
        if ((rv = arcsegRead(repo, s->name, &seg, errmsg)) != 0) {
            return rv;
        }
        h = seg.h;
        memcpy(s->digest, seg.digest, BACKUP_DIGEST_SIZE);
        arcsegFree(&seg);
    } else {
        struct repo_reader rd;
        unsigned char head[ARCSEG_HEADER2_SIZE];
        if ((rv = repoOpenRead(repo, s->name, &rd, errmsg)) != 0) {
            return rv;
        }
        s->size = rd.size;
        /* As much of the header as the object has (a version 1 object of one tiny entry
         * may be shorter than a version 2 header): the decoder checks the rest. */
        rv = rd.size < ARCSEG_HEADER_SIZE + ARCSEG_TRAILER_SIZE
                 ? arcsegDecodeHeader(head, rd.size, s->name, &h, errmsg)
                 : readAt(&rd, s->name, 0, head,
                          rd.size < sizeof head ? (size_t)rd.size : sizeof head, errmsg);
        if (rv == 0) {
            rv = arcsegDecodeHeader(head, rd.size, s->name, &h, errmsg);
        }
        if (rv == 0) {
            rv = readAt(&rd, s->name, rd.size - ARCSEG_TRAILER_SIZE, s->digest, ARCSEG_TRAILER_SIZE,
                        errmsg);
        }
        repoCloseRead(&rd);
        if (rv != 0) {
            return rv;
        }
    }
    if (strcmp(h.timeline, s->timeline) != 0 || h.first != s->first) {
        errorf(errmsg, "archive segment %s: its header says timeline %s from index %llu", s->name,
               h.timeline, (unsigned long long)h.first);
        return CAIRN_ECORRUPT;
    }
    s->read = true;
    s->last = h.last;
    s->count = h.count;
    s->first_ms = h.first_ms;
    s->last_ms = h.last_ms;
    s->max_ms = h.max_ms;
    memcpy(s->prev, h.prev, BACKUP_DIGEST_SIZE);
    memcpy(s->history, h.history, ARCSEG_HISTORY_SIZE);
    return 0;
}

/* The reads of a walk, several at once: a remote repository answers each object's
 * header and trailer in a round trip or two, and a timeline has a segment a second of
 * writes. Each segment's outcome is kept (rv, and the message of a failure) for the
 * walk, which then judges them in order exactly as if it had read them one by one. */
#define WALK_THREADS 4

struct walk_reads {
    struct repo *repo;
    struct arcseg_info *segs;
    size_t n;
    bool full;
    int *rv;     /* per segment */
    char **why;  /* per segment: malloc'd message of a failure, or NULL */
    size_t next; /* the next segment to read, under mu */
    pthread_mutex_t mu;
};

static void *walkReader(void *arg)
{
    struct walk_reads *w = arg;
    for (;;) {
        char why[CAIRN_ERRMSG_SIZE];
        size_t k;
        int rv;
        pthread_mutex_lock(&w->mu);
        k = w->next++;
        pthread_mutex_unlock(&w->mu);
        if (k >= w->n) {
            return NULL;
        }
        why[0] = '\0';
        rv = readInfo(w->repo, &w->segs[k], w->full, why);
        w->rv[k] = rv;
        if (rv != 0) {
            w->why[k] = strdup(why); /* NULL: out of memory, said generically below */
        }
    }
}

/* Read every segment's info (readInfo) into w->rv / w->why, on up to WALK_THREADS
 * threads (one with full: whole objects are decoded, and memory stays one segment's). */
static void walkReadAll(struct walk_reads *w)
{
    pthread_t th[WALK_THREADS];
    unsigned nth = 0, want = w->full || w->n < 2 ? 1 : WALK_THREADS;
    while (nth + 1 < want && (size_t)nth + 1 < w->n &&
           pthread_create(&th[nth], NULL, walkReader, w) == 0) {
        nth++;
    }
    walkReader(w); /* the caller's thread reads too: all of them when no thread started */
    for (unsigned i = 0; i < nth; i++) {
        pthread_join(th[i], NULL);
    }
}

int arcsegWalk(struct repo *repo, struct arcseg_info *segs, size_t n, bool full,
               struct arcseg_timeline **tls, size_t *ntl, char *errmsg)
{
    static const unsigned char zeros[BACKUP_DIGEST_SIZE];
    struct arcseg_timeline *v = NULL;
    struct walk_reads w;
    size_t nv = 0;
    int rv = 0;

    *tls = NULL;
    *ntl = 0;
    memset(&w, 0, sizeof w);
    w.repo = repo;
    w.segs = segs;
    w.n = n;
    w.full = full;
    w.rv = calloc(n ? n : 1, sizeof *w.rv);
    w.why = calloc(n ? n : 1, sizeof *w.why);
    if (w.rv == NULL || w.why == NULL) {
        free(w.rv);
        free(w.why);
        errorf(errmsg, "out of memory walking the archive");
        return CAIRN_ENOMEM;
    }
    pthread_mutex_init(&w.mu, NULL);
    walkReadAll(&w);
    pthread_mutex_destroy(&w.mu);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(segs[j].timeline, segs[i].timeline) == 0) {
            j++;
        }
        struct arcseg_timeline *t;
        struct arcseg_timeline *nvp = realloc(v, (nv + 1) * sizeof *v);
        if (nvp == NULL) {
            free(v);
            errorf(errmsg, "out of memory walking the archive");
            rv = CAIRN_ENOMEM;
            goto out;
        }
        v = nvp;
        t = &v[nv++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", segs[i].timeline);
        t->from = i;
        t->nseg = j - i;
        t->start = segs[i].first;
        t->head = t->start - 1;
        for (size_t k = i; k < j; k++) {
            struct arcseg_info *s = &segs[k];
            char why[CAIRN_ERRMSG_SIZE];
            rv = w.rv[k];
            snprintf(why, sizeof why, "%s",
                     w.why[k] != NULL ? w.why[k] : "archive segment: out of memory");
            if (rv != 0 && rv != CAIRN_ECORRUPT && rv != CAIRN_ENOTFOUND) {
                snprintf(errmsg, CAIRN_ERRMSG_SIZE, "%s", why);
                free(v);
                goto out;
            }
            rv = 0;
            if (!s->read) {
                snprintf(t->problem, sizeof t->problem, "%s", why);
            } else if (k == i && memcmp(s->prev, zeros, BACKUP_DIGEST_SIZE) != 0) {
                /* The timeline's first segment names a predecessor: the segments before it
                 * are gone. Its range is still replayable onto a backup at start - 1. */
                t->start = s->first;
                t->head = s->first - 1;
            } else if (k > i && s->first != segs[k - 1].last + 1) {
                snprintf(t->problem, sizeof t->problem,
                         "archive timeline %s: gap or overlap before segment %s: the previous "
                         "segment ends at index %llu, this one starts at %llu",
                         t->name, s->name, (unsigned long long)segs[k - 1].last,
                         (unsigned long long)s->first);
            } else if (k > i && memcmp(s->history, segs[k - 1].history, ARCSEG_HISTORY_SIZE) != 0) {
                char was[2 * ARCSEG_HISTORY_SIZE + 1], is[2 * ARCSEG_HISTORY_SIZE + 1];
                arcsegHistoryHex(segs[k - 1].history, was);
                arcsegHistoryHex(s->history, is);
                snprintf(t->problem, sizeof t->problem,
                         "archive timeline %s: segment %s belongs to history %s, the segments "
                         "before it to history %s: another cluster's (or a restored one's) "
                         "entries, never linked to these",
                         t->name, s->name, is, was);
            } else if (k > i && memcmp(s->prev, segs[k - 1].digest, BACKUP_DIGEST_SIZE) != 0) {
                snprintf(t->problem, sizeof t->problem,
                         "archive timeline %s: segment %s does not link to %s (the digest it "
                         "names differs): replaced, reordered or from another archive",
                         t->name, s->name, segs[k - 1].name);
            }
            if (t->problem[0] != '\0') {
                snprintf(t->bad_object, sizeof t->bad_object, "%s", s->name);
                t->bad_index = t->head + 1;
                break;
            }
            if (k == i) {
                t->start_ms = s->first_ms;
                memcpy(t->history, s->history, ARCSEG_HISTORY_SIZE);
            }
            t->good++;
            t->head = s->last;
            t->head_ms = s->last_ms;
            t->entries += s->count;
        }
        i = j;
    }
    *tls = v;
    *ntl = nv;
out:
    for (size_t k = 0; k < n; k++) {
        free(w.why[k]);
    }
    free(w.why);
    free(w.rv);
    return rv;
}

static const unsigned char *historyOf(const struct arcseg_info *segs,
                                      const struct arcseg_timeline *tl)
{
    static const unsigned char none[ARCSEG_HISTORY_SIZE];
    return tl->nseg > 0 && segs[tl->from].read ? segs[tl->from].history : none;
}

bool arcsegSeveralHistories(const struct arcseg_info *segs, const struct arcseg_timeline *tls,
                            size_t ntl)
{
    for (size_t i = 1; i < ntl; i++) {
        if (memcmp(historyOf(segs, &tls[i]), historyOf(segs, &tls[0]), ARCSEG_HISTORY_SIZE) != 0) {
            return true;
        }
    }
    return false;
}

_Static_assert(ARCSEG_HISTORY_SIZE == BACKUP_HISTORY_SIZE, "a backup's history is a segment's");

/* Whether tl was started on backup b (its index and its digest, which tl's name carries). */
static bool startedOn(const struct arcseg_timeline *tl, const struct backup_info *b)
{
    char name[ARCSEG_TIMELINE_SIZE];
    if (b->raft_index + 1 != tl->start) {
        return false;
    }
    arcsegTimelineName(b->raft_index + 1, b->digest, name);
    return strcmp(name, tl->name) == 0;
}

void arcsegSharedHistories(struct arcseg_timeline *tls, size_t ntl, const struct backup_info *bk,
                           size_t nbk)
{
    for (size_t i = 0; i < ntl; i++) {
        tls[i].history_shared = false;
    }
    for (size_t i = 0; i < ntl; i++) {
        if (libIsZero(tls[i].history, ARCSEG_HISTORY_SIZE)) {
            continue;
        }
        for (size_t j = 0; j < nbk; j++) {
            const struct backup_info *b = &bk[j];
            if (b->error[0] != '\0' || libIsZero(b->history, BACKUP_HISTORY_SIZE) ||
                memcmp(b->history, tls[i].history, ARCSEG_HISTORY_SIZE) == 0 ||
                !startedOn(&tls[i], b)) {
                continue;
            }
            for (size_t k = 0; k < ntl; k++) {
                if (memcmp(tls[k].history, b->history, ARCSEG_HISTORY_SIZE) == 0) {
                    tls[k].history_shared = true;
                }
            }
        }
    }
}

bool arcsegBaseFits(const struct arcseg_timeline *tl, bool several, const struct backup_info *b)
{
    if (b->error[0] != '\0' || b->raft_index + 1 < tl->start || b->raft_index > tl->head) {
        return false;
    }
    if (startedOn(tl, b)) {
        return true;
    }
    if (b->raft_index == 0 && libIsZero(b->history, BACKUP_HISTORY_SIZE)) {
        /* Index 0 and no history: what a backup of a file that is the state of no Raft
         * log records (`cairn backup create --db` of a plain SQLite file, and of any file
         * before the command read a node's index), whatever it holds. As a base it would
         * take entries from 1 onto data of any later index. */
        return false;
    }
    if (!tl->history_shared && !libIsZero(tl->history, ARCSEG_HISTORY_SIZE) &&
        !libIsZero(b->history, BACKUP_HISTORY_SIZE)) {
        /* Both say which Raft log their indexes count in. */
        return memcmp(b->history, tl->history, ARCSEG_HISTORY_SIZE) == 0;
    }
    return !several;
}
