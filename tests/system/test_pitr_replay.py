"""What a point-in-time restore's replay undoes, it undoes as the node did (issue 18).

The replay applies the archived entries with storeApply in groups, on a scratch file
in rollback-journal mode (store.h STORE_OPEN_SCRATCH: no WAL, no sync until the end).
Entries that undo part of their work must come out as they did on the node: a
statement that fails (its savepoint rolled back, the batch goes on), a transaction
batch that fails (the whole entry rolled back), a statement whose conflict clause rolls
the transaction back (the whole group is rolled back and its entries applied again one
at a time), and a failing transaction after an update of many pages (the journal
restores them all). The restored rows, at the archive's head and at indexes in the
middle of the groups, are the node's at those indexes; the file stands alone
(rollback-journal mode, nothing beside it) and passes SQLite's integrity check.
"""
import os
import sqlite3
import subprocess

import pytest

from conftest import ServerFactory, deadline_seconds, wait_until

COLS = "SELECT k, v, n FROM t ORDER BY k"


def status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


def node_rows(node):
    body = node.query(COLS, level="strong")
    return [tuple(r) for r in body["results"][0].get("values") or []]


def file_rows(path):
    db = sqlite3.connect(str(path))
    try:
        return db.execute(COLS).fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def archived(tmp_path_factory, cairnd_bin):
    """A repository whose archive holds every kind of rollback, and the node's rows at
    the index after each of them: {index: rows}, the head's under "head"."""
    tmp = tmp_path_factory.mktemp("pitr-replay")
    repo = tmp / "repo"
    factory = ServerFactory(tmp)
    s = factory(extra_args=["--backup-dir", repo, "--archive", "--archive-interval", "100ms"])
    wait_until(lambda: status(s)["archive"]["timeline"] or None, 30, "the archiver's timeline")
    s.execute(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE, n INTEGER)"])
    points = {}

    def mark():
        points[status(s)["store"]["applied_index"]] = node_rows(s)

    def fill(a, b):
        for k in range(a, b):
            body = s.execute([["INSERT INTO t VALUES(?, ?, ?)", k, "v%d" % k, k]])
            assert "error" not in body["results"][0], body

    fill(0, 200)
    # A statement fails: its savepoint is rolled back, the statements around it stay.
    body = s.execute([["INSERT INTO t VALUES(?, ?, ?)", 1000, "a", 1],
                      ["INSERT INTO t VALUES(?, ?, ?)", 1001, "v3", 1],
                      ["INSERT INTO t VALUES(?, ?, ?)", 1002, "b", 1]])
    assert "error" in body["results"][1] and "error" not in body["results"][2], body
    mark()
    fill(200, 260)
    # A transaction batch fails: nothing of it stays.
    body = s.execute([["INSERT INTO t VALUES(?, ?, ?)", 1003, "c", 1],
                      ["INSERT INTO t VALUES(?, ?, ?)", 1004, "v5", 1]], transaction=True)
    assert any("error" in r for r in body["results"]), body
    mark()
    fill(260, 320)
    # ON CONFLICT ROLLBACK: the statement rolls back the transaction it runs in, which
    # in a grouped replay holds the entries before it.
    body = s.execute([["INSERT INTO t VALUES(?, ?, ?)", 1005, "d", 1],
                      ["INSERT OR ROLLBACK INTO t VALUES(?, ?, ?)", 1006, "v7", 1]])
    assert "error" in body["results"][1], body
    mark()
    fill(320, 380)
    # Many pages changed, then the transaction fails: all of them restored.
    body = s.execute([["UPDATE t SET n = n + 1000000, v = v || '-long-enough-to-move-cells'"],
                      ["INSERT INTO t VALUES(?, ?, ?)", 0, "dup", 1]], transaction=True)
    assert any("error" in r for r in body["results"]), body
    mark()
    fill(380, 440)
    body = s.execute([["UPDATE t SET n = n + 1 WHERE k % 3 = 0"]])
    assert "error" not in body["results"][0], body
    fill(440, 460)
    mark()
    head = status(s)["store"]["applied_index"]
    points["head"] = points[head]
    wait_until(lambda: status(s)["archive"]["head_index"] >= head, 30, "the archive's upload")
    s.stop()
    yield repo, points
    problems = factory.teardown()
    assert not problems, problems


def restore(cairn_bin, repo, out, *target):
    p = subprocess.run([str(cairn_bin), "restore", "--repo", str(repo), "--out", str(out)] +
                       list(target), capture_output=True, text=True,
                       timeout=deadline_seconds(120))
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(out.parent))
    assert names == [out.name], names  # no journal, WAL or scratch left beside it
    db = sqlite3.connect(str(out))
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_replay_rolls_back_as_the_node_did(cairn_bin, archived, tmp_path):
    repo, points = archived
    out = tmp_path / "latest" / "db.sqlite"
    out.parent.mkdir()
    restore(cairn_bin, repo, out, "latest")
    assert file_rows(out) == points["head"]
    for index in sorted(k for k in points if k != "head"):
        out = tmp_path / ("at-%d" % index) / "db.sqlite"
        out.parent.mkdir()
        restore(cairn_bin, repo, out, "--to-index", str(index))
        assert file_rows(out) == points[index], index
