/* Page checksums on the live database: a SQLite VFS shim that keeps an XXH3-64 of every
 * page in the page's last 8 bytes (its reserved bytes), the way SQLite's cksumvfs
 * extension does.
 *
 * A database has checksums when its header says 8 reserved bytes per page (byte 20);
 * cairn creates every new database so (pagesumPrepareNew), and `cairn repair
 * --add-checksums` converts an existing one. On such a database the shim, for the
 * database file and its WAL:
 *   - on every write of a whole page, computes the checksum of the page's first
 *     page_size - 8 bytes and stores it in the last 8;
 *   - on every read of a whole page, verifies it; a page that does not match is never
 *     handed to SQLite as data: the read fails with SQLITE_IOERR_DATA, and the page and
 *     file are kept for the message (pagesumLastFailure) and counted.
 * A database without reserved bytes passes through untouched.
 *
 * The shim also answers SQLite's clock with the deterministic time of the batch being
 * applied (store.c sets it per thread: pagesumSetNow), so one VFS serves every
 * connection cairn opens on its database. Any thread. */
#ifndef CAIRN_PAGESUM_H
#define CAIRN_PAGESUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAGESUM_VFS "cairn"
#define PAGESUM_RESERVE 8

/* Register the VFS (once; later calls do nothing). It is not the default: every
 * connection cairn opens on one of its own databases names PAGESUM_VFS (a checkpoint
 * by a connection that does not would write pages unsealed). */
void pagesumRegister(void);

/* The descriptor through which connection db, opened with PAGESUM_VFS, holds its main
 * database file, for reading that file beside SQLite (a snapshot's or a backup's copy
 * of a frozen state); -1 when it cannot be told. Valid while db is open; never closed
 * by the caller.
 *
 * A program with a SQLite connection on a file must never open(2) that file and
 * close(2) it again: closing any descriptor of a file drops every POSIX lock the
 * process holds on it, SQLite's included. With its connections' SHARED lock gone, the
 * next sqlite3 of another process that opens and closes the file believes itself the
 * last: it checkpoints the WAL into the file, its pages unsealed (they then fail their
 * checksums), and deletes the WAL and its index under the running node. */
struct sqlite3;
int pagesumFd(struct sqlite3 *db);

/* SQLite's "now" on this thread, Unix milliseconds; 0: the real clock. */
void pagesumSetNow(int64_t unix_ms);

/* Patch page 1's header bytes 18 and 19 (write and read versions) to v in page,
 * which holds the bytes of the file from offset 0 and is at least `size` bytes (the
 * page size), and seal it again when the file has checksums. */
void pagesumSetVersions(unsigned char *page, size_t size, unsigned char v);

/* The checksum a page of `size` bytes must carry in its last 8 bytes. */
uint64_t pagesumOf(const void *page, size_t size);

/* Does the page p of `size` bytes carry the right checksum? */
bool pagesumPageOk(const void *page, size_t size);

/* Store the checksum into page p's last 8 bytes. */
void pagesumSeal(void *page, size_t size);

/* The last checksum failure seen by this thread: 0 and "" when none since the last
 * call to pagesumClearFailure. page is 1-based; file is the path of the file read (the
 * database or its WAL). */
uint32_t pagesumLastFailure(char *file, size_t size);
void pagesumClearFailure(void);

/* Pages that failed their checksum since the process started (any thread). */
uint64_t pagesumFailures(void);

/* The database file at path (no connection may be writing it): does it have
 * checksums, and are they all right? Reads it page by page (bounded memory). Fills
 * *pages, *bad and the first bad page numbers into first_bad[0..nfirst) (0 for none);
 * *enabled false when the file has no reserved bytes for checksums (nothing checked).
 * Non-zero with errmsg when the file cannot be read or is not a database. */
int pagesumVerifyFile(const char *path, bool *enabled, uint64_t *pages, uint64_t *bad,
                      uint32_t *first_bad, size_t nfirst, char *errmsg);

/* The check every start runs before the database is opened (heal.c): cheap, so that a
 * file damaged while the node was stopped is found before it is served. The header
 * (magic, page size, the page count it states against the file's size) and, on a
 * database with checksums, page 1, the freelist trunk pages and the first and last
 * PAGESUM_START_PAGES pages (all pages of a database of up to twice that many).
 * 0 when it passes (or there is no file yet); CAIRN_ECORRUPT with errmsg naming the
 * file and the page otherwise; *checked gets the pages verified. */
#define PAGESUM_START_PAGES 8192
int pagesumStartCheck(const char *path, uint64_t *checked, char *errmsg);

#endif
