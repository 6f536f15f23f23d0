"""Another process's sqlite3 on a running node's database file.

Users read db.sqlite with the sqlite3 shell or a script beside a running node. SQLite
makes that safe only while every connection of the node holds its SHARED lock on the
file: a connection that closes and finds no other lock believes itself the last, runs
a checkpoint and deletes the WAL and its index. POSIX locks belong to the process and
inode, and closing any descriptor of the file drops them all, SQLite's included. cairnd
once opened and closed db.sqlite itself for every snapshot, backup and /status: after
the first, the next sqlite3 to close its connection checkpointed the WAL into the file
with no page checksums (the node then refused its own pages as damaged and stopped
applying) and deleted the WAL under it.

Each test asserts what another process sees (fcntl F_GETLK on SQLite's shared-lock
range names cairnd's pid) after each of cairnd's ways of reading its file, and what an
external reader's open and close leaves behind.
"""
import os
import sqlite3
import subprocess

import backuputil
from conftest import assert_exec_ok, sqlite_lock_holder, wait_until


def assert_node_holds(s, what):
    db = s.data_dir / "db.sqlite"
    holder = sqlite_lock_holder(db)
    assert holder == s.pid, (
        "after %s, cairnd (pid %d) holds no SHARED lock on %s (holder: %r): another "
        "process's sqlite3 closing the file would checkpoint it and delete its WAL"
        % (what, s.pid, db, holder))


def external_read(path, table="t"):
    """What a user's script does: open, read in a transaction, close."""
    con = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN")
        n = con.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
        con.execute("COMMIT")
        return n
    finally:
        con.close()


def fill(s, n, start=0):
    for i in range(n):
        assert_exec_ok(s.execute([["INSERT INTO t(v) VALUES (?)", "row-%d" % (start + i)]]))


def test_every_way_the_node_reads_its_file_keeps_its_lock(server_factory, tmp_path):
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2",
                                   "--backup-dir", str(repo)])
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_node_holds(s, "the first write")

    fill(s, 10)  # past the snapshot threshold, twice
    wait_until(lambda: (s.get_json("/status")["raft"].get("last_snapshot_index") or 0) >= 8, 30,
               "a Raft snapshot")
    assert_node_holds(s, "a Raft snapshot")

    s.get_json("/status")
    assert_node_holds(s, "GET /status")

    r = s.raw("POST", "/admin/snapshot")
    assert r.status == 200, r
    assert_node_holds(s, "POST /admin/snapshot")

    bid = backuputil.backup_sql(s, "full")["backup_id"]
    fill(s, 3, 10)
    backuputil.backup_sql(s, "incremental")
    assert_node_holds(s, "BACKUP DATABASE and an incremental")

    r = s.raw("GET", "/db/backup")
    assert r.status == 200 and r.body[:16] == b"SQLite format 3\x00", r
    assert_node_holds(s, "GET /db/backup")

    r = s.raw("GET", "/metrics")
    assert r.status == 200, r
    assert_node_holds(s, "GET /metrics")

    r = s.post("/db/execute", ["RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid)])
    assert r.status == 200 and "error" not in r.text, r.text
    assert_node_holds(s, "RESTORE DATABASE (the file swapped)")

    # And what the user's script then does leaves the node whole.
    n = s.scalar("SELECT count(*) FROM t")
    assert external_read(s.data_dir / "db.sqlite") == n
    fill(s, 5, 100)
    assert s.scalar("SELECT count(*) FROM t") == n + 5
    assert s.get_json("/status")["store"].get("checksum_failures", 0) == 0


def test_a_users_sqlite3_beside_a_node_that_snapshots_damages_nothing(server_factory, cairn_bin):
    s = server_factory(extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"])
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]))
    db = s.data_dir / "db.sqlite"
    wal = s.data_dir / "db.sqlite-wal"
    for round_ in range(4):
        fill(s, 6, round_ * 6)  # a snapshot each round
        wait_until(lambda: (s.get_json("/status")["raft"].get("last_snapshot_index") or 0)
                   >= 6 * (round_ + 1), 60, "snapshot of round %d" % round_)
        fill(s, 1, 1000 + round_)  # frames in the WAL that are not in the file
        assert wal.exists(), "round %d: the WAL is gone before the reader" % round_
        assert external_read(db) == 7 * (round_ + 1)
        assert wal.exists(), ("round %d: a reader's close deleted the running node's WAL"
                              % round_)
    fill(s, 3, 5000)
    assert s.scalar("SELECT count(*) FROM t") == 31
    assert s.get_json("/status")["store"].get("checksum_failures", 0) == 0
    s.stop()
    p = subprocess.run([str(cairn_bin), "check", str(s.data_dir)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    s.start()
    assert s.scalar("SELECT count(*) FROM t") == 31


def test_a_snapshot_a_reader_held_back_is_taken_once_it_lets_go_with_no_write_after(
        server_factory):
    """libraft asks for a snapshot only after an apply. A snapshot refused because a
    reader keeps the WAL from being checkpointed must still be taken once the reader is
    gone, although nobody writes again: else the log stays uncompacted, and held in
    memory, for as long as the node is quiet (a CI run once waited 60 s for a leader's
    snapshot after a bulk load). cairnd tries again by itself, 1 s after the refusal,
    then 2, 4, ... at most 8 s apart."""
    s = server_factory(extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"])
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]))
    fill(s, 1)
    refused = "a reader keeps the WAL from being checkpointed"
    # A reader whose transaction began while the WAL held frames.
    con = sqlite3.connect(str(s.data_dir / "db.sqlite"), timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN")
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        fill(s, 8, 1)
        last = s.get_json("/status")["raft"]["applied_index"]
        after_last = s.stderr_text().count(refused)
        assert after_last > 0, "no snapshot was refused beside the reader"
        # Nobody writes; the node tries again (the last entry's own try may come once).
        wait_until(lambda: s.stderr_text().count(refused) >= after_last + 2, 20,
                   "the node to try its refused snapshot again with no write")
        assert (s.get_json("/status")["raft"].get("last_snapshot_index") or 0) < last
    finally:
        con.close()
    wait_until(lambda: (s.get_json("/status")["raft"].get("last_snapshot_index") or 0) >= last,
               40, "the deferred snapshot (at index %d or past) once the reader let go" % last)
    assert s.scalar("SELECT count(*) FROM t") == 9
