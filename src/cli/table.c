/* Result formatting for the cairn command: tables, CSV and JSON rows (see table.h).
 *
 * Column widths are measured in terminal columns, not bytes, so a column of "héllo" or
 * "東京" lines up with ASCII text. Control characters inside values are shown escaped in
 * table mode, because a raw newline would break the borders. Main thread only. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "cli.h"
#include "http.h"
#include "table.h"

int cliModeParse(const char *name, cliMode *mode)
{
    if (strcmp(name, "table") == 0) {
        *mode = CLI_MODE_TABLE;
    } else if (strcmp(name, "csv") == 0) {
        *mode = CLI_MODE_CSV;
    } else if (strcmp(name, "json") == 0) {
        *mode = CLI_MODE_JSON;
    } else {
        return CLI_ERR_USAGE;
    }
    return 0;
}

const char *cliModeName(cliMode mode)
{
    switch (mode) {
    case CLI_MODE_CSV:
        return "csv";
    case CLI_MODE_JSON:
        return "json";
    case CLI_MODE_TABLE:
    default:
        return "table";
    }
}

typedef struct range {
    uint32_t lo, hi;
} range;

/* Combining marks and invisible format characters: they take no column of their own. */
static const range zeroWidth[] = {
    {0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD}, {0x0610, 0x061A}, {0x064B, 0x065F},
    {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200F}, {0x202A, 0x202E}, {0x2060, 0x2064},
    {0x20D0, 0x20FF}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xFEFF, 0xFEFF}, {0xE0100, 0xE01EF},
};

/* East Asian Wide and Fullwidth blocks, and the emoji blocks terminals draw two wide. */
static const range doubleWidth[] = {
    {0x1100, 0x115F},   {0x2E80, 0x303E},   {0x3041, 0x33FF},   {0x3400, 0x4DBF},
    {0x4E00, 0x9FFF},   {0xA000, 0xA4CF},   {0xA960, 0xA97F},   {0xAC00, 0xD7A3},
    {0xF900, 0xFAFF},   {0xFE10, 0xFE19},   {0xFE30, 0xFE6F},   {0xFF00, 0xFF60},
    {0xFFE0, 0xFFE6},   {0x16FE0, 0x16FE4}, {0x17000, 0x18CFF}, {0x1B000, 0x1B2FF},
    {0x1F300, 0x1F64F}, {0x1F680, 0x1F6FF}, {0x1F900, 0x1F9FF}, {0x1FA70, 0x1FAFF},
    {0x20000, 0x2FFFD}, {0x30000, 0x3FFFD},
};

static int inRanges(const range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo) {
            hi = mid;
        } else if (cp > r[mid].hi) {
            lo = mid + 1;
        } else {
            return 1;
        }
    }
    return 0;
}

size_t cliDisplayWidth(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t width = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8Decode(p + i, len - i, &cp);
        if (n == 0) {
            width++;
            i++;
            continue;
        }
        i += n;
        if (inRanges(zeroWidth, sizeof zeroWidth / sizeof zeroWidth[0], cp)) {
            continue;
        }
        width += inRanges(doubleWidth, sizeof doubleWidth / sizeof doubleWidth[0], cp) ? 2 : 1;
    }
    return width;
}

/* Formats d in the fewest digits that parse back to the same double, the way SQLite's
 * shell does; a whole number keeps a ".0" so it still reads as a real. */
static void formatReal(double d, char *out, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, d);
        if (strtod(out, NULL) == d) {
            break;
        }
    }
    if (strspn(out, "-0123456789") == strlen(out)) {
        size_t n = strlen(out);
        if (n + 3 <= size) {
            memcpy(out + n, ".0", 3);
        }
    }
}

char *cliValueText(const json_t *v)
{
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_NULL:
        return strdup("NULL");
    case JSON_STRING:
        return strndup(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return strdup(buf);
    case JSON_REAL:
        formatReal(json_real_value(v), buf, sizeof buf);
        return strdup(buf);
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    default:
        return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
}

/* True when a column's type gives REAL affinity (SQLite's rule: the declared type
 * contains REAL, FLOA or DOUB). Such a column stores 2.0 as a real, but JSON writers
 * (cairnd's, like rqlite's) print it as 2, which would read back as an integer. */
static int isRealColumn(const json_t *types, size_t c)
{
    const char *t = json_string_value(json_array_get(types, c));
    if (t == NULL) {
        return 0;
    }
    for (; *t != '\0'; t++) {
        if (strncasecmp(t, "REAL", 4) == 0 || strncasecmp(t, "FLOA", 4) == 0 ||
            strncasecmp(t, "DOUB", 4) == 0) {
            return 1;
        }
    }
    return 0;
}

/* cliValueText, except that an integer in a REAL column is shown as the real it is. */
static char *cellText(const json_t *v, int realColumn)
{
    if (realColumn && json_is_integer(v)) {
        char buf[64];
        formatReal((double)json_integer_value(v), buf, sizeof buf);
        return strdup(buf);
    }
    return cliValueText(v);
}

/* Returns text with control characters written as escapes (\n, \t, \r, \xNN). Takes
 * ownership of text; returns a malloc'd string, NULL when out of memory. */
static char *escapeControls(char *text)
{
    cliBuf b = {0};
    const unsigned char *p = (const unsigned char *)text;
    if (strcspn(text, "\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12"
                      "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") == strlen(text)) {
        return text;
    }
    for (; *p != '\0'; p++) {
        char esc[8];
        int rc;
        if (*p == '\n') {
            rc = cliBufAppend(&b, "\\n", 2);
        } else if (*p == '\t') {
            rc = cliBufAppend(&b, "\\t", 2);
        } else if (*p == '\r') {
            rc = cliBufAppend(&b, "\\r", 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            rc = cliBufAppend(&b, esc, 4);
        } else {
            rc = cliBufAppend(&b, p, 1);
        }
        if (rc != 0) {
            cliBufFree(&b);
            free(text);
            return NULL;
        }
    }
    free(text);
    return b.data;
}

static int isNumber(const json_t *v)
{
    return json_is_integer(v) || json_is_real(v);
}

static void putRepeat(FILE *out, char c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fputc(c, out);
    }
}

static void putBorder(FILE *out, const size_t *widths, size_t ncols)
{
    for (size_t c = 0; c < ncols; c++) {
        fputc('+', out);
        putRepeat(out, '-', widths[c] + 2);
    }
    fputs("+\n", out);
}

static void putCell(FILE *out, const char *text, size_t width, size_t colWidth, int right)
{
    fputs("| ", out);
    if (right) {
        putRepeat(out, ' ', colWidth - width);
    }
    fputs(text, out);
    if (!right) {
        putRepeat(out, ' ', colWidth - width);
    }
    fputc(' ', out);
}

/* Table mode: every cell is rendered once, measured, then printed padded. */
static int printTable(FILE *out, const json_t *columns, const json_t *types, const json_t *values,
                      char *errmsg, size_t errmsgSize)
{
    size_t ncols = json_array_size(columns);
    size_t nrows = json_array_size(values);
    size_t *widths = calloc(ncols, sizeof *widths);
    char **cells = calloc(nrows * ncols + 1, sizeof *cells);
    size_t *cellWidths = calloc(nrows * ncols + 1, sizeof *cellWidths);
    int rc = 0;

    if (widths == NULL || cells == NULL || cellWidths == NULL) {
        rc = CLI_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t c = 0; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(columns, c));
        widths[c] = name != NULL ? cliDisplayWidth(name, strlen(name)) : 0;
    }
    for (size_t r = 0; r < nrows; r++) {
        const json_t *row = json_array_get(values, r);
        if (!json_is_array(row)) {
            snprintf(errmsg, errmsgSize, "row %zu of the response is not an array", r);
            rc = CLI_ERR_PROTO;
            goto cleanup;
        }
        for (size_t c = 0; c < ncols; c++) {
            const json_t *v = json_array_get(row, c);
            char *text = v != NULL ? cellText(v, isRealColumn(types, c)) : strdup("");
            size_t i = r * ncols + c;
            if (text == NULL || (cells[i] = escapeControls(text)) == NULL) {
                rc = CLI_ERR_NOMEM;
                goto cleanup;
            }
            cellWidths[i] = cliDisplayWidth(cells[i], strlen(cells[i]));
            if (cellWidths[i] > widths[c]) {
                widths[c] = cellWidths[i];
            }
        }
    }

    putBorder(out, widths, ncols);
    for (size_t c = 0; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(columns, c));
        if (name == NULL) {
            name = "";
        }
        putCell(out, name, cliDisplayWidth(name, strlen(name)), widths[c], 0);
    }
    fputs("|\n", out);
    putBorder(out, widths, ncols);
    if (nrows > 0) {
        for (size_t r = 0; r < nrows; r++) {
            const json_t *row = json_array_get(values, r);
            for (size_t c = 0; c < ncols; c++) {
                size_t i = r * ncols + c;
                putCell(out, cells[i], cellWidths[i], widths[c], isNumber(json_array_get(row, c)));
            }
            fputs("|\n", out);
        }
        putBorder(out, widths, ncols);
    }

cleanup:
    if (rc == CLI_ERR_NOMEM) {
        snprintf(errmsg, errmsgSize, "out of memory formatting %zu rows", nrows);
    }
    if (cells != NULL) {
        for (size_t i = 0; i < nrows * ncols; i++) {
            free(cells[i]);
        }
    }
    free(cells);
    free(cellWidths);
    free(widths);
    return rc;
}

static void putCsvField(FILE *out, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL && s[0] != ' ' && (s[0] == '\0' || s[strlen(s) - 1] != ' ')) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s != '\0'; s++) {
        if (*s == '"') {
            fputc('"', out);
        }
        fputc(*s, out);
    }
    fputc('"', out);
}

static int printCsv(FILE *out, const json_t *columns, const json_t *types, const json_t *values)
{
    size_t ncols = json_array_size(columns);
    for (size_t c = 0; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(columns, c));
        if (c > 0) {
            fputc(',', out);
        }
        putCsvField(out, name != NULL ? name : "");
    }
    fputc('\n', out);
    for (size_t r = 0; r < json_array_size(values); r++) {
        const json_t *row = json_array_get(values, r);
        for (size_t c = 0; c < ncols; c++) {
            const json_t *v = json_array_get(row, c);
            char *text;
            if (c > 0) {
                fputc(',', out);
            }
            /* An empty field is how CSV tools spell NULL; "NULL" would read back as text. */
            if (v == NULL || json_is_null(v)) {
                continue;
            }
            text = cellText(v, isRealColumn(types, c));
            if (text == NULL) {
                return CLI_ERR_NOMEM;
            }
            putCsvField(out, text);
            free(text);
        }
        fputc('\n', out);
    }
    return 0;
}

/* Writes v as JSON. Reals go through formatReal() because jansson prints 17 significant
 * digits, which shows 0.1 as 0.10000000000000001. */
static int putJsonValue(FILE *out, const json_t *v, int realColumn)
{
    char buf[64];
    char *text;
    if (json_is_real(v) || (realColumn && json_is_integer(v))) {
        formatReal(json_is_real(v) ? json_real_value(v) : (double)json_integer_value(v), buf,
                   sizeof buf);
        fputs(buf, out);
        return 0;
    }
    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        return CLI_ERR_NOMEM;
    }
    fputs(text, out);
    free(text);
    return 0;
}

static int printJsonRows(FILE *out, const json_t *columns, const json_t *types,
                         const json_t *values)
{
    size_t ncols = json_array_size(columns);
    size_t nrows = json_array_size(values);
    fputc('[', out);
    for (size_t r = 0; r < nrows; r++) {
        const json_t *row = json_array_get(values, r);
        fputs(r > 0 ? ",\n{" : "{", out);
        for (size_t c = 0; c < ncols; c++) {
            const json_t *v = json_array_get(row, c);
            if (c > 0) {
                fputc(',', out);
            }
            if (putJsonValue(out, json_array_get(columns, c), 0) != 0) {
                return CLI_ERR_NOMEM;
            }
            fputc(':', out);
            if (v == NULL) {
                fputs("null", out);
            } else if (putJsonValue(out, v, isRealColumn(types, c)) != 0) {
                return CLI_ERR_NOMEM;
            }
        }
        fputc('}', out);
    }
    fputs("]\n", out);
    return 0;
}

int cliTablePrint(FILE *out, const json_t *result, cliMode mode, char *errmsg, size_t errmsgSize)
{
    const json_t *columns = json_object_get(result, "columns");
    const json_t *values = json_object_get(result, "values");
    const json_t *types = json_object_get(result, "types"); /* optional */
    int rc;

    if (columns == NULL) {
        return 0;
    }
    if (!json_is_array(columns) || (values != NULL && !json_is_array(values))) {
        snprintf(errmsg, errmsgSize, "malformed query result: columns or values not arrays");
        return CLI_ERR_PROTO;
    }
    switch (mode) {
    case CLI_MODE_CSV:
        rc = printCsv(out, columns, types, values);
        break;
    case CLI_MODE_JSON:
        rc = printJsonRows(out, columns, types, values);
        break;
    case CLI_MODE_TABLE:
    default:
        return printTable(out, columns, types, values, errmsg, errmsgSize);
    }
    if (rc == CLI_ERR_NOMEM) {
        snprintf(errmsg, errmsgSize, "out of memory formatting the result");
    }
    return rc;
}
