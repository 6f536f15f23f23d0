/* `cairn node list|remove`: the members of a cairnd cluster, from the command line.
 *
 * `list` reads GET /nodes (rqlite's shape: an object keyed by node id, each entry with
 * id, api_addr, addr, voter, reachable, leader) and prints it as a table sorted by id,
 * or, with --json, prints the server's document as it came. `remove ID` sends DELETE
 * /remove {"id": "ID"}; any member will do, cairnd forwards it to the leader. A refusal
 * prints the server's message ("error: MESSAGE" on stderr) and exits 1. Main thread. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli.h"
#include "http.h"
#include "query.h"
#include "table.h"

static const cliOption listOptions[] = {
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the server's GET /nodes document as it is"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption removeOptions[] = {
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption nodeOptions[] = {
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

#define VALUE(opts, values, name) ((values)[cliOptionIndex((opts), (name))])
#define MAX_OPTIONS 8

/* Opens h on host; prints the reason and returns an exit code on failure, -1 on success. */
static int openHost(cliHttp *h, const char *host)
{
    int rc = cliHttpInit(h, host);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", h->errmsg);
        return rc == CLI_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    return -1;
}

/* Checks the answer to the request just made on h; on success stores the parsed body in
 * *doc (a new reference, the caller releases it). Prints the server's or the transport's
 * message and returns CLI_EXIT_FAIL otherwise. */
static int answer(cliHttp *h, int rc, json_t **doc)
{
    char errmsg[CLI_ERRMSG_SIZE];

    *doc = NULL;
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", h->errmsg);
        return CLI_EXIT_FAIL;
    }
    rc = cliQueryParseResponse(h, doc, errmsg, sizeof errmsg);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", errmsg);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* ---- list ------------------------------------------------------------------------------ */

static const char *yesNo(const json_t *v)
{
    return json_is_true(v) ? "yes" : "no";
}

typedef struct nodeRow {
    uint64_t id;
    const char *key;
    const json_t *entry;
} nodeRow;

static int compareRows(const void *a, const void *b)
{
    const nodeRow *x = a, *y = b;
    if (x->id != y->id) {
        return x->id < y->id ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

/* Prints the /nodes document (borrowed) as a table sorted by numeric id. */
static int printNodes(const json_t *doc)
{
    static const char *const columns[] = {"ID",    "API ADDRESS", "RAFT ADDRESS",
                                          "VOTER", "LEADER",      "REACHABLE"};
    char errmsg[CLI_ERRMSG_SIZE];
    size_t n = json_object_size(doc), i = 0;
    nodeRow *rows = calloc(n > 0 ? n : 1, sizeof *rows);
    json_t *result = json_object();
    json_t *cols = json_array();
    json_t *values = json_array();
    const char *key;
    json_t *entry;
    int code = CLI_EXIT_OK;

    if (rows == NULL || result == NULL || cols == NULL || values == NULL ||
        json_object_set(result, "columns", cols) != 0 ||
        json_object_set(result, "values", values) != 0) {
        goto nomem;
    }
    for (size_t c = 0; c < sizeof columns / sizeof columns[0]; c++) {
        if (json_array_append_new(cols, json_string(columns[c])) != 0) {
            goto nomem;
        }
    }
    json_object_foreach((json_t *)doc, key, entry)
    {
        rows[i].key = key;
        rows[i].entry = entry;
        rows[i].id = strtoull(key, NULL, 10);
        i++;
    }
    qsort(rows, n, sizeof *rows, compareRows);
    for (i = 0; i < n; i++) {
        const json_t *e = rows[i].entry;
        const char *api = json_string_value(json_object_get(e, "api_addr"));
        const char *raft = json_string_value(json_object_get(e, "addr"));
        json_t *row =
            json_pack("[s,s,s,s,s,s]", rows[i].key, api != NULL && api[0] ? api : "-",
                      raft != NULL && raft[0] ? raft : "-", yesNo(json_object_get(e, "voter")),
                      yesNo(json_object_get(e, "leader")), yesNo(json_object_get(e, "reachable")));
        if (row == NULL || json_array_append_new(values, row) != 0) {
            goto nomem;
        }
    }
    if (n == 0) {
        printf("no nodes\n");
    } else if (cliTablePrint(stdout, result, CLI_MODE_TABLE, errmsg, sizeof errmsg) != 0) {
        fprintf(stderr, "error: %s\n", errmsg);
        code = CLI_EXIT_FAIL;
    }
    goto out;

nomem:
    fprintf(stderr, "error: out of memory\n");
    code = CLI_EXIT_FAIL;
out:
    free(rows);
    json_decref(result);
    json_decref(cols);
    json_decref(values);
    return code;
}

static int runList(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    const char *host = env->host;
    cliHttp http = {0};
    json_t *doc = NULL;
    int npos, code;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    if (npos > 0) {
        return cliUsageError(cmd, "unexpected argument %s", argv[1]);
    }
    if (VALUE(listOptions, values, "host") != NULL) {
        host = VALUE(listOptions, values, "host");
    }
    if ((code = openHost(&http, host)) >= 0) {
        goto out;
    }
    code = answer(&http, cliHttpGet(&http, "/nodes"), &doc);
    if (code != CLI_EXIT_OK) {
        goto out;
    }
    if (!json_is_object(doc)) {
        fprintf(stderr, "error: cairnd's answer to GET /nodes is not a JSON object\n");
        code = CLI_EXIT_FAIL;
        goto out;
    }
    if (VALUE(listOptions, values, "json") != NULL) {
        /* The document as the server sent it, so that scripts see rqlite's shape. */
        fwrite(http.body.data, 1, http.body.len, stdout);
        if (http.body.len == 0 || http.body.data[http.body.len - 1] != '\n') {
            putchar('\n');
        }
    } else {
        code = printNodes(doc);
    }

out:
    json_decref(doc);
    cliHttpClose(&http);
    return code;
}

/* ---- remove ---------------------------------------------------------------------------- */

static int runRemove(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    const char *host = env->host;
    cliHttp http = {0};
    json_t *doc = NULL;
    char body[96];
    char *end;
    unsigned long long id;
    int npos, code, rc;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    if (npos == 0) {
        return cliUsageError(cmd, "no node id given");
    }
    if (npos > 1) {
        return cliUsageError(cmd, "unexpected argument %s", argv[2]);
    }
    errno = 0;
    id = strtoull(argv[1], &end, 10);
    if (argv[1][0] < '0' || argv[1][0] > '9' || *end != '\0' || errno != 0 || id == 0) {
        return cliUsageError(cmd, "a node id is a positive integer, not %s", argv[1]);
    }
    if (VALUE(removeOptions, values, "host") != NULL) {
        host = VALUE(removeOptions, values, "host");
    }
    if ((code = openHost(&http, host)) >= 0) {
        goto out;
    }
    snprintf(body, sizeof body, "{\"id\":\"%llu\"}", id);
    /* cliHttpPost() prepares a request with a body; the method is switched to DELETE
     * for this one transfer, then back, as the handle is shared by nothing else. */
    curl_easy_setopt((CURL *)http.curl, CURLOPT_CUSTOMREQUEST, "DELETE");
    rc = cliHttpPost(&http, "/remove", body, strlen(body));
    curl_easy_setopt((CURL *)http.curl, CURLOPT_CUSTOMREQUEST, NULL);
    code = answer(&http, rc, &doc);
    if (code == CLI_EXIT_OK) {
        printf("node %llu removed\n", id);
    }

out:
    json_decref(doc);
    cliHttpClose(&http);
    return code;
}

/* ---- the command ----------------------------------------------------------------------- */

static const cliCommand listCommand = {
    .name = "node list",
    .synopsis = "[--host URL] [--json]",
    .summary = "List the nodes of the cluster.",
    .description = "One row per node: id, HTTP API address, Raft address, whether it votes,\n"
                   "whether it is the leader, and whether the node asked can reach it.\n"
                   "--json prints GET /nodes as the server sent it (rqlite's shape).\n"
                   "Exit status: 0 success, 1 failure (cairnd unreachable), 2 bad usage.\n",
    .options = listOptions,
    .run = runList,
};

static const cliCommand removeCommand = {
    .name = "node remove",
    .synopsis = "[--host URL] ID",
    .summary = "Remove node ID from the cluster.",
    .description =
        "Sends DELETE /remove to cairnd (any member: it is forwarded to the leader). The\n"
        "node leaves the Raft configuration; stop its process afterwards (or before, when\n"
        "it is gone for good). An unknown id is an error.\n"
        "Exit status: 0 success, 1 failure (the server's message is printed), 2 bad usage.\n",
    .options = removeOptions,
    .run = runRemove,
};

static const cliCommand *const nodeSubcommands[] = {&listCommand, &removeCommand, NULL};

static int runNode(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    return cliRunSubcommand(cmd, env, argc, argv);
}

const cliCommand cliNodeCommand = {
    .name = "node",
    .synopsis = "SUBCOMMAND [options] [ID]",
    .summary = "List the nodes of the cluster, or remove one.",
    .description = "subcommands:\n"
                   "  list     list the nodes (id, addresses, voter, leader, reachable)\n"
                   "  remove   remove a node from the cluster\n"
                   "\n"
                   "Run \"cairn node SUBCOMMAND --help\" for a subcommand's options.\n",
    .options = nodeOptions,
    .run = runNode,
    .subcommands = nodeSubcommands,
};
