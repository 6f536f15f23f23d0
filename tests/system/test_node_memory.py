"""The memory many requests together make a node take: a node-wide budget
(cairnd --max-request-memory) for request bodies being received and the results of
answers not yet read.

Each request has its own bounds (--max-body, --max-result-size), but nothing bounded how
many held them at once: clients that never read their answers each kept their results
until the 120 s inactivity timeout (3 of them held 426 MB), and clients that stall in
the middle of their bodies each kept what they had sent. Now a request that finds no
room waits a moment, then is answered 503 with Retry-After naming the budget (or, for a
read whose results outgrow what is left, an error in its results naming it), while the
node's own work (/status, /readyz) goes on.
"""
import http.client
import json

import pytest

from conftest import SANITIZED, assert_exec_ok, deadline_seconds, wait_until
from test_request_memory import vm_hwm_kib

MIB = 1 << 20


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def start_read(s, sql):
    """POSTs a read and reads its status and headers only, as a client that does not
    read its answer: the node holds the results until the connection goes."""
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(120))
    conn.request("POST", "/db/query", body=json.dumps([sql]).encode(),
                 headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_clients_that_do_not_read_their_answers_hold_at_most_the_budget(server_factory):
    budget = 128 * MIB
    s = server_factory(extra_args=["--max-request-memory", str(budget)])
    # 300,000 rows of 100 characters: a read of them holds some 40 MB of results.
    assert_exec_ok(s.execute([
        "CREATE TABLE t(i INTEGER, v TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
        "INSERT INTO t SELECT i, printf('%0100d', i) FROM n"]))
    base = vm_rss_kib(s.pid)
    clients = [start_read(s, "SELECT * FROM t") for _ in range(8)]
    assert all(resp.status == 200 for _, resp in clients), [r.status for _, r in clients]
    # The node's own work goes on while the budget is taken.
    assert s.raw("GET", "/status").status == 200
    assert s.raw("GET", "/readyz").status == 200
    grew = vm_hwm_kib(s.pid) - base
    # A new request finds no room: a read's results stop with an error naming the budget.
    r = s.raw("POST", "/db/query", ["SELECT * FROM t"])
    assert r.status in (200, 503), r
    if r.status == 503:
        assert r.headers.get("retry-after") == "1", r.headers
        assert "--max-request-memory" in r.json()["error"], r.json()
    else:
        assert "--max-request-memory" in r.json()["results"][0]["error"], r.body[:300]
    full, refused = 0, 0
    for conn, resp in clients:
        res = json.loads(resp.read())["results"][0]
        conn.close()
        if "error" in res:
            assert "--max-request-memory" in res["error"], res["error"]
            refused += 1
        else:
            assert len(res["values"]) == 300000
            full += 1
    assert 1 <= full <= 3 and refused == 8 - full, (full, refused)
    if not SANITIZED:
        # The results held (the budget) and one read's work; 8 reads held 320 MB.
        assert grew < (budget + 48 * MIB) // 1024, (grew, base)
    # Once the answers are read, the budget is free again.
    wait_until(lambda: len(s.query(["SELECT * FROM t"])["results"][0].get("values", [])) == 300000,
               30, "a full read once the budget is given back")


def test_bodies_received_in_part_hold_at_most_the_budget(server_factory):
    """Clients that send 40 MB of a 60 MB body and stall each held it (and its
    buffer's doubling); past the budget a body is dropped as it arrives and its request
    answered 503 once it has been sent."""
    budget = 100 * MIB
    s = server_factory(extra_args=["--max-request-memory", str(budget)])
    assert_exec_ok(s.execute(["CREATE TABLE t(a)"]))
    length = 60000000
    stmt = b'["INSERT INTO t VALUES(\''
    tail = b'\')"]'
    body = stmt + b"x" * (length - len(stmt) - len(tail)) + tail
    sent = 40000000
    base = vm_rss_kib(s.pid)
    conns = []
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port,
                                          timeout=deadline_seconds(120))
        conn.putrequest("POST", "/db/execute")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        conn.send(body[:sent])
        conns.append(conn)
    # Every byte sent so far has been taken in (kept or dropped) once the node's memory
    # stops growing; the node still answers its own.
    assert s.raw("GET", "/status").status == 200
    assert s.raw("GET", "/readyz").status == 200
    grew = vm_hwm_kib(s.pid) - base
    statuses = []
    for conn in conns:
        conn.send(body[sent:])
        resp = conn.getresponse()
        statuses.append((resp.status, resp.getheader("Retry-After"), resp.read()))
        conn.close()
    ok = [st for st in statuses if st[0] == 200]
    busy = [st for st in statuses if st[0] == 503]
    assert ok and busy and len(ok) + len(busy) == 5, [st[:2] for st in statuses]
    for _, retry, text in busy:
        assert retry == "1" and b"--max-request-memory" in text, text[:300]
    assert s.scalar("SELECT count(*) FROM t") == len(ok)
    if not SANITIZED:
        # Five bodies held 200 MB.
        assert grew < (budget + 32 * MIB) // 1024, (grew, base)
