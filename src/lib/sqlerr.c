/* SQLite result codes as cairn's (sqlerr.h). Any thread; no state. */
#include "sqlerr.h"

#include <stdarg.h>
#include <stdio.h>

#include "error.h"

int sqlerrCode(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOMEM:
        return CAIRN_ENOMEM;
    case SQLITE_FULL:
        return CAIRN_ENOSPC;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return CAIRN_ECORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return CAIRN_EBUSY;
    default:
        return CAIRN_EIO;
    }
}

const char *sqlerrMessage(sqlite3 *db, int rc)
{
    return db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
}

int sqlerrf(sqlite3 *db, int rc, char *errmsg, const char *fmt, ...)
{
    char what[CAIRN_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    errorf(errmsg, "%s: %s", what, sqlerrMessage(db, rc));
    return sqlerrCode(rc);
}
