/* Writes the seed corpora of the command, arcseg and catidx fuzzers.
 *
 * command: real commands, encoded by commandEncode (version 3; the v2-* seeds were
 * written by earlier builds and stay, so that version 2 keeps being decoded) and by hand
 * in version 1, covering every parameter type, named parameters, SQL texts shared by
 * several statements and every batch kind.
 * arcseg: archive segments written by arcsegEncodeHistory (version 2: with and without
 * a history and a previous segment, one entry, entries of real commands and barriers
 * between them), one rewritten by hand as version 1, and the `carc-*` seeds: the same
 * header with the body uncompressed and no trailer, which fuzz_arcseg.c wraps itself.
 * catidx: catalog indexes written by catidxEncode (version 2: every kind of entry, a
 * backup with a history and LZ4 blocks, one with neither, an empty index), and a
 * `cairnidx-*` seed: the header with the body uncompressed and no
 * checksum, which fuzz_catidx.c wraps itself.
 *
 *   build-fuzz/fuzz_gen_corpus fuzz/corpus/command            (command, the default)
 *   build-fuzz/fuzz_gen_corpus fuzz/corpus/arcseg arcseg
 *   build-fuzz/fuzz_gen_corpus fuzz/corpus/catidx catidx
 *
 * Run by hand when an encoding changes (fuzz/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include <zstd.h>

#include "arcseg.h"
#include "buf.h"
#include "cairn.h"
#include "catidx.h"
#include "cbk.h"
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

static void writeArcseg(void);
static void writeCatidx(void);

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

    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s DIR [command|arcseg|catidx]\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    if (argc == 3 && strcmp(argv[2], "arcseg") == 0) {
        writeArcseg();
        return 0;
    }
    if (argc == 3 && strcmp(argv[2], "catidx") == 0) {
        writeCatidx();
        return 0;
    }
    if (argc == 3 && strcmp(argv[2], "command") != 0) {
        fprintf(stderr, "%s: no corpus %s\n", argv[0], argv[2]);
        return 2;
    }

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

/* ---- arcseg ---- */

static void die(const char *what, const char *errmsg)
{
    fprintf(stderr, "%s: %s\n", what, errmsg);
    exit(1);
}

/* A segment, and its `carc-` twin: the header as written, the body inflated. */
static void writeSegment(const char *name, const unsigned char *history, const char *timeline,
                         uint64_t first, const unsigned char *prev, const struct arcseg_entry *e,
                         size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    char raw_name[256];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    unsigned char *obj;
    size_t len;
    struct arcseg seg;
    struct buf raw;

    if (arcsegEncodeHistory(history, timeline, first, prev, e, n, &obj, &len, digest, errmsg) !=
        0) {
        die(name, errmsg);
    }
    writeFile(name, obj, len);
    if (arcsegDecode(obj, len, name, &seg, errmsg) != 0) {
        die(name, errmsg);
    }
    bufInit(&raw);
    bufPut(&raw, obj, ARCSEG_HEADER2_SIZE);
    memcpy(raw.p, "carc", 4);
    bufPut(&raw, seg.raw, (size_t)seg.h.raw_len);
    if (raw.oom) {
        die(name, "out of memory");
    }
    snprintf(raw_name, sizeof raw_name, "carc-%s", name);
    writeFile(raw_name, raw.p, raw.len);
    bufFree(&raw);
    arcsegFree(&seg);
    free(obj);
}

/* Version 1, as earlier builds wrote it: the version 2 object without its history
 * field, and its digest made again. */
static void writeSegmentV1(const char *name, const struct arcseg_entry *e, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    unsigned char *obj;
    size_t len;

    if (arcsegEncode("t00000000000000000001-0a0b0c0d", 1, NULL, e, n, &obj, &len, digest, errmsg) !=
        0) {
        die(name, errmsg);
    }
    memmove(obj + ARCSEG_HEADER_SIZE, obj + ARCSEG_HEADER2_SIZE, len - ARCSEG_HEADER2_SIZE);
    len -= ARCSEG_HEADER2_SIZE - ARCSEG_HEADER_SIZE;
    obj[4] = 1;
    obj[5] = 0;
    obj[6] = ARCSEG_HEADER_SIZE;
    obj[7] = 0;
    XXH128_hash_t h = XXH3_128bits(obj, len - ARCSEG_TRAILER_SIZE);
    cbkDigestBytes(h.low64, h.high64, obj + len - ARCSEG_TRAILER_SIZE);
    writeFile(name, obj, len);
    free(obj);
}

/* An encoded command of one statement, at time_ms; *out is the caller's (bufFree). */
static void commandOf(const char *text, int64_t time_ms, struct buf *out)
{
    struct stmt st = {text, strlen(text), NULL, 0};
    struct batch b;
    memset(&b, 0, sizeof b);
    b.kind = BATCH_EXECUTE;
    b.time_ms = time_ms;
    b.seed = 7;
    b.stmts = &st;
    b.n = 1;
    bufInit(out);
    commandEncode(&b, out);
    if (out->oom) {
        die("command", "out of memory");
    }
}

static void writeArcseg(void)
{
    static const unsigned char history[ARCSEG_HISTORY_SIZE] = {0x3c, 0x11, 0x9a, 0x04, 0x5e, 0x77,
                                                               0x21, 0xd0, 0x42, 0x8f, 0x66, 0x13,
                                                               0xa5, 0x0b, 0xee, 0x01};
    static const unsigned char prev[BACKUP_DIGEST_SIZE] = {0xde, 0xad, 0xbe, 0xef, 1, 2,  3,  4,
                                                           5,    6,    7,    8,    9, 10, 11, 12};
    static const unsigned char odd[] = {0, 1, 2, 0xff};
    struct buf c1, c2, c3;
    struct arcseg_entry e[4];

    commandOf("CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", 1763776800123, &c1);
    commandOf("INSERT INTO foo(name) VALUES('fiona')", 1763776800456, &c2);
    commandOf("UPDATE foo SET name = 'declan'", 1763776800001, &c3);

    /* Three commands, a barrier at 12 between them; the last one's clock behind. */
    e[0] =
        (struct arcseg_entry){10, 0, 1763776800123, (uint32_t)c1.len, (const unsigned char *)c1.p};
    e[1] =
        (struct arcseg_entry){11, 2, 1763776800456, (uint32_t)c2.len, (const unsigned char *)c2.p};
    e[2] =
        (struct arcseg_entry){13, 2, 1763776800001, (uint32_t)c3.len, (const unsigned char *)c3.p};
    writeSegment("v2-history-prev", history, "t00000000000000000010-deadbeef", 10, prev, e, 3);
    writeSegment("v2-first-segment", NULL, "t00000000000000000010-deadbeef", 10, NULL, e, 3);

    /* One entry that is no command, after a range of barriers. */
    e[0] = (struct arcseg_entry){1000, 5, 0, sizeof odd, odd};
    writeSegment("v2-one-entry", history, "t00000000000000000990-00000000", 990, prev, e, 1);

    /* Empty entries, times before 1970. */
    e[0] = (struct arcseg_entry){1, 1, -5, 0, NULL};
    e[1] = (struct arcseg_entry){2, 1, -7, 0, NULL};
    writeSegment("v2-empty-entries", NULL, "a-b-c", 1, NULL, e, 2);

    e[0] =
        (struct arcseg_entry){1, 0, 1763776800123, (uint32_t)c1.len, (const unsigned char *)c1.p};
    e[1] =
        (struct arcseg_entry){2, 0, 1763776800456, (uint32_t)c2.len, (const unsigned char *)c2.p};
    writeSegmentV1("v1-two-commands", e, 2);

    bufFree(&c1);
    bufFree(&c2);
    bufFree(&c3);
}

/* ---- catidx ---- */

static void writeIndex(const char *name, const struct catidx_put *v, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char *obj;
    size_t len;
    if (catidxEncode(v, n, &obj, &len, errmsg) != 0) {
        die(name, errmsg);
    }
    writeFile(name, obj, len);
    free(obj);
}

/* The `cairnidx-` twin of an index: its header, its body inflated. */
static void writeIndexRaw(const char *name, const struct catidx_put *v, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char *obj, *out;
    size_t len, body_len;
    if (catidxEncode(v, n, &obj, &len, errmsg) != 0) {
        die(name, errmsg);
    }
    body_len = (size_t)getU64(obj + 16);
    out = malloc(32 + body_len + 1);
    if (out == NULL) {
        die(name, "out of memory");
    }
    memcpy(out, obj, 32);
    memcpy(out, "cairnidx", 8);
    if (ZSTD_decompress(out + 32, body_len, obj + 32, len - 40) != body_len) {
        die(name, "the frame does not inflate");
    }
    writeFile(name, out, 32 + body_len);
    free(out);
    free(obj);
}

static void writeCatidx(void)
{
    struct backup_info full, incr, damaged, sidecar, failed;
    struct catidx_put put[5];

    memset(&full, 0, sizeof full);
    snprintf(full.id, sizeof full.id, "20261122T013902267Z-0000-5202");
    full.type = BACKUP_FULL;
    for (int i = 0; i < BACKUP_DIGEST_SIZE; i++) {
        full.digest[i] = (unsigned char)(0xa0 + i);
    }
    snprintf(full.source, sizeof full.source, "/var/lib/cairn/db.sqlite");
    full.created_ms = 1763776742267;
    full.raft_index = 5202;
    full.raft_term = 3;
    full.page_size = 4096;
    full.page_count = 120;
    full.pages = 120;
    full.duration_ms = 41;
    full.codec = CBK_CODEC_ZSTD; /* and no history: a backup of a plain file */

    incr = full;
    snprintf(incr.id, sizeof incr.id, "20261122T020000000Z-0000-6000");
    incr.type = BACKUP_INCREMENTAL;
    snprintf(incr.parent_id, sizeof incr.parent_id, "%s", full.id);
    memcpy(incr.parent_digest, full.digest, BACKUP_DIGEST_SIZE);
    incr.digest[0] ^= 0xff;
    incr.raft_index = 6000;
    incr.pages = 7;
    incr.codec = CBK_CODEC_LZ4;
    for (int i = 0; i < BACKUP_HISTORY_SIZE; i++) {
        incr.history[i] = (unsigned char)(0x30 + i); /* a cluster's id */
    }

    memset(&damaged, 0, sizeof damaged);
    snprintf(damaged.error, sizeof damaged.error,
             "backup file a.cbk: trailer digest differs (damaged or truncated)");

    memset(&sidecar, 0, sizeof sidecar);
    sidecar.verified = BACKUP_VERIFIED;
    sidecar.verified_ms = 1763777000000;
    memcpy(sidecar.digest, full.digest, BACKUP_DIGEST_SIZE);
    failed = sidecar;
    failed.verified = BACKUP_VERIFY_FAILED;

    put[0] =
        (struct catidx_put){CATIDX_BACKUP, "20261122T013902267Z-0000-5202.cbk",
                            "\"9b2cf535f27731c974343645a3985328\"/1763776742000", 491520, &full};
    put[1] =
        (struct catidx_put){CATIDX_SIDECAR, "20261122T013902267Z-0000-5202.verified",
                            "\"0f343b0931126a20f133d67c2b018a3b\"/1763777000000", 160, &sidecar};
    put[2] = (struct catidx_put){CATIDX_BACKUP, "20261122T020000000Z-0000-6000.cbk",
                                 "1835011.1763780400.5.1763780400.5", 29184, &incr};
    put[3] = (struct catidx_put){CATIDX_DAMAGED, "a.cbk", "1835012.1763780401.0.1763780401.0", 700,
                                 &damaged};
    put[4] = (struct catidx_put){CATIDX_SIDECAR, "b.verified", "x", 0, &failed};
    writeIndex("every-kind", put, 5);
    writeIndexRaw("cairnidx-every-kind", put, 5);
    writeIndex("one-backup", put, 1);
    writeIndex("one-damaged", put + 3, 1);
    writeIndex("empty", NULL, 0);
}
