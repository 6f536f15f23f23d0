/* libraft state machine over the store (see fsm.h).
 * Loop thread, except fsmSnapshotAsync (libuv thread pool). */
#define _GNU_SOURCE
#include "fsm.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup.h"
#include "buf.h"
#include "command.h"

static void fsmLog(struct fsm *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fsmLog(struct fsm *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logLinev(f->log, f->log_data, fmt, ap);
    va_end(ap);
}

/* ---- manifest (docs/FORMAT.md): magic(4) version(1) pad(3) index db_index size
 *      v1-digest (8 each) name_len(4) name(128, zero padded; version 2: 112 bytes,
 *      then the 16-byte backup digest) xxh3(8) = 180 bytes ------------------------- */

static void putU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

#define V2_NAME_MAX 112

void manifestEncode(const struct snapshot_manifest *m, unsigned char out[MANIFEST_SIZE])
{
    size_t max = m->version == 1 ? sizeof m->name - 1 : V2_NAME_MAX - 1;
    size_t len = strnlen(m->name, max);
    memset(out, 0, MANIFEST_SIZE);
    memcpy(out, MANIFEST_MAGIC, 4);
    out[4] = (unsigned char)(m->version == 1 ? 1 : MANIFEST_VERSION);
    putU64(out + 8, m->index);
    putU64(out + 16, m->db_index);
    putU64(out + 24, m->size);
    putU64(out + 32, m->version == 1 ? m->digest : 0);
    out[40] = (unsigned char)len;
    memcpy(out + 44, m->name, len);
    if (m->version != 1) {
        memcpy(out + 44 + V2_NAME_MAX, m->digest16, 16);
    }
    putU64(out + 172, XXH3_64bits(out, 172));
}

int manifestDecode(const void *p, size_t n, struct snapshot_manifest *m, char *errmsg)
{
    const unsigned char *b = p;
    uint32_t len;
    memset(m, 0, sizeof *m);
    if (n != MANIFEST_SIZE) {
        errorf(errmsg, "snapshot manifest has %zu bytes, expected %d", n, MANIFEST_SIZE);
        return CAIRN_ECORRUPT;
    }
    if (memcmp(b, MANIFEST_MAGIC, 4) != 0) {
        errorf(errmsg, "snapshot manifest has a bad magic");
        return CAIRN_ECORRUPT;
    }
    if (b[4] != 1 && b[4] != MANIFEST_VERSION) {
        errorf(errmsg, "snapshot manifest version %u is not supported", b[4]);
        return CAIRN_ECORRUPT;
    }
    if (XXH3_64bits(b, 172) != getU64(b + 172)) {
        errorf(errmsg, "snapshot manifest checksum mismatch");
        return CAIRN_ECORRUPT;
    }
    m->version = b[4];
    len = getU32(b + 40);
    if (len == 0 || len >= (m->version == 1 ? sizeof m->name : V2_NAME_MAX) ||
        memchr(b + 44, '/', len) != NULL) {
        errorf(errmsg, "snapshot manifest names an invalid file (length %u)", len);
        return CAIRN_ECORRUPT;
    }
    m->index = getU64(b + 8);
    m->db_index = getU64(b + 16);
    m->size = getU64(b + 24);
    m->digest = getU64(b + 32);
    memcpy(m->name, b + 44, len);
    if (m->version != 1) {
        memcpy(m->digest16, b + 44 + V2_NAME_MAX, 16);
    }
    return 0;
}

/* How often a follower whose database cannot commit tries again (followerWait). */
#define FOLLOWER_RETRY_MS 200
/* Grouped apply (followers): the entries kept for the end of the loop turn are run
 * sooner once they are this many, or would hold more than this many bytes. */
#define GROUP_MAX_ENTRIES 1024
#define GROUP_MAX_BYTES (8u << 20)
/* Entries a follower keeps behind a restore's swap while its copy is prepared, at most
 * (flushKept); past either bound it waits for the copy on the loop. */
#define HELD_MAX_ENTRIES 65536
#define HELD_MAX_BYTES (64u << 20)

/* ---- memory bounds of the in-memory log ---------------------------------------- */

static unsigned clampSpan(unsigned cfg, size_t budget, double avg)
{
    double n = avg > 0 ? (double)budget / avg : (double)cfg;
    if (n < 16) {
        n = 16;
    }
    return n < (double)cfg ? (unsigned)n : cfg;
}

/* The snapshot threshold for the span since the last snapshot: the entries it holds
 * plus as many more of the recent average size as fit in what is left of the byte
 * budget, within [16, the configured threshold]. Counting the bytes actually applied
 * (not entries times the current average) matters when the entry size changes: after
 * 16,000 small writes (3 MB) the first 1.2 MB request pushed the average so high that
 * the threshold fell below the span at once, and a snapshot nobody needed stalled the
 * next requests by 20-40 ms. */
static unsigned spanThreshold(const struct fsm *f)
{
    double left = f->span_bytes < f->log_budget ? (double)(f->log_budget - f->span_bytes) : 0;
    double th = (double)f->span_entries + (f->avg_entry > 0 ? left / f->avg_entry : 0);
    if (th < 16) {
        th = 16;
    }
    return th < (double)f->cfg_threshold ? (unsigned)th : f->cfg_threshold;
}

static void fsmAdjustLimits(struct fsm *f, size_t entry_len)
{
    unsigned th;
    unsigned tr;
    f->avg_entry = f->avg_entry * 0.95 + (double)entry_len * 0.05;
    f->span_bytes += entry_len;
    f->span_entries++;
    th = f->force_snapshot ? 1 : spanThreshold(f);
    tr = clampSpan(f->cfg_trailing, f->log_budget, f->avg_entry);
    if (th != f->cur_threshold) {
        raft_set_snapshot_threshold(f->raft, th);
        f->cur_threshold = th;
    }
    if (tr != f->cur_trailing) {
        raft_set_snapshot_trailing(f->raft, tr);
        f->cur_trailing = tr;
    }
}

void fsmSetLimits(struct fsm *f, unsigned threshold, unsigned trailing, size_t budget)
{
    f->cfg_threshold = threshold;
    f->cfg_trailing = trailing;
    f->log_budget = budget;
    f->avg_entry = 256;
    f->cur_threshold = threshold;
    f->cur_trailing = trailing;
    f->span_bytes = 0;
    f->span_entries = 0;
    raft_set_snapshot_threshold(f->raft, threshold);
    raft_set_snapshot_trailing(f->raft, trailing);
    fsmAdjustLimits(f, 256);
    f->span_bytes = 0;
    f->span_entries = 0;
}

/* ---- apply ------------------------------------------------------------------- */

/* Hand the result of entry index to the request waiting on it, if any. */
static void fsmDeliver(struct fsm *f, uint64_t index, const struct raft_buffer *buf,
                       struct cairn_result *res)
{
    if (f->applied == NULL || !f->applied(f->applied_arg, index, buf, res)) {
        cairn_result_free(res);
    }
}

static int applyBatch(struct fsm *f, const struct batch *b, uint64_t index,
                      struct cairn_result **res)
{
    if (b->kind == BATCH_DIGEST) {
        /* Changes nothing: the database as it is now is what every node digests. */
        *res = resultNew();
        if (*res == NULL) {
            errorf(f->errmsg, "out of memory");
            return CAIRN_ENOMEM;
        }
        (*res)->raft_index = index;
        if (f->digest != NULL) {
            f->digest(f->digest_data, index);
        }
        return 0;
    }
    if (b->kind == BATCH_RESTORE) {
        return f->restore != NULL
                   ? f->restore(f->restore_data, b, index, res, f->errmsg)
                   : (errorf(f->errmsg, "this node cannot restore"), CAIRN_EINVAL);
    }
    return storeApply(f->store, b, index, res, f->errmsg);
}

/* ---- grouped apply (followers) ------------------------------------------------ */

/* A follower answers no client, so it need not run an entry when libraft applies it:
 * it keeps a copy and runs the entries of one loop turn together at the end of the
 * turn (fsmFlush), in one transaction (store.h, "Grouped apply"). Two gains: one
 * commit per turn instead of one per entry (most of a follower's work for small
 * writes), and the acknowledgement of the next append leaves before the SQL runs
 * (libraft acknowledges an append only after applying what it commits, which put a
 * follower's 5 ms of SQL per 10,000-row request on the leader's critical path). The
 * copies also let it run the group again should it be rolled back. */
/* Drop the first k kept entries (run and committed, or never to be run). */
static void groupDrop(struct fsm *f, size_t k)
{
    assert(k <= f->grp_n);
    if (k == 0) {
        return;
    }
    for (size_t i = 0; i < k; i++) {
        f->grp_bytes -= f->grp[i].len;
        free(f->grp[i].bytes);
    }
    memmove(f->grp, f->grp + k, (f->grp_n - k) * sizeof *f->grp);
    f->grp_n -= k;
    if (f->grp_n == 0) {
        storeEarlyHold(f->store, false);
    }
}

/* Run saved entry i: grouped (in the open transaction) or on its own. Results go
 * nowhere. */
static int runSaved(struct fsm *f, size_t i, bool group)
{
    struct batch b;
    struct cairn_result *res = NULL;
    int rv = commandDecode(f->grp[i].bytes, f->grp[i].len, &b, f->errmsg);
    if (rv != 0) {
        /* The leader did not apply it either (fsmApply). Said once, as it is kept. */
        if (!f->grp[i].said) {
            fsmLog(f, "entry %llu cannot be decoded, not applied: %s",
                   (unsigned long long)f->grp[i].index, f->errmsg);
            f->grp[i].said = true;
        }
        return 0;
    }
    storeSetGrouping(f->store, group);
    rv = applyBatch(f, &b, f->grp[i].index, &res);
    storeSetGrouping(f->store, false);
    batchFree(&b);
    cairn_result_free(res);
    return rv;
}

/* Run kept entries [0, k) as one group and commit them. When the group was rolled back
 * (or one of its entries rolled it back), each runs again in a transaction of its own,
 * as a leader ran it; storeApply skips those already in the database, so a failure
 * part-way can simply be retried. */
static int runGroup(struct fsm *f, size_t k)
{
    int rv = 0;
    for (size_t i = 0; i < k && rv == 0; i++) {
        rv = runSaved(f, i, true); /* skips the entries already run */
    }
    if (rv == 0) {
        rv = storeFlush(f->store, f->errmsg);
    }
    if (rv == STORE_EREGROUP) {
        rv = 0;
        for (size_t i = 0; i < k && rv == 0; i++) {
            rv = runSaved(f, i, false);
        }
    }
    return rv;
}

/* Whether kept entry i, a boundary entry, can run without waiting (fsm_ready_fn). */
static bool keptReady(struct fsm *f, size_t i)
{
    struct batch b;
    bool ready = true;
    if (f->ready != NULL && commandDecode(f->grp[i].bytes, f->grp[i].len, &b, f->errmsg) == 0) {
        ready = f->ready(f->restore_data, &b, f->grp[i].index);
        batchFree(&b);
    }
    return ready;
}

/* A follower's database could not commit (disk full, I/O error) what libraft counts
 * as applied: an entry, or the entries kept for the end of the turn. libraft 0.15 must
 * not see that: a failed apply while it handles a heartbeat turns the follower
 * UNAVAILABLE for good (recvCb -> convertToUnavailable), so that even once space is
 * freed it never applies again until restarted; while it handles an append it
 * withholds the answer. So the follower waits here, calling again(arg) every
 * FOLLOWER_RETRY_MS, until the database takes it or the node stops. Its loop is held
 * meanwhile: the leader sees it as slow and the cluster goes on without it; its HTTP
 * front end still answers (reads, forwarding, /status with the figures of before). A
 * leader keeps libraft's own retry (it tolerates the failure) and refuses new writes
 * (node.c). what names it in the log ("entry 17"). */
static int followerWait(struct fsm *f, const char *what, uint64_t need, int rv,
                        int (*again)(void *arg), void *arg)
{
    const struct timespec pause = {0, FOLLOWER_RETRY_MS * 1000000L};
    unsigned long tries = 0;
    unsigned long heal_at = 0;
    fsmLog(f, "applying %s failed: %s; this follower waits and tries again every %d ms "
              "until the database can be written (free space, fix the disk)",
           what, f->errmsg, FOLLOWER_RETRY_MS);
    f->apply_failed = rv;
    snprintf(f->apply_errmsg, sizeof f->apply_errmsg, "%s", f->errmsg);
    while (rv != 0 && !atomic_load(&f->stop)) {
        if (rv == CAIRN_ECORRUPT && f->heal != NULL && tries >= heal_at) {
            /* A page of the database failed its checksum: trying again cannot help.
             * Take a healthy copy from a peer (one at or past the entries before this
             * one), then apply again. Asked again every few seconds when it fails. */
            char why[CAIRN_ERRMSG_SIZE];
            heal_at = tries + 5000 / FOLLOWER_RETRY_MS;
            if (f->heal(f->heal_data, need, why) == 0) {
                fsmLog(f, "applying %s: the database was damaged (%s); replaced it with a "
                          "peer's healthy copy",
                       what, f->apply_errmsg);
                rv = again(arg);
                continue;
            }
            fsmLog(f, "applying %s: cannot take a healthy copy from a peer yet: %s", what, why);
        }
        nanosleep(&pause, NULL);
        tries++;
        rv = again(arg);
    }
    if (rv == 0) {
        fsmLog(f, "%s applied after %lu more tries: the database can be written again", what,
               tries);
        f->apply_failed = 0;
    }
    return rv;
}

/* Run the kept entries in order: plain ones together in groups, each boundary entry (a
 * restore, a digest) on its own between two groups, with every entry before it
 * committed. With wait false, stop at a boundary entry that is not ready (a restore's
 * swap whose copy is being prepared, liverestore.h): it and the entries after it stay
 * kept, and *held says so; they run at a later turn. With wait true, such an entry
 * waits for its copy (on the loop). */
static int flushKept(struct fsm *f, bool wait, bool *held)
{
    int rv;
    *held = false;
    while (f->grp_n > 0 || storeGroupOpen(f->store)) {
        size_t k = 0;
        while (k < f->grp_n && !f->grp[k].boundary) {
            k++;
        }
        if (k > 0 || storeGroupOpen(f->store)) {
            if ((rv = runGroup(f, k)) != 0) {
                return rv;
            }
            groupDrop(f, k);
            continue;
        }
        if (!wait && !keptReady(f, 0)) {
            if (f->held_index != f->grp[0].index) {
                fsmLog(f, "entry %llu (a restore's swap) waits for its copy, being prepared "
                          "off the loop; this follower keeps it and the entries after it "
                          "meanwhile",
                       (unsigned long long)f->grp[0].index);
                f->held_index = f->grp[0].index;
                clock_gettime(CLOCK_MONOTONIC, &f->held_since);
            }
            *held = true;
            return 0;
        }
        if ((rv = runSaved(f, 0, false)) != 0) {
            return rv;
        }
        if (f->held_index == f->grp[0].index) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            fsmLog(f, "entry %llu applied after %.2f s held, with the %zu entries kept after it",
                   (unsigned long long)f->held_index,
                   (double)(now.tv_sec - f->held_since.tv_sec) +
                       (double)(now.tv_nsec - f->held_since.tv_nsec) / 1e9,
                   f->grp_n - 1);
            f->held_index = 0;
        }
        groupDrop(f, 1);
    }
    return 0;
}

static int flushAgain(void *arg)
{
    bool held;
    return flushKept(arg, true, &held);
}

static int flushTurnAgain(void *arg)
{
    bool held;
    return flushKept(arg, false, &held);
}

int fsmFlush(struct fsm *f)
{
    bool held;
    int rv;
    /* An early run's entry is not applied yet: whoever flushes wants the database as
     * applied. */
    storeEarlyDiscard(f->store);
    if (f->grp_n == 0 && !storeGroupOpen(f->store)) {
        return 0;
    }
    rv = flushKept(f, true, &held);
    if (rv != 0 && raft_state(f->raft) == RAFT_FOLLOWER) {
        rv = followerWait(f, "the entries kept this turn", f->grp_n > 0 ? f->grp[0].index : 0, rv,
                          flushAgain, f);
    }
    return rv;
}

int fsmEndOfTurn(struct fsm *f)
{
    bool held;
    int rv;
    if (f->grp_n == 0) {
        return 0;
    }
    storeEarlyDiscard(f->store);
    rv = flushKept(f, false, &held);
    if (rv != 0 && raft_state(f->raft) == RAFT_FOLLOWER) {
        rv = followerWait(f, "the entries kept this turn", f->grp_n > 0 ? f->grp[0].index : 0, rv,
                          flushTurnAgain, f);
    }
    return rv;
}

bool fsmPending(const struct fsm *f)
{
    return f->grp_n > 0 || storeGroupOpen(f->store);
}

bool fsmHeld(const struct fsm *f)
{
    return f->held_index != 0 && f->grp_n > 0 && f->grp[0].index == f->held_index;
}

void fsmEntryKey(const void *p, size_t len, unsigned char key[STORE_EARLY_KEY])
{
    uint64_t n = len;
    size_t k = len < 8 ? len : 8;
    memset(key, 0, STORE_EARLY_KEY);
    memcpy(key, &n, sizeof n);
    memcpy(key + 8, (const char *)p + len - k, k); /* the command's checksum */
}

/* Keep a copy of entry index to run at the end of the turn. */
static int groupSave(struct fsm *f, uint64_t index, const struct raft_buffer *buf)
{
    int rv;
    if (f->grp_n > 0 && (f->grp_n >= GROUP_MAX_ENTRIES || f->grp_bytes + buf->len > GROUP_MAX_BYTES)) {
        if ((rv = fsmEndOfTurn(f)) != 0) {
            return rv;
        }
        /* Held behind a restore's swap (flushKept): kept up to a bound, then waited for. */
        if (f->grp_n >= HELD_MAX_ENTRIES || f->grp_bytes + buf->len > HELD_MAX_BYTES) {
            fsmLog(f, "%zu entries (%zu bytes) are held behind entry %llu: this follower now "
                      "waits for the restore's copy before it takes more",
                   f->grp_n, f->grp_bytes, (unsigned long long)f->held_index);
            if ((rv = fsmFlush(f)) != 0) {
                return rv;
            }
        }
    }
    if (f->grp_n == f->grp_cap) {
        size_t cap = f->grp_cap ? f->grp_cap * 2 : 64;
        struct group_entry *g = realloc(f->grp, cap * sizeof *g);
        if (g == NULL) {
            errorf(f->errmsg, "out of memory keeping entry %llu", (unsigned long long)index);
            return CAIRN_ENOMEM;
        }
        f->grp = g;
        f->grp_cap = cap;
    }
    f->grp[f->grp_n].bytes = malloc(buf->len ? buf->len : 1);
    if (f->grp[f->grp_n].bytes == NULL) {
        errorf(f->errmsg, "out of memory keeping entry %llu", (unsigned long long)index);
        return CAIRN_ENOMEM;
    }
    memcpy(f->grp[f->grp_n].bytes, buf->base, buf->len);
    f->grp[f->grp_n].len = buf->len;
    f->grp[f->grp_n].index = index;
    f->grp[f->grp_n].said = false;
    f->grp[f->grp_n].boundary = commandKind(buf->base, buf->len) == BATCH_RESTORE ||
                                commandKind(buf->base, buf->len) == BATCH_DIGEST;
    if (f->grp_n++ == 0) {
        /* libraft counts the kept entries as applied, the database does not have them
         * yet: no early run may start from it (store.h). */
        storeEarlyHold(f->store, true);
    }
    f->grp_bytes += buf->len;
    return 0;
}

/* Apply one entry: b NULL, a follower keeps its bytes for the end of the turn; a
 * decoded entry (on a leader, or a restore) runs now, after the kept entries. */
static int applyEntry(struct fsm *f, const struct batch *b, const struct raft_buffer *buf,
                      uint64_t index, struct cairn_result **res)
{
    int rv;
    if (b == NULL) {
        return groupSave(f, index, buf);
    }
    if ((rv = fsmFlush(f)) != 0) {
        return rv;
    }
    return applyBatch(f, b, index, res);
}

/* applyEntry's arguments, for followerWait. */
struct entry_args {
    struct fsm *f;
    const struct batch *b;
    const struct raft_buffer *buf;
    uint64_t index;
    struct cairn_result **res;
};

static int applyAgain(void *arg)
{
    struct entry_args *a = arg;
    return applyEntry(a->f, a->b, a->buf, a->index, a->res);
}

/* Entry index is in the database: say so if the last apply had failed, and hand res
 * over. */
static void applied(struct fsm *f, uint64_t index, const struct raft_buffer *buf,
                    struct cairn_result *res)
{
    if (f->apply_failed) {
        fsmLog(f, "entry %llu applied: the database can be written again",
               (unsigned long long)index);
        f->apply_failed = 0;
    }
    fsmDeliver(f, index, buf, res);
}

static int fsmApply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct fsm *f = rf->data;
    uint64_t index = raft_last_applied(f->raft) + 1; /* libraft advances it after apply */
    struct cairn_result *res = NULL;
    const struct batch *bp = NULL; /* &b once decoded */
    struct batch b;
    int rv;

    *result = NULL; /* results reach their waiters through f->applied */
    if (f->committed != NULL) {
        f->committed(f->archive_data, index, buf); /* committed, whatever apply does */
    }
    fsmAdjustLimits(f, buf->len);
    {
        unsigned char key[STORE_EARLY_KEY];
        fsmEntryKey(buf->base, buf->len, key);
        res = storeEarlyCommit(f->store, index, key);
        if (res != NULL) { /* run early by the thread that proposed it (node.c) */
            applied(f, index, buf, res);
            return 0;
        }
    }

    /* A follower keeps the bytes for the end of the turn and decodes them only then
     * (runSaved, applyEntry with no batch); a restore or a digest runs there on its own,
     * after the entries before it are committed (flushKept). */
    memset(&b, 0, sizeof b);
    if (raft_state(f->raft) != RAFT_FOLLOWER) {
        rv = commandDecode(buf->base, buf->len, &b, f->errmsg);
        if (rv != 0) {
            /* Every node holds the same bytes, so answering with an error (and not
             * applying) is deterministic; stopping would wedge the cluster. */
            fsmLog(f, "entry %llu cannot be decoded, not applied: %s", (unsigned long long)index,
                   f->errmsg);
            res = resultNew();
            if (res != NULL) {
                struct rstmt *rs = resultAdd(res);
                if (rs != NULL) {
                    resultError(rs, f->errmsg);
                }
            }
            fsmDeliver(f, index, buf, res);
            return 0;
        }
        bp = &b;
    }
    rv = applyEntry(f, bp, buf, index, &res);
    if (rv != 0 && raft_state(f->raft) == RAFT_FOLLOWER) {
        struct entry_args a = {f, bp, buf, index, &res};
        char what[40];
        snprintf(what, sizeof what, "entry %llu", (unsigned long long)index);
        rv = followerWait(f, what, index, rv, applyAgain, &a);
    }
    batchFree(&b);
    if (rv != 0) {
        /* The database could not commit (disk full, I/O error). libraft keeps the
         * entry unapplied and retries it with the next commit. */
        fsmLog(f, "applying entry %llu failed, will retry: %s", (unsigned long long)index,
               f->errmsg);
        f->apply_failed = rv;
        snprintf(f->apply_errmsg, sizeof f->apply_errmsg, "%s", f->errmsg);
        return RAFT_IOERR;
    }
    applied(f, index, buf, res);
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------ */

static void snapPath(struct fsm *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->snap_dir, name);
}

/* A snapshot that cannot be written now for a cause that waiting does not cure (disk
 * full, I/O error): counted, so that whoever waits for it (nodeSnapshot) hears why at
 * once rather than after its time runs out. A reader holding the WAL back (CAIRN_EBUSY)
 * is not counted: the next try is likely to pass. Loop or worker thread, one snapshot
 * at a time; the message is complete before the count moves. */
static void snapshotFailed(struct fsm *f, int rv, const char *errmsg)
{
    f->snapshot_error = rv;
    snprintf(f->snapshot_errmsg, sizeof f->snapshot_errmsg, "%s", errmsg);
    atomic_fetch_add(&f->snapshot_failures, 1);
}

/* Loop thread: freeze the database (storeFreeze); the worker copies it. */
static int fsmSnapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    struct raft_buffer *b;
    int rv;

    f->snapshot_deferred = true; /* until the copy starts, below */
    if (f->force_snapshot) {
        f->force_snapshot = false;
        f->cur_threshold = 0; /* the next apply sets the usual threshold again */
    }
    if (f->grp_n > 0) {
        /* Entries held behind a restore's swap are not in the database yet, and the
         * snapshot must not wait for the copy on the loop: libraft asks again later. */
        bool held;
        storeEarlyDiscard(f->store);
        if (flushKept(f, false, &held) == 0 && held) {
            return RAFT_BUSY;
        }
    }
    if ((rv = fsmFlush(f)) != 0 || (rv = storeFreeze(f->store, &f->fz, f->errmsg)) != 0) {
        fsmLog(f, "snapshot not taken now: %s", f->errmsg);
        if (rv != CAIRN_EBUSY) {
            snapshotFailed(f, rv, f->errmsg);
        }
        return RAFT_BUSY; /* libraft tries again later */
    }
    f->fz_term = f->raft->current_term;
    f->span_bytes = 0; /* the snapshot covers every entry applied so far */
    f->span_entries = 0;
    memset(&m, 0, sizeof m);
    m.version = MANIFEST_VERSION;
    m.index = raft_last_applied(f->raft);
    m.db_index = f->fz.index;
    f->snap_manifest = m; /* the worker completes it */

    b = raft_malloc(sizeof *b);
    if (b == NULL) {
        storeThaw(&f->fz);
        return RAFT_NOMEM;
    }
    b->len = MANIFEST_SIZE;
    b->base = raft_malloc(MANIFEST_SIZE);
    if (b->base == NULL) {
        raft_free(b);
        storeThaw(&f->fz);
        return RAFT_NOMEM;
    }
    manifestEncode(&m, b->base);
    *bufs = b;
    *n_bufs = 1;
    f->snapshot_deferred = false;
    return 0;
}

/* Incremental when the newest snapshot backup has fewer than SNAPSHOT_CHAIN_MAX - 1
 * incrementals behind it, else full. */
static int snapshotType(struct fsm *f)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int type = BACKUP_FULL;
    unsigned chain = 0;
    if (repoList(f->snap_dir, &list, &n, errmsg) != 0) {
        return BACKUP_FULL;
    }
    for (size_t i = n; i-- > 0;) {
        if (list[i].error[0] != '\0' || strcmp(list[i].source, f->source) != 0) {
            continue;
        }
        if (list[i].type == BACKUP_FULL) {
            type = chain + 1 < SNAPSHOT_CHAIN_MAX ? BACKUP_INCREMENTAL : BACKUP_FULL;
            break;
        }
        chain++;
    }
    free(list);
    return type;
}

/* Worker thread: write the frozen image as a backup in DATA/snapshots/. */
static int fsmSnapshotAsync(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    struct backup_source src;
    struct backup_options opt;
    struct backup_info info;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int rv;

    m = f->snap_manifest;
    memset(&src, 0, sizeof src);
    src.fd = f->fz.fd;
    /* The image is the database at the snapshot's Raft index (entries after db_index,
     * barriers and configuration changes, do not touch it). */
    src.raft_index = m.index;
    src.raft_term = f->fz_term;
    src.source = f->source;
    src.verify_pages = true;
    memset(&opt, 0, sizeof opt);
    opt.type = snapshotType(f);
    opt.repo = f->snap_dir;
    rv = backupCreate(&src, &opt, &info, errmsg);
    if (rv != 0) {
        fsmLog(f, "snapshot %llu failed: %s", (unsigned long long)m.index, errmsg);
        snapshotFailed(f, rv, errmsg);
        return rv == CAIRN_ENOSPC ? RAFT_NOSPACE : RAFT_IOERR;
    }
    snprintf(m.name, sizeof m.name, "%s", info.id);
    memcpy(m.digest16, info.digest, sizeof m.digest16);
    m.size = info.size_bytes;
    manifestEncode(&m, (*bufs)[0].base);
    return 0;
}

/* Keep the backups that the newest keep_snapshots snapshots need, each with its chain
 * back to its full backup (libraft keeps its two newest snapshots, each naming one),
 * and delete the older ones. Plain copies written by earlier builds
 * (snapshot-<index>.db) go once that many backups exist. Loop thread. */
static void pruneSnapshots(struct fsm *f)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    size_t seen = 0;
    size_t root = 0;
    bool found = false;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char path[PATH_MAX];
    DIR *d;
    struct dirent *e;

    if (repoList(f->snap_dir, &list, &n, errmsg) != 0) {
        return;
    }
    /* From the newest back: count keep_snapshots snapshots, then go on to the first
     * full backup, which roots the chain of the oldest one kept. */
    for (size_t i = n; i-- > 0;) {
        if (list[i].error[0] != '\0') {
            continue;
        }
        if (seen < f->keep_snapshots) {
            seen++;
        }
        if (seen == f->keep_snapshots && list[i].type == BACKUP_FULL) {
            root = i;
            found = true;
            break;
        }
    }
    for (size_t i = 0; found && i < root; i++) {
        unlink(list[i].path);
        snprintf(path, sizeof path, "%s/%s.verified", f->snap_dir, list[i].id);
        unlink(path);
    }
    free(list);
    if (!found || (d = opendir(f->snap_dir)) == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "snapshot-", 9) == 0 && len > 3 &&
            strcmp(e->d_name + len - 3, ".db") == 0) {
            snapPath(f, e->d_name, path, sizeof path);
            unlink(path);
        }
    }
    closedir(d);
}

static int fsmSnapshotFinalize(struct raft_fsm *rf, struct raft_buffer *bufs[],
                               unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    storeThaw(&f->fz);
    if (*bufs != NULL) {
        if (manifestDecode((*bufs)[0].base, (*bufs)[0].len, &m, f->errmsg) == 0 && m.size > 0) {
            f->snapshots_taken++;
            f->last_snapshot_index = m.index;
            fsmLog(f, "snapshot %llu written: %s, %llu bytes", (unsigned long long)m.index,
                   m.name, (unsigned long long)m.size);
        }
        for (unsigned i = 0; i < *n_bufs; i++) {
            raft_free((*bufs)[i].base);
        }
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    pruneSnapshots(f);
    return 0;
}

/* Install a version 1 snapshot: a plain SQLite copy checked by size and XXH3-64. */
static int restorePlain(struct fsm *f, const struct snapshot_manifest *m)
{
    char path[PATH_MAX];
    uint64_t size;
    uint64_t digest;
    int rv;

    snapPath(f, m->name, path, sizeof path);
    rv = fileDigest(path, &size, &digest, f->errmsg);
    if (rv != 0) {
        return RAFT_NOTFOUND;
    }
    if (size != m->size || digest != m->digest) {
        errorf(f->errmsg,
               "snapshot file %s does not match its manifest (size %llu, expected %llu; "
               "digest %016llx, expected %016llx)",
               path, (unsigned long long)size, (unsigned long long)m->size,
               (unsigned long long)digest, (unsigned long long)m->digest);
        return RAFT_CORRUPT;
    }
    return storeReplaceWith(f->store, path, f->errmsg) == 0 ? 0 : RAFT_IOERR;
}

/* Install a version 2 snapshot: restore the backup chain it names (every file and
 * page checked by the engine) beside the database, then swap it in. */
static int restoreBackup(struct fsm *f, const struct snapshot_manifest *m)
{
    struct backup_info info;
    struct restore_options opt;
    char tmp[PATH_MAX];
    int rv;

    rv = repoFind(f->snap_dir, m->name, &info, f->errmsg);
    if (rv != 0 && f->fetch != NULL) {
        /* A snapshot sent by the leader names the leader's files: fetch them. */
        fsmLog(f, "snapshot %llu: fetching backup %s and its chain from the cluster",
               (unsigned long long)m->index, m->name);
        if ((rv = f->fetch(f->fetch_data, f->snap_dir, m->name, f->errmsg)) == 0) {
            rv = repoFind(f->snap_dir, m->name, &info, f->errmsg);
        }
    }
    if (rv != 0) {
        return RAFT_NOTFOUND;
    }
    if (memcmp(info.digest, m->digest16, sizeof m->digest16) != 0) {
        errorf(f->errmsg, "snapshot backup %s is not the file the snapshot names (digest "
                          "differs)", info.path);
        return RAFT_CORRUPT;
    }
    snprintf(tmp, sizeof tmp, "%s.restored", storePath(f->store));
    memset(&opt, 0, sizeof opt);
    opt.repo = f->snap_dir;
    opt.ref = info.id;
    opt.out = tmp;
    opt.force = true;
    if ((rv = backupRestore(&opt, NULL, f->errmsg)) != 0) {
        unlink(tmp);
        return rv == CAIRN_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    if (storeReplaceMove(f->store, tmp, f->errmsg) != 0) {
        unlink(tmp);
        return RAFT_IOERR;
    }
    return 0;
}

static int fsmRestore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    int rv;

    rv = manifestDecode(buf->base, buf->len, &m, f->errmsg);
    if (rv != 0) {
        fsmLog(f, "cannot restore snapshot: %s", f->errmsg);
        return RAFT_CORRUPT;
    }
    if (f->installed != NULL) {
        f->installed(f->archive_data, m.index);
    }
    f->span_bytes = 0; /* the log now starts after the snapshot */
    f->span_entries = 0;
    if ((rv = fsmFlush(f)) != 0) {
        fsmLog(f, "cannot restore snapshot %llu now: %s", (unsigned long long)m.index,
               f->errmsg);
        return RAFT_IOERR;
    }
    if (storeAppliedIndex(f->store) >= m.db_index) {
        /* The database already holds everything the snapshot does: keep it, and let
         * the log replay skip what is applied. */
        fsmLog(f, "snapshot %llu: database already at index %llu, kept as it is",
               (unsigned long long)m.index, (unsigned long long)storeAppliedIndex(f->store));
        raft_free(buf->base);
        return 0;
    }
    rv = m.version == 1 ? restorePlain(f, &m) : restoreBackup(f, &m);
    if (rv != 0) {
        fsmLog(f, "cannot restore snapshot %llu: %s", (unsigned long long)m.index, f->errmsg);
        return rv;
    }
    fsmLog(f, "database restored from snapshot %llu (%s), now at index %llu",
           (unsigned long long)m.index, m.name,
           (unsigned long long)storeAppliedIndex(f->store));
    raft_free(buf->base);
    return 0;
}

void fsmInit(struct fsm *f, struct raft_fsm *rf, struct store *store, struct raft *raft,
             const char *snap_dir)
{
    memset(rf, 0, sizeof *rf);
    f->store = store;
    f->raft = raft;
    f->applied = NULL;
    f->applied_arg = NULL;
    atomic_init(&f->stop, false);
    f->keep_snapshots = 3;
    snprintf(f->snap_dir, sizeof f->snap_dir, "%s", snap_dir);
    f->fz.fd = -1;
    {
        /* The same source name as the server's backups: "cairnd:<data directory>". */
        char dir[PATH_MAX];
        char real[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", snap_dir);
        char *slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
        }
        if (realpath(dir, real) == NULL) {
            snprintf(real, sizeof real, "%s", dir);
        }
        snprintf(f->source, sizeof f->source, "cairnd:%s", real);
    }
    rf->version = 3;
    rf->data = f;
    rf->apply = fsmApply;
    rf->snapshot = fsmSnapshot;
    rf->restore = fsmRestore;
    rf->snapshot_finalize = fsmSnapshotFinalize;
    rf->snapshot_async = fsmSnapshotAsync;
}

void fsmClose(struct fsm *f)
{
    groupDrop(f, f->grp_n);
    free(f->grp);
    f->grp = NULL;
    f->grp_cap = 0;
    f->applied = NULL;
    f->applied_arg = NULL;
}
