/* The catalog index of a repository: the object `catalog.idx`, a cache of what the
 * repository's other objects say, so that listing a remote repository of thousands of
 * backups costs its LIST requests and one GET rather than several ranged GETs per
 * backup (docs/FORMAT.md, "Catalog index"; docs/ARCHITECTURE.md, "Repository object").
 *
 * An entry remembers one object as it was when listed: its name, its version (the
 * driver's string that changes whenever the object is replaced: an S3 ETag and
 * Last-Modified time) and size, and what reading it gave: a `.cbk` object's catalog
 * fields (its header, footer and trailer), or the message that says why it is damaged;
 * a `<id>.verified` sidecar's state, time and digest. repo.c uses an entry only for an
 * object listed now under the same name, version and size; everything else is read
 * again. This file only encodes and decodes; it makes no request.
 *
 * Any thread; a decoded index is read-only and may be shared. */
#ifndef CAIRN_CATIDX_H
#define CAIRN_CATIDX_H

#include <stddef.h>
#include <stdint.h>

#include "backup.h"

/* The index's object name (not a `.cbk`, so never taken for a backup). */
#define CATIDX_NAME "catalog.idx"

/* Kinds of entries: a readable `.cbk` (the catalog fields of a backup_info); a `.cbk`
 * whose header, footer or trailer do not check out (backup_info.error says why); a
 * `<id>.verified` sidecar (verified, verified_ms, digest). */
#define CATIDX_BACKUP 1
#define CATIDX_DAMAGED 2
#define CATIDX_SIDECAR 3

/* Limits a reader enforces (an index beyond them is ignored, as if absent; a writer
 * does not write one). The body of 10,000 backups takes about 3 MiB, compressed 1. */
#define CATIDX_MAX_ENTRIES 1000000u
#define CATIDX_MAX_BODY ((size_t)64 << 20)
#define CATIDX_MAX_NAME 1024u
#define CATIDX_MAX_VERSION 255u

/* One entry to write. info is borrowed: for CATIDX_BACKUP its catalog fields (id,
 * type, parent_id, parent_digest, digest, source, created_ms, raft_index, raft_term,
 * page_size, page_count, pages, duration_ms, history, codec; not path, size_bytes,
 * verified or repository); for CATIDX_DAMAGED its error; for CATIDX_SIDECAR verified (0
 * when the sidecar says nothing usable), verified_ms and digest. */
struct catidx_put {
    int kind;
    const char *name;    /* 1 to CATIDX_MAX_NAME bytes, no NUL */
    const char *version; /* 1 to CATIDX_MAX_VERSION bytes */
    uint64_t size;
    const struct backup_info *info;
};

/* Encode n entries (any order; names must be distinct) into a new index: *out is
 * allocated (the caller frees it), *len its size. CAIRN_EINVAL (errmsg says which
 * entry) for a name or version out of bounds, a duplicate name or an unknown kind;
 * CAIRN_ENOMEM. */
int catidxEncode(const struct catidx_put *v, size_t n, unsigned char **out, size_t *len,
                 char *errmsg);

struct catidx;

/* Decode and check an index (p, len bytes; borrowed only during the call): magic,
 * version, checksum, the frame and every entry (lengths, strings, kinds and fields in
 * range, names strictly ascending). On success *out is the caller's (catidxFree).
 * CAIRN_ECORRUPT with errmsg saying what is wrong, or CAIRN_ENOMEM. */
int catidxDecode(const void *p, size_t len, struct catidx **out, char *errmsg);
void catidxFree(struct catidx *idx);

/* Number of entries. */
size_t catidxCount(const struct catidx *idx);

/* The entry for object `name` listed with this version and size: its kind, or 0 when
 * the index has no such entry (no entry of that name, or one of another version or
 * size: the object was replaced since). version NULL never matches. *at receives the
 * entry's position for catidxFill. */
int catidxFind(const struct catidx *idx, const char *name, const char *version, uint64_t size,
               size_t *at);

/* Copy entry `at` into *out: the fields catidx_put says its kind holds, the others
 * left as they were. */
void catidxFill(const struct catidx *idx, size_t at, struct backup_info *out);

#endif
