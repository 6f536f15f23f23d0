/* Restoring and verifying backups: resolve the chain that ends at a backup back to its
 * full backup (through parent ids and parent digests), write the pages of the chain,
 * newest first and each page once, into a new file while checking every file of the
 * chain completely, check every page of the new file against the manifest of the last
 * backup, fsync, run SQLite's quick_check (integrity_check when asked, and for a
 * verification's trial restore), and only then put it in place.
 *
 * One pass over each file a restore applies: its blocks' checksums, its manifest and
 * its whole-file digest are checked as it is read, each page is decompressed and
 * checked against the manifest before it is written, and the file's digest is known
 * when its last byte is read. A failure of any check removes the temporary file: the
 * result is the same as checking every file first, at half the reading (a repository
 * over the network is read once). Files older than the newest one that holds every
 * page are only checked. backupVerify decompresses and checks every page of every
 * file, and its trial restore reads them again.
 *
 * Threads: the caller's (a worker, never the loop) reads the files and writes the
 * restored one; for the duration of a call it starts workers (one per CPU, at most
 * MAX_WORKERS) that decompress and check blocks, one that prepares the next file of
 * the chain (opens it, reads its manifest) while one is applied, and one that runs
 * SQLite's check while the caller's thread fsyncs the result. No state
 * is shared between calls. */
#define _GNU_SOURCE
#include "backup.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "cbk.h"
#include "error.h"
#include "lib.h"
#include "repo.h"
#include "sqlerr.h"

/* Longest chain followed: guards against a loop of parents. */
#define MAX_CHAIN 100000

struct progress {
    backup_progress_fn fn;
    void *arg;
    uint64_t base; /* bytes done before the current file */
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

/* ---- writing the pages: the calling thread reads and checks the blocks of a file in
 * order (cbkScan), workers decompress and check them, the calling thread writes them,
 * in order ---- */

/* Writeback of the restored file starts as it is written (see WRITEBACK_BYTES in
 * repo_posix.c): runs at least this long are handed to the disk at once. */
#define WRITEBACK_RUN (256u << 10)
#define MAX_WORKERS 4
#define PARALLEL_MIN_BYTES (4u << 20)

struct sink {
    int fd; /* -1: decode and check, write nothing */
    const char *path;
    /* Restores write the chain newest first: a page already written (its bit set) came
     * from a newer backup and is kept; pages past `limit` are past the end of the
     * restored database. NULL: write every page. */
    unsigned char *done;
    uint64_t limit;
    /* The manifest of the backup restored (its page_count hashes), when not NULL: every
     * page written from an older file must have the hash it names there. */
    const uint64_t *expect;
};

static int pwriteAll(int fd, const unsigned char *p, size_t n, uint64_t off, const char *path,
                     char *errmsg)
{
    int err = libPwriteFull(fd, p, n, off);
    if (err == ENOSPC || err == EDQUOT) {
        errorf(errmsg, "no space left on device writing %s", path);
        return CAIRN_ENOSPC;
    }
    if (err != 0) {
        errorf(errmsg, "write %s: %s", path, strerror(err));
        return errorFromErrno(err);
    }
    return 0;
}

/* Write a block's pages, one pwrite per run of consecutive page numbers. The pages
 * were checked against m, the manifest of their file (r), before they came here: where
 * that is not the restored backup's own, a page is the restored backup's page only if
 * both manifests name the same hash. */
static int writePages(const struct sink *s, const struct cbk_reader *r, const uint64_t *m,
                      const uint32_t *pgnos, uint32_t n, const unsigned char *pages, char *errmsg)
{
    const uint32_t ps = r->h.page_size;
    uint32_t i = 0;
    if (s->fd < 0) {
        return 0; /* verifying: decoded and checked is all */
    }
    while (i < n) {
        uint32_t j;
        size_t len;
        uint64_t off;
        int rv;
        if (s->done != NULL) {
            uint32_t pg = pgnos[i];
            if (pg > s->limit || (s->done[(pg - 1) / 8] & (1u << ((pg - 1) % 8))) != 0) {
                i++;
                continue;
            }
        }
        j = i + 1;
        while (j < n && pgnos[j] == pgnos[j - 1] + 1 &&
               (s->done == NULL ||
                (pgnos[j] <= s->limit &&
                 (s->done[(pgnos[j] - 1) / 8] & (1u << ((pgnos[j] - 1) % 8))) == 0))) {
            j++;
        }
        for (uint32_t k = i; s->expect != NULL && s->expect != m && k < j; k++) {
            if (m[pgnos[k] - 1] != s->expect[pgnos[k] - 1]) {
                errorf(errmsg,
                       "%s: page %u is the newest copy in the chain, but its hash is not the "
                       "one the restored backup's manifest names (the chain does not add up)",
                       r->name, pgnos[k]);
                return CAIRN_ECORRUPT;
            }
        }
        if (s->done != NULL) {
            for (uint32_t k = i; k < j; k++) {
                s->done[(pgnos[k] - 1) / 8] |= (unsigned char)(1u << ((pgnos[k] - 1) % 8));
            }
        }
        off = (uint64_t)(pgnos[i] - 1) * ps;
        len = (size_t)(j - i) * ps;
        if ((rv = pwriteAll(s->fd, pages + (size_t)i * ps, len, off, s->path, errmsg)) != 0) {
            return rv;
        }
        if (len >= WRITEBACK_RUN) {
            sync_file_range(s->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
        }
        i = j;
    }
    return 0;
}

enum { SLOT_FREE, SLOT_READY, SLOT_BUSY, SLOT_DONE };

/* A block handed to a worker, with copies of its page numbers and frame, and the
 * pages it decodes to. */
struct slot {
    struct cbk_block b;
    const struct cbk_reader *r;
    const uint64_t *manifest;
    uint32_t *pgnos;
    uint32_t pgnos_cap;
    unsigned char *frame;
    size_t frame_cap;
    unsigned char *raw;
    size_t raw_cap;
    int state;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

/* Workers decompress and check; the calling thread alone writes, in order (writers of
 * one file would only queue on its lock). */
struct applier {
    pthread_mutex_t mu;
    pthread_cond_t work;
    pthread_cond_t done;
    struct slot slots[2 * MAX_WORKERS + 1];
    unsigned nslots;
    uint64_t submitted, taken, written; /* sequence numbers of blocks */
    bool stop;
    bool launched;
    pthread_t threads[MAX_WORKERS];
    unsigned nthreads;
    ZSTD_DCtx *dctx; /* the calling thread's, when there are no workers */
    uint64_t chain_bytes; /* of all the files to apply: workers pay off for a chain too */
    struct sink sink;
    /* The file being applied. */
    const struct cbk_reader *r;
    const uint64_t *manifest;
};

static int decodeSlot(ZSTD_DCtx *dctx, struct slot *s, char *errmsg)
{
    size_t need = (size_t)s->b.n * s->r->h.page_size;
    if (dctx == NULL) {
        errorf(errmsg, "%s: out of memory", s->r->name);
        return CAIRN_ENOMEM;
    }
    if (need > s->raw_cap) {
        unsigned char *p = realloc(s->raw, need);
        if (p == NULL) {
            errorf(errmsg, "%s: out of memory", s->r->name);
            return CAIRN_ENOMEM;
        }
        s->raw = p;
        s->raw_cap = need;
    }
    return cbkDecodeBlock(s->r, &s->b, s->manifest, dctx, s->raw, errmsg);
}

static void *applyWorker(void *arg)
{
    struct applier *a = arg;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    pthread_mutex_lock(&a->mu);
    for (;;) {
        struct slot *s;
        while (!a->stop && a->taken == a->submitted) {
            pthread_cond_wait(&a->work, &a->mu);
        }
        if (a->stop) {
            break;
        }
        s = &a->slots[a->taken++ % a->nslots];
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&a->mu);
        s->rv = decodeSlot(dctx, s, s->errmsg);
        pthread_mutex_lock(&a->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&a->done);
    }
    pthread_mutex_unlock(&a->mu);
    ZSTD_freeDCtx(dctx);
    return NULL;
}

static void applierStop(struct applier *a)
{
    if (a->nthreads > 0) {
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_broadcast(&a->work);
        pthread_mutex_unlock(&a->mu);
        for (unsigned i = 0; i < a->nthreads; i++) {
            pthread_join(a->threads[i], NULL);
        }
    }
    for (unsigned i = 0; i < sizeof a->slots / sizeof a->slots[0]; i++) {
        free(a->slots[i].pgnos);
        free(a->slots[i].frame);
        free(a->slots[i].raw);
    }
    ZSTD_freeDCtx(a->dctx);
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->done);
    pthread_mutex_destroy(&a->mu);
}

static void applierStart(struct applier *a, int fd, const char *path)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->done, NULL);
    a->sink.fd = fd;
    a->sink.path = path;
    a->nslots = 1;
}

/* Start the workers with the first block, and only for a file big enough to repay
 * them (a chain starts with its biggest file): a file refused before its blocks, or a
 * small one, costs no threads. */
static void applierLaunch(struct applier *a)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    a->launched = true;
    if (cpus > 1 && (a->r->size >= PARALLEL_MIN_BYTES || a->chain_bytes >= PARALLEL_MIN_BYTES)) {
        unsigned want = cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
        for (unsigned i = 0; i < want; i++) {
            if (pthread_create(&a->threads[i], NULL, applyWorker, a) != 0) {
                break; /* fewer workers, or none: still correct */
            }
            a->nthreads++;
        }
        a->nslots = a->nthreads > 0 ? 2 * a->nthreads + 1 : 1;
    }
    if (a->nthreads == 0) {
        a->dctx = ZSTD_createDCtx();
    }
}

/* Wait for the oldest block in flight and write its pages. */
static int writeOldest(struct applier *a, char *errmsg)
{
    struct slot *s = &a->slots[a->written % a->nslots];
    pthread_mutex_lock(&a->mu);
    while (s->state != SLOT_DONE) {
        pthread_cond_wait(&a->done, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    s->state = SLOT_FREE;
    a->written++;
    if (s->rv != 0) {
        memcpy(errmsg, s->errmsg, CAIRN_ERRMSG_SIZE);
        return s->rv;
    }
    return writePages(&a->sink, s->r, s->manifest, s->b.pgnos, s->b.n, s->raw, errmsg);
}

/* Every block handed out is written (or, after a failure, at least done with). */
static int applierDrain(struct applier *a, char *errmsg)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    int rv = 0;
    while (a->written < a->submitted) {
        int r = writeOldest(a, rv == 0 ? errmsg : ignore);
        rv = rv != 0 ? rv : r;
    }
    return rv;
}

/* cbkScan's callback: copy the block into the next free slot and hand it out. */
static int submitBlock(void *arg, const struct cbk_block *b, char *errmsg)
{
    struct applier *a = arg;
    struct slot *s;
    int rv;
    if (!a->launched) {
        applierLaunch(a);
    }
    s = &a->slots[a->submitted % a->nslots];
    if (a->submitted - a->written == a->nslots && (rv = writeOldest(a, errmsg)) != 0) {
        return rv;
    }
    if (b->n > s->pgnos_cap) {
        uint32_t *p = realloc(s->pgnos, sizeof *p * a->r->h.block_pages);
        if (p == NULL) {
            goto oom;
        }
        s->pgnos = p;
        s->pgnos_cap = a->r->h.block_pages;
    }
    if (b->comp > s->frame_cap) {
        unsigned char *p = realloc(s->frame, b->comp);
        if (p == NULL) {
            goto oom;
        }
        s->frame = p;
        s->frame_cap = b->comp;
    }
    memcpy(s->pgnos, b->pgnos, sizeof *b->pgnos * b->n);
    memcpy(s->frame, b->frame, b->comp);
    s->b = *b;
    s->b.pgnos = s->pgnos;
    s->b.frame = s->frame;
    s->r = a->r;
    s->manifest = a->manifest;
    if (a->nthreads == 0) {
        if ((rv = decodeSlot(a->dctx, s, errmsg)) != 0) {
            return rv;
        }
        return writePages(&a->sink, a->r, a->manifest, s->b.pgnos, s->b.n, s->raw, errmsg);
    }
    pthread_mutex_lock(&a->mu);
    s->state = SLOT_READY;
    a->submitted++;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->mu);
    return 0;
oom:
    errorf(errmsg, "out of memory restoring %s", a->sink.path);
    return CAIRN_ENOMEM;
}

/* Decode and check every block of the open file f against its manifest m (read here)
 * on a's workers, writing the pages to a's sink, and wait for all of them. The
 * workers use f and m: neither may go before this returns. */
static int applyFile(struct applier *a, struct repo_file *f, uint64_t *m, struct progress *p,
                     char *errmsg)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    int rv, drained;
    a->r = &f->r;
    a->manifest = m;
    rv = cbkReadManifest(&f->r, m, errmsg);
    if (rv == 0) {
        rv = cbkScan(&f->r, m, submitBlock, a, onOffset, p, errmsg);
    }
    drained = applierDrain(a, rv == 0 ? errmsg : ignore);
    return rv != 0 ? rv : drained;
}

/* Check a whole file; `deep` also decompresses every block and checks every page
 * (on a, which writes nothing). */
static int checkMember(struct repo *repo, const struct backup_info *info, struct applier *a,
                       struct progress *p, char *errmsg)
{
    struct repo_file f;
    uint64_t *m = NULL;
    int rv = openMember(repo, info, &f, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (a == NULL) {
        rv = cbkScan(&f.r, NULL, NULL, NULL, onOffset, p, errmsg);
    } else if ((m = newManifest(&f, errmsg)) == NULL) {
        rv = CAIRN_ENOMEM;
    } else {
        rv = applyFile(a, &f, m, p, errmsg);
    }
    free(m);
    repoCloseFile(&f);
    p->base += info->size_bytes;
    return rv;
}

/* A file of the chain made ready to apply: opened and checked as repoOpenFileIn
 * checks it, its manifest read, and its reader told that the blocks will be read from
 * the start (a driver that reads ahead starts fetching them). The next file is
 * prepared on a thread of its own while one is applied: a repository over the network
 * then costs the round trips of opening a file and reading its manifest beside the
 * work, not between files. Not movable once started (the thread and the reader point
 * into it). */
struct member {
    struct repo *repo;
    const struct backup_info *info;
    struct repo_file f;
    bool open;
    uint64_t *m;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
    pthread_t th;
    bool threaded;
};

static void memberPrepare(struct member *mb)
{
    if ((mb->rv = openMember(mb->repo, mb->info, &mb->f, mb->errmsg)) != 0) {
        return;
    }
    mb->open = true;
    if ((mb->m = newManifest(&mb->f, mb->errmsg)) == NULL) {
        mb->rv = CAIRN_ENOMEM;
        return;
    }
    if ((mb->rv = cbkReadManifest(&mb->f.r, mb->m, mb->errmsg)) == 0 &&
        mb->f.r.io.willRead != NULL) {
        mb->f.r.io.willRead(mb->f.r.io.arg, 0);
    }
}

static void *memberThread(void *arg)
{
    memberPrepare(arg);
    return NULL;
}

/* Prepare info into mb, on a thread when one starts, else here. */
static void memberStart(struct member *mb, struct repo *repo, const struct backup_info *info)
{
    memset(mb, 0, sizeof *mb);
    mb->repo = repo;
    mb->info = info;
    mb->threaded = pthread_create(&mb->th, NULL, memberThread, mb) == 0;
    if (!mb->threaded) {
        memberPrepare(mb);
    }
}

/* Wait until mb is ready: its code, its message in mb->errmsg. */
static int memberWait(struct member *mb)
{
    if (mb->threaded) {
        pthread_join(mb->th, NULL);
        mb->threaded = false;
    }
    return mb->rv;
}

/* Close mb once ready; its manifest is freed unless it is keep. */
static void memberClose(struct member *mb, const uint64_t *keep)
{
    memberWait(mb);
    if (mb->open) {
        repoCloseFile(&mb->f);
        mb->open = false;
    }
    if (mb->m != keep) {
        free(mb->m);
    }
    mb->m = NULL;
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

/* Write the chain's pages into fd (an empty file at path) and cut it to the size of
 * the last backup's database. From the newest backup back to applyStart(), each page
 * written once: the newest copy of a page is the one the restored database holds, so
 * an older one is skipped (a bitmap of page_count bits says which are written). Every
 * page is checked in memory before it is written: against its own file's manifest
 * (cbkDecodeBlock), and for an older file's page, that manifest against the restored
 * backup's (writePages); then every page must have been written. So the file holds
 * exactly the pages the restored backup's manifest names, without reading it back.
 * (Writing oldest first wrote the full backup and then every incremental over it.) */
static int applyChain(struct repo *repo, const struct backup_info *chain, size_t n, int fd,
                      const char *path, struct progress *p, char *errmsg)
{
    const struct backup_info *last = &chain[n - 1];
    struct applier a;
    struct member mb[2];
    size_t start = applyStart(chain, n);
    uint64_t *expect = NULL;
    struct stat st;
    int rv = 0;

    applierStart(&a, fd, path);
    a.chain_bytes = chainBytes(chain, start, n);
    a.sink.limit = last->page_count;
    a.sink.done = calloc((size_t)(last->page_count / 8 + 1), 1);
    if (a.sink.done == NULL) {
        applierStop(&a);
        errorf(errmsg, "out of memory restoring %s", path);
        return CAIRN_ENOMEM;
    }
    memberStart(&mb[0], repo, &chain[n - 1]);
    for (size_t i = n, k = 0; i-- > start; k ^= 1) {
        struct member *cur = &mb[k], *next = &mb[k ^ 1];
        char ignore[CAIRN_ERRMSG_SIZE];
        int drained;
        if ((rv = memberWait(cur)) != 0) {
            memcpy(errmsg, cur->errmsg, CAIRN_ERRMSG_SIZE);
            memberClose(cur, expect);
            break;
        }
        if (i == n - 1) {
            a.sink.expect = expect = cur->m; /* the restored backup's: kept to the end */
        }
        if (i > start) {
            memberStart(next, repo, &chain[i - 1]);
        }
        a.r = &cur->f.r;
        a.manifest = cur->m;
        rv = cbkScan(&cur->f.r, cur->m, submitBlock, &a, onOffset, p, errmsg);
        drained = applierDrain(&a, rv == 0 ? errmsg : ignore);
        rv = rv != 0 ? rv : drained;
        memberClose(cur, expect);
        p->base += chain[i].size_bytes;
        if (rv != 0) {
            if (i > start) {
                memberClose(next, expect);
            }
            break;
        }
    }
    for (uint64_t pg = 1; rv == 0 && pg <= last->page_count; pg++) {
        if ((a.sink.done[(pg - 1) / 8] & (1u << ((pg - 1) % 8))) == 0) {
            errorf(errmsg, "%s: page %llu of the restored database is in no backup of its chain",
                   last->path, (unsigned long long)pg);
            rv = CAIRN_ECORRUPT;
        }
    }
    free(a.sink.done);
    a.sink.done = NULL;
    applierStop(&a);
    free(expect);
    if (rv == 0 && ftruncate(fd, (off_t)(last->page_count * last->page_size)) != 0) {
        errorf(errmsg, "truncate %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
    }
    if (rv == 0 &&
        (fstat(fd, &st) != 0 || (uint64_t)st.st_size != last->page_count * last->page_size)) {
        errorf(errmsg, "restored file %s is not %llu pages of %u bytes", path,
               (unsigned long long)last->page_count, last->page_size);
        rv = CAIRN_EIO;
    }
    return rv;
}

/* "file:<path>?immutable=1": nobody else has the file, so SQLite needs no locks, no
 * -shm and no -wal (the image may be in WAL mode). */
static int fileUri(const char *path, char *out, size_t cap)
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
    return 0;
}

const char *backupCheckName(int check)
{
    return check == RESTORE_CHECK_FULL ? "integrity_check" : "quick_check";
}

/* PRAGMA quick_check or integrity_check (check) of the file at path: 0 when it says
 * "ok". */
static int integrityCheck(const char *path, int check, char *errmsg)
{
    const char *name = backupCheckName(check);
    char sql[40];
    char uri[3 * PATH_MAX + 32];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc, rv = 0;

    if (fileUri(path, uri, sizeof uri) != 0) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql, "PRAGMA %s", name);
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (res == NULL || strcmp(res, "ok") != 0) {
            errorf(errmsg, "%s of the restored database %s: %s", name, path, res ? res : "(null)");
            rv = CAIRN_ECORRUPT;
        }
    } else {
        rv = sqlerrf(db, rc, errmsg, "%s of the restored database %s", name, path);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

struct integrity_job {
    const char *path;
    int check;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

static void *integrityThread(void *arg)
{
    struct integrity_job *j = arg;
    j->rv = integrityCheck(j->path, j->check, j->errmsg);
    return NULL;
}

/* Restore the chain into the new file tmp (fd), every page checked (applyChain), then
 * fsync it on this thread while SQLite's check (RESTORE_CHECK_*) reads it on another:
 * both must pass before the file is used. */
static int materialize(struct repo *repo, const struct backup_info *chain, size_t n, int fd,
                       const char *tmp, int check, struct progress *p, char *errmsg)
{
    struct integrity_job job = {tmp, check, 0, ""};
    pthread_t th;
    bool threaded;
    int rv;

    if ((rv = applyChain(repo, chain, n, fd, tmp, p, errmsg)) != 0) {
        return rv;
    }
    threaded = pthread_create(&th, NULL, integrityThread, &job) == 0;
    if (fsync(fd) != 0) {
        if (errno == ENOSPC || errno == EDQUOT) {
            errorf(errmsg, "no space left on device writing %s", tmp);
        } else {
            errorf(errmsg, "fsync %s: %s", tmp, strerror(errno));
        }
        rv = errorFromErrno(errno);
    }
    if (threaded) {
        pthread_join(th, NULL);
    } else if (rv == 0) {
        integrityThread(&job);
    }
    if (rv == 0 && job.rv != 0) {
        memcpy(errmsg, job.errmsg, CAIRN_ERRMSG_SIZE);
        rv = job.rv;
    }
    return rv;
}

/* A new empty file beside path, hidden, its name never ending in .cbk: *fd and tmp. */
static int tempBeside(const char *path, const char *what, char *tmp, int *fd, char *errmsg)
{
    char dir[PATH_MAX];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    repoDirOf(path, dir);
    if ((size_t)snprintf(tmp, PATH_MAX, "%s/.%s.%s-XXXXXX", dir, base, what) >= PATH_MAX) {
        errorf(errmsg, "path too long: %s", path);
        tmp[0] = '\0';
        return CAIRN_EINVAL;
    }
    if ((*fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
        errorf(errmsg, "create a temporary file beside %s: %s", path, strerror(errno));
        tmp[0] = '\0';
        return errorFromErrno(errno);
    }
    return 0;
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
    char tmp[PATH_MAX], side[PATH_MAX + 16];
    struct stat st;
    bool found;
    size_t n = 0;
    int fd = -1, rv;

    tmp[0] = '\0';
    if (opt == NULL || opt->ref == NULL || opt->out == NULL || opt->out[0] == '\0') {
        errorf(errmsg, "restore: invalid arguments");
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
     * the others are checked completely as they are applied (applyFile), each read
     * once: their pages go into the temporary file, which nobody sees unless every
     * check passes. */
    for (size_t i = 0; i < applyStart(chain, n); i++) {
        if ((rv = checkMember(use, &chain[i], NULL, &p, errmsg)) != 0) {
            goto err;
        }
    }
    if ((rv = tempBeside(opt->out, "restore", tmp, &fd, errmsg)) != 0) {
        goto err;
    }
    /* mkostemp's 0600 is for scratch files; a database gets SQLite's 0644, or keeps
     * the mode of the file it replaces. */
    fchmod(fd, opt->force && stat(opt->out, &st) == 0 ? st.st_mode & 07777 : 0644);
    if ((rv = materialize(use, chain, n, fd, tmp, opt->check, &p, errmsg)) != 0) {
        goto err;
    }
    close(fd);
    fd = -1;
    if (opt->finish != NULL && (rv = opt->finish(tmp, opt->finish_arg, errmsg)) != 0) {
        goto err;
    }
    if (opt->force) {
        for (size_t i = 0; i < 3; i++) {
            snprintf(side, sizeof side, "%s%s", opt->out, SIDE_FILES[i]);
            if (unlink(side) != 0 && errno != ENOENT) {
                errorf(errmsg, "remove %s: %s", side, strerror(errno));
                rv = errorFromErrno(errno);
                goto err;
            }
        }
        if (rename(tmp, opt->out) != 0) {
            errorf(errmsg, "rename %s to %s: %s", tmp, opt->out, strerror(errno));
            rv = errorFromErrno(errno);
            goto err;
        }
    } else if ((rv = repoRenameNoReplace(tmp, opt->out, errmsg)) != 0) {
        goto err;
    }
    tmp[0] = '\0';
    if ((rv = libSyncParentDir(opt->out, errmsg)) != 0) {
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
    if (fd >= 0) {
        close(fd);
    }
    if (tmp[0] != '\0') {
        unlink(tmp);
    }
    free(chain);
    repoClose(owned);
    return rv;
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
    struct backup_info *chain = NULL, target;
    struct repo *use, *owned = NULL;
    struct applier a;
    struct progress p = {progress, progress_arg, 0, 0};
    char tmp[PATH_MAX];
    bool found;
    size_t n = 0;
    int64_t now;
    int fd = -1, rv;

    tmp[0] = '\0';
    if (ref == NULL) {
        errorf(errmsg, "verify: no backup named");
        return CAIRN_EINVAL;
    }
    if ((rv = chainRepo(repo, ref, &use, &owned, errmsg)) != 0) {
        return rv;
    }
    if ((rv = resolveChain(use, ref, &chain, &n, &target, &found, errmsg)) != 0) {
        if (found && rv != CAIRN_ENOMEM) {
            recordFailure(use, &target, NULL);
        }
        repoClose(owned);
        return rv;
    }
    p.total = chainBytes(chain, 0, n);
    if (trial_restore) {
        p.total += chainBytes(chain, applyStart(chain, n), n);
    }
    applierStart(&a, -1, target.path);
    for (size_t i = 0; i < n && rv == 0; i++) {
        if ((rv = checkMember(use, &chain[i], &a, &p, errmsg)) != 0 && rv != CAIRN_ENOMEM) {
            recordFailure(use, &target, &chain[i]);
        }
    }
    applierStop(&a);
    if (rv != 0) {
        goto out;
    }
    if (trial_restore) {
        /* Beside the backup when it is a local file, else in the temporary directory. */
        char beside[PATH_MAX];
        const char *tmpdir = getenv("TMPDIR");
        if (repoLocalPath(use) != NULL) {
            snprintf(beside, sizeof beside, "%s", target.path);
        } else {
            snprintf(beside, sizeof beside, "%s/%s",
                     tmpdir != NULL && tmpdir[0] != '\0' ? tmpdir : "/tmp",
                     repoNameOf(target.path));
        }
        if ((rv = tempBeside(beside, "verify", tmp, &fd, errmsg)) != 0) {
            goto out;
        }
        /* A drill: SQLite's full check, whatever a restore's default. */
        if ((rv = materialize(use, chain, n, fd, tmp, RESTORE_CHECK_FULL, &p, errmsg)) != 0) {
            if (rv == CAIRN_ECORRUPT) {
                recordFailure(use, &target, NULL);
            }
            goto out;
        }
    }
    now = repoNowMs();
    for (size_t i = 0; i < n; i++) {
        if ((rv = repoWriteVerifiedIn(use, &chain[i], BACKUP_VERIFIED, now, errmsg)) != 0) {
            goto out;
        }
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp[0] != '\0') {
        unlink(tmp);
    }
    free(chain);
    repoClose(owned);
    return rv;
}
