/* The housekeeping thread (housekeeping.h): scheduled backups, expiry after each, and
 * restore drills, per repository of the backup configuration, on the one node of the
 * cluster that should run them.
 *
 * The thread sleeps on a condition variable until the next due time, a reload or the
 * stop, waking at least every HK_POLL_MS to look at the node's Raft state (leadership
 * changes are not signalled to it). State shown to HTTP threads is kept under hk->mu;
 * the work itself (listing, backing up, verifying, expiring) runs without the lock.
 * Which housekeeping belongs to which handle is kept in a small registry here, so that
 * the HTTP front end finds it from the handle alone.
 *
 * Threads: the housekeeping thread (never the loop thread), the main thread (start,
 * reload, stop), HTTP threads (the JSON functions). */
#define _GNU_SOURCE
#include "housekeeping.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <raft.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "alert.h"
#include "cluster.h"
#include "db.h"
#include "error.h"
#include "expire.h"
#include "lib.h"
#include "newfile.h"
#include "node.h"
#include "pagesum.h"
#include "pitr.h"
#include "repo.h"
#include "reposet.h"
#include "sqlerr.h"

#define HK_POLL_MS 250
#define HK_RETRY_MAX_MS 60000 /* a failed run is tried again after at most this */
#define HK_MSG_SIZE 512

/* A drill's scratch space: this directory beside the data directory, `DATA.drill`.
 * Not inside DATA (cairn's own state, which heal sweeps and moves aside),
 * not in a repository (shared with other nodes, listed by the catalog); on the data
 * directory's side of the machine, whose disk is the one a real restore would need.
 * Made at the start of each drill, removed at its end; a crash's leftovers go at the
 * next. An operator may mount a file system of its own there (it is emptied, kept). */
#define HK_DRILL_SUFFIX ".drill"
/* The point-in-time drill's result in the scratch space (pitrRestore makes it in a
 * hidden directory beside it: newdirOpen(out, "pitr")). */
#define HK_DRILL_PITR_FILE "pitr.db"
/* How far after this node's clock a catalog's record of a run may be stamped and still
 * count for the schedule (readCatalog): the skew of the clocks of a cluster's nodes. */
#define HK_CLOCK_SLACK_MS INT64_C(300000)

struct hk_type {
    int64_t last_ok_ms; /* created time of the newest backup of the type; -1: none */
    char last_id[BACKUP_ID_SIZE];
    int64_t last_fail_ms; /* -1: none since the start */
    char last_fail[HK_MSG_SIZE];
    int64_t retry_ms;        /* after a failure: not before this; 0 otherwise */
    int64_t next_ms;         /* when due, as last computed; -1: never or not this node's */
    unsigned runs, failures; /* by this node since it started */
    bool stale;              /* the runner's view: a whole scheduled run missed (the
                                newest backup older than two periods of the schedule) */
    bool stale_alerted;      /* its alert was sent; until a newer backup clears it */
};

/* The point-in-time part of the last drill run on this node (runDrillPitr). */
struct hk_pitr {
    bool ran;         /* false: the repository holds no archive, or it was not tried */
    int result;       /* BACKUP_VERIFIED, BACKUP_VERIFY_FAILED */
    bool chosen;      /* target is set */
    uint64_t target;  /* the index chosen inside the newest timeline's window */
    bool restored;    /* pitrRestore returned: stopped and stop_ms are set */
    uint64_t stopped; /* the last entry applied (the base's index when none was) */
    int64_t stop_ms;  /* its time; the base's creation time when none was applied */
    char msg[HK_MSG_SIZE];
};

struct hk_repo {
    struct hk_type t[BCONFIG_TYPES];
    bool runner;       /* this node runs the repository's schedule now */
    bool caught_up;    /* the catalog was read since it became the runner */
    int64_t anchor_ms; /* when it became the runner: a cron schedule with no backup yet
                          counts from here */
    int64_t catalog_retry_ms; /* its catalog could not be read: not again before this */
    char role[128];    /* why it runs or not, for /status */
    /* drills */
    int64_t drill_last_ms; /* the newest verification in the catalog; -1: none */
    int drill_result;      /* BACKUP_VERIFIED, BACKUP_VERIFY_FAILED; 0: unknown */
    char drill_id[BACKUP_ID_SIZE];
    char drill_msg[HK_MSG_SIZE];
    bool drill_here; /* the last drill shown ran on this node (else: from the catalog) */
    /* the point-in-time part of the last drill, when drill_here */
    struct hk_pitr drill_pitr;
    int64_t drill_retry_ms;
    int64_t drill_next_ms;
    unsigned drills, drill_failures;
    /* expiry after each scheduled backup */
    int64_t expire_ms; /* -1: none yet */
    size_t expired;
    char expire_err[HK_MSG_SIZE];
};

struct housekeeping {
    struct cairn *db;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;                  /* CLOCK_MONOTONIC */
    struct bconfig *cfg;                  /* under mu; replaced whole by a reload */
    struct hk_repo rs[BCONFIG_MAX_REPOS]; /* parallel to cfg->r */
    bool stop;
    unsigned reloads;
    struct alerter *alerts; /* the repositories' webhooks (alert.h); NULL: none works */
};

/* ---- the registry: handle -> housekeeping -------------------------------------------- */

static pthread_mutex_t regMu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    struct cairn *db;
    struct housekeeping *hk;
} reg[8];

static void registryPut(struct cairn *db, struct housekeeping *hk)
{
    pthread_mutex_lock(&regMu);
    for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++) {
        if (reg[i].db == NULL || reg[i].db == db) {
            reg[i].db = hk != NULL ? db : NULL;
            reg[i].hk = hk;
            if (hk != NULL) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&regMu);
}

/* Under regMu. */
static struct housekeeping *registryGet(struct cairn *db)
{
    for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++) {
        if (reg[i].db == db) {
            return reg[i].hk;
        }
    }
    return NULL;
}

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t monoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hkRepoInit(struct hk_repo *s)
{
    memset(s, 0, sizeof *s);
    for (int t = 0; t < BCONFIG_TYPES; t++) {
        s->t[t].last_ok_ms = -1;
        s->t[t].last_fail_ms = -1;
        s->t[t].next_ms = -1;
    }
    s->drill_last_ms = -1;
    s->drill_next_ms = -1;
    s->expire_ms = -1;
}

/* Report a failure (or a stale backup) of repository r: logged, and POSTed as JSON to
 * the repository's webhook when it has one (alert.h: retried, never blocking). kind is
 * the alert's name ("backup_failed", "drill_failed", "expiry_failed", "backup_stale"),
 * what the operation, msg what happened. Any lock may be held: nothing here waits. */
static void housekeepingAlert(struct housekeeping *hk, const struct bconfig_repo *r,
                              const char *kind, const char *what, const char *msg)
{
    char when[LIB_ISO8601_SIZE];
    char masked[1100];
    bool failed = strcmp(kind, "backup_stale") != 0;
    json_t *doc;
    if (r->webhook[0] == '\0') {
        dbLog(hk->db, "backup schedule: repository '%s': %s%s: %s", r->name, what,
              failed ? " failed" : "", msg);
        return;
    }
    bconfigMaskUrl(r->webhook, masked, sizeof masked);
    dbLog(hk->db, "backup schedule: repository '%s': %s%s: %s (alert %s to %s)", r->name, what,
          failed ? " failed" : "", msg, kind, masked);
    libIso8601(repoNowMs(), LIB_ISO8601_MS, when);
    doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "alert", kind, "repository",
                    r->name, "what", what, "message", msg, "time", when, "node_id",
                    (json_int_t)hk->db->cfg.node_id, "node", hk->db->http_addr);
    if (doc == NULL || !alertSend(hk->alerts, r->webhook, doc)) {
        dbLog(hk->db, "backup schedule: repository '%s': the alert was not queued", r->name);
    }
    json_decref(doc);
}

static void alertLog(void *arg, const char *message)
{
    dbLog(arg, "backup schedule: %s", message);
}

/* The node that runs r's schedule: is it this one? role says why, for /status. */
static bool isRunner(struct housekeeping *hk, const struct bconfig_repo *r, char *role, size_t size)
{
    struct node_info ni;
    uint64_t designated = 0;
    nodeInfo(hk->db->node, &ni);
    if (!r->from_follower) {
        bool yes = ni.state == RAFT_LEADER && ni.ready;
        snprintf(role, size, "%s",
                 yes ? "leader: runs the schedule" : "not the ready leader: another node runs it");
        return yes;
    }
    designated = nodeDesignatedFollower(&ni);
    if (designated == 0) {
        bool yes = ni.state == RAFT_LEADER && ni.ready;
        snprintf(role, size, "%s",
                 yes ? "leader: runs the schedule (no follower to run it)"
                     : "no follower: the leader runs it");
        return yes;
    }
    if (ni.state == RAFT_LEADER) {
        /* The leader stands in while the designated follower is down or behind. */
        bool caught_up = false;
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (!ni.ready || nodeFollowerCaughtUp(hk->db->node, designated, NODE_FOLLOWER_MAX_LAG,
                                              &caught_up, errmsg) != 0) {
            snprintf(role, size, "leader, not ready: waits");
            return false;
        }
        if (!caught_up) {
            snprintf(role, size,
                     "leader: runs the schedule (the designated follower %llu is down or "
                     "behind)",
                     (unsigned long long)designated);
            return true;
        }
    }
    if (designated == ni.id && ni.state == RAFT_FOLLOWER && ni.ready) {
        snprintf(role, size, "follower: runs the schedule");
        return true;
    }
    snprintf(role, size, "%s",
             designated == ni.id ? "the designated follower, not caught up: waits"
                                 : "another node (the designated follower) runs it");
    return false;
}

/* ---- the catalog ------------------------------------------------------------------------- */

/* Read repository r's catalog into s: the newest backup of each type and the newest
 * verification. Without the lock (it lists the repository); the caller copies. */
static int readCatalog(struct housekeeping *hk, const struct bconfig_repo *r, struct hk_repo *s,
                       char *errmsg)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    int64_t now = repoNowMs();
    int rv;
    if ((rv = repoList(hk->db->repos.r[r->which].url, &list, &n, errmsg)) != 0) {
        return rv;
    }
    for (int t = 0; t < BCONFIG_TYPES; t++) {
        s->t[t].last_ok_ms = -1;
        s->t[t].last_id[0] = '\0';
    }
    s->drill_last_ms = -1;
    for (size_t i = 0; i < n; i++) {
        const struct backup_info *b = &list[i];
        if (b->error[0] != '\0' || b->type < BACKUP_FULL || b->type > BACKUP_DIFFERENTIAL) {
            continue;
        }
        struct hk_type *ty = &s->t[b->type];
        /* A run stamped well after now (this clock stepped back since, or the clock of
         * the node that ran it was ahead) is no run to count the schedule from: from it,
         * the next would wait until that time, perhaps a year, with no stale alert. */
        if (b->created_ms <= now + HK_CLOCK_SLACK_MS &&
            (b->created_ms > ty->last_ok_ms ||
             (b->created_ms == ty->last_ok_ms && strcmp(b->id, ty->last_id) > 0))) {
            ty->last_ok_ms = b->created_ms;
            snprintf(ty->last_id, sizeof ty->last_id, "%s", b->id);
        }
        if (b->verified != BACKUP_UNVERIFIED && b->verified_ms <= now + HK_CLOCK_SLACK_MS &&
            b->verified_ms > s->drill_last_ms) {
            s->drill_last_ms = b->verified_ms;
            s->drill_result = b->verified;
            snprintf(s->drill_id, sizeof s->drill_id, "%s", b->id);
        }
    }
    free(list);
    return 0;
}

/* In a cluster, add what the other members' repositories of the same name hold
 * (clusterBackupCatalog: the members that answer within a few seconds) to what
 * readCatalog found in this node's: with one repository directory per node, the
 * backups the previous runner took are in its own. Only when this node becomes the
 * runner or reloads (it waits on the peers), not before every run. Failures leave s as
 * it was (logged). Under no lock. */
static void readClusterCatalog(struct housekeeping *hk, const struct bconfig_repo *r,
                               struct hk_repo *s)
{
    struct node_info ni;
    json_t *doc = NULL, *list, *e;
    char errmsg[CAIRN_ERRMSG_SIZE];
    size_t k;
    nodeInfo(hk->db->node, &ni);
    if (ni.n_servers < 2) {
        return;
    }
    if (clusterBackupCatalog(hk->db, &doc, errmsg) != 0) {
        dbLog(hk->db,
              "backup schedule: repository '%s': the peers' catalogs: %s (this node's "
              "alone decides)",
              r->name, errmsg);
        return;
    }
    list = json_object_get(doc, "backups");
    json_array_foreach(list, k, e)
    {
        const char *repo = json_string_value(json_object_get(e, "repository"));
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *tname = json_string_value(json_object_get(e, "type"));
        int type = tname != NULL ? backupTypeFromName(tname) : -1;
        json_t *created = json_object_get(e, "created_ms");
        int64_t ms;
        if (repo == NULL || strcmp(repo, r->name) != 0 || id == NULL ||
            json_object_get(e, "error") != NULL || type < BACKUP_FULL ||
            type > BACKUP_DIFFERENTIAL || !json_is_integer(created)) {
            continue;
        }
        ms = json_integer_value(created);
        if (ms > s->t[type].last_ok_ms && ms <= repoNowMs() + HK_CLOCK_SLACK_MS) {
            s->t[type].last_ok_ms = ms;
            snprintf(s->t[type].last_id, sizeof s->t[type].last_id, "%s", id);
        }
    }
    json_decref(doc);
}

/* Under mu: take what readCatalog found into the live state of repository i. A type
 * whose newest backup is newer than the retry time clears it (another node took it). */
static void applyCatalog(struct housekeeping *hk, unsigned i, const struct hk_repo *fresh)
{
    struct hk_repo *s = &hk->rs[i];
    for (int t = BACKUP_FULL; t < BCONFIG_TYPES; t++) {
        /* While this node stays the runner, what it took itself counts even when an
         * expiry has removed it since (the newest of a type is not always kept). */
        if (s->caught_up && s->t[t].last_ok_ms > fresh->t[t].last_ok_ms) {
            continue;
        }
        s->t[t].last_ok_ms = fresh->t[t].last_ok_ms;
        snprintf(s->t[t].last_id, sizeof s->t[t].last_id, "%s", fresh->t[t].last_id);
    }
    if (fresh->drill_last_ms > s->drill_last_ms) {
        /* A newer verification than the last drill this node ran: the catalog's. */
        s->drill_here = false;
        s->drill_msg[0] = '\0';
        memset(&s->drill_pitr, 0, sizeof s->drill_pitr);
        s->drill_last_ms = fresh->drill_last_ms;
        s->drill_result = fresh->drill_result;
        snprintf(s->drill_id, sizeof s->drill_id, "%s", fresh->drill_id);
    }
    s->caught_up = true;
}

/* Under mu: is the newest backup of type t (taken at last, or the runner's start when
 * there is none) older than two periods of its schedule, a whole run missed? Alerted
 * once, when it becomes so; a newer backup clears it. */
static void checkStale(struct housekeeping *hk, const struct bconfig_repo *r, struct hk_type *ty,
                       int t, int64_t last, int64_t now)
{
    int64_t due = bscheduleNext(&r->sched[t], last, now);
    int64_t missed = due >= 0 ? bscheduleNext(&r->sched[t], due, now) : -1;
    ty->stale = missed >= 0 && now > missed;
    if (ty->stale && !ty->stale_alerted) {
        char msg[HK_MSG_SIZE + 128];
        char at[LIB_ISO8601_SIZE];
        char what[64];
        if (ty->last_ok_ms >= 0) {
            libIso8601(ty->last_ok_ms, LIB_ISO8601_MS, at);
        }
        snprintf(what, sizeof what, "%s backups", backupTypeName(t));
        snprintf(msg, sizeof msg,
                 "no %s backup since %s, more than two periods of its schedule (%s)%s%s",
                 backupTypeName(t), ty->last_ok_ms >= 0 ? at : "this node began running it",
                 r->sched[t].text, ty->last_fail_ms > ty->last_ok_ms ? "; the last try failed: " : "",
                 ty->last_fail_ms > ty->last_ok_ms ? ty->last_fail : "");
        housekeepingAlert(hk, r, "backup_stale", what, msg);
    }
    ty->stale_alerted = ty->stale;
}

static int64_t retryAfter(const struct bschedule *s, int64_t now)
{
    int64_t wait = s->kind == BSCHED_INTERVAL && s->interval_ms < HK_RETRY_MAX_MS ? s->interval_ms
                                                                                  : HK_RETRY_MAX_MS;
    return now + wait;
}

/* Under mu: the runner of repository i could not read its catalog, so the schedule
 * cannot start: each scheduled type records the failure as a failed run does, the
 * alert goes out, and the catalog is read again when the first of them would be
 * retried (not at every turn of the loop, logging each). */
static void catalogFailed(struct housekeeping *hk, unsigned i, const char *errmsg, int64_t now)
{
    const struct bconfig_repo *r = &hk->cfg->r[i];
    struct hk_repo *s = &hk->rs[i];
    char msg[HK_MSG_SIZE];
    int64_t retry = now + HK_RETRY_MAX_MS;
    snprintf(msg, sizeof msg, "cannot read the catalog: %s", errmsg);
    for (int t = BACKUP_FULL; t < BCONFIG_TYPES; t++) {
        struct hk_type *ty = &s->t[t];
        if (r->sched[t].kind == BSCHED_NONE) {
            continue;
        }
        ty->last_fail_ms = now;
        snprintf(ty->last_fail, sizeof ty->last_fail, "%s", msg);
        ty->failures++;
        ty->retry_ms = retryAfter(&r->sched[t], now);
        ty->next_ms = ty->retry_ms; /* /status: when it is tried again */
        retry = ty->retry_ms < retry ? ty->retry_ms : retry;
    }
    if (r->drill.kind != BSCHED_NONE && retryAfter(&r->drill, now) < retry) {
        retry = retryAfter(&r->drill, now);
    }
    s->catalog_retry_ms = retry;
    housekeepingAlert(hk, r, "backup_failed", "backup schedule", msg);
}

/* Under mu: recompute the next due times of repository i at now. */
static void computeNext(struct housekeeping *hk, unsigned i, int64_t now)
{
    const struct bconfig_repo *r = &hk->cfg->r[i];
    struct hk_repo *s = &hk->rs[i];
    for (int t = BACKUP_FULL; t < BCONFIG_TYPES; t++) {
        struct hk_type *ty = &s->t[t];
        int64_t next;
        if (!s->runner || r->sched[t].kind == BSCHED_NONE) {
            ty->next_ms = -1;
            continue;
        }
        next = ty->last_ok_ms >= 0 ? bscheduleNext(&r->sched[t], ty->last_ok_ms, now)
                                   : bscheduleNext(&r->sched[t], -1, s->anchor_ms);
        if (next >= 0 && ty->retry_ms > next) {
            next = ty->retry_ms;
        }
        ty->next_ms = next;
        checkStale(hk, r, ty, t, ty->last_ok_ms >= 0 ? ty->last_ok_ms : s->anchor_ms, now);
    }
    if (!s->runner || r->drill.kind == BSCHED_NONE) {
        s->drill_next_ms = -1;
    } else {
        int64_t next = s->drill_last_ms >= 0 ? bscheduleNext(&r->drill, s->drill_last_ms, now)
                                             : bscheduleNext(&r->drill, -1, s->anchor_ms);
        if (next >= 0 && s->drill_retry_ms > next) {
            next = s->drill_retry_ms;
        }
        s->drill_next_ms = next;
    }
}

/* ---- the work -------------------------------------------------------------------------- */

/* Apply r's retention policy after a scheduled backup; under no lock. */
static void runExpiry(struct housekeeping *hk, const struct bconfig_repo *r, size_t *expired,
                      char *errmsg)
{
    struct repo *repo = NULL;
    struct expire_report rep;
    int rv;
    *expired = 0;
    errmsg[0] = '\0';
    memset(&rep, 0, sizeof rep);
    if ((rv = repoOpen(hk->db->repos.r[r->which].url, &repo, errmsg)) != 0) {
        return;
    }
    rv = backupExpire(repo, &r->retention, repoNowMs(), false, &rep, errmsg);
    if (rv == 0) {
        *expired = rep.removed;
        errmsg[0] = '\0';
        if (rep.removed > 0) {
            dbLog(hk->db, "backup schedule: repository '%s': expired %zu backup%s (retention)",
                  r->name, rep.removed, rep.removed == 1 ? "" : "s");
        }
    }
    expireReportFree(&rep);
    repoClose(repo);
}

/* The drill's scratch directory, DATA.drill (HK_DRILL_SUFFIX), into out (PATH_MAX). */
static int drillScratchPath(struct housekeeping *hk, char *out, char *errmsg)
{
    char dir[PATH_MAX];
    size_t len;
    snprintf(dir, sizeof dir, "%s", hk->db->data_dir);
    len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') {
        dir[--len] = '\0';
    }
    if (len <= 1 || (size_t)snprintf(out, PATH_MAX, "%s" HK_DRILL_SUFFIX, dir) >= PATH_MAX) {
        errorf(errmsg, "no place for the drill's scratch space beside the data directory %s",
               hk->db->data_dir);
        return CAIRN_EINVAL;
    }
    return 0;
}

/* Empty the scratch directory dir of what drills put there (restored databases, their
 * journals, hidden temporary files, and the hidden directory a point-in-time drill
 * killed mid-way left), then remove it unless it is a mount point. A missing dir is
 * fine. Fails, naming the entry, on anything a drill does not make (dir not a
 * directory, another subdirectory in it) rather than touching it. */
static int drillScratchClear(const char *dir, bool keep, char *errmsg)
{
    char pitr[PATH_MAX];
    struct stat st;
    struct dirent *e;
    DIR *d;
    int rv = 0;
    if ((size_t)snprintf(pitr, sizeof pitr, "%s/" HK_DRILL_PITR_FILE, dir) < sizeof pitr) {
        newdirSweep(pitr, "pitr"); /* only unlocked ones: no live restore's */
    }
    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT) {
            return 0;
        }
        errorf(errmsg, "drill scratch space %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    if (!S_ISDIR(st.st_mode)) {
        errorf(errmsg,
               "drill scratch space %s exists and is not a directory: the drill does not "
               "touch it (remove it)",
               dir);
        return CAIRN_EEXIST;
    }
    if ((d = opendir(dir)) == NULL) {
        errorf(errmsg, "drill scratch space %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    while (rv == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
            errorf(errmsg,
                   "drill scratch space %s holds a directory %s that no drill made: "
                   "remove it",
                   dir, e->d_name);
            rv = CAIRN_EEXIST;
        } else if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            errorf(errmsg, "drill scratch space: remove %s/%s: %s", dir, e->d_name,
                   strerror(errno));
            rv = errorFromErrno(errno);
        }
    }
    closedir(d);
    if (rv == 0 && !keep && rmdir(dir) != 0 && errno != ENOENT && errno != EBUSY) {
        errorf(errmsg, "drill scratch space: remove %s: %s", dir, strerror(errno));
        rv = errorFromErrno(errno);
    }
    return rv;
}

/* Is there room for need bytes in dir? CAIRN_ENOSPC otherwise, errmsg saying "<what>
 * refused: <needs> needs N bytes in DIR, only M are free". */
static int drillRoom(const char *dir, uint64_t need, const char *what, const char *needs,
                     char *errmsg)
{
    struct statvfs vfs;
    uint64_t room;
    if (statvfs(dir, &vfs) != 0) {
        errorf(errmsg, "%s: statvfs %s: %s", what, dir, strerror(errno));
        return errorFromErrno(errno);
    }
    room = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (room < need) {
        errorf(errmsg, "%s refused: %s needs %llu bytes in %s, only %llu are free", what, needs,
               (unsigned long long)need, dir, (unsigned long long)room);
        return CAIRN_ENOSPC;
    }
    return 0;
}

/* The room a restore of image bytes takes: SQLite's check and the file system's slack. */
static uint64_t drillNeed(uint64_t image)
{
    return image + image / 10 + (1 << 20);
}

/* PRAGMA integrity_check of the database at path, through cairn's VFS (its page
 * checksums are checked as the pages are read). */
static int drillIntegrity(const char *path, char *errmsg)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc, rv = 0;
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (res == NULL || strcmp(res, "ok") != 0) {
            errorf(errmsg, "integrity_check of %s: %s", path, res != NULL ? res : "(null)");
            rv = CAIRN_ECORRUPT;
        }
    } else {
        rv = sqlerrf(db, rc, errmsg, "integrity_check of %s", path);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

/* The last archived entry of timeline x at or before index t into *out (0: none). The
 * archive holds commands only (configuration changes and barriers take indexes too), so
 * this, or a newer base backup, is where a replay to t stops. */
static int lastEntryUpTo(struct repo *repo, const struct arcseg_info *segs,
                         const struct pitr_window *x, uint64_t t, uint64_t *out, char *errmsg)
{
    *out = 0;
    for (size_t k = x->tl.from + x->tl.good; k-- > x->tl.from;) {
        struct arcseg seg;
        int rv;
        if (segs[k].first > t) {
            continue;
        }
        if ((rv = arcsegRead(repo, segs[k].name, &seg, errmsg)) != 0) {
            return rv;
        }
        for (uint32_t i = seg.h.count; i-- > 0;) {
            if (seg.entries[i].index <= t) {
                *out = seg.entries[i].index;
                break;
            }
        }
        arcsegFree(&seg);
        if (*out != 0) {
            break;
        }
    }
    return 0;
}

/* The point-in-time part of a drill: with archive segments in the repository, check
 * every segment whole (pitrWindows, full), pick a random index inside the window of the
 * newest timeline (the one written last), restore the repository to it with
 * pitrRestore into scratch, and run integrity_check on the result. *p says what was
 * done (p->ran false, 0 returned: no archive). Under no lock. */
static int runDrillPitr(struct repo *repo, const char *url, const char *scratch, struct hk_pitr *p,
                        char *errmsg)
{
    struct arcseg_info *segs = NULL;
    struct pitr_window *w = NULL;
    struct backup_info *bk = NULL;
    size_t nsegs = 0, nw = 0, nbk = 0;
    const struct pitr_window *x = NULL;
    struct pitr_options o;
    struct pitr_result res;
    char out[PATH_MAX + 16];
    char what[96];
    char why[CAIRN_ERRMSG_SIZE];
    uint64_t rnd, image = 0, arch = 0, expect;
    int rv;

    memset(p, 0, sizeof *p);
    if ((rv = pitrWindows(repo, true, &segs, &nsegs, &w, &nw, errmsg)) != 0) {
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "PITR drill: the archive cannot be read: %s", why);
        p->ran = true;
        goto out;
    }
    if (nw == 0) {
        goto out; /* no archive: nothing to drill */
    }
    p->ran = true;
    for (size_t i = 0; i < nw; i++) {
        if (x == NULL || w[i].tl.head_ms >= x->tl.head_ms) {
            x = &w[i];
        }
    }
    if (x->tl.problem[0] != '\0') {
        errorf(errmsg, "PITR drill: archive timeline %s is damaged from index %llu: %s", x->tl.name,
               (unsigned long long)x->tl.bad_index, x->tl.problem);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if (!x->usable || x->from > x->tl.head) {
        errorf(errmsg,
               "PITR drill: archive timeline %s (indexes %llu-%llu) has no base backup: "
               "nothing of it can be restored",
               x->tl.name, (unsigned long long)x->tl.start, (unsigned long long)x->tl.head);
        rv = CAIRN_ENOTFOUND;
        goto out;
    }
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        rnd = (uint64_t)repoNowMs() * 0x9E3779B97F4A7C15ull;
    }
    p->target = x->from + rnd % (x->tl.head - x->from + 1);
    p->chosen = true;
    snprintf(what, sizeof what, "PITR drill to index %llu", (unsigned long long)p->target);

    /* Room: the largest base it may start from, and what the replay may add. */
    if ((rv = repoListIn(repo, &bk, &nbk, errmsg)) != 0) {
        goto out;
    }
    for (size_t j = 0; j < nbk; j++) {
        uint64_t b = (uint64_t)bk[j].page_size * bk[j].page_count;
        if (bk[j].error[0] == '\0' && bk[j].raft_index + 1 >= x->tl.start &&
            bk[j].raft_index <= p->target && b > image) {
            image = b;
        }
    }
    for (size_t k = x->tl.from; k < x->tl.from + x->tl.nseg; k++) {
        arch += segs[k].size;
    }
    if ((rv = drillRoom(scratch, drillNeed(image + arch), what, "the restore", errmsg)) != 0) {
        goto out;
    }

    snprintf(out, sizeof out, "%s/" HK_DRILL_PITR_FILE, scratch);
    memset(&o, 0, sizeof o);
    o.repo = url;
    o.kind = PITR_INDEX;
    o.index = p->target;
    o.out = out;
    o.force = true;
    o.check = RESTORE_CHECK_FULL;
    if ((rv = pitrRestore(&o, &res, errmsg)) != 0) {
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "%s (timeline %s): %s", what, x->tl.name, why);
        goto out;
    }
    p->restored = true;
    p->stopped = res.stop_index;
    p->stop_ms = res.stop_ms != 0 ? res.stop_ms : res.base.created_ms;
    /* Where it should have stopped: the last archived entry up to the target, or the
     * base backup when that is newer. */
    if ((rv = lastEntryUpTo(repo, segs, x, p->target, &expect, errmsg)) != 0) {
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "%s (timeline %s): %s", what, x->tl.name, why);
        goto out;
    }
    if (expect < res.base.raft_index) {
        expect = res.base.raft_index;
    }
    if (res.stop_index != expect) {
        errorf(errmsg,
               "%s (timeline %s, base %s) stopped at index %llu, not at %llu, the last "
               "archived entry up to it",
               what, x->tl.name, res.base.id, (unsigned long long)res.stop_index,
               (unsigned long long)expect);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if ((rv = drillIntegrity(out, errmsg)) != 0) {
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "%s (timeline %s): %s", what, x->tl.name, why);
        goto out;
    }
out:
    if (p->ran) {
        p->result = rv == 0 ? BACKUP_VERIFIED : BACKUP_VERIFY_FAILED;
        snprintf(p->msg, sizeof p->msg, "%s", rv == 0 ? "" : errmsg);
    }
    free(bk);
    free(w);
    free(segs);
    return rv;
}

/* A drill of repository r's newest backup, in the scratch directory beside the data
 * directory (drillScratchPath): room for the trial restore, then backupVerify with it
 * (integrity_check; the outcome recorded in the catalog), then, when the repository
 * holds an archive, a point-in-time restore to a random index (runDrillPitr). *id
 * receives the backup drilled, scratch the directory, *p the PITR part. The scratch
 * directory is gone on return. Under no lock. */
static int runDrill(struct housekeeping *hk, const struct bconfig_repo *r, char *id, char *scratch,
                    struct hk_pitr *p, char *errmsg)
{
    const char *url = hk->db->repos.r[r->which].url;
    struct repo *repo = NULL;
    struct backup_info info;
    struct verify_options vo;
    char what[96];
    char ignore[CAIRN_ERRMSG_SIZE];
    bool made = false;
    int rv;

    id[0] = '\0';
    memset(p, 0, sizeof *p);
    if ((rv = drillScratchPath(hk, scratch, errmsg)) != 0) {
        return rv;
    }
    if ((rv = repoOpen(url, &repo, errmsg)) != 0) {
        return rv;
    }
    if ((rv = repoFindIn(repo, REPO_LATEST, &info, errmsg)) != 0) {
        if (rv == CAIRN_ENOTFOUND) {
            errorf(errmsg, "no backup in repository '%s' to drill", r->name);
        }
        goto out;
    }
    snprintf(id, BACKUP_ID_SIZE, "%s", info.id);
    /* What a drill killed mid-way left, then a fresh directory. */
    if ((rv = drillScratchClear(scratch, true, errmsg)) != 0) {
        goto out;
    }
    if (mkdir(scratch, 0700) != 0 && errno != EEXIST) {
        errorf(errmsg, "drill of %s: make the scratch space %s: %s", info.id, scratch,
               strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    made = true;
    snprintf(what, sizeof what, "drill of %s", info.id);
    if ((rv = drillRoom(scratch, drillNeed((uint64_t)info.page_size * info.page_count), what,
                        "the trial restore", errmsg)) != 0) {
        goto out;
    }
    memset(&vo, 0, sizeof vo);
    vo.ref = info.id;
    vo.trial_restore = true;
    vo.scratch_dir = scratch;
    if ((rv = backupVerifyOpt(repo, &vo, errmsg)) != 0) {
        goto out;
    }
    rv = runDrillPitr(repo, url, scratch, p, errmsg);
out:
    if (made && drillScratchClear(scratch, false, ignore) != 0) {
        dbLog(hk->db, "backup schedule: repository '%s': %s", r->name, ignore);
    }
    repoClose(repo);
    return rv;
}

/* Take one scheduled backup of type t into repository i; under no lock. */
static int runBackup(struct housekeeping *hk, const struct bconfig_repo *r, int t,
                     struct backup_info *info, char *errmsg)
{
    char role[128];
    assert(!nodeOnLoop(hk->db->node));
    /* Leadership may have moved since the decision: ask again, just before. */
    if (!isRunner(hk, r, role, sizeof role)) {
        errorf(errmsg, "no longer the node that runs the schedule (%s)", role);
        return CAIRN_ENOTLEADER;
    }
    int rv = adminBackup(hk->db, t, r->name, NULL, NULL, info, errmsg);
    if (rv == CAIRN_ECORRUPT && t != BACKUP_FULL) {
        /* Its chain cannot be restored (a member failed its verification, is missing or
         * damaged) or the database read as damaged: a schedule that refused until the
         * next full run would leave the database without a backup meanwhile. A full
         * backup starts a new chain now (and fails too if the database is damaged);
         * the operator hears of the broken chain all the same. */
        char why[CAIRN_ERRMSG_SIZE];
        char what[64];
        memcpy(why, errmsg, sizeof why);
        snprintf(what, sizeof what, "scheduled %s", backupTypeName(t));
        rv = adminBackup(hk->db, BACKUP_FULL, r->name, NULL, NULL, info, errmsg);
        if (rv == 0) {
            char msg[CAIRN_ERRMSG_SIZE + 128];
            snprintf(msg, sizeof msg, "%s; a full backup, %s, was taken instead", why, info->id);
            housekeepingAlert(hk, r, "backup_failed", what, msg);
        }
    }
    return rv;
}

/* The type order when several are due at once: a full backup first (the others chain
 * to it), then differential, then incremental. */
static const int typeOrder[] = {BACKUP_FULL, BACKUP_DIFFERENTIAL, BACKUP_INCREMENTAL};

/* Under mu: the earliest due job at now, as (repository, type; 0 for a drill); false
 * when none, *wake_ms the next due time (or -1). */
static bool dueJob(struct housekeeping *hk, int64_t now, unsigned *ri, int *type, int64_t *wake_ms)
{
    *wake_ms = -1;
    for (unsigned i = 0; i < hk->cfg->n; i++) {
        struct hk_repo *s = &hk->rs[i];
        if (!s->runner || !s->caught_up) {
            continue;
        }
        for (size_t k = 0; k < 3; k++) {
            int64_t next = s->t[typeOrder[k]].next_ms;
            if (next >= 0 && next <= now) {
                *ri = i;
                *type = typeOrder[k];
                return true;
            }
            if (next >= 0 && (*wake_ms < 0 || next < *wake_ms)) {
                *wake_ms = next;
            }
        }
        if (s->drill_next_ms >= 0 && s->drill_next_ms <= now) {
            *ri = i;
            *type = 0;
            return true;
        }
        if (s->drill_next_ms >= 0 && (*wake_ms < 0 || s->drill_next_ms < *wake_ms)) {
            *wake_ms = s->drill_next_ms;
        }
    }
    return false;
}

/* Run the due job (repository i, type or 0 for a drill) with mu released; the state is
 * updated under mu after. A reload meanwhile (hk->reloads changed) drops what it
 * found: the new configuration's state is computed from the catalog again. */
static void runJob(struct housekeeping *hk, unsigned i, int type)
{
    unsigned gen = hk->reloads;            /* a reload meanwhile drops what this run finds */
    struct bconfig_repo r = hk->cfg->r[i]; /* a copy: a reload frees the configuration */
    struct hk_repo fresh;
    struct backup_info info;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char experr[CAIRN_ERRMSG_SIZE] = "";
    char id[BACKUP_ID_SIZE] = "";
    char scratch[PATH_MAX] = "";
    struct hk_pitr pitr;
    size_t expired = 0;
    bool expiry_ran = false;
    int64_t start;
    int rv;

    assert(!nodeOnLoop(hk->db->node)); /* it waits on the loop (adminFreeze) */
    memset(&pitr, 0, sizeof pitr);
    pthread_mutex_unlock(&hk->mu);
    /* The catalog first: another node may have taken this run since we last looked. */
    hkRepoInit(&fresh);
    rv = readCatalog(hk, &r, &fresh, errmsg);
    pthread_mutex_lock(&hk->mu);
    if (hk->reloads != gen || hk->stop) {
        return;
    }
    if (rv == 0) {
        int64_t now = repoNowMs();
        applyCatalog(hk, i, &fresh);
        computeNext(hk, i, now);
        if (type != 0 ? !(hk->rs[i].t[type].next_ms >= 0 && hk->rs[i].t[type].next_ms <= now)
                      : !(hk->rs[i].drill_next_ms >= 0 && hk->rs[i].drill_next_ms <= now)) {
            return; /* no longer due */
        }
    }
    pthread_mutex_unlock(&hk->mu);

    start = repoNowMs();
    if (rv != 0) {
        /* The catalog cannot be read: the run would not know what was done. */
    } else if (type != 0) {
        rv = runBackup(hk, &r, type, &info, errmsg);
        if (rv == 0) {
            dbLog(hk->db, "backup schedule: repository '%s': %s backup %s taken", r.name,
                  backupTypeName(info.type), info.id);
            if (r.has_retention) {
                runExpiry(hk, &r, &expired, experr);
                expiry_ran = true;
            }
        }
    } else {
        rv = runDrill(hk, &r, id, scratch, &pitr, errmsg);
        if (rv == 0 && !pitr.ran) {
            dbLog(hk->db,
                  "backup schedule: repository '%s': drill of %s passed "
                  "(trial restore in %s, integrity_check; no archive: no PITR drill)",
                  r.name, id, scratch);
        } else if (rv == 0) {
            char at[LIB_ISO8601_SIZE];
            libIso8601(pitr.stop_ms, LIB_ISO8601_MS, at);
            dbLog(hk->db,
                  "backup schedule: repository '%s': drill of %s passed "
                  "(trial restore in %s, integrity_check); PITR drill to index %llu passed "
                  "(stopped at index %llu, %s; integrity_check)",
                  r.name, id, scratch, (unsigned long long)pitr.target,
                  (unsigned long long)pitr.stopped, at);
        }
    }
    if (rv != 0 && rv != CAIRN_ENOTLEADER) {
        char what[64];
        snprintf(what, sizeof what, "%s %s", type != 0 ? "scheduled" : "restore",
                 type != 0 ? backupTypeName(type) : "drill");
        housekeepingAlert(hk, &r, type != 0 ? "backup_failed" : "drill_failed", what, errmsg);
    }
    if (expiry_ran && experr[0] != '\0') {
        housekeepingAlert(hk, &r, "expiry_failed", "expiry", experr);
    }

    pthread_mutex_lock(&hk->mu);
    if (hk->reloads != gen) {
        return;
    }
    struct hk_repo *s = &hk->rs[i];
    int64_t now = repoNowMs();
    if (rv == CAIRN_ENOTLEADER) {
        s->runner = false;
        s->caught_up = false;
    } else if (type != 0) {
        struct hk_type *ty = &s->t[type];
        if (rv == 0) {
            ty->last_ok_ms = info.created_ms;
            snprintf(ty->last_id, sizeof ty->last_id, "%s", info.id);
            ty->retry_ms = 0;
            ty->runs++;
        } else {
            ty->last_fail_ms = start;
            snprintf(ty->last_fail, sizeof ty->last_fail, "%s", errmsg);
            ty->retry_ms = retryAfter(&r.sched[type], now);
            ty->failures++;
        }
        if (expiry_ran) {
            s->expire_ms = now;
            s->expired = expired;
            snprintf(s->expire_err, sizeof s->expire_err, "%s", experr);
        }
    } else {
        s->drill_here = true;
        s->drill_last_ms = now; /* after the catalog's verified_at, which it wrote */
        s->drill_result = rv == 0 ? BACKUP_VERIFIED : BACKUP_VERIFY_FAILED;
        snprintf(s->drill_id, sizeof s->drill_id, "%s", id);
        snprintf(s->drill_msg, sizeof s->drill_msg, "%s", rv == 0 ? "" : errmsg);
        s->drill_pitr = pitr;
        s->drill_retry_ms = rv == 0 ? 0 : retryAfter(&r.drill, now);
        s->drills++;
        if (rv != 0) {
            s->drill_failures++;
        }
    }
    computeNext(hk, i, now);
}

static void *hkMain(void *arg)
{
    struct housekeeping *hk = arg;
    pthread_mutex_lock(&hk->mu);
    while (!hk->stop) {
        int64_t now = repoNowMs();
        int64_t wake_ms;
        unsigned ri;
        int type;
        struct timespec ts;
        int64_t wait, until;

        /* Who runs what: a repository this node newly runs reads its catalog first. */
        for (unsigned i = 0; i < hk->cfg->n && !hk->stop; i++) {
            struct hk_repo *s = &hk->rs[i];
            bool was = s->runner;
            s->runner = isRunner(hk, &hk->cfg->r[i], s->role, sizeof s->role);
            if (!s->runner) {
                s->caught_up = false;
                s->catalog_retry_ms = 0;
            } else if (!was || (!s->caught_up && now >= s->catalog_retry_ms)) {
                unsigned gen = hk->reloads;
                struct bconfig_repo r = hk->cfg->r[i];
                struct hk_repo fresh;
                char errmsg[CAIRN_ERRMSG_SIZE];
                int rv;
                if (!was) {
                    s->anchor_ms = now;
                    dbLog(hk->db,
                          "backup schedule: repository '%s': this node runs the "
                          "schedule now (%s)",
                          r.name, s->role);
                }
                hkRepoInit(&fresh);
                pthread_mutex_unlock(&hk->mu);
                rv = readCatalog(hk, &r, &fresh, errmsg);
                if (rv == 0) {
                    readClusterCatalog(hk, &r, &fresh);
                }
                pthread_mutex_lock(&hk->mu);
                if (hk->reloads != gen) {
                    break; /* reloaded meanwhile: start over */
                }
                if (rv != 0) {
                    catalogFailed(hk, i, errmsg, now);
                    continue; /* not caught up: tried again at catalog_retry_ms */
                }
                s->catalog_retry_ms = 0;
                applyCatalog(hk, i, &fresh);
            } else if (!s->caught_up) {
                continue; /* waiting to read the catalog again */
            }
            computeNext(hk, i, repoNowMs());
        }
        if (hk->stop) {
            break;
        }
        now = repoNowMs();
        if (dueJob(hk, now, &ri, &type, &wake_ms)) {
            runJob(hk, ri, type);
            continue;
        }
        wait = HK_POLL_MS;
        if (wake_ms >= 0 && wake_ms - now < wait) {
            wait = wake_ms - now < 1 ? 1 : wake_ms - now;
        }
        until = monoMs() + wait;
        ts.tv_sec = until / 1000;
        ts.tv_nsec = (until % 1000) * 1000000;
        pthread_cond_timedwait(&hk->cond, &hk->mu, &ts);
    }
    pthread_mutex_unlock(&hk->mu);
    return NULL;
}

/* ---- start, reload, stop --------------------------------------------------------------- */

int housekeepingCheck(const struct cairn_config *cfg, const char *path, char *errmsg)
{
    struct reposet rs;
    struct bconfig *c = NULL;
    char ignore[CAIRN_ERRMSG_SIZE];
    int rv;
    /* The repositories as cairn_open configures them (db.c); a bad one is cairn_open's
     * to report. */
    if (reposetFromOptions(&rs, cfg->backup_dir, cfg->repositories, cfg->data_dir, ignore) !=
        0) {
        return 0;
    }
    rv = bconfigLoad(path, &rs, &c, errmsg);
    bconfigFree(c);
    return rv;
}

int housekeepingStart(struct cairn *db, const char *path, struct housekeeping **out, char *errmsg)
{
    struct housekeeping *hk;
    pthread_condattr_t ca;
    int rv;

    *out = NULL;
    if ((hk = calloc(1, sizeof *hk)) == NULL) {
        errorf(errmsg, "out of memory starting the housekeeping thread");
        return CAIRN_ENOMEM;
    }
    hk->db = db;
    if ((rv = bconfigLoad(path, &db->repos, &hk->cfg, errmsg)) != 0) {
        free(hk);
        return rv;
    }
    for (unsigned i = 0; i < BCONFIG_MAX_REPOS; i++) {
        hkRepoInit(&hk->rs[i]);
    }
    if ((rv = alertOpen(alertLog, bconfigMaskUrl, db, &hk->alerts, errmsg)) != 0) {
        bconfigFree(hk->cfg);
        free(hk);
        return rv;
    }
    pthread_mutex_init(&hk->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hk->cond, &ca);
    pthread_condattr_destroy(&ca);
    if ((rv = pthread_create(&hk->thread, NULL, hkMain, hk)) != 0) {
        errorf(errmsg, "cannot start the housekeeping thread: %s", strerror(rv));
        pthread_cond_destroy(&hk->cond);
        pthread_mutex_destroy(&hk->mu);
        alertClose(hk->alerts);
        bconfigFree(hk->cfg);
        free(hk);
        return CAIRN_ENOMEM;
    }
    hk->started = true;
    registryPut(db, hk);
    dbLog(db, "backup schedule: %s: %u repositor%s configured", path, hk->cfg->n,
          hk->cfg->n == 1 ? "y" : "ies");
    *out = hk;
    return 0;
}

int housekeepingReload(struct housekeeping *hk, char *errmsg)
{
    struct bconfig *c = NULL;
    struct hk_repo old[BCONFIG_MAX_REPOS];
    struct bconfig *prev;
    int rv;
    char path[PATH_MAX];

    pthread_mutex_lock(&hk->mu);
    snprintf(path, sizeof path, "%s", hk->cfg->path);
    pthread_mutex_unlock(&hk->mu);
    if ((rv = bconfigLoad(path, &hk->db->repos, &c, errmsg)) != 0) {
        dbLog(hk->db, "backup schedule: reload refused, the configuration in use stays: %s",
              errmsg);
        return rv;
    }
    pthread_mutex_lock(&hk->mu);
    prev = hk->cfg;
    memcpy(old, hk->rs, sizeof old);
    for (unsigned i = 0; i < BCONFIG_MAX_REPOS; i++) {
        hkRepoInit(&hk->rs[i]);
        for (unsigned j = 0; i < c->n && j < prev->n; j++) {
            if (strcmp(c->r[i].name, prev->r[j].name) == 0) {
                /* The history stays (failures, counts, the last drill); the schedule is
                 * recomputed from the catalog. */
                hk->rs[i] = old[j];
                hk->rs[i].caught_up = false;
                for (int t = 0; t < BCONFIG_TYPES; t++) {
                    hk->rs[i].t[t].retry_ms = 0;
                }
                hk->rs[i].drill_retry_ms = 0;
            }
        }
    }
    hk->cfg = c;
    hk->reloads++;
    pthread_cond_signal(&hk->cond);
    pthread_mutex_unlock(&hk->mu);
    bconfigFree(prev);
    dbLog(hk->db, "backup schedule: %s reloaded: %u repositor%s configured", path, c->n,
          c->n == 1 ? "y" : "ies");
    return 0;
}

void housekeepingStop(struct housekeeping *hk)
{
    if (hk == NULL || !hk->started) {
        return;
    }
    pthread_mutex_lock(&hk->mu);
    hk->stop = true;
    pthread_cond_signal(&hk->cond);
    pthread_mutex_unlock(&hk->mu);
    pthread_join(hk->thread, NULL);
    hk->started = false;
    /* After the thread: no alert is queued any more; one being delivered is given up
     * at its next timeout, and what waits is logged as not sent. */
    alertClose(hk->alerts);
    hk->alerts = NULL;
}

void housekeepingFree(struct housekeeping *hk)
{
    if (hk == NULL) {
        return;
    }
    housekeepingStop(hk);
    registryPut(hk->db, NULL);
    pthread_cond_destroy(&hk->cond);
    pthread_mutex_destroy(&hk->mu);
    bconfigFree(hk->cfg);
    free(hk);
}

/* ---- JSON for HTTP ---------------------------------------------------------------------- */

bool housekeepingConfigJson(struct cairn *db, struct buf *b)
{
    struct housekeeping *hk;
    json_t *j = NULL;
    char *text = NULL;
    pthread_mutex_lock(&regMu);
    if ((hk = registryGet(db)) != NULL) {
        pthread_mutex_lock(&hk->mu);
        j = bconfigJson(hk->cfg, &db->repos);
        if (j != NULL) {
            json_object_set_new(j, "reloads", json_integer(hk->reloads));
        }
        pthread_mutex_unlock(&hk->mu);
    }
    pthread_mutex_unlock(&regMu);
    if (hk == NULL) {
        return false;
    }
    if (j != NULL && (text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL) {
        bufPuts(b, text);
    } else {
        bufPuts(b, "{\"error\":\"out of memory\"}");
    }
    free(text);
    json_decref(j);
    return true;
}

static void jsonTime(struct buf *b, const char *key, int64_t ms)
{
    char iso[32];
    bufJsonString(b, key, strlen(key));
    bufPutc(b, ':');
    if (ms < 0) {
        bufPuts(b, "null");
        return;
    }
    repoIso8601(ms, iso);
    bufJsonString(b, iso, strlen(iso));
}

/* "key":v, or null when there is none (!set). */
static void jsonIndex(struct buf *b, const char *key, bool set, uint64_t v)
{
    bufJsonString(b, key, strlen(key));
    if (!set) {
        bufPuts(b, ":null");
    } else {
        bufPrintf(b, ":%llu", (unsigned long long)v);
    }
}

static void jsonStrKV(struct buf *b, const char *key, const char *v)
{
    bufJsonString(b, key, strlen(key));
    bufPutc(b, ':');
    bufJsonString(b, v, strlen(v));
}

void housekeepingStatusJson(struct cairn *db, struct buf *b)
{
    struct housekeeping *hk;
    int64_t now = repoNowMs();
    pthread_mutex_lock(&regMu);
    if ((hk = registryGet(db)) == NULL) {
        pthread_mutex_unlock(&regMu);
        bufPuts(b, "null");
        return;
    }
    pthread_mutex_lock(&hk->mu);
    bufPutc(b, '{');
    jsonStrKV(b, "config", hk->cfg->path);
    bufPrintf(b, ",\"reloads\":%u,\"repositories\":{", hk->reloads);
    for (unsigned i = 0; i < hk->cfg->n; i++) {
        const struct bconfig_repo *r = &hk->cfg->r[i];
        const struct hk_repo *s = &hk->rs[i];
        bool first = true;
        if (i > 0) {
            bufPutc(b, ',');
        }
        bufJsonString(b, r->name, strlen(r->name));
        bufPuts(b, ":{");
        bufPrintf(b, "\"runner\":%s,", s->runner ? "true" : "false");
        jsonStrKV(b, "role", s->role);
        bufPuts(b, ",\"types\":{");
        for (int t = BACKUP_FULL; t < BCONFIG_TYPES; t++) {
            const struct hk_type *ty = &s->t[t];
            if (r->sched[t].kind == BSCHED_NONE) {
                continue;
            }
            if (!first) {
                bufPutc(b, ',');
            }
            first = false;
            bufJsonString(b, backupTypeName(t), strlen(backupTypeName(t)));
            bufPuts(b, ":{");
            jsonStrKV(b, "schedule", r->sched[t].text);
            bufPuts(b, ",\"last_success\":");
            if (ty->last_ok_ms >= 0) {
                bufPutc(b, '{');
                jsonStrKV(b, "id", ty->last_id);
                bufPutc(b, ',');
                jsonTime(b, "time", ty->last_ok_ms);
                bufPuts(b, ",\"age_s\":");
                bufJsonDouble(b, (double)(now - ty->last_ok_ms) / 1000.0);
                bufPutc(b, '}');
            } else {
                bufPuts(b, "null");
            }
            bufPuts(b, ",\"last_failure\":");
            if (ty->last_fail_ms >= 0) {
                bufPutc(b, '{');
                jsonTime(b, "time", ty->last_fail_ms);
                bufPutc(b, ',');
                jsonStrKV(b, "message", ty->last_fail);
                bufPutc(b, '}');
            } else {
                bufPuts(b, "null");
            }
            bufPutc(b, ',');
            jsonTime(b, "next_run", ty->next_ms);
            bufPrintf(b, ",\"stale\":%s,\"runs\":%u,\"failures\":%u}",
                      ty->stale ? "true" : "false", ty->runs, ty->failures);
        }
        bufPuts(b, "},\"drill\":{");
        jsonStrKV(b, "schedule", r->drill.kind == BSCHED_NONE ? "off" : r->drill.text);
        bufPuts(b, ",\"last\":");
        if (s->drill_last_ms >= 0) {
            bufPutc(b, '{');
            jsonStrKV(b, "result", s->drill_result == BACKUP_VERIFIED ? "passed" : "failed");
            bufPutc(b, ',');
            jsonStrKV(b, "backup", s->drill_id);
            bufPutc(b, ',');
            jsonTime(b, "time", s->drill_last_ms);
            bufPutc(b, ',');
            jsonStrKV(b, "message", s->drill_msg);
            bufPrintf(b, ",\"here\":%s,\"pitr\":", s->drill_here ? "true" : "false");
            if (s->drill_here && s->drill_pitr.ran) {
                const struct hk_pitr *p = &s->drill_pitr;
                bufPuts(b, "{");
                jsonIndex(b, "target_index", p->chosen, p->target);
                bufPutc(b, ',');
                jsonIndex(b, "stopped_index", p->restored, p->stopped);
                bufPutc(b, ',');
                jsonTime(b, "time", p->restored ? p->stop_ms : -1);
                bufPutc(b, ',');
                jsonStrKV(b, "result", p->result == BACKUP_VERIFIED ? "passed" : "failed");
                bufPutc(b, ',');
                jsonStrKV(b, "message", p->msg);
                bufPutc(b, '}');
            } else {
                bufPuts(b, "null");
            }
            bufPutc(b, '}');
        } else {
            bufPuts(b, "null");
        }
        bufPutc(b, ',');
        jsonTime(b, "next_run", s->drill_next_ms);
        bufPrintf(b, ",\"runs\":%u,\"failures\":%u},\"expiry\":", s->drills, s->drill_failures);
        if (!r->has_retention) {
            bufPuts(b, "null");
        } else {
            bufPutc(b, '{');
            jsonTime(b, "last_run", s->expire_ms);
            bufPrintf(b, ",\"expired\":%zu,", s->expired);
            jsonStrKV(b, "error", s->expire_err);
            bufPutc(b, '}');
        }
        bufPutc(b, '}');
    }
    bufPuts(b, "}}");
    pthread_mutex_unlock(&hk->mu);
    pthread_mutex_unlock(&regMu);
}

bool housekeepingBackupsOk(struct cairn *db, char *why, size_t size)
{
    struct housekeeping *hk;
    bool ok = true;
    why[0] = '\0';
    pthread_mutex_lock(&regMu);
    if ((hk = registryGet(db)) == NULL) {
        pthread_mutex_unlock(&regMu);
        return true;
    }
    pthread_mutex_lock(&hk->mu);
    for (unsigned i = 0; ok && i < hk->cfg->n; i++) {
        const struct bconfig_repo *r = &hk->cfg->r[i];
        const struct hk_repo *s = &hk->rs[i];
        if (!s->runner) {
            continue;
        }
        for (int t = BACKUP_FULL; ok && t < BCONFIG_TYPES; t++) {
            const struct hk_type *ty = &s->t[t];
            if (r->sched[t].kind == BSCHED_NONE) {
                continue;
            }
            if (ty->last_fail_ms >= 0 && ty->last_fail_ms > ty->last_ok_ms) {
                snprintf(why, size, "repository '%s': the last %s backup failed: %s", r->name,
                         backupTypeName(t), ty->last_fail);
                ok = false;
            } else if (ty->stale) {
                snprintf(why, size,
                         "repository '%s': no %s backup for more than two periods of its "
                         "schedule (%s)",
                         r->name, backupTypeName(t), r->sched[t].text);
                ok = false;
            }
        }
        if (ok && s->drill_last_ms >= 0 && s->drill_result == BACKUP_VERIFY_FAILED) {
            snprintf(why, size, "repository '%s': the last drill (of %s) failed: %s", r->name,
                     s->drill_id, s->drill_msg);
            ok = false;
        }
        if (ok && r->has_retention && s->expire_err[0] != '\0') {
            snprintf(why, size, "repository '%s': the last expiry failed: %s", r->name,
                     s->expire_err);
            ok = false;
        }
    }
    pthread_mutex_unlock(&hk->mu);
    pthread_mutex_unlock(&regMu);
    return ok;
}
