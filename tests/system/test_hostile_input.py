"""Hostile input to the admin and cluster endpoints: a body the node cannot take as meant
is refused with 400 naming what is wrong, and nothing is done."""

import json
import socket

import pytest

from conftest import assert_exec_ok, deadline_seconds


def _backup(s):
    r = s.raw("POST", "/admin/backup", {})
    assert r.status == 200, r
    return r.json()["backup"]["id"]


@pytest.mark.parametrize("path,body,member", [
    # "branch" misspelt: the restore would go over the live database.
    ("/admin/restore", {"backup_id": "ID", "brnach": "b"}, "brnach"),
    # "to" under another name: the backup would go to the default repository.
    ("/admin/backup", {"type": "full", "repository": "offsite"}, "repository"),
    ("/admin/backups/ID/verify", {"restor": True}, "restor"),
])
def test_an_unknown_member_of_an_admin_body_is_refused_naming_it(server, path, body, member):
    assert_exec_ok(server.execute(["CREATE TABLE t (a)", "INSERT INTO t VALUES (1)"]))
    bid = _backup(server)
    assert_exec_ok(server.execute(["INSERT INTO t VALUES (2)"]))
    before = len(server.get_json("/admin/backups?local")["backups"])
    path = path.replace("ID", bid)
    body = {k: (bid if v == "ID" else v) for k, v in body.items()}
    r = server.raw("POST", path, body)
    assert r.status == 400, r
    err = r.json()["error"]
    assert member in err and "unknown" in err, err
    # Nothing was done: no restore over the live rows, no backup written.
    assert server.rows("SELECT a FROM t ORDER BY a") == [[1], [2]]
    assert len(server.get_json("/admin/backups?local")["backups"]) == before


def test_admin_bodies_with_only_known_members_still_work(server):
    assert_exec_ok(server.execute(["CREATE TABLE t (a)", "INSERT INTO t VALUES (1)"]))
    r = server.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    bid = r.json()["backup"]["id"]
    r = server.raw("POST", "/admin/backups/%s/verify" % bid, {"restore": True})
    assert r.status == 200 and r.json()["ok"] is True, r
    r = server.raw("POST", "/admin/restore", {"backup_id": bid, "branch": "b"})
    assert r.status == 200, r
    assert server.rows("SELECT a FROM t", branch="b") == [[1]]


@pytest.mark.parametrize("api,words", [
    ("y", ["HOST:PORT"]),
    ("http://", ["HOST:PORT"]),
    ("http://127.0.0.1:99999", ["invalid port"]),
    ("http://127.0.0.1:4001/db", ["http://HOST:PORT"]),
    ("http://" + "h" * 300 + ":4001", ["at most"]),
])
def test_join_with_an_api_addr_that_is_no_address_is_refused(server, api, words):
    # The member's own raft address, so that only api_addr is wrong: it would be
    # recorded as where peers forward to it.
    me = server.get_json("/status")["node"]
    r = server.raw("POST", "/join", {"id": me["id"], "addr": me["raft_addr"], "api_addr": api})
    assert r.status == 400, r
    err = r.json()["error"]
    assert "api_addr" in err and all(w in err for w in words), err
    rows = server.rows("SELECT value FROM _cairn_meta WHERE key = 'node:%d:api'" % me["id"])
    assert rows == [], rows


def _exchange(s, head, body=b""):
    """Sends a raw request (head without its blank line) and reads the answer to the
    connection's close: (status, body). A node that never answers fails on the timeout."""
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(10)) as c:
        c.sendall(head + b"Connection: close\r\n\r\n" + body)
        data = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("coding,length", [
    ("gzip", True), ("gzip", False), ("identity", False), ("chunked, gzip", False),
])
def test_a_transfer_encoding_other_than_chunked_is_answered_at_once(server, coding, length):
    # libmicrohttpd cannot find the end of such a body: without an answer up front the
    # client waited for one until the connection timed out, two minutes later.
    body = b'["CREATE TABLE te (a)"]'
    head = b"POST /db/execute HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %s\r\n" % coding.encode()
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    status, answer = _exchange(server, head, body)
    assert status == 501, (status, answer)
    err = json.loads(answer)["error"]
    assert coding in err and "Transfer-Encoding" in err, err
    assert server.rows("SELECT count(*) FROM sqlite_master WHERE name = 'te'") == [[0]]
    # chunked itself, in any case, is served.
    status, answer = _exchange(server, b"POST /db/execute HTTP/1.1\r\nHost: x\r\n"
                                       b"Transfer-Encoding: Chunked\r\n",
                               b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert status == 200 and "error" not in json.loads(answer)["results"][0], answer


@pytest.mark.parametrize("query", [
    "q=SELECT%201&q=SELECT%202",
    "q=SELECT%201&level=none&level=strong",
    "q=SELECT%201&db_timeout=1s&db_timeout=2s",
    "q=SELECT%201&timeout=1s&timeout=2s",
    "q=SELECT%201&branch=a&branch=b",
])
def test_a_valued_parameter_given_twice_is_refused(server, query):
    # rqlite takes the first value; reading the last would run another statement, or
    # at another level, than an rqlite client meant.
    name = query.split("&")[-1].split("=")[0]
    r = server.raw("GET", "/db/query?" + query)
    assert r.status == 400, r
    err = r.json()["error"]
    assert "?%s is given more than once" % name in err, err
    # Once each, and flags repeated, are served as before.
    r = server.raw("GET", "/db/query?q=SELECT%201&level=none&timings&timings&pretty")
    assert r.status == 200, r


def test_a_client_that_does_not_read_its_internal_backup_holds_nothing_back(server, tmp_path):
    # GET /db/backup?internal served the live file frozen for as long as the client took
    # to read it: one that stopped reading kept every checkpoint, snapshot and backup of
    # the node waiting (a snapshot timed out after a minute).
    s = server
    assert_exec_ok(s.execute([
        "CREATE TABLE big (b)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) "
        "INSERT INTO big SELECT randomblob(100000) FROM c"]))
    c = socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(30))
    try:
        c.sendall(b"GET /db/backup?internal HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(1)
            assert d, "closed before the answer's head"
            head += d
        assert head.startswith(b"HTTP/1.1 200"), head
        # The client reads no further; the node goes on.
        assert_exec_ok(s.execute(["INSERT INTO big VALUES (randomblob(100000))"]))
        r = s.raw("POST", "/admin/snapshot", timeout=20)
        assert r.status == 200, r
        r = s.raw("POST", "/admin/backup", {}, timeout=20)
        assert r.status == 200, r
        # What it reads in the end is the file as it was asked for, cairn's table in.
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                     .split(b":")[1])
        body = bytearray()
        while len(body) < length:
            d = c.recv(1 << 20)
            assert d, "closed after %d of %d bytes" % (len(body), length)
            body.extend(d)
    finally:
        c.close()
    f = tmp_path / "internal.db"
    f.write_bytes(bytes(body))
    import sqlite3
    con = sqlite3.connect(str(f))
    try:
        assert con.execute("SELECT count(*) FROM big").fetchone() == (200,)
        assert con.execute("SELECT count(*) FROM _cairn_meta").fetchone()[0] > 0
    finally:
        con.close()
