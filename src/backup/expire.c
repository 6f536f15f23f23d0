/* Retention and expiry (expire.h): the policy decided on a catalog (expireDecide, pure),
 * then applied to a repository through its object (backupExpire): backups deleted
 * leaves first, their sidecars after them, archive segments oldest first, and a last
 * listing that rewrites the catalog index and checks that nothing written meanwhile
 * lost its parent. Any thread. */
#define _GNU_SOURCE
#include "expire.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbk.h"
#include "error.h"
#include "repo.h"

#define SIDECAR_SUFFIX ".verified"
#define MAX_COUNT 1000000u
#define DAY_MS INT64_C(86400000)

/* ---- the policy ---- */

bool retentionIsEmpty(const struct retention *r)
{
    return r->keep_full == 0 && r->keep_within_ms == 0 && r->keep_daily == 0 &&
           r->keep_weekly == 0 && r->keep_monthly == 0;
}

int retentionParseDuration(const char *s, int64_t *ms)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', DAY_MS}, {'w', 7 * DAY_MS}};
    int64_t v = 0;
    const char *p = s;
    if (s == NULL || *p < '1' || *p > '9') {
        return CAIRN_EINVAL;
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > INT64_C(1000000000)) {
            return CAIRN_EINVAL; /* beyond any retention anyone means (and overflow) */
        }
    }
    if (p[0] == '\0' || p[1] != '\0') {
        return CAIRN_EINVAL;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (units[i].unit == p[0]) {
            *ms = v * units[i].ms;
            return 0;
        }
    }
    return CAIRN_EINVAL;
}

/* keep_within as the shortest exact duration string ("7d", "36h"). */
static void durationText(int64_t ms, char *out, size_t size)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'d', DAY_MS}, {'h', 3600000}, {'m', 60000}, {'s', 1000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, size, "%" PRId64 "%c", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(out, size, "%" PRId64 "ms", ms);
}

int retentionFromJson(const json_t *obj, const char *prefix, struct retention *out, char *errmsg)
{
    const char *key;
    json_t *v;
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj)) {
        errorf(errmsg, "%s: expected an object such as {\"keep_full\":2,\"keep_within\":\"7d\"}",
               prefix);
        return CAIRN_EINVAL;
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        unsigned *count = strcmp(key, "keep_full") == 0      ? &out->keep_full
                          : strcmp(key, "keep_daily") == 0   ? &out->keep_daily
                          : strcmp(key, "keep_weekly") == 0  ? &out->keep_weekly
                          : strcmp(key, "keep_monthly") == 0 ? &out->keep_monthly
                                                             : NULL;
        if (count != NULL) {
            json_int_t n;
            if (!json_is_integer(v)) {
                errorf(errmsg, "%s: %s must be a whole number of backups (0 to %u)", prefix, key,
                       MAX_COUNT);
                return CAIRN_EINVAL;
            }
            n = json_integer_value(v);
            if (n < 0 || n > MAX_COUNT) {
                errorf(errmsg, "%s: %s is %lld; it must be 0 to %u", prefix, key, (long long)n,
                       MAX_COUNT);
                return CAIRN_EINVAL;
            }
            *count = (unsigned)n;
        } else if (strcmp(key, "keep_within") == 0) {
            if (!json_is_string(v) ||
                retentionParseDuration(json_string_value(v), &out->keep_within_ms) != 0) {
                errorf(errmsg,
                       "%s: keep_within must be a duration such as \"30s\", \"15m\", \"1h\", "
                       "\"7d\" or \"2w\"%s%s%s",
                       prefix, json_is_string(v) ? ", not \"" : "",
                       json_is_string(v) ? json_string_value(v) : "",
                       json_is_string(v) ? "\"" : "");
                return CAIRN_EINVAL;
            }
        } else {
            errorf(errmsg,
                   "%s: unknown key \"%s\" (expected keep_full, keep_within, keep_daily, "
                   "keep_weekly, keep_monthly)",
                   prefix, key);
            return CAIRN_EINVAL;
        }
    }
    return 0;
}

json_t *retentionJson(const struct retention *r)
{
    json_t *o = json_object();
    char dur[32];
    int bad = o == NULL;
    if (!bad && r->keep_full > 0) {
        bad |= json_object_set_new(o, "keep_full", json_integer(r->keep_full));
    }
    if (!bad && r->keep_within_ms > 0) {
        durationText(r->keep_within_ms, dur, sizeof dur);
        bad |= json_object_set_new(o, "keep_within", json_string(dur));
    }
    if (!bad && r->keep_daily > 0) {
        bad |= json_object_set_new(o, "keep_daily", json_integer(r->keep_daily));
    }
    if (!bad && r->keep_weekly > 0) {
        bad |= json_object_set_new(o, "keep_weekly", json_integer(r->keep_weekly));
    }
    if (!bad && r->keep_monthly > 0) {
        bad |= json_object_set_new(o, "keep_monthly", json_integer(r->keep_monthly));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- deciding ---- */

static void addReason(struct expire_item *it, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void addReason(struct expire_item *it, const char *fmt, ...)
{
    size_t used = strlen(it->reason);
    va_list ap;
    if (used + 3 >= sizeof it->reason) {
        return;
    }
    if (used > 0) {
        used += (size_t)snprintf(it->reason + used, sizeof it->reason - used, "; ");
    }
    va_start(ap, fmt);
    vsnprintf(it->reason + used, sizeof it->reason - used, fmt, ap);
    va_end(ap);
}

static int itemById(const void *a, const void *b)
{
    return strcmp(((const struct expire_item *)a)->id, ((const struct expire_item *)b)->id);
}

/* The readable item whose id is id, or -1. items are sorted by id. */
static long findItem(const struct expire_item *items, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    if (id[0] == '\0') {
        return -1;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(items[mid].id, id);
        if (c == 0) {
            /* Damaged entries carry their object's name as id; the readable one counts. */
            for (size_t k = mid; k < n && strcmp(items[k].id, id) == 0; k++) {
                if (!items[k].damaged) {
                    return (long)k;
                }
            }
            for (size_t k = mid; k-- > 0 && strcmp(items[k].id, id) == 0;) {
                if (!items[k].damaged) {
                    return (long)k;
                }
            }
            return -1;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

/* The item whose id is id for following a chain: the readable one, else a damaged one
 * (whose parent is what its header says, when it could be read), else -1. */
static long findLink(const struct expire_item *items, size_t n, const char *id)
{
    long k = findItem(items, n, id);
    if (k < 0 && id[0] != '\0') {
        for (size_t i = 0; i < n; i++) {
            if (items[i].damaged && strcmp(items[i].id, id) == 0) {
                return (long)i;
            }
        }
    }
    return k;
}

/* UTC calendar parts of a time. */
static void utcParts(int64_t ms, struct tm *tm)
{
    time_t s = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    gmtime_r(&s, tm);
}

enum { PERIOD_DAY, PERIOD_WEEK, PERIOD_MONTH };

/* The period of kind that holds ms: a number that differs between periods, and its
 * name ("2026-12-03", "2026-W49", "2026-12"). */
static int64_t periodOf(int kind, int64_t ms, char *label, size_t size)
{
    int64_t day = ms >= 0 ? ms / DAY_MS : -((-ms + DAY_MS - 1) / DAY_MS);
    struct tm tm;
    if (kind == PERIOD_DAY) {
        utcParts(ms, &tm);
        snprintf(label, size, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        return day;
    }
    if (kind == PERIOD_WEEK) {
        /* 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays. An ISO week
         * belongs to the year of its Thursday, and is numbered from the week that holds
         * that year's first Thursday. */
        int64_t monday = day - (((day + 3) % 7) + 7) % 7;
        int64_t thursday = monday + 3;
        int64_t jan1_day;
        utcParts(thursday * DAY_MS, &tm);
        jan1_day = thursday - tm.tm_yday;
        snprintf(label, size, "%04d-W%02d", tm.tm_year + 1900,
                 (int)((thursday - jan1_day) / 7 + 1));
        return monday;
    }
    utcParts(ms, &tm);
    snprintf(label, size, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
    return (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

static int byNewest(const void *a, const void *b, void *arg)
{
    const struct expire_item *items = arg;
    const struct expire_item *x = &items[*(const size_t *)a], *y = &items[*(const size_t *)b];
    if (x->created_ms != y->created_ms) {
        return x->created_ms > y->created_ms ? -1 : 1;
    }
    return -strcmp(x->id, y->id);
}

/* The full backup at the root of item i's chain, or -1 (a broken chain, a loop). */
static long chainRoot(const struct expire_item *items, size_t n, size_t i)
{
    long k = (long)i;
    for (size_t steps = 0; steps <= n && k >= 0; steps++) {
        if (items[k].type == BACKUP_FULL) {
            return k;
        }
        k = findItem(items, n, items[k].parent_id);
    }
    return -1;
}

/* Where item i's chain breaks before its full backup: an ancestor that cannot be read or
 * failed its last verification (why says which, and i is kept: an operator may mend
 * it), or a parent that is not there (why says so; nothing can mend that). "" when the
 * chain is whole, or when it loops or cannot be followed (chainRoot's -1 judges that). */
static void chainBreak(const struct expire_item *items, size_t n, size_t i, char *why, size_t size,
                       bool *mendable)
{
    long k = (long)i;
    why[0] = '\0';
    *mendable = false;
    for (size_t steps = 0; steps <= n; steps++) {
        long p;
        if (items[k].type == BACKUP_FULL || items[k].parent_id[0] == '\0') {
            return;
        }
        p = findLink(items, n, items[k].parent_id);
        if (p < 0) {
            snprintf(why, size, "its chain is broken: %s, the parent of %s, is missing",
                     items[k].parent_id, items[k].id);
            return;
        }
        if (items[p].damaged || items[p].failed) {
            snprintf(why, size, "its chain runs through %s, which %s", items[p].id,
                     items[p].damaged ? "cannot be read" : "failed its last verification");
            *mendable = true;
            return;
        }
        k = p;
    }
}

int expireDecide(const struct retention *r, int64_t now_ms, struct expire_item *items, size_t n,
                 char *errmsg)
{
    size_t *order = NULL, nread = 0;
    bool *by_rule = NULL;
    size_t kept_by_rules = 0;
    char dur[32];
    int rv = 0;

    for (size_t i = 0; i < n; i++) {
        items[i].keep = false;
        items[i].reason[0] = '\0';
    }
    for (size_t i = 1; i < n; i++) {
        if (strcmp(items[i - 1].id, items[i].id) > 0) {
            /* Only when out of order: a sorted catalog (repoListIn) keeps its order. */
            qsort(items, n, sizeof *items, itemById);
            break;
        }
    }
    if (retentionIsEmpty(r)) {
        for (size_t i = 0; i < n; i++) {
            items[i].keep = true;
            addReason(&items[i], "no retention rule");
        }
        return 0;
    }
    if (n == 0) {
        return 0;
    }
    if ((order = malloc(n * sizeof *order)) == NULL ||
        (by_rule = calloc(n, sizeof *by_rule)) == NULL) {
        errorf(errmsg, "out of memory deciding the retention of %zu backups", n);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    /* A backup whose last verification failed stays too, but satisfies no rule: a
     * "newest N" or a period it filled would let the older backups that still restore
     * go in its place. So does one whose chain runs through such a backup or a damaged
     * one (it restores only once that is mended); one whose parent is gone satisfies no
     * rule and stays only if something else keeps it. */
    for (size_t i = 0; i < n; i++) {
        char why[EXPIRE_REASON_SIZE];
        bool mendable;
        if (items[i].damaged) {
            items[i].keep = true;
            addReason(&items[i], "damaged (cannot be read): not judged, kept");
            continue;
        }
        if (items[i].failed) {
            items[i].keep = true;
            addReason(&items[i], "its last verification failed: not judged, kept");
            continue;
        }
        chainBreak(items, n, i, why, sizeof why, &mendable);
        if (why[0] != '\0') {
            items[i].keep = mendable;
            addReason(&items[i], "%s: not judged%s", why, mendable ? ", kept" : "");
        } else {
            order[nread++] = i;
        }
    }
    if (nread == 0) {
        /* Nothing restores: nothing is judged, and nothing goes. */
        for (size_t i = 0; i < n; i++) {
            if (!items[i].keep) {
                errorf(errmsg,
                       "the retention policy keeps no backup that can be restored (none in "
                       "the repository can%s): refusing to expire; nothing deleted",
                       r->keep_full > 0 ? ", and no full backup is readable and unfailed by "
                                          "its last verification"
                                        : "");
                rv = CAIRN_EINVAL;
                break;
            }
        }
        goto out;
    }
    qsort_r(order, nread, sizeof *order, byNewest, items);

    /* keep_full: the newest N full backups and every backup whose chain ends at one. */
    if (r->keep_full > 0) {
        unsigned taken = 0;
        long *root = malloc(n * sizeof *root);
        if (root == NULL) {
            errorf(errmsg, "out of memory deciding the retention of %zu backups", n);
            rv = CAIRN_ENOMEM;
            goto out;
        }
        for (size_t j = 0; j < n; j++) {
            root[j] = items[j].damaged ? -1 : chainRoot(items, n, j);
        }
        for (size_t k = 0; k < nread; k++) {
            size_t i = order[k];
            if (items[i].type != BACKUP_FULL) {
                continue;
            }
            taken++;
            if (taken > r->keep_full) {
                break;
            }
            for (size_t j = 0; j < n; j++) {
                if (root[j] == (long)i) {
                    by_rule[j] = true;
                    if (j == i) {
                        addReason(&items[j], "keep-full #%u of %u", taken, r->keep_full);
                    } else {
                        addReason(&items[j], "chain of keep-full #%u (%s)", taken, items[i].id);
                    }
                }
            }
        }
        free(root);
    }
    if (r->keep_within_ms > 0) {
        durationText(r->keep_within_ms, dur, sizeof dur);
        for (size_t k = 0; k < nread; k++) {
            size_t i = order[k];
            if (items[i].created_ms >= now_ms - r->keep_within_ms) {
                by_rule[i] = true;
                addReason(&items[i], "within %s", dur);
            }
        }
    }
    /* Grandfather-father-son: walking from the newest, the first backup met in each of
     * the last N periods that hold one. */
    {
        const unsigned counts[] = {r->keep_daily, r->keep_weekly, r->keep_monthly};
        static const char *const names[] = {"daily", "weekly", "monthly"};
        for (int kind = PERIOD_DAY; kind <= PERIOD_MONTH; kind++) {
            unsigned taken = 0;
            int64_t last = 0;
            for (size_t k = 0; k < nread && taken < counts[kind]; k++) {
                size_t i = order[k];
                char label[32];
                int64_t p = periodOf(kind, items[i].created_ms, label, sizeof label);
                if (taken > 0 && p == last) {
                    continue;
                }
                taken++;
                last = p;
                by_rule[i] = true;
                addReason(&items[i], "%s %s", names[kind], label);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        kept_by_rules += by_rule[i];
    }
    if (kept_by_rules == 0) {
        const struct expire_item *newest = &items[order[0]];
        char when[32];
        repoIso8601(newest->created_ms, when);
        errorf(errmsg,
               "the retention policy keeps no backup that can be restored (the newest that "
               "can, %s, was taken %s%s): refusing to expire; nothing deleted",
               newest->id, when,
               r->keep_full > 0 ? ", and no full backup is readable and unfailed by its "
                                  "last verification"
                                : "");
        rv = CAIRN_EINVAL;
        goto out;
    }
    /* What a concurrent backup may take as its parent (backup.h): the newest backup of
     * each source, and its newest full one. Ids sort by creation, as the engine
     * chooses. */
    for (size_t i = n; i-- > 0;) {
        bool newest = true, newest_full = items[i].type == BACKUP_FULL;
        if (items[i].damaged) {
            continue;
        }
        for (size_t j = i + 1; j < n && (newest || newest_full); j++) {
            if (!items[j].damaged && strcmp(items[j].source, items[i].source) == 0) {
                newest = false;
                newest_full = newest_full && items[j].type != BACKUP_FULL;
            }
        }
        if (newest) {
            by_rule[i] = true;
            addReason(&items[i], "newest of its source");
        } else if (newest_full) {
            by_rule[i] = true;
            addReason(&items[i], "newest full of its source");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (by_rule[i]) {
            items[i].keep = true;
        }
    }
    /* Every ancestor of a kept backup is needed by it, through damaged backups too: a
     * damaged one is kept for an operator to recover, and is worth nothing without its
     * parents. Where a chain runs into a damaged backup whose header cannot be read (its
     * parent unknown, or the read failed for a moment), every older backup may be one of
     * its ancestors and stays. */
    for (size_t i = n; i-- > 0;) {
        long child = (long)i, p;
        if (!items[i].keep) {
            continue;
        }
        for (size_t steps = 0; steps <= n; steps++) {
            p = findLink(items, n, items[child].parent_id);
            if (p < 0) {
                break;
            }
            if (items[p].damaged && items[p].type == 0) {
                for (size_t j = 0; j < (size_t)p; j++) {
                    if (!items[j].damaged && !items[j].keep) {
                        items[j].keep = true;
                        addReason(&items[j], "may be needed by %s through damaged %s",
                                  items[child].id, items[p].id);
                    }
                }
            }
            if (!items[p].keep) {
                items[p].keep = true;
                addReason(&items[p], "needed by %s", items[child].id);
            } else if (strstr(items[p].reason, "needed by") == NULL) {
                addReason(&items[p], "needed by %s", items[child].id);
            }
            child = p;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!items[i].keep) {
            addReason(&items[i], "no rule keeps it, and no kept backup depends on it");
        }
    }
out:
    free(order);
    free(by_rule);
    return rv;
}

/* ---- the archive ---- */

/* Decide every segment: rep->segs from segs/tls. infos: the decided items as bases of
 * the archive (a kept damaged backup whose header reads is one: it is kept to be
 * mended, and would roll forward with what follows its index). */
static void decideSegments(struct expire_report *rep, const struct arcseg_info *segs, size_t n,
                           const struct arcseg_timeline *tls, size_t ntl,
                           const struct backup_info *infos)
{
    long head = -1;
    int64_t oldest_kept_ms = INT64_MAX;
    size_t note = 0;
    bool any_kept = false;

    for (size_t i = 0; i < rep->n; i++) {
        if (rep->items[i].keep && infos[i].error[0] == '\0') {
            any_kept = true;
            if (infos[i].created_ms < oldest_kept_ms) {
                oldest_kept_ms = infos[i].created_ms;
            }
        }
    }
    for (size_t k = 0; k < n; k++) {
        struct expire_segment *s = &rep->segs[k];
        snprintf(s->name, sizeof s->name, "%s", segs[k].name);
        snprintf(s->timeline, sizeof s->timeline, "%s", segs[k].timeline);
        s->first = segs[k].first;
        s->last = segs[k].read ? segs[k].last : 0;
        s->size_bytes = segs[k].size;
        s->keep = true;
    }
    /* The archive's head: the newest readable segment that reaches furthest, as an
     * archiver looks for it to continue. */
    for (size_t t = 0; t < ntl; t++) {
        size_t last = tls[t].from + tls[t].nseg - 1;
        if (segs[last].read && (head < 0 || segs[last].last > segs[head].last)) {
            head = (long)last;
        }
    }
    bool several = arcsegSeveralHistories(segs, tls, ntl);
    for (size_t t = 0; t < ntl; t++) {
        const struct arcseg_timeline *tl = &tls[t];
        long base = -1;
        int64_t newest_ms = INT64_MIN;
        for (size_t i = 0; i < rep->n; i++) {
            const struct expire_item *it = &rep->items[i];
            const struct backup_info *b;
            if (!it->keep) {
                continue;
            }
            b = &infos[i]; /* arcsegBaseFits refuses one with an error */
            if (!arcsegBaseFits(tl, several, b)) {
                continue;
            }
            if (base < 0 || b->raft_index < infos[base].raft_index) {
                base = (long)i;
            }
        }
        for (size_t k = tl->from; k < tl->from + tl->nseg; k++) {
            if (segs[k].read && segs[k].max_ms > newest_ms) {
                newest_ms = segs[k].max_ms;
            }
        }
        for (size_t k = tl->from; k < tl->from + tl->nseg; k++) {
            struct expire_segment *s = &rep->segs[k];
            if (tl->problem[0] != '\0') {
                snprintf(s->reason, sizeof s->reason,
                         "timeline %s does not walk cleanly: kept whole", tl->name);
                if (note++ == 0) {
                    snprintf(rep->archive_note, sizeof rep->archive_note,
                             "kept every segment of a timeline with a problem (%.300s)",
                             tl->problem);
                }
            } else if ((long)k == head) {
                snprintf(s->reason, sizeof s->reason,
                         "the archive's head (an archiver continues from it)");
            } else if (base >= 0 && segs[k].last <= infos[base].raft_index) {
                s->keep = false;
                snprintf(s->reason, sizeof s->reason,
                         "every entry at or before index %llu of the oldest kept base backup %s",
                         (unsigned long long)infos[base].raft_index, infos[base].id);
            } else if (base >= 0) {
                snprintf(s->reason, sizeof s->reason, "needed to roll forward from %s (index %llu)",
                         infos[base].id, (unsigned long long)infos[base].raft_index);
            } else if (any_kept && newest_ms < oldest_kept_ms) {
                s->keep = false;
                snprintf(s->reason, sizeof s->reason,
                         "timeline %s has no kept base backup and is older than every kept "
                         "backup",
                         tl->name);
            } else {
                snprintf(s->reason, sizeof s->reason,
                         "timeline %s has no kept base backup but is not older than every kept "
                         "backup: kept",
                         tl->name);
            }
        }
    }
}

/* ---- applying ---- */

void expireReportFree(struct expire_report *rep)
{
    if (rep == NULL) {
        return;
    }
    free(rep->items);
    free(rep->segs);
    rep->items = NULL;
    rep->segs = NULL;
    rep->n = rep->nsegs = 0;
}

static void tally(struct expire_report *rep)
{
    rep->kept = rep->expired = rep->removed = 0;
    rep->kept_bytes = rep->expired_bytes = 0;
    rep->segs_kept = rep->segs_expired = rep->segs_removed = 0;
    rep->seg_bytes_expired = 0;
    for (size_t i = 0; i < rep->n; i++) {
        const struct expire_item *it = &rep->items[i];
        if (it->keep) {
            rep->kept++;
            rep->kept_bytes += it->size_bytes;
        } else {
            rep->expired++;
            rep->expired_bytes += it->size_bytes;
        }
        rep->removed += it->removed;
    }
    for (size_t k = 0; k < rep->nsegs; k++) {
        const struct expire_segment *s = &rep->segs[k];
        if (s->keep) {
            rep->segs_kept++;
        } else {
            rep->segs_expired++;
            rep->seg_bytes_expired += s->size_bytes;
        }
        rep->segs_removed += s->removed;
    }
}

/* Remove object name; one already gone counts as removed. */
static int removeObject(struct repo *repo, const char *name, char *errmsg)
{
    char why[CAIRN_ERRMSG_SIZE];
    int rv = repoRemove(repo, name, why);
    if (rv == 0 || rv == CAIRN_ENOTFOUND) {
        return 0;
    }
    errorf(errmsg, "expiry stopped: could not remove %s: %.400s", name, why);
    return rv;
}

/* The test hook: CAIRN_EXPIRE_TEST_PAUSE_MS makes each removal (a backup's `.cbk`, its
 * sidecar, a segment) wait that long first, so that a test can kill an expiry between
 * any two of them. Unset (always, outside tests), nothing waits. */
static void testPause(void)
{
    const char *v = getenv("CAIRN_EXPIRE_TEST_PAUSE_MS");
    long ms;
    if (v == NULL || (ms = strtol(v, NULL, 10)) <= 0) {
        return;
    }
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct sidecars {
    char **names;
    size_t n, cap;
};

static int collectSidecar(void *arg, const char *name, uint64_t size, const char *version)
{
    struct sidecars *sc = arg;
    size_t len = strlen(name);
    (void)size;
    (void)version;
    if (len <= sizeof SIDECAR_SUFFIX - 1 ||
        strcmp(name + len - (sizeof SIDECAR_SUFFIX - 1), SIDECAR_SUFFIX) != 0) {
        return 0;
    }
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? 2 * sc->cap : 32;
        char **grown = realloc(sc->names, cap * sizeof *grown);
        if (grown == NULL) {
            return CAIRN_ENOMEM;
        }
        sc->names = grown;
        sc->cap = cap;
    }
    if ((sc->names[sc->n] = strdup(name)) == NULL) {
        return CAIRN_ENOMEM;
    }
    sc->n++;
    return 0;
}

/* Remove the sidecars whose backup is gone (left by an expiry stopped between the two
 * removals, or written by a verification racing one). Checked again one by one just
 * before: a backup committed meanwhile keeps its sidecar. Best effort. */
static void sweepSidecars(struct repo *repo, const struct expire_report *rep, bool dry_run,
                          unsigned *removed)
{
    struct sidecars sc = {0};
    char ignore[CAIRN_ERRMSG_SIZE];
    *removed = 0;
    if (repoListNames(repo, "", collectSidecar, &sc, ignore) == 0) {
        for (size_t i = 0; i < sc.n; i++) {
            char id[BACKUP_ID_SIZE], cbk[BACKUP_ID_SIZE + 8];
            size_t len = strlen(sc.names[i]) - (sizeof SIDECAR_SUFFIX - 1);
            struct repo_reader rd;
            if (len >= sizeof id) {
                continue;
            }
            memcpy(id, sc.names[i], len);
            id[len] = '\0';
            if (!cbkIdValid(id) || findItem(rep->items, rep->n, id) >= 0) {
                continue;
            }
            snprintf(cbk, sizeof cbk, "%s.cbk", id);
            if (repoOpenRead(repo, cbk, &rd, ignore) == 0) {
                repoCloseRead(&rd);
                continue;
            }
            if (dry_run || repoRemove(repo, sc.names[i], ignore) == 0) {
                (*removed)++;
            }
        }
    }
    for (size_t i = 0; i < sc.n; i++) {
        free(sc.names[i]);
    }
    free(sc.names);
}

/* A damaged backup's type and parent, from its header when that still checks out and
 * is its own (the damage is elsewhere: a block, the manifest, the footer, the trailer),
 * so that the backups it chains to stay with it. Left 0 and "" otherwise. With the
 * header, *base becomes the backup as a base of the archive (its index, history and
 * time; no error), so that the segments it would roll forward with stay with it too;
 * without, *base keeps its error and is no base. */
static void damagedHeader(struct repo *repo, const struct backup_info *b, struct expire_item *it,
                          struct backup_info *base)
{
    unsigned char raw[CBK_HEADER_SIZE];
    char why[CAIRN_ERRMSG_SIZE];
    struct repo_reader rd;
    struct cbk_header h;
    if (repoOpenRead(repo, repoNameOf(b->path), &rd, why) != 0) {
        return;
    }
    if (rd.size >= CBK_HEADER_SIZE && rd.io.read(rd.io.arg, 0, raw, sizeof raw) == 0 &&
        cbkHeaderDecode(raw, &h, why) == 0 && strcmp(h.id, it->id) == 0) {
        it->type = h.type;
        snprintf(it->parent_id, sizeof it->parent_id, "%s", h.parent_id);
        base->error[0] = '\0';
        base->type = h.type;
        base->raft_index = h.raft_index;
        base->created_ms = h.created_ms;
        memcpy(base->history, h.history, BACKUP_HISTORY_SIZE);
    }
    repoCloseRead(&rd);
}

int backupExpireProgress(struct repo *repo, const struct retention *r, int64_t now_ms, bool dry_run,
                         expire_progress_fn progress, void *progress_arg, struct expire_report *out,
                         char *errmsg)
{
    struct backup_info *infos = NULL, *after = NULL;
    /* infos as bases of the archive: a damaged one whose header reads is one too. */
    struct backup_info *bases = NULL;
    struct arcseg_info *segs = NULL;
    struct arcseg_timeline *tls = NULL;
    size_t ninfos = 0, nsegs = 0, ntl = 0, nafter = 0;
    size_t *children = NULL, *queue = NULL, qn = 0;
    uint64_t total = 0, done = 0;
    int rv;

    memset(out, 0, sizeof *out);
    out->policy = *r;
    out->now_ms = now_ms;
    out->dry_run = dry_run;
    out->empty_policy = retentionIsEmpty(r);

    if ((rv = repoListIn(repo, &infos, &ninfos, errmsg)) != 0) {
        return rv;
    }
    /* repoListIn sorts by id (then path): the items keep that order, so that items[i]
     * and infos[i] are one backup. */
    if (ninfos > 0 && ((out->items = calloc(ninfos, sizeof *out->items)) == NULL ||
                       (bases = malloc(ninfos * sizeof *bases)) == NULL)) {
        errorf(errmsg, "out of memory expiring %s", repoUrl(repo));
        rv = CAIRN_ENOMEM;
        goto fail;
    }
    out->n = ninfos;
    for (size_t i = 0; i < ninfos; i++) {
        struct expire_item *it = &out->items[i];
        const struct backup_info *b = &infos[i];
        snprintf(it->id, sizeof it->id, "%s", b->id);
        it->damaged = b->error[0] != '\0';
        it->type = it->damaged ? 0 : b->type;
        snprintf(it->parent_id, sizeof it->parent_id, "%s", it->damaged ? "" : b->parent_id);
        snprintf(it->source, sizeof it->source, "%s", b->source);
        it->created_ms = it->damaged ? 0 : b->created_ms;
        it->size_bytes = b->size_bytes;
        it->raft_index = it->damaged ? 0 : b->raft_index;
        it->failed = !it->damaged && b->verified == BACKUP_VERIFY_FAILED;
        bases[i] = *b;
        if (it->damaged) {
            damagedHeader(repo, b, it, &bases[i]);
        }
    }
    if ((rv = expireDecide(r, now_ms, out->items, out->n, errmsg)) != 0) {
        goto fail;
    }
    /* The listing comes sorted by id, which expireDecide keeps: items[i] is infos[i]. */
    for (size_t i = 0; i < out->n; i++) {
        if (strcmp(out->items[i].id, infos[i].id) != 0 ||
            out->items[i].damaged != (infos[i].error[0] != '\0')) {
            errorf(errmsg, "internal error: the catalog of %s changed order", repoUrl(repo));
            rv = CAIRN_EINVAL;
            goto fail;
        }
    }
    if (out->empty_policy) {
        tally(out);
        goto done;
    }
    /* The archive. */
    if ((rv = arcsegList(repo, &segs, &nsegs, errmsg)) != 0 ||
        (rv = arcsegWalk(repo, segs, nsegs, false, &tls, &ntl, errmsg)) != 0) {
        goto fail;
    }
    if (nsegs > 0 && (out->segs = calloc(nsegs, sizeof *out->segs)) == NULL) {
        errorf(errmsg, "out of memory expiring %s", repoUrl(repo));
        rv = CAIRN_ENOMEM;
        goto fail;
    }
    out->nsegs = nsegs;
    /* Every backup listed, as pitr.c's windows: the two agree on the bases. */
    arcsegSharedHistories(tls, ntl, infos, ninfos);
    decideSegments(out, segs, nsegs, tls, ntl, bases);
    tally(out);
    total = out->expired_bytes + out->seg_bytes_expired;
    if (dry_run) {
        sweepSidecars(repo, out, true, &out->sidecars_removed);
        goto done;
    }

    /* Backups, leaves first: one goes once no backup that stays in the repository names
     * it as its parent. A kept backup's ancestors are all kept, so an expired one's
     * children are all expired: every expired backup is reached. */
    if (out->n > 0 && ((children = calloc(out->n, sizeof *children)) == NULL ||
                       (queue = malloc(out->n * sizeof *queue)) == NULL)) {
        errorf(errmsg, "out of memory expiring %s", repoUrl(repo));
        rv = CAIRN_ENOMEM;
        goto fail_report;
    }
    for (size_t i = 0; i < out->n; i++) {
        long p = out->items[i].damaged ? -1 : findItem(out->items, out->n, out->items[i].parent_id);
        if (p >= 0) {
            children[p]++;
        }
    }
    for (size_t i = 0; i < out->n; i++) {
        if (!out->items[i].keep && children[i] == 0) {
            queue[qn++] = i;
        }
    }
    while (qn > 0) {
        size_t i = queue[--qn];
        struct expire_item *it = &out->items[i];
        char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
        long p;
        testPause();
        snprintf(name, sizeof name, "%s.cbk", it->id);
        if (strcmp(repoNameOf(infos[i].path), name) != 0) {
            /* A file renamed by hand: its own name. */
            snprintf(name, sizeof name, "%s", repoNameOf(infos[i].path));
        }
        if ((rv = removeObject(repo, name, errmsg)) != 0) {
            goto fail_report;
        }
        snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, it->id);
        testPause();
        if ((rv = removeObject(repo, name, errmsg)) != 0) {
            goto fail_report;
        }
        it->removed = true;
        done += it->size_bytes;
        if (progress != NULL) {
            progress(progress_arg, done, total);
        }
        p = findItem(out->items, out->n, it->parent_id);
        if (p >= 0 && --children[p] == 0 && !out->items[p].keep) {
            queue[qn++] = (size_t)p;
        }
    }
    /* Segments, oldest first in each timeline: what remains of a timeline always starts
     * at a segment and runs on without a gap. */
    for (size_t k = 0; k < out->nsegs; k++) {
        if (out->segs[k].keep) {
            continue;
        }
        testPause();
        if ((rv = removeObject(repo, out->segs[k].name, errmsg)) != 0) {
            goto fail_report;
        }
        out->segs[k].removed = true;
        done += out->segs[k].size_bytes;
        if (progress != NULL) {
            progress(progress_arg, done, total);
        }
    }
    sweepSidecars(repo, out, false, &out->sidecars_removed);
    /* The listing after: it rewrites the catalog index of a remote repository, and
     * shows a backup written meanwhile on a parent that was expired (two backups of
     * one source racing an expiry: the newest-of-its-source rule protects one). */
    if ((rv = repoListIn(repo, &after, &nafter, errmsg)) != 0) {
        goto fail_report;
    }
    for (size_t j = 0; j < nafter; j++) {
        long p;
        if (after[j].error[0] != '\0' || after[j].parent_id[0] == '\0') {
            continue;
        }
        p = findItem(out->items, out->n, after[j].parent_id);
        if (p >= 0 && out->items[p].removed) {
            errorf(errmsg,
                   "backup %s was written during the expiry on parent %s, which the expiry "
                   "removed: its chain is broken (take a new full backup)",
                   after[j].id, after[j].parent_id);
            rv = CAIRN_EBUSY;
            goto fail_report;
        }
    }
    tally(out);
done:
    free(bases);
    free(after);
    free(children);
    free(queue);
    free(tls);
    free(segs);
    free(infos);
    return 0;
fail_report:
    tally(out);
    free(bases);
    free(after);
    free(children);
    free(queue);
    free(tls);
    free(segs);
    free(infos);
    return rv;
fail:
    free(bases);
    free(tls);
    free(segs);
    free(infos);
    expireReportFree(out);
    return rv;
}

int backupExpire(struct repo *repo, const struct retention *r, int64_t now_ms, bool dry_run,
                 struct expire_report *out, char *errmsg)
{
    return backupExpireProgress(repo, r, now_ms, dry_run, NULL, NULL, out, errmsg);
}

/* ---- the report as JSON ---- */

json_t *expireReportJson(const struct expire_report *rep)
{
    /* Every container is attached to doc as soon as it exists: one decref frees all. */
    json_t *doc = json_object();
    json_t *backups = json_array(), *segments = json_array(), *archive = json_object();
    json_t *policy = retentionJson(&rep->policy);
    char when[32];
    int bad = doc == NULL;

    bad |= json_object_set_new(doc, "backups", backups) != 0 || backups == NULL;
    bad |= json_object_set_new(doc, "archive", archive) != 0 || archive == NULL;
    bad |= json_object_set_new(doc, "policy", policy) != 0 || policy == NULL;
    if (!bad) {
        bad |= json_object_set_new(archive, "segments", segments) != 0 || segments == NULL;
    } else {
        json_decref(segments);
    }
    for (size_t i = 0; !bad && i < rep->n; i++) {
        const struct expire_item *it = &rep->items[i];
        json_t *e;
        repoIso8601(it->created_ms, when);
        e = json_pack("{s:s, s:s?, s:s?, s:s?, s:I, s:I, s:I, s:s, s:s, s:b, s:b}", "id", it->id,
                      "type", it->damaged ? NULL : backupTypeName(it->type), "parent_id",
                      it->parent_id[0] != '\0' ? it->parent_id : NULL, "created",
                      it->damaged ? NULL : when, "created_ms", (json_int_t)it->created_ms,
                      "raft_index", (json_int_t)it->raft_index, "size_bytes",
                      (json_int_t)it->size_bytes, "action", it->keep ? "keep" : "expire", "reason",
                      it->reason, "removed", it->removed, "damaged", it->damaged);
        bad |= json_array_append_new(backups, e) != 0 || e == NULL;
    }
    for (size_t k = 0; !bad && k < rep->nsegs; k++) {
        const struct expire_segment *s = &rep->segs[k];
        json_t *e =
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:b}", "name", s->name, "timeline",
                      s->timeline, "first", (json_int_t)s->first, "last", (json_int_t)s->last,
                      "size_bytes", (json_int_t)s->size_bytes, "action",
                      s->keep ? "keep" : "expire", "reason", s->reason, "removed", s->removed);
        bad |= json_array_append_new(segments, e) != 0 || e == NULL;
    }
    if (!bad) {
        json_t *totals = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "kept", (json_int_t)rep->kept,
            "expired", (json_int_t)rep->expired, "removed", (json_int_t)rep->removed, "kept_bytes",
            (json_int_t)rep->kept_bytes, "expired_bytes", (json_int_t)rep->expired_bytes,
            "segments_kept", (json_int_t)rep->segs_kept, "segments_expired",
            (json_int_t)rep->segs_expired, "segments_removed", (json_int_t)rep->segs_removed,
            "segment_bytes_expired", (json_int_t)rep->seg_bytes_expired, "sidecars_removed",
            (json_int_t)rep->sidecars_removed);
        repoIso8601(rep->now_ms, when);
        bad |= json_object_set_new(doc, "totals", totals) != 0 || totals == NULL ||
               json_object_set_new(archive, "note",
                                   rep->archive_note[0] ? json_string(rep->archive_note)
                                                        : json_null()) != 0 ||
               json_object_set_new(doc, "dry_run", json_boolean(rep->dry_run)) != 0 ||
               json_object_set_new(doc, "now", json_string(when)) != 0 ||
               json_object_set_new(doc, "empty_policy", json_boolean(rep->empty_policy)) != 0;
    }
    if (bad) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}
