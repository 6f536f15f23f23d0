/* Unit tests of five-field cron expressions (src/cron.c): every field form (numbers,
 * ranges, steps, lists, names), the errors that name the field, Vixie's day-of-month /
 * day-of-week rule, month ends, leap years and dates that never come. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "error.h"

/* "2026-12-03 20:15" (UTC) in Unix ms. */
static int64_t at(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    assert_int_equal(
        sscanf(s, "%d-%d-%d %d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min),
        5);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static void show(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%d %H:%M", &tm);
}

/* The next fire time of expr after `from`, as "YYYY-MM-DD HH:MM". */
static void expectNext(const char *expr, const char *from, const char *want)
{
    struct cron c;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char got[32];
    int rv = cronParse(expr, &c, errmsg);
    if (rv != 0) {
        fail_msg("cronParse(\"%s\"): %s", expr, errmsg);
    }
    show(cronNext(&c, at(from)), got);
    if (strcmp(got, want) != 0) {
        fail_msg("\"%s\" after %s: got %s, want %s", expr, from, got, want);
    }
}

static void expectError(const char *expr, const char *needle)
{
    struct cron c;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    assert_int_equal(cronParse(expr, &c, errmsg), CAIRN_EINVAL);
    if (strstr(errmsg, needle) == NULL) {
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", expr, errmsg, needle);
    }
}

static void test_every_minute(void **state)
{
    (void)state;
    expectNext("* * * * *", "2026-12-03 20:15", "2026-12-03 20:16");
    /* strictly after: within a minute, the next minute */
    struct cron c;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char got[32];
    assert_int_equal(cronParse("* * * * *", &c, errmsg), 0);
    show(cronNext(&c, at("2026-12-03 20:15") + 59999), got);
    assert_string_equal(got, "2026-12-03 20:16");
    /* the end of a year */
    expectNext("* * * * *", "2026-12-31 23:59", "2027-01-01 00:00");
}

static void test_numbers_ranges_steps_lists(void **state)
{
    (void)state;
    expectNext("30 4 * * *", "2026-12-03 20:15", "2026-12-04 04:30");
    expectNext("30 4 * * *", "2026-12-03 04:29", "2026-12-03 04:30");
    expectNext("*/15 * * * *", "2026-12-03 20:15", "2026-12-03 20:30");
    expectNext("*/15 * * * *", "2026-12-03 20:46", "2026-12-03 21:00");
    expectNext("10-20/5 * * * *", "2026-12-03 20:16", "2026-12-03 20:20");
    expectNext("10-20/5 * * * *", "2026-12-03 20:20", "2026-12-03 21:10");
    expectNext("50/3 * * * *", "2026-12-03 20:59", "2026-12-03 21:50"); /* 50,53,56,59 */
    expectNext("50/3 * * * *", "2026-12-03 20:58", "2026-12-03 20:59");
    expectNext("5,35 9-17 * * *", "2026-12-03 17:35", "2026-12-04 09:05");
    expectNext("5,35 9-17 * * *", "2026-12-03 12:06", "2026-12-03 12:35");
    expectNext("0 0,12 1,15 * *", "2026-12-03 20:15", "2026-12-15 00:00");
    expectNext("0 22-23,1 * * *", "2026-12-03 23:00", "2026-12-04 01:00");
}

static void test_names(void **state)
{
    (void)state;
    /* 2026-12-03 is a Thursday */
    expectNext("0 3 * * MON", "2026-12-03 20:15", "2026-12-07 03:00");
    expectNext("0 3 * * mon-fri", "2026-12-04 03:00", "2026-12-07 03:00");
    expectNext("0 3 * * SAT,SUN", "2026-12-03 20:15", "2026-12-05 03:00");
    expectNext("0 0 1 JAN *", "2026-12-03 20:15", "2027-01-01 00:00");
    expectNext("0 0 1 jun-aug *", "2026-12-03 20:15", "2027-06-01 00:00");
    /* Sunday is 0 and 7 */
    expectNext("0 3 * * 0", "2026-12-03 20:15", "2026-12-06 03:00");
    expectNext("0 3 * * 7", "2026-12-03 20:15", "2026-12-06 03:00");
    expectNext("0 3 * * 5-7", "2026-12-05 04:00", "2026-12-06 03:00");
}

static void test_day_rules(void **state)
{
    (void)state;
    /* Both restricted: either matches (the 13th, or any Friday). */
    expectNext("0 0 13 * FRI", "2026-12-03 20:15", "2026-12-04 00:00");
    expectNext("0 0 13 * FRI", "2026-12-11 00:00", "2026-12-13 00:00");
    /* One of them '*': the other alone decides. */
    expectNext("0 0 13 * *", "2026-12-03 20:15", "2026-12-13 00:00");
    expectNext("0 0 * * FRI", "2026-12-04 00:00", "2026-12-11 00:00");
    /* A step from '*' is still a '*' field (Vixie): both must match. The next Friday
     * that falls on an odd day after Dec 3: Dec 11. */
    expectNext("0 0 */2 * FRI", "2026-12-03 20:15", "2026-12-11 00:00");
}

static void test_month_ends_and_leap_years(void **state)
{
    (void)state;
    expectNext("0 0 31 * *", "2026-12-31 00:00", "2027-01-31 00:00");
    expectNext("0 0 31 * *", "2027-01-31 00:00", "2027-03-31 00:00"); /* no Feb 31 */
    expectNext("0 0 31 * *", "2027-03-31 00:00", "2027-05-31 00:00"); /* no Apr 31 */
    expectNext("0 0 30 * *", "2027-01-30 00:00", "2027-03-30 00:00");
    expectNext("0 0 29 2 *", "2026-12-03 20:15", "2028-02-29 00:00");
    expectNext("0 0 29 2 *", "2028-02-29 00:00", "2032-02-29 00:00");
    expectNext("0 0 * 2 *", "2028-02-28 00:00", "2028-02-29 00:00");
    expectNext("0 0 * 2 *", "2027-02-28 00:00", "2028-02-01 00:00");
    expectNext("59 23 28-31 * *", "2027-02-28 23:59", "2027-03-28 23:59");
    /* 2100 is not a leap year: Feb 29 2096, then 2104 (beyond 8 years: none). */
    struct cron c;
    char errmsg[CAIRN_ERRMSG_SIZE];
    assert_int_equal(cronParse("0 0 29 2 *", &c, errmsg), 0);
    assert_int_equal(cronNext(&c, at("2096-02-29 00:00")), -1);
    assert_int_equal(cronParse("0 0 30 2 *", &c, errmsg), 0);
    assert_int_equal(cronNext(&c, at("2026-01-01 00:00")), -1);
}

static void test_errors(void **state)
{
    (void)state;
    expectError("", "0 fields");
    expectError("* * * *", "4 fields");
    expectError("* * * * * *", "more than five");
    expectError("60 * * * *", "minute field \"60\": 60 is out of range (0-59)");
    expectError("* 24 * * *", "hour field");
    expectError("* * 0 * *", "day-of-month field \"0\"");
    expectError("* * 32 * *", "day-of-month field");
    expectError("* * * 13 *", "month field");
    expectError("* * * * 8", "day-of-week field \"8\": 8 is out of range (0-7)");
    expectError("* * * * MON-FRX", "unknown name \"FRX\"");
    expectError("* * * JANUARY *", "unknown name");
    expectError("* * * * 5-1", "range 5-1 goes backwards");
    expectError("*/0 * * * *", "step 0 is out of range");
    expectError("*/ * * * *", "a step needs a number");
    expectError("1,,2 * * * *", "expected a number");
    expectError("1x * * * *", "unexpected \"x\"");
    expectError("* * * MON *", "unknown name \"MON\""); /* day names are not months */
    expectError("* MON * * *", "expected a number at \"MON\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_minute),
        cmocka_unit_test(test_numbers_ranges_steps_lists),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_day_rules),
        cmocka_unit_test(test_month_ends_and_leap_years),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
