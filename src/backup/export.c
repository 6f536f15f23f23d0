/* Exports without cairn's internal table (see export.h). Any thread. */
#include "export.h"

#include <sqlite3.h>
#include <stdio.h>

#include "error.h"
#include "pagesum.h"
#include "sqlerr.h"

int exportStripInternal(const char *path, bool *removed, char *errmsg)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool found = false;
    int rc;
    int rv = 0;

    if (removed != NULL) {
        *removed = false;
    }
    pagesumRegister();
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_prepare_v2(db,
                                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '" EXPORT_INTERNAL_TABLE "'",
                                -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        found = rc == SQLITE_ROW;
        rc = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK && found) {
        rc = sqlite3_exec(db,
                          "PRAGMA secure_delete = ON; BEGIN IMMEDIATE; "
                          "DROP TABLE " EXPORT_INTERNAL_TABLE "; COMMIT",
                          NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        rv = sqlerrf(db, rc, errmsg, "leave cairn's table %s out of %s", EXPORT_INTERNAL_TABLE,
                     path);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    } else if (removed != NULL) {
        *removed = found;
    }
    if (sqlite3_close(db) != SQLITE_OK && rv == 0) {
        errorf(errmsg, "close %s: %s", path, sqlite3_errmsg(db));
        rv = CAIRN_EIO;
    }
    return rv;
}
