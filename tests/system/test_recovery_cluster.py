"""The steps of docs/OPERATIONS.md for clusters, each run as written: a damaged Raft log
or database on a member repaired from a peer, a member that crashed with a damaged
database healing itself, a node that lost its data directory rejoining, and a cluster
lost entirely coming back from a backup."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

from clusterutil import Cluster
from conftest import assert_exec_ok, flip, mount_tmpfs, wait_until

pytestmark = pytest.mark.cluster


def run_cli(cairn_bin, *args):
    p = subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def write_rows(node, n, tag):
    for b in range(n):
        # Random text: large entries are stored compressed, and the log files must
        # stay large enough to damage in the middle of an entry.
        stmts = [["INSERT INTO t(v) VALUES(?)", "%s-%d-%d-%s" % (tag, b, i, os.urandom(100).hex())]
                 for i in range(100)]
        assert_exec_ok(node.execute(stmts, transaction=None))



def cluster_with_rows(make_cluster, batches):
    """A three-node cluster whose table t holds `batches` x 100 rows on every node:
    (cluster, leader, a follower)."""
    c = make_cluster(3)
    leader = c.leader()
    leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    write_rows(leader, batches, "a")
    c.wait_converged()
    return c, leader, c.followers(leader)[0]

def count(node):
    return node.scalar("SELECT count(*) FROM t", level="none")



def first_batch_offset(raft_dir):
    """A file of the log holding entries, and an offset inside its first batch's data."""
    raft = pathlib.Path(raft_dir)
    for p in sorted(raft.iterdir()):
        if (p.name.startswith("open-") or (p.name[0].isdigit() and "-" in p.name)) and \
                p.stat().st_size > 4096:
            return p, 200
    raise AssertionError("no segment with entries in %s" % raft)


@pytest.mark.smoke
def test_damaged_log_on_a_member_repaired_from_a_peer(make_cluster, cairn_bin):
    c, leader, victim = cluster_with_rows(make_cluster, 5)
    victim.stop()
    write_rows(leader, 3, "b")  # while it is down: the leader sends these later
    seg, off = first_batch_offset(victim.data_dir / "raft")
    flip(seg, off)
    rc, out, err = run_cli(cairn_bin, "check", victim.data_dir)
    assert rc == 1 and seg.name in out, (out, err)
    victim.start(wait=False)
    assert victim.wait_exit(30) == 1
    assert seg.name in victim.stderr_tail() and "--from-peer" in victim.stderr_tail()
    # docs/OPERATIONS.md, "After disk corruption": repair from a healthy node, restart.
    rc, out, err = run_cli(cairn_bin, "repair", "--from-peer", leader.url, "--json",
                           victim.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert report["moved_log"] and report["moved_database"], report
    assert any(p.name.endswith("-raft") for p in (victim.data_dir / "corrupt").iterdir())
    victim.start()
    write_rows(leader, 1, "c")
    c.wait_converged()
    assert count(victim) == count(leader) == 900
    c.assert_same_rows("t")


@pytest.mark.smoke
def test_member_that_crashed_with_a_damaged_database_heals_itself(make_cluster):
    c, leader, victim = cluster_with_rows(make_cluster, 6)
    # A snapshot checkpoints the WAL into db.sqlite, so that the damage hits pages.
    st = victim.raw("POST", "/admin/snapshot")
    assert st.status == 200, st.text
    victim.kill()
    size = os.path.getsize(victim.db_path)
    assert size > 8 * 4096, size
    with open(victim.db_path, "r+b") as f:
        for off in range(2 * 4096, size, 3 * 4096):
            f.seek(off)
            f.write(b"\xde\xad\xbe\xef" * 4)
    victim.start()
    c.wait_converged()
    assert count(victim) == 600
    rec = victim.status()["last_recovery"]
    assert rec["database"].startswith("damaged"), rec
    c.assert_same_rows("t")


def test_node_that_lost_its_data_directory_rejoins(make_cluster):
    c, leader, victim = cluster_with_rows(make_cluster, 4)
    victim.kill()
    import shutil
    shutil.rmtree(victim.data_dir)
    # "After losing a node": start it again, empty, with --join.
    victim.cluster_args = ["--join", leader.url]
    victim.start()
    write_rows(leader, 1, "b")
    c.wait_converged()
    assert count(victim) == 500
    c.assert_same_rows("t")


def test_whole_cluster_lost_comes_back_from_a_backup(make_cluster, cairn_bin, tmp_path,
                                                     server_factory):
    c = make_cluster(3)
    leader = c.leader()
    leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    write_rows(leader, 4, "a")
    body = leader.execute(["BACKUP DATABASE FULL"])
    backup_id = body["results"][0]["values"][0][1]
    c.stop_all()
    # The repository, copied off the machine as docs/OPERATIONS.md says to.
    repo = tmp_path / "offsite"
    shutil.copytree(str(leader.backup_dir), str(repo))
    # "After losing the whole cluster": restore the backup to a file, load it into a new
    # single node, let new nodes join it.
    out = tmp_path / "restored.db"
    rc, _, err = run_cli(cairn_bin, "restore", "--repo", repo, backup_id, "--out", out)
    assert rc == 0, err
    first = server_factory()
    with open(out, "rb") as f:
        st = first.raw("POST", "/db/load", body=f.read())
    assert st.status == 200, st.text
    assert first.scalar("SELECT count(*) FROM t") == 400
    second = server_factory(node_id=2, extra_args=["--join", first.url])
    wait_until(lambda: second.scalar("SELECT count(*) FROM t", level="none") == 400, 30,
               "the new node to hold the loaded rows")


def test_follower_whose_disk_fills_waits_and_catches_up_once_space_is_freed(tmp_path, cairnd_bin):
    """A follower's database cannot take an entry (its disk is full): the cluster goes on
    without it, the follower stays a follower (libraft would turn it UNAVAILABLE for good
    if the failed apply reached it), and once space is freed it applies what it missed
    by itself, without a restart, and ends identical to the others."""
    c = Cluster(tmp_path, n=3, name="df")
    victim = c.nodes[2]
    mount_tmpfs(victim.data_dir, 96)
    filler = victim.data_dir / "filler"
    try:
        c.start()
        leader = c.leader()
        if leader is victim:
            victim.stop()  # hands leadership over; the victim comes back a follower
            victim.start()
            leader = c.leader(among=[n for n in c.nodes if n is not victim])
        leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
        c.wait_converged()
        applied_before = victim.applied_index()
        # Take the follower's space, all but ~2 MiB (its next Raft segment is already
        # allocated, so its log still takes entries; its database cannot grow).
        chunk = b"\0" * (1 << 20)
        with open(filler, "wb") as f:
            try:
                while os.statvfs(str(victim.data_dir)).f_bavail * os.statvfs(
                        str(victim.data_dir)).f_frsize > (2 << 20):
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass
        # The cluster goes on: every write is acknowledged by the other two (8 MB of
        # rows, more than the follower has left).
        for i in range(40):
            assert_exec_ok(leader.execute([["INSERT INTO t(v) VALUES(?)", "%d-%s" % (i, "z" * 200000)]]))
        wait_until(lambda: "waits and tries again" in victim.stderr_text(), 30,
                   "the follower to say it waits for space")
        assert victim.applied_index() < leader.applied_index()
        # Space comes back; the follower applies what it missed by itself.
        filler.unlink()
        write_rows(leader, 1, "after")
        c.wait_converged(timeout=60)
        assert victim.raft()["state"] == "follower", victim.raft()
        assert victim.applied_index() > applied_before
        assert "the database can be written again" in victim.stderr_text()
        c.assert_same_rows("t")
        assert count(victim) == 140
    finally:
        problems = c.teardown()
        subprocess.run(["umount", str(victim.data_dir)], capture_output=True, text=True, timeout=60)
    assert not problems, problems


def test_leader_whose_disk_fills_up_says_so_and_the_cluster_goes_on(tmp_path, cairnd_bin):
    """The leader's disk fills up completely. A leader whose database cannot commit
    refuses every write (507), so it hands leadership over to a voter with room; once
    it cannot persist its Raft state either, libraft takes it out of the cluster, and
    the node says so in its log and in /status (/readyz stops answering 200). Either
    way the other two elect a leader and take writes again: without the hand-over the
    cluster stayed stuck behind the full leader."""
    c = Cluster(tmp_path, n=3, mode="join", name="dl")
    victim = c.nodes[0]  # started alone first: the leader
    mount_tmpfs(victim.data_dir, 96)
    try:
        c.start()
        assert c.leader() is victim, "the node started first should lead"
        victim.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
        c.wait_converged()
        with open(victim.data_dir / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        other = c.nodes[1]
        acked = []

        def out_and_writes_go_on():
            r = other.post("/db/execute", [["INSERT INTO t(v) VALUES(?)", "%d-%s" % (len(acked), "z" * 100000)]])
            if r.status == 200 and b'"error"' not in r.body:
                acked.append(r.json()["results"][0]["last_insert_id"])
            return victim.state() == "unavailable" and other.leader_id() not in (0, victim.id) \
                and r.status == 200

        wait_until(out_and_writes_go_on, 60, "the full leader to be taken out and the others "
                   "to take writes", interval=0.05)
        wait_until(lambda: "Raft stopped on this node" in victim.stderr_text(), 10,
                   "the node to say that Raft stopped")
        assert victim.raw("GET", "/readyz").status != 200
        assert_exec_ok(other.execute([["INSERT INTO t(v) VALUES(?)", "after"]]))
        survivors = [n for n in c.nodes if n is not victim]
        c.wait_converged(nodes=survivors)
        rows = c.assert_same_rows("t", nodes=survivors)
        ids = {row[0] for row in rows}
        assert not [i for i in acked if i not in ids]
    finally:
        problems = c.teardown()
        subprocess.run(["umount", str(victim.data_dir)], capture_output=True, text=True, timeout=60)
    assert not problems, problems
