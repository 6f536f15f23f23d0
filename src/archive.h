/* The continuous archive's writer (issue 18; segments: src/backup/arcseg.h).
 *
 * Every node started with --archive keeps the committed command entries it applies in
 * a ring bounded in bytes (archivePush, from the fsm on the loop thread: a copy, and
 * nothing else on the loop). The archiver (the leader; with --archive-from follower a
 * caught-up follower, see below) runs a thread that every --archive-interval (or as
 * soon as --archive-segment-bytes are waiting) cuts the entries past the archive's head
 * into a segment and uploads it to the repository --archive-to names.
 *
 * The ring is a cache, not the source: when it lacks an entry the archive needs (it
 * dropped the oldest to stay within --archive-queue-bytes while the repository was down
 * or slow, or the node restarted), the archiver reads the entries back from libraft's
 * log, which holds every entry since the last snapshot but --snapshot-trailing, in
 * memory as on disk. It does so on the loop thread (nodeCall, a copy of at most one
 * segment's bytes per call): libraft's log is the loop thread's, and its files are
 * written, closed and deleted by compaction there, so no other thread reads them. Only
 * when the log no longer holds the entry either (compacted after a snapshot: the log
 * outran the archive) does the archiver say so (its log, /status `outran`), take a full
 * backup, and start a new timeline from it.
 *
 * Timelines: when a node becomes the archiver it reads the archive's head (the newest
 * segment of every timeline); when its ring or log holds the head's entry, with the same
 * bytes, it continues the timeline from there: no gap, no duplicate. A head entry that
 * differs, or an index this cluster never committed, is another history's: a new
 * timeline on a full backup taken now. A fresh archive starts a new timeline on a base
 * backup at index B (the newest of the repository that the ring continues, or a full
 * backup taken now), whose first segment starts at B + 1. Two archivers uploading the
 * same range (an old leader that has not noticed yet) collide on the object's name,
 * which is created only when absent: the loser reads the head again.
 *
 * --archive-from follower: the archiver is the lowest-id voter that is not the leader,
 * while it is caught up (it knows the leader and has applied what it knows committed,
 * within NODE_FOLLOWER_MAX_LAG entries); the leader archives when there is no such voter or
 * it has not heard from that one within the election timeout or it lags. Each node
 * decides for itself from its own view, so two may archive for a moment: harmless, as
 * above. The head a follower reads then may be past the commit index it knows (the
 * leader committed with the other voters): one of its own history is waited for,
 * never taken for another history's (that forked the archive).
 *
 * --archive-sync: a write is answered only once the entry it made is in the
 * repository (archiveWait, on the thread that answers the write, after its entry
 * applied). A waiting write kicks the archiver, which closes the segment at once rather
 * than after the interval, and every upload wakes every waiting write: one upload
 * serves all the entries it holds (group commit). Only with the leader archiving.
 *
 * Threads: archivePush/archiveReset on the loop thread; the archiver's own thread;
 * archiveStatus, archiveSync and archiveWait any thread but the loop's. */
#ifndef CAIRN_ARCHIVE_H
#define CAIRN_ARCHIVE_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>

#include "arcseg.h"
#include "backup.h"
#include "error.h"

struct cairn;
struct archiver;

/* Create the ring for db (nothing when db->cfg.archive is off: *out NULL). The
 * repository is checked by name now, opened by the thread. */
int archiveCreate(struct cairn *db, struct archiver **out, char *errmsg);
/* Start the thread, once the node runs. */
int archiveStart(struct archiver *a, char *errmsg);
/* Stop the thread: a last upload of what waits, if this node archives. Before the node
 * stops (the thread asks it whether it leads, and may take a backup). */
void archiveStop(struct archiver *a);
/* Free the ring, after the node stopped (no more pushes). NULL is fine. */
void archiveFree(struct archiver *a);

/* fsm hooks (fsm.h): a committed command entry (copied; an index already seen is
 * ignored: libraft applies an entry again after a failed apply), and a snapshot
 * installed at index (the entries up to it will never be pushed). Loop thread. */
void archivePush(void *data, uint64_t index, const struct raft_buffer *buf);
void archiveReset(void *data, uint64_t index);

#define ARCHIVE_TIMELINES_MAX 8 /* the timelines /status lists, the newest */

struct archive_status {
    bool enabled;
    const char *role; /* "archiver", "standby" */
    const char *from; /* --archive-from: "leader", "follower" */
    char repository[BACKUP_REPO_NAME_SIZE];
    char timeline[ARCSEG_TIMELINE_SIZE];
    char history[2 * ARCSEG_HISTORY_SIZE + 1]; /* its history id in hex; "" when none */
    uint64_t head_index; /* the last index the archive holds, as this node knows it */
    int64_t head_ms;     /* the time of that entry */
    uint64_t lag_entries;
    double lag_seconds;
    uint64_t segments, bytes, entries; /* uploaded by this node */
    uint64_t timelines_started;
    uint64_t queue_entries, queue_bytes;
    uint64_t covered_from;
    uint64_t log_reads, log_entries; /* entries read back from libraft's log */
    /* The log outran the archive on this node (sticky): outruns times, the last one at
     * outran_ms, when entry outrun_index was no longer in the log. */
    bool outran;
    uint64_t outrun_index, outruns;
    int64_t outran_ms;
    /* The repository's timelines as this node last saw them (it reads them when it
     * becomes the archiver) and as it extends them: start index, head index. */
    unsigned ntimelines;
    struct {
        char name[ARCSEG_TIMELINE_SIZE];
        uint64_t start, head;
    } timelines[ARCHIVE_TIMELINES_MAX];
    char last_error[CAIRN_ERRMSG_SIZE];
    int64_t last_error_ms;
    bool sync;             /* --archive-sync */
    unsigned sync_waiting; /* writes waiting for their upload now */
};

/* Whether writes wait for the archive (--archive-sync); false when a is NULL. */
bool archiveSync(const struct archiver *a);

/* --archive-sync: wait until the archive holds index (a committed entry this node
 * applied), at most --archive-sync-timeout (default 10 s). 0 once it does; otherwise
 * CAIRN_ENOTARCHIVED, errmsg saying that the write was applied and at which index, and
 * why it is not archived yet (the last upload's error, a lost leadership, a stop). Not
 * on the loop thread (the entry is uploaded off it, but pushed by it). */
int archiveWait(struct archiver *a, uint64_t index, char *errmsg);

/* A copy of the figures; enabled false when a is NULL. Any thread. */
void archiveStatus(struct archiver *a, struct archive_status *st);

#endif
