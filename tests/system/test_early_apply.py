"""Early apply (store.h, node.c): a leader with nothing in flight runs a write's SQL on
the request's thread while the loop thread checksums, writes and replicates its log
entry, and the apply of that entry only commits. What a client is told must be what is
stored, what a replay rebuilds and what every replica holds, whether the early run is
committed or rolled back because another entry came first."""

import random
import threading

import pytest

from conftest import assert_exec_ok
from test_cluster import run_workers
from test_durability import _remove_db_files, dump

SCHEMA = [
    "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER UNIQUE, r INTEGER, ts TEXT, v TEXT)",
    "CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)",
    "CREATE TRIGGER guard BEFORE INSERT ON log WHEN NEW.v = 'bad' "
    "BEGIN SELECT RAISE(ROLLBACK, 'bad row'); END",
]
RETURNING = ("INSERT INTO t(k, r, ts, v) VALUES(?, random(), strftime('%Y-%m-%d %H:%M:%f', 'now'), ?) "
             "RETURNING id, k, r, ts")


def early(server):
    st = server.get_json("/status")["store"]
    return st["early_applies"], st["early_discards"]


def returned_rows(results):
    rows = []
    for res in results:
        assert "error" not in res, res
        rows.extend(tuple(v) for v in res.get("values", []))
    return rows


def mixed_batch(rnd, w, i, next_key):
    """One request of a kind that stresses a different path of the apply: RETURNING
    values the client keeps, a ?transaction that fails halfway (nothing of it stays), a
    RAISE(ROLLBACK) that rolls back SQLite's whole transaction, or a bulk insert."""
    pick = rnd.randrange(4)
    tag = "%d-%d" % (w, i)
    if pick == 0:
        stmts = [[RETURNING, next_key(), tag] for _ in range(rnd.randrange(1, 40))]
        return "/db/request", stmts, {}, "returning"
    if pick == 1:
        k = next_key()
        return "/db/execute", [["INSERT INTO t(k, r, v) VALUES(?, random(), ?)", k, tag + "-failed"],
                               ["INSERT INTO t(k, v) VALUES(?, ?)", k, tag + "-failed"]], {"transaction": True}, "failed_txn"
    if pick == 2:
        return "/db/execute", [["INSERT INTO log(v) VALUES(?)", tag],
                               ["INSERT INTO log(v) VALUES(?)", "bad"],
                               ["INSERT INTO log(v) VALUES(?)", tag + "-after"]], {}, "rollback"
    stmts = [["INSERT INTO t(k, r, v) VALUES(?, random(), ?)", next_key(), tag + "-bulk"] for _ in range(500)]
    return "/db/execute", stmts, {"transaction": True}, "bulk"


def check_rolled_back(server, **params):
    """Nothing of a failed ?transaction or of a RAISE(ROLLBACK) write stays."""
    failed = server.scalar("SELECT count(*) FROM t WHERE v LIKE '%-failed'", **params)
    assert failed == 0, "%d rows of failed transactions were kept" % failed
    assert server.scalar("SELECT count(*) FROM log WHERE v = 'bad'", **params) == 0


def check_returned(server, returned, **params):
    stored = {row[0]: tuple(row) for row in server.rows("SELECT id, k, r, ts FROM t", **params)}
    assert returned, "no RETURNING rows were collected"
    for row in returned:
        assert stored.get(row[0]) == row, "client was told %r, the database holds %r" % (
            row, stored.get(row[0]))


def test_early_runs_commit_what_the_client_was_told_and_replay_rebuilds_it(server_factory):
    s = server_factory(extra_args=["--snapshot-threshold", "40", "--snapshot-trailing", "8"])
    assert_exec_ok(s.execute(SCHEMA))
    applies0, _ = early(s)
    rnd = random.Random(7)
    keys = iter(range(1, 10 ** 9))
    returned, kinds = [], {}
    for i in range(150):
        path, stmts, params, kind = mixed_batch(rnd, 0, i, lambda: next(keys))
        r = s.post(path, stmts, **params)
        assert r.status == 200, (r.status, r.body[:300])
        results = r.json()["results"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "returning":
            returned.extend(returned_rows(results))
        elif kind == "failed_txn":
            assert any("error" in x for x in results), results
        elif kind == "rollback":
            assert "bad row" in results[1].get("error", ""), results
    assert all(kinds.get(k, 0) > 10 for k in ("returning", "failed_txn", "rollback", "bulk")), kinds
    applies, _ = early(s)
    # One client, one request at a time: nearly every write runs early. (A write whose
    # whole transaction SQLite rolls back runs again the usual way.)
    assert applies - applies0 >= 100, "only %d of 150 writes were applied early" % (applies - applies0)
    check_returned(s, returned)
    check_rolled_back(s)
    assert s.scalar("SELECT count(*) FROM t WHERE v LIKE '%-bulk'") == 500 * kinds["bulk"]

    before = dump(s, "t") + dump(s, "log")
    assert s.stop() == 0
    assert "db.sqlite" in _remove_db_files(s)
    s.start()
    assert dump(s, "t") + dump(s, "log") == before, "the replay rebuilt other rows than were committed early"


@pytest.mark.smoke
def test_concurrent_writers_roll_early_runs_back_and_lose_nothing(server_factory):
    """Several clients: an early run is often overtaken by another client's entry, or by
    the barrier entry of a linearizable read, and rolled back; each write must still be
    applied exactly once, as its client was told, and a replay must rebuild it."""
    s = server_factory()
    assert_exec_ok(s.execute(SCHEMA))
    lock = threading.Lock()
    counter = iter(range(1, 10 ** 9))
    returned, errors = [], []
    acked = {"bulk": 0}

    def next_key():
        with lock:
            return next(counter)

    def post(path, stmts, **params):
        """The results, or None with the failure in errors."""
        try:
            r = s.post(path, stmts, **params)
        except OSError as e:
            errors.append("%s: %r" % (path, e))
            return None
        if r.status != 200:
            errors.append("%s: HTTP %d %r" % (path, r.status, r.body[:200]))
            return None
        return r.json()["results"]

    def worker(w):
        if w == 0:
            # Linearizable reads append barrier entries between the writes' entries.
            for _ in range(300):
                if post("/db/query", ["SELECT count(*) FROM t"], level="linearizable") is None:
                    return
            return
        rnd = random.Random(100 + w)
        for i in range(40):
            path, stmts, params, kind = mixed_batch(rnd, w, i, next_key)
            results = post(path, stmts, **params)
            if results is None:
                return
            with lock:
                if kind == "returning":
                    returned.extend(returned_rows(results))
                elif kind == "bulk":
                    assert all("error" not in x for x in results), results[:2]
                    acked["bulk"] += len(stmts)

    run_workers(worker, 7, 180)
    assert not errors, errors[:5]
    applies, discards = early(s)
    assert applies > 0, "no write ran early"
    check_returned(s, returned)
    assert s.scalar("SELECT count(*) FROM t WHERE v LIKE '%-bulk'") == acked["bulk"]
    check_rolled_back(s)
    before = dump(s, "t") + dump(s, "log")
    assert s.stop() == 0
    assert "db.sqlite" in _remove_db_files(s)
    s.start()
    assert dump(s, "t") + dump(s, "log") == before
