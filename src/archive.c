/* The continuous archive's writer: the ring of committed entries every archiving node
 * keeps, and the archiver thread that cuts it into segments and uploads them (see
 * archive.h for the design and docs/ARCHITECTURE.md, "Continuous archive").
 *
 * Threads: archivePush and archiveReset run on the loop thread and only copy under
 * the mutex; archMain is the archiver's own thread (repository I/O, backups, zstd);
 * archiveStatus any thread. */
#define _GNU_SOURCE
#include "archive.h"

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
#define LEADER_POLL_MS 200     /* how soon a node not leading looks again whether it leads */
#define RING_ENTRY_OVERHEAD 48 /* what an entry costs beyond its bytes, counted */

struct ring_entry {
    struct ring_entry *next;
    uint64_t index;
    int64_t time_ms;
    uint32_t len;
    unsigned char bytes[];
};

struct archiver {
    struct cairn *db;
    char repo_name[BACKUP_REPO_NAME_SIZE];
    char url[PATH_MAX];
    unsigned interval_ms;
    uint64_t segment_bytes;
    uint64_t queue_budget;
    struct repo *repo; /* the thread's */
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop, kick;
    /* --archive-sync: writes waiting for their entry to be uploaded (archiveWait); each
     * upload wakes them all, and one upload serves every entry it holds. */
    bool sync;
    unsigned sync_timeout_ms;
    bool leading; /* the last turn found this node the ready leader */
    pthread_cond_t uploaded;
    unsigned waiters;
    /* the ring, under mu */
    struct ring_entry *first, *last;
    uint64_t ring_bytes, ring_n;
    uint64_t covered_from; /* every command entry in [covered_from, last_pushed] is held */
    uint64_t last_pushed;
    bool active;       /* this node archives: dropping an entry past `archived` is a gap */
    uint64_t archived; /* the archive's head as the archiver knows it */
    bool overrun;      /* an entry past `archived` was dropped */
    uint64_t dropped_index;
    /* the thread's state, copied for /status under mu */
    bool head_known;
    char timeline[ARCSEG_TIMELINE_SIZE];
    unsigned char head_digest[BACKUP_DIGEST_SIZE];
    int64_t head_ms;
    uint64_t segments, bytes, entries, timelines;
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
        a->covered_from = e->index + 1;
    }
    if (a->active && e->index > a->archived && !a->overrun) {
        a->overrun = true;
        a->dropped_index = e->index;
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

    pthread_mutex_lock(&a->mu);
    if (index <= a->last_pushed) {
        pthread_mutex_unlock(&a->mu); /* applied again after a failed apply */
        return;
    }
    while (a->first != NULL && a->ring_bytes + cost > a->queue_budget) {
        ringDropFirst(a);
    }
    e = cost <= a->queue_budget && buf->len <= UINT32_MAX ? malloc(sizeof *e + buf->len) : NULL;
    if (e == NULL) {
        /* Larger than the whole queue, or no memory: the entry is not held, so no
         * timeline can continue across it. */
        a->covered_from = index + 1;
        if (a->active && !a->overrun) {
            a->overrun = true;
            a->dropped_index = index;
        }
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
    if (a->active && a->ring_bytes >= a->segment_bytes && !a->kick) {
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
    pthread_mutex_lock(&a->mu);
    if (index >= a->last_pushed) {
        ringClear(a);
        a->covered_from = index + 1;
        a->last_pushed = index;
    }
    pthread_mutex_unlock(&a->mu);
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
};

/* The newest segment of every timeline, read whole; the one that reaches furthest is
 * the head. A timeline whose newest segment cannot be read does not count (it will not
 * be continued). */
static int readHead(struct archiver *a, struct head *h, char *errmsg)
{
    struct arcseg_info *segs = NULL;
    size_t n = 0;
    int rv;
    memset(h, 0, sizeof *h);
    if ((rv = arcsegList(a->repo, &segs, &n, errmsg)) != 0) {
        return rv;
    }
    for (size_t i = 0; i < n; i++) {
        struct arcseg seg;
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
            return rv;
        }
        if (!h->found || seg.h.last > h->last) {
            h->found = true;
            snprintf(h->timeline, sizeof h->timeline, "%s", segs[i].timeline);
            snprintf(h->name, sizeof h->name, "%s", segs[i].name);
            h->last = seg.h.last;
            h->last_ms = seg.h.last_ms;
            memcpy(h->digest, seg.digest, BACKUP_DIGEST_SIZE);
            h->last_len = seg.entries[seg.h.count - 1].len;
            h->last_hash = XXH3_64bits(seg.entries[seg.h.count - 1].bytes, h->last_len);
        }
        arcsegFree(&seg);
    }
    free(segs);
    return 0;
}

/* A base for a new timeline: the newest backup of the archive's repository, taken by
 * cairnd (its source says so: a standalone backup of some file is no base), that the
 * ring continues (every entry after its index is held); otherwise a full backup taken
 * now. */
static int findBase(struct archiver *a, uint64_t covered, uint64_t last, bool fresh,
                    struct backup_info *out, char *errmsg)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    int which = reposetByName(&a->db->repos, a->repo_name);
    bool found = false;
    int rv;

    /* fresh: the repository holds another history's archive, whose backups' indexes
     * mean nothing in this log. */
    if (!fresh && which >= 0 && reposetList(&a->db->repos, which, &list, &n, errmsg) == 0) {
        for (size_t i = 0; i < n; i++) {
            const struct backup_info *b = &list[i];
            if (b->error[0] != '\0' || b->raft_index + 1 < covered || b->raft_index > last ||
                strncmp(b->source, "cairnd:", 7) != 0) {
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
 * newest segment is damaged, or it lies behind this node's ring). */
static bool timelineExists(struct archiver *a, const char *name)
{
    char prefix[ARCSEG_TIMELINE_SIZE + 16];
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned n = 0;
    snprintf(prefix, sizeof prefix, ARCSEG_PREFIX "%s-", name);
    return repoListNames(a->repo, prefix, countOne, &n, errmsg) != 0 || n > 0;
}

/* Whether the archive's head h is another history's: a repository that an earlier
 * cluster archived into, now written by a cluster restored from it (cairnd
 * --restore-from) or started afresh, whose log numbers its entries from 1 again. A
 * ready leader has applied every entry committed before its term, so the archive of its
 * own history never reaches past its applied index; and when its ring still holds the
 * head's index, the entry there must be the one archived. */
static bool foreignHead(struct archiver *a, const struct head *h)
{
    struct node_info info;
    bool foreign = false;
    nodeInfo(a->db->node, &info);
    if (info.applied_index < h->last) {
        return true;
    }
    pthread_mutex_lock(&a->mu);
    for (struct ring_entry *e = a->first; e != NULL && e->index <= h->last; e = e->next) {
        if (e->index == h->last) {
            foreign = e->len != h->last_len || XXH3_64bits(e->bytes, e->len) != h->last_hash;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return foreign;
}

/* Continue the archive's timeline, or start a new one. */
static int establish(struct archiver *a, char *errmsg)
{
    struct head h;
    struct backup_info base;
    char name[ARCSEG_TIMELINE_SIZE];
    uint64_t covered, last, dropped;
    bool overrun;
    bool fresh = false;
    int rv;

    pthread_mutex_lock(&a->mu);
    covered = a->covered_from;
    last = a->last_pushed;
    overrun = a->overrun;
    dropped = a->dropped_index;
    pthread_mutex_unlock(&a->mu);
    if (overrun) {
        archLog(a,
                "the archive fell behind: entry %llu left the queue (%llu bytes) before it "
                "was uploaded; starting a new timeline",
                (unsigned long long)dropped, (unsigned long long)a->queue_budget);
    } else {
        if ((rv = readHead(a, &h, errmsg)) != 0) {
            return rv;
        }
        if (h.found && foreignHead(a, &h)) {
            archLog(a,
                    "the archive's head, index %llu of timeline %s, is not an entry of this "
                    "node's log (another cluster's archive, restored from?): starting a new "
                    "timeline on a full backup taken now; archive a restored cluster into a "
                    "repository of its own",
                    (unsigned long long)h.last, h.timeline);
            fresh = true;
        } else if (h.found && covered <= h.last + 1) {
            pthread_mutex_lock(&a->mu);
            snprintf(a->timeline, sizeof a->timeline, "%s", h.timeline);
            memcpy(a->head_digest, h.digest, BACKUP_DIGEST_SIZE);
            a->head_ms = h.last_ms;
            a->archived = h.last;
            a->head_known = true;
            a->active = true;
            pthread_mutex_unlock(&a->mu);
            archLog(a, "continuing timeline %s after index %llu (%s)", h.timeline,
                    (unsigned long long)h.last, h.name);
            return 0;
        } else if (h.found) {
            archLog(a,
                    "the archive's head is index %llu (timeline %s), but this node holds the "
                    "entries only from %llu: starting a new timeline",
                    (unsigned long long)h.last, h.timeline, (unsigned long long)covered);
        }
    }
    if ((rv = findBase(a, covered, last, fresh, &base, errmsg)) != 0) {
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
    if (a->covered_from > base.raft_index + 1) {
        pthread_mutex_unlock(&a->mu);
        errorf(errmsg, "the entries after backup %s (index %llu) left the queue meanwhile", base.id,
               (unsigned long long)base.raft_index);
        return CAIRN_EBUSY;
    }
    snprintf(a->timeline, sizeof a->timeline, "%s", name);
    memset(a->head_digest, 0, sizeof a->head_digest);
    a->head_ms = 0;
    a->archived = base.raft_index;
    a->overrun = false;
    a->head_known = true;
    a->active = true;
    a->timelines++;
    pthread_mutex_unlock(&a->mu);
    archLog(a, "new timeline %s on backup %s (index %llu)", a->timeline, base.id,
            (unsigned long long)base.raft_index);
    return 0;
}

/* ---- segments ---------------------------------------------------------------------- */

/* Copy the entries past the head (up to segment_bytes of them, at least one) into *raw
 * and describe them in *ents. 0 with *n 0: nothing waits. CAIRN_ECORRUPT: a gap (the
 * ring no longer holds the entry after the head). */
static int takeEntries(struct archiver *a, unsigned char **raw, struct arcseg_entry **ents,
                       size_t *n)
{
    uint64_t bytes = 0, count = 0;
    struct ring_entry *e;
    int rv = 0;

    *raw = NULL;
    *ents = NULL;
    *n = 0;
    pthread_mutex_lock(&a->mu);
    if (a->overrun || (a->covered_from > a->archived + 1 && a->last_pushed > a->archived)) {
        a->overrun = true;
        if (a->dropped_index == 0) {
            a->dropped_index = a->archived + 1;
        }
        pthread_mutex_unlock(&a->mu);
        return CAIRN_ECORRUPT;
    }
    for (e = a->first; e != NULL && e->index <= a->archived; e = e->next) {
    }
    for (struct ring_entry *x = e; x != NULL && (count == 0 || bytes < a->segment_bytes);
         x = x->next) {
        bytes += x->len;
        count++;
    }
    if (count > 0) {
        *raw = malloc(bytes ? bytes : 1);
        *ents = malloc(count * sizeof **ents);
        if (*raw == NULL || *ents == NULL) {
            free(*raw);
            free(*ents);
            *raw = NULL;
            *ents = NULL;
            rv = CAIRN_ENOMEM;
        } else {
            size_t off = 0;
            for (uint64_t i = 0; i < count; i++, e = e->next) {
                memcpy(*raw + off, e->bytes, e->len);
                (*ents)[i] = (struct arcseg_entry){e->index, 0, e->time_ms, e->len, NULL};
                off += e->len;
            }
            off = 0;
            for (uint64_t i = 0; i < count; i++) {
                (*ents)[i].bytes = *raw + off;
                off += (*ents)[i].len;
            }
            *n = count;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rv;
}

/* Upload one segment of what waits (*did: one was uploaded). A code with errmsg on
 * failure; CAIRN_ECORRUPT: a gap, a new timeline is needed. */
static int uploadOne(struct archiver *a, bool *did, char *errmsg)
{
    unsigned char *raw, *obj = NULL;
    struct arcseg_entry *ents;
    size_t n, len;
    unsigned char digest[BACKUP_DIGEST_SIZE];
    char name[ARCSEG_NAME_SIZE];
    struct repo_writer *w = NULL;
    uint64_t first;
    int rv;

    *did = false;
    rv = takeEntries(a, &raw, &ents, &n);
    if (rv == CAIRN_ECORRUPT) {
        errorf(errmsg, "entries after index %llu left the queue before they were uploaded",
               (unsigned long long)a->archived);
        return rv;
    }
    if (rv != 0 || n == 0) {
        if (rv != 0) {
            errorf(errmsg, "out of memory cutting a segment");
        }
        return rv;
    }
    first = a->archived + 1;
    rv = arcsegEncode(a->timeline, first, a->head_digest, ents, n, &obj, &len, digest, errmsg);
    free(raw);
    if (rv != 0) {
        free(ents);
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
        /* Another archiver (an old leader, or a new one) wrote this range first. */
        archLog(a, "%s was written by another archiver: reading the archive's head again", name);
        pthread_mutex_lock(&a->mu);
        a->head_known = false;
        pthread_mutex_unlock(&a->mu);
        free(ents);
        return 0;
    }
    if (rv != 0) {
        free(ents);
        return rv;
    }
    pthread_mutex_lock(&a->mu);
    memcpy(a->head_digest, digest, BACKUP_DIGEST_SIZE);
    a->archived = ents[n - 1].index;
    a->head_ms = ents[n - 1].time_ms;
    a->segments++;
    a->bytes += len;
    a->entries += n;
    /* What is uploaded is no longer needed here: the archive has it. */
    while (a->first != NULL && a->first->index <= a->archived) {
        ringDropFirst(a);
    }
    a->last_error[0] = '\0';
    pthread_mutex_unlock(&a->mu);
    pthread_cond_broadcast(&a->uploaded);
    free(ents);
    *did = true;
    return 0;
}

/* One turn of the archiver: find out whether this node archives, establish the
 * timeline, upload what waits. */
static void archTick(struct archiver *a)
{
    struct node_info info;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int rv;

    nodeInfo(a->db->node, &info);
    if (info.state != RAFT_LEADER || !info.ready) {
        pthread_mutex_lock(&a->mu);
        a->active = false;
        a->head_known = false;
        a->overrun = false;
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
        bool known, overrun;
        pthread_mutex_lock(&a->mu);
        known = a->head_known;
        overrun = a->overrun;
        pthread_mutex_unlock(&a->mu);
        if (!known || overrun) {
            if ((rv = establish(a, errmsg)) != 0) {
                archFail(a, errmsg);
                return;
            }
            pthread_cond_broadcast(&a->uploaded); /* the head may be past a waiting entry */
        }
        bool did;
        rv = uploadOne(a, &did, errmsg);
        if (rv == CAIRN_ECORRUPT) {
            continue; /* a gap: the next round starts a new timeline */
        }
        if (rv != 0) {
            archFail(a, errmsg);
            return; /* tried again next turn; the ring keeps the entries meanwhile */
        }
        if (!did) {
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
    pthread_mutex_lock(&a->mu);
    for (;;) {
        bool stopping;
        if (!a->stop && !a->kick) {
            /* A node that does not lead looks again soon: a new leader establishes the
             * timeline (and uploads what the old one left) within LEADER_POLL_MS, not
             * one interval later. */
            unsigned ms =
                !a->leading && a->interval_ms > LEADER_POLL_MS ? LEADER_POLL_MS : a->interval_ms;
            struct timespec until = deadlineIn(ms);
            pthread_cond_timedwait(&a->cond, &a->mu, &until);
        }
        stopping = a->stop;
        a->kick = false;
        pthread_mutex_unlock(&a->mu);
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
    archLog(a, "archiving committed entries to repository '%s' (%s) every %u ms or %llu bytes%s",
            a->repo_name, a->url, a->interval_ms, (unsigned long long)a->segment_bytes,
            a->sync ? "; writes are acknowledged once archived (--archive-sync)" : "");
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
        return;
    }
    st->enabled = true;
    pthread_mutex_lock(&a->mu);
    st->role = a->active ? "archiver" : "standby";
    snprintf(st->repository, sizeof st->repository, "%s", a->repo_name);
    snprintf(st->timeline, sizeof st->timeline, "%s", a->head_known ? a->timeline : "");
    st->head_index = a->head_known ? a->archived : 0;
    st->head_ms = a->head_known ? a->head_ms : 0;
    if (a->active) {
        struct ring_entry *e;
        for (e = a->first; e != NULL && e->index <= a->archived; e = e->next) {
        }
        if (e != NULL) {
            st->lag_seconds = (double)(libNowMs() - e->time_ms) / 1000.0;
            if (st->lag_seconds < 0) {
                st->lag_seconds = 0;
            }
        }
        for (; e != NULL; e = e->next) {
            st->lag_entries++;
        }
    }
    st->segments = a->segments;
    st->bytes = a->bytes;
    st->entries = a->entries;
    st->timelines_started = a->timelines;
    st->queue_entries = a->ring_n;
    st->queue_bytes = a->ring_bytes;
    st->covered_from = a->covered_from;
    snprintf(st->last_error, sizeof st->last_error, "%s", a->last_error);
    st->last_error_ms = a->last_error_ms;
    st->sync = a->sync;
    st->sync_waiting = a->waiters;
    pthread_mutex_unlock(&a->mu);
}
