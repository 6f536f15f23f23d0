/* A bound on the memory one SQL statement takes while it runs, enforced by SQLite's
 * allocator (SQLITE_CONFIG_MALLOC).
 *
 * No other limit sees it: a single VM instruction builds a value of up to the value
 * size limit, and a row holds up to 2,000 of them (SELECT randomblob(60000000), ... took
 * 120 GB before any check ran); a write of it ran on every node and at every replay,
 * and failed there as "out of memory", a failure of the node's own, retried forever.
 *
 * While a thread steps a statement under a struct memlimit (memlimitEnter/Leave), every
 * allocation of at least MEMLIMIT_COUNTED bytes it makes is counted until freed; one
 * that would take the count past the limit fails (SQLITE_NOMEM) and marks the limit
 * tripped. What is counted depends on the statement and the data alone, the same on
 * every node: small allocations (a connection's schema, its statements' caches, a
 * statement journal's chunks) are not, nor are the page cache's (what a node's cache
 * holds is its own history), nor blocks allocated before the run began (memlimitStart)
 * or freed outside it. Any thread; a struct memlimit is its thread's while entered.
 *
 * The same run also bounds the statement's temporary files (what SQLite sorts, groups
 * or keeps DISTINCT beyond its cache, an index build's sort, an intermediate result):
 * the "cairn" VFS (pagesum.c) counts how far the statement's writes extend each such
 * file opened on a cairn connection, and refuses a write that would take the count past
 * temp_limit (SQLITE_FULL, temp_tripped set) before writing anything. Without it a read
 * over an endless recursive CTE wrote 190 MB a second into $TMPDIR until its time limit,
 * and a write until its step budget, enough to fill the disk, which stops the node.
 * SQLite writes those files at the same points on every node (where its cache and
 * sorter, sized alike on every node, spill), for the same statement on the same rows. */
#ifndef CAIRN_MEMLIMIT_H
#define CAIRN_MEMLIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* Allocations from this size up are counted: above the 64 KiB chunks of a statement
 * journal held in memory, which a transaction opens once for all its statements. */
#define MEMLIMIT_COUNTED (128u << 10)

struct memlimit {
    uint64_t run;   /* the current run's id (memlimitStart); 0: none */
    uint64_t limit; /* bytes; 0: no limit */
    uint32_t counted_from; /* allocations of this size up count (MEMLIMIT_COUNTED) */
    uint64_t used;  /* counted bytes allocated in this run and not yet freed */
    bool tripped;   /* an allocation was refused for the limit */
    /* Temporary files: bytes; 0: no limit. */
    uint64_t temp_limit;
    uint64_t temp_used; /* how far this run's writes extended its temp files */
    bool temp_tripped;  /* a temp file write was refused for the limit */
};

/* Install the allocator and page cache wrappers. Before SQLite is initialised (any
 * connection opened); later it does nothing, and no statement is bounded. Once. */
void memlimitInstall(void);

/* Did memlimitInstall take effect? */
bool memlimitActive(void);

/* Start a run of a statement under limit bytes of memory and temp_limit bytes of
 * temporary files (0: none): nothing counted yet. */
void memlimitStart(struct memlimit *m, uint64_t limit, uint64_t temp_limit);

/* Count every allocation of the run, however small (a statement's preparation, whose
 * parse tree is made of small blocks: a 47 MB IN list took 1.6 GB). Only where the
 * count need not be the same on every node: small blocks include the schema a
 * connection loads when it finds it changed, which is its own history. */
void memlimitCountAll(struct memlimit *m);

/* Count this thread's allocations against m until memlimitLeave. */
void memlimitEnter(struct memlimit *m);
void memlimitLeave(void);

/* Grow a temporary file by `grow` bytes for this thread's run (pagesum.c): 0 when
 * within the run's temp_limit (counted), or SQLITE_FULL and temp_tripped set when over
 * it. *run gets the run's id (0: none entered, nothing counted). */
int memlimitTempGrow(uint64_t grow, uint64_t *run);

/* Give back `bytes` of temporary files counted by run (a file shrunk or closed), when
 * run is this thread's current one. */
void memlimitTempShrink(uint64_t run, uint64_t bytes);

#endif
