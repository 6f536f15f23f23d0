"""Clusters of cairnd: forming, forwarding, redirects, consistency levels, failures,
catch-up through snapshots, determinism, backups and restores across nodes, bad input,
and the `cairn node` command.

Every test is marked `cluster` (pytest -m cluster). Each test builds its own cluster
(clusterutil.Cluster) in its tmp_path, except a few read-mostly tests that share one
three-node cluster for the module. Waiting is always a poll with a deadline.
"""

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

import backuputil
from clusterutil import (
    Cluster,
    ClusterOwner,
    ClusterWriters,
    RssSampler,
    assert_acked_present,
    http_call,
    json_or_none,
)
from conftest import BUILD, deadline_seconds, find_free_ports, wait_until

pytestmark = pytest.mark.cluster

MiB = 1 << 20

T_SCHEMA = ("CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, seq INTEGER NOT NULL, "
            "pad BLOB, UNIQUE(client, seq))")


def _new_cluster_fixture(base, clusters):
    def make(n=3, mode="expect", extra_args=(), start=True, name=None):
        c = Cluster(base, n=n, mode=mode, extra_args=extra_args,
                    name=name or "c%d" % (len(clusters) + 1))
        clusters.append(c)
        if start:
            c.start()
        return c
    return make


def _teardown(clusters):
    problems = []
    for c in clusters:
        problems += c.teardown()
    if problems:
        logs = "\n".join(c.logs() for c in clusters)
        pytest.fail("\n".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def cluster_factory(request, tmp_path, cairnd_bin):
    """make(n=3, mode="expect"|"join", extra_args=(), start=True) -> a started Cluster.
    Every process of every cluster made is stopped at teardown."""
    clusters = []
    request.node._cairn_servers = ClusterOwner(clusters)
    try:
        yield _new_cluster_fixture(tmp_path, clusters)
    finally:
        _teardown(clusters)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory, cairnd_bin):
    """One three-node cluster (formed with --bootstrap-expect) for read-mostly tests."""
    clusters = []
    make = _new_cluster_fixture(tmp_path_factory.mktemp("shared_cluster"), clusters)
    try:
        yield make(3, "expect", name="shared")
    finally:
        _teardown(clusters)


@pytest.fixture
def shared(request, shared_cluster):
    request.node._cairn_servers = ClusterOwner([shared_cluster])
    return shared_cluster


def ok_results(status_body, what=""):
    st, _, data, _ = status_body
    assert st == 200, "%s: HTTP %d %r" % (what, st, data[:1000])
    doc = json.loads(data)
    for r in doc["results"]:
        assert "error" not in r, "%s: %r" % (what, doc)
    return doc["results"]


def post(node, path, stmts, timeout=15.0):
    return http_call(node.http_port, "POST", path, stmts, timeout=deadline_seconds(timeout))


def get(node, path, timeout=15.0):
    return http_call(node.http_port, "GET", path, timeout=deadline_seconds(timeout))


def qpath(sql, **params):
    q = [("q", sql)] + [(k, v) for k, v in params.items() if v is not None]
    return "/db/query?" + urllib.parse.urlencode(q)


def count_where(node, sql, level):
    st, _, data, _ = get(node, qpath(sql, level=level))
    assert st == 200, "%s level=%s: HTTP %d %r" % (node.name, level, st, data[:500])
    res = json.loads(data)["results"][0]
    assert "error" not in res, res
    return res["values"][0][0]


def error_json(st_body, statuses, what):
    st, _, data, secs = st_body
    assert st in statuses, "%s: HTTP %d (want %s) %r" % (what, st, statuses, data[:500])
    doc = json_or_none(data)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), (
        "%s: the body is not a JSON {\"error\": ...}: %r" % (what, data[:500]))
    return doc["error"]


def check_nodes_doc(doc, nodes, leader):
    """GET /nodes in rqlite's shape, listing exactly `nodes`."""
    assert isinstance(doc, dict), doc
    assert sorted(doc) == sorted(str(n.id) for n in nodes), doc
    for n in nodes:
        e = doc[str(n.id)]
        assert e["id"] == str(n.id), e
        assert e["api_addr"] == "http://%s" % n.http_addr, e
        assert e["addr"] == n.raft_addr, e
        assert e["voter"] is True, e
        assert e["reachable"] is True, e
        assert e["leader"] is (n is leader), (n.name, leader.name, doc)


# ---------------------------------------------------------------------------
# forming, forwarding, levels, redirects


@pytest.mark.parametrize("mode", ["expect", "join"])
def test_form_cluster_both_ways(cluster_factory, mode):
    c = cluster_factory(3, mode)
    leader = c.leader()
    # Every node gives the same /nodes, and ?ver=2 the same objects in a list.
    for n in c.nodes:
        # (Each node learns of promotions and addresses through the log: wait for it.)
        doc = c.wait_members(3, node=n, timeout=15)
        check_nodes_doc(doc, c.nodes, leader)
        v2 = n.get_json("/nodes?ver=2")
        assert set(v2) == {"nodes"} and isinstance(v2["nodes"], list), v2
        assert sorted(v2["nodes"], key=lambda e: int(e["id"])) == [doc[k] for k in sorted(doc, key=int)]
        st = n.get_json("/status")
        assert st["node"]["id"] == n.id, st["node"]
        assert n.leader_id() == leader.id
        assert (n.data_dir / "node.json").exists()
    # Every node, followers included, is ready: it has a leader and is caught up.
    for n in c.nodes:
        wait_until(n.ready, 10, "GET /readyz on %s (%s) to answer 200" % (n.name, n.state()))
    # One write through every node, each seen everywhere.
    assert_one = ok_results(post(c.nodes[1], "/db/execute", ["CREATE TABLE f (id INTEGER PRIMARY KEY, via INTEGER)"]),
                            "CREATE through a follower or leader")
    assert len(assert_one) == 1
    for n in c.nodes:
        res = ok_results(post(n, "/db/execute", [["INSERT INTO f(via) VALUES(?)", n.id]]), "INSERT via %s" % n.name)
        assert res[0]["rows_affected"] == 1, res
    c.wait_converged()
    assert c.assert_same_rows("f") == [[i + 1, n.id] for i, n in enumerate(c.nodes)]


def test_write_through_each_node_read_every_level(shared):
    c = shared
    leader = c.leader()
    ok_results(post(leader, "/db/execute", ["CREATE TABLE IF NOT EXISTS lv (id INTEGER PRIMARY KEY, via INTEGER, v TEXT)"]),
               "CREATE")
    for writer in c.nodes:
        # /db/execute and /db/request, each sent to this node.
        res = ok_results(post(writer, "/db/execute", [["INSERT INTO lv(via, v) VALUES(?, ?)", writer.id, "execute"]]),
                         "execute via %s" % writer.name)
        assert res[0]["rows_affected"] == 1 and res[0]["last_insert_id"] > 0, res
        res = ok_results(post(writer, "/db/request", [["INSERT INTO lv(via, v) VALUES(?, ?)", writer.id, "request"]]),
                         "request via %s" % writer.name)
        assert res[0]["rows_affected"] == 1, res
        sql = "SELECT count(*) FROM lv WHERE via = %d" % writer.id
        for reader in c.nodes:
            for level in ("weak", "linearizable", "strong"):
                # Acknowledged before the read started: every level but none sees it at once.
                got = count_where(reader, sql, level)
                assert got == 2, "write via %s, read via %s at level %s: %d rows, want 2" % (
                    writer.name, reader.name, level, got)
            # level=none reads this node's own copy: it gets there.
            wait_until(lambda: count_where(reader, sql, "none") == 2, 10,
                       "%s to apply the writes made via %s (level=none)" % (reader.name, writer.name))
        # A read through /db/request on each node, default level.
        for reader in c.nodes:
            res = ok_results(post(reader, "/db/request", [sql]), "read request via %s" % reader.name)
            assert res[0]["values"] == [[2]], res
    c.wait_converged()
    c.assert_same_rows("lv")


def test_redirect_gives_301_to_the_leader(shared):
    c = shared
    leader = c.leader()
    ok_results(post(leader, "/db/execute", ["CREATE TABLE IF NOT EXISTS rd (id INTEGER PRIMARY KEY, x)"]), "CREATE")
    before = count_where(leader, "SELECT count(*) FROM rd", "strong")
    for f in c.followers(leader):
        for path, body in (("/db/execute?redirect&transaction", [["INSERT INTO rd(x) VALUES(?)", f.id]]),
                           ("/db/request?redirect", [["INSERT INTO rd(x) VALUES(?)", f.id]]),
                           (qpath("SELECT count(*) FROM rd", level="linearizable") + "&redirect", None),
                           (qpath("SELECT count(*) FROM rd", level="strong") + "&redirect", None),
                           (qpath("SELECT count(*) FROM rd") + "&redirect", None)):
            method = "POST" if body is not None else "GET"
            st, hdrs, data, _ = http_call(f.http_port, method, path, body, timeout=10)
            assert st == 301, "%s %s on follower %s: HTTP %d %r" % (method, path, f.name, st, data[:300])
            loc = hdrs.get("location") or ""
            want = urllib.parse.urlsplit(leader.url + path)
            got = urllib.parse.urlsplit(loc)
            # The same URL, whichever way the query string's characters are escaped.
            same = (got.scheme, got.netloc, got.path) == (want.scheme, want.netloc, want.path) and \
                urllib.parse.parse_qsl(got.query, keep_blank_values=True) == \
                urllib.parse.parse_qsl(want.query, keep_blank_values=True)
            assert same, "%s %s on %s: Location %r, want %r" % (method, path, f.name, loc, leader.url + path)
        # level=none is served where it is asked, redirect or not.
        st, _, data, _ = get(f, qpath("SELECT count(*) FROM rd", level="none") + "&redirect")
        assert st == 200, (st, data[:300])
    # Nothing was written by the redirected writes.
    assert count_where(leader, "SELECT count(*) FROM rd", "strong") == before
    # On the leader, ?redirect changes nothing.
    ok_results(post(leader, "/db/execute?redirect", [["INSERT INTO rd(x) VALUES(?)", 0]]), "write on the leader")
    st, _, data, _ = get(leader, qpath("SELECT count(*) FROM rd", level="strong") + "&redirect")
    assert st == 200 and json.loads(data)["results"][0]["values"] == [[before + 1]], data


def test_redirect_on_admin_endpoints_reads_as_on_data_ones(shared):
    # "?redirect" alone asks for a 301 and "?redirect=0" does not, as on /db/*.
    c = shared
    leader = c.leader()
    for f in c.followers(leader):
        for flag, want in (("redirect", 301), ("redirect=1", 301), ("redirect=0", 200),
                           ("redirect=false", 200)):
            path = "/admin/snapshots?node=%d&%s" % (leader.id, flag)
            st, hdrs, data, _ = http_call(f.http_port, "GET", path, None, timeout=10)
            assert st == want, "GET %s on follower %s: HTTP %d %r" % (path, f.name, st, data[:300])
            if want == 301:
                loc = urllib.parse.urlsplit(hdrs.get("location") or "")
                assert loc.netloc == urllib.parse.urlsplit(leader.url).netloc, hdrs


DET_INSERT = (
    "INSERT INTO d(r, b, dt, ts, f, jd, rr) VALUES(random(), randomblob(8), datetime('now'), "
    "CURRENT_TIMESTAMP, strftime('%Y-%m-%d %H:%M:%f', 'now'), julianday('now'), abs(random() % 1000) / 7.0)"
)


def run_workers(worker, n, timeout):
    """Runs worker(0) .. worker(n - 1) on threads of their own and waits for them, each
    at most `timeout` seconds (stretched for sanitizer builds)."""
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_seconds(timeout))


def test_determinism_across_nodes(cluster_factory, tmp_path):
    c = cluster_factory(3)
    ok_results(post(c.nodes[0], "/db/execute", [
        "CREATE TABLE d (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, dt TEXT, ts TEXT, f TEXT, jd REAL, "
        "rr REAL, tok INTEGER DEFAULT (random()), created TEXT DEFAULT CURRENT_TIMESTAMP)"]), "CREATE")
    errors = []

    def worker(k):
        node = c.nodes[k % 3]
        for i in range(125):  # 8 threads x 125 = 1,000 INSERTs, one request each
            try:
                ok_results(post(node, "/db/execute", [DET_INSERT]), "INSERT via %s" % node.name)
            except (AssertionError, OSError) as e:
                errors.append(repr(e))
                return
    run_workers(worker, 8, 120)
    assert not errors, errors[:5]
    c.wait_converged()
    rows = c.assert_same_rows("d")
    assert len(rows) == 1000
    assert len({r[1] for r in rows}) > 990, "random() repeats"
    assert len({r[2] for r in rows}) > 990, "randomblob(8) repeats"
    c.assert_same_files()
    # Stopped, every node's file holds the same pages.
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


def test_bulk_writes_are_logged_compressed_and_replay(cluster_factory, tmp_path):
    """A bulk request's log entry is stored compressed (command.c): every node's log
    holds far fewer bytes than the rows' values; a follower that was down receives the
    compressed entries, every node replays them from its own log after a restart, and
    all end with the same rows and pages."""
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [
        "CREATE TABLE bulk (k INTEGER PRIMARY KEY, v TEXT, r INTEGER)"]), "CREATE")
    words = ["order", "shipped", "pending", "invoice", "street", "london", "paris", "total",
             "amount", "customer", "status", "review", "green", "blue", "the", "of", "and"]
    rnd = random.Random(5)
    value_bytes = [0]

    def bulk(node, first):
        stmts = []
        for i in range(2000):
            v = " ".join(rnd.choice(words) for _ in range(14))
            value_bytes[0] += len(v) + 8
            stmts.append(["INSERT INTO bulk(k, v, r) VALUES(?, ?, random())", first + i, v])
        ok_results(post(node, "/db/execute?transaction", stmts), "bulk INSERT via %s" % node.name)

    for b in range(4):
        bulk(leader, b * 2000)
    down = c.followers(leader)[0]
    assert down.stop() == 0
    for b in range(4, 8):
        bulk(c.followers(leader)[0] if b % 2 else leader, b * 2000)  # forwarded ones too
    down.start(wait=True)
    c.wait_converged(timeout=60)
    rows = c.assert_same_rows("bulk")
    assert len(rows) == 16000 and len({r[2] for r in rows}) > 15990
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    for n in c.nodes:
        r = cairn("log", "verify", "--json", n.data_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["ok"] and doc["entries"] >= 9, doc
        # Stored plainly, the log would hold at least the values' bytes.
        assert doc["entry_bytes"] < value_bytes[0] / 2, (doc["entry_bytes"], value_bytes[0])
    for n in c.nodes:
        n.start(wait=False)
    for n in c.nodes:
        n.wait_ready()
    c.wait_converged(timeout=60)
    assert len(c.assert_same_rows("bulk")) == 16000
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


def test_writes_that_roll_back_keep_replicas_identical(cluster_factory, tmp_path):
    """Followers commit the entries of one loop turn together (fsm.c, grouped apply).
    Writes that make SQLite roll back a whole transaction (INSERT OR ROLLBACK conflicts,
    RAISE(ROLLBACK) in a trigger) and ?transaction batches that fail halfway, mixed
    with plain writes from 8 clients through every node, leave every node with the
    same rows and, stopped, the same pages as the leader that applied each alone."""
    c = cluster_factory(3)
    ok_results(post(c.nodes[0], "/db/execute", [
        "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER UNIQUE, v TEXT, r INTEGER)",
        "CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TRIGGER guard BEFORE INSERT ON log WHEN NEW.v = 'bad' "
        "BEGIN SELECT RAISE(ROLLBACK, 'bad row'); END"]), "CREATE")
    errors = []
    kinds = {"ok": 0, "sql_error": 0}

    def worker(w):
        rnd = random.Random(w)
        node = c.nodes[w % 3]
        for i in range(120):
            key = rnd.randrange(400)
            tag = "%d-%d" % (w, i)
            pick = rnd.randrange(6)
            if pick == 0:
                body, params = [["INSERT OR ROLLBACK INTO t(k, v, r) VALUES(?, ?, random())", key, tag]], {}
            elif pick == 1:
                body, params = [["INSERT INTO log(v) VALUES(?)", "bad" if rnd.random() < 0.5 else tag]], {}
            elif pick == 2:
                body, params = [["INSERT INTO t(k, v, r) VALUES(?, ?, random())", 1000 + w * 1000 + i, tag],
                                ["INSERT INTO t(k, v) VALUES(?, ?)", key, tag]], {"transaction": True}
            elif pick == 3:
                body, params = [["INSERT INTO log(v) VALUES(?)", tag],
                                ["INSERT OR ROLLBACK INTO t(k, v) VALUES(?, ?)", key, tag],
                                ["INSERT INTO log(v) VALUES(?)", tag + "-after"]], {}
            else:
                body, params = [["INSERT INTO t(k, v, r) VALUES(?, ?, random())", 100000 + w * 1000 + i, tag]], {}
            try:
                r = node.post("/db/execute", body, **params)
                if r.status != 200:
                    errors.append("%s: HTTP %d %r" % (node.name, r.status, r.body[:200]))
                    return
                res = r.json()["results"]
                kinds["sql_error" if any("error" in x for x in res) else "ok"] += 1
            except (AssertionError, OSError, ValueError) as e:
                errors.append(repr(e))
                return
    run_workers(worker, 8, 180)
    assert not errors, errors[:5]
    assert kinds["sql_error"] > 50 and kinds["ok"] > 300, kinds  # both kinds really ran
    c.wait_converged()
    c.assert_same_rows("t")
    c.assert_same_rows("log")
    c.assert_same_files()
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---------------------------------------------------------------------------
# failures under load


def test_leader_death_under_load(cluster_factory):
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [T_SCHEMA]), "CREATE")
    w = ClusterWriters(c.nodes, clients=16).start()
    try:
        w.wait_more(300, timeout=60)
        t_kill = time.monotonic()
        leader.kill(signal.SIGKILL)
        survivors = [n for n in c.nodes if n is not leader]
        new = c.leader(timeout=10, among=survivors)
        t_leader = time.monotonic()
        assert new is not leader
        first = wait_until(lambda: w.first_ack_after(t_kill), 10 - (time.monotonic() - t_kill),
                           "a successful write after the leader's SIGKILL")
        print("failover: new leader %s after %.2fs, first acknowledged write after %.2fs"
              % (new.name, t_leader - t_kill, first - t_kill))
        assert first - t_kill < 10.0
        w.wait_more(300, timeout=30)
    finally:
        acked = w.stop()
    for n in survivors:
        assert n.running()
    c.wait_converged(survivors, timeout=30)
    for n in survivors:
        assert_acked_present(n, "t", acked, "after the leader's SIGKILL:")
    c.assert_same_rows("t", survivors)
    # The killed node comes back, catches up, and all three are identical.
    leader.start(wait=True)
    c.wait_converged(c.nodes, timeout=60)
    assert_acked_present(leader, "t", acked, "restarted old leader:")
    c.assert_same_rows("t", c.nodes)
    c.assert_same_files(c.nodes)


def test_frozen_follower_under_load(cluster_factory):
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [T_SCHEMA]), "CREATE")
    victim = c.followers(leader)[0]
    w = ClusterWriters(c.nodes, clients=16).start()
    try:
        w.wait_more(200, timeout=60)
        t0 = time.monotonic()
        victim.freeze()
        # The leader notices: /nodes says the frozen node is unreachable.
        wait_until(lambda: (leader.nodes() or {}).get(str(victim.id), {}).get("reachable") is False, 15,
                   "the leader's /nodes to report %s unreachable" % victim.name)
        while time.monotonic() - t0 < 20:  # the length of the freeze, not a synchronisation
            if w.anomalies:
                break
            time.sleep(0.2)
        t1 = time.monotonic()
        n_frozen = sum(1 for t in list(w.ack_times) if t0 <= t <= t1)
        victim.thaw()
        gap = w.max_gap(t0, t1)
        print("frozen %.1fs: %d writes acknowledged meanwhile, longest pause %.2fs"
              % (t1 - t0, n_frozen, gap))
        assert not w.anomalies, w.anomalies[:5]
        assert gap < 2.0, "writes stopped for %.2fs while %s was frozen" % (gap, victim.name)
        w.wait_more(200, timeout=30)
    finally:
        victim.thaw()
        acked = w.stop()
    c.wait_converged(c.nodes, timeout=60)
    for n in c.nodes:
        assert_acked_present(n, "t", acked, "after the freeze:")
    c.assert_same_rows("t")
    wait_until(lambda: (leader.nodes() or {}).get(str(victim.id), {}).get("reachable") is True, 15,
               "the leader's /nodes to report %s reachable again" % victim.name)
    wait_until(victim.ready, 15, "GET /readyz on the thawed %s to answer 200" % victim.name)


def _snapshot_evidence(node):
    """What says node installed a snapshot: positive /status figures whose name has
    "install" in it, or log lines about installing/receiving a snapshot."""
    found = []
    st = node.status() or {}

    def walk(d, path):
        if isinstance(d, dict):
            for k, v in d.items():
                walk(v, path + [k])
        elif "install" in "_".join(path).lower() and isinstance(d, (int, float)) and d > 0 \
                and not isinstance(d, bool):
            found.append("/status %s = %r" % (".".join(path), d))
    walk(st, [])
    for line in node.stderr_text().splitlines():
        if re.search(r"snapshot", line, re.I) and re.search(r"install|receiv|fetch|restor", line, re.I):
            found.append("log: " + line.strip())
    return found


def test_new_node_catches_up_through_a_snapshot_of_a_big_database(cluster_factory):
    # Small thresholds: the log is compacted after a few entries, so a new node cannot be
    # sent the log from the start and must install a snapshot.
    c = cluster_factory(3, extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"])
    leader = c.leader()
    ok_results(post(leader, "/db/execute", ["CREATE TABLE big (id INTEGER PRIMARY KEY, kind TEXT, b BLOB)"]),
               "CREATE")
    # 176 MiB generated on the nodes (256 rows of 64 KiB per transaction) ...
    gen = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 256) "
           "INSERT INTO big(kind, b) SELECT 'gen', randomblob(65536) FROM c")
    for i in range(11):
        ok_results(post(c.nodes[i % 3], "/db/execute", [gen], timeout=120), "generated rows #%d" % i)
    # ... and 50 MiB sent by the client: 100 rows of 100 KiB per transaction.
    import random
    rng = random.Random(7)
    for i in range(5):
        rows = [["INSERT INTO big(kind, b) VALUES('sent', ?)",
                 "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(64)) * 1600]
                for _ in range(100)]
        ok_results(post(c.nodes[(i + 1) % 3], "/db/execute?transaction", rows, timeout=120), "sent rows #%d" % i)
    c.wait_converged(timeout=120)
    payload = leader.scalar("SELECT sum(length(b)) FROM big", level="none")
    assert payload >= 200 * MiB, "only %.1f MiB of rows" % (payload / MiB)
    # The file itself reaches that size once the WAL is checkpointed into it.
    size = wait_until(lambda: (lambda sz: sz if sz >= 200 * MiB else None)(
        leader.get_json("/status")["store"]["db_size"]), 60, "the leader's db.sqlite to pass 200 MiB")
    print("database: %.1f MiB of rows, db.sqlite %.1f MiB" % (payload / MiB, size / MiB))
    wait_until(lambda: (leader.raft().get("last_snapshot_index") or 0) > 10, 60,
               "the leader to take a snapshot past index 10 (log compacted)")

    sampler = RssSampler(c.nodes, interval=0.05).start()
    try:
        t0 = time.monotonic()
        new = c.add_node(extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"], start=False)
        sampler.samples[new.name] = []
        sampler.nodes.append(new)
        new.start(wait=False)
        new.wait_ready(timeout=deadline_seconds(150))
        c.wait_members(4, timeout=60)
        idx = c.wait_converged(c.nodes, timeout=150)
        elapsed = time.monotonic() - t0
    finally:
        samples = sampler.stop()
    growth = sampler.growth_kib()
    report = ", ".join("%s %.0f->%.0f MiB (+%.1f)" % (k, a / 1024, b / 1024, g / 1024)
                       for k, (a, b, g) in growth.items())
    print("4th node caught up to index %d in %.1fs; RSS: %s" % (idx, elapsed, report))
    assert samples[new.name], "no RSS sample of the new node"
    too_big = {k: g for k, (a, b, g) in growth.items() if g > 64 * 1024}
    assert not too_big, "RSS grew by more than 64 MiB during the transfer: %s" % report
    evidence = _snapshot_evidence(new)
    assert evidence, ("nothing in %s's /status or log says it installed a snapshot; /status raft: %r"
                      % (new.name, new.raft()))
    print("snapshot evidence on %s: %s" % (new.name, evidence[:3]))
    # Caught up, it is promoted to voter.
    wait_until(lambda: (leader.nodes() or {}).get(str(new.id), {}).get("voter") is True, 30,
               "the leader's /nodes to list %s as a voter" % new.name)
    for n in c.nodes:
        got = n.local_rows("SELECT kind, count(*), sum(length(b)) FROM big GROUP BY kind ORDER BY kind")
        assert got == [["gen", 2816, 2816 * 65536], ["sent", 500, 500 * 102400]], (n.name, got)
    hashes = {n.name: n.local_rows("SELECT count(*), sum(length(b)), hex(max(b)), hex(min(b)) FROM big")
              for n in c.nodes}
    assert len({json.dumps(v) for v in hashes.values()}) == 1, hashes
    c.assert_same_files(c.nodes)


def test_node_killed_while_fetching_a_snapshot_chain_installs_it_at_its_next_start(
        cluster_factory, tmp_path):
    """A snapshot names a backup chain (a full backup and the incrementals on it) that a
    joining node fetches from the leader, newest first. Killed with SIGKILL while an
    older file of the chain (a large one) is being downloaded, the node starts again and
    installs the same snapshot, with no write in between to make the leader take a new
    one: it is ready within a deadline, nothing of the cut-off download is left, and the
    replicas are the same."""
    args = ["--snapshot-threshold", "4", "--snapshot-trailing", "2"]
    c = cluster_factory(3, extra_args=args)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [
        "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)",
        "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)"]), "CREATE")
    gen = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 256) "
           "INSERT INTO big(b) SELECT randomblob(65536) FROM c")
    for i in range(3):  # 48 MiB into an older file of the chain
        ok_results(post(leader, "/db/execute", [gen], timeout=120), "generated rows #%d" % i)
    taken = leader.raft().get("snapshots_taken") or 0
    written = [0]

    def two_more_snapshots():
        # Small incrementals on the snapshot that holds the large rows, fetched first.
        ok_results(post(leader, "/db/execute", [["INSERT INTO small(v) VALUES(?)",
                                                 "v%d" % written[0]]]), "small row")
        written[0] += 1
        return (leader.raft().get("snapshots_taken") or 0) >= taken + 2
    wait_until(two_more_snapshots, 60, "the leader to take two snapshots after the large rows",
               interval=0)
    c.wait_converged()
    new = c.add_node(extra_args=args, start=False)
    snaps = new.data_dir / "snapshots"

    def big_download():
        try:
            return any(p.name.startswith(".") and ".fetch" in p.name and
                       p.stat().st_size > 4 * MiB for p in snaps.iterdir())
        except FileNotFoundError:
            return False
    new.start(wait=False)
    wait_until(big_download, 60, "%s to download the large file of the chain" % new.name,
               interval=0.001)
    new.kill()
    print("at the kill: %s" % sorted(p.name for p in snaps.iterdir()))
    new.start(wait=False)
    new.wait_ready(timeout=deadline_seconds(60))
    c.wait_members(4, timeout=60)
    c.wait_converged(c.nodes, timeout=60)
    assert not [p.name for p in snaps.iterdir() if ".fetch" in p.name]
    for n in c.nodes:
        got = n.local_rows("SELECT count(*), sum(length(b)) FROM big")
        assert got == [[768, 768 * 65536]], (n.name, got)
    c.assert_same_rows("small")
    c.stop_all()
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---------------------------------------------------------------------------
# backups and restores across the cluster


@pytest.mark.parametrize("repos", ["own", "shared"])
def test_backup_on_a_follower_and_cluster_wide_restore(cluster_factory, cairn_bin, tmp_path, repos):
    # Each node's backups go to its own --backup-dir (the default, beside its data), or
    # every node is given the same directory.
    c = cluster_factory(3, extra_args=["--backup-dir", tmp_path / "shared-backups"] if repos == "shared" else ())
    leader = c.leader()
    f = c.followers(leader)[0]
    other = [n for n in c.nodes if n is not leader and n is not f][0]
    ok_results(post(leader, "/db/execute", ["CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)"]), "CREATE")
    ok_results(post(other, "/db/execute?transaction",
                    [["INSERT INTO b(v) VALUES(?)", "row %d" % i] for i in range(500)]), "INSERT 500")
    # The default: BACKUP runs on the leader, whichever node is asked.
    row = backuputil.sql_row(other, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS)
    assert os.path.dirname(row["path"]) == str(leader.backup_dir), (row, leader.backup_dir)
    # ?node=ID: on that follower, into its own repository (once it has applied the 500
    # rows: a follower backs up what it has applied).
    c.wait_converged()
    row = backuputil.sql_row(other, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS,
                             node=f.id)
    assert os.path.dirname(row["path"]) == str(f.backup_dir), (row, f.backup_dir)
    assert os.path.exists(row["path"])
    if repos == "own":
        assert not os.path.exists(os.path.join(str(leader.backup_dir), os.path.basename(row["path"])))
    bid = row["backup_id"]
    # POST /admin/backup?node=ID too, asked of the leader.
    r = leader.raw("POST", "/admin/backup?node=%d" % f.id, {"type": "incremental"})
    assert r.status == 200, r
    e = backuputil.check_entry(r.json()["backup"])
    assert os.path.dirname(e["path"]) == str(f.backup_dir), e
    # What the backup holds, restored standalone from the follower's repository.
    expected = backuputil.file_rows(backuputil.cli_restore(cairn_bin, f.backup_dir, bid, tmp_path / "exp.db"),
                                    "SELECT id, v FROM b ORDER BY id")
    assert len(expected) == 500
    # The database moves on, then the backup is restored live, through the leader.
    ok_results(post(f, "/db/execute", ["DELETE FROM b WHERE id % 3 = 0",
                                       "INSERT INTO b(v) VALUES('after the backup')"]), "changes")
    res = backuputil.sql_result(leader, "RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid))
    assert res.get("values"), res
    c.wait_converged(timeout=60)
    for n in c.nodes:
        got = n.local_rows("SELECT id, v FROM b ORDER BY id")
        assert got == expected, "%s after the restore: %d rows, want %d" % (n.name, len(got), len(expected))
    c.assert_same_files()
    # The cluster takes writes after the restore, then every node holds the same pages.
    ok_results(post(f, "/db/execute", [["INSERT INTO b(v) VALUES(?)", "after the restore"]]), "INSERT after")
    c.wait_converged()
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---------------------------------------------------------------------------
# bad input and lost peers


def test_bad_input(cluster_factory, tmp_path):
    c = cluster_factory(3)
    leader = c.leader()
    f = c.followers(leader)[0]
    ok_results(post(leader, "/db/execute", ["CREATE TABLE x (id INTEGER PRIMARY KEY, v)"]), "CREATE")
    http_port, raft_port, dead_port = find_free_ports(3)

    # POST /join: a known id with another address -> 409, from the leader or a follower.
    for n in (leader, f):
        msg = error_json(post(n, "/join", {"id": 2, "addr": "127.0.0.1:%d" % raft_port,
                                           "api_addr": "http://127.0.0.1:%d" % http_port, "voter": True}),
                         (409,), "POST /join with node 2's id to %s" % n.name)
        assert "2" in msg, msg
    # A process joining with a duplicate id exits 1 and says why.
    dup = c.add_node(node_id=2, start=False)
    c.forget(dup)
    dup.start(wait=False)
    assert dup.data_dir != c.node(2).data_dir
    rc = dup.wait_exit(timeout=40)
    assert rc == 1, "a node joining with a duplicate id exited %s; stderr:\n%s" % (rc, dup.stderr_tail())
    text = dup.stderr_text()
    assert re.search(r"\b2\b", text) and re.search(r"already|duplicate|exists|409", text, re.I), text[-3000:]
    print("duplicate id: %s" % [ln for ln in text.splitlines() if "cairnd" in ln][-1:])

    # POST /join that is not a join: 400 with a JSON error.
    for body in ("not json", {"addr": "127.0.0.1:1"}, {"id": 0, "addr": "127.0.0.1:1"}, {"id": 5}):
        error_json(post(leader, "/join", body), (400,), "POST /join %r" % (body,))
    # POST /join with a raft address nothing listens on: a clear error, within a bound,
    # and the cluster neither lists it as a voter nor stops taking writes.
    res = post(leader, "/join", {"id": 9, "addr": "127.0.0.1:%d" % dead_port,
                                 "api_addr": "http://127.0.0.1:%d" % find_free_ports(1)[0], "voter": True},
               timeout=60)
    msg = error_json(res, (400, 408, 409, 422, 500, 502, 503, 504), "POST /join with an unreachable raft address")
    print("join of an unreachable raft address: HTTP %d after %.1fs: %s" % (res[0], res[3], msg))
    assert res[3] < deadline_seconds(30)
    doc = leader.get_json("/nodes")
    assert "9" not in doc or doc["9"].get("voter") is False, doc
    ok_results(post(f, "/db/execute", [["INSERT INTO x(v) VALUES(?)", "after the bad join"]]), "write after")

    # DELETE /remove of an unknown node -> 404 JSON; a malformed body -> 400.
    for body in ({"id": "99"}, {"id": 99}):
        error_json(http_call(leader.http_port, "DELETE", "/remove", body, timeout=10), (404,),
                   "DELETE /remove %r" % body)
    error_json(http_call(f.http_port, "DELETE", "/remove", {"id": "99"}, timeout=10), (404,),
               "DELETE /remove of an unknown node through a follower")
    error_json(http_call(leader.http_port, "DELETE", "/remove", "not json", timeout=10), (400,),
               "DELETE /remove with a body that is not JSON")
    assert sorted(leader.get_json("/nodes")) == ["1", "2", "3"]

    # Every peer of the leader stopped: a write proposed then is answered within the
    # bound with 504, outcome unknown (its entry is in the leader's log, and a later
    # leader may commit it: never 503 "nothing written"); requests after the leader
    # gave up get 503 {"error"}.
    for n in c.followers(leader):
        assert n.stop() == 0
    t0 = time.monotonic()
    res = post(leader, "/db/execute", [["INSERT INTO x(v) VALUES(?)", "no quorum"]], timeout=30)
    print("write right after both peers stopped: HTTP %d after %.1fs" % (res[0], res[3]))
    msg = error_json(res, (504,), "a write to a leader whose peers are all stopped")
    assert "outcome unknown" in msg and "log entry" in msg, msg
    assert res[3] <= deadline_seconds(12), "the write took %.1fs" % res[3]
    wait_until(lambda: leader.leader_id() == 0 or leader.state() != "leader", 15,
               "%s to give up leadership without a quorum" % leader.name)
    # These may each wait up to the bound for a leader: sent at once, in parallel.
    asks = (("/db/execute", [["INSERT INTO x(v) VALUES(?)", "no leader"]]),
            ("/db/request", [["INSERT INTO x(v) VALUES(?)", "no leader"]]),
            (qpath("SELECT count(*) FROM x"), None),
            (qpath("SELECT count(*) FROM x", level="linearizable"), None),
            (qpath("SELECT count(*) FROM x", level="strong"), None))
    answers = [None] * len(asks)

    def ask(i, path, body):
        try:
            answers[i] = http_call(leader.http_port, "POST" if body is not None else "GET", path, body,
                                   timeout=deadline_seconds(30))
        except Exception as e:  # noqa: BLE001 - reported below
            answers[i] = e
    threads = [threading.Thread(target=ask, args=(i, p, b), daemon=True) for i, (p, b) in enumerate(asks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_seconds(40))
    for (path, _), res in zip(asks, answers):
        assert isinstance(res, tuple), "%s with no leader: %r" % (path, res)
        error_json(res, (503,), "%s with no leader" % path)
        assert res[3] <= deadline_seconds(6.5), "%s took %.1fs to be refused" % (path, res[3])
    st, _, data, _ = get(leader, qpath("SELECT count(*) FROM x", level="none"))
    assert st == 200, (st, data)
    assert json.loads(data)["results"][0]["values"] == [[1]], data
    st, _, _, secs = get(leader, "/readyz")
    assert st == 503 and secs <= deadline_seconds(6.5), (st, secs)
    del t0


# ---------------------------------------------------------------------------
# restarts and leadership hand-over


def test_a_write_that_may_have_landed_is_never_answered_nothing_written(cluster_factory):
    """Both followers stopped, writes to the leader: each is proposed, then the leader
    loses its quorum. Before, the answer was 503 "server has lost leadership" (which the
    README reads as "nothing written"), yet once the followers came back the leader's
    entry was committed and the row was on every node: a client that retried inserted
    twice. Now such a write is answered 504 with an outcome-unknown message naming its
    log entry; every 503 is a write that is on no node, ever."""
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", ["CREATE TABLE u (k TEXT PRIMARY KEY)"]), "CREATE")
    c.wait_converged()
    for n in c.followers(leader):
        assert n.stop() == 0
    answers = {}
    for i in range(3):
        key = "w%d" % i
        answers[key] = post(leader, "/db/execute", [["INSERT INTO u(k) VALUES(?)", key]], timeout=30)
        print(key, answers[key][0], answers[key][2][:300])
    for n in c.nodes:
        if n is not leader:
            n.start(wait=False)
    ok_results(post(c.leader(timeout=deadline_seconds(30)), "/db/execute", [["INSERT INTO u(k) VALUES(?)", "after"]]), "INSERT after")
    c.wait_converged(timeout=60)
    rows = {r[0] for r in c.assert_same_rows("u")}
    assert "after" in rows
    for key, res in answers.items():
        st = res[0]
        if st == 200:
            assert key in rows, "%s was acknowledged but is on no node" % key
        elif st == 503:
            assert key not in rows, "%s was answered 503 (nothing written) but is on every node" % key
        else:
            msg = error_json(res, (504,), "write %s without a quorum" % key)
            assert "outcome unknown" in msg and re.search(r"log entry \d+ in term \d+", msg), msg
    # The first write was proposed while the leader still led: its outcome is unknown.
    assert answers["w0"][0] == 504, answers["w0"]


def test_restarted_nodes_rejoin_by_themselves(cluster_factory):
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [T_SCHEMA]), "CREATE")
    seq = [0]

    def write(n, k=20):
        ok_results(post(n, "/db/execute", [["INSERT INTO t(client, seq) VALUES(?, ?)", 0, seq[0] + i]
                                           for i in range(k)]), "INSERT via %s" % n.name)
        seq[0] += k

    write(leader)
    a, b = c.followers(leader)
    # a: clean stop, writes meanwhile, restart with the same flags.
    assert a.stop() == 0
    write(b)
    a.start(wait=True)
    c.wait_converged(timeout=30)
    c.assert_same_rows("t")
    # b: SIGKILL, writes meanwhile, restart with no --join / --bootstrap-expect at all.
    b.kill(signal.SIGKILL)
    write(a)
    b.cluster_args = []
    b.start(wait=True)
    c.wait_converged(timeout=30)
    assert c.assert_same_rows("t") and len(c.assert_same_rows("t")) == seq[0]
    doc = c.wait_members(3)
    check_nodes_doc(doc, c.nodes, c.leader())
    for n in (a, b):
        wait_until(n.ready, 10, "GET /readyz on restarted %s to answer 200" % n.name)


def test_sigterm_of_the_leader_hands_leadership_over(cluster_factory):
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", [T_SCHEMA]), "CREATE")
    w = ClusterWriters([n for n in c.nodes if n is not leader], clients=4).start()
    try:
        w.wait_more(50)
        survivors = [n for n in c.nodes if n is not leader]
        t0 = time.monotonic()
        leader.proc.send_signal(signal.SIGTERM)

        def new_leader():
            for n in survivors:
                r = n.raft(timeout=1)
                if r.get("state") == "leader":
                    return n
            return None
        new = wait_until(new_leader, 10, "a survivor to become leader after the leader's SIGTERM",
                         interval=0.01)
        t_new = time.monotonic() - t0
        first = wait_until(lambda: w.first_ack_after(t0 + t_new), 10, "a write after the hand-over")
        rc = leader.wait_exit(timeout=20)
        print("SIGTERM of %s: %s leader after %.2fs, first write after %.2fs, exit %s"
              % (leader.name, new.name, t_new, first - t0, rc))
        assert rc == 0, leader.stderr_tail()
        assert t_new < 2.0, "the new leader took %.2fs (an election timeout, not a hand-over?)" % t_new
        w.wait_more(50)
    finally:
        acked = w.stop()
    c.wait_converged(survivors, timeout=30)
    for n in survivors:
        assert_acked_present(n, "t", acked, "after the hand-over:")
    leader.start(wait=True)
    c.wait_converged(c.nodes, timeout=30)
    c.assert_same_rows("t", c.nodes)


# ---------------------------------------------------------------------------
# the cairn command


def cairn(*args, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    return subprocess.run([str(BUILD / "cairn")] + [str(a) for a in args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=deadline_seconds(timeout))


def test_cli_node_list_remove_and_backup_on_a_node(cluster_factory, cairn_bin):
    c = cluster_factory(3)
    leader = c.leader()
    f = c.followers(leader)[0]
    # The node directory (HTTP addresses) reaches each node through the log: wait until
    # both nodes asked below list every member complete.
    c.wait_members(3, node=f)
    c.wait_members(3, node=leader)

    r = cairn("node", "--help")
    assert r.returncode == 0 and "list" in r.stdout and "remove" in r.stdout, r
    r = cairn("node", "list", "--help")
    assert r.returncode == 0 and "--json" in r.stdout, r
    r = cairn("node")
    assert r.returncode == 2, r

    r = cairn("--host", f.url, "node", "list")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    for n in c.nodes:
        line = [ln for ln in lines if re.search(r"(^|[\s|])%d[\s|]" % n.id, ln) and n.raft_addr in ln]
        assert line, "no row for node %d in:\n%s" % (n.id, r.stdout)
        assert n.http_addr in line[0], line
        assert ("yes" in line[0] or "true" in line[0]), line  # voter, reachable
    assert re.search(r"(?i)leader", r.stdout), r.stdout

    r = cairn("node", "list", "--json", "--host", leader.url)
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    check_nodes_doc(doc, c.nodes, leader)

    # Back up on a chosen node.
    ok_results(post(leader, "/db/execute", ["CREATE TABLE z (x)", "INSERT INTO z VALUES(1)"]), "CREATE")
    r = cairn("--host", leader.url, "backup", "create", "--node", f.id, "--json")
    assert r.returncode == 0, r
    entry = json.loads(r.stdout)
    assert os.path.dirname(entry["path"]) == str(f.backup_dir), (entry, f.backup_dir)
    r = cairn("--host", leader.url, "backup", "create", "--node", "99")
    assert r.returncode == 1 and r.stderr.strip(), r

    # Remove a stopped follower.
    gone = c.followers(leader)[-1]
    assert gone.stop() == 0
    r = cairn("--host", f.url if f is not gone else leader.url, "node", "remove", gone.id)
    assert r.returncode == 0, r
    c.forget(gone)
    wait_until(lambda: sorted(leader.nodes() or {}) == sorted(str(n.id) for n in c.nodes), 15,
               "/nodes without node %d" % gone.id)
    r = cairn("--host", leader.url, "node", "list", "--json")
    assert r.returncode == 0 and str(gone.id) not in json.loads(r.stdout), r
    # Removing it again: the server's 404 message, exit 1.
    r = cairn("--host", leader.url, "node", "remove", gone.id)
    assert r.returncode == 1 and r.stderr.strip(), r
    r = cairn("--host", leader.url, "node", "remove", "abc")
    assert r.returncode in (1, 2) and r.stderr.strip(), r
    # The two left still form a working cluster.
    ok_results(post(f, "/db/execute", ["INSERT INTO z VALUES(2)"]), "write after removal")


def test_removed_node_started_again_says_it_was_removed(cluster_factory):
    """A node removed while it was down and started again on its old data directory
    printed "node ready", then campaigned for ever with nothing in its log, answered
    /readyz only "leader not ok" and kept serving its stale copy at level none. It now
    learns from the leader that it is not in the configuration: /readyz, /status, its
    log and a read say so."""
    c = cluster_factory(3)
    leader = c.leader()
    c.wait_members(3, node=leader)
    ok_results(post(leader, "/db/execute", ["CREATE TABLE r (x)", "INSERT INTO r VALUES(1)"]),
               "CREATE")
    gone = c.followers(leader)[-1]
    wait_until(lambda: gone.local_rows("SELECT count(*) FROM r") == [[1]], 15,
               "node %d to apply the insert" % gone.id)
    assert gone.stop() == 0
    st, _, data, _ = http_call(leader.http_port, "DELETE", "/remove", {"id": str(gone.id)},
                               timeout=10)
    assert st == 200, (st, data)
    c.forget(gone)
    ok_results(post(leader, "/db/execute", ["INSERT INTO r VALUES(2)"]), "write after removal")
    gone.start(wait=False)

    def readyz_says_removed():
        try:
            r = gone.raw("GET", "/readyz", timeout=2)
        except OSError:
            return False
        return r.status == 503 and "not in the cluster's configuration" in r.text
    wait_until(readyz_says_removed, 20, "/readyz of node %d to say it was removed" % gone.id)
    assert "node %d, the leader" % leader.id in gone.raw("GET", "/readyz").text
    assert "not in the cluster's configuration" in gone.stderr_tail()
    assert "not in the cluster's configuration" in gone.status()["store"]["removed"]
    r = gone.raw("GET", "/db/query?level=none&q=SELECT%20count(*)%20FROM%20r")
    assert r.status == 503 and "not in the cluster's configuration" in r.text, r
    # The cluster is unaffected.
    ok_results(post(leader, "/db/execute", ["INSERT INTO r VALUES(3)"]), "write")


def test_leader_early_runs_keep_replicas_identical(cluster_factory, tmp_path):
    """The leader runs a write's SQL while its entry is replicated (early apply); the
    followers apply the entry from the log. Mixed writes from clients of every node
    (RETURNING random(), failing ?transaction batches, RAISE(ROLLBACK), bulk inserts)
    leave every node with the rows the clients were told of and the same pages."""
    from test_early_apply import SCHEMA, check_returned, check_rolled_back, mixed_batch, returned_rows
    c = cluster_factory(3)
    leader = c.leader()
    ok_results(post(leader, "/db/execute", SCHEMA), "schema")
    lock = threading.Lock()
    counter = iter(range(1, 10 ** 9))
    returned, errors = [], []

    def next_key():
        with lock:
            return next(counter)

    def worker(w):
        rnd = random.Random(200 + w)
        # Mostly through the leader, where early runs happen; one client per follower.
        node = leader if w < 2 else c.nodes[w % 3]
        for i in range(40):
            path, stmts, params, kind = mixed_batch(rnd, w, i, next_key)
            q = "?" + "&".join(params) if params else ""
            try:
                st, _, data, _ = http_call(node.http_port, "POST", path + q, stmts,
                                           timeout=deadline_seconds(30))
            except OSError as e:
                errors.append(repr(e))
                return
            if st != 200:
                errors.append("%s: HTTP %d %r" % (node.name, st, data[:200]))
                return
            if kind == "returning":
                with lock:
                    returned.extend(returned_rows(json.loads(data)["results"]))

    run_workers(worker, 4, 240)
    assert not errors, errors[:5]
    applies = leader.status()["store"]["early_applies"]
    assert applies > 0, "the leader ran no write early"
    c.wait_converged()
    for node in c.nodes:
        check_returned(node, returned, level="none")
        check_rolled_back(node, level="none")
    c.assert_same_rows("t")
    c.assert_same_rows("log")
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


def test_readyz_noleader_answers_200_on_a_node_without_quorum(cluster_factory):
    """rqlite's `/readyz?noleader` is 200 on a running node whether or not it knows a
    leader (cairn answered 503, as for plain /readyz); plain /readyz stays 503 there,
    and `?noleader=false` is plain /readyz."""
    c = cluster_factory(3)
    leader = c.leader()
    survivor = c.followers(leader)[0]
    assert get(survivor, "/readyz?noleader")[0] == 200
    for n in c.nodes:
        if n is not survivor:
            n.kill()
    wait_until(lambda: survivor.leader_id() == 0, 30, "the survivor to lose its leader")
    st, _, body, _ = get(survivor, "/readyz?noleader")
    assert st == 200 and b"node ok" in body, (st, body)
    assert get(survivor, "/readyz")[0] == 503
    assert get(survivor, "/readyz?noleader=false")[0] == 503


def test_a_removal_the_leader_could_not_commit_is_never_answered_nothing_done(cluster_factory):
    """DELETE /remove while the leader has no quorum: the configuration change is in the
    leader's log, and a leader elected later commits it. The answer must not be one that
    says nothing was done (503, like a refused request): it is 504, outcome unknown, with
    the entry named, as for a write."""
    c = cluster_factory(3)
    leader = c.leader()
    gone, back = c.followers(leader)
    c.wait_members(3, node=leader)
    gone.kill(signal.SIGKILL)
    back.kill(signal.SIGKILL)
    st, _, data, _ = http_call(leader.http_port, "DELETE", "/remove", {"id": str(gone.id)},
                               timeout=deadline_seconds(60))
    c.forget(gone)
    # Only `back` returns: its log lacks the change, so it cannot win an election
    # against the leader's; whoever leads next holds the change and commits it.
    back.start(wait=False)
    new = c.leader(timeout=30)
    wait_until(lambda: sorted(new.nodes() or {}) == sorted(str(n.id) for n in c.nodes), 30,
               "/nodes without node %d once a quorum is back" % gone.id)
    doc = json_or_none(data) or {}
    assert st in (200, 504), (
        "the removal of node %d took effect, but was answered HTTP %d %r: a status that "
        "says nothing was done" % (gone.id, st, data))
    if st == 504:
        assert "outcome unknown" in doc.get("error", "") and "log entry" in doc["error"], doc
    # The cluster of two works, and a removal that goes through is answered 200.
    ok_results(post(new, "/db/execute", ["CREATE TABLE z (x)"]), "write after the removal")


@pytest.mark.parametrize("how", ["GET /db/query", "POST /db/request"])
def test_a_deposed_leader_forwards_reads_above_none_to_the_new_leader(cluster_factory, how):
    """A leader cut off (frozen) while the others elect a new one and write: right after
    it comes back it may still believe it leads, and its barrier then fails. A read at
    linearizable or strong sent to it must still be answered, by the new leader, with
    the write made meanwhile (a node forwards such reads), not refused with 503 "server
    is not the leader" while a leader is there to answer."""
    c = cluster_factory(3)
    ok_results(post(c.leader(), "/db/execute", ["CREATE TABLE d (x)"]), "CREATE")
    for rnd, level in enumerate(["linearizable", "strong", "linearizable", "strong"]):
        old = c.leader()
        old.freeze()
        try:
            new = c.leader(timeout=20, among=[n for n in c.nodes if n is not old])
            ok_results(post(new, "/db/execute", [["INSERT INTO d VALUES(?)", rnd]]),
                       "write on the new leader %s" % new.name)
        finally:
            old.thaw()
        sql = "SELECT count(*) FROM d"
        if how.startswith("GET"):
            st, _, data, _ = get(old, qpath(sql, level=level))
        else:
            st, _, data, _ = post(old, "/db/request?level=%s" % level, [sql])
        assert st == 200, "round %d: %s level=%s on the deposed leader %s: HTTP %d %r" % (
            rnd, how, level, old.name, st, data[:300])
        res = json.loads(data)["results"][0]
        assert res.get("values") == [[rnd + 1]], (rnd, level, res)
        c.wait_converged(timeout=30)


def test_a_branch_restored_through_any_node_is_read_through_any_node(cluster_factory):
    """RESTORE ... TO BRANCH runs on the leader (or on ?node=ID), whichever node it is
    sent to; the branch file is that node's. Reading the branch through another node
    must reach it, as every other request does: not answer 404 "no branch" on a
    follower, nor ignore ?node=ID."""
    c = cluster_factory(3)
    leader = c.leader()
    f, g = c.followers(leader)
    ok_results(post(leader, "/db/execute", ["CREATE TABLE b (x)", "INSERT INTO b VALUES(1)"]), "CREATE")
    res = ok_results(post(f, "/db/execute", ["BACKUP DATABASE FULL"]), "BACKUP via a follower")
    bid = res[0]["values"][0][1]
    ok_results(post(f, "/db/execute", ["INSERT INTO b VALUES(2)"]), "INSERT after the backup")
    ok_results(post(f, "/db/execute", ["RESTORE DATABASE FROM '%s' TO BRANCH 'old'" % bid]),
               "RESTORE TO BRANCH via a follower")
    sql = "SELECT count(*) FROM b"
    for n in c.nodes:
        for extra in ({}, {"node": leader.id}):
            st, _, data, _ = get(n, qpath(sql, branch="old", **extra))
            assert st == 200, "?branch=old%s on %s (%s): HTTP %d %r" % (
                "&node=%d" % leader.id if extra else "", n.name,
                "leader" if n is leader else "follower", st, data[:300])
            assert json.loads(data)["results"][0]["values"] == [[1]], data
        # The live database is untouched.
        assert count_where(n, sql, "strong") == 2
    # A branch no node has: 404 wherever it is asked.
    for n in c.nodes:
        error_json(get(n, qpath(sql, branch="nope")), (404,), "?branch=nope on %s" % n.name)
    ok_results(post(g, "/db/execute", ["DROP BRANCH 'old'"]), "DROP BRANCH via a follower")
    for n in c.nodes:
        error_json(get(n, qpath(sql, branch="old")), (404,), "the dropped branch on %s" % n.name)
