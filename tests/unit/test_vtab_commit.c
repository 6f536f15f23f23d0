/* A write whose virtual table fails where it writes what it kept: at a statement's
 * RELEASE (xRelease) or at the transaction's COMMIT (xSync). FTS5 flushes its pending
 * terms there, and a damaged FTS5 index makes that fail alike on every node: the
 * failure is then the write's outcome (nothing of it kept, its results say so, the
 * entry applied), never a failed apply that every node would retry for ever, and never
 * a success whose changes were half kept. A real single node (the embedded API) whose
 * writer gets a test module through sqlite3_auto_extension. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cairn.h"

static char dir[64];

/* What the module's xRelease (FAIL_RELEASE) or xSync (FAIL_SYNC) answers while armed. */
enum { FAIL_NONE, FAIL_RELEASE, FAIL_SYNC };
static int failWhere;
static int failRc;

static int rvConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    sqlite3_vtab *v;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(v)");
    (void)aux, (void)argc, (void)argv, (void)err;
    if (rc != SQLITE_OK) {
        return rc;
    }
    if ((v = sqlite3_malloc(sizeof *v)) == NULL) {
        return SQLITE_NOMEM;
    }
    memset(v, 0, sizeof *v);
    *out = v;
    return SQLITE_OK;
}

static int rvDisconnect(sqlite3_vtab *v)
{
    sqlite3_free(v);
    return SQLITE_OK;
}

static int rvBestIndex(sqlite3_vtab *v, sqlite3_index_info *info)
{
    (void)v;
    info->estimatedCost = 1;
    return SQLITE_OK;
}

static int rvOpen(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
    (void)v;
    if ((*out = sqlite3_malloc(sizeof **out)) == NULL) {
        return SQLITE_NOMEM;
    }
    memset(*out, 0, sizeof **out);
    return SQLITE_OK;
}

static int rvClose(sqlite3_vtab_cursor *c)
{
    sqlite3_free(c);
    return SQLITE_OK;
}

static int rvFilter(sqlite3_vtab_cursor *c, int idx, const char *idxs, int argc,
                    sqlite3_value **argv)
{
    (void)c, (void)idx, (void)idxs, (void)argc, (void)argv;
    return SQLITE_OK;
}

static int rvNext(sqlite3_vtab_cursor *c)
{
    (void)c;
    return SQLITE_OK;
}

static int rvEof(sqlite3_vtab_cursor *c)
{
    (void)c;
    return 1; /* it keeps no rows */
}

static int rvColumn(sqlite3_vtab_cursor *c, sqlite3_context *ctx, int i)
{
    (void)c, (void)ctx, (void)i;
    return SQLITE_OK;
}

static int rvRowid(sqlite3_vtab_cursor *c, sqlite3_int64 *rowid)
{
    (void)c;
    *rowid = 0;
    return SQLITE_OK;
}

static int rvUpdate(sqlite3_vtab *v, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    (void)v, (void)argc, (void)argv;
    *rowid = 1;
    return SQLITE_OK;
}

static int rvOk(sqlite3_vtab *v)
{
    (void)v;
    return SQLITE_OK;
}

static int armed(sqlite3_vtab *v, int where)
{
    if (failWhere != where) {
        return SQLITE_OK;
    }
    /* SQLite takes over a message of xSync's, not of xRelease's (it would leak). */
    if (where == FAIL_SYNC) {
        sqlite3_free(v->zErrMsg);
        v->zErrMsg = sqlite3_mprintf("the test module refuses to keep its changes");
    }
    return failRc;
}

static int rvSync(sqlite3_vtab *v)
{
    return armed(v, FAIL_SYNC);
}

static int rvSavepoint(sqlite3_vtab *v, int i)
{
    (void)v, (void)i;
    return SQLITE_OK;
}

static int rvRelease(sqlite3_vtab *v, int i)
{
    (void)i;
    return armed(v, FAIL_RELEASE);
}

static const sqlite3_module rvModule = {
    .iVersion = 2,
    .xCreate = rvConnect,
    .xConnect = rvConnect,
    .xBestIndex = rvBestIndex,
    .xDisconnect = rvDisconnect,
    .xDestroy = rvDisconnect,
    .xOpen = rvOpen,
    .xClose = rvClose,
    .xFilter = rvFilter,
    .xNext = rvNext,
    .xEof = rvEof,
    .xColumn = rvColumn,
    .xRowid = rvRowid,
    .xUpdate = rvUpdate,
    .xBegin = rvOk,
    .xSync = rvSync,
    .xCommit = rvOk,
    .xRollback = rvOk,
    .xSavepoint = rvSavepoint,
    .xRelease = rvRelease,
    .xRollbackTo = rvSavepoint,
};

static int registerModule(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    (void)err, (void)api;
    return sqlite3_create_module(db, "relfail", &rvModule, NULL);
}

static cairn *openNode(void)
{
    struct cairn_config cfg;
    cairn *db = NULL;
    cairn_config_init(&cfg);
    cfg.data_dir = dir;
    if (cairn_open(&cfg, &db) != CAIRN_OK) {
        fail_msg("open %s: %s", dir, cairn_errmsg(db));
    }
    return db;
}

static int64_t rows(cairn *db)
{
    cairn_result *r = NULL;
    int64_t n;
    assert_int_equal(cairn_query(db, "SELECT count(*) FROM t", NULL, 0, CAIRN_LEVEL_STRONG, &r),
                     CAIRN_OK);
    assert_null(cairn_result_error(r, 0));
    n = cairn_result_int64(r, 0, 0, 0);
    cairn_result_free(r);
    return n;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/cairn-test-vtab-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    sqlite3_auto_extension((void (*)(void))registerModule);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    sqlite3_reset_auto_extension();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void assertHas(const char *s, const char *want)
{
    if (s == NULL || strstr(s, want) == NULL) {
        fail_msg("\"%s\" does not say \"%s\"", s ? s : "(no error)", want);
    }
}

static const cairn_stmt writes[] = {
    {"INSERT INTO t VALUES(1)", NULL, 0},
    {"INSERT INTO v VALUES(1)", NULL, 0},
    {"INSERT INTO t VALUES(2)", NULL, 0},
};

/* One request of three statements, each kept on its own, and the second's RELEASE
 * fails as a damaged FTS5 index makes it: the entry's transaction is rolled back whole
 * (the first statement says so), the second says why, the third runs on; the node
 * takes the next write, and a restart replays the log to the same rows. */
static void test_release_failure_is_the_writes_outcome(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    (void)state;
    assert_int_equal(cairn_execute(db, "CREATE TABLE t(x)", NULL, 0, &r), CAIRN_OK);
    cairn_result_free(r);
    assert_int_equal(cairn_execute(db, "CREATE VIRTUAL TABLE v USING relfail", NULL, 0, &r),
                     CAIRN_OK);
    assert_null(cairn_result_error(r, 0));
    cairn_result_free(r);

    failWhere = FAIL_RELEASE;
    failRc = SQLITE_CORRUPT_VTAB;
    assert_int_equal(cairn_request(db, writes, 3, 0, CAIRN_LEVEL_WEAK, &r), CAIRN_OK);
    failWhere = FAIL_NONE;
    assert_int_equal(cairn_result_count(r), 3);
    assertHas(cairn_result_error(r, 0), "rolled back");
    assertHas(cairn_result_error(r, 1), "the statement's changes were being kept");
    assert_null(cairn_result_error(r, 2));
    cairn_result_free(r);
    assert_int_equal(rows(db), 1); /* the third statement's row only */

    assert_int_equal(cairn_execute(db, "INSERT INTO t VALUES(3)", NULL, 0, &r), CAIRN_OK);
    assert_null(cairn_result_error(r, 0));
    cairn_result_free(r);
    assert_int_equal(rows(db), 2);
    cairn_close(db);

    db = openNode();
    assert_int_equal(rows(db), 2);
    cairn_close(db);
}

/* The same request in one transaction, whose COMMIT fails in xSync: nothing of it is
 * kept, every statement says so, the entry is applied (the next write goes on). */
static void test_commit_failure_is_the_writes_outcome(void **state)
{
    cairn *db = openNode();
    cairn_result *r = NULL;
    int64_t before = rows(db);
    (void)state;
    failWhere = FAIL_SYNC;
    failRc = SQLITE_CORRUPT_VTAB;
    assert_int_equal(cairn_request(db, writes, 3, CAIRN_TRANSACTION, CAIRN_LEVEL_WEAK, &r),
                     CAIRN_OK);
    failWhere = FAIL_NONE;
    assert_int_equal(cairn_result_count(r), 3);
    assertHas(cairn_result_error(r, 0), "rolled back");
    assertHas(cairn_result_error(r, 1), "rolled back");
    assertHas(cairn_result_error(r, 2), "at the transaction's commit");
    cairn_result_free(r);
    assert_int_equal(rows(db), before);

    assert_int_equal(cairn_execute(db, "INSERT INTO t VALUES(4)", NULL, 0, &r), CAIRN_OK);
    assert_null(cairn_result_error(r, 0));
    cairn_result_free(r);
    assert_int_equal(rows(db), before + 1);
    cairn_close(db);

    db = openNode();
    assert_int_equal(rows(db), before + 1);
    cairn_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_release_failure_is_the_writes_outcome),
        cmocka_unit_test(test_commit_failure_is_the_writes_outcome),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
