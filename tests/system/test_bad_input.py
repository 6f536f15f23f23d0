"""Bad input: every malformed request gets a 4xx with a JSON body {"error": "..."}
that says what is wrong, and the server stays up with all of its data."""

import http.client
import json
import socket
import subprocess

import pytest

from conftest import assert_exec_ok, deadline_seconds

SEED_ROWS = 10


@pytest.fixture(scope="module")
def seeded(shared_server):
    s = shared_server
    assert_exec_ok(s.execute(["CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(s.execute([["INSERT INTO keep(v) VALUES(?)", "row%d" % i] for i in range(SEED_ROWS)]))
    return s


def assert_intact(s):
    """The server is running, ready, and still holds exactly the seeded rows."""
    assert s.running(), "cairnd exited; stderr:\n%s" % s.stderr_tail()
    r = s.raw("GET", "/readyz")
    assert r.status == 200, r
    assert s.rows("SELECT count(*), min(v), max(v) FROM keep") == [[SEED_ROWS, "row0", "row9"]]


def assert_json_error(r, status, keywords):
    """`r` has HTTP `status` and a JSON object body whose "error" names the problem."""
    assert r.status == status, "%s %s: expected HTTP %d, got %r" % (r.method, r.path, status, r)
    ctype = r.headers.get("content-type", "")
    assert "json" in ctype, "%s %s: content-type %r, body %r" % (r.method, r.path, ctype, r.body[:300])
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), r
    msg = body["error"].lower()
    assert any(k in msg for k in keywords), \
        "%s %s: error %r does not mention any of %r" % (r.method, r.path, body["error"], keywords)
    return body["error"]


NOT_JSON = ["json", "parse", "syntax", "invalid"]
NOT_ARRAY = ["array"]
BAD_ELEMENT = ["statement", "string", "array", "element"]
EMPTY = ["empty", "no statement", "statement"]
BAD_PARAM = ["param", "type", "unsupported"]

BODY_CASES = [
    pytest.param(b"this is not json", NOT_JSON, id="not-json"),
    pytest.param(b'["INSERT INTO keep(v) VALUES(1)"', NOT_JSON, id="truncated"),
    pytest.param(b'["SELECT 1"] trailing', NOT_JSON, id="trailing-garbage"),
    pytest.param(b'["SELECT 1",]', NOT_JSON, id="trailing-comma"),
    pytest.param(b'["SELECT \xff\xfe"]', NOT_JSON + ["utf"], id="invalid-utf8"),
    pytest.param(b"", EMPTY + ["body", "json"], id="empty-body"),
    pytest.param(b'{"sql": "SELECT 1"}', NOT_ARRAY, id="object"),
    pytest.param(b'"SELECT 1"', NOT_ARRAY, id="string"),
    pytest.param(b"42", NOT_ARRAY, id="number"),
    pytest.param(b"null", NOT_ARRAY, id="null"),
    pytest.param(b"[42]", BAD_ELEMENT, id="element-number"),
    pytest.param(b"[null]", BAD_ELEMENT, id="element-null"),
    pytest.param(b"[true]", BAD_ELEMENT, id="element-bool"),
    pytest.param(b'[{"sql": "SELECT 1"}]', BAD_ELEMENT, id="element-object"),
    pytest.param(b"[]", EMPTY, id="no-statements"),
    pytest.param(b"[[]]", EMPTY, id="empty-statement-array"),
    pytest.param(b"[[1, 2]]", BAD_ELEMENT + ["sql"], id="sql-not-string"),
    pytest.param(b'[[{"a": 1}]]', BAD_ELEMENT + ["sql"], id="sql-is-object"),
    pytest.param(b'[["SELECT :a", {"a": {"b": 1}}]]', BAD_PARAM, id="named-param-object"),
    pytest.param(b'[["SELECT :a", {"a": [[1]]}]]', BAD_PARAM, id="named-param-nested-array"),
    pytest.param(b'[["SELECT ?", ["a", "b"]]]', BAD_PARAM, id="positional-array-of-strings"),
    pytest.param(b'[["SELECT ?", [{"x": 1}]]]', BAD_PARAM, id="positional-array-of-objects"),
    pytest.param(b'[["SELECT ?, ?", 1, [[1, 2]]]]', BAD_PARAM, id="positional-nested-array"),
]


@pytest.mark.parametrize("path", ["/db/execute", "/db/query", "/db/request"])
@pytest.mark.parametrize("body,keywords", BODY_CASES)
def test_malformed_body(seeded, path, body, keywords):
    r = seeded.raw("POST", path, body)
    assert_json_error(r, 400, keywords)
    assert_intact(seeded)


def test_deeply_nested_json(seeded):
    """A parser recursing per nesting level must not overflow its stack."""
    depth = 30000
    r = seeded.raw("POST", "/db/execute", b"[" * depth + b"]" * depth)
    assert 400 <= r.status < 500, r
    assert "error" in r.json(), r
    assert_intact(seeded)


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/db/execute"),
    ("GET", "/db/execute"),
    ("PUT", "/db/execute"),
    ("PUT", "/db/query"),
    ("DELETE", "/db/query"),
    ("GET", "/db/request"),
    ("PATCH", "/db/request"),
    ("DELETE", "/status"),
])
def test_wrong_method(seeded, method, path):
    body = b'["DELETE FROM keep"]' if method != "GET" else None
    r = seeded.raw(method, path, body)
    assert_json_error(r, 405, ["method", "allowed"])
    # RFC 9110: a 405 response must list the allowed methods.
    assert r.headers.get("allow"), "405 without an Allow header: %r" % (r.headers,)
    assert method not in [m.strip() for m in r.headers["allow"].split(",")], r.headers
    assert_intact(seeded)


@pytest.mark.parametrize("method,path", [
    ("GET", "/no/such/path"),
    ("POST", "/db/nothing"),
    ("GET", "/db"),
    ("GET", "/api/v1/query"),
])
def test_unknown_path(seeded, method, path):
    r = seeded.raw(method, path, b'["SELECT 1"]' if method == "POST" else None)
    assert_json_error(r, 404, ["not found", "unknown", "no such", "path"])
    assert_intact(seeded)


@pytest.mark.parametrize("path", ["/db/query", "/db/query?q=", "/db/query?pretty&timings"])
def test_query_get_without_q(seeded, path):
    r = seeded.raw("GET", path)
    assert_json_error(r, 400, ["q", "query", "missing", "empty"])
    assert_intact(seeded)


@pytest.mark.parametrize("sql", [
    "DELETE FROM keep",
    "INSERT INTO keep(v) VALUES('intruder')",
    "UPDATE keep SET v = 'changed'",
    "DROP TABLE keep",
    "CREATE TABLE made_by_query (a)",
])
def test_write_on_query_endpoint_is_a_statement_error(seeded, sql):
    s = seeded
    for level in ("none", "weak", "linearizable", "strong"):
        # strong reads go through the Raft log: a write must not slip through there either
        for body in (s.query(sql, level=level), s.query([sql], level=level), s.query([[sql]], level=level)):
            res = body["results"]
            assert len(res) == 1, body
            assert "readonly" in res[0].get("error", "").lower(), (level, body)
    # Mixed with a read: the read still answers.
    body = s.query(["SELECT count(*) FROM keep", sql])
    res = body["results"]
    assert res[0]["values"] == [[SEED_ROWS]], body
    assert "readonly" in res[1].get("error", "").lower(), body
    assert_intact(s)
    assert s.rows("SELECT name FROM sqlite_master WHERE name = 'made_by_query'") == []


def test_sql_errors_are_200_with_error(seeded):
    r = seeded.raw("POST", "/db/execute", ["INSERT INTO nonsense", "SELEC 1", "INSERT INTO keep(nope) VALUES(1)"])
    assert r.status == 200, r
    res = r.json()["results"]
    assert len(res) == 3 and all(x.get("error") for x in res), r
    assert_intact(seeded)


def test_connection_dropped_mid_body(seeded):
    """A client that announces a body and disappears must not hurt the server."""
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", seeded.http_port), timeout=10)
        sock.sendall(b"POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n[\"DELETE FROM keep\"")
        sock.close()
    sock = socket.create_connection(("127.0.0.1", seeded.http_port), timeout=10)
    sock.sendall(b"GARBAGE NOT HTTP\r\n\r\n")
    sock.settimeout(deadline_seconds(10))
    try:
        sock.recv(4096)  # a 400 or a closed connection are both fine; no hang
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert_intact(seeded)


# ---------------------------------------------------------------------------
# --max-body


@pytest.fixture
def small_body_server(server_factory):
    s = server_factory(extra_args=["--max-body", "1024"])
    assert_exec_ok(s.execute(["CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(s.execute([["INSERT INTO keep(v) VALUES(?)", "row%d" % i] for i in range(SEED_ROWS)]))
    return s


def test_body_over_max_body_is_413(small_body_server):
    s = small_body_server
    big = json.dumps([["INSERT INTO keep(v) VALUES(?)", "x" * 4000]]).encode()
    for path in ("/db/execute", "/db/query", "/db/request"):
        r = s.raw("POST", path, big)
        assert_json_error(r, 413, ["large", "size", "limit", "max", "body"])
        assert_intact(s)
    # Just under the limit still works.
    ok = json.dumps([["INSERT INTO keep(v) VALUES(?)", "y" * 900]]).encode()
    assert len(ok) <= 1024
    r = s.raw("POST", "/db/execute", ok)
    assert r.status == 200 and "error" not in r.json()["results"][0], r
    assert s.scalar("SELECT count(*) FROM keep") == SEED_ROWS + 1


def test_chunked_body_over_max_body_is_413(small_body_server):
    """Without a Content-Length the limit must still hold."""
    s = small_body_server
    chunk = json.dumps([["INSERT INTO keep(v) VALUES(?)", "z" * 500]] * 8).encode()
    assert len(chunk) > 1024
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(30))
    try:
        pieces = [chunk[i:i + 200] for i in range(0, len(chunk), 200)]
        conn.request("POST", "/db/execute", body=iter(pieces), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        data = resp.read()
    except (BrokenPipeError, ConnectionResetError):
        # The server may reply 413 and close before reading everything.
        resp, data = None, b""
    finally:
        conn.close()
    if resp is not None:
        assert resp.status == 413, (resp.status, data[:500])
        assert "error" in json.loads(data), data
    assert s.scalar("SELECT count(*) FROM keep") == SEED_ROWS
    assert s.running()


# ---------------------------------------------------------------------------
# one broad pass for the sanitizer build


@pytest.mark.smoke
def test_bad_inputs_smoke(server):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(s.execute([["INSERT INTO keep(v) VALUES(?)", "row%d" % i] for i in range(SEED_ROWS)]))
    for body, kw in [(b"not json", NOT_JSON), (b'{"a": 1}', NOT_ARRAY), (b"[42]", BAD_ELEMENT),
                     (b"[[]]", EMPTY), (b'[["SELECT ?", ["a"]]]', BAD_PARAM),
                     (b'[["SELECT :a", {"a": {"b": 1}}]]', BAD_PARAM), (b'["SELECT 1"', NOT_JSON),
                     (b"[" * 5000 + b"]" * 5000, NOT_JSON + BAD_ELEMENT + ["deep", "nest"])]:
        r = s.raw("POST", "/db/execute", body)
        assert 400 <= r.status < 500, r
        assert_json_error(r, r.status, kw)
    assert_json_error(s.raw("DELETE", "/db/execute"), 405, ["method", "allowed"])
    assert_json_error(s.raw("GET", "/no/such/path"), 404, ["not found", "unknown", "no such", "path"])
    assert_json_error(s.raw("GET", "/db/query"), 400, ["q", "query", "missing", "empty"])
    res = s.query(["DELETE FROM keep"])["results"]
    assert "readonly" in res[0].get("error", "").lower(), res
    assert_intact(s)


def test_internal_tables_are_protected(server):
    """Whatever tables cairn keeps for itself in db.sqlite, clients cannot change them,
    and trying leaves the node working across a restart."""
    s = server
    internal = [r[0] for r in s.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert_exec_ok(s.execute(["CREATE TABLE keep (v INTEGER)", "INSERT INTO keep VALUES(1)"]))
    for name in internal:
        for sql in ('DELETE FROM "%s"' % name, 'DROP TABLE "%s"' % name,
                    'ALTER TABLE "%s" RENAME TO hijacked' % name, 'INSERT INTO "%s" DEFAULT VALUES' % name):
            # Refused by the statement policy before anything is proposed: 400 naming
            # the statement and the reason.
            r = s.post("/db/execute", [sql])
            assert r.status == 400 and "statement policy" in r.json()["error"], (sql, r)
    assert_exec_ok(s.execute(["INSERT INTO keep VALUES(2)"]))
    s.restart()
    assert s.rows("SELECT v FROM keep ORDER BY v") == [[1], [2]]
    assert sorted(r[0] for r in s.rows("SELECT name FROM sqlite_master WHERE type = 'table'")) == \
        sorted(internal + ["keep"])


@pytest.mark.parametrize("http,raft", [("127.0.0.1:%d", "127.0.0.1:%d"),
                                       ("127.0.0.1:%d", "localhost:%d")])
def test_one_address_for_http_and_raft_is_said_plainly(cairnd_bin, tmp_path, free_port, http,
                                                       raft):
    """--http-addr and --raft-addr naming one address (a new user's slip) stop the start
    with a message that says so, not as a Raft address in use, and nothing is left
    listening."""
    port = free_port()
    p = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "data"),
                        "--http-addr", http % port, "--raft-addr", raft % port],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "are one address: each needs a port of its own" in p.stderr, p.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again
