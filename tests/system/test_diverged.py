"""A node that knows its database differs from the cluster's never serves it.

Before: a follower that was stopped during a live RESTORE and came back after the backup
was gone logged "this node's database no longer matches the cluster's", then went on
applying the entries after it, answered 200 on /readyz, served its own rows, and
`cairn check` (online and offline) said healthy; a backup taken on it spread them. Now
it stops at the RESTORE entry, keeps asking the cluster for the backup, says why on
/readyz, /status, every read and every backup, and both checks fail; once a peer has
the backup again it applies it and catches up by itself.
"""
import json
import os
import shutil
import subprocess

import backuputil
from conftest import deadline_seconds, wait_until
from test_cluster import cluster_factory, ok_results, post  # noqa: F401 - fixture


def run_cli(cairn_bin, *args):
    p = subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_follower_lacking_a_restored_backup_stops_and_says_so(cluster_factory, cairn_bin,
                                                             tmp_path):
    c = cluster_factory(3)
    leader = c.leader()
    f, other = c.followers(leader)
    ok_results(post(leader, "/db/execute", ["CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)"]),
               "CREATE")
    ok_results(post(leader, "/db/execute?transaction",
                    [["INSERT INTO r(v) VALUES(?)", "kept %d" % i] for i in range(50)]), "INSERT")
    row = backuputil.sql_row(leader, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS)
    bid, path = row["backup_id"], row["path"]
    ok_results(post(leader, "/db/execute", ["INSERT INTO r(v) VALUES('after the backup')"]),
               "INSERT after")
    c.wait_converged()
    assert f.stop() == 0
    res = backuputil.sql_result(leader, "RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid))
    assert res.get("values"), res
    ok_results(post(leader, "/db/execute", ["INSERT INTO r(v) VALUES('after the restore')"]),
               "INSERT after restore")
    # The other follower fetched the backup into its repository to prepare its copy: once
    # it has applied the restore (and the write after it), the copy is complete there.
    c.wait_converged(nodes=[leader, other])
    # The backup goes away from every node that has it (the operator deleted it).
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for n in (leader, other):
        for p in sorted(os.listdir(n.backup_dir)) if os.path.isdir(n.backup_dir) else []:
            if p.startswith(bid):
                shutil.move(os.path.join(n.backup_dir, p), hidden / ("%s-%s" % (n.name, p)))
    assert not os.path.exists(path)

    f.start(wait=False)
    def says_it_differs():
        st = f.try_json("/status")
        return st and st["store"].get("diverged")
    why = wait_until(says_it_differs, deadline_seconds(30), "the follower to say it differs")
    assert bid in why and "log entry" in why, why
    # Not ready, naming the reason; reads and backups refused; the online check fails.
    r = f.raw("GET", "/readyz")
    assert r.status == 503 and bid in r.text, (r.status, r.text)
    r = f.raw("GET", "/db/query?level=none&q=" + "SELECT%20count(*)%20FROM%20r")
    assert r.status == 503 and bid in r.json()["error"], (r.status, r.text)
    r = f.raw("POST", "/db/execute?node=%d" % f.id, ["BACKUP DATABASE FULL"])
    assert r.status != 200 or "error" in json.dumps(r.json()), r
    rc, out, err = run_cli(cairn_bin, "check", "--host", f.url)
    assert rc == 1 and bid in out, (rc, out, err)
    # It applied nothing past the RESTORE entry; the others went on.
    assert f.applied_index() < leader.applied_index()

    # Offline too: stopped, `cairn check` names it.
    assert f.stop() == 0
    rc, out, err = run_cli(cairn_bin, "check", f.data_dir)
    assert rc == 1 and "DIVERGED" in out and bid in out, (rc, out, err)

    # The backup comes back on the leader: the follower fetches it, applies the RESTORE
    # and everything after it, and is one of the cluster again.
    for p in os.listdir(hidden):
        if p.startswith(leader.name + "-"):
            shutil.move(hidden / p, os.path.join(leader.backup_dir, p[len(leader.name) + 1:]))
    f.start(wait=False)
    wait_until(lambda: f.ready(), deadline_seconds(60), "the follower to catch up")
    c.wait_converged(timeout=60)
    rows = c.assert_same_rows("r")
    assert [r[1] for r in rows][-1] == "after the restore" and len(rows) == 51, rows[-3:]
    assert f.get_json("/status")["store"]["diverged"] is None
    assert not (f.data_dir / "DIVERGED").exists()


def test_check_host_compares_the_replicas_and_names_the_one_that_differs(cluster_factory,
                                                                          cairn_bin):
    """Before, `cairn check --host` only echoed one node's /status: a replica whose rows
    differed (here edited behind cairn's back while stopped, with page checksums off so
    that nothing else notices) went unseen. Now every node digests its database at one
    log index and the check fails naming the node that differs."""
    import sqlite3
    c = cluster_factory(3, extra_args=["--no-page-checksums"])
    leader = c.leader()
    f = c.followers(leader)[0]
    ok_results(post(leader, "/db/execute", ["CREATE TABLE d (id INTEGER PRIMARY KEY, v TEXT)"]),
               "CREATE")
    ok_results(post(leader, "/db/execute?transaction",
                    [["INSERT INTO d(v) VALUES(?)", "value %04d" % i] for i in range(300)]),
               "INSERT")
    c.wait_converged()
    rc, out, err = run_cli(cairn_bin, "check", "--host", leader.url)
    assert rc == 0 and "every node holds the same pages" in out, (rc, out, err)
    assert out.count("same digest as the leader") == 2, out
    rc, out, err = run_cli(cairn_bin, "check", "--host", f.url, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["replicas"]["ok"] is True and len(doc["replicas"]["nodes"]) == 3, out

    assert f.stop() == 0
    con = sqlite3.connect(str(f.db_path))
    con.execute("UPDATE d SET v = 'value XXXX' WHERE id = 150")  # same length, same layout
    con.commit()
    con.close()
    f.start(wait=True)
    c.wait_converged()
    rc, out, err = run_cli(cairn_bin, "check", "--host", leader.url)
    assert rc == 1, (rc, out, err)
    bad = [l for l in out.splitlines() if l.startswith("DAMAGED") and "node %d " % f.id in l]
    assert bad and "differs from the leader's" in bad[0], out
    assert "the nodes' databases differ" in out, out
    rc, out, err = run_cli(cairn_bin, "check", "--host", leader.url, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["replicas"]["ok"] is False, out
    assert [n["node_id"] for n in doc["replicas"]["nodes"] if not n["same"]] == [str(f.id)], out
