/* JSON request bodies to batches (see request.h). HTTP threads. */
#include "request.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "error.h"

static void jsonOwnerFree(void *owner)
{
    json_decref((json_t *)owner);
}

static const char *jsonTypeName(const json_t *v)
{
    switch (json_typeof(v)) {
        case JSON_OBJECT:
            return "object";
        case JSON_ARRAY:
            return "array";
        case JSON_STRING:
            return "string";
        case JSON_INTEGER:
            return "integer";
        case JSON_REAL:
            return "real";
        case JSON_TRUE:
        case JSON_FALSE:
            return "boolean";
        default:
            return "null";
    }
}

/* Convert one JSON scalar to a parameter. */
static int paramFromJson(const json_t *v, struct param *p, size_t stmt, const char *where,
                         char *errmsg)
{
    switch (json_typeof(v)) {
        case JSON_INTEGER:
            p->type = CAIRN_INTEGER;
            p->i = json_integer_value(v);
            return 0;
        case JSON_REAL:
            p->type = CAIRN_FLOAT;
            p->d = json_real_value(v);
            return 0;
        case JSON_STRING:
            p->type = CAIRN_TEXT;
            p->s = json_string_value(v);
            p->n = json_string_length(v);
            return 0;
        case JSON_TRUE:
        case JSON_FALSE:
            p->type = CAIRN_INTEGER;
            p->i = json_is_true(v) ? 1 : 0;
            return 0;
        case JSON_NULL:
            p->type = CAIRN_NULL;
            return 0;
        default:
            errorf(errmsg,
                   "statement %zu: parameter %s has unsupported type %s (expected a number, "
                   "string, boolean or null)",
                   stmt, where, jsonTypeName(v));
            return CAIRN_EINVAL;
    }
}

static int stmtFromJson(json_t *el, struct stmt *s, size_t no, char *errmsg)
{
    json_t *sql;
    size_t n;
    size_t i;
    char where[64];

    if (json_is_string(el)) {
        sql = el;
        n = 1;
    } else if (json_is_array(el)) {
        n = json_array_size(el);
        if (n == 0) {
            errorf(errmsg, "statement %zu is an empty array: expected [\"SQL\", params...]", no);
            return CAIRN_EINVAL;
        }
        sql = json_array_get(el, 0);
        if (!json_is_string(sql)) {
            errorf(errmsg, "statement %zu: the first element must be the SQL string, not %s",
                   no, jsonTypeName(sql));
            return CAIRN_EINVAL;
        }
    } else {
        errorf(errmsg, "statement %zu has type %s: expected a string or an array", no,
               jsonTypeName(el));
        return CAIRN_EINVAL;
    }
    s->sql = json_string_value(sql);
    s->sql_len = json_string_length(sql);
    if (s->sql_len == 0) {
        errorf(errmsg, "statement %zu is empty", no);
        return CAIRN_EINVAL;
    }
    if (n == 1) {
        return 0;
    }

    /* Named parameters: exactly one object after the SQL. */
    if (n == 2 && json_is_object(json_array_get(el, 1))) {
        json_t *obj = json_array_get(el, 1);
        const char *key;
        json_t *v;
        if (batchParams(s, json_object_size(obj)) != 0) {
            errorf(errmsg, "out of memory");
            return CAIRN_ENOMEM;
        }
        i = 0;
        json_object_foreach(obj, key, v)
        {
            struct param *p = &s->params[i++];
            p->name = key;
            p->name_len = strlen(key);
            if (p->name_len == 0) {
                errorf(errmsg, "statement %zu: a named parameter has an empty name", no);
                return CAIRN_EINVAL;
            }
            snprintf(where, sizeof where, "\"%.40s\"", key);
            if (paramFromJson(v, p, no, where, errmsg) != 0) {
                return CAIRN_EINVAL;
            }
        }
        return 0;
    }

    if (batchParams(s, n - 1) != 0) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    for (i = 1; i < n; i++) {
        snprintf(where, sizeof where, "%zu", i);
        if (paramFromJson(json_array_get(el, i), &s->params[i - 1], no, where, errmsg) != 0) {
            return CAIRN_EINVAL;
        }
    }
    return 0;
}

int requestParse(const char *body, size_t len, struct batch *b, char *errmsg)
{
    json_error_t jerr;
    json_t *root;
    size_t i;
    int rv;

    memset(b, 0, sizeof *b);
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        errorf(errmsg, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
               jerr.text);
        return CAIRN_EINVAL;
    }
    b->owner = root;
    b->owner_free = jsonOwnerFree;
    if (!json_is_array(root)) {
        errorf(errmsg, "request body must be a JSON array of statements, not %s",
               jsonTypeName(root));
        batchFree(b);
        return CAIRN_EINVAL;
    }
    if (batchAlloc(b, json_array_size(root)) != 0) {
        errorf(errmsg, "out of memory");
        batchFree(b);
        return CAIRN_ENOMEM;
    }
    for (i = 0; i < b->n; i++) {
        rv = stmtFromJson(json_array_get(root, i), &b->stmts[i], i + 1, errmsg);
        if (rv != 0) {
            batchFree(b);
            return rv;
        }
    }
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
