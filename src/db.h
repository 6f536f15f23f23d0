/* The cairn handle: the data directory, its lock, the store, the node and the HTTP
 * front end, and the one routine every front end uses to run a batch (dbRun), which
 * sends writes through the Raft log and serves reads at the requested level.
 * Any thread (see include/cairn.h). */
#ifndef CAIRN_DB_H
#define CAIRN_DB_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cairn.h"
#include "command.h"
#include "error.h"
#include "lock.h"
#include "node.h"
#include "reposet.h"
#include "result.h"
#include "store.h"

struct http_server;

struct cairn {
    struct cairn_config cfg; /* strings point into the copies below */
    char data_dir[PATH_MAX - 128];
    char raft_addr[128];
    char http_addr_cfg[128];
    char backup_dir[PATH_MAX - 128]; /* the default repository's URL: repos.r[0].url */
    struct reposet repos; /* --backup-dir and --repo NAME=URL; read-only once open */
    int backup_codec;     /* cfg.backup_compression parsed: BACKUP_CODEC_* and the */
    int backup_level;     /* codec's level (backupParseCompression) */
    char restore_from[PATH_MAX]; /* cfg.restore_from, copied */
    char db_path[PATH_MAX];
    char raft_dir[PATH_MAX];
    char snap_dir[PATH_MAX];
    struct dirlock lock; /* DATA/LOCK and DATA (lock.h) */
    /* The raft address, bound (not listening) from the start until Raft listens on it:
     * a connection this process or another opens meanwhile (forming a cluster, joining
     * one) could otherwise be given its port as its own, when the port is one the
     * system hands out for outgoing connections. -1 when not held. */
    int raft_hold_fd;
    struct store *store;
    struct node *node;
    struct http_server *http;
    char http_addr[128]; /* the address actually bound */
    time_t started;

    /* clusters (cluster.h) */
    char join[8][160];       /* --join: peers' HTTP URLs */
    unsigned n_join;
    unsigned bootstrap_expect;
    /* What this node bootstrapped. HTTP threads read it (GET /cluster/identity) while
     * cairn_open fills it: the count is published once the entries are written. */
    struct node_server boot_servers[NODE_MAX_SERVERS];
    _Atomic unsigned n_boot_servers;
    atomic_bool running;     /* the node is started: every endpoint is served */
    /* The cluster's id (cluster.h: clusterPrepare settles it before Raft starts; zeros:
     * none), published to HTTP threads by cluster_id_known; and this process's nonce,
     * set before HTTP starts, from which nodes forming a cluster together take its id. */
    unsigned char cluster_id[NODE_CLUSTER_ID_SIZE];
    atomic_bool cluster_id_known;
    unsigned char nonce[NODE_CLUSTER_ID_SIZE];
    pthread_t announcer;
    bool announcer_started;
    /* The announcer has found this node's HTTP address in the cluster's directory (or
     * the node alone) since the process started: peers can forward to it and list its
     * backups. /readyz waits for it in a cluster (not with ?noleader). */
    atomic_bool announced;
    pthread_mutex_t amu;
    pthread_cond_t acond;
    bool stopping;           /* guarded by amu */
    /* The leader does not list this node: it was removed (while it was down, typically,
     * so it still holds a configuration naming itself and campaigns with no answer).
     * Set and cleared by the announcer (cluster.c), read by any under amu. While set the
     * node serves no reads and is not ready. "" when not. */
    char removed[CAIRN_ERRMSG_SIZE];

    /* This node knows its database differs from the cluster's: it could not apply a
     * RESTORE entry whose backup it lacks and no peer has. Set and cleared on the loop
     * thread (adminApplyRestore), read by any under dmu, and kept in DATA/DIVERGED so
     * that `cairn check` and a restart know it too. While set the node serves no
     * reads, takes no backups and is not ready (its loop waits on the entry, so it
     * neither applies nor votes). "" when not. */
    pthread_mutex_t dmu;
    char diverged[CAIRN_ERRMSG_SIZE];
    time_t diverged_next_fetch; /* loop thread: when to ask the peers again */

    /* Digests of the database at BATCH_DIGEST entries (admin.h), newest last, under
     * gmu; digest threads running, waited for by cairn_close. */
    pthread_mutex_t gmu;
    pthread_cond_t gcond;
    struct db_digest {
        uint64_t index;
        int state; /* DIGEST_PENDING, DIGEST_DONE, DIGEST_FAILED; 0: empty slot */
        uint64_t digest;
        uint64_t pages;
        char error[200];
    } digests[8];
    unsigned digest_threads;
    atomic_bool digest_stop;

    /* live restores: the copy prepared off the loop (liverestore.h) */
    struct lr *lr;

    /* the continuous archive (archive.h); NULL when off */
    struct archiver *archiver;
    char archive_to[BACKUP_REPO_NAME_SIZE + PATH_MAX]; /* cfg.archive_to, copied */

    /* crash safety (heal.h) */
    struct json_t *recovery; /* the last recovery's record, or NULL */
    bool marked;             /* this start set the RUNNING mark */
};

/* One line to the embedding program's log (cairn_config.log), if it has one. */
void dbLog(struct cairn *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append a batch to the log and wait for its results (writes; cairn's own metadata
 * with BATCH_META). Any thread but the loop's. */
int dbPropose(struct cairn *db, struct batch *b, struct cairn_result **out, char *errmsg);

/* Run a batch whose kind and flags are set. Writes (and reads at level STRONG) go
 * through the log; other reads run on a local reader after the level's check. On
 * success *out holds the results. Any thread. */
int dbRun(struct cairn *db, struct batch *b, enum cairn_level level,
          struct cairn_result **out, char *errmsg);

/* Say (msg) or unsay (NULL) that this node's database differs from the cluster's (see
 * struct cairn.diverged). Loop thread. */
void dbSetDiverged(struct cairn *db, const char *msg);
/* Does it? Copies the reason into out. Any thread. */
bool dbDiverged(struct cairn *db, char *out, size_t n);

/* This node was removed from the cluster (struct cairn.removed): true, and the reason in
 * out when given. Any thread. */
bool dbRemoved(struct cairn *db, char *out, size_t n);

#define DIVERGED_FILE "DIVERGED"

/* Parse a level name ("none", "weak", "linearizable", "strong"); -1 if unknown. */
int dbLevelFromName(const char *name);

#endif
