/* Helpers that know nothing of cairn's state: full pread/pwrite/write loops, clocks,
 * ISO-8601 times, fsync of a file's directory, and the durable ways to put a file in
 * place (an atomic whole-file write; a rename followed by the directory's fsync). Any
 * layer may use them; they include nothing of cairn but its error codes.
 *
 * Any thread; no state. */
#ifndef CAIRN_LIB_H
#define CAIRN_LIB_H

#include <stdbool.h>
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

/* Wall clock in Unix milliseconds; monotonic clock in milliseconds (and microseconds),
 * for durations and deadlines. */
int64_t libNowMs(void);
int64_t libMonoMs(void);
int64_t libMonoUs(void);

/* Styles of libIso8601, all UTC: */
enum lib_iso8601_style {
    LIB_ISO8601_MS,       /* 2026-11-22T10:15:00.123Z (catalogs, JSON) */
    LIB_ISO8601_SECONDS,  /* 2026-11-22T10:15:00Z */
    LIB_ISO8601_BASIC,    /* 20261122T101500Z (in file names) */
    LIB_ISO8601_BASIC_MS, /* 20261122T101500123Z (backup ids: milliseconds run on) */
};
/* Size of libIso8601's out, with the NUL. */
#define LIB_ISO8601_SIZE 32

/* Unix milliseconds ms (negative: before 1970, rounded down to the millisecond's
 * second) as an ISO-8601 UTC time in the given style. A time gmtime_r cannot break
 * down gives 1970-01-01T00:00:00 in that style. */
void libIso8601(int64_t ms, enum lib_iso8601_style style, char out[LIB_ISO8601_SIZE]);

/* Parse an ISO-8601 time into Unix milliseconds: 2026-12-02T10:02:00Z (a space for the
 * T, fractions of a second, or an offset +01:00 also do). 0, or -1 when s is none. */
int libParseIso8601(const char *s, int64_t *ms);

/* fsync the directory that holds path. errmsg (CAIRN_ERRMSG_SIZE) names path on
 * failure. */
int libSyncParentDir(const char *path, char *errmsg);

/* rename(from, to) (replacing to), then fsync to's directory: after a crash, to is
 * either the old file or the new. On a failed rename nothing moved (errmsg names both
 * paths); a failed directory fsync leaves the rename done, durable or not. */
int libRenameDurable(const char *from, const char *to, char *errmsg);

/* libWriteFileAtomic's flags. LIB_ATOMIC_UNIQUE: write through a unique hidden
 * temporary file `.<name>.XXXXXX` beside path (mkostemp), for files that several
 * processes may write at once; without it the temporary file is `<path>.tmp`, created
 * or truncated, for files that one process owns (a crash leaves at most that one
 * name, which the next write reuses). */
#define LIB_ATOMIC_UNIQUE 1u

/* Replace the file at path with the len bytes of data, atomically and durably: the
 * temporary file (mode 0644; see LIB_ATOMIC_UNIQUE) is written, fsynced, renamed over
 * path, and the directory fsynced. After a crash path holds the old bytes or the new,
 * whole. Returns 0 or a CAIRN_E* code (errorFromErrno; errmsg names the file and the
 * step); on failure the temporary file is removed and path is as it was, unless only
 * the directory's fsync failed. The caller keeps data. */
int libWriteFileAtomic(const char *path, const void *data, size_t len, unsigned flags,
                       char *errmsg);

/* Ids written as text (the cluster id, an archive's history id): n bytes as 2n
 * lowercase hex digits and a NUL (libHexEncode); exactly 2n hex digits, either case,
 * back to n bytes (libHexDecode: 0, or -1 when hex is anything else; out is then
 * undefined). */
void libHexEncode(const unsigned char *in, size_t n, char *out);
int libHexDecode(const char *hex, unsigned char *out, size_t n);

/* n random bytes (getrandom; the clock hashed if it fails), never all zero: ids whose
 * zeros mean "none". */
void libRandomId(unsigned char *out, size_t n);

/* Whether the n bytes at p are all zero. */
int libIsZero(const void *p, size_t n);

/* An id kept in a file of its own (DATA/cluster-id): exactly 2n hex digits and a
 * newline, not all zero (libRandomId never makes that). 0 with *kept true and out set;
 * 0 with *kept false when there is no such file; CAIRN_ECORRUPT when the file holds
 * anything else; or the code of the read's error. errmsg says which file and what. n is
 * at most 64. */
int libReadIdFile(const char *path, unsigned char *out, size_t n, bool *kept, char *errmsg);

#endif
