/* `cairn backup create|list|show|verify|expire` and `cairn restore`: backups from the command
 * line. `expire` (retention, expire.h) works on a repository only, in this process.
 *
 * Every command runs in one of two modes. Server mode (the default) asks cairnd through
 * its admin API (POST /admin/backup, GET /admin/backups[/ID], POST
 * /admin/backups/ID/verify, POST /admin/restore). Standalone mode, chosen by --repo (and
 * --db for create), runs the backup engine (backup.h) in this process on any SQLite file
 * and a repository directory, with no server at all. Both modes turn their outcome into
 * the same JSON documents (a catalog entry is what backupInfoJson() writes, which is also
 * what cairnd sends), and one set of printers shows them, so --json output has the same
 * shape whichever side did the work. A standalone backup of a cairnd node's database
 * (DATA/db.sqlite beside DATA/cluster-id) records the Raft index and the history its
 * image holds, as the node's own backups do (nodeState()); of any other file, index 0
 * and no history: no base of a point-in-time restore.
 *
 * Long operations show a progress bar on a terminal: standalone, from the engine's
 * progress callback; against a server, from the `?progress` stream (NDJSON lines
 * {"progress":{"done":N,"total":M}} then the answer), parsed as it arrives by a libcurl
 * write callback installed on the shared HTTP handle.
 *
 * Ctrl-C: the engine has no way to be cancelled. A standalone backup is stopped through
 * the one thing this file owns, the snapshot's file descriptor (see stopCreate()); a
 * standalone verify or restore cannot be stopped midway and says so. Against a server the
 * request is abandoned and cairnd carries on. Main thread only (the engine runs
 * synchronously on it and calls the progress callback from it).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sqlite3.h>

#include "backup.h"
#include "buf.h"
#include "cairn.h"
#include "cli.h"
#include "error.h"
#include "expire.h"
#include "export.h"
#include "http.h"
#include "lib.h"
#include "path.h"
#include "progress.h"
#include "query.h"
#include "snapread.h"
#include "table.h"

/* ---- options ------------------------------------------------------------------------ */

static const cliOption createOptions[] = {
    {"type", 't', "TYPE", "full (default), incremental or differential"},
    {"to", 0, "REPOSITORY", "server: a repository cairnd was configured with (\"default\", a --repo NAME, or its path or URL)"},
    {"node", 0, "ID", "server: back up on cluster node ID, into its backup directory"},
    {"db", 0, "FILE", "standalone: the SQLite database file to back up (needs --repo)"},
    {"repo", 0, "DIR|URL", "standalone: the repository to write to (DIR, created if missing; file:///DIR; s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "standalone, s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "standalone, s3:// repository: its region (default $AWS_REGION)"},
    {"compression", 0, "C", "standalone: lz4, lz4:ACCELERATION, zstd or zstd:LEVEL (default: lz4 into a directory, zstd:1 into S3)"},
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the new catalog entry as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption listOptions[] = {
    {"repo", 0, "DIR|URL", "standalone: the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "standalone, s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "standalone, s3:// repository: its region (default $AWS_REGION)"},
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the catalog (an array of entries) as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption showOptions[] = {
    {"repo", 0, "DIR|URL", "standalone: the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "standalone, s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "standalone, s3:// repository: its region (default $AWS_REGION)"},
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the catalog entry as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption verifyOptions[] = {
    {"restore", 0, NULL, "also restore the chain into a scratch file and integrity-check it"},
    {"repo", 0, "DIR|URL", "standalone: the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "standalone, s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "standalone, s3:// repository: its region (default $AWS_REGION)"},
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the outcome as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption restoreOptions[] = {
    {"branch", 0, "NAME", "server: restore into the branch database NAME, not the live one"},
    {"out", 'o', "FILE", "standalone: the database file to create (needs --repo)"},
    {"force", 'f', NULL, "standalone: replace FILE if it exists"},
    {"keep-internal", 0, NULL, "standalone: keep cairn's own table _cairn_meta in FILE (the exact image)"},
    {"check", 0, "LEVEL", "standalone: quick (PRAGMA quick_check of FILE, the default) or full (integrity_check)"},
    {"to-index", 0, "N", "standalone: point in time: a base backup + the archive up to log index N"},
    {"to-time", 0, "TIME", "standalone: point in time: up to TIME (ISO-8601, e.g. 2026-12-02T10:02:00Z)"},
    {"repo", 0, "DIR|URL", "standalone: the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "standalone, s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "standalone, s3:// repository: its region (default $AWS_REGION)"},
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"json", 0, NULL, "print the outcome as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption expireOptions[] = {
    {"repo", 0, "DIR|URL", "the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"keep-full", 0, "N", "keep the newest N full backups and every backup of their chains"},
    {"keep-within", 0, "DUR", "keep every backup taken within DUR before now (30s, 15m, 1h, 7d, 2w)"},
    {"keep-daily", 0, "N", "keep the newest backup of each of the last N UTC days that hold one"},
    {"keep-weekly", 0, "N", "keep the newest backup of each of the last N ISO weeks that hold one"},
    {"keep-monthly", 0, "N", "keep the newest backup of each of the last N months that hold one"},
    {"dry-run", 'n', NULL, "say what would be deleted and why each survivor stays; delete nothing"},
    {"now", 0, "TIME", "judge as of TIME (ISO-8601 or Unix ms) instead of now"},
    {"s3-endpoint", 0, "URL", "s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "s3:// repository: its region (default $AWS_REGION)"},
    {"json", 0, NULL, "print the report as JSON (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption backupOptions[] = {
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

#define VALUE(opts, values, name) ((values)[cliOptionIndex((opts), (name))])
#define MAX_OPTIONS 16

/* ---- what one command run holds ----------------------------------------------------- */

/* The state of a ?progress response being received (see onStreamBody()). */
typedef struct streamState {
    cliHttp *http;
    cliProgress *progress;
    int ndjson;      /* -1 until the response's Content-Type is known, then 0 or 1 */
    size_t scanned;  /* bytes of http->body already split into lines */
    size_t lastLine; /* offset of the last complete non-blank line */
    int hasLast;
} streamState;

typedef struct backupRun {
    const cliCommand *cmd;
    const char *host; /* server mode */
    const char *repo; /* standalone mode when not NULL */
    char repoPath[PATH_MAX]; /* --repo as given, normalised (path.h) */
    int json;
    cliProgress progress;
    cliHttp http;
    streamState stream;
    /* Standalone create: the descriptor the snapshot is read through, so that Ctrl-C
     * can stop the engine (stopCreate()). */
    int snapshotFd;
    int stopping;
} backupRun;

/* Ctrl-C. The first one sets cliInterrupted, which the HTTP transfer and the engine's
 * progress callback poll. While an operation runs that cannot be stopped cleanly,
 * hardStopNote says so: the first Ctrl-C prints it, a second one ends the process at
 * once. Only async-signal-safe calls here (write, signal, raise). */
static volatile sig_atomic_t interrupts;
static const char *volatile hardStopNote;
/* Set while a standalone backup runs: Ctrl-C then also cuts its transfers to an object
 * store (repoStopTransfers: an atomic counter, safe here), whose upload would otherwise
 * go on, and commit, long after the engine read its last page. */
static volatile sig_atomic_t cutTransfers;
/* Set while a standalone restore runs, until its file is complete and about to be put in
 * place (restorePlacing): Ctrl-C then ends the process at once, saying so. Its file has
 * no name until it is placed (backup.h: nothing is left at the destination of a
 * restore killed at any point), so stopping it leaves nothing to clean up. */
static char restoreStopNote[PATH_MAX + 160];
static volatile sig_atomic_t restoreStoppable;
static volatile sig_atomic_t restorePlacing;

static void onSigint(int sig)
{
    const char *note = hardStopNote;

    if (restoreStoppable && !restorePlacing) {
        ssize_t ignored = write(STDERR_FILENO, restoreStopNote, strlen(restoreStopNote));
        (void)ignored;
        _exit(CLI_EXIT_FAIL);
    }
    cliInterrupted = 1;
    interrupts++;
    if (cutTransfers && interrupts == 1) {
        repoStopTransfers(true);
    }
    if (note == NULL) {
        return;
    }
    if (interrupts == 1) {
        ssize_t ignored = write(STDERR_FILENO, note, strlen(note));
        (void)ignored;
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The notes start by erasing a progress bar that may be on the line (4 bytes that
 * noteFor() skips when there is no bar). */
static const char noteSnapshot[] = "\r\033[Kcairn: stopping once the database can be read "
                                   "(Ctrl-C again stops at once)\n";
static const char noteVerify[] =
    "\r\033[Kcairn: a verification cannot be stopped midway; it will finish "
    "(Ctrl-C again stops at once, leaving its scratch file)\n";
static const char notePlacing[] = "\r\033[Kcairn: the restored file is being put in place; "
                                  "it will be there in a moment\n";

static void catchSigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onSigint;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: the engine's reads and writes must not see EINTR because of a key. */
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
}

static const char *noteFor(const backupRun *r, const char *note)
{
    return r->progress.enabled ? note : note + 4;
}

/* ---- messages ------------------------------------------------------------------------ */

static int failure(backupRun *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failure(backupRun *r, const char *fmt, ...)
{
    va_list ap;
    cliProgressClear(&r->progress);
    fflush(stdout);
    fprintf(stderr, "cairn: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return CLI_EXIT_FAIL;
}

/* Prints doc (borrowed) as one line of compact JSON. */
static int printJson(backupRun *r, const json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        return failure(r, "out of memory");
    }
    printf("%s\n", text);
    free(text);
    return CLI_EXIT_OK;
}

/* ---- JSON helpers -------------------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int64_t jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) {
        return (int64_t)json_integer_value(v);
    }
    if (json_is_real(v)) {
        return (int64_t)json_real_value(v);
    }
    return 0;
}

/* The catalog entry of info as a JSON object, through backupInfoJson() so that it is
 * byte for byte what cairnd would send. Returns a new reference, NULL when out of
 * memory. */
static json_t *entryJson(const struct backup_info *info)
{
    struct buf b;
    json_error_t jerr;
    json_t *doc = NULL;

    bufInit(&b);
    backupInfoJson(info, &b);
    if (!b.oom) {
        doc = json_loadb(b.p, b.len, 0, &jerr);
    }
    bufFree(&b);
    return doc;
}

/* ---- printing ------------------------------------------------------------------------ */

/* "2026-11-22T10:15:00.123Z" -> "2026-11-22 10:15:00" for tables. */
static void shortTime(const char *iso, char *out, size_t size)
{
    if (iso == NULL) {
        snprintf(out, size, "-");
        return;
    }
    snprintf(out, size, "%.19s", iso);
    if (strlen(out) > 10 && out[10] == 'T') {
        out[10] = ' ';
    }
}

static void keyValue(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void keyValue(const char *key, const char *fmt, ...)
{
    va_list ap;
    printf("%-15s", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* The readable form of one catalog entry: "key: value" lines. */
static void printEntry(const json_t *e)
{
    const char *type = jstr(e, "type");
    const char *verified = jstr(e, "verified");
    const char *s;
    char size[32], dur[32];

    keyValue("id:", "%s", jstr(e, "id") != NULL ? jstr(e, "id") : "?");
    keyValue("type:", "%s", type != NULL ? type : "?");
    if ((s = jstr(e, "parent_id")) != NULL) {
        keyValue("parent:", "%s", s);
    }
    keyValue("created:", "%s", jstr(e, "created") != NULL ? jstr(e, "created") : "?");
    if ((s = jstr(e, "source")) != NULL && s[0] != '\0') {
        keyValue("source:", "%s", s);
    }
    if (jint(e, "raft_index") != 0) {
        keyValue("raft index:", "%lld (term %lld)", (long long)jint(e, "raft_index"),
                 (long long)jint(e, "raft_term"));
    }
    keyValue("pages:", "%lld stored of %lld (page size %lld)", (long long)jint(e, "pages"),
             (long long)jint(e, "page_count"), (long long)jint(e, "page_size"));
    keyValue("size:", "%s (%lld bytes)",
             cliFormatBytes((uint64_t)jint(e, "size_bytes"), size, sizeof size),
             (long long)jint(e, "size_bytes"));
    keyValue("duration:", "%s", cliFormatDuration(jint(e, "duration_ms"), dur, sizeof dur));
    if (verified != NULL && strcmp(verified, "unverified") != 0 && jstr(e, "verified_at")) {
        keyValue("verified:", "%s at %s", verified, jstr(e, "verified_at"));
    } else {
        keyValue("verified:", "%s", verified != NULL ? verified : "unverified");
    }
    if ((s = jstr(e, "digest")) != NULL) {
        keyValue("digest:", "%s", s);
    }
    if ((s = jstr(e, "parent_digest")) != NULL) {
        keyValue("parent digest:", "%s", s);
    }
    if ((s = jstr(e, "compression")) != NULL) {
        keyValue("compression:", "%s", s);
    }
    /* The cluster whose database it is: the history a point-in-time restore matches. */
    if ((s = jstr(e, "history")) != NULL) {
        keyValue("history:", "%s", s);
    }
    if ((s = jstr(e, "path")) != NULL) {
        keyValue("path:", "%s", s);
    }
    if ((s = jstr(e, "error")) != NULL && s[0] != '\0') {
        keyValue("error:", "%s", s);
    }
}

static int appendRow(json_t *values, const char *const *cells, size_t n)
{
    json_t *row = json_array();
    if (row == NULL || json_array_append_new(values, row) != 0) {
        return CLI_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (json_array_append_new(row, json_string(cells[i] != NULL ? cells[i] : "")) != 0) {
            return CLI_ERR_NOMEM;
        }
    }
    return 0;
}

/* The readable catalog: an aligned table (table.c), then one line per damaged file. */
static int printCatalog(backupRun *r, const json_t *entries)
{
    static const char *const all_columns[] = {"ID",       "TYPE",     "PARENT", "CREATED (UTC)",
                                              "PAGES",    "SIZE",     "DURATION", "STATUS",
                                              "REPOSITORY", "NODES"};
    /* REPOSITORY and NODES: which of the server's repositories and which nodes hold
     * each backup, when a server lists its cluster's catalogue. */
    const json_t *first = json_array_get(entries, 0);
    const bool with_repo = json_object_get(first, "repository") != NULL;
    const bool with_nodes = json_object_get(first, "nodes") != NULL;
    const char *columns[10];
    size_t ncols = 0;
    for (size_t i = 0; i < 8; i++) {
        columns[ncols++] = all_columns[i];
    }
    if (with_repo) {
        columns[ncols++] = all_columns[8];
    }
    if (with_nodes) {
        columns[ncols++] = all_columns[9];
    }
    char errmsg[CLI_ERRMSG_SIZE];
    json_t *result = json_object();
    json_t *cols = json_array();
    json_t *values = json_array();
    size_t damaged = 0;
    int rc = 0;

    if (json_array_size(entries) == 0) {
        json_decref(result);
        json_decref(cols);
        json_decref(values);
        printf("no backups\n");
        return CLI_EXIT_OK;
    }
    if (result == NULL || cols == NULL || values == NULL ||
        json_object_set(result, "columns", cols) != 0 ||
        json_object_set(result, "values", values) != 0) {
        rc = CLI_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < ncols; i++) {
        if (json_array_append_new(cols, json_string(columns[i])) != 0) {
            rc = CLI_ERR_NOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const json_t *e = json_array_get(entries, i);
        const char *error = jstr(e, "error");
        const char *verified = jstr(e, "verified");
        char created[32], pages[64], size[32], dur[32], nodes[96];
        const char *status;
        const char *cells[10];
        size_t nc = 8;
        size_t off = 0;
        size_t k;
        json_t *v;

        shortTime(jstr(e, "created"), created, sizeof created);
        snprintf(pages, sizeof pages, "%lld/%lld", (long long)jint(e, "pages"),
                 (long long)jint(e, "page_count"));
        if (error != NULL && error[0] != '\0') {
            status = "DAMAGED";
            damaged++;
        } else if (verified != NULL && strcmp(verified, "failed") == 0) {
            status = "FAILED";
        } else {
            status = verified != NULL ? verified : "unverified";
        }
        cells[0] = jstr(e, "id");
        cells[1] = jstr(e, "type");
        cells[2] = jstr(e, "parent_id") != NULL ? jstr(e, "parent_id") : "-";
        cells[3] = created;
        cells[4] = pages;
        cells[5] = cliFormatBytes((uint64_t)jint(e, "size_bytes"), size, sizeof size);
        cells[6] = cliFormatDuration(jint(e, "duration_ms"), dur, sizeof dur);
        cells[7] = status;
        nodes[0] = '\0';
        json_array_foreach(json_object_get(e, "nodes"), k, v)
        {
            if (off < sizeof nodes) {
                off += (size_t)snprintf(nodes + off, sizeof nodes - off, "%s%lld", k ? "," : "",
                                        (long long)json_integer_value(v));
            }
        }
        if (with_repo) {
            cells[nc++] = jstr(e, "repository") != NULL ? jstr(e, "repository") : "-";
        }
        if (with_nodes) {
            cells[nc++] = nodes;
        }
        rc = appendRow(values, cells, ncols);
        if (rc != 0) {
            goto out;
        }
    }
    rc = cliTablePrint(stdout, result, CLI_MODE_TABLE, errmsg, sizeof errmsg);
    if (rc != 0) {
        goto out;
    }
    if (damaged > 0) {
        printf("\n");
        for (size_t i = 0; i < json_array_size(entries); i++) {
            const json_t *e = json_array_get(entries, i);
            const char *error = jstr(e, "error");
            if (error != NULL && error[0] != '\0') {
                printf("%s: %s\n", jstr(e, "path") != NULL ? jstr(e, "path") : jstr(e, "id"),
                       error);
            }
        }
    }

out:
    json_decref(cols);
    json_decref(values);
    json_decref(result);
    if (rc == CLI_ERR_NOMEM) {
        return failure(r, "out of memory printing the catalog");
    }
    if (rc != 0) {
        return failure(r, "%s", errmsg);
    }
    return CLI_EXIT_OK;
}

/* ---- server mode --------------------------------------------------------------------- */

/* One line of a ?progress stream: a progress line moves the bar; others wait for the
 * end (only the last line is the answer). */
static void noteLine(streamState *s, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *doc;
    const json_t *p;

    if (len > 1024) {
        return; /* not a progress line: only the answer can be long */
    }
    doc = json_loadb(line, len, 0, &jerr);
    p = json_object_get(doc, "progress");
    if (json_is_object(p)) {
        cliProgressUpdate(s->progress, (uint64_t)jint(p, "done"), (uint64_t)jint(p, "total"));
    }
    json_decref(doc);
}

static int isBlank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') {
            return 0;
        }
    }
    return 1;
}

/* libcurl's write callback on this command's handle. Like http.c's, it collects the
 * body in http->body; for an NDJSON answer it also splits complete lines as they come,
 * draws the progress they carry, and drops the lines already read but the last one, so
 * that a long operation's stream does not grow the buffer. */
static size_t onStreamBody(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    streamState *s = userdata;
    cliBuf *b = &s->http->body;
    size_t n = size * nmemb;

    if (cliBufAppend(b, ptr, n) != 0) {
        return 0; /* libcurl fails the transfer with CURLE_WRITE_ERROR */
    }
    if (s->ndjson < 0) {
        char *ct = NULL;
        curl_easy_getinfo((CURL *)s->http->curl, CURLINFO_CONTENT_TYPE, &ct);
        s->ndjson = ct != NULL && strncmp(ct, "application/x-ndjson", 20) == 0;
    }
    if (!s->ndjson) {
        return n;
    }
    for (;;) {
        char *start = b->data + s->scanned;
        char *nl = memchr(start, '\n', b->len - s->scanned);
        size_t len;
        if (nl == NULL) {
            break;
        }
        len = (size_t)(nl - start);
        if (!isBlank(start, len)) {
            noteLine(s, start, len);
            s->lastLine = s->scanned;
            s->hasLast = 1;
        }
        s->scanned += len + 1;
    }
    if (s->hasLast && s->lastLine > 0) {
        memmove(b->data, b->data + s->lastLine, b->len - s->lastLine + 1);
        b->len -= s->lastLine;
        s->scanned -= s->lastLine;
        s->lastLine = 0;
    }
    return n;
}

static int serverOpen(backupRun *r)
{
    int rc = cliHttpInit(&r->http, r->host);
    if (rc != 0) {
        failure(r, "%s", r->http.errmsg);
        return rc == CLI_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    r->stream.http = &r->http;
    r->stream.progress = &r->progress;
    curl_easy_setopt((CURL *)r->http.curl, CURLOPT_WRITEFUNCTION, onStreamBody);
    curl_easy_setopt((CURL *)r->http.curl, CURLOPT_WRITEDATA, &r->stream);
    return CLI_EXIT_OK;
}

/* The answer of an NDJSON response: its last non-blank line. Returns 0 with a new
 * reference in *doc, or an exit code after printing the message. */
static int streamAnswer(backupRun *r, json_t **doc)
{
    streamState *s = &r->stream;
    cliBuf *b = &r->http.body;
    const char *line;
    size_t len;
    json_error_t jerr;
    json_t *d;
    const char *error;

    if (b->len > s->scanned && !isBlank(b->data + s->scanned, b->len - s->scanned)) {
        line = b->data + s->scanned; /* a last line without its newline */
        len = b->len - s->scanned;
    } else if (s->hasLast) {
        line = b->data + s->lastLine;
        len = strcspn(line, "\n");
    } else {
        return failure(r, "cairnd ended the progress stream without an answer (HTTP %ld)",
                       r->http.status);
    }
    d = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(d)) {
        json_decref(d);
        return failure(r,
                       "cairnd sent a progress stream whose last line is not a JSON "
                       "object: %.200s",
                       line);
    }
    error = jstr(d, "error");
    if (error != NULL || json_object_get(d, "progress") != NULL || r->http.status < 200 ||
        r->http.status >= 300) {
        int code = error != NULL
                       ? failure(r, "%s", error)
                       : failure(r, "cairnd's progress stream ended without an answer (HTTP %ld)",
                                 r->http.status);
        json_decref(d);
        return code;
    }
    *doc = d;
    return CLI_EXIT_OK;
}

/* Sends one request (POST when body is not NULL) and parses the answer: 0 with a new
 * reference in *doc, or an exit code after printing the server's message. `carriesOn`
 * says what cairnd keeps doing when Ctrl-C abandons the request (NULL: nothing). */
static int serverCall(backupRun *r, const char *path, json_t *body, const char *carriesOn,
                      json_t **doc)
{
    char errmsg[CLI_ERRMSG_SIZE];
    char *text = NULL;
    int rc;

    *doc = NULL;
    r->stream.ndjson = -1;
    r->stream.scanned = 0;
    r->stream.lastLine = 0;
    r->stream.hasLast = 0;
    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            return failure(r, "out of memory");
        }
        rc = cliHttpPost(&r->http, path, text, strlen(text));
    } else {
        rc = cliHttpGet(&r->http, path);
    }
    free(text);
    cliProgressClear(&r->progress);
    if (rc == CLI_ERR_INTERRUPT) {
        if (carriesOn != NULL) {
            return failure(r,
                           "interrupted; cairnd carries on with the %s (see `cairn backup "
                           "list`)",
                           carriesOn);
        }
        return failure(r, "interrupted");
    }
    if (rc != 0) {
        return failure(r, "%s", r->http.errmsg);
    }
    if (r->stream.ndjson == 1) {
        return streamAnswer(r, doc);
    }
    rc = cliQueryParseResponse(&r->http, doc, errmsg, sizeof errmsg);
    if (rc != 0) {
        return failure(r, "%s", errmsg);
    }
    if (!json_is_object(*doc)) {
        json_decref(*doc);
        *doc = NULL;
        return failure(r, "cairnd's answer to %s is not a JSON object", path);
    }
    return CLI_EXIT_OK;
}

/* path + "/" + the URL-escaped id + suffix into out. */
static int idPath(backupRun *r, const char *prefix, const char *id, const char *suffix, char *out,
                  size_t size)
{
    char *escaped = curl_easy_escape((CURL *)r->http.curl, id, 0);
    int n;
    if (escaped == NULL) {
        return failure(r, "out of memory");
    }
    n = snprintf(out, size, "%s/%s%s", prefix, escaped, suffix);
    curl_free(escaped);
    if (n < 0 || (size_t)n >= size) {
        return failure(r, "backup id is too long: %.60s...", id);
    }
    return CLI_EXIT_OK;
}

/* ---- standalone mode ----------------------------------------------------------------- */

/* Stops a standalone backupCreate() that the user interrupted. The engine has no cancel
 * call, but it reads every chunk of the database file through snapshotFd (the
 * snapshot's descriptor of the file; only WAL frames come through another): the
 * descriptor is pointed at a directory, so the engine's next read fails (EISDIR) and
 * it takes its error path, which by its contract removes its temporary file and leaves
 * the repository as it was. When the engine has already read every page, it simply
 * finishes and the backup stands, unless its upload to an object store is still under
 * way: onSigint cuts that (cutTransfers), and the upload is aborted. */
static void stopCreate(backupRun *r)
{
    int dir;
    if (r->snapshotFd < 0) {
        return;
    }
    dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        dup2(dir, r->snapshotFd);
        close(dir);
    }
}

/* The engine's progress callback: moves the bar and, during a backup, turns Ctrl-C into
 * stopCreate(). */
static void onEngineProgress(void *arg, uint64_t done, uint64_t total)
{
    backupRun *r = arg;

    if (cliInterrupted && !r->stopping && r->snapshotFd >= 0) {
        r->stopping = 1;
        stopCreate(r);
    }
    cliProgressUpdate(&r->progress, done, total);
}

/* mkdir -p: the repository of a standalone backup is created if missing. */
static int makeDirs(backupRun *r, const char *path)
{
    char tmp[PATH_MAX];
    struct stat st;
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof tmp) {
        return failure(r, "invalid repository path '%s'", path);
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
            return failure(r, "cannot create directory %s: %s", tmp, strerror(errno));
        }
        *p = '/';
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
        return failure(r, "cannot create directory %s: %s", tmp, strerror(errno));
    }
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return failure(r, "%s is not a directory", path);
    }
    return CLI_EXIT_OK;
}

/* What the snapshot src of the file at path (absolute) is the state of, into
 * src->raft_index and src->history. A cairnd node's database is DATA/db.sqlite beside
 * DATA/cluster-id, the cluster's id: the history its indexes count in (cluster.c). It
 * keeps the index of the last entry it applied in cairn's own table _cairn_meta,
 * written in the transaction that applies the entry (store.c), so the snapshot's row
 * is the index of the very image backed up. Any other file (no cluster-id beside it,
 * or no such row: a copy taken elsewhere, which other programs may have written) is
 * the state of no Raft log: index 0 and no history, which a point-in-time restore
 * never takes as a base (arcsegBaseFits), and its pages are copied as they are. 0, or
 * an exit code: a damaged DATA/cluster-id fails the backup, as it stops cairnd. */
static int nodeState(backupRun *r, const char *path, struct backup_source *src)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char idPath[PATH_MAX];
    unsigned char history[sizeof src->history];
    const char *slash;
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    bool node = false, kept = false;
    int64_t applied = 0;

    src->raft_index = 0;
    src->raft_term = 0;
    memset(src->history, 0, sizeof src->history);
    slash = strrchr(path, '/');
    if (slash == NULL || snprintf(idPath, sizeof idPath, "%.*s/cluster-id", (int)(slash - path),
                                  path) >= (int)sizeof idPath) {
        return CLI_EXIT_OK;
    }
    if (libReadIdFile(idPath, history, sizeof history, &kept, errmsg) != 0) {
        return failure(r, "%s (the cluster id of the node whose database %s is)", errmsg, path);
    }
    if (!kept) {
        return CLI_EXIT_OK; /* no node's data directory */
    }
    if (snapreadSql(src->snap, &h, errmsg) == 0 &&
        sqlite3_prepare_v2(h, "SELECT value FROM _cairn_meta WHERE key = 'applied_index'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER &&
        (applied = sqlite3_column_int64(st, 0)) >= 0) {
        node = true;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    if (!node) {
        return CLI_EXIT_OK;
    }
    src->raft_index = (uint64_t)applied;
    memcpy(src->history, history, sizeof src->history);
    /* The node's pages carry checksums: those of the file are verified as the server's
     * backups verify them, those of the WAL frames get theirs (snapread.h), so that the
     * backup restores into a node, or as the base of a replay, as the server's do. */
    src->verify_pages = true;
    snapreadSealWal(src->snap);
    return CLI_EXIT_OK;
}

static int standaloneCreate(backupRun *r, const char *db, int type, int codec, int level,
                            json_t **entry)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char source[PATH_MAX];
    char noCopy[PATH_MAX]; /* backupSnapshotFile() no longer copies: always "" */
    struct backup_source src = {.fd = -1};
    struct backup_options opt = {0};
    struct backup_info *info = NULL;
    int code;
    int rc;

    if (realpath(db, source) == NULL) {
        return failure(r, "cannot open %s: %s", db, strerror(errno));
    }
    code = strstr(r->repo, "://") != NULL ? CLI_EXIT_OK : makeDirs(r, r->repo);
    if (code != CLI_EXIT_OK) {
        return code;
    }
    info = calloc(1, sizeof *info); /* PATH_MAX inside: not for the stack */
    if (info == NULL) {
        return failure(r, "out of memory");
    }

    /* Taking the snapshot waits for writers that hold a rollback-journal database (up to
     * a minute) and cannot report progress: Ctrl-C waits for it, a second one ends the
     * process. The database is never written (snapread.h). */
    hardStopNote = noteFor(r, noteSnapshot);
    rc = backupSnapshotFile(source, NULL, &src, noCopy, errmsg);
    if (rc != 0) {
        code = failure(r, "%s", errmsg);
        goto out;
    }
    if (cliInterrupted) {
        code = failure(r, "interrupted; no backup was written");
        goto out_release;
    }
    src.source = source;
    if ((code = nodeState(r, source, &src)) != CLI_EXIT_OK) {
        goto out_release;
    }

    opt.type = type;
    opt.repo = r->repo;
    opt.codec = codec;
    opt.level = level;
    opt.progress = onEngineProgress;
    opt.progress_arg = r;
    r->snapshotFd = src.fd;
    /* From here Ctrl-C stops the engine through its descriptor (stopCreate()). */
    hardStopNote = NULL;
    cutTransfers = 1;
    if (cliInterrupted) {
        repoStopTransfers(true); /* a Ctrl-C just before */
    }
    rc = backupCreate(&src, &opt, info, errmsg);
    cutTransfers = 0;
    r->snapshotFd = -1;
    cliProgressClear(&r->progress);
    if (rc != 0) {
        code = cliInterrupted ? failure(r, "interrupted; no backup was written")
                              : failure(r, "%s", errmsg);
        goto out_release;
    }
    *entry = entryJson(info);
    code = *entry != NULL ? CLI_EXIT_OK : failure(r, "out of memory");

out_release:
    hardStopNote = NULL;
    backupSnapshotRelease(&src, noCopy);
out:
    hardStopNote = NULL;
    free(info);
    return code;
}

/* ---- the commands -------------------------------------------------------------------- */

/* Parses the command line and picks the mode. Returns -1 to go on, or an exit code. */
static int setup(backupRun *r, const cliCommand *cmd, const cliEnv *env, int argc, char **argv,
                 const char **values, int *npos, const char *what)
{
    int code;
    const char *hostOpt;

    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    r->snapshotFd = -1;
    if (cliParseCommandArgs(cmd, argc, argv, values, npos, &code)) {
        return code;
    }
    hostOpt = VALUE(cmd->options, values, "host");
    r->repo = VALUE(cmd->options, values, "repo");
    {
        /* The S3 client reads its endpoint and region as every S3 tool does, from the
         * environment (s3.h): the flags set it for this process. */
        const char *endpoint = VALUE(cmd->options, values, "s3-endpoint");
        const char *region = VALUE(cmd->options, values, "s3-region");
        if ((endpoint != NULL || region != NULL) &&
            (r->repo == NULL || strncasecmp(r->repo, "s3://", 5) != 0)) {
            return cliUsageError(cmd, "--s3-endpoint and --s3-region go with --repo s3://...");
        }
        if (endpoint != NULL) {
            setenv("AWS_ENDPOINT_URL_S3", endpoint, 1);
        }
        if (region != NULL) {
            setenv("AWS_REGION", region, 1);
        }
    }
    if (r->repo != NULL && r->repo[0] != '\0' && strstr(r->repo, "://") == NULL) {
        /* "prog/" and "prog" name one repository: paths shown are "prog/ID.cbk". */
        snprintf(r->repoPath, sizeof r->repoPath, "%s", r->repo);
        pathClean(r->repoPath);
        r->repo = r->repoPath;
    }
    r->host = hostOpt != NULL ? hostOpt : env->host;
    r->json = VALUE(cmd->options, values, "json") != NULL;
    if (r->repo != NULL && hostOpt != NULL) {
        return cliUsageError(cmd, "--repo and --host do not go together (--repo works without "
                               "a server)");
    }
    if (r->repo != NULL && r->repo[0] == '\0') {
        return cliUsageError(cmd, "--repo needs a directory");
    }
    cliProgressInit(&r->progress, what, !r->json && cliProgressWanted());
    catchSigint();
    return -1;
}

/* Only a backup creates its repository: for the other commands a missing one is not an
 * empty one. -1 when it is there, else the exit code (after the usage checks). */
static int repoMustExist(backupRun *r)
{
    struct stat st;
    if (r->repo == NULL || strncasecmp(r->repo, "s3://", 5) == 0) {
        return -1; /* a bucket: the engine's listing says whether it is there */
    }
    if (strncmp(r->repo, "file://", 7) == 0) {
        st.st_mode = 0;
        if (stat(r->repo + 7, &st) != 0) {
            return failure(r, "repository %s does not exist", r->repo);
        }
        return S_ISDIR(st.st_mode) ? -1 : failure(r, "repository %s is not a directory", r->repo);
    }
    if (stat(r->repo, &st) != 0) {
        return failure(r, "repository %s does not exist", r->repo);
    }
    if (!S_ISDIR(st.st_mode)) {
        return failure(r, "repository %s is not a directory", r->repo);
    }
    return -1;
}

static int needId(backupRun *r, int npos)
{
    if (npos == 0) {
        return cliUsageError(r->cmd, "no backup ID given");
    }
    if (npos > 1) {
        return cliUsageError(r->cmd, "one backup ID expected, %d given", npos);
    }
    return -1;
}

static int runCreate(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    const char *typeName, *to, *db, *node, *compression;
    char path[64];
    backupRun r;
    json_t *entry = NULL;
    json_t *answer = NULL;
    json_t *body = NULL;
    int npos, type, code, codec = BACKUP_CODEC_DEFAULT, level = 0;

    code = setup(&r, cmd, env, argc, argv, values, &npos, "backup");
    if (code >= 0) {
        return code;
    }
    typeName = VALUE(createOptions, values, "type");
    to = VALUE(createOptions, values, "to");
    db = VALUE(createOptions, values, "db");
    node = VALUE(createOptions, values, "node");
    compression = VALUE(createOptions, values, "compression");
    if (compression != NULL) {
        char why[CAIRN_ERRMSG_SIZE];
        if (backupParseCompression(compression, &codec, &level, why) != 0) {
            return cliUsageError(cmd, "%s", why);
        }
        if (db == NULL) {
            return cliUsageError(cmd, "--compression is for a standalone backup (--db FILE --repo "
                                      "DIR); cairnd's backups follow its --backup-compression");
        }
    }
    type = typeName != NULL ? backupTypeFromName(typeName) : BACKUP_FULL;
    if (type < 0) {
        return cliUsageError(cmd, "invalid type '%s': expected full, incremental or differential",
                          typeName);
    }
    if (npos > 0) {
        return cliUsageError(cmd, "unexpected argument '%s'", argv[1]);
    }
    if (db != NULL && r.repo == NULL) {
        return cliUsageError(cmd, "--db needs --repo DIR (where to write the backup)");
    }
    if (r.repo != NULL && db == NULL) {
        return cliUsageError(cmd, "--repo needs --db FILE (the database to back up)");
    }
    if (r.repo != NULL && to != NULL) {
        return cliUsageError(cmd, "--to is for a server; a standalone backup goes to --repo DIR");
    }
    if (node != NULL && (r.repo != NULL || node[0] < '1' || node[0] > '9' ||
                         strspn(node, "0123456789") != strlen(node) || strlen(node) > 19)) {
        return cliUsageError(cmd, r.repo != NULL ? "--node is for a server, not --repo"
                                              : "--node needs a node id (a positive integer)");
    }
    snprintf(path, sizeof path, "/admin/backup%s", r.progress.enabled ? "?progress" : "");
    if (node != NULL) {
        /* ?node=ID: cairnd runs the backup on that node, into its own repository. */
        size_t used = strlen(path);
        snprintf(path + used, sizeof path - used, "%cnode=%s", r.progress.enabled ? '&' : '?',
                 node);
    }

    if (r.repo != NULL) {
        code = standaloneCreate(&r, db, type, codec, level, &entry);
    } else {
        code = serverOpen(&r);
        if (code != CLI_EXIT_OK) {
            goto out;
        }
        body = json_pack("{s:s}", "type", backupTypeName(type));
        if (body == NULL || (to != NULL && json_object_set_new(body, "to", json_string(to)))) {
            code = failure(&r, "out of memory");
            goto out;
        }
        code = serverCall(&r, path, body, "backup", &answer);
        if (code != CLI_EXIT_OK) {
            goto out;
        }
        entry = json_incref(json_object_get(answer, "backup"));
        if (!json_is_object(entry)) {
            code = failure(&r, "cairnd's answer has no \"backup\" object");
            goto out;
        }
    }
    if (code != CLI_EXIT_OK) {
        goto out;
    }
    if (r.json) {
        code = printJson(&r, entry);
    } else {
        printEntry(entry);
    }

out:
    json_decref(entry);
    json_decref(answer);
    json_decref(body);
    cliHttpClose(&r.http);
    return code;
}

/* The catalog as a JSON array, written entry by entry: what printJson() would print
 * for the array of entryJson()s, without holding that tree (a repository of 10,000
 * backups would take more memory as JSON objects than as the entries themselves). */
static int printEntries(backupRun *r, const struct backup_info *infos, size_t n)
{
    struct buf b;
    bufInit(&b);
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        bufReset(&b);
        if (i > 0) {
            bufPutc(&b, ',');
        }
        backupInfoJson(&infos[i], &b);
        if (b.oom) {
            bufFree(&b);
            return failure(r, "out of memory");
        }
        fwrite(b.p, 1, b.len, stdout);
    }
    bufFree(&b);
    puts("]");
    return CLI_EXIT_OK;
}

static int runList(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    backupRun r;
    json_t *answer = NULL;
    json_t *entries = NULL;
    struct backup_info *infos = NULL;
    size_t n = 0;
    int npos, code;

    code = setup(&r, cmd, env, argc, argv, values, &npos, "list");
    if (code >= 0) {
        return code;
    }
    if (npos > 0) {
        return cliUsageError(cmd, "unexpected argument '%s'", argv[1]);
    }
    if (repoMustExist(&r) >= 0) {
        return CLI_EXIT_FAIL;
    }
    if (r.repo != NULL) {
        if (repoList(r.repo, &infos, &n, errmsg) != 0) {
            code = failure(&r, "%s", errmsg);
            goto out;
        }
        if (r.json) {
            code = printEntries(&r, infos, n);
            goto out;
        }
        entries = json_array();
        if (entries == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            /* The table's fields only, and the entries freed before it is printed: a
             * repository of 10,000 backups, whole, would take tens of MiB twice over. */
            static const char *const unused[] = {"created_ms", "raft_index", "raft_term",
                                                 "page_size", "verified_at", "digest",
                                                 "parent_digest", "source", "history",
                                                 "compression"};
            json_t *e = entryJson(&infos[i]);
            for (size_t k = 0; e != NULL && k < sizeof unused / sizeof unused[0]; k++) {
                json_object_del(e, unused[k]);
            }
            if (json_array_append_new(entries, e) != 0) {
                code = failure(&r, "out of memory");
                goto out;
            }
        }
        free(infos);
        infos = NULL;
    } else {
        code = serverOpen(&r);
        if (code != CLI_EXIT_OK) {
            goto out;
        }
        code = serverCall(&r, "/admin/backups", NULL, NULL, &answer);
        if (code != CLI_EXIT_OK) {
            goto out;
        }
        entries = json_incref(json_object_get(answer, "backups"));
        if (!json_is_array(entries)) {
            code = failure(&r, "cairnd's answer has no \"backups\" array");
            goto out;
        }
    }
    code = r.json ? printJson(&r, entries) : printCatalog(&r, entries);
    if (json_array_size(json_object_get(answer, "unreachable")) > 0) {
        size_t k;
        json_t *v;
        fprintf(stderr, "warning: the backups of node");
        json_array_foreach(json_object_get(answer, "unreachable"), k, v)
        {
            fprintf(stderr, "%s %lld", k ? "," : "", (long long)json_integer_value(v));
        }
        fprintf(stderr, " are not listed: it did not answer\n");
    }

out:
    free(infos);
    json_decref(entries);
    json_decref(answer);
    cliHttpClose(&r.http);
    return code;
}

static int runShow(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char path[512];
    backupRun r;
    struct backup_info *info = NULL;
    json_t *answer = NULL;
    json_t *entry = NULL;
    int npos, code;

    code = setup(&r, cmd, env, argc, argv, values, &npos, "show");
    if (code >= 0) {
        return code;
    }
    if ((code = needId(&r, npos)) >= 0) {
        return code;
    }
    if (repoMustExist(&r) >= 0) {
        return CLI_EXIT_FAIL;
    }
    code = CLI_EXIT_OK;
    if (r.repo != NULL) {
        info = calloc(1, sizeof *info);
        if (info == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
        if (repoFind(r.repo, argv[1], info, errmsg) != 0) {
            code = failure(&r, "%s", errmsg);
            goto out;
        }
        entry = entryJson(info);
        if (entry == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
    } else {
        if ((code = serverOpen(&r)) != CLI_EXIT_OK ||
            (code = idPath(&r, "/admin/backups", argv[1], "", path, sizeof path)) != CLI_EXIT_OK ||
            (code = serverCall(&r, path, NULL, NULL, &answer)) != CLI_EXIT_OK) {
            goto out;
        }
        entry = json_incref(json_object_get(answer, "backup"));
        if (!json_is_object(entry)) {
            code = failure(&r, "cairnd's answer has no \"backup\" object");
            goto out;
        }
    }
    if (r.json) {
        code = printJson(&r, entry);
    } else {
        printEntry(entry);
    }

out:
    free(info);
    json_decref(entry);
    json_decref(answer);
    cliHttpClose(&r.http);
    return code;
}

static int runVerify(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char path[512];
    char took[32];
    backupRun r;
    struct backup_info *info = NULL;
    json_t *outcome = NULL;
    json_t *body = NULL;
    const char *id;
    const char *error;
    int64_t start;
    int npos, code, trial;

    code = setup(&r, cmd, env, argc, argv, values, &npos, "verify");
    if (code >= 0) {
        return code;
    }
    if ((code = needId(&r, npos)) >= 0) {
        return code;
    }
    if (repoMustExist(&r) >= 0) {
        return CLI_EXIT_FAIL;
    }
    code = CLI_EXIT_OK;
    trial = VALUE(verifyOptions, values, "restore") != NULL;
    start = cliNowNs();
    if (r.repo != NULL) {
        int rc;
        /* The id for the outcome, and "no such backup" as an error of its own rather
         * than as a verification that failed. */
        info = calloc(1, sizeof *info);
        if (info == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
        if (repoFind(r.repo, argv[1], info, errmsg) != 0) {
            code = failure(&r, "%s", errmsg);
            goto out;
        }
        hardStopNote = noteFor(&r, noteVerify);
        rc = backupVerify(r.repo, argv[1], trial, onEngineProgress, &r, errmsg);
        hardStopNote = NULL;
        cliProgressClear(&r.progress);
        outcome =
            json_pack("{s:s, s:b, s:b}", "id", info->id, "ok", rc == 0, "trial_restore", trial);
        /* "error" is always there: null when the backup is sound (README). */
        if (outcome == NULL ||
            json_object_set_new(outcome, "error", rc != 0 ? json_string(errmsg) : json_null()) != 0) {
            code = failure(&r, "out of memory");
            goto out;
        }
    } else {
        body = json_pack("{s:b}", "restore", trial);
        if (body == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
        if ((code = serverOpen(&r)) != CLI_EXIT_OK ||
            (code = idPath(&r, "/admin/backups", argv[1],
                           r.progress.enabled ? "/verify?progress" : "/verify", path,
                           sizeof path)) != CLI_EXIT_OK ||
            (code = serverCall(&r, path, body, "verification", &outcome)) != CLI_EXIT_OK) {
            goto out;
        }
        if (!json_is_boolean(json_object_get(outcome, "ok"))) {
            code = failure(&r, "cairnd's answer has no \"ok\"");
            goto out;
        }
    }
    id = jstr(outcome, "id") != NULL ? jstr(outcome, "id") : argv[1];
    error = jstr(outcome, "error");
    cliFormatDuration((cliNowNs() - start) / 1000000, took, sizeof took);
    if (r.json) {
        code = printJson(&r, outcome);
    } else if (json_is_true(json_object_get(outcome, "ok"))) {
        printf("backup %s is sound: every checksum and link of its chain checks out%s (%s)\n", id,
               json_is_true(json_object_get(outcome, "trial_restore"))
                   ? ", and a trial restore passed PRAGMA integrity_check"
                   : "",
               took);
    }
    if (!json_is_true(json_object_get(outcome, "ok"))) {
        code = failure(&r, "%s", error != NULL ? error : "verification failed");
    }

out:
    free(info);
    json_decref(outcome);
    json_decref(body);
    cliHttpClose(&r.http);
    return code;
}

/* The restore's last step before its file is put in place (restore_options.finish):
 * leave cairn's own table out unless asked to keep it (arg: the bool that says it was
 * left out; NULL: keep it); from here on Ctrl-C no longer stops the restore. */
static int finishRestore(const char *path, void *arg, char *errmsg)
{
    int rv = arg != NULL ? exportStripInternal(path, arg, errmsg) : 0;
    if (rv == 0) {
        restorePlacing = 1;
    }
    return rv;
}

static int runRestore(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    bool stripped = false;
    const char *values[MAX_OPTIONS];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char took[32], size[32];
    backupRun r;
    struct backup_info *info = NULL;
    json_t *outcome = NULL;
    json_t *body = NULL;
    const json_t *restored;
    const char *branch, *out, *force, *keep, *check;
    struct dirlock held = DIRLOCK_NONE;
    int level = RESTORE_CHECK_QUICK;
    int64_t start;
    int npos, code;

    code = setup(&r, cmd, env, argc, argv, values, &npos, "restore");
    if (code >= 0) {
        return code;
    }
    /* Said as a usage error, not as the engine's "invalid arguments" (exit 1). */
    out = VALUE(restoreOptions, values, "out");
    if (out != NULL && out[0] == '\0') {
        return cliUsageError(cmd, "--out needs a file name");
    }
    {
        /* A point in time (archive.c): --to-index, --to-time, or "latest" with an
         * archive in the repository: a base backup + the archived entries after it. */
        const char *toIndex = VALUE(restoreOptions, values, "to-index");
        const char *toTime = VALUE(restoreOptions, values, "to-time");
        /* "latest" alone is the newest backup when the repository has no archive. */
        bool latest = false;
        if (npos == 1 && strcmp(argv[1], "latest") == 0 && r.repo != NULL) {
            int has = cliRepoHasArchive(r.repo, errmsg);
            if (has < 0) {
                return failure(&r, "%s", errmsg);
            }
            latest = has == 1;
        }
        if (toIndex != NULL || toTime != NULL || latest) {
            const char *chk = VALUE(restoreOptions, values, "check");
            if (r.repo == NULL || VALUE(restoreOptions, values, "out") == NULL) {
                return cliUsageError(cmd, "a point-in-time restore needs --repo URL and --out FILE");
            }
            if ((toIndex != NULL) + (toTime != NULL) + (npos > 0) != 1) {
                return cliUsageError(cmd, "give one of --to-index N, --to-time TIME or latest");
            }
            if (chk != NULL && strcmp(chk, "full") != 0 && strcmp(chk, "quick") != 0) {
                return cliUsageError(cmd, "--check takes quick or full, not \"%s\"", chk);
            }
            if (repoMustExist(&r) >= 0) {
                return CLI_EXIT_FAIL;
            }
            return cliPitrRestore(r.repo, toIndex, toTime, latest,
                                  VALUE(restoreOptions, values, "out"),
                                  VALUE(restoreOptions, values, "force") != NULL,
                                  VALUE(restoreOptions, values, "keep-internal") != NULL,
                                  chk != NULL && strcmp(chk, "full") == 0 ? RESTORE_CHECK_FULL
                                                                          : RESTORE_CHECK_QUICK,
                                  r.json);
        }
    }
    if ((code = needId(&r, npos)) >= 0) {
        return code;
    }
    code = CLI_EXIT_OK;
    branch = VALUE(restoreOptions, values, "branch");
    out = VALUE(restoreOptions, values, "out");
    force = VALUE(restoreOptions, values, "force");
    keep = VALUE(restoreOptions, values, "keep-internal");
    check = VALUE(restoreOptions, values, "check");
    if (r.repo != NULL && out == NULL) {
        return cliUsageError(cmd, "--repo needs --out FILE (the database file to create)");
    }
    if (r.repo == NULL && (out != NULL || force != NULL || keep != NULL || check != NULL)) {
        return cliUsageError(cmd, "--%s is for a standalone restore, with --repo DIR",
                             out != NULL     ? "out"
                             : force != NULL ? "force"
                             : keep != NULL  ? "keep-internal"
                                             : "check");
    }
    if (check != NULL && strcmp(check, "full") == 0) {
        level = RESTORE_CHECK_FULL;
    } else if (check != NULL && strcmp(check, "quick") != 0) {
        return cliUsageError(cmd, "--check takes quick or full, not \"%s\"", check);
    }
    if (r.repo != NULL && branch != NULL) {
        return cliUsageError(cmd, "--branch is for a server; a standalone restore writes --out "
                               "FILE");
    }
    if (branch != NULL && branch[0] == '\0') {
        return cliUsageError(cmd, "--branch needs a name");
    }
    start = cliNowNs();
    if (repoMustExist(&r) >= 0) {
        return CLI_EXIT_FAIL;
    }
    if (r.repo != NULL) {
        struct restore_options opt = {0};
        char abs[PATH_MAX];
        int rc;

        if (cliClaimOut(out, force != NULL, &held, errmsg) != 0) {
            code = failure(&r, "%s", errmsg);
            goto out;
        }

        info = calloc(1, sizeof *info);
        if (info == NULL) {
            code = failure(&r, "out of memory");
            goto out;
        }
        opt.repo = r.repo;
        opt.ref = argv[1];
        opt.out = out;
        opt.force = force != NULL;
        opt.check = level;
        opt.progress = onEngineProgress;
        opt.progress_arg = &r;
        /* A user's file: cairn's own table (of a server's backup) is left out. */
        opt.finish = finishRestore;
        opt.finish_arg = keep == NULL ? &stripped : NULL;
        snprintf(restoreStopNote, sizeof restoreStopNote,
                 "%scairn: restore stopped; nothing was put at %s\n",
                 r.progress.enabled ? "\r\033[K" : "", out);
        hardStopNote = noteFor(&r, notePlacing);
        restorePlacing = 0;
        restoreStoppable = 1;
        rc = backupRestore(&opt, info, errmsg);
        restoreStoppable = 0;
        hardStopNote = NULL;
        cliProgressClear(&r.progress);
        if (rc != 0) {
            code = failure(&r, "%s", errmsg);
            goto out;
        }
        outcome = json_object();
        if (outcome == NULL || json_object_set_new(outcome, "restored", entryJson(info)) != 0 ||
            json_object_set_new(outcome, "out",
                                json_string(realpath(out, abs) != NULL ? abs : out)) != 0 ||
            json_object_set_new(outcome, "left_out",
                                stripped ? json_pack("[s]", EXPORT_INTERNAL_TABLE)
                                         : json_array()) != 0 ||
            json_object_set_new(outcome, "check", json_string(backupCheckName(level))) != 0) {
            code = failure(&r, "out of memory");
            goto out;
        }
    } else {
        body = json_pack("{s:s}", "backup_id", argv[1]);
        if (body == NULL ||
            (branch != NULL && json_object_set_new(body, "branch", json_string(branch)) != 0)) {
            code = failure(&r, "out of memory");
            goto out;
        }
        if ((code = serverOpen(&r)) != CLI_EXIT_OK ||
            (code =
                 serverCall(&r, r.progress.enabled ? "/admin/restore?progress" : "/admin/restore",
                            body, "restore", &outcome)) != CLI_EXIT_OK) {
            goto out;
        }
    }
    restored = json_object_get(outcome, "restored");
    if (!json_is_object(restored)) {
        code = failure(&r, "cairnd's answer has no \"restored\" object");
        goto out;
    }
    if (r.json) {
        code = printJson(&r, outcome);
        goto out;
    }
    cliFormatDuration((cliNowNs() - start) / 1000000, took, sizeof took);
    printf("restored backup %s (%s, %lld pages, %s) ", jstr(restored, "id"),
           jstr(restored, "type") != NULL ? jstr(restored, "type") : "?",
           (long long)jint(restored, "page_count"),
           cliFormatBytes((uint64_t)jint(restored, "page_count") *
                              (uint64_t)jint(restored, "page_size"),
                          size, sizeof size));
    if (r.repo != NULL) {
        printf("into %s%s", jstr(outcome, "out"),
               stripped ? " (cairn's own table " EXPORT_INTERNAL_TABLE " left out)" : "");
    } else if (jstr(outcome, "branch") != NULL) {
        printf("into branch %s", jstr(outcome, "branch"));
    } else {
        printf("into the live database at raft index %lld", (long long)jint(outcome, "raft_index"));
    }
    printf(" in %s", took);
    if (jstr(outcome, "check") != NULL) {
        printf(" (PRAGMA %s ok)", jstr(outcome, "check"));
    }
    printf("\n");

out:
    lockRelease(&held);
    free(info);
    json_decref(outcome);
    json_decref(body);
    cliHttpClose(&r.http);
    return code;
}

/* ---- expire ------------------------------------------------------------------------- */

/* A count option: a whole number 0..1000000 into *out (0 when absent). -1 to go on, or
 * the exit code of a usage error. */
static int countOption(const cliCommand *cmd, const char *name, const char *v, unsigned *out)
{
    char *end;
    unsigned long n;
    *out = 0;
    if (v == NULL) {
        return -1;
    }
    n = strtoul(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || n > 1000000) {
        return cliUsageError(cmd, "--%s takes a whole number of backups (0 to 1000000), not \"%s\"",
                             name, v);
    }
    *out = (unsigned)n;
    return -1;
}

static void onExpireProgress(void *arg, uint64_t done, uint64_t total)
{
    cliProgressUpdate(arg, done, total);
}

/* The readable report: every backup with KEEP or EXPIRE and why; when any archive
 * segment goes, every segment with KEEP or EXPIRE and why; then the totals. */
static int printExpire(backupRun *r, const struct expire_report *rep)
{
    char errmsg[CLI_ERRMSG_SIZE];
    char kb[32], eb[32], sb[32], gb[32];
    uint64_t gone_bytes = 0, seg_gone_bytes = 0;
    json_t *result = json_pack("{s:[s,s,s,s,s,s], s:[]}", "columns", "ID", "TYPE",
                               "CREATED (UTC)", "SIZE", "ACTION", "REASON", "values");
    int rc = result == NULL ? CLI_ERR_NOMEM : 0;

    if (rep->n == 0) {
        printf("no backups\n");
    }
    for (size_t i = 0; rc == 0 && i < rep->n; i++) {
        const struct expire_item *it = &rep->items[i];
        char iso[32], created[32], size[32];
        const char *cells[6];
        libIso8601(it->created_ms, LIB_ISO8601_MS, iso);
        shortTime(it->damaged ? NULL : iso, created, sizeof created);
        cells[0] = it->id;
        cells[1] = it->damaged ? "DAMAGED" : backupTypeName(it->type);
        cells[2] = created;
        cells[3] = cliFormatBytes(it->size_bytes, size, sizeof size);
        cells[4] = it->keep ? "KEEP" : (it->removed ? "EXPIRED" : "EXPIRE");
        cells[5] = it->reason;
        rc = appendRow(json_object_get(result, "values"), cells, 6);
    }
    if (rc == 0 && rep->n > 0) {
        rc = cliTablePrint(stdout, result, CLI_MODE_TABLE, errmsg, sizeof errmsg);
    }
    json_decref(result);
    result = NULL;
    if (rc == 0 && rep->segs_expired > 0) {
        result = json_pack("{s:[s,s,s,s], s:[]}", "columns", "SEGMENT", "INDEXES", "ACTION",
                           "REASON", "values");
        rc = result == NULL ? CLI_ERR_NOMEM : 0;
        for (size_t k = 0; rc == 0 && k < rep->nsegs; k++) {
            const struct expire_segment *s = &rep->segs[k];
            char range[64];
            const char *cells[4];
            snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)s->first,
                     (unsigned long long)s->last);
            cells[0] = s->name;
            cells[1] = range;
            cells[2] = s->keep ? "KEEP" : (s->removed ? "EXPIRED" : "EXPIRE");
            cells[3] = s->reason;
            rc = appendRow(json_object_get(result, "values"), cells, 4);
        }
        if (rc == 0) {
            printf("\n");
            rc = cliTablePrint(stdout, result, CLI_MODE_TABLE, errmsg, sizeof errmsg);
        }
        json_decref(result);
    }
    if (rc == CLI_ERR_NOMEM) {
        return failure(r, "out of memory printing the report");
    }
    if (rc != 0) {
        return failure(r, "%s", errmsg);
    }
    if (rep->empty_policy) {
        printf("no retention rule: nothing expired\n");
        return CLI_EXIT_OK;
    }
    /* An expiry stopped by a failed deletion says what it did delete, not what it
     * meant to: the totals are of the objects removed, beside those expired. */
    for (size_t i = 0; i < rep->n; i++) {
        gone_bytes += rep->items[i].removed ? rep->items[i].size_bytes : 0;
    }
    for (size_t k = 0; k < rep->nsegs; k++) {
        seg_gone_bytes += rep->segs[k].removed ? rep->segs[k].size_bytes : 0;
    }
    printf("\n%s: %zu kept (%s), ", rep->dry_run ? "dry run" : "backups", rep->kept,
           cliFormatBytes(rep->kept_bytes, kb, sizeof kb));
    if (rep->dry_run || rep->removed == rep->expired) {
        printf("%zu %s (%s)", rep->expired, rep->dry_run ? "would be deleted" : "deleted",
               cliFormatBytes(rep->expired_bytes, eb, sizeof eb));
    } else {
        printf("%zu expired (%s) of which %zu deleted (%s)", rep->expired,
               cliFormatBytes(rep->expired_bytes, eb, sizeof eb), rep->removed,
               cliFormatBytes(gone_bytes, gb, sizeof gb));
    }
    if (rep->nsegs > 0 && (rep->dry_run || rep->segs_removed == rep->segs_expired)) {
        printf("; archive: %zu of %zu segments %s (%s)", rep->segs_expired, rep->nsegs,
               rep->dry_run ? "would be deleted" : "deleted",
               cliFormatBytes(rep->seg_bytes_expired, sb, sizeof sb));
    } else if (rep->nsegs > 0) {
        printf("; archive: %zu of %zu segments expired (%s) of which %zu deleted (%s)",
               rep->segs_expired, rep->nsegs, cliFormatBytes(rep->seg_bytes_expired, sb, sizeof sb),
               rep->segs_removed, cliFormatBytes(seg_gone_bytes, gb, sizeof gb));
    }
    if (rep->sidecars_removed > 0) {
        printf("; %u verification record%s left without %s backup %s", rep->sidecars_removed,
               rep->sidecars_removed == 1 ? "" : "s", rep->sidecars_removed == 1 ? "its" : "their",
               rep->dry_run ? "would be removed" : "removed");
    }
    printf("%s\n", rep->dry_run ? "; nothing deleted" : "");
    if (rep->archive_note[0] != '\0') {
        printf("archive: %s\n", rep->archive_note);
    }
    return CLI_EXIT_OK;
}

static int runExpire(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct retention pol;
    struct expire_report rep;
    struct repo *repo = NULL;
    const char *within, *nowText, *endpoint, *region;
    int64_t now = 0;
    backupRun r;
    int npos, code, rc;

    (void)env;
    memset(&r, 0, sizeof r);
    memset(&pol, 0, sizeof pol);
    r.cmd = cmd;
    r.snapshotFd = -1;
    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    if (npos > 0) {
        return cliUsageError(cmd, "unexpected argument '%s'", argv[1]);
    }
    r.repo = VALUE(expireOptions, values, "repo");
    if (r.repo == NULL || r.repo[0] == '\0') {
        return cliUsageError(cmd, "--repo DIR|URL is required (expiry works on a repository)");
    }
    endpoint = VALUE(expireOptions, values, "s3-endpoint");
    region = VALUE(expireOptions, values, "s3-region");
    if ((endpoint != NULL || region != NULL) && strncasecmp(r.repo, "s3://", 5) != 0) {
        return cliUsageError(cmd, "--s3-endpoint and --s3-region go with --repo s3://...");
    }
    if (endpoint != NULL) {
        setenv("AWS_ENDPOINT_URL_S3", endpoint, 1);
    }
    if (region != NULL) {
        setenv("AWS_REGION", region, 1);
    }
    if (strstr(r.repo, "://") == NULL) {
        snprintf(r.repoPath, sizeof r.repoPath, "%s", r.repo);
        pathClean(r.repoPath);
        r.repo = r.repoPath;
    }
    if ((code = countOption(cmd, "keep-full", VALUE(expireOptions, values, "keep-full"),
                            &pol.keep_full)) >= 0 ||
        (code = countOption(cmd, "keep-daily", VALUE(expireOptions, values, "keep-daily"),
                            &pol.keep_daily)) >= 0 ||
        (code = countOption(cmd, "keep-weekly", VALUE(expireOptions, values, "keep-weekly"),
                            &pol.keep_weekly)) >= 0 ||
        (code = countOption(cmd, "keep-monthly", VALUE(expireOptions, values, "keep-monthly"),
                            &pol.keep_monthly)) >= 0) {
        return code;
    }
    within = VALUE(expireOptions, values, "keep-within");
    if (within != NULL && retentionParseDuration(within, &pol.keep_within_ms) != 0) {
        return cliUsageError(cmd,
                             "--keep-within takes a duration such as 30s, 15m, 1h, 7d or 2w, "
                             "not \"%s\"",
                             within);
    }
    if (retentionIsEmpty(&pol)) {
        return cliUsageError(cmd, "no retention rule given: --keep-full N, --keep-within DUR, "
                                  "--keep-daily N, --keep-weekly N or --keep-monthly N (a rule "
                                  "of 0 is no rule)");
    }
    nowText = VALUE(expireOptions, values, "now");
    if (nowText != NULL && cliParseTime(nowText, &now) != 0) {
        return cliUsageError(cmd, "--now takes an ISO-8601 time (2026-12-02T10:02:00Z) or Unix "
                                  "milliseconds, not \"%s\"",
                             nowText);
    }
    r.json = VALUE(expireOptions, values, "json") != NULL;
    cliProgressInit(&r.progress, "expire", !r.json && cliProgressWanted());
    /* Opened first, so that an unknown scheme is named as such; a directory that is
     * not there is no empty repository (nothing to expire there is a mistyped path). */
    if (repoOpen(r.repo, &repo, errmsg) != 0) {
        return failure(&r, "%s", errmsg);
    }
    if (repoLocalPath(repo) != NULL && repoMustExist(&r) >= 0) {
        repoClose(repo);
        return CLI_EXIT_FAIL;
    }
    rc = backupExpireProgress(repo, &pol, nowText != NULL ? now : libNowMs(),
                              VALUE(expireOptions, values, "dry-run") != NULL, onExpireProgress,
                              &r.progress, &rep, errmsg);
    cliProgressClear(&r.progress);
    repoClose(repo);
    if (rc != 0 && rep.items == NULL && rep.segs == NULL) {
        return failure(&r, "%s", errmsg);
    }
    if (r.json) {
        json_t *doc = expireReportJson(&rep);
        if (doc != NULL && rc != 0) {
            json_object_set_new(doc, "error", json_string(errmsg));
        }
        code = doc != NULL ? printJson(&r, doc) : failure(&r, "out of memory");
        json_decref(doc);
    } else {
        code = printExpire(&r, &rep);
    }
    if (rc != 0) {
        code = failure(&r, "%s (%zu of %zu expired backups and %zu of %zu segments removed "
                           "before it stopped; run it again)",
                       errmsg, rep.removed, rep.expired, rep.segs_removed, rep.segs_expired);
    }
    expireReportFree(&rep);
    return code;
}

/* ---- the command tables -------------------------------------------------------------- */

static const cliCommand createCommand = {
    .name = "backup create",
    .synopsis = "[--type TYPE] [--to REPOSITORY] [--node ID] | --db FILE --repo DIR [--type TYPE] [--compression C]",
    .summary = "Back up the database: a full, incremental or differential backup.",
    .description =
        "Against cairnd (the default), the server backs up its database at a point of its\n"
        "Raft log into one of its repositories (--to names one it was configured with:\n"
        "\"default\", a --repo NAME, or a repository's path or URL). An incremental or\n"
        "differential backup chains to the newest backup of the same repository (in a\n"
        "cluster, of any node's repository of that name). With --db FILE --repo DIR,\n"
        "no server is involved: FILE is any SQLite database, even one other programs are\n"
        "writing, and the backup goes into the repository DIR.\n"
        "\n"
        "full: every page. incremental: the pages changed since the newest backup of the\n"
        "same database. differential: the pages changed since the newest full backup.\n"
        "With nothing to chain to (the first backup into a repository), an incremental\n"
        "or differential backup is taken whole, as a full one, and its entry says full.\n"
        "Prints the new catalog entry; --json prints it as one JSON object.\n"
        "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    .options = createOptions,
    .run = runCreate,
};

static const cliCommand listCommand = {
    .name = "backup list",
    .synopsis = "[--repo DIR] [--json]",
    .summary = "List the backups (cairnd's catalog, or the repository DIR's).",
    .description = "The catalog is read from the backup files themselves. A file that cannot\n"
                   "be read is listed as DAMAGED, with the reason below the table.\n"
                   "--json prints a JSON array of catalog entries.\n",
    .options = listOptions,
    .run = runList,
};

static const cliCommand showCommand = {
    .name = "backup show",
    .synopsis = "[--repo DIR] [--json] ID",
    .summary = "Show one backup's catalog entry.",
    .description = "ID is a backup id as `cairn backup list` shows it (standalone, also the\n"
                   "path of a .cbk file). Exit status 1 when there is no such backup.\n",
    .options = showOptions,
    .run = runShow,
};

static const cliCommand verifyCommand = {
    .name = "backup verify",
    .synopsis = "[--restore] [--repo DIR] [--json] ID",
    .summary = "Check a backup and every backup its chain depends on.",
    .description =
        "Checks every checksum, the digest of every file and each parent link of the\n"
        "chain that ends at ID; with --restore, also restores the chain into a scratch\n"
        "file and runs PRAGMA integrity_check on it. The outcome is recorded beside the\n"
        "backup (see the STATUS column of `cairn backup list`).\n"
        "Exit status: 0 when the backup is sound, 1 when it is damaged (the message says\n"
        "which file and what) or the check could not run, 2 for bad usage.\n",
    .options = verifyOptions,
    .run = runVerify,
};

static const cliCommand expireCommand = {
    .name = "backup expire",
    .synopsis = "--repo DIR|URL [--keep-full N] [--keep-within DUR] [--keep-daily N]\n"
                "       [--keep-weekly N] [--keep-monthly N] [--dry-run] [--json]",
    .summary = "Delete the backups (and archive segments) a retention policy no longer keeps.",
    .description =
        "A backup stays when any rule keeps it: --keep-full N (the newest N full backups\n"
        "and every backup whose chain ends at one), --keep-within DUR (taken within DUR\n"
        "before now), --keep-daily/--keep-weekly/--keep-monthly N (the newest backup of\n"
        "each of the last N UTC days, ISO weeks or months that hold a backup). Every\n"
        "backup a kept one depends on stays with it, and so do the newest backup and the\n"
        "newest full backup of each source (what a backup running meanwhile chains to).\n"
        "Archive segments go once no kept backup needs them to roll forward. A rule set\n"
        "that keeps no backup that can be restored is refused (a backup that failed its\n"
        "verification, or whose chain runs through one, a damaged one or a missing one,\n"
        "fills no rule). Deletion is leaves first, so that a kill\n"
        "at any moment leaves every remaining chain whole; run it again to finish.\n"
        "Prints every backup with KEEP or EXPIRE and why; --dry-run deletes nothing.\n"
        "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    .options = expireOptions,
    .run = runExpire,
};

static const cliCommand *const backupSubcommands[] = {
    &createCommand, &listCommand, &showCommand, &verifyCommand, &expireCommand, NULL,
};

static int runBackup(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    return cliRunSubcommand(cmd, env, argc, argv);
}

const cliCommand cliBackupCommand = {
    .name = "backup",
    .synopsis = "SUBCOMMAND [options] [ID]",
    .summary = "Create, list, show and verify backups (of cairnd, or of any SQLite file).",
    .description = "subcommands:\n"
                   "  create   back up the database (full, incremental or differential)\n"
                   "  list     list the backups\n"
                   "  show     show one backup's catalog entry\n"
                   "  verify   check a backup's chain, optionally by a trial restore\n"
                   "  expire   delete what a retention policy no longer keeps (--repo only)\n"
                   "\n"
                   "Without --repo, each subcommand asks cairnd (--host URL, $CAIRN_HOST). With\n"
                   "--repo DIR (and --db FILE for create), it works on the repository DIR in this\n"
                   "process, with no server. See `cairn restore` to restore a backup.\n"
                   "Run \"cairn backup SUBCOMMAND --help\" for a subcommand's options.\n",
    .options = backupOptions,
    .run = runBackup,
    .subcommands = backupSubcommands,
};

const cliCommand cliRestoreCommand = {
    .name = "restore",
    .synopsis =
        "[--branch NAME] ID | --repo DIR --out FILE [--force] [--keep-internal] [--check LEVEL] ID\n"
        "       | --repo URL --out FILE (--to-index N | --to-time TIME | latest)",
    .summary = "Restore a backup (into cairnd, or into a database file).",
    .description =
        "Against cairnd (the default), the backup ID replaces the live database through\n"
        "the Raft log, so that every node of the cluster restores the same image; with\n"
        "--branch NAME it goes into a separate branch database instead and the live one\n"
        "is untouched. With --repo DIR --out FILE, no server is involved: the chain that\n"
        "ends at ID is checked, then written into FILE (which must not exist, unless\n"
        "--force); every page of FILE is checked against its hash in the backup, and\n"
        "FILE passes PRAGMA quick_check (--check full: PRAGMA integrity_check, which also\n"
        "checks every index against its table; slower) before it appears. FILE holds\n"
        "the user's schema only: cairn's own table _cairn_meta (in backups of cairnd) is\n"
        "left out, unless --keep-internal (the exact page image, as the server had it).\n"
        "FILE in use is refused, even with --force, naming the process: in the data\n"
        "directory of a running cairnd, or open in another program.\n"
        "Point in time (a repository that cairnd --archive writes into): --to-index N\n"
        "restores the newest backup at or before log index N and replays the archived\n"
        "entries after it up to N with cairn's own apply; --to-time TIME stops before\n"
        "the first entry stamped after TIME; latest (in place of ID) replays up to the\n"
        "archive's head. A target outside what the archive covers is refused with the\n"
        "restorable windows (`cairn archive list`).\n"
        "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    .options = restoreOptions,
    .run = runRestore,
};
