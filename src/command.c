/* Command encoding and decoding (see command.h and docs/FORMAT.md). Any thread.
 *
 * Layout, little-endian:
 *   header  magic "CCMD" | version u8 | kind u8 | flags u16 | time_ms i64 | seed u64 |
 *           nstmts u32 | reserved u32
 *   stmts   sql_len u32 | sql | nparams u32 | params
 *   param   type u8 | name_len u32 | name | value
 *           (INTEGER: i64, FLOAT: IEEE-754 bits u64, TEXT/BLOB: len u32 + bytes, NULL: -)
 *   pad     0-7 zero bytes, so that the whole command is a multiple of 8 bytes: libraft's
 *           segment loader reads entry payloads as if they were padded to 8 bytes
 *   trailer XXH3-64 of every byte before it */
#include "command.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cairn.h"
#include "error.h"

void batchFree(struct batch *b)
{
    size_t i;
    if (b->stmts != NULL) {
        for (i = 0; i < b->n; i++) {
            free(b->stmts[i].params);
        }
        free(b->stmts);
    }
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

void commandEncode(const struct batch *b, struct buf *out)
{
    size_t start = out->len;
    size_t i;
    size_t j;
    uint64_t bits;

    bufPut(out, COMMAND_MAGIC, 4);
    bufPutU8(out, COMMAND_VERSION);
    bufPutU8(out, (uint8_t)b->kind);
    bufPutU16(out, (uint16_t)b->flags);
    bufPutU64(out, (uint64_t)b->time_ms);
    bufPutU64(out, b->seed);
    bufPutU32(out, (uint32_t)b->n);
    bufPutU32(out, 0);
    for (i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        bufPutU32(out, (uint32_t)s->sql_len);
        bufPut(out, s->sql, s->sql_len);
        bufPutU32(out, (uint32_t)s->nparams);
        for (j = 0; j < s->nparams; j++) {
            const struct param *p = &s->params[j];
            bufPutU8(out, (uint8_t)p->type);
            bufPutU32(out, (uint32_t)(p->name ? p->name_len : 0));
            if (p->name != NULL) {
                bufPut(out, p->name, p->name_len);
            }
            switch (p->type) {
                case CAIRN_INTEGER:
                    bufPutU64(out, (uint64_t)p->i);
                    break;
                case CAIRN_FLOAT:
                    memcpy(&bits, &p->d, sizeof bits);
                    bufPutU64(out, bits);
                    break;
                case CAIRN_TEXT:
                case CAIRN_BLOB:
                    bufPutU32(out, (uint32_t)p->n);
                    bufPut(out, p->s, p->n);
                    break;
                default:
                    break;
            }
        }
    }
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
    uint8_t type;
    uint32_t len;
    uint64_t v;
    if (readU8(r, &type, "parameter type") != 0 || readU32(r, &len, "parameter name") != 0) {
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
            if (readU32(r, &len, "parameter length") != 0 ||
                readBytes(r, len, &p->s, "parameter bytes") != 0) {
                return CAIRN_ECORRUPT;
            }
            p->n = len;
            return 0;
        case CAIRN_NULL:
            return 0;
        default:
            errorf(r->errmsg, "command has unknown parameter type %u at offset %zu", type,
                   r->off - 1 - 4 - len);
            return CAIRN_ECORRUPT;
    }
}

int commandDecode(const void *p, size_t n, struct batch *b, char *errmsg)
{
    struct reader r = {p, n, 0, errmsg};
    uint64_t sum;
    uint64_t u;
    uint32_t nstmts;
    uint32_t len;
    uint16_t flags;
    uint8_t version;
    uint8_t kind;
    size_t i;
    size_t j;

    memset(b, 0, sizeof *b);
    if (n < COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE) {
        errorf(errmsg, "command truncated: %zu bytes, at least %d needed", n,
               COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE);
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
    if (version != COMMAND_VERSION) {
        errorf(errmsg, "unsupported command version %u (this build reads %d)", version,
               COMMAND_VERSION);
        return CAIRN_ECORRUPT;
    }
    readU8(&r, &kind, "kind");
    flags = getU16(r.p + r.off);
    r.off += 2;
    if (kind < BATCH_EXECUTE || kind > BATCH_REQUEST) {
        errorf(errmsg, "command has unknown kind %u at offset 5", kind);
        return CAIRN_ECORRUPT;
    }
    b->kind = kind;
    b->flags = flags;
    readU64(&r, &u, "time");
    b->time_ms = (int64_t)u;
    readU64(&r, &b->seed, "seed");
    readU32(&r, &nstmts, "statement count");
    r.off += 4; /* reserved */
    /* Each statement takes at least 8 bytes: refuse counts the bytes cannot hold
     * before allocating for them. */
    if (nstmts > (r.n - r.off) / 8) {
        errorf(errmsg, "command claims %u statements but has only %zu bytes left", nstmts,
               r.n - r.off);
        return CAIRN_ECORRUPT;
    }
    if (batchAlloc(b, nstmts) != 0) {
        errorf(errmsg, "out of memory decoding %u statements", nstmts);
        return CAIRN_ENOMEM;
    }
    for (i = 0; i < nstmts; i++) {
        struct stmt *s = &b->stmts[i];
        uint32_t nparams;
        if (readU32(&r, &len, "SQL length") != 0 ||
            readBytes(&r, len, &s->sql, "SQL text") != 0) {
            goto err;
        }
        s->sql_len = len;
        if (readU32(&r, &nparams, "parameter count") != 0) {
            goto err;
        }
        if (nparams > (r.n - r.off) / 5) {
            errorf(errmsg, "statement %zu claims %u parameters but only %zu bytes are left",
                   i + 1, nparams, r.n - r.off);
            goto err;
        }
        if (nparams > 0) {
            if (batchParams(s, nparams) != 0) {
                errorf(errmsg, "out of memory decoding %u parameters", nparams);
                batchFree(b);
                return CAIRN_ENOMEM;
            }
            for (j = 0; j < nparams; j++) {
                if (decodeParam(&r, &s->params[j]) != 0) {
                    goto err;
                }
            }
        }
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
