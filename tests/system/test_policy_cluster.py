"""The statement policy and bounded execution on a three-node cluster.

Every node applies each replicated write to its own SQLite file, so whatever a write
leaves outside the file (temp objects, connection or process state) is lost when a node
restarts or installs a snapshot, and the replicas then differ. cairn refuses such
statements with 400 before proposing anything; runs every write statement under a VM
step budget carried in its log entry (the leader's --write-step-limit and
--max-value-size hold on every node and on every replay); keeps strong reads out of
the log; and refuses SQL text holding a NUL byte before proposing it.

Waiting is always a poll with a deadline; the one fixed window (test 4) is a CPU
measurement, during which the test polls /readyz.
"""

import json
import os
import signal
import time
import urllib.parse

import pytest

from clusterutil import http_call, json_or_none
from conftest import deadline_seconds, wait_until
from test_cluster import cluster_factory  # noqa: F401  (the fixture)
from test_durability import _remove_db_files

pytestmark = pytest.mark.cluster

POLICY = "refused by cairn's statement policy"
NUL_MSG = "NUL byte"

# Statements the policy refuses. Every one of them, had it taken effect on the
# connection applying it, would make that node differ from the others (or from itself
# after a restart or a snapshot install); the NUL byte made every node spin.
REFUSED = [
    "CREATE TEMP TABLE x(a)",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO t2 VALUES(new.a); END",
    "PRAGMA case_sensitive_like=1",
    "PRAGMA recursive_triggers=1",
    "PRAGMA hard_heap_limit=1000000",
    "PRAGMA soft_heap_limit=1000",
    "PRAGMA schema_version=5",
    "PRAGMA cache_size=10",
    "PRAGMA mmap_size=0",
    "SAVEPOINT a",
    "RELEASE a",
    "CREATE TRIGGER meta AFTER INSERT ON t BEGIN INSERT INTO _cairn_meta VALUES('k', 'v'); END",
    "INSERT INTO t VALUES(1)\u0000",
]

SCHEMA = [
    "CREATE TABLE t(a)",
    "CREATE TABLE t2(a)",
    "CREATE TABLE x(a)",  # a temp x would shadow it on one node
    "CREATE TABLE words(w TEXT)",
    "CREATE TABLE hits(probe INTEGER, n INTEGER)",
    "CREATE TABLE chain(probe INTEGER, n INTEGER)",
    "CREATE TRIGGER grow AFTER INSERT ON chain WHEN new.n < 5 "
    "BEGIN INSERT INTO chain(probe, n) VALUES(new.probe, new.n + 1); END",
    "CREATE TABLE det(probe INTEGER, r INTEGER, ts TEXT, ch INTEGER)",
    "INSERT INTO words VALUES('apple'), ('Apple'), ('APPLE'), ('pear')",
]

NEVER_ENDING = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "


def gen(n):
    """An INSERT of n rows into big (about 25 VM steps a row)."""
    return ("INSERT INTO big(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
            "SELECT x + 1 FROM c WHERE x < %d) SELECT x FROM c)" % n)


# ---------------------------------------------------------------------------
# helpers


def post(node, path, body, timeout=15.0):
    return http_call(node.http_port, "POST", path, body, timeout=deadline_seconds(timeout))


def results(resp, what):
    st, _, data, _ = resp
    assert st == 200, "%s: HTTP %d %r" % (what, st, data[:1000])
    doc = json_or_none(data)
    assert isinstance(doc, dict) and isinstance(doc.get("results"), list), "%s: %r" % (what, data[:1000])
    return doc["results"]


def ok(resp, what):
    res = results(resp, what)
    assert all("error" not in r for r in res), "%s: %r" % (what, res)
    return res


def refusal(resp, what):
    st, _, data, _ = resp
    doc = json_or_none(data)
    assert st == 400 and isinstance(doc, dict) and isinstance(doc.get("error"), str), (
        "%s: want 400 with a JSON error, got HTTP %d %r" % (what, st, data[:1000]))
    return doc["error"]


def last_index(node):
    return node.raft().get("last_log_index")


def user_tables(node):
    return [r[0] for r in node.local_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cairn%' ESCAPE '\\' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]


def contents(node):
    """Every user table's rows, the schema and the schema cookie of node's own copy."""
    tables = user_tables(node)
    stmts = ["SELECT * FROM %s ORDER BY rowid" % t for t in tables]
    stmts += ["SELECT type, name, sql FROM sqlite_master ORDER BY name", "PRAGMA schema_version"]
    res = results(post(node, "/db/query?level=none", stmts), "read %s" % node.name)
    assert all("error" not in r for r in res), res
    return {name: r.get("values", []) for name, r in zip(tables + ["<schema>", "<cookie>"], res)}


def in_raft_log(node, marker):
    """Whether any file of node's Raft log holds the bytes of marker (entries under
    16 KiB are stored uncompressed)."""
    d = node.data_dir / "raft"
    for name in sorted(os.listdir(d)):
        with open(d / name, "rb") as f:
            if marker in f.read():
                return True
    return False


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def strong_read_path(sql, **params):
    return "/db/query?" + urllib.parse.urlencode(dict(params, level="strong", q=sql))


# ---------------------------------------------------------------------------
# 1. refused statements, restarts, snapshot installs, leader restart


class Policy:
    """Sends the refused statements and the probes of test 1 to a cluster."""

    def __init__(self, c):
        self.c = c
        self.probes = 0
        self.sent = 0

    def refuse_all(self, nodes):
        """Every refused statement, alone, inside a batch of ordinary writes and inside
        one multi-statement string, each sent to one of `nodes` in turn: 400 naming
        the statement, nothing proposed (the leader's log does not grow) and nothing
        written."""
        leader = self.c.leader()
        forms = []
        for sql in REFUSED:
            forms.append(([sql], 1, sql, ""))
            forms.append(([["INSERT INTO t(a) VALUES(?)", -1], ["INSERT INTO x(a) VALUES(?)", -2], sql,
                           ["INSERT INTO t(a) VALUES(?)", -3]], 3, sql, ""))
            forms.append((["INSERT INTO t(a) VALUES(-4); " + sql], 1, sql, "?transaction"))
        before, idx0 = contents(leader), last_index(leader)
        for body, pos, sql, q in forms:
            node = nodes[self.sent % len(nodes)]
            self.sent += 1
            what = "%r in %r via %s" % (sql, body, node.name)
            err = refusal(post(node, "/db/execute" + q, body), what)
            assert ("statement %d" % pos) in err, "%s: the error does not say which statement: %r" % (what, err)
            if "\u0000" in sql:
                assert NUL_MSG in err, "%s: %r" % (what, err)
            else:
                assert POLICY in err and sql[:14] in err, "%s: %r" % (what, err)
            assert last_index(leader) == idx0, "%s: something was proposed" % what
        assert contents(leader) == before, "a refused request changed %s's database" % leader.name

    def too_big(self, node):
        """SELECT randomblob(500000000) is not refused before proposing (its size is known
        when it runs) but fails on every node under the entry's value limit; with
        ?transaction the batch it is in writes nothing."""
        res = results(post(node, "/db/execute", ["SELECT randomblob(500000000)"]), "randomblob via %s" % node.name)
        assert len(res) == 1 and "too big" in res[0].get("error", ""), res
        leader = self.c.leader()
        before = contents(leader)
        res = results(post(node, "/db/execute?transaction", [["INSERT INTO t(a) VALUES(?)", -5],
                                                               "SELECT randomblob(500000000)"]),
                      "randomblob in a transaction via %s" % node.name)
        assert any("too big" in r.get("error", "") for r in res), res
        assert contents(leader) == before, "the failed ?transaction batch wrote something"

    def probe(self, node):
        """Ordinary writes that come out differently if any refused statement had taken
        effect on the connection applying them: a temp trigger on t (rows in t2), a
        temp x (rows not in main.x), case-sensitive LIKE (1 hit, not 3), recursive
        triggers (5 chain rows, not 2); and random(), datetime('now'), changes()."""
        self.probes += 1
        k = self.probes
        ok(post(node, "/db/execute", [
            ["INSERT INTO t(a) VALUES(?)", k],
            ["INSERT INTO x(a) VALUES(?)", k],
            ["INSERT INTO hits(probe, n) SELECT ?, count(*) FROM words WHERE w LIKE 'apple'", k],
            ["INSERT INTO chain(probe, n) VALUES(?, 1)", k],
            "UPDATE words SET w = w WHERE w LIKE 'APPLE'",
            ["INSERT INTO det(probe, r, ts, ch) VALUES(?, random(), datetime('now'), changes())", k],
        ]), "probe %d via %s" % (k, node.name))

    def round(self):
        leader = self.c.leader()
        nodes = [leader] + self.c.followers(leader)
        self.probe(nodes[0])
        self.refuse_all(nodes)
        self.probe(nodes[1])
        self.too_big(nodes[2])
        self.probe(nodes[2])
        self.probe(nodes[0])

    def check_probes(self, node):
        """The probes' effects on node, as if nothing refused had ever run."""
        k = self.probes
        rows = node.local_rows
        assert rows("SELECT count(*) FROM t2") == [[0]], "%s: a temp trigger fired" % node.name
        assert rows("SELECT a FROM x WHERE a > 0 ORDER BY a") == [[i] for i in range(1, k + 1)], node.name
        assert rows("SELECT DISTINCT n FROM hits") == [[3]], "%s: LIKE became case sensitive" % node.name
        assert rows("SELECT probe, count(*), max(n) FROM chain GROUP BY probe ORDER BY probe") == [
            [i, 2, 2] for i in range(1, k + 1)], "%s: triggers recursed" % node.name
        got = rows("SELECT count(*), count(DISTINCT r), min(ch), max(ch), min(length(ts)) FROM det")
        assert got == [[k, k, 3, 3, 19]], "%s: det %r" % (node.name, got)


def test_refused_statements_keep_replicas_identical(cluster_factory, tmp_path):  # noqa: F811
    """Before the policy, CREATE TEMP TABLE/TRIGGER, PRAGMA case_sensitive_like=1 or
    recursive_triggers=1 (and the other PRAGMAs, savepoints, a trigger writing
    _cairn_meta) were proposed and applied: their effect lived on the applying
    connection only, so after a follower restarted or installed a snapshot, or the
    leader restarted, the same later writes gave different rows (and a NUL byte spun
    every node). Now each is refused with 400 before proposing, and every node ends
    with the same rows and the same pages."""
    c = cluster_factory(3, extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"])
    p = Policy(c)
    ok(post(c.leader(), "/db/execute", SCHEMA), "schema")
    p.round()

    # A follower restarts (SIGTERM, same data dir).
    c.followers()[0].restart()
    c.wait_converged()
    p.round()

    # A follower misses enough entries that it must install the leader's snapshot.
    leader = c.leader()
    down = c.followers(leader)[0]
    behind = down.applied_index()
    installs = down.stderr_text().count("database restored from snapshot")
    assert down.stop() == 0
    up = c.followers(leader)[0]
    for i in range(12):
        p.probe(leader if i % 2 else up)
    wait_until(lambda: (leader.raft().get("last_snapshot_index") or 0) > behind + 6, 30,
               "%s to snapshot well past index %d" % (leader.name, behind))
    down.start(wait=True)
    c.wait_converged()
    assert down.stderr_text().count("database restored from snapshot") > installs, (
        "%s caught up without installing a snapshot:\n%s" % (down.name, down.stderr_tail(4000)))
    p.round()

    # The leader restarts (SIGTERM hands leadership over).
    old = c.leader()
    old.restart()
    c.wait_converged()
    p.round()

    c.wait_converged(timeout=60)
    for n in c.nodes:
        p.check_probes(n)
    want = contents(c.nodes[0])
    for n in c.nodes[1:]:
        got = contents(n)
        differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        assert not differ, "%s and %s differ in %s" % (c.nodes[0].name, n.name, differ)
    for table in user_tables(c.nodes[0]):
        c.assert_same_rows(table)
    c.assert_same_files()
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---------------------------------------------------------------------------
# 2. the leader's limits travel in the entry


def test_leader_step_and_value_limits_hold_on_every_node(cluster_factory, tmp_path):  # noqa: F811
    """Before, a write ran unbounded: a never-ending recursive INSERT ran forever on
    every node (and on every replay), and limits, were there any per node, would make
    nodes disagree. Now node 1, the leader, alone has --write-step-limit 5000000 and
    --max-value-size 1000000; the followers have the defaults (100,000,000 steps,
    64 MiB), yet a write over the leader's limits fails on every node, also when a
    follower rebuilds its database from the log."""
    c = cluster_factory(3, mode="join", start=False)
    c.nodes[0].extra_args = ["--write-step-limit", "5000000", "--max-value-size", "1000000"]
    leader = c.start()
    assert leader is c.nodes[0], "node 1 formed the cluster alone and should lead"
    ok(post(leader, "/db/execute", ["CREATE TABLE big(n INTEGER PRIMARY KEY, v)", "CREATE TABLE blobs(b BLOB)"]),
       "schema")
    f = c.followers(leader)

    def run(node, stmts, what):
        t0 = time.monotonic()
        res = results(post(node, "/db/execute", stmts, timeout=60), "%s via %s" % (what, node.name))
        secs = time.monotonic() - t0
        assert len(res) == len(stmts), res
        assert secs < deadline_seconds(10), "%s took %.1fs" % (what, secs)
        return res

    res = run(f[0], [NEVER_ENDING + "INSERT INTO big(v) SELECT x FROM c"], "never-ending INSERT")
    assert "write step limit" in res[0].get("error", ""), res
    assert "error" not in run(f[1], [gen(1000)], "1,000 rows")[0]
    res = run(leader, [gen(1000), gen(600000)], "1,000 and 600,000 rows")
    # 600,000 rows take about 15,000,000 steps: over the leader's limit, well within
    # the followers' own. (Its interrupt rolls back the request's transaction: the
    # 1,000 rows before it are reported rolled back, or kept.)
    assert "write step limit" in res[1].get("error", ""), res
    want_big = 1000 if "error" in res[0] else 2000
    print("1,000 rows before the over-limit statement of the same request: %r" % res[0])
    assert "error" not in res[0] or res[0]["error"].startswith("rolled back: "), res
    res = run(f[1], ["INSERT INTO blobs VALUES(randomblob(500000))",
                     "INSERT INTO blobs VALUES(randomblob(2000000))"], "blobs")
    assert "error" not in res[0] and "too big" in res[1].get("error", ""), res

    idx = c.wait_converged(timeout=60)
    for n in c.nodes:
        assert n.applied_index() == idx
        assert n.local_rows("SELECT count(*) FROM big") == [[want_big]], n.name
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM blobs") == [[1, 500000]], n.name
    c.assert_same_rows("big")
    c.assert_same_rows("blobs")
    c.assert_same_files()

    # Every node restarts; the followers rebuild their databases from their logs
    # under their default flags. All are ready promptly and still agree.
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    for n in f:
        assert "db.sqlite" in _remove_db_files(n)
    for n in c.nodes:
        n.start(wait=False)
    for n in c.nodes:
        n.wait_ready(timeout=20)
    c.leader()
    c.wait_converged(timeout=30)
    for n in c.nodes:
        assert n.local_rows("SELECT count(*) FROM big") == [[want_big]], n.name
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM blobs") == [[1, 500000]], n.name
    c.assert_same_files()
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---------------------------------------------------------------------------
# 3. strong reads stay out of the log


def test_never_ending_strong_read_is_bounded_and_never_replayed(cluster_factory):  # noqa: F811
    """Before, ?level=strong put the read's SQL in the Raft log: a read that never
    ends was run by every node, forever, and again on every restart, so no node came
    back. Now the leader runs it under its time limit (?db_timeout=1s), whether the
    request reaches it or a follower, the read's SQL is in no node's log, and after a
    kill -9 of every node all come back ready and take writes."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(a)", "INSERT INTO t VALUES('write-marker-5b1e')"]), "schema")
    read = NEVER_ENDING + "SELECT count(*), 'read-marker-9c2f' FROM c"
    for node in [c.followers(leader)[0], leader]:
        t0 = time.monotonic()
        st, _, data, _ = http_call(node.http_port, "GET", strong_read_path(read, db_timeout="1s"),
                                   timeout=deadline_seconds(20))
        secs = time.monotonic() - t0
        assert st == 200, (node.name, st, data[:500])
        res = json.loads(data)["results"]
        assert len(res) == 1 and "time limit" in res[0].get("error", ""), (node.name, res)
        assert secs < deadline_seconds(5), "%s answered after %.1fs" % (node.name, secs)
        print("strong read via %s: time limit after %.2fs" % (node.name, secs))
    c.wait_converged()

    for n in c.nodes:
        n.kill(signal.SIGKILL)
    for n in c.nodes:
        assert in_raft_log(n, b"write-marker-5b1e"), "%s: the write is not in the log as plain text" % n.name
        assert not in_raft_log(n, b"read-marker-9c2f"), "%s: the strong read's SQL is in the Raft log" % n.name
    for n in c.nodes:
        n.start(wait=False)
    for n in c.nodes:
        n.wait_ready(timeout=20)
        wait_until(n.ready, 20, "GET /readyz on %s to answer 200" % n.name)
    c.leader()
    for n in c.nodes:
        ok(post(n, "/db/execute", [["INSERT INTO t VALUES(?)", n.name]]), "write via %s" % n.name)
    c.wait_converged()
    rows = c.assert_same_rows("t")
    assert len(rows) == 4, rows


def test_strong_read_confirms_leadership(cluster_factory):  # noqa: F811
    """A strong read must confirm leadership through the log (a barrier) before the
    leader reads, as a linearizable read does: a leader cut off from both followers
    must not answer it from its own copy, which may be stale."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(a)", "INSERT INTO t VALUES(1)"]), "schema")
    c.wait_converged()
    for n in c.followers(leader):
        n.freeze()
    try:
        st, _, data, secs = http_call(leader.http_port, "GET", strong_read_path("SELECT count(*) FROM t"),
                                      timeout=deadline_seconds(20))
        doc = json_or_none(data) or {}
        answered = st == 200 and any("values" in r for r in doc.get("results", []))
        assert not answered, ("a strong read on %s, cut off from both followers, was answered from its "
                              "own copy after %.3fs: HTTP %d %r" % (leader.name, secs, st, data[:300]))
    finally:
        for n in c.nodes:
            n.thaw()


# ---------------------------------------------------------------------------
# 4. a NUL byte


def test_nul_byte_is_refused_and_nodes_stay_idle(cluster_factory):  # noqa: F811
    """Before, SQL text holding a NUL byte was proposed, and every node's apply loop
    spun on it forever (SQLite stops parsing at the NUL, so the statement never
    advanced). Now it is refused with 400 through the leader and through a follower,
    by /db/execute, /db/request and GET /db/query, nothing is proposed, the cluster
    goes on taking writes and no node burns CPU."""
    c = cluster_factory(3)
    leader = c.leader()
    follower = c.followers(leader)[0]
    ok(post(leader, "/db/execute", ["CREATE TABLE t(a)"]), "schema")
    c.wait_converged()
    idx0 = last_index(leader)
    for node in (leader, follower):
        for path, body in [("/db/execute", ["INSERT INTO t VALUES(1)\u0000"]),
                           ("/db/execute", ["INSERT INTO t VALUES(2); \u0000INSERT INTO t VALUES(3)"]),
                           ("/db/request", [["INSERT INTO t VALUES(?)\u0000", 4]])]:
            err = refusal(post(node, path, body), "%s %r via %s" % (path, body, node.name))
            assert NUL_MSG in err and "statement 1" in err, err
        st, _, data, _ = http_call(node.http_port, "GET", "/db/query?q=SELECT%201%00", timeout=10)
        assert st == 400 and NUL_MSG.encode() in data, (node.name, st, data[:300])
    assert last_index(leader) == idx0, "a refused request was proposed"
    for n in c.nodes:
        ok(post(n, "/db/execute", [["INSERT INTO t VALUES(?)", n.id]]), "write via %s" % n.name)
    c.wait_converged()
    assert sorted(c.assert_same_rows("t")) == [[n.id] for n in c.nodes]

    # CPU over a 1.5 s window in which the nodes only answer /readyz polls.
    cpu0 = {n.name: cpu_seconds(n.pid) for n in c.nodes}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        for n in c.nodes:
            assert n.ready(), "%s is not ready" % n.name
        time.sleep(0.1)  # the spacing of the polls of a measurement window
    wall = time.monotonic() - t0
    busy = {n.name: (cpu_seconds(n.pid) - cpu0[n.name]) / wall for n in c.nodes}
    print("CPU seconds per second while idle: %r" % busy)
    assert all(v < 0.5 for v in busy.values()), "nodes busy (CPU seconds per second): %r" % busy
