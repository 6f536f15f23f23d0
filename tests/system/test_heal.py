"""Crash safety: auto-heal after an unclean stop, and `cairn repair`.

The damage matrix: bytes flipped in, or truncation of, the database file, the WAL, a
Raft segment, a snapshot and a backup file. `cairn check` names the damaged file; the
node heals itself or `cairn repair` brings back every committed write where a second
copy exists, and says plainly when it cannot.
"""
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess

import pytest

from conftest import assert_exec_ok, flip
from backuputil import repo, repo_kind  # noqa: F401 (fixtures)
from s3util import s3, s3env  # noqa: F401 (fixtures)

ROWS_PER_BATCH = 200
BATCHES = 20


def load(server, batches=BATCHES):
    server.execute(["CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"])
    for b in range(batches):
        stmts = [["INSERT INTO t(v) VALUES(?)", "row-%d-%d-%s" % (b, i, "x" * 300)]
                 for i in range(ROWS_PER_BATCH)]
        assert_exec_ok(server.execute(stmts, transaction=None))
    return server.scalar("SELECT count(*) FROM t")


def digest(server):
    return server.scalar("SELECT count(*) || ':' || total(length(v)) || ':' || max(id) FROM t")


def run_cli(cairn_bin, *args):
    p = subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def smash_pages(path, first_page=2, step=5, page=4096):
    """Overwrite b-tree page headers: structural damage quick_check sees."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for off in range(first_page * page, size, step * page):
            f.seek(off)
            f.write(b"\xde\xad\xbe\xef" * 4)



def segments(data_dir):
    raft = pathlib.Path(data_dir) / "raft"
    closed = sorted(p for p in raft.iterdir() if p.name[0].isdigit() and "-" in p.name)
    return closed


@pytest.fixture
def node(server_factory):
    s = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    return s


def test_clean_stop_leaves_no_mark_and_no_recovery(node):
    load(node, 2)
    assert (node.data_dir / "RUNNING").exists()
    node.stop()
    assert not (node.data_dir / "RUNNING").exists()
    node.start()
    assert node.get_json("/status")["last_recovery"] is None


@pytest.mark.smoke
def test_kill9_then_start_checks_and_reports(node):
    want = load(node, 3)
    node.kill()
    assert (node.data_dir / "RUNNING").exists()
    node.start()
    rec = node.get_json("/status")["last_recovery"]
    assert rec["unclean_stop"] is True
    assert rec["database"] == "ok", rec
    assert rec["raft_log"].startswith("ok"), rec
    assert rec["action"] == "none"
    assert rec["applied_index"] > 0
    assert node.scalar("SELECT count(*) FROM t") == want
    assert "unclean stop found" in node.stderr_text()
    # The record survives a clean restart, for operators who look later.
    node.stop()
    node.start()
    assert node.get_json("/status")["last_recovery"]["time"] == rec["time"]


def test_kill9_leftovers_of_restores_and_copies_are_removed_at_the_next_start(node):
    """Files a kill can leave in the data directory in the middle of a long operation,
    each as large as the database, that nothing else would ever remove: a restore's or
    snapshot install's db.sqlite.restored (and its journal) before its swap, the copy of
    a version-1 snapshot's file (db.sqlite.restore, which stayed for ever), a copy from
    the leader (db.sqlite.heal), a backup downloaded for an object store. Planted after a
    kill -9 (the windows are short), they are gone once the node is up again; what is
    not scratch stays."""
    want = load(node, 2)
    node.kill()
    d = node.data_dir
    planted = ["db.sqlite.restored", "db.sqlite.restored-journal", "db.sqlite.heal",
               "db.sqlite.restore",
               ".20261204T000000000Z-0000-abcd.cbk.fetch.tmp"]
    for name in planted + ["keep.txt"]:
        (d / name).write_bytes(b"x" * 65536)
    node.start()
    assert sorted(p.name for p in d.iterdir() if p.name in planted + ["keep.txt"]) == \
        ["keep.txt"]
    assert "temporary file" in node.stderr_text()
    assert node.scalar("SELECT count(*) FROM t") == want


def test_a_killed_repairs_copy_is_removed(node, cairn_bin):
    """DATA/db.sqlite.repair, the copy `cairn repair` writes (a restored backup, a peer's
    database) before it puts it in place, left by a repair that was killed or failed
    (the node stopped cleanly before it). Before, nothing ever removed it, a file as
    large as the database; now the next start or repair does (each holds the
    directory's lock, so no repair is writing it)."""
    want = load(node, 2)
    node.stop()
    copy = node.data_dir / "db.sqlite.repair"
    copy.write_bytes(b"x" * 65536)
    node.start()
    assert not copy.exists()
    assert node.scalar("SELECT count(*) FROM t") == want
    node.stop()
    copy.write_bytes(b"x" * 65536)
    rc, out, err = run_cli(cairn_bin, "repair", node.data_dir)
    assert rc == 0, (out, err)
    assert not copy.exists()


@pytest.mark.smoke
def test_damaged_database_after_crash_is_moved_aside_and_rebuilt(node, cairn_bin):
    load(node)
    before = digest(node)
    node.kill()
    db = node.data_dir / "db.sqlite"
    smash_pages(db)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and "db.sqlite" in out, (rc, out, err)
    node.start()
    assert digest(node) == before
    rec = node.get_json("/status")["last_recovery"]
    assert rec["database"].startswith("damaged:"), rec
    assert "moved the damaged database" in rec["action"], rec
    kept = list((node.data_dir / "corrupt").iterdir())
    assert any(p.name.endswith("-db.sqlite") for p in kept), kept
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


def test_damaged_database_after_crash_with_a_damaged_snapshot_stays_in_place(node, cairn_bin):
    """After kill -9 both the database and the snapshot chain it would be rebuilt from
    are damaged. Before, the start moved the database aside, then failed with libraft's
    "persisted data is corrupted (...)", naming neither file, and left a new empty
    database in its place (which `cairn repair` then called healthy). Now the start
    verifies the chain first and refuses naming the backup file, with the database left
    where it was."""
    load(node)
    node.kill()
    db = node.data_dir / "db.sqlite"
    smash_pages(db)
    snaps = sorted((node.data_dir / "snapshots").glob("*.cbk"))
    assert snaps
    flip(snaps[0], os.path.getsize(snaps[0]) // 2, 64)
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail().splitlines()[-1]
    assert "is damaged" in tail and snaps[0].name in tail, tail
    assert db.exists() and not any((node.data_dir / "corrupt").glob("*db.sqlite*"))
    rc, out, err = run_cli(cairn_bin, "repair", node.data_dir)
    assert rc == 1 and snaps[0].name in err, (out, err)


def test_truncated_database_repaired_offline(node, cairn_bin):
    load(node)
    before = digest(node)
    node.stop()
    db = node.data_dir / "db.sqlite"
    with open(db, "r+b") as f:
        f.truncate(os.path.getsize(db) // 2)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and "db.sqlite" in out, (out, err)
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] is True and report["database_before"].startswith("damaged"), report
    assert report["moved_database"].endswith("-db.sqlite")
    node.start()
    assert digest(node) == before


def test_repair_refuses_while_running(node, cairn_bin):
    load(node, 1)
    rc, out, err = run_cli(cairn_bin, "repair", node.data_dir)
    assert rc == 1 and "stop the node" in err and str(node.pid) in err, err


def test_repair_of_a_healthy_directory_changes_nothing(node, cairn_bin):
    load(node, 2)
    node.stop()
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, err
    report = json.loads(out)
    assert report["action"].startswith("nothing"), report
    assert not (node.data_dir / "corrupt").exists()


def free_leaf_page(db):
    """The number of a leaf page of db's freelist (None when it has none)."""
    with open(db, "rb") as f:
        hdr = f.read(100)
        page = int.from_bytes(hdr[16:18], "big")
        page = 65536 if page == 1 else page
        trunk = int.from_bytes(hdr[32:36], "big")
        while trunk:
            f.seek((trunk - 1) * page)
            t = f.read(page)
            count = int.from_bytes(t[4:8], "big")
            if count:
                return int.from_bytes(t[8:12], "big"), page
            trunk = int.from_bytes(t[0:4], "big")
    return None, page


def partial_last_page(db):
    with open(db, "ab") as f:
        f.write(b"\x01" * 100)


def damaged_free_page(db):
    leaf, page = free_leaf_page(db)
    assert leaf, "no free page"
    flip(db, (leaf - 1) * page + page // 2, 32)


@pytest.mark.parametrize("damage", [partial_last_page, damaged_free_page],
                         ids=["partial_last_page", "damaged_free_page"])
def test_repair_rebuilds_a_database_the_start_refuses(node, cairn_bin, damage):
    """Damage PRAGMA quick_check does not see (a page of the freelist, which no b-tree
    reaches; bytes after the last whole page) and the start's page check refuses. Before,
    `cairn repair` judged the database by quick_check alone: it said "nothing: the
    database and the log are healthy" and exited 0, and the node still refused to start.
    It now judges it as the start and `cairn check` do, and rebuilds it."""
    want = load(node)
    node.execute(["DELETE FROM t WHERE id > 500"])  # free pages for the freelist
    before = digest(node)
    node.stop()
    damage(node.data_dir / "db.sqlite")
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    assert "the database is damaged" in node.stderr_tail(), node.stderr_tail()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and "db.sqlite" in out, (out, err)
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert report["database_before"].startswith("damaged"), report
    assert report["moved_database"].endswith("-db.sqlite"), report
    node.start()
    assert digest(node) == before and node.scalar("SELECT count(*) FROM t") == min(want, 500)
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


@pytest.mark.parametrize("db_damage", [None, "smashed"])
def test_repair_that_cannot_rebuild_leaves_the_database_in_place(node, cairn_bin, db_damage):
    """The snapshot chain the rebuild starts from is damaged. Before, `cairn repair
    --force` moved the healthy database to corrupt/, failed with libraft's "persisted data
    is corrupted (metadata contains term 1)", and left an empty db.sqlite on which the
    node no longer started. Now the chain is verified before anything moves: the repair
    fails naming the backup file, and the database stays where it was, byte for byte
    (damaged or not: what to rebuild from is the operator's next choice). A rebuild that
    fails later puts the database back as well."""
    want = load(node)
    before = digest(node)
    node.stop()
    db = node.data_dir / "db.sqlite"
    if db_damage:
        smash_pages(db)
    image = db.read_bytes()
    snaps = sorted((node.data_dir / "snapshots").glob("*.cbk"))
    assert snaps
    flip(snaps[0], os.path.getsize(snaps[0]) // 2, 64)  # every chain starts at a full one
    args = ["repair", "--json", node.data_dir] + ([] if db_damage else ["--force"])
    rc, out, err = run_cli(cairn_bin, *args)
    assert rc == 1, (out, err)
    assert snaps[0].name in err and "left in place" in err, err
    assert json.loads(out)["moved_database"] is None, out
    assert db.read_bytes() == image
    assert not any((node.data_dir / "corrupt").glob("*db.sqlite*"))
    if not db_damage:
        node.start()
        assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before
        node.stop()


def test_repairs_in_one_second_keep_every_database_moved_aside(node, cairn_bin):
    """Files moved to DATA/corrupt/ are named by the second of the move. Before, a second
    repair within that second renamed its database over the first one's (a damaged
    original lost for good: "nothing is ever deleted"). Each move now takes a free name;
    the repairs here run back to back, well within a second or two of each other."""
    load(node, 2)
    node.stop()
    images = []
    for _ in range(3):
        images.append((node.data_dir / "db.sqlite").read_bytes())
        rc, out, err = run_cli(cairn_bin, "repair", "--force", "--json", node.data_dir)
        assert rc == 0, (out, err)
        assert os.path.exists(json.loads(out)["moved_database"]), out
    kept = sorted((node.data_dir / "corrupt").glob("*-db.sqlite"))
    assert len(kept) == 3, kept
    assert sorted(p.read_bytes() for p in kept) == sorted(images)


def test_damage_quick_check_misses_is_healed_after_a_crash_too(node, cairn_bin):
    """A page of the freelist (which no b-tree reaches, so PRAGMA quick_check does not
    read it) damaged, found at a start after kill -9. Before, that start judged the
    database by quick_check alone and served it, while the next start after a clean
    stop refused it (its page check reads the freelist): a node that served until it
    was stopped cleanly, then could not start. The start after a crash now also runs
    that page check and rebuilds the database."""
    want = load(node)
    node.execute(["DELETE FROM t WHERE id > 500"])
    before = digest(node)
    node.stop()  # every frame in db.sqlite
    node.start()
    node.kill()
    damaged_free_page(node.data_dir / "db.sqlite")
    node.start()
    rec = node.get_json("/status")["last_recovery"]
    assert rec["database"].startswith("damaged:"), rec
    assert "moved the damaged database" in rec["action"], rec
    assert digest(node) == before and node.scalar("SELECT count(*) FROM t") == min(want, 500)
    node.stop()
    node.start()
    assert digest(node) == before
    node.stop()


def test_damaged_wal_is_replayed_from_the_log(node, cairn_bin):
    node.stop()
    node.extra_args = []  # no snapshots: the log holds everything
    node.start()
    want = load(node, 5)
    node.kill()
    wal = node.data_dir / "db.sqlite-wal"
    if not wal.exists() or os.path.getsize(wal) < 4096:
        pytest.skip("the WAL was checkpointed before the kill; nothing to damage")
    flip(wal, os.path.getsize(wal) // 2, 64)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and "db.sqlite-wal" in out and "fails its checksum" in out, (out, err)
    node.start()
    # Frames after the damage fail their checksums and are ignored by SQLite; the
    # database's applied index is then older and the log replays the rest.
    assert node.scalar("SELECT count(*) FROM t") == want


def test_truncated_wal_is_replayed_from_the_log(node, cairn_bin):
    node.stop()
    node.extra_args = []
    node.start()
    want = load(node, 5)
    node.kill()
    wal = node.data_dir / "db.sqlite-wal"
    if not wal.exists() or os.path.getsize(wal) < 3 * 4096:
        pytest.skip("the WAL was checkpointed before the kill; nothing to truncate")
    with open(wal, "r+b") as f:
        f.truncate(os.path.getsize(wal) // 3)
    # A cut WAL looks like a torn write: check says so, the log replays the rest.
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert "db.sqlite-wal" in out, (out, err)
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want


@pytest.mark.smoke
def test_damaged_raft_segment_refuses_start_naming_the_file(node, cairn_bin):
    want = load(node)
    before = digest(node)
    node.kill()
    segs = segments(node.data_dir)
    assert segs, "no closed segment"
    seg = segs[-1]
    flip(seg, os.path.getsize(seg) // 2, 16)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and seg.name in out, (out, err)
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert seg.name in tail and "does not drop log entries" in tail, tail
    # The database holds every entry the log held (the node applied them all before
    # the damage): repair keeps it and starts a new log from it, saying that nothing is
    # lost. Before, it refused, and its only offer, --from-backup, lost every write
    # after the backup.
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "kept the database" in report["action"] and report["moved_log"], report
    assert report["lost"].startswith("nothing"), report
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before
    assert_exec_ok(node.execute([["INSERT INTO t(v) VALUES('after repair')"]]))
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


def test_damaged_snapshot_meta_refuses_start_and_points_at_the_repair_that_keeps_data(
        node, cairn_bin):
    """The newest raft/snapshot-*.meta cut short on a single node whose database holds
    every entry. The start names the file, without the "at offset -1" it printed for a
    problem of a whole file, and points at plain `cairn repair`, which keeps the
    database and loses nothing (before, its single-node advice was only --from-backup,
    which loses every write after the backup)."""
    want = load(node)
    before = digest(node)
    node.stop()
    metas = sorted((node.data_dir / "raft").glob("snapshot-*.meta"),
                   key=lambda p: int(p.name.split("-")[2]))
    assert metas, "no snapshot"
    os.truncate(metas[-1], 10)
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail().splitlines()[-1]
    assert metas[-1].name in tail and "offset -1" not in tail, tail
    assert "plain `cairn repair`" in tail and "--from-backup" not in tail, tail
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "offset -1" not in report["raft_log"], report
    assert "kept the database" in report["action"] and report["lost"].startswith("nothing"), \
        report
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before
    node.stop()


def test_lost_raft_log_refuses_start_and_repair_starts_one_from_the_database(node, cairn_bin):
    """DATA/raft gone (removed, lost, or a repair killed as it replaced it) under a
    database that has applied entries. Before, a single node started a new log at index
    1 under it: the database skipped the new entries up to its applied index, each write
    answered 500 ("entry was applied before this request was answered"), and a replica
    that replayed the log would hold those rows. The start now refuses, naming it, and
    `cairn repair` starts a new log at the database's index from node.json's identity."""
    want = load(node)
    before = digest(node)
    node.stop()
    shutil.rmtree(node.data_dir / "raft")
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail().splitlines()[-1]
    assert "holds no log" in tail and "cairn repair" in tail, tail
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and "raft/" in out, (out, err)
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "kept the database" in report["action"], report
    assert report["lost"].startswith("unknown"), report
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before
    assert_exec_ok(node.execute([["INSERT INTO t(v) VALUES('after repair')"]]))
    node.stop()
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want + 1
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


def test_truncated_open_segment_repair_and_start_agree(node, cairn_bin):
    """kill -9, then the newest open segment cut in the middle of its data (entries the
    database had already applied). Before, `cairn repair` said the directory was
    healthy while cairnd refused to start on it; both now read the log with the same
    code: start refuses naming the damage, repair keeps the database (which holds every
    entry) and starts a new log, and nothing acknowledged is lost."""
    want = load(node)
    before = digest(node)
    node.kill()
    raft = node.data_dir / "raft"
    opens = sorted(p for p in raft.iterdir() if p.name.startswith("open-"))
    data_end = {p: len(p.read_bytes().rstrip(b"\0")) for p in opens}
    newest = max((p for p in opens if data_end[p] > 8), key=lambda p: int(p.name[5:]))
    os.truncate(newest, data_end[newest] // 2)
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert "missing entries" in tail or newest.name in tail, tail
    rc, out, err = run_cli(cairn_bin, "repair", "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "kept the database" in report["action"], report
    assert report["lost"].startswith("nothing"), report
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


@pytest.mark.parametrize("kind", [pytest.param("dir", marks=pytest.mark.smoke), "s3"])
def test_repair_from_backup_after_log_damage(kind, server_factory, cairn_bin, tmp_path,
                                             request, monkeypatch):
    """The repository a directory, or an S3 bucket (s3rver behind the SigV4 proxy)."""
    extra = ["--snapshot-threshold", "8", "--snapshot-trailing", "4"]
    repo = None
    if kind == "s3":
        s3 = request.getfixturevalue("s3")
        for k, v in s3.env().items():
            if k.startswith("AWS_"):
                monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
        repo = s3.url
        extra += ["--backup-dir", repo]
    node = server_factory(extra_args=extra)
    load(node, 5)
    if repo is None:
        repo = node.data_dir.parent / "backups"  # the default repository, beside the data
    body = node.execute(["BACKUP DATABASE FULL TO 'default'"])
    backup_id = body["results"][0]["values"][0][1]
    at_backup = digest(node)
    load(node, 2)  # written after the backup: lost with the log
    node.kill()
    seg = segments(node.data_dir)[-1]
    flip(seg, 64, 16)
    rc, out, err = run_cli(cairn_bin, "repair", "--from-backup", backup_id, "--repo", repo,
                           "--json", node.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "writes after the backup are lost" in report["action"], report
    assert report["moved_log"], report
    node.start()
    assert digest(node) == at_backup
    assert_exec_ok(node.execute([["INSERT INTO t(v) VALUES('after repair')"]]))
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)


def test_repair_from_backup_that_fails_to_install_puts_everything_back(server_factory,
                                                                      cairn_bin):
    """`cairn repair --from-backup` moves the database and the damaged log aside, then
    renames the restored copy in. When that rename fails (injected with strace: an I/O
    error), the directory must be as the repair found it: it was left with no database
    and no log, both in corrupt/, and a message that did not say so."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    load(node, 3)
    backup_id = node.execute(["BACKUP DATABASE FULL TO 'default'"])["results"][0]["values"][0][1]
    load(node, 1)
    node.kill()
    flip(segments(node.data_dir)[-1], 64, 16)
    data = pathlib.Path(node.data_dir)
    repo = data.parent / "backups"

    def state(where):
        """The log's files, byte for byte, and the database's rows (read from a copy of
        its files: the repair's check of the database checkpoints its WAL)."""
        log = sorted((p.name, p.read_bytes()) for p in (where / "raft").iterdir())
        look = where.parent / "look"
        shutil.rmtree(look, ignore_errors=True)
        look.mkdir()
        for p in where.iterdir():
            if p.name.startswith("db.sqlite"):
                shutil.copy(p, look / p.name)
        con = sqlite3.connect(str(look / "db.sqlite"))
        try:
            rows = con.execute("SELECT count(*), total(length(v)), max(id) FROM t").fetchall()
        finally:
            con.close()
        return log, rows

    before = state(data)
    copy = data / "db.sqlite.repair"
    # LeakSanitizer stops the process's threads with ptrace, which strace holds.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P", str(copy), "-e",
                        "trace=renameat2", "-e", "inject=renameat2:error=EIO", str(cairn_bin),
                        "repair", "--from-backup", backup_id, "--repo", str(repo), "--json",
                        str(data)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Input/output error" in p.stderr and "back in place" in p.stderr, p.stderr
    report = json.loads(p.stdout)
    assert report["moved_database"] is None and report["moved_log"] is None, report
    assert state(data) == before
    assert not (data / "corrupt").exists() or not list((data / "corrupt").iterdir())

    rc, out, err = run_cli(cairn_bin, "repair", "--from-backup", backup_id, "--repo", repo,
                           "--json", data)
    assert rc == 0, (out, err)
    assert json.loads(out)["moved_log"]


def test_damaged_snapshot_detected_node_still_serves(node, cairn_bin):
    want = load(node)
    node.execute(["INSERT INTO t(v) VALUES('x')"])
    node.raw("POST", "/admin/snapshot")
    node.stop()
    snaps = sorted((node.data_dir / "snapshots").glob("*.cbk"))
    assert snaps
    flip(snaps[-1], os.path.getsize(snaps[-1]) // 2, 32)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and snaps[-1].name in out, (out, err)
    # The database is current: the snapshot is not needed to start.
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want + 1


def test_damaged_or_truncated_snapshot_set_aside_then_a_new_full_one(node, cairn_bin):
    """docs/OPERATIONS.md, "Damaged snapshot": check names the file; with the node
    stopped its chain goes to DATA/corrupt/; the next snapshot is a full one."""
    want = load(node)
    node.raw("POST", "/admin/snapshot")
    node.stop()
    snaps = sorted((node.data_dir / "snapshots").glob("*.cbk"))
    assert len(snaps) >= 2
    with open(snaps[-1], "r+b") as f:
        f.truncate(os.path.getsize(snaps[-1]) - 100)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 1 and snaps[-1].name in out, (out, err)
    corrupt = node.data_dir / "corrupt"
    corrupt.mkdir(exist_ok=True)
    for p in snaps:  # the whole repository of snapshots: every chain in it
        p.rename(corrupt / p.name)
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want
    snap = node.raw("POST", "/admin/snapshot")
    assert snap.status == 200, snap.text
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)
    listed = sorted((node.data_dir / "snapshots").glob("*.cbk"))
    assert listed and "full backup" in out, out


def test_damaged_backup_detected_and_refused(server_factory, repo, cairn_bin):
    """A backup damaged in its repository (a directory, or a bucket): `cairn check
    --repo` names it, and `cairn repair --from-backup` refuses it, changing nothing."""
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"] +
                          repo.server_args())
    load(node, 2)
    body = node.execute(["BACKUP DATABASE FULL TO 'default'"])
    backup_id = body["results"][0]["values"][0][1]
    node.stop()
    name = "%s.cbk" % backup_id
    repo.damage(name, repo.size(name) // 2, 16)
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir, "--repo", str(repo))
    assert rc == 1 and name in out, (out, err)
    rc, out, err = run_cli(cairn_bin, "repair", "--from-backup", backup_id, "--repo", str(repo),
                           node.data_dir)
    assert rc == 1 and backup_id in err, err
    assert not (node.data_dir / "corrupt").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give one data directory"),
    (["a", "b"], "give one data directory"),
    (["--from-backup", "X", "DATA"], "--from-backup ID and --repo DIR go together"),
    (["--repo", "R", "DATA"], "--from-backup ID and --repo DIR go together"),
    (["--from-backup", "X", "--repo", "R", "--from-peer", "http://x", "DATA"], "not both"),
])
def test_repair_usage_errors(cairn_bin, args, message):
    rc, out, err = run_cli(cairn_bin, "repair", *args)
    assert rc == 2 and message in err, (rc, out, err)


def test_repair_of_a_missing_directory(cairn_bin, tmp_path):
    rc, out, err = run_cli(cairn_bin, "repair", tmp_path / "nope")
    assert rc == 1 and "no data directory" in err and "nope" in err, err


@pytest.mark.parametrize("value", ["abc", "0", "-1", ""])
def test_node_parameter_must_be_a_node_id(node, value):
    r = node.raw("POST", "/db/execute?node=%s" % value, [["SELECT 1"]])
    assert r.status == 400 and "?node must be a node id" in r.json()["error"], r
    r = node.raw("POST", "/admin/backup?node=%s" % value, {})
    assert r.status == 400 and "?node must be a node id" in r.json()["error"], r


def test_node_parameter_naming_no_member(node):
    r = node.raw("POST", "/db/execute?node=7", [["SELECT 1"]])
    assert r.status == 404 and "no node 7" in r.json()["error"], r


def test_check_after_kill9_warns_of_the_unclean_stop(node, cairn_bin):
    """`cairn check` after a kill -9 said `OK LOCK not held` and nothing of the unclean
    stop. It now warns (a warning is not a failure: the next start heals) and says what
    that start will do."""
    load(node, 1)
    node.kill()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0, (out, err)
    warn = [l for l in out.splitlines() if l.startswith("WARNING")]
    assert warn and "RUNNING" in warn[0] and "did not stop cleanly" in warn[0], out
    node.start()
    node.stop()
    rc, out, err = run_cli(cairn_bin, "check", node.data_dir)
    assert rc == 0 and not [l for l in out.splitlines() if l.startswith("WARNING")], out


def strace_kill(cairn_bin, path, call, when, *args):
    """Run `cairn ARGS` under strace, killed with SIGKILL at the WHEN-th CALL (a syscall
    name) on PATH: the call is not made. The CompletedProcess; skips when strace may not
    trace here."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    # LeakSanitizer stops the process's threads with ptrace, which strace holds.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P", str(path), "-e",
                        "trace=" + call, "-e",
                        "inject=%s:error=EIO:signal=SIGKILL:when=%d" % (call, when),
                        str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode != 0, (p.stdout, p.stderr)
    return p


def test_a_repair_killed_after_moving_the_database_aside_is_undone_at_the_next_start(
        node, cairn_bin):
    """`cairn repair DATA` moves the damaged database into corrupt/, then rebuilds it by
    opening the node offline. Killed between the two (at the rebuild's open of DATA/LOCK,
    the second of the run), DATA had no db.sqlite, and nothing said that a repair had
    been cut off. The next start must put the database back (and heal it, as after any
    unclean stop with a damaged database) and say so."""
    load(node)
    before = digest(node)
    node.kill()
    smash_pages(node.data_dir / "db.sqlite")
    data = pathlib.Path(node.data_dir)
    strace_kill(cairn_bin, data / "LOCK", "openat", 2, "repair", data)
    assert list((data / "corrupt").iterdir()), "the repair was killed before its move"
    node.start()
    assert digest(node) == before
    assert "interrupted repair" in node.stderr_tail(), node.stderr_tail()


def test_a_repair_killed_after_moving_the_database_aside_is_undone_by_the_next_repair(
        node, cairn_bin):
    load(node)
    before = digest(node)
    node.stop()
    smash_pages(node.data_dir / "db.sqlite")
    data = pathlib.Path(node.data_dir)
    strace_kill(cairn_bin, data / "LOCK", "openat", 2, "repair", data)
    assert not (data / "db.sqlite").exists()
    rc, out, err = run_cli(cairn_bin, "check", data)
    assert "a repair was cut off" in out, (out, err)
    rc, out, err = run_cli(cairn_bin, "repair", "--json", data)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "interrupted repair" in report["interrupted_repair"], report
    assert report["database_before"].startswith("damaged"), report
    node.start()
    assert digest(node) == before


def rows_and_log(where):
    """The log's files, byte for byte, and the database's rows (read from a copy of its
    files: a repair's check of the database checkpoints its WAL)."""
    log = sorted((p.name, p.read_bytes()) for p in (where / "raft").iterdir())
    look = where.parent / "look"
    shutil.rmtree(look, ignore_errors=True)
    look.mkdir()
    for p in where.iterdir():
        if p.name.startswith("db.sqlite"):
            shutil.copy(p, look / p.name)
    con = sqlite3.connect(str(look / "db.sqlite"))
    try:
        rows = con.execute("SELECT count(*), total(length(v)), max(id) FROM t").fetchall()
    finally:
        con.close()
    return log, rows


def test_a_repair_from_backup_killed_before_its_install_is_undone_at_the_next_start(
        server_factory, cairn_bin):
    """`cairn repair --from-backup` with a damaged log moves the database and the log
    into corrupt/, then renames the restored copy in. Killed just before that rename,
    the next start removed the copy as a leftover and, finding neither a database nor a
    log, started an empty node: every row gone, and no word of it. Now the start puts
    both back (and refuses the damaged log, as before the repair), saying what it did;
    the repair run again succeeds."""
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    load(node, 3)
    backup_id = node.execute(["BACKUP DATABASE FULL TO 'default'"])["results"][0]["values"][0][1]
    at_backup = digest(node)
    load(node, 1)
    node.kill()
    flip(segments(node.data_dir)[-1], 64, 16)
    data = pathlib.Path(node.data_dir)
    repo = data.parent / "backups"
    before = rows_and_log(data)
    strace_kill(cairn_bin, data / "db.sqlite.repair", "renameat2", 1, "repair",
                "--from-backup", backup_id, "--repo", repo, data)
    assert not (data / "db.sqlite").exists() and not (data / "raft").exists()
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert "interrupted repair" in tail and "does not drop log entries" in tail, tail
    assert rows_and_log(data) == before
    rc, out, err = run_cli(cairn_bin, "repair", "--from-backup", backup_id, "--repo", repo,
                           "--json", data)
    assert rc == 0, (out, err)
    node.start()
    assert digest(node) == at_backup


@pytest.mark.parametrize("how", ["fails", "killed"])
def test_a_repair_from_a_peer_that_does_not_finish_leaves_no_join(server_factory, cairn_bin,
                                                                  how):
    """`cairn repair --from-peer URL` wrote join=URL into node.json before it renamed
    the copy in: when that rename failed, the database and the log came back but the
    join stayed, and the next start tried to join a cluster whose database it never
    got. Killed there, nothing came back at all. Now node.json is as it was either way
    (a kill is undone by the next repair or start)."""
    peer = server_factory()
    load(peer, 2)
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    load(node, 3)
    node.stop()
    data = pathlib.Path(node.data_dir)
    identity = json.loads((data / "node.json").read_text())
    before = rows_and_log(data)
    copy = data / "db.sqlite.repair"
    if how == "fails":
        from test_backup_readonly import usable_strace
        strace = usable_strace()
        if strace is None:
            pytest.skip("no strace that may trace here")
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0")
                                       if o)
        p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P", str(copy), "-e",
                            "trace=renameat2", "-e", "inject=renameat2:error=EIO",
                            str(cairn_bin), "repair", "--from-peer", peer.url, str(data)],
                           capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 1 and "back in place" in p.stderr, (p.stdout, p.stderr)
    else:
        strace_kill(cairn_bin, copy, "renameat2", 1, "repair", "--from-peer", peer.url, data)
        rc, out, err = run_cli(cairn_bin, "repair", data)
        assert rc == 0 and "interrupted repair" in out + err, (out, err)
    assert json.loads((data / "node.json").read_text()) == identity
    assert rows_and_log(data) == before
    node.start()
    assert digest(node) == digest(node) and node.scalar("SELECT count(*) FROM t") == 600


def test_a_restore_killed_while_replacing_the_nodes_database_is_settled_at_the_start(
        node, cairn_bin):
    """`cairn restore --force --out DATA/db.sqlite` on a stopped node moves the node's
    -wal and -shm aside before it renames the restored file in. Killed between (here at
    the move of the -shm), the -wal, which holds the node's last commits, stayed under a
    hidden name for ever. The start puts it back beside the database it belongs to."""
    load(node, 4)
    before = digest(node)
    backup_id = node.execute(["BACKUP DATABASE FULL TO 'default'"])["results"][0]["values"][0][1]
    node.kill()
    data = pathlib.Path(node.data_dir)
    db = data / "db.sqlite"
    assert (data / "db.sqlite-wal").exists() and (data / "db.sqlite-shm").exists()
    strace_kill(cairn_bin, str(db) + "-shm", "rename", 1, "restore", "--repo",
                data.parent / "backups", backup_id, "--out", db, "--force")
    assert not (data / "db.sqlite-wal").exists(), "killed before the move"
    node.start()
    assert digest(node) == before
    assert not [p.name for p in data.iterdir() if p.name.startswith(".db.sqlite.replaced-")]
    assert "settled the side files" in node.stderr_tail()


def test_a_repair_killed_while_starting_a_new_log_is_undone_at_the_next_start(node, cairn_bin):
    """`cairn repair` of a damaged log whose entries the database holds moves the log
    into corrupt/ and writes a new one from the database. Killed between (at its mkdir
    of the new DATA/raft), the next start found no log at all. Now the start puts the
    log back, refuses it as damaged as it did before the repair, and says a repair was
    undone; the repair run again keeps every row."""
    want = load(node)
    before = digest(node)
    node.kill()
    seg = segments(node.data_dir)[-1]
    flip(seg, os.path.getsize(seg) // 2, 16)
    data = pathlib.Path(node.data_dir)
    log_before = sorted((p.name, p.read_bytes()) for p in (data / "raft").iterdir())
    strace_kill(cairn_bin, data / "raft", "mkdir", 1, "repair", data)
    assert not (data / "raft").exists(), "killed before the move"
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert "interrupted repair" in tail and seg.name in tail, tail
    assert sorted((p.name, p.read_bytes()) for p in (data / "raft").iterdir()) == log_before
    rc, out, err = run_cli(cairn_bin, "repair", "--json", data)
    assert rc == 0, (out, err)
    node.start()
    assert node.scalar("SELECT count(*) FROM t") == want and digest(node) == before


def test_a_repair_adding_checksums_killed_before_its_install_is_undone(server_factory,
                                                                      cairn_bin):
    """`cairn repair --add-checksums` writes the sealed copy, moves the database aside,
    then renames the copy in. Killed just before that rename, DATA was left with no
    database, and the same repair run again failed (it had none to open). Now that repair
    first puts the database back, says so, and converts it."""
    s = server_factory(extra_args=["--no-page-checksums"])
    load(s, 3)
    before = digest(s)
    s.stop()
    data = pathlib.Path(s.data_dir)
    image = (data / "db.sqlite").read_bytes()
    strace_kill(cairn_bin, data / "db.sqlite.repair", "renameat2", 1, "repair",
                "--add-checksums", data)
    assert not (data / "db.sqlite").exists()
    rc, out, err = run_cli(cairn_bin, "repair", "--add-checksums", "--json", data)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert "interrupted repair" in report["interrupted_repair"], report
    assert "checksum" in report["action"], report
    assert (data / "corrupt" / pathlib.Path(report["moved_database"]).name).read_bytes() == image
    s.start()
    assert digest(s) == before
    assert s.get_json("/status")["store"]["page_checksums"] is True


def test_a_damaged_repair_journal_refuses_start_and_repair_naming_it(node, cairn_bin):
    """A repair's journal (DATA/repair-undo.json) that cannot be read says only that a
    repair was cut off, not what it moved: neither the start nor a repair guesses, and
    each names the file and where the moved files are."""
    load(node, 1)
    node.stop()
    journal = node.data_dir / "repair-undo.json"
    journal.write_bytes(b"{\"version\": 1, \"stamp\": \x00\xff")
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert "repair-undo.json" in tail and "corrupt" in tail, tail
    rc, out, err = run_cli(cairn_bin, "repair", node.data_dir)
    assert rc == 1 and "repair-undo.json" in err, (out, err)
    assert (node.data_dir / "db.sqlite").exists() and journal.exists()



def test_a_repair_from_backup_killed_in_its_restore_leaves_no_hidden_copy(server_factory,
                                                                          cairn_bin):
    """`cairn repair --from-backup` restores the backup into DATA/db.sqlite.repair,
    which gets a hidden name, `.db.sqlite.repair.restore-XXXXXX`, for its last steps.
    Killed then (strace stops it at the first rename after the naming), the hidden file,
    as large as the database, stayed in DATA for good: the start removed only
    db.sqlite.repair. Now the next start removes it too."""
    node = server_factory()
    load(node, 3)
    backup_id = node.execute(["BACKUP DATABASE FULL TO 'default'"])["results"][0]["values"][0][1]
    before = digest(node)
    node.stop()
    data = pathlib.Path(node.data_dir)
    strace_kill(cairn_bin, str(data / "db.sqlite.repair") + "-journal", "rename", 1, "repair",
                "--from-backup", backup_id, "--repo", data.parent / "backups", data)
    hidden = [p.name for p in data.iterdir() if p.name.startswith(".db.sqlite.repair.")]
    assert hidden, "killed before the copy was named"
    node.start()
    assert digest(node) == before
    assert not [p.name for p in data.iterdir() if p.name.startswith(".db.sqlite.repair.")]


def test_an_undo_killed_half_way_is_finished_by_the_next_start(server_factory, cairn_bin):
    """The undo of a repair cut off is itself cut off (the start killed after it put the
    database back, before the log): the journal stays, and the next start finishes the
    undo from what is on disk, the database put back once and not removed."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    load(node, 3)
    backup_id = node.execute(["BACKUP DATABASE FULL TO 'default'"])["results"][0]["values"][0][1]
    load(node, 1)
    node.kill()
    flip(segments(node.data_dir)[-1], 64, 16)
    data = pathlib.Path(node.data_dir)
    before = rows_and_log(data)
    strace_kill(cairn_bin, data / "db.sqlite.repair", "renameat2", 1, "repair",
                "--from-backup", backup_id, "--repo", data.parent / "backups", data)
    stamp = json.loads((data / "repair-undo.json").read_text())["stamp"]
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P",
                        str(data / "corrupt" / ("%s-raft" % stamp)), "-e", "trace=rename", "-e",
                        "inject=rename:error=EIO:signal=SIGKILL:when=1"] + node.argv(),
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert (data / "db.sqlite").exists() and (data / "repair-undo.json").exists()
    assert (data / "corrupt" / ("%s-raft" % stamp)).exists()
    node.start(wait=False)
    assert node.wait_exit(30) == 1
    tail = node.stderr_tail()
    assert "interrupted repair" in tail and "does not drop log entries" in tail, tail
    assert rows_and_log(data) == before
    assert not (data / "repair-undo.json").exists()
