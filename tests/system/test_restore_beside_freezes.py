"""A live restore's swap never waits on the loop for a backup or a Raft snapshot that
reads the database being replaced.

Both read a frozen state of the old file (store.c, storeFreeze): a connection with a
read transaction open, and a descriptor of the file. The swap (replaceLocked, on the
loop) waited until every such freeze had ended. A Raft snapshot's freeze ends only in
its finalize, which libraft runs on that same loop: a swap applied while a snapshot was
being written (every live restore asks for one, so two restores close together met
one) hung the node for good. A backup's freeze ends on its own thread, but the loop,
and with it the node's part in the cluster, stood still until the backup finished.

Now the swap goes ahead beside them, and they finish reading the old file (its inode
lives on in their descriptors) into what they write: the state at their own index.

Waiting is a poll with a deadline; the requests carry deadlines of their own.
"""
import os
import threading

import pytest

import backuputil
from conftest import deadline_seconds, wait_until
from test_restore_kill import fd_targets

ROWS = 6000
PAD = 6000  # ~40 MiB of hex digits: at zstd level 15 a backup takes a second or two


def wal_intact(node):
    """Once nothing holds the old, replaced files any more (the freezes of snapshots and
    backups closed their connections to them), the node's WAL is the file at its name:
    a connection to the old file, closing last, deletes "-wal" by name unless told not
    to, and that name is the new file's WAL by then."""
    db = str(node.data_dir / "db.sqlite")
    mine = {db, db + "-wal", db + "-shm"}

    def old_released():
        held = set(fd_targets(node.pid))
        return None if any(p.startswith(db) and p not in mine for p in held) else held

    held = wait_until(old_released, 30, "the replaced database's last reader to close")
    assert db + "-wal" in held, sorted(p for p in held if p.startswith(db))
    assert os.path.exists(db + "-wal")


def rows(node):
    body = node.query("SELECT count(*), sum(length(pad)), max(v) FROM b", level="strong")
    return body["results"][0]["values"]


def restore(node, bid):
    r = node.raw("POST", "/db/execute",
                 ["RESTORE DATABASE FROM %s" % backuputil.sql_quote(bid)], timeout=60)
    assert r.status == 200, (r.status, r.body[:500])
    res = r.json()["results"][0]
    assert "error" not in res, res
    return res


def responsive(node):
    """The node answers a write and a read promptly: its loop is not held."""
    r = node.raw("POST", "/db/execute", ["INSERT INTO w(v) VALUES(1)"], timeout=10)
    assert r.status == 200 and "error" not in r.json()["results"][0], (r.status, r.body[:300])
    node.get_json("/status")


@pytest.mark.smoke
def test_restores_close_together_and_a_backup_beside_them_never_hang_the_node(
        server_factory, tmp_path, cairn_bin):
    # zstd at a high level: backups and snapshots slow enough that a swap meets them.
    s = server_factory(extra_args=["--backup-dir", str(tmp_path / "repo"),
                                   "--backup-compression", "zstd:15"])
    s.execute(["CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT, pad BLOB)",
               "CREATE TABLE w (v)"])
    for start in range(0, ROWS, 1000):
        s.execute([["INSERT INTO b(v, pad) VALUES(?, hex(randomblob(?)))", "row %d" % i, PAD // 2]
                   for i in range(start, start + 1000)], transaction="")
    first = rows(s)
    bid = backuputil.sql_row(s, "BACKUP DATABASE FULL",
                             columns=backuputil.BACKUP_COLUMNS)["backup_id"]
    s.execute(["DELETE FROM b WHERE id % 2 = 0"])
    assert rows(s) != first

    # Restores one after the other: each asks for a Raft snapshot after its swap, and
    # the next swap is applied while that snapshot is being written.
    for _ in range(4):
        restore(s, bid)
        assert rows(s) == first
    responsive(s)
    wal_intact(s)

    # A backup reading the old file while a restore swaps it: both end, the node
    # answering meanwhile, and the backup holds the state it began at.
    s.execute(["DELETE FROM b WHERE id % 3 = 0"])
    changed = rows(s)
    assert changed != first
    took = {}

    def backup():
        try:
            took["row"] = backuputil.sql_row(s, "BACKUP DATABASE FULL",
                                             columns=backuputil.BACKUP_COLUMNS)
        except Exception as e:  # noqa: BLE001 - reported below
            took["error"] = e

    repo = tmp_path / "repo"
    t = threading.Thread(target=backup)
    t.start()
    # Its file appears once it is frozen and writing (or it ended first: then the swap
    # below meets no freeze, and the test checks less but still holds).
    wait_until(lambda: not t.is_alive() or any(p.name.endswith(".cbk.tmp")
                                               for p in repo.iterdir()),
               20, "the backup to start writing", interval=0.002)
    overlapped = t.is_alive()
    print("the backup was writing when the restore was sent: %s" % overlapped)
    restore(s, bid)
    responsive(s)
    t.join(deadline_seconds(120))
    assert not t.is_alive(), "the backup did not end"
    assert "error" not in took, took
    assert rows(s) == first
    wal_intact(s)
    assert s.query("SELECT count(*) FROM w", level="strong")["results"][0]["values"] == [[1]]
    # The backup holds the state it was taken at, before the swap.
    out = tmp_path / "changed.db"
    backuputil.cli_restore(cairn_bin, repo, took["row"]["backup_id"], out)
    assert backuputil.file_rows(out, "SELECT count(*), sum(length(pad)), max(v) FROM b") == \
        changed, overlapped
