/* Unit tests of retention (src/backup/expire.c): the policy on synthetic catalogs
 * (expireDecide) — each rule, grandfather-father-son periods across day, ISO week, month
 * and year ends, ancestors kept for what depends on them, the newest backups of each
 * source, a policy that keeps nothing refused, the empty policy, damaged entries — the
 * JSON form of a policy with its errors, and one expiry of a real posix repository with
 * an archive: what goes, in which order, sidecars and segments included. */
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
#include <time.h>
#include <unistd.h>

#include "arcseg.h"
#include "error.h"
#include "expire.h"
#include "repo.h"

#define DAY INT64_C(86400000)
#define HOUR INT64_C(3600000)

/* Unix ms of a UTC date and time. */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm) * 1000;
}

/* A catalog being built: ids made from the creation time, as the engine makes them. */
struct cat {
    struct expire_item v[64];
    size_t n;
    unsigned seq;
};

/* Append a backup; returns its id (in the catalog). parent: an id or NULL. */
static const char *add(struct cat *c, int type, const char *parent, int64_t created,
                       const char *source)
{
    struct expire_item *it = &c->v[c->n++];
    struct tm tm;
    time_t s = (time_t)(created / 1000);
    memset(it, 0, sizeof *it);
    gmtime_r(&s, &tm);
    snprintf(it->id, sizeof it->id, "%04d%02d%02dT%02d%02d%02d%03dZ-%04u-abcd", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(created % 1000),
             c->seq++ % 10000);
    it->type = type;
    snprintf(it->parent_id, sizeof it->parent_id, "%s", parent ? parent : "");
    snprintf(it->source, sizeof it->source, "%s", source ? source : "db");
    it->created_ms = created;
    it->size_bytes = 1000;
    return it->id;
}

static const struct expire_item *get(const struct cat *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].id, id) == 0) {
            return &c->v[i];
        }
    }
    fail_msg("no item %s", id);
    return NULL;
}

static void decide(struct cat *c, const struct retention *r, int64_t now)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = expireDecide(r, now, c->v, c->n, errmsg);
    if (rv != 0) {
        fail_msg("expireDecide: %s", errmsg);
    }
}

/* Whether id is kept, with a reason containing `why` (NULL: any). */
static void kept(const struct cat *c, const char *id, const char *why)
{
    const struct expire_item *it = get(c, id);
    if (!it->keep) {
        fail_msg("%s expired (%s), expected kept", id, it->reason);
    }
    if (why != NULL && strstr(it->reason, why) == NULL) {
        fail_msg("%s kept for \"%s\", expected \"%s\"", id, it->reason, why);
    }
}

static void expired(const struct cat *c, const char *id)
{
    const struct expire_item *it = get(c, id);
    if (it->keep) {
        fail_msg("%s kept (%s), expected expired", id, it->reason);
    }
}

static void test_keep_full(void **state)
{
    (void)state;
    struct cat c = {0};
    int64_t t = utc(2026, 11, 1, 10, 0);
    char f1[32], i1[32], i2[32], f2[32], d1[32], f3[32], i3[32];
    snprintf(f1, sizeof f1, "%s", add(&c, BACKUP_FULL, NULL, t, NULL));
    snprintf(i1, sizeof i1, "%s", add(&c, BACKUP_INCREMENTAL, f1, t + HOUR, NULL));
    snprintf(i2, sizeof i2, "%s", add(&c, BACKUP_INCREMENTAL, i1, t + 2 * HOUR, NULL));
    snprintf(f2, sizeof f2, "%s", add(&c, BACKUP_FULL, NULL, t + DAY, NULL));
    snprintf(d1, sizeof d1, "%s", add(&c, BACKUP_DIFFERENTIAL, f2, t + DAY + HOUR, NULL));
    snprintf(f3, sizeof f3, "%s", add(&c, BACKUP_FULL, NULL, t + 2 * DAY, NULL));
    snprintf(i3, sizeof i3, "%s", add(&c, BACKUP_INCREMENTAL, f3, t + 2 * DAY + HOUR, NULL));
    struct retention r = {.keep_full = 2};
    decide(&c, &r, t + 3 * DAY);
    expired(&c, f1);
    expired(&c, i1);
    expired(&c, i2);
    kept(&c, f2, "keep-full #2 of 2");
    kept(&c, d1, "chain of keep-full #2");
    kept(&c, f3, "keep-full #1 of 2");
    kept(&c, i3, "newest of its source");
    assert_non_null(strstr(get(&c, f1)->reason, "no rule keeps it"));

    r.keep_full = 1;
    decide(&c, &r, t + 3 * DAY);
    expired(&c, f2);
    expired(&c, d1);
    kept(&c, f3, "keep-full #1 of 1");
    kept(&c, i3, "chain of keep-full #1");
}

static void test_keep_within_keeps_ancestors(void **state)
{
    (void)state;
    struct cat c = {0};
    int64_t now = utc(2026, 12, 3, 12, 0);
    char f[32], a[32], b[32], x[32];
    snprintf(f, sizeof f, "%s", add(&c, BACKUP_FULL, NULL, now - 10 * DAY, NULL));
    snprintf(a, sizeof a, "%s", add(&c, BACKUP_INCREMENTAL, f, now - 5 * DAY, NULL));
    snprintf(x, sizeof x, "%s", add(&c, BACKUP_DIFFERENTIAL, f, now - 4 * DAY, NULL));
    snprintf(b, sizeof b, "%s", add(&c, BACKUP_INCREMENTAL, a, now - 36 * HOUR, NULL));
    struct retention r = {.keep_within_ms = 2 * DAY};
    decide(&c, &r, now);
    kept(&c, b, "within 2d");
    kept(&c, a, "needed by ");
    kept(&c, f, "needed by ");
    assert_non_null(strstr(get(&c, a)->reason, b));
    assert_non_null(strstr(get(&c, f)->reason, a));
    expired(&c, x);
    /* Within 5d: the differential too; 1d keeps b only as the newest. */
    r.keep_within_ms = 5 * DAY;
    decide(&c, &r, now);
    kept(&c, x, "within 5d");
    kept(&c, a, "within 5d");
}

static void test_daily_across_days(void **state)
{
    (void)state;
    struct cat c = {0};
    char d1a[32], d1b[32], d2[32], d4a[32], d4b[32], f[32];
    /* A full, then incrementals on days 1, 2 and 4 of December (none on day 3). */
    snprintf(f, sizeof f, "%s", add(&c, BACKUP_FULL, NULL, utc(2026, 11, 30, 23, 59), NULL));
    snprintf(d1a, sizeof d1a, "%s", add(&c, BACKUP_INCREMENTAL, f, utc(2026, 12, 1, 0, 0), NULL));
    snprintf(d1b, sizeof d1b, "%s",
             add(&c, BACKUP_INCREMENTAL, d1a, utc(2026, 12, 1, 23, 59), NULL));
    snprintf(d2, sizeof d2, "%s", add(&c, BACKUP_INCREMENTAL, d1b, utc(2026, 12, 2, 12, 0), NULL));
    snprintf(d4a, sizeof d4a, "%s", add(&c, BACKUP_FULL, NULL, utc(2026, 12, 4, 1, 0), NULL));
    snprintf(d4b, sizeof d4b, "%s", add(&c, BACKUP_INCREMENTAL, d4a, utc(2026, 12, 4, 2, 0), NULL));
    struct retention r = {.keep_daily = 2};
    decide(&c, &r, utc(2026, 12, 10, 0, 0));
    /* The last 2 days that hold a backup are the 4th and the 2nd. */
    kept(&c, d4b, "daily 2026-12-04");
    kept(&c, d4a, "needed by ");
    kept(&c, d2, "daily 2026-12-02");
    kept(&c, d1b, "needed by ");
    kept(&c, d1a, "needed by ");
    kept(&c, f, "needed by ");
    r.keep_daily = 3;
    decide(&c, &r, utc(2026, 12, 10, 0, 0));
    kept(&c, d1b, "daily 2026-12-01");
    assert_null(strstr(get(&c, d1a)->reason, "daily"));
    kept(&c, f, "needed by ");
    r.keep_daily = 4;
    decide(&c, &r, utc(2026, 12, 10, 0, 0));
    kept(&c, f, "daily 2026-11-30");
}

static void test_weekly_and_monthly_periods(void **state)
{
    (void)state;
    struct cat c = {0};
    char a[32], b[32], d[32], e[32], g[32], h[32];
    /* Fulls only: no dependency keeps anything. 2026-12-31 is a Thursday (ISO week
     * 2026-W53, like Friday 2027-01-01 and Sunday 01-03); Monday 2027-01-04 starts
     * 2027-W01. */
    snprintf(a, sizeof a, "%s", add(&c, BACKUP_FULL, NULL, utc(2026, 12, 28, 9, 0), NULL));
    snprintf(b, sizeof b, "%s", add(&c, BACKUP_FULL, NULL, utc(2026, 12, 31, 23, 0), NULL));
    snprintf(d, sizeof d, "%s", add(&c, BACKUP_FULL, NULL, utc(2027, 1, 1, 1, 0), NULL));
    snprintf(e, sizeof e, "%s", add(&c, BACKUP_FULL, NULL, utc(2027, 1, 3, 23, 59), NULL));
    snprintf(g, sizeof g, "%s", add(&c, BACKUP_FULL, NULL, utc(2027, 1, 4, 0, 0), NULL));
    snprintf(h, sizeof h, "%s", add(&c, BACKUP_FULL, NULL, utc(2027, 2, 1, 0, 0), NULL));
    struct retention r = {.keep_weekly = 3};
    decide(&c, &r, utc(2027, 3, 1, 0, 0));
    kept(&c, h, "weekly 2027-W05");
    kept(&c, g, "weekly 2027-W01");
    kept(&c, e, "weekly 2026-W53");
    expired(&c, d);
    expired(&c, b);
    expired(&c, a);

    memset(&r, 0, sizeof r);
    r.keep_monthly = 3;
    decide(&c, &r, utc(2027, 3, 1, 0, 0));
    kept(&c, h, "monthly 2027-02");
    kept(&c, g, "monthly 2027-01");
    kept(&c, b, "monthly 2026-12"); /* the newest of December, across the month's end */
    expired(&c, a);
    expired(&c, d);
    expired(&c, e);

    /* Several rules: a backup kept by each names each. */
    r.keep_weekly = 1;
    r.keep_daily = 1;
    decide(&c, &r, utc(2027, 3, 1, 0, 0));
    kept(&c, h, "daily 2027-02-01");
    kept(&c, h, "weekly 2027-W05");
    kept(&c, h, "monthly 2027-02");
}

static void test_iso_week_numbers(void **state)
{
    (void)state;
    /* Known ISO weeks: 2021-01-03 is 2020-W53; 2024-12-30 is 2025-W01; 2026-01-01 is
     * 2026-W01 (a Thursday). */
    static const struct {
        int y, m, d;
        const char *week;
    } cases[] = {{2021, 1, 3, "2020-W53"}, {2021, 1, 4, "2021-W01"},   {2024, 12, 30, "2025-W01"},
                 {2026, 1, 1, "2026-W01"}, {2025, 12, 28, "2025-W52"}, {1970, 1, 1, "1970-W01"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cat c = {0};
        struct retention r = {.keep_weekly = 1};
        char want[32];
        const char *id =
            add(&c, BACKUP_FULL, NULL, utc(cases[i].y, cases[i].m, cases[i].d, 12, 0), NULL);
        char idc[32];
        snprintf(idc, sizeof idc, "%s", id);
        decide(&c, &r, utc(2030, 1, 1, 0, 0));
        snprintf(want, sizeof want, "weekly %s", cases[i].week);
        kept(&c, idc, want);
    }
}

static void test_newest_of_each_source(void **state)
{
    (void)state;
    struct cat c = {0};
    int64_t t = utc(2026, 6, 1, 0, 0);
    char a1[32], a2[32], b1[32], b2[32], b3[32];
    snprintf(a1, sizeof a1, "%s", add(&c, BACKUP_FULL, NULL, t, "A"));
    snprintf(b1, sizeof b1, "%s", add(&c, BACKUP_FULL, NULL, t + HOUR, "B"));
    snprintf(b2, sizeof b2, "%s", add(&c, BACKUP_FULL, NULL, t + 2 * HOUR, "B"));
    snprintf(b3, sizeof b3, "%s", add(&c, BACKUP_INCREMENTAL, b1, t + 3 * HOUR, "B"));
    snprintf(a2, sizeof a2, "%s", add(&c, BACKUP_FULL, NULL, t + 4 * HOUR, "A"));
    struct retention r = {.keep_full = 1};
    decide(&c, &r, t + DAY);
    kept(&c, a2, "keep-full #1");
    expired(&c, a1);
    /* B's newest (an incremental on b1) and its newest full b2: what a backup of B
     * running now chains to. */
    kept(&c, b3, "newest of its source");
    kept(&c, b1, "needed by ");
    kept(&c, b2, "newest full of its source");
}

static void test_refuses_to_keep_nothing(void **state)
{
    (void)state;
    struct cat c = {0};
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int64_t now = utc(2026, 12, 3, 0, 0);
    char f[32];
    snprintf(f, sizeof f, "%s", add(&c, BACKUP_FULL, NULL, now - 3 * DAY, NULL));
    add(&c, BACKUP_INCREMENTAL, f, now - 2 * DAY, NULL);
    struct retention r = {.keep_within_ms = HOUR};
    assert_int_equal(expireDecide(&r, now, c.v, c.n, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "keeps no backup"));
    assert_non_null(strstr(errmsg, "nothing deleted"));

    /* keep_full with no full backup readable. */
    struct cat d = {0};
    add(&d, BACKUP_INCREMENTAL, "20260101T000000000Z-0001-dead", now - DAY, NULL);
    struct retention rf = {.keep_full = 1};
    assert_int_equal(expireDecide(&rf, now, d.v, d.n, errmsg), CAIRN_EINVAL);
    assert_non_null(strstr(errmsg, "no full backup"));
}

static void test_empty_policy_and_damaged(void **state)
{
    (void)state;
    struct cat c = {0};
    int64_t now = utc(2026, 12, 3, 0, 0);
    char f[32], g[32], bad[32];
    snprintf(f, sizeof f, "%s", add(&c, BACKUP_FULL, NULL, now - 3 * DAY, NULL));
    snprintf(bad, sizeof bad, "%s", add(&c, BACKUP_FULL, NULL, now - 2 * DAY, NULL));
    c.v[c.n - 1].damaged = true;
    c.v[c.n - 1].type = 0;
    snprintf(g, sizeof g, "%s", add(&c, BACKUP_FULL, NULL, now - DAY, NULL));
    struct retention none = {0};
    assert_true(retentionIsEmpty(&none));
    decide(&c, &none, now);
    for (size_t i = 0; i < c.n; i++) {
        kept(&c, c.v[i].id, "no retention rule");
    }
    struct retention r = {.keep_full = 1};
    decide(&c, &r, now);
    kept(&c, g, "keep-full #1");
    kept(&c, bad, "damaged");
    expired(&c, f);
}

/* A kept backup whose chain runs through a damaged one (a flipped byte in its trailer, a
 * read that failed): the damaged one stays, and so do its ancestors, which it and every
 * kept backup after it need. Its header known (expire.c reads it), the chain is
 * followed; not known, every older backup may be an ancestor and stays. */
static void test_chain_through_a_damaged_backup(void **state)
{
    (void)state;
    int64_t now = utc(2026, 12, 3, 0, 0);
    for (int header = 0; header < 2; header++) {
        struct cat c = {0};
        char f1[32], i1[32], bad[32], i3[32], f2[32];
        snprintf(f1, sizeof f1, "%s", add(&c, BACKUP_FULL, NULL, now - 5 * DAY, NULL));
        snprintf(i1, sizeof i1, "%s", add(&c, BACKUP_INCREMENTAL, f1, now - 4 * DAY, NULL));
        snprintf(bad, sizeof bad, "%s", add(&c, BACKUP_INCREMENTAL, i1, now - 3 * DAY, NULL));
        c.v[c.n - 1].damaged = true;
        c.v[c.n - 1].created_ms = 0;
        c.v[c.n - 1].source[0] = '\0';
        if (!header) {
            c.v[c.n - 1].type = 0;
            c.v[c.n - 1].parent_id[0] = '\0';
        }
        snprintf(i3, sizeof i3, "%s", add(&c, BACKUP_INCREMENTAL, bad, now - 2 * HOUR, NULL));
        snprintf(f2, sizeof f2, "%s", add(&c, BACKUP_FULL, NULL, now - HOUR, NULL));
        struct retention r = {.keep_within_ms = 3 * HOUR};
        decide(&c, &r, now);
        kept(&c, i3, "not judged"); /* restores only once bad is mended */
        kept(&c, f2, "within");
        kept(&c, bad, "damaged");
        kept(&c, i1, header ? "needed by" : "through damaged");
        kept(&c, f1, header ? "needed by" : "through damaged");
    }
}

/* A backup whose last verification failed stays, but fills no rule: keep-full 1 and
 * keep-daily 1 keep the newest backup that may still restore, with its chain. */
static void test_a_failed_verification_fills_no_rule(void **state)
{
    (void)state;
    int64_t now = utc(2026, 12, 3, 12, 0);
    struct cat c = {0};
    char f1[32], i1[32], f2[32], old[32];
    snprintf(old, sizeof old, "%s", add(&c, BACKUP_FULL, NULL, now - 3 * DAY, NULL));
    snprintf(f1, sizeof f1, "%s", add(&c, BACKUP_FULL, NULL, now - 3 * HOUR, NULL));
    snprintf(i1, sizeof i1, "%s", add(&c, BACKUP_INCREMENTAL, f1, now - 2 * HOUR, NULL));
    snprintf(f2, sizeof f2, "%s", add(&c, BACKUP_FULL, NULL, now - HOUR, NULL));
    c.v[c.n - 1].failed = true;
    struct retention rf = {.keep_full = 1};
    decide(&c, &rf, now);
    kept(&c, f2, "verification failed");
    kept(&c, f1, "keep-full #1");
    kept(&c, i1, "chain of keep-full #1");
    expired(&c, old);
    struct retention rd = {.keep_daily = 1};
    decide(&c, &rd, now);
    kept(&c, f2, "verification failed");
    kept(&c, i1, "daily");
    kept(&c, f1, "needed by");
    expired(&c, old);
}

/* A backup whose chain does not restore (an ancestor failed its verification, or cannot
 * be read) fills no rule either: the older backups that still restore are what a rule
 * keeps, not deleted for a newer one that is worth nothing. When no rule keeps one that
 * restores, the expiry is refused. */
static void test_a_broken_chain_fills_no_rule(void **state)
{
    (void)state;
    int64_t now = utc(2026, 12, 3, 12, 0);
    for (int how = 0; how < 2; how++) {
        struct cat c = {0};
        char errmsg[CAIRN_ERRMSG_SIZE] = "";
        char f1[32], f2[32], i3[32];
        snprintf(f1, sizeof f1, "%s", add(&c, BACKUP_FULL, NULL, now - 10 * DAY, NULL));
        snprintf(f2, sizeof f2, "%s", add(&c, BACKUP_FULL, NULL, now - 2 * HOUR, NULL));
        if (how == 0) {
            c.v[c.n - 1].failed = true;
        } else {
            c.v[c.n - 1].damaged = true;
            c.v[c.n - 1].created_ms = 0;
        }
        snprintf(i3, sizeof i3, "%s", add(&c, BACKUP_INCREMENTAL, f2, now - HOUR, NULL));
        struct retention rd = {.keep_daily = 1};
        decide(&c, &rd, now);
        kept(&c, f1, "daily");
        kept(&c, i3, "not judged");
        kept(&c, f2, NULL);
        /* Within 7 days is only what does not restore: nothing that does would stay. */
        struct retention rw = {.keep_within_ms = 7 * DAY};
        assert_int_equal(expireDecide(&rw, now, c.v, c.n, errmsg), CAIRN_EINVAL);
        assert_non_null(strstr(errmsg, "keeps no backup"));
        assert_non_null(strstr(errmsg, f1));
    }
}

static void test_unsorted_and_broken_chains(void **state)
{
    (void)state;
    struct cat c = {0};
    int64_t now = utc(2026, 12, 3, 0, 0);
    char f[32], orphan[32];
    snprintf(f, sizeof f, "%s", add(&c, BACKUP_FULL, NULL, now - 3 * DAY, NULL));
    /* A parent that is not there any more (the chain is broken already). */
    snprintf(orphan, sizeof orphan, "%s",
             add(&c, BACKUP_INCREMENTAL, "20200101T000000000Z-0001-dead", now - 2 * DAY, "x"));
    add(&c, BACKUP_FULL, NULL, now - DAY, NULL);
    /* Given out of order: sorted by id. */
    struct expire_item tmp = c.v[0];
    c.v[0] = c.v[2];
    c.v[2] = tmp;
    struct retention r = {.keep_within_ms = 36 * HOUR};
    decide(&c, &r, now);
    for (size_t i = 1; i < c.n; i++) {
        assert_true(strcmp(c.v[i - 1].id, c.v[i].id) < 0);
    }
    expired(&c, f);
    kept(&c, orphan, "newest of its source");
}

static void test_json(void **state)
{
    (void)state;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct retention r;
    json_error_t jerr;
    json_t *o = json_loads("{\"keep_full\":2,\"keep_within\":\"7d\",\"keep_daily\":7,"
                           "\"keep_weekly\":4,\"keep_monthly\":6}",
                           0, &jerr);
    assert_int_equal(retentionFromJson(o, "retention", &r, errmsg), 0);
    assert_int_equal(r.keep_full, 2);
    assert_int_equal(r.keep_within_ms, 7 * DAY);
    assert_int_equal(r.keep_daily, 7);
    assert_int_equal(r.keep_weekly, 4);
    assert_int_equal(r.keep_monthly, 6);
    json_t *back = retentionJson(&r);
    assert_true(json_equal(back, o));
    json_decref(back);
    json_decref(o);

    o = json_object();
    assert_int_equal(retentionFromJson(o, "retention", &r, errmsg), 0);
    assert_true(retentionIsEmpty(&r));
    json_decref(o);

    static const struct {
        const char *json;
        const char *want[3];
    } bad[] = {
        {"{\"keep_fulls\":2}", {"retention: ", "unknown key \"keep_fulls\"", "keep_full"}},
        {"{\"keep_within\":\"7x\"}", {"retention: ", "keep_within", "not \"7x\""}},
        {"{\"keep_within\":\"0d\"}", {"keep_within", "\"0d\"", "2w"}},
        {"{\"keep_within\":\"d\"}", {"keep_within", "\"d\"", NULL}},
        {"{\"keep_within\":\"7 d\"}", {"keep_within", NULL, NULL}},
        {"{\"keep_within\":7}", {"keep_within must be a duration", NULL, NULL}},
        {"{\"keep_daily\":-1}", {"retention: keep_daily is -1", "0 to", NULL}},
        {"{\"keep_weekly\":1.5}", {"keep_weekly must be a whole number", NULL, NULL}},
        {"{\"keep_monthly\":\"3\"}", {"keep_monthly must be a whole number", NULL, NULL}},
        {"[1]", {"retention: expected an object", NULL, NULL}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = json_loads(bad[i].json, JSON_DECODE_ANY, &jerr);
        assert_non_null(o);
        errmsg[0] = '\0';
        assert_int_equal(retentionFromJson(o, "retention", &r, errmsg), CAIRN_EINVAL);
        for (size_t k = 0; k < 3 && bad[i].want[k] != NULL; k++) {
            if (strstr(errmsg, bad[i].want[k]) == NULL) {
                fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].json, errmsg, bad[i].want[k]);
            }
        }
        json_decref(o);
    }

    static const struct {
        const char *s;
        int64_t ms;
    } durations[] = {{"30s", 30000},  {"15m", 900000},  {"1h", HOUR},
                     {"7d", 7 * DAY}, {"2w", 14 * DAY}, {"10d", 10 * DAY}};
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        int64_t ms = 0;
        assert_int_equal(retentionParseDuration(durations[i].s, &ms), 0);
        assert_int_equal(ms, durations[i].ms);
    }
    static const char *const wrong[] = {"", "7", "d", "-1d", "07d", "1y", "1dd", "99999999999d"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        int64_t ms;
        if (retentionParseDuration(wrong[i], &ms) == 0) {
            fail_msg("duration \"%s\" accepted", wrong[i]);
        }
    }
}

/* ---- one expiry of a real repository ---- */

static int rmOne(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void sql(const char *db, const char *stmt)
{
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, stmt, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
}

static void backup(struct repo *r, const char *db, int type, uint64_t index,
                   struct backup_info *out)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct backup_source src = {0};
    struct backup_options opt = {0};
    src.fd = open(db, O_RDONLY);
    assert_true(src.fd >= 0);
    src.source = "unit";
    src.raft_index = index;
    opt.type = type;
    if (backupCreateIn(r, &src, &opt, out, errmsg) != 0) {
        fail_msg("backup: %s", errmsg);
    }
    close(src.fd);
}

/* A segment of timeline tl covering [first, last] with one entry at last. */
static void segment(struct repo *r, const char *tl, uint64_t first, uint64_t last,
                    unsigned char prev[BACKUP_DIGEST_SIZE], bool has_prev)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char name[ARCSEG_NAME_SIZE];
    unsigned char cmd[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct arcseg_entry e = {
        .index = last, .term = 1, .time_ms = 1000, .len = sizeof cmd, .bytes = cmd};
    struct repo_writer *w;
    unsigned char *obj;
    size_t len;
    assert_int_equal(
        arcsegEncode(tl, first, has_prev ? prev : NULL, &e, 1, &obj, &len, prev, errmsg), 0);
    arcsegObjectName(tl, first, name);
    assert_int_equal(repoCreate(r, name, &w, errmsg), 0);
    assert_int_equal(repoWrite(w, obj, len, errmsg), 0);
    assert_int_equal(repoCommit(w, errmsg), 0);
    free(obj);
}

static bool exists(struct repo *r, const char *name)
{
    struct repo_reader rd;
    char errmsg[CAIRN_ERRMSG_SIZE];
    if (repoOpenRead(r, name, &rd, errmsg) != 0) {
        return false;
    }
    repoCloseRead(&rd);
    return true;
}

static void test_expire_repository(void **state)
{
    (void)state;
    char dir[] = "/tmp/cairn-test-expire-XXXXXX";
    char db[PATH_MAX], repoDir[PATH_MAX], name[128], errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct backup_info f1, i1, f2, i2;
    struct expire_report rep;
    struct repo *r;
    unsigned char prev[BACKUP_DIGEST_SIZE] = {0};
    char tl[ARCSEG_TIMELINE_SIZE], seg[4][ARCSEG_NAME_SIZE];

    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/db.sqlite", dir);
    snprintf(repoDir, sizeof repoDir, "%s/repo", dir);
    assert_int_equal(repoOpen(repoDir, &r, errmsg), 0);
    sql(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    backup(r, db, BACKUP_FULL, 10, &f1);
    sql(db, "INSERT INTO t VALUES (2);");
    backup(r, db, BACKUP_INCREMENTAL, 20, &i1);
    sql(db, "INSERT INTO t VALUES (3);");
    backup(r, db, BACKUP_FULL, 30, &f2);
    sql(db, "INSERT INTO t VALUES (4);");
    backup(r, db, BACKUP_INCREMENTAL, 40, &i2);
    assert_int_equal(repoWriteVerifiedIn(r, &i1, BACKUP_VERIFIED, 1, errmsg), 0);
    /* A sidecar whose backup is gone, as an expiry killed between the two removals
     * leaves it. */
    assert_int_equal(repoPut(r, "20200101T000000000Z-0001-dead.verified", "{}", 2, errmsg), 0);

    arcsegTimelineName(11, f1.digest, tl);
    static const uint64_t ranges[4][2] = {{11, 20}, {21, 30}, {31, 40}, {41, 50}};
    for (int k = 0; k < 4; k++) {
        segment(r, tl, ranges[k][0], ranges[k][1], prev, k > 0);
        arcsegObjectName(tl, ranges[k][0], seg[k]);
    }

    struct retention pol = {.keep_full = 1};
    /* A dry run: the report, nothing deleted. */
    assert_int_equal(backupExpire(r, &pol, repoNowMs(), true, &rep, errmsg), 0);
    assert_int_equal(rep.n, 4);
    assert_int_equal(rep.expired, 2);
    assert_int_equal(rep.removed, 0);
    assert_int_equal(rep.nsegs, 4);
    assert_int_equal(rep.segs_expired, 2);
    assert_int_equal(rep.sidecars_removed, 1);
    assert_false(rep.segs[0].keep);
    assert_false(rep.segs[1].keep);
    assert_true(rep.segs[2].keep);
    assert_non_null(strstr(rep.segs[2].reason, "needed to roll forward from"));
    assert_true(rep.segs[3].keep);
    json_t *doc = expireReportJson(&rep);
    assert_non_null(doc);
    assert_int_equal(json_array_size(json_object_get(doc, "backups")), 4);
    assert_true(json_is_true(json_object_get(doc, "dry_run")));
    json_decref(doc);
    expireReportFree(&rep);
    snprintf(name, sizeof name, "%s.cbk", f1.id);
    assert_true(exists(r, name));
    assert_true(exists(r, seg[0]));

    assert_int_equal(backupExpire(r, &pol, repoNowMs(), false, &rep, errmsg), 0);
    assert_int_equal(rep.removed, 2);
    assert_int_equal(rep.segs_removed, 2);
    assert_int_equal(rep.sidecars_removed, 1);
    expireReportFree(&rep);
    snprintf(name, sizeof name, "%s.cbk", f1.id);
    assert_false(exists(r, name));
    snprintf(name, sizeof name, "%s.cbk", i1.id);
    assert_false(exists(r, name));
    snprintf(name, sizeof name, "%s.verified", i1.id);
    assert_false(exists(r, name));
    assert_false(exists(r, "20200101T000000000Z-0001-dead.verified"));
    snprintf(name, sizeof name, "%s.cbk", f2.id);
    assert_true(exists(r, name));
    snprintf(name, sizeof name, "%s.cbk", i2.id);
    assert_true(exists(r, name));
    assert_false(exists(r, seg[0]));
    assert_false(exists(r, seg[1]));
    assert_true(exists(r, seg[2]));
    assert_true(exists(r, seg[3]));

    /* What remains verifies, and the timeline still walks (from segment 3). */
    assert_int_equal(backupVerifyIn(r, i2.id, false, NULL, NULL, errmsg), 0);
    {
        struct arcseg_info *segs;
        struct arcseg_timeline *tls;
        size_t n, ntl;
        assert_int_equal(arcsegList(r, &segs, &n, errmsg), 0);
        assert_int_equal(arcsegWalk(r, segs, n, true, &tls, &ntl, errmsg), 0);
        assert_int_equal(ntl, 1);
        assert_string_equal(tls[0].problem, "");
        assert_int_equal(tls[0].start, 31);
        assert_int_equal(tls[0].head, 50);
        free(tls);
        free(segs);
    }
    /* A second run finds nothing more to do. */
    assert_int_equal(backupExpire(r, &pol, repoNowMs(), false, &rep, errmsg), 0);
    assert_int_equal(rep.expired, 0);
    assert_int_equal(rep.segs_expired, 0);
    expireReportFree(&rep);

    repoClose(r);
    nftw(dir, rmOne, 8, FTW_DEPTH | FTW_PHYS);
}

/* A damaged backup is kept for an operator to mend, and so are the segments it would
 * roll forward with: with its header readable (the damage is in its footer), it is a
 * base of the timeline like any kept backup, and the segments after its index stay. */
static void test_a_kept_damaged_backup_keeps_its_segments(void **state)
{
    (void)state;
    char dir[] = "/tmp/cairn-test-expire-XXXXXX";
    char db[PATH_MAX], repoDir[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct backup_info f1, f2, f3;
    struct expire_report rep;
    struct repo *r;
    unsigned char prev[BACKUP_DIGEST_SIZE] = {0};
    char tl[ARCSEG_TIMELINE_SIZE];

    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/db.sqlite", dir);
    snprintf(repoDir, sizeof repoDir, "%s/repo", dir);
    assert_int_equal(repoOpen(repoDir, &r, errmsg), 0);
    sql(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    backup(r, db, BACKUP_FULL, 10, &f1);
    sql(db, "INSERT INTO t VALUES (2);");
    backup(r, db, BACKUP_FULL, 30, &f2);
    sql(db, "INSERT INTO t VALUES (3);");
    backup(r, db, BACKUP_FULL, 40, &f3);
    {
        /* A byte of f2's footer: its header still reads. */
        int fd = open(f2.path, O_RDWR);
        off_t end;
        unsigned char b;
        assert_true(fd >= 0);
        end = lseek(fd, 0, SEEK_END);
        assert_int_equal(pread(fd, &b, 1, end - 33), 1);
        b ^= 0xFF;
        assert_int_equal(pwrite(fd, &b, 1, end - 33), 1);
        close(fd);
    }
    arcsegTimelineName(11, f1.digest, tl);
    static const uint64_t ranges[4][2] = {{11, 20}, {21, 30}, {31, 40}, {41, 50}};
    for (int k = 0; k < 4; k++) {
        segment(r, tl, ranges[k][0], ranges[k][1], prev, k > 0);
    }
    struct retention pol = {.keep_full = 1};
    assert_int_equal(backupExpire(r, &pol, repoNowMs(), true, &rep, errmsg), 0);
    assert_int_equal(rep.n, 3);
    assert_true(rep.items[1].damaged);
    assert_true(rep.items[1].keep);
    assert_false(rep.items[0].keep);
    assert_true(rep.items[2].keep);
    assert_int_equal(rep.nsegs, 4);
    assert_false(rep.segs[0].keep);
    assert_false(rep.segs[1].keep);
    if (!rep.segs[2].keep) {
        fail_msg("segment 31-40 expired (%s): damaged %s at index 30 is kept", rep.segs[2].reason,
                 f2.id);
    }
    assert_non_null(strstr(rep.segs[2].reason, f2.id));
    assert_true(rep.segs[3].keep);
    expireReportFree(&rep);
    repoClose(r);
    nftw(dir, rmOne, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_full),
        cmocka_unit_test(test_keep_within_keeps_ancestors),
        cmocka_unit_test(test_daily_across_days),
        cmocka_unit_test(test_weekly_and_monthly_periods),
        cmocka_unit_test(test_iso_week_numbers),
        cmocka_unit_test(test_newest_of_each_source),
        cmocka_unit_test(test_refuses_to_keep_nothing),
        cmocka_unit_test(test_empty_policy_and_damaged),
        cmocka_unit_test(test_chain_through_a_damaged_backup),
        cmocka_unit_test(test_a_failed_verification_fills_no_rule),
        cmocka_unit_test(test_a_broken_chain_fills_no_rule),
        cmocka_unit_test(test_a_kept_damaged_backup_keeps_its_segments),
        cmocka_unit_test(test_unsorted_and_broken_chains),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_expire_repository),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
