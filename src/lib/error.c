/* Error code table and errmsg helpers (see error.h). Any thread. */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *errorString(int rc)
{
    switch (rc) {
#define X(name, value, msg)                                                              \
    case value:                                                                          \
        return msg;
        CAIRN_ERRORS(X)
#undef X
    }
    return "unknown error";
}

const char *errorName(int rc)
{
    switch (rc) {
#define X(name, value, msg)                                                              \
    case value:                                                                          \
        return #name;
        CAIRN_ERRORS(X)
#undef X
    }
    return "CAIRN_UNKNOWN";
}

void logLinev(void (*fn)(void *arg, const char *line), void *arg, const char *fmt, va_list ap)
{
    char line[2048];
    if (fn == NULL) {
        return;
    }
    vsnprintf(line, sizeof line, fmt, ap);
    fn(arg, line);
}

void errorf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    if (errmsg == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(errmsg, CAIRN_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void errorAppendf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    size_t len;
    if (errmsg == NULL) {
        return;
    }
    len = strnlen(errmsg, CAIRN_ERRMSG_SIZE - 1);
    va_start(ap, fmt);
    vsnprintf(errmsg + len, CAIRN_ERRMSG_SIZE - len, fmt, ap);
    va_end(ap);
}

int errorFromErrno(int err)
{
    switch (err) {
        case ENOMEM:
            return CAIRN_ENOMEM;
        case ENOSPC:
        case EDQUOT:
            return CAIRN_ENOSPC;
        case ENOENT:
            return CAIRN_ENOTFOUND;
        case EINVAL:
            return CAIRN_EINVAL;
        case EBUSY:
        case EWOULDBLOCK:
            return CAIRN_EBUSY;
        default:
            return CAIRN_EIO;
    }
}
