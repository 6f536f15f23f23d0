/* The S3 driver of the repository object (repo_driver.h), on the S3 client (s3.h): a
 * repository `s3://BUCKET/PREFIX` is the objects under PREFIX, named as in a directory
 * (`<id>.cbk`, `<id>.verified`).
 *
 * - Writing an object is a multipart upload (s3Upload*), invisible until its commit,
 *   which is conditional (never replacing: If-None-Match, and a HEAD first for servers
 *   that ignore the condition); a failed or abandoned write is aborted on the server.
 * - Reading is ranged GETs pinned to the ETag the object had when opened, through a
 *   read-ahead (readahead.h): while a reader reads in order, several GETs of the bytes
 *   ahead are in flight on the driver's fetch threads, within a budget shared by every
 *   reader of the process; the small reads of a backup file's header, footer and
 *   manifest head cost a small GET each, never a large prefetch. A GET that fails for
 *   good fails the read that needs its bytes, with the GET's message (cbk_io's why).
 * - The endpoint, region and credentials are the client's (environment and the shared
 *   AWS files; s3.h); `cairn` sets the environment from --s3-endpoint/--s3-region.
 *   CAIRN_S3_RETRY_MS bounds how long a failing request is retried (default 60 s);
 *   CAIRN_S3_SWEEP_AGE_MS is how old an unfinished upload must be to be swept (6 h).
 * Threads: as repo_driver.h; the client itself may be shared by threads (s3.h), and
 * the read-ahead's fetch threads (started at a repository's first sequential read,
 * stopped when it closes) run GETs for its readers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "lib.h"
#include "readahead.h"
#include "repo_driver.h"
#include "s3.h"

/* Unfinished multipart uploads older than this are swept (a live backup of a large
 * database may upload for a long time: only those surely dead go); the default of
 * CAIRN_S3_SWEEP_AGE_MS, which may be 1 ms to a year. */
#define SWEEP_AGE_MS (6LL * 3600 * 1000)
#define SWEEP_AGE_MAX_MS (365LL * 24 * 3600 * 1000)

struct s3drv {
    struct s3 *s3;
    int64_t sweep_age_ms;
    struct readahead_pool *pool; /* the fetch threads of its readers */
    int stop;                    /* the client's stop flag: set when the driver closes, so
                                  * that fetches nobody waits for any more end at once */
};

struct s3reader {
    struct readahead *ra;
    char errmsg[CAIRN_ERRMSG_SIZE]; /* of the last failed read */
};

struct s3writer {
    struct repo_writer base; /* first: repo.c sees this */
    struct s3drv *d;
    struct s3_upload *u;
    char name[S3_MAX_KEY];
};

static const char *s3LocalPath(void *drv)
{
    (void)drv;
    return NULL;
}

static void s3Where(void *drv, const char *name, char *out, size_t size)
{
    struct s3drv *d = drv;
    s3KeyUrl(d->s3, name, out, size);
}

struct list_arg {
    repo_list_fn fn;
    void *arg;
};

static int listOne(void *arg, const struct s3_object *obj)
{
    struct list_arg *a = arg;
    char version[sizeof obj->etag + 24];
    /* A repository is flat: keys in "subdirectories" of the prefix are not its. */
    if (strchr(obj->key, '/') != NULL) {
        return 0;
    }
    /* The version: the ETag (a digest of the content, for S3 and most servers) and the
     * Last-Modified time, which a new PUT changes even with the same bytes. No ETag:
     * nothing tells versions apart. */
    if (obj->etag[0] == '\0') {
        return a->fn(a->arg, obj->key, obj->size, NULL);
    }
    snprintf(version, sizeof version, "%s/%lld", obj->etag, (long long)obj->mtime_ms);
    return a->fn(a->arg, obj->key, obj->size, version);
}

static int s3DrvList(void *drv, const char *prefix, repo_list_fn fn, void *arg, char *errmsg)
{
    struct s3drv *d = drv;
    struct list_arg a = {fn, arg};
    return s3List(d->s3, prefix, listOne, &a, errmsg);
}

/* ---- reading ----------------------------------------------------------------------- */

struct sink {
    unsigned char *dst;
    size_t cap;
    size_t got;
    const int *cancel; /* may be NULL */
};

static int sinkInto(void *arg, const void *data, size_t n)
{
    struct sink *s = arg;
    if (s->cancel != NULL && __atomic_load_n(s->cancel, __ATOMIC_RELAXED) != 0) {
        return CAIRN_ESHUTDOWN; /* nobody wants these bytes any more */
    }
    if (n > s->cap - s->got) {
        return CAIRN_EIO; /* more than asked for: refused, never overrun */
    }
    memcpy(s->dst + s->got, data, n);
    s->got += n;
    return 0;
}

/* What a reader's fetches read: one version of one object. Owned by the reader's
 * read-ahead (freed once its last fetch has ended). */
struct s3obj {
    struct s3 *s3;
    char key[S3_MAX_KEY];
    char etag[100];
};

/* The read-ahead's fetch: [off, off + n) of the object pinned to its ETag into buf,
 * exactly n bytes, with s3Get's retries. */
static int fetchRange(void *arg, uint64_t off, void *buf, size_t n, const int *cancel, char *errmsg)
{
    struct s3obj *o = arg;
    struct sink s = {buf, n, 0, cancel};
    int rv = s3Get(o->s3, o->key, o->etag, off, n, sinkInto, &s, NULL, errmsg);
    if (rv == 0 && s.got != n) {
        char url[S3_MAX_KEY + 128];
        s3KeyUrl(o->s3, o->key, url, sizeof url);
        errorf(errmsg,
               "GET %s bytes %llu-%llu: %zu bytes came, not %zu (the object is shorter "
               "than its size)",
               url, (unsigned long long)off, (unsigned long long)(off + n - 1), s.got, n);
        rv = CAIRN_EIO;
    }
    return rv;
}

/* s3Get's sink for the read-ahead's stream: the bytes handed on as they come. */
struct pass {
    readahead_sink_fn fn;
    void *arg;
    const int *cancel;
};

static int passOn(void *arg, const void *data, size_t n)
{
    struct pass *a = arg;
    if (__atomic_load_n(a->cancel, __ATOMIC_RELAXED) != 0) {
        return CAIRN_ESHUTDOWN; /* nobody wants these bytes any more */
    }
    return a->fn(a->arg, data, n) == 0 ? 0 : CAIRN_EIO;
}

/* The read-ahead's stream (into its spool): [off, off + n) of the object pinned to its
 * ETag, handed to sink as it comes, with s3Get's retries (a transfer cut part-way
 * resumes where it stopped, so sink sees each byte once, in order). The read-ahead
 * checks that exactly n came. */
static int streamRange(void *arg, uint64_t off, size_t n, readahead_sink_fn sink, void *sink_arg,
                       const int *cancel, char *errmsg)
{
    struct s3obj *o = arg;
    struct pass a = {sink, sink_arg, cancel};
    return s3Get(o->s3, o->key, o->etag, off, n, passOn, &a, NULL, errmsg);
}

/* struct cbk_io's read: 0, or an errno value; why() then says what failed. */
static int readAt(void *arg, uint64_t off, void *buf, size_t n)
{
    struct s3reader *r = arg;
    int rv = readaheadRead(r->ra, off, buf, n, r->errmsg);
    if (rv == 0) {
        r->errmsg[0] = '\0';
        return 0;
    }
    return rv == CAIRN_ENOMEM ? ENOMEM : EIO;
}

static const char *readWhy(void *arg)
{
    struct s3reader *r = arg;
    return r->errmsg[0] != '\0' ? r->errmsg : NULL;
}

static void readWillRead(void *arg, uint64_t off)
{
    struct s3reader *r = arg;
    readaheadWillRead(r->ra, off);
}

/* Bytes of an object read when it is opened: the read-ahead's small window. */
#define OPEN_BYTES ((size_t)64 << 10)

/* One GET opens an object: its first bytes (where a .cbk file is read first), its size
 * and its version, which pins every later read; a HEAD and a GET took two round trips.
 * An empty object (no byte 0: 416) is opened with a HEAD. */
static int s3DrvOpenRead(void *drv, const char *name, struct repo_reader *rd, char *errmsg)
{
    struct s3drv *d = drv;
    struct s3_object obj;
    struct s3reader *r = NULL;
    struct s3obj *o = NULL;
    unsigned char *head = malloc(OPEN_BYTES);
    struct sink s = {head, OPEN_BYTES, 0, NULL};
    int rv;

    if (head == NULL) {
        errorf(errmsg, "out of memory opening %s", name);
        return CAIRN_ENOMEM;
    }
    rv = s3GetObject(d->s3, name, NULL, 0, OPEN_BYTES, sinkInto, &s, NULL, &obj, errmsg);
    if (rv == CAIRN_EINVAL) {
        s.got = 0;
        rv = s3Head(d->s3, name, &obj, errmsg);
    }
    if (rv != 0) {
        goto err;
    }
    if (s.got != (obj.size < OPEN_BYTES ? obj.size : OPEN_BYTES)) {
        char url[S3_MAX_KEY + 128];
        s3KeyUrl(d->s3, name, url, sizeof url);
        errorf(errmsg, "GET %s: %zu bytes came of the first %zu of %llu", url, s.got, OPEN_BYTES,
               (unsigned long long)obj.size);
        rv = CAIRN_EIO;
        goto err;
    }
    r = calloc(1, sizeof *r);
    o = calloc(1, sizeof *o);
    if (r == NULL || o == NULL) {
        errorf(errmsg, "out of memory opening %s", name);
        rv = CAIRN_ENOMEM;
        goto err;
    }
    o->s3 = d->s3;
    snprintf(o->key, sizeof o->key, "%s", name);
    snprintf(o->etag, sizeof o->etag, "%s", obj.etag);
    if ((rv = readaheadOpen(d->pool, fetchRange, o, free, obj.size, &r->ra, errmsg)) != 0) {
        goto err;
    }
    o = NULL; /* the reader's now */
    readaheadStream(r->ra, streamRange);
    if ((rv = readaheadSeed(r->ra, 0, head, s.got, errmsg)) != 0) {
        readaheadClose(r->ra);
        goto err;
    }
    free(head);
    rd->io.read = readAt;
    rd->io.why = readWhy;
    rd->io.willRead = readWillRead;
    rd->io.arg = r;
    rd->size = obj.size;
    rd->fd = -1;
    rd->impl = r;
    return 0;
err:
    free(o);
    free(r);
    free(head);
    return rv;
}

static void s3DrvCloseRead(struct repo_reader *rd)
{
    struct s3reader *r = rd->impl;
    if (r != NULL) {
        readaheadClose(r->ra);
        free(r);
    }
    rd->impl = NULL;
}

/* ---- writing ----------------------------------------------------------------------- */

static int s3DrvCreate(void *drv, const char *name, struct repo_writer **w, char *errmsg)
{
    struct s3drv *d = drv;
    struct s3writer *sw = calloc(1, sizeof *sw);
    int rv;
    if (sw == NULL) {
        errorf(errmsg, "out of memory writing %s", name);
        return CAIRN_ENOMEM;
    }
    sw->d = d;
    snprintf(sw->name, sizeof sw->name, "%s", name);
    if ((rv = s3UploadBegin(d->s3, name, 0, S3_NO_REPLACE, &sw->u, errmsg)) != 0) {
        free(sw);
        return rv;
    }
    *w = &sw->base;
    return 0;
}

static int s3DrvWrite(struct repo_writer *w, const void *p, size_t n, char *errmsg)
{
    struct s3writer *sw = (struct s3writer *)w;
    return s3UploadWrite(sw->u, p, n, errmsg);
}

static int s3DrvCommit(struct repo_writer *w, char *errmsg)
{
    struct s3writer *sw = (struct s3writer *)w;
    struct s3_object obj;
    char msg[CAIRN_ERRMSG_SIZE];
    int rv = s3Head(sw->d->s3, sw->name, &obj, msg);
    if (rv == 0) {
        /* Some S3-compatible servers ignore If-None-Match: never replace a backup. */
        s3UploadAbort(sw->u, msg);
        errorf(errmsg, "%s exists already: a backup is never replaced", sw->name);
        free(sw);
        return CAIRN_EEXIST;
    }
    if (rv != CAIRN_ENOTFOUND) {
        s3UploadAbort(sw->u, msg);
        errorf(errmsg, "%s", msg);
        free(sw);
        return rv;
    }
    rv = s3UploadCommit(sw->u, NULL, NULL, errmsg);
    free(sw);
    return rv;
}

static void s3DrvAbort(struct repo_writer *w)
{
    struct s3writer *sw = (struct s3writer *)w;
    char msg[CAIRN_ERRMSG_SIZE];
    s3UploadAbort(sw->u, msg); /* an upload it could not abort is swept later */
    free(sw);
}

/* ---- the rest ---------------------------------------------------------------------- */

static int s3DrvRemove(void *drv, const char *name, char *errmsg)
{
    struct s3drv *d = drv;
    struct s3_object obj;
    int rv = s3Head(d->s3, name, &obj, errmsg);
    return rv != 0 ? rv : s3Delete(d->s3, name, errmsg);
}

static int s3DrvGet(void *drv, const char *name, void *buf, size_t cap, size_t *len,
                    char *errmsg)
{
    struct s3drv *d = drv;
    struct sink s = {buf, cap, 0, NULL};
    uint64_t got = 0;
    int rv;
    *len = 0;
    if (cap == 0) {
        return 0;
    }
    rv = s3Get(d->s3, name, NULL, 0, cap, sinkInto, &s, &got, errmsg);
    if (rv == CAIRN_EINVAL) {
        /* An offset at the end of an empty object: it exists, and holds nothing. */
        struct s3_object obj;
        if (s3Head(d->s3, name, &obj, errmsg) == 0 && obj.size == 0) {
            return 0;
        }
    }
    *len = s.got;
    return rv;
}

static int s3DrvPut(void *drv, const char *name, const void *buf, size_t len, char *errmsg)
{
    struct s3drv *d = drv;
    return s3Put(d->s3, name, buf, len, errmsg);
}

/* Sweeping: S3 keeps a multipart upload that was neither completed nor aborted (its
 * writer was killed, or its abort failed) out of every listing, and bills its parts,
 * until someone aborts it. Nothing in ListMultipartUploads tells a dead writer from a
 * live one (no owner process, no heartbeat), so an upload is aborted only when both
 *  - its key is a backup object the engine names (backupIsOwnName:
 *    `<id>.cbk` with a generated id; objects of other programs, or of another
 *    repository under a longer prefix, which have a '/', never match), and
 *  - it began (S3's Initiated time) more than sweep_age_ms before now by this
 *    machine's clock: a live writer elsewhere is safe while its backup takes less
 *    than that (an upload without an Initiated time is never swept).
 * One listing of the repository's uploads, then an abort for each found. */
struct sweep_arg {
    struct s3drv *d;
    int64_t before_ms;
    unsigned removed;
};

static int sweepOne(void *arg, const struct s3_pending *p)
{
    struct sweep_arg *a = arg;
    char msg[CAIRN_ERRMSG_SIZE];
    if (backupIsOwnName(p->key) && p->initiated_ms > 0 && p->initiated_ms < a->before_ms &&
        s3AbortUpload(a->d->s3, p->key, p->upload_id, msg) == 0) {
        a->removed++;
    }
    return 0; /* an abort that failed is tried again at the next sweep */
}

static void s3DrvSweep(void *drv, unsigned *removed)
{
    struct s3drv *d = drv;
    struct sweep_arg a = {d, libNowMs() - d->sweep_age_ms, 0};
    char msg[CAIRN_ERRMSG_SIZE];
    (void)s3ListUploads(d->s3, "", sweepOne, &a, msg);
    *removed = a.removed;
}

/* CAIRN_S3_SWEEP_AGE_MS, or the default. */
static int sweepAgeFromEnv(int64_t *out, char *errmsg)
{
    const char *v = getenv("CAIRN_S3_SWEEP_AGE_MS");
    char *end = NULL;
    unsigned long long ms;
    *out = SWEEP_AGE_MS;
    if (v == NULL) {
        return 0;
    }
    errno = 0;
    ms = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0 || v[0] == '-' || ms == 0 ||
        ms > (unsigned long long)SWEEP_AGE_MAX_MS) {
        errorf(errmsg,
               "CAIRN_S3_SWEEP_AGE_MS=%s: expected milliseconds, 1 to %lld (a year; "
               "default %lld, 6 hours)",
               v, (long long)SWEEP_AGE_MAX_MS, (long long)SWEEP_AGE_MS);
        return CAIRN_EINVAL;
    }
    *out = (int64_t)ms;
    return 0;
}

static void s3DrvClose(void *drv)
{
    struct s3drv *d = drv;
    if (d != NULL) {
        /* Every reader is closed: what fetches still run are read-ahead nobody wants. */
        __atomic_store_n(&d->stop, 1, __ATOMIC_RELAXED);
        readaheadPoolClose(d->pool);
        s3Close(d->s3);
        free(d);
    }
}

static const struct repo_driver s3Driver = {
    .name = "s3",
    .localPath = s3LocalPath,
    .where = s3Where,
    .list = s3DrvList,
    .openRead = s3DrvOpenRead,
    .closeRead = s3DrvCloseRead,
    .create = s3DrvCreate,
    .write = s3DrvWrite,
    .commit = s3DrvCommit,
    .abort = s3DrvAbort,
    .remove = s3DrvRemove,
    .get = s3DrvGet,
    .put = s3DrvPut,
    .sweep = s3DrvSweep,
    .close = s3DrvClose,
};

int repoS3Open(const char *url, void **drv, const struct repo_driver **ops, char *errmsg)
{
    struct s3_config cfg;
    struct s3drv *d = calloc(1, sizeof *d);
    int rv;
    *drv = NULL;
    *ops = NULL;
    if (d == NULL) {
        errorf(errmsg, "out of memory opening %s", url);
        return CAIRN_ENOMEM;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.url = url;
    {
        /* How long a failing request is retried (s3.h's default: a minute). */
        const char *v = getenv("CAIRN_S3_RETRY_MS");
        char *end = NULL;
        unsigned long ms = v != NULL ? strtoul(v, &end, 10) : 0;
        if (v != NULL && (end == v || *end != '\0' || ms == 0 || ms > 3600000)) {
            errorf(errmsg, "CAIRN_S3_RETRY_MS=%s: expected milliseconds, 1 to 3600000", v);
            free(d);
            return CAIRN_EINVAL;
        }
        cfg.retry_ms = (unsigned)ms;
    }
    if ((rv = sweepAgeFromEnv(&d->sweep_age_ms, errmsg)) != 0) {
        free(d);
        return rv;
    }
    cfg.stop = &d->stop;
    /* Read-ahead spooled in $TMPDIR (else /tmp): few large GETs, memory as it was. */
    {
        const char *tmp = getenv("TMPDIR");
        struct readahead_config rc = {.spool_dir = tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp"};
        rv = readaheadPoolOpen(&rc, &d->pool, errmsg);
    }
    if (rv != 0) {
        free(d);
        return rv;
    }
    if ((rv = s3Open(&cfg, &d->s3, errmsg)) != 0) {
        readaheadPoolClose(d->pool);
        free(d);
        return rv;
    }
    *drv = d;
    *ops = &s3Driver;
    return 0;
}
