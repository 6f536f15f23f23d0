/* Unit tests of the repository object (src/backup/repo.c) and its posix driver
 * (src/backup/repo_posix.c) on real files in a temporary directory: objects invisible until
 * committed, commit never replacing, abort and failed writes leaving nothing, ranged
 * reads, listing by prefix, small objects, removal, URLs; and the catalog index
 * (src/backup/catidx.c): its encoding, a damaged index refused whole, and a listing's
 * use of it (CAIRN_CATALOG_INDEX=on puts a posix repository's listings on it): cached
 * entries used only for objects of the same version, the rest read again, the index
 * rewritten. */
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
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <xxhash.h>
#include <zstd.h>

#include "catidx.h"
#include "cbk.h"
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

static int collect(void *arg, const char *name, uint64_t size, const char *version)
{
    char *out = arg;
    char one[300];
    assert_non_null(version); /* the posix driver always has one */
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

/* A writer killed (kill -9) while writing an object leaves its temporary file: the next
 * writer of the same object takes the name over (it failed on it before, and the
 * archive's next segment then never got written), while a live writer's is still
 * refused; a sweep removes such files whatever the object (.seg.tmp as .cbk.tmp). */
static void test_killed_writer_does_not_block_the_object(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], names[4096], path[PATH_MAX + 32], ready;
    struct repo_writer *w, *w2;
    int pfd[2], status;
    unsigned removed;
    pid_t pid;
    FILE *fp;

    assert_int_equal(pipe(pfd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        if (repoCreate(f->r, "archive-t1-5.seg", &w, errmsg) != 0 ||
            repoWrite(w, "half", 4, errmsg) != 0 || write(pfd[1], "r", 1) != 1) {
            _exit(1);
        }
        for (;;) {
            pause(); /* killed here, mid-write */
        }
    }
    close(pfd[1]);
    assert_int_equal(read(pfd[0], &ready, 1), 1);
    close(pfd[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    snprintf(path, sizeof path, "%s/.archive-t1-5.seg.tmp", f->repo);
    assert_int_equal(access(path, F_OK), 0); /* what it left */

    assert_int_equal(repoCreate(f->r, "archive-t1-5.seg", &w, errmsg), 0);
    /* ... and the new writer's file is a live one's: a third writer is refused. */
    assert_int_not_equal(repoCreate(f->r, "archive-t1-5.seg", &w2, errmsg), 0);
    assert_null(w2);
    assert_non_null(strstr(errmsg, ".archive-t1-5.seg.tmp"));
    assert_int_equal(repoWrite(w, "whole", 5, errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), 0);
    listed(f->r, "", names);
    assert_string_equal(names, "archive-t1-5.seg=5;");
    assert_int_equal(countFiles(f->repo), 1);

    /* A dead writer's temporary file of any object goes with a sweep. */
    snprintf(path, sizeof path, "%s/.archive-t1-9.seg.tmp", f->repo);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);
    repoSweepTempIn(f->r, &removed);
    assert_int_equal(removed, 1);
    assert_int_equal(countFiles(f->repo), 1);
}

/* Writers racing for one object, some killed mid-write: never two objects, never a
 * torn one. Each round, 4 processes create, write and commit the same name (one of them
 * killed while it writes); at most one commits, what is there is one writer's whole
 * content, and no temporary file is left once a sweep ran. */
static void test_writers_racing_for_one_object(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], names[4096], name[32], path[PATH_MAX + 64];
    unsigned removed;

    for (int round = 0; round < 20; round++) {
        pid_t pids[4];
        int commits = 0, status;
        snprintf(name, sizeof name, "race-%02d.seg", round);
        for (int i = 0; i < 4; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                struct repo_writer *w;
                char body[64];
                int n = snprintf(body, sizeof body, "writer %d of round %d, whole", i, round);
                if (repoCreate(f->r, name, &w, errmsg) != 0) {
                    _exit(2);
                }
                if (repoWrite(w, body, (size_t)n / 2, errmsg) != 0) {
                    _exit(3);
                }
                if (i == 0) {
                    for (;;) {
                        pause(); /* killed here, mid-write */
                    }
                }
                if (repoWrite(w, body + n / 2, (size_t)(n - n / 2), errmsg) != 0) {
                    _exit(3);
                }
                _exit(repoCommit(w, errmsg) == 0 ? 0 : 4);
            }
        }
        for (int i = 1; i < 4; i++) {
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            assert_true(WIFEXITED(status));
            commits += WEXITSTATUS(status) == 0;
        }
        kill(pids[0], SIGKILL);
        assert_int_equal(waitpid(pids[0], &status, 0), pids[0]);
        assert_true(commits <= 1);
        snprintf(path, sizeof path, "%s/%s", f->repo, name);
        if (commits == 1) {
            char got[64] = "";
            FILE *fp = fopen(path, "r");
            assert_non_null(fp);
            assert_non_null(fgets(got, sizeof got, fp));
            fclose(fp);
            assert_non_null(strstr(got, ", whole"));
            assert_null(strstr(got, "writer 0 "));
        }
    }
    repoSweepTempIn(f->r, &removed);
    listed(f->r, "race-", names);
    assert_null(strstr(names, ".tmp"));
    {
        DIR *d = opendir(f->repo);
        struct dirent *e;
        assert_non_null(d);
        while ((e = readdir(d)) != NULL) {
            assert_null(strstr(e->d_name, ".tmp"));
        }
        closedir(d);
    }
}

/* A writer taken for a dead one (its temporary file removed by another writer of the
 * object, which then wrote its own at that name) publishes nothing at its commit, and
 * its abort leaves the other's file alone: it never renames another writer's half
 * written file to the object's name (the race test_writers_racing_for_one_object hit
 * 1 run in 30, made certain here). */
static void test_a_writer_taken_for_dead_publishes_nothing(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], tmp[PATH_MAX + 64], path[PATH_MAX + 64];
    struct repo_writer *w;
    int other;
    snprintf(tmp, sizeof tmp, "%s/.taken.seg.tmp", f->repo);
    snprintf(path, sizeof path, "%s/taken.seg", f->repo);

    for (int commit = 1; commit >= 0; commit--) {
        assert_int_equal(repoCreate(f->r, "taken.seg", &w, errmsg), 0);
        assert_int_equal(repoWrite(w, "mine, whole", 11, errmsg), 0);
        /* The other writer: this one's file removed, its own in its place, held. */
        assert_int_equal(unlink(tmp), 0);
        other = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(other >= 0);
        assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
        assert_int_equal(write(other, "other's, ha", 11), 11);
        if (commit) {
            assert_int_equal(repoCommit(w, errmsg), CAIRN_EEXIST);
            assert_non_null(strstr(errmsg, "another writer took it over"));
        } else {
            repoAbort(w);
        }
        assert_int_equal(access(path, F_OK), -1); /* nothing published */
        assert_int_equal(access(tmp, F_OK), 0);   /* the other's file is still there */
        close(other);
        assert_int_equal(unlink(tmp), 0);
    }
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

/* ---- the catalog index ---- */

static void fillBackup(struct backup_info *b, const char *id, const char *source)
{
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", id);
    b->type = BACKUP_INCREMENTAL;
    snprintf(b->parent_id, sizeof b->parent_id, "20261122T101500123Z-0001-7f3a");
    for (int i = 0; i < BACKUP_DIGEST_SIZE; i++) {
        b->parent_digest[i] = (unsigned char)(i + 1);
        b->digest[i] = (unsigned char)(0xF0 - i);
    }
    snprintf(b->source, sizeof b->source, "%s", source);
    b->created_ms = 1795000000123LL;
    b->raft_index = 42;
    b->raft_term = 7;
    b->page_size = 4096;
    b->page_count = 1u << 20;
    b->pages = 12345;
    b->duration_ms = 987;
    b->codec = CBK_CODEC_LZ4;
    for (int i = 0; i < BACKUP_HISTORY_SIZE; i++) {
        b->history[i] = (unsigned char)(0x11 * (i + 1));
    }
}

static void test_index_round_trip(void **state)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct backup_info b, d, sc, got;
    struct catidx_put put[3];
    struct catidx *idx;
    unsigned char *obj;
    size_t len, at;
    (void)state;

    fillBackup(&b, "20261122T101600000Z-0002-0a0b", "cairnd:/data");
    memset(&d, 0, sizeof d);
    snprintf(d.error, sizeof d.error, "header: bad magic");
    memset(&sc, 0, sizeof sc);
    sc.verified = BACKUP_VERIFY_FAILED;
    sc.verified_ms = 1795000009999LL;
    memcpy(sc.digest, b.digest, BACKUP_DIGEST_SIZE);
    /* Out of order on purpose: the encoder sorts. */
    put[0] = (struct catidx_put){CATIDX_SIDECAR, "b.verified", "etag-3/1", 120, &sc};
    put[1] = (struct catidx_put){CATIDX_BACKUP, "b.cbk", "etag-1/1", 65536, &b};
    put[2] = (struct catidx_put){CATIDX_DAMAGED, "a.cbk", "etag-2/1", 700, &d};
    assert_int_equal(catidxEncode(put, 3, &obj, &len, errmsg), 0);
    assert_int_equal(catidxDecode(obj, len, &idx, errmsg), 0);
    assert_int_equal(catidxCount(idx), 3);

    assert_int_equal(catidxFind(idx, "b.cbk", "etag-1/1", 65536, &at), CATIDX_BACKUP);
    memset(&got, 0x55, sizeof got);
    got.path[0] = '\0';
    catidxFill(idx, at, &got);
    assert_string_equal(got.id, b.id);
    assert_int_equal(got.type, b.type);
    assert_string_equal(got.parent_id, b.parent_id);
    assert_memory_equal(got.parent_digest, b.parent_digest, BACKUP_DIGEST_SIZE);
    assert_memory_equal(got.digest, b.digest, BACKUP_DIGEST_SIZE);
    assert_string_equal(got.source, b.source);
    assert_int_equal(got.created_ms, b.created_ms);
    assert_int_equal(got.raft_index, 42);
    assert_int_equal(got.raft_term, 7);
    assert_int_equal(got.page_size, 4096);
    assert_int_equal(got.page_count, 1u << 20);
    assert_int_equal(got.pages, 12345);
    assert_int_equal(got.duration_ms, 987);
    assert_memory_equal(got.history, b.history, BACKUP_HISTORY_SIZE);
    assert_int_equal(got.codec, CBK_CODEC_LZ4);

    assert_int_equal(catidxFind(idx, "a.cbk", "etag-2/1", 700, &at), CATIDX_DAMAGED);
    catidxFill(idx, at, &got);
    assert_string_equal(got.error, "header: bad magic");
    assert_int_equal(catidxFind(idx, "b.verified", "etag-3/1", 120, &at), CATIDX_SIDECAR);
    memset(&got, 0, sizeof got);
    catidxFill(idx, at, &got);
    assert_int_equal(got.verified, BACKUP_VERIFY_FAILED);
    assert_int_equal(got.verified_ms, 1795000009999LL);
    assert_memory_equal(got.digest, b.digest, BACKUP_DIGEST_SIZE);

    /* Another version or size of an object: not the one the index knows. */
    assert_int_equal(catidxFind(idx, "b.cbk", "etag-9/1", 65536, &at), 0);
    assert_int_equal(catidxFind(idx, "b.cbk", "etag-1/2", 65536, &at), 0);
    assert_int_equal(catidxFind(idx, "b.cbk", "etag-1/1", 65537, &at), 0);
    assert_int_equal(catidxFind(idx, "b.cbk", NULL, 65536, &at), 0);
    assert_int_equal(catidxFind(idx, "c.cbk", "etag-1/1", 65536, &at), 0);
    assert_int_equal(catidxFind(NULL, "b.cbk", "etag-1/1", 65536, &at), 0);
    catidxFree(idx);
    free(obj);

    /* Empty; duplicates and entries without a version are refused. */
    assert_int_equal(catidxEncode(NULL, 0, &obj, &len, errmsg), 0);
    assert_int_equal(catidxDecode(obj, len, &idx, errmsg), 0);
    assert_int_equal(catidxCount(idx), 0);
    assert_int_equal(catidxFind(idx, "b.cbk", "etag-1/1", 65536, &at), 0);
    catidxFree(idx);
    free(obj);
    put[0] = put[1];
    assert_int_equal(catidxEncode(put, 2, &obj, &len, errmsg), CAIRN_EINVAL);
    assert_null(obj);
    assert_non_null(strstr(errmsg, "b.cbk twice"));
    put[0].name = "c.cbk";
    put[0].version = "";
    assert_int_equal(catidxEncode(put, 2, &obj, &len, errmsg), CAIRN_EINVAL);

    /* Many entries, looked up by name. */
    {
        enum { N = 3000 };
        struct catidx_put *many = calloc(N, sizeof *many);
        char(*names)[40] = calloc(N, sizeof *names);
        for (int i = 0; i < N; i++) {
            snprintf(names[i], sizeof names[i], "%08d.cbk", (i * 7919) % N);
            many[i] = (struct catidx_put){CATIDX_BACKUP, names[i], names[i], (uint64_t)i, &b};
        }
        assert_int_equal(catidxEncode(many, N, &obj, &len, errmsg), 0);
        assert_int_equal(catidxDecode(obj, len, &idx, errmsg), 0);
        assert_int_equal(catidxCount(idx), N);
        for (int i = 0; i < N; i++) {
            assert_int_equal(catidxFind(idx, names[i], names[i], (uint64_t)i, &at), CATIDX_BACKUP);
        }
        /* Compressed: each entry takes fewer bytes than its digests and name. */
        assert_true(len < (size_t)N * 60);
        catidxFree(idx);
        free(obj);
        free(many);
        free(names);
    }
}

/* An index object of version `version` around body (count entries), checksummed as a
 * writer would. */
static unsigned char *forgeVersion(const void *body, size_t blen, uint32_t count, uint32_t version,
                                   size_t *len)
{
    size_t bound = ZSTD_compressBound(blen), frame;
    unsigned char *obj = malloc(32 + bound + 8);
    uint64_t sum;
    frame = ZSTD_compress(obj + 32, bound, body, blen, 1);
    assert_false(ZSTD_isError(frame));
    memcpy(obj, "CAIRNIDX", 8);
    for (int i = 0; i < 4; i++) {
        obj[8 + i] = (unsigned char)(version >> (8 * i));
        obj[12 + i] = (unsigned char)(count >> (8 * i));
    }
    for (int i = 0; i < 8; i++) {
        obj[16 + i] = (unsigned char)((uint64_t)blen >> (8 * i));
        obj[24 + i] = (unsigned char)((uint64_t)frame >> (8 * i));
    }
    sum = XXH3_64bits(obj, 32 + frame);
    for (int i = 0; i < 8; i++) {
        obj[32 + frame + i] = (unsigned char)(sum >> (8 * i));
    }
    *len = 32 + frame + 8;
    return obj;
}

static unsigned char *forge(const void *body, size_t blen, uint32_t count, size_t *len)
{
    return forgeVersion(body, blen, count, 2, len);
}

/* The index obj (len bytes) said to be of another version, its checksum made right. */
static void setVersion(unsigned char *obj, size_t len, uint32_t version)
{
    uint64_t sum;
    for (int i = 0; i < 4; i++) {
        obj[8 + i] = (unsigned char)(version >> (8 * i));
    }
    sum = XXH3_64bits(obj, len - 8);
    for (int i = 0; i < 8; i++) {
        obj[len - 8 + i] = (unsigned char)(sum >> (8 * i));
    }
}

/* A sidecar entry of name (kind 3), into p: its length. */
static size_t sidecarEntry(unsigned char *p, const char *name, int state)
{
    size_t n = strlen(name), k = 0;
    p[k++] = CATIDX_SIDECAR;
    p[k++] = (unsigned char)n;
    p[k++] = 0;
    memcpy(p + k, name, n + 1);
    k += n + 1;
    p[k++] = 1;
    memcpy(p + k, "v", 2);
    k += 2;
    memset(p + k, 0, 8); /* size */
    k += 8;
    p[k++] = (unsigned char)state;
    memset(p + k, 0, 8 + BACKUP_DIGEST_SIZE);
    return k + 8 + BACKUP_DIGEST_SIZE;
}

static void test_index_damaged_is_refused(void **state)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct backup_info b;
    struct catidx_put put[2];
    struct catidx *idx;
    unsigned char *obj, *copy, body[256];
    size_t len, flen, k;
    (void)state;

    fillBackup(&b, "20261122T101600000Z-0002-0a0b", "src");
    put[0] = (struct catidx_put){CATIDX_BACKUP, "x.cbk", "e/1", 1000, &b};
    put[1] = (struct catidx_put){CATIDX_BACKUP, "y.cbk", "e/2", 2000, &b};
    assert_int_equal(catidxEncode(put, 2, &obj, &len, errmsg), 0);
    /* Any byte changed, anywhere: refused, and nothing to free. */
    copy = malloc(len);
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, obj, len);
        copy[i] ^= 0x40;
        idx = (struct catidx *)1;
        assert_int_equal(catidxDecode(copy, len, &idx, errmsg), CAIRN_ECORRUPT);
        assert_null(idx);
    }
    /* Cut anywhere, or with bytes after it. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(catidxDecode(obj, n, &idx, errmsg), CAIRN_ECORRUPT);
    }
    copy = realloc(copy, len + 1);
    memcpy(copy, obj, len);
    copy[len] = 0;
    assert_int_equal(catidxDecode(copy, len + 1, &idx, errmsg), CAIRN_ECORRUPT);
    assert_int_equal(catidxDecode("garbage, not an index at all, no no no", 38, &idx, errmsg),
                     CAIRN_ECORRUPT);
    free(copy);
    free(obj);

    /* Checksummed but malformed inside (as a writer with a bug would make it). */
    k = sidecarEntry(body, "b.verified", 1);
    k += sidecarEntry(body + k, "a.verified", 1); /* out of order */
    obj = forge(body, k, 2, &flen);
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "entry 1"));
    free(obj);
    k = sidecarEntry(body, "a.verified", 1);
    obj = forge(body, k, 2, &flen); /* a count the body does not hold */
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    obj = forge(body, k - 1, 1, &flen); /* cut short */
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    body[k] = 0;
    obj = forge(body, k + 1, 1, &flen); /* a byte too many */
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    k = sidecarEntry(body, "a.verified", 3); /* no such state */
    obj = forge(body, k, 1, &flen);
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    k = sidecarEntry(body, "a.verified", 1);
    body[0] = 9; /* no such kind */
    obj = forge(body, k, 1, &flen);
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    k = sidecarEntry(body, "a.verified", 1);
    body[3 + 4] = 0; /* a NUL inside the name */
    obj = forge(body, k, 1, &flen);
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
    free(obj);
    k = sidecarEntry(body, "a.verified", 1);
    obj = forge(body, k, 1, &flen); /* and the same, well formed */
    assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), 0);
    assert_int_equal(catidxCount(idx), 1);
    catidxFree(idx);
    free(obj);

    /* Version 1 (its backups without a history and a codec): refused whole, even when
     * every entry would read, so that a listing reads the objects again; never read as
     * if its backups had no history. And an unknown version too. */
    for (uint32_t v = 0; v < 5; v++) {
        if (v == 2) {
            continue;
        }
        obj = forgeVersion(body, k, 1, v, &flen);
        idx = (struct catidx *)1;
        assert_int_equal(catidxDecode(obj, flen, &idx, errmsg), CAIRN_ECORRUPT);
        assert_null(idx);
        assert_non_null(strstr(errmsg, "version"));
        free(obj);
    }
    /* A backup's codec that no build writes. */
    fillBackup(&b, "20261122T101600000Z-0002-0a0b", "src");
    for (int codec = CBK_CODEC_ZSTD; codec <= 7; codec++) {
        b.codec = codec;
        assert_int_equal(catidxEncode(put, 1, &obj, &len, errmsg), 0);
        idx = NULL;
        assert_int_equal(catidxDecode(obj, len, &idx, errmsg),
                         codec <= CBK_CODEC_LZ4 ? 0 : CAIRN_ECORRUPT);
        if (codec <= CBK_CODEC_LZ4) {
            assert_int_equal(catidxCount(idx), 1);
            catidxFree(idx);
        } else {
            assert_null(idx);
            assert_non_null(strstr(errmsg, "entry 0"));
        }
        free(obj);
    }
}

/* A full backup of an empty database (0 pages) into r; its entry into *info. */
static void emptyBackup(struct repo *r, const char *dir, const char *source,
                        struct backup_info *info)
{
    char errmsg[CAIRN_ERRMSG_SIZE], db[PATH_MAX + 16];
    struct backup_options opt = {0};
    struct backup_source src = {0};
    FILE *fp;
    snprintf(db, sizeof db, "%s/empty.db", dir);
    assert_non_null(fp = fopen(db, "w"));
    fclose(fp);
    src.fd = open(db, O_RDONLY);
    src.source = source;
    opt.type = BACKUP_FULL;
    assert_int_equal(backupCreateIn(r, &src, &opt, info, errmsg), 0);
    close(src.fd);
}

/* The listing of r, by id. */
static struct backup_info *listAll(struct repo *r, size_t *n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct backup_info *v;
    assert_int_equal(repoListIn(r, &v, n, errmsg), 0);
    return v;
}

/* The repository's index, decoded (NULL when absent or refused). */
static struct catidx *indexOf(struct repo *r)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    static unsigned char buf[1 << 20];
    struct catidx *idx = NULL;
    size_t len;
    if (repoGet(r, CATIDX_NAME, buf, sizeof buf, &len, errmsg) != 0 ||
        catidxDecode(buf, len, &idx, errmsg) != 0) {
        return NULL;
    }
    return idx;
}

struct versions {
    char name[4][64];
    char version[4][128];
    uint64_t size[4];
    int n;
};

static int collectVersions(void *arg, const char *name, uint64_t size, const char *version)
{
    struct versions *v = arg;
    if (v->n < 4 && strstr(name, ".cbk") != NULL) {
        snprintf(v->name[v->n], sizeof v->name[0], "%s", name);
        snprintf(v->version[v->n], sizeof v->version[0], "%s", version);
        v->size[v->n++] = size;
    }
    return 0;
}

static void test_list_through_index(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], name[64], path[PATH_MAX + 64];
    struct backup_info a, b, *v, fake;
    struct versions vs = {0};
    struct catidx_put put[2];
    struct catidx *idx;
    unsigned char *obj;
    size_t n, len, at;
    FILE *fp;

    /* Nothing yet: no listing writes an index into an empty repository. */
    assert_int_equal(setenv("CAIRN_CATALOG_INDEX", "on", 1), 0);
    v = listAll(f->r, &n);
    assert_int_equal(n, 0);
    free(v);
    assert_int_equal(countFiles(f->repo), 0);

    emptyBackup(f->r, f->dir, "one", &a);
    emptyBackup(f->r, f->dir, "two", &b);
    /* The first listing reads both backups and writes the index. */
    v = listAll(f->r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].source, "one");
    assert_string_equal(v[1].source, "two");
    free(v);
    assert_non_null(idx = indexOf(f->r));
    assert_int_equal(catidxCount(idx), 2);
    catidxFree(idx);

    /* An index that says something else of a's current version is believed (this is
     * how a listing is known to use it); of b it holds an older version: b is read. */
    assert_int_equal(repoListNames(f->r, "", collectVersions, &vs, errmsg), 0);
    assert_int_equal(vs.n, 2);
    fake = a;
    snprintf(fake.source, sizeof fake.source, "from the index");
    {
        int ia = strncmp(vs.name[0], a.id, strlen(a.id)) == 0 ? 0 : 1;
        put[0] =
            (struct catidx_put){CATIDX_BACKUP, vs.name[ia], vs.version[ia], vs.size[ia], &fake};
        put[1] = (struct catidx_put){CATIDX_BACKUP, vs.name[1 - ia], "an older version",
                                     vs.size[1 - ia], &fake};
    }
    assert_int_equal(catidxEncode(put, 2, &obj, &len, errmsg), 0);
    assert_int_equal(repoPut(f->r, CATIDX_NAME, obj, len, errmsg), 0);
    free(obj);
    v = listAll(f->r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].source, "from the index");
    assert_string_equal(v[1].source, "two");
    assert_string_equal(v[1].id, b.id);
    free(v);
    /* The listing wrote the index again, with b as it is now. */
    assert_non_null(idx = indexOf(f->r));
    snprintf(name, sizeof name, "%s.cbk", b.id);
    assert_int_equal(repoListNames(f->r, b.id, collectVersions, &vs, errmsg), 0);
    assert_int_equal(catidxFind(idx, name, vs.version[2], vs.size[2], &at), CATIDX_BACKUP);
    catidxFree(idx);

    /* a replaced under its name by the same bytes (another file renamed over it):
     * read again. */
    {
        char tmp[PATH_MAX + 64], copy[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s.cbk", f->repo, a.id);
        snprintf(tmp, sizeof tmp, "%s/a-copy", f->dir);
        snprintf(copy, sizeof copy, "cp %s %s", path, tmp);
        assert_int_equal(system(copy), 0);
        assert_int_equal(rename(tmp, path), 0);
    }
    v = listAll(f->r, &n);
    assert_string_equal(v[0].source, "one");
    free(v);

    /* A verification recorded in a sidecar shows, and the index keeps the sidecar. */
    assert_int_equal(repoWriteVerifiedIn(f->r, &b, BACKUP_VERIFIED, 1795000000000LL, errmsg), 0);
    v = listAll(f->r, &n);
    assert_int_equal(v[1].verified, BACKUP_VERIFIED);
    assert_int_equal(v[1].verified_ms, 1795000000000LL);
    assert_int_equal(v[0].verified, BACKUP_UNVERIFIED);
    free(v);
    assert_non_null(idx = indexOf(f->r));
    assert_int_equal(catidxCount(idx), 3);
    catidxFree(idx);
    /* ... and a new outcome replaces it. */
    assert_int_equal(repoWriteVerifiedIn(f->r, &b, BACKUP_VERIFY_FAILED, 1795000000001LL, errmsg),
                     0);
    v = listAll(f->r, &n);
    assert_int_equal(v[1].verified, BACKUP_VERIFY_FAILED);
    free(v);
    v = listAll(f->r, &n); /* from the index this time */
    assert_int_equal(v[1].verified, BACKUP_VERIFY_FAILED);
    assert_int_equal(v[1].verified_ms, 1795000000001LL);
    free(v);

    /* An index of version 1 (an older build's, whose backups say no history or codec)
     * is not believed, even for objects it names under their current version: the
     * backups are read, and a version 2 index written. */
    {
        int ia;
        vs.n = 0;
        assert_int_equal(repoListNames(f->r, "", collectVersions, &vs, errmsg), 0);
        ia = strncmp(vs.name[0], a.id, strlen(a.id)) == 0 ? 0 : 1;
        put[0] =
            (struct catidx_put){CATIDX_BACKUP, vs.name[ia], vs.version[ia], vs.size[ia], &fake};
        assert_int_equal(catidxEncode(put, 1, &obj, &len, errmsg), 0);
        setVersion(obj, len, 1);
        assert_int_equal(repoPut(f->r, CATIDX_NAME, obj, len, errmsg), 0);
        free(obj);
        assert_null(indexOf(f->r));
        v = listAll(f->r, &n);
        assert_int_equal(n, 2);
        assert_string_equal(v[0].source, "one");
        assert_int_equal(v[0].codec, CBK_CODEC_LZ4); /* a local repository's default */
        free(v);
        assert_non_null(idx = indexOf(f->r));
        assert_int_equal(catidxCount(idx), 3);
        catidxFree(idx);
    }

    /* A damaged index is ignored, and written again. */
    assert_int_equal(repoPut(f->r, CATIDX_NAME, "not an index", 12, errmsg), 0);
    v = listAll(f->r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].source, "one");
    assert_int_equal(v[1].verified, BACKUP_VERIFY_FAILED);
    free(v);
    assert_non_null(idx = indexOf(f->r));
    assert_int_equal(catidxCount(idx), 3);
    catidxFree(idx);

    /* A damaged backup is listed with its error, from the index the second time. */
    snprintf(path, sizeof path, "%s/zz-damaged.cbk", f->repo);
    assert_non_null(fp = fopen(path, "w"));
    for (int i = 0; i < 1000; i++) {
        fputc('x', fp);
    }
    fclose(fp);
    for (int round = 0; round < 2; round++) {
        v = listAll(f->r, &n);
        assert_int_equal(n, 3);
        assert_string_equal(v[2].id, "zz-damaged");
        assert_non_null(strstr(v[2].error, "header"));
        assert_int_equal(v[2].size_bytes, 1000);
        free(v);
    }
    assert_non_null(idx = indexOf(f->r));
    assert_int_equal(catidxCount(idx), 4); /* a, b, b's sidecar, the damaged one */
    catidxFree(idx);

    /* Deleted objects go from the listing and from the index. */
    snprintf(name, sizeof name, "%s.cbk", a.id);
    assert_int_equal(repoRemove(f->r, name, errmsg), 0);
    assert_int_equal(repoRemove(f->r, "zz-damaged.cbk", errmsg), 0);
    v = listAll(f->r, &n);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].id, b.id);
    free(v);
    assert_non_null(idx = indexOf(f->r));
    assert_int_equal(catidxCount(idx), 2); /* b and its sidecar */
    catidxFree(idx);

    /* "latest" goes through the listing too. */
    assert_int_equal(repoFindIn(f->r, REPO_LATEST, &fake, errmsg), 0);
    assert_string_equal(fake.id, b.id);

    /* off: no index is read or written; anything else is refused. */
    assert_int_equal(repoRemove(f->r, CATIDX_NAME, errmsg), 0);
    assert_int_equal(setenv("CAIRN_CATALOG_INDEX", "off", 1), 0);
    v = listAll(f->r, &n);
    assert_int_equal(n, 1);
    free(v);
    assert_int_equal(repoGet(f->r, CATIDX_NAME, path, 10, &len, errmsg), CAIRN_ENOTFOUND);
    assert_int_equal(setenv("CAIRN_CATALOG_INDEX", "yes", 1), 0);
    assert_int_equal(repoListIn(f->r, &v, &n, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "CAIRN_CATALOG_INDEX=yes"));
    /* auto (the default): not for a directory. */
    assert_int_equal(unsetenv("CAIRN_CATALOG_INDEX"), 0);
    v = listAll(f->r, &n);
    free(v);
    assert_int_equal(repoGet(f->r, CATIDX_NAME, path, 10, &len, errmsg), CAIRN_ENOTFOUND);
}

/* A directory whose objects' paths would not fit a catalog entry is refused. */
static void test_path_too_long(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE], url[BACKUP_PATH_SIZE + 64];
    struct repo *r = NULL;
    size_t n = (size_t)snprintf(url, sizeof url, "%s/", f->dir);
    while (n < BACKUP_PATH_SIZE - 40) {
        url[n++] = 'd';
    }
    url[n] = '\0';
    assert_int_equal(repoOpen(url, &r, errmsg), CAIRN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(errmsg, "too long"));
    url[BACKUP_PATH_SIZE - 64] = '\0';
    assert_int_equal(repoOpen(url, &r, errmsg), 0);
    repoClose(r);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_url),
        T(test_commit_visible_once),
        T(test_abort_leaves_nothing),
        T(test_killed_writer_does_not_block_the_object),
        T(test_writers_racing_for_one_object),
        T(test_a_writer_taken_for_dead_publishes_nothing),
        T(test_ranged_read),
        T(test_list_prefix),
        T(test_small_get_put_remove),
        T(test_write_fails),
        cmocka_unit_test(test_index_round_trip),
        cmocka_unit_test(test_index_damaged_is_refused),
        T(test_list_through_index),
        T(test_path_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
