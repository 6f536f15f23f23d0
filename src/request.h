/* Parsing of rqlite-style JSON request bodies into a batch of statements.
 *
 * Accepted forms, as rqlite defines them: a JSON array whose elements are each
 *   "SQL"                             a statement without parameters
 *   ["SQL", p1, p2, ...]              positional parameters
 *   ["SQL", {"name": v, ...}]         named parameters (:name, @name or $name in SQL)
 * Parameter values: integer, real, string, true/false (1/0) and null; and, as rqlite
 * binds them, BLOBs: an array of integers 0 to 255 ([83, 81, 76]) or a string in
 * SQLite's blob-literal form ("x'53514C'"). Any other array refuses the request.
 * HTTP threads. */
#ifndef CAIRN_REQUEST_H
#define CAIRN_REQUEST_H

#include <stddef.h>

#include "command.h"

/* Parse body[0..len) into b (kind and flags are left for the caller). The batch
 * points into the parsed JSON, which it owns (freed by batchFree). On failure
 * returns CAIRN_EINVAL with errmsg saying what and where (statement and parameter
 * numbers are 1-based), and b is empty. */
int requestParse(const char *body, size_t len, struct batch *b, char *errmsg);

/* A batch of one statement without parameters; sql is copied. */
int requestSingle(const char *sql, struct batch *b, char *errmsg);

#endif
