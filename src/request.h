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

/* The most statements one request takes. Every statement costs memory at each stage,
 * whatever its text: its struct stmt, its encoding in the log entry, its result (a
 * struct rstmt, its column names and types) and its JSON. Without a bound, a 55 MB body
 * of 5,000,000 "SELECT 1" took 3.2 GB; 100,000 statements take a few tens of MB. A bulk
 * insert of 100,000 rows, one statement each, is within; more rows go in several
 * requests, or in fewer statements of several rows each. */
#define REQUEST_STATEMENTS_MAX 100000

/* Parse body[0..len) into b (kind and flags are left for the caller). The batch
 * points into the parsed JSON, which it owns (freed by batchFree). On failure
 * returns CAIRN_EINVAL with errmsg saying what and where (statement and parameter
 * numbers are 1-based), and b is empty: a body of more than REQUEST_STATEMENTS_MAX
 * statements is refused so. */
int requestParse(const char *body, size_t len, struct batch *b, char *errmsg);

/* A batch of one statement without parameters; sql is copied. */
int requestSingle(const char *sql, struct batch *b, char *errmsg);

#endif
