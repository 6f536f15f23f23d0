/* Results of a batch: one entry per statement, either an error, the figures of a
 * write (last insert id, rows affected), or the columns, types and rows of a query.
 *
 * Built by the store while it steps statements, read through the public
 * cairn_result_* accessors, and encoded as rqlite's JSON shapes for HTTP. Text and
 * blob bytes live in one arena per statement so that a large result is a handful of
 * allocations, not one per value. Any thread; a result is not shared. */
#ifndef CAIRN_RESULT_H
#define CAIRN_RESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cairn.h"

struct rvalue {
    int type;   /* CAIRN_INTEGER .. CAIRN_NULL */
    int64_t i;
    double d;
    size_t off; /* text/blob: offset in the statement's arena */
    size_t n;
};

struct rstmt {
    char *error;      /* NULL when the statement succeeded */
    bool rows_shape;  /* a query: columns/types/values */
    int64_t last_insert_id;
    int64_t rows_affected;
    double time;      /* seconds */
    size_t ncol;
    char **cols;
    char **types;
    char **tables;    /* per column, the table it is read from (SQLite's
                         sqlite3_column_table_name), NULL for an expression; the array
                         itself is NULL when no column has one */
    size_t nrows;
    size_t cap;       /* capacity of vals in rows */
    struct rvalue *vals;
    struct buf arena;
    size_t names_size; /* bytes of cols, types and tables with their strings */
};

struct cairn_result {
    size_t n;
    size_t cap;
    struct rstmt *stmts;
    uint64_t raft_index; /* index of the log entry that produced it, 0 for local reads */
};

/* Allocate an empty result. NULL when memory ran out. */
struct cairn_result *resultNew(void);

/* Make room for n statement results at once (a 10,000-statement batch grew by doubling,
 * copying and faulting in 2.5 MB). 0 or CAIRN_ENOMEM. */
int resultReserve(struct cairn_result *r, size_t n);

/* Append a statement result; NULL when memory ran out. The pointer is valid until
 * the next resultAdd(). */
struct rstmt *resultAdd(struct cairn_result *r);

/* Record an error on st (message copied). */
void resultError(struct rstmt *st, const char *msg);

/* Set the columns of a query result (names and declared types copied; a NULL type
 * is kept as NULL and filled from the first row's values). 0 or CAIRN_ENOMEM. */
int resultColumns(struct rstmt *st, size_t ncol, const char *const *names,
                  const char *const *decltypes);

/* Set the tables the columns (set before) are read from, for ?qualify_columns:
 * tables[i] NULL or "" for a column that is an expression. Copied. 0 or CAIRN_ENOMEM. */
int resultColumnTables(struct rstmt *st, const char *const *tables);

/* Drop st's columns (names, types, tables) and rows with their bytes, to set them
 * again: a later statement of the same SQL string replaces an earlier one's result. */
void resultClearColumns(struct rstmt *st);

/* Append a row's worth of value slots; returns the first slot or NULL on OOM. */
struct rvalue *resultRow(struct rstmt *st);

/* Store text/blob bytes for a value. 0 or CAIRN_ENOMEM. */
int resultBytes(struct rstmt *st, struct rvalue *v, const void *p, size_t n);

/* The memory st holds: the struct itself, its error, its column names, types and
 * tables, its value slots and its arena as far as used, each block counted with the
 * allocator's bookkeeping. A read's results are bounded by this (cairnd --max-result-size): a
 * statement of one small row still holds some hundred bytes, and 5,000,000 of them
 * took gigabytes that no bound saw. */
size_t resultStmtBytes(const struct rstmt *st);

/* Give back the room st's rows and bytes grew into and did not use (a block grows by
 * doubling: up to as much again as it holds), once its statement has run: what a
 * result holds is then what resultStmtBytes counts, while it waits for its client.
 * Slack under RESULT_TRIM_SLACK bytes is kept (not worth a realloc); a one-row result
 * of a bulk request's 100,000 statements left hundreds of bytes in each. */
#define RESULT_TRIM_SLACK 256
void resultTrim(struct rstmt *st);

/* Fill the types that had no declared type from the first row. */
void resultFinishTypes(struct rstmt *st);

#define RESULT_JSON_ASSOCIATIVE 0x1
#define RESULT_JSON_TIMINGS 0x2
#define RESULT_JSON_RAFT_INDEX 0x4
/* ?blob_array: BLOBs as arrays of byte values ([222,173]), not base64 strings. */
#define RESULT_JSON_BLOB_ARRAY 0x8
/* ?qualify_columns: a column read from a table is named "table.column" (in "columns"
 * and as the key of the associative form); an expression keeps its plain name. */
#define RESULT_JSON_QUALIFY 0x10

/* Encode r as rqlite's response object {"results":[...], "time":...} into out.
 * total_time is the whole request's time in seconds (used with TIMINGS). Out of
 * memory sets out->oom. */
void resultToJson(const struct cairn_result *r, unsigned flags, double total_time,
                  struct buf *out);

/* The same encoding in parts, for a response sent while it is made: its JSON may be
 * several times the results' memory (a name repeated in every row of ?associative, six
 * bytes for each control character of a text), and is never held whole. */
struct result_json {
    const struct cairn_result *r; /* the caller's; it must outlive the encoding */
    unsigned flags;
    double total_time;
    int phase;
    size_t stmt, row, col; /* where the encoding is */
    size_t off;            /* the bytes of a long value written so far */
    char **names;          /* the column names of statement stmt, while it is encoded */
};
void resultJsonInit(struct result_json *j, const struct cairn_result *r, unsigned flags,
                    double total_time);
/* Append the next parts of the JSON to out, until out holds at least `want` bytes or
 * the document ends; a part is at most a statement's opening or a value's slice of
 * 192 KiB (as JSON, at most six times that). True once the whole document is in.
 * Out of memory sets out->oom (and nothing more is appended). */
bool resultJsonNext(struct result_json *j, struct buf *out, size_t want);
/* Release what the encoding holds (whether or not it ended). */
void resultJsonEnd(struct result_json *j);

#endif
