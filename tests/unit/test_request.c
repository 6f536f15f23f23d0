/* Unit tests of JSON request parsing (src/request.c): every accepted form and the
 * clear rejection of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cairn.h"
#include "error.h"
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
    assert_int_equal(parse("[\"CREATE TABLE t(x)\", \"INSERT INTO t VALUES(1)\"]", &b, errmsg),
                     0);
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
        parse("[[\"INSERT INTO t VALUES(:name, :age)\", {\"name\": \"fiona\", \"age\": 20}]]",
              &b, errmsg),
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
    expectError("[[\"SELECT ?\", [1, 2]]]", "parameter 1 has unsupported type array");
    expectError("[[\"SELECT ?, ?\", 1, {\"a\": 1}]]", "parameter 2 has unsupported type object");
    expectError("[[\"SELECT :a\", {\"a\": [1]}]]", "parameter \"a\" has unsupported type array");
    expectError("[[\"SELECT 1\", 99999999999999999999999]]", "invalid JSON");
    expectError("[\"a\"] trailing", "invalid JSON");
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
        cmocka_unit_test(test_plain_strings), cmocka_unit_test(test_positional),
        cmocka_unit_test(test_named),         cmocka_unit_test(test_sql_only_array),
        cmocka_unit_test(test_malformed),     cmocka_unit_test(test_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
