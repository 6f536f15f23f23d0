/* The cairn shell: `cairn [--host URL]` with no subcommand.
 *
 * On a terminal it is an interactive SQL prompt (libedit, history in ~/.cairn_history);
 * otherwise it reads statements from stdin without prompts, for `cairn < script.sql`, and
 * exits 1 if anything failed. Input is accumulated line by line until sqlite3_complete()
 * says the text ends a statement, then split into single statements (again with
 * sqlite3_complete, so semicolons inside strings and trigger bodies are left alone) and
 * sent as one POST /db/request. Lines starting with '.' at the start of a statement are
 * dot-commands. Main thread only; SIGINT only sets cliInterrupted while the prompt is up. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <jansson.h>
#include <sqlite3.h>

#include "cli.h"
#include "http.h"
#include "query.h"
#include "table.h"

#define SHELL_HISTORY_FILE ".cairn_history"
#define SHELL_HISTORY_MAX 1000
#define SHELL_MAX_ARGS 16
#define SHELL_MAX_READ_DEPTH 16

typedef struct shell {
    cliHttp http;
    cliQueryOptions qopts; /* mode, timer, changes, level: what the dot-commands set */
    char prompt[300];
    int interactive; /* stdin is a terminal: prompts, history, banner */
    int failed;      /* a statement or dot-command failed: the exit status of a script */
    int quit;        /* .quit or .exit was given */
    int exitCode;    /* from .exit CODE, when exitCodeSet */
    int exitCodeSet;
    int readDepth; /* nesting of .read */
    int readErrno; /* why the last line could not be read, when not at its end */
    int haveHistory;
    char historyPath[PATH_MAX];
} shell;

static const cliOption shellOptions[] = {
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"level", 0, "LEVEL", "read consistency: " CLI_LEVELS},
    {"mode", 0, "MODE", "how to print rows: table (default), csv or json"},
    {"help", 'h', NULL, "show this help"},
    {"version", 0, NULL, "print the version of cairn and exit"},
    {NULL, 0, NULL, NULL},
};

/* --- input ------------------------------------------------------------------------- */

/* Reads one line without its newline, from readline() when interactive, else from in.
 * Returns a malloc'd string the caller frees, or NULL at end of input; *len is its
 * length, which is more than strlen() when the line holds a NUL byte. */
static char *readInputLine(shell *sh, FILE *in, int interactive, const char *prompt,
                           size_t *len)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (interactive) {
        line = readline(prompt);
        *len = line != NULL ? strlen(line) : 0;
        return line;
    }
    n = getline(&line, &cap, in);
    if (n < 0) {
        sh->readErrno = ferror(in) ? (errno ? errno : EIO) : 0;
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    *len = (size_t)n;
    return line;
}

/* True when s holds nothing the server would run: whitespace, comments, semicolons. */
static int sqlIsBlank(const char *s)
{
    while (*s != '\0') {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == ';') {
            s++;
        } else if (s[0] == '-' && s[1] == '-') {
            s += strcspn(s, "\n");
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            if (end == NULL) {
                return 1; /* an unterminated comment runs to the end, as in SQLite */
            }
            s = end + 2;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Appends buf[start..end) to statements as one SQL string unless it is blank. */
static int appendStatement(json_t *statements, const char *buf, size_t start, size_t end)
{
    json_t *s;
    while (start < end && strchr(" \t\r\n\f", buf[start]) != NULL) {
        start++;
    }
    while (end > start && strchr(" \t\r\n\f", buf[end - 1]) != NULL) {
        end--;
    }
    {
        char *copy = strndup(buf + start, end - start);
        if (copy == NULL) {
            return CLI_ERR_NOMEM;
        }
        if (sqlIsBlank(copy)) {
            free(copy);
            return 0;
        }
        s = json_string(copy);
        free(copy);
    }
    if (s == NULL) {
        return CLI_ERR_PROTO; /* not UTF-8: jansson refuses it */
    }
    return json_array_append_new(statements, s) == 0 ? 0 : CLI_ERR_NOMEM;
}

/* Splits buf into single statements. A ';' ends a statement only where the text since
 * the previous split is complete for SQLite, which leaves alone semicolons in strings,
 * comments and CREATE TRIGGER bodies. Whatever follows the last split (input ended
 * without a ';') is one more statement. buf is modified during the scan and restored. */
static int splitStatements(char *buf, json_t *statements)
{
    size_t len = strlen(buf);
    size_t start = 0;
    int rc;

    for (size_t i = 0; i < len; i++) {
        char saved;
        int complete;
        if (buf[i] != ';') {
            continue;
        }
        saved = buf[i + 1];
        buf[i + 1] = '\0';
        complete = sqlite3_complete(buf + start);
        buf[i + 1] = saved;
        if (!complete) {
            continue;
        }
        rc = appendStatement(statements, buf, start, i + 1);
        if (rc != 0) {
            return rc;
        }
        start = i + 1;
    }
    return appendStatement(statements, buf, start, len);
}

/* --- running SQL --------------------------------------------------------------------- */

static void reportFailure(shell *sh, int rc, const char *msg)
{
    fflush(stdout);
    if (rc == CLI_ERR_INTERRUPT) {
        fprintf(stderr, "error: interrupted\n");
    } else {
        fprintf(stderr, "error: %s\n", msg);
    }
    fflush(stderr);
    sh->failed = 1;
}

/* Sends the statements of one complete input chunk. line is where the chunk started,
 * named in error messages when reading a script. Returns CLI_ERR_NET when cairnd is
 * unreachable (already reported), else 0: SQL errors are reported and counted. */
static int runChunk(shell *sh, char *buf, int line, int interactive)
{
    char errmsg[CLI_ERRMSG_SIZE];
    char where[64];
    json_t *statements = json_array();
    cliQueryOptions qopts = sh->qopts;
    int rc;

    if (statements == NULL) {
        reportFailure(sh, CLI_ERR_NOMEM, "out of memory");
        return 0;
    }
    rc = splitStatements(buf, statements);
    if (rc != 0) {
        reportFailure(sh, rc, rc == CLI_ERR_NOMEM ? "out of memory" : "input is not UTF-8");
        goto cleanup;
    }
    if (json_array_size(statements) == 0) {
        goto cleanup;
    }
    if (!interactive) {
        snprintf(where, sizeof where, "near line %d: ", line);
        qopts.where = where;
    }
    rc = cliQueryRun(&sh->http, statements, &qopts, stdout, stderr, errmsg, sizeof errmsg);
    if (rc == CLI_ERR_SQL) {
        sh->failed = 1;
        rc = 0;
    } else if (rc != 0) {
        reportFailure(sh, rc, errmsg);
        rc = rc == CLI_ERR_NET ? CLI_ERR_NET : 0;
    }

cleanup:
    json_decref(statements);
    return rc;
}

/* Runs one query for a dot-command. On success *doc holds the response (release with
 * json_decref) and *result its first result; on failure the error is reported. */
static int dotQuery(shell *sh, const char *sql, const char *param, json_t **doc,
                    const json_t **result)
{
    char errmsg[CLI_ERRMSG_SIZE];
    json_t *stmt = json_pack("[[ss]]", sql, param);
    const char *msg;
    int rc;

    *doc = NULL;
    if (stmt == NULL) {
        reportFailure(sh, CLI_ERR_NOMEM, "out of memory");
        return CLI_ERR_NOMEM;
    }
    rc = cliQueryFetch(&sh->http, stmt, sh->qopts.level, doc, errmsg, sizeof errmsg);
    json_decref(stmt);
    if (rc != 0) {
        reportFailure(sh, rc, errmsg);
        return rc;
    }
    *result = json_array_get(json_object_get(*doc, "results"), 0);
    msg = json_string_value(json_object_get(*result, "error"));
    if (*result == NULL || msg != NULL) {
        reportFailure(sh, CLI_ERR_SQL, msg != NULL ? msg : "cairnd returned no result");
        json_decref(*doc);
        *doc = NULL;
        return CLI_ERR_SQL;
    }
    return 0;
}

/* Prints the first column of every row, one per line. */
static void printFirstColumn(const json_t *result, const char *suffix)
{
    const json_t *values = json_object_get(result, "values");
    for (size_t i = 0; i < json_array_size(values); i++) {
        const char *s = json_string_value(json_array_get(json_array_get(values, i), 0));
        if (s != NULL) {
            printf("%s%s\n", s, suffix);
        }
    }
}

/* --- dot-commands -------------------------------------------------------------------- */

typedef struct dotCommand {
    const char *name;
    const char *args;
    const char *help;
    int minArgs, maxArgs; /* not counting the command itself */
    void (*fn)(shell *sh, int argc, char **argv);
} dotCommand;

/* Schema queries hide SQLite's own objects and cairn's bookkeeping tables (_cairn*),
 * which are not the user's data. */
#define USER_OBJECTS "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND substr(tbl_name, 1, 6) <> '_cairn'"

static void dotTables(shell *sh, int argc, char **argv)
{
    json_t *doc;
    const json_t *result;
    if (dotQuery(sh,
                 "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND " USER_OBJECTS
                 " AND name LIKE ? ORDER BY name",
                 argc > 1 ? argv[1] : "%", &doc, &result) != 0) {
        return;
    }
    printFirstColumn(result, "");
    json_decref(doc);
}

static void dotSchema(shell *sh, int argc, char **argv)
{
    json_t *doc;
    const json_t *result;
    if (dotQuery(sh,
                 "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND " USER_OBJECTS
                 " AND tbl_name LIKE ? ORDER BY rowid",
                 argc > 1 ? argv[1] : "%", &doc, &result) != 0) {
        return;
    }
    printFirstColumn(result, ";");
    json_decref(doc);
}

static void dotIndexes(shell *sh, int argc, char **argv)
{
    json_t *doc;
    const json_t *result;
    if (dotQuery(sh,
                 "SELECT name FROM sqlite_master WHERE type = 'index' AND substr(tbl_name, 1, "
                 "6) <> '_cairn' AND tbl_name LIKE ? ORDER BY name",
                 argc > 1 ? argv[1] : "%", &doc, &result) != 0) {
        return;
    }
    printFirstColumn(result, "");
    json_decref(doc);
}

/* Parses on/off (also 1/0, yes/no, true/false); returns -1 for anything else. */
static int parseBool(const char *s)
{
    if (strcmp(s, "on") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0 ||
        strcmp(s, "true") == 0) {
        return 1;
    }
    if (strcmp(s, "off") == 0 || strcmp(s, "0") == 0 || strcmp(s, "no") == 0 ||
        strcmp(s, "false") == 0) {
        return 0;
    }
    return -1;
}

static void setBool(shell *sh, int *flag, int argc, char **argv)
{
    int v;
    if (argc < 2) {
        printf("%s\n", *flag ? "on" : "off");
        return;
    }
    v = parseBool(argv[1]);
    if (v < 0) {
        fprintf(stderr, "error: %s expects on or off, not '%s'\n", argv[0], argv[1]);
        sh->failed = 1;
        return;
    }
    *flag = v;
}

static void dotTimer(shell *sh, int argc, char **argv)
{
    setBool(sh, &sh->qopts.timer, argc, argv);
}

static void dotChanges(shell *sh, int argc, char **argv)
{
    setBool(sh, &sh->qopts.changes, argc, argv);
}

static void dotMode(shell *sh, int argc, char **argv)
{
    if (argc < 2) {
        printf("%s\n", cliModeName(sh->qopts.mode));
        return;
    }
    if (cliModeParse(argv[1], &sh->qopts.mode) != 0) {
        fprintf(stderr, "error: unknown mode '%s': expected table, csv or json\n", argv[1]);
        sh->failed = 1;
    }
}

static void dotLevel(shell *sh, int argc, char **argv)
{
    static char level[16];
    if (argc < 2) {
        printf("%s\n", sh->qopts.level != NULL ? sh->qopts.level : "(server default)");
        return;
    }
    if (!cliLevelIsValid(argv[1])) {
        fprintf(stderr,
                "error: unknown level '%s': expected " CLI_LEVELS "\n",
                argv[1]);
        sh->failed = 1;
        return;
    }
    snprintf(level, sizeof level, "%s", argv[1]);
    sh->qopts.level = level;
}

/* Prints a JSON document as indented "key: value" lines, easier to scan than JSON. */
static void printTree(const json_t *v, int indent)
{
    const char *key;
    json_t *child;
    size_t i;

    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, child)
        {
            if ((json_is_object(child) && json_object_size(child) > 0) ||
                (json_is_array(child) && json_array_size(child) > 0)) {
                printf("%*s%s:\n", indent, "", key);
                printTree(child, indent + 2);
            } else {
                char *text = json_is_null(child) ? strdup("null") : cliValueText(child);
                printf("%*s%s: %s\n", indent, "", key, text != NULL ? text : "?");
                free(text);
            }
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, child)
        {
            if (json_is_object(child) || json_is_array(child)) {
                printf("%*s-\n", indent, "");
                printTree(child, indent + 2);
            } else {
                char *text = json_is_null(child) ? strdup("null") : cliValueText(child);
                printf("%*s- %s\n", indent, "", text != NULL ? text : "?");
                free(text);
            }
        }
    } else {
        char *text = cliValueText(v);
        printf("%*s%s\n", indent, "", text != NULL ? text : "?");
        free(text);
    }
}

static void getAndPrint(shell *sh, const char *path)
{
    char errmsg[CLI_ERRMSG_SIZE];
    json_t *doc = NULL;
    int rc = cliHttpGet(&sh->http, path);
    if (rc != 0) {
        reportFailure(sh, rc, sh->http.errmsg);
        return;
    }
    rc = cliQueryParseResponse(&sh->http, &doc, errmsg, sizeof errmsg);
    if (rc != 0) {
        reportFailure(sh, rc, errmsg);
        return;
    }
    printTree(doc, 0);
    json_decref(doc);
}

static void dotStatus(shell *sh, int argc, char **argv)
{
    getAndPrint(sh, "/status");
}

static void dotNodes(shell *sh, int argc, char **argv)
{
    getAndPrint(sh, "/nodes");
}

static int processInput(shell *sh, FILE *in, const char *name, int interactive);

static void dotRead(shell *sh, int argc, char **argv)
{
    FILE *f;
    if (sh->readDepth >= SHELL_MAX_READ_DEPTH) {
        fprintf(stderr, "error: .read nested more than %d deep\n", SHELL_MAX_READ_DEPTH);
        sh->failed = 1;
        return;
    }
    f = fopen(argv[1], "r");
    if (f == NULL) {
        fprintf(stderr, "error: cannot open %s: %s\n", argv[1], strerror(errno));
        sh->failed = 1;
        return;
    }
    sh->readDepth++;
    processInput(sh, f, argv[1], 0);
    sh->readDepth--;
    fclose(f);
}

static void dotQuit(shell *sh, int argc, char **argv)
{
    sh->quit = 1;
    if (argc > 1) {
        sh->exitCode = atoi(argv[1]);
        sh->exitCodeSet = 1;
    }
}

/* Defined after the table it prints. */
static void dotHelp(shell *sh, int argc, char **argv);

static const dotCommand dotCommands[] = {
    {".changes", "on|off", "print \"N rows affected\" after writes", 0, 1, dotChanges},
    {".exit", "[CODE]", "leave the shell", 0, 1, dotQuit},
    {".help", "", "show this help", 0, 0, dotHelp},
    {".indexes", "[TABLE]", "list indexes, of TABLE (a LIKE pattern) only if given", 0, 1,
     dotIndexes},
    {".level", "[LEVEL]", "read consistency: " CLI_LEVELS, 0, 1, dotLevel},
    {".mode", "[table|csv|json]", "how to print rows", 0, 1, dotMode},
    {".nodes", "", "show the cluster's nodes (GET /nodes)", 0, 0, dotNodes},
    {".quit", "", "leave the shell", 0, 0, dotQuit},
    {".read", "FILE", "run the statements in FILE", 1, 1, dotRead},
    {".schema", "[TABLE]", "show CREATE statements, of TABLE (a LIKE pattern) if given", 0, 1,
     dotSchema},
    {".status", "", "show the server's status (GET /status)", 0, 0, dotStatus},
    {".tables", "[PATTERN]", "list tables and views, matching PATTERN if given", 0, 1, dotTables},
    {".timer", "on|off", "print the server's run time after each statement", 0, 1, dotTimer},
    {NULL, NULL, NULL, 0, 0, NULL},
};

static void dotHelp(shell *sh, int argc, char **argv)
{
    int width = 0;
    for (const dotCommand *d = dotCommands; d->name != NULL; d++) {
        int w = (int)(strlen(d->name) + 1 + strlen(d->args));
        if (w > width) {
            width = w;
        }
    }
    for (const dotCommand *d = dotCommands; d->name != NULL; d++) {
        char left[128];
        snprintf(left, sizeof left, "%s %s", d->name, d->args);
        printf("%-*s  %s\n", width, left, d->help);
    }
    printf("\nSQL statements end with ';' and may span several lines.\n");
}

/* Splits a dot-command line into words; '...' and "..." quote. Modifies line; argv
 * points into it. Returns the number of words. */
static int splitWords(char *line, char **argv, int max)
{
    int argc = 0;
    char *p = line;
    while (*p != '\0' && argc < max) {
        char quote = 0;
        char *out;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        if (*p == '\'' || *p == '"') {
            quote = *p++;
        }
        argv[argc++] = out = p;
        while (*p != '\0' && (quote ? *p != quote : (*p != ' ' && *p != '\t'))) {
            *out++ = *p++;
        }
        if (*p != '\0') {
            p++;
        }
        *out = '\0';
    }
    return argc;
}

static void runDotCommand(shell *sh, char *line)
{
    char *argv[SHELL_MAX_ARGS];
    int argc = splitWords(line, argv, SHELL_MAX_ARGS);
    if (argc == 0) {
        return;
    }
    for (const dotCommand *d = dotCommands; d->name != NULL; d++) {
        if (strcmp(d->name, argv[0]) != 0) {
            continue;
        }
        if (argc - 1 < d->minArgs || argc - 1 > d->maxArgs) {
            fprintf(stderr, "error: usage: %s %s\n", d->name, d->args);
            sh->failed = 1;
            return;
        }
        d->fn(sh, argc, argv);
        fflush(stdout);
        return;
    }
    fprintf(stderr, "error: unknown command \"%s\"; enter \".help\" for the list\n", argv[0]);
    sh->failed = 1;
}

/* --- the loop ------------------------------------------------------------------------ */

/* Reads and runs everything from in (stdin, or a .read file; name is what errors call
 * it). Returns CLI_ERR_NET when a script stopped because cairnd is unreachable, else 0. */
static int processInput(shell *sh, FILE *in, const char *name, int interactive)
{
    cliBuf sql = {0};
    char *line;
    size_t len = 0;
    int lineno = 0;
    int startLine = 0;
    int rc = 0;

    for (;;) {
        const char *prompt = sql.len == 0 ? sh->prompt : "   ...> ";
        cliInterrupted = 0;
        line = readInputLine(sh, in, interactive, prompt, &len);
        if (interactive && cliInterrupted) {
            /* Ctrl-C at the prompt drops the statement being typed, as in psql/sqlite3;
             * the new prompt goes on a line of its own. */
            putchar('\n');
            fflush(stdout);
            free(line);
            cliBufReset(&sql);
            continue;
        }
        if (line == NULL) {
            break;
        }
        lineno++;
        if (strlen(line) != len) {
            /* The rest of the line would be lost without a word (and with it a statement
             * or its end): the statement it is part of is dropped, and said so. */
            fprintf(stderr, "error: line %d holds a NUL byte at column %zu: SQL text may not "
                            "contain one; nothing on the line%s is run\n",
                    lineno, strlen(line) + 1, sql.len > 0 ? " nor in the statement it continues" : "");
            sh->failed = 1;
            cliBufReset(&sql);
            free(line);
            continue;
        }
        if (interactive && line[strspn(line, " \t")] != '\0') {
            add_history(line);
        }
        if (sql.len == 0) {
            const char *p = line + strspn(line, " \t");
            if (*p == '.') {
                runDotCommand(sh, line);
                free(line);
                if (sh->quit) {
                    break;
                }
                continue;
            }
            if (sqlIsBlank(line)) {
                free(line);
                continue;
            }
            startLine = lineno;
        }
        if (cliBufAppend(&sql, line, strlen(line)) != 0 || cliBufAppend(&sql, "\n", 1) != 0) {
            free(line);
            reportFailure(sh, CLI_ERR_NOMEM, "out of memory");
            rc = CLI_ERR_NOMEM;
            goto cleanup;
        }
        free(line);
        if (!sqlite3_complete(sql.data)) {
            continue;
        }
        rc = runChunk(sh, sql.data, startLine, interactive);
        cliBufReset(&sql);
        if (rc == CLI_ERR_NET && !interactive) {
            /* Every following statement would fail the same way. */
            goto cleanup;
        }
        rc = 0;
    }
    if (interactive && line == NULL) {
        putchar('\n');
    }
    if (!interactive && ferror(in)) {
        /* Not the end of the input (a directory, an I/O error): said so, and the
         * statement it stopped in is not run. */
        if (lineno == 0) {
            fprintf(stderr, "error: cannot read %s: %s\n", name, strerror(sh->readErrno));
        } else {
            fprintf(stderr, "error: cannot read %s after line %d: %s\n", name, lineno,
                    strerror(sh->readErrno));
        }
        sh->failed = 1;
        goto cleanup;
    }
    if (sql.len > 0 && !sh->quit && !sqlIsBlank(sql.data)) {
        /* Input ended inside a statement: run it if only the final ';' is missing, as
         * sqlite3 does, so `echo "SELECT 1" | cairn` works. */
        if (cliBufAppend(&sql, ";", 1) != 0) {
            reportFailure(sh, CLI_ERR_NOMEM, "out of memory");
            rc = CLI_ERR_NOMEM;
        } else if (sqlite3_complete(sql.data)) {
            rc = runChunk(sh, sql.data, startLine, interactive);
        } else {
            sql.data[sql.len - 1] = '\0';
            fprintf(stderr, "error: near line %d: incomplete SQL at end of input: %s\n", startLine,
                    sql.data);
            sh->failed = 1;
        }
    }

cleanup:
    cliBufFree(&sql);
    return rc;
}

static void onSigint(int sig)
{
    cliInterrupted = 1;
}

static void historyOpen(shell *sh)
{
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0') {
        return;
    }
    if ((size_t)snprintf(sh->historyPath, sizeof sh->historyPath, "%s/%s", home,
                         SHELL_HISTORY_FILE) >= sizeof sh->historyPath) {
        return;
    }
    using_history();
    stifle_history(SHELL_HISTORY_MAX);
    read_history(sh->historyPath); /* a missing file is the normal first run */
    sh->haveHistory = 1;
}

static void historyClose(shell *sh)
{
    if (sh->haveHistory && write_history(sh->historyPath) != 0) {
        fprintf(stderr, "warning: cannot write history to %s\n", sh->historyPath);
    }
}

/* Tells at once, rather than at the first statement, that the server is not there. */
static void probeServer(shell *sh)
{
    int rc = cliHttpGet(&sh->http, "/readyz");
    if (rc != 0) {
        fprintf(stderr, "warning: %s\n", sh->http.errmsg);
    } else if (sh->http.status != 200) {
        fprintf(stderr, "warning: cairnd at %s is not ready (HTTP %ld)\n", sh->http.base,
                sh->http.status);
    }
}

static int runShell(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[sizeof shellOptions / sizeof shellOptions[0]];
    const char *host = env->host;
    const char *level;
    const char *mode;
    shell sh;
    struct sigaction sa, oldSa;
    int npos;
    int exitCode = CLI_EXIT_OK;
    int rc;

    memset(&sh, 0, sizeof sh);
    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &exitCode)) {
        return exitCode;
    }
    if (values[cliOptionIndex(shellOptions, "version")] != NULL) {
        printf("cairn %s\n", CLI_VERSION);
        return CLI_EXIT_OK;
    }
    if (npos > 0) {
        /* main.c already matched command names: this is neither a command nor an option. */
        fprintf(stderr, "cairn: error: unknown command '%s'\n\n", argv[1]);
        cliPrintUsage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (values[cliOptionIndex(shellOptions, "host")] != NULL) {
        host = values[cliOptionIndex(shellOptions, "host")];
    }
    level = values[cliOptionIndex(shellOptions, "level")];
    if (level != NULL && !cliLevelIsValid(level)) {
        fprintf(stderr,
                "cairn: error: invalid level '%s': expected " CLI_LEVELS "\n\n",
                level);
        cliPrintCommandUsage(stderr, cmd);
        return CLI_EXIT_USAGE;
    }
    mode = values[cliOptionIndex(shellOptions, "mode")];
    if (mode != NULL && cliModeParse(mode, &sh.qopts.mode) != 0) {
        fprintf(stderr, "cairn: error: invalid mode '%s': expected table, csv or json\n\n", mode);
        cliPrintCommandUsage(stderr, cmd);
        return CLI_EXIT_USAGE;
    }
    sh.qopts.level = level;
    sh.interactive = isatty(STDIN_FILENO);
    /* Row counts help a person at the prompt; a script's output stays just the rows. */
    sh.qopts.changes = sh.interactive;

    rc = cliHttpInit(&sh.http, host);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", sh.http.errmsg);
        exitCode = rc == CLI_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto cleanup;
    }
    snprintf(sh.prompt, sizeof sh.prompt, "%s> ", sh.http.display);

    if (sh.interactive) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = onSigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &oldSa);
        rl_readline_name = "cairn";
        historyOpen(&sh);
        printf("cairn %s, talking to %s. Enter \".help\" for usage hints.\n", CLI_VERSION,
               sh.http.base);
        probeServer(&sh);
    }

    rc = processInput(&sh, stdin, "standard input", sh.interactive);

    if (sh.interactive) {
        historyClose(&sh);
        sigaction(SIGINT, &oldSa, NULL);
    }
    if (sh.exitCodeSet) {
        exitCode = sh.exitCode;
    } else if (!sh.interactive && (sh.failed || rc != 0)) {
        exitCode = CLI_EXIT_FAIL;
    }

cleanup:
    cliHttpClose(&sh.http);
    return exitCode;
}

const cliCommand cliShellCommand = {
    .name = NULL, /* the default: `cairn` with no subcommand */
    .synopsis = "[options]",
    .summary = "Interactive SQL shell (the default when no command is given).",
    .description = "On a terminal: a prompt with line editing and history (~/.cairn_history).\n"
                   "Statements end with ';' and may span lines; lines starting with '.' are\n"
                   "shell commands (enter .help to list them). Ctrl-C cancels the statement being\n"
                   "typed or running, Ctrl-D leaves.\n"
                   "\n"
                   "When stdin is not a terminal, statements are read from it without prompts\n"
                   "(`cairn < script.sql`); the exit status is 1 if any statement failed.\n",
    .options = shellOptions,
    .run = runShell,
};
