/* A new file that nobody sees until it is complete: written without a name (O_TMPFILE)
 * and linked into place at the end, so that a writer killed at any point (kill -9, a
 * crash, a power cut) leaves nothing behind; on a file system without O_TMPFILE, a
 * hidden temporary name beside the destination, `.<base>.<what>-XXXXXX`, held under an
 * flock while the writer lives, so that the next writer for the same destination can
 * tell a dead writer's leftovers from a live one's (newfileSweep). Also the writing of
 * such a file in ordered runs (newfilePwritev).
 *
 * Used by restores (src/backup/restore.c): the restored database is written, checked
 * and fsynced here, then put in place. Knows nothing of cairn but its error codes.
 *
 * Any thread; a struct newfile is used by one thread at a time. */
#ifndef CAIRN_NEWFILE_H
#define CAIRN_NEWFILE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* newfileOpen's flags. NEWFILE_NAMED: a hidden name from the start, never O_TMPFILE
 * (what a file system without O_TMPFILE gets anyway). */
#define NEWFILE_NAMED 1u

struct newfile {
    int fd;                /* read-write; -1 once closed */
    bool anonymous;        /* no name yet: O_TMPFILE, not linked */
    char tmp[PATH_MAX];    /* its hidden name; "" while it has none */
    char proc[32];         /* "/proc/self/fd/N" of an anonymous file */
    char prefix[PATH_MAX]; /* "DIR/.BASE.WHAT-": hidden names start so */
};

/* Make a new empty file that is to become `path` (in path's directory, which must
 * exist), with permissions `mode` (not subject to the umask), the flock held. `what`
 * ("restore", "verify") goes into a hidden name. Returns 0, or a CAIRN_E* code with
 * errmsg (CAIRN_ERRMSG_SIZE) naming path; on failure nothing was made. */
int newfileOpen(struct newfile *f, const char *path, const char *what, mode_t mode, unsigned flags,
                char *errmsg);

/* A path that opens the file now, for a program that takes paths (SQLite): its hidden
 * name, or /proc/self/fd/N while it has none (which SQLite's default VFS resolves to
 * a name that does not exist: open it through a VFS that takes it as it is). Valid
 * until the next call on f. */
const char *newfilePath(const struct newfile *f);

/* Give an anonymous file its hidden name (f->tmp), for a caller that must open it by
 * a name beside which other files may appear (SQLite's journal). A writer killed from
 * then on leaves the hidden file, which newfileSweep removes. Nothing to do when it has
 * one. Returns 0 or a CAIRN_E* code. */
int newfileName(struct newfile *f, char *errmsg);

/* Put the file, complete (the caller fsynced it), at path: a link or rename that
 * replaces what is there when `replace`, and else fails with CAIRN_EEXIST (nothing
 * moved). The caller fsyncs the directory after (libSyncParentDir). On failure the file
 * is where it was. */
int newfilePlace(struct newfile *f, const char *path, bool replace, char *errmsg);

/* newfilePlace(f, path, true, ...) for a SQLite database: the `-wal`, `-journal` and
 * `-shm` beside path belong to the database replaced and would be read into the new
 * one, so they are renamed aside (`.<base>.replaced-<pid>-wal`, ...) before the file
 * takes path's name and removed once it has; when it does not get there, they are
 * renamed back, so that a failure leaves the old database as it was (its committed
 * writes still in its -wal, a hot journal still beside it). Killed between the two
 * renames, the old database's side files stay under those hidden names
 * (`.<base>.replaced-NEWINO-OLDINO-PID-wal`), which newfileSweepReplaced settles.
 * Returns 0 or a CAIRN_E* code with errmsg. */
int newfileReplaceDatabase(struct newfile *f, const char *path, char *errmsg);

/* The same for the complete file at tmp (on path's file system), renamed to path. */
int newfileRenameDatabase(const char *tmp, const char *path, char *errmsg);

/* Settle what a writer killed inside newfileRenameDatabase left for path: each hidden
 * side file of a writer no longer alive is put back beside path when path is still the
 * database it was moved from (the new file never got there: the old -wal holds the
 * old database's last commits), and removed when path is the new file or neither (it
 * would be read into a database not its own). One that cannot go back because a file
 * took its name stays. Call before anything opens path. Returns how many were
 * settled; errors are ignored. */
unsigned newfileSweepReplaced(const char *path);

/* The file a restore that replaces path (--force) is to write: path itself, or, when
 * path is a symbolic link, the file it points to (as SQLite, cp and shells do: renaming
 * over the link would replace the link with a regular file, and leave the database the
 * link's users open as it was). *out points to path or to target (PATH_MAX). Returns 0,
 * or CAIRN_EINVAL with errmsg naming the link and its target when the target cannot be
 * resolved (a link to nothing). */
int newfileResolveLink(const char *path, char *target, const char **out, char *errmsg);

/* Close the file, and remove its hidden name when it still has one (a file not put in
 * place). Safe on a closed or never opened (fd -1) file. */
void newfileClose(struct newfile *f);

/* Remove what dead writers left for path: each hidden `.<base>.<what>-XXXXXX` file
 * beside it whose flock nobody holds, with the `-journal`, `-wal` and `-shm` files
 * beside it, and such side files whose hidden file is gone. A live writer's files are
 * left alone. Returns how many hidden files were removed. Errors are ignored. */
unsigned newfileSweep(const char *path, const char *what);

/* Write the n buffers of iov (at most IOV_MAX) at offset off, as one pwritev when the
 * system takes it whole, retrying on EINTR and short writes. Returns 0 or an errno
 * value (EIO when the system wrote nothing without saying why). iov is changed. */
int newfilePwritev(int fd, struct iovec *iov, int n, uint64_t off);

/* A hidden scratch directory beside path, `.<base>.<what>-XXXXXX/`, for a writer that
 * must name its files (SQLite's database and its journal or WAL) until the result is
 * put at path: held under an flock on the directory while the writer lives, so that a
 * writer killed at any point leaves nothing at path, and what it left beside it is
 * removed by the next newdirOpen for the same path and `what` (a live writer's is left
 * alone). Two writers for one path each have their own. */
struct newdir {
    int fd; /* the directory, flocked; -1 once closed */
    char dir[PATH_MAX];
};

/* Sweep what dead writers left for path, then make d. 0, or a CAIRN_E* code with
 * errmsg (CAIRN_ERRMSG_SIZE) naming the directory; on failure nothing was made. */
int newdirOpen(struct newdir *d, const char *path, const char *what, char *errmsg);

/* Remove every file in the directory, then the directory. Safe on a closed one. */
void newdirClose(struct newdir *d);

/* Remove the scratch directories of dead writers for path (no flock held on them);
 * returns how many. Errors are ignored. */
unsigned newdirSweep(const char *path, const char *what);

#endif
