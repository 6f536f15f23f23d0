/* A consistent read-only page reader of a live SQLite file.
 *
 * snapreadOpen() takes a snapshot of a SQLite database that other programs may be
 * writing (WAL or rollback-journal mode) without ever writing to it: no checkpoint, no
 * change to its WAL or its journal mode. It opens the file read-only through SQLite and
 * begins one read transaction, which it keeps until snapreadClose() (except in the last
 * case below):
 *
 *  - rollback-journal mode: the transaction's SHARED lock keeps writers from committing
 *    (they wait in their busy handlers), so the file does not change while it is read;
 *  - WAL mode: the transaction holds a WAL read lock. While it does, no writer can
 *    restart the WAL over the frames of its snapshot, and no checkpoint copies into the
 *    database file a page version newer than the snapshot. The snapshot is the frames
 *    1..mxFrame of the wal-index header that SQLite's connection locked to (a small VFS
 *    shim sees which read-lock slot it takes and copies the header at that moment):
 *    each page is read from its last frame among those when it has one, from the
 *    database file otherwise. The frames are checked at open as SQLite's recovery
 *    checks them (salts, the checksum chain from the WAL header, a commit frame at the
 *    end), and the chain must end on the header's own checksum;
 *  - WAL mode with no -shm file: no process has the database open (a WAL connection
 *    maps the -shm before it reads; only the last one to close removes it). SQLite's
 *    reader would create a -shm, and a -wal when there is none; instead the file's
 *    SHARED lock is taken directly, as SQLite's reader takes it, and the WAL, if any, is
 *    read as SQLite's recovery reads it (up to the last commit before the first frame
 *    that does not check). Nothing keeps a process that opens the database meanwhile
 *    from checkpointing into it, but the lock keeps it from removing the -shm and -wal
 *    it makes: snapreadCheck(), once every page is read, tells whether one came.
 *
 * Memory: a sorted (page, frame) map of the pages the WAL holds, 8 bytes a frame of the
 * snapshot at most, never anything per page of the database. Where SQLite uses the
 * -shm (WAL mode, a process has it open) it does so as any reader does: it maps it and
 * writes its read mark there.
 *
 * Caveat: the reader opens its own descriptors on the database and the WAL, and POSIX
 * locks belong to a process, not to a descriptor: closing any descriptor of a file drops
 * every lock its process holds on it, and the SHARED lock taken without SQLite is one
 * SQLite's own connections in the same process do not know of. So a process that also
 * has the database open with SQLite, on another connection, may lose that connection's
 * file locks at snapreadClose() (the cairn command does not; tests may).
 *
 * Threads: snapreadOpen() and snapreadClose() on one thread; snapreadPages() from any
 * number of threads at once (pread on descriptors, and a map that no longer changes). */
#ifndef CAIRN_SNAPREAD_H
#define CAIRN_SNAPREAD_H

#include <stdbool.h>
#include <stdint.h>

struct snapread;

struct snapread_info {
    uint32_t page_size;
    uint64_t page_count; /* pages of the snapshot (0 for an empty file) */
    bool wal;            /* the snapshot was taken in WAL mode */
    int read_slot;       /* WAL read lock held (0: the WAL is all checkpointed and the
                            database file alone is the snapshot); -1 outside WAL mode */
    uint32_t mx_frame;   /* last WAL frame of the snapshot; 0 when no frame is used */
    uint32_t read_mark;  /* the read mark of that slot (at most mx_frame: below it when
                            every slot was taken by other readers) */
    uint64_t wal_pages;  /* pages of the snapshot read from WAL frames */
    bool shm_free;       /* a WAL database no process had open (no -shm): taken under
                            the file's SHARED lock without SQLite; see snapreadCheck() */
};

/* Open the database at path and take its snapshot. On success *out (free it with
 * snapreadClose()) holds the file as a reader until then. An empty file is a snapshot
 * of no pages. Errors (errmsg says what, naming the file): CAIRN_ENOTFOUND when there
 * is no such file, CAIRN_EINVAL when it is not a regular file, CAIRN_ECORRUPT when it
 * is not a SQLite database or its WAL is damaged within the snapshot (a frame that
 * fails its checksum or is missing), CAIRN_ETIMEOUT when writers kept it locked for
 * 60 s, CAIRN_EBUSY when it was replaced while being opened, CAIRN_EIO for I/O errors
 * and for what SQLite cannot read read-only (a hot journal to roll back, a -shm it may
 * not write that no process keeps current). */
int snapreadOpen(const char *path, struct snapread **out, char *errmsg);

void snapreadGetInfo(const struct snapread *s, struct snapread_info *info);

/* The descriptor of the database file the pages are read through (owned by s). */
int snapreadFd(const struct snapread *s);

/* Read the pages first..first+count-1 (0-based, within the page count) of the snapshot
 * into buf (count * page size bytes). 0 on success; an errno value when a read fails;
 * -1 when a page is neither in the WAL nor in the database file (the file is shorter
 * than the snapshot's page count). Any thread. */
int snapreadPages(const struct snapread *s, uint64_t first, uint32_t count, void *buf);

/* Call once every page is read: 0 when the pages read are the snapshot's. Only a
 * shm_free snapshot can fail it: with CAIRN_EBUSY (errmsg says to run the backup
 * again) when a process opened the database in WAL mode while it was read, since
 * nothing kept that process's checkpoints out of the file meanwhile. */
int snapreadCheck(const struct snapread *s, char *errmsg);

/* For a database of cairn's own (a node's DATA/db.sqlite), whose page checksums cairn's
 * VFS writes into each page's reserved bytes when a checkpoint copies it into the file
 * (pagesum.h) but not into the WAL: from now on a page read from a WAL frame gets its
 * checksum (pagesumSeal), as that checkpoint would give it, so the pages read are those
 * of the file the snapshot would be once checkpointed, and a cairn database restored
 * from them passes its checks. Pages read from the file itself are left as they are.
 * Does nothing (false) unless page 1 says 8 reserved bytes (PAGESUM_RESERVE) and the
 * snapshot uses WAL frames; call it only for a file known to be cairn's (another
 * program's reserved bytes are not cairn's to write). Before any snapreadPages(). */
bool snapreadSealWal(struct snapread *s);

/* A read-only SQLite connection to the snapshot's image: every page it reads comes
 * through snapreadPages(), so a query sees exactly the state a backup of s stores (WAL
 * frames of the snapshot included). It opens no file and takes no lock, so it cannot
 * disturb the snapshot's (see the caveat above), and needs no journal or WAL: a query
 * that would spill to a temporary file fails rather than open one. *out is the
 * caller's, to close with sqlite3_close() before snapreadClose(s); on failure *out is
 * NULL and errmsg names the file. The caller's thread only. */
struct sqlite3;
int snapreadSql(const struct snapread *s, struct sqlite3 **out, char *errmsg);

/* End the read transaction, close everything, free s. NULL is a no-op. */
void snapreadClose(struct snapread *s);

#endif
