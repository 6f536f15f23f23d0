/* Unit tests of the command encoding (src/command.c): round trip of every parameter
 * type, SQL texts stored once, version 1 still read, and rejection of every
 * truncation, every single-byte corruption and structural damage behind a valid
 * checksum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include <cmocka.h>

#include "cairn.h"
#include "command.h"
#include "error.h"

static void makeBatch(struct batch *b, struct param *params, size_t nparams)
{
    static struct stmt stmts[2];
    memset(b, 0, sizeof *b);
    memset(stmts, 0, sizeof stmts);
    stmts[0].sql = "INSERT INTO t VALUES(?, ?, ?, ?, ?, :name)";
    stmts[0].sql_len = strlen(stmts[0].sql);
    stmts[0].params = params;
    stmts[0].nparams = nparams;
    stmts[1].sql = "SELECT 1";
    stmts[1].sql_len = strlen(stmts[1].sql);
    b->kind = BATCH_REQUEST;
    b->flags = BATCH_TRANSACTION;
    b->time_ms = 1763776800123;
    b->seed = 0xdeadbeefcafef00dULL;
    b->stmts = stmts;
    b->n = 2;
}

static void fillParams(struct param p[6])
{
    static const char blob[] = {0, 1, 2, (char)0xff};
    memset(p, 0, 6 * sizeof *p);
    p[0].type = CAIRN_INTEGER;
    p[0].i = INT64_MIN;
    p[1].type = CAIRN_FLOAT;
    p[1].d = -1.5e300;
    p[2].type = CAIRN_TEXT;
    p[2].s = "h\xc3\xa9llo \xf0\x9f\x98\x80";
    p[2].n = strlen(p[2].s);
    p[3].type = CAIRN_BLOB;
    p[3].s = blob;
    p[3].n = sizeof blob;
    p[4].type = CAIRN_NULL;
    p[5].type = CAIRN_INTEGER;
    p[5].i = 42;
    p[5].name = "name";
    p[5].name_len = 4;
}

static void test_round_trip(void **state)
{
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_false(enc.oom);
    assert_int_equal(enc.len % 8, 0); /* libraft needs 8-byte multiples */
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.kind, BATCH_REQUEST);
    assert_int_equal(out.flags, BATCH_TRANSACTION);
    assert_int_equal(out.time_ms, in.time_ms);
    assert_true(out.seed == in.seed);
    assert_int_equal(out.n, 2);
    assert_int_equal(out.stmts[0].sql_len, in.stmts[0].sql_len);
    assert_memory_equal(out.stmts[0].sql, in.stmts[0].sql, in.stmts[0].sql_len);
    assert_int_equal(out.stmts[0].nparams, 6);
    assert_int_equal(out.stmts[0].params[0].type, CAIRN_INTEGER);
    assert_true(out.stmts[0].params[0].i == INT64_MIN);
    assert_true(out.stmts[0].params[1].d == -1.5e300);
    assert_int_equal(out.stmts[0].params[2].n, p[2].n);
    assert_memory_equal(out.stmts[0].params[2].s, p[2].s, p[2].n);
    assert_int_equal(out.stmts[0].params[3].type, CAIRN_BLOB);
    assert_memory_equal(out.stmts[0].params[3].s, p[3].s, 4);
    assert_int_equal(out.stmts[0].params[4].type, CAIRN_NULL);
    assert_null(out.stmts[0].params[0].name);
    assert_int_equal(out.stmts[0].params[5].name_len, 4);
    assert_memory_equal(out.stmts[0].params[5].name, "name", 4);
    assert_int_equal(out.stmts[1].nparams, 0);
    batchFree(&out);
    bufFree(&enc);
}

/* The limits every node applies a write under travel in the header: the temporary file
 * limit in the field that was reserved (0 still decodes, as the default). */
static void test_limits_round_trip(void **state)
{
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    in.max_steps = 123456789;
    in.max_length = 1000000;
    in.max_temp_mib = 20;
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_true(out.max_steps == 123456789);
    assert_int_equal(out.max_length, 1000000);
    assert_int_equal(out.max_temp_mib, 20);
    assert_int_equal(enc.p[44], 20); /* docs/FORMAT.md: offset 44, little-endian */
    batchFree(&out);
    bufFree(&enc);
    in.max_temp_mib = 0;
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.max_temp_mib, 0);
    batchFree(&out);
    bufFree(&enc);
    (void)state;
}

static uint16_t headerFlags(const struct buf *enc);

/* Re-encode what enc holds with the header field at off (u32) set to v and the
 * trailer recomputed; the caller frees the copy. */
static unsigned char *withU32(const struct buf *enc, size_t off, uint32_t v)
{
    unsigned char *copy = malloc(enc->len);
    assert_non_null(copy);
    memcpy(copy, enc->p, enc->len);
    for (int k = 0; k < 4; k++) {
        copy[off + (size_t)k] = (unsigned char)(v >> (8 * k));
    }
    uint64_t sum = XXH3_64bits(copy, enc->len - COMMAND_TRAILER_SIZE);
    for (int k = 0; k < 8; k++) {
        copy[enc->len - COMMAND_TRAILER_SIZE + (size_t)k] = (unsigned char)(sum >> (8 * k));
    }
    return copy;
}

/* The growth bound: none is version 3 without the flag, as every entry before it was
 * written (and so decodes as none); the default (1 GiB) is version 3 with flag 0x4000,
 * which builds before version 4 read; any other bound is version 4, at offset 48, with
 * a reserved zero field after it. The flag is the header's, never the batch's. */
static void test_growth_bound_round_trip(void **state)
{
    static const struct {
        uint32_t mib;
        int version;
        bool flag;
    } cases[] = {{0, 3, false}, {COMMAND_GROWTH_V3_MIB, 3, true}, {20, 4, true},
                 {1u << 30, 4, true}};
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_int_equal(COMMAND_GROWTH_V3_MIB << 20, 1u << 30); /* policy.h's default */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fillParams(p);
        makeBatch(&in, p, 6);
        in.max_temp_mib = 7;
        in.max_growth_mib = cases[c].mib;
        bufInit(&enc);
        commandEncode(&in, &enc);
        assert_false(enc.oom);
        assert_int_equal(enc.len % 8, 0);
        assert_int_equal((unsigned char)enc.p[4], cases[c].version);
        assert_int_equal((headerFlags(&enc) & COMMAND_GROWTH) != 0, cases[c].flag);
        if (cases[c].version == 4) {
            assert_int_equal((unsigned char)enc.p[48] | (unsigned char)enc.p[49] << 8 |
                                 (unsigned char)enc.p[50] << 16 |
                                 (uint32_t)(unsigned char)enc.p[51] << 24,
                             cases[c].mib);
        }
        assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
        assert_int_equal(out.max_growth_mib, cases[c].mib);
        assert_int_equal(out.max_temp_mib, 7);
        assert_int_equal(out.flags, BATCH_TRANSACTION);
        assert_int_equal(out.n, 2);
        assert_memory_equal(out.stmts[1].sql, "SELECT 1", 8);
        batchFree(&out);
        for (size_t n = 0; n < enc.len; n++) { /* every truncation, also of version 4 */
            char *copy = malloc(n ? n : 1);
            memcpy(copy, enc.p, n);
            assert_int_equal(commandDecode(copy, n, &out, errmsg), CAIRN_ECORRUPT);
            free(copy);
        }
        bufFree(&enc);
    }
}

/* A version 4 header that contradicts itself is refused: a bound without the flag, the
 * flag without a bound, a reserved field that is not zero. */
static void test_growth_bound_damage_refused(void **state)
{
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char *copy;
    (void)state;
    fillParams(p);
    makeBatch(&in, p, 6);
    in.max_growth_mib = 20;
    bufInit(&enc);
    commandEncode(&in, &enc);
    copy = withU32(&enc, 48, 0);
    assert_int_equal(commandDecode(copy, enc.len, &out, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "offset 48"));
    free(copy);
    copy = withU32(&enc, 52, 1);
    assert_int_equal(commandDecode(copy, enc.len, &out, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "offset 52"));
    free(copy);
    /* flags (offset 6, u16) without 0x4000; the u32 at 4 also holds version and kind */
    copy = withU32(&enc, 4,
                   (unsigned char)enc.p[4] | (unsigned char)enc.p[5] << 8 |
                       (uint32_t)(headerFlags(&enc) & ~COMMAND_GROWTH) << 16);
    assert_int_equal(commandDecode(copy, enc.len, &out, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "offset 48"));
    free(copy);
    bufFree(&enc);
}

static void test_empty_batch(void **state)
{
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    memset(&in, 0, sizeof in);
    in.kind = BATCH_EXECUTE;
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.n, 0);
    batchFree(&out);
    bufFree(&enc);
}

static void test_every_truncation_rejected(void **state)
{
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufInit(&enc);
    commandEncode(&in, &enc);
    for (size_t n = 0; n < enc.len; n++) {
        /* A copy of exactly n bytes, so ASan sees any read past the end. */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, enc.p, n);
        errmsg[0] = '\0';
        assert_int_equal(commandDecode(copy, n, &out, errmsg), CAIRN_ECORRUPT);
        assert_true(errmsg[0] != '\0');
        assert_null(out.stmts);
        free(copy);
    }
    bufFree(&enc);
}

static void test_every_byte_flip_rejected(void **state)
{
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufInit(&enc);
    commandEncode(&in, &enc);
    for (size_t i = 0; i < enc.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            enc.p[i] ^= (char)(1 << bit);
            assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), CAIRN_ECORRUPT);
            enc.p[i] ^= (char)(1 << bit);
        }
    }
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    batchFree(&out);
    bufFree(&enc);
}

static void test_garbage_rejected(void **state)
{
    char junk[256];
    struct batch out;
    char errmsg[CAIRN_ERRMSG_SIZE];
    srand(7);
    for (int round = 0; round < 1000; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            junk[i] = (char)rand();
        }
        if (round % 2 == 0) {
            memcpy(junk, COMMAND_MAGIC, 4);
        }
        assert_int_equal(commandDecode(junk, (size_t)(rand() % 256), &out, errmsg),
                         CAIRN_ECORRUPT);
    }
}

static void test_repeated_sql_stored_once(void **state)
{
    enum { N = 1000 };
    static const char *sqls[2] = {"INSERT INTO t(k, v) VALUES(?, ?)", "UPDATE t SET v = ? WHERE k = ?"};
    struct stmt *stmts = calloc(N, sizeof *stmts);
    struct param *params = calloc(2 * N, sizeof *params);
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    memset(&in, 0, sizeof in);
    in.kind = BATCH_EXECUTE;
    for (size_t i = 0; i < N; i++) {
        /* Runs of the first text, then the two interleaved. */
        const char *sql = sqls[i < N / 2 ? 0 : i % 2];
        char *copy = strdup(sql); /* equal text, distinct pointers */
        stmts[i].sql = copy;
        stmts[i].sql_len = strlen(copy);
        stmts[i].params = &params[2 * i];
        stmts[i].nparams = 2;
        params[2 * i].type = CAIRN_INTEGER;
        params[2 * i].i = (int64_t)i;
        params[2 * i + 1].type = CAIRN_TEXT;
        params[2 * i + 1].s = "value";
        params[2 * i + 1].n = 5;
    }
    in.stmts = stmts;
    in.n = N;
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_false(enc.oom);
    /* Each SQL text once: far less than one copy per statement. */
    assert_true(enc.len < N * strlen(sqls[0]));
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.n, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(out.stmts[i].sql_len, stmts[i].sql_len);
        assert_memory_equal(out.stmts[i].sql, stmts[i].sql, stmts[i].sql_len);
        assert_int_equal(out.stmts[i].nparams, 2);
        assert_true(out.stmts[i].params[0].i == (int64_t)i);
        assert_int_equal(out.stmts[i].params[1].n, 5);
        assert_memory_equal(out.stmts[i].params[1].s, "value", 5);
    }
    batchFree(&out);
    bufFree(&enc);
    for (size_t i = 0; i < N; i++) {
        free((char *)stmts[i].sql);
    }
    free(stmts);
    free(params);
}

/* Logs written by builds that wrote version 1 must still replay. */
static void test_version1_still_decoded(void **state)
{
    struct buf enc;
    struct batch out;
    char errmsg[CAIRN_ERRMSG_SIZE];
    static const char sql[] = "INSERT INTO t VALUES(:v)";
    bufInit(&enc);
    bufPut(&enc, COMMAND_MAGIC, 4);
    bufPutU8(&enc, 1);
    bufPutU8(&enc, BATCH_EXECUTE);
    bufPutU16(&enc, BATCH_TRANSACTION);
    bufPutU64(&enc, 1763776800123ULL);
    bufPutU64(&enc, 99);
    bufPutU32(&enc, 1); /* statements */
    bufPutU32(&enc, 0); /* reserved */
    bufPutU32(&enc, (uint32_t)strlen(sql));
    bufPut(&enc, sql, strlen(sql));
    bufPutU32(&enc, 1);         /* parameters */
    bufPutU8(&enc, CAIRN_TEXT); /* type */
    bufPutU32(&enc, 1);         /* name length */
    bufPut(&enc, "v", 1);
    bufPutU32(&enc, 3);
    bufPut(&enc, "abc", 3);
    while (enc.len % 8 != 0) {
        bufPutU8(&enc, 0);
    }
    bufPutU64(&enc, XXH3_64bits(enc.p, enc.len));
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.kind, BATCH_EXECUTE);
    assert_int_equal(out.flags, BATCH_TRANSACTION);
    assert_true(out.seed == 99);
    assert_int_equal(out.n, 1);
    assert_int_equal(out.stmts[0].sql_len, strlen(sql));
    assert_int_equal(out.stmts[0].nparams, 1);
    assert_int_equal(out.stmts[0].params[0].name_len, 1);
    assert_memory_equal(out.stmts[0].params[0].s, "abc", 3);
    batchFree(&out);
    bufFree(&enc);
}

/* Damage behind a valid checksum (a bug in an encoder, not a flipped bit): every byte
 * set to values that break lengths and counts, the checksum recomputed. The decoder
 * must answer 0 or CAIRN_ECORRUPT, never read out of bounds (ASan watches). */
static void test_structural_damage_with_valid_checksum(void **state)
{
    static const unsigned char values[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufInit(&enc);
    commandEncode(&in, &enc);
    size_t body = enc.len - COMMAND_TRAILER_SIZE;
    for (size_t i = 4; i < body; i++) {
        for (size_t v = 0; v < sizeof values; v++) {
            unsigned char *copy = malloc(enc.len);
            memcpy(copy, enc.p, enc.len);
            copy[i] = values[v];
            uint64_t sum = XXH3_64bits(copy, body);
            for (int k = 0; k < 8; k++) {
                copy[body + k] = (unsigned char)(sum >> (8 * k));
            }
            int rv = commandDecode(copy, enc.len, &out, errmsg);
            assert_true(rv == 0 || rv == CAIRN_ECORRUPT);
            if (rv == 0) {
                batchFree(&out);
            } else {
                assert_null(out.stmts);
            }
            free(copy);
        }
    }
    bufFree(&enc);
}

/* A bulk insert of n rows: key i and a 100-byte text, repetitive words or random
 * bytes. The caller frees *stmts, *params and *texts. */
static void makeBulk(struct batch *b, size_t n, bool random_bytes, struct stmt **stmts,
                     struct param **params, char **texts)
{
    static const char *words[] = {"order", "shipped", "pending", "invoice", "paris", "total"};
    static const char sql[] = "INSERT INTO t(k, v) VALUES(?, ?)";
    *stmts = calloc(n, sizeof **stmts);
    *params = calloc(2 * n, sizeof **params);
    *texts = malloc(n * 100);
    assert_non_null(*stmts);
    assert_non_null(*params);
    assert_non_null(*texts);
    memset(b, 0, sizeof *b);
    b->kind = BATCH_EXECUTE;
    b->flags = BATCH_TRANSACTION;
    b->time_ms = 1763776800123LL;
    b->seed = 42;
    srand(11);
    for (size_t i = 0; i < n; i++) {
        char *t = *texts + 100 * i;
        for (size_t j = 0; j < 100;) {
            if (random_bytes) {
                t[j++] = (char)rand();
                continue;
            }
            const char *w = words[rand() % 6];
            for (size_t k = 0; w[k] != '\0' && j < 100; k++) {
                t[j++] = w[k];
            }
            if (j < 100) {
                t[j++] = ' ';
            }
        }
        (*stmts)[i].sql = sql;
        (*stmts)[i].sql_len = sizeof sql - 1;
        (*stmts)[i].params = &(*params)[2 * i];
        (*stmts)[i].nparams = 2;
        (*params)[2 * i].type = CAIRN_INTEGER;
        (*params)[2 * i].i = (int64_t)i * 7919;
        (*params)[2 * i + 1].type = random_bytes ? CAIRN_BLOB : CAIRN_TEXT;
        (*params)[2 * i + 1].s = t;
        (*params)[2 * i + 1].n = 100;
    }
    b->stmts = *stmts;
    b->n = n;
}

static uint16_t headerFlags(const struct buf *enc)
{
    return (uint16_t)((unsigned char)enc->p[6] | ((unsigned char)enc->p[7] << 8));
}

/* Rewrite the trailer after the bytes before it were changed on purpose. */
static void resum(unsigned char *p, size_t n)
{
    uint64_t sum = XXH3_64bits(p, n - COMMAND_TRAILER_SIZE);
    for (int k = 0; k < 8; k++) {
        p[n - COMMAND_TRAILER_SIZE + k] = (unsigned char)(sum >> (8 * k));
    }
}

/* A bulk request's body is stored compressed, decodes to the same statements, and the
 * decoded batch does not carry the compression flag. */
static void test_bulk_body_compressed(void **state)
{
    enum { N = 10000 };
    struct stmt *stmts;
    struct param *params;
    char *texts;
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    makeBulk(&in, N, false, &stmts, &params, &texts);
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_false(enc.oom);
    assert_true(headerFlags(&enc) & COMMAND_ZSTD);
    assert_int_equal(enc.len % 8, 0);
    assert_true(enc.len < (size_t)N * 100 / 2); /* six words compress well */
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.flags, BATCH_TRANSACTION);
    assert_int_equal(out.kind, BATCH_EXECUTE);
    assert_true(out.time_ms == in.time_ms && out.seed == in.seed);
    assert_int_equal(out.n, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(out.stmts[i].nparams, 2);
        assert_true(out.stmts[i].params[0].i == (int64_t)i * 7919);
        assert_int_equal(out.stmts[i].params[1].type, CAIRN_TEXT);
        assert_int_equal(out.stmts[i].params[1].n, 100);
        assert_memory_equal(out.stmts[i].params[1].s, texts + 100 * i, 100);
    }
    batchFree(&out);
    bufFree(&enc);
    free(stmts);
    free(params);
    free(texts);
}

/* A bulk request under a bound other than the default (version 4) is compressed after
 * the whole header: the frame began at offset 48, over the bound and the reserved
 * field, and every such entry of cairnd --max-write-growth N was refused as damaged
 * ("reserved header field at offset 52 is not zero"), on every node. */
static void test_bulk_body_compressed_with_growth_bound(void **state)
{
    enum { N = 2000 };
    struct stmt *stmts;
    struct param *params;
    char *texts;
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    makeBulk(&in, N, false, &stmts, &params, &texts);
    in.max_growth_mib = 4;
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_false(enc.oom);
    assert_int_equal((unsigned char)enc.p[4], 4);
    assert_true(headerFlags(&enc) & COMMAND_ZSTD);
    assert_true(headerFlags(&enc) & COMMAND_GROWTH);
    assert_int_equal((unsigned char)enc.p[48], 4); /* the bound, not the frame */
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.max_growth_mib, 4);
    assert_int_equal(out.flags, BATCH_TRANSACTION);
    assert_int_equal(out.n, N);
    for (size_t i = 0; i < N; i++) {
        assert_true(out.stmts[i].params[0].i == (int64_t)i * 7919);
        assert_memory_equal(out.stmts[i].params[1].s, texts + 100 * i, 100);
    }
    batchFree(&out);
    bufFree(&enc);
    free(stmts);
    free(params);
    free(texts);
}

/* Small commands, and bodies that do not shrink by an eighth, stay as they are. */
static void test_small_or_random_body_stays_plain(void **state)
{
    struct stmt *stmts;
    struct param *params;
    char *texts;
    struct param p[6];
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_false(headerFlags(&enc) & COMMAND_ZSTD);
    bufFree(&enc);

    makeBulk(&in, 1000, true, &stmts, &params, &texts);
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_true(enc.len > COMMAND_ZSTD_MIN);
    assert_false(headerFlags(&enc) & COMMAND_ZSTD);
    assert_int_equal(commandDecode(enc.p, enc.len, &out, errmsg), 0);
    assert_int_equal(out.n, 1000);
    assert_memory_equal(out.stmts[999].params[1].s, texts + 99900, 100);
    batchFree(&out);
    bufFree(&enc);
    free(stmts);
    free(params);
    free(texts);
}

/* Damage inside a compressed body that the checksum cannot see (the trailer rewritten
 * to match): a cut frame, a frame that claims another size, garbage after the frame,
 * a frame whose content is not statements, the flag on a plain body. Each is refused
 * with a message, never decoded into something else, never a crash. */
static void test_compressed_damage_refused(void **state)
{
    struct stmt *stmts;
    struct param *params;
    char *texts;
    struct batch in;
    struct batch out;
    struct buf enc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    makeBulk(&in, 200, false, &stmts, &params, &texts); /* 23 KiB: compressed */
    bufInit(&enc);
    commandEncode(&in, &enc);
    assert_true(headerFlags(&enc) & COMMAND_ZSTD);
    size_t n = enc.len;
    unsigned char *copy = malloc(n + 64);
    assert_non_null(copy);

    /* The frame cut short by 8, 16, ... bytes (the whole stays a multiple of 8). */
    for (size_t cut = 8; cut + COMMAND_HEADER_SIZE + COMMAND_TRAILER_SIZE < n; cut += 8) {
        memcpy(copy, enc.p, n - cut - COMMAND_TRAILER_SIZE);
        resum(copy, n - cut);
        assert_int_equal(commandDecode(copy, n - cut, &out, errmsg), CAIRN_ECORRUPT);
        assert_null(out.stmts);
    }
    /* Eight bytes of garbage after the frame: more than padding. */
    memcpy(copy, enc.p, n - COMMAND_TRAILER_SIZE);
    memset(copy + n - COMMAND_TRAILER_SIZE, 0xab, 8);
    resum(copy, n + 8);
    assert_int_equal(commandDecode(copy, n + 8, &out, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "unexpected bytes"));
    /* Every byte of the frame set to each of a few values. */
    static const unsigned char values[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    for (size_t i = COMMAND_HEADER_SIZE; i < n - COMMAND_TRAILER_SIZE; i++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(copy, enc.p, n);
            if (copy[i] == values[v]) {
                continue;
            }
            copy[i] = values[v];
            resum(copy, n);
            int rv = commandDecode(copy, n, &out, errmsg);
            assert_true(rv == 0 || rv == CAIRN_ECORRUPT);
            if (rv == 0) {
                batchFree(&out);
            } else {
                assert_null(out.stmts);
                assert_true(errmsg[0] != '\0');
            }
        }
    }
    /* The flag set on a plain body. */
    struct param p[6];
    fillParams(p);
    makeBatch(&in, p, 6);
    bufFree(&enc);
    bufInit(&enc);
    commandEncode(&in, &enc);
    memcpy(copy, enc.p, enc.len);
    copy[7] |= COMMAND_ZSTD >> 8;
    resum(copy, enc.len);
    assert_int_equal(commandDecode(copy, enc.len, &out, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "zstd frame"));
    free(copy);
    bufFree(&enc);
    free(stmts);
    free(params);
    free(texts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_limits_round_trip),
        cmocka_unit_test(test_growth_bound_round_trip),
        cmocka_unit_test(test_growth_bound_damage_refused),
        cmocka_unit_test(test_bulk_body_compressed_with_growth_bound),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_every_truncation_rejected),
        cmocka_unit_test(test_every_byte_flip_rejected),
        cmocka_unit_test(test_garbage_rejected),
        cmocka_unit_test(test_repeated_sql_stored_once),
        cmocka_unit_test(test_version1_still_decoded),
        cmocka_unit_test(test_structural_damage_with_valid_checksum),
        cmocka_unit_test(test_bulk_body_compressed),
        cmocka_unit_test(test_small_or_random_body_stays_plain),
        cmocka_unit_test(test_compressed_damage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
