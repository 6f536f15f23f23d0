/* Time zones for the cron schedules of --backup-config (cron.h, bconfig.h): IANA zones
 * read from their TZif files (RFC 8536) in /usr/share/zoneinfo (the `tzdata` package),
 * without the C library's process-wide TZ (setenv/tzset/localtime are not safe in a
 * threaded server, and a zone is per schedule here).
 *
 * A zone is loaded once, when the configuration is read, and is immutable after: the
 * offset at an instant and the instants of a wall-clock time are pure functions of it.
 * TZif versions 1 to 4 are read (the 64-bit block of version 2 and later; version 4
 * differs only in leap-second tables, and files with leap seconds, the `right/` zones,
 * are refused). After the last transition the POSIX TZ string of the footer governs,
 * with version 3's extensions (transition times from -167 to 167 hours).
 *
 * Times here are Unix seconds (no leap seconds); offsets are seconds east of UTC.
 * Loading reads a file (any thread); everything else is pure: any thread. */
#ifndef CAIRN_TZ_H
#define CAIRN_TZ_H

#include <stddef.h>
#include <stdint.h>

/* Where zone files are looked up. */
#define TZ_DIR "/usr/share/zoneinfo"
/* A zone file larger than this is refused (the largest of tzdata is under 4 KiB). */
#define TZ_FILE_MAX (1 << 20)
/* A zone name's longest (IANA's longest is 30 characters). */
#define TZ_NAME_MAX 255
/* The largest offset from UTC a zone may have, either way: RFC 8536 bounds a TZif
 * offset to -25 h .. +26 h. Local-time searches look this far either side. */
#define TZ_MAX_OFFSET (26 * 3600)

struct tz;

/* Load zone `name`: "UTC", "Etc/UTC" and "Z" are built in (no file needed); any other
 * name is an IANA name ("Europe/Paris") read from TZ_DIR/name. 0 and *out (malloc'd,
 * the caller's: tzFree), or CAIRN_EINVAL for a name that is not an IANA name (only
 * letters, digits, '/', '_', '-', '+', '.'; no leading '/', no empty, "." or ".."
 * component), CAIRN_ENOTFOUND for a zone that is not there (tzdata not installed, or
 * no such zone), CAIRN_ECORRUPT for a damaged file (or one over TZ_FILE_MAX), CAIRN_EIO
 * and the like for a file that cannot be read; errmsg names the zone, the file and what
 * is wrong. */
int tzLoad(const char *name, struct tz **out, char *errmsg);

/* Load the TZif file at path as zone `name` (tests and tools: no name check). Returns
 * and messages as tzLoad. */
int tzLoadPath(const char *path, const char *name, struct tz **out, char *errmsg);

/* Parse a TZif file held in memory (len bytes at data); `origin` names it in messages
 * ("time zone file /usr/share/zoneinfo/Europe/Paris"). 0 and *out (the caller's:
 * tzFree), or CAIRN_ECORRUPT (CAIRN_ENOMEM) with errmsg naming origin and saying what
 * is wrong and where. data stays the caller's. */
int tzParse(const uint8_t *data, size_t len, const char *origin, const char *name, struct tz **out,
            char *errmsg);

/* A zone given by a POSIX TZ string alone ("CET-1CEST,M3.5.0,M10.5.0/3",
 * "<+03>-3"), with version 3's extensions: 0 and *out (the caller's: tzFree), or
 * CAIRN_EINVAL with errmsg saying what is wrong where. */
int tzFromPosix(const char *tzstring, struct tz **out, char *errmsg);

void tzFree(struct tz *z);

/* The zone's name as loaded ("Europe/Paris", "UTC"); owned by z. */
const char *tzName(const struct tz *z);

/* The offset from UTC (seconds east) in effect at Unix time t. */
int32_t tzOffset(const struct tz *z, int64_t t);

/* The first instant after t at which the offset changes; INT64_MAX when it never does
 * again. */
int64_t tzNextChange(const struct tz *z, int64_t t);

/* The instants at which wall-clock time `local` (seconds since 1970-01-01 00:00 read as
 * local time) occurs: returns 1 (*first), 2 at a fall-back (*first < *second), or 0 when
 * the time is skipped by a spring-forward: then *first is the instant the gap ends (the
 * transition, the first instant after the skipped time). */
int tzLocalToUtc(const struct tz *z, int64_t local, int64_t *first, int64_t *second);

#endif
