/* A node's named backup repositories: `--backup-dir URL` (named "default") and any
 * number of `--repo NAME=URL`, the first of them the default one. Each is a URL the
 * engine opens (a path, file:///DIR or s3://BUCKET/PREFIX; src/backup/repo.h).
 *
 * Backups go into the repository a request names (reposetPick: by name, by "default",
 * or by its URL or path); a backup is looked up by id in every repository, the default
 * first (reposetFind); listings say which repository each backup is in
 * (backup_info.repository, set by reposetList). Chains never cross repositories: an
 * incremental chains to the newest backup of the repository it goes into.
 *
 * Filled once by cairn_open (db.c) and read-only afterwards: any thread may read it. */
#ifndef CAIRN_REPOSET_H
#define CAIRN_REPOSET_H

#include <limits.h>
#include <stddef.h>

#include "backup.h"

#define REPOSET_MAX 8
#define REPOSET_DEFAULT "default" /* the name that always means the first repository */

struct reposet {
    unsigned n;
    struct reposet_entry {
        char name[BACKUP_REPO_NAME_SIZE];
        char url[PATH_MAX - 128]; /* an absolute, clean path, or a URL as given */
    } r[REPOSET_MAX];
};

/* Add repository url under name (NULL: "default"). A relative path is made absolute.
 * CAIRN_EINVAL, naming what is wrong, for a bad or repeated name, a repository given
 * twice, too many repositories or a URL too long. Opens nothing. */
int reposetAdd(struct reposet *rs, const char *name, const char *url, char *errmsg);

/* A node's repositories from its options (cairn_config's backup_dir and repositories,
 * NULL-terminated, may be NULL): --backup-dir first, then each --repo NAME=URL; with
 * neither, "backups" beside data_dir (its parent, plus "backups"). Opens nothing. 0, or
 * the first error, errmsg naming the option. */
int reposetFromOptions(struct reposet *rs, const char *backup_dir,
                       const char *const *repositories, const char *data_dir, char *errmsg);

/* Split "NAME=URL" into name (BACKUP_REPO_NAME_SIZE bytes) and *url (into spec). */
int reposetParseSpec(const char *spec, char *name, const char **url, char *errmsg);

/* The repository `to` names: NULL, "" and "default" name the first; otherwise a name,
 * or a URL or path equal to a repository's. CAIRN_EINVAL naming every repository of the
 * node when none matches. */
int reposetPick(const struct reposet *rs, const char *to, unsigned *which, char *errmsg);

/* The index of the repository called name (or "default"); -1 if none. */
int reposetByName(const struct reposet *rs, const char *name);

/* Every backup of every repository (only repository `only` when not negative), each
 * with its repository's name, in each repository's order (repoList), the default's
 * first. *list is malloc'd. */
int reposetList(const struct reposet *rs, int only, struct backup_info **list, size_t *n,
                char *errmsg);

/* Backup id (or a path to a backup file, looked up as repoFind does) in the first
 * repository that has it; *which is that repository (0 for a path). CAIRN_ENOTFOUND
 * when none has it; another error (a damaged file) is reported as found. */
int reposetFind(const struct reposet *rs, const char *id, unsigned *which,
                struct backup_info *out, char *errmsg);

/* "'default' (/srv/backups), 'offsite' (s3://b/p)": the repositories, for messages. */
void reposetDescribe(const struct reposet *rs, char *out, size_t size);

#endif
