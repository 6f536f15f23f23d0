/* GET /metrics: the node's state in Prometheus's text exposition format (version 0.0.4),
 * every name with the `cairn_` prefix, for a scraper to collect.
 *
 * What it shows: the node (version, uptime), Raft (state, term, indexes, snapshots), the
 * store (sizes, readers, page checksum failures), the HTTP API (requests, and for
 * /db/execute, /db/query and /db/request the requests answered and the seconds spent),
 * the continuous archive (head, lag, uploads, outruns), and, from the catalog of each of
 * the node's repositories (reposetList, the same listing as GET /admin/backups?local):
 * how many backups and bytes each holds, and per backup type the newest backup's time,
 * age, duration and size, and the newest verification's (restore drill's) outcome, time
 * and age. The catalog is the record: a failed backup leaves no entry, so the age of the
 * newest one is what an alert on a missed backup watches.
 *
 * A repository that cannot be listed is reported as cairn_repository_up 0 (its error in
 * the node's log), not as a failed scrape: the rest of the node's metrics still count.
 *
 * HTTP threads (one per connection); lists repositories, which may go to the network. */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "backup.h"
#include "db.h"
#include "http.h"
#include "http_int.h"
#include "cairn.h"
#include "lib.h"
#include "node.h"
#include "reposet.h"
#include "store.h"

/* A label value, escaped as the format asks (backslash, double quote, newline). */
static void putLabel(struct buf *b, const char *v)
{
    bufPutc(b, '"');
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            bufPutc(b, '\\');
            bufPutc(b, *p);
        } else if (*p == '\n') {
            bufPuts(b, "\\n");
        } else {
            bufPutc(b, *p);
        }
    }
    bufPutc(b, '"');
}

static void putValue(struct buf *b, double v)
{
    char num[64];
    if (isnan(v)) {
        bufPuts(b, "NaN\n");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(num, sizeof num, "%.0f\n", v);
    } else {
        snprintf(num, sizeof num, "%.6f\n", v);
    }
    bufPuts(b, num);
}

/* # HELP and # TYPE of a metric family: once, before its first sample. */
static void family(struct buf *b, const char *name, const char *type, const char *help)
{
    bufPrintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct buf *b, const char *name, double v)
{
    bufPuts(b, name);
    bufPutc(b, ' ');
    putValue(b, v);
}

/* A sample with labels: names[i]=values[i] for i < n. */
static void sampleL(struct buf *b, const char *name, unsigned n, const char *const *names,
                    const char *const *values, double v)
{
    bufPuts(b, name);
    bufPutc(b, '{');
    for (unsigned i = 0; i < n; i++) {
        if (i > 0) {
            bufPutc(b, ',');
        }
        bufPuts(b, names[i]);
        bufPutc(b, '=');
        putLabel(b, values[i]);
    }
    bufPuts(b, "} ");
    putValue(b, v);
}

static void gauge(struct buf *b, const char *name, const char *help, double v)
{
    family(b, name, "gauge", help);
    sample(b, name, v);
}

static void counter(struct buf *b, const char *name, const char *help, double v)
{
    family(b, name, "counter", help);
    sample(b, name, v);
}

/* ---- backups, from the catalog ------------------------------------------------------ */

#define NTYPES 3 /* BACKUP_FULL, BACKUP_INCREMENTAL, BACKUP_DIFFERENTIAL: 1..3 */

/* What the figures need of one backup: the newest of a type, or its newest check. */
struct backupFacts {
    bool set;
    int verified; /* BACKUP_UNVERIFIED, ... */
    int64_t created_ms, duration_ms, verified_ms;
    uint64_t size_bytes, raft_index;
};

struct repoFacts {
    bool listed;
    uint64_t count, bytes;
    struct backupFacts last[NTYPES + 1];     /* newest of each type */
    struct backupFacts verified[NTYPES + 1]; /* newest verification of each type */
    uint64_t verify_failed;                  /* backups whose last check failed */
};

/* The figures of every repository, from one listing (struct http_server). */
struct metrics_catalog {
    struct repoFacts facts[REPOSET_MAX];
    int64_t listed_mono_ms; /* when the listing ended */
    int64_t took_ms;        /* how long it took */
    double listed_unix;     /* the same moment, Unix seconds */
};

static void keep(struct backupFacts *f, const struct backup_info *e)
{
    f->set = true;
    f->verified = e->verified;
    f->created_ms = e->created_ms;
    f->duration_ms = e->duration_ms;
    f->verified_ms = e->verified_ms;
    f->size_bytes = e->size_bytes;
    f->raft_index = e->raft_index;
}

static void collect(const struct backup_info *list, size_t n, const char *repo,
                    struct repoFacts *f)
{
    for (size_t i = 0; i < n; i++) {
        const struct backup_info *e = &list[i];
        if (strcmp(e->repository, repo) != 0 || e->type < 1 || e->type > NTYPES) {
            continue;
        }
        f->count++;
        f->bytes += e->size_bytes;
        if (e->error[0] != '\0') {
            continue; /* listed, but its file cannot be read: not a good backup */
        }
        if (!f->last[e->type].set || e->created_ms > f->last[e->type].created_ms) {
            keep(&f->last[e->type], e);
        }
        if (e->verified != BACKUP_UNVERIFIED &&
            (!f->verified[e->type].set || e->verified_ms > f->verified[e->type].verified_ms)) {
            keep(&f->verified[e->type], e);
        }
        if (e->verified == BACKUP_VERIFY_FAILED) {
            f->verify_failed++;
        }
    }
}

/* List every repository now (one at a time: each listing's array is freed before the
 * next, which at 10,000 backups is tens of MiB). */
static void listCatalogs(const struct reposet *rs, struct metrics_catalog *mc)
{
    int64_t t0 = libMonoMs();
    memset(mc->facts, 0, sizeof mc->facts);
    for (unsigned r = 0; r < rs->n; r++) {
        struct backup_info *one = NULL;
        size_t k = 0;
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (reposetList(rs, (int)r, &one, &k, errmsg) != 0) {
            fprintf(stderr, "cairnd: /metrics: listing repository '%s': %s\n", rs->r[r].name,
                    errmsg);
            continue;
        }
        mc->facts[r].listed = true;
        collect(one, k, rs->r[r].name, &mc->facts[r]);
        free(one);
    }
    mc->listed_mono_ms = libMonoMs();
    mc->took_ms = mc->listed_mono_ms - t0;
    mc->listed_unix = (double)libNowMs() / 1000.0;
}

static bool fresh(const struct metrics_catalog *mc, int64_t now_ms)
{
    return mc != NULL && now_ms - mc->listed_mono_ms < 10 * mc->took_ms;
}

/* The figures for this scrape, into *out: the kept ones while fresh, or while another
 * scrape lists; else listed now. */
static void catalogFacts(struct http_server *h, struct metrics_catalog *out)
{
    bool have;
    pthread_mutex_lock(&h->metrics_cache_mu);
    have = h->metrics_catalog != NULL;
    if (fresh(h->metrics_catalog, libMonoMs())) {
        *out = *h->metrics_catalog;
        pthread_mutex_unlock(&h->metrics_cache_mu);
        return;
    }
    pthread_mutex_unlock(&h->metrics_cache_mu);
    if (have && pthread_mutex_trylock(&h->metrics_list_mu) != 0) {
        /* Another scrape lists: its figures are a moment away, these a moment old. */
        pthread_mutex_lock(&h->metrics_cache_mu);
        *out = *h->metrics_catalog;
        pthread_mutex_unlock(&h->metrics_cache_mu);
        return;
    }
    if (!have) {
        pthread_mutex_lock(&h->metrics_list_mu);
    }
    /* Holding list_mu: another scrape may have listed while this one waited. */
    pthread_mutex_lock(&h->metrics_cache_mu);
    if (fresh(h->metrics_catalog, libMonoMs())) {
        *out = *h->metrics_catalog;
        pthread_mutex_unlock(&h->metrics_cache_mu);
        pthread_mutex_unlock(&h->metrics_list_mu);
        return;
    }
    pthread_mutex_unlock(&h->metrics_cache_mu);
    listCatalogs(&h->db->repos, out);
    pthread_mutex_lock(&h->metrics_cache_mu);
    if (h->metrics_catalog == NULL) {
        h->metrics_catalog = malloc(sizeof *h->metrics_catalog);
    }
    if (h->metrics_catalog != NULL) {
        *h->metrics_catalog = *out;
    }
    pthread_mutex_unlock(&h->metrics_cache_mu);
    pthread_mutex_unlock(&h->metrics_list_mu);
}

static void backupMetrics(struct http_server *h, struct buf *b)
{
    const struct reposet *rs = &h->db->repos;
    struct metrics_catalog mc;
    const struct repoFacts *facts = mc.facts;
    const double now = (double)libNowMs() / 1000.0;
    static const char *const rl[] = {"repository"};
    static const char *const rtl[] = {"repository", "type"};

    catalogFacts(h, &mc);
    gauge(b, "cairn_repository_listed_age_seconds",
          "Seconds since the repositories' catalogs were listed for the figures below (they "
          "are kept for ten times as long as the listing took)",
          now - mc.listed_unix < 0 ? 0 : now - mc.listed_unix);

    family(b, "cairn_repository_up", "gauge",
           "1 if the repository's catalog could be listed by this scrape, else 0");
    for (unsigned r = 0; r < rs->n; r++) {
        const char *v[] = {rs->r[r].name};
        sampleL(b, "cairn_repository_up", 1, rl, v, facts[r].listed ? 1 : 0);
    }
    family(b, "cairn_backups", "gauge", "Backups in the repository's catalog");
    for (unsigned r = 0; r < rs->n; r++) {
        const char *v[] = {rs->r[r].name};
        if (facts[r].listed) {
            sampleL(b, "cairn_backups", 1, rl, v, (double)facts[r].count);
        }
    }
    family(b, "cairn_backup_bytes", "gauge", "Bytes of the backups in the repository");
    for (unsigned r = 0; r < rs->n; r++) {
        const char *v[] = {rs->r[r].name};
        if (facts[r].listed) {
            sampleL(b, "cairn_backup_bytes", 1, rl, v, (double)facts[r].bytes);
        }
    }
    family(b, "cairn_backup_verify_failed", "gauge",
           "Backups in the repository whose last verification (or restore drill) failed");
    for (unsigned r = 0; r < rs->n; r++) {
        const char *v[] = {rs->r[r].name};
        if (facts[r].listed) {
            sampleL(b, "cairn_backup_verify_failed", 1, rl, v, (double)facts[r].verify_failed);
        }
    }

    /* Per repository and type: the newest backup, then the newest verification. */
    static const struct {
        const char *name, *type, *help;
    } last[] = {
        {"cairn_backup_last_timestamp_seconds", "gauge",
         "Unix time the newest backup of this type started"},
        {"cairn_backup_last_age_seconds", "gauge",
         "Seconds since the newest backup of this type started"},
        {"cairn_backup_last_duration_seconds", "gauge",
         "Seconds the newest backup of this type took"},
        {"cairn_backup_last_size_bytes", "gauge", "Bytes of the newest backup of this type"},
        {"cairn_backup_last_index", "gauge",
         "Raft index of the newest backup of this type's image"},
        {"cairn_backup_last_verify_timestamp_seconds", "gauge",
         "Unix time of the newest verification (restore drill) of a backup of this type"},
        {"cairn_backup_last_verify_age_seconds", "gauge",
         "Seconds since the newest verification (restore drill) of a backup of this type"},
        {"cairn_backup_last_verify_success", "gauge",
         "1 if the newest verification (restore drill) of a backup of this type passed"},
    };
    for (unsigned m = 0; m < sizeof last / sizeof last[0]; m++) {
        family(b, last[m].name, last[m].type, last[m].help);
        for (unsigned r = 0; r < rs->n; r++) {
            for (int t = 1; t <= NTYPES; t++) {
                const struct backupFacts *e = m < 5 ? &facts[r].last[t] : &facts[r].verified[t];
                const char *v[] = {rs->r[r].name, backupTypeName(t)};
                double x;
                if (!e->set) {
                    continue;
                }
                switch (m) {
                    case 0:
                        x = (double)e->created_ms / 1000.0;
                        break;
                    case 1:
                        x = now - (double)e->created_ms / 1000.0;
                        break;
                    case 2:
                        x = (double)e->duration_ms / 1000.0;
                        break;
                    case 3:
                        x = (double)e->size_bytes;
                        break;
                    case 4:
                        x = (double)e->raft_index;
                        break;
                    case 5:
                        x = (double)e->verified_ms / 1000.0;
                        break;
                    case 6:
                        x = now - (double)e->verified_ms / 1000.0;
                        break;
                    default:
                        x = e->verified == BACKUP_VERIFIED ? 1 : 0;
                        break;
                }
                sampleL(b, last[m].name, 2, rtl, v, x < 0 && (m == 1 || m == 6) ? 0 : x);
            }
        }
    }
}

/* ---- the rest of the node ----------------------------------------------------------- */

enum MHD_Result httpServeMetrics(struct http_server *h, struct MHD_Connection *c)
{
    struct cairn *db = h->db;
    struct node_info ni;
    struct store_stats ss;
    struct archive_status as;
    struct buf b;
    static const char *const states[] = {"unavailable", "follower", "candidate", "leader"};
    static const char *const stl[] = {"state"};
    static const char *const epl[] = {"endpoint"};
    static const char *const eps[] = {"/db/execute", "/db/query", "/db/request"};

    nodeInfo(db->node, &ni);
    storeStats(db->store, &ss);
    archiveStatus(db->archiver, &as);
    bufInit(&b);

    family(&b, "cairn_info", "gauge", "The node: its id and cairn's version (value 1)");
    {
        static const char *const names[] = {"node_id", "version", "sqlite_version"};
        char id[32];
        snprintf(id, sizeof id, "%llu", (unsigned long long)ni.id);
        const char *v[] = {id, CAIRN_VERSION, sqlite3_libversion()};
        sampleL(&b, "cairn_info", 3, names, v, 1);
    }
    gauge(&b, "cairn_uptime_seconds", "Seconds since cairnd started",
          (double)(time(NULL) - db->started));

    family(&b, "cairn_raft_state", "gauge", "1 for the node's Raft state, 0 for the others");
    for (int s = 0; s < 4; s++) {
        const char *v[] = {states[s]};
        sampleL(&b, "cairn_raft_state", 1, stl, v, ni.state == s ? 1 : 0);
    }
    gauge(&b, "cairn_raft_leader_id", "Id of the node the node knows as leader (0: none)",
          (double)ni.leader_id);
    gauge(&b, "cairn_raft_term", "The node's current Raft term", (double)ni.term);
    gauge(&b, "cairn_raft_commit_index", "Highest log index known committed",
          (double)ni.commit_index);
    gauge(&b, "cairn_raft_applied_index", "Highest log index applied to the database",
          (double)ni.applied_index);
    gauge(&b, "cairn_raft_last_log_index", "Highest index in the node's log",
          (double)ni.last_log_index);
    gauge(&b, "cairn_raft_voters", "Voting members of the cluster", (double)ni.voters);
    counter(&b, "cairn_raft_snapshots_total", "Raft snapshots the node has taken",
            (double)ni.snapshots_taken);
    gauge(&b, "cairn_raft_last_snapshot_index", "Log index of the node's newest snapshot",
          (double)ni.last_snapshot_index);

    gauge(&b, "cairn_db_size_bytes", "Size of the database file", (double)ss.db_size);
    gauge(&b, "cairn_wal_size_bytes", "Size of the database's write-ahead log",
          (double)ss.wal_size);
    gauge(&b, "cairn_db_readers", "Read connections open on the database", (double)ss.readers);
    gauge(&b, "cairn_page_checksums_enabled", "1 if pages carry checksums",
          ss.page_checksums ? 1 : 0);
    counter(&b, "cairn_checksum_failures_total", "Pages whose checksum did not match on read",
            (double)ss.checksum_failures);

    counter(&b, "cairn_http_requests_total", "HTTP requests received",
            (double)atomic_load(&h->requests));
    family(&b, "cairn_http_data_requests_total", "counter",
           "Requests to the data endpoints answered by this node");
    for (int k = 0; k < HTTP_DATA_ENDPOINTS; k++) {
        const char *v[] = {eps[k]};
        sampleL(&b, "cairn_http_data_requests_total", 1, epl, v,
                (double)atomic_load(&h->served[k].count));
    }
    family(&b, "cairn_http_data_request_seconds_total", "counter",
           "Seconds spent answering the data endpoints' requests (divide by the requests "
           "for the mean latency)");
    for (int k = 0; k < HTTP_DATA_ENDPOINTS; k++) {
        const char *v[] = {eps[k]};
        sampleL(&b, "cairn_http_data_request_seconds_total", 1, epl, v,
                (double)atomic_load(&h->served[k].usec) / 1e6);
    }

    gauge(&b, "cairn_request_memory_bytes",
          "Memory held by request bodies being received and answers not yet sent, counted "
          "against --max-request-memory",
          (double)membudgetHeld(&h->budget));
    gauge(&b, "cairn_request_memory_limit_bytes", "The node's --max-request-memory",
          (double)h->budget.limit);
    counter(&b, "cairn_request_memory_refusals_total",
            "Requests answered 503 because --max-request-memory was taken",
            (double)atomic_load(&h->budget_refused));

    gauge(&b, "cairn_archive_enabled", "1 if the node archives its log (--archive)",
          as.enabled ? 1 : 0);
    if (as.enabled) {
        gauge(&b, "cairn_archive_head_index", "Newest log index in the archive",
              (double)as.head_index);
        gauge(&b, "cairn_archive_lag_entries", "Committed entries not in the archive yet",
              (double)as.lag_entries);
        gauge(&b, "cairn_archive_lag_seconds", "Age of the oldest entry not archived yet",
              as.lag_seconds);
        counter(&b, "cairn_archive_segments_uploaded_total", "Archive segments uploaded",
                (double)as.segments);
        counter(&b, "cairn_archive_bytes_uploaded_total", "Bytes of archive segments uploaded",
                (double)as.bytes);
        counter(&b, "cairn_archive_timelines_started_total",
                "Archive timelines this node started", (double)as.timelines_started);
        counter(&b, "cairn_archive_outruns_total",
                "Times the Raft log no longer held entries the archive needed (a new timeline "
                "was started)",
                (double)as.outruns);
        gauge(&b, "cairn_archive_outran", "1 if the log outran the archive on this node",
              as.outran ? 1 : 0);
    }

    backupMetrics(h, &b);

    if (b.oom) {
        bufFree(&b);
        return httpSendError(c, 500, "out of memory writing the metrics");
    }
    {
        size_t len;
        char *text = bufDetach(&b, &len);
        return httpSend(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    }
}
