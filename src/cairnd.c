/* cairnd: the cairn server. A thin main over the library: parse flags, open the node
 * (which starts Raft and the HTTP API), wait for SIGINT/SIGTERM, close cleanly.
 * Main thread only; the library runs its own threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cairn.h"
#include "housekeeping.h" /* --backup-config: scheduled backups and drills */
#include "policy.h"
#include "reposet.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cairnd [OPTIONS]\n"
            "\n"
            "Run a cairn node: a SQLite database replicated with Raft, served over an\n"
            "rqlite-compatible HTTP API.\n"
            "\n"
            "Options:\n"
            "  --data-dir DIR            data directory (default ./data); created if missing\n"
            "  --http-addr HOST:PORT     HTTP API address (default 127.0.0.1:4001)\n"
            "  --raft-addr HOST:PORT     Raft address (default 127.0.0.1:4002)\n"
            "  --node-id ID              this node's id, a positive integer (default 1;\n"
            "                            kept in DIR/node.json after the first start)\n"
            "  --backup-dir URL          the default backup repository, named 'default': a\n"
            "                            directory, file:///DIR or s3://BUCKET/PREFIX\n"
            "                            (default: backups/ beside the data directory)\n"
            "  --repo NAME=URL           one more named repository (repeatable, at most 8 in\n"
            "                            all); without --backup-dir the first is the default.\n"
            "                            BACKUP DATABASE ... TO 'NAME' picks one\n"
            "  --backup-compression C    how backups are compressed: lz4, lz4:ACCELERATION,\n"
            "                            zstd or zstd:LEVEL (default: lz4 into a directory,\n"
            "                            zstd:1 into S3)\n"
            "  --restore-from REPO[#ID]  on a node whose database is empty, restore backup ID\n"
            "                            (default: the newest) of repository REPO (DIR,\n"
            "                            file:///DIR or s3://BUCKET/PREFIX) before serving;\n"
            "                            a node that starts alone only. With an archive in\n"
            "                            REPO: the newest backup + the archive to its head\n"
            "                            (REPO#N: as of log index N of the archive;\n"
            "                            REPO#2026-12-02T10:01:59Z: as of that time)\n"
            "  --archive                 archive every committed write continuously into the\n"
            "                            default repository (point-in-time restore: cairn\n"
            "                            restore --to-time/--to-index); on every node\n"
            "  --archive-to NAME         the same, into repository NAME (implies --archive)\n"
            "  --archive-interval DUR    close and upload a segment this often (default 1s)\n"
            "  --archive-segment-bytes N or once N bytes of entries wait (default 16777216)\n"
            "  --archive-queue-bytes N   the most committed entries held in memory for the\n"
            "                            archive (default 67108864); an archive that falls\n"
            "                            further behind starts a new timeline\n"
            "  --archive-sync            answer a write only once its entry is in the archive\n"
            "                            (RPO 0 for the loss of every node; on the leader)\n"
            "  --archive-sync-timeout DUR  the longest a write waits for it (default 10s);\n"
            "                            then 504: applied, not archived yet\n"
            "  --archive-from WHO        leader (default) or follower: a caught-up follower\n"
            "                            (the lowest-id voter not leading) archives instead\n"
            "                            of the leader, which takes over while that\n"
            "                            follower is down or behind; not with --archive-sync\n"
            "  --backup-config FILE      scheduled backups, retention and restore drills per\n"
            "                            repository (JSON; docs/OPERATIONS.md, \"Scheduled\n"
            "                            backups and restore drills\"); SIGHUP reads it again\n"
            "  --s3-endpoint URL         an S3-compatible endpoint for s3:// repositories\n"
            "                            (MinIO, R2, ...; default $AWS_ENDPOINT_URL_S3)\n"
            "  --s3-region REGION        their region (default $AWS_REGION)\n"
            "  --max-body BYTES          largest accepted request body but a load's\n"
            "                            (default 67108864); larger ones get 413\n"
            "  --max-load-body BYTES     largest database file POST /db/load takes\n"
            "                            (default 1099511627776, 1 TiB); it streams to disk\n"
            "  --snapshot-threshold N    log entries between Raft snapshots (default 16384)\n"
            "  --snapshot-trailing N     log entries kept after a snapshot (default 8192)\n"
            "  --write-step-limit N      virtual-machine steps one statement of a write may\n"
            "                            take (default 100000000: 1 to 4 s of work); the\n"
            "                            leader's value holds on every node\n"
            "  --max-value-size BYTES    longest string or blob a statement may make or\n"
            "                            read (default 67108864)\n"
            "  --query-timeout DURATION  how long a read may run (default 30s; e.g. 500ms,\n"
            "                            2m); a request may set its own with ?db_timeout=\n"
            "  --max-result-size BYTES   the most a read's results may take in memory\n"
            "                            (default 268435456)\n"
            "  --max-temp-size BYTES     the most temporary file space one statement may\n"
            "                            take to sort, group or build an index (default\n"
            "                            1073741824); the leader's value holds for writes\n"
            "  --max-write-growth BYTES  the most one write request may grow the database\n"
            "                            (default 1073741824; 0: no bound); the leader's\n"
            "                            value holds on every node\n"
            "  --max-request-memory BYTES  the most memory requests may hold together:\n"
            "                            bodies being received, answers not yet read\n"
            "                            (default a quarter of the machine's memory)\n"
            "  --no-page-checksums       create a new database without a checksum in every\n"
            "                            page (an existing one keeps what it has)\n"
            "  --join ADDRS              join a cluster: comma-separated HTTP addresses of\n"
            "                            members (host:port or http://host:port); any member\n"
            "                            will do, the leader adds this node (kept in\n"
            "                            DIR/node.json: a restarted node rejoins by itself)\n"
            "  --bootstrap-expect N      form a new N-node cluster with the nodes --join\n"
            "                            names, all started together (same flags on each)\n"
            "  -q, --quiet               log only errors\n"
            "  -h, --help                show this help and exit\n"
            "  -V, --version             show the version and exit\n"
            "\n"
            "Signals: SIGTERM and SIGINT stop the node cleanly within a few seconds,\n"
            "interrupting what it runs (an interrupted write is applied again at the next\n"
            "start); a second SIGTERM or SIGINT exits at once. SIGHUP reloads --backup-config.\n"
            "Exit status: 0 after a clean stop, 1 when the node cannot start, 2 on bad usage.\n");
}

static int quiet;
static atomic_bool opened;
static volatile int stopDuringStart;

/* While cairn_open runs (a node joining a cluster can wait for its peers for minutes),
 * SIGTERM and SIGINT still stop the process: cairn_open gives up (cairn_config.stop)
 * and main closes what was opened. */
static void *startWatch(void *arg)
{
    const sigset_t *sigs = arg;
    struct timespec tick = {0, 100 * 1000 * 1000};
    while (!atomic_load(&opened)) {
        int sig = sigtimedwait(sigs, NULL, &tick);
        if (sig > 0 && !atomic_load(&opened)) {
            fprintf(stderr, "cairnd: %s while starting: stopping\n",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stopDuringStart = sig;
            return NULL;
        }
        if (sig > 0) {
            kill(getpid(), sig); /* the node is open now: main's sigwait takes it */
        }
    }
    return NULL;
}

/* While the node stops, a second SIGTERM or SIGINT ends the process at once: the data
 * are safe in the Raft log and the database, which the next start checks and replays,
 * as after a crash. */
static void *secondSignal(void *arg)
{
    const sigset_t *sigs = arg;
    int sig;
    while (sigwait(sigs, &sig) != 0) {
    }
    fprintf(stderr, "cairnd: second %s while stopping: exiting at once\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    _exit(1);
    return NULL;
}

static void logLine(void *data, const char *line)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    (void)data;
    if (quiet) {
        return;
    }
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", localtime_r(&t, &tm));
    fprintf(stderr, "%s cairnd: %s\n", ts, line);
}

static int parseUnsigned(const char *flag, const char *v, unsigned long long max,
                         unsigned long long *out)
{
    char *end;
    errno = 0;
    if (v[0] == '-' || v[0] == '\0') {
        goto bad;
    }
    *out = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || *out == 0 || *out > max) {
        goto bad;
    }
    return 0;
bad:
    fprintf(stderr, "cairnd: %s needs a positive integer up to %llu, got \"%s\"\n", flag, max,
            v);
    return -1;
}

/* A server's open files: HTTP connections, Raft's, the log's segments, SQLite's files,
 * backups being written and read. The soft limit is often 1024 where the hard one is far
 * higher; the HTTP server keeps part of whatever limit there is for the rest (http.c
 * connectionLimit). Raised as far as the hard limit allows, up to FILE_LIMIT. */
#define FILE_LIMIT 65536

static void raiseFileLimit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= FILE_LIMIT ||
        rl.rlim_cur == RLIM_INFINITY) {
        return;
    }
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > FILE_LIMIT ? FILE_LIMIT
                                                                           : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl); /* else the limit stays as it was */
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"http-addr", required_argument, NULL, 'H'},
        {"raft-addr", required_argument, NULL, 'r'},
        {"node-id", required_argument, NULL, 'i'},
        {"backup-dir", required_argument, NULL, 'b'},
        {"restore-from", required_argument, NULL, 'F'},
        {"repo", required_argument, NULL, 'p'},
        {"s3-endpoint", required_argument, NULL, 'E'},
        {"backup-config", required_argument, NULL, 'C'},
        {"archive", no_argument, NULL, 'A'},
        {"archive-to", required_argument, NULL, 'a'},
        {"archive-interval", required_argument, NULL, 'I'},
        {"archive-segment-bytes", required_argument, NULL, 'S'},
        {"archive-queue-bytes", required_argument, NULL, 'Q'},
        {"archive-sync", no_argument, NULL, 'Y'},
        {"archive-sync-timeout", required_argument, NULL, 'y'},
        {"archive-from", required_argument, NULL, 1801}, /* archive.c (issue 18) */
        {"backup-compression", required_argument, NULL, 1802},
        {"s3-region", required_argument, NULL, 'G'},
        {"max-body", required_argument, NULL, 'm'},
        {"max-load-body", required_argument, NULL, 'M'},
        {"snapshot-threshold", required_argument, NULL, 's'},
        {"snapshot-trailing", required_argument, NULL, 't'},
        {"join", required_argument, NULL, 'j'},
        {"bootstrap-expect", required_argument, NULL, 'e'},
        {"write-step-limit", required_argument, NULL, 'W'},
        {"max-value-size", required_argument, NULL, 'L'},
        {"query-timeout", required_argument, NULL, 'T'},
        {"no-page-checksums", no_argument, NULL, 'P'},
        {"max-result-size", required_argument, NULL, 'R'},
        {"max-temp-size", required_argument, NULL, 1803},
        {"max-write-growth", required_argument, NULL, 1804},
        {"max-request-memory", required_argument, NULL, 1805},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cairn_config cfg;
    const char *repos[REPOSET_MAX + 1] = {NULL};
    unsigned n_repos = 0;
    unsigned long long v;
    static sigset_t sigs; /* static: the second-signal thread reads it after main returns */
    cairn *db = NULL;
    const char *backup_config = NULL; /* --backup-config */
    struct housekeeping *hk = NULL;
    int sig;
    int rv;
    int c;

    cairn_config_init(&cfg);
    cfg.data_dir = "./data";
    cfg.http_addr = "127.0.0.1:4001";
    cfg.raft_addr = "127.0.0.1:4002";
    cfg.log = logLine;
    while ((c = getopt_long(argc, argv, "qhV", opts, NULL)) != -1) {
        switch (c) {
            case 'd':
                cfg.data_dir = optarg;
                break;
            case 'H':
                cfg.http_addr = optarg;
                break;
            case 'r':
                cfg.raft_addr = optarg;
                break;
            case 'b':
                cfg.backup_dir = optarg;
                break;
            case 'F':
                cfg.restore_from = optarg;
                break;
            case 'p':
                if (n_repos == REPOSET_MAX) {
                    fprintf(stderr, "cairnd: --repo: at most %d repositories\n", REPOSET_MAX);
                    return 2;
                }
                repos[n_repos++] = optarg;
                cfg.repositories = repos;
                break;
            case 1802:
                cfg.backup_compression = optarg; /* checked by cairn_open */
                break;
            case 1801: /* --archive-from (archive.c, issue 18) */
                if (strcmp(optarg, "leader") == 0) {
                    cfg.archive_from = 0;
                } else if (strcmp(optarg, "follower") == 0) {
                    cfg.archive_from = 1;
                } else {
                    fprintf(stderr, "cairnd: --archive-from needs leader or follower, got \"%s\"\n",
                            optarg);
                    return 2;
                }
                break;
            case 'A':
                cfg.archive = 1;
                break;
            case 'a':
                cfg.archive = 1;
                cfg.archive_to = optarg;
                break;
            case 'I':
                if (policyParseDuration(optarg, &cfg.archive_interval_ms) != 0) {
                    fprintf(stderr, "cairnd: --archive-interval needs a duration from 1ms to 24h "
                                    "(e.g. 1s, 200ms), got \"%s\"\n", optarg);
                    return 2;
                }
                break;
            case 'Y':
                cfg.archive_sync = 1;
                break;
            case 'y':
                if (policyParseDuration(optarg, &cfg.archive_sync_timeout_ms) != 0) {
                    fprintf(stderr, "cairnd: --archive-sync-timeout needs a duration from 1ms to "
                                    "24h (e.g. 10s), got \"%s\"\n", optarg);
                    return 2;
                }
                break;
            case 'S':
                if (parseUnsigned("--archive-segment-bytes", optarg, 1ULL << 29, &v) != 0) {
                    return 2;
                }
                cfg.archive_segment_bytes = v;
                break;
            case 'Q':
                if (parseUnsigned("--archive-queue-bytes", optarg, 1ULL << 40, &v) != 0) {
                    return 2;
                }
                cfg.archive_queue_bytes = v;
                break;
            case 'C':
                backup_config = optarg;
                break;
            case 'E':
                /* The S3 client reads these as every S3 tool does (src/backup/s3.h). */
                setenv("AWS_ENDPOINT_URL_S3", optarg, 1);
                break;
            case 'G':
                setenv("AWS_REGION", optarg, 1);
                break;
            case 'i':
                if (parseUnsigned("--node-id", optarg, (1ULL << 62), &v) != 0) {
                    return 2;
                }
                cfg.node_id = v;
                break;
            case 'm':
                if (parseUnsigned("--max-body", optarg, (1ULL << 40), &v) != 0) {
                    return 2;
                }
                cfg.max_body = (size_t)v;
                break;
            case 'M':
                if (parseUnsigned("--max-load-body", optarg, (1ULL << 60), &v) != 0) {
                    return 2;
                }
                cfg.max_load_body = v;
                break;
            case 's':
                if (parseUnsigned("--snapshot-threshold", optarg, UINT_MAX, &v) != 0) {
                    return 2;
                }
                cfg.snapshot_threshold = (unsigned)v;
                break;
            case 't':
                if (parseUnsigned("--snapshot-trailing", optarg, UINT_MAX, &v) != 0) {
                    return 2;
                }
                cfg.snapshot_trailing = (unsigned)v;
                break;
            case 'j':
                cfg.join = optarg;
                break;
            case 'e':
                if (parseUnsigned("--bootstrap-expect", optarg, 16, &v) != 0) {
                    return 2;
                }
                cfg.bootstrap_expect = (unsigned)v;
                break;
            case 'W':
                if (parseUnsigned("--write-step-limit", optarg, (1ULL << 62), &v) != 0) {
                    return 2;
                }
                cfg.write_step_limit = v;
                break;
            case 'L':
                if (parseUnsigned("--max-value-size", optarg, POLICY_MAX_LENGTH_CAP, &v) != 0) {
                    return 2;
                }
                cfg.max_value_size = (uint32_t)v;
                break;
            case 'T':
                if (policyParseDuration(optarg, &cfg.query_timeout_ms) != 0) {
                    fprintf(stderr, "cairnd: --query-timeout needs a duration from 1ms to 24h "
                                    "(e.g. 30s, 500ms, 2m), got \"%s\"\n", optarg);
                    return 2;
                }
                break;
            case 'P':
                cfg.no_page_checksums = 1;
                break;
            case 'R':
                if (parseUnsigned("--max-result-size", optarg, (1ULL << 40), &v) != 0) {
                    return 2;
                }
                cfg.max_result_size = v;
                break;
            case 1803:
                if (parseUnsigned("--max-temp-size", optarg, POLICY_MAX_TEMP_CAP, &v) != 0) {
                    return 2;
                }
                cfg.max_temp_size = v;
                break;
            case 1804:
                if (strcmp(optarg, "0") == 0) {
                    cfg.max_write_growth = CAIRN_NO_GROWTH_BOUND;
                    break;
                }
                if (parseUnsigned("--max-write-growth", optarg, POLICY_MAX_GROWTH_CAP, &v) != 0) {
                    return 2;
                }
                cfg.max_write_growth = v;
                break;
            case 1805:
                if (parseUnsigned("--max-request-memory", optarg, (1ULL << 50), &v) != 0) {
                    return 2;
                }
                cfg.max_request_memory = v;
                break;
            case 'q':
                quiet = 1;
                break;
            case 'h':
                usage(stdout);
                return 0;
            case 'V':
                printf("cairnd %s\n", CAIRN_VERSION);
                return 0;
            default:
                usage(stderr);
                return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cairnd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    /* --backup-config: a configuration that is not valid stops the start before the
     * node does anything. */
    if (backup_config != NULL) {
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (housekeepingCheck(&cfg, backup_config, errmsg) != 0) {
            fprintf(stderr, "cairnd: cannot start: %s\n", errmsg);
            return 1;
        }
    }

    /* Block the stop signals in every thread the library starts; main waits for them.
     * SIGHUP too: main takes it (reload --backup-config), never a library thread. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    {
        sigset_t hup;
        sigemptyset(&hup);
        sigaddset(&hup, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &hup, NULL);
    }
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raiseFileLimit();

    pthread_t watch;
    bool watching = pthread_create(&watch, NULL, startWatch, &sigs) == 0;
    cfg.stop = &stopDuringStart;
    rv = cairn_open(&cfg, &db);
    atomic_store(&opened, true);
    if (watching) {
        pthread_join(watch, NULL);
    }
    if (stopDuringStart) {
        /* Stopped while waiting for the cluster: a clean stop of what had started. */
        cairn_close(db);
        logLine(NULL, "stopped cleanly");
        return 0;
    }
    if (rv != 0) {
        fprintf(stderr, "cairnd: cannot start: %s\n",
                db ? cairn_errmsg(db) : cairn_strerror(rv));
        cairn_close(db);
        return 1;
    }
    if (backup_config != NULL) {
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (housekeepingStart(db, backup_config, &hk, errmsg) != 0) {
            fprintf(stderr, "cairnd: cannot start: %s\n", errmsg);
            cairn_close(db);
            return 1;
        }
    }
    if (!quiet) { /* -q: errors only */
        fprintf(stderr,
                "cairnd: node ready: HTTP API on http://%s, Raft on %s, data in %s\n"
                "cairnd: try  curl -s -XPOST 'http://%s/db/execute' -H 'Content-Type: "
                "application/json' -d '[\"CREATE TABLE t(x)\"]'\n",
                cairn_http_addr(db), cfg.raft_addr, cfg.data_dir, cairn_http_addr(db));
    }

    {
        sigset_t waitfor = sigs;
        sigaddset(&waitfor, SIGHUP);
        for (;;) {
            if (sigwait(&waitfor, &sig) != 0) {
                continue;
            }
            if (sig != SIGHUP) {
                break;
            }
            if (hk == NULL) {
                logLine(NULL, "SIGHUP: no --backup-config to reload");
            } else {
                char errmsg[CAIRN_ERRMSG_SIZE];
                if (housekeepingReload(hk, errmsg) != 0) {
                    fprintf(stderr, "cairnd: SIGHUP: %s\n", errmsg); /* an error: even with -q */
                }
            }
        }
    }
    logLine(NULL, sig == SIGTERM ? "SIGTERM: stopping" : "SIGINT: stopping");
    {
        pthread_t hurry;
        if (pthread_create(&hurry, NULL, secondSignal, &sigs) == 0) {
            pthread_detach(hurry);
        }
    }
    repoStopTransfers(true); /* a scheduled backup into a stalled bucket ends now */
    housekeepingStop(hk);    /* before the node goes: a scheduled backup uses it */
    repoStopTransfers(false);
    cairn_close(db);
    housekeepingFree(hk); /* after: HTTP threads read its state until cairn_close */
    logLine(NULL, "stopped cleanly");
    return 0;
}
