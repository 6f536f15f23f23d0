/* Read-ahead for ranged reads of a remote object (see readahead.h): a reader keeps a
 * queue of chunks ahead of its sequential reads, fetched by a pool's threads, every
 * chunk's bytes held against a budget shared by the whole process.
 *
 * A chunk is QUEUED (on the pool's queue), BUSY (a fetch of it runs) or DONE (its bytes
 * or its error are in). The reader owns its chunks, in order of offset; when it drops
 * one that is BUSY, the chunk is marked abandoned and its fetch frees it when it ends
 * (told to stop through its cancel flag). A chunk holds a reference on the reader's
 * target (the fetch function and its object), so an abandoned fetch can outlive the
 * reader.
 *
 * Threads: a reader's calls run on its owner's thread (one at a time); the pool's
 * threads run fetches; the pool's mutex guards the queue, every chunk's state and the
 * targets' references; the budget's mutex (taken after the pool's, never before) its
 * count.
 *
 * A pool with a spool (readahead_config.spool_dir) gives its chunks regions of one
 * unnamed file instead of buffers: a chunk's fetch writes its bytes there (pwrite) as
 * they come, the reader reads them back (pread), and each region is punched out of
 * the file as it is read, as a buffer's pages are given back. Regions are laid one after
 * the other; once no region is live the file is emptied and the next starts at 0. */
#define _GNU_SOURCE
#include "readahead.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "error.h"
#include "lib.h"

#define DEFAULT_THREADS 4u
#define DEFAULT_SMALL ((size_t)64 << 10)
#define DEFAULT_CHUNK_MIN ((size_t)512 << 10)
#define DEFAULT_CHUNK_MAX ((size_t)4 << 20)
#define DEFAULT_AHEAD_MAX ((size_t)16 << 20)
#define MAX_THREADS 64u
#define DEFAULT_SPOOL_CHUNK_MAX ((size_t)32 << 20)
#define DEFAULT_SPOOL_AHEAD_MAX ((size_t)128 << 20)
/* A chunk's region in the spool starts on a page, so that what is read can be punched
 * out page by page. */
#define SPOOL_ALIGN ((uint64_t)4096)
/* Buffers of chunk_max bytes a pool keeps for its next chunks while it has readers. */
#define MAX_SPARE 4
/* How far a run reads ahead: this many times the bytes it has read so far (a run of a
 * few reads is a scan: few requests, each as large as may be, are what a server serves
 * fastest), in chunks of half that. */
#define AHEAD_FACTOR 16

struct budget {
    pthread_mutex_t mu;
    size_t cap, used, peak;
    uint64_t weights; /* the open readers' weights (readerWeight), summed */
};

static struct budget processBudget = {PTHREAD_MUTEX_INITIALIZER, READAHEAD_BUDGET, 0, 0, 0};
static struct budget processSpoolBudget = {PTHREAD_MUTEX_INITIALIZER, READAHEAD_SPOOL_BUDGET, 0,
                                           0, 0};

/* A reader's claim on the budget: the square root of the bytes it has left to read
 * (at least 1). The readers of a restore are read together, each at a pace in
 * proportion to its size (the merge takes a chain's files page by page), and a reader
 * of n bytes in chunks of c costs n / c requests: for shares c_i that add up to the
 * budget, the sum of n_i / c_i is least when each c_i goes as sqrt(n_i) (Lagrange). An
 * equal share gave a chain's full backup (220 MiB) the room of each of its 17 MiB
 * incrementals, in 0.5 MiB GETs; a share in proportion to n makes as many requests as
 * an equal one. A reader that never reads in order keeps the claim of its size while
 * open (it might), and gives it up when closed. */
static uint64_t readerWeight(uint64_t left)
{
    uint64_t x = (uint64_t)sqrt((double)left);
    return x > 0 ? x : 1;
}

/* Replace a reader's weight *w by w_new in b's sum (w_new 0: the reader is gone), and
 * return its share of the budget: cap * w_new / sum. */
static size_t budgetReweigh(struct budget *b, uint64_t *w, uint64_t w_new)
{
    size_t share;
    pthread_mutex_lock(&b->mu);
    b->weights = b->weights - *w + w_new;
    *w = w_new;
    share = b->weights > 0 ? (size_t)((double)b->cap * (double)w_new / (double)b->weights) : b->cap;
    pthread_mutex_unlock(&b->mu);
    return share;
}

static bool budgetTake(struct budget *b, size_t n)
{
    bool ok;
    pthread_mutex_lock(&b->mu);
    ok = n <= b->cap - b->used;
    if (ok) {
        b->used += n;
        if (b->used > b->peak) {
            b->peak = b->used;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

static void budgetGive(struct budget *b, size_t n)
{
    pthread_mutex_lock(&b->mu);
    b->used -= n;
    pthread_mutex_unlock(&b->mu);
}

/* What the chunks of a reader are fetched from. */
struct target {
    readahead_fetch_fn fetch;
    readahead_stream_fn stream; /* NULL: its chunks are not spooled */
    void *obj;
    void (*release)(void *obj);
    unsigned refs; /* the reader's and each chunk's; under the pool's mutex */
};

enum { CHUNK_QUEUED, CHUNK_BUSY, CHUNK_DONE };

struct chunk {
    struct chunk *qnext; /* on the pool's queue */
    struct target *t;
    uint64_t off;
    size_t len;
    unsigned char *buf; /* NULL when spooled */
    bool spooled;       /* its bytes are at soff in the pool's spool */
    bool spool_failed;  /* its fetch could not write them there */
    uint64_t soff;
    size_t released; /* bytes at the start of buf read and given back (MADV_DONTNEED; in
                      * the spool: punched out) */
    int state;
    bool abandoned;
    int cancel; /* __atomic: read by the fetch */
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

struct readahead_pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* the queue has a chunk, or the pool is closing */
    pthread_cond_t done; /* a chunk became DONE */
    struct chunk *qhead, *qtail;
    pthread_t threads[MAX_THREADS];
    unsigned nthreads;
    bool started, stopping;
    unsigned busy;
    unsigned readers;
    /* Buffers of chunk_max bytes kept for the next chunks (still counted against the
     * budget): a scan reuses a few mappings rather than faulting in fresh pages for
     * every chunk. Dropped when the pool has no reader. */
    unsigned char *spare[MAX_SPARE];
    unsigned nspare;
    struct budget *budget;
    struct budget own;
    struct readahead_config cfg;
    struct readahead_stats stats;
    /* The spool (-1: none). Regions are laid from spool_end; spool_live counts the bytes
     * of live regions. spooling turns false for good when a write or read of it fails. */
    int spool_fd;
    bool spooling;
    uint64_t spool_end, spool_live;
};

struct readahead {
    struct readahead_pool *p;
    struct target *t;
    uint64_t size;
    uint64_t next;   /* where the last read ended */
    uint64_t run;    /* bytes read by the current sequential run */
    uint64_t weight; /* its part of the budget's weights (readerWeight) */
    bool any;        /* a read was made */
    /* Chunks ahead, in order of offset and contiguous: ring[head .. head + n). */
    struct chunk **ring;
    unsigned cap, head, n;
    /* The small window of reads that are not sequential. */
    unsigned char *small;
    uint64_t small_off;
    size_t small_len;
};

static const int never = 0;

/* ---- targets and chunks (pool mutex held) ------------------------------------------- */

static void targetUnref(struct target *t)
{
    if (--t->refs == 0) {
        if (t->release != NULL) {
            t->release(t->obj);
        }
        free(t);
    }
}

/* ---- the spool (pool mutex held) ---------------------------------------------------- */

/* An unnamed file in dir, when it can be made there and its file system has room for
 * twice the budget; -1 otherwise. */
static int spoolOpen(const char *dir, size_t budget)
{
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0 || (uint64_t)vs.f_bavail * vs.f_frsize < 2 * (uint64_t)budget) {
        return -1;
    }
    return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

/* Bytes [off, off + n) of the spool are done with: out of the file, and so out of the
 * page cache before they are written back. A failure leaves them until the spool is
 * emptied. */
static void spoolPunch(struct readahead_pool *p, uint64_t off, uint64_t n)
{
    if (n > 0) {
        (void)fallocate(p->spool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                        (off_t)n);
    }
}

/* A region of len bytes for c, counted against the budget: false when the spool failed
 * before or the budget is spent. */
static bool spoolTake(struct readahead_pool *p, struct chunk *c, size_t len)
{
    if (!p->spooling || !budgetTake(p->budget, len)) {
        return false;
    }
    if (p->spool_live == 0 && p->spool_end > 0) {
        /* Nothing in it: start again from its beginning (the holes stay holes). */
        (void)ftruncate(p->spool_fd, 0);
        p->spool_end = 0;
    }
    c->spooled = true;
    c->soff = p->spool_end;
    p->spool_end += (len + SPOOL_ALIGN - 1) / SPOOL_ALIGN * SPOOL_ALIGN;
    p->spool_live += len;
    p->stats.spooled++;
    return true;
}

/* A read or write of the spool failed: no chunk goes into it any more. */
static void spoolFailed(struct readahead_pool *p)
{
    p->stats.spool_failures++;
    p->spooling = false;
}

/* ---- buffers (pool mutex held) ----------------------------------------------------- */

/* Chunks' bytes are mapped, not malloc'ed, and the budget counts every byte mapped (a
 * spare buffer too): what the process holds for read-ahead is what the budget says
 * (malloc would keep freed blocks of this size in its heap). A buffer of len bytes: a
 * spare one, or a new mapping, dropping spares when the budget is spent. NULL when
 * there is no room or no memory. */
static unsigned char *bufTake(struct readahead_pool *p, size_t len)
{
    void *m;
    if (len == p->cfg.chunk_max && p->nspare > 0) {
        return p->spare[--p->nspare];
    }
    while (!budgetTake(p->budget, len)) {
        if (p->nspare == 0) {
            return NULL;
        }
        munmap(p->spare[--p->nspare], p->cfg.chunk_max);
        budgetGive(p->budget, p->cfg.chunk_max);
    }
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        budgetGive(p->budget, len);
        return NULL;
    }
    return m;
}

/* Give back a buffer of len bytes whose first `released` bytes were given back already
 * (bufRelease): a buffer with none released may be kept as a spare. */
static void bufGive(struct readahead_pool *p, unsigned char *buf, size_t len, size_t released)
{
    if (released == 0 && len == p->cfg.chunk_max && p->readers > 0 && p->nspare < MAX_SPARE) {
        p->spare[p->nspare++] = buf;
        return;
    }
    munmap(buf, len);
    budgetGive(p->budget, len - released);
}

static size_t pageSize(void)
{
    static size_t ps;
    if (ps == 0) {
        long v = sysconf(_SC_PAGESIZE);
        ps = v > 0 ? (size_t)v : 4096;
    }
    return ps;
}

/* The reader has read c (DONE, its own) up to byte `to` of its buffer: the whole pages
 * before it are given back to the system and to the budget at once, rather than when
 * the last byte of c is read, so that what a reader holds is what it has not read yet
 * and a chunk may be as large as the reader's whole share (half as many requests for
 * the same memory). */
static void bufRelease(struct readahead_pool *p, struct chunk *c, size_t to)
{
    size_t upto = to / pageSize() * pageSize();
    if (upto <= c->released || upto >= c->len) {
        return;
    }
    if (c->spooled) {
        spoolPunch(p, c->soff + c->released, upto - c->released);
        budgetGive(p->budget, upto - c->released);
        c->released = upto;
        return;
    }
    if (madvise(c->buf + c->released, upto - c->released, MADV_DONTNEED) != 0) {
        return; /* kept until c is freed, and counted until then */
    }
    budgetGive(p->budget, upto - c->released);
    c->released = upto;
}

static void sparesDrop(struct readahead_pool *p)
{
    while (p->nspare > 0) {
        munmap(p->spare[--p->nspare], p->cfg.chunk_max);
        budgetGive(p->budget, p->cfg.chunk_max);
    }
}

static void chunkFree(struct readahead_pool *p, struct chunk *c)
{
    if (c->spooled) {
        spoolPunch(p, c->soff + c->released, c->len - c->released);
        budgetGive(p->budget, c->len - c->released);
        p->spool_live -= c->len;
    } else {
        bufGive(p, c->buf, c->len, c->released);
    }
    targetUnref(c->t);
    free(c);
}

static void queueUnlink(struct readahead_pool *p, struct chunk *c)
{
    struct chunk **pp = &p->qhead, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp == c) {
        *pp = c->qnext;
        if (p->qtail == c) {
            p->qtail = prev;
        }
        c->qnext = NULL;
    }
}

/* Where a spooled chunk's fetch writes its bytes as they come. */
struct spoolWrite {
    int fd;
    uint64_t off;
    size_t len, done;
    int err;       /* pwrite's errno */
    bool overflow; /* more bytes came than asked for */
};

static int spoolSink(void *arg, const void *data, size_t n)
{
    struct spoolWrite *w = arg;
    int err;
    if (n > w->len - w->done) {
        w->overflow = true;
        return -1;
    }
    if ((err = libPwriteFull(w->fd, data, n, w->off + w->done)) != 0) {
        w->err = err < 0 ? ENOSPC : err;
        return -1;
    }
    w->done += n;
    return 0;
}

/* c's fetch into its region of the spool: the fetch's code, or CAIRN_EIO when the
 * bytes could not be written there (c->spool_failed) or were not exactly c->len. */
static int spoolFetch(struct readahead_pool *p, struct chunk *c)
{
    struct spoolWrite w = {p->spool_fd, c->soff, c->len, 0, 0, false};
    int rv = c->t->stream(c->t->obj, c->off, c->len, spoolSink, &w, &c->cancel, c->errmsg);
    if (w.err != 0) {
        errorf(c->errmsg, "read-ahead spool: writing %zu bytes: %s", c->len, strerror(w.err));
        c->spool_failed = true;
        return CAIRN_EIO;
    }
    if (w.overflow || (rv == 0 && w.done != c->len)) {
        errorf(c->errmsg, "a fetch of %zu bytes at offset %llu gave %s%zu", c->len,
               (unsigned long long)c->off, w.overflow ? "more than " : "", w.done);
        return CAIRN_EIO;
    }
    return rv;
}

/* Run c's fetch on this thread; c is BUSY and counted in p->busy. Takes the lock. */
static void chunkRun(struct readahead_pool *p, struct chunk *c)
{
    int rv = c->spooled ? spoolFetch(p, c)
                        : c->t->fetch(c->t->obj, c->off, c->buf, c->len, &c->cancel, c->errmsg);
    pthread_mutex_lock(&p->mu);
    if (c->spool_failed && p->spooling) {
        spoolFailed(p);
    }
    p->busy--;
    p->stats.fetches++;
    p->stats.fetched_bytes += c->len;
    c->rv = rv;
    if (c->abandoned) {
        chunkFree(p, c);
    } else {
        c->state = CHUNK_DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Mark c BUSY (pool mutex held). */
static void chunkStart(struct readahead_pool *p, struct chunk *c)
{
    c->state = CHUNK_BUSY;
    if (++p->busy > p->stats.max_busy) {
        p->stats.max_busy = p->busy;
    }
}

static void *fetchThread(void *arg)
{
    struct readahead_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct chunk *c;
        while (!p->stopping && p->qhead == NULL) {
            pthread_cond_wait(&p->work, &p->mu);
        }
        if ((c = p->qhead) == NULL) {
            break; /* closing, nothing left */
        }
        queueUnlink(p, c);
        chunkStart(p, c);
        pthread_mutex_unlock(&p->mu);
        chunkRun(p, c);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the pool ----------------------------------------------------------------------- */

int readaheadPoolOpen(const struct readahead_config *cfg, struct readahead_pool **out, char *errmsg)
{
    struct readahead_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    if (p == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    if (cfg != NULL) {
        p->cfg = *cfg;
    }
    if (p->cfg.threads == 0) {
        p->cfg.threads = DEFAULT_THREADS;
    }
    if (p->cfg.threads > MAX_THREADS) {
        p->cfg.threads = MAX_THREADS;
    }
    p->cfg.small = p->cfg.small ? p->cfg.small : DEFAULT_SMALL;
    p->cfg.chunk_min = p->cfg.chunk_min ? p->cfg.chunk_min : DEFAULT_CHUNK_MIN;
    p->cfg.chunk_max = p->cfg.chunk_max ? p->cfg.chunk_max : DEFAULT_CHUNK_MAX;
    p->cfg.ahead_max = p->cfg.ahead_max ? p->cfg.ahead_max : DEFAULT_AHEAD_MAX;
    p->spool_fd = p->cfg.spool_dir != NULL
                      ? spoolOpen(p->cfg.spool_dir, p->cfg.spool_budget ? p->cfg.spool_budget
                                                                        : READAHEAD_SPOOL_BUDGET)
                      : -1;
    p->spooling = p->spool_fd >= 0;
    if (p->spooling) {
        /* Chunks on disk: larger, further ahead, within the spool's budget. */
        p->cfg.chunk_max = p->cfg.spool_chunk_max ? p->cfg.spool_chunk_max
                                                  : DEFAULT_SPOOL_CHUNK_MAX;
        p->cfg.ahead_max = p->cfg.spool_ahead_max ? p->cfg.spool_ahead_max
                                                  : DEFAULT_SPOOL_AHEAD_MAX;
    }
    if (p->cfg.chunk_max < p->cfg.chunk_min) {
        p->cfg.chunk_max = p->cfg.chunk_min;
    }
    {
        size_t own = p->spooling ? p->cfg.spool_budget : p->cfg.budget;
        if (own != 0) {
            pthread_mutex_init(&p->own.mu, NULL);
            p->own.cap = own;
            p->budget = &p->own;
        } else {
            p->budget = p->spooling ? &processSpoolBudget : &processBudget;
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    *out = p;
    return 0;
}

void readaheadPoolClose(struct readahead_pool *p)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++) {
        pthread_join(p->threads[i], NULL);
    }
    /* Every reader is closed, so nothing is queued; every fetch has ended, so every
     * abandoned chunk is freed. */
    sparesDrop(p);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    if (p->budget == &p->own) {
        pthread_mutex_destroy(&p->own.mu);
    }
    if (p->spool_fd >= 0) {
        close(p->spool_fd);
    }
    free(p);
}

void readaheadPoolStats(struct readahead_pool *p, struct readahead_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->stats;
    out->spooling = p->spooling;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&p->budget->mu);
    out->budget_peak = p->budget->peak;
    pthread_mutex_unlock(&p->budget->mu);
}

/* Put c on the queue, starting the threads at the first chunk (pool mutex held). A
 * pool whose threads could not start still works: readers fetch their own chunks. */
static void enqueue(struct readahead_pool *p, struct chunk *c)
{
    if (!p->started) {
        p->started = true;
        while (p->nthreads < p->cfg.threads &&
               pthread_create(&p->threads[p->nthreads], NULL, fetchThread, p) == 0) {
            p->nthreads++;
        }
    }
    c->state = CHUNK_QUEUED;
    if (p->qtail != NULL) {
        p->qtail->qnext = c;
    } else {
        p->qhead = c;
    }
    p->qtail = c;
    p->stats.ahead++;
    pthread_cond_signal(&p->work);
}

/* ---- readers ------------------------------------------------------------------------ */

int readaheadOpen(struct readahead_pool *p, readahead_fetch_fn fetch, void *obj,
                  void (*release)(void *obj), uint64_t size, struct readahead **out, char *errmsg)
{
    struct readahead *r = calloc(1, sizeof *r);
    struct target *t = calloc(1, sizeof *t);
    *out = NULL;
    if (r != NULL) {
        r->cap = (unsigned)(p->cfg.ahead_max / p->cfg.chunk_min) + 2;
        r->ring = calloc(r->cap, sizeof *r->ring);
    }
    if (r == NULL || t == NULL || r->ring == NULL) {
        if (r != NULL) {
            free(r->ring);
        }
        free(r);
        free(t);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    t->fetch = fetch;
    t->obj = obj;
    t->release = release;
    t->refs = 1;
    pthread_mutex_lock(&p->mu);
    p->readers++;
    pthread_mutex_unlock(&p->mu);
    (void)budgetReweigh(p->budget, &r->weight, readerWeight(size));
    r->p = p;
    r->t = t;
    r->size = size;
    *out = r;
    return 0;
}

static struct chunk *first(const struct readahead *r)
{
    return r->n > 0 ? r->ring[r->head] : NULL;
}

static struct chunk *last(const struct readahead *r)
{
    return r->n > 0 ? r->ring[(r->head + r->n - 1) % r->cap] : NULL;
}

/* Let go of the reader's first chunk: freed now, or by its fetch when it ends. */
static void dropFirst(struct readahead *r)
{
    struct readahead_pool *p = r->p;
    struct chunk *c = first(r);
    r->head = (r->head + 1) % r->cap;
    r->n--;
    pthread_mutex_lock(&p->mu);
    if (c->state == CHUNK_BUSY) {
        c->abandoned = true;
        __atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED);
    } else {
        if (c->state == CHUNK_QUEUED) {
            queueUnlink(p, c);
        }
        chunkFree(p, c);
    }
    pthread_mutex_unlock(&p->mu);
}

static void dropAll(struct readahead *r)
{
    while (r->n > 0) {
        dropFirst(r);
    }
}

static bool inSmall(const struct readahead *r, uint64_t off)
{
    return r->small_len > 0 && off >= r->small_off && off - r->small_off < r->small_len;
}

/* Where the bytes from off on stop being at hand without a fetch: off, or the end of
 * the small window when it holds off. */
static uint64_t heldTo(const struct readahead *r, uint64_t off)
{
    return inSmall(r, off) ? r->small_off + r->small_len : off;
}

/* Queue chunks ahead of a sequential read at off, as far ahead as the run has been long
 * (AHEAD_FACTOR times), within ahead_max, the ring and the reader's share of the budget.
 *
 * The shares of the open readers of every pool on the budget add up to the budget
 * (budgetReweigh), so that what the readers hold together stays within it however
 * many are open (a restore merging a chain's files holds up to 16 at once) and none
 * takes the room the others need: one holding most of it would leave them to read
 * without read-ahead, in many small requests. A reader's bytes not read yet are at most
 * its share: the chunks it has read are given back page by page as it reads
 * (bufRelease). A share smaller than chunk_max is fetched in one chunk, the next asked
 * for once the reader has read it: a server that spends its time per request (s3rver:
 * a restore of a chain spent 40% of its time on 782 GETs of half a share each) serves
 * half the requests of two chunks of half a share, and while a reader waits for its
 * next chunk, the other readers' chunks and the blocks its consumer holds keep the
 * restore going. A larger share goes in chunks of half of it up to chunk_max, so that
 * each is still a large request and one arrives while another is read. */
static void topUp(struct readahead *r, uint64_t off)
{
    struct readahead_pool *p = r->p;
    const struct readahead_config *cfg = &p->cfg;
    uint64_t ahead =
        r->run > cfg->ahead_max / AHEAD_FACTOR ? cfg->ahead_max : r->run * AHEAD_FACTOR;
    const struct chunk *l = last(r);
    uint64_t end = l != NULL ? l->off + l->len : heldTo(r, off);
    size_t share = budgetReweigh(p->budget, &r->weight, readerWeight(r->size - off));
    size_t lo = cfg->chunk_min, len;

    if (ahead > share) {
        /* A share smaller than a chunk of chunk_min: a smaller chunk rather than a
         * reader without read-ahead, down to a small read. */
        ahead = share;
        if (lo > share) {
            lo = share > cfg->small ? share : cfg->small;
        }
    }
    if (ahead < lo) {
        ahead = lo;
    }
    /* Two chunks of half the room ahead when each is still a large request (half of
     * chunk_max or more: one arrives while the other is read), else one. */
    len = (size_t)(ahead / 2 >= cfg->chunk_max / 2 ? ahead / 2 : ahead);
    len = len < lo ? lo : len > cfg->chunk_max ? cfg->chunk_max : len;
    /* Every chunk but the one being read ends within `ahead` of off. */
    while (end < r->size && r->n < r->cap) {
        size_t want = r->size - end < len ? (size_t)(r->size - end) : len;
        struct chunk *c;
        if (end > off && end + want - off > ahead) {
            return;
        }
        if ((c = calloc(1, sizeof *c)) == NULL) {
            return;
        }
        pthread_mutex_lock(&p->mu);
        /* A pool with a spool fetches ahead into it only (a reader without a stream
         * function, or after the spool failed: no read-ahead). */
        if (p->spool_fd >= 0 ? (r->t->stream == NULL || !spoolTake(p, c, want))
                             : (c->buf = bufTake(p, want)) == NULL) {
            pthread_mutex_unlock(&p->mu);
            free(c);
            return; /* the budget is spent: this run goes on with what it has */
        }
        c->t = r->t;
        c->off = end;
        c->len = want;
        r->t->refs++;
        enqueue(p, c);
        pthread_mutex_unlock(&p->mu);
        r->ring[(r->head + r->n) % r->cap] = c;
        r->n++;
        end += want;
    }
}

int readaheadSeed(struct readahead *r, uint64_t off, const void *data, size_t n, char *errmsg)
{
    const size_t small = r->p->cfg.small;
    if (n > small || off > r->size || n > r->size - off) {
        errorf(errmsg,
               "%zu bytes at offset %llu do not fit the window (%zu bytes) or the "
               "object (%llu bytes)",
               n, (unsigned long long)off, small, (unsigned long long)r->size);
        return CAIRN_EINVAL;
    }
    if (r->small == NULL && (r->small = malloc(small)) == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    memcpy(r->small, data, n);
    r->small_off = off;
    r->small_len = n;
    return 0;
}

/* Wait for c (fetching it here when no thread has started it): its fetch's code. */
static int await(struct readahead *r, struct chunk *c)
{
    struct readahead_pool *p = r->p;
    pthread_mutex_lock(&p->mu);
    if (c->state == CHUNK_QUEUED) {
        queueUnlink(p, c);
        chunkStart(p, c);
        p->stats.stolen++;
        pthread_mutex_unlock(&p->mu);
        chunkRun(p, c);
        pthread_mutex_lock(&p->mu);
    }
    while (c->state != CHUNK_DONE) {
        pthread_cond_wait(&p->done, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return c->rv;
}

/* A fetch on the reader's thread, outside the chunks. */
static int fetchHere(struct readahead *r, uint64_t off, void *buf, size_t n, char *errmsg)
{
    struct readahead_pool *p = r->p;
    int rv;
    pthread_mutex_lock(&p->mu);
    if (++p->busy > p->stats.max_busy) {
        p->stats.max_busy = p->busy;
    }
    pthread_mutex_unlock(&p->mu);
    rv = r->t->fetch(r->t->obj, off, buf, n, &never, errmsg);
    pthread_mutex_lock(&p->mu);
    p->busy--;
    p->stats.fetches++;
    p->stats.fetched_bytes += n;
    pthread_mutex_unlock(&p->mu);
    return rv;
}

int readaheadRead(struct readahead *r, uint64_t off, void *buf, size_t n, char *errmsg)
{
    const size_t small = r->p->cfg.small;
    unsigned char *out = buf;
    bool seq;
    int rv;

    if (off > r->size || n > r->size - off) {
        errorf(errmsg, "read of %zu bytes at offset %llu is past the end (%llu bytes)", n,
               (unsigned long long)off, (unsigned long long)r->size);
        return CAIRN_EINVAL;
    }
    if (n == 0) {
        return 0;
    }
    seq = r->any && off == r->next;
    r->run = seq ? r->run + n : n;
    r->any = true;
    r->next = off + n;
    /* Chunks that end before off are done with; a read outside the chunks ahead drops
     * them all, and a read that is not sequential starts no new ones. */
    while (first(r) != NULL && first(r)->off + first(r)->len <= off) {
        dropFirst(r);
    }
    if (first(r) != NULL && first(r)->off > heldTo(r, off)) {
        dropAll(r);
    }
    /* A read back into the part of the first chunk already given back (bufRelease). */
    if (first(r) != NULL && off >= first(r)->off && off - first(r)->off < first(r)->released) {
        dropAll(r);
    }
    if (seq) {
        topUp(r, off);
    }
    while (n > 0) {
        struct chunk *c = first(r);
        size_t k;
        if (inSmall(r, off)) {
            k = (size_t)(r->small_off + r->small_len - off);
            k = k < n ? k : n;
            memcpy(out, r->small + (off - r->small_off), k);
        } else if (c != NULL && off >= c->off && off - c->off < c->len) {
            if ((rv = await(r, c)) != 0) {
                if (c->spool_failed) {
                    dropAll(r); /* the bytes are fetched below, without the spool */
                    continue;
                }
                memcpy(errmsg, c->errmsg, CAIRN_ERRMSG_SIZE);
                dropAll(r); /* a read tried again fetches afresh */
                return rv;
            }
            k = (size_t)(c->off + c->len - off);
            k = k < n ? k : n;
            if (!c->spooled) {
                memcpy(out, c->buf + (off - c->off), k);
            } else if (libPreadFull(r->p->spool_fd, out, k, c->soff + (off - c->off)) != 0) {
                pthread_mutex_lock(&r->p->mu);
                if (r->p->spooling) {
                    spoolFailed(r->p);
                }
                pthread_mutex_unlock(&r->p->mu);
                dropAll(r);
                continue;
            }
            if (off + k == c->off + c->len) {
                dropFirst(r);
            } else {
                pthread_mutex_lock(&r->p->mu);
                bufRelease(r->p, c, (size_t)(off + k - c->off));
                pthread_mutex_unlock(&r->p->mu);
            }
            if (seq) {
                topUp(r, off + k);
            }
        } else {
            /* Not fetched ahead: the bytes before the next chunk, if there is one. */
            k = c != NULL && c->off > off && c->off - off < n ? (size_t)(c->off - off) : n;
            if (k >= small) {
                if ((rv = fetchHere(r, off, out, k, errmsg)) != 0) {
                    return rv;
                }
            } else {
                uint64_t from = off;
                size_t len = r->size - off < small ? (size_t)(r->size - off) : small;
                if (len < small && r->size > off) {
                    /* Near the end: the window ends at the end, and holds what precedes
                     * (a footer read, then the manifest's end). */
                    len = r->size < small ? (size_t)r->size : small;
                    from = r->size - len;
                }
                if (r->small == NULL && (r->small = malloc(small)) == NULL) {
                    errorf(errmsg, "out of memory");
                    return CAIRN_ENOMEM;
                }
                r->small_len = 0;
                if ((rv = fetchHere(r, from, r->small, len, errmsg)) != 0) {
                    return rv;
                }
                r->small_off = from;
                r->small_len = len;
                continue; /* copied from the window */
            }
        }
        out += k;
        off += k;
        n -= k;
    }
    return 0;
}

void readaheadStream(struct readahead *r, readahead_stream_fn stream)
{
    r->t->stream = stream;
}

void readaheadWillRead(struct readahead *r, uint64_t off)
{
    if (off >= r->size) {
        return;
    }
    if (first(r) == NULL || first(r)->off > off || last(r)->off + last(r)->len <= off) {
        dropAll(r);
    }
    r->any = true;
    r->next = off;
    r->run = 2 * r->p->cfg.chunk_max / AHEAD_FACTOR;
    topUp(r, off);
}

void readaheadClose(struct readahead *r)
{
    if (r == NULL) {
        return;
    }
    dropAll(r);
    (void)budgetReweigh(r->p->budget, &r->weight, 0);
    pthread_mutex_lock(&r->p->mu);
    targetUnref(r->t);
    if (--r->p->readers == 0) {
        sparesDrop(r->p);
    }
    pthread_mutex_unlock(&r->p->mu);
    free(r->small);
    free(r->ring);
    free(r);
}
