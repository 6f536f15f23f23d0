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
 *     is accepted;
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

/* A JSON scalar as requestParse stores a parameter: is it the same value? */
static int sameValue(const struct param *p, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        return p->type == CAIRN_INTEGER && p->i == (int64_t)json_integer_value(v);
    case JSON_REAL: {
        double d = json_real_value(v);
        return p->type == CAIRN_FLOAT && memcmp(&p->d, &d, sizeof d) == 0;
    }
    case JSON_STRING:
        return p->type == CAIRN_TEXT &&
               sameText(p->s, p->n, json_string_value(v), json_string_length(v));
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

static int isScalar(const json_t *v)
{
    return !json_is_array(v) && !json_is_object(v);
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
            if (klen == 0 || klen > PARAM_NAME_MAX || !isScalar(v)) {
                return 0; /* cairn refuses names longer than it can bind */
            }
        }
        return 1;
    }
    for (i = 1; i < json_array_size(s); i++) {
        if (!isScalar(json_array_get(s, i))) {
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
            FUZZ_CHECK(x->type != CAIRN_TEXT || sameText(x->s, x->n, y->s, y->n));
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
                       p->type == CAIRN_TEXT || p->type == CAIRN_NULL);
            FUZZ_CHECK(p->name == NULL || (p->name >= lo && p->name + p->name_len <= hi));
            FUZZ_CHECK(p->type != CAIRN_TEXT || p->n == 0 || (p->s >= lo && p->s + p->n <= hi));
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
