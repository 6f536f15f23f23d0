/* Unit tests of the shared helpers of src/lib/: ISO-8601 times (lib.c), the atomic
 * whole-file write and the durable rename (lib.c), and the one SQLite error mapper
 * (sqlerr.c), the descriptor of a connection's database file (pagesum.c), on real files in a temporary directory and a real SQLite connection. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdbool.h>
#include <limits.h>
#include <sys/wait.h>

#include "error.h"
#include "lib.h"
#include "pagesum.h"
#include "sqlerr.h"

/* ---- ISO-8601 ------------------------------------------------------------------------ */

static void iso(int64_t ms, enum lib_iso8601_style style, const char *want)
{
    char out[LIB_ISO8601_SIZE];
    memset(out, 'x', sizeof out);
    libIso8601(ms, style, out);
    if (strcmp(out, want) != 0) {
        fail_msg("libIso8601(%lld, %d) = \"%s\", want \"%s\"", (long long)ms, (int)style, out,
                 want);
    }
}

static void test_iso8601(void **state)
{
    (void)state;
    iso(0, LIB_ISO8601_MS, "1970-01-01T00:00:00.000Z");
    iso(0, LIB_ISO8601_SECONDS, "1970-01-01T00:00:00Z");
    iso(0, LIB_ISO8601_BASIC, "19700101T000000Z");
    iso(0, LIB_ISO8601_BASIC_MS, "19700101T000000000Z");
    iso(1795342500123, LIB_ISO8601_MS, "2026-11-22T10:15:00.123Z");
    iso(1795342500123, LIB_ISO8601_SECONDS, "2026-11-22T10:15:00Z");
    iso(1795342500123, LIB_ISO8601_BASIC, "20261122T101500Z");
    iso(1795342500123, LIB_ISO8601_BASIC_MS, "20261122T101500123Z");
    iso(946684799999, LIB_ISO8601_MS, "1999-12-31T23:59:59.999Z");
    /* Before 1970: rounded down to the second, the milliseconds counted up from it. */
    iso(-1, LIB_ISO8601_MS, "1969-12-31T23:59:59.999Z");
    iso(-1000, LIB_ISO8601_MS, "1969-12-31T23:59:59.000Z");
    iso(-1001, LIB_ISO8601_MS, "1969-12-31T23:59:58.999Z");
    iso(-1001, LIB_ISO8601_BASIC, "19691231T235958Z");
}

/* Times far out of any calendar still give a bounded string (UBSan: no overflow). */
static void test_iso8601_extremes(void **state)
{
    const int64_t v[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 999};
    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        for (int style = LIB_ISO8601_MS; style <= LIB_ISO8601_BASIC_MS; style++) {
            char out[LIB_ISO8601_SIZE + 8];
            memset(out, 'x', sizeof out);
            libIso8601(v[i], (enum lib_iso8601_style)style, out);
            assert_non_null(memchr(out, '\0', LIB_ISO8601_SIZE));
            assert_int_equal(out[strlen(out) - 1], 'Z');
            assert_int_equal(out[LIB_ISO8601_SIZE], 'x'); /* nothing past the size */
        }
    }
}

/* ---- files ----------------------------------------------------------------------------- */

struct fx {
    char dir[PATH_MAX];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s/cairn-lib-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static void removeAll(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char p[PATH_MAX];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            removeAll(p);
        } else {
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    removeAll(f->dir);
    free(f);
    return 0;
}

/* The names in dir, sorted, joined by spaces. */
static void names(const char *dir, char *out, size_t n)
{
    struct dirent **v;
    int k = scandir(dir, &v, NULL, alphasort);
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        if (v[i]->d_name[0] != '.' ||
            (strcmp(v[i]->d_name, ".") != 0 && strcmp(v[i]->d_name, "..") != 0)) {
            used += (size_t)snprintf(out + used, n - used, "%s%s", used ? " " : "", v[i]->d_name);
        }
        free(v[i]);
    }
    free(v);
}

static void readBack(const char *path, const char *want, mode_t mode)
{
    char buf[256];
    struct stat st;
    int fd = open(path, O_RDONLY);
    ssize_t n;
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof buf - 1);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, mode);
    close(fd);
}

static void test_write_atomic(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], list[1024], errmsg[CAIRN_ERRMSG_SIZE];
    mode_t old = umask(022);
    snprintf(path, sizeof path, "%s/node.json", f->dir);
    assert_int_equal(libWriteFileAtomic(path, "{\"a\":1}", 7, 0, errmsg), 0);
    readBack(path, "{\"a\":1}", 0644);
    /* Replaced whole; the temporary name is gone. */
    assert_int_equal(libWriteFileAtomic(path, "{}", 2, 0, errmsg), 0);
    readBack(path, "{}", 0644);
    names(f->dir, list, sizeof list);
    assert_string_equal(list, "node.json");
    /* A temporary file a crash left is reused, not in the way. */
    {
        char tmp[PATH_MAX + 8];
        int fd;
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "partial and longer", 18), 18);
        close(fd);
    }
    assert_int_equal(libWriteFileAtomic(path, "", 0, 0, errmsg), 0);
    readBack(path, "", 0644);
    names(f->dir, list, sizeof list);
    assert_string_equal(list, "node.json");
    umask(old);
}

static void test_write_atomic_unique(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], list[1024], errmsg[CAIRN_ERRMSG_SIZE];
    mode_t old = umask(077);
    snprintf(path, sizeof path, "%s/ID.verified", f->dir);
    assert_int_equal(libWriteFileAtomic(path, "first", 5, LIB_ATOMIC_UNIQUE, errmsg), 0);
    assert_int_equal(libWriteFileAtomic(path, "second", 6, LIB_ATOMIC_UNIQUE, errmsg), 0);
    /* 0644 whatever the umask: a repository's files are read by others (as before). */
    readBack(path, "second", 0644);
    names(f->dir, list, sizeof list);
    assert_string_equal(list, "ID.verified");
    umask(old);
    /* A bare name: in the working directory. */
    {
        char cwd[PATH_MAX];
        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(chdir(f->dir), 0);
        assert_int_equal(libWriteFileAtomic("bare", "x", 1, LIB_ATOMIC_UNIQUE, errmsg), 0);
        assert_int_equal(chdir(cwd), 0);
        names(f->dir, list, sizeof list);
        assert_string_equal(list, "ID.verified bare");
    }
}

static void test_write_atomic_failures(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], list[1024], errmsg[CAIRN_ERRMSG_SIZE];
    char *longp;

    /* No directory: nothing created, the temporary file named. */
    snprintf(path, sizeof path, "%s/missing/node.json", f->dir);
    assert_int_equal(libWriteFileAtomic(path, "x", 1, 0, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "node.json.tmp"));
    assert_int_equal(libWriteFileAtomic(path, "x", 1, LIB_ATOMIC_UNIQUE, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, ".node.json."));

    /* The rename fails (a directory is in the way): the temporary file is removed. */
    snprintf(path, sizeof path, "%s/dir", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/dir/keep", f->dir);
    assert_int_equal(close(open(path, O_WRONLY | O_CREAT, 0644)), 0);
    snprintf(path, sizeof path, "%s/dir", f->dir);
    for (unsigned flags = 0; flags <= LIB_ATOMIC_UNIQUE; flags++) {
        assert_int_not_equal(libWriteFileAtomic(path, "x", 1, flags, errmsg), 0);
        assert_non_null(strstr(errmsg, "rename"));
        names(f->dir, list, sizeof list);
        assert_string_equal(list, "dir");
    }

    /* A path too long for its temporary name. */
    longp = malloc(PATH_MAX + 1);
    memset(longp, 'a', PATH_MAX - 2);
    longp[PATH_MAX - 2] = '\0';
    assert_int_equal(libWriteFileAtomic(longp, "x", 1, 0, errmsg), CAIRN_EINVAL);
    free(longp);
}

static void test_rename_durable(void **state)
{
    struct fx *f = *state;
    char a[PATH_MAX], b[PATH_MAX], list[1024], errmsg[CAIRN_ERRMSG_SIZE];
    mode_t old = umask(022);
    snprintf(a, sizeof a, "%s/a", f->dir);
    snprintf(b, sizeof b, "%s/b", f->dir);
    assert_int_equal(libWriteFileAtomic(a, "new", 3, 0, errmsg), 0);
    assert_int_equal(libWriteFileAtomic(b, "old", 3, 0, errmsg), 0);
    assert_int_equal(libRenameDurable(a, b, errmsg), 0);
    readBack(b, "new", 0644);
    names(f->dir, list, sizeof list);
    assert_string_equal(list, "b");
    assert_int_equal(libRenameDurable(a, b, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, a));
    assert_non_null(strstr(errmsg, b));
    umask(old);
}

/* ---- SQLite errors ---------------------------------------------------------------------- */

static void test_sqlerr_codes(void **state)
{
    static const struct {
        int rc, want;
    } table[] = {
        /* What a caller got where it needed another answer is a failure all the same. */
        {SQLITE_OK, CAIRN_EIO},
        {SQLITE_ROW, CAIRN_EIO},
        {SQLITE_DONE, CAIRN_EIO},
        {SQLITE_NOMEM, CAIRN_ENOMEM},
        {SQLITE_FULL, CAIRN_ENOSPC},
        {SQLITE_CORRUPT, CAIRN_ECORRUPT},
        {SQLITE_CORRUPT_VTAB, CAIRN_ECORRUPT},
        {SQLITE_CORRUPT_INDEX, CAIRN_ECORRUPT},
        {SQLITE_NOTADB, CAIRN_ECORRUPT},
        {SQLITE_BUSY, CAIRN_EBUSY},
        {SQLITE_BUSY_SNAPSHOT, CAIRN_EBUSY},
        {SQLITE_LOCKED, CAIRN_EBUSY},
        {SQLITE_LOCKED_SHAREDCACHE, CAIRN_EBUSY},
        {SQLITE_IOERR, CAIRN_EIO},
        {SQLITE_IOERR_DATA, CAIRN_EIO}, /* a page checksum: callers that know say so first */
        {SQLITE_IOERR_NOMEM, CAIRN_EIO},
        {SQLITE_CANTOPEN, CAIRN_EIO},
        {SQLITE_READONLY, CAIRN_EIO},
        {SQLITE_ERROR, CAIRN_EIO},
        {SQLITE_CONSTRAINT_UNIQUE, CAIRN_EIO},
        {SQLITE_INTERRUPT, CAIRN_EIO},
    };
    (void)state;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (sqlerrCode(table[i].rc) != table[i].want) {
            fail_msg("sqlerrCode(%d) = %s, want %s", table[i].rc,
                     errorName(sqlerrCode(table[i].rc)), errorName(table[i].want));
        }
    }
}

static void test_sqlerr_messages(void **state)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc;
    (void)state;
    /* No connection: the code's words. */
    assert_int_equal(sqlerrf(NULL, SQLITE_NOMEM, errmsg, "open %s", "x.db"), CAIRN_ENOMEM);
    assert_string_equal(errmsg, "open x.db: out of memory");
    assert_string_equal(sqlerrMessage(NULL, SQLITE_FULL), sqlite3_errstr(SQLITE_FULL));
    /* A connection: its message. */
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    rc = sqlite3_prepare_v2(db, "SELEC 1", -1, &st, NULL);
    assert_int_equal(rc, SQLITE_ERROR);
    assert_int_equal(sqlerrf(db, rc, errmsg, "%s on %s", "SELEC 1", ":memory:"), CAIRN_EIO);
    assert_string_equal(errmsg, "SELEC 1 on :memory:: near \"SELEC\": syntax error");
    sqlite3_close(db);
    /* Not a database. */
    {
        char path[] = "/tmp/cairn-sqlerr-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "this is not a SQLite database, not at all, no.....", 50), 50);
        close(fd);
        db = NULL;
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(db, "SELECT * FROM sqlite_schema", NULL, NULL, NULL);
        }
        assert_int_equal(sqlerrf(db, rc, errmsg, "read %s", path), CAIRN_ECORRUPT);
        assert_non_null(strstr(errmsg, "not a database"));
        sqlite3_close(db);
        unlink(path);
    }
}

/* libParseIso8601 reads what libIso8601 writes, offsets and a space for the T; a
 * backup id (20261203T...Z-...) and other text are not times. */
static void test_parse_iso8601(void **state)
{
    int64_t ms = 0;
    (void)state;
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00Z", &ms), 0);
    assert_int_equal(ms, 1796205720000LL);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00.250Z", &ms), 0);
    assert_int_equal(ms, 1796205720250LL);
    assert_int_equal(libParseIso8601("2026-12-02 11:02:00+01:00", &ms), 0);
    assert_int_equal(ms, 1796205720000LL);
    assert_int_equal(libParseIso8601("2026-12-02T08:02:00.5-02:00", &ms), 0);
    assert_int_equal(ms, 1796205720500LL);
    for (int64_t v = -1000; v < 4000000000000LL; v += 123456789013LL) {
        char out[LIB_ISO8601_SIZE];
        libIso8601(v, LIB_ISO8601_MS, out);
        assert_int_equal(libParseIso8601(out, &ms), 0);
        assert_int_equal(ms, v);
    }
    assert_int_equal(libParseIso8601("20261203T173655362Z-0000-546a", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00", &ms), -1); /* no zone */
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00Zjunk", &ms), -1);
    assert_int_equal(libParseIso8601("yesterday", &ms), -1);
    /* Every field in its range: never normalised into another date. */
    assert_int_equal(libParseIso8601("2026-13-01T00:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-00-01T00:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-02-29T00:00:00Z", &ms), -1); /* not a leap year */
    assert_int_equal(libParseIso8601("2026-04-31T00:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-00T00:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T24:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:60:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:60Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00+24:00", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00+1:00", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00+01:0x", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02T10:02:00.Z", &ms), -1);
    assert_int_equal(libParseIso8601(" 2026-12-02T10:02:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("+2026-12-02T10:02:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-1-02T10:02:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("2026-12-02", &ms), -1);
    assert_int_equal(libParseIso8601("", &ms), -1);
    /* Leap days of leap years, the century rule both ways. */
    assert_int_equal(libParseIso8601("2028-02-29T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 1835395200000LL);
    assert_int_equal(libParseIso8601("2000-02-29T23:59:59Z", &ms), 0);
    assert_int_equal(ms, 951868799000LL);
    assert_int_equal(libParseIso8601("2100-02-29T00:00:00Z", &ms), -1);
    assert_int_equal(libParseIso8601("", &ms), -1);
}

/* Ids as text: libHexDecode reads exactly what libHexEncode writes (either case), and
 * nothing else; libRandomId is never all zero and not the same twice. */
static void test_hex_and_random_ids(void **state)
{
    (void)state;
    unsigned char in[16], out[16], other[16];
    char text[33];
    for (int i = 0; i < 16; i++) {
        in[i] = (unsigned char)(i * 17 + 3);
    }
    libHexEncode(in, sizeof in, text);
    assert_string_equal(text, "031425364758697a8b9cadbecfe0f102");
    assert_int_equal(libHexDecode(text, out, sizeof out), 0);
    assert_memory_equal(in, out, sizeof in);
    assert_int_equal(libHexDecode("031425364758697A8B9CADBECFE0F102", out, sizeof out), 0);
    assert_memory_equal(in, out, sizeof in);
    assert_int_equal(libHexDecode("031425364758697a8b9cadbecfe0f1", out, sizeof out), -1);
    assert_int_equal(libHexDecode("031425364758697a8b9cadbecfe0f10200", out, sizeof out), -1);
    assert_int_equal(libHexDecode("031425364758697a8b9cadbecfe0f1g2", out, sizeof out), -1);
    assert_int_equal(libHexDecode("", out, 0), 0);
    assert_int_equal(libIsZero((unsigned char[4]){0, 0, 0, 0}, 4), 1);
    assert_int_equal(libIsZero((unsigned char[4]){0, 0, 1, 0}, 4), 0);
    libRandomId(out, sizeof out);
    libRandomId(other, sizeof other);
    assert_false(libIsZero(out, sizeof out));
    assert_memory_not_equal(out, other, sizeof out);
}

/* An id in a file of its own: exactly 2n hex digits and a newline, not all zero; no file
 * is "none"; anything else is damaged, and says which file. */
static void test_read_id_file(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text;
        int rv;
    } cases[] = {
        {"0102030405060708090a0b0c0d0e0f10\n", 0},
        {"0102030405060708090A0B0C0D0E0F10\n", 0},
        {"0102030405060708090a0b0c0d0e0f10", CAIRN_ECORRUPT},     /* no newline */
        {"0102030405060708090a0b0c0d0e0f10\n\n", CAIRN_ECORRUPT}, /* one byte more */
        {"0102030405060708090a0b0c0d0e0f\n", CAIRN_ECORRUPT},     /* short */
        {"00000000000000000000000000000000\n", CAIRN_ECORRUPT},   /* zero */
        {"0102030405060708090a0b0c0d0e0fxy\n", CAIRN_ECORRUPT},   /* not hex */
        {"", CAIRN_ECORRUPT},
    };
    char path[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char id[16];
    bool kept = true;
    snprintf(path, sizeof path, "%s/cluster-id", f->dir);
    assert_int_equal(libReadIdFile(path, id, sizeof id, &kept, errmsg), 0);
    assert_false(kept);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errmsg[0] = '\0';
        assert_int_equal(libWriteFileAtomic(path, cases[i].text, strlen(cases[i].text), 0, errmsg),
                         0);
        assert_int_equal(libReadIdFile(path, id, sizeof id, &kept, errmsg), cases[i].rv);
        if (cases[i].rv == 0) {
            assert_true(kept);
            assert_int_equal(id[0], 1);
            assert_int_equal(id[15], 0x10);
        } else {
            assert_false(kept);
            assert_non_null(strstr(errmsg, path));
        }
    }
    /* A directory in its place: a read error, with the file's name. */
    unlink(path);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_not_equal(libReadIdFile(path, id, sizeof id, &kept, errmsg), 0);
    assert_non_null(strstr(errmsg, path));
    rmdir(path);
}

/* ---- a connection's own descriptor (pagesumFd) --------------------------------------- */

/* Does another process see a lock on SQLite's SHARED range of path? F_GETLK never
 * reports the caller's own locks, so ask from a child. */
static bool otherSeesSharedLock(const char *path)
{
    pid_t pid = fork();
    int status = 0;
    if (pid == 0) {
        int fd = open(path, O_RDONLY);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0x40000002,
                           .l_len = 510};
        _exit(fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK ? 0 : 1);
    }
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_pagesum_fd(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    sqlite3 *db = NULL, *plain = NULL;
    struct stat a, b;
    unsigned char hdr[16];
    int fd;
    pagesumRegister();
    snprintf(path, sizeof path, "%s/x.db", f->dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     PAGESUM_VFS),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); "
                                      "INSERT INTO t VALUES(1); BEGIN; SELECT * FROM t;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    /* The very file SQLite holds, readable beside it. */
    fd = pagesumFd(db);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &a), 0);
    assert_int_equal(stat(path, &b), 0);
    assert_true(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    assert_int_equal(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    assert_memory_equal(hdr, "SQLite format 3", 16);
    /* Reading through it keeps SQLite's lock, which a descriptor of one's own, once
     * closed, would have dropped (the reason pagesumFd exists). */
    assert_true(otherSeesSharedLock(path));
    {
        int own = open(path, O_RDONLY);
        assert_true(own >= 0);
        close(own);
        assert_false(otherSeesSharedLock(path));
    }
    /* A connection through another VFS: not known. */
    assert_int_equal(sqlite3_open_v2(path, &plain, SQLITE_OPEN_READONLY, "unix"), SQLITE_OK);
    assert_int_equal(pagesumFd(plain), -1);
    sqlite3_close(plain);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_iso8601_extremes),
        cmocka_unit_test(test_parse_iso8601),
        cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_atomic_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_atomic_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_durable, setup, teardown),
        cmocka_unit_test(test_hex_and_random_ids),
        cmocka_unit_test_setup_teardown(test_read_id_file, setup, teardown),
        cmocka_unit_test(test_sqlerr_codes),
        cmocka_unit_test(test_sqlerr_messages),
        cmocka_unit_test_setup_teardown(test_pagesum_fd, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
