/* Internals of the backup engine shared by backup.c, repo.c and restore.c: the
 * repository object's operations (objects listed, read by ranges, written and
 * committed, removed; small objects got and put), opening a `.cbk` object for
 * reading, filling a catalog entry, the verified sidecar, and small helpers (time,
 * hex, paths). The engine's API is backup.h (repoOpen, repoClose, the catalog);
 * drivers implement repo_driver.h. Besides the engine, the server's code that moves
 * backup files between nodes and repositories includes it (cluster.c, heal.c, admin.c,
 * http_cluster.c): the object operations are what it streams and copies with.
 * Any thread. */
#ifndef CAIRN_REPO_H
#define CAIRN_REPO_H

#include <limits.h>
#include <stdint.h>

#include "backup.h"
#include "cbk.h"

/* ---- the repository object (repo.c dispatches to the driver) ---- */

/* Called by repoListNames for each object: its name, its size in bytes and its
 * version, a string that changes whenever the object is replaced (S3: the ETag and
 * Last-Modified time; posix: the inode and the change and modification times), or
 * NULL when the driver cannot tell; strings valid during the call only. Non-zero
 * stops the listing with that code. */
typedef int (*repo_list_fn)(void *arg, const char *name, uint64_t size, const char *version);

/* An object open for ranged reads. The caller allocates it; the driver fills it. */
struct repo_reader {
    struct cbk_io io; /* io.read(io.arg, off, buf, n): 0 or an errno value */
    uint64_t size;
    const struct repo_driver *drv; /* set by repoOpenRead */
    int fd;                        /* the posix driver's */
    void *impl;                    /* other drivers' */
};

/* An object being written. Allocated by the driver's create (a driver's writer starts
 * with this struct), freed by repoCommit or repoAbort. */
struct repo_writer {
    const struct repo_driver *drv;
};

/* Every object whose name starts with prefix; see repo_driver.h. */
int repoListNames(struct repo *r, const char *prefix, repo_list_fn fn, void *arg, char *errmsg);

/* Open object `name` for reading; CAIRN_ENOTFOUND when there is none. On failure
 * nothing is left to close. */
int repoOpenRead(struct repo *r, const char *name, struct repo_reader *rd, char *errmsg);
void repoCloseRead(struct repo_reader *rd);

/* Create object `name` for sequential writing; nothing shows under `name` until
 * repoCommit, which makes it visible atomically and never replaces an existing object
 * (CAIRN_EEXIST). repoCommit and repoAbort free *w whatever happens; a failed
 * commit, or an abort, leaves nothing. The posix driver writes `.<name>.tmp`, fsyncs,
 * renames without replacing and fsyncs the directory. */
int repoCreate(struct repo *r, const char *name, struct repo_writer **w, char *errmsg);
int repoWrite(struct repo_writer *w, const void *p, size_t n, char *errmsg);
int repoCommit(struct repo_writer *w, char *errmsg);
void repoAbort(struct repo_writer *w);

/* Copy object `from_name` of one repository into another as object `name` (a whole
 * .cbk, say), 1 MiB at a time, through the drivers (any pair): never replacing
 * (CAIRN_EEXIST), nothing left in `to` on failure. from_name may be a name no writer
 * of `to` would take (a hidden download), and read as it is. */
int repoCopyObject(struct repo *from, const char *from_name, struct repo *to, const char *name,
                   char *errmsg);

/* Remove object `name`: CAIRN_ENOTFOUND when there is none. */
int repoRemove(struct repo *r, const char *name, char *errmsg);

/* Small objects: read at most cap bytes of `name` (*len the bytes read;
 * CAIRN_ENOTFOUND when there is none); replace `name` atomically and durably. */
int repoGet(struct repo *r, const char *name, void *buf, size_t cap, size_t *len, char *errmsg);
int repoPut(struct repo *r, const char *name, const void *buf, size_t len, char *errmsg);

/* Where object `name` is, into out (PATH_MAX bytes): its path (posix), or its URL. */
void repoWhere(struct repo *r, const char *name, char *out);

/* The object name of a catalog entry's path or URL: what follows its last '/'. */
const char *repoNameOf(const char *path);

/* ---- `.cbk` objects ---- */

/* A `.cbk` object open for reading. Not movable once opened (the reader points into
 * it). */
struct repo_file {
    struct repo *repo; /* borrowed, or owned when own_repo */
    bool own_repo;
    char path[PATH_MAX]; /* repoWhere of the object */
    struct repo_reader rd;
    struct cbk_reader r;
};

/* Open object `name` of repo and check its header, footer and trailer (cbkOpen).
 * Returns 0, or CAIRN_ENOTFOUND when there is no such object, CAIRN_ECORRUPT, or an
 * I/O code; errmsg names the file. On failure nothing is left to close. repo is
 * borrowed until repoCloseFile. */
int repoOpenFileIn(struct repo *repo, const char *name, struct repo_file *f, char *errmsg);
/* The same for a path (or URL): the repository is the one that holds it. */
int repoOpenFile(const char *path, struct repo_file *f, char *errmsg);
void repoCloseFile(struct repo_file *f);

/* Fill *out from an open file (verified state included, from the sidecar). */
void repoInfoFromFile(const struct repo_file *f, struct backup_info *out);

/* Record the outcome of a verification of the backup `info` (BACKUP_VERIFIED or
 * BACKUP_VERIFY_FAILED) in the sidecar object `<id>.verified` of repo (repoPut; posix:
 * tmp + fsync + rename + directory fsync). The sidecar names the file's digest, so
 * that it never vouches for another file that later takes the same name. The
 * repoWriteVerified form opens the repository that holds info->path. */
int repoWriteVerifiedIn(struct repo *repo, const struct backup_info *info, int state,
                        int64_t when_ms, char *errmsg);
int repoWriteVerified(const struct backup_info *info, int state, int64_t when_ms, char *errmsg);

/* Create dir and its missing parents. */
int repoMkdirs(const char *dir, char *errmsg);

/* Wall clock in Unix milliseconds. */
int64_t repoNowMs(void);
/* Monotonic clock in milliseconds, for durations and deadlines (libMonoMs). */
int64_t repoMonoMs(void);
/* "2026-11-22T10:15:00.123Z" (at most 31 characters). */
void repoIso8601(int64_t ms, char out[32]);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void repoHex(const unsigned char *p, size_t n, char *out);

/* The directory that holds path, into out (PATH_MAX bytes). */
void repoDirOf(const char *path, char *out);

/* Rename tmp to path unless path exists (CAIRN_EEXIST then, tmp left in place). */
int repoRenameNoReplace(const char *tmp, const char *path, char *errmsg);

#endif
