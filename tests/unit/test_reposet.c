/* Unit tests of a node's named repositories (src/reposet.c) on real directories: names
 * checked, repositories given twice refused, a repository picked by name, "default",
 * path or URL, every repository listed with its name, an id found wherever it is. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup.h"
#include "error.h"
#include "reposet.h"

struct fx {
    char dir[PATH_MAX];
    char a[PATH_MAX];
    char b[PATH_MAX];
    char db[PATH_MAX];
    struct reposet rs;
};

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/cairn-reposet-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->a, sizeof f->a, "%s/a", f->dir);
    snprintf(f->b, sizeof f->b, "%s/b", f->dir);
    snprintf(f->db, sizeof f->db, "%s/app.db", f->dir);
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

/* A small SQLite database at f->db, backed up in full into url; the new backup's id. */
static void backupInto(struct fx *f, const char *url, char id[BACKUP_ID_SIZE])
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    char sql[128];
    struct backup_source src;
    struct backup_options opt;
    struct backup_info info;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS t(v); INSERT INTO t VALUES(%d);",
             rand());
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    memset(&src, 0, sizeof src);
    src.fd = open(f->db, O_RDONLY);
    assert_true(src.fd >= 0);
    src.source = f->db;
    memset(&opt, 0, sizeof opt);
    opt.type = BACKUP_FULL;
    opt.repo = url;
    assert_int_equal(backupCreate(&src, &opt, &info, errmsg), 0);
    close(src.fd);
    snprintf(id, BACKUP_ID_SIZE, "%s", info.id);
}

static void test_names_and_repeats(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char name[BACKUP_REPO_NAME_SIZE];
    const char *url;

    assert_int_equal(reposetAdd(&f->rs, NULL, f->a, errmsg), 0);
    assert_string_equal(f->rs.r[0].name, "default");
    assert_int_equal(reposetAdd(&f->rs, "default", f->b, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "names the first repository"));
    assert_int_equal(reposetAdd(&f->rs, "bad name", f->b, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetAdd(&f->rs, ".hidden", f->b, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetAdd(&f->rs, "abcdefghijklmnopqrstuvwxyz0123456", f->b, errmsg),
                     CAIRN_EINVAL); /* 33 characters */
    assert_int_equal(reposetAdd(&f->rs, "same", f->a, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "given twice"));
    {
        char again[PATH_MAX + 8];
        snprintf(again, sizeof again, "%s/./", f->a);
        assert_int_equal(reposetAdd(&f->rs, "same", again, errmsg), CAIRN_EINVAL);
    }
    assert_int_equal(reposetAdd(&f->rs, "off-site_2.x", "s3://bucket/p/", errmsg), 0);
    assert_string_equal(f->rs.r[1].url, "s3://bucket/p");
    assert_int_equal(reposetAdd(&f->rs, "off-site_2.x", f->b, errmsg), CAIRN_EINVAL);
    assert_int_equal(f->rs.n, 2);

    assert_int_equal(reposetParseSpec("nas=/mnt/nas", name, &url, errmsg), 0);
    assert_string_equal(name, "nas");
    assert_string_equal(url, "/mnt/nas");
    assert_int_equal(reposetParseSpec("cloud=s3://b/p?x=1", name, &url, errmsg), 0);
    assert_string_equal(url, "s3://b/p?x=1");
    assert_int_equal(reposetParseSpec("s3://b/p=x", name, &url, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetParseSpec("=x", name, &url, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetParseSpec("x=", name, &url, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetParseSpec("nothing", name, &url, errmsg), CAIRN_EINVAL);

    for (int i = 2; i < REPOSET_MAX; i++) {
        char n[16], u[64];
        snprintf(n, sizeof n, "r%d", i);
        snprintf(u, sizeof u, "/tmp/cairn-reposet-r%d", i);
        assert_int_equal(reposetAdd(&f->rs, n, u, errmsg), 0);
    }
    assert_int_equal(reposetAdd(&f->rs, "one-more", "/tmp/x", errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "too many"));
}

static void test_pick(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char rel[PATH_MAX];
    char cwd[PATH_MAX];
    unsigned which = 99;

    assert_int_equal(reposetAdd(&f->rs, "main", f->a, errmsg), 0);
    assert_int_equal(reposetAdd(&f->rs, "cloud", "s3://bucket/prefix", errmsg), 0);
    assert_int_equal(mkdir(f->b, 0755), 0);
    assert_int_equal(reposetAdd(&f->rs, "nas", f->b, errmsg), 0);

    assert_int_equal(reposetPick(&f->rs, NULL, &which, errmsg), 0);
    assert_int_equal(which, 0);
    assert_int_equal(reposetPick(&f->rs, "default", &which, errmsg), 0);
    assert_int_equal(which, 0);
    assert_int_equal(reposetPick(&f->rs, "cloud", &which, errmsg), 0);
    assert_int_equal(which, 1);
    assert_int_equal(reposetPick(&f->rs, "s3://bucket/prefix/", &which, errmsg), 0);
    assert_int_equal(which, 1);
    /* A path: as configured, or a relative one naming the same directory. */
    assert_int_equal(reposetPick(&f->rs, f->b, &which, errmsg), 0);
    assert_int_equal(which, 2);
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    snprintf(rel, sizeof rel, "./b/");
    assert_int_equal(reposetPick(&f->rs, rel, &which, errmsg), 0);
    assert_int_equal(which, 2);
    assert_int_equal(chdir(cwd), 0);

    assert_int_equal(reposetPick(&f->rs, "Cloud", &which, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "'main'"));
    assert_non_null(strstr(errmsg, "'cloud' (s3://bucket/prefix)"));
    assert_non_null(strstr(errmsg, "'nas'"));
    assert_int_equal(reposetPick(&f->rs, "/tmp", &which, errmsg), CAIRN_EINVAL);
    assert_int_equal(reposetPick(&f->rs, "s3://bucket/other", &which, errmsg), CAIRN_EINVAL);
}

static void test_list_and_find(void **state)
{
    struct fx *f = *state;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char in_a[BACKUP_ID_SIZE], in_b[BACKUP_ID_SIZE], in_b2[BACKUP_ID_SIZE];
    struct backup_info *list = NULL;
    struct backup_info info;
    size_t n = 0;
    unsigned which = 99;

    assert_int_equal(reposetAdd(&f->rs, NULL, f->a, errmsg), 0);
    assert_int_equal(reposetAdd(&f->rs, "spare", f->b, errmsg), 0);
    /* Nothing yet: an empty listing, and a lookup that names every repository. */
    assert_int_equal(reposetList(&f->rs, -1, &list, &n, errmsg), 0);
    assert_int_equal(n, 0);
    free(list);
    assert_int_equal(reposetFind(&f->rs, "20260101T000000000Z-0001-beef", &which, &info, errmsg),
                     CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "'spare'"));

    backupInto(f, f->a, in_a);
    backupInto(f, f->b, in_b);
    backupInto(f, f->b, in_b2);
    assert_int_equal(reposetList(&f->rs, -1, &list, &n, errmsg), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].id, in_a);
    assert_string_equal(list[0].repository, "default");
    assert_string_equal(list[1].repository, "spare");
    assert_string_equal(list[2].repository, "spare");
    free(list);
    assert_int_equal(reposetList(&f->rs, 1, &list, &n, errmsg), 0);
    assert_int_equal(n, 2);
    free(list);

    assert_int_equal(reposetFind(&f->rs, in_b2, &which, &info, errmsg), 0);
    assert_int_equal(which, 1);
    assert_string_equal(info.repository, "spare");
    assert_string_equal(info.id, in_b2);
    assert_int_equal(reposetFind(&f->rs, in_a, &which, &info, errmsg), 0);
    assert_int_equal(which, 0);
    assert_string_equal(info.repository, "default");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names_and_repeats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_find, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
