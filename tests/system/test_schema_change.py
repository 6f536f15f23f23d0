"""Wrong columns after a schema change (issue: wrong answers).

A reader keeps prepared statements; SQLite prepares one again for a changed schema only
when it steps. cairn read a query's column count, names and types before the first
step, so the first run of a cached `SELECT *` after ALTER TABLE (or DROP and CREATE, or
a RESTORE) answered with the old columns: values under the wrong names, some missing,
no error. Every read path is run before and after each change, more than once (readers
are pooled: each keeps its own statements), and must give the new columns every time.
"""
import backuputil
from conftest import assert_exec_ok

PATHS = [
    ("GET", {"level": "none"}), ("GET", {"level": "weak"}), ("GET", {"level": "strong"}),
    ("GET", {"level": "linearizable"}), ("POST", {}), ("REQUEST", {}),
    ("GET", {"associative": True}), ("REQUEST", {"associative": True}),
]


def read_all(s, sql):
    """The answer of every read path, each asked three times (several pooled readers)."""
    got = []
    for kind, params in PATHS:
        for _ in range(3):
            if kind == "GET":
                doc = s.query(sql, **params)
            elif kind == "POST":
                doc = s._ok_json(s.post("/db/query", [sql]))
            else:
                doc = s._ok_json(s.post("/db/request", [sql], **params))
            res = doc["results"][0]
            assert "error" not in res, (kind, params, res)
            got.append((kind, str(params), res))
    return got


def check(results, columns, values):
    for kind, params, res in results:
        if "rows" in res:  # associative
            assert sorted(res["types"]) == sorted(columns), (kind, params, res)
            assert [[r[c] for c in columns] for r in res["rows"]] == values, (kind, params, res)
        else:
            assert res["columns"] == columns, (kind, params, res)
            assert res.get("values", []) == values, (kind, params, res)


def test_columns_follow_the_schema_through_every_read_path(server):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE mig(a INTEGER, b TEXT)", "INSERT INTO mig VALUES(1,'x')"]))
    check(read_all(s, "SELECT * FROM mig"), ["a", "b"], [[1, "x"]])
    assert_exec_ok(s.execute(["ALTER TABLE mig ADD COLUMN c REAL", "UPDATE mig SET c=2.5"]))
    check(read_all(s, "SELECT * FROM mig"), ["a", "b", "c"], [[1, "x", 2.5]])
    assert_exec_ok(s.execute(["DROP TABLE mig", "CREATE TABLE mig(z BLOB)",
                              "INSERT INTO mig VALUES(x'0102')"]))
    check(read_all(s, "SELECT * FROM mig"), ["z"], [["AQI="]])
    # An empty result has the new columns too.
    assert_exec_ok(s.execute(["DELETE FROM mig", "ALTER TABLE mig ADD COLUMN y TEXT"]))
    check(read_all(s, "SELECT * FROM mig"), ["z", "y"], [])


def test_columns_follow_a_restore(server, tmp_path):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE r(a INTEGER, b TEXT, c TEXT)",
                              "INSERT INTO r VALUES(1, 'one', 'uno')"]))
    row = backuputil.sql_row(s, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS)
    assert_exec_ok(s.execute(["DROP TABLE r", "CREATE TABLE r(q TEXT)", "INSERT INTO r VALUES('new')"]))
    check(read_all(s, "SELECT * FROM r"), ["q"], [["new"]])
    res = backuputil.sql_result(s, "RESTORE DATABASE FROM %s" % backuputil.sql_quote(row["backup_id"]))
    assert res.get("values"), res
    check(read_all(s, "SELECT * FROM r"), ["a", "b", "c"], [[1, "one", "uno"]])
