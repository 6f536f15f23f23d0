/* Tests of the embedded API (include/cairn.h) on a real single node in a temporary
 * directory: writes through the Raft log, reads at every level, transactions,
 * read-only enforcement, the data-directory lock, and persistence across a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn.h"

static char dir[64];

static cairn *openNode(void)
{
    struct cairn_config cfg;
    cairn *db = NULL;
    cairn_config_init(&cfg);
    cfg.data_dir = dir;
    int rc = cairn_open(&cfg, &db);
    if (rc != CAIRN_OK) {
        fail_msg("open %s: %s", dir, cairn_errmsg(db));
    }
    return db;
}

static int64_t count(cairn *db, enum cairn_level level)
{
    cairn_result *r = NULL;
    assert_int_equal(cairn_query(db, "SELECT count(*) FROM t", NULL, 0, level, &r), CAIRN_OK);
    assert_null(cairn_result_error(r, 0));
    int64_t n = cairn_result_int64(r, 0, 0, 0);
    cairn_result_free(r);
    return n;
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/cairn-test-api-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_write_read_levels(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    assert_int_equal(cairn_execute(db, "CREATE TABLE t(x INTEGER, y TEXT)", NULL, 0, &r), 0);
    cairn_result_free(r);
    for (int i = 0; i < 10; i++) {
        cairn_value p[] = {cairn_int(i), cairn_text("v")};
        assert_int_equal(cairn_execute(db, "INSERT INTO t VALUES(?, ?)", p, 2, &r), 0);
        assert_null(cairn_result_error(r, 0));
        assert_int_equal(cairn_result_rows_affected(r, 0), 1);
        cairn_result_free(r);
    }
    assert_int_equal(count(db, CAIRN_LEVEL_NONE), 10);
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), 10);
    assert_int_equal(count(db, CAIRN_LEVEL_LINEARIZABLE), 10);
    assert_int_equal(count(db, CAIRN_LEVEL_STRONG), 10);
    cairn_close(db);
}

static void test_transaction_rollback(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    cairn_stmt stmts[] = {
        {"INSERT INTO t VALUES(100, 'a')", NULL, 0},
        {"INSERT INTO nope VALUES(1)", NULL, 0},
        {"INSERT INTO t VALUES(101, 'b')", NULL, 0},
    };
    int64_t before = count(db, CAIRN_LEVEL_WEAK);
    assert_int_equal(cairn_request(db, stmts, 3, CAIRN_TRANSACTION, CAIRN_LEVEL_WEAK, &r), 0);
    assert_int_equal(cairn_result_count(r), 2); /* stops at the failing statement */
    assert_non_null(cairn_result_error(r, 1));
    assert_non_null(strstr(cairn_result_error(r, 1), "no such table"));
    cairn_result_free(r);
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), before);

    /* Without a transaction the good statements stay. */
    assert_int_equal(cairn_request(db, stmts, 3, 0, CAIRN_LEVEL_WEAK, &r), 0);
    assert_int_equal(cairn_result_count(r), 3);
    assert_null(cairn_result_error(r, 0));
    assert_non_null(cairn_result_error(r, 1));
    assert_null(cairn_result_error(r, 2));
    cairn_result_free(r);
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), before + 2);
    cairn_close(db);
}

static void test_read_only_and_guards(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    assert_int_equal(cairn_query(db, "DELETE FROM t", NULL, 0, CAIRN_LEVEL_WEAK, &r), 0);
    assert_non_null(strstr(cairn_result_error(r, 0), "readonly"));
    cairn_result_free(r);
    assert_int_equal(cairn_query(db, "DELETE FROM t", NULL, 0, CAIRN_LEVEL_STRONG, &r), 0);
    assert_non_null(strstr(cairn_result_error(r, 0), "readonly"));
    cairn_result_free(r);
    /* cairn's own bookkeeping, transaction control, ATTACH and connection state are
     * out of reach: the statement policy refuses them before anything is proposed. */
    static const char *const refused[] = {
        "DROP TABLE _cairn_meta", "COMMIT", "ATTACH '/tmp/x.db' AS x",
        "CREATE TEMP TABLE tt(x)", "PRAGMA case_sensitive_like=1", "SAVEPOINT a",
        "INSERT INTO t VALUES(1, 'a')\n; -- fine\n INSERT INTO _cairn_meta VALUES('k', 1)"};
    int64_t before = count(db, CAIRN_LEVEL_WEAK);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        r = NULL;
        int rc = cairn_execute(db, refused[i], NULL, 0, &r);
        assert_int_equal(rc, CAIRN_EINVAL);
        assert_null(r);
        assert_non_null(strstr(cairn_errmsg(db), "statement policy"));
    }
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), before);
    /* A statement with nothing to run is refused, not proposed. */
    assert_int_equal(cairn_execute(db, "  -- nothing\n ;", NULL, 0, &r), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(db), "empty"));
    assert_true(count(db, CAIRN_LEVEL_WEAK) > 0);
    cairn_close(db);
}

static void test_lock_and_persistence(void **state)
{
    cairn *db = openNode();
    cairn *second = NULL;
    struct cairn_config cfg;
    int64_t n = count(db, CAIRN_LEVEL_WEAK);
    cairn_config_init(&cfg);
    cfg.data_dir = dir;
    assert_int_equal(cairn_open(&cfg, &second), CAIRN_ELOCKED);
    assert_non_null(strstr(cairn_errmsg(second), "in use"));
    cairn_close(second);
    cairn_close(db);
    db = openNode();
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), n);
    cairn_close(db);
}

struct writer {
    cairn *db;
    int id;
    int ok;
};

static void *writeMany(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < 100; i++) {
        cairn_result *r = NULL;
        cairn_value p[] = {cairn_int(w->id * 1000 + i), cairn_text("c")};
        if (cairn_execute(w->db, "INSERT INTO t VALUES(?, ?)", p, 2, &r) == 0 &&
            cairn_result_error(r, 0) == NULL) {
            w->ok++;
        }
        cairn_result_free(r);
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    cairn *db = openNode();
    pthread_t th[8];
    struct writer w[8];
    int64_t before = count(db, CAIRN_LEVEL_WEAK);
    for (int i = 0; i < 8; i++) {
        w[i] = (struct writer){db, i + 1, 0};
        pthread_create(&th[i], NULL, writeMany, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 100);
    }
    assert_int_equal(count(db, CAIRN_LEVEL_WEAK), before + 800);
    cairn_close(db);
}

/* A cached statement's columns after a schema change: the library gives the new ones
 * at once (they used to be read before the statement was prepared again). */
static void test_columns_after_schema_change(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    static const enum cairn_level levels[] = {CAIRN_LEVEL_NONE, CAIRN_LEVEL_WEAK,
                                              CAIRN_LEVEL_STRONG};
    (void)state;
    assert_int_equal(cairn_execute(db, "CREATE TABLE mig(a INTEGER, b TEXT)", NULL, 0, &r), 0);
    cairn_result_free(r);
    assert_int_equal(cairn_execute(db, "INSERT INTO mig VALUES(1, 'x')", NULL, 0, &r), 0);
    cairn_result_free(r);
    for (int round = 0; round < 2; round++) {
        for (size_t l = 0; l < 3; l++) {
            for (int k = 0; k < 3; k++) {
                assert_int_equal(cairn_query(db, "SELECT * FROM mig", NULL, 0, levels[l], &r), 0);
                assert_null(cairn_result_error(r, 0));
                assert_int_equal(cairn_result_columns(r, 0), round == 0 ? 2 : 3);
                if (round == 1) {
                    assert_string_equal(cairn_result_column_name(r, 0, 2), "c");
                    assert_true(cairn_result_double(r, 0, 0, 2) == 2.5);
                }
                cairn_result_free(r);
            }
        }
        if (round == 0) {
            assert_int_equal(cairn_execute(db, "ALTER TABLE mig ADD COLUMN c REAL", NULL, 0, &r), 0);
            cairn_result_free(r);
            assert_int_equal(cairn_execute(db, "UPDATE mig SET c = 2.5", NULL, 0, &r), 0);
            cairn_result_free(r);
        }
    }
    cairn_execute(db, "DROP TABLE mig", NULL, 0, &r);
    cairn_result_free(r);
    cairn_close(db);
}

static void test_bad_arguments(void **state)
{
    cairn *db = NULL;
    struct cairn_config cfg;
    cairn_result *r = NULL;
    cairn_config_init(&cfg);
    assert_int_equal(cairn_open(&cfg, &db), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(db), "data directory"));
    cairn_close(db);
    db = openNode();
    assert_int_equal(cairn_execute(db, "", NULL, 0, &r), CAIRN_EINVAL);
    assert_null(r);
    cairn_value bad = {99, NULL, 0, 0, NULL, 0};
    assert_int_equal(cairn_execute(db, "SELECT ?", &bad, 1, &r), CAIRN_EINVAL);
    /* A parameter name longer than cairn binds is refused, not ignored. */
    char name[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    cairn_value named = {CAIRN_INTEGER, name, 1, 0, NULL, 0};
    assert_int_equal(cairn_execute(db, "SELECT 1", &named, 1, &r), CAIRN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(cairn_errmsg(db), "at most 254"));
    /* NULL where a pointer is needed: an error that says which, never a crash. */
    assert_int_equal(cairn_execute(db, "SELECT 1", NULL, 0, NULL), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(db), "out is NULL"));
    assert_int_equal(cairn_request(db, NULL, 2, 0, CAIRN_LEVEL_WEAK, &r), CAIRN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(cairn_errmsg(db), "stmts is NULL"));
    assert_int_equal(cairn_query(db, "SELECT ?, ?", NULL, 2, CAIRN_LEVEL_NONE, &r), CAIRN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(cairn_errmsg(db), "params is NULL"));
    cairn_value lost = {CAIRN_TEXT, NULL, 0, 0, NULL, 5};
    assert_int_equal(cairn_query(db, "SELECT ?", &lost, 1, CAIRN_LEVEL_NONE, &r), CAIRN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(cairn_errmsg(db), "5 bytes at NULL"));
    cairn_close(db);
    cairn_config_init(&cfg);
    cfg.data_dir = dir;
    assert_int_equal(cairn_open(&cfg, NULL), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(NULL), "out is NULL"));
}

/* A data directory longer than the handle holds is refused, not cut short: the cut
 * path names another directory, which the open would create and use. */
static void test_long_data_dir(void **state)
{
    static char path[4200];
    char part[101];
    char first[192];
    struct cairn_config cfg;
    cairn *db = NULL;
    (void)state;
    memset(part, 'd', sizeof part - 1);
    part[sizeof part - 1] = '\0';
    size_t n = (size_t)snprintf(path, sizeof path, "%s", dir);
    while (n < 4000) {
        n += (size_t)snprintf(path + n, sizeof path - n, "/%s", part);
    }
    cairn_config_init(&cfg);
    cfg.data_dir = path;
    assert_int_equal(cairn_open(&cfg, &db), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(db), "data directory is"));
    cairn_close(db);
    /* Nothing was created under it. */
    snprintf(first, sizeof first, "%s/%s", dir, part);
    assert_int_equal(access(first, F_OK), -1);
}

/* A second cairn_open of an open directory in the same process says so. */
static void test_open_twice_in_process(void **state)
{
    cairn *db = openNode();
    cairn *second = NULL;
    struct cairn_config cfg;
    (void)state;
    cairn_config_init(&cfg);
    cfg.data_dir = dir;
    assert_int_equal(cairn_open(&cfg, &second), CAIRN_ELOCKED);
    assert_non_null(strstr(cairn_errmsg(second), "this process has it open already"));
    cairn_close(second);
    cairn_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read_levels),   cmocka_unit_test(test_transaction_rollback),
        cmocka_unit_test(test_read_only_and_guards), cmocka_unit_test(test_lock_and_persistence),
        cmocka_unit_test(test_concurrent_writers),  cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_columns_after_schema_change), cmocka_unit_test(test_long_data_dir),
        cmocka_unit_test(test_open_twice_in_process),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
