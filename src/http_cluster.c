/* The cluster's HTTP endpoints (/nodes, /join, /remove, /cluster/identity, the .cbk
 * files peers fetch) and the routing of requests that another node must serve:
 * forwarded to it and answered transparently, or, with ?redirect, a 301 to it.
 * HTTP threads. */
#define _GNU_SOURCE
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "backup.h"
#include "cluster.h"
#include "db.h"
#include "http_int.h"
#include "repo.h"

/* Timeouts of a forwarded request: data requests are short; backups, restores and
 * loads of a large database are not. */
#define FORWARD_TIMEOUT_MS (120 * 1000)
#define FORWARD_ADMIN_TIMEOUT_MS (60 * 60 * 1000)
/* The most of a peer's answer held in memory while it is relayed; the rest goes to a
 * file (clusterHttpSpill): the leader sends an answer of any size in parts, and a
 * follower that held it whole took as much memory as the JSON (1.2 GB for a 60 kB
 * request under ?associative). */
#define FORWARD_HELD_MAX (16u << 20)

bool httpIsForwarded(struct MHD_Connection *c)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Cairn-Forwarded") != NULL;
}

/* ?node=ID: 0 when absent, -1 (with an answer queued in *ret) when malformed. */
int httpNodeParam(struct MHD_Connection *c, uint64_t *id, enum MHD_Result *ret)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "node");
    char *end;
    *id = 0;
    if (v == NULL) {
        return 0;
    }
    errno = 0;
    *id = strtoull(v, &end, 10);
    /* Digits only: strtoull also takes " 2", "+2" and "-2" (the last wrapped). */
    if (!isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 || *id == 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "?node must be a node id (a positive integer), got \"%.64s\"", v);
        *ret = httpSendError(c, 400, msg);
        return -1;
    }
    return 0;
}

struct qs {
    struct buf b;
    bool first;
};

/* With the lengths, so that a value holding a NUL byte (?q=SELECT%201%00...) reaches
 * the leader whole, to be refused there, not cut short and run. */
static enum MHD_Result appendArg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    struct qs *q = cls;
    char *k = curl_easy_escape(NULL, key, (int)key_size);
    (void)kind;
    bufPutc(&q->b, q->first ? '?' : '&');
    q->first = false;
    bufPuts(&q->b, k ? k : "");
    curl_free(k);
    if (value != NULL) {
        char *v = curl_easy_escape(NULL, value, (int)value_size);
        bufPutc(&q->b, '=');
        bufPuts(&q->b, v ? v : "");
        curl_free(v);
    }
    return MHD_YES;
}

/* base + url + the request's query string. */
static void targetUrl(struct MHD_Connection *c, const char *base, const char *url, struct buf *out)
{
    struct qs q;
    bufInit(&q.b);
    q.first = true;
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, appendArg, &q);
    bufPuts(out, base);
    bufPuts(out, url);
    if (q.b.len > 0) {
        bufPut(out, q.b.p, q.b.len);
    }
    bufPutc(out, '\0');
    bufFree(&q.b);
}

static bool inConfiguration(const struct node_info *ni, uint64_t id)
{
    for (unsigned i = 0; i < ni->n_servers; i++) {
        if (ni->servers[i].id == id) {
            return true;
        }
    }
    return false;
}

/* Answer with status and the whole file fd (taken over: closed here or once sent), a
 * peer's answer too large to hold in memory. */
static enum MHD_Result sendFile(struct MHD_Connection *c, unsigned status, const char *type,
                                int fd)
{
    struct stat st;
    struct MHD_Response *r;
    if (fstat(fd, &st) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot read the leader's answer back from its file: %s",
                 strerror(errno));
        close(fd);
        return httpSendError(c, 500, msg);
    }
    r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (r == NULL) {
        close(fd);
        return MHD_NO;
    }
    return httpQueue(c, status, type, r);
}

bool httpRoute(struct http_server *h, struct MHD_Connection *c, const char *url, const char *method,
               struct request *req, uint64_t target, bool redirect, enum MHD_Result *ret)
{
    struct cairn *db = h->db;
    int64_t deadline = clusterMonoMs() + CLUSTER_LEADER_WAIT_MS;
    bool admin = strncmp(url, "/db/", 4) != 0;
    char last[CAIRN_ERRMSG_SIZE] = "";

    if (httpIsForwarded(c)) {
        if (target == 0) {
            struct node_info ni;
            nodeInfo(db->node, &ni);
            if (ni.state != RAFT_LEADER) {
                /* Sent here as to the leader, which this node no longer is: the sender
                 * looks for the new one (421 never reaches a client). */
                *ret = httpSendError(c, 421, "this node is not the leader");
                return true;
            }
        }
        return false;
    }
    for (;;) {
        struct node_info ni;
        uint64_t id = target;
        char base[200];
        nodeInfo(db->node, &ni);
        if (id == 0) {
            id = ni.leader_id;
        }
        if (id == db->cfg.node_id) {
            return false;
        }
        if (target != 0 && !inConfiguration(&ni, target)) {
            char msg[160];
            snprintf(msg, sizeof msg, "?node=%llu: there is no node %llu in the cluster",
                     (unsigned long long)target, (unsigned long long)target);
            *ret = httpSendError(c, 404, msg);
            return true;
        }
        if (id != 0 && clusterApiUrl(db, id, base, sizeof base) == 0) {
            struct buf turl;
            struct buf body;
            long status = 0;
            bool connect_failed = false;
            char ctype[128];
            int spill_fd = -1;
            int rv;
            bufInit(&turl);
            targetUrl(c, base, url, &turl);
            if (redirect) {
                struct MHD_Response *r =
                    MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
                MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, turl.p);
                *ret = MHD_queue_response(c, 301, r);
                MHD_destroy_response(r);
                bufFree(&turl);
                return true;
            }
            bufInit(&body);
            rv = clusterHttpSpill(method, turl.p, req->body.p ? req->body.p : "", req->body.len,
                                  req->load_fd,
                                  admin ? FORWARD_ADMIN_TIMEOUT_MS : FORWARD_TIMEOUT_MS, &status,
                                  &body, FORWARD_HELD_MAX, &spill_fd, ctype, sizeof ctype,
                                  &connect_failed, true, last);
            bufFree(&turl);
            if (rv == 0 && spill_fd >= 0) {
                *ret = sendFile(c, (unsigned)status, ctype, spill_fd);
                return true;
            }
            if (rv == 0 && status != 421) {
                size_t len = 0;
                char *p = bufDetach(&body, &len);
                *ret = httpSend(c, (unsigned)status, ctype, p ? p : strdup(""), p ? len : 0);
                return true;
            }
            bufFree(&body);
            if (rv != 0 && !connect_failed) {
                /* The request may have reached the node: never send it twice, and never
                 * say that nothing was written when a write may have been (a read is
                 * simply refused). */
                char msg[CAIRN_ERRMSG_SIZE + 200];
                bool read = strcmp(url, "/db/query") == 0;
                snprintf(msg, sizeof msg, "forwarding to node %llu failed after the request "
                                          "was sent: %s%s",
                         (unsigned long long)id, last,
                         read ? "" : "; the outcome is unknown: it may or may not have been "
                                     "applied, check before retrying");
                *ret = httpSendError(c, read ? 503 : 504, msg);
                return true;
            }
            if (rv == 0) {
                snprintf(last, sizeof last, "node %llu is no longer the leader",
                         (unsigned long long)id);
            }
        } else if (id != 0) {
            snprintf(last, sizeof last, "node %llu's HTTP address is not known yet",
                     (unsigned long long)id);
        } else {
            snprintf(last, sizeof last, "the cluster has no leader (this node is %s)",
                     nodeStateName(ni.state));
        }
        if (clusterMonoMs() > deadline) {
            char msg[CAIRN_ERRMSG_SIZE + 64];
            snprintf(msg, sizeof msg, "%s after waiting %d ms", last, CLUSTER_LEADER_WAIT_MS);
            *ret = httpSendError(c, 503, msg);
            return true;
        }
        clusterPause(50);
    }
}

/* ---- endpoints ---------------------------------------------------------------------- */

static enum MHD_Result serveIdentity(struct http_server *h, struct MHD_Connection *c)
{
    struct buf b;
    bufInit(&b);
    clusterIdentityJson(h->db, &b);
    return httpSendBuf(c, 200, &b, false);
}

static int bodyJson(struct request *req, json_t **root, char *errmsg)
{
    json_error_t jerr;
    *root = json_loadb(req->body.p ? req->body.p : "", req->body.len, 0, &jerr);
    if (*root == NULL || !json_is_object(*root)) {
        errorf(errmsg, "request body must be a JSON object (%s)",
               *root ? "got another JSON value" : jerr.text);
        json_decref(*root);
        *root = NULL;
        return CAIRN_EINVAL;
    }
    return 0;
}

/* A node id given as 2 or "2" (digits only: not " 2" or "+2", which strtoull takes). */
static int idOf(json_t *v, uint64_t *id)
{
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *id = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        char *end;
        const char *s = json_string_value(v);
        errno = 0;
        *id = strtoull(s, &end, 10);
        if (isdigit((unsigned char)s[0]) && *end == '\0' && errno == 0 && *id > 0) {
            return 0;
        }
    }
    return -1;
}

static enum MHD_Result serveJoin(struct http_server *h, struct MHD_Connection *c,
                                 struct request *req)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    enum MHD_Result ret;
    json_t *root;
    uint64_t id;
    const char *raft;
    const char *api;
    json_t *voter;
    char url[200];
    struct sockaddr_in sa;
    int rv;

    if (httpRoute(h, c, "/join", "POST", req, 0, false, &ret)) {
        return ret;
    }
    if (bodyJson(req, &root, errmsg) != 0) {
        return httpSendError(c, 400, errmsg);
    }
    raft = json_string_value(json_object_get(root, "addr"));
    api = json_string_value(json_object_get(root, "api_addr"));
    voter = json_object_get(root, "voter");
    if (idOf(json_object_get(root, "id"), &id) != 0 || raft == NULL || raft[0] == '\0' ||
        api == NULL || api[0] == '\0' || (voter != NULL && !json_is_boolean(voter))) {
        json_decref(root);
        return httpSendError(c, 400,
                             "join needs {\"id\": positive integer, \"addr\": \"raft "
                             "HOST:PORT\", \"api_addr\": \"http://HOST:PORT\", "
                             "\"voter\": true|false}");
    }
    clusterUrl(api, url, sizeof url);
    /* Peers forward to it and fetch backups from it: an address that is no HOST:PORT
     * would be recorded for the whole cluster and fail only there. */
    if (strlen(api) >= sizeof url - 7 || strchr(url + 7, '/') != NULL) {
        snprintf(errmsg, CAIRN_ERRMSG_SIZE,
                 "api_addr \"%.100s\" must be http://HOST:PORT (at most %zu characters)", api,
                 sizeof url - 8);
        json_decref(root);
        return httpSendError(c, 400, errmsg);
    }
    if (addrParse(url + 7, "api_addr: HTTP", &sa, errmsg) == CAIRN_EINVAL) {
        json_decref(root);
        return httpSendError(c, 400, errmsg);
    }
    rv = clusterAdd(h->db, id, raft, url, voter == NULL || json_is_true(voter), errmsg);
    json_decref(root);
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    {
        struct buf b;
        bufInit(&b);
        bufPrintf(&b, "{\"id\":%llu,\"leader\":%llu}\n", (unsigned long long)id,
                  (unsigned long long)h->db->cfg.node_id);
        return httpSendBuf(c, 200, &b, false);
    }
}

static enum MHD_Result serveRemove(struct http_server *h, struct MHD_Connection *c,
                                   struct request *req)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    enum MHD_Result ret;
    json_t *root;
    uint64_t id;
    int rv;

    if (bodyJson(req, &root, errmsg) != 0) {
        return httpSendError(c, 400, errmsg);
    }
    rv = idOf(json_object_get(root, "id"), &id);
    json_decref(root);
    if (rv != 0) {
        return httpSendError(c, 400, "remove needs {\"id\": node id}");
    }
    {
        /* An id that no node knows is answered here, without a leader. */
        struct node_info ni;
        nodeInfo(h->db->node, &ni);
        if (!inConfiguration(&ni, id)) {
            snprintf(errmsg, sizeof errmsg, "node %llu is not in the cluster",
                     (unsigned long long)id);
            return httpSendError(c, 404, errmsg);
        }
    }
    if (httpRoute(h, c, "/remove", "DELETE", req, 0, false, &ret)) {
        return ret;
    }
    rv = clusterRemove(h->db, id, errmsg);
    if (rv != 0) {
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    return httpSend(c, 200, "application/json", strdup("{}\n"), 3);
}

static bool peerReachable(const char *base)
{
    char url[240];
    char msg[CAIRN_ERRMSG_SIZE];
    long status = 0;
    snprintf(url, sizeof url, "%s/health", base);
    return clusterHttp("GET", url, NULL, 0, -1, 1000, &status, NULL, NULL, 0, NULL, false, msg) ==
               0 &&
           status == 200;
}

static void nodeEntry(struct http_server *h, const struct node_info *ni,
                      const struct node_server *sv, struct buf *b)
{
    char api[200] = "";
    bool self = sv->id == h->db->cfg.node_id;
    bool known = clusterApiUrl(h->db, sv->id, api, sizeof api) == 0;
    bufPrintf(b, "{\"id\":\"%llu\",\"api_addr\":", (unsigned long long)sv->id);
    bufJsonString(b, api, strlen(api));
    bufPuts(b, ",\"addr\":");
    bufJsonString(b, sv->address, strlen(sv->address));
    bufPrintf(b, ",\"voter\":%s,\"role\":\"%s\",\"reachable\":%s,\"leader\":%s}",
              sv->role == RAFT_VOTER ? "true" : "false",
              sv->role == RAFT_VOTER     ? "voter"
              : sv->role == RAFT_STANDBY ? "standby"
                                         : "spare",
              self || (known && peerReachable(api)) ? "true" : "false",
              sv->id == ni->leader_id ? "true" : "false");
}

enum MHD_Result httpServeNodes(struct http_server *h, struct MHD_Connection *c)
{
    struct node_info ni;
    struct buf b;
    const char *ver = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "ver");
    bool v2 = ver != NULL && strcmp(ver, "2") == 0;
    struct node_server self;

    nodeInfo(h->db->node, &ni);
    if (ni.n_servers == 0) {
        /* Not in any configuration yet (a node waiting to join): itself alone. */
        memset(&self, 0, sizeof self);
        self.id = h->db->cfg.node_id;
        self.role = RAFT_SPARE;
        snprintf(self.address, sizeof self.address, "%s", ni.address);
        ni.servers[0] = self;
        ni.n_servers = 1;
    }
    bufInit(&b);
    bufPuts(&b, v2 ? "{\"nodes\":[" : "{");
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (i > 0) {
            bufPutc(&b, ',');
        }
        if (!v2) {
            bufPrintf(&b, "\"%llu\":", (unsigned long long)ni.servers[i].id);
        }
        nodeEntry(h, &ni, &ni.servers[i], &b);
    }
    bufPuts(&b, v2 ? "]}\n" : "}\n");
    return httpSendBuf(c, 200, &b, false);
}

/* A backup streamed from a repository that is not a directory (S3): read through the
 * repository object, 1 MiB at a time, as MHD asks. */
struct object_stream {
    struct repo *repo;
    struct repo_reader rd;
    bool open;
};

static ssize_t objectRead(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct object_stream *o = cls;
    size_t n;
    if (pos >= o->rd.size) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    n = o->rd.size - pos < max ? (size_t)(o->rd.size - pos) : max;
    return o->rd.io.read(o->rd.io.arg, pos, buf, n) == 0 ? (ssize_t)n
                                                          : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void objectFree(void *cls)
{
    struct object_stream *o = cls;
    if (o->open) {
        repoCloseRead(&o->rd);
    }
    repoClose(o->repo);
    free(o);
}

static enum MHD_Result serveObject(struct MHD_Connection *c, const char *dir, const char *id)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    char name[BACKUP_ID_SIZE + 8];
    struct object_stream *o = calloc(1, sizeof *o);
    struct MHD_Response *r;
    enum MHD_Result ret;
    int rv;
    if (o == NULL) {
        return httpSendError(c, 500, "out of memory");
    }
    snprintf(name, sizeof name, "%s.cbk", id);
    if ((rv = repoOpen(dir, &o->repo, errmsg)) != 0 ||
        (rv = repoOpenRead(o->repo, name, &o->rd, errmsg)) != 0) {
        objectFree(o);
        return httpSendError(c, httpStatusFor(rv), errmsg);
    }
    o->open = true;
    r = MHD_create_response_from_callback(o->rd.size, 1u << 20, objectRead, o, objectFree);
    if (r == NULL) {
        objectFree(o);
        return httpSendError(c, 500, "out of memory");
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* GET /admin/snapshots/ID/file and /admin/backups/ID/file: a .cbk file as it is on disk,
 * for a peer to fetch (the reader verifies it). */
static enum MHD_Result serveFile(struct http_server *h, struct MHD_Connection *c, const char *dir,
                                 const char *id)
{
    struct backup_info info;
    struct MHD_Response *r;
    struct stat st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    enum MHD_Result ret;
    int fd;

    if (strchr(id, '/') != NULL || id[0] == '.' || repoFind(dir, id, &info, errmsg) != 0) {
        snprintf(errmsg, sizeof errmsg, "no backup %.*s in %s", 64, id, dir);
        return httpSendError(c, 404, errmsg);
    }
    if (strstr(dir, "://") != NULL) {
        return serveObject(c, dir, id);
    }
    fd = open(info.path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(errmsg, sizeof errmsg, "cannot open %s: %s", info.path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return httpSendError(c, 500, errmsg);
    }
    r = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* MHD closes fd */
    if (r == NULL) {
        close(fd);
        return httpSendError(c, 500, "out of memory");
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result httpCluster(struct http_server *h, struct MHD_Connection *c, const char *url,
                            const char *method, struct request *req, bool *handled)
{
    static const char snaps[] = "/admin/snapshots/";
    static const char backups[] = "/admin/backups/";
    bool get = strcmp(method, "GET") == 0;
    size_t n = strlen(url);
    *handled = true;
    if (strcmp(url, "/cluster/identity") == 0) {
        return get ? serveIdentity(h, c) : httpSendNotAllowed(c, method, url, "GET");
    }
    if (strcmp(url, "/join") == 0) {
        return strcmp(method, "POST") == 0 ? serveJoin(h, c, req)
                                           : httpSendNotAllowed(c, method, url, "POST");
    }
    if (strcmp(url, "/remove") == 0) {
        return strcmp(method, "DELETE") == 0 ? serveRemove(h, c, req)
                                             : httpSendNotAllowed(c, method, url, "DELETE");
    }
    if (n > 5 && strcmp(url + n - 5, "/file") == 0) {
        char id[BACKUP_ID_SIZE + 8];
        const char *dir = NULL;
        const char *rest = NULL;
        if (strncmp(url, snaps, sizeof snaps - 1) == 0) {
            dir = h->db->snap_dir;
            rest = url + sizeof snaps - 1;
        } else if (strncmp(url, backups, sizeof backups - 1) == 0) {
            dir = h->db->backup_dir;
            rest = url + sizeof backups - 1;
        }
        if (dir != NULL && (size_t)(url + n - 5 - rest) < sizeof id) {
            memcpy(id, rest, (size_t)(url + n - 5 - rest));
            id[url + n - 5 - rest] = '\0';
            if (dir == h->db->backup_dir && strchr(id, '/') == NULL) {
                /* From whichever of the node's repositories holds it. */
                struct backup_info info;
                char msg[CAIRN_ERRMSG_SIZE];
                unsigned which;
                if (reposetFind(&h->db->repos, id, &which, &info, msg) == 0) {
                    dir = h->db->repos.r[which].url;
                }
            }
            return get ? serveFile(h, c, dir, id) : httpSendNotAllowed(c, method, url, "GET");
        }
    }
    *handled = false;
    return MHD_NO;
}
