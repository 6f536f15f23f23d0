"""A standalone backup (`cairn backup create --db FILE --repo DIR`, the backup engine in
the cairn process, no server) into the repository a cairnd archives into.

Backups record a Raft index and a history (the cluster id: cbk header bytes 376 and
400, docs/FORMAT.md) that a point-in-time restore uses to choose the base backup of a
replay. A standalone backup of a node's own database (DATA/db.sqlite, read while the
node runs) recorded index 0 and no history, so it could serve as the base of the
timeline that starts at index 1, although it holds the state of a much later index.
Now it records the index its image holds (the _cairn_meta row that the node writes in
each entry's transaction, read from the very snapshot it backs up) and the cluster id
(DATA/cluster-id, which also tells a node's file from a copy of it elsewhere); a backup
of any other file records index 0 and no history, and such a backup is never a base. Waiting is a poll with a deadline.
"""
import json
import sqlite3

from backuputil import DirRepo
from test_archive import cairn, status, wait_archived, wait_archiving

ARCHIVE_ARGS = ["--archive", "--archive-interval", "100ms"]
COLS = "SELECT id, v FROM t ORDER BY id"


def rows_of(node):
    body = node.query(COLS, level="strong")
    return [tuple(v) for v in body["results"][0].get("values", [])]


def file_rows(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [tuple(v) for v in db.execute(COLS)]
    finally:
        db.close()


def write(node, i):
    body = node.execute(["INSERT INTO t(v) VALUES(%d)" % i])
    assert "error" not in body["results"][0], body
    return status(node)["store"]["applied_index"]


def rows_at(at, index):
    """The rows at a log index: those after the last write at or before it."""
    return at[max(k for k in at if k <= index)]


def catalog(cairn_bin, repo):
    r = cairn(cairn_bin, ["backup", "list"] + repo.cli_args() + ["--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    return doc if isinstance(doc, list) else doc["backups"]


def standalone(cairn_bin, repo, db):
    r = cairn(cairn_bin, ["backup", "create", "--db", db] + repo.cli_args() + ["--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_standalone_backup_of_a_node_records_its_index_and_history_and_is_never_a_wrong_base(
        server_factory, cairn_bin, tmp_path):
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    at = {}  # applied index -> rows after that write
    for i in range(5):
        k = write(s, i)
        at[k] = rows_of(s)
    cluster_id = s.get_json("/status")["node"]["cluster_id"]
    assert cluster_id, s.get_json("/status")["node"]
    first = catalog(cairn_bin, repo)
    assert len(first) == 1 and first[0]["source"].startswith("cairnd:"), first
    server_base = first[0]

    # The node's own file, read while it runs (WAL mode): the index its image holds.
    before = status(s)["store"]["applied_index"]
    mid = standalone(cairn_bin, repo, s.data_dir / "db.sqlite")
    after = status(s)["store"]["applied_index"]
    assert 0 < before <= mid["raft_index"] <= after, (mid, before, after)
    node_index = mid["raft_index"]
    assert mid["history"] == cluster_id, (mid, cluster_id)
    assert mid["source"] == str((s.data_dir / "db.sqlite").resolve()), mid
    # Its image is the state at that index: the rows of the last write at or before it.
    whole = tmp_path / "whole.sqlite"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", whole, mid["id"]])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert file_rows(whole) == rows_at(at, node_index)

    # A plain SQLite file: the state of no Raft log.
    plain = tmp_path / "plain.sqlite"
    db = sqlite3.connect(str(plain))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    db.executemany("INSERT INTO t(v) VALUES(?)", [(1000 + i,) for i in range(50)])
    db.commit()
    db.close()
    foreign = standalone(cairn_bin, repo, plain)
    assert foreign["raft_index"] == 0 and foreign["history"] is None, foreign

    # The node's file copied elsewhere (its _cairn_meta along) and changed by SQLite
    # alone, which keeps no page checksums: no node's database any more (no cluster-id
    # beside it), so index 0 and no history, and backed up as it is, not refused as
    # damaged.
    copy = tmp_path / "copy.sqlite"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", copy, "--keep-internal",
                                                          mid["id"]])
    assert r.returncode == 0, (r.stdout, r.stderr)
    db = sqlite3.connect(str(copy))
    assert db.execute("SELECT count(*) FROM _cairn_meta WHERE key = 'applied_index'").fetchone() == (1,)
    db.execute("INSERT INTO t(v) VALUES(randomblob(3000))")
    db.commit()
    db.close()
    copied = standalone(cairn_bin, repo, copy)
    assert copied["raft_index"] == 0 and copied["history"] is None, copied

    for i in range(5, 10):
        k = write(s, i)
        at[k] = rows_of(s)
    head = max(at)
    wait_archived(s, head)

    listed = {e["id"]: e for e in catalog(cairn_bin, repo)}
    assert listed[mid["id"]]["raft_index"] == node_index, listed[mid["id"]]
    assert listed[mid["id"]]["history"] == cluster_id, listed[mid["id"]]
    assert listed[foreign["id"]]["raft_index"] == 0, listed[foreign["id"]]
    assert listed[foreign["id"]]["history"] is None, listed[foreign["id"]]
    assert listed[copied["id"]]["raft_index"] == 0, listed[copied["id"]]

    # The archive's one timeline starts on the server's first backup; its bases are that
    # backup and the standalone backup of the node, never the plain file's.
    r = cairn(cairn_bin, ["archive", "list"] + repo.cli_args() + ["--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    tls = json.loads(r.stdout)["timelines"]
    assert len(tls) == 1, tls
    assert tls[0]["restorable"]["bases"] == 2, tls

    # A target after the standalone backup replays onto it (the newest base at or before
    # the target): the node's rows at that index.
    out = tmp_path / "out.sqlite"
    target = [k for k in sorted(at) if k > node_index][1]
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() +
              ["--out", out, "--force", "--to-index", target, "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["base"] == {"id": mid["id"], "index": node_index}, r.stdout
    assert file_rows(out) == at[target], (r.stdout, target, node_index)
    # A target before it replays from the server's base.
    early = min(at)
    assert early < node_index
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() +
              ["--out", out, "--force", "--to-index", early, "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["base"]["id"] == server_base["id"], r.stdout
    assert file_rows(out) == at[early]

    # Without the server's base, an early target has no base: a refusal, never a replay
    # from index 1 onto the plain file (or onto the node's later state).
    repo.delete(repo.name_of(server_base["path"]))
    out.unlink()
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--to-index", early])
    assert r.returncode != 0, (r.stdout, r.stderr, file_rows(out) if out.exists() else None)
    assert "no backup" in r.stderr or "cannot be restored" in r.stderr, r.stderr
    assert not out.exists()
    r = cairn(cairn_bin, ["archive", "list"] + repo.cli_args() + ["--json"])
    tls = json.loads(r.stdout)["timelines"]
    assert tls[0]["restorable"]["bases"] == 1, tls
    assert tls[0]["restorable"]["oldest_base"] == mid["id"], tls
    # The standalone backup is a base in its own right, at its own index.
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() +
              ["--out", out, "--to-index", node_index, "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["base"]["id"] == mid["id"], r.stdout
    assert file_rows(out) == rows_at(at, node_index)


def test_a_damaged_cluster_id_beside_the_file_fails_the_backup(server_factory, cairn_bin,
                                                               tmp_path):
    """A node's data directory whose DATA/cluster-id is damaged (a NUL, too short, not
    hex): the standalone backup of its database fails naming that file, as cairnd
    refuses to start on it, and writes nothing into the repository."""
    s = server_factory()
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    write(s, 1)
    assert s.stop() == 0
    repo = DirRepo(tmp_path / "repo")
    for bad in (b"\x00" * 33, b"abc\n", b"z" * 32 + b"\n", b""):
        (s.data_dir / "cluster-id").write_bytes(bad)
        r = cairn(cairn_bin, ["backup", "create", "--db", s.data_dir / "db.sqlite"] +
                  repo.cli_args() + ["--json"])
        assert r.returncode != 0, (bad, r.stdout, r.stderr)
        assert "cluster-id" in r.stderr, (bad, r.stderr)
        assert not repo.path.exists() or repo.names() == [], (bad, repo.names())
