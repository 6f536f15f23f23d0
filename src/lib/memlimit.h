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
 * or freed outside it. Any thread; a struct memlimit is its thread's while entered. */
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
    uint64_t used;  /* counted bytes allocated in this run and not yet freed */
    bool tripped;   /* an allocation was refused for the limit */
};

/* Install the allocator and page cache wrappers. Before SQLite is initialised (any
 * connection opened); later it does nothing, and no statement is bounded. Once. */
void memlimitInstall(void);

/* Did memlimitInstall take effect? */
bool memlimitActive(void);

/* Start a run of a statement under limit bytes (0: none): nothing counted yet. */
void memlimitStart(struct memlimit *m, uint64_t limit);

/* Count this thread's allocations against m until memlimitLeave. */
void memlimitEnter(struct memlimit *m);
void memlimitLeave(void);

#endif
