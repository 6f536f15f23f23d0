"""cairnd --restore-from DIR[#ID]: a node whose database is empty restores a backup of a
repository before it serves (issue 16's restore on boot, for repository directories):
the newest backup by default, or the one named; on a node with data it does nothing and
says so; bad input is refused at the start with a message naming what is wrong."""
import pytest

from backuputil import admin_backup, admin_list
from conftest import assert_exec_ok


def rows(s):
    return s.rows("SELECT id, v FROM t ORDER BY id")


@pytest.fixture
def source(server_factory):
    """A server with a full and an incremental backup, stopped: (repository, full entry,
    rows at the full, incremental entry, rows at the incremental)."""
    a = server_factory()
    assert_exec_ok(a.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                             ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(200)]))
    full = admin_backup(a, {"type": "full"})
    at_full = rows(a)
    assert_exec_ok(a.execute(["UPDATE t SET v = 'changed' WHERE id % 7 = 0",
                              "INSERT INTO t(v) VALUES('late')"]))
    inc = admin_backup(a, {"type": "incremental"})
    at_inc = rows(a)
    repo = a.data_dir.parent / "backups"
    assert a.stop() == 0
    return repo, full, at_full, inc, at_inc


def test_empty_node_restores_the_newest_backup_then_serves(server_factory, source):
    repo, full, at_full, inc, at_inc = source
    b = server_factory(extra_args=["--restore-from", repo])
    assert rows(b) == at_inc
    assert "restored backup %s" % inc["id"] in b.stderr_text()
    # The chain is now in the node's own repository: listed, verifiable, restorable.
    assert {e["id"] for e in admin_list(b)} >= {full["id"], inc["id"]}
    r = b.raw("POST", "/admin/backups/%s/verify" % inc["id"], {})
    assert r.status == 200 and r.json()["ok"] is True, r
    # Writes go on; a restart with the same flag restores nothing over them.
    assert_exec_ok(b.execute(["INSERT INTO t(v) VALUES('after the restore')"]))
    b.restart()
    assert rows(b)[-1][1] == "after the restore" and len(rows(b)) == len(at_inc) + 1
    assert "nothing restored" in b.stderr_text()


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_named_backup_is_restored(server_factory, source, form):
    repo, full, at_full, inc, at_inc = source
    spec = ("%s#%s" if form == "path" else "file://%s#%s") % (repo, full["id"])
    b = server_factory(extra_args=["--restore-from", spec])
    assert rows(b) == at_full


@pytest.mark.parametrize("spec,words", [
    ("{missing}", ["does not exist"]),
    ("{repo}#20990101T000000000Z-0000-dead", ["20990101T000000000Z-0000-dead"]),
    ("{repo}#", ["backup id"]),
    ("s3://", ["bucket"]),
    ("file://host/dir", ["file:///DIR"]),
    ("{empty}", ["no readable backup"]),
])
def test_bad_restore_from_stops_the_start_with_a_message(server_factory, source, tmp_path,
                                                         spec, words):
    repo = source[0]
    (tmp_path / "empty").mkdir()
    spec = spec.format(repo=repo, missing=tmp_path / "missing", empty=tmp_path / "empty")
    b = server_factory(extra_args=["--restore-from", spec], start=False)
    b.start(wait=False)
    assert b.wait_exit(30) != 0
    err = b.stderr_text()
    assert all(w in err for w in words), err
    # Nothing is served from a half-started node, and a start without the flag works.
    b.extra_args = []
    b.start()
    assert "no such table" in b.query("SELECT * FROM t")["results"][0]["error"]


def test_restore_from_refuses_a_cluster_member(server_factory, source):
    repo = source[0]
    b = server_factory(extra_args=["--restore-from", repo, "--join", "127.0.0.1:1"],
                       start=False)
    b.start(wait=False)
    assert b.wait_exit(30) != 0
    assert "starts alone" in b.stderr_text()
