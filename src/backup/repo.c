/* The repository object and the catalog of a backup repository: which `.cbk` objects a
 * repository holds, what their headers and footers say, and whether the last
 * verification passed (the `<id>.verified` sidecar beside each object).
 *
 * A repository is opened from a URL (repoOpen) and reached only through its driver's
 * table (repo_driver.h): the engine makes no POSIX call on a repository. The posix
 * driver is repo_posix.c; the S3 driver will be repo_s3.c.
 *
 * Everything here is derived from the objects themselves, read without trusting them
 * (cbk.c checks every field): restoring a database never rewinds its catalog, and a
 * damaged object is listed with its error rather than hidden. Objects are never
 * rewritten; only sidecars are, replaced whole.
 *
 * Any thread; no shared state. */
#define _GNU_SOURCE
#include "repo.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "lib.h"
#include "repo_driver.h"

#define SIDECAR_SUFFIX ".verified"
#define SIDECAR_MAX 4096

struct repo {
    char *url;
    void *drv;
    const struct repo_driver *ops;
};

/* ---- small helpers ---- */

int64_t repoNowMs(void)
{
    return libNowMs();
}

int64_t repoMonoMs(void)
{
    return libMonoMs();
}

void repoIso8601(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)t * 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, 32, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void repoHex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void repoDirOf(const char *path, char *out)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(out, PATH_MAX, ".");
    } else if (slash == path) {
        snprintf(out, PATH_MAX, "/");
    } else {
        snprintf(out, PATH_MAX, "%.*s", (int)(slash - path), path);
    }
}

const char *repoNameOf(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

int repoMkdirs(const char *dir, char *errmsg)
{
    char tmp[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp) {
        errorf(errmsg, "invalid repository path \"%s\"", dir);
        return CAIRN_EINVAL;
    }
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                errorf(errmsg, "create the directory %s: %s", tmp, strerror(errno));
                return errorFromErrno(errno);
            }
            tmp[i] = c;
        }
    }
    return 0;
}

int repoRenameNoReplace(const char *tmp, const char *path, char *errmsg)
{
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) {
        return 0;
    }
    if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
        /* A file system without RENAME_NOREPLACE: link() fails too when path exists. */
        if (link(tmp, path) == 0) {
            unlink(tmp);
            return 0;
        }
    }
    if (errno == EEXIST) {
        errorf(errmsg, "%s already exists", path);
        return CAIRN_EEXIST;
    }
    errorf(errmsg, "rename %s to %s: %s", tmp, path, strerror(errno));
    return errorFromErrno(errno);
}

/* ---- the repository object ---- */

/* The scheme of url ("s3" for "s3://..."), into out; false when url has none (a
 * path). */
static bool urlScheme(const char *url, char *out, size_t size)
{
    const char *sep = strstr(url, "://");
    size_t n;
    if (sep == NULL || sep == url || !isalpha((unsigned char)url[0])) {
        return false;
    }
    for (const char *p = url; p < sep; p++) {
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.') {
            return false;
        }
    }
    n = (size_t)(sep - url);
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), url);
    return true;
}

/* repoOpen; bare: url "" is the working directory, its objects named without "./"
 * (a backup file named by a relative path of one component keeps that path). */
static int openUrl(const char *url, bool bare, struct repo **out, char *errmsg)
{
    struct repo *r;
    char scheme[16];
    int rv;

    *out = NULL;
    if (url == NULL || (url[0] == '\0' && !bare)) {
        errorf(errmsg, "no repository given (a directory, file:///DIR or s3://BUCKET/PREFIX)");
        return CAIRN_EINVAL;
    }
    if ((r = calloc(1, sizeof *r)) == NULL || (r->url = strdup(url)) == NULL) {
        free(r);
        errorf(errmsg, "out of memory opening the repository %s", url);
        return CAIRN_ENOMEM;
    }
    if (!urlScheme(url, scheme, sizeof scheme)) {
        rv = repoPosixOpen(url, &r->drv, &r->ops, errmsg);
    } else if (strcasecmp(scheme, "file") == 0) {
        if (url[7] != '/') {
            errorf(errmsg, "repository %s: a file URL names a local path, file:///DIR", url);
            rv = CAIRN_EINVAL;
        } else {
            rv = repoPosixOpen(url + 7, &r->drv, &r->ops, errmsg);
        }
    } else if (strcasecmp(scheme, "s3") == 0) {
        rv = repoS3Open(url, &r->drv, &r->ops, errmsg);
    } else {
        errorf(errmsg,
               "repository %s: unknown scheme \"%s\" (a directory, file:///DIR or "
               "s3://BUCKET/PREFIX)",
               url, scheme);
        rv = CAIRN_EINVAL;
    }
    if (rv != 0) {
        free(r->url);
        free(r);
        return rv;
    }
    *out = r;
    return 0;
}

int repoOpen(const char *url, struct repo **out, char *errmsg)
{
    return openUrl(url, false, out, errmsg);
}

void repoClose(struct repo *r)
{
    if (r == NULL) {
        return;
    }
    r->ops->close(r->drv);
    free(r->url);
    free(r);
}

const char *repoUrl(const struct repo *r)
{
    return r->url;
}

const char *repoLocalPath(const struct repo *r)
{
    return r->ops->localPath != NULL ? r->ops->localPath(r->drv) : NULL;
}

void repoWhere(struct repo *r, const char *name, char *out)
{
    r->ops->where(r->drv, name, out, PATH_MAX);
}

int repoListNames(struct repo *r, const char *prefix, repo_list_fn fn, void *arg, char *errmsg)
{
    return r->ops->list(r->drv, prefix != NULL ? prefix : "", fn, arg, errmsg);
}

int repoOpenRead(struct repo *r, const char *name, struct repo_reader *rd, char *errmsg)
{
    int rv;
    memset(rd, 0, sizeof *rd);
    rd->fd = -1;
    if ((rv = r->ops->openRead(r->drv, name, rd, errmsg)) != 0) {
        return rv;
    }
    rd->drv = r->ops;
    return 0;
}

void repoCloseRead(struct repo_reader *rd)
{
    if (rd->drv != NULL) {
        rd->drv->closeRead(rd);
        rd->drv = NULL;
    }
}

int repoCreate(struct repo *r, const char *name, struct repo_writer **w, char *errmsg)
{
    int rv;
    *w = NULL;
    if (strchr(name, '/') != NULL || name[0] == '\0' || name[0] == '.') {
        errorf(errmsg, "invalid object name \"%s\" in %s", name, r->url);
        return CAIRN_EINVAL;
    }
    if ((rv = r->ops->create(r->drv, name, w, errmsg)) != 0) {
        return rv;
    }
    (*w)->drv = r->ops;
    return 0;
}

int repoWrite(struct repo_writer *w, const void *p, size_t n, char *errmsg)
{
    return w->drv->write(w, p, n, errmsg);
}

int repoCommit(struct repo_writer *w, char *errmsg)
{
    return w->drv->commit(w, errmsg);
}

void repoAbort(struct repo_writer *w)
{
    if (w != NULL) {
        w->drv->abort(w);
    }
}

int repoRemove(struct repo *r, const char *name, char *errmsg)
{
    return r->ops->remove(r->drv, name, errmsg);
}

int repoGet(struct repo *r, const char *name, void *buf, size_t cap, size_t *len, char *errmsg)
{
    *len = 0;
    return r->ops->get(r->drv, name, buf, cap, len, errmsg);
}

int repoPut(struct repo *r, const char *name, const void *buf, size_t len, char *errmsg)
{
    if (strchr(name, '/') != NULL || name[0] == '\0' || name[0] == '.') {
        errorf(errmsg, "invalid object name \"%s\" in %s", name, r->url);
        return CAIRN_EINVAL;
    }
    return r->ops->put(r->drv, name, buf, len, errmsg);
}

void repoSweepTempIn(struct repo *repo, unsigned *removed)
{
    *removed = 0;
    repo->ops->sweep(repo->drv, removed);
}

void repoSweepTemp(const char *repo, unsigned *removed)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    struct repo *r;
    *removed = 0;
    if (repoOpen(repo, &r, ignore) != 0) {
        return;
    }
    repoSweepTempIn(r, removed);
    repoClose(r);
}

/* ---- `.cbk` objects ---- */

int repoOpenFileIn(struct repo *repo, const char *name, struct repo_file *f, char *errmsg)
{
    int rv;
    memset(f, 0, sizeof *f);
    f->repo = repo;
    repoWhere(repo, name, f->path);
    if ((rv = repoOpenRead(repo, name, &f->rd, errmsg)) != 0) {
        return rv;
    }
    if ((rv = cbkOpen(&f->r, &f->rd.io, f->rd.size, f->path, errmsg)) != 0) {
        repoCloseRead(&f->rd);
        return rv;
    }
    return 0;
}

int repoOpenFile(const char *path, struct repo_file *f, char *errmsg)
{
    char dir[PATH_MAX];
    struct repo *r;
    int rv;
    if (strlen(path) >= PATH_MAX) {
        memset(f, 0, sizeof *f);
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    if (strchr(path, '/') != NULL) {
        repoDirOf(path, dir);
    } else {
        dir[0] = '\0';
    }
    if ((rv = openUrl(dir, true, &r, errmsg)) != 0) {
        memset(f, 0, sizeof *f);
        return rv;
    }
    if ((rv = repoOpenFileIn(r, repoNameOf(path), f, errmsg)) != 0) {
        repoClose(r);
        return rv;
    }
    f->own_repo = true;
    return 0;
}

void repoCloseFile(struct repo_file *f)
{
    cbkClose(&f->r);
    repoCloseRead(&f->rd);
    if (f->own_repo) {
        repoClose(f->repo);
        f->own_repo = false;
    }
    f->repo = NULL;
}

/* Fill verified and verified_ms from the sidecar. Any doubt (no sidecar, unreadable,
 * about another file's digest) leaves the backup unverified: the sidecar is a
 * record, not a source of truth. */
static void readVerified(struct repo *repo, struct backup_info *info)
{
    char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
    char hex[2 * BACKUP_DIGEST_SIZE + 1];
    char text[SIDECAR_MAX];
    char ignore[CAIRN_ERRMSG_SIZE];
    json_t *root = NULL;
    const char *state, *digest;
    json_int_t when;
    size_t n;

    info->verified = BACKUP_UNVERIFIED;
    info->verified_ms = 0;
    snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, info->id);
    if (repoGet(repo, name, text, sizeof text, &n, ignore) != 0 || n == 0 ||
        (root = json_loadb(text, n, 0, NULL)) == NULL) {
        return;
    }
    repoHex(info->digest, BACKUP_DIGEST_SIZE, hex);
    if (json_unpack(root, "{s:s, s:I, s:s}", "state", &state, "verified_ms", &when, "digest",
                    &digest) == 0 &&
        strcmp(digest, hex) == 0) {
        if (strcmp(state, "verified") == 0) {
            info->verified = BACKUP_VERIFIED;
            info->verified_ms = when;
        } else if (strcmp(state, "failed") == 0) {
            info->verified = BACKUP_VERIFY_FAILED;
            info->verified_ms = when;
        }
    }
    json_decref(root);
}

int repoWriteVerifiedIn(struct repo *repo, const struct backup_info *info, int state,
                        int64_t when_ms, char *errmsg)
{
    char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
    char hex[2 * BACKUP_DIGEST_SIZE + 1];
    char when[32];
    char text[SIDECAR_MAX];
    int n;

    snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, info->id);
    repoHex(info->digest, BACKUP_DIGEST_SIZE, hex);
    repoIso8601(when_ms, when);
    n = snprintf(text, sizeof text,
                 "{\"id\":\"%s\",\"state\":\"%s\",\"verified_ms\":%lld,\"verified_at\":\"%s\","
                 "\"digest\":\"%s\"}\n",
                 info->id, state == BACKUP_VERIFIED ? "verified" : "failed", (long long)when_ms,
                 when, hex);
    return repoPut(repo, name, text, (size_t)n, errmsg);
}

int repoWriteVerified(const struct backup_info *info, int state, int64_t when_ms, char *errmsg)
{
    char dir[PATH_MAX];
    struct repo *r;
    int rv;
    repoDirOf(info->path, dir);
    if ((rv = repoOpen(dir, &r, errmsg)) != 0) {
        return rv;
    }
    rv = repoWriteVerifiedIn(r, info, state, when_ms, errmsg);
    repoClose(r);
    return rv;
}

void repoInfoFromFile(const struct repo_file *f, struct backup_info *out)
{
    const struct cbk_header *h = &f->r.h;
    memset(out, 0, sizeof *out);
    memcpy(out->id, h->id, BACKUP_ID_SIZE);
    out->type = h->type;
    memcpy(out->parent_id, h->parent_id, BACKUP_ID_SIZE);
    memcpy(out->parent_digest, h->parent_digest, BACKUP_DIGEST_SIZE);
    memcpy(out->digest, f->r.t.digest, BACKUP_DIGEST_SIZE);
    memcpy(out->source, h->source, BACKUP_SOURCE_SIZE);
    out->created_ms = h->created_ms;
    out->raft_index = h->raft_index;
    out->raft_term = h->raft_term;
    out->page_size = h->page_size;
    out->page_count = h->page_count;
    out->pages = f->r.f.pages;
    out->size_bytes = f->r.size;
    out->duration_ms = f->r.f.duration_ms;
    snprintf(out->path, sizeof out->path, "%s", f->path);
    readVerified(f->repo, out);
}

int backupReadInfo(const char *path, struct backup_info *out, char *errmsg)
{
    struct repo_file f;
    int rv = repoOpenFile(path, &f, errmsg);
    if (rv != 0) {
        return rv;
    }
    repoInfoFromFile(&f, out);
    repoCloseFile(&f);
    return 0;
}

/* ---- the catalog ---- */

static int byId(const void *a, const void *b)
{
    const struct backup_info *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c != 0 ? c : strcmp(x->path, y->path);
}

static bool isCbkName(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".cbk") == 0;
}

/* Names and sizes of the `.cbk` objects of a repository, as listed. */
struct names {
    char **name;
    uint64_t *size;
    size_t len, cap;
};

static int collectCbk(void *arg, const char *name, uint64_t size)
{
    struct names *v = arg;
    if (!isCbkName(name)) {
        return 0;
    }
    if (v->len == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        char **n = realloc(v->name, cap * sizeof *n);
        uint64_t *s;
        if (n == NULL) {
            return CAIRN_ENOMEM;
        }
        v->name = n;
        if ((s = realloc(v->size, cap * sizeof *s)) == NULL) {
            return CAIRN_ENOMEM;
        }
        v->size = s;
        v->cap = cap;
    }
    if ((v->name[v->len] = strdup(name)) == NULL) {
        return CAIRN_ENOMEM;
    }
    v->size[v->len++] = size;
    return 0;
}

int repoListIn(struct repo *repo, struct backup_info **out, size_t *n, char *errmsg)
{
    struct names names = {0};
    struct backup_info *v = NULL;
    size_t len = 0;
    int rv;

    *out = NULL;
    *n = 0;
    if ((rv = repoListNames(repo, "", collectCbk, &names, errmsg)) != 0) {
        if (rv == CAIRN_ENOMEM) {
            errorf(errmsg, "out of memory listing %s", repo->url);
        }
        goto out;
    }
    if (names.len > 0 && (v = malloc(names.len * sizeof *v)) == NULL) {
        errorf(errmsg, "out of memory listing %s", repo->url);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < names.len; i++) {
        char why[CAIRN_ERRMSG_SIZE];
        struct backup_info *info = &v[len++];
        struct repo_file f;
        if (repoOpenFileIn(repo, names.name[i], &f, why) == 0) {
            repoInfoFromFile(&f, info);
            repoCloseFile(&f);
        } else {
            /* Listed, marked: the message without the path, which is in the entry. */
            char path[PATH_MAX];
            size_t plen;
            const char *msg = why;
            repoWhere(repo, names.name[i], path);
            plen = strlen(path);
            if (strncmp(why, path, plen) == 0 && why[plen] == ':' && why[plen + 1] == ' ') {
                msg = why + plen + 2;
            }
            memset(info, 0, sizeof *info);
            snprintf(info->id, sizeof info->id, "%.*s", (int)(strlen(names.name[i]) - 4),
                     names.name[i]);
            snprintf(info->path, sizeof info->path, "%s", path);
            snprintf(info->error, sizeof info->error, "%s", msg);
            info->size_bytes = names.size[i];
        }
    }
    if (len > 1) {
        qsort(v, len, sizeof *v, byId);
    }
    *out = v;
    *n = len;
    v = NULL;
out:
    for (size_t i = 0; i < names.len; i++) {
        free(names.name[i]);
    }
    free(names.name);
    free(names.size);
    free(v);
    return rv;
}

int repoList(const char *repo, struct backup_info **out, size_t *n, char *errmsg)
{
    struct repo *r;
    int rv;
    *out = NULL;
    *n = 0;
    if ((rv = repoOpen(repo, &r, errmsg)) != 0) {
        return rv;
    }
    rv = repoListIn(r, out, n, errmsg);
    repoClose(r);
    return rv;
}

int repoFindIn(struct repo *repo, const char *ref, struct backup_info *out, char *errmsg)
{
    struct backup_info *all = NULL;
    char name[BACKUP_ID_SIZE + 8];
    struct repo_file f;
    size_t n = 0;
    int rv;

    if (strchr(ref, '/') != NULL) {
        rv = backupReadInfo(ref, out, errmsg);
        if (rv == CAIRN_ENOTFOUND) {
            errorf(errmsg, "no backup file at %s", ref);
        }
        return rv;
    }
    if (repo != NULL && strcmp(ref, REPO_LATEST) == 0) {
        /* The newest readable backup (ids sort by creation). */
        if ((rv = repoListIn(repo, &all, &n, errmsg)) != 0) {
            return rv;
        }
        for (size_t i = n; i-- > 0;) {
            if (all[i].error[0] == '\0') {
                *out = all[i];
                free(all);
                return 0;
            }
        }
        free(all);
        errorf(errmsg, "no readable backup in %s to be \"%s\"", repo->url, REPO_LATEST);
        return CAIRN_ENOTFOUND;
    }
    if (repo == NULL || !cbkIdValid(ref)) {
        errorf(errmsg, "no backup with id \"%s\"%s%s", ref, repo ? " in " : "",
               repo ? repo->url : "");
        return CAIRN_ENOTFOUND;
    }
    snprintf(name, sizeof name, "%s.cbk", ref);
    rv = repoOpenFileIn(repo, name, &f, errmsg);
    if (rv == 0) {
        repoInfoFromFile(&f, out);
        repoCloseFile(&f);
        if (strcmp(out->id, ref) != 0) {
            errorf(errmsg, "%s: holds backup %s, not %s", out->path, out->id, ref);
            return CAIRN_ECORRUPT;
        }
        return 0;
    }
    if (rv != CAIRN_ENOTFOUND) {
        return rv;
    }
    /* Not under its usual name: a file renamed by hand still counts. */
    if ((rv = repoListIn(repo, &all, &n, errmsg)) != 0) {
        return rv;
    }
    for (size_t i = 0; i < n; i++) {
        if (all[i].error[0] == '\0' && strcmp(all[i].id, ref) == 0) {
            *out = all[i];
            free(all);
            return 0;
        }
    }
    free(all);
    errorf(errmsg, "no backup with id %s in %s", ref, repo->url);
    return CAIRN_ENOTFOUND;
}

int repoFind(const char *repo, const char *ref, struct backup_info *out, char *errmsg)
{
    struct repo *r = NULL;
    int rv;
    /* A path names its file wherever it is; repo is not needed then. */
    if (strchr(ref, '/') == NULL && repo != NULL && (rv = repoOpen(repo, &r, errmsg)) != 0) {
        return rv;
    }
    rv = repoFindIn(r, ref, out, errmsg);
    repoClose(r);
    return rv;
}

int repoCopyObject(struct repo *from, struct repo *to, const char *name, char *errmsg)
{
    struct repo_reader rd;
    struct repo_writer *w = NULL;
    unsigned char *buf = NULL;
    int rv = repoOpenRead(from, name, &rd, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((buf = malloc(1u << 20)) == NULL) {
        errorf(errmsg, "out of memory copying %s", name);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if ((rv = repoCreate(to, name, &w, errmsg)) != 0) {
        goto out;
    }
    for (uint64_t off = 0; off < rd.size && rv == 0;) {
        size_t n = rd.size - off < (1u << 20) ? (size_t)(rd.size - off) : (1u << 20);
        int err = rd.io.read(rd.io.arg, off, buf, n);
        if (err != 0) {
            char where[PATH_MAX];
            repoWhere(from, name, where);
            errorf(errmsg, "read %s at offset %llu: %s", where, (unsigned long long)off,
                   strerror(err));
            rv = errorFromErrno(err);
        } else {
            rv = repoWrite(w, buf, n, errmsg);
        }
        off += n;
    }
    if (rv == 0) {
        rv = repoCommit(w, errmsg); /* frees w */
    } else {
        repoAbort(w);
    }
out:
    free(buf);
    repoCloseRead(&rd);
    return rv;
}
