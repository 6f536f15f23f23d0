/* The server's backup operations (see admin.h). HTTP and API threads; the restore
 * hook runs on the loop thread. */
#define _GNU_SOURCE
#include "admin.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cluster.h"
#include "db.h"
#include "error.h"
#include "liverestore.h"
#include "node.h"
#include "pagesum.h"
#include "path.h"
#include "pitr.h"
#include "repo.h"
#include "lib.h"

/* How long a backup waits for readers that keep the WAL from being checkpointed (a
 * Raft snapshot being written, a long query). */
#define FREEZE_TIMEOUT_S 60

void adminSourceName(struct cairn *db, char *out, size_t size)
{
    char real[PATH_MAX];
    if (realpath(db->data_dir, real) == NULL) {
        snprintf(real, sizeof real, "%s", db->data_dir);
    }
    snprintf(out, size, "cairnd:%s", real);
}

/* ---- backups --------------------------------------------------------------------- */

struct freeze_arg {
    struct store *store;
    struct store_freeze *fz;
};

static int freezeOnLoop(void *arg, char *errmsg)
{
    struct freeze_arg *a = arg;
    return storeFreeze(a->store, a->fz, errmsg);
}

int adminFreeze(struct cairn *db, struct store_freeze *fz, char *errmsg)
{
    struct freeze_arg fa = {db->store, fz};
    time_t deadline = time(NULL) + FREEZE_TIMEOUT_S;
    int rv;
    for (;;) {
        /* Copy most of the WAL off the loop thread, so that the loop's own complete
         * checkpoint has little left to do. */
        storeCheckpoint(db->store);
        rv = nodeCall(db->node, freezeOnLoop, &fa, errmsg);
        if (rv != CAIRN_EBUSY) {
            return rv;
        }
        if (time(NULL) >= deadline) {
            char last[CAIRN_ERRMSG_SIZE];
            snprintf(last, sizeof last, "%s", errmsg);
            errorf(errmsg, "database not frozen within %d s: %s", FREEZE_TIMEOUT_S, last);
            return CAIRN_EBUSY;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL); /* let readers finish */
    }
}

static int findOrFetch(struct cairn *db, const char *id, struct backup_info *out, char *errmsg);

int adminRepository(struct cairn *db, const char *to, unsigned *which, char *errmsg)
{
    return reposetPick(&db->repos, to, which, errmsg);
}

const char *adminRepoUrl(struct cairn *db, const struct backup_info *info)
{
    int i = info->repository[0] != '\0' ? reposetByName(&db->repos, info->repository) : 0;
    return db->repos.r[i >= 0 ? i : 0].url;
}

int adminFindBackup(struct cairn *db, const char *id, struct backup_info *out, char *errmsg)
{
    return findOrFetch(db, id, out, errmsg);
}

/* Whether a catalogue entry is a backup of a cairnd database that can be read. */
static bool serverBackup(json_t *e)
{
    const char *source = json_string_value(json_object_get(e, "source"));
    json_t *err = json_object_get(e, "error");
    return source != NULL && strncmp(source, "cairnd:", 7) == 0 &&
           (err == NULL || json_is_null(err));
}

/* In a cluster, the parent of an incremental (differential) backup is the newest backup
 * (newest full backup) of the cluster in the repository of the same name (repository
 * `which` of this node), whichever node took it: after a failover the chain goes on
 * from the last backup taken on the old leader, and a chain never crosses
 * repositories. A parent only in a peer's repository is fetched with the rest of its
 * chain first, so this node's repository then holds the whole chain of the new backup.
 * parent_id gets "" when the node is alone (the engine chooses in its repository, and
 * takes a full backup when there is nothing to chain to), and *type BACKUP_FULL when
 * no node's repository of that name holds anything to chain to and every node
 * answered (one that did not may hold the parent: then the backup is refused, naming
 * it, rather than taken whole again and again while it is down). */
static int clusterParent(struct cairn *db, int *type, unsigned which,
                         char parent_id[BACKUP_ID_SIZE], char *errmsg)
{
    const struct reposet_entry *repo = &db->repos.r[which];
    struct node_info ni;
    json_t *cat = NULL;
    json_t *list;
    json_t *chosen = NULL;
    json_t *v;
    size_t i;
    bool local = false;
    int rv;

    parent_id[0] = '\0';
    nodeInfo(db->node, &ni);
    if (*type == BACKUP_FULL || ni.n_servers < 2) {
        return 0;
    }
    if ((rv = clusterBackupCatalog(db, &cat, errmsg)) != 0) {
        return rv;
    }
    list = json_object_get(cat, "backups");
    for (i = json_array_size(list); i-- > 0;) {
        json_t *e = json_array_get(list, i);
        const char *t = json_string_value(json_object_get(e, "type"));
        const char *in = json_string_value(json_object_get(e, "repository"));
        if (serverBackup(e) && t != NULL && in != NULL && strcmp(in, repo->name) == 0 &&
            (*type == BACKUP_INCREMENTAL || strcmp(t, "full") == 0)) {
            chosen = e;
            break;
        }
    }
    if (chosen == NULL) {
        char unreachable[128] = "";
        size_t off = 0;
        json_array_foreach(json_object_get(cat, "unreachable"), i, v)
        {
            off += (size_t)snprintf(unreachable + off, off < sizeof unreachable ? sizeof unreachable - off : 0,
                                    "%s%lld", off ? ", " : " (unreachable: node ",
                                    (long long)json_integer_value(v));
        }
        json_decref(cat);
        if (off == 0) {
            *type = BACKUP_FULL;
            return 0;
        }
        if (off < sizeof unreachable - 1) {
            strcat(unreachable, ")");
        }
        errorf(errmsg, "no %sbackup of the cluster in any reachable node's repository '%s' to "
                       "base the %s backup on%s",
               *type == BACKUP_DIFFERENTIAL ? "full " : "", repo->name, backupTypeName(*type),
               unreachable);
        return CAIRN_ENOTFOUND;
    }
    snprintf(parent_id, BACKUP_ID_SIZE, "%s", json_string_value(json_object_get(chosen, "id")));
    json_array_foreach(json_object_get(chosen, "nodes"), i, v)
    {
        local = local || (uint64_t)json_integer_value(v) == db->cfg.node_id;
    }
    json_decref(cat);
    if (!local) {
        char msg[CAIRN_ERRMSG_SIZE];
        if (clusterFetch(db, repo->url, "backups", parent_id, msg) != 0) {
            errorf(errmsg, "the %s backup's parent %s, the cluster's newest in repository "
                           "'%s', could not be fetched from the node that holds it: %s",
                   backupTypeName(*type), parent_id, repo->name, msg);
            return CAIRN_ENOTFOUND;
        }
    }
    return 0;
}

int adminBackup(struct cairn *db, int type, const char *to, backup_progress_fn progress,
                void *progress_arg, struct backup_info *out, char *errmsg)
{
    char why[CAIRN_ERRMSG_SIZE];
    if (dbDiverged(db, why, sizeof why)) {
        errorf(errmsg, "no backup of this node: its database differs from the cluster's: %s",
               why);
        return CAIRN_EBUSY;
    }
    struct store_freeze fz;
    struct backup_source src;
    struct backup_options opt;
    struct node_info ni;
    char source[BACKUP_SOURCE_SIZE];
    char parent_id[BACKUP_ID_SIZE];
    unsigned which = 0;
    const int asked = type;
    int rv;

    if ((rv = adminRepository(db, to, &which, errmsg)) != 0 ||
        (rv = clusterParent(db, &type, which, parent_id, errmsg)) != 0) {
        return rv;
    }
    if ((rv = adminFreeze(db, &fz, errmsg)) != 0) {
        return rv;
    }
    nodeInfo(db->node, &ni);
    adminSourceName(db, source, sizeof source);
    memset(&src, 0, sizeof src);
    src.fd = fz.fd;
    src.raft_index = fz.index;
    src.raft_term = ni.term;
    _Static_assert(NODE_CLUSTER_ID_SIZE == BACKUP_HISTORY_SIZE, "a history is a cluster id");
    /* The cluster's id names its one Raft log, whose index fz.index is (cluster.h): a
     * point-in-time restore takes the backup as a base of that history's timelines. */
    if (atomic_load(&db->cluster_id_known)) {
        memcpy(src.history, db->cluster_id, BACKUP_HISTORY_SIZE);
    }
    src.source = source;
    src.verify_pages = true;
    memset(&opt, 0, sizeof opt);
    opt.type = type;
    opt.repo = db->repos.r[which].url;
    opt.codec = db->backup_codec;
    opt.level = db->backup_level;
    opt.parent_id = parent_id;
    opt.progress = progress;
    opt.progress_arg = progress_arg;
    rv = backupCreate(&src, &opt, out, errmsg);
    storeThaw(&fz);
    if (rv == 0) {
        snprintf(out->repository, sizeof out->repository, "%s", db->repos.r[which].name);
        if (out->type != asked) {
            dbLog(db, "%s backup %s: repository '%s' holds no %sbackup of the database to "
                      "chain to: taken as a full backup",
                  backupTypeName(asked), out->id, out->repository,
                  asked == BACKUP_DIFFERENTIAL ? "full " : "");
        }
    }
    return rv;
}

/* ---- branches -------------------------------------------------------------------- */

static void branchDir(struct cairn *db, char *out, size_t size)
{
    snprintf(out, size, "%s/branches", db->data_dir);
}

static int branchFile(struct cairn *db, const char *name, char *path, char *errmsg)
{
    char dir[PATH_MAX];
    if (!sqlfrontBranchNameValid(name, errmsg)) {
        return CAIRN_EINVAL;
    }
    branchDir(db, dir, sizeof dir);
    if ((size_t)snprintf(path, PATH_MAX, "%s/%s.db", dir, name) >= PATH_MAX) {
        errorf(errmsg, "branch path too long under %s", dir);
        return CAIRN_EINVAL;
    }
    return 0;
}

int adminBranchPath(struct cairn *db, const char *name, char *path, char *errmsg)
{
    struct stat st;
    int rv = branchFile(db, name, path, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (stat(path, &st) != 0) {
        errorf(errmsg,
               "no branch named \"%s\" on node %llu (a branch is kept by the node that "
               "restored it; ?node=ID reaches another node)",
               name, (unsigned long long)db->cfg.node_id);
        return CAIRN_ENOTFOUND;
    }
    return 0;
}

int adminDropBranch(struct cairn *db, const char *name, char *errmsg)
{
    char path[PATH_MAX];
    char side[PATH_MAX + 8];
    int rv = adminBranchPath(db, name, path, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (unlink(path) != 0) {
        errorf(errmsg, "drop branch \"%s\": unlink %s: %s", name, path, strerror(errno));
        return errorFromErrno(errno);
    }
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    return libSyncParentDir(path, errmsg);
}

void adminBranchesJson(struct cairn *db, struct buf *b)
{
    char dir[PATH_MAX];
    struct dirent **names = NULL;
    int n;
    bool first = true;
    branchDir(db, dir, sizeof dir);
    bufPutc(b, '[');
    n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *f = names[i]->d_name;
        size_t len = strlen(f);
        char path[PATH_MAX];
        struct stat st;
        if (len > 3 && strcmp(f + len - 3, ".db") == 0 &&
            (size_t)snprintf(path, sizeof path, "%s/%s", dir, f) < sizeof path &&
            stat(path, &st) == 0) {
            if (!first) {
                bufPutc(b, ',');
            }
            first = false;
            bufPuts(b, "{\"name\":");
            bufJsonString(b, f, len - 3);
            bufPuts(b, ",\"path\":");
            bufJsonString(b, path, strlen(path));
            bufPuts(b, ",\"size_bytes\":");
            bufJsonInt(b, (int64_t)st.st_size);
            bufPutc(b, '}');
        }
        free(names[i]);
    }
    free(names);
    bufPutc(b, ']');
}

void adminSnapshotsJson(struct cairn *db, struct buf *b)
{
    /* Raft snapshots are backups in DATA/snapshots/, a repository of their own. */
    struct backup_info *list = NULL;
    size_t n = 0;
    char errmsg[CAIRN_ERRMSG_SIZE];
    bufPutc(b, '[');
    if (repoList(db->snap_dir, &list, &n, errmsg) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (i > 0) {
                bufPutc(b, ',');
            }
            bufPuts(b, "{\"index\":");
            bufJsonInt(b, (int64_t)list[i].raft_index);
            bufPuts(b, ",\"backup\":");
            backupInfoJson(&list[i], b);
            bufPutc(b, '}');
        }
    }
    free(list);
    bufPutc(b, ']');
}

/* ---- restores -------------------------------------------------------------------- */


/* The file a new branch is restored into (branchFile), its directory made: CAIRN_EEXIST
 * when the branch exists. */
static int newBranchPath(struct cairn *db, const char *branch, char path[PATH_MAX],
                         char *errmsg)
{
    char dir[PATH_MAX];
    struct stat st;
    int rv;
    if ((rv = branchFile(db, branch, path, errmsg)) != 0) {
        return rv;
    }
    if (stat(path, &st) == 0) {
        errorf(errmsg, "branch \"%s\" exists: DROP BRANCH '%s' first", branch, branch);
        return CAIRN_EEXIST;
    }
    branchDir(db, dir, sizeof dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        errorf(errmsg, "create %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    return 0;
}

static int restoreBranch(struct cairn *db, const char *ref, const char *branch,
                         backup_progress_fn progress, void *progress_arg,
                         struct backup_info *out, char *errmsg)
{
    char path[PATH_MAX];
    struct restore_options opt;
    int rv;

    if ((rv = newBranchPath(db, branch, path, errmsg)) != 0) {
        return rv;
    }
    memset(&opt, 0, sizeof opt);
    opt.repo = db->backup_dir;
    opt.ref = ref;
    opt.out = path;
    opt.progress = progress;
    opt.progress_arg = progress_arg;
    if (strchr(ref, '/') == NULL) {
        struct backup_info found;
        char msg[CAIRN_ERRMSG_SIZE];
        if (findOrFetch(db, ref, &found, msg) == 0) {
            opt.repo = adminRepoUrl(db, &found);
        } /* else the restore reports what is missing */
    }
    rv = backupRestore(&opt, out, errmsg);
    if (rv == CAIRN_EEXIST) {
        /* newBranchPath found no such branch: another restore made it meanwhile (a
         * branch is never replaced, so the restore's advice of --force is not for it). */
        errorf(errmsg,
               "branch \"%s\" exists: another restore made it while this one ran "
               "(DROP BRANCH '%s' first to replace it)",
               branch, branch);
    }
    return rv;
}

/* Find backup id in the server's repositories; in a cluster, a backup another node took
 * into its own repository is fetched from it first, into the default repository. */
static int findOrFetch(struct cairn *db, const char *id, struct backup_info *out, char *errmsg)
{
    struct node_info ni;
    char msg[CAIRN_ERRMSG_SIZE];
    unsigned which;
    int rv = reposetFind(&db->repos, id, &which, out, errmsg);
    if (rv != CAIRN_ENOTFOUND || strchr(id, '/') != NULL) {
        return rv;
    }
    nodeInfo(db->node, &ni);
    if (ni.n_servers < 2) {
        return rv;
    }
    if (clusterFetch(db, db->backup_dir, "backups", id, msg) != 0) {
        errorf(errmsg, "backup %s is in no repository of the cluster (%s)", id, msg);
        return CAIRN_ENOTFOUND;
    }
    return reposetFind(&db->repos, id, &which, out, errmsg);
}

/* Restore backup id of repository url into out (replaced), every page checked. */
static int restoreFrom(const char *url, const char *id, const char *out,
                       struct backup_info *info, char *errmsg)
{
    struct restore_options opt;
    memset(&opt, 0, sizeof opt);
    opt.repo = url;
    opt.ref = id;
    opt.out = out;
    opt.force = true;
    return backupRestore(&opt, info, errmsg);
}

/* Remove the scratch repository dir of adminRestoreCopy and what it holds (backup files
 * fetched, a download's temporary file). */
static void removeScratch(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    rmdir(dir);
}

void adminRestoreCopyClean(struct cairn *db)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s.fetched", db->db_path);
    removeScratch(dir);
}

int adminRestoreCopy(struct cairn *db, const char *id, const unsigned char *digest,
                     const char *out, struct backup_info *info, char *errmsg)
{
    struct node_info ni;
    char dir[PATH_MAX];
    char msg[CAIRN_ERRMSG_SIZE];
    char own[CAIRN_ERRMSG_SIZE];
    int rv = findOrFetch(db, id, info, own);
    if (rv == 0 && memcmp(info->digest, digest, BACKUP_DIGEST_SIZE) != 0) {
        errorf(own, "backup %s in %s is not the file the restore entry names (digest differs)",
               id, adminRepoUrl(db, info));
        rv = CAIRN_ECORRUPT;
    } else if (rv == 0) {
        rv = restoreFrom(adminRepoUrl(db, info), id, out, info, own);
    }
    nodeInfo(db->node, &ni);
    if (rv == 0 || rv == CAIRN_ESHUTDOWN || ni.n_servers < 2 || strchr(id, '/') != NULL) {
        if (rv != 0) {
            memcpy(errmsg, own, CAIRN_ERRMSG_SIZE);
        }
        return rv;
    }
    dbLog(db, "backup %s: this node's copy cannot be restored (%s): restoring a peer's copy",
          id, own);
    snprintf(dir, sizeof dir, "%s.fetched", db->db_path);
    adminRestoreCopyClean(db); /* a crash's leftovers */
    rv = clusterFetch(db, dir, "backups", id, msg);
    if (rv == 0 && (rv = repoFind(dir, id, info, msg)) == 0) {
        if (memcmp(info->digest, digest, BACKUP_DIGEST_SIZE) != 0) {
            errorf(msg, "the peer's backup %s is not the file the restore entry names either "
                        "(digest differs)",
                   id);
            rv = CAIRN_ECORRUPT;
        } else {
            rv = restoreFrom(dir, id, out, info, msg);
        }
    }
    removeScratch(dir);
    if (rv != 0) {
        errorf(errmsg, "%s; a peer's copy neither: %s", own, msg);
        return rv;
    }
    /* Restored from the peer's file: the entry says the backup is this node's own. */
    snprintf(info->repository, sizeof info->repository, "%s", db->repos.r[0].name);
    dbLog(db, "backup %s restored from a peer's copy; this node's own copy is damaged or "
              "missing (`cairn backup verify %s` on this node says what is wrong)",
          id, id);
    return 0;
}

/* Propose a BATCH_RESTORE entry for backup info: the PREPARE entry (prepare true) or
 * the swap; *index receives its index. */
static int proposeRestore(struct cairn *db, const struct backup_info *info, bool prepare,
                          uint64_t *index, char *errmsg)
{
    struct batch b;
    struct stmt st;
    struct param p[2];
    struct cairn_result *res = NULL;
    int rv;

    memset(&b, 0, sizeof b);
    memset(&st, 0, sizeof st);
    memset(p, 0, sizeof p);
    p[0].type = CAIRN_BLOB;
    p[0].s = (const char *)info->digest;
    p[0].n = BACKUP_DIGEST_SIZE;
    p[1].type = CAIRN_TEXT;
    p[1].s = RESTORE_PREPARE;
    p[1].n = strlen(RESTORE_PREPARE);
    st.sql = info->id;
    st.sql_len = strlen(info->id);
    st.params = p;
    st.nparams = prepare ? 2 : 1;
    b.kind = BATCH_RESTORE;
    b.stmts = &st;
    b.n = 1;
    rv = dbRun(db, &b, CAIRN_LEVEL_STRONG, &res, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (res->n > 0 && res->stmts[0].error != NULL) {
        errorf(errmsg, "%s", res->stmts[0].error);
        cairn_result_free(res);
        return CAIRN_EIO;
    }
    *index = res->raft_index;
    cairn_result_free(res);
    return 0;
}

/* A live restore (liverestore.h): the PREPARE entry makes every node restore the chain
 * off its loop; once this node's copy is ready (every page checked), the swap entry
 * puts it in place on every node at one index. */
static int restoreLive(struct cairn *db, const char *ref, struct backup_info *out,
                       uint64_t *index, char *errmsg)
{
    char msg[CAIRN_ERRMSG_SIZE];
    uint64_t prep = 0;
    int rv;

    if (strchr(ref, '/') != NULL) {
        errorf(errmsg, "a live restore names a backup of the server's repositories by id, "
                       "not a path (\"%s\"): every node resolves the id in its repositories",
               ref);
        return CAIRN_EINVAL;
    }
    if ((rv = findOrFetch(db, ref, out, errmsg)) != 0) {
        return rv;
    }
    if ((rv = proposeRestore(db, out, true, &prep, errmsg)) != 0) {
        return rv;
    }
    /* Applied here: this node prepares it. A damaged chain stops the restore now, before
     * anything is swapped anywhere; the other nodes' copies are removed by their next
     * restore, or in PREPARED_TTL_S. */
    if ((rv = lrWait(db, out->id, out->digest, msg)) != 0) {
        errorf(errmsg, "backup %s cannot be restored (nothing was changed): %s", out->id, msg);
        return rv;
    }
    if ((rv = proposeRestore(db, out, false, index, errmsg)) != 0) {
        return rv;
    }
    /* A snapshot soon, so that rebuilding this node never replays the restore entry:
     * a replay needs the backup files, which an operator may delete later. Not waited
     * for: writing it takes seconds per GiB, and the restored database serves now (a
     * node that stops before it is written replays the entry, from the files). */
    if (nodeSnapshotSoon(db->node, msg) != 0) {
        dbLog(db, "snapshot after restore not asked for: %s", msg);
    }
    return 0;
}

int adminRestore(struct cairn *db, const char *ref, const char *branch,
                 backup_progress_fn progress, void *progress_arg, struct backup_info *out,
                 uint64_t *index, char *errmsg)
{
    *index = 0;
    if (branch != NULL && branch[0] != '\0') {
        /* A branch is not restored through the log: its index is the backup's (what the
         * SQL form answers too). */
        int rv = restoreBranch(db, ref, branch, progress, progress_arg, out, errmsg);
        if (rv == 0) {
            *index = out->raft_index;
        }
        return rv;
    }
    return restoreLive(db, ref, out, index, errmsg);
}

/* ---- restore on boot ---------------------------------------------------------------- */

#define COPY_CHAIN_MAX 64

/* Bring the chain that ends at id from repository `from` into the node's repository.
 * The links missing there are found first, then copied oldest first, as clusterFetch
 * puts fetched files in place: a backup in the node's repository always has its whole
 * chain there, even when a kill cuts the copy short (were they copied newest first, the
 * newest would be left without its parent: a broken chain, listed, failing to verify
 * and restore, until a later start completes it). */
static int copyChain(struct cairn *db, struct repo *from, const char *id, char *errmsg)
{
    char cur[BACKUP_ID_SIZE];
    char(*missing)[BACKUP_ID_SIZE] = NULL; /* newest first */
    unsigned n = 0;
    struct repo *own = NULL;
    int rv = repoOpen(db->backup_dir, &own, errmsg);
    if (rv == 0 && (missing = calloc(COPY_CHAIN_MAX, sizeof *missing)) == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
    }
    snprintf(cur, sizeof cur, "%s", id);
    for (unsigned files = 0; rv == 0; files++) {
        struct backup_info info;
        char msg[CAIRN_ERRMSG_SIZE];
        if (files >= COPY_CHAIN_MAX) {
            errorf(errmsg, "backup chain of %s in %s is longer than %d files", id,
                   repoUrl(from), COPY_CHAIN_MAX);
            rv = CAIRN_ECORRUPT;
            break;
        }
        if (repoFindIn(own, cur, &info, msg) != 0) {
            if ((rv = repoFindIn(from, cur, &info, errmsg)) != 0) {
                break; /* names the missing or damaged link */
            }
            snprintf(missing[n++], sizeof missing[0], "%s", cur);
        }
        if (info.parent_id[0] == '\0') {
            break;
        }
        snprintf(cur, sizeof cur, "%s", info.parent_id);
    }
    while (rv == 0 && n > 0) {
        char name[BACKUP_ID_SIZE + 8];
        snprintf(name, sizeof name, "%s.cbk", missing[--n]);
        rv = repoCopyObject(from, name, own, name, errmsg);
    }
    free(missing);
    repoClose(own);
    return rv;
}

/* Whether the live database holds any schema object of the user's. */
static int userSchemaCount(struct cairn *db, int64_t *n, char *errmsg)
{
    cairn_result *res = NULL;
    int rv = cairn_query(db,
                         "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE '\\_cairn%' "
                         "ESCAPE '\\'",
                         NULL, 0, CAIRN_LEVEL_NONE, &res);
    if (rv != 0) {
        errorf(errmsg, "--restore-from: cannot read the database's schema: %s",
               cairn_errmsg(db));
    } else {
        *n = cairn_result_int64(res, 0, 0, 0);
    }
    cairn_result_free(res);
    return rv;
}

/* Whether the repository holds archive segments (cairnd --archive wrote into it), into
 * *yes; non-zero with errmsg when it cannot be listed (which says neither). */
static int holdsArchive(struct repo *r, bool *yes, char *errmsg)
{
    struct arcseg_info *segs = NULL;
    size_t n = 0;
    int rv = arcsegList(r, &segs, &n, errmsg);
    free(segs);
    *yes = rv == 0 && n > 0;
    return rv;
}

/* The state of repository url as of an archive point (kind: PITR_LATEST, PITR_INDEX,
 * PITR_TIME; index or time_ms), restored into the live database: for --restore-from
 * and for RESTORE ... AS OF / POST /admin/restore with a target.
 * The file is made with the point-in-time restore (pitr.h, the followers' apply), then
 * kept as a full backup in the node's repository number `keep` and restored through the log
 * as every live restore is (a PREPARE entry, then the swap): the node's applied index,
 * its Raft log and a later snapshot are then as after any RESTORE, with no second path
 * into the database. POST /db/load does the same with an uploaded file. The backup
 * records the index the state had in the archive's history (res->stop_index) and that
 * history, which is what its pages hold; index 0 and no history when the archive names
 * no history (its index would count in no known log).
 *
 * Why not a PREPARE entry carrying the target, each node replaying the archive itself:
 * the nodes would each read the repository (one that cannot reach it would fail the
 * swap), and each replay would have to produce the same pages. A full backup, named
 * with its digest in the entry, is one file every node restores alike, fetched from
 * the asking node by one that lacks it, as for any live restore. */
static int restoreFromArchive(struct cairn *db, const char *url, enum pitr_kind kind,
                              uint64_t index, int64_t time_ms, unsigned keep,
                              struct pitr_result *res, struct backup_info *info, uint64_t *at,
                              char *errmsg)
{
    static unsigned long counter; /* one name per restore: two may run at once */
    struct pitr_options o;
    struct backup_source src;
    struct backup_options opt;
    char out[PATH_MAX];
    char source[BACKUP_SOURCE_SIZE];
    char when[LIB_ISO8601_SIZE];
    int fd;
    int rv;

    if ((size_t)snprintf(out, sizeof out, "%s/pitr-restore-%lu.db", db->data_dir,
                         __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED)) >= sizeof out) {
        errorf(errmsg, "data directory path too long");
        return CAIRN_EINVAL;
    }
    memset(&o, 0, sizeof o);
    o.repo = url;
    o.kind = kind;
    o.index = index;
    o.time_ms = time_ms;
    o.out = out;
    o.force = true;
    o.check = RESTORE_CHECK_QUICK;
    if ((rv = pitrRestore(&o, res, errmsg)) != 0) {
        return rv;
    }
    if ((fd = open(out, O_RDONLY | O_CLOEXEC)) < 0) {
        errorf(errmsg, "open %s: %s", out, strerror(errno));
        rv = errorFromErrno(errno);
        unlink(out);
        return rv;
    }
    adminSourceName(db, source, sizeof source);
    memset(&src, 0, sizeof src);
    src.fd = fd;
    /* The index is the archive's history's, not this cluster's: so is the history.
     * When the archive (or the newest backup restored alone) records none, the index
     * counts in a log that nothing names, and in a repository of one history
     * arcsegBaseFits would take it as a base of this cluster's timelines at that index:
     * index 0 and no history then, never a base (the swap entry that puts it in place
     * restores it by id in any replay across it). */
    if (!libIsZero(res->history, BACKUP_HISTORY_SIZE)) {
        src.raft_index = res->stop_index;
        memcpy(src.history, res->history, BACKUP_HISTORY_SIZE);
    }
    src.source = source;
    memset(&opt, 0, sizeof opt);
    opt.type = BACKUP_FULL;
    assert(keep < db->repos.n);
    opt.repo = db->repos.r[keep].url;
    rv = backupCreate(&src, &opt, info, errmsg);
    close(fd);
    if (unlink(out) == 0) {
        char ignored[CAIRN_ERRMSG_SIZE]; /* a leftover is replaced by the next restore */
        libSyncParentDir(out, ignored);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(info->repository, sizeof info->repository, "%s", db->repos.r[keep].name);
    if ((rv = restoreLive(db, info->id, info, at, errmsg)) != 0) {
        return rv;
    }
    libIso8601(res->stop_ms, LIB_ISO8601_MS, when);
    dbLog(db,
          "restored %s as of index %llu (%s) of archive timeline %s: backup %s (index %llu) "
          "and %llu archived entries replayed, kept as backup %s, at log index %llu",
          url, (unsigned long long)res->stop_index, res->stop_ms ? when : "no entry replayed",
          res->timeline[0] ? res->timeline : "(none: the newest backup is past the archive)",
          res->base.id, (unsigned long long)res->base.raft_index,
          (unsigned long long)res->entries, info->id, (unsigned long long)*at);
    return 0;
}

/* The repository a RESTORE ... AS OF reads (url: PATH_MAX bytes): one of the node's by
 * name or path ("" and "default": the default one), the repository of a backup id the
 * node holds, or any repository URL or path (as `cairn restore --repo`). */
static int asofRepository(struct cairn *db, const char *from, char *url, char *errmsg)
{
    struct backup_info info;
    char msg[CAIRN_ERRMSG_SIZE];
    unsigned which;
    if (reposetPick(&db->repos, from, &which, msg) == 0) {
        snprintf(url, PATH_MAX, "%s", db->repos.r[which].url);
        return 0;
    }
    if (strchr(from, '/') != NULL) {
        struct stat st;
        if (strlen(from) >= PATH_MAX) {
            errorf(errmsg, "repository path too long");
            return CAIRN_EINVAL;
        }
        if (strstr(from, "://") == NULL && (stat(from, &st) != 0 || !S_ISDIR(st.st_mode))) {
            errorf(errmsg, "the repository %s %s", from,
                   errno == ENOENT ? "does not exist" : "is not a directory");
            return CAIRN_ENOTFOUND;
        }
        snprintf(url, PATH_MAX, "%s", from);
        return 0;
    }
    if (reposetFind(&db->repos, from, &which, &info, msg) == 0) {
        snprintf(url, PATH_MAX, "%s", db->repos.r[which].url);
        return 0;
    }
    reposetDescribe(&db->repos, msg, sizeof msg);
    errorf(errmsg,
           "AS OF reads a repository: \"%s\" is no repository of this node (%s), no backup "
           "in them, and no path or URL",
           from, msg);
    return CAIRN_EINVAL;
}

/* pitrRestore into a new branch: the branch file is only ever whole (pitr.h). */
static int restoreBranchAsOf(struct cairn *db, const char *url, const char *branch,
                             enum pitr_kind kind, uint64_t index, int64_t time_ms,
                             struct pitr_result *res, char *errmsg)
{
    char path[PATH_MAX];
    struct pitr_options o;
    int rv;

    if ((rv = newBranchPath(db, branch, path, errmsg)) != 0) {
        return rv;
    }
    memset(&o, 0, sizeof o);
    o.repo = url;
    o.kind = kind;
    o.index = index;
    o.time_ms = time_ms;
    o.out = path;
    o.force = false;
    o.check = RESTORE_CHECK_QUICK;
    return pitrRestore(&o, res, errmsg);
}

int adminRestoreAsOf(struct cairn *db, const char *from, const char *branch,
                     enum pitr_kind kind, uint64_t index, int64_t time_ms,
                     struct pitr_result *res, struct backup_info *out, uint64_t *at,
                     char *errmsg)
{
    char url[PATH_MAX];
    char why[CAIRN_ERRMSG_SIZE];
    int rv;

    memset(res, 0, sizeof *res);
    memset(out, 0, sizeof *out);
    *at = 0;
    assert(kind == PITR_LATEST || kind == PITR_INDEX || kind == PITR_TIME);
    if ((rv = asofRepository(db, from, url, errmsg)) != 0) {
        return rv;
    }
    if (branch != NULL && branch[0] != '\0') {
        rv = restoreBranchAsOf(db, url, branch, kind, index, time_ms, res, errmsg);
        if (rv == 0) {
            char when[LIB_ISO8601_SIZE];
            *out = res->base;
            *at = res->stop_index;
            libIso8601(res->stop_ms, LIB_ISO8601_MS, when);
            dbLog(db,
                  "branch %s: %s as of index %llu (%s): backup %s (index %llu) and %llu archived "
                  "entries replayed",
                  branch, url, (unsigned long long)res->stop_index,
                  res->stop_ms ? when : "no entry replayed", res->base.id,
                  (unsigned long long)res->base.raft_index, (unsigned long long)res->entries);
        }
    } else {
        /* Kept where this node archives: a point-in-time restore that replays the swap
         * entry later finds the backup it names in the archive's repository. */
        unsigned keep = 0;
        char msg[CAIRN_ERRMSG_SIZE];
        if (db->cfg.archive && reposetPick(&db->repos, db->cfg.archive_to, &keep, msg) != 0) {
            keep = 0;
        }
        rv = restoreFromArchive(db, url, kind, index, time_ms, keep, res, out, at, errmsg);
    }
    if (rv != 0) {
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "restore of %s as of %s: %s", url,
               kind == PITR_LATEST ? "its latest state"
               : kind == PITR_INDEX ? "an index"
                                    : "a time",
               why);
    }
    return rv;
}

int adminRestoreFrom(struct cairn *db, const char *spec, char *errmsg)
{
    char url[PATH_MAX];
    char id[BACKUP_ID_SIZE] = "";
    char real_from[PATH_MAX];
    char real_own[PATH_MAX];
    const char *hash = strrchr(spec, '#');
    const char *local;
    struct repo *from = NULL;
    struct backup_info info;
    struct stat st;
    uint64_t index = 0;
    int64_t tables = 0;
    size_t len = hash ? (size_t)(hash - spec) : strlen(spec);
    int rv;

    if (len >= sizeof url || (hash != NULL && strlen(hash + 1) >= sizeof id)) {
        errorf(errmsg, "--restore-from: repository or backup id too long");
        return CAIRN_EINVAL;
    }
    snprintf(url, sizeof url, "%.*s", (int)len, spec);
    if (hash != NULL) {
        snprintf(id, sizeof id, "%s", hash + 1);
        if (id[0] == '\0' || strchr(id, '/') != NULL) {
            errorf(errmsg, "--restore-from %s: '#' must be followed by a backup id", spec);
            return CAIRN_EINVAL;
        }
    }
    if ((rv = repoOpen(url, &from, errmsg)) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "--restore-from: %s", why);
        return rv;
    }
    local = repoLocalPath(from);
    if (local != NULL && (stat(local, &st) != 0 || !S_ISDIR(st.st_mode))) {
        errorf(errmsg, "--restore-from: the repository %s %s", local,
               errno == ENOENT ? "does not exist" : "is not a directory");
        rv = CAIRN_ENOTFOUND;
        goto out;
    }
    if ((rv = userSchemaCount(db, &tables, errmsg)) != 0) {
        goto out;
    }
    if (tables > 0) {
        dbLog(db, "--restore-from %s: the database already holds %lld table(s), index(es), "
                  "view(s) or trigger(s): nothing restored (only an empty database is)",
              spec, (long long)tables);
        goto out;
    }
    {
        /* With an archive in the repository: "" or "latest" is the newest backup plus
         * the archive replayed to its head, digits an index of the archive's history,
         * an ISO-8601 time a moment of it. */
        bool digits = id[0] != '\0' && strspn(id, "0123456789") == strlen(id);
        int64_t t = 0;
        bool at_time = !digits && libParseIso8601(id, &t) == 0; /* ids are 20261203T...Z-... */
        bool archive = false;
        /* A listing that failed is no answer: taken for "no archive", the node would
         * start from the newest backup, an older state than the archive's head. */
        if ((id[0] == '\0' || strcmp(id, "latest") == 0 || digits || at_time) &&
            (rv = holdsArchive(from, &archive, errmsg)) != 0) {
            char why[CAIRN_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", errmsg);
            errorf(errmsg, "--restore-from %s: cannot tell whether it holds an archive: %s",
                   url, why);
            goto out;
        }
        if (archive) {
            struct pitr_result res;
            rv = restoreFromArchive(db, url,
                                    digits ? PITR_INDEX : at_time ? PITR_TIME : PITR_LATEST,
                                    digits ? strtoull(id, NULL, 10) : 0, t, 0, &res, &info,
                                    &index, errmsg);
            if (rv != 0) {
                char why[CAIRN_ERRMSG_SIZE];
                snprintf(why, sizeof why, "%s", errmsg);
                errorf(errmsg, "--restore-from %s: %s", url, why);
            }
            goto out;
        }
        if (digits || at_time) {
            errorf(errmsg, "--restore-from %s: %s names a point of the archive, and %s holds "
                           "none", spec, id, url);
            rv = CAIRN_ENOTFOUND;
            goto out;
        }
    }
    if (id[0] != '\0') {
        rv = repoFindIn(from, id, &info, errmsg);
    } else {
        struct backup_info *list = NULL;
        size_t n = 0;
        rv = repoListIn(from, &list, &n, errmsg);
        for (size_t i = n; rv == 0 && i-- > 0;) {
            if (list[i].error[0] == '\0') {
                info = list[i];
                snprintf(id, sizeof id, "%s", info.id);
                break;
            }
        }
        free(list);
        if (rv == 0 && id[0] == '\0') {
            errorf(errmsg, "--restore-from: no readable backup in %s", url);
            rv = CAIRN_ENOTFOUND;
        }
    }
    if (rv != 0) {
        goto out;
    }
    if (local == NULL || realpath(local, real_from) == NULL ||
        realpath(db->backup_dir, real_own) == NULL || strcmp(real_from, real_own) != 0) {
        if ((rv = copyChain(db, from, id, errmsg)) != 0) {
            goto out;
        }
    }
    if ((rv = restoreLive(db, id, &info, &index, errmsg)) != 0) {
        goto out;
    }
    dbLog(db, "restored backup %s (%s, %llu pages, index %llu of %s) from %s at log index %llu",
          info.id, backupTypeName(info.type), (unsigned long long)info.page_count,
          (unsigned long long)info.raft_index, info.source, url, (unsigned long long)index);
out:
    repoClose(from);
    return rv;
}

/* ---- result rows ------------------------------------------------------------------- */

/* A value for rowOf: text (s != NULL), or an integer. */
struct cell {
    const char *s;
    int64_t i;
    bool null;
};

static int rowOf(struct cairn_result *res, size_t n, const char *const *names,
                 const struct cell *cells)
{
    struct rstmt *rs = resultAdd(res);
    struct rvalue *v;
    const char *types[16];
    if (rs == NULL || n > 16) {
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        types[i] = cells[i].null ? "text" : cells[i].s != NULL ? "text" : "integer";
    }
    rs->rows_shape = true;
    if (resultColumns(rs, n, names, types) != 0 || (v = resultRow(rs)) == NULL) {
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (cells[i].null) {
            v[i].type = CAIRN_NULL;
        } else if (cells[i].s != NULL) {
            v[i].type = CAIRN_TEXT;
            if (resultBytes(rs, &v[i], cells[i].s, strlen(cells[i].s)) != 0) {
                return CAIRN_ENOMEM;
            }
        } else {
            v[i].type = CAIRN_INTEGER;
            v[i].i = cells[i].i;
        }
    }
    return 0;
}

#define TEXT(x) ((struct cell){.s = (x)})
#define INT(x) ((struct cell){.i = (int64_t)(x)})
#define TEXT_OR_NULL(x) ((x)[0] ? TEXT(x) : (struct cell){.null = true})

/* RESTORE ... AS OF: one row saying where the replay stopped and from which base. */
static int restoreAsOfRow(struct cairn *db, const struct sqlfront_cmd *cmd,
                          const struct timespec *t0, struct cairn_result *res, char *errmsg)
{
    static const char *const cols[] = {"operation",  "backup_id",        "type",
                                       "branch",     "path",             "duration_ms",
                                       "raft_index", "as_of_index",      "as_of_time",
                                       "timeline",   "entries_replayed", "kept_as"};
    enum pitr_kind kind = cmd->asof == SQLFRONT_ASOF_INDEX  ? PITR_INDEX
                          : cmd->asof == SQLFRONT_ASOF_TIME ? PITR_TIME
                                                            : PITR_LATEST;
    struct pitr_result pr;
    struct backup_info info;
    struct timespec t1;
    char path[PATH_MAX];
    char when[LIB_ISO8601_SIZE] = "";
    uint64_t at = 0;
    int rv = adminRestoreAsOf(db, cmd->id, cmd->branch, kind, cmd->asof_index, cmd->asof_ms,
                              &pr, &info, &at, errmsg);
    if (rv != 0) {
        return rv;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (cmd->branch[0] != '\0') {
        branchFile(db, cmd->branch, path, errmsg);
    } else {
        snprintf(path, sizeof path, "%s", db->db_path);
    }
    if (pr.stop_ms != 0) {
        libIso8601(pr.stop_ms, LIB_ISO8601_MS, when);
    }
    struct cell c[] = {TEXT(cmd->branch[0] ? "restore to branch" : "restore"),
                       TEXT(pr.base.id),
                       TEXT(backupTypeName(pr.base.type)),
                       TEXT_OR_NULL(cmd->branch),
                       TEXT(path),
                       INT((t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000),
                       INT(at),
                       INT(pr.stop_index),
                       TEXT_OR_NULL(when),
                       TEXT_OR_NULL(pr.timeline),
                       INT(pr.entries),
                       cmd->branch[0] ? (struct cell){.null = true} : TEXT(info.id)};
    return rowOf(res, 12, cols, c);
}

int adminStatement(struct cairn *db, const struct sqlfront_cmd *cmd, struct cairn_result **out,
                   char *errmsg)
{
    static const char *const cols[] = {"operation", "backup_id", "type",
                                       "parent_id", "pages",     "size_bytes",
                                       "path",      "duration_ms", "raft_index",
                                       "repository"};
    static const char *const rcols[] = {"operation", "backup_id", "type",
                                        "branch",    "pages",     "size_bytes",
                                        "path",      "duration_ms", "raft_index"};
    static const char *const dcols[] = {"operation", "branch"};
    struct cairn_result *res = resultNew();
    struct backup_info info;
    struct timespec t0, t1;
    uint64_t index = 0;
    char path[PATH_MAX];
    int rv = 0;

    *out = NULL;
    if (res == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    switch (cmd->kind) {
        case SQLFRONT_BACKUP:
            rv = adminBackup(db, cmd->backup_type, cmd->to[0] ? cmd->to : NULL, NULL, NULL,
                             &info, errmsg);
            if (rv == 0) {
                struct cell c[] = {TEXT("backup"),       TEXT(info.id),
                                   TEXT(backupTypeName(info.type)),
                                   TEXT_OR_NULL(info.parent_id), INT(info.pages),
                                   INT(info.size_bytes),   TEXT(info.path),
                                   INT(info.duration_ms),  INT(info.raft_index),
                                   TEXT(info.repository)};
                rv = rowOf(res, 10, cols, c);
            }
            break;
        case SQLFRONT_RESTORE:
            if (cmd->asof != SQLFRONT_ASOF_NONE) {
                rv = restoreAsOfRow(db, cmd, &t0, res, errmsg);
                break;
            }
            rv = adminRestore(db, cmd->id, cmd->branch, NULL, NULL, &info, &index, errmsg);
            if (rv == 0) {
                clock_gettime(CLOCK_MONOTONIC, &t1);
                int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
                if (cmd->branch[0] != '\0') {
                    branchFile(db, cmd->branch, path, errmsg);
                } else {
                    snprintf(path, sizeof path, "%s", db->db_path);
                }
                struct cell c[] = {TEXT(cmd->branch[0] ? "restore to branch" : "restore"),
                                   TEXT(info.id), TEXT(backupTypeName(info.type)),
                                   TEXT_OR_NULL(cmd->branch), INT(info.page_count),
                                   INT(info.size_bytes), TEXT(path), INT(ms),
                                   cmd->branch[0] ? INT(info.raft_index) : INT(index)};
                rv = rowOf(res, 9, rcols, c);
            }
            break;
        case SQLFRONT_DROP_BRANCH:
            rv = adminDropBranch(db, cmd->branch, errmsg);
            if (rv == 0) {
                struct cell c[] = {TEXT("drop branch"), TEXT(cmd->branch)};
                rv = rowOf(res, 2, dcols, c);
            }
            break;
        default:
            errorf(errmsg, "not a cairn statement");
            rv = CAIRN_EINVAL;
    }
    if (rv == CAIRN_ENOMEM) {
        errorf(errmsg, "out of memory");
    }
    if (rv != 0) {
        cairn_result_free(res);
        return rv;
    }
    *out = res;
    return 0;
}

/* ---- the restore entry ----------------------------------------------------------- */

int adminSetAppliedIndex(const char *path, uint64_t index, char *errmsg)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    /* A database of cairn's: written through the page-checksum VFS (pagesum.h). */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db,
                          "CREATE TABLE IF NOT EXISTS _cairn_meta(key TEXT PRIMARY KEY, "
                          "value INTEGER NOT NULL) WITHOUT ROWID",
                          NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO _cairn_meta VALUES('applied_index', ?)",
                                -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    if (rc != SQLITE_OK) {
        errorf(errmsg, "%s: set applied index: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : CAIRN_EIO;
}

static double msBetween(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* The backup id, its digest, and whether it is the PREPARE entry, of a BATCH_RESTORE
 * entry: false when malformed. */
static bool restoreEntry(const struct batch *b, char id[BACKUP_ID_SIZE],
                         const unsigned char **digest, bool *prepare)
{
    const struct stmt *st = &b->stmts[0];
    if (b->n != 1 || st->sql_len == 0 || st->sql_len >= BACKUP_ID_SIZE || st->nparams < 1 ||
        st->nparams > 2 || st->params[0].type != CAIRN_BLOB ||
        st->params[0].n != BACKUP_DIGEST_SIZE) {
        return false;
    }
    *prepare = st->nparams == 2;
    if (*prepare && (st->params[1].type != CAIRN_TEXT ||
                     st->params[1].n != strlen(RESTORE_PREPARE) ||
                     memcmp(st->params[1].s, RESTORE_PREPARE, st->params[1].n) != 0)) {
        return false;
    }
    memcpy(id, st->sql, st->sql_len);
    id[st->sql_len] = '\0';
    *digest = (const unsigned char *)st->params[0].s;
    return true;
}

bool adminRestoreReady(void *data, const struct batch *b, uint64_t index)
{
    struct cairn *db = data;
    char id[BACKUP_ID_SIZE];
    const unsigned char *digest;
    bool prepare;
    if (b->kind != BATCH_RESTORE || index <= storeAppliedIndex(db->store) ||
        !restoreEntry(b, id, &digest, &prepare) || prepare) {
        return true;
    }
    return lrReady(db, id, digest);
}

int adminApplyRestore(void *data, const struct batch *b, uint64_t index,
                      struct cairn_result **out, char *errmsg)
{
    struct cairn *db = data;
    struct cairn_result *res;
    struct rstmt *rs;
    struct backup_info info;
    char id[BACKUP_ID_SIZE];
    const unsigned char *digest;
    bool prepare;
    bool prepared = false;
    struct timespec t0, t_stamp, t_move;
    char tmp[PATH_MAX];
    char msg[CAIRN_ERRMSG_SIZE];
    int rv;

    *out = NULL;
    assert(nodeOnLoop(NULL));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (index <= storeAppliedIndex(db->store)) {
        return 0; /* replay of an entry already in the database */
    }
    res = resultNew();
    if (res == NULL || (rs = resultAdd(res)) == NULL) {
        cairn_result_free(res);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    res->raft_index = index;
    *out = res;
    /* A malformed entry is answered in the result and leaves the database as it was:
     * every node holds the same entry and fails the same way. A backup this node cannot
     * restore is its own failure (below). */
    if (!restoreEntry(b, id, &digest, &prepare)) {
        resultError(rs, "malformed restore entry: expected a backup id and its digest");
        return 0;
    }
    if (prepare) {
        lrStart(db, id, digest); /* off the loop; the database is not touched */
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s.restored", db->db_path);
    if (lrPreparing(db, id, digest)) {
        /* A leader (a follower holds the entry until its copy is ready, fsm.c): the
         * copy being made is the quickest way to apply it. */
        lrWait(db, id, digest, msg);
    }
    if (lrTake(db, id, digest, tmp, &info)) {
        if (dbDiverged(db, NULL, 0)) {
            dbSetDiverged(db, NULL);
        }
        prepared = true;
        goto swap;
    }
    if (dbDiverged(db, NULL, 0) && time(NULL) < db->diverged_next_fetch) {
        /* Asked the peers a moment ago (the fsm tries again every 200 ms). */
        char why[CAIRN_ERRMSG_SIZE];
        dbDiverged(db, why, sizeof why);
        cairn_result_free(res);
        *out = NULL;
        errorf(errmsg, "%s", why);
        return CAIRN_ENOTFOUND;
    }
    /* Not prepared (a replay of the log, or the preparation failed): restored here, on
     * the loop, as the entry's apply. */
    if ((rv = adminRestoreCopy(db, id, digest, tmp, &info, msg)) != 0 &&
        (rv == CAIRN_ESHUTDOWN || repoTransfersStopped())) {
        /* Cut by the node's stop (its reads of a remote repository end at once,
         * repoStopTransfers): not a backup this node cannot restore. The entry stays
         * unapplied, and is applied again at the next start. */
        unlink(tmp);
        cairn_result_free(res);
        *out = NULL;
        errorf(errmsg, "log entry %llu restores backup %s: the node is stopping (%s)",
               (unsigned long long)index, id, msg);
        return CAIRN_ESHUTDOWN;
    }
    if (rv != 0) {
        /* The proposer restored this file before it proposed the entry, and every node
         * that can restores it. This one cannot (the backup missing here and at every
         * peer asked, its copy damaged, its disk): were it to go on, its rows would
         * differ from every other node's. It stops here (the fsm waits and tries again,
         * fetching from the cluster each time), says so everywhere, and serves nothing
         * until it has restored the backup or is repaired from a peer. */
        char why[CAIRN_ERRMSG_SIZE];
        unlink(tmp);
        snprintf(why, sizeof why,
                 "log entry %llu restores backup %s, which this node cannot restore (%s); it "
                 "applies nothing past it until it can, or until `cairn repair --from-peer URL "
                 "DATA` replaces its database",
                 (unsigned long long)index, id, msg);
        if (!dbDiverged(db, NULL, 0)) {
            dbLog(db, "%s", why);
        }
        dbSetDiverged(db, why);
        db->diverged_next_fetch = time(NULL) + (rv == CAIRN_ENOTFOUND ? 2 : 10);
        cairn_result_free(res);
        *out = NULL;
        errorf(errmsg, "%s", why);
        return rv == CAIRN_ENOTFOUND ? CAIRN_ENOTFOUND : CAIRN_EIO;
    }
    if (dbDiverged(db, NULL, 0)) {
        dbLog(db, "restore entry %llu: backup %s restored: this node catches up with the cluster",
              (unsigned long long)index, id);
        dbSetDiverged(db, NULL);
    }
swap:
    clock_gettime(CLOCK_MONOTONIC, &t_stamp);
    if ((rv = adminSetAppliedIndex(tmp, index, errmsg)) != 0) {
        /* This node's own failure (its disk): skipping the entry would leave it
         * differing from the others, so the entry is applied again (fsm.c). */
        unlink(tmp);
        cairn_result_free(res);
        *out = NULL;
        return rv;
    }
    clock_gettime(CLOCK_MONOTONIC, &t_move);
    rv = storeReplaceMove(db->store, tmp, errmsg);
    if (rv != 0) {
        unlink(tmp);
        cairn_result_free(res);
        *out = NULL;
        return rv;
    }
    rs->rows_affected = (int64_t)info.page_count;
    if (prepared) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        dbLog(db, "live restore: backup %s swapped in at entry %llu in %.1f ms (stamping the "
                  "index %.1f ms, replacing the file %.1f ms)",
              id, (unsigned long long)index, msBetween(&t0, &t1), msBetween(&t_stamp, &t_move),
              msBetween(&t_move, &t1));
    }
    return 0;
}

/* ---- replica digests ------------------------------------------------------------- */

int adminProposeDigest(struct cairn *db, uint64_t *index, char *errmsg)
{
    struct batch b;
    struct cairn_result *res = NULL;
    int rv;
    memset(&b, 0, sizeof b);
    b.kind = BATCH_DIGEST;
    rv = dbPropose(db, &b, &res, errmsg);
    if (rv == 0) {
        *index = res->raft_index;
    }
    cairn_result_free(res);
    return rv;
}

/* The slot for index (a new one, the oldest reused, when create). gmu held. */
static struct db_digest *digestSlot(struct cairn *db, uint64_t index, bool create)
{
    size_t n = sizeof db->digests / sizeof db->digests[0];
    size_t oldest = 0;
    for (size_t i = 0; i < n; i++) {
        if (db->digests[i].state != 0 && db->digests[i].index == index) {
            return &db->digests[i];
        }
        if (db->digests[i].index < db->digests[oldest].index) {
            oldest = i;
        }
    }
    if (!create) {
        return NULL;
    }
    memset(&db->digests[oldest], 0, sizeof db->digests[oldest]);
    db->digests[oldest].index = index;
    return &db->digests[oldest];
}

static void digestFinish(struct cairn *db, uint64_t index, int state, uint64_t digest,
                         uint64_t pages, const char *error)
{
    struct db_digest *d;
    pthread_mutex_lock(&db->gmu);
    d = digestSlot(db, index, true);
    d->state = state;
    d->digest = digest;
    d->pages = pages;
    snprintf(d->error, sizeof d->error, "%s", error != NULL ? error : "");
    pthread_mutex_unlock(&db->gmu);
}

struct digest_job {
    struct cairn *db;
    struct store_freeze fz;
    uint64_t index;
};

/* Read the frozen image page by page (bounded memory) into one XXH3-64. */
static void *digestMain(void *arg)
{
    struct digest_job *j = arg;
    struct cairn *db = j->db;
    unsigned char hdr[100];
    unsigned char *page = NULL;
    XXH3_state_t *st = XXH3_createState();
    char error[200] = "";
    uint64_t pages = 0;
    size_t psize = 0;
    unsigned reserve = 0;
    off_t off;

    if (st == NULL || XXH3_64bits_reset(st) != XXH_OK) {
        snprintf(error, sizeof error, "out of memory");
        goto out;
    }
    if (pread(j->fz.fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        snprintf(error, sizeof error, "cannot read the database header: %s", strerror(errno));
        goto out;
    }
    psize = ((size_t)hdr[16] << 8) | hdr[17];
    psize = psize == 1 ? 65536 : psize;
    reserve = hdr[20];
    if (psize < 512 || psize > 65536 || reserve >= psize || (page = malloc(psize)) == NULL) {
        snprintf(error, sizeof error, "bad page size %zu in the header, or out of memory", psize);
        goto out;
    }
    for (off = 0;; off += (off_t)psize) {
        ssize_t got = pread(j->fz.fd, page, psize, off);
        if (got == 0) {
            break;
        }
        if (got != (ssize_t)psize) {
            snprintf(error, sizeof error, "cannot read the page at offset %lld: %s",
                     (long long)off, got < 0 ? strerror(errno) : "short read");
            goto out;
        }
        if (atomic_load(&db->digest_stop)) {
            snprintf(error, sizeof error, "the node is stopping");
            goto out;
        }
        if (off == 0) {
            memset(page + 18, 0, 2); /* WAL or not */
            memset(page + 24, 0, 4); /* change counter */
            memset(page + 92, 0, 8); /* version-valid-for, SQLite version */
        }
        memset(page + psize - reserve, 0, reserve); /* page checksums cover the above */
        XXH3_64bits_update(st, page, psize);
        pages++;
    }
out:
    storeThaw(&j->fz);
    digestFinish(db, j->index, error[0] ? DIGEST_FAILED : DIGEST_DONE,
                 error[0] ? 0 : XXH3_64bits_digest(st), pages, error);
    XXH3_freeState(st);
    free(page);
    free(j);
    pthread_mutex_lock(&db->gmu);
    db->digest_threads--;
    pthread_cond_broadcast(&db->gcond);
    pthread_mutex_unlock(&db->gmu);
    return NULL;
}

void adminApplyDigest(void *data, uint64_t index)
{
    struct cairn *db = data;
    struct digest_job *j = calloc(1, sizeof *j);
    char errmsg[CAIRN_ERRMSG_SIZE];
    pthread_t th;
    pthread_attr_t attr;
    int rv;

    pthread_mutex_lock(&db->gmu);
    digestSlot(db, index, true)->state = DIGEST_PENDING;
    pthread_mutex_unlock(&db->gmu);
    if (j == NULL) {
        digestFinish(db, index, DIGEST_FAILED, 0, 0, "out of memory");
        return;
    }
    j->db = db;
    j->index = index;
    /* The image as of this entry: the loop is between applies, nothing is open. */
    rv = storeFreeze(db->store, &j->fz, errmsg);
    if (rv != 0) {
        digestFinish(db, index, DIGEST_FAILED, 0, 0,
                     rv == CAIRN_EBUSY ? "a long read held the database: ask again" : errmsg);
        free(j);
        return;
    }
    pthread_mutex_lock(&db->gmu);
    db->digest_threads++;
    pthread_mutex_unlock(&db->gmu);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rv = pthread_create(&th, &attr, digestMain, j);
    pthread_attr_destroy(&attr);
    if (rv != 0) {
        storeThaw(&j->fz);
        free(j);
        digestFinish(db, index, DIGEST_FAILED, 0, 0, "cannot start the digest thread");
        pthread_mutex_lock(&db->gmu);
        db->digest_threads--;
        pthread_mutex_unlock(&db->gmu);
    }
}

int adminDigest(struct cairn *db, uint64_t index, struct db_digest *out)
{
    struct db_digest *d;
    int rv = CAIRN_ENOTFOUND;
    pthread_mutex_lock(&db->gmu);
    d = digestSlot(db, index, false);
    if (d != NULL) {
        *out = *d;
        rv = 0;
    }
    pthread_mutex_unlock(&db->gmu);
    return rv;
}

void adminDigestsStop(struct cairn *db)
{
    atomic_store(&db->digest_stop, true);
    pthread_mutex_lock(&db->gmu);
    while (db->digest_threads > 0) {
        pthread_cond_wait(&db->gcond, &db->gmu);
    }
    pthread_mutex_unlock(&db->gmu);
}
