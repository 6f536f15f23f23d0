/* The catalog of a backup repository: which `.cbk` files a directory holds, what
 * their headers and footers say, and whether the last verification passed (the
 * `<id>.verified` sidecar beside each file).
 *
 * Everything here is derived from the files themselves, read without trusting them
 * (cbk.c checks every field): restoring a database never rewinds its catalog, and a
 * damaged file is listed with its error rather than hidden. Files are never
 * rewritten; only sidecars are, by tmp + rename.
 *
 * Any thread; no shared state. */
#define _GNU_SOURCE
#include "repo.h"

#include <dirent.h>
#include <errno.h>
#include <sys/file.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"

#define SIDECAR_SUFFIX ".verified"
#define SIDECAR_MAX 4096

int64_t repoNowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t repoMonoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

static int fdRead(void *arg, uint64_t off, void *buf, size_t n)
{
    int fd = *(int *)arg;
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (got == 0) {
            return EIO; /* the file shrank since its size was taken */
        }
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

int repoOpenFile(const char *path, struct repo_file *f, char *errmsg)
{
    struct stat st;
    int rv;
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) {
        errorf(errmsg, "path too long: %s", path);
        return CAIRN_EINVAL;
    }
    strcpy(f->path, path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        errorf(errmsg, "open %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if (fstat(f->fd, &st) != 0) {
        errorf(errmsg, "stat %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        errorf(errmsg, "%s: not a regular file", path);
        rv = CAIRN_EINVAL;
        goto err;
    }
    f->io.read = fdRead;
    f->io.arg = &f->fd;
    if ((rv = cbkOpen(&f->r, &f->io, (uint64_t)st.st_size, f->path, errmsg)) != 0) {
        goto err;
    }
    return 0;
err:
    close(f->fd);
    f->fd = -1;
    return rv;
}

void repoCloseFile(struct repo_file *f)
{
    cbkClose(&f->r);
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}

static void sidecarPath(const struct backup_info *info, char *out)
{
    char dir[PATH_MAX];
    repoDirOf(info->path, dir);
    snprintf(out, PATH_MAX, "%s/%s" SIDECAR_SUFFIX, dir, info->id);
}

/* Fill verified and verified_ms from the sidecar. Any doubt (no sidecar, unreadable,
 * about another file's digest) leaves the backup unverified: the sidecar is a
 * record, not a source of truth. */
static void readVerified(struct backup_info *info)
{
    char path[PATH_MAX];
    char hex[2 * BACKUP_DIGEST_SIZE + 1];
    char text[SIDECAR_MAX];
    json_t *root = NULL;
    const char *state, *digest;
    json_int_t when;
    ssize_t n;
    int fd;

    info->verified = BACKUP_UNVERIFIED;
    info->verified_ms = 0;
    sidecarPath(info, path);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        return;
    }
    n = read(fd, text, sizeof text);
    close(fd);
    if (n <= 0 || (root = json_loadb(text, (size_t)n, 0, NULL)) == NULL) {
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

int repoWriteVerified(const struct backup_info *info, int state, int64_t when_ms, char *errmsg)
{
    char path[PATH_MAX], tmp[PATH_MAX + 16];
    char hex[2 * BACKUP_DIGEST_SIZE + 1];
    char when[32];
    char text[SIDECAR_MAX];
    int fd = -1, n, rv;

    sidecarPath(info, path);
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    /* The temporary name starts like the sidecar's: make it hidden. */
    {
        char *slash = strrchr(tmp, '/');
        char name[PATH_MAX];
        snprintf(name, sizeof name, "%s", slash + 1);
        snprintf(slash + 1, sizeof tmp - (size_t)(slash + 1 - tmp), ".%s", name);
    }
    repoHex(info->digest, BACKUP_DIGEST_SIZE, hex);
    repoIso8601(when_ms, when);
    n = snprintf(text, sizeof text,
                 "{\"id\":\"%s\",\"state\":\"%s\",\"verified_ms\":%lld,\"verified_at\":\"%s\","
                 "\"digest\":\"%s\"}\n",
                 info->id, state == BACKUP_VERIFIED ? "verified" : "failed", (long long)when_ms,
                 when, hex);
    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
        errorf(errmsg, "create %s: %s", tmp, strerror(errno));
        return errorFromErrno(errno);
    }
    errno = 0;
    if (fchmod(fd, 0644) != 0 || write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
        int err = errno ? errno : EIO;
        errorf(errmsg, "write %s: %s", tmp, strerror(err));
        rv = errorFromErrno(err);
        goto err;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        errorf(errmsg, "rename %s to %s: %s", tmp, path, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    return syncParentDir(path, errmsg);
err:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
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
    readVerified(out);
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

int repoList(const char *repo, struct backup_info **out, size_t *n, char *errmsg)
{
    struct backup_info *v = NULL, *grown;
    size_t len = 0, cap = 0;
    struct dirent *e;
    DIR *d;
    int rv = 0;

    *out = NULL;
    *n = 0;
    if ((d = opendir(repo)) == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        errorf(errmsg, "open the repository %s: %s", repo, strerror(errno));
        return errorFromErrno(errno);
    }
    while ((errno = 0, e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        char why[CAIRN_ERRMSG_SIZE];
        struct backup_info *info;
        struct stat st;
        if (!isCbkName(e->d_name)) {
            continue;
        }
        if ((size_t)snprintf(path, sizeof path, "%s/%s", repo, e->d_name) >= sizeof path ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (len == cap) {
            cap = cap ? 2 * cap : 16;
            if ((grown = realloc(v, cap * sizeof *v)) == NULL) {
                errorf(errmsg, "out of memory listing %s", repo);
                rv = CAIRN_ENOMEM;
                goto err;
            }
            v = grown;
        }
        info = &v[len++];
        if (backupReadInfo(path, info, why) != 0) {
            /* Listed, marked: the message without the path, which is in the entry. */
            size_t plen = strlen(path);
            const char *msg = why;
            if (strncmp(why, path, plen) == 0 && why[plen] == ':' && why[plen + 1] == ' ') {
                msg = why + plen + 2;
            }
            memset(info, 0, sizeof *info);
            snprintf(info->id, sizeof info->id, "%.*s", (int)(strlen(e->d_name) - 4), e->d_name);
            snprintf(info->path, sizeof info->path, "%s", path);
            snprintf(info->error, sizeof info->error, "%s", msg);
            info->size_bytes = (uint64_t)st.st_size;
        }
    }
    if (errno != 0) {
        errorf(errmsg, "read the repository %s: %s", repo, strerror(errno));
        rv = errorFromErrno(errno);
        goto err;
    }
    closedir(d);
    if (len > 1) {
        qsort(v, len, sizeof *v, byId);
    }
    *out = v;
    *n = len;
    return 0;
err:
    closedir(d);
    free(v);
    return rv;
}

int repoFind(const char *repo, const char *ref, struct backup_info *out, char *errmsg)
{
    struct backup_info *all = NULL;
    char path[PATH_MAX];
    size_t n = 0;
    int rv;

    if (strchr(ref, '/') != NULL) {
        rv = backupReadInfo(ref, out, errmsg);
        if (rv == CAIRN_ENOTFOUND) {
            errorf(errmsg, "no backup file at %s", ref);
        }
        return rv;
    }
    if (repo == NULL || !cbkIdValid(ref)) {
        errorf(errmsg, "no backup with id \"%s\"%s%s", ref, repo ? " in " : "", repo ? repo : "");
        return CAIRN_ENOTFOUND;
    }
    snprintf(path, sizeof path, "%s/%s.cbk", repo, ref);
    rv = backupReadInfo(path, out, errmsg);
    if (rv == 0) {
        if (strcmp(out->id, ref) != 0) {
            errorf(errmsg, "%s: holds backup %s, not %s", path, out->id, ref);
            return CAIRN_ECORRUPT;
        }
        return 0;
    }
    if (rv != CAIRN_ENOTFOUND) {
        return rv;
    }
    /* Not under its usual name: a file renamed by hand still counts. */
    if ((rv = repoList(repo, &all, &n, errmsg)) != 0) {
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
    errorf(errmsg, "no backup with id %s in %s", ref, repo);
    return CAIRN_ENOTFOUND;
}

void repoSweepTemp(const char *repo, unsigned *removed)
{
    DIR *d = opendir(repo);
    struct dirent *e;
    *removed = 0;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        char path[PATH_MAX];
        int fd;
        if (e->d_name[0] != '.' || n < 9 || strcmp(e->d_name + n - 8, ".cbk.tmp") != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", repo, e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        /* A live writer holds its lock: leave its file alone. */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && unlink(path) == 0) {
            (*removed)++;
        }
        close(fd);
    }
    closedir(d);
}
