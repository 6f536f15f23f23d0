/* DATA/LOCK and DATA itself (see lock.h). Any thread. */
#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "error.h"

/* Locks this process holds. */
static atomic_int heldHere;

/* The holder's pid as LOCK says it, or "unknown". */
static void holderPid(int f, char *pid, size_t n)
{
    ssize_t got = f >= 0 ? pread(f, pid, n - 1, 0) : -1;
    pid[got > 0 ? got : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    if (pid[0] == '\0') {
        snprintf(pid, n, "unknown");
    }
}

int lockAcquire(const char *dir, struct dirlock *l, char *errmsg)
{
    char path[PATH_MAX];
    char pid[32];
    ssize_t n;
    int f;
    int d;

    *l = DIRLOCK_NONE;
    snprintf(path, sizeof path, "%s/LOCK", dir);
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
        errorf(errmsg, "cannot open lock file %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK) {
            holderPid(f, pid, sizeof pid);
            if (atomic_load(&heldHere) > 0 && atol(pid) == (long)getpid()) {
                /* An embedding program's second cairn_open of one directory: "another
                 * process" would send its author looking for one. (The pid alone could
                 * be another PID namespace's, hence the count too.) */
                errorf(errmsg, "data directory %s is in use: this process has it open already",
                       dir);
            } else {
                errorf(errmsg, "data directory %s is in use by another cairn process (pid %s)",
                       dir, pid);
            }
            close(f);
            return CAIRN_ELOCKED;
        }
        errorf(errmsg, "cannot lock %s: %s", path, strerror(err));
        close(f);
        return errorFromErrno(err);
    }
    d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0 || flock(d, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (d >= 0 && err == EWOULDBLOCK) {
            /* Its LOCK was removed (the one locked above is a new file): the RUNNING
             * mark, removed only by a clean stop, still holds its pid. */
            char mark[PATH_MAX];
            int m;
            snprintf(mark, sizeof mark, "%s/RUNNING", dir);
            m = open(mark, O_RDONLY | O_CLOEXEC);
            holderPid(m, pid, sizeof pid);
            if (m >= 0) {
                close(m);
            }
            errorf(errmsg,
                   "data directory %s is in use by another cairn process (pid %s; its lock "
                   "file %s was removed while it runs)",
                   dir, pid, path);
            close(d);
            close(f);
            return CAIRN_ELOCKED;
        }
        /* A file system that cannot lock a directory (some network ones refuse an
         * exclusive flock on a descriptor not open for writing): LOCK alone, as before
         * the directory was locked. */
        if (d >= 0) {
            close(d);
        }
        d = -1;
    }
    n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        errorf(errmsg, "cannot write lock file %s: %s", path, strerror(errno));
        close(d);
        close(f);
        return errorFromErrno(errno);
    }
    l->file = f;
    l->dir = d;
    atomic_fetch_add(&heldHere, 1);
    return 0;
}

void lockRelease(struct dirlock *l)
{
    /* Closing the descriptors releases the flocks. */
    if (l->dir >= 0) {
        close(l->dir);
    }
    if (l->file >= 0) {
        close(l->file);
        atomic_fetch_sub(&heldHere, 1);
    }
    *l = DIRLOCK_NONE;
}
