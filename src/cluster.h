/* Clusters: how nodes find each other, join, leave, and reach one another over HTTP.
 *
 * - Forming: a node started with --bootstrap-expect N and --join URLs asks each URL for
 *   its identity (GET /cluster/identity, served before Raft starts) until it knows N
 *   nodes; every node then bootstraps the same configuration, sorted by id. A node
 *   started with --join alone (or that finds a formed cluster) asks to be added
 *   (POST /join, answered by the leader).
 * - The node directory: which HTTP address serves each node id. It is replicated
 *   through the log as cairn metadata ("node:ID:api" in _cairn_meta, BATCH_META), so
 *   that it travels with snapshots and every node reads the same one. Each member
 *   records its own address (the announcer thread) once it is part of a cluster.
 * - Files: a node that installs a snapshot, or applies a restore of a backup it does
 *   not hold, fetches the .cbk files it needs from a peer
 *   (GET /admin/snapshots/ID/file, GET /admin/backups/ID/file) and verifies them before
 *   use (the backup engine checks every block and chain link).
 * Any thread unless a function says otherwise. */
#ifndef CAIRN_CLUSTER_H
#define CAIRN_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "node.h"

struct cairn;

/* How long a request waits for a leader (or for the leader's address) before it is
 * answered 503. */
#define CLUSTER_LEADER_WAIT_MS 5000

/* Monotonic milliseconds, and a pause between attempts (retry pacing, never
 * synchronisation). */
int64_t clusterMonoMs(void);
void clusterPause(unsigned ms);

/* "host:port" or "http://host:port[/]" -> "http://host:port". */
void clusterUrl(const char *addr, char *out, size_t n);

/* An HTTP request to a peer. body (len bytes) or, when body_fd >= 0, the whole file
 * body_fd is sent. forwarded marks a request this node forwards for a client (served
 * where it arrives, never forwarded again). On a response, 0 with *status and out (the body; may be
 * NULL to drop it); otherwise CAIRN_EIO, and *connect_failed says whether the request never reached
 * the peer (safe to send again elsewhere). */
int clusterHttp(const char *method, const char *url, const char *body, size_t len, int body_fd,
                long timeout_ms, long *status, struct buf *out, char *content_type, size_t ct_size,
                bool *connect_failed, bool forwarded, char *errmsg);

/* clusterHttp for an answer of any size: once the body passes spill_at bytes it goes on
 * into an unlinked file in $TMPDIR (else /tmp), and *spill_fd (else -1) is that file,
 * holding the whole body, for the caller to read from offset 0 and close; out is then
 * empty. A node relaying a peer's answer so holds spill_at bytes of it in memory, not
 * the answer (a JSON answer can be gigabytes). A file that cannot be written fails the
 * request (CAIRN_EIO, naming the file). */
int clusterHttpSpill(const char *method, const char *url, const char *body, size_t len,
                     int body_fd, long timeout_ms, long *status, struct buf *out, size_t spill_at,
                     int *spill_fd, char *content_type, size_t ct_size, bool *connect_failed,
                     bool forwarded, char *errmsg);

/* GET url into the file path (created; removed again on failure). */
int clusterDownload(const char *url, const char *path, char *errmsg);

/* fsm_heal_fn (fsm.h): replace this follower's damaged database with the leader's copy
 * (GET /db/backup), when that copy is at an applied index of at least need - 1; the
 * damaged file is kept in DATA/corrupt/. Loop thread. */
int clusterHealDatabase(void *data, uint64_t need, char *errmsg);

/* The HTTP URL of node id ("http://host:port"): this node's own, or the directory's.
 * CAIRN_ENOTFOUND when the directory has no address for it yet. */
int clusterApiUrl(struct cairn *db, uint64_t id, char *out, size_t n);

/* Before Raft starts: decide how this node's first start forms its configuration
 * (see node.h's enum node_boot), asking the --join peers when --bootstrap-expect is
 * set. servers receives the bootstrap voters for NODE_BOOT_SERVERS.
 *
 * And settle the cluster's id (db->cluster_id, kept in DATA/cluster-id): 16 random
 * bytes minted when a cluster is formed (a single node's first start, --restore-from
 * included: a new cluster), the nonce of the lowest node id when nodes form one
 * together (--bootstrap-expect: every node takes the same), learned from a running
 * peer's GET /cluster/identity before a node first joins. A data directory of a node
 * that ran before ids has none (zeros), and gets none. Every Raft connection carries
 * the id; a node refuses one from another cluster (node.c). A directory whose id
 * differs from the cluster its --join names is refused. */
int clusterPrepare(struct cairn *db, enum node_boot *boot, struct node_server *servers,
                   unsigned *n_servers, char *errmsg);

/* Whether this node is a voter of the configuration it knows (not a standby, not yet
 * promoted, not a member). */
bool clusterIsVoter(struct cairn *db);

/* After Raft starts: when this node is in no configuration yet, ask the --join peers
 * to add it, until one answers (bounded). A refusal (duplicate id, unreachable raft
 * address) fails with the peer's message. */
int clusterJoin(struct cairn *db, char *errmsg);

/* On the leader: add node id (raft address `raft`, HTTP `api`) as a voter (promoted by
 * the leader once caught up) or, with voter false, as a standby. A node already in the
 * configuration with the same raft address only has its HTTP address recorded. */
int clusterAdd(struct cairn *db, uint64_t id, const char *raft, const char *api, bool voter,
               char *errmsg);

/* On the leader: remove node id from the configuration and the directory. */
int clusterRemove(struct cairn *db, uint64_t id, char *errmsg);

/* Bring backup `id` and the rest of its chain into dir from a peer; kind is "snapshots"
 * or "backups" (which of the peer's repositories). Tries the leader first, then every
 * other member. */
int clusterFetch(struct cairn *db, const char *dir, const char *kind, const char *id, char *errmsg);

/* The cluster's backup catalogue: the backups in the repository of this node and of
 * every other member that answers GET /admin/backups?local within a few seconds, as
 * one JSON object {"backups": [...], "unreachable": [node ids]}. Each entry is the
 * object of backupInfoJson() plus "nodes": the ids of the members whose repository
 * holds a copy (a backup fetched by a peer is in both); entries are sorted by Raft
 * index, then id (oldest first). On a single node, its own repository. *out is owned by
 * the caller (json_decref). Not the loop thread (it waits on peers). */
struct json_t;
int clusterBackupCatalog(struct cairn *db, struct json_t **out, char *errmsg);

/* node_config.nudge: ask the leader for a log entry (a strong read of SELECT 1), so
 * that a follower can take a snapshot on request. */
int clusterNudge(void *data, char *errmsg);

/* fsm_fetch_fn for snapshots (data is the cairn handle). */
int clusterFetchSnapshot(void *data, const char *dir, const char *id, char *errmsg);

/* The announcer: records this node's HTTP address in the directory whenever it is part
 * of a cluster and the directory says otherwise. */
int clusterAnnouncerStart(struct cairn *db, char *errmsg);
void clusterAnnouncerStop(struct cairn *db);

/* The JSON this node answers on GET /cluster/identity. */
void clusterIdentityJson(struct cairn *db, struct buf *b);

#endif
