/* The `.cbk` backup file format: encoders and decoders of its parts, and a reader that
 * checks a whole file.
 *
 * This module is pure: it does no I/O of its own (the reader reads through a callback)
 * and knows nothing of repositories, chains or databases, so that a fuzzer can drive
 * the reader over arbitrary bytes (cbkCheckMemory). backup.c writes files with the
 * encoders, repo.c and restore.c read them with the reader. The byte layout is
 * specified in docs/FORMAT.md, section "Backup file (`.cbk`)".
 *
 * Any thread; a cbk_reader is used by one thread at a time. */
#ifndef CAIRN_CBK_H
#define CAIRN_CBK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup.h"

#define CBK_MAGIC "CAIRNCBK" /* 8 bytes, no NUL */
/* Version 1: every block zstd, no history. Version 2 adds the codec (byte 49) and the
 * history (bytes 400-415); a writer uses it only when either is not version 1's. */
#define CBK_VERSION 2
#define CBK_HISTORY_SIZE 16
#define CBK_HEADER_SIZE 512
#define CBK_BLOCK_MAGIC "CBLK"
#define CBK_MANIFEST_MAGIC "CMAN"
#define CBK_FOOTER_MAGIC "CFTR"
#define CBK_FOOTER_SIZE 64
#define CBK_TRAILER_MAGIC "CAIRNEND"
#define CBK_TRAILER_SIZE 32

/* How a file's blocks are compressed (header byte 49 in version 2; version 1 is zstd). */
enum { CBK_CODEC_ZSTD = 0, CBK_CODEC_LZ4 = 1 };

/* Bytes of a block before its compressed pages, for n pages: magic, n, page numbers, raw
 * length, compressed length. After the frame comes an 8-byte checksum. */
#define CBK_BLOCK_HEAD_SIZE(n) (16 + 4 * (uint64_t)(n))
#define CBK_BLOCK_SUM_SIZE 8
/* Largest block, uncompressed: bounds the reader's and the writer's buffers. */
#define CBK_MAX_BLOCK_BYTES (16u << 20)
#define CBK_MAX_BLOCK_PAGES 65536u
/* SQLite's own limit on the number of pages of a database. */
#define CBK_MAX_PAGE_COUNT 4294967294u
/* Bytes of the manifest of a database of n pages: magic, reserved, page count, one
 * hash per page, checksum. */
#define CBK_MANIFEST_SIZE(n) (16 + 8 * (uint64_t)(n) + 8)

struct cbk_header {
    char id[BACKUP_ID_SIZE];
    int type;
    char parent_id[BACKUP_ID_SIZE];
    unsigned char parent_digest[BACKUP_DIGEST_SIZE];
    char source[BACKUP_SOURCE_SIZE];
    uint32_t page_size;
    uint64_t page_count;
    uint64_t raft_index;
    uint64_t raft_term;
    int64_t created_ms;
    uint32_t block_pages;
    int32_t level; /* the codec's: zstd's level, LZ4's acceleration */
    int codec;     /* CBK_CODEC_* */
    /* The cluster history the backed-up database belongs to (its cluster id); all zero
     * for none known. */
    unsigned char history[CBK_HISTORY_SIZE];
};

struct cbk_footer {
    uint64_t pages; /* pages stored in the blocks */
    uint64_t blocks;
    uint64_t raw_bytes;        /* pages * page_size */
    uint64_t compressed_bytes; /* sum of the blocks' compressed lengths */
    int64_t duration_ms;
    uint64_t manifest_offset;
};

struct cbk_trailer {
    uint64_t file_size;
    unsigned char digest[BACKUP_DIGEST_SIZE];
};

/* True when id can name a backup: 1 to BACKUP_ID_SIZE-1 characters of [A-Za-z0-9_.-],
 * not starting with '.' (ids become file names). */
bool cbkIdValid(const char *id);

/* Encoders write exactly the part's size into out. The header must be valid (the
 * writer builds it); strings are copied up to their field size, NUL padded. */
void cbkHeaderEncode(const struct cbk_header *h, unsigned char out[CBK_HEADER_SIZE]);
void cbkFooterEncode(const struct cbk_footer *f, unsigned char out[CBK_FOOTER_SIZE]);
void cbkTrailerEncode(const struct cbk_trailer *t, unsigned char out[CBK_TRAILER_SIZE]);
void cbkBlockHeadEncode(unsigned char *out, uint32_t n, const uint32_t *pgnos, uint32_t raw_len,
                        uint32_t comp_len);
void cbkManifestHeadEncode(unsigned char out[16], uint64_t page_count);

/* Decoders check every field and return 0, or CAIRN_ECORRUPT with `why` (a
 * CAIRN_ERRMSG_SIZE buffer) saying what is wrong, without naming the file. */
int cbkHeaderDecode(const unsigned char in[CBK_HEADER_SIZE], struct cbk_header *h, char *why);
int cbkFooterDecode(const unsigned char in[CBK_FOOTER_SIZE], struct cbk_footer *f, char *why);
int cbkTrailerDecode(const unsigned char in[CBK_TRAILER_SIZE], struct cbk_trailer *t, char *why);

/* The 16 digest bytes of a 128-bit XXH3 (its canonical, big-endian form). */
void cbkDigestBytes(uint64_t low64, uint64_t high64, unsigned char out[BACKUP_DIGEST_SIZE]);

/* Where the reader gets its bytes: read exactly n bytes at offset off into buf and
 * return 0, or return an errno value (EIO for a short read). why (may be NULL) says in
 * words why the last read failed, when there is more to say than the errno (an S3
 * GET's last answer), or returns NULL. willRead (may be NULL) is told that the next
 * reads go in order from off: a source that reads ahead may start. */
struct cbk_io {
    int (*read)(void *arg, uint64_t off, void *buf, size_t n);
    void *arg;
    const char *(*why)(void *arg);
    void (*willRead)(void *arg, uint64_t off);
};

/* Called by cbkScanPages with a block's n pages, decompressed and checked (pages
 * holds n * page_size bytes). Returns 0 or a code that stops the scan. */
typedef int (*cbk_pages_fn)(void *arg, const uint32_t *pgnos, uint32_t n,
                            const unsigned char *pages, char *errmsg);

/* A file being read. Fill with cbkOpen, release with cbkClose. */
struct cbk_reader {
    struct cbk_io io;
    const char *name; /* in every message; borrowed, must outlive the reader */
    uint64_t size;
    unsigned char header_bytes[CBK_HEADER_SIZE];
    struct cbk_header h;
    struct cbk_footer f;
    struct cbk_trailer t;
    /* Scratch of cbkScan and cbkScanPages, allocated on first use. */
    unsigned char *buf;
    size_t buf_cap;
    uint64_t win_off; /* cbkScan's read-ahead: buf holds the file's bytes */
    size_t win_len;   /* [win_off, win_off + win_len) */
    size_t win_lead;  /* ... at buf + win_lead */
    unsigned char *raw;
    uint32_t *pgnos;
    void *dctx;
    cbk_pages_fn pages_fn; /* cbkScanPages's */
    void *pages_arg;
    const uint64_t *pages_manifest;
};

/* Read and check the header, the footer and the trailer of a file of `size` bytes, and
 * that the parts' sizes add up to the file's. Does not read blocks or the manifest.
 * Returns 0, CAIRN_ECORRUPT (errmsg: "<name>: header: bad magic", ...) or the code of
 * an I/O error. On failure the reader holds nothing to release. */
int cbkOpen(struct cbk_reader *r, const struct cbk_io *io, uint64_t size, const char *name,
            char *errmsg);
void cbkClose(struct cbk_reader *r);

/* Read the manifest into hashes (h.page_count entries, the caller's) and check its
 * head and checksum. */
int cbkReadManifest(struct cbk_reader *r, uint64_t *hashes, char *errmsg);

/* A block as cbkScan found it: its place, its page numbers and its zstd frame, all
 * checked against the block's checksum. Pointers valid during the callback only. */
struct cbk_block {
    uint64_t index;  /* 0 for the first block */
    uint64_t offset; /* in the file */
    uint32_t n;
    const uint32_t *pgnos;
    const unsigned char *frame;
    uint32_t comp;
};

/* Called by cbkScan for each block. Returns 0, or a code (errmsg set) that stops the
 * scan. */
typedef int (*cbk_block_fn)(void *arg, const struct cbk_block *b, char *errmsg);
/* Called after each block with the bytes of the file read so far. */
typedef void (*cbk_offset_fn)(void *arg, uint64_t offset);

/* Read the whole file in order and check everything but the content of the frames:
 * the header bytes unchanged since cbkOpen, every block (magic, page count, page
 * numbers ascending through the file and within the database, lengths, checksum),
 * the counters of the footer, the manifest's head and checksum (and, when `manifest`
 * is not NULL, that it still holds those hashes), the footer unchanged, and the
 * XXH3-128 of every byte against the trailer. fn (may be NULL) sees each block once
 * its checksum passed, before the digest is known. Returns 0 or the code of what
 * failed, errmsg naming the file and the part ("block 3 at offset 1049600: checksum
 * mismatch"). */
int cbkScan(struct cbk_reader *r, const uint64_t *manifest, cbk_block_fn fn, void *arg,
            cbk_offset_fn progress, void *progress_arg, char *errmsg);

/* The most bytes that raw bytes compress to under codec (a block's compressed length
 * is at most this). */
size_t cbkCodecBound(int codec, size_t raw);

/* "zstd", "lz4". */
const char *cbkCodecName(int codec);

/* Decompress a block's comp bytes (in) into raw: 0 when they are exactly one zstd
 * frame or exactly one LZ4 block (codec) and give exactly want bytes; else
 * CAIRN_ECORRUPT, or CAIRN_ENOMEM, with why saying what. dctx: a ZSTD_DCtx for zstd
 * (NULL: out of memory), unused for LZ4. */
int cbkInflate(int codec, void *dctx, const unsigned char *in, size_t comp, unsigned char *raw,
               size_t want, char *why);

/* Decompress a block into raw (n * page_size bytes) with dctx (a ZSTD_DCtx, for a
 * file of zstd blocks; cbkInflate), and check each page's hash against the
 * manifest. Reads r's header and name only: several threads may decode
 * blocks of one reader at once, each with its own dctx and raw. */
int cbkDecodeBlock(const struct cbk_reader *r, const struct cbk_block *b, const uint64_t *manifest,
                   void *dctx, unsigned char *raw, char *errmsg);

/* cbkScan that also decodes every block (cbkDecodeBlock against `manifest`, the file's
 * own from cbkReadManifest) and passes its pages to fn (may be NULL). */
int cbkScanPages(struct cbk_reader *r, const uint64_t *manifest, cbk_pages_fn fn, void *arg,
                 cbk_offset_fn progress, void *progress_arg, char *errmsg);

/* Check a whole file held in memory, as cbkScanPages with its manifest does. The fuzzing
 * entry point. Returns 0, CAIRN_ECORRUPT or CAIRN_ENOMEM. */
int cbkCheckMemory(const void *p, size_t n, char *errmsg);

#endif
