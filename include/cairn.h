/* cairn — a replicated SQLite database with backups you can trust.
 *
 * The embedded API. A program opens a node on a data directory, then executes and
 * queries SQL with bound parameters and typed results. Every write goes through the
 * node's Raft log before it is applied to SQLite, exactly as in the cairnd server
 * (which is a thin main over this same library). With no addresses in the
 * configuration the node is a single-voter cluster that needs no network.
 *
 * Threads: every function may be called from any thread, concurrently, on the same
 * handle, except cairn_close(), which must be the last call on a handle.
 *
 * Errors: functions return CAIRN_OK (0) or an error code; cairn_errmsg() gives the
 * message of the calling thread's last failure on that handle. A NULL where a pointer
 * is required (out, stmts, params, a text's bytes) is CAIRN_EINVAL, not a crash.
 *
 * Not checked, the caller's to keep (undefined behaviour otherwise): a handle is not
 * used after cairn_close() (nor closed twice), a result not after cairn_result_free()
 * (nor freed twice), cairn_text() is given a string (not NULL), and a program that
 * configures SQLite itself does not make it SQLITE_CONFIG_SINGLETHREAD (cairn's
 * threads share SQLite's allocator and caches). One data directory is open at most
 * once at a time, in any process: a second cairn_open of it is CAIRN_ELOCKED. Several
 * handles (on different directories) may be open in one process; cairn_close() of one
 * of them ends the S3 transfers (backups, restores) running in every one, which then
 * fail with CAIRN_ESHUTDOWN. */
#ifndef CAIRN_H
#define CAIRN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CAIRN_VERSION "0.1.0"

/* Result codes: one table, each code with its name and message. */
#define CAIRN_ERRORS(X)                                                                  \
    X(CAIRN_OK, 0, "not an error")                                                       \
    X(CAIRN_ENOMEM, 1, "out of memory")                                                  \
    X(CAIRN_EINVAL, 2, "invalid argument")                                               \
    X(CAIRN_EIO, 3, "input/output error")                                                \
    X(CAIRN_ECORRUPT, 4, "data is corrupt")                                              \
    X(CAIRN_EBUSY, 5, "resource is busy")                                                \
    X(CAIRN_ELOCKED, 6, "data directory is locked by another process")                   \
    X(CAIRN_ENOTLEADER, 7, "this node is not the leader")                                \
    X(CAIRN_ENOLEADER, 8, "the cluster has no leader")                                   \
    X(CAIRN_ESQL, 9, "SQL error")                                                        \
    X(CAIRN_ESHUTDOWN, 10, "node is shutting down")                                      \
    X(CAIRN_ERAFT, 11, "raft error")                                                     \
    X(CAIRN_ENOTFOUND, 12, "not found")                                                  \
    X(CAIRN_ETOOBIG, 13, "too big")                                                      \
    X(CAIRN_ETIMEOUT, 14, "timed out")                                                   \
    X(CAIRN_ENOSPC, 15, "no space left on device")                                      \
    X(CAIRN_EEXIST, 16, "already exists")                                               \
    X(CAIRN_EUNKNOWN, 17, "outcome unknown: the write was proposed and may have been applied") \
    X(CAIRN_ENOTARCHIVED, 18, "the write was applied but is not yet in the archive")

enum cairn_rc {
#define CAIRN_X_(name, value, msg) name = value,
    CAIRN_ERRORS(CAIRN_X_)
#undef CAIRN_X_
};

typedef struct cairn cairn;
typedef struct cairn_result cairn_result;

/* Value types: the same numbers as SQLite's fundamental datatypes. */
#define CAIRN_INTEGER 1
#define CAIRN_FLOAT 2
#define CAIRN_TEXT 3
#define CAIRN_BLOB 4
#define CAIRN_NULL 5

/* Read consistency levels, as rqlite defines them. */
enum cairn_level {
    CAIRN_LEVEL_NONE = 0,         /* read the local database, whatever this node's role */
    CAIRN_LEVEL_WEAK = 1,         /* local read, only if this node believes it is leader */
    CAIRN_LEVEL_LINEARIZABLE = 2, /* confirm leadership with a log barrier, then read */
    CAIRN_LEVEL_STRONG = 3        /* leadership confirmed through the log, every earlier
                                     entry applied, then the leader reads (the read's
                                     SQL never enters the log) */
};

struct cairn_config {
    const char *data_dir;        /* required: created if missing */
    uint64_t node_id;            /* 0 means 1 */
    const char *raft_addr;       /* NULL: single node with no network */
    const char *http_addr;       /* NULL: no HTTP server; else "HOST:PORT" */
    const char *backup_dir;      /* NULL: "backups" beside the data directory */
    size_t max_body;             /* largest HTTP request body but a load's; 0: 64 MiB */
    unsigned snapshot_threshold; /* log entries between snapshots; 0 means 16384 */
    unsigned snapshot_trailing;  /* entries kept after a snapshot; 0 means 8192 */
    /* NULL: no log lines. Called from cairn's own threads, several at once: it must be
     * thread-safe and return soon, and must not call cairn functions (the thread that
     * calls it may be the one the call would wait for). */
    void (*log)(void *data, const char *line);
    void *log_data;
    /* Clusters (need raft_addr and http_addr). join: comma-separated HTTP addresses of
     * cluster members ("host:port" or "http://host:port"); a new node asks them to add
     * it. With bootstrap_expect N, the join list names the N nodes started together
     * and they form a new cluster. Both are kept in DATA/node.json, so a restarted node
     * rejoins without them. */
    const char *join;
    unsigned bootstrap_expect;
    /* When *stop becomes non-zero (a signal handler may set it), a cairn_open that is
     * waiting for its cluster (discovery, join, catching up) gives up with
     * CAIRN_ESHUTDOWN. NULL: it waits until its own time limits. */
    volatile int *stop;
    /* Bounded execution (README, "Statement policy and limits"). write_step_limit: the
     * virtual-machine steps one statement of a write may take, the same on every node
     * (0: 100,000,000). max_value_size: the longest string or blob, in bytes (0: 64
     * MiB). query_timeout_ms: how long a read may run (0: 30 s). */
    uint64_t write_step_limit;
    uint32_t max_value_size;
    uint32_t query_timeout_ms;
    /* The most a read request's results may take in memory, in bytes (0: 256 MiB). */
    uint64_t max_result_size;
    /* A database created by this open keeps a checksum in every page, verified on every
     * read, unless this is set (docs/OPERATIONS.md, "Page checksums"). */
    int no_page_checksums;
    /* The largest body POST /db/load takes, in bytes (0: 1 TiB); max_body bounds every
     * other request body. */
    uint64_t max_load_body;
    /* "DIR[#ID]" or "file:///DIR[#ID]": when the node's database is empty (no schema of
     * the user's), restore backup ID (default: the newest readable one) of the
     * repository DIR through the log before the node serves; otherwise nothing is done
     * (logged). Only for a node that starts alone (no join, no bootstrap_expect). */
    const char *restore_from;
    /* More backup repositories, each "NAME=URL" (URL: a path, file:///DIR or
     * s3://BUCKET/PREFIX), in a NULL-terminated array (NULL: none). backup_dir, when
     * set, is the repository "default" and comes first; otherwise the first of these
     * is the default one (also called "default"). Backups name one by name (BACKUP
     * DATABASE ... TO 'NAME'); restores find a backup id in any of them. At most 8 in
     * all. Read during cairn_open only. */
    const char *const *repositories;
    /* How this node's backups are compressed: "lz4", "lz4:ACCELERATION", "zstd" or
     * "zstd:LEVEL" (NULL: LZ4 into a repository with a local path, zstd level 1 into
     * S3). Raft snapshots are always LZ4. */
    const char *backup_compression;
    /* The continuous archive (docs/OPERATIONS.md, "Continuous archive"): when archive is
     * non-zero, the leader uploads every committed write to the repository archive_to
     * names (NULL: the default one) in segments closed every archive_interval_ms (0:
     * 1000) or archive_segment_bytes (0: 16 MiB); every node holds the recent committed
     * entries in memory, at most archive_queue_bytes (0: 64 MiB), so that a new leader
     * continues the archive where the old one stopped. */
    int archive;
    const char *archive_to;
    uint32_t archive_interval_ms;
    uint64_t archive_segment_bytes;
    uint64_t archive_queue_bytes;
    /* archive_sync non-zero: a write is answered only once its entry is in the archive
     * (the leader's; a follower forwards writes to it), waiting at most
     * archive_sync_timeout_ms (0: 10 s); past that the write is answered with
     * CAIRN_ENOTARCHIVED: applied, committed, not archived yet. */
    int archive_sync;
    uint32_t archive_sync_timeout_ms;
    /* Which node archives (docs/OPERATIONS.md, "Continuous archive"): 0 the leader; 1 a
     * caught-up follower (the lowest-id voter that is not the leader), the leader when
     * there is none. */
    int archive_from;
    /* The most temporary file space one statement may take, in bytes (0: 1 GiB): where
     * SQLite sorts, groups or keeps DISTINCT what does not fit in memory, or builds an
     * index (README, "Statement policy and limits"). A write runs under the leader's,
     * rounded up to MiB, the same on every node. */
    uint64_t max_temp_size;
    /* The most one write request may grow the database, in bytes (0: 1 GiB;
     * CAIRN_NO_GROWTH_BOUND: none): pages its statements append past the page count
     * the database had before it. A write past it fails as its own outcome, the same on
     * every node, instead of filling every node's disk (README, "Statement policy and
     * limits"). The leader's, rounded up to MiB, holds on every node. */
    uint64_t max_write_growth;
    /* The most memory the HTTP server's requests may hold together, in bytes (0: a
     * quarter of the machine's or control group's memory, at least 64 MiB): bodies
     * being received and the results of answers not yet read. A request that finds it
     * taken waits up to a second, then is answered 503 (README, "Statement policy and
     * limits"). */
    uint64_t max_request_memory;
};

/* cairn_config.max_write_growth: no bound. */
#define CAIRN_NO_GROWTH_BOUND UINT64_MAX

/* Fill cfg with the defaults; set data_dir afterwards. A string longer than cairn
 * keeps (data_dir: about PATH_MAX; addresses: 127 bytes) is CAIRN_EINVAL at open. */
void cairn_config_init(struct cairn_config *cfg);

/* A parameter or a result value. For parameters, name is NULL for a positional
 * parameter, or the name without its prefix (":id" is named "id"). Text and blob
 * memory is the caller's and need only live until the call returns. */
typedef struct cairn_value {
    int type;
    const char *name;
    int64_t i;
    double d;
    const void *p; /* text (UTF-8) or blob bytes */
    size_t n;      /* length of p in bytes */
} cairn_value;

static inline cairn_value cairn_int(int64_t v)
{
    cairn_value x = {CAIRN_INTEGER, NULL, v, 0, NULL, 0};
    return x;
}
static inline cairn_value cairn_float(double v)
{
    cairn_value x = {CAIRN_FLOAT, NULL, 0, v, NULL, 0};
    return x;
}
static inline cairn_value cairn_text(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    cairn_value x = {CAIRN_TEXT, NULL, 0, 0, s, n};
    return x;
}
static inline cairn_value cairn_blob(const void *p, size_t n)
{
    cairn_value x = {CAIRN_BLOB, NULL, 0, 0, p, n};
    return x;
}
static inline cairn_value cairn_null(void)
{
    cairn_value x = {CAIRN_NULL, NULL, 0, 0, NULL, 0};
    return x;
}

/* One statement of a batch. */
typedef struct cairn_stmt {
    const char *sql;
    const cairn_value *params;
    size_t nparams;
} cairn_stmt;

/* Flags of cairn_request(). */
#define CAIRN_TRANSACTION 0x1 /* all statements or none */
#define CAIRN_READ_ONLY 0x2   /* a query: statements may not change the database */

/* Open (creating if needed) the node whose data lives in cfg->data_dir and start it.
 * Returns once the node can serve requests. *out is set to a handle even on
 * failure (unless memory ran out, when it is NULL) so that cairn_errmsg() can say
 * why; the caller must cairn_close() it in both cases. With out NULL: CAIRN_EINVAL,
 * cairn_errmsg(NULL) says so. */
int cairn_open(const struct cairn_config *cfg, cairn **out);

/* Stop the node cleanly and free the handle. Safe on NULL. */
int cairn_close(cairn *db);

/* Run statements. Writes go through the Raft log; with CAIRN_READ_ONLY the batch is a
 * query read at the given level. On success *out holds one result per statement
 * (per-statement SQL errors are in the result, not the return code); the caller
 * frees it with cairn_result_free(). On failure *out is NULL. */
int cairn_request(cairn *db, const cairn_stmt *stmts, size_t n, unsigned flags,
                  enum cairn_level level, cairn_result **out);

/* One write statement; a shorthand for cairn_request(). */
int cairn_execute(cairn *db, const char *sql, const cairn_value *params, size_t nparams,
                  cairn_result **out);

/* One read statement at the given level; a shorthand for cairn_request(). */
int cairn_query(cairn *db, const char *sql, const cairn_value *params, size_t nparams,
                enum cairn_level level, cairn_result **out);

/* The message of this thread's last failure on db ("" if none). Valid until this
 * thread's next call on db. */
const char *cairn_errmsg(cairn *db);

/* Static description of a result code. */
const char *cairn_strerror(int rc);

/* The HTTP address the node listens on ("127.0.0.1:4001"), or NULL. Useful when the
 * configured port was 0. Owned by db. */
const char *cairn_http_addr(cairn *db);

/* Results. stmt, row and col are 0-based; out-of-range arguments give NULL/0. Every
 * pointer returned is owned by the result and valid until cairn_result_free(). */
size_t cairn_result_count(const cairn_result *r);
const char *cairn_result_error(const cairn_result *r, size_t stmt); /* NULL if ok */
int64_t cairn_result_last_insert_id(const cairn_result *r, size_t stmt);
int64_t cairn_result_rows_affected(const cairn_result *r, size_t stmt);
size_t cairn_result_columns(const cairn_result *r, size_t stmt);
const char *cairn_result_column_name(const cairn_result *r, size_t stmt, size_t col);
const char *cairn_result_column_type(const cairn_result *r, size_t stmt, size_t col);
size_t cairn_result_rows(const cairn_result *r, size_t stmt);
int cairn_result_type(const cairn_result *r, size_t stmt, size_t row, size_t col);
int64_t cairn_result_int64(const cairn_result *r, size_t stmt, size_t row, size_t col);
double cairn_result_double(const cairn_result *r, size_t stmt, size_t row, size_t col);
/* Text is NUL-terminated; *len (if not NULL) gets its length in bytes. */
const char *cairn_result_text(const cairn_result *r, size_t stmt, size_t row, size_t col,
                              size_t *len);
const void *cairn_result_blob(const cairn_result *r, size_t stmt, size_t row, size_t col,
                              size_t *len);
void cairn_result_free(cairn_result *r);

#ifdef __cplusplus
}
#endif

#endif
