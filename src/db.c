/* The cairn handle and the embedded API (see db.h and include/cairn.h).
 * Any thread. */
#define _GNU_SOURCE
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <jansson.h>
#include <raft.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "admin.h"
#include "archive.h"
#include "cluster.h"
#include "heal.h"
#include "liverestore.h"
#include "http.h"
#include "pagesum.h"
#include "path.h"
#include "policy.h"
#include "sqlfront.h"
#include "lock.h"
#include "lib.h"

#define START_TIMEOUT_MS 30000

/* The message of the calling thread's last failure (see cairn_errmsg). */
static _Thread_local char tlsErrmsg[CAIRN_ERRMSG_SIZE];

const char *cairn_strerror(int rc)
{
    return errorString(rc);
}

const char *cairn_errmsg(cairn *db)
{
    (void)db;
    return tlsErrmsg;
}

void cairn_config_init(struct cairn_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
}

int dbLevelFromName(const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "weak") == 0) {
        return CAIRN_LEVEL_WEAK;
    }
    if (strcmp(name, "none") == 0) {
        return CAIRN_LEVEL_NONE;
    }
    if (strcmp(name, "linearizable") == 0) {
        return CAIRN_LEVEL_LINEARIZABLE;
    }
    if (strcmp(name, "strong") == 0) {
        return CAIRN_LEVEL_STRONG;
    }
    return -1;
}

static int64_t wallMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t randomSeed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed = (uint64_t)wallMs() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    }
    return seed;
}

void dbLog(struct cairn *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logLinev(db->cfg.log, db->cfg.log_data, fmt, ap);
    va_end(ap);
}

/* The growth bound a write entry carries (command.h) for max_write_growth. */
static uint32_t growthMib(uint64_t bytes)
{
    if (bytes == CAIRN_NO_GROWTH_BOUND) {
        return 0;
    }
    if (bytes == 0) {
        bytes = POLICY_DEFAULT_MAX_GROWTH;
    }
    if (bytes >= POLICY_MAX_GROWTH_CAP) {
        return (uint32_t)(POLICY_MAX_GROWTH_CAP >> 20);
    }
    return (uint32_t)((bytes + (1u << 20) - 1) >> 20);
}

int dbPropose(struct cairn *db, struct batch *b, struct cairn_result **out, char *errmsg)
{
    struct buf enc;
    int rv;
    b->time_ms = wallMs();
    b->seed = randomSeed();
    /* Every node applies the entry under the leader's limits (policy.h). */
    b->max_steps = db->cfg.write_step_limit ? db->cfg.write_step_limit
                                            : POLICY_DEFAULT_WRITE_STEPS;
    b->max_length = db->cfg.max_value_size ? db->cfg.max_value_size : POLICY_DEFAULT_MAX_LENGTH;
    /* 0 for the default, which builds before the field read as zero and refused
     * otherwise: only a node told another limit writes entries they cannot apply. */
    b->max_temp_mib = db->cfg.max_temp_size == 0 ? 0
                      : db->cfg.max_temp_size >= POLICY_MAX_TEMP_CAP
                          ? (uint32_t)(POLICY_MAX_TEMP_CAP >> 20)
                          : (uint32_t)((db->cfg.max_temp_size + (1u << 20) - 1) >> 20);
    b->max_growth_mib = growthMib(db->cfg.max_write_growth);
    bufInit(&enc);
    commandEncode(b, &enc);
    if (enc.oom) {
        bufFree(&enc);
        errorf(errmsg, "out of memory encoding the command");
        return CAIRN_ENOMEM;
    }
    /* The encoded command becomes the log entry's payload as it is (nodeApply), cut
     * to its length first: libraft keeps it in memory, and the buffer grew by doubling. */
    if (enc.cap > enc.len + 1) {
        char *fit = realloc(enc.p, enc.len);
        if (fit != NULL) {
            enc.p = fit;
        }
    }
    rv = nodeApply(db->node, enc.p, enc.len, b, out, errmsg);
    enc.p = NULL;
    enc.len = enc.cap = 0;
    if (rv == 0 && *out != NULL && archiveSync(db->archiver) && b->kind != BATCH_RESTORE &&
        !(b->flags & BATCH_META) && atomic_load(&db->running)) {
        /* --archive-sync: the answer waits until the entry is in the repository (the
         * archiver uploads it now, with every other entry waiting). On this node, the
         * leader, which proposed it: a write sent to a follower is forwarded here and
         * its answer relayed. Not the restore entries, which --restore-from proposes
         * before the archiver runs. */
        if ((rv = archiveWait(db->archiver, (*out)->raft_index, errmsg)) != 0) {
            cairn_result_free(*out);
            *out = NULL;
        }
    }
    return rv;
}

/* Does a statement of b name the cairn_backups table? */
/* Is statement i's text the same as the one before it? Bulk requests repeat one
 * statement thousands of times: what was checked once need not be checked again. */
static bool sameAsPrevious(const struct batch *b, size_t i)
{
    const struct stmt *s = &b->stmts[i];
    return i > 0 && s->sql_len == s[-1].sql_len &&
           (s->sql == s[-1].sql || memcmp(s->sql, s[-1].sql, s->sql_len) == 0);
}

static bool readsCatalog(const struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const char *p = b->stmts[i].sql;
        size_t n = b->stmts[i].sql_len;
        if (sameAsPrevious(b, i)) {
            continue;
        }
        for (size_t k = 0; k + 13 <= n; k++) {
            if ((p[k] | 0x20) == 'c' && strncasecmp(p + k, "cairn_backups", 13) == 0) {
                return true;
            }
        }
    }
    return false;
}

void dbSetDiverged(struct cairn *db, const char *msg)
{
    char path[PATH_MAX];
    char err[CAIRN_ERRMSG_SIZE];
    snprintf(path, sizeof path, "%s/%s", db->data_dir, DIVERGED_FILE);
    pthread_mutex_lock(&db->dmu);
    snprintf(db->diverged, sizeof db->diverged, "%s", msg != NULL ? msg : "");
    pthread_mutex_unlock(&db->dmu);
    if (msg == NULL) {
        if (unlink(path) == 0) {
            libSyncParentDir(path, err);
        }
        return;
    }
    if (libWriteFileAtomic(path, msg, strlen(msg), 0, err) != 0) {
        dbLog(db, "cannot record that this node differs from the cluster: %s", err);
    }
}

bool dbDiverged(struct cairn *db, char *out, size_t n)
{
    bool yes;
    pthread_mutex_lock(&db->dmu);
    yes = db->diverged[0] != '\0';
    if (out != NULL && n > 0) {
        snprintf(out, n, "%s", db->diverged);
    }
    pthread_mutex_unlock(&db->dmu);
    return yes;
}

bool dbRemoved(struct cairn *db, char *out, size_t n)
{
    bool yes;
    pthread_mutex_lock(&db->amu);
    yes = db->removed[0] != '\0';
    if (out != NULL && n > 0) {
        snprintf(out, n, "%s", db->removed);
    }
    pthread_mutex_unlock(&db->amu);
    return yes;
}

int dbRun(struct cairn *db, struct batch *b, enum cairn_level level,
          struct cairn_result **out, char *errmsg)
{
    struct node_info info;
    bool read_only;
    int rv;

    *out = NULL;
    if (b->kind != BATCH_RESTORE) {
        /* cairn's own statements (BACKUP, RESTORE, DROP BRANCH) never reach SQLite. */
        for (size_t i = 0; i < b->n; i++) {
            struct sqlfront_cmd cmd;
            if (sameAsPrevious(b, i)) {
                continue;
            }
            rv = sqlfrontParse(b->stmts[i].sql, b->stmts[i].sql_len, &cmd, errmsg);
            if (rv == 0 && cmd.kind == SQLFRONT_NONE) {
                continue;
            }
            if (rv == 0 && b->n != 1) {
                errorf(errmsg, "statement %zu is a cairn statement (%.*s...): send it as the "
                               "only statement of its request", i + 1,
                       (int)(b->stmts[i].sql_len > 24 ? 24 : b->stmts[i].sql_len),
                       b->stmts[i].sql);
                rv = CAIRN_EINVAL;
            }
            if (rv == 0 && b->stmts[i].nparams > 0) {
                /* Not bound anywhere: ignored, they would leave the statement to mean
                 * something other than what its sender meant. */
                errorf(errmsg, "statement %zu is a cairn statement (%.*s...), which takes no "
                               "parameters, and %zu were given: write the values into it as "
                               "quoted strings", i + 1,
                       (int)(b->stmts[i].sql_len > 24 ? 24 : b->stmts[i].sql_len),
                       b->stmts[i].sql, b->stmts[i].nparams);
                rv = CAIRN_EINVAL;
            }
            if (rv == 0 && b->kind == BATCH_QUERY && cmd.kind != SQLFRONT_BACKUP) {
                errorf(errmsg, "RESTORE and DROP BRANCH change data: send them to "
                               "/db/execute or /db/request");
                rv = CAIRN_EINVAL;
            }
            if (rv != 0) {
                return rv;
            }
            return adminStatement(db, &cmd, out, errmsg);
        }
    }
    if (b->kind == BATCH_RESTORE || (b->flags & BATCH_META)) {
        return dbPropose(db, b, out, errmsg);
    }
    {
        char why[CAIRN_ERRMSG_SIZE];
        if (dbDiverged(db, why, sizeof why)) {
            /* Its rows are not the cluster's: never served. */
            errorf(errmsg, "this node's database differs from the cluster's, so it serves "
                           "nothing: %s", why);
            return CAIRN_EBUSY;
        }
        if (dbRemoved(db, why, sizeof why)) {
            /* Its copy stopped at its removal and never catches up again. */
            errorf(errmsg, "%s", why);
            return CAIRN_EBUSY;
        }
    }
    /* The statement policy, before anything is proposed or run. */
    if ((rv = storeCheck(db->store, b, &read_only, errmsg)) != 0) {
        return rv;
    }
    if (b->kind == BATCH_EXECUTE && read_only && readsCatalog(b)) {
        /* cairn_backups is this node's catalog, readable on reader connections only. */
        return storeQuery(db->store, b, out, errmsg);
    }
    if (!read_only && b->kind != BATCH_QUERY && readsCatalog(b)) {
        /* A write that read it would store each node's own list: replicas would differ. */
        errorf(errmsg, "cairn_backups is this node's catalog of backups, and each node's "
                       "differs: it can be read by a request that only reads (send its SELECT "
                       "on its own, or to /db/query), not by one that also writes");
        return CAIRN_EINVAL;
    }
    if (b->kind == BATCH_EXECUTE || (b->kind == BATCH_REQUEST && !read_only)) {
        if (b->will_write != NULL) {
            b->will_write(b->will_write_arg);
        }
        return dbPropose(db, b, out, errmsg);
    }
    switch (level) {
        case CAIRN_LEVEL_WEAK:
            nodeInfo(db->node, &info);
            if (info.state != RAFT_LEADER) {
                errorf(errmsg, "not leader: a weak read needs the leader (leader is %s)",
                       info.leader_address[0] ? info.leader_address : "unknown");
                return info.leader_id ? CAIRN_ENOTLEADER : CAIRN_ENOLEADER;
            }
            break;
        case CAIRN_LEVEL_STRONG:
            /* A read's SQL never enters the log (one that never ends would be run by
             * every node on every replay): leadership is confirmed through the log
             * with a barrier entry, which also waits until every earlier entry is
             * applied here, and the read runs on this node, the leader. */
        case CAIRN_LEVEL_LINEARIZABLE:
            rv = nodeBarrier(db->node, errmsg);
            if (rv != 0) {
                return rv;
            }
            break;
        default:
            break;
    }
    return storeQuery(db->store, b, out, errmsg);
}

/* ---- node.json: the node's identity, kept with its data ------------------------ */

/* path absolute, clean and with its symbolic links resolved when it exists, into out
 * (PATH_MAX). */
static void absolutePath(const char *path, char *out)
{
    if (realpath(path, out) == NULL) {
        pathAbsolute(path, out, PATH_MAX);
    }
}

/* A repository must not be one of cairn's own places: the data directory itself, or
 * what is in DATA/raft, DATA/branches and DATA/snapshots (the Raft snapshots'
 * repository, whose pruning deletes every older backup in it). */
static int checkRepositoryPlace(const char *data_dir, const char *name, const char *url,
                                char *errmsg)
{
    static const char *const OWN[] = {"", "/raft", "/branches", "/snapshots"};
    char data[PATH_MAX], repo[PATH_MAX], own[PATH_MAX + 16];
    if (strstr(url, "://") != NULL) {
        return 0;
    }
    absolutePath(data_dir, data);
    absolutePath(url, repo);
    for (size_t i = 0; i < sizeof OWN / sizeof OWN[0]; i++) {
        size_t n = (size_t)snprintf(own, sizeof own, "%s%s", data, OWN[i]);
        if (strncmp(repo, own, n) == 0 && (repo[n] == '\0' || (i > 0 && repo[n] == '/'))) {
            errorf(errmsg,
                   "repository '%s' (%s) is %s%s, a place of cairn's own (the data "
                   "directory, or its raft, branches or snapshots): name a directory of its "
                   "own",
                   name, url, own, i == 0 ? "" : " or in it");
            return CAIRN_EINVAL;
        }
    }
    return 0;
}

/* The node's repositories (reposet.h): --backup-dir, then each --repo NAME=URL. With
 * neither, "backups" beside the data directory (DATA's parent, plus "backups"). Paths
 * are made absolute, so that paths in the catalog mean the same to every reader. A URL
 * repository's scheme, bucket and credentials are checked now (no request is sent),
 * not at the first backup. */
static int configureRepositories(struct cairn *db, const struct cairn_config *cfg)
{
    int rv;
    if ((rv = reposetFromOptions(&db->repos, cfg->backup_dir, cfg->repositories, db->data_dir,
                                 tlsErrmsg)) != 0) {
        return rv;
    }
    for (unsigned i = 0; i < db->repos.n; i++) {
        if ((rv = checkRepositoryPlace(db->data_dir, db->repos.r[i].name, db->repos.r[i].url,
                                       tlsErrmsg)) != 0) {
            return rv;
        }
    }
    snprintf(db->backup_dir, sizeof db->backup_dir, "%s", db->repos.r[0].url);
    db->cfg.backup_dir = db->backup_dir;
    db->cfg.repositories = NULL; /* the caller's array: read here only */
    for (unsigned i = 0; i < db->repos.n; i++) {
        const char *url = db->repos.r[i].url;
        if (strstr(url, "://") != NULL) {
            struct repo *r = NULL;
            char why[CAIRN_ERRMSG_SIZE];
            rv = repoOpen(url, &r, why);
            repoClose(r);
            if (rv != 0) {
                if (i == 0 && cfg->backup_dir != NULL) {
                    errorf(tlsErrmsg, "--backup-dir: %s", why);
                } else {
                    errorf(tlsErrmsg, "repository '%s': %s", db->repos.r[i].name, why);
                }
                return rv;
            }
        }
    }
    return 0;
}

/* Split a comma-separated --join list into db->join. */
static int parseJoin(struct cairn *db, const char *list, char *errmsg)
{
    const char *p = list;
    db->n_join = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        char one[160];
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        if (len > 0) {
            if (db->n_join == sizeof db->join / sizeof db->join[0] || len >= sizeof one - 8) {
                errorf(errmsg, "--join: at most %zu addresses of up to 150 characters",
                       sizeof db->join / sizeof db->join[0]);
                return CAIRN_EINVAL;
            }
            memcpy(one, p, len);
            one[len] = '\0';
            clusterUrl(one, db->join[db->n_join], sizeof db->join[0]);
            db->n_join++;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return 0;
}

static int loadNodeIdentity(struct cairn *db, char *errmsg)
{
    char path[PATH_MAX];
    json_error_t jerr;
    json_t *root;
    json_t *id;
    char *text;
    int rv = 0;

    snprintf(path, sizeof path, "%s/node.json", db->data_dir);
    root = json_load_file(path, 0, &jerr);
    if (root != NULL) {
        id = json_object_get(root, "node_id");
        if (!json_is_integer(id) || json_integer_value(id) <= 0) {
            errorf(errmsg, "%s: \"node_id\" must be a positive integer", path);
            json_decref(root);
            return CAIRN_ECORRUPT;
        }
        if (db->cfg.node_id != 0 && (uint64_t)json_integer_value(id) != db->cfg.node_id) {
            errorf(errmsg, "data directory %s belongs to node %lld, not node %llu", db->data_dir,
                   (long long)json_integer_value(id), (unsigned long long)db->cfg.node_id);
            json_decref(root);
            return CAIRN_EINVAL;
        }
        db->cfg.node_id = (uint64_t)json_integer_value(id);
        if (db->n_join == 0) {
            /* A cluster member restarted without --join: the peers it was given. */
            json_t *join = json_object_get(root, "join");
            if (json_is_string(join)) {
                rv = parseJoin(db, json_string_value(join), errmsg);
            }
            json_t *expect = json_object_get(root, "bootstrap_expect");
            if (json_is_integer(expect) && db->bootstrap_expect == 0) {
                db->bootstrap_expect = (unsigned)json_integer_value(expect);
            }
        }
        json_decref(root);
        return rv;
    }
    if (access(path, F_OK) == 0) {
        errorf(errmsg, "%s is not valid JSON (line %d: %s)", path, jerr.line, jerr.text);
        return CAIRN_ECORRUPT;
    }
    if (db->cfg.node_id == 0) {
        db->cfg.node_id = 1;
    }
    root = json_pack("{s:I, s:s, s:s, s:s, s:I}", "node_id", (json_int_t)db->cfg.node_id,
                     "raft_addr", db->cfg.raft_addr ? db->cfg.raft_addr : "", "http_addr",
                     db->cfg.http_addr ? db->cfg.http_addr : "", "join",
                     db->cfg.join ? db->cfg.join : "", "bootstrap_expect",
                     (json_int_t)db->bootstrap_expect);
    text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (text == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    rv = libWriteFileAtomic(path, text, strlen(text), 0, errmsg);
    free(text);
    return rv;
}

/* Refuse to start when an address cannot be bound, before anything is written: the
 * operator gets "address in use" rather than a node that bootstraps and then fails.
 * (The address is bound for real later; another process may still take it between.) */
/* Whether addr can be bound; *held (if not NULL) keeps the socket bound (not
 * listening), else it is closed. */
static int checkBindable(const char *addr, const char *what, int *held, char *errmsg)
{
    struct sockaddr_in sa;
    int fd;
    int rv = addrParse(addr, what, &sa, errmsg);
    if (rv == CAIRN_ENOTFOUND) {
        return 0; /* not an IPv4 literal: the real bind reports it */
    }
    if (rv != 0) {
        return rv;
    }
    fd = addrBind(&sa);
    if (fd < 0) {
        int e = errno;
        errorf(errmsg, "cannot use %s address %s: %s", what, addr, strerror(e));
        return e == EADDRINUSE ? CAIRN_EBUSY : CAIRN_EINVAL;
    }
    if (held != NULL) {
        *held = fd;
    } else {
        close(fd);
    }
    return 0;
}

static void releaseRaftAddress(struct cairn *db)
{
    if (db->raft_hold_fd >= 0) {
        close(db->raft_hold_fd);
        db->raft_hold_fd = -1;
    }
}

/* ---- open and close -------------------------------------------------------------- */

static int makeDir(const char *path, char *errmsg)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                errorf(errmsg, "cannot create directory %s: %s", tmp, strerror(errno));
                return errorFromErrno(errno);
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        errorf(errmsg, "cannot create directory %s: %s", tmp, strerror(errno));
        return errorFromErrno(errno);
    }
    return 0;
}

/* A configuration string into the handle's buffer: one that does not fit is refused,
 * as cut short it would name another directory or address. */
static int copyStr(char *dst, size_t n, const char *src, const char **field, const char *what,
                   char *errmsg)
{
    if (src == NULL) {
        *field = NULL;
        return 0;
    }
    if (strlen(src) >= n) {
        errorf(errmsg, "%s is %zu bytes long, at most %zu", what, strlen(src), n - 1);
        return CAIRN_EINVAL;
    }
    snprintf(dst, n, "%s", src);
    *field = dst;
    return 0;
}

int cairn_open(const struct cairn_config *cfg, cairn **out)
{
    struct cairn *db;
    struct node_config ncfg;
    int rv;

    tlsErrmsg[0] = '\0';
    if (out == NULL) {
        /* No handle to give: cairn_errmsg(NULL) reads the message. */
        errorf(tlsErrmsg, "cairn_open: out is NULL");
        return CAIRN_EINVAL;
    }
    *out = NULL;
    /* Before any connection: every one, the start's checks included, must go through
     * the page-checksum VFS, or a checkpoint it runs would write pages unsealed. */
    pagesumRegister();
    db = calloc(1, sizeof *db);
    if (db == NULL) {
        errorf(tlsErrmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    db->lock = DIRLOCK_NONE;
    db->raft_hold_fd = -1;
    pthread_mutex_init(&db->amu, NULL);
    pthread_mutex_init(&db->dmu, NULL);
    pthread_mutex_init(&db->gmu, NULL);
    pthread_cond_init(&db->gcond, NULL);
    pthread_cond_init(&db->acond, NULL);
    memset(&ncfg, 0, sizeof ncfg);
    *out = db;
    if (cfg == NULL || cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        errorf(tlsErrmsg, "a data directory is required");
        return CAIRN_EINVAL;
    }
    db->cfg = *cfg;
    if ((rv = copyStr(db->data_dir, sizeof db->data_dir, cfg->data_dir, &db->cfg.data_dir,
                      "the data directory", tlsErrmsg)) != 0 ||
        (rv = copyStr(db->raft_addr, sizeof db->raft_addr, cfg->raft_addr, &db->cfg.raft_addr,
                      "the raft address", tlsErrmsg)) != 0 ||
        (rv = copyStr(db->http_addr_cfg, sizeof db->http_addr_cfg, cfg->http_addr,
                      &db->cfg.http_addr, "the HTTP address", tlsErrmsg)) != 0 ||
        (rv = copyStr(db->restore_from, sizeof db->restore_from, cfg->restore_from,
                      &db->cfg.restore_from, "--restore-from", tlsErrmsg)) != 0 ||
        (rv = copyStr(db->archive_to, sizeof db->archive_to, cfg->archive_to,
                      &db->cfg.archive_to, "--archive-to", tlsErrmsg)) != 0) {
        return rv;
    }
    if (cfg->raft_addr != NULL) {
        /* libraft's transport takes IPv4 literals only: "localhost:4002" (rqlite's form)
         * and host names are resolved here, once. */
        char numeric[sizeof db->raft_addr];
        if ((rv = addrNumeric(cfg->raft_addr, "raft", numeric, sizeof numeric, tlsErrmsg)) != 0) {
            return rv;
        }
        snprintf(db->raft_addr, sizeof db->raft_addr, "%s", numeric);
    }
    if (cfg->raft_addr != NULL && cfg->http_addr != NULL) {
        /* Said plainly: else the second to bind fails as an address in use. */
        char http[sizeof db->raft_addr], why[CAIRN_ERRMSG_SIZE];
        size_t len = strlen(db->raft_addr);
        bool any_port = len >= 2 && strcmp(db->raft_addr + len - 2, ":0") == 0;
        if (addrNumeric(cfg->http_addr, "HTTP", http, sizeof http, why) == 0 && !any_port &&
            strcmp(http, db->raft_addr) == 0) {
            errorf(tlsErrmsg,
                   "the HTTP address %s and the Raft address %s are one address: each needs a "
                   "port of its own (the defaults are 4001 and 4002)",
                   cfg->http_addr, cfg->raft_addr);
            return CAIRN_EINVAL;
        }
    }
    if ((rv = configureRepositories(db, cfg)) != 0) {
        return rv;
    }
    db->cfg.backup_compression = NULL; /* the caller's string: read here only */
    if (cfg->backup_compression != NULL &&
        (rv = backupParseCompression(cfg->backup_compression, &db->backup_codec,
                                     &db->backup_level, tlsErrmsg)) != 0) {
        return rv;
    }
    if (db->cfg.archive_to != NULL || db->cfg.archive_sync) {
        db->cfg.archive = 1; /* --archive-to and --archive-sync imply --archive */
    }
    if ((rv = archiveCreate(db, &db->archiver, tlsErrmsg)) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", tlsErrmsg);
        errorf(tlsErrmsg, "--archive-to: %s", why);
        return rv;
    }
    if (db->cfg.max_body == 0) {
        db->cfg.max_body = 64u << 20;
    }
    if (db->cfg.snapshot_threshold == 0) {
        db->cfg.snapshot_threshold = 16384;
    }
    if (db->cfg.snapshot_trailing == 0) {
        db->cfg.snapshot_trailing = 8192;
    }
    db->started = time(NULL);
    db->bootstrap_expect = cfg->bootstrap_expect;
    if (cfg->join != NULL && (rv = parseJoin(db, cfg->join, tlsErrmsg)) != 0) {
        return rv;
    }
    if ((db->n_join > 0 || db->bootstrap_expect > 0) &&
        (cfg->raft_addr == NULL || cfg->http_addr == NULL)) {
        errorf(tlsErrmsg, "a cluster member needs both a raft address and an HTTP address");
        return CAIRN_EINVAL;
    }
    if (db->bootstrap_expect > 0 && db->n_join == 0) {
        errorf(tlsErrmsg, "--bootstrap-expect needs --join with the addresses of the other nodes");
        return CAIRN_EINVAL;
    }
    if (db->bootstrap_expect > NODE_MAX_SERVERS) {
        errorf(tlsErrmsg, "--bootstrap-expect: at most %d nodes", NODE_MAX_SERVERS);
        return CAIRN_EINVAL;
    }

    /* The lock first: a second process on this directory is told who holds it, even
     * when it would also collide on the addresses. */
    if ((rv = makeDir(db->data_dir, tlsErrmsg)) != 0 ||
        (rv = lockAcquire(db->data_dir, &db->lock, tlsErrmsg)) != 0) {
        return rv;
    }
    if ((db->cfg.raft_addr != NULL &&
         (rv = checkBindable(db->cfg.raft_addr, "raft", &db->raft_hold_fd, tlsErrmsg)) != 0) ||
        (db->cfg.http_addr != NULL &&
         (rv = checkBindable(db->cfg.http_addr, "HTTP", NULL, tlsErrmsg)) != 0) ||
        (rv = loadNodeIdentity(db, tlsErrmsg)) != 0) {
        return rv;
    }
    snprintf(db->db_path, sizeof db->db_path, "%s/db.sqlite", db->data_dir);
    snprintf(db->raft_dir, sizeof db->raft_dir, "%s/raft", db->data_dir);
    snprintf(db->snap_dir, sizeof db->snap_dir, "%s/snapshots", db->data_dir);
    if ((rv = makeDir(db->raft_dir, tlsErrmsg)) != 0 ||
        (rv = makeDir(db->snap_dir, tlsErrmsg)) != 0) {
        return rv;
    }
    if (db->cfg.raft_addr == NULL) {
        /* Without network (embedded, or `cairn repair`) a node is never a member that
         * joins or forms a cluster, whatever node.json says. */
        db->n_join = 0;
        db->bootstrap_expect = 0;
    }
    if (db->cfg.restore_from != NULL && (db->n_join > 0 || db->bootstrap_expect > 0)) {
        errorf(tlsErrmsg, "--restore-from is for a node that starts alone: start one node "
                          "with it, then the others with --join");
        return CAIRN_EINVAL;
    }
    if ((rv = healBeforeOpen(db, tlsErrmsg)) != 0) {
        return rv;
    }
    db->marked = true;
    {
        /* Known at the last stop to differ from the cluster: still so until the RESTORE
         * entry it could not apply is applied (adminApplyRestore clears it). */
        char path[PATH_MAX];
        FILE *f;
        snprintf(path, sizeof path, "%s/%s", db->data_dir, DIVERGED_FILE);
        if ((f = fopen(path, "r")) != NULL) {
            size_t got = fread(db->diverged, 1, sizeof db->diverged - 1, f);
            db->diverged[got] = '\0';
            if (got == 0) {
                snprintf(db->diverged, sizeof db->diverged, "recorded in %s", path);
            }
            fclose(f);
        }
    }
    if ((rv = lrInit(db, tlsErrmsg)) != 0) {
        return rv;
    }
    rv = storeOpen(db->db_path, !db->cfg.no_page_checksums, &db->store, tlsErrmsg);
    if (rv != 0) {
        return rv;
    }
    storeSetRepos(db->store, &db->repos);
    storeSetLimits(db->store, db->cfg.max_value_size,
                   db->cfg.query_timeout_ms ? db->cfg.query_timeout_ms
                                            : POLICY_DEFAULT_QUERY_TIMEOUT_MS,
                   db->cfg.max_result_size, db->cfg.max_temp_size);
    libRandomId(db->nonce, sizeof db->nonce);
    /* HTTP before Raft: nodes forming a cluster learn each other's identity from it;
     * every other endpoint answers 503 until the node runs. */
    if (db->cfg.http_addr != NULL) {
        rv = httpStart(db, db->cfg.http_addr, db->cfg.max_body, &db->http, tlsErrmsg);
        if (rv != 0) {
            return rv;
        }
    }
    rv = clusterPrepare(db, &ncfg.boot, db->boot_servers, &ncfg.n_servers, tlsErrmsg);
    if (rv != 0) {
        return rv;
    }
    atomic_store_explicit(&db->n_boot_servers, ncfg.n_servers, memory_order_release);
    ncfg.servers = db->boot_servers;
    /* A lone node waits until it leads; a cluster member runs as soon as Raft does. */
    ncfg.wait_ready = ncfg.boot == NODE_BOOT_SELF;
    ncfg.fetch = clusterFetchSnapshot;
    ncfg.fetch_data = db;
    ncfg.nudge = clusterNudge;
    ncfg.nudge_data = db;
    ncfg.id = db->cfg.node_id;
    memcpy(ncfg.cluster_id, db->cluster_id, sizeof ncfg.cluster_id);
    ncfg.raft_addr = db->cfg.raft_addr;
    ncfg.raft_dir = db->raft_dir;
    ncfg.snap_dir = db->snap_dir;
    ncfg.snapshot_threshold = db->cfg.snapshot_threshold;
    ncfg.snapshot_trailing = db->cfg.snapshot_trailing;
    ncfg.log = db->cfg.log;
    ncfg.log_data = db->cfg.log_data;
    ncfg.restore = adminApplyRestore;
    ncfg.ready = adminRestoreReady;
    ncfg.restore_data = db;
    ncfg.digest = adminApplyDigest;
    ncfg.digest_data = db;
    ncfg.heal = clusterHealDatabase;
    ncfg.heal_data = db;
    if (db->archiver != NULL) {
        ncfg.committed = archivePush;
        ncfg.installed = archiveReset;
        ncfg.archive_data = db->archiver;
    }
    releaseRaftAddress(db); /* libraft binds it now */
    rv = nodeStart(&ncfg, db->store, START_TIMEOUT_MS, &db->node, tlsErrmsg);
    if (rv != 0) {
        return rv;
    }
    lrSetNode(db, db->node);
    /* Before the API serves (it answers 503 "starting" until running): no client
     * writes into the empty database that the restore then replaces. */
    if (db->cfg.restore_from != NULL &&
        (rv = adminRestoreFrom(db, db->cfg.restore_from, tlsErrmsg)) != 0) {
        return rv;
    }
    atomic_store(&db->running, true);
    if ((rv = archiveStart(db->archiver, tlsErrmsg)) != 0) {
        return rv;
    }
    healAfterOpen(db);
    if ((rv = clusterJoin(db, tlsErrmsg)) != 0 ||
        (rv = clusterAnnouncerStart(db, tlsErrmsg)) != 0) {
        return rv;
    }
    return 0;
}

int cairn_close(cairn *db)
{
    if (db == NULL) {
        return 0;
    }
    /* Statements running now stop within a few thousand VM steps (a write so stopped
     * is rolled back whole and applied again after the restart); then the front end
     * (no new work, and it waits for its requests), then the loop (fails what is
     * queued), then the database, then the lock. */
    if (db->store != NULL) {
        storeInterrupt(db->store);
    }
    clusterAnnouncerStop(db);
    /* A backup, restore or fetch of a remote repository that a request, the live
     * restore's thread or the loop runs ends now (an upload aborted, a restore entry
     * left to the next start) rather than when a slow or stalled object store lets it:
     * the stop waits for each of them. The archive's transfers go on (its thread is
     * exempt): its last upload is part of the stop. */
    repoStopTransfers(true);
    httpStop(db->http);
    archiveStop(db->archiver); /* a last upload; it asks the node whether it leads */
    lrStop(db); /* its thread wakes the loop */
    nodeStop(db->node);
    repoStopTransfers(false);
    archiveFree(db->archiver); /* the loop pushed into it until now */
    lrFree(db);
    adminDigestsStop(db); /* they read the store's frozen image */
    storeClose(db->store);
    if (db->marked) {
        healMarkClean(db);
    }
    json_decref(db->recovery);
    releaseRaftAddress(db);
    lockRelease(&db->lock);
    pthread_mutex_destroy(&db->amu);
    pthread_mutex_destroy(&db->dmu);
    pthread_mutex_destroy(&db->gmu);
    pthread_cond_destroy(&db->gcond);
    pthread_cond_destroy(&db->acond);
    free(db);
    return 0;
}

const char *cairn_http_addr(cairn *db)
{
    return (db && db->http) ? db->http_addr : NULL;
}

/* ---- running SQL from C ------------------------------------------------------------ */

int cairn_request(cairn *db, const cairn_stmt *stmts, size_t n, unsigned flags,
                  enum cairn_level level, cairn_result **out)
{
    struct batch b;
    size_t i;
    size_t j;
    int rv;

    tlsErrmsg[0] = '\0';
    if (out == NULL) {
        errorf(tlsErrmsg, "out is NULL: a result must be taken (and freed)");
        return CAIRN_EINVAL;
    }
    *out = NULL;
    if (db == NULL || db->node == NULL) {
        errorf(tlsErrmsg, "the handle is not open");
        return CAIRN_EINVAL;
    }
    if (stmts == NULL && n > 0) {
        errorf(tlsErrmsg, "%zu statements but stmts is NULL", n);
        return CAIRN_EINVAL;
    }
    if (level < CAIRN_LEVEL_NONE || level > CAIRN_LEVEL_STRONG) {
        errorf(tlsErrmsg, "unknown read level %d", (int)level);
        return CAIRN_EINVAL;
    }
    memset(&b, 0, sizeof b);
    b.kind = (flags & CAIRN_READ_ONLY) ? BATCH_QUERY : BATCH_EXECUTE;
    b.flags = (flags & CAIRN_TRANSACTION) ? BATCH_TRANSACTION : 0;
    if (batchAlloc(&b, n) != 0) {
        errorf(tlsErrmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        struct stmt *s = &b.stmts[i];
        if (stmts[i].sql == NULL || stmts[i].sql[0] == '\0') {
            errorf(tlsErrmsg, "statement %zu is empty", i + 1);
            batchFree(&b);
            return CAIRN_EINVAL;
        }
        s->sql = stmts[i].sql;
        s->sql_len = strlen(stmts[i].sql);
        if (stmts[i].nparams == 0) {
            continue;
        }
        if (stmts[i].params == NULL) {
            errorf(tlsErrmsg, "statement %zu: %zu parameters but params is NULL", i + 1,
                   stmts[i].nparams);
            batchFree(&b);
            return CAIRN_EINVAL;
        }
        if (batchParams(s, stmts[i].nparams) != 0) {
            errorf(tlsErrmsg, "out of memory");
            batchFree(&b);
            return CAIRN_ENOMEM;
        }
        for (j = 0; j < stmts[i].nparams; j++) {
            const cairn_value *v = &stmts[i].params[j];
            struct param *p = &s->params[j];
            if (v->type < CAIRN_INTEGER || v->type > CAIRN_NULL) {
                errorf(tlsErrmsg, "statement %zu: parameter %zu has unknown type %d", i + 1,
                       j + 1, v->type);
                batchFree(&b);
                return CAIRN_EINVAL;
            }
            if ((v->type == CAIRN_TEXT || v->type == CAIRN_BLOB) && v->p == NULL && v->n > 0) {
                /* SQLite would bind it as NULL: a value lost without a word. */
                errorf(tlsErrmsg, "statement %zu: parameter %zu has %zu bytes at NULL", i + 1,
                       j + 1, v->n);
                batchFree(&b);
                return CAIRN_EINVAL;
            }
            p->type = v->type;
            p->name = v->name;
            p->name_len = v->name ? strlen(v->name) : 0;
            if (p->name_len > PARAM_NAME_MAX) {
                errorf(tlsErrmsg, "statement %zu: parameter %zu's name is %zu bytes long, at most %d",
                       i + 1, j + 1, p->name_len, PARAM_NAME_MAX);
                batchFree(&b);
                return CAIRN_EINVAL;
            }
            p->i = v->i;
            p->d = v->d;
            p->s = v->p;
            p->n = v->n;
        }
    }
    rv = dbRun(db, &b, level, out, tlsErrmsg);
    batchFree(&b);
    return rv;
}

int cairn_execute(cairn *db, const char *sql, const cairn_value *params, size_t nparams,
                  cairn_result **out)
{
    cairn_stmt s = {sql, params, nparams};
    return cairn_request(db, &s, 1, 0, CAIRN_LEVEL_WEAK, out);
}

int cairn_query(cairn *db, const char *sql, const cairn_value *params, size_t nparams,
                enum cairn_level level, cairn_result **out)
{
    cairn_stmt s = {sql, params, nparams};
    return cairn_request(db, &s, 1, CAIRN_READ_ONLY, level, out);
}
