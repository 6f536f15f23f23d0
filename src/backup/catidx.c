/* The catalog index's encoding (catidx.h; the byte layout is docs/FORMAT.md's "Catalog
 * index"): a small header, the entries sorted by object name in one zstd frame, and an
 * XXH3-64 of everything. A reader checks the whole object before using any of it, so
 * that a damaged index is ignored as a whole (repo.c then reads every object, and
 * writes a new index).
 *
 * Any thread; no shared state. */
#include "catidx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "buf.h"
#include "cbk.h"
#include "error.h"

#define MAGIC "CAIRNIDX"
/* Version 2 adds a backup's history and codec; a version 1 index is refused (as
 * damaged: every object read again, a version 2 index written), never read without
 * them. */
#define VERSION 2u
#define HEAD_SIZE 32 /* magic, version, count, body length, frame length */
#define SUM_SIZE 8
#define LEVEL 3

_Static_assert(BACKUP_HISTORY_SIZE == CBK_HISTORY_SIZE, "a backup_info holds a header's history");

/* A decoded entry: strings point into the body, NUL-terminated there. */
struct ent {
    const char *name;
    const char *version;
    uint64_t size;
    size_t off; /* of the kind's own fields in the body */
    int kind;
};

struct catidx {
    unsigned char *body;
    size_t len; /* of body */
    size_t n;
    struct ent *e;
};

/* ---- encoding ---- */

static void putStr8(struct buf *b, const char *s, size_t n)
{
    bufPutU8(b, (uint8_t)n);
    bufPut(b, s, n);
    bufPutU8(b, 0);
}

static void putStr16(struct buf *b, const char *s, size_t n)
{
    bufPutU16(b, (uint16_t)n);
    bufPut(b, s, n);
    bufPutU8(b, 0);
}

static int byName(const void *a, const void *b)
{
    const struct catidx_put *x = *(const struct catidx_put *const *)a;
    const struct catidx_put *y = *(const struct catidx_put *const *)b;
    return strcmp(x->name, y->name);
}

/* strnlen of a fixed-size field, which a backup_info keeps NUL-terminated. */
static size_t fieldLen(const char *s, size_t size)
{
    return strnlen(s, size - 1);
}

static void putEntry(struct buf *b, const struct catidx_put *p)
{
    const struct backup_info *in = p->info;
    bufPutU8(b, (uint8_t)p->kind);
    putStr16(b, p->name, strlen(p->name));
    putStr8(b, p->version, strlen(p->version));
    bufPutU64(b, p->size);
    switch (p->kind) {
    case CATIDX_BACKUP:
        putStr8(b, in->id, fieldLen(in->id, sizeof in->id));
        bufPutU8(b, (uint8_t)in->type);
        putStr8(b, in->parent_id, fieldLen(in->parent_id, sizeof in->parent_id));
        bufPut(b, in->parent_digest, BACKUP_DIGEST_SIZE);
        bufPut(b, in->digest, BACKUP_DIGEST_SIZE);
        putStr16(b, in->source, fieldLen(in->source, sizeof in->source));
        bufPutU64(b, (uint64_t)in->created_ms);
        bufPutU64(b, in->raft_index);
        bufPutU64(b, in->raft_term);
        bufPutU32(b, in->page_size);
        bufPutU64(b, in->page_count);
        bufPutU64(b, in->pages);
        bufPutU64(b, (uint64_t)in->duration_ms);
        bufPut(b, in->history, BACKUP_HISTORY_SIZE);
        bufPutU8(b, (uint8_t)in->codec);
        break;
    case CATIDX_DAMAGED:
        putStr16(b, in->error, fieldLen(in->error, sizeof in->error));
        break;
    default: /* CATIDX_SIDECAR */
        bufPutU8(b, (uint8_t)in->verified);
        bufPutU64(b, (uint64_t)in->verified_ms);
        bufPut(b, in->digest, BACKUP_DIGEST_SIZE);
        break;
    }
}

int catidxEncode(const struct catidx_put *v, size_t n, unsigned char **out, size_t *len,
                 char *errmsg)
{
    const struct catidx_put **sorted = NULL;
    unsigned char *obj = NULL;
    struct buf body;
    size_t bound, frame, total;
    int rv = 0;

    *out = NULL;
    *len = 0;
    bufInit(&body);
    if (n > CATIDX_MAX_ENTRIES) {
        errorf(errmsg, "catalog index: %zu entries, more than %u", n, CATIDX_MAX_ENTRIES);
        return CAIRN_EINVAL;
    }
    if (n > 0 && (sorted = malloc(n * sizeof *sorted)) == NULL) {
        goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        size_t nl = v[i].name != NULL ? strlen(v[i].name) : 0;
        size_t vl = v[i].version != NULL ? strlen(v[i].version) : 0;
        if (nl == 0 || nl > CATIDX_MAX_NAME || vl == 0 || vl > CATIDX_MAX_VERSION ||
            v[i].info == NULL || v[i].kind < CATIDX_BACKUP || v[i].kind > CATIDX_SIDECAR) {
            errorf(errmsg, "catalog index: entry %zu (%s) cannot be written", i,
                   v[i].name != NULL ? v[i].name : "no name");
            rv = CAIRN_EINVAL;
            goto out;
        }
        sorted[i] = &v[i];
    }
    if (n > 1) {
        qsort(sorted, n, sizeof *sorted, byName);
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            errorf(errmsg, "catalog index: %s twice", sorted[i]->name);
            rv = CAIRN_EINVAL;
            goto out;
        }
        putEntry(&body, sorted[i]);
    }
    if (body.oom) {
        goto oom;
    }
    if (body.len > CATIDX_MAX_BODY) {
        errorf(errmsg, "catalog index: %zu bytes of entries, more than %zu", body.len,
               CATIDX_MAX_BODY);
        rv = CAIRN_EINVAL;
        goto out;
    }
    bound = ZSTD_compressBound(body.len);
    if ((obj = malloc(HEAD_SIZE + bound + SUM_SIZE)) == NULL) {
        goto oom;
    }
    frame = ZSTD_compress(obj + HEAD_SIZE, bound, body.p != NULL ? body.p : "", body.len, LEVEL);
    if (ZSTD_isError(frame)) {
        errorf(errmsg, "catalog index: zstd: %s", ZSTD_getErrorName(frame));
        rv = CAIRN_EIO;
        goto out;
    }
    memcpy(obj, MAGIC, 8);
    {
        struct buf h;
        bufInit(&h);
        bufPutU32(&h, VERSION);
        bufPutU32(&h, (uint32_t)n);
        bufPutU64(&h, body.len);
        bufPutU64(&h, frame);
        if (h.oom) {
            bufFree(&h);
            goto oom;
        }
        memcpy(obj + 8, h.p, HEAD_SIZE - 8);
        bufFree(&h);
    }
    total = HEAD_SIZE + frame;
    {
        uint64_t sum = XXH3_64bits(obj, total);
        for (int i = 0; i < 8; i++) {
            obj[total + i] = (unsigned char)(sum >> (8 * i));
        }
    }
    *out = obj;
    *len = total + SUM_SIZE;
    obj = NULL;
    goto out;
oom:
    errorf(errmsg, "out of memory encoding the catalog index");
    rv = CAIRN_ENOMEM;
out:
    free(obj);
    free(sorted);
    bufFree(&body);
    return rv;
}

/* ---- decoding ---- */

/* A cursor over the body that never reads past its end. */
struct cur {
    const unsigned char *p;
    size_t len, off;
    bool bad;
};

static const unsigned char *take(struct cur *c, size_t n)
{
    const unsigned char *at;
    if (c->bad || n > c->len - c->off) {
        c->bad = true;
        return NULL;
    }
    at = c->p + c->off;
    c->off += n;
    return at;
}

static uint64_t takeU(struct cur *c, size_t n)
{
    const unsigned char *p = take(c, n);
    uint64_t v = 0;
    if (p == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* A string of at most max bytes (a length of lenBytes bytes, the bytes, a NUL), with
 * no NUL inside: its start, or NULL (c->bad set). */
static const char *takeStr(struct cur *c, size_t lenBytes, size_t max)
{
    size_t n = (size_t)takeU(c, lenBytes);
    const unsigned char *s;
    if (c->bad || n > max || (s = take(c, n + 1)) == NULL || s[n] != 0 || memchr(s, 0, n) != NULL) {
        c->bad = true;
        return NULL;
    }
    return (const char *)s;
}

/* Check one entry's own fields (the kind's), leaving the cursor after them. */
static void checkFields(struct cur *c, int kind)
{
    const char *s;
    uint64_t v;
    switch (kind) {
    case CATIDX_BACKUP:
        s = takeStr(c, 1, BACKUP_ID_SIZE - 1);
        if (s != NULL && !cbkIdValid(s)) {
            c->bad = true;
        }
        v = takeU(c, 1);
        if (v < BACKUP_FULL || v > BACKUP_DIFFERENTIAL) {
            c->bad = true;
        }
        s = takeStr(c, 1, BACKUP_ID_SIZE - 1);
        if (s != NULL && s[0] != '\0' && !cbkIdValid(s)) {
            c->bad = true;
        }
        take(c, 2 * BACKUP_DIGEST_SIZE);
        takeStr(c, 2, BACKUP_SOURCE_SIZE - 1);
        take(c, 3 * 8 + 4 + 3 * 8 + BACKUP_HISTORY_SIZE);
        v = takeU(c, 1);
        if (v != CBK_CODEC_ZSTD && v != CBK_CODEC_LZ4) {
            c->bad = true;
        }
        break;
    case CATIDX_DAMAGED:
        takeStr(c, 2, sizeof((struct backup_info *)0)->error - 1);
        break;
    case CATIDX_SIDECAR:
        v = takeU(c, 1);
        if (v > BACKUP_VERIFY_FAILED) {
            c->bad = true;
        }
        take(c, 8 + BACKUP_DIGEST_SIZE);
        break;
    default:
        c->bad = true;
    }
}

int catidxDecode(const void *p, size_t len, struct catidx **out, char *errmsg)
{
    const unsigned char *in = p;
    struct catidx *idx = NULL;
    uint64_t sum, body_len, frame_len, count;
    unsigned long long content;
    struct cur c;
    size_t got, i;

    *out = NULL;
    if (len < HEAD_SIZE + SUM_SIZE || memcmp(in, MAGIC, 8) != 0) {
        errorf(errmsg, "catalog index: not an index (%zu bytes, no magic)", len);
        return CAIRN_ECORRUPT;
    }
    sum = XXH3_64bits(in, len - SUM_SIZE);
    if (getU64(in + len - SUM_SIZE) != sum) {
        errorf(errmsg, "catalog index: checksum mismatch");
        return CAIRN_ECORRUPT;
    }
    if (getU32(in + 8) != VERSION) {
        errorf(errmsg, "catalog index: version %u, not %u", getU32(in + 8), VERSION);
        return CAIRN_ECORRUPT;
    }
    count = getU32(in + 12);
    body_len = getU64(in + 16);
    frame_len = getU64(in + 24);
    if (count > CATIDX_MAX_ENTRIES || body_len > CATIDX_MAX_BODY ||
        frame_len != len - HEAD_SIZE - SUM_SIZE) {
        errorf(errmsg, "catalog index: %llu entries, %llu bytes, a frame of %llu bytes in %zu",
               (unsigned long long)count, (unsigned long long)body_len,
               (unsigned long long)frame_len, len);
        return CAIRN_ECORRUPT;
    }
    content = ZSTD_getFrameContentSize(in + HEAD_SIZE, (size_t)frame_len);
    if (content != body_len ||
        ZSTD_findFrameCompressedSize(in + HEAD_SIZE, (size_t)frame_len) != (size_t)frame_len) {
        errorf(errmsg, "catalog index: the frame is not one zstd frame of %llu bytes",
               (unsigned long long)body_len);
        return CAIRN_ECORRUPT;
    }
    if ((idx = calloc(1, sizeof *idx)) == NULL ||
        (idx->body = malloc(body_len > 0 ? (size_t)body_len : 1)) == NULL ||
        (count > 0 && (idx->e = malloc((size_t)count * sizeof *idx->e)) == NULL)) {
        catidxFree(idx);
        errorf(errmsg, "out of memory decoding the catalog index");
        return CAIRN_ENOMEM;
    }
    got = ZSTD_decompress(idx->body, (size_t)body_len, in + HEAD_SIZE, (size_t)frame_len);
    if (ZSTD_isError(got) || got != body_len) {
        catidxFree(idx);
        errorf(errmsg, "catalog index: the frame does not inflate to %llu bytes",
               (unsigned long long)body_len);
        return CAIRN_ECORRUPT;
    }
    idx->len = (size_t)body_len;
    c = (struct cur){idx->body, idx->len, 0, false};
    for (i = 0; i < count; i++) {
        struct ent *e = &idx->e[i];
        e->kind = (int)takeU(&c, 1);
        e->name = takeStr(&c, 2, CATIDX_MAX_NAME);
        e->version = takeStr(&c, 1, CATIDX_MAX_VERSION);
        e->size = takeU(&c, 8);
        e->off = c.off;
        checkFields(&c, e->kind);
        if (!c.bad && (e->name[0] == '\0' || e->version[0] == '\0' ||
                       (i > 0 && strcmp(idx->e[i - 1].name, e->name) >= 0))) {
            c.bad = true;
        }
        if (c.bad) {
            break;
        }
    }
    idx->n = i;
    if (c.bad || c.off != c.len) {
        if (i < count) {
            errorf(errmsg, "catalog index: entry %zu (from 0) is malformed or out of order", i);
        } else {
            errorf(errmsg, "catalog index: %zu bytes after its %zu entries", c.len - c.off, i);
        }
        catidxFree(idx);
        return CAIRN_ECORRUPT;
    }
    *out = idx;
    return 0;
}

void catidxFree(struct catidx *idx)
{
    if (idx != NULL) {
        free(idx->body);
        free(idx->e);
        free(idx);
    }
}

size_t catidxCount(const struct catidx *idx)
{
    return idx != NULL ? idx->n : 0;
}

int catidxFind(const struct catidx *idx, const char *name, const char *version, uint64_t size,
               size_t *at)
{
    size_t lo = 0, hi = idx != NULL ? idx->n : 0;
    if (version == NULL) {
        return 0;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(idx->e[mid].name, name);
        if (c == 0) {
            const struct ent *e = &idx->e[mid];
            if (e->size != size || strcmp(e->version, version) != 0) {
                return 0;
            }
            *at = mid;
            return e->kind;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

static void takeInto(struct cur *c, void *out, size_t n)
{
    const unsigned char *p = take(c, n);
    if (p != NULL) {
        memcpy(out, p, n);
    } else {
        memset(out, 0, n);
    }
}

/* Copy a checked string of the body (length lenBytes, bytes, NUL) into a field. */
static void fillStr(struct cur *c, size_t lenBytes, char *out, size_t size)
{
    size_t n = (size_t)takeU(c, lenBytes);
    const unsigned char *s = take(c, n + 1);
    snprintf(out, size, "%.*s", (int)n, s != NULL ? (const char *)s : "");
}

void catidxFill(const struct catidx *idx, size_t at, struct backup_info *out)
{
    const struct ent *e = &idx->e[at];
    struct cur c = {idx->body, idx->len, e->off, false}; /* checked when decoded */
    switch (e->kind) {
    case CATIDX_BACKUP:
        fillStr(&c, 1, out->id, sizeof out->id);
        out->type = (int)takeU(&c, 1);
        fillStr(&c, 1, out->parent_id, sizeof out->parent_id);
        takeInto(&c, out->parent_digest, BACKUP_DIGEST_SIZE);
        takeInto(&c, out->digest, BACKUP_DIGEST_SIZE);
        fillStr(&c, 2, out->source, sizeof out->source);
        out->created_ms = (int64_t)takeU(&c, 8);
        out->raft_index = takeU(&c, 8);
        out->raft_term = takeU(&c, 8);
        out->page_size = (uint32_t)takeU(&c, 4);
        out->page_count = takeU(&c, 8);
        out->pages = takeU(&c, 8);
        out->duration_ms = (int64_t)takeU(&c, 8);
        takeInto(&c, out->history, BACKUP_HISTORY_SIZE);
        out->codec = (int)takeU(&c, 1);
        break;
    case CATIDX_DAMAGED:
        fillStr(&c, 2, out->error, sizeof out->error);
        break;
    default:
        out->verified = (int)takeU(&c, 1);
        out->verified_ms = (int64_t)takeU(&c, 8);
        takeInto(&c, out->digest, BACKUP_DIGEST_SIZE);
        break;
    }
}
