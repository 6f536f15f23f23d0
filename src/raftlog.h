/* Offline verification of libraft's uv storage: the files in DATA/raft/.
 *
 * cairn keeps its Raft log in libraft's own format (libraft 0.15, disk format 1), which
 * libraft reads only at start-up and then all or nothing. This module is cairn's own
 * reader of that format, written from libraft's source (uv_metadata.c, uv_segment.c,
 * uv_encoding.c, uv_snapshot.c) so that a log can be checked without starting a node:
 * `cairn log verify`, `cairn check`, and later the server's start-up check after an
 * unclean stop. It opens every file read-only and changes nothing.
 *
 * What it checks, in the order libraft loads them:
 *   - metadata1, metadata2: 32 bytes each (format, version, term, vote; libraft keeps no
 *     checksum in them), format 1, version not 0, not both at the same version.
 *   - snapshot-TERM-INDEX-TIMESTAMP.meta: format, the CRC32 of the configuration, the
 *     configuration's encoding; the .snapshot beside it: present, and when it is an LZ4
 *     frame (libraft compresses snapshots) every checksum of the frame; a cairn manifest
 *     inside is decoded (index and backup id).
 *   - closed segments FIRST-LAST (16 digits each) and open segments open-N: the format
 *     word, every batch's header CRC and data CRC, the entry types, the entry count of a
 *     closed segment against its name, and index continuity from the newest snapshot (or
 *     index 1) to the last entry; open segments continue after the last closed one.
 *     Open segments are preallocated, so zeros after the last batch are normal.
 *
 * Memory is bounded: segments are streamed in 64 KiB chunks, a batch header is
 * checked as it streams, and every length is checked against the file's size before it
 * is trusted. Synchronous, blocking file I/O; any thread; no shared state except a CRC
 * table built once. */
#ifndef CAIRN_RAFTLOG_H
#define CAIRN_RAFTLOG_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/* Kinds of problem.
 * RAFTLOG_DAMAGED: libraft refuses this log, or would silently drop entries that may
 *   have been acknowledged: the log is damaged.
 * RAFTLOG_TORN_TAIL: the newest open segment ends in a batch that does not check out,
 *   with only zeros after it: the write in progress at a crash (never acknowledged), or
 *   damage of the last batch. libraft 0.15 truncates it away at the next start, or
 *   refuses to start when the batch runs past the end of the file. Still a problem: the
 *   two cannot be told apart, and the entries are gone either way. */
#define RAFTLOG_DAMAGED 1
#define RAFTLOG_TORN_TAIL 2

#define RAFTLOG_PROBLEMS_MAX 16
#define RAFTLOG_FILE_SIZE 96
#define RAFTLOG_MESSAGE_SIZE 384

struct raftlog_problem {
    char file[RAFTLOG_FILE_SIZE];       /* name inside the raft directory, e.g. "open-3" */
    int64_t offset;                     /* byte offset in that file; -1 for the whole file */
    int kind;                           /* RAFTLOG_DAMAGED, RAFTLOG_TORN_TAIL */
    char message[RAFTLOG_MESSAGE_SIZE]; /* what is wrong, without the file's name, e.g.
                                           "batch at offset 1234: data checksum mismatch
                                           (stored 0x1a2b3c4d, computed 0x5e6f7a8b)" */
};

/* What raftlogVerify() found. About 8 KiB. */
struct raftlog_report {
    unsigned files_checked;    /* metadata, segment and snapshot files read */
    unsigned closed_segments;  /* counts of the files found */
    unsigned open_segments;    /* including preallocated, still empty ones */
    unsigned snapshots;        /* .meta files */
    uint64_t bytes_checked;    /* bytes read */
    uint64_t entries;          /* log entries found in the segments */
    uint64_t entry_bytes;      /* bytes of their payloads (sound batches only) */
    uint64_t first_index;      /* index of the first entry in the segments, 0 when none */
    uint64_t last_index;       /* index of the last one, 0 when none */
    uint64_t metadata_version; /* of the metadata file in force, 0 when none */
    uint64_t term;             /* current term and vote from that file */
    uint64_t voted_for;
    uint64_t snapshot_index; /* newest snapshot (libraft loads that one), 0 when none */
    uint64_t snapshot_term;
    char snapshot_backup[128]; /* the backup id its cairn manifest names; "" when the
                                  snapshot is not a readable cairn manifest */
    /* The index of the last entry before the first problem, in load order (the newest
     * snapshot's index when no entry is sound): what can be read of the log. */
    uint64_t good_index;
    /* The newest configuration that can be read (of a sound configuration entry, or of
     * the newest snapshot's .meta, whichever has the higher index); conf_servers 0 when
     * none. */
    uint64_t conf_index;
    unsigned conf_servers;
    struct raftlog_server {
        uint64_t id;
        char address[128];
        int role; /* 0 standby, 1 voter, 2 spare: libraft's RAFT_STANDBY, RAFT_VOTER, RAFT_SPARE */
    } conf[16];
    size_t n_problems;         /* problems[0..n_problems), in the order libraft loads the
                                  files: problems[0] is the first bad file */
    size_t problems_omitted;   /* further problems that did not fit */
    struct raftlog_problem problems[RAFTLOG_PROBLEMS_MAX];
};

/* Called now and then with the bytes read so far and the bytes to read in all. */
typedef void (*raftlog_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Check every libraft file in raft_dir (see the top of this file) and fill *out.
 * progress may be NULL.
 *
 * Returns 0 when the log is healthy (no problem); CAIRN_ECORRUPT when at least one
 * problem was found (out->problems lists them, errmsg is "<raft_dir>/<file>: <message>"
 * of the first); CAIRN_ENOTFOUND when raft_dir does not exist, CAIRN_EIO when it cannot
 * be listed, CAIRN_ENOMEM; in these last three cases errmsg says why and *out holds
 * what was found before. A file that cannot be read is a problem of that file, not a
 * failure of the whole check. */
int raftlogVerify(const char *raft_dir, raftlog_progress_fn progress, void *progress_arg,
                  struct raftlog_report *out, char *errmsg);

/* libraft's CRC32 (polynomial 0x04C11DB7, most significant bit first, no reflection, no
 * final xor; the batch checksums start from 0). Thread-safe. */
uint32_t raftlogCrc32(const void *p, size_t n, uint32_t crc);

/* "damaged", "torn_tail". */
const char *raftlogKindName(int kind);

/* Append the report as one JSON object to b: ok, files_checked, bytes_checked, entries,
 * entry_bytes, first_index and last_index (null when there are no entries),
 * closed_segments, open_segments, snapshots, term, voted_for, snapshot ({index, term, backup} or null),
 * problems ([{file, offset (null for the whole file), kind, message}]) and
 * problems_omitted. file is prefixed with file_prefix (e.g. "raft/"; NULL for none). */
void raftlogReportJson(const struct raftlog_report *r, const char *file_prefix, struct buf *b);

#endif
