/* libFuzzer target: the catalog index decoder (catidxDecode, src/backup/catidx.c), which
 * reads the object `catalog.idx` of a repository that may be damaged or written by
 * someone else, and what a decoded index answers: catidxCount, catidxFind, catidxFill
 * (docs/FORMAT.md, "Catalog index").
 *
 * An index ends with an XXH3-64 of every byte before it and its body is a zstd frame,
 * so almost every mutation would stop at the checksum, and the rest in the frame. Each
 * input is decoded as it is; again with its frame length and checksum made right (so
 * that mutations of the header reach its checks); and again with the header made to
 * say what the frame holds (body length, number of entries). An input that starts
 * with `cairnidx` (the magic in lowercase: seeds written by fuzz/gen_corpus.c) is the
 * 32-byte header and the body uncompressed: the target compresses it, repairs the
 * header and checksum, and decodes that, so that the mutator works on the entries.
 *
 * The target reads the body itself too (idxWalk, after the table of FORMAT.md), and
 * checks:
 *   - a refusal is CAIRN_ECORRUPT (or CAIRN_ENOMEM) with a message, and no index;
 *   - an accepted index is version 2 (a version 1 index, without a backup's history
 *     and codec, is refused whole); the body is the number of entries the header says, each
 *     well-formed (kind, string lengths and NULs, the kind's fields in range), names
 *     strictly ascending, and nothing after them; catidxCount says as many;
 *   - catidxFind of each entry's name, version and size finds that entry and its kind,
 *     and finds nothing for another size or version; catidxFill gives the fields the
 *     body holds for the kind, and leaves the others as they were;
 *   - encoded again (catidxEncode of what Find and Fill gave) it is the very same body,
 *     and decodes;
 *   - an index repaired around a body of well-formed entries is accepted (no false
 *     refusal).
 * Any thread. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "backup.h"
#include "buf.h"
#include "cairn.h"
#include "catidx.h"
#include "cbk.h"
#include "error.h"
#include "fuzz.h"

#define IDX_MAGIC "CAIRNIDX"
#define IDX_HEAD 32
#define IDX_SUM 8
#define IDX_VERSION 2 /* the one a decoder accepts (version 1: refused, rebuilt) */
/* The most the repairs and checks inflate: larger bodies are only decoded. */
#define IDX_FIX_MAX_BODY (1u << 20)

static void idxPutU32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void idxPutU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

/* One entry as the target reads it. Strings point into the body (NUL-terminated
 * there when the entry is well-formed). */
struct idx_ent {
    int kind;
    const char *name, *version;
    uint64_t size;
    struct backup_info info; /* the kind's fields */
    bool ok;                 /* well-formed */
};

struct idx_rd {
    const unsigned char *p;
    size_t len, off;
    bool short_; /* ran past the end */
};

static const unsigned char *idxTake(struct idx_rd *r, size_t n)
{
    const unsigned char *at;
    if (r->short_ || n > r->len - r->off) {
        r->short_ = true;
        return NULL;
    }
    at = r->p + r->off;
    r->off += n;
    return at;
}

static uint64_t idxU(struct idx_rd *r, size_t n)
{
    const unsigned char *p = idxTake(r, n);
    uint64_t v = 0;
    for (size_t i = 0; p != NULL && i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* A string (length of lb bytes, bytes, NUL) into out[0..size) when it fits; *ok false
 * when it is longer than max, holds a NUL or has none after it. */
static const char *idxStr(struct idx_rd *r, size_t lb, size_t max, char *out, size_t size, bool *ok)
{
    size_t n = (size_t)idxU(r, lb);
    const unsigned char *s = idxTake(r, n + 1);
    if (s == NULL) {
        *ok = false;
        return NULL;
    }
    if (n > max || s[n] != 0 || memchr(s, 0, n) != NULL) {
        *ok = false;
    }
    if (out != NULL && n < size) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return (const char *)s;
}

/* A valid backup id, after FORMAT.md: 1 to 31 of [0-9A-Za-z._-], not starting with a
 * dot. */
static bool idxIdOk(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= BACKUP_ID_SIZE || s[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

/* Read the entries of body[0..len) into v (up to max of them): the number read whole;
 * *all_ok when every one is well-formed, in strictly ascending order, and they end
 * where the body ends. An entry of an unknown kind stops the walk. */
static size_t idxWalk(const unsigned char *body, size_t len, struct idx_ent *v, size_t max,
                      bool *all_ok)
{
    struct idx_rd r = {body, len, 0, false};
    size_t n = 0;
    *all_ok = true;
    while (r.off < len && n < max) {
        struct idx_ent *e = &v[n];
        struct backup_info *in = &e->info;
        memset(e, 0, sizeof *e);
        e->ok = true;
        e->kind = (int)idxU(&r, 1);
        e->name = idxStr(&r, 2, CATIDX_MAX_NAME, NULL, 0, &e->ok);
        e->version = idxStr(&r, 1, CATIDX_MAX_VERSION, NULL, 0, &e->ok);
        e->size = idxU(&r, 8);
        if (r.short_) {
            break;
        }
        if (e->ok && (e->name[0] == '\0' || e->version[0] == '\0' ||
                      (n > 0 && (!v[n - 1].ok || strcmp(v[n - 1].name, e->name) >= 0)))) {
            e->ok = false;
        }
        switch (e->kind) {
        case CATIDX_BACKUP:
            idxStr(&r, 1, BACKUP_ID_SIZE - 1, in->id, sizeof in->id, &e->ok);
            in->type = (int)idxU(&r, 1);
            idxStr(&r, 1, BACKUP_ID_SIZE - 1, in->parent_id, sizeof in->parent_id, &e->ok);
            if (idxTake(&r, 32) != NULL) {
                memcpy(in->parent_digest, r.p + r.off - 32, BACKUP_DIGEST_SIZE);
                memcpy(in->digest, r.p + r.off - 16, BACKUP_DIGEST_SIZE);
            }
            idxStr(&r, 2, BACKUP_SOURCE_SIZE - 1, in->source, sizeof in->source, &e->ok);
            in->created_ms = (int64_t)idxU(&r, 8);
            in->raft_index = idxU(&r, 8);
            in->raft_term = idxU(&r, 8);
            in->page_size = (uint32_t)idxU(&r, 4);
            in->page_count = idxU(&r, 8);
            in->pages = idxU(&r, 8);
            in->duration_ms = (int64_t)idxU(&r, 8);
            if (idxTake(&r, BACKUP_HISTORY_SIZE) != NULL) {
                memcpy(in->history, r.p + r.off - BACKUP_HISTORY_SIZE, BACKUP_HISTORY_SIZE);
            }
            in->codec = (int)idxU(&r, 1);
            if (e->ok &&
                (!idxIdOk(in->id) || in->type < BACKUP_FULL || in->type > BACKUP_DIFFERENTIAL ||
                 (in->parent_id[0] != '\0' && !idxIdOk(in->parent_id)) ||
                 (in->codec != CBK_CODEC_ZSTD && in->codec != CBK_CODEC_LZ4))) {
                e->ok = false;
            }
            break;
        case CATIDX_DAMAGED:
            idxStr(&r, 2, sizeof in->error - 1, in->error, sizeof in->error, &e->ok);
            break;
        case CATIDX_SIDECAR:
            in->verified = (int)idxU(&r, 1);
            in->verified_ms = (int64_t)idxU(&r, 8);
            if (idxTake(&r, BACKUP_DIGEST_SIZE) != NULL) {
                memcpy(in->digest, r.p + r.off - BACKUP_DIGEST_SIZE, BACKUP_DIGEST_SIZE);
            }
            if (in->verified > BACKUP_VERIFY_FAILED) {
                e->ok = false;
            }
            break;
        default:
            *all_ok = false;
            return n;
        }
        if (r.short_) {
            break;
        }
        if (!e->ok) {
            *all_ok = false;
        }
        n++;
    }
    if (r.short_ || r.off != len) {
        *all_ok = false;
    }
    return n;
}

/* The body of the index p[0..n), inflated (malloc'd, *len bytes), or NULL when the
 * frame does not inflate or is larger than IDX_FIX_MAX_BODY. */
static unsigned char *idxInflate(const unsigned char *p, size_t n, size_t *len)
{
    const unsigned char *frame = p + IDX_HEAD;
    size_t flen = n - IDX_HEAD - IDX_SUM;
    unsigned long long content = ZSTD_getFrameContentSize(frame, flen);
    unsigned char *body;
    size_t got;
    if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN ||
        content > IDX_FIX_MAX_BODY || ZSTD_findFrameCompressedSize(frame, flen) != flen) {
        return NULL;
    }
    body = malloc(content > 0 ? (size_t)content : 1);
    FUZZ_CHECK(body != NULL);
    got = ZSTD_decompress(body, (size_t)content, frame, flen);
    if (ZSTD_isError(got) || got != content) {
        free(body);
        return NULL;
    }
    *len = (size_t)content;
    return body;
}

/* Make the frame length and checksum of the index p[0..n) right (and, with full, the
 * body length and count what its frame holds, when it inflates). *well_formed: with
 * full, whether the index is now one a decoder must accept (its magic and version
 * aside). */
static void idxFix(unsigned char *p, size_t n, bool full, bool *well_formed)
{
    *well_formed = false;
    if (n < IDX_HEAD + IDX_SUM) {
        return;
    }
    idxPutU64(p + 24, n - IDX_HEAD - IDX_SUM);
    if (full) {
        size_t len;
        unsigned char *body = idxInflate(p, n, &len);
        if (body != NULL) {
            size_t max = len / 16 + 1; /* an entry takes 17 bytes at least */
            struct idx_ent *v = malloc(max * sizeof *v);
            bool all_ok;
            size_t k;
            FUZZ_CHECK(v != NULL);
            k = idxWalk(body, len, v, max, &all_ok);
            idxPutU32(p + 12, (uint32_t)k);
            idxPutU64(p + 16, len);
            *well_formed = all_ok;
            free(v);
            free(body);
        }
    }
    idxPutU64(p + n - IDX_SUM, XXH3_64bits(p, n - IDX_SUM));
}

/* What an accepted index p[0..n) answers, against the target's own reading. */
static void idxCheckDecoded(const struct catidx *idx, const unsigned char *p, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    size_t len, count = catidxCount(idx), k;
    unsigned char *body = idxInflate(p, n, &len);
    struct idx_ent *v;
    struct catidx_put *put;
    struct backup_info *filled;
    unsigned char *obj = NULL;
    size_t olen = 0;
    bool all_ok;
    int rv;

    FUZZ_CHECK(count == getU32(p + 12));
    if (body == NULL) {
        /* A body larger than the target inflates: what the decoder said is all. */
        FUZZ_CHECK(getU64(p + 16) > IDX_FIX_MAX_BODY);
        return;
    }
    FUZZ_CHECK(len == getU64(p + 16));
    v = malloc((count + 1) * sizeof *v);
    put = malloc((count + 1) * sizeof *put);
    filled = malloc((count + 1) * sizeof *filled);
    FUZZ_CHECK(v != NULL && put != NULL && filled != NULL);
    k = idxWalk(body, len, v, count + 1, &all_ok);
    FUZZ_CHECK(k == count && all_ok);

    for (size_t i = 0; i < count; i++) {
        const struct idx_ent *e = &v[i];
        struct backup_info *f = &filled[i];
        struct backup_info before;
        size_t at = (size_t)-1;
        FUZZ_CHECK(catidxFind(idx, e->name, e->version, e->size, &at) == e->kind);
        FUZZ_CHECK(at == i);
        FUZZ_CHECK(catidxFind(idx, e->name, e->version, e->size + 1, &at) == 0);
        FUZZ_CHECK(catidxFind(idx, e->name, NULL, e->size, &at) == 0);
        FUZZ_CHECK(catidxFind(idx, e->name, "", e->size, &at) == 0);

        /* Fill over a pattern: the kind's fields are the body's, the rest untouched. */
        memset(f, 0x5a, sizeof *f);
        memcpy(&before, f, sizeof before);
        catidxFill(idx, i, f);
        switch (e->kind) {
        case CATIDX_BACKUP:
            FUZZ_CHECK(strcmp(f->id, e->info.id) == 0);
            FUZZ_CHECK(f->type == e->info.type);
            FUZZ_CHECK(strcmp(f->parent_id, e->info.parent_id) == 0);
            FUZZ_CHECK(memcmp(f->parent_digest, e->info.parent_digest, BACKUP_DIGEST_SIZE) == 0);
            FUZZ_CHECK(memcmp(f->digest, e->info.digest, BACKUP_DIGEST_SIZE) == 0);
            FUZZ_CHECK(strcmp(f->source, e->info.source) == 0);
            FUZZ_CHECK(f->created_ms == e->info.created_ms);
            FUZZ_CHECK(f->raft_index == e->info.raft_index && f->raft_term == e->info.raft_term);
            FUZZ_CHECK(f->page_size == e->info.page_size);
            FUZZ_CHECK(f->page_count == e->info.page_count && f->pages == e->info.pages);
            FUZZ_CHECK(f->duration_ms == e->info.duration_ms);
            FUZZ_CHECK(memcmp(f->history, e->info.history, BACKUP_HISTORY_SIZE) == 0);
            FUZZ_CHECK(f->codec == e->info.codec);
            FUZZ_CHECK(f->verified == before.verified && f->verified_ms == before.verified_ms);
            FUZZ_CHECK(memcmp(f->error, before.error, sizeof f->error) == 0);
            break;
        case CATIDX_DAMAGED:
            FUZZ_CHECK(strcmp(f->error, e->info.error) == 0);
            FUZZ_CHECK(memcmp(f->id, before.id, sizeof f->id) == 0);
            FUZZ_CHECK(memcmp(f->digest, before.digest, BACKUP_DIGEST_SIZE) == 0);
            FUZZ_CHECK(f->verified == before.verified);
            FUZZ_CHECK(memcmp(f->history, before.history, BACKUP_HISTORY_SIZE) == 0);
            break;
        default:
            FUZZ_CHECK(e->kind == CATIDX_SIDECAR);
            FUZZ_CHECK(f->verified == e->info.verified);
            FUZZ_CHECK(f->verified_ms == e->info.verified_ms);
            FUZZ_CHECK(memcmp(f->digest, e->info.digest, BACKUP_DIGEST_SIZE) == 0);
            FUZZ_CHECK(memcmp(f->id, before.id, sizeof f->id) == 0);
            FUZZ_CHECK(memcmp(f->error, before.error, sizeof f->error) == 0);
            FUZZ_CHECK(f->codec == before.codec);
            break;
        }
        FUZZ_CHECK(memcmp(f->path, before.path, sizeof f->path) == 0);
        FUZZ_CHECK(f->size_bytes == before.size_bytes);
        put[i] = (struct catidx_put){e->kind, e->name, e->version, e->size, f};
    }

    /* Encoded again: the same body, byte for byte, and an index that decodes. */
    rv = catidxEncode(put, count, &obj, &olen, errmsg);
    if (rv != CAIRN_ENOMEM) {
        struct catidx *again = NULL;
        unsigned char *body2;
        size_t len2 = 0;
        FUZZ_CHECK(rv == 0);
        FUZZ_CHECK(catidxDecode(obj, olen, &again, errmsg) == 0);
        FUZZ_CHECK(catidxCount(again) == count);
        body2 = idxInflate(obj, olen, &len2);
        FUZZ_CHECK(body2 != NULL && len2 == len && memcmp(body2, body, len) == 0);
        free(body2);
        catidxFree(again);
        free(obj);
    }
    free(filled);
    free(put);
    free(v);
    free(body);
}

/* Decode the index p[0..n) with every check; returns catidxDecode's code. */
static int idxOne(const unsigned char *p, size_t n, bool must_decode)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct catidx *idx = (struct catidx *)&errmsg; /* anything but NULL */
    int rv = catidxDecode(p, n, &idx, errmsg);
    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_ECORRUPT || rv == CAIRN_ENOMEM);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(idx == NULL);
        FUZZ_CHECK(!must_decode || rv == CAIRN_ENOMEM);
        return rv;
    }
    FUZZ_CHECK(idx != NULL);
    FUZZ_CHECK(n >= IDX_HEAD + IDX_SUM && memcmp(p, IDX_MAGIC, 8) == 0 &&
               getU32(p + 8) == IDX_VERSION);
    FUZZ_CHECK(getU64(p + n - IDX_SUM) == XXH3_64bits(p, n - IDX_SUM));
    idxCheckDecoded(idx, p, n);
    catidxFree(idx);
    return 0;
}

/* A `cairnidx` input (header, uncompressed body) as the index it stands for. *out
 * malloc'd. */
static void idxWrap(const uint8_t *data, size_t size, unsigned char **out, size_t *len)
{
    size_t bound = ZSTD_compressBound(size - IDX_HEAD), clen;
    unsigned char *obj = malloc(IDX_HEAD + bound + IDX_SUM);
    FUZZ_CHECK(obj != NULL);
    memcpy(obj, data, IDX_HEAD);
    memcpy(obj, IDX_MAGIC, 8);
    clen = ZSTD_compress(obj + IDX_HEAD, bound, data + IDX_HEAD, size - IDX_HEAD, 3);
    FUZZ_CHECK(!ZSTD_isError(clen));
    *out = obj;
    *len = IDX_HEAD + clen + IDX_SUM;
}

/* The input as it is, with its checksum made right, with its header made right; a
 * `cairnidx` input wrapped. Returns the code of the last decode. */
static int fuzzCatidx(const uint8_t *data, size_t size)
{
    unsigned char *copy, *fixed;
    bool well_formed;
    int rv = idxOne(data, size, false);

    /* Exact-size heap copies, so that ASan sees any read past their end. */
    copy = malloc(size ? size : 1);
    fixed = malloc(size ? size : 1);
    FUZZ_CHECK(copy != NULL && fixed != NULL);
    memcpy(copy, data, size);
    idxFix(copy, size, false, &well_formed);
    if (memcmp(copy, data, size) != 0) {
        rv = idxOne(copy, size, false);
    }
    memcpy(fixed, copy, size);
    idxFix(fixed, size, true, &well_formed);
    well_formed =
        well_formed && memcmp(fixed, IDX_MAGIC, 8) == 0 && getU32(fixed + 8) == IDX_VERSION;
    if (memcmp(fixed, copy, size) != 0 || well_formed) {
        rv = idxOne(fixed, size, well_formed);
    }
    free(fixed);
    free(copy);

    if (size >= IDX_HEAD && memcmp(data, "cairnidx", 8) == 0) {
        unsigned char *obj;
        size_t len;
        idxWrap(data, size, &obj, &len);
        idxFix(obj, len, true, &well_formed);
        well_formed = well_formed && getU32(obj + 8) == IDX_VERSION;
        rv = idxOne(obj, len, well_formed);
        free(obj);
    }
    return rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzCatidx(data, size);
    return 0;
}
#endif
