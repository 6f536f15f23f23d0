/* The server's backup operations: backups of the live database, restores into a
 * branch or (through the Raft log) into the live database, branches, and cairn's own
 * SQL statements (sqlfront.h) answered as result rows.
 *
 * A backup freezes the database on the loop thread for the moment of a checkpoint
 * (storeFreeze) and copies pages on the calling thread while writes go on; a live
 * restore is two log entries naming the backup and its digest (liverestore.h), applied
 * by adminApplyRestore on the loop thread of every node. Any thread but the loop's,
 * except adminApplyRestore. */
#ifndef CAIRN_ADMIN_H
#define CAIRN_ADMIN_H

#include <stdint.h>

#include "backup.h"
#include "buf.h"
#include "command.h"
#include "pitr.h"
#include "result.h"
#include "sqlfront.h"
#include "store.h"

struct cairn;

/* Freeze the live database for reading its file (storeFreeze on the loop thread),
 * retrying for up to a minute while readers keep the WAL from being checkpointed.
 * Release with storeThaw(). */
int adminFreeze(struct cairn *db, struct store_freeze *fz, char *errmsg);

/* 0 when `to` (BACKUP ... TO, POST /admin/backup's "to") names a repository this node
 * was configured with (reposetPick: NULL, "" or "default" for the default one, a name,
 * or a repository's path or URL), *which its index in db->repos. Otherwise
 * CAIRN_EINVAL, errmsg naming the node's repositories: a backup never goes anywhere
 * else. */
int adminRepository(struct cairn *db, const char *to, unsigned *which, char *errmsg);

/* Backup `id` in one of the server's repositories (out->repository names it); in a
 * cluster, one only in a peer's repository is fetched (with its chain) into the default
 * repository first. */
int adminFindBackup(struct cairn *db, const char *id, struct backup_info *out, char *errmsg);

/* The URL of the server's repository that holds info (adminFindBackup): the one its
 * `repository` names, the default when it names none. */
const char *adminRepoUrl(struct cairn *db, const struct backup_info *info);

/* Restore backup id, the file whose digest a restore entry names, into the new file
 * out (backupRestore: every page checked, out replaced), for that entry: from this
 * node's copy (adminFindBackup), and in a cluster, when that copy cannot be restored
 * (damaged, another file under the name, a parent missing), from a copy of a peer
 * fetched into a scratch repository beside the database (DB.fetched/, removed after).
 * The entry is proposed only once its proposer has restored the same file from its own
 * copy, so a failure here is this node's own, which the caller must not skip: its rows
 * would differ from every other node's. Any thread; it waits on the network and disk. */
int adminRestoreCopy(struct cairn *db, const char *id, const unsigned char *digest,
                     const char *out, struct backup_info *info, char *errmsg);
/* Remove what a killed adminRestoreCopy left (DB.fetched/), at start. */
void adminRestoreCopyClean(struct cairn *db);

/* Back up the live database into the repository `to` (adminRepository; NULL: the
 * default). In a cluster an incremental or differential backup chains to the newest
 * (full) backup of any node in the repository of that name, fetched first when it is
 * only in a peer's.
 * *out describes the new backup. */
int adminBackup(struct cairn *db, int type, const char *to, backup_progress_fn progress,
                void *progress_arg, struct backup_info *out, char *errmsg);

/* Restore backup `ref` (id in the server's repository, or a path to a .cbk) into
 * branch `branch`, or into the live database when branch is NULL or "" (through the
 * log; *index receives the entry's index). *out describes the backup restored. */
int adminRestore(struct cairn *db, const char *ref, const char *branch,
                 backup_progress_fn progress, void *progress_arg, struct backup_info *out,
                 uint64_t *index, char *errmsg);

/* Restore the state of a repository's continuous archive as of an archive point (kind
 * PITR_LATEST, PITR_INDEX with index, PITR_TIME with time_ms: pitr.h), into branch
 * `branch`, or into the live database when branch is NULL or "" (the state kept as a
 * full backup in the default repository, then restored through the log: *at receives
 * the swap entry's index, *out describes the kept backup). For a branch *out is the
 * base backup and *at the index restored. `from` names the repository: one of the
 * node's by name or path ("" or "default": the default one), the repository of a
 * backup the node holds, or any repository path or URL. *res says where the replay
 * stopped (index, time) and from which base. A target outside what the repository can
 * restore is refused (CAIRN_ENOTFOUND) with the restorable windows in errmsg. */
int adminRestoreAsOf(struct cairn *db, const char *from, const char *branch,
                     enum pitr_kind kind, uint64_t index, int64_t time_ms,
                     struct pitr_result *res, struct backup_info *out, uint64_t *at,
                     char *errmsg);

/* cairnd --restore-from (cairn_config.restore_from): when the database holds no schema of
 * the user's, restore backup ID (default: the newest readable) of the repository `spec`
 * ("DIR[#ID]", "file:///DIR[#ID]", "s3://BUCKET/PREFIX[#ID]") through the log, after
 * copying its chain into the node's repository (so that the node can list, verify and
 * serve it); otherwise log that nothing was done and return 0. When the repository holds
 * a continuous archive, no fragment (or "#latest") restores its newest state, the newest
 * backup plus the archive replayed to its head, "#N" (digits) its state as of index N,
 * "#TIME" (ISO-8601, 2026-12-02T10:02:00Z) its state as of that time; the state is
 * kept as a full backup in the node's default repository and restored through the log
 * like any other. Called by cairn_open once the lone node leads, before
 * the API serves. */
int adminRestoreFrom(struct cairn *db, const char *spec, char *errmsg);

/* Path of branch `name`'s database (PATH_MAX bytes). CAIRN_EINVAL for a bad name,
 * CAIRN_ENOTFOUND when there is no such branch. */
int adminBranchPath(struct cairn *db, const char *name, char *path, char *errmsg);

int adminDropBranch(struct cairn *db, const char *name, char *errmsg);

/* Append the JSON array of branches ({"name", "path", "size_bytes"}) to b. */
void adminBranchesJson(struct cairn *db, struct buf *b);

/* Append the JSON array of Raft snapshots: {"index", "backup": the catalog entry of the
 * backup the snapshot names}. */
void adminSnapshotsJson(struct cairn *db, struct buf *b);

/* Run a cairn statement; *out holds one result row (or the statement's error). */
int adminStatement(struct cairn *db, const struct sqlfront_cmd *cmd, struct cairn_result **out,
                   char *errmsg);

/* The FSM's hook for BATCH_RESTORE entries (fsm_restore_fn); data is the cairn.
 * A PREPARE entry starts preparing the backup's copy off the loop (liverestore.h); the
 * swap entry puts the prepared copy in place, or restores on the loop when there is
 * none (a replay). Loop thread. */
int adminApplyRestore(void *data, const struct batch *b, uint64_t index,
                      struct cairn_result **out, char *errmsg);

/* The FSM's readiness hook (fsm_ready_fn): whether the entry at index can be applied
 * now without waiting; false only for a swap entry whose copy is being prepared
 * (starting it when nobody does). Loop thread. */
bool adminRestoreReady(void *data, const struct batch *b, uint64_t index);

/* Replica digests: a BATCH_DIGEST entry makes every node digest its database as of
 * that entry (XXH3-64 over every page, with page 1's bookkeeping fields, which differ
 * between copies of the same data, and the pages' reserved bytes masked), so that the
 * nodes can be compared at one index (`cairn check --host`). */
struct db_digest;
#define DIGEST_PENDING 1
#define DIGEST_DONE 2
#define DIGEST_FAILED 3

/* Propose a digest entry (through the log: the leader's) and return its index. */
int adminProposeDigest(struct cairn *db, uint64_t *index, char *errmsg);

/* The FSM's hook (fsm_digest_fn): freeze the database and digest it on a thread of its
 * own. Loop thread. */
void adminApplyDigest(void *data, uint64_t index);

/* This node's digest at index: 0 and *out filled (its state may be pending), or
 * CAIRN_ENOTFOUND. Any thread. */
int adminDigest(struct cairn *db, uint64_t index, struct db_digest *out);

/* Wait for the digest threads to end (asking them to stop). Before the store closes. */
void adminDigestsStop(struct cairn *db);

/* The source name this server's backups carry. */
void adminSourceName(struct cairn *db, char *out, size_t size);

/* Store `index` as the applied index of the SQLite file at path (not open elsewhere):
 * the log replays what comes after it. */
int adminSetAppliedIndex(const char *path, uint64_t index, char *errmsg);

#endif
