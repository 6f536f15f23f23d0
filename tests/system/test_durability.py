"""Durability and determinism of a single cairnd across restarts, kills and rebuilds."""

import datetime
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BUILD, assert_exec_ok, deadline_seconds, find_free_ports, wait_until


def dump(s, table, level=None):
    params = {"level": level} if level else {}
    return s.rows("SELECT * FROM %s ORDER BY rowid" % table, **params)


@pytest.mark.smoke
def test_restart_keeps_data(server):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, b BLOB, r REAL)"]))
    for i in range(10):
        assert_exec_ok(s.execute([["INSERT INTO t(name, b, r) VALUES(?, X'00FF', ?)", "n\u00e9%d" % i, i / 4]
                                  for _ in range(10)]))
    before = dump(s, "t")
    assert len(before) == 100

    # The data directory has the documented layout.
    for name in ("LOCK", "node.json", "db.sqlite", "raft", "snapshots"):
        assert (s.data_dir / name).exists(), "missing %s in %s: %s" % (name, s.data_dir, os.listdir(s.data_dir))
    assert (s.data_dir / "raft").is_dir() and (s.data_dir / "snapshots").is_dir()

    rc = s.stop()
    assert rc == 0, "cairnd exited with %s on SIGTERM; stderr:\n%s" % (rc, s.stderr_tail())
    s.start()
    assert dump(s, "t") == before
    # It keeps accepting writes after the restart, with fresh rowids.
    body = s.execute(["INSERT INTO t(name) VALUES('after')"])
    assert body["results"][0].get("last_insert_id") == 101, body
    rc = s.stop()
    assert rc == 0
    s.start()
    assert s.scalar("SELECT count(*) FROM t") == 101


def _writer_pool(s, clients, per_client, on_ack):
    """Starts `clients` threads, each inserting rows (client, seq) one request at a time.

    Returns (threads, acked, attempted, anomalies): acked[c] lists the seqs that got
    HTTP 200 with a clean result; attempted[c] is the highest seq sent by client c.
    A thread stops at the first connection error (the server is gone).
    """
    acked = [[] for _ in range(clients)]
    attempted = [-1] * clients
    anomalies = []

    def worker(c):
        # A new connection per request: a connection error then always means the
        # server is gone, never an idle keep-alive connection being closed.
        for seq in range(per_client):
            body = json.dumps([["INSERT INTO t(client, seq) VALUES(?, ?)", c, seq]])
            attempted[c] = seq
            conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(60))
            try:
                conn.request("POST", "/db/execute", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                return
            finally:
                conn.close()
            if resp.status != 200:
                anomalies.append("client %d seq %d: HTTP %d %r" % (c, seq, resp.status, data[:300]))
                return
            try:
                res = json.loads(data)["results"][0]
            except (ValueError, KeyError, IndexError):
                anomalies.append("client %d seq %d: bad body %r" % (c, seq, data[:300]))
                return
            if "error" in res or res.get("rows_affected") != 1:
                anomalies.append("client %d seq %d: result %r" % (c, seq, res))
                return
            acked[c].append(seq)
            on_ack()

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    return threads, acked, attempted, anomalies


def _check_rows_after_crash(s, acked, attempted, context):
    rows = s.rows("SELECT client, seq FROM t")
    present = {}
    dups = []
    for c, seq in rows:
        key = (c, seq)
        if key in present:
            dups.append(key)
        present[key] = True
    assert not dups, "%s: duplicated rows %r" % (context, dups[:20])
    missing = [(c, seq) for c in range(len(acked)) for seq in acked[c] if (c, seq) not in present]
    assert not missing, "%s: %d acknowledged rows lost, e.g. %r" % (context, len(missing), missing[:20])
    phantom = [(c, seq) for (c, seq) in present if not (0 <= c < len(acked)) or seq > attempted[c]]
    assert not phantom, "%s: rows that were never sent: %r" % (context, phantom[:20])
    return len(rows)


def _remove_db_files(s):
    removed = []
    for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
        p = s.data_dir / name
        if p.exists():
            p.unlink()
            removed.append(name)
    return removed


@pytest.mark.parametrize("snapshots", [False, True], ids=["default", "frequent-snapshots"])
def test_acknowledged_writes_survive_sigkill(server_factory, snapshots):
    clients, per_client = 16, 500
    total = clients * per_client
    seed = int(os.environ.get("CAIRN_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    kill_after = rng.randint(total // 10, (total * 7) // 10)
    context = "seed=%d kill after %d acknowledged writes" % (seed, kill_after)

    args = ["--snapshot-threshold", "64", "--snapshot-trailing", "32"] if snapshots else []
    s = server_factory(extra_args=args)
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL)"]))

    lock = threading.Lock()
    count = [0]
    reached = threading.Event()

    def on_ack():
        with lock:
            count[0] += 1
            if count[0] >= kill_after:
                reached.set()

    threads, acked, attempted, anomalies = _writer_pool(s, clients, per_client, on_ack)
    wait_until(lambda: reached.is_set() or not any(t.is_alive() for t in threads), 180,
               "%d acknowledged writes (%s)" % (kill_after, context))
    assert not anomalies, "%s: %r" % (context, anomalies[:10])
    assert reached.is_set(), "%s: writers stopped early at %d" % (context, count[0])
    s.kill(signal.SIGKILL)
    for t in threads:
        t.join(deadline_seconds(60))
        assert not t.is_alive(), "%s: a writer hangs after the kill" % context
    assert not anomalies, "%s: %r" % (context, anomalies[:10])
    n_acked = sum(len(a) for a in acked)
    assert n_acked >= kill_after

    s.start()
    n_present = _check_rows_after_crash(s, acked, attempted, context)
    assert n_present >= n_acked
    print("%s: %d acknowledged, %d present after restart" % (context, n_acked, n_present))
    # Still writable, without reusing a rowid.
    body = s.execute(["INSERT INTO t(client, seq) VALUES(-1, -1)"])
    assert body["results"][0].get("last_insert_id") == s.scalar("SELECT max(id) FROM t"), body
    assert s.scalar("SELECT count(*) FROM t") == n_present + 1

    if snapshots:
        # What the crashed node recovered is exactly what its snapshots and log say.
        assert [p for p in (s.data_dir / "snapshots").iterdir() if p.is_file()], "no snapshot taken"
        recovered = dump(s, "t")
        assert s.stop() == 0
        assert "db.sqlite" in _remove_db_files(s)
        s.start()
        assert dump(s, "t") == recovered, "%s: rebuild from snapshot + log differs" % context


def test_transaction_is_atomic_across_sigkill(server_factory):
    """A large ?transaction request in flight when the server is killed is, after the
    restart, either wholly present or wholly absent."""
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, batch INTEGER, i INTEGER)"]))
    present_batches = 0
    for batch, n in enumerate([2000, 5000, 10000]):
        body = json.dumps([["INSERT INTO t(batch, i) VALUES(?, ?)", batch, i] for i in range(n)]).encode()
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=deadline_seconds(60))
        try:
            conn.request("POST", "/db/execute?transaction", body=body, headers={"Content-Type": "application/json"})
            # The whole request is on the wire: kill now, before any answer.
            s.kill(signal.SIGKILL)
        finally:
            conn.close()
        s.start()
        got = s.scalar("SELECT count(*) FROM t WHERE batch = ?", batch)
        assert got in (0, n), "batch %d of %d rows: %d rows after SIGKILL + restart" % (batch, n, got)
        present_batches += 1 if got else 0
        # The server works normally after recovery.
        assert_exec_ok(s.execute([["INSERT INTO t(batch, i) VALUES(?, ?)", -1, batch]]))
    assert s.scalar("SELECT count(*) FROM t WHERE batch = -1") == 3
    print("%d of 3 killed transactions were applied" % present_batches)


def test_sigterm_during_writes_is_clean(server_factory):
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL)"]))
    count = [0]
    lock = threading.Lock()
    enough = threading.Event()

    def on_ack():
        with lock:
            count[0] += 1
            if count[0] >= 300:
                enough.set()

    threads, acked, attempted, anomalies = _writer_pool(s, 4, 100000, on_ack)
    wait_until(enough.is_set, 120, "300 acknowledged writes")
    rc = s.stop(timeout=30)
    for t in threads:
        t.join(deadline_seconds(60))
        assert not t.is_alive(), "a writer hangs after SIGTERM"
    assert rc == 0, "cairnd exited with %s on SIGTERM under load; stderr:\n%s" % (rc, s.stderr_tail())
    # Requests cut by the shutdown may fail, but nothing acknowledged is lost.
    s.start()
    _check_rows_after_crash(s, acked, attempted, "SIGTERM under load")


DET_INSERT = (
    "INSERT INTO d(r, b, dt, ts, f, jd, rr) VALUES(random(), randomblob(8), datetime('now'), "
    "CURRENT_TIMESTAMP, strftime('%Y-%m-%d %H:%M:%f', 'now'), julianday('now'), abs(random() % 1000) / 7.0)"
)


def test_deterministic_rebuild_from_snapshot_and_log(server_factory):
    s = server_factory(extra_args=["--snapshot-threshold", "64", "--snapshot-trailing", "32"])
    assert_exec_ok(s.execute([
        "CREATE TABLE d (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, dt TEXT, ts TEXT, f TEXT, jd REAL, "
        "rr REAL, tok INTEGER DEFAULT (random()), created TEXT DEFAULT CURRENT_TIMESTAMP)"
    ]))
    started = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for i in range(300):
        if i % 25 == 0:
            body = s.execute([DET_INSERT, DET_INSERT, DET_INSERT], transaction=True)
        elif i % 10 == 0:
            body = s.execute([DET_INSERT, ["UPDATE d SET r = random(), b = randomblob(4) WHERE id % 7 = ?", i % 7]])
        else:
            body = s.execute([DET_INSERT])
        assert_exec_ok(body)
    # A few writes through the unified endpoint too.
    assert_exec_ok(s.request(["INSERT INTO d(r, f) VALUES(random(), strftime('%f', 'now'))"] * 3))

    before = dump(s, "d")
    assert len(before) >= 300
    # The values really are random and current, so that equality below means something.
    assert len({row[1] for row in before}) > 0.95 * len(before), "random() repeats"
    assert len({row[2] for row in before if row[2] is not None}) > 0.95 * 300, "randomblob() repeats"
    assert len({row[8] for row in before}) > 0.95 * len(before), "DEFAULT (random()) repeats"
    for row in before[:5] + before[-5:]:
        dt = datetime.datetime.strptime(row[3] or row[9], "%Y-%m-%d %H:%M:%S")
        assert abs((dt - started).total_seconds()) < 600, "datetime('now') gave %r, expected about %s" % (
            row[3], started)

    snapdir = s.data_dir / "snapshots"
    wait_until(lambda: [p for p in snapdir.iterdir() if p.is_file() and p.stat().st_size > 0], 30,
               "a snapshot file in %s" % snapdir)

    # 1. Clean stop, database files removed: rebuilt from snapshot + log.
    rc = s.stop()
    assert rc == 0, "cairnd exited with %s on SIGTERM; stderr:\n%s" % (rc, s.stderr_tail())
    assert "db.sqlite" in _remove_db_files(s)
    s.start()
    after = dump(s, "d")
    assert len(after) == len(before), "rebuilt %d rows, had %d" % (len(after), len(before))
    for a, b in zip(after, before):
        assert a == b, "row differs after rebuild:\n  before %r\n  after  %r" % (b, a)

    # 2. SIGKILL, restart without removing anything.
    s.kill(signal.SIGKILL)
    s.start()
    assert dump(s, "d") == before

    # 3. And it goes on: new writes are still deterministic across another rebuild.
    for _ in range(40):
        assert_exec_ok(s.execute([DET_INSERT]))
    before2 = dump(s, "d")
    assert s.stop() == 0
    assert "db.sqlite" in _remove_db_files(s)
    s.start()
    assert dump(s, "d") == before2


def test_connection_state_functions_are_deterministic(server_factory):
    """last_insert_rowid(), changes() and total_changes() read the writer connection's
    history. A rebuild from snapshot + log must still reproduce what they returned:
    identical pages on every replay, whatever SQL the client sent."""
    s = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "2"])
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, c INTEGER)"]))
    for _ in range(12):
        assert_exec_ok(s.execute(["INSERT INTO t(a, b, c) VALUES(last_insert_rowid(), changes(), total_changes())"]))
    before = dump(s, "t")
    wait_until(lambda: [p for p in (s.data_dir / "snapshots").iterdir() if p.is_file()], 30, "a snapshot")
    assert s.stop() == 0
    assert "db.sqlite" in _remove_db_files(s)
    s.start()
    after = dump(s, "t")
    diffs = [(b, a) for b, a in zip(before, after) if a != b]
    assert len(after) == len(before) and not diffs, \
        "rows differ after rebuild (before, after): %r" % (diffs[:5],)


def test_second_instance_on_same_data_dir_is_refused(server):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES(1)"]))
    http_port, raft_port = find_free_ports(2)
    argv = [str(BUILD / "cairnd"), "--data-dir", str(s.data_dir),
            "--http-addr", "127.0.0.1:%d" % http_port, "--raft-addr", "127.0.0.1:%d" % raft_port]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=deadline_seconds(20))
    except subprocess.TimeoutExpired:
        pytest.fail("a second cairnd on %s did not exit within %.0fs" % (s.data_dir, deadline_seconds(20)))
    stderr = p.stderr.decode(errors="replace")
    assert p.returncode == 1, "second cairnd exited with %s; stderr:\n%s" % (p.returncode, stderr)
    assert str(s.pid) in stderr, "stderr does not name the holder's pid %d:\n%s" % (s.pid, stderr)
    # The LOCK file names the holder too.
    assert str(s.pid) in (s.data_dir / "LOCK").read_text(errors="replace")
    # The first one is unharmed and keeps serving reads and writes.
    assert s.running()
    assert_exec_ok(s.execute(["INSERT INTO t VALUES(2)"]))
    assert s.rows("SELECT v FROM t ORDER BY v") == [[1], [2]]
    assert s.stop() == 0
    s.start()
    assert s.rows("SELECT v FROM t ORDER BY v") == [[1], [2]]


def test_second_instance_is_refused_after_the_lock_file_is_removed(server, cairn_bin):
    """DATA/LOCK removed under a running node (an operator cleaning up what looks like a
    stale lock). Before, a second cairnd made a new LOCK, locked it, and ran on the same
    database and log as the first; `cairn check` said no node had run there. The
    directory itself is locked too: the second is refused naming the first's pid, and
    check reports the node running."""
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES(1)"]))
    (s.data_dir / "LOCK").unlink()
    r = subprocess.run([str(cairn_bin), "check", str(s.data_dir)], capture_output=True,
                       text=True, timeout=deadline_seconds(60))
    assert "RUNNING" in r.stdout and str(s.pid) in r.stdout, r.stdout
    http_port, raft_port = find_free_ports(2)
    argv = [str(BUILD / "cairnd"), "--data-dir", str(s.data_dir),
            "--http-addr", "127.0.0.1:%d" % http_port, "--raft-addr", "127.0.0.1:%d" % raft_port]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=deadline_seconds(20))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("a second cairnd ran on %s beside pid %d" % (s.data_dir, s.pid))
    stderr = err.decode(errors="replace")
    assert p.returncode == 1, "second cairnd exited with %s; stderr:\n%s" % (p.returncode, stderr)
    assert "in use by another cairn process (pid %d" % s.pid in stderr, stderr
    assert s.running()
    assert_exec_ok(s.execute(["INSERT INTO t VALUES(2)"]))
    assert s.stop() == 0
    s.start()
    assert s.rows("SELECT v FROM t ORDER BY v") == [[1], [2]]


@pytest.mark.parametrize("which", ["http", "raft"])
def test_port_in_use_at_restart_is_reported(server_factory, which):
    """Restarting a node while another process holds one of its ports: exit 1 at once,
    with a message naming the address and the cause; nothing damaged."""
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES(1)"]))
    assert s.stop() == 0
    port = s.http_port if which == "http" else s.raft_port
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        s.start(wait=False)
        rc = s.wait_exit(timeout=20)
        err = s.stderr_text().split("==== start #2")[-1]
        assert rc == 1, "cairnd exited %s with its %s port taken; stderr:\n%s" % (rc, which, err)
        assert "127.0.0.1:%d" % port in err, err
        assert any(k in err.lower() for k in ("in use", "bind", "listen")), \
            "the message does not say the %s address is taken:\n%s" % (which, err)
    finally:
        squatter.close()
    s.start()
    assert s.rows("SELECT v FROM t") == [[1]]


def test_wal_is_copied_into_the_database_once_a_long_read_lets_go(server):
    """The checkpointer copies WAL frames that no reader needs. A read that holds a
    snapshot from before a burst of writes keeps those frames in the WAL; once it ends,
    the checkpointer must copy them without waiting for another write."""
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE w (id INTEGER PRIMARY KEY, b BLOB)", "INSERT INTO w(b) VALUES(x'00')"]))
    before = s.get_json("/status")["store"]["db_size"]
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12000000) "
            "SELECT count(*) FROM c, w")
    read = {}

    def reader():
        read["rows"] = s.rows(slow, level="none")
        read["done"] = time.monotonic()

    # /status counts every request it has begun, its own included: one more than the
    # polls means the slow read has reached the server.
    polls = [s.get_json("/status")["http"]["requests"]]
    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def slow_read_arrived():
        polls.append(s.get_json("/status")["http"]["requests"])
        return polls[-1] - polls[0] >= len(polls)
    wait_until(slow_read_arrived, 10, "the slow read to reach the server")
    for _ in range(8):  # 8 MiB: well past the frames that wake the checkpointer
        assert_exec_ok(s.execute(["INSERT INTO w(b) SELECT randomblob(1048576)"]))
    writes_done = time.monotonic()
    t.join(deadline_seconds(120))
    assert read.get("rows") == [[12000000]], read
    assert read["done"] > writes_done, "the read ended before the writes: it held nothing back"
    wait_until(lambda: s.get_json("/status")["store"]["db_size"] >= before + 8 * 1048576, 20,
               "the WAL's frames to be copied into db.sqlite with no further write")
