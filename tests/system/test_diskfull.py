"""A full disk under cairnd: writes fail with a clear error (a 5xx with a JSON "error"
naming the problem), never hang, never crash the process, never lose an acknowledged
write; once space is freed the node goes on, and a backup tried while the disk is full
fails cleanly without leaving a partial file in the repository. A continuous archive
whose repository fills keeps the node serving (or, with --archive-sync, answers that the
write was applied and is not archived yet) and catches up without a gap once space is
freed.

The disk is a small tmpfs mounted for the test (`mount -t tmpfs -o size=...`; the tests
run as root in CI and skip, saying why, where mounting is not allowed). The server's
logs stay outside it. Space is taken by a filler file the test writes, and freed by
deleting it. Every wait polls with a deadline; every request has a timeout, and running
into it counts as a hang.
"""

import http.client
import json
import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

from conftest import StopWaiting, assert_exec_ok, deadline_seconds, mount_tmpfs, wait_until

MiB = 1 << 20
REQUEST_TIMEOUT = 10.0  # a write unanswered this long is a hang
FULL_WORDS = ("full", "space", "enospc")


def free_bytes(path):
    st = os.statvfs(str(path))
    return st.f_bavail * st.f_frsize


def write_filler(path, leave_free):
    """Writes a file of zeros (real pages on tmpfs), a MiB at a time, until about
    `leave_free` bytes are left on its file system. The server may take space at the
    same time (libraft preallocates its next segment): the filler then stops early, or
    gives back what it took too much."""
    chunk = b"\0" * MiB
    size = 0
    with open(path, "wb") as f:
        try:
            while free_bytes(path.parent) > leave_free + MiB:
                f.write(chunk)
                f.flush()
                size += MiB
        except OSError:
            pass
        give_back = max(0, leave_free - free_bytes(path.parent))
        size = max(0, size - ((give_back + MiB - 1) // MiB) * MiB)
        f.truncate(size)
        os.fsync(f.fileno())
    return size


def names_disk_full(msg):
    return isinstance(msg, str) and any(w in msg.lower() for w in FULL_WORDS)


@pytest.fixture
def tmpfs(tmp_path, server_factory):
    """mount(name, size_mib) -> a fresh tmpfs directory under tmp_path. At teardown,
    servers still running are killed (the test checks clean stops itself), then every
    tmpfs is unmounted."""
    mounts = []

    def mount(name, size_mib):
        d = tmp_path / name
        mount_tmpfs(d, size_mib)
        mounts.append(d)
        return d

    yield mount
    for s in server_factory.servers:
        if s.running():
            s.proc.kill()
            s.proc.wait()
    problems = []
    for d in reversed(mounts):
        r = subprocess.run(["umount", str(d)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, text=True, timeout=60)
            problems.append("umount %s: %s" % (d, r.stderr.strip()))
    assert not problems, problems


class Load:
    """`clients` threads inserting big rows into f(client, seq, b, t), a new connection
    per request: randomblob(blob) grows the database, a text parameter of `text` bytes
    grows the Raft log too. Answers are sorted into acked (client, seq), errors (status,
    message) and anomalies (hangs, lost connections, unclear answers)."""

    def __init__(self, s, clients=4, blob=192 * 1024, text=32 * 1024):
        self.s = s
        self.blob = blob
        self.text = "x" * text
        self.lock = threading.Lock()
        self.acked = set()
        self.attempted = [-1] * clients
        self.errors = []
        self.refused = []  # (client, seq, message)
        self.anomalies = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._worker, args=(c,), daemon=True) for c in range(clients)]
        for t in self.threads:
            t.start()

    def _worker(self, c):
        seq = 0
        while not self.stopping.is_set():
            body = json.dumps([["INSERT INTO f(client, seq, b, t) VALUES(?, ?, randomblob(?), ?)",
                                c, seq, self.blob, self.text]])
            self.attempted[c] = seq
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.s.http_port,
                                              timeout=deadline_seconds(REQUEST_TIMEOUT))
            try:
                conn.request("POST", "/db/execute", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.anomalies.append("client %d seq %d: no answer after %.1fs: %r (server %s)" % (
                        c, seq, time.monotonic() - t0, e, "alive" if self.s.running() else "DEAD"))
                return
            finally:
                conn.close()
            with self.lock:
                self._sort(c, seq, resp.status, data)
            seq += 1

    def _sort(self, c, seq, status, data):
        try:
            doc = json.loads(data)
        except ValueError:
            self.anomalies.append("client %d seq %d: HTTP %d, not JSON: %r" % (c, seq, status, data[:300]))
            return
        if status == 200:
            res = doc.get("results", [{}])[0] if isinstance(doc, dict) else {}
            if "error" not in res and res.get("rows_affected") == 1:
                self.acked.add((c, seq))
            else:
                # A refusal inside a 200 is not the clear failure asked for.
                self.anomalies.append("client %d seq %d: HTTP 200 without the row written: %r" % (
                    c, seq, data[:300]))
        elif status >= 500 and isinstance(doc, dict) and isinstance(doc.get("error"), str):
            self.errors.append((status, doc["error"]))
            self.refused.append((c, seq, doc["error"]))
        else:
            self.anomalies.append("client %d seq %d: HTTP %d %r" % (c, seq, status, data[:300]))

    def wait_failing(self, n, timeout, what):
        """Waits until n writes were refused, or an anomaly, or every thread ended."""
        def done():
            with self.lock:
                if self.anomalies or len(self.errors) >= n:
                    return True
            return not any(t.is_alive() for t in self.threads)

        try:
            wait_until(done, timeout, what)
        except AssertionError:
            pass  # reported by the caller with what was seen

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(deadline_seconds(REQUEST_TIMEOUT + 30))
            assert not t.is_alive(), "a writer thread hangs"


def check_acked(s, acked, what, **params):
    got = {(c, seq) for c, seq in s.rows("SELECT client, seq FROM f", **params)}
    missing = sorted(acked - got)
    assert not missing, "%s: %d of %d acknowledged writes lost, e.g. %r" % (
        what, len(missing), len(acked), missing[:10])
    return got


def disk_usage(root):
    """Every file under root with its size, biggest first (for failure messages)."""
    files = [(p.stat().st_size, str(p.relative_to(root))) for p in pathlib.Path(root).rglob("*")
             if p.is_file()]
    return ", ".join("%s %d" % (name, size) for size, name in sorted(files, reverse=True)[:20])


def repo_files(repo):
    repo = pathlib.Path(repo)
    return sorted(p.name for p in repo.iterdir()) if repo.exists() else []


def try_backup(s, timeout=REQUEST_TIMEOUT):
    """BACKUP DATABASE FULL; returns the HTTPResult (raises AssertionError on a hang)."""
    try:
        return s.raw("POST", "/db/execute", ["BACKUP DATABASE FULL"], timeout=timeout)
    except OSError as e:
        raise AssertionError("BACKUP DATABASE unanswered after %.0fs (%r); server %s" % (
            deadline_seconds(timeout), e, "alive" if s.running() else "dead")) from None


def backup_error(r):
    """The error of a refused backup: a 5xx JSON error, or a per-statement error."""
    doc = r.json()
    if r.status >= 500:
        return doc.get("error")
    if r.status == 200:
        res = doc.get("results", [{}])[0]
        return res.get("error")
    return None


def backup_ok(r):
    if r.status != 200:
        return None
    res = r.json()["results"][0]
    if "error" in res:
        return None
    return dict(zip(res["columns"], res["values"][0]))


def poll_write(s, what, timeout=30):
    """A small write, tried until it succeeds (bounded); returns its answer."""
    def attempt():
        r = s.raw("POST", "/db/execute", [["INSERT INTO f(client, seq, b, t) VALUES(-1, ?, x'00', 'after')",
                                           int(time.monotonic() * 1000)]], timeout=5)
        if r.status == 200 and "error" not in r.json()["results"][0]:
            return r
        if not s.running():
            raise StopWaiting("the server died")
        return None

    return wait_until(attempt, timeout, what, interval=0.2)


# ---------------------------------------------------------------------------


def start_filling(tmpfs, server_factory, failures):
    """A node with its data directory and repository on a 160 MiB tmpfs, a filler file
    leaving 24 MiB, and 4 clients writing big rows until `failures` writes were refused
    or went unanswered. Returns (server, disk, filler, load) with the load still on."""
    disk = tmpfs("disk", 160)
    s = server_factory(data_dir=disk / "data", extra_args=["--backup-dir", disk / "repo"])
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, client INTEGER, seq INTEGER, "
                              "b BLOB, t TEXT)"]))
    filler = disk / "filler"
    write_filler(filler, leave_free=24 * MiB)
    load = Load(s)
    load.wait_failing(failures, 90, "writes to be refused on the full disk")
    return s, disk, filler, load


def fill_disk(tmpfs, server_factory):
    """start_filling until 8 writes failed; returns the same with the load stopped."""
    s, disk, filler, load = start_filling(tmpfs, server_factory, 8)
    load.stop()
    assert s.running(), "cairnd died on the full disk (status %s)" % s.proc.poll()
    assert load.acked, "nothing was written before the disk filled"
    assert load.errors or load.anomalies, "the disk never filled: %d acknowledged, %d bytes free" % (
        len(load.acked), free_bytes(disk))
    return s, disk, filler, load


@pytest.mark.smoke
def test_writes_on_a_full_disk_fail_with_a_clear_error(tmpfs, server_factory):
    """Every write on the full disk is answered in bounded time: acknowledged, or a
    5xx whose JSON error names the full disk (found hanging without an answer, fixed in
    7ddc182)."""
    s, disk, filler, load = fill_disk(tmpfs, server_factory)
    assert not load.anomalies, "writes on a full disk hung or were answered unclearly:\n%s" % (
        "\n".join(load.anomalies[:10]))
    unclear = [e for e in load.errors if not names_disk_full(e[1])]
    assert not unclear, "refusals that do not name the full disk: %r" % unclear[:5]
    check_acked(s, load.acked, "while the disk is full")
    assert s.running()


def test_full_disk_backup_fails_cleanly_and_the_node_goes_on(tmpfs, server_factory):
    """Whatever the writes got on the full disk (a clear refusal is checked by the test
    above), nothing acknowledged is lost, reads go on, a backup fails cleanly, and once
    space is freed writes and backups succeed again, also across a restart."""
    s, disk, filler, load = fill_disk(tmpfs, server_factory)
    repo = disk / "repo"
    before = repo_files(repo)
    check_acked(s, load.acked, "while the disk is full")

    # A backup now fails with a clear error and leaves nothing behind.
    assert free_bytes(disk) < 8 * MiB, free_bytes(disk)
    r = try_backup(s)
    made = backup_ok(r)
    assert made is None, "a backup on a full disk (%d bytes free) succeeded: %r" % (free_bytes(disk), made)
    err = backup_error(r)
    assert r.status >= 500 and names_disk_full(err), "a backup on a full disk failed unclearly: %r" % r
    assert repo_files(repo) == before, "the failed backup left %r in the repository" % (
        sorted(set(repo_files(repo)) - set(before)),)
    assert s.running()

    # A Raft snapshot asked for now fails at once, saying why, and leaves no file.
    snaps = disk / "data" / "snapshots"
    snaps_before = sorted(p.name for p in snaps.iterdir())
    t0 = time.monotonic()
    r = s.raw("POST", "/admin/snapshot", timeout=REQUEST_TIMEOUT)
    assert r.status >= 500 and names_disk_full(r.text), "a snapshot on a full disk: %r" % r
    assert time.monotonic() - t0 < REQUEST_TIMEOUT
    assert sorted(p.name for p in snaps.iterdir() if not p.name.startswith(".")) == \
        [n for n in snaps_before if not n.startswith(".")]
    assert s.running()

    # Space comes back: the node goes on.
    filler.unlink()
    t0 = time.monotonic()
    poll_write(s, "a write to succeed once space is free")
    resumed = time.monotonic() - t0
    got = check_acked(s, load.acked, "after space was freed", level="linearizable")
    # A refusal that says nothing was written must not turn into a row later.
    phantoms = [(c, seq, m) for c, seq, m in load.refused
                if "nothing was written" in m.lower() and (c, seq) in got]
    assert not phantoms, "writes refused as not written are in the database: %r" % phantoms[:5]
    unknown = sorted(k for k in got if k[0] >= 0 and k[1] > load.attempted[k[0]])
    assert not unknown, "rows never sent: %r" % unknown[:5]
    for i in range(20):
        assert_exec_ok(s.execute([["INSERT INTO f(client, seq, b) VALUES(-2, ?, randomblob(4096))", i]]))
    r = try_backup(s, timeout=120)
    made = backup_ok(r)
    assert made, "BACKUP DATABASE after space was freed: %r; %d bytes free now; on the disk: %s" % (
        r, free_bytes(disk), disk_usage(disk))
    v = s.raw("POST", "/admin/backups/%s/verify" % made["backup_id"], {}, timeout=120)
    assert v.status == 200 and v.json()["ok"] is True, v
    assert s.rows("PRAGMA integrity_check") == [["ok"]]
    snap = s.raw("POST", "/admin/snapshot", timeout=120)
    assert snap.status == 200, "a snapshot after space was freed: %r" % snap

    # And across a clean restart nothing acknowledged is lost.
    rc = s.stop()
    assert rc == 0, "cairnd exited %s on SIGTERM; stderr:\n%s" % (rc, s.stderr_tail())
    s.start()
    check_acked(s, load.acked | {(-2, i) for i in range(20)}, "after the restart")
    assert s.rows("PRAGMA integrity_check") == [["ok"]]
    print("disk full: %d acknowledged, %d present, %d refused %r, %d unanswered; a write went "
          "through %.2fs after space was freed" % (
              len(load.acked), len(got), len(load.errors), sorted(set(load.errors))[:2],
              len(load.anomalies), resumed))
    assert s.stop() == 0


def test_backup_to_a_full_repository(tmpfs, server_factory):
    """The repository alone is full (the data directory is not): BACKUP DATABASE and POST
    /admin/backup fail naming it, leave no partial file, and the node keeps serving;
    after space is freed the backup succeeds."""
    repo = tmpfs("repo", 64)
    s = server_factory(extra_args=["--backup-dir", repo])
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, client INTEGER, seq INTEGER, "
                              "b BLOB, t TEXT)"]))
    assert_exec_ok(s.execute(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 6000) "
                              "INSERT INTO f(client, seq, b) SELECT 0, x, randomblob(4096) FROM c"]))
    filler = repo / "filler"
    write_filler(filler, leave_free=4 * MiB)
    for how in ("sql", "http"):
        if how == "sql":
            r = try_backup(s)
            made, err = backup_ok(r), backup_error(r)
        else:
            r = s.raw("POST", "/admin/backup", {"type": "full"}, timeout=REQUEST_TIMEOUT)
            made = r.json().get("backup") if r.status == 200 else None
            err = r.json().get("error") if r.status >= 500 else None
        assert made is None, "%s: a 24 MiB backup into 4 MiB succeeded: %r" % (how, r)
        assert names_disk_full(err), "%s: the failed backup does not name the full disk: %r" % (how, r)
        assert repo_files(repo) == ["filler"], "%s: the failed backup left %r" % (how, repo_files(repo))
        assert_exec_ok(s.execute(["INSERT INTO f(client, seq) VALUES(1, 1)"]))
    filler.unlink()
    r = try_backup(s, timeout=120)
    made = backup_ok(r)
    assert made, "the backup after space was freed failed: %r" % r
    assert repo_files(repo) == [made["backup_id"] + ".cbk"], repo_files(repo)
    assert s.stop() == 0


def test_sigterm_while_the_disk_is_full(tmpfs, server_factory):
    """A node whose disk filled under load stops cleanly on SIGTERM (in bounded time,
    status 0), and after space is freed restarts with every acknowledged write (found
    never exiting, its HTTP threads blocked on the apply; fixed in 7ddc182)."""
    s, disk, filler, load = start_filling(tmpfs, server_factory, 4)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.wait_exit(timeout=20)
    except AssertionError:
        rc = None
    waited = time.monotonic() - t0
    load.stop()
    assert rc == 0, "cairnd on a full disk: SIGTERM -> %s after %.1fs (None: still running)" % (rc, waited)
    filler.unlink()
    s.start()
    check_acked(s, load.acked, "after the restart")
    assert s.rows("PRAGMA integrity_check") == [["ok"]]
    assert s.stop() == 0


def test_snapshot_whose_checkpoint_cannot_grow_the_database(tmpfs, server_factory):
    """POST /admin/snapshot on a full disk while the WAL holds writes that would grow
    db.sqlite: the checkpoint before the snapshot fails for want of space. The request
    is answered at once naming the full disk (found waiting 120 s, a barrier entry
    appended every 200 ms, then answering "no snapshot at index N" without a cause);
    once space is freed the snapshot is taken."""
    # 160 MiB: libraft prepares its open segments (32 MiB each) ahead, two or three of
    # them; on 64 MiB the first write found the disk full whenever the second was ready.
    disk = tmpfs("disk", 160)
    s = server_factory(data_dir=disk / "data", extra_args=["--snapshot-threshold", "100000"])
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, b BLOB)"]))
    for i in range(8):  # about 2 MiB: well under the WAL's background checkpoint
        assert_exec_ok(s.execute([["INSERT INTO f(b) VALUES(randomblob(1024))"]] * 256,
                                 transaction=True))
    db = disk / "data" / "db.sqlite"
    wal = disk / "data" / "db.sqlite-wal"
    assert wal.stat().st_size > db.stat().st_size + MiB, (wal.stat().st_size, db.stat().st_size)
    filler = disk / "filler"
    write_filler(filler, leave_free=64 * 1024)
    assert free_bytes(disk) < MiB, free_bytes(disk)

    t0 = time.monotonic()
    try:
        r = s.raw("POST", "/admin/snapshot", timeout=REQUEST_TIMEOUT)
    except OSError as e:
        raise AssertionError("POST /admin/snapshot on a full disk unanswered after %.0fs (%r)"
                             % (time.monotonic() - t0, e)) from None
    assert r.status == 507 and names_disk_full(r.text), "a snapshot on a full disk: %r" % r
    assert s.running()

    filler.unlink()
    r = s.raw("POST", "/admin/snapshot", timeout=120)
    assert r.status == 200, "a snapshot after space was freed: %r" % r
    assert s.scalar("SELECT count(*) FROM f") == 8 * 256
    assert s.stop() == 0


def test_repair_that_runs_out_of_space_puts_the_database_back(tmpfs, server_factory, cairn_bin):
    """`cairn repair --force` on a full disk: the database is moved aside, and the
    rebuild from the snapshot has no room for its copy. Before, the repair failed and
    left the partial rebuild, a new db.sqlite, in place of the node's healthy database
    (moved to corrupt/). Now the failed rebuild is removed and the database put back,
    byte for byte; once space is freed the repair succeeds."""
    # 160 MiB: libraft prepares its open segments (32 MiB each) ahead, two or three of
    # them; on 64 MiB the first write found the disk full whenever the second was ready.
    disk = tmpfs("disk", 160)
    s = server_factory(data_dir=disk / "data", extra_args=["--snapshot-threshold", "100000"])
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, b BLOB)"]))
    for i in range(8):
        assert_exec_ok(s.execute([["INSERT INTO f(b) VALUES(randomblob(1024))"]] * 256,
                                 transaction=True))
    assert s.raw("POST", "/admin/snapshot", timeout=120).status == 200
    assert s.stop() == 0
    db = disk / "data" / "db.sqlite"
    image = db.read_bytes()
    filler = disk / "filler"
    write_filler(filler, leave_free=256 * 1024)
    assert free_bytes(disk) < len(image), (free_bytes(disk), len(image))
    r = run_cairn(cairn_bin, ["repair", "--force", "--json", disk / "data"])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "back in its place" in r.stderr, r.stderr
    assert json.loads(r.stdout)["moved_database"] is None, r.stdout
    assert db.read_bytes() == image
    assert not (disk / "data" / "db.sqlite-wal").exists()
    filler.unlink()
    r = run_cairn(cairn_bin, ["repair", "--force", "--json", disk / "data"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    s.start()
    assert s.scalar("SELECT count(*) FROM f") == 8 * 256
    assert s.stop() == 0


def archive_status(s):
    r = s.raw("GET", "/status", timeout=REQUEST_TIMEOUT)
    assert r.status == 200, r
    doc = r.json()
    return doc["archive"], doc["store"]["applied_index"]


def run_cairn(cairn_bin, args, timeout=120):
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=deadline_seconds(timeout))


def restored_keys(cairn_bin, repo, out):
    """(client, seq) of every row of a restore of the repository to latest."""
    import sqlite3
    r = run_cairn(cairn_bin, ["restore", "--repo", repo, "--out", out, "--force", "latest"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    db = sqlite3.connect(str(out))
    try:
        return sorted(db.execute("SELECT client, seq FROM f WHERE client > 0"))
    finally:
        db.close()


@pytest.mark.parametrize("sync", [False, True], ids=["async", "archive_sync"])
def test_archive_into_a_full_repository(tmpfs, server_factory, cairn_bin, tmp_path, sync):
    """The repository the archive writes to fills up (the data directory does not).
    Without --archive-sync, writes go on being acknowledged while /status names the full
    disk and the lag grows; with it, a write is answered 504 "applied ... not yet in the
    archive" within --archive-sync-timeout, never a hang and never an error that says
    nothing was written. No partial segment is left in the repository. Once space is
    freed the archive catches up on the same timeline with no gap (`cairn archive
    verify`), and a restore to latest holds every write the node applied, exactly once."""
    repo = tmpfs("repo", 32)
    args = ["--backup-dir", repo, "--archive-interval", "50ms"]
    args += ["--archive-sync", "--archive-sync-timeout", "1s"] if sync else ["--archive"]
    s = server_factory(extra_args=args)
    wait_until(lambda: archive_status(s)[0]["timeline"] or None, 20, "the archiver's timeline")
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, client INTEGER, seq INTEGER, "
                              "b BLOB, t TEXT)"]))
    for i in range(5):
        assert_exec_ok(s.execute([["INSERT INTO f(client, seq) VALUES(1, ?)", i]]))
    wait_until(lambda: (lambda a, i: a["head_index"] >= i)(*archive_status(s)), 30,
               "the archive to reach the node's applied index")
    timeline = archive_status(s)[0]["timeline"]

    filler = repo / "filler"
    write_filler(filler, leave_free=256 * 1024)
    written, refused = [], []
    # About 1.5 MiB of rows into 256 KiB of free space: the text travels in the log
    # entry (hex of random bytes, 3 KiB an entry once compressed), where randomblob()
    # would travel as its seed.
    for i in range(512):
        if not sync and i > 64 and archive_status(s)[0]["last_error"]:
            break
        if sync and len(refused) >= 3:
            break
        r = s.raw("POST", "/db/execute",
                  json.dumps([["INSERT INTO f(client, seq, t) VALUES(2, ?, ?)", i,
                               os.urandom(3072).hex()]]),
                  timeout=REQUEST_TIMEOUT)
        if r.status == 200:
            assert "error" not in r.json()["results"][0], r.body
            written.append((2, i))
            continue
        assert sync and r.status == 504, "a write with the repository full: %s %s" % (r.status, r.body)
        err = r.json()["error"]
        assert "was applied" in err and "not yet in the archive" in err, err
        written.append((2, i))  # applied, as the answer says
        refused.append(err)
    a, applied = archive_status(s)
    err = wait_until(lambda: archive_status(s)[0]["last_error"] or None, 30,
                     "the archive's failed upload in /status")
    assert names_disk_full(err), "the archive's error does not name the full disk: %r" % err
    assert a["head_index"] < applied, (a, applied)
    if sync:
        assert len(refused) >= 3, "no write was answered 504 with the repository full: %d written" % len(written)
    # Nothing half-written is left to look like a segment: only hidden temporary names
    # (.NAME.tmp) of uploads in progress may be there, never a partial visible object.
    for p in repo.rglob("*"):
        if p.is_file() and p.name != "filler" and not p.name.startswith("."):
            assert p.stat().st_size > 0, p

    filler.unlink()
    assert_exec_ok(s.execute([["INSERT INTO f(client, seq) VALUES(3, 0)"]]))
    written.append((3, 0))
    a = wait_until(lambda: (lambda a, i: a if a["head_index"] >= i and a["lag_entries"] == 0 else None)(
        *archive_status(s)), 60, "the archive to catch up once space was freed")
    assert a["timeline"] == timeline and a["timelines_started"] == 1, a
    assert not a["outran"], a
    r = run_cairn(cairn_bin, ["archive", "verify", "--repo", repo, "--json"])
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert r.returncode == 0 and doc and doc["ok"], (r.stdout, r.stderr)
    want = sorted([(1, i) for i in range(5)] + written)
    got = restored_keys(cairn_bin, repo, tmp_path / "latest.db")
    assert got == want, "restore to latest: %d rows, %d written; missing %r, extra %r" % (
        len(got), len(want), sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    assert s.stop() == 0


def test_point_in_time_restore_out_of_space_leaves_nothing(tmpfs, server_factory, cairn_bin,
                                                           tmp_path):
    """`cairn restore latest` whose replay of the archive fills the output's disk (the
    base backup fits, the archived writes do not): exit 1 with a message naming the full
    disk and the destination, and nothing left at the destination, not even a temporary file; the same
    restore into room succeeds."""
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", repo, "--archive", "--archive-interval", "50ms"])
    wait_until(lambda: archive_status(s)[0]["timeline"] or None, 20, "the archiver's timeline")
    assert_exec_ok(s.execute(["CREATE TABLE f (id INTEGER PRIMARY KEY, client INTEGER, seq INTEGER, "
                              "b BLOB, t TEXT)"]))
    for i in range(400):  # about 2.4 MiB of rows, the text in the log entries
        assert_exec_ok(s.execute([["INSERT INTO f(client, seq, t) VALUES(1, ?, ?)", i,
                                   os.urandom(3072).hex()]]))
    wait_until(lambda: (lambda a, i: a["head_index"] >= i)(*archive_status(s)), 30,
               "the archive to reach the node's applied index")
    small = tmpfs("small", 1)
    for env in ({}, {"CAIRN_RESTORE_TMPFILE": "off"}):
        r = subprocess.run([str(cairn_bin), "restore", "--repo", str(repo), "--out",
                            str(small / "out.db"), "latest"], capture_output=True, text=True,
                           timeout=deadline_seconds(60), env=dict(os.environ, **env))
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert names_disk_full(r.stderr), r.stderr
        # Named by where it was going, not by the scratch file that is gone.
        assert "restore into %s: no space left" % (small / "out.db") in r.stderr, r.stderr
        assert os.listdir(small) == [], (env, os.listdir(small))
    got = restored_keys(cairn_bin, repo, tmp_path / "latest.db")
    assert got == [(1, i) for i in range(400)], len(got)
    assert s.stop() == 0
