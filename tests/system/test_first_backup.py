"""The first backup into a repository: an incremental or differential backup with nothing
to chain to is taken whole, as a full backup, and says so (the entry's type, the
answer row, the log), on a single node, in a cluster and from the CLI. In a cluster
whose nodes do not all answer, an unreachable node may hold the parent: the backup is
refused then, naming it, and nothing is written."""
import json
import os
import subprocess

import pytest

import backuputil
from conftest import assert_exec_ok


def sql_backup(node, kind):
    """BACKUP DATABASE <kind>: the answer row as a dict, or the failed answer."""
    r = node.post("/db/execute", ["BACKUP DATABASE " + kind.upper()])
    body = r.json()
    if r.status != 200 or "error" in body.get("results", [{}])[0] or "error" in body:
        return r
    res = body["results"][0]
    return dict(zip(res["columns"], res["values"][0]))


def fill(node, tag, n=200):
    assert_exec_ok(node.execute(
        [["INSERT INTO t(v) VALUES(?)", "%s %d %s" % (tag, i, "x" * 100)] for i in range(n)],
        transaction=None))


@pytest.mark.parametrize("kind", ["incremental", "differential"])
def test_first_incremental_or_differential_is_taken_whole(server, kind):
    assert_exec_ok(server.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    fill(server, "first")
    row = sql_backup(server, kind)
    assert isinstance(row, dict), row.json()
    assert row["type"] == "full" and row["parent_id"] is None, row
    entry = backuputil.admin_entry(server, row["backup_id"])
    assert entry["type"] == "full" and entry["pages"] == entry["page_count"], entry
    assert ("%s backup %s: repository 'default' holds no %sbackup of the database to chain "
            "to: taken as a full backup" % (kind, row["backup_id"],
                                            "full " if kind == "differential" else "")
            ) in server.stderr_text()

    # The next one chains to it, storing only what changed.
    fill(server, "second", 20)
    nxt = sql_backup(server, kind)
    assert isinstance(nxt, dict), nxt.json()
    assert nxt["type"] == kind and nxt["parent_id"] == row["backup_id"], nxt
    assert nxt["pages"] < entry["page_count"], nxt
    want = server.rows("SELECT id, v FROM t ORDER BY id")
    res = backuputil.sql_result(server, "RESTORE DATABASE FROM %s TO BRANCH b1" %
                                backuputil.sql_quote(nxt["backup_id"]))
    assert "error" not in res, res
    got = server.query("SELECT id, v FROM t ORDER BY id", branch="b1")["results"][0]["values"]
    assert got == want


def test_first_standalone_incremental_is_taken_whole(cairn_bin, tmp_path):
    import sqlite3
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t(v) VALUES(?)", [("row %d" % i,) for i in range(500)])
    con.commit()
    con.close()
    repo = tmp_path / "repo"

    def create():
        p = subprocess.run([str(cairn_bin), "backup", "create", "--db", str(db), "--repo",
                            str(repo), "--type", "incremental", "--json"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    first = create()
    assert first["type"] == "full" and first["parent_id"] is None, first
    second = create()
    assert second["type"] == "incremental" and second["parent_id"] == first["id"], second
    out = tmp_path / "restored.db"
    backuputil.cli_restore(cairn_bin, repo, second["id"], out)
    assert backuputil.file_rows(out, "SELECT id, v FROM t ORDER BY id") == \
        backuputil.file_rows(db, "SELECT id, v FROM t ORDER BY id")


@pytest.mark.cluster
def test_first_incremental_in_a_cluster(make_cluster):
    c = make_cluster(3)
    leader = c.leader()
    # Ready means its address is in the cluster's directory: the leader reaches every
    # node's repository from the start.
    doc = leader.get_json("/admin/backups")
    assert doc["unreachable"] == [] and doc["backups"] == [], doc
    assert_exec_ok(leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    fill(leader, "first")
    c.wait_converged()

    # A node down: it may hold the parent, so the backup is refused, naming it, and no
    # node's repository gets a file.
    down = c.followers(leader)[0]
    down.stop()
    r = sql_backup(leader, "incremental")
    assert not isinstance(r, dict), r
    err = json.dumps(r.json())
    assert "unreachable: node %d" % down.id in err and "to base the incremental backup on" \
        in err, err
    for n in c.nodes:
        d = n.backup_dir
        assert not os.path.exists(d) or not [f for f in os.listdir(d) if f.endswith(".cbk")], \
            n.name

    # Every node answers and none holds a backup: taken whole.
    down.start()
    c.wait_converged()
    row = sql_backup(leader, "incremental")
    assert isinstance(row, dict), row.json()
    assert row["type"] == "full" and row["parent_id"] is None, row
    fill(leader, "second", 20)
    nxt = sql_backup(leader, "incremental")
    assert isinstance(nxt, dict), nxt.json()
    assert nxt["type"] == "incremental" and nxt["parent_id"] == row["backup_id"], nxt
