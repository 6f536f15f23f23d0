/* Internals of the backup engine shared by backup.c, repo.c and restore.c: opening a
 * `.cbk` file for reading, filling a catalog entry, the verified sidecar, and small
 * helpers (time, hex, paths). The engine's API is backup.h; nothing else includes
 * this file. Any thread. */
#ifndef CAIRN_REPO_H
#define CAIRN_REPO_H

#include <limits.h>
#include <stdint.h>

#include "backup.h"
#include "cbk.h"

/* A `.cbk` file open for reading. Not movable once opened (the reader points into
 * it). */
struct repo_file {
    int fd;
    char path[PATH_MAX];
    struct cbk_io io;
    struct cbk_reader r;
};

/* Open path and check its header, footer and trailer (cbkOpen). Returns 0, or
 * CAIRN_ENOTFOUND when there is no such file, CAIRN_ECORRUPT, or an I/O code; errmsg
 * names the file. On failure nothing is left to close. */
int repoOpenFile(const char *path, struct repo_file *f, char *errmsg);
void repoCloseFile(struct repo_file *f);

/* Fill *out from an open file (verified state included, from the sidecar). */
void repoInfoFromFile(const struct repo_file *f, struct backup_info *out);

/* Record the outcome of a verification of the backup `info` (BACKUP_VERIFIED or
 * BACKUP_VERIFY_FAILED) in `<dir of info->path>/<id>.verified`: tmp + fsync + rename
 * + directory fsync. The sidecar names the file's digest, so that it never vouches
 * for another file that later takes the same name. */
int repoWriteVerified(const struct backup_info *info, int state, int64_t when_ms, char *errmsg);

/* Create dir and its missing parents. */
int repoMkdirs(const char *dir, char *errmsg);

/* Wall clock in Unix milliseconds. */
int64_t repoNowMs(void);
/* Monotonic clock in milliseconds, for durations and deadlines. */
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
