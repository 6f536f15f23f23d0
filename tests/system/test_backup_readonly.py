"""A standalone backup (`cairn backup create --db FILE --repo DIR`) of a SQLite file that
other programs are using never writes to it, and takes a consistent snapshot promptly.

The source is in WAL mode and busy the way a replication tool (Litestream) keeps it: a
second process (HOLDER below, Python's sqlite3) holds a read transaction open, which
keeps every checkpoint from passing it, and writes into the WAL on another connection
with automatic checkpoints off. A backup must then:

  - never write the database file or its WAL: no checkpoint, no WAL reset, no change
    of journal mode (checked on the files themselves: the database's bytes and mtime,
    the WAL's header and every byte it had; and, where strace exists, on cairn's
    system calls: the database and its WAL are only ever opened read-only, never
    truncated, renamed or removed);
  - finish promptly, without waiting for the reader (the earlier code retried a
    TRUNCATE checkpoint for about 20 s, then made a copy);
  - hold one consistent state: every transaction committed before the backup began is
    in it, and none is in it in part (the writer writes each transaction as a pair of
    rows sharing a number);
  - and an incremental after a full, with the WAL still busy, stores exactly the pages
    that changed between the two states.

The repository is a directory or an S3 prefix (backuputil's `repo` fixture). What is
read of the source, and how, does not depend on where the backup goes: the longest test
runs on a directory only; the others show it with S3 too.
"""

import hashlib
import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from backuputil import repo, repo_kind, repo_kinds  # noqa: F401 (fixtures)
from s3util import s3env  # noqa: F401 (fixture)

# The other process: a read transaction held open on one connection, a writer on
# another (wal_autocheckpoint=0, as Litestream runs it). Commands on stdin, one a line:
#   write N   commit N more transactions, answer "at K" (K: the last transaction number)
#   go        commit transactions continuously until the next command
#   pause     stop, answer "at K"
#   renew     end the read transaction and begin a new one, answer "at K"
#   stop      end, answer "at K"
# Each transaction inserts two rows (txn, 0) and (txn, 1) in one COMMIT.
HOLDER = r"""
import os, select, sqlite3, sys
path = sys.argv[1]
writer = sqlite3.connect(path, isolation_level=None, timeout=60)
writer.execute("PRAGMA journal_mode=WAL")
writer.execute("PRAGMA wal_autocheckpoint=0")
writer.execute("PRAGMA synchronous=NORMAL")
reader = sqlite3.connect(path, isolation_level=None, timeout=60)
txn = writer.execute("SELECT coalesce(max(txn), 0) FROM pairs").fetchone()[0]

def hold():
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM pairs").fetchone()

def commit():
    global txn
    txn += 1
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO pairs(txn, side, v) VALUES(?, 0, randomblob(700))", (txn,))
    writer.execute("INSERT INTO pairs(txn, side, v) VALUES(?, 1, randomblob(700))", (txn,))
    writer.execute("COMMIT")

def say(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

# Frames the reader's snapshot includes but no checkpoint has copied yet.
for _ in range(50):
    commit()
hold()
say("ready %d" % txn)
running = False
while True:
    if running:
        commit()
        ready = select.select([sys.stdin], [], [], 0)[0]
        if not ready:
            continue
    line = sys.stdin.readline().split()
    if not line or line[0] == "stop":
        say("at %d" % txn)
        break
    if line[0] == "write":
        for _ in range(int(line[1])):
            commit()
        say("at %d" % txn)
    elif line[0] == "go":
        running = True
    elif line[0] == "pause":
        running = False
        say("at %d" % txn)
    elif line[0] == "renew":
        reader.execute("COMMIT")
        hold()
        say("at %d" % txn)
reader.execute("COMMIT")
"""


class Holder:
    """The HOLDER process, spoken to line by line, every answer awaited with a deadline."""

    def __init__(self, db, deadline):
        self.deadline = deadline
        self.p = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.ready = self._answer("ready")

    def _answer(self, word):
        end = time.monotonic() + self.deadline(30)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("the holder process did not answer %r within 30 s" % word)
            if select.select([self.p.stdout], [], [], left)[0]:
                line = self.p.stdout.readline()
                if not line:
                    raise AssertionError("the holder process ended: %s" % self.p.stderr.read())
                parts = line.split()
                assert parts[0] == word, line
                return int(parts[1])

    def ask(self, command):
        self.p.stdin.write(command + "\n")
        if command == "go":
            return None
        return self._answer("at")

    def close(self):
        if self.p.poll() is None:
            try:
                self.ask("stop")
            except (AssertionError, BrokenPipeError):
                pass
        try:
            self.p.wait(timeout=self.deadline(30))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        err = self.p.stderr.read()
        assert self.p.returncode == 0, "the holder process failed:\n%s" % err


def make_source(path, megabytes=12):
    """A WAL database of about `megabytes` MiB in pairs(txn, side, v), checkpointed."""
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE pairs(id INTEGER PRIMARY KEY, txn INTEGER, side INTEGER, v BLOB)")
        con.execute("CREATE INDEX pairs_txn ON pairs(txn)")
        con.execute("CREATE TABLE filler(v BLOB)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO filler VALUES(randomblob(3000))", [()] * (megabytes * 330))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return path


def sha(path, limit=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


class Files:
    """What cairn must leave as it found: the database's bytes and mtime, and the WAL's
    bytes so far (the writer only appends to it: nothing may reset or rewrite it)."""

    def __init__(self, db):
        self.db = str(db)
        self.wal = self.db + "-wal"
        st = os.stat(self.db)
        self.db_state = (st.st_ino, st.st_size, st.st_mtime_ns, sha(self.db))
        wst = os.stat(self.wal)
        self.wal_ino = wst.st_ino
        self.wal_size = wst.st_size
        self.wal_sha = sha(self.wal, self.wal_size)

    def assert_untouched(self, what):
        st = os.stat(self.db)
        assert (st.st_ino, st.st_size, st.st_mtime_ns, sha(self.db)) == self.db_state, \
            "%s wrote the database file" % what
        wst = os.stat(self.wal)
        assert wst.st_ino == self.wal_ino, "%s replaced the WAL" % what
        assert wst.st_size >= self.wal_size, \
            "%s truncated the WAL (%d bytes, was %d)" % (what, wst.st_size, self.wal_size)
        assert sha(self.wal, self.wal_size) == self.wal_sha, \
            "%s rewrote the WAL (its first %d bytes changed)" % (what, self.wal_size)


def written_paths(trace, paths):
    """From an `strace -f` log: the calls that could change one of `paths` (an open for
    writing or creating, a truncate, a rename, a removal). Empty when cairn only read."""
    bad = []
    with open(trace) as f:
        for line in f:
            if not any('"%s"' % p in line for p in paths):
                continue
            call = line.split("(", 1)[0].split()[-1]
            if call in ("open", "openat", "openat2"):
                if any(flag in line for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")):
                    bad.append(line.strip())
            elif call not in ("stat", "lstat", "newfstatat", "statx", "access", "faccessat",
                              "faccessat2", "readlink", "readlinkat", "getcwd"):
                bad.append(line.strip())
    return bad


def usable_strace():
    """strace's path when there is one that may trace here (ptrace can be forbidden)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    try:
        ok = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "true"], capture_output=True,
                            timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return strace if ok else None


@pytest.fixture
def run_cairn(cairn_bin, tmp_path, deadline):
    """run(*args) -> (CompletedProcess, seconds, trace path or None): cairn under strace
    when there is one (only its file-changing calls are traced, so it runs at speed)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    strace = usable_strace()
    n = [0]

    def run(*args):
        n[0] += 1
        env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
        env["HOME"] = str(home)
        argv = [str(cairn_bin)] + [str(a) for a in args]
        trace = None
        if strace:
            trace = str(tmp_path / ("strace-%d.log" % n[0]))
            # LeakSanitizer stops the process's threads with ptrace, which strace holds.
            env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0")
                                           if o)
            argv = [strace, "-f", "-qq", "-o", trace, "-e",
                    "trace=open,openat,truncate,ftruncate,unlink,unlinkat,rename,renameat,"
                    "renameat2"] + argv
        t0 = time.monotonic()
        r = subprocess.run(argv, input="", capture_output=True, text=True, env=env,
                           timeout=deadline(120))
        return r, time.monotonic() - t0, trace

    return run


def backup(run_cairn, db, repo, type_, files):
    r, seconds, trace = run_cairn("backup", "create", "--db", db, "--repo", repo, "--type", type_,
                                  "--json")
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout,
                                                                      r.stderr)
    files.assert_untouched("cairn backup create --type %s" % type_)
    if trace is not None:
        bad = written_paths(trace, [files.db, files.wal])
        assert bad == [], "cairn could have written the source:\n" + "\n".join(bad)
    return json.loads(r.stdout), seconds


def restore(run_cairn, repo, entry, out):
    r, _, _ = run_cairn("restore", "--repo", repo, entry["id"], "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def pairs_of(path):
    """(integrity_check, the transaction numbers, whether each is a whole pair)."""
    con = sqlite3.connect(str(path))
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchall()
        rows = con.execute("SELECT txn, count(*), group_concat(side) FROM pairs GROUP BY txn "
                           "ORDER BY txn").fetchall()
    finally:
        con.close()
    return integrity, [t for t, _, _ in rows], [(t, n, s) for t, n, s in rows if n != 2]


def committed(db):
    """The last transaction committed now, read by a connection of our own."""
    con = sqlite3.connect(str(db), timeout=30)
    try:
        return con.execute("SELECT coalesce(max(txn), 0) FROM pairs").fetchone()[0]
    finally:
        con.close()


def assert_consistent(path, at_least, what):
    integrity, txns, halves = pairs_of(path)
    assert integrity == [("ok",)], "%s: %r" % (what, integrity)
    assert halves == [], "%s holds half a transaction: %r" % (what, halves[:5])
    assert txns == list(range(1, len(txns) + 1)), "%s misses transactions" % what
    assert len(txns) >= at_least, "%s stops at transaction %d; %d were committed before it " \
                                  "began" % (what, len(txns), at_least)
    return len(txns)


@repo_kinds(dir_only="it checks how the source is read (its files, cairn's system calls on "
                    "them, one consistent state, promptly), which does not depend on the "
                    "repository; the busy source backed up to S3 is "
                    "test_incremental_after_a_full_with_the_wal_busy_holds_exactly_the_changes[s3]")
def test_backup_of_a_busy_wal_source_never_writes_it_and_is_consistent(tmp_path, run_cairn,
                                                                       deadline, repo):
    db = make_source(tmp_path / "live.db")
    holder = Holder(db, deadline)
    try:
        holder.ask("go")
        # The WAL holds frames the reader's snapshot includes and no checkpoint copied
        # (a checkpoint by cairn would write them into the database file), and grows.
        files = Files(db)
        before = committed(db)
        full, t_full = backup(run_cairn, db, repo, "full", files)
        files = Files(db)
        mid = committed(db)
        inc, t_inc = backup(run_cairn, db, repo, "incremental", files)
        holder.ask("pause")
        assert os.path.getsize(str(db) + "-wal") > files.wal_size, "the writer stopped"
    finally:
        holder.close()
    # Promptly: the reader held its transaction all along, and the backup did not wait
    # for it (the earlier code retried a checkpoint for about 20 s, then made a copy).
    assert t_full < deadline(10) and t_inc < deadline(10), (t_full, t_inc)
    assert inc["parent_id"] == full["id"]

    n_full = assert_consistent(restore(run_cairn, repo, full, tmp_path / "full.db"), before,
                               "the full backup")
    n_inc = assert_consistent(restore(run_cairn, repo, inc, tmp_path / "inc.db"), mid,
                              "the incremental backup")
    assert n_inc >= n_full


def page_diff(a, b, page_size):
    """Page numbers (1-based) whose bytes differ between two files, pages past the end of
    the shorter one included."""
    diff = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        n = 1
        while True:
            pa, pb = fa.read(page_size), fb.read(page_size)
            if not pa and not pb:
                return diff
            if pa != pb:
                diff.append(n)
            n += 1


def dump(path):
    con = sqlite3.connect(str(path))
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_incremental_after_a_full_with_the_wal_busy_holds_exactly_the_changes(tmp_path, run_cairn,
                                                                              deadline, repo):
    db = make_source(tmp_path / "live.db")
    holder = Holder(db, deadline)
    try:
        # State A: 50 transactions in the WAL, none checkpointed, a reader holding them.
        at_a = holder.ask("write 0")
        state_a = dump(db)
        full, _ = backup(run_cairn, db, repo, "full", Files(db))
        # State B: 40 more, and a reader that moved on (its old snapshot released, a new
        # one taken): still nothing checkpointed, the WAL only grew.
        at_b = holder.ask("write 40")
        holder.ask("renew")
        state_b = dump(db)
        inc, _ = backup(run_cairn, db, repo, "incremental", Files(db))
    finally:
        holder.close()
    assert at_b == at_a + 40

    a = restore(run_cairn, repo, full, tmp_path / "a.db")
    b = restore(run_cairn, repo, inc, tmp_path / "b.db")
    assert dump(a) == state_a, "the full backup is not the state it was taken at"
    assert dump(b) == state_b, "the incremental backup is not the state it was taken at"
    assert assert_consistent(b, at_b, "the incremental") == at_b
    # The incremental stored exactly the pages that differ between the two states.
    changed = page_diff(a, b, full["page_size"])
    assert changed, "the 40 transactions changed no page"
    assert inc["pages"] == len(changed), (inc["pages"], len(changed))
    assert inc["page_count"] >= full["page_count"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run cairn as another user")
def test_backup_by_a_user_who_may_not_write_beside_the_database(cairn_bin, deadline, repo):
    """The database, its WAL and -shm belong to root (0644, in a 0755 directory) and cairn
    runs as nobody: it can neither write the -shm nor create anything beside the file.
    With a process using the database, SQLite's reader shares a read mark it cannot set
    (the snapshot is newer than the mark); with none, the file is read under its SHARED
    lock without SQLite. Both backups are the committed state, and nothing is created.
    The repository: a directory nobody may write, or S3 (nobody's credentials in its
    environment)."""
    top = tempfile.mkdtemp(prefix="cairn-readonly-")
    try:
        os.chmod(top, 0o755)
        home = os.path.join(top, "home")
        dirs = [home]
        if repo.kind == "dir":
            repo = os.path.join(top, "repo")
            dirs.append(repo)
        else:
            repo = str(repo)
        for d in dirs:
            os.mkdir(d)
            os.chmod(d, 0o777)
        data = os.path.join(top, "data")
        os.mkdir(data)
        os.chmod(data, 0o755)
        db = make_source(os.path.join(data, "app.db"), megabytes=2)

        def as_nobody(*args):
            env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                               text=True, env=env, timeout=deadline(60))
            assert r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr)
            return json.loads(r.stdout) if r.stdout.strip() else None

        holder = Holder(db, deadline)
        try:
            holder.ask("write 30")
            before = sorted(os.listdir(data))
            assert before == ["app.db", "app.db-shm", "app.db-wal"], before
            busy_state = dump(db)
            busy = as_nobody("backup", "create", "--db", db, "--repo", repo, "--json")
            assert sorted(os.listdir(data)) == before
        finally:
            holder.close()
        # The holder's last connection checkpointed and removed the -wal and the -shm.
        assert sorted(os.listdir(data)) == ["app.db"]
        idle_state = dump(db)
        assert sorted(os.listdir(data)) == ["app.db"]
        idle = as_nobody("backup", "create", "--db", db, "--repo", repo, "--type", "incremental",
                         "--json")
        assert sorted(os.listdir(data)) == ["app.db"], "cairn created files beside the database"
        for entry, state in ((busy, busy_state), (idle, idle_state)):
            out = os.path.join(top, entry["id"] + ".db")
            r = subprocess.run([str(cairn_bin), "restore", "--repo", repo, entry["id"], "--out",
                                out], capture_output=True, text=True, timeout=deadline(60))
            assert r.returncode == 0, r.stderr
            assert dump(out) == state
    finally:
        shutil.rmtree(top, ignore_errors=True)
