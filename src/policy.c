/* The statement policy and bounded execution (see policy.h). Any thread: each
 * struct policy_conn is its connection's, used by the thread using that connection. */
#define _GNU_SOURCE
#include "policy.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* How often a read looks whether its client is still there. */
#define WATCH_INTERVAL_S 0.05

/* PRAGMAs that only read, allowed with no argument. Everything else a PRAGMA can do
 * sets state of the connection or the process (lost on restart, different on each
 * node) or is cairn's to set. */
static const char *const readPragmas[] = {
    "application_id", "auto_vacuum", "automatic_index", "busy_timeout", "cache_size",
    "cache_spill", "cell_size_check", "collation_list", "compile_options", "data_version",
    "database_list", "defer_foreign_keys", "encoding", "foreign_key_check",
    "foreign_key_list", "foreign_keys", "freelist_count", "function_list",
    "ignore_check_constraints", "integrity_check", "journal_mode", "journal_size_limit",
    "legacy_alter_table", "locking_mode", "max_page_count", "mmap_size", "module_list",
    "page_count", "page_size", "pragma_list", "query_only", "quick_check",
    "recursive_triggers", "reverse_unordered_selects", "schema_version", "secure_delete",
    "soft_heap_limit", "hard_heap_limit", "synchronous", "table_list", "temp_store",
    "threads", "trusted_schema", "user_version", "wal_autocheckpoint", NULL};

/* PRAGMAs whose argument names what to read (a table, an index, a row limit). */
static const char *const readPragmasWithArg[] = {
    "foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
    "integrity_check", "quick_check", "table_info", "table_list", "table_xinfo", NULL};

/* PRAGMAs that write the database header: carried by the file, the same on every
 * node. */
static const char *const headerPragmas[] = {"user_version", "application_id", NULL};

/* Functions with effects outside the database. */
static const char *const deniedFunctions[] = {"load_extension", "fts3_tokenizer", NULL};

static bool inList(const char *const *list, const char *name)
{
    for (int i = 0; name != NULL && list[i] != NULL; i++) {
        if (strcasecmp(list[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static bool isCairnName(const char *name)
{
    return name != NULL && strncasecmp(name, "_cairn", 6) == 0;
}

static bool isTemp(const char *db)
{
    return db != NULL && strcasecmp(db, "temp") == 0;
}

static int deny(struct policy_conn *pc, const char *fmt, const char *a, const char *b)
{
    snprintf(pc->why, sizeof pc->why, fmt, a ? a : "", b ? b : "");
    return SQLITE_DENY;
}

static int authorize(void *ud, int code, const char *a, const char *b, const char *db,
                     const char *trigger)
{
    struct policy_conn *pc = ud;
    (void)trigger;
    if (pc->internal) {
        return SQLITE_OK;
    }
    switch (code) {
        case SQLITE_CREATE_TEMP_INDEX:
        case SQLITE_CREATE_TEMP_TABLE:
        case SQLITE_CREATE_TEMP_TRIGGER:
        case SQLITE_CREATE_TEMP_VIEW:
        case SQLITE_DROP_TEMP_INDEX:
        case SQLITE_DROP_TEMP_TABLE:
        case SQLITE_DROP_TEMP_TRIGGER:
        case SQLITE_DROP_TEMP_VIEW:
            return deny(pc, "temporary objects (%s) live on one connection of one node and "
                            "vanish on restart: create it in the main database%s", a, NULL);
        case SQLITE_ATTACH:
        case SQLITE_DETACH:
            return deny(pc, "ATTACH and DETACH are not allowed: only the database itself is "
                            "replicated%s%s", NULL, NULL);
        case SQLITE_TRANSACTION:
            return deny(pc, "transaction control (%s%s) is not allowed: each request is "
                            "already a transaction; use ?transaction for all-or-nothing "
                            "batches", a, NULL);
        case SQLITE_SAVEPOINT:
            return deny(pc, "savepoints (%s %s) are not allowed: each request is already a "
                            "transaction; use ?transaction for all-or-nothing batches",
                        a != NULL && strcmp(a, "BEGIN") == 0 ? "SAVEPOINT" : a, b);
        case SQLITE_PRAGMA:
            if (b == NULL && inList(readPragmas, a)) {
                return SQLITE_OK;
            }
            if (b != NULL && inList(readPragmasWithArg, a)) {
                return SQLITE_OK;
            }
            if (b != NULL && inList(headerPragmas, a) && !isTemp(db)) {
                return SQLITE_OK;
            }
            return deny(pc, "PRAGMA %s%s sets state that the database file does not carry (or "
                            "that is cairn's to set); only PRAGMAs that read, and user_version "
                            "and application_id, are allowed",
                        a, b != NULL ? " with an argument" : "");
        case SQLITE_FUNCTION:
            if (inList(deniedFunctions, b)) {
                return deny(pc, "function %s%s() has effects outside the database", b, NULL);
            }
            return SQLITE_OK;
        case SQLITE_INSERT:
        case SQLITE_UPDATE:
        case SQLITE_DELETE:
        case SQLITE_DROP_TABLE:
        case SQLITE_CREATE_TABLE:
        case SQLITE_CREATE_VIEW:
        case SQLITE_DROP_VIEW:
        case SQLITE_CREATE_VTABLE:
        case SQLITE_DROP_VTABLE:
            if (isTemp(db) && !(code == SQLITE_UPDATE && a != NULL &&
                                strcasecmp(a, "sqlite_temp_master") == 0)) {
                /* (ALTER TABLE ... RENAME and DROP COLUMN update the temp schema's table,
                 * always empty here, along with the main one.) */
                return deny(pc, "writing the temp schema (%s) is not allowed: temporary "
                                "objects vanish on restart%s", a, NULL);
            }
            if (isCairnName(a)) {
                return deny(pc, "%s is cairn's own table: it cannot be changed by SQL%s", a,
                            NULL);
            }
            return SQLITE_OK;
        case SQLITE_ALTER_TABLE:
        case SQLITE_CREATE_INDEX:
        case SQLITE_CREATE_TRIGGER:
        case SQLITE_DROP_INDEX:
        case SQLITE_DROP_TRIGGER:
            if (isTemp(db) || (code == SQLITE_ALTER_TABLE && isTemp(a))) {
                return deny(pc, "changing the temp schema is not allowed: temporary objects "
                                "vanish on restart%s%s", NULL, NULL);
            }
            if (isCairnName(b) || (code == SQLITE_ALTER_TABLE && isCairnName(b))) {
                return deny(pc, "%s is cairn's own table: it cannot be changed by SQL%s", b,
                            NULL);
            }
            return SQLITE_OK;
        default:
            return SQLITE_OK;
    }
}

static double monoNow(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Is the client at the other end of fd gone (closed, reset)? Reads nothing. */
static bool clientGone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) {
        return false;
    }
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int progress(void *ud)
{
    struct policy_conn *pc = ud;
    if (pc->internal) {
        return 0;
    }
    if (pc->stop != NULL && atomic_load_explicit(pc->stop, memory_order_relaxed)) {
        pc->trip = POLICY_TRIP_STOPPING;
        return 1;
    }
    if (pc->steps != 0 && ++pc->ticks * POLICY_STEP_GRAIN > pc->steps) {
        pc->trip = POLICY_TRIP_STEPS;
        return 1;
    }
    if (pc->deadline != 0 || pc->client_fd >= 0) {
        double now = monoNow();
        if (pc->deadline != 0 && now >= pc->deadline) {
            pc->trip = POLICY_TRIP_DEADLINE;
            return 1;
        }
        if (pc->client_fd >= 0 && now >= pc->next_watch) {
            pc->next_watch = now + WATCH_INTERVAL_S;
            if (clientGone(pc->client_fd)) {
                pc->trip = POLICY_TRIP_CLIENT_GONE;
                return 1;
            }
        }
    }
    return 0;
}

void policyInstall(sqlite3 *db, struct policy_conn *pc, uint32_t max_length,
                   const atomic_bool *stop)
{
    memset(pc, 0, sizeof *pc);
    pc->client_fd = -1;
    pc->stop = stop;
    sqlite3_set_authorizer(db, authorize, pc);
    sqlite3_progress_handler(db, POLICY_STEP_GRAIN, progress, pc);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH,
                  (int)(max_length == 0 ? POLICY_DEFAULT_MAX_LENGTH
                        : max_length > POLICY_MAX_LENGTH_CAP ? POLICY_MAX_LENGTH_CAP
                                                             : max_length));
}

void policyWriteBegin(struct policy_conn *pc, uint64_t steps)
{
    pc->steps = steps;
    pc->ticks = 0;
    pc->deadline = 0;
    pc->client_fd = -1;
    pc->trip = POLICY_TRIP_NONE;
    pc->why[0] = '\0';
}

void policyReadBegin(struct policy_conn *pc, uint32_t timeout_ms, int client_fd)
{
    double now = monoNow();
    pc->steps = 0;
    pc->ticks = 0;
    pc->timeout_ms = timeout_ms;
    pc->deadline = timeout_ms ? now + timeout_ms / 1000.0 : 0;
    pc->client_fd = client_fd;
    pc->next_watch = now + WATCH_INTERVAL_S;
    pc->trip = POLICY_TRIP_NONE;
    pc->why[0] = '\0';
}

void policyEnd(struct policy_conn *pc)
{
    pc->steps = 0;
    pc->deadline = 0;
    pc->client_fd = -1;
}

int policyCheckText(const char *sql, size_t n, char *msg, size_t msgsize)
{
    const char *nul = memchr(sql, '\0', n);
    size_t i = 0;
    if (nul != NULL) {
        snprintf(msg, msgsize, "the statement holds a NUL byte at offset %zu: SQL text may not "
                               "contain one (send binary data as a parameter)",
                 (size_t)(nul - sql));
        return -1;
    }
    /* Anything but blanks and comments? */
    while (i < n) {
        char c = sql[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == ';') {
            i++;
        } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n') {
                i++;
            }
        } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
            const char *end = memmem(sql + i + 2, n - i - 2, "*/", 2);
            i = end != NULL ? (size_t)(end - sql) + 2 : n;
        } else {
            return 0;
        }
    }
    snprintf(msg, msgsize, "the statement is empty (only blanks, comments or ';')");
    return -1;
}

bool policyCheckPrepared(struct policy_conn *pc, sqlite3_stmt *ps, char *msg, size_t msgsize)
{
    const char *sql = sqlite3_sql(ps);
    size_t i = 0;
    if (pc->internal || sql == NULL) {
        return true;
    }
    while (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r') {
        i++;
    }
    /* A trigger's body is authorized only when the trigger fires: one that writes
     * cairn's tables, or calls a refused function, would be accepted here and make
     * every later write that fires it fail. */
    if (strncasecmp(sql + i, "CREATE", 6) == 0 && strcasestr(sql + i, "TRIGGER") != NULL) {
        if (strcasestr(sql + i, "_cairn") != NULL) {
            snprintf(msg, msgsize, "refused by cairn's statement policy: a trigger may not "
                                   "name cairn's own tables (_cairn...)");
            return false;
        }
        for (int k = 0; deniedFunctions[k] != NULL; k++) {
            if (strcasestr(sql + i, deniedFunctions[k]) != NULL) {
                snprintf(msg, msgsize, "refused by cairn's statement policy: a trigger may not "
                                       "call %s(), which has effects outside the database",
                         deniedFunctions[k]);
                return false;
            }
        }
    }
    return true;
}

const char *policyMessage(struct policy_conn *pc, int rc, char *buf, size_t size)
{
    if ((rc & 0xff) != SQLITE_INTERRUPT) {
        /* The authorizer refused something while this statement was prepared (its why
         * is reset before each prepare). SQLite reports that as SQLITE_AUTH, as
         * SQLITE_SCHEMA while it (re)reads the temp schema, or as a plain SQLITE_ERROR
         * "not authorized to use function". */
        if (pc->why[0] == '\0') {
            return NULL;
        }
        snprintf(buf, size, "refused by cairn's statement policy: %s", pc->why);
        return buf;
    }
    switch (pc->trip) {
        case POLICY_TRIP_STEPS:
            snprintf(buf, size, "the statement exceeded the write step limit of %llu "
                                "virtual-machine steps and was rolled back on every node; raise "
                                "it with cairnd --write-step-limit on the leader",
                     (unsigned long long)pc->steps);
            return buf;
        case POLICY_TRIP_DEADLINE:
            snprintf(buf, size, "the query exceeded its time limit of %.3g s and was "
                                "interrupted; raise it with ?db_timeout=DURATION on the request "
                                "or cairnd --query-timeout",
                     pc->timeout_ms / 1000.0);
            return buf;
        case POLICY_TRIP_CLIENT_GONE:
            snprintf(buf, size, "the query was interrupted: its client closed the connection");
            return buf;
        case POLICY_TRIP_STOPPING:
            snprintf(buf, size, "interrupted: the node is shutting down");
            return buf;
        default:
            return NULL;
    }
}

int policyParseDuration(const char *text, uint32_t *ms)
{
    char *end;
    double v;
    double unit = 1000;
    if (text == NULL || text[0] == '\0' || text[0] == '-' || text[0] == '+' || text[0] == ' ') {
        return -1;
    }
    v = strtod(text, &end);
    if (end == text || !isfinite(v)) {
        return -1;
    }
    if (strcmp(end, "ms") == 0) {
        unit = 1;
    } else if (strcmp(end, "s") == 0 || *end == '\0') {
        unit = 1000;
    } else if (strcmp(end, "m") == 0) {
        unit = 60000;
    } else if (strcmp(end, "h") == 0) {
        unit = 3600000;
    } else {
        return -1;
    }
    v *= unit;
    if (!(v >= 1) || v > 86400000.0) {
        return -1;
    }
    *ms = (uint32_t)llround(v);
    return 0;
}
