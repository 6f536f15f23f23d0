/* Point-in-time restore (pitr.h): choose a timeline and a base backup, restore the
 * base's chain with the backup engine, then apply the archived entries after it with
 * storeApply, the apply every follower runs (no second implementation), stopping at
 * the target; its store is a scratch one (STORE_OPEN_SCRATCH: no WAL, no sync; nothing
 * reads the file before it is put in place, and a crash leaves it to the next sweep).
 * A restore entry in the archive restores its backup from the same repository, as
 * every node did; PREPARE and digest entries change nothing, as on every node. Runs on
 * the caller's thread (the CLI's), with the segments' prefetch threads and settle's
 * fsync thread. */
#define _GNU_SOURCE
#include "pitr.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "command.h"
#include "error.h"
#include "lib.h"
#include "liverestore.h"
#include "newfile.h"
#include "pagesum.h"
#include "repo.h"
#include "result.h"
#include "store.h"

/* pitrWindows, and the repository's backups (repoListIn) into *bkp (malloc'd, the
 * caller's) when bkp is not NULL: a restore needs both, listed once. */
static int windowsIn(struct repo *repo, bool full, struct arcseg_info **segs, size_t *nsegs,
                     struct pitr_window **w, size_t *nw, struct backup_info **bkp, size_t *nbkp,
                     char *errmsg)
{
    struct arcseg_timeline *tls = NULL;
    struct backup_info *bk = NULL;
    size_t ntl = 0, nbk = 0;
    int rv;

    *segs = NULL;
    *nsegs = 0;
    *w = NULL;
    *nw = 0;
    if ((rv = arcsegList(repo, segs, nsegs, errmsg)) != 0) {
        return rv;
    }
    if ((rv = arcsegWalk(repo, *segs, *nsegs, full, &tls, &ntl, errmsg)) != 0 ||
        (rv = repoListIn(repo, &bk, &nbk, errmsg)) != 0) {
        free(tls);
        free(*segs);
        *segs = NULL;
        *nsegs = 0;
        return rv;
    }
    *w = calloc(ntl ? ntl : 1, sizeof **w);
    if (*w == NULL) {
        free(tls);
        free(bk);
        free(*segs);
        *segs = NULL;
        *nsegs = 0;
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    bool several = arcsegSeveralHistories(*segs, tls, ntl);
    arcsegSharedHistories(tls, ntl, bk, nbk);
    for (size_t i = 0; i < ntl; i++) {
        struct pitr_window *x = &(*w)[i];
        x->tl = tls[i];
        x->several = several;
        if (x->tl.nseg > 0 && (*segs)[x->tl.from].read) {
            memcpy(x->history, (*segs)[x->tl.from].history, ARCSEG_HISTORY_SIZE);
        }
        for (size_t j = 0; j < nbk; j++) {
            const struct backup_info *b = &bk[j];
            if (!arcsegBaseFits(&x->tl, several, b)) {
                continue;
            }
            x->bases++;
            if (!x->usable || b->raft_index < x->from) {
                x->usable = true;
                x->from = b->raft_index;
                x->from_ms = b->created_ms;
                snprintf(x->from_id, sizeof x->from_id, "%s", b->id);
            }
        }
    }
    *nw = ntl;
    free(tls);
    if (bkp != NULL) {
        *bkp = bk;
        *nbkp = nbk;
    } else {
        free(bk);
    }
    return 0;
}

int pitrWindows(struct repo *repo, bool full, struct arcseg_info **segs, size_t *nsegs,
                struct pitr_window **w, size_t *nw, char *errmsg)
{
    return windowsIn(repo, full, segs, nsegs, w, nw, NULL, NULL, errmsg);
}

void pitrDescribeWindows(const struct pitr_window *w, size_t n, char *out, size_t size)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && off < size; i++) {
        char a[LIB_ISO8601_SIZE], b[LIB_ISO8601_SIZE];
        int k;
        libIso8601(w[i].tl.head_ms, LIB_ISO8601_MS, a);
        libIso8601(w[i].from_ms, LIB_ISO8601_MS, b);
        if (w[i].usable) {
            k = snprintf(out + off, size - off, "%stimeline %s: indexes %llu-%llu (%s to %s)",
                         i ? "; " : "", w[i].tl.name, (unsigned long long)w[i].from,
                         (unsigned long long)w[i].tl.head, b, a);
        } else {
            k = snprintf(out + off, size - off, "%stimeline %s: no base backup, nothing restorable",
                         i ? "; " : "", w[i].tl.name);
        }
        if (k < 0) {
            break;
        }
        off += (size_t)k;
    }
    if (n == 0) {
        snprintf(out, size, "the repository holds no archive");
    }
}

/* The index a time target stops at on timeline x: the entry before the first one
 * stamped after t. *found false when no entry is (t is at or past the head). */
static int timeToIndex(struct repo *repo, const struct arcseg_info *segs,
                       const struct pitr_window *x, int64_t t, uint64_t *index, bool *found,
                       char *errmsg)
{
    *found = false;
    for (size_t k = x->tl.from; k < x->tl.from + x->tl.good; k++) {
        struct arcseg seg;
        int rv;
        if (segs[k].max_ms <= t) {
            continue;
        }
        if ((rv = arcsegRead(repo, segs[k].name, &seg, errmsg)) != 0) {
            return rv;
        }
        for (uint32_t i = 0; i < seg.h.count; i++) {
            if (seg.entries[i].time_ms > t) {
                *index = i > 0 ? seg.entries[i - 1].index : seg.h.first - 1;
                *found = true;
                break;
            }
        }
        arcsegFree(&seg);
        if (*found) {
            return 0;
        }
    }
    return 0;
}

/* The backup id and digest of a restore entry; false when malformed (every node
 * answered it with an error and changed nothing). */
static bool restoreEntry(const struct batch *b, char id[BACKUP_ID_SIZE],
                         const unsigned char **digest, bool *prepare)
{
    const struct stmt *st = &b->stmts[0];
    if (b->n != 1 || st->sql_len == 0 || st->sql_len >= BACKUP_ID_SIZE || st->nparams < 1 ||
        st->nparams > 2 || st->params[0].type != CAIRN_BLOB ||
        st->params[0].n != BACKUP_DIGEST_SIZE) {
        return false;
    }
    *prepare = st->nparams == 2;
    if (*prepare &&
        (st->params[1].type != CAIRN_TEXT || st->params[1].n != strlen(RESTORE_PREPARE) ||
         memcmp(st->params[1].s, RESTORE_PREPARE, st->params[1].n) != 0)) {
        return false;
    }
    memcpy(id, st->sql, st->sql_len);
    id[st->sql_len] = '\0';
    *digest = (const unsigned char *)st->params[0].s;
    return true;
}

static void removeTmp(const char *tmp)
{
    char p[PATH_MAX + 8];
    unlink(tmp);
    snprintf(p, sizeof p, "%s-wal", tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s-journal", tmp); /* the replay's (STORE_OPEN_SCRATCH) */
    unlink(p);
}

/* Put the finished file at out: a rename that replaces what is there only with force
 * (else CAIRN_EEXIST and nothing moved: something was put at out meanwhile, another
 * restore for the same branch), then the directory fsynced. Replacing, the old file's
 * -wal, -journal and -shm go with it (they would be read into the new one), and stay
 * with it when the rename fails (newfileRenameDatabase). */
static int placeOut(const char *tmp, const char *out, bool force, char *errmsg)
{
    int err, rv;
    if (force) {
        newfileSweepReplaced(out); /* a killed predecessor's leftovers, settled first */
        rv = newfileRenameDatabase(tmp, out, errmsg);
        return rv != 0 ? rv : libSyncParentDir(out, errmsg);
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE) != 0) {
        err = errno;
        /* A file system without RENAME_NOREPLACE: a link never replaces either. */
        if (err == EINVAL && link(tmp, out) == 0) {
            unlink(tmp);
            return libSyncParentDir(out, errmsg);
        }
        err = err == EINVAL ? errno : err;
        if (err == EEXIST) {
            errorf(errmsg, "%s exists (--force replaces it): it was made while this restore ran",
                   out);
            return CAIRN_EEXIST;
        }
        errorf(errmsg, "rename %s to %s: %s", tmp, out, strerror(err));
        return errorFromErrno(err);
    }
    return libSyncParentDir(out, errmsg);
}

/* Replace the file at tmp with backup id (a restore entry at index), as adminApplyRestore
 * does on every node: the chain restored, the entry's index stamped. A backup that is
 * not the one the entry names, or that the repository lacks, stops the restore: the
 * nodes could not have applied the entry either. */
static int replayRestore(struct repo *repo, const char *tmp, const char *id,
                         const unsigned char *digest, uint64_t index, char *errmsg)
{
    struct restore_options ro;
    struct backup_info info;
    int rv;
    removeTmp(tmp); /* its WAL must not be read into the backup put in its place */
    memset(&ro, 0, sizeof ro);
    ro.ref = id;
    ro.out = tmp;
    ro.force = true;
    ro.check = RESTORE_CHECK_NONE; /* settle checks the result once, at the end */
    ro.no_sync = true; /* settle fsyncs the result once, placeOut its directory */
    if ((rv = backupRestoreIn(repo, &ro, &info, errmsg)) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg,
               "archived entry %llu restores backup %s, which cannot be restored from "
               "this repository: %s",
               (unsigned long long)index, id, why);
        return rv;
    }
    if (memcmp(info.digest, digest, BACKUP_DIGEST_SIZE) != 0) {
        errorf(errmsg,
               "archived entry %llu restores backup %s, but the repository's file has "
               "another digest",
               (unsigned long long)index, id);
        return CAIRN_ECORRUPT;
    }
    return adminSetAppliedIndex(tmp, index, errmsg);
}

/* The fsync of the replayed file, on a thread of its own while SQLite checks it. */
struct file_sync {
    int fd;
    int err; /* errno of the fsync, 0 when done */
};

static void *fileSyncMain(void *arg)
{
    struct file_sync *y = arg;
    y->err = fsync(y->fd) != 0 ? errno : 0;
    return NULL;
}

/* Make the file stand alone: every WAL frame in it, rollback journal mode; then
 * SQLite's check (check: RESTORE_CHECK_*; quick_check unless FULL), the one check of the
 * whole result: the base was restored without one (its pages are each checked against
 * their hashes; what the replay changed is checked here). The check reads the file as a
 * restore's does (backupCheckFile: in chunks, read ahead on the other CPU). The replay
 * wrote without a sync (STORE_OPEN_SCRATCH): the file is fsynced here, once, while it is
 * checked. */
static int settle(const char *path, int check, char *errmsg)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    struct file_sync y = {.fd = -1, .err = 0};
    pthread_t th;
    bool syncing;
    int rv;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;", NULL,
                          NULL, &err);
    }
    if (rc != SQLITE_OK) {
        errorf(errmsg, "%s: %s", path, err ? err : (db ? sqlite3_errmsg(db) : "out of memory"));
        sqlite3_free(err);
        sqlite3_close(db);
        return CAIRN_EIO;
    }
    sqlite3_close(db);
    if ((y.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        int e = errno;
        errorf(errmsg, "open %s: %s", path, strerror(e));
        return errorFromErrno(e);
    }
    syncing = pthread_create(&th, NULL, fileSyncMain, &y) == 0;
    if (!syncing) {
        fileSyncMain(&y);
    }
    rv = backupCheckFile(path, path, check == RESTORE_CHECK_FULL ? check : RESTORE_CHECK_QUICK,
                         errmsg);
    if (syncing) {
        pthread_join(th, NULL);
    }
    close(y.fd);
    if (rv == 0 && y.err != 0) {
        errorf(errmsg, "fsync %s: %s", path, strerror(y.err));
        rv = errorFromErrno(y.err);
    }
    return rv;
}

/* ---- segments read ahead of the replay ----------------------------------------------
 *
 * The replay needs its segments in order, each whole. Fetched one after another, each
 * a round trip or more to S3, they dominated a restore from a remote repository. A
 * prefetcher fetches them from the start of the restore (while the base backup is
 * restored), PREFETCH_THREADS at a time, in order, the bytes held (fetched, not yet
 * taken by the replay) bounded by PREFETCH_BYTES (always at least the next segment);
 * the replay decodes and checks each as before (arcsegDecode: every checksum). Objects
 * are fetched whole and not decoded, so what waits costs its stored (compressed) size. */
#define PREFETCH_THREADS 4
#define PREFETCH_BYTES ((size_t)8 << 20)

struct pf_slot {
    int state; /* 0: not started, 1: being fetched, 2: done (rv, buf) */
    int rv;
    unsigned char *buf;
    size_t len;
    char *why; /* malloc'd message of a failure */
};

struct prefetch {
    struct repo *repo;
    const struct arcseg_info *segs;
    size_t from, end;     /* the segments [from, end) are read, in order */
    struct pf_slot *slot; /* slot[k - from] */
    size_t next;          /* the next segment to start */
    size_t taken;         /* segments before it are the replay's */
    size_t held;          /* bytes fetched or being fetched, not yet taken */
    bool stop, failed;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t th[PREFETCH_THREADS];
    unsigned nth;
};

/* Segment s whole, not decoded (as arcsegFetch): in one request when the walk knows its
 * size (a reader of a remote repository asks for its first bytes when it opens, then
 * for the rest: two). An object of another size than the walk saw (replaced since, or
 * a read that failed) is read by arcsegFetch; the replay's digest check tells a
 * replaced one. *out malloc'd, the caller's. */
static int fetchSegment(struct repo *repo, const struct arcseg_info *s, unsigned char **out,
                        size_t *len, char *errmsg)
{
    if (s->size > 0 &&
        s->size <= (uint64_t)ARCSEG_MAX_RAW + ARCSEG_HEADER2_SIZE + ARCSEG_TRAILER_SIZE) {
        unsigned char *buf = malloc((size_t)s->size + 1); /* + 1: a longer object shows */
        size_t got = 0;
        if (buf != NULL && repoGet(repo, s->name, buf, (size_t)s->size + 1, &got, errmsg) == 0 &&
            got == s->size) {
            *out = buf;
            *len = got;
            return 0;
        }
        free(buf);
    }
    return arcsegFetch(repo, s->name, out, len, errmsg);
}

static void *prefetchMain(void *arg)
{
    struct prefetch *pf = arg;
    pthread_mutex_lock(&pf->mu);
    for (;;) {
        size_t k;
        struct pf_slot *sl;
        char why[CAIRN_ERRMSG_SIZE];
        unsigned char *buf;
        size_t len;
        int rv;
        /* The next segment, once the bytes held leave room for it (the one the replay
         * waits for is always fetched). */
        while (!pf->stop && !pf->failed && pf->next < pf->end && pf->next > pf->taken &&
               pf->held + pf->segs[pf->next].size > PREFETCH_BYTES) {
            pthread_cond_wait(&pf->cond, &pf->mu);
        }
        if (pf->stop || pf->failed || pf->next >= pf->end) {
            break;
        }
        k = pf->next++;
        sl = &pf->slot[k - pf->from];
        sl->state = 1;
        pf->held += pf->segs[k].size;
        pthread_mutex_unlock(&pf->mu);
        rv = fetchSegment(pf->repo, &pf->segs[k], &buf, &len, why);
        pthread_mutex_lock(&pf->mu);
        sl->state = 2;
        sl->rv = rv;
        sl->buf = buf;
        sl->len = len;
        if (rv != 0) {
            sl->why = strdup(why);
            pf->failed = true; /* the replay stops there: nothing after it is needed */
        }
        pthread_cond_broadcast(&pf->cond);
    }
    pthread_mutex_unlock(&pf->mu);
    return NULL;
}

/* Start reading segs[from, end) of repo ahead (no thread started: the replay reads each
 * itself when it needs it). *out is the caller's (prefetchClose); CAIRN_ENOMEM. */
static int prefetchOpen(struct repo *repo, const struct arcseg_info *segs, size_t from, size_t end,
                        struct prefetch **out, char *errmsg)
{
    struct prefetch *pf = calloc(1, sizeof *pf);
    *out = NULL;
    if (pf == NULL || (pf->slot = calloc(end > from ? end - from : 1, sizeof *pf->slot)) == NULL) {
        free(pf);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    pf->repo = repo;
    pf->segs = segs;
    pf->from = pf->next = pf->taken = from;
    pf->end = end;
    pthread_mutex_init(&pf->mu, NULL);
    pthread_cond_init(&pf->cond, NULL);
    while (pf->nth < PREFETCH_THREADS && pf->nth < end - from &&
           pthread_create(&pf->th[pf->nth], NULL, prefetchMain, pf) == 0) {
        pf->nth++;
    }
    *out = pf;
    return 0;
}

/* Segment k (from <= k < end, each asked once, in order), read and decoded into seg
 * (arcsegFree), as arcsegRead would. */
static int prefetchGet(struct prefetch *pf, size_t k, struct arcseg *seg, char *errmsg)
{
    struct pf_slot *sl = &pf->slot[k - pf->from];
    unsigned char *buf;
    size_t len;
    int rv;

    memset(seg, 0, sizeof *seg);
    pthread_mutex_lock(&pf->mu);
    assert(k == pf->taken); /* every segment of the span, in order */
    if (pf->nth == 0) {
        pf->next = k + 1; /* no thread: read here */
        pthread_mutex_unlock(&pf->mu);
        rv = fetchSegment(pf->repo, &pf->segs[k], &buf, &len, errmsg);
        pthread_mutex_lock(&pf->mu);
        pf->taken = k + 1;
        sl->state = 3;
        pthread_mutex_unlock(&pf->mu);
    } else {
        while (sl->state != 2) {
            pthread_cond_wait(&pf->cond, &pf->mu);
        }
        rv = sl->rv;
        buf = sl->buf;
        len = sl->len;
        if (rv != 0) {
            snprintf(errmsg, CAIRN_ERRMSG_SIZE, "%s",
                     sl->why != NULL ? sl->why : "out of memory reading an archive segment");
        }
        sl->buf = NULL;
        sl->state = 3;
        pf->held -= pf->segs[k].size;
        pf->taken = k + 1;
        pthread_cond_broadcast(&pf->cond); /* room for the next fetch */
        pthread_mutex_unlock(&pf->mu);
    }
    if (rv != 0) {
        return rv;
    }
    rv = arcsegDecode(buf, len, pf->segs[k].name, seg, errmsg);
    free(buf);
    return rv;
}

/* Stop the fetches (those under way end on their own) and free everything. */
static void prefetchClose(struct prefetch *pf)
{
    if (pf == NULL) {
        return;
    }
    pthread_mutex_lock(&pf->mu);
    pf->stop = true;
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->mu);
    for (unsigned i = 0; i < pf->nth; i++) {
        pthread_join(pf->th[i], NULL);
    }
    for (size_t k = pf->from; k < pf->end; k++) {
        free(pf->slot[k - pf->from].buf);
        free(pf->slot[k - pf->from].why);
    }
    free(pf->slot);
    pthread_mutex_destroy(&pf->mu);
    pthread_cond_destroy(&pf->cond);
    free(pf);
}

/* The segments of x a replay from base to target reads: [*from, *end). */
static void replaySpan(const struct arcseg_info *segs, const struct pitr_window *x, uint64_t base,
                       uint64_t target, size_t *from, size_t *end)
{
    size_t k = x->tl.from, stop = x->tl.from + x->tl.good;
    while (k < stop && segs[k].last <= base) {
        k++;
    }
    *from = k;
    while (k < stop && segs[k].first <= target) {
        k++;
    }
    *end = k;
}

/* Entries applied in one transaction by a replay (a follower commits a loop turn's
 * entries together the same way: storeSetGrouping). */
#define REPLAY_GROUP 1024u

/* Apply seg's entries [from, end) (none a restore entry) onto st: grouped, in one
 * transaction, each entry under a savepoint of its own; or one at a time. An entry that
 * does not decode was answered with an error by every node and changed nothing;
 * digest entries change nothing. STORE_EREGROUP: the group was rolled back whole. */
static int applySpan(struct store *st, const struct arcseg *seg, uint32_t from, uint32_t end,
                     bool grouped, char *errmsg)
{
    int rv = 0;
    storeSetGrouping(st, grouped);
    for (uint32_t i = from; i < end && rv == 0; i++) {
        const struct arcseg_entry *e = &seg->entries[i];
        struct batch b;
        char why[CAIRN_ERRMSG_SIZE];
        memset(&b, 0, sizeof b);
        if (commandDecode(e->bytes, e->len, &b, why) == 0 && b.kind != BATCH_DIGEST &&
            b.kind != BATCH_RESTORE) {
            struct cairn_result *r = NULL;
            rv = storeApply(st, &b, e->index, &r, why);
            cairn_result_free(r);
            if (rv != 0 && rv != STORE_EREGROUP) {
                errorf(errmsg, "replaying log index %llu: %s", (unsigned long long)e->index, why);
            } else if (rv != 0) {
                memcpy(errmsg, why, CAIRN_ERRMSG_SIZE);
            }
        }
        batchFree(&b);
    }
    if (grouped && rv == 0) {
        rv = storeFlush(st, errmsg);
    }
    storeSetGrouping(st, false);
    return rv;
}

/* Apply the entries of the segments pf reads (the span of the timeline after res->base
 * that reaches target) up to target onto tmp. */
static int replay(struct repo *repo, struct prefetch *pf, const struct arcseg_info *segs,
                  const char *tmp, uint64_t target, struct pitr_result *res, char *errmsg)
{
    struct store *st = NULL;
    char journal[PATH_MAX + 8];
    int rv = 0;

    if ((rv = storeOpenWith(tmp, true, STORE_OPEN_SCRATCH, &st, errmsg)) != 0) {
        return rv;
    }
    if (storeAppliedIndex(st) != res->base.raft_index) {
        errorf(errmsg, "backup %s holds index %llu, its header says %llu", res->base.id,
               (unsigned long long)storeAppliedIndex(st), (unsigned long long)res->base.raft_index);
        storeClose(st);
        return CAIRN_ECORRUPT;
    }
    for (size_t k = pf->from; k < pf->end && rv == 0; k++) {
        struct arcseg seg;
        if ((rv = prefetchGet(pf, k, &seg, errmsg)) != 0) {
            char why[CAIRN_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", errmsg);
            errorf(errmsg, "%s; restorable up to index %llu (ask for --to-index %llu)", why,
                   (unsigned long long)(segs[k].first - 1),
                   (unsigned long long)(segs[k].first - 1));
            break;
        }
        if (memcmp(seg.digest, segs[k].digest, BACKUP_DIGEST_SIZE) != 0) {
            /* Replaced between the walk and now. */
            arcsegFree(&seg);
            errorf(errmsg, "archive segment %s changed while it was read", segs[k].name);
            rv = CAIRN_ECORRUPT;
            break;
        }
        for (uint32_t i = 0; i < seg.h.count && rv == 0;) {
            const struct arcseg_entry *e = &seg.entries[i];
            struct batch b;
            char id[BACKUP_ID_SIZE];
            char why[CAIRN_ERRMSG_SIZE];
            const unsigned char *digest;
            bool prepare;
            uint32_t end;
            if (e->index <= storeAppliedIndex(st)) {
                i++;
                continue;
            }
            if (e->index > target) {
                break;
            }
            /* A restore entry on its own; the entries up to the next one (or the target)
             * in one group. */
            memset(&b, 0, sizeof b);
            if (commandDecode(e->bytes, e->len, &b, why) == 0 && b.kind == BATCH_RESTORE &&
                restoreEntry(&b, id, &digest, &prepare) && !prepare) {
                storeClose(st);
                st = NULL;
                rv = replayRestore(repo, tmp, id, digest, e->index, errmsg);
                if (rv == 0) {
                    rv = storeOpenWith(tmp, true, STORE_OPEN_SCRATCH, &st, errmsg);
                }
                res->restores++;
                batchFree(&b);
                if (rv == 0) {
                    res->entries++;
                    res->stop_index = e->index;
                    res->stop_ms = e->time_ms;
                }
                i++;
                continue;
            }
            batchFree(&b);
            /* Up to the next restore entry (its kind byte, as fsm.c marks a boundary;
             * applySpan decodes and checks each entry once). */
            for (end = i + 1; end < seg.h.count && end - i < REPLAY_GROUP &&
                              seg.entries[end].index <= target &&
                              commandKind(seg.entries[end].bytes, seg.entries[end].len) !=
                                  BATCH_RESTORE;
                 end++) {
            }
            rv = applySpan(st, &seg, i, end, true, errmsg);
            if (rv == STORE_EREGROUP) {
                /* The group was rolled back whole (a statement's ON CONFLICT ROLLBACK, a
                 * failed commit): its entries again, one at a time, as a follower does. */
                rv = applySpan(st, &seg, i, end, false, errmsg);
            }
            if (rv == 0) {
                res->entries += end - i;
                res->stop_index = seg.entries[end - 1].index;
                res->stop_ms = seg.entries[end - 1].time_ms;
            }
            i = end;
        }
        arcsegFree(&seg);
    }
    if (st != NULL) {
        storeClose(st);
    }
    /* The scratch store's journal, never hot once it is closed (its header zeroed at
     * every commit and rollback): the file stands alone. */
    snprintf(journal, sizeof journal, "%s-journal", tmp);
    unlink(journal);
    return rv;
}

/* For a restore to the newest state that would stop at index upto (time upto_ms): 0, or
 * CAIRN_ECORRUPT when a timeline's walk stopped at a problem (a damaged, missing or
 * foreign segment) with archived entries past upto beyond it: those were written, and
 * restoring without them would say "latest" of an older state. A segment that cannot be
 * read counts from the first index its name gives (its times are not known). */
static int latestComplete(const struct arcseg_info *segs, const struct pitr_window *w, size_t nw,
                          uint64_t upto, int64_t upto_ms, char *errmsg)
{
    for (size_t i = 0; i < nw; i++) {
        const struct arcseg_timeline *tl = &w[i].tl;
        uint64_t far = 0;
        int64_t far_ms = INT64_MIN;
        bool unread = false;
        if (tl->problem[0] == '\0') {
            continue;
        }
        for (size_t k = tl->from + tl->good; k < tl->from + tl->nseg; k++) {
            if (segs[k].read) {
                far = segs[k].last > far ? segs[k].last : far;
                far_ms = segs[k].max_ms > far_ms ? segs[k].max_ms : far_ms;
            } else {
                far = segs[k].first > far ? segs[k].first : far;
                unread = true;
            }
        }
        if (w[i].several ? far_ms > upto_ms || (unread && tl->head_ms >= upto_ms) : far > upto) {
            errorf(errmsg,
                   "the newest state cannot be restored: timeline %s holds entries up to "
                   "index %llu, past index %llu, but cannot be replayed beyond index %llu "
                   "(restore to an index or a time instead): %s",
                   tl->name, (unsigned long long)far, (unsigned long long)upto,
                   (unsigned long long)tl->head, tl->problem);
            return CAIRN_ECORRUPT;
        }
    }
    return 0;
}

int pitrRestore(const struct pitr_options *o, struct pitr_result *res, char *errmsg)
{
    struct repo *repo = NULL;
    struct arcseg_info *segs = NULL;
    struct pitr_window *w = NULL;
    size_t nsegs = 0, nw = 0;
    const struct pitr_window *x = NULL;
    struct backup_info *bk = NULL;
    struct prefetch *pf = NULL;
    size_t nbk = 0;
    uint64_t target = 0;
    struct newdir scratch;
    char tmp[PATH_MAX];
    char windows[2048];
    struct pitr_options resolved;
    char link_to[PATH_MAX];
    struct stat st;
    int rv;

    memset(res, 0, sizeof *res);
    /* --force onto a symbolic link writes the file it points to (newfile.h). */
    if (o->force) {
        resolved = *o;
        if ((rv = newfileResolveLink(o->out, link_to, &resolved.out, errmsg)) != 0) {
            return rv;
        }
        o = &resolved;
    }
    if (stat(o->out, &st) == 0 && S_ISDIR(st.st_mode)) {
        errorf(errmsg, "%s is a directory: a restore writes a database file, name the file",
               o->out);
        return CAIRN_EINVAL;
    }
    if (!o->force && access(o->out, F_OK) == 0) {
        errorf(errmsg, "%s exists (--force replaces it)", o->out);
        return CAIRN_EEXIST;
    }
    /* The file is made, replayed and checked in a scratch directory of its own beside
     * out (SQLite needs names for it and its journal): a restore killed at any point
     * leaves nothing at out, the next one removes what it left, and two restores for
     * one out never share a file (newfile.h). */
    if ((rv = newdirOpen(&scratch, o->out, "pitr", errmsg)) != 0) {
        return rv;
    }
    if (snprintf(tmp, sizeof tmp, "%s/db", scratch.dir) >= (int)sizeof tmp) {
        newdirClose(&scratch);
        errorf(errmsg, "%s: path too long", o->out);
        return CAIRN_EINVAL;
    }
    if ((rv = repoOpen(o->repo, &repo, errmsg)) != 0) {
        newdirClose(&scratch);
        return rv;
    }
    if ((rv = windowsIn(repo, false, &segs, &nsegs, &w, &nw, &bk, &nbk, errmsg)) != 0) {
        goto out;
    }
    pitrDescribeWindows(w, nw, windows, sizeof windows);
    /* The timeline: the newest (latest start) whose window holds the target. */
    for (size_t i = nw; i-- > 0;) {
        const struct pitr_window *c = &w[i];
        if (!c->usable) {
            continue;
        }
        if (o->kind == PITR_LATEST) {
            /* Several histories: the newest head in time (another history's indexes
             * may be larger and older). */
            if (x == NULL ||
                (c->several ? c->tl.head_ms > x->tl.head_ms : c->tl.head > x->tl.head)) {
                x = c;
                target = c->tl.head;
            }
        } else if (o->kind == PITR_INDEX) {
            if (o->index >= c->from && o->index <= c->tl.head) {
                if (x != NULL && memcmp(x->history, c->history, ARCSEG_HISTORY_SIZE) != 0) {
                    errorf(errmsg,
                           "index %llu is ambiguous in this repository: it holds the archives "
                           "of more than one history (a cluster restored from it, or another "
                           "cluster, archiving into it), and timelines %s and %s of two of "
                           "them both hold that index; restore to a time instead; "
                           "restorable: %s",
                           (unsigned long long)o->index, x->tl.name, c->tl.name, windows);
                    rv = CAIRN_EINVAL;
                    goto out;
                }
                if (x == NULL || c->tl.start > x->tl.start) {
                    x = c;
                    target = o->index;
                }
            }
        } else {
            uint64_t at;
            bool found;
            if ((rv = timeToIndex(repo, segs, c, o->time_ms, &at, &found, errmsg)) != 0) {
                goto out;
            }
            /* A time before the timeline's first entry is its base's state only if the
             * base was taken by then (else another timeline may hold it). */
            if (found && at >= c->from && (at >= c->tl.start || c->from_ms <= o->time_ms) &&
                (x == NULL ||
                 (c->several ? c->tl.start_ms > x->tl.start_ms : c->tl.start > x->tl.start))) {
                x = c;
                target = at;
            }
        }
    }
    if (o->kind == PITR_LATEST) {
        /* A backup newer than every archive's head (the archive stopped, backups went
         * on) is the latest state the repository knows: restored alone. Newer by index
         * in a repository of one history; by time in one of several (indexes are
         * ambiguous there, and backups of older builds record no history). */
        bool several = nw > 0 && w[0].several;
        const struct backup_info *nb = NULL;
        for (size_t j = 0; j < nbk; j++) {
            if (bk[j].error[0] == '\0' && bk[j].raft_index > 0 &&
                (nb == NULL || (several ? bk[j].created_ms > nb->created_ms
                                        : bk[j].raft_index > nb->raft_index))) {
                nb = &bk[j];
            }
        }
        /* No archive at all, and no backup of a log (those of plain files record index
         * 0): the newest backup by time, as `cairn restore latest` takes it. */
        if (nw == 0 && nb == NULL) {
            for (size_t j = 0; j < nbk; j++) {
                if (bk[j].error[0] == '\0' && (nb == NULL || bk[j].created_ms > nb->created_ms)) {
                    nb = &bk[j];
                }
            }
        }
        bool alone =
            nb != NULL &&
            (x == NULL || (several ? nb->created_ms > x->tl.head_ms : nb->raft_index > target));
        if ((alone || x != NULL) &&
            (rv = latestComplete(segs, w, nw, alone ? nb->raft_index : target,
                                 alone ? nb->created_ms : x->tl.head_ms, errmsg)) != 0) {
            goto out;
        }
        if (alone) {
            res->base = *nb;
            res->target = res->stop_index = nb->raft_index;
            memcpy(res->history, nb->history, BACKUP_HISTORY_SIZE);
            struct restore_options ro;
            memset(&ro, 0, sizeof ro);
            ro.ref = nb->id;
            ro.out = tmp;
            ro.force = true;
            ro.check = RESTORE_CHECK_NONE; /* settle's is the one check */
            ro.no_sync = true; /* settle fsyncs the result once, placeOut its directory */
            if ((rv = backupRestoreIn(repo, &ro, NULL, errmsg)) != 0 ||
                (rv = settle(tmp, o->check, errmsg)) != 0 ||
                (o->finish != NULL && (rv = o->finish(tmp, o->finish_arg, errmsg)) != 0)) {
                goto out;
            }
            rv = placeOut(tmp, o->out, o->force, errmsg);
            goto out;
        }
    }
    if (x == NULL) {
        char t[LIB_ISO8601_SIZE];
        libIso8601(o->time_ms, LIB_ISO8601_MS, t);
        if (o->kind == PITR_INDEX) {
            errorf(errmsg,
                   "index %llu cannot be restored from this repository (beyond the "
                   "archive's head, before its oldest base backup, or in a gap); "
                   "restorable: %s",
                   (unsigned long long)o->index, windows);
        } else if (o->kind == PITR_TIME) {
            errorf(errmsg,
                   "%s cannot be restored from this repository (after the archive's "
                   "last entry, before its oldest base backup, or in a gap); "
                   "restorable: %s",
                   t, windows);
        } else {
            errorf(errmsg, "nothing to restore: %s", windows);
        }
        rv = CAIRN_ENOTFOUND;
        goto out;
    }
    res->target = target;
    snprintf(res->timeline, sizeof res->timeline, "%s", x->tl.name);
    memcpy(res->history, x->history, ARCSEG_HISTORY_SIZE);
    /* The base: the newest backup at or before the target that the timeline continues;
     * one whose chain does not restore (it or a backup it needs failed its last
     * verification, is missing or unreadable: backupChainWhole) only when no other is
     * (its restore then says what is wrong), since an older one and more entries
     * restore the same state. */
    {
        bool found = false, base_whole = false;
        for (size_t j = 0; j < nbk; j++) {
            bool whole;
            if (!arcsegBaseFits(&x->tl, x->several, &bk[j]) || bk[j].raft_index > target) {
                continue;
            }
            whole = backupChainWhole(bk, nbk, j);
            if (!found || (whole == base_whole ? bk[j].raft_index > res->base.raft_index : whole)) {
                res->base = bk[j];
                base_whole = whole;
                found = true;
            }
        }
        if (!found) {
            errorf(errmsg,
                   "no backup of this repository at or before index %llu continues on "
                   "timeline %s; restorable: %s",
                   (unsigned long long)target, x->tl.name, windows);
            rv = CAIRN_ENOTFOUND;
            goto out;
        }
    }
    if (o->kind == PITR_TIME && target < x->tl.start && res->base.created_ms > o->time_ms) {
        /* No archived entry at or before the time: only the base's own time says whether
         * it holds nothing stamped after it. */
        char t[LIB_ISO8601_SIZE];
        libIso8601(o->time_ms, LIB_ISO8601_MS, t);
        errorf(errmsg, "%s is before what this repository can restore; restorable: %s", t, windows);
        rv = CAIRN_ENOTFOUND;
        goto out;
    }
    res->stop_index = res->base.raft_index;
    {
        struct restore_options ro;
        size_t from, end;
        /* The segments are fetched while the base is restored. */
        replaySpan(segs, x, res->base.raft_index, target, &from, &end);
        if ((rv = prefetchOpen(repo, segs, from, end, &pf, errmsg)) != 0) {
            goto out;
        }
        memset(&ro, 0, sizeof ro);
        ro.ref = res->base.id;
        ro.out = tmp;
        ro.force = true;
        /* No SQLite check of the base: every page of it is checked against its hash,
         * and settle checks the result of the replay, the file that is kept. */
        ro.check = RESTORE_CHECK_NONE;
        ro.no_sync = true; /* settle fsyncs the result once, placeOut its directory */
        if ((rv = backupRestoreIn(repo, &ro, NULL, errmsg)) != 0) {
            goto out;
        }
    }
    rv = replay(repo, pf, segs, tmp, target, res, errmsg);
    prefetchClose(pf);
    pf = NULL;
    if (rv != 0 || (rv = settle(tmp, o->check, errmsg)) != 0 ||
        (o->finish != NULL && (rv = o->finish(tmp, o->finish_arg, errmsg)) != 0)) {
        goto out;
    }
    rv = placeOut(tmp, o->out, o->force, errmsg);
out:
    if (rv == CAIRN_ENOSPC) {
        /* The scratch file's name means nothing to the user: say where it was going. */
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "restore into %s: no space left on its file system (%s)", o->out, why);
    }
    prefetchClose(pf);
    newdirClose(&scratch); /* what is left of it: the whole of it on failure */
    free(bk);
    free(w);
    free(segs);
    repoClose(repo);
    return rv;
}
