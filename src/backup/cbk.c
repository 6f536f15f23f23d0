/* The `.cbk` format (see cbk.h and docs/FORMAT.md): fixed-size parts encoded and
 * decoded field by field, and a reader that walks a file in order, checking each
 * magic, length and checksum before it uses what they guard.
 *
 * Pure: bytes come through a cbk_io callback. Any thread; one reader per thread. */
#include "cbk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "buf.h"
#include "error.h"
#include "hash.h"
#include "lib.h"

/* Header field offsets (docs/FORMAT.md). */
#define H_MAGIC 0
#define H_VERSION 8
#define H_SIZE 12
#define H_ID 16
#define H_TYPE 48
#define H_CODEC 49 /* version 2 */
#define H_BLOCK_PAGES 52
#define H_PARENT_ID 56
#define H_PARENT_DIGEST 88
#define H_SOURCE 104
#define H_PAGE_SIZE 360
#define H_LEVEL 364
#define H_PAGE_COUNT 368
#define H_RAFT_INDEX 376
#define H_RAFT_TERM 384
#define H_CREATED 392
#define H_HISTORY 400 /* version 2 */
#define H_RESERVED 400 /* version 1 */
#define H_RESERVED_2 416
#define H_SUM 504

/* Footer field offsets. */
#define F_PAGES 8
#define F_BLOCKS 16
#define F_RAW 24
#define F_COMP 32
#define F_DURATION 40
#define F_MANIFEST 48
#define F_SUM 56

/* The manifest is read and hashed in chunks of this many bytes. */
#define MANIFEST_CHUNK (1u << 20)
/* Blocks are read ahead by at least this many bytes: small blocks cost one read
 * between them, not three each. */
#define SCAN_WINDOW (256u << 10)

static void putU32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void putU64(unsigned char *p, uint64_t v)
{
    putU32(p, (uint32_t)v);
    putU32(p + 4, (uint32_t)(v >> 32));
}

bool cbkIdValid(const char *id)
{
    size_t n = strnlen(id, BACKUP_ID_SIZE);
    if (n == 0 || n >= BACKUP_ID_SIZE || id[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

/* Copy a NUL-padded string field out of the header: it must hold a NUL. */
static bool getString(const unsigned char *p, size_t size, char *out)
{
    if (memchr(p, '\0', size) == NULL) {
        return false;
    }
    memcpy(out, p, size);
    return true;
}

static void putString(unsigned char *p, size_t size, const char *s)
{
    size_t n = strnlen(s, size - 1);
    memset(p, 0, size);
    memcpy(p, s, n);
}

void cbkHeaderEncode(const struct cbk_header *h, unsigned char out[CBK_HEADER_SIZE])
{
    bool v2 = h->codec != CBK_CODEC_ZSTD || !libIsZero(h->history, CBK_HISTORY_SIZE);
    memset(out, 0, CBK_HEADER_SIZE);
    memcpy(out + H_MAGIC, CBK_MAGIC, 8);
    putU32(out + H_VERSION, v2 ? 2 : 1);
    putU32(out + H_SIZE, CBK_HEADER_SIZE);
    putString(out + H_ID, BACKUP_ID_SIZE, h->id);
    out[H_TYPE] = (unsigned char)h->type;
    if (v2) {
        out[H_CODEC] = (unsigned char)h->codec;
        memcpy(out + H_HISTORY, h->history, CBK_HISTORY_SIZE);
    }
    putU32(out + H_BLOCK_PAGES, h->block_pages);
    putString(out + H_PARENT_ID, BACKUP_ID_SIZE, h->parent_id);
    memcpy(out + H_PARENT_DIGEST, h->parent_digest, BACKUP_DIGEST_SIZE);
    putString(out + H_SOURCE, BACKUP_SOURCE_SIZE, h->source);
    putU32(out + H_PAGE_SIZE, h->page_size);
    putU32(out + H_LEVEL, (uint32_t)h->level);
    putU64(out + H_PAGE_COUNT, h->page_count);
    putU64(out + H_RAFT_INDEX, h->raft_index);
    putU64(out + H_RAFT_TERM, h->raft_term);
    putU64(out + H_CREATED, (uint64_t)h->created_ms);
    putU64(out + H_SUM, XXH3_64bits(out, H_SUM));
}

int cbkHeaderDecode(const unsigned char in[CBK_HEADER_SIZE], struct cbk_header *h, char *why)
{
    uint32_t v;
    memset(h, 0, sizeof *h);
    if (memcmp(in + H_MAGIC, CBK_MAGIC, 8) != 0) {
        errorf(why, "bad magic (not a cairn backup file)");
        return CAIRN_ECORRUPT;
    }
    uint32_t version = getU32(in + H_VERSION);
    if (version < 1 || version > CBK_VERSION) {
        errorf(why, "format version %u, this build reads versions 1 to %u", version,
               CBK_VERSION);
        return CAIRN_ECORRUPT;
    }
    if ((v = getU32(in + H_SIZE)) != CBK_HEADER_SIZE) {
        errorf(why, "header size %u, expected %u", v, CBK_HEADER_SIZE);
        return CAIRN_ECORRUPT;
    }
    if (getU64(in + H_SUM) != XXH3_64bits(in, H_SUM)) {
        errorf(why, "checksum mismatch");
        return CAIRN_ECORRUPT;
    }
    if (!getString(in + H_ID, BACKUP_ID_SIZE, h->id) || !cbkIdValid(h->id) ||
        !libIsZero(in + H_ID + strlen(h->id), BACKUP_ID_SIZE - strlen(h->id))) {
        errorf(why, "invalid backup id");
        return CAIRN_ECORRUPT;
    }
    h->type = in[H_TYPE];
    if (h->type < BACKUP_FULL || h->type > BACKUP_DIFFERENTIAL) {
        errorf(why, "unknown backup type %d", h->type);
        return CAIRN_ECORRUPT;
    }
    if (version == 1) {
        if (!libIsZero(in + H_TYPE + 1, 3) || !libIsZero(in + H_RESERVED, H_SUM - H_RESERVED)) {
            errorf(why, "reserved bytes are not zero");
            return CAIRN_ECORRUPT;
        }
        h->codec = CBK_CODEC_ZSTD;
    } else {
        h->codec = in[H_CODEC];
        if (h->codec != CBK_CODEC_ZSTD && h->codec != CBK_CODEC_LZ4) {
            errorf(why, "unknown codec %d", h->codec);
            return CAIRN_ECORRUPT;
        }
        if (!libIsZero(in + H_CODEC + 1, 2) || !libIsZero(in + H_RESERVED_2, H_SUM - H_RESERVED_2)) {
            errorf(why, "reserved bytes are not zero");
            return CAIRN_ECORRUPT;
        }
        memcpy(h->history, in + H_HISTORY, CBK_HISTORY_SIZE);
    }
    if (!getString(in + H_PARENT_ID, BACKUP_ID_SIZE, h->parent_id) ||
        !libIsZero(in + H_PARENT_ID + strlen(h->parent_id), BACKUP_ID_SIZE - strlen(h->parent_id))) {
        errorf(why, "invalid parent id");
        return CAIRN_ECORRUPT;
    }
    memcpy(h->parent_digest, in + H_PARENT_DIGEST, BACKUP_DIGEST_SIZE);
    if (h->type == BACKUP_FULL) {
        if (h->parent_id[0] != '\0' || !libIsZero(h->parent_digest, BACKUP_DIGEST_SIZE)) {
            errorf(why, "a full backup with a parent");
            return CAIRN_ECORRUPT;
        }
    } else if (!cbkIdValid(h->parent_id)) {
        errorf(why, "invalid parent id");
        return CAIRN_ECORRUPT;
    }
    if (!getString(in + H_SOURCE, BACKUP_SOURCE_SIZE, h->source)) {
        errorf(why, "source is not NUL-terminated");
        return CAIRN_ECORRUPT;
    }
    h->page_size = getU32(in + H_PAGE_SIZE);
    if (h->page_size < 512 || h->page_size > 65536 || (h->page_size & (h->page_size - 1))) {
        errorf(why, "invalid page size %u", h->page_size);
        return CAIRN_ECORRUPT;
    }
    h->block_pages = getU32(in + H_BLOCK_PAGES);
    if (h->block_pages == 0 || h->block_pages > CBK_MAX_BLOCK_PAGES ||
        (uint64_t)h->block_pages * h->page_size > CBK_MAX_BLOCK_BYTES) {
        errorf(why, "invalid block size of %u pages", h->block_pages);
        return CAIRN_ECORRUPT;
    }
    h->level = (int32_t)getU32(in + H_LEVEL);
    h->page_count = getU64(in + H_PAGE_COUNT);
    if (h->page_count > CBK_MAX_PAGE_COUNT) {
        errorf(why, "page count %llu beyond SQLite's limit", (unsigned long long)h->page_count);
        return CAIRN_ECORRUPT;
    }
    h->raft_index = getU64(in + H_RAFT_INDEX);
    h->raft_term = getU64(in + H_RAFT_TERM);
    h->created_ms = (int64_t)getU64(in + H_CREATED);
    return 0;
}

void cbkFooterEncode(const struct cbk_footer *f, unsigned char out[CBK_FOOTER_SIZE])
{
    memset(out, 0, CBK_FOOTER_SIZE);
    memcpy(out, CBK_FOOTER_MAGIC, 4);
    putU64(out + F_PAGES, f->pages);
    putU64(out + F_BLOCKS, f->blocks);
    putU64(out + F_RAW, f->raw_bytes);
    putU64(out + F_COMP, f->compressed_bytes);
    putU64(out + F_DURATION, (uint64_t)f->duration_ms);
    putU64(out + F_MANIFEST, f->manifest_offset);
    putU64(out + F_SUM, XXH3_64bits(out, F_SUM));
}

int cbkFooterDecode(const unsigned char in[CBK_FOOTER_SIZE], struct cbk_footer *f, char *why)
{
    if (memcmp(in, CBK_FOOTER_MAGIC, 4) != 0) {
        errorf(why, "bad magic");
        return CAIRN_ECORRUPT;
    }
    if (getU64(in + F_SUM) != XXH3_64bits(in, F_SUM)) {
        errorf(why, "checksum mismatch");
        return CAIRN_ECORRUPT;
    }
    if (!libIsZero(in + 4, 4)) {
        errorf(why, "reserved bytes are not zero");
        return CAIRN_ECORRUPT;
    }
    f->pages = getU64(in + F_PAGES);
    f->blocks = getU64(in + F_BLOCKS);
    f->raw_bytes = getU64(in + F_RAW);
    f->compressed_bytes = getU64(in + F_COMP);
    f->duration_ms = (int64_t)getU64(in + F_DURATION);
    f->manifest_offset = getU64(in + F_MANIFEST);
    if (f->duration_ms < 0) {
        errorf(why, "negative duration");
        return CAIRN_ECORRUPT;
    }
    return 0;
}

void cbkTrailerEncode(const struct cbk_trailer *t, unsigned char out[CBK_TRAILER_SIZE])
{
    memcpy(out, CBK_TRAILER_MAGIC, 8);
    putU64(out + 8, t->file_size);
    memcpy(out + 16, t->digest, BACKUP_DIGEST_SIZE);
}

int cbkTrailerDecode(const unsigned char in[CBK_TRAILER_SIZE], struct cbk_trailer *t, char *why)
{
    if (memcmp(in, CBK_TRAILER_MAGIC, 8) != 0) {
        errorf(why, "bad magic (the file is truncated or was not completely written)");
        return CAIRN_ECORRUPT;
    }
    t->file_size = getU64(in + 8);
    memcpy(t->digest, in + 16, BACKUP_DIGEST_SIZE);
    return 0;
}

void cbkBlockHeadEncode(unsigned char *out, uint32_t n, const uint32_t *pgnos, uint32_t raw_len,
                        uint32_t comp_len)
{
    memcpy(out, CBK_BLOCK_MAGIC, 4);
    putU32(out + 4, n);
    for (uint32_t i = 0; i < n; i++) {
        putU32(out + 8 + 4 * (size_t)i, pgnos[i]);
    }
    putU32(out + 8 + 4 * (size_t)n, raw_len);
    putU32(out + 12 + 4 * (size_t)n, comp_len);
}

void cbkManifestHeadEncode(unsigned char out[16], uint64_t page_count)
{
    memcpy(out, CBK_MANIFEST_MAGIC, 4);
    putU32(out + 4, 0);
    putU64(out + 8, page_count);
}

void cbkDigestBytes(uint64_t low64, uint64_t high64, unsigned char out[BACKUP_DIGEST_SIZE])
{
    XXH128_hash_t h = {low64, high64};
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, BACKUP_DIGEST_SIZE);
}

static void digestOf(const struct hash_stream *st, unsigned char out[BACKUP_DIGEST_SIZE])
{
    struct hash128 h = hashStreamDigest128(st);
    cbkDigestBytes(h.low64, h.high64, out);
}

static int readAt(struct cbk_reader *r, uint64_t off, void *buf, size_t n, const char *part,
                  char *errmsg)
{
    int err = r->io.read(r->io.arg, off, buf, n);
    if (err != 0) {
        const char *why = r->io.why != NULL ? r->io.why(r->io.arg) : NULL;
        errorf(errmsg, "%s: %s: read of %zu bytes at offset %llu: %s", r->name, part, n,
               (unsigned long long)off, why != NULL ? why : strerror(err));
        return errorFromErrno(err);
    }
    return 0;
}

#define MIN_FILE_SIZE (CBK_HEADER_SIZE + CBK_MANIFEST_SIZE(0) + CBK_FOOTER_SIZE + CBK_TRAILER_SIZE)

int cbkOpen(struct cbk_reader *r, const struct cbk_io *io, uint64_t size, const char *name,
            char *errmsg)
{
    unsigned char tail[CBK_FOOTER_SIZE + CBK_TRAILER_SIZE];
    char why[CAIRN_ERRMSG_SIZE];
    const struct cbk_header *h = &r->h;
    const struct cbk_footer *f = &r->f;
    uint64_t blocks_end;
    int rv;

    memset(r, 0, sizeof *r);
    r->io = *io;
    r->name = name;
    r->size = size;
    if (size < MIN_FILE_SIZE) {
        errorf(errmsg,
               "%s: header: file of %llu bytes is shorter than the smallest backup "
               "(%llu bytes)",
               name, (unsigned long long)size, (unsigned long long)MIN_FILE_SIZE);
        return CAIRN_ECORRUPT;
    }
    if ((rv = readAt(r, 0, r->header_bytes, CBK_HEADER_SIZE, "header", errmsg)) != 0) {
        return rv;
    }
    if (cbkHeaderDecode(r->header_bytes, &r->h, why) != 0) {
        errorf(errmsg, "%s: header: %s", name, why);
        return CAIRN_ECORRUPT;
    }
    if ((rv = readAt(r, size - sizeof tail, tail, sizeof tail, "footer", errmsg)) != 0) {
        return rv;
    }
    if (cbkTrailerDecode(tail + CBK_FOOTER_SIZE, &r->t, why) != 0) {
        errorf(errmsg, "%s: trailer at offset %llu: %s", name,
               (unsigned long long)(size - CBK_TRAILER_SIZE), why);
        return CAIRN_ECORRUPT;
    }
    if (r->t.file_size != size) {
        errorf(errmsg, "%s: trailer: the file is %llu bytes, the trailer says %llu", name,
               (unsigned long long)size, (unsigned long long)r->t.file_size);
        return CAIRN_ECORRUPT;
    }
    if (cbkFooterDecode(tail, &r->f, why) != 0) {
        errorf(errmsg, "%s: footer at offset %llu: %s", name,
               (unsigned long long)(size - sizeof tail), why);
        return CAIRN_ECORRUPT;
    }
    /* The parts must tile the file exactly: header, blocks, manifest, footer, trailer. */
    blocks_end = size - sizeof tail - CBK_MANIFEST_SIZE(h->page_count);
    if (CBK_MANIFEST_SIZE(h->page_count) > size - sizeof tail - CBK_HEADER_SIZE ||
        f->manifest_offset != blocks_end) {
        errorf(errmsg,
               "%s: footer: manifest offset %llu does not fit a file of %llu bytes "
               "and %llu pages",
               name, (unsigned long long)f->manifest_offset, (unsigned long long)size,
               (unsigned long long)h->page_count);
        return CAIRN_ECORRUPT;
    }
    if (f->pages > h->page_count || (h->type == BACKUP_FULL && f->pages != h->page_count) ||
        f->raw_bytes != f->pages * h->page_size || f->blocks > f->pages ||
        f->blocks < (f->pages + h->block_pages - 1) / h->block_pages ||
        f->compressed_bytes > blocks_end - CBK_HEADER_SIZE) {
        errorf(errmsg,
               "%s: footer: counters do not fit the header (%llu pages in %llu "
               "blocks, %llu raw and %llu compressed bytes, for %llu pages of %u bytes)",
               name, (unsigned long long)f->pages, (unsigned long long)f->blocks,
               (unsigned long long)f->raw_bytes, (unsigned long long)f->compressed_bytes,
               (unsigned long long)h->page_count, h->page_size);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

void cbkClose(struct cbk_reader *r)
{
    free(r->buf);
    free(r->raw);
    free(r->pgnos);
    ZSTD_freeDCtx(r->dctx);
    r->buf = NULL;
    r->raw = NULL;
    r->pgnos = NULL;
    r->dctx = NULL;
}

/* Where the file's bytes go: buf starts on a page (WINDOW_ALIGN), and a byte at offset
 * off of the file is read to an address at off's place in a page (struct
 * cbk_reader.win_lead), so that the kernel copies the file's pages to addresses
 * aligned as they are: a copy to a buffer that starts elsewhere in a page was several
 * times as slow (restore.c, struct roCache). */
#define WINDOW_ALIGN 4096u

/* buf of at least n bytes, keeping the bytes it holds. */
static int reserve(struct cbk_reader *r, size_t n, char *errmsg)
{
    void *p;
    if (n <= r->buf_cap) {
        return 0;
    }
    if (posix_memalign(&p, WINDOW_ALIGN, n) != 0) {
        errorf(errmsg, "%s: out of memory (%zu bytes) reading the file", r->name, n);
        return CAIRN_ENOMEM;
    }
    if (r->buf != NULL) {
        memcpy(p, r->buf, r->buf_cap);
    }
    free(r->buf);
    r->buf = p;
    r->buf_cap = n;
    return 0;
}

/* Make the bytes [off, off + n) available at *p, reading ahead, never beyond limit
 * (off + n <= limit). Bytes of the window from off on are kept, not read again. *p is
 * valid until the next call or the next use of r->buf. */
static int window(struct cbk_reader *r, uint64_t off, size_t n, uint64_t limit, const char *part,
                  const unsigned char **p, char *errmsg)
{
    size_t keep = 0, want, lead = (size_t)(off % WINDOW_ALIGN);
    int rv;
    if (off >= r->win_off && off + n <= r->win_off + r->win_len) {
        *p = r->buf + r->win_lead + (off - r->win_off);
        return 0;
    }
    want = n > SCAN_WINDOW ? n : SCAN_WINDOW;
    if (want > limit - off) {
        want = (size_t)(limit - off);
    }
    /* Room for any lead at once: grown a few bytes at a time, the buffer would be
     * allocated again at most reads. */
    if ((rv = reserve(r, WINDOW_ALIGN + want, errmsg)) != 0) {
        return rv;
    }
    if (off >= r->win_off && off < r->win_off + r->win_len) {
        keep = (size_t)(r->win_off + r->win_len - off);
        memmove(r->buf + lead, r->buf + r->win_lead + (off - r->win_off), keep);
    }
    r->win_len = 0;
    if ((rv = readAt(r, off + keep, r->buf + lead + keep, want - keep, part, errmsg)) != 0) {
        return rv;
    }
    r->win_off = off;
    r->win_len = want;
    r->win_lead = lead;
    *p = r->buf + lead;
    return 0;
}

/* Read the manifest's hashes in chunks: into `out` when not NULL, else comparing them
 * with `expect` when not NULL. Feeds every byte to the digest when st is not NULL. */
static int manifestPass(struct cbk_reader *r, uint64_t *out, const uint64_t *expect,
                        struct hash_stream *st, char *errmsg)
{
    uint64_t off = r->f.manifest_offset;
    uint64_t pc = r->h.page_count;
    struct hash_stream *sum = hashStreamNew();
    unsigned char head[16];
    uint64_t done = 0;
    int rv;

    if (sum == NULL) {
        errorf(errmsg, "%s: out of memory", r->name);
        return CAIRN_ENOMEM;
    }
    r->win_len = 0; /* buf is the manifest's now */
    if ((rv = reserve(r, pc < MANIFEST_CHUNK / 8 ? (size_t)pc * 8 + 8 : MANIFEST_CHUNK, errmsg)) !=
            0 ||
        (rv = readAt(r, off, head, sizeof head, "manifest", errmsg)) != 0) {
        goto out;
    }
    if (memcmp(head, CBK_MANIFEST_MAGIC, 4) != 0 || !libIsZero(head + 4, 4) ||
        getU64(head + 8) != pc) {
        errorf(errmsg, "%s: manifest at offset %llu: bad magic or page count", r->name,
               (unsigned long long)off);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    hashStreamUpdate(sum, head, sizeof head);
    if (st != NULL) {
        hashStreamUpdate(st, head, sizeof head);
    }
    off += sizeof head;
    while (done < pc) {
        size_t n = (size_t)(pc - done < MANIFEST_CHUNK / 8 ? pc - done : MANIFEST_CHUNK / 8);
        if ((rv = readAt(r, off, r->buf, n * 8, "manifest", errmsg)) != 0) {
            goto out;
        }
        hashStreamUpdate(sum, r->buf, n * 8);
        if (st != NULL) {
            hashStreamUpdate(st, r->buf, n * 8);
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t v = getU64(r->buf + 8 * i);
            if (out != NULL) {
                out[done + i] = v;
            } else if (expect != NULL && expect[done + i] != v) {
                errorf(errmsg, "%s: manifest: changed while the file was read", r->name);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
        }
        done += n;
        off += n * 8;
    }
    if ((rv = readAt(r, off, head, 8, "manifest", errmsg)) != 0) {
        goto out;
    }
    if (st != NULL) {
        hashStreamUpdate(st, head, 8);
    }
    if (getU64(head) != hashStreamDigest64(sum)) {
        errorf(errmsg, "%s: manifest at offset %llu: checksum mismatch", r->name,
               (unsigned long long)r->f.manifest_offset);
        rv = CAIRN_ECORRUPT;
    }
out:
    hashStreamFree(sum);
    return rv;
}

int cbkReadManifest(struct cbk_reader *r, uint64_t *hashes, char *errmsg)
{
    return manifestPass(r, hashes, NULL, NULL, errmsg);
}

size_t cbkCodecBound(int codec, size_t raw)
{
    return codec == CBK_CODEC_LZ4 ? (size_t)LZ4_COMPRESSBOUND(raw) : ZSTD_compressBound(raw);
}

const char *cbkCodecName(int codec)
{
    return codec == CBK_CODEC_LZ4 ? "lz4" : "zstd";
}

int cbkInflate(int codec, void *dctx, const unsigned char *in, size_t comp, unsigned char *raw,
               size_t want, char *why)
{
    size_t got;
    if (codec == CBK_CODEC_LZ4) {
        /* LZ4's safe decoder reads exactly comp bytes, writes at most want, and fails
         * on a block that does not end exactly at comp. */
        int n;
        if (comp > INT32_MAX || want > INT32_MAX) {
            errorf(why, "an LZ4 block of %zu bytes", comp);
            return CAIRN_ECORRUPT;
        }
        n = LZ4_decompress_safe((const char *)in, (char *)raw, (int)comp, (int)want);
        if (n < 0 || (size_t)n != want) {
            errorf(why, "decompression failed (%s)", n < 0 ? "not one LZ4 block" : "wrong length");
            return CAIRN_ECORRUPT;
        }
        return 0;
    }
    if (dctx == NULL) {
        errorf(why, "out of memory");
        return CAIRN_ENOMEM;
    }
    if (ZSTD_findFrameCompressedSize(in, comp) != comp) {
        errorf(why, "not one zstd frame");
        return CAIRN_ECORRUPT;
    }
    got = ZSTD_decompressDCtx(dctx, raw, want, in, comp);
    if (ZSTD_isError(got) || got != want) {
        errorf(why, "decompression failed (%s)",
               ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong length");
        return ZSTD_isError(got) && ZSTD_getErrorCode(got) == ZSTD_error_memory_allocation
                   ? CAIRN_ENOMEM
                   : CAIRN_ECORRUPT;
    }
    return 0;
}

int cbkDecodeBlock(const struct cbk_reader *r, const struct cbk_block *b, const uint64_t *manifest,
                   void *dctx, unsigned char *raw, char *errmsg)
{
    const uint32_t ps = r->h.page_size;
    size_t want = (size_t)b->n * ps;
    char why[CAIRN_ERRMSG_SIZE];
    int rv = cbkInflate(r->h.codec, dctx, b->frame, b->comp, raw, want, why);
    if (rv != 0) {
        errorf(errmsg, "%s: block %llu at offset %llu: %s", r->name,
               (unsigned long long)b->index, (unsigned long long)b->offset, why);
        return rv;
    }
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t pgno = b->pgnos[i];
        if (hash64(raw + (size_t)i * ps, ps) != manifest[pgno - 1]) {
            errorf(errmsg,
                   "%s: block %llu at offset %llu: page %u does not match the "
                   "manifest",
                   r->name, (unsigned long long)b->index, (unsigned long long)b->offset, pgno);
            return CAIRN_ECORRUPT;
        }
    }
    return 0;
}

int cbkScan(struct cbk_reader *r, const uint64_t *manifest, cbk_block_fn fn, void *arg,
            cbk_offset_fn progress, void *progress_arg, char *errmsg)
{
    const struct cbk_header *h = &r->h;
    const uint64_t end = r->f.manifest_offset;
    struct hash_stream *st = hashStreamNew();
    unsigned char tail[CBK_FOOTER_SIZE];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    uint64_t off = CBK_HEADER_SIZE;
    uint64_t b = 0, pages = 0, comp_sum = 0;
    const unsigned char *p;
    uint32_t prev = 0;
    int rv;

    if (st == NULL) {
        errorf(errmsg, "%s: out of memory", r->name);
        return CAIRN_ENOMEM;
    }
    if (r->pgnos == NULL && (r->pgnos = malloc(sizeof *r->pgnos * h->block_pages)) == NULL) {
        errorf(errmsg, "%s: out of memory", r->name);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    r->win_off = 0;
    r->win_len = 0;
    if ((rv = window(r, 0, CBK_HEADER_SIZE, end, "header", &p, errmsg)) != 0) {
        goto out;
    }
    if (memcmp(p, r->header_bytes, CBK_HEADER_SIZE) != 0) {
        errorf(errmsg, "%s: header: changed while the file was read", r->name);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    hashStreamUpdate(st, p, CBK_HEADER_SIZE);

    while (off < end) {
        uint64_t left = end - off;
        uint32_t n, raw, comp;
        uint64_t head, total;
        if (left < CBK_BLOCK_HEAD_SIZE(1) + 1 + CBK_BLOCK_SUM_SIZE) {
            errorf(errmsg,
                   "%s: block %llu at offset %llu: truncated (%llu bytes before the "
                   "manifest)",
                   r->name, (unsigned long long)b, (unsigned long long)off,
                   (unsigned long long)left);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        if ((rv = window(r, off, 8, end, "block", &p, errmsg)) != 0) {
            goto out;
        }
        n = getU32(p + 4);
        if (memcmp(p, CBK_BLOCK_MAGIC, 4) != 0 || n == 0 || n > h->block_pages) {
            errorf(errmsg,
                   "%s: block %llu at offset %llu: bad magic or page count %u "
                   "(1 to %u)",
                   r->name, (unsigned long long)b, (unsigned long long)off, n, h->block_pages);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        head = CBK_BLOCK_HEAD_SIZE(n);
        if (head + 1 + CBK_BLOCK_SUM_SIZE > left) {
            errorf(errmsg,
                   "%s: block %llu at offset %llu: %u pages do not fit before the "
                   "manifest",
                   r->name, (unsigned long long)b, (unsigned long long)off, n);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        if ((rv = window(r, off, (size_t)head, end, "block", &p, errmsg)) != 0) {
            goto out;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t pgno = getU32(p + 8 + 4 * (size_t)i);
            if (pgno <= prev || pgno > h->page_count) {
                errorf(errmsg,
                       "%s: block %llu at offset %llu: page number %u out of order "
                       "or beyond the %llu pages of the database",
                       r->name, (unsigned long long)b, (unsigned long long)off, pgno,
                       (unsigned long long)h->page_count);
                rv = CAIRN_ECORRUPT;
                goto out;
            }
            r->pgnos[i] = prev = pgno;
        }
        raw = getU32(p + head - 8);
        comp = getU32(p + head - 4);
        if ((uint64_t)raw != (uint64_t)n * h->page_size || comp == 0 ||
            comp > cbkCodecBound(r->h.codec, raw) || comp > left - head - CBK_BLOCK_SUM_SIZE) {
            errorf(errmsg,
                   "%s: block %llu at offset %llu: invalid lengths (raw %u, "
                   "compressed %u, %llu bytes left before the manifest)",
                   r->name, (unsigned long long)b, (unsigned long long)off, raw, comp,
                   (unsigned long long)left);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        total = head + comp + CBK_BLOCK_SUM_SIZE;
        if ((rv = window(r, off, (size_t)total, end, "block", &p, errmsg)) != 0) {
            goto out;
        }
        if (getU64(p + head + comp) != hash64(p, (size_t)(head + comp))) {
            errorf(errmsg, "%s: block %llu at offset %llu: checksum mismatch", r->name,
                   (unsigned long long)b, (unsigned long long)off);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        hashStreamUpdate(st, p, (size_t)total);
        if (fn != NULL) {
            struct cbk_block blk = {b, off, n, r->pgnos, p + head, comp};
            if ((rv = fn(arg, &blk, errmsg)) != 0) {
                goto out;
            }
        }
        pages += n;
        comp_sum += comp;
        b++;
        off += total;
        if (progress != NULL) {
            progress(progress_arg, off);
        }
    }
    if (b != r->f.blocks || pages != r->f.pages || comp_sum != r->f.compressed_bytes) {
        errorf(errmsg,
               "%s: footer: says %llu pages in %llu blocks (%llu compressed bytes), "
               "the file holds %llu pages in %llu blocks (%llu bytes)",
               r->name, (unsigned long long)r->f.pages, (unsigned long long)r->f.blocks,
               (unsigned long long)r->f.compressed_bytes, (unsigned long long)pages,
               (unsigned long long)b, (unsigned long long)comp_sum);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if ((rv = manifestPass(r, NULL, manifest, st, errmsg)) != 0) {
        goto out;
    }
    if ((rv = readAt(r, r->size - CBK_FOOTER_SIZE - CBK_TRAILER_SIZE, tail, sizeof tail, "footer",
                     errmsg)) != 0) {
        goto out;
    }
    hashStreamUpdate(st, tail, sizeof tail);
    {
        unsigned char expect[CBK_FOOTER_SIZE];
        cbkFooterEncode(&r->f, expect);
        if (memcmp(expect, tail, sizeof tail) != 0) {
            errorf(errmsg, "%s: footer: changed while the file was read", r->name);
            rv = CAIRN_ECORRUPT;
            goto out;
        }
    }
    digestOf(st, digest);
    if (memcmp(digest, r->t.digest, BACKUP_DIGEST_SIZE) != 0) {
        errorf(errmsg,
               "%s: trailer: digest mismatch (the file's bytes are not those that "
               "were written)",
               r->name);
        rv = CAIRN_ECORRUPT;
        goto out;
    }
    if (progress != NULL) {
        progress(progress_arg, r->size);
    }
out:
    hashStreamFree(st);
    return rv;
}

static int decodeAndPass(void *arg, const struct cbk_block *b, char *errmsg)
{
    struct cbk_reader *r = arg;
    int rv;
    if (r->dctx == NULL && (r->dctx = ZSTD_createDCtx()) == NULL) {
        errorf(errmsg, "%s: out of memory", r->name);
        return CAIRN_ENOMEM;
    }
    if (r->raw == NULL && (r->raw = malloc((size_t)r->h.block_pages * r->h.page_size)) == NULL) {
        errorf(errmsg, "%s: out of memory", r->name);
        return CAIRN_ENOMEM;
    }
    if ((rv = cbkDecodeBlock(r, b, r->pages_manifest, r->dctx, r->raw, errmsg)) != 0) {
        return rv;
    }
    return r->pages_fn != NULL ? r->pages_fn(r->pages_arg, b->pgnos, b->n, r->raw, errmsg) : 0;
}

int cbkScanPages(struct cbk_reader *r, const uint64_t *manifest, cbk_pages_fn fn, void *arg,
                 cbk_offset_fn progress, void *progress_arg, char *errmsg)
{
    r->pages_fn = fn;
    r->pages_arg = arg;
    r->pages_manifest = manifest;
    return cbkScan(r, manifest, decodeAndPass, r, progress, progress_arg, errmsg);
}

struct mem_io {
    const unsigned char *p;
    size_t n;
};

static int memRead(void *arg, uint64_t off, void *buf, size_t n)
{
    const struct mem_io *m = arg;
    if (off > m->n || n > m->n - off) {
        return EIO;
    }
    memcpy(buf, m->p + off, n);
    return 0;
}

int cbkCheckMemory(const void *p, size_t n, char *errmsg)
{
    struct mem_io m = {p, n};
    struct cbk_io io = {memRead, &m, NULL, NULL};
    struct cbk_reader r;
    uint64_t *manifest = NULL;
    int rv;

    if ((rv = cbkOpen(&r, &io, n, "(memory)", errmsg)) != 0) {
        return rv;
    }
    /* cbkOpen checked that the manifest fits in the file: this is at most n bytes. */
    manifest = malloc(r.h.page_count ? r.h.page_count * sizeof *manifest : 1);
    if (manifest == NULL) {
        errorf(errmsg, "(memory): out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if ((rv = cbkReadManifest(&r, manifest, errmsg)) != 0) {
        goto out;
    }
    rv = cbkScanPages(&r, manifest, NULL, NULL, NULL, NULL, errmsg);
out:
    free(manifest);
    cbkClose(&r);
    return rv;
}
