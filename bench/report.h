/*
 * What a benchmark run counts and how it is printed (bench/ only, not part of libcairn).
 *
 * bench_http and bench_sqlite both keep one `struct tally` per client thread, merge them
 * in the main thread after join, and print one JSON object on one line to stdout, which
 * bench/run.sh collects and bench/report.py turns into the table of docs/BENCHMARKS.md.
 *
 * Threads: a tally is touched by its owner thread only; merging happens after join.
 */
#ifndef CAIRN_BENCH_REPORT_H
#define CAIRN_BENCH_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "hist.h"

/* The 100-byte value stored in every row, the same for cairnd and the SQLite baseline.
 * Plain ASCII that needs no JSON escaping and never contains the word "error". */
#define REPORT_VALUE                                                                               \
    "cairn-bench-value-0123456789abcdefghijklmnopqrstuvwxyz-0123456789ABCDEFGHIJKLMNOPQRSTU"       \
    "VWXYZ-01234567"
#define REPORT_VALUE_LEN (sizeof(REPORT_VALUE) - 1)

enum report_error {
    REPORT_ERR_IO,     /* connect, send, receive, timeout, unparsable response */
    REPORT_ERR_STATUS, /* HTTP status other than 200 */
    REPORT_ERR_BODY,   /* 200 but the body holds an "error" or lacks the expected results */
    REPORT_ERR_EMPTY,  /* a primary-key SELECT of a key that was inserted found no row */
    REPORT_ERR_SQL,    /* the SQLite C API returned an error (SQLITE_BUSY included) */
    REPORT_ERR_COUNT
};

struct tally {
    uint64_t requests;        /* successful requests (HTTP) or statements/transactions (SQLite) */
    uint64_t rows;            /* rows inserted or read by the successful ones */
    uint64_t window_requests; /* of those, completed before the end of a timed run */
    uint64_t window_rows;
    uint64_t errors[REPORT_ERR_COUNT];
    uint64_t reconnects; /* HTTP connections opened again after the first */
    char first_error[400];
    struct hist latency; /* successful requests only */
};

/* Monotonic clock in nanoseconds. */
uint64_t reportNowNs(void);

/* Empties t. */
void tallyInit(struct tally *t);

/* Counts one successful request of rows rows that took ns, completed in the window or
 * not. */
void tallySuccess(struct tally *t, uint64_t rows, uint64_t ns, int in_window);

/* Counts one error of kind and, if it is the first one, keeps a message made of fmt for
 * the report (truncated to fit). */
void tallyError(struct tally *t, enum report_error kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds from's counts, samples and (if into has none yet) first error into into. */
void tallyMerge(struct tally *into, const struct tally *from);

/* Describes a run for reportPrint. Strings are borrowed for the call only. */
struct report_run {
    const char *tool;   /* "cairnd" or "sqlite" */
    const char *mode;   /* "insert", "txn" or "select" */
    const char *target; /* the URL or the database file */
    int clients;
    long rows_per_request;
    double elapsed_s;  /* from the start until the last client finished */
    double window_s;   /* a timed run's duration, 0 for a run of a fixed request count */
    int64_t key_start; /* first key inserted, or the lowest key read */
    int64_t key_end;   /* one past the last key inserted, or past the highest read */
};

/* Prints one JSON object on one line, then flushes f. Rates are the window's counts over
 * window_s for a timed run, so that a request still running at the deadline (say, a
 * writer asleep in SQLite's busy handler) neither counts nor stretches the divisor. For a
 * run of a fixed request count they are the totals over the time each client spent in
 * its requests (summed latency / clients): the client's own work between requests, such
 * as building a 1.5 MB body, is not charged to the server. */
void reportPrint(FILE *f, const struct report_run *run, const struct tally *t);

/* Parses a decimal number (suffixes k = 1e3 and m = 1e6 allowed) for flag; on a bad value
 * prints a message to stderr and exits with status 2 (these are programs, not library). */
long reportParseLong(const char *flag, const char *s);
double reportParseDouble(const char *flag, const char *s);

#endif
