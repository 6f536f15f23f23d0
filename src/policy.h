/* The statement policy and bounded execution: what user SQL may do, and for how long.
 *
 * Every connection that runs user SQL (the writer, readers, a branch's connection) is
 * set up with policyInstall: one SQLite authorizer and one progress handler, each
 * reading the connection's struct policy_conn.
 *
 * The authorizer refuses everything whose effect the database file does not carry,
 * because such an effect is lost when a node restarts or installs a snapshot, and the
 * replicas then differ: temp objects, connection-state and process-wide PRAGMAs,
 * ATTACH/DETACH, transaction control (each request is already a transaction), any
 * write to cairn's own tables (names starting with "_cairn"), and functions with
 * effects outside the database. PRAGMAs that only read are allowed, and the two that
 * write the database header (user_version, application_id). The table is in
 * README.md, "Statement policy".
 *
 * The progress handler bounds execution. A replicated write runs under a budget of
 * virtual-machine steps, counted by SQLite at the same points on every node for the
 * same SQL on the same pages, so that an over-long write fails the same way on every
 * node and on every replay; the budget travels in the log entry (command.h), so that
 * nodes started with different flags still agree. A read runs under a time limit and
 * stops when its client goes away. A stop flag (the node is shutting down) interrupts
 * both; an apply interrupted that way is rolled back whole, never recorded.
 *
 * A struct policy_conn belongs to its connection and is used by the thread using that
 * connection. */
#ifndef CAIRN_POLICY_H
#define CAIRN_POLICY_H

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memlimit.h"

/* The progress handler runs every this many virtual-machine steps. */
#define POLICY_STEP_GRAIN 1000
/* Defaults (cairnd --write-step-limit, --max-value-size, --query-timeout). Log entries
 * written before limits were carried in the entry are applied with the first two. */
#define POLICY_DEFAULT_WRITE_STEPS 100000000ull
#define POLICY_DEFAULT_MAX_LENGTH (64u << 20)
#define POLICY_DEFAULT_QUERY_TIMEOUT_MS 30000u
/* The most a read's results may take in memory (cairnd --max-result-size). */
#define POLICY_DEFAULT_MAX_RESULT (256ull << 20)
/* The most the results of one write entry (a SELECT or RETURNING among its statements)
 * may take, on every node alike: every node collects them, and a node's own flag would
 * make the outcome, and so the rows kept, differ. */
#define POLICY_WRITE_MAX_RESULT (256ull << 20)
/* The most memory one statement may take while it runs (memlimit.h): a multiple of
 * the connection's value size limit (1 GiB with the default 64 MiB), and never less
 * than the floor. A write's comes from the value size limit its log entry carries, the
 * same on every node. */
#define POLICY_MEMORY_PER_VALUE 16
#define POLICY_MEMORY_FLOOR (256ull << 20)
/* The most temporary file space one statement may take (memlimit.h; cairnd
 * --max-temp-size), where SQLite sorts, groups and keeps what does not fit its cache. A
 * write's travels in its log entry (command.h), in MiB, the same on every node. */
#define POLICY_DEFAULT_MAX_TEMP (1ull << 30)
#define POLICY_MAX_TEMP_CAP (1ull << 50)
/* The most one write entry may grow the database (cairnd --max-write-growth): pages
 * appended past the page count it began with, which is the same on every node (their
 * files are identical), so a write past it fails the same way everywhere instead of
 * filling every node's disk. Carried in the entry (command.h), in MiB. */
#define POLICY_DEFAULT_MAX_GROWTH (1ull << 30)
#define POLICY_MAX_GROWTH_CAP (1ull << 50)
/* Bounds of the flags: a value limit above SQLite's own largest (2^31 - 1) means
 * nothing. */
#define POLICY_MAX_LENGTH_CAP 2147483647u

/* What stopped a statement (policy_conn.trip). */
enum policy_trip {
    POLICY_TRIP_NONE = 0,
    POLICY_TRIP_STEPS,       /* the write step budget */
    POLICY_TRIP_DEADLINE,    /* the read time limit */
    POLICY_TRIP_CLIENT_GONE, /* the reader's client closed its connection */
    POLICY_TRIP_STOPPING,    /* the node is shutting down */
    POLICY_TRIP_MEMORY,      /* the statement's memory limit (this statement only) */
    POLICY_TRIP_TEMP,        /* its temporary file space limit (this statement only) */
    POLICY_TRIP_GROWTH       /* its entry's database growth bound (this statement only) */
};

struct membudget;

struct policy_conn {
    bool internal; /* cairn's own statements run: the authorizer lets everything through */
    char why[400]; /* why the authorizer last refused */
    /* Where the authorizer is called from. stepping: a statement of the caller's runs
     * (policyStep), and what is prepared meanwhile is a virtual table module's own SQL
     * (FTS5's, an R-tree's) or the running statement prepared again for a changed
     * schema. preparing: the caller prepares a statement (policyPrepareBegin), and
     * user_pragmas is how many PRAGMA authorizations may still be the statement's own
     * (1 when its text may be a PRAGMA, else 0): any after them come from a module
     * preparing its own SQL while it is connected. */
    bool stepping;
    bool preparing;
    int user_pragmas;
    /* Bounded execution, set per statement (writes) or per batch (reads). */
    uint64_t steps;      /* write step budget of the statement; 0: none */
    uint64_t ticks;      /* progress callbacks so far in this statement */
    double deadline;     /* CLOCK_MONOTONIC seconds; 0: none */
    uint32_t timeout_ms; /* the limit the deadline came from, for the message */
    int client_fd;       /* the reader's client socket, watched; -1: none */
    double next_watch;   /* when to look at the client socket next */
    const atomic_bool *stop; /* set when the node shuts down; NULL: none */
    /* The connection applies replicated writes (the writer): it may not read what
     * differs from node to node (policy.c, localPragmas), which its writes would store.
     * Set by policyReplicated. */
    bool replicated;
    /* On any other connection, such a read is allowed and named here ("" for none)
     * while a statement is prepared, for the caller to refuse in a write (storeCheck);
     * the caller resets it. */
    char local[48];
    /* The statement (as prepared, or prepared again while it ran) runs ANALYZE or
     * changes the sqlite_stat tables: the statistics the connection has loaded may no
     * longer be the file's. Reset by policyWriteBegin. */
    bool stats;
    /* A statement (as prepared) since policyWriteBegin writes sqlite_sequence itself:
     * the caller looks whether it left a sequence at the largest rowid. */
    bool sequence;
    enum policy_trip trip;
    /* A read batch's results: the most they may take (0: no limit) and what the batch's
     * earlier statements took. */
    uint64_t result_limit;
    uint64_t result_before;
    /* A read's results also take their memory from the node-wide budget as they grow
     * (membudget.h; NULL: none), into *budget_taken, which the batch's caller gives
     * back once the answer is sent (struct batch). Reset by policyReadBegin. */
    struct membudget *budget;
    uint64_t *budget_taken;
    /* The memory and temporary files the statement running now takes (policyStepBegin,
     * policyStep), and the most temporary file space a statement may take (bytes, 0:
     * none; policyInstall sets POLICY_DEFAULT_MAX_TEMP, the caller its own). */
    struct memlimit mem;
    uint64_t temp_limit;
    /* The writer: how far the running entry may grow the database (bytes; 0: no bound)
     * and how far it has (growth_used): the bytes of the values of the rows it inserted,
     * less those of the rows it deleted, an update counting new less old (the preupdate
     * hook policyReplicated installs). Values, not pages: every node holds the same
     * values, laid out in pages its own way (page checksums or not, a file rewritten by
     * a repair). The hook interrupts a statement at the row that takes used past the
     * limit (POLICY_TRIP_GROWTH); the store checks it again when a statement ends, and
     * puts back what a statement rolled back had counted. */
    uint64_t growth_limit;
    int64_t growth_used;
};

/* Install the authorizer and progress handler of pc on db, and the limits every
 * connection gets (no attached databases; value length max_length). pc must outlive
 * db's use. Any thread, before db is used. */
void policyInstall(sqlite3 *db, struct policy_conn *pc, uint32_t max_length,
                   const atomic_bool *stop);

/* db (set up with policyInstall under pc) applies replicated writes: it may not read
 * what differs from node to node (pc->replicated), a table USING dbstat under any name
 * included. Before db is used. */
void policyReplicated(sqlite3 *db, struct policy_conn *pc);

/* Start a write statement under a budget of `steps` VM steps (0: none), its results
 * limited to POLICY_WRITE_MAX_RESULT with those of its entry's earlier statements
 * (pc->result_before, which the caller keeps). */
void policyWriteBegin(struct policy_conn *pc, uint64_t steps);
/* Start a read batch: time limit timeout_ms (0: none), client socket fd (-1: none),
 * results of at most result_limit bytes (0: no limit). */
void policyReadBegin(struct policy_conn *pc, uint32_t timeout_ms, int client_fd,
                     uint64_t result_limit);
/* The caller prepares the statement at the start of sql[0..n) under pc (then calls
 * policyPrepareEnd): pc's refusal and node-local read are reset, and the PRAGMA
 * authorizations that are the statement's own are told from a module's. */
void policyPrepareBegin(struct policy_conn *pc, const char *sql, size_t n);
void policyPrepareEnd(struct policy_conn *pc);

/* Start a run of a statement prepared on db (each run, also of a cached statement):
 * its memory counts from nothing, under POLICY_MEMORY_PER_VALUE times db's value size
 * limit, at least POLICY_MEMORY_FLOOR, and its temporary files under pc->temp_limit
 * (neither for cairn's own statements); a memory or temp trip of an earlier statement
 * is forgotten; the VM steps of every statement of db (those a virtual table module
 * keeps and runs inside it too) count from zero. */
void policyStepBegin(struct policy_conn *pc, sqlite3 *db);
/* sqlite3_prepare_v3(db, sql, n, SQLITE_PREPARE_PERSISTENT, ps, tail), with every
 * allocation counted against the statement's memory limit (policyStepBegin's) on a
 * connection that does not apply replicated writes (there the count would differ from
 * node to node); sets pc->trip to POLICY_TRIP_MEMORY when it stopped the preparation
 * (SQLITE_NOMEM). A request that writes is prepared so on the node that takes it
 * (storeCheck) before it is proposed. */
int policyPrepare(struct policy_conn *pc, sqlite3 *db, const char *sql, int n,
                  sqlite3_stmt **ps, const char **tail);

/* sqlite3_step(ps) with its memory counted; sets pc->trip to POLICY_TRIP_MEMORY when
 * an allocation was refused for the limit (the step then fails with SQLITE_NOMEM), to
 * POLICY_TRIP_TEMP when a temporary file write was (SQLITE_FULL). */
int policyStep(struct policy_conn *pc, sqlite3_stmt *ps);

/* Did the statement's own limit, memory, temporary space or its entry's growth bound,
 * stop it (not the batch's time or step limits, nor anything of the node's)? */
bool policyStatementTrip(const struct policy_conn *pc);

/* No limit from now on (cairn's own statements). */
void policyEnd(struct policy_conn *pc);

/* The statement text sql[0..n) as a request gives it: 0 when it can be run, else -1
 * with what is wrong in msg (a NUL byte and where; nothing but blanks and comments). */
int policyCheckText(const char *sql, size_t n, char *msg, size_t msgsize);

/* A statement prepared under pc: false (msg says why) when the policy refuses it on
 * grounds the authorizer cannot see (a trigger whose body names cairn's tables). */
bool policyCheckPrepared(struct policy_conn *pc, sqlite3_stmt *ps, char *msg, size_t msgsize);

/* The message for a statement that failed with rc: the policy's own words when it
 * refused or stopped the statement, else NULL (use SQLite's message). */
const char *policyMessage(struct policy_conn *pc, int rc, char *buf, size_t size);

/* A duration as rqlite and cairnd take it ("30s", "500ms", "2m", "1h", "1.5s"; a bare
 * number is seconds) into *ms: 0, or -1 when it is not one, is not positive or is over
 * 24 hours. */
int policyParseDuration(const char *text, uint32_t *ms);

#endif
