/* The continuous archive's writer: the ring of committed entries every archiving node
 * keeps, the read-back of libraft's log when the ring lacks an entry, and the archiver
 * thread that cuts them into segments and uploads them (see archive.h for the design
 * and docs/ARCHITECTURE.md, "Continuous archive").
 *
 * Threads: archivePush and archiveReset run on the loop thread and only copy under
 * the mutex; logReadOnLoop runs on the loop thread through nodeCall (and
 * nodeFollowerCaughtUp there)
 * (the only code here that touches libraft); archMain is the archiver's own thread
 * (repository I/O, backups, zstd); archiveStatus any thread. */
#define _GNU_SOURCE
#include "archive.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "admin.h"
#include "db.h"
#include "lib.h"
#include "node.h"
#include "repo.h"
#include "reposet.h"

#define DEFAULT_INTERVAL_MS 1000u
#define DEFAULT_SEGMENT_BYTES (16ull << 20)
#define DEFAULT_QUEUE_BYTES (64ull << 20)
#define DEFAULT_SYNC_TIMEOUT_MS 10000u
#define SYNC_RETRY_MS 100      /* how often a waiting write asks again after a failed upload */
#define LEADER_POLL_MS 200     /* how soon a node not archiving looks again whether it does */
#define RING_ENTRY_OVERHEAD 48 /* what an entry costs beyond its bytes, counted */
/* --archive-from follower: the follower archives while it is at most this many entries
 * behind (its own view: the commit index it knows; the leader's: the follower's match
 * index against its last index); past it the leader takes over. */
#define ESTABLISH_PER_TURN 3 /* new timelines one turn may start (each a full backup) */

struct ring_entry {
    struct ring_entry *next;
    uint64_t index;
    int64_t time_ms;
    uint32_t len;
    unsigned char bytes[];
};

/* A timeline as this node last saw it in the repository (/status). */
struct known_timeline {
    char name[ARCSEG_TIMELINE_SIZE];
    uint64_t start, head;
};

struct archiver {
    struct cairn *db;
    char repo_name[BACKUP_REPO_NAME_SIZE];
    char url[PATH_MAX];
    unsigned interval_ms;
    uint64_t segment_bytes;
    uint64_t queue_budget;
    bool from_follower; /* --archive-from follower */
    struct repo *repo;  /* the thread's */
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop, kick;
    /* --archive-sync: writes waiting for their entry to be uploaded (archiveWait); each
     * upload wakes them all, and one upload serves every entry it holds. */
    bool sync;
    unsigned sync_timeout_ms;
    bool leading; /* the last turn found this node the archiver */
    pthread_cond_t uploaded;
    unsigned waiters;
    /* the ring, under mu: a cache of the newest committed entries; what it lacks is read
     * back from libraft's log */
    struct ring_entry *first, *last;
    uint64_t ring_bytes, ring_n;
    /* What the segment being uploaded holds of the ring (counted as ring_bytes counts),
     * 0 between uploads: the ring's bytes past it are what waits for the next segment. */
    uint64_t uploading_bytes;
    uint64_t covered_from; /* every command entry in [covered_from, last_pushed] is held */
    uint64_t last_pushed;
    bool active;       /* this node archives */
    uint64_t archived; /* the archive's head as the archiver knows it */
    /* The log outran the archive: an entry the archive needs is gone from the ring and
     * from libraft's log (compacted after a snapshot). outran_pending: the next turn
     * takes a full backup and starts a new timeline on it; the rest is for /status. */
    bool outran_pending, outran;
    uint64_t outrun_index, outruns;
    int64_t outran_ms;
    /* the thread's state, copied for /status under mu */
    bool head_known;
    char timeline[ARCSEG_TIMELINE_SIZE];
    unsigned char head_digest[BACKUP_DIGEST_SIZE];
    /* The history this node's archive belongs to (arcseg.h): carried from the head when
     * continuing, minted for a timeline that does not continue a head proven ours. */
    unsigned char history[ARCSEG_HISTORY_SIZE];
    int64_t head_ms;
    /* When this node's timeline started beside a head it judged another history's: that
     * head's index (0: it did not), and its entry's length and hash. Debug builds check
     * that no entry of this node's log is that entry (assertNotForeign). Archiver
     * thread. */
    uint64_t foreign_last, foreign_hash;
    uint32_t foreign_len;
    uint64_t segments, bytes, entries, timelines;
    uint64_t log_reads, log_entries; /* entries read back from libraft's log */
    struct known_timeline tl[ARCHIVE_TIMELINES_MAX];
    unsigned ntl;
    char last_error[CAIRN_ERRMSG_SIZE];
    int64_t last_error_ms;
};

static void archLog(struct archiver *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void archLog(struct archiver *a, const char *fmt, ...)
{
    char line[CAIRN_ERRMSG_SIZE + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dbLog(a->db, "archive: %s", line);
}

/* Remember (and log) the last failure. */
static void archFail(struct archiver *a, const char *msg)
{
    bool same;
    pthread_mutex_lock(&a->mu);
    same = strcmp(a->last_error, msg) == 0;
    snprintf(a->last_error, sizeof a->last_error, "%s", msg);
    a->last_error_ms = libNowMs();
    pthread_mutex_unlock(&a->mu);
    if (!same) {
        archLog(a, "%s", msg);
    }
}

/* Drop the oldest entry. mu held. */
static void ringDropFirst(struct archiver *a)
{
    struct ring_entry *e = a->first;
    a->first = e->next;
    if (a->first == NULL) {
        a->last = NULL;
    }
    a->ring_bytes -= e->len + RING_ENTRY_OVERHEAD;
    a->ring_n--;
    if (e->index + 1 > a->covered_from) {
        a->covered_from = e->index + 1; /* an entry past the head is read back from the log */
    }
    free(e);
}

static void ringClear(struct archiver *a)
{
    while (a->first != NULL) {
        ringDropFirst(a);
    }
}

void archivePush(void *data, uint64_t index, const struct raft_buffer *buf)
{
    struct archiver *a = data;
    struct ring_entry *e;
    uint64_t cost = buf->len + RING_ENTRY_OVERHEAD;
    bool kick = false;

    assert(nodeOnLoop(a->db->node));
    pthread_mutex_lock(&a->mu);
    if (index <= a->last_pushed) {
        pthread_mutex_unlock(&a->mu); /* applied again after a failed apply */
        return;
    }
    /* An entry larger than the whole queue is not held (below): no need to empty the
     * queue for it. */
    while (a->first != NULL && cost <= a->queue_budget && a->ring_bytes + cost > a->queue_budget) {
        ringDropFirst(a);
    }
    e = cost <= a->queue_budget && buf->len <= UINT32_MAX ? malloc(sizeof *e + buf->len) : NULL;
    if (e == NULL) {
        /* Larger than the whole queue, or no memory: the entry is not held here; the
         * archiver reads it back from libraft's log. */
        a->covered_from = index + 1;
        a->last_pushed = index;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    e->next = NULL;
    e->index = index;
    e->len = (uint32_t)buf->len;
    e->time_ms = arcsegCommandTime(buf->base, buf->len);
    memcpy(e->bytes, buf->base, buf->len);
    if (a->last != NULL) {
        a->last->next = e;
    } else {
        a->first = e;
    }
    a->last = e;
    a->ring_bytes += cost;
    a->ring_n++;
    a->last_pushed = index;
    /* A segment's worth waits beyond the one being uploaded: cut it now, not after the
     * interval (the entries under upload still count in ring_bytes until it ends). */
    if (a->active && a->ring_bytes >= a->uploading_bytes + a->segment_bytes && !a->kick) {
        a->kick = kick = true;
    }
    pthread_mutex_unlock(&a->mu);
    if (kick) {
        pthread_cond_signal(&a->cond);
    }
}

void archiveReset(void *data, uint64_t index)
{
    struct archiver *a = data;
    assert(nodeOnLoop(a->db->node));
    pthread_mutex_lock(&a->mu);
    if (index >= a->last_pushed) {
        ringClear(a);
        a->covered_from = index + 1;
        a->last_pushed = index;
    }
    pthread_mutex_unlock(&a->mu);
}

/* ---- entries taken for a segment: from the ring, or read back from libraft's log ---- */

/* Copies of the entries a segment will hold, in index order; each bytes is malloc'd. */
struct take {
    struct arcseg_entry *v;
    size_t n, cap;
    uint64_t bytes;
};

static void takeFree(struct take *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free((void *)t->v[i].bytes);
    }
    free(t->v);
    memset(t, 0, sizeof *t);
}

/* Append a copy of one entry; CAIRN_ENOMEM. */
static int takeAdd(struct take *t, uint64_t index, int64_t time_ms, const void *p, size_t len)
{
    unsigned char *copy;
    if (len > UINT32_MAX) {
        return CAIRN_ETOOBIG;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct arcseg_entry *v = realloc(t->v, cap * sizeof *v);
        if (v == NULL) {
            return CAIRN_ENOMEM;
        }
        t->v = v;
        t->cap = cap;
    }
    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return CAIRN_ENOMEM;
    }
    memcpy(copy, p, len);
    t->v[t->n++] = (struct arcseg_entry){index, 0, time_ms, (uint32_t)len, copy};
    t->bytes += len;
    return 0;
}

/* Copy the ring's entries after index `after` into t until it holds segment_bytes (at
 * least one entry). mu held. */
static int ringTake(struct archiver *a, uint64_t after, struct take *t)
{
    struct ring_entry *e;
    int rv;
    for (e = a->first; e != NULL && e->index <= after; e = e->next) {
    }
    for (; e != NULL && (t->n == 0 || t->bytes < a->segment_bytes); e = e->next) {
        if ((rv = takeAdd(t, e->index, e->time_ms, e->bytes, e->len)) != 0) {
            return rv;
        }
    }
    return 0;
}

/* A read of libraft's log, on the loop thread (nodeCall): the command entries of
 * [from, to] into t, until it holds max_bytes. */
struct log_read {
    struct archiver *a;
    uint64_t from, to, max_bytes;
    struct take *t;
    uint64_t upto;       /* the last index looked at */
    bool gone;           /* `from` is no longer in the log (compacted after a snapshot) */
    uint64_t first_held; /* then: the log's first index */
    int rv;
};

static int logReadOnLoop(void *arg, char *errmsg)
{
    struct log_read *r = arg;
    struct raft *raft = nodeRaft(r->a->db->node);
    const struct raft_log *log = &raft->log;
    size_t count;
    uint64_t first, last, to = r->to;

    (void)errmsg;
    assert(nodeOnLoop(r->a->db->node));
    count = log->back >= log->front ? log->back - log->front : log->size - log->front + log->back;
    first = log->offset + 1;
    last = log->offset + count;
    r->upto = r->from - 1;
    if (r->from < first) {
        r->gone = true;
        r->first_held = first;
        return 0;
    }
    /* Only what is applied here: committed, and what the ring would have seen. */
    if (to > raft_last_applied(raft)) {
        to = raft_last_applied(raft);
    }
    if (to > last) {
        to = last;
    }
    for (uint64_t i = r->from; i <= to; i++) {
        const struct raft_entry *e = &log->entries[(log->front + (i - first)) % log->size];
        if (r->t->n > 0 && r->t->bytes >= r->max_bytes) {
            break;
        }
        r->upto = i;
        if (e->type != RAFT_COMMAND) {
            continue; /* a barrier, a configuration: never handed to the fsm */
        }
        r->rv =
            takeAdd(r->t, i, arcsegCommandTime(e->buf.base, e->buf.len), e->buf.base, e->buf.len);
        if (r->rv != 0) {
            break;
        }
    }
    return 0;
}

/* The entries after the archive's head, up to segment_bytes of them (at least one), into
 * t (empty: nothing waits): from the ring, and what the ring no longer holds from
 * libraft's log. CAIRN_ENOTFOUND with *first_held: the log no longer holds the entry
 * after the head either (the log outran the archive). Archiver thread. */
static int takeEntries(struct archiver *a, struct take *t, uint64_t *first_held, char *errmsg)
{
    int rv = 0;
    assert(!nodeOnLoop(a->db->node)); /* nodeCall below waits for the loop */
    memset(t, 0, sizeof *t);
    for (int attempt = 0; attempt < 8 && t->n == 0; attempt++) {
        struct log_read r;
        uint64_t from, to;

        pthread_mutex_lock(&a->mu);
        from = a->archived + 1;
        if (a->last_pushed < from) {
            pthread_mutex_unlock(&a->mu);
            return 0; /* nothing waits */
        }
        if (a->covered_from <= from) {
            rv = ringTake(a, from - 1, t);
            pthread_mutex_unlock(&a->mu);
            break;
        }
        to = a->covered_from - 1;
        pthread_mutex_unlock(&a->mu);

        /* Not under mu: the loop thread takes it to push. */
        memset(&r, 0, sizeof r);
        r.a = a;
        r.from = from;
        r.to = to;
        r.max_bytes = a->segment_bytes;
        r.t = t;
        if ((rv = nodeCall(a->db->node, logReadOnLoop, &r, errmsg)) != 0) {
            break;
        }
        if ((rv = r.rv) != 0) {
            break;
        }
        if (r.gone) {
            *first_held = r.first_held;
            rv = CAIRN_ENOTFOUND;
            break;
        }
        pthread_mutex_lock(&a->mu);
        a->log_reads++;
        a->log_entries += t->n;
        if (r.upto == to && t->bytes < a->segment_bytes && a->covered_from <= to + 1) {
            rv = ringTake(a, to, t); /* the rest from the ring, which continues the read */
        }
        pthread_mutex_unlock(&a->mu);
        if (rv != 0) {
            break;
        }
        /* t->n == 0: only barriers in [from, to], and the ring moved on meanwhile: again,
         * further */
    }
    if (rv != 0) {
        takeFree(t);
        if (rv == CAIRN_ENOMEM) {
            errorf(errmsg, "out of memory cutting a segment");
        } else if (rv == CAIRN_ETOOBIG) {
            errorf(errmsg, "an entry after index %llu is larger than a segment holds",
                   (unsigned long long)a->archived);
        }
    }
    return rv;
}

/* Whether this node holds entry `index` (the ring, else libraft's log): *held, and the
 * entry's length and hash. Archiver thread. */
static int entryAt(struct archiver *a, uint64_t index, bool *held, uint32_t *len, uint64_t *hash,
                   uint64_t *first_held, char *errmsg)
{
    struct take t;
    struct log_read r;
    int rv;

    assert(!nodeOnLoop(a->db->node)); /* nodeCall below waits for the loop */
    *held = false;
    pthread_mutex_lock(&a->mu);
    for (struct ring_entry *e = a->first; e != NULL && e->index <= index; e = e->next) {
        if (e->index == index) {
            *held = true;
            *len = e->len;
            *hash = XXH3_64bits(e->bytes, e->len);
        }
    }
    pthread_mutex_unlock(&a->mu);
    if (*held) {
        return 0;
    }
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    r.a = a;
    r.from = r.to = index;
    r.max_bytes = 1;
    r.t = &t;
    if ((rv = nodeCall(a->db->node, logReadOnLoop, &r, errmsg)) == 0 && (rv = r.rv) == 0 &&
        !r.gone && t.n == 1 && t.v[0].index == index) {
        *held = true;
        *len = t.v[0].len;
        *hash = XXH3_64bits(t.v[0].bytes, t.v[0].len);
    }
    *first_held = r.gone ? r.first_held : index + 1;
    takeFree(&t);
    if (rv == CAIRN_ENOMEM) {
        errorf(errmsg, "out of memory reading log entry %llu", (unsigned long long)index);
    }
    return rv;
}

/* Debug builds check the invariant that keeps the archive one timeline: a node never
 * starts a timeline beside a head it could continue, one whose entry its own log holds
 * with the same bytes (that is a fork). The head it judged another history's is checked
 * again once this node holds that index: the base of the new timeline taken at or past
 * it (t NULL: looked up in the ring or log), or a segment of the new timeline holding
 * it (t). Archiver thread. */
static void assertNotForeign(struct archiver *a, const struct take *t, uint64_t base_index)
{
#ifndef NDEBUG
    bool held = false;
    uint32_t len = 0;
    uint64_t hash = 0, first_held;
    char why[CAIRN_ERRMSG_SIZE];
    if (a->foreign_last == 0) {
        return;
    }
    if (t == NULL) {
        if (base_index >= a->foreign_last &&
            entryAt(a, a->foreign_last, &held, &len, &hash, &first_held, why) != 0) {
            held = false; /* stopping, or out of memory: nothing to check */
        }
    } else {
        for (size_t i = 0; i < t->n && !held; i++) {
            if (t->v[i].index == a->foreign_last) {
                held = true;
                len = t->v[i].len;
                hash = XXH3_64bits(t->v[i].bytes, len);
            }
        }
    }
    assert(!held || len != a->foreign_len || hash != a->foreign_hash);
#else
    (void)a;
    (void)t;
    (void)base_index;
#endif
}

/* ---- the archive's head ------------------------------------------------------------ */

struct head {
    bool found;
    char timeline[ARCSEG_TIMELINE_SIZE];
    char name[ARCSEG_NAME_SIZE];
    uint64_t last;
    int64_t last_ms;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    uint32_t last_len; /* the head entry's length and hash, to tell another history's */
    uint64_t last_hash;
    unsigned char history[ARCSEG_HISTORY_SIZE];
};

/* Remember the repository's timelines for /status (the newest ARCHIVE_TIMELINES_MAX by
 * start). segs sorted by timeline, then first index. */
static void keepTimelines(struct archiver *a, const struct arcseg_info *segs, size_t n)
{
    struct known_timeline v[ARCHIVE_TIMELINES_MAX];
    unsigned nv = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(segs[i - 1].timeline, segs[i].timeline) == 0) {
            continue;
        }
        if (nv == ARCHIVE_TIMELINES_MAX) {
            memmove(v, v + 1, (nv - 1) * sizeof *v);
            nv--;
        }
        snprintf(v[nv].name, sizeof v[nv].name, "%s", segs[i].timeline);
        v[nv].start = segs[i].first;
        v[nv].head = segs[i].first - 1;
        nv++;
    }
    pthread_mutex_lock(&a->mu);
    memcpy(a->tl, v, nv * sizeof *v);
    a->ntl = nv;
    pthread_mutex_unlock(&a->mu);
}

/* The current timeline's entry in the known list (a new one appended). mu held. */
static void noteTimeline(struct archiver *a, const char *name, uint64_t start, uint64_t head)
{
    unsigned i;
    for (i = 0; i < a->ntl && strcmp(a->tl[i].name, name) != 0; i++) {
    }
    if (i == a->ntl) {
        if (a->ntl == ARCHIVE_TIMELINES_MAX) {
            memmove(a->tl, a->tl + 1, (a->ntl - 1) * sizeof a->tl[0]);
            a->ntl--;
        }
        i = a->ntl++;
        snprintf(a->tl[i].name, sizeof a->tl[i].name, "%s", name);
        a->tl[i].start = start;
    }
    a->tl[i].head = head;
}

static int byLastDesc(const void *x, const void *y)
{
    const struct head *a = x, *b = y;
    return a->last > b->last ? -1 : a->last < b->last;
}

/* The newest segment of every timeline, read whole: the heads, furthest first (*hs
 * malloc'd, the caller's; NULL when none). A timeline whose newest segment cannot be
 * read is left out (it will not be continued). */
static int readHeads(struct archiver *a, struct head **hs, size_t *nh, char *errmsg)
{
    struct arcseg_info *segs = NULL;
    struct head *v = NULL;
    size_t n = 0, nv = 0;
    int rv;

    *hs = NULL;
    *nh = 0;
    if ((rv = arcsegList(a->repo, &segs, &n, errmsg)) != 0) {
        return rv;
    }
    keepTimelines(a, segs, n);
    v = calloc(n ? n : 1, sizeof *v);
    if (v == NULL) {
        free(segs);
        errorf(errmsg, "out of memory reading the archive's heads");
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct arcseg seg;
        struct head *h = &v[nv];
        char why[CAIRN_ERRMSG_SIZE];
        if (i + 1 < n && strcmp(segs[i + 1].timeline, segs[i].timeline) == 0) {
            continue; /* not its timeline's newest */
        }
        rv = arcsegRead(a->repo, segs[i].name, &seg, why);
        if (rv == CAIRN_ECORRUPT || rv == CAIRN_ENOTFOUND) {
            archLog(a, "timeline %s cannot be continued: %s", segs[i].timeline, why);
            continue;
        }
        if (rv != 0) {
            snprintf(errmsg, CAIRN_ERRMSG_SIZE, "%s", why);
            free(segs);
            free(v);
            return rv;
        }
        pthread_mutex_lock(&a->mu);
        noteTimeline(a, segs[i].timeline, 0, seg.h.last);
        pthread_mutex_unlock(&a->mu);
        h->found = true;
        snprintf(h->timeline, sizeof h->timeline, "%s", segs[i].timeline);
        snprintf(h->name, sizeof h->name, "%s", segs[i].name);
        h->last = seg.h.last;
        h->last_ms = seg.h.last_ms;
        memcpy(h->digest, seg.digest, BACKUP_DIGEST_SIZE);
        h->last_len = seg.entries[seg.h.count - 1].len;
        h->last_hash = XXH3_64bits(seg.entries[seg.h.count - 1].bytes, h->last_len);
        memcpy(h->history, seg.h.history, ARCSEG_HISTORY_SIZE);
        nv++;
        arcsegFree(&seg);
    }
    free(segs);
    if (nv > 1) {
        qsort(v, nv, sizeof *v, byLastDesc);
    }
    if (nv == 0) {
        free(v);
        v = NULL;
    }
    *hs = v;
    *nh = nv;
    return 0;
}

/* A base for a new timeline: the newest backup of the archive's repository, taken by
 * cairnd (its source says so: a standalone backup of some file is no base) of this
 * node's Raft log, that the ring continues (every entry after its index is held) and
 * whose chain restores (backupChainWhole: none of it failed its last verification);
 * otherwise, and always with full_now, a full backup taken now. Of this log: it records
 * the cluster's id, or, in a cluster without one, no history and an index above 0. Not
 * the backups a restore keeps with the index of another log's archive (another
 * history), nor those of index 0 without a history (POST /db/load's, whose file is the
 * log's state only at the swap entry, a restore's kept state of an archive that names
 * no history): entries replayed onto them from their index on would not make this
 * log's states. */
static bool ofThisLog(const struct archiver *a, const struct backup_info *b)
{
    bool has_id = !libIsZero(a->db->cluster_id, sizeof a->db->cluster_id);
    if (has_id) {
        return memcmp(b->history, a->db->cluster_id, ARCSEG_HISTORY_SIZE) == 0;
    }
    return libIsZero(b->history, BACKUP_HISTORY_SIZE) && b->raft_index > 0;
}

static int findBase(struct archiver *a, uint64_t covered, uint64_t last, bool full_now,
                    struct backup_info *out, char *errmsg)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    int which = reposetByName(&a->db->repos, a->repo_name);
    bool found = false;
    int rv;

    /* full_now: the repository holds another history's archive, whose backups' indexes
     * mean nothing in this log; or the log outran the archive (a base taken now is the
     * one whose next entries the log surely holds). */
    if (!full_now && which >= 0 && reposetList(&a->db->repos, which, &list, &n, errmsg) == 0) {
        for (size_t i = 0; i < n; i++) {
            const struct backup_info *b = &list[i];
            /* One whose last verification failed, or whose chain is broken (a parent
             * missing, unreadable or failed), would be a base no restore of the new
             * timeline could start from. */
            if (b->error[0] != '\0' || b->verified == BACKUP_VERIFY_FAILED ||
                b->raft_index + 1 < covered || b->raft_index > last ||
                strncmp(b->source, "cairnd:", 7) != 0 || !ofThisLog(a, b) ||
                !backupChainWhole(list, n, i)) {
                continue;
            }
            if (!found || b->raft_index > out->raft_index) {
                *out = *b;
                found = true;
            }
        }
    }
    free(list);
    if (found) {
        return 0;
    }
    rv = adminBackup(a->db, BACKUP_FULL, a->repo_name, NULL, NULL, out, errmsg);
    if (rv == 0) {
        archLog(a, "took full backup %s (index %llu) as the base of a new timeline", out->id,
                (unsigned long long)out->raft_index);
    }
    return rv;
}

static int countOne(void *arg, const char *name, uint64_t size, const char *version)
{
    (void)name;
    (void)size;
    (void)version;
    (*(unsigned *)arg)++;
    return 0;
}

/* Whether timeline `name` has segments already (one that cannot be continued: its
 * newest segment is damaged, or it lies behind this node's log). */
static bool timelineExists(struct archiver *a, const char *name)
{
    char prefix[ARCSEG_TIMELINE_SIZE + 16];
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned n = 0;
    snprintf(prefix, sizeof prefix, ARCSEG_PREFIX "%s-", name);
    return repoListNames(a->repo, prefix, countOne, &n, errmsg) != 0 || n > 0;
}

/* Say that the log outran the archive, once per occurrence: the next establish takes a
 * full backup. need: the first index the archive lacks; first_held: the log's first. */
static void outranAt(struct archiver *a, uint64_t need, uint64_t first_held)
{
    pthread_mutex_lock(&a->mu);
    a->outran_pending = true;
    a->outran = true;
    a->outrun_index = need;
    a->outran_ms = libNowMs();
    a->outruns++;
    pthread_mutex_unlock(&a->mu);
    archLog(a,
            "the log outran the archive: entry %llu, the next the archive needs, is no longer "
            "in this node's Raft log (it holds entries from %llu on: compacted after a "
            "snapshot) nor in its queue; taking a full backup and starting a new timeline "
            "from it",
            (unsigned long long)need, (unsigned long long)first_held);
}

/* How the archive's head h relates to this node's log. */
enum head_is { HEAD_OURS, HEAD_FOREIGN, HEAD_GONE, HEAD_AHEAD };

/* Whether history id `history` is the one this node's log goes by: its cluster's id,
 * or the history it archives (carried on from a head it proved its own). Archiver
 * thread (the only writer of a->history). */
static bool historyIsOurs(const struct archiver *a, const unsigned char *history)
{
    if (libIsZero(history, ARCSEG_HISTORY_SIZE)) {
        return false; /* none recorded: anybody's */
    }
    return memcmp(history, a->db->cluster_id, ARCSEG_HISTORY_SIZE) == 0 ||
           memcmp(history, a->history, ARCSEG_HISTORY_SIZE) == 0;
}

/* Whether the archive's head h is this node's history: the entry at its index is in
 * this node's ring or log with the same bytes (HEAD_OURS); another history's (a
 * repository that an earlier cluster archived into, now written by a cluster restored
 * from it or started afresh, whose log numbers its entries from 1 again): the entry
 * differs, or the index was never committed here (HEAD_FOREIGN); HEAD_GONE: the log no
 * longer holds it (compacted), so neither it nor the entries after it can be checked
 * or read; HEAD_AHEAD: a follower archiver that has not applied it yet (the cluster
 * committed it). A ready leader has applied every entry committed before its term, so
 * the archive of its own history never reaches past its applied index. A follower's
 * commit index is not the cluster's: the leader commits with the other voters and
 * tells this one a message later, and it archives (--archive-from follower) while it
 * does not hear from this one, so its segments can end past the commit index this
 * follower knows. A head past a follower's applied index is therefore judged by index
 * only when it names another history (or none); one of this node's history is waited
 * for, and its bytes compared once applied. Taking it for another history's forked
 * the archive: a new timeline beside the one this node had archived. */
static int headIs(struct archiver *a, const struct head *h, enum head_is *out, uint64_t *first_held,
                  char *errmsg)
{
    struct node_info info;
    bool held;
    uint32_t len = 0;
    uint64_t hash = 0;
    int rv;

    nodeInfo(a->db->node, &info);
    *first_held = 0;
    if (info.applied_index < h->last) {
        bool wait = info.state != RAFT_LEADER &&
                    (info.commit_index >= h->last || historyIsOurs(a, h->history));
        *out = wait ? HEAD_AHEAD : HEAD_FOREIGN;
        return 0;
    }
    if ((rv = entryAt(a, h->last, &held, &len, &hash, first_held, errmsg)) != 0) {
        return rv;
    }
    if (!held) {
        *out = HEAD_GONE;
        return 0;
    }
    *out = len == h->last_len && hash == h->last_hash ? HEAD_OURS : HEAD_FOREIGN;
    return 0;
}

_Static_assert(ARCSEG_HISTORY_SIZE == NODE_CLUSTER_ID_SIZE, "a history id is a cluster id");

/* Continue the archive's timeline, or start a new one. The timeline continued is the
 * one whose head reaches furthest among those proven this node's history (another
 * history's may reach further: a second cluster archiving into the repository). */
static int establish(struct archiver *a, char *errmsg)
{
    struct backup_info base;
    char name[ARCSEG_TIMELINE_SIZE];
    uint64_t covered, last;
    bool outran;
    bool full_now = false;
    bool same_id_foreign = false; /* another log's head under this cluster's id */
    struct head forked = {0};     /* the head judged another history's, if found */
    int rv;

    pthread_mutex_lock(&a->mu);
    covered = a->covered_from;
    last = a->last_pushed;
    outran = a->outran_pending;
    pthread_mutex_unlock(&a->mu);
    if (outran) {
        full_now = true; /* said when found (outranAt) */
    } else {
        struct head *hs = NULL;
        const struct head *ours = NULL, *gone = NULL, *foreign = NULL;
        uint64_t gone_first = 0;
        size_t nh = 0;
        if ((rv = readHeads(a, &hs, &nh, errmsg)) != 0) {
            return rv;
        }
        for (size_t i = 0; i < nh && ours == NULL && gone == NULL; i++) {
            enum head_is is;
            uint64_t first_held;
            if ((rv = headIs(a, &hs[i], &is, &first_held, errmsg)) != 0) {
                free(hs);
                return rv;
            }
            if (is == HEAD_AHEAD) {
                errorf(errmsg,
                       "the archive's head is index %llu (timeline %s), which this node has "
                       "not applied yet: it archives once it has",
                       (unsigned long long)hs[i].last, hs[i].timeline);
                free(hs);
                return CAIRN_EBUSY;
            } else if (is == HEAD_OURS) {
                ours = &hs[i];
            } else if (is == HEAD_GONE) {
                gone = &hs[i]; /* the heads below it are gone too */
                gone_first = first_held;
            } else if (foreign == NULL) {
                foreign = &hs[i];
            }
        }
        if (ours != NULL) {
            pthread_mutex_lock(&a->mu);
            snprintf(a->timeline, sizeof a->timeline, "%s", ours->timeline);
            memcpy(a->head_digest, ours->digest, BACKUP_DIGEST_SIZE);
            memcpy(a->history, ours->history, ARCSEG_HISTORY_SIZE); /* proven ours: carried on */
            a->head_ms = ours->last_ms;
            a->foreign_last = 0;
            a->archived = ours->last;
            a->head_known = true;
            a->active = true;
            pthread_mutex_unlock(&a->mu);
            archLog(a, "continuing timeline %s after index %llu (%s)", ours->timeline,
                    (unsigned long long)ours->last, ours->name);
            free(hs);
            return 0;
        }
        if (gone != NULL) {
            outranAt(a, gone->last + 1, gone_first);
            full_now = true;
        } else if (foreign != NULL) {
            forked = *foreign;
            same_id_foreign = !libIsZero(a->db->cluster_id, sizeof a->db->cluster_id) &&
                              memcmp(foreign->history, a->db->cluster_id,
                                     ARCSEG_HISTORY_SIZE) == 0;
            archLog(a,
                    "the archive's head, index %llu of timeline %s, is not an entry of this "
                    "node's log (another cluster's archive, restored from?): starting a new "
                    "timeline on a full backup taken now; archive a restored cluster into a "
                    "repository of its own",
                    (unsigned long long)foreign->last, foreign->timeline);
            full_now = true;
        }
        free(hs);
    }
    if ((rv = findBase(a, covered, last, full_now, &base, errmsg)) != 0) {
        return rv;
    }
    /* Named after its base, so that two archivers starting on one base write one
     * timeline; a name taken by a timeline that cannot be continued gets a random part
     * instead. */
    arcsegTimelineName(base.raft_index + 1, base.digest, name);
    if (timelineExists(a, name)) {
        arcsegTimelineName(base.raft_index + 1, NULL, name);
    }
    pthread_mutex_lock(&a->mu);
    if (!outran || libIsZero(a->history, sizeof a->history)) {
        /* No head proven this node's history (a fresh archive, another history's head,
         * one the log no longer holds): the cluster's id, which names its one Raft log
         * (cluster.h), or a random id for a cluster that has none. After the log outran
         * the timeline this node was continuing, the history is the same. A head of
         * another log that names this cluster's id (a data directory copied to start a
         * second cluster) gets a random one: two logs never share a history id. */
        if (!libIsZero(a->db->cluster_id, sizeof a->db->cluster_id) && !same_id_foreign) {
            memcpy(a->history, a->db->cluster_id, ARCSEG_HISTORY_SIZE);
        } else {
            libRandomId(a->history, ARCSEG_HISTORY_SIZE);
        }
    }
    snprintf(a->timeline, sizeof a->timeline, "%s", name);
    memset(a->head_digest, 0, sizeof a->head_digest);
    a->head_ms = 0;
    a->foreign_last = forked.found ? forked.last : 0;
    a->foreign_len = forked.last_len;
    a->foreign_hash = forked.last_hash;
    a->archived = base.raft_index;
    a->outran_pending = false;
    a->head_known = true;
    a->active = true;
    a->timelines++;
    noteTimeline(a, name, base.raft_index + 1, base.raft_index);
    pthread_mutex_unlock(&a->mu);
    archLog(a, "new timeline %s on backup %s (index %llu)", a->timeline, base.id,
            (unsigned long long)base.raft_index);
    assertNotForeign(a, NULL, base.raft_index);
    return 0;
}

/* ---- segments ---------------------------------------------------------------------- */

static void uploadingDone(struct archiver *a)
{
    pthread_mutex_lock(&a->mu);
    a->uploading_bytes = 0;
    pthread_mutex_unlock(&a->mu);
}

/* Upload one segment of what waits (*did: one was uploaded). A code with errmsg on
 * failure; CAIRN_ECORRUPT: the log outran the archive, a new timeline is needed. */
static int uploadOne(struct archiver *a, bool *did, char *errmsg)
{
    unsigned char *obj = NULL;
    struct take t;
    size_t len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    char name[ARCSEG_NAME_SIZE];
    struct repo_writer *w = NULL;
    uint64_t first, first_held = 0;
    int rv;

    *did = false;
    first = a->archived + 1; /* archived changes on this thread only */
    rv = takeEntries(a, &t, &first_held, errmsg);
    if (rv == CAIRN_ENOTFOUND) {
        outranAt(a, first, first_held);
        errorf(errmsg, "entry %llu is no longer in the Raft log (it holds from %llu)",
               (unsigned long long)first, (unsigned long long)first_held);
        return CAIRN_ECORRUPT;
    }
    if (rv != 0 || t.n == 0) {
        return rv;
    }
    assertNotForeign(a, &t, 0);
    pthread_mutex_lock(&a->mu);
    a->uploading_bytes = t.bytes + t.n * RING_ENTRY_OVERHEAD;
    pthread_mutex_unlock(&a->mu);
    rv = arcsegEncodeHistory(a->history, a->timeline, first, a->head_digest, t.v, t.n, &obj, &len,
                             digest, errmsg);
    if (rv != 0) {
        uploadingDone(a);
        takeFree(&t);
        return rv;
    }
    arcsegObjectName(a->timeline, first, name);
    rv = repoCreate(a->repo, name, &w, errmsg);
    if (rv == 0 && (rv = repoWrite(w, obj, len, errmsg)) != 0) {
        repoAbort(w);
    } else if (rv == 0) {
        rv = repoCommit(w, errmsg);
    }
    free(obj);
    if (rv == CAIRN_EEXIST) {
        /* Another archiver (an old leader, or a new one) wrote this range first: its
         * segment holds the same committed entries; ours is dropped, the head read again. */
        archLog(a, "%s was written by another archiver: reading the archive's head again", name);
        pthread_mutex_lock(&a->mu);
        a->head_known = false;
        a->uploading_bytes = 0;
        pthread_mutex_unlock(&a->mu);
        takeFree(&t);
        return 0;
    }
    if (rv != 0) {
        uploadingDone(a);
        takeFree(&t);
        return rv;
    }
    pthread_mutex_lock(&a->mu);
    a->uploading_bytes = 0;
    memcpy(a->head_digest, digest, BACKUP_DIGEST_SIZE);
    a->archived = t.v[t.n - 1].index;
    a->head_ms = t.v[t.n - 1].time_ms;
    a->segments++;
    a->bytes += len;
    a->entries += t.n;
    noteTimeline(a, a->timeline, first, a->archived);
    /* What is uploaded is no longer needed here: the archive has it. */
    while (a->first != NULL && a->first->index <= a->archived) {
        ringDropFirst(a);
    }
    a->last_error[0] = '\0';
    pthread_mutex_unlock(&a->mu);
    pthread_cond_broadcast(&a->uploaded);
    takeFree(&t);
    *did = true;
    return 0;
}

/* ---- who archives ------------------------------------------------------------------ */

/* Whether this node archives now. --archive-from leader: the ready leader. follower: the
 * designated follower while it is caught up (ready: it knows the leader and has applied
 * every entry it knows committed); the ready leader when there is no such follower, or
 * the leader has not heard from it lately or it lags. Two archivers for a moment (one
 * not noticing yet that the other took over) are harmless: a segment's name is created
 * only when absent, and the loser reads the head again. */
static bool archivesNow(struct archiver *a, const struct node_info *info)
{
    uint64_t designated;
    assert(!nodeOnLoop(a->db->node)); /* nodeCall below waits for the loop */
    if (!a->from_follower) {
        return info->state == RAFT_LEADER && info->ready;
    }
    designated = nodeDesignatedFollower(info);
    if (info->state == RAFT_LEADER) {
        bool caught_up;
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (!info->ready) {
            return false;
        }
        if (designated == 0) {
            return true;
        }
        if (nodeFollowerCaughtUp(a->db->node, designated, NODE_FOLLOWER_MAX_LAG, &caught_up,
                                 errmsg) != 0) {
            return false; /* stopping */
        }
        return !caught_up;
    }
    return info->state == RAFT_FOLLOWER && info->id == designated && info->ready &&
           info->leader_id != 0 && info->applied_index + NODE_FOLLOWER_MAX_LAG >= info->commit_index;
}

/* One turn of the archiver: find out whether this node archives, establish the
 * timeline, upload what waits. */
static void archTick(struct archiver *a)
{
    struct node_info info;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int established = 0;
    int rv;

    nodeInfo(a->db->node, &info);
    if (!archivesNow(a, &info)) {
        pthread_mutex_lock(&a->mu);
        if (a->active) {
            archLog(a, "no longer archiving (%s)",
                    info.state == RAFT_LEADER ? "a caught-up follower archives"
                                              : "this node is not the archiver any more");
        }
        a->active = false;
        a->head_known = false;
        a->outran_pending = false;
        a->leading = false;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->leading = true;
    pthread_mutex_unlock(&a->mu);
    if (a->repo == NULL && (rv = repoOpen(a->url, &a->repo, errmsg)) != 0) {
        archFail(a, errmsg);
        return;
    }
    for (int i = 0; i < 1024; i++) {
        bool known, pending;
        pthread_mutex_lock(&a->mu);
        known = a->head_known;
        pending = a->outran_pending;
        pthread_mutex_unlock(&a->mu);
        if (!known || pending) {
            if (established++ == ESTABLISH_PER_TURN) {
                return; /* the next turn goes on */
            }
            if ((rv = establish(a, errmsg)) != 0) {
                archFail(a, errmsg);
                return;
            }
            pthread_cond_broadcast(&a->uploaded); /* the head may be past a waiting entry */
        }
        bool did;
        rv = uploadOne(a, &did, errmsg);
        if (rv == CAIRN_ECORRUPT) {
            continue; /* the log outran the archive: the next round starts a new timeline */
        }
        if (rv != 0) {
            archFail(a, errmsg);
            return; /* tried again next turn; the ring and the log keep the entries */
        }
        if (did) {
            /* Go on only while a segment's bytes wait (in the ring, or read back from
             * the log: catching up) or writes wait for their entries (--archive-sync:
             * what came during this upload goes into the next one at once). Otherwise
             * what arrived during the upload waits for the next interval, or for a
             * segment's bytes (archivePush kicks then): going on at once cut a segment
             * of the few entries each upload's time saw, 4 to 10 a second under steady
             * writes (bench-pitr: 42-101 segments for 10 s of writes at a 1 s interval). */
            bool more;
            pthread_mutex_lock(&a->mu);
            more = a->waiters > 0 ||
                   (a->covered_from > a->archived + 1 && a->last_pushed > a->archived) ||
                   a->ring_bytes >= a->segment_bytes;
            pthread_mutex_unlock(&a->mu);
            if (!more) {
                return;
            }
        } else {
            pthread_mutex_lock(&a->mu);
            known = a->head_known;
            pthread_mutex_unlock(&a->mu);
            if (known) {
                return; /* nothing waits */
            }
            /* another archiver wrote: read the head again */
        }
    }
}

/* CLOCK_REALTIME ms from now, for pthread_cond_timedwait. */
static struct timespec deadlineIn(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static void *archMain(void *arg)
{
    struct archiver *a = arg;
    int64_t turn_ms = libMonoMs();
    /* A stopping node cuts the transfers of backups and restores (repoStopTransfers),
     * not the archive's: its last upload is part of a clean stop, and writes of
     * --archive-sync wait for it. */
    repoStopTransfersExempt();
    pthread_mutex_lock(&a->mu);
    for (;;) {
        bool stopping;
        if (!a->stop && !a->kick) {
            /* A node that does not lead looks again soon: a new leader establishes the
             * timeline (and uploads what the old one left) within LEADER_POLL_MS, not
             * one interval later. The interval runs from the start of the last turn, so
             * that a segment is cut every interval, not every interval plus an upload. */
            unsigned ms =
                !a->leading && a->interval_ms > LEADER_POLL_MS ? LEADER_POLL_MS : a->interval_ms;
            int64_t left = turn_ms + ms - libMonoMs();
            if (left > 0) {
                struct timespec until = deadlineIn((unsigned)(left > ms ? ms : left));
                pthread_cond_timedwait(&a->cond, &a->mu, &until);
            }
        }
        stopping = a->stop;
        a->kick = false;
        pthread_mutex_unlock(&a->mu);
        turn_ms = libMonoMs();
        archTick(a);
        pthread_mutex_lock(&a->mu);
        if (stopping) {
            break;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- life cycle -------------------------------------------------------------------- */

int archiveCreate(struct cairn *db, struct archiver **out, char *errmsg)
{
    struct archiver *a;
    unsigned which;
    int rv;

    *out = NULL;
    if (!db->cfg.archive) {
        return 0;
    }
    if ((rv = reposetPick(&db->repos, db->cfg.archive_to, &which, errmsg)) != 0) {
        return rv;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    a->db = db;
    snprintf(a->repo_name, sizeof a->repo_name, "%s", db->repos.r[which].name);
    snprintf(a->url, sizeof a->url, "%s", db->repos.r[which].url);
    a->interval_ms =
        db->cfg.archive_interval_ms ? db->cfg.archive_interval_ms : DEFAULT_INTERVAL_MS;
    a->segment_bytes =
        db->cfg.archive_segment_bytes ? db->cfg.archive_segment_bytes : DEFAULT_SEGMENT_BYTES;
    a->queue_budget =
        db->cfg.archive_queue_bytes ? db->cfg.archive_queue_bytes : DEFAULT_QUEUE_BYTES;
    if (a->queue_budget < a->segment_bytes) {
        a->queue_budget = a->segment_bytes;
    }
    a->sync = db->cfg.archive_sync != 0;
    a->from_follower = db->cfg.archive_from == 1;
    if (a->sync && a->from_follower) {
        /* The write waits on the node that answers it, the leader, for its own upload. */
        free(a);
        errorf(errmsg, "--archive-sync needs the leader to archive: not with --archive-from "
                       "follower");
        return CAIRN_EINVAL;
    }
    a->sync_timeout_ms =
        db->cfg.archive_sync_timeout_ms ? db->cfg.archive_sync_timeout_ms : DEFAULT_SYNC_TIMEOUT_MS;
    a->covered_from = 1;
    a->kick = true; /* the first turn at once: the timeline is established from the start */
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
    pthread_cond_init(&a->uploaded, NULL);
    *out = a;
    return 0;
}

int archiveStart(struct archiver *a, char *errmsg)
{
    int rv;
    if (a == NULL || a->started) {
        return 0;
    }
    if ((rv = pthread_create(&a->thread, NULL, archMain, a)) != 0) {
        errorf(errmsg, "cannot start the archiver thread: %s", strerror(rv));
        return CAIRN_ENOMEM;
    }
    a->started = true;
    archLog(a, "archiving committed entries to repository '%s' (%s) every %u ms or %llu bytes%s%s",
            a->repo_name, a->url, a->interval_ms, (unsigned long long)a->segment_bytes,
            a->sync ? "; writes are acknowledged once archived (--archive-sync)" : "",
            a->from_follower ? "; a caught-up follower archives (--archive-from follower)" : "");
    return 0;
}

void archiveStop(struct archiver *a)
{
    if (a == NULL || !a->started) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_mutex_unlock(&a->mu);
    pthread_cond_signal(&a->cond);
    pthread_join(a->thread, NULL);
    pthread_cond_broadcast(&a->uploaded); /* waiting writes see `stop` and answer */
    a->started = false;
}

void archiveFree(struct archiver *a)
{
    if (a == NULL) {
        return;
    }
    archiveStop(a);
    ringClear(a);
    if (a->repo != NULL) {
        repoClose(a->repo);
    }
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    pthread_cond_destroy(&a->uploaded);
    free(a);
}

bool archiveSync(const struct archiver *a)
{
    return a != NULL && a->sync;
}

int archiveWait(struct archiver *a, uint64_t index, char *errmsg)
{
    int64_t start = libMonoMs();
    int64_t deadline = start + a->sync_timeout_ms;
    char why[CAIRN_ERRMSG_SIZE + 64];
    bool active;

    assert(!nodeOnLoop(a->db->node)); /* the loop pushes the entry waited for */
    pthread_mutex_lock(&a->mu);
    /* `archived` is only ever what the repository holds (a segment, or the base backup
     * of a new timeline, for the entries at or before its index). */
    while (a->archived < index && !a->stop && libMonoMs() < deadline) {
        struct timespec until;
        int64_t left = deadline - libMonoMs();
        a->waiters++;
        if (!a->kick) {
            a->kick = true; /* the segment is closed now, not after the interval */
            pthread_cond_signal(&a->cond);
        }
        /* Woken by each upload; asks again every SYNC_RETRY_MS after a failed one. */
        until =
            deadlineIn((unsigned)(left < SYNC_RETRY_MS ? (left > 0 ? left : 1) : SYNC_RETRY_MS));
        pthread_cond_timedwait(&a->uploaded, &a->mu, &until);
        a->waiters--;
    }
    if (a->archived >= index) {
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    active = a->active;
    if (a->last_error[0] != '\0') {
        snprintf(why, sizeof why, "the last upload failed: %s", a->last_error);
    } else if (a->stop) {
        snprintf(why, sizeof why, "the node is stopping");
    } else if (!active) {
        snprintf(why, sizeof why,
                 "this node no longer archives (it lost the leadership; the new leader "
                 "archives the entry)");
    } else {
        snprintf(why, sizeof why, "the archive's head is index %llu",
                 (unsigned long long)a->archived);
    }
    pthread_mutex_unlock(&a->mu);
    errorf(errmsg,
           "the write was applied (log index %llu, committed: do not send it again) but is "
           "not yet in the archive after %.1f s (--archive-sync): %s",
           (unsigned long long)index, (double)(libMonoMs() - start) / 1000.0, why);
    return CAIRN_ENOTARCHIVED;
}

void archiveStatus(struct archiver *a, struct archive_status *st)
{
    memset(st, 0, sizeof *st);
    if (a == NULL) {
        st->role = "off";
        st->from = "leader";
        return;
    }
    st->enabled = true;
    st->from = a->from_follower ? "follower" : "leader";
    pthread_mutex_lock(&a->mu);
    st->role = a->active ? "archiver" : "standby";
    snprintf(st->repository, sizeof st->repository, "%s", a->repo_name);
    snprintf(st->timeline, sizeof st->timeline, "%s", a->head_known ? a->timeline : "");
    st->head_index = a->head_known ? a->archived : 0;
    st->head_ms = a->head_known ? a->head_ms : 0;
    if (a->active) {
        struct ring_entry *e;
        int64_t oldest = 0;
        for (e = a->first; e != NULL && e->index <= a->archived; e = e->next) {
        }
        if (e != NULL) {
            oldest = e->time_ms;
        }
        for (; e != NULL; e = e->next) {
            st->lag_entries++;
        }
        if (a->covered_from > a->archived + 1 && a->last_pushed > a->archived) {
            /* What the ring no longer holds waits in libraft's log: counted by index
             * (barriers and configurations included), dated by the archive's head. */
            st->lag_entries += a->covered_from - 1 - a->archived;
            if (a->head_ms > 0) {
                oldest = a->head_ms;
            }
        }
        if (oldest > 0) {
            st->lag_seconds = (double)(libNowMs() - oldest) / 1000.0;
            if (st->lag_seconds < 0) {
                st->lag_seconds = 0;
            }
        }
    }
    st->segments = a->segments;
    st->bytes = a->bytes;
    st->entries = a->entries;
    st->timelines_started = a->timelines;
    st->queue_entries = a->ring_n;
    st->queue_bytes = a->ring_bytes;
    st->covered_from = a->covered_from;
    st->log_reads = a->log_reads;
    st->log_entries = a->log_entries;
    st->outran = a->outran;
    st->outrun_index = a->outrun_index;
    st->outruns = a->outruns;
    st->outran_ms = a->outran_ms;
    if (!libIsZero(a->history, sizeof a->history)) {
        arcsegHistoryHex(a->history, st->history);
    }
    st->ntimelines = a->ntl;
    for (unsigned i = 0; i < a->ntl; i++) {
        snprintf(st->timelines[i].name, sizeof st->timelines[i].name, "%s", a->tl[i].name);
        st->timelines[i].start = a->tl[i].start;
        st->timelines[i].head = a->tl[i].head;
    }
    snprintf(st->last_error, sizeof st->last_error, "%s", a->last_error);
    st->last_error_ms = a->last_error_ms;
    st->sync = a->sync;
    st->sync_waiting = a->waiters;
    pthread_mutex_unlock(&a->mu);
}
