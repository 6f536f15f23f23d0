/* Restoring and verifying backups: resolve the chain that ends at a backup back to its
 * full backup (through parent ids and parent digests), write the restored database
 * into a new file while checking every file of the chain completely, fsync it, check
 * it with SQLite's quick_check (integrity_check when asked, and for a verification's
 * trial restore), and only then put it in place.
 *
 * A restore is a pipeline in which reading the chain, decompressing, checking, writing,
 * syncing and SQLite's check overlap:
 *
 *  - read: the files of the chain that are applied (from the newest back to the newest
 *    one that stores every page, applyStart) are read at once, each in order by a
 *    thread of its own (cbkScan: block checksums, manifest, whole-file digest; each
 *    file read once). A file's page numbers ascend through it (docs/FORMAT.md), so the
 *    files are merged like sorted runs: the restored file is produced from its first
 *    page to its last, each page taken from the newest file that holds it. Up to
 *    MAX_STREAMS files at once; a longer chain is merged in groups, newest first, a
 *    bitmap telling which pages a newer group wrote. Files in a repository over the
 *    network are merged the same way, each read with ranged GETs ahead of it; the
 *    read-ahead's budget (readahead.h) is shared fairly by the files read at once.
 *  - decompress: a small block (an incremental's: a few pages) by the thread that read
 *    it, straight from its read buffer; a large one by the workers (one per CPU), the
 *    block nearest the front of the merge first.
 *  - check: the copy of a page that is restored must have the hash the restored
 *    backup's manifest names, in memory, before it is written; every page of that
 *    manifest must be written. So the file holds exactly the pages the manifest names,
 *    and is never read back for it. Its decoder hashes it (XXH3-64, with AVX2 where
 *    the CPU has it: hash.h), or the consumer does. (Older copies that a newer
 *    backup replaces are decompressed, their blocks and files checked, but compared
 *    with no manifest: they are not restored, and holding every file's manifest would
 *    cost 8 bytes a page a file. So they are not hashed either, as far as the decoder
 *    knows them to be replaced: the readers mark which file of the group is the
 *    newest to hold each page they have read (pipe.newest), and in the benchmark's
 *    chain that spares the hashing of most of the 40% of the pages decompressed that
 *    are not restored. backupVerify compares every page of every file with its own
 *    file's manifest.) A file's digest is known when its last byte is read: any
 *    failure, anywhere, fails the restore, and the new file never appears.
 *  - write: each page once, in ascending runs of up to RUN_BYTES written by one
 *    pwritev straight from the decompressed blocks, into a file preallocated to its
 *    final size (fallocate: a full disk fails the restore before it starts), with its
 *    writeback started every WRITEBACK_BYTES (sync_file_range), so that the fsync at
 *    the end has little left.
 *  - SQLite's check starts with the writing, on a thread of its own, reading the file
 *    through ROVFS: a read of a page not written yet waits for it (and is woken when
 *    it is written, not at every run). It goes through the b-trees in their own
 *    order, so how much of it overlaps the writing depends on where their pages are:
 *    SQLite 3.40's b-tree pass goes down the file from its end, so in practice it
 *    runs after the last page is written, beside the fsync. There a thread of its own
 *    reads the file ahead of it into a few chunks, on the other CPU (roAhead), so
 *    that the check itself spends its time in SQLite, not in the kernel.
 *
 * The new file has no name until it is complete (O_TMPFILE, src/lib/newfile.h): a
 * restore killed at any point leaves nothing at the destination, nor beside it. On a
 * file system without O_TMPFILE it is a hidden file beside the destination, held under
 * an flock, which the next restore to that destination removes; so does a restore's
 * last step, the caller's `finish`, which opens the file by a name.
 *
 * Memory: the restored backup's manifest (8 bytes a page), a bitmap (1 bit a page),
 * the newest file of each page (1 byte a page), the blocks in flight (at most RING a
 * file, and BUFFER_BUDGET beyond one a file) and the check's read chunks (RO_CHUNKS of
 * RO_CHUNK bytes); never the database, and independent of the chain's length.
 *
 * Threads: the caller's (a worker, never the loop) merges, writes and fsyncs; for the
 * duration of a call it starts a reader per file read at once, workers that decompress
 * (one per CPU, at most MAX_WORKERS, for chains of PARALLEL_MIN_BYTES or more), one
 * that runs SQLite's check, and, once the file is written, one that reads it ahead
 * of the check. The progress callback is called on the caller's thread
 * only. No state is shared between calls. */
#define _GNU_SOURCE
#include "backup.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cbk.h"
#include "error.h"
#include "hash.h"
#include "lib.h"
#include "newfile.h"
#include "repo.h"
#include "sqlerr.h"

/* The XXH3-64 of a page: hash.h's, with AVX2 where the CPU has it. */
static uint64_t pageHash(const void *p, size_t n)
{
    return hash64(p, n);
}

/* Longest chain followed: guards against a loop of parents. */
#define MAX_CHAIN 100000

struct progress {
    backup_progress_fn fn;
    void *arg;
    uint64_t base; /* bytes done before the current file or group of files */
    uint64_t total;
};

static void onOffset(void *arg, uint64_t off)
{
    struct progress *p = arg;
    if (p->fn != NULL) {
        p->fn(p->arg, p->base + off, p->total);
    }
}

/* The chain that ends at ref, oldest (the full backup) first. *target receives the
 * entry of ref itself as soon as it is found (*found tells), even when the chain
 * behind it is broken, so that backupVerify can record the failure. */
static int resolveChain(struct repo *repo, const char *ref, struct backup_info **out, size_t *n,
                        struct backup_info *target, bool *found, char *errmsg)
{
    struct backup_info *v = NULL, *grown;
    char dir[PATH_MAX];
    char why[CAIRN_ERRMSG_SIZE];
    char hex1[2 * BACKUP_DIGEST_SIZE + 1], hex2[2 * BACKUP_DIGEST_SIZE + 1];
    size_t len = 0, cap = 4;
    int rv;

    *out = NULL;
    *n = 0;
    *found = false;
    if ((rv = repoFindIn(repo, ref, target, errmsg)) != 0) {
        return rv;
    }
    *found = true;
    if ((v = malloc(cap * sizeof *v)) == NULL) {
        goto oom;
    }
    v[len++] = *target;
    /* Parents are looked for beside the file, wherever it was found: in repo, which
     * chainRepo made the file's own. */
    repoDirOf(target->path, dir);
    while (v[len - 1].type != BACKUP_FULL) {
        const struct backup_info *child;
        struct backup_info *parent;
        if (len == MAX_CHAIN) {
            errorf(errmsg, "%s: chain longer than %d backups", target->path, MAX_CHAIN);
            rv = CAIRN_ECORRUPT;
            goto err;
        }
        if (len == cap) {
            cap *= 2;
            if ((grown = realloc(v, cap * sizeof *v)) == NULL) {
                goto oom;
            }
            v = grown;
        }
        child = &v[len - 1];
        parent = &v[len];
        rv = repoFindIn(repo, child->parent_id, parent, why);
        if (rv == CAIRN_ENOTFOUND) {
            errorf(errmsg, "%s: its parent %s is not in %s (the chain is broken)", child->path,
                   child->parent_id, dir);
            goto err;
        }
        if (rv != 0) {
            errorf(errmsg, "%s: its parent %s cannot be read: %s", child->path, child->parent_id,
                   why);
            goto err;
        }
        if (memcmp(parent->digest, child->parent_digest, BACKUP_DIGEST_SIZE) != 0) {
            repoHex(parent->digest, BACKUP_DIGEST_SIZE, hex1);
            repoHex(child->parent_digest, BACKUP_DIGEST_SIZE, hex2);
            errorf(errmsg,
                   "%s: its parent %s (%s) has digest %s, but this backup was made "
                   "on a parent with digest %s",
                   child->path, child->parent_id, parent->path, hex1, hex2);
            rv = CAIRN_ECORRUPT;
            goto err;
        }
        /* The parent's digest proves it is the very file the child was made on; its
         * source may differ (in a cluster, the chain goes on from a backup another
         * node took). */
        if (child->type == BACKUP_DIFFERENTIAL && parent->type != BACKUP_FULL) {
            errorf(errmsg, "%s: its parent %s (%s) is not a full backup", child->path,
                   child->parent_id, parent->path);
            rv = CAIRN_ECORRUPT;
            goto err;
        }
        for (size_t i = 0; i < len; i++) {
            if (strcmp(v[i].id, parent->id) == 0) {
                errorf(errmsg, "%s: the chain of parents loops back to %s", target->path,
                       parent->id);
                rv = CAIRN_ECORRUPT;
                goto err;
            }
        }
        len++;
    }
    for (size_t i = 0; i < len / 2; i++) {
        struct backup_info tmp = v[i];
        v[i] = v[len - 1 - i];
        v[len - 1 - i] = tmp;
    }
    *out = v;
    *n = len;
    return 0;
oom:
    errorf(errmsg, "out of memory resolving the chain of %s", ref);
    rv = CAIRN_ENOMEM;
err:
    free(v);
    return rv;
}

/* The repository a chain is read from: repo, or, when ref is a path, the one that holds
 * that file (*owned then, for the caller to close). */
static int chainRepo(struct repo *repo, const char *ref, struct repo **use, struct repo **owned,
                     char *errmsg)
{
    char dir[PATH_MAX];
    int rv;
    *owned = NULL;
    *use = repo;
    if (ref == NULL || strchr(ref, '/') == NULL) {
        return 0;
    }
    if (strlen(ref) >= PATH_MAX) {
        errorf(errmsg, "path too long: %s", ref);
        return CAIRN_EINVAL;
    }
    repoDirOf(ref, dir);
    if ((rv = repoOpen(dir, owned, errmsg)) != 0) {
        return rv;
    }
    *use = *owned;
    return 0;
}

/* Open a file of the chain, making sure it is the one the chain was resolved with. */
static int openMember(struct repo *repo, const struct backup_info *info, struct repo_file *f,
                      char *errmsg)
{
    int rv = repoOpenFileIn(repo, repoNameOf(info->path), f, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (memcmp(f->r.t.digest, info->digest, BACKUP_DIGEST_SIZE) != 0) {
        errorf(errmsg, "%s: replaced while the chain was being read", info->path);
        repoCloseFile(f);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

static uint64_t *newManifest(const struct repo_file *f, char *errmsg)
{
    uint64_t *m = malloc(f->r.h.page_count ? f->r.h.page_count * sizeof *m : 1);
    if (m == NULL) {
        errorf(errmsg, "out of memory for the manifest of %s", f->path);
    }
    return m;
}

/* ---- the pipeline: readers, decompressing workers, and a consumer on the caller's
 * thread that merges and writes (restore) or checks (verify) ---- */

/* Files read at once; a longer chain is merged in groups. */
#define MAX_STREAMS 16
/* Blocks a file holds at most: read, being decompressed, decompressed, or taken into
 * the run being written. */
#define RING 6
#define MAX_WORKERS 16
/* Bytes of block buffers beyond one block per file: a reader waits for room past it.
 * The rings of a chain's files fill up to it where their blocks are large (where the
 * database grew: pages past the parent's end are stored whole), and that was most of
 * a restore's peak RSS: at 32 MiB the restore of the benchmark's 10 incrementals, and of
 * tests/system/test_s3_memory.py's 40 from a directory, peaked at 52 and 50 MiB,
 * against 37 at 16 MiB; at 8 MiB readers waited for room, and buffers were unmapped
 * and mapped again, for twice the time. */
#define BUFFER_BUDGET (16u << 20)
/* Blocks of up to this many raw bytes are decompressed by the thread that read them:
 * an incremental's blocks hold a few pages each, and handing each to a worker would
 * cost more in wakeups than the work. */
#define INLINE_BYTES (256u << 10)
/* Chains smaller than this are decompressed by their readers alone. */
#define PARALLEL_MIN_BYTES (4u << 20)
/* The longest run written by one pwritev. Not more: the page cache takes a write's
 * length for the size of the folios it allocates, and on the benchmark's machine a
 * write of 1 MiB cost 2 to 3 times one of 256 KiB, 2 MiB (a huge page) 4 to 10 times,
 * as the memory a large folio takes must be found (compacted) or faulted in from the
 * host (docs/BENCHMARKS.md, "Backups"); 256 KiB is already many pages a call. */
#define RUN_BYTES (256u << 10)
#define RUN_IOVS 64 /* buffers of one pwritev */
/* Writeback of the restored file is started every this many bytes written. */
#define WRITEBACK_BYTES (32u << 20)

enum { BLK_QUEUED, BLK_BUSY, BLK_READY };

/* Stacks of the threads a restore starts: small, as the work they do needs (a reader
 * may talk HTTPS to S3, the check runs SQLite), not the default 8 MiB of address space
 * each, which a process running under an address space limit may not have. */
#define READER_STACK (1u << 20)
#define WORKER_STACK (512u << 10)
#define CHECK_STACK (1u << 20)

static int startThread(pthread_t *th, size_t stack, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rv;
    if (pthread_attr_init(&attr) != 0) {
        return -1;
    }
    pthread_attr_setstacksize(&attr, stack);
    rv = pthread_create(th, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rv;
}

/* How much of the new file is written, for SQLite's check, which reads it meanwhile
 * (ROVFS below): a read waits until the bytes it wants are there. Set by the consumer
 * after each run it writes, and at the end. */
struct follow {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t size; /* of the file, once complete */
    uint64_t upto; /* bytes [0, upto) are written */
    bool end;      /* no more writes */
    bool failed;   /* ... because the restore failed: reads fail */
    bool waiting;
    uint64_t want; /* the waiter's: bytes [0, want) written wake it (not every run) */
};

static void followInit(struct follow *fw, uint64_t size)
{
    memset(fw, 0, sizeof *fw);
    pthread_mutex_init(&fw->mu, NULL);
    pthread_cond_init(&fw->cv, NULL);
    fw->size = size;
}

static void followSet(struct follow *fw, uint64_t upto, bool end, bool failed)
{
    pthread_mutex_lock(&fw->mu);
    if (upto > fw->upto) {
        fw->upto = upto;
    }
    fw->end = fw->end || end;
    fw->failed = fw->failed || failed;
    if (fw->waiting && (fw->upto >= fw->want || fw->end)) {
        pthread_cond_broadcast(&fw->cv);
    }
    pthread_mutex_unlock(&fw->mu);
}

/* 0 once bytes [off, off + n) are written or no more will be; -1 when the restore
 * failed. */
static int followWait(struct follow *fw, uint64_t off, uint64_t n)
{
    int rv;
    pthread_mutex_lock(&fw->mu);
    while (!fw->end && off + n > fw->upto) {
        fw->waiting = true;
        fw->want = off + n;
        pthread_cond_wait(&fw->cv, &fw->mu);
    }
    fw->waiting = false;
    rv = fw->failed ? -1 : 0;
    pthread_mutex_unlock(&fw->mu);
    return rv;
}

static void followDestroy(struct follow *fw)
{
    pthread_cond_destroy(&fw->cv);
    pthread_mutex_destroy(&fw->mu);
}

/* A block of a file, copied from the reader's window, and once decoded its pages and
 * their hashes. */
struct blk {
    struct cbk_block b; /* b.pgnos and b.frame point into the buffers below */
    uint32_t *pgnos;
    uint64_t *hashes;
    unsigned char *hashed; /* hashes[i] was computed (else the copy is not restored) */
    uint32_t pages_cap;
    unsigned char *frame;
    size_t frame_cap;
    unsigned char *raw;
    size_t raw_cap;
    uint64_t end; /* bytes of the file up to the block's end: progress */
    int state;    /* BLK_*: written under pl->mu, read without it by the consumer (blkState) */
};

struct pipe;

/* A file of the chain being read. */
struct stream {
    struct pipe *pl;
    const struct backup_info *info;
    struct repo_file f; /* open while its reader reads it */
    bool open;
    uint32_t ps;        /* its page size */
    int codec;          /* its blocks' (CBK_CODEC_*) */
    bool want_manifest; /* its manifest is read into pl->manifest */
    ZSTD_DCtx *dctx; /* its reader's */
    struct blk ring[RING];
    /* Under pl->mu. */
    uint64_t pushed; /* blocks published by the reader */
    uint64_t freed;  /* blocks released: slots from freed up to freed + RING are the reader's */
    bool ended;      /* the reader's scan passed: every block published, the file checked */
    bool waiting;    /* the reader waits for room, on room */
    size_t need;     /* ... and for its buffers to grow by this much (0: for a slot) */
    pthread_cond_t room;
    /* The consumer's alone. */
    uint64_t head;       /* the block it is at */
    uint64_t avail;      /* pushed, when it last looked */
    uint32_t pos;        /* the next page of the head block */
    bool finished;       /* ended, and every block consumed */
    uint64_t done_bytes; /* of the file, consumed: progress */
    pthread_t th;
    bool started;
};

struct pipe {
    pthread_mutex_t mu;
    pthread_cond_t work; /* workers: a block queued, or stop */
    pthread_cond_t cons; /* the consumer: a block published or decoded, an end, a failure */
    struct repo *repo;
    uint32_t page_size; /* that every file must have; 0: any */
    /* A verification hashes every page it decodes (each is compared with its own
     * file's manifest). A restore hashes only the copies it may restore: newest[pg - 1]
     * is the newest file of the group (its index in act) whose reader has published
     * page pg so far (NEWEST_NONE: none), for pages up to limit; a copy of an older
     * file is not restored, and is decoded (its block is checked whole) but compared
     * with nothing, so it is not hashed. A copy decoded before a newer file's reader
     * got to its page is hashed anyway, or, if not, by the consumer when it restores
     * it (blk.hashed). */
    bool hash_pages;
    unsigned char *newest;
    uint64_t limit;
    struct stream s[MAX_STREAMS];
    struct stream *act; /* the group being read: act[0] to act[ns - 1], in s */
    unsigned ns;
    unsigned queued;        /* blocks waiting for a worker */
    unsigned busy;          /* blocks being decoded by workers */
    unsigned idle;          /* workers waiting */
    unsigned short_of_room; /* readers waiting for the budget */
    bool cons_waiting;
    /* What the waiting consumer waits for: a block of this stream or its end, this
     * block decoded; neither: anything. Others' news does not wake it (with a chain's
     * dozen readers and the workers, most wakeups were for news it had no use for). */
    const struct stream *want_s;
    const struct blk *want_b;
    size_t cap; /* bytes of the rings' buffers */
    bool stop;  /* readers and workers end */
    int rv;     /* the first failure, with its message */
    char errmsg[CAIRN_ERRMSG_SIZE];
    uint64_t *manifest; /* of the stream that wants it, once read */
    bool manifest_ready;
    pthread_t workers[MAX_WORKERS];
    unsigned nworkers;
    ZSTD_DCtx *dctx; /* the consumer's */
};

/* Record the first failure and stop everyone. pl->mu held. */
static void failLocked(struct pipe *pl, int rv, const char *errmsg)
{
    if (pl->rv == 0) {
        pl->rv = rv;
        snprintf(pl->errmsg, sizeof pl->errmsg, "%s", errmsg);
    }
    pl->stop = true;
    pthread_cond_broadcast(&pl->work);
    pthread_cond_broadcast(&pl->cons);
    for (unsigned i = 0; i < MAX_STREAMS; i++) {
        pthread_cond_broadcast(&pl->s[i].room);
    }
}

static int fail(struct pipe *pl, int rv, const char *errmsg)
{
    pthread_mutex_lock(&pl->mu);
    failLocked(pl, rv, errmsg);
    rv = pl->rv;
    pthread_mutex_unlock(&pl->mu);
    return rv;
}

/* The consumer waits for news. pl->mu held. */
static void consWaitFor(struct pipe *pl, const struct stream *s, const struct blk *b)
{
    pl->cons_waiting = true;
    pl->want_s = s;
    pl->want_b = b;
    pthread_cond_wait(&pl->cons, &pl->mu);
    pl->cons_waiting = false;
    pl->want_s = NULL;
    pl->want_b = NULL;
}

static void consWait(struct pipe *pl)
{
    consWaitFor(pl, NULL, NULL);
}

/* News of stream s (a block published, its end) or of block b (decoded): wake the
 * consumer if it waits for it. pl->mu held. */
static void consWake(struct pipe *pl, const struct stream *s, const struct blk *b)
{
    if (pl->cons_waiting && ((pl->want_s == NULL && pl->want_b == NULL) ||
                             (s != NULL && pl->want_s == s) || (b != NULL && pl->want_b == b))) {
        pthread_cond_signal(&pl->cons);
    }
}

#define NEWEST_NONE 0xFF

/* Whether the copy of page pg in stream i may be restored, as far as the readers have
 * got (pl->newest). */
static bool mayRestore(const struct pipe *pl, unsigned i, uint32_t pg)
{
    return pl->hash_pages ||
           (pg <= pl->limit && __atomic_load_n(&pl->newest[pg - 1], __ATOMIC_RELAXED) >= i);
}

/* Record that stream i holds the pages of its block b. */
static void markNewest(struct pipe *pl, unsigned i, const struct cbk_block *b)
{
    for (uint32_t j = 0; pl->newest != NULL && j < b->n; j++) {
        unsigned char *p;
        unsigned char cur;
        if (b->pgnos[j] > pl->limit) {
            continue;
        }
        p = &pl->newest[b->pgnos[j] - 1];
        cur = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (cur > i && !__atomic_compare_exchange_n(p, &cur, (unsigned char)i, true,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    }
}

/* A block's state, seen from a thread that may not hold pl->mu: once BLK_READY, its
 * pages and hashes are those its decoder wrote. */
static int blkState(const struct blk *k)
{
    return __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
}

static size_t blkCap(const struct blk *k)
{
    return (size_t)k->pages_cap * (sizeof *k->pgnos + sizeof *k->hashes + 1) + k->frame_cap +
           k->raw_cap;
}

/* Frames and pages are kept in mappings of their own, not in the heap: a buffer
 * released goes back to the system at once (the heap would keep it, and the process's
 * resident size would be the most it ever held, in every thread's arena). Sizes are
 * multiples of MAP_UNIT; *cap is the buffer's. */
#define MAP_UNIT (4u << 10)

static bool mapGrow(unsigned char **p, size_t *cap, size_t want)
{
    void *q;
    want = (want + MAP_UNIT - 1) / MAP_UNIT * MAP_UNIT;
    if (*p == NULL) {
        q = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
        q = mremap(*p, *cap, want, MREMAP_MAYMOVE);
    }
    if (q == MAP_FAILED) {
        return false;
    }
    *p = q;
    *cap = want;
    return true;
}

static void mapFree(unsigned char **p, size_t *cap)
{
    if (*p != NULL) {
        munmap(*p, *cap);
    }
    *p = NULL;
    *cap = 0;
}

static void blkFree(struct blk *k)
{
    free(k->pgnos);
    free(k->hashes);
    free(k->hashed);
    mapFree(&k->frame, &k->frame_cap);
    mapFree(&k->raw, &k->raw_cap);
    k->pgnos = NULL;
    k->hashes = NULL;
    k->hashed = NULL;
    k->pages_cap = 0;
}

/* Bytes k's buffers must grow by to hold a block of n pages of ps bytes, comp of them
 * compressed. */
static size_t blkGrowth(const struct blk *k, uint32_t n, uint32_t ps, uint32_t comp)
{
    size_t raw = (size_t)n * ps, g = 0;
    if (n > k->pages_cap) {
        g += (size_t)(n - k->pages_cap) * (sizeof *k->pgnos + sizeof *k->hashes + 1);
    }
    if (comp > k->frame_cap) {
        g += (comp - k->frame_cap + MAP_UNIT - 1) / MAP_UNIT * MAP_UNIT;
    }
    if (raw > k->raw_cap) {
        g += (raw - k->raw_cap + MAP_UNIT - 1) / MAP_UNIT * MAP_UNIT;
    }
    return g;
}

static bool blkReserve(struct blk *k, uint32_t n, uint32_t ps, uint32_t comp)
{
    size_t raw = (size_t)n * ps;
    if (n > k->pages_cap) {
        uint32_t *p = realloc(k->pgnos, sizeof *p * n);
        uint64_t *h;
        unsigned char *d;
        if (p == NULL) {
            return false;
        }
        k->pgnos = p;
        if ((h = realloc(k->hashes, sizeof *h * n)) == NULL) {
            return false;
        }
        k->hashes = h;
        if ((d = realloc(k->hashed, n)) == NULL) {
            return false;
        }
        k->hashed = d;
        k->pages_cap = n;
    }
    return (comp <= k->frame_cap || mapGrow(&k->frame, &k->frame_cap, comp)) &&
           (raw <= k->raw_cap || mapGrow(&k->raw, &k->raw_cap, raw));
}

/* Decompress block k of stream s into k->raw and hash its pages into k->hashes (those
 * that may be restored, mayRestore: k->hashed tells): the checks of cbkDecodeBlock
 * but the manifest's, which the consumer makes against the manifest that applies to
 * the copy (the restored backup's, for a copy restored). */
static int decodeBlk(const struct stream *s, struct blk *k, ZSTD_DCtx *dctx, char *errmsg)
{
    const char *name = s->info->path;
    const uint32_t ps = s->ps;
    size_t want = (size_t)k->b.n * ps;
    char why[CAIRN_ERRMSG_SIZE];
    int rv = cbkInflate(s->codec, dctx, k->b.frame, k->b.comp, k->raw, want, why);
    if (rv != 0) {
        errorf(errmsg, "%s: block %llu at offset %llu: %s", name,
               (unsigned long long)k->b.index, (unsigned long long)k->b.offset, why);
        return rv;
    }
    for (uint32_t i = 0; i < k->b.n; i++) {
        k->hashed[i] = mayRestore(s->pl, (unsigned)(s - s->pl->act), k->pgnos[i]);
        if (k->hashed[i]) {
            k->hashes[i] = pageHash(k->raw + (size_t)i * ps, ps);
        }
    }
    return 0;
}

/* cbkScan's callback on a reader's thread: copy the block into the stream's next slot
 * (waiting for room), decompress it here when it is small, and publish it. */
static int streamPush(void *arg, const struct cbk_block *b, char *errmsg)
{
    struct stream *s = arg;
    struct pipe *pl = s->pl;
    const struct cbk_reader *r = &s->f.r;
    const uint32_t ps = r->h.page_size;
    struct blk *k;
    size_t grow;
    bool here = (size_t)b->n * ps <= INLINE_BYTES || pl->nworkers == 0;
    int rv;

    /* At once: the decoders of older copies of these pages may skip hashing them. */
    markNewest(pl, (unsigned)(s - pl->act), b);
    pthread_mutex_lock(&pl->mu);
    k = &s->ring[s->pushed % RING];
    for (;;) {
        bool over;
        /* A block decoded here is decoded from the reader's window: no frame kept. */
        grow = blkGrowth(k, b->n, ps, here ? 0 : b->comp);
        /* One block a file is always allowed: the merge needs the head of each. */
        over = grow > 0 && s->pushed > s->freed && pl->cap + grow > BUFFER_BUDGET;
        if (pl->stop || (s->pushed - s->freed < RING && !over)) {
            break;
        }
        s->waiting = true;
        s->need = over ? grow : 0;
        pl->short_of_room += over;
        pthread_cond_wait(&s->room, &pl->mu);
        pl->short_of_room -= over;
        s->waiting = false;
        s->need = 0;
    }
    if (pl->stop) {
        pthread_mutex_unlock(&pl->mu);
        errorf(errmsg, "%s: stopped", r->name);
        return CAIRN_ESHUTDOWN;
    }
    pl->cap += grow;
    pthread_mutex_unlock(&pl->mu);

    /* The slot is this thread's until published. */
    if (!blkReserve(k, b->n, ps, here ? 0 : b->comp)) {
        errorf(errmsg, "%s: out of memory", r->name);
        return CAIRN_ENOMEM;
    }
    memcpy(k->pgnos, b->pgnos, sizeof *b->pgnos * b->n);
    k->b = *b;
    k->b.pgnos = k->pgnos;
    k->end = b->offset + CBK_BLOCK_HEAD_SIZE(b->n) + b->comp + CBK_BLOCK_SUM_SIZE;
    if (here) {
        if (s->dctx == NULL) {
            s->dctx = ZSTD_createDCtx();
        }
        rv = decodeBlk(s, k, s->dctx, errmsg);
        k->b.frame = NULL; /* the window's, valid during this call only */
        if (rv != 0) {
            return rv;
        }
    } else {
        memcpy(k->frame, b->frame, b->comp);
        k->b.frame = k->frame;
    }

    pthread_mutex_lock(&pl->mu);
    __atomic_store_n(&k->state, here ? BLK_READY : BLK_QUEUED, __ATOMIC_RELEASE);
    s->pushed++;
    if (!here) {
        pl->queued++;
        if (pl->idle > 0) {
            pthread_cond_signal(&pl->work);
        }
    }
    consWake(pl, s, NULL);
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

/* Open the file of s (checked as repoOpenFileIn checks it, and that it is the one the
 * chain was resolved with), read its manifest when wanted (into pl->manifest, and *m),
 * and tell its driver that the blocks will be read from the start (a driver that
 * reads ahead starts fetching them). */
static int streamOpen(struct stream *s, uint64_t **m, char *msg)
{
    struct pipe *pl = s->pl;
    int rv = openMember(pl->repo, s->info, &s->f, msg);
    *m = NULL;
    if (rv == 0) {
        s->open = true;
        s->ps = s->f.r.h.page_size;
        s->codec = s->f.r.h.codec;
        if (pl->page_size != 0 && s->f.r.h.page_size != pl->page_size) {
            errorf(msg, "%s: pages of %u bytes, where the restored backup's are of %u",
                   s->info->path, s->f.r.h.page_size, pl->page_size);
            rv = CAIRN_ECORRUPT;
        }
    }
    if (rv == 0 && s->want_manifest) {
        if ((*m = newManifest(&s->f, msg)) == NULL) {
            rv = CAIRN_ENOMEM;
        } else if ((rv = cbkReadManifest(&s->f.r, *m, msg)) != 0) {
            free(*m);
            *m = NULL;
        } else {
            pthread_mutex_lock(&pl->mu);
            pl->manifest = *m;
            pl->manifest_ready = true;
            consWake(pl, NULL, NULL);
            pthread_mutex_unlock(&pl->mu);
        }
    }
    if (rv == 0 && s->f.r.io.willRead != NULL) {
        s->f.r.io.willRead(s->f.r.io.arg, 0);
    }
    return rv;
}

/* A reader: its file opened, then scanned whole. */
static void *streamMain(void *arg)
{
    struct stream *s = arg;
    struct pipe *pl = s->pl;
    char msg[CAIRN_ERRMSG_SIZE];
    uint64_t *m = NULL;
    int rv;

    rv = streamOpen(s, &m, msg);
    if (rv == 0) {
        rv = cbkScan(&s->f.r, m, streamPush, s, NULL, NULL, msg);
    }
    /* Read whole: its buffers go now, not when every file of the group is read. */
    if (s->open) {
        repoCloseFile(&s->f);
        s->open = false;
    }
    pthread_mutex_lock(&pl->mu);
    if (rv == 0) {
        s->ended = true;
        consWake(pl, s, NULL);
    } else {
        failLocked(pl, rv, msg);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

/* The queued block nearest the front of the merge (the smallest first page; the newer
 * file's on a tie), with its stream. pl->mu held, pl->queued > 0. */
static struct blk *pickQueued(struct pipe *pl, const struct stream **from)
{
    struct blk *best = NULL;
    for (unsigned i = 0; i < pl->ns; i++) {
        struct stream *s = &pl->act[i];
        for (uint64_t q = s->freed; q < s->pushed; q++) {
            struct blk *k = &s->ring[q % RING];
            if (blkState(k) == BLK_QUEUED && (best == NULL || k->b.pgnos[0] < best->b.pgnos[0])) {
                best = k;
                *from = s;
            }
        }
    }
    return best;
}

static void *workerMain(void *arg)
{
    struct pipe *pl = arg;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    char msg[CAIRN_ERRMSG_SIZE];
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        const struct stream *from = NULL;
        struct blk *k;
        int rv;
        while (!pl->stop && pl->queued == 0) {
            pl->idle++;
            pthread_cond_wait(&pl->work, &pl->mu);
            pl->idle--;
        }
        if (pl->stop) {
            break;
        }
        k = pickQueued(pl, &from);
        assert(k != NULL); /* every block counted in queued is in a ring */
        if (k == NULL) {
            pl->queued = 0; /* a release build goes on rather than spin */
            continue;
        }
        __atomic_store_n(&k->state, BLK_BUSY, __ATOMIC_RELAXED);
        pl->queued--;
        pl->busy++;
        pthread_mutex_unlock(&pl->mu);
        rv = decodeBlk(from, k, dctx, msg);
        pthread_mutex_lock(&pl->mu);
        pl->busy--;
        if (rv != 0) {
            failLocked(pl, rv, msg);
        } else {
            __atomic_store_n(&k->state, BLK_READY, __ATOMIC_RELEASE);
        }
        consWake(pl, NULL, k);
    }
    pthread_mutex_unlock(&pl->mu);
    ZSTD_freeDCtx(dctx);
    return NULL;
}

/* page_size: that every file must have (0: any). newest (limit bytes, the caller's,
 * which must outlive the pipe; NULL: a verification, which hashes every page): see
 * struct pipe. Workers start when the bytes to read repay them and there is more than
 * one CPU. */
static void pipeStart(struct pipe *pl, struct repo *repo, uint32_t page_size, unsigned char *newest,
                      uint64_t limit, uint64_t bytes)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    memset(pl, 0, sizeof *pl);
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->work, NULL);
    pthread_cond_init(&pl->cons, NULL);
    for (unsigned i = 0; i < MAX_STREAMS; i++) {
        pthread_cond_init(&pl->s[i].room, NULL);
    }
    pl->repo = repo;
    pl->page_size = page_size;
    pl->hash_pages = newest == NULL;
    pl->newest = newest;
    pl->limit = newest != NULL ? limit : 0;
    if (cpus > 1 && bytes >= PARALLEL_MIN_BYTES) {
        unsigned want = cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
        for (unsigned i = 0; i < want; i++) {
            if (startThread(&pl->workers[i], WORKER_STACK, workerMain, pl) != 0) {
                break; /* fewer workers, or none: still correct */
            }
            pl->nworkers++;
        }
    }
}

static void pipeEnd(struct pipe *pl)
{
    for (unsigned i = 0; i < MAX_STREAMS; i++) {
        if (pl->s[i].open) {
            repoCloseFile(&pl->s[i].f);
            pl->s[i].open = false;
        }
    }
    pthread_mutex_lock(&pl->mu);
    pl->stop = true;
    pthread_cond_broadcast(&pl->work);
    pthread_mutex_unlock(&pl->mu);
    for (unsigned i = 0; i < pl->nworkers; i++) {
        pthread_join(pl->workers[i], NULL);
    }
    for (unsigned i = 0; i < MAX_STREAMS; i++) {
        for (unsigned j = 0; j < RING; j++) {
            blkFree(&pl->s[i].ring[j]);
        }
        ZSTD_freeDCtx(pl->s[i].dctx);
    }
    ZSTD_freeDCtx(pl->dctx);
    free(pl->manifest);
    pthread_cond_destroy(&pl->work);
    pthread_cond_destroy(&pl->cons);
    for (unsigned i = 0; i < MAX_STREAMS; i++) {
        pthread_cond_destroy(&pl->s[i].room);
    }
    pthread_mutex_destroy(&pl->mu);
}

/* What the consumer does with the blocks, and where a restore writes. */
struct sink {
    struct pipe *pl;
    int fd;                         /* -1: verify, nothing is written */
    const char *name;               /* of the restored database, for messages */
    const uint64_t *expect;         /* the restored backup's manifest */
    const struct backup_info *last; /* the restored backup */
    uint64_t limit;                 /* its page count: pages past it are not restored */
    unsigned char *done;            /* a bit a page: written */
    uint32_t ps;
    struct progress *p;
    struct follow *fw; /* may be NULL */
    /* The run being gathered: bytes [run_off, run_off + run_len) of the file. */
    struct iovec iov[RUN_IOVS];
    int niov;
    uint64_t run_off;
    size_t run_len;
    /* Written since writeback was last started: [wb_lo, wb_hi), wb_bytes of it. */
    uint64_t wb_lo, wb_hi, wb_bytes;
    uint64_t fw_upto; /* what fw was last told */
};

static bool bitGet(const unsigned char *bits, uint64_t pg)
{
    return (bits[(pg - 1) / 8] & (1u << ((pg - 1) % 8))) != 0;
}

static void bitSet(unsigned char *bits, uint64_t pg)
{
    bits[(pg - 1) / 8] |= (unsigned char)(1u << ((pg - 1) % 8));
}

static void progressReport(struct sink *k)
{
    struct progress *p = k->p;
    uint64_t done = p->base;
    if (p->fn == NULL) {
        return;
    }
    for (unsigned i = 0; i < k->pl->ns; i++) {
        done += k->pl->act[i].done_bytes;
    }
    p->fn(p->arg, done, p->total);
}

/* Write the run gathered (if any), start writeback when enough was written, and
 * release the blocks consumed. */
static int flush(struct sink *k)
{
    struct pipe *pl = k->pl;
    char msg[CAIRN_ERRMSG_SIZE];
    bool wake = false;
    size_t need = 0;
    if (k->niov > 0) {
        int err = newfilePwritev(k->fd, k->iov, k->niov, k->run_off);
        if (err != 0) {
            if (err == ENOSPC || err == EDQUOT) {
                errorf(msg, "no space left on device writing %s", k->name);
            } else {
                errorf(msg, "write %s: %s", k->name, strerror(err));
            }
            return fail(pl, errorFromErrno(err), msg);
        }
        if (k->wb_bytes == 0) {
            k->wb_lo = k->run_off;
            k->wb_hi = k->run_off + k->run_len;
        } else {
            k->wb_lo = k->run_off < k->wb_lo ? k->run_off : k->wb_lo;
            k->wb_hi = k->run_off + k->run_len > k->wb_hi ? k->run_off + k->run_len : k->wb_hi;
        }
        k->wb_bytes += k->run_len;
        if (k->fw != NULL) {
            /* Runs go up the file but past what a newer group wrote. */
            bool next = k->run_off <= k->fw_upto;
            if (next) {
                k->fw_upto = k->run_off + k->run_len;
                followSet(k->fw, k->fw_upto, false, false);
            }
        }
        if (k->wb_bytes >= WRITEBACK_BYTES) {
            sync_file_range(k->fd, (off_t)k->wb_lo, (off_t)(k->wb_hi - k->wb_lo),
                            SYNC_FILE_RANGE_WRITE);
            k->wb_bytes = 0;
        }
        k->niov = 0;
        k->run_len = 0;
    }
    pthread_mutex_lock(&pl->mu);
    /* When a reader needs room, released buffers go back to the system until it has
     * that room; the others are kept for the next blocks. (A buffer given back is
     * faulted in again, page by page, when its slot's next block grows it: giving back
     * every released buffer whenever a reader was short made the benchmark's chain
     * restore map 116 MiB of new pages; this, 101 MiB.) */
    for (unsigned i = 0; pl->short_of_room > 0 && i < pl->ns; i++) {
        need = pl->act[i].waiting && pl->act[i].need > need ? pl->act[i].need : need;
    }
    for (unsigned i = 0; i < pl->ns; i++) {
        struct stream *s = &pl->act[i];
        for (; s->freed < s->head; s->freed++) {
            if (need > 0 && pl->cap + need > BUFFER_BUDGET) {
                struct blk *b = &s->ring[s->freed % RING];
                pl->cap -= blkCap(b);
                blkFree(b);
                wake = true;
            }
        }
        /* A reader waiting for its ring wakes once half of it is free: fewer
         * wakeups, each for several blocks. */
        if (s->waiting && !wake && s->pushed - s->freed <= RING / 2) {
            pthread_cond_signal(&s->room);
        }
    }
    for (unsigned i = 0; wake && i < pl->ns; i++) {
        if (pl->act[i].waiting) {
            pthread_cond_signal(&pl->act[i].room);
        }
    }
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

/* Whether the consumer holds what it must give back before it waits: a run not
 * written, or blocks consumed and not released (a reader may be waiting for their
 * room). */
static bool holding(const struct sink *k)
{
    if (k->niov > 0) {
        return true;
    }
    for (unsigned i = 0; i < k->pl->ns; i++) {
        if (k->pl->act[i].freed < k->pl->act[i].head) {
            return true;
        }
    }
    return false;
}

/* The head block of s, its page numbers known (decoded or not), into *out; NULL when s
 * has no more: every block consumed, and its scan passed. Writes the run gathered and
 * releases what was consumed before it waits. */
static int streamHead(struct sink *k, struct stream *s, struct blk **out)
{
    struct pipe *pl = k->pl;
    int rv = 0;
    if (s->head < s->avail) {
        *out = &s->ring[s->head % RING];
        return 0;
    }
    *out = NULL;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        if (pl->rv != 0) {
            rv = pl->rv;
            break;
        }
        if (s->pushed > s->head) {
            s->avail = s->pushed;
            *out = &s->ring[s->head % RING];
            break;
        }
        if (s->ended) {
            s->finished = true;
            s->done_bytes = s->info->size_bytes;
            break;
        }
        if (holding(k)) {
            pthread_mutex_unlock(&pl->mu);
            rv = flush(k);
            pthread_mutex_lock(&pl->mu);
            if (rv != 0) {
                break;
            }
            continue;
        }
        consWaitFor(pl, s, NULL);
    }
    pthread_mutex_unlock(&pl->mu);
    if (rv == 0 && s->finished) {
        progressReport(k);
    }
    return rv;
}

/* Make sure block b of s (its head) is decoded: decode it here when no worker has
 * taken it, else wait (having written the run gathered and released what was
 * consumed). */
static int blkReady(struct sink *k, struct stream *s, struct blk *b)
{
    struct pipe *pl = k->pl;
    char msg[CAIRN_ERRMSG_SIZE];
    int rv = 0;
    pthread_mutex_lock(&pl->mu);
    while (blkState(b) != BLK_READY && pl->rv == 0) {
        if (blkState(b) == BLK_QUEUED) {
            __atomic_store_n(&b->state, BLK_BUSY, __ATOMIC_RELAXED);
            pl->queued--;
            pthread_mutex_unlock(&pl->mu);
            if (pl->dctx == NULL) {
                pl->dctx = ZSTD_createDCtx();
            }
            rv = decodeBlk(s, b, pl->dctx, msg);
            pthread_mutex_lock(&pl->mu);
            if (rv != 0) {
                failLocked(pl, rv, msg);
            } else {
                __atomic_store_n(&b->state, BLK_READY, __ATOMIC_RELEASE);
            }
            continue;
        }
        if (holding(k)) {
            pthread_mutex_unlock(&pl->mu);
            rv = flush(k);
            pthread_mutex_lock(&pl->mu);
            continue;
        }
        consWaitFor(pl, NULL, b);
    }
    rv = pl->rv;
    pthread_mutex_unlock(&pl->mu);
    return rv;
}

/* Past the current page of s's head block b: at the block's end, the block is consumed
 * (decoded first: every block of a file applied is, restored or not). */
static int streamAdvance(struct sink *k, struct stream *s, struct blk *b)
{
    int rv;
    if (++s->pos < b->b.n) {
        return 0;
    }
    if (blkState(b) != BLK_READY && (rv = blkReady(k, s, b)) != 0) {
        return rv;
    }
    s->pos = 0;
    s->head++;
    s->done_bytes = b->end;
    progressReport(k);
    return 0;
}

/* Add page pg (ps bytes at page) to the run, writing the run first when pg does not
 * follow it or it is long enough. */
static int runAdd(struct sink *k, unsigned char *page, uint64_t pg)
{
    uint64_t off = (pg - 1) * k->ps;
    int rv;
    if (k->niov > 0 && off == k->run_off + k->run_len && k->run_len < RUN_BYTES) {
        struct iovec *v = &k->iov[k->niov - 1];
        if ((unsigned char *)v->iov_base + v->iov_len == page) {
            v->iov_len += k->ps;
            k->run_len += k->ps;
            return 0;
        }
        if (k->niov < RUN_IOVS) {
            k->iov[k->niov].iov_base = page;
            k->iov[k->niov].iov_len = k->ps;
            k->niov++;
            k->run_len += k->ps;
            return 0;
        }
    }
    if (k->niov > 0 && (rv = flush(k)) != 0) {
        return rv;
    }
    k->run_off = off;
    k->iov[0].iov_base = page;
    k->iov[0].iov_len = k->ps;
    k->niov = 1;
    k->run_len = k->ps;
    return 0;
}

/* The restore's consumer: the files of the group (pl->act[0] the newest) merged by page
 * number, each page taken from the newest file that holds it, checked against the
 * restored backup's manifest, and written, unless a newer group wrote it or it is past
 * the restored database's end. */
static int mergeGroup(struct sink *k)
{
    struct pipe *pl = k->pl;
    char msg[CAIRN_ERRMSG_SIZE];
    int rv;
    for (;;) {
        struct stream *best = NULL;
        struct blk *bb = NULL;
        unsigned first = 0;
        uint64_t pg = 0;
        for (unsigned i = 0; i < pl->ns; i++) {
            struct stream *s = &pl->act[i];
            struct blk *b;
            if (s->finished) {
                continue;
            }
            if ((rv = streamHead(k, s, &b)) != 0) {
                return rv;
            }
            if (b != NULL && (best == NULL || b->b.pgnos[s->pos] < pg)) {
                best = s;
                bb = b;
                first = i;
                pg = b->b.pgnos[s->pos];
            }
        }
        if (best == NULL) {
            break;
        }
        if (pg <= k->limit && !bitGet(k->done, pg)) {
            if (blkState(bb) != BLK_READY && (rv = blkReady(k, best, bb)) != 0) {
                return rv;
            }
            unsigned char *page = bb->raw + (size_t)best->pos * k->ps;
            uint64_t h = bb->hashed[best->pos] ? bb->hashes[best->pos] : pageHash(page, k->ps);
            if (h != k->expect[pg - 1]) {
                if (first == 0 && best->info == k->last) {
                    errorf(msg,
                           "%s: block %llu at offset %llu: page %llu does not match the manifest",
                           best->info->path, (unsigned long long)bb->b.index,
                           (unsigned long long)bb->b.offset, (unsigned long long)pg);
                } else {
                    errorf(msg,
                           "%s: block %llu at offset %llu: page %llu, the newest copy in the "
                           "chain, does not match the manifest of the restored backup %s (the "
                           "chain does not add up)",
                           best->info->path, (unsigned long long)bb->b.index,
                           (unsigned long long)bb->b.offset, (unsigned long long)pg, k->last->id);
                }
                return fail(pl, CAIRN_ECORRUPT, msg);
            }
            if ((rv = runAdd(k, page, pg)) != 0) {
                return rv;
            }
            bitSet(k->done, pg);
        }
        /* This copy, and the older ones behind it, are done with. */
        for (unsigned i = first; i < pl->ns; i++) {
            struct stream *s = &pl->act[i];
            struct blk *b;
            if (s->finished || s->head == s->avail) {
                continue;
            }
            b = &s->ring[s->head % RING];
            if (b->b.pgnos[s->pos] == pg && (rv = streamAdvance(k, s, b)) != 0) {
                return rv;
            }
        }
    }
    return flush(k);
}

/* The verification's consumer: every page of the one file (pl->act[0]) against its own
 * manifest. */
static int checkGroup(struct sink *k)
{
    struct pipe *pl = k->pl;
    struct stream *s = &pl->act[0];
    char msg[CAIRN_ERRMSG_SIZE];
    int rv;
    for (;;) {
        struct blk *b;
        if ((rv = streamHead(k, s, &b)) != 0) {
            return rv;
        }
        if (b == NULL) {
            return 0;
        }
        if ((rv = blkReady(k, s, b)) != 0) {
            return rv;
        }
        for (uint32_t i = 0; i < b->b.n; i++) {
            uint32_t pg = b->b.pgnos[i];
            if (b->hashes[i] != pl->manifest[pg - 1]) {
                errorf(msg, "%s: block %llu at offset %llu: page %u does not match the manifest",
                       s->info->path, (unsigned long long)b->b.index,
                       (unsigned long long)b->b.offset, pg);
                return fail(pl, CAIRN_ECORRUPT, msg);
            }
        }
        s->pos = b->b.n - 1;
        if ((rv = streamAdvance(k, s, b)) != 0 || (rv = flush(k)) != 0) {
            return rv;
        }
    }
}

/* Make s the stream of info, nothing read. */
static void streamReset(struct stream *s, struct pipe *pl, const struct backup_info *info,
                        bool want_manifest)
{
    s->pl = pl;
    s->info = info;
    s->want_manifest = want_manifest;
    s->open = false;
    s->pushed = s->freed = s->head = s->avail = 0;
    s->pos = 0;
    s->ended = s->waiting = s->finished = false;
    s->done_bytes = 0;
}

/* Run one group: the n files at files[] (oldest first; n <= MAX_STREAMS) read at once,
 * the newest as pl->act[0], consumed by fn. want_manifest: the newest file's manifest is
 * read into pl->manifest, which fn needs. On failure errmsg says what failed first. */
static int pipeGroup(struct pipe *pl, const struct backup_info *files, size_t n,
                     bool want_manifest, struct sink *k, int (*fn)(struct sink *), char *errmsg)
{
    char msg[CAIRN_ERRMSG_SIZE];
    int rv = 0;

    assert(n >= 1 && n <= MAX_STREAMS);
    pthread_mutex_lock(&pl->mu);
    pl->act = &pl->s[0];
    pl->ns = (unsigned)n;
    for (unsigned i = 0; i < n; i++) {
        struct stream *s = &pl->act[i];
        if (s->open) {
            repoCloseFile(&s->f);
        }
        streamReset(s, pl, &files[n - 1 - i], i == 0 && want_manifest);
    }
    if (pl->newest != NULL) {
        memset(pl->newest, NEWEST_NONE, (size_t)pl->limit);
    }
    pthread_mutex_unlock(&pl->mu);
    for (unsigned i = 0; i < n; i++) {
        struct stream *s = &pl->act[i];
        s->started = startThread(&s->th, READER_STACK, streamMain, s) == 0;
        if (!s->started) {
            errorf(msg, "restore: cannot start a thread to read %s", s->info->path);
            rv = fail(pl, CAIRN_ENOMEM, msg);
            break;
        }
    }
    if (rv == 0 && want_manifest) {
        pthread_mutex_lock(&pl->mu);
        while (!pl->manifest_ready && pl->rv == 0) {
            consWait(pl);
        }
        rv = pl->rv;
        pthread_mutex_unlock(&pl->mu);
        k->expect = pl->manifest;
    }
    if (rv == 0) {
        rv = fn(k);
    }
    /* On failure: the readers stop, and no worker may still hold a block of theirs. */
    pthread_mutex_lock(&pl->mu);
    if (rv != 0) {
        failLocked(pl, rv, "");
    }
    while (pl->busy > 0) {
        consWait(pl);
    }
    pthread_mutex_unlock(&pl->mu);
    for (unsigned i = 0; i < n; i++) {
        struct stream *s = &pl->act[i];
        if (s->started) {
            pthread_join(s->th, NULL);
            s->started = false;
        }
        if (s->open) {
            repoCloseFile(&s->f);
            s->open = false;
        }
    }
    if (rv != 0) {
        memcpy(errmsg, pl->errmsg, CAIRN_ERRMSG_SIZE);
    }
    return rv;
}

/* Check a whole file; `deep` also decompresses every block and checks every page
 * against the file's own manifest (on pl, which writes nothing). */
static int checkMember(struct repo *repo, const struct backup_info *info, struct pipe *pl,
                       struct progress *p, char *errmsg)
{
    struct repo_file f;
    int rv;
    if (pl != NULL) {
        struct sink *k = calloc(1, sizeof *k);
        if (k == NULL) {
            errorf(errmsg, "out of memory checking %s", info->path);
            return CAIRN_ENOMEM;
        }
        k->pl = pl;
        k->fd = -1;
        k->p = p;
        rv = pipeGroup(pl, info, 1, true, k, checkGroup, errmsg);
        free(k);
        free(pl->manifest);
        pl->manifest = NULL;
        pl->manifest_ready = false;
        p->base += info->size_bytes;
        return rv;
    }
    if ((rv = openMember(repo, info, &f, errmsg)) != 0) {
        return rv;
    }
    rv = cbkScan(&f.r, NULL, NULL, NULL, onOffset, p, errmsg);
    repoCloseFile(&f);
    p->base += info->size_bytes;
    return rv;
}

/* The newest backup of the chain that stores every page: what came before it would
 * be overwritten anyway. */
static size_t applyStart(const struct backup_info *chain, size_t n)
{
    size_t start = n - 1;
    while (start > 0 && chain[start].pages != chain[start].page_count) {
        start--;
    }
    return start;
}

/* Bytes of the files from chain[from] on. */
static uint64_t chainBytes(const struct backup_info *chain, size_t from, size_t n)
{
    uint64_t total = 0;
    for (size_t i = from; i < n; i++) {
        total += chain[i].size_bytes;
    }
    return total;
}

/* Write the chain's pages into fd (a new empty file; name for messages), from the
 * newest backup back to applyStart(): the pipeline above, in groups of MAX_STREAMS
 * files, newest first. Every page of the restored database must have been written. */
static int applyChain(struct repo *repo, const struct backup_info *chain, size_t n, int fd,
                      const char *name, struct follow *fw, struct progress *p, char *errmsg)
{
    const struct backup_info *last = &chain[n - 1];
    const uint64_t size = last->page_count * last->page_size;
    size_t start = applyStart(chain, n);
    struct pipe *pl;
    struct sink *k;
    unsigned char *newest;
    struct stat st;
    int rv = 0;

    pl = malloc(sizeof *pl);
    newest = malloc(last->page_count > 0 ? (size_t)last->page_count : 1);
    if ((k = calloc(1, sizeof *k)) == NULL || pl == NULL || newest == NULL ||
        (k->done = calloc((size_t)(last->page_count / 8 + 1), 1)) == NULL) {
        free(newest);
        free(pl);
        if (k != NULL) {
            free(k->done);
        }
        free(k);
        errorf(errmsg, "out of memory restoring %s", name);
        return CAIRN_ENOMEM;
    }
    /* The file's final size at once: no space is found missing halfway, and the file
     * system lays the file out in one piece. */
    if (size > 0 && fallocate(fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS) {
        if (errno == ENOSPC || errno == EDQUOT) {
            errorf(errmsg, "no space left on device for %s (%llu bytes)", name,
                   (unsigned long long)size);
        } else {
            errorf(errmsg, "allocate %llu bytes for %s: %s", (unsigned long long)size, name,
                   strerror(errno));
        }
        rv = errorFromErrno(errno);
        free(k->done);
        free(k);
        free(pl);
        free(newest);
        return rv;
    }
    pipeStart(pl, repo, last->page_size, newest, last->page_count, chainBytes(chain, start, n));
    k->pl = pl;
    k->fd = fd;
    k->name = name;
    k->last = last;
    k->limit = last->page_count;
    k->ps = last->page_size;
    k->p = p;
    k->fw = fw;
    for (size_t hi = n; rv == 0 && hi > start;) {
        size_t lo = hi - start > MAX_STREAMS ? hi - MAX_STREAMS : start;
        rv = pipeGroup(pl, &chain[lo], hi - lo, hi == n, k, mergeGroup, errmsg);
        p->base += chainBytes(chain, lo, hi);
        hi = lo;
    }
    for (uint64_t pg = 1; rv == 0 && pg <= last->page_count; pg++) {
        if (!bitGet(k->done, pg)) {
            errorf(errmsg, "%s: page %llu of the restored database is in no backup of its chain",
                   last->path, (unsigned long long)pg);
            rv = CAIRN_ECORRUPT;
        }
    }
    pipeEnd(pl);
    free(pl);
    free(newest);
    free(k->done);
    free(k);
    if (rv == 0 && ftruncate(fd, (off_t)size) != 0) {
        errorf(errmsg, "truncate %s: %s", name, strerror(errno));
        rv = errorFromErrno(errno);
    }
    if (rv == 0 && (fstat(fd, &st) != 0 || (uint64_t)st.st_size != size)) {
        errorf(errmsg, "restored file %s is not %llu pages of %u bytes", name,
               (unsigned long long)last->page_count, last->page_size);
        rv = CAIRN_EIO;
    }
    return rv;
}

/* ---- SQLite's check of the new file ---- */

/* SQLite reads the new file through ROVFS: read-only, no locks, no journal, nothing
 * beside it, and opened by its path as the system resolves it. The file may have no
 * name but /proc/self/fd/N (newfile.h), a link that SQLite's default VFS resolves
 * itself, to "DIR/#123 (deleted)", or refuses to follow (O_NOFOLLOW). Not mmap: the
 * pages of a file mapped count in the process's resident size. */
#define ROVFS "cairn-restore-ro"

/* SQLite reads a page at a time; once the file is complete, it is read RO_CHUNK bytes
 * at a time into RO_CHUNKS buffers, which serve the pages around: a system call for
 * many pages rather than each. SQLite takes those pages where they lie, not copied
 * (roFetch: its memory-mapped reads, though nothing is mapped). While the file is being written, a page at a time: a
 * chunk would be read again for every page the writer adds to it. (Not mmap: the
 * pages a mapping holds count in the process's resident size, and mapping and
 * unmapping windows of the file measured no faster; mapped by the read-ahead thread
 * with MAP_POPULATE, the check's copies out of the mapping cost it more than the
 * kernel's pread had, 4 KiB page-table entries on this virtual machine.)
 *
 * A check of a whole database reads it twice, each time mostly in runs of
 * neighbouring pages: the b-tree pass (SQLite 3.40's checkTreePage) takes each page's
 * children from the last to the first, so down the file; the scan of each table's
 * rows, up it. It can hardly start before the last page is written (the b-tree pass
 * wants the file's end first), so most of it runs after the writing, beside the
 * fsync, on one CPU, and more than half of that CPU went to the kernel copying the
 * file to it (perf, docs/BENCHMARKS.md "Backups"). So once the file is complete, a
 * thread of its own (roAhead) reads the next RO_AHEAD chunks in the direction the
 * check goes into the buffers, on the other CPU, while the check works on the chunk
 * it is in. A read far from that run (an interior page of a tree, the start of the
 * next pass) reads its page alone; the run moves there when the next read is in the
 * same chunk or beside it. */
#define RO_CHUNK (256u << 10)
#define RO_CHUNKS 16
#define RO_AHEAD 8
#define RO_AHEAD_STACK (256u << 10)
#define RO_MAP ((size_t)RO_CHUNKS * RO_CHUNK + 4096)

enum { RO_EMPTY, RO_LOADING, RO_READY };

struct roChunk {
    unsigned char *p; /* RO_CHUNK bytes of roCache.mem, for the cache's life */
    uint64_t idx;     /* chunk number: bytes [idx * RO_CHUNK, ...) of the file */
    size_t len;
    int state; /* RO_* */
    uint64_t used;
    /* Pages of it SQLite holds (roFetch, until roUnfetch) or a read copies out: it is
     * not reloaded while any is. Changed with atomics, by the check's thread only;
     * read by roAhead under mu. */
    int pins;
};

/* The chunks of a complete file and the thread that reads ahead into them. */
struct roCache {
    pthread_mutex_t mu;
    pthread_cond_t ahead; /* roAhead: the run moved, or stop */
    pthread_cond_t ready; /* readers: a chunk was loaded */
    int fd;
    uint64_t size;
    uint64_t nchunks;
    struct roChunk c[RO_CHUNKS];
    uint64_t clock;
    int64_t cursor; /* the chunk of the run the check goes through; -1: none yet */
    int dir;        /* +1 up the file, -1 down */
    int64_t cand;   /* a chunk read far from the run: the run moves there if it goes on */
    /* roAhead waits, its window full, since the run was at slept_at going slept_dir:
     * it is woken when the run has gone half a window on, turned or jumped (not at
     * every chunk: the two threads would take turns at each). */
    bool ahead_waiting;
    int64_t slept_at;
    int slept_dir;
    bool stop;
    bool tried;   /* to start roAhead */
    bool started; /* ... and did */
    pthread_t th;
    /* The chunks' bytes, one mapping (RO_MAP bytes): a chunk is found by a page's
     * address (roUnpin), and each starts on a page. Reading into a buffer that did
     * not (a malloc'ed one, 16 bytes into a page) made the kernel's copies of the
     * file to it four times as slow: 1 CPU-s more per restore of the benchmark's
     * chain. A page of zeros ends it: SQLite's own page buffers have 8 bytes of
     * zeros after them for its decoding of a damaged page, which may read a little
     * past the page's end; a page lent to it (roFetch) is followed by the next
     * chunk's bytes, or by these. */
    unsigned char *mem;
};

struct roFile {
    sqlite3_file base;
    int fd;
    struct follow *fw; /* NULL: the file is complete */
    bool complete;     /* written whole */
    uint64_t size;
    struct roCache *cache; /* NULL: a page at a time */
    /* The chunk of the run's cursor, as the last read found it (NULL: none): while the
     * cursor stays at cur_idx, it is in the window, which roAhead never reloads, so
     * the pages of the chunk (most reads) are copied without cache->mu. cursor and cand
     * are written by this thread only (roMove), under the lock. */
    struct roChunk *cur_k;
    uint64_t cur_idx;
    /* The page roFetch found in no chunk, which SQLite then reads (roRead): read
     * alone, not looked for again, which would move the run there. -1: none. */
    sqlite3_int64 unfetched;
};

/* The chunk numbered idx, if a slot holds it or is loading it. mu held. */
static struct roChunk *roFind(struct roCache *c, uint64_t idx)
{
    for (int i = 0; i < RO_CHUNKS; i++) {
        if (c->c[i].state != RO_EMPTY && c->c[i].idx == idx) {
            return &c->c[i];
        }
    }
    return NULL;
}

/* Whether chunk idx is in the run's window: the cursor and the RO_AHEAD after it. */
static bool roInWindow(const struct roCache *c, uint64_t idx)
{
    int64_t d = ((int64_t)idx - c->cursor) * c->dir;
    return c->cursor >= 0 && d >= 0 && d <= RO_AHEAD;
}

/* A slot to load into: an empty one, else the least recently used one outside the
 * window and not loading; NULL when there is none. mu held. */
static struct roChunk *roVictim(struct roCache *c)
{
    struct roChunk *v = NULL;
    for (int i = 0; i < RO_CHUNKS; i++) {
        struct roChunk *k = &c->c[i];
        if (k->state == RO_EMPTY) {
            return k;
        }
        if (k->state == RO_READY && !roInWindow(c, k->idx) &&
            __atomic_load_n(&k->pins, __ATOMIC_ACQUIRE) == 0 && (v == NULL || k->used < v->used)) {
            v = k;
        }
    }
    return v;
}

/* Read chunk k (RO_LOADING, claimed by this thread) with mu released; RO_READY after,
 * or RO_EMPTY when it cannot be read (the reader then reads its page alone). mu held. */
static bool roLoad(struct roCache *c, struct roChunk *k)
{
    uint64_t off = k->idx * RO_CHUNK;
    size_t len = c->size - off < RO_CHUNK ? (size_t)(c->size - off) : RO_CHUNK;
    bool ok;
    pthread_mutex_unlock(&c->mu);
    assert(__atomic_load_n(&k->pins, __ATOMIC_ACQUIRE) == 0);
    ok = libPreadFull(c->fd, k->p, len, off) == 0;
    pthread_mutex_lock(&c->mu);
    k->len = len;
    k->state = ok ? RO_READY : RO_EMPTY;
    k->used = ++c->clock;
    pthread_cond_broadcast(&c->ready);
    return ok;
}

static void *roAhead(void *arg)
{
    struct roCache *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct roChunk *k = NULL;
        uint64_t want = 0;
        for (int j = 1; c->cursor >= 0 && j <= RO_AHEAD; j++) {
            int64_t idx = c->cursor + j * c->dir;
            if (idx < 0 || (uint64_t)idx >= c->nchunks) {
                break;
            }
            if (roFind(c, (uint64_t)idx) == NULL) {
                want = (uint64_t)idx;
                k = roVictim(c);
                break;
            }
        }
        if (k == NULL) {
            c->ahead_waiting = true;
            c->slept_at = c->cursor;
            c->slept_dir = c->dir;
            pthread_cond_wait(&c->ahead, &c->mu);
            c->ahead_waiting = false;
            continue;
        }
        k->idx = want;
        k->state = RO_LOADING;
        if (!roLoad(c, k)) {
            break; /* the check reads for itself */
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void roCacheFree(struct roCache *c);

static struct roCache *roCacheNew(int fd, uint64_t size)
{
    struct roCache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->ahead, NULL);
    pthread_cond_init(&c->ready, NULL);
    c->fd = fd;
    c->size = size;
    c->nchunks = (size + RO_CHUNK - 1) / RO_CHUNK;
    c->cursor = -1;
    c->cand = -1;
    c->dir = 1;
    /* Untouched, the mapping takes no memory until a chunk is read into it. */
    c->mem = mmap(NULL, RO_MAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->mem == MAP_FAILED) {
        c->mem = NULL;
        roCacheFree(c);
        return NULL;
    }
    for (int i = 0; i < RO_CHUNKS; i++) {
        c->c[i].p = c->mem + (size_t)i * RO_CHUNK;
    }
    return c;
}

static void roCacheFree(struct roCache *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->ahead);
    pthread_mutex_unlock(&c->mu);
    if (c->started) {
        pthread_join(c->th, NULL);
    }
    for (int i = 0; i < RO_CHUNKS; i++) {
        assert(c->c[i].pins == 0);
    }
    if (c->mem != NULL) {
        munmap(c->mem, RO_MAP);
    }
    pthread_cond_destroy(&c->ready);
    pthread_cond_destroy(&c->ahead);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int roClose(sqlite3_file *f)
{
    struct roFile *r = (struct roFile *)f;
    roCacheFree(r->cache);
    close(r->fd);
    return SQLITE_OK;
}

/* The run the check goes through, after a read of chunk idx. mu held. */
static void roMove(struct roCache *c, uint64_t idx)
{
    int64_t i = (int64_t)idx;
    if (c->cursor >= 0 && (i == c->cursor + 1 || i == c->cursor - 1)) {
        c->dir = (int)(i - c->cursor);
    } else if (i != c->cursor) {
        if (c->cand >= 0 && (i == c->cand + 1 || i == c->cand - 1)) {
            c->dir = (int)(i - c->cand);
        } else if (i != c->cand) {
            c->cand = i; /* a page alone, far from the run: it stays where it is */
            return;
        }
    }
    c->cand = -1;
    c->cursor = i;
    if (c->ahead_waiting && (c->dir != c->slept_dir || c->cursor - c->slept_at >= RO_AHEAD / 2 ||
                             c->slept_at - c->cursor >= RO_AHEAD / 2)) {
        pthread_cond_signal(&c->ahead);
    }
}

/* Bytes [off, off + n) in a chunk, pinned (roUnpin releases them), or NULL when they
 * are to be read from the file (the file not complete, across two chunks, past its
 * end, or a page far from the run, which is read alone). */
static const unsigned char *roChunked(struct roFile *r, int n, uint64_t off)
{
    struct roCache *c = r->cache;
    uint64_t idx = off / RO_CHUNK;
    struct roChunk *k;
    const unsigned char *p = NULL;
    bool tried = false;
    if (!r->complete && r->fw != NULL) {
        pthread_mutex_lock(&r->fw->mu);
        r->complete = r->fw->end && !r->fw->failed;
        pthread_mutex_unlock(&r->fw->mu);
    }
    if (!r->complete || c == NULL || off + (uint64_t)n > (idx + 1) * RO_CHUNK ||
        off + (uint64_t)n > r->size) {
        return NULL;
    }
    if (r->cur_k != NULL && idx == r->cur_idx && c->cand < 0) {
        /* The cursor's chunk is in the window, which roAhead does not reload. */
        __atomic_add_fetch(&r->cur_k->pins, 1, __ATOMIC_ACQ_REL);
        return r->cur_k->p + (off - idx * RO_CHUNK);
    }
    pthread_mutex_lock(&c->mu);
    if (!c->tried) {
        /* Without the thread, chunks are still read, by the check itself. */
        c->tried = true;
        c->started = startThread(&c->th, RO_AHEAD_STACK, roAhead, c) == 0;
    }
    roMove(c, idx);
    for (;;) {
        k = roFind(c, idx);
        if (k != NULL && k->state == RO_LOADING) {
            pthread_cond_wait(&c->ready, &c->mu);
            continue;
        }
        if (k == NULL && c->cand < 0 && !tried && (k = roVictim(c)) != NULL) {
            /* In the run, and not read ahead (yet): read it here. */
            k->idx = idx;
            k->state = RO_LOADING;
            tried = true;
            roLoad(c, k);
            continue;
        }
        break;
    }
    if (k != NULL && k->state == RO_READY) {
        k->used = ++c->clock;
        __atomic_add_fetch(&k->pins, 1, __ATOMIC_ACQ_REL);
        p = k->p + (off - idx * RO_CHUNK);
    }
    r->cur_k = p != NULL && (int64_t)idx == c->cursor && c->cand < 0 ? k : NULL;
    r->cur_idx = idx;
    pthread_mutex_unlock(&c->mu);
    return p;
}

/* Release bytes that roChunked returned at p. */
static void roUnpin(struct roCache *c, const void *p)
{
    size_t at = (size_t)((const unsigned char *)p - c->mem);
    int was;
    assert((const unsigned char *)p >= c->mem && at < (size_t)RO_CHUNKS * RO_CHUNK);
    was = __atomic_fetch_sub(&c->c[at / RO_CHUNK].pins, 1, __ATOMIC_ACQ_REL);
    assert(was > 0);
    (void)was;
}

static int roRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    struct roFile *r = (struct roFile *)f;
    const unsigned char *p;
    int err;
    if (off < 0) {
        return SQLITE_IOERR_READ;
    }
    if (r->fw != NULL && followWait(r->fw, (uint64_t)off, (uint64_t)n) != 0) {
        return SQLITE_IOERR_READ;
    }
    if (off == r->unfetched) {
        r->unfetched = -1;
    } else if ((p = roChunked(r, n, (uint64_t)off)) != NULL) {
        memcpy(buf, p, (size_t)n);
        roUnpin(r->cache, p);
        return SQLITE_OK;
    }
    err = libPreadFull(r->fd, buf, (size_t)n, (uint64_t)off);
    if (err == -1) {
        /* Past the end: SQLite wants the rest zeroed. */
        struct stat st;
        sqlite3_int64 have = 0;
        if (fstat(r->fd, &st) == 0 && st.st_size > off) {
            have = st.st_size - off < n ? st.st_size - off : n;
        }
        if (libPreadFull(r->fd, buf, (size_t)have, (uint64_t)off) != 0) {
            return SQLITE_IOERR_READ;
        }
        memset((char *)buf + have, 0, (size_t)(n - have));
        return SQLITE_IOERR_SHORT_READ;
    }
    return err == 0 ? SQLITE_OK : SQLITE_IOERR_READ;
}

/* SQLite's memory-mapped reads (PRAGMA mmap_size, which integrityCheck sets): a page
 * that a chunk holds is handed to SQLite where it lies, pinned until SQLite lets it
 * go, rather than copied (the copies were a quarter of the check thread's time after
 * the writing). quick_check of the benchmark's 1 GiB database alone, 12 runs each in
 * turns: 0.70 CPU-s lent and prefetched, 0.70 lent, 0.77 copied (docs/BENCHMARKS.md,
 * "Backups"). Else *pp is NULL and SQLite reads the
 * page itself (roRead), which also waits for a page not written yet. SQLite never
 * asks for page 1 this way, and treats the pages as read-only. */
static int roFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    struct roFile *r = (struct roFile *)f;
    *pp = NULL;
    if (off >= 0 && n > 0 && r->cache != NULL) {
        *pp = (void *)(uintptr_t)roChunked(r, n, (uint64_t)off);
    }
    /* The page's lines asked for at once: SQLite's decoding goes from cell to cell,
     * each a cache miss otherwise (the copy had streamed them). */
    for (int i = 0; *pp != NULL && i < n; i += 64) {
        __builtin_prefetch((const char *)*pp + i);
    }
    r->unfetched = *pp == NULL ? off : -1;
    return SQLITE_OK;
}

/* p NULL: SQLite drops its mapping, after letting go of every page (nothing to do). */
static int roUnfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    (void)off;
    if (p != NULL) {
        roUnpin(((struct roFile *)f)->cache, p);
    }
    return SQLITE_OK;
}

static int roWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    (void)f, (void)buf, (void)n, (void)off;
    return SQLITE_READONLY;
}

static int roTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    (void)f, (void)size;
    return SQLITE_READONLY;
}

static int roSync(sqlite3_file *f, int flags)
{
    (void)f, (void)flags;
    return SQLITE_OK;
}

static int roFileSize(sqlite3_file *f, sqlite3_int64 *size)
{
    *size = (sqlite3_int64)((struct roFile *)f)->size;
    return SQLITE_OK;
}

static int roLock(sqlite3_file *f, int level)
{
    (void)f, (void)level;
    return SQLITE_OK;
}

static int roCheckReservedLock(sqlite3_file *f, int *out)
{
    (void)f;
    *out = 0;
    return SQLITE_OK;
}

static int roFileControl(sqlite3_file *f, int op, void *arg)
{
    (void)f, (void)op, (void)arg;
    return SQLITE_NOTFOUND;
}

static int roSectorSize(sqlite3_file *f)
{
    (void)f;
    return 4096;
}

static int roDeviceCharacteristics(sqlite3_file *f)
{
    (void)f;
    return SQLITE_IOCAP_IMMUTABLE;
}

static const sqlite3_io_methods roMethods = {
    .iVersion = 3, /* for xFetch; no shared memory: the file is immutable, no WAL */
    .xClose = roClose,
    .xRead = roRead,
    .xWrite = roWrite,
    .xTruncate = roTruncate,
    .xSync = roSync,
    .xFileSize = roFileSize,
    .xLock = roLock,
    .xUnlock = roLock,
    .xCheckReservedLock = roCheckReservedLock,
    .xFileControl = roFileControl,
    .xSectorSize = roSectorSize,
    .xDeviceCharacteristics = roDeviceCharacteristics,
    .xFetch = roFetch,
    .xUnfetch = roUnfetch,
};

static int roOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    struct roFile *r = (struct roFile *)f;
    (void)vfs;
    f->pMethods = NULL;
    if (name == NULL || (flags & SQLITE_OPEN_MAIN_DB) == 0 || (flags & SQLITE_OPEN_READWRITE)) {
        return SQLITE_CANTOPEN;
    }
    memset(r, 0, sizeof *r);
    r->unfetched = -1;
    if ((r->fd = open(name, O_RDONLY | O_CLOEXEC)) < 0) {
        return SQLITE_CANTOPEN;
    }
    /* As SQLite's own memvfs takes its buffer: an address in the URI. */
    r->fw = (struct follow *)(uintptr_t)sqlite3_uri_int64(name, "follow", 0);
    if (r->fw != NULL) {
        r->size = r->fw->size;
    } else {
        struct stat st;
        if (fstat(r->fd, &st) != 0) {
            close(r->fd);
            return SQLITE_CANTOPEN;
        }
        r->size = (uint64_t)st.st_size;
        r->complete = true;
    }
    /* "&chunks=0": a page at a time (integrityCheck says why). */
    if (sqlite3_uri_boolean(name, "chunks", 1)) {
        r->cache = roCacheNew(r->fd, r->size); /* NULL: a page at a time */
    }
    if (out != NULL) {
        *out = SQLITE_OPEN_READONLY;
    }
    f->pMethods = &roMethods;
    return SQLITE_OK;
}

static int roDelete(sqlite3_vfs *vfs, const char *name, int sync)
{
    (void)vfs, (void)name, (void)sync;
    return SQLITE_IOERR_DELETE;
}

static int roAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs, (void)name, (void)flags;
    *out = 0; /* no journal, no WAL */
    return SQLITE_OK;
}

static int roFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    if ((int)strlen(name) >= n) {
        return SQLITE_CANTOPEN;
    }
    memcpy(out, name, strlen(name) + 1);
    return SQLITE_OK;
}

static sqlite3_vfs roVfs;
static pthread_once_t roOnce = PTHREAD_ONCE_INIT;

static void roRegister(void)
{
    /* The clock, randomness and sleep of the default VFS, which use nothing of its
     * struct but what the copy keeps. */
    roVfs = *sqlite3_vfs_find(NULL);
    roVfs.iVersion = 2;
    roVfs.zName = ROVFS;
    roVfs.pNext = NULL;
    roVfs.szOsFile = (int)sizeof(struct roFile);
    roVfs.xOpen = roOpen;
    roVfs.xDelete = roDelete;
    roVfs.xAccess = roAccess;
    roVfs.xFullPathname = roFullPathname;
    sqlite3_vfs_register(&roVfs, 0);
}

/* "file:<path>?immutable=1": nobody else has the file, so SQLite needs no locks, no
 * -shm and no -wal (the image may be in WAL mode); "&follow=ADDRESS" when fw is not
 * NULL; "&chunks=0" without chunks: no read-ahead, a page at a time. */
static int fileUri(const char *path, const struct follow *fw, bool chunks, char *out,
                   size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    o += (size_t)snprintf(out, cap, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c != '\0'; c++) {
        if (o + 4 >= cap) {
            return -1;
        }
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '/' || *c == '.' || *c == '-' || *c == '_' || *c == '~') {
            out[o++] = (char)*c;
        } else {
            out[o++] = '%';
            out[o++] = hex[*c >> 4];
            out[o++] = hex[*c & 15];
        }
    }
    if ((size_t)snprintf(out + o, cap - o, "?immutable=1") >= cap - o) {
        return -1;
    }
    o += strlen(out + o);
    if (fw != NULL && (size_t)snprintf(out + o, cap - o, "&follow=%llu",
                                       (unsigned long long)(uintptr_t)fw) >= cap - o) {
        return -1;
    }
    o += strlen(out + o);
    if (!chunks && (size_t)snprintf(out + o, cap - o, "&chunks=0") >= cap - o) {
        return -1;
    }
    return 0;
}

const char *backupCheckName(int check)
{
    return check == RESTORE_CHECK_FULL ? "integrity_check" : "quick_check";
}

/* PRAGMA quick_check or integrity_check (check) of the file at path (name: for
 * messages): 0 when it says "ok". With fw, while the file is being written: each read
 * waits for its bytes. */
/* Pages of SQLite's cache for the check. Its passes hold only a path down each tree
 * (and an index lookup's, for integrity_check) and read every other page once, so a
 * small cache serves them as well as a large one, and its buffers stay in the CPU's
 * own cache: on the benchmark's 1 GiB database (docs/BENCHMARKS.md, "Backups"),
 * quick_check took 0.57-0.59 s with 32 to 128 pages against 0.61-0.68 s with SQLite's
 * default of 2000 KiB, and integrity_check 2.48-2.62 s with 64 against 2.65-2.85 s. */
#define CHECK_CACHE_PAGES 64

static int integrityCheck(const char *path, const char *name, int check, struct follow *fw,
                          char *errmsg)
{
    const char *pragma = backupCheckName(check);
    char sql[40];
    char uri[3 * PATH_MAX + 32];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc, rv = 0;

    /* integrity_check looks each row up in every index of its table: reads all over
     * the file, which moved the read-ahead's run back and forth, each move reading
     * chunks (2 MiB) of which it used a page: a restore of the benchmark's chain with
     * --check full took 15-28 s and 22-47 s of system time, where SQLite's check alone
     * reads a page at a time in 4.4 s. So it reads a page at a time too. */
    if (fileUri(path, fw, check != RESTORE_CHECK_FULL, uri, sizeof uri) != 0) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    pthread_once(&roOnce, roRegister);
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, ROVFS);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size = %d", CHECK_CACHE_PAGES);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        /* Any size turns SQLite's fetches on: ROVFS maps nothing, it lends the pages
         * of its read-ahead chunks (roFetch). */
        rc = sqlite3_exec(db, "PRAGMA mmap_size = 1073741824", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql, "PRAGMA %s", pragma);
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (res == NULL || strcmp(res, "ok") != 0) {
            errorf(errmsg, "%s of the restored database %s: %s", pragma, name,
                   res ? res : "(null)");
            rv = CAIRN_ECORRUPT;
        }
    } else {
        rv = sqlerrf(db, rc, errmsg, "%s of the restored database %s", pragma, name);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

int backupCheckFile(const char *path, const char *name, int check, char *errmsg)
{
    assert(check == RESTORE_CHECK_QUICK || check == RESTORE_CHECK_FULL);
    return integrityCheck(path, name, check, NULL, errmsg);
}

struct integrity_job {
    const char *path;
    const char *name;
    int check;
    struct follow *fw;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

static void *integrityThread(void *arg)
{
    struct integrity_job *j = arg;
    j->rv = integrityCheck(j->path, j->name, j->check, j->fw, j->errmsg);
    return NULL;
}

/* Restore the chain into the new file nf, every page checked (applyChain), then fsync
 * it (unless !sync: restore_options.no_sync), while SQLite's check (RESTORE_CHECK_*) reads it on another thread, from the
 * start of the writing: both must pass before the file is used. name: what the
 * messages call it. */
static int materialize(struct repo *repo, const struct backup_info *chain, size_t n,
                       struct newfile *nf, const char *name, int check, bool sync,
                       struct progress *p, char *errmsg)
{
    const struct backup_info *last = &chain[n - 1];
    struct follow fw;
    struct integrity_job job = {newfilePath(nf), name, check, &fw, 0, ""};
    pthread_t th;
    bool threaded;
    int rv;

    followInit(&fw, last->page_count * last->page_size);
    /* The check starts with the writing: it reads the pages written, waiting for
     * those that are not (it goes through the b-trees in their own order). */
    threaded = check != RESTORE_CHECK_NONE &&
               startThread(&th, CHECK_STACK, integrityThread, &job) == 0;
    rv = applyChain(repo, chain, n, nf->fd, name, &fw, p, errmsg);
    followSet(&fw, 0, true, rv != 0);
    if (rv == 0 && sync && fsync(nf->fd) != 0) {
        if (errno == ENOSPC || errno == EDQUOT) {
            errorf(errmsg, "no space left on device writing %s", name);
        } else {
            errorf(errmsg, "fsync %s: %s", name, strerror(errno));
        }
        rv = errorFromErrno(errno);
    }
    if (threaded) {
        pthread_join(th, NULL);
    } else if (rv == 0 && check != RESTORE_CHECK_NONE) {
        integrityThread(&job);
    }
    followDestroy(&fw);
    if (rv == 0 && job.rv != 0) {
        memcpy(errmsg, job.errmsg, CAIRN_ERRMSG_SIZE);
        rv = job.rv;
    }
    return rv;
}

/* CAIRN_RESTORE_TMPFILE=off: the new file has a hidden name from the start, as on a
 * file system without O_TMPFILE (docs/OPERATIONS.md). */
static unsigned newfileFlags(void)
{
    const char *v = getenv("CAIRN_RESTORE_TMPFILE");
    return v != NULL && strcmp(v, "off") == 0 ? NEWFILE_NAMED : 0;
}

/* SQLite files that belong to the database at path: a stale -wal or hot -journal
 * beside a restored file would be replayed into it. */
static const char *const SIDE_FILES[] = {"-wal", "-journal", "-shm"};

int backupRestore(const struct restore_options *opt, struct backup_info *restored, char *errmsg)
{
    struct repo *repo = NULL;
    int rv;
    if (opt == NULL || opt->ref == NULL || opt->out == NULL || opt->out[0] == '\0') {
        errorf(errmsg, "restore: invalid arguments");
        return CAIRN_EINVAL;
    }
    /* A path names its file wherever it is; the repository is not needed then. */
    if (strchr(opt->ref, '/') == NULL && opt->repo != NULL &&
        (rv = repoOpen(opt->repo, &repo, errmsg)) != 0) {
        return rv;
    }
    rv = backupRestoreIn(repo, opt, restored, errmsg);
    repoClose(repo);
    return rv;
}

int backupRestoreIn(struct repo *repo, const struct restore_options *opt,
                    struct backup_info *restored, char *errmsg)
{
    struct backup_info *chain = NULL, target;
    struct repo *use, *owned = NULL;
    struct progress p = {0};
    struct newfile nf = {.fd = -1};
    struct restore_options resolved;
    char side[PATH_MAX + 16];
    char link_to[PATH_MAX];
    struct stat st;
    bool found;
    size_t n = 0;
    int rv;

    if (opt == NULL || opt->ref == NULL || opt->out == NULL || opt->out[0] == '\0') {
        errorf(errmsg, "restore: invalid arguments");
        return CAIRN_EINVAL;
    }
    /* --force onto a symbolic link writes the file it points to (newfile.h). */
    if (opt->force) {
        resolved = *opt;
        if ((rv = newfileResolveLink(opt->out, link_to, &resolved.out, errmsg)) != 0) {
            return rv;
        }
        opt = &resolved;
    }
    /* What an earlier restore to the same place left when it was killed between its
     * renames: the old database's -wal put back beside it, or removed if the new file
     * got there. Before the checks below, which then see the files as they are. */
    newfileSweepReplaced(opt->out);
    /* Not even --force replaces a directory: said now, not after the whole restore. */
    if (lstat(opt->out, &st) == 0 && S_ISDIR(st.st_mode)) {
        errorf(errmsg, "%s is a directory: a restore writes a database file, name the file",
               opt->out);
        return CAIRN_EINVAL;
    }
    if (!opt->force) {
        if (lstat(opt->out, &st) == 0) {
            errorf(errmsg, "%s already exists (--force replaces it; \"force\": true over HTTP)",
                   opt->out);
            return CAIRN_EEXIST;
        }
        for (size_t i = 0; i < 2; i++) {
            snprintf(side, sizeof side, "%s%s", opt->out, SIDE_FILES[i]);
            if (lstat(side, &st) == 0) {
                errorf(errmsg,
                       "%s already exists beside %s (--force replaces both; \"force\": true "
                       "over HTTP)",
                       side, opt->out);
                return CAIRN_EEXIST;
            }
        }
    }
    if ((rv = chainRepo(repo, opt->ref, &use, &owned, errmsg)) != 0) {
        return rv;
    }
    if ((rv = resolveChain(use, opt->ref, &chain, &n, &target, &found, errmsg)) != 0) {
        repoClose(owned);
        return rv;
    }
    p.fn = opt->progress;
    p.arg = opt->progress_arg;
    p.total = chainBytes(chain, 0, n);
    /* The files whose pages a newer one replaces wholly are checked and not applied;
     * the others are checked completely as they are applied (applyChain), each read
     * once: their pages go into the new file, which nobody sees unless every check
     * passes. */
    for (size_t i = 0; i < applyStart(chain, n); i++) {
        if ((rv = checkMember(use, &chain[i], NULL, &p, errmsg)) != 0) {
            goto err;
        }
    }
    /* What an earlier restore to the same place left when it was killed. */
    newfileSweep(opt->out, "restore");
    /* A database gets SQLite's 0644, or keeps the mode of the file it replaces. */
    if ((rv = newfileOpen(&nf, opt->out, "restore",
                          opt->force && stat(opt->out, &st) == 0 ? st.st_mode & 07777 : 0644,
                          newfileFlags(), errmsg)) != 0) {
        goto err;
    }
    if ((rv = materialize(use, chain, n, &nf, opt->out, opt->check, !opt->no_sync, &p,
                          errmsg)) != 0) {
        goto err;
    }
    /* The caller's change goes through SQLite, which opens the file by a name beside
     * which it puts its journal. */
    if (opt->finish != NULL && ((rv = newfileName(&nf, errmsg)) != 0 ||
                                (rv = opt->finish(nf.tmp, opt->finish_arg, errmsg)) != 0)) {
        goto err;
    }
    /* The replaced database's -wal, -journal and -shm go with it, and stay with it
     * when the new file does not get there (newfileReplaceDatabase). */
    if ((rv = opt->force ? newfileReplaceDatabase(&nf, opt->out, errmsg)
                         : newfilePlace(&nf, opt->out, false, errmsg)) != 0) {
        goto err;
    }
    newfileClose(&nf);
    if (!opt->no_sync && (rv = libSyncParentDir(opt->out, errmsg)) != 0) {
        if (!opt->force) {
            unlink(opt->out); /* nothing where there was nothing */
        }
        goto err;
    }
    if (restored != NULL) {
        *restored = chain[n - 1];
    }
    free(chain);
    repoClose(owned);
    return 0;
err:
    newfileClose(&nf);
    free(chain);
    repoClose(owned);
    return rv;
}

/* Whether a verification's failure rv is a verdict on the files (one is damaged, or a
 * member of the chain missing), to be recorded: not a failure to read them now (an I/O
 * error, a timeout, a repository over the network that did not answer, no memory),
 * which says nothing of them, and which a verification recorded as failed would make
 * the backup kept forever, refused as a parent and skipped as a base until verified
 * again. */
static bool isVerdict(int rv)
{
    return rv == CAIRN_ECORRUPT || rv == CAIRN_ENOTFOUND;
}

/* Record a failure on the backup verified and, when another, the one that broke. */
static void recordFailure(struct repo *repo, const struct backup_info *target,
                          const struct backup_info *broken)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    int64_t now = repoNowMs();
    repoWriteVerifiedIn(repo, target, BACKUP_VERIFY_FAILED, now, ignore);
    if (broken != NULL && strcmp(broken->path, target->path) != 0) {
        repoWriteVerifiedIn(repo, broken, BACKUP_VERIFY_FAILED, now, ignore);
    }
}

int backupVerify(const char *repo, const char *ref, bool trial_restore, backup_progress_fn progress,
                 void *progress_arg, char *errmsg)
{
    struct repo *r = NULL;
    int rv;
    /* A path names its file wherever it is; the repository is not needed then. */
    if (ref != NULL && strchr(ref, '/') == NULL && repo != NULL &&
        (rv = repoOpen(repo, &r, errmsg)) != 0) {
        return rv;
    }
    rv = backupVerifyIn(r, ref, trial_restore, progress, progress_arg, errmsg);
    repoClose(r);
    return rv;
}

int backupVerifyIn(struct repo *repo, const char *ref, bool trial_restore,
                   backup_progress_fn progress, void *progress_arg, char *errmsg)
{
    struct verify_options o = {ref, trial_restore, NULL, progress, progress_arg};
    return backupVerifyOpt(repo, &o, errmsg);
}

int backupVerifyOpt(struct repo *repo, const struct verify_options *opt, char *errmsg)
{
    const char *ref = opt->ref;
    bool trial_restore = opt->trial_restore;
    backup_progress_fn progress = opt->progress;
    void *progress_arg = opt->progress_arg;
    struct backup_info *chain = NULL, target;
    struct repo *use, *owned = NULL;
    struct pipe *pl;
    struct progress p = {progress, progress_arg, 0, 0};
    struct newfile nf = {.fd = -1};
    bool found;
    size_t n = 0;
    int64_t now;
    int rv;

    if (ref == NULL) {
        errorf(errmsg, "verify: no backup named");
        return CAIRN_EINVAL;
    }
    if ((rv = chainRepo(repo, ref, &use, &owned, errmsg)) != 0) {
        return rv;
    }
    if ((rv = resolveChain(use, ref, &chain, &n, &target, &found, errmsg)) != 0) {
        if (found && isVerdict(rv)) {
            recordFailure(use, &target, NULL);
        }
        repoClose(owned);
        return rv;
    }
    p.total = chainBytes(chain, 0, n);
    if (trial_restore) {
        p.total += chainBytes(chain, applyStart(chain, n), n);
    }
    if ((pl = malloc(sizeof *pl)) == NULL) {
        errorf(errmsg, "out of memory verifying %s", target.path);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    pipeStart(pl, use, 0, NULL, 0, chainBytes(chain, 0, n));
    for (size_t i = 0; i < n && rv == 0; i++) {
        if ((rv = checkMember(use, &chain[i], pl, &p, errmsg)) != 0 && isVerdict(rv)) {
            recordFailure(use, &target, &chain[i]);
        }
    }
    pipeEnd(pl);
    free(pl);
    if (rv != 0) {
        goto out;
    }
    if (trial_restore) {
        /* In the caller's scratch directory; else beside the backup when it is a local
         * file, else in the temporary directory; with no name, where the file system
         * allows. */
        char beside[PATH_MAX];
        const char *tmpdir = getenv("TMPDIR");
        if (opt->scratch_dir != NULL) {
            if ((size_t)snprintf(beside, sizeof beside, "%s/%s", opt->scratch_dir,
                                 repoNameOf(target.path)) >= sizeof beside) {
                errorf(errmsg, "verify: scratch directory path too long: %s", opt->scratch_dir);
                rv = CAIRN_EINVAL;
                goto out;
            }
        } else if (repoLocalPath(use) != NULL) {
            snprintf(beside, sizeof beside, "%s", target.path);
        } else {
            snprintf(beside, sizeof beside, "%s/%s",
                     tmpdir != NULL && tmpdir[0] != '\0' ? tmpdir : "/tmp",
                     repoNameOf(target.path));
        }
        char name[PATH_MAX + 32];
        snprintf(name, sizeof name, "%s (trial restore)", target.path);
        newfileSweep(beside, "verify");
        if ((rv = newfileOpen(&nf, beside, "verify", 0600, newfileFlags(), errmsg)) != 0) {
            goto out;
        }
        /* A drill: SQLite's full check, whatever a restore's default. */
        if ((rv = materialize(use, chain, n, &nf, name, RESTORE_CHECK_FULL, true, &p, errmsg)) != 0) {
            if (isVerdict(rv)) {
                recordFailure(use, &target, NULL);
            }
            goto out;
        }
    }
    now = repoNowMs();
    for (size_t i = 0; i < n; i++) {
        if ((rv = repoWriteVerifiedIn(use, &chain[i], BACKUP_VERIFIED, now, errmsg)) != 0) {
            /* The checks passed: say so, lest the failure read as the backup's (a bucket
             * that read-only credentials cannot write into, say). */
            char why[CAIRN_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", errmsg);
            errorf(errmsg,
                   "%s passed every check%s, but its verification record could not be "
                   "written: %s",
                   target.path, trial_restore ? " and the trial restore" : "", why);
            goto out;
        }
    }
out:
    newfileClose(&nf);
    free(chain);
    repoClose(owned);
    return rv;
}
