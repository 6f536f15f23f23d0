"""The kill -9 matrix on a single cairnd: SIGKILL at a random moment during (a) 16
clients writing, (b) a backup, (c) a restore to a branch, (d) a live restore and (e) a
Raft snapshot; then a restart on the same data directory.

After every kill the node must serve again (/readyz), keep every write acknowledged
with 200 before the kill, pass PRAGMA integrity_check (over HTTP, and on a copy of the
stopped node's files read with Python's sqlite3), list only backups that verify (every
.cbk file in the repository is listed, none with an error), and for a live restore hold
either the old database or the restored one, entirely. An operation answered with 200
before the kill must have survived it.

Each trial starts its own node (fresh data directory) so that trials are independent;
the big database (~50 MiB of pages) is built per trial with one recursive INSERT,
which is faster than copying a prepared directory. The random delay before each SIGKILL
is the experiment, not synchronisation: it is drawn from the measured duration of the
operation (module fixture `durations`), and the seed is printed and taken from
CAIRN_TEST_SEED when set. Trial 0 of each kind runs in the quick selection
(-m "not crash"); the other trials carry the `crash` marker.
"""

import hashlib
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import sqlite3
import threading
import time

import pytest

from conftest import ServerFactory, StopWaiting, assert_exec_ok, deadline_seconds, wait_until

SEED = int(os.environ.get("CAIRN_TEST_SEED") or random.SystemRandom().randrange(1 << 30))

BIG_ROWS_PER_TXN = 10000
BIG_TXNS = 4  # 4 x 10,000 x 1 KiB blobs: ~40 MiB of blobs, ~54 MiB of pages
BIG_FILL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
            "INSERT INTO big(b) SELECT randomblob(1024) FROM c" % BIG_ROWS_PER_TXN)


def trials(n):
    """Trial numbers 0..n-1: trial 0 unmarked (the quick run), the others `crash`."""
    return [pytest.param(i, id="trial%d" % i, marks=(pytest.mark.crash,) if i else ())
            for i in range(n)]


def rng_for(kind, trial):
    return random.Random("%d-%s-%d" % (SEED, kind, trial))


def context(kind, trial, delay):
    return "%s trial %d (CAIRN_TEST_SEED=%d), SIGKILL %.3fs after the request" % (kind, trial, SEED, delay)


# ---------------------------------------------------------------------------
# helpers


def sql_quote(text):
    return "'" + text.replace("'", "''") + "'"


def one_result(r, what):
    assert r.status == 200, "%s -> HTTP %d %r" % (what, r.status, r.body[:2000])
    res = r.json()["results"]
    assert len(res) == 1 and "error" not in res[0], "%s failed: %r" % (what, res)
    return res[0]


def make_big(s):
    assert_exec_ok(s.execute(["CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)",
                              "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)",
                              "CREATE TABLE w (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL, pad BLOB)"]))
    for _ in range(BIG_TXNS):
        r = s.post("/db/execute", [BIG_FILL])
        one_result(r, "filling big")
    assert_exec_ok(s.execute(["INSERT INTO small(v) VALUES('before')"]))


def full_backup(s, how="sql", timeout=120):
    """A full backup; returns its id."""
    if how == "sql":
        r = s.raw("POST", "/db/execute", ["BACKUP DATABASE FULL"], timeout=timeout)
        res = one_result(r, "BACKUP DATABASE FULL")
        return dict(zip(res["columns"], res["values"][0]))["backup_id"]
    r = s.raw("POST", "/admin/backup", {"type": "full"}, timeout=timeout)
    assert r.status == 200, "POST /admin/backup -> %r" % r
    return r.json()["backup"]["id"]


class InFlight:
    """One HTTP request sent from a thread; `result` is the HTTPResult or the exception,
    `answered_at` the monotonic time the answer arrived (None while unanswered)."""

    def __init__(self, s, method, path, body=None):
        self.result = None
        self.answered_at = None
        self.sent_at = time.monotonic()

        def run():
            try:
                self.result = s.raw(method, path, body, timeout=120)
            except Exception as e:  # noqa: BLE001 - the kill cuts the connection
                self.result = e
            self.answered_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, what):
        self.thread.join(deadline_seconds(60))
        assert not self.thread.is_alive(), "%s: the request hangs after the kill" % what

    def ok_before(self, kill_time):
        """True if a 200 arrived before the kill was sent."""
        return (self.answered_at is not None and self.answered_at < kill_time
                and not isinstance(self.result, Exception) and self.result.status == 200)


def kill_after(s, delay):
    """SIGKILL `delay` seconds from now (the randomness under test), and wait for the
    exit. Returns the monotonic time of the kill."""
    time.sleep(delay)
    t = time.monotonic()
    s.kill(signal.SIGKILL)
    return t


class Writers:
    """`clients` threads inserting rows (client, seq) into `table`, one request per new
    connection, so that a connection error always means the server is gone (the thread
    then ends). acked holds the (client, seq) answered 200 with one row written;
    attempted[c] is the highest seq client c sent. Any other answer is an anomaly."""

    def __init__(self, s, clients, table="t", pad=200):
        self.s = s
        self.table = table
        self.pad = pad
        self.lock = threading.Lock()
        self.acked = set()
        self.attempted = [-1] * clients
        self.anomalies = []
        self.threads = [threading.Thread(target=self._worker, args=(c,), daemon=True)
                        for c in range(clients)]
        for t in self.threads:
            t.start()

    def _worker(self, c):
        seq = 0
        while True:
            body = json.dumps([["INSERT INTO %s(client, seq, pad) VALUES(?, ?, randomblob(?))" % self.table,
                                c, seq, self.pad]])
            self.attempted[c] = seq
            conn = http.client.HTTPConnection("127.0.0.1", self.s.http_port, timeout=deadline_seconds(60))
            try:
                conn.request("POST", "/db/execute", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                return
            finally:
                conn.close()
            if resp.status != 200:
                self.anomalies.append("client %d seq %d: HTTP %d %r" % (c, seq, resp.status, data[:300]))
                return
            try:
                res = json.loads(data)["results"][0]
            except (ValueError, KeyError, IndexError):
                self.anomalies.append("client %d seq %d: bad body %r" % (c, seq, data[:300]))
                return
            if "error" in res or res.get("rows_affected") != 1:
                self.anomalies.append("client %d seq %d: result %r" % (c, seq, res))
                return
            with self.lock:
                self.acked.add((c, seq))
            seq += 1

    def count(self):
        with self.lock:
            return len(self.acked)

    def wait_acked(self, n, what):
        def reached():
            if self.anomalies:
                raise StopWaiting("%s: writers failed: %r" % (what, self.anomalies[:5]))
            if not any(t.is_alive() for t in self.threads):
                raise StopWaiting("%s: every writer stopped" % what)
            return self.count() >= n

        wait_until(reached, 60, "%d acknowledged writes (%s)" % (n, what))

    def join(self, what):
        for t in self.threads:
            t.join(deadline_seconds(60))
            assert not t.is_alive(), "%s: a writer hangs after the kill" % what
        assert not self.anomalies, "%s: writes failed before the kill: %r" % (what, self.anomalies[:10])


def check_writes(s, w, what):
    """Every acknowledged row present, none twice, none never sent."""
    rows = s.rows("SELECT client, seq FROM %s" % w.table, level="linearizable")
    present = set()
    dups = []
    for c, seq in rows:
        if (c, seq) in present:
            dups.append((c, seq))
        present.add((c, seq))
    assert not dups, "%s: duplicated rows %r" % (what, dups[:20])
    missing = sorted(w.acked - present)
    assert not missing, "%s: %d of %d acknowledged writes lost after the restart, e.g. %r" % (
        what, len(missing), len(w.acked), missing[:20])
    phantom = sorted(k for k in present
                     if not (0 <= k[0] < len(w.attempted)) or k[1] > w.attempted[k[0]])
    assert not phantom, "%s: rows that were never sent: %r" % (what, phantom[:20])
    return len(present)


def check_integrity_http(s, what, branch=None):
    params = {"branch": branch} if branch else {}
    rows = s.rows("PRAGMA integrity_check", **params)
    assert rows == [["ok"]], "%s: PRAGMA integrity_check%s says %r" % (
        what, " on branch %s" % branch if branch else "", rows[:20])


def check_backups(s, repo, what, must_list=()):
    """Every listed backup verifies and carries no error; every .cbk file in the
    repository is listed (no half-written file passes for a backup); each id of
    must_list (backups answered 200 before the kill) is listed."""
    r = s.raw("GET", "/admin/backups")
    assert r.status == 200, "%s: GET /admin/backups -> %r" % (what, r)
    listed = r.json()["backups"]
    bad = [e for e in listed if e.get("error")]
    assert not bad, "%s: backups listed with an error after the restart: %r" % (what, bad)
    ids = [e["id"] for e in listed]
    for bid in ids:
        v = s.raw("POST", "/admin/backups/%s/verify" % bid, {}, timeout=120)
        assert v.status == 200, "%s: verify %s -> %r" % (what, bid, v)
        doc = v.json()
        assert doc.get("ok") is True, "%s: listed backup %s does not verify: %r" % (what, bid, doc)
    files = sorted(p.name for p in pathlib.Path(repo).iterdir() if p.name.endswith(".cbk")) \
        if pathlib.Path(repo).exists() else []
    assert files == sorted(b + ".cbk" for b in ids), (
        "%s: the repository's .cbk files %r are not the listed backups %r" % (what, files, ids))
    for bid in must_list:
        assert bid in ids, "%s: backup %s, answered 200 before the kill, is gone: %r" % (what, bid, ids)
    return ids


def db_copy(s, dest):
    """Copies the stopped node's database files to dest; returns the db path."""
    assert not s.running()
    dest = pathlib.Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("db.sqlite", "db.sqlite-wal"):
        if (s.data_dir / name).exists():
            shutil.copy(s.data_dir / name, dest / name)
    return dest / "db.sqlite"


def digest(path, tables=("big", "small")):
    """sha256 over the contents of `tables` (rows in rowid order) in a SQLite file."""
    con = sqlite3.connect(str(path))
    try:
        h = hashlib.sha256()
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        for t in tables:
            h.update(b"\x00table " + t.encode())
            if t not in names:
                h.update(b" missing")
                continue
            for row in con.execute("SELECT rowid, * FROM %s ORDER BY rowid" % t):
                for v in row:
                    if isinstance(v, bytes):
                        h.update(b"b%d:" % len(v) + v)
                    else:
                        h.update(repr(v).encode() + b";")
        return h.hexdigest()
    finally:
        con.close()


def file_integrity(path):
    con = sqlite3.connect(str(path))
    try:
        return [list(r) for r in con.execute("PRAGMA integrity_check").fetchall()]
    finally:
        con.close()


def stop_clean(s, what):
    rc = s.stop()
    assert rc == 0, "%s: cairnd exited %s on SIGTERM after the recovery; stderr:\n%s" % (
        what, rc, s.stderr_tail())


def stopped_digest(s, scratch, what, tables=("big", "small")):
    """Stops the node cleanly, checks integrity of a copy of its database file and
    returns the digest of `tables`."""
    stop_clean(s, what)
    path = db_copy(s, scratch)
    ic = file_integrity(path)
    assert ic == [["ok"]], "%s: integrity_check of the stopped node's database: %r" % (what, ic[:20])
    return digest(path, tables)


def restart_after_kill(s, what):
    try:
        s.start()
    except AssertionError as e:
        raise AssertionError("%s: the node does not serve after the restart: %s" % (what, e)) from None
    r = s.raw("GET", "/readyz")
    assert r.status == 200, "%s: /readyz -> %r" % (what, r)


def remove_data(s):
    """Frees the disk of a passed trial (the Raft segments alone are ~100 MiB)."""
    assert not s.running()
    shutil.rmtree(s.workdir / "data", ignore_errors=True)
    shutil.rmtree(s.workdir / "repo", ignore_errors=True)


def branch_names(s):
    st = s.get_json("/status")
    return sorted(b["name"] for b in st.get("branches", []))


# ---------------------------------------------------------------------------
# how long each operation takes here: the window the kills are drawn from


@pytest.fixture(scope="module")
def durations(tmp_path_factory, cairnd_bin):
    base = tmp_path_factory.mktemp("crash-calibration")
    factory = ServerFactory(base)
    try:
        s = factory(extra_args=["--backup-dir", base / "repo"])
        make_big(s)
        out = {}
        t = time.monotonic()
        bid = full_backup(s, "http")
        out["backup"] = time.monotonic() - t
        t = time.monotonic()
        one_result(s.post("/db/execute", ["RESTORE DATABASE FROM %s TO BRANCH 'cal'" % sql_quote(bid)]),
                   "restore to a branch")
        out["branch"] = time.monotonic() - t
        assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 2 = 0"]))
        t = time.monotonic()
        one_result(s.post("/db/execute", ["RESTORE DATABASE FROM %s" % sql_quote(bid)]), "live restore")
        out["live"] = time.monotonic() - t
        assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 2 = 0"]))
        t = time.monotonic()
        r = s.raw("POST", "/admin/snapshot", timeout=120)
        assert r.status == 200, r
        out["snapshot"] = time.monotonic() - t
        print("crash calibration (s): %s; CAIRN_TEST_SEED=%d"
              % (", ".join("%s %.3f" % kv for kv in sorted(out.items())), SEED))
    finally:
        problems = factory.teardown()
    assert not problems, problems
    shutil.rmtree(base, ignore_errors=True)
    return out


def draw_delay(rng, duration):
    """A moment in the operation. Two times in five within its first 30 ms, where the
    request is parsed, checked and its entry appended (for a live restore, the only
    window in which the old database may survive); otherwise uniform over 1.2x its
    measured duration, the last part landing after it completed, which checks that an
    acknowledged operation survives. At least 1 ms."""
    if rng.random() < 0.4:
        return max(0.001, rng.uniform(0.0, 0.03))
    return max(0.001, rng.uniform(0.0, 1.2 * duration))


# ---------------------------------------------------------------------------
# (a) 16 clients writing


@pytest.mark.parametrize("trial", trials(20))
def test_sigkill_during_writes(server_factory, trial):
    rng = rng_for("writes", trial)
    snapshots = trial % 2 == 1  # odd trials: snapshots every few dozen entries under load
    delay = rng.uniform(0.1, 1.6)
    what = context("writes" + (" (frequent snapshots)" if snapshots else ""), trial, delay)
    args = ["--snapshot-threshold", "64", "--snapshot-trailing", "32"] if snapshots else []
    s = server_factory(extra_args=args)
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL, pad BLOB)"]))
    w = Writers(s, 16, "t", pad=rng.choice([0, 200, 2000]))
    kill_after(s, delay)
    w.join(what)
    assert w.acked, "%s: no write was acknowledged before the kill" % what

    restart_after_kill(s, what)
    n = check_writes(s, w, what)
    check_integrity_http(s, what)
    # It goes on writing, without reusing a rowid.
    body = s.execute(["INSERT INTO t(client, seq) VALUES(-1, -1)"])
    assert body["results"][0].get("last_insert_id") == s.scalar("SELECT max(id) FROM t"), body
    stop_clean(s, what)
    ic = file_integrity(db_copy(s, s.workdir / "copy"))
    assert ic == [["ok"]], "%s: integrity_check of the stopped node's file: %r" % (what, ic[:20])
    print("%s: %d acknowledged, %d present" % (what, len(w.acked), n))
    remove_data(s)


# ---------------------------------------------------------------------------
# (b) a backup


@pytest.mark.parametrize("trial", trials(5))
def test_sigkill_during_backup(server_factory, durations, tmp_path, trial):
    rng = rng_for("backup", trial)
    how = "sql" if trial % 2 == 0 else "http"
    delay = draw_delay(rng, durations["backup"])
    what = context("backup (%s)" % ("BACKUP DATABASE" if how == "sql" else "POST /admin/backup"), trial, delay)
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo])
    make_big(s)
    first = full_backup(s)  # a complete one beside the one cut off
    assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 5 = 0"]))
    w = Writers(s, 4, "w", pad=100)
    w.wait_acked(20, what)
    if how == "sql":
        op = InFlight(s, "POST", "/db/execute", ["BACKUP DATABASE FULL"])
    else:
        op = InFlight(s, "POST", "/admin/backup", {"type": "full"})
    killed_at = kill_after(s, delay)
    op.join(what)
    w.join(what)
    acked_backup = None
    if op.ok_before(killed_at):
        doc = op.result.json()
        acked_backup = (doc["backup"]["id"] if how == "http"
                        else dict(zip(doc["results"][0]["columns"], doc["results"][0]["values"][0]))["backup_id"])

    restart_after_kill(s, what)
    check_writes(s, w, what)
    check_integrity_http(s, what)
    # The temporary file of a backup cut off by the kill is removed at the restart.
    leftovers = sorted(p.name for p in repo.iterdir() if p.name.endswith(".cbk.tmp"))
    assert not leftovers, "%s: temporary files left after the restart: %r" % (what, leftovers)
    ids = check_backups(s, repo, what, must_list=[first] + ([acked_backup] if acked_backup else []))
    # Backups work after the crash.
    after = full_backup(s, how)
    assert after not in ids
    check_backups(s, repo, what + ", after a new backup")
    stopped_digest(s, tmp_path / "copy", what)
    print("%s: backup %s before the kill; repository %r; %d leftover files %r" % (
        what, "answered" if acked_backup else "unanswered", ids,
        len([p for p in repo.iterdir() if not p.name.endswith(".cbk")]),
        sorted(p.name for p in repo.iterdir() if not p.name.endswith(".cbk"))))
    remove_data(s)


# ---------------------------------------------------------------------------
# (c) a restore to a branch


@pytest.mark.parametrize("trial", trials(5))
def test_sigkill_during_restore_to_branch(server_factory, durations, tmp_path, trial):
    rng = rng_for("branch", trial)
    how = "sql" if trial % 2 == 0 else "http"
    delay = draw_delay(rng, durations["branch"])
    what = context("restore to a branch (%s)" % ("RESTORE ... TO BRANCH" if how == "sql" else "POST /admin/restore"),
                   trial, delay)
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo])
    make_big(s)
    bid = full_backup(s)
    want = stopped_digest(s, tmp_path / "at-backup", what)  # the branch's content to be
    s.start()
    assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 3 = 0",
                              "INSERT INTO small(v) VALUES('after the backup')"]))
    w = Writers(s, 4, "w", pad=100)
    w.wait_acked(20, what)
    if how == "sql":
        op = InFlight(s, "POST", "/db/execute",
                      ["RESTORE DATABASE FROM %s TO BRANCH 'b'" % sql_quote(bid)])
    else:
        op = InFlight(s, "POST", "/admin/restore", {"backup_id": bid, "branch": "b"})
    killed_at = kill_after(s, delay)
    op.join(what)
    w.join(what)
    answered = op.ok_before(killed_at)

    restart_after_kill(s, what)
    check_writes(s, w, what)
    check_integrity_http(s, what)
    check_backups(s, repo, what, must_list=[bid])
    branches = branch_names(s)
    if answered:
        assert branches == ["b"], "%s: the branch, answered 200 before the kill, is gone: %r" % (what, branches)
    else:
        assert branches in ([], ["b"]), "%s: branches %r" % (what, branches)
    if branches == ["b"]:
        check_integrity_http(s, what, branch="b")
        n = s.rows("SELECT count(*) FROM big", branch="b")
        assert n == [[BIG_ROWS_PER_TXN * BIG_TXNS]], "%s: branch b holds %r rows of big" % (what, n)
        one_result(s.post("/db/execute", ["DROP BRANCH 'b'"]), "DROP BRANCH 'b'")
    # The name is not wedged by the crash: the same restore works now.
    one_result(s.post("/db/execute", ["RESTORE DATABASE FROM %s TO BRANCH 'b'" % sql_quote(bid)]),
               "%s: RESTORE ... TO BRANCH 'b' after the restart" % what)
    assert branch_names(s) == ["b"]
    stopped = stopped_digest(s, tmp_path / "copy", what)
    assert stopped != want, "%s: the live database was rewound to the backup" % what
    got = digest(s.data_dir / "branches" / "b.db")
    assert got == want, "%s: branch b restored after the crash differs from the backup" % what
    print("%s: restore %s before the kill; branch after restart: %r" % (
        what, "answered" if answered else "unanswered", branches))
    remove_data(s)


# ---------------------------------------------------------------------------
# (d) a live restore


@pytest.mark.parametrize("trial", trials(5))
def test_sigkill_during_live_restore(server_factory, durations, tmp_path, trial):
    rng = rng_for("live", trial)
    how = "sql" if trial % 2 == 0 else "http"
    delay = draw_delay(rng, durations["live"])
    what = context("live restore (%s)" % ("RESTORE DATABASE FROM" if how == "sql" else "POST /admin/restore"),
                   trial, delay)
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo])
    make_big(s)
    bid = full_backup(s)
    restored = stopped_digest(s, tmp_path / "at-backup", what)
    s.start()
    assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 2 = 0",
                              "DELETE FROM big WHERE id % 7 = 0",
                              "INSERT INTO small(v) VALUES('after the backup')"]))
    old = stopped_digest(s, tmp_path / "old", what)
    assert old != restored
    s.start()
    if how == "sql":
        op = InFlight(s, "POST", "/db/execute", ["RESTORE DATABASE FROM %s" % sql_quote(bid)])
    else:
        op = InFlight(s, "POST", "/admin/restore", {"backup_id": bid})
    killed_at = kill_after(s, delay)
    op.join(what)
    answered = op.ok_before(killed_at)

    restart_after_kill(s, what)
    check_integrity_http(s, what)
    check_backups(s, repo, what, must_list=[bid])
    got = stopped_digest(s, tmp_path / "copy", what)
    assert got in (old, restored), (
        "%s: the database is neither the old one (%s) nor the restored one (%s): %s"
        % (what, old[:16], restored[:16], got[:16]))
    if answered:
        assert got == restored, "%s: the restore, answered 200 before the kill, was undone" % what
    state = "restored" if got == restored else "old"
    # The node goes on: a write, and the restore again, both work.
    s.start()
    assert_exec_ok(s.execute(["INSERT INTO small(v) VALUES('after the crash')"]))
    one_result(s.post("/db/execute", ["RESTORE DATABASE FROM %s" % sql_quote(bid)]),
               "%s: RESTORE DATABASE after the restart" % what)
    assert stopped_digest(s, tmp_path / "again", what) == restored
    print("%s: restore %s before the kill; database after restart: %s" % (
        what, "answered" if answered else "unanswered", state))
    remove_data(s)


# ---------------------------------------------------------------------------
# (e) a Raft snapshot


@pytest.mark.parametrize("trial", trials(5))
def test_sigkill_during_snapshot(server_factory, durations, tmp_path, trial):
    rng = rng_for("snapshot", trial)
    delay = draw_delay(rng, durations["snapshot"])
    what = context("snapshot (POST /admin/snapshot)", trial, delay)
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo])
    make_big(s)
    if trial % 2 == 1:
        # A snapshot before: the one cut off is then an incremental of a big change.
        r = s.raw("POST", "/admin/snapshot", timeout=120)
        assert r.status == 200, r
        assert_exec_ok(s.execute(["UPDATE big SET b = randomblob(1024) WHERE id % 2 = 0"]))
    w = Writers(s, 4, "w", pad=100)
    w.wait_acked(20, what)
    op = InFlight(s, "POST", "/admin/snapshot")
    killed_at = kill_after(s, delay)
    op.join(what)
    w.join(what)
    acked_index = op.result.json()["snapshot"]["index"] if op.ok_before(killed_at) else None

    restart_after_kill(s, what)
    check_writes(s, w, what)
    check_integrity_http(s, what)
    check_backups(s, repo, what)
    snaps = s.get_json("/admin/snapshots")["snapshots"]
    bad = [x for x in snaps if x.get("error") or (isinstance(x.get("backup"), dict) and x["backup"].get("error"))]
    assert not bad, "%s: snapshots listed with an error: %r" % (what, bad)
    if acked_index is not None:
        assert any(x["index"] >= acked_index for x in snaps), (
            "%s: the snapshot at index %d, answered 200 before the kill, is gone: %r" % (what, acked_index, snaps))
    # What the node recovered is what its snapshots and log rebuild from scratch.
    tables = ("big", "small", "w")
    before = stopped_digest(s, tmp_path / "copy", what, tables)
    for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
        p = s.data_dir / name
        if p.exists():
            p.unlink()
    s.start()
    check_integrity_http(s, what + ", rebuilt")
    r = s.raw("POST", "/admin/snapshot", timeout=120)
    assert r.status == 200, "%s: a snapshot after the recovery -> %r" % (what, r)
    rebuilt = stopped_digest(s, tmp_path / "rebuilt", what, tables)
    assert rebuilt == before, "%s: the database rebuilt from the snapshots and log differs" % what
    print("%s: snapshot %s before the kill; snapshots after restart %r" % (
        what, "answered (index %d)" % acked_index if acked_index else "unanswered",
        [x["index"] for x in snaps]))
    remove_data(s)
