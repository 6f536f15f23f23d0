/* Auto-heal at start and `cairn repair` (see heal.h). Start-up runs on the thread that
 * calls cairn_open; healRepair on the CLI's thread with the node stopped. */
#define _GNU_SOURCE
#include "heal.h"

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

#include "admin.h"
#include "backup.h"
#include "cluster.h"
#include "db.h"
#include "error.h"
#include "lock.h"
#include "newfile.h"
#include "pagesum.h"
#include "raftlog.h"
#include "repo.h"
#include "sqlerr.h"
#include "store.h"
#include "lib.h"

#define RUNNING_MARK "RUNNING"
#define RECOVERY_FILE "last_recovery.json"

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* PRAGMA quick_check of the database at path: 0 when it says ok, CAIRN_ECORRUPT with
 * its first message (or SQLite's error) when not. A missing file is healthy (a new
 * node). */
static int quickCheck(const char *path, char *msg, size_t n)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int rc;
    int rv = 0;
    if (!exists(path)) {
        snprintf(msg, n, "no database yet");
        return 0;
    }
    rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(h, 5000);
        rc = sqlite3_prepare_v2(h, "PRAGMA quick_check(5)", -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            snprintf(msg, n, "%s", v ? v : "");
            rv = v != NULL && strcmp(v, "ok") == 0 ? 0 : CAIRN_ECORRUPT;
            /* One line: SQLite's report runs to a line per page. */
            {
                char *nl = strchr(msg, '\n');
                if (nl != NULL && strncmp(msg, "*** ", 4) == 0) {
                    *nl = ' ';
                    nl = strchr(nl + 1, '\n');
                }
                if (nl != NULL) {
                    snprintf(nl, n - (size_t)(nl - msg), " (and more)");
                }
            }
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        snprintf(msg, n, "%s", sqlerrMessage(h, rc));
        rv = CAIRN_ECORRUPT;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return rv;
}

/* How a start after an unclean stop and `cairn repair` judge a database: quickCheck,
 * then the file itself as a start after a clean stop does (pagesumStartCheck), and with
 * every_page (repair) as `cairn check` does (every page's checksum). So neither calls
 * healthy what the next clean start refuses: damage quick_check does not read (a page of
 * the freelist, bytes after the last whole page). The file is judged only when no WAL is
 * left after quickCheck, whose close copies it into the file: pages of a WAL still there
 * are not in the file yet. */
static int dbCheck(const char *path, bool every_page, char *msg, size_t n)
{
    char wal[PATH_MAX];
    char why[CAIRN_ERRMSG_SIZE];
    struct stat st;
    uint64_t checked, pages, bad;
    uint32_t first;
    bool enabled;
    int rv = quickCheck(path, msg, n);
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (rv != 0 || !exists(path) || (stat(wal, &st) == 0 && st.st_size > 0)) {
        return rv;
    }
    if (pagesumStartCheck(path, &checked, why) != 0) {
        snprintf(msg, n, "%s", why);
        return CAIRN_ECORRUPT;
    }
    if (!every_page) {
        return 0;
    }
    if ((rv = pagesumVerifyFile(path, &enabled, &pages, &bad, &first, 1, why)) != 0) {
        snprintf(msg, n, "%s", why);
        return CAIRN_ECORRUPT;
    }
    if (enabled && bad > 0) {
        snprintf(msg, n, "%llu of %llu pages fail their checksum (page %u first)",
                 (unsigned long long)bad, (unsigned long long)pages, first);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

/* Remove the scratch files a kill left in the data directory: DATA/load-XXXXXX (a
 * POST /db/load being received), DATA/export-XXXXXX (a GET /db/backup being copied),
 * DATA/pitr-restore-N.db and its hidden scratch directory (a RESTORE ... AS OF being
 * built), db.sqlite.restored (a restore or snapshot install before its swap),
 * db.sqlite.restore (the copy of a version-1 snapshot before its swap),
 * db.sqlite.heal (a copy from the leader) and .ID.cbk.fetch.tmp (a backup downloaded
 * for an object-store repository), with their journals. Nobody would remove them
 * otherwise (the next file of the same name replaces it, if one ever comes), and each
 * may be as large as the database. Only at a start after an unclean stop, before HTTP
 * serves: nothing else uses the directory then. */
static unsigned sweepScratch(const char *data_dir)
{
    /* "db.sqlite.restore" covers db.sqlite.restored and the copy of a version-1
     * snapshot's file that storeReplaceWith makes before its swap. */
    static const char *const prefixes[] = {"load-", "export-", "pitr-restore-", "db.sqlite.restore",
                                           "db.sqlite.heal"};
    DIR *d = opendir(data_dir);
    struct dirent *e;
    unsigned n = 0;
    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        size_t len = strlen(e->d_name);
        bool scratch = len > 14 && strcmp(e->d_name + len - 14, ".cbk.fetch.tmp") == 0;
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
            scratch = scratch || strncmp(e->d_name, prefixes[i], strlen(prefixes[i])) == 0;
        }
        if (strncmp(e->d_name, ".pitr-restore-", 14) == 0) {
            /* .pitr-restore-N.db.pitr-XXXXXX/: the scratch directory of pitr-restore-N.db. */
            const char *end = strstr(e->d_name, ".db.pitr-");
            if (end != NULL &&
                (size_t)snprintf(path, sizeof path, "%s/%.*s", data_dir,
                                 (int)(end + 3 - e->d_name - 1), e->d_name + 1) < sizeof path) {
                n += newdirSweep(path, "pitr");
            }
            continue;
        }
        if (scratch &&
            (size_t)snprintf(path, sizeof path, "%s/%s", data_dir, e->d_name) < sizeof path &&
            unlink(path) == 0) {
            n++;
        }
    }
    closedir(d);
    /* A restore into db.sqlite.restored on a file system without O_TMPFILE writes a
     * hidden file beside it first. */
    {
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof path, "%s/db.sqlite.restored", data_dir) < sizeof path) {
            n += newfileSweep(path, "restore");
        }
    }
    return n;
}

static uint64_t appliedOf(const char *path)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    uint64_t v = 0;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, PAGESUM_VFS) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT value FROM _cairn_meta WHERE key='applied_index'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        v = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* The stamp in the names of files moved aside: a time to the second, then ".N" when
 * that name is taken. */
#define STAMP_SIZE 48

/* Move DATA/name (if it exists) to DATA/corrupt/<when>-name, never over a file moved
 * there before (two repairs in one second): when the name is taken, when (a buffer of
 * STAMP_SIZE) gets ".2", ".3", ..., and keeps it for the moves that follow, so that the
 * files of one repair share a stamp. *moved gets the new path. */
static int moveAside(const char *data_dir, const char *name, char *when, char *moved,
                     size_t n, char *errmsg)
{
    char from[PATH_MAX];
    char dir[PATH_MAX];
    char to[PATH_MAX];
    char base[STAMP_SIZE];
    int err = 0;
    int rv;
    snprintf(from, sizeof from, "%s/%s", data_dir, name);
    if (moved != NULL) {
        moved[0] = '\0';
    }
    if (!exists(from)) {
        return 0;
    }
    snprintf(dir, sizeof dir, "%s/corrupt", data_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        errorf(errmsg, "cannot create %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    snprintf(base, sizeof base, "%s", when);
    for (unsigned k = 2;; k++) {
        snprintf(to, sizeof to, "%s/%s-%s", dir, when, name);
        err = renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0 ? 0 : errno;
        if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
            /* A file system without RENAME_NOREPLACE (link() would not take the raft
             * directory): the lock keeps every other mover out of corrupt/. */
            err = exists(to) ? EEXIST : rename(from, to) == 0 ? 0 : errno;
        }
        rv = err == 0 ? 0 : err == EEXIST ? CAIRN_EEXIST : errorFromErrno(err);
        if (rv != CAIRN_EEXIST || k > 9999) {
            break;
        }
        snprintf(when, STAMP_SIZE, "%.30s.%u", base, k);
    }
    if (rv != 0) {
        errorf(errmsg, "cannot move %s to %s: %s", from, to,
               rv == CAIRN_EEXIST ? "every name of this second is taken" : strerror(err));
        return rv;
    }
    if (moved != NULL) {
        snprintf(moved, n, "%s", to);
    }
    return libSyncParentDir(to, errmsg);
}

/* A stamp (in when, STAMP_SIZE) under which no file a repair moves is in corrupt/ yet,
 * so that the names its journal records are the names its moves get (moveAside keeps a
 * free stamp as it is). */
static void freeStamp(const char *data_dir, char *when)
{
    static const char *const names[] = {"db.sqlite", "db.sqlite-wal", "db.sqlite-shm", "raft"};
    char base[STAMP_SIZE];
    char path[PATH_MAX + 64];
    snprintf(base, sizeof base, "%s", when);
    for (unsigned k = 2; k < 10000; k++) {
        bool taken = false;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            snprintf(path, sizeof path, "%s/corrupt/%s-%s", data_dir, when, names[i]);
            taken = taken || exists(path);
        }
        if (!taken) {
            return;
        }
        snprintf(when, STAMP_SIZE, "%.30s.%u", base, k);
    }
}

/* The database and its WAL and shared-memory files. */
static int moveDatabaseAside(const char *data_dir, char *when, char *moved, size_t n,
                             char *errmsg)
{
    int rv = moveAside(data_dir, "db.sqlite", when, moved, n, errmsg);
    if (rv == 0) {
        rv = moveAside(data_dir, "db.sqlite-wal", when, NULL, 0, errmsg);
    }
    if (rv == 0) {
        rv = moveAside(data_dir, "db.sqlite-shm", when, NULL, 0, errmsg);
    }
    return rv;
}

static int checkLogFiles(const char *raft_dir, struct raftlog_report *rep, bool *damaged,
                         char *text, size_t n);

/* Check the Raft log the way every start and `cairn repair` both judge it (they must
 * agree). *damaged: a problem other than a torn tail, or a log that ends before the
 * database's applied index (db_path, when it exists): libraft would start on it and the
 * database would skip the new entries that take those indexes; text describes it. No
 * log at all counts so only for a node that forms its cluster alone (alone): a new
 * log starts again at index 1 under the database's index. A node that joins a cluster
 * with none (after `cairn repair --from-peer`) is sent what follows its database. */
static int checkLog(const char *raft_dir, const char *db_path, bool alone,
                    struct raftlog_report *rep, bool *damaged, char *text, size_t n)
{
    int rv = checkLogFiles(raft_dir, rep, damaged, text, n);
    if (rv == 0 && !*damaged && db_path != NULL && exists(db_path) &&
        (rep->files_checked > 0 || alone)) {
        uint64_t applied = appliedOf(db_path);
        uint64_t end =
            rep->last_index > rep->snapshot_index ? rep->last_index : rep->snapshot_index;
        if (rep->n_problems > 0 && rep->good_index < end) {
            end = rep->good_index; /* a torn tail: what libraft will load */
        }
        if (applied > 0 && rep->files_checked == 0) {
            *damaged = true;
            snprintf(text, n,
                     "missing: it holds no log, but the database has applied up to index %llu "
                     "(the log was lost or removed; a new one would start again at index 1, "
                     "and the database would skip its entries up to %llu)",
                     (unsigned long long)applied, (unsigned long long)applied);
        } else if (applied > end) {
            *damaged = true;
            snprintf(text, n,
                     "missing entries: the database has applied index %llu but the log ends "
                     "at %llu (a segment was lost or cut)",
                     (unsigned long long)applied, (unsigned long long)end);
        }
    }
    return rv;
}

/* " at offset N" for a problem at a place in its file; nothing for one of the whole
 * file (offset -1: a short or empty file, a name out of place), whose message says. */
static const char *offsetText(const struct raftlog_problem *p, char *buf, size_t n)
{
    if (p->offset < 0) {
        return "";
    }
    snprintf(buf, n, " at offset %lld", (long long)p->offset);
    return buf;
}

static int checkLogFiles(const char *raft_dir, struct raftlog_report *rep, bool *damaged,
                         char *text, size_t n)
{
    char msg[CAIRN_ERRMSG_SIZE];
    char at[40];
    int rv = raftlogVerify(raft_dir, NULL, NULL, rep, msg);
    *damaged = false;
    if (rv == CAIRN_ENOTFOUND) {
        snprintf(text, n, "no log yet");
        return 0;
    }
    if (rv != 0 && rv != CAIRN_ECORRUPT) {
        snprintf(text, n, "cannot check: %s", msg);
        return rv;
    }
    if (rv == 0) {
        snprintf(text, n, "ok: entries %llu..%llu, snapshot at %llu",
                 (unsigned long long)rep->first_index, (unsigned long long)rep->last_index,
                 (unsigned long long)rep->snapshot_index);
        return 0;
    }
    for (size_t i = 0; i < rep->n_problems; i++) {
        if (rep->problems[i].kind != RAFTLOG_TORN_TAIL) {
            *damaged = true;
            snprintf(text, n, "damaged: raft/%s%s: %s", rep->problems[i].file,
                     offsetText(&rep->problems[i], at, sizeof at), rep->problems[i].message);
            return 0;
        }
    }
    snprintf(text, n,
             "torn tail: raft/%s%s (the write in progress at the stop, never acknowledged): "
             "%s",
             rep->problems[0].file, offsetText(&rep->problems[0], at, sizeof at),
             rep->problems[0].message);
    return 0;
}

/* Can the database be rebuilt from the node's own snapshot and log? */
static bool rebuildable(const struct raftlog_report *rep)
{
    return rep->snapshot_index > 0 || rep->first_index <= 1;
}

static void writeRecord(struct cairn *db)
{
    char path[PATH_MAX];
    char errmsg[CAIRN_ERRMSG_SIZE];
    char *text;
    if (db->recovery == NULL) {
        return;
    }
    snprintf(path, sizeof path, "%s/%s", db->data_dir, RECOVERY_FILE);
    text = json_dumps(db->recovery, JSON_INDENT(2));
    if (text == NULL) {
        dbLog(db, "cannot write %s: out of memory", path);
    } else if (libWriteFileAtomic(path, text, strlen(text), 0, errmsg) != 0) {
        dbLog(db, "cannot write %s: %s", path, errmsg);
    }
    free(text);
}

/* The backup chain the rebuild starts from, the one the newest snapshot names, checked
 * before the database is moved aside: libraft's start on a damaged one says only
 * "persisted data is corrupted", and the database it was to replace is gone from its
 * place by then. */
static int verifySnapshot(const char *data_dir, const struct raftlog_report *rep,
                          char *errmsg)
{
    char snap_dir[PATH_MAX];
    char why[CAIRN_ERRMSG_SIZE];
    int rv;
    if (rep->snapshot_index == 0 || rep->snapshot_backup[0] == '\0') {
        return 0; /* the whole log, or a plain copy of an earlier build (checked by size) */
    }
    snprintf(snap_dir, sizeof snap_dir, "%s/snapshots", data_dir);
    if ((rv = backupVerify(snap_dir, rep->snapshot_backup, false, NULL, NULL, why)) != 0) {
        errorf(errmsg,
               "cannot rebuild: backup %s, which the newest snapshot (index %llu) names, "
               "cannot be restored: %s; the database was left in place. Use --from-peer URL "
               "(in a cluster) or --from-backup ID --repo DIR",
               rep->snapshot_backup, (unsigned long long)rep->snapshot_index, why);
        return rv;
    }
    return 0;
}

/* Why a node with a damaged log does not start, and what repairs it. Plain `cairn
 * repair` first: on a single node it keeps a database that holds every entry the log
 * can still give (resetLog), saying what is lost, and otherwise names the repairs that
 * can work; a backup, the other offer, loses every write after it. */
static void logDamaged(char *errmsg, const char *raft_dir, const char *log_text,
                       const char *data_dir)
{
    errorf(errmsg,
           "the Raft log in %s is %s. cairnd does not drop log entries, which may hold "
           "acknowledged writes: in a cluster run `cairn repair --from-peer URL %s`; on a "
           "single node plain `cairn repair` of it, which keeps the database when that holds "
           "every entry and says what is lost (docs/OPERATIONS.md, \"After disk corruption\")",
           raft_dir, log_text, data_dir);
}

/* DATA/db.sqlite.repair: the copy a `cairn repair` writes (a backup restored, a peer's
 * database, the database with checksums added) before it puts it in place. One that a
 * kill or a failure left is no longer anyone's (a repair and a node both hold the
 * directory's lock while they run) and may be as large as the database: removed when
 * either starts. */
#define REPAIR_COPY "db.sqlite.repair"
static void removeRepairCopy(const char *data_dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", data_dir, REPAIR_COPY);
    unlink(path);
    /* A backup restored into it is named `.db.sqlite.repair.restore-XXXXXX` for its
     * last steps (newfile.h): one whose restore was killed is as large as the copy. */
    newfileSweep(path, "restore");
}

/* ---- the journal of a repair in progress -------------------------------------------- */

/* A repair moves the database and the log into corrupt/ before its new database is in
 * place. Killed in between (kill -9, a crash, a power cut), it left DATA without a
 * database, or with a partial one, or with an empty log, and a start then made a new
 * empty node of it, or rebuilt without a word. So before its first move a repair
 * writes what it is about to move into DATA/repair-undo.json (atomically: whole or
 * absent), and removes it once the new state is complete. One found by the next start
 * or the next `cairn repair` is a repair cut off: undone (what it moved put back, what
 * it made removed, node.json as it was), and said so. Undone rather than finished: the
 * directory as the repair found it is a state every later step knows how to judge (a
 * damaged database is healed at an unclean start, or refused with the repair to run). */
#define REPAIR_JOURNAL "repair-undo.json"

/* Set while this process's repair replays the log: that replay opens the node, and
 * its open must not undo the repair (it removes the journal once the database is
 * complete: healAfterOpen). Only the CLI runs repairs, one at a time on its one thread. */
static bool own_repair_replaying;

static const char *const DB_SIDE[] = {"db.sqlite", "db.sqlite-wal", "db.sqlite-shm"};

/* Write the journal of a repair that is about to move the database (when db), the log
 * (when log), and to change node.json (node_json: its text now, or NULL). when is the
 * stamp of the names in corrupt/, which must be free for every file moved. */
static int journalWrite(const char *data_dir, const char *when, bool db, bool log,
                        const char *node_json, char *errmsg)
{
    char path[PATH_MAX];
    char side[PATH_MAX];
    json_t *root = json_pack("{s:i, s:s, s:b, s:s?}", "version", 1, "stamp", when, "log", log,
                             "node_json", node_json);
    json_t *existed = json_array();
    char *text;
    int rv;
    for (size_t i = 0; i < 3 && db; i++) {
        snprintf(side, sizeof side, "%s/%s", data_dir, DB_SIDE[i]);
        /* Only what exists now is moved, and only that comes back: anything else found
         * at these names by an undo was made by the repair. */
        json_array_append_new(existed, json_boolean(db && exists(side)));
    }
    /* Without "db", the database is not the repair's to touch: an undo leaves it. */
    if (root != NULL && db) {
        json_object_set_new(root, "db", existed); /* takes it, also on failure */
        existed = NULL;
    }
    json_decref(existed);
    if (root == NULL || (db && !json_is_array(json_object_get(root, "db"))) ||
        (text = json_dumps(root, JSON_INDENT(2))) == NULL) {
        json_decref(root);
        errorf(errmsg, "cannot write %s/%s: out of memory", data_dir, REPAIR_JOURNAL);
        return CAIRN_ENOMEM;
    }
    json_decref(root);
    snprintf(path, sizeof path, "%s/%s", data_dir, REPAIR_JOURNAL);
    rv = libWriteFileAtomic(path, text, strlen(text), 0, errmsg);
    free(text);
    return rv;
}

static bool journalExists(const char *data_dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", data_dir, REPAIR_JOURNAL);
    return exists(path);
}

/* The repair is complete (or undone): its journal goes. */
static void journalRemove(const char *data_dir)
{
    char path[PATH_MAX];
    char sync_err[CAIRN_ERRMSG_SIZE];
    snprintf(path, sizeof path, "%s/%s", data_dir, REPAIR_JOURNAL);
    if (unlink(path) == 0) {
        libSyncParentDir(path, sync_err);
    }
}

/* Remove a directory the repair made (a new Raft log: plain files). */
static int removeFlatDir(const char *dir, char *errmsg)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX + 256];
    if (d == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        errorf(errmsg, "cannot read %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    if (rmdir(dir) != 0) {
        errorf(errmsg, "cannot remove %s: %s", dir, strerror(errno));
        return errorFromErrno(errno);
    }
    return 0;
}

/* Undo the repair of data_dir that its journal says was cut off, if there is one (the
 * caller holds the directory's lock). done (n bytes) gets what was done, or "" when
 * there was no journal. Safe to run again when itself cut off: each step is judged
 * from what is on disk. Returns 0, or a CAIRN_E* code with errmsg saying what stays
 * where (the journal then stays for the next try). */
static int journalUndo(const char *data_dir, char *done, size_t n, char *errmsg)
{
    char path[PATH_MAX];
    char here[PATH_MAX + 64];
    char aside[PATH_MAX + 128];
    json_error_t jerr;
    json_t *root, *existed, *v;
    const char *stamp;
    int rv = 0;

    done[0] = '\0';
    snprintf(path, sizeof path, "%s/%s", data_dir, REPAIR_JOURNAL);
    if ((root = json_load_file(path, 0, &jerr)) == NULL) {
        if (access(path, F_OK) != 0) {
            return 0;
        }
        errorf(errmsg,
               "%s (the journal of a repair that was cut off) cannot be read: %s; "
               "what the repair moved is in %s/corrupt: put it back by hand (see "
               "docs/OPERATIONS.md, After disk corruption), then remove the journal",
               path, jerr.text, data_dir);
        return CAIRN_ECORRUPT;
    }
    v = json_object_get(root, "stamp");
    existed = json_object_get(root, "db");
    stamp = json_string_value(v);
    if (stamp == NULL || strlen(stamp) >= STAMP_SIZE ||
        (existed != NULL && (!json_is_array(existed) || json_array_size(existed) != 3))) {
        json_decref(root);
        errorf(errmsg,
               "%s (the journal of a repair that was cut off) is not one cairn wrote; "
               "what the repair moved is in %s/corrupt: put it back by hand (see "
               "docs/OPERATIONS.md, After disk corruption), then remove the journal",
               path, data_dir);
        return CAIRN_ECORRUPT;
    }
    /* First every file the repair made at the database's names, so that no old file
     * comes back beside a new one (a WAL is read into whatever database it sits by). */
    for (size_t i = 0; i < 3 && rv == 0 && existed != NULL; i++) {
        snprintf(here, sizeof here, "%s/%s", data_dir, DB_SIDE[i]);
        snprintf(aside, sizeof aside, "%s/corrupt/%s-%s", data_dir, stamp, DB_SIDE[i]);
        /* A file that existed and was not moved yet is the old one: it stays. */
        if ((!json_is_true(json_array_get(existed, i)) || exists(aside)) && unlink(here) != 0 &&
            errno != ENOENT) {
            errorf(errmsg, "cannot remove %s to put the database back from %s: %s", here, aside,
                   strerror(errno));
            rv = errorFromErrno(errno);
        }
    }
    for (size_t i = 0; i < 3 && rv == 0 && existed != NULL; i++) {
        snprintf(here, sizeof here, "%s/%s", data_dir, DB_SIDE[i]);
        snprintf(aside, sizeof aside, "%s/corrupt/%s-%s", data_dir, stamp, DB_SIDE[i]);
        if (json_is_true(json_array_get(existed, i)) && exists(aside) && rename(aside, here) != 0) {
            errorf(errmsg, "cannot put %s back: %s", aside, strerror(errno));
            rv = errorFromErrno(errno);
        }
    }
    snprintf(here, sizeof here, "%s/raft", data_dir);
    snprintf(aside, sizeof aside, "%s/corrupt/%s-raft", data_dir, stamp);
    if (rv == 0 && json_is_true(json_object_get(root, "log")) && exists(aside) &&
        ((rv = removeFlatDir(here, errmsg)) != 0 || rename(aside, here) != 0)) {
        if (rv == 0) {
            errorf(errmsg, "cannot put %s back: %s", aside, strerror(errno));
            rv = errorFromErrno(errno);
        }
    }
    v = json_object_get(root, "node_json");
    if (rv == 0 && json_is_string(v)) {
        snprintf(here, sizeof here, "%s/node.json", data_dir);
        rv = libWriteFileAtomic(here, json_string_value(v), json_string_length(v), 0, errmsg);
    }
    if (rv == 0) {
        snprintf(here, sizeof here, "%s/%s", data_dir, REPAIR_COPY);
        unlink(here);
        rv = libSyncParentDir(here, errmsg);
    }
    if (rv == 0) {
        journalRemove(data_dir);
        snprintf(done, n,
                 "an interrupted repair (its journal %s, its moves stamped %s) was undone: "
                 "what it moved to %s/corrupt is back in place",
                 path, stamp, data_dir);
    } else {
        errorAppendf(errmsg, " (undoing an interrupted repair; %s stays for the next try)", path);
    }
    json_decref(root);
    return rv;
}

int healBeforeOpen(struct cairn *db, char *errmsg)
{
    char mark[PATH_MAX];
    char db_path[PATH_MAX];
    char raft_dir[PATH_MAX];
    char when[STAMP_SIZE];
    char at[32];
    char log_text[1024];
    char db_text[512];
    char db_before[600] = "";
    char action[PATH_MAX + 256] = "none";
    char why[CAIRN_ERRMSG_SIZE];
    struct raftlog_report *rep = NULL;
    bool damaged = false;
    bool unclean;
    int fd;
    int rv = 0;

    snprintf(mark, sizeof mark, "%s/%s", db->data_dir, RUNNING_MARK);
    snprintf(db_path, sizeof db_path, "%s/db.sqlite", db->data_dir);
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", db->data_dir);
    unclean = exists(mark);
    if (!own_repair_replaying) {
        char done[PATH_MAX + 256];
        if ((rv = journalUndo(db->data_dir, done, sizeof done, errmsg)) != 0) {
            return rv;
        }
        if (done[0] != '\0') {
            dbLog(db, "%s", done);
        }
    }
    removeRepairCopy(db->data_dir);
    /* `cairn restore --force --out DATA/db.sqlite` killed between its renames: the old
     * -wal back beside the old database, or gone if the new one is in place, before
     * anything opens it. */
    if (newfileSweepReplaced(db_path) > 0) {
        dbLog(db,
              "settled the side files of %s that a restore killed while replacing it "
              "left hidden",
              db_path);
    }
    rep = calloc(1, sizeof *rep);
    if (rep == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    /* The log is checked at every start: libraft 0.15 cuts an open segment at the first
     * batch that fails its checksum without saying so, even with auto-recovery off. */
    checkLog(raft_dir, db_path, db->n_join == 0 && db->bootstrap_expect == 0, rep, &damaged,
             log_text, sizeof log_text);
    if (!unclean && damaged) {
        logDamaged(errmsg, raft_dir, log_text, db->data_dir);
        free(rep);
        return CAIRN_ECORRUPT;
    }
    if (!unclean) {
        char path[PATH_MAX];
        uint64_t checked;
        /* A database damaged while the node was stopped is found here, not served. */
        if (pagesumStartCheck(db_path, &checked, why) != 0) {
            errorf(errmsg,
                   "the database is damaged: %s. cairnd does not serve a damaged database: "
                   "run `cairn check %s`, then `cairn repair %s` (rebuilds it from the "
                   "newest snapshot and the log; see docs/OPERATIONS.md)",
                   why, db->data_dir, db->data_dir);
            free(rep);
            return CAIRN_ECORRUPT;
        }
        snprintf(path, sizeof path, "%s/%s", db->data_dir, RECOVERY_FILE);
        db->recovery = json_load_file(path, 0, NULL); /* the previous one, for /status */
        free(rep);
    } else {
        int64_t now = libNowMs();
        libIso8601(now, LIB_ISO8601_BASIC, when); /* in the names of files moved aside */
        libIso8601(now, LIB_ISO8601_SECONDS, at);
        dbLog(db, "unclean stop found (%s exists): checking the Raft log and the database", mark);
        dbLog(db, "raft log: %s", log_text);
        if (damaged) {
            logDamaged(errmsg, raft_dir, log_text, db->data_dir);
            rv = CAIRN_ECORRUPT;
            snprintf(action, sizeof action, "refused to start");
        } else if (dbCheck(db_path, false, db_text, sizeof db_text) != 0 &&
                   (snprintf(db_before, sizeof db_before, "damaged: %s", db_text), true)) {
            dbLog(db, "database %s is damaged: %s", db_path, db_text);
            if (!rebuildable(rep)) {
                errorf(errmsg,
                       "database %s is damaged (%s) and this node's log starts at index %llu "
                       "with no snapshot to rebuild it from: restore it with `cairn repair "
                       "--from-backup ID --repo DIR %s` or `cairn repair --from-peer URL %s`",
                       db_path, db_text, (unsigned long long)rep->first_index, db->data_dir,
                       db->data_dir);
                rv = CAIRN_ECORRUPT;
                snprintf(action, sizeof action, "refused to start");
            } else if ((rv = verifySnapshot(db->data_dir, rep, why)) != 0) {
                errorf(errmsg, "database %s is damaged (%s), and %s", db_path, db_text, why);
                snprintf(action, sizeof action, "refused to start");
            } else {
                char moved[PATH_MAX];
                rv = moveDatabaseAside(db->data_dir, when, moved, sizeof moved, errmsg);
                if (rv == 0) {
                    snprintf(action, sizeof action,
                             "moved the damaged database to %s; rebuilt from %s", moved,
                             rep->snapshot_index ? "the newest snapshot and the log"
                                                 : "the whole log");
                    dbLog(db, "%s", action);
                }
            }
        } else {
            snprintf(db_before, sizeof db_before, "%s", db_text);
            dbLog(db, "database: %s", db_text);
        }
        db->recovery = json_pack("{s:s, s:b, s:s, s:s, s:s, s:n}", "time", at, "unclean_stop", 1,
                                 "raft_log", log_text, "database",
                                 db_before[0] ? db_before : "not checked (the log is damaged)",
                                 "action", action, "applied_index");
        free(rep);
        if (rv != 0) {
            writeRecord(db);
            return rv;
        }
    }
    if (unclean) {
        /* Backups cut off by the stop left their temporary files behind, or in an object
         * store their unfinished uploads (swept once old enough: repoSweepTemp). */
        char snaps[PATH_MAX];
        unsigned a = 0;
        unsigned b = 0;
        snprintf(snaps, sizeof snaps, "%s/snapshots", db->data_dir);
        repoSweepTemp(snaps, &a);
        for (unsigned i = 0; i < db->repos.n; i++) {
            unsigned k; /* repoSweepTemp sets it */
            repoSweepTemp(db->repos.r[i].url, &k);
            b += k;
        }
        b += sweepScratch(db->data_dir);
        if (a + b > 0) {
            dbLog(db, "removed %u temporary file(s) and unfinished upload(s) of backups, loads "
                      "and exports cut off by the stop", a + b);
        }
    }
    /* The mark: removed again by a clean stop. */
    fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        errorf(errmsg, "cannot create %s: %s", mark, strerror(errno));
        return errorFromErrno(errno);
    }
    dprintf(fd, "%ld\n", (long)getpid());
    if (fsync(fd) != 0) {
        int err = errno;
        close(fd);
        errorf(errmsg, "cannot write %s: %s", mark, strerror(err));
        return errorFromErrno(err);
    }
    close(fd);
    return libSyncParentDir(mark, errmsg);
}

void healAfterOpen(struct cairn *db)
{
    char mark[PATH_MAX];
    snprintf(mark, sizeof mark, "%s/%s", db->data_dir, RUNNING_MARK);
    if (own_repair_replaying) {
        /* The repair's database is complete, and this open still holds the lock that
         * keeps a start from judging the journal meanwhile. */
        journalRemove(db->data_dir);
    }
    if (db->recovery == NULL || !json_is_null(json_object_get(db->recovery, "applied_index"))) {
        return; /* no recovery at this start */
    }
    json_object_set_new(db->recovery, "applied_index",
                        json_integer((json_int_t)storeAppliedIndex(db->store)));
    writeRecord(db);
    dbLog(db, "recovery after the unclean stop done: database at index %llu",
          (unsigned long long)storeAppliedIndex(db->store));
}

void healMarkClean(struct cairn *db)
{
    char mark[PATH_MAX];
    char errmsg[CAIRN_ERRMSG_SIZE];
    snprintf(mark, sizeof mark, "%s/%s", db->data_dir, RUNNING_MARK);
    if (unlink(mark) == 0) {
        libSyncParentDir(mark, errmsg);
    }
}

void healStatusJson(struct cairn *db, struct buf *b)
{
    char *text = db->recovery ? json_dumps(db->recovery, JSON_COMPACT) : NULL;
    bufPuts(b, text ? text : "null");
    free(text);
}

/* ---- cairn repair -------------------------------------------------------------------- */

static void say(const struct heal_options *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const struct heal_options *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logLinev(o->say, o->say_arg, fmt, ap);
    va_end(ap);
}

/* Open the node without network and close it again: libraft installs the newest
 * snapshot and a single node replays its whole log; *applied gets where the database
 * ended. */
static int replayOffline(const char *data_dir, uint64_t *applied, char *errmsg)
{
    struct cairn_config cfg;
    cairn *c = NULL;
    int rv;
    cairn_config_init(&cfg);
    cfg.data_dir = data_dir;
    own_repair_replaying = true;
    rv = cairn_open(&cfg, &c);
    own_repair_replaying = false;
    if (rv != 0) {
        errorf(errmsg, "replaying the log: %s", c ? cairn_errmsg(c) : cairn_strerror(rv));
        cairn_close(c);
        return rv;
    }
    *applied = storeAppliedIndex(c->store);
    cairn_close(c);
    return 0;
}

/* Put the repaired database (tmp) where the damaged one was moved from. */
static int installDatabase(const char *tmp, const char *db_path, char *errmsg)
{
    int rv = repoRenameNoReplace(tmp, db_path, errmsg);
    return rv != 0 ? rv : libSyncParentDir(db_path, errmsg);
}

/* Write a copy of the database at db_path into tmp with 8 reserved bytes per page
 * (VACUUM INTO), then seal every page of the copy with its checksum and check it.
 * Sealing is done here, page by page, rather than trusted to the VFS: while SQLite
 * writes the copy, pages may leave its cache before page 1 announces the reserved
 * bytes. */
static int writeWithChecksums(const char *db_path, const char *tmp, uint64_t *pages,
                              char *errmsg)
{
    sqlite3 *h = NULL;
    unsigned char *page = NULL;
    unsigned char hdr[100];
    uint64_t bad = 0;
    uint32_t first;
    size_t psize;
    bool enabled;
    int reserve = PAGESUM_RESERVE;
    int fd = -1;
    int rv = 0;
    int rc;
    char *sql;

    unlink(tmp);
    rc = sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READWRITE, PAGESUM_VFS);
    if (rc == SQLITE_OK) {
        /* Asked for, not applied to this file: VACUUM INTO gives the copy this many. */
        sqlite3_file_control(h, "main", SQLITE_FCNTL_RESERVE_BYTES, &reserve);
        sql = sqlite3_mprintf("VACUUM INTO %Q", tmp);
        rc = sql != NULL ? sqlite3_exec(h, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
        sqlite3_free(sql);
    }
    if (rc != SQLITE_OK) {
        errorf(errmsg, "VACUUM INTO %s: %s", tmp, sqlerrMessage(h, rc));
        sqlite3_close(h);
        unlink(tmp);
        return CAIRN_EIO;
    }
    sqlite3_close(h);
    fd = open(tmp, O_RDWR | O_CLOEXEC);
    if (fd < 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        errorf(errmsg, "cannot read %s: %s", tmp, strerror(errno));
        rv = CAIRN_EIO;
        goto out;
    }
    psize = ((size_t)hdr[16] << 8) | hdr[17];
    psize = psize == 1 ? 65536 : psize;
    if (hdr[20] != PAGESUM_RESERVE || psize < 512) {
        errorf(errmsg, "the copy %s has %u reserved bytes per page, not %d", tmp, hdr[20],
               PAGESUM_RESERVE);
        rv = CAIRN_EIO;
        goto out;
    }
    page = malloc(psize);
    if (page == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    for (off_t off = 0;; off += (off_t)psize) {
        ssize_t got = pread(fd, page, psize, off);
        if (got == 0) {
            break;
        }
        if (got != (ssize_t)psize) {
            errorf(errmsg, "cannot read %s at offset %lld", tmp, (long long)off);
            rv = CAIRN_EIO;
            goto out;
        }
        pagesumSeal(page, psize);
        if (pwrite(fd, page, psize, off) != (ssize_t)psize) {
            errorf(errmsg, "cannot write %s at offset %lld: %s", tmp, (long long)off,
                   strerror(errno));
            rv = errorFromErrno(errno);
            goto out;
        }
    }
    if (fsync(fd) != 0) {
        errorf(errmsg, "cannot fsync %s: %s", tmp, strerror(errno));
        rv = errorFromErrno(errno);
        goto out;
    }
    if ((rv = pagesumVerifyFile(tmp, &enabled, pages, &bad, &first, 1, errmsg)) != 0) {
        goto out;
    }
    if (!enabled || bad != 0) {
        errorf(errmsg, "the copy %s does not verify (%llu bad pages)", tmp,
               (unsigned long long)bad);
        rv = CAIRN_EIO;
    }
out:
    free(page);
    if (fd >= 0) {
        close(fd);
    }
    if (rv != 0) {
        unlink(tmp);
    }
    return rv;
}

/* Does the stopped node of data_dir form its cluster alone, as its next start would
 * (cairnd without --join)? node.json names no peer to join and no expected cluster
 * size, and the database's node directory (cluster.c, "node:ID:...") names no other
 * node: the first node of a cluster that others joined has no peer in node.json, but
 * the others announced themselves there. *self gets the node's id (0 when node.json
 * has none) and Raft address, as a voter. */
static bool aloneOnDisk(const char *data_dir, const char *db_path, struct raftlog_server *self)
{
    char path[PATH_MAX];
    json_t *root;
    json_t *v;
    bool alone;
    memset(self, 0, sizeof *self);
    self->role = RAFT_VOTER;
    snprintf(path, sizeof path, "%s/node.json", data_dir);
    root = json_load_file(path, 0, NULL);
    if (root == NULL) {
        return false;
    }
    v = json_object_get(root, "node_id");
    self->id = json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
                                                               : 0;
    v = json_object_get(root, "raft_addr");
    snprintf(self->address, sizeof self->address, "%s", json_is_string(v) ? json_string_value(v)
                                                                            : "");
    v = json_object_get(root, "join");
    alone = self->id > 0 && (v == NULL || (json_is_string(v) && json_string_length(v) == 0));
    v = json_object_get(root, "bootstrap_expect");
    alone = alone && (v == NULL || (json_is_integer(v) && json_integer_value(v) == 0));
    json_decref(root);
    if (alone && exists(db_path)) {
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        char self_key[48];
        snprintf(self_key, sizeof self_key, "node:%llu:", (unsigned long long)self->id);
        /* A table that cannot be read proves nothing either way: not alone. */
        alone = sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READONLY, PAGESUM_VFS) == SQLITE_OK &&
                sqlite3_prepare_v2(h,
                                   "SELECT count(*) FROM _cairn_meta WHERE key LIKE 'node:%' "
                                   "AND substr(key, 1, length(?1)) <> ?1 AND key <> rtrim(?1, ':')",
                                   -1, &st, NULL) == SQLITE_OK &&
                sqlite3_bind_text(st, 1, self_key, -1, SQLITE_STATIC) == SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == 0;
        sqlite3_finalize(st);
        sqlite3_close(h);
    }
    return alone;
}

/* Can a damaged log be replaced by one started from the database (resetLog)? Only when
 * the database is at or past the last entry that can be read (nothing the log still
 * holds is newer than the database), and the node is its cluster's only voter: in a
 * cluster the other nodes hold the log, and `--from-peer` takes it from them. */
static bool keepsDatabase(const struct raftlog_report *rep, const char *db_path)
{
    unsigned voters = 0;
    uint64_t applied = appliedOf(db_path);
    for (unsigned i = 0; i < rep->conf_servers; i++) {
        voters += rep->conf[i].role == RAFT_VOTER;
    }
    return applied > 0 && applied >= rep->good_index && voters == 1;
}

/* Start a new log from the database: checkpoint it, write it as a full backup into
 * DATA/snapshots, move DATA/raft aside and write a new log there whose first state is a
 * snapshot naming that backup at the database's applied index, with the configuration
 * and the term of the old log. Says what, if anything, is lost. */
static int resetLog(const struct heal_options *o, const struct raftlog_report *rep,
                    const char *db_path, char *when, char *moved_log, size_t n,
                    uint64_t *applied, char *lost, size_t lost_size, char *errmsg)
{
    char raft_dir[PATH_MAX], snap_dir[PATH_MAX], real[PATH_MAX], source[PATH_MAX + 16];
    unsigned char manifest[MANIFEST_SIZE];
    struct node_server servers[NODE_MAX_SERVERS];
    struct snapshot_manifest m;
    struct backup_source src;
    struct backup_options opt;
    struct backup_info info;
    uint64_t index = appliedOf(db_path);
    uint64_t claimed = rep->last_index > rep->good_index ? rep->last_index : rep->good_index;
    uint64_t term = rep->term > 0 ? rep->term : 1;
    uint64_t id = 0;
    const char *address = "";
    unsigned nservers = 0;
    sqlite3 *h = NULL;
    int fd, rv;

    snprintf(raft_dir, sizeof raft_dir, "%s/raft", o->data_dir);
    snprintf(snap_dir, sizeof snap_dir, "%s/snapshots", o->data_dir);
    for (unsigned i = 0; i < rep->conf_servers && nservers < NODE_MAX_SERVERS; i++) {
        servers[nservers].id = rep->conf[i].id;
        snprintf(servers[nservers].address, sizeof servers[nservers].address, "%s",
                 rep->conf[i].address);
        servers[nservers].role = rep->conf[i].role;
        if (rep->conf[i].role == RAFT_VOTER) {
            id = rep->conf[i].id;
            address = rep->conf[i].address;
        }
        nservers++;
    }
    say(o, "the log can be read up to index %llu; the database holds every entry up to index "
           "%llu",
        (unsigned long long)rep->good_index, (unsigned long long)index);
    if (rep->files_checked == 0) {
        snprintf(lost, lost_size, "unknown: the log is gone; an entry past index %llu it held "
                                  "was never applied, so this single node never acknowledged it",
                 (unsigned long long)index);
    } else if (claimed > index) {
        snprintf(lost, lost_size, "entries %llu to %llu, which the damaged part of the log held "
                                  "and the database never applied (so this single node never "
                                  "acknowledged them)",
                 (unsigned long long)index + 1, (unsigned long long)claimed);
    } else {
        snprintf(lost, lost_size, "nothing (the damaged part of the log held no entry past "
                                  "index %llu, which the database holds)",
                 (unsigned long long)index);
    }
    say(o, "lost: %s", lost);
    /* Everything in the database file itself, for the backup that reads it. */
    if (sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READWRITE, PAGESUM_VFS) != SQLITE_OK ||
        sqlite3_exec(h, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != SQLITE_OK) {
        errorf(errmsg, "checkpoint of %s: %s", db_path, h ? sqlite3_errmsg(h) : "cannot open");
        sqlite3_close(h);
        return CAIRN_EIO;
    }
    sqlite3_close(h);
    if (mkdir(snap_dir, 0755) != 0 && errno != EEXIST) {
        errorf(errmsg, "cannot create %s: %s", snap_dir, strerror(errno));
        return errorFromErrno(errno);
    }
    if (realpath(o->data_dir, real) == NULL) {
        snprintf(real, sizeof real, "%s", o->data_dir);
    }
    snprintf(source, sizeof source, "cairnd:%s", real);
    if ((fd = open(db_path, O_RDONLY | O_CLOEXEC)) < 0) {
        errorf(errmsg, "cannot open %s: %s", db_path, strerror(errno));
        return errorFromErrno(errno);
    }
    memset(&src, 0, sizeof src);
    src.fd = fd;
    src.raft_index = index;
    src.raft_term = term;
    src.source = source;
    src.verify_pages = true;
    memset(&opt, 0, sizeof opt);
    opt.type = BACKUP_FULL;
    opt.repo = snap_dir;
    rv = backupCreate(&src, &opt, &info, errmsg);
    close(fd);
    if (rv != 0) {
        return rv;
    }
    memset(&m, 0, sizeof m);
    m.version = MANIFEST_VERSION;
    m.index = index;
    m.db_index = index;
    m.size = info.size_bytes;
    memcpy(m.digest16, info.digest, sizeof m.digest16);
    snprintf(m.name, sizeof m.name, "%s", info.id);
    manifestEncode(&m, manifest);
    if ((rv = journalWrite(o->data_dir, when, false, true, NULL, errmsg)) != 0 ||
        (rv = moveAside(o->data_dir, "raft", when, moved_log, n, errmsg)) != 0) {
        return rv;
    }
    if (mkdir(raft_dir, 0700) != 0) {
        errorf(errmsg, "cannot create %s: %s", raft_dir, strerror(errno));
        return errorFromErrno(errno);
    }
    say(o, "writing a new log: a snapshot at index %llu (term %llu) naming backup %s",
        (unsigned long long)index, (unsigned long long)term, info.id);
    rv = nodeResetLog(raft_dir, id, address, term, index, servers, nservers, manifest,
                      sizeof manifest, errmsg);
    if (rv == 0) {
        *applied = index;
    }
    return rv;
}

/* The text of DATA/node.json into *text (the caller frees it). */
static int readNodeJson(const char *data_dir, char **text, char *errmsg)
{
    char path[PATH_MAX];
    json_t *root;
    snprintf(path, sizeof path, "%s/node.json", data_dir);
    if ((root = json_load_file(path, 0, NULL)) == NULL) {
        errorf(errmsg, "%s is missing or not JSON: the node's identity is unknown", path);
        return CAIRN_ECORRUPT;
    }
    *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (*text == NULL) {
        errorf(errmsg, "cannot read %s: out of memory", path);
        return CAIRN_ENOMEM;
    }
    return 0;
}

/* Write join = peer into DATA/node.json, so that a node whose log was reset rejoins. */
static int setJoin(const char *data_dir, const char *peer, char *errmsg)
{
    char path[PATH_MAX];
    char *text;
    json_t *root;
    int rv;
    snprintf(path, sizeof path, "%s/node.json", data_dir);
    root = json_load_file(path, 0, NULL);
    if (root == NULL) {
        errorf(errmsg, "%s is missing or not JSON: the node's identity is unknown", path);
        return CAIRN_ECORRUPT;
    }
    json_object_set_new(root, "join", json_string(peer));
    json_object_set_new(root, "bootstrap_expect", json_integer(0));
    text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (text == NULL) {
        errorf(errmsg, "cannot write %s: out of memory", path);
        return CAIRN_ENOMEM;
    }
    rv = libWriteFileAtomic(path, text, strlen(text), 0, errmsg);
    free(text);
    return rv;
}

int healRepair(const struct heal_options *o, struct buf *report, char *errmsg)
{
    char db_path[PATH_MAX];
    char raft_dir[PATH_MAX];
    char tmp[PATH_MAX];
    char when[STAMP_SIZE];
    char log_text[1024];
    char db_text[512];
    char db_before[600];
    char moved_db[PATH_MAX] = "";
    char moved_log[PATH_MAX] = "";
    char lost[256] = "";
    struct raftlog_report *rep;
    struct raftlog_server self;
    bool log_damaged = false;
    bool db_damaged;
    bool alone;
    uint64_t applied = 0;
    const char *action = "nothing";
    json_t *out;
    struct dirlock lock = DIRLOCK_NONE;
    char undone[PATH_MAX + 256]; /* what undoing an interrupted repair did */
    char *node_json = NULL;
    bool journal = false; /* written: undone on failure */
    int rv;

    snprintf(db_path, sizeof db_path, "%s/db.sqlite", o->data_dir);
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", o->data_dir);
    snprintf(tmp, sizeof tmp, "%s/%s", o->data_dir, REPAIR_COPY);
    libIso8601(libNowMs(), LIB_ISO8601_BASIC, when);
    if (!exists(o->data_dir)) {
        errorf(errmsg, "no data directory %s", o->data_dir);
        return CAIRN_ENOTFOUND;
    }
    if ((rv = lockAcquire(o->data_dir, &lock, errmsg)) != 0) {
        if (rv == CAIRN_ELOCKED) {
            char held[CAIRN_ERRMSG_SIZE];
            snprintf(held, sizeof held, "%s", errmsg);
            errorf(errmsg, "%s: stop the node before repairing it", held);
        }
        return rv;
    }
    if ((rv = journalUndo(o->data_dir, undone, sizeof undone, errmsg)) != 0) {
        lockRelease(&lock);
        return rv;
    }
    if (undone[0] != '\0') {
        say(o, "%s", undone);
    }
    removeRepairCopy(o->data_dir);
    freeStamp(o->data_dir, when);
    rep = calloc(1, sizeof *rep);
    if (rep == NULL) {
        lockRelease(&lock);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    alone = aloneOnDisk(o->data_dir, db_path, &self);
    checkLog(raft_dir, db_path, alone, rep, &log_damaged, log_text, sizeof log_text);
    if (alone && rep->conf_servers == 0 && self.id > 0) {
        /* No configuration can be read (no log, or none left in it): a node that forms
         * its cluster alone is its only voter, as its start would make it. */
        rep->conf[0] = self;
        rep->conf_servers = 1;
    }
    db_damaged = dbCheck(db_path, true, db_text, sizeof db_text) != 0;
    snprintf(db_before, sizeof db_before, "%s%s", db_damaged ? "damaged: " : "", db_text);
    say(o, "raft log: %s", log_text);
    say(o, "database: %s", db_before);

    switch (o->mode) {
    case HEAL_REBUILD:
        if (log_damaged && !db_damaged && keepsDatabase(rep, db_path)) {
            /* The database holds every entry the log can still give, and more: keep it
             * and start a new log from it, rather than lose what it holds. */
            rv = resetLog(o, rep, db_path, when, moved_log, sizeof moved_log, &applied, lost,
                          sizeof lost, errmsg);
            journal = journalExists(o->data_dir); /* resetLog wrote it before its move */
            action = "kept the database, which holds every entry up to the damage and past "
                     "it, and started a new Raft log from it (a snapshot at its index); the "
                     "damaged log is kept in corrupt/";
            break;
        }
        if (log_damaged) {
            errorf(errmsg,
                   "cannot rebuild from this node's log, which is %s: use "
                   "--from-peer URL (in a cluster) or --from-backup ID --repo DIR",
                   log_text);
            rv = CAIRN_ECORRUPT;
            break;
        }
        if (!db_damaged && !o->force) {
            action = "nothing: the database and the log are healthy (--force rebuilds anyway)";
            break;
        }
        if (!rebuildable(rep)) {
            errorf(errmsg,
                   "cannot rebuild: the log starts at index %llu and there is no "
                   "snapshot; use --from-backup ID --repo DIR or --from-peer URL",
                   (unsigned long long)rep->first_index);
            rv = CAIRN_ECORRUPT;
            break;
        }
        if ((rv = verifySnapshot(o->data_dir, rep, errmsg)) != 0 ||
            (rv = journalWrite(o->data_dir, when, true, false, NULL, errmsg)) != 0) {
            break;
        }
        journal = true;
        rv = moveDatabaseAside(o->data_dir, when, moved_db, sizeof moved_db, errmsg);
        action = "rebuilt the database from the newest snapshot and the log";
        break;
    case HEAL_FROM_BACKUP: {
        struct restore_options ro;
        struct backup_info info;
        memset(&ro, 0, sizeof ro);
        ro.repo = o->repo;
        ro.ref = o->backup_id;
        ro.out = tmp;
        ro.force = true;
        say(o, "restoring backup %s from %s", o->backup_id, o->repo);
        if ((rv = backupRestore(&ro, &info, errmsg)) != 0) {
            break;
        }
        /* With a healthy log the entries after the backup replay on top of it; a
         * damaged log is set aside and the database starts a new log at 0. */
        if ((rv = adminSetAppliedIndex(tmp, log_damaged ? 0 : info.raft_index, errmsg)) != 0 ||
            (rv = journalWrite(o->data_dir, when, true, log_damaged, NULL, errmsg)) != 0) {
            break;
        }
        journal = true;
        if ((rv = moveDatabaseAside(o->data_dir, when, moved_db, sizeof moved_db, errmsg)) != 0 ||
            (log_damaged && (rv = moveAside(o->data_dir, "raft", when, moved_log, sizeof moved_log,
                                            errmsg)) != 0)) {
            break;
        }
        if ((rv = installDatabase(tmp, db_path, errmsg)) != 0) {
            break;
        }
        action = log_damaged ? "restored the backup; the damaged log was set aside and a new "
                               "one starts (writes after the backup are lost)"
                             : "restored the backup and replayed the log past it";
        break;
    }
    case HEAL_ADD_CHECKSUMS: {
        bool enabled = false;
        uint64_t pages = 0, bad = 0;
        uint32_t first;
        char msg[CAIRN_ERRMSG_SIZE];
        if (db_damaged || log_damaged) {
            errorf(errmsg, "the %s is damaged: repair it first (cairn repair %s), then add "
                           "checksums",
                   db_damaged ? "database" : "raft log", o->data_dir);
            rv = CAIRN_ECORRUPT;
            break;
        }
        if (pagesumVerifyFile(db_path, &enabled, &pages, &bad, &first, 1, msg) == 0 &&
            enabled) {
            action = "nothing: the database already has page checksums";
            break;
        }
        say(o, "rewriting the database with page checksums (VACUUM INTO)");
        if ((rv = writeWithChecksums(db_path, tmp, &pages, errmsg)) != 0 ||
            (rv = journalWrite(o->data_dir, when, true, false, NULL, errmsg)) != 0) {
            unlink(tmp);
            break;
        }
        journal = true;
        if ((rv = moveDatabaseAside(o->data_dir, when, moved_db, sizeof moved_db, errmsg)) != 0) {
            break; /* undone below, the copy removed */
        }
        if ((rv = installDatabase(tmp, db_path, errmsg)) != 0) {
            break;
        }
        action = "rewrote the database with a checksum in every page (the original is kept)";
        break;
    }
    case HEAL_FROM_PEER: {
        char url[300];
        char base[200];
        clusterUrl(o->peer, base, sizeof base);
        /* GET /db/backup?internal streams the peer's own consistent copy, cairn's table
         * (its applied index, the node directory) included. */
        snprintf(url, sizeof url, "%s/db/backup?internal", base);
        say(o, "copying the database from %s", base);
        rv = clusterDownload(url, tmp, errmsg);
        if (rv != 0) {
            unlink(tmp);
            break;
        }
        if (dbCheck(tmp, true, db_text, sizeof db_text) != 0) {
            errorf(errmsg, "the copy from %s does not pass its check: %s", base, db_text);
            unlink(tmp);
            rv = CAIRN_ECORRUPT;
            break;
        }
        /* The copy is newer than this node's log: the log is set aside too, and the
         * node rejoins through the peer, whose leader sends what follows. node.json
         * names the peer last, and its text before is in the journal: a repair that
         * fails or is cut off leaves no join to a cluster whose database it never got. */
        if ((rv = readNodeJson(o->data_dir, &node_json, errmsg)) != 0 ||
            (rv = journalWrite(o->data_dir, when, true, true, node_json, errmsg)) != 0) {
            break;
        }
        journal = true;
        if ((rv = moveDatabaseAside(o->data_dir, when, moved_db, sizeof moved_db, errmsg)) != 0 ||
            (rv = moveAside(o->data_dir, "raft", when, moved_log, sizeof moved_log, errmsg)) != 0 ||
            (rv = installDatabase(tmp, db_path, errmsg)) != 0 ||
            (rv = setJoin(o->data_dir, base, errmsg)) != 0) {
            break;
        }
        journalRemove(o->data_dir); /* complete: no replay follows */
        action = "copied the database from the peer and set this node's log aside; the node "
                 "rejoins through the peer at its next start and the leader sends it the "
                 "rest";
        break;
    }
    }
    /* Failed once its journal was written: the directory as it was. */
    if (rv != 0 && journal) {
        char why[CAIRN_ERRMSG_SIZE];
        char done[PATH_MAX + 256];
        if (journalUndo(o->data_dir, done, sizeof done, why) == 0) {
            if (moved_db[0] != '\0' || moved_log[0] != '\0') {
                errorAppendf(errmsg, "; what was moved aside is back in place");
            }
            moved_db[0] = moved_log[0] = '\0';
        } else {
            errorAppendf(errmsg, "; %s", why);
        }
        unlink(tmp);
    }
    lockRelease(&lock);
    free(rep);
    free(node_json);
    if (rv == 0 && strcmp(action, "nothing") != 0 && strncmp(action, "nothing:", 8) != 0 &&
        !(o->mode == HEAL_FROM_PEER && moved_log[0] != '\0')) {
        say(o, "replaying the log");
        rv = replayOffline(o->data_dir, &applied, errmsg);
        if (rv != 0 && (moved_db[0] != '\0' || moved_log[0] != '\0')) {
            /* Under the lock again: a node started since the replay let go of it owns
             * the files now (and undid the repair by its journal). The partial database
             * holds nothing the log does not. */
            char why[CAIRN_ERRMSG_SIZE];
            char done[PATH_MAX + 256];
            if (lockAcquire(o->data_dir, &lock, why) != 0) {
                errorAppendf(errmsg, "; what the repair moved aside stays in %s/corrupt (%s)",
                             o->data_dir, why);
            } else if (journalUndo(o->data_dir, done, sizeof done, why) != 0) {
                errorAppendf(errmsg, "; %s", why);
                lockRelease(&lock);
            } else if (done[0] == '\0') {
                /* No journal: the replay failed after its open had completed the repair
                 * (healAfterOpen), so what it made stays. */
                lockRelease(&lock);
            } else {
                errorAppendf(errmsg, "; what the repair moved aside is back in its place");
                moved_db[0] = moved_log[0] = '\0';
                lockRelease(&lock);
            }
        }
    } else if (rv == 0) {
        applied = appliedOf(db_path);
    }
    if (rv == 0) {
        db_damaged = dbCheck(db_path, true, db_text, sizeof db_text) != 0;
        if (db_damaged) {
            errorf(errmsg, "the database is still damaged after the repair: %s", db_text);
            rv = CAIRN_ECORRUPT;
        }
    }
    out = json_pack("{s:b, s:s, s:s, s:s, s:s?, s:s?, s:I, s:s?, s:s?}", "ok", rv == 0, "raft_log",
                    log_text, "database_before", db_before, "action", rv == 0 ? action : "failed",
                    "moved_database", moved_db[0] ? moved_db : NULL, "moved_log",
                    moved_log[0] ? moved_log : NULL, "applied_index", (json_int_t)applied, "lost",
                    lost[0] ? lost : NULL, "interrupted_repair", undone[0] ? undone : NULL);
    if (out != NULL) {
        char *text = json_dumps(out, JSON_COMPACT);
        bufPuts(report, text ? text : "{}");
        free(text);
        json_decref(out);
    }
    if (rv == 0) {
        say(o, "done: %s; database at index %llu", action, (unsigned long long)applied);
    }
    return rv;
}
