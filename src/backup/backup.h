/* The backup engine: full, incremental and differential backups of a SQLite page
 * image into `.cbk` files, chain restore, verification and the catalog of a
 * repository.
 *
 * The engine knows nothing of Raft or of the server: it reads pages from a file
 * descriptor whose content does not change while it reads (the server freezes its
 * database for that, see store.h), or through a snapshot of a SQLite file that other
 * programs may be writing, taken read-only by backupSnapshotFile() (snapread.h). A
 * repository is an object (struct repo, opened from a URL; below) holding `.cbk`
 * objects: a directory of `.cbk` files with the posix driver. Everything the catalog
 * says is derived from the files themselves, so that restoring a database never
 * rewinds the list of its backups.
 *
 * Every function is synchronous and may take long (it reads or writes a whole
 * database); call it from a worker thread, never from the loop thread. Memory is
 * bounded by the block size and the page-hash manifests (8 bytes per page), never by
 * the database size. The byte layout of a `.cbk` file is in docs/FORMAT.md.
 * Any thread; functions share no state except the id generator (thread-safe). */
#ifndef CAIRN_BACKUP_H
#define CAIRN_BACKUP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BACKUP_FULL 1
#define BACKUP_INCREMENTAL 2
#define BACKUP_DIFFERENTIAL 3

/* Ids are 29 characters, e.g. "20261122T101500123Z-0001-7f3a": creation time in UTC
 * to the millisecond, a per-process counter, then random hex. Sorting ids as strings
 * sorts backups by creation, also within one millisecond in one process. */
#define BACKUP_ID_SIZE 32   /* with the terminating NUL; ids are shorter */
#define BACKUP_SOURCE_SIZE 256
#define BACKUP_REPO_NAME_SIZE 33 /* a repository's name (server), with the NUL */
#define BACKUP_DIGEST_SIZE 16 /* XXH3-128 of a whole file */
/* A history: the id of the cluster whose Raft log the backed-up database is the state
 * of (its cluster id, the archive's history id: arcseg.h); all zero for none known. */
#define BACKUP_HISTORY_SIZE 16
/* A catalog entry's path or URL, with the NUL: an S3 URL takes at most 1094 bytes
 * (s3:// + a bucket of 63 + / + a key of 1024); a directory whose objects' paths would
 * not fit is refused by repoOpen. Not PATH_MAX: a listing of 10,000 backups holds
 * 10,000 entries. */
#define BACKUP_PATH_SIZE 1280

/* Verified state of a backup, as recorded by the last backupVerify() (a sidecar file
 * `<id>.verified` beside the backup; the backup file itself is never rewritten). */
#define BACKUP_UNVERIFIED 0
#define BACKUP_VERIFIED 1
#define BACKUP_VERIFY_FAILED 2

/* One catalog entry. Everything but path, verified and verified_ms comes from the
 * file's header and footer. */
struct backup_info {
    char id[BACKUP_ID_SIZE];
    int type;                           /* BACKUP_FULL, BACKUP_INCREMENTAL, ... */
    char parent_id[BACKUP_ID_SIZE];     /* "" for a full backup */
    unsigned char parent_digest[BACKUP_DIGEST_SIZE]; /* zero for a full backup */
    unsigned char digest[BACKUP_DIGEST_SIZE];        /* this file's trailer digest */
    char source[BACKUP_SOURCE_SIZE];    /* what was backed up (see backup_source) */
    int64_t created_ms;                 /* Unix ms when the backup started */
    uint64_t raft_index;                /* index of the image; 0: no Raft state (a plain file) */
    uint64_t raft_term;
    uint32_t page_size;
    uint64_t page_count;                /* pages of the database at this backup */
    uint64_t pages;                     /* pages stored in this file (changed pages) */
    uint64_t size_bytes;                /* size of the .cbk file */
    int64_t duration_ms;                /* time the backup took to write */
    char path[BACKUP_PATH_SIZE];        /* where the file is: its path in a posix
                                           repository; for other drivers the
                                           object's URL. Ends in "/<object name>". */
    int verified;                       /* BACKUP_UNVERIFIED, ... */
    int64_t verified_ms;                /* when, if verified != BACKUP_UNVERIFIED */
    char error[256];                    /* repoList(): non-empty when the file cannot
                                           be read (the entry is listed, marked) */
    char repository[BACKUP_REPO_NAME_SIZE]; /* the name of the server's repository that
                                               holds it; "" where repositories have no
                                               names (the engine, standalone tools) */
    /* The header's history (zeros: none recorded): whose Raft log raft_index counts in. */
    unsigned char history[BACKUP_HISTORY_SIZE];
    int codec; /* the blocks' codec, CBK_CODEC_* (cbk.h) */
};

struct snapread;

/* ---- the repository object ----
 *
 * A repository holds the backups as objects (`<id>.cbk`, `<id>.verified`) behind a
 * driver (repo_driver.h): posix (a directory) now, S3 next. Functions below that take
 * `const char *repo` open the repository from that string, call their `...In`
 * version and close it; callers that keep a repository open use the `...In`
 * versions. */
struct repo;

/* Open the repository named by url: a directory path or `file:///path` (posix
 * driver; the directory need not exist: listing a missing one gives nothing, the
 * first backup creates it); `s3://BUCKET/PREFIX` (S3 driver, repo_s3.c); anything else
 * (empty, an unknown scheme): CAIRN_EINVAL with errmsg saying why. On success *out is
 * the caller's, to release with repoClose (NULL is fine). */
int repoOpen(const char *url, struct repo **out, char *errmsg);
void repoClose(struct repo *r);
/* The url as opened (a path for posix); owned by r. */
const char *repoUrl(const struct repo *r);
/* The directory that holds the objects when they are local files (zero-copy serving,
 * fetching into a directory), else NULL. Owned by r. */
const char *repoLocalPath(const struct repo *r);

/* A frozen page image to back up. */
struct backup_source {
    int fd;              /* the database file; read with pread, not closed by the engine */
    uint64_t raft_index; /* recorded in the header; 0: no Raft state */
    uint64_t raft_term;
    const char *source;  /* identity of the database (server: "cairnd:<data dir>";
                            standalone: the file's absolute path). Incremental and
                            differential backups take their parent among the
                            repository's backups of the same source. */
    struct snapread *snap; /* backupSnapshotFile: the snapshot the pages and the
                              geometry are read through (WAL frames over fd); NULL:
                              from fd alone */
    bool verify_pages;   /* a database of cairn's own: when it keeps page checksums
                            (pagesum.h), every page read is verified, and a damaged one
                            fails the backup naming it, rather than being copied */
    /* The history the image belongs to, recorded in the header: a server's cluster id
     * (its Raft log's), so that a point-in-time restore can tell which archive's
     * timeline continues the backup (arcsegBaseFits). All zero: none known (a plain
     * SQLite file, a cluster formed before ids). */
    unsigned char history[BACKUP_HISTORY_SIZE];
};

/* Called now and then with the bytes done and the total; may be NULL. */
typedef void (*backup_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* How a backup's pages are compressed (backup_options.codec). The default: LZ4 into a
 * repository with a local path (restores decompress at several GB/s a CPU), zstd level
 * 1 into one without (S3: fewer bytes to send, keep and fetch). */
enum { BACKUP_CODEC_DEFAULT = 0, BACKUP_CODEC_LZ4, BACKUP_CODEC_ZSTD };

struct backup_options {
    int type;                   /* BACKUP_FULL, BACKUP_INCREMENTAL, BACKUP_DIFFERENTIAL */
    const char *repo;           /* repository directory; created if missing */
    int codec;                  /* BACKUP_CODEC_* */
    int level;                  /* the codec's level; 0 means its default: zstd -3 (1
                                   for a repository without a local path, such as S3),
                                   LZ4 acceleration 1 */
    uint32_t block_pages;       /* pages per compressed block; 0 means the default */
    backup_progress_fn progress;
    void *progress_arg;
    /* Incremental or differential: the id of the parent, a backup in `repo`, instead of
     * the newest backup of the same source there (NULL or "" to choose). A cluster names
     * the newest backup of any of its nodes (adminBackup). Any backup is a correct
     * parent: the new file stores every page whose hash differs from the parent's
     * manifest, so the chain restores exactly this image whatever the parent holds. */
    const char *parent_id;
};

/* A compression as users name it: "lz4", "lz4:ACCELERATION" (1-65537, 1 the best
 * ratio), "zstd" or "zstd:LEVEL" (zstd's range, ZSTD_minCLevel() to 22, not 0;
 * negative: its fast levels) into *codec (BACKUP_CODEC_*) and *level (0: the codec's
 * default). 0, or CAIRN_EINVAL with errmsg saying what is wrong. */
int backupParseCompression(const char *s, int *codec, int *level, char *errmsg);

/* Back up the image of src into a new file `<repo>/<id>.cbk`: read page 1 for the page
 * size and page count, hash every page, choose the parent (incremental: the newest
 * backup of any type of the same source; differential: the newest full one), store
 * the pages whose hash differs from the parent's manifest (all of them for a full
 * backup), and write the file as tmp + fsync + rename (never replacing a file) +
 * directory fsync. An incremental or differential backup with nothing of its source to
 * chain to in the repository is taken as a full backup (out->type says so); one whose
 * parent_id is not there fails with CAIRN_ENOTFOUND; one whose parent's chain runs
 * through a backup whose last verification failed, or one missing or unreadable, fails
 * with CAIRN_ECORRUPT naming it (the new file could never be restored). On success
 * fills *out. On failure the temporary file is removed, the repository is as it was,
 * and errmsg says what failed and on which file. */
int backupCreate(const struct backup_source *src, const struct backup_options *opt,
                 struct backup_info *out, char *errmsg);
/* The same into the open repository repo (opt->repo is not used): the object
 * `<id>.cbk` is written through a repository writer and committed at the end. Once it
 * is committed, a repository without a local path (S3) is swept of the unfinished
 * uploads of killed writers (repoSweepTempIn): one listing, errors ignored. */
int backupCreateIn(struct repo *repo, const struct backup_source *src,
                   const struct backup_options *opt, struct backup_info *out, char *errmsg);

/* Take a snapshot of the SQLite database at db_path, which other programs may be
 * writing (WAL or rollback-journal mode), for backupCreate: src->fd and src->snap
 * read one consistent state of it, WAL content included. The source is never
 * written: it is opened read-only and held as a reader holds it until
 * backupSnapshotRelease(); no checkpoint, no change to its WAL or journal mode
 * (snapread.h says how). In rollback-journal mode writers wait for the release to
 * commit; in WAL mode they go on, and checkpoints stop short of the snapshot's frames
 * until the release. A WAL database that no process had open is read without SQLite
 * and without creating anything beside it; should a program open it meanwhile,
 * backupCreate fails with CAIRN_EBUSY once it has read the pages, keeping nothing.
 *
 * src->source is left as the caller set it; raft_index and raft_term are zeroed.
 * tmp_dir and tmp_path remain from when a busy database was copied first: nothing is
 * copied now, tmp_dir is unused and tmp_path is set to "". Release with
 * backupSnapshotRelease() as soon as the backup is written. Errors as snapreadOpen();
 * errmsg names the file. */
int backupSnapshotFile(const char *db_path, const char *tmp_dir, struct backup_source *src,
                       char *tmp_path, char *errmsg);
void backupSnapshotRelease(struct backup_source *src, const char *tmp_path);

/* Read a backup file's header and footer into *out (verified state included), without
 * reading its blocks. CAIRN_ECORRUPT (errmsg names the file and what is wrong) when
 * they do not check out. */
int backupReadInfo(const char *path, struct backup_info *out, char *errmsg);

/* The catalog: every `*.cbk` file of repo, sorted by id. Files whose header or footer
 * is damaged are listed with `error` set. *out is allocated (free() it), *n its
 * length; an empty or missing repository gives n = 0 and returns 0. */
int repoList(const char *repo, struct backup_info **out, size_t *n, char *errmsg);
int repoListIn(struct repo *repo, struct backup_info **out, size_t *n, char *errmsg);

/* Find a backup by id in repo (or, when `ref` contains a '/', the file at that
 * path). CAIRN_ENOTFOUND with a message naming the id when there is none. */
int repoFind(const char *repo, const char *ref, struct backup_info *out, char *errmsg);
/* ref REPO_LATEST: the newest readable backup of the repository (by id, that is by
 * creation time); CAIRN_ENOTFOUND when it holds none. */
#define REPO_LATEST "latest"
/* repo may be NULL when ref is a path. */
int repoFindIn(struct repo *repo, const char *ref, struct backup_info *out, char *errmsg);

/* Remove what writers killed mid-backup left in repo, leaving live writers alone;
 * *removed counts what went. A directory: the temporary files `.ID.cbk.tmp` that no
 * writer holds a lock on. S3: the unfinished multipart uploads of backup objects
 * (backupIsOwnName) begun more than CAIRN_S3_SWEEP_AGE_MS ago (default 6 h), nothing
 * else of the bucket; docs/OPERATIONS.md. Failures are not reported: what is left is
 * swept next time. */
void repoSweepTemp(const char *repo, unsigned *removed);
void repoSweepTempIn(struct repo *repo, unsigned *removed);

/* While on (counted: each on is undone by one off), every transfer to or from a remote
 * repository of the process ends at once with CAIRN_ESHUTDOWN, and an upload so ended
 * is aborted with one quick attempt (s3StopAll): a stopping server does not wait for a
 * backup, restore or fetch held up by a slow or stalled object store. Directories are
 * not affected. Any thread. */
void repoStopTransfers(bool on);
/* Whether repoStopTransfers is on: a transfer that failed meanwhile may have been cut
 * by it, which says nothing of the repository. */
bool repoTransfersStopped(void);
/* The calling thread's own transfers are out of repoStopTransfers' reach from now on
 * (s3StopAllExempt): the archiver's, whose last upload a clean stop makes. */
void repoStopTransfersExempt(void);

/* Check every backup of the chain that ends at `ref` (an id, or a path as for
 * repoFind): every checksum, the trailer digests, each parent's id and digest.
 * With trial_restore, also restore the chain into a temporary file in the
 * repository and run PRAGMA integrity_check on it. Records the outcome in the
 * sidecar file. On failure errmsg names the file and the broken part or link. */
int backupVerify(const char *repo, const char *ref, bool trial_restore,
                 backup_progress_fn progress, void *progress_arg, char *errmsg);
/* repo may be NULL when ref is a path. The trial restore's temporary file goes beside
 * the backup when the repository has a local path, else in $TMPDIR (or /tmp). */
int backupVerifyIn(struct repo *repo, const char *ref, bool trial_restore,
                   backup_progress_fn progress, void *progress_arg, char *errmsg);

struct verify_options {
    const char *ref; /* backup id, or a path to a .cbk */
    bool trial_restore;
    /* Where the trial restore's temporary file goes: a directory that exists (a restore
     * drill's scratch space, beside the server's data directory). NULL: beside the
     * backup when the repository has a local path, else in $TMPDIR (or /tmp), as
     * backupVerifyIn. Dead verifiers' leftovers there are swept first. */
    const char *scratch_dir;
    backup_progress_fn progress;
    void *progress_arg;
};

/* backupVerifyIn with options (opt->ref, opt->trial_restore, ... as its arguments);
 * repo may be NULL when opt->ref is a path. Nothing of the trial restore is left in
 * the scratch directory on return, whatever the outcome. */
int backupVerifyOpt(struct repo *repo, const struct verify_options *opt, char *errmsg);

struct restore_options {
    const char *repo;
    const char *ref;            /* backup id, or a path to a .cbk */
    const char *out;            /* the database file to create */
    bool force;                 /* replace an existing `out` */
    backup_progress_fn progress;
    void *progress_arg;
    /* May be NULL. Called with the restored file, complete and checked, before it is put
     * in place at `out`: the caller's last change to it (`cairn restore --out` leaves
     * cairn's own table out of a user's file). A change made through SQLite is atomic
     * and durable; non-zero (errmsg set) fails the restore, nothing at `out`. */
    int (*finish)(const char *path, void *arg, char *errmsg);
    void *finish_arg;
    /* SQLite's check of the restored file, once every page has been checked against its
     * hash (docs/OPERATIONS.md, "Restore"): RESTORE_CHECK_QUICK (0, the default) or
     * RESTORE_CHECK_FULL. */
    int check;
    /* Neither the file nor its directory is fsynced: the caller changes the file
     * further and syncs the result itself, before anyone sees it (a point-in-time
     * restore replays entries onto its base and fsyncs the file once, at the end). */
    bool no_sync;
};

/* What a restore asks SQLite to check of the file it wrote: PRAGMA quick_check, or
 * PRAGMA integrity_check (which also reads every index against its table).
 * RESTORE_CHECK_NONE: no SQLite check (every page is still checked against its hash);
 * only for a caller that changes the file further and runs the check on the result
 * before anyone sees it (a point-in-time restore replays entries onto its base). */
enum { RESTORE_CHECK_QUICK = 0, RESTORE_CHECK_FULL = 1, RESTORE_CHECK_NONE = 2 };

/* "quick_check", "integrity_check": the pragma of a RESTORE_CHECK_* level. */
const char *backupCheckName(int check);

/* SQLite's check (RESTORE_CHECK_QUICK or _FULL) of the complete database file at path,
 * which nobody else has open and which has no WAL: 0 when it says "ok", else
 * CAIRN_ECORRUPT with its first answer in errmsg (name: what the message calls the
 * file). It reads the file as a restore reads the file it wrote: read-only, without
 * locks, in large chunks that a thread of its own reads ahead of the check on another
 * CPU. */
int backupCheckFile(const char *path, const char *name, int check, char *errmsg);

/* Restore the chain that ends at opt->ref into opt->out: resolve the chain through
 * parent ids and parent digests back to its full backup, write the pages into a
 * temporary file beside `out` while verifying every file of the chain completely
 * (checksums, manifests, digests, every page's hash), check every page of the result
 * against the manifest of the backup, fsync, run PRAGMA quick_check (or
 * integrity_check, opt->check), then rename into place and fsync the directory.
 * `out` existing without force:
 * CAIRN_EEXIST, nothing written. On success *restored (may be NULL) describes the
 * backup restored. On failure nothing is left at `out` that was not there. */
int backupRestore(const struct restore_options *opt, struct backup_info *restored,
                  char *errmsg);
/* The same from the open repository repo (opt->repo is not used; repo may be NULL
 * when opt->ref is a path). */
int backupRestoreIn(struct repo *repo, const struct restore_options *opt,
                    struct backup_info *restored, char *errmsg);

/* Append the JSON object of a catalog entry to b (the shape of GET /admin/backups,
 * documented in the README): id, type, parent_id (null for full), created (ISO 8601
 * UTC), created_ms, raft_index, raft_term, page_size, page_count, pages, size_bytes,
 * path, duration_ms, verified ("unverified", "verified", "failed"), verified_at (ISO
 * 8601 or null), digest and parent_digest (hex, null for none), source, history (32
 * hex digits, null for none), compression ("zstd", "lz4"; null for an entry with an
 * error), and error (only when set). */
struct buf;
void backupInfoJson(const struct backup_info *info, struct buf *b);

/* A new backup id (see BACKUP_ID_SIZE). Thread-safe. */
void backupNewId(char id[BACKUP_ID_SIZE]);

/* Whether name is `<id>.cbk` for an id of backupNewId's shape
 * (`20261122T101500123Z-0000-a1b2`): an object the engine writes, as opposed to one a
 * person named or another program put beside the backups. */
bool backupIsOwnName(const char *name);

/* Whether the chain that ends at list[i] restores as far as a listing can tell: every
 * backup of it, from list[i] to its full backup, is listed and readable (no error), is
 * the file its child names as parent (id and digest), and did not fail its last
 * verification. A backup after such a break is listed, and would be chosen as a base
 * and then fail every restore. Pure: list as repoList gives it, in any order. */
bool backupChainWhole(const struct backup_info *list, size_t n, size_t i);

/* "full", "incremental", "differential"; and back (-1 when unknown). */
const char *backupTypeName(int type);
int backupTypeFromName(const char *name);

#endif
