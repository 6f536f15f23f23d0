/* The data directory's lock: an flock on DATA/LOCK, which holds the holder's pid so that
 * a second process can name it, and one on the directory itself, held for the life of
 * the process. The directory's lock holds when LOCK is removed under a running node (an
 * operator cleaning up what looks like a stale lock file): a second process would
 * otherwise create a new LOCK, lock it, and run on the same files. Any thread. */
#ifndef CAIRN_LOCK_H
#define CAIRN_LOCK_H

struct dirlock {
    int file; /* DATA/LOCK */
    int dir;  /* DATA itself */
};

/* A lock not held: what lockRelease leaves, and what it may be given. */
#define DIRLOCK_NONE ((struct dirlock){-1, -1})

/* Take the lock of dir. On success *l holds it (keep it until lockRelease). If another
 * process holds it, returns CAIRN_ELOCKED and errmsg names the holder's pid (when
 * DATA/LOCK still says it). On failure *l is DIRLOCK_NONE. */
int lockAcquire(const char *dir, struct dirlock *l, char *errmsg);

/* Release a lock taken by lockAcquire; *l becomes DIRLOCK_NONE. Safe on DIRLOCK_NONE. */
void lockRelease(struct dirlock *l);

#endif
