"""rqlite query parameters that cairn does not implement are refused, never ignored.

Before, `?queue` ran the write synchronously and answered with full results, which
gorqlite's queued calls read as an acknowledgement and panicked on; `?freshness`,
`?qualify_columns` and the others were silently ignored, so the answer did not mean what
the client asked. Each now gets 400 naming the parameter, and nothing is written.
`-q` prints nothing but errors (it printed the "node ready" lines). `?blob_array` and
`?qualify_columns` have been implemented since, and are accepted.
"""
import subprocess

import pytest

from conftest import assert_exec_ok

UNSUPPORTED = ["queue", "wait", "freshness=1s", "freshness_strict", "noleader", "vacuum"]
# Implemented since (issue 15): test_blob_params.py, test_qualify_columns.py.
IMPLEMENTED = ["blob_array", "qualify_columns"]


@pytest.mark.parametrize("param", UNSUPPORTED)
def test_unimplemented_rqlite_parameter_is_refused(shared_server, table, param):
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (x)' % table]))
    for method, path, body in (("POST", "/db/execute", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("POST", "/db/request", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("GET", "/db/query?q=SELECT%201", None)):
        sep = "&" if "?" in path else "?"
        r = s.raw(method, path + sep + param, body)
        name = param.split("=")[0]
        assert r.status == 400 and "?%s" % name in r.json()["error"], (path, param, r)
    assert s.scalar('SELECT count(*) FROM "%s"' % table) == 0


@pytest.mark.parametrize("param", IMPLEMENTED)
def test_implemented_rqlite_parameter_is_accepted(shared_server, table, param):
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (x)' % table]))
    for method, path, body in (("POST", "/db/execute", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("POST", "/db/request", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("GET", "/db/query?q=SELECT%201", None)):
        sep = "&" if "?" in path else "?"
        r = s.raw(method, path + sep + param, body)
        assert r.status == 200 and "error" not in r.json()["results"][0], (path, param, r)
    assert s.scalar('SELECT count(*) FROM "%s"' % table) == 2


def test_quiet_prints_only_errors(server_factory):
    s = server_factory(extra_args=["-q"])
    assert_exec_ok(s.execute(["CREATE TABLE q(x)"]))
    s.stop()
    text = s.stderr_text()
    assert "node ready" not in text and "try  curl" not in text, text[-2000:]


def test_status_has_rqlite_layout_for_clients(server):
    """gorqlite's Open reads /status and needs store.leader ({"node_id", "addr"});
    cairn kept the leader under raft.leader only, so every Go application using the
    standard client failed with "store is not open"."""
    st = server.get_json("/status")
    store = st["store"]
    assert store["leader"] == {"node_id": "1", "addr": st["node"]["raft_addr"]}, store["leader"]
    assert store["raft"]["state"] == "Leader", store["raft"]
    assert store["sqlite3"]["version"] == st["store"]["sqlite_version"], store["sqlite3"]
    assert store["sqlite3"]["path"].endswith("db.sqlite"), store["sqlite3"]
    # cairn's own sections stay beside them.
    assert st["raft"]["state"] == "leader" and "applied_index" in store


def test_raft_address_may_be_a_host_name(server_factory, free_port):
    """rqlite's default form, --raft-addr localhost:4002, failed to start: libraft takes
    IPv4 literals only. cairnd resolves the name once at start."""
    port = free_port()
    s = server_factory(extra_args=["--raft-addr", "localhost:%d" % port])
    assert_exec_ok(s.execute(["CREATE TABLE h(x)"]))
    st = s.get_json("/status")
    assert st["node"]["raft_addr"] == "127.0.0.1:%d" % port, st["node"]
    s.restart()
    assert s.scalar("SELECT count(*) FROM h") == 0


def test_status_answers_200_while_the_node_starts(server_factory, free_port):
    """A node waiting for its cluster answered 503 on /status, which rqlite's clients do
    not expect (they expect connection refused or 200): it answers 200, saying it is
    starting and knows no leader."""
    import json as _json
    s = server_factory(start=False)
    other1, other2 = free_port(), free_port()
    s.extra_args = list(s.extra_args) + [
        "--bootstrap-expect", "3", "--join",
        "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d" % (s.http_port, other1, other2)]
    s.start(wait=False)
    from conftest import wait_until
    def status():
        try:
            r = s.raw("GET", "/status", timeout=2)
        except OSError:
            return None
        return r
    r = wait_until(status, 20, "cairnd to answer /status while it waits for its cluster")
    assert r.status == 200, r
    doc = r.json()
    assert doc["node"]["starting"] is True and doc["store"]["leader"] == {"node_id": "", "addr": ""}, doc
    assert s.raw("GET", "/db/query?q=SELECT%201").status == 503


def test_time_columns_answer_rfc3339_as_rqlite_does(server):
    """Values of DATE/DATETIME/TIMESTAMP columns came back as stored ("2004-02-14
    07:15:00"); rqlite answers RFC 3339 ("2004-02-14T07:15:00Z"), and pyrqlite's and
    gorqlite's time converters depend on it. Text in another form, other columns and
    other types are answered as stored."""
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE tm(d DATE, dt DATETIME, ts TIMESTAMP, t TEXT)"]))
    cases = [
        ("2004-02-14 07:15:00", "2004-02-14T07:15:00Z"),
        ("2004-02-14T07:15:00Z", "2004-02-14T07:15:00Z"),
        ("2004-02-14", "2004-02-14T00:00:00Z"),
        ("2004-02-14 07:15", "2004-02-14T07:15:00Z"),
        ("2004-02-14 07:15:00.123000", "2004-02-14T07:15:00.123Z"),
        ("2004-02-14 07:15:00+02:00", "2004-02-14T07:15:00+02:00"),
        ("2004-02-14T07:15:00.5-05:30", "2004-02-14T07:15:00.5-05:30"),
        ("2004-02-30 07:15:00", "2004-02-30 07:15:00"),  # no such day: as stored
        ("not a date", "not a date"),
        (1076742900, "2004-02-14T07:15:00Z"),
        (1076742900123, "2004-02-14T07:15:00.123Z"),
        (2.5, 2.5),
    ]
    for stored, want in cases:
        assert_exec_ok(s.execute(["DELETE FROM tm"]))
        assert_exec_ok(s.execute([["INSERT INTO tm VALUES(?, ?, ?, ?)", stored, stored, stored,
                                   stored]]))
        row = s.query("SELECT d, dt, ts, t FROM tm")["results"][0]["values"][0]
        assert row[:3] == [want, want, want], (stored, row)
        assert row[3] == str(stored), (stored, row)  # a TEXT column: as stored (as text)
        assoc = s.query("SELECT dt FROM tm", associative=True)["results"][0]["rows"][0]
        assert assoc["dt"] == want, (stored, assoc)


def raw_http(port, data, timeout=5.0):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                b = sock.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def test_hostile_http_is_answered_and_refused(server):
    """Conflicting Content-Length headers were accepted (request smuggling through a
    proxy), 3000 query parameters got the connection closed with no answer, and
    ?branch=a%00b acted on branch "a". Each is now a 400 with a message, and nothing is
    written."""
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE hh(x)"]))
    body = b'["INSERT INTO hh VALUES(1)"]'
    reply = raw_http(s.http_port, b"POST /db/execute HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Content-Length: 5\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    assert reply.startswith(b"HTTP/1.1 400") and b"Content-Length" in reply, reply[:300]
    reply = raw_http(s.http_port, b"POST /db/execute HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    assert reply.startswith(b"HTTP/1.1 400") or reply.startswith(b"HTTP/1.1 411") or \
        reply == b"", reply[:300]
    many = "&".join("p%d=1" % i for i in range(3000))
    r = s.raw("GET", "/db/query?q=SELECT%201&" + many)
    assert r.status in (400, 414) and "parameters" in r.json()["error"], r
    for path in ("/db/query?q=SELECT%201&branch=a%00b", "/db/query?q=SELECT%201&level=no%01ne",
                 "/db/query?q=SELECT%201%00"):
        r = s.raw("GET", path)
        assert r.status == 400 and r.json()["error"], (path, r)
    # SQL text may hold tabs and newlines.
    r = s.raw("GET", "/db/query?q=SELECT%0A%091")
    assert r.status == 200, r
    assert s.scalar("SELECT count(*) FROM hh") == 0


@pytest.mark.parametrize("param", ["queue=false", "wait=0", "freshness=0", "freshness_strict=false",
                                   "noleader=0", "vacuum=false"])
def test_unimplemented_rqlite_parameter_turned_off_is_accepted(shared_server, table, param):
    """README: a parameter given as =false or =0 is off. These were refused with 400 as
    if they had been asked for."""
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (x)' % table]))
    for method, path, body in (("POST", "/db/execute", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("POST", "/db/request", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("GET", "/db/query?q=SELECT%201", None)):
        sep = "&" if "?" in path else "?"
        r = s.raw(method, path + sep + param, body)
        assert r.status == 200 and "error" not in r.json()["results"][0], (path, param, r)
    assert s.scalar('SELECT count(*) FROM "%s"' % table) == 2


def test_level_auto_is_accepted(shared_server, table):
    """rqlite's ?level=auto (none on a node that does not vote, weak on a voter) was
    refused as an unknown level. On a voter it reads as weak."""
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (x)' % table, 'INSERT INTO "%s" VALUES(5)' % table]))
    for method, path, body in (("GET", '/db/query?level=auto&q=SELECT%%20x%%20FROM%%20"%s"' % table,
                                None),
                               ("POST", "/db/query?level=auto", ['SELECT x FROM "%s"' % table]),
                               ("POST", "/db/request?level=auto", ['SELECT x FROM "%s"' % table])):
        r = s.raw(method, path, body)
        assert r.status == 200 and r.json()["results"][0]["values"] == [[5]], (path, r)
    r = s.raw("GET", "/db/query?level=bogus&q=SELECT%201")
    assert r.status == 400 and "auto" in r.json()["error"], r
