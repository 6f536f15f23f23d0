"""Standalone backups into an S3 repository (issue 16): `cairn backup create --db FILE
--repo s3://BUCKET/PREFIX`, then list, show, verify and restore from the bucket alone,
against s3rver behind the SigV4-checking proxy (tests/system/s3util.py). The objects are
ordinary S3 objects (read back with boto3), a write that fails leaves nothing visible,
and bad input gets a clear error."""
import json
import os
import sqlite3
import subprocess

import pytest

from backuputil import admin_backup, admin_list, file_rows, integrity
from conftest import SANITIZED, assert_exec_ok, deadline_seconds, wait_until
from s3util import BUCKET, s3, s3env  # noqa: F401 (fixtures)


def cairn(cairn_bin, s3, *args, endpoint=True, env=None, timeout=120):
    argv = [str(cairn_bin)] + [str(a) for a in args]
    if endpoint:
        argv += ["--s3-endpoint", s3.endpoint]
    e = s3.env(env)
    e.pop("CAIRN_HOST", None)
    return subprocess.run(argv, capture_output=True, text=True, env=e, stdin=subprocess.DEVNULL,
                          timeout=deadline_seconds(timeout))


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    return r


def make_db(path, rows):
    con = sqlite3.connect(str(path))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t(v) VALUES(?)", [(os.urandom(300),) for _ in range(rows)])
    con.commit()
    con.close()


def test_standalone_chain_in_a_bucket_restores_from_the_bucket_alone(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 3000)
    repo = s3.url
    made = []
    for kind in ("full", "incremental", "incremental", "differential"):
        if made:
            con = sqlite3.connect(str(db))
            con.execute("UPDATE t SET v = randomblob(300) WHERE id %% 50 = %d" % len(made))
            con.execute("INSERT INTO t(v) VALUES(randomblob(1000))")
            con.commit()
            con.close()
        e = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", repo,
                                "--type", kind, "--json")).stdout)
        assert e["type"] == kind and e["path"] == "%s/%s.cbk" % (repo, e["id"]), e
        made.append((e, file_rows(db, "SELECT id, hex(v) FROM t ORDER BY id")))
    assert made[1][0]["parent_id"] == made[0][0]["id"]
    assert made[2][0]["parent_id"] == made[1][0]["id"]
    assert made[3][0]["parent_id"] == made[0][0]["id"]
    assert made[1][0]["pages"] * 2 < made[1][0]["page_count"], made[1][0]

    # Ordinary S3 objects: boto3 lists them, and nothing is left pending.
    keys = {o["Key"] for o in s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/")
            .get("Contents", [])}
    assert {s3.key(e["id"] + ".cbk") for e, _ in made} <= keys, keys
    assert s3.pending_uploads() == []

    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", repo, "--json")).stdout)
    assert [e["id"] for e in listed] == [e["id"] for e, _ in made]
    shown = json.loads(ok(cairn(cairn_bin, s3, "backup", "show", "--repo", repo, made[2][0]["id"],
                                "--json")).stdout)
    assert shown["id"] == made[2][0]["id"] and shown["digest"] == made[2][0]["digest"]
    v = json.loads(ok(cairn(cairn_bin, s3, "backup", "verify", "--repo", repo, made[2][0]["id"],
                            "--restore", "--json")).stdout)
    assert v["ok"] is True and v["trial_restore"] is True, v
    # The verification is recorded in the bucket (the sidecar object).
    assert s3.key(made[2][0]["id"] + ".verified") in {
        o["Key"] for o in s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/")["Contents"]}
    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", repo, "--json")).stdout)
    assert {e["id"]: e["verified"] for e in listed}[made[2][0]["id"]] == "verified"

    # "latest" names the newest backup.
    out = tmp_path / "latest.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", repo, "latest", "--out", out))
    assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == made[-1][1]
    shown = json.loads(ok(cairn(cairn_bin, s3, "backup", "show", "--repo", repo, "latest",
                                "--json")).stdout)
    assert shown["id"] == made[-1][0]["id"]
    # Every backup restores from the bucket alone to the database as it was.
    for i, (e, rows) in enumerate(made):
        out = tmp_path / ("r%d.db" % i)
        ok(cairn(cairn_bin, s3, "restore", "--repo", repo, e["id"], "--out", out))
        assert integrity(out) == [["ok"]]
        assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows, i


def test_a_damaged_object_is_found_by_verify_and_refused_by_restore(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 500)
    e = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url,
                            "--json")).stdout)
    key = s3.key(e["id"] + ".cbk")
    data = bytearray(s3.boto().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.boto().put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    r = cairn(cairn_bin, s3, "backup", "verify", "--repo", s3.url, e["id"])
    assert r.returncode == 1 and e["id"] in r.stderr, r
    out = tmp_path / "r.db"
    r = cairn(cairn_bin, s3, "restore", "--repo", s3.url, e["id"], "--out", out)
    assert r.returncode == 1 and not out.exists(), r


def test_a_verification_that_cannot_record_its_result_says_the_backup_passed(
        cairn_bin, s3, tmp_path):
    """Credentials that may read the bucket but not write into it: verify checks the
    backup, then cannot write its `.verified` record. It fails (nothing was recorded),
    and says that the backup passed, not only that a PUT failed."""
    db = tmp_path / "app.db"
    make_db(db, 500)
    e = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url,
                            "--json")).stdout)
    s3.fault(method="PUT", path=".verified", action="status", status=403, code="AccessDenied",
             message="Access Denied", count=-1)
    r = cairn(cairn_bin, s3, "backup", "verify", "--repo", s3.url, e["id"], "--restore")
    s3.clear_faults()
    assert r.returncode == 1, r
    assert "%s.cbk passed every check and the trial restore" % e["id"] in r.stderr, r.stderr
    assert "verification record could not be written" in r.stderr, r.stderr
    assert "403 AccessDenied" in r.stderr and e["id"] + ".verified" in r.stderr, r.stderr
    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                                 "--json")).stdout)
    assert [x["verified"] for x in listed] == ["unverified"], listed


def test_a_failing_upload_leaves_nothing_visible(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 40000)  # ~13 MiB: a multipart upload
    s3.fault(query="partNumber=", action="status", status=500, code="InternalError", count=-1)
    r = cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url,
              env={"CAIRN_S3_RETRY_MS": "3000"}, timeout=120)
    assert r.returncode == 1 and "500" in r.stderr, r
    s3.clear_faults()
    assert s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/").get("KeyCount", 0) == 0
    assert s3.pending_uploads() == []
    # The next backup succeeds.
    ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url))


def test_an_expiry_that_cannot_delete_says_what_it_deleted(cairn_bin, s3, tmp_path):
    """Every DELETE of the bucket refused: the expiry fails naming the object, and its
    report does not say the expired backups were deleted; run again, it deletes them."""
    db = tmp_path / "app.db"
    ids = []
    for kind in ("full", "incremental", "full"):
        make_db(db, 200)
        ids.append(json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo",
                                       s3.url, "--type", kind, "--json")).stdout)["id"])
    s3.fault(method="DELETE", action="status", status=500, code="InternalError", count=-1)
    r = cairn(cairn_bin, s3, "backup", "expire", "--repo", s3.url, "--keep-full", "1",
              env={"CAIRN_S3_RETRY_MS": "1000"})
    s3.clear_faults()
    assert r.returncode == 1, r
    assert "could not remove %s.cbk" % ids[1] in r.stderr, r.stderr
    assert "0 of 2 expired backups" in r.stderr, r.stderr
    assert "2 deleted" not in r.stdout, r.stdout
    assert "2 expired" in r.stdout and "of which 0 deleted (0 B)" in r.stdout, r.stdout
    assert all(s3.exists(i + ".cbk") for i in ids)
    r = ok(cairn(cairn_bin, s3, "backup", "expire", "--repo", s3.url, "--keep-full", "1"))
    assert "2 deleted" in r.stdout, r.stdout
    assert [s3.exists(i + ".cbk") for i in ids] == [False, False, True]


@pytest.mark.parametrize("args,env,words", [
    (["backup", "list", "--repo", "s3://"], None, ["bucket"]),
    (["backup", "list", "--repo", "s3://no-such-bucket/p"], None, ["no-such-bucket"]),
    (["backup", "list", "--repo", "ftp://x/y"], None, ["ftp"]),
    (["backup", "list", "--repo", "{url}"], {"AWS_SECRET_ACCESS_KEY": "wrong"},
     ["SignatureDoesNotMatch"]),
    # A backup's first request is a HEAD, whose 403 has no body to say why.
    (["backup", "create", "--db", "{db}", "--repo", "{url}"], {"AWS_SECRET_ACCESS_KEY": "wrong"},
     ["HTTP 403", "check the credentials (access key id CAIRNTESTKEY1)"]),
    (["backup", "list", "--repo", "{url}"], {"AWS_ACCESS_KEY_ID": None,
                                            "AWS_SECRET_ACCESS_KEY": None}, ["credentials"]),
    (["backup", "list", "--repo", "/tmp/x", "--s3-endpoint", "http://127.0.0.1:1"], None,
     ["--s3-endpoint"]),
])
def test_bad_s3_input_gets_a_clear_error(cairn_bin, s3, args, env, words, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 10)
    args = [a.format(url=s3.url, db=db) for a in args]
    r = cairn(cairn_bin, s3, *args, env=env,
              endpoint="--s3-endpoint" not in args and any(a.startswith("s3://") for a in args))
    assert r.returncode != 0, r
    assert all(w in r.stderr for w in words), r.stderr


def test_the_url_scheme_is_case_insensitive(cairn_bin, s3, server_factory, monkeypatch,
                                            tmp_path):
    """S3://BUCKET/PREFIX is the repository s3://BUCKET/PREFIX, as the repository object
    reads it: the CLI takes --s3-endpoint with it, and cairnd refuses it as a second
    repository beside the first (one place listed twice)."""
    db = tmp_path / "app.db"
    make_db(db, 100)
    upper = "S3" + s3.url[2:]
    e = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", upper,
                            "--json")).stdout)
    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", upper,
                                 "--json")).stdout)
    assert [x["id"] for x in listed] == [e["id"]]
    s3_server_env(s3, monkeypatch)
    s = server_factory(extra_args=["--backup-dir", s3.url, "--repo", "again=" + upper,
                                   "--s3-endpoint", s3.endpoint], start=False)
    s.start(wait=False)
    assert s.wait_exit(30) != 0
    assert "given twice" in s.stderr_text(), s.stderr_tail()


def test_an_empty_node_restores_from_a_bucket(cairn_bin, s3, server_factory, monkeypatch):
    """A server's backups shipped to a bucket (as ordinary objects, here with boto3); a
    fresh node on another machine, with nothing but credentials, starts with
    --restore-from s3://BUCKET/PREFIX and serves the database of the newest backup."""
    a = server_factory()
    assert_exec_ok(a.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                             ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(300)]))
    full = admin_backup(a, {"type": "full"})
    assert_exec_ok(a.execute(["DELETE FROM t WHERE id % 3 = 0"]))
    inc = admin_backup(a, {"type": "incremental"})
    want = a.rows("SELECT id, v FROM t ORDER BY id")
    for e in (full, inc):
        with open(e["path"], "rb") as f:
            s3.boto().put_object(Bucket=BUCKET, Key=s3.key(e["id"] + ".cbk"), Body=f.read())
    assert a.stop() == 0
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    b = server_factory(extra_args=["--restore-from", s3.url])
    assert b.rows("SELECT id, v FROM t ORDER BY id") == want
    assert "restored backup %s" % inc["id"] in b.stderr_text()
    # The chain came into the node's own repository.
    assert {e["id"] for e in admin_list(b)} >= {full["id"], inc["id"]}
    # The endpoint as a flag, this time.
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    c = server_factory(extra_args=["--restore-from", "%s#%s" % (s3.url, full["id"]),
                                   "--s3-endpoint", s3.endpoint])
    assert c.scalar("SELECT count(*) FROM t") == 300


def test_a_node_killed_while_restoring_from_a_bucket_never_holds_a_broken_chain(
        s3, server_factory, monkeypatch):
    """--restore-from s3://... copies the chain into the node's repository oldest first:
    killed while the full backup is copied, the node's repository holds no incremental
    without its parent (a broken chain that would be listed and fail to verify), and the
    next start with the same flag completes the copy and restores."""
    a = server_factory()
    assert_exec_ok(a.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
                              "INSERT INTO t(v) SELECT randomblob(1000) FROM "
                              "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                              "WHERE i < 8000) SELECT i FROM c)"]))
    full = admin_backup(a, {"type": "full"})
    assert_exec_ok(a.execute(["DELETE FROM t WHERE id % 3 = 0"]))
    inc = admin_backup(a, {"type": "incremental"})
    want = a.rows("SELECT id, v FROM t ORDER BY id")
    for e in (full, inc):
        with open(e["path"], "rb") as f:
            s3.boto().put_object(Bucket=BUCKET, Key=s3.key(e["id"] + ".cbk"), Body=f.read())
    assert a.stop() == 0
    s3_server_env(s3, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    # The full backup's large reads stall past their first MiB (its header, read to
    # find it, comes in small ones): its copy is held.
    s3.fault(method="GET", path=full["id"] + ".cbk", action="stall", after_bytes=1 << 20,
             seconds=60, count=-1)
    b = server_factory(extra_args=["--restore-from", s3.url], start=False)
    own = b.workdir / "backups"
    b.start(wait=False)
    try:
        wait_until(lambda: own.is_dir() and
                   ".%s.cbk.tmp" % full["id"] in os.listdir(own), 60,
                   "the copy of the full backup to be under way")
    finally:
        b.kill()
        s3.clear_faults()
    assert inc["id"] + ".cbk" not in os.listdir(own), os.listdir(own)
    b.start()
    assert b.rows("SELECT id, v FROM t ORDER BY id") == want
    assert sorted(os.listdir(own)) == sorted([full["id"] + ".cbk", inc["id"] + ".cbk"])


def s3_server_env(s3, monkeypatch):
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def test_a_server_keeps_its_backups_in_a_bucket(s3, server_factory, monkeypatch, tmp_path,
                                                cairn_bin):
    """cairnd --backup-dir s3://BUCKET/PREFIX: BACKUP DATABASE, the catalog (HTTP and
    SQL), verification, restores into a branch and of the live database, /db/load: all
    through the bucket, nothing on the node's disk."""
    s3_server_env(s3, monkeypatch)
    s = server_factory(extra_args=["--backup-dir", s3.url, "--s3-endpoint", s3.endpoint])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                             ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(500)]))
    full = admin_backup(s, {"type": "full"})
    at_full = s.rows("SELECT id, v FROM t ORDER BY id")
    assert full["path"] == "%s/%s.cbk" % (s3.url, full["id"]), full
    assert_exec_ok(s.execute(["DELETE FROM t WHERE id > 400"]))
    res = s.execute(["BACKUP DATABASE INCREMENTAL TO 'default'"])["results"][0]
    inc_id = res["values"][0][1]
    assert s3.exists(full["id"] + ".cbk") and s3.exists(inc_id + ".cbk")
    assert not (s.data_dir.parent / "backups").exists()
    assert [e["id"] for e in admin_list(s)] == [full["id"], inc_id]
    assert [r[0] for r in s.rows("SELECT id FROM cairn_backups ORDER BY id")] == [full["id"], inc_id]
    r = s.raw("POST", "/admin/backups/%s/verify" % inc_id, {"restore": True}, timeout=120)
    assert r.status == 200 and r.json()["ok"] is True, r
    # A branch from the bucket, then the live database rolled back to the full backup.
    r = s.raw("POST", "/admin/restore", {"backup_id": full["id"], "branch": "old"}, timeout=120)
    assert r.status == 200, r
    assert s.query("SELECT count(*) FROM t", branch="old")["results"][0]["values"] == [[500]]
    r = s.raw("POST", "/admin/restore", {"backup_id": full["id"]}, timeout=120)
    assert r.status == 200, r
    assert s.rows("SELECT id, v FROM t ORDER BY id") == at_full
    # A load is kept as a full backup, in the bucket too.
    src = tmp_path / "load.db"
    con = sqlite3.connect(str(src))
    con.execute("CREATE TABLE loaded(x)")
    con.execute("INSERT INTO loaded VALUES(42)")
    con.commit()
    con.close()
    r = s.raw("POST", "/db/load", src.read_bytes(),
              headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert s.rows("SELECT x FROM loaded") == [[42]]
    assert len(admin_list(s)) == 3
    # The node restarts with it (a bad URL or missing credentials would stop the start).
    s.restart()
    assert len(admin_list(s)) == 3
    # TO names the repository by its URL too; any other place is refused.
    assert s.post("/db/execute", ["BACKUP DATABASE TO '%s'" % s3.url]).status == 200
    assert s.post("/db/execute", ["BACKUP DATABASE TO 's3://%s/elsewhere'" % BUCKET]).status == 400
    # cairn check verifies the bucket's backups and chains beside the data directory.
    assert s.stop() == 0
    r = cairn(cairn_bin, s3, "check", "--repo", s3.url, s.data_dir, "--json", endpoint=False,
              env={"AWS_ENDPOINT_URL_S3": s3.endpoint})
    assert r.returncode == 0, r.stdout
    assert json.dumps(json.loads(r.stdout)).count(inc_id) >= 1, r.stdout


def test_bad_backup_dir_url_stops_the_start(s3, server_factory, monkeypatch):
    s3_server_env(s3, monkeypatch)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s = server_factory(extra_args=["--backup-dir", s3.url, "--s3-endpoint", s3.endpoint],
                       start=False)
    s.start(wait=False)
    assert s.wait_exit(30) != 0
    assert "--backup-dir" in s.stderr_text() and "AWS_SECRET_ACCESS_KEY" in s.stderr_text()


def test_a_cluster_with_a_bucket_each_chains_across_a_failover(s3, make_cluster, monkeypatch):
    """Each node's backups in its own prefix of the bucket: after the leader that took
    the full backup is killed, the new leader fetches it from the old one (served from
    its bucket) into its own prefix and chains to it; both restore on every node."""
    s3_server_env(s3, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    c = make_cluster(3, extra_args=[])
    # Restart each node with its own prefix (a cluster's flags are per node).
    for n in c.nodes:
        n.extra_args = list(n.extra_args) + ["--backup-dir", "%s/node%d" % (s3.url, n.id)]
        n.restart()
    c.wait_converged()
    leader = c.leader()
    assert_exec_ok(leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                                  ["INSERT INTO t(v) VALUES('r%d')" % i for i in range(300)]))
    full = admin_backup(leader, {"type": "full"})
    old = leader
    old.kill()
    leader = c.leader(among=[n for n in c.nodes if n is not old], timeout=30)
    old.start()
    c.wait_converged()
    assert_exec_ok(leader.execute(["UPDATE t SET v = 'x' WHERE id < 10"]))
    want = leader.rows("SELECT id, v FROM t ORDER BY id", level="strong")
    inc = admin_backup(leader, {"type": "incremental"})
    assert inc["parent_id"] == full["id"], inc
    assert s3.exists("node%d/%s.cbk" % (leader.id, full["id"]))  # fetched into its prefix
    for n in c.nodes:
        r = n.raw("POST", "/admin/restore?node=%d" % n.id,
                  {"backup_id": inc["id"], "branch": "b%d" % n.id}, timeout=120)
        assert r.status == 200, (n.name, r)
        got = n.query("SELECT id, v FROM t ORDER BY id", branch="b%d" % n.id, level="none")
        assert got["results"][0]["values"] == want, n.name


def test_server_backups_ride_out_slowdowns_and_fail_cleanly_when_s3_is_gone(
        s3, server_factory, monkeypatch):
    """503 SlowDown for a while: the backup retries and succeeds. The endpoint gone: the
    backup fails within the retry bound naming the object, nothing is listed, and the
    node serves writes all the while."""
    s3_server_env(s3, monkeypatch)
    monkeypatch.setenv("CAIRN_S3_RETRY_MS", "3000")
    s = server_factory(extra_args=["--backup-dir", s3.url, "--s3-endpoint", s3.endpoint])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
                              "INSERT INTO t(v) SELECT randomblob(1000) FROM "
                              "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                              "WHERE i < 3000) SELECT i FROM c)"]))
    s3.fault(method="PUT", action="status", status=503, code="SlowDown", count=3)
    e = admin_backup(s, {"type": "full"})
    assert s3.exists(e["id"] + ".cbk")
    assert any(x.get("fault") for x in s3.log()), "no fault was injected"

    # Every request now fails: the backup gives up, the node goes on.
    s3.fault(action="status", status=500, code="InternalError", count=-1)
    done = {}

    def backup():
        done["r"] = s.raw("POST", "/admin/backup", {"type": "full"}, timeout=120)

    import threading
    th = threading.Thread(target=backup)
    th.start()
    writes = 0
    while th.is_alive():
        assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES(x'00')"]))
        writes += 1
    th.join()
    s3.clear_faults()
    r = done["r"]
    assert r.status >= 500 and "500" in r.json()["error"], r
    assert writes > 0
    assert [x["id"] for x in admin_list(s)] == [e["id"]]
    assert s3.pending_uploads() == []


def test_a_killed_standalone_backup_leaves_no_object(cairn_bin, s3, tmp_path):
    """kill -9 of `cairn backup create` in the middle of its upload: no object is
    listed (the multipart upload is never completed), and the next backup succeeds."""
    db = tmp_path / "app.db"
    make_db(db, 60000)  # ~20 MiB: several parts
    s3.fault(query="partNumber=2", action="delay", seconds=30, count=1)
    argv = [str(cairn_bin), "backup", "create", "--db", str(db), "--repo", s3.url,
            "--s3-endpoint", s3.endpoint]
    p = subprocess.Popen(argv, env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        from conftest import wait_until
        wait_until(lambda: any("partNumber=2" in x["query"] for x in s3.log()), 30,
                   "the second part to be on its way")
    finally:
        p.kill()
        p.communicate()
    s3.clear_faults()
    assert s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/").get("KeyCount", 0) == 0
    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                                 "--json")).stdout)
    assert listed == []
    ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url))
    assert len(json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                                   "--json")).stdout)) == 1


def test_a_bucket_holding_foreign_objects(cairn_bin, s3, tmp_path):
    """Objects that are not backups are ignored; one named like a backup but not one is
    listed as damaged with the reason; backups and restores go on beside them."""
    b = s3.boto()
    b.put_object(Bucket=BUCKET, Key=s3.key("notes.txt"), Body=b"hello")
    b.put_object(Bucket=BUCKET, Key=s3.key("sub/20260101T000000000Z-0000-abcd.cbk"), Body=b"x")
    b.put_object(Bucket=BUCKET, Key=s3.key("20260101T000000000Z-0000-beef.cbk"),
                 Body=b"not a backup at all" * 10)
    db = tmp_path / "app.db"
    make_db(db, 200)
    e = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url,
                            "--json")).stdout)
    listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                                 "--json")).stdout)
    by_id = {x["id"]: x for x in listed}
    assert set(by_id) == {e["id"], "20260101T000000000Z-0000-beef"}, listed
    assert by_id["20260101T000000000Z-0000-beef"].get("error"), listed
    r = cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url)
    assert r.returncode == 0 and "DAMAGED" in r.stdout, r
    out = tmp_path / "r.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest", "--out", out))
    assert file_rows(out, "SELECT count(*) FROM t") == [[200]]
    r = cairn(cairn_bin, s3, "restore", "--repo", s3.url, "20260101T000000000Z-0000-beef",
              "--out", tmp_path / "bad.db")
    assert r.returncode == 1 and not (tmp_path / "bad.db").exists(), r
    # The foreign objects are untouched.
    assert b.get_object(Bucket=BUCKET, Key=s3.key("notes.txt"))["Body"].read() == b"hello"


# ---- restores read ahead (src/backup/readahead.c): several ranged GETs in flight while
# a file is read in order, small ones for the catalogue's reads, faults surfacing at the
# read that needs the bytes ------------------------------------------------------------

def range_of(entry):
    """(first byte, length) a logged request's Range asks for; length None to the end."""
    first, _, last = (entry.get("range") or "bytes=0-").split("=", 1)[1].partition("-")
    return int(first), int(last) - int(first) + 1 if last else None


def get_ranges(log, name):
    """(first byte, length, t, t_end) of every GET of object `name` the proxy saw."""
    return [range_of(e) + (e["t"], e["t_end"]) for e in log
            if e["method"] == "GET" and e["path"].endswith("/" + name)]


def most_at_once(spans):
    """The most of the (t, t_end) spans that overlap at one moment."""
    ev = sorted([(t, 1) for t, _ in spans] + [(e, -1) for _, e in spans if e is not None],
                key=lambda x: (x[0], x[1]))
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    return peak


def bucket_chain(cairn_bin, s3, tmp_path, rows=40000, incrementals=2):
    """A full backup of about 13 MiB (random blobs: zstd leaves them as they are) and
    incrementals after 10% of the rows changed each, in the test's bucket prefix. The
    entries, and the rows at the last one."""
    db = tmp_path / "app.db"
    make_db(db, rows)
    made = []
    for i in range(incrementals + 1):
        if i > 0:
            con = sqlite3.connect(str(db))
            con.execute("UPDATE t SET v = randomblob(300) WHERE id %% 10 = %d" % i)
            con.commit()
            con.close()
        made.append(json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo",
                                         s3.url, "--type", "full" if i == 0 else "incremental",
                                         "--json")).stdout))
    return made, file_rows(db, "SELECT id, hex(v) FROM t ORDER BY id")


def test_restore_reads_ahead_only_when_reading_in_order(cairn_bin, s3, tmp_path):
    """The catalogue's reads of headers and footers are small GETs; a restore reads each
    file in order ahead of its reads, into its spool in $TMPDIR: GETs of up to 32 MiB (this
    13 MiB file in one), nothing left in the spool's directory; without a directory to
    spool in, in memory: GETs of up to a few MiB, several in flight at once."""
    made, rows = bucket_chain(cairn_bin, s3, tmp_path, incrementals=1)
    full = made[0]["id"] + ".cbk"
    s3.clear_log()
    ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url, "--json"))
    ok(cairn(cairn_bin, s3, "backup", "show", "--repo", s3.url, made[-1]["id"], "--json"))
    # A file named by its URL is opened and its header, footer and trailer read.
    ok(cairn(cairn_bin, s3, "backup", "show", "--repo", s3.url, made[0]["path"], "--json"))
    log = s3.log()
    assert get_ranges(log, full), log
    sizes = [range_of(e)[1] for e in log if e["method"] == "GET" and e["path"].endswith(".cbk")]
    assert all(n is not None and n <= 64 * 1024 for n in sizes), sizes
    size = made[0]["size_bytes"]
    spool = tmp_path / "spool"
    spool.mkdir()
    s3.clear_log()
    out = tmp_path / "r.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", out,
             env={"TMPDIR": str(spool)}))
    assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows
    gets = get_ranges(s3.log(), full)
    ahead = [n for _, n, _, _ in gets if n > 64 * 1024]
    assert ahead and sum(ahead) >= size - 3 * 64 * 1024 and len(ahead) <= 2, (size, gets)
    assert list(spool.iterdir()) == []
    # The file is read once (the catalogue's small reads and the manifest's apart).
    assert sum(n for _, n, _, _ in gets) < size * 1.5, (size, gets)

    s3.clear_log()
    out = tmp_path / "r2.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", out,
             env={"TMPDIR": str(tmp_path / "no-such-dir")}))
    assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows
    gets = get_ranges(s3.log(), full)
    assert max(n for _, n, _, _ in gets) >= 1 << 20, gets
    assert max(n for _, n, _, _ in gets) <= 4 << 20, gets
    if not SANITIZED:
        # Under a sanitizer the reader consumes more slowly than GETs arrive: the window
        # ahead is full, and a new GET starts only as the reader moves on, one at a time.
        assert most_at_once([(t, e) for _, _, t, e in gets]) >= 2, gets
    assert sum(n for _, n, _, _ in gets) < size * 1.5, (size, gets)


def test_restore_resolves_its_chain_from_the_listing(cairn_bin, s3, tmp_path):
    """A restore (of the newest backup, or of one named by its id) lists the repository,
    then looks up each parent by id: the lookups take the listing's entries (repo.c
    keeps a small listing a few seconds), where each opened its file (a GET of its head,
    another of its footer) and read its `.verified` sidecar, three requests in a row a
    backup before the first block (issue 16). Each file is then opened once, by the
    restore."""
    made, rows = bucket_chain(cairn_bin, s3, tmp_path, incrementals=3)
    # A listing first, which writes the catalog index: the restore's listing is then a
    # LIST and the index's GET.
    ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url, "--json"))
    for ref in ("latest", made[-1]["id"]):
        s3.clear_log()
        out = tmp_path / ("r-%s.db" % ref)
        ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, ref, "--out", out))
        assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows
        log = s3.log()
        sidecars = [e["path"] for e in log
                    if e["method"] == "GET" and e["path"].endswith(".verified")]
        assert sidecars == [], (ref, sidecars)
        for entry in made:
            gets = get_ranges(log, entry["id"] + ".cbk")
            # Opened once, by the restore: one GET of its head (the footer's window and
            # the read-ahead's last, shorter chunk are other small GETs).
            heads = [g for g in gets if g[0] == 0 and g[1] == 64 * 1024]
            assert len(heads) == 1, (ref, entry["id"], gets)


def test_a_chain_restore_rides_out_faults_in_its_reads_ahead(cairn_bin, s3, tmp_path):
    """Connections cut mid-body, 500s and a stall ended by a reset, in the GETs of the
    files being read ahead: the restore retries and resumes, and its output is the same
    bytes as a restore without faults."""
    made, rows = bucket_chain(cairn_bin, s3, tmp_path)
    clean = tmp_path / "clean.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", clean))
    full, inc1, inc2 = (e["id"] + ".cbk" for e in made)
    # The GETs of a restore like the one to fault (the catalog index is written now):
    # each file's first GET past its small reads (catalogue, header, footer, manifest,
    # 64 KiB each) is the read-ahead's, the ones to fault.
    s3.clear_log()
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out",
             tmp_path / "probe.db"))
    probe = s3.log()

    def first_ahead(name):
        gets = [e for e in probe if e["method"] == "GET" and e["path"].endswith(name)]
        for i, e in enumerate(gets):
            if range_of(e)[1] is not None and range_of(e)[1] > 64 * 1024:
                return i
        raise AssertionError("no GET of %s read ahead: %r" % (name, gets))

    s3.faults([
        {"method": "GET", "path": full, "skip": first_ahead(full), "count": 2,
         "action": "cut_response", "after_bytes": 100000},
        {"method": "GET", "path": inc1, "skip": first_ahead(inc1), "count": 2,
         "action": "status", "status": 500, "code": "InternalError"},
        {"method": "GET", "path": inc2, "skip": first_ahead(inc2), "count": 1,
         "action": "stall", "after_bytes": 50000, "seconds": 0.5},
    ])
    s3.clear_log()
    out = tmp_path / "faulted.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", out))
    injected = [e for e in s3.log() if e.get("fault")]
    assert len(injected) == 5, injected
    assert any(range_of(e)[1] > 1 << 20 for e in injected), "no fault hit a GET read ahead"
    assert s3.pending_faults() == [], "faults left: the restore read less than expected"
    assert out.read_bytes() == clean.read_bytes()
    assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows
    # Those retries were of GETs under way beside others (the chain's files are read at
    # once; a file of a few MiB is read ahead in one GET).
    gets = [g for name in (full, inc1, inc2) for g in get_ranges(s3.log(), name)]
    assert SANITIZED or most_at_once([(t, e) for _, _, t, e in gets]) >= 2, gets


def test_a_chain_restore_that_cannot_read_an_object_names_it_and_leaves_nothing(
        cairn_bin, s3, tmp_path):
    """Every GET of the full backup failing once the read-ahead has started: the restore
    gives up within the retry bound, names the object and the last answer, and leaves
    nothing at --out, nor beside it."""
    made, _ = bucket_chain(cairn_bin, s3, tmp_path, incrementals=1)
    full = made[0]["id"] + ".cbk"
    # A listing first, which writes the catalog index: the restore's lookups then read
    # no file, and its first GETs of the full backup are the two of its opening (head,
    # footer), then the read-ahead's.
    ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url, "--json"))
    s3.clear_log()
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out",
             tmp_path / "probe.db"))
    gets = get_ranges(s3.log(), full)
    assert len(gets) >= 3 and all(n == 64 * 1024 for _, n, _, _ in gets[:2]), gets
    assert gets[2][1] > 64 * 1024, gets  # the read-ahead's first
    s3.fault(method="GET", path=full, skip=2, count=-1, action="status", status=500,
             code="InternalError")
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "r.db"
    r = cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", out,
              env={"CAIRN_S3_RETRY_MS": "1500"})
    assert r.returncode == 1, r
    assert full in r.stderr and "500" in r.stderr and "InternalError" in r.stderr, r.stderr
    assert list(dest.iterdir()) == [], list(dest.iterdir())
    s3.clear_faults()
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, made[-1]["id"], "--out", out))
