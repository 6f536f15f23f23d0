"""Request body limits (issue 15): every request body is bounded, POST /db/load by its own
--max-load-body (its body streams into a file, never into memory) and every other one by
--max-body. Routing comes first: a path that no endpoint serves answers 404 and a method
an endpoint does not take 405 whatever the body's size; only a request some endpoint
would serve is answered 413, with a JSON error naming the limit and the flag that sets
it. Nothing of a refused request is kept: a load over its limit leaves no temporary file
behind, and stops writing one as soon as it crosses the limit."""

import http.client
import json
import socket
import sqlite3
import subprocess
import time

import pytest

from conftest import BUILD, assert_exec_ok, deadline_seconds, wait_until

MAX_BODY = 1024
TIB = 1 << 40


def sqlite_image(path, rows):
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE loaded (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO loaded(v) VALUES(?)", [("v%d" % (i % 100),) for i in range(rows)])
    con.commit()
    con.close()
    return path.read_bytes()


def load_temp_files(s):
    return sorted(p.name for p in s.data_dir.iterdir() if p.name.startswith("load-"))


def error_of(r, status):
    assert r.status == status, "%s %s: expected HTTP %d, got %r" % (r.method, r.path, status, r)
    assert "json" in r.headers.get("content-type", ""), r
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], r
    return doc["error"]


def chunked(s, method, path, pieces, headers=None):
    """Sends the body in chunks (Transfer-Encoding: chunked, no Content-Length) and reads
    the whole answer: the server must read a refused body to its end and answer."""
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(30))
    try:
        hdrs = {"Transfer-Encoding": "chunked"}
        hdrs.update(headers or {})
        conn.request(method, path, body=iter(pieces), encode_chunked=True, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def head_only(s, method, path, length, extra=""):
    """Sends only the headers of a request announcing `length` bytes with Expect:
    100-continue, as curl does for a large upload, and returns what the server answers
    first (status line and body), or None when it says nothing within a few seconds."""
    sock = socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(10))
    try:
        sock.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                      "Expect: 100-continue\r\n%s\r\n" % (method, path, length, extra)).encode())
        sock.settimeout(deadline_seconds(5))
        data = b""
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and b" 100 " in head.split(b"\r\n")[0]:
                    return head.split(b"\r\n")[0], b""  # asked for the body
                if sep:
                    clen = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                    if clen and len(rest) >= int(clen[0].split(b":")[1]):
                        return head.split(b"\r\n")[0], rest
        except socket.timeout:
            pass
        return (data.split(b"\r\n")[0], b"") if data else None
    finally:
        sock.close()


@pytest.fixture
def small(server_factory):
    """A node with a 1 KiB request body limit and a table of 3 rows."""
    s = server_factory(extra_args=["--max-body", str(MAX_BODY)])
    assert_exec_ok(s.execute(["CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(s.execute(["INSERT INTO keep(v) VALUES('a'), ('b'), ('c')"]))
    return s


def body_of_size(n, table="keep"):
    """A JSON array of one INSERT of exactly n bytes."""
    base = json.dumps([["INSERT INTO %s(v) VALUES(?)" % table, ""]])
    body = json.dumps([["INSERT INTO %s(v) VALUES(?)" % table, "x" * (n - len(base))]]).encode()
    assert len(body) == n
    return body


# ---------------------------------------------------------------------------
# --max-body: exactly at the limit, one byte over, the error names the flag


def test_body_at_the_limit_is_served_and_one_byte_over_is_413_naming_the_flag(small):
    s = small
    r = s.raw("POST", "/db/execute", body_of_size(MAX_BODY))
    assert r.status == 200 and "error" not in r.json()["results"][0], r
    for path in ("/db/execute", "/db/query", "/db/request"):
        err = error_of(s.raw("POST", path, body_of_size(MAX_BODY + 1)), 413)
        assert str(MAX_BODY) in err and "--max-body" in err, err
    assert s.scalar("SELECT count(*) FROM keep") == 4


def test_admin_bodies_are_bounded_by_max_body(small):
    """Every body, not only the data API's: a JSON admin request too."""
    s = small
    body = json.dumps({"type": "full", "pad": "p" * 2000}).encode()
    err = error_of(s.raw("POST", "/admin/backup", body), 413)
    assert "--max-body" in err and str(MAX_BODY) in err, err
    assert s.get_json("/admin/backups")["backups"] == [], "a refused backup request made a backup"


def test_chunked_body_over_max_body_is_413_and_read_to_its_end(small):
    s = small
    piece = b" " * 300
    status, _, data = chunked(s, "POST", "/db/execute", [b"["] + [piece] * 5 + [b"]"],
                              headers={"Content-Type": "application/json"})
    assert status == 413, (status, data[:300])
    assert "--max-body" in json.loads(data)["error"], data
    # Exactly at the limit in chunks: served.
    body = body_of_size(MAX_BODY)
    status, _, data = chunked(s, "POST", "/db/execute", [body[i:i + 100] for i in range(0, len(body), 100)])
    assert status == 200 and "error" not in json.loads(data)["results"][0], data
    assert s.scalar("SELECT count(*) FROM keep") == 4


# ---------------------------------------------------------------------------
# routing before limiting


@pytest.mark.parametrize("path", ["/no/such/endpoint", "/db/executee", "/admin/nope", "/admin/backups/x/y"])
def test_unknown_path_with_a_large_body_is_404(small, path):
    s = small
    big = b"[" + b" " * 5000 + b"]"
    err = error_of(s.raw("POST", path, big), 404)
    assert "no such endpoint" in err, err
    status, _, data = chunked(s, "POST", path, [b" " * 1000] * 4)
    assert status == 404, (status, data[:300])


def test_wrong_method_with_a_large_body_is_405(small):
    s = small
    big = b" " * 5000
    r = s.raw("PUT", "/db/execute", big)
    error_of(r, 405)
    assert r.headers.get("allow") == "POST", r.headers
    r = s.raw("DELETE", "/db/load", big)
    error_of(r, 405)
    assert r.headers.get("allow") == "POST", r.headers


def test_expect_100_continue_over_the_limit_is_answered_before_the_body(small, server_factory):
    """curl announces a large upload with Expect: 100-continue: a body over the limit is
    refused at once rather than sent for nothing; an unknown path is 404 the same way."""
    s = small
    got = head_only(s, "POST", "/db/execute", MAX_BODY + 1, "Content-Type: application/json\r\n")
    assert got is not None and b" 413 " in got[0], got
    assert "--max-body" in json.loads(got[1])["error"], got
    got = head_only(s, "POST", "/nowhere", 10 * MAX_BODY)
    assert got is not None and b" 404 " in got[0], got
    # Within the limit the server asks for the body, as before.
    got = head_only(s, "POST", "/db/execute", MAX_BODY)
    assert got is not None and b" 100 " in got[0], got
    # A load over --max-load-body, announced as 2 TiB.
    got = head_only(s, "POST", "/db/load", 2 * TIB, "Content-Type: application/octet-stream\r\n")
    assert got is not None and b" 413 " in got[0], got
    assert "--max-load-body" in json.loads(got[1])["error"], got
    assert load_temp_files(s) == []


# ---------------------------------------------------------------------------
# --max-load-body


def test_load_at_its_limit_is_served_and_over_it_is_413(server_factory, tmp_path):
    image = sqlite_image(tmp_path / "src.db", 300)
    # --max-body is far below the image: loads have their own limit.
    s = server_factory(extra_args=["--max-body", str(MAX_BODY), "--max-load-body", str(len(image))])
    st = s.get_json("/status")["http"]
    assert st["max_body"] == MAX_BODY and st["max_load_body"] == len(image), st

    octet = {"Content-Type": "application/octet-stream"}
    r = s.raw("POST", "/db/load", image, headers=octet)
    assert r.status == 200, r
    assert s.scalar("SELECT count(*) FROM loaded") == 300

    err = error_of(s.raw("POST", "/db/load", image + b"\0", headers=octet), 413)
    assert str(len(image)) in err and "--max-load-body" in err, err
    status, _, data = chunked(s, "POST", "/db/load", [image, b"\0" * 10], headers=octet)
    assert status == 413 and "--max-load-body" in json.loads(data)["error"], (status, data[:300])
    assert load_temp_files(s) == []
    assert s.scalar("SELECT count(*) FROM loaded") == 300
    assert_exec_ok(s.execute(["INSERT INTO loaded(v) VALUES('after')"]))


def test_load_over_its_limit_stops_writing_its_file_at_once(server_factory, tmp_path):
    """A chunked load with no Content-Length: the temporary file goes as soon as the body
    crosses the limit, not once the client is done sending (or the disk is full)."""
    limit = 64 * 1024
    s = server_factory(extra_args=["--max-load-body", str(limit)])
    sock = socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(20))
    try:
        sock.sendall(b"POST /db/load HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        first = b"SQLite format 3\0" + b"\1" * (limit // 2)
        sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        wait_until(lambda: load_temp_files(s), 10, "the load's temporary file to appear")
        more = b"\2" * limit
        sock.sendall(b"%x\r\n%s\r\n" % (len(more), more))
        wait_until(lambda: load_temp_files(s) == [], 10,
                   "the temporary file of a load over its limit to be removed")
        sock.sendall(b"0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:300]
    assert b"--max-load-body" in data, data
    assert s.running()


def test_max_load_body_default_and_flag_checks(server, cairnd_bin):
    st = server.get_json("/status")["http"]
    assert st["max_load_body"] == TIB and st["max_body"] == 64 << 20, st
    out = subprocess.run([str(cairnd_bin), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--max-load-body" in out.stdout, out.stdout
    for bad in ("0", "-1", "abc", "1k"):
        p = subprocess.run([str(cairnd_bin), "--max-load-body", bad], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 2 and "--max-load-body" in p.stderr, (bad, p.returncode, p.stderr)


@pytest.mark.cluster
def test_a_load_sent_to_a_follower_is_bounded_there_and_forwarded_within_it(tmp_path):
    from clusterutil import Cluster
    image = sqlite_image(tmp_path / "src.db", 200)
    c = Cluster(tmp_path / "c", n=2, mode="join", name="bl",
                extra_args=["--max-load-body", str(len(image))])
    try:
        leader = c.start()
        follower = c.followers(leader)[0]
        octet = {"Content-Type": "application/octet-stream"}
        err = error_of(follower.raw("POST", "/db/load", image + b"\0" * 512, headers=octet), 413)
        assert "--max-load-body" in err, err
        assert load_temp_files(follower) == [] and load_temp_files(leader) == []
        r = follower.raw("POST", "/db/load", image, headers=octet)
        assert r.status == 200, r
        assert leader.scalar("SELECT count(*) FROM loaded") == 200
    finally:
        problems = c.teardown()
        assert not problems, problems
