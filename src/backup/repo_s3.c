/* The S3 driver of the repository object (repo_driver.h), on the S3 client (s3.h): a
 * repository `s3://BUCKET/PREFIX` is the objects under PREFIX, named as in a directory
 * (`<id>.cbk`, `<id>.verified`).
 *
 * - Writing an object is a multipart upload (s3Upload*), invisible until its commit,
 *   which is conditional (never replacing: If-None-Match, and a HEAD first for servers
 *   that ignore the condition); a failed or abandoned write is aborted on the server.
 * - Reading is ranged GETs pinned to the ETag the object had when opened, through a
 *   read-ahead window (READ_WINDOW) so that the many small reads of a backup file's
 *   header, footer and manifest cost few requests; a read as large as the window or
 *   larger goes straight into the caller's buffer.
 * - The endpoint, region and credentials are the client's (environment and the shared
 *   AWS files; s3.h); `cairn` sets the environment from --s3-endpoint/--s3-region.
 *   CAIRN_S3_RETRY_MS bounds how long a failing request is retried (default 60 s).
 * Threads: as repo_driver.h; the client itself may be shared by threads (s3.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "repo_driver.h"
#include "s3.h"

/* Read-ahead of a reader: one GET serves the reads within this many bytes. */
#define READ_WINDOW (1u << 20)
/* Unfinished multipart uploads older than this are swept (a live backup of a large
 * database may upload for a long time: only those surely dead go). */
#define SWEEP_AGE_MS (6LL * 3600 * 1000)

struct s3drv {
    struct s3 *s3;
};

struct s3reader {
    struct s3drv *d;
    char key[S3_MAX_KEY];
    char etag[100];
    uint64_t size;
    unsigned char *win;
    uint64_t win_off;
    size_t win_len;
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
    /* A repository is flat: keys in "subdirectories" of the prefix are not its. */
    if (strchr(obj->key, '/') != NULL) {
        return 0;
    }
    return a->fn(a->arg, obj->key, obj->size);
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
};

static int sinkInto(void *arg, const void *data, size_t n)
{
    struct sink *s = arg;
    if (n > s->cap - s->got) {
        return CAIRN_EIO; /* more than asked for: refused, never overrun */
    }
    memcpy(s->dst + s->got, data, n);
    s->got += n;
    return 0;
}

/* Fetch [off, off + n) of the object into dst (exactly n bytes, or an error). */
static int fetch(struct s3reader *r, uint64_t off, void *dst, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct sink s = {dst, n, 0};
    int rv = s3Get(r->d->s3, r->key, r->etag, off, n, sinkInto, &s, NULL, errmsg);
    if (rv != 0) {
        return rv;
    }
    return s.got == n ? 0 : CAIRN_EIO;
}

/* struct cbk_io's read: 0, or an errno value. */
static int readAt(void *arg, uint64_t off, void *buf, size_t n)
{
    struct s3reader *r = arg;
    unsigned char *out = buf;
    if (off > r->size || n > r->size - off) {
        return EIO; /* past the end: the caller checked lengths against the size */
    }
    while (n > 0) {
        if (r->win_len > 0 && off >= r->win_off && off < r->win_off + r->win_len) {
            size_t at = (size_t)(off - r->win_off);
            size_t take = r->win_len - at < n ? r->win_len - at : n;
            memcpy(out, r->win + at, take);
            out += take;
            off += take;
            n -= take;
            continue;
        }
        if (n >= READ_WINDOW) {
            return fetch(r, off, out, n) == 0 ? 0 : EIO;
        }
        {
            uint64_t want = r->size - off < READ_WINDOW ? r->size - off : READ_WINDOW;
            r->win_len = 0;
            if (fetch(r, off, r->win, (size_t)want) != 0) {
                return EIO;
            }
            r->win_off = off;
            r->win_len = (size_t)want;
        }
    }
    return 0;
}

static int s3DrvOpenRead(void *drv, const char *name, struct repo_reader *rd, char *errmsg)
{
    struct s3drv *d = drv;
    struct s3_object obj;
    struct s3reader *r;
    int rv = s3Head(d->s3, name, &obj, errmsg);
    if (rv != 0) {
        return rv;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL || (r->win = malloc(READ_WINDOW)) == NULL) {
        free(r);
        errorf(errmsg, "out of memory opening %s", name);
        return CAIRN_ENOMEM;
    }
    r->d = d;
    snprintf(r->key, sizeof r->key, "%s", name);
    snprintf(r->etag, sizeof r->etag, "%s", obj.etag);
    r->size = obj.size;
    rd->io.read = readAt;
    rd->io.arg = r;
    rd->size = obj.size;
    rd->fd = -1;
    rd->impl = r;
    return 0;
}

static void s3DrvCloseRead(struct repo_reader *rd)
{
    struct s3reader *r = rd->impl;
    if (r != NULL) {
        free(r->win);
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
    struct sink s = {buf, cap, 0};
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

struct sweep_arg {
    struct s3drv *d;
    int64_t before_ms;
    unsigned removed;
};

static int sweepOne(void *arg, const struct s3_pending *p)
{
    struct sweep_arg *a = arg;
    char msg[CAIRN_ERRMSG_SIZE];
    if (p->initiated_ms > 0 && p->initiated_ms < a->before_ms &&
        s3AbortUpload(a->d->s3, p->key, p->upload_id, msg) == 0) {
        a->removed++;
    }
    return 0;
}

static void s3DrvSweep(void *drv, unsigned *removed)
{
    struct sweep_arg a = {drv, 0, 0};
    struct timespec ts;
    char msg[CAIRN_ERRMSG_SIZE];
    clock_gettime(CLOCK_REALTIME, &ts);
    a.before_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - SWEEP_AGE_MS;
    (void)s3ListUploads(a.d->s3, "", sweepOne, &a, msg);
    *removed = a.removed;
}

static void s3DrvClose(void *drv)
{
    struct s3drv *d = drv;
    if (d != NULL) {
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
    if ((rv = s3Open(&cfg, &d->s3, errmsg)) != 0) {
        free(d);
        return rv;
    }
    *drv = d;
    *ops = &s3Driver;
    return 0;
}
