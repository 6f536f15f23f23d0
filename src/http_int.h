/* What the HTTP front end's files share: the server, the per-request state and the
 * helpers that answer. HTTP threads. */
#ifndef CAIRN_HTTP_INT_H
#define CAIRN_HTTP_INT_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct cairn;

struct http_server {
    struct cairn *db;
    struct MHD_Daemon *daemon;
    size_t max_body;
    atomic_ulong requests;
};

/* Per-request state, kept in MHD's con_cls between calls. */
struct request {
    struct buf body;
    bool too_big;
    double t0;
    /* POST /db/load streams its body into a file rather than memory. */
    int load_fd;
    char load_path[4096];
    int load_errno;      /* write failure while receiving, 0 if none */
    unsigned long long load_bytes;
};

/* Answer with body (taken over, free()d by MHD). */
enum MHD_Result httpSend(struct MHD_Connection *c, unsigned status, const char *type,
                         char *body, size_t len);
/* Answer with the JSON in b (taken over); pretty re-indents it. */
enum MHD_Result httpSendBuf(struct MHD_Connection *c, unsigned status, struct buf *b,
                            bool pretty);
/* Answer {"error": msg}. */
enum MHD_Result httpSendError(struct MHD_Connection *c, unsigned status, const char *msg);
/* Answer 405 with an Allow header listing `allowed`. */
enum MHD_Result httpSendNotAllowed(struct MHD_Connection *c, const char *method,
                                   const char *url, const char *allowed);
/* The HTTP status for a cairn error code. */
unsigned httpStatusFor(int rv);
/* Monotonic seconds. */
double httpNow(void);

/* /admin/... and /db/backup, /db/load (http_admin.c). NULL route: not one of them. */
enum MHD_Result httpAdmin(struct http_server *h, struct MHD_Connection *c, const char *url,
                          const char *method, struct request *req, bool *handled);
/* Whether url is /db/load: its body goes to a file (see struct request). */
bool httpIsLoad(const char *url, const char *method);
/* Start receiving a /db/load body into a temporary file beside the database. */
int httpLoadOpen(struct http_server *h, struct request *req);

#endif
