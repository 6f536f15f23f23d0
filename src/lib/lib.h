/* Helpers that know nothing of cairn's state: full pread/pwrite/write loops, clocks,
 * and fsync of a file's directory. Any layer may use them; they include nothing of
 * cairn but its error codes.
 *
 * The layout of CONVENTIONS.md puts these in a src/lib/ folder; that needs CMake
 * changes, so for now they live in this flat src/lib/lib.c, to be moved with the rest.
 *
 * Any thread; no state. */
#ifndef CAIRN_LIB_H
#define CAIRN_LIB_H

#include <stddef.h>
#include <stdint.h>

/* Read exactly n bytes at off, retrying on EINTR and short reads. Returns 0, an errno
 * value, or -1 when the file ends before n bytes. */
int libPreadFull(int fd, void *buf, size_t n, uint64_t off);

/* Write exactly n bytes at off (libPwriteFull) or at the file offset (libWriteFull),
 * retrying on EINTR and short writes. Returns 0 or an errno value (EIO when the
 * system wrote nothing without saying why). */
int libPwriteFull(int fd, const void *buf, size_t n, uint64_t off);
int libWriteFull(int fd, const void *buf, size_t n);

/* Wall clock in Unix milliseconds; monotonic clock in milliseconds, for durations and
 * deadlines. */
int64_t libNowMs(void);
int64_t libMonoMs(void);

/* fsync the directory that holds path. errmsg (CAIRN_ERRMSG_SIZE) names path on
 * failure. */
int libSyncParentDir(const char *path, char *errmsg);

#endif
