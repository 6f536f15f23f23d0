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
from conftest import assert_exec_ok, deadline_seconds
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


@pytest.mark.parametrize("args,env,words", [
    (["backup", "list", "--repo", "s3://"], None, ["bucket"]),
    (["backup", "list", "--repo", "s3://no-such-bucket/p"], None, ["no-such-bucket"]),
    (["backup", "list", "--repo", "ftp://x/y"], None, ["ftp"]),
    (["backup", "list", "--repo", "{url}"], {"AWS_SECRET_ACCESS_KEY": "wrong"},
     ["SignatureDoesNotMatch"]),
    (["backup", "list", "--repo", "{url}"], {"AWS_ACCESS_KEY_ID": None,
                                            "AWS_SECRET_ACCESS_KEY": None}, ["credentials"]),
    (["backup", "list", "--repo", "/tmp/x", "--s3-endpoint", "http://127.0.0.1:1"], None,
     ["--s3-endpoint"]),
])
def test_bad_s3_input_gets_a_clear_error(cairn_bin, s3, args, env, words):
    args = [a.format(url=s3.url) for a in args]
    r = cairn(cairn_bin, s3, *args, env=env,
              endpoint="--s3-endpoint" not in args and any(a.startswith("s3://") for a in args))
    assert r.returncode != 0, r
    assert all(w in r.stderr for w in words), r.stderr


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
