/* The SQL front: cairn's own statements, recognised before SQLite sees a batch.
 *
 *   BACKUP DATABASE [FULL | INCREMENTAL | DIFFERENTIAL] [TO 'repository']
 *   RESTORE DATABASE FROM 'id' [TO BRANCH 'name']
 *   RESTORE DATABASE FROM 'repository' [TO BRANCH 'name']
 *       AS OF {'ISO-8601 time' | INDEX n | 'latest'}
 *   DROP BRANCH 'name'
 *
 * Keywords are case-insensitive; whitespace, comments and one trailing semicolon are
 * allowed; strings are SQL literals ('' inside is a quote). SQLite has no BACKUP or
 * RESTORE statement and no DROP BRANCH, so a statement that starts with them is
 * cairn's or malformed, never a user's SQLite statement. Pure code; any thread. */
#ifndef CAIRN_SQLFRONT_H
#define CAIRN_SQLFRONT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sqlfront_kind {
    SQLFRONT_NONE = 0,   /* not a cairn statement: SQLite runs it */
    SQLFRONT_BACKUP,
    SQLFRONT_RESTORE,
    SQLFRONT_DROP_BRANCH
};

#define SQLFRONT_NAME_MAX 128

/* RESTORE ... AS OF: a point of the repository's continuous archive (pitr.h). */
enum sqlfront_asof {
    SQLFRONT_ASOF_NONE = 0, /* a plain restore of backup `id` */
    SQLFRONT_ASOF_LATEST,   /* AS OF 'latest': the archive's head */
    SQLFRONT_ASOF_INDEX,    /* AS OF INDEX n */
    SQLFRONT_ASOF_TIME      /* AS OF 'ISO-8601 time' */
};

struct sqlfront_cmd {
    int kind;
    int backup_type;                /* BACKUP_FULL etc. (backup.h) */
    char to[PATH_MAX];              /* BACKUP ... TO: "" when absent */
    char id[PATH_MAX];              /* RESTORE ... FROM: a backup id or a .cbk path; with
                                       AS OF, the repository (or a backup in it) */
    char branch[SQLFRONT_NAME_MAX]; /* RESTORE ... TO BRANCH, DROP BRANCH: "" when absent */
    int asof;                       /* enum sqlfront_asof */
    uint64_t asof_index;            /* SQLFRONT_ASOF_INDEX */
    int64_t asof_ms;                /* SQLFRONT_ASOF_TIME: ms since the epoch, UTC */
};

/* Parse sql[0..n). Returns 0 with cmd->kind SQLFRONT_NONE (and nothing else of cmd
 * set) when the text is not a cairn statement; 0 with the kind and fields set when it is one; CAIRN_EINVAL with
 * errmsg (CAIRN_ERRMSG_SIZE) saying what is wrong and where when it starts like one but
 * is malformed. */
int sqlfrontParse(const char *sql, size_t n, struct sqlfront_cmd *cmd, char *errmsg);

/* True when name can name a branch: 1-64 characters of [A-Za-z0-9_-], not starting
 * with '-'. Otherwise false with errmsg saying why. */
bool sqlfrontBranchNameValid(const char *name, char *errmsg);

#endif
