/* Restoring and verifying backups: resolve the chain that ends at a backup back to its
 * full backup (through parent ids and parent digests), check every file of the chain
 * completely, then write the pages of the chain, newest first and each page once, into a new file, check
 * every page of it against the manifest of the last backup, fsync, run SQLite's
 * integrity_check, and only then put it in place.
 *
 * Two passes over the files: the first (before anything is written) checks every
 * block checksum, the manifest and the whole-file digest; the second decompresses,
 * checks each page against its file's manifest and writes it, and checks the digest
 * again, so that a file changed between the passes is caught too. backupVerify's
 * pass also decompresses and checks every page.
 *
 * Threads: the caller's (a worker, never the loop) reads the files and writes the
 * restored one; for the duration of a call it starts workers (one per CPU, at most
 * MAX_WORKERS) that decompress and check blocks, and one thread that runs
 * integrity_check while the caller's thread re-reads and fsyncs the result. No state
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

/* Bytes read at a time when checking the restored image. */
#define CHECK_CHUNK (4u << 20)
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

/* Write a block's pages, one pwrite per run of consecutive page numbers. */
static int writePages(const struct sink *s, uint32_t ps, const uint32_t *pgnos, uint32_t n,
                      const unsigned char *pages, char *errmsg)
{
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
    return writePages(&a->sink, s->r->h.page_size, s->b.pgnos, s->b.n, s->raw, errmsg);
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
        return writePages(&a->sink, a->r->h.page_size, s->b.pgnos, s->b.n, s->raw, errmsg);
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
 * the last backup's database. *manifest receives that backup's manifest (the caller
 * frees it). From the newest backup back to applyStart(), each page written once:
 * the newest copy of a page is the one the restored database holds, so an older one
 * is skipped (a bitmap of page_count bits says which are written). Writing oldest
 * first wrote the full backup and then every incremental over it. */
static int applyChain(struct repo *repo, const struct backup_info *chain, size_t n, int fd,
                      const char *path, uint64_t **manifest, struct progress *p, char *errmsg)
{
    const struct backup_info *last = &chain[n - 1];
    struct applier a;
    size_t start = applyStart(chain, n);
    int rv = 0;

    *manifest = NULL;
    applierStart(&a, fd, path);
    a.chain_bytes = chainBytes(chain, start, n);
    a.sink.limit = last->page_count;
    a.sink.done = calloc((size_t)(last->page_count / 8 + 1), 1);
    if (a.sink.done == NULL) {
        applierStop(&a);
        errorf(errmsg, "out of memory restoring %s", path);
        return CAIRN_ENOMEM;
    }
    for (size_t i = n; i-- > start && rv == 0;) {
        struct repo_file f;
        uint64_t *m;
        if ((rv = openMember(repo, &chain[i], &f, errmsg)) != 0) {
            break;
        }
        if ((m = newManifest(&f, errmsg)) == NULL) {
            repoCloseFile(&f);
            rv = CAIRN_ENOMEM;
            break;
        }
        rv = applyFile(&a, &f, m, p, errmsg);
        repoCloseFile(&f);
        p->base += chain[i].size_bytes;
        if (rv == 0 && i == n - 1) {
            *manifest = m;
        } else {
            free(m);
        }
    }
    free(a.sink.done);
    a.sink.done = NULL;
    applierStop(&a);
    if (rv == 0 && ftruncate(fd, (off_t)(last->page_count * last->page_size)) != 0) {
        errorf(errmsg, "truncate %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
    }
    if (rv != 0) {
        free(*manifest);
        *manifest = NULL;
    }
    return rv;
}

/* Read the restored image back and check every page against the manifest. */
static int checkImage(int fd, const char *path, const struct backup_info *target,
                      const uint64_t *manifest, struct progress *p, char *errmsg)
{
    const uint32_t ps = target->page_size;
    const uint32_t per =
        target->page_count < CHECK_CHUNK / ps ? (uint32_t)target->page_count + 1 : CHECK_CHUNK / ps;
    unsigned char *chunk = malloc((size_t)per * ps);
    struct stat st;
    int rv = 0;

    if (chunk == NULL) {
        errorf(errmsg, "out of memory checking %s", path);
        return CAIRN_ENOMEM;
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != target->page_count * ps) {
        errorf(errmsg, "restored file %s is not %llu pages of %u bytes", path,
               (unsigned long long)target->page_count, ps);
        rv = CAIRN_EIO;
        goto out;
    }
    for (uint64_t first = 0; first < target->page_count;) {
        uint32_t n =
            target->page_count - first < per ? (uint32_t)(target->page_count - first) : per;
        size_t want = (size_t)n * ps, got = 0;
        while (got < want) {
            ssize_t k = pread(fd, chunk + got, want - got, (off_t)(first * ps + got));
            if (k <= 0) {
                if (k < 0 && errno == EINTR) {
                    continue;
                }
                errorf(errmsg, "read back %s: %s", path, k < 0 ? strerror(errno) : "short read");
                rv = k < 0 ? errorFromErrno(errno) : CAIRN_EIO;
                goto out;
            }
            got += (size_t)k;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (XXH3_64bits(chunk + (size_t)i * ps, ps) != manifest[first + i]) {
                errorf(errmsg, "restored page %llu of %s does not match the manifest of %s",
                       (unsigned long long)(first + i + 1), path, target->path);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
        }
        first += n;
        if (p->fn != NULL) {
            p->fn(p->arg, p->base + first * ps, p->total);
        }
    }
    p->base += target->page_count * ps;
out:
    free(chunk);
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

static int integrityCheck(const char *path, char *errmsg)
{
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
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (res == NULL || strcmp(res, "ok") != 0) {
            errorf(errmsg, "integrity_check of the restored database %s: %s", path,
                   res ? res : "(null)");
            rv = CAIRN_ECORRUPT;
        }
    } else {
        errorf(errmsg, "integrity_check of the restored database %s: %s", path,
               db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        rv = (rc & 0xff) == SQLITE_NOMEM                                     ? CAIRN_ENOMEM
             : (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB ? CAIRN_ECORRUPT
                                                                             : CAIRN_EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

/* Restore the verified chain into the new file at tmp (fd): pages, size, page check,
 * fsync, integrity_check. */

struct integrity_job {
    const char *path;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

static void *integrityThread(void *arg)
{
    struct integrity_job *j = arg;
    j->rv = integrityCheck(j->path, j->errmsg);
    return NULL;
}

/* Restore the verified chain into the new file tmp (fd): pages, size, then every page
 * checked against the manifest and the file fsynced on this thread while SQLite's
 * integrity_check reads the same file on another (both read what was written, and
 * both must pass before the file is used), the longest steps side by side. */
static int materialize(struct repo *repo, const struct backup_info *chain, size_t n, int fd,
                       const char *tmp, struct progress *p, char *errmsg)
{
    struct integrity_job job = {tmp, 0, ""};
    uint64_t *manifest = NULL;
    pthread_t th;
    bool threaded;
    int rv;

    if ((rv = applyChain(repo, chain, n, fd, tmp, &manifest, p, errmsg)) != 0) {
        return rv;
    }
    threaded = pthread_create(&th, NULL, integrityThread, &job) == 0;
    rv = checkImage(fd, tmp, &chain[n - 1], manifest, p, errmsg);
    if (rv == 0 && fsync(fd) != 0) {
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
    free(manifest);
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
    p.total = chainBytes(chain, 0, n) + chainBytes(chain, applyStart(chain, n), n) +
              target.page_count * target.page_size;
    for (size_t i = 0; i < n; i++) {
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
    if ((rv = materialize(use, chain, n, fd, tmp, &p, errmsg)) != 0) {
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
        p.total +=
            chainBytes(chain, applyStart(chain, n), n) + target.page_count * target.page_size;
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
        if ((rv = materialize(use, chain, n, fd, tmp, &p, errmsg)) != 0) {
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
