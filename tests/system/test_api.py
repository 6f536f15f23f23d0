"""The rqlite-compatible HTTP API of a single cairnd: shapes, values, parameters,
transactions, the unified endpoint, URL flags and the status endpoints.

Most tests share one server (module scope) and use a table named after the test.
"""

import base64
import http.client
import json
import pathlib
import re
import socket
import threading
import urllib.parse

import pytest

from conftest import assert_exec_ok, deadline_seconds

I64_MAX = 9223372036854775807
I64_MIN = -9223372036854775808


def only_result(body):
    assert isinstance(body, dict), body
    res = body.get("results")
    assert isinstance(res, list) and len(res) == 1, body
    return res[0]


# ---------------------------------------------------------------------------
# basics


@pytest.mark.smoke
def test_execute_then_query_shapes(shared_server, table):
    s = shared_server
    body = s.execute(["CREATE TABLE %s (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)" % table])
    assert_exec_ok(body, 1)

    body = s.execute(['INSERT INTO %s(name, age) VALUES("fiona", 20)' % table])
    r = only_result(body)
    assert r.get("last_insert_id") == 1, body
    assert r.get("rows_affected") == 1, body

    # GET form
    body = s.query("SELECT * FROM %s" % table)
    r = only_result(body)
    assert r["columns"] == ["id", "name", "age"], body
    assert r["types"] == ["integer", "text", "integer"], body
    assert r["values"] == [[1, "fiona", 20]], body
    assert "error" not in r

    # POST form gives the same result
    body2 = s.query(["SELECT * FROM %s" % table])
    assert body2 == body


def test_ddl_changes_no_rows(server):
    """rows_affected counts the rows the statement changed: none for DDL, whatever
    bookkeeping the server does in the same transaction."""
    s = server
    body = s.execute(["CREATE TABLE a (x INTEGER)"])
    assert only_result(body).get("rows_affected", 0) == 0, body
    body = s.execute(["INSERT INTO a VALUES(1), (2), (3)", "CREATE INDEX ai ON a(x)", "DROP INDEX ai",
                      "CREATE TABLE b (y)"])
    res = assert_exec_ok(body, 4)
    assert res[0].get("rows_affected") == 3, body
    assert [r.get("rows_affected", 0) for r in res[1:]] == [0, 0, 0], body


def test_query_get_urlencoded_sql(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (a TEXT)" % table])
    s.execute([["INSERT INTO %s(a) VALUES(?)" % table, "x&y=z+w %20"]])
    # '&', '=', '+', '%' and spaces in q must survive URL decoding.
    rows = s.rows("SELECT a FROM %s WHERE a = 'x&y=z+w %%20' AND 1 = 1" % table)
    assert rows == [["x&y=z+w %20"]]


def test_multiple_statements_in_one_execute(shared_server, table):
    s = shared_server
    body = s.execute([
        "CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)" % table,
        "INSERT INTO %s(v) VALUES(10)" % table,
        "INSERT INTO %s(v) VALUES(20)" % table,
        "INSERT INTO %s(v) VALUES(30)" % table,
        "UPDATE %s SET v = v + 1 WHERE v >= 20" % table,
        "DELETE FROM %s WHERE v = 10" % table,
    ])
    res = assert_exec_ok(body, 6)
    assert [r.get("last_insert_id") for r in res[1:4]] == [1, 2, 3], body
    assert [r.get("rows_affected") for r in res[1:4]] == [1, 1, 1], body
    assert res[4].get("rows_affected") == 2, body
    assert res[5].get("rows_affected") == 1, body
    assert s.rows("SELECT id, v FROM %s ORDER BY id" % table) == [[2, 21], [3, 31]]


def test_sql_error_is_per_statement_and_others_run(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table])
    r = s.post("/db/execute", [
        "INSERT INTO %s(v) VALUES('a')" % table,
        "SELEC nonsense",
        "INSERT INTO %s(v) VALUES('b')" % table,
        "INSERT INTO no_such_table_xyz(v) VALUES(1)",
    ])
    assert r.status == 200, r
    res = r.json()["results"]
    assert len(res) == 4, r
    assert "error" not in res[0] and res[0].get("rows_affected") == 1, res
    assert "syntax error" in res[1].get("error", ""), res
    assert "error" not in res[2] and res[2].get("rows_affected") == 1, res
    assert "no such table" in res[3].get("error", ""), res
    assert s.rows("SELECT v FROM %s ORDER BY id" % table) == [["a"], ["b"]]


def test_query_error_is_per_statement(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table, "INSERT INTO %s VALUES(7)" % table])
    body = s.query(["SELECT v FROM %s" % table, "SELECT * FROM no_such_table_q", "SELECT v + 1 FROM %s" % table])
    res = body["results"]
    assert len(res) == 3, body
    assert res[0]["values"] == [[7]], body
    assert "no such table" in res[1].get("error", ""), body
    assert res[2]["values"] == [[8]], body


def test_rows_affected_for_update_and_delete(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table])
    s.execute([["INSERT INTO %s VALUES(?)" % table, i] for i in range(10)])
    body = s.execute(["UPDATE %s SET v = v * 10 WHERE v < 4" % table])
    assert only_result(body).get("rows_affected") == 4, body
    body = s.execute(["DELETE FROM %s WHERE v >= 5 AND v < 10" % table])
    assert only_result(body).get("rows_affected") == 5, body
    # rqlite omits zero-valued rows_affected; cairn may send 0. Either means 0.
    body = s.execute(["DELETE FROM %s WHERE v = -1" % table])
    assert only_result(body).get("rows_affected", 0) == 0, body
    assert s.scalar("SELECT count(*) FROM %s" % table) == 5


def test_large_batch_in_one_transaction(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table])
    n = 2000
    stmts = [["INSERT INTO %s(v) VALUES(?)" % table, "row-%05d" % i] for i in range(n)]
    body = s.execute(stmts, transaction=True)
    res = assert_exec_ok(body, n)
    assert res[-1].get("last_insert_id") == n
    rows = s.rows("SELECT id, v FROM %s ORDER BY id" % table)
    assert len(rows) == n
    assert rows[0] == [1, "row-00000"] and rows[-1] == [n, "row-%05d" % (n - 1)]


def test_several_requests_on_one_connection(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table])
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
    try:
        for i in range(5):
            body = json.dumps([["INSERT INTO %s VALUES(?)" % table, i]])
            conn.request("POST", "/db/execute", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            assert "error" not in json.loads(data)["results"][0], data
            conn.request("GET", "/db/query?q=" + "SELECT%20count(*)%20FROM%20" + table)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            assert json.loads(data)["results"][0]["values"] == [[i + 1]], data
    finally:
        conn.close()


def test_plus_in_query_string_is_a_space(shared_server):
    """Form-style encoders (Python's urlencode, many HTTP libraries) send spaces as '+'."""
    s = shared_server
    r = s.raw("GET", "/db/query?q=SELECT+1+%2B+1+AS+two")
    assert r.status == 200, r
    assert only_result(r.json())["values"] == [[2]], r
    assert only_result(r.json())["columns"] == ["two"], r


def test_unknown_url_parameters_are_ignored(shared_server, table):
    """Clients send options cairn does not know (foo, q[useLeader]): ignored. rqlite's
    own parameters that cairn does not implement yet (freshness, queue, ...) are refused
    instead (test_rqlite_params.py): ignoring them would change what the answer means."""
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table])
    r = s.raw("POST", "/db/execute?timeout=10s&redirect&foo=bar&q%5BuseLeader%5D=true",
              [["INSERT INTO %s VALUES(?)" % table, 5]])
    assert r.status == 200 and "error" not in r.json()["results"][0], r
    r = s.raw("GET", "/db/query?db_timeout=2s&redirect&q=SELECT%20v%20FROM%20" + table)
    assert r.status == 200 and only_result(r.json())["values"] == [[5]], r
    r = s.raw("GET", "/db/query?freshness=1s&q=SELECT%20v%20FROM%20" + table)
    assert r.status == 400 and "?freshness" in r.json()["error"], r
    r = s.raw("GET", "/status?q%5BuseLeader%5D=true")
    assert r.status == 200 and isinstance(r.json(), dict), r


@pytest.mark.parametrize("ctype", [None, "application/x-www-form-urlencoded", "application/json; charset=utf-8"])
def test_content_type_does_not_matter_for_json(shared_server, table, ctype):
    """curl -d sends application/x-www-form-urlencoded; some clients send no type."""
    s = shared_server
    s.execute(["CREATE TABLE IF NOT EXISTS %s (v TEXT)" % table])
    headers = {"Content-Type": ctype} if ctype else {}
    body = json.dumps([["INSERT INTO %s VALUES(?)" % table, "a=b&c=d+e"]]).encode()
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
    try:
        conn.putrequest("POST", "/db/execute")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, data
    assert "error" not in json.loads(data)["results"][0], data
    assert s.rows("SELECT v FROM %s" % table) == [["a=b&c=d+e"]]


def test_expect_100_continue(shared_server, table):
    """curl sends 'Expect: 100-continue' for bodies over 1 KiB and waits for the 100."""
    s = shared_server
    s.execute(["CREATE TABLE %s (v TEXT)" % table])
    body = json.dumps([["INSERT INTO %s VALUES(?)" % table, "e" * 5000]]).encode()
    sock = socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(10))
    try:
        sock.sendall(("POST /db/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)).encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before any response: %r" % interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        resp = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            resp += chunk
            head, sep, rest = resp.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    finally:
        sock.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    assert s.scalar("SELECT length(v) FROM %s" % table) == 5000


def test_concurrent_reads_during_writes(shared_server, table):
    """Readers never see errors (e.g. 'database is locked') or counts going backwards."""
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)" % table])
    problems = []
    writers_done = threading.Event()

    def writer(w):
        for i in range(150):
            r = s.post("/db/execute", [["INSERT INTO %s(v) VALUES(?)" % table, w * 1000 + i]])
            if r.status != 200 or "error" in r.json()["results"][0]:
                problems.append("writer %d: %r" % (w, r))
                return

    def reader(level):
        last = -1
        reads = 0
        while not writers_done.is_set() or reads < 5:
            r = s.raw("GET", "/db/query?level=%s&q=SELECT%%20count(*)%%20FROM%%20%s" % (level, table))
            reads += 1
            if r.status != 200:
                problems.append("reader %s: %r" % (level, r))
                return
            res = r.json()["results"][0]
            if "error" in res:
                problems.append("reader %s: %r" % (level, res))
                return
            n = res["values"][0][0]
            if n < last:
                problems.append("reader %s: count went from %d to %d" % (level, last, n))
                return
            last = n

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=reader, args=(lvl,)) for lvl in ("none", "weak", "linearizable", "strong")]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(deadline_seconds(120))
    writers_done.set()
    for t in readers:
        t.join(deadline_seconds(120))
    assert not any(t.is_alive() for t in writers + readers), "a client thread hangs"
    assert not problems, problems[:10]
    assert s.scalar("SELECT count(*) FROM %s" % table) == 600


def test_large_values(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, b BLOB, t TEXT)" % table])
    big_text = "\u00e9" * 300000 + "end"
    assert_exec_ok(s.execute([["INSERT INTO %s(b, t) VALUES(randomblob(1000000), ?)" % table, big_text]]))
    r = only_result(s.query("SELECT b, t, length(b) FROM %s" % table))
    b64, t, n = r["values"][0]
    assert n == 1000000
    assert len(base64.b64decode(b64, validate=True)) == 1000000
    assert t == big_text
    # Many rows in one response.
    assert_exec_ok(s.execute([["WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) "
                               "INSERT INTO %s(t) SELECT 'row' || i FROM c" % table]]))
    rows = s.rows("SELECT t FROM %s WHERE id > 1 ORDER BY id" % table)
    assert len(rows) == 20000 and rows[0] == ["row1"] and rows[-1] == ["row20000"]


# ---------------------------------------------------------------------------
# parameters


def test_positional_parameters(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)" % table])
    body = s.execute([
        ["INSERT INTO %s(name, age) VALUES(?, ?)" % table, "fiona", 20],
        ["INSERT INTO %s(name, age) VALUES(?, ?)" % table, "declan", 25],
        ["INSERT INTO %s(name, age) VALUES(?1, ?2)" % table, "sinead", 30],
    ])
    assert_exec_ok(body, 3)
    body = s.query([["SELECT id, name, age FROM %s WHERE name = ?" % table, "fiona"]])
    assert only_result(body)["values"] == [[1, "fiona", 20]], body
    body = s.query([["SELECT name FROM %s WHERE age > ? AND age < ? ORDER BY age" % table, 20, 31]])
    assert only_result(body)["values"] == [["declan"], ["sinead"]], body
    # A one-element array is a statement without parameters.
    body = s.query([["SELECT count(*) FROM %s" % table]])
    assert only_result(body)["values"] == [[3]], body


@pytest.mark.parametrize("prefix", [":", "@", "$"])
def test_named_parameters(shared_server, table, prefix):
    s = shared_server
    s.execute(["CREATE TABLE %s (name TEXT, age INTEGER)" % table])
    body = s.execute([["INSERT INTO {t}(name, age) VALUES({p}name, {p}age)".format(t=table, p=prefix),
                       {"name": "fiona", "age": 20}]])
    assert only_result(body).get("rows_affected") == 1, body
    body = s.query([["SELECT name, age FROM {t} WHERE name = {p}name".format(t=table, p=prefix),
                     {"name": "fiona"}]])
    assert only_result(body)["values"] == [["fiona", 20]], body
    body = s.request([["SELECT age FROM {t} WHERE age = {p}a".format(t=table, p=prefix), {"a": 20}]])
    assert only_result(body)["values"] == [[20]], body


def test_parameter_type_mapping(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v)" % table])  # no affinity
    params = [42, -7, 2.5, 3.0, 1e300, "hello", "", True, False, None]
    body = s.execute([["INSERT INTO %s(v) VALUES(?)" % table, p] for p in params])
    assert_exec_ok(body, len(params))
    rows = s.rows("SELECT typeof(v), v FROM %s ORDER BY id" % table)
    assert rows == [
        ["integer", 42],
        ["integer", -7],
        ["real", 2.5],
        ["real", 3.0],
        ["real", 1e300],
        ["text", "hello"],
        ["text", ""],
        ["integer", 1],
        ["integer", 0],
        ["null", None],
    ], rows


def test_parameter_number_forms_in_raw_json(shared_server, table):
    """Numbers as clients write them: exponent forms are reals, plain digits integers."""
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v)" % table])
    raw = ('[["INSERT INTO %s(v) VALUES(?)", 1e2], ["INSERT INTO %s(v) VALUES(?)", -0.5E-1],'
           ' ["INSERT INTO %s(v) VALUES(?)", 0], ["INSERT INTO %s(v) VALUES(?)", -0]]') % ((table,) * 4)
    r = s.raw("POST", "/db/execute", raw)
    assert r.status == 200, r
    assert_exec_ok(r.json(), 4)
    rows = s.rows("SELECT typeof(v), v FROM %s ORDER BY id" % table)
    assert rows == [["real", 100.0], ["real", -0.05], ["integer", 0], ["integer", 0]], rows


# ---------------------------------------------------------------------------
# values


def test_integer_extremes(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)" % table])
    body = s.execute([
        ["INSERT INTO %s(v) VALUES(?)" % table, I64_MAX],
        ["INSERT INTO %s(v) VALUES(?)" % table, I64_MIN],
        "INSERT INTO %s(v) VALUES(9223372036854775807)" % table,
        "INSERT INTO %s(v) VALUES(-9223372036854775808)" % table,
        ["INSERT INTO %s(v) VALUES(?)" % table, 0],
        ["INSERT INTO %s(v) VALUES(?)" % table, 2 ** 53 + 1],
    ])
    assert_exec_ok(body, 6)
    r = s.raw("GET", "/db/query?q=SELECT%20v,%20typeof(v)%20FROM%20" + table + "%20ORDER%20BY%20id")
    assert r.status == 200, r
    values = only_result(r.json())["values"]
    assert values == [[I64_MAX, "integer"], [I64_MIN, "integer"], [I64_MAX, "integer"],
                      [I64_MIN, "integer"], [0, "integer"], [2 ** 53 + 1, "integer"]], values
    # Exact digits on the wire: not rounded through a double, not exponent form.
    assert b"9223372036854775807" in r.body and b"-9223372036854775808" in r.body, r.body
    assert b"9007199254740993" in r.body, r.body
    # And as the last_insert_id of a rowid just below the maximum (a row at the maximum
    # is refused: past it SQLite picks rowids at random, differently on every node).
    body = s.execute([["INSERT INTO %s(id, v) VALUES(?, 1)" % table, I64_MAX - 1]])
    assert only_result(body).get("last_insert_id") == I64_MAX - 1, body
    body = s.execute([["INSERT INTO %s(id, v) VALUES(?, 1)" % table, I64_MAX]])
    assert "9223372036854775807" in only_result(body).get("error", ""), body


def test_reals(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v REAL)" % table])
    vals = [0.1, -2.75, 1e-300, 1.7976931348623157e308, 123456789.125, 0.1 + 0.2]
    assert_exec_ok(s.execute([["INSERT INTO %s(v) VALUES(?)" % table, v] for v in vals]))
    rows = s.rows("SELECT v, typeof(v) FROM %s ORDER BY id" % table)
    # Round-trip exactly (the shortest repr that parses back to the same double).
    assert [r[0] for r in rows] == vals, rows
    assert all(r[1] == "real" for r in rows), rows
    assert s.rows("SELECT 1.5 * 2, 7 / 2.0") == [[3.0, 3.5]]


TEXTS = [
    "plain ascii",
    "",
    "emoji \U0001F980\U0001F389 and \U0001F600",
    "CJK 日本語テキスト 中文 한국어",
    "combining e\u0301 a\u0308 \u0915\u094d\u0937",
    'quotes "double" and \'single\' and `back`',
    "backslashes C:\\path\\to\\file \\n \\u0041 \\\\",
    "newlines\nline2\r\nline3\ttabbed",
    "controls \x01\x02\x1f\x7f",
    "JS separators \u2028 \u2029 and </script>",
    "  leading and trailing spaces  ",
    "surrogate-adjacent \ud7ff \ue000 \uffff \U0010FFFF",
    "x" * 70000,
]


@pytest.mark.smoke
def test_text_round_trip(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table])
    # Parameters sent with \u escapes (json.dumps default, astral chars as surrogate pairs).
    body = s.execute([["INSERT INTO %s(v) VALUES(?)" % table, t] for t in TEXTS])
    assert_exec_ok(body, len(TEXTS))
    # Parameters sent as raw UTF-8.
    raw = json.dumps([["INSERT INTO %s(v) VALUES(?)" % table, t] for t in TEXTS], ensure_ascii=False)
    r = s.raw("POST", "/db/execute", raw.encode("utf-8"))
    assert r.status == 200, r
    assert_exec_ok(r.json(), len(TEXTS))
    # Literal SQL strings (single quotes doubled).
    lit = ["INSERT INTO %s(v) VALUES('%s')" % (table, t.replace("'", "''")) for t in TEXTS]
    assert_exec_ok(s.execute(lit), len(TEXTS))

    rows = s.rows("SELECT v, length(v), hex(v) FROM %s ORDER BY id" % table)
    assert len(rows) == 3 * len(TEXTS)
    for i, (v, length, hx) in enumerate(rows):
        want = TEXTS[i % len(TEXTS)]
        assert v == want, "row %d: got %r, want %r" % (i, v[:200], want[:200])
        assert length == len(want), "row %d: SQLite length %d, want %d" % (i, length, len(want))
        assert hx == want.encode("utf-8").hex().upper(), "row %d: stored bytes differ" % i
    # Text used in a WHERE clause through a parameter.
    for t in TEXTS[:12]:
        n = s.scalar("SELECT count(*) FROM %s WHERE v = ?" % table, t)
        assert n == 3, (t, n)


def test_text_with_nul_and_invalid_utf8(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table])
    assert_exec_ok(s.execute([["INSERT INTO %s(v) VALUES(?)" % table, "a\x00b\x00"],
                              "INSERT INTO %s(v) VALUES('x' || char(0) || 'y')" % table]))
    # The whole value, not what strlen() sees.
    assert s.rows("SELECT v, hex(v) FROM %s ORDER BY id" % table) == [["a\x00b\x00", "61006200"],
                                                                     ["x\x00y", "780079"]]
    # Text that is not valid UTF-8 (a cast blob) still gives a valid UTF-8 JSON document.
    r = s.raw("GET", "/db/query?q=" + "SELECT%20CAST(X'FF41'%20AS%20TEXT)%20AS%20t")
    assert r.status == 200, r
    v = only_result(r.json())["values"][0][0]
    assert isinstance(v, str) and v.endswith("A"), v


def test_non_finite_reals_give_valid_json(shared_server):
    r = shared_server.raw("GET", "/db/query?q=SELECT%201e999%20AS%20a,%20-1e999%20AS%20b")
    assert r.status == 200, r
    res = only_result(r.json())  # strict: no Infinity/NaN tokens
    assert len(res["values"][0]) == 2, res


def test_parameter_count_mismatch(shared_server):
    s = shared_server
    body = s.query([["SELECT ?", 1, 2]])
    assert "error" in only_result(body), body
    # A named parameter that is not given is refused (SQLite would bind NULL), as rqlite
    # does: test_statement_parameter_without_a_value_is_refused.
    r = s.raw("POST", "/db/query", [["SELECT :a AS a, :b AS b", {"a": 1}]])
    assert r.status == 400 and "parameter 2 (:b)" in r.json()["error"], r


def test_blobs_are_base64(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, b BLOB)" % table])
    all_bytes = bytes(range(256))
    body = s.execute([
        "INSERT INTO %s(b) VALUES(X'00FF')" % table,
        "INSERT INTO %s(b) VALUES(X'')" % table,
        "INSERT INTO %s(b) VALUES(X'%s')" % (table, all_bytes.hex()),
        "INSERT INTO %s(b) VALUES(randomblob(16))" % table,
        "INSERT INTO %s(b) VALUES(zeroblob(3))" % table,
    ])
    assert_exec_ok(body, 5)
    body = s.query("SELECT b, typeof(b), length(b) FROM %s ORDER BY id" % table)
    r = only_result(body)
    assert r["types"] == ["blob", "text", "integer"], r
    v = r["values"]
    assert v[0] == ["AP8=", "blob", 2], v
    assert v[1][0] == "" and v[1][2] == 0, v
    assert v[2][0] == base64.b64encode(all_bytes).decode(), v
    assert len(base64.b64decode(v[3][0], validate=True)) == 16, v
    assert v[4][0] == "AAAA", v
    # A blob expression without a declared type.
    body = s.query("SELECT X'00FF' AS b")
    r = only_result(body)
    assert r["values"] == [["AP8="]] and r["types"] == ["blob"], r


def test_null_is_json_null(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (a INTEGER, b TEXT, c BLOB, d REAL)" % table,
               "INSERT INTO %s VALUES(NULL, NULL, NULL, NULL)" % table])
    r = only_result(s.query("SELECT a, b, c, d FROM %s" % table))
    assert r["values"] == [[None, None, None, None]], r
    assert r["types"] == ["integer", "text", "blob", "real"], r


def test_types_declared_and_expressions(shared_server, table):
    s = shared_server
    s.execute([
        "CREATE TABLE %s (i INTEGER, r REAL, t TEXT, b BLOB, n, v VARCHAR(10), f Float, bi BigInt)" % table,
        "INSERT INTO %s VALUES(1, 1.5, 'x', X'01', 42, 'vv', 2.5, 7)" % table,
    ])
    r = only_result(s.query("SELECT * FROM %s" % table))
    assert r["columns"] == ["i", "r", "t", "b", "n", "v", "f", "bi"], r
    # declared types lowercased; no declared type -> storage class of the first row's value
    assert r["types"] == ["integer", "real", "text", "blob", "integer", "varchar(10)", "float", "bigint"], r
    assert r["values"] == [[1, 1.5, "x", "AQ==", 42, "vv", 2.5, 7]], r

    r = only_result(s.query("SELECT 1 + 1 AS a, 1.5 * 2 AS b, 'x' || 'y' AS c, X'01' AS d, NULL AS e"))
    assert r["columns"] == ["a", "b", "c", "d", "e"], r
    assert r["types"] == ["integer", "real", "text", "blob", ""], r
    assert r["values"] == [[2, 3.0, "xy", "AQ==", None]], r

    # Aliased columns of a table keep the declared type.
    r = only_result(s.query("SELECT i AS renamed, t FROM %s" % table))
    assert r["columns"] == ["renamed", "t"] and r["types"] == ["integer", "text"], r


def test_query_without_rows_omits_values(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT)" % table])
    r = only_result(s.query("SELECT id, name FROM %s" % table))
    assert r["columns"] == ["id", "name"], r
    assert r["types"] == ["integer", "text"], r
    assert "values" not in r, r
    assert "error" not in r, r
    r = only_result(s.query("SELECT id, name FROM %s" % table, associative=True))
    assert r["rows"] == [], r
    assert r["types"] == {"id": "integer", "name": "text"}, r


def test_associative(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER, pic BLOB)" % table])
    s.execute([["INSERT INTO %s(name, age, pic) VALUES(?, ?, X'00FF')" % table, "fiona", 20],
               ["INSERT INTO %s(name, age) VALUES(?, ?)" % table, "declan", 25]])
    body = s.query("SELECT * FROM %s ORDER BY id" % table, associative=True)
    r = only_result(body)
    assert r["types"] == {"id": "integer", "name": "text", "age": "integer", "pic": "blob"}, r
    assert r["rows"] == [
        {"id": 1, "name": "fiona", "age": 20, "pic": "AP8="},
        {"id": 2, "name": "declan", "age": 25, "pic": None},
    ], r
    assert "columns" not in r and "values" not in r, r
    # POST form and unified endpoint honour it too.
    assert s.query(["SELECT * FROM %s ORDER BY id" % table], associative=True) == body
    body = s.request(["SELECT name FROM %s WHERE id = 2" % table], associative=True)
    assert only_result(body)["rows"] == [{"name": "declan"}], body


# ---------------------------------------------------------------------------
# transactions


def test_transaction_commits_all(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT)" % table])
    body = s.execute(["INSERT INTO %s(name) VALUES('fiona')" % table,
                      "INSERT INTO %s(name) VALUES('sinead')" % table], transaction=True)
    res = assert_exec_ok(body, 2)
    assert [r.get("last_insert_id") for r in res] == [1, 2], body
    assert s.rows("SELECT name FROM %s ORDER BY id" % table) == [["fiona"], ["sinead"]]


@pytest.mark.parametrize("flag", ["transaction", "transaction=true"])
def test_transaction_error_rolls_back_everything(shared_server, table, flag):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT)" % table,
               "INSERT INTO %s(name) VALUES('before')" % table])
    r = s.raw("POST", "/db/execute?" + flag, [
        "INSERT INTO %s(name) VALUES('one')" % table,
        "UPDATE %s SET name = 'changed' WHERE name = 'before'" % table,
        "INSERT INTO no_such_table_tx(name) VALUES('x')",
        "INSERT INTO %s(name) VALUES('three')" % table,
    ])
    assert r.status == 200, r
    res = r.json()["results"]
    # rqlite stops at the first error: results up to and including it; later ones may be absent.
    assert 1 <= len(res) <= 4, r
    errors = [x["error"] for x in res if "error" in x]
    assert len(errors) >= 1 and "no such table" in errors[0], r
    assert s.rows("SELECT id, name FROM %s ORDER BY id" % table) == [[1, "before"]]


def test_transaction_constraint_violation_rolls_back(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT UNIQUE)" % table])
    r = s.post("/db/execute", ["INSERT INTO %s(name) VALUES('a')" % table,
                               "INSERT INTO %s(name) VALUES('b')" % table,
                               "INSERT INTO %s(name) VALUES('a')" % table], transaction=True)
    assert r.status == 200, r
    errors = [x["error"] for x in r.json()["results"] if "error" in x]
    assert errors and "UNIQUE constraint failed" in errors[0], r
    assert s.scalar("SELECT count(*) FROM %s" % table) == 0
    # Without ?transaction the statements before and after the failing one stay.
    r = s.post("/db/execute", ["INSERT INTO %s(name) VALUES('a')" % table,
                               "INSERT INTO %s(name) VALUES('a')" % table,
                               "INSERT INTO %s(name) VALUES('b')" % table])
    res = r.json()["results"]
    assert len(res) == 3 and "UNIQUE constraint failed" in res[1].get("error", ""), r
    assert s.rows("SELECT name FROM %s ORDER BY name" % table) == [["a"], ["b"]]


# ---------------------------------------------------------------------------
# unified endpoint


def test_unified_request_endpoint(shared_server, table):
    s = shared_server
    body = s.request(["CREATE TABLE %s (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)" % table])
    assert_exec_ok(body, 1)
    body = s.request([
        ["INSERT INTO %s(name, age) VALUES(?, ?)" % table, "fiona", 20],
        ["SELECT * FROM %s" % table],
        ["SELECT * FROM no_such_table_unified"],
        "UPDATE %s SET age = 21" % table,
        "SELECT age FROM %s" % table,
    ])
    res = body["results"]
    assert len(res) == 5, body
    assert res[0].get("last_insert_id") == 1 and res[0].get("rows_affected") == 1, body
    assert "columns" not in res[0] and "values" not in res[0], body
    assert res[1]["columns"] == ["id", "name", "age"], body
    assert res[1]["types"] == ["integer", "text", "integer"], body
    assert res[1]["values"] == [[1, "fiona", 20]], body
    assert "no such table" in res[2].get("error", ""), body
    assert res[3].get("rows_affected") == 1, body
    assert res[4]["values"] == [[21]], body


def test_unified_request_transaction_rolls_back(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table])
    r = s.post("/db/request", ["INSERT INTO %s VALUES(1)" % table, "INSERT INTO nope_unified VALUES(2)"],
               transaction=True)
    assert r.status == 200, r
    assert any("error" in x for x in r.json()["results"]), r
    assert s.scalar("SELECT count(*) FROM %s" % table) == 0


# ---------------------------------------------------------------------------
# URL flags


def test_timings(shared_server, table):
    s = shared_server
    body = s.execute(["CREATE TABLE %s (v INTEGER)" % table, "INSERT INTO %s VALUES(1)" % table], timings=True)
    assert isinstance(body.get("time"), float) and body["time"] >= 0, body
    for r in body["results"]:
        assert isinstance(r.get("time"), float) and r["time"] >= 0, body
    body = s.query("SELECT v FROM %s" % table, timings=True)
    assert isinstance(body.get("time"), float), body
    assert isinstance(only_result(body).get("time"), float), body
    body = s.request(["SELECT v FROM %s" % table], timings=True)
    assert isinstance(body.get("time"), float) and isinstance(only_result(body).get("time"), float), body
    # Without the flag there are no timings.
    body = s.query("SELECT v FROM %s" % table)
    assert "time" not in body and "time" not in only_result(body), body
    body = s.execute(["INSERT INTO %s VALUES(2)" % table])
    assert "time" not in body and "time" not in only_result(body), body


def test_pretty(shared_server, table):
    s = shared_server
    s.execute(["CREATE TABLE %s (a INTEGER, b TEXT)" % table, "INSERT INTO %s VALUES(1, 'x')" % table])
    plain = s.raw("GET", "/db/query?q=SELECT%20*%20FROM%20" + table)
    pretty = s.raw("GET", "/db/query?pretty&q=SELECT%20*%20FROM%20" + table)
    assert plain.status == 200 and pretty.status == 200
    assert pretty.json() == plain.json()
    lines = pretty.text.strip().splitlines()
    assert len(lines) > 5 and len(lines) > len(plain.text.strip().splitlines()), pretty.text
    assert any(line.startswith((" ", "\t")) for line in lines), pretty.text
    r = s.post("/db/execute", ["INSERT INTO %s VALUES(2, 'y')" % table], pretty=True)
    assert r.status == 200 and len(r.text.strip().splitlines()) > 3, r.text


@pytest.mark.parametrize("level", ["none", "weak", "linearizable", "strong"])
def test_read_consistency_levels(shared_server, table, level):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table])
    # A write acknowledged by /db/execute is visible to the next read at every level.
    for i in range(1, 6):
        s.execute([["INSERT INTO %s VALUES(?)" % table, i]])
        assert s.rows("SELECT count(*), max(v) FROM %s" % table, level=level) == [[i, i]]
    assert only_result(s.query(["SELECT sum(v) FROM %s" % table], level=level))["values"] == [[15]]
    assert only_result(s.request(["SELECT sum(v) FROM %s" % table], level=level))["values"] == [[15]]


def test_unknown_level_is_rejected(shared_server):
    r = shared_server.raw("GET", "/db/query?level=bogus&q=SELECT%201")
    assert r.status == 400, r
    err = r.json().get("error", "")
    assert "level" in err.lower(), r


# ---------------------------------------------------------------------------
# status endpoints


@pytest.fixture
def named_server(server_factory):
    return server_factory(node_id=7)


def test_status(named_server):
    s = named_server
    st = s.get_json("/status")
    assert str(st["node"]["id"]) == "7", st["node"]
    raft = st["raft"]
    assert str(raft["state"]).lower() == "leader", raft
    assert isinstance(raft["applied_index"], int) and isinstance(raft["commit_index"], int), raft
    assert raft["commit_index"] >= raft["applied_index"] >= 1, raft
    leader = raft["leader"]
    if isinstance(leader, dict):
        assert any(v for v in leader.values()), raft
        flat = json.dumps(leader)
    else:
        assert isinstance(leader, str) and leader, raft
        flat = leader
    assert "7" in flat or s.raft_addr in flat, raft
    store = st["store"]
    assert pathlib.Path(store["db_path"]).resolve() == (s.data_dir / "db.sqlite").resolve(), store
    assert isinstance(store["db_size"], int) and store["db_size"] >= 0, store

    before = raft["applied_index"]
    s.execute(["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES(1)"])
    s.execute(["INSERT INTO t VALUES(2)"])
    after = s.get_json("/status")["raft"]
    assert after["applied_index"] >= before + 2, (before, after)
    assert after["commit_index"] >= after["applied_index"], after


def test_nodes(named_server):
    s = named_server
    body = s.get_json("/nodes")
    # rqlite's default form is a map keyed by node id; `?ver=2` gives {"nodes": [...]}.
    if isinstance(body, dict) and isinstance(body.get("nodes"), list):
        nodes = body["nodes"]
    elif isinstance(body, dict):
        nodes = list(body.values())
        for k, v in body.items():
            assert isinstance(v, dict) and str(v.get("id")) == k, body
    else:
        nodes = body
    assert isinstance(nodes, list) and len(nodes) == 1, body
    n = nodes[0]
    assert str(n["id"]) == "7", n
    assert n["api_addr"] in (s.url, s.http_addr), n
    assert n["addr"] == s.raft_addr, n
    assert n["voter"] is True and n["reachable"] is True and n["leader"] is True, n


def test_readyz_and_health(named_server):
    s = named_server
    r = s.raw("GET", "/readyz")
    assert r.status == 200 and r.body.strip(), r
    r = s.raw("GET", "/health")
    assert r.status == 200, r
    assert isinstance(r.json(), dict), r
    st = s.get_json("/status")
    assert str(st["node"]["id"]) == "7"


@pytest.mark.parametrize("value", [" 9", "+9", "9 ", "0x9"])
def test_node_id_is_digits_only(shared_server, value):
    """A node id is digits only: strtoull took " 9" and "+9", so /remove answered that
    node 9 is not in the cluster (and would have removed it) for an id the user did not
    write, and ?node=+1 routed to node 1."""
    s = shared_server
    r = s.raw("DELETE", "/remove", {"id": value})
    assert r.status == 400 and "remove needs" in r.json()["error"], r
    r = s.raw("POST", "/join", {"id": value, "addr": "127.0.0.1:1",
                                 "api_addr": "http://127.0.0.1:2"})
    assert r.status == 400 and "join needs" in r.json()["error"], r
    r = s.raw("POST", "/db/execute?node=%s" % urllib.parse.quote(value.replace("9", "1")),
              [["SELECT 1"]])
    assert r.status == 400 and "?node must be a node id" in r.json()["error"], r
    r = s.raw("GET", "/admin/digest?index=%s" % urllib.parse.quote(value), None)
    assert r.status == 400 and "needs ?index=N" in r.json()["error"], r


@pytest.mark.parametrize("stmt,missing", [
    (["INSERT INTO \"{t}\"(a, b) VALUES(?, ?)", 1], "parameter 2 "),
    (["INSERT INTO \"{t}\"(a, b) VALUES(:a, :b)", {"a": 1}], "parameter 2 (:b)"),
    (["INSERT INTO \"{t}\"(a, b) VALUES(:a, :b)", {"a": 1, "c": 2}], "parameter 2 (:b)"),
    ("INSERT INTO \"{t}\"(a, b) VALUES(?, 2)", "parameter 1 "),
])
def test_statement_parameter_without_a_value_is_refused(shared_server, table, stmt, missing):
    """A parameter the request gives no value was bound NULL: a forgotten value in
    ["... VALUES(?, ?)", 1] stored NULL with success. rqlite refuses it; so does cairn,
    with 400 naming the statement and the parameter, and nothing written."""
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (a, b)' % table]))
    if isinstance(stmt, str):
        stmt = stmt.replace("{t}", table)
    else:
        stmt = [stmt[0].replace("{t}", table)] + stmt[1:]
    ok = ['INSERT INTO "%s"(a, b) VALUES(?, ?)' % table, 7, 8]
    for path in ("/db/execute", "/db/request"):
        r = s.raw("POST", path, [ok, stmt])
        assert r.status == 400, (path, r)
        err = r.json()["error"]
        assert "statement 2" in err and missing in err and "no value" in err, (path, err)
    assert s.scalar('SELECT count(*) FROM "%s"' % table) == 0
    # Every parameter given: accepted, and a numbered parameter used twice needs one value.
    assert_exec_ok(s.execute([ok, ['INSERT INTO "%s"(a, b) VALUES(?1, ?1)' % table, 3]]))
    assert s.query('SELECT a, b FROM "%s" ORDER BY a' % table)["results"][0]["values"] == \
        [[3, 3], [7, 8]]
