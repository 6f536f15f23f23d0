/* Unit tests of the SQL front (src/sqlfront.c): every form of BACKUP, RESTORE and
 * DROP BRANCH, what is left to SQLite, and malformed statements with their messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backup.h"
#include "cairn.h"
#include "error.h"
#include "sqlfront.h"

static int parse(const char *sql, struct sqlfront_cmd *cmd, char *errmsg)
{
    /* An exact-size copy, so that ASan sees any read past the end. */
    size_t n = strlen(sql);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, sql, n);
    errmsg[0] = '\0';
    int rv = sqlfrontParse(copy, n, cmd, errmsg);
    free(copy);
    return rv;
}

static void test_backup_forms(void **state)
{
    struct sqlfront_cmd c;
    char e[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("BACKUP DATABASE", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_BACKUP);
    assert_int_equal(c.backup_type, BACKUP_FULL);
    assert_string_equal(c.to, "");
    assert_int_equal(parse("  backup\n database incremental ;  ", &c, e), 0);
    assert_int_equal(c.backup_type, BACKUP_INCREMENTAL);
    assert_int_equal(parse("/* nightly */ Backup Database Differential -- diff\n", &c, e), 0);
    assert_int_equal(c.backup_type, BACKUP_DIFFERENTIAL);
    assert_int_equal(parse("BACKUP DATABASE FULL TO '/mnt/it''s here'", &c, e), 0);
    assert_int_equal(c.backup_type, BACKUP_FULL);
    assert_string_equal(c.to, "/mnt/it's here");
    assert_int_equal(parse("BACKUP DATABASE TO 'x';", &c, e), 0);
    assert_string_equal(c.to, "x");
    /* Empty statements before it, which SQLite skips too. */
    assert_int_equal(parse("; ;\n;BACKUP DATABASE INCREMENTAL", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_BACKUP);
    assert_int_equal(c.backup_type, BACKUP_INCREMENTAL);
    assert_int_equal(parse(";RESTORE DATABASE FROM 'x'", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_RESTORE);
    assert_int_equal(parse(" ; DROP BRANCH b", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_DROP_BRANCH);
}

static void test_restore_and_drop_forms(void **state)
{
    struct sqlfront_cmd c;
    char e[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("RESTORE DATABASE FROM '20261122T101500123Z-0001-7f3a'", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_RESTORE);
    assert_string_equal(c.id, "20261122T101500123Z-0001-7f3a");
    assert_string_equal(c.branch, "");
    assert_int_equal(parse("restore database from 'abc' to branch 'dev-1';", &c, e), 0);
    assert_string_equal(c.id, "abc");
    assert_string_equal(c.branch, "dev-1");
    assert_int_equal(parse("DROP BRANCH 'dev_2'", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_DROP_BRANCH);
    assert_string_equal(c.branch, "dev_2");
    /* Bare, as RESTORE ... TO BRANCH dev takes it. */
    assert_int_equal(parse("drop branch dev_3;", &c, e), 0);
    assert_int_equal(c.kind, SQLFRONT_DROP_BRANCH);
    assert_string_equal(c.branch, "dev_3");
}

static void test_restore_as_of(void **state)
{
    struct sqlfront_cmd c;
    char e[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse("RESTORE DATABASE FROM 'abc'", &c, e), 0);
    assert_int_equal(c.asof, SQLFRONT_ASOF_NONE);
    assert_int_equal(parse("RESTORE DATABASE FROM '/r' TO BRANCH dev AS OF INDEX 1234;", &c, e),
                     0);
    assert_string_equal(c.id, "/r");
    assert_string_equal(c.branch, "dev");
    assert_int_equal(c.asof, SQLFRONT_ASOF_INDEX);
    assert_int_equal(c.asof_index, 1234);
    assert_int_equal(
        parse("restore database from 'default' to branch 'b' as of '2026-12-02T10:02:00Z'", &c, e),
        0);
    assert_int_equal(c.asof, SQLFRONT_ASOF_TIME);
    assert_int_equal(c.asof_ms, 1796205720000LL);
    assert_int_equal(parse("RESTORE DATABASE FROM 'default' AS OF 'latest'", &c, e), 0);
    assert_int_equal(c.asof, SQLFRONT_ASOF_LATEST);
    assert_string_equal(c.branch, "");
}

static void test_sqlite_statements_left_alone(void **state)
{
    static const char *const sqls[] = {
        "SELECT 1", "INSERT INTO backup VALUES(1)", "DROP TABLE branch", "DROP INDEX x",
        "CREATE TABLE restore(x)", "backups", "", "   ", "-- only a comment", "BACKUPS",
        "WITH backup AS (SELECT 1) SELECT * FROM backup", "SELECT 1; SELECT 'a;backup'",
        "SELECT \"x;\" FROM t; DROP TABLE branch", "SELECT [a;b]; DROP INDEX i", NULL};
    struct sqlfront_cmd c;
    char e[CAIRN_ERRMSG_SIZE];
    for (int i = 0; sqls[i] != NULL; i++) {
        assert_int_equal(parse(sqls[i], &c, e), 0);
        assert_int_equal(c.kind, SQLFRONT_NONE);
    }
}

static void expectError(const char *sql, const char *needle)
{
    struct sqlfront_cmd c;
    char e[CAIRN_ERRMSG_SIZE];
    assert_int_equal(parse(sql, &c, e), CAIRN_EINVAL);
    if (strstr(e, needle) == NULL) {
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", sql, e, needle);
    }
}

static void test_malformed(void **state)
{
    expectError("BACKUP", "expected DATABASE after BACKUP, found end of statement");
    expectError("BACKUP TABLE t", "\"TABLE\" at offset 7");
    expectError("BACKUP DATABASE SIDEWAYS", "\"SIDEWAYS\"");
    expectError("BACKUP DATABASE TO", "a quoted directory after TO");
    expectError("BACKUP DATABASE TO 'unterminated", "unterminated string at offset 19");
    expectError("BACKUP DATABASE TO ''", "is empty");
    expectError("BACKUP DATABASE FULL; SELECT 1", "nothing after the semicolon");
    expectError("RESTORE DATABASE FROM", "a quoted backup id after FROM");
    expectError("RESTORE DATABASE 'x'", "FROM 'backup id'");
    expectError("RESTORE DATABASE FROM x", "a quoted backup id");
    expectError("RESTORE DATABASE FROM 'x' TO 'y'", "BRANCH after TO");
    expectError("RESTORE DATABASE FROM 'x' TO BRANCH '../etc'", "'.' at position 1");
    expectError("RESTORE DATABASE FROM 'x' TO BRANCH 'a/b'", "'/' at position 2");
    expectError("RESTORE DATABASE FROM 'x' AS OF INDEX", "a log index (digits)");
    expectError("RESTORE DATABASE FROM 'x' AS OF INDEX 12ab", "a log index (digits)");
    expectError("RESTORE DATABASE FROM 'x' AS OF INDEX 0", "not an index");
    expectError("RESTORE DATABASE FROM 'x' AS OF 'yesterday'", "AS OF 'yesterday' is not a time");
    expectError("RESTORE DATABASE FROM 'x' AS OF 12", "'ISO-8601 time', 'latest' or INDEX n");
    expectError("RESTORE DATABASE FROM 'x' AS 'y'", "OF after AS");
    expectError("RESTORE DATABASE FROM 'x' AS OF INDEX 5 TO BRANCH 'b'", "the end of the statement");
    expectError("DROP BRANCH", "a branch name after DROP BRANCH");
    expectError("DROP BRANCH \"x\"", "a branch name after DROP BRANCH");
    expectError("DROP BRANCH '-x'", "must not start with '-'");
    expectError("DROP BRANCH 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'",
                "longer than 64 bytes");
    expectError("DROP BRANCH 'x' please", "\"please\"");
    expectError("SELECT 1; BACKUP DATABASE", "BACKUP at offset 10 is a cairn statement");
    expectError("INSERT INTO t VALUES(';'); restore database from 'x'", "restore at offset 27");
    expectError("SELECT 1;\n -- c\n DROP BRANCH 'b'", "DROP at offset 17");
    expectError("SELECT 1;; ;BACKUP DATABASE", "BACKUP at offset 12 is a cairn statement");
}

static void test_branch_names(void **state)
{
    char e[CAIRN_ERRMSG_SIZE];
    char longname[80];
    assert_true(sqlfrontBranchNameValid("main-2_b", e));
    assert_false(sqlfrontBranchNameValid("", e));
    assert_false(sqlfrontBranchNameValid(".", e));
    assert_false(sqlfrontBranchNameValid("a b", e));
    memset(longname, 'a', 65);
    longname[65] = '\0';
    assert_false(sqlfrontBranchNameValid(longname, e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backup_forms),
        cmocka_unit_test(test_restore_and_drop_forms),
        cmocka_unit_test(test_restore_as_of),
        cmocka_unit_test(test_sqlite_statements_left_alone),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_branch_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
