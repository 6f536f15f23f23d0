/* Unit tests of time zones (src/lib/tz.c): real TZif files of tzdata (Europe/Paris,
 * America/New_York, Australia/Lord_Howe with its 30-minute daylight time, Asia/Kolkata,
 * Pacific/Apia, which skipped 30 December 2011, Asia/Jerusalem and America/Nuuk, whose
 * footers use version 3's times), far-future dates only the footer's rule answers, POSIX
 * TZ strings, zone names, and damaged or truncated files written to a temporary
 * directory, each refused with a message naming the file and what is wrong.
 *
 * Every expected instant was worked out by hand from the published rules (the EU's
 * last Sundays of March and October at 01:00 UTC; the US's second Sunday of March and
 * first of November at 02:00 local; ...), never by calling the code under test. The
 * tests of real files skip, saying so, when /usr/share/zoneinfo is absent
 * (scripts/deps.sh installs tzdata). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "tz.h"
#include "tzfx.h"

/* "2026-03-29 01:00:00" (UTC) in Unix seconds. */
static int64_t at(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int n = sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec);
    assert_true(n >= 5);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static struct tz *load(const char *name)
{
    struct tz *z = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    if (tzLoad(name, &z, errmsg) != 0) {
        fail_msg("tzLoad(%s): %s", name, errmsg);
    }
    assert_string_equal(tzName(z), name);
    return z;
}

static struct tz *posix(const char *s)
{
    struct tz *z = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    if (tzFromPosix(s, &z, errmsg) != 0) {
        fail_msg("tzFromPosix(%s): %s", s, errmsg);
    }
    return z;
}

/* The offset changes from `before` to `after` exactly at instant t, and that is the
 * first change after t - 1 day (none in the day before it). */
static void expectChange(const struct tz *z, const char *when, int32_t before, int32_t after)
{
    int64_t t = at(when);
    if (tzOffset(z, t - 1) != before || tzOffset(z, t) != after) {
        fail_msg("%s at %s: offset %d then %d, want %d then %d", tzName(z), when,
                 tzOffset(z, t - 1), tzOffset(z, t), before, after);
    }
    if (tzNextChange(z, t - 86400) != t) {
        fail_msg("%s: next change after %s - 1 day is %lld, want %lld", tzName(z), when,
                 (long long)tzNextChange(z, t - 86400), (long long)t);
    }
}

/* Wall-clock time `local` (written as UTC) occurs `n` times: at want1 (and want2), or is
 * skipped (n 0) and the gap ends at want1. */
static void expectLocal(const struct tz *z, const char *local, int n, const char *want1,
                        const char *want2)
{
    int64_t first = 0, second = 0;
    int got = tzLocalToUtc(z, at(local), &first, &second);
    if (got != n || first != at(want1) || (n == 2 && second != at(want2))) {
        fail_msg("%s: local %s: %d instant(s) %lld %lld, want %d: %s %s", tzName(z), local, got,
                 (long long)first, (long long)second, n, want1, want2 ? want2 : "");
    }
}

static void test_utc_is_built_in(void **state)
{
    (void)state;
    const char *names[] = {"UTC", "Etc/UTC", "Z"};
    for (size_t i = 0; i < 3; i++) {
        struct tz *z = load(names[i]);
        int64_t first, second;
        assert_int_equal(tzOffset(z, at("2026-07-01 12:00")), 0);
        assert_int_equal(tzNextChange(z, 0), INT64_MAX);
        assert_int_equal(tzLocalToUtc(z, at("2026-03-29 02:30"), &first, &second), 1);
        assert_int_equal(first, at("2026-03-29 02:30"));
        tzFree(z);
    }
}

static void test_paris(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = load("Europe/Paris");
    /* CET +1, CEST +2; the EU changes at 01:00 UTC on the last Sundays of March and
     * October: 29 March and 25 October 2026. */
    assert_int_equal(tzOffset(z, at("2026-01-15 12:00")), 3600);
    assert_int_equal(tzOffset(z, at("2026-07-15 12:00")), 7200);
    expectChange(z, "2026-03-29 01:00:00", 3600, 7200);
    expectChange(z, "2026-10-25 01:00:00", 7200, 3600);
    /* 02:30 on 29 March does not exist; 02:30 on 25 October comes twice. */
    expectLocal(z, "2026-03-29 02:30", 0, "2026-03-29 01:00", NULL);
    expectLocal(z, "2026-03-29 02:00", 0, "2026-03-29 01:00", NULL);
    expectLocal(z, "2026-03-29 03:00", 1, "2026-03-29 01:00", NULL);
    expectLocal(z, "2026-03-29 01:59", 1, "2026-03-29 00:59", NULL);
    expectLocal(z, "2026-10-25 02:30", 2, "2026-10-25 00:30", "2026-10-25 01:30");
    expectLocal(z, "2026-10-25 02:00", 2, "2026-10-25 00:00", "2026-10-25 01:00");
    expectLocal(z, "2026-10-25 03:00", 1, "2026-10-25 02:00", NULL);
    expectLocal(z, "2026-10-25 01:59", 1, "2026-10-24 23:59", NULL);
    /* 2100, past the file's transitions (a "fat" file ends in 2037): the footer
     * CET-1CEST,M3.5.0,M10.5.0/3 answers; 28 March and 31 October 2100. */
    expectChange(z, "2100-03-28 01:00:00", 3600, 7200);
    expectChange(z, "2100-10-31 01:00:00", 7200, 3600);
    expectLocal(z, "2100-03-28 02:15", 0, "2100-03-28 01:00", NULL);
    expectLocal(z, "2100-10-31 02:15", 2, "2100-10-31 00:15", "2100-10-31 01:15");
    /* History: France kept CET all year from 1946 to 1976 (daylight time came back on
     * 28 March 1976, 01:00 local). */
    assert_int_equal(tzOffset(z, at("1970-07-01 12:00")), 3600);
    expectChange(z, "1976-03-28 00:00:00", 3600, 7200);
    tzFree(z);
}

static void test_new_york(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = load("America/New_York");
    /* EST -5, EDT -4; 02:00 local on the second Sunday of March (8 March 2026, 07:00
     * UTC) and the first Sunday of November (1 November 2026, 06:00 UTC). */
    expectChange(z, "2026-03-08 07:00:00", -18000, -14400);
    expectChange(z, "2026-11-01 06:00:00", -14400, -18000);
    expectLocal(z, "2026-03-08 02:30", 0, "2026-03-08 07:00", NULL);
    expectLocal(z, "2026-11-01 01:30", 2, "2026-11-01 05:30", "2026-11-01 06:30");
    /* 2100 from the footer EST5EDT,M3.2.0,M11.1.0: 14 March and 7 November. */
    expectChange(z, "2100-03-14 07:00:00", -18000, -14400);
    expectChange(z, "2100-11-07 06:00:00", -14400, -18000);
    /* Before 2007 the rule was the first Sunday of April and the last of October:
     * 2 April 2006 07:00 UTC. */
    expectChange(z, "2006-04-02 07:00:00", -18000, -14400);
    tzFree(z);
}

static void test_lord_howe_half_hour(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = load("Australia/Lord_Howe");
    /* +10:30, and +11 from 02:00 local on the first Sunday of October to 02:00 local on
     * the first Sunday of April: 4 October 2026 02:00 +10:30 is 3 October 15:30 UTC; 5
     * April 2026 02:00 +11 is 4 April 15:00 UTC. */
    expectChange(z, "2026-04-04 15:00:00", 39600, 37800);
    expectChange(z, "2026-10-03 15:30:00", 37800, 39600);
    expectLocal(z, "2026-10-04 02:15", 0, "2026-10-03 15:30", NULL);
    expectLocal(z, "2026-10-04 02:30", 1, "2026-10-03 15:30", NULL);
    expectLocal(z, "2026-04-05 01:45", 2, "2026-04-04 14:45", "2026-04-04 15:15");
    /* 2100 (footer <+1030>-10:30<+11>-11,M10.1.0,M4.1.0): 3 October, 4 April. */
    expectChange(z, "2100-10-02 15:30:00", 37800, 39600);
    expectChange(z, "2100-04-03 15:00:00", 39600, 37800);
    tzFree(z);
}

static void test_kolkata_fixed(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = load("Asia/Kolkata");
    int64_t first, second;
    assert_int_equal(tzOffset(z, at("2026-12-03 00:00")), 19800);
    assert_int_equal(tzOffset(z, at("2100-06-01 00:00")), 19800);
    assert_int_equal(tzNextChange(z, at("2026-01-01 00:00")), INT64_MAX);
    assert_int_equal(tzLocalToUtc(z, at("2026-12-03 03:00"), &first, &second), 1);
    assert_int_equal(first, at("2026-12-02 21:30"));
    tzFree(z);
}

static void test_apia_skipped_a_day(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = load("Pacific/Apia");
    /* Samoa went from -10 (its daylight time) to +14 at the end of Thursday 29
     * December 2011: 24:00 -10 is 30 December 10:00 UTC, and the next local day was
     * Saturday 31 December. */
    expectChange(z, "2011-12-30 10:00:00", -36000, 50400);
    expectLocal(z, "2011-12-30 12:00", 0, "2011-12-30 10:00", NULL);
    expectLocal(z, "2011-12-30 00:00", 0, "2011-12-30 10:00", NULL);
    expectLocal(z, "2011-12-30 23:59", 0, "2011-12-30 10:00", NULL);
    expectLocal(z, "2011-12-31 00:00", 1, "2011-12-30 10:00", NULL);
    expectLocal(z, "2011-12-29 23:59", 1, "2011-12-30 09:59", NULL);
    /* Since 2021, +13 all year (footer <+13>-13). */
    assert_int_equal(tzOffset(z, at("2026-07-01 00:00")), 46800);
    assert_int_equal(tzOffset(z, at("2100-01-01 00:00")), 46800);
    tzFree(z);
}

static void test_version3_footers(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    /* IST-2IDT,M3.4.4/26,M10.5.0: 26:00 on the fourth Thursday of March, the Friday
     * before the last Sunday. 2100: Thursday 25 March + 26 h = Friday 26 March 02:00
     * +2 = 26 March 00:00 UTC; the end, 31 October 02:00 +3 = 30 October 23:00 UTC. */
    struct tz *z = load("Asia/Jerusalem");
    expectChange(z, "2100-03-26 00:00:00", 7200, 10800);
    expectChange(z, "2100-10-30 23:00:00", 10800, 7200);
    tzFree(z);
    /* <-02>2<-01>,M3.5.0/-1,M10.5.0/0: -1:00 local, the Saturday before the last Sunday
     * of March, 23:00 -2 = 01:00 UTC on the Sunday (with the EU). */
    z = load("America/Nuuk");
    expectChange(z, "2100-03-28 01:00:00", -7200, -3600);
    expectChange(z, "2100-10-31 01:00:00", -3600, -7200);
    tzFree(z);
}

static void test_posix_strings(void **state)
{
    (void)state;
    struct tz *z;
    z = posix("<+03>-3");
    assert_int_equal(tzOffset(z, at("2026-01-01 00:00")), 10800);
    tzFree(z);
    z = posix("<-0330>3:30");
    assert_int_equal(tzOffset(z, 0), -12600);
    tzFree(z);
    z = posix("XYZ-1:30:15");
    assert_int_equal(tzOffset(z, 0), 5415);
    tzFree(z);
    /* The EU's rule in a string, for 2026. */
    z = posix("CET-1CEST,M3.5.0,M10.5.0/3");
    expectChange(z, "2026-03-29 01:00:00", 3600, 7200);
    expectChange(z, "2026-10-25 01:00:00", 7200, 3600);
    tzFree(z);
    /* Jn (February 29 not counted) and n (counted) in a leap year: J60 is 1 March,
     * day 60 is 1 March too in 2028 (day 59 is 29 February). Changes at 02:00 local. */
    z = posix("AAA0BBB,J60,300");
    expectChange(z, "2028-03-01 02:00:00", 0, 3600);
    tzFree(z);
    z = posix("AAA0BBB,59,300");
    expectChange(z, "2028-02-29 02:00:00", 0, 3600);
    tzFree(z);
    /* Daylight time all year, as RFC 8536 writes it: no change ever. */
    z = posix("EST5EDT,0/0,J365/25");
    assert_int_equal(tzOffset(z, at("2026-01-01 00:00")), -14400);
    assert_int_equal(tzOffset(z, at("2026-12-31 23:59")), -14400);
    assert_int_equal(tzNextChange(z, at("2026-06-01 00:00")), INT64_MAX);
    tzFree(z);
    /* A southern zone: daylight time across the new year (Chile's old rule). */
    z = posix("<-04>4<-03>,M9.1.6/24,M4.1.6/24");
    /* First Saturday of September 2026 is 5 September: 24:00 -4 = 6 Sep 04:00 UTC. */
    expectChange(z, "2026-09-06 04:00:00", -14400, -10800);
    tzFree(z);

    static const struct {
        const char *s, *needle;
    } bad[] = {
        {"", "expected a standard time name"},
        {"AB-1", "at least three letters"},
        {"<+0>-1", "at least three characters"},
        {"<+03-3", "closing '>'"},
        {"CET", "expected hours"},
        {"CET-25", "out of range"},
        {"CET-1CEST", "needs its rule"},
        {"CET-1CEST,M13.1.0,M10.5.0", "month 1-12"},
        {"CET-1CEST,M3.6.0,M10.5.0", "week 1-5"},
        {"CET-1CEST,M3.5.7,M10.5.0", "day of week 0-6"},
        {"CET-1CEST,M3.5.0/168,M10.5.0", "out of range"},
        {"CET-1CEST,M3.5.0,M10.5.0x", "unexpected text"},
        {"CET-1CEST,J0,J365", "Jn needs a day 1-365"},
        {"CET-1CEST,M3.5.0", "expected ','"},
        {"CET-1:5", "two-digit"},
        {"CET-1 ", "unexpected text"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char errmsg[CAIRN_ERRMSG_SIZE] = "";
        z = (struct tz *)1;
        assert_int_equal(tzFromPosix(bad[i].s, &z, errmsg), CAIRN_EINVAL);
        assert_null(z);
        if (strstr(errmsg, bad[i].needle) == NULL || strstr(errmsg, "TZ string") == NULL) {
            fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bad[i].s, errmsg, bad[i].needle);
        }
    }
}

static void test_names(void **state)
{
    (void)state;
    static const char *invalid[] = {
        "",         "/etc/passwd", "../etc/passwd", "Europe/../Paris", "Europe//Paris",
        "Europe/",  "./Paris",     "Europe/Par is", "Europe/Paris\n",  "-x",
        "Europe/.", "a..b"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        struct tz *z = NULL;
        char errmsg[CAIRN_ERRMSG_SIZE] = "";
        assert_int_equal(tzLoad(invalid[i], &z, errmsg), CAIRN_EINVAL);
        assert_null(z);
        assert_non_null(strstr(errmsg, "not an IANA zone name"));
    }
    if (!haveZoneinfo()) {
        skip();
    }
    struct tz *z = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    assert_int_equal(tzLoad("Mars/Olympus_Mons", &z, errmsg), CAIRN_ENOTFOUND);
    assert_null(z);
    assert_non_null(strstr(errmsg, "time zone \"Mars/Olympus_Mons\": unknown zone"));
    assert_non_null(strstr(errmsg, TZ_DIR "/Mars/Olympus_Mons"));
    assert_int_equal(tzLoad("Europe", &z, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "a directory"));
    z = load("Etc/GMT+5"); /* POSIX sign: five hours west */
    assert_int_equal(tzOffset(z, 0), -18000);
    tzFree(z);
}

/* ---- damaged files ---------------------------------------------------------------------- */

static char tmpdir[64];

static int setupDir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_tz.XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardownDir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static uint8_t *readAll(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(TZ_FILE_MAX);
    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, TZ_FILE_MAX, f);
    fclose(f);
    return buf;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Where the second header of a version 2+ file starts, from the first's counts. */
static size_t secondHeader(const uint8_t *d)
{
    return 44 + get32(d + 32) * 5 + get32(d + 36) * 6 + get32(d + 40) + get32(d + 28) * 8 +
           get32(d + 24) + get32(d + 20);
}

/* Write len bytes as file `name` of tmpdir, load it: want rv and a message holding the
 * path and needle. */
static void expectRefused(const char *name, const uint8_t *data, size_t len, int want,
                          const char *needle)
{
    char path[256];
    struct tz *z = (struct tz *)1;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    assert_non_null(f = fopen(path, "wb"));
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    int rv = tzLoadPath(path, name, &z, errmsg);
    if (rv != want || z != NULL || strstr(errmsg, path) == NULL || strstr(errmsg, needle) == NULL) {
        fail_msg("%s: rv %d (want %d), message \"%s\" (want the path and \"%s\")", name, rv, want,
                 errmsg, needle);
    }
}

static void test_damaged_files(void **state)
{
    (void)state;
    if (!haveZoneinfo()) {
        skip();
    }
    size_t len;
    uint8_t *orig = readAll(TZ_DIR "/Europe/Paris", &len);
    uint8_t *d = malloc(TZ_FILE_MAX + 16);
    size_t h2 = secondHeader(orig);
    size_t data2 = h2 + 44;
    uint32_t timecnt = get32(orig + h2 + 32);
    assert_non_null(d);
    assert_true(orig[4] >= '2' && h2 + 44 < len && timecnt > 10);

    /* The real file, copied, loads: the copy is what the mutations start from. */
    {
        char path[256];
        struct tz *z = NULL;
        char errmsg[CAIRN_ERRMSG_SIZE];
        FILE *f;
        snprintf(path, sizeof path, "%s/good", tmpdir);
        assert_non_null(f = fopen(path, "wb"));
        assert_int_equal(fwrite(orig, 1, len, f), len);
        fclose(f);
        assert_int_equal(tzLoadPath(path, "good", &z, errmsg), 0);
        assert_int_equal(tzOffset(z, at("2026-07-01 00:00")), 7200);
        tzFree(z);
    }

    expectRefused("empty", orig, 0, CAIRN_ECORRUPT, "truncated: the first header needs 44 bytes");
    expectRefused("short", orig, 20, CAIRN_ECORRUPT, "truncated");
    memcpy(d, orig, len);
    memcpy(d, "TZjf", 4);
    expectRefused("magic", d, len, CAIRN_ECORRUPT, "not a TZif file");
    memcpy(d, orig, len);
    d[4] = '9';
    expectRefused("version", d, len, CAIRN_ECORRUPT, "unknown TZif version byte 0x39");
    /* Cut anywhere: in the first block, in the second header, in the second block, in
     * the footer. A few as files, every length in memory (the same parser). */
    expectRefused("cut-v1", orig, 100, CAIRN_ECORRUPT, "truncated: the first header's counts");
    expectRefused("cut-h2", orig, h2 + 10, CAIRN_ECORRUPT,
                  "truncated: the second (64-bit) header needs 44 bytes");
    expectRefused("cut-v2", orig, data2 + 30, CAIRN_ECORRUPT,
                  "truncated: the second (64-bit) header's counts");
    expectRefused("cut-footer", orig, len - 3, CAIRN_ECORRUPT, "no closing newline");
    for (size_t cut = 0; cut < len; cut++) {
        struct tz *z = (struct tz *)1;
        char errmsg[CAIRN_ERRMSG_SIZE] = "";
        assert_int_equal(tzParse(orig, cut, "time zone file cut", "cut", &z, errmsg),
                         CAIRN_ECORRUPT);
        assert_null(z);
        if (strstr(errmsg, "time zone file cut: ") != errmsg ||
            strstr(errmsg, cut < len - 1 ? "truncated" : "newline") == NULL) {
            fail_msg("cut at %zu: \"%s\"", cut, errmsg);
        }
    }
    /* Counts that ask for more than the file holds. */
    memcpy(d, orig, len);
    put32(d + h2 + 32, 0xffffffffu);
    expectRefused("timecnt", d, len, CAIRN_ECORRUPT,
                  "truncated: the second (64-bit) header's counts");
    memcpy(d, orig, len);
    put32(d + 40, 0x7fffffffu);
    expectRefused("charcnt1", d, len, CAIRN_ECORRUPT, "the first header's counts");
    memcpy(d, orig, len);
    put32(d + h2 + 36, 0);
    expectRefused("notypes", d, len, CAIRN_ECORRUPT, "no local time types");
    memcpy(d, orig, len);
    put32(d + h2 + 20, 1);
    expectRefused("isutcnt", d, len, CAIRN_ECORRUPT, "each count must be 0 or the number of types");
    /* Transitions out of order: the second set before the first. */
    memcpy(d, orig, len);
    memcpy(d + data2 + 8, d + data2, 8);
    expectRefused("order", d, len, CAIRN_ECORRUPT, "transition 1");
    /* A transition naming a type that is not there. */
    memcpy(d, orig, len);
    d[data2 + timecnt * 8 + 3] = 200;
    expectRefused("type", d, len, CAIRN_ECORRUPT, "transition 3 names local time type 200");
    /* An offset of -2^31, and one of 30 hours. */
    {
        size_t tt = data2 + timecnt * 9;
        memcpy(d, orig, len);
        put32(d + tt, 0x80000000u);
        expectRefused("utoff", d, len, CAIRN_ECORRUPT, "local time type 0: offset");
        memcpy(d, orig, len);
        put32(d + tt + 6, 30 * 3600);
        expectRefused("utoff30", d, len, CAIRN_ECORRUPT, "local time type 1: offset 108000");
        memcpy(d, orig, len);
        d[tt + 4] = 7;
        expectRefused("isdst", d, len, CAIRN_ECORRUPT, "daylight-time flag 7");
        memcpy(d, orig, len);
        d[tt + 5] = 250;
        expectRefused("desig", d, len, CAIRN_ECORRUPT, "its name at index 250");
    }
    /* Leap seconds ("right/"). */
    memcpy(d, orig, len);
    put32(d + h2 + 28, 1);
    expectRefused("leap", d, len, CAIRN_ECORRUPT, "leap-second");
    /* The footer: a rule that does not parse, no newline before it, bytes after it. */
    {
        const char *bad = "\nCET-1CEST\n";
        size_t foot = len - 1;
        while (orig[foot - 1] != '\n') {
            foot--;
        }
        foot--; /* the footer's first newline */
        memcpy(d, orig, foot);
        memcpy(d + foot, bad, strlen(bad));
        expectRefused("footer", d, foot + strlen(bad), CAIRN_ECORRUPT,
                      "footer: TZ string \"CET-1CEST\": daylight time needs its rule");
        memcpy(d, orig, len);
        d[foot] = 'x';
        expectRefused("footnl", d, len, CAIRN_ECORRUPT,
                      "the footer (a TZ string between "
                      "newlines) is missing");
        memcpy(d, orig, len);
        memcpy(d + len, "junk", 4);
        expectRefused("after", d, len + 4, CAIRN_ECORRUPT, "4 bytes after the footer");
    }
    /* More than 1 MiB. */
    memset(d, 0, TZ_FILE_MAX + 1);
    memcpy(d, orig, len);
    expectRefused("huge", d, TZ_FILE_MAX + 1, CAIRN_ECORRUPT, "larger than 1048576");
    /* Random bytes after a good header: refused or read, never a crash (ASan). */
    srand(19);
    for (int round = 0; round < 300; round++) {
        char path[256];
        struct tz *z = NULL;
        char errmsg[CAIRN_ERRMSG_SIZE];
        FILE *f;
        memcpy(d, orig, len);
        for (int k = 0; k < 4; k++) {
            d[44 + (size_t)rand() % (len - 44)] = (uint8_t)rand();
        }
        snprintf(path, sizeof path, "%s/random", tmpdir);
        assert_non_null(f = fopen(path, "wb"));
        assert_int_equal(fwrite(d, 1, len, f), len);
        fclose(f);
        if (tzLoadPath(path, "random", &z, errmsg) == 0) {
            int64_t first, second;
            (void)tzOffset(z, at("2026-07-01 00:00"));
            (void)tzNextChange(z, at("2026-07-01 00:00"));
            (void)tzLocalToUtc(z, at("2026-03-29 02:30"), &first, &second);
            tzFree(z);
        } else {
            assert_non_null(strstr(errmsg, path));
        }
    }
    free(d);
    free(orig);
}

/* A version 1 file written by hand: two types, two transitions, no footer. */
static void test_version1(void **state)
{
    (void)state;
    uint8_t f[256];
    size_t n = 0;
    char path[256];
    struct tz *z = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    FILE *fp;
    memset(f, 0, sizeof f);
    memcpy(f, "TZif", 4); /* version byte 0: version 1 */
    put32(f + 32, 2);     /* timecnt */
    put32(f + 36, 2);     /* typecnt */
    put32(f + 40, 8);     /* charcnt */
    n = 44;
    put32(f + n, (uint32_t)at("2020-01-01 00:00"));
    put32(f + n + 4, (uint32_t)at("2020-07-01 00:00"));
    n += 8;
    f[n++] = 1;
    f[n++] = 0;
    put32(f + n, 3600); /* type 0: +1 "AAA" */
    f[n + 4] = 0;
    f[n + 5] = 0;
    put32(f + n + 6, 7200); /* type 1: +2 "BBB", daylight */
    f[n + 10] = 1;
    f[n + 11] = 4;
    n += 12;
    memcpy(f + n, "AAA\0BBB\0", 8);
    n += 8;
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    assert_non_null(fp = fopen(path, "wb"));
    assert_int_equal(fwrite(f, 1, n, fp), n);
    fclose(fp);
    if (tzLoadPath(path, "v1", &z, errmsg) != 0) {
        fail_msg("%s", errmsg);
    }
    assert_int_equal(tzOffset(z, at("2019-06-01 00:00")), 3600); /* type 0 before */
    assert_int_equal(tzOffset(z, at("2020-03-01 00:00")), 7200);
    assert_int_equal(tzOffset(z, at("2021-03-01 00:00")), 3600); /* the last type goes on */
    assert_int_equal(tzNextChange(z, at("2020-03-01 00:00")), at("2020-07-01 00:00"));
    assert_int_equal(tzNextChange(z, at("2020-07-01 00:00")), INT64_MAX);
    tzFree(z);
    /* With one byte more: refused. */
    assert_non_null(fp = fopen(path, "wb"));
    assert_int_equal(fwrite(f, 1, n + 1, fp), n + 1);
    fclose(fp);
    assert_int_equal(tzLoadPath(path, "v1", &z, errmsg), CAIRN_ECORRUPT);
    assert_non_null(strstr(errmsg, "1 bytes after the version 1 data"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utc_is_built_in),
        cmocka_unit_test(test_paris),
        cmocka_unit_test(test_new_york),
        cmocka_unit_test(test_lord_howe_half_hour),
        cmocka_unit_test(test_kolkata_fixed),
        cmocka_unit_test(test_apia_skipped_a_day),
        cmocka_unit_test(test_version3_footers),
        cmocka_unit_test(test_posix_strings),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_version1),
    };
    return cmocka_run_group_tests(tests, setupDir, teardownDir);
}
