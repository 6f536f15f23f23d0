/* The cairn_backups virtual table (see vtab.h). The catalog is read with reposetList()
 * when a scan starts, so every query sees the repositories as they are then. Any
 * thread. */
#include "vtab.h"

#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "error.h"
#include "repo.h"
#include "reposet.h"

static const char SCHEMA[] =
    "CREATE TABLE x(id TEXT, type TEXT, parent_id TEXT, created TEXT, raft_index INTEGER, "
    "page_count INTEGER, pages INTEGER, size_bytes INTEGER, path TEXT, duration_ms INTEGER, "
    "verified TEXT, error TEXT, repository TEXT)";

enum { C_ID, C_TYPE, C_PARENT, C_CREATED, C_INDEX, C_PAGE_COUNT, C_PAGES, C_SIZE, C_PATH,
       C_DURATION, C_VERIFIED, C_ERROR, C_REPOSITORY };

struct vtab {
    sqlite3_vtab base;
    const struct reposet *repos; /* the server's, which outlives every connection */
};

struct cursor {
    sqlite3_vtab_cursor base;
    struct backup_info *list;
    size_t n;
    size_t i;
};

static int xConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                    sqlite3_vtab **out, char **err)
{
    struct vtab *t;
    int rc = sqlite3_declare_vtab(db, SCHEMA);
    if (rc != SQLITE_OK) {
        return rc;
    }
    t = sqlite3_malloc(sizeof *t);
    if (t == NULL) {
        return SQLITE_NOMEM;
    }
    memset(t, 0, sizeof *t);
    t->repos = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int xDisconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int xBestIndex(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    info->estimatedCost = 1000;
    info->estimatedRows = 100;
    return SQLITE_OK;
}

static int xOpen(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    struct cursor *c = sqlite3_malloc(sizeof *c);
    if (c == NULL) {
        return SQLITE_NOMEM;
    }
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static int xClose(sqlite3_vtab_cursor *cur)
{
    struct cursor *c = (struct cursor *)cur;
    free(c->list);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int xFilter(sqlite3_vtab_cursor *cur, int idx, const char *idxstr, int argc,
                   sqlite3_value **argv)
{
    struct cursor *c = (struct cursor *)cur;
    struct vtab *t = (struct vtab *)cur->pVtab;
    char errmsg[CAIRN_ERRMSG_SIZE];
    free(c->list);
    c->list = NULL;
    c->n = 0;
    c->i = 0;
    if (reposetList(t->repos, -1, &c->list, &c->n, errmsg) != 0) {
        sqlite3_free(t->base.zErrMsg);
        t->base.zErrMsg = sqlite3_mprintf("cairn_backups: %s", errmsg);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

static int xNext(sqlite3_vtab_cursor *cur)
{
    ((struct cursor *)cur)->i++;
    return SQLITE_OK;
}

static int xEof(sqlite3_vtab_cursor *cur)
{
    struct cursor *c = (struct cursor *)cur;
    return c->i >= c->n;
}

static void textOrNull(sqlite3_context *ctx, const char *s)
{
    if (s[0] == '\0') {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
    }
}

static int xColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    struct cursor *c = (struct cursor *)cur;
    const struct backup_info *b = &c->list[c->i];
    static const char *const verified[] = {"unverified", "verified", "failed"};
    switch (col) {
        case C_ID:
            sqlite3_result_text(ctx, b->id, -1, SQLITE_TRANSIENT);
            break;
        case C_TYPE:
            sqlite3_result_text(ctx, backupTypeName(b->type), -1, SQLITE_STATIC);
            break;
        case C_PARENT:
            textOrNull(ctx, b->parent_id);
            break;
        case C_CREATED: {
            char text[32];
            repoIso8601(b->created_ms, text);
            sqlite3_result_text(ctx, text, -1, SQLITE_TRANSIENT);
            break;
        }
        case C_INDEX:
            sqlite3_result_int64(ctx, (sqlite3_int64)b->raft_index);
            break;
        case C_PAGE_COUNT:
            sqlite3_result_int64(ctx, (sqlite3_int64)b->page_count);
            break;
        case C_PAGES:
            sqlite3_result_int64(ctx, (sqlite3_int64)b->pages);
            break;
        case C_SIZE:
            sqlite3_result_int64(ctx, (sqlite3_int64)b->size_bytes);
            break;
        case C_PATH:
            sqlite3_result_text(ctx, b->path, -1, SQLITE_TRANSIENT);
            break;
        case C_DURATION:
            sqlite3_result_int64(ctx, b->duration_ms);
            break;
        case C_VERIFIED:
            sqlite3_result_text(ctx, verified[b->verified >= 0 && b->verified <= 2 ? b->verified : 0],
                                -1, SQLITE_STATIC);
            break;
        case C_ERROR:
            textOrNull(ctx, b->error);
            break;
        case C_REPOSITORY:
            textOrNull(ctx, b->repository);
            break;
    }
    return SQLITE_OK;
}

static int xRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    *rowid = (sqlite3_int64)((struct cursor *)cur)->i + 1;
    return SQLITE_OK;
}

static const sqlite3_module module = {
    .iVersion = 0,
    .xCreate = NULL, /* eponymous only: no CREATE VIRTUAL TABLE */
    .xConnect = xConnect,
    .xBestIndex = xBestIndex,
    .xDisconnect = xDisconnect,
    .xDestroy = xDisconnect,
    .xOpen = xOpen,
    .xClose = xClose,
    .xFilter = xFilter,
    .xNext = xNext,
    .xEof = xEof,
    .xColumn = xColumn,
    .xRowid = xRowid,
};

int vtabRegister(sqlite3 *db, const struct reposet *repos)
{
    return sqlite3_create_module_v2(db, "cairn_backups", &module, (void *)repos, NULL);
}
