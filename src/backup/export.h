/* Exports: a copy of cairn's database handed to a user (GET /db/backup, `cairn restore
 * --out`) holds the user's schema only. cairn keeps its own state in the database file
 * (the table _cairn_meta: the applied Raft index, the node directory), where it must
 * stay for the server's own copies (Raft snapshots, backups, heals and repairs from a
 * peer); an export leaves it out. Any thread. */
#ifndef CAIRN_EXPORT_H
#define CAIRN_EXPORT_H

#include <stdbool.h>

/* The name of cairn's own table in its database. */
#define EXPORT_INTERNAL_TABLE "_cairn_meta"

/* Remove cairn's own table from the SQLite file at path, a copy made for a user (never
 * the live database): DROP TABLE with secure_delete, through the page-checksum VFS so
 * that a file with page checksums keeps them right, in a rollback-journal transaction
 * (a crash leaves the file as it was). *removed (may be NULL) says whether there was
 * one; a file without it is not written. On failure errmsg names the file. */
int exportStripInternal(const char *path, bool *removed, char *errmsg);

#endif
