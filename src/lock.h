/* The data directory's lock file, DATA/LOCK: an flock held for the life of the
 * process, holding the holder's pid so that a second process can name it.
 * Any thread. */
#ifndef CAIRN_LOCK_H
#define CAIRN_LOCK_H

/* Take the lock on dir/LOCK. On success *fd holds it (keep it open). If another
 * process holds it, returns CAIRN_ELOCKED and errmsg names the holder's pid. */
int lockAcquire(const char *dir, int *fd, char *errmsg);

/* Release a lock taken by lockAcquire. Safe on -1. */
void lockRelease(int fd);

#endif
