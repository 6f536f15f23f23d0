/* Error codes of the cairn library.
 *
 * Every function of the library returns 0 on success or one of these codes; the
 * object that failed keeps a human message (errmsg) saying what failed and where.
 * The table is an X-macro so that each code's name and message live in one place.
 * Any thread. */
#ifndef CAIRN_ERROR_H
#define CAIRN_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include "cairn.h"

/* Static message for a code; never NULL. */
const char *errorString(int rc);

/* Name of a code ("CAIRN_EIO"); never NULL. */
const char *errorName(int rc);

/* Size of every errmsg buffer in the library. */
#define CAIRN_ERRMSG_SIZE 512

/* printf into an errmsg buffer of CAIRN_ERRMSG_SIZE bytes. */
void errorf(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, added after what errmsg already says (cut at CAIRN_ERRMSG_SIZE). */
void errorAppendf(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Format one line and hand it to a log callback (fn(arg, line)); nothing when fn is
 * NULL. The loggers of the node, the FSM, the server and repair all go through it. */
void logLinev(void (*fn)(void *arg, const char *line), void *arg, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Translate an errno value to a cairn code. */
int errorFromErrno(int err);

#endif
