/* Five-field cron expressions ("0 3 * * 0"), as Vixie cron reads them, for the backup
 * schedules of --backup-config (bconfig.h): minute, hour, day of month, month, day of
 * week; each field `*`, a number, a range `a-b`, a step `*\/n`, `a-b/n` or `a/n` (from a
 * to the field's end), or a comma-separated list of these; months JAN-DEC and days
 * SUN-SAT by name (any case), day of week 0-7 (0 and 7 both Sunday). When both the day
 * of month and the day of week are restricted (neither field starts with `*`), a day
 * matching either matches (Vixie's rule); otherwise both must match.
 *
 * The fields match the wall-clock time of a zone (tz.h; UTC when none is given). Where
 * the zone changes its offset: a time that a spring-forward skips runs once, at the
 * first instant after the gap (as Vixie cron runs the jobs of the skipped hour right
 * after the change); a time that a fall-back repeats runs once, at its first
 * occurrence. So "30 2 * * *" in Europe/Paris runs at 03:00 CEST on the last Sunday of
 * March, and at 02:30 CEST (not again at 02:30 CET) on the last Sunday of October; an
 * hourly "0 * * * *" runs once at 03:00 CEST for the skipped 02:00 and 03:00 in March,
 * and not during the repeated hour in October.
 * Pure code, no state: any thread. */
#ifndef CAIRN_CRON_H
#define CAIRN_CRON_H

#include <stdbool.h>
#include <stdint.h>

#include "tz.h"

struct cron {
    uint64_t minute; /* bit m: minute m matches (0-59) */
    uint32_t hour;   /* bit h (0-23) */
    uint32_t dom;    /* bit d (1-31) */
    uint16_t month;  /* bit m (1-12) */
    uint8_t dow;     /* bit d (0-6, Sunday 0) */
    bool dom_star;   /* the day-of-month field starts with '*' */
    bool dow_star;
};

/* Parse expr into *out: 0, or CAIRN_EINVAL with errmsg (CAIRN_ERRMSG_SIZE) naming the
 * field and what is wrong with it ("day-of-week field \"MON-FRX\": unknown name
 * \"FRX\""). */
int cronParse(const char *expr, struct cron *out, char *errmsg);

/* The first instant strictly after after_ms (Unix ms) at which c runs, read in zone
 * (NULL: UTC), in Unix ms; -1 when none comes within 8 years (a date that never exists:
 * "0 0 30 2 *"). zone stays the caller's. */
int64_t cronNext(const struct cron *c, const struct tz *zone, int64_t after_ms);

#endif
