/* DATA/LOCK (see lock.h). Any thread. */
#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "error.h"

int lockAcquire(const char *dir, int *fd, char *errmsg)
{
    char path[PATH_MAX];
    char pid[32];
    ssize_t n;
    int f;

    *fd = -1;
    snprintf(path, sizeof path, "%s/LOCK", dir);
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
        errorf(errmsg, "cannot open lock file %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK) {
            n = pread(f, pid, sizeof pid - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            errorf(errmsg, "data directory %s is in use by another cairn process (pid %s)",
                   dir, pid[0] ? pid : "unknown");
            close(f);
            return CAIRN_ELOCKED;
        }
        errorf(errmsg, "cannot lock %s: %s", path, strerror(err));
        close(f);
        return errorFromErrno(err);
    }
    n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        errorf(errmsg, "cannot write lock file %s: %s", path, strerror(errno));
        close(f);
        return errorFromErrno(errno);
    }
    *fd = f;
    return 0;
}

void lockRelease(int fd)
{
    if (fd >= 0) {
        close(fd); /* closing the descriptor releases the flock */
    }
}
