/* Commands: what a write (or a strong read) puts into the Raft log.
 *
 * A command is a batch of SQL statements with their parameters, plus what makes its
 * application deterministic on every node and on every replay: the leader's wall
 * clock time and a random seed. The encoding is versioned and ends with an XXH3
 * checksum; the decoder checks every length before trusting it.
 *
 * A decoded batch points into the buffer it was decoded from (zero copy): the
 * buffer must outlive the batch. Any thread. */
#ifndef CAIRN_COMMAND_H
#define CAIRN_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* What the statements of a batch are for. */
enum batch_kind {
    BATCH_EXECUTE = 1, /* /db/execute: writes */
    BATCH_QUERY = 2,   /* /db/query: reads only; a write is an error */
    BATCH_REQUEST = 3, /* /db/request: reads and writes mixed */
    BATCH_RESTORE = 4, /* replace the database with a backup: one statement whose SQL
                          is the backup id, with one blob parameter, the backup file's
                          digest (see fsm.h) */
    BATCH_DIGEST = 5   /* every node computes a digest of its database as of this entry,
                          to be compared (fsm.h); no statements */
};

/* Longest parameter name, in bytes, without its ':', '@' or '$' (store.c binds it with
 * the prefix in a 256-byte buffer); the parser refuses longer ones. */
#define PARAM_NAME_MAX 254

#define BATCH_TRANSACTION 0x1 /* all statements or none */
/* cairn's own statements on its metadata table (the cluster's node directory): set by
 * the server only, never from a request; applied past the authorizer's guard and
 * never through the statement cache, so that no client statement can reuse them. */
#define BATCH_META 0x2
/* The client asked for per-statement timings (?timings): the apply measures each
 * statement's time only then (two clock reads a statement, 3% of a bulk insert). */
#define BATCH_TIMINGS 0x4

/* A parameter. Strings are not NUL-terminated: always use the lengths. */
struct param {
    int type;          /* CAIRN_INTEGER, CAIRN_FLOAT, CAIRN_TEXT, CAIRN_BLOB, CAIRN_NULL */
    const char *name;  /* NULL for positional; else the name without its prefix */
    size_t name_len;
    int64_t i;
    double d;
    const char *s;     /* text or blob bytes */
    size_t n;
};

struct stmt {
    const char *sql;
    size_t sql_len;
    struct param *params;
    size_t nparams;
};

struct membudget;

struct batch {
    int kind;
    unsigned flags;
    int64_t time_ms; /* leader's wall clock when proposed (Unix ms) */
    uint64_t seed;   /* seeds random() and randomblob() while applying */
    /* Limits every node applies the batch under (policy.h), chosen by the leader and
     * carried in the entry: the VM step budget of each statement and the longest value
     * (SQLite's SQLITE_LIMIT_LENGTH). 0: the defaults. */
    uint64_t max_steps;
    uint32_t max_length;
    /* The most temporary file space one statement may take, in MiB (0: the default,
     * POLICY_DEFAULT_MAX_TEMP; also what entries written before it was carried say). */
    uint32_t max_temp_mib;
    /* The most one entry's writes may grow the database, in MiB: pages appended past
     * the page count it had when the entry began (0: no bound, what every entry written
     * before it was carried says). */
    uint32_t max_growth_mib;
    /* A read's time limit (ms, 0: the node's default) and its client's socket, watched
     * so that the read stops when the client goes away (has_client). Never encoded. */
    uint32_t timeout_ms;
    bool has_client;
    int client_fd;
    /* A read's results take their memory from this node-wide budget as they grow
     * (membudget.h), adding what they took to *budget_taken, which the caller gives
     * back once it has let go of the results. NULL: none (writes, whose results every
     * node must decide alike). Never encoded. */
    struct membudget *budget;
    uint64_t *budget_taken;
    /* Called once the batch is known to write, before it is encoded into its log
     * entry and proposed (dbRun): what the caller kept only in case the batch went
     * elsewhere as a read (the HTTP request's body, as large as the entry) can go
     * then, not be held beside the entry's copies. NULL: none. Never encoded. */
    void (*will_write)(void *arg);
    void *will_write_arg;
    struct stmt *stmts;
    size_t n;
    /* When set, every statement's params is a slice of this one array (decoded
     * commands); else each statement owns its own. */
    struct param *params;
    /* Memory the strings point into, released by batchFree() with owner_free. */
    void *owner;
    void (*owner_free)(void *owner);
};

/* Free what the batch owns: the statement and parameter arrays and the owner. */
void batchFree(struct batch *b);

/* Allocate n zeroed statements (and per-statement parameter arrays later with
 * batchParams). Returns 0 or CAIRN_ENOMEM. */
int batchAlloc(struct batch *b, size_t n);
int batchParams(struct stmt *s, size_t n);

#define COMMAND_MAGIC "CCMD"
#define COMMAND_VERSION 4
#define COMMAND_HEADER_V4_SIZE 56 /* version 4: with the growth bound */
#define COMMAND_HEADER_SIZE 48    /* version 3 */
#define COMMAND_HEADER_V2_SIZE 32 /* versions 1 and 2: no limits in the header */
/* Header flag (never set in a struct batch): the entry's writes are bounded in how far
 * they may grow the database (max_growth_mib), by the header's field at offset 48 in
 * version 4, by COMMAND_GROWTH_V3_MIB in version 3. The leader writes the default bound
 * so, in version 3, which builds before it read (ignoring the flag); only another
 * bound takes version 4. */
#define COMMAND_GROWTH 0x4000
#define COMMAND_GROWTH_V3_MIB 1024u
#define COMMAND_TRAILER_SIZE 8
/* Header flag (beside the batch's own flags, never set in a struct batch): the body is
 * one zstd frame. Bodies shorter than COMMAND_ZSTD_MIN bytes are never compressed. */
#define COMMAND_ZSTD 0x8000
#define COMMAND_ZSTD_MIN 16384
/* zstd's level 1: a 10,000-row bulk insert (1.1 MiB) compresses in 0.3-3.4 ms, 2-69x
 * depending on how much its values repeat; faster negative levels barely compress
 * values that differ row to row. */
#define COMMAND_ZSTD_LEVEL 1
/* Largest body a compressed command may announce: a request body is at most a few
 * hundred MiB (cairnd --max-body), and its encoding is smaller than its JSON. */
#define COMMAND_RAW_MAX (1024u << 20)

/* Encode b into out (appended). */
void commandEncode(const struct batch *b, struct buf *out);

/* The kind byte of the command in p[0..n) without checking anything else (its
 * checksum included), or 0 if it is too short or has the wrong magic. */
int commandKind(const void *p, size_t n);

/* Decode p[0..n) into b, pointing into p. On failure returns CAIRN_ECORRUPT with
 * errmsg saying what is wrong and at which offset; b is left empty. */
int commandDecode(const void *p, size_t n, struct batch *b, char *errmsg);

#endif
