/* A consistent read-only page reader of a live SQLite file (see snapread.h).
 *
 * How the snapshot is found. SQLite's connection, opened read-only through the VFS
 * shim below, begins a read transaction. In WAL mode its last step is a shared lock on
 * one of the five read-lock slots of the wal-index (-shm), after which it checks that
 * the wal-index header did not change since it read it: the transaction reads the WAL
 * frames 1..mxFrame of that header (slot 1..4), or the database file alone (slot 0,
 * taken only when every frame is already checkpointed). The shim copies the header at
 * the moment the shared lock is granted; when SQLite's check then passes, the copy is
 * SQLite's header (the header only moves forward, and no restart or recovery can run
 * past the lock we hold), and when it fails SQLite unlocks and tries again, and so does
 * the copy. While the lock is held:
 *  - no writer restarts the WAL (that needs every slot 1..4 exclusively), so the frames
 *    1..mxFrame stay as they are in the file;
 *  - a checkpoint copies into the database file only frames up to the smallest read
 *    mark of a locked slot, and our slot's mark is at most our mxFrame: a page that
 *    has no frame among 1..mxFrame is not written, and one that has is read from the
 *    WAL. (Slot 0 keeps checkpoints from copying anything.)
 * This is also why the snapshot is the header's mxFrame and not the slot's read mark:
 * when every slot is taken by other readers (or the -shm is read-only to us), SQLite
 * shares a slot whose mark is below its mxFrame. We never use SQLite to read pages: we
 * read the WAL frames and the database file with our own descriptors, any number of
 * threads at once. A WAL database that no process has open (no -shm) is read without
 * SQLite at all: see openShmFree().
 *
 * What the shim changes in SQLite's behaviour: files are opened read-only (a read-only
 * connection would otherwise open the WAL read-write), and xWrite, xTruncate and
 * xDelete refuse, so that nothing on this path can change the source even by mistake.
 * The -shm is SQLite's: it maps it and writes its read marks there as every reader does.
 *
 * Threads: see snapread.h. The shim is registered once (pthread_once) and keeps no
 * state outside the files SQLite opens through it. */
/* A full memory barrier before reading the -shm that other processes write, as SQLite's
 * own sqlite3MemoryBarrier. ThreadSanitizer does not take fences (gcc refuses them with
 * -fsanitize=thread): there a sequentially consistent read-modify-write stands in,
 * which is a full barrier too (and cross-process memory is outside what TSan sees). */
#if defined(__SANITIZE_THREAD__)
static int shmBarrierWord;
#define SHM_BARRIER() ((void)__atomic_fetch_add(&shmBarrierWord, 0, __ATOMIC_SEQ_CST))
#else
#define SHM_BARRIER() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

#define _GNU_SOURCE
#include "snapread.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "lib.h"
#include "pagesum.h"

#define SHIM_VFS_NAME "cairn-snapread"

/* SQLite's WAL format (wal.c): a 32-byte header, then frames of a 24-byte header and a
 * page. Integers big-endian. */
#define WAL_HEADER_SIZE 32
#define WAL_FRAME_HEADER_SIZE 24
#define WAL_MAGIC 0x377f0682u /* | 1: checksums over big-endian words */
#define WAL_FORMAT_VERSION 3007000u

/* The wal-index (-shm), in native byte order: two copies of a 48-byte header, then
 * the checkpoint information: nBackfill, aReadMark[5], ... Lock offsets 3..7 of
 * xShmLock are the read-lock slots 0..4. */
#define WALINDEX_HEADER_SIZE 48
#define WALINDEX_VERSION 3007000u
#define WALINDEX_READMARK_OFFSET (2 * WALINDEX_HEADER_SIZE + 4)
#define SHM_FIRST_READ_LOCK 3
#define SHM_READERS 5
#define READMARK_NOT_USED 0xffffffffu

/* Rollback-journal writers hold the file between their commits; this is how long we
 * wait for them (SQLite's busy handler) before giving up. */
#define LOCK_WAIT_MS 60000
/* Attempts at a read transaction whose wal-index header the shim could not copy whole
 * (a writer was writing it at that instant): each retry is a fresh BEGIN. */
#define BEGIN_ATTEMPTS 100

/* The page at byte offset 1 GiB holds SQLite's lock bytes and is never written: past
 * the end of a file that grew in the WAL it reads as zeros, as SQLite reads it. */
#define LOCK_BYTE_OFFSET 0x40000000ull

/* SQLite's file locks (os_unix.c): byte ranges of the database file. */
#define PENDING_BYTE 0x40000000
#define SHARED_FIRST (PENDING_BYTE + 2)
#define SHARED_SIZE 510

/* ---- the VFS shim ---- */

struct shim_file {
    sqlite3_file base;
    sqlite3_file *real;                      /* the unix VFS's file, just after us */
    volatile unsigned char *shm0;            /* region 0 of the wal-index, as mapped */
    int shm0_rc;                             /* what xShmMap answered for region 0 */
    int slot;                                /* read-lock slot held shared, or -1 */
    bool hdr_ok;                             /* hdr is a whole, checked header */
    unsigned char hdr[WALINDEX_HEADER_SIZE]; /* the wal-index header when slot was taken */
};

#define SHIM_FILE_SIZE ((sizeof(struct shim_file) + 15) & ~(size_t)15)

static sqlite3_vfs shim_vfs;
static sqlite3_vfs *unix_vfs;
static pthread_once_t shim_once = PTHREAD_ONCE_INIT;
static int shim_rc = SQLITE_ERROR;

static sqlite3_file *realOf(sqlite3_file *f)
{
    return ((struct shim_file *)f)->real;
}

static int shimClose(sqlite3_file *f)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods != NULL ? r->pMethods->xClose(r) : SQLITE_OK;
}

static int shimRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xRead(r, buf, n, off);
}

static int shimWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return SQLITE_READONLY;
}

static int shimTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    return SQLITE_READONLY;
}

static int shimSync(sqlite3_file *f, int flags)
{
    return SQLITE_OK; /* nothing was written */
}

static int shimFileSize(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xFileSize(r, size);
}

static int shimLock(sqlite3_file *f, int level)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xLock(r, level);
}

static int shimUnlock(sqlite3_file *f, int level)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xUnlock(r, level);
}

static int shimCheckReservedLock(sqlite3_file *f, int *out)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int shimFileControl(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int shimSectorSize(sqlite3_file *f)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xSectorSize(r);
}

static int shimDeviceCharacteristics(sqlite3_file *f)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

static int shimShmMap(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    struct shim_file *sf = (struct shim_file *)f;
    sqlite3_file *r = sf->real;
    int rc;
    if (r->pMethods->iVersion < 2) {
        return SQLITE_IOERR_SHMMAP;
    }
    rc = r->pMethods->xShmMap(r, region, size, extend, pp);
    if (region == 0) {
        sf->shm0_rc = rc;
        sf->shm0 =
            (rc == SQLITE_OK || rc == SQLITE_READONLY) ? (volatile unsigned char *)*pp : NULL;
    }
    return rc;
}

static uint32_t hostU32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static bool hostBigEndian(void)
{
    const uint32_t one = 1;
    unsigned char b[4];
    memcpy(b, &one, 4);
    return b[3] == 1;
}

/* SQLite's WAL checksum (walChecksumBytes): n is a multiple of 8; the words are read
 * big-endian when big, little-endian otherwise. */
static void walSum(const unsigned char *p, size_t n, bool big, uint32_t s[2])
{
    uint32_t s1 = s[0], s2 = s[1];
    if (big) {
        for (size_t i = 0; i < n; i += 8) {
            s1 += be32(p + i) + s2;
            s2 += be32(p + i + 4) + s1;
        }
    } else {
        for (size_t i = 0; i < n; i += 8) {
            s1 += le32(p + i) + s2;
            s2 += le32(p + i + 4) + s1;
        }
    }
    s[0] = s1;
    s[1] = s2;
}

/* A wal-index header as walIndexTryHdr accepts one: initialised, of this version,
 * its checksum (native words) right. */
static bool walIndexHeaderOk(const unsigned char *h)
{
    uint32_t s[2] = {0, 0};
    if (h[12] != 1 || hostU32(h) != WALINDEX_VERSION) {
        return false;
    }
    walSum(h, 40, hostBigEndian(), s);
    return s[0] == hostU32(h + 40) && s[1] == hostU32(h + 44);
}

static int shimShmLock(sqlite3_file *f, int offset, int n, int flags)
{
    struct shim_file *sf = (struct shim_file *)f;
    sqlite3_file *r = sf->real;
    int rc;
    if (r->pMethods->iVersion < 2) {
        return SQLITE_IOERR_SHMLOCK;
    }
    rc = r->pMethods->xShmLock(r, offset, n, flags);
    if (rc != SQLITE_OK || n != 1 || offset < SHM_FIRST_READ_LOCK ||
        offset >= SHM_FIRST_READ_LOCK + SHM_READERS) {
        return rc;
    }
    if (flags == (SQLITE_SHM_LOCK | SQLITE_SHM_SHARED)) {
        /* SQLite compares the live header with its own copy right after this returns;
         * see the top of the file for why this copy is then the one it reads by. */
        sf->slot = offset - SHM_FIRST_READ_LOCK;
        sf->hdr_ok = false;
        if (sf->shm0 != NULL) {
            SHM_BARRIER();
            memcpy(sf->hdr, (const void *)sf->shm0, WALINDEX_HEADER_SIZE);
            sf->hdr_ok = walIndexHeaderOk(sf->hdr);
        }
    } else if (flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED) &&
               sf->slot == offset - SHM_FIRST_READ_LOCK) {
        sf->slot = -1;
        sf->hdr_ok = false;
    }
    return rc;
}

static void shimShmBarrier(sqlite3_file *f)
{
    sqlite3_file *r = realOf(f);
    if (r->pMethods->iVersion >= 2) {
        r->pMethods->xShmBarrier(r);
    }
}

static int shimShmUnmap(sqlite3_file *f, int delete_flag)
{
    struct shim_file *sf = (struct shim_file *)f;
    sqlite3_file *r = sf->real;
    sf->shm0 = NULL;
    /* Never delete the -shm: other processes use it. */
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmUnmap(r, 0) : SQLITE_OK;
}

static int shimFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    sqlite3_file *r = realOf(f);
    if (r->pMethods->iVersion >= 3) {
        return r->pMethods->xFetch(r, off, n, pp);
    }
    *pp = NULL;
    return SQLITE_OK;
}

static int shimUnfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = realOf(f);
    return r->pMethods->iVersion >= 3 ? r->pMethods->xUnfetch(r, off, p) : SQLITE_OK;
}

static const sqlite3_io_methods shim_methods = {
    3,
    shimClose,
    shimRead,
    shimWrite,
    shimTruncate,
    shimSync,
    shimFileSize,
    shimLock,
    shimUnlock,
    shimCheckReservedLock,
    shimFileControl,
    shimSectorSize,
    shimDeviceCharacteristics,
    shimShmMap,
    shimShmLock,
    shimShmBarrier,
    shimShmUnmap,
    shimFetch,
    shimUnfetch,
};

static int shimOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct shim_file *sf = (struct shim_file *)f;
    int rc;
    memset(sf, 0, sizeof *sf);
    sf->real = (sqlite3_file *)((char *)sf + SHIM_FILE_SIZE);
    sf->slot = -1;
    /* Read-only where the file exists (SQLite asks for the WAL read-write even on a
     * read-only connection). A WAL that does not exist yet is created as any reader
     * of a WAL database creates it: empty. */
    if (name != NULL && (flags & SQLITE_OPEN_MAIN_DB) == 0 && access(name, F_OK) == 0) {
        flags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY;
    }
    rc = unix_vfs->xOpen(unix_vfs, name, sf->real, flags, out_flags);
    /* SQLite calls xClose whenever pMethods is set, even after a failed open. */
    sf->base.pMethods = sf->real->pMethods != NULL ? &shim_methods : NULL;
    return rc;
}

static int shimDelete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return SQLITE_IOERR_DELETE;
}

static int shimAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    return unix_vfs->xAccess(unix_vfs, name, flags, out);
}

static int shimFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    return unix_vfs->xFullPathname(unix_vfs, name, n, out);
}

static void *shimDlOpen(sqlite3_vfs *vfs, const char *name)
{
    return unix_vfs->xDlOpen(unix_vfs, name);
}

static void shimDlError(sqlite3_vfs *vfs, int n, char *msg)
{
    unix_vfs->xDlError(unix_vfs, n, msg);
}

static void (*shimDlSym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    return unix_vfs->xDlSym(unix_vfs, h, sym);
}

static void shimDlClose(sqlite3_vfs *vfs, void *h)
{
    unix_vfs->xDlClose(unix_vfs, h);
}

static int shimRandomness(sqlite3_vfs *vfs, int n, char *out)
{
    return unix_vfs->xRandomness(unix_vfs, n, out);
}

static int shimSleep(sqlite3_vfs *vfs, int us)
{
    return unix_vfs->xSleep(unix_vfs, us);
}

static int shimCurrentTime(sqlite3_vfs *vfs, double *t)
{
    return unix_vfs->xCurrentTime(unix_vfs, t);
}

static int shimGetLastError(sqlite3_vfs *vfs, int n, char *msg)
{
    return unix_vfs->xGetLastError != NULL ? unix_vfs->xGetLastError(unix_vfs, n, msg) : 0;
}

static int shimCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
    return unix_vfs->xCurrentTimeInt64(unix_vfs, t);
}

static void shimRegister(void)
{
    unix_vfs = sqlite3_vfs_find("unix");
    if (unix_vfs == NULL || unix_vfs->iVersion < 2) {
        return;
    }
    shim_vfs.iVersion = 2;
    shim_vfs.szOsFile = (int)SHIM_FILE_SIZE + unix_vfs->szOsFile;
    shim_vfs.mxPathname = unix_vfs->mxPathname;
    shim_vfs.zName = SHIM_VFS_NAME;
    shim_vfs.xOpen = shimOpen;
    shim_vfs.xDelete = shimDelete;
    shim_vfs.xAccess = shimAccess;
    shim_vfs.xFullPathname = shimFullPathname;
    shim_vfs.xDlOpen = shimDlOpen;
    shim_vfs.xDlError = shimDlError;
    shim_vfs.xDlSym = shimDlSym;
    shim_vfs.xDlClose = shimDlClose;
    shim_vfs.xRandomness = shimRandomness;
    shim_vfs.xSleep = shimSleep;
    shim_vfs.xCurrentTime = shimCurrentTime;
    shim_vfs.xGetLastError = shimGetLastError;
    shim_vfs.xCurrentTimeInt64 = shimCurrentTimeInt64;
    shim_rc = sqlite3_vfs_register(&shim_vfs, 0);
}

/* ---- the snapshot ---- */

struct walmap {
    uint32_t pgno;
    uint32_t frame;
};

struct snapread {
    char *path;
    int db_fd;
    int wal_fd;
    sqlite3 *db; /* holds the read transaction */
    uint32_t page_size;
    uint64_t page_count;
    bool wal;
    int slot;
    uint32_t mx_frame;
    uint32_t read_mark;
    struct walmap *map; /* sorted by page, one entry (its last frame) a page */
    size_t nmap;
    bool seal_wal;    /* snapreadSealWal: pages from WAL frames get their checksum */
    bool shm_free;    /* taken without SQLite (openShmFree) */
    bool wal_existed; /* shm_free: the -wal as it was, for snapreadCheck */
    struct stat wal_st;
};

static int readAt(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        ssize_t k = pread(fd, p + *got, n - *got, (off_t)(off + *got));
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (k == 0) {
            break;
        }
        *got += (size_t)k;
    }
    return 0;
}

static uint64_t frameOffset(const struct snapread *s, uint32_t frame)
{
    return WAL_HEADER_SIZE + (uint64_t)(frame - 1) * (WAL_FRAME_HEADER_SIZE + s->page_size);
}

static int sqliteFailure(struct snapread *s, int rc, char *errmsg)
{
    const char *m = s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    switch (rc) {
    case SQLITE_READONLY_ROLLBACK:
        errorf(errmsg,
               "cannot read %s read-only: it has a hot journal (a writer stopped in the "
               "middle of a transaction) that only a writer can roll back; open it once "
               "with sqlite3, then back it up",
               s->path);
        return CAIRN_EIO;
    case SQLITE_IOERR_SHORT_READ:
        /* SQLite reads a short database file as zeros: what ended early is the WAL. */
        errorf(errmsg, "read %s: its WAL is shorter than its wal-index says: the WAL was cut short",
               s->path);
        return CAIRN_ECORRUPT;
    case SQLITE_READONLY_RECOVERY:
    case SQLITE_READONLY_CANTINIT:
        errorf(errmsg,
               "cannot read %s read-only: its -shm file, left by a process that stopped, is "
               "not writable by this user, and no process has the database open to make it "
               "current; open the database once with sqlite3 as its owner, or run the backup "
               "as its owner",
               s->path);
        return CAIRN_EIO;
    }
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        errorf(errmsg, "snapshot of %s: the database stayed locked by writers for %d s", s->path,
               LOCK_WAIT_MS / 1000);
        return CAIRN_ETIMEOUT;
    case SQLITE_NOTADB:
        errorf(errmsg, "%s is not a SQLite database", s->path);
        return CAIRN_ECORRUPT;
    case SQLITE_CORRUPT:
        errorf(errmsg, "read %s: %s", s->path, m);
        return CAIRN_ECORRUPT;
    case SQLITE_NOMEM:
        errorf(errmsg, "read %s: %s", s->path, m);
        return CAIRN_ENOMEM;
    default:
        errorf(errmsg, "read %s: %s", s->path, m);
        return CAIRN_EIO;
    }
}

static int byPageThenFrame(const void *a, const void *b)
{
    const struct walmap *x = a, *y = b;
    if (x->pgno != y->pgno) {
        return x->pgno < y->pgno ? -1 : 1;
    }
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

/* Map each page of the WAL's frames 1..mx to its last frame, checking the frames as
 * SQLite's recovery does: the header's magic, version, page size and checksum, then
 * each frame's salts and the checksum chain from the header on.
 *
 * With h, the wal-index header of SQLite's transaction, mx is h's mxFrame: every frame
 * up to it must check, and the chain must end on h's checksum at a commit frame of h's
 * size; anything else is damage (CAIRN_ECORRUPT). Without h (no process has the WAL
 * open, see openShmFree), this is SQLite's recovery: the frames up to the first that
 * does not check, cut back to the last commit among them; a header that does not check
 * means no frame. *pager_pages is then the last commit's database size (0: none). */
static int loadWal(struct snapread *s, const unsigned char *h, uint64_t *pager_pages, char *errmsg)
{
    const uint32_t ps = s->page_size;
    const size_t fsize = WAL_FRAME_HEADER_SIZE + (size_t)ps;
    enum { BATCH = 64 };
    unsigned char wh[WAL_HEADER_SIZE];
    unsigned char *buf = NULL;
    char wal[PATH_MAX + 8];
    uint32_t sum[2] = {0, 0}, magic, mx, commit_size = 0;
    size_t nmap = 0, committed = 0;
    struct stat st;
    bool big;
    size_t got;
    int err, rv;

    *pager_pages = 0;
    snprintf(wal, sizeof wal, "%s-wal", s->path);
    s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (s->wal_fd < 0 || fstat(s->wal_fd, &st) != 0) {
        errorf(errmsg, "open %s: %s", wal, strerror(errno));
        return errorFromErrno(errno);
    }
    if (h != NULL) {
        mx = hostU32(h + 16);
    } else {
        uint64_t whole =
            st.st_size < WAL_HEADER_SIZE ? 0 : ((uint64_t)st.st_size - WAL_HEADER_SIZE) / fsize;
        mx = whole > UINT32_MAX ? UINT32_MAX : (uint32_t)whole;
    }
    if ((err = readAt(s->wal_fd, wh, sizeof wh, 0, &got)) != 0) {
        errorf(errmsg, "read %s: %s", wal, strerror(err));
        return errorFromErrno(err);
    }
    magic = be32(wh);
    big = (magic & 1) != 0;
    if (got == sizeof wh) {
        walSum(wh, 24, big, sum);
    }
    if (got < sizeof wh || (magic & ~1u) != WAL_MAGIC || be32(wh + 8) != ps ||
        sum[0] != be32(wh + 24) || sum[1] != be32(wh + 28)) {
        if (h == NULL) {
            return 0; /* recovery would find no frame */
        }
        errorf(errmsg, "%s: the WAL header is not the one of the snapshot", wal);
        return CAIRN_ECORRUPT;
    }
    if (be32(wh + 4) != WAL_FORMAT_VERSION) {
        errorf(errmsg, "%s: WAL format version %u, not %u", wal, be32(wh + 4), WAL_FORMAT_VERSION);
        return CAIRN_ECORRUPT;
    }
    if (h != NULL && (memcmp(wh + 16, h + 32, 8) != 0 || h[13] != (big ? 1 : 0))) {
        errorf(errmsg, "%s: the WAL header is not the one of the snapshot (salts)", wal);
        return CAIRN_ECORRUPT;
    }
    if (mx == 0) {
        return 0;
    }
    if ((s->map = malloc((size_t)mx * sizeof *s->map)) == NULL ||
        (buf = malloc(BATCH * fsize)) == NULL) {
        errorf(errmsg, "out of memory reading %s (%u frames)", wal, mx);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    for (uint32_t done = 0; done < mx;) {
        uint32_t n = mx - done < BATCH ? mx - done : BATCH;
        if ((err = readAt(s->wal_fd, buf, n * fsize, frameOffset(s, done + 1), &got)) != 0) {
            errorf(errmsg, "read %s: %s", wal, strerror(err));
            rv = errorFromErrno(err);
            goto out;
        }
        for (uint32_t i = 0; i < n; i++) {
            const unsigned char *fh = buf + i * fsize;
            const uint32_t frame = done + i + 1;
            if ((i + 1) * fsize > got) {
                if (h == NULL) {
                    goto recovered;
                }
                errorf(errmsg,
                       "%s ends inside frame %u, but its snapshot holds %u frames: the WAL "
                       "was cut short",
                       wal, frame, mx);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
            walSum(fh, 8, big, sum);
            walSum(fh + WAL_FRAME_HEADER_SIZE, ps, big, sum);
            if (be32(fh) == 0 || memcmp(fh + 8, wh + 16, 8) != 0 || sum[0] != be32(fh + 16) ||
                sum[1] != be32(fh + 20)) {
                if (h == NULL) {
                    goto recovered;
                }
                errorf(errmsg,
                       "frame %u of %s fails its checksum (its snapshot holds %u frames): the "
                       "WAL is damaged",
                       frame, wal, mx);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
            s->map[nmap].pgno = be32(fh);
            s->map[nmap].frame = frame;
            nmap++;
            if (be32(fh + 4) != 0) {
                commit_size = be32(fh + 4);
                committed = nmap;
            }
        }
        done += n;
    }
    if (h != NULL && (committed != mx || commit_size != hostU32(h + 20) ||
                      sum[0] != hostU32(h + 24) || sum[1] != hostU32(h + 28))) {
        errorf(errmsg,
               "%s: frame %u is not the commit frame the wal-index names (the WAL does not "
               "match its index)",
               wal, mx);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
recovered:
    nmap = committed; /* frames after the last commit are no transaction's */
    s->mx_frame = (uint32_t)committed;
    *pager_pages = commit_size;
    qsort(s->map, nmap, sizeof *s->map, byPageThenFrame);
    s->nmap = 0;
    for (size_t i = 0; i < nmap; i++) {
        if (i + 1 < nmap && s->map[i + 1].pgno == s->map[i].pgno) {
            continue; /* a later frame of the same page follows */
        }
        s->map[s->nmap++] = s->map[i];
    }
    rv = 0;
out:
    free(buf);
    return rv;
}

/* The first map entry of a page >= pgno. */
static size_t mapLowerBound(const struct snapread *s, uint64_t pgno)
{
    size_t lo = 0, hi = s->nmap;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->map[mid].pgno < pgno) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Pages [from, to) (0-based) are in neither the file nor the WAL: only the lock-byte
 * page may be (it is never written; SQLite reads it as zeros). */
static bool gapOk(const struct snapread *s, uint64_t from, uint64_t to)
{
    return to <= from || (to - from == 1 && from * s->page_size == LOCK_BYTE_OFFSET);
}

int snapreadPages(const struct snapread *s, uint64_t first, uint32_t count, void *buf)
{
    const uint32_t ps = s->page_size;
    unsigned char *out = buf;
    size_t n = (size_t)count * ps, got;
    uint64_t next;
    int err;

    if ((err = readAt(s->db_fd, out, n, first * ps, &got)) != 0) {
        return err;
    }
    memset(out + got, 0, n - got);
    next = first + got / ps; /* the first page the file did not hold whole */
    for (size_t i = mapLowerBound(s, first + 1); i < s->nmap && s->map[i].pgno <= first + count;
         i++) {
        uint64_t idx = s->map[i].pgno - 1;
        size_t k;
        if ((err = readAt(s->wal_fd, out + (idx - first) * ps, ps,
                          frameOffset(s, s->map[i].frame) + WAL_FRAME_HEADER_SIZE, &k)) != 0) {
            return err;
        }
        if (k != ps) {
            return EIO; /* the WAL was cut under our read lock: not SQLite's doing */
        }
        if (s->seal_wal) {
            pagesumSeal(out + (idx - first) * ps, ps);
        }
        if (idx >= next) {
            if (!gapOk(s, next, idx)) {
                return -1;
            }
            next = idx + 1;
        }
    }
    return gapOk(s, next, first + count) ? 0 : -1;
}

/* Page size and count from the snapshot's page 1, as SQLite's btree takes them: the
 * header's page count when valid (its change counter equals its version-valid-for
 * number), else the pager's, which here is pager_pages; a header count above it is
 * corruption. */
static int geometry(struct snapread *s, uint64_t pager_pages, char *errmsg)
{
    unsigned char *p1 = NULL;
    uint32_t ps, hdr_pages;
    int err, rv = 0;

    if (pager_pages == 0) {
        s->page_count = 0;
        return 0;
    }
    if ((p1 = malloc(s->page_size)) == NULL) {
        errorf(errmsg, "out of memory reading %s", s->path);
        return CAIRN_ENOMEM;
    }
    if ((err = snapreadPages(s, 0, 1, p1)) != 0) {
        errorf(errmsg, "read page 1 of %s: %s", s->path,
               err < 0 ? "the file is shorter than a page" : strerror(err));
        rv = err < 0 ? CAIRN_ECORRUPT : errorFromErrno(err);
        goto out;
    }
    ps = (uint32_t)(p1[16] << 8 | p1[17]);
    ps = ps == 1 ? 65536 : ps;
    if (memcmp(p1, "SQLite format 3", 16) != 0 || ps != s->page_size) {
        errorf(errmsg, "%s: page 1 of the snapshot is not a SQLite header of %u-byte pages",
               s->path, s->page_size);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    hdr_pages = be32(p1 + 28);
    if (be32(p1 + 24) == be32(p1 + 92) && hdr_pages != 0) {
        if (hdr_pages > pager_pages) {
            errorf(errmsg, "%s: its header says %u pages, but the snapshot holds %llu", s->path,
                   hdr_pages, (unsigned long long)pager_pages);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        s->page_count = hdr_pages;
    } else {
        s->page_count = pager_pages;
    }
out:
    free(p1);
    return rv;
}

static int lockRange(int fd, short type, off_t start, off_t len)
{
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = start;
    l.l_len = len;
    return fcntl(fd, F_SETLK, &l) == 0 ? 0 : errno;
}

/* A SHARED lock as SQLite's unixLock takes one: a read lock on the pending byte first,
 * so as not to slip in ahead of a writer waiting for EXCLUSIVE, then on the shared
 * range. EAGAIN or EACCES while a writer holds or waits for the file. */
static int sharedLock(int fd)
{
    int err = lockRange(fd, F_RDLCK, PENDING_BYTE, 1);
    if (err != 0) {
        return err;
    }
    err = lockRange(fd, F_RDLCK, SHARED_FIRST, SHARED_SIZE);
    lockRange(fd, F_UNLCK, PENDING_BYTE, 1);
    return err;
}

static bool existsWithSuffix(const char *path, const char *suffix, struct stat *st)
{
    char p[PATH_MAX + 16];
    struct stat ignored;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, st != NULL ? st : &ignored) == 0 || errno != ENOENT;
}

#define SHM_FREE_NOT_SO 1

/* A WAL database without a -shm: no process has it open in WAL mode (a connection maps
 * the -shm before it reads, and only the last one to close, holding the file's
 * EXCLUSIVE lock, removes it). SQLite's reader would create a -shm (and a -wal if there
 * is none) beside it; instead take the file's SHARED lock ourselves, as a reader does,
 * and read the file and the WAL as SQLite's recovery would. The lock keeps any
 * connection that comes meanwhile from removing the -shm or the -wal it makes, so
 * snapreadCheck() can tell, once every page is read, whether one came. 0 when taken;
 * SHM_FREE_NOT_SO when the database is no longer such (the caller goes through
 * SQLite); an error code otherwise. */
static int openShmFree(struct snapread *s, char *errmsg)
{
    const int64_t deadline = libMonoMs() + LOCK_WAIT_MS;
    unsigned char head[100];
    uint64_t pager_pages, commit_pages = 0;
    struct stat st;
    size_t got;
    int err, rv;

    for (int delay_ms = 1;; delay_ms = delay_ms < 100 ? 2 * delay_ms : 100) {
        if ((err = sharedLock(s->db_fd)) == 0) {
            break;
        }
        if (err != EAGAIN && err != EACCES) {
            errorf(errmsg, "lock %s: %s", s->path, strerror(err));
            return errorFromErrno(err);
        }
        if (libMonoMs() >= deadline) {
            return sqliteFailure(s, SQLITE_BUSY, errmsg);
        }
        usleep((useconds_t)delay_ms * 1000);
    }
    /* Under the lock, as it is now: still WAL, still no -shm, no journal to roll back. */
    if (existsWithSuffix(s->path, "-shm", NULL) || existsWithSuffix(s->path, "-journal", NULL)) {
        lockRange(s->db_fd, F_UNLCK, SHARED_FIRST, SHARED_SIZE);
        return SHM_FREE_NOT_SO;
    }
    if (fstat(s->db_fd, &st) != 0) {
        errorf(errmsg, "stat %s: %s", s->path, strerror(errno));
        return errorFromErrno(errno);
    }
    if ((err = readAt(s->db_fd, head, sizeof head, 0, &got)) != 0) {
        errorf(errmsg, "read %s: %s", s->path, strerror(err));
        return errorFromErrno(err);
    }
    if (got < sizeof head || memcmp(head, "SQLite format 3", 16) != 0 || head[18] != 2 ||
        head[19] != 2) {
        lockRange(s->db_fd, F_UNLCK, SHARED_FIRST, SHARED_SIZE);
        return SHM_FREE_NOT_SO;
    }
    s->page_size = (uint32_t)(head[16] << 8 | head[17]);
    s->page_size = s->page_size == 1 ? 65536 : s->page_size;
    if (s->page_size < 512 || (s->page_size & (s->page_size - 1)) != 0) {
        errorf(errmsg, "the database %s has an invalid page size %u", s->path, s->page_size);
        return CAIRN_ECORRUPT;
    }
    pager_pages = (uint64_t)st.st_size / s->page_size;
    s->wal = true;
    s->shm_free = true;
    s->wal_existed = existsWithSuffix(s->path, "-wal", &s->wal_st);
    if (s->wal_existed) {
        if ((rv = loadWal(s, NULL, &commit_pages, errmsg)) != 0) {
            return rv;
        }
        if (commit_pages != 0) {
            pager_pages = commit_pages;
        }
    }
    return geometry(s, pager_pages, errmsg);
}

int snapreadCheck(const struct snapread *s, char *errmsg)
{
    struct stat st;
    bool wal;
    if (!s->shm_free) {
        return 0; /* SQLite's locks held it */
    }
    wal = existsWithSuffix(s->path, "-wal", &st);
    if (existsWithSuffix(s->path, "-shm", NULL) || wal != s->wal_existed ||
        (wal && (st.st_ino != s->wal_st.st_ino || st.st_size != s->wal_st.st_size ||
                 st.st_mtim.tv_sec != s->wal_st.st_mtim.tv_sec ||
                 st.st_mtim.tv_nsec != s->wal_st.st_mtim.tv_nsec))) {
        errorf(errmsg,
               "another program opened %s while it was being read (a -shm or a -wal came "
               "beside it), so the pages read may not be one state: run the backup again",
               s->path);
        return CAIRN_EBUSY;
    }
    return 0;
}

/* The read transaction. In WAL mode *sf is the shim's main file, holding the slot and
 * the header copy. */
static int beginRead(struct snapread *s, struct shim_file **sfp, char *errmsg)
{
    struct shim_file *sf = NULL;
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_exec(s->db, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            int rv = sqliteFailure(s, sqlite3_extended_errcode(s->db), errmsg);
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rv;
        }
        if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_FILE_POINTER, &sf) != SQLITE_OK ||
            sf == NULL || sf->base.pMethods != &shim_methods) {
            errorf(errmsg, "read %s: SQLite did not open it through the snapshot reader", s->path);
            return CAIRN_EIO;
        }
        if (sf->slot < 0 || sf->hdr_ok) {
            break;
        }
        if (sf->shm0 == NULL || attempt + 1 >= BEGIN_ATTEMPTS) {
            if (sf->shm0_rc == SQLITE_READONLY_CANTINIT || sf->shm0 == NULL) {
                return sqliteFailure(s, SQLITE_READONLY_CANTINIT, errmsg);
            }
            errorf(errmsg, "read %s: its wal-index header could not be read whole in %d tries",
                   s->path, BEGIN_ATTEMPTS);
            return CAIRN_EBUSY;
        }
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    *sfp = sf;
    return 0;
}

int snapreadOpen(const char *path, struct snapread **out, char *errmsg)
{
    struct snapread *s;
    struct shim_file *sf = NULL;
    unsigned char head[100];
    struct stat st, now;
    uint64_t pager_pages;
    size_t got;
    int err, rc, rv;

    *out = NULL;
    pthread_once(&shim_once, shimRegister);
    if (shim_rc != SQLITE_OK) {
        errorf(errmsg, "read %s: SQLite has no unix VFS to read it through", path);
        return CAIRN_EIO;
    }
    if ((s = calloc(1, sizeof *s)) == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        errorf(errmsg, "out of memory opening %s", path);
        return CAIRN_ENOMEM;
    }
    s->db_fd = s->wal_fd = -1;
    s->slot = -1;
    s->page_size = 4096; /* SQLite's default; an empty file has no pages to size */

    /* Ours before SQLite's: once its transaction holds the file, this must be the file
     * it holds (checked below), and it is closed only after SQLite lets go. */
    s->db_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->db_fd < 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    if (fstat(s->db_fd, &st) != 0) {
        errorf(errmsg, "stat %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        errorf(errmsg, "%s is not a regular file", path);
        rv = CAIRN_EINVAL;
        goto err;
    }
    if (st.st_size == 0) {
        /* An empty database (SQLite ignores, and would delete, a WAL beside it): nothing
         * to hold. */
        *out = s;
        return 0;
    }
    if ((err = readAt(s->db_fd, head, sizeof head, 0, &got)) != 0) {
        errorf(errmsg, "read %s: %s", path, strerror(err));
        rv = errorFromErrno(err);
        goto err;
    }
    if (got < sizeof head || memcmp(head, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "%s is not a SQLite database", path);
        rv = CAIRN_ECORRUPT;
        goto err;
    }
    if (head[18] == 2 && head[19] == 2 && !existsWithSuffix(path, "-shm", NULL)) {
        if ((rv = openShmFree(s, errmsg)) == 0) {
            s->nmap = mapLowerBound(s, s->page_count + 1);
            *out = s;
            return 0;
        }
        if (rv != SHM_FREE_NOT_SO) {
            goto err;
        }
        /* A process opened it meanwhile (or there is a journal): through SQLite, then. */
        s->wal = false;
    }

    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY, SHIM_VFS_NAME);
    if (rc != SQLITE_OK) {
        rv = sqliteFailure(s, rc, errmsg);
        goto err;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* No checkpoint when this connection closes, even if it were the last one. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    sqlite3_busy_timeout(s->db, LOCK_WAIT_MS);
    if ((rv = beginRead(s, &sf, errmsg)) != 0) {
        goto err;
    }
    if (stat(path, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
        errorf(errmsg, "%s was replaced while it was being opened; try again", path);
        rv = CAIRN_EBUSY;
        goto err;
    }

    /* The file's header as of now, under the transaction. */
    if (fstat(s->db_fd, &st) != 0) {
        errorf(errmsg, "stat %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    if ((err = readAt(s->db_fd, head, sizeof head, 0, &got)) != 0) {
        errorf(errmsg, "read %s: %s", path, strerror(err));
        rv = errorFromErrno(err);
        goto err;
    }
    if (got < sizeof head || memcmp(head, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "%s is not a SQLite database", path);
        rv = CAIRN_ECORRUPT;
        goto err;
    }
    s->page_size = (uint32_t)(head[16] << 8 | head[17]);
    s->page_size = s->page_size == 1 ? 65536 : s->page_size;
    if (s->page_size < 512 || (s->page_size & (s->page_size - 1)) != 0) {
        errorf(errmsg, "the database %s has an invalid page size %u", path, s->page_size);
        rv = CAIRN_ECORRUPT;
        goto err;
    }
    pager_pages = (uint64_t)st.st_size / s->page_size;

    if (sf->slot >= 0) {
        /* WAL mode: the wal-index header SQLite's transaction reads by. */
        const unsigned char *h = sf->hdr;
        const uint32_t mx = hostU32(h + 16), npage = hostU32(h + 20);
        s->wal = true;
        s->slot = sf->slot;
        if (npage != 0) {
            pager_pages = npage;
        }
        if (sf->slot > 0 && mx > 0) {
            uint32_t mark, hps;
            uint16_t sz;
            memcpy(&sz, h + 14, 2); /* szPage: 1 stands for 65536 */
            hps = (uint32_t)(sz & 0xfe00) + ((uint32_t)(sz & 1) << 16);
            if (hps != s->page_size) {
                errorf(errmsg, "%s: its wal-index names %u-byte pages, its header %u", path, hps,
                       s->page_size);
                rv = CAIRN_ECORRUPT;
                goto err;
            }
            SHM_BARRIER();
            memcpy(&mark, (const void *)(sf->shm0 + WALINDEX_READMARK_OFFSET + 4 * sf->slot), 4);
            if (mark == READMARK_NOT_USED || mark > mx) {
                errorf(errmsg, "%s: the read mark of its slot %d (%u) is past its snapshot (%u)",
                       path, sf->slot, mark, mx);
                rv = CAIRN_EIO;
                goto err;
            }
            s->read_mark = mark;
            if ((rv = loadWal(s, h, &pager_pages, errmsg)) != 0) {
                goto err;
            }
        }
        /* Otherwise no frame is used: slot 0 (every frame already in the file, and no
         * checkpoint may run) or an empty WAL. */
    } else if (head[18] == 2 || head[19] == 2) {
        /* SQLite opens the WAL of a database whose header says WAL; not doing so, it
         * would not hold what keeps checkpoints out. */
        errorf(errmsg, "read %s: SQLite read a WAL database without its WAL", path);
        rv = CAIRN_EIO;
        goto err;
    }
    /* else rollback-journal mode: the SHARED lock keeps the file as it is now. */
    rv = geometry(s, pager_pages, errmsg);
    if (rv != 0) {
        goto err;
    }
    /* Pages past the snapshot's end are not part of it. */
    s->nmap = mapLowerBound(s, s->page_count + 1);
    *out = s;
    return 0;
err:
    snapreadClose(s);
    return rv;
}

bool snapreadSealWal(struct snapread *s)
{
    unsigned char *p1;
    if (s->page_count == 0 || s->nmap == 0 || (p1 = malloc(s->page_size)) == NULL) {
        return false;
    }
    s->seal_wal = false;
    if (snapreadPages(s, 0, 1, p1) == 0 && p1[20] == PAGESUM_RESERVE) {
        s->seal_wal = true;
    }
    free(p1);
    return s->seal_wal;
}

void snapreadGetInfo(const struct snapread *s, struct snapread_info *info)
{
    memset(info, 0, sizeof *info);
    info->page_size = s->page_size;
    info->page_count = s->page_count;
    info->wal = s->wal;
    info->read_slot = s->slot;
    info->mx_frame = s->mx_frame;
    info->read_mark = s->read_mark;
    info->shm_free = s->shm_free;
    info->wal_pages = s->nmap;
}

int snapreadFd(const struct snapread *s)
{
    return s->db_fd;
}

void snapreadClose(struct snapread *s)
{
    if (s == NULL) {
        return;
    }
    if (s->db != NULL) {
        /* The transaction only read: ending it either way changes nothing. */
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(s->db);
    }
    /* Only now: closing a descriptor of the file drops this process's locks on it. */
    if (s->wal_fd >= 0) {
        close(s->wal_fd);
    }
    if (s->db_fd >= 0) {
        close(s->db_fd);
    }
    free(s->map);
    free(s->path);
    free(s);
}

/* ---- SQL over the snapshot ----
 *
 * A second VFS, "cairn-snapimage", that opens no file at all: its one file is the
 * snapshot's image, every read served by snapreadPages(). So a query sees exactly the
 * pages a backup of the snapshot stores (the WAL frames of the snapshot included), at
 * no risk to the locks the snapshot holds: no descriptor of the source is opened or
 * closed. Page 1 is shown in rollback-journal mode (its bytes 18 and 19, SQLite's
 * read/write versions, read 1 instead of 2) so that SQLite looks for no WAL; the image
 * is complete without one. The snapshot travels in the URI ("snap=<pointer>"), as
 * SQLite's own memvfs passes its buffer. */

#define IMAGE_VFS_NAME "cairn-snapimage"

struct image_file {
    sqlite3_file base;
    const struct snapread *s;
};

static sqlite3_vfs image_vfs;
static pthread_once_t image_once = PTHREAD_ONCE_INIT;
static int image_rc = SQLITE_ERROR;

static int imageClose(sqlite3_file *f)
{
    return SQLITE_OK;
}

static int imageRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    const struct snapread *s = ((struct image_file *)f)->s;
    const uint64_t ps = s->page_size;
    const uint64_t size = s->page_count * ps;
    unsigned char *out = buf;
    unsigned char *page = NULL;
    uint64_t at = (uint64_t)off, end = (uint64_t)off + (uint64_t)n;
    int rc = SQLITE_OK;

    if (off < 0 || n < 0) {
        return SQLITE_IOERR_READ;
    }
    while (at < end) {
        uint64_t pg = at / ps, in = at % ps;
        size_t k = (size_t)(ps - in < end - at ? ps - in : end - at);
        if (at >= size) {
            memset(out + (at - (uint64_t)off), 0, (size_t)(end - at));
            rc = SQLITE_IOERR_SHORT_READ;
            break;
        }
        if (in == 0 && k == ps) {
            if (snapreadPages(s, pg, 1, out + (at - (uint64_t)off)) != 0) {
                rc = SQLITE_IOERR_READ;
                break;
            }
        } else {
            if (page == NULL && (page = malloc(ps)) == NULL) {
                rc = SQLITE_IOERR_NOMEM;
                break;
            }
            if (snapreadPages(s, pg, 1, page) != 0) {
                rc = SQLITE_IOERR_READ;
                break;
            }
            memcpy(out + (at - (uint64_t)off), page + in, k);
        }
        at += k;
    }
    free(page);
    /* A WAL database's page 1 says so (2, 2 at 18-19): shown as rollback (1, 1). */
    if (rc == SQLITE_OK && (uint64_t)off <= 18 && end >= 20) {
        unsigned char *v = out + (18 - off);
        if (v[0] == 2 && v[1] == 2) {
            v[0] = v[1] = 1;
        }
    }
    return rc;
}

static int imageWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return SQLITE_READONLY;
}

static int imageTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    return SQLITE_READONLY;
}

static int imageSync(sqlite3_file *f, int flags)
{
    return SQLITE_OK; /* nothing was written */
}

static int imageFileSize(sqlite3_file *f, sqlite3_int64 *size)
{
    const struct snapread *s = ((struct image_file *)f)->s;
    *size = (sqlite3_int64)(s->page_count * s->page_size);
    return SQLITE_OK;
}

static int imageLock(sqlite3_file *f, int level)
{
    return SQLITE_OK; /* the image does not change while the snapshot is held */
}

static int imageCheckReservedLock(sqlite3_file *f, int *out)
{
    *out = 0;
    return SQLITE_OK;
}

static int imageFileControl(sqlite3_file *f, int op, void *arg)
{
    return SQLITE_NOTFOUND;
}

static int imageSectorSize(sqlite3_file *f)
{
    return 512;
}

static int imageDeviceCharacteristics(sqlite3_file *f)
{
    return SQLITE_IOCAP_IMMUTABLE;
}

static const sqlite3_io_methods image_methods = {
    1,
    imageClose,
    imageRead,
    imageWrite,
    imageTruncate,
    imageSync,
    imageFileSize,
    imageLock,
    imageLock, /* xUnlock */
    imageCheckReservedLock,
    imageFileControl,
    imageSectorSize,
    imageDeviceCharacteristics,
    NULL, /* version 1: no shared memory, no mmap */
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int imageOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct image_file *imf = (struct image_file *)f;
    const char *p;
    void *ptr = NULL;

    memset(imf, 0, sizeof *imf);
    /* Only the image itself: no journal, WAL or temporary file is ever needed to read it
     * (a query that would sort into a temporary file fails instead). */
    if ((flags & SQLITE_OPEN_MAIN_DB) == 0 || name == NULL ||
        (p = sqlite3_uri_parameter(name, "snap")) == NULL || sscanf(p, "%p", &ptr) != 1 ||
        ptr == NULL) {
        return SQLITE_CANTOPEN;
    }
    imf->s = ptr;
    imf->base.pMethods = &image_methods;
    if (out_flags != NULL) {
        *out_flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_DB;
    }
    return SQLITE_OK;
}

static int imageDelete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return SQLITE_IOERR_DELETE;
}

static int imageAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    *out = 0; /* no journal, no WAL beside the image */
    return SQLITE_OK;
}

static int imageFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    if ((int)strlen(name) >= n) {
        return SQLITE_CANTOPEN;
    }
    memcpy(out, name, strlen(name) + 1);
    return SQLITE_OK;
}

static void imageRegister(void)
{
    sqlite3_vfs *base = sqlite3_vfs_find("unix");
    if (base == NULL) {
        return;
    }
    image_vfs.iVersion = 1;
    image_vfs.szOsFile = (int)sizeof(struct image_file);
    image_vfs.mxPathname = 512;
    image_vfs.zName = IMAGE_VFS_NAME;
    image_vfs.xOpen = imageOpen;
    image_vfs.xDelete = imageDelete;
    image_vfs.xAccess = imageAccess;
    image_vfs.xFullPathname = imageFullPathname;
    image_vfs.xDlOpen = base->xDlOpen;
    image_vfs.xDlError = base->xDlError;
    image_vfs.xDlSym = base->xDlSym;
    image_vfs.xDlClose = base->xDlClose;
    image_vfs.xRandomness = base->xRandomness;
    image_vfs.xSleep = base->xSleep;
    image_vfs.xCurrentTime = base->xCurrentTime;
    image_vfs.xGetLastError = base->xGetLastError;
    image_rc = sqlite3_vfs_register(&image_vfs, 0);
}

int snapreadSql(const struct snapread *s, sqlite3 **out, char *errmsg)
{
    char uri[128];
    sqlite3 *db = NULL;
    int rc;

    *out = NULL;
    pthread_once(&image_once, imageRegister);
    if (image_rc != SQLITE_OK) {
        errorf(errmsg, "read %s: SQLite has no unix VFS to borrow from", s->path);
        return CAIRN_EIO;
    }
    snprintf(uri, sizeof uri, "file:snapshot?snap=%p&immutable=1", (const void *)s);
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, IMAGE_VFS_NAME);
    if (rc != SQLITE_OK) {
        errorf(errmsg, "read %s's snapshot with SQLite: %s", s->path,
               db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc == SQLITE_NOMEM ? CAIRN_ENOMEM : CAIRN_EIO;
    }
    *out = db;
    return 0;
}
