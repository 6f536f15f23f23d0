/* Sends statements to POST /db/request and prints the results (see query.h).
 *
 * ?timings is always asked for, so the shell's .timer can be switched on without
 * changing the request. Results are printed to stdout and errors to stderr in request
 * order; stdout is flushed before each error so a terminal shows them interleaved
 * correctly. Main thread only. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "query.h"

int cliQueryParseResponse(cliHttp *h, json_t **doc, char *errmsg, size_t errmsgSize)
{
    json_error_t jerr;
    json_t *d;

    *doc = NULL;
    /* A text value may hold NUL bytes (char(0)): cairnd sends them as \u0000. */
    d = json_loadb(h->body.data, h->body.len, JSON_ALLOW_NUL, &jerr);
    if (h->status < 200 || h->status >= 300) {
        const char *msg = json_string_value(json_object_get(d, "error"));
        if (msg != NULL) {
            snprintf(errmsg, errmsgSize, "%s", msg);
        } else {
            /* Not our JSON error shape: show the start of whatever came back. */
            size_t n = strcspn(h->body.data, "\r\n");
            snprintf(errmsg, errmsgSize, "cairnd answered HTTP %ld%s%.*s", h->status,
                     n > 0 ? ": " : "", (int)(n > 200 ? 200 : n), h->body.data);
        }
        json_decref(d);
        return CLI_ERR_SQL;
    }
    if (d == NULL) {
        snprintf(errmsg, errmsgSize, "cairnd sent a response that is not JSON: %s (line %d)",
                 jerr.text, jerr.line);
        return CLI_ERR_PROTO;
    }
    *doc = d;
    return 0;
}

/* Builds the request path and sends the statements. */
static int postStatements(cliHttp *http, const json_t *statements, const char *level,
                          const char *branch, char *errmsg, size_t errmsgSize)
{
    char path[256];
    char *body;
    int rc;

    if (branch != NULL) {
        /* Branch names are letters, digits, '_' and '-' (the server refuses others),
         * so they go into the URL as they are; a branch is read-only: /db/query. */
        if (strspn(branch, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                strlen(branch) ||
            branch[0] == '\0' || strlen(branch) > 64) {
            snprintf(errmsg, errmsgSize,
                     "invalid branch name '%s': use 1-64 letters, digits, '_' and '-'", branch);
            return CLI_ERR_USAGE;
        }
        snprintf(path, sizeof path, "/db/query?timings&branch=%s", branch);
    } else {
        snprintf(path, sizeof path, "/db/request?timings%s%s", level != NULL ? "&level=" : "",
                 level != NULL ? level : "");
    }
    body = json_dumps(statements, JSON_COMPACT);
    if (body == NULL) {
        snprintf(errmsg, errmsgSize, "out of memory encoding the request");
        return CLI_ERR_NOMEM;
    }
    rc = cliHttpPost(http, path, body, strlen(body));
    free(body);
    if (rc != 0) {
        snprintf(errmsg, errmsgSize, "%s", http->errmsg);
    }
    return rc;
}

int cliQueryFetch(cliHttp *http, const json_t *statements, const char *level, json_t **response,
                  char *errmsg, size_t errmsgSize)
{
    int rc;
    *response = NULL;
    rc = postStatements(http, statements, level, NULL, errmsg, errmsgSize);
    if (rc != 0) {
        return rc;
    }
    return cliQueryParseResponse(http, response, errmsg, errmsgSize);
}

static void printError(FILE *out, FILE *err, const cliQueryOptions *opts, const char *msg)
{
    fflush(out);
    fprintf(err, "error: %s%s\n", opts->where != NULL ? opts->where : "", msg);
    fflush(err);
}

/* The server's own figure for the whole request; the sum of the statements' figures
 * when the top-level one is missing. Returns -1 when there is none at all. */
static double serverTime(const json_t *doc)
{
    const json_t *t = json_object_get(doc, "time");
    const json_t *results = json_object_get(doc, "results");
    double sum = 0;
    int found = 0;
    if (json_is_number(t)) {
        return json_number_value(t);
    }
    for (size_t i = 0; i < json_array_size(results); i++) {
        t = json_object_get(json_array_get(results, i), "time");
        if (json_is_number(t)) {
            sum += json_number_value(t);
            found = 1;
        }
    }
    return found ? sum : -1;
}

int cliQueryRun(cliHttp *http, const json_t *statements, const cliQueryOptions *opts, FILE *out,
                FILE *err, char *errmsg, size_t errmsgSize)
{
    json_t *doc = NULL;
    const json_t *results;
    const char *topError;
    int failed = 0;
    int rc;

    rc = postStatements(http, statements, opts->level, opts->branch, errmsg, errmsgSize);
    if (rc != 0) {
        return rc;
    }
    if (opts->raw) {
        /* --json is for scripts: the server's document exactly, whatever it says. */
        fwrite(http->body.data, 1, http->body.len, out);
        if (http->body.len == 0 || http->body.data[http->body.len - 1] != '\n') {
            fputc('\n', out);
        }
    }
    rc = cliQueryParseResponse(http, &doc, errmsg, errmsgSize);
    if (rc == CLI_ERR_SQL) {
        printError(out, err, opts, errmsg);
        return CLI_ERR_SQL;
    }
    if (rc != 0) {
        return rc;
    }

    results = json_object_get(doc, "results");
    topError = json_string_value(json_object_get(doc, "error"));
    if (topError != NULL) {
        printError(out, err, opts, topError);
        failed = 1;
    }
    if (results != NULL && !json_is_array(results)) {
        snprintf(errmsg, errmsgSize, "cairnd's response has no results array");
        rc = CLI_ERR_PROTO;
        goto cleanup;
    }
    for (size_t i = 0; i < json_array_size(results); i++) {
        const json_t *res = json_array_get(results, i);
        const char *msg = json_string_value(json_object_get(res, "error"));
        const json_t *affected = json_object_get(res, "rows_affected");

        if (msg != NULL) {
            printError(out, err, opts, msg);
            failed = 1;
            continue;
        }
        if (opts->raw) {
            continue;
        }
        if (json_object_get(res, "columns") != NULL) {
            rc = cliTablePrint(out, res, opts->mode, errmsg, errmsgSize);
            if (rc != 0) {
                goto cleanup;
            }
        } else if (opts->changes && json_is_integer(affected) &&
                   json_integer_value(affected) >= 0) {
            json_int_t n = json_integer_value(affected);
            fprintf(out, "%" JSON_INTEGER_FORMAT " row%s affected\n", n, n == 1 ? "" : "s");
        }
    }
    if (opts->timer && !opts->raw) {
        double t = serverTime(doc);
        if (t >= 0) {
            fprintf(out, "Run Time: %.6f s\n", t);
        }
    }
    rc = failed ? CLI_ERR_SQL : 0;

cleanup:
    fflush(out);
    json_decref(doc);
    return rc;
}
