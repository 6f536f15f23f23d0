/* Where `cairn restore --out FILE` may write: not under a live process (cli.h,
 * cliClaimOut). A restore puts a new file at FILE with a rename and moves FILE's -wal,
 * -journal and -shm aside; done under cairnd, whose data directory FILE is in, or under
 * another program that has FILE open in SQLite, it leaves that process writing into a
 * file nobody will read again (its commits lost) or reading the new file through the old
 * one's -shm. So a restore refuses such a FILE, naming the process, before it reads the
 * repository. Main thread only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "error.h"
#include "newfile.h"

/* Whether dir holds what only a cairn data directory holds. */
static bool isDataDir(const char *dir)
{
    static const char *const marks[] = {"LOCK", "RUNNING", "node.json"};
    char path[PATH_MAX + 16];
    struct stat st;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, marks[i]);
        if (lstat(path, &st) == 0) {
            return true;
        }
    }
    return false;
}

/* The pid of another process holding a POSIX lock anywhere in path (SQLite's locks: a
 * connection in WAL mode holds one on its -shm, and cairnd one on its db.sqlite, for as
 * long as they have the file open); 0 when none does or path cannot be opened, -1 for
 * an open file description lock (whose owner has no pid). Takes no lock itself. */
static long lockHolder(const char *path)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    long pid = 0;
    if (fd < 0) {
        return 0;
    }
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
        pid = fl.l_pid > 0 ? (long)fl.l_pid : -1;
    }
    close(fd);
    return pid;
}

/* The pid of another process that has the file (dev, ino) open, as /proc/PID/fd says
 * of the processes this one may look into (Linux); 0 when none is seen. A program whose
 * SQLite connection holds no lock between transactions (rollback journal mode) or that
 * reads the file otherwise is found so. */
static long openedBy(dev_t dev, ino_t ino)
{
    DIR *procs = opendir("/proc");
    struct dirent *p;
    long found = 0;
    if (procs == NULL) {
        return 0;
    }
    while (found == 0 && (p = readdir(procs)) != NULL) {
        char fds[300];
        DIR *d;
        struct dirent *e;
        long pid = strtol(p->d_name, NULL, 10);
        if (pid <= 0 || pid == (long)getpid()) {
            continue;
        }
        snprintf(fds, sizeof fds, "/proc/%ld/fd", pid);
        if ((d = opendir(fds)) == NULL) {
            continue; /* gone, or not ours to see */
        }
        while ((e = readdir(d)) != NULL) {
            struct stat st;
            if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
                st.st_dev == dev && st.st_ino == ino) {
                found = pid;
                break;
            }
        }
        closedir(d);
    }
    closedir(procs);
    return found;
}

/* "pid N (NAME)" of a holder into out. */
static void describe(long pid, char *out, size_t n)
{
    char comm[64] = "";
    char path[64];
    FILE *f;
    if (pid <= 0) {
        snprintf(out, n, "a process (pid unknown)");
        return;
    }
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    if ((f = fopen(path, "r")) != NULL) {
        if (fgets(comm, sizeof comm, f) == NULL) {
            comm[0] = '\0';
        }
        comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    snprintf(out, n, comm[0] != '\0' ? "pid %ld (%s)" : "pid %ld", pid, comm);
}

int cliClaimOut(const char *out, bool force, struct dirlock *held, char *errmsg)
{
    static const char *const sides[] = {"", "-shm", "-wal", "-journal"};
    char link_to[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 16], who[128];
    const char *target = out;
    struct stat st;
    char *slash;
    int rv;

    *held = DIRLOCK_NONE;
    /* --force writes where a symbolic link points (newfileResolveLink); a link to
     * nothing is the restore's to refuse. */
    if (force && newfileResolveLink(out, link_to, &target, errmsg) != 0) {
        target = out;
    }
    snprintf(dir, sizeof dir, "%s", target);
    slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    /* A data directory's lock, held until the restore ends: refused while a node (or
     * another cairn command) runs on it, and no node starts on it under the restore. */
    if (isDataDir(dir) && (rv = lockAcquire(dir, held, errmsg)) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "refusing to write %s: %s%s", target, why,
               rv == CAIRN_ELOCKED ? "; a restore would replace the files of a running node "
                                     "under it (stop it first, or restore through the node: "
                                     "cairn restore ID)"
                                   : "");
        return rv;
    }
    /* A file open elsewhere, e.g. by cairnd through a hard link, or by a program using
     * it as its SQLite database: --force does not make pulling it from under its
     * writer safe. */
    for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++) {
        long pid;
        snprintf(path, sizeof path, "%s%s", target, sides[i]);
        if ((pid = lockHolder(path)) != 0) {
            describe(pid, who, sizeof who);
            errorf(errmsg,
                   "refusing to write %s: it is in use, %s holds a lock on %s (it has the "
                   "database open); a restore would replace the file under it, whose later "
                   "writes would be lost. Stop it first",
                   target, who, path);
            lockRelease(held);
            return CAIRN_ELOCKED;
        }
    }
    if (stat(target, &st) == 0 && S_ISREG(st.st_mode)) {
        long pid = openedBy(st.st_dev, st.st_ino);
        if (pid != 0) {
            describe(pid, who, sizeof who);
            errorf(errmsg,
                   "refusing to write %s: it is in use, %s has it open; a restore would "
                   "replace the file under it, whose later writes would be lost. Stop it "
                   "first",
                   target, who);
            lockRelease(held);
            return CAIRN_ELOCKED;
        }
    }
    return 0;
}
