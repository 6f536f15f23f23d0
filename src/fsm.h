/* The Raft state machine: libraft's raft_fsm over the store.
 *
 * apply decodes a command and applies it with the entry's index; snapshot takes a
 * consistent image of the database into DATA/snapshots/ while writes go on, and the
 * Raft snapshot itself only carries a small manifest naming that file (the database
 * never passes through libraft's snapshot buffers); restore keeps the database when
 * it is already at or past the snapshot, and otherwise installs the named file.
 * Loop thread, except snapshot_async which runs on libuv's thread pool. */
#ifndef CAIRN_FSM_H
#define CAIRN_FSM_H

#include <limits.h>
#include <raft.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "command.h"
#include "error.h"
#include "result.h"
#include "store.h"

/* The snapshot manifest: what a Raft snapshot carries instead of the database.
 * Version 2 names a backup (.cbk) in DATA/snapshots/, a repository of its own whose
 * chains the backup engine restores; version 1 (earlier builds) named a plain SQLite
 * copy and is still read. */
struct snapshot_manifest {
    int version;
    uint64_t index;    /* Raft index of the snapshot */
    uint64_t db_index; /* applied index stored in the image (<= index) */
    uint64_t size;     /* bytes of the file */
    uint64_t digest;   /* version 1: XXH3-64 of the file */
    unsigned char digest16[16]; /* version 2: the backup's trailer digest */
    char name[128];    /* version 1: file name; version 2: backup id */
};

#define MANIFEST_MAGIC "CSNP"
#define MANIFEST_VERSION 2
#define MANIFEST_SIZE 180
/* Incremental snapshots in a row before the next full one: bounds the chain that a
 * restore walks and the files kept. */
#define SNAPSHOT_CHAIN_MAX 8

/* Applies a BATCH_RESTORE command at `index`: replaces the database with a backup.
 * Like storeApply: SQL-level failures go into *out, a non-zero return means nothing
 * was changed and errmsg says why. Loop thread. */
typedef int (*fsm_restore_fn)(void *data, const struct batch *b, uint64_t index,
                              struct cairn_result **out, char *errmsg);

/* Whether a follower can apply kept entry `index` (a BATCH_RESTORE or BATCH_DIGEST,
 * decoded in b) now, or keeps it and the entries after it for a later turn: false
 * while a restore's copy is prepared off the loop (liverestore.h). Loop thread. */
typedef bool (*fsm_ready_fn)(void *data, const struct batch *b, uint64_t index);

/* A BATCH_DIGEST entry at `index` is applied: the database holds every entry before it
 * and nothing is open. The callee starts computing this node's digest of it (store.h's
 * freeze, read off the loop). Loop thread. */
typedef void (*fsm_digest_fn)(void *data, uint64_t index);

/* A follower's database is damaged (a page failed its checksum) while applying entry
 * `need`: replace it with a healthy copy from a peer whose applied index is at least
 * need - 1 (the entries up to there are in it; later ones apply on top, earlier-applied
 * ones are skipped). 0 when done. Loop thread. */
typedef int (*fsm_heal_fn)(void *data, uint64_t need, char *errmsg);

/* Brings the backup `id` and its chain into `dir` from wherever the cluster has it (the
 * leader's snapshots); 0 when every file is there. Loop thread. */
typedef int (*fsm_fetch_fn)(void *data, const char *dir, const char *id, char *errmsg);

struct fsm {
    struct store *store;
    struct raft *raft;
    char snap_dir[PATH_MAX - 64];
    char source[256];           /* the source name snapshots carry (backup.h) */
    struct store_freeze fz;     /* the image a snapshot in progress copies */
    struct snapshot_manifest snap_manifest; /* of the snapshot in progress */
    uint64_t fz_term;
    unsigned keep_snapshots;
    /* Called on the loop thread after each command entry is applied, with its index,
     * its bytes and its result (or, for an entry that cannot be decoded, a result
     * holding the error): returns true when it takes the result (a request waits on the entry),
     * false to let the fsm free it. */
    bool (*applied)(void *arg, uint64_t index, const struct raft_buffer *buf,
                    struct cairn_result *res);
    void *applied_arg;
    /* libraft keeps in memory every entry since the last snapshot plus `trailing`
     * more, and counts both in entries. With large entries (a 10,000-row request is
     * ~1.6 MB) that is unbounded memory, so the limits actually given to libraft are
     * the configured ones, lowered so that each span holds at most log_budget bytes of
     * average-sized entries. */
    unsigned cfg_threshold;
    unsigned cfg_trailing;
    size_t log_budget;
    double avg_entry; /* moving average of command sizes in bytes */
    uint64_t span_bytes;   /* command bytes applied since the last snapshot */
    uint64_t span_entries; /* and their number */
    unsigned cur_threshold;
    unsigned cur_trailing;
    bool force_snapshot; /* nodeSnapshot(): threshold 1 until the next snapshot */
    /* The last snapshot libraft asked for was refused for now (RAFT_BUSY: a reader held
     * the WAL back, a restore's swap held entries); false once one is taken. libraft
     * asks again only after the next apply: node.c's tick appends one. Loop thread. */
    bool snapshot_deferred;
    fsm_restore_fn restore;
    void *restore_data;
    fsm_ready_fn ready; /* restore_data's */
    /* The kept entry a follower holds (a restore's swap waiting for its copy), 0 when
     * none, and since when (CLOCK_MONOTONIC). */
    uint64_t held_index;
    struct timespec held_since;
    fsm_fetch_fn fetch;
    void *fetch_data;
    fsm_digest_fn digest;
    void *digest_data;
    fsm_heal_fn heal;
    void *heal_data;
    /* The continuous archive (archive.h), NULL when off: every committed command entry,
     * called once per fsmApply call (again for an index whose apply failed: the callee
     * ignores an index it has seen), before it is applied; and a snapshot installed at
     * `index` (no entry up to it will be seen). Loop thread. */
    void (*committed)(void *data, uint64_t index, const struct raft_buffer *buf);
    void (*installed)(void *data, uint64_t index);
    void *archive_data;
    /* The last apply failed (the database could not commit: disk full, I/O error):
     * libraft keeps the entry and retries it with the next commit; the node answers
     * the requests waiting on it meanwhile. Cleared by the next successful apply. */
    int apply_failed;          /* its cairn error code, 0 when none */
    atomic_bool stop;          /* the node is stopping: a follower's retry gives up */
    /* the open group's entries, copied (fsm.c, "grouped apply") */
    struct group_entry {
        uint64_t index;
        size_t len;
        unsigned char *bytes;
        bool said; /* its decode failure is logged */
        bool boundary; /* a restore or a digest: runs on its own (fsm.c, flushKept) */
    } *grp;
    size_t grp_n, grp_cap, grp_bytes;
    char apply_errmsg[CAIRN_ERRMSG_SIZE];
    /* Failed snapshots (disk full, I/O error), counted by the worker thread when the
     * write fails and by the loop thread when the database cannot be frozen for one
     * (fsm.c, snapshotFailed); the message of the last one is complete before the
     * count moves. */
    _Atomic unsigned snapshot_failures;
    int snapshot_error; /* its cairn error code */
    char snapshot_errmsg[CAIRN_ERRMSG_SIZE];
    uint64_t snapshots_taken;
    uint64_t last_snapshot_index;
    char errmsg[CAIRN_ERRMSG_SIZE];
    void (*log)(void *data, const char *line);
    void *log_data;
};

void fsmInit(struct fsm *f, struct raft_fsm *rf, struct store *store, struct raft *raft,
             const char *snap_dir);
void fsmClose(struct fsm *f);

/* Run and commit, as one group (store.h, "Grouped apply"), the entries a follower
 * kept when libraft applied them (fsm.c): before anything reads the database as of
 * libraft's last applied index (snapshots, backups, barriers, applying as leader). A
 * follower whose database cannot take them waits and tries again; one that holds
 * entries behind a restore's swap waits for the copy (fsmEndOfTurn does not). Loop
 * thread. */
int fsmFlush(struct fsm *f);

/* End of a loop turn: run and commit a follower's kept entries, if any (an early run,
 * which waits for its entry, stays open), as fsmFlush does, except that it never waits
 * for a restore's copy: entries from a swap whose copy is not ready stay kept ("held")
 * for a later turn, and the loop goes on. Loop thread. */
int fsmEndOfTurn(struct fsm *f);

/* Whether a follower holds entries behind a restore's swap now. Loop thread. */
bool fsmHeld(const struct fsm *f);
/* Whether entries libraft counts as applied are not all committed in the database yet:
 * kept for this turn (or held behind a restore's swap), or applied in a group not
 * committed yet (the end of the loop's turn commits it). Loop thread. */
bool fsmPending(const struct fsm *f);

/* The identity of a command for early apply (store.h): its length and checksum. */
void fsmEntryKey(const void *p, size_t len, unsigned char key[STORE_EARLY_KEY]);

/* Set the configured snapshot threshold and trailing count (entries) and the memory
 * budget for each span (bytes); applies them to libraft. Loop thread. */
void fsmSetLimits(struct fsm *f, unsigned threshold, unsigned trailing, size_t budget);

void manifestEncode(const struct snapshot_manifest *m, unsigned char out[MANIFEST_SIZE]);
int manifestDecode(const void *p, size_t n, struct snapshot_manifest *m, char *errmsg);

#endif
