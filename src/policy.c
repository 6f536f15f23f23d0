/* The statement policy and bounded execution (see policy.h). Any thread: each
 * struct policy_conn is its connection's, used by the thread using that connection. */
#define _GNU_SOURCE
/* sqlite3.h declares the preupdate hook (the write growth bound, growthHook) only for a
 * build that has it; Debian's libsqlite3 does. Before policy.h, which includes it. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "policy.h"

#include <math.h>
#include <poll.h>
#include <stdint.h>
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

/* Read PRAGMAs whose answer is this node's own, not the database file's rows: its
 * file's path, the journal, locking and sync modes (a replay into a scratch file runs in
 * others), counters and settings of the connection or the process, how its pages are
 * laid out (page_count, freelist_count: nodes whose files differ in reserved bytes, or
 * one rewritten by cairn repair, hold the same rows in other pages; max_page_count, a
 * setting of the connection's). A write that stored
 * one would make the replicas, or a replay of the log, differ. The sqlite_stmt table
 * (the connection's prepared statements) is refused with them. */
static const char *const localPragmas[] = {
    "busy_timeout", "cache_size", "cache_spill", "compile_options", "data_version",
    "database_list", "freelist_count", "function_list", "hard_heap_limit", "journal_mode",
    "journal_size_limit", "locking_mode", "max_page_count", "mmap_size", "module_list",
    "page_count", "pragma_list", "soft_heap_limit", "synchronous", "temp_store", "threads",
    "wal_autocheckpoint", NULL};

/* Functions that answer with the SQLite library the node runs, which differs from node
 * to node while a cluster is upgraded one node at a time: refused in a write with the
 * read PRAGMAs above (compile_options, function_list, module_list, pragma_list).
 * fts5_source_id() is FTS5's sqlite_source_id(). */
static const char *const localFunctions[] = {"sqlite_version", "sqlite_source_id",
                                             "sqlite_compileoption_get",
                                             "sqlite_compileoption_used", "fts5_source_id",
                                             NULL};

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

/* A read of node-local state (localPragmas, sqlite_stmt): refused on the connection
 * that applies replicated writes, noted on any other. */
static int nodeLocal(struct policy_conn *pc, const char *what)
{
    if (!pc->replicated) {
        if (pc->local[0] == '\0') {
            snprintf(pc->local, sizeof pc->local, "%s", what);
        }
        return SQLITE_OK;
    }
    return deny(pc, "%s reads what differs from node to node (the file's path and pages, "
                    "the connection's modes, settings and statements, the SQLite library): a "
                    "request that writes may not read it, or the replicas would differ%s",
                what, NULL);
}

static bool isLocalTable(const char *name)
{
    return name != NULL &&
           (strcasecmp(name, "sqlite_stmt") == 0 || strcasecmp(name, "dbstat") == 0 ||
            (strncasecmp(name, "pragma_", 7) == 0 && inList(localPragmas, name + 7)));
}

/* Is the PRAGMA being authorized now a virtual table module's own, prepared while the
 * caller's statement runs or is prepared (policyPrepareBegin)? Else it is the caller's
 * statement itself, or one prepared outside those calls. While a statement runs, a
 * PRAGMA prepared is a module's, or the statement itself prepared again for a changed
 * schema: then one allowed when it was first prepared (a write's PRAGMA data_version
 * never is). While a statement is prepared, its own PRAGMA is authorized before
 * anything it names is connected (sqlite3Pragma authorizes first); no other statement,
 * view or trigger holds a PRAGMA (a read of pragma_data_version is SQLITE_READ). */
static bool moduleOwn(struct policy_conn *pc)
{
    if (pc->stepping) {
        return true;
    }
    if (!pc->preparing) {
        return false;
    }
    if (pc->user_pragmas > 0) {
        pc->user_pragmas--;
        return false;
    }
    return true;
}

static int authorize(void *ud, int code, const char *a, const char *b, const char *db,
                     const char *trigger)
{
    struct policy_conn *pc = ud;
    (void)trigger;
    if (pc->internal) {
        return SQLITE_OK;
    }
    if (code == SQLITE_ANALYZE ||
        ((code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE ||
          code == SQLITE_DROP_TABLE) &&
         a != NULL && strncasecmp(a, "sqlite_stat", 11) == 0)) {
        pc->stats = true;
    }
    if ((code == SQLITE_INSERT || code == SQLITE_UPDATE) && a != NULL &&
        strcasecmp(a, "sqlite_sequence") == 0) {
        pc->sequence = true;
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
        case SQLITE_READ:
            return isLocalTable(a) ? nodeLocal(pc, a) : SQLITE_OK;
        case SQLITE_PRAGMA:
            if (moduleOwn(pc) && b == NULL && a != NULL && strcasecmp(a, "data_version") == 0) {
                /* FTS5 reads PRAGMA data_version for itself (when it connects to its
                 * table, and while a statement runs) to learn whether its cached index
                 * structure is stale: the answer never reaches a row. */
                return SQLITE_OK;
            }
            if (b == NULL && inList(readPragmas, a)) {
                return inList(localPragmas, a) ? nodeLocal(pc, a) : SQLITE_OK;
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
            return inList(localFunctions, b) ? nodeLocal(pc, b) : SQLITE_OK;
        case SQLITE_CREATE_VTABLE:
            if (b != NULL && strcasecmp(b, "dbstat") == 0) {
                return deny(pc, "a dbstat table (%s) describes this node's pages, which differ "
                                "from node to node: read the dbstat table itself, in a request "
                                "that only reads%s",
                            a, NULL);
            }
            /* fall through */
        case SQLITE_INSERT:
        case SQLITE_UPDATE:
        case SQLITE_DELETE:
        case SQLITE_DROP_TABLE:
        case SQLITE_CREATE_TABLE:
        case SQLITE_CREATE_VIEW:
        case SQLITE_DROP_VIEW:
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

/* ---- functions whose SQLite versions take time proportional to the product of their
 * arguments' lengths --------------------------------------------------------------
 * SQLite's instr(), replace() and trim()/ltrim()/rtrim() compare the second argument at
 * every position of the first: one call on two values of tens of MiB runs for hours as a
 * single VM instruction, which the progress handler never sees (no limit stops it, and
 * a write of it runs on every node and every replay). These replace them, on every
 * connection that runs user SQL, with versions of the same results that take time
 * proportional to the sum of the lengths. */

/* instr(X, Y): SQLite's rules: NULL if either is NULL; 1-based position in characters
 * (bytes when both are blobs) of the first Y in X, 0 when none; 1 for an empty Y. Text
 * positions are those where a character starts (not a UTF-8 continuation byte). */
static void fnInstr(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    int th = sqlite3_value_type(argv[0]);
    int tn = sqlite3_value_type(argv[1]);
    const unsigned char *h, *nd;
    int nh, nn;
    sqlite3_value *c1 = NULL, *c2 = NULL;
    bool text;
    sqlite3_int64 pos = 1;
    (void)argc;
    if (th == SQLITE_NULL || tn == SQLITE_NULL) {
        return;
    }
    nh = sqlite3_value_bytes(argv[0]);
    nn = sqlite3_value_bytes(argv[1]);
    if (nn <= 0) {
        sqlite3_result_int64(ctx, 1);
        return;
    }
    if (th == SQLITE_BLOB && tn == SQLITE_BLOB) {
        h = sqlite3_value_blob(argv[0]);
        nd = sqlite3_value_blob(argv[1]);
        text = false;
    } else if (th != SQLITE_BLOB && tn != SQLITE_BLOB) {
        h = sqlite3_value_text(argv[0]);
        nd = sqlite3_value_text(argv[1]);
        text = true;
    } else {
        c1 = sqlite3_value_dup(argv[0]);
        h = sqlite3_value_text(c1);
        nh = sqlite3_value_bytes(c1);
        c2 = sqlite3_value_dup(argv[1]);
        nd = sqlite3_value_text(c2);
        nn = sqlite3_value_bytes(c2);
        text = true;
    }
    if (nd == NULL || (nh > 0 && h == NULL)) {
        sqlite3_result_error_nomem(ctx);
        goto out;
    }
    if (nn > nh) {
        pos = 0;
    } else if (text && (nd[0] & 0xc0) == 0x80) {
        /* A needle starting inside a character matches only at the very start. */
        pos = memcmp(h, nd, (size_t)nn) == 0 ? 1 : 0;
    } else {
        const unsigned char *at = memmem(h, (size_t)nh, nd, (size_t)nn);
        if (at == NULL) {
            pos = 0;
        } else if (!text) {
            pos = (at - h) + 1;
        } else {
            for (const unsigned char *p = h + 1; p <= at; p++) {
                pos += (*p & 0xc0) != 0x80;
            }
        }
    }
    sqlite3_result_int64(ctx, pos);
out:
    sqlite3_value_free(c1);
    sqlite3_value_free(c2);
}

/* replace(X, Y, Z): SQLite's rules: NULL if any is NULL; X itself when Y is empty; else
 * the text of X with every Y, left to right without overlap, replaced by Z (bytes). */
static void fnReplace(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *str, *pat, *rep;
    int nstr, npat, nrep;
    struct {
        char *p;
        size_t len, cap;
    } out = {NULL, 0, 0};
    sqlite3_int64 limit = sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1);
    size_t i = 0;
    (void)argc;
    if ((str = sqlite3_value_text(argv[0])) == NULL) {
        return;
    }
    nstr = sqlite3_value_bytes(argv[0]);
    if ((pat = sqlite3_value_text(argv[1])) == NULL) {
        return;
    }
    if (pat[0] == 0) {
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    npat = sqlite3_value_bytes(argv[1]);
    if ((rep = sqlite3_value_text(argv[2])) == NULL) {
        return;
    }
    nrep = sqlite3_value_bytes(argv[2]);
    out.cap = (size_t)nstr + 1;
    if ((out.p = sqlite3_malloc64(out.cap)) == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (;;) {
        const unsigned char *at =
            (size_t)npat <= (size_t)nstr - i
                ? memmem(str + i, (size_t)nstr - i, pat, (size_t)npat)
                : NULL;
        size_t keep = at != NULL ? (size_t)(at - (str + i)) : (size_t)nstr - i;
        size_t need = out.len + keep + (at != NULL ? (size_t)nrep : 0) + 1;
        if (need - 1 > (size_t)limit) {
            sqlite3_free(out.p);
            sqlite3_result_error_toobig(ctx);
            return;
        }
        if (need > out.cap) {
            size_t cap = out.cap * 2 > need ? out.cap * 2 : need;
            char *grown = sqlite3_realloc64(out.p, cap);
            if (grown == NULL) {
                sqlite3_free(out.p);
                sqlite3_result_error_nomem(ctx);
                return;
            }
            out.p = grown;
            out.cap = cap;
        }
        memcpy(out.p + out.len, str + i, keep);
        out.len += keep;
        if (at == NULL) {
            break;
        }
        memcpy(out.p + out.len, rep, (size_t)nrep);
        out.len += (size_t)nrep;
        i += keep + (size_t)npat;
    }
    out.p[out.len] = 0;
    sqlite3_result_text64(ctx, out.p, out.len, sqlite3_free, SQLITE_UTF8);
}

/* One character of a trim set: its bytes and its place in the set (the first of equal
 * characters wins, as in SQLite's scan of the set in order). */
struct trimchar {
    const unsigned char *p;
    unsigned len;
    unsigned order;
};

static int trimcharCmp(const void *a, const void *b)
{
    const struct trimchar *x = a, *y = b;
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    int c = memcmp(x->p, y->p, x->len);
    if (c != 0) {
        return c;
    }
    return x->order < y->order ? -1 : x->order > y->order;
}

/* A trim set looked up: single-byte characters in a table (the order of each byte, or
 * UINT32_MAX), longer ones sorted by (length, bytes, order) with the distinct lengths
 * and the first bytes they start with. */
struct trimset {
    const struct trimchar *set;
    size_t nset;
    const unsigned *lens;
    size_t nlens;
    unsigned one[256];
    bool lead[256];
};

/* The length of the set character that SQLite would match at p (n bytes left): of the
 * set's characters that are a prefix of p (a suffix, from_end), the first in the set;
 * 0 for none. */
static unsigned trimMatch(const struct trimset *ts, const unsigned char *p, size_t n,
                          bool from_end)
{
    unsigned best_len = 0, best_order = UINT32_MAX;
    const struct trimchar *set = ts->set;
    size_t nset = ts->nset;
    if (n > 0 && ts->one[from_end ? p[n - 1] : p[0]] != UINT32_MAX) {
        best_len = 1;
        best_order = ts->one[from_end ? p[n - 1] : p[0]];
    }
    for (size_t k = 0; k < ts->nlens; k++) {
        unsigned len = ts->lens[k];
        size_t lo = 0, hi = nset;
        const unsigned char *q;
        if (len > n || len == 1) {
            continue;
        }
        q = from_end ? p + n - len : p;
        if (len > 0 && !ts->lead[q[0]]) {
            continue;
        }
        while (lo < hi) { /* the first element >= (len, q) */
            size_t mid = (lo + hi) / 2;
            int c = set[mid].len != len ? (set[mid].len < len ? -1 : 1)
                                         : memcmp(set[mid].p, q, len);
            if (c < 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo < nset && set[lo].len == len && memcmp(set[lo].p, q, len) == 0 &&
            set[lo].order < best_order) {
            best_order = set[lo].order;
            best_len = len;
        }
    }
    return best_len;
}

/* trim(X[, Y]), ltrim, rtrim (user data 3, 1, 2): SQLite's rules, with the set's
 * characters looked up instead of compared one by one. */
static void fnTrim(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *in, *cs;
    int nin;
    int flags = (int)(intptr_t)sqlite3_user_data(ctx);
    struct trimchar *set = NULL;
    unsigned lens[256];
    size_t nset = 0, nlens = 0;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        return;
    }
    if ((in = sqlite3_value_text(argv[0])) == NULL) {
        return;
    }
    nin = sqlite3_value_bytes(argv[0]);
    if (argc == 1) {
        static const unsigned char space[] = " ";
        static struct trimchar one = {space, 1, 0};
        set = &one;
        nset = 1;
        lens[nlens++] = 1;
    } else if ((cs = sqlite3_value_text(argv[1])) == NULL) {
        return;
    } else {
        size_t count = 0;
        for (const unsigned char *z = cs; *z;) {
            if (*z++ >= 0xc0) {
                while ((*z & 0xc0) == 0x80) {
                    z++;
                }
            }
            count++;
        }
        if (count > 0) {
            set = sqlite3_malloc64(count * sizeof *set);
            if (set == NULL) {
                sqlite3_result_error_nomem(ctx);
                return;
            }
            for (const unsigned char *z = cs; *z;) {
                const unsigned char *start = z;
                if (*z++ >= 0xc0) {
                    while ((*z & 0xc0) == 0x80) {
                        z++;
                    }
                }
                unsigned len = (unsigned char)(z - start); /* SQLite keeps it in a u8 */
                if (nset > 0 && set[nset - 1].len == len && memcmp(set[nset - 1].p, start, len) == 0) {
                    continue; /* the same character again: the first one wins anyway */
                }
                set[nset].p = start;
                set[nset].len = len;
                set[nset].order = (unsigned)nset;
                nset++;
            }
            qsort(set, nset, sizeof *set, trimcharCmp);
            for (size_t i = 0; i < nset; i++) {
                size_t k = 0;
                while (k < nlens && lens[k] != set[i].len) {
                    k++;
                }
                if (k == nlens && nlens < sizeof lens / sizeof lens[0]) {
                    lens[nlens++] = set[i].len;
                }
            }
        }
    }
    if (nset > 0) {
        struct trimset ts = {set, nset, lens, nlens, {0}, {false}};
        for (int b = 0; b < 256; b++) {
            ts.one[b] = UINT32_MAX;
        }
        for (size_t i = 0; i < nset; i++) {
            if (set[i].len == 1 && set[i].order < ts.one[set[i].p[0]]) {
                ts.one[set[i].p[0]] = set[i].order;
            } else if (set[i].len > 1) {
                ts.lead[set[i].p[0]] = true;
            }
        }
        if (flags & 1) {
            unsigned len;
            while (nin > 0 && (len = trimMatch(&ts, in, (size_t)nin, false)) > 0) {
                in += len;
                nin -= (int)len;
            }
        }
        if (flags & 2) {
            unsigned len;
            while (nin > 0 && (len = trimMatch(&ts, in, (size_t)nin, true)) > 0) {
                nin -= (int)len;
            }
        }
        if (argc > 1) {
            sqlite3_free(set);
        }
    }
    sqlite3_result_text(ctx, (const char *)in, nin, SQLITE_TRANSIENT);
}

/* ---- LIKE and GLOB -------------------------------------------------------------------
 * SQLite's matcher takes time proportional to the product of the value's and the
 * pattern's lengths when the pattern holds a wildcard of any length ('%', '*'): a
 * 400,000-byte value against a 50,000-byte pattern '%aaa...ab' ran for 16 s as one VM
 * instruction, which neither the step budget nor a read's timeout sees (a write of it
 * runs on every node and at every replay; 64 MiB values would take most of an hour).
 * These give SQLite's own results (sqlite3_strlike and sqlite3_strglob are its matcher,
 * with its rules for case, escapes and character classes), and refuse a call whose
 * product passes MATCH_WORK, under a second of matching: on every node alike, as it
 * depends on the arguments alone. */
#define MATCH_WORK 1000000000ull

/* The length in bytes of the character at p, and its code point, as SQLite reads UTF-8
 * (sqlite3Utf8Read): a byte from 0xC0 up and the continuation bytes after it; any other
 * byte alone; what is not a character's code point reads as U+FFFD. */
static size_t utf8Len(const unsigned char *p)
{
    size_t n = 1;
    while (p[0] >= 0xC0 && p[n] >= 0x80 && p[n] < 0xC0) {
        n++;
    }
    return n;
}

static unsigned utf8Code(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n = utf8Len(p);
    if (c < 0xC0) {
        return c;
    }
    c = c < 0xE0 ? c - 0xC0 : c < 0xF0 ? c - 0xE0 : c < 0xF8 ? c - 0xF0 : c < 0xFC ? c - 0xF8 : c < 0xFE ? c - 0xFC : 0;
    for (size_t i = 1; i < n; i++) {
        c = (c << 6) + (p[i] & 0x3F);
    }
    if (c < 0x80 || (c & 0xFFFFF800) == 0xD800 || (c & 0xFFFFFFFE) == 0xFFFE) {
        c = 0xFFFD;
    }
    return c;
}

/* like(P, X), like(P, X, E), glob(P, X): SQLite's argument order (the pattern first). */
static void fnMatch(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const bool glob = sqlite3_user_data(ctx) != NULL;
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    const unsigned char *pat = sqlite3_value_text(argv[0]);
    const unsigned char *str = sqlite3_value_text(argv[1]);
    int npat = sqlite3_value_bytes(argv[0]);
    int nstr = sqlite3_value_bytes(argv[1]);
    unsigned esc = 0;
    unsigned char *alt = NULL;
    int rc;

    if (npat > sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1)) {
        sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
        return;
    }
    if (argc == 3) {
        const unsigned char *e = sqlite3_value_text(argv[2]);
        if (e == NULL) {
            return;
        }
        if (e[0] == 0 || e[utf8Len(e)] != 0) {
            sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
            return;
        }
        esc = utf8Code(e);
    }
    if (pat == NULL || str == NULL) {
        return;
    }
    if (memchr(pat, glob ? '*' : '%', (size_t)npat) != NULL && !(argc == 3 && esc == '%') &&
        (uint64_t)npat * (uint64_t)nstr > MATCH_WORK) {
        char msg[320];
        snprintf(msg, sizeof msg,
                 "refused by cairn's statement policy: %s of a %d-byte value with a %d-byte "
                 "pattern holding '%c' would take time in proportion to the product of their "
                 "lengths (more than %llu): match a shorter pattern, or a part of the value "
                 "(substr)",
                 glob ? "GLOB" : "LIKE", nstr, npat, glob ? '*' : '%',
                 (unsigned long long)MATCH_WORK);
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    if (!glob && argc == 3 && (esc == '%' || esc == '_')) {
        /* An escape that is a wildcard stops being one (SQLite's rule), which
         * sqlite3_strlike does not know: the same pattern written with an escape
         * character it does not hold. */
        unsigned char other = 1;
        size_t o = 0;
        while (other < 0x80 && (other == '%' || other == '_' || memchr(pat, other, (size_t)npat))) {
            other++;
        }
        if (other == 0x80 || (alt = sqlite3_malloc64(2 * (uint64_t)npat + 1)) == NULL) {
            if (other == 0x80) {
                sqlite3_result_error(ctx, "LIKE pattern too complex for its ESCAPE", -1);
            } else {
                sqlite3_result_error_nomem(ctx);
            }
            return;
        }
        for (int i = 0; i < npat;) {
            if (pat[i] == esc) {
                alt[o++] = other;
                i++;
                if (i < npat) {
                    size_t n = utf8Len(pat + i);
                    memcpy(alt + o, pat + i, n);
                    o += n;
                    i += (int)n;
                }
            } else {
                alt[o++] = pat[i++];
            }
        }
        alt[o] = 0;
        pat = alt;
        esc = other;
    }
    rc = glob ? sqlite3_strglob((const char *)pat, (const char *)str)
              : sqlite3_strlike((const char *)pat, (const char *)str, esc);
    sqlite3_free(alt);
    sqlite3_result_int(ctx, rc == 0);
}

static void installFunctions(sqlite3 *db)
{
    int enc = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    sqlite3_create_function(db, "instr", 2, enc, NULL, fnInstr, NULL, NULL);
    sqlite3_create_function(db, "replace", 3, enc, NULL, fnReplace, NULL, NULL);
    sqlite3_create_function(db, "like", 2, enc, NULL, fnMatch, NULL, NULL);
    sqlite3_create_function(db, "like", 3, enc, NULL, fnMatch, NULL, NULL);
    sqlite3_create_function(db, "glob", 2, enc, (void *)(intptr_t)1, fnMatch, NULL, NULL);
    for (int argc = 1; argc <= 2; argc++) {
        sqlite3_create_function(db, "trim", argc, enc, (void *)(intptr_t)3, fnTrim, NULL, NULL);
        sqlite3_create_function(db, "ltrim", argc, enc, (void *)(intptr_t)1, fnTrim, NULL, NULL);
        sqlite3_create_function(db, "rtrim", argc, enc, (void *)(intptr_t)2, fnTrim, NULL, NULL);
    }
}

/* ---- dbstat on the connection that applies writes ----------------------------------
 * A table USING dbstat under a name of its own, in a file loaded or restored from
 * elsewhere (CREATE VIRTUAL TABLE ... USING dbstat is refused), is read as an ordinary
 * table: the authorizer sees its name, not its module. This module takes dbstat's name
 * there: such a table is dropped as before, but any statement that reads it fails
 * while it is prepared, with the same words on every node. */
static const char dbstatRefusal[] =
    "refused by cairn's statement policy: a dbstat table describes this node's pages, which "
    "differ from node to node: a request that writes may not read it (a request that only "
    "reads may)";

static int dbstatConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                         sqlite3_vtab **out, char **err)
{
    sqlite3_vtab *vt;
    int rc;
    (void)aux;
    (void)argc;
    (void)argv;
    (void)err;
    /* dbstat's own columns, so that a statement naming them fails as it reads. */
    rc = sqlite3_declare_vtab(db, "CREATE TABLE x(name TEXT, path TEXT, pageno INTEGER, "
                                  "pagetype TEXT, ncell INTEGER, payload INTEGER, unused "
                                  "INTEGER, mx_payload INTEGER, pgoffset INTEGER, pgsize "
                                  "INTEGER, schema TEXT HIDDEN, aggregate BOOLEAN HIDDEN)");
    if (rc != SQLITE_OK) {
        return rc;
    }
    if ((vt = sqlite3_malloc(sizeof *vt)) == NULL) {
        return SQLITE_NOMEM;
    }
    memset(vt, 0, sizeof *vt);
    *out = vt;
    return SQLITE_OK;
}

static int dbstatBestIndex(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    (void)info;
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_mprintf("%s", dbstatRefusal);
    return SQLITE_ERROR;
}

static int dbstatDisconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int dbstatOpen(sqlite3_vtab *vt, sqlite3_vtab_cursor **cur)
{
    (void)vt;
    (void)cur;
    return SQLITE_ERROR; /* never: dbstatBestIndex fails first */
}

static int dbstatClose(sqlite3_vtab_cursor *cur)
{
    (void)cur;
    return SQLITE_OK;
}

static int dbstatFilter(sqlite3_vtab_cursor *cur, int idx, const char *str, int argc,
                        sqlite3_value **argv)
{
    (void)cur;
    (void)idx;
    (void)str;
    (void)argc;
    (void)argv;
    return SQLITE_ERROR;
}

static int dbstatNext(sqlite3_vtab_cursor *cur)
{
    (void)cur;
    return SQLITE_ERROR;
}

static int dbstatEof(sqlite3_vtab_cursor *cur)
{
    (void)cur;
    return 1;
}

static int dbstatColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i)
{
    (void)cur;
    (void)ctx;
    (void)i;
    return SQLITE_ERROR;
}

static int dbstatRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    (void)cur;
    (void)rowid;
    return SQLITE_ERROR;
}

static const sqlite3_module dbstatRefused = {
    .iVersion = 0,
    .xCreate = dbstatConnect,
    .xConnect = dbstatConnect,
    .xBestIndex = dbstatBestIndex,
    .xDisconnect = dbstatDisconnect,
    .xDestroy = dbstatDisconnect,
    .xOpen = dbstatOpen,
    .xClose = dbstatClose,
    .xFilter = dbstatFilter,
    .xNext = dbstatNext,
    .xEof = dbstatEof,
    .xColumn = dbstatColumn,
    .xRowid = dbstatRowid,
};

/* The bytes the values of the row being changed take: what a node stores alike for
 * it, whatever its pages. */
static int64_t rowValueBytes(sqlite3 *db, bool after)
{
    int n = sqlite3_preupdate_count(db);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        sqlite3_value *v = NULL;
        if ((after ? sqlite3_preupdate_new(db, i, &v) : sqlite3_preupdate_old(db, i, &v)) !=
                SQLITE_OK ||
            v == NULL) {
            continue;
        }
        switch (sqlite3_value_type(v)) {
            case SQLITE_TEXT:
            case SQLITE_BLOB:
                sum += sqlite3_value_bytes(v);
                break;
            case SQLITE_NULL:
                break;
            default:
                sum += 8;
        }
    }
    return sum;
}

/* The writer's preupdate hook: what each row change of a user's statement adds
 * (policy.h, growth_used; cairn's own statements, a savepoint's RELEASE among them, are
 * not counted). Past the bound the statement is interrupted at once, where the virtual
 * machine next checks, the same place on every node: the progress handler alone came
 * only every POLICY_STEP_GRAIN steps, by when a statement of few steps and huge rows had
 * written gigabytes. */
static void growthHook(void *ud, sqlite3 *db, int op, const char *schema, const char *table,
                       sqlite3_int64 before, sqlite3_int64 after)
{
    struct policy_conn *pc = ud;
    (void)schema, (void)table, (void)before, (void)after;
    if (pc->growth_limit == 0 || pc->internal) {
        return;
    }
    if (op != SQLITE_DELETE) {
        pc->growth_used += rowValueBytes(db, true);
    }
    if (op != SQLITE_INSERT) {
        pc->growth_used -= rowValueBytes(db, false);
    }
    if (pc->growth_used > (int64_t)pc->growth_limit && pc->trip == POLICY_TRIP_NONE) {
        pc->trip = POLICY_TRIP_GROWTH;
        sqlite3_interrupt(db);
    }
}

void policyReplicated(sqlite3 *db, struct policy_conn *pc)
{
    pc->replicated = true;
    sqlite3_preupdate_hook(db, growthHook, pc);
    sqlite3_create_module_v2(db, "dbstat", &dbstatRefused, NULL, NULL);
}

void policyInstall(sqlite3 *db, struct policy_conn *pc, uint32_t max_length,
                   const atomic_bool *stop)
{
    memset(pc, 0, sizeof *pc);
    pc->client_fd = -1;
    pc->stop = stop;
    pc->temp_limit = POLICY_DEFAULT_MAX_TEMP;
    /* Temporary tables and indices in files, where the temp limit counts them (memlimit.h),
     * whatever the library's default: in memory they would sit in the page cache, which
     * no limit counts, and a write would stop at the limit on some nodes only. A library
     * built with SQLITE_TEMP_STORE=3 keeps them in memory regardless. */
    sqlite3_exec(db, "PRAGMA temp_store=FILE", NULL, NULL, NULL);
    sqlite3_set_authorizer(db, authorize, pc);
    sqlite3_progress_handler(db, POLICY_STEP_GRAIN, progress, pc);
    installFunctions(db);
    /* Virtual tables' shadow tables (an FTS index's segments, an R-tree's nodes) are
     * written by their module only: data written into them directly made the module
     * answer SQLITE_CORRUPT_VTAB, on every node and at every replay, which a node takes
     * for damage of its own file and stops at. */
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH,
                  (int)(max_length == 0 ? POLICY_DEFAULT_MAX_LENGTH
                        : max_length > POLICY_MAX_LENGTH_CAP ? POLICY_MAX_LENGTH_CAP
                                                             : max_length));
}

/* The next word of sql[0..n) from *at, after blanks, comments and empty statements (as
 * SQLite's tokenizer skips them): its length (0: none, or no word there), *at its
 * start. */
/* Where sql[i..n) has something but blanks, comments and empty statements (as SQLite's
 * tokenizer skips them): its index, n when nothing. */
static size_t skipBlanks(const char *sql, size_t n, size_t i)
{
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
            break;
        }
    }
    return i;
}

static size_t nextWord(const char *sql, size_t n, size_t *at)
{
    size_t i = skipBlanks(sql, n, *at), k;
    for (k = i; k < n && ((sql[k] >= 'A' && sql[k] <= 'Z') || (sql[k] >= 'a' && sql[k] <= 'z') ||
                          (sql[k] >= '0' && sql[k] <= '9') || sql[k] == '_' || sql[k] == '$' ||
                          (unsigned char)sql[k] >= 0x80);
         k++) {
    }
    *at = i;
    return k - i;
}

static bool isWord(const char *sql, size_t at, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(sql + at, word, len) == 0;
}

/* May the statement at the start of sql[0..n) be a PRAGMA (or EXPLAIN of one)? It is not
 * when its first keyword (after EXPLAIN [QUERY PLAN]) is one of a statement of another
 * kind; any other start, one this does not know included, counts as a PRAGMA. */
static bool mayBePragma(const char *sql, size_t n)
{
    static const char *const others[] = {"SELECT", "VALUES",  "WITH",    "INSERT", "REPLACE",
                                         "UPDATE", "DELETE",  "CREATE",  "DROP",   "ALTER",
                                         "ANALYZE", "REINDEX", "VACUUM", NULL};
    size_t at = 0;
    size_t len = nextWord(sql, n, &at);
    if (isWord(sql, at, len, "EXPLAIN")) {
        at += len;
        len = nextWord(sql, n, &at);
        if (isWord(sql, at, len, "QUERY")) {
            at += len;
            len = nextWord(sql, n, &at);
            if (!isWord(sql, at, len, "PLAN")) {
                return true;
            }
            at += len;
            len = nextWord(sql, n, &at);
        }
    }
    for (int j = 0; others[j] != NULL; j++) {
        if (isWord(sql, at, len, others[j])) {
            return false;
        }
    }
    return true;
}

void policyPrepareBegin(struct policy_conn *pc, const char *sql, size_t n)
{
    pc->why[0] = '\0';
    pc->local[0] = '\0';
    pc->preparing = true;
    pc->user_pragmas = mayBePragma(sql, n) ? 1 : 0;
}

void policyPrepareEnd(struct policy_conn *pc)
{
    pc->preparing = false;
    pc->user_pragmas = 0;
}

void policyWriteBegin(struct policy_conn *pc, uint64_t steps)
{
    pc->result_limit = POLICY_WRITE_MAX_RESULT;
    pc->steps = steps;
    pc->ticks = 0;
    pc->deadline = 0;
    pc->client_fd = -1;
    pc->trip = POLICY_TRIP_NONE;
    pc->why[0] = '\0';
    pc->stats = false;
    pc->sequence = false;
}

void policyReadBegin(struct policy_conn *pc, uint32_t timeout_ms, int client_fd,
                     uint64_t result_limit)
{
    pc->result_limit = result_limit;
    pc->result_before = 0;
    pc->budget = NULL;
    pc->budget_taken = NULL;
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

void policyStepBegin(struct policy_conn *pc, sqlite3 *db)
{
    uint64_t limit =
        POLICY_MEMORY_PER_VALUE * (uint64_t)sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1);
    if (limit < POLICY_MEMORY_FLOOR) {
        limit = POLICY_MEMORY_FLOOR;
    }
    memlimitStart(&pc->mem, pc->internal ? 0 : limit, pc->internal ? 0 : pc->temp_limit);
    if (policyStatementTrip(pc)) {
        pc->trip = POLICY_TRIP_NONE;
    }
    /* SQLite calls the progress handler when a statement's steps, summed over its runs
     * since it was prepared, pass a multiple of the grain: also for the statements a
     * virtual table module keeps and runs inside this one (FTS5's), whose sums differ
     * between a node that ran them before and one that just started. Every statement
     * of the connection counts from zero at each run of the caller's. */
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st != NULL;
         st = sqlite3_next_stmt(db, st)) {
        sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 1);
    }
}

int policyStep(struct policy_conn *pc, sqlite3_stmt *ps)
{
    int rc;
    memlimitEnter(&pc->mem);
    pc->stepping = true;
    rc = sqlite3_step(ps);
    pc->stepping = false;
    memlimitLeave();
    if (pc->mem.tripped && pc->trip == POLICY_TRIP_NONE) {
        pc->trip = POLICY_TRIP_MEMORY;
    }
    if (pc->mem.temp_tripped && pc->trip == POLICY_TRIP_NONE) {
        pc->trip = POLICY_TRIP_TEMP;
    }
    return rc;
}

int policyPrepare(struct policy_conn *pc, sqlite3 *db, const char *sql, int n,
                  sqlite3_stmt **ps, const char **tail)
{
    bool bound = !pc->replicated && !pc->internal;
    int rc;
    if (!bound) {
        return sqlite3_prepare_v3(db, sql, n, SQLITE_PREPARE_PERSISTENT, ps, tail);
    }
    policyStepBegin(pc, db);
    memlimitCountAll(&pc->mem);
    memlimitEnter(&pc->mem);
    rc = sqlite3_prepare_v3(db, sql, n, SQLITE_PREPARE_PERSISTENT, ps, tail);
    memlimitLeave();
    if (pc->mem.tripped && pc->trip == POLICY_TRIP_NONE) {
        pc->trip = POLICY_TRIP_MEMORY;
    }
    return rc;
}

bool policyStatementTrip(const struct policy_conn *pc)
{
    return pc->trip == POLICY_TRIP_MEMORY || pc->trip == POLICY_TRIP_TEMP ||
           pc->trip == POLICY_TRIP_GROWTH;
}

void policyEnd(struct policy_conn *pc)
{
    pc->result_limit = 0;
    pc->steps = 0;
    pc->deadline = 0;
    pc->client_fd = -1;
}

int policyCheckText(const char *sql, size_t n, char *msg, size_t msgsize)
{
    const char *nul = memchr(sql, '\0', n);
    if (nul != NULL) {
        snprintf(msg, msgsize, "the statement holds a NUL byte at offset %zu: SQL text may not "
                               "contain one (send binary data as a parameter)",
                 (size_t)(nul - sql));
        return -1;
    }
    /* Anything but blanks and comments? */
    if (skipBlanks(sql, n, 0) < n) {
        return 0;
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
    /* VACUUM INTO writes a file of its own choosing on every node. */
    if (strncasecmp(sql + i, "VACUUM", 6) == 0 && strcasestr(sql + i, "INTO") != NULL) {
        snprintf(msg, msgsize, "refused by cairn's statement policy: VACUUM INTO writes a "
                               "file outside the database on every node (use BACKUP DATABASE)");
        return false;
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
        for (int k = 0; localFunctions[k] != NULL; k++) {
            if (strcasestr(sql + i, localFunctions[k]) != NULL) {
                snprintf(msg, msgsize, "refused by cairn's statement policy: a trigger may not "
                                       "call %s(), which differs from node to node",
                         localFunctions[k]);
                return false;
            }
        }
        for (int k = -2; k < 0 || localPragmas[k] != NULL; k++) {
            char name[48];
            snprintf(name, sizeof name, "%s%s",
                     k == -2 ? "sqlite_stmt" : k == -1 ? "dbstat" : "pragma_",
                     k < 0 ? "" : localPragmas[k]);
            if (strcasestr(sql + i, name) != NULL) {
                snprintf(msg, msgsize, "refused by cairn's statement policy: a trigger may not "
                                       "read %s, which differs from node to node",
                         name);
                return false;
            }
        }
    }
    return true;
}

const char *policyMessage(struct policy_conn *pc, int rc, char *buf, size_t size)
{
    if (pc->trip == POLICY_TRIP_MEMORY &&
        ((rc & 0xff) == SQLITE_NOMEM || (rc & 0xff) == SQLITE_INTERRUPT)) {
        snprintf(buf, size, "the statement needed more than its memory limit of %llu bytes "
                            "(%d times the value size limit, cairnd --max-value-size, and at "
                            "least %llu) and was stopped%s",
                 (unsigned long long)pc->mem.limit, POLICY_MEMORY_PER_VALUE,
                 (unsigned long long)POLICY_MEMORY_FLOOR,
                 pc->replicated ? ", the same way on every node"
                 : pc->mem.counted_from == 0 ? " while it was prepared (a shorter statement, "
                                               "e.g. a table of the values instead of an IN "
                                               "list, takes less)"
                                             : "");
        return buf;
    }
    if (pc->trip == POLICY_TRIP_TEMP &&
        ((rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_INTERRUPT)) {
        snprintf(buf, size, "the statement needed more than its limit of %llu bytes of "
                            "temporary files (to sort, group or keep DISTINCT what does not "
                            "fit in memory, or build an index; cairnd --max-temp-size%s) and "
                            "was stopped%s",
                 (unsigned long long)pc->mem.temp_limit,
                 pc->replicated ? ", the leader's" : "",
                 pc->replicated ? ", the same way on every node" : "");
        return buf;
    }
    if (pc->trip == POLICY_TRIP_GROWTH) {
        snprintf(buf, size, "the write would grow the database by more than its limit of "
                            "%llu bytes per request (cairnd --max-write-growth, the "
                            "leader's) and was stopped, the same way on every node: write "
                            "less in one request",
                 (unsigned long long)pc->growth_limit);
        return buf;
    }
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
