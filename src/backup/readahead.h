/* Read-ahead for ranged reads of a remote object: several fetches in flight while a
 * reader goes through the object in order, none while it jumps about.
 *
 * A reader (struct readahead) serves reads of bytes [0, size) of one object through a
 * fetch function its owner gives (the S3 driver's is a ranged GET pinned to the
 * object's ETag, repo_s3.c). Drivers whose objects are remote use it; the posix driver
 * has the page cache.
 *
 * - A read that starts where the previous one ended is sequential. While reads are
 *   sequential the reader keeps the bytes ahead of them being fetched, in chunks queued
 *   on a pool of fetch threads (struct readahead_pool), as much ahead as the run has
 *   been long (Linux's read-ahead is the model), up to ahead_max, each chunk chunk_min to
 *   chunk_max bytes, so that a scan of a whole object has several requests in flight.
 * - A read that is not sequential drops what was fetched ahead and fetches what it
 *   needs, at least `small` bytes into a small window of the reader's own (a .cbk
 *   file's header, footer and manifest head cost a request each, never a large
 *   prefetch); a read of `small` bytes or more goes straight into the caller's buffer.
 * - Memory: every chunk fetched ahead is counted, before its fetch starts and until the
 *   reader has read it, against a budget shared by every reader of every pool of the
 *   process (READAHEAD_BUDGET), as are the few spare buffers a pool keeps for its next
 *   chunks while it has readers. Each open reader may hold ahead a share of it, in
 *   proportion to the square root of the bytes it has left to read (the shares of all
 *   add up to the budget; a chain's full backup gets more than each of its
 *   incrementals), fetched in one chunk, or in chunks of half of it (at most chunk_max)
 *   when a share is chunk_max or more, and the pages of a chunk it has read are given
 *   back as it reads: a restore that holds a chain's readers open at once (16 at most)
 *   holds the budget, not a part of it for each file. A reader that finds the budget
 *   spent reads without read-ahead. Not counted: each reader's small window (`small`
 *   bytes) and what the fetch function uses while it runs (libcurl's buffers, a few per
 *   request in flight).
 * - Errors: a fetch's error stays with its chunk and is reported by the read that
 *   needs those bytes, with the fetch's message; bytes nobody reads are never waited
 *   for, and their errors never reported.
 *
 * Threads: a reader is used by one thread at a time. A pool's threads run the fetches
 * of all its readers; a reader that needs a chunk no thread has started fetches it on
 * its own thread, so reads go on even when no fetch thread could be started. The fetch
 * function is called from any of these threads, several at once. */
#ifndef CAIRN_READAHEAD_H
#define CAIRN_READAHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes fetched ahead, summed over every reader of the process (pools opened with
 * budget 0). 24 MiB until a restore merged a chain's files at once: with 11 to 16 readers
 * each holding its share, a restore from S3 held 24 MiB more than from a directory and
 * passed 64 MiB (docs/BENCHMARKS.md, "Backups to S3"). 8 MiB made twice the GETs of 24
 * for no difference in RSS one could measure beside the restore's own. */
#define READAHEAD_BUDGET ((size_t)12 << 20)

/* Bytes fetched ahead into spools (below), summed over every pool that spools with the
 * process's budget: disk (or the page cache), not memory. */
#define READAHEAD_SPOOL_BUDGET ((size_t)256 << 20)

struct readahead_config {
    unsigned threads; /* fetch threads of the pool, started at its first fetch ahead
                       * (0: 4) */
    size_t small;     /* the least a read that is not sequential fetches (0: 64 KiB) */
    size_t chunk_min; /* one fetch ahead, the first of a run (0: 512 KiB; down to `small`
                       * when a reader's share is less than two) ... */
    size_t chunk_max; /* ... growing with the run to (0: 4 MiB) */
    size_t ahead_max; /* bytes fetched ahead of one reader (0: 16 MiB) */
    size_t budget;    /* 0: the process's budget; else a budget of this pool's own, of
                       * this many bytes (tests) */
    /* The spool: when spool_dir names a directory where an unnamed file can be made
     * (O_TMPFILE) with room for twice the spool's budget, the chunks fetched ahead go
     * into that file rather than into memory (readers given a stream function:
     * readaheadStream), in larger chunks and further ahead, within a budget of bytes
     * on disk; the parts read are punched out of it (its pages leave the page cache
     * before they are ever written back). A server that spends its time per request
     * (s3rver) then serves a few large GETs where it served many small ones, and the
     * process's memory stays what it was. Without such a directory, or once a write
     * into the spool failed, the pool reads as without one (chunks in memory until a
     * failure; after one, only what readers ask for). NULL: no spool. */
    const char *spool_dir;
    size_t spool_chunk_max; /* 0: 32 MiB */
    size_t spool_ahead_max; /* 0: 128 MiB */
    size_t spool_budget;    /* 0: the process's spool budget; else the pool's own */
};

/* What a pool did, for tests and benchmarks. */
struct readahead_stats {
    uint64_t fetches;       /* fetches run, of every kind */
    uint64_t fetched_bytes; /* bytes they asked for */
    uint64_t ahead;         /* chunks fetched ahead (queued for the threads) */
    uint64_t stolen;        /* of those, fetched by the reader that needed them */
    unsigned max_busy;      /* most fetches running at once */
    size_t budget_peak;     /* most bytes held against the pool's budget at once (for
                             * the process's budget: by any pool) */
    bool spooling;          /* the pool has a spool, and no write into it failed */
    uint64_t spooled;       /* chunks fetched into the spool */
    uint64_t spool_failures; /* writes or reads of the spool that failed */
};

/* Fetch exactly n bytes of the object at offset off into buf: 0, or a CAIRN_E* code
 * with errmsg (CAIRN_ERRMSG_SIZE) saying what failed, naming the object. *cancel becomes
 * non-zero (read it with __atomic_load_n) when nobody wants the bytes any more: the
 * fetch may stop early, and what it returns is then ignored. */
typedef int (*readahead_fetch_fn)(void *obj, uint64_t off, void *buf, size_t n, const int *cancel,
                                  char *errmsg);

/* A fetch that hands the n bytes at off to sink, in order and in pieces (sink returns
 * 0 to go on, anything else to stop the fetch, which then fails), rather than into one
 * buffer: what the spool is filled with. Otherwise as readahead_fetch_fn. */
typedef int (*readahead_sink_fn)(void *arg, const void *data, size_t n);
typedef int (*readahead_stream_fn)(void *obj, uint64_t off, size_t n, readahead_sink_fn sink,
                                   void *sink_arg, const int *cancel, char *errmsg);

struct readahead_pool;
struct readahead;

/* A pool for readers of one kind (the S3 driver has one per open repository). cfg may
 * be NULL (every default). Starts no thread yet. Returns 0 and *out (the caller owns
 * it: readaheadPoolClose), or CAIRN_ENOMEM. */
int readaheadPoolOpen(const struct readahead_config *cfg, struct readahead_pool **out,
                      char *errmsg);

/* Close a pool (NULL is fine) once every reader of it is closed: waits for the fetches
 * still running for closed readers (the owner makes them end quickly first, e.g. with
 * its client's stop flag) and stops the threads. */
void readaheadPoolClose(struct readahead_pool *p);

void readaheadPoolStats(struct readahead_pool *p, struct readahead_stats *out);

/* A reader of an object of `size` bytes, fetched with fetch(obj, ...). On success the
 * reader owns obj: release(obj) (may be NULL) is called once neither the reader nor
 * any fetch of it uses obj any more, which may be after readaheadClose returns, on a
 * fetch thread. On failure (CAIRN_ENOMEM) the caller still owns obj. */
int readaheadOpen(struct readahead_pool *p, readahead_fetch_fn fetch, void *obj,
                  void (*release)(void *obj), uint64_t size, struct readahead **out, char *errmsg);

/* The reader's chunks ahead may go into the pool's spool, fetched with stream (on the
 * same object as its fetch). Call before its first read. */
void readaheadStream(struct readahead *r, readahead_stream_fn stream);

/* Give the reader bytes [off, off + n) of the object that its owner has read already
 * (copied): they serve reads as the small window does, until a read that is not in
 * order replaces them. n is at most the pool's `small`, else CAIRN_EINVAL. The S3
 * driver opens an object with one GET of its first bytes, which also says its size and
 * version, and seeds its reader with them. */
int readaheadSeed(struct readahead *r, uint64_t off, const void *data, size_t n, char *errmsg);

/* Read exactly n bytes at off into buf: 0, or the code and message of the fetch that
 * failed to bring them (CAIRN_EINVAL for a range past the end, CAIRN_ENOMEM). A failed
 * read may be tried again: it fetches the bytes afresh. */
int readaheadRead(struct readahead *r, uint64_t off, void *buf, size_t n, char *errmsg);

/* The next reads will go in order from off (a file about to be scanned): start fetching
 * the first bytes from off now, as a run in order would (two chunks of chunk_max), and
 * take the reads from off on as a run. */
void readaheadWillRead(struct readahead *r, uint64_t off);

/* Close a reader (NULL is fine): chunks not yet fetched are dropped, fetches under way
 * are told to stop and end on their own. */
void readaheadClose(struct readahead *r);

#endif
