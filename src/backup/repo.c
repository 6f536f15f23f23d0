/* The repository object and the catalog of a backup repository: which `.cbk` objects a
 * repository holds, what their headers and footers say, and whether the last
 * verification passed (the `<id>.verified` sidecar beside each object).
 *
 * A repository is opened from a URL (repoOpen) and reached only through its driver's
 * table (repo_driver.h): the engine makes no POSIX call on a repository. The posix
 * driver is repo_posix.c; the S3 driver is repo_s3.c.
 *
 * Everything here is derived from the objects themselves, read without trusting them
 * (cbk.c checks every field): restoring a database never rewinds its catalog, and a
 * damaged object is listed with its error rather than hidden. Objects are never
 * rewritten; only sidecars are, replaced whole, and the catalog index of a remote
 * repository (catidx.h), a cache the listing checks against the LIST (see "The listing
 * of a catalog" below).
 *
 * Any thread. A repository handle's only state that changes is the listing it keeps
 * for a few seconds (repoFindIn), under its mutex. A listing of a remote repository
 * reads objects on threads of its own, joined before it returns. */
#define _GNU_SOURCE
#include "repo.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catidx.h"
#include "error.h"
#include "lib.h"
#include "repo_driver.h"
#include "s3.h"

#define SIDECAR_SUFFIX ".verified"
#define SIDECAR_MAX 4096
/* The longest object name the engine writes, `<id>.verified`, with room to spare: a
 * repository's directory leaves this much of BACKUP_PATH_SIZE to its objects. */
#define REPO_NAME_ROOM 48

/* A listing kept for the lookups that follow it (repoFindIn): a restore resolves a
 * chain by id, parent after parent; each lookup opened its file (a GET of its head,
 * another of its footer) and read its sidecar, in a row, 3 requests a backup before
 * the first byte was restored (33 for a full backup and 10 incrementals), and the
 * restore opened every file again. A lookup by id in a repository without a local
 * path now lists it (a LIST and the catalog index's GET, when the index is current)
 * unless a listing made through the same handle in the last few seconds is kept, and
 * takes the entry from there. Kept only for a repository without a local path (a
 * directory's files cost no round trip), only a short while (what was listed is
 * checked again when the file is opened: repoOpenFileIn's checks, and the digest the
 * chain was resolved with), only for a catalog of a few entries (memory: a larger one
 * is not listed for a lookup again through that handle, and its LIST stops at the
 * first page that shows too many), and dropped by a put or a remove through the same
 * handle. */
#define LISTING_KEEP_MS 10000
#define LISTING_KEEP_MAX 256

struct repo {
    char *url;
    void *drv;
    const struct repo_driver *ops;
    pthread_mutex_t mu; /* guards the kept listing: the handle may be shared */
    struct backup_info *kept;
    size_t nkept;
    int64_t kept_ms; /* repoMonoMs when listed */
    bool too_large;  /* a listing found more than LISTING_KEEP_MAX backups */
};

/* Forget the kept listing (a put or a remove may have changed what it says). */
static void listingForget(struct repo *r)
{
    pthread_mutex_lock(&r->mu);
    free(r->kept);
    r->kept = NULL;
    r->nkept = 0;
    pthread_mutex_unlock(&r->mu);
}

/* Keep a copy of a listing of n entries taken at `when` (repoMonoMs), when it is small
 * and the repository remote. Best effort: no memory, nothing kept. */
static void listingKeep(struct repo *r, const struct backup_info *v, size_t n, int64_t when)
{
    struct backup_info *copy = NULL;
    if (repoLocalPath(r) != NULL) {
        return;
    }
    if (n > LISTING_KEEP_MAX) {
        pthread_mutex_lock(&r->mu);
        r->too_large = true;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    /* Never NULL when kept, even empty: a repository without backups is listed once. */
    if ((copy = malloc((n > 0 ? n : 1) * sizeof *copy)) == NULL) {
        return;
    }
    if (n > 0) {
        memcpy(copy, v, n * sizeof *copy);
    }
    pthread_mutex_lock(&r->mu);
    free(r->kept);
    r->kept = copy;
    r->nkept = n;
    r->kept_ms = when;
    pthread_mutex_unlock(&r->mu);
}

/* The readable entry of backup `id` under its own name (`<id>.cbk`) in the kept
 * listing, if it is recent: true and *out filled, else false. */
static bool listingFind(struct repo *r, const char *id, struct backup_info *out)
{
    char name[BACKUP_ID_SIZE + 8];
    bool found = false;
    snprintf(name, sizeof name, "%s.cbk", id);
    pthread_mutex_lock(&r->mu);
    if (r->kept != NULL && repoMonoMs() - r->kept_ms <= LISTING_KEEP_MS) {
        for (size_t i = 0; i < r->nkept && !found; i++) {
            if (r->kept[i].error[0] == '\0' && strcmp(r->kept[i].id, id) == 0 &&
                strcmp(repoNameOf(r->kept[i].path), name) == 0) {
                *out = r->kept[i];
                found = true;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

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
    libIso8601(ms, LIB_ISO8601_MS, out);
}

void repoHex(const unsigned char *p, size_t n, char *out)
{
    libHexEncode(p, n, out);
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
    pthread_mutex_init(&r->mu, NULL);
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
    if (rv == 0 && r->ops->localPath != NULL && r->ops->localPath(r->drv) != NULL &&
        strlen(r->ops->localPath(r->drv)) + 1 + REPO_NAME_ROOM >= BACKUP_PATH_SIZE) {
        /* A catalog entry holds its object's path in BACKUP_PATH_SIZE bytes: refused
         * here rather than cut there. */
        errorf(errmsg, "repository path too long (%zu bytes; at most %d): %s",
               strlen(r->ops->localPath(r->drv)), BACKUP_PATH_SIZE - 2 - REPO_NAME_ROOM, url);
        r->ops->close(r->drv);
        rv = CAIRN_EINVAL;
    }
    if (rv != 0) {
        pthread_mutex_destroy(&r->mu);
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
    free(r->kept);
    pthread_mutex_destroy(&r->mu);
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
    listingForget(r);
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
    if (strcmp(name, CATIDX_NAME) != 0) {
        listingForget(r); /* a sidecar: the kept entries' verified state may change */
    }
    return r->ops->put(r->drv, name, buf, len, errmsg);
}

void repoSweepTempIn(struct repo *repo, unsigned *removed)
{
    *removed = 0;
    repo->ops->sweep(repo->drv, removed);
}

void repoStopTransfers(bool on)
{
    s3StopAll(on);
}

bool repoTransfersStopped(void)
{
    return s3StopAllOn();
}

void repoStopTransfersExempt(void)
{
    s3StopAllExempt();
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
    if (strlen(f->path) >= BACKUP_PATH_SIZE) {
        errorf(errmsg, "path too long for a catalog entry (%zu bytes; at most %d): %s",
               strlen(f->path), BACKUP_PATH_SIZE - 1, f->path);
        return CAIRN_EINVAL;
    }
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

/* What a sidecar's text says: *state BACKUP_VERIFIED or BACKUP_VERIFY_FAILED, when
 * and about which file (digest); *state BACKUP_UNVERIFIED when it says nothing usable
 * (not JSON, fields missing, an unknown state, a digest that is not 32 hex digits). */
static void parseVerified(const char *text, size_t n, int *state, int64_t *when_ms,
                          unsigned char digest[BACKUP_DIGEST_SIZE])
{
    json_t *root;
    const char *st, *hex;
    json_int_t when;

    *state = BACKUP_UNVERIFIED;
    *when_ms = 0;
    memset(digest, 0, BACKUP_DIGEST_SIZE);
    if (n == 0 || (root = json_loadb(text, n, 0, NULL)) == NULL) {
        return;
    }
    if (json_unpack(root, "{s:s, s:I, s:s}", "state", &st, "verified_ms", &when, "digest", &hex) ==
            0 &&
        strlen(hex) == 2 * BACKUP_DIGEST_SIZE &&
        strspn(hex, "0123456789abcdef") == 2 * BACKUP_DIGEST_SIZE &&
        (strcmp(st, "verified") == 0 || strcmp(st, "failed") == 0)) {
        for (size_t i = 0; i < BACKUP_DIGEST_SIZE; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            digest[i] = (unsigned char)v;
        }
        *state = strcmp(st, "verified") == 0 ? BACKUP_VERIFIED : BACKUP_VERIFY_FAILED;
        *when_ms = when;
    }
    json_decref(root);
}

/* Set info's verified state from what its sidecar says. Any doubt (no sidecar,
 * unreadable, about another file's digest) leaves the backup unverified: the sidecar
 * is a record, not a source of truth. */
static void applyVerified(struct backup_info *info, int state, int64_t when_ms,
                          const unsigned char digest[BACKUP_DIGEST_SIZE])
{
    bool mine = state != BACKUP_UNVERIFIED && memcmp(digest, info->digest, BACKUP_DIGEST_SIZE) == 0;
    info->verified = mine ? state : BACKUP_UNVERIFIED;
    info->verified_ms = mine ? when_ms : 0;
}

/* Fill verified and verified_ms from the sidecar `<id>.verified`. */
static void readVerified(struct repo *repo, struct backup_info *info)
{
    char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
    char text[SIDECAR_MAX];
    char ignore[CAIRN_ERRMSG_SIZE];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    int64_t when;
    int state;
    size_t n;

    snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, info->id);
    if (repoGet(repo, name, text, sizeof text, &n, ignore) != 0) {
        n = 0;
    }
    parseVerified(text, n, &state, &when, digest);
    applyVerified(info, state, when, digest);
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

/* repoInfoFromFile without the sidecar: what the file itself says. */
static void infoFromFile(const struct repo_file *f, struct backup_info *out)
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
    memcpy(out->history, h->history, BACKUP_HISTORY_SIZE);
    out->codec = h->codec;
}

void repoInfoFromFile(const struct repo_file *f, struct backup_info *out)
{
    infoFromFile(f, out);
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

/* The listing of a catalog (repoListIn), in four steps:
 *
 *  1. LIST: every object's name, size and version (the driver's). The listing is the
 *     truth of what exists: an entry for every `.cbk` listed, none for anything else.
 *  2. The index (catidx.h, `catalog.idx`), for a repository without a local path (or
 *     any, with CAIRN_CATALOG_INDEX=on): one GET. What it remembers of an object is
 *     used only when the object is listed now under the same name, version and size;
 *     a missing, damaged or foreign index is an empty one.
 *  3. Every `.cbk` the index does not vouch for is opened and its header, footer and
 *     trailer checked (cbkOpen), and every sidecar a backup needs that the index does
 *     not hold is read: CATALOG_READERS at a time for a remote repository, since each
 *     costs round trips, one after another for local files.
 *  4. When anything was read, or the index held entries no longer listed, a new index
 *     is written (last writer wins; a failure is ignored: it is a cache). Only what
 *     an object's bytes decide goes into it: a backup's fields, the message of a file
 *     that does not check out (CAIRN_ECORRUPT), a sidecar's content; never an I/O
 *     error, which the next listing tries again.
 *
 * A sidecar counts only when listed: a backup with no `<id>.verified` in the listing
 * is unverified without a request. Memory: the listed names, the index, and the
 * entries (struct backup_info) the caller gets. */

#define CATALOG_READERS 8

/* Where a catalog entry came from (struct listing's state). */
enum { FROM_NOTHING, FROM_INDEX, FROM_FILE, FROM_FILE_DAMAGED, FROM_FAILURE };

/* One listed object. */
struct lobj {
    char *name;
    char *version; /* NULL: the driver gave none (never taken from the index) */
    uint64_t size;
    long slot; /* a `.cbk`: its catalog entry; else -1 */
    /* A sidecar, once a backup needed it. */
    bool sc_wanted; /* to be read */
    bool sc_known;  /* sc_state, sc_ms and sc_digest say what it holds */
    bool sc_cache;  /* known from its content (the index may keep it) */
    int sc_state;
    int64_t sc_ms;
    unsigned char sc_digest[BACKUP_DIGEST_SIZE];
};

struct listing {
    struct repo *repo;
    size_t max_cbk; /* stop the LIST past this many `.cbk` objects (0: never) */
    size_t ncbk;
    struct lobj *o; /* sorted by name once listed */
    size_t n, cap;
    struct backup_info *v; /* the entries, one per `.cbk` */
    size_t *obj_of;        /* v[i] is object o[obj_of[i]] */
    unsigned char *from;   /* FROM_* of v[i] */
    size_t nv;
};

/* What collectAll returns to stop a LIST that found more backups than wanted. */
#define TOO_MANY (-1)

static int collectAll(void *arg, const char *name, uint64_t size, const char *version)
{
    struct listing *L = arg;
    struct lobj *o;
    if (L->max_cbk > 0 && isCbkName(name) && ++L->ncbk > L->max_cbk) {
        return TOO_MANY;
    }
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 64;
        struct lobj *grown = realloc(L->o, cap * sizeof *grown);
        if (grown == NULL) {
            return CAIRN_ENOMEM;
        }
        L->o = grown;
        L->cap = cap;
    }
    o = &L->o[L->n];
    memset(o, 0, sizeof *o);
    o->slot = -1;
    o->size = size;
    if ((o->name = strdup(name)) == NULL ||
        (version != NULL && (o->version = strdup(version)) == NULL)) {
        free(o->name);
        return CAIRN_ENOMEM;
    }
    L->n++;
    return 0;
}

static int lobjByName(const void *a, const void *b)
{
    return strcmp(((const struct lobj *)a)->name, ((const struct lobj *)b)->name);
}

/* The listed object called name, or NULL. */
static struct lobj *findObj(const struct listing *L, const char *name)
{
    struct lobj key;
    key.name = (char *)name;
    return L->n > 0 ? bsearch(&key, L->o, L->n, sizeof *L->o, lobjByName) : NULL;
}

/* CAIRN_CATALOG_INDEX: whether listings of repo use the index. */
static int indexWanted(struct repo *repo, bool *use, char *errmsg)
{
    const char *v = getenv("CAIRN_CATALOG_INDEX");
    if (v == NULL || v[0] == '\0' || strcmp(v, "auto") == 0) {
        *use = repoLocalPath(repo) == NULL;
    } else if (strcmp(v, "on") == 0) {
        *use = true;
    } else if (strcmp(v, "off") == 0) {
        *use = false;
    } else {
        errorf(errmsg,
               "CAIRN_CATALOG_INDEX=%s: expected auto (the default: the index of "
               "repositories without a local path, such as S3), on or off",
               v);
        return CAIRN_EINVAL;
    }
    return 0;
}

/* The index as listed, decoded; NULL when there is none or it does not check out. */
static struct catidx *loadIndex(struct listing *L)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    const struct lobj *o = findObj(L, CATIDX_NAME);
    struct catidx *idx = NULL;
    unsigned char *buf;
    size_t got;
    if (o == NULL || o->size == 0 || o->size > CATIDX_MAX_BODY) {
        return NULL;
    }
    if ((buf = malloc((size_t)o->size)) == NULL) {
        return NULL;
    }
    if (repoGet(L->repo, CATIDX_NAME, buf, (size_t)o->size, &got, ignore) == 0) {
        (void)catidxDecode(buf, got, &idx, ignore);
    }
    free(buf);
    return idx;
}

/* The entry of a `.cbk` that cannot be read: named by its object name (less
 * ".cbk"), with its listed size. */
static void damagedIdentity(struct listing *L, size_t i)
{
    struct backup_info *info = &L->v[i];
    const struct lobj *o = &L->o[L->obj_of[i]];
    snprintf(info->id, sizeof info->id, "%.*s", (int)(strlen(o->name) - 4), o->name);
    info->size_bytes = o->size;
}

/* The same, with why it cannot be read: the message without the path, which is in
 * the entry. */
static void markDamaged(struct listing *L, size_t i, const char *why)
{
    struct backup_info *info = &L->v[i];
    size_t plen = strlen(info->path);
    const char *msg = why;
    if (strncmp(why, info->path, plen) == 0 && why[plen] == ':' && why[plen + 1] == ' ') {
        msg = why + plen + 2;
    }
    snprintf(info->error, sizeof info->error, "%s", msg);
    damagedIdentity(L, i);
}

/* Step 3 for entry i: open the `.cbk` and check it. Any thread (one per entry). */
static void readEntry(struct listing *L, size_t i)
{
    struct backup_info *info = &L->v[i];
    char why[CAIRN_ERRMSG_SIZE];
    struct repo_file f;
    int rv = repoOpenFileIn(L->repo, L->o[L->obj_of[i]].name, &f, why);
    if (rv == 0) {
        infoFromFile(&f, info);
        repoCloseFile(&f);
        L->from[i] = FROM_FILE;
    } else {
        markDamaged(L, i, why);
        L->from[i] = rv == CAIRN_ECORRUPT ? FROM_FILE_DAMAGED : FROM_FAILURE;
    }
}

/* Step 3 for a sidecar: read and parse it. Any thread (one per object). */
static void readSidecar(struct listing *L, size_t j)
{
    struct lobj *o = &L->o[j];
    char text[SIDECAR_MAX];
    char ignore[CAIRN_ERRMSG_SIZE];
    size_t n = 0;
    int rv = repoGet(L->repo, o->name, text, sizeof text, &n, ignore);
    parseVerified(text, rv == 0 ? n : 0, &o->sc_state, &o->sc_ms, o->sc_digest);
    o->sc_cache = rv == 0;
    o->sc_known = true;
}

/* Run fn(L, items[k]) for every k, on up to `threads` threads (the caller's one of
 * them); with fewer threads than asked for (pthread_create failing), the caller's
 * does the rest. */
struct work {
    struct listing *L;
    void (*fn)(struct listing *L, size_t item);
    const size_t *items;
    size_t n;
    size_t next; /* __atomic */
};

static void *worker(void *arg)
{
    struct work *w = arg;
    size_t k;
    while ((k = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) < w->n) {
        w->fn(w->L, w->items[k]);
    }
    return NULL;
}

static void runAll(struct work *w, unsigned threads)
{
    pthread_t t[CATALOG_READERS];
    unsigned started = 0;
    if (threads > CATALOG_READERS) {
        threads = CATALOG_READERS;
    }
    while (started + 1 < threads && started + 1 < w->n &&
           pthread_create(&t[started], NULL, worker, w) == 0) {
        started++;
    }
    worker(w);
    for (unsigned k = 0; k < started; k++) {
        pthread_join(t[k], NULL);
    }
}

/* Step 4: the index of what this listing knows from content. Best effort. */
static void writeIndex(struct listing *L)
{
    char ignore[CAIRN_ERRMSG_SIZE];
    struct catidx_put *put = malloc((L->n > 0 ? L->n : 1) * sizeof *put);
    struct backup_info *sc = NULL;
    unsigned char *obj = NULL;
    size_t k = 0, nsc = 0, len;
    if (put == NULL) {
        return;
    }
    for (size_t j = 0; j < L->n; j++) {
        nsc += L->o[j].sc_known && L->o[j].sc_cache;
    }
    /* The sidecars' fields, in backup_info's shape for catidxEncode. */
    if (nsc > 0 && (sc = calloc(nsc, sizeof *sc)) == NULL) {
        free(put);
        return;
    }
    nsc = 0;
    for (size_t j = 0; j < L->n; j++) {
        const struct lobj *o = &L->o[j];
        struct catidx_put *p = &put[k];
        if (o->version == NULL) {
            continue;
        }
        p->name = o->name;
        p->version = o->version;
        p->size = o->size;
        if (o->slot >= 0) {
            int from = L->from[o->slot];
            if (from != FROM_INDEX && from != FROM_FILE && from != FROM_FILE_DAMAGED) {
                continue;
            }
            p->info = &L->v[o->slot];
            p->kind = p->info->error[0] != '\0' ? CATIDX_DAMAGED : CATIDX_BACKUP;
            k++;
        } else if (o->sc_known && o->sc_cache) {
            struct backup_info *s = &sc[nsc++];
            s->verified = o->sc_state;
            s->verified_ms = o->sc_ms;
            memcpy(s->digest, o->sc_digest, BACKUP_DIGEST_SIZE);
            p->info = s;
            p->kind = CATIDX_SIDECAR;
            k++;
        }
    }
    if (catidxEncode(put, k, &obj, &len, ignore) == 0) {
        (void)repoPut(L->repo, CATIDX_NAME, obj, len, ignore);
    }
    free(obj);
    free(sc);
    free(put);
}

static void freeListing(struct listing *L)
{
    for (size_t j = 0; j < L->n; j++) {
        free(L->o[j].name);
        free(L->o[j].version);
    }
    free(L->o);
    free(L->v);
    free(L->obj_of);
    free(L->from);
}

/* repoListIn; max_cbk > 0, a listing for a lookup (listingFill): give up (*n 0,
 * *too_many true, 0 returned) as soon as the LIST has shown more than max_cbk backups,
 * read no object but the index, and write none: a backup the index does not vouch
 * for, or whose listed sidecar it does not hold, is an entry with an error, which a
 * lookup does not take (it opens that file as before). A lookup so costs a LIST and the
 * index's GET, not the reading of a catalog's new files on 8 threads (memory, in a
 * restore: their buffers and malloc arenas). */
static int listIn(struct repo *repo, size_t max_cbk, struct backup_info **out, size_t *n,
                  bool *too_many, char *errmsg)
{
    struct listing L = {.repo = repo, .max_cbk = max_cbk};
    struct catidx *idx = NULL;
    size_t *todo = NULL, ntodo = 0, used = 0;
    bool use_index, remote = repoLocalPath(repo) == NULL;
    unsigned threads = remote ? CATALOG_READERS : 1;
    int64_t when = repoMonoMs();
    struct work w;
    int rv;

    *out = NULL;
    *n = 0;
    *too_many = false;
    if ((rv = indexWanted(repo, &use_index, errmsg)) != 0) {
        return rv;
    }
    /* 1. */
    if ((rv = repoListNames(repo, "", collectAll, &L, errmsg)) != 0) {
        if (rv == TOO_MANY) {
            *too_many = true;
            rv = 0;
            goto out;
        }
        if (rv == CAIRN_ENOMEM) {
            goto oom;
        }
        goto out;
    }
    if (L.n > 1) {
        qsort(L.o, L.n, sizeof *L.o, lobjByName);
    }
    for (size_t j = 0; j < L.n; j++) {
        if (isCbkName(L.o[j].name)) {
            L.o[j].slot = (long)L.nv++;
        }
    }
    /* 2. */
    if (use_index) {
        idx = loadIndex(&L);
    }
    if (L.nv > 0 &&
        ((L.v = calloc(L.nv, sizeof *L.v)) == NULL ||
         (L.obj_of = malloc(L.nv * sizeof *L.obj_of)) == NULL ||
         (L.from = calloc(L.nv, 1)) == NULL || (todo = malloc(L.n * sizeof *todo)) == NULL)) {
        goto oom;
    }
    for (size_t j = 0; j < L.n; j++) {
        const struct lobj *o = &L.o[j];
        struct backup_info *info;
        char where[PATH_MAX];
        size_t at;
        int kind;
        if (o->slot < 0) {
            continue;
        }
        L.obj_of[o->slot] = j;
        info = &L.v[o->slot];
        repoWhere(repo, o->name, where);
        snprintf(info->path, sizeof info->path, "%s", where);
        /* (A path too long for the entry is refused by repoOpenFileIn, which says so.) */
        kind = strlen(where) < sizeof info->path
                   ? catidxFind(idx, o->name, o->version, o->size, &at)
                   : 0;
        if (kind == CATIDX_BACKUP || kind == CATIDX_DAMAGED) {
            if (kind == CATIDX_DAMAGED) {
                damagedIdentity(&L, (size_t)o->slot);
            }
            catidxFill(idx, at, info);
            info->size_bytes = o->size;
            L.from[o->slot] = FROM_INDEX;
            used++;
        } else {
            todo[ntodo++] = (size_t)o->slot;
        }
    }
    /* 3: the backups ... (for a lookup, max_cbk > 0: none; what the index does not
     * vouch for is left to the lookup, which opens the one it wants) */
    if (max_cbk > 0) {
        for (size_t k = 0; k < ntodo; k++) {
            snprintf(L.v[todo[k]].error, sizeof L.v[todo[k]].error, "not in the index");
        }
        ntodo = 0;
    }
    w = (struct work){&L, readEntry, todo, ntodo, 0};
    runAll(&w, threads);
    /* ... then the sidecars they need. */
    {
        size_t ncbk = ntodo;
        ntodo = 0;
        for (size_t i = 0; i < L.nv; i++) {
            char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
            struct lobj *o;
            size_t at;
            if (L.v[i].error[0] != '\0') {
                continue;
            }
            snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, L.v[i].id);
            if ((o = findObj(&L, name)) == NULL || o->sc_known || o->sc_wanted) {
                continue;
            }
            if (catidxFind(idx, o->name, o->version, o->size, &at) == CATIDX_SIDECAR) {
                struct backup_info s;
                catidxFill(idx, at, &s);
                o->sc_state = s.verified;
                o->sc_ms = s.verified_ms;
                memcpy(o->sc_digest, s.digest, BACKUP_DIGEST_SIZE);
                o->sc_known = o->sc_cache = true;
                used++;
            } else if (max_cbk > 0) {
                snprintf(L.v[i].error, sizeof L.v[i].error, "sidecar not in the index");
            } else {
                o->sc_wanted = true;
                todo[ntodo++] = (size_t)(o - L.o);
            }
        }
        w = (struct work){&L, readSidecar, todo, ntodo, 0};
        runAll(&w, threads);
        for (size_t i = 0; i < L.nv; i++) {
            char name[BACKUP_ID_SIZE + sizeof SIDECAR_SUFFIX];
            const struct lobj *o;
            if (L.v[i].error[0] != '\0') {
                continue;
            }
            snprintf(name, sizeof name, "%s" SIDECAR_SUFFIX, L.v[i].id);
            if ((o = findObj(&L, name)) != NULL && o->sc_known) {
                applyVerified(&L.v[i], o->sc_state, o->sc_ms, o->sc_digest);
            }
        }
        /* 4. */
        if (use_index && max_cbk == 0 && (ncbk > 0 || ntodo > 0 || used != catidxCount(idx))) {
            writeIndex(&L);
        }
    }
    if (L.nv > 1) {
        qsort(L.v, L.nv, sizeof *L.v, byId);
    }
    listingKeep(repo, L.v, L.nv, when);
    *out = L.v;
    *n = L.nv;
    L.v = NULL;
    goto out;
oom:
    errorf(errmsg, "out of memory listing %s", repo->url);
    rv = CAIRN_ENOMEM;
out:
    catidxFree(idx);
    free(todo);
    freeListing(&L);
    return rv;
}

int repoListIn(struct repo *repo, struct backup_info **out, size_t *n, char *errmsg)
{
    bool too_many;
    return listIn(repo, 0, out, n, &too_many, errmsg);
}

/* For a lookup by id in a remote repository that keeps no recent listing: list it, to
 * be kept (a chain's lookups follow), unless it holds more backups than a listing
 * kept may (then never again through this handle). Best effort: a failure leaves the
 * lookup to open the file. */
static void listingFill(struct repo *r)
{
    struct backup_info *all = NULL;
    char ignore[CAIRN_ERRMSG_SIZE];
    bool too_many = false, skip;
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    skip = r->too_large || (r->kept != NULL && repoMonoMs() - r->kept_ms <= LISTING_KEEP_MS);
    pthread_mutex_unlock(&r->mu);
    if (skip || repoLocalPath(r) != NULL) {
        return;
    }
    if (listIn(r, LISTING_KEEP_MAX, &all, &n, &too_many, ignore) == 0 && too_many) {
        pthread_mutex_lock(&r->mu);
        r->too_large = true;
        pthread_mutex_unlock(&r->mu);
    }
    free(all);
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
    if (listingFind(repo, ref, out)) {
        return 0;
    }
    listingFill(repo);
    if (listingFind(repo, ref, out)) {
        return 0;
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

int repoCopyObject(struct repo *from, const char *from_name, struct repo *to, const char *name,
                   char *errmsg)
{
    struct repo_reader rd;
    struct repo_writer *w = NULL;
    unsigned char *buf = NULL;
    int rv = repoOpenRead(from, from_name, &rd, errmsg);
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
            repoWhere(from, from_name, where);
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
