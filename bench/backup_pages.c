/* The page-level yardsticks of `make bench-backup` (bench/backup.sh): which pages of a
 * SQLite file changed since the last look and how small zstd makes them, and whether a
 * restored file is the database it should be.
 *
 *   backup_pages manifest DB MANIFEST
 *       write the XXH3-128 of every page of DB into MANIFEST
 *   backup_pages diff OLD_MANIFEST DB NEW_MANIFEST LEVEL BLOCK_PAGES
 *       the pages of DB whose hash differs from OLD_MANIFEST (and those past its end),
 *       concatenated in page order and compressed with zstd at LEVEL in independent
 *       blocks of BLOCK_PAGES changed pages; prints one JSON object and writes DB's
 *       manifest into NEW_MANIFEST for the next round
 *   backup_pages same EXPECTED ACTUAL
 *       compare two database files page by page; prints one JSON object (the first
 *       differing pages, the differing byte offsets of the 100-byte database header)
 *       and exits 0 when they are identical byte for byte, 3 when they differ only in
 *       the three counters of the header that SQLite's online backup API rewrites in
 *       its copy (file change counter, schema cookie, version-valid-for: offsets
 *       24-27, 40-43, 92-95), 1 otherwise
 *   backup_pages version
 *       the zstd and xxhash library versions
 *
 * The "compressed size of the changed pages" is what an ideal incremental backup at
 * cairn's compression level would store: it is the denominator of the incremental
 * target. A separate program (not libcairn) so the yardstick does not share cairn's
 * code. Single-threaded; memory is one block of pages plus 16 bytes per page. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define MANIFEST_MAGIC "CBBMAN1"
#define MAX_PAGE 65536
#define HEADER_BYTES 100

struct manifest {
    uint32_t page_size;
    uint64_t page_count;
    XXH128_hash_t *hash; /* page_count entries */
};

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "backup_pages: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads exactly n bytes at off; 0 on success, -1 at end of file or on error. */
static int readAt(int fd, void *p, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)p + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

/* Opens a database file and reads its page size from the header (offset 16, big
 * endian, 1 meaning 65536); the page count is the file size over the page size. */
static int openDb(const char *path, uint32_t *page_size, uint64_t *page_count) {
    unsigned char h[HEADER_BYTES];
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("cannot open %s", path);
    if (readAt(fd, h, sizeof h, 0) != 0 || memcmp(h, "SQLite format 3", 16) != 0)
        die("%s is not a SQLite database", path);
    uint32_t ps = (uint32_t)h[16] << 8 | h[17];
    if (ps == 1) ps = MAX_PAGE;
    if (ps < 512 || ps > MAX_PAGE || (ps & (ps - 1)) != 0) die("%s: bad page size", path);
    if (fstat(fd, &st) != 0) die("cannot stat %s", path);
    if (st.st_size % ps != 0) die("%s: size is not a multiple of the page size", path);
    *page_size = ps;
    *page_count = (uint64_t)st.st_size / ps;
    return fd;
}

static void writeManifest(const char *path, const struct manifest *m) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create %s", path);
    if (fwrite(MANIFEST_MAGIC, 8, 1, f) != 1 || fwrite(&m->page_size, 4, 1, f) != 1 ||
        fwrite(&m->page_count, 8, 1, f) != 1 ||
        fwrite(m->hash, sizeof *m->hash, m->page_count, f) != m->page_count || fclose(f) != 0)
        die("cannot write %s", path);
}

static void readManifest(const char *path, struct manifest *m) {
    char magic[8];
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, MANIFEST_MAGIC, 8) != 0 ||
        fread(&m->page_size, 4, 1, f) != 1 || fread(&m->page_count, 8, 1, f) != 1)
        die("%s is not a manifest", path);
    m->hash = malloc((m->page_count ? m->page_count : 1) * sizeof *m->hash);
    if (!m->hash) die("out of memory for %s", path);
    if (fread(m->hash, sizeof *m->hash, m->page_count, f) != m->page_count)
        die("%s is truncated", path);
    fclose(f);
}

static size_t compressBlock(ZSTD_CCtx *cctx, void *dst, size_t bound, const void *src,
                            size_t n, int level) {
    size_t z = ZSTD_compressCCtx(cctx, dst, bound, src, n, level);
    if (ZSTD_isError(z)) die("zstd: %s", ZSTD_getErrorName(z));
    return z;
}

/* Hashes every page of db into out; with old, also collects the changed pages into
 * blocks of block_pages and compresses each block at level. */
static void scan(const char *db, const struct manifest *old, int level, uint32_t block_pages,
                 struct manifest *out, uint64_t *changed, uint64_t *compressed,
                 uint64_t *blocks) {
    uint32_t ps;
    uint64_t pc;
    int fd = openDb(db, &ps, &pc);
    if (old && old->page_size != ps) die("%s: page size differs from the manifest's", db);
    size_t chunk_pages = 256;
    unsigned char *chunk = malloc(chunk_pages * ps);
    unsigned char *block = old ? malloc((size_t)block_pages * ps) : NULL;
    size_t bound = old ? ZSTD_compressBound((size_t)block_pages * ps) : 0;
    unsigned char *dst = old ? malloc(bound) : NULL;
    ZSTD_CCtx *cctx = old ? ZSTD_createCCtx() : NULL;
    out->page_size = ps;
    out->page_count = pc;
    out->hash = malloc((pc ? pc : 1) * sizeof *out->hash);
    if (!chunk || !out->hash || (old && (!block || !dst || !cctx))) die("out of memory%s", "");
    uint32_t in_block = 0;
    *changed = *compressed = *blocks = 0;
    for (uint64_t p = 0; p < pc; p += chunk_pages) {
        size_t n = pc - p < chunk_pages ? (size_t)(pc - p) : chunk_pages;
        if (readAt(fd, chunk, n * ps, (off_t)(p * ps)) != 0) die("cannot read %s", db);
        for (size_t i = 0; i < n; i++) {
            const unsigned char *page = chunk + i * ps;
            XXH128_hash_t h = XXH3_128bits(page, ps);
            out->hash[p + i] = h;
            if (!old) continue;
            if (p + i < old->page_count && XXH128_isEqual(h, old->hash[p + i])) continue;
            (*changed)++;
            memcpy(block + (size_t)in_block * ps, page, ps);
            if (++in_block == block_pages) {
                *compressed += compressBlock(cctx, dst, bound, block, (size_t)in_block * ps,
                                             level);
                (*blocks)++;
                in_block = 0;
            }
        }
    }
    if (in_block > 0) {
        *compressed += compressBlock(cctx, dst, bound, block, (size_t)in_block * ps, level);
        (*blocks)++;
    }
    ZSTD_freeCCtx(cctx);
    free(dst);
    free(block);
    free(chunk);
    close(fd);
}

static int cmdManifest(const char *db, const char *path) {
    struct manifest m;
    uint64_t c, z, b;
    double t0 = now();
    scan(db, NULL, 0, 0, &m, &c, &z, &b);
    writeManifest(path, &m);
    printf("{\"page_size\":%u,\"page_count\":%llu,\"seconds\":%.3f}\n", m.page_size,
           (unsigned long long)m.page_count, now() - t0);
    free(m.hash);
    return 0;
}

static int cmdDiff(const char *old_path, const char *db, const char *new_path, int level,
                   uint32_t block_pages) {
    struct manifest old, m;
    uint64_t changed, compressed, blocks;
    double t0 = now();
    readManifest(old_path, &old);
    scan(db, &old, level, block_pages, &m, &changed, &compressed, &blocks);
    writeManifest(new_path, &m);
    printf("{\"page_size\":%u,\"page_count\":%llu,\"old_page_count\":%llu,"
           "\"changed_pages\":%llu,\"changed_bytes\":%llu,\"compressed_bytes\":%llu,"
           "\"blocks\":%llu,\"level\":%d,\"block_pages\":%u,\"seconds\":%.3f}\n",
           m.page_size, (unsigned long long)m.page_count, (unsigned long long)old.page_count,
           (unsigned long long)changed, (unsigned long long)(changed * m.page_size),
           (unsigned long long)compressed, (unsigned long long)blocks, level, block_pages,
           now() - t0);
    free(old.hash);
    free(m.hash);
    return 0;
}

/* The header fields a copy made with SQLite's online backup API may not share with its
 * source although every row, index and schema entry is the same. */
static int counterOffset(int i) {
    return (i >= 24 && i <= 27) || (i >= 40 && i <= 43) || (i >= 92 && i <= 95);
}

static int cmdSame(const char *a, const char *b) {
    uint32_t psa, psb;
    uint64_t pca, pcb;
    int fa = openDb(a, &psa, &pca), fb = openDb(b, &psb, &pcb);
    unsigned char *x = malloc(MAX_PAGE), *y = malloc(MAX_PAGE);
    uint64_t differing = 0, shown = 0;
    int counters_only = 1, first = 1;
    if (!x || !y) die("out of memory%s", "");
    printf("{\"expected_pages\":%llu,\"actual_pages\":%llu,\"page_size\":%u,",
           (unsigned long long)pca, (unsigned long long)pcb, psa);
    if (psa != psb) {
        printf("\"identical\":false,\"why\":\"page sizes differ (%u, %u)\"}\n", psa, psb);
        return 1;
    }
    printf("\"header_offsets\":[");
    uint64_t common = pca < pcb ? pca : pcb;
    for (uint64_t p = 0; p < common; p++) {
        if (readAt(fa, x, psa, (off_t)(p * psa)) || readAt(fb, y, psa, (off_t)(p * psa)))
            die("cannot read a page of %s", a);
        if (memcmp(x, y, psa) == 0) continue;
        differing++;
        if (p == 0) {
            for (int i = 0; i < HEADER_BYTES; i++)
                if (x[i] != y[i]) {
                    printf("%s%d", first ? "" : ",", i);
                    first = 0;
                    if (!counterOffset(i)) counters_only = 0;
                }
            if (memcmp(x + HEADER_BYTES, y + HEADER_BYTES, psa - HEADER_BYTES) != 0)
                counters_only = 0;
        } else {
            counters_only = 0;
        }
        if (shown++ == 0) printf("],\"first_differing_pages\":[");
        if (shown <= 10) printf("%s%llu", shown > 1 ? "," : "", (unsigned long long)p + 1);
    }
    if (shown == 0) printf("],\"first_differing_pages\":[");
    int identical = differing == 0 && pca == pcb;
    if (pca != pcb) counters_only = 0;
    printf("],\"differing_pages\":%llu,\"identical\":%s,\"counters_only\":%s}\n",
           (unsigned long long)differing, identical ? "true" : "false",
           !identical && counters_only ? "true" : "false");
    free(x);
    free(y);
    close(fa);
    close(fb);
    return identical ? 0 : counters_only ? 3 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "manifest") == 0) return cmdManifest(argv[2], argv[3]);
    if (argc == 7 && strcmp(argv[1], "diff") == 0) {
        int level = atoi(argv[5]);
        long bp = atol(argv[6]);
        if (bp < 1 || bp > 65536) die("bad BLOCK_PAGES %s", argv[6]);
        return cmdDiff(argv[2], argv[3], argv[4], level, (uint32_t)bp);
    }
    if (argc == 4 && strcmp(argv[1], "same") == 0) return cmdSame(argv[2], argv[3]);
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        printf("zstd %s, xxhash %u\n", ZSTD_versionString(), XXH_versionNumber());
        return 0;
    }
    fprintf(stderr, "usage: backup_pages manifest DB MANIFEST\n"
                    "       backup_pages diff OLD_MANIFEST DB NEW_MANIFEST LEVEL BLOCK_PAGES\n"
                    "       backup_pages same EXPECTED ACTUAL\n"
                    "       backup_pages version\n");
    return 2;
}
