/* The one translation of SQLite's result codes into cairn's (CONVENTIONS.md: SQLITE_*
 * codes are translated at the boundary): which CAIRN_E* code a failure of SQLite is,
 * and its message. Callers with a reason of their own (a page that failed its
 * checksum, a snapshot's lock that was held too long) say so first and fall back on
 * these.
 *
 * Any thread; no state. */
#ifndef CAIRN_SQLERR_H
#define CAIRN_SQLERR_H

#include <sqlite3.h>

/* The cairn code of the failure rc, a SQLite result code, primary or extended:
 * CAIRN_ENOMEM for SQLITE_NOMEM; CAIRN_ENOSPC for SQLITE_FULL; CAIRN_ECORRUPT for
 * SQLITE_CORRUPT and SQLITE_NOTADB; CAIRN_EBUSY for SQLITE_BUSY and SQLITE_LOCKED;
 * CAIRN_EIO for anything else. Never 0: rc is what a call that failed gave, and
 * SQLITE_OK, SQLITE_ROW or SQLITE_DONE where the caller needed another answer (a
 * statement that prepared but gave no row) is a failure too, CAIRN_EIO. */
int sqlerrCode(int rc);

/* SQLite's words for the failure rc: the connection's message when there is a
 * connection (db may be NULL, as sqlite3_open_v2 leaves it when out of memory), else
 * the code's. Valid until the next call on db. */
const char *sqlerrMessage(sqlite3 *db, int rc);

/* Write "<fmt ...>: <sqlerrMessage>" into errmsg (CAIRN_ERRMSG_SIZE) and return
 * sqlerrCode(rc). */
int sqlerrf(sqlite3 *db, int rc, char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
