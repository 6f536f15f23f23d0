"""A point-in-time restore that is killed, or that runs beside another one for the same
destination, leaves nothing but a whole, right file (issues 17 and 18).

The replay writes through SQLite, which needs a name for the file and its journal: the
file is a hidden name beside the destination, `.<base>.pitr-XXXXXX`, held under an flock
while the restore lives (src/lib/newfile.h). A restore killed with SIGKILL at any moment
leaves nothing at --out; what it leaves beside it is hidden and removed by the next
restore for that destination. Two restores at once each write their own file.
"""
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import ServerFactory, deadline_seconds, wait_until

ROWS = 3000


def status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


@pytest.fixture(scope="module")
def archived(tmp_path_factory, cairnd_bin):
    """A repository with a base backup and ROWS archived writes after it."""
    tmp = tmp_path_factory.mktemp("pitr-kill")
    repo = tmp / "repo"
    factory = ServerFactory(tmp)
    s = factory(extra_args=["--backup-dir", repo, "--archive", "--archive-interval", "100ms"])
    wait_until(lambda: status(s)["archive"]["timeline"] or None, 30, "the archiver's timeline")
    s.execute(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"])
    for i in range(ROWS):
        body = s.execute([["INSERT INTO t(k, v) VALUES(?, ?)", i, "x" * 200]])
        assert "error" not in body["results"][0], body
    idx = status(s)["store"]["applied_index"]
    wait_until(lambda: status(s)["archive"]["head_index"] >= idx, 30, "the archive's upload")
    s.stop()
    yield repo
    problems = factory.teardown()
    assert not problems, problems


def rows(path):
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT count(*), sum(k) FROM t").fetchone()
    finally:
        db.close()


WANT = (ROWS, ROWS * (ROWS - 1) // 2)


def start_restore(cairn_bin, repo, out, force=False):
    args = [str(cairn_bin), "restore", "--repo", str(repo), "--out", str(out), "latest"]
    return subprocess.Popen(args + (["--force"] if force else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_at_any_moment_leaves_nothing_at_out(cairn_bin, archived, tmp_path):
    d = tmp_path / "dest"
    d.mkdir()
    out = d / "db.sqlite"
    # A whole restore's duration (the shorter of two: on a loaded machine the first can
    # take twice the next), then kills spread over it; if too few kills landed while a
    # restore ran (later ones ran faster still), again over a half, then a quarter of it.
    whole = None
    for _ in range(2):
        t0 = time.monotonic()
        p = start_restore(cairn_bin, archived, out)
        assert p.wait(timeout=deadline_seconds(120)) == 0, p.stderr.read()
        took = time.monotonic() - t0
        whole = took if whole is None else min(whole, took)
        assert rows(out) == WANT
        out.unlink()
    killed = left = 0
    spread = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
    for frac in spread + tuple(f / 2 for f in spread) + tuple(f / 4 for f in spread):
        if killed >= 3 and left >= 1:
            break
        p = start_restore(cairn_bin, archived, out)
        try:
            p.wait(timeout=whole * frac)
        except subprocess.TimeoutExpired:
            pass
        p.send_signal(signal.SIGKILL)
        rc = p.wait(timeout=30)
        names = sorted(os.listdir(d))
        if rc == 0:  # finished before the kill: the whole file
            assert names == ["db.sqlite"] and rows(out) == WANT, names
            out.unlink()
            continue
        if "db.sqlite" in names:  # killed after its rename: the file is whole
            assert rows(out) == WANT, frac
            out.unlink()
            names.remove("db.sqlite")
        assert all(n.startswith(".db.sqlite.pitr-") for n in names), (frac, names)
        killed += 1
        left += len(names) > 0
    # Not vacuous: kills landed while restores ran, and some while the scratch existed.
    assert killed >= 3 and left >= 1, (killed, left)
    # The next restore removes what the dead ones left.
    p = start_restore(cairn_bin, archived, out)
    assert p.wait(timeout=deadline_seconds(120)) == 0, p.stderr.read()
    assert sorted(os.listdir(d)) == ["db.sqlite"]
    assert rows(out) == WANT


def test_two_restores_at_once_for_one_destination(cairn_bin, archived, tmp_path):
    out = tmp_path / "db.sqlite"
    ps = [start_restore(cairn_bin, archived, out, force=True) for _ in range(2)]
    for p in ps:
        assert p.wait(timeout=deadline_seconds(180)) == 0, p.stderr.read()
    assert sorted(os.listdir(tmp_path)) == ["db.sqlite"]
    assert rows(out) == WANT
    db = sqlite3.connect(str(out))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def pitr_scratch(data_dir):
    """What a RESTORE ... AS OF builds in the data directory: pitr-restore-N.db and
    its hidden scratch directory .pitr-restore-N.db.pitr-XXXXXX/."""
    return sorted(n for n in os.listdir(data_dir) if n.lstrip(".").startswith("pitr-restore-"))


@pytest.mark.parametrize("phase", ["replay", "keep"])
def test_a_node_killed_during_a_live_restore_as_of_leaves_no_scratch(server_factory, tmp_path,
                                                                     phase):
    """A live RESTORE ... AS OF builds the state in the data directory (the archive
    replayed onto a base in a hidden scratch directory, then the result kept as a full
    backup) before it swaps it in: a database as large as the node's. Killed with
    SIGKILL in either phase, the node removes what it left at its next start, and the
    restore then goes through."""
    import threading
    import http.client
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo, "--archive", "--archive-interval",
                                   "100ms"])
    wait_until(lambda: status(s)["archive"]["timeline"] or None, 30, "the archiver's timeline")
    s.execute(["CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)"])
    gen = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 256) "
           "INSERT INTO big(b) SELECT randomblob(65536) FROM c")
    for _ in range(2):  # 32 MiB
        body = s.execute([gen])
        assert "error" not in body["results"][0], body
    target = status(s)["store"]["applied_index"]
    body = s.execute(["DELETE FROM big WHERE id > 100"])
    assert "error" not in body["results"][0], body
    idx = status(s)["store"]["applied_index"]
    wait_until(lambda: status(s)["archive"]["head_index"] >= idx, 30, "the archive's upload")
    stmt = "RESTORE DATABASE FROM 'default' AS OF INDEX %d" % target

    def restore():
        try:
            s.raw("POST", "/db/execute", [stmt], timeout=120)
        except (OSError, http.client.HTTPException):
            pass  # the node is killed under it
    req = threading.Thread(target=restore, daemon=True)
    req.start()
    def in_phase():
        names = pitr_scratch(s.data_dir)
        if phase == "replay":
            return any(n.startswith(".") for n in names)
        return any(not n.startswith(".") for n in names)
    wait_until(in_phase, 60, "the restore's %s phase" % phase, interval=0.001)
    s.kill()
    req.join(30)
    left = pitr_scratch(s.data_dir)
    assert left, "the kill came after the restore ended: nothing to show"
    s.start()
    assert pitr_scratch(s.data_dir) == [], (left, pitr_scratch(s.data_dir))
    assert "temporary file" in s.stderr_text(), s.stderr_text()[-3000:]
    # The restore goes through now, and leaves nothing either.
    body = s.execute([stmt])
    assert "error" not in body["results"][0], body
    assert s.scalar("SELECT count(*) FROM big") == 512
    assert pitr_scratch(s.data_dir) == []
