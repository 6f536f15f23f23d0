/* libFuzzer target: the SQL front (sqlfrontParse, src/sqlfront.c), which sees the text
 * of every statement before SQLite does and recognises BACKUP DATABASE, RESTORE
 * DATABASE and DROP BRANCH.
 *
 * The input is the statement's text, not NUL-terminated (as the parser receives it).
 * What the parser promises, and the target checks:
 *   - 0 with SQLFRONT_NONE, or 0 with a kind and its fields set, or CAIRN_EINVAL with
 *     a message;
 *   - the fields of a cairn statement are NUL-terminated within their buffers, a
 *     RESTORE has a non-empty id, and a branch name is a valid one;
 *   - parsing is a function of the text: the same text parsed again (into a struct
 *     filled with other garbage) gives the same answer.
 * Any thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "cairn.h"
#include "error.h"
#include "fuzz.h"
#include "sqlfront.h"

static int terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

static int fuzzSqlfront(const uint8_t *data, size_t size)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char errmsg2[CAIRN_ERRMSG_SIZE] = "";
    char why[CAIRN_ERRMSG_SIZE];
    /* Two results, each filled with different garbage first: large, so on the heap. */
    struct sqlfront_cmd *cmd = malloc(2 * sizeof *cmd);
    int rv, rv2;

    FUZZ_CHECK(cmd != NULL);
    memset(&cmd[0], 0xa5, sizeof *cmd);
    memset(&cmd[1], 0x5a, sizeof *cmd);
    rv = sqlfrontParse((const char *)data, size, &cmd[0], errmsg);
    rv2 = sqlfrontParse((const char *)data, size, &cmd[1], errmsg2);
    FUZZ_CHECK(rv == rv2);
    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_EINVAL);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(strcmp(errmsg, errmsg2) == 0);
        goto out;
    }
    FUZZ_CHECK(cmd[0].kind == cmd[1].kind);
    switch (cmd[0].kind) {
    case SQLFRONT_NONE:
        break;
    case SQLFRONT_BACKUP:
        FUZZ_CHECK(cmd[0].backup_type == BACKUP_FULL || cmd[0].backup_type == BACKUP_INCREMENTAL ||
                   cmd[0].backup_type == BACKUP_DIFFERENTIAL);
        FUZZ_CHECK(terminated(cmd[0].to, sizeof cmd[0].to));
        FUZZ_CHECK(cmd[0].id[0] == '\0' && cmd[0].branch[0] == '\0');
        break;
    case SQLFRONT_RESTORE:
        FUZZ_CHECK(terminated(cmd[0].id, sizeof cmd[0].id) && cmd[0].id[0] != '\0');
        FUZZ_CHECK(terminated(cmd[0].branch, sizeof cmd[0].branch));
        FUZZ_CHECK(cmd[0].branch[0] == '\0' || sqlfrontBranchNameValid(cmd[0].branch, why));
        FUZZ_CHECK(cmd[0].to[0] == '\0');
        break;
    case SQLFRONT_DROP_BRANCH:
        FUZZ_CHECK(terminated(cmd[0].branch, sizeof cmd[0].branch));
        FUZZ_CHECK(sqlfrontBranchNameValid(cmd[0].branch, why));
        FUZZ_CHECK(cmd[0].to[0] == '\0' && cmd[0].id[0] == '\0');
        break;
    default:
        FUZZ_CHECK(!"unknown kind");
    }
    if (cmd[0].kind != SQLFRONT_NONE) {
        FUZZ_CHECK(cmd[0].backup_type == cmd[1].backup_type);
        FUZZ_CHECK(strcmp(cmd[0].to, cmd[1].to) == 0 && strcmp(cmd[0].id, cmd[1].id) == 0 &&
                   strcmp(cmd[0].branch, cmd[1].branch) == 0);
    }
out:
    free(cmd);
    return rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzSqlfront(data, size);
    return 0;
}
#endif
