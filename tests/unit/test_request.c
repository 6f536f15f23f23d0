/* Unit tests of JSON request parsing (src/request.c): every accepted form and the
 * clear rejection of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cairn.h"
#include "error.h"
#include "buf.h"
#include "request.h"

static int parse(const char *body, struct batch *b, char *errmsg)
{
    errmsg[0] = '\0';
    return requestParse(body, strlen(body), b, errmsg);
}

static void test_plain_strings(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("[\"CREATE TABLE t(x)\", \"INSERT INTO t VALUES(1)\"]", &b, errmsg), 0);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.stmts[0].sql_len, strlen("CREATE TABLE t(x)"));
    assert_memory_equal(b.stmts[1].sql, "INSERT INTO t VALUES(1)", b.stmts[1].sql_len);
    assert_int_equal(b.stmts[0].nparams, 0);
    batchFree(&b);
}

static void test_positional(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(
        parse("[[\"INSERT INTO t VALUES(?,?,?,?,?,?)\", 5, 2.5, \"x\\u00e9\", true, false, "
              "null], [\"SELECT ?\", 9223372036854775807]]",
              &b, errmsg),
        0);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.stmts[0].nparams, 6);
    assert_int_equal(b.stmts[0].params[0].type, CAIRN_INTEGER);
    assert_int_equal(b.stmts[0].params[0].i, 5);
    assert_int_equal(b.stmts[0].params[1].type, CAIRN_FLOAT);
    assert_true(b.stmts[0].params[1].d == 2.5);
    assert_int_equal(b.stmts[0].params[2].type, CAIRN_TEXT);
    assert_int_equal(b.stmts[0].params[2].n, 3);
    assert_memory_equal(b.stmts[0].params[2].s, "x\xc3\xa9", 3);
    assert_int_equal(b.stmts[0].params[3].i, 1);
    assert_int_equal(b.stmts[0].params[4].i, 0);
    assert_int_equal(b.stmts[0].params[5].type, CAIRN_NULL);
    assert_true(b.stmts[1].params[0].i == INT64_MAX);
    batchFree(&b);
}

static void test_named(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(
        parse("[[\"INSERT INTO t VALUES(:name, :age)\", {\"name\": \"fiona\", \"age\": 20}]]", &b,
              errmsg),
        0);
    assert_int_equal(b.stmts[0].nparams, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct param *p = &b.stmts[0].params[i];
        assert_non_null(p->name);
        if (p->name_len == 4) {
            assert_memory_equal(p->name, "name", 4);
            assert_int_equal(p->type, CAIRN_TEXT);
        } else {
            assert_memory_equal(p->name, "age", 3);
            assert_int_equal(p->i, 20);
        }
    }
    batchFree(&b);
}

static void test_sql_only_array(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("[[\"SELECT 1\"]]", &b, errmsg), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.stmts[0].nparams, 0);
    batchFree(&b);
    assert_int_equal(parse("[]", &b, errmsg), 0);
    assert_int_equal(b.n, 0);
    batchFree(&b);
}

static void expectError(const char *body, const char *needle)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse(body, &b, errmsg), CAIRN_EINVAL);
    assert_null(b.stmts);
    if (strstr(errmsg, needle) == NULL) {
        fail_msg("error for %s is \"%s\", expected it to mention \"%s\"", body, errmsg, needle);
    }
}

static void test_malformed(void **state)
{
    expectError("", "invalid JSON");
    expectError("[", "invalid JSON");
    expectError("[\"a\",]", "invalid JSON");
    expectError("{\"q\": \"SELECT 1\"}", "must be a JSON array");
    expectError("\"SELECT 1\"", "must be a JSON array");
    expectError("[1]", "statement 1 has type integer");
    expectError("[\"SELECT 1\", {\"a\": 1}]", "statement 2 has type object");
    expectError("[[]]", "statement 1 is an empty array");
    expectError("[[1, 2]]", "first element must be the SQL string");
    expectError("[\"\"]", "statement 1 is empty");
    expectError("[[\"SELECT ?\", [1, 256]]]", "parameter 1 is an array");
    expectError("[[\"SELECT ?, ?\", 1, {\"a\": 1}]]", "parameter 2 has unsupported type object");
    expectError("[[\"SELECT :a\", {\"a\": [\"x\"]}]]", "parameter \"a\" is an array");
    expectError("[[\"SELECT 1\", 99999999999999999999999]]", "invalid JSON");
    expectError("[\"a\"] trailing", "invalid JSON");
}

/* Parse body[0..len) expecting success; b is filled. */
static void parseOk(const char *body, struct batch *b)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    errmsg[0] = '\0';
    if (requestParse(body, strlen(body), b, errmsg) != 0) {
        fail_msg("parsing %s failed: %s", body, errmsg);
    }
}

static void test_escapes(void **state)
{
    struct batch b;
    const struct param *p;
    parseOk("[[\"SELECT ?, ?, ?\", \"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\", "
            "\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\", \"\\uD834\\uDD1E!\"]]",
            &b);
    p = b.stmts[0].params;
    assert_int_equal(b.stmts[0].nparams, 3);
    assert_int_equal(p[0].type, CAIRN_TEXT);
    assert_int_equal(p[0].n, 17);
    assert_memory_equal(p[0].s, "a\"b\\c/d\be\ff\ng\rh\ti", 17);
    /* A, é (2 bytes), € (3 bytes), U+1F600 (4 bytes, from a surrogate pair) */
    assert_int_equal(p[1].n, 10);
    assert_memory_equal(p[1].s, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10);
    /* U+1D11E from upper-case hex */
    assert_int_equal(p[2].n, 5);
    assert_memory_equal(p[2].s, "\xf0\x9d\x84\x9e!", 5);
    batchFree(&b);

    /* Escapes in the SQL and in names too. */
    parseOk("[[\"SELECT :\\u0078\\n\", {\"\\u0078\": 1}]]", &b);
    assert_int_equal(b.stmts[0].sql_len, 10);
    assert_memory_equal(b.stmts[0].sql, "SELECT :x\n", 10);
    assert_int_equal(b.stmts[0].params[0].name_len, 1);
    assert_memory_equal(b.stmts[0].params[0].name, "x", 1);
    batchFree(&b);

    expectError("[\"a\\x\"]", "invalid JSON");
    expectError("[\"a\\'\"]", "invalid JSON");
    expectError("[\"a\\u12\"]", "invalid JSON");
    expectError("[\"a\\u12G4\"]", "invalid JSON");
    expectError("[\"a\\ud83d\"]", "surrogate");        /* lone high */
    expectError("[\"a\\ud83dx\"]", "surrogate");       /* high, then no escape */
    expectError("[\"a\\ud83d\\u0041\"]", "surrogate"); /* high, then not a low */
    expectError("[\"a\\ude00\"]", "surrogate");        /* lone low */
    expectError("[\"a\\", "invalid JSON");
}

static void test_nul_escape(void **state)
{
    struct batch b;
    /* \u0000 is kept, with the length (tests/system test_text_with_nul_...). */
    parseOk("[[\"SELECT ?\", \"a\\u0000b\\u0000\"]]", &b);
    assert_int_equal(b.stmts[0].params[0].n, 4);
    assert_memory_equal(b.stmts[0].params[0].s, "a\0b\0", 4);
    batchFree(&b);
}

static void test_raw_utf8(void **state)
{
    struct batch b;
    parseOk("[[\"SELECT ?\", \"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"]]", &b);
    assert_int_equal(b.stmts[0].params[0].n, 15);
    assert_memory_equal(b.stmts[0].params[0].s, "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15);
    batchFree(&b);
    /* Largest code point, in a string with escapes too. */
    parseOk("[[\"SELECT ?\", \"\\n\xf4\x8f\xbf\xbf\xc3\xa9\"]]", &b);
    assert_int_equal(b.stmts[0].params[0].n, 7);
    assert_memory_equal(b.stmts[0].params[0].s, "\n\xf4\x8f\xbf\xbf\xc3\xa9", 7);
    batchFree(&b);
    /* Invalid UTF-8 is rejected, as jansson did, with or without escapes. */
    static const char *bad[] = {
        "\xff\xfe",         /* not UTF-8 at all */
        "\x80",             /* lone continuation byte */
        "\xc3",             /* truncated */
        "\xe2\x82",         /* truncated */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* beyond U+10FFFF */
        "\xf8\x88\x80\x80\x80",
    };
    char body[64];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "[\"SELECT %s\"]", bad[i]);
        expectError(body, "UTF-8");
        snprintf(body, sizeof body, "[\"SELECT \\t%s\"]", bad[i]);
        expectError(body, "UTF-8");
    }
}

static void test_control_characters(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    expectError("[\"a\tb\"]", "control character");
    expectError("[\"a\nb\"]", "invalid JSON at line 1");
    expectError("[\"a\x01\"]", "control character");
    /* A NUL byte inside a string, and after the array. */
    assert_int_equal(requestParse("[\"a\0b\"]", 7, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "invalid JSON"));
    assert_null(b.stmts);
    assert_int_equal(requestParse("[\"ab\"]\0", 7, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "invalid JSON"));
    /* Errors say where: line and column. */
    expectError("[\"a\",\n  x]", "line 2, column 3");
}

static void test_integers(void **state)
{
    struct batch b;
    parseOk("[[\"SELECT ?, ?, ?, ?\", -9223372036854775808, 9223372036854775807, -0, 0]]", &b);
    assert_int_equal(b.stmts[0].params[0].type, CAIRN_INTEGER);
    assert_true(b.stmts[0].params[0].i == INT64_MIN);
    assert_true(b.stmts[0].params[1].i == INT64_MAX);
    assert_int_equal(b.stmts[0].params[2].type, CAIRN_INTEGER);
    assert_int_equal(b.stmts[0].params[2].i, 0);
    assert_int_equal(b.stmts[0].params[3].i, 0);
    batchFree(&b);
    expectError("[[\"SELECT ?\", 9223372036854775808]]", "too big");
    expectError("[[\"SELECT ?\", -9223372036854775809]]", "too big");
    expectError("[[\"SELECT ?\", 18446744073709551616]]", "too big");
    expectError("[[\"SELECT ?\", 99999999999999999999999999999999999999]]", "too big");
}

static void test_floats(void **state)
{
    struct batch b;
    parseOk("[[\"SELECT ?, ?, ?, ?, ?\", 1e3, -0.5, 1E-2, 0.0, 2.5e+2]]", &b);
    const struct param *p = b.stmts[0].params;
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(p[i].type, CAIRN_FLOAT);
    }
    assert_true(p[0].d == 1000.0);
    assert_true(p[1].d == -0.5);
    assert_true(p[2].d == 0.01);
    assert_true(p[3].d == 0.0);
    assert_true(p[4].d == 250.0);
    batchFree(&b);

    /* Longer than any stack copy. */
    char body[400];
    strcpy(body, "[[\"SELECT ?\", 1.");
    memset(body + strlen(body), '0', 300);
    strcpy(body + 16 + 300, "1]]");
    parseOk(body, &b);
    assert_int_equal(b.stmts[0].params[0].type, CAIRN_FLOAT);
    assert_true(b.stmts[0].params[0].d == 1.0);
    batchFree(&b);

    expectError("[[\"SELECT ?\", 1e999]]", "invalid JSON");
}

static void test_invalid_numbers(void **state)
{
    static const char *bad[] = {"01",   "-01", "+1",   ".5",    "1.",       "-",   "1e",  "1e+",
                                "1.e3", "--1", "0x10", "1.5.2", "Infinity", "NaN", "-.5", "00"};
    char body[64];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "[[\"SELECT ?\", %s]]", bad[i]);
        expectError(body, "invalid JSON");
    }
}

static void test_named_duplicates(void **state)
{
    struct batch b;
    char body[8192];
    size_t off;
    expectError("[[\"SELECT :a\", {\"a\": 1, \"a\": 2}]]", "duplicate");
    expectError("[[\"SELECT :a\", {\"a\": 1, \"b\": 2, \"\\u0061\": 3}]]", "duplicate");
    expectError("[[\"SELECT :a\", {\"\": 1}]]", "empty name");
    {
        /* A name as long as binding allows is kept; one byte more is refused. */
        char name[PARAM_NAME_MAX + 2];
        char msg[CAIRN_ERRMSG_SIZE];
        char *big = malloc(2 * PARAM_NAME_MAX + 64);
        assert_non_null(big);
        memset(name, 'n', sizeof name);
        name[PARAM_NAME_MAX] = '\0';
        snprintf(big, 2 * PARAM_NAME_MAX + 64, "[[\"SELECT :%s\", {\"%s\": 1}]]", name, name);
        assert_int_equal(parse(big, &b, msg), 0);
        assert_int_equal(b.stmts[0].params[0].name_len, PARAM_NAME_MAX);
        batchFree(&b);
        name[PARAM_NAME_MAX] = 'n';
        name[PARAM_NAME_MAX + 1] = '\0';
        snprintf(big, 2 * PARAM_NAME_MAX + 64, "[[\"SELECT 1\", {\"%s\": 1}]]", name);
        expectError(big, "at most 254");
        free(big);
    }

    /* Many keys (past the linear scan): all distinct, then one duplicate. */
    off = (size_t)snprintf(body, sizeof body, "[[\"SELECT 1\", {");
    for (int i = 0; i < 200; i++) {
        off +=
            (size_t)snprintf(body + off, sizeof body - off, "%s\"k%d\": %d", i ? ", " : "", i, i);
    }
    snprintf(body + off, sizeof body - off, "}]]");
    parseOk(body, &b);
    assert_int_equal(b.stmts[0].nparams, 200);
    assert_int_equal(b.stmts[0].params[199].i, 199);
    assert_memory_equal(b.stmts[0].params[199].name, "k199", 4);
    batchFree(&b);
    snprintf(body + off, sizeof body - off, ", \"k123\": 0}]]");
    expectError(body, "duplicate");
}

static void test_trailing(void **state)
{
    struct batch b;
    parseOk(" \t\r\n[ \"SELECT 1\" , [ \"SELECT ?\" , 1 ] ] \n\t", &b);
    assert_int_equal(b.n, 2);
    batchFree(&b);
    expectError("[\"a\"] ]", "invalid JSON");
    expectError("[\"a\"] [\"b\"]", "invalid JSON");
    expectError("[\"a\"]x", "invalid JSON");
    expectError("[\"a\"],", "invalid JSON");
    expectError("[\"a\" \"b\"]", "invalid JSON");
    expectError("[,\"a\"]", "invalid JSON");
    expectError("[\"a\",,\"b\"]", "invalid JSON");
    expectError("\xef\xbb\xbf[\"a\"]", "invalid JSON"); /* a BOM, as jansson */
    expectError("[tru]", "invalid JSON");
    expectError("[[\"SELECT ?\", nul]]", "invalid JSON");
    expectError("[[\"SELECT ?\", truex]]", "invalid JSON");
}

static void test_nesting(void **state)
{
    char body[20000];
    size_t i;
    /* Values of other types where a statement or the body should be. */
    expectError("1", "must be a JSON array");
    expectError("null", "must be a JSON array");
    expectError("[null]", "statement 1 has type null");
    expectError("[\"a\", true]", "statement 2 has type boolean");
    expectError("[2.5]", "statement 1 has type real");
    expectError("[[[\"SELECT 1\"]]]", "first element must be the SQL string, not array");
    expectError("[[\"SELECT :a\", {\"a\": {\"b\": [1, {}]}}]]",
                "parameter \"a\" has unsupported type object");
    /* An object after the SQL is only the named form if alone. */
    expectError("[[\"SELECT ?, ?\", {\"a\": 1}, 2]]", "parameter 1 has unsupported type object");
    expectError("[[\"SELECT ?\", 1, [[[[]]]]]]", "parameter 2 is an array");
    /* Errors of shape in statement order; a syntax error anywhere wins. */
    expectError("[1, [], [1]]", "statement 1 has type integer");
    expectError("[\"a\", [], 1]", "statement 2 is an empty array");
    expectError("[1, \"a\", x]", "invalid JSON");
    expectError("[[\"SELECT ?\", [1, 2]], \"a\" \"b\"]", "invalid JSON");
    expectError("{\"a\": 1, \"b\": }", "invalid JSON");
    expectError("[{\"a\" 1}]", "invalid JSON");
    expectError("[{1: 1}]", "invalid JSON");
    expectError("[[\"SELECT ?\", {\"a\": 1,}]]", "invalid JSON");
    expectError("[[\"SELECT ?\", [1,]]]", "invalid JSON");
    expectError("[]]", "invalid JSON");
    expectError("]", "invalid JSON");
    expectError("}", "invalid JSON");

    /* Deep nesting: checked, not crashed on; too deep is a syntax error. */
    for (i = 0; i < 5000; i++) {
        body[i] = '[';
    }
    for (i = 0; i < 5000; i++) {
        body[5000 + i] = ']';
    }
    body[10000] = '\0';
    expectError(body, "depth");
    memset(body, '[', 10000);
    expectError(body, "invalid JSON");
    /* Deep but within the limit, as a parameter: an error of shape. */
    strcpy(body, "[[\"SELECT ?\", ");
    size_t off = strlen(body);
    for (i = 0; i < 1000; i++) {
        body[off + i] = '[';
    }
    for (i = 0; i < 1000; i++) {
        body[off + 1000 + i] = ']';
    }
    strcpy(body + off + 2000, "]]");
    expectError(body, "parameter 1 is an array");
    /* Empty named object: no parameters. */
    struct batch b;
    parseOk("[[\"SELECT 1\", {}]]", &b);
    assert_int_equal(b.stmts[0].nparams, 0);
    batchFree(&b);
}

/* The BLOB forms rqlite binds (http/request_parser.go): an array of integers 0 to 255,
 * positional or named, and a string in the x'...' form; anything else in an array is
 * refused, naming the statement, the parameter and the element. */
static void expectBlob(const struct param *p, const char *bytes, size_t n)
{
    assert_int_equal(p->type, CAIRN_BLOB);
    assert_int_equal(p->n, n);
    if (n > 0) {
        assert_memory_equal(p->s, bytes, n);
    } else {
        assert_non_null(p->s); /* a NULL pointer would bind NULL */
    }
}

static void test_blobs(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("[[\"INSERT INTO t VALUES(?, ?, ?, ?)\", [83,81,76], [], "
                           "[ 0 , 255, -0 ] , [7]], "
                           "[\"INSERT INTO t VALUES(:a, :b)\", {\"a\": [1, 2], \"b\": \"s\"}]]",
                           &b, errmsg),
                     0);
    assert_int_equal(b.stmts[0].nparams, 4);
    expectBlob(&b.stmts[0].params[0], "SQL", 3);
    expectBlob(&b.stmts[0].params[1], "", 0);
    expectBlob(&b.stmts[0].params[2], "\x00\xff\x00", 3);
    expectBlob(&b.stmts[0].params[3], "\x07", 1);
    for (size_t i = 0; i < 2; i++) {
        const struct param *p = &b.stmts[1].params[i];
        if (p->name[0] == 'a') {
            expectBlob(p, "\x01\x02", 2);
        } else {
            assert_int_equal(p->type, CAIRN_TEXT);
        }
    }
    batchFree(&b);

    /* The x'...' form: either case, blanks around it (Unicode white space, as Go's
     * strings.TrimSpace), escapes in the JSON string; anything else stays text. */
    assert_int_equal(parse("[[\"SELECT ?,?,?,?,?,?,?,?,?,?,?\", \"x'53514C'\", \"X'dEaD'\", "
                           "\"x''\", \" \\t x'00ff'\\n\", \"\\u00a0x'01'\\u3000\", "
                           "\"\\u0078'\\u0041\\u0062'\", "
                           "\"x'abc'\", \"x'zz'\", \"x'\", \"xx'00'\", \"x'00' y\"]]",
                           &b, errmsg),
                     0);
    assert_int_equal(b.stmts[0].nparams, 11);
    expectBlob(&b.stmts[0].params[0], "SQL", 3);
    expectBlob(&b.stmts[0].params[1], "\xde\xad", 2);
    expectBlob(&b.stmts[0].params[2], "", 0);
    expectBlob(&b.stmts[0].params[3], "\x00\xff", 2);
    expectBlob(&b.stmts[0].params[4], "\x01", 1);
    expectBlob(&b.stmts[0].params[5], "\xab", 1);
    for (size_t i = 6; i < 11; i++) {
        assert_int_equal(b.stmts[0].params[i].type, CAIRN_TEXT);
    }
    assert_memory_equal(b.stmts[0].params[6].s, "x'abc'", 6);
    batchFree(&b);

    /* Not bytes: refused, never coerced; the message names statement, parameter and
     * element. */
    expectError("[\"SELECT 1\", [\"SELECT ?\", [1, 256]]]",
                "statement 2: parameter 1 is an array, which binds as a BLOB only when every "
                "element is a byte (an integer from 0 to 255): element 2 is 256");
    expectError("[[\"SELECT ?\", [-1]]]", "element 1 is -1");
    expectError("[[\"SELECT ?\", [1.5]]]", "element 1 is 1.5");
    expectError("[[\"SELECT ?\", [1.0]]]", "element 1 is 1.0");
    expectError("[[\"SELECT ?\", [1e2]]]", "element 1 is 1e2");
    expectError("[[\"SELECT ?\", [1, [2]]]]", "element 2 is an array");
    expectError("[[\"SELECT ?\", [{}]]]", "element 1 is an object");
    expectError("[[\"SELECT ?\", [\"\\u0041\", 1]]]", "element 1 is a string");
    expectError("[[\"SELECT ?\", [null]]]", "element 1 is null");
    expectError("[[\"SELECT ?\", [true]]]", "element 1 is a boolean");
    expectError("[[\"SELECT ?, ?\", 1, [9999999999]]]", "parameter 2 is an array");
    expectError("[[\"SELECT :b\", {\"b\": [1, -5]}]]", "parameter \"b\" is an array");
    /* The first bad element is named; a syntax error anywhere still wins. */
    expectError("[[\"SELECT ?\", [1, 300, \"x\"]]]", "element 2 is 300");
    expectError("[[\"SELECT ?\", [1, 300, x]]]", "invalid JSON");
    expectError("[[\"SELECT ?\", [1 2]]]", "invalid JSON");
    expectError("[[\"SELECT ?\", [1,]]]", "invalid JSON");
    expectError("[[\"SELECT ?\", [99999999999999999999999]]]", "invalid JSON");
}

/* A large array: every byte value, a million elements, and the arena (as long as the
 * body) holds them with strings with escapes in between. */
static void test_blob_large(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t n = 1000000;
    struct buf body;
    bufInit(&body);
    bufPuts(&body, "[[\"SELECT ?, ?, ?\", \"\\u0078'0102'\", [");
    for (size_t i = 0; i < n; i++) {
        bufPrintf(&body, i ? ",%zu" : "%zu", i % 256);
    }
    bufPuts(&body, "], \"\\t\\n\"]]");
    assert_false(body.oom);
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), 0);
    expectBlob(&b.stmts[0].params[0], "\x01\x02", 2);
    assert_int_equal(b.stmts[0].params[1].type, CAIRN_BLOB);
    assert_int_equal(b.stmts[0].params[1].n, n);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)b.stmts[0].params[1].s[i] != i % 256) {
            fail_msg("byte %zu is %u", i, (unsigned char)b.stmts[0].params[1].s[i]);
        }
    }
    assert_int_equal(b.stmts[0].params[2].n, 2);
    assert_memory_equal(b.stmts[0].params[2].s, "\t\n", 2);
    batchFree(&b);
    /* Densest form: one digit and one comma an element. */
    bufReset(&body);
    bufPuts(&body, "[[\"SELECT ?\",[");
    for (size_t i = 0; i < n; i++) {
        bufPuts(&body, i ? ",7" : "7");
    }
    bufPuts(&body, "]]]");
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), 0);
    assert_int_equal(b.stmts[0].params[0].n, n);
    batchFree(&b);
    bufFree(&body);
}

/* A parameter costs far more parsed (a struct param) than in the body ("0,"): past a
 * million in one request the request is refused, whatever their form, before the rest
 * is kept; at a million it is taken. */
static void test_params_bounded(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t max = 1000000;
    struct buf body;
    bufInit(&body);
    /* Positional, split over statements: max in all is taken. */
    bufPuts(&body, "[[\"SELECT ?\"");
    for (size_t i = 0; i < max / 2; i++) {
        bufPuts(&body, ",0");
    }
    bufPuts(&body, "],[\"SELECT ?\"");
    for (size_t i = 0; i < max / 2; i++) {
        bufPuts(&body, ",1");
    }
    bufPuts(&body, "]]");
    assert_false(body.oom);
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), 0);
    assert_int_equal(b.stmts[0].nparams + b.stmts[1].nparams, max);
    batchFree(&b);
    /* One more is refused, saying why. */
    bufReset(&body);
    bufPuts(&body, "[[\"SELECT ?\"");
    for (size_t i = 0; i < max + 1; i++) {
        bufPuts(&body, ",0");
    }
    bufPuts(&body, "]]");
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "more than 1000000 parameters"));
    /* Named ones count too, and the rest of the body is still read for its syntax. */
    bufReset(&body);
    bufPuts(&body, "[[\"SELECT :a\", {");
    for (size_t i = 0; i < max + 1; i++) {
        bufPrintf(&body, i ? ",\"a%zu\":0" : "\"a%zu\":0", i);
    }
    bufPuts(&body, "}]]");
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "more than 1000000 parameters"));
    body.len -= 2; /* "]]" */
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "invalid JSON"));
    bufFree(&body);
}

/* Every statement costs memory at each stage whatever its text: past
 * REQUEST_STATEMENTS_MAX in one request, of any form, the request is refused saying so;
 * at the limit it is taken. The rest of the body is still read for its syntax. */
static void test_statements_bounded(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct buf body;
    bufInit(&body);
    bufPutc(&body, '[');
    for (size_t i = 0; i < REQUEST_STATEMENTS_MAX; i++) {
        bufPuts(&body, i % 2 ? ",\"SELECT 1\""
                             : (i ? ",[\"SELECT ?\",1]" : "[\"SELECT ?\",1]"));
    }
    bufPutc(&body, ']');
    assert_false(body.oom);
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), 0);
    assert_int_equal(b.n, REQUEST_STATEMENTS_MAX);
    batchFree(&b);
    body.len--; /* "]" */
    bufPuts(&body, ",[\"SELECT 2\"]]");
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "the request has more than 100000 statements"));
    assert_int_equal(b.n, 0);
    body.len--; /* "]" */
    assert_int_equal(requestParse(body.p, body.len, &b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "invalid JSON"));
    bufFree(&body);
}

static const char sample[] =
    "[\"CREATE TABLE t(a, b)\", [\"INSERT INTO t VALUES(?, ?)\", 1, \"x\\u00e9\\n\"], "
    "[\"INSERT INTO t VALUES(:a, :b)\", {\"a\": -2.5e3, \"b\": null}],\n"
    " [\"SELECT ?\", true, false, -9223372036854775808, \"\\ud83d\\ude00\"]]";

static void test_truncated(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    size_t len = strlen(sample);
    assert_int_equal(requestParse(sample, len, &b, errmsg), 0);
    assert_int_equal(b.n, 4);
    batchFree(&b);
    for (size_t n = 0; n < len; n++) {
        /* A copy of exactly n bytes, so that ASan sees any read past the end. */
        char *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, sample, n);
        errmsg[0] = '\0';
        if (requestParse(copy, n, &b, errmsg) != CAIRN_EINVAL) {
            fail_msg("a body truncated to %zu bytes was accepted", n);
        }
        assert_null(b.stmts);
        assert_non_null(strstr(errmsg, "invalid JSON"));
        free(copy);
    }
}

static void test_mutations(void **state)
{
    static const char alphabet[] = "[]{}\",:\\u0123456789-+.eEtrufalsn \n\t\x01\x7f\xc3\xff";
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    size_t len = strlen(sample);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int ok = 0;
    for (int round = 0; round < 10000; round++) {
        char *copy = malloc(len);
        int flips;
        assert_non_null(copy);
        memcpy(copy, sample, len);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        flips = 1 + (int)(x % 4);
        for (int f = 0; f < flips; f++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % len);
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            copy[at] = (x & 1) ? (char)(x >> 8) : alphabet[(x >> 8) % (sizeof alphabet - 1)];
        }
        errmsg[0] = '\0';
        int rv = requestParse(copy, len, &b, errmsg);
        if (rv == 0) {
            ok++;
            for (size_t i = 0; i < b.n; i++) {
                assert_non_null(b.stmts[i].sql);
            }
            batchFree(&b);
        } else {
            assert_int_equal(rv, CAIRN_EINVAL);
            assert_null(b.stmts);
            assert_true(errmsg[0] != '\0');
        }
        free(copy);
    }
    /* Some mutations keep the body valid (inside strings, say). */
    assert_true(ok > 0);
}

static void test_single(void **state)
{
    struct batch b;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(requestSingle("SELECT 1", &b, errmsg), 0);
    assert_int_equal(b.n, 1);
    assert_memory_equal(b.stmts[0].sql, "SELECT 1", 8);
    batchFree(&b);
    assert_int_equal(requestSingle("", &b, errmsg), CAIRN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_strings),
        cmocka_unit_test(test_positional),
        cmocka_unit_test(test_named),
        cmocka_unit_test(test_sql_only_array),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_blob_large),
        cmocka_unit_test(test_params_bounded),
        cmocka_unit_test(test_statements_bounded),
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_raw_utf8),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_invalid_numbers),
        cmocka_unit_test(test_named_duplicates),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_nul_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
