/* Command encoding and decoding (see command.h and docs/FORMAT.md). Any thread.
 *
 * Version 4, little-endian:
 *   header  magic "CCMD" | version u8 | kind u8 | flags u16 | time_ms i64 | seed u64 |
 *           nstmts u32 | nparams u32 (all statements together) |
 *           max_steps u64 | max_length u32 | max_temp_mib u32 (0: the default; builds
 *           before it wrote 0 and refuse anything else) |
 *           max_growth_mib u32 (flag COMMAND_GROWTH set, never 0) | reserved u32 (0)
 *   sqls    nsql varint, then each distinct SQL text once: len varint | bytes
 *   stmts   sql varint (index into sqls) | nparams varint | params
 *   param   type u8 | name_len varint | name | value
 *           (INTEGER: i64, FLOAT: IEEE-754 bits u64, TEXT/BLOB: len varint + bytes, NULL: -)
 *   pad     0-7 zero bytes, so that the whole command is a multiple of 8 bytes: libraft's
 *           segment loader reads entry payloads as if they were padded to 8 bytes
 *   trailer XXH3-64 of every byte before it
 * Bulk requests repeat one statement with new parameters thousands of times; storing
 * each SQL text once keeps the log entry (and libraft's byte-at-a-time CRC over it)
 * to the parameters. Version 3 is version 4 without its last two header fields: written
 * when the growth bound is none (no flag) or COMMAND_GROWTH_V3_MIB (the flag alone), so
 * that a leader with the default bound writes what the builds before version 4 read
 * (they apply such an entry without the bound, which changes nothing unless a write
 * passes it). Version 2 (the same without the limits, which are then
 * policy.h's defaults) and version 1 (every SQL text inline, fixed-width lengths) are
 * still decoded, so that logs written by earlier builds replay.
 *
 * A command whose SQL table and statements take COMMAND_ZSTD_MIN bytes or more stores
 * them as one zstd frame (flag COMMAND_ZSTD in the header) when that saves at least an
 * eighth: every node's libraft CRCs, sends, receives and writes the entry, so a bulk
 * request's bytes cost CPU four times over; compressing costs it once, on the leader. */
#include "command.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "cairn.h"
#include "error.h"

/* zstd's contexts are worth keeping (a level-1 one is about 1 MiB of tables to set up):
 * one of each per thread, freed when the thread ends. */
static pthread_key_t cctxKey;
static pthread_key_t dctxKey;
static pthread_once_t ctxOnce = PTHREAD_ONCE_INIT;
static bool ctxKeysMade;

static void freeCCtx(void *c)
{
    ZSTD_freeCCtx(c);
}

static void freeDCtx(void *d)
{
    ZSTD_freeDCtx(d);
}

static void makeCtxKeys(void)
{
    ctxKeysMade = pthread_key_create(&cctxKey, freeCCtx) == 0 &&
                  pthread_key_create(&dctxKey, freeDCtx) == 0;
}

static void *makeCCtx(void)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (c != NULL) {
        ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, COMMAND_ZSTD_LEVEL);
        ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
        ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0); /* the trailer covers it */
    }
    return c;
}

static void *makeDCtx(void)
{
    return ZSTD_createDCtx();
}

/* This thread's context under key, made on first use; NULL when out of memory. */
static void *threadCtx(pthread_key_t *key, void *(*make)(void), void (*drop)(void *))
{
    void *c;
    pthread_once(&ctxOnce, makeCtxKeys);
    if (!ctxKeysMade) {
        return NULL;
    }
    c = pthread_getspecific(*key);
    if (c == NULL) {
        c = make();
        if (c == NULL || pthread_setspecific(*key, c) != 0) {
            drop(c);
            return NULL;
        }
    }
    return c;
}

static ZSTD_CCtx *threadCCtx(void)
{
    return threadCtx(&cctxKey, makeCCtx, freeCCtx);
}

static ZSTD_DCtx *threadDCtx(void)
{
    return threadCtx(&dctxKey, makeDCtx, freeDCtx);
}

void batchFree(struct batch *b)
{
    size_t i;
    if (b->params != NULL) {
        free(b->params); /* the statements' parameters are slices of it */
    } else if (b->stmts != NULL) {
        for (i = 0; i < b->n; i++) {
            free(b->stmts[i].params);
        }
    }
    free(b->stmts);
    b->params = NULL;
    if (b->owner != NULL && b->owner_free != NULL) {
        b->owner_free(b->owner);
    }
    b->stmts = NULL;
    b->n = 0;
    b->owner = NULL;
    b->owner_free = NULL;
}

int batchAlloc(struct batch *b, size_t n)
{
    b->stmts = calloc(n ? n : 1, sizeof *b->stmts);
    if (b->stmts == NULL) {
        return CAIRN_ENOMEM;
    }
    b->n = n;
    return 0;
}

int batchParams(struct stmt *s, size_t n)
{
    s->params = calloc(n ? n : 1, sizeof *s->params);
    if (s->params == NULL) {
        return CAIRN_ENOMEM;
    }
    s->nparams = n;
    return 0;
}

static void putVarint(struct buf *out, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v != 0) {
            tmp[n] |= 0x80;
        }
        n++;
    } while (v != 0);
    bufPut(out, tmp, n);
}

static size_t varintSize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* The distinct SQL texts of a batch: an open-addressing table from text to its index
 * in the command's SQL table, and for each statement the index it refers to. */
struct sqlset {
    uint32_t *slots;  /* 1 + statement index of the first statement with that text; 0 free */
    size_t mask;
    uint32_t *ref;    /* per statement: index into the SQL table */
    uint32_t *first;  /* per SQL table entry: the statement that holds the text */
    uint32_t n;
};

static int sqlsetBuild(struct sqlset *t, const struct batch *b)
{
    size_t cap = 16;
    size_t i;
    while (cap < b->n * 2) {
        cap <<= 1;
    }
    t->slots = calloc(cap, sizeof *t->slots);
    t->ref = malloc((b->n ? b->n : 1) * sizeof *t->ref);
    t->first = malloc((b->n ? b->n : 1) * sizeof *t->first);
    t->mask = cap - 1;
    t->n = 0;
    if (t->slots == NULL || t->ref == NULL || t->first == NULL) {
        return CAIRN_ENOMEM;
    }
    for (i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        size_t h;
        /* The common case, a run of one statement: no hashing. */
        if (i > 0 && s->sql_len == b->stmts[i - 1].sql_len &&
            (s->sql == b->stmts[i - 1].sql || memcmp(s->sql, b->stmts[i - 1].sql, s->sql_len) == 0)) {
            t->ref[i] = t->ref[i - 1];
            continue;
        }
        h = (size_t)XXH3_64bits(s->sql, s->sql_len) & t->mask;
        for (;;) {
            uint32_t slot = t->slots[h];
            if (slot == 0) {
                t->slots[h] = (uint32_t)i + 1;
                t->first[t->n] = (uint32_t)i;
                t->ref[i] = t->n++;
                break;
            }
            const struct stmt *o = &b->stmts[slot - 1];
            if (o->sql_len == s->sql_len && memcmp(o->sql, s->sql, s->sql_len) == 0) {
                t->ref[i] = t->ref[slot - 1];
                break;
            }
            h = (h + 1) & t->mask;
        }
    }
    return 0;
}

static void sqlsetFree(struct sqlset *t)
{
    free(t->slots);
    free(t->ref);
    free(t->first);
}

static unsigned char *writeVarint(unsigned char *w, uint64_t v)
{
    while (v >= 0x80) {
        *w++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *w++ = (unsigned char)v;
    return w;
}

static unsigned char *writeU64(unsigned char *w, uint64_t v)
{
    for (int k = 0; k < 8; k++) {
        w[k] = (unsigned char)(v >> (8 * k));
    }
    return w + 8;
}

/* Replace the body (SQL table and statements) of the command that starts at out[start],
 * after its header of header_size bytes, with one zstd frame, if it is long enough and
 * the frame saves an eighth. Without memory for it the command simply stays as it is.
 * The header is never in the frame: the decoder reads all of it, version 4's growth
 * bound too, before it inflates what follows. */
static void compressBody(struct buf *out, size_t start, size_t header_size)
{
    size_t from = start + header_size;
    size_t n = out->len - from;
    ZSTD_CCtx *c;
    void *z;
    size_t zn;
    uint16_t flags;

    if (out->oom || n < COMMAND_ZSTD_MIN || (c = threadCCtx()) == NULL) {
        return;
    }
    z = malloc(ZSTD_compressBound(n));
    if (z == NULL) {
        return;
    }
    zn = ZSTD_compress2(c, z, ZSTD_compressBound(n), out->p + from, n);
    if (!ZSTD_isError(zn) && zn <= n - n / 8) {
        memcpy(out->p + from, z, zn);
        out->len = from + zn;
        out->p[out->len] = '\0';
        flags = getU16((const unsigned char *)out->p + start + 6) | COMMAND_ZSTD;
        out->p[start + 6] = (char)(flags & 0xff);
        out->p[start + 7] = (char)(flags >> 8);
    }
    free(z);
}

void commandEncode(const struct batch *b, struct buf *out)
{
    unsigned char *w;
    struct sqlset set;
    size_t start = out->len;
    size_t total = COMMAND_HEADER_V4_SIZE + COMMAND_TRAILER_SIZE + 8 + 10;
    bool v4 = b->max_growth_mib != 0 && b->max_growth_mib != COMMAND_GROWTH_V3_MIB;
    unsigned flags = (unsigned)b->flags & ~(unsigned)(COMMAND_ZSTD | COMMAND_GROWTH);
    size_t nparams = 0;
    size_t i;
    size_t j;
    uint64_t bits;

    if (sqlsetBuild(&set, b) != 0) {
        sqlsetFree(&set);
        out->oom = true;
        return;
    }
    /* Size it first: one allocation, no copying as the buffer grows. */
    for (i = 0; i < set.n; i++) {
        total += 10 + b->stmts[set.first[i]].sql_len;
    }
    for (i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        total += varintSize(set.ref[i]) + varintSize(s->nparams);
        nparams += s->nparams;
        for (j = 0; j < s->nparams; j++) {
            const struct param *p = &s->params[j];
            total += 1 + 10 + (p->name ? p->name_len : 0) + 10 +
                     ((p->type == CAIRN_TEXT || p->type == CAIRN_BLOB) ? p->n : 0);
        }
    }
    if (bufReserve(out, total) != 0) {
        sqlsetFree(&set);
        return;
    }

    bufPut(out, COMMAND_MAGIC, 4);
    if (b->max_growth_mib != 0) {
        flags |= COMMAND_GROWTH;
    }
    bufPutU8(out, v4 ? COMMAND_VERSION : 3);
    bufPutU8(out, (uint8_t)b->kind);
    bufPutU16(out, (uint16_t)flags);
    bufPutU64(out, (uint64_t)b->time_ms);
    bufPutU64(out, b->seed);
    bufPutU32(out, (uint32_t)b->n);
    bufPutU32(out, (uint32_t)nparams);
    bufPutU64(out, b->max_steps);
    bufPutU32(out, b->max_length);
    bufPutU32(out, b->max_temp_mib);
    if (v4) {
        bufPutU32(out, b->max_growth_mib);
        bufPutU32(out, 0);
    }
    putVarint(out, set.n);
    for (i = 0; i < set.n; i++) {
        const struct stmt *s = &b->stmts[set.first[i]];
        putVarint(out, s->sql_len);
        bufPut(out, s->sql, s->sql_len);
    }
    /* The statements, written straight into the room reserved above (total counts
     * every varint at its longest): this loop runs once per row of a bulk request. */
    w = (unsigned char *)out->p + out->len;
    for (i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        w = writeVarint(w, set.ref[i]);
        w = writeVarint(w, s->nparams);
        for (j = 0; j < s->nparams; j++) {
            const struct param *p = &s->params[j];
            *w++ = (unsigned char)p->type;
            w = writeVarint(w, p->name ? p->name_len : 0);
            if (p->name != NULL) {
                memcpy(w, p->name, p->name_len);
                w += p->name_len;
            }
            switch (p->type) {
                case CAIRN_INTEGER:
                    w = writeU64(w, (uint64_t)p->i);
                    break;
                case CAIRN_FLOAT:
                    memcpy(&bits, &p->d, sizeof bits);
                    w = writeU64(w, bits);
                    break;
                case CAIRN_TEXT:
                case CAIRN_BLOB:
                    w = writeVarint(w, p->n);
                    if (p->n > 0) {
                        memcpy(w, p->s, p->n);
                        w += p->n;
                    }
                    break;
                default:
                    break;
            }
        }
    }
    out->len = (size_t)(w - (unsigned char *)out->p);
    out->p[out->len] = '\0'; /* struct buf keeps its bytes NUL-terminated */
    sqlsetFree(&set);
    compressBody(out, start, v4 ? COMMAND_HEADER_V4_SIZE : COMMAND_HEADER_SIZE);
    while ((out->len - start) % 8 != 0) {
        bufPutU8(out, 0);
    }
    if (!out->oom) {
        bufPutU64(out, XXH3_64bits(out->p + start, out->len - start));
    }
}

/* A bounds-checked reader over the encoded bytes. */
struct reader {
    const unsigned char *p;
    size_t n;
    size_t off;
    int version;
    char *errmsg;
};

static int need(struct reader *r, size_t k, const char *what)
{
    if (r->n - r->off < k) {
        errorf(r->errmsg, "command truncated at offset %zu: %s needs %zu bytes, %zu left",
               r->off, what, k, r->n - r->off);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

static int readU8(struct reader *r, uint8_t *v, const char *what)
{
    if (need(r, 1, what) != 0) {
        return CAIRN_ECORRUPT;
    }
    *v = r->p[r->off++];
    return 0;
}

static int readU32(struct reader *r, uint32_t *v, const char *what)
{
    if (need(r, 4, what) != 0) {
        return CAIRN_ECORRUPT;
    }
    *v = getU32(r->p + r->off);
    r->off += 4;
    return 0;
}

static int readU64(struct reader *r, uint64_t *v, const char *what)
{
    if (need(r, 8, what) != 0) {
        return CAIRN_ECORRUPT;
    }
    *v = getU64(r->p + r->off);
    r->off += 8;
    return 0;
}

/* A length or count: a u32 in version 1, a varint of at most 32 bits in version 2. */
static int readLen(struct reader *r, uint32_t *v, const char *what)
{
    uint64_t x = 0;
    unsigned shift = 0;
    size_t at = r->off;
    if (r->version == 1) {
        return readU32(r, v, what);
    }
    for (;;) {
        uint8_t byte;
        if (readU8(r, &byte, what) != 0) {
            return CAIRN_ECORRUPT;
        }
        x |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            break;
        }
        shift += 7;
        if (shift > 28) {
            errorf(r->errmsg, "command has an overlong %s at offset %zu", what, at);
            return CAIRN_ECORRUPT;
        }
    }
    if (x > UINT32_MAX) {
        errorf(r->errmsg, "command has a %s out of range at offset %zu", what, at);
        return CAIRN_ECORRUPT;
    }
    *v = (uint32_t)x;
    return 0;
}

static int readBytes(struct reader *r, size_t k, const char **out, const char *what)
{
    if (need(r, k, what) != 0) {
        return CAIRN_ECORRUPT;
    }
    *out = (const char *)r->p + r->off;
    r->off += k;
    return 0;
}

static int decodeParam(struct reader *r, struct param *p)
{
    size_t at = r->off;
    uint8_t type;
    uint32_t len;
    uint64_t v;
    if (readU8(r, &type, "parameter type") != 0 || readLen(r, &len, "parameter name") != 0) {
        return CAIRN_ECORRUPT;
    }
    p->type = type;
    p->name = NULL;
    p->name_len = len;
    if (len > 0 && readBytes(r, len, &p->name, "parameter name") != 0) {
        return CAIRN_ECORRUPT;
    }
    switch (type) {
        case CAIRN_INTEGER:
            if (readU64(r, &v, "integer parameter") != 0) {
                return CAIRN_ECORRUPT;
            }
            p->i = (int64_t)v;
            return 0;
        case CAIRN_FLOAT:
            if (readU64(r, &v, "float parameter") != 0) {
                return CAIRN_ECORRUPT;
            }
            memcpy(&p->d, &v, sizeof v);
            return 0;
        case CAIRN_TEXT:
        case CAIRN_BLOB:
            if (readLen(r, &len, "parameter length") != 0 ||
                readBytes(r, len, &p->s, "parameter bytes") != 0) {
                return CAIRN_ECORRUPT;
            }
            p->n = len;
            return 0;
        case CAIRN_NULL:
            return 0;
        default:
            errorf(r->errmsg, "command has unknown parameter type %u at offset %zu", type, at);
            return CAIRN_ECORRUPT;
    }
}

/* Version 1: each statement carries its SQL text and its own parameter array. */
static int decodeStmtsV1(struct reader *r, struct batch *b, uint32_t nstmts)
{
    size_t i;
    size_t j;
    for (i = 0; i < nstmts; i++) {
        struct stmt *s = &b->stmts[i];
        uint32_t len;
        uint32_t nparams;
        if (readLen(r, &len, "SQL length") != 0 ||
            readBytes(r, len, &s->sql, "SQL text") != 0) {
            return CAIRN_ECORRUPT;
        }
        s->sql_len = len;
        if (readLen(r, &nparams, "parameter count") != 0) {
            return CAIRN_ECORRUPT;
        }
        if (nparams > (r->n - r->off) / 5) {
            errorf(r->errmsg, "statement %zu claims %u parameters but only %zu bytes are left",
                   i + 1, nparams, r->n - r->off);
            return CAIRN_ECORRUPT;
        }
        if (nparams > 0) {
            if (batchParams(s, nparams) != 0) {
                errorf(r->errmsg, "out of memory decoding %u parameters", nparams);
                return CAIRN_ENOMEM;
            }
            for (j = 0; j < nparams; j++) {
                if (decodeParam(r, &s->params[j]) != 0) {
                    return CAIRN_ECORRUPT;
                }
            }
        }
    }
    return 0;
}

/* Version 2: a table of distinct SQL texts, then statements that refer to it; all
 * parameters in one array (b->params), each statement pointing at its slice. */
static int decodeStmtsV2(struct reader *r, struct batch *b, uint32_t nstmts, uint32_t total)
{
    struct stmt *sqls = NULL;
    uint32_t nsql;
    size_t used = 0;
    size_t i;
    size_t j;
    int rv = CAIRN_ECORRUPT;

    /* Every parameter takes at least 2 bytes: refuse counts the bytes cannot hold. */
    if (total > (r->n - r->off) / 2) {
        errorf(r->errmsg, "command claims %u parameters but has only %zu bytes left", total,
               r->n - r->off);
        return CAIRN_ECORRUPT;
    }
    if (total > 0) {
        b->params = calloc(total, sizeof *b->params);
        if (b->params == NULL) {
            errorf(r->errmsg, "out of memory decoding %u parameters", total);
            return CAIRN_ENOMEM;
        }
    }
    if (readLen(r, &nsql, "SQL count") != 0) {
        return CAIRN_ECORRUPT;
    }
    if (nsql > (r->n - r->off) || (nstmts > 0 && nsql == 0) || nsql > nstmts) {
        errorf(r->errmsg, "command claims %u SQL texts for %u statements at offset %zu", nsql,
               nstmts, r->off);
        return CAIRN_ECORRUPT;
    }
    sqls = calloc(nsql ? nsql : 1, sizeof *sqls);
    if (sqls == NULL) {
        errorf(r->errmsg, "out of memory decoding %u SQL texts", nsql);
        return CAIRN_ENOMEM;
    }
    for (i = 0; i < nsql; i++) {
        uint32_t len;
        if (readLen(r, &len, "SQL length") != 0 ||
            readBytes(r, len, &sqls[i].sql, "SQL text") != 0) {
            goto out;
        }
        sqls[i].sql_len = len;
    }
    for (i = 0; i < nstmts; i++) {
        struct stmt *s = &b->stmts[i];
        size_t at = r->off;
        uint32_t ref;
        uint32_t nparams;
        if (readLen(r, &ref, "SQL reference") != 0 ||
            readLen(r, &nparams, "parameter count") != 0) {
            goto out;
        }
        if (ref >= nsql) {
            errorf(r->errmsg, "statement %zu refers to SQL text %u of %u at offset %zu", i + 1,
                   ref, nsql, at);
            goto out;
        }
        if (nparams > total - used) {
            errorf(r->errmsg, "statement %zu claims %u parameters, more than the %zu left of "
                              "the %u the header announces", i + 1, nparams, total - used, total);
            goto out;
        }
        s->sql = sqls[ref].sql;
        s->sql_len = sqls[ref].sql_len;
        s->params = nparams > 0 ? b->params + used : NULL;
        s->nparams = nparams;
        for (j = 0; j < nparams; j++) {
            if (decodeParam(r, &b->params[used + j]) != 0) {
                goto out;
            }
        }
        used += nparams;
    }
    if (used != total) {
        errorf(r->errmsg, "command announces %u parameters but its statements hold %zu", total,
               used);
        goto out;
    }
    rv = 0;
out:
    free(sqls);
    return rv;
}

int commandKind(const void *p, size_t n)
{
    if (n < COMMAND_HEADER_V2_SIZE + COMMAND_TRAILER_SIZE || memcmp(p, COMMAND_MAGIC, 4) != 0) {
        return 0;
    }
    return ((const unsigned char *)p)[5];
}

/* The compressed body at r's offset: check the frame, inflate it into *raw (the caller
 * frees it) and point body at it; r moves past the frame, to the padding. */
static int inflateBody(struct reader *r, struct reader *body, void **raw)
{
    const unsigned char *z = r->p + r->off;
    size_t zn = ZSTD_findFrameCompressedSize(z, r->n - r->off);
    unsigned long long len;
    ZSTD_DCtx *d;
    size_t got;
    void *out;

    if (ZSTD_isError(zn)) {
        errorf(r->errmsg, "compressed command body at offset %zu is not a whole zstd frame: %s",
               r->off, ZSTD_getErrorName(zn));
        return CAIRN_ECORRUPT;
    }
    len = ZSTD_getFrameContentSize(z, zn);
    if (len == ZSTD_CONTENTSIZE_UNKNOWN || len == ZSTD_CONTENTSIZE_ERROR) {
        errorf(r->errmsg, "compressed command body at offset %zu does not say its size", r->off);
        return CAIRN_ECORRUPT;
    }
    if (len < 2 || len > COMMAND_RAW_MAX) {
        errorf(r->errmsg, "compressed command body at offset %zu claims %llu bytes (2 to %u "
                          "allowed)", r->off, len, COMMAND_RAW_MAX);
        return CAIRN_ECORRUPT;
    }
    d = threadDCtx();
    out = malloc((size_t)len);
    if (d == NULL || out == NULL) {
        free(out);
        errorf(r->errmsg, "out of memory inflating a command of %llu bytes", len);
        return CAIRN_ENOMEM;
    }
    got = ZSTD_decompressDCtx(d, out, (size_t)len, z, zn);
    if (ZSTD_isError(got) || got != len) {
        errorf(r->errmsg, "compressed command body at offset %zu does not inflate: %s", r->off,
               ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
        free(out);
        return CAIRN_ECORRUPT;
    }
    r->off += zn;
    *raw = out;
    *body = (struct reader){out, (size_t)len, 0, r->version, r->errmsg};
    return 0;
}

/* The growth bound (b->max_growth_mib) of a command of r->version with header flags,
 * r at the end of the version 3 header: version 4's fields read and checked. Returns 0
 * or CAIRN_ECORRUPT with the message set. */
static int readGrowth(struct reader *r, size_t n, uint16_t flags, struct batch *b)
{
    uint32_t field = 0;
    uint32_t reserved = 0;
    if (r->version >= 4) {
        if (n < COMMAND_HEADER_V4_SIZE + COMMAND_TRAILER_SIZE) {
            errorf(r->errmsg, "version 4 command truncated: %zu bytes, at least %d needed", n,
                   COMMAND_HEADER_V4_SIZE + COMMAND_TRAILER_SIZE);
            return CAIRN_ECORRUPT;
        }
        readU32(r, &field, "growth bound");
        readU32(r, &reserved, "reserved");
        if (reserved != 0) {
            errorf(r->errmsg, "command's reserved header field at offset 52 is not zero");
            return CAIRN_ECORRUPT;
        }
        if ((field != 0) != ((flags & COMMAND_GROWTH) != 0)) {
            errorf(r->errmsg, "command's growth bound at offset 48 (%u MiB) disagrees with "
                              "its flag 0x%x at offset 6",
                   field, COMMAND_GROWTH);
            return CAIRN_ECORRUPT;
        }
        b->max_growth_mib = field;
    } else if (r->version == 3 && (flags & COMMAND_GROWTH)) {
        b->max_growth_mib = COMMAND_GROWTH_V3_MIB;
    }
    /* Versions 1 and 2 never set the flag; were it set, nothing of it is read. */
    return 0;
}

int commandDecode(const void *p, size_t n, struct batch *b, char *errmsg)
{
    struct reader r = {p, n, 0, 0, errmsg};
    struct reader body;
    uint64_t sum;
    uint64_t u;
    uint32_t nstmts;
    uint32_t total;
    uint16_t flags;
    uint8_t version;
    uint8_t kind;
    int rv;

    memset(b, 0, sizeof *b);
    if (n < COMMAND_HEADER_V2_SIZE + COMMAND_TRAILER_SIZE) {
        errorf(errmsg, "command truncated: %zu bytes, at least %d needed", n,
               COMMAND_HEADER_V2_SIZE + COMMAND_TRAILER_SIZE);
        return CAIRN_ECORRUPT;
    }
    if (memcmp(p, COMMAND_MAGIC, 4) != 0) {
        errorf(errmsg, "not a cairn command: bad magic at offset 0");
        return CAIRN_ECORRUPT;
    }
    sum = getU64(r.p + n - COMMAND_TRAILER_SIZE);
    if (XXH3_64bits(p, n - COMMAND_TRAILER_SIZE) != sum) {
        errorf(errmsg, "command checksum mismatch over %zu bytes", n - COMMAND_TRAILER_SIZE);
        return CAIRN_ECORRUPT;
    }
    r.n = n - COMMAND_TRAILER_SIZE;
    r.off = 4;
    readU8(&r, &version, "version");
    if (version < 1 || version > COMMAND_VERSION) {
        errorf(errmsg, "unsupported command version %u (this build reads 1 to %d)", version,
               COMMAND_VERSION);
        return CAIRN_ECORRUPT;
    }
    r.version = version;
    readU8(&r, &kind, "kind");
    flags = getU16(r.p + r.off);
    r.off += 2;
    if (kind < BATCH_EXECUTE || kind > BATCH_DIGEST) {
        errorf(errmsg, "command has unknown kind %u at offset 5", kind);
        return CAIRN_ECORRUPT;
    }
    b->kind = kind;
    readU64(&r, &u, "time");
    b->time_ms = (int64_t)u;
    readU64(&r, &b->seed, "seed");
    readU32(&r, &nstmts, "statement count");
    readU32(&r, &total, "parameter count"); /* version 1: reserved */
    if (version >= 3) {
        uint32_t len;
        if (n < COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE) {
            errorf(errmsg, "version 3 command truncated: %zu bytes, at least %d needed", n,
                   COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE);
            return CAIRN_ECORRUPT;
        }
        readU64(&r, &b->max_steps, "step limit");
        readU32(&r, &len, "value length limit");
        readU32(&r, &b->max_temp_mib, "temporary space limit");
        b->max_length = len;
    }
    if ((rv = readGrowth(&r, n, flags, b)) != 0) {
        return rv;
    }
    body = r;
    if (flags & COMMAND_ZSTD) {
        if (version == 1) {
            errorf(errmsg, "version 1 command with the compressed flag at offset 6");
            return CAIRN_ECORRUPT;
        }
        rv = inflateBody(&r, &body, &b->owner);
        if (rv != 0) {
            return rv;
        }
        b->owner_free = free;
    }
    b->flags = flags & ~(unsigned)(COMMAND_ZSTD | COMMAND_GROWTH);
    /* Each statement takes at least 2 bytes: refuse counts the bytes cannot hold
     * before allocating for them. */
    if (nstmts > (body.n - body.off) / 2) {
        errorf(errmsg, "command claims %u statements but has only %zu bytes left", nstmts,
               body.n - body.off);
        goto err;
    }
    rv = batchAlloc(b, nstmts);
    if (rv != 0) {
        errorf(errmsg, "out of memory decoding %u statements", nstmts);
        batchFree(b);
        return rv;
    }
    rv = version == 1 ? decodeStmtsV1(&body, b, nstmts) : decodeStmtsV2(&body, b, nstmts, total);
    if (rv != 0) {
        batchFree(b);
        return rv;
    }
    if (!(flags & COMMAND_ZSTD)) {
        r = body;
    } else if (body.off != body.n) {
        errorf(errmsg, "compressed command body has %zu unexpected bytes at its offset %zu",
               body.n - body.off, body.off);
        goto err;
    }
    if (r.n - r.off >= 8 || r.n % 8 != 0) {
        errorf(errmsg, "command has %zu unexpected bytes at offset %zu", r.n - r.off, r.off);
        goto err;
    }
    for (; r.off < r.n; r.off++) {
        if (r.p[r.off] != 0) {
            errorf(errmsg, "command padding is not zero at offset %zu", r.off);
            goto err;
        }
    }
    return 0;

err:
    batchFree(b);
    return CAIRN_ECORRUPT;
}
