/* S3 client: the object operations an S3-compatible repository driver needs (AWS S3,
 * MinIO, Ceph RGW, Cloudflare R2, a local test server), on libcurl.
 *
 * A client (struct s3) is opened from a URL `s3://BUCKET[/PREFIX]`, an optional
 * endpoint and region, and credentials found as every S3 tool finds them (environment,
 * then the shared credentials and config files; never a command-line secret). Every key
 * given to or returned by these functions is relative to PREFIX. Requests are signed by
 * libcurl (CURLOPT_AWS_SIGV4); failures that may pass (5xx, 429/SlowDown, timeouts,
 * stalls, cut connections) are retried with exponential backoff and jitter for a
 * bounded time, and a final failure names the object and the last answer.
 *
 * Large objects go up by multipart upload (s3UploadBegin/Write/Commit/Abort), several
 * parts in flight, memory bounded by parts_in_flight x part_size; nothing is visible
 * before the commit, and a failed or abandoned upload is aborted on the server.
 *
 * The repository object's `s3` driver (repo_s3.c) sits on it (docs/ARCHITECTURE.md,
 * "S3 client").
 *
 * Threads: an open client is read-only except for libcurl's shared connection cache,
 * which is locked; any thread may call s3List, s3Head, s3Get, s3Put, s3Delete,
 * s3ListUploads and s3AbortUpload, several at once on one client. A struct s3_upload
 * belongs to one thread at a time. Callbacks run on the calling thread, inside the
 * call. s3Close only after every other call on the client has returned. */
#ifndef CAIRN_S3_H
#define CAIRN_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest key S3 accepts, in bytes (the prefix included). */
#define S3_MAX_KEY 1024
/* s3Get's len: read to the end of the object. */
#define S3_TO_END UINT64_MAX
/* s3UploadBegin's flags: the commit fails with CAIRN_EEXIST, and leaves the object
 * there alone, when the key already names one (If-None-Match: *; S3 since 2024, MinIO,
 * R2; a server that ignores the condition replaces the object). */
#define S3_NO_REPLACE 1u

struct s3_config {
    const char *url;          /* s3://BUCKET[/PREFIX]; required */
    const char *endpoint;     /* http[s]://HOST[:PORT] of an S3-compatible service (path-style
                               * addressing); NULL: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
                               * the profile's endpoint_url, else AWS itself (virtual-host) */
    const char *region;       /* NULL: AWS_REGION, AWS_DEFAULT_REGION, the profile's region,
                               * else us-east-1 */
    const char *profile;      /* NULL: AWS_PROFILE, else "default" */
    unsigned retry_ms;        /* how long a request is retried after its first failure (or,
                               * for a GET, after the last failure it moved on from) before it
                               * gives up; 0: 60000 */
    unsigned stall_ms;        /* an attempt in which no byte moves for this long is cut and
                               * retried (checked about once a second); 0: 30000 */
    unsigned connect_ms;      /* TCP/TLS connect timeout of one attempt; 0: 10000 */
    size_t part_size;         /* multipart part size, 5 MiB to 5 GiB; 0: 8 MiB */
    unsigned parts_in_flight; /* parts uploading at once, 1 to 64; 0: 4 */
    volatile int *stop;       /* when *stop becomes non-zero, calls end with CAIRN_ESHUTDOWN
                               * (a transfer is cut within a second; an upload so ended
                               * gets one abort attempt of at most 2 s); may be NULL */
};

/* One object, as listed or HEADed. */
struct s3_object {
    const char *key; /* relative to the prefix; valid during the callback only (s3List),
                      * NULL from s3Head */
    uint64_t size;
    int64_t mtime_ms; /* Last-Modified, Unix milliseconds; 0 when not given */
    char etag[100];   /* as the server gave it, quotes removed; "" when not given */
};

/* A pending multipart upload, as s3ListUploads reports it. */
struct s3_pending {
    const char *key;       /* relative to the prefix; valid during the callback only */
    const char *upload_id; /* valid during the callback only */
    int64_t initiated_ms;  /* Unix milliseconds; 0 when not given */
};

/* Counters of a client since it was opened (any thread may read them). */
struct s3_stats {
    uint64_t requests; /* HTTP attempts made */
    uint64_t retries;  /* attempts that were retries */
};

struct s3;
struct s3_upload;

/* Open a client: parse cfg->url, find the endpoint, region and credentials, set up
 * libcurl. Sends nothing. Returns 0 and *out (the caller owns it: s3Close), or
 * CAIRN_EINVAL for a bad URL or endpoint, an unknown scheme, a missing bucket, missing
 * or incomplete credentials, a profile that does not exist or whose credentials come
 * from a source this client does not read (errmsg says which and where it looked);
 * CAIRN_ENOMEM. cfg and its strings may be freed once this returns. */
int s3Open(const struct s3_config *cfg, struct s3 **out, char *errmsg);

/* Release a client (NULL is fine); its secrets are wiped from memory. */
void s3Close(struct s3 *s3);

/* While on (a count: each s3StopAll(true) is undone by one s3StopAll(false)), every
 * client of the process behaves as if its own stop flag were set (s3_config.stop): its
 * calls end with CAIRN_ESHUTDOWN, an upload with one quick abort. For a process that
 * stops and must not wait for a transfer to a slow or stalled server. Any thread. */
void s3StopAll(bool on);
/* Whether s3StopAll is on. */
bool s3StopAllOn(void);
/* The calling thread's calls (not those of other threads it waits for, such as a
 * read-ahead's) are out of s3StopAll's reach from now on: for a thread whose last
 * transfer the stop waits for. */
void s3StopAllExempt(void);

/* "s3://BUCKET/PREFIX/" and where it is ("at http://127.0.0.1:9000" or "in AWS region
 * eu-west-1"), for messages. Valid until s3Close. */
const char *s3Describe(const struct s3 *s3);

void s3Stats(const struct s3 *s3, struct s3_stats *out);

/* "s3://BUCKET/PREFIX/KEY" of a relative key into out (n bytes, cut if need be), for
 * messages and a repository's `where`. */
void s3KeyUrl(const struct s3 *s3, const char *key, char *out, size_t n);

/* s3List's callback: return 0 to go on, anything else to stop the listing, which then
 * returns that value. */
typedef int (*s3_list_fn)(void *arg, const struct s3_object *obj);

/* Call fn for every object whose key starts with prefix (relative; "" for all), in
 * the server's order (S3: by key, in UTF-8 binary order), page by page
 * (ListObjectsV2 with continuation tokens). Each page is checked whole before any of
 * its objects is handed on. Returns 0, fn's non-zero value, or an error code
 * (CAIRN_ENOTFOUND when the bucket does not exist; CAIRN_EIO for a refusal or an
 * answer that is not a well-formed listing). */
int s3List(struct s3 *s3, const char *prefix, s3_list_fn fn, void *arg, char *errmsg);

/* Size, Last-Modified and ETag of key. CAIRN_ENOTFOUND when there is no such object. */
int s3Head(struct s3 *s3, const char *key, struct s3_object *out, char *errmsg);

/* s3Get's sink: gets the bytes in order; return 0 to go on, anything else to stop the
 * read, which then returns that value. */
typedef int (*s3_sink_fn)(void *arg, const void *data, size_t n);

/* Read bytes [offset, offset + len) of key (len S3_TO_END: to the end) into fn. A
 * range that reaches past the end stops at the end; *got (may be NULL) receives the
 * number of bytes handed to fn. etag (may be NULL; quoted or not, as s3Head gives it)
 * pins the version read: another version fails the read with CAIRN_EIO, so that the
 * ranged reads of one object opened with s3Head all read the same bytes. Without it,
 * a transfer cut part-way still resumes with If-Match on the ETag first seen. An offset
 * at or past the end: CAIRN_EINVAL; no such object: CAIRN_ENOTFOUND. len 0 reads nothing
 * and sends nothing. */
int s3Get(struct s3 *s3, const char *key, const char *etag, uint64_t offset, uint64_t len,
          s3_sink_fn fn, void *arg, uint64_t *got, char *errmsg);

/* s3Get that also says what it read: out->size, the object's whole size (from the
 * answer's Content-Range, or the Content-Length of a server that sent it all), and
 * out->etag, the version read (pin later reads to it); out->key NULL, out->mtime_ms 0.
 * Opens an object for ranged reads in one request where HEAD and GET took two. len 0
 * sends nothing, as s3Get, and leaves *out zeroed. */
int s3GetObject(struct s3 *s3, const char *key, const char *etag, uint64_t offset, uint64_t len,
                s3_sink_fn fn, void *arg, uint64_t *got, struct s3_object *out, char *errmsg);

/* Store data (len bytes, from memory; the caller keeps it) as key in one PUT,
 * replacing any object of that name. For objects up to a few part sizes; larger ones go
 * through s3Upload*. */
int s3Put(struct s3 *s3, const char *key, const void *data, size_t len, char *errmsg);

/* Remove key. Removing a key that does not exist succeeds, as in S3 (which does not say
 * whether there was one: a caller that must know asks s3Head first). */
int s3Delete(struct s3 *s3, const char *key, char *errmsg);

/* Start writing key. Nothing is sent yet: an object that stays within one part goes
 * up as one PUT at commit; a larger one starts a multipart upload when a second part is
 * needed. size_hint (0: unknown) raises the part size when part_size x 10000 parts
 * would not hold the object (S3 takes at most 10000 parts), with fewer parts in flight
 * so that the buffers stay within parts_in_flight x part_size, or one part when that
 * is larger. Returns 0 and *out (ended by s3UploadCommit or s3UploadAbort, exactly one
 * of them). */
int s3UploadBegin(struct s3 *s3, const char *key, uint64_t size_hint, unsigned flags,
                  struct s3_upload **out, char *errmsg);

/* Append n bytes (copied; the caller keeps data). Blocks while parts_in_flight parts
 * are uploading and the buffers are full, and moves the transfers on at each call,
 * so call it often. On failure (a part failed for good, 10000 parts exceeded, stop) the
 * multipart upload has been aborted on the server (errmsg says if even that failed)
 * and the caller must still end u with s3UploadAbort. */
int s3UploadWrite(struct s3_upload *u, const void *data, size_t n, char *errmsg);

/* Send what is left, wait for every part, and complete the upload: the object becomes
 * visible, whole, at once. On failure nothing was made visible and the multipart upload
 * has been aborted (errmsg says if that failed too); with S3_NO_REPLACE, CAIRN_EEXIST
 * when the key names an object already. Frees u either way. *size and
 * *parts (each may be NULL) receive the object's size and its number of parts (0 for
 * a single PUT). */
int s3UploadCommit(struct s3_upload *u, uint64_t *size, unsigned *parts, char *errmsg);

/* Give up: stop the transfers, abort the multipart upload on the server, free u.
 * Returns 0 when nothing is left behind, or the abort's error (the upload id is in
 * errmsg; s3ListUploads and s3AbortUpload can sweep it later). */
int s3UploadAbort(struct s3_upload *u, char *errmsg);

/* s3ListUploads' callback: as s3_list_fn. */
typedef int (*s3_pending_fn)(void *arg, const struct s3_pending *p);

/* Call fn for every multipart upload begun and neither completed nor aborted, whose
 * key starts with prefix (relative). */
int s3ListUploads(struct s3 *s3, const char *prefix, s3_pending_fn fn, void *arg, char *errmsg);

/* Abort the multipart upload upload_id of key. An upload that no longer exists
 * succeeds. */
int s3AbortUpload(struct s3 *s3, const char *key, const char *upload_id, char *errmsg);

#endif
