/* Point-in-time restore: a base backup plus the archived entries after it, replayed
 * with cairn's own apply (store.h storeApply, what every follower runs), up to an
 * index, a time, or the archive's head (issue 18; segments: src/backup/arcseg.h).
 *
 * The window of a timeline is what it can restore: from the oldest backup of the
 * repository that the timeline continues (raft index start - 1 or later) to its head
 * (the end of its last segment that reads and links correctly). A target outside
 * every window, or inside a gap between timelines, is refused with the windows.
 *
 * Used by `cairn restore --to-index|--to-time|latest`, `cairn archive list`, and the
 * server's restores as of a point (admin.h adminRestoreAsOf: RESTORE ... AS OF, POST
 * /admin/restore with a target, cairnd --restore-from). Any thread but a node's loop
 * (it opens its own store on the file it writes). */
#ifndef CAIRN_PITR_H
#define CAIRN_PITR_H

#include <stdbool.h>
#include <stdint.h>

#include "arcseg.h"
#include "backup.h"

enum pitr_kind { PITR_LATEST = 0, PITR_INDEX, PITR_TIME };

struct pitr_options {
    const char *repo; /* URL of the repository holding the backups and the archive */
    enum pitr_kind kind;
    uint64_t index; /* PITR_INDEX: the last entry to apply */
    /* PITR_TIME: apply the entries before the first stamped after it. With no archived
     * entry of the timeline at or before it, the base backup alone must have been taken
     * at or before it (its creation time), or the target is refused. */
    int64_t time_ms;
    const char *out;
    bool force;
    /* RESTORE_CHECK_* (QUICK or FULL): SQLite's check of the result, run once, after
     * the replay (the base's pages are each checked against their hashes). */
    int check;
    /* As restore_options.finish: the last change to the file before it is put at out. */
    int (*finish)(const char *path, void *arg, char *errmsg);
    void *finish_arg;
};

struct pitr_result {
    char timeline[ARCSEG_TIMELINE_SIZE];
    struct backup_info base;
    uint64_t target;     /* the index asked for (resolved from the time) */
    uint64_t stop_index; /* the last entry applied (base.raft_index when none) */
    int64_t stop_ms;     /* its time; 0 when no entry was applied */
    uint64_t entries;    /* entries replayed */
    uint64_t restores;   /* restore entries that replaced the database on the way */
    /* The history whose index stop_index is: the timeline's (its first segment's), or
     * the base's when it was restored alone; zeros when none is recorded. */
    unsigned char history[ARCSEG_HISTORY_SIZE];
};

/* A timeline and what it can restore. */
struct pitr_window {
    struct arcseg_timeline tl;
    bool usable;   /* a base backup exists */
    uint64_t from; /* the oldest base's index: the window is [from, tl.head] */
    char from_id[BACKUP_ID_SIZE];
    int64_t from_ms; /* when that backup was taken: the earliest time restorable */
    uint64_t bases;  /* backups that can serve as its base */
    unsigned char history[ARCSEG_HISTORY_SIZE]; /* its first segment's (zeros: none) */
    /* The repository holds timelines of more than one history: indexes are ambiguous,
     * and a backup serves a timeline only when it records the timeline's history, or
     * the timeline was started on it (arcsegBaseFits). */
    bool several;
};

/* Every timeline of the open repository repo with its window. With full, every segment
 * is read and checked whole (verify); otherwise headers and links only. *segs and *w
 * are malloc'd (the caller frees both; w[i].tl.from indexes segs). */
int pitrWindows(struct repo *repo, bool full, struct arcseg_info **segs, size_t *nsegs,
                struct pitr_window **w, size_t *nw, char *errmsg);

/* "timeline T: indexes A-B (times ...); ..." for refusals (out: size bytes). */
void pitrDescribeWindows(const struct pitr_window *w, size_t n, char *out, size_t size);

/* Restore o->out as of the target: the archive's segments are read ahead (a few at a
 * time, from the start, while the base is restored; at most 8 MiB of them held). The
 * replay writes its scratch file without a WAL or a sync (store.h STORE_OPEN_SCRATCH);
 * the result is fsynced once, beside SQLite's check of it. Nothing is left at out on
 * failure; errmsg says why (a refused target names the restorable windows, a damaged
 * segment its object and the last index that can be restored before it). */
int pitrRestore(const struct pitr_options *o, struct pitr_result *res, char *errmsg);

#endif
