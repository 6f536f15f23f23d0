/* JSON request bodies to batches (see request.h). HTTP threads.
 *
 * requestParse() is a purpose-built single-pass parser: the batch is built while
 * the body is scanned, with no tree of values in between. One allocation holds a
 * copy of the body, which strings without escapes point into, followed by an
 * arena for strings with escapes (a decoded string is never longer than its
 * source, so an arena as long as the body always suffices). The batch owns that
 * block; the caller's body may be freed as soon as we return.
 *
 * Syntax errors are reported at once ("invalid JSON at line L, column C: ...").
 * Errors of shape (a statement of the wrong type, an object as a parameter, ...)
 * are only recorded, and scanning goes on, so that a syntax error anywhere in the
 * body wins over them, as it did when the whole body went through jansson first. */
#include "request.h"

#include "buf.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "error.h"

/* As jansson's JSON_PARSER_MAX_DEPTH: only parameters nested in parameters (an
 * error anyway) go beyond depth 3. */
#define MAX_DEPTH 2048

/* Duplicate named-parameter keys are found by a linear scan up to this many keys,
 * by a hash table beyond. */
#define DUP_LINEAR_MAX 16

/* The most parameters one request takes. A parameter costs a struct param (56 bytes)
 * for as little as two bytes of body ("0,"): without a bound, a body at --max-body
 * (64 MiB) made gigabytes. A bulk insert of 100,000 rows of 10 columns is well within. */
#define REQUEST_PARAMS_MAX 1000000

struct parser {
    const char *start; /* the body copy; *end == '\0' is a sentinel */
    const char *p;
    const char *end;
    char *arena; /* next free byte for decoded strings */
    char *errmsg;
    int has_sem; /* sem holds the first error of shape */
    char sem[CAIRN_ERRMSG_SIZE];
    struct param *scratch; /* parameters of the statement being parsed */
    size_t nscratch;
    size_t scratch_cap;
    uint32_t *dup; /* hash table of scratch indices, for large named objects */
    size_t params;      /* parameters kept in the whole request, up to REQUEST_PARAMS_MAX */
    struct param spare; /* where those beyond go, to be parsed and dropped */
    size_t dup_cap;
    struct stmt *stmts;
    size_t n;
    size_t cap;
};

/* Value types, in the words of the error messages. */
static const char T_INTEGER[] = "integer";
static const char T_REAL[] = "real";
static const char T_STRING[] = "string";
static const char T_BOOLEAN[] = "boolean";
static const char T_NULL[] = "null";
static const char T_OBJECT[] = "object";
static const char T_ARRAY[] = "array";

static int syntaxError(struct parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int syntaxError(struct parser *ps, const char *at, const char *fmt, ...)
{
    char what[CAIRN_ERRMSG_SIZE / 2];
    const char *q;
    unsigned line = 1;
    size_t column = 1;
    va_list ap;

    for (q = ps->start; q < at; q++) {
        if (*q == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    errorf(ps->errmsg, "invalid JSON at line %u, column %zu (byte %zu): %s", line, column,
           (size_t)(at - ps->start), what);
    return CAIRN_EINVAL;
}

/* Say what is at q, for syntax errors: "end of input" or the character. */
static int unexpected(struct parser *ps, const char *q, const char *expected)
{
    unsigned char c = (unsigned char)*q;
    if (q >= ps->end) {
        return syntaxError(ps, q, "expected %s, found end of input", expected);
    }
    if (c >= 0x20 && c < 0x7f) {
        return syntaxError(ps, q, "expected %s, found '%c'", expected, c);
    }
    return syntaxError(ps, q, "expected %s, found byte 0x%02x", expected, c);
}

/* Record an error of shape into buf unless one is there already (first wins). */
static void shapeError(char *buf, int *has, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void shapeError(char *buf, int *has, const char *fmt, ...)
{
    va_list ap;
    if (*has) {
        return;
    }
    *has = 1;
    va_start(ap, fmt);
    vsnprintf(buf, CAIRN_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

static inline void skipWs(struct parser *ps)
{
    const char *p = ps->p;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
        p++;
    }
    ps->p = p;
}

static int hexDigit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The four hex digits after "\u" at q (q points at the backslash). The sentinel
 * NUL is not a hex digit, so this never reads past the end. */
static int readHex4(struct parser *ps, const char *q, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 2; i < 6; i++) {
        int d = hexDigit(q[i]);
        if (d < 0) {
            if (q + i >= ps->end) {
                return syntaxError(ps, q + i, "unexpected end of input in a \\u escape");
            }
            return syntaxError(ps, q, "invalid \\u escape: expected four hex digits");
        }
        v = (v << 4) | (unsigned)d;
    }
    *out = v;
    return 0;
}

static int invalidUtf8(struct parser *ps, const char *q)
{
    return syntaxError(ps, q, "invalid UTF-8: unable to decode byte 0x%02x in a string",
                       (unsigned char)*q);
}

/* Decode the rest of a string with escapes, from q (at a backslash) on; the bytes
 * from s to q have no escapes. The result goes to the arena. */
static int decodeString(struct parser *ps, const char *s, const char *q, const char **out,
                        size_t *n)
{
    char *o = ps->arena;
    char *begin = o;
    unsigned cp;
    unsigned lo;

    memcpy(o, s, (size_t)(q - s));
    o += q - s;
    for (;;) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            if (q >= ps->end) {
                return syntaxError(ps, q, "unexpected end of input in a string");
            }
            return syntaxError(ps, q, "control character 0x%02x in a string", c);
        }
        if (c >= 0x80) {
            size_t n8 = utf8Decode((const unsigned char *)q, (size_t)(ps->end - q), NULL);
            if (n8 == 0) {
                return invalidUtf8(ps, q);
            }
            memcpy(o, q, n8);
            o += n8;
            q += n8;
            continue;
        }
        if (c != '\\') {
            *o++ = (char)c;
            q++;
            continue;
        }
        switch (q[1]) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '/':
                *o++ = '/';
                break;
            case 'b':
                *o++ = '\b';
                break;
            case 'f':
                *o++ = '\f';
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 'r':
                *o++ = '\r';
                break;
            case 't':
                *o++ = '\t';
                break;
            case 'u':
                if (readHex4(ps, q, &cp) != 0) {
                    return CAIRN_EINVAL;
                }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return syntaxError(ps, q, "invalid \\u escape: lone low surrogate \\u%04X",
                                       cp);
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (q[6] != '\\' || q[7] != 'u') {
                        return syntaxError(ps, q,
                                           "invalid \\u escape: high surrogate \\u%04X not "
                                           "followed by a low surrogate",
                                           cp);
                    }
                    if (readHex4(ps, q + 6, &lo) != 0) {
                        return CAIRN_EINVAL;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        return syntaxError(ps, q,
                                           "invalid \\u escape: high surrogate \\u%04X "
                                           "followed by \\u%04X, not a low surrogate",
                                           cp, lo);
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    q += 6;
                }
                /* \u0000 is accepted (as jansson's JSON_ALLOW_NUL): every string
                 * carries its length. */
                if (cp < 0x80) {
                    *o++ = (char)cp;
                } else if (cp < 0x800) {
                    *o++ = (char)(0xC0 | (cp >> 6));
                    *o++ = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    *o++ = (char)(0xE0 | (cp >> 12));
                    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *o++ = (char)(0x80 | (cp & 0x3F));
                } else {
                    *o++ = (char)(0xF0 | (cp >> 18));
                    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *o++ = (char)(0x80 | (cp & 0x3F));
                }
                q += 4;
                break;
            default:
                if (q + 1 >= ps->end) {
                    return syntaxError(ps, q + 1, "unexpected end of input in a string");
                }
                return syntaxError(ps, q, "invalid escape \\%c in a string",
                                   (q[1] >= 0x20 && q[1] < 0x7f) ? q[1] : '?');
        }
        q += 2;
    }
    ps->arena = o;
    ps->p = q + 1;
    *out = begin;
    *n = (size_t)(o - begin);
    return 0;
}

/* A string at ps->p (a '"'). The result points into the body copy or the arena. */
static int parseString(struct parser *ps, const char **out, size_t *n)
{
    const char *s = ps->p + 1;
    const char *q = s;
    unsigned char c;

    /* The hot loop, over printable ASCII; the sentinel NUL stops it at the end. */
    for (;;) {
        c = (unsigned char)*q;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            q++;
        } else if (c >= 0x80) {
            size_t n8 = utf8Decode((const unsigned char *)q, (size_t)(ps->end - q), NULL);
            if (n8 == 0) {
                return invalidUtf8(ps, q);
            }
            q += n8;
        } else {
            break;
        }
    }
    if (c == '"') {
        *out = s;
        *n = (size_t)(q - s);
        ps->p = q + 1;
        return 0;
    }
    return decodeString(ps, s, q, out, n);
}

/* An object key at ps->p: a string without NUL bytes. jansson refuses "\u0000" in a
 * key even with JSON_ALLOW_NUL, and a named parameter's name is bound as a C string,
 * so "a\u0000" would bind :a. */
static int parseKey(struct parser *ps, const char **out, size_t *n)
{
    const char *key = ps->p;
    int rv = parseString(ps, out, n);
    if (rv == 0 && memchr(*out, '\0', *n) != NULL) {
        return syntaxError(ps, key, "NUL byte in object key not supported");
    }
    return rv;
}

static inline int isDigit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number at ps->p, per the JSON grammar
 *   -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
 * Integers become CAIRN_INTEGER (an int64 or an error, as jansson), the others
 * CAIRN_FLOAT. */
static int parseNumber(struct parser *ps, struct param *out, const char **type)
{
    const char *s = ps->p;
    const char *q = s;
    int neg = 0;
    int real = 0;
    int overflow = 0;
    uint64_t u = 0;

    if (*q == '-') {
        neg = 1;
        q++;
    }
    if (*q == '0') {
        q++;
        if (isDigit(*q)) {
            return syntaxError(ps, s, "invalid number: leading zero");
        }
    } else if (isDigit(*q)) {
        while (isDigit(*q)) {
            unsigned d = (unsigned)(*q - '0');
            if (u > (UINT64_MAX - d) / 10) {
                overflow = 1;
            } else {
                u = u * 10 + d;
            }
            q++;
        }
    } else {
        return unexpected(ps, q, "a digit in a number");
    }
    if (*q == '.') {
        q++;
        if (!isDigit(*q)) {
            return unexpected(ps, q, "a digit after the decimal point");
        }
        while (isDigit(*q)) {
            q++;
        }
        real = 1;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') {
            q++;
        }
        if (!isDigit(*q)) {
            return unexpected(ps, q, "a digit in the exponent");
        }
        while (isDigit(*q)) {
            q++;
        }
        real = 1;
    }
    ps->p = q;

    if (real) {
        /* strtod needs a terminated string: a bounded copy, on the stack for any
         * sensible number. */
        char small[64];
        char *copy = small;
        size_t len = (size_t)(q - s);
        double d;
        if (len >= sizeof small) {
            copy = malloc(len + 1);
            if (copy == NULL) {
                errorf(ps->errmsg, "out of memory");
                return CAIRN_ENOMEM;
            }
        }
        memcpy(copy, s, len);
        copy[len] = '\0';
        errno = 0;
        d = strtod(copy, NULL);
        if (copy != small) {
            free(copy);
        }
        if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) {
            return syntaxError(ps, s, "real number overflow near '%.*s'",
                               (int)(len > 40 ? 40 : len), s);
        }
        if (out != NULL) {
            out->type = CAIRN_FLOAT;
            out->d = d;
        }
        *type = T_REAL;
        return 0;
    }
    if (overflow || u > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        size_t len = (size_t)(q - s);
        return syntaxError(ps, s, "too big %sinteger (beyond 64 bits) near '%.*s'",
                           neg ? "negative " : "", (int)(len > 40 ? 40 : len), s);
    }
    if (out != NULL) {
        out->type = CAIRN_INTEGER;
        if (neg) {
            out->i = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
        } else {
            out->i = (int64_t)u;
        }
    }
    *type = T_INTEGER;
    return 0;
}

static int parseValue(struct parser *ps, int depth, struct param *out, const char **type);

/* An array or object at ps->p, checked and thrown away. */
static int skipContainer(struct parser *ps, int depth, const char **type)
{
    int object = *ps->p == '{';
    char close = object ? '}' : ']';
    const char *t;
    const char *s;
    size_t n;
    int rv;

    *type = object ? T_OBJECT : T_ARRAY;
    if (depth > MAX_DEPTH) {
        return syntaxError(ps, ps->p, "maximum parsing depth reached");
    }
    ps->p++;
    skipWs(ps);
    if (*ps->p == close) {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (object) {
            if (*ps->p != '"') {
                return unexpected(ps, ps->p, "a string key");
            }
            if ((rv = parseKey(ps, &s, &n)) != 0) {
                return rv;
            }
            skipWs(ps);
            if (*ps->p != ':') {
                return unexpected(ps, ps->p, "':'");
            }
            ps->p++;
            skipWs(ps);
        }
        if ((rv = parseValue(ps, depth + 1, NULL, &t)) != 0) {
            return rv;
        }
        skipWs(ps);
        if (*ps->p == ',') {
            ps->p++;
            skipWs(ps);
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return 0;
        }
        return unexpected(ps, ps->p, object ? "',' or '}'" : "',' or ']'");
    }
}

/* ---- BLOB parameters --------------------------------------------------------------
 * rqlite binds two shapes of parameter as a BLOB (its http/request_parser.go, and "BLOB
 * data" in its API documentation):
 *   - a string in SQLite's blob-literal form, x'53514C' or X'53514c': blanks (Unicode
 *     white space) around it allowed, an even number of hex digits, x'' the empty BLOB;
 *     a string in any other form is text;
 *   - an array whose every element is a JSON integer from 0 to 255 ([83, 81, 76]; []
 *     is the empty BLOB). Any other array (256, -1, 1.5, 1e2, a string, null, true, a
 *     nested array or an object inside) refuses the request: it is never coerced. */

/* Length of the Unicode white space (as Go's unicode.IsSpace) that starts at s (or,
 * with back, ends at s + n); 0 if none. The text is valid UTF-8. */
static size_t spaceAt(const unsigned char *s, size_t n, int back)
{
    static const unsigned char seq[][3] = {
        {0xC2, 0x85}, {0xC2, 0xA0},             /* U+0085, U+00A0 */
        {0xE1, 0x9A, 0x80},                     /* U+1680 */
        {0xE2, 0x80, 0xA8}, {0xE2, 0x80, 0xA9}, /* U+2028, U+2029 */
        {0xE2, 0x80, 0xAF}, {0xE2, 0x81, 0x9F}, /* U+202F, U+205F */
        {0xE3, 0x80, 0x80},                     /* U+3000 */
    };
    const unsigned char *e = s + n;
    unsigned char c;
    size_t k;

    if (n == 0) {
        return 0;
    }
    c = back ? e[-1] : s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r')) {
        return 1;
    }
    for (k = 0; k < sizeof seq / sizeof seq[0]; k++) {
        size_t len = seq[k][2] ? 3 : 2;
        if (n >= len && memcmp(back ? e - len : s, seq[k], len) == 0) {
            return len;
        }
    }
    /* U+2000 to U+200A: E2 80 80 to E2 80 8A */
    if (n >= 3) {
        const unsigned char *q = back ? e - 3 : s;
        if (q[0] == 0xE2 && q[1] == 0x80 && q[2] >= 0x80 && q[2] <= 0x8A) {
            return 3;
        }
    }
    return 0;
}

/* Turn the text parameter p into a BLOB if it is in the x'...' form. The bytes go to
 * the arena: in place when the text is there already (the bytes are shorter than
 * their hex, and written ahead of where it is read), else at the arena's end (at most
 * half the string's length, so the arena, as long as the body, still suffices). The
 * body copy is never written: syntax errors count its lines. */
static void hexBlob(struct parser *ps, struct param *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    const unsigned char *e = s + p->n;
    unsigned char *dst;
    size_t k;
    size_t n;

    if (p->n < 3) {
        return;
    }
    while ((k = spaceAt(s, (size_t)(e - s), 0)) > 0) {
        s += k;
    }
    while ((k = spaceAt(s, (size_t)(e - s), 1)) > 0) {
        e -= k;
    }
    if (e - s < 3 || (s[0] != 'x' && s[0] != 'X') || s[1] != '\'' || e[-1] != '\'') {
        return;
    }
    s += 2;
    e -= 1;
    n = (size_t)(e - s);
    if (n % 2 != 0) {
        return;
    }
    for (k = 0; k < n; k++) {
        if (hexDigit((char)s[k]) < 0) {
            return;
        }
    }
    if (p->s > ps->end) { /* decoded into the arena already */
        dst = (unsigned char *)ps->arena - (ps->arena - p->s);
    } else {
        dst = (unsigned char *)ps->arena;
        ps->arena += n / 2;
    }
    for (k = 0; k < n / 2; k++) {
        dst[k] = (unsigned char)(hexDigit((char)s[2 * k]) << 4 | hexDigit((char)s[2 * k + 1]));
    }
    p->type = CAIRN_BLOB;
    p->s = (const char *)dst;
    p->n = n / 2;
}

/* What element at..ps->p of a byte array was, for an error message. */
static void describeElement(const char *at, const char *end, const char *t, char *out,
                            size_t size)
{
    if (t == T_INTEGER || t == T_REAL) {
        size_t len = (size_t)(end - at);
        snprintf(out, size, "%.*s%s", (int)(len > 24 ? 24 : len), at, len > 24 ? "..." : "");
    } else if (t == T_STRING) {
        snprintf(out, size, "a string");
    } else if (t == T_BOOLEAN) {
        snprintf(out, size, "a boolean");
    } else if (t == T_NULL) {
        snprintf(out, size, "null");
    } else if (t == T_ARRAY) {
        snprintf(out, size, "an array");
    } else {
        snprintf(out, size, "an object");
    }
}

/* The array parameter at ps->p ('['), of statement no, called what ("2" or "\"name\"")
 * in messages: a BLOB when it is an array of bytes, else an error of shape in err.
 * The bytes are written to the arena as they are read (an element takes at least two
 * bytes of the body: the arena suffices), and ps->arena follows them, so that a string
 * element decoded there does not land on them. */
static int parseBytes(struct parser *ps, int depth, struct param *out, size_t no,
                      const char *what, char *err, int *has_err)
{
    char *start = ps->arena;
    const char *t;
    size_t count;
    int bad = 0;
    int rv;

    if (depth > MAX_DEPTH) {
        return syntaxError(ps, ps->p, "maximum parsing depth reached");
    }
    out->type = CAIRN_BLOB;
    out->s = start;
    out->n = 0;
    ps->p++;
    skipWs(ps);
    if (*ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (count = 1;; count++) {
        const char *at = ps->p;
        struct param e;
        if (*at == '-' || isDigit(*at)) {
            rv = parseNumber(ps, &e, &t);
        } else {
            rv = parseValue(ps, depth + 1, NULL, &t);
        }
        if (rv != 0) {
            return rv;
        }
        if (!bad && t == T_INTEGER && e.i >= 0 && e.i <= 255) {
            *ps->arena++ = (char)e.i;
        } else if (!bad) {
            char desc[40];
            bad = 1;
            describeElement(at, ps->p, t, desc, sizeof desc);
            shapeError(err, has_err,
                       "statement %zu: parameter %s is an array, which binds as a BLOB only "
                       "when every element is a byte (an integer from 0 to 255): element %zu "
                       "is %s",
                       no, what, count, desc);
        }
        skipWs(ps);
        if (*ps->p == ',') {
            ps->p++;
            skipWs(ps);
            continue;
        }
        if (*ps->p == ']') {
            ps->p++;
            break;
        }
        return unexpected(ps, ps->p, "',' or ']'");
    }
    if (!bad) {
        out->n = (size_t)(ps->arena - start);
    }
    return 0;
}

/* Any value at ps->p (whitespace skipped). Scalars are stored in *out if not NULL;
 * arrays and objects are only checked. *type says what the value was. */
static int parseValue(struct parser *ps, int depth, struct param *out, const char **type)
{
    const char *q = ps->p;
    size_t left = (size_t)(ps->end - q);
    int rv;

    switch (*q) {
        case '"':
            *type = T_STRING;
            if (out == NULL) {
                const char *s;
                size_t n;
                return parseString(ps, &s, &n);
            }
            out->type = CAIRN_TEXT;
            if ((rv = parseString(ps, &out->s, &out->n)) != 0) {
                return rv;
            }
            hexBlob(ps, out);
            return 0;
        case '-':
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
            return parseNumber(ps, out, type);
        case 't':
        case 'f':
            rv = *q == 't' ? (left >= 4 && memcmp(q, "true", 4) == 0)
                           : (left >= 5 && memcmp(q, "false", 5) == 0);
            if (!rv) {
                return syntaxError(ps, q, "invalid literal: expected true or false");
            }
            if (out != NULL) {
                out->type = CAIRN_INTEGER;
                out->i = *q == 't';
            }
            ps->p += *q == 't' ? 4 : 5;
            *type = T_BOOLEAN;
            return 0;
        case 'n':
            if (left < 4 || memcmp(q, "null", 4) != 0) {
                return syntaxError(ps, q, "invalid literal: expected null");
            }
            if (out != NULL) {
                out->type = CAIRN_NULL;
            }
            ps->p += 4;
            *type = T_NULL;
            return 0;
        case '[':
        case '{':
            return skipContainer(ps, depth, type);
        default:
            return unexpected(ps, q, "a value");
    }
}

/* A new zeroed parameter at the end of the scratch array. */
static struct param *scratchPush(struct parser *ps)
{
    struct param *p;
    if (ps->nscratch == ps->scratch_cap) {
        size_t cap = ps->scratch_cap ? ps->scratch_cap * 2 : 16;
        p = realloc(ps->scratch, cap * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        ps->scratch = p;
        ps->scratch_cap = cap;
    }
    p = &ps->scratch[ps->nscratch++];
    memset(p, 0, sizeof *p);
    return p;
}

/* Where the next parameter goes: the scratch array, or past REQUEST_PARAMS_MAX (the
 * request then fails) the spare one, *dropped set, so that the rest of the body is
 * still checked for syntax in bounded memory. NULL when out of memory. */
static struct param *paramPush(struct parser *ps, bool *dropped)
{
    *dropped = ps->params >= REQUEST_PARAMS_MAX;
    if (*dropped) {
        shapeError(ps->sem, &ps->has_sem,
                   "the request has more than %d parameters: send them in several requests",
                   REQUEST_PARAMS_MAX);
        memset(&ps->spare, 0, sizeof ps->spare);
        return &ps->spare;
    }
    ps->params++;
    return scratchPush(ps);
}

static uint64_t nameHash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    while (n-- > 0) {
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    }
    return h;
}

/* Insert scratch[base + k] into the hash table of keys; returns 1 if the same
 * name is there already. The table has room for twice the keys, at least. */
static int dupInsert(struct parser *ps, size_t base, size_t k)
{
    const struct param *p = &ps->scratch[base + k];
    size_t mask = ps->dup_cap - 1;
    size_t i = (size_t)nameHash(p->name, p->name_len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t slot = ps->dup[i];
        if (slot == 0) {
            ps->dup[i] = (uint32_t)k + 1;
            return 0;
        }
        const struct param *o = &ps->scratch[base + slot - 1];
        if (o->name_len == p->name_len && memcmp(o->name, p->name, p->name_len) == 0) {
            return 1;
        }
    }
}

/* Is the key just pushed at scratch[base + k] a duplicate of one before it in the
 * same object? */
static int isDuplicate(struct parser *ps, size_t base, size_t k, int *nomem)
{
    const struct param *p = &ps->scratch[base + k];
    size_t i;

    if (k < DUP_LINEAR_MAX) {
        for (i = 0; i < k; i++) {
            const struct param *o = &ps->scratch[base + i];
            if (o->name_len == p->name_len && memcmp(o->name, p->name, p->name_len) == 0) {
                return 1;
            }
        }
        return 0;
    }
    if (k == DUP_LINEAR_MAX || (k + 1) * 2 > ps->dup_cap) {
        /* (Re)build the table with every key so far. */
        size_t cap = ps->dup_cap ? ps->dup_cap : 64;
        while ((k + 1) * 2 > cap) {
            cap *= 2;
        }
        if (cap != ps->dup_cap) {
            uint32_t *t = realloc(ps->dup, cap * sizeof *t);
            if (t == NULL) {
                *nomem = 1;
                return 0;
            }
            ps->dup = t;
            ps->dup_cap = cap;
        }
        memset(ps->dup, 0, ps->dup_cap * sizeof *ps->dup);
        for (i = 0; i < k; i++) {
            dupInsert(ps, base, i);
        }
    }
    return dupInsert(ps, base, k);
}

/* The object of named parameters of statement no, at ps->p; the parameters go to
 * scratch, and the first error of shape to err. */
static int parseNamed(struct parser *ps, size_t no, char *err, int *has_err)
{
    size_t base = ps->nscratch;
    const char *t;
    const char *key;
    int nomem = 0;
    int rv;

    ps->p++;
    skipWs(ps);
    if (*ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        struct param *p;
        bool dropped;
        if (*ps->p != '"') {
            return unexpected(ps, ps->p, "a string key");
        }
        key = ps->p;
        if ((p = paramPush(ps, &dropped)) == NULL) {
            errorf(ps->errmsg, "out of memory");
            return CAIRN_ENOMEM;
        }
        if ((rv = parseKey(ps, &p->name, &p->name_len)) != 0) {
            return rv;
        }
        if (!dropped && isDuplicate(ps, base, ps->nscratch - 1 - base, &nomem)) {
            return syntaxError(ps, key, "duplicate object key \"%.*s\"",
                               (int)(p->name_len > 40 ? 40 : p->name_len), p->name);
        }
        if (nomem) {
            errorf(ps->errmsg, "out of memory");
            return CAIRN_ENOMEM;
        }
        if (p->name_len == 0) {
            shapeError(err, has_err, "statement %zu: a named parameter has an empty name", no);
        } else if (p->name_len > PARAM_NAME_MAX) {
            shapeError(err, has_err,
                       "statement %zu: parameter name \"%.40s...\" is %zu bytes long, at most %d",
                       no, p->name, p->name_len, PARAM_NAME_MAX);
        }
        skipWs(ps);
        if (*ps->p != ':') {
            return unexpected(ps, ps->p, "':'");
        }
        ps->p++;
        skipWs(ps);
        if (*ps->p == '[') {
            char what[48];
            snprintf(what, sizeof what, "\"%.*s\"", (int)(p->name_len > 40 ? 40 : p->name_len),
                     p->name);
            if ((rv = parseBytes(ps, 5, p, no, what, err, has_err)) != 0) {
                return rv;
            }
        } else if ((rv = parseValue(ps, 5, p, &t)) != 0) {
            return rv;
        } else if (t == T_OBJECT) {
            shapeError(err, has_err,
                       "statement %zu: parameter \"%.*s\" has unsupported type %s (expected a "
                       "number, string, boolean, null or an array of bytes)",
                       no, (int)(p->name_len > 40 ? 40 : p->name_len), p->name, t);
        }
        skipWs(ps);
        if (*ps->p == ',') {
            ps->p++;
            skipWs(ps);
            continue;
        }
        if (*ps->p == '}') {
            ps->p++;
            return 0;
        }
        return unexpected(ps, ps->p, "',' or '}'");
    }
}

/* Append statement (sql, scratch parameters) to the batch being built. */
static int stmtPush(struct parser *ps, const char *sql, size_t sql_len)
{
    struct stmt *s;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        s = realloc(ps->stmts, cap * sizeof *s);
        if (s == NULL) {
            return CAIRN_ENOMEM;
        }
        ps->stmts = s;
        ps->cap = cap;
    }
    s = &ps->stmts[ps->n];
    s->sql = sql;
    s->sql_len = sql_len;
    s->params = NULL;
    s->nparams = 0;
    if (ps->nscratch > 0) {
        s->params = malloc(ps->nscratch * sizeof *s->params);
        if (s->params == NULL) {
            return CAIRN_ENOMEM;
        }
        memcpy(s->params, ps->scratch, ps->nscratch * sizeof *s->params);
        s->nparams = ps->nscratch;
    }
    ps->n++;
    return 0;
}

/* Statement no (1-based) at ps->p: "SQL", ["SQL", p1, ...] or ["SQL", {...}]. */
static int parseStmt(struct parser *ps, size_t no)
{
    char err[CAIRN_ERRMSG_SIZE];
    char objerr[CAIRN_ERRMSG_SIZE];
    int has_err = 0;
    int has_objerr = 0;
    int obj_first = 0; /* the element after the SQL is an object */
    const char *sql = NULL;
    size_t sql_len = 0;
    const char *t;
    size_t count;
    int rv;

    ps->nscratch = 0;
    if (*ps->p == '"') {
        if ((rv = parseString(ps, &sql, &sql_len)) != 0) {
            return rv;
        }
        if (sql_len == 0) {
            shapeError(ps->sem, &ps->has_sem, "statement %zu is empty", no);
        }
        goto done;
    }
    if (*ps->p != '[') {
        if ((rv = parseValue(ps, 2, NULL, &t)) != 0) {
            return rv;
        }
        shapeError(ps->sem, &ps->has_sem,
                   "statement %zu has type %s: expected a string or an array", no, t);
        return 0;
    }

    ps->p++;
    skipWs(ps);
    if (*ps->p == ']') {
        ps->p++;
        shapeError(ps->sem, &ps->has_sem,
                   "statement %zu is an empty array: expected [\"SQL\", params...]", no);
        return 0;
    }
    if (*ps->p == '"') {
        if ((rv = parseString(ps, &sql, &sql_len)) != 0) {
            return rv;
        }
        if (sql_len == 0) {
            shapeError(err, &has_err, "statement %zu is empty", no);
        }
    } else {
        if ((rv = parseValue(ps, 3, NULL, &t)) != 0) {
            return rv;
        }
        shapeError(err, &has_err,
                   "statement %zu: the first element must be the SQL string, not %s", no, t);
    }
    for (count = 1;; count++) {
        struct param *p;
        bool dropped;
        skipWs(ps);
        if (*ps->p == ']') {
            ps->p++;
            break;
        }
        if (*ps->p != ',') {
            return unexpected(ps, ps->p, "',' or ']'");
        }
        ps->p++;
        skipWs(ps);
        if (count == 1 && *ps->p == '{') {
            obj_first = 1;
            if ((rv = parseNamed(ps, no, objerr, &has_objerr)) != 0) {
                return rv;
            }
            continue;
        }
        if (obj_first && count == 2) {
            /* More than one element after the SQL: the object is a positional
             * parameter, of the wrong type. */
            shapeError(err, &has_err,
                       "statement %zu: parameter 1 has unsupported type object (expected a "
                       "number, string, boolean, null or an array of bytes)",
                       no);
        }
        if ((p = paramPush(ps, &dropped)) == NULL) {
            errorf(ps->errmsg, "out of memory");
            return CAIRN_ENOMEM;
        }
        if (*ps->p == '[') {
            char what[24];
            snprintf(what, sizeof what, "%zu", count);
            if ((rv = parseBytes(ps, 4, p, no, what, err, &has_err)) != 0) {
                return rv;
            }
        } else if ((rv = parseValue(ps, 4, p, &t)) != 0) {
            return rv;
        } else if (t == T_OBJECT) {
            shapeError(err, &has_err,
                       "statement %zu: parameter %zu has unsupported type %s (expected a "
                       "number, string, boolean, null or an array of bytes)",
                       no, count, t);
        }
    }
    if (obj_first && count == 2 && has_objerr) {
        shapeError(err, &has_err, "%s", objerr);
    }
    if (has_err) {
        shapeError(ps->sem, &ps->has_sem, "%s", err);
    }
done:
    if (!ps->has_sem && ps->n >= REQUEST_STATEMENTS_MAX) {
        shapeError(ps->sem, &ps->has_sem,
                   "the request has more than %d statements: send them in several requests",
                   REQUEST_STATEMENTS_MAX);
    }
    if (ps->has_sem) {
        return 0; /* the request fails: only check the syntax of the rest */
    }
    if (stmtPush(ps, sql, sql_len) != 0) {
        errorf(ps->errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    return 0;
}

/* The top-level value at ps->p. */
static int parseBody(struct parser *ps)
{
    const char *t;
    size_t no;
    int rv;

    skipWs(ps);
    if (*ps->p != '[') {
        if (ps->p >= ps->end) {
            return unexpected(ps, ps->p, "a JSON array");
        }
        if ((rv = parseValue(ps, 1, NULL, &t)) != 0) {
            return rv;
        }
        shapeError(ps->sem, &ps->has_sem,
                   "request body must be a JSON array of statements, not %s", t);
    } else {
        ps->p++;
        skipWs(ps);
        if (*ps->p == ']') {
            ps->p++;
        } else {
            for (no = 1;; no++) {
                if ((rv = parseStmt(ps, no)) != 0) {
                    return rv;
                }
                skipWs(ps);
                if (*ps->p == ',') {
                    ps->p++;
                    skipWs(ps);
                    continue;
                }
                if (*ps->p == ']') {
                    ps->p++;
                    break;
                }
                return unexpected(ps, ps->p, "',' or ']' after a statement");
            }
        }
    }
    skipWs(ps);
    if (ps->p != ps->end) {
        return syntaxError(ps, ps->p, "unexpected data after the top-level array");
    }
    return 0;
}

int requestParse(const char *body, size_t len, struct batch *b, char *errmsg)
{
    struct parser ps;
    char *copy;
    size_t i;
    int rv;

    memset(b, 0, sizeof *b);
    if (len > (SIZE_MAX - 1) / 2) {
        errorf(errmsg, "out of memory: request body of %zu bytes", len);
        return CAIRN_ENOMEM;
    }
    /* The body copy, its sentinel, then the arena. */
    copy = malloc(2 * len + 1);
    if (copy == NULL) {
        errorf(errmsg, "out of memory: request body of %zu bytes", len);
        return CAIRN_ENOMEM;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';

    memset(&ps, 0, offsetof(struct parser, sem));
    ps.start = copy;
    ps.p = copy;
    ps.end = copy + len;
    ps.arena = copy + len + 1;
    ps.errmsg = errmsg;
    ps.scratch = NULL;
    ps.nscratch = ps.scratch_cap = 0;
    ps.dup = NULL;
    ps.dup_cap = 0;
    ps.params = 0;
    ps.stmts = NULL;
    ps.n = ps.cap = 0;

    rv = parseBody(&ps);
    if (rv == 0 && ps.has_sem) {
        errorf(errmsg, "%s", ps.sem);
        rv = CAIRN_EINVAL;
    }
    if (rv == 0 && ps.stmts == NULL && (ps.stmts = calloc(1, sizeof *ps.stmts)) == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
    }
    free(ps.scratch);
    free(ps.dup);
    if (rv != 0) {
        for (i = 0; i < ps.n; i++) {
            free(ps.stmts[i].params);
        }
        free(ps.stmts);
        free(copy);
        return rv;
    }
    b->stmts = ps.stmts;
    b->n = ps.n;
    b->owner = copy;
    b->owner_free = free;
    return 0;
}

int requestSingle(const char *sql, struct batch *b, char *errmsg)
{
    char *copy;
    memset(b, 0, sizeof *b);
    if (sql == NULL || sql[0] == '\0') {
        errorf(errmsg, "empty SQL statement");
        return CAIRN_EINVAL;
    }
    copy = strdup(sql);
    if (copy == NULL || batchAlloc(b, 1) != 0) {
        free(copy);
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    b->owner = copy;
    b->owner_free = free;
    b->stmts[0].sql = copy;
    b->stmts[0].sql_len = strlen(copy);
    return 0;
}
