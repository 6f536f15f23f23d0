/* Five-field cron expressions: parsing and the next fire time (cron.h). The search
 * walks forward from the minute after the given time, skipping a whole month, day or
 * hour whenever that field does not match, so it takes at most a few thousand steps
 * even for a rare expression. In a zone it walks the zone's wall-clock time and maps
 * each match to an instant with the zone's rules (tz.h). Pure code: any thread. */
#define _GNU_SOURCE
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "tz.h"

enum { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW };

static const struct field_def {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] means lo + i; NULL: numbers only */
} fields[] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},
    {"month", 1, 12,
     (const char *const[]){"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                           "NOV", "DEC", NULL}},
    {"day-of-week", 0, 7,
     (const char *const[]){"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL}},
};

/* A number or a name at *p; advances *p. */
static int parseValue(const struct field_def *f, const char *field, const char **p, int *out,
                      char *errmsg)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s)) {
            v = v * 10 + (*s - '0');
            if (v > 1000) {
                break;
            }
            s++;
        }
        if (v < f->lo || v > f->hi) {
            errorf(errmsg, "%s field \"%s\": %ld is out of range (%d-%d)", f->name, field, v, f->lo,
                   f->hi);
            return CAIRN_EINVAL;
        }
        *out = (int)v;
        *p = s;
        return 0;
    }
    if (f->names != NULL && isalpha((unsigned char)*s)) {
        char word[8];
        size_t n = 0;
        while (isalpha((unsigned char)s[n]) && n < sizeof word - 1) {
            word[n] = (char)toupper((unsigned char)s[n]);
            n++;
        }
        word[n] = '\0';
        for (int i = 0; f->names[i] != NULL; i++) {
            if (strcmp(word, f->names[i]) == 0 && !isalpha((unsigned char)s[n])) {
                *out = f->lo + i;
                *p = s + n;
                return 0;
            }
        }
        errorf(errmsg, "%s field \"%s\": unknown name \"%.*s\"", f->name, field, (int)n, s);
        return CAIRN_EINVAL;
    }
    errorf(errmsg, "%s field \"%s\": expected a number%s at \"%s\"", f->name, field,
           f->names != NULL ? " or a name" : "", s[0] ? s : "(end)");
    return CAIRN_EINVAL;
}

/* One field (no spaces) into the bit set *bits; *star when it starts with '*'. */
static int parseField(int which, const char *field, uint64_t *bits, bool *star, char *errmsg)
{
    const struct field_def *f = &fields[which];
    const char *p = field;
    *bits = 0;
    *star = field[0] == '*';
    for (;;) {
        int a, b, step = 1;
        int rv;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if ((rv = parseValue(f, field, &p, &a, errmsg)) != 0) {
                return rv;
            }
            b = a;
            if (*p == '-') {
                p++;
                if ((rv = parseValue(f, field, &p, &b, errmsg)) != 0) {
                    return rv;
                }
                if (b < a) {
                    errorf(errmsg, "%s field \"%s\": range %d-%d goes backwards", f->name, field, a,
                           b);
                    return CAIRN_EINVAL;
                }
            } else if (*p == '/') {
                b = f->hi; /* "a/n": from a to the end */
            }
        }
        if (*p == '/') {
            long v = 0;
            p++;
            if (!isdigit((unsigned char)*p)) {
                errorf(errmsg, "%s field \"%s\": a step needs a number after '/'", f->name, field);
                return CAIRN_EINVAL;
            }
            while (isdigit((unsigned char)*p) && v <= 1000) {
                v = v * 10 + (*p++ - '0');
            }
            if (v < 1 || v > f->hi - f->lo + 1) {
                errorf(errmsg, "%s field \"%s\": step %ld is out of range (1-%d)", f->name, field,
                       v, f->hi - f->lo + 1);
                return CAIRN_EINVAL;
            }
            step = (int)v;
        }
        for (int v = a; v <= b; v += step) {
            *bits |= 1ULL << (which == F_DOW && v == 7 ? 0 : v);
        }
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '\0') {
            errorf(errmsg, "%s field \"%s\": unexpected \"%s\"", f->name, field, p);
            return CAIRN_EINVAL;
        }
        return 0;
    }
}

int cronParse(const char *expr, struct cron *out, char *errmsg)
{
    char copy[256];
    char *parts[6];
    int n = 0;
    char *save = NULL;
    uint64_t bits[5];
    bool star[5];
    int rv;

    if (strlen(expr) >= sizeof copy) {
        errorf(errmsg, "cron expression too long (%zu characters)", strlen(expr));
        return CAIRN_EINVAL;
    }
    snprintf(copy, sizeof copy, "%s", expr);
    for (char *t = strtok_r(copy, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
        if (n == 5) {
            errorf(errmsg,
                   "cron expression \"%s\": more than five fields (minute hour "
                   "day-of-month month day-of-week)",
                   expr);
            return CAIRN_EINVAL;
        }
        parts[n++] = t;
    }
    if (n != 5) {
        errorf(errmsg,
               "cron expression \"%s\": %d field%s, expected five (minute hour "
               "day-of-month month day-of-week)",
               expr, n, n == 1 ? "" : "s");
        return CAIRN_EINVAL;
    }
    for (int i = 0; i < 5; i++) {
        if ((rv = parseField(i, parts[i], &bits[i], &star[i], errmsg)) != 0) {
            return rv;
        }
    }
    memset(out, 0, sizeof *out);
    out->minute = bits[F_MINUTE];
    out->hour = (uint32_t)bits[F_HOUR];
    out->dom = (uint32_t)bits[F_DOM];
    out->month = (uint16_t)bits[F_MONTH];
    out->dow = (uint8_t)bits[F_DOW];
    out->dom_star = star[F_DOM];
    out->dow_star = star[F_DOW];
    return 0;
}

static bool dayMatches(const struct cron *c, const struct tm *tm)
{
    bool dom = (c->dom >> tm->tm_mday) & 1;
    bool dow = (c->dow >> tm->tm_wday) & 1;
    if (c->dom_star || c->dow_star) {
        return dom && dow; /* a '*' field matches every day: the other decides */
    }
    return dom || dow;
}

/* The first minute strictly after wall-clock second `after` (seconds since 1970-01-01
 * 00:00 of the calendar c is read in) that c matches, or INT64_MIN when none comes
 * within 8 years. */
static int64_t wallNext(const struct cron *c, int64_t after)
{
    /* From the start of the minute after. */
    time_t t = (time_t)((after >= 0 ? after : after - 59) / 60 * 60 + 60);
    struct tm tm;
    int limit_year;
    gmtime_r(&t, &tm);
    limit_year = tm.tm_year + 8;
    while (tm.tm_year < limit_year) {
        if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++; /* timegm normalises a month past December */
            tm.tm_mday = 1;
            tm.tm_hour = 0;
            tm.tm_min = 0;
        } else if (!dayMatches(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = 0;
            tm.tm_min = 0;
        } else if (!((c->hour >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = 0;
        } else if (!((c->minute >> tm.tm_min) & 1)) {
            tm.tm_min++;
        } else {
            return (int64_t)timegm(&tm);
        }
        t = timegm(&tm); /* normalise (and recompute the day of week) */
        gmtime_r(&t, &tm);
    }
    return INT64_MIN;
}

int64_t cronNext(const struct cron *c, const struct tz *zone, int64_t after_ms)
{
    int64_t after = after_ms >= 0 ? after_ms / 1000 : (after_ms - 999) / 1000;
    int64_t wall, limit;
    if (zone == NULL) {
        wall = wallNext(c, after);
        return wall == INT64_MIN ? -1 : wall * 1000;
    }
    /* In a zone: walk the matching wall-clock minutes and map each to the instant it
     * runs at (its first occurrence, or the end of the gap that skipped it), which never
     * goes backwards as the wall-clock time goes forwards; the first that is after
     * after_ms is the answer. The walk starts at the lowest wall-clock time shown at or
     * after after_ms: the wall time then, or lower just after a fall-back. Past the
     * largest offset either way, the wall-clock time is above the one of after_ms. */
    wall = after + tzOffset(zone, after);
    for (int64_t t = tzNextChange(zone, after); t <= after + 2 * TZ_MAX_OFFSET;
         t = tzNextChange(zone, t)) {
        int64_t l = t + tzOffset(zone, t);
        if (l < wall) {
            wall = l;
        }
    }
    wall--; /* wallNext is strictly after */
    limit = after + 8 * 366 * 86400LL;
    for (;;) {
        int64_t first, second;
        wall = wallNext(c, wall);
        if (wall == INT64_MIN || wall - 2 * TZ_MAX_OFFSET > limit) {
            return -1;
        }
        tzLocalToUtc(zone, wall, &first, &second); /* 0, 1 or 2 instants: first is ours */
        if (first * 1000 > after_ms) {
            return first > limit ? -1 : first * 1000;
        }
    }
}
