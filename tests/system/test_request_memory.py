"""The memory one request can make a node take, whatever its shape.

- A request of more statements than REQUEST_STATEMENTS_MAX (100,000) is refused with 400
  naming the limit, before anything runs. Before, one body of 5,000,000 "SELECT 1"
  (55 MB, within --max-body) on /db/query, /db/execute or /db/request took 3.2 GB: each
  statement's struct, result and JSON cost hundreds of bytes that no bound counted.
- A read's results count what every statement's result holds (its struct, its column
  names and types), not only its rows, against --max-result-size.
"""
import json

import pytest

from conftest import SANITIZED, assert_exec_ok

STATEMENTS_MAX = 100000


def vm_hwm_kib(pid):
    """The most memory the process has had resident (VmHWM), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/%d/status" % pid)


def select_ones(n):
    return ("[" + ",".join(['"SELECT 1"'] * n) + "]").encode()


@pytest.mark.parametrize("path", ["/db/query", "/db/execute", "/db/request"])
def test_a_request_of_millions_of_statements_is_refused_in_bounded_memory(server_factory, path):
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t(a)"]))
    body = select_ones(5000000)  # 55 MB, under the default --max-body of 64 MiB
    r = s.raw("POST", path, body, timeout=120)
    assert r.status == 400, r
    err = r.json()["error"]
    assert "more than %d statements" % STATEMENTS_MAX in err, err
    # The body and its parsed copy; not the gigabytes of 5,000,000 results.
    if not SANITIZED:
        assert vm_hwm_kib(s.pid) < 400 * 1024, vm_hwm_kib(s.pid)
    # At the limit the request runs, and the node serves on.
    r = s.raw("POST", path, select_ones(STATEMENTS_MAX), timeout=120)
    assert r.status == 200, r
    results = r.json()["results"]
    assert len(results) == STATEMENTS_MAX and results[-1]["values"] == [[1]], results[-1]
    assert s.scalar("SELECT 2") == 2
    # One statement over the limit is refused as well.
    r = s.raw("POST", path, select_ones(STATEMENTS_MAX + 1), timeout=120)
    assert r.status == 400 and "more than %d statements" % STATEMENTS_MAX in r.json()["error"], r


def test_what_each_statement_of_a_read_holds_counts_against_the_result_limit(server_factory):
    """100,000 statements of one one-column row: 42 bytes of row each, 4.2 MB in all,
    which the limit used to see; each result also holds its struct and its column's
    name (200 bytes here), 40 MB that it did not."""
    s = server_factory(extra_args=["--max-result-size", "10000000"])
    name = "c" * 200
    body = ("[" + ",".join(['"SELECT 1 AS %s"' % name] * STATEMENTS_MAX) + "]").encode()
    r = s.raw("POST", "/db/query", body, timeout=120)
    assert r.status == 200, r
    results = r.json()["results"]
    assert len(results) == STATEMENTS_MAX
    assert results[0] == {"columns": [name], "types": ["integer"], "values": [[1]]}, results[0]
    stopped = [i for i, res in enumerate(results) if "error" in res]
    assert stopped, "no statement reached the limit of 10000000 bytes"
    assert "--max-result-size" in results[stopped[0]]["error"], results[stopped[0]]
    # Those within it are answered; at most the 10 MB of the limit are.
    assert 1000 < stopped[0] < 10000000 // 200, stopped[0]
    assert s.scalar("SELECT 2") == 2


def read_counting(s, path, body, timeout=300):
    """POSTs body and reads the answer in pieces: its status, length, first and last
    bytes, without holding it whole."""
    import http.client
    from conftest import deadline_seconds
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(timeout))
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        n, head, tail = 0, b"", b""
        while True:
            piece = resp.read(1 << 20)
            if not piece:
                break
            head = head or piece[:300]
            tail = (tail + piece)[-300:]
            n += len(piece)
        return resp.status, n, head, tail
    finally:
        conn.close()


def test_an_associative_answer_many_times_its_results_is_sent_in_bounded_memory(server_factory):
    """?associative repeats a column's name in every row: 20,000 rows of one value under
    a 60,000-byte name hold 1 MB of results and make 1.2 GB of JSON, which the node built
    whole in memory (1.18 GB). Now the answer is made as the client reads it."""
    s = server_factory()
    name = "c" * 60000
    rows = 20000
    sql = ('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) '
           'SELECT i AS "%s" FROM n' % (rows, name))
    status, n, head, tail = read_counting(s, "/db/query?associative", json.dumps([sql]).encode())
    assert status == 200, head
    key = '"%s":' % name
    assert head.startswith(b'{"results":[{"types":{"' + b"c" * 200), head
    assert tail == ('{%s%d}]}]}\n' % (key, rows)).encode()[-300:], tail[-100:]
    expected = len('{"results":[{"types":{%s"integer"},"rows":[]}]}\n' % key) + sum(
        len('{%s%d}' % (key, i)) for i in range(1, rows + 1)) + rows - 1
    assert n == expected, (n, expected)
    if not SANITIZED:
        assert vm_hwm_kib(s.pid) < 300 * 1024, vm_hwm_kib(s.pid)
    assert s.scalar("SELECT 2") == 2


@pytest.mark.parametrize("flags", ["", "pretty", "associative&pretty", "blob_array&timings"])
def test_an_answer_sent_in_parts_is_the_same_document(server_factory, flags):
    """Long values (text with characters of 2 to 4 bytes and control characters, a
    BLOB) are written in slices and the answer in parts; it reads back as the values
    stored, with or without ?pretty."""
    s = server_factory()
    text = ("☃é𝄞a\x01\"\\" * 150000)
    blob = bytes(range(256)) * 3000
    assert_exec_ok(s.execute(["CREATE TABLE t(a TEXT, b BLOB, c INTEGER)",
                              ["INSERT INTO t VALUES(?, ?, 7)", text, list(blob)]]))
    r = s.raw("POST", "/db/query?" + flags, ["SELECT a, b, c FROM t", "SELECT 1"])
    assert r.status == 200, r
    assert len(r.body) > 1 << 20
    res = r.json()["results"]
    row = res[0]["rows"][0] if "associative" in flags else dict(zip("abc", res[0]["values"][0]))
    assert row["a"] == text and row["c"] == 7
    if "blob_array" in flags:
        assert row["b"] == list(blob)
    else:
        import base64
        assert base64.b64decode(row["b"]) == blob
    assert (res[1].get("values") or [[r_["1"] for r_ in res[1]["rows"]]]) == [[1]], res[1]
    if "timings" in flags:
        assert "time" in res[0] and "time" in r.json()
    if "pretty" in flags:
        assert r.body.startswith(b'{\n    "results": [\n') and r.body.endswith(b"}\n"), r.body[-50:]


def test_a_follower_forwards_an_answer_sent_in_parts_whole(make_cluster):
    """A read at level weak goes to the leader, whose answer of several parts (chunked)
    the follower relays to its client as one."""
    c = make_cluster(3)
    leader = c.leader()
    follower = c.followers(leader)[0]
    assert_exec_ok(leader.execute([
        "CREATE TABLE t(i INTEGER, v TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "INSERT INTO t SELECT i, printf('%0100d', i) FROM n"]))
    want = leader.query(["SELECT * FROM t ORDER BY i"], associative=True, level="weak")
    got = follower.query(["SELECT * FROM t ORDER BY i"], associative=True, level="weak")
    assert len(got["results"][0]["rows"]) == 20000
    assert got == want


def test_a_follower_relays_a_large_answer_in_bounded_memory(make_cluster):
    """A follower forwards a read to the leader and relays its answer. It held the whole
    answer in memory, as much as the JSON (here 300 MB of ?associative rows, 0.6 GB at
    the peak); now past 16 MiB the answer waits in an unlinked file in $TMPDIR."""
    c = make_cluster(3)
    leader = c.leader()
    follower = c.followers(leader)[0]
    name = "c" * 30000
    rows = 10000
    sql = ('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) '
           'SELECT i AS "%s" FROM n' % (rows, name))
    before = vm_hwm_kib(follower.pid)
    status, n, head, tail = read_counting(follower, "/db/query?associative&level=weak",
                                          json.dumps([sql]).encode())
    assert status == 200, head
    key = '"%s":' % name
    expected = len('{"results":[{"types":{%s"integer"},"rows":[]}]}\n' % key) + sum(
        len('{%s%d}' % (key, i)) for i in range(1, rows + 1)) + rows - 1
    assert n == expected and tail == ('{%s%d}]}]}\n' % (key, rows)).encode()[-300:], (n, expected)
    if not SANITIZED:
        assert vm_hwm_kib(follower.pid) - before < 100 * 1024, (before, vm_hwm_kib(follower.pid))
    assert follower.scalar("SELECT 2", level="weak") == 2


def inserts(n, returning, pad=540):
    v = "x" * pad
    sql = "INSERT INTO t(v) VALUES('%s')%s" % (v, " RETURNING *" if returning else "")
    return json.dumps([sql] * n).encode()


@pytest.mark.parametrize("path,returning,bound_mib", [("/db/request", True, 270),
                                                      ("/db/execute", False, 135)])
def test_a_large_write_costs_a_few_times_its_body(server_factory, path, returning, bound_mib):
    """A write of 100,000 statements in 58 MB: /db/request with RETURNING peaked at 350
    MiB above the node's start, /db/execute at 159 MiB. The request's body was held
    beside its parsed copy and its log entry until answered; each statement's one-row
    result kept room for 8 rows and a block twice its text. Now the body goes once the
    request is known to write, and results take what they hold."""
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    body = inserts(STATEMENTS_MAX, returning)
    assert len(body) > 57000000
    with open("/proc/%d/status" % s.pid) as f:
        base = [int(l.split()[1]) for l in f if l.startswith("VmRSS:")][0]
    r = s.raw("POST", path, body, timeout=300)
    assert r.status == 200, r
    results = r.json()["results"]
    assert len(results) == STATEMENTS_MAX
    if returning:
        assert results[-1]["values"] == [[STATEMENTS_MAX, "x" * 540]], results[-1]
    else:
        assert results[-1]["last_insert_id"] == STATEMENTS_MAX, results[-1]
    if not SANITIZED:
        grew = vm_hwm_kib(s.pid) - base
        assert grew < bound_mib * 1024, (grew, base)
    assert s.scalar("SELECT count(*) FROM t") == STATEMENTS_MAX
