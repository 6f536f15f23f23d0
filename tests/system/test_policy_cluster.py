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
import resource
import signal
import sqlite3
import time
import urllib.parse

import pytest

from clusterutil import http_call, json_or_none
from conftest import SANITIZED, deadline_seconds, wait_until
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


# ---------------------------------------------------------------------------
# 5. the step budget does not depend on a statement's past


def test_step_limit_outcome_does_not_depend_on_a_cached_statements_history(cluster_factory):  # noqa: F811
    """SQLite calls the progress handler when a statement's VM step count, counted
    over every run since it was prepared, passes a multiple of the grain: a write
    statement kept in the writer's cache reached the step budget earlier, by up to the
    grain, than the same statement freshly prepared. A follower that restarted (its
    cache empty) wrote the rows of a write that the leader and the other follower
    failed with "exceeded the write step limit", and the replicas differed for good.
    Now the budget counts the steps of the run alone: the same outcome everywhere."""
    limit = 100000
    c = cluster_factory(3, extra_args=["--write-step-limit", str(limit)])
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE big(v)"]), "schema")
    insert = ("INSERT INTO big(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
              "SELECT x + 1 FROM c WHERE x < ?) SELECT x FROM c)")

    def write(text, n):
        res = results(post(c.leader(), "/db/execute", [[text, n]], timeout=30), "%d rows" % n)
        assert len(res) == 1, res
        err = res[0].get("error")
        assert err is None or "write step limit" in err, res
        return err is None

    # The most rows one statement, prepared afresh (each probe's text is new), may
    # insert within the budget.
    lo, hi, k = 1, 40 * limit // 20, 0
    assert not write("/* probe %d */ " % k + insert, hi)
    while hi - lo > 1:
        k += 1
        mid = (lo + hi) // 2
        if write("/* probe %d */ " % k + insert, mid):
            lo = mid
        else:
            hi = mid
    n_max = lo
    print("a fresh statement inserts at most %d rows in %d steps" % (n_max, limit))

    # Run the statement once, near the budget: its step count, modulo the grain, is
    # then near the grain on every node. One follower restarts and forgets it.
    assert write(insert, n_max - 2)
    c.wait_converged()
    restarted = c.followers(c.leader())[0]
    restarted.restart()
    c.wait_converged()

    # Writes of that statement that each fit the budget of a fresh statement.
    answers = []
    for n in range(n_max, n_max - 30, -1):
        answers.append(write(insert, n))
    idx = c.wait_converged()
    counts = {n.name: n.local_rows("SELECT count(*) FROM big")[0][0] for n in c.nodes}
    print("applied index %d, rows: %r, answers: %r" % (idx, counts, answers))
    assert len(set(counts.values())) == 1, (
        "the same writes left different rows (%s restarted): %r" % (restarted.name, counts))
    assert all(answers), "writes within the budget of a fresh statement failed: %r" % answers
    c.assert_same_rows("big")
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 6. what each node reads differently stays out of writes


NODE_LOCAL_WRITES = [
    "INSERT INTO t(k, v) SELECT 1, file FROM pragma_database_list",
    "INSERT INTO t(k, v) SELECT 2, count(*) FROM sqlite_stmt",
    "INSERT INTO t(k, v) SELECT 3, journal_mode FROM pragma_journal_mode",
    "INSERT INTO t(k, v) VALUES(4, (SELECT data_version FROM pragma_data_version))",
    "INSERT INTO t(k, v) SELECT 5, file FROM files",
    "UPDATE t SET v = (SELECT group_concat(sql) FROM sqlite_stmt)",
    "INSERT INTO t(k, v) VALUES(6, 'x') RETURNING (SELECT file FROM pragma_database_list)",
    "CREATE TABLE copy AS SELECT * FROM pragma_database_list",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO t2 SELECT count(*) FROM sqlite_stmt; END",
    "PRAGMA database_list",
    # The SQLite library: nodes upgraded one at a time run different ones.
    "INSERT INTO t(k, v) VALUES(7, sqlite_version())",
    "INSERT INTO t(k, v) SELECT 8, sqlite_source_id()",
    "INSERT INTO t(k, v) SELECT 9, count(*) FROM pragma_compile_options",
    "UPDATE t SET v = sqlite_compileoption_used('ENABLE_FTS5')",
    "INSERT INTO t(k, v) SELECT 10, name FROM pragma_function_list",
    "CREATE TRIGGER tv AFTER INSERT ON t BEGIN INSERT INTO t2 VALUES(sqlite_version()); END",
]


def test_a_write_may_not_read_what_differs_from_node_to_node(cluster_factory):  # noqa: F811
    """Read PRAGMAs are allowed, and so are their table-valued forms and the sqlite_stmt
    table, also inside a write: INSERT ... SELECT file FROM pragma_database_list stored
    each node's own path, and a count from sqlite_stmt each writer connection's own
    number of statements (one that restarted had fewer), and sqlite_version() or
    pragma_compile_options the SQLite library of each node (which differ while a
    cluster is upgraded one node at a time), so the replicas differed. Now
    such a write is a 400 naming the statement, through any node and endpoint, with
    nothing proposed; a view that reads them is refused in a write too; reads of them
    still answer."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(k, v)", "CREATE TABLE t2(n)",
                                    "CREATE VIEW files AS SELECT file FROM pragma_database_list",
                                    "INSERT INTO t(k, v) VALUES(0, 'a')"]), "schema")
    c.followers(leader)[0].restart()
    c.wait_converged()
    leader = c.leader()
    idx0 = last_index(leader)
    for k, sql in enumerate(NODE_LOCAL_WRITES):
        node = [leader] + c.followers(leader)
        node = node[k % 3]
        for path, body in [("/db/execute", [sql]),
                           ("/db/execute?transaction", ["INSERT INTO t(k, v) VALUES(9, 'b')", sql]),
                           ("/db/request", [["INSERT INTO t(k, v) VALUES(?, 'c')", 10], sql])]:
            what = "%s %r via %s" % (path, body, node.name)
            err = refusal(post(node, path, body), what)
            assert POLICY in err and "differs from node to node" in err, "%s: %r" % (what, err)
            assert "statement %d" % len(body) in err, "%s: %r" % (what, err)
    assert last_index(leader) == idx0, "a refused write was proposed"

    # Reads of them answer, each node its own.
    for n in c.nodes:
        res = ok(post(n, "/db/query?level=none", ["SELECT file FROM files", "SELECT journal_mode FROM pragma_journal_mode"]),
                 "reads on %s" % n.name)
        assert res[0]["values"] == [[str(n.db_path)]], (n.name, res)
        assert res[1]["values"] == [["wal"]], (n.name, res)

    ok(post(leader, "/db/execute", ["INSERT INTO t(k, v) VALUES(11, 'd')"]), "a write")
    c.wait_converged()
    assert c.assert_same_rows("t") == [[0, "a"], [11, "d"]]
    assert c.assert_same_rows("t2") == []
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 7. the query planner's statistics are the file's


def test_writes_plan_with_the_statistics_the_file_holds(cluster_factory):  # noqa: F811
    """SQLite reads sqlite_stat1 when it reads the schema and again only after ANALYZE.
    A write to sqlite_stat1 (which SQLite allows, to tune the planner), or an ANALYZE
    rolled back with its request, left each writer connection planning with whatever
    statistics it had loaded, and a node that restarted with those in the file. A write
    whose rows depend on the plan (LIMIT without ORDER BY, two indexes ordering the
    matches differently) then stored different rows on different nodes while every
    answer said ok. Now every write plans with the statistics the file holds, as a
    fresh connection does."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", [
        "CREATE TABLE s(a, b, c, d)", "CREATE INDEX sa ON s(a, c)", "CREATE INDEX sb ON s(b, d)",
        "INSERT INTO s SELECT x % 2, x % 3, x, -x FROM (WITH RECURSIVE r(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 200) SELECT x FROM r)",
        "CREATE TABLE t(k INTEGER PRIMARY KEY, v)", "ANALYZE"]), "schema")
    probe = "INSERT INTO t(k, v) SELECT ?, rowid FROM s WHERE a = 1 AND b = 1 LIMIT 1"

    def fresh_plan(node):
        """The row a connection opened now on node's file picks."""
        con = sqlite3.connect("file:%s?mode=ro" % node.db_path, uri=True, timeout=30)
        try:
            return con.execute("SELECT rowid FROM s WHERE a = 1 AND b = 1 LIMIT 1").fetchone()[0]
        finally:
            con.close()

    def write(path, body, k):
        ok(post(c.leader(), path, body), "probe %d" % k)
        c.wait_converged()
        return fresh_plan(c.leader())

    want = {1: write("/db/execute", [[probe, 1]], 1)}
    # sa looks selective now, sb not: the other index, the other end of the matches.
    ok(post(c.leader(), "/db/execute", ["UPDATE sqlite_stat1 SET stat = '200 1 1' WHERE idx = 'sa'",
                                        "UPDATE sqlite_stat1 SET stat = '200 100 1' WHERE idx = 'sb'"]),
       "tune the statistics")
    want[2] = write("/db/execute", [[probe, 2]], 2)
    assert want[2] != want[1], "the statistics written did not change the plan: %r" % want
    c.followers(c.leader())[0].restart()
    c.wait_converged()
    want[3] = write("/db/execute", [[probe, 3]], 3)
    # An ANALYZE (back to the data's own statistics) rolled back with its request.
    res = results(post(c.leader(), "/db/execute?transaction",
                       ["ANALYZE", [probe, 4], "INSERT INTO nosuch VALUES(1)"]), "rolled back")
    assert "no such table" in res[-1].get("error", ""), res
    want[5] = write("/db/execute", [[probe, 5]], 5)
    # Statistics written, then a plan, in one request.
    want[7] = write("/db/execute", ["ANALYZE", [probe, 6],
                                    "UPDATE sqlite_stat1 SET stat = '200 1 1' WHERE idx = 'sa'",
                                    [probe, 7]], 7)
    c.wait_converged()
    rows = c.assert_same_rows("t")
    got = dict(rows)
    print("rows picked: %r; a fresh connection picks: %r" % (got, want))
    assert 4 not in got, rows
    for k in (1, 2, 3, 5, 7):
        assert got[k] == want[k], "probe %d picked row %r, a fresh connection row %r" % (k, got[k], want[k])
    assert got[6] != got[7], rows
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 8. the results of a write are bounded on every node alike


def test_results_of_a_write_are_bounded_the_same_on_every_node(cluster_factory):  # noqa: F811
    """--max-result-size bounded reads only: a SELECT (or RETURNING) in a request that
    writes had its rows collected without bound by every node applying the entry (a
    write of 400 rows of randomblob(1000000) left 400 MB in each follower), so one such
    request of tens of GB killed every node for memory, and again on every restart as
    the entry was applied again. Now the results of one write entry are bounded by a
    limit that is the same on every node (so the outcome is too): the statement fails
    alone, or rolls back its ?transaction, everywhere."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(k)"]), "schema")
    big = ("SELECT randomblob(1000000) FROM (WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL "
           "SELECT x + 1 FROM r WHERE x < 300) SELECT x FROM r)")
    for path, body in [("/db/execute", ["INSERT INTO t VALUES(1)", big, "INSERT INTO t VALUES(2)"]),
                       ("/db/request", [["INSERT INTO t VALUES(?)", 3], big,
                                        "INSERT INTO t VALUES(4) RETURNING randomblob(1000)"])]:
        res = results(post(c.leader(), path, body, timeout=120), path)
        assert len(res) == 3, res
        assert "error" not in res[0] and "error" not in res[2], res
        assert "exceed the limit" in res[1].get("error", ""), str(res)[:1000]
    res = results(post(c.leader(), "/db/execute?transaction", ["INSERT INTO t VALUES(5)", big], timeout=120),
                  "transaction")
    assert "exceed the limit" in res[-1].get("error", ""), str(res)[:1000]
    res = ok(post(c.leader(), "/db/request", ["INSERT INTO t VALUES(6)", "SELECT count(*) FROM t"]), "small")
    assert res[1]["values"] == [[5]], res
    c.wait_converged()
    assert c.assert_same_rows("t") == [[1], [2], [3], [4], [6]]
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 9. local time in a write is the same on every node


def test_local_time_in_a_write_is_utc_on_every_node(cluster_factory):  # noqa: F811
    """SQLite's 'localtime' and 'utc' modifiers read the process's time zone: a node
    started with another TZ than the others (a cluster across regions) stored other
    values for datetime(0, 'unixepoch', 'localtime') or datetime(x, 'utc'), in a
    statement, a parameter, a column default or a trigger, and the replicas differed.
    Now, while an entry is applied, local time is UTC on every node; a read still
    answers in the node's own zone."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", [
        "CREATE TABLE t(k INTEGER PRIMARY KEY, v, d DEFAULT (datetime(86400, 'unixepoch', 'localtime')))",
        "CREATE TABLE log(k, v)",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN "
        "INSERT INTO log VALUES(new.k, time('12:00', 'localtime')); END"]), "schema")
    tokyo = c.followers(leader)[0]
    os.environ["TZ"] = "JST-9"
    try:
        tokyo.restart()
    finally:
        del os.environ["TZ"]
    c.wait_converged()
    ok(post(c.leader(), "/db/execute", [
        "INSERT INTO t(k, v) VALUES(1, datetime(0, 'unixepoch', 'localtime'))",
        "INSERT INTO t(k, v) VALUES(2, datetime('2020-01-01 00:00:00', 'utc'))",
        ["INSERT INTO t(k, v) VALUES(3, datetime(0, 'unixepoch', ?))", "localtime"],
        "INSERT INTO t(k, v) VALUES(4, strftime('%H', 'now', 'localtime') = strftime('%H', 'now'))"]),
       "writes")
    c.wait_converged()
    rows = c.assert_same_rows("t")
    assert rows == [[1, "1970-01-01 00:00:00", "1970-01-02 00:00:00"],
                    [2, "2020-01-01 00:00:00", "1970-01-02 00:00:00"],
                    [3, "1970-01-01 00:00:00", "1970-01-02 00:00:00"],
                    [4, 1, "1970-01-02 00:00:00"]], rows
    assert c.assert_same_rows("log") == [[k, "12:00:00"] for k in range(1, 5)]
    c.assert_same_files()
    assert tokyo.local_rows("SELECT datetime(0, 'unixepoch', 'localtime')") == [["1970-01-01 09:00:00"]]


# ---------------------------------------------------------------------------
# 10. no row takes the largest rowid


def test_no_row_takes_the_largest_rowid(cluster_factory):  # noqa: F811
    """Once a table holds rowid 9223372036854775807, SQLite gives each new row a rowid
    drawn from its own random generator (not the seeded random() of the entry), so
    every node stored the same INSERT under another rowid. Now a write that would put
    a row at that rowid (given, through an INTEGER PRIMARY KEY, by an UPDATE, or as
    the next automatic one) fails on every node, and the tables stay alike."""
    c = cluster_factory(3)
    leader = c.leader()
    big = 2 ** 63 - 1
    ok(post(leader, "/db/execute", ["CREATE TABLE w(x)", "CREATE TABLE ip(id INTEGER PRIMARY KEY, x)",
                                    "INSERT INTO ip VALUES(1, 'one')"]), "schema")
    # (endpoint, body, the statement that fails): the statements after it run.
    for path, body, failing in [
            ("/db/execute", ["INSERT INTO w(rowid, x) VALUES(9223372036854775807, 'max')",
                             "INSERT INTO w(x) VALUES('after')"], 0),
            ("/db/execute", [["INSERT INTO ip VALUES(?, 'max')", big], "INSERT INTO ip(x) VALUES('after')"], 0),
            ("/db/request", ["UPDATE ip SET id = 9223372036854775807 WHERE id = 1",
                             "INSERT INTO ip(x) VALUES('after')"], 0),
            ("/db/execute", ["INSERT INTO w(rowid, x) VALUES(9223372036854775806, 'below')",
                             "INSERT INTO w(x) VALUES('next')"], 1)]:
        res = results(post(c.leader(), path, body), "%r" % body)
        assert len(res) == 2, res
        assert "9223372036854775807" in res[failing].get("error", ""), (body, res)
        assert "error" not in res[1 - failing], (body, res)
    ok(post(c.leader(), "/db/execute", ["INSERT INTO ip(x) VALUES('last')"]), "a write")
    c.wait_converged()
    for table in ("w", "ip"):
        got = {n.name: n.local_rows("SELECT rowid, * FROM %s ORDER BY rowid" % table) for n in c.nodes}
        assert len({repr(v) for v in got.values()}) == 1, "table %s differs: %r" % (table, got)
    assert c.nodes[0].local_rows("SELECT rowid, x FROM w ORDER BY rowid") == [
        [1, "after"], [big - 1, "below"]]
    assert c.nodes[0].local_rows("SELECT id, x FROM ip ORDER BY id") == [
        [1, "one"], [2, "after"], [3, "after"], [4, "last"]]
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 11. the memory one statement takes is bounded on every node alike


def _cap_address_space(node, limit):
    resource.prlimit(node.pid, resource.RLIMIT_AS, (limit, limit))


def test_a_statement_memory_is_bounded_the_same_on_every_node(cluster_factory):  # noqa: F811
    """A row holds up to 2,000 values of up to --max-value-size each, built inside
    single VM instructions that no step budget, time limit or result limit sees: a
    write of SELECT randomblob(8000000), ... (200 columns) made every node allocate
    1.6 GB, and one with 64 MiB values tens of GB. Every node failed it as "out of
    memory", a failure of the node's own: the entry was retried forever and no later
    write was applied (without a cap on memory, every node was killed, and again at
    each restart's replay). Now a statement may take at most 16 times the value size
    limit (at least 256 MiB) while it runs: it fails alone, naming the limit, the same
    way on every node; a read is refused the same way. The nodes run under a 2 GiB
    address-space cap here (but in sanitizer builds), so that the unbounded version (400
    columns: 3.2 GB) fails instead of taking the machine's memory. (Under a 1 GiB cap a
    node's own threads, stacks and malloc arenas left some runs too little beside the
    statement's 256 MiB: that node failed the entry as a real out of memory, its own
    failure, and waited, and the test timed out.)"""
    value = 8 << 20
    limit = max(16 * value, 256 << 20)
    c = cluster_factory(3, extra_args=["--max-value-size", str(value)])
    if not SANITIZED:  # a sanitizer's shadow memory takes terabytes of address space
        for node in c.nodes:
            _cap_address_space(node, 2 << 30)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(k)"]), "schema")
    # randomblob, not printf('%.*c', ...): SQLite's printf made the 256 MiB in 22 s here,
    # at each of the five statements on every node, and the test took two minutes.
    bomb = "SELECT " + ", ".join(["randomblob(8000000)"] * 400)
    res = results(post(leader, "/db/execute",
                       ["INSERT INTO t VALUES(1)", bomb, "INSERT INTO t VALUES(2)"], timeout=60),
                  "the write")
    assert len(res) == 3, str(res)[:1000]
    assert "memory limit of %d bytes" % limit in res[1].get("error", ""), str(res)[:1000]
    assert "error" not in res[0] and "error" not in res[2], str(res)[:1000]
    c.wait_converged()  # (a sanitizer build's slower apply may have cost an election)
    ok(post(c.leader(), "/db/execute", ["INSERT INTO t VALUES(3)"], timeout=30), "a later write")
    # A statement that writes, and stops at the limit, in a request with others.
    ok(post(c.leader(), "/db/execute",
            ["CREATE TABLE w(%s)" % ", ".join("c%d" % i for i in range(400))]), "a wide table")
    res = results(post(c.leader(), "/db/execute",
                       ["INSERT INTO t VALUES(4)", "INSERT INTO w " + bomb, "INSERT INTO t VALUES(5)"],
                       timeout=60), "the write into w")
    assert "memory limit of %d bytes" % limit in res[1].get("error", ""), str(res)[:1000]
    assert "error" not in res[0] and "error" not in res[2], str(res)[:1000]
    c.wait_converged()
    follower = c.followers(c.leader())[0]
    res = results(post(follower, "/db/query?level=none", [bomb, "SELECT 1"], timeout=60), "the read")
    assert "memory limit of %d bytes" % limit in res[0].get("error", ""), str(res)[:1000]
    assert res[1].get("values") == [[1]], str(res)[:1000]
    # What stays under the limit still runs.
    res = ok(post(c.leader(), "/db/request",
                  ["INSERT INTO t SELECT length(group_concat(hex(randomblob(500000)), '')) FROM "
                   "(WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 8) "
                   "SELECT x FROM r) RETURNING k"]), "a write under the limit")
    assert res[0]["values"] == [[8000000]], str(res)[:1000]
    c.wait_converged()
    assert c.assert_same_rows("t") == [[1], [2], [3], [4], [5], [8000000]]
    assert c.assert_same_rows("w") == []
    c.assert_same_files()
    assert all(node.running() for node in c.nodes)


# ---------------------------------------------------------------------------
# 12. no AUTOINCREMENT sequence is left at the largest rowid


def test_no_sequence_takes_the_largest_rowid(cluster_factory):  # noqa: F811
    """An INSERT into an AUTOINCREMENT table whose sqlite_sequence entry holds the
    largest rowid fails with SQLITE_FULL ("database or disk is full"), the code of a
    full disk, which a node takes for a failure of its own: every node stopped at that
    entry and tried it again forever, and no later write was applied. Now a statement
    that leaves a sequence there (by UPDATE or INSERT of sqlite_sequence, also as a
    real or a text) fails on every node, and the table goes on taking rows."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, x)",
                                    "INSERT INTO a(x) VALUES('one')"]), "schema")
    for stmt in ["UPDATE sqlite_sequence SET seq = 9223372036854775807 WHERE name = 'a'",
                 "UPDATE sqlite_sequence SET seq = 1e30",
                 "INSERT INTO sqlite_sequence VALUES('a', '9223372036854775807')"]:
        res = results(post(c.leader(), "/db/execute", [stmt, "INSERT INTO a(x) VALUES('after')"],
                           timeout=30), stmt)
        assert len(res) == 2, (stmt, res)
        assert "9223372036854775807" in res[0].get("error", ""), (stmt, res)
        assert "error" not in res[1], (stmt, res)
    ok(post(c.leader(), "/db/execute", ["UPDATE sqlite_sequence SET seq = 100",
                                        "INSERT INTO a(x) VALUES('last')"]), "a sequence moved on")
    c.wait_converged()
    assert c.assert_same_rows("a") == [[1, "one"], [2, "after"], [3, "after"], [4, "after"],
                                       [101, "last"]]
    assert c.assert_same_rows("sqlite_sequence") == [["a", 101]]
    c.assert_same_files()



# ---------------------------------------------------------------------------
# 13. a virtual table's shadow tables are its module's to write


def test_shadow_tables_are_written_by_their_module_only(cluster_factory):  # noqa: F811
    """A write could change an FTS index's or an R-tree's shadow tables directly
    (g_segdir, r_node): the module then answered SQLITE_CORRUPT_VTAB ("database disk
    image is malformed") to the next statement that read it, the same on every node,
    which each node took for damage of its own file: every node stopped at that entry
    and tried it again forever. Now the shadow tables are read-only to SQL (SQLite's
    defensive mode); the modules still write them."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE VIRTUAL TABLE g USING fts4(body)",
                                    "CREATE VIRTUAL TABLE r USING rtree(id, lo, hi)",
                                    "CREATE TABLE t(k)",
                                    "INSERT INTO g VALUES('hello world')",
                                    "INSERT INTO r VALUES(1, 2, 3)"]), "schema")
    for damage, read in [("UPDATE g_segdir SET root = x'0102030405'",
                          "INSERT INTO t SELECT rowid FROM g WHERE g MATCH 'hello'"),
                         ("UPDATE r_node SET data = x'00'",
                          "INSERT INTO t SELECT id FROM r WHERE lo >= 2"),
                         ("INSERT INTO g_content VALUES(7, 'stray')",
                          "INSERT INTO t SELECT count(*) FROM g WHERE g MATCH 'stray'")]:
        res = results(post(c.leader(), "/db/execute", [damage, read], timeout=30), damage)
        assert len(res) == 2, (damage, res)
        assert "may not be modified" in res[0].get("error", ""), (damage, res)
        assert "error" not in res[1], (damage, res)
    ok(post(c.leader(), "/db/execute", ["INSERT INTO g VALUES('hello again')", "INSERT INTO r VALUES(2, 5, 6)",
                                        "INSERT INTO t SELECT count(*) FROM g WHERE g MATCH 'hello'",
                                        "INSERT INTO t SELECT count(*) FROM r"]), "the modules write")
    c.wait_converged()
    assert c.assert_same_rows("t") == [[1], [1], [0], [2], [2]]
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 14. how a node's pages are laid out is its own


def test_a_write_may_not_read_how_pages_are_laid_out(cluster_factory):  # noqa: F811
    """Nodes hold the same rows, not always in the same pages: a database made with
    --no-page-checksums has no reserved bytes (docs/OPERATIONS.md: a cluster is
    converted one node at a time), and cairn repair rewrites a file. A write that
    stored what the dbstat table or PRAGMA page_count / freelist_count answer stored
    each node's own layout, and the replicas differed. Now such a write is a 400, with
    nothing proposed; reads still answer."""
    c = cluster_factory(3)
    leader = c.leader()
    ok(post(leader, "/db/execute", ["CREATE TABLE t(k, v)", "CREATE TABLE big(b)",
                                    "INSERT INTO big SELECT randomblob(3000) FROM (WITH RECURSIVE "
                                    "r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 200) "
                                    "SELECT x FROM r)"]), "schema")
    plain = c.followers(leader)[0]
    plain.stop()
    _remove_db_files(plain)
    plain.restart(extra_args=plain.extra_args + ["--no-page-checksums"])
    c.wait_converged()
    unused = "SELECT sum(unused) FROM dbstat"
    got = {n.name: ok(post(n, "/db/query?level=none", [unused]), n.name)[0]["values"] for n in c.nodes}
    assert len({repr(v) for v in got.values()}) == 2, got  # the layouts differ
    leader = c.leader()
    idx0 = last_index(leader)
    for sql in ["INSERT INTO t SELECT 1, sum(unused) FROM dbstat",
                "INSERT INTO t SELECT 2, page_count FROM pragma_page_count",
                "INSERT INTO t SELECT 3, * FROM pragma_freelist_count",
                # under the write growth bound, the page count plus the bound
                "INSERT INTO t SELECT 6, * FROM pragma_max_page_count",
                "PRAGMA max_page_count",
                "PRAGMA page_count",
                "CREATE VIRTUAL TABLE pages USING dbstat(main)",
                "CREATE TRIGGER tp AFTER INSERT ON big BEGIN INSERT INTO t SELECT 4, count(*) FROM dbstat; END"]:
        err = refusal(post(leader, "/db/execute", [sql]), sql)
        assert POLICY in err and "node to node" in err, (sql, err)
    assert last_index(leader) == idx0, "a refused write was proposed"
    ok(post(leader, "/db/execute", ["INSERT INTO t VALUES(5, 'five')"]), "a write")
    c.wait_converged()
    assert c.assert_same_rows("t") == [[5, "five"]]
    c.assert_same_files()


# ---------------------------------------------------------------------------
# 15. full-text search: the module's own reads, the same index on every node


def test_fts5_replicates_to_identical_files(cluster_factory, tmp_path):  # noqa: F811
    """FTS5 reads PRAGMA data_version for itself (whether its cached index structure is
    stale), which the policy took for the request's own read of node-local state: every
    write of an FTS5 table was refused, and one prepared on a node that had restarted
    (FTS5 connects to its table while the statement is prepared) failed there alone.
    Now FTS5 works: writes through single statements, batches and ?transaction, its
    commands (optimize, merge, rebuild, integrity-check, settings), MATCH in a write,
    with followers applying grouped entries, a follower restarted in the middle and the
    leader stopped (snapshots taken often: a node started may install one); every node
    ends with the same rows and the same file, page for page. A contentless table told to delete a row twice (SQLITE_CORRUPT_VTAB, the same
    on every node) fails that statement only: every node goes on applying."""
    c = cluster_factory(3, extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "2"])
    leader = c.leader()
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]

    def text(i):
        return " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 7)) + " n%d" % i

    ok(post(leader, "/db/execute", [
        "CREATE VIRTUAL TABLE docs USING fts5(title, body, tokenize = 'porter unicode61')",
        "INSERT INTO docs(docs, rank) VALUES('pgsz', 128)",
        "INSERT INTO docs(docs, rank) VALUES('automerge', 2)",
        "CREATE TABLE src(id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE VIRTUAL TABLE ext USING fts5(body, content='src', content_rowid='id')",
        "CREATE TRIGGER src_ai AFTER INSERT ON src BEGIN "
        "INSERT INTO ext(rowid, body) VALUES(new.id, new.body); END",
        "CREATE VIRTUAL TABLE bare USING fts5(a, content='')",
        "CREATE TABLE hits(step INTEGER, r INTEGER, h TEXT)"]), "schema")
    follower = c.followers(leader)[0]
    for i in range(60):
        node = c.leader()
        if i % 3 == 0:
            body = [["INSERT INTO docs(rowid, title, body) VALUES(?, ?, ?)", 1000 - i, "t%d" % i, text(i)]]
        elif i % 3 == 1:
            body = [["INSERT INTO docs(title, body) VALUES(?, ?)", "t%d" % i, text(i)],
                    ["INSERT INTO src(body) VALUES(?)", text(i)],
                    ["INSERT INTO bare(rowid, a) VALUES(?, ?)", i, text(i)]]
        else:
            body = [["DELETE FROM docs WHERE rowid = (SELECT min(rowid) FROM docs)"],
                    ["UPDATE docs SET body = body || ' more' WHERE docs MATCH ?", words[i % 10]],
                    ["INSERT INTO hits SELECT ?, rowid, highlight(docs, 1, '[', ']') FROM docs "
                     "WHERE docs MATCH ? ORDER BY rank, rowid LIMIT 3", i, words[(i + 3) % 10]]]
        path = "/db/execute?transaction" if i % 4 == 0 else "/db/execute"
        ok(post(node, path, body), "write %d" % i)
        if i == 20:
            follower.restart()
        if i == 30:
            ok(post(c.leader(), "/db/execute", ["INSERT INTO docs(docs, rank) VALUES('merge', 50)",
                                                "INSERT INTO docs(docs) VALUES('optimize')"]), "merge")
        if i == 40:
            c.wait_converged()
            old = c.leader()
            old.stop()
            c.leader(among=[n for n in c.nodes if n is not old])
            old.start()
    ok(post(c.leader(), "/db/execute", [
        "INSERT INTO ext(ext) VALUES('rebuild')",
        "INSERT INTO docs(docs) VALUES('integrity-check')",
        "INSERT INTO ext(ext) VALUES('integrity-check')",
        "INSERT INTO hits SELECT -1, rowid, snippet(ext, 0, '<', '>', '...', 4) FROM ext "
        "WHERE ext MATCH 'beta' ORDER BY bm25(ext), rowid"]), "commands")
    res = results(post(c.leader(), "/db/execute", [
        "CREATE VIRTUAL TABLE once USING fts5(a, content='')",
        "INSERT INTO once(rowid, a) VALUES(1, 'alpha')",
        "INSERT INTO once(once, rowid, a) VALUES('delete', 1, 'alpha')",
        "INSERT INTO once(once, rowid, a) VALUES('delete', 1, 'alpha')",
        "INSERT INTO hits VALUES(-2, 0, 'after')"]), "double delete")[2:]
    assert "error" not in res[0] and "error" not in res[2], res
    assert "virtual table found its own data inconsistent" in res[1].get("error", ""), res
    ok(post(c.leader(), "/db/execute", ["INSERT INTO hits VALUES(-3, 0, 'later')"]), "a later write")
    c.wait_converged()
    hits = c.assert_same_rows("hits")
    assert len(hits) > 20 and [-3, 0, "later"] in hits, hits
    c.assert_same_rows("docs")
    for n in c.nodes:
        got = ok(post(n, "/db/query?level=none", [
            "SELECT count(*) FROM docs WHERE docs MATCH 'alpha'",
            "SELECT rowid, round(bm25(docs), 9) FROM docs WHERE docs MATCH 'gamma OR delta' ORDER BY rank, rowid"]),
            n.name)
        assert got == ok(post(c.nodes[0], "/db/query?level=none", [
            "SELECT count(*) FROM docs WHERE docs MATCH 'alpha'",
            "SELECT rowid, round(bm25(docs), 9) FROM docs WHERE docs MATCH 'gamma OR delta' ORDER BY rank, rowid"]),
            c.nodes[0].name), n.name
    c.assert_same_files()
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")
