/* Unit tests of result encoding (src/result.c, src/lib/buf.c): every SQLite type,
 * unicode and escapes, rqlite's shapes (plain, associative, errors, writes), base64,
 * doubles, and the pretty printer. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "cairn.h"
#include "result.h"

static struct cairn_result *sample(void)
{
    static const char *const names[] = {"i", "r", "t", "b", "n"};
    static const char *const decl[] = {"INTEGER", "REAL", "TEXT", NULL, NULL};
    static const unsigned char blob[] = {0x00, 0xff, 0x10};
    const char *text = "h\xc3\xa9 \"q\" \\ \n\t\x01 \xf0\x9f\x98\x80 \xe4\xb8\xad";
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    assert_int_equal(resultColumns(st, 5, names, decl), 0);
    row = resultRow(st);
    row[0].type = CAIRN_INTEGER;
    row[0].i = INT64_MIN;
    row[1].type = CAIRN_FLOAT;
    row[1].d = 0.1;
    row[2].type = CAIRN_TEXT;
    assert_int_equal(resultBytes(st, &row[2], text, strlen(text)), 0);
    row[3].type = CAIRN_BLOB;
    assert_int_equal(resultBytes(st, &row[3], blob, sizeof blob), 0);
    row[4].type = CAIRN_NULL;
    resultFinishTypes(st);
    st->time = 0.5;
    return r;
}

static char *encode(const struct cairn_result *r, unsigned flags, double t)
{
    struct buf b;
    bufInit(&b);
    resultToJson(r, flags, t, &b);
    return bufDetach(&b, NULL);
}

static void test_every_type(void **state)
{
    struct cairn_result *r = sample();
    char *json = encode(r, 0, 0);
    assert_string_equal(
        json, "{\"results\":[{\"columns\":[\"i\",\"r\",\"t\",\"b\",\"n\"],"
              "\"types\":[\"integer\",\"real\",\"text\",\"blob\",\"\"],"
              "\"values\":[[-9223372036854775808,0.1,"
              "\"h\xc3\xa9 \\\"q\\\" \\\\ \\n\\t\\u0001 \xf0\x9f\x98\x80 \xe4\xb8\xad\","
              "\"AP8Q\",null]]}]}");
    free(json);
    /* The C API sees the same values. */
    assert_int_equal(cairn_result_count(r), 1);
    assert_int_equal(cairn_result_columns(r, 0), 5);
    assert_string_equal(cairn_result_column_type(r, 0, 0), "integer");
    assert_true(cairn_result_int64(r, 0, 0, 0) == INT64_MIN);
    assert_true(cairn_result_double(r, 0, 0, 1) == 0.1);
    assert_int_equal(cairn_result_type(r, 0, 0, 3), CAIRN_BLOB);
    size_t len;
    const unsigned char *blob = cairn_result_blob(r, 0, 0, 3, &len);
    assert_int_equal(len, 3);
    assert_int_equal(blob[1], 0xff);
    assert_int_equal(cairn_result_type(r, 0, 0, 4), CAIRN_NULL);
    assert_null(cairn_result_text(r, 0, 5, 0, NULL)); /* out of range */
    cairn_result_free(r);
}

static void test_associative_and_timings(void **state)
{
    struct cairn_result *r = sample();
    char *json = encode(r, RESULT_JSON_ASSOCIATIVE | RESULT_JSON_TIMINGS, 0.25);
    assert_non_null(strstr(json, "\"types\":{\"i\":\"integer\",\"r\":\"real\""));
    assert_non_null(strstr(json, "\"rows\":[{\"i\":-9223372036854775808,\"r\":0.1,"));
    assert_non_null(strstr(json, "\"b\":\"AP8Q\",\"n\":null}],\"time\":0.5}"));
    assert_non_null(strstr(json, "],\"time\":0.25}"));
    free(json);
    cairn_result_free(r);
}

static void test_empty_query_and_writes(void **state)
{
    static const char *const names[] = {"id"};
    static const char *const decl[] = {"INTEGER"};
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    char *json;
    resultColumns(st, 1, names, decl);
    resultFinishTypes(st);
    st = resultAdd(r);
    st->last_insert_id = 7;
    st->rows_affected = 2;
    st = resultAdd(r);
    resultError(st, "no such table: x");
    json = encode(r, 0, 0);
    assert_string_equal(json, "{\"results\":[{\"columns\":[\"id\"],\"types\":[\"integer\"]},"
                              "{\"last_insert_id\":7,\"rows_affected\":2},"
                              "{\"error\":\"no such table: x\"}]}");
    free(json);
    json = encode(r, RESULT_JSON_ASSOCIATIVE, 0);
    assert_non_null(strstr(json, "{\"types\":{\"id\":\"integer\"},\"rows\":[]}"));
    free(json);
    assert_string_equal(cairn_result_error(r, 2), "no such table: x");
    assert_int_equal(cairn_result_last_insert_id(r, 1), 7);
    assert_int_equal(cairn_result_rows_affected(r, 1), 2);
    cairn_result_free(r);
}

static void test_base64(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                 {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                 {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        bufInit(&b);
        bufBase64(&b, cases[i].in, strlen(cases[i].in));
        assert_string_equal(b.p ? b.p : "", cases[i].out);
        bufFree(&b);
    }
}

static void test_doubles(void **state)
{
    static const struct {
        double in;
        const char *out;
    } cases[] = {{1.5, "1.5"}, {0.1, "0.1"}, {-2, "-2"}, {1e300, "1e+300"}, {5e-324, "4.94065645841247e-324"},
                 {3.141592653589793, "3.141592653589793"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        bufInit(&b);
        bufJsonDouble(&b, cases[i].in);
        assert_string_equal(b.p, cases[i].out);
        bufFree(&b);
    }
}

static void test_pretty(void **state)
{
    const char *in = "{\"a\":[1,{\"b\":\"x,{}[]\\\"y\"}],\"c\":[]}";
    struct buf b;
    bufInit(&b);
    bufJsonPretty(&b, in, strlen(in));
    assert_string_equal(b.p, "{\n    \"a\": [\n        1,\n        {\n            \"b\": "
                             "\"x,{}[]\\\"y\"\n        }\n    ],\n    \"c\": []\n}");
    bufFree(&b);
}

/* A document indented in parts, cut at every place (inside a string, between a
 * backslash and what it escapes, between '[' and ']'), reads as the whole indented at
 * once. */
static void test_pretty_in_parts(void **state)
{
    const char *in = "{\"a\":[1,{\"b\":\"x,{}[]\\\"y\\\\\"}],\"c\":[],\"d\":{}}";
    size_t n = strlen(in);
    struct buf whole;
    bufInit(&whole);
    bufJsonPretty(&whole, in, n);
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t cut2 = cut; cut2 <= n; cut2++) {
            struct json_pretty st = {0};
            struct buf b;
            bufInit(&b);
            bufJsonPrettyPart(&st, &b, in, cut);
            bufJsonPrettyPart(&st, &b, in + cut, cut2 - cut);
            bufJsonPrettyPart(&st, &b, in + cut2, n - cut2);
            assert_string_equal(b.p, whole.p);
            bufFree(&b);
        }
    }
    bufFree(&whole);
}

/* Values longer than a slice (text of characters of 1 to 4 bytes, a BLOB in both
 * forms) encoded in the smallest parts make the document resultToJson makes, and each
 * value is whole in it: a slice never cuts a character. */
static void test_long_values_in_parts(void **state)
{
    static const char *const names[] = {"t", "b"};
    static const char *const decl[] = {"TEXT", "BLOB"};
    const char unit[] = "a\xc3\xa9\xe2\x98\x83\xf0\x9d\x84\x9e\x01\"";
    size_t ulen = strlen(unit);
    size_t reps = 100000;
    char *text = malloc(ulen * reps);
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    assert_non_null(text);
    for (size_t i = 0; i < reps; i++) {
        memcpy(text + i * ulen, unit, ulen);
    }
    assert_int_equal(resultColumns(st, 2, names, decl), 0);
    row = resultRow(st);
    row[0].type = CAIRN_TEXT;
    assert_int_equal(resultBytes(st, &row[0], text, ulen * reps), 0);
    row[1].type = CAIRN_BLOB;
    assert_int_equal(resultBytes(st, &row[1], text, ulen * reps), 0);
    for (unsigned flags = 0; flags <= RESULT_JSON_BLOB_ARRAY; flags += RESULT_JSON_BLOB_ARRAY) {
        struct buf whole, parts, text_json;
        struct result_json j;
        size_t steps = 0;
        bufInit(&whole);
        bufInit(&parts);
        bufInit(&text_json);
        resultToJson(r, flags, 0, &whole);
        resultJsonInit(&j, r, flags, 0);
        while (!resultJsonNext(&j, &parts, parts.len + 1)) {
            steps++;
        }
        resultJsonEnd(&j);
        assert_true(steps > 10); /* the values went in slices */
        assert_int_equal(parts.len, whole.len);
        assert_memory_equal(parts.p, whole.p, whole.len);
        bufJsonString(&text_json, text, ulen * reps);
        assert_non_null(memmem(whole.p, whole.len, text_json.p, text_json.len));
        if (flags == 0) { /* the BLOB in base64, whole */
            bufReset(&text_json);
            bufPutc(&text_json, '"');
            bufBase64(&text_json, text, ulen * reps);
            bufPutc(&text_json, '"');
            assert_non_null(memmem(whole.p, whole.len, text_json.p, text_json.len));
        } else { /* its last bytes and the end of the array */
            assert_non_null(memmem(whole.p, whole.len, ",1,34]]]}]}", 11));
        }
        bufFree(&whole);
        bufFree(&parts);
        bufFree(&text_json);
    }
    cairn_result_free(r);
    free(text);
}

/* A text that is not UTF-8, a lead byte and then more continuation bytes than a slice
 * holds: a slice is cut where the whole text's decoding is cut, never between the lead
 * and the byte it decodes with. The answer was U+FFFD for both (the part boundary had
 * moved back to just after the lead) where the whole said U+00C0, and the rest went
 * one byte a part. */
static void test_stray_continuation_bytes_in_parts(void **state)
{
    static const char *const names[] = {"t"};
    static const char *const decl[] = {"TEXT"};
    size_t n = 3 * 65536 * 2 + 5; /* two slices and more */
    char *text = malloc(n);
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    struct buf whole, expect;
    struct result_json j;
    size_t steps = 0;
    (void)state;
    assert_non_null(text);
    text[0] = '\xc3';
    memset(text + 1, 0x80, n - 1);
    assert_int_equal(resultColumns(st, 1, names, decl), 0);
    row = resultRow(st);
    row[0].type = CAIRN_TEXT;
    assert_int_equal(resultBytes(st, &row[0], text, n), 0);
    bufInit(&whole);
    bufInit(&expect);
    resultJsonInit(&j, r, 0, 0);
    while (!resultJsonNext(&j, &whole, whole.len + 1)) {
        steps++;
    }
    resultJsonEnd(&j);
    assert_true(steps < 20); /* a slice at a time, not a byte */
    bufJsonString(&expect, text, n); /* the text encoded whole */
    assert_memory_equal(expect.p, "\"\xc3\x80\xef\xbf\xbd", 6);
    assert_non_null(memmem(whole.p, whole.len, expect.p, expect.len));
    bufFree(&whole);
    bufFree(&expect);
    cairn_result_free(r);
    free(text);
}

/* ?blob_array: every byte value as a JSON number; the empty BLOB as []; other types and
 * the associative form unchanged. */
static void test_blob_array(void **state)
{
    static const char *const names[] = {"b", "e", "t"};
    static const char *const decl[] = {"BLOB", NULL, NULL};
    unsigned char all[256];
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    struct buf want;
    char *json;
    for (int i = 0; i < 256; i++) {
        all[i] = (unsigned char)i;
    }
    assert_int_equal(resultColumns(st, 3, names, decl), 0);
    row = resultRow(st);
    row[0].type = CAIRN_BLOB;
    assert_int_equal(resultBytes(st, &row[0], all, sizeof all), 0);
    row[1].type = CAIRN_BLOB;
    assert_int_equal(resultBytes(st, &row[1], "", 0), 0);
    row[2].type = CAIRN_TEXT;
    assert_int_equal(resultBytes(st, &row[2], "AP8=", 4), 0);
    resultFinishTypes(st);
    bufInit(&want);
    bufPuts(&want, "{\"results\":[{\"columns\":[\"b\",\"e\",\"t\"],"
                   "\"types\":[\"blob\",\"blob\",\"text\"],\"values\":[[[");
    for (int i = 0; i < 256; i++) {
        bufPrintf(&want, i ? ",%d" : "%d", i);
    }
    bufPuts(&want, "],[],\"AP8=\"]]}]}");
    json = encode(r, RESULT_JSON_BLOB_ARRAY, 0);
    assert_string_equal(json, want.p);
    free(json);
    json = encode(r, RESULT_JSON_BLOB_ARRAY | RESULT_JSON_ASSOCIATIVE, 0);
    assert_non_null(strstr(json, "\"rows\":[{\"b\":[0,1,2,"));
    assert_non_null(strstr(json, ",254,255],\"e\":[],\"t\":\"AP8=\"}]"));
    free(json);
    json = encode(r, 0, 0); /* base64 without it */
    assert_non_null(strstr(json, "\"values\":[[\"AAECAw"));
    free(json);
    bufFree(&want);
    cairn_result_free(r);
}

/* ?qualify_columns: "table.column" for a column with a table, the plain name for an
 * expression, in both forms; keys of the associative form are then distinct. */
static void test_qualify_columns(void **state)
{
    static const char *const names[] = {"id", "id", "n", "x\"y"};
    static const char *const decl[] = {"INTEGER", "INTEGER", NULL, "TEXT"};
    static const char *const tables[] = {"t", "u", NULL, "we\"ird"};
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    char *json;
    assert_int_equal(resultColumns(st, 4, names, decl), 0);
    assert_int_equal(resultColumnTables(st, tables), 0);
    row = resultRow(st);
    for (int i = 0; i < 4; i++) {
        row[i].type = CAIRN_INTEGER;
        row[i].i = i + 1;
    }
    resultFinishTypes(st);
    json = encode(r, RESULT_JSON_QUALIFY, 0);
    assert_string_equal(json, "{\"results\":[{\"columns\":[\"t.id\",\"u.id\",\"n\","
                              "\"we\\\"ird.x\\\"y\"],\"types\":[\"integer\",\"integer\","
                              "\"integer\",\"text\"],\"values\":[[1,2,3,4]]}]}");
    free(json);
    json = encode(r, RESULT_JSON_QUALIFY | RESULT_JSON_ASSOCIATIVE, 0);
    assert_string_equal(json, "{\"results\":[{\"types\":{\"t.id\":\"integer\",\"u.id\":"
                              "\"integer\",\"n\":\"integer\",\"we\\\"ird.x\\\"y\":\"text\"},"
                              "\"rows\":[{\"t.id\":1,\"u.id\":2,\"n\":3,\"we\\\"ird.x\\\"y\":4}]}]}");
    free(json);
    json = encode(r, RESULT_JSON_ASSOCIATIVE, 0); /* plain names without it */
    assert_non_null(strstr(json, "\"rows\":[{\"id\":1,\"id\":2,\"n\":3,"));
    free(json);
    /* The C API keeps the plain names. */
    assert_string_equal(cairn_result_column_name(r, 0, 1), "id");
    cairn_result_free(r);
}

/* A later statement of the same string with more columns than the first: its rows
 * ran past value slots sized for the first statement's columns. */
static void test_clear_columns(void **state)
{
    static const char *const one[] = {"a"};
    static const char *const five[] = {"a", "b", "c", "d", "e"};
    static const char *const decl[] = {NULL, NULL, NULL, NULL, NULL};
    static const char *const tables[] = {"t", NULL, NULL, NULL, NULL};
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    struct rvalue *row;
    assert_int_equal(resultColumns(st, 1, one, decl), 0);
    assert_int_equal(resultColumnTables(st, tables), 0);
    row = resultRow(st);
    row->type = CAIRN_TEXT;
    assert_int_equal(resultBytes(st, row, "old", 3), 0);
    resultClearColumns(st);
    assert_int_equal(st->ncol, 0);
    assert_int_equal(st->nrows, 0);
    assert_null(st->tables);
    assert_int_equal(resultColumns(st, 5, five, decl), 0);
    for (int k = 0; k < 20; k++) {
        row = resultRow(st);
        assert_non_null(row);
        for (int i = 0; i < 5; i++) {
            row[i].type = CAIRN_INTEGER;
            row[i].i = k * 5 + i;
        }
    }
    resultFinishTypes(st);
    assert_int_equal(cairn_result_rows(r, 0), 20);
    assert_true(cairn_result_int64(r, 0, 19, 4) == 99);
    assert_int_equal(st->arena.len, 0);
    cairn_result_free(r);
}

/* A statement's rows and bytes grow by doubling; once it has run, resultTrim gives the
 * room they did not use back, and the values read the same. */
static void test_trim(void **state)
{
    static const char *const names[] = {"a", "b"};
    static const char *const decl[] = {NULL, NULL};
    struct cairn_result *r = resultNew();
    struct rstmt *st = resultAdd(r);
    char text[600];
    (void)state;
    memset(text, 'x', sizeof text);
    assert_int_equal(resultColumns(st, 2, names, decl), 0);
    for (int k = 0; k < 1000; k++) {
        struct rvalue *row = resultRow(st);
        assert_non_null(row);
        row[0].type = CAIRN_INTEGER;
        row[0].i = k;
        row[1].type = CAIRN_TEXT;
        assert_int_equal(resultBytes(st, &row[1], text, 100 + (size_t)(k % 7)), 0);
    }
    assert_true(st->cap > st->nrows || st->arena.cap > st->arena.len + 1);
    resultTrim(st);
    assert_int_equal(st->cap, st->nrows);
    assert_int_equal(st->arena.cap, st->arena.len + 1);
    assert_true(cairn_result_int64(r, 0, 999, 0) == 999);
    assert_int_equal(strlen(cairn_result_text(r, 0, 999, 1, NULL)), 100 + 999 % 7);
    /* One row of one value: a block the size of the row, a block the size of the text. */
    st = resultAdd(r);
    assert_int_equal(resultColumns(st, 2, names, decl), 0);
    {
        struct rvalue *row = resultRow(st);
        row[0].type = CAIRN_INTEGER;
        row[0].i = 1;
        row[1].type = CAIRN_TEXT;
        assert_int_equal(resultBytes(st, &row[1], text, 540), 0);
    }
    assert_int_equal(st->cap, 1);
    resultTrim(st);
    assert_int_equal(st->arena.cap, 542); /* the text, its NUL, the buffer's NUL */
    assert_int_equal(strlen(cairn_result_text(r, 1, 0, 1, NULL)), 540);
    cairn_result_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),     cmocka_unit_test(test_associative_and_timings),
        cmocka_unit_test(test_empty_query_and_writes), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_doubles),        cmocka_unit_test(test_pretty),
        cmocka_unit_test(test_blob_array),     cmocka_unit_test(test_qualify_columns),
        cmocka_unit_test(test_clear_columns),  cmocka_unit_test(test_pretty_in_parts),
        cmocka_unit_test(test_long_values_in_parts),
        cmocka_unit_test(test_stray_continuation_bytes_in_parts),
        cmocka_unit_test(test_trim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
