/*
 * bench_http: a closed-loop HTTP/1.1 load generator for cairnd's rqlite-style API.
 *
 * Each client is one thread with one blocking keep-alive TCP connection: it sends a
 * request, reads the whole response, checks it, records the latency and sends the next.
 *
 *   --mode insert  POST /db/execute  [["INSERT INTO bench(k, v) VALUES(?, ?)", k, "<100 B>"]]
 *   --mode txn     POST /db/execute?transaction  with --rows such statements in one body
 *   --mode select  POST /db/query  [["SELECT k, v FROM bench WHERE k = ?", k]], k drawn
 *                  uniformly from [--key-min, --key-max]; --get sends GET /db/query?q=...
 *
 * A response is a success only if its status is 200, its body has no "error" key and it
 * holds what the mode expects: one "rows_affected" per inserted row, or for a select a
 * "values" array with the stored value. Everything else is counted by kind (report.h) and
 * the first one is quoted in the report. Keys to insert come from one atomic counter that
 * starts at --key-start, so successive runs can chain their key ranges; the run prints
 * key_end, one past the last key it handed out.
 *
 * Output: one JSON object on one line on stdout (see report.h); usage errors on stderr.
 *
 * Threads: main parses flags, connects every client, releases them together through a
 * barrier, joins them and prints. Client threads share only the key counter (atomic) and
 * read-only options.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

#define INSERT_SQL "INSERT INTO bench(k, v) VALUES(?, ?)"
#define SELECT_SQL "SELECT k, v FROM bench WHERE k = ?"
/* SELECT_SQL with the key inlined, URL-encoded for GET /db/query?q=, minus the key. */
#define SELECT_GET_PREFIX "SELECT%20k%2C%20v%20FROM%20bench%20WHERE%20k%20%3D%20"

enum mode { MODE_INSERT, MODE_TXN, MODE_SELECT };

static const char *const modeNames[] = {"insert", "txn", "select"};

struct options {
    char host[256];
    char port[16];
    char url[300];
    enum mode mode;
    int clients;
    long requests; /* per client; 0: run for duration */
    double duration;
    long rows; /* statements per request in txn mode */
    int64_t key_start;
    int64_t key_min;
    int64_t key_max;
    double timeout;
    int use_get;
    uint64_t seed;
    int words; /* --values words: each row's value differs (insert and txn modes) */
};

/* A growable byte buffer; bufReserve exits the program when memory runs out. */
struct buf {
    char *p;
    size_t len;
    size_t cap;
};

struct client {
    pthread_t thread;
    int id;
    int fd; /* -1 when not connected */
    int connected_before;
    uint64_t rng;
    struct buf head;    /* request line and headers */
    struct buf body;    /* request body */
    struct buf in;      /* bytes received for the current response */
    struct buf chunked; /* the body of a chunked response, decoded */
    char errmsg[256];
    struct tally tally;
};

static struct options opts;
static struct sockaddr_storage serverAddr;
static socklen_t serverAddrLen;
static _Atomic int64_t nextKey;
static pthread_barrier_t startBarrier;
static uint64_t startNs; /* written by main before the barrier, read by clients after it */

static void bufReserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        fprintf(stderr, "bench_http: out of memory (%zu bytes)\n", cap);
        exit(1);
    }
    b->p = p;
    b->cap = cap;
}

static void bufAppend(struct buf *b, const char *s, size_t n)
{
    bufReserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void bufPrintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bufPrintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    bufReserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends v in decimal. */
static void appendInt(struct buf *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    bufAppend(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

static void bufFree(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* splitmix64: a fast, well-mixed per-thread generator for random keys. */
static uint64_t rngNext(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* How much of a response body an error message quotes. */
static int quoteLen(size_t len)
{
    return len < 250 ? (int)len : 250;
}

/* Counts occurrences of needle in [p, p + n). */
static size_t countOccurrences(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle), count = 0;
    const char *end = p + n;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), needle, k);
        if (hit == NULL)
            break;
        count++;
        p = hit + k;
    }
    return count;
}

static void clientClose(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Opens c's connection with TCP_NODELAY and the send/receive timeouts; 0 or -1 with
 * c->errmsg set. */
static int clientConnect(struct client *c)
{
    int fd = socket(serverAddr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    struct timeval tv;
    tv.tv_sec = (time_t)opts.timeout;
    tv.tv_usec = (suseconds_t)((opts.timeout - (double)tv.tv_sec) * 1e6);
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "setsockopt: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&serverAddr, serverAddrLen) != 0) {
        snprintf(c->errmsg, sizeof(c->errmsg), "connect to %.200s: %s", opts.url, strerror(errno));
        close(fd);
        return -1;
    }
    if (c->connected_before)
        c->tally.reconnects++;
    c->connected_before = 1;
    c->fd = fd;
    return 0;
}

static int sendAll(struct client *c, const char *p, size_t n, int more)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            snprintf(c->errmsg, sizeof(c->errmsg), "send: %s",
                     errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Receives more bytes into c->in: 1 if some came, 0 at end of stream, -1 on error. */
static int recvMore(struct client *c)
{
    bufReserve(&c->in, 65536);
    for (;;) {
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(c->errmsg, sizeof(c->errmsg), "recv: %s",
                     errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        if (r == 0)
            return 0;
        c->in.len += (size_t)r;
        return 1;
    }
}

/* Like recvMore, but the end of the stream is an error: the response is incomplete. */
static int recvNeeded(struct client *c)
{
    int rc = recvMore(c);
    if (rc == 0)
        snprintf(c->errmsg, sizeof(c->errmsg),
                 "connection closed by the server mid-response (%zu bytes received)", c->in.len);
    return rc == 1 ? 0 : -1;
}

/* Decodes the chunked body that starts at offset pos of c->in into c->chunked. */
static int readChunked(struct client *c, size_t pos)
{
    c->chunked.len = 0;
    for (;;) {
        char *eol;
        while ((eol = memmem(c->in.p + pos, c->in.len - pos, "\r\n", 2)) == NULL)
            if (recvNeeded(c) != 0)
                return -1;
        char *end;
        unsigned long size = strtoul(c->in.p + pos, &end, 16);
        if (end == c->in.p + pos) {
            snprintf(c->errmsg, sizeof(c->errmsg), "bad chunk size line");
            return -1;
        }
        pos = (size_t)(eol - c->in.p) + 2;
        if (size == 0)
            break;
        while (c->in.len - pos < size + 2)
            if (recvNeeded(c) != 0)
                return -1;
        bufAppend(&c->chunked, c->in.p + pos, size);
        pos += size + 2;
    }
    /* Trailer lines, then the empty line that ends the message. */
    for (;;) {
        char *eol;
        while ((eol = memmem(c->in.p + pos, c->in.len - pos, "\r\n", 2)) == NULL)
            if (recvNeeded(c) != 0)
                return -1;
        size_t line = (size_t)(eol - (c->in.p + pos));
        pos += line + 2;
        if (line == 0)
            return 0;
    }
}

/* Reads one whole response on c's connection. On success returns 0 with the status, the
 * body (pointing into c->in or c->chunked, valid until the next request) and whether the
 * server will close the connection; -1 with c->errmsg set otherwise. */
static int readResponse(struct client *c, int *status, const char **body, size_t *body_len,
                        int *must_close)
{
    c->in.len = 0;
    bufReserve(&c->in, 65536);
    char *head_end;
    size_t scanned = 0;
    for (;;) {
        head_end = memmem(c->in.p + scanned, c->in.len - scanned, "\r\n\r\n", 4);
        if (head_end != NULL)
            break;
        scanned = c->in.len > 3 ? c->in.len - 3 : 0;
        if (recvNeeded(c) != 0)
            return -1;
    }
    size_t head_len = (size_t)(head_end - c->in.p) + 4;

    int minor = 0;
    if (sscanf(c->in.p, "HTTP/1.%d %d", &minor, status) != 2) {
        snprintf(c->errmsg, sizeof(c->errmsg), "bad status line: %.60s", c->in.p);
        return -1;
    }
    long content_length = -1;
    int chunked = 0;
    *must_close = minor == 0;
    for (char *line = (char *)memchr(c->in.p, '\n', head_len) + 1; line < head_end;) {
        char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
        size_t n = (size_t)(eol - line);
        if (n > 15 && strncasecmp(line, "content-length:", 15) == 0)
            content_length = strtol(line + 15, NULL, 10);
        else if (n > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0)
            chunked = memmem(line, n, "chunked", 7) != NULL;
        else if (n > 11 && strncasecmp(line, "connection:", 11) == 0) {
            if (memmem(line, n, "close", 5) != NULL)
                *must_close = 1;
            else if (memmem(line, n, "eep-alive", 9) != NULL)
                *must_close = 0;
        }
        line = eol + 2;
    }

    if (chunked) {
        if (readChunked(c, head_len) != 0)
            return -1;
        *body = c->chunked.p;
        *body_len = c->chunked.len;
        return 0;
    }
    if (content_length < 0 && (*status == 204 || *status == 304 || *status < 200))
        content_length = 0;
    if (content_length >= 0) {
        while (c->in.len - head_len < (size_t)content_length)
            if (recvNeeded(c) != 0)
                return -1;
    } else {
        /* No length: the body runs to the end of the stream. */
        *must_close = 1;
        int rc;
        while ((rc = recvMore(c)) == 1)
            ;
        if (rc < 0)
            return -1;
        content_length = (long)(c->in.len - head_len);
    }
    *body = c->in.p + head_len;
    *body_len = (size_t)content_length;
    return 0;
}

/* Appends n bytes of lowercase words picked by a PRNG seeded with key: values that
 * differ row to row and compress about as well as English text (--values words). */
static void appendWords(struct buf *b, int64_t key, size_t n)
{
    static const char *const words[] = {
        "order",   "shipped", "pending", "invoice", "street",  "london",   "paris",  "total",
        "amount",  "customer", "status", "review",  "green",   "blue",     "the",    "of",
        "and",     "account", "payment", "refund",  "berlin",  "delivery", "item",   "price",
        "express", "return",  "warehouse", "note",  "address", "city",     "phone",  "email"};
    uint64_t x = (uint64_t)key * 0x9E3779B97F4A7C15ULL + 1;
    size_t len = 0;
    bufReserve(b, n + 1);
    while (len < n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *w = words[x % (sizeof words / sizeof words[0])];
        for (size_t k = 0; w[k] != '\0' && len < n; k++, len++)
            b->p[b->len++] = w[k];
        if (len < n) {
            b->p[b->len++] = ' ';
            len++;
        }
    }
}

/* Writes the request for the next operation into c->head and c->body and returns its
 * first key. */
static int64_t buildRequest(struct client *c, const char **what)
{
    int64_t key;
    c->head.len = 0;
    c->body.len = 0;
    switch (opts.mode) {
    case MODE_INSERT:
    case MODE_TXN: {
        long rows = opts.mode == MODE_TXN ? opts.rows : 1;
        key = atomic_fetch_add(&nextKey, rows);
        /* 10,000 snprintf calls would cost the client milliseconds per request. */
        static const char head[] = "[\"" INSERT_SQL "\", ";
        static const char tail[] = ", \"" REPORT_VALUE "\"]";
        bufReserve(&c->body, (size_t)rows * (sizeof(head) + sizeof(tail) + 22) + 2);
        bufAppend(&c->body, "[", 1);
        for (long i = 0; i < rows; i++) {
            if (i)
                bufAppend(&c->body, ",", 1);
            bufAppend(&c->body, head, sizeof(head) - 1);
            appendInt(&c->body, key + i);
            if (opts.words) {
                bufAppend(&c->body, ", \"", 3);
                appendWords(&c->body, key + i, REPORT_VALUE_LEN);
                bufAppend(&c->body, "\"]", 2);
            } else {
                bufAppend(&c->body, tail, sizeof(tail) - 1);
            }
        }
        bufAppend(&c->body, "]", 1);
        *what = opts.mode == MODE_TXN ? "POST /db/execute?transaction" : "POST /db/execute";
        break;
    }
    case MODE_SELECT:
    default:
        key = opts.key_min +
              (int64_t)(rngNext(&c->rng) % (uint64_t)(opts.key_max - opts.key_min + 1));
        if (opts.use_get) {
            *what = "GET /db/query";
            bufPrintf(&c->head, "GET /db/query?q=%s%lld HTTP/1.1\r\nHost: %s:%s\r\n\r\n",
                      SELECT_GET_PREFIX, (long long)key, opts.host, opts.port);
            return key;
        }
        bufPrintf(&c->body, "[[\"" SELECT_SQL "\", %lld]]", (long long)key);
        *what = "POST /db/query";
        break;
    }
    bufPrintf(&c->head,
              "%s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
              "Content-Length: %zu\r\n\r\n",
              *what, opts.host, opts.port, c->body.len);
    return key;
}

/* Checks a 200 response's body for the mode; 0 if it is a success, else counts the
 * error. */
static int checkBody(struct client *c, const char *what, int64_t key, const char *body, size_t len)
{
    if (memmem(body, len, "\"error\"", 7) != NULL) {
        tallyError(&c->tally, REPORT_ERR_BODY, "%s (key %lld) -> 200 with an error: %.*s", what,
                   (long long)key, quoteLen(len), body);
        return -1;
    }
    if (opts.mode == MODE_SELECT) {
        if (memmem(body, len, "\"values\"", 8) == NULL) {
            tallyError(&c->tally, REPORT_ERR_EMPTY, "%s (key %lld) -> 200 without a row: %.*s",
                       what, (long long)key, quoteLen(len), body);
            return -1;
        }
        if (memmem(body, len, REPORT_VALUE, REPORT_VALUE_LEN) == NULL) {
            tallyError(&c->tally, REPORT_ERR_BODY,
                       "%s (key %lld) -> 200 without the stored value: %.*s", what, (long long)key,
                       quoteLen(len), body);
            return -1;
        }
        return 0;
    }
    size_t want = opts.mode == MODE_TXN ? (size_t)opts.rows : 1;
    size_t got = countOccurrences(body, len, "\"rows_affected\"");
    if (got != want) {
        tallyError(&c->tally, REPORT_ERR_BODY,
                   "%s (keys from %lld) -> 200 with %zu \"rows_affected\" for %zu rows: %.*s", what,
                   (long long)key, got, want, quoteLen(len), body);
        return -1;
    }
    return 0;
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
        if (c->fd < 0 && clientConnect(c) != 0) {
            tallyError(&c->tally, REPORT_ERR_IO, "%s", c->errmsg);
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
            continue;
        }
        const char *what;
        int64_t key = buildRequest(c, &what);

        int status = 0, must_close = 0;
        const char *body = NULL;
        size_t body_len = 0;
        uint64_t t0 = reportNowNs();
        int rc = sendAll(c, c->head.p, c->head.len, c->body.len > 0);
        if (rc == 0 && c->body.len > 0)
            rc = sendAll(c, c->body.p, c->body.len, 0);
        if (rc == 0)
            rc = readResponse(c, &status, &body, &body_len, &must_close);
        uint64_t t1 = reportNowNs();

        if (rc != 0) {
            tallyError(&c->tally, REPORT_ERR_IO, "%s (key %lld): %s", what, (long long)key,
                       c->errmsg);
            clientClose(c);
            continue;
        }
        if (status != 200) {
            tallyError(&c->tally, REPORT_ERR_STATUS, "%s (key %lld) -> HTTP %d: %.*s", what,
                       (long long)key, status, quoteLen(body_len), body_len ? body : "");
        } else if (checkBody(c, what, key, body, body_len) == 0) {
            tallySuccess(&c->tally, (uint64_t)rows, t1 - t0, opts.requests > 0 || t1 <= deadline);
        }
        if (must_close)
            clientClose(c);
    }
    clientClose(c);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_http --url HOST:PORT [--mode insert|txn|select] [--clients N]\n"
            "                  [--requests N (per client) | --duration SECONDS]\n"
            "                  [--rows N] [--key-start N] [--key-min N --key-max N] [--get]\n"
            "                  [--timeout SECONDS] [--seed N] [--values fixed|words]\n"
            "  insert: one-row INSERT per POST /db/execute; txn: --rows INSERTs (default 10000)\n"
            "  per POST /db/execute?transaction; select: PK SELECT of a random key in\n"
            "  [--key-min, --key-max] per POST /db/query (GET /db/query?q= with --get).\n"
            "  --values: each row's 100-byte value the same (fixed, the default) or its own\n"
            "  words (compresses about 4x, as text does).\n"
            "  Default: --duration 10 unless --requests is given. Prints one JSON line.\n");
}

/* Splits [http://]host:port[/] into opts.host and opts.port. */
static void parseUrl(const char *url)
{
    const char *s = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    const char *colon = strrchr(s, ':');
    size_t hlen = colon ? (size_t)(colon - s) : 0;
    size_t plen = colon ? strcspn(colon + 1, "/") : 0;
    if (colon == NULL || hlen == 0 || hlen >= sizeof(opts.host) || plen == 0 ||
        plen >= sizeof(opts.port)) {
        fprintf(stderr, "--url: expected HOST:PORT, got '%s'\n", url);
        exit(2);
    }
    memcpy(opts.host, s, hlen);
    opts.host[hlen] = '\0';
    memcpy(opts.port, colon + 1, plen);
    opts.port[plen] = '\0';
    snprintf(opts.url, sizeof(opts.url), "http://%s:%s", opts.host, opts.port);
}

static void parseArgs(int argc, char **argv)
{
    opts.mode = MODE_INSERT;
    opts.clients = 1;
    opts.rows = 10000;
    opts.key_start = 1;
    opts.timeout = 60;
    opts.seed = (uint64_t)time(NULL);
    int have_url = 0, have_range = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--values") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "words") == 0)
                opts.words = 1;
            else if (strcmp(v, "fixed") != 0) {
                fprintf(stderr, "--values: fixed or words, not '%s'\n", v);
                exit(2);
            }
            continue;
        }
        if (strcmp(a, "--get") == 0) {
            opts.use_get = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_http: %s needs a value\n", a);
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0) {
            parseUrl(v);
            have_url = 1;
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
        } else if (strcmp(a, "--timeout") == 0) {
            opts.timeout = reportParseDouble(a, v);
        } else if (strcmp(a, "--seed") == 0) {
            opts.seed = (uint64_t)reportParseLong(a, v);
        } else {
            fprintf(stderr, "bench_http: unknown flag %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (!have_url) {
        fprintf(stderr, "bench_http: --url is required\n");
        exit(2);
    }
    if (opts.clients < 1 || opts.clients > 10000 || opts.rows < 1 || opts.timeout <= 0) {
        fprintf(stderr, "bench_http: --clients 1..10000, --rows >= 1, --timeout > 0\n");
        exit(2);
    }
    if (opts.mode == MODE_SELECT && (have_range != 3 || opts.key_max < opts.key_min)) {
        fprintf(stderr, "bench_http: --mode select needs --key-min <= --key-max\n");
        exit(2);
    }
    if (opts.requests == 0 && opts.duration == 0)
        opts.duration = 10;
}

static void resolveServer(void)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(opts.host, opts.port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "bench_http: %s: %s\n", opts.url, gai_strerror(rc));
        exit(1);
    }
    memcpy(&serverAddr, res->ai_addr, res->ai_addrlen);
    serverAddrLen = res->ai_addrlen;
    freeaddrinfo(res);
}

int main(int argc, char **argv)
{
    parseArgs(argc, argv);
    resolveServer();
    signal(SIGPIPE, SIG_IGN);
    atomic_store(&nextKey, opts.key_start);

    struct client *clients = calloc((size_t)opts.clients, sizeof(*clients));
    if (clients == NULL) {
        fprintf(stderr, "bench_http: out of memory\n");
        return 1;
    }
    /* Connect everyone first so that connection setup is not part of the run. */
    for (int i = 0; i < opts.clients; i++) {
        struct client *c = &clients[i];
        c->id = i;
        c->fd = -1;
        c->rng = opts.seed * 1000003u + (uint64_t)i;
        tallyInit(&c->tally);
        if (clientConnect(c) != 0) {
            fprintf(stderr, "bench_http: client %d: %s\n", i, c->errmsg);
            while (i-- > 0)
                clientClose(&clients[i]);
            free(clients);
            return 1;
        }
    }
    pthread_barrier_init(&startBarrier, NULL, (unsigned)opts.clients + 1);
    for (int i = 0; i < opts.clients; i++) {
        int rc = pthread_create(&clients[i].thread, NULL, clientMain, &clients[i]);
        if (rc != 0) {
            fprintf(stderr, "bench_http: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    startNs = reportNowNs();
    pthread_barrier_wait(&startBarrier);

    struct tally *total = malloc(sizeof(*total));
    if (total == NULL) {
        fprintf(stderr, "bench_http: out of memory\n");
        return 1;
    }
    tallyInit(total);
    for (int i = 0; i < opts.clients; i++) {
        pthread_join(clients[i].thread, NULL);
        tallyMerge(total, &clients[i].tally);
    }
    double elapsed = (double)(reportNowNs() - startNs) / 1e9;

    struct report_run run = {
        .tool = "cairnd",
        .mode = modeNames[opts.mode],
        .target = opts.url,
        .clients = opts.clients,
        .rows_per_request = opts.mode == MODE_TXN ? opts.rows : 1,
        .elapsed_s = elapsed,
        .window_s = opts.requests > 0 ? 0 : opts.duration,
        .key_start = opts.mode == MODE_SELECT ? opts.key_min : opts.key_start,
        .key_end = opts.mode == MODE_SELECT ? opts.key_max + 1 : atomic_load(&nextKey),
    };
    reportPrint(stdout, &run, total);

    for (int i = 0; i < opts.clients; i++) {
        bufFree(&clients[i].head);
        bufFree(&clients[i].body);
        bufFree(&clients[i].in);
        bufFree(&clients[i].chunked);
    }
    free(clients);
    free(total);
    pthread_barrier_destroy(&startBarrier);
    return 0;
}
