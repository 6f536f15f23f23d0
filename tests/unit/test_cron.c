/* Unit tests of five-field cron expressions (src/cron.c): every field form (numbers,
 * ranges, steps, lists, names), the errors that name the field, Vixie's day-of-month /
 * day-of-week rule, month ends, leap years and dates that never come; and expressions
 * read in a time zone across both daylight-saving changes of Europe/Paris and
 * America/New_York (a skipped time runs once at the end of the gap, a repeated time
 * once at its first occurrence), Lord Howe's half-hour change, Samoa's skipped day and
 * a date of 2100 that the zone file's footer rule answers. Expected instants were
 * worked out by hand from the published rules; the zone tests skip, saying so, when
 * /usr/share/zoneinfo is absent. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cron.h"
#include "error.h"
#include "tz.h"
#include "tzfx.h"

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
    show(cronNext(&c, NULL, at(from)), got);
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
    show(cronNext(&c, NULL, at("2026-12-03 20:15") + 59999), got);
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
    assert_int_equal(cronNext(&c, NULL, at("2096-02-29 00:00")), -1);
    assert_int_equal(cronParse("0 0 30 2 *", &c, errmsg), 0);
    assert_int_equal(cronNext(&c, NULL, at("2026-01-01 00:00")), -1);
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

/* ---- in a time zone ------------------------------------------------------------------- */

/* The runs of expr in zone after `from` (UTC), one after the other: want[] (UTC). */
static void expectRuns(const char *zone, const char *expr, const char *from,
                       const char *const *want)
{
    struct cron c;
    struct tz *z;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int64_t t = at(from);
    if (cronParse(expr, &c, errmsg) != 0) {
        fail_msg("cronParse(\"%s\"): %s", expr, errmsg);
    }
    if (tzLoad(zone, &z, errmsg) != 0) {
        fail_msg("tzLoad(%s): %s", zone, errmsg);
    }
    for (size_t i = 0; want[i] != NULL; i++) {
        char got[32];
        int64_t next = cronNext(&c, z, t);
        show(next, got);
        if (strcmp(got, want[i]) != 0 || next % 60000 != 0) {
            fail_msg("\"%s\" in %s, run %zu after %s: got %s (%lld), want %s", expr, zone, i + 1,
                     from, got, (long long)next, want[i]);
        }
        t = next;
    }
    tzFree(z);
}

#define RUNS(zone, expr, from, ...)                                                                \
    expectRuns(zone, expr, from, (const char *const[]){__VA_ARGS__, NULL})

static void test_zone_paris(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    /* CET +1 / CEST +2. 29 March 2026, 01:00 UTC: 02:00 CET becomes 03:00 CEST; 25
     * October 2026, 01:00 UTC: 03:00 CEST becomes 02:00 CET. */
    /* Ordinary days: 03:00 local is 02:00 UTC in winter, 01:00 UTC in summer. */
    RUNS("Europe/Paris", "0 3 * * *", "2026-03-27 12:00", "2026-03-28 02:00", "2026-03-29 01:00",
         "2026-03-30 01:00");
    /* 02:30 does not exist on 29 March: once, at the end of the gap (03:00 CEST). */
    RUNS("Europe/Paris", "30 2 * * *", "2026-03-27 12:00", "2026-03-28 01:30", "2026-03-29 01:00",
         "2026-03-30 00:30");
    /* 02:30 comes twice on 25 October: once, at the first (CEST). */
    RUNS("Europe/Paris", "30 2 * * *", "2026-10-23 12:00", "2026-10-24 00:30", "2026-10-25 00:30",
         "2026-10-26 01:30");
    /* Hourly: 02:00 and 03:00 of 29 March are one run at 01:00 UTC; the repeated 02:00 of
     * 25 October runs once, so 02:00 CEST (00:00 UTC) is followed by 03:00 CET (02:00
     * UTC). */
    RUNS("Europe/Paris", "0 * * * *", "2026-03-28 23:30", "2026-03-29 00:00", "2026-03-29 01:00",
         "2026-03-29 02:00");
    RUNS("Europe/Paris", "0 * * * *", "2026-10-24 22:30", "2026-10-24 23:00", "2026-10-25 00:00",
         "2026-10-25 02:00", "2026-10-25 03:00");
    /* Every quarter hour across the gap: 01:45 CET, then the gap's 02:00-02:45 and 03:00
     * CEST are the one run at 01:00 UTC, then 03:15 CEST. */
    RUNS("Europe/Paris", "*/15 * * * *", "2026-03-29 00:40", "2026-03-29 00:45", "2026-03-29 01:00",
         "2026-03-29 01:15");
    /* A run just taken at the end of the gap is not taken again: after 01:00:00.5 UTC. */
    {
        struct cron c;
        struct tz *z;
        char errmsg[CAIRN_ERRMSG_SIZE], got[32];
        assert_int_equal(cronParse("30 2 * * *", &c, errmsg), 0);
        assert_int_equal(tzLoad("Europe/Paris", &z, errmsg), 0);
        show(cronNext(&c, z, at("2026-03-29 01:00") + 500), got);
        assert_string_equal(got, "2026-03-30 00:30");
        /* During the second 02:00-03:00 (CET) of 25 October, 02:30 is not due again. */
        show(cronNext(&c, z, at("2026-10-25 01:10")), got);
        assert_string_equal(got, "2026-10-26 01:30");
        tzFree(z);
    }
    /* 2100, from the footer's rule: 28 March and 31 October. */
    RUNS("Europe/Paris", "30 2 * * *", "2100-03-27 12:00", "2100-03-28 01:00", "2100-03-29 00:30");
    RUNS("Europe/Paris", "30 2 * * *", "2100-10-30 12:00", "2100-10-31 00:30", "2100-11-01 01:30");
    /* Day of week and month are the local date's: Sunday 00:30 local in Paris is still
     * Saturday in UTC. */
    RUNS("Europe/Paris", "30 0 * * SUN", "2026-12-01 00:00", "2026-12-05 23:30");
    RUNS("Europe/Paris", "0 0 1 * *", "2026-06-15 00:00", "2026-06-30 22:00", "2026-07-31 22:00");
}

/* A whole year of half-hourly runs in Paris: 365 x 48 wall-clock times, less the two
 * that the end of March's gap folds into the run at 03:00 CEST (02:00 and 02:30 skipped):
 * 17518 runs, in order, 30 minutes apart but for 90 at the end of October (02:30 CEST,
 * then 03:00 CET). */
static void test_zone_a_year(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct cron c;
    struct tz *z;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int64_t t = at("2025-12-31 22:59") + 59000; /* 23:59:59 CET */
    int64_t end = at("2026-12-31 23:00");       /* 2027-01-01 00:00 CET */
    int runs = 0, long_gaps = 0;
    assert_int_equal(cronParse("*/30 * * * *", &c, errmsg), 0);
    assert_int_equal(tzLoad("Europe/Paris", &z, errmsg), 0);
    for (;;) {
        int64_t next = cronNext(&c, z, t);
        if (next >= end) {
            break;
        }
        if (runs > 0) {
            int64_t gap = next - t;
            assert_true(gap == 1800000 || gap == 5400000);
            long_gaps += gap == 5400000;
        }
        runs++;
        t = next;
    }
    assert_int_equal(runs, 17518);
    assert_int_equal(long_gaps, 1);
    tzFree(z);
}

static void test_zone_new_york(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    /* EST -5 / EDT -4. 8 March 2026 07:00 UTC (02:00 EST becomes 03:00 EDT); 1 November
     * 2026 06:00 UTC (02:00 EDT becomes 01:00 EST). */
    RUNS("America/New_York", "30 2 * * *", "2026-03-07 12:00", "2026-03-08 07:00",
         "2026-03-09 06:30");
    RUNS("America/New_York", "30 1 * * *", "2026-10-31 00:00", "2026-10-31 05:30",
         "2026-11-01 05:30", "2026-11-02 06:30");
    /* Weekdays at 09:00 local: 13:00 UTC in summer, 14:00 UTC in winter. */
    RUNS("America/New_York", "0 9 * * 1-5", "2026-10-30 00:00", "2026-10-30 13:00",
         "2026-11-02 14:00");
    RUNS("America/New_York", "0 9 * * 1-5", "2026-03-06 00:00", "2026-03-06 14:00",
         "2026-03-09 13:00");
    /* Every hour across the fall-back: 01:00 EDT (05:00 UTC), not 01:00 EST again;
     * 02:00 EST is 07:00 UTC. */
    RUNS("America/New_York", "0 * * * *", "2026-11-01 04:30", "2026-11-01 05:00",
         "2026-11-01 07:00");
}

static void test_zone_half_hours_and_a_lost_day(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    /* Lord Howe: +10:30, +11 from 02:00 on 4 October 2026 (3 October 15:30 UTC) to
     * 02:00 on 5 April 2026 (4 April 15:00 UTC), when 01:30-02:00 comes twice. */
    RUNS("Australia/Lord_Howe", "15 2 * * *", "2026-10-02 00:00", "2026-10-02 15:45",
         "2026-10-03 15:30", "2026-10-04 15:15");
    RUNS("Australia/Lord_Howe", "45 1 * * *", "2026-04-03 00:00", "2026-04-03 14:45",
         "2026-04-04 14:45", "2026-04-05 15:15");
    /* Kolkata, +5:30 all year. */
    RUNS("Asia/Kolkata", "0 3 * * *", "2026-12-03 00:00", "2026-12-03 21:30", "2026-12-04 21:30");
    /* Samoa skipped Friday 30 December 2011 (-10 to +14 at 10:00 UTC): noon on the 29th is
     * 22:00 UTC; the 30th's noon runs at the end of the gap; the 31st's at 22:00 UTC on the
     * 30th. A job for the 30th only runs once, at the end of the gap, too; a year later
     * the 30th exists, in Samoa's daylight time then (+14): 29 December 22:00 UTC. */
    RUNS("Pacific/Apia", "0 12 * * *", "2011-12-29 12:00", "2011-12-29 22:00", "2011-12-30 10:00",
         "2011-12-30 22:00");
    RUNS("Pacific/Apia", "0 12 30 12 *", "2011-12-01 00:00", "2011-12-30 10:00",
         "2012-12-29 22:00");
    /* UTC by name is UTC. */
    RUNS("UTC", "0 3 * * *", "2026-03-28 12:00", "2026-03-29 03:00");
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
        cmocka_unit_test(test_zone_paris),
        cmocka_unit_test(test_zone_a_year),
        cmocka_unit_test(test_zone_new_york),
        cmocka_unit_test(test_zone_half_hours_and_a_lost_day),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
