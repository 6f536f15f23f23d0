/* What the HTTP front end's files share: the server, the per-request state and the
 * helpers that answer. HTTP threads. */
#ifndef CAIRN_HTTP_INT_H
#define CAIRN_HTTP_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "membudget.h"

struct cairn;

#define HTTP_DATA_ENDPOINTS 3

struct http_server {
    struct cairn *db;
    struct MHD_Daemon *daemon;
    /* The largest request body: POST /db/load's (streamed into a file: a database) and
     * every other one's (kept in memory). Over it, a request is answered 413. */
    uint64_t max_body;
    uint64_t max_load_body;
    /* What requests hold together (cairnd --max-request-memory): the bodies being
     * received and kept in memory, and the results of answers not yet sent. Only
     * requests take from it: the node's own work (Raft, applying the log, /status,
     * /readyz, which have no body) never waits for it. */
    struct membudget budget;
    atomic_ulong budget_refused; /* requests answered 503 for want of it */
    atomic_ulong requests;
    /* /db/execute, /db/query, /db/request (in that order): requests answered here, and
     * the microseconds spent answering them (GET /metrics). */
    struct {
        atomic_ulong count, usec;
    } served[HTTP_DATA_ENDPOINTS];
    /* GET /metrics: the figures of the repositories' catalogs (http_metrics.c), kept
     * from one listing for ten times as long as that listing took, so that listing
     * takes at most a tenth of the time however often scrapers come (a directory's
     * listing, a few ms, is redone at nearly every scrape; 10,000 backups in S3, 1.6 s,
     * every 16 s); one scrape lists at a time (list_mu), the others meanwhile answer
     * with the figures they find (cache_mu guards them). */
    pthread_mutex_t metrics_cache_mu;
    pthread_mutex_t metrics_list_mu;
    struct metrics_catalog *metrics_catalog; /* NULL until the first listing */
    /* libmicrohttpd's messages logged in the current second (log_second), and those
     * left out past LOG_PER_SECOND: a flood of connections past the limit is one line
     * a connection (mhdLog). */
    pthread_mutex_t log_mu;
    int64_t log_second;
    unsigned logged, dropped;
};

/* GET /metrics (http_metrics.c). */
enum MHD_Result httpServeMetrics(struct http_server *h, struct MHD_Connection *c);

/* Per-request state, kept in MHD's con_cls between calls. */
struct request {
    struct buf body;
    /* The body is over `limit` (max_body, or max_load_body for a load): what arrives is
     * dropped, and the request is answered 413 once routed (404 for an unknown path). */
    bool too_big;
    uint64_t limit;
    uint64_t received; /* body bytes received so far */
    /* Bytes of the node-wide budget the body holds (its buffer's size), and whether it
     * found no room there in time: then what arrives is dropped and the request is
     * answered 503 (over_budget). */
    uint64_t charged;
    bool over_budget;
    bool over_whole_budget; /* more than the whole budget: it never could fit */
    uint64_t length; /* the body's Content-Length, 0 when not given */
    /* Refused from its headers or query string alone (conflicting lengths, too many
     * parameters, a NUL or control character): answered 400 with this once the body,
     * not kept, has been read. "" when not. */
    char refuse[256];
    double t0;
    /* POST /db/load streams its body into a file rather than memory (is_load); a load
     * over its limit closes and removes the file at once (load_fd -1). */
    bool is_load;
    int load_fd;
    char load_path[4096];
    int load_errno;      /* write failure while receiving, 0 if none */
};

/* Answer with body (taken over, free()d by MHD). */
/* Queue response r (destroyed here) with its Content-Type and cairn's version header. */
enum MHD_Result httpQueue(struct MHD_Connection *c, unsigned status, const char *type,
                          struct MHD_Response *r);
enum MHD_Result httpSend(struct MHD_Connection *c, unsigned status, const char *type,
                         char *body, size_t len);
/* Answer with the JSON in b (taken over); pretty re-indents it. */
enum MHD_Result httpSendBuf(struct MHD_Connection *c, unsigned status, struct buf *b,
                            bool pretty);
/* Answer 503 with Retry-After, saying that the node's memory for requests (`what`) is
 * taken. */
enum MHD_Result httpSendBusy(struct http_server *h, struct MHD_Connection *c, const char *what);
/* Answer {"error": msg}. */
enum MHD_Result httpSendError(struct MHD_Connection *c, unsigned status, const char *msg);
/* Answer 405 with an Allow header listing `allowed`. */
enum MHD_Result httpSendNotAllowed(struct MHD_Connection *c, const char *method,
                                   const char *url, const char *allowed);
/* The HTTP status for a cairn error code. */
unsigned httpStatusFor(int rv);
/* Monotonic seconds. */
double httpNow(void);

/* /admin/... and /db/backup, /db/load (http_admin.c). NULL route: not one of them.
 * Every path served here or by httpCluster() is also listed, with its methods, in
 * http.c's endpointMethods(), which routes a request whose body was too big to keep. */
enum MHD_Result httpAdmin(struct http_server *h, struct MHD_Connection *c, const char *url,
                          const char *method, struct request *req, bool *handled);
/* Whether url is /db/load: its body goes to a file (see struct request). */
bool httpIsLoad(const char *url, const char *method);
/* Start receiving a /db/load body into a temporary file beside the database. */
int httpLoadOpen(struct http_server *h, struct request *req);

/* Clusters (http_cluster.c). */
#include <stdint.h>
/* Was this request forwarded by another node (served here, never forwarded again)? */
bool httpIsForwarded(struct MHD_Connection *c);
/* ?node=ID into *id (0 when absent); -1 with an answer queued in *ret when malformed. */
int httpNodeParam(struct MHD_Connection *c, uint64_t *id, enum MHD_Result *ret);
/* Route a request that node `target` (0: the leader) must serve: false when that is
 * this node (serve it here); true when answered: forwarded and the answer passed on,
 * a 301 to the node with `redirect`, or a 503 when there is no leader in time. */
bool httpRoute(struct http_server *h, struct MHD_Connection *c, const char *url,
               const char *method, struct request *req, uint64_t target, bool redirect,
               enum MHD_Result *ret);
/* GET /nodes. */
enum MHD_Result httpServeNodes(struct http_server *h, struct MHD_Connection *c);
/* /cluster/identity, /join, /remove, /admin/{snapshots,backups}/ID/file. */
enum MHD_Result httpCluster(struct http_server *h, struct MHD_Connection *c, const char *url,
                            const char *method, struct request *req, bool *handled);

#endif
