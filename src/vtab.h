/* cairn_backups: the catalog of the server's backup repositories as an eponymous
 * read-only virtual table, so that `SELECT * FROM cairn_backups` works wherever a
 * query does. Registered on reader connections only: the writer applies the log,
 * and a write that read the local catalog would not be deterministic across nodes.
 * Any thread (per connection). */
#ifndef CAIRN_VTAB_H
#define CAIRN_VTAB_H

#include <sqlite3.h>

struct reposet;

/* Register cairn_backups on db, listing every repository of repos, which must outlive
 * db. SQLite result code. */
int vtabRegister(sqlite3 *db, const struct reposet *repos);

#endif
