/* Making backups: read a frozen page image, hash every page, keep the pages that
 * changed since the parent backup, and write them as a `.cbk` file (cbk.h). Also the
 * read-only snapshot of a foreign SQLite file (backupSnapshotFile, over snapread.h),
 * backup ids, type names and the JSON of a catalog entry.
 *
 * Threads: backupCreate runs on the caller's thread (a worker, never the loop), which
 * starts a few threads of its own for the duration of the call (one per CPU, at most
 * MAX_WORKERS). They read, hash, compare and compress chunks of the image through a
 * ring of slots; the caller's thread writes the blocks in order, so that reading,
 * compressing and writing overlap and the output is the same whatever the number of
 * threads. The only state shared between calls is the id generator, under a mutex. */
#define _GNU_SOURCE
#include "backup.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "buf.h"
#include "cbk.h"
#include "pagesum.h"
#include "error.h"
#include "hash.h"
#include "repo.h"
#include "lib.h"
#include "snapread.h"

/* The codec by default (backup.h): LZ4 into a repository with a local path. What a
 * restore spends most of its CPU on is decompressing (every page of every file of a
 * chain, those that a newer file replaces too: they share blocks with the others), and
 * on the benchmark's database LZ4 decompresses at 3.5 GB/s a CPU against zstd's 1.4
 * (zstd -3), for files 12% larger (488 MiB against 435 for 1 GiB), written faster
 * (docs/BENCHMARKS.md, "Backups").
 *
 * zstd's level when zstd is asked for without one, into a local repository: the fast
 * level -3: on a 1 GiB database (2 CPUs) it compresses to 43% at 1.4 GB/s, where level
 * 1 gives 37% at 0.9 GB/s. */
#define DEFAULT_LEVEL (-3)
/* The level of a backup sent to a repository without a local path (S3): level 1. There
 * every byte is sent over the network, stored and read back by ranged GETs, and a
 * network carries less than the fast level compresses (-3: 1.4 GB/s on 2 CPUs, level 1
 * 0.9): 10% fewer bytes (a 512 MiB database: 198.8 MiB against 220.7) is 10% less to
 * upload, to keep, and to fetch at a restore, for about 0.2 CPU-s more. Against s3rver
 * on loopback, which rebuilds an object from its parts at completion, the full backup
 * of that database took 2.67 s against 2.82 at -3, in turns (docs/BENCHMARKS.md,
 * "Backups to S3"). */
#define REMOTE_LEVEL 1
/* LZ4 takes accelerations up to 65537 (lz4.c's LZ4_ACCELERATION_MAX, not in lz4.h);
 * 1 is its default, its best ratio. */
#define LZ4_MAX_ACCELERATION 65537
/* A block of about 1 MiB: large enough that zstd and the syscalls run at full speed,
 * small enough that a ring of them stays a few MiB. 256 pages of 4 KiB. */
#define DEFAULT_BLOCK_BYTES (1u << 20)
#define MAX_WORKERS 4
/* The ring of blocks in flight never takes more than this, unless the caller asked
 * for blocks so big that two of them do. */
#define RING_BYTES (24u << 20)
#define MANIFEST_CHUNK_PAGES 8192

/* ---- ids ---- */

static pthread_mutex_t id_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t id_last_ms;
static unsigned id_counter;

/* A new id and the time it names. Within one process ids only grow: the counter
 * orders ids of one millisecond, and when the clock steps back (or the counter runs
 * out) the previous millisecond is reused (or the next one borrowed). */
static void newId(char id[BACKUP_ID_SIZE], int64_t *ms_out)
{
    int64_t now = repoNowMs(), ms;
    unsigned counter;
    uint16_t rnd;
    char when[LIB_ISO8601_SIZE];

    pthread_mutex_lock(&id_mu);
    if (now > id_last_ms) {
        id_last_ms = now;
        id_counter = 0;
    } else if (++id_counter > 0xffff) {
        id_last_ms++;
        id_counter = 0;
    }
    ms = id_last_ms;
    counter = id_counter;
    pthread_mutex_unlock(&id_mu);

    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        rnd = (uint16_t)XXH64(&now, sizeof now, (uint64_t)getpid() * 65537 + counter);
    }
    libIso8601(ms, LIB_ISO8601_BASIC_MS, when);
    snprintf(id, BACKUP_ID_SIZE, "%s-%04x-%04x", when, counter, (unsigned)rnd);
    if (ms_out != NULL) {
        *ms_out = ms;
    }
}

void backupNewId(char id[BACKUP_ID_SIZE])
{
    newId(id, NULL);
}

bool backupIsOwnName(const char *name)
{
    /* What newId writes, then ".cbk": d a decimal digit, h a lower-case hex digit. */
    static const char shape[] = "ddddddddTdddddddddZ-hhhh-hhhh.cbk";
    size_t i;
    for (i = 0; shape[i] != '\0'; i++) {
        char c = name[i];
        bool ok = shape[i] == 'd'   ? c >= '0' && c <= '9'
                  : shape[i] == 'h' ? (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
                                    : c == shape[i];
        if (!ok) {
            return false; /* also at the name's NUL, which matches nothing in shape */
        }
    }
    return name[i] == '\0';
}

/* ---- chains ---- */

bool backupChainWhole(const struct backup_info *list, size_t n, size_t i)
{
    const struct backup_info *cur = &list[i];
    /* At most n steps: a loop of parents (files renamed by hand) is no chain. */
    for (size_t steps = 0; steps <= n; steps++) {
        const struct backup_info *next = NULL;
        if (cur->error[0] != '\0' || cur->verified == BACKUP_VERIFY_FAILED) {
            return false;
        }
        if (cur->type == BACKUP_FULL || cur->parent_id[0] == '\0') {
            return true;
        }
        for (size_t k = 0; k < n && next == NULL; k++) {
            if (list[k].error[0] == '\0' && strcmp(list[k].id, cur->parent_id) == 0 &&
                memcmp(list[k].digest, cur->parent_digest, BACKUP_DIGEST_SIZE) == 0) {
                next = &list[k];
            }
        }
        if (next == NULL) {
            return false;
        }
        cur = next;
    }
    return false;
}

/* ---- names and JSON ---- */

const char *backupTypeName(int type)
{
    switch (type) {
    case BACKUP_FULL:
        return "full";
    case BACKUP_INCREMENTAL:
        return "incremental";
    case BACKUP_DIFFERENTIAL:
        return "differential";
    }
    return "unknown";
}

int backupTypeFromName(const char *name)
{
    for (int t = BACKUP_FULL; t <= BACKUP_DIFFERENTIAL; t++) {
        if (strcmp(name, backupTypeName(t)) == 0) {
            return t;
        }
    }
    return -1;
}

static void jsonKey(struct buf *b, const char *key)
{
    bufJsonString(b, key, strlen(key));
    bufPutc(b, ':');
}

static void jsonStr(struct buf *b, const char *key, const char *s)
{
    jsonKey(b, key);
    bufJsonString(b, s, strlen(s));
    bufPutc(b, ',');
}

static void jsonU64(struct buf *b, const char *key, uint64_t v)
{
    jsonKey(b, key);
    bufPrintf(b, "%llu,", (unsigned long long)v);
}

static void jsonI64(struct buf *b, const char *key, int64_t v)
{
    jsonKey(b, key);
    bufJsonInt(b, v);
    bufPutc(b, ',');
}

static void jsonDigest(struct buf *b, const char *key, const unsigned char *d)
{
    static const unsigned char zero[BACKUP_DIGEST_SIZE];
    char hex[2 * BACKUP_DIGEST_SIZE + 1];
    jsonKey(b, key);
    if (memcmp(d, zero, BACKUP_DIGEST_SIZE) == 0) {
        bufPuts(b, "null,");
        return;
    }
    repoHex(d, BACKUP_DIGEST_SIZE, hex);
    bufPrintf(b, "\"%s\",", hex);
}

void backupInfoJson(const struct backup_info *info, struct buf *b)
{
    char when[32];
    bufPutc(b, '{');
    jsonStr(b, "id", info->id);
    jsonKey(b, "type");
    if (info->type >= BACKUP_FULL && info->type <= BACKUP_DIFFERENTIAL) {
        bufPrintf(b, "\"%s\",", backupTypeName(info->type));
    } else {
        bufPuts(b, "null,");
    }
    jsonKey(b, "parent_id");
    if (info->parent_id[0] != '\0') {
        bufJsonString(b, info->parent_id, strlen(info->parent_id));
        bufPutc(b, ',');
    } else {
        bufPuts(b, "null,");
    }
    repoIso8601(info->created_ms, when);
    jsonStr(b, "created", when);
    jsonI64(b, "created_ms", info->created_ms);
    jsonU64(b, "raft_index", info->raft_index);
    jsonU64(b, "raft_term", info->raft_term);
    jsonU64(b, "page_size", info->page_size);
    jsonU64(b, "page_count", info->page_count);
    jsonU64(b, "pages", info->pages);
    jsonU64(b, "size_bytes", info->size_bytes);
    jsonStr(b, "path", info->path);
    jsonI64(b, "duration_ms", info->duration_ms);
    jsonStr(b, "verified",
            info->verified == BACKUP_VERIFIED        ? "verified"
            : info->verified == BACKUP_VERIFY_FAILED ? "failed"
                                                     : "unverified");
    jsonKey(b, "verified_at");
    if (info->verified != BACKUP_UNVERIFIED) {
        repoIso8601(info->verified_ms, when);
        bufPrintf(b, "\"%s\",", when);
    } else {
        bufPuts(b, "null,");
    }
    jsonDigest(b, "digest", info->digest);
    jsonDigest(b, "parent_digest", info->parent_digest);
    jsonDigest(b, "history", info->history);
    jsonKey(b, "compression");
    if (info->error[0] == '\0') {
        bufPrintf(b, "\"%s\",", cbkCodecName(info->codec));
    } else {
        bufPuts(b, "null,");
    }
    jsonKey(b, "source");
    bufJsonString(b, info->source, strlen(info->source));
    if (info->repository[0] != '\0') {
        bufPutc(b, ',');
        jsonKey(b, "repository");
        bufJsonString(b, info->repository, strlen(info->repository));
    }
    if (info->error[0] != '\0') {
        bufPutc(b, ',');
        jsonKey(b, "error");
        bufJsonString(b, info->error, strlen(info->error));
    }
    bufPutc(b, '}');
}

/* ---- the pipeline ---- */

/* The image is cut into chunks of block_pages consecutive pages; each chunk becomes at
 * most one block, holding the pages of the chunk that changed. A worker does all the
 * work of a chunk (read, hash, compare, compress, checksum) and the calling thread
 * writes the blocks in order, so the only serial work is the writing. */

struct image {
    int fd;
    const struct snapread *snap; /* when set, pages are read through it, not from fd */
    const char *source;
    uint32_t page_size;
    uint32_t block_pages;
    uint64_t page_count;
    uint64_t *manifest;        /* filled by the workers, each its own chunks */
    const uint64_t *pmanifest; /* the parent's, or NULL for a full backup */
    uint64_t parent_pages;     /* pages of pmanifest that compare (0: every page changed) */
    bool verify;               /* every page carries a checksum to verify (pagesum.h) */
};

enum { SLOT_FREE, SLOT_READY, SLOT_BUSY, SLOT_DONE };

/* One chunk on its way. `out` holds the block exactly as in the file: head, frame,
 * checksum. */
struct slot {
    uint64_t first; /* index of the chunk's first page */
    uint32_t count; /* pages in the chunk */
    unsigned char *raw;
    uint32_t *pgnos;
    uint32_t n; /* pages stored (changed) */
    unsigned char *out;
    size_t out_cap;
    size_t out_len;
    int read_err; /* errno of the read, -1 for end of file, or 0 */
    uint64_t bad_page; /* a page that failed its checksum (1-based), or 0 */
    size_t zerr;  /* a zstd error code, or 0 */
    int state;
};

/* A thread's compressor: a zstd context at the backup's level, or LZ4's state. */
struct coder {
    int codec; /* CBK_CODEC_* */
    int level; /* zstd's level, LZ4's acceleration */
    ZSTD_CCtx *z;
    void *lz4;
};

/* false: out of memory. */
static bool coderInit(struct coder *c, int codec, int level)
{
    c->codec = codec;
    c->level = level;
    c->z = NULL;
    c->lz4 = NULL;
    if (codec == CBK_CODEC_LZ4) {
        return (c->lz4 = malloc((size_t)LZ4_sizeofState())) != NULL;
    }
    c->z = ZSTD_createCCtx();
    if (c->z != NULL && ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_compressionLevel, level))) {
        ZSTD_freeCCtx(c->z);
        c->z = NULL;
    }
    return c->z != NULL;
}

static void coderFree(struct coder *c)
{
    ZSTD_freeCCtx(c->z);
    free(c->lz4);
    c->z = NULL;
    c->lz4 = NULL;
}

/* Compress n bytes of src into dst (cap bytes, at least cbkCodecBound): the length,
 * or a zstd error code (ZSTD_isError). */
static size_t coderRun(struct coder *c, void *dst, size_t cap, const void *src, size_t n)
{
    if (c->codec == CBK_CODEC_LZ4) {
        int z;
        if (c->lz4 == NULL) {
            return (size_t)-ZSTD_error_memory_allocation;
        }
        z = LZ4_compress_fast_extState(c->lz4, src, dst, (int)n, cap > INT32_MAX ? INT32_MAX : (int)cap,
                                       c->level);
        return z > 0 ? (size_t)z : (size_t)-ZSTD_error_dstSize_tooSmall;
    }
    if (c->z == NULL) {
        return (size_t)-ZSTD_error_memory_allocation;
    }
    return ZSTD_compress2(c->z, dst, cap, src, n);
}

struct ring {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a slot became READY, or stop */
    pthread_cond_t done; /* a slot became DONE */
    struct slot *slots;
    unsigned nslots;
    uint64_t submitted, taken, written; /* sequence numbers of chunks */
    bool stop;
    pthread_t threads[MAX_WORKERS];
    unsigned nthreads;
    struct coder coder; /* the calling thread's own, when there are no workers */
    int codec;          /* CBK_CODEC_* */
    int level;          /* the codec's */
    const struct image *img;
};

/* 0, an errno value, or -1 at the end of the file. */
static int readFull(int fd, void *buf, size_t n, uint64_t off)
{
    return libPreadFull(fd, buf, n, off);
}

static void processSlot(struct coder *coder, const struct image *img, struct slot *s)
{
    const uint32_t ps = img->page_size;
    size_t head, z;
    uint64_t sum;

    s->n = 0;
    s->zerr = 0;
    s->out_len = 0;
    s->bad_page = 0;
    s->read_err = img->snap != NULL
                      ? snapreadPages(img->snap, s->first, s->count, s->raw)
                      : readFull(img->fd, s->raw, (size_t)s->count * ps, s->first * ps);
    if (s->read_err != 0) {
        return;
    }
    for (uint32_t i = 0; i < s->count; i++) {
        uint64_t pg = s->first + i;
        if (img->verify && pg * ps != 0x40000000ull &&
            !pagesumPageOk(s->raw + (size_t)i * ps, ps)) {
            s->bad_page = pg + 1;
            return;
        }
        uint64_t h = hash64(s->raw + (size_t)i * ps, ps);
        img->manifest[pg] = h;
        if (img->pmanifest != NULL && pg < img->parent_pages && img->pmanifest[pg] == h) {
            continue;
        }
        if (s->n != i) {
            memcpy(s->raw + (size_t)s->n * ps, s->raw + (size_t)i * ps, ps);
        }
        s->pgnos[s->n++] = (uint32_t)(pg + 1);
    }
    if (s->n == 0) {
        return;
    }
    head = (size_t)CBK_BLOCK_HEAD_SIZE(s->n);
    z = coderRun(coder, s->out + head, s->out_cap - head - CBK_BLOCK_SUM_SIZE, s->raw,
                 (size_t)s->n * ps);
    if (ZSTD_isError(z)) {
        s->zerr = z;
        return;
    }
    cbkBlockHeadEncode(s->out, s->n, s->pgnos, s->n * ps, (uint32_t)z);
    sum = hash64(s->out, head + z);
    for (int i = 0; i < 8; i++) {
        s->out[head + z + (size_t)i] = (unsigned char)(sum >> (8 * i));
    }
    s->out_len = head + z + CBK_BLOCK_SUM_SIZE;
}

static void *worker(void *arg)
{
    struct ring *g = arg;
    struct coder coder;
    coderInit(&coder, g->codec, g->level); /* failing, every block fails: out of memory */
    pthread_mutex_lock(&g->mu);
    for (;;) {
        struct slot *s;
        while (!g->stop && g->taken == g->submitted) {
            pthread_cond_wait(&g->work, &g->mu);
        }
        if (g->stop) {
            break;
        }
        s = &g->slots[g->taken++ % g->nslots];
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&g->mu);
        processSlot(&coder, g->img, s);
        pthread_mutex_lock(&g->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&g->done);
    }
    pthread_mutex_unlock(&g->mu);
    coderFree(&coder);
    return NULL;
}

static unsigned workerCount(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 1) {
        return 0; /* one CPU: work on the calling thread, no handoffs */
    }
    return n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

static void ringFree(struct ring *g)
{
    if (g->nthreads > 0) {
        pthread_mutex_lock(&g->mu);
        g->stop = true;
        pthread_cond_broadcast(&g->work);
        pthread_mutex_unlock(&g->mu);
        for (unsigned i = 0; i < g->nthreads; i++) {
            pthread_join(g->threads[i], NULL);
        }
    }
    for (unsigned i = 0; g->slots != NULL && i < g->nslots; i++) {
        free(g->slots[i].raw);
        free(g->slots[i].pgnos);
        free(g->slots[i].out);
    }
    free(g->slots);
    coderFree(&g->coder);
    pthread_cond_destroy(&g->work);
    pthread_cond_destroy(&g->done);
    pthread_mutex_destroy(&g->mu);
}

static int ringInit(struct ring *g, const struct image *img, int codec, int level, char *errmsg)
{
    size_t raw = (size_t)img->block_pages * img->page_size;
    size_t out = (size_t)CBK_BLOCK_HEAD_SIZE(img->block_pages) + cbkCodecBound(codec, raw) +
                 CBK_BLOCK_SUM_SIZE;
    unsigned want, least;
    void *mem;

    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->work, NULL);
    pthread_cond_init(&g->done, NULL);
    g->codec = codec;
    g->level = level;
    g->img = img;
    g->nthreads = workerCount();
    /* Two chunks per worker keep every worker busy while the oldest is written. */
    want = g->nthreads ? 2 * g->nthreads + 1 : 1;
    least = g->nthreads ? 2 : 1;
    g->nslots = (unsigned)(RING_BYTES / (raw + out));
    g->nslots = g->nslots > want ? want : g->nslots < least ? least : g->nslots;
    if ((g->slots = calloc(g->nslots, sizeof *g->slots)) == NULL) {
        goto oom;
    }
    for (unsigned i = 0; i < g->nslots; i++) {
        struct slot *s = &g->slots[i];
        /* Page-aligned, as the file's pages are: the kernel's copies of them into a
         * buffer that starts elsewhere in a page (malloc's, 16 bytes in) are several
         * times as slow (restore.c, struct roCache). */
        if (posix_memalign(&mem, 4096, raw) != 0) {
            mem = NULL;
        }
        s->raw = mem;
        s->pgnos = malloc(sizeof *s->pgnos * img->block_pages);
        s->out = malloc(out);
        s->out_cap = out;
        if (s->raw == NULL || s->pgnos == NULL || s->out == NULL) {
            goto oom;
        }
    }
    for (unsigned i = 0; i < g->nthreads; i++) {
        if (pthread_create(&g->threads[i], NULL, worker, g) != 0) {
            g->nthreads = i; /* fewer workers, or none: still correct */
            break;
        }
    }
    if (g->nthreads == 0 && !coderInit(&g->coder, codec, level)) {
        goto oom;
    }
    return 0;
oom:
    ringFree(g);
    errorf(errmsg, "out of memory for the backup's buffers");
    return CAIRN_ENOMEM;
}

/* Hand the next chunk to the workers (or do it here when there are none). */
static void ringSubmit(struct ring *g, uint64_t first, uint32_t count)
{
    struct slot *s = &g->slots[g->submitted % g->nslots];
    s->first = first;
    s->count = count;
    if (g->nthreads == 0) {
        processSlot(&g->coder, g->img, s);
        s->state = SLOT_DONE;
        g->submitted++;
        return;
    }
    pthread_mutex_lock(&g->mu);
    s->state = SLOT_READY;
    g->submitted++;
    pthread_cond_signal(&g->work);
    pthread_mutex_unlock(&g->mu);
}

/* ---- writing the file ---- */

/* The new object, written through a repository writer (the posix driver starts the
 * writeback as it goes and fsyncs at commit). */
struct writer {
    struct repo_writer *rw;
    const char *path; /* where the object will be, for messages */
    uint64_t off;
    struct hash_stream *digest;
};

static int writeOut(struct writer *w, const void *p, size_t n, char *errmsg)
{
    int rv;
    hashStreamUpdate(w->digest, p, n);
    if ((rv = repoWrite(w->rw, p, n, errmsg)) != 0) {
        return rv;
    }
    w->off += n;
    return 0;
}

struct counters {
    uint64_t blocks, pages, comp;
};

/* Write the block of the oldest chunk in flight, waiting for it. */
static int ringWriteOldest(struct ring *g, struct writer *w, struct counters *c, char *errmsg)
{
    struct slot *s = &g->slots[g->written % g->nslots];
    const struct image *img = g->img;
    int rv;
    if (g->nthreads > 0) {
        pthread_mutex_lock(&g->mu);
        while (s->state != SLOT_DONE) {
            pthread_cond_wait(&g->done, &g->mu);
        }
        pthread_mutex_unlock(&g->mu);
    }
    if (s->read_err != 0) {
        errorf(errmsg, "read the database %s at page %llu: %s", img->source,
               (unsigned long long)s->first + 1,
               s->read_err < 0 ? "the file is shorter than its page count" : strerror(s->read_err));
        return s->read_err < 0 ? CAIRN_ECORRUPT : errorFromErrno(s->read_err);
    }
    if (s->bad_page != 0) {
        errorf(errmsg, "page %llu of the database %s fails its checksum: the database is "
                       "damaged, and a backup never copies a damaged page (run cairn check, "
                       "then cairn repair)",
               (unsigned long long)s->bad_page, img->source);
        return CAIRN_ECORRUPT;
    }
    if (s->zerr != 0) {
        errorf(errmsg, "compress a block for %s: %s", w->path, ZSTD_getErrorName(s->zerr));
        return ZSTD_getErrorCode(s->zerr) == ZSTD_error_memory_allocation ? CAIRN_ENOMEM
                                                                          : CAIRN_EIO;
    }
    if (s->n > 0) {
        if ((rv = writeOut(w, s->out, s->out_len, errmsg)) != 0) {
            return rv;
        }
        c->blocks++;
        c->pages += s->n;
        c->comp += s->out_len - CBK_BLOCK_HEAD_SIZE(s->n) - CBK_BLOCK_SUM_SIZE;
    }
    s->state = SLOT_FREE;
    g->written++;
    return 0;
}

static uint32_t be16(const unsigned char *p)
{
    return (uint32_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Page size and page count of the SQLite image in fd, as SQLite itself would take
 * them from the header of page 1. An empty file is a database of no pages. */
static int imageGeometry(int fd, const char *source, uint32_t *page_size, uint64_t *page_count,
                         char *errmsg)
{
    unsigned char h[100];
    struct stat st;
    uint64_t size;
    int err;
    if (fstat(fd, &st) != 0) {
        errorf(errmsg, "stat the database %s: %s", source, strerror(errno));
        return errorFromErrno(errno);
    }
    size = (uint64_t)st.st_size;
    if (size == 0) {
        *page_size = 4096; /* SQLite's default; nothing depends on it */
        *page_count = 0;
        return 0;
    }
    if ((err = readFull(fd, h, sizeof h, 0)) != 0) {
        errorf(errmsg, "read the header of the database %s: %s", source,
               err < 0 ? "the file is shorter than a SQLite header" : strerror(err));
        return err < 0 ? CAIRN_ECORRUPT : errorFromErrno(err);
    }
    if (memcmp(h, "SQLite format 3", 16) != 0) {
        errorf(errmsg, "%s is not a SQLite database", source);
        return CAIRN_ECORRUPT;
    }
    *page_size = be16(h + 16) == 1 ? 65536 : be16(h + 16);
    if (*page_size < 512 || (*page_size & (*page_size - 1)) != 0) {
        errorf(errmsg, "the database %s has an invalid page size %u", source, *page_size);
        return CAIRN_ECORRUPT;
    }
    /* The in-header size is valid only when the change counter matches the
     * version-valid-for number (older writers did not maintain it). */
    if (be32(h + 24) == be32(h + 92) && be32(h + 28) != 0) {
        *page_count = be32(h + 28);
        if (*page_count * *page_size > size) {
            errorf(errmsg,
                   "the database %s is %llu bytes, shorter than the %llu pages of %u "
                   "bytes its header says",
                   source, (unsigned long long)size, (unsigned long long)*page_count, *page_size);
            return CAIRN_ECORRUPT;
        }
    } else {
        *page_count = size / *page_size;
    }
    return 0;
}

/* The parent of a new incremental or differential backup: the newest readable backup
 * of the same source (of any type, or full only). */
static int chooseParent(struct repo *repo, const char *source, int type,
                        struct backup_info *parent, char *errmsg)
{
    struct backup_info *all;
    size_t n;
    int rv = repoListIn(repo, &all, &n, errmsg);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = n; i-- > 0;) {
        if (all[i].error[0] == '\0' && strcmp(all[i].source, source) == 0 &&
            (type == BACKUP_INCREMENTAL || all[i].type == BACKUP_FULL)) {
            *parent = all[i];
            free(all);
            return 0;
        }
    }
    free(all);
    errorf(errmsg, "no %sbackup of %s in %s to base the %s backup on",
           type == BACKUP_DIFFERENTIAL ? "full " : "", source, repoUrl(repo),
           backupTypeName(type));
    return CAIRN_ENOTFOUND;
}

/* Refuse a parent that a new backup could not be restored from: one whose chain in
 * repo runs through a backup whose last verification failed (its sidecar, about this
 * very file, says so), or through one that is missing or cannot be read. The child of
 * such a parent would be written, reported and then fail every restore. A parent
 * outside repo (named by path) is judged alone. The failure named is the one nearest
 * the full backup: a verification marks the backup it was asked about failed as well
 * as the member of its chain that broke. */
static int checkParentChain(struct repo *repo, const struct backup_info *parent, int type,
                            char *errmsg)
{
    struct backup_info *all = NULL;
    const struct backup_info *cur = parent, *failed = NULL;
    size_t n = 0;
    int rv;
    if ((rv = repoListIn(repo, &all, &n, errmsg)) != 0) {
        return rv;
    }
    for (size_t steps = 0; steps <= n; steps++) {
        const struct backup_info *next = NULL;
        bool listed = false;
        if (cur->verified == BACKUP_VERIFY_FAILED) {
            failed = cur;
        }
        if (cur->type == BACKUP_FULL || cur->parent_id[0] == '\0') {
            break;
        }
        for (size_t i = 0; i < n; i++) {
            listed = listed || strcmp(all[i].path, cur->path) == 0;
            if (all[i].error[0] == '\0' && strcmp(all[i].id, cur->parent_id) == 0 &&
                memcmp(all[i].digest, cur->parent_digest, BACKUP_DIGEST_SIZE) == 0) {
                next = &all[i];
            }
        }
        if (!listed && cur == parent) {
            break;
        }
        if (next == NULL) {
            errorf(errmsg,
                   "the %s backup's parent %s cannot be restored: its chain needs %s (the "
                   "parent of %s), which is not in %s or cannot be read; take a full backup",
                   backupTypeName(type), parent->id, cur->parent_id, cur->id, repoUrl(repo));
            rv = CAIRN_ECORRUPT;
            goto out;
        }
        cur = next;
    }
    if (failed != NULL) {
        char when[32];
        char through[BACKUP_ID_SIZE + 32] = "";
        repoIso8601(failed->verified_ms, when);
        if (failed != parent) {
            snprintf(through, sizeof through, " runs through %s, which", failed->id);
        }
        errorf(errmsg,
               "the %s backup's parent %s%s failed its verification at %s (%s): a backup on "
               "it could not be restored; take a full backup (or verify it again, if that "
               "failure has passed)",
               backupTypeName(type), parent->id, through, when, failed->path);
        rv = CAIRN_ECORRUPT;
    }
out:
    free(all);
    return rv;
}

/* Load the parent's manifest, checking that the file is the one the catalog saw. */
static int loadParentManifest(struct repo *repo, const struct backup_info *parent, uint64_t **out,
                              char *errmsg)
{
    struct repo_file f;
    uint64_t *m = NULL;
    char where[PATH_MAX];
    int rv;
    /* A parent named by path may be outside the repository. */
    repoWhere(repo, repoNameOf(parent->path), where);
    rv = strcmp(where, parent->path) == 0
             ? repoOpenFileIn(repo, repoNameOf(parent->path), &f, errmsg)
             : repoOpenFile(parent->path, &f, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (memcmp(f.r.t.digest, parent->digest, BACKUP_DIGEST_SIZE) != 0) {
        errorf(errmsg, "%s: changed while the backup was being made", parent->path);
        rv = CAIRN_EBUSY;
        goto out;
    }
    if ((m = malloc(f.r.h.page_count ? f.r.h.page_count * sizeof *m : 1)) == NULL) {
        errorf(errmsg, "out of memory for the manifest of %s", parent->path);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if ((rv = cbkReadManifest(&f.r, m, errmsg)) != 0) {
        free(m);
        m = NULL;
    }
out:
    repoCloseFile(&f);
    *out = m;
    return rv;
}

static int writeManifest(struct writer *w, const uint64_t *hashes, uint64_t page_count,
                         char *errmsg)
{
    unsigned char head[16];
    unsigned char *chunk = malloc(8 * MANIFEST_CHUNK_PAGES);
    struct hash_stream *sum = hashStreamNew();
    unsigned char tail[8];
    uint64_t v;
    int rv = 0;
    if (chunk == NULL || sum == NULL) {
        errorf(errmsg, "out of memory writing %s", w->path);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    cbkManifestHeadEncode(head, page_count);
    hashStreamUpdate(sum, head, sizeof head);
    if ((rv = writeOut(w, head, sizeof head, errmsg)) != 0) {
        goto out;
    }
    for (uint64_t done = 0; done < page_count;) {
        size_t n = page_count - done < MANIFEST_CHUNK_PAGES ? (size_t)(page_count - done)
                                                            : MANIFEST_CHUNK_PAGES;
        for (size_t i = 0; i < n; i++) {
            v = hashes[done + i];
            for (int k = 0; k < 8; k++) {
                chunk[8 * i + (size_t)k] = (unsigned char)(v >> (8 * k));
            }
        }
        hashStreamUpdate(sum, chunk, 8 * n);
        if ((rv = writeOut(w, chunk, 8 * n, errmsg)) != 0) {
            goto out;
        }
        done += n;
    }
    v = hashStreamDigest64(sum);
    for (int k = 0; k < 8; k++) {
        tail[k] = (unsigned char)(v >> (8 * k));
    }
    rv = writeOut(w, tail, sizeof tail, errmsg);
out:
    hashStreamFree(sum);
    free(chunk);
    return rv;
}

static void fillInfo(const struct cbk_header *h, const struct cbk_footer *f,
                     const struct cbk_trailer *t, const char *path, struct backup_info *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->id, h->id, BACKUP_ID_SIZE);
    out->type = h->type;
    memcpy(out->parent_id, h->parent_id, BACKUP_ID_SIZE);
    memcpy(out->parent_digest, h->parent_digest, BACKUP_DIGEST_SIZE);
    memcpy(out->digest, t->digest, BACKUP_DIGEST_SIZE);
    memcpy(out->source, h->source, BACKUP_SOURCE_SIZE);
    out->created_ms = h->created_ms;
    out->raft_index = h->raft_index;
    out->raft_term = h->raft_term;
    out->page_size = h->page_size;
    out->page_count = h->page_count;
    out->pages = f->pages;
    out->size_bytes = t->file_size;
    out->duration_ms = f->duration_ms;
    snprintf(out->path, sizeof out->path, "%s", path);
    out->verified = BACKUP_UNVERIFIED;
    memcpy(out->history, h->history, BACKUP_HISTORY_SIZE);
    out->codec = h->codec;
}

int backupParseCompression(const char *s, int *codec, int *level, char *errmsg)
{
    const char *colon = s != NULL ? strchr(s, ':') : NULL;
    size_t n = colon != NULL ? (size_t)(colon - s) : (s != NULL ? strlen(s) : 0);
    long v = 0;
    if (s != NULL && n == 3 && strncmp(s, "lz4", 3) == 0) {
        *codec = BACKUP_CODEC_LZ4;
    } else if (s != NULL && n == 4 && strncmp(s, "zstd", 4) == 0) {
        *codec = BACKUP_CODEC_ZSTD;
    } else {
        errorf(errmsg, "compression \"%.64s\": expected lz4, lz4:ACCELERATION, zstd or zstd:LEVEL",
               s != NULL ? s : "");
        return CAIRN_EINVAL;
    }
    if (colon != NULL) {
        char *end;
        long lo = *codec == BACKUP_CODEC_LZ4 ? 1 : ZSTD_minCLevel();
        long hi = *codec == BACKUP_CODEC_LZ4 ? LZ4_MAX_ACCELERATION : ZSTD_maxCLevel();
        errno = 0;
        v = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi || v == 0) {
            errorf(errmsg, "compression \"%.64s\": the %s %s must be a whole number from %ld to %ld%s",
                   s, *codec == BACKUP_CODEC_LZ4 ? "LZ4" : "zstd",
                   *codec == BACKUP_CODEC_LZ4 ? "acceleration" : "level", lo, hi,
                   *codec == BACKUP_CODEC_ZSTD ? ", not 0" : "");
            return CAIRN_EINVAL;
        }
    }
    *level = (int)v;
    return 0;
}

/* Check the options and fill the header's fields that do not depend on the parent. */
static int prepareHeader(const struct backup_source *src, const struct backup_options *opt,
                         bool remote, struct cbk_header *h, char *errmsg)
{
    int rv;
    memset(h, 0, sizeof *h);
    if (src == NULL || opt == NULL || src->fd < 0 || opt->type < BACKUP_FULL ||
        opt->type > BACKUP_DIFFERENTIAL) {
        errorf(errmsg, "backup: invalid arguments");
        return CAIRN_EINVAL;
    }
    if (src->source == NULL || strlen(src->source) >= BACKUP_SOURCE_SIZE) {
        errorf(errmsg, "backup: the source name must be given, under %d bytes", BACKUP_SOURCE_SIZE);
        return CAIRN_EINVAL;
    }
    if (opt->codec < BACKUP_CODEC_DEFAULT || opt->codec > BACKUP_CODEC_ZSTD) {
        errorf(errmsg, "backup: unknown codec %d", opt->codec);
        return CAIRN_EINVAL;
    }
    h->codec = opt->codec == BACKUP_CODEC_ZSTD || (opt->codec == BACKUP_CODEC_DEFAULT && remote)
                   ? CBK_CODEC_ZSTD
                   : CBK_CODEC_LZ4;
    if (h->codec == CBK_CODEC_LZ4) {
        h->level = opt->level != 0 ? opt->level : 1;
        if (h->level < 1 || h->level > LZ4_MAX_ACCELERATION) {
            errorf(errmsg, "backup: LZ4 acceleration %d outside 1..%d", h->level,
                   LZ4_MAX_ACCELERATION);
            return CAIRN_EINVAL;
        }
    } else {
        h->level = opt->level != 0 ? opt->level : remote ? REMOTE_LEVEL : DEFAULT_LEVEL;
        if (h->level < ZSTD_minCLevel() || h->level > ZSTD_maxCLevel()) {
            errorf(errmsg, "backup: zstd level %d outside %d..%d", h->level, ZSTD_minCLevel(),
                   ZSTD_maxCLevel());
            return CAIRN_EINVAL;
        }
    }
    if (src->snap != NULL) {
        struct snapread_info si;
        snapreadGetInfo(src->snap, &si);
        h->page_size = si.page_size;
        h->page_count = si.page_count;
    } else if ((rv = imageGeometry(src->fd, src->source, &h->page_size, &h->page_count,
                                   errmsg)) != 0) {
        return rv;
    }
    h->block_pages = opt->block_pages;
    if (h->block_pages == 0) {
        h->block_pages = DEFAULT_BLOCK_BYTES / h->page_size;
    }
    if (h->block_pages > CBK_MAX_BLOCK_PAGES ||
        (uint64_t)h->block_pages * h->page_size > CBK_MAX_BLOCK_BYTES) {
        errorf(errmsg, "backup: blocks of %u pages of %u bytes exceed %u bytes", h->block_pages,
               h->page_size, CBK_MAX_BLOCK_BYTES);
        return CAIRN_EINVAL;
    }
    h->type = opt->type;
    snprintf(h->source, sizeof h->source, "%s", src->source);
    h->raft_index = src->raft_index;
    h->raft_term = src->raft_term;
    memcpy(h->history, src->history, CBK_HISTORY_SIZE);
    return 0;
}

int backupCreate(const struct backup_source *src, const struct backup_options *opt,
                 struct backup_info *out, char *errmsg)
{
    struct repo *repo;
    int rv;
    if (opt == NULL || opt->repo == NULL) {
        errorf(errmsg, "backup: invalid arguments");
        return CAIRN_EINVAL;
    }
    if ((rv = repoOpen(opt->repo, &repo, errmsg)) != 0) {
        return rv;
    }
    rv = backupCreateIn(repo, src, opt, out, errmsg);
    repoClose(repo);
    return rv;
}

int backupCreateIn(struct repo *repo, const struct backup_source *src,
                   const struct backup_options *opt, struct backup_info *out, char *errmsg)
{
    const int64_t t0 = repoMonoMs();
    struct cbk_header h;
    struct cbk_footer f;
    struct cbk_trailer t;
    struct backup_info parent;
    struct image img;
    struct writer w = {0};
    struct counters c = {0, 0, 0};
    struct ring ring;
    bool ring_up = false;
    uint64_t *pmanifest = NULL;
    unsigned char hbytes[CBK_HEADER_SIZE];
    unsigned char tail[CBK_FOOTER_SIZE + CBK_TRAILER_SIZE];
    char name[BACKUP_ID_SIZE + 8], path[PATH_MAX];
    uint64_t chunks, total;
    int rv;

    memset(&img, 0, sizeof img);
    if (repo == NULL) {
        errorf(errmsg, "backup: invalid arguments");
        return CAIRN_EINVAL;
    }
    if ((rv = prepareHeader(src, opt, repoLocalPath(repo) == NULL, &h, errmsg)) != 0) {
        return rv;
    }
    img.fd = src->fd;
    img.snap = src->snap;
    img.source = src->source;
    img.page_size = h.page_size;
    if (src->verify_pages) {
        unsigned char hdr[24];
        img.verify = pread(src->fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
                     hdr[20] == PAGESUM_RESERVE;
    }
    img.block_pages = h.block_pages;
    img.page_count = h.page_count;
    if (opt->type != BACKUP_FULL) {
        if (opt->parent_id != NULL && opt->parent_id[0] != '\0') {
            rv = repoFindIn(repo, opt->parent_id, &parent, errmsg);
            if (rv == 0 && parent.error[0] != '\0') {
                errorf(errmsg, "parent %s of the %s backup cannot be read: %s", parent.id,
                       backupTypeName(opt->type), parent.error);
                rv = CAIRN_ECORRUPT;
            } else if (rv == 0 && opt->type == BACKUP_DIFFERENTIAL &&
                       parent.type != BACKUP_FULL) {
                errorf(errmsg, "parent %s of a differential backup is %s, not full", parent.id,
                       backupTypeName(parent.type));
                rv = CAIRN_EINVAL;
            }
        } else {
            rv = chooseParent(repo, src->source, opt->type, &parent, errmsg);
        }
    }
    if (rv == CAIRN_ENOTFOUND && (opt->parent_id == NULL || opt->parent_id[0] == '\0')) {
        /* Nothing to chain to: the first backup of a source into a repository, or one
         * after every backup of it went. Taken whole, as a full backup, and the entry
         * says so: the same pages an incremental would store, and a backup now rather
         * than none until a full one is asked for. */
        h.type = BACKUP_FULL;
        rv = 0;
    } else if (h.type != BACKUP_FULL) {
        if (rv != 0 || (rv = checkParentChain(repo, &parent, opt->type, errmsg)) != 0 ||
            (rv = loadParentManifest(repo, &parent, &pmanifest, errmsg)) != 0) {
            goto err;
        }
        memcpy(h.parent_id, parent.id, BACKUP_ID_SIZE);
        memcpy(h.parent_digest, parent.digest, BACKUP_DIGEST_SIZE);
        img.pmanifest = pmanifest;
        /* A new page size moves every page: then every page counts as changed. */
        img.parent_pages = parent.page_size == h.page_size ? parent.page_count : 0;
    }
    newId(h.id, &h.created_ms);
    snprintf(name, sizeof name, "%s.cbk", h.id);
    repoWhere(repo, name, path);

    img.manifest = malloc(h.page_count ? h.page_count * sizeof *img.manifest : 1);
    w.digest = hashStreamNew();
    if (img.manifest == NULL || w.digest == NULL) {
        errorf(errmsg, "out of memory backing up %s (%llu pages)", src->source,
               (unsigned long long)h.page_count);
        rv = CAIRN_ENOMEM;
        goto err;
    }
    if ((rv = ringInit(&ring, &img, h.codec, h.level, errmsg)) != 0) {
        goto err;
    }
    ring_up = true;
    w.path = path;
    if ((rv = repoCreate(repo, name, &w.rw, errmsg)) != 0) {
        goto err;
    }
    cbkHeaderEncode(&h, hbytes);
    if ((rv = writeOut(&w, hbytes, sizeof hbytes, errmsg)) != 0) {
        goto err;
    }
    posix_fadvise(src->fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    chunks = (h.page_count + h.block_pages - 1) / h.block_pages;
    total = h.page_count * h.page_size;
    while (ring.written < chunks) {
        while (ring.submitted < chunks && ring.submitted - ring.written < ring.nslots) {
            uint64_t first = ring.submitted * h.block_pages;
            uint64_t left = h.page_count - first;
            ringSubmit(&ring, first, left < h.block_pages ? (uint32_t)left : h.block_pages);
        }
        if ((rv = ringWriteOldest(&ring, &w, &c, errmsg)) != 0) {
            goto err;
        }
        if (opt->progress != NULL) {
            uint64_t done = ring.written * h.block_pages;
            opt->progress(opt->progress_arg,
                          (done < h.page_count ? done : h.page_count) * h.page_size, total);
        }
    }
    ringFree(&ring);
    ring_up = false;
    /* Every page is read: a snapshot taken without SQLite's locks says now whether it
     * held (snapread.h). */
    if (src->snap != NULL && (rv = snapreadCheck(src->snap, errmsg)) != 0) {
        goto err;
    }

    f.pages = c.pages;
    f.blocks = c.blocks;
    f.raw_bytes = c.pages * h.page_size;
    f.compressed_bytes = c.comp;
    f.manifest_offset = w.off;
    if ((rv = writeManifest(&w, img.manifest, h.page_count, errmsg)) != 0) {
        goto err;
    }
    f.duration_ms = repoMonoMs() - t0;
    cbkFooterEncode(&f, tail);
    hashStreamUpdate(w.digest, tail, CBK_FOOTER_SIZE);
    {
        struct hash128 d = hashStreamDigest128(w.digest);
        cbkDigestBytes(d.low64, d.high64, t.digest);
    }
    t.file_size = w.off + sizeof tail;
    cbkTrailerEncode(&t, tail + CBK_FOOTER_SIZE);
    /* writeOut hashes what it writes too; the digest is already taken. */
    if ((rv = writeOut(&w, tail, sizeof tail, errmsg)) != 0) {
        goto err;
    }
    /* Visible now, whole, or not at all. */
    rv = repoCommit(w.rw, errmsg);
    w.rw = NULL;
    if (rv != 0) {
        goto err;
    }
    if (repoLocalPath(repo) == NULL) {
        /* An object store keeps the uploads of writers killed mid-backup, unseen and
         * billed, until someone aborts them: each backup sweeps (one listing; only
         * objects of the engine's own names, begun long ago: repoSweepTemp). After the
         * commit, not before: a repository that does not answer fails the backup
         * within one retry bound, not two. A directory's temporary files are swept
         * when cairnd starts after an unclean stop (heal.c). */
        unsigned swept;
        repoSweepTempIn(repo, &swept);
    }
    if (out != NULL) {
        fillInfo(&h, &f, &t, path, out);
    }
    hashStreamFree(w.digest);
    free(img.manifest);
    free(pmanifest);
    return 0;

err:
    if (ring_up) {
        ringFree(&ring);
    }
    repoAbort(w.rw);
    hashStreamFree(w.digest);
    free(img.manifest);
    free(pmanifest);
    return rv;
}

/* ---- read-only snapshots of foreign SQLite files ---- */

int backupSnapshotFile(const char *db_path, const char *tmp_dir, struct backup_source *src,
                       char *tmp_path, char *errmsg)
{
    struct snapread *snap;
    int rv;

    (void)tmp_dir;
    src->fd = -1;
    src->snap = NULL;
    tmp_path[0] = '\0';
    if ((rv = snapreadOpen(db_path, &snap, errmsg)) != 0) {
        return rv;
    }
    src->fd = snapreadFd(snap);
    src->snap = snap;
    src->raft_index = 0;
    src->raft_term = 0;
    return 0;
}

void backupSnapshotRelease(struct backup_source *src, const char *tmp_path)
{
    if (src->snap != NULL) {
        snapreadClose(src->snap); /* closes src->fd, which is the snapshot's */
        src->snap = NULL;
        src->fd = -1;
    } else if (src->fd >= 0) {
        close(src->fd);
        src->fd = -1;
    }
    if (tmp_path != NULL && tmp_path[0] != '\0') {
        unlink(tmp_path);
    }
}
