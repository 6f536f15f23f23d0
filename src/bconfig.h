/* The backup configuration of cairnd --backup-config FILE: what the housekeeping thread
 * (housekeeping.h) does for each named repository: backups on a schedule per type, the
 * retention policy applied after each (expire.h), restore drills, and an alert
 * webhook. The file is JSON, in one of two shapes:
 *
 *   {"repositories": {"NAME": {"schedules": {"full": "0 3 * * 0", "incremental": "1h",
 *                                            "differential": "0 3 * * 1-6"},
 *                              "from": "leader" | "follower",
 *                              "retention": {"keep_full": 4, "keep_within": "7d"},
 *                              "drill": "24h" | "off",
 *                              "time_zone": "Europe/Paris",
 *                              "webhook": "http://alerts.example/hook"}}}
 *
 * or rqlite's auto-backup file where it overlaps, one schedule: {"interval": "1h",
 * "type": "full" (rqlite's storage types "file" and "s3" mean a full backup), "sub":
 * "NAME" | "URL" | {"path": DIR} | {"bucket": B, "path": P}}, plus the keys above.
 *
 * NAME is a repository of the node (--backup-dir: "default", --repo NAME=URL), or one
 * of their URLs. A schedule is an interval ("30s", "1h", "7d") or a five-field cron
 * expression (cron.h), read in the repository's time_zone (default UTC) or in the zone
 * of a "CRON_TZ=Europe/Paris " (or "TZ=") before its fields; intervals ignore zones.
 * Each zone is loaded once, with the file (tz.h), and lives as long as the bconfig.
 * `$VAR` and `${VAR}` in any string are replaced by the environment's value (`$$` is a
 * `$`); an unset variable is an error. Every error names the key
 * ("repositories.default.schedules.full: ...").
 *
 * Pure code apart from reading the file and the environment: any thread. */
#ifndef CAIRN_BCONFIG_H
#define CAIRN_BCONFIG_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "backup.h"
#include "cron.h"
#include "expire.h"
#include "reposet.h"
#include "tz.h"

#define BCONFIG_MAX_REPOS REPOSET_MAX
#define BCONFIG_TEXT_SIZE 128
/* Distinct zones one configuration may name: one per schedule and repository. */
#define BCONFIG_MAX_ZONES (BCONFIG_MAX_REPOS * (BCONFIG_TYPES + 2))

/* The backup types, by index: sched[BACKUP_FULL] ... sched[BACKUP_DIFFERENTIAL]. */
#define BCONFIG_TYPES 4

/* When something runs: never, every interval_ms, or at a cron expression's times. */
enum { BSCHED_NONE = 0, BSCHED_INTERVAL, BSCHED_CRON };
struct bschedule {
    int kind;
    int64_t interval_ms;
    struct cron cron;
    const struct tz *zone;        /* BSCHED_CRON: its zone; NULL: UTC. The bconfig's */
    char text[BCONFIG_TEXT_SIZE]; /* as written (after $VAR expansion) */
};

struct bconfig_repo {
    char name[BACKUP_REPO_NAME_SIZE]; /* the node's name of the repository */
    unsigned which;                   /* its index in the node's reposet */
    struct bschedule sched[BCONFIG_TYPES];
    bool from_follower; /* "from": "follower": a caught-up follower takes the backups */
    bool has_retention;
    struct retention retention;
    struct bschedule drill;          /* default every 24 h; BSCHED_NONE for "off" */
    char webhook[1024];              /* "" when none; as configured (secrets included) */
    char time_zone[TZ_NAME_MAX + 1]; /* "time_zone" as configured; "" when none (UTC) */
};

struct bconfig {
    char path[PATH_MAX]; /* the file it was read from ("" when parsed from text) */
    int64_t loaded_ms;
    bool rqlite_shape; /* the file had rqlite's auto-backup shape */
    unsigned n;
    struct bconfig_repo r[BCONFIG_MAX_REPOS];
    /* The zones the schedules point to, each loaded once; freed with the bconfig, so a
     * copy of a bconfig_repo must not use its zones once the bconfig may be freed. */
    unsigned nzones;
    struct tz *zones[BCONFIG_MAX_ZONES];
};

/* Read and check the file at path against the node's repositories rs. 0 and *out
 * (malloc'd, the caller's: bconfigFree), or CAIRN_EINVAL (bad content), CAIRN_EIO and
 * the like (unreadable file) with errmsg naming the file, the key and what is wrong. */
int bconfigLoad(const char *path, const struct reposet *rs, struct bconfig **out, char *errmsg);
/* The same from JSON text; `origin` names it in messages. */
int bconfigParse(const char *text, size_t len, const char *origin, const struct reposet *rs,
                 struct bconfig **out, char *errmsg);
void bconfigFree(struct bconfig *c);

/* The effective configuration as GET /admin/backup-config shows it: the normalised
 * shape above with each repository's URL, every default filled in, and secrets masked
 * (the webhook's password and query values, "***"). A new reference; NULL when out of
 * memory. */
json_t *bconfigJson(const struct bconfig *c, const struct reposet *rs);

/* A URL with its password and query values replaced by "***", into out. */
void bconfigMaskUrl(const char *url, char *out, size_t size);

/* The first time after last_ms (Unix ms) s is due, or -1 for never. last_ms < 0: there
 * was no previous run; an interval is due at once (now_ms), a cron expression at its
 * next time after now_ms (in its zone: cron.h says how DST changes are taken). A time
 * before now_ms means the run is overdue: run it now, once. */
int64_t bscheduleNext(const struct bschedule *s, int64_t last_ms, int64_t now_ms);

/* "2s", "1h", "7d" (an integer and ms, s, m, h, d or w) into *ms: 0 or -1. */
int bconfigParseDuration(const char *s, int64_t *ms);

#endif
