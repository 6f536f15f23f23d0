/* Helpers that know nothing of cairn's state (lib.h). Any thread; no state. */
#define _GNU_SOURCE
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

int libPreadFull(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (got == 0) {
            return -1;
        }
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

int libPwriteFull(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) {
                continue;
            }
            return k == 0 ? EIO : errno;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

int libWriteFull(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) {
                continue;
            }
            return k == 0 ? EIO : errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int64_t libNowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t libMonoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int libSyncParentDir(const char *path, char *errmsg)
{
    char tmp[PATH_MAX];
    int fd;
    int rv = 0;
    snprintf(tmp, sizeof tmp, "%s", path);
    fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) {
        errorf(errmsg, "fsync of the directory of %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}
