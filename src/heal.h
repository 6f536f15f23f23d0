/* Crash safety: what a node does when it starts after an unclean stop (auto-heal),
 * and the offline repairs of `cairn repair`.
 *
 * A node marks its data directory DATA/RUNNING while it runs and removes the mark
 * after a clean stop. Finding the mark at start means the last run ended uncleanly
 * (kill -9, power loss, crash): the node then verifies the Raft log (raftlog.h) and
 * runs PRAGMA quick_check and the start's page check (pagesum.h) on the database. A
 * damaged database is moved aside to DATA/corrupt/ (never deleted) and rebuilt from
 * the newest snapshot plus the log, once its snapshot chain verifies; a
 * damaged log stops the start with the file and offset, since dropping entries could
 * lose acknowledged writes. What was found and done is logged, kept in
 * DATA/last_recovery.json and shown in /status as "last_recovery".
 *
 * A repair writes DATA/repair-undo.json before it moves anything and removes it once
 * its new state is complete: a repair cut off (kill -9, crash) is undone by the next
 * start (at every start, clean or not) or the next repair. */
#ifndef CAIRN_HEAL_H
#define CAIRN_HEAL_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

struct cairn;

/* Before the store opens (the lock is held): undoes a repair that was cut off, settles
 * what a restore killed while replacing DATA/db.sqlite left, then checks as above.
 * Non-zero: the node must not start; errmsg says why and what the operator can do. */
int healBeforeOpen(struct cairn *db, char *errmsg);

/* After the node has started: completes the record of a recovery (the index the
 * database reached) and writes it; in a repair's own replay, marks the repair complete. */
void healAfterOpen(struct cairn *db);

/* After a clean stop: remove the running mark. */
void healMarkClean(struct cairn *db);

/* The last recovery as JSON, or null. */
void healStatusJson(struct cairn *db, struct buf *b);

/* ---- cairn repair -------------------------------------------------------------------- */

enum heal_mode {
    HEAL_REBUILD = 1, /* from the node's own snapshot + log */
    HEAL_FROM_BACKUP, /* from a backup of a repository, then the log past it */
    HEAL_FROM_PEER,   /* from a running node of the same cluster */
    HEAL_ADD_CHECKSUMS /* rewrite a healthy database with page checksums (pagesum.h) */
};

struct heal_options {
    const char *data_dir;
    enum heal_mode mode;
    const char *backup_id; /* HEAL_FROM_BACKUP */
    const char *repo;
    const char *peer;                         /* HEAL_FROM_PEER: its HTTP address */
    bool force;                               /* rebuild even when nothing is found damaged */
    void (*say)(void *arg, const char *line); /* one line per step (may be NULL) */
    void *say_arg;
};

/* Repair a stopped node's data directory. Every damaged file is kept in DATA/corrupt/.
 * A repair cut off earlier is undone first ("interrupted_repair" in the report); one
 * that fails after it moved files puts them back. report receives a JSON object of
 * what was found and changed. 0 when the data directory is healthy afterwards. */
int healRepair(const struct heal_options *o, struct buf *report, char *errmsg);

#endif
