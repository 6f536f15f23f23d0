"""A cluster's backups are one catalogue, whichever node took them (issue 15, point 3):
an incremental or differential backup taken after a failover chains to the backup the
old leader took, `GET /admin/backups` and `cairn backup list` on any node list every
backup of the cluster and where each is, and every backup restores, on any node, to
the database as it was at its index.

A backup's TO names a repository the node was configured with (issue 15, point 2)."""
import http.client
import json
import os
import re
import subprocess

import pytest

import backuputil
from conftest import assert_exec_ok, wait_until

pytestmark = pytest.mark.cluster


def table_state(node):
    """The table as the leader has it: every row, in order."""
    return node.rows("SELECT id, v FROM t ORDER BY id", level="strong")


def new_leader_after_kill(c, old):
    """kill -9 the leader, wait for another to lead, start the old one again (the
    cluster keeps its quorum for the next kill) and wait for it to catch up."""
    old.kill()
    survivors = [n for n in c.nodes if n is not old]
    leader = c.leader(among=survivors, timeout=30)
    assert leader is not old
    old.start()
    c.wait_converged()
    return leader


def test_chain_goes_on_across_failovers_and_every_backup_restores(make_cluster, tmp_path,
                                                                   cairn_bin):
    c = make_cluster(3)
    leader = c.leader()
    assert_exec_ok(leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(leader.execute([["INSERT INTO t(v) VALUES(?)", "base %d %s" % (i, "x" * 200)]
                                   for i in range(2000)], transaction=None))
    taken = []   # (entry, node that took it, rows at its index)
    entry = backuputil.admin_backup(leader, {"type": "full"})
    taken.append((entry, leader, table_state(leader)))
    for k in range(1, 6):
        leader = new_leader_after_kill(c, leader)
        assert_exec_ok(leader.execute([
            ["INSERT INTO t(v) VALUES(?)", "after failover %d" % k],
            ["UPDATE t SET v = ? WHERE id = ?", "changed %d" % k, 7 * k]]))
        entry = backuputil.admin_backup(leader, {"type": "incremental"})
        # The chain goes on from the previous backup, taken by another node.
        assert entry["parent_id"] == taken[-1][0]["id"], (k, entry, taken[-1][0])
        assert entry["source"] != taken[-1][0]["source"] or taken[-1][1] is leader, entry
        # Only what changed since then, not the database again.
        assert entry["pages"] * 10 < entry["page_count"], entry
        taken.append((entry, leader, table_state(leader)))

    # A differential after a failover takes the cluster's full backup as its parent.
    leader = new_leader_after_kill(c, leader)
    diff = backuputil.admin_backup(leader, {"type": "differential"})
    assert diff["parent_id"] == taken[0][0]["id"], diff
    taken.append((diff, leader, table_state(leader)))

    # Every node lists every backup of the cluster, and where each is.
    ids = [e["id"] for e, _, _ in taken]
    for n in c.nodes:
        doc = n.get_json("/admin/backups")
        assert doc["unreachable"] == [], doc
        listed = {e["id"]: e for e in doc["backups"]}
        assert set(ids) <= set(listed), (n.name, sorted(listed), ids)
        for e, took, _ in taken:
            assert took.id in listed[e["id"]]["nodes"], (e["id"], took.id, listed[e["id"]])
        # Oldest first, by Raft index.
        order = [listed[i]["raft_index"] for i in ids]
        assert order == sorted(order), order
        # The node's own repository alone, with ?local.
        own = n.get_json("/admin/backups?local")["backups"]
        assert {e["id"] for e in own} == {e["id"] for e in doc["backups"] if n.id in e["nodes"]}
        # A backup held elsewhere is shown by id too.
        for e, _, _ in taken:
            assert n.get_json("/admin/backups/%s" % e["id"])["backup"]["id"] == e["id"]

    # `cairn backup list` on a node says where each backup is.
    r = subprocess.run([str(cairn_bin), "--host", c.nodes[0].url, "backup", "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert "NODES" in r.stdout, r.stdout
    for i in ids:
        assert i in r.stdout, (i, r.stdout)

    # Each backup restores, on every node, to the table as it was at its index: into a
    # branch on a node that holds none of the chain's later files, and standalone from
    # the repository of the node that took it (which holds its whole chain).
    for j, (e, took, rows) in enumerate(taken):
        for n in c.nodes:
            branch = "b%d_%d" % (j, n.id)
            r = n.raw("POST", "/admin/restore?node=%d" % n.id, {"backup_id": e["id"], "branch": branch},
                      timeout=120)
            assert r.status == 200, (e["id"], n.name, r)
            assert r.json()["raft_index"] == e["raft_index"], r.json()
            # The branch is on node n: read it there (level none).
            body = n.query("SELECT id, v FROM t ORDER BY id", branch=branch, level="none")
            got = backuputil.only_result(body).get("values", [])
            assert got == rows, (j, n.name, len(got), len(rows))
        out = backuputil.cli_restore(cairn_bin, took.backup_dir, e["id"], tmp_path / ("r%d.db" % j))
        assert backuputil.file_rows(out, "SELECT id, v FROM t ORDER BY id") == rows
        assert backuputil.integrity(out) == [["ok"]]
        # Verification resolves the chain across the cluster too.
        r = c.nodes[j % 3].raw("POST", "/admin/backups/%s/verify" % e["id"], {})
        assert r.status == 200 and r.json()["ok"] is True, (e["id"], r)


def test_listing_says_which_nodes_did_not_answer(make_cluster):
    c = make_cluster(3)
    leader = c.leader()
    assert_exec_ok(leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    full = backuputil.admin_backup(leader, {"type": "full"})
    f1, f2 = c.followers(leader)
    f2.kill()
    doc = f1.get_json("/admin/backups")
    assert doc["unreachable"] == [f2.id], doc
    assert [e["id"] for e in doc["backups"]] == [full["id"]], doc
    assert doc["backups"][0]["nodes"] == [leader.id], doc
    # An incremental when the node holding the newest backup is down chains to what the
    # reachable nodes hold; with nothing there, it says which nodes did not answer.
    leader.kill()
    f2.start()
    new = c.leader(among=[f1, f2], timeout=30)
    r = new.raw("POST", "/admin/backup", {"type": "incremental"}, timeout=60)
    assert r.status == 404, r
    err = r.json()["error"]
    assert "no backup of the cluster" in err, err
    # The killed leader is among the nodes named; under load the node just restarted
    # may not answer the listing in time either, and is then named beside it.
    m = re.search(r"unreachable: nodes? ([0-9, ]+)", err)
    assert m and leader.id in [int(x) for x in m.group(1).split(",")], err
    leader.start()
    c.wait_converged()
    inc = backuputil.admin_backup(new, {"type": "incremental"})
    assert inc["parent_id"] == full["id"], inc


@pytest.mark.parametrize("how", ["sql", "http"])
def test_backup_goes_only_into_a_configured_repository(make_cluster, tmp_path, how):
    c = make_cluster(1)
    (s,) = c.nodes
    assert_exec_ok(s.execute(["CREATE TABLE t(v)", "INSERT INTO t VALUES(1)"]))
    elsewhere = tmp_path / "elsewhere" / "deep"

    def backup(to):
        if how == "sql":
            return s.post("/db/execute", ["BACKUP DATABASE FULL TO %s" % backuputil.sql_quote(to)])
        return s.raw("POST", "/admin/backup", {"type": "full", "to": to})

    for to in (str(elsewhere), "relative/dir", "/tmp", "../" + os.path.basename(str(s.backup_dir))):
        r = backup(to)
        body = r.json()
        err = body.get("error") or json.dumps(body)
        assert r.status == 400, (to, r)
        assert "not a repository of this node" in err and "default" in err and \
            str(s.backup_dir) in err, err
    assert not (tmp_path / "elsewhere").exists()
    assert not os.path.exists(os.path.join(os.getcwd(), "relative"))
    # By name, or by the configured path: into the repository, listed and restorable.
    for to in ("default", str(s.backup_dir), str(s.backup_dir) + "/./"):
        r = backup(to)
        assert r.status == 200, (to, r)
    listed = backuputil.admin_list(s)
    assert len(listed) == 3 and all(os.path.dirname(e["path"]) == str(s.backup_dir) for e in listed)
    for e in listed:
        res = backuputil.sql_result(s, "RESTORE DATABASE FROM %s TO BRANCH %s" % (
            backuputil.sql_quote(e["id"]), backuputil.sql_quote("x" + e["id"][-4:])))
        assert "error" not in res, res


def fetch_leftovers(root):
    """Files under root whose name says a download from a peer was cut off."""
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                  if ".fetch" in f)


def test_a_node_killed_while_fetching_a_backup_from_a_peer_leaves_no_download(make_cluster,
                                                                             tmp_path):
    """A node asked to restore a backup another node took fetches it (and its chain)
    into its own repository first. Killed with SIGKILL in the middle of that download,
    under writes: at its next start the partial download is gone from its repository,
    it catches up, the fetch then succeeds, and the replicas are the same."""
    import threading
    from clusterutil import ClusterWriters, assert_acked_present
    c = make_cluster(3)
    leader = c.leader()
    assert_exec_ok(leader.execute([
        "CREATE TABLE t(client INTEGER, seq INTEGER, pad BLOB, UNIQUE(client, seq))",
        "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)"]))
    gen = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 256) "
           "INSERT INTO big(b) SELECT randomblob(65536) FROM c")
    for _ in range(3):  # 48 MiB: a download that takes a while
        assert_exec_ok(leader.execute([gen], timeout=120))
    entry = backuputil.admin_backup(leader, {"type": "full"})
    node = [n for n in c.nodes if n is not leader][0]
    assert not os.path.exists(os.path.join(node.backup_dir, entry["id"] + ".cbk"))

    w = ClusterWriters(c.nodes, clients=8).start()
    try:
        w.wait_more(50)
        def restore():
            try:
                node.raw("POST", "/admin/restore?node=%d" % node.id,
                         {"backup_id": entry["id"], "branch": "b1"}, timeout=120)
            except (OSError, http.client.HTTPException):
                pass  # the node is killed under it
        req = threading.Thread(target=restore, daemon=True)
        req.start()
        wait_until(lambda: fetch_leftovers(node.backup_dir), 60,
                   "%s to start downloading backup %s" % (node.name, entry["id"]),
                   interval=0.001)
        node.kill()
        req.join(30)
        left = fetch_leftovers(node.backup_dir)
        assert left, "the kill came after the download ended: nothing to show"
        node.start()
        node.wait_ready(timeout=60)
        # Swept at the start after the kill, before anything else runs on the node.
        assert fetch_leftovers(node.backup_dir) == [], fetch_leftovers(node.backup_dir)
        assert fetch_leftovers(node.data_dir) == [], fetch_leftovers(node.data_dir)
        w.wait_more(50)
    finally:
        w.stopping.set()
    acked = w.stop()
    # The download goes through now, and the branch is the backup's state.
    r = node.raw("POST", "/admin/restore?node=%d" % node.id,
                 {"backup_id": entry["id"], "branch": "b2"}, timeout=120)
    assert r.status == 200, r
    assert r.json()["raft_index"] == entry["raft_index"], r.json()
    body = node.query("SELECT count(*) FROM big", branch="b2", level="none")
    assert backuputil.only_result(body)["values"] == [[768]], body
    assert fetch_leftovers(node.backup_dir) == []
    c.wait_converged()
    c.assert_same_rows("t", order="client, seq")
    for n in c.nodes:
        assert_acked_present(n, "t", acked, "after the kill during a fetch")
    c.stop_all()
    c.assert_same_pages(c.nodes, tmp_path / "pages")
