/* The store: the SQLite database that is cairn's state machine.
 *
 * One writer connection, used only by the loop thread, applies committed batches:
 * each inside BEGIN IMMEDIATE .. COMMIT together with the Raft index it came from,
 * so a restart knows exactly which log entries are already in the database. Every
 * connection is opened on the "cairn" VFS shim (pagesum.h), which keeps a checksum
 * in every page and whose clock answers the batch's timestamp on the writer, and its
 * random()/randomblob() draw from a PRNG seeded by the batch: applying the same log
 * gives the same pages on every node and on every replay.
 *
 * Readers (HTTP and API threads) borrow connections from a pool; they are
 * query_only and see committed data through WAL.
 *
 * Snapshots and backups: the loop thread freezes the database file at a clean point
 * (storeFreeze); a worker copies that image with the backup engine while writes go on
 * into the WAL; storeThaw ends it. */
#ifndef CAIRN_STORE_H
#define CAIRN_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "command.h"
#include "result.h"

struct store;

/* Open (creating) the database at path; a database created now keeps a checksum in
 * every page when page_checksums (pagesum.h; an existing one keeps what it has). On
 * failure returns a code and errmsg says why; *out is NULL. Any thread, before the
 * loop starts. */
int storeOpen(const char *path, bool page_checksums, struct store **out, char *errmsg);

/* storeOpen with flags. STORE_OPEN_SCRATCH: the file is a scratch copy that nothing
 * else opens while the store is open and that is thrown away if the process dies
 * before the caller has finished it (a point-in-time restore's, pitr.h): the apply is
 * the same, but the writer holds the file in exclusive locking mode with a rollback
 * journal (path-journal, kept between transactions) and synchronous=OFF (no WAL, no
 * checkpointer thread, no fsync): committed pages go straight into the file, and a
 * crash may leave it torn. The caller fsyncs the file once the store is closed, and
 * removes path-journal (never hot then); storeReplace*, storeFreeze and readers are
 * not for such a store. */
#define STORE_OPEN_SCRATCH 1u
int storeOpenWith(const char *path, bool page_checksums, unsigned flags, struct store **out,
                  char *errmsg);

/* Close every connection. Loop thread stopped; no reader in use. */
void storeClose(struct store *s);

/* Index of the last log entry applied to the database (any thread). */
uint64_t storeAppliedIndex(struct store *s);

/* Grouped apply, for a follower (nobody waits on its results): with grouping on,
 * storeApply leaves the transaction open after each entry (each under a savepoint of
 * its own, so that a ?transaction failure undoes that entry alone) and storeFlush
 * commits them all; storeApply with grouping off commits an open group first.
 * STORE_EREGROUP: a statement (ON CONFLICT ROLLBACK, RAISE(ROLLBACK), some I/O
 * errors) or a failed commit rolled the whole group back: the database is where the
 * group began, and the caller applies the group's entries again (then the entry that
 * did it on its own, with grouping off). storeAppliedIndex moves at commit. Loop
 * thread. */
#define STORE_EREGROUP 1000
void storeSetGrouping(struct store *s, bool on);
bool storeGroupOpen(struct store *s);
int storeFlush(struct store *s, char *errmsg);

/* Early apply, on a leader (node.c): the thread that proposes an entry runs its batch
 * at once, while the loop thread writes and replicates the log entry, in a transaction
 * left open (a group of one entry). storeEarlyRun runs b as entry `index` only if the
 * database is at applied index `after` with nothing open and nobody on the writer
 * (else it does nothing): 1 when the run is open. storeEarlyCommit, when entry `index`
 * is applied (loop thread): if the open run is of that index and `key` (the entry's
 * length and checksum), commits it and returns its result; otherwise rolls it back
 * and returns NULL, and the entry is applied as usual. Everything else that uses the
 * writer (storeApply, storeFlush, replacing the file, closing) and storeEarlyDiscard
 * roll an open run back first: its entry is not committed in the log. The writer is
 * serialised between the threads by a mutex; the loop thread waits for a run in
 * progress. Any thread. */
#define STORE_EARLY_KEY 16
int storeEarlyRun(struct store *s, const struct batch *b, uint64_t after, uint64_t index,
                  const unsigned char key[STORE_EARLY_KEY]);
struct cairn_result *storeEarlyCommit(struct store *s, uint64_t index,
                                      const unsigned char key[STORE_EARLY_KEY]);
void storeEarlyDiscard(struct store *s);
/* While held, no early run starts: the fsm keeps entries that libraft counts as
 * applied and the database does not hold yet (a follower's grouped apply), so that a
 * leader's predicted index would not match the database's state. */
void storeEarlyHold(struct store *s, bool hold);

/* Apply a committed batch at Raft index `index`. Entries at or below the applied
 * index are skipped (*out = NULL, return 0). On success *out holds the per-statement
 * results (SQL errors included), owned by the caller. A non-zero return means the
 * database could not commit (I/O error, disk full): nothing of the entry was kept and
 * errmsg says why. Loop thread. */
int storeApply(struct store *s, const struct batch *b, uint64_t index,
               struct cairn_result **out, char *errmsg);

/* Run a read-only batch on a reader connection. *out owned by the caller. Any thread
 * but the loop's. */
int storeQuery(struct store *s, const struct batch *b, struct cairn_result **out,
               char *errmsg);

/* The backup repositories that `cairn_backups` lists on reader connections opened from
 * now on (the server's, which outlive the store). Before the first query. */
struct reposet;
void storeSetRepos(struct store *s, const struct reposet *repos);

/* Run a read-only batch on the SQLite file at path (a branch), opened read-only for
 * this call. *out owned by the caller. Any thread but the loop's. */
int storeQueryFile(struct store *s, const char *path, const struct batch *b,
                   struct cairn_result **out, char *errmsg);

/* Check b against the statement policy (policy.h) before anything of it runs or is
 * proposed: each statement's text can be split (no NUL byte, not empty) and every
 * statement that prepares here is allowed. CAIRN_EINVAL with errmsg naming the
 * statement and the reason, else 0. *read_only: every statement prepares and only
 * reads (a /db/request batch can be served locally). Statements that do not prepare
 * yet (a table an earlier statement creates) are checked again when they run. Any
 * thread but the loop's. */
int storeCheck(struct store *s, const struct batch *b, bool *read_only, char *errmsg);
/* storeCheck's *read_only, false when the check fails. */
bool storeIsReadOnly(struct store *s, const struct batch *b);

/* The node stops: statements running now, or from now on, on any connection are
 * interrupted within a few thousand VM steps (an apply so interrupted fails whole and
 * is not recorded). Any thread. */
void storeInterrupt(struct store *s);

/* The longest value (SQLITE_LIMIT_LENGTH) on reader connections opened from now on,
 * the time limit of reads that do not set their own (0: none), the most a read
 * batch's results may take and the most temporary file space one of its statements may
 * take (0: the defaults). Writes take theirs from each entry.
 * Before the first query. */
void storeSetLimits(struct store *s, uint32_t max_length, uint32_t query_timeout_ms,
                    uint64_t max_result, uint64_t max_temp);


/* Replace the database with the SQLite file at src (copied, not moved), then reopen.
 * Waits for readers in use to finish. Loop thread. */
int storeReplaceWith(struct store *s, const char *src, char *errmsg);

/* Same, but src is renamed into place (it must be on the same file system, e.g.
 * beside the database). Loop thread. */
int storeReplaceMove(struct store *s, const char *src, char *errmsg);

/* A frozen image of the database for the backup engine: after a complete checkpoint,
 * a read transaction holds SQLite's read mark 0, so no checkpoint can copy WAL frames
 * into the database file while it is held: the file's bytes stay those of `index`
 * while writes go on into the WAL. */
struct store_freeze {
    void *db;        /* the connection holding the read transaction */
    int fd;          /* the database file, read-only */
    uint64_t index;  /* applied index of the image */
    struct store *store;
};

/* Try once to freeze (loop thread, between applies: no write may come between the
 * checkpoint and the read transaction). CAIRN_EBUSY when a reader keeps the
 * checkpoint from completing: call storeCheckpoint() off the loop and try again. */
int storeFreeze(struct store *s, struct store_freeze *fz, char *errmsg);
/* Release a freeze. Any thread. */
void storeThaw(struct store_freeze *fz);

/* A PASSIVE checkpoint on a connection of its own, so that a following storeFreeze
 * has little left to copy on the loop thread. Any thread but the loop's. */
void storeCheckpoint(struct store *s);

/* XXH3-64 and size of a whole file, read in bounded chunks. Any thread. */
int fileDigest(const char *path, uint64_t *size, uint64_t *digest, char *errmsg);

/* Figures for /status (any thread). */
struct store_stats {
    uint64_t applied_index;
    int64_t db_size;  /* bytes of the database file */
    int64_t wal_size; /* bytes of the WAL file */
    unsigned readers; /* reader connections open */
    bool page_checksums; /* the database keeps a checksum in every page (pagesum.h) */
    uint64_t checksum_failures; /* pages refused since start: they failed their checksum */
    uint64_t early_applies;  /* entries committed from an early run */
    uint64_t early_discards; /* early runs rolled back: another entry came first (or the commit failed) */
};
void storeStats(struct store *s, struct store_stats *st);
const char *storePath(struct store *s);

/* Read one value of cairn's metadata table (the node directory keeps "node:ID:api");
 * CAIRN_ENOTFOUND when the key is absent. Any thread (a reader connection). */
int storeMetaGet(struct store *s, const char *key, char *out, size_t n, char *errmsg);

#endif
