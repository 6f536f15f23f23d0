/* Statement results and their rqlite-compatible JSON encoding (see result.h).
 * Any thread. */
#include "result.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* What malloc adds to each block it hands out (glibc: a 16-byte header, rounded to 16). */
#define BLOCK_OVERHEAD 16

/* The memory of a string of n bytes in a block of its own. */
static size_t strSize(const char *p)
{
    return p != NULL ? strlen(p) + 1 + BLOCK_OVERHEAD : 0;
}

struct cairn_result *resultNew(void)
{
    return calloc(1, sizeof(struct cairn_result));
}

int resultReserve(struct cairn_result *r, size_t n)
{
    struct rstmt *p;
    if (n <= r->cap) {
        return 0;
    }
    p = realloc(r->stmts, n * sizeof *p);
    if (p == NULL) {
        return CAIRN_ENOMEM;
    }
    r->stmts = p;
    r->cap = n;
    return 0;
}

struct rstmt *resultAdd(struct cairn_result *r)
{
    struct rstmt *st;
    if (r->n == r->cap && resultReserve(r, r->cap ? r->cap * 2 : 4) != 0) {
        return NULL;
    }
    st = &r->stmts[r->n++];
    memset(st, 0, sizeof *st);
    bufInit(&st->arena);
    return st;
}

void resultError(struct rstmt *st, const char *msg)
{
    free(st->error);
    st->error = strdup(msg ? msg : "unknown error");
}

static char *lowerDup(const char *s)
{
    char *d = strdup(s);
    if (d != NULL) {
        for (char *p = d; *p; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
    }
    return d;
}

int resultColumns(struct rstmt *st, size_t ncol, const char *const *names,
                  const char *const *decltypes)
{
    size_t i;
    st->rows_shape = true;
    st->ncol = ncol;
    st->cols = calloc(ncol ? ncol : 1, sizeof(char *));
    st->types = calloc(ncol ? ncol : 1, sizeof(char *));
    if (st->cols == NULL || st->types == NULL) {
        return CAIRN_ENOMEM;
    }
    st->names_size += 2 * ((ncol ? ncol : 1) * sizeof(char *) + BLOCK_OVERHEAD);
    for (i = 0; i < ncol; i++) {
        st->cols[i] = strdup(names[i] ? names[i] : "");
        if (st->cols[i] == NULL) {
            return CAIRN_ENOMEM;
        }
        st->names_size += strSize(st->cols[i]);
        if (decltypes[i] != NULL) {
            st->types[i] = lowerDup(decltypes[i]);
            if (st->types[i] == NULL) {
                return CAIRN_ENOMEM;
            }
            st->names_size += strSize(st->types[i]);
        }
    }
    return 0;
}

int resultColumnTables(struct rstmt *st, const char *const *tables)
{
    size_t i;
    for (i = 0; i < st->ncol; i++) {
        if (tables[i] == NULL || tables[i][0] == '\0') {
            continue;
        }
        if (st->tables == NULL) {
            if ((st->tables = calloc(st->ncol, sizeof(char *))) == NULL) {
                return CAIRN_ENOMEM;
            }
            st->names_size += st->ncol * sizeof(char *) + BLOCK_OVERHEAD;
        }
        if ((st->tables[i] = strdup(tables[i])) == NULL) {
            return CAIRN_ENOMEM;
        }
        st->names_size += strSize(st->tables[i]);
    }
    return 0;
}

void resultClearColumns(struct rstmt *st)
{
    size_t i;
    for (i = 0; i < st->ncol; i++) {
        if (st->cols) {
            free(st->cols[i]);
        }
        if (st->types) {
            free(st->types[i]);
        }
        if (st->tables) {
            free(st->tables[i]);
        }
    }
    free(st->cols);
    free(st->types);
    free(st->tables);
    st->cols = st->types = st->tables = NULL;
    st->ncol = 0;
    st->names_size = 0;
    /* The value slots go too: they were sized for the old number of columns, and a row
     * of more columns would run past them. */
    free(st->vals);
    st->vals = NULL;
    st->nrows = st->cap = 0;
    bufReset(&st->arena);
}

struct rvalue *resultRow(struct rstmt *st)
{
    size_t ncol = st->ncol ? st->ncol : 1;
    if (st->nrows == st->cap) {
        /* From one row: a write's RETURNING, or a bulk request's SELECT, is one row in
         * each of 100,000 statements, and room for 8 left 7 unused in every one. */
        size_t cap = st->cap ? st->cap * 2 : 1;
        struct rvalue *p = realloc(st->vals, cap * ncol * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        st->vals = p;
        st->cap = cap;
    }
    return &st->vals[st->nrows++ * ncol];
}

void resultTrim(struct rstmt *st)
{
    size_t ncol = st->ncol ? st->ncol : 1;
    if (st->vals != NULL && st->nrows > 0 &&
        (st->cap - st->nrows) * ncol * sizeof *st->vals >= RESULT_TRIM_SLACK) {
        struct rvalue *p = realloc(st->vals, st->nrows * ncol * sizeof *p);
        if (p != NULL) {
            st->vals = p;
            st->cap = st->nrows;
        }
    }
    if (st->arena.p != NULL && st->arena.cap - st->arena.len - 1 >= RESULT_TRIM_SLACK) {
        char *p = realloc(st->arena.p, st->arena.len + 1);
        if (p != NULL) {
            st->arena.p = p;
            st->arena.cap = st->arena.len + 1;
        }
    }
}

int resultBytes(struct rstmt *st, struct rvalue *v, const void *p, size_t n)
{
    v->off = st->arena.len;
    v->n = n;
    bufPut(&st->arena, p, n);
    bufPutc(&st->arena, '\0'); /* text stays NUL-terminated for the C API */
    return st->arena.oom ? CAIRN_ENOMEM : 0;
}

static const char *storageClass(int type)
{
    switch (type) {
        case CAIRN_INTEGER:
            return "integer";
        case CAIRN_FLOAT:
            return "real";
        case CAIRN_TEXT:
            return "text";
        case CAIRN_BLOB:
            return "blob";
        default:
            return "";
    }
}

void resultFinishTypes(struct rstmt *st)
{
    size_t i;
    for (i = 0; i < st->ncol; i++) {
        if (st->types[i] == NULL) {
            const char *t = st->nrows > 0 ? storageClass(st->vals[i].type) : "";
            st->types[i] = strdup(t);
            st->names_size += strSize(st->types[i]);
        }
    }
}

size_t resultStmtBytes(const struct rstmt *st)
{
    size_t n = sizeof *st + strSize(st->error) + st->names_size;
    /* The rows and their bytes as used, not as allocated: the slack of a growing block
     * is at most as much again, and a read of 200 MB of rows stays within the default
     * 256 MiB, as it was before the rest was counted. */
    if (st->vals != NULL) {
        n += st->nrows * (st->ncol ? st->ncol : 1) * sizeof(struct rvalue) + BLOCK_OVERHEAD;
    }
    if (st->arena.p != NULL) {
        n += st->arena.len + BLOCK_OVERHEAD;
    }
    return n;
}

static void freeStmt(struct rstmt *st)
{
    free(st->error);
    resultClearColumns(st);
    bufFree(&st->arena);
}

void cairn_result_free(cairn_result *r)
{
    size_t i;
    if (r == NULL) {
        return;
    }
    for (i = 0; i < r->n; i++) {
        freeStmt(&r->stmts[i]);
    }
    free(r->stmts);
    free(r);
}

/* ---- times, as rqlite answers them ---------------------------------------------
 * rqlite's SQLite driver turns the values of columns declared DATE, DATETIME or
 * TIMESTAMP into times, and its JSON writes them in RFC 3339 (Go's RFC3339Nano): text in
 * one of SQLite's time formats ("2004-02-14 07:15:00", "...T...", with a fraction and
 * an offset, or a date alone; a final "Z" is dropped first), and integers as Unix
 * seconds (milliseconds past 10^12), in UTC. Other values, and text in no such format,
 * are answered as stored. Clients' time converters (pyrqlite, gorqlite) read this form. */

static bool isTimeColumn(const char *decltype)
{
    return decltype != NULL && (strcmp(decltype, "date") == 0 || strcmp(decltype, "datetime") == 0 ||
                                strcmp(decltype, "timestamp") == 0);
}

static bool digits(const char *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static int daysIn(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

struct civil {
    int y, mo, d, h, mi, s;
    char frac[10]; /* digits without trailing zeros, "" for none */
    int offset;    /* minutes east of UTC */
};

/* Parse text p[0..n) in one of the formats above. */
static bool parseTime(const char *p, size_t n, struct civil *t)
{
    size_t i = 0;
    memset(t, 0, sizeof *t);
    if (n > 0 && p[n - 1] == 'Z') {
        n--;
    }
    if (n < 10 || !digits(p, 4, &t->y) || p[4] != '-' || !digits(p + 5, 2, &t->mo) ||
        p[7] != '-' || !digits(p + 8, 2, &t->d) || t->mo < 1 || t->mo > 12 || t->d < 1 ||
        t->d > daysIn(t->y, t->mo)) {
        return false;
    }
    if (n == 10) {
        return true;
    }
    if (n < 16 || (p[10] != ' ' && p[10] != 'T') || !digits(p + 11, 2, &t->h) || p[13] != ':' ||
        !digits(p + 14, 2, &t->mi) || t->h > 23 || t->mi > 59) {
        return false;
    }
    if (n == 16) {
        return true;
    }
    if (n < 19 || p[16] != ':' || !digits(p + 17, 2, &t->s) || t->s > 59) {
        return false;
    }
    i = 19;
    if (i < n && p[i] == '.') {
        size_t k = 0;
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (k == 9) {
                return false;
            }
            t->frac[k++] = p[i++];
        }
        if (k == 0) {
            return false;
        }
        while (k > 0 && t->frac[k - 1] == '0') {
            t->frac[--k] = '\0';
        }
    }
    if (i < n && (p[i] == '+' || p[i] == '-')) {
        int oh, om;
        if (n - i != 6 || !digits(p + i + 1, 2, &oh) || p[i + 3] != ':' ||
            !digits(p + i + 4, 2, &om) || oh > 23 || om > 59) {
            return false;
        }
        t->offset = (p[i] == '-' ? -1 : 1) * (oh * 60 + om);
        i = n;
    }
    return i == n;
}

/* Unix seconds (and nanoseconds) into a UTC civil time; false outside years 0-9999. */
static bool civilFromUnix(int64_t secs, int64_t nanos, struct civil *t)
{
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* Howard Hinnant's civil_from_days. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    if (y < 0 || y > 9999) {
        return false;
    }
    memset(t, 0, sizeof *t);
    t->y = (int)y;
    t->mo = (int)m;
    t->d = (int)d;
    t->h = (int)(rem / 3600);
    t->mi = (int)(rem / 60 % 60);
    t->s = (int)(rem % 60);
    if (nanos > 0) {
        snprintf(t->frac, sizeof t->frac, "%09lld", (long long)nanos);
        for (int k = 8; k >= 0 && t->frac[k] == '0'; k--) {
            t->frac[k] = '\0';
        }
    }
    return true;
}

static void rfc3339(const struct civil *t, struct buf *out)
{
    bufPrintf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d%s%s", t->y, t->mo, t->d, t->h, t->mi, t->s,
              t->frac[0] ? "." : "", t->frac);
    if (t->offset == 0) {
        bufPuts(out, "Z\"");
    } else {
        int o = t->offset < 0 ? -t->offset : t->offset;
        bufPrintf(out, "%c%02d:%02d\"", t->offset < 0 ? '-' : '+', o / 60, o % 60);
    }
}

/* A value of a DATE/DATETIME/TIMESTAMP column as rqlite answers it; false when it is
 * answered as stored. */
static bool timeJson(const struct rstmt *st, const struct rvalue *v, struct buf *out)
{
    struct civil t;
    if (v->type == CAIRN_TEXT) {
        if (!parseTime(st->arena.p + v->off, v->n, &t)) {
            return false;
        }
    } else if (v->type == CAIRN_INTEGER) {
        int64_t secs = v->i, nanos = 0;
        if (v->i > 1000000000000LL || v->i < -1000000000000LL) { /* milliseconds */
            secs = v->i / 1000;
            nanos = (v->i % 1000) * 1000000;
            if (nanos < 0) {
                nanos += 1000000000;
                secs--;
            }
        }
        if (!civilFromUnix(secs, nanos, &t)) {
            return false;
        }
    } else {
        return false;
    }
    rfc3339(&t, out);
    return true;
}

/* Bytes [from, to) of a BLOB in rqlite's ?blob_array form, [222,173,190,239], without
 * the brackets: a comma before every byte but the BLOB's first. */
static void bytesJson(struct buf *out, const unsigned char *p, size_t from, size_t to)
{
    char *w;
    if (bufReserve(out, 4 * (to - from)) != 0) {
        return;
    }
    w = out->p + out->len;
    for (size_t i = from; i < to; i++) {
        unsigned v = p[i];
        if (i > 0) {
            *w++ = ',';
        }
        if (v >= 100) {
            *w++ = (char)('0' + v / 100);
        }
        if (v >= 10) {
            *w++ = (char)('0' + v / 10 % 10);
        }
        *w++ = (char)('0' + v % 10);
    }
    out->len = (size_t)(w - out->p);
    out->p[out->len] = '\0';
}

/* The most bytes of a TEXT or BLOB value written at once (a multiple of 3, for
 * base64): a 64 MiB text of control characters is 384 MiB of JSON, which a response
 * never holds whole. */
#define VALUE_SLICE (3u << 16)

/* Write the part of value v from j->off on, at most VALUE_SLICE bytes of it, and move
 * j->off on; j->off is 0 again once the whole value is written. */
static void valueJson(struct result_json *j, const struct rstmt *st, const struct rvalue *v,
                      size_t col, struct buf *out)
{
    const char *p;
    size_t from = j->off;
    size_t to;
    if (from == 0 && st->types != NULL && isTimeColumn(st->types[col]) && timeJson(st, v, out)) {
        return;
    }
    switch (v->type) {
        case CAIRN_INTEGER:
            bufJsonInt(out, v->i);
            return;
        case CAIRN_FLOAT:
            bufJsonDouble(out, v->d);
            return;
        case CAIRN_TEXT:
        case CAIRN_BLOB:
            break;
        default:
            bufPuts(out, "null");
            return;
    }
    p = st->arena.p + v->off;
    to = v->n - from > VALUE_SLICE ? from + VALUE_SLICE : v->n;
    if (v->type == CAIRN_TEXT) {
        /* Cut where no character spans: before the byte that begins the one the cut
         * falls in, at most 3 bytes back (a character is at most 4). Where the 3 bytes
         * before the cut continue a sequence too, none of them belongs to a character
         * that reaches past it: they are stray bytes, each U+FFFD alone. Going further
         * back split text that is not UTF-8 (a lead byte, then continuation bytes)
         * between its lead and the continuation byte it decodes with, and each part
         * then said U+FFFD where the whole said a character. */
        size_t cut = to;
        while (to < v->n && to > cut - 3 && ((unsigned char)p[to] & 0xc0) == 0x80) {
            to--;
        }
        if (to < v->n && ((unsigned char)p[to] & 0xc0) == 0x80) {
            to = cut;
        }
    }
    if (from == 0) {
        bufPutc(out, v->type == CAIRN_BLOB && (j->flags & RESULT_JSON_BLOB_ARRAY) ? '[' : '"');
    }
    if (v->type == CAIRN_TEXT) {
        bufJsonChars(out, p + from, to - from);
    } else if (j->flags & RESULT_JSON_BLOB_ARRAY) {
        bytesJson(out, (const unsigned char *)p, from, to);
    } else {
        bufBase64(out, p + from, to - from);
    }
    if (to < v->n) {
        j->off = to;
        return;
    }
    bufPutc(out, v->type == CAIRN_BLOB && (j->flags & RESULT_JSON_BLOB_ARRAY) ? ']' : '"');
    j->off = 0;
}

/* The names st's columns are answered under: with RESULT_JSON_QUALIFY, "table.column"
 * for a column read from a table (rqlite's ?qualify_columns, which names the table, not
 * its alias in the query). An array of ncol names (the qualified ones allocated) for
 * freeNames(), or NULL when out of memory. */
static char **columnNames(const struct rstmt *st, unsigned flags)
{
    char **names = calloc(st->ncol ? st->ncol : 1, sizeof *names);
    size_t i;
    if (names == NULL) {
        return NULL;
    }
    for (i = 0; i < st->ncol; i++) {
        if ((flags & RESULT_JSON_QUALIFY) && st->tables != NULL && st->tables[i] != NULL) {
            size_t tn = strlen(st->tables[i]);
            size_t cn = strlen(st->cols[i]);
            char *q = malloc(tn + 1 + cn + 1);
            if (q == NULL) {
                for (size_t k = 0; k < i; k++) {
                    if (names[k] != st->cols[k]) {
                        free(names[k]);
                    }
                }
                free(names);
                return NULL;
            }
            memcpy(q, st->tables[i], tn);
            q[tn] = '.';
            memcpy(q + tn + 1, st->cols[i], cn + 1);
            names[i] = q;
        } else {
            names[i] = st->cols[i];
        }
    }
    return names;
}

static void freeNames(const struct rstmt *st, char **names)
{
    for (size_t i = 0; i < st->ncol; i++) {
        if (names[i] != st->cols[i]) {
            free(names[i]);
        }
    }
    free(names);
}

/* The opening of statement result st, up to its first row. */
static void stmtHead(struct result_json *j, const struct rstmt *st, struct buf *out)
{
    size_t i;
    bufPutc(out, '{');
    if (st->error != NULL) {
        bufPuts(out, "\"error\":");
        bufJsonString(out, st->error, strlen(st->error));
    } else if (!st->rows_shape) {
        bufPuts(out, "\"last_insert_id\":");
        bufJsonInt(out, st->last_insert_id);
        bufPuts(out, ",\"rows_affected\":");
        bufJsonInt(out, st->rows_affected);
    } else if (j->flags & RESULT_JSON_ASSOCIATIVE) {
        bufPuts(out, "\"types\":{");
        for (i = 0; i < st->ncol; i++) {
            bufPuts(out, i ? "," : "");
            bufJsonString(out, j->names[i], strlen(j->names[i]));
            bufPutc(out, ':');
            bufJsonString(out, st->types[i], strlen(st->types[i]));
        }
        bufPuts(out, "},\"rows\":[");
    } else {
        bufPuts(out, "\"columns\":[");
        for (i = 0; i < st->ncol; i++) {
            bufPuts(out, i ? "," : "");
            bufJsonString(out, j->names[i], strlen(j->names[i]));
        }
        bufPuts(out, "],\"types\":[");
        for (i = 0; i < st->ncol; i++) {
            bufPuts(out, i ? "," : "");
            bufJsonString(out, st->types[i], strlen(st->types[i]));
        }
        bufPutc(out, ']');
        if (st->nrows > 0) {
            bufPuts(out, ",\"values\":[");
        }
    }
}

/* The next part of row j->row of st: the row's opening, then one value (or a part of a
 * long one); its closing after its last value. */
static void rowPart(struct result_json *j, const struct rstmt *st, struct buf *out)
{
    bool assoc = (j->flags & RESULT_JSON_ASSOCIATIVE) != 0;
    if (j->col == 0 && j->off == 0) {
        bufPuts(out, j->row ? "," : "");
        bufPutc(out, assoc ? '{' : '[');
    }
    if (j->col < st->ncol) {
        if (j->off == 0) {
            bufPuts(out, j->col ? "," : "");
            if (assoc) {
                bufJsonString(out, j->names[j->col], strlen(j->names[j->col]));
                bufPutc(out, ':');
            }
        }
        valueJson(j, st, &st->vals[j->row * st->ncol + j->col], j->col, out);
        if (j->off != 0 || ++j->col < st->ncol) {
            return;
        }
    }
    bufPutc(out, assoc ? '}' : ']');
    j->col = 0;
    j->row++;
}

/* The closing of statement result st, after its last row. */
static void stmtTail(struct result_json *j, const struct rstmt *st, struct buf *out)
{
    if (st->error == NULL && st->rows_shape &&
        ((j->flags & RESULT_JSON_ASSOCIATIVE) || st->nrows > 0)) {
        bufPutc(out, ']');
    }
    if (j->flags & RESULT_JSON_TIMINGS) {
        bufPuts(out, ",\"time\":");
        bufJsonDouble(out, st->time);
    }
    bufPutc(out, '}');
}

enum { JSON_START, JSON_STMT, JSON_ROWS, JSON_END, JSON_DONE };

void resultJsonInit(struct result_json *j, const struct cairn_result *r, unsigned flags,
                    double total_time)
{
    memset(j, 0, sizeof *j);
    j->r = r;
    j->flags = flags;
    j->total_time = total_time;
    j->phase = JSON_START;
}

/* One step of the encoding: a statement's opening or closing, a part of a row. */
static void jsonStep(struct result_json *j, struct buf *out)
{
    const struct rstmt *st = j->stmt < j->r->n ? &j->r->stmts[j->stmt] : NULL;
    switch (j->phase) {
        case JSON_START:
            bufPuts(out, "{\"results\":[");
            j->phase = j->r->n > 0 ? JSON_STMT : JSON_END;
            return;
        case JSON_STMT:
            if (st->error == NULL && st->rows_shape &&
                (j->names = columnNames(st, j->flags)) == NULL) {
                out->oom = true;
                return;
            }
            bufPuts(out, j->stmt ? "," : "");
            stmtHead(j, st, out);
            j->row = j->col = j->off = 0;
            j->phase = JSON_ROWS;
            return;
        case JSON_ROWS:
            if (j->names != NULL && j->row < st->nrows) {
                rowPart(j, st, out);
                return;
            }
            stmtTail(j, st, out);
            if (j->names != NULL) {
                freeNames(st, j->names);
                j->names = NULL;
            }
            j->phase = ++j->stmt < j->r->n ? JSON_STMT : JSON_END;
            return;
        case JSON_END:
            bufPutc(out, ']');
            if ((j->flags & RESULT_JSON_RAFT_INDEX) && j->r->raft_index > 0) {
                bufPuts(out, ",\"raft_index\":");
                bufJsonInt(out, (int64_t)j->r->raft_index);
            }
            if (j->flags & RESULT_JSON_TIMINGS) {
                bufPuts(out, ",\"time\":");
                bufJsonDouble(out, j->total_time);
            }
            bufPutc(out, '}');
            j->phase = JSON_DONE;
            return;
        default:
            return;
    }
}

bool resultJsonNext(struct result_json *j, struct buf *out, size_t want)
{
    while (j->phase != JSON_DONE && out->len < want && !out->oom) {
        jsonStep(j, out);
    }
    return j->phase == JSON_DONE;
}

void resultJsonEnd(struct result_json *j)
{
    if (j->names != NULL) {
        freeNames(&j->r->stmts[j->stmt], j->names);
        j->names = NULL;
    }
}

void resultToJson(const struct cairn_result *r, unsigned flags, double total_time,
                  struct buf *out)
{
    struct result_json j;
    resultJsonInit(&j, r, flags, total_time);
    resultJsonNext(&j, out, SIZE_MAX);
    resultJsonEnd(&j);
}

/* Public accessors. */

static const struct rstmt *getStmt(const cairn_result *r, size_t stmt)
{
    return (r != NULL && stmt < r->n) ? &r->stmts[stmt] : NULL;
}

static const struct rvalue *getValue(const cairn_result *r, size_t stmt, size_t row,
                                     size_t col)
{
    const struct rstmt *st = getStmt(r, stmt);
    if (st == NULL || row >= st->nrows || col >= st->ncol) {
        return NULL;
    }
    return &st->vals[row * st->ncol + col];
}

size_t cairn_result_count(const cairn_result *r)
{
    return r ? r->n : 0;
}

const char *cairn_result_error(const cairn_result *r, size_t stmt)
{
    const struct rstmt *st = getStmt(r, stmt);
    return st ? st->error : NULL;
}

int64_t cairn_result_last_insert_id(const cairn_result *r, size_t stmt)
{
    const struct rstmt *st = getStmt(r, stmt);
    return st ? st->last_insert_id : 0;
}

int64_t cairn_result_rows_affected(const cairn_result *r, size_t stmt)
{
    const struct rstmt *st = getStmt(r, stmt);
    return st ? st->rows_affected : 0;
}

size_t cairn_result_columns(const cairn_result *r, size_t stmt)
{
    const struct rstmt *st = getStmt(r, stmt);
    return st ? st->ncol : 0;
}

const char *cairn_result_column_name(const cairn_result *r, size_t stmt, size_t col)
{
    const struct rstmt *st = getStmt(r, stmt);
    return (st && col < st->ncol) ? st->cols[col] : NULL;
}

const char *cairn_result_column_type(const cairn_result *r, size_t stmt, size_t col)
{
    const struct rstmt *st = getStmt(r, stmt);
    return (st && col < st->ncol) ? st->types[col] : NULL;
}

size_t cairn_result_rows(const cairn_result *r, size_t stmt)
{
    const struct rstmt *st = getStmt(r, stmt);
    return st ? st->nrows : 0;
}

int cairn_result_type(const cairn_result *r, size_t stmt, size_t row, size_t col)
{
    const struct rvalue *v = getValue(r, stmt, row, col);
    return v ? v->type : CAIRN_NULL;
}

int64_t cairn_result_int64(const cairn_result *r, size_t stmt, size_t row, size_t col)
{
    const struct rvalue *v = getValue(r, stmt, row, col);
    if (v == NULL) {
        return 0;
    }
    return v->type == CAIRN_FLOAT ? (int64_t)v->d : v->i;
}

double cairn_result_double(const cairn_result *r, size_t stmt, size_t row, size_t col)
{
    const struct rvalue *v = getValue(r, stmt, row, col);
    if (v == NULL) {
        return 0;
    }
    return v->type == CAIRN_INTEGER ? (double)v->i : v->d;
}

const char *cairn_result_text(const cairn_result *r, size_t stmt, size_t row, size_t col,
                              size_t *len)
{
    const struct rvalue *v = getValue(r, stmt, row, col);
    if (v == NULL || (v->type != CAIRN_TEXT && v->type != CAIRN_BLOB)) {
        if (len) {
            *len = 0;
        }
        return NULL;
    }
    if (len) {
        *len = v->n;
    }
    return r->stmts[stmt].arena.p + v->off;
}

const void *cairn_result_blob(const cairn_result *r, size_t stmt, size_t row, size_t col,
                              size_t *len)
{
    return cairn_result_text(r, stmt, row, col, len);
}
