/* libraft state machine over the store (see fsm.h).
 * Loop thread, except fsmSnapshotAsync (libuv thread pool). */
#define _GNU_SOURCE
#include "fsm.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "buf.h"
#include "command.h"

static void fsmLog(struct fsm *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fsmLog(struct fsm *f, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    if (f->log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    f->log(f->log_data, line);
}

/* ---- manifest: magic(4) version(1) pad(3) index db_index size digest (8 each)
 *      name_len(4) name(128, zero padded) xxh3(8) = 180 bytes ---------------- */

static void putU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

void manifestEncode(const struct snapshot_manifest *m, unsigned char out[MANIFEST_SIZE])
{
    size_t len = strnlen(m->name, sizeof m->name - 1);
    memset(out, 0, MANIFEST_SIZE);
    memcpy(out, MANIFEST_MAGIC, 4);
    out[4] = MANIFEST_VERSION;
    putU64(out + 8, m->index);
    putU64(out + 16, m->db_index);
    putU64(out + 24, m->size);
    putU64(out + 32, m->digest);
    out[40] = (unsigned char)len;
    memcpy(out + 44, m->name, len);
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
    if (b[4] != MANIFEST_VERSION) {
        errorf(errmsg, "snapshot manifest version %u is not supported", b[4]);
        return CAIRN_ECORRUPT;
    }
    if (XXH3_64bits(b, 172) != getU64(b + 172)) {
        errorf(errmsg, "snapshot manifest checksum mismatch");
        return CAIRN_ECORRUPT;
    }
    len = getU32(b + 40);
    if (len == 0 || len >= sizeof m->name || memchr(b + 44, '/', len) != NULL) {
        errorf(errmsg, "snapshot manifest names an invalid file (length %u)", len);
        return CAIRN_ECORRUPT;
    }
    m->index = getU64(b + 8);
    m->db_index = getU64(b + 16);
    m->size = getU64(b + 24);
    m->digest = getU64(b + 32);
    memcpy(m->name, b + 44, len);
    return 0;
}

/* ---- memory bounds of the in-memory log ---------------------------------------- */

static unsigned clampSpan(unsigned cfg, size_t budget, double avg)
{
    double n = avg > 0 ? (double)budget / avg : (double)cfg;
    if (n < 16) {
        n = 16;
    }
    return n < (double)cfg ? (unsigned)n : cfg;
}

static void fsmAdjustLimits(struct fsm *f, size_t entry_len)
{
    unsigned th;
    unsigned tr;
    f->avg_entry = f->avg_entry * 0.95 + (double)entry_len * 0.05;
    th = clampSpan(f->cfg_threshold, f->log_budget, f->avg_entry);
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
    raft_set_snapshot_threshold(f->raft, threshold);
    raft_set_snapshot_trailing(f->raft, trailing);
    fsmAdjustLimits(f, 256);
}

/* ---- apply ------------------------------------------------------------------- */

static int fsmApply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct fsm *f = rf->data;
    uint64_t index = raft_last_applied(f->raft) + 1; /* libraft advances it after apply */
    struct cairn_result *res = NULL;
    struct batch b;
    int rv;

    cairn_result_free(f->pending); /* nobody waited for the previous one */
    f->pending = NULL;
    *result = NULL;
    fsmAdjustLimits(f, buf->len);

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
        f->pending = res;
        *result = res;
        return 0;
    }
    rv = storeApply(f->store, &b, index, &res, f->errmsg);
    batchFree(&b);
    if (rv != 0) {
        /* The database could not commit (disk full, I/O error). libraft keeps the
         * entry unapplied and retries it with the next commit. */
        fsmLog(f, "applying entry %llu failed, will retry: %s", (unsigned long long)index,
               f->errmsg);
        return RAFT_IOERR;
    }
    f->pending = res;
    *result = res;
    return 0;
}

struct cairn_result *fsmTakeResult(struct fsm *f, void *result)
{
    if (result != NULL && result == f->pending) {
        f->pending = NULL;
    }
    return result;
}

/* ---- snapshots ------------------------------------------------------------------ */

static void snapPath(struct fsm *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->snap_dir, name);
}

static int fsmSnapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    struct raft_buffer *b;
    uint64_t db_index;
    int rv;

    rv = storeSnapshotBegin(f->store, &db_index, f->errmsg);
    if (rv != 0) {
        fsmLog(f, "snapshot not taken: %s", f->errmsg);
        return RAFT_BUSY; /* libraft tries again later */
    }
    memset(&m, 0, sizeof m);
    m.index = raft_last_applied(f->raft);
    m.db_index = db_index;
    snprintf(m.name, sizeof m.name, "snapshot-%020llu.db", (unsigned long long)m.index);

    b = raft_malloc(sizeof *b);
    if (b == NULL) {
        storeSnapshotEnd(f->store);
        return RAFT_NOMEM;
    }
    b->len = MANIFEST_SIZE;
    b->base = raft_malloc(MANIFEST_SIZE);
    if (b->base == NULL) {
        raft_free(b);
        storeSnapshotEnd(f->store);
        return RAFT_NOMEM;
    }
    manifestEncode(&m, b->base);
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsmSnapshotAsync(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    char path[PATH_MAX];
    char errmsg[CAIRN_ERRMSG_SIZE];
    int rv;

    rv = manifestDecode((*bufs)[0].base, (*bufs)[0].len, &m, errmsg);
    if (rv != 0) {
        return RAFT_CORRUPT;
    }
    snapPath(f, m.name, path, sizeof path);
    rv = storeSnapshotWrite(f->store, path, &m.size, &m.digest, errmsg);
    if (rv != 0) {
        fsmLog(f, "snapshot %llu failed: %s", (unsigned long long)m.index, errmsg);
        return RAFT_IOERR;
    }
    manifestEncode(&m, (*bufs)[0].base);
    return 0;
}

static int cmpStr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keep the newest keep_snapshots snapshot files: libraft keeps its two newest
 * snapshots, and each names one of these files. */
static void pruneSnapshots(struct fsm *f)
{
    DIR *d = opendir(f->snap_dir);
    struct dirent *e;
    char *names[256];
    size_t n = 0;
    size_t i;
    char path[PATH_MAX];
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL && n < 256) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "snapshot-", 9) == 0 && len > 3 &&
            strcmp(e->d_name + len - 3, ".db") == 0) {
            names[n] = strdup(e->d_name);
            if (names[n] != NULL) {
                n++;
            }
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmpStr);
    for (i = 0; i < n; i++) {
        if (i + f->keep_snapshots < n) {
            snapPath(f, names[i], path, sizeof path);
            unlink(path);
        }
        free(names[i]);
    }
}

static int fsmSnapshotFinalize(struct raft_fsm *rf, struct raft_buffer *bufs[],
                               unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    storeSnapshotEnd(f->store);
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

static int fsmRestore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct fsm *f = rf->data;
    struct snapshot_manifest m;
    char path[PATH_MAX];
    uint64_t size;
    uint64_t digest;
    int rv;

    rv = manifestDecode(buf->base, buf->len, &m, f->errmsg);
    if (rv != 0) {
        fsmLog(f, "cannot restore snapshot: %s", f->errmsg);
        return RAFT_CORRUPT;
    }
    if (storeAppliedIndex(f->store) >= m.db_index) {
        /* The database already holds everything the snapshot does: keep it, and let
         * the log replay skip what is applied. */
        fsmLog(f, "snapshot %llu: database already at index %llu, kept as it is",
               (unsigned long long)m.index, (unsigned long long)storeAppliedIndex(f->store));
        raft_free(buf->base);
        return 0;
    }
    snapPath(f, m.name, path, sizeof path);
    rv = fileDigest(path, &size, &digest, f->errmsg);
    if (rv != 0) {
        fsmLog(f, "cannot restore snapshot %llu: %s", (unsigned long long)m.index, f->errmsg);
        return RAFT_NOTFOUND;
    }
    if (size != m.size || digest != m.digest) {
        errorf(f->errmsg,
               "snapshot file %s does not match its manifest (size %llu, expected %llu; "
               "digest %016llx, expected %016llx)",
               path, (unsigned long long)size, (unsigned long long)m.size,
               (unsigned long long)digest, (unsigned long long)m.digest);
        fsmLog(f, "cannot restore snapshot: %s", f->errmsg);
        return RAFT_CORRUPT;
    }
    rv = storeReplaceWith(f->store, path, f->errmsg);
    if (rv != 0) {
        fsmLog(f, "cannot restore snapshot %llu: %s", (unsigned long long)m.index, f->errmsg);
        return RAFT_IOERR;
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
    f->pending = NULL;
    f->keep_snapshots = 3;
    snprintf(f->snap_dir, sizeof f->snap_dir, "%s", snap_dir);
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
    cairn_result_free(f->pending);
    f->pending = NULL;
}
