/* libFuzzer target: the command decoder (commandDecode, src/command.c), versions 1
 * and 2 of the encoding.
 *
 * A command ends with an XXH3 checksum of everything before it, so almost every
 * mutation would stop at the checksum: each input is decoded as it is, and again with
 * its trailer recomputed, so that mutations reach the structure behind the checksum.
 * What the decoder promises, and the target checks:
 *   - a refused input gets CAIRN_ECORRUPT (or CAIRN_ENOMEM), a message, and an empty
 *     batch;
 *   - a decoded batch has a known kind, known parameter types, and every string
 *     pointing inside the input (zero copy);
 *   - encoded again (always version 2) and decoded, it is the same batch.
 * Any thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "buf.h"
#include "cairn.h"
#include "command.h"
#include "error.h"
#include "fuzz.h"

/* [s, s + n) lies within [p, p + size). */
static int inside(const void *s, size_t n, const unsigned char *p, size_t size)
{
    const unsigned char *q = s;
    return q >= p && q <= p + size && n <= (size_t)(p + size - q);
}

static void checkDecoded(const struct batch *b, const unsigned char *p, size_t size)
{
    FUZZ_CHECK(b->kind >= BATCH_EXECUTE && b->kind <= BATCH_DIGEST);
    FUZZ_CHECK(b->n == 0 || b->stmts != NULL);
    for (size_t i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        FUZZ_CHECK(s->sql_len == 0 || inside(s->sql, s->sql_len, p, size));
        FUZZ_CHECK(s->nparams == 0 || s->params != NULL);
        for (size_t j = 0; j < s->nparams; j++) {
            const struct param *q = &s->params[j];
            FUZZ_CHECK(q->type == CAIRN_INTEGER || q->type == CAIRN_FLOAT ||
                       q->type == CAIRN_TEXT || q->type == CAIRN_BLOB || q->type == CAIRN_NULL);
            FUZZ_CHECK(q->name == NULL || inside(q->name, q->name_len, p, size));
            FUZZ_CHECK(q->name != NULL || q->name_len == 0);
            if (q->type == CAIRN_TEXT || q->type == CAIRN_BLOB) {
                FUZZ_CHECK(q->n == 0 || inside(q->s, q->n, p, size));
            }
        }
    }
}

static int sameBytes(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void checkSame(const struct batch *a, const struct batch *b)
{
    FUZZ_CHECK(a->kind == b->kind && a->flags == b->flags);
    FUZZ_CHECK(a->time_ms == b->time_ms && a->seed == b->seed);
    FUZZ_CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct stmt *s = &a->stmts[i], *t = &b->stmts[i];
        FUZZ_CHECK(sameBytes(s->sql, s->sql_len, t->sql, t->sql_len));
        FUZZ_CHECK(s->nparams == t->nparams);
        for (size_t j = 0; j < s->nparams; j++) {
            const struct param *x = &s->params[j], *y = &t->params[j];
            FUZZ_CHECK(x->type == y->type);
            FUZZ_CHECK(sameBytes(x->name, x->name_len, y->name, y->name_len));
            switch (x->type) {
            case CAIRN_INTEGER:
                FUZZ_CHECK(x->i == y->i);
                break;
            case CAIRN_FLOAT:
                FUZZ_CHECK(memcmp(&x->d, &y->d, sizeof x->d) == 0); /* NaN bits too */
                break;
            case CAIRN_TEXT:
            case CAIRN_BLOB:
                FUZZ_CHECK(sameBytes(x->s, x->n, y->s, y->n));
                break;
            default:
                break;
            }
        }
    }
}

/* Decode p[0..size), check it, round-trip it; returns commandDecode's code. */
static int commandOne(const unsigned char *p, size_t size)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct batch b;
    struct batch again;
    struct buf out;
    int rv = commandDecode(p, size, &b, errmsg);

    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_ECORRUPT || rv == CAIRN_ENOMEM);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(b.stmts == NULL && b.n == 0 && b.params == NULL && b.owner == NULL);
        return rv;
    }
    checkDecoded(&b, p, size);

    bufInit(&out);
    commandEncode(&b, &out);
    FUZZ_CHECK(!out.oom);
    FUZZ_CHECK(out.len % 8 == 0);
    FUZZ_CHECK(commandDecode(out.p, out.len, &again, errmsg) == 0);
    checkSame(&b, &again);
    batchFree(&again);
    bufFree(&out);
    batchFree(&b);
    return 0;
}

/* The input as it is, then (when its checksum is wrong) with the checksum made right.
 * Returns the code of the second decode when there is one. */
static int fuzzCommand(const uint8_t *data, size_t size)
{
    unsigned char *copy;
    int rv = commandOne(data, size);
    if (size < COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE) {
        return rv;
    }
    /* An exact-size heap copy, so that ASan sees any read past its end. */
    copy = malloc(size);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    uint64_t sum = XXH3_64bits(copy, size - COMMAND_TRAILER_SIZE);
    for (int i = 0; i < 8; i++) {
        copy[size - COMMAND_TRAILER_SIZE + i] = (unsigned char)(sum >> (8 * i));
    }
    if (memcmp(copy, data, size) != 0) {
        rv = commandOne(copy, size);
    }
    free(copy);
    return rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzCommand(data, size);
    return 0;
}
#endif
