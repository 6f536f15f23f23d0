"""The CLI's commands that write files, run against files a live process uses.

`cairn restore --out FILE` puts a new file at FILE with a rename and moves FILE's -wal,
-journal and -shm aside: under a running cairnd (FILE in its data directory, reached by
any path) or under another program that has FILE open in SQLite, that leaves the live
process writing into a file nobody reads again. Such a restore is refused, naming the
process, and changes nothing. `cairn repair` refuses a live node's directory; `cairn
check` and `cairn log verify` on one write nothing there.
"""
import hashlib
import json
import os
import platform
import sqlite3
import subprocess

import pytest

from conftest import assert_exec_ok, wait_until


def run(cairn_bin, *args, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def make_db(path, rows, blob=300):
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<?) "
                "INSERT INTO t(v) SELECT randomblob(?) FROM n", (rows, blob))
    con.close()
    return path


@pytest.fixture
def backup_id(cairn_bin, tmp_path):
    """A repository holding one backup of a 500-row file: (repo, id)."""
    repo = tmp_path / "repo"
    db = make_db(tmp_path / "src.db", 500)
    r = run(cairn_bin, "backup", "create", "--db", db, "--repo", repo, "--json")
    assert r.returncode == 0, r.stderr
    return repo, json.loads(r.stdout)["id"]


def tree_state(d):
    """Every file under d (name -> size, mtime, inode, content hash), LOCK aside: what
    a command that changes nothing leaves as it was."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            try:
                st = os.lstat(p)
                with open(p, "rb") as fh:
                    h = hashlib.sha256(fh.read()).hexdigest()
            except FileNotFoundError:
                continue
            out[os.path.relpath(p, d)] = (st.st_size, st.st_mtime_ns, st.st_ino, h)
    return out


@pytest.fixture
def live(server_factory):
    s = server_factory()
    s.execute(["CREATE TABLE k(id INTEGER PRIMARY KEY, v TEXT)"])
    assert_exec_ok(s.execute([["INSERT INTO k(v) VALUES(?)", "v%d" % i] for i in range(50)],
                             transaction=True))
    return s


def assert_node_untouched(node, ino):
    db = node.data_dir / "db.sqlite"
    assert os.stat(db).st_ino == ino, "db.sqlite was replaced under the running node"
    assert node.running()
    assert_exec_ok(node.execute([["INSERT INTO k(v) VALUES('after')"]]))
    assert node.scalar("SELECT count(*) FROM k") == 51
    node.stop()
    node.start()
    assert node.scalar("SELECT count(*) FROM k") == 51


@pytest.mark.parametrize("how", ["direct", "symlink", "relative", "symlinked_dir", "hardlink",
                                 "new_file", "pitr"])
def test_restore_into_a_live_nodes_data_is_refused(cairn_bin, live, backup_id, tmp_path, how):
    repo, bid = backup_id
    data = live.data_dir
    db = data / "db.sqlite"
    ino = os.stat(db).st_ino
    cwd = None
    out = db
    if how == "symlink":
        out = tmp_path / "link.sqlite"
        os.symlink(db, out)
    elif how == "relative":
        cwd = tmp_path
        out = os.path.relpath(db, tmp_path)
    elif how == "symlinked_dir":
        os.symlink(data, tmp_path / "dlink")
        out = tmp_path / "dlink" / "db.sqlite"
    elif how == "hardlink":
        out = tmp_path / "hard.sqlite"
        os.link(db, out)
    elif how == "new_file":
        out = data / "other.sqlite"
    args = ["restore", "--repo", repo, "--out", out, "--force"]
    args += ["--to-index", "1"] if how == "pitr" else [bid]
    if how == "pitr":
        # A point-in-time restore needs an archive; its refusal comes before it is read.
        os.makedirs(repo / "archive", exist_ok=True)
    r = run(cairn_bin, *args, cwd=cwd)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "refusing to write" in r.stderr, r.stderr
    assert "pid %d" % live.pid in r.stderr, r.stderr
    assert not (data / "other.sqlite").exists()
    assert not [f for f in os.listdir(data) if f.startswith(".")], os.listdir(data)
    assert_node_untouched(live, ino)


def test_restore_into_a_stopped_nodes_data_works(cairn_bin, live, backup_id):
    repo, bid = backup_id
    live.stop()
    db = live.data_dir / "db.sqlite"
    r = run(cairn_bin, "restore", "--repo", repo, "--out", db, "--force", bid)
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(str(db))
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 500
    con.close()


def test_restore_over_a_file_open_in_another_program_is_refused(cairn_bin, backup_id, tmp_path):
    """A program with the file open in WAL mode (between transactions): its connection
    holds a lock on FILE-shm; the restore names its pid and changes nothing."""
    repo, bid = backup_id
    out = tmp_path / "app.db"
    con = sqlite3.connect(str(out), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE a(x)")
    con.execute("INSERT INTO a VALUES(1)")
    before = {f: open(tmp_path / f, "rb").read() for f in ("app.db", "app.db-wal")}
    ino = os.stat(out).st_ino
    r = run(cairn_bin, "restore", "--repo", repo, "--out", out, "--force", bid)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refusing to write" in r.stderr and "pid %d" % os.getpid() in r.stderr, r.stderr
    assert os.stat(out).st_ino == ino
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".app.db")]
    assert {f: open(tmp_path / f, "rb").read() for f in ("app.db", "app.db-wal")} == before
    con.execute("INSERT INTO a VALUES(2)")
    con.close()
    con = sqlite3.connect(str(out))
    assert con.execute("SELECT count(*) FROM a").fetchone()[0] == 2
    con.close()
    # Closed: the file is the restore's to replace.
    r = run(cairn_bin, "restore", "--repo", repo, "--out", out, "--force", bid)
    assert r.returncode == 0, r.stderr


def test_restore_over_a_file_a_program_holds_open_without_a_lock_is_refused(
        cairn_bin, backup_id, tmp_path):
    """A program's connection in rollback-journal mode holds no lock between
    transactions, yet has the file open: a restore would leave it reading and writing a
    file nobody else sees. Refused, naming the pid, found by the open file."""
    repo, bid = backup_id
    out = tmp_path / "app.db"
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c",
         "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('CREATE TABLE a(x)'); c.execute('INSERT INTO a VALUES(1)')\n"
         "c.execute('SELECT * FROM a').fetchall()\n"
         "print('open', flush=True); sys.stdin.read()\n"
         "c.execute('INSERT INTO a VALUES(2)'); print(c.execute('SELECT count(*) FROM a')"
         ".fetchone()[0])",
         str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        before = out.read_bytes()
        r = run(cairn_bin, "restore", "--repo", repo, "--out", out, "--force", bid)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "pid %d (python3) has it open" % holder.pid in r.stderr, r.stderr
        assert out.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["app.db", "repo", "src.db"]
        got, _ = holder.communicate("", timeout=60)
        assert got.strip() == "2"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()


def test_a_node_does_not_start_under_a_restore_into_its_data(cairn_bin, live, backup_id):
    """A restore into a stopped node's directory holds its lock until it ends (held here
    for 10 s by strace at the rename that puts the file in place): the node's start is
    refused naming the restore's pid, and the restore completes."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    repo, bid = backup_id
    live.stop()
    data = live.data_dir
    p = subprocess.Popen([strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=renameat2,linkat",
                          "-e", "inject=renameat2,linkat:delay_enter=10000000:when=1",
                          str(cairn_bin), "restore", "--repo", str(repo), "--out",
                          str(data / "db.sqlite"), "--force", bid],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = wait_until(lambda: p.poll() is None and (data / "LOCK").read_text().strip()
                         not in ("", str(live.pid)) and int((data / "LOCK").read_text()),
                         30, "the restore to take the lock")
        live.start(wait=False)
        assert live.wait_exit() != 0
        assert p.poll() is None, "the restore was no longer running"
        assert "in use by another cairn process (pid %d)" % pid in live.stderr_tail()
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    con = sqlite3.connect(str(data / "db.sqlite"))
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 500
    con.close()


def test_two_restores_to_one_file_end_with_one_complete_file(cairn_bin, tmp_path):
    """Two `cairn restore --force --out SAME` at once, of two different backups: each
    writes its own hidden file and renames it in, so the file is one of the two, whole
    (never pages of both), and nothing is left beside it. One may instead be refused,
    having found the other holding the file open (its own file, just renamed in): then
    the file is the other's."""
    repo = tmp_path / "repo"
    ids = {}
    for rows in (300, 900):
        db = make_db(tmp_path / ("src%d.db" % rows), rows)
        r = run(cairn_bin, "backup", "create", "--db", db, "--repo", repo, "--json")
        assert r.returncode == 0, r.stderr
        ids[rows] = json.loads(r.stdout)["id"]
    out = tmp_path / "out.db"
    for _ in range(8):
        procs = [subprocess.Popen([str(cairn_bin), "restore", "--repo", str(repo), "--out",
                                   str(out), "--force", ids[rows]], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for rows in ids]
        done = {}
        for rows, p in zip(ids, procs):
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                other = [q.pid for q in procs if q is not p][0]
                assert "refusing to write" in err and "pid %d (cairn)" % other in err, err
            done[rows] = p.returncode
        assert 0 in done.values()
        con = sqlite3.connect(str(out))
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        got = con.execute("SELECT count(*) FROM t").fetchone()[0]
        assert done[got] == 0, (got, done)
        con.close()
        assert sorted(os.listdir(tmp_path)) == ["out.db", "repo", "src300.db", "src900.db"]


def test_repair_of_a_live_node_is_refused_and_changes_nothing(cairn_bin, live):
    data = live.data_dir
    before = tree_state(data / "raft")
    for args in ([], ["--force"], ["--add-checksums"]):
        r = run(cairn_bin, "repair", *args, data)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "pid %d" % live.pid in r.stderr and "stop the node" in r.stderr, r.stderr
    assert not (data / "corrupt").exists() and not (data / "repair-undo.json").exists()
    assert tree_state(data / "raft") == before
    assert_node_untouched(live, os.stat(data / "db.sqlite").st_ino)


def test_two_repairs_at_once_one_refuses(cairn_bin, server_factory, tmp_path):
    """The first repair holds the directory's lock for its whole run (held here at its
    first rename by strace for 10 s): the second is refused naming its pid and
    changes nothing; the first then completes."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    node = server_factory()
    node.execute(["CREATE TABLE k(id INTEGER PRIMARY KEY, v TEXT)"])
    assert_exec_ok(node.execute([["INSERT INTO k(v) VALUES('x')"]]))
    node.stop()
    data = node.data_dir
    first = subprocess.Popen([strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=renameat2",
                              "-e", "inject=renameat2:delay_enter=10000000:when=1",
                              str(cairn_bin), "repair", "--force", str(data)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Its "database:" line comes once it holds the lock and has checked the files.
        seen = ""
        while "database:" not in seen:
            line = first.stderr.readline()
            assert line, "the first repair ended early: %r" % seen
            seen += line
        holder = int(open(data / "LOCK").read())
        r = run(cairn_bin, "repair", "--force", data)
        assert first.poll() is None, "the first repair was no longer running"
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "pid %d" % holder in r.stderr and "in use" in r.stderr, r.stderr
        first.communicate(timeout=120)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    node.start()
    assert node.scalar("SELECT count(*) FROM k") == 1


def test_check_and_log_verify_on_a_live_node_write_nothing(cairn_bin, live):
    """Read-only on a running node: no file of DATA changes (LOCK included), no -shm or
    -wal is made or removed, and the node goes on writing, stopping and starting."""
    data = live.data_dir
    ino = os.stat(data / "db.sqlite").st_ino
    live.get_json("/status")
    before = tree_state(data)
    r = run(cairn_bin, "check", data)
    assert "RUNNING" in r.stdout and "pid %d" % live.pid in r.stdout, (r.stdout, r.stderr)
    r = run(cairn_bin, "log", "verify", data)
    assert r.returncode in (0, 1), (r.stdout, r.stderr)
    after = tree_state(data)
    changed = [k for k in set(before) | set(after)
               if k != "db.sqlite-shm" and before.get(k) != after.get(k)]
    assert not changed, changed
    assert_node_untouched(live, ino)


# ---- the heal at a start, killed half-way ---------------------------------------------

def load_rows(node, batches):
    node.execute(["CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"])
    for b in range(batches):
        assert_exec_ok(node.execute([["INSERT INTO t(v) VALUES(?)", "r%d-%d-%s" % (b, i, "x" * 300)]
                                     for i in range(200)], transaction=None))
    return node.scalar("SELECT count(*) || ':' || total(length(v)) || ':' || max(id) FROM t")


def smash(path, page=4096):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for off in range(2 * page, size, 5 * page):
            f.seek(off)
            f.write(b"\xde\xad\xbe\xef" * 4)


@pytest.mark.parametrize("where", [
    # the damaged database's move to corrupt/
    ("db.sqlite", "renameat2", 1),
    # the snapshot's restored copy put in place of the new, empty database
    ("db.sqlite.restored", "rename", 1),
    # the replay of the log past the snapshot, a few writes in
    ("db.sqlite-wal", "pwrite64", 3),
])
def test_a_start_killed_while_healing_loses_nothing_at_the_next(server_factory, cairn_bin,
                                                                 where):
    """A start after an unclean stop moves a damaged database aside and rebuilds it from
    the newest snapshot and the log. Killed at each step (SIGKILL by strace at the
    syscall), the next start must neither lose a committed row nor serve what was
    rebuilt so far as the whole."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    want = load_rows(node, 20)
    node.kill()
    data = node.data_dir
    smash(data / "db.sqlite")
    name, call, when = where
    p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P", str(data / name),
                        "-e", "trace=" + call, "-e",
                        "inject=%s:error=EIO:signal=SIGKILL:when=%d" % (call, when)]
                       + node.argv(), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, (p.stdout, p.stderr)
    node.start()
    assert node.scalar("SELECT count(*) || ':' || total(length(v)) || ':' || max(id) FROM t") \
        == want
    node.stop()
    r = run(cairn_bin, "check", data)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_a_wal_left_without_its_database_is_not_read_into_a_new_one(server_factory, cairn_bin):
    """db.sqlite removed by hand after a kill -9 (`cairn check` says a missing database is
    rebuilt at the next start), its -wal still there: the new database must not take the
    old WAL's pages (and an applied index past the snapshot, which would keep it as it
    is). SQLite discards a WAL beside an empty database; the node rebuilds every row."""
    node = server_factory(extra_args=["--snapshot-threshold", "8", "--snapshot-trailing", "4"])
    want = load_rows(node, 20)
    node.kill()
    data = node.data_dir
    wal = data / "db.sqlite-wal"
    assert wal.exists() and wal.stat().st_size > 0
    os.unlink(data / "db.sqlite")
    node.start()
    assert node.scalar("SELECT count(*) || ':' || total(length(v)) || ':' || max(id) FROM t") \
        == want
    node.stop()
    r = run(cairn_bin, "check", data)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_check_takes_no_lock_that_would_keep_a_node_from_starting(cairn_bin, live, tmp_path):
    """`cairn check` on a stopped node's directory told whether a node runs there by
    taking a shared flock on DATA/LOCK for an instant; a node starting in that instant
    (held here for 10 s by strace, after the flock) refused to start, "in use by another
    cairn process". It now reads who holds what (/proc/locks) and takes no flock."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    live.stop()
    data = live.data_dir
    trace = tmp_path / "check.trace"
    p = subprocess.Popen([strace, "-f", "-qq", "-o", str(trace), "-e", "trace=flock", "-e",
                          "inject=flock:delay_exit=10000000:when=1", str(cairn_bin), "check",
                          str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock_ino = os.stat(data / "LOCK").st_ino

        def check_holds_or_ended():
            if p.poll() is not None:
                return True
            with open("/proc/locks") as f:
                return any(":%d " % lock_ino in line for line in f)
        wait_until(check_holds_or_ended, 30, "cairn check to take its lock or end")
        live.start()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert "flock(" not in trace.read_text(), trace.read_text()
    assert_node_untouched(live, os.stat(data / "db.sqlite").st_ino)


def test_check_does_not_remove_the_shm_of_a_node_started_meanwhile(cairn_bin, live):
    """`cairn check` of a stopped node's database with a WAL and no -shm reads it through
    a -shm SQLite makes, and removes that -shm after. A node that started meanwhile
    (nothing keeps it from starting) maps that very -shm: removed under it, the next
    reader would make a new, empty one beside the same WAL. Held here for 10 s by strace
    at its open of the -shm, while the node starts."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    openat = {"x86_64": "257", "aarch64": "56"}.get(platform.machine())
    if openat is None:
        pytest.skip("openat's number on %s is not known here" % platform.machine())
    assert_exec_ok(live.execute([["INSERT INTO k(v) VALUES('in the wal')"]]))
    live.kill()
    data = live.data_dir
    shm = data / "db.sqlite-shm"
    assert (data / "db.sqlite-wal").exists()
    shm.unlink()
    p = subprocess.Popen([strace, "-f", "-qq", "-o", os.devnull, "-P", str(shm), "-e",
                          "trace=openat", "-e",
                          "inject=openat:delay_enter=10000000:when=1", str(cairn_bin),
                          "check", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:

        def check_at_its_open_or_ended():
            if p.poll() is not None:
                return True
            try:
                with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                    kids = f.read().split()
                for k in kids:
                    with open("/proc/%s/syscall" % k) as f:
                        if f.read().split()[0] == openat:
                            return True
            except (OSError, IndexError):
                pass
            return False
        wait_until(check_at_its_open_or_ended, 60, "cairn check to open the -shm")
        live.start()
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert shm.exists(), "the running node's -shm was removed"
    assert os.stat(shm).st_nlink == 1
    assert live.scalar("SELECT count(*) FROM k") == 51
    assert_exec_ok(live.execute([["INSERT INTO k(v) VALUES('after')"]]))


def test_backup_of_a_live_nodes_database_changes_nothing_there(cairn_bin, live, tmp_path):
    """`cairn backup create --db DATA/db.sqlite` beside the running node reads only: no
    file of DATA changes but the -shm SQLite's readers share, and the node goes on."""
    data = live.data_dir
    live.get_json("/status")
    before = tree_state(data)
    r = run(cairn_bin, "backup", "create", "--db", data / "db.sqlite", "--repo",
            tmp_path / "r", "--json")
    assert r.returncode == 0, r.stderr
    after = tree_state(data)
    changed = [k for k in set(before) | set(after)
               if k != "db.sqlite-shm" and before.get(k) != after.get(k)]
    assert not changed, changed
    assert_node_untouched(live, os.stat(data / "db.sqlite").st_ino)
