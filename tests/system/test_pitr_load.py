"""What a backup kept by POST /db/load records, and point-in-time restores across a
load (docs/OPERATIONS.md, "Continuous archive"; docs/FORMAT.md, the history at 400).

A load keeps the uploaded file as a full backup and restores it through the log (a
PREPARE entry, then the swap entry at index S). Its pages are the state of the log at S,
which is not known when the backup is written (the entries name it), so the backup
records index 0 and no history: it is never the base of a replay. It recorded the
node's applied index before the PREPARE entry with no history, which a repository of
one history takes as a base at that index: a restore to an index between it and S then
gave the loaded rows instead of the rows the node had. Single node, archiving into a
directory; waiting is a poll with a deadline.
"""
import json
import sqlite3

import pytest

from backuputil import DirRepo, sql_quote
from test_archive import cairn, status, wait_archived, wait_archiving

ARCHIVE_ARGS = ["--archive", "--archive-interval", "100ms"]
ROWS = "SELECT id, v FROM t ORDER BY id"


def rows_of(node):
    body = node.query(ROWS, level="strong")
    res = body["results"][0]
    if res.get("error") == "no such table: t":
        return None  # a restore of the backup taken before it
    assert "error" not in res, res
    return [tuple(v) for v in res.get("values", [])]


def file_rows(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_schema WHERE name = 't'").fetchall():
            return None
        return [tuple(v) for v in db.execute(ROWS)]
    finally:
        db.close()


def write(node, sql, hist):
    body = node.execute([sql])
    assert "error" not in body["results"][0], (sql, body)
    hist.append((status(node)["store"]["applied_index"], rows_of(node)))


def at_index(hist, idx):
    found = [rows for i, rows in hist if i <= idx]
    assert found, idx
    return found[-1]


@pytest.mark.parametrize("kind", ["plain", "meta"])
def test_pitr_across_a_db_load(server_factory, tmp_path, cairn_bin, kind):
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    cid = s.get_json("/status")["node"]["cluster_id"]
    hist = []
    write(s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", hist)
    for i in range(1, 6):
        write(s, "INSERT INTO t(id, v) VALUES(%d, 'before-%d')" % (i, i), hist)
    before_load = hist[-1][0]

    # The file to load: other rows, same table. "plain": a file of sqlite3's; "meta":
    # one that also carries cairn's _cairn_meta at the node's applied index (as an export
    # of a node edited offline, or of another node, may), the index the load's backup
    # recorded: a replay took it as the state there and gave the loaded rows.
    image = tmp_path / "upload.db"
    db = sqlite3.connect(str(image))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    if kind == "meta":
        db.execute("CREATE TABLE _cairn_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
                   "WITHOUT ROWID")
        db.execute("INSERT INTO _cairn_meta VALUES('applied_index', ?)", (before_load,))
    db.executemany("INSERT INTO t(id, v) VALUES(?, ?)", [(100 + i, "loaded-%d" % i)
                                                        for i in range(10)])
    db.commit()
    db.close()
    r = s.raw("POST", "/db/load", image.read_bytes(),
              headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status == 200, r
    doc = r.json()
    swap = doc["raft_index"]
    loaded = doc["loaded"]
    assert swap > before_load + 1, (swap, before_load)  # the PREPARE entry is between
    hist.append((status(s)["store"]["applied_index"], rows_of(s)))
    assert hist[-1][1] == [(100 + i, "loaded-%d" % i) for i in range(10)]
    for i in range(6, 9):
        write(s, "INSERT INTO t(id, v) VALUES(%d, 'after-%d')" % (i, i), hist)
    head = wait_archived(s, hist[-1][0])["head_index"]

    # What the kept backup records: index 0, no history (its pages are the state at the
    # swap entry, which the backup cannot name). The node's own backups record the
    # cluster's id.
    listed = {b["id"]: b for b in s.get_json("/admin/backups")["backups"]}
    kept = listed[loaded["id"]]
    assert (loaded["raft_index"], loaded["history"]) == (0, None), loaded
    assert (kept["raft_index"], kept["history"]) == (0, None), kept
    others = [b for i, b in listed.items() if i != loaded["id"]]
    assert others and all(b["history"] == cid for b in others), (cid, others)

    # Every index from before the load to past it: the rows the node had then. Before
    # the fix the load's backup was a base at `before_load`, and the indexes up to the
    # swap gave the loaded rows.
    out = tmp_path / "pitr.db"
    for idx in list(range(before_load - 1, swap + 2)) + [head]:
        p = cairn(cairn_bin, ["restore", "--repo", repo.url, "--out", out, "--force",
                              "--to-index", idx])
        assert p.returncode == 0, (idx, p.stdout, p.stderr)
        assert file_rows(out) == at_index(hist, idx), ("index %d (load swapped at %d)"
                                                       % (idx, swap), p.stdout)
    # The same through the server, into a branch.
    row = s.execute(["RESTORE DATABASE FROM 'default' TO BRANCH b AS OF INDEX %d"
                     % (swap - 1)])["results"][0]
    assert "error" not in row, row
    body = s.query(ROWS, branch="b")["results"][0]
    assert [tuple(v) for v in body.get("values", [])] == at_index(hist, swap - 1), body

    # A live restore AS OF an index of this node's own archive keeps a backup that is
    # the state of this log at that index: it records that index and the cluster's id
    # (a true base there). A RESTORE of a backup by id keeps none.
    ids = set(listed)
    res = s.execute(["RESTORE DATABASE FROM %s" % sql_quote(others[0]["id"])])["results"][0]
    assert "error" not in res, res
    hist.append((status(s)["store"]["applied_index"], rows_of(s)))
    assert {b["id"] for b in s.get_json("/admin/backups")["backups"]} == ids
    res = s.execute(["RESTORE DATABASE FROM 'default' AS OF INDEX %d" % before_load])
    row = dict(zip(res["results"][0]["columns"], res["results"][0]["values"][0]))
    assert row["as_of_index"] == before_load and row["kept_as"], row
    hist.append((status(s)["store"]["applied_index"], rows_of(s)))
    assert hist[-1][1] == at_index(hist, before_load)
    write(s, "INSERT INTO t(id, v) VALUES(9, 'after-9')", hist)
    head2 = wait_archived(s, hist[-1][0])["head_index"]
    kept2 = {b["id"]: b for b in s.get_json("/admin/backups")["backups"]}[row["kept_as"]]
    assert (kept2["raft_index"], kept2["history"]) == (before_load, cid), kept2
    for idx in range(head + 1, head2 + 1):
        p = cairn(cairn_bin, ["restore", "--repo", repo.url, "--out", out, "--force",
                              "--to-index", idx])
        assert p.returncode == 0, (idx, p.stdout, p.stderr)
        assert file_rows(out) == at_index(hist, idx), ("index %d" % idx, p.stdout)


def test_restore_as_of_another_nodes_backup_keeps_its_history_and_is_no_base_here(
        server_factory, tmp_path, cairn_bin):
    """RESTORE ... AS OF 'latest' from a repository whose newest backup is another
    node's (a standalone backup of its DATA/db.sqlite, beside its DATA/cluster-id): the
    backup this node keeps records that node's index and history, so in this node's
    repository (one history, its own) it is no base of its timelines, and a
    point-in-time restore of this node across the restore gives its rows at every
    index. (A backup recording the other log's index with no history, as earlier builds
    wrote for such files, was taken for a base at that index, replaying this node's
    entries onto the other database's rows; one recording no history is now kept as
    index 0 and no history.)"""
    other = server_factory()
    other.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])
    for i in range(1, 4):
        other.execute(["INSERT INTO t(id, v) VALUES(%d, 'other-%d')" % (50 + i, i)])
    other_index = status(other)["store"]["applied_index"]
    other_cid = other.get_json("/status")["node"]["cluster_id"]
    assert other_cid
    assert other.stop() == 0
    far = DirRepo(tmp_path / "far")
    p = cairn(cairn_bin, ["backup", "create", "--db", other.data_dir / "db.sqlite", "--repo",
                          far.url, "--json"])
    assert p.returncode == 0, (p.stdout, p.stderr)
    far_backup = json.loads(p.stdout)
    assert (far_backup["raft_index"], far_backup["history"]) == (other_index, other_cid), \
        far_backup

    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    hist = []
    write(s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", hist)
    for i in range(1, 6):
        write(s, "INSERT INTO t(id, v) VALUES(%d, 'mine-%d')" % (i, i), hist)
    assert hist[-1][0] > other_index + 1, (hist, other_index)
    body = s.execute(["RESTORE DATABASE FROM '%s' AS OF 'latest'" % far.url])
    row = dict(zip(body["results"][0]["columns"], body["results"][0]["values"][0]))
    assert row["backup_id"] == far_backup["id"] and row["kept_as"], row
    hist.append((status(s)["store"]["applied_index"], rows_of(s)))
    assert hist[-1][1] == [(50 + i, "other-%d" % i) for i in range(1, 4)]
    swap = row["raft_index"]
    for i in range(6, 9):
        write(s, "INSERT INTO t(id, v) VALUES(%d, 'mine-%d')" % (i, i), hist)
    head = wait_archived(s, hist[-1][0])["head_index"]

    kept = {b["id"]: b for b in s.get_json("/admin/backups")["backups"]}[row["kept_as"]]
    assert (kept["raft_index"], kept["history"]) == (other_index, other_cid), kept
    assert other_cid != s.get_json("/status")["node"]["cluster_id"]

    out = tmp_path / "pitr.db"
    for idx in list(range(hist[0][0], swap + 2)) + [head]:
        p = cairn(cairn_bin, ["restore", "--repo", repo.url, "--out", out, "--force",
                              "--to-index", idx])
        assert p.returncode == 0, (idx, p.stdout, p.stderr)
        assert file_rows(out) == at_index(hist, idx), ("index %d (restore swapped at %d)"
                                                       % (idx, swap), p.stdout)


def test_restore_as_of_latest_from_plain_file_backups_takes_the_newest(server_factory, tmp_path,
                                                                       cairn_bin):
    """RESTORE ... AS OF 'latest' from a repository with no archive, whose backups are all
    of a plain SQLite file (index 0, no history: the state of no log): the newest backup,
    as `cairn restore --repo DIR latest` takes it. It answered "nothing to restore: the
    repository holds no archive"."""
    plain = tmp_path / "plain.db"
    db = sqlite3.connect(str(plain))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO t(id, v) VALUES(1, 'first')")
    db.commit()
    far = DirRepo(tmp_path / "far")
    ids = []
    for kind, row in (("full", None), ("incremental", (2, "second")), ("incremental", (3, "third"))):
        if row is not None:
            db.execute("INSERT INTO t(id, v) VALUES(?, ?)", row)
            db.commit()
        p = cairn(cairn_bin, ["backup", "create", "--db", plain, "--repo", far.url, "--type", kind,
                              "--json"])
        assert p.returncode == 0, (p.stdout, p.stderr)
        b = json.loads(p.stdout)
        assert (b["raft_index"], b["history"]) == (0, None), b
        ids.append(b["id"])
    db.close()
    want = file_rows(plain)

    s = server_factory(extra_args=["--backup-dir", str(tmp_path / "repo")])
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])
    body = s.execute(["RESTORE DATABASE FROM %s AS OF 'latest'" % sql_quote(far.url)])
    res = body["results"][0]
    assert "error" not in res, res
    row = dict(zip(res["columns"], res["values"][0]))
    assert row["backup_id"] == ids[-1], (row, ids)
    assert rows_of(s) == want
    kept = {b["id"]: b for b in s.get_json("/admin/backups")["backups"]}[row["kept_as"]]
    assert (kept["raft_index"], kept["history"]) == (0, None), kept
