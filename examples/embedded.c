/* Example: cairn embedded in a C program.
 *
 *   build/example_embedded DATA_DIR
 *
 * Opens a single-node cairn on DATA_DIR (no network), creates a table, writes rows
 * with bound parameters of every type through the Raft log, reads them back with
 * typed accessors, and closes cleanly. Run it twice on the same directory: the rows
 * of the first run are still there. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cairn.h"

static int check(cairn *db, int rc, const char *what)
{
    if (rc != CAIRN_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, cairn_strerror(rc), cairn_errmsg(db));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cairn_config cfg;
    cairn *db = NULL;
    cairn_result *res = NULL;
    const unsigned char blob[] = {0xca, 0x1f, 0x00, 0x01};
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    cairn_config_init(&cfg);
    cfg.data_dir = argv[1];
    rc = cairn_open(&cfg, &db);
    if (check(db, rc, "open")) {
        cairn_close(db);
        return 1;
    }

    rc = cairn_execute(db,
                       "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, title TEXT, "
                       "score REAL, data BLOB, extra TEXT)",
                       NULL, 0, &res);
    if (check(db, rc, "create")) {
        goto fail;
    }
    cairn_result_free(res);

    cairn_value params[] = {cairn_text("h\xc3\xa9llo from C"), cairn_float(9.5),
                            cairn_blob(blob, sizeof blob), cairn_null()};
    rc = cairn_execute(db, "INSERT INTO notes(title, score, data, extra) VALUES(?, ?, ?, ?)",
                       params, 4, &res);
    if (check(db, rc, "insert")) {
        goto fail;
    }
    if (cairn_result_error(res, 0) != NULL) {
        fprintf(stderr, "insert: %s\n", cairn_result_error(res, 0));
        goto fail;
    }
    printf("inserted row %" PRId64 "\n", cairn_result_last_insert_id(res, 0));
    cairn_result_free(res);

    cairn_value min = cairn_float(1.0);
    min.name = "min";
    rc = cairn_query(db, "SELECT id, title, score, data, extra FROM notes WHERE score >= :min "
                         "ORDER BY id",
                     &min, 1, CAIRN_LEVEL_WEAK, &res);
    if (check(db, rc, "query")) {
        goto fail;
    }
    for (size_t row = 0; row < cairn_result_rows(res, 0); row++) {
        size_t n;
        const unsigned char *d = cairn_result_blob(res, 0, row, 3, &n);
        printf("row id=%" PRId64 " title=%s score=%.1f data=%zu bytes (%02x%02x...) extra=%s\n",
               cairn_result_int64(res, 0, row, 0), cairn_result_text(res, 0, row, 1, NULL),
               cairn_result_double(res, 0, row, 2), n, n > 0 ? d[0] : 0, n > 1 ? d[1] : 0,
               cairn_result_type(res, 0, row, 4) == CAIRN_NULL ? "NULL" : "?");
    }
    printf("%zu rows\n", cairn_result_rows(res, 0));
    cairn_result_free(res);
    return cairn_close(db) == CAIRN_OK ? 0 : 1;

fail:
    cairn_result_free(res);
    cairn_close(db);
    return 1;
}
