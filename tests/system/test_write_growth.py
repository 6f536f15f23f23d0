"""A bound on how much one write request may grow the database (cairnd
--max-write-growth, 1 GiB by default).

Before, nothing bounded it: `INSERT INTO t SELECT randomblob(60000000) FROM <rows>` takes
few VM steps, so the step budget never stopped it, and it grew db.sqlite until the disk
filled; a full disk is a node's own failure, so every node retried the entry forever and
one request took the whole cluster down. Now a statement that takes its request's
writes past the bound fails, as the statement's own outcome, naming the limit. Growth
is counted in the bytes of the values of the rows the request inserts, less those it
deletes, an update counting new less old: the same on every node whatever its pages
(with page checksums or not, a file rewritten by a repair), so every node (and every
replay) fails it alike. The bound is the leader's, carried in the log entry. A disk that
really fills is still the node's own failure.
"""

import os
import subprocess

import pytest

from conftest import assert_exec_ok, deadline_seconds, mount_tmpfs, wait_until
from test_cluster import cluster_factory  # noqa: F401  (the fixture)
from test_diskfull import write_filler
from test_durability import _remove_db_files
from test_temp_limit import post

MiB = 1 << 20
LIMIT = 4 * MiB
ROWS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "


def blobs(n, size, table="t"):
    """One statement inserting n rows of `size` random bytes: few VM steps, n * size
    bytes of new rows."""
    return ROWS % n + "INSERT INTO %s(b) SELECT randomblob(%d) FROM c" % (table, size)


def is_growth_error(res):
    err = res.get("error", "")
    return "--max-write-growth" in err and str(LIMIT) in err and "every node" in err


def test_a_write_past_the_bound_fails_and_the_node_goes_on(server_factory):
    s = server_factory(extra_args=["--max-write-growth", str(LIMIT)])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"]))
    size = lambda: s.scalar("PRAGMA page_count") * s.scalar("PRAGMA page_size")  # noqa: E731
    before = size()

    # 8 MB in one statement: it fails, nothing of it is kept, the next statement runs.
    res = s.execute([blobs(8, MiB), "INSERT INTO t(b) VALUES(x'01')"])["results"]
    assert is_growth_error(res[0]), res
    assert "error" not in res[1], res
    assert s.rows("SELECT count(*) FROM t") == [[1]]
    assert size() - before < MiB

    # The bound is per request: two requests of 3 MB each both pass.
    assert_exec_ok(s.execute([blobs(3, MiB)]))
    assert_exec_ok(s.execute([blobs(3, MiB)]))
    assert s.rows("SELECT count(*) FROM t") == [[7]]

    # Per request, not per statement: two statements of 3 MB, the second fails; in a
    # transaction, nothing of the request is kept.
    res = s.execute([blobs(3, MiB), blobs(3, MiB)])["results"]
    assert "error" not in res[0] or "rolled back" in res[0]["error"], res
    assert is_growth_error(res[1]), res
    n = s.scalar("SELECT count(*) FROM t")
    assert n in (7, 10), n
    res = s.execute([blobs(2, MiB), blobs(3, MiB)], transaction="")["results"]
    assert any(is_growth_error(r) for r in res), res
    assert s.scalar("SELECT count(*) FROM t") == n

    # ANALYZE makes the writer reload its statistics (cairn's own statements, not
    # counted): the bound holds for the request's next statement.
    res = s.execute([blobs(3, MiB), "ANALYZE", blobs(2, MiB)])["results"]
    assert all("error" not in r or "rolled back" in r["error"] for r in res[:2]), res
    assert is_growth_error(res[2]), res

    # Growth is the bytes of the rows a request writes less those it deletes: a request
    # that deletes what it rewrites passes the 4 MiB bound with 6 MB of new rows.
    n = s.scalar("SELECT count(*) FROM t WHERE length(b) > 1")
    assert n >= 6, n
    assert_exec_ok(s.execute(["DELETE FROM t WHERE length(b) > 1", blobs(6, MiB)]))
    assert s.rows("SELECT count(*) FROM t WHERE length(b) = %d" % MiB) == [[6]]
    # An update counts what it adds: the same rows rewritten the same size pass.
    assert_exec_ok(s.execute(["UPDATE t SET b = randomblob(%d) WHERE length(b) = %d" % (MiB, MiB)]))

    # The node is not failing: writes and reads go on.
    assert_exec_ok(s.execute(["INSERT INTO t(b) VALUES(x'02')"]))
    assert s.scalar("SELECT count(*) FROM t") == 8


def test_a_large_request_under_a_bound_other_than_the_default(server_factory):
    """A request of 16 KiB or more is stored compressed in its log entry; under a bound
    other than the default (a version 4 entry) the frame began over the bound's header
    field, and every such write failed with "command's reserved header field at offset
    52 is not zero", on every node."""
    s = server_factory(extra_args=["--max-write-growth", str(LIMIT)])
    text = " ".join("word%d" % (i % 97) for i in range(6000))  # 50 kB, compresses well
    res = s.execute(["CREATE TABLE d(x)", ["INSERT INTO d VALUES(?)", text]])["results"]
    assert all("error" not in r for r in res), res
    assert s.rows("SELECT length(x) FROM d") == [[len(text)]]


def test_a_virtual_tables_flush_past_the_bound_does_not_stop_the_node(server_factory):
    """FTS5 writes the terms a statement left pending when the statement's savepoint is
    released, after its last step, in cairn's own RELEASE. A bound that stopped that
    flush failed the RELEASE, not a step, and was taken for the node's own failure: the
    node retried the entry for ever (and so would every node). What cairn's own
    statements write is not counted: each request is answered, its statements kept or
    failed for the bound, and the node goes on. The requests go from well within the
    bound to past it a page at a time, so that one lands between the statement's last
    step and its flush."""
    s = server_factory(extra_args=["--max-write-growth", str(MiB)])
    assert_exec_ok(s.execute(["CREATE VIRTUAL TABLE docs USING fts5(body)", "CREATE TABLE big(b)"]))
    # Distinct terms, under 16 KiB (a plain log entry): some pages of index to flush.
    text = " ".join("w%x" % (i * 2654435761 % (1 << 40)) for i in range(1200))
    assert len(text) < 15000
    page = s.scalar("PRAGMA page_size")
    for n in range(MiB - 60 * page, MiB + page, page):
        r = s.post("/db/execute", ["INSERT INTO big VALUES(zeroblob(%d))" % n,
                                   ["INSERT INTO docs(body) VALUES(?)", text]])
        assert r.status == 200, (n, r.status, r.body[:600])
        for r in r.json()["results"]:
            assert "error" not in r or "--max-write-growth" in r["error"], (n, r)
    assert_exec_ok(s.execute(["INSERT INTO big VALUES(1)"]))
    assert s.scalar("SELECT count(*) FROM docs WHERE docs MATCH 'w0'") >= 1


def test_max_write_growth_flag(cairnd_bin, tmp_path, server_factory):
    out = subprocess.run([str(cairnd_bin), "--help"], capture_output=True, text=True).stdout
    assert "--max-write-growth" in out
    r = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "d"), "--max-write-growth",
                        "-5"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--max-write-growth" in r.stderr, r
    # 0: no bound; 8 MB in one statement passes.
    s = server_factory(extra_args=["--max-write-growth", "0"])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)", blobs(8, MiB)]))
    assert s.rows("SELECT count(*) FROM t") == [[8]]


def test_a_full_disk_is_still_the_nodes_own_failure(tmp_path, server_factory):
    """Under the bound (the default, 1 GiB, far above this disk), a statement that
    fills the disk while it runs (its pages spill from the writer's 32 MiB cache into
    the WAL, and SQLite says SQLITE_FULL as it does at the bound) is not the write's
    outcome: the node answers that its disk is full, and once space is freed it applies
    the write."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, 192)  # the Raft log preallocates about 65 MiB
    s = None
    try:
        s = server_factory(data_dir=disk / "data")
        assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"]))
        filler = disk / "filler"
        assert write_filler(filler, leave_free=8 * MiB) > 0
        r = s.raw("POST", "/db/execute", [blobs(60, MiB)], timeout=deadline_seconds(60))
        body = r.json()
        # Taken for the bound, it would be a 200 with the write failed on this node
        # alone: the node would have dropped a write the others keep.
        assert r.status >= 500 and "disk full" in body.get("error", ""), (r.status, body)
        assert "--max-write-growth" not in body["error"], body
        assert s.running()
        os.unlink(filler)

        def write():  # the node applies the failed entry again once it can
            r = s.raw("POST", "/db/execute", ["INSERT INTO t(b) VALUES(x'01')"], timeout=5)
            return r.status == 200 and "error" not in r.json()["results"][0]

        wait_until(write, deadline_seconds(60), "a write to pass once space is freed",
                   interval=0.2)
        assert s.rows("SELECT count(*) FROM t WHERE length(b) = %d" % MiB) == [[60]]
    finally:
        if s is not None and s.running():
            s.proc.kill()
            s.proc.wait()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=60)


@pytest.mark.cluster
def test_a_write_past_the_leaders_bound_fails_on_every_node(cluster_factory):  # noqa: F811
    """Node 1, the leader, alone has --max-write-growth 4 MiB; the followers have the
    default. A write past it fails on every node (the bound travels in the entry), later
    writes go on, the files stay identical, also after a follower restarts and when
    the followers rebuild their databases from the log (grouped apply)."""
    c = cluster_factory(3, mode="join", start=False)
    c.nodes[0].extra_args = ["--max-write-growth", str(LIMIT)]
    leader = c.start()
    assert leader is c.nodes[0], "node 1 formed the cluster alone and should lead"
    f = c.followers(leader)
    res = post(leader, ["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"])
    assert all("error" not in r for r in res), res

    res = post(f[0], [blobs(8, MiB), "INSERT INTO t(b) VALUES(x'01')"])  # forwarded
    assert is_growth_error(res[0]), res
    assert "error" not in res[1], res
    res = post(leader, [blobs(3, MiB)])
    assert "error" not in res[0], res
    res = post(leader, [blobs(2, MiB), blobs(3, MiB)])
    assert is_growth_error(res[1]), res
    c.wait_converged(timeout=deadline_seconds(60))
    want = leader.local_rows("SELECT count(*), sum(length(b)) FROM t")
    for n in c.nodes:
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM t") == want, n.name
    c.assert_same_files()

    # A follower restarts; writes go on meanwhile, past the bound and within it.
    f[1].stop()
    res = post(leader, [blobs(6, MiB)])
    assert is_growth_error(res[0]), res
    res = post(leader, [blobs(1, MiB)])
    assert "error" not in res[0], res
    f[1].start()
    c.wait_converged(timeout=deadline_seconds(60))
    want = leader.local_rows("SELECT count(*), sum(length(b)) FROM t")
    for n in c.nodes:
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM t") == want, n.name
    c.assert_same_files()

    # The followers rebuild their databases from the log with their own (default)
    # bound: the entries say the leader's, and they agree again.
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
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM t") == want, n.name
    c.assert_same_files()


@pytest.mark.cluster
def test_the_bound_is_the_same_on_nodes_whose_pages_differ(cluster_factory):  # noqa: F811
    """Nodes may hold the same rows in other pages: one without page checksums (its
    pages keep 8 bytes more each), a file rewritten by cairn repair. A bound counted in
    pages appended made one INSERT of 240 rows of 4053 bytes fail on the two nodes with
    checksums and pass on the one without, and the replicas differed. Counted in the
    bytes of the rows, it is the same everywhere."""
    c = cluster_factory(3, extra_args=["--max-write-growth", str(MiB)])
    leader = c.leader()
    assert "error" not in post(leader, ["CREATE TABLE u(id INTEGER PRIMARY KEY, b BLOB)"])[0]
    plain = c.followers(leader)[0]
    plain.stop()
    _remove_db_files(plain)  # rebuilt from the log, without checksums
    plain.restart(extra_args=list(plain.extra_args) + ["--no-page-checksums"])
    c.wait_converged(timeout=deadline_seconds(60))
    assert plain.get_json("/status")["store"]["page_checksums"] is False
    leader = c.leader()
    for n, size in [(240, 4053), (200, 4053), (300, 4053)]:
        post(leader, [ROWS % n + "INSERT INTO u(b) SELECT zeroblob(%d) FROM c" % size])
    c.wait_converged(timeout=deadline_seconds(60))
    want = leader.local_rows("SELECT count(*), sum(length(b)) FROM u")
    assert want[0][0] == 440, want  # the 300-row insert passed the bound alone
    for n in c.nodes:
        assert n.local_rows("SELECT count(*), sum(length(b)) FROM u") == want, n.name
