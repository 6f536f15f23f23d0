/* The backup endpoints of the HTTP front end: /admin/backup(s), /admin/restore,
 * /admin/snapshot(s), and rqlite's GET /db/backup and POST /db/load.
 *
 * Long operations (backup, verify, restore) answer in one JSON object, or with
 * ?progress as newline-delimited JSON: {"progress":{"done":N,"total":M}} lines while
 * the operation runs on a thread of its own, then the final object. GET /db/backup
 * streams a copy of the frozen database file (never held in memory), gzipped with ?compress.
 * POST /db/load receives its body into a file (http.c), keeps it as a full backup in
 * the repository and restores it through the log. HTTP threads. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "admin.h"
#include "cluster.h"
#include "db.h"
#include "error.h"
#include "export.h"
#include "housekeeping.h"
#include "http_int.h"
#include "lib.h"
#include "pagesum.h"

/* ---- request bodies ---------------------------------------------------------------- */

/* Is key one of the names of list ("a, b, c")? */
static bool listed(const char *list, const char *key)
{
    size_t n = strlen(key);
    while (*list != '\0') {
        size_t len = strcspn(list, ",");
        if (len == n && memcmp(list, key, n) == 0) {
            return true;
        }
        list += len;
        list += strspn(list, ", ");
    }
    return false;
}

/* Parse the body as a JSON object (an empty body is {}) whose members are all named in
 * known ("a, b, c", as the refusal lists them): a member ignored would do something
 * else than asked ("brnach" restoring over the live database instead of into a
 * branch). On failure answers 400 and returns NULL with *ret set. */
static json_t *bodyObject(struct MHD_Connection *c, struct request *req, const char *known,
                          enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *o;
    const char *key;
    json_t *v;
    char msg[300];
    if (req->body.len == 0) {
        return json_object();
    }
    o = json_loadb(req->body.p, req->body.len, 0, &jerr);
    if (o == NULL) {
        snprintf(msg, sizeof msg, "request body is not valid JSON: %s at line %d column %d",
                 jerr.text, jerr.line, jerr.column);
        *ret = httpSendError(c, 400, msg);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        *ret = httpSendError(c, 400, "request body must be a JSON object");
        return NULL;
    }
    json_object_foreach(o, key, v)
    {
        if (!listed(known, key)) {
            snprintf(msg, sizeof msg, "unknown member \"%.64s\" in the request body: it takes %s",
                     key, known);
            json_decref(o);
            *ret = httpSendError(c, 400, msg);
            return NULL;
        }
    }
    return o;
}

/* A string member: NULL when absent or null; sets *bad when of another type. */
static const char *memberString(json_t *o, const char *key, bool *bad)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) {
        return NULL;
    }
    if (!json_is_string(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

struct flag_seek {
    const char *key;
    bool on;
};

static enum MHD_Result seekFlag(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    struct flag_seek *f = cls;
    if (strcmp(key, f->key) == 0) {
        f->on = value == NULL || (strcmp(value, "false") != 0 && strcmp(value, "0") != 0);
    }
    return MHD_YES;
}

/* A query-string flag as rqlite reads them: present (without a value, or with one
 * other than false/0) means true. MHD's lookup cannot tell "?flag" from no flag. */
static bool queryFlag(struct MHD_Connection *c, const char *key)
{
    struct flag_seek f = {key, false};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, seekFlag, &f);
    return f.on;
}

static bool wantProgress(struct MHD_Connection *c)
{
    return queryFlag(c, "progress");
}

/* ---- jobs: a long operation answered as JSON, or streamed with progress ----------- */

enum job_kind { JOB_BACKUP, JOB_VERIFY, JOB_RESTORE, JOB_RESTORE_AS_OF };

struct job {
    struct cairn *db;
    int kind;
    /* arguments */
    int type;
    char to[PATH_MAX];
    char id[PATH_MAX];
    char branch[SQLFRONT_NAME_MAX];
    bool trial_restore;
    enum pitr_kind asof; /* JOB_RESTORE_AS_OF: the target; id names the repository */
    uint64_t asof_index;
    int64_t asof_ms;
    /* the answer */
    unsigned status;
    struct buf out; /* final JSON object, without newline */
    /* streaming */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct buf lines; /* NDJSON produced and not yet sent */
    size_t sent;
    bool done;
    double last_progress;
};

static void jobProgress(void *arg, uint64_t done, uint64_t total)
{
    struct job *j = arg;
    double now = httpNow();
    if (now - j->last_progress < 0.1 && done < total) {
        return; /* at most ten lines a second */
    }
    j->last_progress = now;
    pthread_mutex_lock(&j->mu);
    bufPrintf(&j->lines, "{\"progress\":{\"done\":%llu,\"total\":%llu}}\n",
              (unsigned long long)done, (unsigned long long)total);
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
}

static void errorObject(struct buf *b, const char *msg)
{
    bufPuts(b, "{\"error\":");
    bufJsonString(b, msg, strlen(msg));
    bufPutc(b, '}');
}

/* The head of a restore job's answer, left open for more members:
 * {"restored":BACKUP,"branch":NAME|null,"raft_index":N */
static void restoredJson(struct job *j, const struct backup_info *info, uint64_t index)
{
    bufPuts(&j->out, "{\"restored\":");
    backupInfoJson(info, &j->out);
    bufPuts(&j->out, ",\"branch\":");
    bufJsonText(&j->out, j->branch);
    bufPrintf(&j->out, ",\"raft_index\":%llu", (unsigned long long)index);
}

/* Run the job, filling status and out. */
static void jobRun(struct job *j, bool streaming)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct backup_info info;
    backup_progress_fn progress = streaming ? jobProgress : NULL;
    uint64_t index = 0;
    int rv;

    switch (j->kind) {
        case JOB_BACKUP:
            rv = adminBackup(j->db, j->type, j->to[0] ? j->to : NULL, progress, j, &info,
                             errmsg);
            if (rv == 0) {
                /* As the catalogue shows it: with the node that holds it. */
                bufPuts(&j->out, "{\"backup\":");
                backupInfoJson(&info, &j->out);
                j->out.len--; /* the entry's closing brace */
                bufPrintf(&j->out, ",\"nodes\":[%llu]}}", (unsigned long long)j->db->cfg.node_id);
            }
            break;
        case JOB_VERIFY:
            rv = adminFindBackup(j->db, j->id, &info, errmsg);
            if (rv == 0) {
                int vr = backupVerify(adminRepoUrl(j->db, &info), info.id, j->trial_restore,
                                      progress, j, errmsg);
                bufPuts(&j->out, "{\"id\":");
                bufJsonString(&j->out, info.id, strlen(info.id));
                bufPrintf(&j->out, ",\"ok\":%s,\"trial_restore\":%s", vr == 0 ? "true" : "false",
                          j->trial_restore ? "true" : "false");
                if (vr != 0) {
                    bufPuts(&j->out, ",\"error\":");
                    bufJsonString(&j->out, errmsg, strlen(errmsg));
                }
                bufPutc(&j->out, '}');
            }
            break;
        case JOB_RESTORE_AS_OF: {
            struct pitr_result pr;
            char when[LIB_ISO8601_SIZE];
            rv = adminRestoreAsOf(j->db, j->id, j->branch, j->asof, j->asof_index, j->asof_ms,
                                  &pr, &info, &index, errmsg);
            if (rv == 0) {
                restoredJson(j, &info, index);
                bufPrintf(&j->out, ",\"as_of\":{\"index\":%llu,\"time\":",
                          (unsigned long long)pr.stop_index);
                when[0] = '\0'; /* null when no archived entry was replayed: the base alone */
                if (pr.stop_ms != 0) {
                    libIso8601(pr.stop_ms, LIB_ISO8601_MS, when);
                }
                bufJsonText(&j->out, when);
                bufPrintf(&j->out, ",\"time_ms\":%lld,\"target_index\":%llu,"
                                   "\"entries_replayed\":%llu,\"timeline\":",
                          (long long)pr.stop_ms, (unsigned long long)pr.target,
                          (unsigned long long)pr.entries);
                bufJsonText(&j->out, pr.timeline);
                bufPuts(&j->out, ",\"base\":");
                backupInfoJson(&pr.base, &j->out);
                bufPuts(&j->out, "}}");
            }
            break;
        }
        default:
            rv = adminRestore(j->db, j->id, j->branch, progress, j, &info, &index, errmsg);
            if (rv == 0) {
                restoredJson(j, &info, index);
                bufPutc(&j->out, '}');
            }
            break;
    }
    j->status = rv == 0 ? 200 : httpStatusFor(rv);
    if (rv != 0) {
        bufReset(&j->out);
        errorObject(&j->out, errmsg);
    }
}

static void jobFree(struct job *j)
{
    bufFree(&j->out);
    bufFree(&j->lines);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    free(j);
}

static void *jobMain(void *arg)
{
    struct job *j = arg;
    jobRun(j, true);
    pthread_mutex_lock(&j->mu);
    bufPut(&j->lines, j->out.p, j->out.len);
    bufPutc(&j->lines, '\n');
    j->done = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* MHD pulls the stream: wait for lines, hand them over. */
static ssize_t jobRead(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct job *j = cls;
    size_t n;
    pthread_mutex_lock(&j->mu);
    while (j->sent == j->lines.len && !j->done) {
        pthread_cond_wait(&j->cond, &j->mu);
    }
    n = j->lines.len - j->sent;
    if (n == 0) {
        pthread_mutex_unlock(&j->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (n > max) {
        n = max;
    }
    memcpy(buf, j->lines.p + j->sent, n);
    j->sent += n;
    pthread_mutex_unlock(&j->mu);
    return (ssize_t)n;
}

static void jobStreamFree(void *cls)
{
    struct job *j = cls;
    pthread_join(j->thread, NULL); /* the client may have gone: the job finishes anyway */
    jobFree(j);
}

/* Answer the job: at once, or streamed with progress. Takes j. */
static enum MHD_Result jobAnswer(struct MHD_Connection *c, struct job *j)
{
    struct MHD_Response *r;
    enum MHD_Result ret;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    if (!wantProgress(c)) {
        jobRun(j, false);
        bufPutc(&j->out, '\n');
        unsigned status = j->status;
        struct buf out = j->out;
        bufInit(&j->out);
        jobFree(j);
        return httpSendBuf(c, status, &out, false);
    }
    if (pthread_create(&j->thread, NULL, jobMain, j) != 0) {
        jobFree(j);
        return httpSendError(c, 503, "cannot start a thread for the operation");
    }
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, jobRead, j, jobStreamFree);
    if (r == NULL) {
        pthread_join(j->thread, NULL);
        jobFree(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static struct job *jobNew(struct cairn *db, int kind)
{
    struct job *j = calloc(1, sizeof *j);
    if (j != NULL) {
        j->db = db;
        j->kind = kind;
        bufInit(&j->out);
        bufInit(&j->lines);
    }
    return j;
}

/* ---- /admin/... ------------------------------------------------------------------ */

static enum MHD_Result postBackup(struct http_server *h, struct MHD_Connection *c,
                                  struct request *req)
{
    enum MHD_Result ret = MHD_NO;
    bool bad = false;
    json_t *o = bodyObject(c, req, "type, to", &ret);
    const char *type;
    const char *to;
    struct job *j;
    int t = BACKUP_FULL;
    if (o == NULL) {
        return ret;
    }
    type = memberString(o, "type", &bad);
    to = memberString(o, "to", &bad);
    if (bad) {
        json_decref(o);
        return httpSendError(c, 400, "\"type\" and \"to\" must be strings");
    }
    if (type != NULL && (t = backupTypeFromName(type)) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "unknown backup type \"%.64s\": use full, incremental or "
                                  "differential", type);
        json_decref(o);
        return httpSendError(c, 400, msg);
    }
    if (to != NULL && (to[0] == '\0' || strlen(to) >= PATH_MAX)) {
        json_decref(o);
        return httpSendError(c, 400, "\"to\" must name a directory");
    }
    j = jobNew(h->db, JOB_BACKUP);
    if (j == NULL) {
        json_decref(o);
        return httpSendError(c, 500, "out of memory");
    }
    j->type = t;
    snprintf(j->to, sizeof j->to, "%s", to ? to : "");
    json_decref(o);
    return jobAnswer(c, j);
}

/* The archive point of a POST /admin/restore body: "to_index": N, "to_time": "ISO-8601"
 * or "latest": true (at most one). *given false when none; otherwise a 400 message in
 * msg (MSG naming the field) and -1. */
static int restoreTarget(json_t *o, struct job *j, bool *given, char *msg, size_t size)
{
    json_t *ix = json_object_get(o, "to_index");
    json_t *tm = json_object_get(o, "to_time");
    json_t *lt = json_object_get(o, "latest");
    int n = 0;
    *given = false;
    if (ix != NULL && !json_is_null(ix)) {
        if (!json_is_integer(ix) || json_integer_value(ix) <= 0) {
            snprintf(msg, size, "\"to_index\" must be a log index (a positive integer)");
            return -1;
        }
        j->asof = PITR_INDEX;
        j->asof_index = (uint64_t)json_integer_value(ix);
        n++;
    }
    if (tm != NULL && !json_is_null(tm)) {
        if (!json_is_string(tm) || libParseIso8601(json_string_value(tm), &j->asof_ms) != 0) {
            snprintf(msg, size, "\"to_time\" must be an ISO-8601 time in UTC, as "
                                "\"2026-12-02T10:02:00Z\" (a string)");
            return -1;
        }
        j->asof = PITR_TIME;
        n++;
    }
    if (lt != NULL && !json_is_null(lt)) {
        if (!json_is_boolean(lt)) {
            snprintf(msg, size, "\"latest\" must be true or false");
            return -1;
        }
        if (json_is_true(lt)) {
            j->asof = PITR_LATEST;
            n++;
        }
    }
    if (n > 1) {
        snprintf(msg, size, "give one of \"to_index\", \"to_time\" and \"latest\", not %d", n);
        return -1;
    }
    *given = n == 1;
    return 0;
}

static enum MHD_Result postRestore(struct http_server *h, struct MHD_Connection *c,
                                   struct request *req)
{
    enum MHD_Result ret = MHD_NO;
    bool bad = false;
    bool bad_repo = false;
    bool asof = false;
    json_t *o = bodyObject(c, req, "backup_id, branch, repository, to_index, to_time, latest",
                           &ret);
    const char *id;
    const char *branch;
    const char *repository;
    char msg[CAIRN_ERRMSG_SIZE];
    struct job *j;
    if (o == NULL) {
        return ret;
    }
    j = jobNew(h->db, JOB_RESTORE);
    if (j == NULL) {
        json_decref(o);
        return httpSendError(c, 500, "out of memory");
    }
    id = memberString(o, "backup_id", &bad);
    branch = memberString(o, "branch", &bad);
    repository = memberString(o, "repository", &bad_repo);
    if (restoreTarget(o, j, &asof, msg, sizeof msg) != 0) {
        goto bad_request;
    }
    if (bad_repo || (repository != NULL && repository[0] == '\0')) {
        snprintf(msg, sizeof msg, "\"repository\" must name a repository (a string)");
        goto bad_request;
    }
    if (asof) {
        /* The repository read: "repository", or the one holding "backup_id", or the
         * default. */
        if (bad || (id != NULL && id[0] == '\0')) {
            snprintf(msg, sizeof msg, "\"backup_id\" and \"branch\" must be strings");
            goto bad_request;
        }
        if (repository != NULL && id != NULL) {
            snprintf(msg, sizeof msg, "give \"repository\" or \"backup_id\" with a target, "
                                      "not both");
            goto bad_request;
        }
        id = repository != NULL ? repository : id != NULL ? id : "default";
        j->kind = JOB_RESTORE_AS_OF;
    } else if (repository != NULL) {
        snprintf(msg, sizeof msg, "\"repository\" goes with \"to_index\", \"to_time\" or "
                                  "\"latest\"; a plain restore names \"backup_id\"");
        goto bad_request;
    } else if (bad || id == NULL || id[0] == '\0') {
        snprintf(msg, sizeof msg, "expected {\"backup_id\": \"ID\"} with an optional "
                                  "\"branch\": \"NAME\" (strings), or a target (\"to_index\", "
                                  "\"to_time\", \"latest\")");
        goto bad_request;
    }
    if (strlen(id) >= PATH_MAX || (branch != NULL && strlen(branch) >= SQLFRONT_NAME_MAX)) {
        snprintf(msg, sizeof msg, "backup id, repository or branch name too long");
        goto bad_request;
    }
    if (branch != NULL && !sqlfrontBranchNameValid(branch, msg)) {
        goto bad_request;
    }
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->branch, sizeof j->branch, "%s", branch ? branch : "");
    json_decref(o);
    return jobAnswer(c, j);

bad_request:
    json_decref(o);
    bufFree(&j->out);
    bufFree(&j->lines);
    free(j);
    return httpSendError(c, 400, msg);
}

static enum MHD_Result postVerify(struct http_server *h, struct MHD_Connection *c,
                                  struct request *req, const char *id)
{
    enum MHD_Result ret = MHD_NO;
    json_t *o = bodyObject(c, req, "restore", &ret);
    json_t *v;
    struct job *j;
    if (o == NULL) {
        return ret;
    }
    v = json_object_get(o, "restore");
    if (v != NULL && !json_is_boolean(v)) {
        json_decref(o);
        return httpSendError(c, 400, "\"restore\" must be true or false");
    }
    j = jobNew(h->db, JOB_VERIFY);
    if (j == NULL) {
        json_decref(o);
        return httpSendError(c, 500, "out of memory");
    }
    snprintf(j->id, sizeof j->id, "%s", id);
    j->trial_restore = v != NULL && json_is_true(v);
    json_decref(o);
    return jobAnswer(c, j);
}

/* Answer 200 with doc (taken: freed here; NULL means out of memory) as one line. */
static enum MHD_Result sendJson(struct MHD_Connection *c, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    struct buf b;
    json_decref(doc);
    if (text == NULL) {
        return httpSendError(c, 500, "out of memory");
    }
    bufInit(&b);
    bufPuts(&b, text);
    bufPutc(&b, '\n');
    free(text);
    return httpSendBuf(c, 200, &b, false);
}

/* GET /admin/backups: the cluster's catalogue (clusterBackupCatalog), or with ?local
 * this node's repository alone (what peers ask each other for). */
static enum MHD_Result getBackups(struct http_server *h, struct MHD_Connection *c)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct buf b;
    int rv;
    /* A peer's request is always answered from here alone: a catalogue never asks
     * further (no request loops between nodes). */
    if (!queryFlag(c, "local") && !httpIsForwarded(c)) {
        json_t *cat = NULL;
        if ((rv = clusterBackupCatalog(h->db, &cat, errmsg)) != 0) {
            return httpSendError(c, httpStatusFor(rv), errmsg);
        }
        return sendJson(c, cat);
    }
    rv = reposetList(&h->db->repos, -1, &list, &n, errmsg);
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    bufInit(&b);
    bufPuts(&b, "{\"backups\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            bufPutc(&b, ',');
        }
        backupInfoJson(&list[i], &b);
    }
    bufPuts(&b, "]}\n");
    free(list);
    return httpSendBuf(c, 200, &b, false);
}

/* GET /admin/backups/ID: the catalogue entry (with "nodes"), from this node's repository
 * or, in a cluster, a peer's. */
static enum MHD_Result getBackup(struct http_server *h, struct MHD_Connection *c,
                                 const char *id)
{
    struct backup_info info;
    char errmsg[CAIRN_ERRMSG_SIZE];
    json_t *cat = NULL;
    json_t *e;
    size_t i;
    int rv;
    if (strchr(id, '/') != NULL) {
        return httpSendError(c, 400, "a backup id has no '/'");
    }
    if ((rv = clusterBackupCatalog(h->db, &cat, errmsg)) != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    json_array_foreach(json_object_get(cat, "backups"), i, e)
    {
        const char *eid = json_string_value(json_object_get(e, "id"));
        json_t *damage = json_object_get(e, "error");
        if (eid != NULL && strcmp(eid, id) == 0 && (damage == NULL || json_is_null(damage))) {
            json_t *one = json_pack("{sO}", "backup", e);
            json_decref(cat);
            return sendJson(c, one);
        }
    }
    json_decref(cat);
    /* Not listed: the repository's own words (no such id, or a damaged file). */
    {
        unsigned which;
        rv = reposetFind(&h->db->repos, id, &which, &info, errmsg);
    }
    return httpSendError(c, rv != 0 ? httpStatusFor(rv) : 404,
                         rv != 0 ? errmsg : "no such backup");
}

/* POST /admin/digest: a digest entry through the leader's log; every node digests its
 * database as of that entry. Answers {"digest":{"index":N}}. */
static enum MHD_Result postDigest(struct http_server *h, struct MHD_Connection *c,
                                  struct request *req)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    enum MHD_Result ret;
    uint64_t index = 0;
    struct buf b;
    int rv;
    if (httpRoute(h, c, "/admin/digest", "POST", req, 0, false, &ret)) {
        return ret;
    }
    rv = adminProposeDigest(h->db, &index, errmsg);
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    bufInit(&b);
    bufPrintf(&b, "{\"digest\":{\"index\":%llu}}\n", (unsigned long long)index);
    return httpSendBuf(c, 200, &b, false);
}

/* GET /admin/digest?index=N: this node's digest at entry N ({"index", "node_id",
 * "state": "pending"|"done"|"failed", "digest" (16 hex digits), "pages", "error"});
 * 404 when this node has none for N (not applied yet, or long ago). */
static enum MHD_Result getDigest(struct http_server *h, struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "index");
    char msg[160];
    struct db_digest d;
    unsigned long long index;
    char *end;
    struct buf b;
    static const char *const states[] = {"", "pending", "done", "failed"};
    errno = 0;
    index = v != NULL ? strtoull(v, &end, 10) : 0;
    if (v == NULL || !isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 || index == 0) {
        return httpSendError(c, 400, "GET /admin/digest needs ?index=N, a log index");
    }
    if (adminDigest(h->db, index, &d) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        if (dbDiverged(h->db, why, sizeof why)) {
            /* It applies nothing until it is repaired: waiting for it is pointless. */
            char text[CAIRN_ERRMSG_SIZE + 96];
            snprintf(text, sizeof text, "no digest at log index %llu on this node, which will "
                                        "not apply it: %s", index, why);
            return httpSendError(c, 503, text);
        }
        snprintf(msg, sizeof msg, "no digest at log index %llu on this node (not applied yet, "
                                  "or older than the last 8)", index);
        return httpSendError(c, 404, msg);
    }
    bufInit(&b);
    bufPrintf(&b, "{\"index\":%llu,\"node_id\":%llu,\"state\":\"%s\",\"digest\":\"%016llx\","
                  "\"pages\":%llu,\"error\":",
              index, (unsigned long long)h->db->cfg.node_id,
              states[d.state >= 0 && d.state <= 3 ? d.state : 0], (unsigned long long)d.digest,
              (unsigned long long)d.pages);
    bufJsonText(&b, d.error);
    bufPuts(&b, "}\n");
    return httpSendBuf(c, 200, &b, false);
}

static enum MHD_Result postSnapshot(struct http_server *h, struct MHD_Connection *c)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    uint64_t index = 0;
    struct buf b;
    int rv = nodeSnapshot(h->db->node, &index, errmsg);
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    bufInit(&b);
    bufPrintf(&b, "{\"snapshot\":{\"index\":%llu}}\n", (unsigned long long)index);
    return httpSendBuf(c, 200, &b, false);
}

static enum MHD_Result getSnapshots(struct http_server *h, struct MHD_Connection *c)
{
    struct buf b;
    bufInit(&b);
    bufPuts(&b, "{\"snapshots\":");
    adminSnapshotsJson(h->db, &b);
    bufPuts(&b, "}\n");
    return httpSendBuf(c, 200, &b, false);
}

/* ---- GET /db/backup ------------------------------------------------------------------ */

#define DUMP_CHUNK (256 * 1024)

struct dump {
    struct store_freeze fz;
    bool frozen; /* fz holds the live database (while it is copied) */
    int fd;      /* what is served: the copy (unlinked, closed here) */
    uint64_t size;
    bool gzip;
    z_stream z;
    bool z_open;
    bool z_end;
    uint64_t in_off;
    unsigned char in[DUMP_CHUNK];
};

/* Read file bytes at off, presenting the file as a rollback-journal database: bytes 18
 * and 19 of the header say WAL (2) in the live file; a copy says 1, so that it opens
 * anywhere, read-only included, without a WAL beside it. Page 1, so changed, is sealed
 * again when the database has page checksums (pagesum.h). */
static ssize_t dumpPread(struct dump *d, unsigned char *buf, size_t n, uint64_t off)
{
    ssize_t got;
    if (off >= d->size) {
        return 0;
    }
    if (n > d->size - off) {
        n = (size_t)(d->size - off);
    }
    if (off < 100) {
        /* The request touches the header: build page 1 whole, then copy from it. */
        unsigned char page[65536];
        size_t psize;
        do {
            got = pread(d->fd, page, 100, 0);
        } while (got < 0 && errno == EINTR);
        if (got != 100) {
            return got < 0 ? got : 0;
        }
        psize = ((size_t)page[16] << 8) | page[17];
        psize = psize == 1 ? 65536 : psize;
        if (psize < 512 || psize > sizeof page || psize > d->size) {
            psize = 100;
        }
        do {
            got = pread(d->fd, page, psize, 0);
        } while (got < 0 && errno == EINTR);
        if (got != (ssize_t)psize) {
            return got < 0 ? got : 0;
        }
        if (page[18] == 2 && page[19] == 2 && psize >= 512) {
            pagesumSetVersions(page, psize, 1);
        }
        if (off + n > psize) {
            n = psize - (size_t)off;
        }
        memcpy(buf, page + off, n);
        return (ssize_t)n;
    }
    do {
        got = pread(d->fd, buf, n, (off_t)off);
    } while (got < 0 && errno == EINTR);
    return got;
}

static ssize_t dumpRead(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct dump *d = cls;
    if (!d->gzip) {
        ssize_t got = dumpPread(d, (unsigned char *)buf, max, pos);
        if (got == 0) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        return got < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : got;
    }
    if (d->z_end) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    d->z.next_out = (unsigned char *)buf;
    d->z.avail_out = (uInt)max;
    while (d->z.avail_out > 0) {
        if (d->z.avail_in == 0 && d->in_off < d->size) {
            ssize_t got = dumpPread(d, d->in, sizeof d->in, d->in_off);
            if (got <= 0) {
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            d->in_off += (uint64_t)got;
            d->z.next_in = d->in;
            d->z.avail_in = (uInt)got;
        }
        int zr = deflate(&d->z, d->in_off >= d->size ? Z_FINISH : Z_NO_FLUSH);
        if (zr == Z_STREAM_END) {
            d->z_end = true;
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    return (ssize_t)(max - d->z.avail_out);
}

static void dumpFree(void *cls)
{
    struct dump *d = cls;
    if (d->z_open) {
        deflateEnd(&d->z);
    }
    if (d->frozen) {
        storeThaw(&d->fz);
    } else if (d->fd >= 0) {
        close(d->fd);
    }
    free(d);
}

/* GET /db/backup: copy the frozen database, as served, into DATA/export-XXXXXX, thaw
 * at once (the live database is held only for the copy, not for as long as the client
 * takes to read: a client that reads slowly, or not at all, held back every checkpoint,
 * snapshot and backup of the node), with strip (an export for a user, not ?internal)
 * leave cairn's table out of the copy (export.h), and serve the copy, unlinked as soon
 * as it is open. */
static int exportCopy(struct cairn *db, struct dump *d, bool strip, char *errmsg)
{
    char path[PATH_MAX];
    int fd;
    int rv = 0;
    struct stat st;
    if ((size_t)snprintf(path, sizeof path, "%s/export-XXXXXX", db->data_dir) >= sizeof path ||
        (fd = mkostemp(path, O_CLOEXEC)) < 0) {
        errorf(errmsg, "cannot create a file for the export in %s: %s", db->data_dir,
               strerror(errno));
        return errorFromErrno(errno);
    }
    for (uint64_t off = 0; off < d->size && rv == 0;) {
        ssize_t got = dumpPread(d, d->in, sizeof d->in, off);
        if (got <= 0) {
            errorf(errmsg, "read the database for the export: %s",
                   got < 0 ? strerror(errno) : "the file is shorter than it was");
            rv = got < 0 ? errorFromErrno(errno) : CAIRN_EIO;
            break;
        }
        for (ssize_t done = 0; done < got && rv == 0;) {
            ssize_t w = pwrite(fd, d->in + done, (size_t)(got - done), (off_t)(off + (uint64_t)done));
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                errorf(errmsg, "write the export copy %s: %s", path,
                       w < 0 ? strerror(errno) : "nothing written");
                rv = w < 0 ? errorFromErrno(errno) : CAIRN_EIO;
                break;
            }
            done += w;
        }
        off += (uint64_t)got;
    }
    close(fd);
    storeThaw(&d->fz);
    d->frozen = false;
    d->fd = -1;
    if (rv == 0 && strip) {
        rv = exportStripInternal(path, NULL, errmsg);
    }
    if (rv == 0) {
        d->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (d->fd < 0 || fstat(d->fd, &st) != 0) {
            errorf(errmsg, "open the export copy %s: %s", path, strerror(errno));
            rv = errorFromErrno(errno);
        } else {
            d->size = (uint64_t)st.st_size;
        }
    }
    unlink(path);
    return rv;
}

static enum MHD_Result getDbBackup(struct http_server *h, struct MHD_Connection *c)
{
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "fmt");
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct MHD_Response *r;
    enum MHD_Result ret;
    struct stat st;
    struct dump *d;
    int rv;

    if (fmt != NULL && strcmp(fmt, "sqlite") != 0 && strcmp(fmt, "binary") != 0) {
        return httpSendError(c, 400, "only fmt=sqlite (a SQLite database file) is served");
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        return httpSendError(c, 500, "out of memory");
    }
    d->gzip = queryFlag(c, "compress");
    rv = adminFreeze(h->db, &d->fz, errmsg);
    if (rv != 0) {
        free(d);
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    d->frozen = true;
    d->fd = d->fz.fd;
    if (fstat(d->fz.fd, &st) != 0) {
        dumpFree(d);
        return httpSendError(c, 500, "cannot stat the database file");
    }
    d->size = (uint64_t)st.st_size;
    /* ?internal: the node's own file, cairn's table included (what heals and `cairn
     * repair --from-peer` take from a peer); otherwise an export for a user. */
    if ((rv = exportCopy(h->db, d, !queryFlag(c, "internal"), errmsg)) != 0) {
        dumpFree(d);
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    if (d->gzip) {
        if (deflateInit2(&d->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            dumpFree(d);
            return httpSendError(c, 500, "cannot start gzip");
        }
        d->z_open = true;
    }
    r = MHD_create_response_from_callback(d->gzip ? MHD_SIZE_UNKNOWN : d->size, DUMP_CHUNK,
                                          dumpRead, d, dumpFree);
    if (r == NULL) {
        dumpFree(d);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            d->gzip ? "application/gzip" : "application/octet-stream");
    MHD_add_response_header(r, "Content-Disposition",
                            d->gzip ? "attachment; filename=\"db.sqlite.gz\""
                                    : "attachment; filename=\"db.sqlite\"");
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- POST /db/load ------------------------------------------------------------------ */

bool httpIsLoad(const char *url, const char *method)
{
    return strcmp(url, "/db/load") == 0 && strcmp(method, "POST") == 0;
}

int httpLoadOpen(struct http_server *h, struct request *req)
{
    snprintf(req->load_path, sizeof req->load_path, "%s/load-XXXXXX", h->db->data_dir);
    req->load_fd = mkostemp(req->load_path, O_CLOEXEC);
    return req->load_fd >= 0 ? 0 : -1;
}

/* Is the received file a database SQLite can read? */
static int checkLoadedFile(const char *path, char *errmsg)
{
    unsigned char head[16];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, head, sizeof head) : -1;
    int rv = 0;
    if (fd >= 0) {
        close(fd);
    }
    if (got != (ssize_t)sizeof head || memcmp(head, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "the body is not a SQLite database file (it must start with \"SQLite "
                       "format 3\"); to load SQL text, send its statements to /db/execute");
        return CAIRN_EINVAL;
    }
    /* It becomes this node's database: its pages are judged by its checksums, if any. */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, PAGESUM_VFS) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK) {
        errorf(errmsg, "the body cannot be opened as a SQLite database: %s",
               db ? sqlite3_errmsg(db) : "out of memory");
        rv = CAIRN_EINVAL;
    } else if (sqlite3_step(st) != SQLITE_ROW ||
               strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        errorf(errmsg, "the uploaded database is damaged: quick_check says %s",
               sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0)
                                          : sqlite3_errmsg(db));
        rv = CAIRN_EINVAL;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

static enum MHD_Result postLoad(struct http_server *h, struct MHD_Connection *c,
                                struct request *req)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    char source[BACKUP_SOURCE_SIZE];
    struct backup_info info;
    struct backup_source src;
    struct backup_options opt;
    uint64_t index = 0;
    struct buf b;
    int rv;

    if (req->load_fd < 0) {
        return httpSendError(c, 500, "cannot create a file to receive the upload in the data "
                                     "directory");
    }
    if (req->load_errno != 0) {
        snprintf(errmsg, sizeof errmsg, "receiving the upload into %s: %s", req->load_path,
                 strerror(req->load_errno));
        return httpSendError(c, req->load_errno == ENOSPC ? 507 : 500, errmsg);
    }
    if (fsync(req->load_fd) != 0) {
        snprintf(errmsg, sizeof errmsg, "fsync %s: %s", req->load_path, strerror(errno));
        return httpSendError(c, errno == ENOSPC ? 507 : 500, errmsg);
    }
    if ((rv = checkLoadedFile(req->load_path, errmsg)) != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    /* Keep what was loaded as a full backup, then restore it through the log: every
     * node materialises the same pages, and the catalog remembers the load. */
    adminSourceName(h->db, source, sizeof source);
    memset(&src, 0, sizeof src);
    src.fd = req->load_fd;
    {
        struct node_info ni;
        nodeInfo(h->db->node, &ni);
        src.raft_term = ni.term; /* the catalog records the term, as for other backups */
    }
    src.source = source;
    /* Index 0 and no history: the file is the state of this cluster's log only at the
     * swap entry, whose index is not known until the entries that name this backup are
     * proposed. The applied index now (what was recorded before) is the state before
     * the load: a point-in-time restore took the file as a base there and replayed the
     * log onto it, giving the loaded rows for indexes before the swap (or refusing, the
     * file's own _cairn_meta disagreeing). A backup of index 0 without a history is no
     * base of any timeline (arcsegBaseFits; the archiver starts none on it); restores
     * across the load replay the swap entry, which restores this backup. */
    src.raft_index = 0;
    memset(&opt, 0, sizeof opt);
    opt.type = BACKUP_FULL;
    opt.repo = h->db->backup_dir;
    opt.codec = h->db->backup_codec;
    opt.level = h->db->backup_level;
    if ((rv = backupCreate(&src, &opt, &info, errmsg)) == 0) {
        snprintf(info.repository, sizeof info.repository, "%s", h->db->repos.r[0].name);
    }
    if (rv != 0 ||
        (rv = adminRestore(h->db, info.id, NULL, NULL, NULL, &info, &index, errmsg)) != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    bufInit(&b);
    bufPuts(&b, "{\"results\":[{}],\"loaded\":");
    backupInfoJson(&info, &b);
    bufPrintf(&b, ",\"raft_index\":%llu}\n", (unsigned long long)index);
    return httpSendBuf(c, 200, &b, false);
}

/* ---- routing ------------------------------------------------------------------------- */

enum MHD_Result httpAdmin(struct http_server *h, struct MHD_Connection *c, const char *url,
                          const char *method, struct request *req, bool *handled)
{
    bool get = strcmp(method, "GET") == 0;
    bool post = strcmp(method, "POST") == 0;
    static const char prefix[] = "/admin/backups/";
    *handled = true;
    if (strcmp(url, "/db/backup") == 0) {
        return get ? getDbBackup(h, c) : httpSendNotAllowed(c, method, url, "GET");
    }
    if (strcmp(url, "/db/load") == 0) {
        return post ? postLoad(h, c, req) : httpSendNotAllowed(c, method, url, "POST");
    }
    if (strcmp(url, "/admin/backup") == 0) {
        return post ? postBackup(h, c, req) : httpSendNotAllowed(c, method, url, "POST");
    }
    if (strcmp(url, "/admin/backups") == 0) {
        return get ? getBackups(h, c) : httpSendNotAllowed(c, method, url, "GET");
    }
    if (strcmp(url, "/admin/restore") == 0) {
        return post ? postRestore(h, c, req) : httpSendNotAllowed(c, method, url, "POST");
    }
    if (strcmp(url, "/admin/snapshot") == 0) {
        return post ? postSnapshot(h, c) : httpSendNotAllowed(c, method, url, "POST");
    }
    if (strcmp(url, "/admin/digest") == 0) {
        return post  ? postDigest(h, c, req)
               : get ? getDigest(h, c)
                     : httpSendNotAllowed(c, method, url, "GET, POST");
    }
    if (strcmp(url, "/admin/snapshots") == 0) {
        return get ? getSnapshots(h, c) : httpSendNotAllowed(c, method, url, "GET");
    }
    /* ---- --backup-config (housekeeping.h) ---- */
    if (strcmp(url, "/admin/backup-config") == 0) {
        struct buf b;
        if (!get) {
            return httpSendNotAllowed(c, method, url, "GET");
        }
        bufInit(&b);
        if (!housekeepingConfigJson(h->db, &b)) {
            bufFree(&b);
            return httpSendError(c, 404, "no backup configuration: cairnd was started without "
                                         "--backup-config");
        }
        if (!queryFlag(c, "pretty")) {
            bufPutc(&b, '\n');
        }
        return httpSendBuf(c, 200, &b, queryFlag(c, "pretty"));
    }
    /* ---- end --backup-config ---- */
    if (strncmp(url, prefix, sizeof prefix - 1) == 0 && url[sizeof prefix - 1] != '\0') {
        char id[PATH_MAX];
        const char *rest = url + sizeof prefix - 1;
        const char *slash = strchr(rest, '/');
        if (slash == NULL) {
            return get ? getBackup(h, c, rest) : httpSendNotAllowed(c, method, url, "GET");
        }
        if (strcmp(slash, "/verify") == 0 && (size_t)(slash - rest) < sizeof id) {
            memcpy(id, rest, (size_t)(slash - rest));
            id[slash - rest] = '\0';
            return post ? postVerify(h, c, req, id) : httpSendNotAllowed(c, method, url, "POST");
        }
    }
    *handled = false;
    return MHD_NO;
}
