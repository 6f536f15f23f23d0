/* The SQLite state machine (see store.h).
 *
 * Threads: the writer connection, the cached internal statements and the PRNG belong
 * to the loop thread. Readers are pooled under rmu and used by one thread at a time;
 * swap_lock (read-held while a reader is in use) lets the loop thread replace the
 * database file without a reader touching the old one halfway. The snapshot
 * connection is opened by the loop thread, read by one worker, closed by the loop. */
#define _GNU_SOURCE
#include "store.h"

#include <dirent.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "error.h"
#include "pagesum.h"
#include "policy.h"
#include "sqlerr.h"
#include "vtab.h"
#include "lib.h"
#include "membudget.h"

#define META_TABLE "_cairn_meta"
#define BUSY_TIMEOUT_MS 10000

/* A small cache of prepared statements per connection, keyed by the exact SQL text:
 * bulk requests repeat one INSERT thousands of times, and preparing it again each
 * time costs more than running it. */
#define STMT_CACHE_SIZE 16
/* WAL frames after which the checkpointer thread is woken, and after which the writer
 * checkpoints itself because the checkpointer cannot keep up (a reader holding an old
 * snapshot, or a slow disk): SQLite's default is 1000 frames, done inside the commit
 * that crosses it, which made every third 10,000-row apply twice as slow. */
#define CKPT_FRAMES 1000
#define CKPT_HARD_FRAMES 65536
/* A checkpoint that readers held back is tried again this often, this many times. */
#define CKPT_RETRY_MS 200
#define CKPT_RETRIES 50
/* After those, while a reader still holds frames back: a try every CKPT_SLOW_MS, for as
 * long as it takes (a read may run for minutes; each try costs a few system calls). */
#define CKPT_SLOW_MS 2000
struct stmt_cache {
    struct {
        char *sql;
        size_t len;
        sqlite3_stmt *ps;
        uint64_t used;
    } e[STMT_CACHE_SIZE];
    uint64_t clock;
};

static sqlite3_stmt *cacheGet(struct stmt_cache *c, const char *sql, size_t len)
{
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        if (c->e[i].ps != NULL && c->e[i].len == len && memcmp(c->e[i].sql, sql, len) == 0) {
            if (sqlite3_expired(c->e[i].ps)) {
                /* Prepared again by its step, the memory of the new program would count
                 * against the statement's memory limit (memlimit.h) on this node only:
                 * one that restarted prepares it afresh, outside the step. */
                sqlite3_finalize(c->e[i].ps);
                free(c->e[i].sql);
                memset(&c->e[i], 0, sizeof c->e[i]);
                return NULL;
            }
            c->e[i].used = ++c->clock;
            return c->e[i].ps;
        }
    }
    return NULL;
}

/* Keep ps in the cache (the cache owns it from now on). False when it could not be
 * kept: the caller still owns it. */
static bool cachePut(struct stmt_cache *c, const char *sql, size_t len, sqlite3_stmt *ps)
{
    int victim = 0;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return false;
    }
    memcpy(copy, sql, len);
    for (int i = 1; i < STMT_CACHE_SIZE; i++) {
        if (c->e[i].used < c->e[victim].used) {
            victim = i;
        }
    }
    sqlite3_finalize(c->e[victim].ps);
    free(c->e[victim].sql);
    c->e[victim].sql = copy;
    c->e[victim].len = len;
    c->e[victim].ps = ps;
    c->e[victim].used = ++c->clock;
    return true;
}

static void cacheClear(struct stmt_cache *c)
{
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        sqlite3_finalize(c->e[i].ps);
        free(c->e[i].sql);
    }
    memset(c, 0, sizeof *c);
}

struct reader {
    struct stmt_cache cache;
    struct policy_conn pol;
    sqlite3 *db;
    unsigned generation;
    struct reader *next;
};

struct store {
    char path[PATH_MAX - 64]; /* room for suffixes like "-wal" */
    sqlite3 *writer;
    struct stmt_cache wcache;
    sqlite3_stmt *st_begin, *st_commit, *st_rollback;
    sqlite3_stmt *st_save, *st_release, *st_rollback_to;
    sqlite3_stmt *st_set_index;
    sqlite3_stmt *st_entry_save, *st_entry_release, *st_entry_rollback_to;
    /* Grouped apply (storeSetGrouping, followers): entries share one transaction,
     * committed by storeFlush; each runs under the savepoint cairn_entry. */
    bool grouping;
    atomic_bool group_open; /* such a transaction is open (written under wmu; read
                             * without it by storeGroupOpen) */
    uint64_t group_start;  /* s->applied when it began */
    uint64_t applied;
    _Atomic uint64_t applied_pub;
    uint64_t prng[4];
    sqlite3_int64 batch_changes_start; /* total_changes() when the current batch began */
    struct policy_conn wpol; /* the writer's statement policy and step budget */
    bool rowid_max;          /* the statement wrote a row at rowid INT64_MAX (updateHook) */
    /* storeInterrupt: the node stops; statements running now are interrupted (an
     * apply so interrupted is rolled back whole and fails, never recorded) */
    atomic_bool stopping;
    bool page_checksums;       /* a new database gets them (storeOpen) */
    bool scratch;              /* STORE_OPEN_SCRATCH (storeOpenWith) */
    uint32_t max_length;       /* readers' longest value (storeSetLimits) */
    uint32_t query_timeout_ms; /* readers' default time limit */
    uint64_t max_result;       /* the most a read's results may take */
    uint64_t max_temp;         /* readers' most temporary file space a statement takes */
    /* Early apply (storeEarlyRun): wmu serialises the writer between the loop thread
     * and a request's thread running its entry early; everything above is the writer's
     * and is touched under it. */
    pthread_mutex_t wmu;
    bool early_open;     /* an early run's transaction is open (a group of one entry) */
    bool early_hold;     /* storeEarlyHold */
    uint64_t early_index;
    unsigned char early_key[STORE_EARLY_KEY];
    struct cairn_result *early_res;
    _Atomic uint64_t early_applies, early_discards;

    pthread_mutex_t rmu;
    pthread_rwlock_t swap_lock;
    atomic_bool page_checksums_on; /* the file's header says so (openWriter) */
    struct reader *free_readers;
    atomic_uint generation;
    atomic_uint nreaders;

    const struct reposet *repos; /* what readers' cairn_backups lists; NULL: no table */

    /* The checkpointer thread: copies WAL frames into the database off the apply
     * path. ckpt_mu guards the two flags only, never held during a checkpoint (the
     * writer's commit takes it to signal). A checkpoint the loop thread runs itself
     * (snapshots, backups) waits for the checkpointer's in its busy handler. */
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cond;
    bool ckpt_wanted;
    bool ckpt_stop;
    int ckpt_frames; /* WAL frames when the checkpointer was last woken (loop thread) */

    /* Freezes held by backups and snapshots (storeFreeze): they read the file frozen,
     * through descriptors of their own, also once a restore swapped it (replaceLocked).
     * Every one is thawed before the store closes. */
    pthread_mutex_t fz_mu;
    unsigned nfreezes;
};

/* ---- deterministic random(): xoshiro256** seeded per batch ---------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void prngSeed(uint64_t s[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        s[i] = splitmix64(&seed);
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t prngNext(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void fnRandom(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct store *s = sqlite3_user_data(ctx);
    sqlite3_result_int64(ctx, (sqlite3_int64)prngNext(s->prng));
}

static void fnRandomBlob(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct store *s = sqlite3_user_data(ctx);
    sqlite3_int64 n = sqlite3_value_int64(argv[0]);
    unsigned char *p;
    if (n < 1) {
        n = 1;
    }
    if (n > sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1)) {
        sqlite3_result_error_toobig(ctx);
        return;
    }
    p = sqlite3_malloc64((sqlite3_uint64)n);
    if (p == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (sqlite3_int64 i = 0; i < n; i += 8) {
        uint64_t r = prngNext(s->prng);
        size_t k = (size_t)(n - i < 8 ? n - i : 8);
        memcpy(p + i, &r, k);
    }
    sqlite3_result_blob64(ctx, p, (sqlite3_uint64)n, sqlite3_free);
}

/* ---- connection state made deterministic -------------------------------------
 * changes(), total_changes() and last_insert_rowid() read the writer connection's
 * history, which a node that restarted or rebuilt from a snapshot does not share.
 * While applying, they are answered from the current batch only. */

static void fnChanges(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct store *s = sqlite3_user_data(ctx);
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    sqlite3_result_int64(ctx, sqlite3_total_changes64(db) == s->batch_changes_start
                                  ? 0
                                  : sqlite3_changes64(db));
}

static void fnTotalChanges(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct store *s = sqlite3_user_data(ctx);
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    sqlite3_result_int64(ctx, sqlite3_total_changes64(db) - s->batch_changes_start);
}

/* Once a table holds the largest rowid, SQLite picks the rowid of a new row at random,
 * from its own generator, which every connection in the process draws from: each node
 * would store the row under another rowid. So a write that puts a row there fails
 * (applyLocked), on every node alike, and no table comes to hold it. */
static void updateHook(void *arg, int op, const char *db, const char *table,
                       sqlite3_int64 rowid)
{
    struct store *s = arg;
    (void)db;
    (void)table;
    if (op != SQLITE_DELETE && rowid == INT64_MAX) {
        s->rowid_max = true;
    }
}

/* Does sqlite_sequence hold the largest rowid (as SQLite reads a sequence: the
 * integer of its value)? Then the next INSERT into that AUTOINCREMENT table fails with
 * SQLITE_FULL, the code of a full disk: every node would stop at the entry and try it
 * again forever. A statement that writes sqlite_sequence so fails instead (applyLocked);
 * a sequence reaches it no other way (a row at that rowid is refused). */
static bool sequenceAtMax(struct store *s)
{
    sqlite3_stmt *st = NULL;
    bool at_max = false;
    s->wpol.internal = true;
    if (sqlite3_prepare_v2(s->writer,
                           "SELECT 1 FROM sqlite_sequence WHERE CAST(seq AS INTEGER) = "
                           "9223372036854775807 LIMIT 1",
                           -1, &st, NULL) == SQLITE_OK) {
        at_max = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    s->wpol.internal = false;
    return at_max;
}

/* ---- helpers ---------------------------------------------------------------- */

static double nowSeconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A read that failed because a page did not match its checksum (pagesum.h): the page
 * and the file, never SQLite's bare "disk I/O error". NULL for any other failure. */
static const char *damageMessage(sqlite3 *db, int rc, char *buf, size_t size)
{
    char file[512];
    uint32_t page;
    if (rc != SQLITE_IOERR_DATA && (db == NULL || sqlite3_extended_errcode(db) != SQLITE_IOERR_DATA)) {
        return NULL;
    }
    page = pagesumLastFailure(file, sizeof file);
    if (page == 0) {
        return NULL;
    }
    snprintf(buf, size, "page %u of %s failed its checksum: the database file is damaged and "
                        "the page is not served; stop the node and run cairn check, then cairn "
                        "repair (docs/OPERATIONS.md, \"After disk corruption\")",
             page, file);
    return buf;
}

static int sqlErr(sqlite3 *db, int rc, const char *what, const char *path, char *errmsg)
{
    char damage[1024];
    const char *m = damageMessage(db, rc, damage, sizeof damage);
    if (m != NULL) {
        errorf(errmsg, "%s on %s: %s", what, path, m);
        return CAIRN_ECORRUPT;
    }
    return sqlerrf(db, rc, errmsg, "%s on %s", what, path);
}

static int execSql(sqlite3 *db, const char *sql, const char *path, char *errmsg)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return sqlErr(db, rc, sql, path, errmsg);
    }
    return 0;
}

/* Step one of cairn's own cached statements to completion. */
static int internalStep(struct store *s, sqlite3_stmt *st)
{
    int rc;
    s->wpol.internal = true; /* a schema change re-prepares it, which runs the authorizer */
    rc = sqlite3_step(st);
    s->wpol.internal = false;
    sqlite3_reset(st);
    return (rc == SQLITE_DONE || rc == SQLITE_ROW) ? SQLITE_OK : rc;
}

static int prepareInternal(struct store *s, const char *sql, sqlite3_stmt **out,
                           char *errmsg)
{
    int rc;
    s->wpol.internal = true;
    rc = sqlite3_prepare_v3(s->writer, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    s->wpol.internal = false;
    if (rc != SQLITE_OK) {
        return sqlErr(s->writer, rc, sql, s->path, errmsg);
    }
    return 0;
}

/* ---- checkpoints ---------------------------------------------------------------- */

/* A connection of its own on the database, for a checkpoint or a frozen read. It
 * reads the schema once: until a connection has read the database it does not know
 * that it is in WAL mode, and a checkpoint on it silently does nothing. NULL on
 * failure. */
static sqlite3 *openSide(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, PAGESUM_VFS) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(db, 100) != SQLITE_OK ||
        sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* Runs in the writer's commit (loop thread). */
static int walHook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct store *s = arg;
    if (frames >= CKPT_HARD_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= CKPT_FRAMES &&
               (frames < s->ckpt_frames || frames - s->ckpt_frames >= CKPT_FRAMES)) {
        /* Once per CKPT_FRAMES new frames (or after the WAL restarted): a checkpoint
         * after every small commit would fsync the database file as often as the log. */
        s->ckpt_frames = frames;
        pthread_mutex_lock(&s->ckpt_mu);
        s->ckpt_wanted = true;
        pthread_cond_signal(&s->ckpt_cond);
        pthread_mutex_unlock(&s->ckpt_mu);
    }
    return SQLITE_OK;
}

/* The checkpointer thread. A PASSIVE checkpoint never blocks the writer; it runs on a
 * connection opened for it and closed after it, under the swap lock as a reader, so
 * that storeReplaceWith never swaps the file under it. It copies the frames that no
 * reader still needs: when a reader held some back, it tries again CKPT_RETRY_MS later
 * (CKPT_RETRIES times), then every CKPT_SLOW_MS until every frame is copied, or the WAL
 * would keep them until the next write. */
static void *ckptMain(void *arg)
{
    struct store *s = arg;
    int retries = 0;
    pthread_mutex_lock(&s->ckpt_mu);
    for (;;) {
        while (!s->ckpt_wanted && !s->ckpt_stop) {
            if (retries > 0) {
                struct timespec until;
                long ms = retries <= CKPT_RETRIES ? CKPT_RETRY_MS : CKPT_SLOW_MS;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += ms * 1000000L;
                until.tv_sec += until.tv_nsec / 1000000000L;
                until.tv_nsec %= 1000000000L;
                if (pthread_cond_timedwait(&s->ckpt_cond, &s->ckpt_mu, &until) == ETIMEDOUT) {
                    break;
                }
            } else {
                pthread_cond_wait(&s->ckpt_cond, &s->ckpt_mu);
            }
        }
        if (s->ckpt_stop) {
            break;
        }
        if (s->ckpt_wanted) {
            retries = 0; /* new frames: a fresh round of tries */
        }
        s->ckpt_wanted = false;
        pthread_mutex_unlock(&s->ckpt_mu);
        pthread_rwlock_rdlock(&s->swap_lock);
        int log_frames = -1;
        int done = -1;
        sqlite3 *db = openSide(s->path);
        if (db != NULL) {
            sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
        }
        sqlite3_close(db);
        pthread_rwlock_unlock(&s->swap_lock);
        if (db == NULL || (done >= 0 && done < log_frames)) {
            retries += retries <= CKPT_RETRIES; /* stays at CKPT_RETRIES + 1: slow tries */
        } else {
            retries = 0;
        }
        pthread_mutex_lock(&s->ckpt_mu);
    }
    pthread_mutex_unlock(&s->ckpt_mu);
    return NULL;
}

static void ckptStop(struct store *s)
{
    if (!s->ckpt_started) {
        return;
    }
    pthread_mutex_lock(&s->ckpt_mu);
    s->ckpt_stop = true;
    pthread_cond_signal(&s->ckpt_cond);
    pthread_mutex_unlock(&s->ckpt_mu);
    pthread_join(s->ckpt_thread, NULL);
    s->ckpt_started = false;
}

static void closeWriter(struct store *s)
{
    sqlite3_stmt **sts[] = {&s->st_begin,  &s->st_commit,     &s->st_rollback,
                            &s->st_save,   &s->st_release,    &s->st_rollback_to,
                            &s->st_set_index, &s->st_entry_save, &s->st_entry_release,
                            &s->st_entry_rollback_to};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++) {
        sqlite3_finalize(*sts[i]);
        *sts[i] = NULL;
    }
    cacheClear(&s->wcache);
    if (s->writer != NULL) {
        sqlite3_close(s->writer);
        s->writer = NULL;
    }
}


static int openWriter(struct store *s, char *errmsg)
{
    sqlite3_stmt *st = NULL;
    struct stat fst;
    bool fresh = stat(s->path, &fst) != 0 || fst.st_size == 0;
    int rc;
    int rv;

    rc = sqlite3_open_v2(s->path, &s->writer,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                         PAGESUM_VFS);
    if (rc != SQLITE_OK) {
        rv = sqlErr(s->writer, rc, "open", s->path, errmsg);
        goto err;
    }
    sqlite3_extended_result_codes(s->writer, 1);
    sqlite3_busy_timeout(s->writer, BUSY_TIMEOUT_MS);
    if (fresh && s->page_checksums) {
        /* A new database keeps a checksum in every page (pagesum.h): 8 reserved bytes,
         * set before its first page is written. */
        int reserve = PAGESUM_RESERVE;
        sqlite3_file_control(s->writer, "main", SQLITE_FCNTL_RESERVE_BYTES, &reserve);
    }
    if (s->scratch) {
        /* A scratch file (store.h): nobody else reads it and a crash discards it, so
         * nothing need be written twice (a WAL, then the file) nor synced. The rollback
         * journal still undoes a savepoint or a group: in a file (kept between
         * transactions, its header zeroed), not in memory, which would hold every page
         * a group changes. Exclusive first, so that leaving WAL mode (a file restored
         * in it) needs no shared memory. */
        if ((rv = execSql(s->writer, "PRAGMA locking_mode=EXCLUSIVE", s->path, errmsg)) != 0 ||
            (rv = execSql(s->writer, "PRAGMA journal_mode=PERSIST", s->path, errmsg)) != 0 ||
            (rv = execSql(s->writer, "PRAGMA synchronous=OFF", s->path, errmsg)) != 0) {
            goto err;
        }
    } else {
        sqlite3_wal_hook(s->writer, walHook, s); /* instead of checkpoints inside commits */
        /* Durability comes from the fsynced Raft log: the database may lag it after a
         * power loss and is caught up by replay, so NORMAL is enough here. */
        if ((rv = execSql(s->writer, "PRAGMA journal_mode=WAL", s->path, errmsg)) != 0 ||
            (rv = execSql(s->writer, "PRAGMA synchronous=NORMAL", s->path, errmsg)) != 0) {
            goto err;
        }
    }
    if ((rv = execSql(s->writer, "PRAGMA cache_size=-32768", s->path, errmsg)) != 0 ||
        (rv = execSql(s->writer,
                      "CREATE TABLE IF NOT EXISTS " META_TABLE
                      "(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
                      "INSERT OR IGNORE INTO " META_TABLE " VALUES('applied_index', 0)",
                      s->path, errmsg)) != 0) {
        goto err;
    }
    rc = sqlite3_prepare_v2(s->writer,
                            "SELECT value FROM " META_TABLE " WHERE key='applied_index'", -1,
                            &st, NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
        rv = sqlErr(s->writer, rc, "read applied index", s->path, errmsg);
        sqlite3_finalize(st);
        goto err;
    }
    s->applied = (uint64_t)sqlite3_column_int64(st, 0);
    atomic_store(&s->applied_pub, s->applied);
    sqlite3_finalize(st);
    {
        /* Whether the file has page checksums, read once per file: /status asks often,
         * and a descriptor of its own, closed again, would drop SQLite's locks. */
        unsigned char hdr[24];
        int fd = pagesumFd(s->writer);
        atomic_store(&s->page_checksums_on, fd >= 0 &&
                                                pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
                                                hdr[20] == PAGESUM_RESERVE);
    }

    sqlite3_create_function(s->writer, "random", 0, SQLITE_UTF8, s, fnRandom, NULL, NULL);
    sqlite3_create_function(s->writer, "randomblob", 1, SQLITE_UTF8, s, fnRandomBlob, NULL,
                            NULL);
    sqlite3_create_function(s->writer, "changes", 0, SQLITE_UTF8, s, fnChanges, NULL, NULL);
    sqlite3_create_function(s->writer, "total_changes", 0, SQLITE_UTF8, s, fnTotalChanges, NULL,
                            NULL);
    sqlite3_update_hook(s->writer, updateHook, s);
    /* The limits are set per entry (applyLocked); cairn's own statements pass. */
    policyInstall(s->writer, &s->wpol, POLICY_DEFAULT_MAX_LENGTH, &s->stopping);
    policyReplicated(s->writer, &s->wpol);

    if ((rv = prepareInternal(s, "BEGIN IMMEDIATE", &s->st_begin, errmsg)) != 0 ||
        (rv = prepareInternal(s, "COMMIT", &s->st_commit, errmsg)) != 0 ||
        (rv = prepareInternal(s, "ROLLBACK", &s->st_rollback, errmsg)) != 0 ||
        (rv = prepareInternal(s, "SAVEPOINT cairn_stmt", &s->st_save, errmsg)) != 0 ||
        (rv = prepareInternal(s, "RELEASE cairn_stmt", &s->st_release, errmsg)) != 0 ||
        (rv = prepareInternal(s, "ROLLBACK TO cairn_stmt", &s->st_rollback_to, errmsg)) !=
            0 ||
        (rv = prepareInternal(s,
                              "UPDATE " META_TABLE " SET value=?1 WHERE key='applied_index'",
                              &s->st_set_index, errmsg)) != 0 ||
        (rv = prepareInternal(s, "SAVEPOINT cairn_entry", &s->st_entry_save, errmsg)) != 0 ||
        (rv = prepareInternal(s, "RELEASE cairn_entry", &s->st_entry_release, errmsg)) != 0 ||
        (rv = prepareInternal(s, "ROLLBACK TO cairn_entry", &s->st_entry_rollback_to, errmsg)) !=
            0) {
        goto err;
    }
    return 0;

err:
    closeWriter(s);
    return rv;
}

static void removeReplaced(const char *path);

int storeOpen(const char *path, bool page_checksums, struct store **out, char *errmsg)
{
    return storeOpenWith(path, page_checksums, 0, out, errmsg);
}

int storeOpenWith(const char *path, bool page_checksums, unsigned flags, struct store **out,
                  char *errmsg)
{
    struct store *s;
    int rv;

    *out = NULL;
    pagesumRegister();
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        errorf(errmsg, "out of memory opening %s", path);
        return CAIRN_ENOMEM;
    }
    if (strlen(path) >= sizeof s->path) {
        free(s);
        errorf(errmsg, "database path too long: %s", path);
        return CAIRN_EINVAL;
    }
    strcpy(s->path, path);
    removeReplaced(path);
    s->page_checksums = page_checksums;
    s->scratch = (flags & STORE_OPEN_SCRATCH) != 0;
    s->max_length = POLICY_DEFAULT_MAX_LENGTH;
    s->max_temp = POLICY_DEFAULT_MAX_TEMP;
    s->query_timeout_ms = POLICY_DEFAULT_QUERY_TIMEOUT_MS;
    s->max_result = POLICY_DEFAULT_MAX_RESULT;
    pthread_mutex_init(&s->rmu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_rwlock_init(&s->swap_lock, NULL);
    pthread_mutex_init(&s->ckpt_mu, NULL);
    pthread_cond_init(&s->ckpt_cond, NULL);
    pthread_mutex_init(&s->fz_mu, NULL);
    rv = openWriter(s, errmsg);
    /* A scratch store has no WAL to checkpoint. */
    if (rv == 0 && !s->scratch && (rv = pthread_create(&s->ckpt_thread, NULL, ckptMain, s)) != 0) {
        errorf(errmsg, "cannot start the checkpointer thread: %s", strerror(rv));
        closeWriter(s);
        rv = CAIRN_ENOMEM;
    }
    if (rv != 0) {
        pthread_mutex_destroy(&s->rmu);
        pthread_rwlock_destroy(&s->swap_lock);
        pthread_mutex_destroy(&s->ckpt_mu);
        pthread_cond_destroy(&s->ckpt_cond);
        pthread_mutex_destroy(&s->fz_mu);
        free(s);
        return rv;
    }
    s->ckpt_started = !s->scratch;
    *out = s;
    return 0;
}

static void closeReaders(struct store *s)
{
    struct reader *r;
    pthread_mutex_lock(&s->rmu);
    while ((r = s->free_readers) != NULL) {
        s->free_readers = r->next;
        cacheClear(&r->cache);
        sqlite3_close(r->db);
        free(r);
        atomic_fetch_sub(&s->nreaders, 1);
    }
    pthread_mutex_unlock(&s->rmu);
}

void storeClose(struct store *s)
{
    if (s == NULL) {
        return;
    }
    storeEarlyDiscard(s);
    ckptStop(s);
    closeReaders(s);
    closeWriter(s);
    assert(s->nfreezes == 0); /* storeThaw before storeClose */
    pthread_mutex_destroy(&s->rmu);
    pthread_mutex_destroy(&s->wmu);
    pthread_rwlock_destroy(&s->swap_lock);
    pthread_mutex_destroy(&s->ckpt_mu);
    pthread_cond_destroy(&s->ckpt_cond);
    pthread_mutex_destroy(&s->fz_mu);
    free(s);
}

uint64_t storeAppliedIndex(struct store *s)
{
    return atomic_load(&s->applied_pub);
}

const char *storePath(struct store *s)
{
    return s->path;
}

/* ---- running statements ------------------------------------------------------ */

/* Statements that would end or nest cairn's own transaction. */
static bool isTxnControl(const char *sql, size_t n)
{
    static const char *const words[] = {"BEGIN", "COMMIT", "END", "ROLLBACK", NULL};
    size_t i = 0;
    size_t w;
    while (i < n && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r')) {
        i++;
    }
    for (w = 0; words[w]; w++) {
        size_t k = strlen(words[w]);
        if (n - i >= k && strncasecmp(sql + i, words[w], k) == 0 &&
            (n - i == k || !((sql[i + k] | 0x20) >= 'a' && (sql[i + k] | 0x20) <= 'z'))) {
            return true;
        }
    }
    return false;
}

/* The index in ps of named parameter p, as SQLite spells it with any of its prefixes
 * (:name, @name, $name); 0 when the statement does not use it (or the name is too long,
 * which the parser refuses: a command never holds one). */
static int paramIndex(sqlite3_stmt *ps, const struct param *p)
{
    char name[PARAM_NAME_MAX + 2];
    static const char prefixes[] = ":@$";
    int idx = 0;
    if (p->name_len > PARAM_NAME_MAX) {
        return 0;
    }
    for (int k = 0; k < 3 && idx == 0; k++) {
        name[0] = prefixes[k];
        memcpy(name + 1, p->name, p->name_len);
        name[p->name_len + 1] = '\0';
        idx = sqlite3_bind_parameter_index(ps, name);
    }
    return idx;
}

static int bindParams(sqlite3_stmt *ps, const struct stmt *st)
{
    int nbind = sqlite3_bind_parameter_count(ps);
    int pos = 0;
    int rc = SQLITE_OK;
    size_t j;

    for (j = 0; j < st->nparams && rc == SQLITE_OK; j++) {
        const struct param *p = &st->params[j];
        int idx;
        if (p->name == NULL) {
            idx = ++pos;
            if (idx > nbind) {
                return SQLITE_RANGE;
            }
        } else {
            if (p->name_len > PARAM_NAME_MAX) {
                return SQLITE_RANGE; /* the parser refuses these; a command never holds one */
            }
            idx = paramIndex(ps, p);
            if (idx == 0) {
                continue; /* a name the statement does not use */
            }
        }
        switch (p->type) {
            case CAIRN_INTEGER:
                rc = sqlite3_bind_int64(ps, idx, p->i);
                break;
            case CAIRN_FLOAT:
                rc = sqlite3_bind_double(ps, idx, p->d);
                break;
            case CAIRN_TEXT:
                rc = sqlite3_bind_text64(ps, idx, p->s, p->n, SQLITE_STATIC, SQLITE_UTF8);
                break;
            case CAIRN_BLOB:
                /* An empty BLOB ([] or x'') is a BLOB, not NULL (which a NULL pointer
                 * would bind). */
                rc = p->n == 0 ? sqlite3_bind_zeroblob(ps, idx, 0)
                               : sqlite3_bind_blob64(ps, idx, p->s, p->n, SQLITE_STATIC);
                break;
            default:
                rc = sqlite3_bind_null(ps, idx);
        }
    }
    return rc;
}

/* What rs counts against pc's result limit. A read counts all the memory its results
 * hold (resultStmtBytes), a statement's own as well as its rows'. A write counts its rows
 * and their bytes alone, as it always did: whether a write's statement stops at the limit
 * is an outcome of its log entry, and must be the same on every node and at every replay
 * of entries written before. */
static size_t resultCounted(const struct policy_conn *pc, const struct rstmt *rs)
{
    if (pc->replicated) {
        return rs->arena.len + rs->nrows * rs->ncol * sizeof(struct rvalue);
    }
    return resultStmtBytes(rs);
}

/* A read takes from the node-wide budget in steps of this, so that a row seldom costs
 * an atomic operation on a count every HTTP thread shares. */
#define RESULT_BUDGET_STEP (1u << 20)

/* Take from the node-wide budget (pc->budget) what a read's results, `total` bytes now,
 * hold past what they took already: false when it has no room for them. The reader
 * does not wait for room: it holds a reader connection, and others' answers are given
 * back only as their clients read them. */
static bool resultBudgetGrow(struct policy_conn *pc, uint64_t total)
{
    uint64_t need;
    if (pc->budget == NULL || total <= *pc->budget_taken) {
        return true;
    }
    need = total - *pc->budget_taken;
    if (membudgetTake(pc->budget, need + RESULT_BUDGET_STEP)) {
        *pc->budget_taken += need + RESULT_BUDGET_STEP;
        return true;
    }
    if (membudgetTake(pc->budget, need)) {
        *pc->budget_taken += need;
        return true;
    }
    return false;
}

static int collectRow(sqlite3_stmt *ps, struct rstmt *rs)
{
    size_t ncol = rs->ncol;
    struct rvalue *row = resultRow(rs);
    size_t c;
    if (row == NULL) {
        return SQLITE_NOMEM;
    }
    for (c = 0; c < ncol; c++) {
        struct rvalue *v = &row[c];
        v->type = sqlite3_column_type(ps, (int)c);
        switch (v->type) {
            case SQLITE_INTEGER:
                v->i = sqlite3_column_int64(ps, (int)c);
                break;
            case SQLITE_FLOAT:
                v->d = sqlite3_column_double(ps, (int)c);
                break;
            case SQLITE_TEXT: {
                const unsigned char *t = sqlite3_column_text(ps, (int)c);
                if (resultBytes(rs, v, t, (size_t)sqlite3_column_bytes(ps, (int)c)) != 0) {
                    return SQLITE_NOMEM;
                }
                break;
            }
            case SQLITE_BLOB: {
                const void *b = sqlite3_column_blob(ps, (int)c);
                if (resultBytes(rs, v, b, (size_t)sqlite3_column_bytes(ps, (int)c)) != 0) {
                    return SQLITE_NOMEM;
                }
                break;
            }
            default:
                v->type = CAIRN_NULL;
        }
    }
    return SQLITE_OK;
}

/* The columns of a query: names, declared types, and the table each is read from
 * (for ?qualify_columns; NULL for an expression). Called once the statement has
 * stepped (see runStmt): before, a cached statement still describes the schema it
 * was prepared against. */
static int setColumns(sqlite3_stmt *ps, struct rstmt *rs)
{
    int ncol = sqlite3_column_count(ps);
    const char **names = calloc((size_t)ncol + 1, sizeof *names);
    const char **types = calloc((size_t)ncol + 1, sizeof *types);
    const char **tables = calloc((size_t)ncol + 1, sizeof *tables);
    int rc = SQLITE_NOMEM;
    if (names != NULL && types != NULL && tables != NULL) {
        for (int c = 0; c < ncol; c++) {
            names[c] = sqlite3_column_name(ps, c);
            types[c] = sqlite3_column_decltype(ps, c);
            tables[c] = sqlite3_column_table_name(ps, c);
        }
        if (resultColumns(rs, (size_t)ncol, names, types) == 0 &&
            resultColumnTables(rs, tables) == 0) {
            rc = SQLITE_OK;
        }
    }
    free(names);
    free(types);
    free(tables);
    return rc;
}

/* Done with a statement: a cached one is reset for its next use (and its bindings,
 * which point into the request, dropped); any other is finalized. */
static void releaseStmt(sqlite3_stmt *ps, bool cached)
{
    if (cached) {
        sqlite3_reset(ps);
        sqlite3_clear_bindings(ps);
    } else {
        sqlite3_finalize(ps);
    }
}

/* The error of a statement that failed with rc on db: the policy's words when it
 * refused or stopped the statement, else SQLite's. */
static void stmtError(sqlite3 *db, struct policy_conn *pc, int rc, struct rstmt *rs)
{
    char msg[1024];
    const char *m = policyMessage(pc, rc, msg, sizeof msg);
    if (m == NULL) {
        m = damageMessage(db, rc, msg, sizeof msg);
    }
    if (m == NULL && rc == SQLITE_CORRUPT_VTAB) {
        snprintf(msg, sizeof msg, "%s: a virtual table found its own data inconsistent (for "
                                  "FTS5, a row deleted twice or with other values than it was "
                                  "inserted with), the same on every node; rebuild the table "
                                  "(FTS5: INSERT INTO t(t) VALUES('rebuild'), or 'delete-all' "
                                  "when contentless)",
                 sqlite3_errmsg(db));
        m = msg;
    }
    resultError(rs, m != NULL ? m : sqlite3_errmsg(db));
}

/* Run one element of a batch (which may hold several ';'-separated statements) on db
 * under the policy pc and fill rs (rs->time only when timed). Returns SQLITE_OK, or
 * the failing code with rs->error set. Always ends: a text SQLite cannot split (a NUL
 * byte) is an error, never a loop. */
static int runStmt(sqlite3 *db, struct stmt_cache *cache, struct policy_conn *pc,
                   const struct stmt *st, bool read_only, bool timed, struct rstmt *rs)
{
    const char *tail = st->sql;
    const char *end = st->sql + st->sql_len;
    double t0 = timed ? nowSeconds() : 0;
    int rc = SQLITE_OK;

    if (memchr(st->sql, '\0', st->sql_len) != NULL) {
        char msg[256];
        policyCheckText(st->sql, st->sql_len, msg, sizeof msg);
        resultError(rs, msg);
        rc = SQLITE_MISUSE;
        goto out;
    }
    while (tail < end) {
        sqlite3_stmt *ps = NULL;
        const char *next = NULL;
        sqlite3_int64 total_before;
        bool cached = false, writes_sequence = false;
        bool query, columns_set;
        if (tail == st->sql && cache != NULL &&
            (ps = cacheGet(cache, st->sql, st->sql_len)) != NULL) {
            cached = true;
            next = end;
        } else {
            bool sequence_before = pc->sequence;
            policyPrepareBegin(pc, tail, (size_t)(end - tail));
            pc->sequence = false;
            rc = policyPrepare(pc, db, tail, (int)(end - tail), &ps, &next);
            policyPrepareEnd(pc);
            writes_sequence = pc->sequence;
            pc->sequence = sequence_before || writes_sequence;
            if (rc != SQLITE_OK) {
                stmtError(db, pc, rc, rs);
                goto out;
            }
            if (next == NULL || next <= tail || next > end) {
                /* Cannot happen without a NUL byte (refused above): never loop. */
                sqlite3_finalize(ps);
                resultError(rs, "the statement text cannot be split into statements");
                rc = SQLITE_MISUSE;
                goto out;
            }
            if (ps != NULL) {
                char msg[256];
                if (!policyCheckPrepared(pc, ps, msg, sizeof msg)) {
                    sqlite3_finalize(ps);
                    resultError(rs, msg);
                    rc = SQLITE_AUTH;
                    goto out;
                }
            }
            /* Only a string that is exactly one statement is worth keeping; not one
             * that reads node-local state, which storeCheck must see prepared to refuse
             * in a write, nor one that writes sqlite_sequence, which applyLocked must
             * see prepared to check. */
            if (ps != NULL && tail == st->sql && next == end && cache != NULL &&
                !isTxnControl(tail, (size_t)(next - tail)) && pc->local[0] == '\0' &&
                !writes_sequence) {
                cached = cachePut(cache, st->sql, st->sql_len, ps);
            }
        }
        if (ps == NULL) { /* only whitespace or a comment left */
            tail = next;
            continue;
        }
        /* The cache never holds transaction control (see cachePut's caller). */
        if (!cached && isTxnControl(tail, (size_t)(next - tail))) {
            resultError(rs, "transaction control statements (BEGIN, COMMIT, END, ROLLBACK) "
                            "are not allowed: each request is already a transaction; use "
                            "?transaction for all-or-nothing batches");
            releaseStmt(ps, cached);
            rc = SQLITE_MISUSE;
            goto out;
        }
        if (read_only && !sqlite3_stmt_readonly(ps)) {
            resultError(rs, "attempt to write a readonly database");
            releaseStmt(ps, cached);
            rc = SQLITE_READONLY;
            goto out;
        }
        rc = bindParams(ps, st);
        if (rc != SQLITE_OK) {
            resultError(rs, rc == SQLITE_RANGE
                                ? "more parameters were given than the statement has"
                                : sqlite3_errmsg(db));
            releaseStmt(ps, cached);
            goto out;
        }
        /* A query's columns (how many, their names, types and tables) are read once
         * the statement has stepped: a cached statement is prepared again for a
         * changed schema only when it steps, and until then says what the old schema
         * had. */
        query = sqlite3_column_count(ps) > 0;
        columns_set = false;
        if (query && rs->cols != NULL) { /* a later statement of the same string: start over */
            resultClearColumns(rs);
        }
        total_before = sqlite3_total_changes64(db);
        /* SQLite calls the progress handler when the statement's step count, summed
         * over every run since it was prepared, passes a multiple of the grain: a
         * cached statement would meet the write step budget earlier than the same one
         * prepared afresh on a node that restarted, and the nodes would differ. Each
         * run counts from zero. */
        sqlite3_stmt_status(ps, SQLITE_STMTSTATUS_VM_STEP, 1);
        policyStepBegin(pc, db);
        while ((rc = policyStep(pc, ps)) == SQLITE_ROW) {
            if (query && !columns_set) {
                if (setColumns(ps, rs) != SQLITE_OK) {
                    resultError(rs, "out of memory");
                    releaseStmt(ps, cached);
                    rc = SQLITE_NOMEM;
                    goto out;
                }
                columns_set = true;
            }
            if (rs->rows_shape && collectRow(ps, rs) != SQLITE_OK) {
                resultError(rs, "out of memory collecting rows");
                releaseStmt(ps, cached);
                rc = SQLITE_NOMEM;
                goto out;
            }
            uint64_t total = pc->result_before + resultCounted(pc, rs);
            bool over = pc->result_limit != 0 && total > pc->result_limit;
            if (over || !resultBudgetGrow(pc, total)) {
                char msg[320];
                if (!over) {
                    snprintf(msg, sizeof msg, "the results exceed what is left of the node's "
                                              "memory for requests (cairnd "
                                              "--max-request-memory, %llu bytes, taken by "
                                              "others' answers not yet read): retry later, or "
                                              "read fewer rows at a time (LIMIT)",
                             (unsigned long long)pc->budget->limit);
                } else if (read_only) {
                    snprintf(msg, sizeof msg, "the results exceed the limit of %llu bytes "
                                              "(cairnd --max-result-size): read fewer rows at a "
                                              "time (LIMIT)",
                             (unsigned long long)pc->result_limit);
                } else {
                    snprintf(msg, sizeof msg, "the results of a request that writes exceed the "
                                              "limit of %llu bytes, the same on every node: read "
                                              "fewer rows at a time (LIMIT), in a request that "
                                              "only reads",
                             (unsigned long long)pc->result_limit);
                }
                resultError(rs, msg);
                /* The rows so far go: their memory is what the limit is for. */
                free(rs->vals);
                rs->vals = NULL;
                rs->cap = rs->nrows = 0;
                bufFree(&rs->arena);
                releaseStmt(ps, cached);
                rc = SQLITE_TOOBIG;
                goto out;
            }
        }
        if (rc != SQLITE_DONE) {
            stmtError(db, pc, rc, rs);
            releaseStmt(ps, cached);
            goto out;
        }
        if (query && !columns_set && setColumns(ps, rs) != SQLITE_OK) { /* no row */
            resultError(rs, "out of memory");
            releaseStmt(ps, cached);
            rc = SQLITE_NOMEM;
            goto out;
        }
        rc = SQLITE_OK;
        resultTrim(rs); /* it may wait long for its client: it holds what it counts */
        if (!rs->rows_shape) {
            rs->last_insert_id = sqlite3_last_insert_rowid(db);
            /* changes() keeps the count of the last INSERT/UPDATE/DELETE, so a DDL
             * statement would report the previous write's count: only trust it when
             * this statement changed something. */
            rs->rows_affected = sqlite3_total_changes64(db) != total_before
                                    ? sqlite3_changes64(db)
                                    : 0;
        }
        releaseStmt(ps, cached);
        tail = next;
    }
    if (rs->rows_shape) {
        resultFinishTypes(rs);
    }
out:
    rs->time = timed ? nowSeconds() - t0 : 0;
    return rc;
}

/* ---- the writer ---------------------------------------------------------------- */

/* Mark every result up to n as lost: the transaction they were in was rolled back. */
static void resultsRolledBack(struct cairn_result *res, size_t n, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "rolled back: %s", why);
    for (size_t i = 0; i < n && i < res->n; i++) {
        if (res->stmts[i].error == NULL) {
            resultError(&res->stmts[i], msg);
        }
    }
}

/* Make the writer's query planner use the statistics the file holds now. SQLite loads
 * sqlite_stat1 when it reads the schema, and again only after ANALYZE: after a write
 * of sqlite_stat1, or an ANALYZE rolled back, the writer planned with statistics that a
 * node which restarted (or replays the log) does not have, and a write whose rows
 * depend on the plan (LIMIT without ORDER BY) stored different rows there. Rolling back
 * a schema change to a savepoint makes SQLite read the schema again, statistics
 * included, and expire every prepared statement; nothing is written. Inside the
 * writer's transaction. */
static void statsReload(struct store *s)
{
    s->wpol.internal = true;
    sqlite3_exec(s->writer, "SAVEPOINT cairn_stats; CREATE TABLE " META_TABLE "_stats(x)", NULL,
                 NULL, NULL);
    /* Also when the CREATE failed: no savepoint stays open. */
    sqlite3_exec(s->writer, "ROLLBACK TO cairn_stats; RELEASE cairn_stats", NULL, NULL, NULL);
    s->wpol.internal = false;
}

/* The grouped transaction was rolled back: the database is at group_start again. */
static void groupLost(struct store *s)
{
    if (!sqlite3_get_autocommit(s->writer)) {
        internalStep(s, s->st_rollback);
    }
    s->group_open = false;
    s->applied = s->group_start;
}

/* Roll an open early run back (wmu held). */
static void earlyDiscardLocked(struct store *s)
{
    if (!s->early_open) {
        return;
    }
    s->early_open = false;
    groupLost(s);
    cairn_result_free(s->early_res);
    s->early_res = NULL;
    atomic_fetch_add(&s->early_discards, 1);
}

/* Take the writer for anything but an early run: wait for a run in progress, and roll
 * an open one back (its entry is not committed in the log). writerGive releases. */
static void writerTake(struct store *s)
{
    pthread_mutex_lock(&s->wmu);
    earlyDiscardLocked(s);
}

static void writerGive(struct store *s)
{
    pthread_mutex_unlock(&s->wmu);
}

static int commitGroupLocked(struct store *s, char *errmsg);

/* Did a statement fail for a reason of this node's own (its disk, its memory, its
 * file's damage), rather than as the statement fails on every node? A virtual table
 * that finds its own data inconsistent (SQLITE_CORRUPT_VTAB: a contentless FTS5 table
 * told to delete a row twice, or with other values than it holds) finds it so on every
 * node, from the same rows, and at every retry: taken for this node's damage, one such
 * write stopped every node applying the log for good. A damaged page is
 * SQLITE_IOERR_DATA (page checksums) or SQLITE_CORRUPT from the B-tree. */
static bool environmental(int rc)
{
    if (rc == SQLITE_CORRUPT_VTAB) {
        return false;
    }
    switch (rc & 0xff) {
        case SQLITE_IOERR:
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
        case SQLITE_FULL:
        case SQLITE_NOMEM:
        case SQLITE_CANTOPEN:
            return true;
        default:
            return false;
    }
}

/* ---- the write growth bound ----------------------------------------------------
 *
 * An entry's writes may add at most b->max_growth_mib MiB to the database, counted in
 * the bytes of the values of the rows they change (policy.h, growth_used): the same on
 * every node, whatever its pages, so the statement that passes the bound, interrupted
 * by the policy's preupdate hook or failed when it ends (growthCheck), is the same
 * everywhere, and its
 * failure is the write's own outcome. Before, INSERT ... SELECT randomblob(60000000)
 * took few steps and grew every node's file until its disk filled, a failure of each
 * node's own, which every node retried for ever. Entries written before the bound was
 * carried have none, so that a log replays as it applied. */

/* Bound the entry b about to run (in its transaction), if it carries a bound. */
static void growthBegin(struct store *s, const struct batch *b)
{
    s->wpol.growth_used = 0;
    s->wpol.growth_limit = b->max_growth_mib == 0 || (b->flags & BATCH_META) ||
                                   b->kind == BATCH_QUERY
                               ? 0
                               : (uint64_t)b->max_growth_mib << 20;
}

/* No bound for cairn's own statements after the entry's (the applied index). */
static void growthEnd(struct store *s)
{
    s->wpol.growth_limit = 0;
}

/* A statement that ended without error past the bound fails as one the progress
 * handler stopped: rc for its result (SQLITE_CONSTRAINT, rs saying why), else rc. */
static int growthCheck(struct store *s, struct rstmt *rs, int rc)
{
    char msg[512];
    const char *m;
    if (rc != SQLITE_OK || s->wpol.growth_limit == 0 ||
        s->wpol.growth_used <= (int64_t)s->wpol.growth_limit) {
        return rc;
    }
    s->wpol.trip = POLICY_TRIP_GROWTH;
    m = policyMessage(&s->wpol, SQLITE_CONSTRAINT, msg, sizeof msg);
    resultError(rs, m != NULL ? m : "the write would grow the database past its bound");
    return SQLITE_CONSTRAINT;
}

/* RELEASE the running statement's savepoint; when that fails, why (before a later
 * statement replaces SQLite's message). */
static int releaseStatement(struct store *s, char *why, size_t size)
{
    int rc = internalStep(s, s->st_release);
    if (rc != SQLITE_OK) {
        snprintf(why, size, "%s (when the statement's changes were being kept)",
                 sqlite3_errmsg(s->writer));
    }
    return rc;
}

/* What a read in the log is applied as. */
static const struct batch noStatements = {.kind = BATCH_QUERY};

/* storeApply with wmu held; group: run it as part of a group (store.h). */
/* The cairn error of a failure of this node's own (environmental(rc)). */
static int ownFailure(int rc)
{
    switch (rc & 0xff) {
        case SQLITE_FULL:
            return CAIRN_ENOSPC;
        case SQLITE_NOMEM:
            return CAIRN_ENOMEM;
        case SQLITE_IOERR:
            return rc == SQLITE_IOERR_DATA ? CAIRN_ECORRUPT : CAIRN_EIO;
        default:
            return CAIRN_ECORRUPT;
    }
}

/* A failure where the virtual tables write what they kept (FTS5 its pending terms): a
 * statement's RELEASE, a group's entry RELEASE, the entry's COMMIT. True when it comes
 * from the data, alike on every node (a damaged FTS5 index, a constraint or a size limit
 * checked there), and is then the entry's outcome; anything else is this node's own
 * failure (ownCommitFailure), which must keep nothing of the entry. */
static bool outcomeAtCommit(int rc)
{
    return rc == SQLITE_CORRUPT_VTAB || (rc & 0xff) == SQLITE_CONSTRAINT ||
           (rc & 0xff) == SQLITE_TOOBIG;
}

static int ownCommitFailure(const struct store *s, int rc)
{
    if (s->wpol.trip == POLICY_TRIP_STOPPING || (rc & 0xff) == SQLITE_INTERRUPT) {
        return CAIRN_ESHUTDOWN;
    }
    return environmental(rc) ? ownFailure(rc) : CAIRN_EIO;
}

/* Keep nothing of the entry being applied: its group's transaction lost (the caller
 * applies the group's entries again), or its own rolled back; its results freed. */
static void abandonEntry(struct store *s, bool group, struct cairn_result *res)
{
    if (group && s->group_open) {
        groupLost(s);
    } else if (!sqlite3_get_autocommit(s->writer)) {
        internalStep(s, s->st_rollback);
    }
    pagesumSetNow(0);
    cairn_result_free(res);
}

static int applyLocked(struct store *s, const struct batch *b, uint64_t index, bool group,
                       struct cairn_result **out, char *errmsg)
{
    struct cairn_result *res;
    bool txn = (b->flags & BATCH_TRANSACTION) != 0;
    bool read_only = b->kind == BATCH_QUERY;
    bool timed = (b->flags & BATCH_TIMINGS) != 0;
    bool stats;
    int rc;
    size_t i;

    *out = NULL;
    if (index <= s->applied) {
        return 0; /* already in the database: a replay after restart */
    }
    if (!group && s->group_open && (rc = commitGroupLocked(s, errmsg)) != 0) {
        return rc;
    }
    res = resultNew();
    if (res == NULL || resultReserve(res, b->n) != 0) {
        cairn_result_free(res);
        errorf(errmsg, "out of memory applying entry %llu", (unsigned long long)index);
        return CAIRN_ENOMEM;
    }
    res->raft_index = index;
    if (read_only) {
        /* A read in the log (strong reads of earlier builds): it changes nothing, and
         * one that never ends would stop every node on every replay. Not run. */
        for (i = 0; i < b->n; i++) {
            if (resultAdd(res) == NULL) {
                cairn_result_free(res);
                errorf(errmsg, "out of memory applying entry %llu", (unsigned long long)index);
                return CAIRN_ENOMEM;
            }
        }
        b = &noStatements;
    }
    pagesumSetNow(b->time_ms);
    sqlite3_limit(s->writer, SQLITE_LIMIT_LENGTH,
                  (int)(b->max_length != 0 && b->max_length <= POLICY_MAX_LENGTH_CAP
                            ? b->max_length
                            : POLICY_DEFAULT_MAX_LENGTH));
    /* The leader's, from the entry: a write that stops at it stops on every node. */
    s->wpol.temp_limit = b->max_temp_mib != 0 ? (uint64_t)b->max_temp_mib << 20
                                              : POLICY_DEFAULT_MAX_TEMP;
    prngSeed(s->prng, b->seed ^ index);
    s->wpol.result_before = 0;
    sqlite3_set_last_insert_rowid(s->writer, 0);
    s->batch_changes_start = sqlite3_total_changes64(s->writer);

    if (!group || !s->group_open) {
        rc = internalStep(s, s->st_begin);
        if (rc != SQLITE_OK) {
            goto fail;
        }
        if (group) {
            s->group_open = true;
            s->group_start = s->applied;
        }
    }
    if (group && (rc = internalStep(s, s->st_entry_save)) != SQLITE_OK) {
        goto fail;
    }
    growthBegin(s, b);
    for (i = 0; i < b->n; i++) {
        struct rstmt *rs = resultAdd(res);
        char kept_why[600]; /* a failed RELEASE's (releaseStatement) */
        int64_t grown = s->wpol.growth_used; /* what the statements before it added */
        if (rs == NULL) {
            rc = SQLITE_NOMEM;
            internalStep(s, s->st_rollback);
            goto fail;
        }
        if (!txn) {
            internalStep(s, s->st_save);
        }
        if (b->flags & BATCH_META) {
            s->wpol.internal = true;
            rc = runStmt(s->writer, NULL, &s->wpol, &b->stmts[i], read_only, timed, rs);
            s->wpol.internal = false;
        } else {
            policyWriteBegin(&s->wpol, b->max_steps ? b->max_steps : POLICY_DEFAULT_WRITE_STEPS);
            s->rowid_max = false;
            rc = runStmt(s->writer, &s->wcache, &s->wpol, &b->stmts[i], read_only, timed, rs);
            policyEnd(&s->wpol);
            rc = growthCheck(s, rs, rc);
            if (rc == SQLITE_OK && s->wpol.sequence && sequenceAtMax(s)) {
                resultError(rs, "a sequence of sqlite_sequence may not be "
                                "9223372036854775807, the largest rowid: every later INSERT "
                                "into its AUTOINCREMENT table would fail with 'database or disk "
                                "is full', which is no outcome of the write but a node's own "
                                "failure, and would stop every node applying the log");
                rc = SQLITE_CONSTRAINT;
            } else if (rc == SQLITE_OK && s->rowid_max) {
                resultError(rs, "a row may not have rowid 9223372036854775807, the largest: past "
                                "it SQLite picks the rowids of new rows at random, differently "
                                "on every node");
                rc = SQLITE_CONSTRAINT;
            }
            s->wpol.result_before += resultCounted(&s->wpol, rs);
        }
        stats = s->wpol.stats;
        s->wpol.stats = false;
        if (rc != SQLITE_OK && (s->wpol.trip == POLICY_TRIP_STOPPING ||
                                (environmental(rc) && !policyStatementTrip(&s->wpol)))) {
            /* Interrupted because the node stops, or failed for a reason of this node's
             * alone (a damaged page, an I/O error, a full disk, no memory): not an
             * outcome of the entry, which other nodes, and this one once the cause is
             * gone, run to its end. Nothing of it may be kept: roll back whole and fail
             * the apply (the fsm tries again, or heals the database from a peer). */
            int failure = s->wpol.trip == POLICY_TRIP_STOPPING ? CAIRN_ESHUTDOWN : 0;
            char why[1024];
            growthEnd(s);
            snprintf(why, sizeof why, "%s", rs->error != NULL ? rs->error : "unknown error");
            s->wpol.trip = POLICY_TRIP_NONE;
            abandonEntry(s, group, res);
            if (failure == CAIRN_ESHUTDOWN) {
                errorf(errmsg, "entry %llu was interrupted: the node is shutting down",
                       (unsigned long long)index);
                return CAIRN_ESHUTDOWN;
            }
            errorf(errmsg, "entry %llu cannot be applied on this node: %s",
                   (unsigned long long)index, why);
            return ownFailure(rc);
        }
        if (sqlite3_get_autocommit(s->writer) && group) {
            /* The whole grouped transaction is gone, the entries before this one with
             * it: the caller applies them again, then this one on its own. */
            growthEnd(s);
            groupLost(s);
            pagesumSetNow(0);
            cairn_result_free(res);
            errorf(errmsg, "entry %llu rolled back the grouped transaction",
                   (unsigned long long)index);
            return STORE_EREGROUP;
        }
        if (sqlite3_get_autocommit(s->writer)) {
            /* The statement's error rolled back the whole transaction (SQLite does so
             * for some I/O and ROLLBACK-resolution errors): everything before it in
             * this entry is gone too. Say so and carry on in a new transaction. */
            resultsRolledBack(res, res->n - 1, rs->error ? rs->error : "unknown error");
            s->wpol.growth_used = 0;
            if (internalStep(s, s->st_begin) != SQLITE_OK) {
                goto fail;
            }
            if (stats) {
                statsReload(s);
            }
            if (txn) {
                break;
            }
            continue;
        }
        if (rc != SQLITE_OK) {
            s->wpol.growth_used = txn ? 0 : grown; /* what is rolled back below */
            if (txn && group) {
                internalStep(s, s->st_entry_rollback_to); /* this entry only */
                if (stats) {
                    statsReload(s);
                }
                rc = SQLITE_OK;
                break;
            }
            if (txn) {
                internalStep(s, s->st_rollback);
                if ((rc = internalStep(s, s->st_begin)) != SQLITE_OK) {
                    goto fail;
                }
                if (stats) {
                    statsReload(s);
                }
                break;
            }
            internalStep(s, s->st_rollback_to);
            internalStep(s, s->st_release);
        } else if (!txn && (rc = releaseStatement(s, kept_why, sizeof kept_why)) != SQLITE_OK) {
            /* RELEASE runs the virtual tables' xRelease (FTS5 writes there what the
             * statement left pending) once SQLite has merged the statement's pages into
             * the transaction: the statement can no longer be undone alone. A cause of
             * this node's: the apply fails, nothing kept. An outcome of the data
             * (outcomeAtCommit): the entry's transaction is rolled back whole, as when a
             * statement's own error does so, and the next statement goes on in a new
             * one; in a group, the entry is applied again alone (STORE_EREGROUP). */
            const char *why = kept_why;
            resultError(rs, why);
            if (!outcomeAtCommit(rc) || group) {
                int rv = outcomeAtCommit(rc) ? STORE_EREGROUP : ownCommitFailure(s, rc);
                abandonEntry(s, group, res);
                if (rv == STORE_EREGROUP) {
                    errorf(errmsg, "entry %llu rolled back the grouped transaction",
                           (unsigned long long)index);
                } else {
                    errorf(errmsg, "entry %llu cannot be applied on this node: %s",
                           (unsigned long long)index, why);
                }
                return rv;
            }
            if (!sqlite3_get_autocommit(s->writer)) {
                internalStep(s, s->st_rollback);
            }
            resultsRolledBack(res, res->n - 1, why);
            s->wpol.growth_used = 0;
            if ((rc = internalStep(s, s->st_begin)) != SQLITE_OK) {
                goto fail;
            }
        }
        if (stats) {
            statsReload(s);
        }
    }
    growthEnd(s);
    sqlite3_bind_int64(s->st_set_index, 1, (sqlite3_int64)index);
    rc = internalStep(s, s->st_set_index);
    if (group) {
        if (rc == SQLITE_OK && (rc = internalStep(s, s->st_entry_release)) != SQLITE_OK &&
            outcomeAtCommit(rc) && s->group_open) {
            /* A virtual table's xRelease failed (FTS5 flushing a transaction's pending
             * terms into a damaged index, alike on every node): applied again alone,
             * where the failure becomes the entry's outcome at its COMMIT (below). */
            groupLost(s);
            pagesumSetNow(0);
            cairn_result_free(res);
            errorf(errmsg, "entry %llu rolled back the grouped transaction: %s",
                   (unsigned long long)index, sqlite3_errmsg(s->writer));
            return STORE_EREGROUP;
        }
        if (rc != SQLITE_OK) {
            goto fail;
        }
        pagesumSetNow(0);
        s->applied = index; /* storeFlush publishes it once committed */
        *out = res;
        return 0;
    }
    if (rc == SQLITE_OK && (rc = internalStep(s, s->st_commit)) != SQLITE_OK &&
        outcomeAtCommit(rc)) {
        /* COMMIT runs the virtual tables' xSync (FTS5 flushes a transaction's pending
         * terms there) and can fail for a cause alike on every node (a damaged FTS5
         * index): that is the entry's outcome, not a failure to apply it, which every
         * node would retry for ever. Nothing of its statements is kept; the entry is
         * applied (its index recorded) in a transaction of its own. */
        char why[600];
        snprintf(why, sizeof why, "%s (at the transaction's commit)", sqlite3_errmsg(s->writer));
        if (!sqlite3_get_autocommit(s->writer)) {
            internalStep(s, s->st_rollback);
        }
        if (res->n > 0 && res->stmts[res->n - 1].error == NULL) {
            resultError(&res->stmts[res->n - 1], why);
        }
        resultsRolledBack(res, res->n, why);
        if ((rc = internalStep(s, s->st_begin)) == SQLITE_OK &&
            (rc = internalStep(s, s->st_set_index)) == SQLITE_OK) {
            rc = internalStep(s, s->st_commit);
        }
    }
    if (rc != SQLITE_OK) {
        /* The message first: the rollback would replace it with its own. */
        int rv = sqlErr(s->writer, rc, "apply entry", s->path, errmsg);
        if (!sqlite3_get_autocommit(s->writer)) {
            internalStep(s, s->st_rollback);
        }
        pagesumSetNow(0);
        cairn_result_free(res);
        return rv;
    }
    pagesumSetNow(0);
    s->applied = index;
    atomic_store(&s->applied_pub, index);
    *out = res;
    return 0;

fail:
    pagesumSetNow(0);
    cairn_result_free(res);
    {
        int rv = sqlErr(s->writer, rc, "apply entry", s->path, errmsg);
        growthEnd(s); /* after the message, which its statement would replace */
        if (group && s->group_open) {
            if (sqlite3_get_autocommit(s->writer)) {
                groupLost(s);
                return STORE_EREGROUP;
            }
            /* Undo this entry only: the group before it stays as it was. */
            internalStep(s, s->st_entry_rollback_to);
            internalStep(s, s->st_entry_release);
        }
        return rv;
    }
}

int storeApply(struct store *s, const struct batch *b, uint64_t index,
               struct cairn_result **out, char *errmsg)
{
    int rv;
    writerTake(s);
    rv = applyLocked(s, b, index, s->grouping, out, errmsg);
    writerGive(s);
    return rv;
}

int storeEarlyRun(struct store *s, const struct batch *b, uint64_t after, uint64_t index,
                  const unsigned char key[STORE_EARLY_KEY])
{
    struct cairn_result *res = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int rv;
    if (pthread_mutex_trylock(&s->wmu) != 0) {
        return 0; /* the loop (or another early run) has the writer */
    }
    if (s->early_open || s->early_hold || s->group_open || s->applied != after ||
        index <= after) {
        pthread_mutex_unlock(&s->wmu);
        return 0;
    }
    rv = applyLocked(s, b, index, true, &res, errmsg);
    if (rv != 0 || res == NULL || !s->group_open) {
        /* Failed (the usual apply runs it again and says why): nothing stays open. */
        if (s->group_open) {
            groupLost(s);
        }
        cairn_result_free(res);
        pthread_mutex_unlock(&s->wmu);
        return 0;
    }
    s->early_open = true;
    s->early_index = index;
    memcpy(s->early_key, key, STORE_EARLY_KEY);
    s->early_res = res;
    pthread_mutex_unlock(&s->wmu);
    return 1;
}

struct cairn_result *storeEarlyCommit(struct store *s, uint64_t index,
                                      const unsigned char key[STORE_EARLY_KEY])
{
    struct cairn_result *res = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE];
    pthread_mutex_lock(&s->wmu);
    if (s->early_open && s->early_index == index &&
        memcmp(s->early_key, key, STORE_EARLY_KEY) == 0 &&
        commitGroupLocked(s, errmsg) == 0) {
        res = s->early_res;
        s->early_res = NULL;
        s->early_open = false;
        atomic_fetch_add(&s->early_applies, 1);
    }
    /* Another entry came first, or the commit failed (the usual apply runs the entry
     * again and says why): roll back what is left. */
    earlyDiscardLocked(s);
    pthread_mutex_unlock(&s->wmu);
    return res;
}

void storeEarlyHold(struct store *s, bool hold)
{
    pthread_mutex_lock(&s->wmu);
    s->early_hold = hold;
    pthread_mutex_unlock(&s->wmu);
}

void storeEarlyDiscard(struct store *s)
{
    writerTake(s);
    writerGive(s);
}

void storeSetGrouping(struct store *s, bool on)
{
    s->grouping = on;
}

bool storeGroupOpen(struct store *s)
{
    /* Without the writer's mutex: the loop asks whenever it publishes the node's
     * figures, and must not wait for a leader's early run that holds it. */
    return atomic_load(&s->group_open);
}

int storeFlush(struct store *s, char *errmsg)
{
    int rv;
    writerTake(s); /* an early run is not the group's to commit */
    rv = commitGroupLocked(s, errmsg);
    writerGive(s);
    return rv;
}

static int commitGroupLocked(struct store *s, char *errmsg)
{
    int rc;
    if (!s->group_open) {
        return 0;
    }
    rc = internalStep(s, s->st_commit);
    if (rc != SQLITE_OK) {
        int rv = sqlErr(s->writer, rc, "commit applied entries", s->path, errmsg);
        if (sqlite3_get_autocommit(s->writer)) {
            groupLost(s);
            return STORE_EREGROUP;
        }
        return rv; /* still open: commit again later */
    }
    s->group_open = false;
    atomic_store(&s->applied_pub, s->applied);
    return 0;
}

/* ---- readers ------------------------------------------------------------------- */

static int readerOpen(struct store *s, struct reader **out, char *errmsg)
{
    struct reader *r = calloc(1, sizeof *r);
    int rc;
    int rv;
    if (r == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    rc = sqlite3_open_v2(s->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                         PAGESUM_VFS);
    if (rc != SQLITE_OK) {
        rv = sqlErr(r->db, rc, "open reader", s->path, errmsg);
        goto err;
    }
    sqlite3_extended_result_codes(r->db, 1);
    sqlite3_busy_timeout(r->db, BUSY_TIMEOUT_MS);
    if ((rv = execSql(r->db, "PRAGMA query_only=1", s->path, errmsg)) != 0) {
        goto err;
    }
    policyInstall(r->db, &r->pol, s->max_length, &s->stopping);
    r->pol.temp_limit = s->max_temp;
    if (s->repos != NULL) {
        vtabRegister(r->db, s->repos);
    }
    r->generation = atomic_load(&s->generation);
    atomic_fetch_add(&s->nreaders, 1);
    *out = r;
    return 0;
err:
    sqlite3_close(r->db);
    free(r);
    return rv;
}

static int readerGet(struct store *s, struct reader **out, char *errmsg)
{
    struct reader *r;
    pthread_rwlock_rdlock(&s->swap_lock);
    pthread_mutex_lock(&s->rmu);
    r = s->free_readers;
    if (r != NULL) {
        s->free_readers = r->next;
    }
    pthread_mutex_unlock(&s->rmu);
    if (r != NULL && r->generation != atomic_load(&s->generation)) {
        cacheClear(&r->cache);
        sqlite3_close(r->db);
        free(r);
        atomic_fetch_sub(&s->nreaders, 1);
        r = NULL;
    }
    if (r == NULL) {
        int rv = readerOpen(s, &r, errmsg);
        if (rv != 0) {
            pthread_rwlock_unlock(&s->swap_lock);
            return rv;
        }
    }
    *out = r;
    return 0;
}

static void readerPut(struct store *s, struct reader *r)
{
    pthread_mutex_lock(&s->rmu);
    r->next = s->free_readers;
    s->free_readers = r;
    pthread_mutex_unlock(&s->rmu);
    pthread_rwlock_unlock(&s->swap_lock);
}

/* Run the read-only batch b on db under pc, with b's time limit (or default_ms) and
 * its client watched, in one read transaction (its statements see one snapshot). Once
 * a limit stops a statement, the ones after it fail with the same message. */
static int runReads(sqlite3 *db, struct stmt_cache *cache, struct policy_conn *pc,
                    const struct batch *b, uint32_t default_ms, uint64_t result_limit,
                    struct cairn_result *res, char *errmsg)
{
    char msg[512];
    const char *stopped = NULL;
    policyReadBegin(pc, b->timeout_ms ? b->timeout_ms : default_ms,
                    b->has_client ? b->client_fd : -1, result_limit);
    if (b->budget != NULL && b->budget_taken != NULL) {
        pc->budget = b->budget;
        pc->budget_taken = b->budget_taken;
    }
    pc->internal = true;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    pc->internal = false;
    for (size_t i = 0; i < b->n; i++) {
        struct rstmt *rs = resultAdd(res);
        if (rs == NULL) {
            errorf(errmsg, "out of memory");
            policyEnd(pc);
            pc->internal = true;
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
            pc->internal = false;
            return CAIRN_ENOMEM;
        }
        if (stopped != NULL) {
            resultError(rs, stopped);
            continue;
        }
        int rc = runStmt(db, cache, pc, &b->stmts[i], true, true, rs);
        if (rc != SQLITE_OK && pc->trip != POLICY_TRIP_NONE && !policyStatementTrip(pc)) {
            stopped = policyMessage(pc, SQLITE_INTERRUPT, msg, sizeof msg);
        }
        pc->result_before += resultCounted(pc, rs);
    }
    policyEnd(pc);
    pc->internal = true;
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    pc->internal = false;
    return 0;
}

int storeQuery(struct store *s, const struct batch *b, struct cairn_result **out,
               char *errmsg)
{
    struct reader *r;
    assert(!s->scratch); /* store.h: no readers on a scratch store */
    struct cairn_result *res;
    int rv;

    *out = NULL;
    res = resultNew();
    if (res == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    rv = readerGet(s, &r, errmsg);
    if (rv != 0) {
        cairn_result_free(res);
        return rv;
    }
    rv = runReads(r->db, &r->cache, &r->pol, b, s->query_timeout_ms, s->max_result, res, errmsg);
    readerPut(s, r);
    if (rv != 0) {
        cairn_result_free(res);
        return rv;
    }
    *out = res;
    return 0;
}

int storeMetaGet(struct store *s, const char *key, char *out, size_t n, char *errmsg)
{
    struct reader *r;
    sqlite3_stmt *st = NULL;
    int rc;
    int rv = readerGet(s, &r, errmsg);
    if (rv != 0) {
        return rv;
    }
    rc = sqlite3_prepare_v2(r->db, "SELECT value FROM " META_TABLE " WHERE key=?1", -1, &st,
                            NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        snprintf(out, n, "%s", v ? (const char *)v : "");
        rv = 0;
    } else if (rc == SQLITE_DONE) {
        errorf(errmsg, "no %s in %s", key, s->path);
        rv = CAIRN_ENOTFOUND;
    } else {
        rv = sqlErr(r->db, rc, "read metadata", s->path, errmsg);
    }
    sqlite3_finalize(st);
    readerPut(s, r);
    return rv;
}

void storeSetRepos(struct store *s, const struct reposet *repos)
{
    s->repos = repos;
}

int storeQueryFile(struct store *s, const char *path, const struct batch *b,
                   struct cairn_result **out, char *errmsg)
{
    struct cairn_result *res;
    struct policy_conn pol;
    sqlite3 *db = NULL;
    int rc;
    int rv = 0;

    *out = NULL;
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, PAGESUM_VFS);
    if (rc != SQLITE_OK) {
        rv = sqlErr(db, rc, "open", path, errmsg);
        sqlite3_close(db);
        return rv;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    policyInstall(db, &pol, s->max_length, &s->stopping);
    pol.temp_limit = s->max_temp;
    if (s->repos != NULL) {
        vtabRegister(db, s->repos);
    }
    res = resultNew();
    if (res == NULL) {
        sqlite3_close(db);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    rv = runReads(db, NULL, &pol, b, s->query_timeout_ms, s->max_result, res, errmsg);
    sqlite3_close(db);
    if (rv != 0) {
        cairn_result_free(res);
        return rv;
    }
    *out = res;
    return 0;
}

/* How much of the statement at p (ending at end) an error message quotes. */
static int snippet(const char *p, const char *end)
{
    return (int)(end - p > 60 ? 60 : end - p);
}

/* The first parameter of ps (a whole statement) that st gives no value, as bindParams
 * binds them; 0 when every one has a value. SQLite binds NULL to the others: a write
 * would store NULLs the client never sent (a forgotten value in ["... VALUES(?, ?)",
 * 1]), so the request is refused, as rqlite does. */
static int unboundParam(sqlite3_stmt *ps, const struct stmt *st)
{
    int nbind = sqlite3_bind_parameter_count(ps);
    int npos = 0;
    int first = 0;
    bool *bound;
    if (nbind == 0) {
        return 0;
    }
    if ((bound = calloc((size_t)nbind + 1, sizeof *bound)) == NULL) {
        return 0; /* unchecked: the apply binds what it can, as before */
    }
    for (size_t j = 0; j < st->nparams; j++) {
        const struct param *p = &st->params[j];
        if (p->name == NULL) {
            if (++npos <= nbind) {
                bound[npos] = true;
            }
        } else {
            bound[paramIndex(ps, p)] = true;
        }
    }
    for (int k = 1; k <= nbind && first == 0; k++) {
        if (!bound[k]) {
            first = k;
        }
    }
    free(bound);
    return first;
}

/* Statement i repeats statement i - 1 with parameters given alike (the same number, the
 * same names): what holds for one holds for the other. */
static bool sameParams(const struct stmt *a, const struct stmt *b)
{
    if (a->nparams != b->nparams) {
        return false;
    }
    for (size_t j = 0; j < a->nparams; j++) {
        const struct param *p = &a->params[j], *q = &b->params[j];
        if ((p->name == NULL) != (q->name == NULL) ||
            (p->name != NULL && (p->name_len != q->name_len ||
                                 memcmp(p->name, q->name, p->name_len) != 0))) {
            return false;
        }
    }
    return true;
}

static int refuseUnbound(sqlite3_stmt *ps, const struct stmt *st, size_t i, char *errmsg)
{
    int k = unboundParam(ps, st);
    const char *name;
    if (k == 0) {
        return 0;
    }
    name = sqlite3_bind_parameter_name(ps, k);
    errorf(errmsg, "statement %zu (%.*s): parameter %d%s%s%s of the statement is given no "
                   "value (%zu given): give one for each, null for NULL",
           i + 1, snippet(st->sql, st->sql + st->sql_len), st->sql, k, name ? " (" : "",
           name ? name : "", name ? ")" : "", st->nparams);
    return CAIRN_EINVAL;
}

int storeCheck(struct store *s, const struct batch *b, bool *read_only, char *errmsg)
{
    struct reader *r;
    char msg[512];
    char local[sizeof r->pol.local] = "";
    const char *local_sql = NULL, *local_end = NULL;
    size_t local_at = 0;
    int rv = 0;
    size_t i;
    *read_only = true;
    if ((rv = readerGet(s, &r, errmsg)) != 0) {
        *read_only = false;
        return rv;
    }
    for (i = 0; i < b->n && rv == 0; i++) {
        const struct stmt *st = &b->stmts[i];
        const char *tail = st->sql;
        const char *end = tail + st->sql_len;
        sqlite3_stmt *ps;
        if (i > 0 && st->sql_len == st[-1].sql_len &&
            (st->sql == st[-1].sql || memcmp(st->sql, st[-1].sql, st->sql_len) == 0) &&
            sameParams(st, &st[-1])) {
            continue; /* bulk requests repeat one statement: checked once */
        }
        if (policyCheckText(st->sql, st->sql_len, msg, sizeof msg) != 0) {
            errorf(errmsg, "statement %zu: %s", i + 1, msg);
            rv = CAIRN_EINVAL;
            break;
        }
        /* A single statement is prepared into the reader's cache, where the read that
         * usually follows finds it. */
        ps = cacheGet(&r->cache, tail, (size_t)(end - tail));
        if (ps != NULL) {
            *read_only = *read_only && sqlite3_stmt_readonly(ps) != 0;
            rv = refuseUnbound(ps, st, i, errmsg);
            continue;
        }
        while (tail < end) {
            const char *next = NULL;
            bool cached = false;
            int rc;
            ps = NULL;
            policyPrepareBegin(&r->pol, tail, (size_t)(end - tail));
            rc = policyPrepare(&r->pol, r->db, tail, (int)(end - tail), &ps, &next);
            policyPrepareEnd(&r->pol);
            if (rc == SQLITE_OK && r->pol.local[0] != '\0' && local_at == 0) {
                local_at = i + 1;
                local_sql = tail;
                local_end = end;
                memcpy(local, r->pol.local, sizeof local);
            }
            if (rc != SQLITE_OK) {
                const char *m = policyMessage(&r->pol, rc, msg, sizeof msg);
                if (m != NULL) {
                    errorf(errmsg, "statement %zu (%.*s): %s", i + 1, snippet(tail, end), tail,
                           m);
                    rv = CAIRN_EINVAL;
                }
                /* Otherwise the writer reports the error in order (the statement may
                 * name a table an earlier one creates). */
                *read_only = false;
                break;
            }
            if (ps != NULL && !policyCheckPrepared(&r->pol, ps, msg, sizeof msg)) {
                errorf(errmsg, "statement %zu (%.*s): %s", i + 1, snippet(tail, end), tail, msg);
                sqlite3_finalize(ps);
                rv = CAIRN_EINVAL;
                break;
            }
            if (ps != NULL && !sqlite3_stmt_readonly(ps)) {
                *read_only = false;
            }
            /* A string of several statements takes its parameters across them: only a
             * single statement is checked. */
            if (ps != NULL && tail == st->sql && next == end &&
                (rv = refuseUnbound(ps, st, i, errmsg)) != 0) {
                sqlite3_finalize(ps);
                break;
            }
            if (ps != NULL && tail == st->sql && next == end &&
                !isTxnControl(tail, (size_t)(next - tail)) && r->pol.local[0] == '\0') {
                cached = cachePut(&r->cache, tail, (size_t)(end - tail), ps);
            }
            if (!cached) {
                sqlite3_finalize(ps);
            }
            if (next == NULL || next <= tail) {
                break;
            }
            tail = next;
        }
    }
    readerPut(s, r);
    if (rv == 0 && local_at != 0 &&
        (b->kind == BATCH_EXECUTE || (b->kind == BATCH_REQUEST && !*read_only))) {
        /* The writer refuses it on every node (policy.c, nodeLocal): said now, with
         * nothing proposed. */
        errorf(errmsg, "statement %zu (%.*s): refused by cairn's statement policy: %s reads "
                       "what differs from node to node (the file's path and pages, the "
                       "connection's modes, settings and statements, the SQLite library): it "
                       "can be read by a request that only reads (/db/query), not by one that "
                       "writes",
               local_at, snippet(local_sql, local_end), local_sql, local);
        rv = CAIRN_EINVAL;
    }
    if (rv != 0) {
        *read_only = false;
    }
    return rv;
}

bool storeIsReadOnly(struct store *s, const struct batch *b)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    bool ro;
    storeCheck(s, b, &ro, errmsg);
    return ro;
}

void storeInterrupt(struct store *s)
{
    atomic_store(&s->stopping, true);
}

void storeSetLimits(struct store *s, uint32_t max_length, uint32_t query_timeout_ms,
                    uint64_t max_result, uint64_t max_temp)
{
    s->max_temp = max_temp ? max_temp : POLICY_DEFAULT_MAX_TEMP;
    s->max_length = max_length ? max_length : POLICY_DEFAULT_MAX_LENGTH;
    s->query_timeout_ms = query_timeout_ms;
    s->max_result = max_result ? max_result : POLICY_DEFAULT_MAX_RESULT;
}

/* ---- snapshots ---------------------------------------------------------------- */


int fileDigest(const char *path, uint64_t *size, uint64_t *digest, char *errmsg)
{
    XXH3_state_t *st = XXH3_createState();
    char *chunk = malloc(1 << 20);
    int fd = open(path, O_RDONLY);
    uint64_t total = 0;
    ssize_t n;
    int rv = 0;
    if (st == NULL || chunk == NULL) {
        errorf(errmsg, "out of memory hashing %s", path);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if (fd < 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    XXH3_64bits_reset(st);
    while ((n = read(fd, chunk, 1 << 20)) > 0) {
        XXH3_64bits_update(st, chunk, (size_t)n);
        total += (uint64_t)n;
    }
    if (n < 0) {
        errorf(errmsg, "read %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    *size = total;
    *digest = XXH3_64bits_digest(st);
out:
    if (fd >= 0) {
        close(fd);
    }
    free(chunk);
    XXH3_freeState(st);
    return rv;
}


static int copyFile(const char *src, const char *dst, char *errmsg)
{
    char *chunk = malloc(1 << 20);
    int in = open(src, O_RDONLY);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    int rv = 0;
    if (chunk == NULL) {
        errorf(errmsg, "out of memory copying %s", src);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if (in < 0 || out < 0) {
        errorf(errmsg, "open %s: %s", in < 0 ? src : dst, strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    while ((n = read(in, chunk, 1 << 20)) > 0) {
        if (write(out, chunk, (size_t)n) != n) {
            errorf(errmsg, "write %s: %s", dst, strerror(errno));
            rv = errorFromErrno(errno);
            goto out;
        }
    }
    if (n < 0) {
        errorf(errmsg, "read %s: %s", src, strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    if (fsync(out) != 0) {
        errorf(errmsg, "fsync %s: %s", dst, strerror(errno));
        rv = errorFromErrno(errno);
    }
out:
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    free(chunk);
    return rv;
}

static int replaceFrom(struct store *s, const char *tmp, char *errmsg);

int storeReplaceWith(struct store *s, const char *src, char *errmsg)
{
    char tmp[PATH_MAX];
    int rv;

    snprintf(tmp, sizeof tmp, "%s.restore", s->path);
    if ((rv = copyFile(src, tmp, errmsg)) != 0) {
        unlink(tmp);
        return rv;
    }
    return replaceFrom(s, tmp, errmsg);
}

int storeReplaceMove(struct store *s, const char *src, char *errmsg)
{
    return replaceFrom(s, src, errmsg);
}

static int replaceLocked(struct store *s, const char *tmp, char *errmsg);

/* Swap the file at tmp in for the database and reopen the writer. */
static int replaceFrom(struct store *s, const char *tmp, char *errmsg)
{
    int rv;
    assert(!s->scratch); /* store.h: not for a scratch store */
    writerTake(s);
    rv = replaceLocked(s, tmp, errmsg);
    writerGive(s);
    return rv;
}

/* Deleting a large file frees its blocks in the unlink (on this machine's ext4, 60-100
 * ms for 200 MiB): a swap on the loop thread must not pay that. The replaced file is
 * given a second name first (REPLACED_SUFFIX and the store's generation), which keeps
 * its blocks alive through the rename, and a thread of its own deletes it; one left by a
 * crash goes at the next storeOpen. */
#define REPLACED_SUFFIX ".replaced-"

static void *unlinkMain(void *arg)
{
    unlink(arg);
    free(arg);
    return NULL;
}

static void unlinkLater(const char *path)
{
    pthread_attr_t attr;
    pthread_t t;
    char *copy = strdup(path);
    int rc = copy != NULL ? pthread_attr_init(&attr) : ENOMEM;
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, unlinkMain, copy);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        unlink(path);
        free(copy);
    }
}

/* Remove what unlinkLater had no time to (a crash, a stop right after a swap). */
static void removeReplaced(const char *path)
{
    char dir[PATH_MAX];
    char prefix[PATH_MAX];
    char full[PATH_MAX * 2];
    const char *slash = strrchr(path, '/');
    struct dirent *e;
    DIR *d;
    snprintf(dir, sizeof dir, "%.*s", slash != NULL ? (int)(slash - path) : 1,
             slash != NULL ? path : ".");
    snprintf(prefix, sizeof prefix, "%s" REPLACED_SUFFIX, slash != NULL ? slash + 1 : path);
    if ((d = opendir(dir[0] != '\0' ? dir : "/")) == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
            unlink(full);
        }
    }
    closedir(d);
}

static int replaceLocked(struct store *s, const char *tmp, char *errmsg)
{
    char side[PATH_MAX];
    char replaced[PATH_MAX + 32];
    bool linked;
    int rv;

    /* Backups and Raft snapshots that froze the old file go on reading it beside the
     * swap (freezeLocked): never wait for them here. This is the loop thread, and a
     * snapshot's freeze ends only in its finalize, which libraft runs on this thread:
     * waiting hung the node for good when a restore's swap was applied while the
     * snapshot of the restore before it was being written; a backup's held the loop,
     * and the node's part in the cluster, until the backup ended. */
    /* No reader may hold the old file while it is swapped: a connection closing
     * the old database would otherwise delete the new one's WAL by name. */
    pthread_rwlock_wrlock(&s->swap_lock);
    closeReaders(s);
    atomic_fetch_add(&s->generation, 1);
    closeWriter(s);
    snprintf(side, sizeof side, "%s-wal", s->path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", s->path);
    unlink(side);
    snprintf(replaced, sizeof replaced, "%s" REPLACED_SUFFIX "%llu", s->path,
             (unsigned long long)atomic_load(&s->generation));
    linked = link(s->path, replaced) == 0;
    rv = libRenameDurable(tmp, s->path, errmsg);
    if (linked) {
        unlinkLater(replaced); /* also when the rename failed: its second name only */
    }
    if (rv == 0) {
        rv = openWriter(s, errmsg);
    }
    pthread_rwlock_unlock(&s->swap_lock);
    return rv;
}

static int freezeLocked(struct store *s, struct store_freeze *fz, char *errmsg);

int storeFreeze(struct store *s, struct store_freeze *fz, char *errmsg)
{
    int rv;
    assert(!s->scratch); /* store.h: not for a scratch store */
    /* With the writer taken: the checkpoint below needs it idle, and fz->index is the
     * committed index only then. */
    writerTake(s);
    rv = freezeLocked(s, fz, errmsg);
    writerGive(s);
    return rv;
}

static int freezeLocked(struct store *s, struct store_freeze *fz, char *errmsg)
{
    sqlite3 *db = NULL;
    int log_frames = -1;
    int done = -1;
    int rc;
    int rv;

    fz->db = NULL;
    fz->fd = -1;
    db = openSide(s->path);
    if (db == NULL) {
        /* Opening reads the schema, which a concurrent checkpoint or WAL reset can keep
         * busy for a moment: the caller tries again. */
        errorf(errmsg, "%s: cannot open a connection for the backup now", s->path);
        rv = CAIRN_EBUSY;
        goto err;
    }
    /* A restore may swap the file while this connection reads it (replaceLocked does
     * not wait for freezes): it then holds the old file and its WAL by descriptors, and
     * closing it, the old file's last connection, must not delete "-wal" by name, which
     * is the new file's by then. With a persistent WAL SQLite deletes nothing at close
     * (what it truncates, it truncates through its descriptor: the old WAL). */
    {
        int persist = 1;
        if (sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist) != SQLITE_OK) {
            errorf(errmsg, "%s: cannot keep the WAL of the backup's connection", s->path);
            rv = CAIRN_EIO;
            goto err;
        }
    }
    /* A short busy wait only: this runs on the loop thread. Readers that started
     * after the last commit do not hold the checkpoint back for long. */
    sqlite3_busy_timeout(db, 100);
    rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &done);
    if (rc == SQLITE_BUSY || (rc == SQLITE_OK && log_frames != 0)) {
        errorf(errmsg, "%s: a reader keeps the WAL from being checkpointed", s->path);
        rv = CAIRN_EBUSY;
        goto err;
    }
    if (rc != SQLITE_OK) {
        rv = sqlErr(db, rc, "checkpoint before backup", s->path, errmsg);
        goto err;
    }
    /* The WAL is empty and only this thread writes: the read transaction starts on
     * read mark 0, the database file itself. */
    rc = sqlite3_exec(db, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        rv = sqlErr(db, rc, "begin backup read", s->path, errmsg);
        goto err;
    }
    /* The connection's own descriptor: one opened here and closed at the thaw would
     * drop SQLite's locks on the file (pagesum.h, pagesumFd). */
    fz->fd = pagesumFd(db);
    if (fz->fd < 0) {
        errorf(errmsg, "%s: cannot read the file beside SQLite (its descriptor is not known)",
               s->path);
        rv = CAIRN_EIO;
        goto err;
    }
    fz->db = db;
    fz->index = s->applied;
    fz->store = s;
    pthread_mutex_lock(&s->fz_mu);
    s->nfreezes++;
    pthread_mutex_unlock(&s->fz_mu);
    return 0;

err:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rv;
}

void storeThaw(struct store_freeze *fz)
{
    fz->fd = -1; /* fz->db's, closed with it */
    if (fz->db != NULL) {
        struct store *s = fz->store;
        sqlite3_exec(fz->db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(fz->db);
        fz->db = NULL;
        pthread_mutex_lock(&s->fz_mu);
        assert(s->nfreezes > 0);
        s->nfreezes--;
        pthread_mutex_unlock(&s->fz_mu);
    }
}

void storeCheckpoint(struct store *s)
{
    sqlite3 *db;
    pthread_rwlock_rdlock(&s->swap_lock);
    db = openSide(s->path);
    if (db != NULL) {
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    sqlite3_close(db);
    pthread_rwlock_unlock(&s->swap_lock);
}

void storeStats(struct store *s, struct store_stats *st)
{
    struct stat sb;
    char wal[PATH_MAX];
    st->applied_index = storeAppliedIndex(s);
    st->db_size = stat(s->path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    snprintf(wal, sizeof wal, "%s-wal", s->path);
    st->wal_size = stat(wal, &sb) == 0 ? (int64_t)sb.st_size : 0;
    st->readers = atomic_load(&s->nreaders);
    st->page_checksums = atomic_load(&s->page_checksums_on);
    st->checksum_failures = pagesumFailures();
    st->early_applies = atomic_load(&s->early_applies);
    st->early_discards = atomic_load(&s->early_discards);
}
