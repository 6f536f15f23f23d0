"""A snapshot libraft owes is taken even when nobody writes again.

libraft checks whether a snapshot is due only when it applies entries. Entries applied
while the previous snapshot was still being written found one under way; once that one
was done, nothing asked again until the next write, and a quiet node kept its log
uncompacted (and held in memory) for good: 3 starts in 25 of a node with a threshold of
4 kept 5 entries past it. The leader now appends a barrier when a snapshot is owed
(node.c, snapshotOwed), which every node applies.
"""
from conftest import assert_exec_ok, wait_until

MiB = 1 << 20


def test_entries_applied_while_a_snapshot_is_written_get_their_snapshot(server_factory):
    s = server_factory(extra_args=["--snapshot-threshold", "4", "--snapshot-trailing", "2"])
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]))
    # 64 MiB of rows, so that the next snapshot takes a while to write ...
    assert_exec_ok(s.execute(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                              "WHERE x < 64) INSERT INTO t(b) SELECT randomblob(%d) FROM c" % MiB]))
    raft = lambda: s.get_json("/status")["raft"]  # noqa: E731
    # ... which these writes start, and which the last of them are applied beside.
    for i in range(12):
        assert_exec_ok(s.execute([["INSERT INTO t(b) VALUES(?)", "x%d" % i]]))
    last = raft()["applied_index"]
    # Nobody writes again: the node still ends within its threshold of its last entry.
    wait_until(lambda: last - (raft().get("last_snapshot_index") or 0) < 4, 30,
               "a snapshot within 4 entries of index %d with no write after it" % last)
    assert s.scalar("SELECT count(*) FROM t") == 76
