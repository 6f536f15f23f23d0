"""The continuous archive and point-in-time restore (issue 18, first slice): cairnd
--archive uploads every committed entry as hash-chained segments; `cairn archive
list|show|verify` reads them; `cairn restore --to-index|--to-time|latest` restores a
base backup and replays the archived entries with cairn's own apply.

Each restore is compared with the rows the node served right after the write at that
index (RETURNING random() and datetime('now') included: apply is deterministic). Waiting
is always a poll with a deadline.
"""
import json
import random
import sqlite3
import subprocess
import time

import pytest

from backuputil import repo, repo_kind, repo_kinds  # noqa: F401 (fixtures)
from conftest import wait_until
from s3util import s3, s3env  # noqa: F401 (fixtures)
from test_cluster import cluster_factory  # noqa: F401 (fixture)

ARCHIVE_ARGS = ["--archive", "--archive-interval", "100ms"]
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, r INTEGER, ts TEXT)"


def status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


def rows_of(node):
    body = node.query("SELECT id, v, r, ts FROM t ORDER BY id", level="strong")
    return [tuple(v) for v in body["results"][0].get("values", [])]


def file_rows(path):
    db = sqlite3.connect(str(path))
    try:
        return [tuple(v) for v in db.execute("SELECT id, v, r, ts FROM t ORDER BY id")]
    finally:
        db.close()


def write(node, rng, i):
    """One write of a mixed workload: inserts with random() and the time, updates and
    deletes."""
    k = rng.random()
    if k < 0.6 or i < 3:
        sql = "INSERT INTO t(v, r, ts) VALUES(%d, random(), strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')) RETURNING r" % i
        body = node.request([sql])
    elif k < 0.8:
        body = node.execute(["UPDATE t SET v = v + 100, r = random() WHERE id = (SELECT max(id) FROM t)"])
    else:
        body = node.execute(["DELETE FROM t WHERE id = (SELECT min(id) FROM t)"])
    assert "error" not in body["results"][0], body


def workload(node, n, rng, history, pause=0.005):
    """n writes; after each, (applied index, time after the answer, rows) into history."""
    for i in range(n):
        write(node, rng, len(history) + i)
        idx = status(node)["store"]["applied_index"]
        history.append((idx, int(time.time() * 1000), rows_of(node)))
        time.sleep(pause)


def wait_archived(node, index, timeout=20):
    def done():
        a = status(node)["archive"]
        return a if a["head_index"] >= index else None
    return wait_until(done, timeout, "the archive's head to reach index %d" % index)


def wait_archiving(node, timeout=20):
    """Until the node archives (a timeline established): writes from then on are
    restorable."""
    return wait_until(lambda: status(node)["archive"]["timeline"] or None, timeout,
                      "the archiver to establish its timeline")


def cairn(cairn_bin, args, env=None, timeout=60):
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def restore(cairn_bin, repo, out, target, ok=True):
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force"] + target,
              env=repo.env())
    if ok:
        assert r.returncode == 0, (target, r.stdout, r.stderr)
    return r


def archive_doc(cairn_bin, repo, what="list"):
    r = cairn(cairn_bin, ["archive", what] + repo.cli_args() + ["--json"], env=repo.env())
    return r, json.loads(r.stdout) if r.stdout.strip() else None


@repo_kinds(smoke=True)
def test_restore_to_indexes_times_and_latest_equals_what_the_node_had(server_factory, repo,
                                                                      cairn_bin, tmp_path):
    rng = random.Random(18)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 12, rng, history)
    # A backup in the middle: a later target restores from it, not from the first base.
    s.execute(["BACKUP DATABASE"])
    workload(s, 12, rng, history)
    a = wait_archived(s, history[-1][0])
    assert a["enabled"] and a["role"] == "archiver" and a["last_error"] == "", a
    # The archive's history is the cluster's id (cluster.h).
    assert a["history"] == s.get_json("/status")["node"]["cluster_id"] != "", a

    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 0 and doc["ok"], (r.stdout, r.stderr)
    assert len(doc["timelines"]) == 1, doc
    tl = doc["timelines"][0]
    assert tl["restorable"]["to_index"] >= history[-1][0], doc

    out = tmp_path / "pitr.db"
    for idx, _, rows in rng.sample(history, 6) + [history[0], history[-1]]:
        restore(cairn_bin, repo, out, ["--to-index", idx])
        assert file_rows(out) == rows, "index %d" % idx
    # Times: each write's answer came before the next entry was stamped.
    for k, (idx, t, rows) in enumerate(rng.sample(history[:-1], 3)):
        target = str(t) if k else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + ".%03dZ" % (t % 1000)
        r = restore(cairn_bin, repo, out, ["--to-time", target])
        assert file_rows(out) == rows, (target, r.stdout)
        assert "as of index" in r.stdout, r.stdout
    r = restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == history[-1][2]

    # Beyond the head: refused, with what can be restored; nothing written.
    beyond = tmp_path / "beyond.db"
    r = restore(cairn_bin, repo, beyond, ["--to-index", history[-1][0] + 1000], ok=False)
    assert r.returncode == 1 and "restorable" in r.stderr, r.stderr
    assert not beyond.exists()


def test_leader_killed_the_next_one_continues_the_timeline(cluster_factory, tmp_path, cairn_bin):
    """kill -9 of the archiver before it uploaded the last writes (a 2 s interval): the
    new leader reads the archive's head and continues the same timeline from its own
    ring, uploading what the old one had not: no gap, no duplicate (verify checks the
    tiling and every link), and every index before and after the kill restores exactly."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "shared-repo")
    rng = random.Random(7)
    c = cluster_factory(3, extra_args=["--backup-dir", str(repo.path), "--archive",
                                       "--archive-interval", "2s"])
    leader = c.leader()
    wait_archiving(leader)
    for n in c.nodes:
        if n is not leader:
            assert status(n)["archive"]["role"] == "standby", status(n)["archive"]
    leader.execute([SCHEMA])
    history = []
    workload(leader, 10, rng, history)
    before = status(leader)["archive"]
    assert before["head_index"] < history[-1][0], before  # not all uploaded yet
    leader.kill()
    leader = c.leader(among=[n for n in c.nodes if n.running()])
    workload(leader, 10, rng, history)
    a = wait_archived(leader, history[-1][0])
    # The same timeline: continued from the head, or (when the old leader had uploaded
    # nothing yet) started again on the same base backup, which names it alike.
    assert a["role"] == "archiver" and a["timeline"] == before["timeline"], (a, before)

    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 0 and doc["ok"], (r.stdout, r.stderr)
    assert len(doc["timelines"]) == 1, doc
    out = tmp_path / "pitr.db"
    for idx, _, rows in [history[3], history[9], history[10], history[-1]]:
        restore(cairn_bin, repo, out, ["--to-index", idx])
        assert file_rows(out) == rows, "index %d" % idx


def test_damaged_segment_is_named_and_restore_stops_before_it(server_factory, tmp_path, cairn_bin):
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(3)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    for _ in range(6):  # several segments: each batch waits for its upload
        workload(s, 2, rng, history)
        wait_archived(s, history[-1][0])
    segs = sorted(n for n in repo.names() if n.startswith("archive-"))
    assert len(segs) >= 4, segs
    victim = segs[len(segs) // 2]
    size = repo.size(victim)
    repo.damage(victim, size // 2, n=4)

    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 1 and not doc["ok"], r.stdout
    problem = doc["timelines"][0]["problem"]
    assert problem["object"] == victim and "damaged" in problem["message"], problem
    first = int(victim[-24:-4])
    assert problem["index"] == first, (problem, victim)

    out = tmp_path / "pitr.db"
    r = restore(cairn_bin, repo, out, ["--to-index", history[-1][0]], ok=False)
    assert r.returncode == 1 and victim in r.stderr, r.stderr
    assert not out.exists()
    # Up to the entry before the damaged segment: restored, and exact.
    before = [h for h in history if h[0] < first][-1]
    r = restore(cairn_bin, repo, out, ["--to-index", first - 1])
    assert file_rows(out) == before[2], r.stdout


@pytest.mark.parametrize("damage", ["flipped", "deleted", "stray"])
def test_latest_is_refused_when_entries_lie_past_a_damaged_segment(server_factory, tmp_path,
                                                                  cairn_bin, damage):
    """A segment in the middle of the only timeline damaged or gone, the entries after it
    still archived: `latest` would stop before it and say it restored the newest state.
    It is refused, naming the segment and the index it can go to, and leaves nothing at
    --out; with no damage, latest restores every write. A stray copy of a segment under
    the name of one from index 0 (no archiver's) is no segment: latest is every write."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(5)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    for _ in range(6):
        workload(s, 2, rng, history)
        wait_archived(s, history[-1][0])
    out = tmp_path / "latest.db"
    restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == history[-1][2]
    out.unlink()
    segs = sorted(n for n in repo.names() if n.startswith("archive-"))
    assert len(segs) >= 4, segs
    victim = segs[len(segs) // 2]
    first = int(victim[-24:-4])
    if damage == "stray":
        repo.write(victim[:-24] + "%020d.seg" % 0, repo.read(victim))
        restore(cairn_bin, repo, out, ["latest"])
        assert file_rows(out) == history[-1][2]
        return
    if damage == "flipped":  # its magic: the walk finds it, not only a replay through it
        repo.damage(victim, 0, n=4)
    else:
        repo.delete(victim)
    r = restore(cairn_bin, repo, out, ["latest"], ok=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "newest state cannot be restored" in r.stderr, r.stderr
    named = victim if damage == "flipped" else segs[len(segs) // 2 + 1]
    assert named in r.stderr and "beyond index %d" % (first - 1) in r.stderr, r.stderr
    assert not out.exists()
    r = restore(cairn_bin, repo, out, ["--to-index", first - 1])
    assert file_rows(out) == [h for h in history if h[0] < first][-1][2]


def test_a_backup_that_failed_verification_is_no_base_of_a_timeline_or_a_restore(
        server_factory, tmp_path, cairn_bin):
    """The newest backup B has a damaged block, which `verify` found, and the timeline's
    head segment is damaged too: at its next start the node cannot continue the timeline
    and starts a new one, not on B (no restore could start from it). A restore on the new
    timeline then starts from an older backup, not from B, and has every write."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(7)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 2, rng, history)
    wait_archived(s, history[-1][0])
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    bad = r.json()["backup"]["id"]
    for _ in range(2):  # the head segment is after B's index
        workload(s, 2, rng, history)
        wait_archived(s, history[-1][0])
    s.stop()
    repo.damage(bad + ".cbk", 600, 4)
    r = cairn(cairn_bin, ["backup", "verify"] + repo.cli_args() + [bad])
    assert r.returncode == 1 and bad in r.stderr, r.stderr
    head = sorted(n for n in repo.names() if n.startswith("archive-"))[-1]
    repo.damage(head, 0, 4)
    s.start()
    wait_until(lambda: status(s)["archive"]["timelines_started"] >= 1 or None, 20,
               "a new timeline")
    log = s.stderr_text()
    assert "new timeline" in log.split("==== start #2")[-1], log
    assert "on backup %s" % bad not in log, log
    workload(s, 2, rng, history)
    wait_archived(s, history[-1][0])
    out = tmp_path / "pitr.db"
    restore(cairn_bin, repo, out, ["--to-index", history[-1][0]])
    assert file_rows(out) == history[-1][2]


def test_a_backup_whose_chain_is_broken_is_no_base_of_a_timeline_or_a_restore(
        server_factory, tmp_path, cairn_bin):
    """The newest backup B is an incremental one whose parent F is gone from the
    repository (deleted by hand), and the timeline's head segment is damaged: at its next
    start the node starts a new timeline, not on B (no restore could start from it: its
    chain needs F). A restore to an index after B, before and after, starts from the
    older base whose chain is whole, and has every write up to it."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(8)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 2, rng, history)
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    parent = r.json()["backup"]["id"]
    workload(s, 2, rng, history)
    r = s.raw("POST", "/admin/backup", {"type": "incremental"})
    assert r.status == 200, r
    broken = r.json()["backup"]["id"]
    assert r.json()["backup"]["parent_id"] == parent, r.json()
    for _ in range(2):  # the head segment is after B's index
        workload(s, 2, rng, history)
        wait_archived(s, history[-1][0])
    s.stop()
    repo.delete(parent + ".cbk")
    # A restore on the old timeline starts from the older base, whose chain is whole.
    out = tmp_path / "old.db"
    restore(cairn_bin, repo, out, ["--to-index", history[-1][0]])
    assert file_rows(out) == history[-1][2]
    head = sorted(n for n in repo.names() if n.startswith("archive-"))[-1]
    repo.damage(head, 0, 4)
    s.start()
    wait_until(lambda: status(s)["archive"]["timelines_started"] >= 1 or None, 20,
               "a new timeline")
    log = s.stderr_text()
    assert "new timeline" in log.split("==== start #2")[-1], log
    assert "on backup %s" % broken not in log, log
    workload(s, 2, rng, history)
    wait_archived(s, history[-1][0])
    out = tmp_path / "pitr.db"
    restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == history[-1][2]


def test_a_live_restore_in_the_archive_is_replayed(server_factory, tmp_path, cairn_bin):
    """RESTORE DATABASE in the middle of the workload: its entries (PREPARE, then the
    swap) are in the archive; the replay restores the same backup from the repository
    at the swap and goes on with the entries after it."""
    from backuputil import DirRepo, sql_quote
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(11)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 4, rng, history)
    before = set(repo.backups())
    s.execute(["BACKUP DATABASE"])
    bid = (set(repo.backups()) - before).pop()[:-len(".cbk")]
    workload(s, 4, rng, history)
    body = s.execute(["RESTORE DATABASE FROM %s" % sql_quote(bid)])
    assert "error" not in body["results"][0], body
    history.append((status(s)["store"]["applied_index"], 0, rows_of(s)))
    workload(s, 4, rng, history)
    wait_archived(s, history[-1][0])

    out = tmp_path / "pitr.db"
    for idx, _, rows in [history[6], history[8], history[9], history[-1]]:
        r = restore(cairn_bin, repo, out, ["--to-index", idx])
        assert file_rows(out) == rows, ("index %d" % idx, r.stdout)
    assert "with a restore entry" in r.stdout, r.stdout


def test_an_entry_the_queue_cannot_hold_is_read_back_from_the_log(server_factory, tmp_path,
                                                                   cairn_bin):
    """The queue is a cache: an entry it cannot hold (here one write larger than the whole
    queue) is read back from libraft's log, which still holds it, and the timeline goes
    on with no gap: one timeline, every index restores. (The log outrunning the archive,
    the one case that starts a new timeline, is tests/system/test_archive_faults.py.)"""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(5)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS +
                       ["--archive-segment-bytes", "8192", "--archive-queue-bytes", "8192"])
    wait_archiving(s)
    s.execute([SCHEMA, "CREATE TABLE big (b BLOB)"])
    history = []
    workload(s, 4, rng, history)
    wait_archived(s, history[-1][0])
    s.execute([["INSERT INTO big VALUES(?)", "ab" * 8000]])
    workload(s, 4, rng, history)
    a = wait_archived(s, history[-1][0])
    assert a["timelines_started"] == 1 and a["last_error"] == "" and not a["outran"], a
    assert a["log_entries"] >= 1, a

    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 0 and len(doc["timelines"]) == 1, (r.stdout, r.stderr)
    out = tmp_path / "pitr.db"
    for idx, _, rows in [history[2], history[3], history[4], history[-1]]:
        restore(cairn_bin, repo, out, ["--to-index", idx])
        assert file_rows(out) == rows, "index %d" % idx


def test_a_node_killed_before_uploading_continues_after_its_restart(server_factory, tmp_path,
                                                                     cairn_bin):
    """kill -9 of a lone node whose last writes were not uploaded yet: at the restart
    libraft applies its log again, the ring takes the entries, and the archiver continues
    the timeline with them."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(9)
    s = server_factory(extra_args=repo.server_args() + ["--archive", "--archive-interval", "5s"])
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 6, rng, history)
    before = status(s)["archive"]
    assert before["head_index"] < history[-1][0], before
    s.kill()
    s.start()
    workload(s, 3, rng, history)
    a = wait_archived(s, history[-1][0])
    assert a["timeline"] == before["timeline"], (a, before)
    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 0 and len(doc["timelines"]) == 1, (r.stdout, r.stderr)
    out = tmp_path / "pitr.db"
    for idx, _, rows in [history[2], history[5], history[-1]]:
        restore(cairn_bin, repo, out, ["--to-index", idx])
        assert file_rows(out) == rows, "index %d" % idx


def test_archive_commands_read_a_repository_and_refuse_bad_usage(server_factory, tmp_path,
                                                                  cairn_bin):
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    tl = wait_archiving(s)
    s.execute([SCHEMA])
    s.execute(["INSERT INTO t(v) VALUES(1)"])
    head = wait_archived(s, status(s)["store"]["applied_index"])["head_index"]

    r = cairn(cairn_bin, ["archive", "list", "--repo", repo.path])
    assert r.returncode == 0 and tl in r.stdout and "restorable: indexes" in r.stdout, r.stdout
    r = cairn(cairn_bin, ["archive", "show", "--repo", repo.path, tl])
    segs = [n for n in repo.names() if n.startswith("archive-")]
    assert r.returncode == 0 and all(n in r.stdout for n in segs), r.stdout
    r = cairn(cairn_bin, ["archive", "show", "--repo", repo.path, "--json", tl])
    doc = json.loads(r.stdout)
    assert doc["head_index"] == head and len(doc["segment_list"]) == len(segs), doc
    r = cairn(cairn_bin, ["archive", "verify", "--repo", repo.path])
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout
    r = cairn(cairn_bin, ["archive", "--help"])
    assert r.returncode == 0 and "verify" in r.stdout, r.stdout

    for args in (["archive", "list"],                                     # no --repo
                 ["restore", "--repo", repo.path, "--to-index", "3"],     # no --out
                 ["restore", "--repo", repo.path, "--out", tmp_path / "x.db", "--to-index", "3",
                  "--to-time", "2026-01-01T00:00:00Z"],
                 ["restore", "--repo", repo.path, "--out", tmp_path / "x.db", "--to-time", "yesterday"],
                 # beyond 64 bits: not read as 2^64-1
                 ["restore", "--repo", repo.path, "--out", tmp_path / "x.db", "--to-index",
                  "99999999999999999999999"],
                 ["archive", "show", "--repo", repo.path]):               # no timeline
        r = cairn(cairn_bin, args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert not (tmp_path / "x.db").exists()
    # A repository with no archive: nothing to restore; `latest` is the newest backup.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cairn(cairn_bin, ["archive", "list", "--repo", empty])
    assert r.returncode == 0 and "no archive" in r.stdout, (r.stdout, r.stderr)
    # A directory that is not there (a mistyped path) is no empty archive: it is not
    # listed as one, nor verified "ok".
    for cmd in ("list", "verify"):
        r = cairn(cairn_bin, ["archive", cmd, "--repo", tmp_path / "no-such-repo", "--json"])
        assert r.returncode == 1 and r.stdout == "", (cmd, r.stdout, r.stderr)
        assert "no-such-repo does not exist" in r.stderr, r.stderr


def test_a_clean_stop_uploads_what_waits(server_factory, tmp_path, cairn_bin):
    """SIGTERM: the archiver's last turn uploads the entries waiting for the next
    interval, so a clean stop loses nothing from the archive."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(4)
    s = server_factory(extra_args=repo.server_args() + ["--archive", "--archive-interval", "30s"])
    wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 3, rng, history)
    assert status(s)["archive"]["head_index"] < history[-1][0]
    assert s.stop() == 0
    out = tmp_path / "pitr.db"
    r = restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == history[-1][2], r.stdout


def test_replay_groups_entries_and_redoes_a_group_a_statement_rolled_back(server_factory,
                                                                       tmp_path, cairn_bin):
    """A restore replays archived entries in groups, one transaction each (as a follower
    applies a loop turn's entries). A statement whose conflict clause is ROLLBACK rolls
    the whole group back: the group is applied again one entry at a time, and the result
    is still exactly what the node had, at every index."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(5)
    s = server_factory(extra_args=repo.server_args() + ["--archive"])
    wait_archiving(s)
    s.execute([SCHEMA, "CREATE TABLE u(k INTEGER PRIMARY KEY, n INTEGER)",
               "INSERT INTO u VALUES(1, 0)"])
    history = []
    workload(s, 10, rng, history)
    # Rolled back by its own conflict clause: an error for the client, nothing kept.
    body = s.execute(["INSERT OR ROLLBACK INTO u VALUES(1, 99)"])
    assert "error" in body["results"][0], body
    s.execute(["UPDATE u SET n = n + 1"])
    workload(s, 10, rng, history)
    head = status(s)["store"]["applied_index"]
    wait_archived(s, head)
    for idx, _, rows in history[::4] + [history[-1]]:
        out = tmp_path / ("at-%d.db" % idx)
        restore(cairn_bin, repo, out, ["--to-index", str(idx)])
        assert file_rows(out) == rows, idx
    out = tmp_path / "latest.db"
    restore(cairn_bin, repo, out, ["latest"])
    db = sqlite3.connect(str(out))
    try:
        assert db.execute("SELECT k, n FROM u").fetchall() == [(1, 1)]
    finally:
        db.close()
    assert file_rows(out) == history[-1][2]


def _write_hard(node, seconds, threads=6):
    """Writes from several threads, as fast as the node answers, for `seconds`: entries
    arrive while every upload runs. Returns the number of writes."""
    import threading
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(c):
        while time.monotonic() < stop:
            node.execute([["INSERT INTO t(v, r, ts) VALUES(?, 0, 'x')", c]])
            counts[c] += 1
    ts = [threading.Thread(target=run, args=(c,)) for c in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts)


def test_a_segment_is_cut_every_interval_not_after_every_upload(server_factory, tmp_path,
                                                                cairn_bin):
    """Under steady writes the archiver cuts one segment an interval: what arrives while
    a segment uploads waits for the next interval (it used to be cut at once, after
    every upload: 42-101 segments for 10 s of writes at a 1 s interval). Every write is
    still archived and restores."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ["--archive", "--archive-interval", "1s"])
    wait_archiving(s)
    s.execute([SCHEMA])
    head = status(s)["store"]["applied_index"]
    wait_archived(s, head)
    before = status(s)["archive"]["segments_uploaded"]
    seconds = 4
    n = _write_hard(s, seconds)
    head = status(s)["store"]["applied_index"]
    a = wait_archived(s, head)
    cut = a["segments_uploaded"] - before
    # One an interval while the writes go on, one for what the last interval held, one
    # of slack for where the intervals fall, one for a turn late on a loaded machine.
    assert n > 50 and 1 <= cut <= seconds + 3, (n, cut, a)
    out = tmp_path / "pitr.db"
    restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == rows_of(s)


def test_a_segment_is_cut_at_the_size_bound_before_the_interval(server_factory, tmp_path,
                                                                 cairn_bin):
    """--archive-segment-bytes cuts a segment as soon as that many bytes of entries wait,
    long before the interval (here 60 s); only then: the segments hold about that many
    bytes each, not the few entries one upload's time saw."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + [
        "--archive", "--archive-interval", "60s", "--archive-segment-bytes", "16384"])
    wait_archiving(s)
    s.execute([SCHEMA])
    before = status(s)["archive"]
    pad = "y" * 400
    for i in range(200):  # about 100 KiB of entries
        s.execute([["INSERT INTO t(v, r, ts) VALUES(?, 0, ?)", i, pad]])
    a = wait_until(lambda: (lambda x: x if x["segments_uploaded"] - before["segments_uploaded"] >= 4 else None)(
        status(s)["archive"]), 20, "segments cut at the size bound")
    uploaded = a["entries_uploaded"] - before["entries_uploaded"]
    cut = a["segments_uploaded"] - before["segments_uploaded"]
    # Each a segment's bytes: about 16 KiB of 400-byte rows (35-45 entries), never a
    # handful.
    assert uploaded / cut >= 20, (uploaded, cut, a)
    assert a["head_index"] < status(s)["store"]["applied_index"], a  # the rest waits


def test_a_dead_writers_temporary_segment_does_not_stop_the_archive(server_factory, tmp_path,
                                                                    cairn_bin):
    """An archiver killed while it uploads a segment to a directory leaves the segment's
    temporary file, `.archive-<timeline>-<first>.seg.tmp`. The next archiver to write
    that segment (a node taking over, or this one restarted) failed on it with 'File
    exists' at every turn, for ever: the archive stopped. Now it takes over a file no
    live writer holds. Here the leftover is planted where the next segment goes, as a
    killed writer leaves it (no lock held), and the archive must go on past it."""
    from backuputil import DirRepo
    repo = DirRepo(tmp_path / "repo")
    rng = random.Random(12)
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    tl = wait_archiving(s)
    s.execute([SCHEMA])
    history = []
    workload(s, 3, rng, history)
    head = wait_archived(s, history[-1][0])["head_index"]
    segs = [n for n in repo.names() if n.startswith("archive-%s-" % tl)]
    assert segs and all(n.endswith(".seg") for n in segs), segs
    left = repo.path / (".archive-%s-%020d.seg.tmp" % (tl, head + 1))
    left.write_bytes(b"half a segment, its writer killed")
    workload(s, 3, rng, history)
    a = wait_archived(s, history[-1][0])
    assert a["timeline"] == tl, a
    assert not left.exists()
    r, doc = archive_doc(cairn_bin, repo, "verify")
    assert r.returncode == 0 and len(doc["timelines"]) == 1, (r.stdout, r.stderr)
    out = tmp_path / "pitr.db"
    restore(cairn_bin, repo, out, ["latest"])
    assert file_rows(out) == history[-1][2]
