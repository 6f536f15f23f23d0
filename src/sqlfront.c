/* The SQL front (see sqlfront.h): a small tokenizer and a recursive descent over
 * cairn's three statements. Pure code; any thread. */
#include "sqlfront.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backup.h"
#include "cairn.h"
#include "error.h"
#include "lib.h"

enum tok_kind { TOK_END, TOK_WORD, TOK_STRING, TOK_NUMBER, TOK_SEMI, TOK_OTHER, TOK_BAD };

struct lexer {
    const char *p;
    size_t n;
    size_t off;
    /* The current token. */
    int kind;
    size_t start;
    size_t len;           /* of the word, or of the raw string literal */
    char *errmsg;
};

/* Skip whitespace and comments. */
static void skipSpace(struct lexer *lx)
{
    for (;;) {
        while (lx->off < lx->n && isspace((unsigned char)lx->p[lx->off])) {
            lx->off++;
        }
        if (lx->off + 1 < lx->n && lx->p[lx->off] == '-' && lx->p[lx->off + 1] == '-') {
            while (lx->off < lx->n && lx->p[lx->off] != '\n') {
                lx->off++;
            }
            continue;
        }
        if (lx->off + 1 < lx->n && lx->p[lx->off] == '/' && lx->p[lx->off + 1] == '*') {
            size_t end = lx->off + 2;
            while (end + 1 < lx->n && !(lx->p[end] == '*' && lx->p[end + 1] == '/')) {
                end++;
            }
            lx->off = end + 1 < lx->n ? end + 2 : lx->n;
            continue;
        }
        return;
    }
}

static void next(struct lexer *lx)
{
    skipSpace(lx);
    lx->start = lx->off;
    if (lx->off >= lx->n) {
        lx->kind = TOK_END;
        lx->len = 0;
        return;
    }
    char c = lx->p[lx->off];
    if (isalpha((unsigned char)c) || c == '_') {
        while (lx->off < lx->n &&
               (isalnum((unsigned char)lx->p[lx->off]) || lx->p[lx->off] == '_')) {
            lx->off++;
        }
        lx->kind = TOK_WORD;
    } else if (isdigit((unsigned char)c)) {
        while (lx->off < lx->n && isalnum((unsigned char)lx->p[lx->off])) {
            lx->off++; /* "12ab" is one (bad) number, not 12 then a word */
        }
        lx->kind = TOK_NUMBER;
    } else if (c == '\'') {
        lx->off++;
        for (;;) {
            if (lx->off >= lx->n) {
                lx->kind = TOK_BAD;
                lx->len = lx->off - lx->start;
                return;
            }
            if (lx->p[lx->off] == '\'') {
                if (lx->off + 1 < lx->n && lx->p[lx->off + 1] == '\'') {
                    lx->off += 2;
                    continue;
                }
                lx->off++;
                break;
            }
            lx->off++;
        }
        lx->kind = TOK_STRING;
    } else if (c == '"' || c == '`' || c == '[') {
        /* A quoted identifier: skipped whole, so that a ';' inside it is no boundary. */
        char close = c == '[' ? ']' : c;
        lx->off++;
        while (lx->off < lx->n && lx->p[lx->off] != close) {
            lx->off++;
        }
        lx->off = lx->off < lx->n ? lx->off + 1 : lx->n;
        lx->kind = TOK_OTHER;
    } else if (c == ';') {
        lx->off++;
        lx->kind = TOK_SEMI;
    } else {
        lx->off++;
        lx->kind = TOK_OTHER;
    }
    lx->len = lx->off - lx->start;
}

static bool isWord(const struct lexer *lx, const char *w)
{
    return lx->kind == TOK_WORD && lx->len == strlen(w) &&
           strncasecmp(lx->p + lx->start, w, lx->len) == 0;
}

/* Describe the current token for an error message. */
static void describe(const struct lexer *lx, char *out, size_t size)
{
    switch (lx->kind) {
        case TOK_END:
            snprintf(out, size, "end of statement");
            break;
        case TOK_BAD:
            snprintf(out, size, "unterminated string at offset %zu", lx->start);
            break;
        default:
            snprintf(out, size, "\"%.*s\" at offset %zu", (int)(lx->len > 40 ? 40 : lx->len),
                     lx->p + lx->start, lx->start);
            break;
    }
}

static int fail(struct lexer *lx, const char *statement, const char *expected)
{
    char got[96];
    describe(lx, got, sizeof got);
    errorf(lx->errmsg, "malformed %s statement: expected %s, found %s", statement, expected,
           got);
    return CAIRN_EINVAL;
}

/* Copy the current string literal's value (quotes removed, '' unescaped) into out. */
static int takeString(struct lexer *lx, const char *statement, const char *what, char *out,
                      size_t size)
{
    size_t j = 0;
    if (lx->kind != TOK_STRING) {
        return fail(lx, statement, what);
    }
    for (size_t i = lx->start + 1; i + 1 < lx->start + lx->len; i++) {
        if (lx->p[i] == '\'') {
            i++; /* the second quote of '' */
        }
        if (lx->p[i] == '\0') {
            errorf(lx->errmsg, "malformed %s statement: %s contains a NUL byte", statement,
                   what);
            return CAIRN_EINVAL;
        }
        if (j + 1 >= size) {
            errorf(lx->errmsg, "malformed %s statement: %s is longer than %zu bytes",
                   statement, what, size - 1);
            return CAIRN_EINVAL;
        }
        out[j++] = lx->p[i];
    }
    out[j] = '\0';
    if (j == 0) {
        errorf(lx->errmsg, "malformed %s statement: %s is empty", statement, what);
        return CAIRN_EINVAL;
    }
    next(lx);
    return 0;
}

/* After the statement: an optional semicolon, then nothing. */
static int expectEnd(struct lexer *lx, const char *statement, const char *expected)
{
    if (lx->kind == TOK_SEMI) {
        next(lx);
        if (lx->kind != TOK_END) {
            return fail(lx, statement, "nothing after the semicolon (send other statements "
                                       "as separate requests)");
        }
        return 0;
    }
    if (lx->kind != TOK_END) {
        return fail(lx, statement, expected);
    }
    return 0;
}

static int parseBackup(struct lexer *lx, struct sqlfront_cmd *cmd)
{
    static const char *const S = "BACKUP";
    int rv;
    next(lx);
    if (!isWord(lx, "DATABASE")) {
        return fail(lx, S, "DATABASE after BACKUP");
    }
    next(lx);
    cmd->kind = SQLFRONT_BACKUP;
    cmd->backup_type = BACKUP_FULL;
    if (isWord(lx, "FULL")) {
        next(lx);
    } else if (isWord(lx, "INCREMENTAL")) {
        cmd->backup_type = BACKUP_INCREMENTAL;
        next(lx);
    } else if (isWord(lx, "DIFFERENTIAL")) {
        cmd->backup_type = BACKUP_DIFFERENTIAL;
        next(lx);
    }
    if (isWord(lx, "TO")) {
        next(lx);
        if ((rv = takeString(lx, S, "a quoted directory after TO", cmd->to, sizeof cmd->to)) !=
            0) {
            return rv;
        }
    }
    return expectEnd(lx, S, "FULL, INCREMENTAL, DIFFERENTIAL, TO 'repository' or the end");
}

/* AS OF {'time' | 'latest' | INDEX n}, the current token being the one after OF. */
static int parseAsOf(struct lexer *lx, struct sqlfront_cmd *cmd)
{
    static const char *const S = "RESTORE";
    char text[LIB_ISO8601_SIZE * 2];
    int rv;
    if (isWord(lx, "INDEX")) {
        char digits[24];
        next(lx);
        /* The text is not NUL-terminated: the token is copied before it is looked at. */
        if (lx->kind != TOK_NUMBER || lx->len >= sizeof digits) {
            return fail(lx, S, "a log index (digits) after AS OF INDEX");
        }
        memcpy(digits, lx->p + lx->start, lx->len);
        digits[lx->len] = '\0';
        if (strspn(digits, "0123456789") < lx->len) {
            return fail(lx, S, "a log index (digits) after AS OF INDEX");
        }
        cmd->asof = SQLFRONT_ASOF_INDEX;
        cmd->asof_index = strtoull(digits, NULL, 10);
        if (cmd->asof_index == 0 || lx->len > 19) {
            errorf(lx->errmsg, "malformed %s statement: AS OF INDEX %s is not an index "
                               "(1 to 19 digits, not 0)", S, digits);
            return CAIRN_EINVAL;
        }
        next(lx);
        return 0;
    }
    if (lx->kind != TOK_STRING) {
        return fail(lx, S, "'ISO-8601 time', 'latest' or INDEX n after AS OF");
    }
    if ((rv = takeString(lx, S, "the time after AS OF", text, sizeof text)) != 0) {
        return rv;
    }
    if (strcasecmp(text, "latest") == 0) {
        cmd->asof = SQLFRONT_ASOF_LATEST;
        return 0;
    }
    if (libParseIso8601(text, &cmd->asof_ms) != 0) {
        errorf(lx->errmsg, "malformed %s statement: AS OF '%s' is not a time (ISO-8601 in "
                           "UTC, e.g. '2026-12-02T10:02:00Z'), 'latest' or INDEX n", S, text);
        return CAIRN_EINVAL;
    }
    cmd->asof = SQLFRONT_ASOF_TIME;
    return 0;
}

/* A branch name, quoted or bare as SQL writes identifiers (TO BRANCH dev, DROP BRANCH
 * dev), into cmd->branch, checked. */
static int takeBranch(struct lexer *lx, const char *statement, const char *what,
                      struct sqlfront_cmd *cmd)
{
    int rv;
    if (lx->kind == TOK_WORD) {
        if (lx->len >= sizeof cmd->branch) {
            return fail(lx, statement, "a branch name of at most 64 characters");
        }
        memcpy(cmd->branch, lx->p + lx->start, lx->len);
        cmd->branch[lx->len] = '\0';
        next(lx);
    } else if ((rv = takeString(lx, statement, what, cmd->branch, 64 + 1)) != 0) {
        return rv; /* 64: the longest name (sqlfrontBranchNameValid), so told of */
    }
    return sqlfrontBranchNameValid(cmd->branch, lx->errmsg) ? 0 : CAIRN_EINVAL;
}

static int parseRestore(struct lexer *lx, struct sqlfront_cmd *cmd)
{
    static const char *const S = "RESTORE";
    int rv;
    next(lx);
    if (!isWord(lx, "DATABASE")) {
        return fail(lx, S, "DATABASE after RESTORE");
    }
    next(lx);
    if (!isWord(lx, "FROM")) {
        return fail(lx, S, "FROM 'backup id' after RESTORE DATABASE");
    }
    next(lx);
    if ((rv = takeString(lx, S, "a quoted backup id after FROM", cmd->id, sizeof cmd->id)) != 0) {
        return rv;
    }
    cmd->kind = SQLFRONT_RESTORE;
    if (isWord(lx, "TO")) {
        next(lx);
        if (!isWord(lx, "BRANCH")) {
            return fail(lx, S, "BRANCH after TO");
        }
        next(lx);
        if (isWord(lx, "AS")) {
            return fail(lx, S, "a branch name after TO BRANCH");
        }
        if ((rv = takeBranch(lx, S, "a branch name after TO BRANCH", cmd)) != 0) {
            return rv;
        }
    }
    if (isWord(lx, "AS")) {
        next(lx);
        if (!isWord(lx, "OF")) {
            return fail(lx, S, "OF after AS");
        }
        next(lx);
        if ((rv = parseAsOf(lx, cmd)) != 0) {
            return rv;
        }
    }
    return expectEnd(lx, S, cmd->asof != SQLFRONT_ASOF_NONE
                                ? "the end of the statement"
                                : "TO BRANCH 'name', AS OF or the end");
}

static int parseDropBranch(struct lexer *lx, struct sqlfront_cmd *cmd)
{
    static const char *const S = "DROP BRANCH";
    int rv;
    next(lx); /* BRANCH */
    if ((rv = takeBranch(lx, S, "a branch name after DROP BRANCH", cmd)) != 0) {
        return rv;
    }
    cmd->kind = SQLFRONT_DROP_BRANCH;
    return expectEnd(lx, S, "the end of the statement");
}

int sqlfrontParse(const char *sql, size_t n, struct sqlfront_cmd *cmd, char *errmsg)
{
    struct lexer lx = {sql, n, 0, TOK_END, 0, 0, errmsg};
    /* Only a cairn statement fills the (large) struct: this runs on every statement. */
    cmd->kind = SQLFRONT_NONE;
    /* Empty statements before it, as SQLite allows: "; BACKUP DATABASE" is one. */
    do {
        next(&lx);
    } while (lx.kind == TOK_SEMI);
    if (isWord(&lx, "BACKUP")) {
        memset(cmd, 0, sizeof *cmd);
        return parseBackup(&lx, cmd);
    }
    if (isWord(&lx, "RESTORE")) {
        memset(cmd, 0, sizeof *cmd);
        return parseRestore(&lx, cmd);
    }
    if (isWord(&lx, "DROP")) {
        struct lexer peek = lx;
        next(&peek);
        if (isWord(&peek, "BRANCH")) {
            memset(cmd, 0, sizeof *cmd);
            return parseDropBranch(&peek, cmd);
        }
    }
    /* Not ours: but a later statement of the same string may be, and SQLite would only
     * call it a syntax error. */
    while (lx.kind != TOK_END) {
        next(&lx);
        if (lx.kind != TOK_SEMI) {
            continue;
        }
        do {
            next(&lx);
        } while (lx.kind == TOK_SEMI);
        struct lexer peek = lx;
        next(&peek);
        if (isWord(&lx, "BACKUP") || isWord(&lx, "RESTORE") ||
            (isWord(&lx, "DROP") && isWord(&peek, "BRANCH"))) {
            errorf(errmsg, "%.*s at offset %zu is a cairn statement: send it as the only "
                           "statement of its request, not after other SQL",
                   (int)lx.len, lx.p + lx.start, lx.start);
            return CAIRN_EINVAL;
        }
    }
    return 0;
}

bool sqlfrontBranchNameValid(const char *name, char *errmsg)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64) {
        errorf(errmsg, "branch name must be 1 to 64 characters, got %zu", n);
        return false;
    }
    if (name[0] == '-') {
        errorf(errmsg, "branch name \"%s\" must not start with '-'", name);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isalnum(c) || c == '_' || c == '-')) {
            errorf(errmsg, "branch name \"%.64s\" has '%c' at position %zu: use letters, digits, "
                           "'_' and '-'", name, isprint(c) ? c : '?', i + 1);
            return false;
        }
    }
    return true;
}
