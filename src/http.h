/* The HTTP front end: rqlite's data API (/db/execute, /db/query, /db/request) and
 * the node's status endpoints, served by libmicrohttpd with a thread per
 * connection. A request is parsed on its connection's thread, run through dbRun
 * (which waits for the Raft log when it writes), and answered in rqlite's JSON
 * shapes. Every failure is a JSON error with a 4xx/5xx status. HTTP threads. */
#ifndef CAIRN_HTTP_H
#define CAIRN_HTTP_H

#include <stddef.h>

struct cairn;
struct http_server;

/* Listen on addr ("HOST:PORT"; port 0 picks a free one, see cairn_http_addr). */
int httpStart(struct cairn *db, const char *addr, size_t max_body, struct http_server **out,
              char *errmsg);

/* Stop accepting, finish the requests in flight, free. Safe on NULL. */
void httpStop(struct http_server *h);

#endif
