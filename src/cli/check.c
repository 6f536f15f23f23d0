/* `cairn check` and `cairn log verify`: offline checks of a data directory.
 *
 * Both read a data directory directly, with no server: `log verify` runs the Raft log
 * verifier (raftlog.h) on DATA/raft; `check` goes through everything a node keeps (the
 * lock, node.json, the database with PRAGMA integrity_check, the Raft log, the
 * snapshots in DATA/snapshots, and with --repo a backup repository, whose chains the
 * backup engine verifies) and prints one line per item. `check --host URL` instead asks
 * a running cairnd for GET /status. Nothing here writes to the data directory, except
 * that verifying a backup chain records its outcome in `<id>.verified` sidecars beside
 * the backups, as `cairn backup verify` does.
 *
 * Exit status: 0 when everything checked is healthy, 1 when anything is damaged (or
 * could not be checked), 2 on bad usage. --json prints one JSON object instead of the
 * lines. Main thread only; the engines run synchronously on it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "backup.h"
#include "buf.h"
#include "cairn.h"
#include "cli.h"
#include "error.h"
#include "http.h"
#include "lib.h"
#include "pagesum.h"
#include "progress.h"
#include "raftlog.h"

#define MAX_OPTIONS 8
#define VALUE(opts, values, name) ((values)[cliOptionIndex((opts), (name))])
/* integrity_check messages kept; SQLite stops at 100 by default anyway. */
#define MAX_INTEGRITY_MESSAGES 20

static const cliOption checkOptions[] = {
    {"repo", 0, "DIR|URL", "also verify every backup and chain of the repository (DIR, file:///DIR, s3://BUCKET/PREFIX)"},
    {"host", 0, "URL", "instead of a data directory, ask the running cairnd at URL"},
    {"json", 0, NULL, "print one JSON object (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption logVerifyOptions[] = {
    {"json", 0, NULL, "print one JSON object (no progress bar)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliOption logOptions[] = {
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

/* ---- one run ------------------------------------------------------------------------- */

typedef struct checkRun {
    const char *dataDir;
    int json;
    int problems;  /* items that are not healthy */
    json_t *items; /* --json: the items, in order */
    cliProgress progress;
} checkRun;

static void onProgress(void *arg, uint64_t done, uint64_t total)
{
    checkRun *r = arg;
    cliProgressUpdate(&r->progress, done, total);
}

static void startProgress(checkRun *r, const char *label)
{
    cliProgressClear(&r->progress);
    cliProgressInit(&r->progress, label, !r->json && cliProgressWanted());
}

/* Records one item: a line "STATUS  FILE  MESSAGE", or an object of the JSON "items"
 * {check, status, ok, file, message}. OK, RUNNING and WARNING are healthy; anything else
 * counts as a problem. */
static void item(checkRun *r, const char *check, const char *status, const char *file,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void item(checkRun *r, const char *check, const char *status, const char *file,
                 const char *fmt, ...)
{
    char message[2048];
    va_list ap;
    int ok = strcmp(status, "OK") == 0 || strcmp(status, "RUNNING") == 0 ||
             strcmp(status, "WARNING") == 0;

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (!ok) {
        r->problems++;
    }
    if (r->json) {
        json_array_append_new(r->items,
                              json_pack("{s:s, s:s, s:b, s:s, s:s}", "check", check, "status",
                                        status, "ok", ok, "file", file, "message", message));
        return;
    }
    cliProgressClear(&r->progress);
    printf("%-8s %-36s %s\n", status, file, message);
    fflush(stdout);
}

/* A path shown relative to the data directory when it is inside it. */
static const char *shown(const checkRun *r, const char *path)
{
    size_t n = strlen(r->dataDir);
    while (n > 1 && r->dataDir[n - 1] == '/') {
        n--;
    }
    if (strncmp(path, r->dataDir, n) == 0 && path[n] == '/') {
        return path + n + 1;
    }
    return path;
}

static int isDir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the Raft log -------------------------------------------------------------------- */

/* Where the Raft log of dataDir is: dataDir/raft, or dataDir itself when it is a raft
 * directory (it holds libraft's metadata files). *prefix is how its files are shown. */
static void raftDirOf(const char *dataDir, char *out, size_t size, const char **prefix)
{
    char meta[PATH_MAX];
    snprintf(out, size, "%s/raft", dataDir);
    *prefix = "raft/";
    if (isDir(out)) {
        return;
    }
    snprintf(meta, sizeof meta, "%s/metadata1", dataDir);
    if (exists(meta)) {
        snprintf(out, size, "%s", dataDir);
        *prefix = "";
        return;
    }
    snprintf(meta, sizeof meta, "%s/metadata2", dataDir);
    if (exists(meta)) {
        snprintf(out, size, "%s", dataDir);
        *prefix = "";
    }
}

/* Runs the verifier with a progress bar. Returns its code; *report is filled. */
static int verifyLog(checkRun *r, const char *raftDir, struct raftlog_report *report, char *errmsg)
{
    int rc;
    startProgress(r, "raft log");
    rc = raftlogVerify(raftDir, onProgress, r, report, errmsg);
    cliProgressClear(&r->progress);
    return rc;
}

/* The report's JSON as a jansson object (new reference; NULL when out of memory). */
static json_t *reportJson(const struct raftlog_report *report, const char *prefix)
{
    struct buf b;
    json_error_t jerr;
    json_t *doc = NULL;
    bufInit(&b);
    raftlogReportJson(report, prefix, &b);
    if (!b.oom) {
        doc = json_loadb(b.p, b.len, 0, &jerr);
    }
    bufFree(&b);
    return doc;
}

static void describeLog(const struct raftlog_report *rep, char *out, size_t size)
{
    char bytes[32];
    int n;
    cliFormatBytes(rep->bytes_checked, bytes, sizeof bytes);
    if (rep->entries > 0) {
        n = snprintf(out, size, "%llu entries (indexes %llu to %llu)",
                     (unsigned long long)rep->entries, (unsigned long long)rep->first_index,
                     (unsigned long long)rep->last_index);
    } else {
        n = snprintf(out, size, "no entries");
    }
    if (n < 0 || (size_t)n >= size) {
        return;
    }
    n += snprintf(out + n, size - (size_t)n, ", %u file%s, %s read, term %llu", rep->files_checked,
                  rep->files_checked == 1 ? "" : "s", bytes, (unsigned long long)rep->term);
    if (rep->snapshot_index != 0 && n > 0 && (size_t)n < size) {
        snprintf(out + n, size - (size_t)n, ", snapshot at index %llu",
                 (unsigned long long)rep->snapshot_index);
    }
}

/* ---- cairn log verify ---------------------------------------------------------------- */

static int runLogVerify(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    char raftDir[PATH_MAX];
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char summary[256], took[32];
    struct raftlog_report *report;
    const char *prefix;
    checkRun r = {0};
    int npos, code, rc;
    int64_t start;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    if (npos != 1) {
        return cliUsageError(cmd,
                          npos == 0 ? "no data directory given" : "one data directory, please");
    }
    r.dataDir = argv[1];
    r.json = VALUE(logVerifyOptions, values, "json") != NULL;
    raftDirOf(r.dataDir, raftDir, sizeof raftDir, &prefix);
    report = calloc(1, sizeof *report);
    if (report == NULL) {
        fprintf(stderr, "cairn: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    start = cliNowNs();
    rc = verifyLog(&r, raftDir, report, errmsg);
    if (rc != 0 && rc != CAIRN_ECORRUPT) {
        /* Not even a walk: no directory, say. */
        if (r.json) {
            json_t *doc =
                json_pack("{s:b, s:s, s:s}", "ok", 0, "raft_dir", raftDir, "error", errmsg);
            char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
            if (text != NULL) {
                printf("%s\n", text);
            }
            free(text);
            json_decref(doc);
        }
        fprintf(stderr, "cairn: %s\n", errmsg);
        free(report);
        return CLI_EXIT_FAIL;
    }
    cliFormatDuration((cliNowNs() - start) / 1000000, took, sizeof took);
    if (r.json) {
        json_t *doc = reportJson(report, prefix);
        char *text = NULL;
        if (doc != NULL) {
            json_object_set_new(doc, "raft_dir", json_string(raftDir));
            text = json_dumps(doc, JSON_COMPACT);
        }
        if (text == NULL) {
            fprintf(stderr, "cairn: out of memory\n");
            json_decref(doc);
            free(report);
            return CLI_EXIT_FAIL;
        }
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    } else {
        describeLog(report, summary, sizeof summary);
        for (size_t i = 0; i < report->n_problems; i++) {
            const struct raftlog_problem *p = &report->problems[i];
            printf("%s%s: %s\n", prefix, p->file, p->message);
        }
        if (report->problems_omitted > 0) {
            printf("(%zu more problems not shown)\n", report->problems_omitted);
        }
        if (report->n_problems == 0) {
            printf("raft log in %s is sound: %s (%s)\n", raftDir, summary, took);
        }
    }
    code = CLI_EXIT_OK;
    if (report->n_problems > 0) {
        const struct raftlog_problem *p = &report->problems[0];
        fflush(stdout);
        fprintf(stderr, "cairn: the raft log in %s is damaged; first bad file: %s%s\n", raftDir,
                prefix, p->file);
        code = CLI_EXIT_FAIL;
    }
    free(report);
    return code;
}

static const cliCommand logVerifyCommand = {
    .name = "log verify",
    .synopsis = "[--json] DATA_DIR",
    .summary = "Check every file of a data directory's Raft log, offline.",
    .description =
        "Reads libraft's files in DATA_DIR/raft (or DATA_DIR itself when it is a raft\n"
        "directory): metadata1 and metadata2, every closed and open segment (each batch's\n"
        "header and data CRC32, the entry types, each closed segment's entry count against\n"
        "its name, index continuity from the newest snapshot or index 1 to the last\n"
        "entry), and the snapshot .meta and .snapshot files. Nothing is written. Run it on\n"
        "a stopped node; on a running one the newest open segment may be mid-write.\n"
        "\n"
        "Prints one line per problem, \"raft/FILE: batch at offset N: what\", the first bad\n"
        "file first (in the order libraft loads them); a torn final batch in the newest\n"
        "open segment (a crash during a write) is reported as such. --json prints one\n"
        "object: ok, files_checked, bytes_checked, entries, first_index, last_index,\n"
        "closed_segments, open_segments, snapshots, term, voted_for, snapshot, problems\n"
        "[{file, offset, kind (\"damaged\" or \"torn_tail\"), message}], problems_omitted.\n"
        "Exit status: 0 when the log is healthy, 1 when it is damaged or cannot be read,\n"
        "2 on bad usage.\n",
    .options = logVerifyOptions,
    .run = runLogVerify,
};

static const cliCommand *const logSubcommands[] = {&logVerifyCommand, NULL};

static int runLog(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    return cliRunSubcommand(cmd, env, argc, argv);
}

const cliCommand cliLogCommand = {
    .name = "log",
    .synopsis = "SUBCOMMAND [options] DATA_DIR",
    .summary = "Check a data directory's Raft log (log verify), offline.",
    .description = "subcommands:\n"
                   "  verify   check every file of the Raft log in DATA_DIR/raft\n"
                   "Run \"cairn log verify --help\" for its options.\n",
    .options = logOptions,
    .run = runLog,
    .subcommands = logSubcommands,
};

/* ---- cairn check: the items ---------------------------------------------------------- */

/* Whether another process has the file (dev, ino) open, as /proc/PID/fd says: 1 when
 * it has, 0 when not, -1 when this process may not look. */
static int hasOpen(long pid, dev_t dev, ino_t ino)
{
    char fds[64];
    struct dirent *e;
    DIR *d;
    int found = 0;
    snprintf(fds, sizeof fds, "/proc/%ld/fd", pid);
    if ((d = opendir(fds)) == NULL) {
        return errno == ENOENT ? 0 : -1;
    }
    while (found == 0 && (e = readdir(d)) != NULL) {
        struct stat st;
        found = e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
                st.st_dev == dev && st.st_ino == ino;
    }
    closedir(d);
    return found;
}

/* Whether another process holds an flock on path, read from /proc/locks, without taking
 * one: a shared lock taken to find out, for an instant, made a node starting at that
 * instant refuse to start ("in use by another cairn process"), and `cairn check` is to
 * be run beside nodes. /proc/locks names a file by its file system's device and inode,
 * which is not always the device stat says (btrfs): a lock on the same inode number is
 * the holder's when that process has the file open. 1 when held, 0 when not, -1 when
 * /proc/locks cannot say (not Linux), and the caller probes with flock. */
static int flockHeld(const char *path)
{
    char line[256];
    struct stat st;
    FILE *f;
    int held = 0;
    if (stat(path, &st) != 0 || (f = fopen("/proc/locks", "re")) == NULL) {
        return -1;
    }
    while (held == 0 && fgets(line, sizeof line, f) != NULL) {
        char kind[16], dev[64];
        long pid;
        unsigned long long ino;
        char *ino_at;
        /* "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; a waiter's line has "->". */
        if (strstr(line, "->") != NULL ||
            sscanf(line, "%*s %15s %*s %*s %ld %63s", kind, &pid, dev) != 3 ||
            strcmp(kind, "FLOCK") != 0 || pid == (long)getpid() ||
            (ino_at = strrchr(dev, ':')) == NULL) {
            continue;
        }
        ino = strtoull(ino_at + 1, NULL, 10);
        /* A holder in a pid namespace this one cannot see shows as pid 0. */
        held = ino == (unsigned long long)st.st_ino &&
               (pid <= 0 || hasOpen(pid, st.st_dev, st.st_ino) != 0);
    }
    fclose(f);
    return held;
}

/* Is another process holding path's flock? /proc/locks, else a shared lock tried. */
static int lockedBySomeone(const char *path, int fd, int *err)
{
    int held = flockHeld(path);
    *err = 0;
    if (held >= 0) {
        return held;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 0;
    }
    if (errno == EWOULDBLOCK) {
        return 1;
    }
    *err = errno;
    return 0;
}

/* Does a live process hold the directory's lock (lock.h), whose LOCK file was removed?
 * Returns 1 when so, after reporting it; *pidOut gets the pid the RUNNING mark holds. */
static int checkDirLock(checkRun *r, long *pidOut)
{
    char mark[PATH_MAX], pid[32];
    ssize_t n;
    int fd = open(r->dataDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    {
        int err;
        if (!lockedBySomeone(r->dataDir, fd, &err)) {
            close(fd);
            return 0;
        }
    }
    close(fd);
    snprintf(mark, sizeof mark, "%s/RUNNING", r->dataDir);
    fd = open(mark, O_RDONLY | O_CLOEXEC);
    n = fd >= 0 ? pread(fd, pid, sizeof pid - 1, 0) : -1;
    pid[n > 0 ? n : 0] = '\0';
    if (fd >= 0) {
        close(fd);
    }
    *pidOut = strtol(pid, NULL, 10);
    item(r, "lock", "RUNNING", "LOCK",
         "held by pid %ld, whose lock file was removed while it runs: the node is running; "
         "the checks below only read, and may see writes in progress",
         *pidOut);
    return 1;
}

/* Is a live process holding DATA/LOCK (lockedBySomeone)? Returns 1 when held. */
static int checkLock(checkRun *r, long *pidOut)
{
    char path[PATH_MAX], pid[32];
    ssize_t n;
    int fd, err, held = 0;

    *pidOut = 0;
    snprintf(path, sizeof path, "%s/LOCK", r->dataDir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && checkDirLock(r, pidOut)) {
        return 1;
    }
    if (fd < 0) {
        if (errno == ENOENT) {
            item(r, "lock", "OK", "LOCK", "no lock file: no node has run here");
        } else {
            item(r, "lock", "ERROR", "LOCK", "cannot open: %s", strerror(errno));
        }
        return 0;
    }
    n = pread(fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    *pidOut = strtol(pid, NULL, 10);
    if ((held = lockedBySomeone(path, fd, &err)) != 0 || err != 0) {
        if (held) {
            item(r, "lock", "RUNNING", "LOCK",
                 "held by pid %ld: the node is running; the checks below only read, and "
                 "may see writes in progress",
                 *pidOut);
        } else {
            item(r, "lock", "ERROR", "LOCK", "cannot test the lock: %s", strerror(err));
        }
    } else {
        char mark[PATH_MAX];
        snprintf(mark, sizeof mark, "%s/RUNNING", r->dataDir);
        if (checkDirLock(r, pidOut)) {
            held = 1; /* a new LOCK file, made after the holder's was removed */
        } else if (exists(mark)) {
            item(r, "lock", "WARNING", "RUNNING",
                 "the last node here (pid %ld) did not stop cleanly (killed, crashed or power "
                 "lost): its next start verifies the Raft log and the database and rebuilds a "
                 "damaged database from the snapshot and the log by itself",
                 *pidOut);
        } else if (*pidOut > 0) {
            item(r, "lock", "OK", "LOCK", "not held (the last node here was pid %ld)", *pidOut);
        } else {
            item(r, "lock", "OK", "LOCK", "not held");
        }
    }
    close(fd);
    return held;
}

/* DATA/repair-undo.json (heal.c): a repair cut off after it moved files into corrupt/;
 * what the checks below see is the directory as the repair left it. */
static void checkRepairJournal(checkRun *r, int running)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/repair-undo.json", r->dataDir);
    if (!running && exists(path)) {
        item(r, "repair", "WARNING", "repair-undo.json",
             "a repair was cut off (killed or crashed) after it moved files into corrupt/: "
             "the next start or `cairn repair` puts them back; the checks below see the "
             "directory as the repair left it");
    }
}

/* DATA/cluster-id (cluster.h): absent in a directory of a cluster formed before ids;
 * read as cairnd reads it (libReadIdFile). */
static void checkClusterId(checkRun *r)
{
    char path[PATH_MAX], hex[33], why[CAIRN_ERRMSG_SIZE];
    unsigned char id[16];
    bool kept;
    int rv;

    snprintf(path, sizeof path, "%s/cluster-id", r->dataDir);
    rv = libReadIdFile(path, id, sizeof id, &kept, why);
    if (rv == CAIRN_ECORRUPT) {
        item(r, "cluster", "DAMAGED", "cluster-id",
             "is not 32 hex digits and a newline: the node will not start (write the "
             "cluster's id there again: another node's GET /status node.cluster_id)");
    } else if (rv != 0) {
        item(r, "cluster", "ERROR", "cluster-id", "cannot be read: %s", why);
    } else if (!kept) {
        item(r, "cluster", "OK", "cluster-id", "none: a cluster formed before cluster ids");
    } else {
        libHexEncode(id, sizeof id, hex);
        item(r, "cluster", "OK", "cluster-id", "cluster %s", hex);
    }
}

static void checkNodeJson(checkRun *r)
{
    char path[PATH_MAX];
    json_error_t jerr;
    json_t *doc;
    json_t *id;

    snprintf(path, sizeof path, "%s/node.json", r->dataDir);
    if (!exists(path)) {
        item(r, "node", "MISSING", "node.json", "not there: the node's id and addresses are lost");
        return;
    }
    doc = json_load_file(path, 0, &jerr);
    if (doc == NULL) {
        item(r, "node", "DAMAGED", "node.json", "does not parse: %s (line %d)", jerr.text,
             jerr.line);
        return;
    }
    id = json_object_get(doc, "node_id");
    if (!json_is_object(doc) || !json_is_integer(id) || json_integer_value(id) <= 0) {
        item(r, "node", "DAMAGED", "node.json", "has no valid \"node_id\"");
    } else {
        const char *raft = json_string_value(json_object_get(doc, "raft_addr"));
        item(r, "node", "OK", "node.json", "node %lld%s%s", (long long)json_integer_value(id),
             raft != NULL ? ", raft address " : "", raft != NULL ? raft : "");
    }
    json_decref(doc);
    checkClusterId(r);
}

/* The index of the last log entry the database applied (store.c keeps it in
 * _cairn_meta); -1 when it cannot be read. */
static int64_t appliedIndex(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM _cairn_meta WHERE key = 'applied_index'", -1,
                           &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        v = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return v;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* SQLite's WAL checksum over n bytes (a multiple of 8), continuing from s[2]; words
 * big-endian when big, else little-endian (the WAL header's magic says which). */
static void walChecksum(const unsigned char *p, size_t n, int big, uint32_t s[2])
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint32_t x0, x1;
        if (big) {
            x0 = be32(p + i);
            x1 = be32(p + i + 4);
        } else {
            x0 = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 |
                 (uint32_t)p[i + 3] << 24;
            x1 = (uint32_t)p[i + 4] | (uint32_t)p[i + 5] << 8 | (uint32_t)p[i + 6] << 16 |
                 (uint32_t)p[i + 7] << 24;
        }
        s[0] += x0 + s[1];
        s[1] += x1 + s[0];
    }
}

/* db.sqlite-wal of a stopped node: the header and every frame's salts and checksums.
 * SQLite stops reading a WAL at the first frame that does not check out; that is what
 * a crash leaves (a torn last write, nothing valid after it). A frame of the current
 * generation found after a bad one means damage: SQLite ignores those committed
 * frames (the node replays them from its log). One frame in memory at a time. */
static void checkWal(checkRun *r, int running)
{
    char path[PATH_MAX];
    unsigned char hdr[32];
    unsigned char *frame = NULL;
    uint32_t page_size, salt1, salt2, s[2] = {0, 0};
    uint64_t frames = 0, bad_at = 0, later_valid = 0;
    off_t off;
    struct stat st;
    int big, fd;

    snprintf(path, sizeof path, "%s/db.sqlite-wal", r->dataDir);
    if (running || stat(path, &st) != 0 || st.st_size == 0) {
        return; /* no WAL, an empty one, or one the running node owns */
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        item(r, "wal", "DAMAGED", "db.sqlite-wal", "shorter than its 32-byte header (%lld bytes)",
             (long long)st.st_size);
        goto out;
    }
    big = be32(hdr) == 0x377f0683;
    page_size = be32(hdr + 8);
    if ((be32(hdr) & 0xfffffffe) != 0x377f0682 || page_size < 512 || page_size > 65536 ||
        (page_size & (page_size - 1)) != 0) {
        item(r, "wal", "DAMAGED", "db.sqlite-wal", "the header is not a SQLite WAL header "
             "(SQLite ignores the whole file; the node replays the writes from its log)");
        goto out;
    }
    walChecksum(hdr, 24, big, s);
    if (s[0] != be32(hdr + 24) || s[1] != be32(hdr + 28)) {
        item(r, "wal", "DAMAGED", "db.sqlite-wal",
             "header checksum mismatch: SQLite ignores the whole WAL (%lld bytes); the node "
             "replays the writes from its log at its next start", (long long)st.st_size);
        goto out;
    }
    salt1 = be32(hdr + 16);
    salt2 = be32(hdr + 20);
    frame = malloc(24 + (size_t)page_size);
    if (frame == NULL) {
        goto out;
    }
    for (off = 32; off + 24 + (off_t)page_size <= st.st_size; off += 24 + (off_t)page_size) {
        int same_gen, good;
        if (pread(fd, frame, 24 + (size_t)page_size, off) != (ssize_t)(24 + page_size)) {
            break;
        }
        same_gen = be32(frame + 8) == salt1 && be32(frame + 12) == salt2;
        if (bad_at != 0) {
            later_valid += same_gen;
            continue;
        }
        if (!same_gen) {
            break; /* frames of an earlier generation: the end of this one */
        }
        walChecksum(frame, 8, big, s);
        walChecksum(frame + 24, page_size, big, s);
        good = s[0] == be32(frame + 16) && s[1] == be32(frame + 20);
        if (!good) {
            bad_at = (uint64_t)off;
            continue;
        }
        frames++;
    }
    if (bad_at != 0 && later_valid > 0) {
        item(r, "wal", "DAMAGED", "db.sqlite-wal",
             "frame %llu at offset %llu fails its checksum and %llu later frame%s of the same "
             "generation are ignored by SQLite (the node replays them from its log at its next "
             "start)", (unsigned long long)frames + 1, (unsigned long long)bad_at,
             (unsigned long long)later_valid, later_valid == 1 ? "" : "s");
    } else {
        item(r, "wal", "OK", "db.sqlite-wal", "%llu valid frame%s%s", (unsigned long long)frames,
             frames == 1 ? "" : "s",
             bad_at != 0 ? ", then a torn last write (what a crash leaves)" : "");
    }
out:
    free(frame);
    if (fd >= 0) {
        close(fd);
    }
}

/* DATA/DIVERGED: the node knew, when it last ran, that its database differs from the
 * cluster's (a RESTORE entry whose backup it lacked). */
static void checkDiverged(checkRun *r)
{
    char path[PATH_MAX], why[1024];
    FILE *f;
    size_t got;
    snprintf(path, sizeof path, "%s/DIVERGED", r->dataDir);
    if ((f = fopen(path, "r")) == NULL) {
        return;
    }
    got = fread(why, 1, sizeof why - 1, f);
    why[got] = '\0';
    fclose(f);
    item(r, "cluster", "DAMAGED", "DIVERGED", "this node's database differs from the cluster's: %s",
         got ? why : "(no reason recorded)");
}

/* Every page of db.sqlite against the checksum in its reserved bytes (pagesum.h).
 * Pages still in the WAL are covered by the WAL's own frame checksums instead. With
 * startCheck (a node that stopped cleanly), also what cairnd's next start checks
 * (pagesumStartCheck), so that check never calls healthy a file the start refuses:
 * the file's size against its page size and the page count its header states, the
 * freelist's trunk pages. */
static void checkPageChecksums(checkRun *r, int startCheck)
{
    char path[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE], list[256];
    uint32_t first[10];
    uint64_t pages, bad, checked;
    bool enabled;
    size_t used = 0;
    snprintf(path, sizeof path, "%s/db.sqlite", r->dataDir);
    if (!exists(path)) {
        return; /* the database item said so */
    }
    if (pagesumVerifyFile(path, &enabled, &pages, &bad, first, 10, errmsg) != 0) {
        item(r, "page checksums", "DAMAGED", "db.sqlite", "cannot be verified: %s", errmsg);
        return;
    }
    if (bad == 0 && startCheck && pagesumStartCheck(path, &checked, errmsg) != 0) {
        item(r, "page checksums", "DAMAGED", "db.sqlite",
             "cairnd refuses to start on it: %s; cairn repair rebuilds it", errmsg);
        return;
    }
    if (!enabled) {
        item(r, "page checksums", "OK", "db.sqlite",
             "none: the database was created before page checksums (cairn repair "
             "--add-checksums adds them)");
        return;
    }
    if (bad == 0) {
        item(r, "page checksums", "OK", "db.sqlite", "all %llu pages match their checksums",
             (unsigned long long)pages);
        return;
    }
    list[0] = '\0';
    for (uint64_t i = 0; i < bad && i < 10 && used < sizeof list - 16; i++) {
        int k = snprintf(list + used, sizeof list - used, "%s%u", i ? ", " : "", first[i]);
        used += k > 0 ? (size_t)k : 0;
    }
    item(r, "page checksums", "DAMAGED", "db.sqlite",
         "%llu of %llu pages fail their checksum (page%s %s%s): the file was changed outside "
         "SQLite or the disk returned other bytes; cairn repair rebuilds it",
         (unsigned long long)bad, (unsigned long long)pages, bad == 1 ? "" : "s", list,
         bad > 10 ? ", ..." : "");
}

/* Whether another process holds a lock on the -shm at path (SQLite's connections hold
 * one while they have the database open). Takes none. */
static bool shmInUse(const char *path)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool used;
    if (fd < 0) {
        return false;
    }
    used = fcntl(fd, F_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
    close(fd);
    return used;
}

/* db.sqlite, opened read-only: PRAGMA integrity_check, and whether a WAL is there.
 * *applied receives the database's applied index, -1 when unknown. */
static void checkDatabase(checkRun *r, int running, int64_t *applied)
{
    char path[PATH_MAX], wal[PATH_MAX + 8], shm[PATH_MAX + 8], walNote[128];
    char messages[4096];
    struct stat st, sst;
    int walExisted, shmExisted;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    size_t used = 0;
    int rc, nmsg = 0, ok = 0;

    *applied = -1;
    snprintf(path, sizeof path, "%s/db.sqlite", r->dataDir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    walExisted = stat(wal, &st) == 0;
    if (walExisted) {
        char size[32];
        cliFormatBytes((uint64_t)st.st_size, size, sizeof size);
        snprintf(walNote, sizeof walNote, "; WAL present (%s%s)", size,
                 running || st.st_size == 0 ? "" : ": the node did not stop cleanly, or crashed");
    } else {
        snprintf(walNote, sizeof walNote, "; no WAL");
    }
    if (stat(path, &st) != 0) {
        item(r, "database", "MISSING", "db.sqlite",
             "not there: the node rebuilds it from the newest snapshot and the log at its "
             "next start");
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        item(r, "database", "DAMAGED", "db.sqlite", "not a regular file");
        return;
    }
    /* Without a WAL there is nothing to replay: open the file as immutable, so that
     * SQLite creates no -wal or -shm file in the data directory. With one, a plain
     * read-only connection reads through it (and may create the -shm, removed after
     * when the node is not running and did not have one). */
    shmExisted = stat(shm, &sst) == 0;
    if (walExisted) {
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, PAGESUM_VFS);
    } else {
        char *uri = sqlite3_mprintf("file:%s?immutable=1", path);
        rc = uri == NULL ? SQLITE_NOMEM
                         : sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                                           PAGESUM_VFS);
        sqlite3_free(uri);
    }
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(100)", -1, &stmt, NULL);
    }
    if (rc != SQLITE_OK) {
        item(r, "database", "DAMAGED", "db.sqlite", "cannot be read: %s%s",
             db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc), walNote);
        goto out;
    }
    messages[0] = '\0';
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(stmt, 0);
        if (m == NULL) {
            continue;
        }
        if (strcmp(m, "ok") == 0) {
            ok = 1;
            continue;
        }
        if (nmsg++ < MAX_INTEGRITY_MESSAGES && used < sizeof messages - 1) {
            int k =
                snprintf(messages + used, sizeof messages - used, "%s%s", used > 0 ? "; " : "", m);
            if (k > 0) {
                used += (size_t)k < sizeof messages - used ? (size_t)k : sizeof messages - used - 1;
            }
        }
    }
    if (rc != SQLITE_DONE) {
        item(r, "database", "DAMAGED", "db.sqlite", "integrity_check failed: %s%s",
             sqlite3_errmsg(db), walNote);
    } else if (ok && nmsg == 0) {
        char size[32];
        cliFormatBytes((uint64_t)st.st_size, size, sizeof size);
        *applied = appliedIndex(db);
        item(r, "database", "OK", "db.sqlite", "integrity_check ok, %s, applied index %lld%s", size,
             (long long)*applied, walNote);
    } else {
        item(r, "database", "DAMAGED", "db.sqlite", "integrity_check: %d problem%s: %s%s", nmsg,
             nmsg == 1 ? "" : "s", messages, walNote);
    }
out:
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    /* Not when a node opened the database meanwhile (nothing kept it from starting):
     * it holds a lock on the -shm it maps, and a -shm removed under it would leave the
     * next reader a new, empty one beside the same WAL. */
    if (walExisted && !shmExisted && !running && !shmInUse(shm)) {
        unlink(shm);
    }
}

/* applied: the database's applied index (-1 when unknown). The log must reach it: the
 * database applies only entries that are in the fsynced log, so a database ahead of the
 * log means the log lost entries (a removed newest segment, a dropped batch), which
 * nothing in the raft directory alone shows. */
static void checkRaftLog(checkRun *r, int64_t applied, json_t **logJson, char *snapBackup,
                         size_t size)
{
    char raftDir[PATH_MAX], errmsg[CAIRN_ERRMSG_SIZE] = "", summary[256];
    struct raftlog_report *report = calloc(1, sizeof *report);
    int rc;

    snapBackup[0] = '\0';
    if (report == NULL) {
        item(r, "raft", "ERROR", "raft/", "out of memory");
        return;
    }
    snprintf(raftDir, sizeof raftDir, "%s/raft", r->dataDir);
    rc = verifyLog(r, raftDir, report, errmsg);
    if (rc != 0 && rc != CAIRN_ECORRUPT) {
        item(r, "raft", rc == CAIRN_ENOTFOUND ? "MISSING" : "ERROR", "raft/", "%s", errmsg);
        free(report);
        return;
    }
    for (size_t i = 0; i < report->n_problems; i++) {
        const struct raftlog_problem *p = &report->problems[i];
        char file[RAFTLOG_FILE_SIZE + 8];
        snprintf(file, sizeof file, "raft/%s", p->file);
        item(r, "raft", "DAMAGED", file, "%s", p->message);
    }
    if (report->problems_omitted > 0) {
        item(r, "raft", "DAMAGED", "raft/", "%zu more problems not shown",
             report->problems_omitted);
    }
    if (report->n_problems == 0) {
        describeLog(report, summary, sizeof summary);
        item(r, "raft", "OK", "raft/", "%s", summary);
    }
    if (applied > 0 && (uint64_t)applied > report->last_index &&
        (uint64_t)applied > report->snapshot_index) {
        uint64_t end = report->last_index > report->snapshot_index ? report->last_index
                                                                   : report->snapshot_index;
        item(r, "raft", "DAMAGED", "raft/",
             "the log ends at index %llu, but the database has applied up to index %lld: "
             "entries %llu to %lld are missing from the log",
             (unsigned long long)end, (long long)applied, (unsigned long long)(end + 1),
             (long long)applied);
    }
    snprintf(snapBackup, size, "%s", report->snapshot_backup);
    if (r->json) {
        *logJson = reportJson(report, "raft/");
    }
    free(report);
}

/* The backups of repo that no other backup of it names as parent: verifying the chain
 * of each checks every file and every link once per chain. */
static void checkRepository(checkRun *r, const char *check, const char *repo, const char *mustHave)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    struct backup_info *list = NULL;
    size_t n = 0;
    int rc;

    if (strstr(repo, "://") == NULL && !isDir(repo)) { /* a URL: its listing says */
        item(r, check, exists(repo) ? "DAMAGED" : "MISSING", shown(r, repo),
             exists(repo) ? "not a directory" : "no such directory");
        return;
    }
    rc = repoList(repo, &list, &n, errmsg);
    if (rc != 0) {
        item(r, check, "ERROR", shown(r, repo), "cannot list: %s", errmsg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (list[i].error[0] != '\0') {
            item(r, check, "DAMAGED", shown(r, list[i].path), "%s", list[i].error);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct backup_info *b = &list[i];
        int leaf = 1;
        size_t members = 1;
        char label[64];
        if (b->error[0] != '\0') {
            continue;
        }
        for (size_t j = 0; j < n && leaf; j++) {
            if (list[j].error[0] == '\0' && strcmp(list[j].parent_id, b->id) == 0) {
                leaf = 0;
            }
        }
        if (!leaf) {
            continue;
        }
        /* Chain length, for the line; the engine resolves the chain itself. */
        for (const struct backup_info *c = b; c != NULL && c->parent_id[0] != '\0';) {
            const struct backup_info *parent = NULL;
            for (size_t j = 0; j < n; j++) {
                if (strcmp(list[j].id, c->parent_id) == 0) {
                    parent = &list[j];
                }
            }
            if (parent == NULL || members > n) {
                break;
            }
            members++;
            c = parent;
        }
        snprintf(label, sizeof label, "verify %s", b->id);
        startProgress(r, label);
        rc = backupVerify(repo, b->path, false, onProgress, r, errmsg);
        cliProgressClear(&r->progress);
        if (rc == 0) {
            item(r, check, "OK", shown(r, b->path), "%s backup, chain of %zu file%s verified",
                 backupTypeName(b->type), members, members == 1 ? "" : "s");
        } else {
            item(r, check, rc == CAIRN_ECORRUPT || rc == CAIRN_ENOTFOUND ? "DAMAGED" : "ERROR",
                 shown(r, b->path), "%s", errmsg);
        }
    }
    if (mustHave != NULL && mustHave[0] != '\0') {
        int found = 0;
        for (size_t i = 0; i < n; i++) {
            found |= strcmp(list[i].id, mustHave) == 0;
        }
        if (!found) {
            item(r, check, "MISSING", shown(r, repo),
                 "backup %s, which the newest Raft snapshot names, is not there", mustHave);
        }
    }
    if (n == 0) {
        item(r, check, "OK", shown(r, repo), "no backups");
    }
    free(list);
}

/* ---- cairn check --host URL ---------------------------------------------------------- */

/* In a cluster: every node digests its database at one log index (POST /admin/digest
 * through the node asked, then GET /admin/digest?index=N on each node, waiting until
 * each has applied it), and the digests must agree. Prints one line per node (none
 * with json) and fills *out (a JSON object) when out is not NULL. Returns the number
 * of nodes that differ from the leader's digest or could not give one. */
static int compareReplicas(cliHttp *http, json_t *nodes, int json, json_t **out)
{
    json_t *list = json_array();
    json_t *doc;
    json_error_t jerr;
    const char *id;
    json_t *n;
    char path[64];
    char ref[32] = "";
    long long index;
    int problems = 0;

    *out = NULL;
    if (cliHttpPost(http, "/admin/digest", "", 0) != 0 || http->status != 200) {
        if (!json) {
            printf("DAMAGED  cluster: no digest entry could be appended (HTTP %ld: %.200s)\n",
                   http->status, http->body.data ? http->body.data : http->errmsg);
        }
        json_decref(list);
        return 1;
    }
    doc = json_loadb(http->body.data, http->body.len, 0, &jerr);
    index = json_integer_value(json_object_get(json_object_get(doc, "digest"), "index"));
    json_decref(doc);
    snprintf(path, sizeof path, "/admin/digest?index=%lld", index);
    /* The leader's first, as the reference. */
    for (int pass = 0; pass < 2; pass++) {
        json_object_foreach(nodes, id, n) {
            const char *api = json_string_value(json_object_get(n, "api_addr"));
            bool leader = json_is_true(json_object_get(n, "leader"));
            cliHttp one = {0};
            const char *state = NULL;
            const char *digest = NULL;
            char why[300] = "";
            json_t *d = NULL;
            if ((pass == 0) != leader) {
                continue;
            }
            if (api == NULL || cliHttpInit(&one, api) != 0) {
                snprintf(why, sizeof why, "no HTTP address");
            } else {
                /* Each node digests once it applies the entry: wait up to 60 s. */
                for (int tries = 0; tries < 600; tries++) {
                    json_decref(d);
                    d = NULL;
                    if (cliHttpGet(&one, path) != 0) {
                        snprintf(why, sizeof why, "%s", one.errmsg);
                        break;
                    }
                    d = json_loadb(one.body.data, one.body.len, 0, &jerr);
                    state = json_string_value(json_object_get(d, "state"));
                    if (one.status == 200 && state != NULL && strcmp(state, "pending") != 0) {
                        break;
                    }
                    if (one.status == 503) {
                        /* A node that knows it will not apply the entry (it differs). */
                        const char *e = json_string_value(json_object_get(d, "error"));
                        snprintf(why, sizeof why, "%s", e != NULL ? e : "will not apply the entry");
                        state = NULL;
                        break;
                    }
                    snprintf(why, sizeof why, "%s", one.status == 200 ? "still digesting"
                                                   : "has not applied the entry");
                    state = NULL;
                    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
                }
                if (state != NULL && strcmp(state, "done") == 0) {
                    digest = json_string_value(json_object_get(d, "digest"));
                    why[0] = '\0';
                } else if (state != NULL) {
                    snprintf(why, sizeof why, "%s",
                             json_string_value(json_object_get(d, "error")) != NULL
                                 ? json_string_value(json_object_get(d, "error"))
                                 : state);
                }
            }
            if (digest != NULL && pass == 0) {
                snprintf(ref, sizeof ref, "%s", digest);
            }
            bool same = digest != NULL && ref[0] && strcmp(digest, ref) == 0;
            if (!same) {
                problems++;
            }
            if (!json) {
                printf("%-8s node %s (%s): %s\n", same ? "OK" : "DAMAGED", id, api ? api : "?",
                       digest == NULL ? why
                       : same       ? (pass == 0 ? "digest at log index taken as the reference"
                                                 : "same digest as the leader")
                                    : "its database differs from the leader's (digest differs)");
            }
            json_array_append_new(list, json_pack("{s:s, s:b, s:s?, s:b, s:s?}", "node_id", id,
                                                  "leader", leader, "digest", digest, "same",
                                                  same, "error", digest == NULL ? why : NULL));
            json_decref(d);
            cliHttpClose(&one);
        }
    }
    if (!json) {
        printf("%-8s cluster: %s at log index %lld (digest %s)\n", problems ? "DAMAGED" : "OK",
               problems ? "the nodes' databases differ" : "every node holds the same pages", index,
               ref[0] ? ref : "none");
    }
    *out = json_pack("{s:I, s:o, s:b}", "index", (json_int_t)index, "nodes", list, "ok",
                     problems == 0);
    return problems;
}

static int checkOnline(const char *host, int json)
{
    cliHttp http = {0};
    json_error_t jerr;
    json_t *doc = NULL, *node, *raft, *store;
    int code = CLI_EXIT_FAIL;
    int problems = 0;

    if (cliHttpInit(&http, host) != 0 || cliHttpGet(&http, "/status") != 0) {
        fprintf(stderr, "cairn: %s\n", http.errmsg);
        goto out;
    }
    if (http.status != 200) {
        fprintf(stderr, "cairn: %s/status answered HTTP %ld: %.200s\n", http.base, http.status,
                http.body.data != NULL ? http.body.data : "");
        goto out;
    }
    doc = json_loadb(http.body.data, http.body.len, 0, &jerr);
    if (!json_is_object(doc)) {
        fprintf(stderr, "cairn: %s/status did not answer a JSON object\n", http.base);
        goto out;
    }
    {
        /* A node that knows it differs from the cluster fails the check; in a cluster,
         * so do nodes whose databases differ. */
        json_t *dv = json_object_get(json_object_get(doc, "store"), "diverged");
        json_t *nodes = NULL;
        json_t *replicas = NULL;
        int differ = 0;
        if (cliHttpGet(&http, "/nodes") == 0 && http.status == 200) {
            nodes = json_loadb(http.body.data, http.body.len, 0, &jerr);
        }
        if (json_is_object(nodes) && json_object_size(nodes) > 1) {
            differ = compareReplicas(&http, nodes, json, &replicas);
        }
        json_decref(nodes);
        if (json) {
            if (replicas != NULL) {
                json_object_set_new(doc, "replicas", replicas);
                replicas = NULL;
            }
            char *text = json_dumps(doc, JSON_COMPACT);
            printf("%s\n", text ? text : "{}");
            free(text);
            code = json_is_string(dv) || differ ? CLI_EXIT_FAIL : CLI_EXIT_OK;
            goto out;
        }
        json_decref(replicas);
        problems += differ;
        if (json_is_string(dv)) {
            printf("DAMAGED  %s: its database differs from the cluster's: %s\n", http.display,
                   json_string_value(dv));
            code = CLI_EXIT_FAIL;
            goto out;
        }
    }
    node = json_object_get(doc, "node");
    raft = json_object_get(doc, "raft");
    store = json_object_get(doc, "store");
    printf("node     %s: id %lld, pid %lld, up %lld s, data %s\n", http.display,
           (long long)json_integer_value(json_object_get(node, "id")),
           (long long)json_integer_value(json_object_get(node, "pid")),
           (long long)json_integer_value(json_object_get(node, "uptime_s")),
           json_string_value(json_object_get(node, "data_dir")) != NULL
               ? json_string_value(json_object_get(node, "data_dir"))
               : "?");
    printf("raft     %s, term %lld, %s, commit %lld, applied %lld, last log %lld\n",
           json_string_value(json_object_get(raft, "state")) != NULL
               ? json_string_value(json_object_get(raft, "state"))
               : "?",
           (long long)json_integer_value(json_object_get(raft, "term")),
           json_is_true(json_object_get(raft, "ready")) ? "ready" : "not ready",
           (long long)json_integer_value(json_object_get(raft, "commit_index")),
           (long long)json_integer_value(json_object_get(raft, "applied_index")),
           (long long)json_integer_value(json_object_get(raft, "last_log_index")));
    printf("store    database %lld bytes, WAL %lld bytes, applied %lld\n",
           (long long)json_integer_value(json_object_get(store, "db_size")),
           (long long)json_integer_value(json_object_get(store, "wal_size")),
           (long long)json_integer_value(json_object_get(store, "applied_index")));
    printf("(an online check shows what the node reports; stop it and run `cairn check DATA_DIR` "
           "to check its files)\n");
    code = problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
    json_decref(doc);
    cliHttpClose(&http);
    return code;
}

/* ---- cairn check DATA_DIR ------------------------------------------------------------ */

static int runCheck(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    const char *host, *repo;
    char snapDir[PATH_MAX], snapBackup[128];
    json_t *logJson = NULL;
    checkRun r = {0};
    long pid = 0;
    int64_t applied;
    int npos, code, running;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    host = VALUE(checkOptions, values, "host");
    repo = VALUE(checkOptions, values, "repo");
    r.json = VALUE(checkOptions, values, "json") != NULL;
    if (host != NULL) {
        if (npos > 0 || repo != NULL) {
            return cliUsageError(cmd, "--host checks a running node: no DATA_DIR or --repo");
        }
        return checkOnline(host, r.json);
    }
    if (npos != 1) {
        return cliUsageError(cmd, npos == 0 ? "no data directory given (or --host URL)"
                                         : "one data directory, please");
    }
    r.dataDir = argv[1];
    if (!isDir(r.dataDir)) {
        fprintf(stderr, "cairn: %s is not a directory\n", r.dataDir);
        return CLI_EXIT_FAIL;
    }
    if (r.json && (r.items = json_array()) == NULL) {
        fprintf(stderr, "cairn: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    cliProgressInit(&r.progress, "check", 0);

    running = checkLock(&r, &pid);
    checkRepairJournal(&r, running);
    checkNodeJson(&r);
    checkWal(&r, running);
    checkDatabase(&r, running, &applied);
    {
        /* The start checks the file as it is only after a clean stop (heal.c); after
         * an unclean one the WAL completes it first. */
        char mark[PATH_MAX];
        snprintf(mark, sizeof mark, "%s/RUNNING", r.dataDir);
        checkPageChecksums(&r, !running && !exists(mark));
    }
    checkDiverged(&r);
    checkRaftLog(&r, applied, &logJson, snapBackup, sizeof snapBackup);
    snprintf(snapDir, sizeof snapDir, "%s/snapshots", r.dataDir);
    if (exists(snapDir) || snapBackup[0] != '\0') {
        checkRepository(&r, "snapshot", snapDir, snapBackup);
    }
    if (repo != NULL) {
        checkRepository(&r, "backup", repo, NULL);
    }

    if (r.json) {
        json_t *doc = json_pack(
            "{s:b, s:s, s:b, s:o, s:o, s:o, s:o, s:i}", "ok", r.problems == 0, "data_dir",
            r.dataDir, "running", running, "lock_pid", pid > 0 ? json_integer(pid) : json_null(),
            "items", r.items, "raft_log", logJson != NULL ? logJson : json_null(), "repo",
            repo != NULL ? json_string(repo) : json_null(), "problems", r.problems);
        char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text == NULL) {
            fprintf(stderr, "cairn: out of memory\n");
            json_decref(doc);
            return CLI_EXIT_FAIL;
        }
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    } else if (r.problems == 0) {
        printf("%s is healthy%s\n", r.dataDir, running ? " (the node is running)" : "");
    }
    if (r.problems > 0) {
        fflush(stdout);
        fprintf(stderr, "cairn: %d problem%s found in %s\n", r.problems, r.problems == 1 ? "" : "s",
                r.dataDir);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

const cliCommand cliCheckCommand = {
    .name = "check",
    .synopsis = "[--repo DIR] [--json] DATA_DIR | --host URL [--json]",
    .summary = "Check a data directory (database, Raft log, snapshots), offline.",
    .description =
        "Reads the data directory of a node, preferably stopped, and checks each part:\n"
        "  lock       whether a live process holds DATA_DIR/LOCK (its pid); if so the\n"
        "             node is running and the checks below may see writes in progress\n"
        "  node.json  parses and names the node; cluster-id holds the cluster's id\n"
        "  db.sqlite  opened read-only, PRAGMA integrity_check; a WAL file is noted\n"
        "  raft/      every Raft log file, as `cairn log verify` checks them\n"
        "  snapshots/ every backup file and chain the Raft snapshots use, verified\n"
        "With --repo DIR, every backup file and chain of the repository DIR as well\n"
        "(verifying records its outcome beside each backup, as `cairn backup verify`).\n"
        "Prints one line per item: OK, RUNNING, DAMAGED, MISSING or ERROR, the file, and\n"
        "why. --json prints one object: ok, data_dir, running, lock_pid, items [{check,\n"
        "status, ok, file, message}], raft_log (as `cairn log verify --json`), repo,\n"
        "problems.\n"
        "\n"
        "With --host URL, asks the running cairnd at URL for GET /status instead and\n"
        "prints what it says (--json: the answer as it is).\n"
        "Exit status: 0 when everything is healthy, 1 when anything is damaged, missing\n"
        "or cannot be checked (or the node cannot be reached), 2 on bad usage.\n",
    .options = checkOptions,
    .run = runCheck,
};
