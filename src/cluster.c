/* Clusters: discovery, joining, the node directory, fetching files from peers (see
 * cluster.h). HTTP to peers goes through libcurl, one easy handle per request. */
#define _GNU_SOURCE
#include "cluster.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <raft.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "backup.h"
#include "db.h"
#include "error.h"
#include "pagesum.h"
#include "repo.h"
#include "store.h"
#include "lib.h"

/* How long a node started with --join or --bootstrap-expect keeps asking its peers. */
#define DISCOVERY_TIMEOUT_MS (300 * 1000)
#define JOIN_TIMEOUT_MS (120 * 1000)
#define POLL_MS 200
/* A file fetched from a peer (a snapshot or backup of any size). */
#define FETCH_TIMEOUT_MS (30 * 60 * 1000)

static pthread_once_t curlOnce = PTHREAD_ONCE_INIT;
/* One easy handle per thread, kept between requests: its connection to a peer stays
 * open (keep-alive), which is what makes forwarding cheap. */
static pthread_key_t curlKey;

static void curlFree(void *h)
{
    curl_easy_cleanup(h);
}

static void curlInit(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_key_create(&curlKey, curlFree);
}

/* This thread's handle, reset to no options (the connection cache stays). */
static CURL *curlHandle(void)
{
    CURL *h;
    pthread_once(&curlOnce, curlInit);
    h = pthread_getspecific(curlKey);
    if (h == NULL) {
        h = curl_easy_init();
        if (h != NULL && pthread_setspecific(curlKey, h) != 0) {
            curl_easy_cleanup(h);
            h = NULL;
        }
    } else {
        curl_easy_reset(h);
    }
    return h;
}

int64_t clusterMonoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clusterPause(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* pacing between attempts to reach a peer or a leader */
}

/* Has the embedding program asked cairn_open to give up (cairn_config.stop)? */
static bool stopAsked(struct cairn *db)
{
    return db->cfg.stop != NULL && *db->cfg.stop != 0;
}

void clusterUrl(const char *addr, char *out, size_t n)
{
    size_t len;
    if (strncmp(addr, "http://", 7) == 0) {
        snprintf(out, n, "%s", addr);
    } else {
        snprintf(out, n, "http://%s", addr);
    }
    len = strlen(out);
    while (len > 7 && out[len - 1] == '/') {
        out[--len] = '\0';
    }
}

/* ---- HTTP to peers ------------------------------------------------------------------ */

/* Where an answer's body goes: b (NULL: dropped), then past spill_at bytes (0: never)
 * the file fd. */
struct collect {
    struct buf *b;
    size_t spill_at;
    int fd;
    int err; /* errno of a failed spill file */
};

/* An unlinked file in $TMPDIR (else /tmp) for a body too large to hold: -1 with errno. */
static int spillOpen(void)
{
    const char *dir = getenv("TMPDIR");
    char path[PATH_MAX];
    int fd;
    if (dir == NULL || dir[0] == '\0') {
        dir = "/tmp";
    }
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) {
        return fd;
    }
    /* A file system without O_TMPFILE: a named file, unlinked at once. */
    snprintf(path, sizeof path, "%s/cairn-answer-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) {
        unlink(path);
    }
    return fd;
}

static size_t collectBody(char *p, size_t size, size_t nmemb, void *arg)
{
    struct collect *c = arg;
    size_t n = size * nmemb;
    if (c->b == NULL) {
        return n;
    }
    if (c->fd < 0 && c->spill_at != 0 && c->b->len + n > c->spill_at) {
        if ((c->fd = spillOpen()) < 0 ||
            (c->err = libWriteFull(c->fd, c->b->p, c->b->len)) != 0) {
            c->err = c->err ? c->err : errno;
            return 0;
        }
        bufFree(c->b);
    }
    if (c->fd >= 0) {
        return (c->err = libWriteFull(c->fd, p, n)) == 0 ? n : 0;
    }
    bufPut(c->b, p, n);
    return c->b->oom ? 0 : n;
}

static size_t writeFd(char *p, size_t size, size_t nmemb, void *arg)
{
    int fd = *(int *)arg;
    size_t left = size * nmemb;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 0;
        }
        p += w;
        left -= (size_t)w;
    }
    return size * nmemb;
}

static size_t readFd(char *p, size_t size, size_t nmemb, void *arg)
{
    int fd = *(int *)arg;
    ssize_t r;
    do {
        r = read(fd, p, size * nmemb);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

static int perform(CURL *h, const char *method, const char *url, long timeout_ms, long *status,
                   bool *connect_failed, char *errmsg)
{
    char cerr[CURL_ERROR_SIZE] = "";
    CURLcode rc;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    rc = curl_easy_perform(h);
    if (connect_failed != NULL) {
        double connect_time = 0;
        curl_easy_getinfo(h, CURLINFO_CONNECT_TIME, &connect_time);
        /* Not connected: the peer never saw the request, so it may go elsewhere. */
        *connect_failed = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                          (rc == CURLE_OPERATION_TIMEDOUT && connect_time == 0);
    }
    if (rc != CURLE_OK) {
        errorf(errmsg, "%s %s: %s", method, url, cerr[0] ? cerr : curl_easy_strerror(rc));
        return CAIRN_EIO;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

int clusterHttp(const char *method, const char *url, const char *body, size_t len, int body_fd,
                long timeout_ms, long *status, struct buf *out, char *content_type, size_t ct_size,
                bool *connect_failed, bool forwarded, char *errmsg)
{
    return clusterHttpSpill(method, url, body, len, body_fd, timeout_ms, status, out, 0, NULL,
                            content_type, ct_size, connect_failed, forwarded, errmsg);
}

int clusterHttpSpill(const char *method, const char *url, const char *body, size_t len,
                     int body_fd, long timeout_ms, long *status, struct buf *out, size_t spill_at,
                     int *spill_fd, char *content_type, size_t ct_size, bool *connect_failed,
                     bool forwarded, char *errmsg)
{
    struct curl_slist *hdrs = NULL;
    struct collect col = {out, spill_fd != NULL ? spill_at : 0, -1, 0};
    CURL *h;
    int rv;

    if (spill_fd != NULL) {
        *spill_fd = -1;
    }
    *status = 0;
    if (connect_failed != NULL) {
        *connect_failed = false;
    }
    h = curlHandle();
    if (h == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    /* A request a node forwards is served where it arrives, never forwarded again. */
    if (forwarded) {
        hdrs = curl_slist_append(hdrs, "X-Cairn-Forwarded: 1");
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (body_fd >= 0) {
        struct stat st;
        if (fstat(body_fd, &st) == 0) {
            lseek(body_fd, 0, SEEK_SET);
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, readFd);
            curl_easy_setopt(h, CURLOPT_READDATA, &body_fd);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
        }
    } else if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collectBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &col);
    rv = perform(h, method, url, timeout_ms, status, connect_failed, errmsg);
    if (col.err != 0) {
        errorf(errmsg, "%s %s: cannot keep the answer in a file in %s: %s", method, url,
               getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp",
               strerror(col.err));
        rv = CAIRN_EIO;
    }
    if (col.fd >= 0) {
        if (rv == 0 && lseek(col.fd, 0, SEEK_SET) != 0) {
            errorf(errmsg, "%s %s: cannot read back the answer's file: %s", method, url,
                   strerror(errno));
            rv = CAIRN_EIO;
        }
        if (rv == 0) {
            *spill_fd = col.fd;
        } else {
            close(col.fd);
        }
    }
    if (rv == 0 && content_type != NULL) {
        char *ct = NULL;
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(content_type, ct_size, "%s", ct ? ct : "application/json");
    }
    /* The handle (and its connection) stays with this thread; the headers and the body
     * pointers it was given do not outlive this call. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    return rv;
}

/* GET url into path (created; removed again on failure). */
int clusterDownload(const char *url, const char *path, char *errmsg)
{
    CURL *h;
    long status = 0;
    int fd;
    int rv;

    pthread_once(&curlOnce, curlInit);
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        errorf(errmsg, "cannot create %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    /* Held while the file is written, as a repository's writers hold theirs: a sweep of
     * temporary files (a start after a kill, repoSweepTemp) removes a dead download's and
     * leaves a live one's. Truncated only once held: never under a live download. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || ftruncate(fd, 0) != 0) {
        int err = errno == EWOULDBLOCK ? EBUSY : errno;
        close(fd);
        errorf(errmsg, "cannot write %s: %s", path,
               err == EBUSY ? "another download of it is under way" : strerror(err));
        return errorFromErrno(err);
    }
    h = curl_easy_init();
    if (h == NULL) {
        close(fd);
        unlink(path);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, writeFd);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &fd);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    rv = perform(h, "GET", url, FETCH_TIMEOUT_MS, &status, NULL, errmsg);
    curl_easy_cleanup(h);
    if (rv == 0 && fsync(fd) != 0) {
        errorf(errmsg, "cannot write %s: %s", path, strerror(errno));
        rv = errorFromErrno(errno);
    }
    close(fd);
    if (rv != 0) {
        unlink(path);
    }
    return rv;
}

/* ---- the node directory ------------------------------------------------------------- */

int clusterApiUrl(struct cairn *db, uint64_t id, char *out, size_t n)
{
    char key[64];
    char value[160];
    char errmsg[CAIRN_ERRMSG_SIZE];
    if (id == db->cfg.node_id && db->http_addr[0] != '\0') {
        clusterUrl(db->http_addr, out, n);
        return 0;
    }
    snprintf(key, sizeof key, "node:%llu:api", (unsigned long long)id);
    if (storeMetaGet(db->store, key, value, sizeof value, errmsg) != 0 || value[0] == '\0') {
        return CAIRN_ENOTFOUND;
    }
    clusterUrl(value, out, n);
    return 0;
}

/* Write (value != NULL) or delete node id's entry `what` of the directory
 * ("node:ID:WHAT") through the log. */
static int recordMeta(struct cairn *db, uint64_t id, const char *what, const char *api,
                      char *errmsg)
{
    struct batch b;
    struct cairn_result *res = NULL;
    struct stmt st;
    struct param p[2];
    char key[64];
    int rv;

    snprintf(key, sizeof key, "node:%llu:%s", (unsigned long long)id, what);
    memset(&b, 0, sizeof b);
    memset(&st, 0, sizeof st);
    memset(p, 0, sizeof p);
    p[0].type = CAIRN_TEXT;
    p[0].s = key;
    p[0].n = strlen(key);
    if (api != NULL) {
        st.sql = "INSERT OR REPLACE INTO _cairn_meta(key, value) VALUES(?1, ?2)";
        p[1].type = CAIRN_TEXT;
        p[1].s = api;
        p[1].n = strlen(api);
        st.nparams = 2;
    } else {
        st.sql = "DELETE FROM _cairn_meta WHERE key=?1 OR key LIKE ?1 || ':%'";
        snprintf(key, sizeof key, "node:%llu", (unsigned long long)id);
        p[0].n = strlen(key);
        st.nparams = 1;
    }
    st.sql_len = strlen(st.sql);
    st.params = p;
    b.kind = BATCH_EXECUTE;
    b.flags = BATCH_META;
    b.stmts = &st;
    b.n = 1;
    rv = dbPropose(db, &b, &res, errmsg);
    if (rv == 0 && res != NULL && res->n > 0 && res->stmts[0].error != NULL) {
        errorf(errmsg, "recording node %llu's %s: %s", (unsigned long long)id, what,
               res->stmts[0].error);
        rv = CAIRN_EIO;
    }
    cairn_result_free(res);
    return rv;
}

/* ---- forming a cluster -------------------------------------------------------------- */

static bool raftStateExists(struct cairn *db)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/metadata1", db->raft_dir);
    if (access(path, F_OK) == 0) {
        return true;
    }
    snprintf(path, sizeof path, "%s/metadata2", db->raft_dir);
    return access(path, F_OK) == 0;
}

static int serverCmp(const void *a, const void *b)
{
    const struct node_server *x = a;
    const struct node_server *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Read a "bootstrap" or "servers" array of {"id":..,"addr":..}. */
static unsigned readServers(json_t *arr, struct node_server *out, unsigned max)
{
    unsigned n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        json_t *id = json_object_get(v, "id");
        json_t *addr = json_object_get(v, "addr");
        if (n < max && json_is_integer(id) && json_is_string(addr)) {
            out[n].id = (uint64_t)json_integer_value(id);
            out[n].role = RAFT_VOTER;
            snprintf(out[n].address, sizeof out[n].address, "%s", json_string_value(addr));
            n++;
        }
    }
    return n;
}

/* GET base/cluster/identity: its JSON object, or NULL (no answer, not 200, not JSON). */
static json_t *getIdentity(const char *base)
{
    char url[200], msg[CAIRN_ERRMSG_SIZE];
    struct buf body;
    long status = 0;
    json_t *root;
    snprintf(url, sizeof url, "%s/cluster/identity", base);
    bufInit(&body);
    if (clusterHttp("GET", url, NULL, 0, -1, 2000, &status, &body, NULL, 0, NULL, false, msg) !=
            0 ||
        status != 200) {
        bufFree(&body);
        return NULL;
    }
    root = json_loadb(body.p ? body.p : "", body.len, 0, NULL);
    bufFree(&body);
    return root;
}

/* The 16 bytes a JSON string of 32 hex digits holds (false: none, or not that). */
static bool jsonId(json_t *v, unsigned char out[NODE_CLUSTER_ID_SIZE])
{
    return json_is_string(v) && json_string_length(v) == 2 * NODE_CLUSTER_ID_SIZE &&
           libHexDecode(json_string_value(v), out, NODE_CLUSTER_ID_SIZE) == 0 &&
           !libIsZero(out, NODE_CLUSTER_ID_SIZE);
}

/* clusterPrepare's first half: the configuration. *agreed is set when the nodes that
 * form a cluster together agreed on its id (a peer's that bootstrapped already, or the
 * nonce of the lowest node id among those found). */
static int formConfiguration(struct cairn *db, enum node_boot *boot, struct node_server *servers,
                             unsigned *n_servers, unsigned char agreed[NODE_CLUSTER_ID_SIZE],
                             bool *has_agreed, char *errmsg)
{
    int64_t deadline;
    int64_t next_log = 0;

    *n_servers = 0;
    if (db->n_join == 0) {
        *boot = NODE_BOOT_SELF;
        return 0;
    }
    *boot = NODE_BOOT_NONE;
    if (db->bootstrap_expect == 0 || raftStateExists(db)) {
        return 0; /* join (or rejoin from what is on disk) */
    }
    deadline = clusterMonoMs() + DISCOVERY_TIMEOUT_MS;
    for (;;) {
        struct node_server found[NODE_MAX_SERVERS];
        unsigned char nonces[NODE_MAX_SERVERS][NODE_CLUSTER_ID_SIZE];
        bool has_nonce[NODE_MAX_SERVERS];
        unsigned n = 0;
        memcpy(nonces[n], db->nonce, NODE_CLUSTER_ID_SIZE);
        has_nonce[n] = true;
        found[n].id = db->cfg.node_id;
        found[n].role = RAFT_VOTER;
        snprintf(found[n].address, sizeof found[n].address, "%s", db->cfg.raft_addr);
        n++;
        for (unsigned j = 0; j < db->n_join; j++) {
            json_t *root = getIdentity(db->join[j]);
            json_t *id;
            json_t *addr;
            if (root == NULL) {
                continue;
            }
            id = json_object_get(root, "id");
            addr = json_object_get(root, "raft_addr");
            if (!json_is_integer(id) || !json_is_string(addr)) {
                json_decref(root);
                continue;
            }
            {
                /* A peer that has bootstrapped already: use its list if it names this
                 * node, else the cluster exists and this node joins it. */
                struct node_server list[NODE_MAX_SERVERS];
                unsigned ln =
                    readServers(json_object_get(root, "bootstrap"), list, NODE_MAX_SERVERS);
                bool running = json_is_true(json_object_get(root, "running"));
                for (unsigned k = 0; k < ln; k++) {
                    if (list[k].id == db->cfg.node_id) {
                        memcpy(servers, list, ln * sizeof *list);
                        *n_servers = ln;
                        *boot = NODE_BOOT_SERVERS;
                        *has_agreed = jsonId(json_object_get(root, "cluster_id"), agreed);
                        json_decref(root);
                        return 0;
                    }
                }
                if (running) {
                    dbLog(db, "%s is part of a running cluster: joining it", db->join[j]);
                    json_decref(root);
                    return 0;
                }
            }
            if ((uint64_t)json_integer_value(id) == db->cfg.node_id) {
                if (strcmp(json_string_value(addr), db->cfg.raft_addr) != 0) {
                    errorf(errmsg,
                           "%s is node %llu too (raft address %s): every node needs its "
                           "own --node-id",
                           db->join[j], (unsigned long long)db->cfg.node_id,
                           json_string_value(addr));
                    json_decref(root);
                    return CAIRN_EEXIST;
                }
                json_decref(root);
                continue; /* this node itself, listed in --join */
            }
            {
                bool dup = false;
                for (unsigned k = 0; k < n; k++) {
                    if (found[k].id == (uint64_t)json_integer_value(id)) {
                        dup = true;
                        if (strcmp(found[k].address, json_string_value(addr)) != 0) {
                            errorf(errmsg, "two nodes claim id %llu (raft addresses %s and %s)",
                                   (unsigned long long)found[k].id, found[k].address,
                                   json_string_value(addr));
                            json_decref(root);
                            return CAIRN_EEXIST;
                        }
                    }
                }
                if (!dup && n < NODE_MAX_SERVERS) {
                    has_nonce[n] = jsonId(json_object_get(root, "nonce"), nonces[n]);
                    found[n].id = (uint64_t)json_integer_value(id);
                    found[n].role = RAFT_VOTER;
                    snprintf(found[n].address, sizeof found[n].address, "%s",
                             json_string_value(addr));
                    n++;
                }
            }
            json_decref(root);
        }
        if (n >= db->bootstrap_expect) {
            unsigned low = 0;
            for (unsigned k = 1; k < n; k++) {
                if (found[k].id < found[low].id) {
                    low = k;
                }
            }
            /* Every node that forms this configuration takes the same id: the lowest
             * node id's nonce (none if that node is of a build before ids). */
            *has_agreed = has_nonce[low];
            memcpy(agreed, nonces[low], NODE_CLUSTER_ID_SIZE);
            qsort(found, n, sizeof *found, serverCmp);
            memcpy(servers, found, n * sizeof *found);
            *n_servers = n;
            *boot = NODE_BOOT_SERVERS;
            dbLog(db, "found %u nodes: bootstrapping the cluster", n);
            return 0;
        }
        if (clusterMonoMs() >= next_log) {
            dbLog(db, "waiting for %u nodes to start (%u found so far)", db->bootstrap_expect, n);
            next_log = clusterMonoMs() + 5000;
        }
        if (clusterMonoMs() > deadline) {
            errorf(errmsg, "found only %u of the %u nodes --bootstrap-expect asks for within %d s",
                   n, db->bootstrap_expect, DISCOVERY_TIMEOUT_MS / 1000);
            return CAIRN_ETIMEOUT;
        }
        if (stopAsked(db)) {
            errorf(errmsg, "stopped while waiting for the other nodes");
            return CAIRN_ESHUTDOWN;
        }
        clusterPause(POLL_MS);
    }
}

#define CLUSTER_ID_FILE "cluster-id"

/* DATA/cluster-id: 32 hex digits and a newline (libReadIdFile). *kept: whether there
 * is one. */
static int readClusterId(struct cairn *db, unsigned char id[NODE_CLUSTER_ID_SIZE], bool *kept,
                         char *errmsg)
{
    char path[PATH_MAX];
    int rv;
    snprintf(path, sizeof path, "%s/%s", db->data_dir, CLUSTER_ID_FILE);
    rv = libReadIdFile(path, id, NODE_CLUSTER_ID_SIZE, kept, errmsg);
    if (rv == CAIRN_ECORRUPT) {
        errorf(errmsg, "%s is damaged: it must hold the cluster's id, 32 hex digits and a "
                       "newline (GET /cluster/identity on another node of the cluster says "
                       "it)", path);
    }
    return rv;
}

static int writeClusterId(struct cairn *db, const unsigned char id[NODE_CLUSTER_ID_SIZE],
                          char *errmsg)
{
    char path[PATH_MAX], text[2 * NODE_CLUSTER_ID_SIZE + 2];
    snprintf(path, sizeof path, "%s/%s", db->data_dir, CLUSTER_ID_FILE);
    libHexEncode(id, NODE_CLUSTER_ID_SIZE, text);
    text[2 * NODE_CLUSTER_ID_SIZE] = '\n';
    text[2 * NODE_CLUSTER_ID_SIZE + 1] = '\0';
    return libWriteFileAtomic(path, text, sizeof text - 1, 0, errmsg);
}

/* The id of the cluster the --join peers belong to, from the first that runs (zeros:
 * a cluster without one). Waits for one as joining does. */
static int learnClusterId(struct cairn *db, unsigned char id[NODE_CLUSTER_ID_SIZE], char *errmsg)
{
    int64_t deadline = clusterMonoMs() + JOIN_TIMEOUT_MS;
    int64_t next_log = clusterMonoMs() + 5000;
    char own[200];
    clusterUrl(db->http_addr, own, sizeof own);
    for (;;) {
        for (unsigned j = 0; j < db->n_join; j++) {
            json_t *root;
            if (strcmp(db->join[j], own) == 0 || (root = getIdentity(db->join[j])) == NULL) {
                continue;
            }
            if (json_is_true(json_object_get(root, "running"))) {
                if (!jsonId(json_object_get(root, "cluster_id"), id)) {
                    memset(id, 0, NODE_CLUSTER_ID_SIZE); /* a build or cluster before ids */
                }
                json_decref(root);
                return 0;
            }
            json_decref(root);
        }
        if (clusterMonoMs() > deadline) {
            errorf(errmsg, "no node of --join answered GET /cluster/identity as a running "
                           "member within %d s: cannot learn the cluster's id to join it",
                   JOIN_TIMEOUT_MS / 1000);
            return CAIRN_ETIMEOUT;
        }
        if (stopAsked(db)) {
            errorf(errmsg, "stopped while asking the cluster for its id");
            return CAIRN_ESHUTDOWN;
        }
        if (clusterMonoMs() >= next_log) {
            dbLog(db, "waiting for a running node of --join to learn the cluster's id");
            next_log = clusterMonoMs() + 5000;
        }
        clusterPause(POLL_MS);
    }
}

static void publishClusterId(struct cairn *db, const unsigned char id[NODE_CLUSTER_ID_SIZE])
{
    memcpy(db->cluster_id, id, NODE_CLUSTER_ID_SIZE);
    atomic_store(&db->cluster_id_known, true);
}

int clusterPrepare(struct cairn *db, enum node_boot *boot, struct node_server *servers,
                   unsigned *n_servers, char *errmsg)
{
    unsigned char id[NODE_CLUSTER_ID_SIZE] = {0};
    unsigned char agreed[NODE_CLUSTER_ID_SIZE] = {0};
    bool has_agreed = false;
    bool joining;
    bool kept;
    int rv = formConfiguration(db, boot, servers, n_servers, agreed, &has_agreed, errmsg);
    if (rv != 0 || (rv = readClusterId(db, id, &kept, errmsg)) != 0) {
        return rv;
    }
    joining = *boot == NODE_BOOT_NONE && db->n_join > 0 && !raftStateExists(db);
    if (joining) {
        unsigned char theirs[NODE_CLUSTER_ID_SIZE];
        if ((rv = learnClusterId(db, theirs, errmsg)) != 0) {
            return rv;
        }
        if (kept && !libIsZero(theirs, sizeof theirs) && memcmp(theirs, id, sizeof id) != 0) {
            char a[2 * NODE_CLUSTER_ID_SIZE + 1], b[2 * NODE_CLUSTER_ID_SIZE + 1];
            libHexEncode(id, sizeof id, a);
            libHexEncode(theirs, sizeof theirs, b);
            errorf(errmsg, "data directory %s belongs to cluster %s, and the nodes --join "
                           "names are of cluster %s: start this node with an empty data "
                           "directory to join that cluster",
                   db->data_dir, a, b);
            return CAIRN_EINVAL;
        }
        if (!kept) {
            memcpy(id, theirs, sizeof id);
        }
    } else if (!kept && !raftStateExists(db)) {
        if (*boot == NODE_BOOT_SERVERS) {
            memcpy(id, agreed, sizeof id);
            if (!has_agreed) {
                memset(id, 0, sizeof id);
            }
        } else if (*boot == NODE_BOOT_SELF) {
            libRandomId(id, sizeof id);
        }
    }
    /* A directory with a Raft log and no id ran before ids: it keeps none. */
    if (!kept && !libIsZero(id, sizeof id) && (rv = writeClusterId(db, id, errmsg)) != 0) {
        return rv;
    }
    publishClusterId(db, id);
    return 0;
}

static bool isMember(struct cairn *db)
{
    struct node_info ni;
    nodeInfo(db->node, &ni);
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (ni.servers[i].id == db->cfg.node_id) {
            return true;
        }
    }
    return false;
}

static void joinBody(struct cairn *db, struct buf *b)
{
    char api[200];
    clusterUrl(db->http_addr, api, sizeof api);
    bufPrintf(b, "{\"id\":%llu,\"addr\":", (unsigned long long)db->cfg.node_id);
    bufJsonString(b, db->cfg.raft_addr, strlen(db->cfg.raft_addr));
    bufPuts(b, ",\"api_addr\":");
    bufJsonString(b, api, strlen(api));
    bufPuts(b, ",\"voter\":true}");
}

/* The "error" of a JSON answer, or the body itself. */
static void answerError(const struct buf *body, char *out, size_t n)
{
    json_t *root = json_loadb(body->p ? body->p : "", body->len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    if (json_is_string(e)) {
        snprintf(out, n, "%s", json_string_value(e));
    } else {
        snprintf(out, n, "%.*s", (int)(body->len > 300 ? 300 : body->len), body->p ? body->p : "");
    }
    json_decref(root);
}

bool clusterIsVoter(struct cairn *db)
{
    struct node_info ni;
    nodeInfo(db->node, &ni);
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (ni.servers[i].id == db->cfg.node_id && ni.servers[i].role == RAFT_VOTER) {
            return true;
        }
    }
    return false;
}

/* Until this node is a voter (the leader promotes it once it has caught up), or the
 * deadline: a node that reports ready after a join counts towards the quorum. */
static void waitVoter(struct cairn *db, int64_t deadline)
{
    while (clusterMonoMs() < deadline && !stopAsked(db)) {
        if (clusterIsVoter(db)) {
            dbLog(db, "caught up: a voter of the cluster now");
            return;
        }
        clusterPause(50);
    }
    dbLog(db, "not promoted to voter yet: still catching up (the leader promotes this "
              "node once it has)");
}

int clusterJoin(struct cairn *db, char *errmsg)
{
    int64_t deadline = clusterMonoMs() + JOIN_TIMEOUT_MS;
    char last[CAIRN_ERRMSG_SIZE] = "no peer answered";
    struct buf req;

    if (db->n_join == 0 || isMember(db)) {
        return 0;
    }
    if (db->cfg.raft_addr == NULL || db->http_addr[0] == '\0') {
        errorf(errmsg, "joining a cluster needs a raft address and an HTTP address");
        return CAIRN_EINVAL;
    }
    bufInit(&req);
    joinBody(db, &req);
    while (!isMember(db)) {
        char own[200];
        clusterUrl(db->http_addr, own, sizeof own);
        for (unsigned j = 0; j < db->n_join; j++) {
            char url[200];
            if (strcmp(db->join[j], own) == 0) {
                continue; /* this node itself, listed with the others */
            }
            struct buf body;
            long status = 0;
            char msg[CAIRN_ERRMSG_SIZE];
            snprintf(url, sizeof url, "%s/join", db->join[j]);
            bufInit(&body);
            if (clusterHttp("POST", url, req.p, req.len, -1, 60000, &status, &body, NULL, 0, NULL,
                            false, msg) != 0) {
                snprintf(last, sizeof last, "%s", msg);
                bufFree(&body);
                continue;
            }
            if (status == 200) {
                bufFree(&body);
                bufFree(&req);
                dbLog(db, "joined the cluster through %s; catching up", db->join[j]);
                waitVoter(db, deadline);
                return 0;
            }
            answerError(&body, msg, sizeof msg);
            bufFree(&body);
            if (status == 400 || status == 404 || status == 409) {
                errorf(errmsg, "%s refused to add node %llu: %s", db->join[j],
                       (unsigned long long)db->cfg.node_id, msg);
                bufFree(&req);
                return status == 409 ? CAIRN_EEXIST : CAIRN_EINVAL;
            }
            snprintf(last, sizeof last, "%s answered %ld: %s", db->join[j], status, msg);
        }
        if (clusterMonoMs() > deadline) {
            errorf(errmsg, "could not join the cluster within %d s: %s", JOIN_TIMEOUT_MS / 1000,
                   last);
            bufFree(&req);
            return CAIRN_ETIMEOUT;
        }
        if (stopAsked(db)) {
            errorf(errmsg, "stopped while joining the cluster");
            bufFree(&req);
            return CAIRN_ESHUTDOWN;
        }
        clusterPause(500);
    }
    bufFree(&req);
    return 0;
}

/* Can this node open a TCP connection to addr ("host:port") within timeout_ms? */
static int reachable(const char *addr, int timeout_ms, char *errmsg)
{
    struct sockaddr_in sa;
    struct pollfd pfd;
    int fd;
    int err = 0;
    socklen_t len = sizeof err;
    int rv = addrParse(addr, "raft", &sa, errmsg);

    if (rv == CAIRN_ENOTFOUND) {
        return 0; /* a host name: libraft's transport resolves it */
    }
    if (rv != 0) {
        return rv;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        err = errno;
    } else {
        pfd.fd = fd;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, timeout_ms) != 1) {
            err = ETIMEDOUT;
        } else {
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
    }
    close(fd);
    if (err != 0) {
        errorf(errmsg, "the leader cannot reach raft address %s: %s", addr, strerror(err));
        return CAIRN_EINVAL;
    }
    return 0;
}

int clusterAdd(struct cairn *db, uint64_t id, const char *raft, const char *api, bool voter,
               char *errmsg)
{
    struct node_info ni;
    int64_t deadline;
    int rv;

    nodeInfo(db->node, &ni);
    if (ni.state != RAFT_LEADER) {
        errorf(errmsg, "node %llu is not the leader", (unsigned long long)db->cfg.node_id);
        return CAIRN_ENOTLEADER;
    }
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (ni.servers[i].id == id) {
            if (strcmp(ni.servers[i].address, raft) != 0) {
                errorf(errmsg,
                       "node id %llu is already in the cluster, with raft address %s: "
                       "give the new node another --node-id",
                       (unsigned long long)id, ni.servers[i].address);
                return CAIRN_EEXIST;
            }
            /* Already a member (a restart, or its own announcement): only the address. */
            char cur[200];
            if (clusterApiUrl(db, id, cur, sizeof cur) == 0 && strcmp(cur, api) == 0) {
                return 0;
            }
            return recordMeta(db, id, "api", api, errmsg);
        }
        if (strcmp(ni.servers[i].address, raft) == 0) {
            errorf(errmsg, "raft address %s is node %llu's already", raft,
                   (unsigned long long)ni.servers[i].id);
            return CAIRN_EEXIST;
        }
    }
    if (ni.n_servers >= NODE_MAX_SERVERS) {
        errorf(errmsg, "the cluster has %u nodes, the most cairn supports", ni.n_servers);
        return CAIRN_EINVAL;
    }
    if ((rv = reachable(raft, 2000, errmsg)) != 0) {
        return rv;
    }
    /* The address first: the new node's snapshot (and every later one) carries it. */
    if ((rv = recordMeta(db, id, "api", api, errmsg)) != 0 ||
        (!voter && (rv = recordMeta(db, id, "standby", "1", errmsg)) != 0)) {
        return rv;
    }
    deadline = clusterMonoMs() + 30000;
    while ((rv = nodeChange(db->node, NODE_ADD, id, raft, 0, errmsg)) == CAIRN_EBUSY &&
           clusterMonoMs() < deadline) {
        clusterPause(100); /* another membership change is committing */
    }
    if (rv != 0) {
        return rv;
    }
    /* A standby receives the log (or a snapshot) without counting for a quorum; the
     * leader's keeper promotes it to voter once it has caught up (clusterKeep). */
    deadline = clusterMonoMs() + 30000;
    while ((rv = nodeChange(db->node, NODE_ASSIGN, id, NULL, RAFT_STANDBY, errmsg)) ==
               CAIRN_EBUSY &&
           clusterMonoMs() < deadline) {
        clusterPause(100);
    }
    if (rv == 0) {
        dbLog(db, "node %llu (raft %s, HTTP %s) added as standby; %s", (unsigned long long)id, raft,
              api, voter ? "promoted to voter once caught up" : "stays standby");
    }
    return rv;
}

int clusterRemove(struct cairn *db, uint64_t id, char *errmsg)
{
    struct node_info ni;
    bool known = false;
    int64_t deadline;
    int rv;

    nodeInfo(db->node, &ni);
    for (unsigned i = 0; i < ni.n_servers; i++) {
        known = known || ni.servers[i].id == id;
    }
    if (!known) {
        errorf(errmsg, "node %llu is not in the cluster", (unsigned long long)id);
        return CAIRN_ENOTFOUND;
    }
    if (ni.state != RAFT_LEADER) {
        errorf(errmsg, "node %llu is not the leader", (unsigned long long)db->cfg.node_id);
        return CAIRN_ENOTLEADER;
    }
    if (id == db->cfg.node_id) {
        errorf(errmsg,
               "node %llu is the leader: remove it through another node after it hands "
               "leadership over (stop it with SIGTERM)",
               (unsigned long long)id);
        return CAIRN_EINVAL;
    }
    deadline = clusterMonoMs() + 30000;
    while ((rv = nodeChange(db->node, NODE_REMOVE, id, NULL, 0, errmsg)) == CAIRN_EBUSY &&
           clusterMonoMs() < deadline) {
        clusterPause(100);
    }
    if (rv != 0) {
        return rv;
    }
    dbLog(db, "node %llu removed from the cluster", (unsigned long long)id);
    return recordMeta(db, id, "api", NULL, errmsg);
}

/* ---- files from peers --------------------------------------------------------------- */

/* Put the downloaded file tmp into the repository `dir` (a URL, not a directory) as
 * object `id`.cbk, through the repository object; tmp is removed either way. It is read
 * under its own name (`.<id>.cbk.fetch.tmp`), never renamed to `<id>.cbk` for the copy:
 * a kill during the upload leaves it under the name that the start after an unclean
 * stop sweeps (heal.c), and nothing that looks like a backup in the data directory. */
static int uploadFetched(const char *dir, const char *tmp, const char *id, char *errmsg)
{
    char name[BACKUP_ID_SIZE + 8];
    char tmpdir[PATH_MAX];
    struct repo *from = NULL;
    struct repo *to = NULL;
    const char *base = strrchr(tmp, '/');
    int rv;
    snprintf(name, sizeof name, "%s.cbk", id);
    /* The download is a one-object posix repository: its directory, as file name. */
    repoDirOf(tmp, tmpdir);
    if ((rv = repoOpen(tmpdir, &from, errmsg)) == 0 && (rv = repoOpen(dir, &to, errmsg)) == 0) {
        rv = repoCopyObject(from, base != NULL ? base + 1 : tmp, to, name, errmsg);
    }
    repoClose(from);
    repoClose(to);
    unlink(tmp);
    return rv;
}

#define FETCH_CHAIN_MAX 64

/* Fetch the chain ending at id from one peer into the repository dir (a directory, or
 * a URL: then through scratch, a directory of this node's). Every missing file is
 * downloaded first, under a temporary name, and the files are put in place oldest
 * first: a file in the repository always has its whole chain there. Were they put
 * newest first, a kill in the middle would leave a snapshot's newest file without its
 * parent, and the node would never start again (its install finds the file, fetches
 * nothing, and cannot restore it). */
static int fetchFrom(const char *base, const char *dir, const char *scratch, const char *kind,
                     const char *id, char *errmsg)
{
    char cur[BACKUP_ID_SIZE];
    char(*got)[BACKUP_ID_SIZE] = NULL; /* downloaded, newest first */
    char(*tmps)[PATH_MAX] = NULL;      /* where each is */
    unsigned n = 0;
    bool url = strstr(dir, "://") != NULL;
    int rv = url ? 0 : repoMkdirs(dir, errmsg);
    if (rv != 0) {
        return rv;
    }
    got = calloc(FETCH_CHAIN_MAX, sizeof *got);
    tmps = calloc(FETCH_CHAIN_MAX, sizeof *tmps);
    if (got == NULL || tmps == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    snprintf(cur, sizeof cur, "%s", id);
    for (;;) {
        struct backup_info info;
        char parent[BACKUP_ID_SIZE];
        char msg[CAIRN_ERRMSG_SIZE];
        if (repoFind(dir, cur, &info, msg) == 0) {
            snprintf(parent, sizeof parent, "%s", info.parent_id);
        } else {
            char fetch_url[PATH_MAX];
            struct repo_file f;
            if (n == FETCH_CHAIN_MAX) {
                errorf(errmsg, "backup chain of %s is longer than %d files", id, FETCH_CHAIN_MAX);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
            snprintf(fetch_url, sizeof fetch_url, "%s/admin/%s/%s/file", base, kind, cur);
            /* A temporary file's name in a repository (`.<name>.tmp`, see repo_posix.c):
             * a download cut off by a kill is swept as a backup's is. */
            snprintf(tmps[n], sizeof tmps[n], "%s/.%s.cbk.fetch.tmp", url ? scratch : dir, cur);
            if ((rv = clusterDownload(fetch_url, tmps[n], errmsg)) != 0) {
                goto out;
            }
            snprintf(got[n], sizeof got[n], "%s", cur);
            n++;
            if ((rv = repoOpenFile(tmps[n - 1], &f, errmsg)) != 0) {
                goto out;
            }
            snprintf(parent, sizeof parent, "%s", f.r.h.parent_id);
            repoCloseFile(&f);
        }
        if (parent[0] == '\0') {
            break;
        }
        snprintf(cur, sizeof cur, "%s", parent);
    }
    /* Oldest first. */
    while (n > 0) {
        struct backup_info info;
        char path[PATH_MAX];
        n--;
        if (url) {
            rv = uploadFetched(dir, tmps[n], got[n], errmsg);
        } else {
            snprintf(path, sizeof path, "%s/%s.cbk", dir, got[n]);
            /* Never over a file of the same name (backups are never overwritten). */
            if ((rv = repoRenameNoReplace(tmps[n], path, errmsg)) == 0) {
                rv = libSyncParentDir(path, errmsg);
            }
        }
        if (rv != 0 || (rv = repoFind(dir, got[n], &info, errmsg)) != 0) {
            unlink(tmps[n]); /* when it was not put in place */
            goto out;
        }
    }
out:
    for (unsigned i = 0; i < n; i++) {
        unlink(tmps[i]);
    }
    free(got);
    free(tmps);
    return rv;
}

int clusterFetch(struct cairn *db, const char *dir, const char *kind, const char *id, char *errmsg)
{
    struct node_info ni;
    uint64_t order[NODE_MAX_SERVERS + 1];
    unsigned n = 0;
    char last[CAIRN_ERRMSG_SIZE] = "no other node is known";
    /* db->node is NULL while nodeStart runs (nodeInfo then knows no peer): a snapshot
     * installed by the Raft start (a node that restarts with a snapshot whose files are
     * not all here) is fetched through the --join peers alone. */
    nodeInfo(__atomic_load_n(&db->node, __ATOMIC_ACQUIRE), &ni);
    if (ni.leader_id != 0 && ni.leader_id != db->cfg.node_id) {
        order[n++] = ni.leader_id;
    }
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (ni.servers[i].id != db->cfg.node_id && ni.servers[i].id != ni.leader_id) {
            order[n++] = ni.servers[i].id;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        char base[200];
        char msg[CAIRN_ERRMSG_SIZE];
        if (clusterApiUrl(db, order[i], base, sizeof base) != 0) {
            continue;
        }
        if (fetchFrom(base, dir, db->data_dir, kind, id, msg) == 0) {
            dbLog(db, "fetched %s %s and its chain from node %llu", kind, id,
                  (unsigned long long)order[i]);
            return 0;
        }
        snprintf(last, sizeof last, "%s", msg);
    }
    /* A new node's directory is empty until its first snapshot: ask the --join peers
     * who is in the cluster, the leader first. */
    for (unsigned j = 0; j < db->n_join; j++) {
        char url[240];
        char msg[CAIRN_ERRMSG_SIZE];
        struct buf body;
        long status = 0;
        json_t *root;
        json_t *nodes;
        char bases[NODE_MAX_SERVERS + 1][200];
        unsigned nb = 0;
        size_t k;
        json_t *v;
        snprintf(url, sizeof url, "%s/nodes?ver=2", db->join[j]);
        bufInit(&body);
        if (clusterHttp("GET", url, NULL, 0, -1, 5000, &status, &body, NULL, 0, NULL, false, msg) ==
                0 &&
            status == 200 && (root = json_loadb(body.p, body.len, 0, NULL)) != NULL) {
            nodes = json_object_get(root, "nodes");
            for (int pass = 0; pass < 2; pass++) {
                json_array_foreach(nodes, k, v)
                {
                    const char *api = json_string_value(json_object_get(v, "api_addr"));
                    bool leader = json_is_true(json_object_get(v, "leader"));
                    if (api != NULL && api[0] != '\0' && leader == (pass == 0) &&
                        nb < NODE_MAX_SERVERS) {
                        snprintf(bases[nb++], sizeof bases[0], "%s", api);
                    }
                }
            }
            json_decref(root);
        }
        bufFree(&body);
        snprintf(bases[nb++], sizeof bases[0], "%s", db->join[j]);
        for (unsigned i = 0; i < nb; i++) {
            if (fetchFrom(bases[i], dir, db->data_dir, kind, id, msg) == 0) {
                dbLog(db, "fetched %s %s and its chain from %s", kind, id, bases[i]);
                return 0;
            }
            snprintf(last, sizeof last, "%s", msg);
        }
    }
    errorf(errmsg, "no node could send %s %s: %s", kind, id, last);
    return CAIRN_ENOTFOUND;
}

/* ---- the cluster's backup catalogue --------------------------------------------------- */

#define CATALOG_TIMEOUT_MS 3000

/* Add entry (a backup's JSON object, borrowed) held by node to byid, noting the node.
 * A backup is one entry per repository name: the same id in two repositories (a copy
 * fetched for a restore, say) is listed in each. */
static int catalogAdd(json_t *byid, json_t *entry, uint64_t node)
{
    const char *id = json_string_value(json_object_get(entry, "id"));
    const char *repo = json_string_value(json_object_get(entry, "repository"));
    char key[BACKUP_ID_SIZE + BACKUP_REPO_NAME_SIZE + 2];
    json_t *have;
    if (id == NULL) {
        return 0; /* not a backup entry: ignored */
    }
    snprintf(key, sizeof key, "%.*s/%.*s", BACKUP_REPO_NAME_SIZE - 1, repo != NULL ? repo : "",
             BACKUP_ID_SIZE - 1, id);
    have = json_object_get(byid, key);
    if (have == NULL) {
        have = json_deep_copy(entry);
        if (have == NULL || json_object_set_new(have, "nodes", json_array()) != 0 ||
            json_object_set_new(byid, key, have) != 0) {
            return CAIRN_ENOMEM;
        }
    }
    return json_array_append_new(json_object_get(have, "nodes"), json_integer((json_int_t)node)) ==
                   0
               ? 0
               : CAIRN_ENOMEM;
}

static int catalogOrder(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a;
    json_t *y = *(json_t *const *)b;
    json_int_t ix = json_integer_value(json_object_get(x, "raft_index"));
    json_int_t iy = json_integer_value(json_object_get(y, "raft_index"));
    if (ix != iy) {
        return ix < iy ? -1 : 1;
    }
    const char *rx = json_string_value(json_object_get(x, "repository"));
    const char *ry = json_string_value(json_object_get(y, "repository"));
    int c = strcmp(json_string_value(json_object_get(x, "id")),
                   json_string_value(json_object_get(y, "id")));
    return c != 0 ? c : strcmp(rx != NULL ? rx : "", ry != NULL ? ry : "");
}

/* The local repositories' entries into byid. */
static int catalogLocal(struct cairn *db, json_t *byid, char *errmsg)
{
    struct backup_info *list = NULL;
    size_t n = 0;
    int rv = reposetList(&db->repos, -1, &list, &n, errmsg);
    for (size_t i = 0; rv == 0 && i < n; i++) {
        struct buf b;
        json_t *e;
        bufInit(&b);
        backupInfoJson(&list[i], &b);
        e = json_loadb(b.p, b.len, 0, NULL);
        bufFree(&b);
        if (e == NULL) {
            errorf(errmsg, "out of memory listing %s", list[i].path);
            rv = CAIRN_ENOMEM;
            break;
        }
        rv = catalogAdd(byid, e, db->cfg.node_id);
        json_decref(e);
    }
    free(list);
    return rv;
}

/* One peer's repository into byid; non-zero when it did not answer with a list. */
static int catalogPeer(struct cairn *db, uint64_t id, json_t *byid)
{
    char base[200];
    char url[260];
    char msg[CAIRN_ERRMSG_SIZE];
    struct buf body;
    long status = 0;
    json_t *root = NULL;
    json_t *arr;
    json_t *e;
    size_t k;
    int rv = CAIRN_EIO;
    if (clusterApiUrl(db, id, base, sizeof base) != 0) {
        return CAIRN_ENOTFOUND;
    }
    snprintf(url, sizeof url, "%s/admin/backups?local", base);
    bufInit(&body);
    if (clusterHttp("GET", url, NULL, 0, -1, CATALOG_TIMEOUT_MS, &status, &body, NULL, 0, NULL,
                    true, msg) == 0 &&
        status == 200 && (root = json_loadb(body.p, body.len, 0, NULL)) != NULL &&
        json_is_array(arr = json_object_get(root, "backups"))) {
        rv = 0;
        json_array_foreach(arr, k, e)
        {
            if (json_is_object(e) && (rv = catalogAdd(byid, e, id)) != 0) {
                break;
            }
        }
    }
    json_decref(root);
    bufFree(&body);
    return rv;
}

int clusterBackupCatalog(struct cairn *db, json_t **out, char *errmsg)
{
    struct node_info ni;
    json_t *byid = json_object();
    json_t *all = json_object();
    json_t *backups = json_array();
    json_t *unreachable = json_array();
    json_t **sorted = NULL;
    const char *key;
    json_t *v;
    size_t n = 0;
    int rv;

    *out = NULL;
    if (byid == NULL || all == NULL || backups == NULL || unreachable == NULL) {
        errorf(errmsg, "out of memory for the backup catalogue");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if ((rv = catalogLocal(db, byid, errmsg)) != 0) {
        goto out;
    }
    nodeInfo(db->node, &ni);
    for (unsigned i = 0; i < ni.n_servers; i++) {
        if (ni.servers[i].id != db->cfg.node_id &&
            catalogPeer(db, ni.servers[i].id, byid) != 0) {
            json_array_append_new(unreachable, json_integer((json_int_t)ni.servers[i].id));
        }
    }
    if ((sorted = malloc((json_object_size(byid) + 1) * sizeof *sorted)) == NULL) {
        errorf(errmsg, "out of memory for the backup catalogue");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    json_object_foreach(byid, key, v)
    {
        sorted[n++] = v;
    }
    qsort(sorted, n, sizeof *sorted, catalogOrder);
    for (size_t i = 0; i < n; i++) {
        json_array_append(backups, sorted[i]);
    }
    json_object_set(all, "backups", backups);
    json_object_set(all, "unreachable", unreachable);
    *out = all;
    all = NULL;
out:
    free(sorted);
    json_decref(byid);
    json_decref(all);
    json_decref(backups);
    json_decref(unreachable);
    return rv;
}

int clusterNudge(void *data, char *errmsg)
{
    struct cairn *db = data;
    struct node_info ni;
    char url[300];
    long status = 0;
    nodeInfo(db->node, &ni);
    if (ni.leader_id == 0 || ni.leader_id == db->cfg.node_id ||
        clusterApiUrl(db, ni.leader_id, url, sizeof url) != 0) {
        errorf(errmsg, "no leader to ask for a log entry (this node is %s)",
               nodeStateName(ni.state));
        return CAIRN_ENOLEADER;
    }
    /* A read at level strong goes through the log and changes nothing. */
    snprintf(url + strlen(url), sizeof url - strlen(url), "/db/query?level=strong&q=SELECT%%201");
    if (clusterHttp("GET", url, NULL, 0, -1, 10000, &status, NULL, NULL, 0, NULL, false, errmsg) !=
        0) {
        return CAIRN_ENOLEADER;
    }
    if (status != 200) {
        errorf(errmsg, "the leader answered %ld to a log entry request", status);
        return CAIRN_ENOLEADER;
    }
    return 0;
}

int clusterFetchSnapshot(void *data, const char *dir, const char *id, char *errmsg)
{
    return clusterFetch(data, dir, "snapshots", id, errmsg);
}

/* ---- the announcer ------------------------------------------------------------------ */

static bool waitStop(struct cairn *db, unsigned ms)
{
    struct timespec deadline;
    bool stop;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&db->amu);
    while (!db->stopping) {
        if (pthread_cond_timedwait(&db->acond, &db->amu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    stop = db->stopping;
    pthread_mutex_unlock(&db->amu);
    return stop;
}

/* One round: true when the directory holds this node's address. */
static bool announceOnce(struct cairn *db)
{
    struct node_info ni;
    char own[200];
    char cur[200];
    char key[64];
    char msg[CAIRN_ERRMSG_SIZE];

    nodeInfo(db->node, &ni);
    if (ni.n_servers < 2 || ni.leader_id == 0 || !isMember(db)) {
        return ni.n_servers < 2 && ni.n_servers > 0; /* a single node needs no directory */
    }
    clusterUrl(db->http_addr, own, sizeof own);
    snprintf(key, sizeof key, "node:%llu:api", (unsigned long long)db->cfg.node_id);
    if (storeMetaGet(db->store, key, cur, sizeof cur, msg) == 0 && strcmp(cur, own) == 0) {
        return true;
    }
    if (ni.leader_id == db->cfg.node_id) {
        if (recordMeta(db, db->cfg.node_id, "api", own, msg) != 0) {
            dbLog(db, "recording this node's HTTP address: %s", msg);
            return false;
        }
        return true;
    }
    {
        char url[200];
        struct buf req;
        long status = 0;
        if (clusterApiUrl(db, ni.leader_id, url, sizeof url) != 0) {
            return false; /* the leader announces itself first */
        }
        snprintf(url + strlen(url), sizeof url - strlen(url), "/join");
        bufInit(&req);
        joinBody(db, &req);
        if (clusterHttp("POST", url, req.p, req.len, -1, 10000, &status, NULL, NULL, 0, NULL, false,
                        msg) == 0 &&
            status == 200) {
            bufFree(&req);
            return true;
        }
        bufFree(&req);
        return false;
    }
}

/* On the leader: promote each standby that joined as a voter once its applied index
 * is close to the leader's commit index (asked over HTTP), so that libraft's own
 * catch-up rounds, which hold the configuration for their duration, are short. */
static bool promoteOnce(struct cairn *db)
{
    struct node_info ni;
    bool pending = false;
    nodeInfo(db->node, &ni);
    if (ni.state != RAFT_LEADER) {
        return false;
    }
    for (unsigned i = 0; i < ni.n_servers; i++) {
        const struct node_server *sv = &ni.servers[i];
        char key[64];
        char flag[16];
        char base[200];
        char url[240];
        char msg[CAIRN_ERRMSG_SIZE];
        struct buf body;
        long status = 0;
        json_t *root;
        uint64_t applied = 0;
        if (sv->role == RAFT_SPARE) {
            /* Added, but its assignment to standby did not happen: do it now. */
            pending = true;
            if (nodeChange(db->node, NODE_ASSIGN, sv->id, NULL, RAFT_STANDBY, msg) != 0) {
                dbLog(db, "making node %llu a standby: %s (tried again)",
                      (unsigned long long)sv->id, msg);
            }
            continue;
        }
        if (sv->role != RAFT_STANDBY) {
            continue;
        }
        snprintf(key, sizeof key, "node:%llu:standby", (unsigned long long)sv->id);
        if (storeMetaGet(db->store, key, flag, sizeof flag, msg) == 0) {
            continue; /* joined as a standby, stays one */
        }
        pending = true;
        if (clusterApiUrl(db, sv->id, base, sizeof base) != 0) {
            continue;
        }
        snprintf(url, sizeof url, "%s/status", base);
        bufInit(&body);
        if (clusterHttp("GET", url, NULL, 0, -1, 2000, &status, &body, NULL, 0, NULL, false, msg) ==
                0 &&
            status == 200 && (root = json_loadb(body.p, body.len, 0, NULL)) != NULL) {
            json_t *a = json_object_get(json_object_get(root, "raft"), "applied_index");
            applied = json_is_integer(a) ? (uint64_t)json_integer_value(a) : 0;
            json_decref(root);
        }
        bufFree(&body);
        if (applied == 0 || applied + 1000 < ni.commit_index) {
            continue;
        }
        if (nodeChange(db->node, NODE_ASSIGN, sv->id, NULL, RAFT_VOTER, msg) == 0) {
            dbLog(db, "node %llu caught up (index %llu): promoted to voter",
                  (unsigned long long)sv->id, (unsigned long long)applied);
        } else {
            dbLog(db, "promoting node %llu to voter: %s (tried again)", (unsigned long long)sv->id,
                  msg);
        }
    }
    return pending;
}

static void setRemoved(struct cairn *db, const char *why)
{
    bool changed;
    pthread_mutex_lock(&db->amu);
    changed = strcmp(db->removed, why) != 0;
    snprintf(db->removed, sizeof db->removed, "%s", why);
    pthread_mutex_unlock(&db->amu);
    if (changed && why[0] != '\0') {
        dbLog(db, "%s", why);
    } else if (changed) {
        dbLog(db, "this node is in the cluster's configuration again");
    }
}

/* A node removed while it was down and started again on its data directory still holds
 * a configuration naming itself: it campaigns for ever, no peer answering, and would
 * serve its copy, which never catches up, at level none, with nothing in its log to say
 * why. Raft does not tell it; the leader does, over HTTP: while this node knows no
 * leader, it asks the peers of its configuration for their /nodes, and a peer that is
 * the leader and does not list this node settles it. Only the leader's answer counts:
 * a follower behind it may not list a node just added. */
static void membershipOnce(struct cairn *db)
{
    struct node_info ni;
    char own[32];
    nodeInfo(db->node, &ni);
    if (ni.n_servers == 0) {
        return; /* waiting to join: in no configuration yet */
    }
    if (ni.leader_id != 0) {
        if (isMember(db)) {
            setRemoved(db, "");
        }
        return;
    }
    snprintf(own, sizeof own, "%llu", (unsigned long long)db->cfg.node_id);
    for (unsigned i = 0; i < ni.n_servers; i++) {
        const struct node_server *sv = &ni.servers[i];
        char base[200];
        char url[240];
        char peer[32];
        char msg[CAIRN_ERRMSG_SIZE];
        struct buf body;
        long status = 0;
        json_t *root;
        bool leader, listed;
        bool stopping;
        pthread_mutex_lock(&db->amu);
        stopping = db->stopping;
        pthread_mutex_unlock(&db->amu);
        if (stopping) {
            return; /* a stop is not held up by peers that do not answer */
        }
        if (sv->id == db->cfg.node_id || clusterApiUrl(db, sv->id, base, sizeof base) != 0) {
            continue;
        }
        snprintf(url, sizeof url, "%s/nodes", base);
        bufInit(&body);
        /* 3 s: the leader's /nodes probes its members, 1 s at most each that does not
         * answer. */
        if (clusterHttp("GET", url, NULL, 0, -1, 3000, &status, &body, NULL, 0, NULL, false,
                        msg) != 0 ||
            status != 200 || (root = json_loadb(body.p, body.len, 0, NULL)) == NULL) {
            bufFree(&body);
            continue;
        }
        bufFree(&body);
        snprintf(peer, sizeof peer, "%llu", (unsigned long long)sv->id);
        leader = json_is_true(json_object_get(json_object_get(root, peer), "leader"));
        listed = json_object_get(root, own) != NULL;
        json_decref(root);
        if (!leader) {
            continue;
        }
        if (listed) {
            setRemoved(db, "");
        } else {
            snprintf(msg, sizeof msg,
                     "this node (%s) is not in the cluster's configuration: node %s, the "
                     "leader (%s), does not list it, so it was removed; it serves no reads "
                     "and is not ready. Stop it, and to bring it back start it with an "
                     "empty data directory and --join",
                     own, peer, base);
            setRemoved(db, msg);
        }
        return;
    }
}

static void *announcerMain(void *arg)
{
    struct cairn *db = arg;
    unsigned wait = 200;
    double next_membership = 0;
    do {
        bool announced = announceOnce(db);
        bool promoting;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)now.tv_sec + (double)now.tv_nsec / 1e9 >= next_membership) {
            membershipOnce(db);
            next_membership = (double)now.tv_sec + (double)now.tv_nsec / 1e9 + 1.0;
        }
        /* Once recorded, this process's address stays in the directory: a round that
         * could not read the store or reach the leader does not take readiness away. */
        if (announced) {
            atomic_store(&db->announced, true);
        }
        promoting = promoteOnce(db);
        wait = announced && !promoting ? 1000 : 250;
    } while (!waitStop(db, wait));
    return NULL;
}

int clusterAnnouncerStart(struct cairn *db, char *errmsg)
{
    int rv;
    if (db->http_addr[0] == '\0' || db->cfg.raft_addr == NULL) {
        return 0;
    }
    rv = pthread_create(&db->announcer, NULL, announcerMain, db);
    if (rv != 0) {
        errorf(errmsg, "cannot start the announcer thread: %s", strerror(rv));
        return CAIRN_ENOMEM;
    }
    db->announcer_started = true;
    return 0;
}

void clusterAnnouncerStop(struct cairn *db)
{
    if (!db->announcer_started) {
        return;
    }
    pthread_mutex_lock(&db->amu);
    db->stopping = true;
    pthread_cond_broadcast(&db->acond);
    pthread_mutex_unlock(&db->amu);
    pthread_join(db->announcer, NULL);
    db->announcer_started = false;
}

void clusterIdentityJson(struct cairn *db, struct buf *b)
{
    char api[200];
    clusterUrl(db->http_addr, api, sizeof api);
    bufPrintf(b, "{\"id\":%llu,\"raft_addr\":", (unsigned long long)db->cfg.node_id);
    bufJsonString(b, db->cfg.raft_addr ? db->cfg.raft_addr : "",
                  db->cfg.raft_addr ? strlen(db->cfg.raft_addr) : 0);
    bufPuts(b, ",\"api_addr\":");
    bufJsonString(b, api, strlen(api));
    {
        char hex[2 * NODE_CLUSTER_ID_SIZE + 1];
        if (atomic_load(&db->cluster_id_known) &&
            !libIsZero(db->cluster_id, NODE_CLUSTER_ID_SIZE)) {
            libHexEncode(db->cluster_id, NODE_CLUSTER_ID_SIZE, hex);
            bufPrintf(b, ",\"cluster_id\":\"%s\"", hex);
        }
        libHexEncode(db->nonce, NODE_CLUSTER_ID_SIZE, hex);
        bufPrintf(b, ",\"nonce\":\"%s\"", hex);
    }
    bufPrintf(b, ",\"running\":%s,\"bootstrap\":[", atomic_load(&db->running) ? "true" : "false");
    unsigned nboot = atomic_load_explicit(&db->n_boot_servers, memory_order_acquire);
    for (unsigned i = 0; i < nboot; i++) {
        bufPrintf(b, "%s{\"id\":%llu,\"addr\":", i ? "," : "",
                  (unsigned long long)db->boot_servers[i].id);
        bufJsonString(b, db->boot_servers[i].address, strlen(db->boot_servers[i].address));
        bufPutc(b, '}');
    }
    bufPuts(b, "]}\n");
}

/* ---- healing a damaged follower ------------------------------------------------- */

int clusterHealDatabase(void *data, uint64_t need, char *errmsg)
{
    struct cairn *db = data;
    struct node_info ni;
    char base[200], url[300], tmp[PATH_MAX], kept[PATH_MAX], when[32];
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    uint64_t index = 0;
    bool ok = false;
    time_t now = time(NULL);
    int rv;

    nodeInfo(db->node, &ni);
    if (ni.leader_id == 0 || ni.leader_id == db->cfg.node_id ||
        clusterApiUrl(db, ni.leader_id, base, sizeof base) != 0) {
        errorf(errmsg, "no leader to copy the database from");
        return CAIRN_ENOLEADER;
    }
    /* ?internal: the leader's own file, its applied index (in _cairn_meta) included. */
    snprintf(url, sizeof url, "%s/db/backup?internal", base);
    snprintf(tmp, sizeof tmp, "%s.heal", db->db_path);
    if ((rv = clusterDownload(url, tmp, errmsg)) != 0) {
        unlink(tmp);
        return rv;
    }
    /* The copy must be whole (its pages verified as they are read) and far enough. */
    if (sqlite3_open_v2(tmp, &h, SQLITE_OPEN_READWRITE, PAGESUM_VFS) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0) {
        sqlite3_finalize(st);
        st = NULL;
        if (sqlite3_prepare_v2(h, "SELECT value FROM _cairn_meta WHERE key='applied_index'", -1,
                               &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            index = (uint64_t)sqlite3_column_int64(st, 0);
            ok = true;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    if (!ok) {
        errorf(errmsg, "the copy from %s does not pass quick_check", base);
        unlink(tmp);
        return CAIRN_ECORRUPT;
    }
    if (index + 1 < need) {
        errorf(errmsg, "the copy from %s is at index %llu, before entry %llu: asked again later",
               base, (unsigned long long)index, (unsigned long long)need);
        unlink(tmp);
        return CAIRN_EBUSY;
    }
    /* Keep the damaged file for a look later. */
    libIso8601((int64_t)now * 1000, LIB_ISO8601_BASIC, when);
    snprintf(kept, sizeof kept, "%s/corrupt", db->data_dir);
    mkdir(kept, 0755);
    snprintf(kept, sizeof kept, "%s/corrupt/%s-db.sqlite", db->data_dir, when);
    if (link(db->db_path, kept) != 0) {
        dbLog(db, "cannot keep the damaged database as %s: %s", kept, strerror(errno));
    }
    if ((rv = storeReplaceMove(db->store, tmp, errmsg)) != 0) {
        unlink(tmp);
        return rv;
    }
    dbLog(db, "database healed: replaced with the copy of node %llu at index %llu (the damaged "
              "file is kept as %s)",
          (unsigned long long)ni.leader_id, (unsigned long long)index, kept);
    return 0;
}
