/* Retention: which backups of a repository to keep, and the expiry that deletes the
 * others (`cairn backup expire`, and the scheduler after every scheduled backup).
 *
 * A policy is a set of rules (struct retention); a backup is kept when any rule keeps
 * it, and every backup a kept backup depends on (its parent, up to its full backup) is
 * kept with it ("needed by <child>"). Whatever the rules, the newest backup of each
 * source and the newest full backup of each source are kept with their chains: they
 * are the parents a concurrent incremental or differential backup chooses (backup.h),
 * so that a backup written during an expiry never points at a deleted parent. A policy
 * with no rule expires nothing; one whose rules keep no backup at all is refused.
 *
 * The expiry deletes in an order that keeps the repository sound at every moment, so
 * that a kill at any point leaves nothing broken: a backup only once no backup that
 * remains names it as parent (leaves first), its `.cbk` before its `<id>.verified`
 * sidecar (a sidecar left alone is removed by the next expiry), and archive segments
 * from the oldest of a timeline forward (a timeline whose first segments are gone
 * still walks, arcseg.h). Everything goes through the repository object, so that it
 * works for directories and S3 alike; the catalog index (catidx.h) is rewritten by the
 * listing that ends the expiry.
 *
 * Archive segments (arcseg.h): a segment goes only when no kept backup needs it to
 * roll forward: on a timeline with kept base backups (raft index within
 * [start - 1, head], as pitr.c chooses bases), the segments whose every entry is at or
 * before the oldest such base's index; on a timeline with no kept base, every
 * segment, when all of them are older than every kept backup. A timeline that does not
 * walk cleanly (a damaged segment, a gap) is kept whole, and the archive's head
 * segment (the one an archiver continues) always stays; the report says why.
 *
 * Any thread; synchronous (it lists and deletes through the repository). */
#ifndef CAIRN_EXPIRE_H
#define CAIRN_EXPIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arcseg.h"
#include "backup.h"

struct retention {
    unsigned keep_full;     /* keep the newest N full backups' chains (0: no such rule) */
    int64_t keep_within_ms; /* keep every backup taken within this long before now (0: no rule) */
    unsigned keep_daily, keep_weekly, keep_monthly; /* GFS: newest backup of each of the last
                                                       N UTC days/ISO weeks/months that hold one */
};

/* Parse {"keep_full":2,"keep_within":"7d","keep_daily":7,"keep_weekly":4,"keep_monthly":6}
 * (every key optional; counts are integers 0..1000000; durations like 30s, 15m, 1h, 7d,
 * 2w; unknown keys refused) into *out: 0, or CAIRN_EINVAL with errmsg naming the key and
 * what is wrong, each message prefixed with `prefix` (e.g. "retention"). obj is
 * borrowed. */
int retentionFromJson(const json_t *obj, const char *prefix, struct retention *out, char *errmsg);
/* A duration: a positive integer and a unit, s, m, h, d or w ("7d"). 0 and *ms set, or
 * CAIRN_EINVAL (no message: the caller names the key). */
int retentionParseDuration(const char *s, int64_t *ms);
/* Whether r has no rule at all. */
bool retentionIsEmpty(const struct retention *r);
/* The policy as JSON ({"keep_full":N,...}, only the rules set; keep_within as a
 * duration string): a new reference, NULL when out of memory. */
json_t *retentionJson(const struct retention *r);

#define EXPIRE_REASON_SIZE 256

/* One backup of the repository and what the expiry decided. */
struct expire_item {
    char id[BACKUP_ID_SIZE];
    int type; /* BACKUP_FULL, ...; when damaged, its header's, 0 when that cannot be read */
    char parent_id[BACKUP_ID_SIZE]; /* "" for a full backup, and when not known */
    char source[BACKUP_SOURCE_SIZE];
    int64_t created_ms;  /* 0 when damaged */
    uint64_t raft_index; /* the image's log index; 0 outside a server */
    uint64_t size_bytes; /* the .cbk object's */
    bool damaged;        /* unreadable (kept: never judged) */
    bool failed;         /* its last verification failed (kept: counts for no rule) */
    bool keep;
    bool removed; /* gone (not in a dry run) */
    /* Why it stays: the rules that keep it ("keep-full", "within 7d", "daily
     * 2026-12-03", "weekly 2026-W49", "monthly 2026-12", "newest of its source",
     * "newest full of its source") and/or "needed by <id>"; or why it goes. */
    char reason[EXPIRE_REASON_SIZE];
};

/* One archive segment and what the expiry decided. */
struct expire_segment {
    char name[ARCSEG_NAME_SIZE];
    char timeline[ARCSEG_TIMELINE_SIZE];
    uint64_t first, last; /* last is 0 when the segment could not be read */
    uint64_t size_bytes;
    bool keep;
    bool removed;
    char reason[EXPIRE_REASON_SIZE];
};

/* What an expiry did (or, in a dry run, would do). Memory: items and segs are
 * malloc'd, the report's; expireReportFree releases them. */
struct expire_report {
    struct retention policy;
    int64_t now_ms;
    bool dry_run;
    bool empty_policy;         /* no rule: nothing was judged, nothing expired */
    struct expire_item *items; /* every backup, sorted by id */
    size_t n;
    struct expire_segment *segs; /* every archive segment, by timeline then index */
    size_t nsegs;
    size_t kept, expired, removed; /* backups; removed: deleted by this run */
    uint64_t kept_bytes, expired_bytes;
    size_t segs_kept, segs_expired, segs_removed;
    uint64_t seg_bytes_expired;
    unsigned sidecars_removed;            /* `<id>.verified` left by an expiry that was stopped */
    char archive_note[CAIRN_ERRMSG_SIZE]; /* what was kept of the archive for want of
                                             certainty, "" when nothing */
};

/* Called as the expiry deletes: bytes removed of the bytes to remove. */
typedef void (*expire_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Apply r to repo at time now_ms (Unix ms; the "within" rule and GFS periods count
 * from it): list the backups and the archive, decide, and unless dry_run delete what
 * expires (see the top of this file for the order). *out is filled in every case that
 * returns 0 and when the deletion fails midway (then it says what was removed), and
 * must be released with expireReportFree; on other failures it is empty.
 * CAIRN_EINVAL when the rules would keep no backup (nothing deleted; errmsg says
 * why); a repository error (errmsg names the object). An object already gone (another
 * expiry) counts as removed. */
int backupExpire(struct repo *repo, const struct retention *r, int64_t now_ms, bool dry_run,
                 struct expire_report *out, char *errmsg);
/* The same, calling progress (may be NULL) as it deletes. */
int backupExpireProgress(struct repo *repo, const struct retention *r, int64_t now_ms, bool dry_run,
                         expire_progress_fn progress, void *progress_arg, struct expire_report *out,
                         char *errmsg);
void expireReportFree(struct expire_report *rep);

/* Decide without any repository: items[0..n) (id, type, parent_id, source, created_ms,
 * damaged filled; sorted by id) get keep and reason. CAIRN_EINVAL when the rules keep
 * nothing (errmsg). The pure part of backupExpire, for tests and the server. */
int expireDecide(const struct retention *r, int64_t now_ms, struct expire_item *items, size_t n,
                 char *errmsg);

/* The report as JSON (`cairn backup expire --json`, the server): {"dry_run", "now",
 * "policy", "backups": [{"id", "type", "parent_id", "created", "created_ms", "raft_index",
 * "size_bytes", "action":
 * "keep"|"expire", "reason", "removed", "damaged"}], "archive": {"segments": [...], "note"},
 * "totals": {...}}. A new reference; NULL when out of memory. */
json_t *expireReportJson(const struct expire_report *rep);

#endif
