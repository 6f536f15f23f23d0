"""A live RESTORE in two steps: every node prepares the restored copy off its loop, then
one small log entry swaps it in on every node at the same index (src/liverestore.h).

What is checked on real cairnd processes:
  * the PREPARE and swap entries: every node's log says it prepared the backup off the
    loop, /status shows the state, and the restored rows are the backup's on every node;
  * a follower that is stopped (SIGSTOP) while the cluster restores is slow, not lost:
    it holds the swap entry and the writes after it until its copy is ready, then
    applies them; one that is down comes back and catches up;
  * the leader killed (kill -9) in the middle of a restore under a write load: whatever
    the restore's outcome, every node ends with the same rows and the same pages, and
    every write acknowledged after the restore answered is on every node;
  * a backup damaged on the node that restores it is refused before anything is
    swapped anywhere.
"""
import os
import shutil
import signal
import threading
import time

import pytest

import backuputil
from clusterutil import ClusterWriters, assert_acked_present, assert_applied_means_present
from conftest import deadline_seconds, wait_until
from test_cluster import cluster_factory, ok_results, post  # noqa: F401 - fixture

ROWS = 4000
PAD = 2000  # ~8 MiB of rows: a restore that takes a moment to prepare


def fill(leader):
    ok_results(post(leader, "/db/execute", [
        "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT, pad BLOB)",
        "CREATE TABLE t (client INTEGER, seq INTEGER, pad BLOB, UNIQUE(client, seq))",
    ]), "CREATE")
    for start in range(0, ROWS, 1000):
        ok_results(post(leader, "/db/execute?transaction", [
            ["INSERT INTO b(v, pad) VALUES(?, randomblob(?))", "row %d" % i, PAD]
            for i in range(start, start + 1000)]), "INSERT")


def backup(leader):
    row = backuputil.sql_row(leader, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS)
    return row["backup_id"]


def b_summary(node):
    return node.local_rows("SELECT count(*), sum(length(pad)), max(v) FROM b")


def log_text(node):
    text = ""
    for p in (node.stdout_path, node.stderr_path):
        try:
            with open(p, "r", errors="replace") as f:
                text += f.read()
        except OSError:
            pass
    return text


def restore_async(node, bid):
    """RESTORE DATABASE on node in a thread; returns (thread, box) where box gets the
    outcome: ("ok", doc) or ("error", what)."""
    box = {}

    def run():
        try:
            box["r"] = ("ok", node.raw("POST", "/db/execute",
                                       ["RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid)],
                                       timeout=120))
        except Exception as e:  # noqa: BLE001 - the outcome is what is tested
            box["r"] = ("error", repr(e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def same_rows_at_one_index(c, tables, tries=5):
    """Every node's rows of each table are the same, read while every node said the same
    applied index before and after the reads (an entry that lands in between, such as a
    restarted node announcing its address, means reading again). A comparison of rows
    read at different indexes could pass or fail by chance."""
    for _ in range(tries):
        before = {n.name: n.applied_index() for n in c.nodes}
        for t in tables:
            table, order = t if isinstance(t, tuple) else (t, "rowid")
            rows = c.assert_same_rows(table, nodes=c.nodes, order=order)
            assert rows, "table %s is empty on every node: nothing compared" % table
        after = {n.name: n.applied_index() for n in c.nodes}
        if before == after and len(set(before.values())) == 1 and None not in before.values():
            return before
        c.wait_converged()
    raise AssertionError("the nodes never held one applied index through the comparison: "
                         "%r then %r" % (before, after))


def test_restore_with_a_follower_down_one_slow_and_the_leader_killed_mid_way(
        cluster_factory, tmp_path):
    """Five nodes, so that a quorum remains through it all: one follower is down for the
    whole restore, one is frozen (SIGSTOP) while it starts, and the leader is killed
    (kill -9) once it prepares, under a write load through the others. The restore is
    then asked of the new leader. Every node ends with the same rows and pages, and
    every write acknowledged after the restore answered is on every node."""
    c = cluster_factory(5)
    leader = c.leader()
    down, slow, f1, f2 = c.followers(leader)
    fill(leader)
    bid = backup(leader)
    expected = b_summary(leader)
    ok_results(post(leader, "/db/execute", ["DELETE FROM b WHERE id % 2 = 0",
                                            "INSERT INTO b(v) VALUES('after the backup')"]),
               "changes")
    c.wait_converged()
    # Every node holds the backup (the leader that took it is killed below).
    src = os.path.join(leader.backup_dir, bid + ".cbk")
    for n in c.nodes:
        if n is not leader:
            os.makedirs(n.backup_dir, exist_ok=True)
            shutil.copyfile(src, os.path.join(n.backup_dir, bid + ".cbk"))

    assert down.stop() == 0
    slow.freeze()
    writers = ClusterWriters([leader, f1, f2], table="t", clients=8, pad=64,
                             give_up=60, raft_index=True).start()
    writers.wait_more(100)
    t, box = restore_async(leader, bid)
    wait_until(lambda: "preparing backup %s" % bid in log_text(leader) or not t.is_alive(),
               deadline_seconds(30), "the leader to start preparing")
    leader.kill()  # between the two entries, or during the swap
    t.join(deadline_seconds(60))
    assert not t.is_alive(), "RESTORE did not answer"
    slow.thaw()
    new = c.leader(among=[slow, f1, f2])
    writers.wait_more(100)

    t2, box2 = restore_async(new, bid)
    t2.join(deadline_seconds(120))
    assert not t2.is_alive(), "RESTORE did not answer"
    kind, r = box2["r"]
    assert kind == "ok" and r.status == 200 and "error" not in r.text, (kind, r)
    t_restored = time.monotonic()
    writers.wait_more(100)
    # The new leader prepared its copy off its loop before the swap.
    assert "backup %s prepared in" % bid in log_text(new), new.name
    for n in (f1, f2, slow):
        st = n.status()
        assert "live_restore" in st["store"], st["store"]

    leader.start()
    down.start()
    writers.wait_more(50)
    acked = writers.stop()
    idx = c.wait_converged(timeout=90)
    after = {k: None for k, v in acked.items() if v > t_restored}
    assert after
    assert len(c.running()) == len(c.nodes) == 5, [n.name for n in c.running()]
    for n in c.nodes:
        # What each node says it applied is in its database: every write acknowledged
        # after the restore (they all are at or below the converged index).
        applied, covered = assert_applied_means_present(n, "t", writers, "after the restore",
                                                        only=after)
        assert applied >= idx and covered == len(after), (n.name, applied, idx, covered,
                                                          len(after))
        assert_acked_present(n, "t", after, "after the restore")
        got = n.local_rows("SELECT count(*), sum(length(pad)), max(v) FROM b")
        assert got == expected, (n.name, got, expected)
    same_rows_at_one_index(c, ["b", ("t", "client, seq")])
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


@pytest.mark.smoke
def test_a_follower_holds_the_swap_while_its_copy_is_prepared(cluster_factory, tmp_path):
    """The follower's loop is not blocked while it prepares: it goes on acknowledging
    the leader's appends (writes commit with it as the only other voter up)."""
    c = cluster_factory(3)
    leader = c.leader()
    f, other = c.followers(leader)
    fill(leader)
    bid = backup(leader)
    c.wait_converged()
    assert other.stop() == 0  # f is the quorum: every commit needs its acknowledgement
    writers = ClusterWriters([leader], table="t", clients=4, pad=64).start()
    writers.wait_more(50)
    # While the follower holds entries, it says it has not applied them (its database
    # does not hold them) and is not ready; samples of its /status throughout.
    samples, sampling = [], threading.Event()

    def sample():
        while not sampling.is_set():
            st = f.status(timeout=2.0) or {}
            held = ((st.get("store") or {}).get("live_restore") or {}).get("held_index")
            if held:
                samples.append((held, st["raft"]["applied_index"], st["raft"]["ready"]))
            time.sleep(0.01)  # a sampling rate, not a synchronisation
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t, box = restore_async(leader, bid)
    t.join(deadline_seconds(120))
    kind, r = box["r"]
    assert kind == "ok" and r.status == 200 and "error" not in r.text, (kind, r)
    t_restored = time.monotonic()
    writers.wait_more(100)
    acked = writers.stop()
    wait_until(lambda: "backup %s prepared in" % bid in log_text(f), deadline_seconds(30),
               "the follower to prepare its copy")
    sampling.set()
    sampler.join(10)
    for held, applied, ready in samples:
        assert applied < held and not ready, (held, applied, ready)
    c.wait_converged(nodes=[leader, f])
    after = {k: v for k, v in acked.items() if v > t_restored}
    assert after
    for n in (leader, f):
        assert_acked_present(n, "t", {k: None for k in after}, "after the restore")
    other.start()
    c.wait_converged(timeout=60)
    c.assert_same_rows("b")
    c.assert_same_rows("t", order="client, seq")


def test_a_damaged_backup_is_refused_before_any_node_swaps(cluster_factory, tmp_path):
    c = cluster_factory(3)
    leader = c.leader()
    fill(leader)
    bid = backup(leader)
    ok_results(post(leader, "/db/execute", ["INSERT INTO b(v) VALUES('after the backup')"]),
               "INSERT")
    c.wait_converged()
    before = [b_summary(n) for n in c.nodes]
    path = os.path.join(leader.backup_dir, bid + ".cbk")
    with open(path, "r+b") as fh:  # a byte in the middle of the file: a data block
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    r = leader.raw("POST", "/db/execute",
                   ["RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid)], timeout=120)
    assert r.status != 200 or "error" in r.text, r.text
    assert bid in r.text and "nothing was changed" in r.text, r.text
    ok_results(post(leader, "/db/execute", ["INSERT INTO b(v) VALUES('after the refusal')"]),
               "INSERT")
    c.wait_converged()
    for n, was in zip(c.nodes, before):
        count, size, _ = b_summary(n)[0]
        assert count == was[0][0] + 1, (n.name, count, was)
    c.assert_same_rows("b")
    assert not os.path.exists(str(leader.db_path) + ".prepared")


def damage_a_copy_on(leader, f, bid):
    """Put a copy of leader's backup bid in follower f's repository, a data block
    damaged, the trailer (and so the digest it states) intact."""
    src = os.path.join(leader.backup_dir, bid + ".cbk")
    os.makedirs(f.backup_dir, exist_ok=True)
    dst = os.path.join(f.backup_dir, bid + ".cbk")
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        fh.seek(os.path.getsize(dst) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


def restore_with_a_damaged_copy_on_a_follower(cluster_factory, before=None):
    """A 3-node cluster whose leader restores a backup of its own that a follower f also
    holds a damaged copy of (damage_a_copy_on); before(f), if given, runs just before.
    Rows are written before and after the restore. Returns (cluster, f, bid, rows):
    rows are the leader's (and the other follower's) once both applied everything."""
    c = cluster_factory(3)
    leader = c.leader()
    f, other = c.followers(leader)
    fill(leader)
    bid = backup(leader)
    damage_a_copy_on(leader, f, bid)
    if before is not None:
        before(f)
    ok_results(post(leader, "/db/execute", ["INSERT INTO b(v) VALUES('after the backup')"]),
               "INSERT")
    c.wait_converged()
    r = leader.raw("POST", "/db/execute",
                   ["RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid)], timeout=120)
    assert r.status == 200 and "error" not in r.text, r.text
    ok_results(post(leader, "/db/execute", ["INSERT INTO b(v) VALUES('after the restore')"]),
               "INSERT")
    c.wait_converged(nodes=[leader, other])
    rows = leader.local_rows("SELECT id, v FROM b ORDER BY id")
    assert ["after the backup"] not in [[v] for _, v in rows]
    return c, f, bid, rows


def caught_up(f, rows):
    wait_until(lambda: f.raw("GET", "/readyz").status == 200 and
               f.local_rows("SELECT id, v FROM b ORDER BY id") == rows,
               deadline_seconds(60), "the follower to restore a peer's copy and catch up")


def test_a_follower_whose_copy_is_damaged_never_goes_on_with_other_rows(cluster_factory):
    """The backup is sound on the leader, which prepares it and proposes the swap; a
    follower's own copy of it (same file name, same trailer) has a damaged block. That
    follower restores a peer's copy instead. Before, it answered the swap entry with an
    error, kept the rows of before the restore and went on applying the log on top of
    them, ready."""
    c, f, bid, rows = restore_with_a_damaged_copy_on_a_follower(cluster_factory)
    caught_up(f, rows)
    log = log_text(f)
    assert "this node's copy cannot be restored" in log and "checksum mismatch" in log, log[-3000:]
    assert "backup %s restored from a peer's copy" % bid in log, log[-3000:]
    assert not os.path.exists(str(f.db_path) + ".fetched")
    c.wait_converged()
    c.assert_same_rows("b")


def test_a_follower_that_cannot_restore_stops_and_says_why_then_catches_up(cluster_factory):
    """Its own copy damaged and no peer's copy to be had (its scratch place for one is
    taken by a file): the follower applies nothing past the swap entry, is not ready and
    says why, instead of going on with the rows of before the restore; once a peer's
    copy can be had, it restores it and catches up."""
    def block(f):
        with open(str(f.db_path) + ".fetched", "w") as fh:
            fh.write("not a directory")
    c, f, bid, rows = restore_with_a_damaged_copy_on_a_follower(cluster_factory, block)
    wait_until(lambda: "which this node cannot restore" in log_text(f), deadline_seconds(30),
               "the follower to say it cannot restore the backup")
    r = f.raw("GET", "/readyz")
    assert r.status == 503 and "cannot restore" in r.text, (r.status, r.text)
    # It serves nothing meanwhile, saying why.
    r = f.raw("GET", "/db/query?level=none&q=SELECT+count(*)+FROM+b")
    assert r.status == 503 and "cannot restore" in r.text and bid in r.text, (r.status, r.text)
    os.unlink(str(f.db_path) + ".fetched")
    caught_up(f, rows)
    c.wait_converged()
    c.assert_same_rows("b")
