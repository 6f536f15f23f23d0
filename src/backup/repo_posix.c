/* The posix driver of the repository object (repo_driver.h): a repository is a
 * directory, an object a regular file in it.
 *
 * Objects are written as `.<name>.tmp` (held under an flock while written, so that
 * sweeping leaves a live writer alone), with writeback started every WRITEBACK_BYTES
 * so that the final fsync has little left to do, then fsynced, renamed to <name>
 * without ever replacing a file (renameat2 RENAME_NOREPLACE, or link + unlink), and
 * the directory fsynced. Small objects (sidecars) are replaced by libWriteFileAtomic
 * (mkostemp + fsync + rename + directory fsync).
 *
 * Any thread; a reader or writer is used by one thread at a time. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "lib.h"
#include "repo_driver.h"

/* Start the writeback of what was written so far without waiting for it, so that the
 * disk works while the engine compresses and the final fsync has little left to do. */
#define WRITEBACK_BYTES (8u << 20)

struct posix {
    char dir[PATH_MAX];
};

struct posix_writer {
    struct repo_writer base; /* first: repo.c sees this */
    int fd;
    uint64_t off;
    uint64_t flushed; /* writeback started up to here */
    char tmp[PATH_MAX];
    char path[PATH_MAX];
};

/* dir/name, as the engine always built it ("dir/" gives "dir//name"; dir "" gives the
 * bare name, relative to the working directory); false when it does not fit. */
static bool join(const struct posix *p, const char *name, char *out, size_t size)
{
    const char *sep = strcmp(p->dir, "/") == 0 || p->dir[0] == '\0' ? "" : "/";
    return (size_t)snprintf(out, size, "%s%s%s", p->dir, sep, name) < size;
}

static const char *posixLocalPath(void *drv)
{
    return ((struct posix *)drv)->dir;
}

static void posixWhere(void *drv, const char *name, char *out, size_t size)
{
    join(drv, name, out, size);
}

static int posixList(void *drv, const char *prefix, repo_list_fn fn, void *arg, char *errmsg)
{
    struct posix *p = drv;
    size_t plen = strlen(prefix);
    struct dirent *e;
    DIR *d;
    int rv = 0;

    if ((d = opendir(p->dir[0] != '\0' ? p->dir : ".")) == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        errorf(errmsg, "open the repository %s: %s", p->dir, strerror(errno));
        return errorFromErrno(errno);
    }
    while ((errno = 0, e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        char version[96];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strncmp(e->d_name, prefix, plen) != 0) {
            continue;
        }
        if (!join(p, e->d_name, path, sizeof path) || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode)) {
            continue;
        }
        /* The version: a file replaced (renamed over, rewritten) has another inode or
         * change time; the change time cannot be set back. */
        snprintf(version, sizeof version, "%llu.%lld.%09ld.%lld.%09ld",
                 (unsigned long long)st.st_ino, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec,
                 (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        if ((rv = fn(arg, e->d_name, (uint64_t)st.st_size, version)) != 0) {
            closedir(d);
            return rv;
        }
    }
    if (errno != 0) {
        errorf(errmsg, "read the repository %s: %s", p->dir, strerror(errno));
        rv = errorFromErrno(errno);
    }
    closedir(d);
    return rv;
}

static int fdRead(void *arg, uint64_t off, void *buf, size_t n)
{
    int rv = libPreadFull((int)(intptr_t)arg, buf, n, off);
    return rv < 0 ? EIO : rv; /* the file shrank since its size was taken */
}

static int posixOpenRead(void *drv, const char *name, struct repo_reader *rd, char *errmsg)
{
    char path[PATH_MAX];
    struct stat st;
    int fd, rv;
    if (!join(drv, name, path, sizeof path)) {
        errorf(errmsg, "path too long: %s/%s", ((struct posix *)drv)->dir, name);
        return CAIRN_EINVAL;
    }
    /* Non-blocking until it is known to be a regular file: opening a FIFO (a path a
     * request named) would otherwise wait for a writer that never comes, and hold the
     * request's thread for ever. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if (fstat(fd, &st) != 0) {
        errorf(errmsg, "stat %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        errorf(errmsg, "%s: not a regular file", path);
        rv = CAIRN_EINVAL;
        goto err;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    rd->fd = fd;
    rd->size = (uint64_t)st.st_size;
    rd->io.read = fdRead;
    rd->io.arg = (void *)(intptr_t)fd;
    return 0;
err:
    close(fd);
    return rv;
}

static void posixCloseRead(struct repo_reader *rd)
{
    if (rd->fd >= 0) {
        close(rd->fd);
        rd->fd = -1;
    }
}

/* Remove the temporary file at path when it is a dead writer's: one whose flock nobody
 * holds (a live writer holds its own from just after creating it until its file has its
 * final name). The lock is taken first and the file is removed only while it is still
 * the one at path, so that two processes reclaiming at once remove it once, never a
 * live writer's new file. A writer that creates its file just as it is taken for a dead
 * one (between its create and its flock) loses it: the file at its temporary name is
 * then another's, which it sees (stillMine) and gives way, at its create or at its
 * commit; it never renames another writer's file, half written, to the object's name.
 * Returns whether it removed the file. */
static bool reclaimDead(const char *path)
{
    struct stat held, now;
    bool removed = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &held) == 0 && lstat(path, &now) == 0 &&
        held.st_dev == now.st_dev && held.st_ino == now.st_ino && S_ISREG(now.st_mode)) {
        removed = unlink(path) == 0;
    }
    close(fd);
    return removed;
}

/* Whether the file at w->tmp is the one w writes (w->fd). */
static bool stillMine(const struct posix_writer *w)
{
    struct stat mine, there;
    return fstat(w->fd, &mine) == 0 && lstat(w->tmp, &there) == 0 &&
           mine.st_dev == there.st_dev && mine.st_ino == there.st_ino;
}

static int posixCreate(void *drv, const char *name, struct repo_writer **out, char *errmsg)
{
    struct posix *p = drv;
    struct posix_writer *w;
    char hidden[NAME_MAX + 8];
    int rv;

    if ((w = calloc(1, sizeof *w)) == NULL) {
        errorf(errmsg, "out of memory creating %s in %s", name, p->dir);
        return CAIRN_ENOMEM;
    }
    snprintf(hidden, sizeof hidden, ".%s.tmp", name);
    if (strlen(name) > NAME_MAX - 5 || !join(p, name, w->path, sizeof w->path) ||
        !join(p, hidden, w->tmp, sizeof w->tmp)) {
        errorf(errmsg, "backup: repository path too long: %s", p->dir);
        rv = CAIRN_EINVAL;
        goto err;
    }
    if (p->dir[0] != '\0' && (rv = repoMkdirs(p->dir, errmsg)) != 0) {
        goto err;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0 && errno == EEXIST) {
        /* A writer killed while writing this object (kill -9, a crash) left its file:
         * every later writer of the object would fail on it, the archive's next
         * segment for ever. A live writer's is left alone. */
        reclaimDead(w->tmp);
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (w->fd < 0) {
        /* Another live writer's (it holds its flock), or an error. */
        errorf(errmsg, "create %s: %s", w->tmp, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    /* Held while the file is written: sweeping removes only temporary files that no
     * live writer holds (a writer killed mid-write). Held already by another: a writer
     * took the file for a dead one's in the moment before this lock (reclaimDead), and
     * removes it; this writer gives way rather than write a file that has no name. */
    if ((flock(w->fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) || !stillMine(w)) {
        errorf(errmsg, "create %s: another writer took it over", w->tmp);
        close(w->fd);
        rv = CAIRN_EEXIST;
        goto err;
    }
    *out = &w->base;
    return 0;
err:
    free(w);
    return rv;
}

static int posixWrite(struct repo_writer *base, const void *buf, size_t n, char *errmsg)
{
    struct posix_writer *w = (struct posix_writer *)base;
    int err = libWriteFull(w->fd, buf, n);
    if (err != 0) {
        if (err == ENOSPC || err == EDQUOT) {
            errorf(errmsg, "no space left on device writing %s", w->tmp);
            return CAIRN_ENOSPC;
        }
        errorf(errmsg, "write %s: %s", w->tmp, strerror(err));
        return errorFromErrno(err);
    }
    w->off += n;
    if (w->off - w->flushed >= WRITEBACK_BYTES) {
        sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->off - w->flushed),
                        SYNC_FILE_RANGE_WRITE);
        w->flushed = w->off;
    }
    return 0;
}

static void posixAbort(struct repo_writer *base)
{
    struct posix_writer *w = (struct posix_writer *)base;
    /* Under its flock, and only its own file: one at the temporary name may be another
     * writer's that took this one for dead. */
    if (w->fd >= 0) {
        if (stillMine(w)) {
            unlink(w->tmp);
        }
        close(w->fd);
    }
    free(w);
}

static int posixCommit(struct repo_writer *base, char *errmsg)
{
    struct posix_writer *w = (struct posix_writer *)base;
    int rv;
    if (fsync(w->fd) != 0) {
        if (errno == ENOSPC || errno == EDQUOT) {
            errorf(errmsg, "no space left on device writing %s", w->tmp);
        } else {
            errorf(errmsg, "fsync %s: %s", w->tmp, strerror(errno));
        }
        rv = errorFromErrno(errno);
        goto err;
    }
    /* Renamed under its flock, and only if it is still this writer's file: released
     * before, it would look like a dead writer's, and another writer could remove it
     * and start its own at the temporary name, which the rename would then publish
     * half written (test_repo.c's writers racing for one object did, 1 run in 30). */
    if (!stillMine(w)) {
        errorf(errmsg, "commit %s: another writer took it over (this writer was taken for a "
                       "dead one): nothing of it was published",
               w->tmp);
        close(w->fd);
        w->fd = -1;
        free(w); /* the file at the temporary name is the other writer's */
        return CAIRN_EEXIST;
    }
    if ((rv = repoRenameNoReplace(w->tmp, w->path, errmsg)) != 0) {
        goto err;
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        errorf(errmsg, "close %s: %s", w->path, strerror(errno));
        rv = errorFromErrno(errno);
        unlink(w->path); /* the repository as it was */
        free(w);
        return rv;
    }
    w->fd = -1;
    if ((rv = libSyncParentDir(w->path, errmsg)) != 0) {
        unlink(w->path); /* the repository as it was */
        free(w);
        return rv;
    }
    free(w);
    return 0;
err:
    posixAbort(base);
    return rv;
}

static int posixRemove(void *drv, const char *name, char *errmsg)
{
    char path[PATH_MAX];
    if (!join(drv, name, path, sizeof path)) {
        errorf(errmsg, "path too long: %s/%s", ((struct posix *)drv)->dir, name);
        return CAIRN_EINVAL;
    }
    if (unlink(path) != 0) {
        if (errno == ENOENT) {
            errorf(errmsg, "no object %s", path);
            return CAIRN_ENOTFOUND;
        }
        errorf(errmsg, "remove %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    return libSyncParentDir(path, errmsg);
}

static int posixGet(void *drv, const char *name, void *buf, size_t cap, size_t *len, char *errmsg)
{
    char path[PATH_MAX];
    int fd;
    *len = 0;
    if (!join(drv, name, path, sizeof path)) {
        errorf(errmsg, "path too long: %s/%s", ((struct posix *)drv)->dir, name);
        return CAIRN_EINVAL;
    }
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        return errno == ENOENT ? CAIRN_ENOTFOUND : errorFromErrno(errno);
    }
    while (*len < cap) {
        ssize_t n = read(fd, (char *)buf + *len, cap - *len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int err = errno;
            errorf(errmsg, "read %s: %s", path, strerror(err));
            close(fd);
            return errorFromErrno(err);
        }
        if (n == 0) {
            break;
        }
        *len += (size_t)n;
    }
    close(fd);
    return 0;
}

static int posixPut(void *drv, const char *name, const void *buf, size_t len, char *errmsg)
{
    struct posix *p = drv;
    char path[PATH_MAX];
    int rv;

    if (!join(p, name, path, sizeof path)) {
        errorf(errmsg, "path too long: %s/%s", p->dir, name);
        return CAIRN_EINVAL;
    }
    if (p->dir[0] != '\0' && (rv = repoMkdirs(p->dir, errmsg)) != 0) {
        return rv;
    }
    /* A unique hidden temporary name (`.<name>.XXXXXX`): two writers of one sidecar
     * never share a file, and a listing by the object's prefix never shows it. */
    return libWriteFileAtomic(path, buf, len, LIB_ATOMIC_UNIQUE, errmsg);
}

static void posixSweep(void *drv, unsigned *removed)
{
    struct posix *p = drv;
    DIR *d = opendir(p->dir[0] != '\0' ? p->dir : ".");
    struct dirent *e;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        char path[PATH_MAX];
        /* Every object's temporary file (.cbk.tmp of backups, .seg.tmp of the archive's
         * segments, ...): only this driver's writers name files `.<name>.tmp`. */
        if (e->d_name[0] != '.' || n < 6 || strcmp(e->d_name + n - 4, ".tmp") != 0) {
            continue;
        }
        if (!join(p, e->d_name, path, sizeof path)) {
            continue;
        }
        if (reclaimDead(path)) { /* a live writer's is left alone */
            (*removed)++;
        }
    }
    closedir(d);
}

static void posixClose(void *drv)
{
    free(drv);
}

static const struct repo_driver posixDriver = {
    .name = "posix",
    .localPath = posixLocalPath,
    .where = posixWhere,
    .list = posixList,
    .openRead = posixOpenRead,
    .closeRead = posixCloseRead,
    .create = posixCreate,
    .write = posixWrite,
    .commit = posixCommit,
    .abort = posixAbort,
    .remove = posixRemove,
    .get = posixGet,
    .put = posixPut,
    .sweep = posixSweep,
    .close = posixClose,
};

/* dir "" (repo.c's, never a user's): the working directory, objects named bare. */
int repoPosixOpen(const char *dir, void **drv, const struct repo_driver **ops, char *errmsg)
{
    struct posix *p;
    if (strlen(dir) >= sizeof p->dir - NAME_MAX - 2) {
        errorf(errmsg, "invalid repository path \"%s\"", dir);
        return CAIRN_EINVAL;
    }
    if ((p = calloc(1, sizeof *p)) == NULL) {
        errorf(errmsg, "out of memory opening the repository %s", dir);
        return CAIRN_ENOMEM;
    }
    snprintf(p->dir, sizeof p->dir, "%s", dir);
    *drv = p;
    *ops = &posixDriver;
    return 0;
}
