/* libFuzzer target: the readers of S3's XML answers (src/backup/s3xml.c), which take
 * bytes from a remote server that may be broken or hostile: listing pages
 * (ListObjectsV2 and ListMultipartUploads: s3xmlListPage, then s3xmlListEntries),
 * InitiateMultipartUpload's UploadId (s3xmlUploadId), CompleteMultipartUpload's
 * answer, which may be an <Error> inside a 200 (s3xmlComplete), and <Error> bodies
 * (s3xmlError).
 *
 * The first byte of the input chooses: bits 0-2 the answer (0 objects, 1 uploads,
 * 2 initiate, 3 complete, 4 error, 5 text; 6 and 7 are 0 and 1 again), bits 3-4 the
 * prefix listed (none, "db/", "db/x" under the client's "db/", "a&b/"), bit 5 a
 * listing callback that stops at the first entry. The rest is the answer's body.
 * What the readers promise, and the target checks:
 *   - 0 or the documented error code (CAIRN_EIO, with a reason), the callback's own
 *     value when it stopped a listing after exactly one entry;
 *   - what is accepted is well-formed by the reader's rules: list entries have a key
 *     within S3_MAX_KEY, under the prefix asked for and not empty once made relative;
 *     objects a Size, uploads an UploadId; an UploadId is not empty and holds no
 *     control character; an error code only letters, digits and '?', a message no
 *     control character; every string is terminated within its buffer;
 *   - reading is a function of the bytes: the same answer read twice is the same;
 *   - decoding is right: what was accepted, written again by this target as S3 would
 *     (every special character as an entity or a character reference, some values in
 *     CDATA), reads back the same; and "text" bodies, put as the Message of an
 *     <Error> (any '<' but a CDATA section's becoming a space), decode as this
 *     target's own reading of XML's entity rules says (the reader's limits: an entity
 *     ends within 12 bytes, a text within 511);
 *   - everything is freed (ASan).
 * Any thread. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "cairn.h"
#include "error.h"
#include "fuzz.h"
#include "s3.h"
#include "s3xml.h"

enum { K_OBJECTS, K_UPLOADS, K_INITIATE, K_COMPLETE, K_ERROR, K_TEXT };

/* What a listing callback stops the walk with. */
#define STOP_RC 4242
/* The driver's buffers for an error's code and message (s3.c, describeHttp). */
#define CODE_N 64
#define MSG_N 300
/* Years 1970 to 9999: the times this target writes again as ISO-8601. */
#define MAX_ISO_MS 253402300800000LL

static const struct {
    const char *full;
    size_t pn;
} prefixes[4] = {{"", 0}, {"db/", 3}, {"db/x", 3}, {"a&b/", 4}};

static bool within(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* The first w[0..wn) in s[0..n), or NULL (memmem, which is GNU's only). */
static const char *findBytes(const char *s, size_t n, const char *w, size_t wn)
{
    for (size_t i = 0; i + wn <= n; i++) {
        if (memcmp(s + i, w, wn) == 0) {
            return s + i;
        }
    }
    return NULL;
}

/* ---- writing answers again ------------------------------------------------------------ */

/* s as XML text: every special character as an entity, control characters as
 * character references (decimal or hexadecimal), and with style 1 every ASCII letter
 * too; style 2 puts it in a CDATA section when it holds no "]]>". */
static void putText(struct buf *b, const char *s, unsigned style)
{
    if (style % 3 == 2 && strstr(s, "]]>") == NULL) {
        bufPuts(b, "<![CDATA[");
        bufPuts(b, s);
        bufPuts(b, "]]>");
        return;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '<':
            bufPuts(b, "&lt;");
            break;
        case '>':
            bufPuts(b, "&gt;");
            break;
        case '&':
            bufPuts(b, "&amp;");
            break;
        case '"':
            bufPuts(b, "&quot;");
            break;
        case '\'':
            bufPuts(b, "&apos;");
            break;
        default:
            if (c < 0x20 || c == 0x7f ||
                (style % 3 == 1 && c < 0x80 && (c | 0x20) >= 'a' && (c | 0x20) <= 'z')) {
                bufPrintf(b, i % 2 ? "&#%u;" : "&#x%X;", c);
            } else {
                bufPutc(b, (char)c);
            }
        }
    }
}

static void putElement(struct buf *b, const char *name, const char *text, unsigned style)
{
    bufPrintf(b, "<%s>", name);
    putText(b, text, style);
    bufPrintf(b, "</%s>", name);
}

/* ms as S3 writes times; false (nothing written) when out of the years written. */
static bool putTime(struct buf *b, const char *name, int64_t ms)
{
    struct tm tm;
    time_t secs;
    if (ms <= 0 || ms >= MAX_ISO_MS) {
        return false;
    }
    secs = (time_t)(ms / 1000);
    FUZZ_CHECK(gmtime_r(&secs, &tm) != NULL);
    bufPrintf(b, "<%s>%04d-%02d-%02dT%02d:%02d:%02d.%03dZ</%s>", name, tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000), name);
    return true;
}

/* ---- listings --------------------------------------------------------------------------- */

struct item {
    char *key;
    char *upload_id;
    uint64_t size;
    int64_t ms;
    char etag[100];
};

struct walk {
    const char *full;
    size_t pn;
    bool stop; /* stop at the first entry */
    struct item *items;
    size_t n, cap;
};

static void walkFree(struct walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->items[i].key);
        free(w->items[i].upload_id);
    }
    free(w->items);
    w->items = NULL;
    w->n = w->cap = 0;
}

static struct item *walkAdd(struct walk *w, const char *key)
{
    struct item *it;
    size_t rest = strlen(w->full) - w->pn;
    FUZZ_CHECK(key != NULL);
    FUZZ_CHECK(key[0] != '\0');
    FUZZ_CHECK(w->pn + strlen(key) <= S3_MAX_KEY);
    FUZZ_CHECK(strncmp(key, w->full + w->pn, rest) == 0);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 8;
        w->items = realloc(w->items, w->cap * sizeof *w->items);
        FUZZ_CHECK(w->items != NULL);
    }
    it = &w->items[w->n++];
    memset(it, 0, sizeof *it);
    it->key = strdup(key);
    FUZZ_CHECK(it->key != NULL);
    return it;
}

static int onObject(void *arg, const struct s3_object *o)
{
    struct walk *w = arg;
    struct item *it = walkAdd(w, o->key);
    FUZZ_CHECK(within(o->etag, sizeof o->etag));
    it->size = o->size;
    it->ms = o->mtime_ms;
    memcpy(it->etag, o->etag, sizeof it->etag);
    return w->stop ? STOP_RC : 0;
}

static int onUpload(void *arg, const struct s3_pending *p)
{
    struct walk *w = arg;
    struct item *it = walkAdd(w, p->key);
    FUZZ_CHECK(p->upload_id != NULL && p->upload_id[0] != '\0');
    FUZZ_CHECK(strlen(p->upload_id) < S3XML_ID_SIZE);
    it->upload_id = strdup(p->upload_id);
    FUZZ_CHECK(it->upload_id != NULL);
    it->ms = p->initiated_ms;
    return w->stop ? STOP_RC : 0;
}

/* Both passes over one page, as s3List does them: the page's code, its fields in *pg,
 * its entries in *w (which the caller frees). */
static int listOnce(const char *s, size_t n, bool uploads, struct s3xml_page *pg, struct walk *w)
{
    const char *why = NULL;
    int rv;
    memset(pg, 0x5a, sizeof *pg); /* garbage: the reader must set every field */
    pg->uploads = uploads;
    rv = s3xmlListPage(s, n, pg, &why);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_EIO);
    if (rv != 0) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
        return rv;
    }
    FUZZ_CHECK(pg->uploads == uploads);
    FUZZ_CHECK(within(pg->next, sizeof pg->next));
    FUZZ_CHECK(within(pg->next2, sizeof pg->next2));
    FUZZ_CHECK(!pg->truncated || pg->next[0] != '\0');
    why = NULL;
    rv = s3xmlListEntries(s, n, pg, w->full, w->pn, onObject, onUpload, w, &why);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_EIO || rv == CAIRN_ENOMEM || (w->stop && rv == STOP_RC));
    if (rv == CAIRN_EIO || rv == CAIRN_ENOMEM) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    } else {
        FUZZ_CHECK(why == NULL);
    }
    if (rv == STOP_RC) {
        FUZZ_CHECK(w->n == 1);
    }
    FUZZ_CHECK(!w->stop || w->n <= 1);
    FUZZ_CHECK(!w->stop || rv != 0 || w->n == 0);
    return rv;
}

static bool samePage(const struct s3xml_page *a, const struct s3xml_page *b, bool fields_only)
{
    return a->truncated == b->truncated && strcmp(a->next, b->next) == 0 &&
           strcmp(a->next2, b->next2) == 0 && (fields_only || a->url_encoded == b->url_encoded);
}

static bool sameItems(const struct walk *a, const struct walk *b, bool times_written)
{
    if (a->n != b->n) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const struct item *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->key, y->key) != 0 || x->size != y->size || strcmp(x->etag, y->etag) != 0 ||
            (x->upload_id == NULL) != (y->upload_id == NULL) ||
            (x->upload_id != NULL && strcmp(x->upload_id, y->upload_id) != 0)) {
            return false;
        }
        if ((!times_written || (x->ms > 0 && x->ms < MAX_ISO_MS)) && x->ms != y->ms) {
            return false;
        }
    }
    return true;
}

/* The page and entries as S3 would write them, without url encoding. */
static void writeListing(struct buf *b, bool uploads, const struct s3xml_page *pg,
                         const struct walk *w, unsigned style)
{
    bufPuts(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    bufPuts(b, uploads ? "<ListMultipartUploadsResult" : "<ListBucketResult");
    bufPuts(b, " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bucket</Name>");
    bufPrintf(b, "<IsTruncated>%s</IsTruncated>", pg->truncated ? "true" : "false");
    if (pg->next[0] != '\0') {
        putElement(b, uploads ? "NextKeyMarker" : "NextContinuationToken", pg->next, style);
    }
    if (pg->next2[0] != '\0') {
        putElement(b, "NextUploadIdMarker", pg->next2, style + 1);
    }
    for (size_t i = 0; i < w->n; i++) {
        const struct item *it = &w->items[i];
        char full[S3_MAX_KEY + 1];
        snprintf(full, sizeof full, "%.*s%s", (int)w->pn, w->full, it->key);
        bufPuts(b, uploads ? "<Upload>" : "<Contents>");
        putElement(b, "Key", full, style + i);
        if (uploads) {
            putElement(b, "UploadId", it->upload_id, style + i + 1);
            putTime(b, "Initiated", it->ms);
        } else {
            putTime(b, "LastModified", it->ms);
            bufPrintf(b, "<Size>%llu</Size>", (unsigned long long)it->size);
            if (it->etag[0] != '\0') {
                char quoted[sizeof it->etag + 2];
                /* quotes only where they fit the reader's 99 bytes (an ETag that long
                 * came without them) */
                snprintf(quoted, sizeof quoted, strlen(it->etag) <= 97 ? "\"%s\"" : "%s", it->etag);
                putElement(b, "ETag", quoted, style + i + 2);
            }
            bufPuts(b, "<StorageClass>STANDARD</StorageClass>");
        }
        bufPuts(b, uploads ? "</Upload>" : "</Contents>");
    }
    bufPuts(b, uploads ? "</ListMultipartUploadsResult>\n" : "</ListBucketResult>\n");
}

static int fuzzList(const char *s, size_t n, bool uploads, unsigned flags)
{
    struct s3xml_page *pg1 = malloc(sizeof *pg1), *pg2 = malloc(sizeof *pg2);
    struct walk w1 = {0}, w2 = {0};
    int rv, rv2;
    FUZZ_CHECK(pg1 != NULL && pg2 != NULL);
    w1.full = w2.full = prefixes[(flags >> 3) & 3].full;
    w1.pn = w2.pn = prefixes[(flags >> 3) & 3].pn;
    w1.stop = w2.stop = (flags & 0x20) != 0;

    rv = listOnce(s, n, uploads, pg1, &w1);
    rv2 = listOnce(s, n, uploads, pg2, &w2);
    FUZZ_CHECK(rv == rv2);
    FUZZ_CHECK(sameItems(&w1, &w2, false));
    FUZZ_CHECK(samePage(pg1, pg2, false));

    if (rv == 0) {
        /* written again, read again: the same page and entries */
        struct buf b;
        bufInit(&b);
        writeListing(&b, uploads, pg1, &w1, (unsigned)n);
        FUZZ_CHECK(!b.oom);
        walkFree(&w2);
        rv2 = listOnce(b.p, b.len, uploads, pg2, &w2);
        if (rv2 != 0) {
            fprintf(stderr, "written again:\n%.*s\n", (int)b.len, b.p);
        }
        FUZZ_CHECK(rv2 == 0);
        FUZZ_CHECK(samePage(pg1, pg2, true));
        FUZZ_CHECK(sameItems(&w1, &w2, true));
        bufFree(&b);
    }
    walkFree(&w1);
    walkFree(&w2);
    free(pg1);
    free(pg2);
    return rv == STOP_RC ? 0 : rv;
}

/* ---- multipart answers, errors ------------------------------------------------------------ */

static int uploadIdOnce(const char *s, size_t n, char *id)
{
    const char *why = NULL;
    int rv;
    memset(id, 'x', S3XML_ID_SIZE);
    rv = s3xmlUploadId(s, n, id, S3XML_ID_SIZE, &why);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_EIO);
    FUZZ_CHECK(within(id, S3XML_ID_SIZE));
    if (rv != 0) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
        FUZZ_CHECK(id[0] == '\0');
        return rv;
    }
    FUZZ_CHECK(id[0] != '\0');
    for (const char *p = id; *p; p++) {
        FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    return rv;
}

static int fuzzInitiate(const char *s, size_t n)
{
    char id1[S3XML_ID_SIZE], id2[S3XML_ID_SIZE];
    int rv = uploadIdOnce(s, n, id1);
    FUZZ_CHECK(uploadIdOnce(s, n, id2) == rv);
    FUZZ_CHECK(strcmp(id1, id2) == 0);
    if (rv == 0) {
        struct buf b;
        bufInit(&b);
        bufPuts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult "
                    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket>"
                    "<Key>k</Key>");
        putElement(&b, "UploadId", id1, (unsigned)n);
        bufPuts(&b, "</InitiateMultipartUploadResult>");
        FUZZ_CHECK(!b.oom);
        FUZZ_CHECK(uploadIdOnce(b.p, b.len, id2) == 0);
        FUZZ_CHECK(strcmp(id1, id2) == 0);
        bufFree(&b);
    }
    return rv;
}

static int errorOnce(const char *s, size_t n, char *code, char *msg, size_t msg_n)
{
    const char *why = NULL;
    int rv;
    memset(code, 'x', CODE_N);
    memset(msg, 'x', msg_n);
    rv = s3xmlError(s, n, code, CODE_N, msg, msg_n, &why);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_EIO);
    FUZZ_CHECK(within(code, CODE_N));
    FUZZ_CHECK(within(msg, msg_n));
    if (rv != 0) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    }
    for (const char *p = code; *p; p++) {
        FUZZ_CHECK((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') ||
                   *p == '?');
    }
    for (const char *p = msg; *p; p++) {
        FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    return rv;
}

static int fuzzError(const char *s, size_t n)
{
    char code1[CODE_N], code2[CODE_N], msg1[MSG_N], msg2[MSG_N];
    const char *why = NULL;
    bool error = false;
    int rv = errorOnce(s, n, code1, msg1, MSG_N);
    FUZZ_CHECK(errorOnce(s, n, code2, msg2, MSG_N) == rv);
    FUZZ_CHECK(strcmp(code1, code2) == 0 && strcmp(msg1, msg2) == 0);
    if (rv == 0) {
        struct buf b;
        /* an <Error> is what a completion may answer too */
        FUZZ_CHECK(s3xmlComplete(s, n, &error, &why) == 0 && error);
        bufInit(&b);
        bufPuts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        putElement(&b, "Code", code1, (unsigned)n);
        putElement(&b, "Message", msg1, (unsigned)n + 1);
        bufPuts(&b, "<RequestId>4442587FB7D0A2F9</RequestId></Error>");
        FUZZ_CHECK(!b.oom);
        FUZZ_CHECK(errorOnce(b.p, b.len, code2, msg2, MSG_N) == 0);
        FUZZ_CHECK(strcmp(code1, code2) == 0 && strcmp(msg1, msg2) == 0);
        bufFree(&b);
    }
    return rv;
}

static int fuzzComplete(const char *s, size_t n)
{
    const char *why = NULL;
    bool error = true, error2 = false;
    char code[CODE_N], msg[MSG_N];
    int rv = s3xmlComplete(s, n, &error, &why);
    FUZZ_CHECK(rv == 0 || rv == CAIRN_EIO);
    if (rv != 0) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
        FUZZ_CHECK(!error);
    }
    FUZZ_CHECK(s3xmlComplete(s, n, &error2, &why) == rv && error2 == error);
    /* what s3.c does next with an error, and what it must not take for one */
    if (rv != 0 || !error) {
        FUZZ_CHECK(errorOnce(s, n, code, msg, MSG_N) == CAIRN_EIO);
        FUZZ_CHECK(code[0] == '\0' && msg[0] == '\0');
    } else {
        errorOnce(s, n, code, msg, MSG_N);
    }
    return rv;
}

/* ---- text decoding against this target's own reading of the rules ---------------------- */

/* The decoded text of raw[0..n) (text and CDATA sections only) into out (cap bytes);
 * -1 when XML refuses it or when it does not fit out with its NUL. */
static long refDecode(const char *raw, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < n) {
        size_t end, next;
        const char *cd = findBytes(raw + i, n - i, "<![CDATA[", 9);
        if (cd == raw + i) {
            const char *close = findBytes(raw + i + 9, n - i - 9, "]]>", 3);
            FUZZ_CHECK(close != NULL);
            for (const char *c = raw + i + 9; c < close; c++) {
                if (*c == '\0' || o + 1 >= cap) {
                    return -1;
                }
                out[o++] = *c;
            }
            i = (size_t)(close + 3 - raw);
            continue;
        }
        /* a run of text up to the next CDATA section: entities end within it */
        end = cd != NULL ? (size_t)(cd - raw) : n;
        for (; i < end; i = next) {
            unsigned char c = (unsigned char)raw[i];
            char enc[4];
            size_t k = 1;
            enc[0] = (char)c;
            next = i + 1;
            if (c == '\0') {
                return -1;
            }
            if (c == '&') {
                size_t semi = i + 1, len;
                const char *name = raw + i + 1;
                uint32_t cp = 0;
                while (semi < end && semi < i + 12 && raw[semi] != ';') {
                    semi++;
                }
                if (semi >= end || semi >= i + 12) {
                    return -1;
                }
                len = semi - i - 1;
                next = semi + 1;
                if (len == 2 && memcmp(name, "lt", 2) == 0) {
                    enc[0] = '<';
                } else if (len == 2 && memcmp(name, "gt", 2) == 0) {
                    enc[0] = '>';
                } else if (len == 3 && memcmp(name, "amp", 3) == 0) {
                    enc[0] = '&';
                } else if (len == 4 && memcmp(name, "quot", 4) == 0) {
                    enc[0] = '"';
                } else if (len == 4 && memcmp(name, "apos", 4) == 0) {
                    enc[0] = '\'';
                } else if (len >= 2 && name[0] == '#') {
                    bool hex = name[1] == 'x';
                    size_t d = hex ? 2 : 1;
                    if (d == len) {
                        return -1;
                    }
                    for (; d < len; d++) {
                        char ch = name[d];
                        uint32_t v;
                        if (ch >= '0' && ch <= '9') {
                            v = (uint32_t)(ch - '0');
                        } else if (hex && (ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
                            v = (uint32_t)((ch | 0x20) - 'a' + 10);
                        } else {
                            return -1;
                        }
                        cp = cp * (hex ? 16 : 10) + v;
                        if (cp > 0x10FFFF) {
                            return -1;
                        }
                    }
                    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                        return -1;
                    }
                    if (cp < 0x80) {
                        enc[0] = (char)cp;
                    } else if (cp < 0x800) {
                        enc[0] = (char)(0xC0 | (cp >> 6));
                        enc[1] = (char)(0x80 | (cp & 0x3F));
                        k = 2;
                    } else if (cp < 0x10000) {
                        enc[0] = (char)(0xE0 | (cp >> 12));
                        enc[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        enc[2] = (char)(0x80 | (cp & 0x3F));
                        k = 3;
                    } else {
                        enc[0] = (char)(0xF0 | (cp >> 18));
                        enc[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                        enc[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        enc[3] = (char)(0x80 | (cp & 0x3F));
                        k = 4;
                    }
                } else {
                    return -1;
                }
            }
            if (o + k >= cap) {
                return -1;
            }
            memcpy(out + o, enc, k);
            o += k;
        }
    }
    out[o] = '\0';
    return (long)o;
}

static int fuzzText(const char *s, size_t n)
{
    /* the reader's own buffer for a Message is 512 bytes; msg is larger so that only
     * that limit cuts */
    char code[CODE_N], msg[600], want[512];
    struct buf raw, doc;
    long got;
    int rv;
    bufInit(&raw);
    for (size_t i = 0; i < n;) {
        const char *close;
        if (s[i] == '<' && n - i >= 9 && memcmp(s + i, "<![CDATA[", 9) == 0 &&
            (close = findBytes(s + i + 9, n - i - 9, "]]>", 3)) != NULL) {
            bufPut(&raw, s + i, (size_t)(close + 3 - (s + i)));
            i = (size_t)(close + 3 - s);
        } else {
            bufPutc(&raw, s[i] == '<' ? ' ' : s[i]);
            i++;
        }
    }
    bufInit(&doc);
    bufPuts(&doc, "<Error><Message>");
    bufPut(&doc, raw.p != NULL ? raw.p : "", raw.len);
    bufPuts(&doc, "</Message></Error>");
    FUZZ_CHECK(!raw.oom && !doc.oom);
    got = refDecode(raw.p != NULL ? raw.p : "", raw.len, want, sizeof want);
    rv = errorOnce(doc.p, doc.len, code, msg, sizeof msg);
    FUZZ_CHECK(code[0] == '\0');
    if (got < 0) {
        FUZZ_CHECK(rv == CAIRN_EIO);
        FUZZ_CHECK(msg[0] == '\0');
    } else {
        for (char *c = want; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                *c = ' ';
            }
        }
        FUZZ_CHECK(rv == 0);
        FUZZ_CHECK(strcmp(msg, want) == 0);
    }
    bufFree(&raw);
    bufFree(&doc);
    return rv;
}

/* One input: its first byte says what to read the rest as. Returns the reader's code
 * (0 or CAIRN_EIO; CAIRN_ENOMEM from a listing). */
static int fuzzS3xml(const uint8_t *data, size_t size)
{
    const char *s;
    size_t n;
    unsigned flags;
    if (size == 0) {
        return 0;
    }
    flags = data[0];
    s = (const char *)data + 1;
    n = size - 1;
    switch ((flags & 7) % 6) {
    case K_OBJECTS:
        return fuzzList(s, n, false, flags);
    case K_UPLOADS:
        return fuzzList(s, n, true, flags);
    case K_INITIATE:
        return fuzzInitiate(s, n);
    case K_COMPLETE:
        return fuzzComplete(s, n);
    case K_ERROR:
        return fuzzError(s, n);
    default:
        return fuzzText(s, n);
    }
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzS3xml(data, size);
    return 0;
}
#endif
