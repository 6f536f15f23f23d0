"""Losing every node (issue 18, second slice): what the continuous archive brings back.

Writers log the time of every acknowledged write; at a random moment every node is
killed with SIGKILL and every data directory deleted; the repository alone is
restored (`cairn restore --repo DIR latest --out FILE`, and `cairnd --restore-from
DIR`, the steps of docs/OPERATIONS.md "The whole cluster is gone"). Only writes
acknowledged within the last archive interval (plus MARGIN) before the kill may be
missing; with --archive-sync, none.

MARGIN: a write acknowledged at time a is in the leader's queue at a; the archiver's
next turn begins at most one interval (its wait) plus one turn (the wait starts when
the previous turn ends) later, and its upload to a local directory takes milliseconds
on an idle machine, up to a few hundred on two shared CPUs under 16 writers and three
nodes. 0.5 s covers both turns with room. Waiting is always a poll with a deadline.
"""
import json
import random
import shutil
import sqlite3
import subprocess
import time

import pytest

from backuputil import DirRepo, repo, repo_kind, repo_kinds  # noqa: F401 (fixtures)
from clusterutil import ClusterWriters
from conftest import wait_until
from s3util import s3, s3env  # noqa: F401 (fixtures)
from test_cluster import cluster_factory  # noqa: F401 (fixture)

INTERVAL_S = 0.5
MARGIN_S = 0.5
TABLE = "CREATE TABLE t (client INTEGER, seq INTEGER, pad BLOB, UNIQUE(client, seq))"


def status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


def wait_archiving(node, timeout=30):
    return wait_until(lambda: status(node)["archive"]["timeline"] or None, timeout,
                      "the archiver to establish its timeline")


def file_keys(path):
    db = sqlite3.connect(str(path))
    try:
        return set(db.execute("SELECT client, seq FROM t"))
    finally:
        db.close()


def node_keys(node):
    body = node.query("SELECT client, seq FROM t", level="strong")
    return set(tuple(v) for v in body["results"][0].get("values", []))


def missing_report(acked, present, t_kill):
    """The acknowledged writes absent from `present`, as (seconds before the kill)."""
    return sorted(t_kill - t for k, t in acked.items() if k not in present)


def run_total_loss(c, writers_nodes, seed, tmp_path, cairn_bin):
    rng = random.Random(seed)
    leader = c.leader()
    wait_archiving(leader)
    leader.execute([TABLE])
    w = ClusterWriters(writers_nodes, clients=16, timeout=3.0).start()
    try:
        w.wait_more(50, timeout=60)
        # A random moment: somewhere in the next 0.5-2.5 s of load.
        target = time.monotonic() + rng.uniform(0.5, 2.5)
        wait_until(lambda: time.monotonic() >= target, 10, "the moment of the kill",
                   interval=0.01)
        t_kill = time.monotonic()
        for n in c.nodes:
            n.kill()
    finally:
        w.stopping.set()
    acked = w.stop()
    for n in c.nodes:
        shutil.rmtree(n.data_dir)
    out = tmp_path / ("latest-%d.db" % seed)
    r = subprocess.run([str(cairn_bin), "restore"] + c.repo.cli_args() +
                       ["latest", "--out", str(out), "--force"], capture_output=True,
                       text=True, timeout=120, env=c.repo.env())
    assert r.returncode == 0, (r.stdout, r.stderr)
    return acked, t_kill, out, r.stdout


@repo_kinds()
@pytest.mark.parametrize("seed", [1, 2])
def test_total_loss_loses_at_most_the_last_interval(cluster_factory, repo, tmp_path, cairn_bin,
                                                    seed):
    """The three nodes archive into one repository (a shared directory, or one S3
    prefix), without --archive-sync: what is lost is at most the last interval."""
    c = cluster_factory(3, extra_args=repo.server_args() + [
        "--archive", "--archive-interval", "%dms" % (INTERVAL_S * 1000)])
    c.repo = repo
    acked, t_kill, out, text = run_total_loss(c, c.nodes, seed, tmp_path, cairn_bin)
    present = file_keys(out)
    missing = missing_report(acked, present, t_kill)
    print("seed %d: %d acknowledged, %d missing (%.3f s before the kill at most)"
          % (seed, len(acked), len(missing), max(missing) if missing else 0))
    assert len(acked) > 50, len(acked)
    late = [m for m in missing if m > INTERVAL_S + MARGIN_S]
    assert not late, ("%d acknowledged writes missing, %d acknowledged more than %.1f s "
                      "before the kill (oldest %.2f s before); %s"
                      % (len(missing), len(late), INTERVAL_S + MARGIN_S, max(late), text))
    # Nothing is invented: a client's rows go at most one past its last acknowledged
    # write (the one in flight at the kill).
    last = {}
    for client, seq in acked:
        last[client] = max(last.get(client, -1), seq)
    extra = [(cl, sq) for cl, sq in present if sq > last.get(cl, -1) + 1]
    assert not extra, extra[:5]


@repo_kinds()
def test_total_loss_with_archive_sync_loses_nothing(cluster_factory, repo, tmp_path, cairn_bin):
    """--archive-sync: every acknowledged write is in the repository (a shared
    directory, or one S3 prefix for the three nodes); writes sent to followers are
    forwarded to the leader, which answers once archived."""
    c = cluster_factory(3, extra_args=repo.server_args() + ["--archive-sync",
                                                            "--archive-interval", "10s"])
    c.repo = repo
    acked, t_kill, out, text = run_total_loss(c, c.nodes, 3, tmp_path, cairn_bin)
    missing = missing_report(acked, file_keys(out), t_kill)
    print("--archive-sync: %d acknowledged, %d missing" % (len(acked), len(missing)))
    assert len(acked) > 50, len(acked)
    assert not missing, ("%d acknowledged writes missing with --archive-sync (latest %.3f s "
                         "before the kill); %s" % (len(missing), min(missing), text))


def test_restore_from_an_archive_after_kill_and_lost_data_dir(server_factory, tmp_path,
                                                             cairn_bin):
    """A lone node archiving to a directory under writes; kill -9; its data directory
    deleted; a new node with --restore-from on the repository starts with every write
    acknowledged more than one interval (plus MARGIN) before the kill, through the log:
    it serves, takes writes, and its applied index is its own log's. REPO#N and
    REPO#TIME restore the archive's state as of an index or a time."""
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=["--backup-dir", repo.path, "--archive",
                                   "--archive-interval", "%dms" % (INTERVAL_S * 1000)])
    wait_archiving(s)
    s.execute([TABLE])
    table_index = status(s)["store"]["applied_index"]
    table_ms = int(time.time() * 1000)  # after the table's entry, before any row's
    # A time target takes every entry stamped in its millisecond: no row may be.
    wait_until(lambda: int(time.time() * 1000) > table_ms, 5,
               "the clock to pass the millisecond of the time target", interval=0)
    w = ClusterWriters([s], clients=16, timeout=3.0).start()
    try:
        w.wait_more(200, timeout=60)
        # A few intervals of load: several segments uploaded, the last writes not.
        target = time.monotonic() + 4 * INTERVAL_S
        wait_until(lambda: time.monotonic() >= target, 10, "the moment of the kill",
                   interval=0.01)
        assert status(s)["archive"]["segments_uploaded"] >= 2, status(s)["archive"]
        t_kill = time.monotonic()
        s.kill()
    finally:
        w.stopping.set()
    acked = w.stop()
    shutil.rmtree(s.data_dir)

    n = server_factory(extra_args=["--backup-dir", tmp_path / "new-backups",
                                   "--restore-from", repo.path])
    present = node_keys(n)
    missing = missing_report(acked, present, t_kill)
    late = [m for m in missing if m > INTERVAL_S + MARGIN_S]
    assert not late, (len(missing), late[:5])
    assert len(present) >= len(acked) - len(missing), (len(present), len(acked))
    log = n.stderr_text()
    assert "of archive timeline" in log and "archived entries replayed" in log, log
    # The restore went through the log: the node's index is its own, and it writes.
    st = status(n)
    assert st["store"]["applied_index"] < 100, st["store"]
    body = n.execute(["INSERT INTO t(client, seq) VALUES(99, 1)"])
    assert "error" not in body["results"][0], body
    assert (99, 1) in node_keys(n)

    # REPO#N: the archive's state as of index N (here the table alone, just created).
    m = server_factory(extra_args=["--backup-dir", tmp_path / "third-backups",
                                   "--restore-from", "%s#%d" % (repo.path, table_index)])
    assert node_keys(m) == set()
    assert "as of index %d " % table_index in m.stderr_text(), m.stderr_text()
    # REPO#TIME: the same state, named by a time (UTC, ISO-8601).
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(table_ms // 1000)) + \
        ".%03dZ" % (table_ms % 1000)
    o = server_factory(extra_args=["--backup-dir", tmp_path / "fourth-backups",
                                   "--restore-from", "%s#%s" % (repo.path, when)])
    assert node_keys(o) == set()
    assert "as of index %d " % table_index in o.stderr_text(), o.stderr_text()


@pytest.mark.smoke
def test_archive_sync_waits_for_the_upload_and_says_applied_when_it_cannot(server_factory,
                                                                           tmp_path):
    """--archive-sync: a write is answered once its segment is in the repository (no
    interval: the archiver closes the segment when a write waits). With the repository
    gone, the answer comes after --archive-sync-timeout: 504, saying the write was
    applied and at which index, not archived yet. Once the repository is back, the
    archive catches up with it."""
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=["--backup-dir", repo.path, "--archive-sync",
                                   "--archive-interval", "1h", "--archive-sync-timeout", "1s"])
    wait_archiving(s)
    assert status(s)["archive"]["sync"] is True
    s.execute([TABLE])
    for i in range(5):
        body = s.execute([["INSERT INTO t(client, seq) VALUES(?, ?)", 0, i]])
        assert "error" not in body["results"][0], body
        # Answered: its entry is in the archive already, with a 1 h interval.
        idx = status(s)["store"]["applied_index"]
        assert status(s)["archive"]["head_index"] >= idx, status(s)["archive"]

    aside = tmp_path / "repo-aside"
    repo.path.rename(aside)
    repo.path.write_text("not a directory")
    t0 = time.monotonic()
    r = s.raw("POST", "/db/execute", json.dumps([["INSERT INTO t(client, seq) VALUES(1, 1)"]]),
              timeout=30)
    took = time.monotonic() - t0
    assert r.status == 504, (r.status, r.body)
    err = r.json()["error"]
    assert "was applied" in err and "not yet in the archive" in err, err
    assert "do not send it again" in err, err
    assert 0.9 <= took < 10, took
    assert (1, 1) in node_keys(s)  # applied, as the answer says

    repo.path.unlink()
    aside.rename(repo.path)
    body = s.execute([["INSERT INTO t(client, seq) VALUES(2, 2)"]])
    assert "error" not in body["results"][0], body
    a = status(s)["archive"]
    assert a["head_index"] >= status(s)["store"]["applied_index"], a


@pytest.mark.smoke
def test_a_restored_node_archiving_into_the_same_repository_leaves_the_old_timeline(
        server_factory, tmp_path, cairn_bin):
    """The archive's head is another history's when a node restored from the repository
    archives into it again (its log numbers entries from 1): never continued. The
    restored node starts a new timeline on a fresh full backup, and the old timeline
    still verifies and restores to its head exactly."""
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=["--backup-dir", repo.path, "--archive",
                                   "--archive-interval", "50ms"])
    tl = wait_archiving(s)
    s.execute([TABLE])
    for i in range(30):
        s.execute([["INSERT INTO t(client, seq) VALUES(?, ?)", 0, i]])
    head = status(s)["store"]["applied_index"]
    wait_until(lambda: status(s)["archive"]["head_index"] >= head, 20, "the upload")
    s.kill()
    shutil.rmtree(s.data_dir)

    n = server_factory(extra_args=["--backup-dir", repo.path, "--archive",
                                   "--archive-interval", "50ms", "--restore-from", repo.path])
    assert len(node_keys(n)) == 30
    new_tl = wait_archiving(n)
    assert new_tl != tl
    assert "is not an entry of this node's log" in n.stderr_text(), n.stderr_text()
    n.execute([["INSERT INTO t(client, seq) VALUES(1, 1)"]])
    idx = status(n)["store"]["applied_index"]
    wait_until(lambda: status(n)["archive"]["head_index"] >= idx, 20, "the new upload")

    r = subprocess.run([str(cairn_bin), "archive", "verify", "--repo", str(repo.path), "--json"],
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"], (r.stdout, r.stderr)
    heads = {t["timeline"]: t["head_index"] for t in doc["timelines"]}
    assert heads[tl] == head and new_tl in heads, heads
    out = tmp_path / "old.db"
    r = subprocess.run([str(cairn_bin), "restore", "--repo", str(repo.path), "--to-index",
                        str(head), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert file_keys(out) == {(0, i) for i in range(30)}
