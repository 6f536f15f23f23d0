"""SQL sent as a text/plain body, as rqlite documents it:

    curl -XPOST 'localhost:4001/db/execute' -H 'Content-Type: text/plain' -d 'CREATE TABLE foo (x)'
    curl -XPOST 'localhost:4001/db/query' -H 'Content-Type: text/plain' -d 'SELECT * FROM foo'

rqlite takes the whole body as one statement on POST /db/execute and POST /db/query
(a Content-Type beginning with text/plain); /db/request reads its body as JSON whatever
the type, and so does every endpoint without that type. The statement passes the same
statement policy as any other. A text/plain body that is a JSON array (what fetch() sends
by default with a JSON string) is still read as JSON: no SQL statement begins with '['.
Anything that is neither gets a 400 saying what was expected."""

import http.client
import json

import pytest

from conftest import assert_exec_ok, deadline_seconds

TEXT = {"Content-Type": "text/plain"}


def post(s, path, body, ctype="text/plain"):
    hdrs = {"Content-Type": ctype} if ctype else {}
    if isinstance(body, str):
        body = body.encode("utf-8")
    # Server.raw adds application/json only when no type is given: send by hand.
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(30))
    try:
        conn.putrequest("POST", path)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def ok(st_data):
    st, data = st_data
    assert st == 200, (st, data[:500])
    doc = json.loads(data)
    for r in doc["results"]:
        assert "error" not in r, doc
    return doc


def refused(st_data, *words):
    st, data = st_data
    assert st == 400, (st, data[:500])
    err = json.loads(data)["error"]
    for w in words:
        assert w.lower() in err.lower(), "error %r does not mention %r" % (err, w)
    return err


@pytest.fixture
def s(server):
    return server


def test_execute_and_query_take_a_text_plain_statement(s):
    ok(post(s, "/db/execute", "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)"))
    doc = ok(post(s, "/db/execute?timings", "INSERT INTO foo(name, age) VALUES('fiona', 20)"))
    assert doc["results"][0]["last_insert_id"] == 1 and "time" in doc["results"][0], doc
    # A charset parameter, upper case, the SQL's own quotes and newlines: all as sent.
    ok(post(s, "/db/execute", "INSERT INTO foo(name, age)\n  VALUES(\"d'cl\u00e1n\", 25)",
            ctype="Text/Plain; charset=utf-8"))
    doc = ok(post(s, "/db/query", "SELECT name, age FROM foo ORDER BY id"))
    assert doc["results"][0]["values"] == [["fiona", 20], ["d'cl\u00e1n", 25]], doc
    doc = ok(post(s, "/db/query?associative", "SELECT name FROM foo WHERE age > 21"))
    assert doc["results"][0]["rows"] == [{"name": "d'cl\u00e1n"}], doc
    assert s.rows("SELECT count(*) FROM foo") == [[2]]


def test_a_text_plain_body_is_one_statement_string(s):
    """Like a JSON string element: several ;-separated statements all run, and the
    last one's result is reported."""
    ok(post(s, "/db/execute", "CREATE TABLE t (x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"))
    assert s.rows("SELECT x FROM t ORDER BY x") == [[1], [2]]
    doc = ok(post(s, "/db/execute?transaction", "INSERT INTO t VALUES (3)"))
    assert doc["results"][0]["rows_affected"] == 1, doc


def test_text_plain_statements_pass_the_statement_policy(s):
    assert_exec_ok(s.execute(["CREATE TABLE keep (x)", "INSERT INTO keep VALUES (1)"]))
    refused(post(s, "/db/execute", "PRAGMA case_sensitive_like=1"), "policy")
    refused(post(s, "/db/execute", "BEGIN"), "policy")
    refused(post(s, "/db/execute", "ATTACH 'other.db' AS o"), "policy")
    refused(post(s, "/db/execute", "INSERT INTO keep VALUES (2); CREATE TEMP TABLE x (y)"), "policy")
    # A write sent as a read is refused as it is in JSON.
    st, data = post(s, "/db/query", "INSERT INTO keep VALUES (3)")
    assert "readonly" in data.decode(), (st, data)
    assert s.rows("SELECT x FROM keep") == [[1]]


@pytest.mark.parametrize("body,words", [
    pytest.param(b"", ["empty", "SQL"], id="empty"),
    pytest.param(b"   \n\t ", ["statement"], id="blanks"),
    pytest.param(b"-- only a comment\n", ["statement"], id="comment"),
    pytest.param(b"SELECT 1\0; DROP TABLE keep", ["NUL", "offset 8"], id="nul"),
    pytest.param(b"\0", ["NUL", "offset 0"], id="only-nul"),
    pytest.param(b"SELECT '\xff\xfe'", ["UTF-8", "offset 8"], id="not-utf8"),
    pytest.param(b"SELECT '\xe2\x82'", ["UTF-8"], id="truncated-utf8"),
])
def test_bad_text_plain_bodies_are_400(s, body, words):
    assert_exec_ok(s.execute(["CREATE TABLE keep (x)", "INSERT INTO keep VALUES (1)"]))
    for path in ("/db/execute", "/db/query"):
        refused(post(s, path, body), *words)
    assert s.rows("SELECT x FROM keep") == [[1]]


def test_a_text_plain_json_array_is_read_as_json(s):
    """fetch() sends a string body as text/plain;charset=UTF-8: JSON that worked keeps
    working, parameters included."""
    ok(post(s, "/db/execute", '  ["CREATE TABLE j (v)"]', ctype="text/plain;charset=UTF-8"))
    ok(post(s, "/db/execute", json.dumps([["INSERT INTO j VALUES (?)", "p"]])))
    doc = ok(post(s, "/db/query", json.dumps([["SELECT v FROM j WHERE v = ?", "p"]])))
    assert doc["results"][0]["values"] == [["p"]], doc
    refused(post(s, "/db/execute", '["SELECT 1"'), "json")


def test_db_request_reads_json_whatever_the_type(s):
    """As in rqlite: /db/request takes no text/plain SQL; the error says where it goes."""
    err = refused(post(s, "/db/request", "SELECT 1"), "/db/execute", "/db/query")
    assert "text/plain" in err, err
    doc = ok(post(s, "/db/request", '["CREATE TABLE r (v)", "SELECT count(*) FROM r"]'))
    assert doc["results"][1]["values"] == [[0]], doc


@pytest.mark.parametrize("ctype", [None, "application/json", "application/x-www-form-urlencoded"])
def test_sql_without_text_plain_is_invalid_json(s, ctype):
    refused(post(s, "/db/execute", "CREATE TABLE nope (x)", ctype=ctype), "json")
    refused(post(s, "/db/query", "SELECT 1", ctype=ctype), "json")
    st, _, data = s.raw("GET", "/db/query?q=SELECT%20count(*)%20FROM%20sqlite_master%20WHERE%20name%3D'nope'")
    assert json.loads(data)["results"][0]["values"] == [[0]]


def test_get_query_ignores_the_content_type(s):
    st, _, data = s.raw("GET", "/db/query?q=SELECT%2042", headers=TEXT)
    assert st == 200 and json.loads(data)["results"][0]["values"] == [[42]], data


@pytest.mark.cluster
def test_text_plain_write_through_a_follower(tmp_path, cairnd_bin):
    """A follower forwards the write to the leader, which reads the statement the same."""
    from clusterutil import Cluster
    c = Cluster(tmp_path, n=2, mode="join", name="tp")
    try:
        leader = c.start()
        follower = c.followers(leader)[0]
        ok(post(follower, "/db/execute", "CREATE TABLE f (v TEXT)"))
        ok(post(follower, "/db/execute", "INSERT INTO f VALUES ('via \"follower\"\n')"))
        doc = ok(post(follower, "/db/query?level=strong", "SELECT v FROM f"))
        assert doc["results"][0]["values"] == [['via "follower"\n']], doc
        refused(post(follower, "/db/execute", "PRAGMA foreign_keys=ON"), "policy")
        refused(post(follower, "/db/execute", "SELECT 1\0"), "NUL")
    finally:
        problems = c.teardown()
        assert not problems, problems
