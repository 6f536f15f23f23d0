/* Unit tests of the read-only snapshot reader (src/backup/snapread.c) on real SQLite files in a
 * temporary directory, written by connections of this process (and, where checkpoints
 * must race the reader, by a forked writer): rollback-journal databases, WAL databases
 * whose frames are not checkpointed, many versions of one page, uncommitted trailing
 * frames, a database that grew then shrank, a WAL restarted with new salts, every
 * read-lock slot busy, a damaged or truncated WAL (with and without a live wal-index),
 * a source deleted while it is read, files that are not databases. Each snapshot is
 * written out page by page and opened with SQLite: its rows must be those of the
 * committed state it was taken at. And the source is never written: the database and
 * its WAL keep their bytes and their mtime across every snapshot. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup.h"
#include "cairn.h"
#include "error.h"
#include "snapread.h"

struct fx {
    char dir[PATH_MAX];
    char db[PATH_MAX];
    char wal[PATH_MAX + 8];
    char shm[PATH_MAX + 8];
    char out[PATH_MAX];
};

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(f->dir, sizeof f->dir, "%s/cairn-snapread-test-XXXXXX", base);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/db.sqlite", f->dir);
    snprintf(f->wal, sizeof f->wal, "%s-wal", f->db);
    snprintf(f->shm, sizeof f->shm, "%s-shm", f->db);
    snprintf(f->out, sizeof f->out, "%s/out.sqlite", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->dir, rmOne, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- SQLite helpers ---- */

static sqlite3 *dbOpen(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static void dbExec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s: %s", sql, err);
    }
}

static int64_t dbInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Close without the checkpoint (and WAL removal) of a last connection: the WAL stays as
 * it is, for a later opener to recover. */
static void dbCloseKeepWal(sqlite3 *db)
{
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A WAL database with table t(id, v) of `rows` rows, checkpointed, and a writer
 * connection left open on it that never checkpoints by itself. */
static sqlite3 *walDb(const char *path, int rows)
{
    sqlite3 *db = dbOpen(path);
    char sql[256];
    dbExec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d) "
             "INSERT INTO t(v) SELECT randomblob(300 + i %% 900) FROM c",
             rows);
    dbExec(db, sql);
    dbExec(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint=0");
    return db;
}

/* One transaction of `rows` new rows. */
static void addRows(sqlite3 *db, int rows)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d) "
             "INSERT INTO t(v) SELECT randomblob(200 + abs(random()) %% 1500) FROM c",
             rows);
    dbExec(db, sql);
}

/* What a connection sees of t: a digest of every row, in order. */
static uint64_t rowsOf(sqlite3 *db)
{
    sqlite3_stmt *st;
    XXH3_state_t *h = XXH3_createState();
    uint64_t d;
    XXH3_64bits_reset(h);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, v FROM t ORDER BY id", -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        XXH3_64bits_update(h, &id, sizeof id);
        XXH3_64bits_update(h, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    }
    sqlite3_finalize(st);
    d = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return d;
}

/* The committed state of the database at path, as a new reader sees it now. */
static uint64_t rowsAt(const char *path)
{
    sqlite3 *db;
    uint64_t d;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    d = rowsOf(db);
    sqlite3_close(db);
    return d;
}

/* ---- the source is never written ---- */

struct fileState {
    bool exists;
    off_t size;
    struct timespec mtime;
    uint64_t digest;
};

static struct fileState fileState(const char *path)
{
    struct fileState s = {0};
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return s;
    }
    assert_int_equal(fstat(fd, &st), 0);
    s.exists = true;
    s.size = st.st_size;
    s.mtime = st.st_mtim;
    if (st.st_size > 0) {
        void *p = malloc((size_t)st.st_size);
        assert_non_null(p);
        assert_int_equal(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
        s.digest = XXH3_64bits(p, (size_t)st.st_size);
        free(p);
    }
    close(fd);
    return s;
}

static void assertSameFile(const char *path, struct fileState a)
{
    struct fileState b = fileState(path);
    assert_int_equal(a.exists, b.exists);
    assert_int_equal(a.size, b.size);
    assert_true(a.digest == b.digest);
    assert_int_equal(a.mtime.tv_sec, b.mtime.tv_sec);
    assert_int_equal(a.mtime.tv_nsec, b.mtime.tv_nsec);
}

/* ---- snapshots ---- */

/* Read every page of an open snapshot, in chunks of 7 pages (chunks cross whatever
 * boundaries the WAL's pages make), into `out`, marked as a rollback-journal database
 * so that SQLite opens it alone. */
static void writeOut(struct snapread *s, const char *out)
{
    struct snapread_info si;
    unsigned char *buf;
    int fd;
    snapreadGetInfo(s, &si);
    buf = malloc(7 * (size_t)si.page_size);
    assert_non_null(buf);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    for (uint64_t p = 0; p < si.page_count; p += 7) {
        uint32_t n = si.page_count - p < 7 ? (uint32_t)(si.page_count - p) : 7;
        int err = snapreadPages(s, p, n, buf);
        if (err != 0) {
            fail_msg("read pages %llu..: %d", (unsigned long long)p + 1, err);
        }
        if (p == 0) {
            buf[18] = buf[19] = 1;
        }
        assert_int_equal(pwrite(fd, buf, (size_t)n * si.page_size, (off_t)(p * si.page_size)),
                         (ssize_t)n * si.page_size);
    }
    close(fd);
    free(buf);
}

/* The rows of a snapshot written out, after its integrity check. */
static uint64_t rowsOut(const char *out)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    uint64_t d;
    assert_int_equal(sqlite3_open_v2(out, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    d = rowsOf(db);
    sqlite3_close(db);
    return d;
}

/* Take a snapshot of f->db, write it to f->out, close it; the database and its WAL
 * are exactly as before. Returns the snapshot's info. */
static struct snapread_info snapshot(struct fx *f)
{
    struct fileState db = fileState(f->db), wal = fileState(f->wal);
    struct snapread *s;
    struct snapread_info si;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = snapreadOpen(f->db, &s, errmsg);
    if (rv != 0) {
        fail_msg("snapreadOpen: %s", errmsg);
    }
    snapreadGetInfo(s, &si);
    writeOut(s, f->out);
    if (snapreadCheck(s, errmsg) != 0) {
        fail_msg("snapreadCheck: %s", errmsg);
    }
    snapreadClose(s);
    assertSameFile(f->db, db);
    assertSameFile(f->wal, wal);
    return si;
}

static uint32_t walFrames(struct fx *f, uint32_t page_size)
{
    struct stat st;
    if (stat(f->wal, &st) != 0 || st.st_size < 32) {
        return 0;
    }
    return (uint32_t)((st.st_size - 32) / (24 + page_size));
}

static void flipByte(const char *path, off_t off)
{
    unsigned char c;
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0xff;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static off_t frameData(uint32_t frame, uint32_t page_size)
{
    return 32 + (off_t)(frame - 1) * (24 + page_size) + 24;
}

/* ---- tests ---- */

static void test_rollback_journal(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = dbOpen(f->db), *other;
    struct snapread *s;
    struct snapread_info si;
    char errmsg[CAIRN_ERRMSG_SIZE];
    uint64_t committed;

    dbExec(w, "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    addRows(w, 300);
    committed = rowsAt(f->db);
    /* A writer in the middle of its transaction: not in the snapshot. */
    dbExec(w, "BEGIN IMMEDIATE");
    addRows(w, 50);
    si = snapshot(f);
    assert_false(si.wal);
    assert_int_equal(si.read_slot, -1);
    assert_int_equal(si.mx_frame, 0);
    assert_true(si.page_count > 50);
    assert_true(rowsOut(f->out) == committed);

    /* While the snapshot is held, the writer cannot commit (it waits for the SHARED
     * lock to go); once released it can. */
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    sqlite3_busy_timeout(w, 0);
    assert_int_equal(sqlite3_exec(w, "COMMIT", NULL, NULL, NULL), SQLITE_BUSY);
    writeOut(s, f->out);
    snapreadClose(s);
    assert_true(rowsOut(f->out) == committed);
    dbExec(w, "COMMIT");
    other = dbOpen(f->db);
    assert_int_equal(dbInt(other, "SELECT count(*) FROM t"), 350);
    sqlite3_close(other);
    sqlite3_close(w);
    snapshot(f);
    assert_true(rowsOut(f->out) == rowsAt(f->db));
}

static void test_wal_frames_not_checkpointed(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 200);
    struct snapread_info si;

    for (int i = 0; i < 5; i++) {
        addRows(w, 40);
    }
    si = snapshot(f);
    assert_true(si.wal);
    assert_true(si.read_slot >= 1);
    assert_int_equal(si.mx_frame, walFrames(f, si.page_size));
    assert_int_equal(si.read_mark, si.mx_frame);
    assert_true(si.wal_pages > 0);
    assert_int_equal(si.page_count, dbInt(w, "PRAGMA page_count"));
    assert_true(rowsOut(f->out) == rowsOf(w));
    /* The file alone is older: its rows are not the committed ones. */
    {
        struct stat st;
        assert_int_equal(stat(f->db, &st), 0);
        assert_true((uint64_t)st.st_size < si.page_count * si.page_size);
    }
    sqlite3_close(w);
}

static void test_wal_many_versions_of_one_page(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 50);
    struct snapread_info si;
    char sql[128];

    for (int i = 0; i < 120; i++) {
        snprintf(sql, sizeof sql, "UPDATE t SET v = zeroblob(%d) WHERE id = 7", 100 + i);
        dbExec(w, sql);
    }
    si = snapshot(f);
    assert_true(si.mx_frame >= 120);
    assert_true(si.wal_pages < 10); /* many frames, few pages */
    assert_true(rowsOut(f->out) == rowsOf(w));
    {
        sqlite3 *o;
        assert_int_equal(sqlite3_open_v2(f->out, &o, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(dbInt(o, "SELECT length(v) FROM t WHERE id = 7"), 219);
        sqlite3_close(o);
    }
    sqlite3_close(w);
}

static void test_wal_uncommitted_trailing_frames(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 100);
    struct snapread_info si;
    uint64_t committed;

    addRows(w, 30);
    committed = rowsOf(w);
    /* A tiny cache: the open transaction spills its pages into the WAL, as frames that
     * no commit frame follows. */
    dbExec(w, "PRAGMA cache_size=5; BEGIN");
    addRows(w, 600);
    si = snapshot(f);
    assert_true(walFrames(f, si.page_size) > si.mx_frame + 20);
    assert_true(rowsOut(f->out) == committed);
    dbExec(w, "COMMIT");
    si = snapshot(f);
    assert_int_equal(si.mx_frame, walFrames(f, si.page_size));
    assert_true(rowsOut(f->out) == rowsOf(w));
    sqlite3_close(w);
}

static void test_database_grew_and_shrank(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = dbOpen(f->db);
    struct snapread_info si;
    struct stat st;
    int64_t big;

    /* auto_vacuum: a delete gives the pages back, and the commit frame's size drops. */
    dbExec(w, "PRAGMA auto_vacuum=FULL; PRAGMA journal_mode=WAL;"
              "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); PRAGMA wal_autocheckpoint=0");
    addRows(w, 1500);
    big = dbInt(w, "PRAGMA page_count");
    dbExec(w, "DELETE FROM t WHERE id > 100");
    si = snapshot(f);
    assert_int_equal(si.page_count, dbInt(w, "PRAGMA page_count"));
    assert_true((int64_t)si.page_count < big / 4);
    assert_true(rowsOut(f->out) == rowsOf(w));
    assert_int_equal(stat(f->out, &st), 0);
    assert_int_equal(st.st_size, (off_t)(si.page_count * si.page_size));

    /* Grown into the file by a checkpoint, then shrunk in the WAL only: the file is
     * longer than the snapshot. */
    addRows(w, 1500);
    dbExec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    dbExec(w, "DELETE FROM t WHERE id > 50");
    si = snapshot(f);
    assert_int_equal(stat(f->db, &st), 0);
    assert_true((uint64_t)st.st_size > 4 * si.page_count * si.page_size);
    assert_int_equal(si.page_count, dbInt(w, "PRAGMA page_count"));
    assert_true(rowsOut(f->out) == rowsOf(w));
    sqlite3_close(w);
}

static void walSalt(struct fx *f, unsigned char salt[8])
{
    int fd = open(f->wal, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, salt, 8, 16), 8);
    close(fd);
}

static void test_wal_restarted_with_new_salts(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 100);
    struct snapread_info si;
    unsigned char salt1[8], salt2[8];
    uint32_t frames_before;

    for (int i = 0; i < 6; i++) {
        addRows(w, 60);
    }
    walSalt(f, salt1);
    frames_before = walFrames(f, 4096);
    /* Every frame checkpointed, no reader: the next commit starts the WAL over, with new
     * salts, at frame 1, leaving the old frames after its own. */
    dbExec(w, "PRAGMA wal_checkpoint(PASSIVE)");
    addRows(w, 5);
    walSalt(f, salt2);
    assert_memory_not_equal(salt1, salt2, 8);
    assert_int_equal(walFrames(f, 4096), frames_before);
    si = snapshot(f);
    assert_true(si.mx_frame > 0 && si.mx_frame < frames_before / 2);
    assert_true(rowsOut(f->out) == rowsOf(w));

    /* And with no connection left, SQLite's recovery reads the WAL anew: the frames of
     * the old salts after the new ones are not the snapshot's. */
    {
        uint64_t committed = rowsOf(w);
        dbCloseKeepWal(w);
        si = snapshot(f);
        assert_true(si.mx_frame > 0 && si.mx_frame < frames_before / 2);
        assert_true(rowsOut(f->out) == committed);
        assert_true(rowsAt(f->db) == committed);
    }
}

static void test_every_read_slot_busy(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 100);
    sqlite3 *readers[4];
    struct snapread_info si;

    /* Four readers, each begun after one more commit, each on its own slot with its own
     * read mark: the snapshot's connection finds no slot to set to its mxFrame and
     * takes the one with the largest mark below it. Its snapshot is still the newest
     * commit, not the mark. */
    for (int i = 0; i < 4; i++) {
        addRows(w, 20);
        readers[i] = dbOpen(f->db);
        dbExec(readers[i], "BEGIN");
        assert_true(dbInt(readers[i], "SELECT count(*) FROM t") > 0);
    }
    addRows(w, 25);
    addRows(w, 25);
    si = snapshot(f);
    assert_int_equal(si.read_slot, 4);
    assert_int_equal(si.mx_frame, walFrames(f, si.page_size));
    assert_true(si.read_mark < si.mx_frame);
    assert_true(rowsOut(f->out) == rowsOf(w));
    for (int i = 0; i < 4; i++) {
        dbExec(readers[i], "COMMIT");
        sqlite3_close(readers[i]);
    }
    sqlite3_close(w);
}

/* Ten transactions after a checkpoint; states[i] is the rows after the i-th, ends[i]
 * the WAL's frame count after it. */
static sqlite3 *tenTransactions(struct fx *f, uint64_t states[11], uint32_t ends[11])
{
    sqlite3 *w = walDb(f->db, 100);
    states[0] = rowsOf(w);
    ends[0] = 0;
    for (int i = 1; i <= 10; i++) {
        addRows(w, 30);
        states[i] = rowsOf(w);
        ends[i] = walFrames(f, 4096);
    }
    return w;
}

static void test_damaged_wal_is_read_as_sqlite_recovers_it(void **state)
{
    struct fx *f = *state;
    uint64_t states[11];
    uint32_t ends[11];
    struct snapread_info si;
    sqlite3 *w = tenTransactions(f, states, ends);

    /* A bad checksum in a frame of the 6th transaction, and no connection left:
     * SQLite's recovery keeps the frames before it, up to the 5th commit. */
    dbCloseKeepWal(w);
    flipByte(f->wal, frameData(ends[5] + 2, 4096) + 100);
    si = snapshot(f);
    assert_int_equal(si.mx_frame, ends[5]);
    assert_true(rowsOut(f->out) == states[5]);
    assert_true(rowsAt(f->db) == states[5]);
}

static void test_damaged_wal_under_a_live_index_fails(void **state)
{
    struct fx *f = *state;
    uint64_t states[11];
    uint32_t ends[11];
    struct snapread *s = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    sqlite3 *w = tenTransactions(f, states, ends);
    char want[64];

    /* The wal-index of a live connection holds all ten: the damaged frame is inside the
     * snapshot, whose pages SQLite would serve unchecked. A backup refuses it. */
    flipByte(f->wal, frameData(ends[5] + 2, 4096) + 100);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), CAIRN_ECORRUPT);
    assert_null(s);
    snprintf(want, sizeof want, "frame %u of", ends[5] + 2);
    assert_non_null(strstr(errmsg, want));
    assert_non_null(strstr(errmsg, f->wal));
    sqlite3_close(w);
}

static void test_truncated_wal(void **state)
{
    struct fx *f = *state;
    uint64_t states[11];
    uint32_t ends[11];
    struct snapread *s = NULL;
    struct snapread_info si;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    sqlite3 *w = tenTransactions(f, states, ends);

    /* Under a live index: the frames it names are missing. */
    assert_int_equal(truncate(f->wal, frameData(ends[9] + 1, 4096)), 0);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "cut short"));
    /* With no connection left, recovery reads what is whole: up to the 7th commit when
     * the WAL ends inside a frame of the 8th. */
    dbCloseKeepWal(w);
    assert_int_equal(truncate(f->wal, frameData(ends[7] + 1, 4096) + 10), 0);
    si = snapshot(f);
    assert_int_equal(si.mx_frame, ends[7]);
    assert_true(rowsOut(f->out) == states[7]);
}

static void test_source_deleted_while_read(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 300);
    struct snapread *s;
    char errmsg[CAIRN_ERRMSG_SIZE];
    uint64_t committed;

    addRows(w, 100);
    committed = rowsOf(w);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    sqlite3_close(w);
    assert_int_equal(unlink(f->db), 0);
    assert_int_equal(unlink(f->wal), 0);
    unlink(f->shm);
    writeOut(s, f->out);
    snapreadClose(s);
    assert_true(rowsOut(f->out) == committed);
}

static void test_not_databases(void **state)
{
    struct fx *f = *state;
    struct snapread *s = (struct snapread *)1;
    struct snapread_info si;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int fd;

    assert_int_equal(snapreadOpen(f->db, &s, errmsg), CAIRN_ENOTFOUND);
    assert_null(s);
    assert_non_null(strstr(errmsg, f->db));

    fd = open(f->db, O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, "this is not a database\n", 23), 23);
    close(fd);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "not a SQLite database"));
    {
        char big[8192];
        memset(big, 'x', sizeof big);
        fd = open(f->db, O_WRONLY | O_TRUNC);
        assert_int_equal(write(fd, big, sizeof big), (ssize_t)sizeof big);
        close(fd);
        assert_int_equal(snapreadOpen(f->db, &s, errmsg), CAIRN_ECORRUPT);
    }
    assert_int_equal(snapreadOpen(f->dir, &s, errmsg), CAIRN_EINVAL);

    /* An empty file is a database of no pages. */
    assert_int_equal(truncate(f->db, 0), 0);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    snapreadGetInfo(s, &si);
    assert_int_equal(si.page_count, 0);
    snapreadClose(s);
    assert_int_equal(access(f->wal, F_OK), -1);
}

/* A forked writer commits groups of 10 rows and checkpoints as often as it can while the
 * snapshot is held: the checkpoints write the database file under the reader, up to
 * its read mark, and the snapshot stays the one it was. */
static void test_consistent_while_checkpoints_run(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 200), *r;
    struct snapread *s;
    struct snapread_info si;
    struct fileState before;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int64_t lo, hi, got;
    int ready[2];
    pid_t pid;
    char c;

    for (int i = 0; i < 20; i++) {
        addRows(w, 10);
    }
    sqlite3_close(w);
    assert_int_equal(pipe(ready), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *db;
        close(ready[0]);
        if (sqlite3_open(f->db, &db) != SQLITE_OK) {
            _exit(1);
        }
        sqlite3_busy_timeout(db, 5000);
        sqlite3_exec(db, "PRAGMA wal_autocheckpoint=5", NULL, NULL, NULL);
        for (int n = 0;; n++) {
            sqlite3_exec(db,
                         "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
                         "WHERE i < 10) INSERT INTO t(v) SELECT randomblob(500) FROM c",
                         NULL, NULL, NULL);
            if (n % 10 == 0) {
                sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            }
            if (n == 30 && write(ready[1], "x", 1) != 1) {
                _exit(1);
            }
        }
    }
    close(ready[1]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    r = dbOpen(f->db);
    lo = dbInt(r, "SELECT count(*) FROM t");
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    hi = dbInt(r, "SELECT count(*) FROM t");
    before = fileState(f->db);
    /* Let the writer go on, checkpointing up to our mark, for a few hundred commits. */
    while (dbInt(r, "SELECT count(*) FROM t") < hi + 3000) {
        usleep(1000);
    }
    writeOut(s, f->out);
    snapreadGetInfo(s, &si);
    snapreadClose(s);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(ready[0]);
    sqlite3_close(r);
    {
        sqlite3 *o;
        assert_true(rowsOut(f->out) != 0);
        assert_int_equal(sqlite3_open_v2(f->out, &o, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        got = dbInt(o, "SELECT count(*) FROM t");
        sqlite3_close(o);
    }
    assert_true(got >= lo && got <= hi);
    assert_int_equal(got % 10, 0);
    /* The checkpoints did write the file while the snapshot was held. */
    {
        struct fileState after = fileState(f->db);
        assert_true(after.digest != before.digest || si.mx_frame == 0);
    }
}

/* The smallest and the largest page (SQLite writes 65536 as 1, in the file's header and
 * in the wal-index's), with frames in the WAL, and without a -shm. */
static void test_page_sizes(void **state)
{
    struct fx *f = *state;
    const int sizes[] = {512, 65536};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        char sql[128];
        sqlite3 *w;
        struct snapread_info si;
        unlink(f->db);
        w = dbOpen(f->db);
        snprintf(sql, sizeof sql, "PRAGMA page_size=%d", sizes[k]);
        dbExec(w, sql);
        dbExec(w, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                  "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
        for (int i = 0; i < 8; i++) {
            addRows(w, 40);
        }
        si = snapshot(f);
        assert_int_equal(si.page_size, sizes[k]);
        assert_true(si.mx_frame > 0 && !si.shm_free);
        assert_true(rowsOut(f->out) == rowsOf(w));
        dbCloseKeepWal(w);
        assert_int_equal(unlink(f->shm), 0);
        si = snapshot(f);
        assert_int_equal(si.page_size, sizes[k]);
        assert_true(si.mx_frame > 0 && si.shm_free);
        assert_true(rowsOut(f->out) == rowsAt(f->db));
        unlink(f->wal);
        unlink(f->shm);
    }
}

/* A WAL database that no process has open: its last connection removed the -wal and
 * the -shm. The snapshot creates neither. */
/* SQL over the snapshot (snapreadSql): a query sees the snapshot's state, WAL frames
 * included, not what a writer commits after it was taken; it cannot write; and it opens
 * nothing beside the database. The idle database (no -shm) likewise. */
static void test_sql_reads_the_snapshot(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 100);
    struct snapread *s;
    sqlite3 *q;
    char errmsg[256];
    int64_t before, sum;

    addRows(w, 30); /* in WAL frames */
    before = dbInt(w, "SELECT count(*) FROM t");
    sum = dbInt(w, "SELECT sum(length(v)) FROM t");
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    addRows(w, 20); /* after the snapshot */
    assert_int_equal(snapreadSql(s, &q, errmsg), 0);
    assert_int_equal(dbInt(q, "SELECT count(*) FROM t"), before);
    assert_int_equal(dbInt(q, "SELECT sum(length(v)) FROM t"), sum);
    assert_int_not_equal(sqlite3_exec(q, "CREATE TABLE x(a)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(q);
    snapreadClose(s);
    assert_int_equal(dbInt(w, "SELECT count(*) FROM t"), before + 20);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);

    /* No process has it open now: the snapshot is taken without SQLite. */
    assert_int_equal(access(f->shm, F_OK), -1);
    assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
    assert_int_equal(snapreadSql(s, &q, errmsg), 0);
    assert_int_equal(dbInt(q, "SELECT count(*) FROM t"), before + 20);
    sqlite3_close(q);
    snapreadClose(s);
    assert_int_equal(access(f->shm, F_OK), -1);
    assert_int_equal(access(f->wal, F_OK), -1);
}

static void test_idle_wal_database_gets_nothing_beside_it(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 400);
    struct snapread_info si;
    uint64_t committed;

    addRows(w, 50);
    committed = rowsOf(w);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    assert_int_equal(access(f->wal, F_OK), -1);
    assert_int_equal(access(f->shm, F_OK), -1);
    si = snapshot(f);
    assert_true(si.wal && si.shm_free);
    assert_int_equal(si.read_slot, -1);
    assert_int_equal(si.mx_frame, 0);
    assert_true(rowsOut(f->out) == committed);
    assert_int_equal(access(f->wal, F_OK), -1);
    assert_int_equal(access(f->shm, F_OK), -1);
}

/* A WAL left with frames and no -shm (its writer crashed, and the -shm went): read as
 * SQLite's recovery reads it, up to the last commit before a damaged frame. */
static void test_leftover_wal_without_shm_is_read_as_recovered(void **state)
{
    struct fx *f = *state;
    uint64_t states[11];
    uint32_t ends[11];
    struct snapread_info si;
    sqlite3 *w = tenTransactions(f, states, ends);

    dbCloseKeepWal(w);
    assert_int_equal(unlink(f->shm), 0);
    si = snapshot(f);
    assert_true(si.shm_free);
    assert_int_equal(si.mx_frame, ends[10]);
    assert_true(rowsOut(f->out) == states[10]);
    assert_int_equal(access(f->shm, F_OK), -1);

    flipByte(f->wal, frameData(ends[6] + 1, 4096) + 4000);
    si = snapshot(f);
    assert_true(si.shm_free);
    assert_int_equal(si.mx_frame, ends[6]);
    assert_true(rowsOut(f->out) == states[6]);
    assert_int_equal(access(f->shm, F_OK), -1);
    /* SQLite, recovering it now, agrees. */
    assert_true(rowsAt(f->db) == states[6]);
}

/* A program that opens an idle database while it is read, without SQLite's locks, is
 * caught once the pages are read, and the backup is not kept. */
static void test_a_program_opening_it_meanwhile_is_caught(void **state)
{
    struct fx *f = *state;
    sqlite3 *w = walDb(f->db, 200);
    struct backup_source src = {.fd = -1, .source = f->db};
    struct backup_options opt = {.type = BACKUP_FULL};
    struct backup_info info;
    char tmp[PATH_MAX], repo[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    struct snapread *s;
    pid_t pid;
    int status;

    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    snprintf(repo, sizeof repo, "%s/repo", f->dir);
    opt.repo = repo;
    for (int with_engine = 0; with_engine < 2; with_engine++) {
        if (with_engine) {
            assert_int_equal(backupSnapshotFile(f->db, NULL, &src, tmp, errmsg), 0);
            assert_string_equal(tmp, "");
            s = src.snap;
        } else {
            assert_int_equal(snapreadOpen(f->db, &s, errmsg), 0);
        }
        {
            struct snapread_info si;
            snapreadGetInfo(s, &si);
            assert_true(si.shm_free);
        }
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            sqlite3 *db;
            if (sqlite3_open(f->db, &db) != SQLITE_OK ||
                sqlite3_exec(db, "INSERT INTO t(v) VALUES(x'01')", NULL, NULL, NULL) != SQLITE_OK) {
                _exit(1);
            }
            sqlite3_close(db); /* cannot remove its -wal and -shm: we hold SHARED */
            _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(access(f->shm, F_OK), 0);
        if (with_engine) {
            assert_int_equal(backupCreate(&src, &opt, &info, errmsg), CAIRN_EBUSY);
            backupSnapshotRelease(&src, tmp);
        } else {
            assert_int_equal(snapreadCheck(s, errmsg), CAIRN_EBUSY);
            snapreadClose(s);
        }
        assert_non_null(strstr(errmsg, "run the backup again"));
        /* Nobody holds it now: make it idle again. */
        w = dbOpen(f->db);
        assert_int_equal(dbInt(w, "SELECT count(*) FROM t"), 201 + with_engine);
        assert_int_equal(sqlite3_close(w), SQLITE_OK);
        assert_int_equal(access(f->shm, F_OK), -1);
    }
    {
        struct backup_info *all;
        size_t n;
        assert_int_equal(repoList(repo, &all, &n, errmsg), 0);
        assert_int_equal(n, 0);
        free(all);
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_rollback_journal),
        T(test_wal_frames_not_checkpointed),
        T(test_wal_many_versions_of_one_page),
        T(test_wal_uncommitted_trailing_frames),
        T(test_database_grew_and_shrank),
        T(test_wal_restarted_with_new_salts),
        T(test_every_read_slot_busy),
        T(test_damaged_wal_is_read_as_sqlite_recovers_it),
        T(test_damaged_wal_under_a_live_index_fails),
        T(test_truncated_wal),
        T(test_source_deleted_while_read),
        T(test_not_databases),
        T(test_consistent_while_checkpoints_run),
        T(test_page_sizes),
        T(test_sql_reads_the_snapshot),
        T(test_idle_wal_database_gets_nothing_beside_it),
        T(test_leftover_wal_without_shm_is_read_as_recovered),
        T(test_a_program_opening_it_meanwhile_is_caught),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
