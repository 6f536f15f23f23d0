/* libFuzzer target: the JSON request parser (requestParse, src/request.c), the body
 * of every /db/execute, /db/query and /db/request.
 *
 * What the parser promises, and the target checks:
 *   - a refused body gets CAIRN_EINVAL (or CAIRN_ENOMEM), a message, and an empty
 *     batch;
 *   - an accepted body gives statements whose strings all point into the block the
 *     batch owns, with parameter types the rest of cairn knows;
 *   - it agrees with jansson, the JSON library the parser replaced: a body it accepts
 *     is valid JSON to jansson, with the same statements and parameter values, and a
 *     body jansson reads (without duplicate keys) as a well-shaped array of statements
 *     is accepted; BLOB parameters (an array of integers 0 to 255, a string x'...')
 *     are checked against a separate reading of rqlite's rules;
 *   - the batch survives the command encoding the server puts into the log.
 * Any thread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "cairn.h"
#include "command.h"
#include "error.h"
#include "fuzz.h"
#include "request.h"

static int sameText(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Unicode white space, as Go's unicode.IsSpace (rqlite trims it around x'...'). */
static int isGoSpace(uint32_t c)
{
    return c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int hexValue(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* rqlite's reading of a string parameter (db.ParseHex): x'...' with an even number of
 * hex digits, white space around it, is a BLOB. Returns its length into *n and bytes
 * into out (room for len/2), or -1 for text. */
static int hexForm(const char *s, size_t len, unsigned char *out, size_t *n)
{
    const unsigned char *a = (const unsigned char *)s, *e = a + len;
    uint32_t cp;
    size_t k;
    while (a < e && (k = utf8Decode(a, (size_t)(e - a), &cp)) > 0 && isGoSpace(cp)) {
        a += k;
    }
    while (e > a) {
        const unsigned char *q = e - 1;
        while (q > a && (*q & 0xC0) == 0x80) {
            q--;
        }
        if (utf8Decode(q, (size_t)(e - q), &cp) != (size_t)(e - q) || !isGoSpace(cp)) {
            break;
        }
        e = q;
    }
    if (e - a < 3 || (a[0] != 'x' && a[0] != 'X') || a[1] != '\'' || e[-1] != '\'' ||
        (e - a - 3) % 2 != 0) {
        return -1;
    }
    *n = 0;
    for (const unsigned char *h = a + 2; h < e - 1; h += 2) {
        int hi = hexValue((char)h[0]), lo = hexValue((char)h[1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[(*n)++] = (unsigned char)(hi * 16 + lo);
    }
    return 0;
}

/* rqlite's reading of an array parameter: a BLOB when every element is an integer
 * from 0 to 255. */
static int isByteArray(const json_t *v)
{
    size_t i;
    if (!json_is_array(v)) {
        return 0;
    }
    for (i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 255) {
            return 0;
        }
    }
    return 1;
}

/* A JSON value as requestParse stores a parameter: is it the same value? */
static int sameValue(const struct param *p, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        return p->type == CAIRN_INTEGER && p->i == (int64_t)json_integer_value(v);
    case JSON_REAL: {
        double d = json_real_value(v);
        return p->type == CAIRN_FLOAT && memcmp(&p->d, &d, sizeof d) == 0;
    }
    case JSON_STRING: {
        size_t len = json_string_length(v), n;
        unsigned char *bytes = malloc(len / 2 + 1);
        int same;
        FUZZ_CHECK(bytes != NULL);
        if (hexForm(json_string_value(v), len, bytes, &n) == 0) {
            same = p->type == CAIRN_BLOB && sameText(p->s, p->n, (const char *)bytes, n);
        } else {
            same = p->type == CAIRN_TEXT && sameText(p->s, p->n, json_string_value(v), len);
        }
        free(bytes);
        return same;
    }
    case JSON_ARRAY:
        if (!isByteArray(v) || p->type != CAIRN_BLOB || p->n != json_array_size(v)) {
            return 0;
        }
        for (size_t i = 0; i < p->n; i++) {
            if ((unsigned char)p->s[i] != json_integer_value(json_array_get(v, i))) {
                return 0;
            }
        }
        return 1;
    case JSON_TRUE:
        return p->type == CAIRN_INTEGER && p->i == 1;
    case JSON_FALSE:
        return p->type == CAIRN_INTEGER && p->i == 0;
    case JSON_NULL:
        return p->type == CAIRN_NULL;
    default:
        return 0;
    }
}

/* A value that may be a parameter: a scalar or an array of bytes. */
static int isParam(const json_t *v)
{
    return isByteArray(v) || (!json_is_array(v) && !json_is_object(v));
}

/* Is the statement well shaped, as request.h defines it? */
static int stmtShapeOk(const json_t *s)
{
    size_t i;
    if (json_is_string(s)) {
        return json_string_length(s) > 0;
    }
    if (!json_is_array(s) || json_array_size(s) == 0) {
        return 0;
    }
    const json_t *sql = json_array_get(s, 0);
    if (!json_is_string(sql) || json_string_length(sql) == 0) {
        return 0;
    }
    if (json_array_size(s) == 2 && json_is_object(json_array_get(s, 1))) {
        const char *key;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach((json_t *)json_array_get(s, 1), key, klen, v)
        {
            (void)key;
            if (klen == 0 || klen > PARAM_NAME_MAX || !isParam(v)) {
                return 0; /* cairn refuses names longer than it can bind */
            }
        }
        return 1;
    }
    for (i = 1; i < json_array_size(s); i++) {
        if (!isParam(json_array_get(s, i))) {
            return 0;
        }
    }
    return 1;
}

/* The accepted batch b against jansson's reading of the same body. */
static void checkAgainstJansson(const struct batch *b, const json_t *root)
{
    FUZZ_CHECK(json_is_array(root));
    FUZZ_CHECK(json_array_size(root) == b->n);
    for (size_t i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i];
        const json_t *js = json_array_get(root, i);
        const json_t *sql = json_is_array(js) ? json_array_get(js, 0) : js;
        FUZZ_CHECK(stmtShapeOk(js));
        FUZZ_CHECK(sameText(s->sql, s->sql_len, json_string_value(sql), json_string_length(sql)));
        if (json_is_string(js)) {
            FUZZ_CHECK(s->nparams == 0);
            continue;
        }
        const json_t *first = json_array_get(js, 1);
        if (json_array_size(js) == 2 && json_is_object(first)) {
            FUZZ_CHECK(s->nparams == json_object_size(first));
            for (size_t j = 0; j < s->nparams; j++) {
                const struct param *p = &s->params[j];
                FUZZ_CHECK(p->name != NULL && p->name_len > 0);
                const json_t *v = json_object_getn(first, p->name, p->name_len);
                FUZZ_CHECK(v != NULL && sameValue(p, v));
            }
            continue;
        }
        FUZZ_CHECK(s->nparams + 1 == json_array_size(js));
        for (size_t j = 0; j < s->nparams; j++) {
            FUZZ_CHECK(s->params[j].name == NULL);
            FUZZ_CHECK(sameValue(&s->params[j], json_array_get(js, j + 1)));
        }
    }
}

/* The batch as the server logs it: encoded, decoded, and the same again. */
static void checkCommandRoundTrip(const struct batch *b)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct batch copy = *b;
    struct batch back;
    struct buf out;
    copy.kind = BATCH_REQUEST;
    copy.owner = NULL;
    bufInit(&out);
    commandEncode(&copy, &out);
    FUZZ_CHECK(!out.oom);
    FUZZ_CHECK(commandDecode(out.p, out.len, &back, errmsg) == 0);
    FUZZ_CHECK(back.n == b->n);
    for (size_t i = 0; i < b->n; i++) {
        const struct stmt *s = &b->stmts[i], *t = &back.stmts[i];
        FUZZ_CHECK(sameText(s->sql, s->sql_len, t->sql, t->sql_len));
        FUZZ_CHECK(s->nparams == t->nparams);
        for (size_t j = 0; j < s->nparams; j++) {
            const struct param *x = &s->params[j], *y = &t->params[j];
            FUZZ_CHECK(x->type == y->type && sameText(x->name, x->name_len, y->name, y->name_len));
            FUZZ_CHECK((x->type != CAIRN_TEXT && x->type != CAIRN_BLOB) ||
                       sameText(x->s, x->n, y->s, y->n));
            FUZZ_CHECK(x->type != CAIRN_INTEGER || x->i == y->i);
        }
    }
    batchFree(&back);
    bufFree(&out);
}

static int fuzzRequest(const uint8_t *data, size_t size)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    json_error_t jerr;
    struct batch b;
    json_t *root;
    int rv = requestParse((const char *)data, size, &b, errmsg);

    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_EINVAL || rv == CAIRN_ENOMEM);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(b.stmts == NULL && b.n == 0 && b.owner == NULL);
        /* A body jansson reads as well-shaped statements, with no duplicate key
         * anywhere, must not have been refused. Not for a body with a NUL byte:
         * jansson takes a NUL right after a number or a literal ("[3\0]") for the
         * end of the token, where JSON (and requestParse) has an invalid byte. */
        if (memchr(data, '\0', size) != NULL) {
            return rv;
        }
        root = json_loadb((const char *)data, size, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
        if (root != NULL && json_is_array(root) && rv == CAIRN_EINVAL) {
            int ok = 1;
            for (size_t i = 0; i < json_array_size(root) && ok; i++) {
                ok = stmtShapeOk(json_array_get(root, i));
            }
            if (ok) {
                fprintf(stderr, "requestParse refused what jansson accepts: %s\n", errmsg);
            }
            FUZZ_CHECK(!ok);
        }
        json_decref(root);
        return rv;
    }

    /* Everything points into the block the batch owns: the body's copy and its arena. */
    const char *lo = b.owner;
    const char *hi = lo + 2 * size + 1;
    FUZZ_CHECK(b.stmts != NULL && b.owner != NULL && b.params == NULL);
    for (size_t i = 0; i < b.n; i++) {
        const struct stmt *s = &b.stmts[i];
        FUZZ_CHECK(s->sql >= lo && s->sql + s->sql_len <= hi && s->sql_len > 0);
        FUZZ_CHECK(s->nparams == 0 || s->params != NULL);
        for (size_t j = 0; j < s->nparams; j++) {
            const struct param *p = &s->params[j];
            FUZZ_CHECK(p->type == CAIRN_INTEGER || p->type == CAIRN_FLOAT ||
                       p->type == CAIRN_TEXT || p->type == CAIRN_BLOB || p->type == CAIRN_NULL);
            FUZZ_CHECK(p->name == NULL || (p->name >= lo && p->name + p->name_len <= hi));
            FUZZ_CHECK((p->type != CAIRN_TEXT && p->type != CAIRN_BLOB) ||
                       (p->s != NULL && p->s >= lo && p->s + p->n <= hi));
            FUZZ_CHECK(p->type != CAIRN_FLOAT || isfinite(p->d));
        }
    }

    root = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        fprintf(stderr, "requestParse accepted what jansson refuses: %s\n", jerr.text);
    }
    FUZZ_CHECK(root != NULL);
    checkAgainstJansson(&b, root);
    json_decref(root);

    checkCommandRoundTrip(&b);
    batchFree(&b);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzRequest(data, size);
    return 0;
}
#endif
