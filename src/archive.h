/* The continuous archive's writer (issue 18; segments: src/backup/arcseg.h).
 *
 * Every node started with --archive keeps the committed command entries it applies in
 * a ring bounded in bytes (archivePush, from the fsm on the loop thread: a copy, and
 * nothing else on the loop). The archiver, the leader, runs a thread that every
 * --archive-interval (or as soon as --archive-segment-bytes are waiting) cuts the
 * entries past the archive's head into a segment and uploads it to the repository
 * --archive-to names. The ring is also the queue: what the archiver has not uploaded
 * yet is what its ring holds past the head, and when the ring must drop such an entry
 * (the repository is down, or slower than the writes) the archiver says so and starts
 * a new timeline instead of growing.
 *
 * Why a ring on every node rather than reading the Raft log back: libraft's log is the
 * loop thread's (its segments are written, closed and deleted by compaction there);
 * another thread reading them would race with all three, and a new leader needs only
 * the recent entries that the archive's head does not have yet, which the ring holds
 * at the cost of one copy per entry, bounded in memory.
 *
 * Timelines: when a node becomes the archiver it reads the archive's head (the newest
 * segment of every timeline); when its ring holds every command entry after that head
 * it continues the timeline: no gap, no duplicate. Otherwise (a fresh archive, a lag
 * the ring could not absorb) it starts a new timeline on a base backup at index B (the
 * newest of the repository that its ring continues, or a full backup taken now), whose
 * first segment starts at B + 1. Two archivers uploading the same range (an old leader
 * that has not noticed yet) collide on the object's name, which is created only when
 * absent: the loser reads the head again.
 *
 * --archive-sync: a write is answered only once the entry it made is in the
 * repository (archiveWait, on the thread that answers the write, after its entry
 * applied). A waiting write kicks the archiver, which closes the segment at once rather
 * than after the interval, and every upload wakes every waiting write: one upload
 * serves all the entries it holds (group commit).
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

struct archive_status {
    bool enabled;
    const char *role; /* "archiver", "standby" */
    char repository[BACKUP_REPO_NAME_SIZE];
    char timeline[ARCSEG_TIMELINE_SIZE];
    uint64_t head_index; /* the last index the archive holds, as this node knows it */
    int64_t head_ms;     /* the time of that entry */
    uint64_t lag_entries;
    double lag_seconds;
    uint64_t segments, bytes, entries; /* uploaded by this node */
    uint64_t timelines_started;
    uint64_t queue_entries, queue_bytes;
    uint64_t covered_from;
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
