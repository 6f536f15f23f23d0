/* rqlite-compatible HTTP API over libmicrohttpd (see http.h). HTTP threads. */
#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <raft.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "admin.h"
#include "archive.h"
#include "buf.h"
#include "cluster.h"
#include "db.h"
#include "housekeeping.h"
#include "heal.h"
#include "http_int.h"
#include "lib.h"
#include "liverestore.h"
#include "policy.h"
#include "request.h"
#include "sqlfront.h"

/* Largest body room reserved from a request's Content-Length before it arrives. */
#define BODY_PRESIZE_MAX (16u << 20)
/* POST /db/load's body limit when none is configured: room for any real database file
 * (the body streams into a file beside the database, never into memory). */
#define LOAD_BODY_DEFAULT (1ULL << 40)
#define CONNECTION_TIMEOUT_S 120
/* Open files the HTTP server leaves to the rest of the node (Raft's connections and log
 * segments, SQLite's files, backups and snapshots being written and read): at least
 * FD_RESERVE_MIN, or a quarter of the limit. */
#define FD_RESERVE_MIN 256
/* How long a request waits for room in the node-wide budget (--max-request-memory)
 * before it is answered 503: answers being read give room back within moments. */
#define BUDGET_WAIT_MS 1000
/* What a request must find free in the budget to run: the first step of a read's
 * results, room for a write's answer. */
#define BUDGET_ADMIT (1u << 20)



/* Query-string flags, as rqlite reads them: presence means true. */
struct qflags {
    bool transaction, associative, timings, pretty, raft_index, redirect;
    bool blob_array, qualify_columns;
    const char *level;
    const char *branch;
    const char *q;
    bool has_q;
    const char *timeout;    /* rqlite's ?timeout= */
    const char *db_timeout; /* rqlite's ?db_timeout=, which wins */
    const char *unsupported; /* the first rqlite parameter cairn does not implement */
    const char *twice;       /* the first parameter with a value given more than once */
};

/* rqlite's query parameters that cairn does not implement yet. Ignoring one would
 * answer with another meaning than the client asked for (?queue expects an
 * acknowledgement shape, ?freshness a bound on staleness): each is refused with 400. */
static const char *const unsupportedParams[] = {"queue", "wait", "freshness", "freshness_strict",
                                                "noleader", "vacuum", NULL};

double httpNow(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool truthy(const char *v)
{
    return v == NULL || (strcmp(v, "false") != 0 && strcmp(v, "0") != 0);
}

/* A parameter with a value, seen before: which of the two is meant cannot be told (rqlite
 * takes the first, a last-wins reader the second), so the request is refused. */
static void once(struct qflags *f, const char *name, bool seen)
{
    if (seen && f->twice == NULL) {
        f->twice = name;
    }
}

static enum MHD_Result collectArg(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct qflags *f = cls;
    if (strcmp(key, "transaction") == 0) {
        f->transaction = truthy(value);
    } else if (strcmp(key, "associative") == 0) {
        f->associative = truthy(value);
    } else if (strcmp(key, "blob_array") == 0) {
        f->blob_array = truthy(value);
    } else if (strcmp(key, "qualify_columns") == 0) {
        f->qualify_columns = truthy(value);
    } else if (strcmp(key, "timings") == 0) {
        f->timings = truthy(value);
    } else if (strcmp(key, "pretty") == 0) {
        f->pretty = truthy(value);
    } else if (strcmp(key, "raft_index") == 0) {
        f->raft_index = truthy(value);
    } else if (strcmp(key, "redirect") == 0) {
        f->redirect = truthy(value);
    } else if (strcmp(key, "branch") == 0) {
        once(f, "branch", f->branch != NULL);
        f->branch = value ? value : "";
    } else if (strcmp(key, "level") == 0) {
        once(f, "level", f->level != NULL);
        f->level = value ? value : "";
    } else if (strcmp(key, "timeout") == 0) {
        once(f, "timeout", f->timeout != NULL);
        f->timeout = value ? value : "";
    } else if (strcmp(key, "db_timeout") == 0) {
        once(f, "db_timeout", f->db_timeout != NULL);
        f->db_timeout = value ? value : "";
    } else if (strcmp(key, "q") == 0) {
        once(f, "q", f->has_q);
        f->q = value;
        f->has_q = true;
    } else if (f->unsupported == NULL && truthy(value)) {
        /* Given as =false or =0 the parameter is off, as every flag here, and asks
         * nothing cairn does not do (rqlite's ?freshness=0 is no bound either). */
        for (int i = 0; unsupportedParams[i] != NULL; i++) {
            if (strcmp(key, unsupportedParams[i]) == 0) {
                f->unsupported = unsupportedParams[i];
            }
        }
    }
    return MHD_YES;
}

enum MHD_Result httpQueue(struct MHD_Connection *c, unsigned status, const char *type,
                          struct MHD_Response *r)
{
    enum MHD_Result ret;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Cairn-Version", CAIRN_VERSION);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result httpSend(struct MHD_Connection *c, unsigned status, const char *type,
                            char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    return httpQueue(c, status, type, r);
}

enum MHD_Result httpSendBuf(struct MHD_Connection *c, unsigned status, struct buf *b,
                               bool pretty)
{
    char *p;
    size_t len;
    if (pretty) {
        struct buf pb;
        bufInit(&pb);
        bufJsonPretty(&pb, b->p, b->len);
        bufPutc(&pb, '\n');
        bufFree(b);
        *b = pb;
    }
    p = bufDetach(b, &len);
    if (p == NULL) {
        static const char oom[] = "{\"error\":\"out of memory building the response\"}";
        return httpSend(c, 500, "application/json", strdup(oom), sizeof oom - 1);
    }
    return httpSend(c, status, "application/json", p, len);
}

enum MHD_Result httpSendError(struct MHD_Connection *c, unsigned status, const char *msg)
{
    struct buf b;
    bufInit(&b);
    bufPuts(&b, "{\"error\":");
    bufJsonString(&b, msg, strlen(msg));
    bufPuts(&b, "}\n");
    return httpSendBuf(c, status, &b, false);
}

/* A response whose body is {"error": msg}, for the caller's own headers; NULL when
 * memory ran out. */
static struct MHD_Response *jsonErrorResponse(const char *msg)
{
    struct MHD_Response *r;
    struct buf b;
    char *p;
    size_t len;
    bufInit(&b);
    bufPuts(&b, "{\"error\":");
    bufJsonString(&b, msg, strlen(msg));
    bufPuts(&b, "}\n");
    if ((p = bufDetach(&b, &len)) == NULL) {
        return NULL;
    }
    if ((r = MHD_create_response_from_buffer(len, p, MHD_RESPMEM_MUST_FREE)) == NULL) {
        free(p);
    }
    return r;
}

enum MHD_Result httpSendBusy(struct http_server *h, struct MHD_Connection *c, const char *what)
{
    struct MHD_Response *r;
    char msg[400];
    atomic_fetch_add(&h->budget_refused, 1);
    snprintf(msg, sizeof msg,
             "the node's memory for requests is taken (cairnd --max-request-memory, %llu "
             "bytes, %llu held by bodies being received and answers not yet read): no room "
             "for %s; retry later",
             (unsigned long long)h->budget.limit,
             (unsigned long long)membudgetHeld(&h->budget), what);
    if ((r = jsonErrorResponse(msg)) == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return httpQueue(c, 503, "application/json", r);
}

enum MHD_Result httpSendNotAllowed(struct MHD_Connection *c, const char *method,
                                   const char *url, const char *allowed)
{
    char msg[300];
    struct MHD_Response *r;
    snprintf(msg, sizeof msg, "method %s is not allowed on %.200s (allowed: %s)", method, url,
             allowed);
    if ((r = jsonErrorResponse(msg)) == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allowed);
    return httpQueue(c, 405, "application/json", r);
}

unsigned httpStatusFor(int rv)
{
    switch (rv) {
        case CAIRN_EINVAL:
        case CAIRN_ECORRUPT:
            return 400;
        case CAIRN_ENOTFOUND:
            return 404;
        case CAIRN_EEXIST:
            return 409;
        case CAIRN_ETOOBIG:
            return 413;
        case CAIRN_ENOTLEADER:
        case CAIRN_ENOLEADER:
        case CAIRN_ESHUTDOWN:
        case CAIRN_ETIMEOUT:
        case CAIRN_EBUSY:
            return 503;
        case CAIRN_ENOSPC:
            return 507;
        case CAIRN_EUNKNOWN:
        case CAIRN_ENOTARCHIVED: /* applied: a client must not take it for "try again" */
            return 504;
        default:
            return 500;
    }
}

/* Is the request's Content-Type text/plain (with any parameters, in any case)? */
static bool isTextPlain(struct MHD_Connection *c)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL) {
        return false;
    }
    ct += strspn(ct, " \t");
    return strncasecmp(ct, "text/plain", 10) == 0 &&
           (ct[10] == '\0' || ct[10] == ';' || ct[10] == ' ' || ct[10] == '\t');
}

/* Does the body begin, after blanks, with '['? No SQL statement can ('[' opens a quoted
 * name), so such a body is a JSON array whatever its Content-Type says. */
static bool looksLikeJsonArray(const struct buf *body)
{
    size_t i = 0;
    while (i < body->len && strchr(" \t\r\n", body->p[i]) != NULL) {
        i++;
    }
    return i < body->len && body->p[i] == '[';
}

/* rqlite's text/plain body on POST /db/execute and /db/query: the whole body is one SQL
 * string (which, like any string statement, may hold several ;-separated ones). It is
 * rewritten in place as the JSON array ["SQL"], so that everything after, forwarding to
 * the leader included (which sends JSON), sees the one form and the statement passes
 * the same checks as any other. SQL text is UTF-8 without NUL bytes, as in a JSON body.
 * Returns 0, or the HTTP status of the refusal with errmsg set. */
static unsigned textPlainToJson(struct request *req, char *errmsg, size_t size)
{
    const unsigned char *p = (const unsigned char *)req->body.p;
    size_t n = req->body.len;
    size_t i = 0;
    struct buf j;
    if (n == 0) {
        snprintf(errmsg, size, "empty request body: expected SQL text (Content-Type: text/plain) "
                               "or a JSON array of statements");
        return 400;
    }
    while (i < n) {
        size_t k = 1;
        if (p[i] == 0) {
            snprintf(errmsg, size,
                     "statement 1: the statement holds a NUL byte at offset %zu: SQL text may "
                     "not contain one (send binary data as a parameter)",
                     i);
            return 400;
        }
        if (p[i] >= 0x80 && (k = utf8Decode(p + i, n - i, NULL)) == 0) {
            snprintf(errmsg, size,
                     "the text/plain body is not UTF-8: byte 0x%02x at offset %zu (SQL text "
                     "must be UTF-8)",
                     p[i], i);
            return 400;
        }
        i += k;
    }
    bufInit(&j);
    bufPutc(&j, '[');
    bufJsonString(&j, req->body.p, n);
    bufPutc(&j, ']');
    if (j.oom) {
        bufFree(&j);
        snprintf(errmsg, size, "out of memory reading the request body");
        return 500;
    }
    bufFree(&req->body);
    req->body = j;
    return 0;
}

/* A response of results sent while its JSON is made (result.h, resultJsonNext): the
 * connection's thread makes the next RESPONSE_PART bytes when the client has taken
 * the last. What the node holds for a response is its results and one part, however
 * large the JSON. */
#define RESPONSE_PART (256u << 10)

struct response_stream {
    struct cairn_result *res; /* owned */
    /* What res holds, taken from budget and given back once res is freed. */
    struct membudget *budget;
    uint64_t charged;
    struct result_json j;
    bool pretty;
    struct json_pretty pp;
    bool done;       /* the whole document is in out (or went out) */
    struct buf raw;  /* with ?pretty, the compact part before it is indented */
    struct buf out;  /* the part being sent */
    size_t sent;     /* of out */
};

/* Make the next part of rs's document into rs->out (a newline after the end, as every
 * JSON answer has). 0, or -1 when memory ran out. */
static int streamFill(struct response_stream *rs)
{
    bufReset(&rs->out);
    rs->sent = 0;
    while (!rs->done && rs->out.len < RESPONSE_PART) {
        if (rs->pretty) {
            bufReset(&rs->raw);
            rs->done = resultJsonNext(&rs->j, &rs->raw, RESPONSE_PART / 2);
            bufJsonPrettyPart(&rs->pp, &rs->out, rs->raw.p, rs->raw.len);
            if (rs->raw.oom) {
                return -1;
            }
        } else {
            rs->done = resultJsonNext(&rs->j, &rs->out, RESPONSE_PART);
        }
        if (rs->done) {
            bufPutc(&rs->out, '\n');
        }
        if (rs->out.oom) {
            return -1;
        }
    }
    return 0;
}

static void streamFree(void *cls)
{
    struct response_stream *rs = cls;
    resultJsonEnd(&rs->j);
    cairn_result_free(rs->res);
    if (rs->budget != NULL) {
        membudgetGive(rs->budget, rs->charged);
    }
    bufFree(&rs->raw);
    bufFree(&rs->out);
    free(rs);
}

static ssize_t streamRead(void *cls, uint64_t pos, char *dst, size_t max)
{
    struct response_stream *rs = cls;
    size_t n;
    (void)pos;
    if (rs->sent == rs->out.len) {
        if (rs->done) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (streamFill(rs) != 0) {
            /* The status went out long ago: cutting the answer short is all that is
             * left, and the client sees a truncated body, not a whole one. */
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    n = rs->out.len - rs->sent < max ? rs->out.len - rs->sent : max;
    memcpy(dst, rs->out.p + rs->sent, n);
    rs->sent += n;
    return (ssize_t)n;
}

/* Answer 200 with the results res (taken over, freed here or once sent) as JSON, and
 * give the `charged` bytes they hold back to budget when they are freed. A document of
 * one part is sent as it always was, with its length; a longer one in parts (chunked),
 * made as the client reads: a client that does not read holds res, counted in budget. */
static enum MHD_Result sendResults(struct MHD_Connection *c, struct cairn_result *res,
                                   struct membudget *budget, uint64_t charged,
                                   unsigned jflags, double total_time, bool pretty)
{
    struct response_stream *rs = calloc(1, sizeof *rs);
    struct MHD_Response *r;
    if (rs == NULL) {
        cairn_result_free(res);
        membudgetGive(budget, charged);
        return httpSendError(c, 500, "out of memory building the response");
    }
    rs->res = res;
    rs->budget = budget;
    rs->charged = charged;
    rs->pretty = pretty;
    bufInit(&rs->raw);
    bufInit(&rs->out);
    resultJsonInit(&rs->j, res, jflags, total_time);
    if (streamFill(rs) != 0) {
        streamFree(rs);
        return httpSendError(c, 500, "out of memory building the response");
    }
    if (rs->done) {
        struct buf whole = rs->out;
        bufInit(&rs->out);
        streamFree(rs);
        return httpSendBuf(c, 200, &whole, false);
    }
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64u << 10, streamRead, rs,
                                          streamFree);
    if (r == NULL) {
        streamFree(rs);
        return MHD_NO;
    }
    return httpQueue(c, 200, "application/json", r);
}

static void bodyRelease(struct http_server *h, struct request *req);

/* A request's body and the server whose budget it is counted in (releaseBody). */
struct body_owner {
    struct http_server *h;
    struct request *req;
};

/* struct batch's will_write: let go of the request's body. */
static void releaseBody(void *arg)
{
    struct body_owner *o = arg;
    bodyRelease(o->h, o->req);
}

/* The memory res holds, as the budget counts it. */
static uint64_t resultHeld(const struct cairn_result *res)
{
    uint64_t n = sizeof *res + res->cap * sizeof res->stmts[0];
    for (size_t i = 0; i < res->n; i++) {
        n += resultStmtBytes(&res->stmts[i]);
    }
    return n;
}

/* /db/execute, /db/query, /db/request */
static enum MHD_Result serveData(struct http_server *h, struct MHD_Connection *c, int kind,
                                 const char *url, const char *method, struct request *req)
{
    enum MHD_Result ret;
    uint64_t target = 0;
    struct qflags f;
    struct batch b;
    struct cairn_result *res = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned jflags = 0;
    uint64_t taken = 0; /* of h->budget, for res */
    struct body_owner wb;
    int level;
    int rv;

    memset(&f, 0, sizeof f);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collectArg, &f);
    if (f.unsupported != NULL) {
        snprintf(errmsg, sizeof errmsg,
                 "?%s is an rqlite parameter that cairn does not implement: it is refused rather "
                 "than ignored, since the answer would not mean what it asks for",
                 f.unsupported);
        return httpSendError(c, 400, errmsg);
    }
    if (f.twice != NULL) {
        snprintf(errmsg, sizeof errmsg, "?%s is given more than once: give it once", f.twice);
        return httpSendError(c, 400, errmsg);
    }
    level = dbLevelFromName(f.level);
    if (level < 0 && strcmp(f.level, "auto") == 0) {
        /* rqlite's auto: none on a node that does not vote (a standby, cairn's read-only
         * node, serves reads from its own copy), weak on a voter. */
        level = clusterIsVoter(h->db) ? CAIRN_LEVEL_WEAK : CAIRN_LEVEL_NONE;
    }
    if (level < 0) {
        snprintf(errmsg, sizeof errmsg,
                 "unknown level \"%.64s\": use none, weak, linearizable, strong or auto",
                 f.level);
        return httpSendError(c, 400, errmsg);
    }
    if (strcmp(method, "POST") == 0 && isTextPlain(c) && !looksLikeJsonArray(&req->body)) {
        unsigned status;
        if (kind == BATCH_REQUEST) {
            /* As in rqlite, whose /db/request reads JSON whatever the type. */
            return httpSendError(c, 400, "/db/request takes a JSON array of statements, not "
                                         "SQL text: a text/plain body of SQL goes to "
                                         "/db/execute (writes) or /db/query (reads)");
        }
        if ((status = textPlainToJson(req, errmsg, sizeof errmsg)) != 0) {
            return httpSendError(c, status, errmsg);
        }
    }
    if (httpNodeParam(c, &target, &ret) != 0) {
        return ret;
    }
    /* Writes and reads above level none are the leader's (or ?node's): route them
     * before parsing. A /db/request at level none is routed once it is known to write. */
    if (f.branch == NULL && (target != 0 || kind == BATCH_EXECUTE || level != CAIRN_LEVEL_NONE) &&
        httpRoute(h, c, url, method, req, target, f.redirect, &ret)) {
        return ret;
    }
    if (f.branch != NULL) {
        /* A branch is a file of the node that restored it: the leader of the time (a
         * RESTORE is routed there) or ?node=ID. A read of one this node lacks, or of
         * another node's, goes there, as other requests do. */
        char path[PATH_MAX];
        bool here =
            target == 0 && adminBranchPath(h->db, f.branch, path, errmsg) != CAIRN_ENOTFOUND;
        if (!here && httpRoute(h, c, url, method, req, target, f.redirect, &ret)) {
            return ret;
        }
    }

    if (strcmp(method, "GET") == 0) {
        if (!f.has_q || f.q == NULL || f.q[0] == '\0') {
            return httpSendError(c, 400, "missing query: GET /db/query needs ?q=SQL");
        }
        const char *qv = NULL;
        size_t qlen = 0;
        if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, "q", 1, &qv, &qlen) ==
                MHD_YES &&
            qv != NULL && strlen(qv) != qlen) {
            snprintf(errmsg, sizeof errmsg,
                     "statement 1: the statement holds a NUL byte at offset %zu: SQL text may "
                     "not contain one (send binary data as a parameter)",
                     strlen(qv));
            return httpSendError(c, 400, errmsg);
        }
        rv = requestSingle(f.q, &b, errmsg);
    } else {
        if (req->body.len == 0) {
            return httpSendError(c, 400, "empty request body: expected a JSON array of statements");
        }
        rv = requestParse(req->body.p, req->body.len, &b, errmsg);
    }
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    if (b.n == 0) {
        batchFree(&b);
        return httpSendError(c, 400, "the request has no statements: expected a non-empty JSON "
                                 "array of statements");
    }
    b.kind = kind;
    b.flags = (f.transaction ? BATCH_TRANSACTION : 0) | (f.timings ? BATCH_TIMINGS : 0);
    if (f.db_timeout != NULL || f.timeout != NULL) {
        const char *name = f.db_timeout != NULL ? "db_timeout" : "timeout";
        const char *v = f.db_timeout != NULL ? f.db_timeout : f.timeout;
        if (policyParseDuration(v, &b.timeout_ms) != 0) {
            batchFree(&b);
            snprintf(errmsg, sizeof errmsg,
                     "?%s=%.64s is not a duration from 1ms to 24h (e.g. 30s, 500ms, 2m)", name,
                     v);
            return httpSendError(c, 400, errmsg);
        }
    }
    {
        /* A read stops when its client goes away (policy.h). */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci != NULL && ci->connect_fd >= 0) {
            b.has_client = true;
            b.client_fd = ci->connect_fd;
        }
    }
    if (f.branch == NULL && kind == BATCH_REQUEST && level == CAIRN_LEVEL_NONE && target == 0 &&
        !storeIsReadOnly(h->db->store, &b) && httpRoute(h, c, url, method, req, 0, f.redirect, &ret)) {
        batchFree(&b);
        return ret;
    }

    /* Room in the node-wide budget before anything runs: a flood of requests whose
     * answers are not read waits here, then is refused, rather than run the node out of
     * memory. A read's results take more as they grow (storeQuery); a write's, which
     * every node decides alike, are counted once made. */
    if (!membudgetTakeWait(&h->budget, BUDGET_ADMIT, BUDGET_WAIT_MS)) {
        batchFree(&b);
        return httpSendBusy(h, c, "this request's answer");
    }
    taken = BUDGET_ADMIT;
    b.budget = &h->budget;
    b.budget_taken = &taken;
    /* A write is never sent elsewhere from here on: its body, parsed into b, goes
     * before b is encoded into the log entry (a 58 MB body was held through it all). */
    wb.h = h;
    wb.req = req;
    b.will_write = releaseBody;
    b.will_write_arg = &wb;

    if (f.branch != NULL) {
        char path[PATH_MAX];
        if (kind != BATCH_QUERY) {
            batchFree(&b);
            return httpSendError(c, 400, "branches are read-only: query them with /db/query?branch=NAME");
        }
        bool ro;
        rv = adminBranchPath(h->db, f.branch, path, errmsg);
        /* cairn's own statements work on the live database: SQLite would only call them
         * a syntax error. */
        for (size_t i = 0; rv == 0 && i < b.n; i++) {
            struct sqlfront_cmd cmd;
            rv = sqlfrontParse(b.stmts[i].sql, b.stmts[i].sql_len, &cmd, errmsg);
            if (rv == 0 && cmd.kind != SQLFRONT_NONE) {
                errorf(errmsg, "statement %zu (%.*s...) is a cairn statement, which works on "
                               "the live database, not on branch \"%s\": send it without "
                               "?branch",
                       i + 1, (int)(b.stmts[i].sql_len > 24 ? 24 : b.stmts[i].sql_len),
                       b.stmts[i].sql, f.branch);
                rv = CAIRN_EINVAL;
            }
        }
        if (rv == 0) {
            rv = storeCheck(h->db->store, &b, &ro, errmsg); /* the statement policy */
        }
        if (rv == 0) {
            rv = storeQueryFile(h->db->store, path, &b, &res, errmsg);
        }
    } else {
        int64_t until = clusterMonoMs() + CLUSTER_LEADER_WAIT_MS;
        rv = dbRun(h->db, &b, (enum cairn_level)level, &res, errmsg);
        while ((rv == CAIRN_ENOTLEADER || rv == CAIRN_ENOLEADER) && level != CAIRN_LEVEL_NONE &&
               target == 0 && kind != BATCH_EXECUTE && storeIsReadOnly(h->db->store, &b) &&
               clusterMonoMs() < until) {
            /* Routed here as to the leader, which this node no longer is (its barrier
             * said so): a read is the new leader's, and running it there is safe
             * whatever this node did. A forwarded one goes back to its sender, which
             * looks for the new leader (421); one from a client is forwarded. The
             * node's published role can lag its barrier's answer for a moment: while
             * it still reads "leader", look again. */
            if (httpIsForwarded(c)) {
                batchFree(&b);
                membudgetGive(&h->budget, taken);
                return httpSendError(c, 421, "this node is not the leader");
            }
            if (httpRoute(h, c, url, method, req, 0, f.redirect, &ret)) {
                batchFree(&b);
                membudgetGive(&h->budget, taken);
                return ret;
            }
            clusterPause(20);
            rv = dbRun(h->db, &b, (enum cairn_level)level, &res, errmsg);
        }
    }
    batchFree(&b);
    if (rv != 0) {
        membudgetGive(&h->budget, taken);
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    {
        /* From here the budget counts what the results hold until they are sent. */
        uint64_t held = resultHeld(res);
        if (held > taken) {
            membudgetForce(&h->budget, held - taken);
        } else {
            membudgetGive(&h->budget, taken - held);
        }
        taken = held;
    }
    if (f.associative) {
        jflags |= RESULT_JSON_ASSOCIATIVE;
    }
    if (f.timings) {
        jflags |= RESULT_JSON_TIMINGS;
    }
    if (f.raft_index) {
        jflags |= RESULT_JSON_RAFT_INDEX;
    }
    if (f.blob_array) {
        jflags |= RESULT_JSON_BLOB_ARRAY;
    }
    if (f.qualify_columns) {
        jflags |= RESULT_JSON_QUALIFY;
    }
    return sendResults(c, res, &h->budget, taken, jflags, httpNow() - req->t0, f.pretty);
}

static void jsonKey(struct buf *b, const char *k)
{
    bufJsonString(b, k, strlen(k));
    bufPutc(b, ':');
}

static void jsonStr(struct buf *b, const char *k, const char *v)
{
    jsonKey(b, k);
    bufJsonString(b, v, strlen(v));
}

static enum MHD_Result serveStatus(struct http_server *h, struct MHD_Connection *c)
{
    struct cairn *db = h->db;
    struct node_info ni;
    struct store_stats ss;
    struct qflags f;
    struct buf b;

    memset(&f, 0, sizeof f);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collectArg, &f);
    nodeInfo(db->node, &ni);
    storeStats(db->store, &ss);
    bufInit(&b);
    bufPuts(&b, "{\"node\":{");
    jsonKey(&b, "id");
    bufJsonInt(&b, (int64_t)ni.id);
    bufPutc(&b, ',');
    jsonStr(&b, "version", CAIRN_VERSION);
    bufPutc(&b, ',');
    jsonStr(&b, "http_addr", db->http_addr);
    bufPutc(&b, ',');
    jsonStr(&b, "raft_addr", ni.address);
    bufPutc(&b, ',');
    jsonStr(&b, "data_dir", db->data_dir);
    bufPutc(&b, ',');
    jsonKey(&b, "pid");
    bufJsonInt(&b, getpid());
    bufPutc(&b, ',');
    jsonKey(&b, "uptime_s");
    bufJsonInt(&b, (int64_t)(time(NULL) - db->started));
    bufPutc(&b, ',');
    {
        /* "" for a cluster formed before ids (cluster.h) */
        char hex[2 * NODE_CLUSTER_ID_SIZE + 1] = "";
        if (!libIsZero(db->cluster_id, NODE_CLUSTER_ID_SIZE)) {
            libHexEncode(db->cluster_id, NODE_CLUSTER_ID_SIZE, hex);
        }
        jsonStr(&b, "cluster_id", hex);
    }
    bufPuts(&b, "},\"raft\":{");
    jsonStr(&b, "state", nodeStateName(ni.state));
    bufPutc(&b, ',');
    jsonKey(&b, "term");
    bufJsonInt(&b, (int64_t)ni.term);
    bufPutc(&b, ',');
    jsonKey(&b, "leader");
    bufPutc(&b, '{');
    jsonKey(&b, "id");
    bufJsonInt(&b, (int64_t)ni.leader_id);
    bufPutc(&b, ',');
    jsonStr(&b, "addr", ni.leader_address);
    bufPuts(&b, "},");
    jsonKey(&b, "ready");
    bufPuts(&b, ni.ready ? "true," : "false,");
    jsonKey(&b, "commit_index");
    bufJsonInt(&b, (int64_t)ni.commit_index);
    bufPutc(&b, ',');
    jsonKey(&b, "applied_index");
    bufJsonInt(&b, (int64_t)ni.applied_index);
    bufPutc(&b, ',');
    jsonKey(&b, "last_log_index");
    bufJsonInt(&b, (int64_t)ni.last_log_index);
    bufPutc(&b, ',');
    jsonKey(&b, "voters");
    bufJsonInt(&b, ni.voters);
    bufPutc(&b, ',');
    jsonKey(&b, "snapshots_taken");
    bufJsonInt(&b, (int64_t)ni.snapshots_taken);
    bufPutc(&b, ',');
    jsonKey(&b, "last_snapshot_index");
    bufJsonInt(&b, (int64_t)ni.last_snapshot_index);
    bufPutc(&b, ',');
    jsonKey(&b, "snapshot_threshold");
    bufJsonInt(&b, db->cfg.snapshot_threshold);
    bufPutc(&b, ',');
    jsonKey(&b, "snapshot_trailing");
    bufJsonInt(&b, db->cfg.snapshot_trailing);
    bufPutc(&b, ',');
    jsonStr(&b, "dir", db->raft_dir);
    bufPuts(&b, "},\"store\":{");
    {
        /* rqlite's layout of what its clients read (gorqlite's Open needs store.leader):
         * the leader's id and Raft address as strings ("" when none), the Raft state
         * capitalised, and SQLite's version and path. */
        static const char *const states[] = {"Unavailable", "Follower", "Candidate", "Leader"};
        char id[32] = "";
        if (ni.leader_id != 0) {
            snprintf(id, sizeof id, "%llu", (unsigned long long)ni.leader_id);
        }
        bufPuts(&b, "\"leader\":{");
        jsonStr(&b, "node_id", id);
        bufPutc(&b, ',');
        jsonStr(&b, "addr", ni.leader_address);
        bufPuts(&b, "},\"raft\":{");
        jsonStr(&b, "state", states[ni.state >= 0 && ni.state <= 3 ? ni.state : 0]);
        bufPuts(&b, "},\"sqlite3\":{");
        jsonStr(&b, "version", sqlite3_libversion());
        bufPutc(&b, ',');
        jsonStr(&b, "path", db->db_path);
        bufPutc(&b, ',');
        jsonKey(&b, "db_size");
        bufJsonInt(&b, ss.db_size);
        bufPuts(&b, "},");
    }
    jsonStr(&b, "db_path", db->db_path);
    bufPutc(&b, ',');
    jsonKey(&b, "db_size");
    bufJsonInt(&b, ss.db_size);
    bufPutc(&b, ',');
    jsonKey(&b, "wal_size");
    bufJsonInt(&b, ss.wal_size);
    bufPutc(&b, ',');
    jsonKey(&b, "applied_index");
    bufJsonInt(&b, (int64_t)ss.applied_index);
    bufPutc(&b, ',');
    jsonKey(&b, "readers");
    bufJsonInt(&b, ss.readers);
    bufPutc(&b, ',');
    jsonKey(&b, "early_applies");
    bufJsonInt(&b, (int64_t)ss.early_applies);
    bufPutc(&b, ',');
    jsonKey(&b, "early_discards");
    bufJsonInt(&b, (int64_t)ss.early_discards);
    bufPutc(&b, ',');
    {
        char why[CAIRN_ERRMSG_SIZE];
        jsonKey(&b, "diverged");
        bufJsonText(&b, dbDiverged(db, why, sizeof why) ? why : NULL);
        bufPutc(&b, ',');
        jsonKey(&b, "removed");
        bufJsonText(&b, dbRemoved(db, why, sizeof why) ? why : NULL);
        bufPutc(&b, ',');
    }
    {
        /* A live restore's copy prepared off the loop (liverestore.h), and the swap
         * entry a follower holds until it is ready. */
        char id[BACKUP_ID_SIZE];
        char err[CAIRN_ERRMSG_SIZE];
        struct node_info ni;
        const char *state = lrState(db, id, err);
        nodeInfo(db->node, &ni);
        bufPuts(&b, "\"live_restore\":{");
        jsonStr(&b, "state", state);
        bufPutc(&b, ',');
        jsonStr(&b, "backup", id);
        bufPutc(&b, ',');
        jsonStr(&b, "error", err);
        bufPutc(&b, ',');
        jsonKey(&b, "held_index");
        bufJsonInt(&b, (int64_t)ni.held_index);
        bufPuts(&b, "},");
    }
    jsonKey(&b, "page_checksums");
    bufPuts(&b, ss.page_checksums ? "true" : "false");
    bufPutc(&b, ',');
    jsonKey(&b, "checksum_failures");
    bufJsonInt(&b, (int64_t)ss.checksum_failures);
    bufPutc(&b, ',');
    jsonStr(&b, "sqlite_version", sqlite3_libversion());
    bufPutc(&b, ',');
    jsonStr(&b, "snapshot_dir", db->snap_dir);
    bufPutc(&b, ',');
    jsonStr(&b, "backup_dir", db->backup_dir);
    bufPuts(&b, ",\"repositories\":[");
    for (unsigned i = 0; i < db->repos.n; i++) {
        bufPuts(&b, i ? ",{" : "{");
        jsonStr(&b, "name", db->repos.r[i].name);
        bufPutc(&b, ',');
        jsonStr(&b, "url", db->repos.r[i].url);
        bufPutc(&b, '}');
    }
    bufPuts(&b, "]},\"branches\":");
    adminBranchesJson(db, &b);
    bufPuts(&b, ",\"http\":{");
    jsonKey(&b, "max_body");
    bufJsonInt(&b, (int64_t)h->max_body);
    bufPutc(&b, ',');
    jsonKey(&b, "max_load_body");
    bufJsonInt(&b, (int64_t)h->max_load_body);
    bufPutc(&b, ',');
    jsonKey(&b, "requests");
    bufJsonInt(&b, (int64_t)atomic_load(&h->requests));
    bufPuts(&b, "},\"last_recovery\":");
    healStatusJson(db, &b);
    {
        /* The continuous archive (archive.h): this node's view of it. */
        struct archive_status as;
        archiveStatus(db->archiver, &as);
        bufPuts(&b, ",\"archive\":{");
        jsonKey(&b, "enabled");
        bufPuts(&b, as.enabled ? "true," : "false,");
        jsonStr(&b, "role", as.role);
        bufPutc(&b, ',');
        jsonStr(&b, "from", as.from);
        bufPutc(&b, ',');
        jsonStr(&b, "repository", as.repository);
        bufPutc(&b, ',');
        jsonStr(&b, "timeline", as.timeline);
        bufPutc(&b, ',');
        jsonStr(&b, "history", as.history);
        bufPutc(&b, ',');
        jsonKey(&b, "head_index");
        bufJsonInt(&b, (int64_t)as.head_index);
        bufPutc(&b, ',');
        jsonKey(&b, "head");
        bufJsonInt(&b, (int64_t)as.head_index);
        bufPutc(&b, ',');
        jsonKey(&b, "head_time_ms");
        bufJsonInt(&b, as.head_ms);
        bufPutc(&b, ',');
        jsonKey(&b, "lag_entries");
        bufJsonInt(&b, (int64_t)as.lag_entries);
        bufPutc(&b, ',');
        jsonKey(&b, "lag_seconds");
        bufJsonDouble(&b, as.lag_seconds);
        bufPutc(&b, ',');
        jsonKey(&b, "segments_uploaded");
        bufJsonInt(&b, (int64_t)as.segments);
        bufPutc(&b, ',');
        jsonKey(&b, "bytes_uploaded");
        bufJsonInt(&b, (int64_t)as.bytes);
        bufPutc(&b, ',');
        jsonKey(&b, "entries_uploaded");
        bufJsonInt(&b, (int64_t)as.entries);
        bufPutc(&b, ',');
        jsonKey(&b, "timelines_started");
        bufJsonInt(&b, (int64_t)as.timelines_started);
        bufPutc(&b, ',');
        jsonKey(&b, "queue_entries");
        bufJsonInt(&b, (int64_t)as.queue_entries);
        bufPutc(&b, ',');
        jsonKey(&b, "queue_bytes");
        bufJsonInt(&b, (int64_t)as.queue_bytes);
        bufPutc(&b, ',');
        jsonKey(&b, "held_from_index");
        bufJsonInt(&b, (int64_t)as.covered_from);
        bufPutc(&b, ',');
        jsonKey(&b, "log_reads");
        bufJsonInt(&b, (int64_t)as.log_reads);
        bufPutc(&b, ',');
        jsonKey(&b, "log_entries");
        bufJsonInt(&b, (int64_t)as.log_entries);
        bufPutc(&b, ',');
        jsonKey(&b, "outran");
        bufPuts(&b, as.outran ? "true," : "false,");
        jsonKey(&b, "outruns");
        bufJsonInt(&b, (int64_t)as.outruns);
        bufPutc(&b, ',');
        jsonKey(&b, "outrun_index");
        bufJsonInt(&b, (int64_t)as.outrun_index);
        bufPutc(&b, ',');
        jsonKey(&b, "outran_time_ms");
        bufJsonInt(&b, as.outran_ms);
        bufPutc(&b, ',');
        jsonKey(&b, "timelines");
        bufPutc(&b, '[');
        for (unsigned i = 0; i < as.ntimelines; i++) {
            bufPuts(&b, i ? ",{" : "{");
            jsonStr(&b, "name", as.timelines[i].name);
            bufPutc(&b, ',');
            jsonKey(&b, "start_index");
            bufJsonInt(&b, (int64_t)as.timelines[i].start);
            bufPutc(&b, ',');
            jsonKey(&b, "head_index");
            bufJsonInt(&b, (int64_t)as.timelines[i].head);
            bufPutc(&b, '}');
        }
        bufPuts(&b, "],");
        jsonKey(&b, "sync");
        bufPuts(&b, as.sync ? "true," : "false,");
        jsonKey(&b, "sync_waiting");
        bufJsonInt(&b, (int64_t)as.sync_waiting);
        bufPutc(&b, ',');
        jsonStr(&b, "last_error", as.last_error);
        bufPutc(&b, '}');
    }
    /* ---- scheduled backups and drills (--backup-config, housekeeping.h) ---- */
    bufPuts(&b, ",\"backups\":");
    housekeepingStatusJson(db, &b);
    /* ---- end scheduled backups ---- */
    bufPutc(&b, '}');
    if (!f.pretty) {
        bufPutc(&b, '\n');
    }
    return httpSendBuf(c, 200, &b, f.pretty);
}

/* Whether the query has `key`, with or without a value (MHD gives NULL for "?key"). */
struct arg_seek {
    const char *key;
    bool found;
    const char *value;
};

static enum MHD_Result seekArg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    struct arg_seek *a = cls;
    (void)kind;
    if (strcmp(key, a->key) == 0) {
        a->found = true;
        a->value = value;
        return MHD_NO;
    }
    return MHD_YES;
}

static enum MHD_Result serveReadyz(struct http_server *h, struct MHD_Connection *c)
{
    struct node_info ni;
    char *text;
    char why[CAIRN_ERRMSG_SIZE];
    nodeInfo(h->db->node, &ni);
    if (dbDiverged(h->db, why, sizeof why)) {
        char body[CAIRN_ERRMSG_SIZE + 64];
        snprintf(body, sizeof body, "[+]node ok\n[-]store differs from the cluster: %s\n", why);
        text = strdup(body);
        return httpSend(c, 503, "text/plain", text, strlen(text));
    }
    if (dbRemoved(h->db, why, sizeof why)) {
        char body[CAIRN_ERRMSG_SIZE + 64];
        snprintf(body, sizeof body, "[+]node ok\n[-]membership: %s\n", why);
        text = strdup(body);
        return httpSend(c, 503, "text/plain", text, strlen(text));
    }
    struct arg_seek noleader = {"noleader", false, NULL};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, seekArg, &noleader);
    if (ni.ready && ni.n_servers >= 2 && !atomic_load(&h->db->announced) &&
        !(noleader.found && truthy(noleader.value))) {
        /* Just formed or joined: until its address is in the cluster's directory, peers
         * cannot forward to it nor list its backups (a first backup would find it
         * unreachable). The announcer records it within a second or so. */
        text = strdup("[+]node ok\n[+]leader ok\n[+]store ok\n[-]directory: this node's HTTP "
                      "address is not recorded in the cluster yet\n");
        return httpSend(c, 503, "text/plain", text, strlen(text));
    }
    if (ni.ready) {
        /* ?backups: also the scheduled backups this node runs (housekeeping.h): a failed
         * last run, expiry or drill, or a backup older than two periods, is 503. */
        struct arg_seek seek = {"backups", false, NULL};
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, seekArg, &seek);
        if (seek.found && !housekeepingBackupsOk(h->db, why, sizeof why)) {
            char body[CAIRN_ERRMSG_SIZE + 64];
            snprintf(body, sizeof body, "[+]node ok\n[+]leader ok\n[+]store ok\n[-]backups: %s\n",
                     why);
            text = strdup(body);
            return httpSend(c, 503, "text/plain", text, strlen(text));
        }
        text = strdup(seek.found ? "[+]node ok\n[+]leader ok\n[+]store ok\n[+]backups ok\n"
                                 : "[+]node ok\n[+]leader ok\n[+]store ok\n");
        return httpSend(c, 200, "text/plain", text, strlen(text));
    }
    {
        /* ?noleader, as rqlite: is the node itself up, leader or not (a load balancer
         * that keeps a cluster without quorum in rotation for reads at level none). */
        if (noleader.found && truthy(noleader.value)) {
            text = strdup(ni.leader_id ? "[+]node ok\n[+]leader ok\n[-]store not ready\n"
                                       : "[+]node ok\n[+]leader not checked (noleader)\n");
            return httpSend(c, 200, "text/plain", text, strlen(text));
        }
    }
    text = strdup(ni.leader_id ? "[+]node ok\n[+]leader ok\n[-]store not ready\n"
                               : "[+]node ok\n[-]leader not ok\n[+]store ok\n");
    return httpSend(c, 503, "text/plain", text, strlen(text));
}

static enum MHD_Result serveHealth(struct http_server *h, struct MHD_Connection *c)
{
    struct node_info ni;
    struct buf b;
    nodeInfo(h->db->node, &ni);
    bufInit(&b);
    bufPrintf(&b, "{\"status\":\"%s\",\"node_id\":%llu,\"state\":\"%s\",\"ready\":%s}\n",
              ni.ready ? "ok" : "degraded", (unsigned long long)ni.id,
              nodeStateName(ni.state), ni.ready ? "true" : "false");
    return httpSendBuf(c, 200, &b, false);
}

/* The route table: path, allowed methods, and what serves it. */
enum route { R_EXECUTE, R_QUERY, R_REQUEST, R_STATUS, R_NODES, R_READYZ, R_HEALTH, R_METRICS };
static const struct {
    const char *path;
    const char *methods; /* space-separated, as the Allow header wants them */
    enum route route;
} routes[] = {
    {"/db/execute", "POST", R_EXECUTE}, {"/db/query", "GET, POST", R_QUERY},
    {"/db/request", "POST", R_REQUEST}, {"/status", "GET", R_STATUS},
    {"/nodes", "GET", R_NODES},         {"/readyz", "GET", R_READYZ},
    {"/health", "GET", R_HEALTH},       {"/metrics", "GET", R_METRICS},
};

static bool methodAllowed(const char *methods, const char *method)
{
    size_t n = strlen(method);
    const char *p = methods;
    while ((p = strstr(p, method)) != NULL) {
        if ((p == methods || p[-1] == ' ') && (p[n] == '\0' || p[n] == ',')) {
            return true;
        }
        p += n;
    }
    return false;
}

static enum MHD_Result dispatch(struct http_server *h, struct MHD_Connection *c,
                                const char *url, const char *method, struct request *req)
{
    size_t i;
    char msg[256];
    bool handled = false;
    enum MHD_Result ret;

    if (!atomic_load(&h->db->running)) {
        /* Before Raft runs, only the identity that forming a cluster needs. */
        if (strcmp(url, "/cluster/identity") == 0) {
            return httpCluster(h, c, url, method, req, &handled);
        }
        if (strcmp(url, "/status") == 0 && strcmp(method, "GET") == 0) {
            /* rqlite's clients read /status to find the leader: 200 with what is known
             * (no leader yet), not an error they do not expect. */
            struct buf b;
            bufInit(&b);
            bufPrintf(&b, "{\"node\":{\"id\":%llu,\"version\":\"%s\",\"starting\":true,\"pid\":%d,",
                      (unsigned long long)h->db->cfg.node_id, CAIRN_VERSION, (int)getpid());
            jsonStr(&b, "data_dir", h->db->data_dir);
            bufPuts(&b, "},\"store\":{\"leader\":{\"node_id\":\"\",\"addr\":\"\"},"
                        "\"raft\":{\"state\":\"Unavailable\"},\"ready\":false}}\n");
            return httpSendBuf(c, 200, &b, false);
        }
        return httpSendError(c, 503, "the node is starting: try again shortly");
    }
    ret = httpCluster(h, c, url, method, req, &handled);
    if (handled) {
        return ret;
    }
    if (strncmp(url, "/admin/", 7) == 0 || strcmp(url, "/db/backup") == 0 ||
        strcmp(url, "/db/load") == 0) {
        /* Backups and restores run on the leader unless ?node names a node; the rest
         * of /admin is each node's own. */
        uint64_t target = 0;
        bool post = strcmp(method, "POST") == 0;
        bool leaders = post && (strcmp(url, "/admin/backup") == 0 ||
                                strcmp(url, "/admin/restore") == 0 || strcmp(url, "/db/load") == 0);
        /* ?redirect as the data endpoints read it: "?redirect" is true, "=0" false. */
        struct arg_seek redirect = {"redirect", false, NULL};
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, seekArg, &redirect);
        if (httpNodeParam(c, &target, &ret) != 0) {
            return ret;
        }
        if ((target != 0 || leaders) &&
            httpRoute(h, c, url, method, req, target, redirect.found && truthy(redirect.value),
                      &ret)) {
            return ret;
        }
    }
    ret = httpAdmin(h, c, url, method, req, &handled);
    if (handled) {
        return ret;
    }
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0) {
            continue;
        }
        if (!methodAllowed(routes[i].methods, method)) {
            return httpSendNotAllowed(c, method, url, routes[i].methods);
        }
        switch (routes[i].route) {
            case R_EXECUTE:
            case R_QUERY:
            case R_REQUEST: {
                static const int kinds[] = {BATCH_EXECUTE, BATCH_QUERY, BATCH_REQUEST};
                int k = (int)routes[i].route - R_EXECUTE;
                int64_t t0 = libMonoUs();
                enum MHD_Result r = serveData(h, c, kinds[k], url, method, req);
                atomic_fetch_add(&h->served[k].count, 1);
                atomic_fetch_add(&h->served[k].usec, (unsigned long)(libMonoUs() - t0));
                return r;
            }
            case R_METRICS:
                return httpServeMetrics(h, c);
            case R_STATUS:
                return serveStatus(h, c);
            case R_NODES:
                return httpServeNodes(h, c);
            case R_READYZ:
                return serveReadyz(h, c);
            case R_HEALTH:
                return serveHealth(h, c);
        }
    }
    snprintf(msg, sizeof msg, "no such endpoint: %.200s", url);
    return httpSendError(c, 404, msg);
}

/* Query parameters a request may carry: rqlite's are about a dozen. */
#define MAX_QUERY_PARAMS 256

struct scan {
    unsigned lengths; /* Content-Length headers */
    char length[32];  /* the first one */
    bool conflict;    /* another with a different value */
    bool chunked;     /* Transfer-Encoding as well */
    bool other;       /* a Transfer-Encoding other than chunked */
    char coding[32];  /* its value */
    unsigned args;
    char bad[200];
};

static enum MHD_Result scanHeader(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct scan *s = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (s->lengths++ == 0) {
            snprintf(s->length, sizeof s->length, "%s", value ? value : "");
        } else if (value == NULL || strcmp(value, s->length) != 0) {
            s->conflict = true;
        }
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        s->chunked = true;
        if (value == NULL || strcasecmp(value, "chunked") != 0) {
            s->other = true;
            snprintf(s->coding, sizeof s->coding, "%s", value ? value : "");
        }
    }
    return MHD_YES;
}

/* A NUL or control character (tab, newline and carriage return are allowed in values:
 * SQL text has them) in a parameter's name or value. */
static enum MHD_Result scanArg(void *cls, enum MHD_ValueKind kind, const char *key,
                               size_t key_size, const char *value, size_t value_size)
{
    struct scan *s = cls;
    (void)kind;
    s->args++;
    if (s->bad[0] != '\0') {
        return MHD_YES;
    }
    for (size_t i = 0; i < key_size; i++) {
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) {
            snprintf(s->bad, sizeof s->bad, "a query parameter's name holds the control "
                                            "character 0x%02x at byte %zu", (unsigned char)key[i], i);
            return MHD_YES;
        }
    }
    if (key_size == 1 && key[0] == 'q') {
        /* SQL text: only a NUL byte is refused (SQLite says what else is wrong). */
        const char *nul = value != NULL ? memchr(value, '\0', value_size) : NULL;
        if (nul != NULL) {
            snprintf(s->bad, sizeof s->bad, "statement 1: the statement holds a NUL byte at "
                                            "offset %zu: SQL text may not contain one (send "
                                            "binary data as a parameter)",
                     (size_t)(nul - value));
        }
        return MHD_YES;
    }
    for (size_t i = 0; value != NULL && i < value_size; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') || ch == 0x7f) {
            snprintf(s->bad, sizeof s->bad, "?%.40s holds the control character 0x%02x at byte %zu: "
                                            "names, paths and parameters may not", key, ch, i);
            return MHD_YES;
        }
    }
    return MHD_YES;
}

/* The methods of the endpoint at url ("GET, POST", as an Allow header lists them), or
 * NULL when no endpoint has that path. It mirrors the routing of dispatch(),
 * httpAdmin() and httpCluster() for one purpose: a request whose body was too big to
 * keep is answered as routing would answer it (404 for no such endpoint, 405 for a
 * method the endpoint does not take) before 413, and without running anything. A path
 * missing here would be answered 404 only when its body is over the limit. */
static const char *endpointMethods(const char *url)
{
    static const struct {
        const char *path;
        const char *methods;
    } others[] = {
        {"/db/backup", "GET"},        {"/db/load", "POST"},          {"/admin/backup", "POST"},
        {"/admin/backups", "GET"},    {"/admin/restore", "POST"},    {"/admin/snapshot", "POST"},
        {"/admin/snapshots", "GET"},  {"/admin/digest", "GET, POST"},
        {"/cluster/identity", "GET"}, {"/join", "POST"},            {"/remove", "DELETE"},
        {"/admin/backup-config", "GET"}, /* --backup-config (housekeeping.h) */
    };
    static const char backups[] = "/admin/backups/";
    static const char snaps[] = "/admin/snapshots/";
    size_t n = strlen(url);
    size_t i;
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) == 0) {
            return routes[i].methods;
        }
    }
    for (i = 0; i < sizeof others / sizeof others[0]; i++) {
        if (strcmp(url, others[i].path) == 0) {
            return others[i].methods;
        }
    }
    if (strncmp(url, backups, sizeof backups - 1) == 0 ||
        strncmp(url, snaps, sizeof snaps - 1) == 0) {
        bool backup = strncmp(url, backups, sizeof backups - 1) == 0;
        const char *rest = url + (backup ? sizeof backups - 1 : sizeof snaps - 1);
        const char *slash = strchr(rest, '/');
        if (slash == rest || rest[0] == '\0') {
            return NULL;
        }
        if (n > 5 && strcmp(url + n - 5, "/file") == 0 && url + n - 5 > rest) {
            return "GET"; /* /admin/{backups,snapshots}/ID/file */
        }
        if (backup && slash == NULL) {
            return "GET"; /* /admin/backups/ID */
        }
        if (backup && strcmp(slash, "/verify") == 0) {
            return "POST";
        }
    }
    return NULL;
}

/* Did the client send Expect: 100-continue (it waits to be asked for the body)? */
static bool expectsContinue(struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return v != NULL && strcasecmp(v, "100-continue") == 0;
}

/* A request whose body is over its limit, routed first: 404 when no endpoint has the
 * path, 405 when the endpoint does not take the method, else 413 naming the limit and
 * the flag that sets it. */
static enum MHD_Result answerTooBig(struct http_server *h, struct MHD_Connection *c,
                                    const char *url, const char *method, struct request *req)
{
    const char *methods = endpointMethods(url);
    char msg[300];
    if (methods == NULL) {
        snprintf(msg, sizeof msg, "no such endpoint: %.200s", url);
        return httpSendError(c, 404, msg);
    }
    if (!methodAllowed(methods, method)) {
        return httpSendNotAllowed(c, method, url, methods);
    }
    if (req->is_load) {
        snprintf(msg, sizeof msg,
                 "the database file is larger than the limit of %llu bytes on POST /db/load "
                 "(set with cairnd --max-load-body)",
                 (unsigned long long)h->max_load_body);
    } else {
        snprintf(msg, sizeof msg,
                 "request body is larger than the limit of %llu bytes (set with cairnd "
                 "--max-body)",
                 (unsigned long long)h->max_body);
    }
    return httpSendError(c, 413, msg);
}

/* Let go of req's body and give back what it held of the node-wide budget. */
static void bodyRelease(struct http_server *h, struct request *req)
{
    bufFree(&req->body);
    membudgetGive(&h->budget, req->charged);
    req->charged = 0;
}

/* Count `need` bytes of body for req in the node-wide budget (what it holds already
 * counts), waiting a moment for room: true, or false with the body let go of and the
 * request marked over_budget. */
static bool bodyCharge(struct http_server *h, struct request *req, uint64_t need)
{
    if (need <= req->charged) {
        return true;
    }
    if (membudgetTakeWait(&h->budget, need - req->charged, BUDGET_WAIT_MS)) {
        req->charged = need;
        return true;
    }
    req->over_budget = true;
    req->over_whole_budget = h->budget.limit != 0 && need > h->budget.limit;
    bodyRelease(h, req);
    return false;
}

/* Answer a request whose body found no room in the budget: 503, or 413 when it needs
 * more than the whole budget and no wait would help. */
static enum MHD_Result answerOverBudget(struct http_server *h, struct MHD_Connection *c,
                                        const struct request *req)
{
    char msg[320];
    if (!req->over_whole_budget) {
        return httpSendBusy(h, c, "this request's body");
    }
    snprintf(msg, sizeof msg,
             "the request body needs more memory than the node gives all requests together "
             "(cairnd --max-request-memory, %llu bytes): raise it above --max-body, or send "
             "a smaller body",
             (unsigned long long)h->budget.limit);
    return httpSendError(c, 413, msg);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct http_server *h = cls;
    struct request *req = *con_cls;
    enum MHD_Result ret;

    if (req == NULL) {
        const char *cl;
        req = calloc(1, sizeof *req);
        if (req == NULL) {
            return MHD_NO;
        }
        bufInit(&req->body);
        req->t0 = httpNow();
        req->load_fd = -1;
        *con_cls = req;
        atomic_fetch_add(&h->requests, 1);
        {
            struct scan s;
            memset(&s, 0, sizeof s);
            MHD_get_connection_values(c, MHD_HEADER_KIND, scanHeader, &s);
            MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, scanArg, &s);
            if (s.other) {
                /* libmicrohttpd would wait for the end of a body whose end it cannot
                 * find, and the client for an answer: refused at once (RFC 9112 6.1). */
                char msg[160];
                snprintf(msg, sizeof msg, "Transfer-Encoding \"%.31s\" is not supported: send "
                                          "the body with Content-Length, or chunked",
                         s.coding);
                return httpSendError(c, 501, msg);
            }
            if (s.conflict) {
                snprintf(req->refuse, sizeof req->refuse,
                         "%u Content-Length headers with different values: refused (a proxy "
                         "and cairnd could read different requests)", s.lengths);
            } else if (s.lengths > 0 && s.chunked) {
                snprintf(req->refuse, sizeof req->refuse,
                         "both Content-Length and Transfer-Encoding: refused (a proxy and cairnd "
                         "could read different requests)");
            } else if (s.args > MAX_QUERY_PARAMS) {
                snprintf(req->refuse, sizeof req->refuse,
                         "%u query parameters: at most %d are taken", s.args, MAX_QUERY_PARAMS);
            } else if (s.bad[0] != '\0') {
                snprintf(req->refuse, sizeof req->refuse, "%s", s.bad);
            }
            if (req->refuse[0] != '\0') {
                return MHD_YES; /* the body, if any, is read and dropped */
            }
        }
        req->is_load = httpIsLoad(url, method);
        req->limit = req->is_load ? h->max_load_body : h->max_body;
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL) {
            unsigned long long n = strtoull(cl, NULL, 10);
            if (n > req->limit) {
                req->too_big = true;
                if (expectsContinue(c)) {
                    /* curl asks before sending a large body: refuse it now rather than
                     * have it sent for nothing (libmicrohttpd then closes the
                     * connection instead of reading the body). */
                    return answerTooBig(h, c, url, method, req);
                }
                return MHD_YES; /* the body is read and dropped, then answered */
            }
            req->length = n;
            if (n > 0 && !req->is_load) {
                /* Room for the whole body at once (a bulk request is megabytes: growing
                 * by doubling copied it twice over), up to BODY_PRESIZE_MAX so that a
                 * length the client does not send costs nothing much. */
                size_t pre = n < BODY_PRESIZE_MAX ? (size_t)n : BODY_PRESIZE_MAX;
                if (!bodyCharge(h, req, (uint64_t)pre + 1)) {
                    if (expectsContinue(c)) {
                        /* Refused before it is sent, as a body too big is. */
                        return answerOverBudget(h, c, req);
                    }
                    return MHD_YES; /* the body is read and dropped, then answered */
                }
                (void)bufReserveExact(&req->body, pre);
            }
        }
        if (req->is_load && httpLoadOpen(h, req) != 0) {
            req->load_errno = errno ? errno : EIO;
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->refuse[0] != '\0' || req->too_big || req->over_budget) {
            return MHD_YES; /* read and dropped */
        }
        if (n > req->limit - req->received) {
            /* Over the limit (a chunked body says its length only at its end): keep
             * nothing more, and let go of what was kept. */
            req->too_big = true;
            bufFree(&req->body);
            if (req->load_fd >= 0) {
                close(req->load_fd);
                unlink(req->load_path);
                req->load_fd = -1;
            }
            return MHD_YES;
        }
        req->received += n;
        if (req->is_load) {
            /* /db/load: the body goes to a file, never into memory. */
            const char *p = upload;
            size_t left = n;
            while (left > 0 && req->load_fd >= 0 && req->load_errno == 0) {
                ssize_t w = write(req->load_fd, p, left);
                if (w < 0) {
                    if (errno != EINTR) {
                        req->load_errno = errno;
                    }
                    continue;
                }
                p += w;
                left -= (size_t)w;
            }
            return MHD_YES;
        }
        if (req->length != 0 && req->body.len + n <= req->length) {
            /* Its length is known: past the room reserved first, one block of exactly
             * that, not doubling past it (a 40 MB body took 64 MiB). */
            if (req->body.len + n + 1 > req->body.cap) {
                if (!bodyCharge(h, req, req->length + 1)) {
                    return MHD_YES; /* dropped from here on, and answered 503 */
                }
                (void)bufReserveExact(&req->body, (size_t)(req->length - req->body.len));
            }
        } else if (!bodyCharge(h, req, bufCapFor(&req->body, n))) {
            /* The buffer's size, not only its data's: it grows by doubling. */
            return MHD_YES;
        }
        bufPut(&req->body, upload, n);
        return MHD_YES;
    }
    if (req->over_budget) {
        return answerOverBudget(h, c, req);
    }
    if (req->refuse[0] != '\0') {
        return httpSendError(c, 400, req->refuse);
    }
    if (req->too_big) {
        return answerTooBig(h, c, url, method, req);
    }
    if (req->body.oom) {
        return httpSendError(c, 500, "out of memory reading the request body");
    }
    ret = dispatch(h, c, url, method, req);
    /* The answer is made (or being sent from results or a file): the body, up to
     * --max-body, is not held while a slow client reads it. */
    bodyRelease(h, req);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct request *req = *con_cls;
    if (req != NULL) {
        if (req->load_fd >= 0) {
            close(req->load_fd);
            unlink(req->load_path);
        }
        bodyRelease(cls, req);
        free(req);
        *con_cls = NULL;
    }
}

#define LOG_PER_SECOND 10

static void mhdLog(void *cls, const char *fmt, va_list ap)
{
    struct http_server *h = cls;
    int64_t now = libMonoMs() / 1000;
    unsigned dropped = 0;
    bool log;
    char line[512], full[600];
    if (h->db->cfg.log == NULL) {
        return;
    }
    pthread_mutex_lock(&h->log_mu);
    if (now != h->log_second) {
        dropped = h->dropped;
        h->log_second = now;
        h->logged = 0;
        h->dropped = 0;
    }
    log = h->logged < LOG_PER_SECOND;
    h->logged += log;
    h->dropped += !log;
    pthread_mutex_unlock(&h->log_mu);
    if (dropped > 0) {
        snprintf(full, sizeof full, "http: %u more messages of the second before left out",
                 dropped);
        h->db->cfg.log(h->db->cfg.log_data, full);
    }
    if (log) {
        vsnprintf(line, sizeof line, fmt, ap);
        line[strcspn(line, "\n")] = '\0';
        snprintf(full, sizeof full, "http: %s", line);
        h->db->cfg.log(h->db->cfg.log_data, full);
    }
}

/* How many HTTP connections are served at once: the open-file limit less the node's own
 * reserve. Past it, a new connection is closed as it arrives: a client that opens
 * connections and leaves them idle then holds at most these, never the files Raft and
 * SQLite need (they would fail with EMFILE: Raft unable to take a peer's connection or
 * open a segment, a checkpoint or backup unable to open its file). */
static unsigned connectionLimit(void)
{
    struct rlimit rl;
    rlim_t cur, reserve;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return 16384;
    }
    cur = rl.rlim_cur;
    reserve = cur / 4 > FD_RESERVE_MIN ? cur / 4 : FD_RESERVE_MIN;
    if (cur <= 2 * reserve) {
        return cur / 2 > 8 ? (unsigned)(cur / 2) : 8; /* a tight limit: half of it */
    }
    return cur - reserve > 16384 ? 16384 : (unsigned)(cur - reserve);
}

int httpStart(struct cairn *db, const char *addr, size_t max_body, struct http_server **out,
              char *errmsg)
{
    struct http_server *h;
    struct sockaddr_in sa;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    char ip[INET_ADDRSTRLEN];
    int fd;

    *out = NULL;
    if (addrParse(addr, "HTTP", &sa, errmsg) != 0) {
        return CAIRN_EINVAL;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    h->db = db;
    pthread_mutex_init(&h->metrics_cache_mu, NULL);
    pthread_mutex_init(&h->log_mu, NULL);
    pthread_mutex_init(&h->metrics_list_mu, NULL);
    h->max_body = max_body;
    membudgetInit(&h->budget, db->cfg.max_request_memory != 0 ? db->cfg.max_request_memory
                                                              : membudgetDefault());
    h->max_load_body = db->cfg.max_load_body != 0 ? db->cfg.max_load_body : LOAD_BODY_DEFAULT;
    /* Bound here, not by libmicrohttpd: the address actually bound (port 0 picks one) is
     * known, and in db->http_addr, before the first request can read it. */
    fd = addrBind(&sa);
    if (fd < 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        errorf(errmsg, "cannot listen for HTTP on %s: %s", addr, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        free(h);
        return CAIRN_EIO;
    }
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    snprintf(db->http_addr, sizeof db->http_addr, "%s:%u", ip, (unsigned)ntohs(bound.sin_port));
    h->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhdLog, h,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT, connectionLimit(),
        /* Room for a long request line (hundreds of parameters, a long ?q=), so that it is
         * answered (400 past MAX_QUERY_PARAMS) rather than cut off with no answer. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(512 * 1024), MHD_OPTION_END);
    if (h->daemon == NULL) {
        errorf(errmsg, "cannot serve HTTP on %s (libmicrohttpd did not start)", addr);
        db->http_addr[0] = '\0';
        close(fd);
        free(h);
        return CAIRN_EIO;
    }
    *out = h;
    return 0;
}

void httpStop(struct http_server *h)
{
    if (h == NULL) {
        return;
    }
    MHD_stop_daemon(h->daemon);
    free(h->metrics_catalog);
    pthread_mutex_destroy(&h->metrics_cache_mu);
    pthread_mutex_destroy(&h->metrics_list_mu);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
}
