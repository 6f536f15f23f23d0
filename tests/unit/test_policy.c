/* Unit tests of the statement policy's pieces that need no server (src/policy.c):
 * the linear-time instr(), replace() and trim() family against SQLite's own versions on
 * random and edge-case arguments (same results, bit for bit, on every type), and that
 * they stay fast where SQLite's take time proportional to the product of the lengths;
 * the statement text check; durations; the memory a statement may take. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "buf.h"
#include "memlimit.h"
#include "pagesum.h"
#include "policy.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A random argument as SQL: NULL, a number, text drawn from a small alphabet with
 * multi-byte and broken UTF-8, or a blob. */
static void randomArg(char *out, size_t cap)
{
    static const char *const pieces[] = {"a", "b", "ab", "é", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                         " ", "  ", "x", "\xc3", "\xa9", "aa"};
    size_t n = 0;
    int kind = (int)(next() % 10);
    if (kind == 0) {
        snprintf(out, cap, "NULL");
        return;
    }
    if (kind == 1) {
        snprintf(out, cap, "%lld", (long long)(next() % 2000) - 1000);
        return;
    }
    if (kind == 2) {
        int len = (int)(next() % 6);
        n = (size_t)snprintf(out, cap, "x'");
        for (int i = 0; i < len; i++) {
            n += (size_t)snprintf(out + n, cap - n, "%02x", (unsigned)(next() % 3) * 0x61);
        }
        snprintf(out + n, cap - n, "'");
        return;
    }
    /* Text, as a blob cast to text so that broken UTF-8 gets through. */
    n = (size_t)snprintf(out, cap, "CAST(x'");
    int parts = (int)(next() % 7);
    for (int i = 0; i < parts; i++) {
        const char *p = pieces[next() % (sizeof pieces / sizeof pieces[0])];
        for (; *p; p++) {
            n += (size_t)snprintf(out + n, cap - n, "%02x", (unsigned char)*p);
        }
    }
    snprintf(out + n, cap - n, "' AS TEXT)");
}

/* The value of sql on db as "type:hex". */
static void eval(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    assert_int_equal(rc, SQLITE_OK);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        snprintf(out, cap, "error:%s", sqlite3_errmsg(db));
    } else {
        int type = sqlite3_column_type(st, 0);
        const unsigned char *p = type == SQLITE_BLOB ? sqlite3_column_blob(st, 0)
                                                     : sqlite3_column_text(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        size_t k = (size_t)snprintf(out, cap, "%d:", type);
        for (int i = 0; i < n && k + 3 < cap; i++) {
            k += (size_t)snprintf(out + k, cap - k, "%02x", p ? p[i] : 0);
        }
    }
    sqlite3_finalize(st);
}

/* sql gives the same value (or the same error) on plain, SQLite's own functions, as on
 * ours, cairn's. */
static void sameAsSqlite(sqlite3 *plain, sqlite3 *ours, const char *sql)
{
    char want[4096], got[4096];
    eval(plain, sql, want, sizeof want);
    eval(ours, sql, got, sizeof got);
    if (strcmp(want, got) != 0) {
        fail_msg("%s: SQLite gives %s, cairn %s", sql, want, got);
    }
}

static void test_functions_match_sqlite(void **state)
{
    sqlite3 *plain = NULL, *ours = NULL;
    struct policy_conn pc;
    char a[512], b[512], c[512], sql[2048];
    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &plain), SQLITE_OK);
    assert_int_equal(sqlite3_open(":memory:", &ours), SQLITE_OK);
    policyInstall(ours, &pc, 0, NULL);
    for (int i = 0; i < 20000; i++) {
        randomArg(a, sizeof a);
        randomArg(b, sizeof b);
        randomArg(c, sizeof c);
        switch (i % 6) {
            case 0:
                snprintf(sql, sizeof sql, "SELECT instr(%s, %s)", a, b);
                break;
            case 1:
                snprintf(sql, sizeof sql, "SELECT replace(%s, %s, %s)", a, b, c);
                break;
            case 2:
                snprintf(sql, sizeof sql, "SELECT trim(%s, %s)", a, b);
                break;
            case 3:
                snprintf(sql, sizeof sql, "SELECT ltrim(%s, %s)", a, b);
                break;
            case 4:
                snprintf(sql, sizeof sql, "SELECT rtrim(%s, %s)", a, b);
                break;
            default:
                snprintf(sql, sizeof sql, "SELECT trim(%s) || '|' || ltrim(%s) || '|' || rtrim(%s)",
                         a, a, a);
                break;
        }
        sameAsSqlite(plain, ours, sql);
    }
    sqlite3_close(plain);
    sqlite3_close(ours);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A random LIKE or GLOB argument: NULL, a number, or text of wildcards, character
 * classes, letters of both cases, escapes and broken UTF-8. */
static void randomPattern(char *out, size_t cap, int max_parts)
{
    static const char *const pieces[] = {"%",   "_",     "*",     "?",    "[",      "]",
                                         "[a-c]", "[^a]", "a",    "A",    "b",      "\xc3\xa9",
                                         "\xc3\x89", "\\", "\xc3", "\xa9", "x", "-", "^"};
    size_t n = 0;
    int kind = (int)(next() % 12);
    if (kind == 0) {
        snprintf(out, cap, "NULL");
        return;
    }
    if (kind == 1) {
        snprintf(out, cap, "%lld", (long long)(next() % 200) - 100);
        return;
    }
    n = (size_t)snprintf(out, cap, "CAST(x'");
    int parts = (int)(next() % (unsigned)(max_parts + 1));
    for (int i = 0; i < parts; i++) {
        const char *p = pieces[next() % (sizeof pieces / sizeof pieces[0])];
        for (; *p; p++) {
            n += (size_t)snprintf(out + n, cap - n, "%02x", (unsigned char)*p);
        }
    }
    snprintf(out + n, cap - n, "' AS TEXT)");
}

/* cairn's like() and glob() (the linear-time guard around SQLite's own matcher) give
 * SQLite's results: matches, NULLs and errors, escapes that are wildcards included. */
static void test_like_and_glob_match_sqlite(void **state)
{
    sqlite3 *plain = NULL, *ours = NULL;
    struct policy_conn pc;
    char p[512], x[512], e[128], sql[2048];
    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &plain), SQLITE_OK);
    assert_int_equal(sqlite3_open(":memory:", &ours), SQLITE_OK);
    policyInstall(ours, &pc, 0, NULL);
    for (int i = 0; i < 40000; i++) {
        randomPattern(p, sizeof p, 6);
        randomPattern(x, sizeof x, 6);
        randomPattern(e, sizeof e, 2);
        switch (i % 4) {
            case 0:
                snprintf(sql, sizeof sql, "SELECT %s LIKE %s", x, p);
                break;
            case 1:
                snprintf(sql, sizeof sql, "SELECT %s LIKE %s ESCAPE %s", x, p, e);
                break;
            case 2:
                snprintf(sql, sizeof sql, "SELECT %s GLOB %s", x, p);
                break;
            default:
                snprintf(sql, sizeof sql, "SELECT %s NOT LIKE %s ESCAPE %s", x, p,
                         i % 8 == 3 ? "'%'" : "'_'");
                break;
        }
        sameAsSqlite(plain, ours, sql);
    }
    sqlite3_close(plain);
    sqlite3_close(ours);
}

/* A value and a pattern whose product would keep SQLite's matcher busy for seconds (and
 * a 64 MiB value for most of an hour) are refused at once, saying why; a short pattern
 * on a large value is matched. */
static void test_like_work_is_bounded(void **state)
{
    sqlite3 *ours = NULL;
    struct policy_conn pc;
    char out[1024];
    double t0;
    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &ours), SQLITE_OK);
    policyInstall(ours, &pc, 0, NULL);
    t0 = now();
    eval(ours,
         "SELECT printf('%.*c', 400000, 'a') LIKE '%' || printf('%.*c', 48000, 'a') || 'b'",
         out, sizeof out);
    assert_non_null(strstr(out, "error:refused by cairn's statement policy: LIKE of a "
                                "400000-byte value with a 48002-byte pattern"));
    eval(ours,
         "SELECT printf('%.*c', 400000, 'a') GLOB '*' || printf('%.*c', 48000, 'a') || 'b'",
         out, sizeof out);
    assert_non_null(strstr(out, "GLOB of a 400000-byte value"));
    assert_true(now() - t0 < 10);
    eval(ours, "SELECT printf('%.*c', 8000000, 'a') || 'foo' LIKE '%FOO%'", out, sizeof out);
    assert_string_equal(out, "1:31");
    sqlite3_close(ours);
}

/* SQLite's versions take minutes on these (a haystack of 16 MiB, a needle or set of 4
 * MiB: 6e13 byte comparisons); cairn's, well under a second. */
static void test_functions_are_linear(void **state)
{
    sqlite3 *ours = NULL;
    struct policy_conn pc;
    char out[256];
    (void)state;
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer's memmem() checks the whole haystack at every call: replace()'s
     * calls then cost what the function avoids, and the timing says nothing. */
    skip();
#endif
    assert_int_equal(sqlite3_open(":memory:", &ours), SQLITE_OK);
    policyInstall(ours, &pc, 0, NULL);
    static const char *const sqls[] = {
        "SELECT instr(zeroblob(16000000), zeroblob(4000000) || x'01')",
        "SELECT length(replace(hex(zeroblob(8000000)), hex(zeroblob(2000000)) || '1', 'x'))",
        "SELECT length(trim(hex(zeroblob(8000000)) || 'z', "
        "replace(hex(zeroblob(500000)), '0', 'é') || '0'))",
        "SELECT length(rtrim('z' || hex(zeroblob(8000000)), "
        "replace(hex(zeroblob(100000)), '00', 'éè') || '0'))",
    };
    for (size_t i = 0; i < sizeof sqls / sizeof sqls[0]; i++) {
        double t0 = now();
        eval(ours, sqls[i], out, sizeof out);
        double secs = now() - t0;
        /* The bound is far from both: well under a second is what they take alone, 5.4 s
         * under ASan on a machine at a load average of 10; SQLite's own take minutes. */
        if (secs > 30) {
            fail_msg("%s took %.1f s", sqls[i], secs);
        }
        assert_null(strstr(out, "error"));
    }
    sqlite3_close(ours);
}

static void test_text_check(void **state)
{
    char msg[256];
    (void)state;
    assert_int_equal(policyCheckText("SELECT 1", 8, msg, sizeof msg), 0);
    assert_int_equal(policyCheckText("SELECT 1; -- end", 16, msg, sizeof msg), 0);
    assert_int_equal(policyCheckText("SELECT 1\0x", 10, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "offset 8"));
    static const char blank[] = " ; -- x\n /* y */ ;";
    assert_int_equal(policyCheckText(blank, strlen(blank), msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "empty"));
    assert_int_equal(policyCheckText("/* unterminated", 15, msg, sizeof msg), -1);
    assert_int_equal(policyCheckText("", 0, msg, sizeof msg), -1);
}

static void test_durations(void **state)
{
    uint32_t ms;
    (void)state;
    assert_int_equal(policyParseDuration("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(policyParseDuration("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(policyParseDuration("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(policyParseDuration("1.5", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(policyParseDuration("24h", &ms), 0);
    static const char *const bad[] = {"", "0", "-1s", "abc", "1x", "25h", "0.1ms", "+1s", " 1s",
                                      "nan", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(policyParseDuration(bad[i], &ms), -1);
    }
}

/* sql run as cairn runs a statement: "ok:<first column>" or "error:<message>". */
static void runCounted(sqlite3 *db, struct policy_conn *pc, const char *sql, char *out,
                       size_t cap)
{
    sqlite3_stmt *st = NULL;
    char msg[512];
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    assert_int_equal(rc, SQLITE_OK);
    policyStepBegin(pc, db);
    rc = policyStep(pc, st);
    if (rc == SQLITE_ROW) {
        snprintf(out, cap, "ok:%lld", (long long)sqlite3_column_int64(st, 0));
    } else {
        const char *m = policyMessage(pc, rc, msg, sizeof msg);
        snprintf(out, cap, "error:%s", m != NULL ? m : sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
}

/* A row of 300 values of 1 MB is built inside single instructions: it stops at the
 * statement's memory limit (16 x the value size, at least 256 MiB), naming it; memory
 * freed while the statement runs counts no more (600 MB made and dropped row by row
 * pass); the next statement starts from nothing. */
static void test_statement_memory_is_bounded(void **state)
{
    sqlite3 *db = NULL;
    struct policy_conn pc;
    char sql[16384], out[1024];
    size_t n;
    (void)state;
    assert_true(memlimitActive());
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    policyInstall(db, &pc, 1000000, NULL);
    n = (size_t)snprintf(sql, sizeof sql, "SELECT length(randomblob(1000000))");
    for (int i = 1; i < 300; i++) {
        n += (size_t)snprintf(sql + n, sizeof sql - n, ", randomblob(1000000)");
    }
    runCounted(db, &pc, sql, out, sizeof out);
    assert_non_null(strstr(out, "error:the statement needed more than its memory limit of "
                                "268435456 bytes"));
    assert_int_equal(pc.trip, POLICY_TRIP_MEMORY);
    runCounted(db, &pc,
               "SELECT sum(length(randomblob(1000000))) FROM (WITH RECURSIVE c(x) AS (SELECT 1 "
               "UNION ALL SELECT x + 1 FROM c WHERE x < 600) SELECT x FROM c)",
               out, sizeof out);
    assert_string_equal(out, "ok:600000000");
    assert_int_equal(pc.trip, POLICY_TRIP_NONE);
    snprintf(sql, sizeof sql, "SELECT length(randomblob(1000000))");
    runCounted(db, &pc, sql, out, sizeof out);
    assert_string_equal(out, "ok:1000000");
    sqlite3_close(db);
}

/* Run sql on db under pc as cairn does (store.c runStmt): "ok", or "error:" and why
 * (the policy's words when it refused). */
static void runAsCairn(sqlite3 *db, struct policy_conn *pc, const char *sql, char *out,
                       size_t cap)
{
    sqlite3_stmt *ps = NULL;
    char why[512];
    const char *m;
    int rc;
    policyPrepareBegin(pc, sql, strlen(sql));
    rc = sqlite3_prepare_v2(db, sql, -1, &ps, NULL);
    policyPrepareEnd(pc);
    if (rc == SQLITE_OK && ps != NULL) {
        policyStepBegin(pc, db);
        while ((rc = policyStep(pc, ps)) == SQLITE_ROW) {
        }
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    m = rc == SQLITE_OK ? NULL : policyMessage(pc, rc, why, sizeof why);
    if (rc == SQLITE_OK) {
        snprintf(out, cap, "ok");
    } else {
        snprintf(out, cap, "error:%s", m != NULL ? m : sqlite3_errmsg(db));
    }
    sqlite3_finalize(ps);
}

/* A connection as the writer has it: the policy installed, node-local reads refused. */
static sqlite3 *openWriter(const char *path, struct policy_conn *pc)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_extended_result_codes(db, 1);
    policyInstall(db, pc, 0, NULL);
    policyReplicated(db, pc);
    return db;
}

/* FTS5 reads PRAGMA data_version for itself, when it connects to its table (while the
 * user's statement is prepared) and while a statement runs: every write of an FTS5
 * table was refused, on a connection that had just created the table and on a fresh
 * one (a node that restarted). The user's own PRAGMA data_version, in any spelling, and
 * pragma_data_version, also through a view, stay refused in a write; so does
 * fts5_source_id(), which names the library. */
static void test_fts5_works_and_data_version_stays_refused(void **state)
{
    char path[] = "/tmp/cairn-test-policy-XXXXXX";
    char file[64], out[1024];
    struct policy_conn pc;
    sqlite3 *db;
    int fd;
    static const char *const ok[] = {
        "CREATE VIRTUAL TABLE docs USING fts5(body)",
        "INSERT INTO docs VALUES('hello world')",
        "CREATE TABLE hits(r, h, s, b)",
        "INSERT INTO hits SELECT rowid, highlight(docs, 0, '[', ']'), snippet(docs, 0, '<', "
        "'>', '...', 4), bm25(docs) FROM docs WHERE docs MATCH 'hello' ORDER BY rank",
        "INSERT INTO docs(docs) VALUES('optimize')",
        "INSERT INTO docs(docs) VALUES('rebuild')",
        "INSERT INTO docs(docs) VALUES('integrity-check')",
        "CREATE VIEW v AS SELECT * FROM pragma_data_version",
        NULL};
    static const char *const fresh[] = {
        "EXPLAIN QUERY PLAN SELECT * FROM docs WHERE docs MATCH 'x'",
        "INSERT INTO docs VALUES('hello again')",
        "PRAGMA table_info(docs)",
        "INSERT INTO hits(r) SELECT rowid FROM docs WHERE docs MATCH 'again'",
        "UPDATE docs SET body = 'bye' WHERE rowid = 1",
        "DELETE FROM docs WHERE rowid = 1",
        NULL};
    static const char *const refused[] = {
        "PRAGMA data_version",
        "PRAGMA main.data_version",
        "PRAGMA 'main'.data_version",
        "/* x */ -- y\n ; PRAGMA data_version",
        "EXPLAIN PRAGMA data_version",
        "EXPLAIN QUERY PLAN PRAGMA data_version",
        "EXPLAIN /* */ QUERY -- x\n PLAN PRAGMA data_version",
        "SELECT * FROM pragma_data_version",
        "INSERT INTO hits(r) SELECT data_version FROM pragma_data_version",
        "INSERT INTO hits(r) SELECT * FROM v",
        "INSERT INTO hits(r) SELECT fts5_source_id()",
        NULL};
    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (int round = 0; round < 2; round++) {
        db = openWriter(path, &pc);
        for (int i = 0; round == 0 && ok[i] != NULL; i++) {
            runAsCairn(db, &pc, ok[i], out, sizeof out);
            if (strcmp(out, "ok") != 0) {
                fail_msg("%s: %s", ok[i], out);
            }
        }
        for (int i = 0; fresh[i] != NULL; i++) {
            runAsCairn(db, &pc, fresh[i], out, sizeof out);
            if (strcmp(out, "ok") != 0) {
                fail_msg("round %d, %s: %s", round, fresh[i], out);
            }
        }
        for (int i = 0; refused[i] != NULL; i++) {
            runAsCairn(db, &pc, refused[i], out, sizeof out);
            if (strstr(out, "error:refused by cairn's statement policy") == NULL ||
                strstr(out, "differs from node to node") == NULL) {
                fail_msg("round %d, %s: %s", round, refused[i], out);
            }
        }
        sqlite3_close(db);
    }
    remove(path);
    snprintf(file, sizeof file, "%s-journal", path);
    remove(file);
}

/* A table USING dbstat under a name of its own (made outside cairn: CREATE VIRTUAL TABLE
 * ... USING dbstat is refused) was read by writes as an ordinary table. On the writer's
 * connection every read of it fails with the policy's words; it can be dropped. */
static void test_dbstat_table_of_another_name_is_not_read_by_writes(void **state)
{
    char path[] = "/tmp/cairn-test-policy-XXXXXX";
    char file[64], out[1024];
    struct policy_conn pc;
    sqlite3 *db = NULL;
    int fd;
    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x); CREATE VIRTUAL TABLE pages USING dbstat",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    db = openWriter(path, &pc);
    for (int i = 0; i < 3; i++) {
        static const char *const reads[] = {"INSERT INTO t SELECT sum(unused) FROM pages",
                                            "SELECT name FROM pages",
                                            "INSERT INTO t SELECT count(*) FROM dbstat"};
        runAsCairn(db, &pc, reads[i], out, sizeof out);
        if (strstr(out, "error:refused by cairn's statement policy") == NULL) {
            fail_msg("%s: %s", reads[i], out);
        }
    }
    runAsCairn(db, &pc, "DROP TABLE pages", out, sizeof out);
    assert_string_equal(out, "ok");
    runAsCairn(db, &pc, "INSERT INTO t VALUES(1)", out, sizeof out);
    assert_string_equal(out, "ok");
    sqlite3_close(db);
    remove(path);
    snprintf(file, sizeof file, "%s-journal", path);
    remove(file);
}

/* The write step budget counts progress callbacks, which SQLite makes for a virtual
 * table module's own statements too (FTS5's, run while the user's statement runs or is
 * prepared) at points that depended on each such statement's steps since it was
 * prepared: the same FTS5 write took more of the budget on a node that had run FTS5
 * writes before than on one that had just started, and a write near the budget failed
 * on one node only. Each write now counts the same wherever it runs. */
static void test_fts5_write_takes_the_same_steps_on_every_connection(void **state)
{
    char path[] = "/tmp/cairn-test-policy-XXXXXX";
    char file[64], out[1024], sql[4096];
    struct policy_conn warm_pc, fresh_pc;
    sqlite3 *warm, *fresh;
    uint64_t ticks[2];
    size_t n;
    int fd;
    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    warm = openWriter(path, &warm_pc);
    runAsCairn(warm, &warm_pc, "CREATE VIRTUAL TABLE docs USING fts5(body)", out, sizeof out);
    assert_string_equal(out, "ok");
    for (int k = 0; k < 12; k++) {
        n = (size_t)snprintf(sql, sizeof sql,
                             "INSERT INTO docs SELECT 'w%d ' || value || ' x y' FROM json_each('[", k);
        for (int j = 0; j < 300; j++) {
            n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%d", j ? "," : "", j);
        }
        snprintf(sql + n, sizeof sql - n, "]')");
        fresh = openWriter(path, &fresh_pc);
        /* The same write on each, then undone (as on another node, the file is the
         * same before it). */
        policyWriteBegin(&warm_pc, 1000000000000ull);
        runAsCairn(warm, &warm_pc, sql, out, sizeof out);
        assert_string_equal(out, "ok");
        ticks[0] = warm_pc.ticks;
        policyEnd(&warm_pc);
        runAsCairn(warm, &warm_pc, "DELETE FROM docs WHERE body LIKE 'w%'", out, sizeof out);
        assert_string_equal(out, "ok");
        policyWriteBegin(&fresh_pc, 1000000000000ull);
        runAsCairn(fresh, &fresh_pc, sql, out, sizeof out);
        assert_string_equal(out, "ok");
        ticks[1] = fresh_pc.ticks;
        policyEnd(&fresh_pc);
        runAsCairn(fresh, &fresh_pc, "DELETE FROM docs WHERE body LIKE 'w%'", out, sizeof out);
        assert_string_equal(out, "ok");
        if (ticks[0] != ticks[1]) {
            fail_msg("write %d: %llu progress ticks on a warm connection, %llu on a fresh one", k,
                     (unsigned long long)ticks[0], (unsigned long long)ticks[1]);
        }
        sqlite3_close(fresh);
    }
    sqlite3_close(warm);
    remove(path);
    snprintf(file, sizeof file, "%s-journal", path);
    remove(file);
}

/* A sort over an endless recursive CTE spills into temporary files without end: it
 * stops at the statement's temp limit, naming it; a sort that spills within the limit
 * runs; the next statement counts from nothing. */
static void test_temp_files_are_bounded(void **state)
{
    sqlite3 *db = NULL;
    struct policy_conn pc;
    char out[1024];
    (void)state;
    assert_int_equal(sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     PAGESUM_VFS),
                     SQLITE_OK);
    policyInstall(db, &pc, 0, NULL);
    pc.temp_limit = 4u << 20;
    runCounted(db, &pc,
               "SELECT count(*) FROM (SELECT randomblob(1000) AS b FROM (WITH RECURSIVE c(x) AS "
               "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c) ORDER BY b)",
               out, sizeof out);
    assert_non_null(strstr(out, "error:the statement needed more than its limit of 4194304 "
                                "bytes of temporary files"));
    assert_int_equal(pc.trip, POLICY_TRIP_TEMP);
    assert_true(pc.mem.temp_used <= pc.temp_limit);
    /* 3 MB sorted (and kept DISTINCT) with a cache of 2 MB: spills, within a limit of
     * 16 MiB. */
    pc.temp_limit = 16u << 20;
    runCounted(db, &pc,
               "SELECT count(DISTINCT b) FROM (SELECT randomblob(1000) AS b FROM (WITH RECURSIVE "
               "c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) SELECT x FROM c) "
               "ORDER BY b)",
               out, sizeof out);
    assert_string_equal(out, "ok:3000");
    assert_int_equal(pc.trip, POLICY_TRIP_NONE);
    assert_true(pc.mem.temp_used > 0 && pc.mem.temp_used <= pc.temp_limit);
    sqlite3_close(db);
}

/* The write growth bound counts the bytes of the values of the rows a write changes
 * (the preupdate hook of policyReplicated): inserts add, deletes take away, an update
 * counts new less old; past the bound the progress handler stops the statement as its
 * own outcome (POLICY_TRIP_GROWTH), naming the limit and the flag. Values, not pages:
 * the count is the same whatever the file's layout (with page checksums or not). */
static void test_growth_bound_counts_values(void **state)
{
    struct policy_conn pc;
    char out[1024], want[64];
    (void)state;
    for (int checksums = 0; checksums < 2; checksums++) {
        sqlite3 *db = NULL;
        int64_t used[3];
        assert_int_equal(sqlite3_open_v2(":memory:", &db,
                                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                         checksums ? PAGESUM_VFS : NULL),
                         SQLITE_OK);
        if (checksums) {
            int reserve = PAGESUM_RESERVE;
            sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &reserve);
        }
        sqlite3_extended_result_codes(db, 1);
        policyInstall(db, &pc, 0, NULL);
        policyReplicated(db, &pc);
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, b)", NULL,
                                      NULL, NULL),
                         SQLITE_OK);
        pc.growth_limit = 1u << 20;
        pc.growth_used = 0;
        runAsCairn(db, &pc,
                   "INSERT INTO t(b) SELECT zeroblob(1000) FROM (WITH RECURSIVE c(x) AS "
                   "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c)",
                   out, sizeof out);
        assert_string_equal(out, "ok");
        used[0] = pc.growth_used; /* 100 rows: 1000 bytes and an integer key each */
        assert_true(used[0] >= 100 * 1000 && used[0] <= 100 * 1016);
        runAsCairn(db, &pc, "UPDATE t SET b = zeroblob(500) WHERE k <= 10", out, sizeof out);
        assert_string_equal(out, "ok");
        used[1] = pc.growth_used;
        assert_int_equal(used[0] - used[1], 10 * 500);
        runAsCairn(db, &pc, "DELETE FROM t WHERE k > 50", out, sizeof out);
        assert_string_equal(out, "ok");
        used[2] = pc.growth_used;
        assert_true(used[1] - used[2] >= 50 * 1000);
        /* Past the bound: stopped as the statement's own outcome. */
        runAsCairn(db, &pc,
                   "INSERT INTO t(b) SELECT zeroblob(10000) FROM (WITH RECURSIVE c(x) AS "
                   "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c)",
                   out, sizeof out);
        snprintf(want, sizeof want, "limit of %u bytes", 1u << 20);
        assert_non_null(strstr(out, "error:the write would grow the database by more than its"));
        assert_non_null(strstr(out, want));
        assert_non_null(strstr(out, "--max-write-growth"));
        assert_int_equal(pc.trip, POLICY_TRIP_GROWTH);
        assert_true(policyStatementTrip(&pc));
        /* No bound: nothing counted, nothing stopped. */
        pc.growth_limit = 0;
        pc.growth_used = 0;
        runAsCairn(db, &pc, "INSERT INTO t(b) VALUES(zeroblob(3000000))", out, sizeof out);
        assert_string_equal(out, "ok");
        assert_int_equal(pc.growth_used, 0);
        sqlite3_close(db);
    }
}

/* A statement's parse tree is made of small blocks: preparing a huge IN list counts
 * every one of them against the statement's memory limit and stops at it. */
static void test_preparing_is_bounded(void **state)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    struct policy_conn pc;
    struct buf sql;
    char msg[512];
    const char *m;
    int rc;
    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    policyInstall(db, &pc, 1000000, NULL);
    bufInit(&sql);
    bufPut(&sql, "SELECT 1 WHERE 5 IN (0", 22);
    for (int i = 1; i < 3000000; i++) {
        char term[16];
        int n = snprintf(term, sizeof term, ",%d", i);
        bufPut(&sql, term, (size_t)n);
    }
    bufPut(&sql, ")", 1);
    assert_false(sql.oom);
    rc = policyPrepare(&pc, db, (const char *)sql.p, (int)sql.len, &st, NULL);
    assert_int_equal(rc & 0xff, SQLITE_NOMEM);
    assert_null(st);
    assert_int_equal(pc.trip, POLICY_TRIP_MEMORY);
    m = policyMessage(&pc, rc, msg, sizeof msg);
    assert_non_null(m);
    assert_non_null(strstr(m, "memory limit of 268435456 bytes"));
    assert_non_null(strstr(m, "prepared"));
    /* An ordinary statement prepares and runs after it. */
    rc = policyPrepare(&pc, db, "SELECT 5 IN (1, 5, 9)", -1, &st, NULL);
    assert_int_equal(rc, SQLITE_OK);
    assert_int_equal(policyStep(&pc, st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    bufFree(&sql);
    sqlite3_close(db);
}

int main(void)
{
    /* Before SQLite initialises, as the server does (it also registers the VFS whose
     * temporary files the temp limit counts). */
    pagesumRegister();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_functions_match_sqlite),
        cmocka_unit_test(test_like_and_glob_match_sqlite),
        cmocka_unit_test(test_like_work_is_bounded),
        cmocka_unit_test(test_functions_are_linear),
        cmocka_unit_test(test_text_check),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_statement_memory_is_bounded),
        cmocka_unit_test(test_fts5_works_and_data_version_stays_refused),
        cmocka_unit_test(test_dbstat_table_of_another_name_is_not_read_by_writes),
        cmocka_unit_test(test_fts5_write_takes_the_same_steps_on_every_connection),
        cmocka_unit_test(test_temp_files_are_bounded),
        cmocka_unit_test(test_preparing_is_bounded),
        cmocka_unit_test(test_growth_bound_counts_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
