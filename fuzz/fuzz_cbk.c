/* libFuzzer target: the backup file reader (cbkCheckMemory, src/backup/cbk.c), which checks
 * a whole `.cbk` file as a restore reads it: header, blocks, zstd frames and LZ4 blocks, page
 * hashes, manifest, footer and trailer (docs/FORMAT.md).
 *
 * Every part of a backup file is guarded by a checksum, and the trailer by a digest
 * of the whole file, so almost every mutation would stop at the first checksum. Each
 * input is checked as it is, and again after a repair that makes every checksum,
 * digest and counter that can be recomputed right (fuzzFix): then mutations of the
 * lengths, page numbers and compressed blocks reach the code behind the checksums, down to
 * the pages themselves.
 * What the reader promises, and the target checks: 0, CAIRN_ECORRUPT or CAIRN_ENOMEM,
 * with a message on failure, and nothing left allocated. Any thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

#include "buf.h"
#include "cairn.h"
#include "cbk.h"
#include "error.h"
#include "fuzz.h"

static void fixPutU64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

/* Make the checksums and counters of the file in p[0..n) right, wherever the
 * structure is readable enough to say where they are; leave the rest as it is. */
static void fuzzFix(unsigned char *p, size_t n)
{
    const size_t tail = CBK_FOOTER_SIZE + CBK_TRAILER_SIZE;
    unsigned char *footer;
    uint64_t page_count, manifest_off, off;
    uint64_t pages = 0, blocks = 0, comp_sum = 0;
    uint32_t page_size, block_pages;
    bool lz4;
    void *raw = NULL;

    if (n < CBK_HEADER_SIZE + CBK_MANIFEST_SIZE(0) + tail) {
        return;
    }
    fixPutU64(p + 504, XXH3_64bits(p, 504));
    /* Version 2 with codec 1: LZ4 blocks; else zstd. */
    lz4 = getU32(p + 8) == 2 && p[49] == CBK_CODEC_LZ4;
    page_size = getU32(p + 360);
    block_pages = getU32(p + 52);
    page_count = getU64(p + 368);
    if (page_count > CBK_MAX_PAGE_COUNT ||
        CBK_MANIFEST_SIZE(page_count) > n - tail - CBK_HEADER_SIZE) {
        return;
    }
    manifest_off = n - tail - CBK_MANIFEST_SIZE(page_count);
    footer = p + n - tail;

    /* The blocks: each one's checksum, and its pages' hashes into the manifest. */
    if (page_size >= 512 && page_size <= 65536 && block_pages > 0 &&
        (uint64_t)block_pages * page_size <= CBK_MAX_BLOCK_BYTES) {
        raw = malloc((size_t)block_pages * page_size);
        FUZZ_CHECK(raw != NULL);
    }
    for (off = CBK_HEADER_SIZE; off + 8 <= manifest_off;) {
        uint32_t k = getU32(p + off + 4);
        uint64_t head = CBK_BLOCK_HEAD_SIZE(k);
        uint32_t comp;
        if (k == 0 || head > manifest_off - off) {
            break;
        }
        comp = getU32(p + off + head - 4);
        if (comp > manifest_off - off - head ||
            CBK_BLOCK_SUM_SIZE > manifest_off - off - head - comp) {
            break;
        }
        if (raw != NULL && k <= block_pages) {
            size_t got;
            if (lz4) {
                int g = LZ4_decompress_safe((const char *)p + off + head, raw, (int)comp,
                                            (int)((size_t)k * page_size));
                got = g < 0 ? (size_t)-1 : (size_t)g;
            } else {
                got = ZSTD_decompress(raw, (size_t)k * page_size, p + off + head, comp);
            }
            if (!ZSTD_isError(got) && got == (size_t)k * page_size) {
                for (uint32_t i = 0; i < k; i++) {
                    uint32_t pgno = getU32(p + off + 8 + 4 * (size_t)i);
                    if (pgno >= 1 && pgno <= page_count) {
                        fixPutU64(
                            p + manifest_off + 16 + 8 * (uint64_t)(pgno - 1),
                            XXH3_64bits((unsigned char *)raw + (size_t)i * page_size, page_size));
                    }
                }
            }
        }
        fixPutU64(p + off + head + comp, XXH3_64bits(p + off, (size_t)(head + comp)));
        pages += k;
        blocks++;
        comp_sum += comp;
        off += head + comp + CBK_BLOCK_SUM_SIZE;
    }
    free(raw);

    /* The manifest's checksum, the footer's counters and checksum, the trailer. */
    fixPutU64(p + n - tail - 8,
              XXH3_64bits(p + manifest_off, (size_t)(CBK_MANIFEST_SIZE(page_count) - 8)));
    fixPutU64(footer + 8, pages);
    fixPutU64(footer + 16, blocks);
    if (page_size <= 65536) {
        fixPutU64(footer + 24, pages * page_size);
    }
    fixPutU64(footer + 32, comp_sum);
    fixPutU64(footer + 48, manifest_off);
    fixPutU64(footer + 56, XXH3_64bits(footer, 56));
    fixPutU64(footer + CBK_FOOTER_SIZE + 8, n);
    XXH128_hash_t h = XXH3_128bits(p, n - CBK_TRAILER_SIZE);
    cbkDigestBytes(h.low64, h.high64, footer + CBK_FOOTER_SIZE + 16);
}

static int checkOne(const unsigned char *p, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rv = cbkCheckMemory(p, n, errmsg);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_ECORRUPT || rv == CAIRN_ENOMEM);
    if (rv != 0) {
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
    }
    return rv;
}

/* The input as it is, then repaired (when the repair changed anything). Returns the
 * code of the last check. */
static int fuzzCbk(const uint8_t *data, size_t size)
{
    unsigned char *copy;
    int rv = checkOne(data, size);
    copy = malloc(size ? size : 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    fuzzFix(copy, size);
    if (memcmp(copy, data, size) != 0) {
        rv = checkOne(copy, size);
    }
    free(copy);
    return rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzCbk(data, size);
    return 0;
}
#endif
