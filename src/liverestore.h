/* Live restores in two steps: prepare off the loop, swap on it.
 *
 * A live RESTORE replaces the database of every node at one log index. Restoring a
 * chain takes seconds per GiB, and a node's loop thread must not stop for that long
 * (its writes and heartbeats wait on it), so a restore is two log entries:
 *
 *   1. a PREPARE entry (BATCH_RESTORE with the mark RESTORE_PREPARE) names the backup
 *      and its digest. Applying it changes nothing in the database: every node starts
 *      restoring the chain into DB.prepared on this module's thread (fetching the
 *      backup from a peer when it lacks it), at a low CPU priority;
 *   2. the node that asked waits until its own copy is prepared (every page checked
 *      against its hash and the chain's digests, then PRAGMA quick_check), and only
 *      then proposes the SWAP entry (BATCH_RESTORE without the mark). Applying it, each
 *      node stamps the entry's index into its prepared file and renames it over the
 *      database: milliseconds.
 *
 * A follower whose copy is not ready when the swap entry arrives keeps that entry and
 * every later one (fsm.c, "held entries") and goes on answering its leader; its loop
 * is woken when the copy is ready and applies them then. A leader (one elected while a
 * restore was prepared) waits for its copy on the loop: the only case that blocks.
 *
 * One prepared copy at a time per node: a new request replaces the one before it. A
 * copy nobody swaps in (the asking node failed or was killed between the two entries)
 * is removed after PREPARED_TTL_S, at the next request, or when the node starts.
 *
 * Threads: lrStart, lrTake and lrReady on the loop thread; lrWait on any thread (the
 * loop's only when it may block); the preparing thread is this module's own. */
#ifndef CAIRN_LIVERESTORE_H
#define CAIRN_LIVERESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "backup.h"

struct cairn;
struct node;

/* The mark of a PREPARE entry: its second parameter, text. */
#define RESTORE_PREPARE "prepare"

/* A prepared copy not swapped in within this long is removed. */
#define PREPARED_TTL_S 600

/* Set up the module of db (no thread yet) and remove a prepared copy left by an
 * earlier run. 0, or CAIRN_ENOMEM. */
int lrInit(struct cairn *db, char *errmsg);

/* The node whose loop the preparing thread wakes, once nodeStart returned it (a copy
 * prepared during the log's replay wakes nothing: the loop looks at every turn). */
void lrSetNode(struct cairn *db, struct node *node);

/* Stop the preparing thread (a restore in progress runs to its end: the engine has no
 * cancel point) and remove an unused prepared copy. Before the node stops, as the
 * thread wakes its loop; from then on nothing is prepared and lrWait answers
 * CAIRN_ESHUTDOWN. */
void lrStop(struct cairn *db);

/* Free what lrInit made; after the node stopped (its loop calls in until then). */
void lrFree(struct cairn *db);

/* Start preparing backup id (digest) unless it is being prepared or is ready. */
void lrStart(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE]);

/* Whether the swap of id (digest) can be applied without waiting: its copy is ready,
 * or its preparation failed (the apply then says why). Starts preparing it when no
 * one does. */
bool lrReady(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE]);

/* Wait until the preparation of id (digest) ends: 0 when its copy is ready, else the
 * failure (errmsg says why; CAIRN_EBUSY when another restore replaced it,
 * CAIRN_ESHUTDOWN when the node stops). */
int lrWait(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE],
           char *errmsg);

/* Take the ready copy of id (digest): true with its path in path (PATH_MAX) and what
 * was restored in *info; the caller owns the file from then on. False when it is not
 * ready. */
bool lrTake(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE],
            char *path, struct backup_info *info);

/* Whether id (digest) is being prepared now. Any thread. */
bool lrPreparing(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE]);

/* The state for /status: "idle", "preparing", "ready", "failed"; id and the error (when
 * failed) copied into the buffers (BACKUP_ID_SIZE, CAIRN_ERRMSG_SIZE), may be NULL. */
const char *lrState(struct cairn *db, char *id, char *error);

#endif
