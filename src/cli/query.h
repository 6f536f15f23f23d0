/* Running SQL through cairnd's unified endpoint, POST /db/request, for the cairn command.
 *
 * Shared by `cairn sql` and the shell: both send a JSON array of statements, then print
 * each result in order (a table for a query, "N rows affected" for a write, "error: ..."
 * on stderr for a refused statement). Main thread only. */
#ifndef CAIRN_CLI_QUERY_H
#define CAIRN_CLI_QUERY_H

#include <stdio.h>

#include <jansson.h>

#include "http.h"
#include "table.h"

typedef struct cliQueryOptions {
    cliMode mode;
    int raw;           /* print the server's response body verbatim instead of tables */
    int timer;         /* print "Run Time: N s" (the server's figure) after the results */
    int changes;       /* print "N rows affected" for writes */
    const char *level; /* consistency level for reads; NULL for the server's default */
    const char *branch; /* read this branch (POST /db/query?branch=) instead; or NULL */
    const char *where; /* put after "error: " in messages (e.g. "near line 3: "); or NULL */
} cliQueryOptions;

/* Sends statements (borrowed; a JSON array whose items are "SQL" or ["SQL", params...])
 * as one request and prints the outcome: results to out, errors to err.
 * Returns 0 when every statement succeeded; CLI_ERR_SQL when the server refused the
 * request or any statement (the messages are already printed); CLI_ERR_NET,
 * CLI_ERR_INTERRUPT, CLI_ERR_PROTO or CLI_ERR_NOMEM with errmsg set and not printed. */
int cliQueryRun(cliHttp *http, const json_t *statements, const cliQueryOptions *opts, FILE *out,
                FILE *err, char *errmsg, size_t errmsgSize);

/* Sends statements (borrowed) and returns the parsed response in *response (a new
 * reference the caller releases with json_decref) without printing anything. Returns 0;
 * CLI_ERR_SQL with the server's message in errmsg when the request as a whole was
 * refused (errors of single statements stay inside *response); or the codes of
 * cliQueryRun. *response is NULL on failure. */
int cliQueryFetch(cliHttp *http, const json_t *statements, const char *level, json_t **response,
                  char *errmsg, size_t errmsgSize);

/* Parses h->body after a request and checks its status: returns 0 with a new reference
 * in *doc for a 2xx JSON body; CLI_ERR_SQL with the body's "error" message in errmsg for
 * a 4xx/5xx; CLI_ERR_PROTO for a body that is not JSON. *doc is NULL on failure. Used for
 * every endpoint, not only /db/request. */
int cliQueryParseResponse(cliHttp *h, json_t **doc, char *errmsg, size_t errmsgSize);

#endif
