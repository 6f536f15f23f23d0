"""Named repositories (issue 16): a node has several repositories, `--backup-dir URL`
(named "default") and any number of `--repo NAME=URL`, the first of them the default.
BACKUP DATABASE ... TO 'NAME', POST /admin/backup {"to": "NAME"} and
`cairn backup create --to NAME` pick one; a chain never crosses repositories; every
listing (GET /admin/backups, cairn_backups, `cairn backup list`) says which repository
each backup is in; a restore finds a backup id in any of them."""
import json
import os
import sqlite3
import subprocess

import pytest

import backuputil
from conftest import assert_exec_ok
from s3util import BUCKET, s3, s3env  # noqa: F401 (fixtures)


def files_in(d):
    return sorted(p for p in os.listdir(d) if p.endswith(".cbk")) if os.path.isdir(d) else []


def backup(s, to=None, kind=None, how="sql"):
    """A backup into repository `to`: the entry (as listed), or the failed answer."""
    if how == "sql":
        sql = "BACKUP DATABASE" + (" " + kind.upper() if kind else "")
        if to is not None:
            sql += " TO " + backuputil.sql_quote(to)
        r = s.post("/db/execute", [sql])
        body = r.json()
        if r.status != 200 or "error" in body["results"][0]:
            return r
        row = dict(zip(body["results"][0]["columns"], body["results"][0]["values"][0]))
        return backuputil.admin_entry(s, row["backup_id"]) | {"_row": row}
    doc = {"type": kind or "full"}
    if to is not None:
        doc["to"] = to
    r = s.raw("POST", "/admin/backup", doc)
    if r.status != 200:
        return r
    return backuputil.check_entry(r.json()["backup"])


@pytest.fixture
def three_repos(server_factory, tmp_path, s3, monkeypatch):
    """A node with a directory as 'default', a directory 'offsite' and a bucket 'cloud'."""
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    dirs = {"default": str(tmp_path / "local"), "offsite": str(tmp_path / "offsite")}
    s = server_factory(extra_args=[
        "--backup-dir", dirs["default"], "--repo", "offsite=" + dirs["offsite"],
        "--repo", "cloud=" + s3.url, "--s3-endpoint", s3.endpoint])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                             ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(200)]))
    return s, dirs


@pytest.mark.parametrize("how", ["sql", "http"])
def test_a_backup_goes_into_the_repository_it_names(three_repos, s3, how):
    s, dirs = three_repos
    st = s.get_json("/status")["store"]
    assert [r["name"] for r in st["repositories"]] == ["default", "offsite", "cloud"], st
    assert st["repositories"][2]["url"] == s3.url and st["backup_dir"] == dirs["default"]

    into = {}
    for to in ("offsite", "cloud", "default", None, dirs["offsite"], s3.url + "/"):
        e = backup(s, to, how=how)
        assert isinstance(e, dict), (to, e)
        into.setdefault(e["repository"], []).append(e["id"])
        if how == "sql":
            assert e["_row"]["repository"] == e["repository"], e
    assert {k: len(v) for k, v in into.items()} == {"offsite": 2, "cloud": 2, "default": 2}
    # Each backup is where its repository is, and nowhere else.
    assert files_in(dirs["offsite"]) == sorted(i + ".cbk" for i in into["offsite"])
    assert files_in(dirs["default"]) == sorted(i + ".cbk" for i in into["default"])
    for i in into["cloud"]:
        assert s3.exists(i + ".cbk")
    keys = [o["Key"] for o in s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/")
            .get("Contents", [])]
    assert sorted(k for k in keys if k.endswith(".cbk")) == \
        sorted(s3.key(i + ".cbk") for i in into["cloud"]), keys

    # An unknown name, or a path that is no repository: refused, naming every
    # repository of the node, and nothing written anywhere.
    before = (files_in(dirs["default"]), files_in(dirs["offsite"]), len(keys))
    for to in ("nope", "Offsite", str(s.workdir / "elsewhere")):
        r = backup(s, to, how=how)
        assert not isinstance(r, dict), (to, r)
        err = json.dumps(r.json())
        assert "not a repository of this node" in err, err
        for name in ("'default'", "'offsite'", "'cloud'", dirs["offsite"], s3.url):
            assert name in err, (name, err)
    assert not (s.workdir / "elsewhere").exists()
    keys_after = s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/").get("KeyCount")
    assert (files_in(dirs["default"]), files_in(dirs["offsite"]), keys_after) == before


def test_a_chain_stays_in_its_repository(three_repos):
    """An incremental into 'offsite' chains to offsite's newest backup, though a newer
    full backup is in 'default'; a differential likewise to offsite's newest full."""
    s, dirs = three_repos
    off_full = backup(s, "offsite", "full")
    assert_exec_ok(s.execute(["UPDATE t SET v = 'a' WHERE id < 20"]))
    local_full = backup(s, "default", "full")
    assert_exec_ok(s.execute(["UPDATE t SET v = 'b' WHERE id < 10"]))
    off_inc = backup(s, "offsite", "incremental")
    assert off_inc["parent_id"] == off_full["id"], (off_inc, off_full, local_full)
    local_inc = backup(s, None, "incremental")
    assert local_inc["parent_id"] == local_full["id"], local_inc
    off_diff = backup(s, "offsite", "differential")
    assert off_diff["parent_id"] == off_full["id"], off_diff
    # An incremental into a repository that holds no backup has nothing to chain to: it
    # is taken whole, a full backup, not chained to another repository's backup.
    cloud_first = backup(s, "cloud", "incremental")
    assert cloud_first["type"] == "full" and cloud_first["parent_id"] is None, cloud_first
    cloud_inc = backup(s, "cloud", "incremental")
    assert cloud_inc["parent_id"] == cloud_first["id"], (cloud_inc, cloud_first)
    assert cloud_inc["repository"] == "cloud", cloud_inc
    # Every chain restores, found by id in whichever repository holds it.
    want = s.rows("SELECT id, v FROM t ORDER BY id")
    for e in (off_inc, local_inc, off_diff, cloud_inc):
        branch = "b" + e["id"][-4:]
        res = backuputil.sql_result(s, "RESTORE DATABASE FROM %s TO BRANCH %s" % (
            backuputil.sql_quote(e["id"]), backuputil.sql_quote(branch)))
        assert "error" not in res, (e, res)
        got = s.query("SELECT id, v FROM t ORDER BY id", branch=branch)["results"][0]["values"]
        assert got == want, e
        r = s.raw("POST", "/admin/backups/%s/verify" % e["id"], {})
        assert r.status == 200 and r.json()["ok"] is True, (e, r)


def test_every_listing_says_which_repository(three_repos, cairn_bin):
    s, dirs = three_repos
    made = {backup(s, to)["id"]: to for to in ("offsite", "cloud", "default")}
    listed = {e["id"]: e["repository"] for e in backuputil.admin_list(s)}
    assert listed == made, listed
    local = s.get_json("/admin/backups?local")["backups"]
    assert {e["id"]: e["repository"] for e in local} == made
    rows = s.rows("SELECT id, repository FROM cairn_backups")
    assert {i: r for i, r in rows} == made, rows
    assert backuputil.admin_entry(s, backup(s, "cloud")["id"])["repository"] == "cloud"

    cli = subprocess.run([str(cairn_bin), "--host", s.url, "backup", "list", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli
    doc = json.loads(cli.stdout)
    entries = doc["backups"] if isinstance(doc, dict) else doc
    assert {e["id"]: e["repository"] for e in entries if e["id"] in made} == made
    cli = subprocess.run([str(cairn_bin), "--host", s.url, "backup", "list"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli
    assert "REPOSITORY" in cli.stdout.splitlines()[1], cli.stdout
    for i, to in made.items():
        line = next(ln for ln in cli.stdout.splitlines() if i in ln)
        assert " %s " % to in line, line
    # The CLI picks a repository by name too.
    cli = subprocess.run([str(cairn_bin), "--host", s.url, "backup", "create", "--to", "offsite",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli
    e = json.loads(cli.stdout)
    e = e.get("backup", e)
    assert e["repository"] == "offsite" and os.path.dirname(e["path"]) == dirs["offsite"], e


def test_the_first_repo_is_the_default_without_backup_dir(server_factory, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    s = server_factory(extra_args=["--repo", "main=" + a, "--repo", "spare=" + b])
    assert_exec_ok(s.execute(["CREATE TABLE t(v)", "INSERT INTO t VALUES(1)"]))
    e1 = backup(s)
    e2 = backup(s, "default")
    e3 = backup(s, "main")
    assert {e1["repository"], e2["repository"], e3["repository"]} == {"main"}
    assert len(files_in(a)) == 3 and files_in(b) == []
    assert backup(s, "spare")["repository"] == "spare" and len(files_in(b)) == 1
    # Nothing went to the directory used when no repository is given.
    assert not (s.data_dir.parent / "backups").exists()
    assert s.get_json("/status")["store"]["backup_dir"] == a


@pytest.mark.parametrize("args, words", [
    (["--repo", "offsite"], "expected NAME=URL"),
    (["--repo", "=/tmp/x"], "expected NAME=URL"),
    (["--repo", "s3://b/p"], "expected NAME=URL"),
    (["--repo", "x="], "no path or URL"),
    (["--repo", "bad name=/tmp/x"], "is not valid"),
    (["--repo", "-x=/tmp/x"], "is not valid"),
    (["--repo", "a=/tmp/cairn-x", "--repo", "a=/tmp/cairn-y"], "is given twice"),
    (["--repo", "a=/tmp/cairn-x", "--repo", "b=/tmp/cairn-x/"], "is given twice"),
    (["--backup-dir", "/tmp/cairn-x", "--repo", "default=/tmp/cairn-y"], "names the first"),
    (["--repo", "bad=ftp://host/p"], "repository 'bad'"),
    (sum([["--repo", "n%d=/tmp/cairn-r%d" % (i, i)] for i in range(9)], []), "at most 8"),
])
def test_bad_repository_flags_stop_the_start(server_factory, args, words):
    s = server_factory(extra_args=args, start=False)
    s.start(wait=False)
    assert s.wait_exit(30) != 0
    err = s.stderr_text()
    assert words in err, err
    assert not s.data_dir.exists() or not (s.data_dir / "db.sqlite").exists()


@pytest.mark.parametrize("flag", ["--backup-dir", "--repo"])
@pytest.mark.parametrize("sub", ["", "snapshots", "snapshots/mine", "raft", "branches/"])
def test_a_repository_in_cairns_own_places_stops_the_start(server_factory, flag, sub):
    """The data directory, its raft, branches and snapshots are cairn's: a repository
    there would mix backups with cairn's own files (the Raft snapshots' pruning deletes
    every older backup in DATA/snapshots). Refused at the start, naming the place."""
    s = server_factory(start=False)
    place = str(s.data_dir / sub) if sub else str(s.data_dir)
    s.extra_args = [flag, ("mine=" if flag == "--repo" else "") + place]
    s.start(wait=False)
    assert s.wait_exit(30) != 0
    err = s.stderr_text()
    assert "a place of cairn's own" in err and str(s.data_dir) in err, err
    assert not (s.data_dir / "db.sqlite").exists()


def test_a_repository_beside_cairns_own_places_in_the_data_directory_is_taken(server_factory):
    s = server_factory(start=False)
    s.extra_args = ["--backup-dir", str(s.data_dir / "backups")]
    s.start()
    assert_exec_ok(s.execute(["CREATE TABLE t(x)"]))
    r = s.post("/db/execute", ["BACKUP DATABASE"])
    assert r.status == 200 and "error" not in r.json()["results"][0], r
    s.stop()


@pytest.mark.cluster
def test_a_cluster_shares_a_named_bucket_across_a_failover(s3, make_cluster, monkeypatch,
                                                           server_factory, cairn_bin, tmp_path):
    """Every node has its own 'default' directory and the same bucket as 'cloud'. After
    the leader that took the full backup into 'cloud' is killed, the new leader's
    incremental into 'cloud' chains to it (though the new leader's 'default' holds a
    newer full backup), and a live restore of it applies on every node. Then, on a fresh
    machine with nothing but the bucket's credentials, both `cairnd --restore-from` and
    `cairn restore ... latest` rebuild the cluster's database from the bucket alone."""
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    c = make_cluster(3)
    # Flags are per node: each its own directory, all the same bucket.
    for n in c.nodes:
        n.extra_args = list(n.extra_args) + ["--backup-dir", str(n.backup_dir),
                                             "--repo", "cloud=" + s3.url]
        n.restart()
    c.wait_converged()
    leader = c.leader()
    assert_exec_ok(leader.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                                  ["INSERT INTO t(v) VALUES('r%d')" % i for i in range(300)]))
    full = backuputil.admin_backup(leader, {"type": "full", "to": "cloud"})
    assert full["repository"] == "cloud"
    old = leader
    old.kill()
    leader = c.leader(among=[n for n in c.nodes if n is not old], timeout=30)
    old.start()
    c.wait_converged()
    assert_exec_ok(leader.execute(["UPDATE t SET v = 'x' WHERE id < 10"]))
    newer = backuputil.admin_backup(leader, {"type": "full"})
    assert newer["repository"] == "default"
    assert_exec_ok(leader.execute(["DELETE FROM t WHERE id > 250"]))
    want = leader.rows("SELECT id, v FROM t ORDER BY id", level="strong")
    inc = backuputil.admin_backup(leader, {"type": "incremental", "to": "cloud"})
    assert inc["parent_id"] == full["id"] and inc["repository"] == "cloud", inc
    # One catalogue: the shared bucket's backups are held by every node.
    cat = {(e["repository"], e["id"]): sorted(e["nodes"]) for e in backuputil.admin_list(leader)}
    ids = sorted(n.id for n in c.nodes)
    assert cat[("cloud", full["id"])] == ids and cat[("cloud", inc["id"])] == ids, cat
    assert cat[("default", newer["id"])] == [leader.id], cat
    assert_exec_ok(leader.execute(["INSERT INTO t(v) VALUES('after')"]))
    r = leader.raw("POST", "/admin/restore", {"backup_id": inc["id"]}, timeout=120)
    assert r.status == 200, r
    c.wait_converged()
    for n in c.nodes:
        got = n.local_rows("SELECT id, v FROM t ORDER BY id")
        assert [list(x) for x in got] == [list(x) for x in want], n.name

    # A fresh machine: the bucket alone.
    fresh = server_factory(extra_args=["--restore-from", s3.url])
    assert [list(x) for x in fresh.rows("SELECT id, v FROM t ORDER BY id")] == \
        [list(x) for x in want]
    assert "restored backup %s" % inc["id"] in fresh.stderr_text()
    out = str(tmp_path / "fresh.db")
    r = subprocess.run([str(cairn_bin), "restore", "--repo", s3.url, "latest", "--out", out],
                       capture_output=True, text=True, timeout=120, env=s3.env(
                           {"AWS_ENDPOINT_URL_S3": s3.endpoint}))
    assert r.returncode == 0, r
    with sqlite3.connect(out) as db:
        assert [list(x) for x in db.execute("SELECT id, v FROM t ORDER BY id")] == \
            [list(x) for x in want]


def cbk_head(data):
    """(format version, codec) of a backup file's first bytes."""
    return int.from_bytes(data[8:12], "little"), data[49]


def test_backup_compression_follows_the_repository_or_the_flag(server_factory, tmp_path, s3,
                                                               monkeypatch):
    """A node's backups: LZ4 (codec 1) into a directory, zstd (codec 0) into S3, all of
    format version 2 (they record the cluster's history); --backup-compression zstd:5
    makes every backup zstd, lz4 every one LZ4; each restores into a branch with the
    rows."""
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    for flag, want_dir, want_s3 in ((None, (2, 1), (2, 0)), ("zstd:5", (2, 0), (2, 0)),
                                    ("lz4", (2, 1), (2, 1))):
        local = str(tmp_path / ("local-%s" % (flag or "default")).replace(":", "-"))
        prefix = "cloud-%s" % (flag or "default").replace(":", "-")
        args = ["--backup-dir", local, "--repo", "cloud=%s/%s" % (s3.url, prefix),
                "--s3-endpoint", s3.endpoint]
        if flag:
            args += ["--backup-compression", flag]
        s = server_factory(extra_args=args)
        assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                                 ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(300)]))
        d = backup(s, "default")
        c = backup(s, "cloud")
        assert isinstance(d, dict) and isinstance(c, dict), (d, c)
        assert (d["compression"], c["compression"]) == (
            "lz4" if want_dir[1] else "zstd", "lz4" if want_s3[1] else "zstd"), (flag, d, c)
        with open(os.path.join(local, d["id"] + ".cbk"), "rb") as f:
            assert cbk_head(f.read(64)) == want_dir, flag
        obj = s3.boto().get_object(Bucket=BUCKET, Key="%s/%s/%s.cbk" % (s3.prefix, prefix, c["id"]))
        assert cbk_head(obj["Body"].read(64)) == want_s3, flag
        for e in (d, c):
            branch = "b" + e["id"].replace("-", "")[-8:]
            r = s.execute(["RESTORE DATABASE FROM %s TO BRANCH %s" % (
                backuputil.sql_quote(e["id"]), backuputil.sql_quote(branch))])
            assert_exec_ok(r)
            rows = backuputil.branch_rows(s, branch, "SELECT count(*) FROM t")
            assert rows == [[300]], (flag, e["id"], rows)
        s.stop()


@pytest.mark.parametrize("value", ["gzip", "zstd:0", "lz4:0", "zstd:23", "lz4:"])
def test_a_bad_backup_compression_stops_the_start(cairnd_bin, tmp_path, free_port, value):
    p = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "data"),
                        "--http-addr", "127.0.0.1:%d" % free_port(),
                        "--raft-addr", "127.0.0.1:%d" % free_port(),
                        "--backup-compression", value],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "cannot start: compression \"%s\"" % value in p.stderr, p.stderr
