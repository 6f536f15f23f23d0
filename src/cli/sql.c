/* `cairn sql`: runs the statements given as arguments, non-interactively, for scripts.
 *
 * All the arguments go in one POST /db/request, so --json prints exactly one document
 * (the server's), and the statements run in the order given. Exit status 1 when any
 * statement fails or cairnd cannot be reached, 2 for a bad command line. Main thread. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "http.h"
#include "query.h"

static const cliOption sqlOptions[] = {
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the server's JSON response verbatim, as one document"},
    {"level", 0, "LEVEL", "read consistency: " CLI_LEVELS},
    {"branch", 0, "NAME", "read branch NAME (restored with RESTORE ... TO BRANCH) instead of "
                          "the live database"},
    {"mode", 0, "MODE", "how to print rows: table (default), csv or json"},
    {"timer", 0, NULL, "print the server's run time after the results"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

/* Turns one argument into a statement of the request: plain SQL becomes a JSON string;
 * an argument starting with '[' is taken as the API's parameterised form, ["SQL", args]
 * (SQL text never starts with '['). Returns a new reference, or NULL with errmsg set. */
static json_t *statementFromArg(const char *arg, char *errmsg, size_t errmsgSize)
{
    const char *p = arg + strspn(arg, " \t\r\n");
    json_error_t jerr;
    json_t *stmt;

    if (*p != '[') {
        stmt = json_string(arg);
        if (stmt == NULL) {
            snprintf(errmsg, errmsgSize, "statement is not valid UTF-8: %.60s", arg);
        }
        return stmt;
    }
    stmt = json_loads(p, 0, &jerr);
    if (stmt == NULL) {
        snprintf(errmsg, errmsgSize, "parameterised statement is not valid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_array(stmt) || !json_is_string(json_array_get(stmt, 0))) {
        snprintf(errmsg, errmsgSize,
                 "parameterised statement must be a JSON array [\"SQL\", params...]");
        json_decref(stmt);
        return NULL;
    }
    return stmt;
}

static int runSql(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[sizeof sqlOptions / sizeof sqlOptions[0]];
    const char *host = env->host;
    char errmsg[CLI_ERRMSG_SIZE];
    cliQueryOptions qopts = {0};
    cliHttp http = {0};
    json_t *statements = NULL;
    int npos;
    int exitCode = CLI_EXIT_OK;
    int rc;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &exitCode)) {
        return exitCode;
    }
    if (values[cliOptionIndex(sqlOptions, "host")] != NULL) {
        host = values[cliOptionIndex(sqlOptions, "host")];
    }
    qopts.raw = values[cliOptionIndex(sqlOptions, "json")] != NULL;
    qopts.timer = values[cliOptionIndex(sqlOptions, "timer")] != NULL;
    qopts.changes = 1;
    qopts.level = values[cliOptionIndex(sqlOptions, "level")];
    qopts.branch = values[cliOptionIndex(sqlOptions, "branch")];
    qopts.mode = CLI_MODE_TABLE;
    if (qopts.level != NULL && !cliLevelIsValid(qopts.level)) {
        snprintf(errmsg, sizeof errmsg,
                 "invalid level '%s': expected " CLI_LEVELS, qopts.level);
        goto usage;
    }
    if (values[cliOptionIndex(sqlOptions, "mode")] != NULL &&
        cliModeParse(values[cliOptionIndex(sqlOptions, "mode")], &qopts.mode) != 0) {
        snprintf(errmsg, sizeof errmsg, "invalid mode '%s': expected table, csv or json",
                 values[cliOptionIndex(sqlOptions, "mode")]);
        goto usage;
    }
    if (npos == 0) {
        snprintf(errmsg, sizeof errmsg, "no SQL statement given");
        goto usage;
    }

    statements = json_array();
    if (statements == NULL) {
        goto nomem;
    }
    for (int i = 1; i <= npos; i++) {
        json_t *stmt = statementFromArg(argv[i], errmsg, sizeof errmsg);
        if (stmt == NULL) {
            goto usage;
        }
        if (json_array_append_new(statements, stmt) != 0) {
            goto nomem;
        }
    }

    rc = cliHttpInit(&http, host);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", http.errmsg);
        exitCode = rc == CLI_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto cleanup;
    }
    rc = cliQueryRun(&http, statements, &qopts, stdout, stderr, errmsg, sizeof errmsg);
    if (rc != 0 && rc != CLI_ERR_SQL) {
        fprintf(stderr, "error: %s\n", errmsg);
    }
    exitCode = rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    goto cleanup;

usage:
    fprintf(stderr, "cairn sql: error: %s\n\n", errmsg);
    cliPrintCommandUsage(stderr, cmd);
    exitCode = CLI_EXIT_USAGE;
    goto cleanup;

nomem:
    fprintf(stderr, "error: out of memory\n");
    exitCode = CLI_EXIT_FAIL;

cleanup:
    cliHttpClose(&http);
    json_decref(statements);
    return exitCode;
}

const cliCommand cliSqlCommand = {
    .name = "sql",
    .synopsis = "[options] [--] SQL [SQL...]",
    .summary = "Run SQL statements given as arguments and print their results.",
    .description =
        "Each argument is one statement; they are sent together in one request to\n"
        "POST /db/request and run in order. Query results print as tables, writes as\n"
        "\"N rows affected\". An argument starting with '[' is a parameterised statement\n"
        "in the API's form, e.g. '[\"INSERT INTO t VALUES(?, ?)\", 1, \"two\"]'.\n"
        "Put -- before a statement that starts with '-' (such as a -- comment).\n"
        "\n"
        "Errors print to stderr as \"error: MESSAGE\"; the exit status is 1 when any\n"
        "statement failed or cairnd could not be reached, 2 for a bad command line.\n",
    .options = sqlOptions,
    .run = runSql,
};
