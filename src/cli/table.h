/* Formatting of query results for the cairn command: bordered tables, CSV and JSON rows.
 *
 * Input is one result object of cairnd's HTTP API ({"columns":[...], "types":[...],
 * "values":[[...], ...]}), as parsed by jansson. Main thread only. */
#ifndef CAIRN_CLI_TABLE_H
#define CAIRN_CLI_TABLE_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

typedef enum cliMode {
    CLI_MODE_TABLE, /* +----+ bordered, aligned for a terminal */
    CLI_MODE_CSV,   /* RFC 4180 quoting, header line first */
    CLI_MODE_JSON,  /* an array of one object per row, keys in column order */
} cliMode;

/* Looks up a mode by name ("table", "csv", "json"). Returns 0, or CLI_ERR_USAGE. */
int cliModeParse(const char *name, cliMode *mode);
const char *cliModeName(cliMode mode);

/* Prints result (borrowed) to out in the given mode. A result without "columns" prints
 * nothing. Returns 0, CLI_ERR_PROTO when result is not shaped like a query result, or
 * CLI_ERR_NOMEM; errmsg says which. */
int cliTablePrint(FILE *out, const json_t *result, cliMode mode, char *errmsg, size_t errmsgSize);

/* Terminal columns taken by the UTF-8 text s[0..len): code points, not bytes, with East
 * Asian wide characters counting 2 and combining marks 0. Invalid bytes count 1 each. */
size_t cliDisplayWidth(const char *s, size_t len);

/* Writes v (borrowed) as text the way a table cell shows it: NULL for null, integers as
 * decimal, reals in the shortest form that reads back the same, strings as is, anything
 * else as compact JSON. Returns a malloc'd string the caller frees, NULL when out of
 * memory. */
char *cliValueText(const json_t *v);

#endif
