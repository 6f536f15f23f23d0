/* The node: one libuv loop thread that owns libraft, its I/O, the state machine and
 * the store's writer connection.
 *
 * Nothing in libraft is thread-safe, so other threads reach the loop only through
 * a mutex-protected queue and uv_async_send (sends coalesce: every wake-up drains the
 * whole queue). Each queued operation is completed exactly once, on the loop thread,
 * and the submitting thread waits for that completion. Group commit falls out of
 * this: every command drained in one loop turn is appended to the Raft log in one
 * write and one fsync. */
#ifndef CAIRN_NODE_H
#define CAIRN_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "cairn.h"
#include "error.h"
#include "result.h"
#include "fsm.h"
#include "store.h"

struct node;

/* How a node's first start forms its Raft configuration (later starts find it on disk). */
enum node_boot {
    NODE_BOOT_SELF = 0, /* a one-voter cluster of this node */
    NODE_BOOT_NONE,     /* nothing: the node waits to be added by a cluster's leader */
    NODE_BOOT_SERVERS   /* the given voters, the same list on every node started together */
};

/* One server of the Raft configuration. */
struct node_server {
    uint64_t id;
    char address[128];
    int role; /* RAFT_VOTER, RAFT_STANDBY, RAFT_SPARE */
};

#define NODE_MAX_SERVERS 16

#define NODE_CLUSTER_ID_SIZE 16

struct node_config {
    uint64_t id;
    const char *raft_addr; /* NULL: local transport, single node without network */
    const char *raft_dir;
    const char *snap_dir;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    void (*log)(void *data, const char *line);
    void *log_data;
    /* Applies a BATCH_RESTORE command (see fsm.h); loop thread. */
    fsm_restore_fn restore;
    fsm_ready_fn ready; /* with restore_data: can a kept restore entry apply now (fsm.h) */
    void *restore_data;
    /* Fetches a snapshot's backup chain that is not in snap_dir; loop thread. */
    fsm_fetch_fn fetch;
    void *fetch_data;
    /* Digests the database at a BATCH_DIGEST entry (see fsm.h); loop thread. */
    fsm_digest_fn digest;
    void *digest_data;
    /* Heals a follower's damaged database from a peer (fsm.h); loop thread. */
    fsm_heal_fn heal;
    void *heal_data;
    /* The continuous archive's hooks (fsm.h: committed, installed); NULL when off. */
    void (*committed)(void *data, uint64_t index, const struct raft_buffer *buf);
    void (*installed)(void *data, uint64_t index);
    void *archive_data;
    /* On a follower, asks the leader for a log entry (nodeSnapshot needs one applied
     * after it lowers the threshold); NULL: followers cannot be asked for snapshots. */
    int (*nudge)(void *data, char *errmsg);
    void *nudge_data;
    enum node_boot boot;
    const struct node_server *servers; /* NODE_BOOT_SERVERS */
    unsigned n_servers;
    /* Wait in nodeStart until the node is ready (a single node leads at once); a
     * cluster member returns as soon as Raft runs. */
    bool wait_ready;
    /* The cluster's id (cluster.h); all zeros: none (a cluster formed before ids, or a
     * node without network). Sent in every Raft connection's handshake; a connection
     * whose sender names another id is refused (node.c). */
    unsigned char cluster_id[NODE_CLUSTER_ID_SIZE];
};

/* Start the node over an open store and wait until it is leader with every
 * earlier entry applied (a single node), or until timeout_ms passes. On failure
 * *out is NULL and errmsg says why. Any thread. */
int nodeStart(const struct node_config *cfg, struct store *store, unsigned timeout_ms,
              struct node **out, char *errmsg);

/* Offline, with no node on raft_dir: start a new Raft log in raft_dir (which must hold no
 * log) whose first state is a snapshot at `index`, in term `term`, carrying the `len`
 * bytes of `data` (a snapshot manifest, fsm.h) and the configuration servers[0..n);
 * the current term is `term`, with no vote. The next start loads the snapshot (the
 * fsm keeps a database already at or past it) and appends after it. For `cairn
 * repair`, which rebuilds a damaged log from an intact database (heal.c). */
int nodeResetLog(const char *raft_dir, uint64_t id, const char *address, uint64_t term,
                 uint64_t index, const struct node_server *servers, unsigned n,
                 const void *data, size_t len, char *errmsg);

/* Stop the loop (pending operations fail with CAIRN_ESHUTDOWN) and free the node. */
void nodeStop(struct node *n);

/* Make the loop run a turn (its end-of-turn work looks again at what waits: a
 * follower's held entries, fsm.c). Any thread, until nodeStop. */
void nodeWake(struct node *n);

/* Whether the calling thread is a node's loop thread (assertions; n may be NULL: the
 * node being started replays its log before nodeStart returns it). */
bool nodeOnLoop(const struct node *n);

/* The node's libraft instance, for a function nodeCall runs on the loop thread (the
 * continuous archive reads entries back from libraft's log and the leader's replication
 * progress, archive.c); asserts that it is the loop thread. */
struct raft;
struct raft *nodeRaft(struct node *n);

/* On the leader: whether follower id was heard from within the election timeout and
 * its log is within max_lag entries of the leader's (*yes; false on a node that is not
 * the leader). The continuous archive and the backup schedule use it to let a
 * follower do their work (--archive-from follower, "from": "follower"). Not on the loop
 * thread (it waits for it): 0, or CAIRN_ESHUTDOWN. */
int nodeFollowerCaughtUp(struct node *n, uint64_t id, uint64_t max_lag, bool *yes,
                         char *errmsg);

/* Append an encoded command to the log and wait until it is applied. On success
 * *out holds the results (owned by the caller). cmd must come from malloc (libraft's
 * default allocator, which cairn keeps): it is handed to libraft as the entry's
 * payload, not copied (a 10,000-row request is ~1.2 MB), and is the node's in every
 * case. b is the batch cmd encodes, or NULL: the calling thread may run it early
 * (store.h) while the loop writes the entry. Any thread but the loop's. */
int nodeApply(struct node *n, void *cmd, size_t len, const struct batch *b,
              struct cairn_result **out, char *errmsg);

/* Wait until a barrier entry appended now is applied: this node was leader at a
 * quorum's word and every earlier entry is in the database. */
int nodeBarrier(struct node *n, char *errmsg);

/* Run fn(arg, errmsg) on the loop thread, between applies, and wait for it; returns
 * what fn returned. fn must be short: the loop does nothing else meanwhile. Any thread
 * but the loop's. */
int nodeCall(struct node *n, int (*fn)(void *arg, char *errmsg), void *arg, char *errmsg);

/* Take a Raft snapshot now (after the entries appended so far) and wait for it to be
 * written; *index receives its index. Any thread but the loop's. */
int nodeSnapshot(struct node *n, uint64_t *index, char *errmsg);

/* The same without waiting: the snapshot is taken once the entry appended now is
 * applied, and written off the loop. Any thread but the loop's. */
int nodeSnapshotSoon(struct node *n, char *errmsg);

/* Membership changes, on the leader (others get CAIRN_ENOTLEADER); CAIRN_EBUSY while
 * another change is committing. Each waits until the change is committed. ADD puts the
 * server in as a spare; ASSIGN gives it a role (libraft first catches a new voter up in
 * rounds, see cluster.c's keeper, which promotes only standbys that have caught up). */
enum node_change { NODE_ADD = 1, NODE_ASSIGN, NODE_REMOVE };
int nodeChange(struct node *n, enum node_change kind, uint64_t id, const char *address,
               int role, char *errmsg);

struct node_info {
    uint64_t id;
    char address[128];
    int state; /* RAFT_FOLLOWER, RAFT_CANDIDATE, RAFT_LEADER, RAFT_UNAVAILABLE */
    uint64_t term;
    uint64_t leader_id;
    char leader_address[128];
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    uint64_t snapshots_taken;
    uint64_t last_snapshot_index;
    uint64_t applies;
    uint64_t held_index; /* follower: the restore's swap it holds entries behind, or 0 */
    bool ready; /* leader: known, and its term's start applied; follower: leader known and
                   everything known committed applied */
    unsigned voters;
    unsigned n_servers; /* the configuration as this node knows it */
    struct node_server servers[NODE_MAX_SERVERS];
};

/* A copy of the latest figures, refreshed by the loop thread. Any thread. n NULL (while
 * the node starts, before nodeStart returns it): all zeros, a node that knows no
 * leader and no servers. */
void nodeInfo(struct node *n, struct node_info *info);

/* The follower that does work in the leader's place (--archive-from follower, a backup
 * schedule's "from": "follower"): the lowest-id voter that is not the leader in info; 0
 * when there is none. It does it while its log is within NODE_FOLLOWER_MAX_LAG entries
 * of the leader's. */
#define NODE_FOLLOWER_MAX_LAG 1024u
uint64_t nodeDesignatedFollower(const struct node_info *info);

const char *nodeStateName(int state);

#endif
