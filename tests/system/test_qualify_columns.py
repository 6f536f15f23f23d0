"""?qualify_columns (issue 15).

rqlite names each column read from a table "table.column" when a read asks for
`qualify_columns`, so that a join of tables with the same column names can be told
apart (above all in the associative form, where the names are the keys of each row);
an expression keeps its plain name. rqlite takes the table from SQLite
(sqlite3_column_table_name): the table's own name, not its alias in the query, with the
column's name as the query gives it (its alias if it has one). cairn refused the
parameter with 400. It is answered on every read path: levels none, weak, linearizable
and strong, GET and POST /db/query, /db/request (read only, and mixed with a write,
which goes through the log), plain and associative.

The table names are read once the statement has stepped, like its columns: a cached
statement still describes the schema it was prepared against until then (see
test_schema_change.py), so after a view is redefined the first answer must already
name the new table.
"""
from conftest import assert_exec_ok

SCHEMA = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL)",
    "CREATE TABLE u(id INTEGER PRIMARY KEY, t_id INTEGER, name TEXT)",
    "INSERT INTO t VALUES(1, 'one', 1.5)",
    "INSERT INTO u VALUES(10, 1, 'ten')",
]

JOIN = "SELECT * FROM t JOIN u ON u.t_id = t.id"
JOIN_COLUMNS = ["t.id", "t.name", "t.v", "u.id", "u.t_id", "u.name"]
JOIN_VALUES = [[1, "one", 1.5, 10, 1, "ten"]]

PATHS = [
    ("GET", {"level": "none"}), ("GET", {"level": "weak"}), ("GET", {"level": "strong"}),
    ("GET", {"level": "linearizable"}), ("GET", {}), ("POST", {}), ("POST", {"level": "strong"}),
    ("REQUEST", {}), ("REQUEST", {"level": "none"}), ("REQUEST", {"level": "strong"}),
    ("MIXED", {}),
]


def read(s, sql, kind, params, associative=False, qualify=True):
    """The result of sql read one way; MIXED is a /db/request with a write first, so the
    read runs in the log entry's apply."""
    params = dict(params, qualify_columns=qualify, associative=associative)
    if kind == "GET":
        doc = s.query(sql, **params)
    elif kind == "POST":
        doc = s._ok_json(s.post("/db/query", [sql], **params))
    elif kind == "REQUEST":
        doc = s._ok_json(s.post("/db/request", [sql], **params))
    else:
        doc = s._ok_json(s.post("/db/request", ["INSERT INTO log(x) VALUES(1)", sql], **params))
    res = doc["results"][-1]
    assert "error" not in res, (kind, params, doc)
    return res


def make_schema(s):
    assert_exec_ok(s.execute(SCHEMA + ["CREATE TABLE log(x)"]))


def test_join_columns_are_qualified_on_every_read_path(server):
    s = server
    make_schema(s)
    for kind, params in PATHS:
        for _ in range(2):  # pooled readers: each keeps its own statements
            res = read(s, JOIN, kind, params)
            assert res["columns"] == JOIN_COLUMNS, (kind, params, res)
            assert res["values"] == JOIN_VALUES, (kind, params, res)
            assert res["types"] == ["integer", "text", "real", "integer", "integer", "text"], res
            # Associative: the plain names collide (id, name), the qualified ones do not.
            res = read(s, JOIN, kind, params, associative=True)
            assert res["rows"] == [dict(zip(JOIN_COLUMNS, JOIN_VALUES[0]))], (kind, params, res)
            assert list(res["types"]) == JOIN_COLUMNS, (kind, params, res)
            # Without it, the plain names as before.
            res = read(s, JOIN, kind, params, qualify=False)
            assert res["columns"] == ["id", "name", "v", "id", "t_id", "name"], (kind, params, res)


def test_expressions_aliases_and_views(server):
    s = server
    make_schema(s)
    assert_exec_ok(s.execute(["CREATE VIEW tv AS SELECT id AS vid, name FROM t"]))
    cases = [
        # Expressions keep their plain names; an aliased column keeps its table.
        ("SELECT t.id AS x, 1 + 1, count(*) AS n, upper(t.name), u.name FROM t JOIN u "
         "ON u.t_id = t.id", ["t.x", "1 + 1", "n", "upper(t.name)", "u.name"]),
        # A table alias is not the table's name: SQLite (and rqlite) give the table.
        ("SELECT a.id, b.id AS bid FROM t AS a JOIN u AS b ON b.t_id = a.id", ["t.id", "u.bid"]),
        # Through a view and a subquery, to the table the value comes from.
        ("SELECT * FROM tv", ["t.vid", "t.name"]),
        ("SELECT s.id FROM (SELECT id FROM u) AS s", ["u.id"]),
        ("SELECT 1 AS one", ["one"]),
        # A query with no rows is named the same way.
        ("SELECT id, name FROM u WHERE id < 0", ["u.id", "u.name"]),
    ]
    for sql, want in cases:
        for kind, params in (("GET", {"level": "none"}), ("REQUEST", {}), ("MIXED", {})):
            res = read(s, sql, kind, params)
            assert res["columns"] == want, (sql, kind, res)
            res = read(s, sql, kind, params, associative=True)
            assert list(res["types"]) == want, (sql, kind, res)
    # A write's result has no columns: the parameter changes nothing there.
    body = s.execute(["INSERT INTO log(x) VALUES(2)"], qualify_columns=True)
    assert assert_exec_ok(body)[0]["rows_affected"] == 1, body


def test_qualified_names_follow_a_redefined_view(server):
    """A reader's cached `SELECT * FROM v` describes the old view until it steps: the
    table names, like the column names, must be read after the first step."""
    s = server
    make_schema(s)
    assert_exec_ok(s.execute(["CREATE VIEW v AS SELECT id, name FROM t"]))
    paths = [("GET", {"level": "none"}), ("GET", {}), ("POST", {}), ("REQUEST", {}),
             ("MIXED", {})]
    for kind, params in paths:
        for _ in range(3):
            assert read(s, "SELECT * FROM v", kind, params)["columns"] == ["t.id", "t.name"]
    assert_exec_ok(s.execute(["DROP VIEW v", "CREATE VIEW v AS SELECT id, t_id FROM u"]))
    for kind, params in paths:
        for _ in range(3):
            res = read(s, "SELECT * FROM v", kind, params)
            assert res["columns"] == ["u.id", "u.t_id"], (kind, params, res)
            assert res["values"] == [[10, 1]], (kind, params, res)
            res = read(s, "SELECT * FROM v", kind, params, associative=True)
            assert res["rows"] == [{"u.id": 10, "u.t_id": 1}], (kind, params, res)


def test_later_statement_with_more_columns(server):
    """A string of several statements answers the last one's rows. Its value slots were
    kept from the first statement, sized for its columns: a later statement with more
    columns wrote past them, and cairnd died (realloc(): invalid next size) on a GET."""
    s = server
    make_schema(s)
    sql = ("SELECT 'a'; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
           "LIMIT 100) SELECT x, x, x, x, x, x, x, x, 'text', t.id FROM c, t")
    for params in ({}, {"qualify_columns": True}, {"associative": True}):
        for _ in range(3):
            res = s.query(sql, **params)["results"][0]
            assert "error" not in res, res
            if "rows" in res:
                assert len(res["rows"]) == 100 and res["rows"][99]["'text'"] == "text", res
            else:
                assert len(res["columns"]) == 10 and len(res["values"]) == 100, res
                assert res["values"][99] == [100] * 8 + ["text", 1], res["values"][99]
                assert res["columns"][-1] == ("t.id" if params else "id"), res["columns"]
    # The other way round too: fewer columns, then text, after a wide first statement.
    res = s.query("SELECT 1,2,3,4,5,6,7,8,9,10; SELECT name FROM t", qualify_columns=True)
    assert res["results"][0]["columns"] == ["t.name"] and res["results"][0]["values"] == [["one"]]
    assert s.raw("GET", "/readyz").status == 200
