/* Writes the seed corpus of the command fuzzer: real commands, encoded by
 * commandEncode (version 3; the v2-* seeds were written by earlier builds and stay, so
 * that version 2 keeps being decoded) and by hand in version 1, covering every parameter type,
 * named parameters, SQL texts shared by several statements and every batch kind.
 *
 *   build-fuzz/fuzz_gen_corpus fuzz/corpus/command
 *
 * Run by hand when the encoding changes (fuzz/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "buf.h"
#include "cairn.h"
#include "command.h"

static const char *dir;

static void writeFile(const char *name, const void *p, size_t n)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void writeBatch(const char *name, struct batch *b)
{
    struct buf out;
    bufInit(&out);
    commandEncode(b, &out);
    if (out.oom) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    writeFile(name, out.p, out.len);
    bufFree(&out);
}

/* Version 1, as earlier builds wrote it: u32 lengths, every SQL text inline. */
static void writeV1(const char *name, const struct batch *b)
{
    struct buf out;
    bufInit(&out);
    bufPut(&out, COMMAND_MAGIC, 4);
    bufPutU8(&out, 1);
    bufPutU8(&out, (uint8_t)b->kind);
    bufPutU16(&out, (uint16_t)b->flags);
    bufPutU64(&out, (uint64_t)b->time_ms);
    bufPutU64(&out, b->seed);
    bufPutU32(&out, (uint32_t)b->n);
    bufPutU32(&out, 0);
    for (size_t i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        bufPutU32(&out, (uint32_t)s->sql_len);
        bufPut(&out, s->sql, s->sql_len);
        bufPutU32(&out, (uint32_t)s->nparams);
        for (size_t j = 0; j < s->nparams; j++) {
            const struct param *p = &s->params[j];
            uint64_t bits;
            bufPutU8(&out, (uint8_t)p->type);
            bufPutU32(&out, p->name ? (uint32_t)p->name_len : 0);
            if (p->name != NULL) {
                bufPut(&out, p->name, p->name_len);
            }
            switch (p->type) {
            case CAIRN_INTEGER:
                bufPutU64(&out, (uint64_t)p->i);
                break;
            case CAIRN_FLOAT:
                memcpy(&bits, &p->d, sizeof bits);
                bufPutU64(&out, bits);
                break;
            case CAIRN_TEXT:
            case CAIRN_BLOB:
                bufPutU32(&out, (uint32_t)p->n);
                bufPut(&out, p->s, p->n);
                break;
            default:
                break;
            }
        }
    }
    while (out.len % 8 != 0) {
        bufPutU8(&out, 0);
    }
    bufPutU64(&out, XXH3_64bits(out.p, out.len));
    writeFile(name, out.p, out.len);
    bufFree(&out);
}

static struct stmt sql(const char *text, struct param *params, size_t n)
{
    struct stmt s = {text, strlen(text), params, n};
    return s;
}

int main(int argc, char **argv)
{
    static const char blob[] = {0, 1, 2, (char)0xff, 'x'};
    struct param all[6] = {
        {CAIRN_INTEGER, NULL, 0, INT64_MIN, 0, NULL, 0},
        {CAIRN_FLOAT, NULL, 0, 0, -1.5e300, NULL, 0},
        {CAIRN_TEXT, NULL, 0, 0, 0, "h\xc3\xa9llo", 6},
        {CAIRN_BLOB, NULL, 0, 0, 0, blob, sizeof blob},
        {CAIRN_NULL, NULL, 0, 0, 0, NULL, 0},
        {CAIRN_INTEGER, "age", 3, 42, 0, NULL, 0},
    };
    struct param named[2] = {
        {CAIRN_TEXT, "name", 4, 0, 0, "fiona", 5},
        {CAIRN_INTEGER, "age", 3, 20, 0, NULL, 0},
    };
    struct param digest[1] = {
        {CAIRN_BLOB, NULL, 0, 0, 0, "0123456789abcdef", 16},
    };
    struct stmt stmts[4];
    struct batch b;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];

    memset(&b, 0, sizeof b);
    b.kind = BATCH_EXECUTE;
    b.time_ms = 1763776800123;
    b.seed = 0xdeadbeefcafef00dULL;
    b.stmts = stmts;

    stmts[0] = sql("CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)", NULL, 0);
    b.n = 1;
    writeBatch("v3-one-statement", &b);
    writeV1("v1-one-statement", &b);

    b.kind = BATCH_REQUEST;
    b.flags = BATCH_TRANSACTION;
    stmts[0] = sql("INSERT INTO t VALUES(?, ?, ?, ?, ?, :age)", all, 6);
    stmts[1] = sql("SELECT 1", NULL, 0);
    b.n = 2;
    writeBatch("v3-every-type", &b);
    writeV1("v1-every-type", &b);

    b.kind = BATCH_EXECUTE;
    b.flags = 0;
    stmts[0] = sql("INSERT INTO foo(name, age) VALUES(:name, :age)", named, 2);
    stmts[1] = sql("INSERT INTO foo(name, age) VALUES(:name, :age)", named, 2);
    stmts[2] = sql("UPDATE foo SET age = age + 1", NULL, 0);
    stmts[3] = sql("INSERT INTO foo(name, age) VALUES(:name, :age)", named, 2);
    b.n = 4;
    writeBatch("v3-shared-sql", &b);

    b.kind = BATCH_QUERY;
    stmts[0] = sql("SELECT * FROM foo", NULL, 0);
    b.n = 1;
    writeBatch("v3-query", &b);

    b.kind = BATCH_RESTORE;
    stmts[0] = sql("20261122T013902267Z-0000-5202", digest, 1);
    writeBatch("v3-restore", &b);

    b.kind = BATCH_EXECUTE;
    b.n = 0;
    writeBatch("v3-empty", &b);

    b.kind = BATCH_DIGEST;
    b.max_steps = 5000000;
    b.max_length = 1000;
    writeBatch("v3-digest-with-limits", &b);
    return 0;
}
