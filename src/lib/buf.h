/* A growable byte buffer and the JSON writing helpers built on it.
 *
 * The hot path (encoding query results) writes JSON straight into a buf rather than
 * building a tree: one allocation that grows geometrically. Any thread; a buf is not
 * shared between threads. */
#ifndef CAIRN_BUF_H
#define CAIRN_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *p;    /* owned; NUL-terminated whenever len < cap */
    size_t len;
    size_t cap;
    bool oom;   /* set once an allocation failed: later writes are no-ops */
};

void bufInit(struct buf *b);
void bufFree(struct buf *b);
/* Drop the contents, keep the memory. */
void bufReset(struct buf *b);
/* Make room for n more bytes. Returns 0 or CAIRN_ENOMEM (and sets oom). */
int bufReserve(struct buf *b, size_t n);
/* The size b's block will have once n more bytes are put (what bufReserve(b, n) makes
 * it): what holding them costs. */
size_t bufCapFor(const struct buf *b, size_t n);
/* Make room for exactly n more bytes (and the NUL), not doubling: for a buffer that
 * will most likely hold no more (a block per small result: doubling left half of each
 * unused). Returns 0 or CAIRN_ENOMEM (and sets oom). */
int bufReserveExact(struct buf *b, size_t n);
void bufPut(struct buf *b, const void *p, size_t n);
void bufPuts(struct buf *b, const char *s);
void bufPutc(struct buf *b, char c);
void bufPrintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Take the contents: the caller owns the returned pointer (free()); b is left empty.
 * Returns NULL if the buffer ran out of memory at any point. */
char *bufDetach(struct buf *b, size_t *len);

/* JSON pieces. */
void bufJsonString(struct buf *b, const char *s, size_t n);
/* The characters of a JSON string without its quotes: a long string may be written in
 * parts, each cut before a byte that does not continue a UTF-8 sequence. */
void bufJsonChars(struct buf *b, const char *s, size_t n);
/* s as a JSON string, or null when s is NULL or empty (an optional text field). */
void bufJsonText(struct buf *b, const char *s);
void bufJsonInt(struct buf *b, int64_t v);
/* Shortest text that reads back as the same double; NaN and infinities become null. */
void bufJsonDouble(struct buf *b, double v);
void bufBase64(struct buf *b, const void *p, size_t n);
/* Re-indent compact JSON in src into b (two spaces a level). */
void bufJsonPretty(struct buf *b, const char *src, size_t n);
/* The same for a document that comes in parts, cut anywhere: st (zeroed before the first
 * part) carries what is open from one part to the next. */
struct json_pretty {
    int level;
    bool in_str;  /* inside a string */
    bool escaped; /* after a backslash in it */
    bool opened;  /* after '{' or '[': an empty container stays on one line */
};
void bufJsonPrettyPart(struct json_pretty *st, struct buf *b, const char *src, size_t n);

/* Length of the valid UTF-8 sequence at s[0..n) (1-4), storing its code point in *cp
 * when cp is not NULL; 0 when the bytes are not UTF-8 (truncated, overlong, a
 * surrogate, beyond U+10FFFF). */
size_t utf8Decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Little-endian fixed-width encoding helpers. */
void bufPutU8(struct buf *b, uint8_t v);
void bufPutU16(struct buf *b, uint16_t v);
void bufPutU32(struct buf *b, uint32_t v);
void bufPutU64(struct buf *b, uint64_t v);

static inline uint16_t getU16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t getU32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t getU64(const unsigned char *p)
{
    return (uint64_t)getU32(p) | ((uint64_t)getU32(p + 4) << 32);
}

#endif
