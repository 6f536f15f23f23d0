/* Helpers that know nothing of cairn's state (lib.h). Any thread; no state. */
#define _GNU_SOURCE
#include "lib.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
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

int64_t libMonoUs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void libIso8601(int64_t ms, enum lib_iso8601_style style, char out[LIB_ISO8601_SIZE])
{
    /* Rounded down, also before 1970; written so that no step overflows at INT64_MIN. */
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms + 1) / 1000 - 1);
    int frac = (int)(ms % 1000);
    long long year;
    struct tm tm;
    if (frac < 0) {
        frac += 1000;
    }
    if (gmtime_r(&t, &tm) == NULL) {
        memset(&tm, 0, sizeof tm);
        tm.tm_year = 70;
        tm.tm_mday = 1;
        frac = 0;
    }
    year = (long long)tm.tm_year + 1900;
    switch (style) {
    case LIB_ISO8601_SECONDS:
        snprintf(out, LIB_ISO8601_SIZE, "%04lld-%02d-%02dT%02d:%02d:%02dZ", year, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        break;
    case LIB_ISO8601_BASIC:
        snprintf(out, LIB_ISO8601_SIZE, "%04lld%02d%02dT%02d%02d%02dZ", year, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        break;
    case LIB_ISO8601_BASIC_MS:
        snprintf(out, LIB_ISO8601_SIZE, "%04lld%02d%02dT%02d%02d%02d%03dZ", year, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        break;
    case LIB_ISO8601_MS:
    default:
        snprintf(out, LIB_ISO8601_SIZE, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", year,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        break;
    }
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

int libRenameDurable(const char *from, const char *to, char *errmsg)
{
    if (rename(from, to) != 0) {
        int err = errno;
        errorf(errmsg, "rename %s to %s: %s", from, to, strerror(err));
        return errorFromErrno(err);
    }
    return libSyncParentDir(to, errmsg);
}

int libWriteFileAtomic(const char *path, const void *data, size_t len, unsigned flags, char *errmsg)
{
    char tmp[PATH_MAX];
    int fd, n, err;

    if (flags & LIB_ATOMIC_UNIQUE) {
        /* Hidden, so that a listing of names that start like path's does not show it. */
        const char *slash = strrchr(path, '/');
        int dlen = slash != NULL ? (int)(slash - path + 1) : 0;
        n = snprintf(tmp, sizeof tmp, "%.*s.%s.XXXXXX", dlen, path, path + dlen);
    } else {
        n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    }
    if (n < 0 || (size_t)n >= sizeof tmp) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    if (flags & LIB_ATOMIC_UNIQUE) {
        fd = mkostemp(tmp, O_CLOEXEC);
        /* mkostemp's 0600 is for scratch files; these are read by others as any file. */
        if (fd >= 0 && fchmod(fd, 0644) != 0) {
            err = errno;
            close(fd);
            unlink(tmp);
            errorf(errmsg, "write %s: %s", tmp, strerror(err));
            return errorFromErrno(err);
        }
    } else {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        err = errno;
        errorf(errmsg, "create %s: %s", tmp, strerror(err));
        return errorFromErrno(err);
    }
    err = libWriteFull(fd, data, len);
    if (err == 0 && fsync(fd) != 0) {
        err = errno;
    }
    if (close(fd) != 0 && err == 0 && errno != EINTR) {
        err = errno;
    }
    if (err != 0) {
        unlink(tmp);
        errorf(errmsg, "write %s: %s", tmp, strerror(err));
        return errorFromErrno(err);
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        errorf(errmsg, "rename %s to %s: %s", tmp, path, strerror(err));
        return errorFromErrno(err);
    }
    return libSyncParentDir(path, errmsg);
}

/* n decimal digits at s (no sign, no space) as *v; false when any is not a digit. */
static bool digitsAt(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

static int daysInMonth(int y, int mo)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return mo == 2 && leap ? 29 : days[mo - 1];
}

int libParseIso8601(const char *s, int64_t *ms)
{
    struct tm tm;
    int y, mo, d, h, mi, sec;
    int64_t frac = 0, scale = 1000;
    /* YYYY-MM-DDTHH:MM:SS, every field its exact number of digits and in its range (a
     * 2026-02-30 is refused, not read as March 2nd). */
    if (!digitsAt(s, 4, &y) || s[4] != '-' || !digitsAt(s + 5, 2, &mo) || s[7] != '-' ||
        !digitsAt(s + 8, 2, &d) || (s[10] != 'T' && s[10] != ' ') || !digitsAt(s + 11, 2, &h) ||
        s[13] != ':' || !digitsAt(s + 14, 2, &mi) || s[16] != ':' || !digitsAt(s + 17, 2, &sec)) {
        return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 59) {
        return -1;
    }
    s += 19;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s)) {
            return -1;
        }
        while (isdigit((unsigned char)*s)) {
            if (scale > 1) {
                scale /= 10;
                frac += (*s - '0') * scale;
            }
            s++;
        }
    }
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    int64_t t = (int64_t)timegm(&tm) * 1000 + frac;
    if (*s == 'Z' && s[1] == '\0') {
        *ms = t;
        return 0;
    }
    int oh, om;
    if ((*s == '+' || *s == '-') && digitsAt(s + 1, 2, &oh) && s[3] == ':' &&
        digitsAt(s + 4, 2, &om) && s[6] == '\0' && oh <= 23 && om <= 59) {
        int64_t off = ((int64_t)oh * 60 + om) * 60000;
        *ms = *s == '+' ? t - off : t + off;
        return 0;
    }
    return -1;
}

void libHexEncode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexValue(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int libHexDecode(const char *hex, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexValue((unsigned char)hex[2 * i]);
        int lo = hi < 0 ? -1 : hexValue((unsigned char)hex[2 * i + 1]);
        if (lo < 0) {
            return -1;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return hex[2 * n] == '\0' ? 0 : -1;
}

int libIsZero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) {
            return 0;
        }
    }
    return 1;
}

int libReadIdFile(const char *path, unsigned char *out, size_t n, bool *kept, char *errmsg)
{
    char text[2 * 64 + 2];
    size_t got;
    FILE *f;
    assert(n > 0 && n <= 64);
    *kept = false;
    if ((f = fopen(path, "r")) == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        errorf(errmsg, "%s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    /* One byte more than a good file has: a longer file is refused, not cut. */
    got = fread(text, 1, 2 * n + 2, f);
    if (ferror(f)) {
        int e = errno != 0 ? errno : EIO;
        fclose(f);
        errorf(errmsg, "%s: %s", path, strerror(e));
        return errorFromErrno(e);
    }
    fclose(f);
    if (got != 2 * n + 1 || text[2 * n] != '\n' ||
        (text[2 * n] = '\0', libHexDecode(text, out, n)) != 0 || libIsZero(out, n)) {
        errorf(errmsg, "%s is damaged: it must hold %zu hex digits and a newline, not all zero",
               path, 2 * n);
        return CAIRN_ECORRUPT;
    }
    *kept = true;
    return 0;
}

void libRandomId(unsigned char *out, size_t n)
{
    if (n > 0 && getrandom(out, n, 0) != (ssize_t)n) {
        /* No entropy source: the clock and the process, mixed (splitmix64). */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec +
                     ((uint64_t)getpid() << 32);
        for (size_t i = 0; i < n; i++) {
            uint64_t z = (x += 0x9e3779b97f4a7c15u);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
            out[i] = (unsigned char)(z ^ (z >> 31));
        }
    }
    if (n > 0 && libIsZero(out, n)) {
        out[0] = 1;
    }
}
