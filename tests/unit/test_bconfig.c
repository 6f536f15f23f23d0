/* Unit tests of the backup configuration (src/bconfig.c): both shapes, $VAR expansion,
 * every default, the messages that name the key, URL masking and when a schedule is
 * next due (an interval or a cron expression, with and without a previous run). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bconfig.h"
#include "error.h"
#include "reposet.h"

static void repos(struct reposet *rs)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    memset(rs, 0, sizeof *rs);
    assert_int_equal(reposetAdd(rs, NULL, "/srv/backups", errmsg), 0);
    assert_int_equal(reposetAdd(rs, "offsite", "/mnt/offsite", errmsg), 0);
}

static struct bconfig *parseOk(const char *text)
{
    struct reposet rs;
    struct bconfig *c = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE];
    repos(&rs);
    if (bconfigParse(text, strlen(text), "cfg", &rs, &c, errmsg) != 0) {
        fail_msg("%s: %s", text, errmsg);
    }
    return c;
}

static void parseBad(const char *text, const char *needle)
{
    struct reposet rs;
    struct bconfig *c = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    repos(&rs);
    assert_int_equal(bconfigParse(text, strlen(text), "cfg", &rs, &c, errmsg), CAIRN_EINVAL);
    assert_null(c);
    if (strstr(errmsg, needle) == NULL) {
        fail_msg("%s: message \"%s\" lacks \"%s\"", text, errmsg, needle);
    }
}

static void test_full_shape(void **state)
{
    (void)state;
    setenv("BCONFIG_TEST_TOKEN", "tok", 1);
    struct bconfig *c =
        parseOk("{\"repositories\": {\"default\": {\"schedules\": {\"full\": \"0 3 * * 0\", "
                "\"incremental\": \"1h\"}, \"retention\": {\"keep_full\": 4}, \"webhook\": "
                "\"http://h/x?t=${BCONFIG_TEST_TOKEN}&p=$$5\"}, \"/mnt/offsite\": {\"schedules\": "
                "{\"differential\": \"30s\"}, \"from\": \"follower\", \"drill\": \"off\"}}}");
    assert_int_equal(c->n, 2);
    assert_string_equal(c->r[0].name, "default");
    assert_int_equal(c->r[0].which, 0);
    assert_int_equal(c->r[0].sched[BACKUP_FULL].kind, BSCHED_CRON);
    assert_int_equal(c->r[0].sched[BACKUP_INCREMENTAL].kind, BSCHED_INTERVAL);
    assert_int_equal(c->r[0].sched[BACKUP_INCREMENTAL].interval_ms, 3600000);
    assert_int_equal(c->r[0].sched[BACKUP_DIFFERENTIAL].kind, BSCHED_NONE);
    assert_true(c->r[0].has_retention);
    assert_int_equal(c->r[0].retention.keep_full, 4);
    assert_false(c->r[0].from_follower);
    assert_int_equal(c->r[0].drill.kind, BSCHED_INTERVAL); /* the default: daily */
    assert_int_equal(c->r[0].drill.interval_ms, 86400000);
    assert_string_equal(c->r[0].webhook, "http://h/x?t=tok&p=$5");
    /* named by its path */
    assert_string_equal(c->r[1].name, "offsite");
    assert_true(c->r[1].from_follower);
    assert_int_equal(c->r[1].drill.kind, BSCHED_NONE);
    assert_false(c->rqlite_shape);
    bconfigFree(c);
}

static void test_rqlite_shape(void **state)
{
    (void)state;
    struct bconfig *c = parseOk("{\"version\": 1, \"type\": \"file\", \"interval\": \"5m\", "
                                "\"no_compress\": true, \"sub\": {\"path\": \"/mnt/offsite\"}}");
    assert_true(c->rqlite_shape);
    assert_int_equal(c->n, 1);
    assert_string_equal(c->r[0].name, "offsite");
    assert_int_equal(c->r[0].sched[BACKUP_FULL].interval_ms, 300000);
    bconfigFree(c);
    c = parseOk("{\"type\": \"incremental\", \"interval\": \"0 * * * *\"}");
    assert_string_equal(c->r[0].name, "default");
    assert_int_equal(c->r[0].sched[BACKUP_INCREMENTAL].kind, BSCHED_CRON);
    bconfigFree(c);
}

static void test_errors_name_the_key(void **state)
{
    (void)state;
    unsetenv("BCONFIG_TEST_UNSET");
    parseBad("[]", "cfg: expected a JSON object");
    parseBad("{\"repositories\": {}}", "repositories: expected an object naming at least one");
    parseBad("{\"repositories\": {\"nas\": {}}}", "repositories.nas: no repository");
    parseBad("{\"repositories\": {\"default\": {}, \"/srv/backups\": {}}}",
             "repositories./srv/backups: repository 'default' is configured twice");
    parseBad("{\"repositories\": {\"default\": {\"schedules\": {\"full\": 5}}}}",
             "repositories.default.schedules.full: expected a string");
    parseBad("{\"repositories\": {\"default\": {\"schedules\": {\"full\": \"0s\"}}}}",
             "repositories.default.schedules.full: \"0s\" is neither an interval");
    parseBad("{\"repositories\": {\"default\": {\"schedules\": {\"full\": \"400d\"}}}}",
             "at most 366d");
    parseBad("{\"repositories\": {\"default\": {\"schedules\": {\"full\": \"* * * * * *\"}}}}",
             "repositories.default.schedules.full: cron expression \"* * * * * *\": more than");
    parseBad("{\"repositories\": {\"default\": {\"webhook\": \"http://x/$BCONFIG_TEST_UNSET\"}}}",
             "repositories.default.webhook: environment variable BCONFIG_TEST_UNSET is not set");
    parseBad("{\"repositories\": {\"default\": {\"webhook\": \"http://x/${\"}}}",
             "repositories.default.webhook: \"${\" without a variable name");
    parseBad("{\"repositories\": {\"default\": {\"webhook\": \"http://x/$-\"}}}",
             "'$' not followed by a variable name");
    parseBad("{\"repositories\": {\"default\": {\"retention\": 3}}}",
             "repositories.default.retention: expected an object");
    parseBad("{\"interval\": \"1h\", \"sub\": \"nas\"}", "sub: no repository");
    parseBad("{\"interval\": \"1h\", \"type\": \"log\"}", "type: expected \"full\"");
    parseBad("{\"interval\": \"1h\", \"version\": 2}", "version: expected 1");
    parseBad("{\"interval\": \"1h\", \"sub\": {\"bucket\": \"b\"}}", "sub.path: missing");
    parseBad("{\"interval\": \"1h\", \"colour\": 1}", "colour: unknown key");
    parseBad("{\"interval\": \"1h\", \"interval\": \"2h\"}", "not valid JSON");
}

static void expectMask(const char *url, const char *want)
{
    char out[256];
    bconfigMaskUrl(url, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_masking(void **state)
{
    (void)state;
    expectMask("http://alerts.example/hook", "http://alerts.example/hook");
    expectMask("https://u:pw@h:8080/p?token=abc&x=1#frag",
               "https://u:***@h:8080/p?token=***&x=***#frag");
    expectMask("https://u@h/p?flag", "https://u@h/p?flag");
    expectMask("s3://bucket/prefix", "s3://bucket/prefix");
    expectMask("/srv/backups", "/srv/backups");
    char tiny[8];
    bconfigMaskUrl("http://u:pw@h/", tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), 7);
}

static void test_next_due(void **state)
{
    (void)state;
    struct bschedule s;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int64_t day = 86400000;
    int64_t t0 = 1764806400000; /* 2025-12-04T00:00:00Z */
    memset(&s, 0, sizeof s);
    assert_int_equal(bscheduleNext(&s, 0, t0), -1); /* BSCHED_NONE: never */
    s.kind = BSCHED_INTERVAL;
    s.interval_ms = 3600000;
    assert_int_equal(bscheduleNext(&s, -1, t0), t0);                       /* no run yet: at once */
    assert_int_equal(bscheduleNext(&s, t0, t0 + 10), t0 + 3600000);        /* one interval on */
    assert_int_equal(bscheduleNext(&s, t0 - day, t0), t0 - day + 3600000); /* overdue */
    s.kind = BSCHED_CRON;
    assert_int_equal(cronParse("0 3 * * *", &s.cron, errmsg), 0);
    assert_int_equal(bscheduleNext(&s, -1, t0), t0 + 3 * 3600000);             /* its next time */
    assert_int_equal(bscheduleNext(&s, t0 - day, t0), t0 - day + 3 * 3600000); /* overdue */
    int64_t ms;
    assert_int_equal(bconfigParseDuration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(bconfigParseDuration("2w", &ms), 0);
    assert_int_equal(ms, 14 * day);
    assert_int_equal(bconfigParseDuration("1.5h", &ms), -1);
    assert_int_equal(bconfigParseDuration("h", &ms), -1);
    assert_int_equal(bconfigParseDuration("-1s", &ms), -1);
    assert_int_equal(bconfigParseDuration("10", &ms), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_shape),
        cmocka_unit_test(test_rqlite_shape),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_masking),
        cmocka_unit_test(test_next_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
