"""cairn_backups, the node's backup catalog, at every read level and in mixed batches.

Before: `level=strong` reads went through the log and the writer, which has no catalog:
`no such table: cairn_backups`; so did a /db/request batch mixing a catalog read with a
write. Strong reads now run on the leader's reader and see it; a batch that writes cannot
read it (each node's catalog differs, and a write that depended on it would make the
replicas differ), and is refused with 400 saying so, before anything is written.
"""
import backuputil
from conftest import assert_exec_ok


def test_catalog_at_every_level_and_refused_in_writes(server):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE z(x)"]))
    backuputil.sql_row(s, "BACKUP DATABASE FULL", columns=backuputil.BACKUP_COLUMNS)
    for level in ("none", "weak", "linearizable", "strong"):
        doc = s.query("SELECT count(*) FROM cairn_backups", level=level)
        assert doc["results"][0]["values"] == [[1]], (level, doc)
    doc = s.request(["SELECT count(*) FROM cairn_backups", "SELECT count(*) FROM z"])
    assert doc["results"][0]["values"] == [[1]], doc
    for path in ("/db/request", "/db/execute"):
        r = s.post(path, ["SELECT count(*) FROM cairn_backups", "INSERT INTO z VALUES(1)"])
        assert r.status == 400 and "each node's differs" in r.json()["error"], (path, r)
        r = s.post(path, ["INSERT INTO z SELECT count(*) FROM cairn_backups"])
        assert r.status == 400, (path, r)
    assert s.scalar("SELECT count(*) FROM z") == 0
