/* Archive segments: the continuous archive's objects (issue 18, docs/FORMAT.md
 * "Archive segment"). A segment holds the committed command entries of a range of Raft
 * indexes [first, last] of one timeline, zstd-compressed, with a header that names the
 * previous segment's digest (a hash chain) and a trailer digest (XXH3-128) over the
 * whole object. A timeline is a run of segments that tile the indexes from its start
 * to its head with no gap (the next segment's first is the previous one's last + 1);
 * indexes inside a range that hold no entry were not commands (barriers, configuration
 * changes), which the writer knows because it sees every committed command.
 *
 * This file is the format and the repository-side reading: encode, decode with every
 * check, list a repository's segments, walk a timeline checking every link. It knows
 * nothing of the server (the writer is src/archive.c, the replay src/pitr.c).
 *
 * Objects are named `archive-<timeline>-<first, 20 digits>.seg`: the repository is a
 * flat namespace (repo_driver.h), so the `archive/<timeline>/` of the plan became a
 * name prefix; names sort by timeline, then by first index. Any thread; no state. */
#ifndef CAIRN_ARCSEG_H
#define CAIRN_ARCSEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup.h"
#include "error.h"

#define ARCSEG_MAGIC "CARC"
#define ARCSEG_VERSION 2        /* what is written; version 1 is read */
#define ARCSEG_HEADER_SIZE 128  /* version 1's header, the first 128 bytes of every version's */
#define ARCSEG_HEADER2_SIZE 144 /* version 2's: + the history id */
#define ARCSEG_HISTORY_SIZE 16
#define ARCSEG_TRAILER_SIZE 16
#define ARCSEG_ENTRY_HEAD 28    /* index u64, term u64, time i64, len u32 */
#define ARCSEG_TIMELINE_SIZE 40 /* a timeline's name, with its NUL */
#define ARCSEG_NAME_SIZE 96     /* an object's name, with its NUL */
#define ARCSEG_PREFIX "archive-"
#define ARCSEG_SUFFIX ".seg"
#define ARCSEG_MAX_RAW (1u << 30) /* the most a segment's body may inflate to */
/* What a body of body_len bytes may claim to inflate to: at most ARCSEG_RAW_FREE bytes
 * plus ARCSEG_MAX_RATIO times body_len, and never more than ARCSEG_MAX_RAW
 * (arcsegRawBound). A zstd frame can say it inflates 32768 times (its RLE blocks), so
 * without this a hostile object of 32 KiB could make a reader allocate 1 GiB (and the
 * entries' array more) before any byte of it was proven. The encoder keeps to it: a
 * body that compresses more is stored in raw blocks. Real entries compress far less
 * (commands compress their own bodies from 16 KiB on; segments of small repetitive
 * commands stay under 1000:1). */
#define ARCSEG_RAW_FREE (16u << 20)
#define ARCSEG_MAX_RATIO 4096u

/* One archived entry. bytes point into the segment's (or the caller's) memory. */
struct arcseg_entry {
    uint64_t index;
    uint64_t term;   /* 0: not recorded (libraft does not hand it to the fsm's apply) */
    int64_t time_ms; /* the command's time (docs/FORMAT.md, offset 8); 0 if none */
    uint32_t len;
    const unsigned char *bytes;
};

struct arcseg_header {
    char timeline[ARCSEG_TIMELINE_SIZE];
    uint64_t first, last;      /* the range of indexes the segment covers */
    uint32_t count;            /* entries in it */
    int64_t first_ms, last_ms; /* the times of its first and last entries */
    int64_t max_ms;            /* the latest time of any entry (clocks of leaders differ) */
    uint64_t raw_len;          /* the body inflated */
    uint64_t body_len;         /* the body as stored (one zstd frame) */
    unsigned char prev[BACKUP_DIGEST_SIZE]; /* the previous segment's digest; 0s: none */
    /* The history the segment belongs to (version 2): one Raft log's, that its archivers
     * carry from segment to segment; 0s: none recorded (version 1). */
    unsigned char history[ARCSEG_HISTORY_SIZE];
    uint32_t header_len; /* ARCSEG_HEADER_SIZE (version 1) or ARCSEG_HEADER2_SIZE */
};

/* A decoded segment. entries point into raw; both owned, freed by arcsegFree. */
struct arcseg {
    struct arcseg_header h;
    unsigned char digest[BACKUP_DIGEST_SIZE]; /* the trailer */
    unsigned char *raw;
    struct arcseg_entry *entries;
};

/* Encode entries e[0..n) (n >= 1, indexes increasing, all within [first, e[n-1].index])
 * as a segment of timeline, linked to prev (NULL: the timeline's first segment). On
 * success *out (malloc'd, the caller's) holds *len bytes and digest the trailer. */
int arcsegEncode(const char *timeline, uint64_t first, const unsigned char *prev,
                 const struct arcseg_entry *e, size_t n, unsigned char **out, size_t *len,
                 unsigned char digest[BACKUP_DIGEST_SIZE], char *errmsg);
/* The same, recording history (ARCSEG_HISTORY_SIZE bytes; NULL: none, zeros). */
int arcsegEncodeHistory(const unsigned char *history, const char *timeline, uint64_t first,
                        const unsigned char *prev, const struct arcseg_entry *e, size_t n,
                        unsigned char **out, size_t *len, unsigned char digest[BACKUP_DIGEST_SIZE],
                        char *errmsg);

/* The most a body of body_len bytes may inflate to (ARCSEG_MAX_RATIO above). */
uint64_t arcsegRawBound(uint64_t body_len);

/* Check the header alone (the first ARCSEG_HEADER2_SIZE bytes of an object of `size`
 * bytes, or all of them when it is shorter): magic, version, sizes (raw_len within
 * arcsegRawBound(body_len)), the timeline's name, and that the reserved bytes and the
 * name's padding are zeros. name is for messages. */
int arcsegDecodeHeader(const void *p, uint64_t size, const char *name, struct arcseg_header *h,
                       char *errmsg);

/* Decode a whole object: the header, the trailer digest over every byte, the body's
 * zstd frame and every entry (within the range, increasing, the last one at `last`,
 * the count and the first, last and latest times as the header says). CAIRN_ECORRUPT
 * naming the object and what is wrong otherwise. What it allocates is bounded by what
 * n bytes can hold: the inflated body by arcsegRawBound (checked, with the frame's own
 * content size, before allocating), the entries' array only once the body has been
 * read and holds every one of them. On success seg holds memory: arcsegFree. p stays
 * the caller's. */
int arcsegDecode(const void *p, size_t n, const char *name, struct arcseg *seg, char *errmsg);
void arcsegFree(struct arcseg *seg);

/* The time of a command entry (offset 8 of a CCMD command), 0 when it is none. */
int64_t arcsegCommandTime(const void *p, size_t n);

/* Object names. arcsegTimelineName makes a new timeline's name from its start index
 * and its base backup's digest (NULL: a random part): two archivers that start a
 * timeline on the same backup name it alike, and their segments then collide by name
 * instead of forking the archive. */
void arcsegTimelineName(uint64_t start, const unsigned char *base_digest,
                        char out[ARCSEG_TIMELINE_SIZE]);
void arcsegObjectName(const char *timeline, uint64_t first, char out[ARCSEG_NAME_SIZE]);
/* A history id as 32 lowercase hex digits. */
void arcsegHistoryHex(const unsigned char *history, char out[2 * ARCSEG_HISTORY_SIZE + 1]);
/* false when name is not a segment's. */
bool arcsegParseName(const char *name, char timeline[ARCSEG_TIMELINE_SIZE], uint64_t *first);

/* A segment as a listing found it. Filled from its name and size; the rest by
 * arcsegWalk (header and links, or the whole object). */
struct arcseg_info {
    char name[ARCSEG_NAME_SIZE];
    char timeline[ARCSEG_TIMELINE_SIZE];
    uint64_t first;
    uint64_t size;
    bool read; /* the fields below are filled */
    uint64_t last;
    uint32_t count;
    int64_t first_ms, last_ms, max_ms;
    unsigned char prev[BACKUP_DIGEST_SIZE];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    unsigned char history[ARCSEG_HISTORY_SIZE];
};

/* Every segment of repo, sorted by timeline then first index. *segs malloc'd (the
 * caller's; NULL when none). */
int arcsegList(struct repo *repo, struct arcseg_info **segs, size_t *n, char *errmsg);

/* A timeline as arcsegWalk found it. Its segments are segs[from .. from + nseg);
 * those before `bad` (nseg when none) tile [start, head] and link correctly. */
struct arcseg_timeline {
    char name[ARCSEG_TIMELINE_SIZE];
    size_t from, nseg, good; /* good: segments before the first problem */
    uint64_t start, head;    /* head = start - 1 when no segment is good */
    int64_t start_ms, head_ms;
    uint64_t entries;
    /* The first problem: "" when none; otherwise what is wrong, naming the object, and
     * bad_index the first index that cannot be restored because of it. */
    char problem[CAIRN_ERRMSG_SIZE];
    char bad_object[ARCSEG_NAME_SIZE];
    uint64_t bad_index;
    /* Its first segment's history (zeros: none recorded, or the segment unreadable). */
    unsigned char history[ARCSEG_HISTORY_SIZE];
    /* arcsegSharedHistories: the repository shows that another Raft log's backups carry
     * this history too, so a backup's history does not tell them apart. */
    bool history_shared;
};

/* Group segs (sorted, from arcsegList) into timelines and walk each: every segment's
 * header and trailer are read and each link checked against the previous segment's
 * digest, range and history (segments of two histories are never linked, whatever
 * digest they name); with full, every object is read whole and decoded (every checksum:
 * verify). A damaged segment is a timeline's problem, not an error of the call; an I/O
 * error reaching the repository is. *tls malloc'd, the caller's, in the order of segs. */
int arcsegWalk(struct repo *repo, struct arcseg_info *segs, size_t n, bool full,
               struct arcseg_timeline **tls, size_t *ntl, char *errmsg);

/* Read object `name` whole, not decoded: *out (malloc'd, the caller's) holds *len
 * bytes; nothing on failure. For a reader that decodes elsewhere (arcsegDecode). */
int arcsegFetch(struct repo *repo, const char *name, unsigned char **out, size_t *len,
                char *errmsg);

/* Read object `name` whole and decode it (arcsegDecode). */
int arcsegRead(struct repo *repo, const char *name, struct arcseg *seg, char *errmsg);

/* Histories and bases. A repository may hold the archives of several histories (a
 * cluster restored from it, or another cluster, archiving into it): their indexes are
 * ambiguous there. A backup records its history (the cluster id of the server that took
 * it, backup_info.history; zeros in backups of builds before it, of plain files, of
 * clusters without an id). arcsegSeveralHistories: whether the timelines tls
 * (arcsegWalk's, over segs) belong to more than one history (zeros, no history
 * recorded, count as one).
 *
 * arcsegBaseFits: whether backup b can be the base of a replay of tl: a readable backup
 * whose image tl's entries continue (index start - 1 up to its head) and that is of tl's
 * history: the backup tl was started on (index start - 1, and the digest prefix its name
 * carries: arcsegTimelineName) always is; otherwise, when both tl and b record a history
 * (and it is not shared, below), b is when they are the same and is not when they differ;
 * when either records none, b is only in a repository of one history. A backup of index
 * 0 that records no history (a standalone backup of a file that is no node's database:
 * the state of no log) is a base only of the timeline started on it, which none is.
 *
 * arcsegSharedHistories: mark the timelines whose history the backups bk cannot vouch
 * for (history_shared): a timeline started on a backup of another history shows two Raft
 * logs under that backup's history (a data directory copied to start a second cluster
 * keeps the first one's id; its archiver then takes a random history: archive.c), so the
 * timelines of that history take their bases by the rule of backups without one. Call it
 * before arcsegBaseFits, with every backup listed (pitr.c and expire.c, so that a
 * retention keeps what a restore takes). */
bool arcsegSeveralHistories(const struct arcseg_info *segs, const struct arcseg_timeline *tls,
                            size_t ntl);
void arcsegSharedHistories(struct arcseg_timeline *tls, size_t ntl, const struct backup_info *bk,
                           size_t nbk);
bool arcsegBaseFits(const struct arcseg_timeline *tl, bool several, const struct backup_info *b);

#endif
