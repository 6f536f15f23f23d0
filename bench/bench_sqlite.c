/*
 * bench_sqlite: the baseline for bench_http, the same work done directly with the SQLite
 * C API on a database file, in the way a careful application would do it.
 *
 * Each client is one thread with its own connection (opened with SQLITE_OPEN_NOMUTEX,
 * `PRAGMA journal_mode=WAL`, `PRAGMA synchronous=FULL` and a busy timeout, all settable)
 * and statements prepared once and reused:
 *
 *   --mode insert  one autocommit INSERT INTO bench(k, v) VALUES(?, ?) per operation
 *   --mode txn     BEGIN IMMEDIATE; --rows such INSERTs; COMMIT per operation
 *   --mode select  SELECT k, v FROM bench WHERE k = ? of a random key in
 *                  [--key-min, --key-max]; the row must exist and hold the stored value
 *
 * Flags, key handling and the JSON line printed on stdout are those of bench_http (see
 * its header and report.h), so bench/run.sh treats both alike. An SQLite error, SQLITE_BUSY
 * after the busy timeout included, is counted as an error, not retried.
 *
 * Threads: main parses flags, creates the table, releases the client threads together
 * through a barrier, joins them and prints. Client threads share only the key counter.
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"

#define INSERT_SQL "INSERT INTO bench(k, v) VALUES(?, ?)"
#define SELECT_SQL "SELECT k, v FROM bench WHERE k = ?"

enum mode { MODE_INSERT, MODE_TXN, MODE_SELECT };

static const char *const modeNames[] = {"insert", "txn", "select"};

struct options {
    const char *db;
    enum mode mode;
    int clients;
    long requests; /* per client; 0: run for duration */
    double duration;
    long rows;
    int64_t key_start;
    int64_t key_min;
    int64_t key_max;
    long busy_timeout_ms;
    const char *synchronous;
    const char *journal_mode;
    uint64_t seed;
};

struct client {
    pthread_t thread;
    int id;
    uint64_t rng;
    sqlite3 *db;
    sqlite3_stmt *insert;
    sqlite3_stmt *select;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    struct tally tally;
};

static struct options opts;
static _Atomic int64_t nextKey;
static pthread_barrier_t startBarrier;
static uint64_t startNs; /* written by main before the barrier, read by clients after it */

static uint64_t rngNext(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Opens c's connection, sets its pragmas and prepares its statements; 0, or -1 after
 * printing why to stderr (c->db is then closed by clientClose as usual). */
static int clientOpen(struct client *c)
{
    char pragmas[256];
    int rc = sqlite3_open_v2(opts.db, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        goto err;
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode=%s; PRAGMA synchronous=%s; PRAGMA busy_timeout=%ld;",
             opts.journal_mode, opts.synchronous, opts.busy_timeout_ms);
    if ((rc = sqlite3_exec(c->db, pragmas, NULL, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, INSERT_SQL, -1, &c->insert, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, SELECT_SQL, -1, &c->select, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, "BEGIN IMMEDIATE", -1, &c->begin, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, "COMMIT", -1, &c->commit, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, "ROLLBACK", -1, &c->rollback, NULL)) != SQLITE_OK)
        goto err;
    return 0;
err:
    fprintf(stderr, "bench_sqlite: client %d: %s: %s\n", c->id, opts.db,
            c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
    return -1;
}

static void clientClose(struct client *c)
{
    sqlite3_finalize(c->insert);
    sqlite3_finalize(c->select);
    sqlite3_finalize(c->begin);
    sqlite3_finalize(c->commit);
    sqlite3_finalize(c->rollback);
    sqlite3_close(c->db);
    c->db = NULL;
}

/* Steps a statement that returns no row and resets it; the step's result code. */
static int stepDone(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc;
}

/* Inserts rows rows from key on; SQLITE_DONE on success. */
static int insertRows(struct client *c, int64_t key, long rows)
{
    for (long i = 0; i < rows; i++) {
        sqlite3_bind_int64(c->insert, 1, key + i);
        sqlite3_bind_text(c->insert, 2, REPORT_VALUE, (int)REPORT_VALUE_LEN, SQLITE_STATIC);
        int rc = stepDone(c->insert);
        if (rc != SQLITE_DONE)
            return rc;
    }
    return SQLITE_DONE;
}

/* Runs one operation of the mode; 0 on success, else the error has been counted. */
static int runOne(struct client *c)
{
    int64_t key;
    int rc;
    switch (opts.mode) {
    case MODE_INSERT:
        key = atomic_fetch_add(&nextKey, 1);
        rc = insertRows(c, key, 1);
        if (rc != SQLITE_DONE)
            goto err_sql;
        return 0;
    case MODE_TXN:
        key = atomic_fetch_add(&nextKey, opts.rows);
        if ((rc = stepDone(c->begin)) != SQLITE_DONE)
            goto err_sql;
        if ((rc = insertRows(c, key, opts.rows)) != SQLITE_DONE ||
            (rc = stepDone(c->commit)) != SQLITE_DONE) {
            tallyError(&c->tally, REPORT_ERR_SQL, "txn from key %lld: %s (%s)", (long long)key,
                       sqlite3_errmsg(c->db), sqlite3_errstr(rc));
            if (!sqlite3_get_autocommit(c->db))
                stepDone(c->rollback);
            return -1;
        }
        return 0;
    case MODE_SELECT:
    default:
        key = opts.key_min +
              (int64_t)(rngNext(&c->rng) % (uint64_t)(opts.key_max - opts.key_min + 1));
        sqlite3_bind_int64(c->select, 1, key);
        rc = sqlite3_step(c->select);
        if (rc == SQLITE_ROW) {
            const unsigned char *v = sqlite3_column_text(c->select, 1);
            int n = sqlite3_column_bytes(c->select, 1);
            int ok = sqlite3_column_int64(c->select, 0) == key && v != NULL &&
                     n == (int)REPORT_VALUE_LEN && memcmp(v, REPORT_VALUE, (size_t)n) == 0;
            sqlite3_reset(c->select);
            if (!ok) {
                tallyError(&c->tally, REPORT_ERR_BODY, "select key %lld: unexpected row",
                           (long long)key);
                return -1;
            }
            return 0;
        }
        sqlite3_reset(c->select);
        if (rc == SQLITE_DONE) {
            tallyError(&c->tally, REPORT_ERR_EMPTY, "select key %lld: no row", (long long)key);
            return -1;
        }
        goto err_sql;
    }
err_sql:
    tallyError(&c->tally, REPORT_ERR_SQL, "%s key %lld: %s (%s)", modeNames[opts.mode],
               (long long)key, sqlite3_errmsg(c->db), sqlite3_errstr(rc));
    return -1;
}

static void *clientMain(void *arg)
{
    struct client *c = arg;
    pthread_barrier_wait(&startBarrier);
    uint64_t deadline = startNs + (uint64_t)(opts.duration * 1e9);
    long rows = opts.mode == MODE_TXN ? opts.rows : 1;
    for (long i = 0; opts.requests == 0 || i < opts.requests; i++) {
        if (opts.requests == 0 && reportNowNs() >= deadline)
            break;
        uint64_t t0 = reportNowNs();
        if (runOne(c) != 0)
            continue;
        uint64_t t1 = reportNowNs();
        tallySuccess(&c->tally, (uint64_t)rows, t1 - t0, opts.requests > 0 || t1 <= deadline);
    }
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_sqlite --db FILE [--mode insert|txn|select] [--clients N]\n"
               "                    [--requests N (per client) | --duration SECONDS]\n"
               "                    [--rows N] [--key-start N] [--key-min N --key-max N]\n"
               "                    [--busy-timeout MS] [--synchronous FULL|NORMAL|OFF]\n"
               "                    [--journal-mode WAL|DELETE|...] [--seed N]\n"
               "  The same workloads as bench_http, on FILE (created with table bench if\n"
               "  missing), one connection per client thread. Prints one JSON line.\n");
}

static void parseArgs(int argc, char **argv)
{
    opts.mode = MODE_INSERT;
    opts.clients = 1;
    opts.rows = 10000;
    opts.key_start = 1;
    opts.busy_timeout_ms = 10000;
    opts.synchronous = "FULL";
    opts.journal_mode = "WAL";
    opts.seed = (uint64_t)time(NULL);
    int have_range = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_sqlite: %s needs a value\n", a);
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--db") == 0) {
            opts.db = v;
        } else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "insert") == 0)
                opts.mode = MODE_INSERT;
            else if (strcmp(v, "txn") == 0)
                opts.mode = MODE_TXN;
            else if (strcmp(v, "select") == 0)
                opts.mode = MODE_SELECT;
            else {
                fprintf(stderr, "--mode: insert, txn or select, not '%s'\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--clients") == 0) {
            opts.clients = (int)reportParseLong(a, v);
        } else if (strcmp(a, "--requests") == 0) {
            opts.requests = reportParseLong(a, v);
        } else if (strcmp(a, "--duration") == 0) {
            opts.duration = reportParseDouble(a, v);
        } else if (strcmp(a, "--rows") == 0) {
            opts.rows = reportParseLong(a, v);
        } else if (strcmp(a, "--key-start") == 0) {
            opts.key_start = reportParseLong(a, v);
        } else if (strcmp(a, "--key-min") == 0) {
            opts.key_min = reportParseLong(a, v);
            have_range |= 1;
        } else if (strcmp(a, "--key-max") == 0) {
            opts.key_max = reportParseLong(a, v);
            have_range |= 2;
        } else if (strcmp(a, "--busy-timeout") == 0) {
            opts.busy_timeout_ms = reportParseLong(a, v);
        } else if (strcmp(a, "--synchronous") == 0) {
            opts.synchronous = v;
        } else if (strcmp(a, "--journal-mode") == 0) {
            opts.journal_mode = v;
        } else if (strcmp(a, "--seed") == 0) {
            opts.seed = (uint64_t)reportParseLong(a, v);
        } else {
            fprintf(stderr, "bench_sqlite: unknown flag %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    /* The pragma values are pasted into SQL text: keep them to plain words. */
    if (strspn(opts.synchronous, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123") !=
            strlen(opts.synchronous) ||
        strspn(opts.journal_mode, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
            strlen(opts.journal_mode)) {
        fprintf(stderr, "bench_sqlite: --synchronous and --journal-mode take a plain word\n");
        exit(2);
    }
    if (opts.db == NULL) {
        fprintf(stderr, "bench_sqlite: --db is required\n");
        exit(2);
    }
    if (opts.clients < 1 || opts.clients > 10000 || opts.rows < 1) {
        fprintf(stderr, "bench_sqlite: --clients 1..10000, --rows >= 1\n");
        exit(2);
    }
    if (opts.mode == MODE_SELECT && (have_range != 3 || opts.key_max < opts.key_min)) {
        fprintf(stderr, "bench_sqlite: --mode select needs --key-min <= --key-max\n");
        exit(2);
    }
    if (opts.requests == 0 && opts.duration == 0)
        opts.duration = 10;
}

/* Creates the file and the table if missing, in WAL mode so every client finds it so. */
static int createTable(void)
{
    sqlite3 *db = NULL;
    char sql[160];
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=%s; CREATE TABLE IF NOT EXISTS bench(k INTEGER PRIMARY KEY, "
             "v TEXT);",
             opts.journal_mode);
    int rc = sqlite3_open_v2(opts.db, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "bench_sqlite: %s: %s\n", opts.db,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    int status = 1;
    int opened = 0;
    parseArgs(argc, argv);
    atomic_store(&nextKey, opts.key_start);
    if (createTable() != 0)
        return 1;

    struct client *clients = calloc((size_t)opts.clients, sizeof(*clients));
    struct tally *total = malloc(sizeof(*total));
    if (clients == NULL || total == NULL) {
        fprintf(stderr, "bench_sqlite: out of memory\n");
        goto out;
    }
    for (; opened < opts.clients; opened++) {
        struct client *c = &clients[opened];
        c->id = opened;
        c->rng = opts.seed * 1000003u + (uint64_t)opened;
        tallyInit(&c->tally);
        if (clientOpen(c) != 0) {
            opened++;
            goto out;
        }
    }
    pthread_barrier_init(&startBarrier, NULL, (unsigned)opts.clients + 1);
    for (int i = 0; i < opts.clients; i++) {
        int rc = pthread_create(&clients[i].thread, NULL, clientMain, &clients[i]);
        if (rc != 0) {
            fprintf(stderr, "bench_sqlite: pthread_create: %s\n", strerror(rc));
            exit(1); /* the barrier would never open for the threads already started */
        }
    }
    startNs = reportNowNs();
    pthread_barrier_wait(&startBarrier);
    tallyInit(total);
    for (int i = 0; i < opts.clients; i++) {
        pthread_join(clients[i].thread, NULL);
        tallyMerge(total, &clients[i].tally);
    }
    double elapsed = (double)(reportNowNs() - startNs) / 1e9;
    pthread_barrier_destroy(&startBarrier);

    struct report_run run = {
        .tool = "sqlite",
        .mode = modeNames[opts.mode],
        .target = opts.db,
        .clients = opts.clients,
        .rows_per_request = opts.mode == MODE_TXN ? opts.rows : 1,
        .elapsed_s = elapsed,
        .window_s = opts.requests > 0 ? 0 : opts.duration,
        .key_start = opts.mode == MODE_SELECT ? opts.key_min : opts.key_start,
        .key_end = opts.mode == MODE_SELECT ? opts.key_max + 1 : atomic_load(&nextKey),
    };
    reportPrint(stdout, &run, total);
    status = 0;
out:
    for (int i = 0; i < opened; i++)
        clientClose(&clients[i]);
    free(clients);
    free(total);
    return status;
}
