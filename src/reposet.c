/* A node's named backup repositories (see reposet.h). */
#include "reposet.h"

#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "path.h"

static bool isUrl(const char *s)
{
    return strstr(s, "://") != NULL;
}

/* A name is 1 to 32 of [A-Za-z0-9_.-], not starting with '.' or '-': it appears in SQL
 * strings, URLs and file names unquoted. */
static bool validName(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= BACKUP_REPO_NAME_SIZE || name[0] == '.' || name[0] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* The form a repository is compared and shown in: a URL as given (less a trailing
 * '/'), a path absolute and clean. */
static int normalise(const char *url, char *out, size_t size, char *errmsg)
{
    char tmp[PATH_MAX];
    if (url[0] == '\0') {
        errorf(errmsg, "a repository needs a path or URL");
        return CAIRN_EINVAL;
    }
    if (!isUrl(url)) {
        pathAbsolute(url, tmp, sizeof tmp); /* "DIR/./backups" reads as "DIR/backups" */
    } else {
        snprintf(tmp, sizeof tmp, "%s", url);
        size_t n = strlen(tmp);
        while (n > 0 && tmp[n - 1] == '/' && tmp[n - 2] != '/') {
            tmp[--n] = '\0';
        }
        /* The scheme in lower case, as repoOpen reads it whatever its case: S3://B/P
         * and s3://B/P are one repository. */
        for (char *c = tmp; *c != ':'; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
    }
    if (strlen(tmp) >= size) {
        errorf(errmsg, "repository path too long: %.200s", url);
        return CAIRN_EINVAL;
    }
    snprintf(out, size, "%s", tmp);
    return 0;
}

int reposetAdd(struct reposet *rs, const char *name, const char *url, char *errmsg)
{
    char norm[sizeof rs->r[0].url];
    int rv;
    if (name == NULL) {
        name = REPOSET_DEFAULT;
    }
    if (!validName(name)) {
        errorf(errmsg,
               "repository name '%.40s' is not valid: 1 to %d letters, digits, '_', '.' or "
               "'-', not starting with '.' or '-'",
               name, BACKUP_REPO_NAME_SIZE - 1);
        return CAIRN_EINVAL;
    }
    if (strcmp(name, REPOSET_DEFAULT) == 0 && rs->n > 0) {
        errorf(errmsg,
               "repository name '%s' names the first repository ('%s', %s); give another "
               "name",
               REPOSET_DEFAULT, rs->r[0].name, rs->r[0].url);
        return CAIRN_EINVAL;
    }
    if (rs->n == REPOSET_MAX) {
        errorf(errmsg, "too many repositories: at most %d", REPOSET_MAX);
        return CAIRN_EINVAL;
    }
    if ((rv = normalise(url, norm, sizeof norm, errmsg)) != 0) {
        return rv;
    }
    for (unsigned i = 0; i < rs->n; i++) {
        if (strcmp(rs->r[i].name, name) == 0) {
            errorf(errmsg, "repository '%s' is given twice (%s and %s)", name, rs->r[i].url,
                   norm);
            return CAIRN_EINVAL;
        }
        if (strcmp(rs->r[i].url, norm) == 0) {
            errorf(errmsg, "%s is given twice, as repository '%s' and '%s'", norm,
                   rs->r[i].name, name);
            return CAIRN_EINVAL;
        }
    }
    snprintf(rs->r[rs->n].name, sizeof rs->r[rs->n].name, "%s", name);
    snprintf(rs->r[rs->n].url, sizeof rs->r[rs->n].url, "%s", norm);
    rs->n++;
    return 0;
}

int reposetParseSpec(const char *spec, char *name, const char **url, char *errmsg)
{
    const char *eq = strchr(spec, '=');
    const char *scheme = strstr(spec, "://");
    if (eq == NULL || eq == spec || (scheme != NULL && scheme < eq)) {
        errorf(errmsg,
               "--repo '%.200s': expected NAME=URL (a name, then a path, file:///DIR or "
               "s3://BUCKET/PREFIX)",
               spec);
        return CAIRN_EINVAL;
    }
    if ((size_t)(eq - spec) >= BACKUP_REPO_NAME_SIZE) {
        errorf(errmsg, "--repo '%.200s': the name is longer than %d characters", spec,
               BACKUP_REPO_NAME_SIZE - 1);
        return CAIRN_EINVAL;
    }
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    *url = eq + 1;
    if (**url == '\0') {
        errorf(errmsg, "--repo '%.200s': no path or URL after '='", spec);
        return CAIRN_EINVAL;
    }
    return 0;
}

int reposetByName(const struct reposet *rs, const char *name)
{
    if (rs->n > 0 && strcmp(name, REPOSET_DEFAULT) == 0) {
        return 0;
    }
    for (unsigned i = 0; i < rs->n; i++) {
        if (strcmp(rs->r[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

void reposetDescribe(const struct reposet *rs, char *out, size_t size)
{
    size_t off = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < rs->n && off < size; i++) {
        int k = snprintf(out + off, size - off, "%s'%s' (%s)", i ? ", " : "", rs->r[i].name,
                         rs->r[i].url);
        if (k < 0) {
            break;
        }
        off += (size_t)k;
    }
}

int reposetPick(const struct reposet *rs, const char *to, unsigned *which, char *errmsg)
{
    char want[PATH_MAX];
    char real_want[PATH_MAX];
    char real_have[PATH_MAX];
    char msg[CAIRN_ERRMSG_SIZE];
    char all[CAIRN_ERRMSG_SIZE];
    int i;
    *which = 0;
    if (to == NULL || to[0] == '\0') {
        return 0;
    }
    if ((i = reposetByName(rs, to)) >= 0) {
        *which = (unsigned)i;
        return 0;
    }
    /* By URL or path: the same text once normalised, or the same directory. */
    if (normalise(to, want, sizeof want, msg) == 0) {
        bool real = !isUrl(want) && realpath(want, real_want) != NULL;
        for (unsigned k = 0; k < rs->n; k++) {
            if (strcmp(rs->r[k].url, want) == 0 ||
                (real && !isUrl(rs->r[k].url) && realpath(rs->r[k].url, real_have) != NULL &&
                 strcmp(real_want, real_have) == 0)) {
                *which = k;
                return 0;
            }
        }
    }
    reposetDescribe(rs, all, sizeof all);
    errorf(errmsg,
           "TO '%.100s' is not a repository of this node, which has %s: name one by its "
           "name, path or URL (repositories are set with --backup-dir and --repo NAME=URL)",
           to, all);
    return CAIRN_EINVAL;
}

int reposetList(const struct reposet *rs, int only, struct backup_info **list, size_t *n,
                char *errmsg)
{
    struct backup_info *all = NULL;
    size_t total = 0;
    *list = NULL;
    *n = 0;
    for (unsigned i = 0; i < rs->n; i++) {
        struct backup_info *one = NULL;
        struct backup_info *grown;
        size_t k = 0;
        int rv;
        if (only >= 0 && (unsigned)only != i) {
            continue;
        }
        if ((rv = repoList(rs->r[i].url, &one, &k, errmsg)) != 0) {
            free(all);
            return rv;
        }
        if (k > 0) {
            grown = realloc(all, (total + k) * sizeof *all);
            if (grown == NULL) {
                free(one);
                free(all);
                errorf(errmsg, "out of memory listing %s", rs->r[i].url);
                return CAIRN_ENOMEM;
            }
            all = grown;
            for (size_t j = 0; j < k; j++) {
                snprintf(one[j].repository, sizeof one[j].repository, "%s", rs->r[i].name);
            }
            memcpy(all + total, one, k * sizeof *one);
            total += k;
        }
        free(one);
    }
    *list = all;
    *n = total;
    return 0;
}

int reposetFind(const struct reposet *rs, const char *id, unsigned *which,
                struct backup_info *out, char *errmsg)
{
    int rv = CAIRN_ENOTFOUND;
    *which = 0;
    if (strchr(id, '/') != NULL) {
        /* A path names its own file, whichever repository holds it. */
        rv = repoFind(rs->n > 0 ? rs->r[0].url : ".", id, out, errmsg);
        return rv;
    }
    char msg[CAIRN_ERRMSG_SIZE] = "";
    for (unsigned i = 0; i < rs->n; i++) {
        rv = repoFind(rs->r[i].url, id, out, msg);
        if (rv != CAIRN_ENOTFOUND) {
            if (rv != 0) {
                errorf(errmsg, "%s", msg);
            } else {
                snprintf(out->repository, sizeof out->repository, "%s", rs->r[i].name);
            }
            *which = i;
            return rv;
        }
    }
    if (rs->n == 1) {
        errorf(errmsg, "%s", msg); /* the repository's own words */
    } else {
        char all[CAIRN_ERRMSG_SIZE / 2];
        reposetDescribe(rs, all, sizeof all);
        errorf(errmsg, "no backup %s in any repository of this node (%s)", id, all);
    }
    return CAIRN_ENOTFOUND;
}

int reposetFromOptions(struct reposet *rs, const char *backup_dir,
                       const char *const *repositories, const char *data_dir, char *errmsg)
{
    char why[CAIRN_ERRMSG_SIZE];
    int rv;
    memset(rs, 0, sizeof *rs);
    if (backup_dir != NULL && (rv = reposetAdd(rs, NULL, backup_dir, why)) != 0) {
        errorf(errmsg, "--backup-dir: %s", why);
        return rv;
    }
    for (size_t i = 0; repositories != NULL && repositories[i] != NULL; i++) {
        char name[BACKUP_REPO_NAME_SIZE];
        const char *url;
        if ((rv = reposetParseSpec(repositories[i], name, &url, errmsg)) != 0) {
            return rv;
        }
        if ((rv = reposetAdd(rs, name, url, why)) != 0) {
            errorf(errmsg, "--repo %.200s: %s", repositories[i], why);
            return rv;
        }
    }
    if (rs->n == 0 && data_dir != NULL) {
        char parent[PATH_MAX];
        char dir[PATH_MAX + 16];
        size_t len;
        snprintf(parent, sizeof parent, "%s", data_dir);
        len = strlen(parent);
        while (len > 1 && parent[len - 1] == '/') {
            parent[--len] = '\0';
        }
        snprintf(dir, sizeof dir, "%s/backups", dirname(parent));
        if ((rv = reposetAdd(rs, NULL, dir, errmsg)) != 0) {
            return rv;
        }
    }
    return 0;
}
