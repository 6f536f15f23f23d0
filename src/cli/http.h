/* A small HTTP client for the cairn command, over one libcurl easy handle.
 *
 * One handle per process keeps the connection to cairnd alive between the statements of
 * a shell session. Requests are synchronous; Ctrl-C (cliInterrupted) aborts the transfer
 * in progress. Main thread only. */
#ifndef CAIRN_CLI_HTTP_H
#define CAIRN_CLI_HTTP_H

#include <stddef.h>

#include "cli.h"

typedef struct cliBuf {
    char *data; /* always NUL-terminated once anything was appended; owned by the buffer */
    size_t len;
    size_t cap;
} cliBuf;

/* Appends n bytes to b, keeping it NUL-terminated. Returns 0 or CLI_ERR_NOMEM (b unchanged). */
int cliBufAppend(cliBuf *b, const void *data, size_t n);
/* Empties b without freeing its memory. */
void cliBufReset(cliBuf *b);
/* Frees b's memory; b can be reused afterwards. */
void cliBufFree(cliBuf *b);

typedef struct cliHttp {
    void *curl;        /* CURL *, kept opaque so users need not include curl.h */
    void *headers;     /* struct curl_slist * sent with POSTs */
    char base[256];    /* normalised base URL: scheme://host[:port][/prefix], no trailing '/' */
    char display[256]; /* host[:port][/prefix], for prompts */
    long status;       /* HTTP status of the last request, 0 when it failed before */
    double seconds;    /* wall time of the last request, as libcurl measured it */
    cliBuf body;       /* body of the last response; valid until the next request */
    char errmsg[CLI_ERRMSG_SIZE];
} cliHttp;

/* Initialises h for the server at url ("http://host:port", or "host:port" meaning http).
 * curl_global_init must have been called. Returns 0, CLI_ERR_USAGE for a malformed URL or
 * CLI_ERR_NOMEM; on failure h->errmsg says why and cliHttpClose(h) is still safe. */
int cliHttpInit(cliHttp *h, const char *url);

/* Releases everything h holds. Safe on a zeroed or half-initialised h. */
void cliHttpClose(cliHttp *h);

/* GET base+path (path starts with '/' and may carry a query string). On return 0 the
 * status is in h->status and the body in h->body, whatever the status; CLI_ERR_NET when
 * cairnd could not be reached, CLI_ERR_INTERRUPT on Ctrl-C, h->errmsg set. */
int cliHttpGet(cliHttp *h, const char *path);

/* POST body (len bytes of JSON, borrowed) to base+path; otherwise as cliHttpGet. */
int cliHttpPost(cliHttp *h, const char *path, const char *body, size_t len);

#endif
