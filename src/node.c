/* The loop thread: libraft, its uv I/O and transport, the queue of operations from
 * other threads, and the node's published figures (see node.h).
 *
 * Threads: nodeStart/nodeStop/nodeApply/nodeBarrier/nodeInfo run on callers'
 * threads and touch only the queue (qmu) and the published info (imu); everything
 * else in this file runs on the loop thread. */
#define _GNU_SOURCE
#include "node.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "fsm.h"
#include "lib.h"

#define TICK_MS 50
/* What a handshake address carries the cluster id after (nodelayWrap). */
#define CLUSTER_TAG "#cluster="
#define ELECTION_TIMEOUT_MS 1000
#define HEARTBEAT_TIMEOUT_MS 100
/* Bytes of log entries libraft may hold in memory per span (since the last snapshot,
 * and trailing after it); see fsmSetLimits. Each snapshot hashes the whole database, so
 * a smaller budget (24 MiB was tried) snapshots a bulk-loading node every ~20 requests
 * and costs it a third of its throughput. */
#define LOG_MEMORY_BUDGET (64u << 20)
/* libraft's segment files (its default is 8 MiB). Closing a full segment and opening
 * the next stalls the append that crosses it; with 1-2 MB entries (10,000-row
 * requests) 8 MiB segments did that every fifth request, each stall 20-50 ms. Two
 * open segments are preallocated, so this is also the log's minimum disk use. */
#define SEGMENT_SIZE (32u << 20)

/* Writes that reach the loop together are proposed with one raft_apply call: libraft
 * then sends each follower one AppendEntries message for all of them, not one per
 * write (measured: see docs/ARCHITECTURE.md, "Proposing writes in groups"). A group
 * holds at most this many entries and, past the first, this many bytes. */
#define GROUP_MAX_ENTRIES 64
#define GROUP_MAX_BYTES (4u << 20)

enum { OP_APPLY = 1, OP_BARRIER, OP_CALL, OP_CHANGE };

struct op {
    int type;
    struct node *node;
    struct op *next;
    struct raft_buffer buf;
    union {
        struct raft_barrier barrier;
        struct {
            int (*fn)(void *arg, char *errmsg);
            void *arg;
        } call;
        struct {
            struct raft_change req;
            enum node_change kind;
            uint64_t id;
            const char *address;
            int role;
        } change;
    } req;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
    int status;
    char *errmsg;
    struct cairn_result *result;
    /* OP_APPLY ops live on the heap with a reference for the waiter, one while the op
     * is in flight and one for its group (see struct apply_group): the waiter may be
     * answered (an apply that cannot commit) while libraft still holds the entry.
     * inflight links the ops whose entries are in the log and not yet applied, in log
     * order (loop thread); index is the entry's, key its length and checksum
     * (fsmEntryKey), which tell this node's entry from another leader's at that index. */
    int refs;
    struct op *inflight_next;
    struct op *inflight_prev;
    bool in_flight;
    uint64_t index;
    uint64_t term; /* the leader's term when the entry was proposed */
    unsigned char key[STORE_EARLY_KEY];
    char errbuf[CAIRN_ERRMSG_SIZE];
};

struct node {
    struct node_config cfg;
    char raft_addr[128];
    struct store *store;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    uv_prepare_t flush; /* commits a follower's grouped entries at the end of each turn */
    struct raft_uv_transport transport;
    bool tcp_transport;
    /* libraft's own listen and connect, and its accept callback (nodelayWrap) */
    int (*tcp_listen)(struct raft_uv_transport *t, raft_uv_accept_cb cb);
    int (*tcp_connect)(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                       const char *address, raft_uv_connect_cb cb);
    raft_uv_accept_cb tcp_accept_cb;
    /* The cluster id in the handshake (nodelayWrap): libraft's transport init, and the
     * address its handshake sends, raft_addr#cluster=HEX (libraft keeps the pointer). */
    int (*tcp_init)(struct raft_uv_transport *t, raft_id id, const char *address);
    char hs_addr[128 + sizeof CLUSTER_TAG + 2 * NODE_CLUSTER_ID_SIZE];
    char refused_addr[128]; /* the last sender refused for its cluster id (nodelayAccept) */
    unsigned long refused_count;
    /* libraft's tick and receive callbacks, which cairn stands between (ioWrap) */
    raft_io_tick_cb raft_tick;
    raft_io_recv_cb raft_recv;
    int (*io_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv);
    struct raft_io io;
    struct raft raft;
    struct fsm fsm;
    struct raft_fsm raft_fsm;
    pthread_t thread;

    /* queue, guarded by qmu */
    pthread_mutex_t qmu;
    struct op *qhead;
    struct op *qtail;
    bool stopping;

    /* loop-thread state */
    struct raft_barrier ready_barrier;
    bool ready_barrier_pending;
    uint64_t ready_term; /* term whose start barrier has been applied */
    uint64_t applies;
    struct raft_transfer transfer; /* leadership hand-over when stopping */
    struct raft_transfer disk_transfer; /* ... when the database cannot be written */
    bool disk_transfer_pending;
    unsigned disk_transfer_ticks;
    struct op *inflight;           /* OP_APPLY ops waiting for their entries (oldest first) */
    struct op *inflight_last;
    struct raft_barrier retry;     /* re-drives a failed apply or snapshot (see tickCb) */
    bool retry_pending;
    unsigned retry_ticks;
    unsigned snap_retry_wait; /* ticks between a deferred snapshot's re-drives (tickCb) */
    bool closing;
    bool transfer_tried;
    bool said_unavailable; /* the log says libraft stopped (tickCb) */
    char stopped_why[CAIRN_ERRMSG_SIZE]; /* what libraft was doing then (ioWrap) */
    raft_id stray_id;       /* the last sender ignored by a single node (ioRecv) */
    char stray_addr[128];
    unsigned long stray_count;

    /* published figures, guarded by imu */
    pthread_mutex_t imu;
    pthread_cond_t icond;
    struct node_info info;
    int start_rv; /* raft_start's result, published to nodeStart */
    bool start_done;
    bool published; /* info holds the figures of a started node */
    char start_errmsg[CAIRN_ERRMSG_SIZE];
};

const char *nodeStateName(int state)
{
    switch (state) {
        case RAFT_FOLLOWER:
            return "follower";
        case RAFT_CANDIDATE:
            return "candidate";
        case RAFT_LEADER:
            return "leader";
        default:
            return "unavailable";
    }
}

static void nodeLog(struct node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nodeLog(struct node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logLinev(n->cfg.log, n->cfg.log_data, fmt, ap);
    va_end(ap);
}

static int raftToCairn(int rv)
{
    switch (rv) {
        case RAFT_NOTLEADER:
            return CAIRN_ENOTLEADER;
        case RAFT_LEADERSHIPLOST:
            return CAIRN_ENOLEADER;
        case RAFT_NOMEM:
            return CAIRN_ENOMEM;
        case RAFT_SHUTDOWN:
        case RAFT_CANCELED:
            return CAIRN_ESHUTDOWN;
        case RAFT_IOERR:
            return CAIRN_EIO;
        case RAFT_CORRUPT:
            return CAIRN_ECORRUPT;
        case RAFT_CANTCHANGE:
        case RAFT_BUSY:
            return CAIRN_EBUSY;
        case RAFT_BADID:
        case RAFT_NOTFOUND:
            return CAIRN_ENOTFOUND;
        case RAFT_DUPLICATEID:
        case RAFT_DUPLICATEADDRESS:
            return CAIRN_EEXIST;
        case RAFT_NOCONNECTION:
            return CAIRN_ETIMEOUT;
        default:
            return CAIRN_ERAFT;
    }
}

/* ---- the local transport: a single node that talks to no one ---------------- */

static int localInit(struct raft_uv_transport *t, raft_id id, const char *address)
{
    return 0;
}

static int localListen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    return 0;
}

static int localConnect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                        const char *address, raft_uv_connect_cb cb)
{
    snprintf(t->errmsg, sizeof t->errmsg, "node has no network (no raft address configured)");
    return RAFT_NOCONNECTION;
}

static void localClose(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    cb(t);
}

static void localTransportInit(struct raft_uv_transport *t)
{
    memset(t, 0, sizeof *t);
    t->init = localInit;
    t->listen = localListen;
    t->connect = localConnect;
    t->close = localClose;
}

/* ---- the TCP transport, without Nagle's algorithm ------------------------------ */

/* libraft's TCP transport leaves Nagle's algorithm on, so a small message sent while an
 * earlier one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux): an
 * append or its answer sat there, and a 3-node cluster at 4 clients answered writes at
 * p90 42 ms (570 writes/s, fewer than one client got). The transport's listen and
 * connect are wrapped to set TCP_NODELAY on every stream they hand to libraft. The
 * originals and the accept callback are the node's (struct node, tcp_*); a connect
 * request leads back to no node, but libraft passes every connect the same callback
 * (its own static function), so one copy serves the process. */
static _Atomic(raft_uv_connect_cb) tcpConnectCb;

static void noDelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    }
}

static struct node *nodeOfTransport(struct raft_uv_transport *t)
{
    return (struct node *)((char *)t - offsetof(struct node, transport));
}

/* Read the cluster id a handshake's address carries after its '#' (hash): CLUSTER_TAG
 * then exactly 32 hex digits. -1 if it is anything else. */
static int parseClusterTag(const char *hash, unsigned char id[NODE_CLUSTER_ID_SIZE])
{
    if (strncmp(hash, CLUSTER_TAG, strlen(CLUSTER_TAG)) != 0) {
        return -1;
    }
    return libHexDecode(hash + strlen(CLUSTER_TAG), id, NODE_CLUSTER_ID_SIZE);
}

static void freeHandle(uv_handle_t *h)
{
    raft_free(h);
}

/* A connection libraft has read the handshake of: its sender's cluster id, if the
 * address carries one, must be this node's (a node of another cluster that holds one
 * of this cluster's addresses as a peer's: a port reused on one machine, a stale
 * configuration). Refused connections are closed before libraft sees any message; said
 * once per sender (and after every 1,000 refusals). A sender that names no id (a build
 * from before cluster ids, or a cluster formed before them) and a node that has none
 * are let through, as before. The address libraft is given is the plain one. */
static void nodelayAccept(struct raft_uv_transport *t, raft_id id, const char *address,
                          struct uv_stream_s *stream)
{
    struct node *n = nodeOfTransport(t);
    const char *hash = strchr(address, '#');
    char plain[128];
    unsigned char peer[NODE_CLUSTER_ID_SIZE];
    const char *why = NULL;
    if (hash != NULL) {
        size_t len = (size_t)(hash - address);
        if (len >= sizeof plain || parseClusterTag(hash, peer) != 0) {
            why = "its handshake names no cluster id cairn can read";
        } else {
            memcpy(plain, address, len);
            plain[len] = '\0';
            address = plain;
            if (!libIsZero(n->cfg.cluster_id, NODE_CLUSTER_ID_SIZE) &&
                memcmp(peer, n->cfg.cluster_id, NODE_CLUSTER_ID_SIZE) != 0) {
                why = "it is a node of another cluster";
            }
        }
    }
    if (why != NULL) {
        if (strcmp(n->refused_addr, address) != 0 || n->refused_count % 1000 == 0) {
            char ours[2 * NODE_CLUSTER_ID_SIZE + 1];
            libHexEncode(n->cfg.cluster_id, NODE_CLUSTER_ID_SIZE, ours);
            nodeLog(n, "refused a Raft connection from server %llu at %s: %s (this node's "
                       "cluster is %s; the sender has this node's address as a peer's)",
                    (unsigned long long)id, address, why, ours);
            if (strcmp(n->refused_addr, address) != 0) {
                n->refused_count = 0;
            }
            snprintf(n->refused_addr, sizeof n->refused_addr, "%s", address);
        }
        n->refused_count++;
        uv_close((uv_handle_t *)stream, freeHandle);
        return;
    }
    noDelay(stream);
    n->tcp_accept_cb(t, id, address, stream);
}

static void nodelayConnected(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    if (status == 0) {
        noDelay(stream);
    }
    atomic_load(&tcpConnectCb)(req, stream, status);
}

static int nodelayListen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct node *n = nodeOfTransport(t);
    n->tcp_accept_cb = cb;
    return n->tcp_listen(t, nodelayAccept);
}

static int nodelayConnect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                          const char *address, raft_uv_connect_cb cb)
{
    raft_uv_connect_cb was = atomic_exchange(&tcpConnectCb, cb);
    assert(was == NULL || was == cb); /* libraft's one callback, as said above */
    (void)was;
    return nodeOfTransport(t)->tcp_connect(t, req, id, address, nodelayConnected);
}

static int taggedInit(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct node *n = nodeOfTransport(t);
    assert(strcmp(address, n->raft_addr) == 0);
    (void)address;
    return n->tcp_init(t, id, n->hs_addr);
}

/* Wrap libraft's TCP transport: TCP_NODELAY on every stream, and the cluster id in
 * every handshake. libraft's handshake sends the transport's address (the one given to
 * its init) and hands the accepting side's callback the sender's: so the node's own
 * is given as raft_addr#cluster=HEX (it binds to raft_addr), and the accepting node
 * reads the id from it before libraft sees the connection. A node with no id sends
 * the plain address, as builds before cluster ids do. */
static int nodelayWrap(struct node *n, char *errmsg)
{
    n->tcp_listen = n->transport.listen;
    n->tcp_connect = n->transport.connect;
    n->transport.listen = nodelayListen;
    n->transport.connect = nodelayConnect;
    snprintf(n->hs_addr, sizeof n->hs_addr, "%s", n->raft_addr);
    if (!libIsZero(n->cfg.cluster_id, NODE_CLUSTER_ID_SIZE)) {
        size_t at = strlen(n->hs_addr);
        int rv = raft_uv_tcp_set_bind_address(&n->transport, n->raft_addr);
        if (rv != 0) {
            errorf(errmsg, "raft address %s: %s", n->raft_addr, raft_strerror(rv));
            return raftToCairn(rv);
        }
        at += (size_t)snprintf(n->hs_addr + at, sizeof n->hs_addr - at, "%s", CLUSTER_TAG);
        libHexEncode(n->cfg.cluster_id, NODE_CLUSTER_ID_SIZE, n->hs_addr + at);
        n->tcp_init = n->transport.init;
        n->transport.init = taggedInit;
    }
    return 0;
}

/* ---- what libraft was doing when it stopped ------------------------------------ *
 * libraft 0.15 turns itself UNAVAILABLE for good when handling a received message or
 * its tick fails (recv.c recvCb, tick.c tickCb: convertToUnavailable), and drops the
 * error code: nothing is left in raft_errmsg() or in the I/O's errmsg for most causes
 * (an append that conflicts with an entry this node has committed, RAFT_SHUTDOWN; a
 * term or vote that could not be written; an apply or snapshot failure during an
 * append; out of memory). A node then logged "Raft stopped on this node (libraft:
 * unavailable)" and nothing else. So cairn stands between its uv I/O and those two
 * callbacks, and when one of them leaves libraft unavailable (not by raft_close), it
 * records which one: the message's type, sender and figures, or the tick, with the
 * node's state, term and indexes before it. Loop thread. */

static struct node *nodeOfIo(struct raft_io *io)
{
    return (struct node *)(void *)((char *)io - offsetof(struct node, io));
}

static const char *messageName(unsigned short type)
{
    switch (type) {
        case RAFT_IO_APPEND_ENTRIES:
            return "an AppendEntries";
        case RAFT_IO_APPEND_ENTRIES_RESULT:
            return "an AppendEntries result";
        case RAFT_IO_REQUEST_VOTE:
            return "a RequestVote";
        case RAFT_IO_REQUEST_VOTE_RESULT:
            return "a RequestVote result";
        case RAFT_IO_INSTALL_SNAPSHOT:
            return "an InstallSnapshot";
        case RAFT_IO_TIMEOUT_NOW:
            return "a TimeoutNow";
        default:
            return "an unknown";
    }
}

/* The node's figures before a callback, for the message about it. */
struct self_facts {
    int state;
    raft_term term;
    raft_index last, commit, applied;
};

static void selfFacts(struct raft *r, struct self_facts *f)
{
    f->state = raft_state(r);
    f->term = r->current_term;
    f->last = raft_last_index(r);
    f->commit = r->commit_index;
    f->applied = raft_last_applied(r);
}

static void describeSelf(const struct self_facts *f, char *out, size_t n)
{
    snprintf(out, n, "this node was %s in term %llu, log up to %llu, commit index %llu, "
                     "applied %llu",
             nodeStateName(f->state), (unsigned long long)f->term, (unsigned long long)f->last,
             (unsigned long long)f->commit, (unsigned long long)f->applied);
}

/* A received message's figures (its scalars only: its buffers may be gone). */
static void messageFacts(const struct raft_message *m, char *what, size_t size)
{
    switch (m->type) {
        case RAFT_IO_APPEND_ENTRIES:
            snprintf(what, size, "term %llu, previous entry %llu of term %llu, %u entries, "
                                 "leader commit %llu",
                     (unsigned long long)m->append_entries.term,
                     (unsigned long long)m->append_entries.prev_log_index,
                     (unsigned long long)m->append_entries.prev_log_term,
                     m->append_entries.n_entries,
                     (unsigned long long)m->append_entries.leader_commit);
            break;
        case RAFT_IO_APPEND_ENTRIES_RESULT:
            snprintf(what, size, "term %llu, rejected %llu, last log index %llu",
                     (unsigned long long)m->append_entries_result.term,
                     (unsigned long long)m->append_entries_result.rejected,
                     (unsigned long long)m->append_entries_result.last_log_index);
            break;
        case RAFT_IO_REQUEST_VOTE:
            snprintf(what, size, "term %llu, last log entry %llu of term %llu",
                     (unsigned long long)m->request_vote.term,
                     (unsigned long long)m->request_vote.last_log_index,
                     (unsigned long long)m->request_vote.last_log_term);
            break;
        case RAFT_IO_REQUEST_VOTE_RESULT:
            snprintf(what, size, "term %llu, vote %s",
                     (unsigned long long)m->request_vote_result.term,
                     m->request_vote_result.vote_granted ? "granted" : "refused");
            break;
        case RAFT_IO_INSTALL_SNAPSHOT:
            snprintf(what, size, "term %llu, snapshot up to entry %llu of term %llu",
                     (unsigned long long)m->install_snapshot.term,
                     (unsigned long long)m->install_snapshot.last_index,
                     (unsigned long long)m->install_snapshot.last_term);
            break;
        case RAFT_IO_TIMEOUT_NOW:
            snprintf(what, size, "term %llu", (unsigned long long)m->timeout_now.term);
            break;
        default:
            snprintf(what, size, "type %u", (unsigned)m->type);
    }
}

static void ioTick(struct raft_io *io)
{
    struct node *n = nodeOfIo(io);
    struct raft *r = &n->raft;
    struct self_facts before;
    bool was = raft_state(r) != RAFT_UNAVAILABLE;
    selfFacts(r, &before);
    n->raft_tick(io);
    if (was && raft_state(r) == RAFT_UNAVAILABLE && !n->closing && !n->stopped_why[0]) {
        char self[192];
        describeSelf(&before, self, sizeof self);
        snprintf(n->stopped_why, sizeof n->stopped_why,
                 "its tick failed (an election: writing the term or the vote, or electing "
                 "itself and applying; or out of memory); %s", self);
    }
}

/* Whether this node's configuration is itself alone, a voter: a single node. No other
 * server sends such a node anything legitimately: a node joins it through its leader,
 * this node, which puts the newcomer in its configuration before the newcomer hears of
 * it. A message from elsewhere comes from a node of another cluster that has this
 * node's address as a peer's (a port a stopped node had, given to a new node: test
 * runs on one machine hand out ports independently). libraft 0.15 has no cluster id
 * and would take it: a higher term makes this node a follower of that cluster, whose
 * appends then either conflict with its committed entries (libraft stops for good,
 * "Raft stopped on this node") or, where the terms happen to match, are taken into
 * its log and applied to its database. */
static bool aloneInConfiguration(const struct raft *r)
{
    return r->configuration.n == 1 && r->configuration.servers[0].id == r->id &&
           r->configuration.servers[0].role == RAFT_VOTER;
}

/* Free a received message that libraft will not see, as libraft's recvCb does for one
 * it ignores (entryBatchesDestroy: each batch once, then the array). */
static void messageDrop(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.entries != NULL) {
        void *batch = NULL;
        for (unsigned i = 0; i < m->append_entries.n_entries; i++) {
            if (m->append_entries.entries[i].batch != batch) {
                batch = m->append_entries.entries[i].batch;
                raft_free(batch);
            }
        }
        raft_free(m->append_entries.entries);
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
    }
}

static void ioRecv(struct raft_io *io, struct raft_message *m)
{
    struct node *n = nodeOfIo(io);
    struct raft *r = &n->raft;
    bool was = raft_state(r) != RAFT_UNAVAILABLE;
    if (was && aloneInConfiguration(r)) {
        /* Said once per sender (and again after every 1,000 messages). */
        const char *addr = m->server_address != NULL ? m->server_address : "?";
        if (n->stray_id != m->server_id || strcmp(n->stray_addr, addr) != 0 ||
            n->stray_count % 1000 == 0) {
            nodeLog(n, "ignored %s message from server %llu at %s: this node is a cluster of "
                       "its own and that server is not in it (a node of another cluster "
                       "that has this node's address as a peer's)",
                    messageName(m->type), (unsigned long long)m->server_id, addr);
            if (n->stray_id != m->server_id || strcmp(n->stray_addr, addr) != 0) {
                n->stray_count = 0;
            }
            n->stray_id = m->server_id;
            snprintf(n->stray_addr, sizeof n->stray_addr, "%s", addr);
        }
        n->stray_count++;
        messageDrop(m);
        return;
    }
    /* The message's figures and the node's are kept before the call (libraft takes the
     * message's memory), as plain copies: formatted only if libraft stops, not for
     * every message on this hot path. */
    struct raft_message copy = *m;
    char addr[128];
    struct self_facts before;
    snprintf(addr, sizeof addr, "%s", m->server_address != NULL ? m->server_address : "?");
    selfFacts(r, &before);
    n->raft_recv(io, m);
    if (was && raft_state(r) == RAFT_UNAVAILABLE && !n->closing && !n->stopped_why[0]) {
        char what[256], self[192];
        messageFacts(&copy, what, sizeof what);
        describeSelf(&before, self, sizeof self);
        /* A conflict with a committed entry is how a message from another cluster
         * shows (a peer's old address reused by a node of another cluster). */
        snprintf(n->stopped_why, sizeof n->stopped_why,
                 "handling %s message from server %llu at %s (%s) failed (an append that "
                 "conflicts with an entry this node committed: a sender of another cluster "
                 "or a damaged log; or a term, vote, entry or snapshot this node could not "
                 "write or apply); %s",
                 messageName(copy.type), (unsigned long long)copy.server_id, addr, what, self);
    }
}

static int ioStart(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                   raft_io_recv_cb recv)
{
    struct node *n = nodeOfIo(io);
    n->raft_tick = tick;
    n->raft_recv = recv;
    return n->io_start(io, msecs, ioTick, ioRecv);
}

static void ioWrap(struct node *n)
{
    n->io_start = n->io.start;
    n->io.start = ioStart;
}

/* ---- completing operations ---------------------------------------------------- */

static void opRelease(struct op *op)
{
    bool last;
    pthread_mutex_lock(&op->mu);
    last = --op->refs == 0;
    pthread_mutex_unlock(&op->mu);
    if (last) {
        cairn_result_free(op->result);
        pthread_mutex_destroy(&op->mu);
        pthread_cond_destroy(&op->cond);
        free(op);
    }
}

static void opComplete(struct op *op, int status, const char *msg)
{
    pthread_mutex_lock(&op->mu);
    if (op->done) {
        pthread_mutex_unlock(&op->mu); /* answered already (see failInflight) */
        return;
    }
    op->status = status;
    if (status != 0 && msg != NULL && op->errmsg != NULL) {
        snprintf(op->errmsg, CAIRN_ERRMSG_SIZE, "%s", msg);
    }
    op->done = true;
    pthread_cond_signal(&op->cond);
    pthread_mutex_unlock(&op->mu); /* the op may be gone after this */
}

/* Copy the figures other threads may read. applied_hint: an index known to be applied
 * already (libraft advances last_applied only after the apply callback returns). */
static void publishInfoAt(struct node *n, uint64_t applied_hint)
{
    struct raft *r = &n->raft;
    raft_id leader_id = 0;
    const char *leader_addr = NULL;
    raft_leader(r, &leader_id, &leader_addr);
    pthread_mutex_lock(&n->imu);
    n->info.state = raft_state(r);
    n->info.term = r->current_term;
    n->info.leader_id = leader_id;
    snprintf(n->info.leader_address, sizeof n->info.leader_address, "%s",
             leader_addr ? leader_addr : "");
    n->info.commit_index = r->commit_index;
    n->info.applied_index = raft_last_applied(r);
    if (applied_hint > n->info.applied_index) {
        n->info.applied_index = applied_hint;
    }
    n->info.last_log_index = raft_last_index(r);
    n->info.snapshots_taken = n->fsm.snapshots_taken;
    n->info.last_snapshot_index = n->fsm.last_snapshot_index;
    n->info.applies = n->applies;
    n->info.held_index = fsmHeld(&n->fsm) ? n->fsm.held_index : 0;
    /* Entries a follower holds behind a restore's swap (fsm.c, flushKept) are applied
     * as far as libraft knows, but not in the database: what the node says it applied
     * (/status, and whether it is ready) is what its database holds. */
    if (n->info.held_index != 0 && n->info.applied_index >= n->info.held_index) {
        n->info.applied_index = n->info.held_index - 1;
    }
    /* Likewise entries of this turn a follower has not committed yet (its grouped
     * apply): until the end of the turn, the database holds what was committed. */
    if (fsmPending(&n->fsm) && storeAppliedIndex(n->store) < n->info.applied_index) {
        n->info.applied_index = storeAppliedIndex(n->store);
    }
    /* Ready: a leader that has applied its term's start, or a follower that knows the
     * leader and has applied everything it knows to be committed. */
    n->info.ready = leader_id != 0 &&
                    (raft_state(r) == RAFT_LEADER ? n->ready_term == r->current_term
                                                  : n->info.applied_index >= r->commit_index &&
                                                        r->commit_index > 0);
    n->info.voters = 0;
    n->info.n_servers = 0;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *sv = &r->configuration.servers[i];
        if (sv->role == RAFT_VOTER) {
            n->info.voters++;
        }
        if (n->info.n_servers < NODE_MAX_SERVERS) {
            struct node_server *o = &n->info.servers[n->info.n_servers++];
            o->id = sv->id;
            o->role = sv->role;
            snprintf(o->address, sizeof o->address, "%s", sv->address ? sv->address : "");
        }
    }
    n->published = true;
    pthread_cond_broadcast(&n->icond);
    pthread_mutex_unlock(&n->imu);
}

static void publishInfo(struct node *n)
{
    publishInfoAt(n, 0);
}

/* One raft_apply call: the ops it proposed, entries req.index, req.index + 1, ...
 * libraft calls back once, when the first entry is applied (status 0) or when the
 * request fails (leadership lost, shutting down) before that; each op's own entry
 * is answered by onApplied. */
struct apply_group {
    struct raft_apply req;
    unsigned n;
    struct op *ops[];
};

static void inflightAdd(struct node *n, struct op *op)
{
    op->inflight_next = NULL;
    op->inflight_prev = n->inflight_last;
    if (n->inflight_last != NULL) {
        n->inflight_last->inflight_next = op;
    } else {
        n->inflight = op;
    }
    n->inflight_last = op;
    op->in_flight = true;
}

/* Take op off the in-flight list and drop the list's reference. */
static void inflightDrop(struct node *n, struct op *op)
{
    if (!op->in_flight) {
        return;
    }
    if (op->inflight_prev != NULL) {
        op->inflight_prev->inflight_next = op->inflight_next;
    } else {
        n->inflight = op->inflight_next;
    }
    if (op->inflight_next != NULL) {
        op->inflight_next->inflight_prev = op->inflight_prev;
    } else {
        n->inflight_last = op->inflight_prev;
    }
    op->inflight_next = op->inflight_prev = NULL;
    op->in_flight = false;
    opRelease(op);
}

static void opUnknown(struct op *op, const char *why);

/* Leadership is lost or the node stops: answer every op still in flight (its outcome
 * is unknown) and forget them. */
static void inflightFailAll(struct node *n, const char *why)
{
    while (n->inflight != NULL) {
        struct op *op = n->inflight;
        opUnknown(op, why);
        inflightDrop(n, op);
    }
}

/* Answer op, whose entry is in the log (of this node at least) and not applied here,
 * with an unknown outcome: leadership was lost (or the node stops) before the entry
 * was known to be committed, and a new leader may still commit it. Never "nothing was
 * written": a client that retries would write twice. */
static void opUnknown(struct op *op, const char *why)
{
    char msg[CAIRN_ERRMSG_SIZE];
    snprintf(msg, sizeof msg,
             "outcome unknown: the write was proposed as log entry %llu in term %llu, then %s "
             "before it was known to be committed; it may or may not be applied (check, e.g. "
             "by reading the rows it writes, before retrying)",
             (unsigned long long)op->index, (unsigned long long)op->term, why);
    opComplete(op, CAIRN_EUNKNOWN, msg);
}

static void groupCb(struct raft_apply *req, int status, void *result)
{
    struct apply_group *g = req->data;
    struct node *n = g->ops[0]->node;
    (void)result; /* always NULL: results go through onApplied */
    for (unsigned i = 0; i < g->n; i++) {
        struct op *op = g->ops[i];
        if (status != 0 && op->in_flight) {
            /* None of the group's entries was applied here (the first comes first), but
             * they were appended and sent: another leader may commit them. */
            char why[160];
            snprintf(why, sizeof why, "this node failed the request (libraft: %s)",
                     raft_strerror(status));
            opUnknown(op, why);
            inflightDrop(n, op);
        }
        opRelease(op);
    }
    free(g);
}

/* fsm->applied: entry index was applied with result res. Answers the op waiting on it,
 * if this node proposed that very entry; an op whose entry was replaced by another
 * leader's (or passed over by a snapshot) is answered as libraft answers a lost
 * leadership. */
static bool onApplied(void *arg, uint64_t index, const struct raft_buffer *buf,
                      struct cairn_result *res)
{
    struct node *n = arg;
    struct op *op;
    unsigned char key[STORE_EARLY_KEY];
    fsmEntryKey(buf->base, buf->len, key);
    while ((op = n->inflight) != NULL && op->index <= index) {
        bool mine = op->index == index && memcmp(key, op->key, sizeof key) == 0;
        if (!mine) {
            /* Another leader's entry holds this index (or a snapshot passed over it):
             * by Raft's log matching, this write is not committed and never will be. */
            char msg[CAIRN_ERRMSG_SIZE];
            snprintf(msg, sizeof msg,
                     "leadership was lost: log entry %llu, proposed for this write, holds "
                     "another write; nothing of this one was written",
                     (unsigned long long)op->index);
            opComplete(op, CAIRN_ENOTLEADER, msg);
            inflightDrop(n, op);
            continue;
        }
        pthread_mutex_lock(&op->mu);
        if (!op->done) {
            op->result = res; /* the waiter frees it */
            res = NULL;
        }
        pthread_mutex_unlock(&op->mu);
        cairn_result_free(res); /* its waiter was answered already (failInflight) */
        /* Publish before answering, so that /status read after a write shows it. */
        publishInfoAt(n, index);
        opComplete(op, 0, NULL);
        inflightDrop(n, op);
        return true;
    }
    return false;
}

/* Answer op with the apply failure: "disk full: WHAT (SQLite's message)TAIL" (or
 * "write failed: ..." for another I/O error). */
static void failWithApplyError(struct node *n, struct op *op, const char *what,
                               const char *tail, bool in_log)
{
    char msg[CAIRN_ERRMSG_SIZE];
    int status = n->fsm.apply_failed;
    snprintf(msg, sizeof msg, "%s: %s (%s)%s",
             n->fsm.apply_failed == CAIRN_ENOSPC ? "disk full" : "write failed", what,
             n->fsm.apply_errmsg, tail);
    if (in_log && status != CAIRN_ENOSPC) {
        /* Its entry is in the log and will be applied (here after the cause is fixed or
         * the node restarts, or by the other nodes): never an answer that says, or
         * could be read as, "nothing was written". Disk full keeps its own 507. */
        status = CAIRN_EUNKNOWN;
    }
    opComplete(op, status, msg);
}

/* The database cannot apply what the log holds (disk full, I/O error): answer every
 * request waiting on an apply now, saying that its entry is in the log and will be
 * applied once the database can be written. The ops stay in flight until their
 * entries are applied (onApplied frees the results nobody waits for any more). */
static void failInflight(struct node *n)
{
    for (struct op *op = n->inflight; op != NULL; op = op->inflight_next) {
        failWithApplyError(n, op,
                           "the write is in the Raft log but the database cannot apply it now",
                           "; it is applied as soon as the database can be written again",
                           true);
    }
}

/* Past its snapshot threshold with no snapshot under way: libraft checks that only when
 * it applies entries, and entries applied while the previous snapshot was still being
 * written found one under way; once it was done, nothing asked again until the next
 * write (3 starts in 25 kept 5 entries past a threshold of 4 for good). */
static bool snapshotOwed(struct raft *r)
{
    return r->snapshot.pending.term == 0 && r->snapshot.put.data == NULL &&
           r->snapshot.threshold > 0 &&
           raft_last_applied(r) - r->log.snapshot.last_index >= r->snapshot.threshold;
}

static void retryCb(struct raft_barrier *req, int status)
{
    struct node *n = req->data;
    n->retry_pending = false;
}

static void barrierCb(struct raft_barrier *req, int status)
{
    struct op *op = req->data;
    fsmFlush(&op->node->fsm); /* a read after the barrier sees every applied entry */
    if (status == 0) {
        publishInfoAt(op->node, req->index);
    }
    opComplete(op, status ? raftToCairn(status) : 0, status ? raft_strerror(status) : NULL);
}

static void changeCb(struct raft_change *req, int status)
{
    struct op *op = req->data;
    if (status == 0) {
        publishInfo(op->node);
    } else if (op->index != 0) {
        /* The configuration entry was appended and sent: a later leader holding it
         * commits it, so "not done" (503) would be wrong, as for a write (opUnknown). */
        char msg[CAIRN_ERRMSG_SIZE];
        snprintf(msg, sizeof msg,
                 "outcome unknown: the membership change was proposed as log entry %llu in "
                 "term %llu, then this node failed it (libraft: %s) before it was known to be "
                 "committed; it may or may not take effect (check GET /nodes once the cluster "
                 "has a leader)",
                 (unsigned long long)op->index, (unsigned long long)op->term,
                 raft_strerror(status));
        opComplete(op, CAIRN_EUNKNOWN, msg);
        return;
    }
    opComplete(op, status ? raftToCairn(status) : 0, status ? raft_strerror(status) : NULL);
}

/* A new leader must apply every entry of earlier terms before it serves reads:
 * libraft commits them only once an entry of its own term commits, so append a
 * barrier at the start of each term. */
static void readyBarrierCb(struct raft_barrier *req, int status)
{
    struct node *n = req->data;
    fsmFlush(&n->fsm);
    n->ready_barrier_pending = false;
    if (status == 0) {
        n->ready_term = n->raft.current_term;
        nodeLog(n, "leader for term %llu, log applied up to index %llu",
                (unsigned long long)n->ready_term,
                (unsigned long long)raft_last_applied(&n->raft));
    }
    publishInfo(n);
}

static void maybeReadyBarrier(struct node *n)
{
    int rv;
    if (raft_state(&n->raft) != RAFT_LEADER || n->ready_barrier_pending ||
        n->ready_term == n->raft.current_term) {
        return;
    }
    n->ready_barrier.data = n;
    rv = raft_barrier(&n->raft, &n->ready_barrier, readyBarrierCb);
    if (rv == 0) {
        n->ready_barrier_pending = true;
    }
}

/* Before the loop waits for I/O: commit what a follower applied in this turn. */
static void flushCb(uv_prepare_t *h)
{
    struct node *n = h->data;
    bool pending = fsmPending(&n->fsm);
    fsmEndOfTurn(&n->fsm);
    if (pending) {
        publishInfo(n); /* what the turn committed is applied now */
    }
}

static void closeCb(struct raft *r)
{
    struct node *n = r->data;
    fsmFlush(&n->fsm);
    inflightFailAll(n, "the node stopped");
    raft_uv_close(&n->io);
    if (n->tcp_transport) {
        raft_uv_tcp_close(&n->transport);
    }
    uv_close((uv_handle_t *)&n->wake, NULL);
    uv_close((uv_handle_t *)&n->tick, NULL);
    uv_close((uv_handle_t *)&n->flush, NULL);
}

static void transferCb(struct raft_transfer *req)
{
    struct node *n = req->data;
    raft_id leader = 0;
    const char *addr = NULL;
    raft_leader(&n->raft, &leader, &addr);
    nodeLog(n, "leadership %s (leader now %llu)",
            leader != 0 && leader != n->cfg.id ? "handed over" : "not handed over",
            (unsigned long long)leader);
    raft_close(&n->raft, closeCb);
}

static unsigned voterCount(const struct raft *r)
{
    unsigned voters = 0;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        voters += r->configuration.servers[i].role == RAFT_VOTER;
    }
    return voters;
}

/* Stop: a leader with other voters hands leadership over first, so the cluster does
 * not wait an election timeout for a new one. */
static void beginClose(struct node *n)
{
    struct raft *r = &n->raft;
    if (n->closing) {
        return;
    }
    n->closing = true;
    if (raft_state(r) == RAFT_LEADER && !n->transfer_tried) {
        n->transfer_tried = true;
        if (voterCount(r) > 1) {
            n->transfer.data = n;
            if (raft_transfer(r, &n->transfer, 0, transferCb) == 0) {
                nodeLog(n, "stopping: handing leadership over");
                return;
            }
        }
    }
    raft_close(r, closeCb);
}

/* Propose the writes ops[0..k) as consecutive entries with one raft_apply. */
static void proposeGroup(struct node *n, struct op **ops, unsigned k)
{
    struct raft_buffer bufs[GROUP_MAX_ENTRIES];
    struct apply_group *g;
    int rv;

    if (k == 0) {
        return;
    }
    if (n->fsm.apply_failed) {
        /* The database cannot take writes now: refuse new ones at once rather than add
         * them to the log behind the entry that cannot be applied. */
        for (unsigned i = 0; i < k; i++) {
            raft_free(ops[i]->buf.base);
            failWithApplyError(n, ops[i], "the database cannot be written now",
                               "; nothing was written", false);
            opRelease(ops[i]);
        }
        return;
    }
    g = malloc(sizeof *g + k * sizeof g->ops[0]);
    if (g == NULL) {
        for (unsigned i = 0; i < k; i++) {
            raft_free(ops[i]->buf.base);
            opComplete(ops[i], CAIRN_ENOMEM, "out of memory proposing the write");
            opRelease(ops[i]);
        }
        return;
    }
    g->n = k;
    g->req.data = g;
    for (unsigned i = 0; i < k; i++) {
        g->ops[i] = ops[i];
        bufs[i] = ops[i]->buf;
    }
    rv = raft_apply(&n->raft, &g->req, bufs, k, groupCb);
    if (rv != 0) {
        const char *m = raft_errmsg(&n->raft);
        for (unsigned i = 0; i < k; i++) {
            raft_free(ops[i]->buf.base);
            opComplete(ops[i], raftToCairn(rv), m != NULL && m[0] ? m : raft_strerror(rv));
            opRelease(ops[i]);
        }
        free(g);
        return;
    }
    /* The loop's reference moves to the in-flight list; the group takes one more. */
    for (unsigned i = 0; i < k; i++) {
        ops[i]->index = g->req.index + i;
        ops[i]->term = n->raft.current_term;
        ops[i]->refs++;
        inflightAdd(n, ops[i]);
        n->applies++;
    }
}

static void drainQueue(uv_async_t *h)
{
    struct node *n = h->data;
    struct op *op;
    struct op *next;
    struct op *group[GROUP_MAX_ENTRIES];
    unsigned ng = 0;
    size_t gbytes = 0;
    bool stopping;
    int rv;

    pthread_mutex_lock(&n->qmu);
    op = n->qhead;
    n->qhead = n->qtail = NULL;
    stopping = n->stopping;
    pthread_mutex_unlock(&n->qmu);

    for (; op != NULL; op = next) {
        next = op->next;
        if (stopping) {
            opComplete(op, CAIRN_ESHUTDOWN, "node is shutting down");
            if (op->type == OP_APPLY) {
                raft_free(op->buf.base);
                opRelease(op);
            }
            continue;
        }
        if (op->type == OP_APPLY) {
            if (ng == GROUP_MAX_ENTRIES || (ng > 0 && gbytes + op->buf.len > GROUP_MAX_BYTES)) {
                proposeGroup(n, group, ng);
                ng = gbytes = 0;
            }
            group[ng++] = op;
            gbytes += op->buf.len;
            continue;
        }
        /* Anything else keeps its place after the writes queued before it. */
        proposeGroup(n, group, ng);
        ng = gbytes = 0;
        if (op->type == OP_CHANGE) {
            struct raft_change *req = &op->req.change.req;
            /* The entry a change appends at once (a promotion first runs catch-up
             * rounds, appending nothing until they end): set before the call, since
             * the op may be answered, and gone, by the time it returns. */
            raft_index next = raft_last_index(&n->raft) + 1;
            op->index = next;
            op->term = n->raft.current_term;
            req->data = op;
            switch (op->req.change.kind) {
                case NODE_ADD:
                    rv = raft_add(&n->raft, req, op->req.change.id, op->req.change.address,
                                  changeCb);
                    break;
                case NODE_ASSIGN:
                    rv = raft_assign(&n->raft, req, op->req.change.id, op->req.change.role,
                                     changeCb);
                    break;
                default:
                    rv = raft_remove(&n->raft, req, op->req.change.id, changeCb);
                    break;
            }
            if (rv != 0) {
                op->index = 0;
                opComplete(op, raftToCairn(rv), raft_errmsg(&n->raft));
            } else if (raft_last_index(&n->raft) < next) {
                op->index = 0; /* nothing appended yet: changeCb's failure is "not done" */
            }
        } else if (op->type == OP_CALL) {
            char msg[CAIRN_ERRMSG_SIZE] = "";
            fsmFlush(&n->fsm); /* calls read or copy the database as applied */
            rv = op->req.call.fn(op->req.call.arg, msg);
            opComplete(op, rv, msg);
        } else if (n->fsm.apply_failed) {
            /* A barrier would wait behind the entry that cannot be applied. */
            failWithApplyError(n, op, "the database cannot be written now", "", false);
        } else {
            op->req.barrier.data = op;
            rv = raft_barrier(&n->raft, &op->req.barrier, barrierCb);
            if (rv != 0) {
                const char *m = raft_errmsg(&n->raft);
                opComplete(op, raftToCairn(rv), m != NULL && m[0] ? m : raft_strerror(rv));
            }
        }
    }
    proposeGroup(n, group, ng);
    if (stopping && !uv_is_closing((uv_handle_t *)&n->wake)) {
        beginClose(n);
    }
}

static void diskTransferCb(struct raft_transfer *req)
{
    struct node *n = req->data;
    n->disk_transfer_pending = false;
}

static void tickCb(uv_timer_t *t)
{
    struct node *n = t->data;
    if (raft_state(&n->raft) == RAFT_UNAVAILABLE && !n->closing && !n->said_unavailable) {
        /* libraft gives up on an I/O error of its own (a log write on a full disk) and
         * never comes back: say so once, loudly, rather than sit silent. */
        const char *m = raft_errmsg(&n->raft);
        n->said_unavailable = true;
        nodeLog(n, "Raft stopped on this node (libraft: %s%s%s; %s): it no longer takes part "
                   "in the cluster and takes no writes; fix the cause (free space, check the "
                   "disk, or a node of another cluster at a peer's address) and restart it",
                m != NULL && m[0] ? m : "unavailable", n->io.errmsg[0] ? "; I/O: " : "",
                n->io.errmsg,
                n->stopped_why[0] ? n->stopped_why
                                  : "neither a received message nor libraft's tick left it "
                                    "unavailable");
    }
    maybeReadyBarrier(n);
    if (raft_state(&n->raft) != RAFT_LEADER) {
        /* A write's early run (nodeApply) may wait for an entry that never comes. */
        storeEarlyDiscard(n->store);
    }
    if (n->inflight != NULL && raft_state(&n->raft) != RAFT_LEADER) {
        /* libraft fails the requests it still holds when leadership is lost; an op
         * whose group's first entry was applied before that is no longer one of them. */
        inflightFailAll(n, "this node lost leadership");
    }
    if (n->fsm.apply_failed && raft_state(&n->raft) == RAFT_LEADER && !n->closing &&
        !n->disk_transfer_pending && voterCount(&n->raft) > 1 &&
        ++n->disk_transfer_ticks >= 1000 / TICK_MS) {
        /* This leader's database cannot take writes (and it refuses them all): another
         * voter's may. Hand the leadership over, so that the cluster writes again; this
         * node then waits as a follower (fsm.c's followerWait). Tried every second. */
        n->disk_transfer_ticks = 0;
        n->disk_transfer.data = n;
        if (raft_transfer(&n->raft, &n->disk_transfer, 0, diskTransferCb) == 0) {
            n->disk_transfer_pending = true;
            nodeLog(n, "the database cannot be written (%s): handing leadership over",
                    n->fsm.apply_errmsg);
        }
    }
    if (n->fsm.apply_failed) {
        failInflight(n);
    }
    /* libraft retries a failed apply, and a snapshot it was refused (fsm.c: a reader
     * held the WAL back) or that it found another under way for (snapshotOwed), only
     * after the next commit, which a quiet cluster never makes:
     * then its log stays uncompacted, and held in memory, for as long as nobody writes.
     * The leader appends a barrier now and then, which every node applies: a failed
     * apply is tried every second, so that the node resumes by itself once space is
     * freed; a deferred snapshot after 1 s, then 2, 4, ... at most 8 s apart while
     * readers keep holding the WAL (each try may wait 100 ms for them on this thread). */
    bool snap_owed = n->fsm.snapshot_deferred || snapshotOwed(&n->raft);
    if (!snap_owed) {
        n->snap_retry_wait = 1000 / TICK_MS;
    }
    if ((n->fsm.apply_failed || snap_owed) && !n->retry_pending && !n->closing &&
        raft_state(&n->raft) == RAFT_LEADER &&
        ++n->retry_ticks >= (n->fsm.apply_failed ? 1000 / TICK_MS : n->snap_retry_wait)) {
        n->retry_ticks = 0;
        if (!n->fsm.apply_failed && n->snap_retry_wait < 8000 / TICK_MS) {
            n->snap_retry_wait *= 2;
        }
        n->retry.data = n;
        if (raft_barrier(&n->raft, &n->retry, retryCb) == 0) {
            n->retry_pending = true;
        }
    }
    publishInfo(n);
}

/* Set by each node's loop thread for itself: true on a loop thread (assertions). Not
 * n->thread, which the starting thread writes only once pthread_create returns, while
 * the loop may already replay the log (and db->node is not set until nodeStart
 * returns). */
static _Thread_local bool onLoopThread;

static void *loopMain(void *arg)
{
    struct node *n = arg;
    int rv;
    onLoopThread = true;
    rv = raft_start(&n->raft);
    pthread_mutex_lock(&n->imu);
    n->start_rv = rv;
    if (rv != 0) {
        /* libraft leaves the detail in the raft object or in its I/O's errmsg. */
        const char *detail = raft_errmsg(&n->raft);
        if (detail == NULL || detail[0] == '\0') {
            detail = n->io.errmsg[0] ? n->io.errmsg : n->transport.errmsg;
        }
        snprintf(n->start_errmsg, sizeof n->start_errmsg, "raft start in %s (raft address %s): %s (%s)",
                 n->cfg.raft_dir, n->raft_addr, raft_strerror(rv),
                 detail[0] ? detail : "is the raft address in use?");
    }
    n->start_done = true;
    pthread_cond_broadcast(&n->icond);
    pthread_mutex_unlock(&n->imu);
    if (rv != 0) {
        /* raft_start failed: close what was set up and leave. */
        pthread_mutex_lock(&n->qmu);
        n->stopping = true;
        pthread_mutex_unlock(&n->qmu);
        n->closing = true;
        raft_close(&n->raft, closeCb);
        uv_run(&n->loop, UV_RUN_DEFAULT);
        return NULL;
    }
    maybeReadyBarrier(n);
    publishInfo(n);
    uv_timer_start(&n->tick, tickCb, TICK_MS, TICK_MS);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

int nodeStart(const struct node_config *cfg, struct store *store, unsigned timeout_ms,
              struct node **out, char *errmsg)
{
    struct node *n;
    struct raft_configuration conf;
    struct timespec deadline;
    int rv;

    *out = NULL;
    n = calloc(1, sizeof *n);
    if (n == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    n->cfg = *cfg;
    n->store = store;
    snprintf(n->raft_addr, sizeof n->raft_addr, "%s",
             cfg->raft_addr ? cfg->raft_addr : "local");
    pthread_mutex_init(&n->qmu, NULL);
    pthread_mutex_init(&n->imu, NULL);
    pthread_cond_init(&n->icond, NULL);
    n->info.id = cfg->id;
    snprintf(n->info.address, sizeof n->info.address, "%s", n->raft_addr);

    rv = uv_loop_init(&n->loop);
    if (rv != 0) {
        errorf(errmsg, "event loop: %s", uv_strerror(rv));
        goto err_after_alloc;
    }
    uv_async_init(&n->loop, &n->wake, drainQueue);
    n->wake.data = n;
    uv_timer_init(&n->loop, &n->tick);
    n->tick.data = n;
    uv_prepare_init(&n->loop, &n->flush);
    n->flush.data = n;
    uv_prepare_start(&n->flush, flushCb);

    if (cfg->raft_addr != NULL) {
        rv = raft_uv_tcp_init(&n->transport, &n->loop);
        if (rv != 0) {
            errorf(errmsg, "raft TCP transport: %s", raft_strerror(rv));
            goto err_after_loop;
        }
        n->tcp_transport = true;
        rv = nodelayWrap(n, errmsg);
        if (rv != 0) {
            raft_uv_tcp_close(&n->transport);
            goto err_after_loop;
        }
    } else {
        localTransportInit(&n->transport);
    }
    rv = raft_uv_init(&n->io, &n->loop, cfg->raft_dir, &n->transport);
    if (rv != 0) {
        errorf(errmsg, "raft storage in %s: %s", cfg->raft_dir, n->io.errmsg);
        goto err_after_transport;
    }
    /* libraft 0.15's uv I/O implements async_work but still reports version 1, which
     * makes raft_init refuse asynchronous snapshots; the method is there, so say so. */
    if (n->io.async_work != NULL && n->io.version < 2) {
        n->io.version = 2;
    }
    /* A damaged log must be reported, never silently truncated. Auto-recovery off
     * stops libraft from moving damaged closed segments aside; it still cuts an open
     * segment at a bad batch, which is why every start verifies the log first
     * (heal.c, raftlog.c). */
    raft_uv_set_auto_recovery(&n->io, false);
    raft_uv_set_segment_size(&n->io, SEGMENT_SIZE);
    ioWrap(n);

    fsmInit(&n->fsm, &n->raft_fsm, store, &n->raft, cfg->snap_dir);
    n->fsm.applied = onApplied;
    n->fsm.applied_arg = n;
    n->fsm.log = cfg->log;
    n->fsm.log_data = cfg->log_data;
    n->fsm.restore = cfg->restore;
    n->fsm.restore_data = cfg->restore_data;
    n->fsm.ready = cfg->ready;
    n->fsm.fetch = cfg->fetch;
    n->fsm.fetch_data = cfg->fetch_data;
    n->fsm.digest = cfg->digest;
    n->fsm.digest_data = cfg->digest_data;
    n->fsm.heal = cfg->heal;
    n->fsm.heal_data = cfg->heal_data;
    n->fsm.committed = cfg->committed;
    n->fsm.installed = cfg->installed;
    n->fsm.archive_data = cfg->archive_data;
    rv = raft_init(&n->raft, &n->io, &n->raft_fsm, cfg->id, n->raft_addr);
    if (rv != 0) {
        errorf(errmsg, "raft init: %s", raft_errmsg(&n->raft));
        goto err_after_io;
    }
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, ELECTION_TIMEOUT_MS);
    raft_set_heartbeat_timeout(&n->raft, HEARTBEAT_TIMEOUT_MS);
    /* A node that was cut off (or frozen) asks before it disrupts a working leader. */
    raft_set_pre_vote(&n->raft, true);
    fsmSetLimits(&n->fsm, cfg->snapshot_threshold, cfg->snapshot_trailing, LOG_MEMORY_BUDGET);

    /* First start: a one-voter cluster of this node, or the voters the nodes started
     * together agreed on. Later starts find the state on disk and libraft answers
     * RAFT_CANTBOOTSTRAP, which is the normal case. */
    rv = 0;
    raft_configuration_init(&conf);
    if (cfg->boot == NODE_BOOT_SELF) {
        rv = raft_configuration_add(&conf, cfg->id, n->raft_addr, RAFT_VOTER);
    } else if (cfg->boot == NODE_BOOT_SERVERS) {
        for (unsigned i = 0; i < cfg->n_servers && rv == 0; i++) {
            rv = raft_configuration_add(&conf, cfg->servers[i].id, cfg->servers[i].address,
                                        RAFT_VOTER);
        }
    }
    if (rv == 0 && cfg->boot != NODE_BOOT_NONE) {
        rv = raft_bootstrap(&n->raft, &conf);
    }
    raft_configuration_close(&conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        const char *detail = raft_errmsg(&n->raft);
        if (detail == NULL || detail[0] == '\0') {
            detail = n->io.errmsg; /* libraft leaves the I/O's message there */
        }
        errorf(errmsg, "raft bootstrap in %s: %s%s%s", cfg->raft_dir, raft_strerror(rv),
               detail != NULL && detail[0] ? ": " : "", detail != NULL ? detail : "");
        rv = raftToCairn(rv);
        goto err_after_raft;
    }

    rv = pthread_create(&n->thread, NULL, loopMain, n);
    if (rv != 0) {
        errorf(errmsg, "cannot start loop thread: %s", strerror(rv));
        rv = CAIRN_ENOMEM;
        goto err_after_raft;
    }

    /* Wait for raft_start, then for readiness. */
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&n->imu);
    while (!n->start_done || (n->start_rv == 0 && !n->published)) {
        pthread_cond_wait(&n->icond, &n->imu);
    }
    rv = n->start_rv;
    if (rv != 0) {
        errorf(errmsg, "%s", n->start_errmsg);
        pthread_mutex_unlock(&n->imu);
        pthread_join(n->thread, NULL);
        rv = raftToCairn(rv);
        goto err_after_thread;
    }
    while (cfg->wait_ready && !n->info.ready && n->info.voters <= 1) {
        if (pthread_cond_timedwait(&n->icond, &n->imu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&n->imu);
    *out = n;
    return 0;

err_after_raft:
    /* raft_init succeeded but the loop never ran: close it on this thread. */
    raft_close(&n->raft, closeCb);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    goto err_after_thread;
err_after_io:
    raft_uv_close(&n->io);
err_after_transport:
    if (n->tcp_transport) {
        raft_uv_tcp_close(&n->transport);
    }
err_after_loop:
    uv_close((uv_handle_t *)&n->wake, NULL);
    uv_close((uv_handle_t *)&n->tick, NULL);
    uv_close((uv_handle_t *)&n->flush, NULL);
    uv_run(&n->loop, UV_RUN_DEFAULT);
err_after_thread:
    uv_loop_close(&n->loop);
    fsmClose(&n->fsm);
err_after_alloc:
    pthread_mutex_destroy(&n->qmu);
    pthread_mutex_destroy(&n->imu);
    pthread_cond_destroy(&n->icond);
    free(n);
    return rv ? rv : CAIRN_ERAFT;
}

void nodeStop(struct node *n)
{
    if (n == NULL) {
        return;
    }
    pthread_mutex_lock(&n->qmu);
    n->stopping = true;
    pthread_mutex_unlock(&n->qmu);
    atomic_store(&n->fsm.stop, true); /* a follower waiting on a full disk gives up */
    uv_async_send(&n->wake);
    pthread_join(n->thread, NULL);
    uv_loop_close(&n->loop);
    fsmClose(&n->fsm);
    pthread_mutex_destroy(&n->qmu);
    pthread_mutex_destroy(&n->imu);
    pthread_cond_destroy(&n->icond);
    free(n);
}

void nodeWake(struct node *n)
{
    if (n != NULL) {
        uv_async_send(&n->wake);
    }
}

bool nodeOnLoop(const struct node *n)
{
    (void)n;
    return onLoopThread;
}

/* ---- the continuous archive reads libraft's log (archive.c, issue 18) ---- */
struct raft *nodeRaft(struct node *n)
{
    assert(onLoopThread);
    return &n->raft;
}

struct caught_up {
    struct node *n;
    uint64_t id, max_lag;
    bool yes;
};

/* On the loop thread (nodeCall). */
static int caughtUpOnLoop(void *arg, char *errmsg)
{
    struct caught_up *c = arg;
    struct raft *r = &c->n->raft;
    (void)errmsg;
    c->yes = false;
    if (raft_state(r) != RAFT_LEADER || r->leader_state.progress == NULL) {
        return 0;
    }
    for (unsigned i = 0; i < r->configuration.n; i++) {
        if (r->configuration.servers[i].id == c->id) {
            const struct raft_progress *p = &r->leader_state.progress[i];
            c->yes = p->recent_recv && p->match_index + c->max_lag >= raft_last_index(r);
        }
    }
    return 0;
}

uint64_t nodeDesignatedFollower(const struct node_info *info)
{
    uint64_t best = 0;
    for (unsigned i = 0; i < info->n_servers; i++) {
        const struct node_server *s = &info->servers[i];
        if (s->role == RAFT_VOTER && s->id != info->leader_id && (best == 0 || s->id < best)) {
            best = s->id;
        }
    }
    return best;
}

int nodeFollowerCaughtUp(struct node *n, uint64_t id, uint64_t max_lag, bool *yes, char *errmsg)
{
    struct caught_up c = {n, id, max_lag, false};
    int rv = nodeCall(n, caughtUpOnLoop, &c, errmsg);
    *yes = rv == 0 && c.yes;
    return rv;
}
/* ---- end: the continuous archive ---- */

/* Queue op for the loop thread; 0 or CAIRN_ESHUTDOWN. */
static int enqueue(struct node *n, struct op *op, char *errmsg)
{
    pthread_mutex_init(&op->mu, NULL);
    pthread_cond_init(&op->cond, NULL);
    op->done = false;
    op->errmsg = errmsg;
    op->next = NULL;
    op->node = n;

    pthread_mutex_lock(&n->qmu);
    if (n->stopping) {
        pthread_mutex_unlock(&n->qmu);
        errorf(errmsg, "node is shutting down");
        return CAIRN_ESHUTDOWN;
    }
    if (n->qtail) {
        n->qtail->next = op;
    } else {
        n->qhead = op;
    }
    n->qtail = op;
    pthread_mutex_unlock(&n->qmu);
    uv_async_send(&n->wake);
    return 0;
}

/* Wait until the loop has answered op. */
static int waitOp(struct op *op)
{
    pthread_mutex_lock(&op->mu);
    while (!op->done) {
        pthread_cond_wait(&op->cond, &op->mu);
    }
    pthread_mutex_unlock(&op->mu);
    return op->status;
}

/* Queue op and wait until it is answered; op's mutex and condition stay (the loop may
 * still hold op, see opRelease). */
static int submitShared(struct node *n, struct op *op, char *errmsg)
{
    int rv = enqueue(n, op, errmsg);
    return rv != 0 ? rv : waitOp(op);
}

/* The same for an op on the caller's stack, which only the caller holds once answered. */
static int submit(struct node *n, struct op *op, char *errmsg)
{
    int rv = submitShared(n, op, errmsg);
    pthread_mutex_destroy(&op->mu);
    pthread_cond_destroy(&op->cond);
    return rv;
}

/* Early apply (store.h): when this node leads and every entry of its log is applied,
 * the entry proposed now is likely the next one: the calling thread runs b as that
 * entry while the loop thread checksums, writes and replicates it (with a large
 * entry, libraft's checksum alone is a few milliseconds). The apply of the entry
 * commits the run or rolls it back (fsm.c). */
static void applyEarly(struct node *n, const struct batch *b, uint64_t after,
                       uint64_t last_index, const unsigned char key[STORE_EARLY_KEY])
{
    if (b == NULL || b->kind == BATCH_RESTORE || b->kind == BATCH_DIGEST ||
        (b->flags & BATCH_META)) {
        return;
    }
    storeEarlyRun(n->store, b, after, last_index + 1, key);
}

int nodeApply(struct node *n, void *cmd, size_t len, const struct batch *b,
              struct cairn_result **out, char *errmsg)
{
    struct op *op;
    uint64_t after = storeAppliedIndex(n->store);
    uint64_t last_index;
    bool early;
    int rv;
    *out = NULL;
    op = calloc(1, sizeof *op);
    if (op == NULL) {
        free(cmd);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    op->type = OP_APPLY;
    op->buf.len = len;
    op->buf.base = cmd; /* libraft's from here on (raft_free) */
    fsmEntryKey(cmd, len, op->key);
    op->refs = 2; /* this thread's and the loop's */
    pthread_mutex_lock(&n->imu);
    early = n->info.state == RAFT_LEADER && n->info.last_log_index == n->info.applied_index;
    last_index = n->info.last_log_index;
    pthread_mutex_unlock(&n->imu);
    rv = enqueue(n, op, op->errbuf);
    if (rv == 0) {
        if (early) {
            applyEarly(n, b, after, last_index, op->key); /* op is ours until opRelease */
        }
        rv = waitOp(op);
    }
    if (rv == CAIRN_ESHUTDOWN && !op->done) {
        /* refused before it reached the loop, which holds no reference */
        raft_free(op->buf.base);
        op->refs--;
    }
    pthread_mutex_lock(&op->mu);
    if (rv == 0 && op->result == NULL) {
        errorf(errmsg, "entry was applied before this request was answered");
        rv = CAIRN_ERAFT;
    } else if (rv == 0) {
        *out = op->result;
        op->result = NULL;
    } else {
        errorf(errmsg, "%s", op->errbuf);
    }
    pthread_mutex_unlock(&op->mu);
    opRelease(op);
    return rv;
}

int nodeBarrier(struct node *n, char *errmsg)
{
    struct op op;
    memset(&op, 0, sizeof op);
    op.type = OP_BARRIER;
    return submit(n, &op, errmsg);
}

int nodeCall(struct node *n, int (*fn)(void *arg, char *errmsg), void *arg, char *errmsg)
{
    struct op op;
    memset(&op, 0, sizeof op);
    op.type = OP_CALL;
    op.req.call.fn = fn;
    op.req.call.arg = arg;
    return submit(n, &op, errmsg);
}

int nodeChange(struct node *n, enum node_change kind, uint64_t id, const char *address,
               int role, char *errmsg)
{
    struct op op;
    memset(&op, 0, sizeof op);
    op.type = OP_CHANGE;
    op.req.change.kind = kind;
    op.req.change.id = id;
    op.req.change.address = address;
    op.req.change.role = role;
    return submit(n, &op, errmsg);
}

static int forceSnapshot(void *arg, char *errmsg)
{
    struct node *n = arg;
    n->fsm.force_snapshot = true;
    n->fsm.cur_threshold = 1;
    raft_set_snapshot_threshold(&n->raft, 1);
    return 0;
}

/* An entry applied after now: a barrier on the leader; on a follower, one the leader
 * is asked for (cfg.nudge). */
static int appendEntry(struct node *n, char *errmsg)
{
    int rv = nodeBarrier(n, errmsg);
    if ((rv == CAIRN_ENOTLEADER || rv == CAIRN_ENOLEADER) && n->cfg.nudge != NULL) {
        rv = n->cfg.nudge(n->cfg.nudge_data, errmsg);
    }
    return rv;
}

struct applied_arg {
    struct node *n;
    uint64_t index;
};

static int readApplied(void *arg, char *errmsg)
{
    struct applied_arg *a = arg;
    a->index = raft_last_applied(&a->n->raft);
    return 0;
}

int nodeSnapshotSoon(struct node *n, char *errmsg)
{
    int rv = nodeCall(n, forceSnapshot, n, errmsg);
    return rv != 0 ? rv : appendEntry(n, errmsg);
}

int nodeSnapshot(struct node *n, uint64_t *index, char *errmsg)
{
    struct node_info info;
    struct timespec now;
    struct timespec deadline;
    unsigned failures;
    uint64_t want;
    int rv;

    if ((rv = nodeCall(n, forceSnapshot, n, errmsg)) != 0) {
        return rv;
    }
    /* An entry applied after the threshold drops to 1 makes libraft take it. */
    if ((rv = appendEntry(n, errmsg)) != 0) {
        return rv;
    }
    struct applied_arg aa = {n, 0};
    if ((rv = nodeCall(n, readApplied, &aa, errmsg)) != 0) {
        return rv;
    }
    want = aa.index;
    failures = atomic_load(&n->fsm.snapshot_failures);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 120;
    for (unsigned polls = 1;; polls++) {
        bool stopping;
        nodeInfo(n, &info);
        if (info.last_snapshot_index >= want) {
            *index = info.last_snapshot_index;
            return 0;
        }
        if (atomic_load(&n->fsm.snapshot_failures) != failures) {
            /* The write failed (disk full, I/O error): say so now, not after the wait.
             * The message was complete before the count moved. */
            errorf(errmsg, "snapshot not written: %s", n->fsm.snapshot_errmsg);
            return n->fsm.snapshot_error ? n->fsm.snapshot_error : CAIRN_EIO;
        }
        pthread_mutex_lock(&n->qmu);
        stopping = n->stopping;
        pthread_mutex_unlock(&n->qmu);
        if (stopping) {
            errorf(errmsg, "node is shutting down");
            return CAIRN_ESHUTDOWN;
        }
        /* libraft tries a snapshot only after an apply: when the attempt was refused
         * (the database could not be frozen at that moment), force it again with a
         * new entry. */
        if (polls % 40 == 0 && ((rv = nodeCall(n, forceSnapshot, n, errmsg)) != 0 ||
                                (rv = appendEntry(n, errmsg)) != 0)) {
            return rv;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec) {
            errorf(errmsg, "no snapshot at index %llu after 120 s (last at %llu)",
                   (unsigned long long)want, (unsigned long long)info.last_snapshot_index);
            return CAIRN_ETIMEOUT;
        }
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL); /* polling libraft's progress */
    }
}

void nodeInfo(struct node *n, struct node_info *info)
{
    if (n == NULL) {
        /* The node is being started: the log's replay applies entries (a restore's
         * among them) before nodeStart hands the node out. Nothing known yet. */
        memset(info, 0, sizeof *info);
        return;
    }
    pthread_mutex_lock(&n->imu);
    *info = n->info;
    pthread_mutex_unlock(&n->imu);
}

/* ---- an offline new log (cairn repair) ------------------------------------------- */

struct reset {
    bool done;
    int status;
};

static void resetPutCb(struct raft_io_snapshot_put *req, int status)
{
    struct reset *r = req->data;
    r->done = true;
    r->status = status;
}

static void resetCloseCb(struct raft_io *io)
{
    struct reset *r = io->data;
    r->done = true;
}

int nodeResetLog(const char *raft_dir, uint64_t id, const char *address, uint64_t term,
                 uint64_t index, const struct node_server *servers, unsigned n,
                 const void *data, size_t len, char *errmsg)
{
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_snapshot snap;
    struct raft_buffer buf;
    struct raft_io_snapshot_put req;
    struct reset r = {false, 0};
    struct raft_snapshot *loaded = NULL;
    struct raft_entry *entries = NULL;
    size_t n_entries = 0;
    raft_term t0 = 0;
    raft_id vote = 0;
    raft_index start = 0;
    int rv;

    memset(&snap, 0, sizeof snap);
    if (uv_loop_init(&loop) != 0) {
        errorf(errmsg, "event loop: cannot initialise");
        return CAIRN_ENOMEM;
    }
    localTransportInit(&transport);
    rv = raft_uv_init(&io, &loop, raft_dir, &transport);
    if (rv != 0) {
        errorf(errmsg, "raft storage in %s: %s", raft_dir, io.errmsg);
        uv_loop_close(&loop);
        return CAIRN_EIO;
    }
    raft_uv_set_auto_recovery(&io, false);
    raft_uv_set_segment_size(&io, SEGMENT_SIZE);
    io.data = &r;
    rv = io.init(&io, id, address);
    if (rv == 0) {
        rv = io.load(&io, &t0, &vote, &loaded, &start, &entries, &n_entries);
    }
    if (rv == 0 && (loaded != NULL || n_entries > 0)) {
        errorf(errmsg, "%s already holds a Raft log: a new one is started only in an empty "
                       "directory", raft_dir);
        rv = -1;
    }
    if (loaded != NULL) {
        raft_configuration_close(&loaded->configuration);
        for (unsigned i = 0; i < loaded->n_bufs; i++) {
            raft_free(loaded->bufs[i].base);
        }
        raft_free(loaded->bufs);
        raft_free(loaded);
    }
    for (size_t i = 0; i < n_entries; i++) {
        if (i == 0 || entries[i].batch != entries[i - 1].batch) {
            raft_free(entries[i].batch);
        }
    }
    raft_free(entries);
    if (rv == 0) {
        rv = io.set_term(&io, term);
    }
    if (rv == 0) {
        raft_configuration_init(&snap.configuration);
        for (unsigned i = 0; i < n && rv == 0; i++) {
            rv = raft_configuration_add(&snap.configuration, servers[i].id, servers[i].address,
                                        servers[i].role);
        }
    }
    if (rv == 0) {
        buf.base = (void *)data;
        buf.len = len;
        snap.index = index;
        snap.term = term;
        snap.configuration_index = index;
        snap.bufs = &buf;
        snap.n_bufs = 1;
        req.data = &r;
        rv = io.snapshot_put(&io, 0, &req, &snap, resetPutCb);
        while (rv == 0 && !r.done) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        if (rv == 0) {
            rv = r.status;
        }
    }
    if (rv > 0) {
        errorf(errmsg, "writing the new log in %s: %s%s%s", raft_dir, raft_strerror(rv),
               io.errmsg[0] ? ": " : "", io.errmsg);
    }
    raft_configuration_close(&snap.configuration);
    r.done = false;
    io.close(&io, resetCloseCb);
    while (!r.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    raft_uv_close(&io);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rv == 0 ? 0 : rv < 0 ? CAIRN_EEXIST : CAIRN_EIO;
}
