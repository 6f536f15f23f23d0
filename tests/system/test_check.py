"""`cairn check` and `cairn log verify`: offline checks of a data directory.

A real cairnd writes a data directory once per module (small snapshot thresholds, so that
it holds closed segments, Raft snapshots and the backups they name), then stops cleanly.
Each test checks a copy: healthy, then damaged one way (a b-tree page of db.sqlite, a
Raft segment's batch, a truncated segment, a snapshot .cbk, a backup of a --repo
repository), and each damage must make the command exit 1 naming the file. A running
node is reported as the lock's holder; `check --host` reports GET /status. The tests of
`check --repo` run on a directory and on an S3 prefix (backuputil's `repo` fixture).
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess

import pytest

from backuputil import repo, repo_kind  # noqa: F401 (fixtures)
from conftest import flip, ServerFactory
from s3util import s3env  # noqa: F401 (fixture)

ITEM_KEYS = {"check", "status", "ok", "file", "message"}
LOG_KEYS = {"ok", "files_checked", "bytes_checked", "entries", "entry_bytes", "first_index", "last_index",
            "closed_segments", "open_segments", "snapshots", "term", "voted_for", "snapshot",
            "problems", "problems_omitted"}
CHECK_KEYS = {"ok", "data_dir", "running", "lock_pid", "items", "raft_log", "repo", "problems"}


# ---------------------------------------------------------------------------
# helpers

@pytest.fixture
def cli(cairn_bin, tmp_path, deadline):
    """run(*args, timeout=120) -> CompletedProcess of the cairn command (text)."""
    def run(*args, timeout=120):
        env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
        return subprocess.run([str(cairn_bin)] + [str(a) for a in args], input="",
                              capture_output=True, text=True, env=env,
                              timeout=deadline(timeout))
    return run


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    return r


def fails(r, *needles, code=1):
    assert r.returncode == code, "exit %d (want %d)\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, code, r.stdout, r.stderr)
    for n in needles:
        assert n in r.stdout + r.stderr, "%r not in output:\n%s\n%s" % (n, r.stdout, r.stderr)
    return r


def one_json(r):
    def no_constants(name):
        raise ValueError("non-standard JSON constant %s" % name)
    text = r.stdout.strip()
    assert text and "\n" not in text, "want one JSON line; stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr)
    return json.loads(text, parse_constant=no_constants)


def lines_with(text, status):
    return [l for l in text.splitlines() if l.startswith(status + " ")]



def closed_segments(data):
    return sorted(p for p in (data / "raft").iterdir()
                  if len(p.name) == 33 and p.name[16] == "-")


def fill_repo(tmp_path, cli, db, repo):
    """Puts a full and an incremental backup of a copy of db into `repo` (a Repo);
    returns their object names, oldest first."""
    src = tmp_path / "src.db"
    shutil.copy(db, src)
    ok(cli("backup", "create", "--db", src, "--repo", repo, "--type", "full"))
    con = sqlite3.connect(str(src), isolation_level=None)
    con.execute("INSERT INTO t(v) VALUES(randomblob(3000))")
    con.close()
    ok(cli("backup", "create", "--db", src, "--repo", repo, "--type", "incremental"))
    backups = repo.backups()
    assert len(backups) == 2
    return backups


# ---------------------------------------------------------------------------
# the data directory every test copies

@pytest.fixture(scope="module")
def base_data(tmp_path_factory, cairnd_bin):
    base = tmp_path_factory.mktemp("check_base")
    factory = ServerFactory(base)
    s = factory(extra_args=["--snapshot-threshold", "64", "--snapshot-trailing", "32"])
    try:
        s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(300):
            s.execute([["INSERT INTO t(v) VALUES(randomblob(?))", 200 + (i % 7) * 300]])
    finally:
        problems = factory.teardown()
    assert not problems, problems
    data = s.data_dir
    assert len(closed_segments(data)) >= 2, sorted(os.listdir(data / "raft"))
    assert list((data / "snapshots").glob("*.cbk")), "no snapshot backups were written"
    assert not (data / "db.sqlite-wal").exists() or (data / "db.sqlite-wal").stat().st_size == 0
    return data


@pytest.fixture
def data(base_data, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(base_data, d)
    return d


# ---------------------------------------------------------------------------
# usage

@pytest.mark.parametrize("args,needles", [
    (["check", "--help"], ["usage: cairn check", "--repo", "--host", "--json", "DATA_DIR"]),
    (["help", "check"], ["usage: cairn check", "integrity_check"]),
    (["log", "--help"], ["usage: cairn log", "verify"]),
    (["log", "verify", "--help"], ["usage: cairn log verify", "--json", "DATA_DIR"]),
    (["help", "log", "verify"], ["usage: cairn log verify"]),
    (["--help"], ["check", "log"]),
])
def test_help(cli, args, needles):
    r = ok(cli(*args))
    for n in needles:
        assert n in r.stdout, "%r not in:\n%s" % (n, r.stdout)


@pytest.mark.parametrize("args,needle", [
    (["check"], "no data directory given"),
    (["check", "a", "b"], "one data directory"),
    (["check", "--host", "http://127.0.0.1:1", "somewhere"], "no DATA_DIR"),
    (["check", "--bogus", "x"], "bogus"),
    (["log"], "no subcommand given"),
    (["log", "bogus"], "unknown subcommand 'bogus'"),
    (["log", "verify"], "no data directory given"),
])
def test_usage_errors(cli, args, needle):
    fails(cli(*args), needle, code=2)


# ---------------------------------------------------------------------------
# healthy

def test_healthy(cli, data):
    r = ok(cli("check", data))
    assert not lines_with(r.stdout, "DAMAGED"), r.stdout
    for f in ("LOCK", "node.json", "cluster-id", "db.sqlite", "raft/", "snapshots/"):
        assert any(f in l for l in lines_with(r.stdout, "OK")), "%s not OK:\n%s" % (f, r.stdout)
    assert "is healthy" in r.stdout
    # The check leaves no file behind in the data directory.
    assert sorted(os.listdir(data)) == sorted(os.listdir(data.parent / "data"))
    assert not (data / "db.sqlite-wal").exists() and not (data / "db.sqlite-shm").exists()

    doc = one_json(ok(cli("check", "--json", data)))
    assert set(doc) == CHECK_KEYS
    assert doc["ok"] is True and doc["running"] is False and doc["problems"] == 0
    assert doc["repo"] is None
    assert all(set(i) == ITEM_KEYS and i["ok"] for i in doc["items"]), doc["items"]
    assert [i["check"] for i in doc["items"]][:6] == ["lock", "node", "cluster", "database",
                                                      "page checksums", "raft"]
    sums = doc["items"][4]
    assert sums["ok"] and "match their checksums" in sums["message"], sums
    assert set(doc["raft_log"]) == LOG_KEYS


def test_log_verify_healthy(cli, data):
    r = ok(cli("log", "verify", data))
    assert "is sound" in r.stdout and "entries" in r.stdout
    doc = one_json(ok(cli("log", "verify", "--json", data)))
    assert set(doc) == LOG_KEYS | {"raft_dir"}
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["entries"] == doc["last_index"] - doc["first_index"] + 1
    # Every payload is padded to 8 bytes; payloads are part of what was read.
    assert 8 * doc["entries"] <= doc["entry_bytes"] < doc["bytes_checked"]
    assert doc["closed_segments"] >= 2 and doc["files_checked"] >= 3
    assert doc["snapshot"]["index"] >= doc["first_index"] - 1
    # The newest snapshot names a backup that is in snapshots/.
    assert (data / "snapshots" / ("%s.cbk" % doc["snapshot"]["backup"])).exists()
    # The raft directory itself is accepted too.
    ok(cli("log", "verify", data / "raft"))


def test_healthy_with_repo(cli, data, tmp_path, repo):
    backups = fill_repo(tmp_path, cli, data / "db.sqlite", repo)
    r = ok(cli("check", data, "--repo", repo))
    assert backups[-1] in r.stdout and "chain of 2 files" in r.stdout
    doc = one_json(ok(cli("check", "--json", data, "--repo", repo)))
    assert doc["repo"] == str(repo)
    assert [i for i in doc["items"] if i["check"] == "backup" and i["ok"]]


# ---------------------------------------------------------------------------
# damage

def test_damaged_database(cli, data):
    db = data / "db.sqlite"
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()[0]
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    assert os.path.getsize(db) >= (root + 1) * page_size
    # The b-tree page header of the table's root page (type, cell count, content start).
    flip(db, (root - 1) * page_size, 8)
    r = fails(cli("check", data), "problem")
    bad = lines_with(r.stdout, "DAMAGED")
    assert any("db.sqlite" in l for l in bad), r.stdout
    doc = one_json(fails(cli("check", "--json", data)))
    assert doc["ok"] is False
    item = [i for i in doc["items"] if i["check"] == "database"][0]
    assert item["status"] == "DAMAGED" and item["file"] == "db.sqlite" and item["message"]
    # The rest still checked out.
    assert [i for i in doc["items"] if i["check"] == "raft"][0]["ok"] is True


def test_database_with_a_partial_last_page(cli, data):
    """db.sqlite longer than its whole pages (a write cut short): cairnd refuses to start
    on it, so check must not call it healthy (before, it said so: SQLite and the page
    checksums both leave the bytes after the last whole page alone)."""
    with open(data / "db.sqlite", "ab") as f:
        f.write(b"\x01" * 100)
    r = fails(cli("check", data), "problem")
    bad = lines_with(r.stdout, "DAMAGED")
    assert any("db.sqlite" in l and "whole" in l for l in bad), r.stdout


def test_damaged_raft_segment(cli, data):
    seg = closed_segments(data)[-1]
    flip(seg, seg.stat().st_size - 3, 1)  # in the data of its last batch
    name = "raft/" + seg.name
    r = fails(cli("check", data), name, "data checksum mismatch")
    assert any(name in l for l in lines_with(r.stdout, "DAMAGED"))

    r = fails(cli("log", "verify", data), name)
    assert r.stdout.startswith(name + ": batch at offset "), r.stdout
    assert "first bad file: " + name in r.stderr
    doc = one_json(fails(cli("log", "verify", "--json", data)))
    assert doc["ok"] is False
    p = doc["problems"][0]
    assert p["file"] == name and isinstance(p["offset"], int) and p["kind"] == "damaged"
    assert "data checksum mismatch (stored 0x" in p["message"]


def test_truncated_raft_segment(cli, data):
    seg = closed_segments(data)[0]
    os.truncate(seg, seg.stat().st_size - 7)
    name = "raft/" + seg.name
    fails(cli("log", "verify", data), name, "runs past the end of the file")
    doc = one_json(fails(cli("check", "--json", data)))
    bad = [i for i in doc["items"] if not i["ok"]]
    assert bad and bad[0]["file"] == name, bad
    assert doc["raft_log"]["problems"][0]["file"] == name


def test_newest_segment_removed(cli, data):
    """The raft directory alone cannot show that its newest segment is gone; the database's
    applied index, which the log must reach, does."""
    seg = closed_segments(data)[-1]
    seg.unlink()
    ok(cli("log", "verify", data))
    r = fails(cli("check", data), "missing from the log")
    assert any(l.split()[1] == "raft/" for l in lines_with(r.stdout, "DAMAGED")), r.stdout


def test_missing_raft_dir(cli, data):
    shutil.rmtree(data / "raft")
    fails(cli("log", "verify", data), "raft")
    r = fails(cli("check", data))
    assert any("raft/" in l for l in lines_with(r.stdout, "MISSING")), r.stdout


def test_damaged_snapshot(cli, data):
    snaps = sorted((data / "snapshots").glob("*.cbk"))
    full = snaps[0]  # the oldest: a full backup every chain depends on
    flip(full, full.stat().st_size // 2, 4)
    r = fails(cli("check", data))
    bad = lines_with(r.stdout, "DAMAGED")
    assert bad and all(l.split()[1].startswith("snapshots/") for l in bad), r.stdout
    assert full.stem in r.stdout, r.stdout
    doc = one_json(fails(cli("check", "--json", data)))
    assert [i for i in doc["items"] if i["check"] == "snapshot" and not i["ok"]]


def test_damaged_repo_backup(cli, data, tmp_path, repo):
    backups = fill_repo(tmp_path, cli, data / "db.sqlite", repo)
    full = backups[0]
    repo.damage(full, repo.size(full) // 2, 4)
    r = fails(cli("check", data, "--repo", repo))
    assert full[:-len(".cbk")] in r.stdout, r.stdout
    assert lines_with(r.stdout, "DAMAGED")
    doc = one_json(fails(cli("check", "--json", data, "--repo", repo)))
    bad = [i for i in doc["items"] if not i["ok"]]
    assert bad and all(i["check"] == "backup" for i in bad), bad

    # A header that does not even parse: listed on its own.
    repo.write(backups[1], b"\0" * 16 + repo.read(backups[1])[16:])
    r = fails(cli("check", data, "--repo", repo))
    assert any(backups[1] in l for l in lines_with(r.stdout, "DAMAGED")), r.stdout


def test_cluster_id_damaged_or_absent(cli, data):
    cid = (data / "cluster-id").read_text()
    assert re.match(r"^[0-9a-f]{32}\n$", cid), cid
    r = ok(cli("check", data))
    assert any("cluster " + cid.strip() in l for l in lines_with(r.stdout, "OK")), r.stdout
    (data / "cluster-id").write_text(cid[:20] + "\n")
    r = fails(cli("check", data))
    assert any("cluster-id" in l for l in lines_with(r.stdout, "DAMAGED")), r.stdout
    # A directory of a cluster formed before ids has none: not a problem.
    (data / "cluster-id").unlink()
    r = ok(cli("check", data))
    assert any("cluster-id" in l and "before cluster ids" in l
               for l in lines_with(r.stdout, "OK")), r.stdout


def test_node_json_damaged(cli, data):
    (data / "node.json").write_text("{not json")
    r = fails(cli("check", data))
    assert any("node.json" in l for l in lines_with(r.stdout, "DAMAGED")), r.stdout


# ---------------------------------------------------------------------------
# a running node

def test_running_node(cli, server_factory, tmp_path):
    s = server_factory()
    s.execute("CREATE TABLE t(x)")
    s.execute([["INSERT INTO t VALUES(?)", 1]])
    r = cli("check", s.data_dir)
    running = lines_with(r.stdout, "RUNNING")
    assert running and "pid %d" % s.pid in running[0], r.stdout
    assert "node is running" in r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    doc = one_json(cli("check", "--json", s.data_dir))
    assert doc["running"] is True and doc["lock_pid"] == s.pid

    r = ok(cli("check", "--host", s.url))
    assert "leader" in r.stdout and "id 1" in r.stdout
    doc = one_json(ok(cli("check", "--host", s.url, "--json")))
    assert doc["node"]["pid"] == s.pid and doc["raft"]["state"] == "leader"

    # Stopped: the lock is free and names the last holder.
    pid = s.pid
    assert s.stop() == 0
    r = ok(cli("check", s.data_dir))
    assert "not held (the last node here was pid %d)" % pid in r.stdout


def test_online_unreachable(cli, free_port):
    fails(cli("check", "--host", "http://127.0.0.1:%d" % free_port()))
