/* Page checksums: the "cairn" VFS shim (see pagesum.h). Any thread: the shim's state is
 * per open file (used under SQLite's locks) or thread-local; the failure count is
 * atomic.
 *
 * Only database files are wrapped. Pages in the WAL are covered by the WAL's own frame
 * checksums (SQLite computes those before the page reaches the VFS, so the shim must
 * not change a page on its way into the WAL); a page gets its checksum when a
 * checkpoint writes it into the database file, and is verified whenever it is read
 * from there. Every connection in the process goes through the shim (it is the
 * default VFS), so a checkpoint run by any of them seals what it writes. */
#define _GNU_SOURCE
#include "pagesum.h"

#include "memlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "hash.h"

/* Julian day number of the Unix epoch, in milliseconds, as SQLite counts time. */
#define UNIX_EPOCH_JD_MS 210866760000000LL

struct psFile {
    sqlite3_file base;
    const char *name; /* SQLite keeps it valid while the file is open */
    bool active;      /* the database has 8 reserved bytes per page */
    bool known;       /* its header has been seen (at open, or written since) */
    /* Pages written before a new file's page 1 (SQLite may spill pages of a copy,
     * VACUUM INTO's or the backup API's, before it writes page 1): sealed once page 1
     * says the file has checksums. */
    uint32_t *pending;
    size_t npending, cappending;
    int pending_size;
    /* A temporary file (tmpMethods): how far writes have extended it, and what of that
     * the run `run` counted against its temp limit (memlimit.h). */
    uint64_t extent;
    uint64_t run;
    uint64_t charged;
    int fd; /* a database's descriptor, SQLite's own (pagesumFd), or -1 */
    /* the real file follows */
};

#define REAL(p) ((sqlite3_file *)((struct psFile *)(p) + 1))

static sqlite3_vfs psVfs;
static sqlite3_vfs *baseVfs;
static pthread_once_t psOnce = PTHREAD_ONCE_INIT;
static _Thread_local int64_t nowMs; /* 0: the real clock */
static _Thread_local uint32_t badPage;
static _Thread_local char badFile[512];
static _Atomic uint64_t failures;

uint64_t pagesumOf(const void *page, size_t size)
{
    return hash64(page, size - PAGESUM_RESERVE);
}

static uint64_t stored(const unsigned char *page, size_t size)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) {
        v = (v << 8) | page[size - PAGESUM_RESERVE + (size_t)k];
    }
    return v;
}

void pagesumSetVersions(unsigned char *page, size_t size, unsigned char v)
{
    page[18] = page[19] = v;
    if (page[20] == PAGESUM_RESERVE) {
        pagesumSeal(page, size);
    }
}

bool pagesumPageOk(const void *page, size_t size)
{
    return stored(page, size) == pagesumOf(page, size);
}

void pagesumSeal(void *page, size_t size)
{
    uint64_t v = pagesumOf(page, size);
    unsigned char *w = (unsigned char *)page + size - PAGESUM_RESERVE;
    for (int k = 0; k < 8; k++) {
        w[k] = (unsigned char)(v >> (8 * k));
    }
}

static bool isPageSize(int n)
{
    return n >= 512 && n <= 65536 && (n & (n - 1)) == 0;
}

/* The database header passing by: does it say 8 reserved bytes per page? */
static void noteHeader(struct psFile *p, const void *buf, int n, sqlite3_int64 off)
{
    const unsigned char *d = buf;
    if (off == 0 && n >= 100 && memcmp(d, "SQLite format 3", 16) == 0) {
        p->active = d[20] == PAGESUM_RESERVE;
        p->known = true;
    }
}

/* Remember a page written before the file's header: 0, or an I/O error code when
 * there is no memory to remember it (the write must not silently stay unsealed). */
static int notePending(struct psFile *p, int n, sqlite3_int64 off)
{
    if (p->npending == p->cappending) {
        size_t cap = p->cappending ? 2 * p->cappending : 64;
        uint32_t *grown = sqlite3_realloc64(p->pending, cap * sizeof *grown);
        if (grown == NULL) {
            return SQLITE_IOERR_NOMEM;
        }
        p->pending = grown;
        p->cappending = cap;
    }
    p->pending[p->npending++] = (uint32_t)(off / n);
    p->pending_size = n;
    return SQLITE_OK;
}

/* Page 1 has just said the file has checksums: seal the pages written before it. */
static int sealPending(struct psFile *p)
{
    int n = p->pending_size;
    unsigned char *page;
    int rc = SQLITE_OK;
    if (p->npending == 0) {
        return SQLITE_OK;
    }
    page = sqlite3_malloc(n);
    if (page == NULL) {
        return SQLITE_IOERR_NOMEM;
    }
    for (size_t i = 0; i < p->npending && rc == SQLITE_OK; i++) {
        sqlite3_int64 off = (sqlite3_int64)p->pending[i] * n;
        rc = REAL(p)->pMethods->xRead(REAL(p), page, n, off);
        if (rc == SQLITE_OK) {
            pagesumSeal(page, (size_t)n);
            rc = REAL(p)->pMethods->xWrite(REAL(p), page, n, off);
        }
    }
    sqlite3_free(page);
    p->npending = 0;
    return rc;
}

static int psClose(sqlite3_file *f)
{
    struct psFile *p = (struct psFile *)f;
    sqlite3_free(p->pending);
    p->pending = NULL;
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int psRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    struct psFile *p = (struct psFile *)f;
    int rc = REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
    if (rc != SQLITE_OK) {
        return rc;
    }
    noteHeader(p, buf, n, off);
    if (p->active && isPageSize(n) && !pagesumPageOk(buf, (size_t)n)) {
        badPage = (uint32_t)(off / n) + 1;
        snprintf(badFile, sizeof badFile, "%s", p->name ? p->name : "?");
        atomic_fetch_add(&failures, 1);
        sqlite3_log(SQLITE_IOERR_DATA, "page %u of %s failed its checksum", badPage, badFile);
        return SQLITE_IOERR_DATA;
    }
    return SQLITE_OK;
}

static int psWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    struct psFile *p = (struct psFile *)f;
    bool was_known = p->known;
    int rc;
    noteHeader(p, buf, n, off);
    if (!p->known && isPageSize(n) && off > 0) {
        if ((rc = notePending(p, n, off)) != SQLITE_OK) {
            return rc;
        }
    }
    if (p->active && isPageSize(n)) {
        /* The page buffer is SQLite's; its last 8 bytes are reserved for this. */
        pagesumSeal((void *)buf, (size_t)n);
    }
    rc = REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
    if (rc == SQLITE_OK && !was_known && p->known) {
        if (p->active && p->pending_size == n) {
            rc = sealPending(p);
        }
        p->npending = 0;
    }
    return rc;
}

static int psTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int psSync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int psFileSize(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int psLock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int psUnlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int psCheckReservedLock(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int psFileControl(sqlite3_file *f, int op, void *arg)
{
    struct psFile *p = (struct psFile *)f;
    if (op == SQLITE_FCNTL_PRAGMA && p->active) {
        char **argv = arg;
        /* The page size of a database with checksums stays as it is (a VACUUM to
         * another size would leave pages without them). */
        if (argv[1] != NULL && argv[2] != NULL && sqlite3_stricmp(argv[1], "page_size") == 0) {
            return SQLITE_OK;
        }
    }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int psSectorSize(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int psDeviceCharacteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int psShmMap(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}

static int psShmLock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void psShmBarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int psShmUnmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

/* Pages handed out by mmap would bypass psRead's check: none on a checksummed file. */
static int psFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    struct psFile *p = (struct psFile *)f;
    const sqlite3_io_methods *m = REAL(f)->pMethods;
    *pp = NULL;
    if (p->active || m->iVersion < 3 || m->xFetch == NULL) {
        return SQLITE_OK;
    }
    return m->xFetch(REAL(f), off, n, pp);
}

static int psUnfetch(sqlite3_file *f, sqlite3_int64 off, void *page)
{
    const sqlite3_io_methods *m = REAL(f)->pMethods;
    if (m->iVersion < 3 || m->xUnfetch == NULL) {
        return SQLITE_OK;
    }
    return m->xUnfetch(REAL(f), off, page);
}

static const sqlite3_io_methods psMethods = {
    3,         psClose,        psRead,      psWrite,           psTruncate,
    psSync,    psFileSize,     psLock,      psUnlock,          psCheckReservedLock,
    psFileControl, psSectorSize, psDeviceCharacteristics, psShmMap, psShmLock,
    psShmBarrier, psShmUnmap,  psFetch,     psUnfetch};

/* Temporary files: every write that extends the file is counted against the running
 * statement's temp limit first (memlimit.h), and refused, writing nothing, past it. */
static int tmpClose(sqlite3_file *f)
{
    struct psFile *p = (struct psFile *)f;
    memlimitTempShrink(p->run, p->charged);
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int tmpRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int tmpWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    struct psFile *p = (struct psFile *)f;
    uint64_t end = (uint64_t)off + (uint64_t)n;
    if (off >= 0 && n > 0 && end > p->extent) {
        uint64_t run;
        int rc = memlimitTempGrow(end - p->extent, &run);
        if (rc != SQLITE_OK) {
            return rc;
        }
        if (run != p->run) { /* counted by an earlier run (or none): not this one's */
            p->run = run;
            p->charged = 0;
        }
        if (run != 0) {
            p->charged += end - p->extent;
        }
        p->extent = end;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int tmpTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct psFile *p = (struct psFile *)f;
    if (size >= 0 && (uint64_t)size < p->extent) {
        uint64_t back = p->extent - (uint64_t)size;
        if (back > p->charged) {
            back = p->charged;
        }
        memlimitTempShrink(p->run, back);
        p->charged -= back;
        p->extent = (uint64_t)size;
    }
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

/* Every byte goes through tmpWrite: a size hint (which would extend the file without
 * a write, when SQLite maps the sorter's files into memory) is not passed on, and no
 * page is mapped (the sorter then writes as it does without mmap_size). */
static int tmpFileControl(sqlite3_file *f, int op, void *arg)
{
    if (op == SQLITE_FCNTL_SIZE_HINT) {
        return SQLITE_OK;
    }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int tmpFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    (void)f;
    (void)off;
    (void)n;
    *pp = NULL;
    return SQLITE_OK;
}

static const sqlite3_io_methods tmpMethods = {
    3,         tmpClose,       tmpRead,     tmpWrite,          tmpTruncate,
    psSync,    psFileSize,     psLock,      psUnlock,          psCheckReservedLock,
    tmpFileControl, psSectorSize, psDeviceCharacteristics, psShmMap, psShmLock,
    psShmBarrier, psShmUnmap,  tmpFetch,    psUnfetch};

/* Open the real file behind p, p's own fields cleared, with methods m: on failure
 * p's pMethods is NULL (SQLite then does not close it). */
static int openWrapped(struct psFile *p, const char *name, int flags, int *out,
                       const sqlite3_io_methods *m)
{
    sqlite3_file *f = (sqlite3_file *)p;
    int rc;
    memset(p, 0, sizeof *p);
    rc = baseVfs->xOpen(baseVfs, name, REAL(f), flags, out);
    if (rc != SQLITE_OK) {
        f->pMethods = NULL;
        return rc;
    }
    p->name = name;
    f->pMethods = m;
    return SQLITE_OK;
}

/* The descriptor of a database file the base VFS opened, -1 when it cannot be told.
 * The unix VFS's file starts with its methods, its VFS and its inode's shared state,
 * then the descriptor (struct unixFile in sqlite3.c, unchanged since SQLite 3.5); what
 * is read there counts only if it is open on the very file SQLite was asked for. */
static int unixDescriptor(sqlite3_file *real, const char *name)
{
    struct unixHead {
        const sqlite3_io_methods *methods;
        sqlite3_vfs *vfs;
        void *inode;
        int h;
    };
    struct stat a, b;
    int fd;
    if (strncmp(baseVfs->zName, "unix", 4) != 0 || name == NULL) {
        return -1;
    }
    fd = ((const struct unixHead *)(const void *)real)->h;
    if (fd < 0 || fstat(fd, &a) != 0 || stat(name, &b) != 0 || a.st_dev != b.st_dev ||
        a.st_ino != b.st_ino) {
        return -1;
    }
    return fd;
}

int pagesumFd(sqlite3 *db)
{
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK ||
        f == NULL || f->pMethods != &psMethods) {
        return -1;
    }
    return ((struct psFile *)f)->fd;
}

static int psOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    struct psFile *p = (struct psFile *)f;
    int rc;
    (void)vfs;
    /* What a statement builds for itself: its sorter's runs (TEMP_JOURNAL), its
     * intermediate tables (TRANSIENT_DB), a temp database (TEMP_DB). Not a statement
     * journal (SUBJOURNAL): it holds the pages the statement changes, each once, which
     * the statement writes into the database's WAL anyway, and how many there are
     * depends on how each node's file lays its rows out. */
    if (flags & (SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_TEMP_DB)) {
        return openWrapped(p, name, flags, out, &tmpMethods);
    }
    if ((flags & SQLITE_OPEN_MAIN_DB) == 0) {
        return baseVfs->xOpen(baseVfs, name, f, flags, out);
    }
    if ((rc = openWrapped(p, name, flags, out, &psMethods)) != SQLITE_OK) {
        return rc;
    }
    p->fd = unixDescriptor(REAL(f), name);
    {
        /* What the file says now; an empty (new) file says it with its first page 1. */
        unsigned char hdr[100];
        if (REAL(f)->pMethods->xRead(REAL(f), hdr, sizeof hdr, 0) == SQLITE_OK) {
            noteHeader(p, hdr, sizeof hdr, 0);
        }
    }
    return SQLITE_OK;
}

static int psCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    if (nowMs != 0) {
        *out = nowMs + UNIX_EPOCH_JD_MS;
        return SQLITE_OK;
    }
    return baseVfs->xCurrentTimeInt64(baseVfs, out);
}

static int psCurrentTime(sqlite3_vfs *vfs, double *out)
{
    sqlite3_int64 t;
    int rc = psCurrentTimeInt64(vfs, &t);
    *out = (double)t / 86400000.0;
    return rc;
}

/* SQLite's 'localtime' and 'utc' modifiers read the process's time zone. While this
 * thread applies an entry (pagesumSetNow), local time is UTC: each node's own zone
 * would make the rows its writes store differ. Elsewhere (reads, an embedding
 * program's own connections), the zone of the process, as SQLite's own would. 0 on
 * success, as SQLite's alternative localtime() is called. */
static int psLocaltime(const void *t, void *tm)
{
    if (nowMs != 0) {
        return gmtime_r((const time_t *)t, (struct tm *)tm) == NULL;
    }
    return localtime_r((const time_t *)t, (struct tm *)tm) == NULL;
}

static void registerOnce(void)
{
    /* Memory statistics make every SQLite allocation take a global mutex; cairn does
     * not read them. Refused (harmlessly) when the embedding program has already
     * initialised SQLite. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* Also before SQLite initialises (the calls below do so). */
    memlimitInstall();
    /* The one hook SQLite has for its localtime() (3.39 and later; process-wide). */
    sqlite3_test_control(SQLITE_TESTCTRL_LOCALTIME_FAULT, 2, psLocaltime);
    baseVfs = sqlite3_vfs_find(NULL);
    /* Every method but opening and the clock is the base VFS's own: they only read
     * their own struct's settings (pAppData, szOsFile, mxPathname), which the copy
     * keeps, apart from the larger file object. */
    psVfs = *baseVfs;
    psVfs.zName = PAGESUM_VFS;
    psVfs.pNext = NULL;
    psVfs.szOsFile = baseVfs->szOsFile + (int)sizeof(struct psFile);
    psVfs.xOpen = psOpen;
    psVfs.xCurrentTimeInt64 = psCurrentTimeInt64;
    psVfs.xCurrentTime = psCurrentTime;
    /* Not the default: cairn names it for its own databases only, so that other
     * SQLite files in the process (an embedding program's, a standalone backup's
     * source) are never sealed or judged by cairn's checksums. */
    sqlite3_vfs_register(&psVfs, 0);
}

void pagesumRegister(void)
{
    pthread_once(&psOnce, registerOnce);
}

void pagesumSetNow(int64_t unix_ms)
{
    nowMs = unix_ms;
}

uint32_t pagesumLastFailure(char *file, size_t size)
{
    if (file != NULL && size > 0) {
        snprintf(file, size, "%s", badFile);
    }
    return badPage;
}

void pagesumClearFailure(void)
{
    badPage = 0;
    badFile[0] = '\0';
}

uint64_t pagesumFailures(void)
{
    return atomic_load(&failures);
}

int pagesumVerifyFile(const char *path, bool *enabled, uint64_t *pages, uint64_t *bad,
                      uint32_t *first_bad, size_t nfirst, char *errmsg)
{
    unsigned char hdr[100];
    unsigned char *page = NULL;
    struct stat st;
    size_t psize;
    uint64_t n;
    int fd;
    int rv = 0;

    *enabled = false;
    *pages = *bad = 0;
    for (size_t i = 0; i < nfirst; i++) {
        first_bad[i] = 0;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errorf(errmsg, "cannot open %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if (fstat(fd, &st) != 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        memcmp(hdr, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "%s is not a SQLite database (no header)", path);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    psize = ((size_t)hdr[16] << 8) | hdr[17];
    if (psize == 1) {
        psize = 65536;
    }
    if (!isPageSize((int)psize)) {
        errorf(errmsg, "%s: page size %zu in the header is not valid", path, psize);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if (hdr[20] != PAGESUM_RESERVE) {
        goto out; /* no checksums to verify */
    }
    *enabled = true;
    page = malloc(psize);
    if (page == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    n = (uint64_t)st.st_size / psize;
    for (uint64_t i = 0; i < n; i++) {
        ssize_t got;
        if (i * psize == 0x40000000u) {
            continue; /* SQLite's lock-byte page: never written, never read */
        }
        got = pread(fd, page, psize, (off_t)(i * psize));
        if (got != (ssize_t)psize) {
            errorf(errmsg, "cannot read page %llu of %s: %s", (unsigned long long)i + 1, path,
                   got < 0 ? strerror(errno) : "short read");
            rv = CAIRN_EIO;
            goto out;
        }
        (*pages)++;
        if (!pagesumPageOk(page, psize)) {
            if (*bad < nfirst) {
                first_bad[*bad] = (uint32_t)i + 1;
            }
            (*bad)++;
        }
    }
out:
    free(page);
    close(fd);
    return rv;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Read page pgno (1-based) of fd into page and verify it. */
static int checkPage(int fd, const char *path, uint64_t pgno, unsigned char *page, size_t psize,
                     char *errmsg)
{
    ssize_t got = pread(fd, page, psize, (off_t)((pgno - 1) * psize));
    if (got != (ssize_t)psize) {
        errorf(errmsg, "%s: page %llu cannot be read (%s)", path, (unsigned long long)pgno,
               got < 0 ? strerror(errno) : "the file ends before it");
        return CAIRN_ECORRUPT;
    }
    if (!pagesumPageOk(page, psize)) {
        errorf(errmsg, "%s: page %llu fails its checksum", path, (unsigned long long)pgno);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

int pagesumStartCheck(const char *path, uint64_t *checked, char *errmsg)
{
    unsigned char hdr[100];
    unsigned char *page = NULL;
    struct stat st;
    uint64_t npages, stated, lockpage;
    size_t psize;
    uint32_t trunk;
    int fd;
    int rv = 0;

    *checked = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0; /* no database yet: made at this start */
    }
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        close(fd);
        return 0;
    }
    if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        memcmp(hdr, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "%s: the database header is damaged (no SQLite magic in its first 100 "
                       "bytes)", path);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    psize = ((size_t)hdr[16] << 8) | hdr[17];
    psize = psize == 1 ? 65536 : psize;
    if (!isPageSize((int)psize) || hdr[20] > 64) {
        errorf(errmsg, "%s: the database header is damaged (page size %zu, %u reserved "
                       "bytes, file of %lld bytes)", path, psize, hdr[20], (long long)st.st_size);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if ((uint64_t)st.st_size % psize != 0) {
        errorf(errmsg, "%s: the file is %lld bytes, not a whole number of %zu-byte pages (a "
                       "write was cut short, or bytes were added)",
               path, (long long)st.st_size, psize);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    npages = (uint64_t)st.st_size / psize;
    stated = be32(hdr + 28);
    /* The stated size holds only when the header says so (offset 92 equals 24). */
    if (be32(hdr + 92) == be32(hdr + 24) && stated > npages) {
        errorf(errmsg, "%s: the header states %llu pages but the file holds %llu (the file was "
                       "cut short)", path, (unsigned long long)stated, (unsigned long long)npages);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if (hdr[20] != PAGESUM_RESERVE) {
        goto out; /* no checksums: the header is all there is to check cheaply */
    }
    page = malloc(psize);
    if (page == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    lockpage = 0x40000000u / psize + 1;
    for (uint64_t i = 1; i <= npages && rv == 0; i++) {
        if (i > PAGESUM_START_PAGES && i <= npages - PAGESUM_START_PAGES) {
            i = npages - PAGESUM_START_PAGES; /* the middle of a large file: skipped */
            continue;
        }
        if (i == lockpage) {
            continue;
        }
        rv = checkPage(fd, path, i, page, psize, errmsg);
        (*checked)++;
    }
    /* The freelist's trunk pages: what the next writes take pages from. */
    trunk = be32(hdr + 32);
    for (unsigned n = 0; rv == 0 && trunk != 0 && n < 100000; n++) {
        if (trunk > npages) {
            errorf(errmsg, "%s: the freelist names page %u, past the end of the file (%llu "
                           "pages)", path, trunk, (unsigned long long)npages);
            rv = CAIRN_ECORRUPT;
            break;
        }
        rv = checkPage(fd, path, trunk, page, psize, errmsg);
        (*checked)++;
        trunk = be32(page);
    }
out:
    free(page);
    close(fd);
    return rv;
}
