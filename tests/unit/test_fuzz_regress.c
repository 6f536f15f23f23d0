/* Regression tests of the fuzzers (fuzz/README.md): every saved input of
 * fuzz/regress/<target>/ (what a fuzzer once crashed on, minimised) and of the seed
 * corpus fuzz/corpus/<target>/ goes through the same function the fuzzer runs, with
 * the same checks (a failed check aborts, which fails this test), and must end in a
 * clean result: one of the parser's documented codes, with a message on failure. The
 * seed backups, commands, archive segments and catalog indexes are real ones (or, for
 * the `carc-*` and `cairnidx-*` seeds, real ones that the target wraps itself), and
 * must be accepted; the seed S3 answers are real ones too, and the saved S3 answers are
 * garbage a reader once took, and must be refused; the seed zone files and TZ strings
 * are tzdata's and must be accepted.
 *
 * The fuzz/ directory is found through CAIRN_FUZZ_DIR, set by CMakeLists.txt to the
 * source tree's (the environment variable of that name overrides it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <sys/stat.h>

#include <cmocka.h>

#define FUZZ_NO_MAIN
#include "../../fuzz/fuzz_arcseg.c"
#include "../../fuzz/fuzz_catidx.c"
#include "../../fuzz/fuzz_cbk.c"
#include "../../fuzz/fuzz_command.c"
#include "../../fuzz/fuzz_request.c"
#include "../../fuzz/fuzz_s3xml.c"
#include "../../fuzz/fuzz_sqlfront.c"
#include "../../fuzz/fuzz_tz.c"

#ifndef CAIRN_FUZZ_DIR
#define CAIRN_FUZZ_DIR "fuzz"
#endif

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static const char *fuzzDir(void)
{
    const char *env = getenv("CAIRN_FUZZ_DIR");
    return env != NULL && env[0] != '\0' ? env : CAIRN_FUZZ_DIR;
}

/* Feed every regular file of fuzz/<kind>/<target>/ to fn; each result must be one of
 * ok[0..nok). Returns the number of files (a missing directory has none). */
static size_t replay(const char *kind, const char *target, fuzz_fn fn, const int *ok, size_t nok)
{
    char dir[4096];
    char path[4096 + 256];
    struct dirent *e;
    size_t count = 0;
    DIR *d;

    snprintf(dir, sizeof dir, "%s/%s/%s", fuzzDir(), kind, target);
    if ((d = opendir(dir)) == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        unsigned char *buf;
        FILE *f;
        int rv;
        size_t i;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        /* An exact-size copy, so that ASan sees any read past the end. */
        buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
        assert_non_null(buf);
        f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
        fclose(f);
        rv = fn(buf, (size_t)st.st_size);
        free(buf);
        for (i = 0; i < nok && ok[i] != rv; i++) {
        }
        if (i == nok) {
            fail_msg("%s: unexpected result %d", path, rv);
        }
        count++;
    }
    closedir(d);
    return count;
}

static void test_arcseg(void **state)
{
    static const int valid[] = {0};
    static const int clean[] = {0, CAIRN_ECORRUPT, CAIRN_ENOMEM};
    (void)state;
    assert_true(replay("corpus", "arcseg", fuzzArcseg, valid, 1) > 0);
    replay("regress", "arcseg", fuzzArcseg, clean, 3);
}

static void test_catidx(void **state)
{
    static const int valid[] = {0};
    static const int clean[] = {0, CAIRN_ECORRUPT, CAIRN_ENOMEM};
    (void)state;
    assert_true(replay("corpus", "catidx", fuzzCatidx, valid, 1) > 0);
    replay("regress", "catidx", fuzzCatidx, clean, 3);
}

static void test_cbk(void **state)
{
    static const int valid[] = {0};
    static const int clean[] = {0, CAIRN_ECORRUPT, CAIRN_ENOMEM};
    (void)state;
    assert_true(replay("corpus", "cbk", fuzzCbk, valid, 1) > 0);
    replay("regress", "cbk", fuzzCbk, clean, 3);
}

static void test_command(void **state)
{
    static const int valid[] = {0};
    static const int clean[] = {0, CAIRN_ECORRUPT, CAIRN_ENOMEM};
    (void)state;
    assert_true(replay("corpus", "command", fuzzCommand, valid, 1) > 0);
    replay("regress", "command", fuzzCommand, clean, 3);
}

static void test_request(void **state)
{
    static const int clean[] = {0, CAIRN_EINVAL};
    static const int refused[] = {CAIRN_EINVAL};
    (void)state;
    assert_true(replay("corpus", "request", fuzzRequest, clean, 2) > 0);
    replay("regress", "request", fuzzRequest, refused, 1);
}

static void test_s3xml(void **state)
{
    static const int valid[] = {0};
    static const int refused[] = {CAIRN_EIO};
    (void)state;
    assert_true(replay("corpus", "s3xml", fuzzS3xml, valid, 1) > 0);
    replay("regress", "s3xml", fuzzS3xml, refused, 1);
}

static void test_sqlfront(void **state)
{
    static const int clean[] = {0, CAIRN_EINVAL};
    (void)state;
    assert_true(replay("corpus", "sqlfront", fuzzSqlfront, clean, 2) > 0);
    replay("regress", "sqlfront", fuzzSqlfront, clean, 2);
}

/* The seeds are zone files of tzdata and TZ strings, which must be accepted (fuzzTz's
 * code is the zone file reader's for an input that starts with "TZif", whatever its
 * size, else the TZ string reader's); a saved input ends in any of the readers' codes:
 * CAIRN_ECORRUPT for a zone file, CAIRN_EINVAL for a TZ string. */
static void test_tz(void **state)
{
    static const int valid[] = {0};
    static const int clean[] = {0, CAIRN_ECORRUPT, CAIRN_EINVAL, CAIRN_ENOMEM};
    (void)state;
    assert_true(replay("corpus", "tz", fuzzTz, valid, 1) > 0);
    replay("regress", "tz", fuzzTz, clean, 4);
}

/* Reads fuzz/corpus/tz/<name> into a malloc'd buffer (*size bytes). */
static uint8_t *tzSeed(const char *name, size_t *size)
{
    char path[4096];
    struct stat st;
    uint8_t *buf;
    FILE *f;
    snprintf(path, sizeof path, "%s/corpus/tz/%s", fuzzDir(), name);
    assert_int_equal(stat(path, &st), 0);
    buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    *size = (size_t)st.st_size;
    return buf;
}

/* fuzzTz answers for the zone file reader on a zone file under 256 bytes too: once it
 * answered for the TZ string reader there (on "TZif2", which it takes as a zone named
 * TZif two hours west), so a tiny zone file the reader wrongly refused went unseen. */
static void test_tz_small_zone_file_is_judged_as_one(void **state)
{
    size_t size;
    uint8_t *utc = tzSeed("Etc_UTC", &size);
    (void)state;
    assert_true(size < 256);
    assert_int_equal(fuzzTz(utc, size), 0);
    utc[4] = 0x7f; /* an unknown version: the zone file reader refuses it */
    assert_int_equal(fuzzTz(utc, size), CAIRN_ECORRUPT);
    utc[4] = '2';
    assert_int_equal(fuzzTz(utc, 44), CAIRN_ECORRUPT); /* cut inside its data */
    assert_int_equal(fuzzTz(utc, 4), CAIRN_ECORRUPT);  /* the magic alone */
    free(utc);
    /* Anything else is a TZ string when short: the TZ string reader answers. */
    assert_int_equal(fuzzTz((const uint8_t *)"CET-1CEST,M3.5.0,M10.5.0/3", 26), 0);
    assert_int_equal(fuzzTz((const uint8_t *)"CET-1CEST,M13.5.0", 17), CAIRN_EINVAL);
    assert_int_equal(fuzzTz((const uint8_t *)"TZi", 3), CAIRN_EINVAL); /* no offset */
    /* What the TZ string reader makes of a zone file's first bytes: a zone. */
    {
        struct tz *z = NULL;
        char errmsg[CAIRN_ERRMSG_SIZE];
        assert_int_equal(tzFromPosix("TZif2", &z, errmsg), 0);
        tzFree(z);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arcseg),
        cmocka_unit_test(test_catidx),
        cmocka_unit_test(test_cbk),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_s3xml),
        cmocka_unit_test(test_sqlfront),
        cmocka_unit_test(test_tz),
        cmocka_unit_test(test_tz_small_zone_file_is_judged_as_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
