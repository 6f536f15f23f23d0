"""The continuous archive under faults (issue 18, robustness): a repository that is down
for a while, the Raft log compacted past what the archive still needs, a follower
archiving instead of the leader (--archive-from follower), frozen while the leader fills
in, and killed, the archiver killed with -9 in the middle of an upload.

Every write is a row with a unique key; after each fault the archive verifies (`cairn
archive verify`) and a restore to latest holds every acknowledged write exactly once.
Waiting is always a poll with a deadline; faults come from tests/s3/sigproxy.py in
front of s3rver (a directory cannot be made unwritable for root, which runs the tests
in CI).
"""
import json
import subprocess
import threading

import pytest

from backuputil import DirRepo, repo, repo_kind  # noqa: F401 (fixtures)
from conftest import wait_until
from s3util import s3env  # noqa: F401 (fixture)
from test_cluster import cluster_factory  # noqa: F401 (fixture)

TABLE = "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER NOT NULL UNIQUE, pad TEXT)"


def status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


def archive_of(node):
    return status(node)["archive"]


def applied(node):
    return status(node)["store"]["applied_index"]


def put(node, k, pad=""):
    """One acknowledged write of key k."""
    body = node.execute([["INSERT INTO t(k, pad) VALUES(?, ?)", k, pad]])
    assert "error" not in body["results"][0], body


def cairn(cairn_bin, args, env=None, timeout=60):
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def verify(cairn_bin, repo):
    r = cairn(cairn_bin, ["archive", "verify"] + repo.cli_args() + ["--json"], env=repo.env())
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert r.returncode == 0 and doc and doc["ok"], (r.stdout, r.stderr)
    return doc


def restored_keys(cairn_bin, repo, tmp_path):
    """The keys of a restore to latest, as a list (a duplicate would show twice)."""
    import sqlite3
    out = tmp_path / "latest.db"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force", "latest"],
              env=repo.env())
    assert r.returncode == 0, (r.stdout, r.stderr)
    db = sqlite3.connect(str(out))
    try:
        return [k for (k,) in db.execute("SELECT k FROM t ORDER BY k")]
    finally:
        db.close()


def wait_head(node, index, timeout=30):
    return wait_until(lambda: (lambda a: a if a["head_index"] >= index else None)(archive_of(node)),
                      timeout, "the archive's head on %s to reach index %d" % (node.name, index))


def repository_down(s3, repo):
    """Every request under the repository's prefix answered 503 until repository_up."""
    s3.fault(action="status", status=503, path=repo.prefix, count=-1)


def repository_up(s3):
    s3.clear_faults()


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_repository_down_for_a_while_the_archive_catches_up(server_factory, repo, tmp_path,
                                                            cairn_bin, monkeypatch):
    """With the repository answering 503, writes are still acknowledged, /status shows the
    lag growing and the error; the queue (a small one) drops entries, which are read
    back from the Raft log once the repository is back: the same timeline, no gap, and a
    restore to latest has every write exactly once."""
    monkeypatch.setenv("CAIRN_S3_RETRY_MS", "300")  # an upload gives up soon: the error shows
    s3 = repo.s3env
    s = server_factory(extra_args=repo.server_args() + [
        "--archive", "--archive-interval", "50ms", "--archive-segment-bytes", "4096",
        "--archive-queue-bytes", "4096"])
    wait_until(lambda: archive_of(s)["timeline"] or None, 20, "the archiver's timeline")
    s.execute([TABLE])
    for k in range(10):
        put(s, k)
    wait_head(s, applied(s))
    timeline = archive_of(s)["timeline"]

    repository_down(s3, repo)
    lags = []
    for k in range(10, 70):
        put(s, k, "x" * 300)  # acknowledged while the repository is down
        if k % 20 == 0:
            lags.append(archive_of(s)["lag_entries"])
    a = wait_until(lambda: (lambda a: a if a["last_error"] else None)(archive_of(s)), 20,
                   "the failed upload in /status")
    assert a["lag_entries"] >= 50 and lags == sorted(lags) and lags[-1] > lags[0], (lags, a)
    assert a["queue_bytes"] <= 4096 and a["held_from_index"] > a["head_index"] + 1, a

    repository_up(s3)
    for k in range(70, 75):
        put(s, k)
    a = wait_head(s, applied(s))
    assert a["timeline"] == timeline and a["timelines_started"] == 1, a
    assert not a["outran"] and a["log_entries"] > 0 and a["lag_entries"] == 0, a
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 1, doc
    assert restored_keys(cairn_bin, repo, tmp_path) == list(range(75))


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_log_compacted_while_the_repository_is_down_starts_a_new_timeline(
        server_factory, repo, tmp_path, cairn_bin, monkeypatch):
    """The repository down while snapshots compact the log (a snapshot every 8 entries,
    2 kept): the entries the archive needs are gone from the queue and the log. The
    archiver says so (its log, /status outran), takes a full backup once the repository
    is back and starts a new timeline on it; the restore to latest has every write."""
    monkeypatch.setenv("CAIRN_S3_RETRY_MS", "300")
    s3 = repo.s3env
    s = server_factory(extra_args=repo.server_args() + [
        "--archive", "--archive-interval", "50ms", "--archive-segment-bytes", "4096",
        "--archive-queue-bytes", "4096", "--snapshot-threshold", "8", "--snapshot-trailing",
        "2"])
    wait_until(lambda: archive_of(s)["timeline"] or None, 20, "the archiver's timeline")
    s.execute([TABLE])
    for k in range(10):
        put(s, k)
    wait_head(s, applied(s))
    first = archive_of(s)
    assert not first["outran"] and first["timelines_started"] == 1, first

    repository_down(s3, repo)
    for k in range(10, 60):
        put(s, k, "y" * 300)
    snaps = status(s)["raft"]
    a = wait_until(lambda: (lambda a: a if a["outran"] else None)(archive_of(s)), 20,
                   "/status to say that the log outran the archive")
    assert a["outrun_index"] > first["head_index"], (a, snaps)
    assert "the log outran the archive" in s.stderr_text()

    repository_up(s3)
    wait_until(lambda: archive_of(s)["timelines_started"] == 2, 20, "the new timeline")
    put(s, 60)  # after the new timeline's base: its first segment
    a = wait_head(s, applied(s))
    assert a["outran"] and a["timelines_started"] == 2 and a["timeline"] != first["timeline"], a
    names = [t["name"] for t in a["timelines"]]
    assert first["timeline"] in names and a["timeline"] in names, a
    new = [t for t in a["timelines"] if t["name"] == a["timeline"]][0]
    assert new["start_index"] > first["head_index"] and new["head_index"] == a["head_index"], a
    assert "took full backup" in s.stderr_text()
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 2, doc
    assert restored_keys(cairn_bin, repo, tmp_path) == list(range(61))
    # Between the two windows (the entries the log lost, which only the new base holds):
    # refused, naming both timelines.
    out = tmp_path / "gap.db"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + [
        "--out", out, "--force", "--to-index", first["head_index"] + 1], env=repo.env())
    assert r.returncode == 1 and first["timeline"] in r.stderr, r.stderr
    assert a["timeline"] in r.stderr, r.stderr


def test_a_follower_archives_and_after_it_is_killed_the_leader_takes_over(
        cluster_factory, tmp_path, cairn_bin):
    """--archive-from follower: the lowest-id voter that is not the leader uploads every
    segment, the leader none; killed with -9, the leader takes over from the archive's
    head (its ring and log hold what the follower had not uploaded): one timeline, every
    write restorable."""
    repo = DirRepo(tmp_path / "shared-repo")
    c = cluster_factory(3, extra_args=["--backup-dir", repo.path, "--archive",
                                       "--archive-interval", "100ms", "--archive-from",
                                       "follower"])
    leader = c.leader()
    follower = min((n for n in c.nodes if n is not leader), key=lambda n: n.id)
    other = [n for n in c.nodes if n is not leader and n is not follower][0]
    wait_until(lambda: archive_of(follower)["role"] == "archiver", 20,
               "node %d to archive" % follower.id)
    leader.execute([TABLE])
    for k in range(20):
        put(leader, k)
    wait_head(follower, applied(leader))
    # What the others uploaded before (while the cluster formed, a node that was leader
    # or took itself for the designated follower for a moment may have archived the
    # first entries; harmless, the uploads are the same): from now on, nothing.
    before = {n.id: archive_of(n)["segments_uploaded"] for n in (leader, other)}
    mine = archive_of(follower)["segments_uploaded"]
    term = leader.raft()["term"]
    for k in range(20, 40):
        put(leader, k)
    a = wait_head(follower, applied(leader))
    assert a["from"] == "follower" and a["segments_uploaded"] > mine, a
    # The third node archives only if it takes itself for the designated follower: not
    # while the leader stays. The leader fills in while it does not hear from the
    # designated follower (a loaded machine can delay its answers past an election
    # timeout), so it may be the archiver for a turn now: never for more segments than
    # the follower itself (20 writes can fit in one segment of each).
    if leader.raft()["term"] == term:
        assert archive_of(other)["role"] == "standby", other.name
        assert archive_of(other)["segments_uploaded"] == before[other.id]
    filled = archive_of(leader)["segments_uploaded"] - before[leader.id]
    assert filled <= archive_of(follower)["segments_uploaded"] - mine, (filled, archive_of(follower))

    follower.kill()
    for k in range(40, 60):
        put(leader, k)
    a = wait_head(leader, applied(leader))
    assert a["role"] == "archiver" and a["last_error"] == "", a
    assert archive_of(other)["segments_uploaded"] == before[other.id]
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 1, doc
    assert restored_keys(cairn_bin, repo, tmp_path) == list(range(60))


def timelines_in(repo):
    """The timelines a directory repository holds segments of (archive-<timeline>-<first>.seg)."""
    return sorted({p.name[len("archive-"):].rsplit("-", 1)[0]
                   for p in repo.path.glob("archive-*.seg")})


class Writer:
    """Writes keys 0, 1, 2, ... to one node, one after another, until stopped: `acked` holds
    the keys acknowledged, `unsure` those whose write failed (it may have been applied)."""

    def __init__(self, node):
        self.node, self.acked, self.unsure = node, [], []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        k = 0
        while not self.stopping.is_set():
            try:
                put(self.node, k)
                self.acked.append(k)
            except Exception:  # noqa: BLE001 - a write may fail under load; said by `unsure`
                self.unsure.append(k)
            k += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(60)


def test_a_follower_archiver_behind_the_leaders_fill_in_continues_its_timeline(
        cluster_factory, tmp_path, cairn_bin):
    """--archive-from follower, the follower archiver frozen (SIGSTOP) under steady writes:
    the leader no longer hears from it and fills in, continuing the timeline. Thawed, the
    follower finds the leader's segments in the archive, whose head lies past the commit
    index it knows (the leader commits with the third node and tells this one a message
    later): an entry of its own history it has not heard of yet, to wait for, not
    another history's. It never starts a timeline beside the one it archived (that fork,
    a one-entry timeline beside the main one, made the takeover test fail now and then).
    Then killed with -9, the leader takes over: one timeline, every write restorable."""
    repo = DirRepo(tmp_path / "shared-repo")
    c = cluster_factory(3, extra_args=["--backup-dir", repo.path, "--archive",
                                       "--archive-interval", "100ms", "--archive-from",
                                       "follower"])
    leader = c.leader()
    follower = min((n for n in c.nodes if n is not leader), key=lambda n: n.id)
    wait_until(lambda: archive_of(follower)["role"] == "archiver", 20,
               "node %d to archive" % follower.id)
    leader.execute([TABLE])

    filled = 0
    with Writer(leader) as w:
        for cycle in range(16):
            if filled == 4:
                break
            acked = len(w.acked)
            wait_until(lambda: len(w.acked) >= acked + 10, 20, "writes to be acknowledged")
            follower.freeze()
            if list(repo.path.glob(".archive-*.seg.tmp")):
                # Frozen in the middle of an upload: the follower holds the segment's
                # temporary file, a live writer's, so nobody else writes that name and
                # the leader would wait for it. Not this time.
                follower.thaw()
                continue
            mark = applied(leader)
            wait_until(lambda: (lambda a: a["role"] == "archiver" and a["head_index"] >= mark)(
                archive_of(leader)), 20, "the leader to fill in past index %d" % mark)
            follower.thaw()
            filled += 1
            mark = applied(leader)
            wait_until(lambda: (lambda a: a["role"] == "archiver" and a["head_index"] >= mark)(
                archive_of(follower)), 30, "node %d to archive again, past index %d"
                % (follower.id, mark))
            assert len(timelines_in(repo)) == 1, (cycle, timelines_in(repo))
    assert filled == 4, "the leader filled in %d times in 16 freezes" % filled
    # Killed once idle, as in the test above: killed in the middle of an upload, it
    # would leave its temporary file behind, and nobody sweeps those of segments.
    wait_head(follower, applied(leader))
    follower.kill()
    last = max(w.acked + w.unsure)
    for k in range(last + 1, last + 11):
        put(leader, k)
        w.acked.append(k)
    a = wait_head(leader, applied(leader))
    assert a["role"] == "archiver" and a["last_error"] == "", a
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 1, doc
    keys = restored_keys(cairn_bin, repo, tmp_path)
    assert len(keys) == len(set(keys)), "a key restored twice"
    assert set(w.acked) <= set(keys) <= set(w.acked) | set(w.unsure), \
        (sorted(set(w.acked) - set(keys)), sorted(set(keys) - set(w.acked) - set(w.unsure)))


def test_follower_archiving_across_a_leader_change_one_archiver_at_a_time(cluster_factory,
                                                                         tmp_path, cairn_bin):
    """--archive-from follower and the leader killed: once the survivors agree on a new
    leader, exactly one of them archives, the one the rule names (the lowest-id voter
    that is not the leader; the leader itself when that voter is the dead node, which it
    no longer hears from), and the timeline goes on: one timeline, every write."""
    repo = DirRepo(tmp_path / "shared-repo")
    c = cluster_factory(3, extra_args=["--backup-dir", repo.path, "--archive",
                                       "--archive-interval", "100ms", "--archive-from",
                                       "follower"])
    leader = c.leader()
    leader.execute([TABLE])
    for k in range(10):
        put(leader, k)

    def one_archiver(nodes):
        roles = {n.id: archive_of(n)["role"] for n in nodes}
        archivers = [i for i, r in roles.items() if r == "archiver"]
        return archivers[0] if len(archivers) == 1 else None

    first = wait_until(lambda: one_archiver(c.nodes), 20, "exactly one archiver")
    assert first != leader.id
    wait_head(c.node(first), applied(leader))
    leader.kill()
    rest = [n for n in c.nodes if n.running()]
    leader = c.leader(among=rest)
    for k in range(10, 20):
        put(leader, k)
    # The designated follower is the lowest-id voter that is not the leader.
    voters = sorted(n.id for n in c.nodes if n.id != leader.id)
    expect = voters[0] if c.node(voters[0]).running() else leader.id
    now = wait_until(lambda: (lambda i: i if i == expect else None)(one_archiver(rest)), 20,
                     "node %d alone to archive" % expect)
    wait_head(c.node(now), applied(leader))
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 1, doc
    assert restored_keys(cairn_bin, repo, tmp_path) == list(range(20))


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_archiver_killed_in_the_middle_of_an_upload(cluster_factory, repo, tmp_path, cairn_bin):
    """kill -9 of the leader while the repository holds its segment upload unanswered
    (sigproxy's stall: the object is stored, the answer never comes): the next leader
    reads the head (that segment, or the one before) and continues; the archive verifies
    and the restore to latest holds every acknowledged write exactly once."""
    s3 = repo.s3env
    c = cluster_factory(3, extra_args=repo.server_args() + ["--archive", "--archive-interval",
                                                            "100ms"])
    leader = c.leader()
    wait_until(lambda: archive_of(leader)["timeline"] or None, 20, "the archiver's timeline")
    leader.execute([TABLE])
    for k in range(10):
        put(leader, k)
    wait_head(leader, applied(leader))
    s3.fault(action="stall", method="PUT", path=repo.prefix + "/archive-", seconds=60)
    for k in range(10, 20):
        put(leader, k)
    wait_until(lambda: not s3.pending_faults(), 20, "an archive upload to stall")
    leader.kill()
    s3.clear_faults()

    rest = [n for n in c.nodes if n.running()]
    leader = c.leader(among=rest)
    for k in range(20, 30):
        put(leader, k)
    a = wait_head(leader, applied(leader))
    assert a["role"] == "archiver" and a["last_error"] == "", a
    doc = verify(cairn_bin, repo)
    assert len(doc["timelines"]) == 1, doc
    assert restored_keys(cairn_bin, repo, tmp_path) == list(range(30))


def test_two_histories_in_one_repository_never_share_a_timeline(server_factory, tmp_path,
                                                                cairn_bin):
    """Two independent nodes (two histories, both numbering their entries from 1)
    archiving into one repository at once: each keeps a timeline and a history id of its
    own (segments record it, docs/FORMAT.md), neither continues the other's head, and the
    archive verifies (a segment of another history is never linked into a timeline:
    tests/unit/test_archive.c)."""
    repo = DirRepo(tmp_path / "shared-repo")
    args = ["--backup-dir", repo.path, "--archive", "--archive-interval", "50ms"]
    a = server_factory(extra_args=args)
    b = server_factory(extra_args=args)
    for s in (a, b):
        wait_until(lambda: archive_of(s)["timeline"] or None, 20, "the archiver's timeline")
        s.execute([TABLE])
    for k in range(15):
        put(a, k)
        put(b, 100 + k)
        put(b, 200 + k)  # b's log runs ahead of a's: a's head is never b's
    # Both may have started their timeline on the same base (the empty database at index
    # 0 of one of them, whose timeline name is the same): the first upload of one wins,
    # the other finds a head that is not its own and starts a timeline of its own on a
    # full backup. Settled once both heads reach their applied index; one more write
    # each then gives each timeline a segment.
    wait_head(a, applied(a))
    wait_head(b, applied(b))
    put(a, 15)
    put(b, 300)
    sa, sb = wait_head(a, applied(a)), wait_head(b, applied(b))
    assert sa["timeline"] != sb["timeline"], (sa, sb)
    assert sa["history"] and sb["history"] and sa["history"] != sb["history"], (sa, sb)
    doc = verify(cairn_bin, repo)
    heads = {t["timeline"]: t["head_index"] for t in doc["timelines"]}
    assert heads.get(sa["timeline"]) == sa["head_index"], (heads, sa)
    assert heads.get(sb["timeline"]) == sb["head_index"], (heads, sb)


def test_a_missing_segment_is_named_and_restore_stops_before_it(server_factory, tmp_path,
                                                                cairn_bin):
    """A segment deleted from the middle of a timeline: verify names the gap (the segment
    after it and the first index lost), a restore past it is refused with the window
    that ends before it, and a restore up to the entry before it has exactly the writes
    up to there."""
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ["--archive", "--archive-interval",
                                                        "50ms"])
    wait_until(lambda: archive_of(s)["timeline"] or None, 20, "the archiver's timeline")
    s.execute([TABLE])
    at = []  # (applied index after the write, key)
    for k in range(12):
        put(s, k)
        at.append((applied(s), k))
        if k % 2:
            wait_head(s, at[-1][0])  # a segment every two writes
    segs = sorted(n for n in repo.names() if n.startswith("archive-"))
    assert len(segs) >= 4, segs
    victim = segs[len(segs) // 2]
    after = segs[len(segs) // 2 + 1]
    first = int(victim[-24:-4])
    (repo.path / victim).unlink()

    r = cairn(cairn_bin, ["archive", "verify"] + repo.cli_args() + ["--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["ok"], r.stdout
    problem = doc["timelines"][0]["problem"]
    assert problem["object"] == after and problem["index"] == first, problem
    assert "gap" in problem["message"], problem

    out = tmp_path / "pitr.db"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force", "--to-index",
                                                          at[-1][0]])
    # Refused with the restorable window, which ends before the gap (pitr.c names the
    # windows; verify above names the object).
    assert r.returncode == 1 and "gap" in r.stderr, r.stderr
    assert "indexes %d-%d" % (0, first - 1) in r.stderr or "-%d (" % (first - 1) in r.stderr, \
        r.stderr
    assert not out.exists()
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force", "--to-index",
                                                          first - 1])
    assert r.returncode == 0, r.stderr
    import sqlite3
    db = sqlite3.connect(str(out))
    try:
        got = [k for (k,) in db.execute("SELECT k FROM t ORDER BY k")]
    finally:
        db.close()
    assert got == [k for i, k in at if i < first], (got, first, at)
