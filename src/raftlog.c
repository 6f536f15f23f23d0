/* Offline verification of libraft's uv storage (see raftlog.h). Any thread.
 *
 * The layout, as libraft 0.15 writes it (all integers little-endian):
 *   metadata1|2   u64 format (1), u64 version, u64 term, u64 voted_for: 32 bytes
 *   segments      u64 format (1), then batches:
 *                   u32 header crc, u32 data crc,
 *                   header: u64 n, then n x {u64 term, u8 type, 3 unused, u32 length},
 *                   data: the n payloads, each a multiple of 8 bytes
 *                 the header crc covers the header (n included), the data crc the data.
 *   *.meta        u64 format (1), u64 crc, u64 configuration index, u64 length, then the
 *                 encoded configuration; the crc covers the last two words and it.
 *   *.snapshot    the snapshot's data, usually an LZ4 frame (magic 0x184D2204).
 * libraft loads the newest snapshot, then the closed segments, which must be contiguous
 * from the snapshot (or from index 1 without one), then the open segments in counter
 * order; the first entry of the first open segment follows the last closed entry. */
#define _GNU_SOURCE
#include "raftlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "buf.h"
#include "error.h"
#include "fsm.h"

#define DISK_FORMAT 1
#define CHUNK (64 * 1024)
/* libraft refuses a batch of more entries than this (UV__MAX_SEGMENT_SIZE / 32). */
#define MAX_BATCH_ENTRIES ((8u << 20) / 32u)
/* libraft's limit on a snapshot's encoded configuration. */
#define MAX_CONF_SIZE (1u << 20)
/* Largest snapshot data file whose LZ4 frame is decoded and checked; cairn's are a few
 * hundred bytes (a manifest naming a backup). */
#define MAX_SNAPSHOT_CHECK (1u << 20)

#define ENTRY_COMMAND 1
#define ENTRY_CHANGE 3

/* ---- CRC32 -------------------------------------------------------------------------- */

static uint32_t crcTable[256];
static pthread_once_t crcOnce = PTHREAD_ONCE_INIT;

static void crcInit(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i << 24;
        for (int k = 0; k < 8; k++) {
            c = (c & 0x80000000u) ? (c << 1) ^ 0x04C11DB7u : c << 1;
        }
        crcTable[i] = c;
    }
}

uint32_t raftlogCrc32(const void *p, size_t n, uint32_t crc)
{
    const unsigned char *b = p;
    pthread_once(&crcOnce, crcInit);
    while (n--) {
        crc = (crc << 8) ^ crcTable[((crc >> 24) ^ *b++) & 0xFF];
    }
    return crc;
}

const char *raftlogKindName(int kind)
{
    return kind == RAFTLOG_TORN_TAIL ? "torn_tail" : "damaged";
}

/* ---- the files of the directory ----------------------------------------------------- */

enum { F_METADATA, F_CLOSED, F_OPEN, F_META, F_SNAPSHOT };

struct rfile {
    char name[RAFTLOG_FILE_SIZE];
    int type;
    uint64_t a, b, c; /* closed: first, last; open: counter; snapshot: term, index, time */
    uint64_t size;
    bool regular;
};

struct ctx {
    const char *dir;
    struct raftlog_report *r;
    raftlog_progress_fn progress;
    void *progress_arg;
    uint64_t done;  /* bytes of the files finished */
    uint64_t total; /* bytes of every file to read */
    unsigned char *chunk;
    int oserr; /* first error that stopped the walk itself (CAIRN_ENOMEM) */
};

static void problem(struct ctx *c, const char *file, int64_t offset, int kind, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void problem(struct ctx *c, const char *file, int64_t offset, int kind, const char *fmt, ...)
{
    struct raftlog_problem *p;
    va_list ap;
    if (c->r->n_problems == RAFTLOG_PROBLEMS_MAX) {
        c->r->problems_omitted++;
        return;
    }
    p = &c->r->problems[c->r->n_problems++];
    snprintf(p->file, sizeof p->file, "%s", file);
    p->offset = offset;
    p->kind = kind;
    va_start(ap, fmt);
    vsnprintf(p->message, sizeof p->message, fmt, ap);
    va_end(ap);
}

static void progressAt(struct ctx *c, uint64_t offset)
{
    if (c->progress != NULL) {
        c->progress(c->progress_arg, c->done + offset, c->total);
    }
}

/* n decimal digits exactly at s; 0 when they are not all digits. */
static bool parseDigits(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* Parses "A-B-C" + suffix into three numbers (the snapshot names). */
static bool parseThree(const char *s, const char *suffix, uint64_t *a, uint64_t *b, uint64_t *c)
{
    size_t len = strlen(s), sl = strlen(suffix);
    const char *d1, *d2;
    if (len <= sl || strcmp(s + len - sl, suffix) != 0) {
        return false;
    }
    len -= sl;
    d1 = memchr(s, '-', len);
    if (d1 == NULL) {
        return false;
    }
    d2 = memchr(d1 + 1, '-', len - (size_t)(d1 + 1 - s));
    if (d2 == NULL) {
        return false;
    }
    return parseDigits(s, (size_t)(d1 - s), a) && parseDigits(d1 + 1, (size_t)(d2 - d1 - 1), b) &&
           parseDigits(d2 + 1, len - (size_t)(d2 + 1 - s), c);
}

/* What libraft would take the name for; false for a name it ignores. */
static bool classify(const char *name, struct rfile *f)
{
    size_t len = strlen(name);
    memset(f, 0, sizeof *f);
    if (len >= sizeof f->name) {
        return false;
    }
    memcpy(f->name, name, len + 1);
    if (strcmp(name, "metadata1") == 0 || strcmp(name, "metadata2") == 0) {
        f->type = F_METADATA;
        f->a = (uint64_t)(name[8] - '0');
        return true;
    }
    if (len == 33 && name[16] == '-' && parseDigits(name, 16, &f->a) &&
        parseDigits(name + 17, 16, &f->b)) {
        f->type = F_CLOSED;
        return true;
    }
    if (strncmp(name, "open-", 5) == 0 && parseDigits(name + 5, len - 5, &f->a)) {
        f->type = F_OPEN;
        return true;
    }
    if (strncmp(name, "snapshot-", 9) == 0) {
        if (parseThree(name + 9, ".meta", &f->a, &f->b, &f->c)) {
            f->type = F_META;
            return true;
        }
        if (parseThree(name + 9, "", &f->a, &f->b, &f->c)) {
            f->type = F_SNAPSHOT;
            return true;
        }
    }
    return false;
}

static int compareFiles(const void *p1, const void *p2)
{
    const struct rfile *x = p1, *y = p2;
    if (x->type != y->type) {
        return x->type < y->type ? -1 : 1;
    }
    if (x->a != y->a) {
        return x->a < y->a ? -1 : 1;
    }
    if (x->b != y->b) {
        return x->b < y->b ? -1 : 1;
    }
    if (x->c != y->c) {
        return x->c < y->c ? -1 : 1;
    }
    return 0;
}

/* Opens dir/name for reading; on failure records a problem and returns -1. */
static int openFile(struct ctx *c, const struct rfile *f)
{
    char path[PATH_MAX];
    int fd;
    if (!f->regular) {
        problem(c, f->name, -1, RAFTLOG_DAMAGED, "not a regular file");
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", c->dir, f->name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        problem(c, f->name, -1, RAFTLOG_DAMAGED, "cannot open: %s", strerror(errno));
        return -1;
    }
    c->r->files_checked++;
    return fd;
}

/* Reads exactly n bytes at off. Returns 0, or -1 with a problem recorded (an I/O error,
 * or a file that is shorter than it was when listed). */
static int readAt(struct ctx *c, const struct rfile *f, int fd, void *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (char *)p + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            problem(c, f->name, (int64_t)(off + got), RAFTLOG_DAMAGED, "read error: %s",
                    strerror(errno));
            return -1;
        }
        if (k == 0) {
            problem(c, f->name, (int64_t)(off + got), RAFTLOG_DAMAGED,
                    "file ended early (did it change during the check?)");
            return -1;
        }
        got += (size_t)k;
    }
    c->r->bytes_checked += n;
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------ */

struct metadata {
    bool present;
    uint64_t version, term, vote;
};

static void checkMetadata(struct ctx *c, const struct rfile *f, struct metadata *m)
{
    unsigned char b[32];
    uint64_t format;
    int fd;

    memset(m, 0, sizeof *m);
    if (f->regular && f->size < sizeof b) {
        /* libraft takes a short metadata file for an interrupted write and ignores it. */
        return;
    }
    if ((fd = openFile(c, f)) < 0) {
        return;
    }
    if (f->size > sizeof b) {
        problem(c, f->name, -1, RAFTLOG_DAMAGED, "has %llu bytes instead of 32",
                (unsigned long long)f->size);
        goto out;
    }
    if (readAt(c, f, fd, b, sizeof b, 0) != 0) {
        goto out;
    }
    format = getU64(b);
    if (format != DISK_FORMAT) {
        problem(c, f->name, 0, RAFTLOG_DAMAGED, "bad format version %llu (expected %d)",
                (unsigned long long)format, DISK_FORMAT);
        goto out;
    }
    m->version = getU64(b + 8);
    m->term = getU64(b + 16);
    m->vote = getU64(b + 24);
    if (m->version == 0) {
        problem(c, f->name, 8, RAFTLOG_DAMAGED, "version is zero");
        goto out;
    }
    m->present = true;
out:
    c->done += f->size;
    progressAt(c, 0);
    close(fd);
}

/* ---- snapshots ----------------------------------------------------------------------- */

/* Keep the configuration encoded in p[0..n) (checked already) as the report's newest when
 * it is at a higher index than the one kept. */
static void keepConfiguration(struct ctx *c, const unsigned char *p, size_t n, uint64_t index)
{
    struct raftlog_report *r = c->r;
    uint64_t servers = getU64(p + 1);
    size_t off = 9;
    if (index < r->conf_index || servers > sizeof r->conf / sizeof r->conf[0]) {
        return;
    }
    r->conf_index = index;
    r->conf_servers = 0;
    for (uint64_t i = 0; i < servers && off + 9 <= n; i++) {
        struct raftlog_server *s = &r->conf[r->conf_servers++];
        const unsigned char *nul;
        s->id = getU64(p + off);
        off += 8;
        nul = memchr(p + off, 0, n - off);
        if (nul == NULL) {
            r->conf_servers = 0;
            return;
        }
        snprintf(s->address, sizeof s->address, "%s", (const char *)(p + off));
        off = (size_t)(nul - p) + 1;
        s->role = off < n ? p[off] : 0;
        off++;
    }
}

/* Checks libraft's encoding of a configuration: u8 format 1, u64 n, then n x {u64 id,
 * NUL-terminated address, u8 role}. Returns NULL or what is wrong. */
static const char *checkConfiguration(const unsigned char *p, size_t n)
{
    uint64_t servers;
    size_t off = 9;
    if (n < 9 || p[0] != 1) {
        return "configuration has a bad encoding format";
    }
    servers = getU64(p + 1);
    if (servers == 0 || servers > n / 10) {
        return "configuration has an impossible number of servers";
    }
    for (uint64_t i = 0; i < servers; i++) {
        const unsigned char *nul;
        if (n - off < 8 + 1) {
            return "configuration is truncated";
        }
        off += 8;
        nul = memchr(p + off, 0, n - off);
        if (nul == NULL) {
            return "configuration has an unterminated address";
        }
        off = (size_t)(nul - p) + 1;
        if (off >= n) {
            return "configuration is truncated";
        }
        if (p[off] > 2) {
            return "configuration has an unknown server role";
        }
        off++;
    }
    return NULL;
}

static void checkMeta(struct ctx *c, const struct rfile *f)
{
    unsigned char h[32];
    unsigned char *conf = NULL;
    uint64_t format, len;
    uint32_t stored, crc;
    const char *why;
    int fd;

    if ((fd = openFile(c, f)) < 0) {
        return;
    }
    if (f->size < sizeof h) {
        problem(c, f->name, -1, RAFTLOG_DAMAGED, "has %llu bytes, less than its 32-byte header",
                (unsigned long long)f->size);
        goto out;
    }
    if (readAt(c, f, fd, h, sizeof h, 0) != 0) {
        goto out;
    }
    format = getU64(h);
    if (format != DISK_FORMAT) {
        problem(c, f->name, 0, RAFTLOG_DAMAGED, "bad format version %llu (expected %d)",
                (unsigned long long)format, DISK_FORMAT);
        goto out;
    }
    len = getU64(h + 24);
    if (len == 0 || len > MAX_CONF_SIZE) {
        problem(c, f->name, 24, RAFTLOG_DAMAGED, "configuration length %llu is %s",
                (unsigned long long)len, len == 0 ? "zero" : "too large");
        goto out;
    }
    if (len > f->size - sizeof h) {
        problem(c, f->name, 32, RAFTLOG_DAMAGED,
                "configuration of %llu bytes runs past the end of the file (%llu bytes left)",
                (unsigned long long)len, (unsigned long long)(f->size - sizeof h));
        goto out;
    }
    conf = malloc(len);
    if (conf == NULL) {
        c->oserr = CAIRN_ENOMEM;
        goto out;
    }
    if (readAt(c, f, fd, conf, len, sizeof h) != 0) {
        goto out;
    }
    stored = (uint32_t)getU64(h + 8);
    crc = raftlogCrc32(h + 16, 16, 0);
    crc = raftlogCrc32(conf, len, crc);
    if (stored != crc) {
        problem(c, f->name, 8, RAFTLOG_DAMAGED,
                "checksum mismatch (stored 0x%08x, computed 0x%08x)", stored, crc);
        goto out;
    }
    if ((why = checkConfiguration(conf, len)) != NULL) {
        problem(c, f->name, 32, RAFTLOG_DAMAGED, "%s", why);
    } else {
        keepConfiguration(c, conf, len, getU64(h + 16));
    }
out:
    free(conf);
    c->done += f->size;
    progressAt(c, 0);
    close(fd);
}

/* Decodes one LZ4 block (the raw format) into out[*outlen..cap). Earlier output stays
 * addressable, so linked blocks decode as well. Returns NULL or what is wrong. */
static const char *lz4Block(const unsigned char *in, size_t n, unsigned char *out, size_t cap,
                            size_t *outlen)
{
    size_t i = 0, o = *outlen;
    for (;;) {
        size_t lit, mlen, off;
        unsigned token;
        if (i >= n) {
            return "LZ4 block is truncated";
        }
        token = in[i++];
        lit = token >> 4;
        if (lit == 15) {
            unsigned char b;
            do {
                if (i >= n) {
                    return "LZ4 block is truncated";
                }
                b = in[i++];
                lit += b;
            } while (b == 255 && lit < cap);
        }
        if (lit > n - i || lit > cap - o) {
            return "LZ4 literals run past the block";
        }
        memcpy(out + o, in + i, lit);
        i += lit;
        o += lit;
        if (i == n) {
            break; /* the last sequence has literals only */
        }
        if (n - i < 2) {
            return "LZ4 block is truncated";
        }
        off = (size_t)in[i] | ((size_t)in[i + 1] << 8);
        i += 2;
        if (off == 0 || off > o) {
            return "LZ4 match offset is out of range";
        }
        mlen = token & 15;
        if (mlen == 15) {
            unsigned char b;
            do {
                if (i >= n) {
                    return "LZ4 block is truncated";
                }
                b = in[i++];
                mlen += b;
            } while (b == 255 && mlen < cap);
        }
        mlen += 4;
        if (mlen > cap - o) {
            return "LZ4 data is larger than expected";
        }
        for (size_t k = 0; k < mlen; k++, o++) {
            out[o] = out[o - off];
        }
    }
    *outlen = o;
    return NULL;
}

/* Decodes an LZ4 frame, checking its header, block and content checksums. *out is
 * malloc'ed (the caller frees it) on success. Returns NULL or what is wrong. */
static const char *lz4Frame(const unsigned char *in, size_t n, unsigned char **out, size_t *outlen,
                            int *oom)
{
    size_t i = 4, o = 0, cap = MAX_SNAPSHOT_CHECK;
    unsigned flg, hc;
    unsigned char *buf;
    const char *why = NULL;

    *out = NULL;
    if (n < 7) {
        return "LZ4 frame is truncated";
    }
    flg = in[4];
    if ((flg >> 6) != 1) {
        return "LZ4 frame has an unknown version";
    }
    i = 6 + ((flg & 0x08) ? 8 : 0) + ((flg & 0x01) ? 4 : 0);
    if (i >= n) {
        return "LZ4 frame is truncated";
    }
    hc = (XXH32(in + 4, i - 4, 0) >> 8) & 0xFF;
    if (hc != in[i]) {
        return "LZ4 frame header checksum mismatch";
    }
    i++;
    buf = malloc(cap);
    if (buf == NULL) {
        *oom = 1;
        return "out of memory";
    }
    for (;;) {
        uint32_t bsize;
        bool raw;
        if (n - i < 4) {
            why = "LZ4 frame is truncated";
            goto err;
        }
        bsize = getU32(in + i);
        i += 4;
        if (bsize == 0) {
            break;
        }
        raw = (bsize & 0x80000000u) != 0;
        bsize &= 0x7FFFFFFFu;
        if (bsize > n - i) {
            why = "LZ4 block runs past the end of the file";
            goto err;
        }
        if (flg & 0x10) {
            if (n - i - bsize < 4) {
                why = "LZ4 frame is truncated";
                goto err;
            }
            if (XXH32(in + i, bsize, 0) != getU32(in + i + bsize)) {
                why = "LZ4 block checksum mismatch";
                goto err;
            }
        }
        if (raw) {
            if (bsize > cap - o) {
                why = "LZ4 data is larger than expected";
                goto err;
            }
            memcpy(buf + o, in + i, bsize);
            o += bsize;
        } else if ((why = lz4Block(in + i, bsize, buf, cap, &o)) != NULL) {
            goto err;
        }
        i += bsize + ((flg & 0x10) ? 4 : 0);
    }
    if (flg & 0x04) {
        if (n - i < 4) {
            why = "LZ4 frame is truncated";
            goto err;
        }
        if (XXH32(buf, o, 0) != getU32(in + i)) {
            why = "LZ4 content checksum mismatch";
            goto err;
        }
    }
    *out = buf;
    *outlen = o;
    return NULL;
err:
    free(buf);
    return why;
}

/* The data file of a snapshot: present and not empty (libraft ignores the snapshot
 * otherwise); its LZ4 frame checks out; a cairn manifest in it decodes. When newest,
 * the manifest's backup id goes into the report. */
static void checkSnapshotData(struct ctx *c, const struct rfile *f, bool newest)
{
    unsigned char *in = NULL, *data = NULL;
    size_t len = 0;
    const char *why;
    int fd, oom = 0;

    if ((fd = openFile(c, f)) < 0) {
        return;
    }
    if (f->size > MAX_SNAPSHOT_CHECK) {
        /* Not one of cairn's manifests; libraft would load it whole. Its size is all. */
        goto out;
    }
    in = malloc(f->size > 0 ? f->size : 1);
    if (in == NULL) {
        c->oserr = CAIRN_ENOMEM;
        goto out;
    }
    if (readAt(c, f, fd, in, f->size, 0) != 0) {
        goto out;
    }
    if (f->size >= 4 && getU32(in) == 0x184D2204u) {
        why = lz4Frame(in, f->size, &data, &len, &oom);
        if (oom) {
            c->oserr = CAIRN_ENOMEM;
            goto out;
        }
        if (why != NULL) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED, "%s", why);
            goto out;
        }
    } else {
        data = in;
        in = NULL;
        len = f->size;
    }
    if (len == MANIFEST_SIZE && memcmp(data, MANIFEST_MAGIC, 4) == 0) {
        struct snapshot_manifest m;
        char errmsg[CAIRN_ERRMSG_SIZE];
        if (manifestDecode(data, len, &m, errmsg) != 0) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED, "%s", errmsg);
        } else if (m.index != f->b) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED,
                    "its manifest is for index %llu, the file name says %llu",
                    (unsigned long long)m.index, (unsigned long long)f->b);
        } else if (newest) {
            snprintf(c->r->snapshot_backup, sizeof c->r->snapshot_backup, "%s", m.name);
        }
    }
out:
    free(in);
    free(data);
    c->done += f->size;
    progressAt(c, 0);
    close(fd);
}

/* ---- segments ------------------------------------------------------------------------ */

/* Outcome of reading one batch. */
enum { B_OK, B_END, B_BAD, B_IOERR };

struct rbatch {
    uint64_t entries;    /* B_OK: entries in the batch */
    uint64_t data;       /* B_OK: bytes of their payloads */
    uint64_t end;        /* B_OK: offset after it; B_BAD: the end of what it claims to
                            span, clipped to the file (where trailing zeros start) */
    uint64_t first_term; /* B_OK: terms of its first and last entries */
    uint64_t last_term;
    bool past_eof; /* B_BAD: it runs past the end of the file (libraft's short read) */
    /* B_OK: the batch's last configuration entry: its position among the batch's
     * entries, and where its payload is in the file; conf_len 0 when none. */
    uint64_t conf_pos;
    uint64_t conf_off;
    uint32_t conf_len;
    char why[RAFTLOG_MESSAGE_SIZE - 64]; /* B_BAD */
};

static const char *plural(uint64_t n)
{
    return n == 1 ? "y" : "ies";
}

/* Reads the batch at off of a segment of `size` bytes, streaming its header and data
 * through the CRC in chunks. */
static int readBatch(struct ctx *c, const struct rfile *f, int fd, uint64_t off, struct rbatch *b)
{
    unsigned char pre[16];
    uint64_t left = f->size - off, n, hsize, dsize = 0, pos, k;
    uint32_t crc1, crc2, crc;
    uint64_t bad_type_entry = 0;
    unsigned bad_type = 0, bad_len = 0;
    uint64_t bad_len_entry = 0;

    memset(b, 0, sizeof *b);
    b->end = f->size;
    if (left < sizeof pre) {
        if (readAt(c, f, fd, pre, (size_t)left, off) != 0) {
            return B_IOERR;
        }
        for (k = 0; k < left; k++) {
            if (pre[k] != 0) {
                snprintf(b->why, sizeof b->why,
                         "batch preamble is truncated (%llu bytes left, 16 needed)",
                         (unsigned long long)left);
                b->past_eof = true;
                return B_BAD;
            }
        }
        return B_END;
    }
    if (readAt(c, f, fd, pre, sizeof pre, off) != 0) {
        return B_IOERR;
    }
    crc1 = getU32(pre);
    crc2 = getU32(pre + 4);
    n = getU64(pre + 8);
    b->end = off + sizeof pre;
    if (n == 0) {
        if (crc1 == 0 && crc2 == 0) {
            return B_END;
        }
        snprintf(b->why, sizeof b->why, "entries count in the batch header is zero");
        return B_BAD;
    }
    if (n > MAX_BATCH_ENTRIES) {
        snprintf(b->why, sizeof b->why,
                 "entries count %llu in the batch header is too high (libraft allows %u)",
                 (unsigned long long)n, MAX_BATCH_ENTRIES);
        return B_BAD;
    }
    hsize = 8 + 16 * n;
    if (hsize > left - 8) {
        snprintf(b->why, sizeof b->why,
                 "batch header of %llu entr%s (%llu bytes) runs past the end of the file "
                 "(%llu bytes left)",
                 (unsigned long long)n, plural(n), (unsigned long long)hsize,
                 (unsigned long long)(left - 8));
        b->past_eof = true;
        return B_BAD;
    }
    /* The header: the entry count, then 16-byte records; CRC all of it, add up the
     * lengths. Nothing decoded here is trusted before the CRC matches. */
    crc = raftlogCrc32(pre + 8, 8, 0);
    pos = off + sizeof pre;
    for (uint64_t done = 0; done < n;) {
        uint64_t recs = n - done < CHUNK / 16 ? n - done : CHUNK / 16;
        if (readAt(c, f, fd, c->chunk, (size_t)(recs * 16), pos) != 0) {
            return B_IOERR;
        }
        crc = raftlogCrc32(c->chunk, (size_t)(recs * 16), crc);
        for (uint64_t i = 0; i < recs; i++) {
            const unsigned char *rec = c->chunk + i * 16;
            uint64_t term = getU64(rec);
            unsigned type = rec[8];
            uint32_t len = getU32(rec + 12);
            if (done + i == 0) {
                b->first_term = term;
            }
            b->last_term = term;
            if ((type < ENTRY_COMMAND || type > ENTRY_CHANGE) && bad_type == 0) {
                bad_type = type == 0 ? 256 : type;
                bad_type_entry = done + i;
            }
            if (len % 8 != 0 && bad_len == 0) {
                bad_len = len;
                bad_len_entry = done + i;
            }
            if (type == ENTRY_CHANGE && len <= MAX_CONF_SIZE) {
                b->conf_pos = done + i;
                b->conf_off = dsize; /* from the start of the data, fixed up below */
                b->conf_len = len;
            }
            dsize += len;
        }
        pos += recs * 16;
        done += recs;
        progressAt(c, pos);
    }
    /* Where the batch claims to end (clipped to the file), for the torn-tail test. */
    b->end = dsize > f->size - pos ? f->size : pos + dsize;
    b->conf_off += pos;
    if (crc != crc1) {
        snprintf(b->why, sizeof b->why, "header checksum mismatch (stored 0x%08x, computed 0x%08x)",
                 crc1, crc);
        return B_BAD;
    }
    if (bad_type != 0) {
        snprintf(b->why, sizeof b->why, "entry %llu of the batch has unknown type %u",
                 (unsigned long long)bad_type_entry, bad_type & 0xFF);
        return B_BAD;
    }
    if (bad_len != 0) {
        snprintf(b->why, sizeof b->why,
                 "entry %llu of the batch has length %u, not a multiple of 8",
                 (unsigned long long)bad_len_entry, bad_len);
        return B_BAD;
    }
    if (dsize > left - 8 - hsize) {
        snprintf(b->why, sizeof b->why,
                 "batch data of %llu bytes runs past the end of the file (%llu bytes left)",
                 (unsigned long long)dsize, (unsigned long long)(left - 8 - hsize));
        b->past_eof = true;
        return B_BAD;
    }
    crc = 0;
    for (k = 0; k < dsize;) {
        size_t step = dsize - k < CHUNK ? (size_t)(dsize - k) : CHUNK;
        if (readAt(c, f, fd, c->chunk, step, pos + k) != 0) {
            return B_IOERR;
        }
        crc = raftlogCrc32(c->chunk, step, crc);
        k += step;
        progressAt(c, pos + k);
    }
    if (crc != crc2) {
        snprintf(b->why, sizeof b->why, "data checksum mismatch (stored 0x%08x, computed 0x%08x)",
                 crc2, crc);
        return B_BAD;
    }
    b->entries = n;
    b->data = dsize;
    return B_OK;
}

/* Offset of the first non-zero byte in [from, size) of the file; size when there is
 * none; UINT64_MAX after a read error (recorded). */
static uint64_t firstNonZero(struct ctx *c, const struct rfile *f, int fd, uint64_t from)
{
    for (uint64_t off = from; off < f->size;) {
        size_t step = f->size - off < CHUNK ? (size_t)(f->size - off) : CHUNK;
        if (readAt(c, f, fd, c->chunk, step, off) != 0) {
            return UINT64_MAX;
        }
        for (size_t i = 0; i < step; i++) {
            if (c->chunk[i] != 0) {
                return off + i;
            }
        }
        off += step;
        progressAt(c, off);
    }
    return f->size;
}

/* What the walk over the segments carries from one to the next. */
struct walk {
    uint64_t next_index; /* index the next entry must have */
    uint64_t last_term;  /* term of the last entry seen, for monotonicity */
    uint64_t max_term;   /* the metadata's current term, 0 when unknown */
    bool term_reported;
};

static void checkTerms(struct ctx *c, const struct rfile *f, uint64_t off, const struct rbatch *b,
                       struct walk *w)
{
    if (w->term_reported) {
        return;
    }
    if (b->first_term < w->last_term) {
        problem(c, f->name, (int64_t)off, RAFTLOG_DAMAGED,
                "batch at offset %llu: term %llu is lower than the term %llu of the entry "
                "before it",
                (unsigned long long)off, (unsigned long long)b->first_term,
                (unsigned long long)w->last_term);
        w->term_reported = true;
    } else if (w->max_term != 0 && b->last_term > w->max_term) {
        problem(c, f->name, (int64_t)off, RAFTLOG_DAMAGED,
                "batch at offset %llu: term %llu is higher than the current term %llu in "
                "the metadata",
                (unsigned long long)off, (unsigned long long)b->last_term,
                (unsigned long long)w->max_term);
        w->term_reported = true;
    }
    w->last_term = b->last_term;
}

/* Checks one segment. newest: the newest open segment that holds data, where a bad
 * final batch is a torn tail. Adds the entries found to *found. */
static void checkSegment(struct ctx *c, const struct rfile *f, bool open, bool newest,
                         struct walk *w, uint64_t *found)
{
    unsigned char fmt[8];
    uint64_t off = 8, n = 0, format;
    unsigned batches = 0;
    struct rbatch b;
    int fd, rc;

    *found = 0;
    if (open && f->regular && f->size == 0) {
        return; /* libraft removes an empty open segment */
    }
    if ((fd = openFile(c, f)) < 0) {
        return;
    }
    if (f->size < 8) {
        problem(c, f->name, 0, RAFTLOG_DAMAGED, "%s (%llu bytes, no room for the format word)",
                f->size == 0 ? "file is empty" : "file is truncated", (unsigned long long)f->size);
        goto out;
    }
    if (readAt(c, f, fd, fmt, sizeof fmt, 0) != 0) {
        goto out;
    }
    format = getU64(fmt);
    if (format != DISK_FORMAT) {
        if (open && format == 0) {
            uint64_t nz = firstNonZero(c, f, fd, 8);
            if (nz == f->size) {
                goto out; /* preallocated, never written: libraft removes it */
            }
            if (nz == UINT64_MAX) {
                goto out;
            }
        }
        problem(c, f->name, 0, RAFTLOG_DAMAGED, "unexpected format version %llu (expected %d)",
                (unsigned long long)format, DISK_FORMAT);
        goto out;
    }
    for (;;) {
        if (!open && off == f->size) {
            break;
        }
        rc = readBatch(c, f, fd, off, &b);
        if (rc == B_IOERR) {
            goto out;
        }
        if (rc == B_OK) {
            uint64_t first = (open ? w->next_index : f->a) + n; /* the batch's first index */
            checkTerms(c, f, off, &b, w);
            if (b.conf_len > 0 && b.conf_len <= CHUNK) {
                if (readAt(c, f, fd, c->chunk, b.conf_len, b.conf_off) != 0) {
                    goto out;
                }
                if (checkConfiguration(c->chunk, b.conf_len) == NULL) {
                    keepConfiguration(c, c->chunk, b.conf_len, first + b.conf_pos);
                }
            }
            if (c->r->n_problems == 0) {
                c->r->good_index = first + b.entries - 1;
            }
            n += b.entries;
            c->r->entry_bytes += b.data;
            batches++;
            off = b.end;
            if (open && off == f->size) {
                break;
            }
            continue;
        }
        if (rc == B_END && open) {
            /* The end of the data of an open segment: what follows must be zeros, or
             * libraft would silently cut the segment here. */
            uint64_t nz = firstNonZero(c, f, fd, off);
            if (nz == UINT64_MAX) {
                goto out;
            }
            if (nz != f->size) {
                problem(c, f->name, (int64_t)nz, RAFTLOG_DAMAGED,
                        "non-zero bytes at offset %llu after the end of the last batch (offset "
                        "%llu): damaged batches that libraft would drop at the next start",
                        (unsigned long long)nz, (unsigned long long)off);
            }
            break;
        }
        if (rc == B_END) {
            snprintf(b.why, sizeof b.why,
                     "no batch where one should start (%llu bytes of zeros after the last "
                     "batch)",
                     (unsigned long long)(f->size - off));
        }
        /* A batch that does not check out. */
        if (open) {
            uint64_t from = b.past_eof || b.end > f->size ? f->size : b.end;
            uint64_t nz = firstNonZero(c, f, fd, from);
            if (nz == UINT64_MAX) {
                goto out;
            }
            if (newest && nz == f->size) {
                problem(c, f->name, (int64_t)off, RAFTLOG_TORN_TAIL,
                        "batch at offset %llu: %s; this is the tail of the newest open "
                        "segment (entries written after the last fsync, or damage of the "
                        "last batch); %s",
                        (unsigned long long)off, b.why,
                        b.past_eof ? "libraft refuses to start on it (short read)"
                                   : "libraft drops it at the next start");
            } else {
                problem(c, f->name, (int64_t)off, RAFTLOG_DAMAGED, "batch at offset %llu: %s; %s",
                        (unsigned long long)off, b.why,
                        newest ? "data follows it, which libraft would drop at the next start"
                               : "a newer open segment follows, whose entries would take the "
                                 "wrong indexes");
            }
        } else {
            problem(c, f->name, (int64_t)off, RAFTLOG_DAMAGED, "batch at offset %llu: %s",
                    (unsigned long long)off, b.why);
        }
        goto out;
    }
    if (!open) {
        uint64_t expected = f->b - f->a + 1;
        if (n != expected) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED,
                    "found %llu entr%s, the name says %llu (indexes %llu to %llu)",
                    (unsigned long long)n, plural(n), (unsigned long long)expected,
                    (unsigned long long)f->a, (unsigned long long)f->b);
        }
    }
out:
    (void)batches;
    *found = n;
    c->done += f->size;
    progressAt(c, 0);
    close(fd);
}

/* ---- the walk ------------------------------------------------------------------------ */

static int listDir(struct ctx *c, struct rfile **out, size_t *n, char *errmsg)
{
    DIR *d = opendir(c->dir);
    struct dirent *e;
    struct rfile *files = NULL;
    size_t cap = 0;

    *out = NULL;
    *n = 0;
    if (d == NULL) {
        int err = errno;
        errorf(errmsg, "cannot open the raft directory %s: %s", c->dir, strerror(err));
        return err == ENOENT ? CAIRN_ENOTFOUND : CAIRN_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        struct rfile f;
        struct stat st;
        char path[PATH_MAX];
        if (!classify(e->d_name, &f)) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", c->dir, f.name);
        if (stat(path, &st) == 0) {
            f.regular = S_ISREG(st.st_mode);
            f.size = f.regular ? (uint64_t)st.st_size : 0;
        }
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            struct rfile *p = realloc(files, ncap * sizeof *p);
            if (p == NULL) {
                free(files);
                closedir(d);
                errorf(errmsg, "out of memory listing %s", c->dir);
                return CAIRN_ENOMEM;
            }
            files = p;
            cap = ncap;
        }
        files[(*n)++] = f;
    }
    closedir(d);
    if (*n > 0) {
        qsort(files, *n, sizeof *files, compareFiles);
    }
    *out = files;
    return 0;
}

/* Whether an open segment holds any data: its format word is set. Spares that libraft
 * preallocates are zero. */
static bool openHasData(struct ctx *c, const struct rfile *f)
{
    char path[PATH_MAX];
    unsigned char fmt[8];
    bool has = false;
    int fd;
    if (!f->regular || f->size < 8) {
        return f->size > 0 || !f->regular;
    }
    snprintf(path, sizeof path, "%s/%s", c->dir, f->name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return true;
    }
    has = pread(fd, fmt, 8, 0) != 8 || getU64(fmt) != 0;
    close(fd);
    return has;
}

/* The metadata in force: the file with the higher version. */
static void checkAllMetadata(struct ctx *c, const struct rfile *files, size_t n)
{
    struct metadata m[2] = {{0}, {0}};
    for (size_t i = 0; i < n; i++) {
        if (files[i].type == F_METADATA) {
            checkMetadata(c, &files[i], &m[files[i].a - 1]);
        }
    }
    if (m[0].present && m[1].present && m[0].version == m[1].version) {
        problem(c, "metadata2", -1, RAFTLOG_DAMAGED,
                "metadata1 and metadata2 are both at version %llu",
                (unsigned long long)m[0].version);
    }
    for (int i = 0; i < 2; i++) {
        if (m[i].present && m[i].version > c->r->metadata_version) {
            c->r->metadata_version = m[i].version;
            c->r->term = m[i].term;
            c->r->voted_for = m[i].vote;
        }
    }
}

/* The .meta files (oldest first) and their data files. */
static void checkSnapshots(struct ctx *c, const struct rfile *files, size_t n)
{
    const struct rfile *newest = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct rfile *f = &files[i];
        char name[RAFTLOG_FILE_SIZE];
        bool orphan = true;
        if (f->type != F_META) {
            continue;
        }
        /* A .meta without its data file is what a stop in the middle of writing a
         * snapshot leaves: libraft deletes such orphans at start and uses the
         * previous snapshot, so it is neither a problem nor the newest snapshot. */
        snprintf(name, sizeof name, "%.*s", (int)(strlen(f->name) - 5), f->name);
        for (size_t j = 0; j < n; j++) {
            if (files[j].type == F_SNAPSHOT && strcmp(files[j].name, name) == 0) {
                orphan = false;
            }
        }
        if (orphan) {
            continue;
        }
        c->r->snapshots++;
        newest = f; /* sorted by term, index, timestamp as libraft sorts them */
    }
    for (size_t i = 0; i < n; i++) {
        const struct rfile *f = &files[i];
        const struct rfile *data = NULL;
        char name[RAFTLOG_FILE_SIZE];
        if (f->type != F_META) {
            continue;
        }
        checkMeta(c, f);
        snprintf(name, sizeof name, "%.*s", (int)(strlen(f->name) - 5), f->name);
        for (size_t j = 0; j < n; j++) {
            if (files[j].type == F_SNAPSHOT && strcmp(files[j].name, name) == 0) {
                data = &files[j];
            }
        }
        if (data == NULL) {
            continue; /* an orphan, see above */
        }
        if (data->regular && data->size == 0) {
            /* libraft skips such a snapshot (an interrupted one); only the newest
             * matters, since libraft would then fall back to an older one or none. */
            if (f == newest) {
                problem(c, f->name, -1, RAFTLOG_DAMAGED, "its data file %s is %s", name,
                        data == NULL ? "missing" : "empty");
            }
            continue;
        }
        checkSnapshotData(c, data, f == newest);
    }
    if (newest != NULL) {
        c->r->snapshot_term = newest->a;
        c->r->snapshot_index = newest->b;
    }
}

static void checkSegments(struct ctx *c, const struct rfile *files, size_t n)
{
    struct walk w = {0};
    const struct rfile *prev = NULL;
    const struct rfile *newest_open = NULL;
    uint64_t snap = c->r->snapshot_index;
    uint64_t found;

    w.max_term = c->r->metadata_version != 0 ? c->r->term : 0;
    w.next_index = snap + 1;
    if (c->r->n_problems == 0) {
        c->r->good_index = snap;
    }
    for (size_t i = 0; i < n; i++) {
        if (files[i].type == F_OPEN && openHasData(c, &files[i])) {
            newest_open = &files[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct rfile *f = &files[i];
        if (f->type != F_CLOSED) {
            continue;
        }
        c->r->closed_segments++;
        if (f->a == 0 || f->b < f->a) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED, "the name gives an empty index range");
            continue;
        }
        if (prev == NULL) {
            if (f->a > w.next_index) {
                problem(c, f->name, -1, RAFTLOG_DAMAGED,
                        "the log starts at index %llu but %s: entries %llu to %llu are "
                        "missing",
                        (unsigned long long)f->a,
                        snap ? "the newest snapshot ends before it" : "there is no snapshot",
                        (unsigned long long)w.next_index, (unsigned long long)(f->a - 1));
            }
        } else if (f->a <= prev->b) {
            problem(c, f->name, -1, RAFTLOG_DAMAGED, "overlaps %s (indexes %llu to %llu)",
                    prev->name, (unsigned long long)f->a, (unsigned long long)prev->b);
        } else if (f->a != prev->b + 1 && f->a > snap + 1) {
            /* A gap that no snapshot covers: a segment is gone. (libraft drops older
             * segments before a gap when the newest snapshot covers it.) */
            problem(c, f->name, -1, RAFTLOG_DAMAGED,
                    "entries %llu to %llu are missing before it (a segment file was "
                    "removed?)",
                    (unsigned long long)(prev->b + 1), (unsigned long long)(f->a - 1));
        }
        if (c->r->first_index == 0) {
            c->r->first_index = f->a;
        }
        checkSegment(c, f, false, false, &w, &found);
        c->r->entries += found;
        c->r->last_index = f->b;
        prev = f;
        if (c->oserr != 0) {
            return;
        }
    }
    w.next_index = prev != NULL ? prev->b + 1 : snap + 1;
    for (size_t i = 0; i < n; i++) {
        const struct rfile *f = &files[i];
        if (f->type != F_OPEN) {
            continue;
        }
        c->r->open_segments++;
        checkSegment(c, f, true, f == newest_open, &w, &found);
        if (found > 0) {
            if (c->r->first_index == 0) {
                c->r->first_index = w.next_index;
            }
            w.next_index += found;
            c->r->entries += found;
            c->r->last_index = w.next_index - 1;
        }
        if (c->oserr != 0) {
            return;
        }
    }
    if (c->r->entries > 0 && c->r->metadata_version == 0) {
        /* libraft would start with term 0 and no vote: a node of a cluster could then
         * vote twice in one term. */
        problem(c, "metadata1", -1, RAFTLOG_DAMAGED,
                "no valid metadata file (metadata1, metadata2), yet the log has entries: the "
                "current term and vote are lost");
    }
    if (snap != 0 && c->r->last_index != 0 && c->r->last_index < snap && newest_open != NULL) {
        problem(c, newest_open->name, -1, RAFTLOG_DAMAGED,
                "the log ends at index %llu, behind the newest snapshot's index %llu",
                (unsigned long long)c->r->last_index, (unsigned long long)snap);
    }
}

int raftlogVerify(const char *raft_dir, raftlog_progress_fn progress, void *progress_arg,
                  struct raftlog_report *out, char *errmsg)
{
    struct ctx c = {0};
    struct rfile *files = NULL;
    size_t n = 0;
    int rv;

    memset(out, 0, sizeof *out);
    c.dir = raft_dir;
    c.r = out;
    c.progress = progress;
    c.progress_arg = progress_arg;
    rv = listDir(&c, &files, &n, errmsg);
    if (rv != 0) {
        return rv;
    }
    c.chunk = malloc(CHUNK);
    if (c.chunk == NULL) {
        free(files);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        c.total += files[i].size;
    }
    progressAt(&c, 0);
    checkAllMetadata(&c, files, n);
    checkSnapshots(&c, files, n);
    if (c.oserr == 0) {
        checkSegments(&c, files, n);
    }
    free(c.chunk);
    free(files);
    if (c.oserr != 0) {
        errorf(errmsg, "out of memory checking %s", raft_dir);
        return c.oserr;
    }
    if (out->n_problems > 0) {
        const struct raftlog_problem *p = &out->problems[0];
        errorf(errmsg, "%s/%s: %s", raft_dir, p->file, p->message);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static void jsonKey(struct buf *b, const char *key)
{
    if (b->len > 0 && b->p[b->len - 1] != '{' && b->p[b->len - 1] != '[') {
        bufPutc(b, ',');
    }
    bufJsonString(b, key, strlen(key));
    bufPutc(b, ':');
}

static void jsonU64(struct buf *b, const char *key, uint64_t v)
{
    jsonKey(b, key);
    bufPrintf(b, "%llu", (unsigned long long)v);
}

void raftlogReportJson(const struct raftlog_report *r, const char *file_prefix, struct buf *b)
{
    bufPutc(b, '{');
    jsonKey(b, "ok");
    bufPuts(b, r->n_problems == 0 ? "true" : "false");
    jsonU64(b, "files_checked", r->files_checked);
    jsonU64(b, "bytes_checked", r->bytes_checked);
    jsonU64(b, "entries", r->entries);
    jsonU64(b, "entry_bytes", r->entry_bytes);
    jsonKey(b, "first_index");
    r->entries ? bufPrintf(b, "%llu", (unsigned long long)r->first_index) : bufPuts(b, "null");
    jsonKey(b, "last_index");
    r->entries ? bufPrintf(b, "%llu", (unsigned long long)r->last_index) : bufPuts(b, "null");
    jsonU64(b, "closed_segments", r->closed_segments);
    jsonU64(b, "open_segments", r->open_segments);
    jsonU64(b, "snapshots", r->snapshots);
    jsonU64(b, "term", r->term);
    jsonU64(b, "voted_for", r->voted_for);
    jsonKey(b, "snapshot");
    if (r->snapshot_index != 0) {
        bufPutc(b, '{');
        jsonU64(b, "index", r->snapshot_index);
        jsonU64(b, "term", r->snapshot_term);
        jsonKey(b, "backup");
        if (r->snapshot_backup[0] != '\0') {
            bufJsonString(b, r->snapshot_backup, strlen(r->snapshot_backup));
        } else {
            bufPuts(b, "null");
        }
        bufPutc(b, '}');
    } else {
        bufPuts(b, "null");
    }
    jsonKey(b, "problems");
    bufPutc(b, '[');
    for (size_t i = 0; i < r->n_problems; i++) {
        const struct raftlog_problem *p = &r->problems[i];
        char file[RAFTLOG_FILE_SIZE + 64];
        const char *kind = raftlogKindName(p->kind);
        snprintf(file, sizeof file, "%s%s", file_prefix != NULL ? file_prefix : "", p->file);
        if (i > 0) {
            bufPutc(b, ',');
        }
        bufPutc(b, '{');
        jsonKey(b, "file");
        bufJsonString(b, file, strlen(file));
        jsonKey(b, "offset");
        p->offset >= 0 ? bufPrintf(b, "%lld", (long long)p->offset) : bufPuts(b, "null");
        jsonKey(b, "kind");
        bufJsonString(b, kind, strlen(kind));
        jsonKey(b, "message");
        bufJsonString(b, p->message, strlen(p->message));
        bufPutc(b, '}');
    }
    bufPutc(b, ']');
    jsonU64(b, "problems_omitted", r->problems_omitted);
    bufPutc(b, '}');
}
