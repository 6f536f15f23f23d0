/* Unit tests of path normalising (src/lib/path.c): what cairn shows and records as paths
 * ("DIR/./backups" and "repo//ID.cbk" were printed before). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "path.h"

static void check(const char *in, const char *want)
{
    char p[256];
    snprintf(p, sizeof p, "%s", in);
    pathClean(p);
    if (strcmp(p, want) != 0) {
        fail_msg("pathClean(\"%s\") = \"%s\", want \"%s\"", in, p, want);
    }
}

static void test_clean(void **state)
{
    (void)state;
    check("/work/./backups", "/work/backups");
    check("prog//20261203.cbk", "prog/20261203.cbk");
    check("prog/", "prog");
    check("/", "/");
    check("//", "/");
    check("", ".");
    check(".", ".");
    check("./data", "data");
    check("a/b/../c", "a/c");
    check("a/..", ".");
    check("/a/b/..", "/a");
    check("/..", "/");
    check("/../x", "/x");
    check("../a/../..", "../..");
    check("../../x/./y/", "../../x/y");
    check("/work/main/./build/../data//", "/work/main/data");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_clean)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
