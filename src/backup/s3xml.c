/* Reading S3's answers (see s3xml.h): a small XML reader, and on it the readers of
 * each answer the S3 client (s3.c) takes in: listing pages (ListObjectsV2,
 * ListMultipartUploads), InitiateMultipartUpload's UploadId, CompleteMultipartUpload's
 * answer, <Error> bodies. Kept apart from s3.c, which does the I/O, so that a fuzzer
 * (fuzz/fuzz_s3xml.c) reaches every line of it without a server.
 *
 * The reader walks the bytes given, never past their end, with a fixed stack of open
 * elements; it allocates nothing. Any thread. */
#define _GNU_SOURCE
#include "s3xml.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "lib.h"

#define XML_MAX_DEPTH 16

enum { XML_START, XML_END, XML_TEXT, XML_EOF, XML_ERR };

struct xml {
    const char *p, *end;
    const char *stack[XML_MAX_DEPTH];
    size_t stack_n[XML_MAX_DEPTH];
    int depth;
    bool root_seen;
    bool pending_end; /* after <a/>: its END comes next */
    const char *err;
};

struct xml_tok {
    int type;
    const char *s; /* name (START, END) or raw text (TEXT) */
    size_t n;
    bool cdata;
    bool empty; /* START of <a/> */
};

static void xmlInit(struct xml *x, const char *s, size_t n)
{
    memset(x, 0, sizeof *x);
    x->p = s;
    x->end = s + n;
}

static bool xmlNameChar(char c)
{
    return !isspace((unsigned char)c) && c != '/' && c != '>' && c != '<' && c != '=' &&
           c != '\'' && c != '"' && c != '\0';
}

static int xmlFail(struct xml *x, struct xml_tok *t, const char *why)
{
    x->err = why;
    t->type = XML_ERR;
    return XML_ERR;
}

static int xmlNext(struct xml *x, struct xml_tok *t)
{
    memset(t, 0, sizeof *t);
    if (x->err != NULL) {
        return xmlFail(x, t, x->err);
    }
    if (x->pending_end) {
        x->pending_end = false;
        x->depth--;
        t->type = XML_END;
        t->s = x->stack[x->depth];
        t->n = x->stack_n[x->depth];
        return XML_END;
    }
    for (;;) {
        const char *p = x->p;
        size_t left = (size_t)(x->end - p);
        if (left == 0) {
            if (x->depth > 0 || !x->root_seen) {
                return xmlFail(x, t, "truncated document");
            }
            t->type = XML_EOF;
            return XML_EOF;
        }
        if (*p != '<') {
            const char *lt = memchr(p, '<', left);
            const char *e = lt != NULL ? lt : x->end;
            x->p = e;
            if (x->depth == 0) {
                for (const char *c = p; c < e; c++) {
                    if (!isspace((unsigned char)*c)) {
                        return xmlFail(x, t, "text outside the root element");
                    }
                }
                continue;
            }
            t->type = XML_TEXT;
            t->s = p;
            t->n = (size_t)(e - p);
            return XML_TEXT;
        }
        if (left >= 2 && p[1] == '?') {
            const char *e = memmem(p, left, "?>", 2);
            if (e == NULL) {
                return xmlFail(x, t, "truncated processing instruction");
            }
            x->p = e + 2;
            continue;
        }
        if (left >= 4 && memcmp(p, "<!--", 4) == 0) {
            const char *e = memmem(p + 4, left - 4, "-->", 3);
            if (e == NULL) {
                return xmlFail(x, t, "truncated comment");
            }
            x->p = e + 3;
            continue;
        }
        if (left >= 9 && memcmp(p, "<![CDATA[", 9) == 0) {
            const char *e = memmem(p + 9, left - 9, "]]>", 3);
            if (e == NULL) {
                return xmlFail(x, t, "truncated CDATA section");
            }
            if (x->depth == 0) {
                return xmlFail(x, t, "CDATA outside the root element");
            }
            x->p = e + 3;
            t->type = XML_TEXT;
            t->s = p + 9;
            t->n = (size_t)(e - p - 9);
            t->cdata = true;
            return XML_TEXT;
        }
        if (left >= 2 && p[1] == '!') {
            return xmlFail(x, t, "document type declarations are not accepted");
        }
        if (left >= 2 && p[1] == '/') {
            const char *n = p + 2, *c = n;
            while (c < x->end && xmlNameChar(*c)) {
                c++;
            }
            if (c == n) {
                return xmlFail(x, t, "end tag without a name");
            }
            t->s = n;
            t->n = (size_t)(c - n);
            while (c < x->end && isspace((unsigned char)*c)) {
                c++;
            }
            if (c >= x->end) {
                return xmlFail(x, t, "truncated end tag");
            }
            if (*c != '>') {
                return xmlFail(x, t, "malformed end tag");
            }
            if (x->depth == 0 || x->stack_n[x->depth - 1] != t->n ||
                memcmp(x->stack[x->depth - 1], t->s, t->n) != 0) {
                return xmlFail(x, t, "end tag does not match its start tag");
            }
            x->depth--;
            x->p = c + 1;
            t->type = XML_END;
            return XML_END;
        }
        /* start tag */
        {
            const char *n = p + 1, *c = n;
            char quote = 0;
            while (c < x->end && xmlNameChar(*c)) {
                c++;
            }
            if (c == n) {
                return xmlFail(x, t, "tag without a name");
            }
            t->s = n;
            t->n = (size_t)(c - n);
            if (c < x->end && !isspace((unsigned char)*c) && *c != '/' && *c != '>') {
                /* `<Key"x">`, `<Key=1>`, `<Key\0>`: not a name ended, nor an attribute */
                return xmlFail(x, t, "malformed start tag");
            }
            /* attributes: skipped, quotes honoured */
            for (; c < x->end; c++) {
                if (quote) {
                    if (*c == quote) {
                        quote = 0;
                    }
                } else if (*c == '"' || *c == '\'') {
                    quote = *c;
                } else if (*c == '<') {
                    return xmlFail(x, t, "'<' inside a tag");
                } else if (*c == '>') {
                    break;
                }
            }
            if (c >= x->end) {
                return xmlFail(x, t, "truncated start tag");
            }
            if (x->depth == 0 && x->root_seen) {
                return xmlFail(x, t, "more than one root element");
            }
            if (x->depth == XML_MAX_DEPTH) {
                return xmlFail(x, t, "elements nested too deeply");
            }
            x->root_seen = true;
            x->stack[x->depth] = t->s;
            x->stack_n[x->depth] = t->n;
            x->depth++;
            t->empty = c[-1] == '/' && c - 1 >= t->s + t->n;
            x->pending_end = t->empty;
            x->p = c + 1;
            t->type = XML_START;
            return XML_START;
        }
    }
}

static bool xmlIs(const struct xml_tok *t, const char *name)
{
    return t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static int putUtf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Append the decoded text of t to out[*len, cap) (NUL-terminated on success). Returns
 * false, with x->err, on a bad entity, a NUL byte, or when it does not fit; out[*len]
 * on may then hold part of the text, unterminated. */
static bool xmlDecode(struct xml *x, const struct xml_tok *t, char *out, size_t cap, size_t *len)
{
    const char *p = t->s, *e = t->s + t->n;
    size_t n = *len;
    while (p < e) {
        char tmp[4];
        const char *src = p;
        int k = 1;
        if (*p == '&' && !t->cdata) {
            const char *semi = memchr(p, ';', (size_t)(e - p) < 12 ? (size_t)(e - p) : 12);
            size_t en;
            if (semi == NULL) {
                x->err = "'&' that starts no entity";
                return false;
            }
            en = (size_t)(semi - p - 1);
            if (en == 2 && memcmp(p + 1, "lt", 2) == 0) {
                tmp[0] = '<';
            } else if (en == 2 && memcmp(p + 1, "gt", 2) == 0) {
                tmp[0] = '>';
            } else if (en == 3 && memcmp(p + 1, "amp", 3) == 0) {
                tmp[0] = '&';
            } else if (en == 4 && memcmp(p + 1, "quot", 4) == 0) {
                tmp[0] = '"';
            } else if (en == 4 && memcmp(p + 1, "apos", 4) == 0) {
                tmp[0] = '\'';
            } else if (en >= 2 && p[1] == '#') {
                bool hexa = p[2] == 'x';
                const char *d = p + (hexa ? 3 : 2);
                uint32_t cp = 0;
                if (d == semi) {
                    x->err = "empty character reference";
                    return false;
                }
                for (; d < semi; d++) {
                    int v;
                    if (isdigit((unsigned char)*d)) {
                        v = *d - '0';
                    } else if (hexa && isxdigit((unsigned char)*d)) {
                        v = tolower((unsigned char)*d) - 'a' + 10;
                    } else {
                        x->err = "bad character reference";
                        return false;
                    }
                    cp = cp * (hexa ? 16 : 10) + (uint32_t)v;
                    if (cp > 0x10FFFF) {
                        break;
                    }
                }
                if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                    x->err = "character reference to no character";
                    return false;
                }
                k = putUtf8(tmp, cp);
            } else {
                x->err = "unknown entity";
                return false;
            }
            src = tmp;
            p = semi + 1;
        } else if (*p == '\0') {
            /* no character of XML; as a C string the text would end there, cut short */
            x->err = "NUL byte in text";
            return false;
        } else {
            p++;
        }
        if (n + (size_t)k + 1 > cap) {
            x->err = "text too long";
            return false;
        }
        memcpy(out + n, src, (size_t)k);
        n += (size_t)k;
    }
    out[n] = '\0';
    *len = n;
    return true;
}

/* Just after the START token `start`: read the element's text up to its END into out
 * (NUL-terminated). Child elements are an error. On failure out is "": never part of
 * a text, which a caller could take for the whole. */
static bool xmlText(struct xml *x, const struct xml_tok *start, char *out, size_t cap)
{
    struct xml_tok t;
    size_t len = 0;
    out[0] = '\0';
    (void)start;
    for (;;) {
        switch (xmlNext(x, &t)) {
        case XML_TEXT:
            if (!xmlDecode(x, &t, out, cap, &len)) {
                out[0] = '\0';
                return false;
            }
            break;
        case XML_END:
            return true;
        case XML_START:
            x->err = "element inside a text element";
            out[0] = '\0';
            return false;
        default:
            out[0] = '\0';
            return false;
        }
    }
}

/* Skip the rest of the element whose START was just read. */
static bool xmlSkip(struct xml *x)
{
    struct xml_tok t;
    int depth = 1;
    while (depth > 0) {
        switch (xmlNext(x, &t)) {
        case XML_START:
            depth++;
            break;
        case XML_END:
            depth--;
            break;
        case XML_TEXT:
            break;
        default:
            return false;
        }
    }
    return true;
}

/* The root element's name into root (NUL-terminated, cut at cap), the whole document
 * checked well-formed. Returns false, with a reason in *why, when it is not. */
static bool xmlCheck(const char *s, size_t n, char *root, size_t cap, const char **why)
{
    struct xml x;
    struct xml_tok t;
    int type;
    xmlInit(&x, s, n);
    root[0] = '\0';
    while ((type = xmlNext(&x, &t)) != XML_EOF) {
        if (type == XML_ERR) {
            *why = x.err;
            return false;
        }
        if (type == XML_START && x.depth == 1) {
            snprintf(root, cap, "%.*s", (int)t.n, t.s);
        }
    }
    return true;
}

/* Undo encoding-type=url ('+' is a space, as S3 writes it). Returns false on a bad
 * escape. In place. */
static bool urlDecode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%') {
            unsigned v;
            if (!isxdigit((unsigned char)r[1]) || !isxdigit((unsigned char)r[2]) ||
                sscanf(r + 1, "%2x", &v) != 1 || v == 0) {
                return false;
            }
            *w++ = (char)v;
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return true;
}

/* "2009-10-12T17:50:30.000Z" -> Unix ms; 0 when it does not parse. */
static int64_t isoMs(const char *s)
{
    int64_t ms;
    return libParseIso8601(s, &ms) == 0 ? ms : 0;
}

bool s3xmlParseU64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') {
        return false;
    }
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s) || v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

void s3xmlUnquoteEtag(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= 2 && src[0] == '"' && src[n - 1] == '"') {
        src++;
        n -= 2;
    }
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- listings -------------------------------------------------------------------------- */

/* An entry of a page (Contents or Upload): its fields, as sent (a url-encoded key is
 * up to three times longer than the key). */
struct list_entry {
    char key[S3_MAX_KEY * 3 + 1];
    char upload_id[S3XML_ID_SIZE];
    char size[24];
    char time[40];
    char etag[100];
};

int s3xmlListPage(const char *s, size_t n, struct s3xml_page *pg, const char **why)
{
    const char *want = pg->uploads ? "ListMultipartUploadsResult" : "ListBucketResult";
    struct xml x;
    struct xml_tok t;
    char root[64];
    char tmp[16];
    pg->truncated = pg->url_encoded = false;
    pg->next[0] = pg->next2[0] = '\0';
    if (!xmlCheck(s, n, root, sizeof root, why)) {
        return CAIRN_EIO;
    }
    if (strcmp(root, want) != 0) {
        *why = "not the listing asked for";
        return CAIRN_EIO;
    }
    xmlInit(&x, s, n);
    while (xmlNext(&x, &t) != XML_EOF) {
        if (t.type == XML_ERR) {
            *why = x.err;
            return CAIRN_EIO;
        }
        if (t.type != XML_START || x.depth != 2) {
            continue;
        }
        if (xmlIs(&t, "IsTruncated")) {
            if (!xmlText(&x, &t, tmp, sizeof tmp)) {
                *why = x.err;
                return CAIRN_EIO;
            }
            /* anything else read as "false" would end the listing early, silently */
            if (strcmp(tmp, "true") != 0 && strcmp(tmp, "false") != 0) {
                *why = "IsTruncated neither true nor false";
                return CAIRN_EIO;
            }
            pg->truncated = strcmp(tmp, "true") == 0;
        } else if (xmlIs(&t, "EncodingType")) {
            if (!xmlText(&x, &t, tmp, sizeof tmp)) {
                *why = x.err;
                return CAIRN_EIO;
            }
            pg->url_encoded = strcmp(tmp, "url") == 0;
        } else if (xmlIs(&t, "NextContinuationToken") || xmlIs(&t, "NextKeyMarker")) {
            if (!xmlText(&x, &t, pg->next, sizeof pg->next)) {
                *why = x.err;
                return CAIRN_EIO;
            }
        } else if (xmlIs(&t, "NextUploadIdMarker")) {
            if (!xmlText(&x, &t, pg->next2, sizeof pg->next2)) {
                *why = x.err;
                return CAIRN_EIO;
            }
        } else if (!xmlSkip(&x)) {
            *why = x.err;
            return CAIRN_EIO;
        }
    }
    if (pg->truncated && pg->next[0] == '\0') {
        *why = "truncated listing without a marker to go on from";
        return CAIRN_EIO;
    }
    if (pg->url_encoded && !urlDecode(pg->next)) {
        *why = "bad URL encoding in the next marker";
        return CAIRN_EIO;
    }
    return 0;
}

/* Read the children of the entry whose START was just read. */
static bool listEntry(struct xml *x, struct list_entry *e)
{
    struct xml_tok t;
    memset(e, 0, sizeof *e);
    for (;;) {
        switch (xmlNext(x, &t)) {
        case XML_START:
            if (xmlIs(&t, "Key")) {
                if (!xmlText(x, &t, e->key, sizeof e->key)) {
                    return false;
                }
            } else if (xmlIs(&t, "UploadId")) {
                if (!xmlText(x, &t, e->upload_id, sizeof e->upload_id)) {
                    return false;
                }
            } else if (xmlIs(&t, "Size")) {
                if (!xmlText(x, &t, e->size, sizeof e->size)) {
                    return false;
                }
            } else if (xmlIs(&t, "LastModified") || xmlIs(&t, "Initiated")) {
                if (!xmlText(x, &t, e->time, sizeof e->time)) {
                    return false;
                }
            } else if (xmlIs(&t, "ETag")) {
                if (!xmlText(x, &t, e->etag, sizeof e->etag)) {
                    return false;
                }
            } else if (!xmlSkip(x)) {
                return false;
            }
            break;
        case XML_END:
            return true;
        case XML_TEXT:
            break;
        default:
            return false;
        }
    }
}

int s3xmlListEntries(const char *s, size_t n, const struct s3xml_page *pg, const char *full,
                     size_t pn, s3_list_fn fn, s3_pending_fn pfn, void *arg, const char **why)
{
    const char *entry = pg->uploads ? "Upload" : "Contents";
    size_t fn_len = strlen(full);
    struct list_entry *e = malloc(sizeof *e);
    struct xml x;
    struct xml_tok t;
    int rv = 0;

    if (e == NULL) {
        *why = "out of memory";
        return CAIRN_ENOMEM;
    }
    xmlInit(&x, s, n);
    while (rv == 0 && xmlNext(&x, &t) != XML_EOF) {
        if (t.type == XML_ERR) {
            break;
        }
        if (t.type != XML_START || x.depth != 2) {
            continue;
        }
        if (!xmlIs(&t, entry)) {
            xmlSkip(&x);
            continue;
        }
        if (!listEntry(&x, e)) {
            break;
        }
        if (e->key[0] == '\0') {
            /* with no prefix, it would pass for the prefix itself, and be left out */
            x.err = "an entry without a Key";
            break;
        }
        if (pg->url_encoded && !urlDecode(e->key)) {
            x.err = "bad URL encoding in a key";
            break;
        }
        if (strlen(e->key) > S3_MAX_KEY) {
            x.err = "a key longer than 1024 bytes";
            break;
        }
        if (strncmp(e->key, full, fn_len) != 0) {
            x.err = "a key outside the prefix asked for";
            break;
        }
        if (strlen(e->key) == pn) {
            continue; /* the prefix itself ("folder" marker objects): no key under it */
        }
        if (pg->uploads) {
            struct s3_pending p;
            if (e->upload_id[0] == '\0') {
                x.err = "an upload without an UploadId";
                break;
            }
            p.key = e->key + pn;
            p.upload_id = e->upload_id;
            p.initiated_ms = isoMs(e->time);
            rv = pfn(arg, &p);
        } else {
            struct s3_object o;
            memset(&o, 0, sizeof o);
            if (!s3xmlParseU64(e->size, &o.size)) {
                x.err = "an object without a valid Size";
                break;
            }
            o.key = e->key + pn;
            o.mtime_ms = isoMs(e->time);
            s3xmlUnquoteEtag(o.etag, sizeof o.etag, e->etag);
            rv = fn(arg, &o);
        }
    }
    free(e);
    if (rv == 0 && x.err != NULL) {
        *why = x.err;
        return CAIRN_EIO;
    }
    return rv;
}

/* ---- multipart uploads, errors --------------------------------------------------------- */

int s3xmlUploadId(const char *s, size_t n, char *id, size_t cap, const char **why)
{
    struct xml x;
    struct xml_tok t;
    char root[64];
    id[0] = '\0';
    if (!xmlCheck(s, n, root, sizeof root, why)) {
        return CAIRN_EIO;
    }
    if (strcmp(root, "InitiateMultipartUploadResult") != 0) {
        *why = "not an InitiateMultipartUploadResult";
        return CAIRN_EIO;
    }
    xmlInit(&x, s, n);
    while (xmlNext(&x, &t) != XML_EOF && x.err == NULL) {
        if (t.type == XML_START && x.depth == 2 && xmlIs(&t, "UploadId") &&
            !xmlText(&x, &t, id, cap)) {
            *why = x.err;
            return CAIRN_EIO;
        }
    }
    if (x.err != NULL) {
        id[0] = '\0';
        *why = x.err;
        return CAIRN_EIO;
    }
    for (const char *p = id; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            id[0] = '\0';
            *why = "an UploadId with a control character";
            return CAIRN_EIO;
        }
    }
    if (id[0] == '\0') {
        *why = "no UploadId";
        return CAIRN_EIO;
    }
    return 0;
}

int s3xmlComplete(const char *s, size_t n, bool *error, const char **why)
{
    char root[64];
    *error = false;
    if (!xmlCheck(s, n, root, sizeof root, why)) {
        return CAIRN_EIO;
    }
    if (strcmp(root, "CompleteMultipartUploadResult") == 0) {
        return 0;
    }
    if (strcmp(root, "Error") == 0) {
        *error = true;
        return 0;
    }
    *why = "not a CompleteMultipartUploadResult";
    return CAIRN_EIO;
}

int s3xmlError(const char *s, size_t n, char *code, size_t code_n, char *msg, size_t msg_n,
               const char **why)
{
    struct xml x;
    struct xml_tok t;
    char root[32];
    code[0] = msg[0] = '\0';
    if (!xmlCheck(s, n, root, sizeof root, why)) {
        return CAIRN_EIO;
    }
    if (strcmp(root, "Error") != 0) {
        *why = "not an Error";
        return CAIRN_EIO;
    }
    xmlInit(&x, s, n);
    while (xmlNext(&x, &t) != XML_EOF && x.err == NULL) {
        if (t.type == XML_START && x.depth == 2) {
            char tmp[512];
            if (xmlIs(&t, "Code") && xmlText(&x, &t, tmp, sizeof tmp)) {
                snprintf(code, code_n, "%s", tmp);
            } else if (xmlIs(&t, "Message") && xmlText(&x, &t, tmp, sizeof tmp)) {
                snprintf(msg, msg_n, "%s", tmp);
            } else if (x.err == NULL) {
                xmlSkip(&x);
            }
        }
    }
    /* What a server says goes into errmsg: printable characters only. */
    for (char *c = code; *c; c++) {
        if (!isalnum((unsigned char)*c)) {
            *c = '?';
        }
    }
    for (char *c = msg; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = ' ';
        }
    }
    if (x.err != NULL) {
        *why = x.err;
        return CAIRN_EIO;
    }
    return 0;
}
