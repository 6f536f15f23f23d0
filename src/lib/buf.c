/* Growable byte buffer and JSON writing helpers (see buf.h). Any thread. */
#include "buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void bufInit(struct buf *b)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = false;
}

void bufFree(struct buf *b)
{
    free(b->p);
    bufInit(b);
}

void bufReset(struct buf *b)
{
    b->len = 0;
    if (b->p != NULL) {
        b->p[0] = '\0';
    }
}

size_t bufCapFor(const struct buf *b, size_t n)
{
    size_t need = b->len + n + 1; /* room for the terminating NUL */
    size_t cap;
    if (need <= b->cap) {
        return b->cap;
    }
    cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    return cap;
}

int bufReserve(struct buf *b, size_t n)
{
    size_t cap;
    char *p;
    if (b->oom) {
        return CAIRN_ENOMEM;
    }
    cap = bufCapFor(b, n);
    if (cap == b->cap) {
        return 0;
    }
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return CAIRN_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int bufReserveExact(struct buf *b, size_t n)
{
    size_t need;
    char *p;
    if (b->oom) {
        return CAIRN_ENOMEM;
    }
    need = b->len + n + 1;
    if (need <= b->cap) {
        return 0;
    }
    p = realloc(b->p, need);
    if (p == NULL) {
        b->oom = true;
        return CAIRN_ENOMEM;
    }
    b->p = p;
    b->cap = need;
    return 0;
}

void bufPut(struct buf *b, const void *p, size_t n)
{
    if (bufReserve(b, n) != 0) {
        return;
    }
    if (n > 0) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
}

void bufPuts(struct buf *b, const char *s)
{
    bufPut(b, s, strlen(s));
}

void bufPutc(struct buf *b, char c)
{
    if (bufReserve(b, 1) != 0) {
        return;
    }
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

void bufPrintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || bufReserve(b, (size_t)n) != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *bufDetach(struct buf *b, size_t *len)
{
    char *p;
    if (b->oom) {
        bufFree(b);
        return NULL;
    }
    if (b->p == NULL && bufReserve(b, 0) != 0) {
        return NULL;
    }
    p = b->p;
    if (len != NULL) {
        *len = b->len;
    }
    bufInit(b);
    return p;
}

size_t utf8Decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c;
    if (n == 0) {
        return 0;
    }
    c = s[0];
    if (c < 0x80) {
        len = 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        c &= 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
        (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff) {
        return 0;
    }
    if (cp != NULL) {
        *cp = c;
    }
    return len;
}

void bufJsonText(struct buf *b, const char *s)
{
    if (s == NULL || s[0] == '\0') {
        bufPuts(b, "null");
    } else {
        bufJsonString(b, s, strlen(s));
    }
}

void bufJsonString(struct buf *b, const char *s, size_t n)
{
    if (bufReserve(b, n + 2) != 0) {
        return;
    }
    bufPutc(b, '"');
    bufJsonChars(b, s, n);
    bufPutc(b, '"');
}

void bufJsonChars(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    size_t start = 0;
    if (bufReserve(b, n) != 0) {
        return;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c >= 0x80) {
            /* SQLite text may hold bytes that are not UTF-8; JSON may not. Each bad
             * byte becomes U+FFFD so that the response stays valid JSON. */
            size_t k = utf8Decode((const unsigned char *)s + i, n - i, NULL);
            if (k > 0) {
                i += k - 1;
                continue;
            }
            bufPut(b, s + start, i - start);
            bufPuts(b, "\xef\xbf\xbd");
            start = i + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        bufPut(b, s + start, i - start);
        switch (c) {
            case '"':
                esc = "\\\"";
                break;
            case '\\':
                esc = "\\\\";
                break;
            case '\n':
                esc = "\\n";
                break;
            case '\r':
                esc = "\\r";
                break;
            case '\t':
                esc = "\\t";
                break;
            case '\b':
                esc = "\\b";
                break;
            case '\f':
                esc = "\\f";
                break;
            default:
                u[0] = '\\';
                u[1] = 'u';
                u[2] = '0';
                u[3] = '0';
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
        }
        bufPuts(b, esc);
        start = i + 1;
    }
    bufPut(b, s + start, n - start);
}

void bufJsonInt(struct buf *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        *--p = '-';
    }
    bufPut(b, p, (size_t)(tmp + sizeof tmp - p));
}

void bufJsonDouble(struct buf *b, double v)
{
    char tmp[40];
    int prec;
    if (isnan(v) || isinf(v)) {
        /* JSON has no NaN or infinity, and strict parsers reject overflowing numbers
         * such as 1e999: null keeps the response valid JSON. */
        bufPuts(b, "null");
        return;
    }
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    bufPuts(b, tmp);
}

void bufBase64(struct buf *b, const void *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    size_t i;
    char *o;
    if (bufReserve(b, (n + 2) / 3 * 4) != 0) {
        return;
    }
    o = b->p + b->len;
    for (i = 0; i + 2 < n; i += 3) {
        *o++ = tbl[s[i] >> 2];
        *o++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        *o++ = tbl[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
        *o++ = tbl[s[i + 2] & 63];
    }
    if (i < n) {
        *o++ = tbl[s[i] >> 2];
        if (i + 1 < n) {
            *o++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
            *o++ = tbl[(s[i + 1] & 15) << 2];
        } else {
            *o++ = tbl[(s[i] & 3) << 4];
            *o++ = '=';
        }
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

static void indent(struct buf *b, int level)
{
    bufPutc(b, '\n');
    for (int i = 0; i < level; i++) {
        bufPuts(b, "    ");
    }
}

void bufJsonPretty(struct buf *b, const char *src, size_t n)
{
    struct json_pretty st = {0};
    bufJsonPrettyPart(&st, b, src, n);
}

void bufJsonPrettyPart(struct json_pretty *st, struct buf *b, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (st->in_str) {
            bufPutc(b, c);
            if (st->escaped) {
                st->escaped = false;
            } else if (c == '\\') {
                st->escaped = true;
            } else if (c == '"') {
                st->in_str = false;
            }
            continue;
        }
        if (st->opened) {
            /* Keep empty containers on one line: what follows an opening is only known
             * once it arrives, maybe in the next part. */
            st->opened = false;
            if (c == '}' || c == ']') {
                bufPutc(b, c);
                continue;
            }
            indent(b, ++st->level);
        }
        switch (c) {
            case '"':
                st->in_str = true;
                bufPutc(b, c);
                break;
            case '{':
            case '[':
                bufPutc(b, c);
                st->opened = true;
                break;
            case '}':
            case ']':
                indent(b, --st->level);
                bufPutc(b, c);
                break;
            case ',':
                bufPutc(b, c);
                indent(b, st->level);
                break;
            case ':':
                bufPuts(b, ": ");
                break;
            default:
                bufPutc(b, c);
        }
    }
}

void bufPutU8(struct buf *b, uint8_t v)
{
    bufPut(b, &v, 1);
}

void bufPutU16(struct buf *b, uint16_t v)
{
    unsigned char t[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    bufPut(b, t, 2);
}

void bufPutU32(struct buf *b, uint32_t v)
{
    unsigned char t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (unsigned char)(v >> (8 * i));
    }
    bufPut(b, t, 4);
}

void bufPutU64(struct buf *b, uint64_t v)
{
    unsigned char t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (unsigned char)(v >> (8 * i));
    }
    bufPut(b, t, 8);
}
