/* The driver interface of the repository object (repo.c): what a storage back end
 * provides so that the backup engine can keep its backups there. The shape follows
 * pgBackRest's storage.intern.h: one table of functions per driver, a driver's own
 * state behind a void pointer, the engine calling only through repo.h.
 *
 * A repository is a flat namespace of objects named by short strings without '/'
 * (`<id>.cbk`, `<id>.verified`, ...). Drivers: posix (repo_posix.c, a directory) and
 * s3 (repo_s3.c, a bucket and prefix, on s3.c). Only repo.c and the drivers include
 * this file.
 *
 * Every function of a driver returns 0 or a CAIRN_E* code with errmsg
 * (CAIRN_ERRMSG_SIZE) naming the object and what failed. A driver is used by one
 * thread at a time per object (reader, writer); its open repository may be shared by
 * threads that do not list, put or remove concurrently with the same names. */
#ifndef CAIRN_REPO_DRIVER_H
#define CAIRN_REPO_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "repo.h"

struct repo_driver {
    const char *name; /* "posix", "s3" */
    /* The directory that holds the objects, when they are files (zero-copy serving,
     * fetching into a directory); NULL when the repository has no local path. */
    const char *(*localPath)(void *drv);
    /* Where an object is, for messages and backup_info.path: the file's path (posix)
     * or the object's URL. */
    void (*where)(void *drv, const char *name, char *out, size_t size);
    /* Call fn for every complete object whose name starts with prefix ("" for all),
     * in no particular order, with its size and version (repo_list_fn: what tells a
     * replaced object from the one listed before, for the catalog index; NULL when
     * the driver has nothing that does); objects being written (not yet committed)
     * may show under their temporary names. A missing repository lists nothing and
     * returns 0. fn returning non-zero stops the listing with that code. */
    int (*list)(void *drv, const char *prefix, repo_list_fn fn, void *arg, char *errmsg);
    /* Open an object for ranged reads: fill rd->io, rd->size (and the driver's part
     * of rd). CAIRN_ENOTFOUND when there is no such object. */
    int (*openRead)(void *drv, const char *name, struct repo_reader *rd, char *errmsg);
    void (*closeRead)(struct repo_reader *rd);
    /* Start a new object `name`, written sequentially: allocate *w (its first member
     * a struct repo_writer with drv set by repo.c). Nothing is visible under `name`
     * before commit. */
    int (*create)(void *drv, const char *name, struct repo_writer **w, char *errmsg);
    int (*write)(struct repo_writer *w, const void *p, size_t n, char *errmsg);
    /* Make the object visible atomically, never replacing an existing one (then
     * CAIRN_EEXIST); on failure leave nothing. Frees w in every case. */
    int (*commit)(struct repo_writer *w, char *errmsg);
    /* Drop what was written, leave nothing; frees w. */
    void (*abort)(struct repo_writer *w);
    /* Remove an object; CAIRN_ENOTFOUND when there is none. */
    int (*remove)(void *drv, const char *name, char *errmsg);
    /* Small objects (sidecars, indexes): get reads at most cap bytes into buf (*len
     * the bytes read; CAIRN_ENOTFOUND when none); put replaces the object atomically
     * and durably. */
    int (*get)(void *drv, const char *name, void *buf, size_t cap, size_t *len, char *errmsg);
    int (*put)(void *drv, const char *name, const void *buf, size_t len, char *errmsg);
    /* Remove what writers killed mid-write left (temporary files, unfinished uploads),
     * leaving live writers alone; *removed counts what went. */
    void (*sweep)(void *drv, unsigned *removed);
    void (*close)(void *drv);
};

/* Driver constructors, one per URL scheme: on success *drv is the driver's state and
 * *ops its table. posix takes a directory path (file:// already stripped). */
int repoPosixOpen(const char *dir, void **drv, const struct repo_driver **ops, char *errmsg);
int repoS3Open(const char *url, void **drv, const struct repo_driver **ops, char *errmsg);

#endif
