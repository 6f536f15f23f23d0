/* The housekeeping thread: the one place for cairnd's periodic work on backups. It
 * takes the backups the backup configuration (bconfig.h, cairnd --backup-config)
 * schedules, applies the retention policy after each (expire.h) and runs restore
 * drills, for every configured repository.
 *
 * Cluster-aware: on each node the thread looks at the node's Raft state, and only the
 * node that should runs a repository's schedule: the ready leader ("from": "leader",
 * the default), or the lowest-id voter that is not the leader while it is caught up
 * ("from": "follower"; the leader while there is none, or it is down or behind).
 * Whenever a node becomes that node, and again before every run, it reads the
 * repository's catalog (on becoming it, the other members' too): the newest
 * backup of each type there says when the next one is due (the newest verification,
 * when the next drill is). A run that is overdue runs at once, once; a run that is not
 * due is not taken, whichever node took the last one. The catalog is the repository's:
 * a repository the nodes share (S3, a shared directory) is what makes a new leader
 * continue exactly where the old one stopped.
 *
 * Backups go through adminBackup, the path POST /admin/backup takes. A drill verifies
 * the newest backup's chain with a trial restore and SQLite's integrity_check
 * (backupVerifyOpt), which records the outcome in the catalog (`verified`,
 * `verified_at`), in scratch space beside the data directory (DATA.drill, removed
 * after) once it has checked there is room; with an archive in the repository it then
 * restores the archive to a random index of its newest timeline (pitrRestore) and checks
 * that too. Failures, and a backup older than two periods of its schedule, are alerts
 * (logged, /status, /readyz?backups, the repository's webhook: alert.h).
 *
 * Threads: the housekeeping thread runs the work (never the loop thread: it waits on
 * it); cairnd's main thread starts, reloads and stops it; HTTP threads read its state
 * (GET /admin/backup-config, /status) under its lock. */
#ifndef CAIRN_HOUSEKEEPING_H
#define CAIRN_HOUSEKEEPING_H

#include <stdbool.h>

#include "bconfig.h"
#include "buf.h"
#include "cairn.h"
#include "error.h"

struct cairn;
struct housekeeping;

/* Check the backup configuration at path against the repositories cfg gives the node
 * (as cairn_open will configure them), before the node starts: 0, or an error code
 * with errmsg naming the file, the key and what is wrong. */
int housekeepingCheck(const struct cairn_config *cfg, const char *path, char *errmsg);

/* Read the configuration at path against db's repositories and start the thread for
 * db (open). 0 and *out, the caller's (housekeepingStop, then housekeepingFree after
 * cairn_close); otherwise errmsg says why and nothing runs. Main thread. */
int housekeepingStart(struct cairn *db, const char *path, struct housekeeping **out, char *errmsg);

/* Read the file again (SIGHUP): on success the new configuration replaces the old at
 * once (each repository's schedule recomputed from its catalog); on failure the old
 * one stays and errmsg says what is wrong. Main thread. */
int housekeepingReload(struct housekeeping *hk, char *errmsg);

/* Stop the thread and wait for it (a backup or drill under way finishes first). The
 * state stays readable until housekeepingFree. NULL is fine. Main thread. */
void housekeepingStop(struct housekeeping *hk);
/* Free it: after cairn_close (no HTTP thread reads it any more). NULL is fine. */
void housekeepingFree(struct housekeeping *hk);

/* GET /admin/backup-config: append the effective configuration (bconfigJson, with
 * "reloaded" counts) to b and return true; false, b untouched, when db has none. HTTP
 * threads. */
bool housekeepingConfigJson(struct cairn *db, struct buf *b);

/* /status: append the "backups" section's value: null when db has no backup
 * configuration; otherwise per repository and backup type the last success (id, time,
 * age), the last failure (time, message), the next run, and the last drill and
 * expiry. HTTP threads. */
void housekeepingStatusJson(struct cairn *db, struct buf *b);

/* GET /readyz?backups: false, why saying what (the repository, and which), when a
 * repository whose schedule this node runs has an alert standing: its last run of a
 * type failed, a backup of a type is stale (older than two periods of its schedule),
 * its last drill failed, or its last expiry failed. True when none has, or db has no
 * backup configuration. HTTP threads. */
bool housekeepingBackupsOk(struct cairn *db, char *why, size_t size);

#endif
