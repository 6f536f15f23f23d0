/* Unit tests of the repository object (src/backup/repo.c) and its posix driver
 * (src/backup/repo_posix.c) on real files in a temporary directory: objects invisible until
 * committed, commit never replacing, abort and failed writes leaving nothing, ranged
 * reads, listing by prefix, small objects, removal, URLs. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "repo.h"

struct fx {
    char dir[PATH_MAX];
    char repo[PATH_MAX];
    struct repo *r;
};

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    chmod(path, 0755);
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char errmsg[CAIRN_ERRMSG_SIZE];
    snprintf(f->dir, sizeof f->dir, "/tmp/cairn-repo-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->repo, sizeof f->repo, "%s/repo", f->dir);
    assert_int_equal(repoOpen(f->repo, &f->r, errmsg), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    repoClose(f->r);
    chmod(f->repo, 0755);
    nftw(f->dir, rmOne, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Files in dir, hidden ones included, "." and ".." not. */
static int countFiles(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

static int collect(void *arg, const char *name, uint64_t size)
{
    char *out = arg;
    char one[300];
    snprintf(one, sizeof one, "%s=%llu;", name, (unsigned long long)size);
    strcat(out, one);
    return 0;
}

/* The names listed under prefix, sorted, as "name=size;..." */
static void listed(struct repo *r, const char *prefix, char *out)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    char raw[4096] = "";
    char *items[64];
    int n = 0;
    assert_int_equal(repoListNames(r, prefix, collect, raw, errmsg), 0);
    for (char *p = strtok(raw, ";"); p != NULL; p = strtok(NULL, ";")) {
        items[n++] = p;
    }
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            if (strcmp(items[j], items[i]) < 0) {
                char *t = items[i];
                items[i] = items[j];
                items[j] = t;
            }
        }
    }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        strcat(out, items[i]);
        strcat(out, ";");
    }
}

static void putObject(struct repo *r, const char *name, const char *text)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct repo_writer *w;
    assert_int_equal(repoCreate(r, name, &w, errmsg), 0);
    assert_int_equal(repoWrite(w, text, strlen(text), errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), 0);
}

static void test_url(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], url[PATH_MAX + 8];
    struct repo *r = (struct repo *)1;

    assert_string_equal(repoUrl(f->r), f->repo);
    assert_string_equal(repoLocalPath(f->r), f->repo);

    snprintf(url, sizeof url, "file://%s", f->repo);
    assert_int_equal(repoOpen(url, &r, errmsg), 0);
    assert_string_equal(repoLocalPath(r), f->repo);
    assert_string_equal(repoUrl(r), url);
    repoClose(r);

    assert_int_equal(repoOpen("", &r, errmsg), CAIRN_EINVAL);
    assert_null(r);
    assert_int_equal(repoOpen(NULL, &r, errmsg), CAIRN_EINVAL);
    /* s3:// goes to the S3 driver, which names what is wrong with the URL. */
    assert_int_equal(repoOpen("s3://", &r, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "bucket"));
    assert_int_equal(repoOpen("ftp://host/dir", &r, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "unknown scheme \"ftp\""));
    assert_int_equal(repoOpen("file://host/dir", &r, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "file:///DIR"));
    assert_null(r);
    /* A relative path that merely contains "://" further on is a path. */
    assert_int_equal(repoOpen("some/dir://x", &r, errmsg), 0);
    repoClose(r);
}

static void test_commit_visible_once(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], names[4096], path[PATH_MAX + 32];
    struct repo_writer *w, *w2;
    struct stat st;

    /* A missing repository lists nothing. */
    listed(f->r, "", names);
    assert_string_equal(names, "");

    assert_int_equal(repoCreate(f->r, "a.cbk", &w, errmsg), 0);
    assert_int_equal(repoWrite(w, "hello ", 6, errmsg), 0);
    assert_int_equal(repoWrite(w, "world", 5, errmsg), 0);
    /* Not visible before the commit: only the hidden temporary file exists. */
    snprintf(path, sizeof path, "%s/a.cbk", f->repo);
    assert_int_not_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/.a.cbk.tmp", f->repo);
    assert_int_equal(stat(path, &st), 0);
    listed(f->r, "a", names);
    assert_string_equal(names, "");
    /* A second writer of the same name while the first is at work. */
    assert_int_not_equal(repoCreate(f->r, "a.cbk", &w2, errmsg), 0);
    assert_null(w2);
    assert_int_equal(repoCommit(w, errmsg), 0);
    listed(f->r, "", names);
    assert_string_equal(names, "a.cbk=11;");
    assert_int_equal(countFiles(f->repo), 1);

    /* Commit never replaces. */
    assert_int_equal(repoCreate(f->r, "a.cbk", &w, errmsg), 0);
    assert_int_equal(repoWrite(w, "other", 5, errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), CAIRN_EEXIST);
    assert_non_null(strstr(errmsg, "already exists"));
    listed(f->r, "", names);
    assert_string_equal(names, "a.cbk=11;");
    assert_int_equal(countFiles(f->repo), 1);

    /* Names that would leave the repository or hide are refused. */
    assert_int_equal(repoCreate(f->r, "../x", &w, errmsg), CAIRN_EINVAL);
    assert_int_equal(repoCreate(f->r, ".x", &w, errmsg), CAIRN_EINVAL);
    assert_int_equal(repoCreate(f->r, "", &w, errmsg), CAIRN_EINVAL);
}

static void test_abort_leaves_nothing(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], names[4096];
    struct repo_writer *w;
    unsigned removed;

    assert_int_equal(repoCreate(f->r, "b.cbk", &w, errmsg), 0);
    assert_int_equal(repoWrite(w, "x", 1, errmsg), 0);
    repoAbort(w);
    repoAbort(NULL);
    listed(f->r, "", names);
    assert_string_equal(names, "");
    assert_int_equal(countFiles(f->repo), 0);

    /* A live writer's temporary file survives a sweep; a dead one's does not. */
    assert_int_equal(repoCreate(f->r, "c.cbk", &w, errmsg), 0);
    repoSweepTempIn(f->r, &removed);
    assert_int_equal(removed, 0);
    assert_int_equal(countFiles(f->repo), 1);
    repoAbort(w);
    {
        char path[PATH_MAX + 32];
        FILE *fp;
        snprintf(path, sizeof path, "%s/.d.cbk.tmp", f->repo);
        assert_non_null(fp = fopen(path, "w"));
        fclose(fp);
    }
    repoSweepTempIn(f->r, &removed);
    assert_int_equal(removed, 1);
    assert_int_equal(countFiles(f->repo), 0);
}

static void test_ranged_read(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct repo_writer *w;
    struct repo_reader rd;
    unsigned char *big = malloc(10u << 20), buf[100];

    for (size_t i = 0; i < (10u << 20); i++) {
        big[i] = (unsigned char)(i * 7 + (i >> 12));
    }
    /* More than the writeback step, in odd pieces. */
    assert_int_equal(repoCreate(f->r, "big.cbk", &w, errmsg), 0);
    for (size_t off = 0; off < (10u << 20);) {
        size_t n = (10u << 20) - off < 777777 ? (10u << 20) - off : 777777;
        assert_int_equal(repoWrite(w, big + off, n, errmsg), 0);
        off += n;
    }
    assert_int_equal(repoCommit(w, errmsg), 0);

    assert_int_equal(repoOpenRead(f->r, "big.cbk", &rd, errmsg), 0);
    assert_int_equal(rd.size, 10u << 20);
    assert_int_equal(rd.io.read(rd.io.arg, 0, buf, sizeof buf), 0);
    assert_memory_equal(buf, big, sizeof buf);
    assert_int_equal(rd.io.read(rd.io.arg, 5000001, buf, sizeof buf), 0);
    assert_memory_equal(buf, big + 5000001, sizeof buf);
    assert_int_equal(rd.io.read(rd.io.arg, (10u << 20) - 10, buf, 10), 0);
    assert_memory_equal(buf, big + (10u << 20) - 10, 10);
    /* Past the end: an error, not a short read. */
    assert_int_not_equal(rd.io.read(rd.io.arg, (10u << 20) - 10, buf, 20), 0);
    repoCloseRead(&rd);

    assert_int_equal(repoOpenRead(f->r, "nothing.cbk", &rd, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "nothing.cbk"));
    free(big);
}

static void test_list_prefix(void **state)
{
    struct fx *f = *state;
    char names[4096], errmsg[CAIRN_ERRMSG_SIZE], path[PATH_MAX + 32];

    putObject(f->r, "2026a.cbk", "12");
    putObject(f->r, "2026b.cbk", "123");
    putObject(f->r, "2027a.cbk", "1");
    putObject(f->r, "2026a.verified", "{}");
    /* A directory is no object. */
    snprintf(path, sizeof path, "%s/2026dir", f->repo);
    assert_int_equal(mkdir(path, 0755), 0);
    listed(f->r, "2026", names);
    assert_string_equal(names, "2026a.cbk=2;2026a.verified=2;2026b.cbk=3;");
    listed(f->r, "2027", names);
    assert_string_equal(names, "2027a.cbk=1;");
    listed(f->r, "", names);
    assert_string_equal(names, "2026a.cbk=2;2026a.verified=2;2026b.cbk=3;2027a.cbk=1;");
    listed(f->r, "x", names);
    assert_string_equal(names, "");
    (void)errmsg;
}

static void test_small_get_put_remove(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], buf[64], names[4096];
    size_t len;

    assert_int_equal(repoGet(f->r, "x.verified", buf, sizeof buf, &len, errmsg), CAIRN_ENOTFOUND);
    assert_int_equal(repoPut(f->r, "x.verified", "first", 5, errmsg), 0);
    assert_int_equal(repoGet(f->r, "x.verified", buf, sizeof buf, &len, errmsg), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "first", 5);
    /* put replaces, whole. */
    assert_int_equal(repoPut(f->r, "x.verified", "2nd", 3, errmsg), 0);
    assert_int_equal(repoGet(f->r, "x.verified", buf, sizeof buf, &len, errmsg), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "2nd", 3);
    /* At most cap bytes. */
    assert_int_equal(repoGet(f->r, "x.verified", buf, 2, &len, errmsg), 0);
    assert_int_equal(len, 2);
    assert_int_equal(countFiles(f->repo), 1); /* no temporary file left */

    assert_int_equal(repoRemove(f->r, "x.verified", errmsg), 0);
    assert_int_equal(repoRemove(f->r, "x.verified", errmsg), CAIRN_ENOTFOUND);
    listed(f->r, "", names);
    assert_string_equal(names, "");
    assert_int_equal(repoPut(f->r, "a/b", "x", 1, errmsg), CAIRN_EINVAL);
}

/* A repository that cannot be written: a clear error, nothing left. */
static void test_write_fails(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], url[PATH_MAX + 32], names[4096];
    struct repo_writer *w;
    struct repo *r;
    struct rlimit old, small;
    unsigned char chunk[4096] = {0};
    int rv = 0;
    FILE *fp;

    /* Under a regular file (read-only directories do not stop root). */
    snprintf(url, sizeof url, "%s/file", f->dir);
    assert_non_null(fp = fopen(url, "w"));
    fclose(fp);
    strcat(url, "/repo");
    assert_int_equal(repoOpen(url, &r, errmsg), 0);
    assert_int_not_equal(repoCreate(r, "a.cbk", &w, errmsg), 0);
    assert_null(w);
    assert_non_null(strstr(errmsg, f->dir));
    assert_non_null(strstr(errmsg, "Not a directory"));
    assert_int_not_equal(repoPut(r, "a.verified", "x", 1, errmsg), 0);
    repoClose(r);

    if (geteuid() != 0) {
        assert_int_equal(mkdir(f->repo, 0555), 0);
        assert_int_not_equal(repoCreate(f->r, "a.cbk", &w, errmsg), 0);
        assert_non_null(strstr(errmsg, "Permission denied"));
        assert_int_equal(countFiles(f->repo), 0);
        chmod(f->repo, 0755);
    }

    /* A write that fails half way (the file size limit): the writer says which
     * file, and its abort leaves nothing. */
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 64 * 1024;
    assert_int_equal(repoCreate(f->r, "big.cbk", &w, errmsg), 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    for (int i = 0; i < 64 && rv == 0; i++) {
        rv = repoWrite(w, chunk, sizeof chunk, errmsg);
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_int_not_equal(rv, 0);
    assert_non_null(strstr(errmsg, ".big.cbk.tmp"));
    repoAbort(w);
    listed(f->r, "", names);
    assert_string_equal(names, "");
    assert_int_equal(countFiles(f->repo), 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_url),
        T(test_commit_visible_once),
        T(test_abort_leaves_nothing),
        T(test_ranged_read),
        T(test_list_prefix),
        T(test_small_get_put_remove),
        T(test_write_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
