/* New files that appear whole or not at all (newfile.h). Any thread. */
#define _GNU_SOURCE
#include "newfile.h"

#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

/* SQLite's files beside a database: a hidden file's leftovers when its writer died
 * while SQLite had it open. */
static const char *const SIDE[] = {"-journal", "-wal", "-shm"};

/* The directory of path into dir (PATH_MAX), and its last component. */
static const char *splitPath(const char *path, char *dir)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, PATH_MAX, ".");
        return path;
    }
    if (slash == path) {
        snprintf(dir, PATH_MAX, "/");
    } else {
        snprintf(dir, PATH_MAX, "%.*s", (int)(slash - path), path);
    }
    return slash + 1;
}

/* "DIR/.BASE.WHAT-" into out (PATH_MAX); false when it does not fit. */
static bool hiddenPrefix(const char *path, const char *what, char *out)
{
    char dir[PATH_MAX];
    const char *base = splitPath(path, dir);
    return (size_t)snprintf(out, PATH_MAX, "%s%s.%s.%s-", dir, strcmp(dir, "/") == 0 ? "" : "/",
                            base, what) < PATH_MAX;
}

static void unlinkSides(const char *tmp)
{
    char side[PATH_MAX + 16];
    for (size_t i = 0; i < sizeof SIDE / sizeof SIDE[0]; i++) {
        snprintf(side, sizeof side, "%s%s", tmp, SIDE[i]);
        unlink(side);
    }
}

int newfileOpen(struct newfile *f, const char *path, const char *what, mode_t mode, unsigned flags,
                char *errmsg)
{
    char dir[PATH_MAX];
    int fd;

    memset(f, 0, sizeof *f);
    f->fd = -1;
    splitPath(path, dir);
    if (strlen(path) >= PATH_MAX || !hiddenPrefix(path, what, f->prefix) ||
        strlen(f->prefix) + 6 >= PATH_MAX) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    if ((flags & NEWFILE_NAMED) == 0) {
        fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode & 07777);
        if (fd >= 0) {
            struct stat a, b;
            snprintf(f->proc, sizeof f->proc, "/proc/self/fd/%d", fd);
            /* Linking it at the end goes through /proc: without /proc, a name now. */
            if (fstat(fd, &a) == 0 && stat(f->proc, &b) == 0 && a.st_dev == b.st_dev &&
                a.st_ino == b.st_ino) {
                f->fd = fd;
                f->anonymous = true;
                fchmod(fd, mode & 07777);
                flock(fd, LOCK_EX | LOCK_NB);
                return 0;
            }
            close(fd);
            f->proc[0] = '\0';
        } else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
            errorf(errmsg, "create a temporary file beside %s: %s", path, strerror(errno));
            return errorFromErrno(errno);
        }
    }
    snprintf(f->tmp, sizeof f->tmp, "%sXXXXXX", f->prefix);
    if ((fd = mkostemp(f->tmp, O_CLOEXEC)) < 0) {
        errorf(errmsg, "create a temporary file beside %s: %s", path, strerror(errno));
        f->tmp[0] = '\0';
        return errorFromErrno(errno);
    }
    /* Held while the writer lives: newfileSweep leaves the file alone. */
    flock(fd, LOCK_EX | LOCK_NB);
    fchmod(fd, mode & 07777);
    f->fd = fd;
    return 0;
}

const char *newfilePath(const struct newfile *f)
{
    return f->anonymous ? f->proc : f->tmp;
}

/* Six characters for a hidden name, as mkostemp would pick them. */
static void randomSuffix(char out[7])
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char r[6];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        unsigned long x;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 16) ^ (unsigned long)r[0];
        for (size_t i = 0; i < sizeof r; i++) {
            r[i] = (unsigned char)(x >> (5 * i));
        }
    }
    for (size_t i = 0; i < sizeof r; i++) {
        out[i] = chars[r[i] % (sizeof chars - 1)];
    }
    out[6] = '\0';
}

int newfileName(struct newfile *f, char *errmsg)
{
    char name[PATH_MAX + 8], suffix[7];
    if (!f->anonymous) {
        return 0;
    }
    for (int tries = 0; tries < 100; tries++) {
        randomSuffix(suffix);
        snprintf(name, sizeof name, "%s%s", f->prefix, suffix);
        if (linkat(AT_FDCWD, f->proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0) {
            snprintf(f->tmp, sizeof f->tmp, "%s", name);
            f->anonymous = false;
            return 0;
        }
        if (errno != EEXIST) {
            break;
        }
    }
    errorf(errmsg, "name the new file %sXXXXXX: %s", f->prefix, strerror(errno));
    return errorFromErrno(errno);
}

int newfilePlace(struct newfile *f, const char *path, bool replace, char *errmsg)
{
    int rv;
    if (f->anonymous && !replace) {
        /* A link fails when path exists: nothing is ever replaced. */
        if (linkat(AT_FDCWD, f->proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) {
            f->anonymous = false;
            return 0;
        }
        if (errno == EEXIST) {
            errorf(errmsg, "%s already exists", path);
            return CAIRN_EEXIST;
        }
        errorf(errmsg, "link the new file to %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if ((rv = newfileName(f, errmsg)) != 0) {
        return rv;
    }
    if (replace) {
        if (rename(f->tmp, path) != 0) {
            errorf(errmsg, "rename %s to %s: %s", f->tmp, path, strerror(errno));
            return errorFromErrno(errno);
        }
    } else if (renameat2(AT_FDCWD, f->tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
        /* A file system without RENAME_NOREPLACE: link() fails too when path exists. */
        if ((errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) || link(f->tmp, path) != 0) {
            if (errno == EEXIST) {
                errorf(errmsg, "%s already exists", path);
                return CAIRN_EEXIST;
            }
            errorf(errmsg, "rename %s to %s: %s", f->tmp, path, strerror(errno));
            return errorFromErrno(errno);
        }
        unlink(f->tmp);
    }
    f->tmp[0] = '\0';
    return 0;
}

int newfileRenameDatabase(const char *tmp, const char *path, char *errmsg)
{
    enum { NSIDE = sizeof SIDE / sizeof SIDE[0] };
    char side[PATH_MAX + 16], aside[NSIDE][PATH_MAX + 96], prefix[PATH_MAX];
    bool moved[NSIDE] = {false};
    struct stat new_st, old_st;
    int err = 0;

    if (strlen(path) >= PATH_MAX || !hiddenPrefix(path, "replaced", prefix)) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    if (stat(tmp, &new_st) != 0) {
        errorf(errmsg, "stat %s: %s", tmp, strerror(errno));
        return errorFromErrno(errno);
    }
    if (stat(path, &old_st) != 0) {
        old_st.st_ino = 0; /* nothing replaced: its sides, if any, belong to nothing */
    }
    for (size_t i = 0; i < NSIDE && err == 0; i++) {
        snprintf(side, sizeof side, "%s%s", path, SIDE[i]);
        /* The inodes of the new file and the old one, and who moves them: what a writer
         * killed between the renames leaves tells newfileSweepReplaced which one got
         * the name. */
        snprintf(aside[i], sizeof aside[i], "%s%llu-%llu-%ld%s", prefix,
                 (unsigned long long)new_st.st_ino, (unsigned long long)old_st.st_ino,
                 (long)getpid(), SIDE[i]);
        if (rename(side, aside[i]) == 0) {
            moved[i] = true;
        } else if (errno != ENOENT) {
            err = errno;
            errorf(errmsg, "move %s aside: %s", side, strerror(err));
        }
    }
    if (err == 0 && rename(tmp, path) == 0) {
        for (size_t i = 0; i < NSIDE; i++) {
            if (moved[i]) {
                unlink(aside[i]);
            }
        }
        return 0;
    }
    if (err == 0) {
        err = errno;
        errorf(errmsg, "rename %s to %s: %s", tmp, path, strerror(err));
    }
    for (size_t i = 0; i < NSIDE; i++) {
        snprintf(side, sizeof side, "%s%s", path, SIDE[i]);
        if (moved[i] && rename(aside[i], side) != 0) {
            errorAppendf(errmsg, "; %s stays in %s: %s", side,
                     aside[i], strerror(errno));
        }
    }
    return errorFromErrno(err);
}

int newfileResolveLink(const char *path, char *target, const char **out, char *errmsg)
{
    struct stat st;
    *out = path;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode)) {
        return 0;
    }
    if (realpath(path, target) == NULL) {
        char to[PATH_MAX];
        int err = errno;
        ssize_t len = readlink(path, to, sizeof to - 1);
        to[len > 0 ? len : 0] = '\0';
        errorf(errmsg,
               "%s is a symbolic link to %s, which cannot be resolved (%s): a restore writes "
               "the file a link points to; name a file",
               path, to, strerror(err));
        return CAIRN_EINVAL;
    }
    *out = target;
    return 0;
}

/* newfileSweepReplaced's step: one side file `.BASE.replaced-NEW-OLD-PID<side>` of a
 * writer that is gone. */
static unsigned sweepReplacedOne(const char *path, const char *dir, const char *name, size_t plen)
{
    unsigned long long new_ino, old_ino;
    long pid;
    int used = 0;
    char full[PATH_MAX + 256], side[PATH_MAX + 16];
    const char *which = NULL;
    struct stat st;
    bool there;

    if (sscanf(name + plen, "%llu-%llu-%ld%n", &new_ino, &old_ino, &pid, &used) != 3 || used == 0) {
        return 0; /* not one of ours (or an older cairn's, which did not say) */
    }
    for (size_t i = 0; i < sizeof SIDE / sizeof SIDE[0]; i++) {
        which = strcmp(name + plen + used, SIDE[i]) == 0 ? SIDE[i] : which;
    }
    /* A live writer is between its renames: its files are its own. */
    if (which == NULL || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
        return 0;
    }
    snprintf(full, sizeof full, "%s/%s", dir, name);
    snprintf(side, sizeof side, "%s%s", path, which);
    there = stat(path, &st) == 0;
    if (!there && errno != ENOENT) {
        return 0; /* cannot tell which file is there: nothing is decided */
    }
    if (there && (unsigned long long)st.st_ino == old_ino && old_ino != 0) {
        /* The new file never got the name: the old database is there, and its -wal
         * holds its last commits. Back beside it, unless a file took that name since
         * (then it stays hidden rather than be lost or clobber). */
        if (renameat2(AT_FDCWD, full, AT_FDCWD, side, RENAME_NOREPLACE) == 0) {
            return 1;
        }
        if ((errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) && link(full, side) == 0) {
            unlink(full);
            return 1;
        }
        return 0;
    }
    /* The new file has the name (or the old one is gone): the old database's side
     * files would only be read into another database. */
    return unlink(full) == 0 ? 1 : 0;
}

unsigned newfileSweepReplaced(const char *path)
{
    char prefix[PATH_MAX], dir[PATH_MAX];
    const char *name;
    unsigned n = 0;
    struct dirent *e;
    DIR *d;

    if (strlen(path) >= PATH_MAX || !hiddenPrefix(path, "replaced", prefix)) {
        return 0;
    }
    name = strrchr(prefix, '/') + 1;
    /* "DIR/.BASE.replaced-": DIR, or "/" for a file at the root. */
    snprintf(dir, sizeof dir, "%.*s", name - prefix > 1 ? (int)(name - prefix - 1) : 1, prefix);
    if ((d = opendir(dir)) == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, name, strlen(name)) == 0) {
            n += sweepReplacedOne(path, dir, e->d_name, strlen(name));
        }
    }
    closedir(d);
    if (n > 0) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
    }
    return n;
}

int newfileReplaceDatabase(struct newfile *f, const char *path, char *errmsg)
{
    int rv;
    /* Named first: what can fail between the renames aside and back is the rename. */
    if ((rv = newfileName(f, errmsg)) != 0 ||
        (rv = newfileRenameDatabase(f->tmp, path, errmsg)) != 0) {
        return rv;
    }
    f->tmp[0] = '\0';
    return 0;
}

void newfileClose(struct newfile *f)
{
    if (f->tmp[0] != '\0') {
        unlink(f->tmp);
        unlinkSides(f->tmp);
        f->tmp[0] = '\0';
    }
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    f->anonymous = false;
}

static bool isSuffix(const char *s)
{
    if (strlen(s) < 6) {
        return false;
    }
    for (int i = 0; i < 6; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            return false;
        }
    }
    return true;
}

/* Call fn(full, rest, arg) for every entry of path's directory named with path's hidden
 * prefix for `what` ("DIR/.BASE.WHAT-") and a 6-character suffix: full is the entry's
 * path, rest its name from the suffix on (the suffix, then anything after it), prefix
 * the hidden prefix with its directory. The sum of what fn returns. Nothing when the
 * directory cannot be read or path is too long. */
static unsigned forHidden(const char *path, const char *what,
                          unsigned (*fn)(const char *full, const char *rest, const char *prefix))
{
    char prefix[PATH_MAX], dir[PATH_MAX], full[PATH_MAX + 16];
    const char *name;
    size_t nlen;
    unsigned n = 0;
    struct dirent *e;
    DIR *d;

    if (strlen(path) >= PATH_MAX || !hiddenPrefix(path, what, prefix)) {
        return 0;
    }
    name = strrchr(prefix, '/') + 1;
    snprintf(dir, PATH_MAX, "%.*s", (int)(name - prefix), prefix);
    if ((d = opendir(dir)) == NULL) {
        return 0;
    }
    nlen = strlen(name);
    while ((e = readdir(d)) != NULL) {
        const char *rest = e->d_name + nlen;
        if (strncmp(e->d_name, name, nlen) != 0 || !isSuffix(rest)) {
            continue;
        }
        snprintf(full, sizeof full, "%s%s", dir, e->d_name);
        n += fn(full, rest, prefix);
    }
    closedir(d);
    return n;
}

/* newfileSweep's step: a dead writer's file (unlocked), or a side file of one that is
 * gone. */
static unsigned sweepFile(const char *full, const char *rest, const char *prefix)
{
    if (rest[6] == '\0') {
        struct stat st;
        unsigned removed = 0;
        int fd = open(full, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            return 0;
        }
        /* A live writer holds its lock: leave its file alone. */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            unlink(full) == 0) {
            unlinkSides(full);
            removed = 1;
        }
        close(fd);
        return removed;
    }
    {
        char main[PATH_MAX + 16];
        struct stat st;
        bool side = false;
        for (size_t i = 0; i < sizeof SIDE / sizeof SIDE[0]; i++) {
            side = side || strcmp(rest + 6, SIDE[i]) == 0;
        }
        snprintf(main, sizeof main, "%s%.*s", prefix, 6, rest);
        if (side && lstat(main, &st) != 0 && errno == ENOENT) {
            unlink(full);
        }
    }
    return 0;
}

unsigned newfileSweep(const char *path, const char *what)
{
    return forHidden(path, what, sweepFile);
}

int newfilePwritev(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t k;
        if (iov->iov_len == 0) {
            iov++;
            n--;
            continue;
        }
        k = pwritev(fd, iov, n, (off_t)off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) {
                continue;
            }
            return k == 0 ? EIO : errno;
        }
        off += (uint64_t)k;
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (unsigned char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* Unlink every entry of the open directory fd (files: a scratch directory holds no
 * directories), leaving it empty. */
static void emptyDir(int fd)
{
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    struct dirent *e;
    if (d == NULL) {
        if (dup_fd >= 0) {
            close(dup_fd);
        }
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            unlinkat(fd, e->d_name, 0);
        }
    }
    closedir(d);
}

/* newdirSweep's step: a dead writer's directory (unlocked), emptied and removed. */
static unsigned sweepDir(const char *full, const char *rest, const char *prefix)
{
    unsigned removed = 0;
    int fd;
    (void)prefix;
    if (rest[6] != '\0') {
        return 0;
    }
    fd = open(full, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return 0; /* a file (newfileSweep's), or gone */
    }
    /* A live writer holds its lock: leave its directory alone. */
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        emptyDir(fd);
        removed = rmdir(full) == 0;
    }
    close(fd);
    return removed;
}

unsigned newdirSweep(const char *path, const char *what)
{
    return forHidden(path, what, sweepDir);
}

int newdirOpen(struct newdir *d, const char *path, const char *what, char *errmsg)
{
    char prefix[PATH_MAX];
    int err = 0;
    d->fd = -1;
    d->dir[0] = '\0';
    if (strlen(path) >= PATH_MAX || !hiddenPrefix(path, what, prefix) ||
        strlen(prefix) + 6 >= sizeof d->dir) {
        errorf(errmsg, "%s: path too long", path);
        return CAIRN_EINVAL;
    }
    newdirSweep(path, what);
    /* Between mkdtemp and the flock, another writer's sweep may take the directory for
     * a dead one's and remove it: then make another. */
    for (int attempt = 0; attempt < 8; attempt++) {
        struct stat a, b;
        snprintf(d->dir, sizeof d->dir, "%sXXXXXX", prefix);
        if (mkdtemp(d->dir) == NULL) {
            err = errno;
            errorf(errmsg, "create a scratch directory %s: %s", d->dir, strerror(err));
            d->dir[0] = '\0';
            return errorFromErrno(err);
        }
        if ((d->fd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0 &&
            flock(d->fd, LOCK_EX | LOCK_NB) == 0 && fstat(d->fd, &a) == 0 &&
            stat(d->dir, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            return 0;
        }
        err = errno != 0 ? errno : EAGAIN;
        if (d->fd >= 0) {
            close(d->fd);
            d->fd = -1;
        }
    }
    errorf(errmsg, "lock a scratch directory %s: %s", d->dir, strerror(err));
    d->dir[0] = '\0';
    return errorFromErrno(err);
}

void newdirClose(struct newdir *d)
{
    if (d->fd >= 0) {
        emptyDir(d->fd);
    }
    if (d->dir[0] != '\0') {
        rmdir(d->dir);
        d->dir[0] = '\0';
    }
    if (d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }
}
