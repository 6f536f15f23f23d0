/* Unit tests of the restore pipeline (src/backup/restore.c) and of the new files it
 * writes (src/lib/newfile.c): a chain longer than the files read at once, merged in
 * groups, restored byte for byte at every backup; every page written once; the new
 * file anonymous until placed, never replacing what it must not, and a dead writer's
 * hidden file swept while a live one's is kept; SQLite's check of a file of many
 * read-ahead chunks passes, and finds a damaged page at its end; a page restored from
 * any file of the chain is compared with the restored backup's manifest. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup.h"
#include "cairn.h"
#include "cbk.h"
#include "error.h"
#include "newfile.h"
#include "filefx.h"

struct fx {
    char dir[PATH_MAX];
    char repo[PATH_MAX];
    char db[PATH_MAX];
};

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/cairn-restore-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->repo, sizeof f->repo, "%s/repo", f->dir);
    snprintf(f->db, sizeof f->db, "%s/db.sqlite", f->dir);
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


static void mustBackupAs(const char *db, const char *repo, int type, uint32_t block_pages,
                         int codec, int level, struct backup_info *info)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct backup_source src = {open(db, O_RDONLY), 0, 0, db, NULL, false, {0}};
    struct backup_options opt = {.type = type, .repo = repo, .block_pages = block_pages,
                                 .codec = codec, .level = level};
    int rv;
    assert_true(src.fd >= 0);
    rv = backupCreate(&src, &opt, info, errmsg);
    close(src.fd);
    if (rv != 0) {
        fail_msg("backup: %s", errmsg);
    }
}

struct progress_log {
    int calls;
    uint64_t done, total;
};

static void onProgress(void *arg, uint64_t done, uint64_t total)
{
    struct progress_log *p = arg;
    assert_true(done <= total);
    assert_true(done >= p->done);
    p->calls++;
    p->done = done;
    p->total = total;
}

static void mustRestore(const char *repo, const char *ref, const char *out)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct progress_log pl = {0};
    struct restore_options opt = {
        repo, ref, out, true, onProgress, &pl, NULL, NULL, RESTORE_CHECK_FULL, false};
    if (backupRestore(&opt, NULL, errmsg) != 0) {
        fail_msg("restore %s: %s", ref, errmsg);
    }
    assert_int_equal(pl.done, pl.total);
}

/* Nothing in dir but the names given (NULL-terminated). */
static void assertOnly(const char *dir, const char *const *names)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        bool known = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
        for (const char *const *n = names; !known && *n != NULL; n++) {
            known = strcmp(e->d_name, *n) == 0;
        }
        if (!known) {
            fail_msg("%s holds %s", dir, e->d_name);
        }
    }
    closedir(d);
}

static void mustBackup(const char *db, const char *repo, int type, uint32_t block_pages,
                       struct backup_info *info)
{
    mustBackupAs(db, repo, type, block_pages, BACKUP_CODEC_DEFAULT, 0, info);
}

/* ---- chains ---- */

#define LONG_CHAIN 22 /* more files than a restore reads at once */

/* A full backup and LONG_CHAIN - 1 incrementals: rows changed, the database grown, then
 * shrunk by a VACUUM, in blocks of `block_pages` pages. Each backup restores to the
 * database as it was (those past the 16th file through two groups, until the VACUUM's
 * incremental, which stores every page). */
static void restoreLongChain(struct fx *f, uint32_t block_pages, bool mix_codecs)
{
    /* Mixed: each file of the chain compressed otherwise than its parent. */
    static const struct {
        int codec, level;
    } codecs[] = {{BACKUP_CODEC_ZSTD, 0}, {BACKUP_CODEC_LZ4, 0}, {BACKUP_CODEC_ZSTD, 3},
                  {BACKUP_CODEC_LZ4, 8}};
    struct backup_info b[LONG_CHAIN];
    char copy[PATH_MAX], out[PATH_MAX], sql[256];

    sqlExec(f->db, "PRAGMA journal_mode=DELETE;"
                   "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB);"
                   "CREATE INDEX t_name ON t(name);"
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 900)"
                   "INSERT INTO t SELECT i, printf('row %08d', i), randomblob(600) FROM c");
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    for (int i = 0; i < LONG_CHAIN; i++) {
        if (i > 0 && i % 7 == 0) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO t SELECT id + %d, name || 'x', randomblob(900) "
                     "FROM t WHERE id %% 9 = 0 AND id < 100000",
                     100000 * i);
            sqlExec(f->db, sql);
        } else if (i == LONG_CHAIN - 3) {
            sqlExec(f->db, "DELETE FROM t WHERE id % 4 = 0; VACUUM");
        } else if (i > 0) {
            snprintf(sql, sizeof sql,
                     "UPDATE t SET data = randomblob(600), name = name || '%d' "
                     "WHERE id %% 23 = %d",
                     i, i % 23);
            sqlExec(f->db, sql);
        }
        mustBackupAs(f->db, f->repo, i == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL, block_pages,
                     mix_codecs ? codecs[i % 4].codec : BACKUP_CODEC_DEFAULT,
                     mix_codecs ? codecs[i % 4].level : 0, &b[i]);
        if (i > 0) {
            assert_string_equal(b[i].parent_id, b[i - 1].id);
        }
        snprintf(copy, sizeof copy, "%s/copy.db", f->dir);
        copyFile(f->db, copy);
        /* Every third backup, and the last ones: restored now, against the copy. */
        if (i % 3 == 0 || i >= LONG_CHAIN - 4) {
            mustRestore(f->repo, b[i].id, out);
            assertSameFile(copy, out);
        }
    }
    {
        const char *const names[] = {"repo", "db.sqlite", "copy.db", "out.db", NULL};
        assertOnly(f->dir, names);
    }
}

static void test_a_long_chain_in_groups(void **state)
{
    restoreLongChain(*state, 0, false);
}

static void test_a_chain_of_files_compressed_each_its_own_way(void **state)
{
    restoreLongChain(*state, 0, true);
}

static void test_a_long_chain_of_small_blocks(void **state)
{
    restoreLongChain(*state, 3, false);
}

/* A damaged file in the group read last (the oldest files of a long chain) is refused
 * like one in the first, and nothing is left. */
static void test_a_damaged_file_in_an_older_group_is_refused(void **state)
{
    struct fx *f = *state;
    struct backup_info b[LONG_CHAIN];
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    struct restore_options opt = {
        f->repo, NULL, out, false, NULL, NULL, NULL, NULL, RESTORE_CHECK_QUICK, false};
    size_t n;
    unsigned char *p;

    sqlExec(f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB);"
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 400)"
                   "INSERT INTO t SELECT i, randomblob(900) FROM c");
    for (int i = 0; i < LONG_CHAIN; i++) {
        char sql[128];
        if (i > 0) {
            snprintf(sql, sizeof sql, "UPDATE t SET data = randomblob(900) WHERE id %% 17 = %d",
                     i % 17);
            sqlExec(f->db, sql);
        }
        mustBackup(f->db, f->repo, i == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL, 0, &b[i]);
    }
    /* The second file, in the last group: a byte of its first block. */
    p = readFile(b[1].path, &n);
    p[600] ^= 0x01;
    writeFile(b[1].path, p, n);
    free(p);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    opt.ref = b[LONG_CHAIN - 1].id;
    assert_int_equal(backupRestore(&opt, NULL, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, b[1].path));
    assert_non_null(strstr(errmsg, "block 0 at offset 512"));
    assert_false(exists(out));
    {
        const char *const names[] = {"repo", "db.sqlite", NULL};
        assertOnly(f->dir, names);
    }
}

/* Make the manifest of the backup file at path name `hash` for page pg, and seal the
 * file again (the manifest's checksum, the trailer's digest), as if it had been
 * written so: only the comparison of the pages restored with the manifest can tell. */
static void forgeManifest(const char *path, uint64_t pg, uint64_t hash)
{
    size_t n;
    unsigned char *p = readFile(path, &n);
    uint64_t moff = 0, pc = 0, sum;
    unsigned char d[BACKUP_DIGEST_SIZE];
    XXH128_hash_t x;
    memcpy(&moff, p + n - CBK_TRAILER_SIZE - CBK_FOOTER_SIZE + 48, 8); /* little-endian */
    memcpy(&pc, p + moff + 8, 8);
    assert_true(pg >= 1 && pg <= pc);
    memcpy(p + moff + 16 + 8 * (pg - 1), &hash, 8);
    sum = XXH3_64bits(p + moff, 16 + 8 * pc);
    memcpy(p + moff + 16 + 8 * pc, &sum, 8);
    x = XXH3_128bits(p, n - CBK_TRAILER_SIZE);
    cbkDigestBytes(x.low64, x.high64, d);
    memcpy(p + n - CBK_TRAILER_SIZE + 16, d, sizeof d);
    writeFile(path, p, n);
    free(p);
}

/* The first page stored in the backup file at path. */
static uint32_t firstPageStored(const char *path)
{
    size_t n;
    unsigned char *p = readFile(path, &n);
    uint32_t pg;
    assert_memory_equal(p + CBK_HEADER_SIZE, CBK_BLOCK_MAGIC, 4);
    memcpy(&pg, p + CBK_HEADER_SIZE + 8, 4);
    free(p);
    return pg;
}

/* The restore hashes only the copies it may restore (the older ones, replaced, are
 * compared with nothing): a page restored from the full backup at the chain's start,
 * which no incremental holds, and one from the restored incremental itself, are each
 * compared with the restored backup's manifest, and a mismatch is refused with the
 * file, block and page. */
static void test_every_page_restored_is_checked_whatever_file_holds_it(void **state)
{
    struct fx *f = *state;
    struct backup_info b[4];
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE], want[PATH_MAX + 64];
    struct restore_options opt = {
        f->repo, NULL, out, false, NULL, NULL, NULL, NULL, RESTORE_CHECK_QUICK, false};
    uint32_t kept, mine;

    sqlExec(f->db, "PRAGMA journal_mode=DELETE;"
                   "CREATE TABLE kept(id INTEGER PRIMARY KEY, v TEXT);"
                   "INSERT INTO kept VALUES(1, 'never changed');"
                   "CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB);"
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)"
                   "INSERT INTO t SELECT i, randomblob(900) FROM c");
    kept = (uint32_t)sqlInt(f->db, "SELECT rootpage FROM sqlite_schema WHERE name = 'kept'");
    for (int i = 0; i < 4; i++) {
        if (i > 0) {
            sqlExec(f->db, "UPDATE t SET data = randomblob(900) WHERE id % 5 = 0");
        }
        mustBackup(f->db, f->repo, i == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL, 0, &b[i]);
    }
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    opt.ref = b[3].id;
    mine = firstPageStored(b[3].path);
    assert_true(mine != kept);

    /* From the full backup: the table nobody changed. */
    forgeManifest(b[3].path, kept, 12345);
    assert_int_equal(backupRestore(&opt, NULL, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, b[0].path));
    snprintf(want, sizeof want, "page %u, the newest copy in the chain, does not match", kept);
    if (strstr(errmsg, want) == NULL) {
        fail_msg("%s", errmsg);
    }
    assert_false(exists(out));

    /* From the restored backup itself (the full's page put right). */
    {
        size_t n;
        unsigned char *p = readFile(f->db, &n);
        forgeManifest(b[3].path, kept,
                      XXH3_64bits(p + (size_t)(kept - 1) * b[3].page_size, b[3].page_size));
        free(p);
    }
    forgeManifest(b[3].path, mine, 12345);
    assert_int_equal(backupRestore(&opt, NULL, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, b[3].path));
    snprintf(want, sizeof want, "block 0 at offset 512: page %u does not match the manifest", mine);
    if (strstr(errmsg, want) == NULL) {
        fail_msg("%s", errmsg);
    }
    assert_false(exists(out));
}

/* ---- SQLite's check of the restored file ---- */

/* A database of many read-ahead chunks of the check (restore.c's RO_CHUNK: 256 KiB),
 * more than it keeps (RO_CHUNKS), with a table and an index built after it (its pages
 * at the end of the file): the check goes down the file (the b-tree pass), then up
 * it (the scans), jumping to interior pages. Both checks pass on the restored file,
 * which is the source byte for byte; a page at the end of the file damaged in the
 * source (the hashes match: it was backed up so) is found by either check, and nothing
 * is left at the destination. */
static void test_the_check_reads_a_large_file_ahead(void **state)
{
    struct fx *f = *state;
    struct backup_info b;
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    struct restore_options opt = {
        f->repo, NULL, out, false, NULL, NULL, NULL, NULL, RESTORE_CHECK_QUICK, false};
    const int checks[] = {RESTORE_CHECK_QUICK, RESTORE_CHECK_FULL};
    size_t n;
    unsigned char *p, was;
    bool damaged = false;

    sqlExec(f->db, "PRAGMA journal_mode=DELETE;"
                   "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB);"
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 6000)"
                   "INSERT INTO t SELECT i, printf('%08d', (i * 7919) % 6007), "
                   "randomblob(300 + i % 2000) FROM c;"
                   "CREATE INDEX t_name ON t(name)");
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &b);
    assert_true(b.page_count * b.page_size > 24 * (256u << 10));
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    opt.ref = b.id;
    for (size_t i = 0; i < 2; i++) {
        opt.check = checks[i];
        opt.force = i > 0;
        if (backupRestore(&opt, NULL, errmsg) != 0) {
            fail_msg("restore with %s: %s", backupCheckName(checks[i]), errmsg);
        }
        assertSameFile(f->db, out);
    }
    assert_int_equal(unlink(out), 0);

    /* The last page (the index's): its b-tree page type made invalid. */
    p = readFile(f->db, &n);
    assert_int_equal(n % b.page_size, 0);
    was = p[n - b.page_size];
    p[n - b.page_size] = 0x07;
    writeFile(f->db, p, n);
    free(p);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &b);
    opt.ref = b.id;
    for (size_t i = 0; i < 2; i++) {
        opt.check = checks[i];
        opt.force = false;
        assert_int_equal(backupRestore(&opt, NULL, errmsg), CAIRN_ECORRUPT);
        assert_non_null(strstr(errmsg, backupCheckName(checks[i])));
        assert_false(exists(out));
    }

    /* A leaf page in the middle of the file, which SQLite takes from a read-ahead
     * chunk where it lies (restore.c roFetch), its first cell put at the page's last
     * byte: decoding it reads past the page, into the next chunk's bytes or the zeros
     * after the last one, and both checks find it. */
    p = readFile(f->db, &n);
    p[n - b.page_size] = was; /* the last page mended */
    for (size_t pg = n / b.page_size / 2; pg < n / b.page_size; pg++) {
        unsigned char *h = p + pg * b.page_size;
        if (h[0] == 0x0D && (h[3] << 8 | h[4]) > 0) {
            h[8] = (unsigned char)((b.page_size - 1) >> 8);
            h[9] = (unsigned char)((b.page_size - 1) & 0xFF);
            damaged = true;
            break;
        }
    }
    assert_true(damaged);
    writeFile(f->db, p, n);
    free(p);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &b);
    opt.ref = b.id;
    for (size_t i = 0; i < 2; i++) {
        opt.check = checks[i];
        assert_int_equal(backupRestore(&opt, NULL, errmsg), CAIRN_ECORRUPT);
        assert_non_null(strstr(errmsg, backupCheckName(checks[i])));
        assert_false(exists(out));
    }
}

/* ---- new files ---- */

static void test_an_anonymous_file_appears_only_when_placed(void **state)
{
    struct fx *f = *state;
    struct newfile nf;
    char path[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    struct stat st;
    snprintf(path, sizeof path, "%s/new.db", f->dir);

    assert_int_equal(newfileOpen(&nf, path, "restore", 0640, 0, errmsg), 0);
    assert_int_equal(write(nf.fd, "abc", 3), 3);
    if (nf.anonymous) {
        const char *const none[] = {NULL};
        assertOnly(f->dir, none);
        assert_non_null(strstr(newfilePath(&nf), "/proc/self/fd/"));
    }
    /* Not over a file that is there. */
    writeFile(path, "old", 3);
    assert_int_equal(newfilePlace(&nf, path, false, errmsg), CAIRN_EEXIST);
    assert_non_null(strstr(errmsg, path));
    {
        size_t n;
        unsigned char *p = readFile(path, &n);
        assert_memory_equal(p, "old", 3);
        free(p);
    }
    /* Over it, when asked. */
    assert_int_equal(newfilePlace(&nf, path, true, errmsg), 0);
    newfileClose(&nf);
    {
        size_t n;
        unsigned char *p = readFile(path, &n);
        assert_int_equal(n, 3);
        assert_memory_equal(p, "abc", 3);
        free(p);
    }
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    {
        const char *const names[] = {"new.db", NULL};
        assertOnly(f->dir, names);
    }
    /* A file never placed leaves nothing, anonymous or named. */
    for (unsigned flags = 0; flags <= NEWFILE_NAMED; flags += NEWFILE_NAMED) {
        char other[PATH_MAX];
        snprintf(other, sizeof other, "%s/other.db", f->dir);
        assert_int_equal(newfileOpen(&nf, other, "restore", 0644, flags, errmsg), 0);
        assert_int_equal(newfileName(&nf, errmsg), 0); /* a name now, as for SQLite */
        assert_true(nf.tmp[0] != '\0');
        assert_true(exists(nf.tmp));
        newfileClose(&nf);
        {
            const char *const names[] = {"new.db", NULL};
            assertOnly(f->dir, names);
        }
    }
}

static void test_sweeping_removes_a_dead_writers_file_only(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], dead[PATH_MAX], deadj[PATH_MAX], orphan[PATH_MAX], other[PATH_MAX],
        errmsg[CAIRN_ERRMSG_SIZE];
    struct newfile live;
    const char *base;

    snprintf(path, sizeof path, "%s/app.db", f->dir);
    snprintf(dead, sizeof dead, "%s/.app.db.restore-Dead01", f->dir);
    snprintf(deadj, sizeof deadj, "%s/.app.db.restore-Dead01-journal", f->dir);
    snprintf(orphan, sizeof orphan, "%s/.app.db.restore-Gone02-wal", f->dir);
    snprintf(other, sizeof other, "%s/.app.db.verify-Else03", f->dir);
    writeFile(dead, "x", 1);
    writeFile(deadj, "x", 1);
    writeFile(orphan, "x", 1);
    writeFile(other, "x", 1);
    /* A live writer's, with a name: kept. */
    assert_int_equal(newfileOpen(&live, path, "restore", 0644, NEWFILE_NAMED, errmsg), 0);
    assert_int_equal(newfileSweep(path, "restore"), 1);
    assert_false(exists(dead));
    assert_false(exists(deadj));
    assert_false(exists(orphan));
    assert_true(exists(other)); /* another kind's */
    assert_true(exists(live.tmp));
    base = strrchr(live.tmp, '/') + 1;
    {
        const char *const names[] = {".app.db.verify-Else03", base, NULL};
        assertOnly(f->dir, names);
    }
    newfileClose(&live);
    {
        const char *const names[] = {".app.db.verify-Else03", NULL};
        assertOnly(f->dir, names);
    }
}

/* Scratch directories (newdir): a dead writer's (no lock) is removed with what it
 * holds, a live one's kept, another kind's and a plain file of the same prefix left
 * alone; closing removes the directory and everything in it. */
static void test_scratch_directories_of_dead_writers_are_swept(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], dead[PATH_MAX], inside[PATH_MAX + 16], file[PATH_MAX],
        errmsg[CAIRN_ERRMSG_SIZE];
    struct newdir live, second;

    snprintf(path, sizeof path, "%s/app.db", f->dir);
    snprintf(dead, sizeof dead, "%s/.app.db.pitr-Dead01", f->dir);
    snprintf(file, sizeof file, "%s/.app.db.pitr-File02", f->dir);
    assert_int_equal(mkdir(dead, 0700), 0);
    snprintf(inside, sizeof inside, "%s/db", dead);
    writeFile(inside, "x", 1);
    snprintf(inside, sizeof inside, "%s/db-wal", dead);
    writeFile(inside, "x", 1);
    writeFile(file, "x", 1); /* not a directory: newfileSweep's business */

    assert_int_equal(newdirOpen(&live, path, "pitr", errmsg), 0); /* sweeps the dead one */
    assert_false(exists(dead));
    assert_true(exists(file));
    snprintf(inside, sizeof inside, "%s/db", live.dir);
    writeFile(inside, "x", 1);
    /* A second writer for the same path: its own directory; the live one is kept. */
    assert_int_equal(newdirOpen(&second, path, "pitr", errmsg), 0);
    assert_string_not_equal(live.dir, second.dir);
    assert_true(exists(inside));
    assert_int_equal(newdirSweep(path, "pitr"), 0);
    assert_int_equal(newdirSweep(path, "restore"), 0);
    newdirClose(&second);
    newdirClose(&live);
    newdirClose(&live); /* twice: nothing */
    {
        const char *const names[] = {".app.db.pitr-File02", NULL};
        assertOnly(f->dir, names);
    }
}

/* The -wal, -journal and -shm a writer killed inside newfileRenameDatabase left hidden
 * (`.BASE.replaced-NEWINO-OLDINO-PID-SIDE`): back beside the old database when it still
 * has the name, removed when the new file has it or the name is empty; a live writer's,
 * one whose name was taken since, and one of another form are left alone. */
static void test_a_killed_replacements_side_files_are_settled(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], side[PATH_MAX + 16], aside[PATH_MAX + 128];
    struct stat old_st;
    pid_t dead = fork();

    assert_true(dead >= 0);
    if (dead == 0) {
        _exit(0);
    }
    assert_int_equal(waitpid(dead, NULL, 0), dead); /* a pid no process has now */
    snprintf(path, sizeof path, "%s/app.db", f->dir);
    writeFile(path, "old", 3);
    assert_int_equal(stat(path, &old_st), 0);

    /* The old file still has the name: its -wal comes back, a live writer's stays, and
     * a -shm whose name was taken since stays hidden. */
    snprintf(aside, sizeof aside, "%s/.app.db.replaced-%llu-%llu-%ld-wal", f->dir, 999999ULL,
             (unsigned long long)old_st.st_ino, (long)dead);
    writeFile(aside, "commits", 7);
    snprintf(aside, sizeof aside, "%s/.app.db.replaced-%llu-%llu-%ld-journal", f->dir, 999999ULL,
             (unsigned long long)old_st.st_ino, (long)getpid());
    writeFile(aside, "live", 4);
    snprintf(aside, sizeof aside, "%s/.app.db.replaced-%llu-%llu-%ld-shm", f->dir, 999999ULL,
             (unsigned long long)old_st.st_ino, (long)dead);
    writeFile(aside, "s", 1);
    snprintf(side, sizeof side, "%s-shm", path);
    writeFile(side, "new shm", 7);
    snprintf(aside, sizeof aside, "%s/.app.db.replaced-77-wal", f->dir); /* an older form */
    writeFile(aside, "x", 1);
    assert_int_equal(newfileSweepReplaced(path), 1);
    snprintf(side, sizeof side, "%s-wal", path);
    assert_true(exists(side));
    {
        char live[64], taken[64];
        snprintf(live, sizeof live, ".app.db.replaced-999999-%llu-%ld-journal",
                 (unsigned long long)old_st.st_ino, (long)getpid());
        snprintf(taken, sizeof taken, ".app.db.replaced-999999-%llu-%ld-shm",
                 (unsigned long long)old_st.st_ino, (long)dead);
        const char *const names[] = {
            "app.db", "app.db-wal", "app.db-shm", live, taken, ".app.db.replaced-77-wal", NULL};
        assertOnly(f->dir, names);
        snprintf(aside, sizeof aside, "%s/%s", f->dir, live);
        unlink(aside);
        snprintf(aside, sizeof aside, "%s/%s", f->dir, taken);
        unlink(aside);
    }
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);

    /* The new file has the name: the old one's -wal goes. Then no file at all: so too. */
    snprintf(aside, sizeof aside, "%s/.app.db.replaced-%llu-%llu-%ld-wal", f->dir,
             (unsigned long long)old_st.st_ino, 424242ULL, (long)dead);
    writeFile(aside, "commits", 7);
    assert_int_equal(newfileSweepReplaced(path), 1);
    assert_false(exists(aside));
    unlink(path);
    writeFile(aside, "commits", 7);
    assert_int_equal(newfileSweepReplaced(path), 1);
    {
        const char *const names[] = {".app.db.replaced-77-wal", NULL};
        assertOnly(f->dir, names);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_long_chain_in_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_long_chain_of_small_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_chain_of_files_compressed_each_its_own_way, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_damaged_file_in_an_older_group_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_page_restored_is_checked_whatever_file_holds_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_check_reads_a_large_file_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_anonymous_file_appears_only_when_placed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_killed_replacements_side_files_are_settled, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sweeping_removes_a_dead_writers_file_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scratch_directories_of_dead_writers_are_swept,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
