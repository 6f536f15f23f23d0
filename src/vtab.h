/* cairn_backups: the catalog of the server's backup repository as an eponymous
 * read-only virtual table, so that `SELECT * FROM cairn_backups` works wherever a
 * query does. Registered on reader connections only: the writer applies the log,
 * and a write that read the local catalog would not be deterministic across nodes.
 * Any thread (per connection). */
#ifndef CAIRN_VTAB_H
#define CAIRN_VTAB_H

#include <sqlite3.h>

/* Register cairn_backups on db, listing repo (copied). SQLite result code. */
int vtabRegister(sqlite3 *db, const char *repo);

#endif
