"""A bound on the temporary files one statement may write (cairnd --max-temp-size).

SQLite sorts, groups and keeps DISTINCT what does not fit its cache in temporary files
(in $SQLITE_TMPDIR, $TMPDIR or /tmp). Before, nothing bounded them: a read grouping an
endless recursive CTE wrote about 190 MB a second until its time limit, a write until
its step budget, enough to fill the disk, which stops the node (Raft cannot append, the
database cannot write). Now a statement that would take more than the limit fails,
naming it, before writing past it; the node keeps serving; a write's limit is the
leader's, carried in its log entry, so every node (and every replay) fails it alike.

The tests point SQLITE_TMPDIR at a directory of their own and measure the temporary
files the server holds open there (SQLite unlinks them at once, so only /proc/PID/fd
shows them), polling while the statement runs.
"""

import os
import threading
import time

import pytest

from clusterutil import http_call, json_or_none
from conftest import assert_exec_ok, deadline_seconds
from test_cluster import cluster_factory  # noqa: F401  (the fixture)
from test_durability import _remove_db_files

MiB = 1 << 20
LIMIT = 20 * MiB
WRITE_LIMIT = MiB
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "


def temp_bytes(pid, tmpdir):
    """Bytes of disk the open files of process pid under tmpdir take."""
    total = 0
    fds = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fds)
    except OSError:
        return 0
    for fd in names:
        try:
            if os.readlink(os.path.join(fds, fd)).startswith(str(tmpdir) + "/"):
                total += os.stat(os.path.join(fds, fd)).st_blocks * 512
        except OSError:
            pass  # closed meanwhile
    return total


class TempWatch:
    """The most temp_bytes of the given pids seen while it runs."""

    def __init__(self, pids, tmpdir):
        self.pids, self.tmpdir, self.most = pids, tmpdir, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                self.most = max(self.most, temp_bytes(pid, self.tmpdir))
            time.sleep(0.01)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_a_read_stops_at_the_temp_limit_and_the_node_serves_on(server_factory, tmp_path,
                                                              monkeypatch):
    tmpdir = tmp_path / "sqlite-tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmpdir))
    s = server_factory(extra_args=["--max-temp-size", str(LIMIT), "--query-timeout", "120s"])
    assert_exec_ok(s.execute(["CREATE TABLE t(a)", "INSERT INTO t VALUES(1)"]))
    reads = [
        ENDLESS + "SELECT randomblob(1000), count(*) FROM c GROUP BY 1",
        ENDLESS + "SELECT x, randomblob(500) FROM c ORDER BY 2",
        ENDLESS + "SELECT DISTINCT randomblob(300) FROM c",
    ]
    for sql in reads:
        t0 = time.monotonic()
        with TempWatch([s.pid], tmpdir) as w:
            res = s.query([sql, "SELECT count(*) FROM t"])["results"]
        secs = time.monotonic() - t0
        err = res[0].get("error", "")
        assert "--max-temp-size" in err and str(LIMIT) in err, (sql, res)
        assert res[1]["values"] == [[1]], res  # the request's next statement runs
        # Before, the read ran until its time limit (120 s) and took gigabytes.
        assert secs < deadline_seconds(30), (sql, secs)
        assert w.most <= LIMIT + MiB, (sql, w.most)
        print("%s: stopped after %.1fs, at most %d bytes of temp files" % (sql[:60], secs, w.most))
    # Nothing left behind; the node still reads and writes.
    assert temp_bytes(s.pid, tmpdir) == 0
    assert_exec_ok(s.execute(["INSERT INTO t VALUES(2)"]))
    assert s.rows("SELECT count(*) FROM t") == [[2]]
    # A sort that spills to temporary files within the limit still runs (about 5 MB
    # against a reader's cache of 2 MB).
    res = s.query(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                   "WHERE x < 50000) SELECT x FROM c ORDER BY printf('%.80d', x) DESC "
                   "LIMIT 1"])["results"][0]
    assert res.get("values") == [[50000]], res


def test_max_temp_size_flag_is_checked(cairnd_bin, tmp_path):
    import subprocess
    out = subprocess.run([str(cairnd_bin), "--help"], capture_output=True, text=True).stdout
    assert "--max-temp-size" in out
    r = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "d"), "--max-temp-size",
                        "0"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--max-temp-size" in r.stderr, r


def post(node, stmts, timeout=60.0):
    st, _, data, _ = http_call(node.http_port, "POST", "/db/execute", stmts,
                               timeout=deadline_seconds(timeout))
    doc = json_or_none(data)
    assert st == 200 and isinstance(doc, dict), (st, data[:1000])
    return doc["results"]


@pytest.mark.cluster
def test_a_write_over_the_leaders_temp_limit_fails_on_every_node(cluster_factory, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    """Node 1, the leader, alone has --max-temp-size 1 MiB; the followers have the
    default (1 GiB). A write whose sort spills more than 1 MiB fails on every node
    (the limit travels in the entry), the nodes keep identical files, also when the
    followers rebuild their databases from the log, and no node's temporary files grow
    past the limit."""
    tmpdir = tmp_path / "sqlite-tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmpdir))
    c = cluster_factory(3, mode="join", start=False)
    c.nodes[0].extra_args = ["--max-temp-size", str(WRITE_LIMIT)]
    leader = c.start()
    assert leader is c.nodes[0], "node 1 formed the cluster alone and should lead"
    f = c.followers(leader)
    rows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
    res = post(leader, ["CREATE TABLE s(v TEXT)", rows + "INSERT INTO s SELECT printf('%.200d', x) "
                        "FROM c"])
    assert all("error" not in r for r in res), res
    pids = [n.pid for n in c.nodes]
    with TempWatch(pids, tmpdir) as w:
        # The writer sorts 32 MiB in memory; these sorts take about 42 MB each.
        res = post(f[0], [rows + "INSERT INTO s SELECT printf('%.200d', -x) FROM c ORDER BY 1 DESC",
                          "INSERT INTO s VALUES('after')"])
        assert "--max-temp-size" in res[0].get("error", ""), res
        assert "every node" in res[0]["error"], res
        assert "error" not in res[1], res
        res = post(leader, ["CREATE INDEX s_v ON s(v)"])
        assert "--max-temp-size" in res[0].get("error", ""), res
        idx = c.wait_converged(timeout=deadline_seconds(60))
    print("at most %d bytes of temporary files on one node" % w.most)
    assert w.most <= WRITE_LIMIT + MiB, w.most
    for n in c.nodes:
        assert n.applied_index() == idx
        assert n.local_rows("SELECT count(*) FROM s") == [[200001]], n.name
        assert n.local_rows("SELECT count(*) FROM sqlite_master WHERE type = 'index'") == [[0]]
    c.assert_same_files()

    # The followers rebuild their databases from the log with their own (default)
    # limit: the entries say the leader's, and they agree again.
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    for n in f:
        assert "db.sqlite" in _remove_db_files(n)
    for n in c.nodes:
        n.start(wait=False)
    for n in c.nodes:
        n.wait_ready(timeout=deadline_seconds(60))
    c.leader()
    c.wait_converged(timeout=deadline_seconds(60))
    for n in c.nodes:
        assert n.local_rows("SELECT count(*) FROM s") == [[200001]], n.name
        assert n.local_rows("SELECT count(*) FROM sqlite_master WHERE type = 'index'") == [[0]]
    c.assert_same_files()
