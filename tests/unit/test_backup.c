/* Unit tests of the backup engine (src/backup/backup.c, src/backup/cbk.c, src/backup/repo.c,
 * src/backup/restore.c) on real files in a temporary directory: the format's parts, full,
 * incremental and differential backups restored byte for byte, every single-byte
 * flip and every truncation refused, broken chains, ids, frozen copies of a database
 * that another connection is writing. */
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
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>
#include <xxhash.h>

#include "backup.h"
#include "buf.h"
#include "cairn.h"
#include "cbk.h"
#include "error.h"
#include "filefx.h"
#include "lib.h"

struct fx {
    char dir[PATH_MAX];
    char repo[PATH_MAX];
    char db[PATH_MAX];
};

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Files go to tmpfs when there is one: the corruption test verifies thousands of
 * damaged files, and each failed verification records itself with an fsync. */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(f->dir, sizeof f->dir, "%s/cairn-backup-test-XXXXXX", base);
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

static void assertIntegrity(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A few hundred pages: a table of rows with text and blobs, and an index. */
static void makeDbPaged(const char *path, int rows, int page_size)
{
    char sql[640];
    snprintf(sql, sizeof sql,
             "PRAGMA page_size=%d;"
             "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB);"
             "CREATE INDEX t_name ON t(name);"
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d) "
             "INSERT INTO t SELECT i, printf('row %%08d', i), "
             "CASE WHEN i %% 3 = 0 THEN randomblob(3000) ELSE zeroblob(200 + i %% 700) END "
             "FROM c",
             page_size, rows);
    sqlExec(path, sql);
}

static void makeDb(const char *path, int rows)
{
    makeDbPaged(path, rows, 4096);
}

struct progress_log {
    int calls;
    uint64_t done, total;
};

static void onProgress(void *arg, uint64_t done, uint64_t total)
{
    struct progress_log *p = arg;
    assert_true(done <= total);
    assert_true(done >= p->done || p->calls == 0);
    p->calls++;
    p->done = done;
    p->total = total;
}

static int backupOf(const char *db, const char *repo, int type, uint32_t block_pages,
                    struct backup_info *info, char *errmsg)
{
    struct backup_source src = {open(db, O_RDONLY), 0, 0, db, NULL, false, {0}};
    struct backup_options opt = {.type = type, .repo = repo, .block_pages = block_pages};
    int rv;
    assert_true(src.fd >= 0);
    src.raft_index = 7;
    src.raft_term = 2;
    rv = backupCreate(&src, &opt, info, errmsg);
    close(src.fd);
    return rv;
}

static void mustBackup(const char *db, const char *repo, int type, uint32_t block_pages,
                       struct backup_info *info)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = backupOf(db, repo, type, block_pages, info, errmsg);
    if (rv != 0) {
        fail_msg("backup: %s", errmsg);
    }
}

static int restoreTo(const char *repo, const char *ref, const char *out, bool force, char *errmsg)
{
    struct restore_options opt = {repo, ref, out, force, NULL, NULL, NULL, NULL,
                                  RESTORE_CHECK_QUICK, false};
    return backupRestore(&opt, NULL, errmsg);
}

static void mustRestore(const char *repo, const char *ref, const char *out)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = restoreTo(repo, ref, out, true, errmsg);
    if (rv != 0) {
        fail_msg("restore %s: %s", ref, errmsg);
    }
}

/* ---- compression as users name it ---- */

static void test_compression_names(void **state)
{
    static const struct {
        const char *name;
        int codec, level;
    } good[] = {{"lz4", BACKUP_CODEC_LZ4, 0},    {"lz4:1", BACKUP_CODEC_LZ4, 1},
                {"lz4:65537", BACKUP_CODEC_LZ4, 65537}, {"zstd", BACKUP_CODEC_ZSTD, 0},
                {"zstd:19", BACKUP_CODEC_ZSTD, 19}, {"zstd:-5", BACKUP_CODEC_ZSTD, -5}};
    static const char *const bad[] = {"",       "gzip",   "LZ4",     "lz4:",   "lz4:0",
                                      "lz4:-1", "lz4:65538", "zstd:0", "zstd:23", "zstd:3x",
                                      "zstd:99999999999999999999", "lz4:1:2", "zstd :3"};
    char why[CAIRN_ERRMSG_SIZE];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int codec = -1, level = -1;
        assert_int_equal(backupParseCompression(good[i].name, &codec, &level, why), 0);
        assert_int_equal(codec, good[i].codec);
        assert_int_equal(level, good[i].level);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int codec = -1, level = -1;
        assert_int_equal(backupParseCompression(bad[i], &codec, &level, why), CAIRN_EINVAL);
        assert_non_null(strstr(why, "compression"));
    }
    assert_int_equal(backupParseCompression(NULL, &(int){0}, &(int){0}, why), CAIRN_EINVAL);
}

/* ---- the format's parts ---- */

/* A header's checksum made good again after its bytes were changed. */
static void reseal(unsigned char hb[CBK_HEADER_SIZE])
{
    uint64_t sum = XXH3_64bits(hb, 504);
    for (int i = 0; i < 8; i++) {
        hb[504 + i] = (unsigned char)(sum >> (8 * i));
    }
}

static void test_format_parts(void **state)
{
    struct cbk_header h = {0}, h2, h3;
    struct cbk_footer f = {1, 2, 3, 4, 5, 6}, f2;
    struct cbk_trailer t = {1234, {0}}, t2;
    unsigned char hb[CBK_HEADER_SIZE], fb[CBK_FOOTER_SIZE], tb[CBK_TRAILER_SIZE];
    char why[CAIRN_ERRMSG_SIZE];

    snprintf(h.id, sizeof h.id, "20261122T101500123Z-0001-7f3a");
    h.type = BACKUP_INCREMENTAL;
    snprintf(h.parent_id, sizeof h.parent_id, "20261122T101400000Z-0000-0001");
    memset(h.parent_digest, 0xab, sizeof h.parent_digest);
    snprintf(h.source, sizeof h.source, "cairnd:/var/lib/cairn");
    h.page_size = 4096;
    h.page_count = 123456789;
    h.raft_index = UINT64_MAX - 1;
    h.raft_term = 42;
    h.created_ms = 1763806500123;
    h.block_pages = 256;
    h.level = -3;
    cbkHeaderEncode(&h, hb);
    assert_memory_equal(hb, CBK_MAGIC, 8);
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), 0);
    assert_memory_equal(&h, &h2, sizeof h);

    /* Each kind of damage is named. */
    hb[0] ^= 1;
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    assert_non_null(strstr(why, "magic"));
    hb[0] ^= 1;
    assert_int_equal(hb[8], 1); /* zstd and no history: version 1, as older builds read */
    hb[8] = 3;
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    assert_non_null(strstr(why, "version 3"));
    hb[8] = 1;
    hb[200] ^= 0x10;
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    assert_non_null(strstr(why, "checksum"));
    hb[200] ^= 0x10;
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), 0);
    /* Valid checksums over invalid fields are refused too. */
    h2 = h;
    h2.page_size = 3000;
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    h2 = h;
    h2.block_pages = 65536; /* 256 MiB blocks */
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    h2 = h;
    h2.type = BACKUP_FULL; /* with a parent */
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);
    h2 = h;
    snprintf(h2.id, sizeof h2.id, "../etc");
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(cbkHeaderDecode(hb, &h2, why), CAIRN_ECORRUPT);

    /* Version 2: the codec and the history. */
    h2 = h;
    h2.codec = CBK_CODEC_LZ4;
    h2.level = 1;
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(hb[8], 2);
    assert_int_equal(hb[49], CBK_CODEC_LZ4);
    assert_int_equal(cbkHeaderDecode(hb, &h3, why), 0);
    assert_memory_equal(&h2, &h3, sizeof h2);
    h2 = h;
    memset(h2.history, 0xc5, sizeof h2.history);
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(hb[8], 2);
    assert_int_equal(hb[400], 0xc5);
    assert_int_equal(cbkHeaderDecode(hb, &h3, why), 0);
    assert_memory_equal(&h2, &h3, sizeof h2);
    /* An unknown codec, and non-zero bytes where neither version has a field. */
    h2.codec = 2;
    cbkHeaderEncode(&h2, hb);
    assert_int_equal(cbkHeaderDecode(hb, &h3, why), CAIRN_ECORRUPT);
    assert_non_null(strstr(why, "codec 2"));
    {
        static const struct {
            int codec;
            bool history;
            size_t at;
        } bad[] = {{CBK_CODEC_LZ4, false, 50}, {CBK_CODEC_LZ4, false, 416},
                   {CBK_CODEC_LZ4, false, 503}, {CBK_CODEC_ZSTD, false, 49},
                   {CBK_CODEC_ZSTD, false, 400}, {CBK_CODEC_ZSTD, true, 51}};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            h2 = h;
            h2.codec = bad[i].codec;
            memset(h2.history, bad[i].history ? 1 : 0, sizeof h2.history);
            cbkHeaderEncode(&h2, hb);
            hb[bad[i].at] = 7;
            reseal(hb);
            assert_int_equal(cbkHeaderDecode(hb, &h3, why), CAIRN_ECORRUPT);
            assert_non_null(strstr(why, "reserved"));
        }
    }

    /* Blocks: what each codec's decoder refuses. */
    {
        unsigned char raw[4096], comp[4200], out[4096];
        int n;
        for (size_t i = 0; i < sizeof raw; i++) {
            raw[i] = (unsigned char)(i % 251 < 40 ? i : 7);
        }
        n = LZ4_compress_default((const char *)raw, (char *)comp, sizeof raw, sizeof comp);
        assert_true(n > 0 && (size_t)n <= cbkCodecBound(CBK_CODEC_LZ4, sizeof raw));
        assert_int_equal(cbkInflate(CBK_CODEC_LZ4, NULL, comp, (size_t)n, out, sizeof out, why), 0);
        assert_memory_equal(raw, out, sizeof raw);
        /* Short of its end, with bytes after it, or decoding to another length. */
        assert_int_equal(cbkInflate(CBK_CODEC_LZ4, NULL, comp, (size_t)n - 1, out, sizeof out, why),
                         CAIRN_ECORRUPT);
        assert_non_null(strstr(why, "LZ4"));
        comp[n] = 0;
        assert_int_equal(cbkInflate(CBK_CODEC_LZ4, NULL, comp, (size_t)n + 1, out, sizeof out, why),
                         CAIRN_ECORRUPT);
        assert_int_equal(cbkInflate(CBK_CODEC_LZ4, NULL, comp, (size_t)n, out, sizeof out - 1, why),
                         CAIRN_ECORRUPT);
        /* zstd bytes are not an LZ4 block, and the other way round. */
        ZSTD_DCtx *dctx = ZSTD_createDCtx();
        assert_non_null(dctx);
        assert_int_equal(cbkInflate(CBK_CODEC_ZSTD, dctx, comp, (size_t)n, out, sizeof out, why),
                         CAIRN_ECORRUPT);
        ZSTD_freeDCtx(dctx);
        assert_non_null(strstr(why, "zstd"));
        /* Without a zstd context: out of memory, said so. */
        assert_int_equal(cbkInflate(CBK_CODEC_ZSTD, NULL, comp, (size_t)n, out, sizeof out, why),
                         CAIRN_ENOMEM);
    }

    cbkFooterEncode(&f, fb);
    assert_int_equal(cbkFooterDecode(fb, &f2, why), 0);
    assert_memory_equal(&f, &f2, sizeof f);
    fb[17] ^= 4;
    assert_int_equal(cbkFooterDecode(fb, &f2, why), CAIRN_ECORRUPT);

    memset(t.digest, 0x5a, sizeof t.digest);
    cbkTrailerEncode(&t, tb);
    assert_int_equal(cbkTrailerDecode(tb, &t2, why), 0);
    assert_memory_equal(&t, &t2, sizeof t);
    tb[3] ^= 1;
    assert_int_equal(cbkTrailerDecode(tb, &t2, why), CAIRN_ECORRUPT);

    assert_true(cbkIdValid("20261122T101500123Z-0001-7f3a"));
    assert_false(cbkIdValid(""));
    assert_false(cbkIdValid(".hidden"));
    assert_false(cbkIdValid("a/b"));
    assert_false(cbkIdValid("0123456789012345678901234567890123"));

    /* The memory checker refuses garbage of any size without crashing. */
    {
        unsigned char junk[2048];
        for (size_t i = 0; i < sizeof junk; i++) {
            junk[i] = (unsigned char)(i * 131 + 7);
        }
        for (size_t n = 0; n <= sizeof junk; n += 97) {
            assert_int_not_equal(cbkCheckMemory(junk, n, why), 0);
        }
    }
}

/* backupChainWhole on a synthetic listing: a chain is whole only when every member is
 * listed, readable, the very file its child names (the digest) and not failed. */
static void test_chain_whole(void **state)
{
    (void)state;
    struct backup_info l[5];
    char ids[5][BACKUP_ID_SIZE];
    memset(l, 0, sizeof l);
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof ids[i], "2026120%dT000000000Z-0000-abcd", i + 1);
        snprintf(l[i].id, sizeof l[i].id, "%s", ids[i]);
        l[i].type = i == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL;
        l[i].digest[0] = (unsigned char)(i + 1);
        if (i > 0) {
            snprintf(l[i].parent_id, sizeof l[i].parent_id, "%s", ids[i - 1]);
            l[i].parent_digest[0] = (unsigned char)i;
        }
    }
    /* Given in any order. */
    struct backup_info tmp = l[0];
    l[0] = l[4];
    l[4] = tmp;
    for (size_t i = 0; i < 5; i++) {
        assert_true(backupChainWhole(l, 5, i));
    }
    l[2].verified = BACKUP_VERIFY_FAILED; /* the third: 20261203 */
    assert_true(backupChainWhole(l, 5, 1));
    assert_false(backupChainWhole(l, 5, 2));
    assert_false(backupChainWhole(l, 5, 3));
    assert_false(backupChainWhole(l, 5, 0)); /* the fifth, whose chain runs through it */
    l[2].verified = BACKUP_VERIFIED;
    snprintf(l[1].error, sizeof l[1].error, "bad magic");
    assert_false(backupChainWhole(l, 5, 2));
    l[1].error[0] = '\0';
    l[1].digest[0] = 99; /* another file under the parent's name */
    assert_false(backupChainWhole(l, 5, 2));
    assert_true(backupChainWhole(l, 5, 1));
    /* A parent that is not listed (the full one, l[4]), and parents that loop. */
    l[1].digest[0] = 2;
    assert_true(backupChainWhole(l, 5, 0));
    assert_false(backupChainWhole(l, 4, 0));
    l[4].type = BACKUP_INCREMENTAL;
    snprintf(l[4].parent_id, sizeof l[4].parent_id, "%s", ids[4]); /* l[0] is the fifth */
    l[4].parent_digest[0] = l[0].digest[0];
    assert_false(backupChainWhole(l, 5, 0));
}

static void test_type_names(void **state)
{
    assert_string_equal(backupTypeName(BACKUP_FULL), "full");
    assert_string_equal(backupTypeName(BACKUP_INCREMENTAL), "incremental");
    assert_string_equal(backupTypeName(BACKUP_DIFFERENTIAL), "differential");
    assert_int_equal(backupTypeFromName("differential"), BACKUP_DIFFERENTIAL);
    assert_int_equal(backupTypeFromName("full"), BACKUP_FULL);
    assert_int_equal(backupTypeFromName("bogus"), -1);
}

/* ---- full backup ---- */

static void test_full_roundtrip(void **state)
{
    struct fx *f = *state;
    struct backup_info info, read, *list;
    struct progress_log pl = {0};
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    size_t n;
    unsigned char *file;
    size_t file_n;

    makeDb(f->db, 600);
    {
        struct backup_source src = {open(f->db, O_RDONLY), 9, 3, f->db, NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_FULL, .repo = f->repo, .progress = onProgress, .progress_arg = &pl};
        assert_int_equal(backupCreate(&src, &opt, &info, errmsg), 0);
        close(src.fd);
    }
    assert_true(pl.calls > 0);
    assert_int_equal(pl.done, pl.total);
    assert_int_equal(info.type, BACKUP_FULL);
    assert_string_equal(info.parent_id, "");
    assert_int_equal(info.page_size, 4096);
    assert_true(info.page_count > 200);
    assert_int_equal(info.pages, info.page_count);
    assert_int_equal(info.raft_index, 9);
    assert_int_equal(info.raft_term, 3);
    assert_string_equal(info.source, f->db);
    assert_int_equal(info.verified, BACKUP_UNVERIFIED);
    assert_int_equal((int64_t)info.page_count * 4096,
                     sqlInt(f->db, "SELECT page_count * page_size FROM pragma_page_count, "
                                   "pragma_page_size"));

    /* What the file says is what backupCreate said. */
    assert_int_equal(backupReadInfo(info.path, &read, errmsg), 0);
    assert_memory_equal(&read, &info, sizeof read);
    file = readFile(info.path, &file_n);
    assert_int_equal(file_n, info.size_bytes);
    assert_int_equal(cbkCheckMemory(file, file_n, errmsg), 0);
    {
        unsigned char d[BACKUP_DIGEST_SIZE];
        XXH128_hash_t x = XXH3_128bits(file, file_n - CBK_TRAILER_SIZE);
        cbkDigestBytes(x.low64, x.high64, d);
        assert_memory_equal(d, info.digest, sizeof d);
    }
    free(file);

    assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, info.id);
    free(list);

    snprintf(out, sizeof out, "%s/restored.db", f->dir);
    memset(&pl, 0, sizeof pl);
    {
        struct restore_options opt = {f->repo, info.id, out, false, onProgress, &pl, NULL, NULL,
                                      RESTORE_CHECK_FULL, false};
        assert_int_equal(backupRestore(&opt, &read, errmsg), 0);
    }
    assert_string_equal(read.id, info.id);
    assert_true(pl.calls > 0);
    assert_int_equal(pl.done, pl.total);
    assertSameFile(f->db, out);
    assertIntegrity(out);
    assert_int_equal(sqlInt(out, "SELECT count(*) FROM t"), 600);

    /* By path, too. */
    snprintf(out, sizeof out, "%s/restored2.db", f->dir);
    assert_int_equal(restoreTo(NULL, info.path, out, false, errmsg), 0);
    assertSameFile(f->db, out);
}

static void test_block_sizes_and_page_sizes(void **state)
{
    struct fx *f = *state;
    struct backup_info info;
    char out[PATH_MAX];
    makeDbPaged(f->db, 300, 1024);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    for (uint32_t bp = 1; bp <= 7; bp += 3) {
        mustBackup(f->db, f->repo, BACKUP_FULL, bp, &info);
        assert_int_equal(info.page_size, 1024);
        mustRestore(f->repo, info.id, out);
        assertSameFile(f->db, out);
    }
    /* A new page size: the incremental stores every page, the chain still restores. */
    sqlExec(f->db, "PRAGMA page_size=8192; VACUUM");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &info);
    assert_int_equal(info.page_size, 8192);
    assert_int_equal(info.pages, info.page_count);
    mustRestore(f->repo, info.id, out);
    assertSameFile(f->db, out);
    assertIntegrity(out);
}

static void test_empty_database(void **state)
{
    struct fx *f = *state;
    struct backup_info full, inc;
    char out[PATH_MAX];
    size_t n;
    writeFile(f->db, "", 0);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &full);
    assert_int_equal(full.page_count, 0);
    assert_int_equal(full.pages, 0);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    mustRestore(f->repo, full.id, out);
    free(readFile(out, &n));
    assert_int_equal(n, 0);
    /* Then it grows. */
    makeDb(f->db, 50);
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &inc);
    assert_string_equal(inc.parent_id, full.id);
    assert_int_equal(inc.pages, inc.page_count);
    mustRestore(f->repo, inc.id, out);
    assertSameFile(f->db, out);
}

/* ---- chains ---- */

static void test_incremental_and_differential_chain(void **state)
{
    struct fx *f = *state;
    struct backup_info b[6];
    char copy[6][PATH_MAX], out[PATH_MAX];
    const char *const changes[6] = {
        NULL,
        "UPDATE t SET name = 'changed' WHERE id = 100",
        "INSERT INTO t SELECT id + 10000, name, data FROM t WHERE id <= 50",
        NULL, /* differential after more changes */
        "DELETE FROM t WHERE id % 2 = 0; VACUUM",
        "UPDATE t SET data = randomblob(5000) WHERE id = 1",
    };
    const int types[6] = {BACKUP_FULL,         BACKUP_INCREMENTAL, BACKUP_INCREMENTAL,
                          BACKUP_DIFFERENTIAL, BACKUP_INCREMENTAL, BACKUP_INCREMENTAL};

    makeDb(f->db, 800);
    for (int i = 0; i < 6; i++) {
        if (changes[i] != NULL) {
            sqlExec(f->db, changes[i]);
        }
        if (i == 3) {
            sqlExec(f->db, "UPDATE t SET name = name || 'x' WHERE id BETWEEN 10 AND 20");
        }
        mustBackup(f->db, f->repo, types[i], 0, &b[i]);
        snprintf(copy[i], sizeof copy[i], "%s/copy%d.db", f->dir, i);
        copyFile(f->db, copy[i]);
    }
    /* One row changed: a handful of pages, not the database. */
    assert_true(b[1].pages > 0);
    assert_true(b[1].pages * 20 < b[1].page_count);
    assert_true(b[1].size_bytes * 5 < b[0].size_bytes);
    assert_string_equal(b[1].parent_id, b[0].id);
    assert_string_equal(b[2].parent_id, b[1].id);
    /* The differential takes the full backup as parent, and holds at least what the
     * incrementals since it held. */
    assert_string_equal(b[3].parent_id, b[0].id);
    assert_memory_equal(b[3].parent_digest, b[0].digest, BACKUP_DIGEST_SIZE);
    assert_true(b[3].pages >= b[2].pages);
    /* An incremental after a differential builds on the newest backup of any type. */
    assert_string_equal(b[4].parent_id, b[3].id);
    assert_true(b[4].page_count < b[3].page_count); /* the VACUUM shrank it */
    assert_string_equal(b[5].parent_id, b[4].id);
    for (int i = 1; i < 6; i++) {
        assert_true(strcmp(b[i - 1].id, b[i].id) < 0);
    }

    snprintf(out, sizeof out, "%s/out.db", f->dir);
    for (int i = 0; i < 6; i++) {
        mustRestore(f->repo, b[i].id, out);
        assertSameFile(copy[i], out);
        assertIntegrity(out);
    }
    /* Progress reaches its total, through a whole chain too. */
    {
        char errmsg[CAIRN_ERRMSG_SIZE];
        struct progress_log pl = {0};
        struct restore_options opt = {f->repo, b[5].id, out, true, onProgress, &pl, NULL, NULL,
                                      RESTORE_CHECK_QUICK, false};
        assert_int_equal(backupRestore(&opt, NULL, errmsg), 0);
        assert_true(pl.calls > 4);
        assert_int_equal(pl.done, pl.total);
        memset(&pl, 0, sizeof pl);
        assert_int_equal(backupVerify(f->repo, b[4].id, true, onProgress, &pl, errmsg), 0);
        assert_int_equal(pl.done, pl.total);
    }
    /* Verification, with and without a trial restore, records its outcome. */
    {
        char errmsg[CAIRN_ERRMSG_SIZE];
        struct backup_info *list;
        size_t n;
        assert_int_equal(backupVerify(f->repo, b[5].id, true, NULL, NULL, errmsg), 0);
        assert_int_equal(backupVerify(f->repo, b[2].id, false, NULL, NULL, errmsg), 0);
        assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
        assert_int_equal(n, 6);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(list[i].id, b[i].id);
            /* The chain of b[5] is 0, 3, 4, 5; that of b[2] is 0, 1, 2. */
            assert_int_equal(list[i].verified, BACKUP_VERIFIED);
            assert_true(list[i].verified_ms > 0);
        }
        free(list);
    }
}

/* Nothing of the source to chain to (an empty repository, or backups of other sources
 * only): an incremental or differential backup is taken whole, as a full backup, and
 * its entry says so; the next one chains to it. */
static void test_incremental_without_parent(void **state)
{
    struct fx *f = *state;
    struct backup_info info, first, *list;
    char errmsg[CAIRN_ERRMSG_SIZE];
    size_t n;
    makeDb(f->db, 20);
    /* A backup of another source is no parent. */
    {
        struct backup_source src = {open(f->db, O_RDONLY), 0, 0, "elsewhere", NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_FULL, .repo = f->repo};
        assert_int_equal(backupCreate(&src, &opt, &info, errmsg), 0);
        close(src.fd);
    }
    assert_int_equal(backupOf(f->db, f->repo, BACKUP_DIFFERENTIAL, 0, &first, errmsg), 0);
    assert_int_equal(first.type, BACKUP_FULL);
    assert_string_equal(first.parent_id, "");
    assert_int_equal(first.pages, first.page_count);
    assert_int_equal(backupOf(f->db, f->repo, BACKUP_INCREMENTAL, 0, &info, errmsg), 0);
    assert_int_equal(info.type, BACKUP_INCREMENTAL);
    assert_string_equal(info.parent_id, first.id);
    assert_int_equal(info.pages, 0);
    assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
    assert_int_equal(n, 3);
    free(list);
    /* A parent named but not there is still refused. */
    {
        struct backup_source src = {open(f->db, O_RDONLY), 0, 0, f->db, NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_INCREMENTAL, .repo = f->repo,
                                     .parent_id = "20260101T000000000Z-0000-0000"};
        assert_int_equal(backupCreate(&src, &opt, &info, errmsg), CAIRN_ENOTFOUND);
        close(src.fd);
    }
}

/* A named parent: any backup, of any source, even of another database; the chain still
 * restores exactly the image backed up (a cluster chains to a backup another node
 * took). A differential refuses a parent that is not full; an unknown one is named. */
static void test_named_parent(void **state)
{
    struct fx *f = *state;
    struct backup_info other, inc, diff, info;
    char otherdb[PATH_MAX], out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    snprintf(otherdb, sizeof otherdb, "%s/other.db", f->dir);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    makeDb(f->db, 800);
    copyFile(f->db, otherdb); /* the same database, backed up as another source */
    sqlExec(f->db, "UPDATE t SET name = 'mine' WHERE id < 40");
    {
        struct backup_source src = {
            open(otherdb, O_RDONLY), 0, 0, "cairnd:/elsewhere", NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_FULL, .repo = f->repo};
        assert_int_equal(backupCreate(&src, &opt, &other, errmsg), 0);
        close(src.fd);
    }
    {
        struct backup_source src = {open(f->db, O_RDONLY), 0, 0, f->db, NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_INCREMENTAL, .repo = f->repo, .parent_id = other.id};
        assert_int_equal(backupCreate(&src, &opt, &inc, errmsg), 0);
        assert_string_equal(inc.parent_id, other.id);
        /* Pages equal to the other database's are not stored again. */
        assert_true(inc.pages < inc.page_count);
        opt.type = BACKUP_DIFFERENTIAL;
        assert_int_equal(backupCreate(&src, &opt, &diff, errmsg), 0);
        assert_string_equal(diff.parent_id, other.id);
        opt.parent_id = inc.id;
        assert_int_equal(backupCreate(&src, &opt, &info, errmsg), CAIRN_EINVAL);
        assert_non_null(strstr(errmsg, "not full"));
        opt.type = BACKUP_INCREMENTAL;
        opt.parent_id = "20990101T000000000Z-0000-dead";
        assert_int_equal(backupCreate(&src, &opt, &info, errmsg), CAIRN_ENOTFOUND);
        assert_non_null(strstr(errmsg, "20990101T000000000Z-0000-dead"));
        close(src.fd);
    }
    mustRestore(f->repo, inc.id, out);
    assertSameFile(f->db, out);
    mustRestore(f->repo, diff.id, out);
    assertSameFile(f->db, out);
}

static void test_missing_link(void **state)
{
    struct fx *f = *state;
    struct backup_info a, b, c;
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    makeDb(f->db, 100);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &a);
    sqlExec(f->db, "UPDATE t SET name = 'b' WHERE id = 5");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &b);
    sqlExec(f->db, "UPDATE t SET name = 'c' WHERE id = 6");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &c);
    assert_int_equal(unlink(b.path), 0);

    snprintf(out, sizeof out, "%s/out.db", f->dir);
    assert_int_equal(restoreTo(f->repo, c.id, out, false, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, c.path));
    assert_non_null(strstr(errmsg, b.id));
    assert_false(exists(out));
    assert_int_equal(backupVerify(f->repo, c.id, false, NULL, NULL, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, b.id));
    assert_int_equal(backupReadInfo(c.path, &c, errmsg), 0);
    assert_int_equal(c.verified, BACKUP_VERIFY_FAILED);
    /* The full backup alone still restores. */
    mustRestore(f->repo, a.id, out);
    assertIntegrity(out);
}

static void test_parent_digest_mismatch(void **state)
{
    struct fx *f = *state;
    struct backup_info a, b, other;
    struct cbk_header h;
    char repo2[PATH_MAX], db2[PATH_MAX], out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char *file;
    size_t n;

    makeDb(f->db, 100);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &a);
    sqlExec(f->db, "UPDATE t SET name = 'b' WHERE id = 5");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &b);

    /* Another valid backup file, of another database, carrying a's id. */
    snprintf(repo2, sizeof repo2, "%s/repo2", f->dir);
    snprintf(db2, sizeof db2, "%s/db2.sqlite", f->dir);
    makeDb(db2, 120);
    {
        struct backup_source src = {open(db2, O_RDONLY), 0, 0, f->db, NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_FULL, .repo = repo2};
        assert_int_equal(backupCreate(&src, &opt, &other, errmsg), 0);
        close(src.fd);
    }
    file = readFile(other.path, &n);
    assert_int_equal(cbkHeaderDecode(file, &h, errmsg), 0);
    memcpy(h.id, a.id, sizeof h.id);
    cbkHeaderEncode(&h, file);
    {
        XXH128_hash_t x = XXH3_128bits(file, n - CBK_TRAILER_SIZE);
        cbkDigestBytes(x.low64, x.high64, file + n - BACKUP_DIGEST_SIZE);
    }
    assert_int_equal(cbkCheckMemory(file, n, errmsg), 0);
    writeFile(a.path, file, n);
    free(file);
    assert_int_equal(backupVerify(f->repo, a.id, false, NULL, NULL, errmsg), 0);

    snprintf(out, sizeof out, "%s/out.db", f->dir);
    assert_int_equal(restoreTo(f->repo, b.id, out, false, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, b.path));
    assert_non_null(strstr(errmsg, a.id));
    assert_non_null(strstr(errmsg, "digest"));
    assert_false(exists(out));
    assert_int_equal(backupVerify(f->repo, b.id, true, NULL, NULL, errmsg), CAIRN_ECORRUPT);
}

static void test_unknown_id(void **state)
{
    struct fx *f = *state;
    struct backup_info info;
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    assert_int_equal(restoreTo(f->repo, "20260101T000000000Z-0000-0000", out, false, errmsg),
                     CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "20260101T000000000Z-0000-0000"));
    assert_int_equal(backupVerify(f->repo, "nope", false, NULL, NULL, errmsg), CAIRN_ENOTFOUND);
    assert_int_equal(repoFind(f->repo, "../cairn-no-such-backup.cbk", &info, errmsg), CAIRN_ENOTFOUND);
    assert_int_equal(repoFind(f->repo, "/no/such/file.cbk", &info, errmsg), CAIRN_ENOTFOUND);
    assert_false(exists(out));
    /* A file renamed by hand is still found by its id. */
    makeDb(f->db, 10);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &info);
    {
        char renamed[PATH_MAX];
        struct backup_info found;
        snprintf(renamed, sizeof renamed, "%s/renamed.cbk", f->repo);
        assert_int_equal(rename(info.path, renamed), 0);
        assert_int_equal(repoFind(f->repo, info.id, &found, errmsg), 0);
        assert_string_equal(found.path, renamed);
    }
}

static void test_restore_over_existing(void **state)
{
    struct fx *f = *state;
    struct backup_info info;
    char out[PATH_MAX], side[PATH_MAX + 8], errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char *p;
    size_t n;

    makeDb(f->db, 50);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &info);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    writeFile(out, "precious", 8);
    assert_int_equal(restoreTo(f->repo, info.id, out, false, errmsg), CAIRN_EEXIST);
    assert_non_null(strstr(errmsg, out));
    p = readFile(out, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "precious", 8);
    free(p);

    /* A stale WAL beside the target would be replayed into the restored file. */
    snprintf(side, sizeof side, "%s-wal", out);
    writeFile(side, "stale", 5);
    assert_int_equal(restoreTo(f->repo, info.id, out, true, errmsg), 0);
    assertSameFile(f->db, out);
    assert_false(exists(side));
    assertIntegrity(out);

    unlink(out);
    writeFile(side, "stale", 5);
    assert_int_equal(restoreTo(f->repo, info.id, out, false, errmsg), CAIRN_EEXIST);
    assert_false(exists(out));
}

/* ---- damage ---- */

static void assertRefused(struct fx *f, const char *ref, const char *out, const char *what,
                          size_t at)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = backupVerify(f->repo, ref, false, NULL, NULL, errmsg);
    if (rv == 0) {
        fail_msg("verify accepted %s at %zu", what, at);
    }
    rv = restoreTo(f->repo, ref, out, false, errmsg);
    if (rv == 0) {
        fail_msg("restore accepted %s at %zu", what, at);
    }
    if (exists(out)) {
        fail_msg("restore left %s after %s at %zu", out, what, at);
    }
}

static void test_every_flip_and_truncation(void **state)
{
    struct fx *f = *state;
    struct backup_info full, inc;
    char out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    const struct backup_info *files[2] = {&full, &inc};

    /* Small pages and blocks: a few kilobytes with every part, several blocks. */
    makeDbPaged(f->db, 12, 512);
    mustBackup(f->db, f->repo, BACKUP_FULL, 3, &full);
    sqlExec(f->db, "UPDATE t SET name = 'flip' WHERE id = 3; "
                   "INSERT INTO t VALUES (99, 'new', zeroblob(1500))");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 3, &inc);
    assert_true(inc.pages > 3); /* more than one block */
    snprintf(out, sizeof out, "%s/out.db", f->dir);

    for (int k = 0; k < 2; k++) {
        size_t n;
        unsigned char *orig = readFile(files[k]->path, &n);
        unsigned char *p = malloc(n);
        memcpy(p, orig, n);
        for (size_t i = 0; i < n; i++) {
            p[i] ^= 0xff;
            writeFile(files[k]->path, p, n);
            assert_int_not_equal(cbkCheckMemory(p, n, errmsg), 0);
            /* The chain ends at the incremental: damage in either file is found. */
            assertRefused(f, inc.id, out, "a flipped byte", i);
            p[i] ^= 0xff;
        }
        for (size_t len = 0; len < n; len++) {
            writeFile(files[k]->path, orig, len);
            assertRefused(f, inc.id, out, "a truncation", len);
        }
        writeFile(files[k]->path, orig, n);
        free(p);
        free(orig);
    }
    /* Intact again: verification passes and is recorded. */
    assert_int_equal(backupVerify(f->repo, inc.id, true, NULL, NULL, errmsg), 0);
    assert_int_equal(backupReadInfo(inc.path, &inc, errmsg), 0);
    assert_int_equal(inc.verified, BACKUP_VERIFIED);
    mustRestore(f->repo, inc.id, out);
    assertSameFile(f->db, out);
}

/* Damage the frame of block k of a backup file in a way that no checksum sees: the
 * block's checksum and the file's digest are recomputed. Only decoding can tell. */
static void tamperFrame(const char *path, uint64_t k)
{
    size_t n;
    unsigned char *p = readFile(path, &n);
    size_t off = CBK_HEADER_SIZE;
    for (uint64_t b = 0;; b++) {
        uint32_t count = getU32(p + off + 4);
        size_t head = (size_t)CBK_BLOCK_HEAD_SIZE(count);
        uint32_t comp = getU32(p + off + head - 4);
        if (b == k) {
            uint64_t sum;
            p[off + head + comp / 2] ^= 0x55;
            sum = XXH3_64bits(p + off, head + comp);
            for (int i = 0; i < 8; i++) {
                p[off + head + comp + (size_t)i] = (unsigned char)(sum >> (8 * i));
            }
            break;
        }
        off += head + comp + CBK_BLOCK_SUM_SIZE;
    }
    {
        XXH128_hash_t x = XXH3_128bits(p, n - CBK_TRAILER_SIZE);
        cbkDigestBytes(x.low64, x.high64, p + n - BACKUP_DIGEST_SIZE);
    }
    writeFile(path, p, n);
    free(p);
}

/* Files big enough for the workers of restore and verify (several MiB of blocks). */
static void test_large_chain_on_workers(void **state)
{
    struct fx *f = *state;
    struct backup_info full, inc;
    char out[PATH_MAX], copy[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];

    sqlExec(f->db, "CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB);"
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)"
                   "INSERT INTO big SELECT i, randomblob(3000) FROM c");
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &full);
    assert_true(full.size_bytes > 8u << 20);
    sqlExec(f->db, "UPDATE big SET data = randomblob(3000) WHERE id % 10 = 0");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &inc);
    snprintf(copy, sizeof copy, "%s/copy.db", f->dir);
    copyFile(f->db, copy);
    snprintf(out, sizeof out, "%s/out.db", f->dir);
    mustRestore(f->repo, inc.id, out);
    assertSameFile(copy, out);
    assert_int_equal(backupVerify(f->repo, inc.id, true, NULL, NULL, errmsg), 0);

    /* A frame that decodes wrong under valid checksums (a new digest, so restored
     * alone): the workers find it. */
    unlink(out);
    tamperFrame(full.path, 5);
    assert_int_equal(backupVerify(f->repo, full.id, false, NULL, NULL, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, full.path));
    assert_non_null(strstr(errmsg, "block 5 at offset"));
    assert_int_equal(restoreTo(f->repo, full.id, out, false, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "block 5 at offset"));
    assert_false(exists(out));
    /* And the incremental no longer has its parent. */
    assert_int_equal(restoreTo(f->repo, inc.id, out, false, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "digest"));
    {
        /* Nothing else beside it either. */
        DIR *d = opendir(f->dir);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            assert_null(strstr(e->d_name, "restore"));
        }
        closedir(d);
    }
}

static void test_damaged_file_listed(void **state)
{
    struct fx *f = *state;
    struct backup_info info, *list;
    char path[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    struct buf b;
    size_t n;

    makeDb(f->db, 20);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &info);
    snprintf(path, sizeof path, "%s/zzz.cbk", f->repo);
    writeFile(path, "not a backup at all, but long enough to have a header? no.", 58);
    snprintf(path, sizeof path, "%s/.%s.cbk.tmp", f->repo, info.id);
    writeFile(path, "in progress", 11);
    assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, info.id);
    assert_string_equal(list[0].error, "");
    assert_string_equal(list[1].id, "zzz");
    assert_non_null(strstr(list[1].error, "shorter"));

    bufInit(&b);
    backupInfoJson(&list[1], &b);
    {
        json_t *j = json_loadb(b.p, b.len, 0, NULL);
        assert_non_null(j);
        assert_true(json_is_string(json_object_get(j, "error")));
        assert_true(json_is_null(json_object_get(j, "type")));
        assert_true(json_is_null(json_object_get(j, "digest")));
        json_decref(j);
    }
    bufFree(&b);
    free(list);

    /* Missing and empty repositories list nothing. */
    snprintf(path, sizeof path, "%s/nowhere", f->dir);
    assert_int_equal(repoList(path, &list, &n, errmsg), 0);
    assert_int_equal(n, 0);
    free(list);
}

static void test_info_json(void **state)
{
    struct fx *f = *state;
    struct backup_info full, inc;
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct buf b;
    json_t *j;

    makeDb(f->db, 30);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &full);
    sqlExec(f->db, "UPDATE t SET name = 'json' WHERE id = 2");
    mustBackup(f->db, f->repo, BACKUP_INCREMENTAL, 0, &inc);

    bufInit(&b);
    backupInfoJson(&full, &b);
    j = json_loadb(b.p, b.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), full.id);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "full");
    assert_true(json_is_null(json_object_get(j, "parent_id")));
    assert_true(json_is_null(json_object_get(j, "parent_digest")));
    assert_int_equal(json_integer_value(json_object_get(j, "created_ms")), full.created_ms);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "created"))), 24);
    assert_int_equal(json_integer_value(json_object_get(j, "raft_index")), 7);
    assert_int_equal(json_integer_value(json_object_get(j, "raft_term")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "page_size")), 4096);
    assert_int_equal(json_integer_value(json_object_get(j, "page_count")), full.page_count);
    assert_int_equal(json_integer_value(json_object_get(j, "pages")), full.pages);
    assert_int_equal(json_integer_value(json_object_get(j, "size_bytes")), full.size_bytes);
    assert_true(json_is_integer(json_object_get(j, "duration_ms")));
    assert_string_equal(json_string_value(json_object_get(j, "path")), full.path);
    assert_string_equal(json_string_value(json_object_get(j, "verified")), "unverified");
    assert_true(json_is_null(json_object_get(j, "verified_at")));
    assert_int_equal(strlen(json_string_value(json_object_get(j, "digest"))), 32);
    assert_string_equal(json_string_value(json_object_get(j, "source")), f->db);
    assert_null(json_object_get(j, "error"));
    json_decref(j);

    assert_int_equal(backupVerify(f->repo, inc.id, false, NULL, NULL, errmsg), 0);
    assert_int_equal(repoFind(f->repo, inc.id, &inc, errmsg), 0);
    bufReset(&b);
    backupInfoJson(&inc, &b);
    j = json_loadb(b.p, b.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "incremental");
    assert_string_equal(json_string_value(json_object_get(j, "parent_id")), full.id);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "parent_digest"))), 32);
    assert_string_equal(json_string_value(json_object_get(j, "verified")), "verified");
    assert_true(json_is_string(json_object_get(j, "verified_at")));
    json_decref(j);
    bufFree(&b);
}

/* The source's history goes into the header (version 2, bytes 400-415), and comes back
 * in the backup's entry (backupCreate's, the file's, the listing's) with its codec, and
 * in its JSON; a backup without one says none. */
static void test_history_recorded(void **state)
{
    struct fx *f = *state;
    struct backup_info plain, tagged, read, *list;
    char errmsg[CAIRN_ERRMSG_SIZE], hex[2 * BACKUP_HISTORY_SIZE + 1];
    unsigned char history[BACKUP_HISTORY_SIZE];
    unsigned char *file;
    size_t n, file_n;
    struct buf b;
    json_t *j;

    for (int i = 0; i < BACKUP_HISTORY_SIZE; i++) {
        history[i] = (unsigned char)(0xa0 + i);
        snprintf(hex + 2 * i, 3, "%02x", history[i]);
    }
    makeDb(f->db, 50);
    mustBackup(f->db, f->repo, BACKUP_FULL, 0, &plain);
    assert_true(libIsZero(plain.history, BACKUP_HISTORY_SIZE));
    assert_int_equal(plain.codec, CBK_CODEC_LZ4); /* a local repository's default */
    {
        struct backup_source src = {open(f->db, O_RDONLY), 11, 2, "cairnd:/data", NULL, false, {0}};
        struct backup_options opt = {.type = BACKUP_INCREMENTAL,
                                     .repo = f->repo,
                                     .codec = BACKUP_CODEC_ZSTD,
                                     .parent_id = plain.id};
        memcpy(src.history, history, sizeof history);
        assert_int_equal(backupCreate(&src, &opt, &tagged, errmsg), 0);
        close(src.fd);
    }
    assert_memory_equal(tagged.history, history, BACKUP_HISTORY_SIZE);
    assert_int_equal(tagged.codec, CBK_CODEC_ZSTD);
    file = readFile(tagged.path, &file_n);
    assert_int_equal(file[8], 2); /* a history needs version 2, even with zstd */
    assert_memory_equal(file + 400, history, BACKUP_HISTORY_SIZE);
    assert_int_equal(cbkCheckMemory(file, file_n, errmsg), 0);
    free(file);
    assert_int_equal(backupReadInfo(tagged.path, &read, errmsg), 0);
    assert_memory_equal(&read, &tagged, sizeof read);
    assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        const struct backup_info *want = strcmp(list[i].id, plain.id) == 0 ? &plain : &tagged;
        assert_memory_equal(list[i].history, want->history, BACKUP_HISTORY_SIZE);
        assert_int_equal(list[i].codec, want->codec);
    }
    free(list);

    bufInit(&b);
    backupInfoJson(&tagged, &b);
    assert_non_null(j = json_loadb(b.p, b.len, 0, NULL));
    assert_string_equal(json_string_value(json_object_get(j, "history")), hex);
    assert_string_equal(json_string_value(json_object_get(j, "compression")), "zstd");
    json_decref(j);
    bufReset(&b);
    backupInfoJson(&plain, &b);
    assert_non_null(j = json_loadb(b.p, b.len, 0, NULL));
    assert_true(json_is_null(json_object_get(j, "history")));
    assert_string_equal(json_string_value(json_object_get(j, "compression")), "lz4");
    json_decref(j);
    /* An entry that cannot be read says no codec. */
    bufReset(&b);
    snprintf(plain.error, sizeof plain.error, "header: bad magic");
    backupInfoJson(&plain, &b);
    assert_non_null(j = json_loadb(b.p, b.len, 0, NULL));
    assert_true(json_is_null(json_object_get(j, "compression")));
    json_decref(j);
    bufFree(&b);
}

static void test_write_error_cleans_up(void **state)
{
    struct fx *f = *state;
    struct backup_info info, *list;
    struct rlimit old, small;
    char errmsg[CAIRN_ERRMSG_SIZE];
    size_t n;
    int rv;

    makeDb(f->db, 400);
    /* Files in the repository cannot grow beyond 64 KiB: the write fails midway. */
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 64 * 1024;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    rv = backupOf(f->db, f->repo, BACKUP_FULL, 0, &info, errmsg);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_int_not_equal(rv, 0);
    assert_non_null(strstr(errmsg, f->repo));
    assert_int_equal(repoList(f->repo, &list, &n, errmsg), 0);
    assert_int_equal(n, 0);
    free(list);
    {
        struct stat st;
        DIR *d = opendir(f->repo);
        int entries = 0;
        assert_non_null(d);
        while (readdir(d) != NULL) {
            entries++;
        }
        closedir(d);
        assert_int_equal(entries, 2); /* . and .. : no temporary file left */
        (void)st;
    }
}

/* ---- ids ---- */

#define ID_THREADS 4
#define IDS_PER_THREAD 2500

static void *makeIds(void *arg)
{
    char(*ids)[BACKUP_ID_SIZE] = arg;
    for (int i = 0; i < IDS_PER_THREAD; i++) {
        backupNewId(ids[i]);
    }
    return NULL;
}

static int cmpId(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_ids(void **state)
{
    char(*ids)[BACKUP_ID_SIZE] = calloc(ID_THREADS * IDS_PER_THREAD, BACKUP_ID_SIZE);
    pthread_t th[ID_THREADS];
    for (int t = 0; t < ID_THREADS; t++) {
        assert_int_equal(pthread_create(&th[t], NULL, makeIds, ids + t * IDS_PER_THREAD), 0);
    }
    for (int t = 0; t < ID_THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    for (int t = 0; t < ID_THREADS; t++) {
        for (int i = 1; i < IDS_PER_THREAD; i++) {
            assert_true(strcmp(ids[t * IDS_PER_THREAD + i - 1], ids[t * IDS_PER_THREAD + i]) < 0);
        }
    }
    for (int i = 0; i < ID_THREADS * IDS_PER_THREAD; i++) {
        const char *id = ids[i];
        assert_int_equal(strlen(id), 29);
        assert_true(cbkIdValid(id));
        assert_int_equal(id[8], 'T');
        assert_int_equal(id[18], 'Z');
        assert_int_equal(id[19], '-');
        assert_int_equal(id[24], '-');
        {
            /* The names a sweep of unfinished uploads may touch (repo_s3.c). */
            char name[BACKUP_ID_SIZE + 8];
            snprintf(name, sizeof name, "%s.cbk", id);
            assert_true(backupIsOwnName(name));
        }
    }
    qsort(ids, ID_THREADS * IDS_PER_THREAD, BACKUP_ID_SIZE, cmpId);
    for (int i = 1; i < ID_THREADS * IDS_PER_THREAD; i++) {
        assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    }
    free(ids);
}

/* Only names of backupNewId's shape are the engine's own: a sweep of unfinished uploads
 * aborts nothing else of a shared bucket. */
static void test_own_names(void **state)
{
    static const char *not_ours[] = {
        "",
        "20261122T101500123Z-0000-a1b2",          /* no .cbk */
        "20261122T101500123Z-0000-a1b2.cbk.tmp",  /* more after it */
        "x20261122T101500123Z-0000-a1b2.cbk",     /* more before it */
        "sub/20261122T101500123Z-0000-a1b2.cbk",  /* another prefix */
        "20261122T101500123Z-0000-A1B2.cbk",      /* upper-case hex */
        "20261122T10150012Z-0000-a1b2.cbk",       /* a digit short */
        "2026112xT101500123Z-0000-a1b2.cbk",      /* not a digit */
        "20261122T101500123Z-0000-a1b2.CBK",
        "20261122T101500123Z_0000_a1b2.cbk",
        "notes.cbk",
        ".20261122T101500123Z-0000-a1b2.cbk.tmp", /* the posix driver's temporary name */
    };
    (void)state;
    assert_true(backupIsOwnName("20261122T101500123Z-0000-a1b2.cbk"));
    assert_true(backupIsOwnName("19700101T000000000Z-ffff-0000.cbk"));
    for (size_t i = 0; i < sizeof not_ours / sizeof not_ours[0]; i++) {
        if (backupIsOwnName(not_ours[i])) {
            fail_msg("\"%s\" taken for a backup object's name", not_ours[i]);
        }
    }
}

/* ---- frozen copies of a database being written ---- */

/* Another process writes the database until it is killed: transactions of 10 rows,
 * so that a consistent copy holds a multiple of 10. It tells through `ready` once it
 * committed a few. */
static pid_t startWriter(const char *path)
{
    int ready[2];
    pid_t pid;
    char c;
    assert_int_equal(pipe(ready), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *db;
        close(ready[0]);
        if (sqlite3_open(path, &db) != SQLITE_OK) {
            _exit(1);
        }
        sqlite3_busy_timeout(db, 5000);
        for (int commits = 0;; commits++) {
            if (sqlite3_exec(db,
                             "BEGIN IMMEDIATE;"
                             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
                             "WHERE i < 10) INSERT INTO t(name, data) SELECT 'w', "
                             "randomblob(600) FROM c;"
                             "COMMIT",
                             NULL, NULL, NULL) != SQLITE_OK) {
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            }
            if (commits == 5) {
                c = 1;
                if (write(ready[1], &c, 1) != 1) {
                    _exit(1);
                }
                close(ready[1]);
            }
        }
    }
    close(ready[1]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    return pid;
}

static void snapshotWhileWriting(struct fx *f, const char *journal_mode)
{
    struct backup_source src = {-1, 0, 0, f->db, NULL, false, {0}};
    struct backup_options opt = {.type = BACKUP_FULL, .repo = f->repo};
    struct backup_info info;
    char tmp[PATH_MAX], out[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE], sql[128];
    int64_t rows = 0;
    pid_t writer;

    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=%s;"
             "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)",
             journal_mode);
    sqlExec(f->db, sql);
    writer = startWriter(f->db);
    for (int round = 0; round < 3; round++) {
        int rv = backupSnapshotFile(f->db, f->dir, &src, tmp, errmsg);
        if (rv != 0) {
            kill(writer, SIGKILL);
            fail_msg("snapshot: %s", errmsg);
        }
        assert_true(src.fd >= 0);
        opt.type = round == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL;
        rv = backupCreate(&src, &opt, &info, errmsg);
        backupSnapshotRelease(&src, tmp);
        if (rv != 0) {
            kill(writer, SIGKILL);
            fail_msg("backup: %s", errmsg);
        }
        assert_false(exists(tmp));
        snprintf(out, sizeof out, "%s/out.db", f->dir);
        mustRestore(f->repo, info.id, out);
        assertIntegrity(out);
        assert_int_equal(sqlInt(out, "SELECT count(*) % 10 FROM t"), 0);
        /* Each copy is newer than the one before: the writer went on. */
        assert_true(sqlInt(out, "SELECT count(*) FROM t") >= rows);
        rows = sqlInt(out, "SELECT count(*) FROM t");
        assert_true(rows >= 50);
    }
    kill(writer, SIGKILL);
    waitpid(writer, NULL, 0);
}

static void test_snapshot_wal_while_writing(void **state)
{
    snapshotWhileWriting(*state, "wal");
}

static void test_snapshot_rollback_while_writing(void **state)
{
    snapshotWhileWriting(*state, "delete");
}

static void test_snapshot_missing_file(void **state)
{
    struct fx *f = *state;
    struct backup_source src;
    char tmp[PATH_MAX], path[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    snprintf(path, sizeof path, "%s/absent.db", f->dir);
    assert_int_not_equal(backupSnapshotFile(path, f->dir, &src, tmp, errmsg), 0);
    assert_non_null(strstr(errmsg, path));
    assert_int_equal(src.fd, -1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_parts),
        cmocka_unit_test(test_compression_names),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_chain_whole),
        T(test_full_roundtrip),
        T(test_block_sizes_and_page_sizes),
        T(test_empty_database),
        T(test_incremental_and_differential_chain),
        T(test_incremental_without_parent),
        T(test_named_parent),
        T(test_missing_link),
        T(test_parent_digest_mismatch),
        T(test_unknown_id),
        T(test_restore_over_existing),
        T(test_every_flip_and_truncation),
        T(test_large_chain_on_workers),
        T(test_damaged_file_listed),
        T(test_info_json),
        T(test_history_recorded),
        T(test_write_error_cleans_up),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_own_names),
        T(test_snapshot_wal_while_writing),
        T(test_snapshot_rollback_while_writing),
        T(test_snapshot_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
