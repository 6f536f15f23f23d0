/* Time zones: a TZif reader (RFC 8536), POSIX TZ strings, and the offset arithmetic
 * the cron schedules need (tz.h). A zone is a sorted list of transitions (the instant
 * and the offset from then on), the offset before the first, and the footer's rule for
 * the times after the last: a fixed offset, or standard and daylight time with the two
 * yearly changes. Every count and length of a file is checked against the bytes that
 * are there before it is used. Loading reads a file (any thread); the rest is pure. */
#define _GNU_SOURCE
#include "tz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

/* RFC 8536 section 3.2: utoff SHOULD be in -89999 .. 93599 (-25 h .. +26 h). */
#define TZ_UTOFF_MIN (-89999)
#define TZ_UTOFF_MAX 93599
/* Times are kept within this (about 31,000 years either side of 1970), so that no sum
 * of a time, an offset and a rule's day can overflow. */
#define TZ_T_LIMIT ((int64_t)1 << 40)

struct tz_rule {
    char kind;    /* 'J': Jn (1-365, February 29 never counted), 'N': n (0-365), 'M' */
    int n;        /* J and N */
    int m, w, d;  /* M: month 1-12, week 1-5 (5: the last), day of week 0-6 */
    int32_t secs; /* the local time of the change, -167 h .. 167 h */
};

enum { FOOTER_NONE, FOOTER_FIXED, FOOTER_RULE };

struct tz {
    char name[TZ_NAME_MAX + 1];
    size_t n;     /* transitions */
    int64_t *at;  /* n instants, strictly ascending */
    int32_t *off; /* the offset from at[i] on */
    int32_t off0; /* before at[0] (time type 0) */
    int footer;
    int32_t std_off, dst_off;  /* the footer's offsets, seconds east */
    struct tz_rule start, end; /* FOOTER_RULE: daylight time from start to end */
};

/* ---- calendar arithmetic (proleptic Gregorian, days since 1970-01-01) --------------- */

static int64_t floorDiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Howard Hinnant's days_from_civil. */
static int64_t daysFromCivil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floorDiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t yearOfDays(int64_t z)
{
    z += 719468;
    int64_t era = floorDiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

static bool isLeap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* The day (since 1970-01-01) rule r names in year y. */
static int64_t ruleDay(const struct tz_rule *r, int64_t y)
{
    int64_t jan1 = daysFromCivil(y, 1, 1);
    if (r->kind == 'J') {
        return jan1 + r->n - 1 + (isLeap(y) && r->n >= 60 ? 1 : 0);
    }
    if (r->kind == 'N') {
        return jan1 + r->n;
    }
    int64_t first = daysFromCivil(y, r->m, 1);
    int64_t next = r->m == 12 ? daysFromCivil(y + 1, 1, 1) : daysFromCivil(y, r->m + 1, 1);
    int wday = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    int64_t day = first + (r->d - wday + 7) % 7 + (int64_t)(r->w - 1) * 7;
    while (day >= next) {
        day -= 7; /* week 5: the last such day of the month */
    }
    return day;
}

/* ---- the footer's rule ------------------------------------------------------------------- */

struct change {
    int64_t at;
    bool dst; /* daylight time from then on */
};

static int cmpChange(const void *a, const void *b)
{
    const struct change *x = a, *y = b;
    if (x->at != y->at) {
        return x->at < y->at ? -1 : 1;
    }
    return (int)x->dst - (int)y->dst; /* the end of one year's daylight time first */
}

/* The rule's changes of years y0 .. y0 + years - 1, sorted, into out (2 per year). */
static size_t ruleChanges(const struct tz *z, int64_t y0, int years, struct change *out)
{
    size_t k = 0;
    for (int64_t y = y0; y < y0 + years; y++) {
        out[k].at = ruleDay(&z->start, y) * 86400 + z->start.secs - z->std_off;
        out[k++].dst = true;
        out[k].at = ruleDay(&z->end, y) * 86400 + z->end.secs - z->dst_off;
        out[k++].dst = false;
    }
    qsort(out, k, sizeof out[0], cmpChange);
    return k;
}

static int64_t yearAt(const struct tz *z, int64_t t)
{
    return yearOfDays(floorDiv(t + z->std_off, 86400));
}

static int32_t footerOffset(const struct tz *z, int64_t t)
{
    struct change ch[8];
    size_t k;
    bool dst = false;
    if (z->footer != FOOTER_RULE) {
        return z->std_off;
    }
    /* Two years back: a change of the year before may fall after January 1 (a time
     * of up to 167 h), and so may the one before it. */
    k = ruleChanges(z, yearAt(z, t) - 2, 4, ch);
    for (size_t i = 0; i < k && ch[i].at <= t; i++) {
        dst = ch[i].dst;
    }
    return dst ? z->dst_off : z->std_off;
}

static int64_t footerNext(const struct tz *z, int64_t t)
{
    struct change ch[8];
    size_t k;
    if (z->footer != FOOTER_RULE) {
        return INT64_MAX;
    }
    k = ruleChanges(z, yearAt(z, t) - 1, 4, ch);
    for (size_t i = 0; i < k; i++) {
        if (ch[i].at > t && footerOffset(z, ch[i].at) != footerOffset(z, ch[i].at - 1)) {
            return ch[i].at;
        }
    }
    return INT64_MAX; /* daylight time all year (or never): no change */
}

/* ---- offsets ------------------------------------------------------------------------------- */

static int64_t clampT(int64_t t)
{
    return t < -TZ_T_LIMIT ? -TZ_T_LIMIT : t > TZ_T_LIMIT ? TZ_T_LIMIT : t;
}

int32_t tzOffset(const struct tz *z, int64_t t)
{
    size_t lo = 0, hi = z->n;
    t = clampT(t);
    if (z->footer != FOOTER_NONE && (z->n == 0 || t >= z->at[z->n - 1])) {
        return footerOffset(z, t);
    }
    if (z->n == 0 || t < z->at[0]) {
        return z->off0;
    }
    while (hi - lo > 1) { /* the last at[i] <= t */
        size_t mid = lo + (hi - lo) / 2;
        if (z->at[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return z->off[lo];
}

int64_t tzNextChange(const struct tz *z, int64_t t)
{
    size_t lo = 0, hi = z->n;
    if (t >= TZ_T_LIMIT) {
        return INT64_MAX;
    }
    t = clampT(t);
    while (lo < hi) { /* the first at[i] > t */
        size_t mid = lo + (hi - lo) / 2;
        if (z->at[mid] <= t) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo; i < z->n; i++) {
        if (tzOffset(z, z->at[i]) != tzOffset(z, z->at[i] - 1)) {
            return z->at[i]; /* a transition that changes only a name or isdst is none */
        }
    }
    if (z->footer == FOOTER_NONE) {
        return INT64_MAX;
    }
    {
        /* Past the range the offsets are told in (a file whose last transition is near
         * it), no change can be seen: none. */
        int64_t next = footerNext(z, z->n > 0 && z->at[z->n - 1] > t ? z->at[z->n - 1] : t);
        return next >= TZ_T_LIMIT ? INT64_MAX : next;
    }
}

int tzLocalToUtc(const struct tz *z, int64_t local, int64_t *first, int64_t *second)
{
    /* Every instant at which `local` can occur lies within the largest offset of it;
     * walk the spans of constant offset across that window. */
    int64_t t = clampT(local) - TZ_MAX_OFFSET - 3600;
    int64_t end = clampT(local) + TZ_MAX_OFFSET + 3600;
    int found = 0;
    int64_t gap_end = -1;
    bool in_gap = false;
    local = clampT(local);
    while (t <= end) {
        int32_t o = tzOffset(z, t);
        int64_t next = tzNextChange(z, t);
        int64_t u = local - o;
        if (u >= t && u < next) {
            if (found == 0) {
                *first = u;
            } else if (found == 1) {
                *second = u;
            }
            found++;
        } else if (next != INT64_MAX && !in_gap && u >= next) {
            /* local lies at or after this span's end in its own offset: skipped if the
             * next span starts, in its offset, after it. */
            int32_t o2 = tzOffset(z, next);
            if (next + o <= local && local < next + o2) {
                in_gap = true;
                gap_end = next;
            }
        }
        if (next == INT64_MAX) {
            break;
        }
        t = next;
    }
    if (found > 0) {
        return found >= 2 ? 2 : 1;
    }
    /* Not found and not in a gap cannot happen with offsets within the window; answer
     * the instant read as UTC shifted by the offset then, the nearest sensible one. */
    *first = in_gap ? gap_end : local - tzOffset(z, local);
    return 0;
}

/* ---- POSIX TZ strings ------------------------------------------------------------------- */

struct posix {
    const char *s; /* the whole string, for messages */
    const char *p;
    char *errmsg;
};

static int posixFail(struct posix *ps, const char *what)
{
    errorf(ps->errmsg, "TZ string \"%.100s\": %s at \"%.40s\"", ps->s, what,
           *ps->p ? ps->p : "(end)");
    return CAIRN_EINVAL;
}

/* A zone abbreviation: three or more letters, or <...> of letters, digits, '+', '-'. */
static int posixName(struct posix *ps, bool *present)
{
    const char *p = ps->p;
    size_t n = 0;
    *present = false;
    if (*p == '<') {
        p++;
        while (isalnum((unsigned char)p[n]) || p[n] == '+' || p[n] == '-') {
            n++;
        }
        if (p[n] != '>') {
            return posixFail(ps, "a quoted zone name needs a closing '>' (letters, digits, "
                                 "'+' and '-' only)");
        }
        if (n < 3) {
            return posixFail(ps, "a zone name needs at least three characters");
        }
        ps->p = p + n + 1;
        *present = true;
        return 0;
    }
    while (isalpha((unsigned char)p[n])) {
        n++;
    }
    if (n == 0) {
        return 0;
    }
    if (n < 3) {
        return posixFail(ps, "a zone name needs at least three letters");
    }
    ps->p = p + n;
    *present = true;
    return 0;
}

/* [+-]hh[:mm[:ss]], hh at most max_h; into *secs (signed as written). */
static int posixTime(struct posix *ps, int max_h, int32_t *secs)
{
    const char *p = ps->p;
    int sign = 1;
    long part[3] = {0, 0, 0};
    if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
    }
    for (int i = 0; i < 3; i++) {
        int digits = 0;
        if (i > 0) {
            if (*p != ':') {
                break;
            }
            p++;
        }
        while (isdigit((unsigned char)*p) && digits < 4) {
            part[i] = part[i] * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || (i > 0 && digits != 2) || isdigit((unsigned char)*p)) {
            ps->p = p;
            return posixFail(ps, i == 0 ? "expected hours"
                                        : "expected two-digit minutes or "
                                          "seconds");
        }
    }
    if (part[0] > max_h || part[1] > 59 || part[2] > 59) {
        char why[64];
        snprintf(why, sizeof why, "a time out of range (hours 0-%d, minutes and seconds 0-59)",
                 max_h);
        return posixFail(ps, why);
    }
    ps->p = p;
    *secs = (int32_t)(sign * (part[0] * 3600 + part[1] * 60 + part[2]));
    return 0;
}

static long posixNumber(const char **p)
{
    long v = 0;
    int digits = 0;
    while (isdigit((unsigned char)**p) && digits < 4) {
        v = v * 10 + (*(*p)++ - '0');
        digits++;
    }
    return digits == 0 ? -1 : v;
}

/* Jn, n or Mm.w.d, then an optional /time (default 02:00). */
static int posixRule(struct posix *ps, struct tz_rule *r)
{
    memset(r, 0, sizeof *r);
    if (*ps->p == 'J') {
        ps->p++;
        r->kind = 'J';
        r->n = (int)posixNumber(&ps->p);
        if (r->n < 1 || r->n > 365) {
            return posixFail(ps, "Jn needs a day 1-365");
        }
    } else if (*ps->p == 'M') {
        long m, w, d;
        ps->p++;
        r->kind = 'M';
        m = posixNumber(&ps->p);
        if (m < 1 || m > 12 || *ps->p != '.') {
            return posixFail(ps, "Mm.w.d needs a month 1-12 and '.'");
        }
        ps->p++;
        w = posixNumber(&ps->p);
        if (w < 1 || w > 5 || *ps->p != '.') {
            return posixFail(ps, "Mm.w.d needs a week 1-5 and '.'");
        }
        ps->p++;
        d = posixNumber(&ps->p);
        if (d < 0 || d > 6) {
            return posixFail(ps, "Mm.w.d needs a day of week 0-6");
        }
        r->m = (int)m;
        r->w = (int)w;
        r->d = (int)d;
    } else if (isdigit((unsigned char)*ps->p)) {
        r->kind = 'N';
        r->n = (int)posixNumber(&ps->p);
        if (r->n < 0 || r->n > 365) {
            return posixFail(ps, "a day n needs 0-365");
        }
    } else {
        return posixFail(ps, "expected a date (Jn, n or Mm.w.d)");
    }
    r->secs = 7200;
    if (*ps->p == '/') {
        ps->p++;
        return posixTime(ps, 167, &r->secs); /* version 3: -167 h .. 167 h */
    }
    return 0;
}

static int parsePosix(const char *s, struct tz *z, char *errmsg)
{
    struct posix ps = {s, s, errmsg};
    bool present;
    int32_t off;
    int rv;
    if ((rv = posixName(&ps, &present)) != 0) {
        return rv;
    }
    if (!present) {
        return posixFail(&ps, "expected a standard time name (three or more letters, or "
                              "<+03>)");
    }
    if ((rv = posixTime(&ps, 24, &off)) != 0) {
        return rv;
    }
    z->std_off = -off; /* POSIX counts west of Greenwich */
    z->footer = FOOTER_FIXED;
    if ((rv = posixName(&ps, &present)) != 0) {
        return rv;
    }
    if (!present) {
        if (*ps.p != '\0') {
            return posixFail(&ps, "unexpected text after the offset");
        }
        return 0;
    }
    z->dst_off = z->std_off + 3600;
    if (*ps.p != ',' && *ps.p != '\0') {
        if ((rv = posixTime(&ps, 24, &off)) != 0) {
            return rv;
        }
        z->dst_off = -off;
    }
    if (*ps.p != ',') {
        return posixFail(&ps, "daylight time needs its rule (\",start[/time],end[/time]\")");
    }
    ps.p++;
    if ((rv = posixRule(&ps, &z->start)) != 0) {
        return rv;
    }
    if (*ps.p != ',') {
        return posixFail(&ps, "expected ',' and the end of daylight time");
    }
    ps.p++;
    if ((rv = posixRule(&ps, &z->end)) != 0) {
        return rv;
    }
    if (*ps.p != '\0') {
        return posixFail(&ps, "unexpected text after the rule");
    }
    z->footer = FOOTER_RULE;
    return 0;
}

/* ---- TZif ----------------------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_header {
    char version; /* 1, 2, 3 or 4 */
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

/* The header at data[at], and the size of the data block after it (time_size: 4 or
 * 8 bytes a time). */
static int readHeader(const uint8_t *data, size_t len, size_t at, int time_size, const char *origin,
                      const char *which, struct tzif_header *h, uint64_t *block, char *errmsg)
{
    const uint8_t *p = data + at;
    if (len - at < 44) {
        errorf(errmsg, "%s: truncated: the %s header needs 44 bytes at byte %zu, the file has %zu",
               origin, which, at, len - at);
        return CAIRN_ECORRUPT;
    }
    if (memcmp(p, "TZif", 4) != 0) {
        errorf(errmsg, "%s: not a TZif file (no \"TZif\" magic at byte %zu of the %s header)",
               origin, at, which);
        return CAIRN_ECORRUPT;
    }
    if (p[4] == 0) {
        h->version = 1;
    } else if (p[4] >= '2' && p[4] <= '4') {
        h->version = (char)(p[4] - '0');
    } else {
        errorf(errmsg, "%s: unknown TZif version byte 0x%02x (versions 1 to 4 are read)", origin,
               p[4]);
        return CAIRN_ECORRUPT;
    }
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    *block = (uint64_t)h->timecnt * (uint64_t)(time_size + 1) + (uint64_t)h->typecnt * 6 +
             h->charcnt + (uint64_t)h->leapcnt * (uint64_t)(time_size + 4) + h->isstdcnt +
             h->isutcnt;
    if (*block > len - at - 44) {
        errorf(errmsg,
               "%s: truncated: the %s header's counts (%u transitions, %u types, %u "
               "characters of names, %u leap seconds) need %llu bytes of data after byte %zu, "
               "the file has %zu",
               origin, which, h->timecnt, h->typecnt, h->charcnt, h->leapcnt,
               (unsigned long long)*block, at + 44, len - at - 44);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

static struct tz *tzAlloc(const char *name, size_t n)
{
    struct tz *z = calloc(1, sizeof *z + n * (sizeof(int64_t) + sizeof(int32_t)));
    if (z == NULL) {
        return NULL;
    }
    snprintf(z->name, sizeof z->name, "%s", name);
    z->n = n;
    z->at = (int64_t *)(void *)(z + 1);
    z->off = (int32_t *)(void *)(z->at + n);
    return z;
}

int tzParse(const uint8_t *data, size_t len, const char *origin, const char *name, struct tz **out,
            char *errmsg)
{
    struct tzif_header h, h2;
    uint64_t block;
    size_t at = 0;
    int time_size = 4;
    const uint8_t *p, *types, *tt, *chars, *isstd, *isut;
    struct tz *z;
    int rv;

    *out = NULL;
    if ((rv = readHeader(data, len, 0, 4, origin, "first", &h, &block, errmsg)) != 0) {
        return rv;
    }
    if (h.version >= 2) {
        at = 44 + (size_t)block;
        if ((rv = readHeader(data, len, at, 8, origin, "second (64-bit)", &h2, &block, errmsg)) !=
            0) {
            return rv;
        }
        if (h2.version != h.version) {
            errorf(errmsg, "%s: the second header says version %d, the first %d", origin,
                   h2.version, h.version);
            return CAIRN_ECORRUPT;
        }
        h = h2;
        time_size = 8;
    }
    if (h.typecnt == 0 || h.charcnt == 0) {
        errorf(errmsg, "%s: no %s (the header says 0; RFC 8536 requires at least one)", origin,
               h.typecnt == 0 ? "local time types" : "characters of zone names");
        return CAIRN_ECORRUPT;
    }
    if ((h.isutcnt != 0 && h.isutcnt != h.typecnt) ||
        (h.isstdcnt != 0 && h.isstdcnt != h.typecnt)) {
        errorf(errmsg,
               "%s: %u UT/local and %u standard/wall indicators for %u local time types "
               "(each count must be 0 or the number of types)",
               origin, h.isutcnt, h.isstdcnt, h.typecnt);
        return CAIRN_ECORRUPT;
    }
    if (h.leapcnt != 0) {
        errorf(errmsg,
               "%s: has %u leap-second records: zones with leap seconds (\"right/\") are not "
               "supported; use the zone of the same name without \"right/\"",
               origin, h.leapcnt);
        return CAIRN_ECORRUPT;
    }
    p = data + at + 44;
    types = p + (size_t)h.timecnt * (size_t)time_size;
    tt = types + h.timecnt;
    chars = tt + (size_t)h.typecnt * 6;
    isstd = chars + h.charcnt; /* leapcnt is 0 */
    isut = isstd + h.isstdcnt;

    for (uint32_t i = 0; i < h.typecnt; i++) {
        const uint8_t *e = tt + (size_t)i * 6;
        int32_t utoff = (int32_t)be32(e);
        if (utoff < TZ_UTOFF_MIN || utoff > TZ_UTOFF_MAX) {
            errorf(errmsg, "%s: local time type %u: offset %d s is out of range (-25 h to +26 h)",
                   origin, i, utoff);
            return CAIRN_ECORRUPT;
        }
        if (e[4] > 1) {
            errorf(errmsg, "%s: local time type %u: daylight-time flag %u (0 or 1)", origin, i,
                   e[4]);
            return CAIRN_ECORRUPT;
        }
        if (e[5] >= h.charcnt || memchr(chars + e[5], '\0', h.charcnt - e[5]) == NULL) {
            errorf(errmsg,
                   "%s: local time type %u: its name at index %u is not a terminated "
                   "string of the %u characters of names",
                   origin, i, e[5], h.charcnt);
            return CAIRN_ECORRUPT;
        }
        if ((h.isstdcnt && isstd[i] > 1) || (h.isutcnt && isut[i] > 1) ||
            (h.isutcnt && isut[i] == 1 && !(h.isstdcnt && isstd[i] == 1))) {
            errorf(errmsg, "%s: local time type %u: bad standard/wall or UT/local indicator",
                   origin, i);
            return CAIRN_ECORRUPT;
        }
    }
    if ((z = tzAlloc(name, h.timecnt)) == NULL) {
        errorf(errmsg, "%s: out of memory", origin);
        return CAIRN_ENOMEM;
    }
    z->off0 = (int32_t)be32(tt);
    for (uint32_t i = 0; i < h.timecnt; i++) {
        int64_t t = time_size == 8 ? be64(p + (size_t)i * 8) : (int32_t)be32(p + (size_t)i * 4);
        if (i > 0 && t <= z->at[i - 1]) {
            errorf(errmsg, "%s: transition %u (%lld) is not after the one before it (%lld)", origin,
                   i, (long long)t, (long long)z->at[i - 1]);
            goto corrupt;
        }
        if (t < -TZ_T_LIMIT || t > TZ_T_LIMIT) {
            /* zic writes -2^59 as "the big bang"; such a transition only names the type
             * of all earlier time */
            if (i == 0 && t < -TZ_T_LIMIT) {
                t = -TZ_T_LIMIT;
            } else {
                errorf(errmsg, "%s: transition %u at %lld s is out of range", origin, i,
                       (long long)t);
                goto corrupt;
            }
        }
        if (types[i] >= h.typecnt) {
            errorf(errmsg, "%s: transition %u names local time type %u, the file has %u", origin, i,
                   types[i], h.typecnt);
            goto corrupt;
        }
        z->at[i] = t;
        z->off[i] = (int32_t)be32(tt + (size_t)types[i] * 6);
    }

    at = (size_t)(isut + h.isutcnt - data);
    if (h.version >= 2) {
        /* The footer: "\n" TZ-string "\n", and nothing after. */
        const uint8_t *nl;
        char footer[256];
        char why[CAIRN_ERRMSG_SIZE];
        if (at >= len || data[at] != '\n') {
            errorf(errmsg,
                   "%s: truncated: the footer (a TZ string between newlines) is missing "
                   "at byte %zu",
                   origin, at);
            goto corrupt;
        }
        nl = memchr(data + at + 1, '\n', len - at - 1);
        if (nl == NULL) {
            errorf(errmsg, "%s: truncated: the footer's TZ string has no closing newline", origin);
            goto corrupt;
        }
        if ((size_t)(nl - data) + 1 != len) {
            errorf(errmsg, "%s: %zu bytes after the footer", origin, len - (size_t)(nl - data) - 1);
            goto corrupt;
        }
        if ((size_t)(nl - data - at - 1) >= sizeof footer ||
            memchr(data + at + 1, '\0', (size_t)(nl - data - at - 1)) != NULL) {
            errorf(errmsg, "%s: the footer's TZ string is too long or holds a NUL byte", origin);
            goto corrupt;
        }
        memcpy(footer, data + at + 1, (size_t)(nl - data - at - 1));
        footer[nl - data - at - 1] = '\0';
        /* An empty footer: no rule, the last type goes on. */
        if (footer[0] != '\0' && parsePosix(footer, z, why) != 0) {
            errorf(errmsg, "%s: footer: %s", origin, why);
            goto corrupt;
        }
    } else if (at != len) {
        errorf(errmsg, "%s: %zu bytes after the version 1 data", origin, len - at);
        goto corrupt;
    }
    *out = z;
    return 0;
corrupt:
    free(z);
    return CAIRN_ECORRUPT;
}

int tzFromPosix(const char *tzstring, struct tz **out, char *errmsg)
{
    struct tz *z;
    int rv;
    *out = NULL;
    if ((z = tzAlloc(tzstring, 0)) == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    if ((rv = parsePosix(tzstring, z, errmsg)) != 0) {
        free(z);
        return rv;
    }
    z->off0 = z->std_off;
    *out = z;
    return 0;
}

int tzLoadPath(const char *path, const char *name, struct tz **out, char *errmsg)
{
    char origin[PATH_MAX + 32];
    struct stat st;
    uint8_t *data = NULL;
    size_t len = 0;
    int fd, rv;

    *out = NULL;
    snprintf(origin, sizeof origin, "time zone file %s", path);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        int err = errno;
        errorf(errmsg, "%s: %s", origin, strerror(err));
        return err == ENOENT || err == ENOTDIR ? CAIRN_ENOTFOUND : errorFromErrno(err);
    }
    if (fstat(fd, &st) != 0) {
        int err = errno;
        errorf(errmsg, "%s: %s", origin, strerror(err));
        rv = errorFromErrno(err);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errorf(errmsg, "%s: not a regular file%s", origin,
               S_ISDIR(st.st_mode) ? " (a directory: a zone is a file, \"Europe/Paris\")" : "");
        rv = S_ISDIR(st.st_mode) ? CAIRN_ENOTFOUND : CAIRN_ECORRUPT;
        goto out;
    }
    if (st.st_size > TZ_FILE_MAX) {
        errorf(errmsg, "%s: %lld bytes, larger than %d: not a zone file", origin,
               (long long)st.st_size, TZ_FILE_MAX);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if ((data = malloc((size_t)st.st_size + 1)) == NULL) {
        errorf(errmsg, "%s: out of memory", origin);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    for (;;) { /* up to one byte more than fstat said: a file that grew is noticed */
        ssize_t got = read(fd, data + len, (size_t)st.st_size + 1 - len);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            int err = errno;
            errorf(errmsg, "%s: read: %s", origin, strerror(err));
            rv = errorFromErrno(err);
            goto out;
        }
        if (got == 0) {
            break;
        }
        len += (size_t)got;
        if (len > (size_t)st.st_size) {
            errorf(errmsg, "%s: changed while being read", origin);
            rv = CAIRN_EIO;
            goto out;
        }
    }
    rv = tzParse(data, len, origin, name, out, errmsg);
out:
    free(data);
    close(fd);
    return rv;
}

/* An IANA name: letters, digits and "/_-+.", components neither empty nor "." nor
 * "..", not starting with '/' (nor '-', which no zone does and a file name should not). */
static bool validName(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || name[0] == '-' || name[n - 1] == '/') {
        return false;
    }
    for (const char *c = name; *c; c++) {
        if (!isalnum((unsigned char)*c) && strchr("/_-+.", *c) == NULL) {
            return false;
        }
        if (*c == '/' && c[1] == '/') {
            return false;
        }
        if (*c == '.' && (c == name || c[-1] == '/') &&
            (c[1] == '\0' || c[1] == '/' || (c[1] == '.' && (c[2] == '\0' || c[2] == '/')))) {
            return false;
        }
    }
    return strstr(name, "..") == NULL;
}

int tzLoad(const char *name, struct tz **out, char *errmsg)
{
    char path[sizeof TZ_DIR + TZ_NAME_MAX + 2];
    char why[CAIRN_ERRMSG_SIZE];
    struct stat st;
    int rv;

    *out = NULL;
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0 || strcmp(name, "Z") == 0) {
        if ((*out = tzAlloc(name, 0)) == NULL) {
            errorf(errmsg, "time zone \"%s\": out of memory", name);
            return CAIRN_ENOMEM;
        }
        return 0;
    }
    if (!validName(name)) {
        errorf(errmsg,
               "time zone \"%.100s\": not an IANA zone name (like \"Europe/Paris\": letters, "
               "digits, '/', '_', '-', '+' and '.', no \"..\", not starting with '/')",
               name);
        return CAIRN_EINVAL;
    }
    snprintf(path, sizeof path, "%s/%s", TZ_DIR, name);
    rv = tzLoadPath(path, name, out, why);
    if (rv == CAIRN_ENOTFOUND) {
        if (stat(TZ_DIR, &st) != 0) {
            errorf(errmsg,
                   "time zone \"%s\": %s is missing: install the tzdata package (only UTC "
                   "works without it)",
                   name, TZ_DIR);
        } else {
            errorf(errmsg, "time zone \"%s\": unknown zone (%s)", name, why);
        }
    } else if (rv != 0) {
        errorf(errmsg, "time zone \"%s\": %s", name, why);
    }
    return rv;
}

void tzFree(struct tz *z)
{
    free(z);
}

const char *tzName(const struct tz *z)
{
    return z->name;
}
