"""BLOB parameters and ?blob_array (issue 15).

rqlite binds two shapes of parameter as a BLOB (its http/request_parser.go, and "BLOB
data" in its API documentation): an array of integers from 0 to 255
(`["INSERT INTO t VALUES(?)", [83, 81, 76]]`, positional or named) and a string in
SQLite's blob-literal form (`"x'53514C'"`). cairn refused the whole request with 400
for the first ("parameter 1 has unsupported type array") and stored the second as text.
An array of anything but bytes (256, -1, 1.5, 1e2, a string, null, a nested array, an
object) is refused with 400 naming the statement, the parameter and the element: never
coerced. `?blob_array` answers BLOBs as arrays of byte values instead of base64; cairn
refused it with 400. A BLOB parameter travels in the log entry as a BLOB (type 4 in
docs/FORMAT.md) and every node stores the same bytes.
"""
import base64
import json
import os
import time

import pytest

from clusterutil import http_call
from conftest import assert_exec_ok, wait_until
from test_cluster import cluster_factory  # noqa: F401  (the fixture)


def one(body):
    res = body["results"]
    assert len(res) == 1 and "error" not in res[0], body
    return res[0]


def stored(s, table):
    """[(id, typeof(b), hex(b))] of table, in id order."""
    return [tuple(r) for r in s.rows("SELECT id, typeof(b), hex(b) FROM %s ORDER BY id" % table)]


def test_byte_arrays_bind_as_blobs(shared_server, table):
    s = shared_server
    assert_exec_ok(s.execute(["CREATE TABLE %s(id INTEGER PRIMARY KEY, b)" % table]))
    ins = "INSERT INTO %s(id, b) VALUES(?, ?)" % table
    body = assert_exec_ok(s.execute([
        [ins, 1, [83, 81, 76, 105, 116, 101]],                    # rqlite's example
        ["INSERT INTO %s(id, b) VALUES(:id, :b)" % table, {"id": 2, "b": [0, 255, 128]}],
        ["INSERT INTO %s(id, b) VALUES(@id, $b)" % table, {"id": 3, "b": []}],
        [ins, 4, list(range(256))],
        [ins, 5, [1, 2, 3]],
    ]), 5)
    assert [r["rows_affected"] for r in body] == [1] * 5, body
    s._ok_json(s.post("/db/request", [[ins, 6, [9, 8]]]))
    assert stored(s, table) == [
        (1, "blob", "53514C697465"),
        (2, "blob", "00FF80"),
        (3, "blob", ""),                       # the empty BLOB, not NULL
        (4, "blob", bytes(range(256)).hex().upper()),
        (5, "blob", "010203"),
        (6, "blob", "0908"),
    ]
    # As a query parameter too, on every read endpoint.
    q = [["SELECT typeof(?1), hex(?1), ?1 = x'00ff'", [0, 255]]]
    for path in ("/db/query", "/db/request"):
        res = one(s._ok_json(s.post(path, q)))
        assert res["values"] == [["blob", "00FF", 1]], (path, res)
    assert s.rows("SELECT id FROM %s WHERE b = ?" % table, [83, 81, 76, 105, 116, 101]) == [[1]]


def test_hex_strings_bind_as_blobs_as_in_rqlite(shared_server, table):
    s = shared_server
    assert_exec_ok(s.execute(["CREATE TABLE %s(id INTEGER PRIMARY KEY, b)" % table]))
    cases = [
        ("x'68656C6C6F20776F726C64'", "blob", "68656C6C6F20776F726C64"),  # rqlite's example
        ("X'deadBEEF'", "blob", "DEADBEEF"),
        (" \tx'00ff'\n", "blob", "00FF"),       # blanks around it, as Go's TrimSpace
        ("\u00a0x'01'\u3000", "blob", "01"),
        ("x''", "blob", ""),
        ("x'abc'", "text", None),               # odd number of digits
        ("x'zz'", "text", None),
        ("x'", "text", None),
        ("xx'00'", "text", None),
        ("x'00' y", "text", None),
        ("hello", "text", None),
    ]
    stmts = [["INSERT INTO %s(id, b) VALUES(?, ?)" % table, i, v] for i, (v, _, _) in enumerate(cases)]
    assert_exec_ok(s.execute(stmts), len(cases))
    got = stored(s, table)
    for (v, typ, hexed), (i, gtyp, ghex) in zip(cases, got):
        assert gtyp == typ, (v, gtyp, ghex)
        assert ghex == (hexed if hexed is not None else v.encode("utf-8").hex().upper()), (v, ghex)
    # Named parameters read it the same way.
    res = one(s.query([["SELECT typeof(:a), hex(:a)", {"a": "x'0A0b'"}]]))
    assert res["values"] == [["blob", "0A0B"]], res


BAD_ARRAYS = [
    ([1, 256], "element 2 is 256"),
    ([-1], "element 1 is -1"),
    ([1.5], "element 1 is 1.5"),
    ([1.0], "element 1 is 1.0"),
    ("[1e2]", "element 1 is 1e2"),
    ([0, [1]], "element 2 is an array"),
    ([[]], "element 1 is an array"),
    ([{"a": 1}], "element 1 is an object"),
    (["a"], "element 1 is a string"),
    (["x'00'"], "element 1 is a string"),
    ([None], "element 1 is null"),
    ([True], "element 1 is a boolean"),
    ([1, 2, 3, 999999999999], "element 4 is 999999999999"),
]


@pytest.mark.parametrize("path", ["/db/execute", "/db/request", "/db/query"])
def test_arrays_that_are_not_bytes_are_refused(shared_server, table, path):
    s = shared_server
    assert_exec_ok(s.execute(["CREATE TABLE IF NOT EXISTS %s(b)" % table]))
    for arr, element in BAD_ARRAYS:
        arr_json = arr if isinstance(arr, str) else json.dumps(arr)
        for stmt, param in (('["INSERT INTO %s VALUES(?)", %s]' % (table, arr_json), "parameter 1"),
                            ('["INSERT INTO %s VALUES(:b)", {"b": %s}]' % (table, arr_json),
                             'parameter "b"')):
            # A good statement first: nothing of the request is written.
            body = '[["INSERT INTO %s VALUES(?)", [1]], %s]' % (table, stmt)
            r = s.raw("POST", path, body)
            assert r.status == 400, (body, r)
            err = r.json()["error"]
            assert err.startswith("statement 2: %s is an array" % param), (body, err)
            assert element in err and "0 to 255" in err, (body, err)
    assert s.scalar("SELECT count(*) FROM %s" % table) == 0


def test_hostile_arrays(shared_server, table):
    s = shared_server
    assert_exec_ok(s.execute(["CREATE TABLE %s(id INTEGER PRIMARY KEY, b BLOB)" % table]))
    # A million elements: stored exactly, read back in both forms.
    blob = os.urandom(1000000)
    t0 = time.monotonic()
    assert_exec_ok(s.execute([["INSERT INTO %s(id, b) VALUES(1, ?)" % table, list(blob)]]))
    assert time.monotonic() - t0 < 20
    res = one(s.query("SELECT b FROM %s WHERE id = 1" % table, blob_array=True))
    assert bytes(res["values"][0][0]) == blob
    res = one(s.query("SELECT b FROM %s WHERE id = 1" % table))
    assert base64.b64decode(res["values"][0][0]) == blob
    # A million good bytes and one bad one at the end: refused, naming it.
    body = '[["INSERT INTO %s(b) VALUES(?)", [%s256]]]' % (table, "7," * 1000000)
    r = s.raw("POST", "/db/execute", body)
    assert r.status == 400 and "element 1000001 is 256" in r.json()["error"], r
    # Deep nesting inside a parameter: refused at the parser's depth limit, not crashed on.
    for depth in (100, 5000, 200000):
        body = '[["INSERT INTO %s(b) VALUES(?)", [1, %s%s]]]' % (table, "[" * depth, "]" * depth)
        r = s.raw("POST", "/db/execute", body)
        assert r.status == 400, (depth, r)
        err = r.json()["error"]
        assert "element 2 is an array" in err or "depth" in err, (depth, err)
    # Every JSON type in one array; an unterminated one; a trailing comma.
    r = s.raw("POST", "/db/execute", [["INSERT INTO %s(b) VALUES(?)" % table,
                                       [1, "a", 2.5, None, True, {"x": [1]}, [1], -3]]])
    assert r.status == 400 and "element 2 is a string" in r.json()["error"], r
    for body in ('[["INSERT INTO %s(b) VALUES(?)", [1, 2' % table,
                 '[["INSERT INTO %s(b) VALUES(?)", [1, 2,]]]' % table,
                 '[["INSERT INTO %s(b) VALUES(?)", [1 2]]]' % table):
        r = s.raw("POST", "/db/execute", body)
        assert r.status == 400 and "invalid JSON" in r.json()["error"], (body, r)
    assert s.scalar("SELECT count(*) FROM %s" % table) == 1
    assert s.raw("GET", "/readyz").status == 200


def test_blob_array_answers_byte_arrays(shared_server, table):
    s = shared_server
    assert_exec_ok(s.execute([
        "CREATE TABLE %s(id INTEGER PRIMARY KEY, b BLOB, t TEXT)" % table,
        "INSERT INTO %s VALUES(1, x'DEADBEEF', 'AP8=')" % table,
        "INSERT INTO %s VALUES(2, x'', NULL)" % table,
        "INSERT INTO %s VALUES(3, NULL, 'x')" % table,
    ]))
    sql = "SELECT b, t, zeroblob(2) AS z FROM %s ORDER BY id" % table
    want = [[[222, 173, 190, 239], "AP8=", [0, 0]], [[], None, [0, 0]], [None, "x", [0, 0]]]
    assert one(s.query(sql, blob_array=True))["values"] == want
    assert one(s._ok_json(s.post("/db/query", [sql], blob_array=True)))["values"] == want
    assert one(s.request([sql], blob_array=True))["values"] == want
    for level in ("none", "weak", "linearizable", "strong"):
        assert one(s.query(sql, blob_array=True, level=level))["values"] == want, level
    rows = one(s.query(sql, blob_array=True, associative=True))["rows"]
    assert rows[0] == {"b": [222, 173, 190, 239], "t": "AP8=", "z": [0, 0]}, rows
    # Without it, base64 as before; a write's result is unchanged by it.
    assert one(s.query(sql))["values"][0] == ["3q2+7w==", "AP8=", "AAA="]
    body = s.execute([["INSERT INTO %s(id, b) VALUES(4, ?)" % table, [1]]], blob_array=True)
    assert assert_exec_ok(body)[0]["rows_affected"] == 1, body


def test_blob_parameter_over_the_value_limit(server_factory):
    """--max-value-size holds for a BLOB parameter as for any value."""
    s = server_factory(extra_args=["--max-value-size", "1000"])
    assert_exec_ok(s.execute(["CREATE TABLE big(b BLOB)"]))
    body = s.execute([["INSERT INTO big VALUES(?)", [1] * 500],
                      ["INSERT INTO big VALUES(?)", [1] * 2000],
                      ["INSERT INTO big VALUES(?)", "x'%s'" % ("ab" * 2000)]])
    res = body["results"]
    assert "error" not in res[0], body
    assert "too big" in res[1].get("error", "") and "too big" in res[2].get("error", ""), body
    assert s.rows("SELECT length(b) FROM big") == [[500]]


@pytest.mark.cluster
def test_blob_parameters_replicate_byte_for_byte(cluster_factory):
    """BLOB parameters sent to the leader and to a follower (forwarded) are stored with
    the same bytes on every node, through a plain and a compressed (over 16 KiB) log
    entry and after a restart's replay; a follower answers ?blob_array and
    ?qualify_columns forwarded (level weak) and locally (level none)."""
    c = cluster_factory(3)
    leader = c.leader()
    follower = c.followers(leader)[0]

    def post(node, path, stmts):
        st, _, data, _ = http_call(node.http_port, "POST", path, stmts, timeout=30)
        assert st == 200, (node.name, path, st, data[:500])
        doc = json.loads(data)
        for r in doc["results"]:
            assert "error" not in r, doc
        return doc

    post(leader, "/db/execute", ["CREATE TABLE bl(id INTEGER PRIMARY KEY, b BLOB)"])
    every = list(range(256))
    big = list(os.urandom(100000))
    post(leader, "/db/execute", [["INSERT INTO bl VALUES(1, ?)", every],
                                 ["INSERT INTO bl VALUES(:id, :b)", {"id": 2, "b": []}],
                                 ["INSERT INTO bl VALUES(3, ?)", "x'00FF00'"]])
    post(follower, "/db/execute", [["INSERT INTO bl VALUES(4, ?)", big]])
    post(follower, "/db/request", [["INSERT INTO bl VALUES(5, ?)", [0] * 20000 + [7]]])
    want = {1: every, 2: [], 3: [0, 255, 0], 4: big, 5: [0] * 20000 + [7]}

    def blobs(node):
        st, _, data, _ = http_call(node.http_port, "GET",
                                   "/db/query?level=none&blob_array&q=SELECT%20id,%20b,%20"
                                   "typeof(b)%20FROM%20bl%20ORDER%20BY%20id", timeout=30)
        if st != 200:
            return None
        vals = json.loads(data)["results"][0].get("values", [])
        return {r[0]: r[1] for r in vals if r[2] == "blob"}

    for n in c.nodes:
        wait_until(lambda: blobs(n) == want, 30, "%s to hold the BLOBs" % n.name)
    c.assert_same_rows("bl", order="id")
    # A restarted follower replays them from its log the same way.
    follower.restart()
    follower.wait_ready()
    wait_until(lambda: blobs(follower) == want, 30, "the restarted follower to hold the BLOBs")

    # Reads through a follower: forwarded (weak) and local (none).
    post(leader, "/db/execute", ["CREATE TABLE owner(id INTEGER PRIMARY KEY, bl_id INTEGER)",
                                 "INSERT INTO owner VALUES(10, 3)"])
    sql = "SELECT bl.id, owner.id, bl.b FROM bl JOIN owner ON owner.bl_id = bl.id"
    for level in ("weak", "none"):
        def read():
            st, _, data, _ = http_call(
                follower.http_port, "GET", "/db/query?" + "&".join(
                    ["level=" + level, "blob_array", "qualify_columns", "associative",
                     "q=" + sql.replace(" ", "%20").replace("=", "%3D")]), timeout=30)
            return json.loads(data)["results"][0].get("rows") if st == 200 else None
        rows = wait_until(read, 30, "the follower's %s read" % level)
        assert rows == [{"bl.id": 3, "owner.id": 10, "bl.b": [0, 255, 0]}], (level, rows)
