"""`cairn backup create|list|show|verify` and `cairn restore`.

Three groups:
  - standalone mode (--repo/--db): the backup engine in the cairn process, on SQLite
    files made here with Python's sqlite3, also while another process writes them;
  - the client side of the admin API against a stand-in HTTP server that speaks the
    documented shapes (bodies sent, answers printed, the ?progress NDJSON stream, errors);
  - server mode against a real cairnd, skipped while cairnd answers 404 on /admin/backups.

Every test of a repository runs twice (issue 16): on a directory and on an S3 prefix of
the module's s3rver (backuputil's `repo` fixture: str(repo) is what --repo takes, and
for S3 the environment carries the credentials and the endpoint, as a user's would).

Progress bars and Ctrl-C run the command on a pseudo-terminal (the pty module). No test
waits by sleeping: everything is polled against a deadline.
"""

import http.server
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from backuputil import repo, repo_kind, repo_kinds, repo_kinds_for  # noqa: F401 (fixtures)
from s3util import s3env  # noqa: F401 (fixture)

ENTRY_KEYS = {
    "id", "type", "parent_id", "created", "created_ms", "raft_index", "raft_term",
    "page_size", "page_count", "pages", "size_bytes", "path", "duration_ms", "verified",
    "verified_at", "digest", "parent_digest", "source", "history", "compression",
}

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------
# helpers

@pytest.fixture
def cli(cairn_bin, tmp_path, deadline):
    """run(*args, env=None, timeout=60) -> CompletedProcess of the cairn command (text)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(*args, env=None, timeout=60, cwd=None):
        e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
        e["HOME"] = str(home)
        e.update(env or {})
        return subprocess.run(
            [str(cairn_bin)] + [str(a) for a in args],
            input="",
            capture_output=True,
            text=True,
            env=e,
            cwd=cwd,
            timeout=deadline(timeout),
        )

    return run


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    return r


def fails(r, *needles, code=1):
    assert r.returncode == code, "exit %d (want %d)\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, code, r.stdout, r.stderr)
    for n in needles:
        assert n in r.stderr, "%r not in stderr:\n%s" % (n, r.stderr)
    return r


def one_json(r):
    """stdout holds exactly one JSON document (strictly parsed)."""
    def no_constants(name):
        raise ValueError("non-standard JSON constant %s" % name)
    text = r.stdout.strip()
    assert text, "no output; stderr:\n%s" % r.stderr
    return json.loads(text, parse_constant=no_constants)


def make_db(path, rows=200, journal_mode="delete", blob=600):
    """A SQLite file with a table t(id, v) of `rows` rows and a counter table."""
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=%s" % journal_mode)
        con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        con.execute("CREATE TABLE IF NOT EXISTS counter(n INTEGER)")
        if con.execute("SELECT count(*) FROM counter").fetchone()[0] == 0:
            con.execute("INSERT INTO counter VALUES(0)")
        add_rows(con, rows, blob)
    finally:
        con.close()
    return path


def add_rows(con_or_path, rows, blob=600):
    con = con_or_path if isinstance(con_or_path, sqlite3.Connection) else \
        sqlite3.connect(str(con_or_path), isolation_level=None)
    try:
        con.execute("BEGIN")
        for _ in range(rows):
            con.execute("INSERT INTO t(v) VALUES(randomblob(?))", (blob,))
        con.execute("UPDATE counter SET n = n + ?", (rows,))
        con.execute("COMMIT")
    finally:
        if con is not con_or_path:
            con.close()


def dump(path):
    con = sqlite3.connect(str(path))
    try:
        return list(con.iterdump())
    finally:
        con.close()


def db_state(path):
    """(integrity_check, rows of t, counter) of a database file."""
    con = sqlite3.connect(str(path))
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchall()
        count = con.execute("SELECT count(*) FROM t").fetchone()[0]
        n = con.execute("SELECT n FROM counter").fetchone()[0]
        return integrity, count, n
    finally:
        con.close()


def check_entry(e):
    assert isinstance(e, dict), e
    assert ENTRY_KEYS <= set(e), "missing keys %s in %r" % (ENTRY_KEYS - set(e), e)
    # cairnd adds "nodes" (where the backup is in the cluster).
    assert set(e) - ENTRY_KEYS <= {"error", "nodes", "repository"}, "unexpected keys %s" % (set(e) - ENTRY_KEYS)
    assert e["type"] in ("full", "incremental", "differential"), e
    assert isinstance(e["id"], str) and e["id"], e
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", e["created"]), e["created"]
    for k in ("created_ms", "raft_index", "raft_term", "page_size", "page_count", "pages",
              "size_bytes", "duration_ms"):
        assert isinstance(e[k], int) and e[k] >= 0, (k, e)
    assert e["verified"] in ("unverified", "verified", "failed"), e
    assert re.fullmatch(r"[0-9a-f]{32}", e["digest"]), e["digest"]
    # The history: the cluster id of the server that took it; none for a plain file.
    assert e["history"] is None or re.fullmatch(r"[0-9a-f]{32}", e["history"]), e
    assert e["compression"] in ("lz4", "zstd"), e
    if e["type"] == "full":
        assert e["parent_id"] is None and e["parent_digest"] is None, e
        assert e["pages"] == e["page_count"], e
    else:
        assert isinstance(e["parent_id"], str), e
        assert re.fullmatch(r"[0-9a-f]{32}", e["parent_digest"]), e
    return e


def run_pty(argv, env=None, timeout=60, on_output=None):
    """Runs argv on a pseudo-terminal (stdin, stdout and stderr). Returns (exit code,
    output text). on_output(text_so_far, pid) is called after each read."""
    e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    e.update(env or {})
    e.setdefault("TERM", "xterm")
    pid, fd = pty.fork()
    if pid == 0:  # the child
        try:
            os.execve(argv[0], [str(a) for a in argv], e)
        finally:
            os._exit(127)
    out = b""
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError("%s did not finish within %.0fs; output:\n%r"
                                     % (argv, timeout, out[-3000:]))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
            if on_output is not None:
                on_output(out.decode("utf-8", "replace"), pid)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# usage

HELP_CASES = {
    "backup --help": (["backup", "--help"], ["usage: cairn backup", "create", "list", "show", "verify"]),
    "help backup": (["help", "backup"], ["usage: cairn backup", "create", "verify"]),
    "create --help": (["backup", "create", "--help"],
                      ["usage: cairn backup create", "--type", "--to", "--db", "--repo", "--host", "--json"]),
    "list --help": (["backup", "list", "--help"], ["usage: cairn backup list", "--repo", "--json"]),
    "show --help": (["backup", "show", "-h"], ["usage: cairn backup show", "--repo", "--json", "ID"]),
    "verify --help": (["backup", "verify", "--help"], ["usage: cairn backup verify", "--restore", "--repo"]),
    "restore --help": (["restore", "--help"],
                       ["usage: cairn restore", "--branch", "--out", "--force", "--repo", "--json"]),
    "help backup create": (["help", "backup", "create"], ["usage: cairn backup create", "--type"]),
    "help restore": (["help", "restore"], ["usage: cairn restore", "--branch"]),
    "top --help": (["--help"], ["backup", "restore"]),
}


@pytest.mark.smoke
@pytest.mark.parametrize("case", sorted(HELP_CASES))
def test_help_of_every_backup_command(cli, case):
    args, needles = HELP_CASES[case]
    r = ok(cli(*args))
    assert r.stdout.startswith("usage: cairn"), r.stdout
    for n in needles:
        assert n in r.stdout, "%r missing from cairn %s:\n%s" % (n, " ".join(args), r.stdout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["backup"], "no subcommand given"),
        (["backup", "bogus"], "unknown subcommand 'bogus'"),
        (["backup", "--repo", "x", "list"], "expected a subcommand"),
        (["help", "backup", "bogus"], "unknown subcommand 'backup bogus'"),
        (["backup", "create", "--type", "weekly"], "invalid type 'weekly'"),
        (["backup", "create", "--db", "x.db"], "--db needs --repo"),
        (["backup", "create", "--repo", "r"], "--repo needs --db"),
        (["backup", "create", "--db", "x.db", "--repo", "r", "--to", "d"], "--to is for a server"),
        (["backup", "create", "extra"], "unexpected argument 'extra'"),
        (["backup", "create", "--bogus"], "unknown option '--bogus'"),
        (["backup", "list", "--repo", "r", "--host", "h:1"], "--repo and --host"),
        (["backup", "list", "extra"], "unexpected argument"),
        (["backup", "show"], "no backup ID given"),
        (["backup", "show", "a", "b"], "one backup ID expected"),
        (["backup", "verify", "--repo", "r"], "no backup ID given"),
        (["backup", "verify", "--restore=yes", "x"], "takes no value"),
        (["restore"], "no backup ID given"),
        (["restore", "--repo", "r", "x"], "--repo needs --out"),
        (["restore", "--repo", "r", "--out", "", "x"], "--out needs a file name"),
        (["restore", "--repo", "r", "--out", "", "--to-index", "5"], "--out needs a file name"),
        (["restore", "--out", "f.db", "x"], "--out is for a standalone restore"),
        (["restore", "--force", "x"], "--force is for a standalone restore"),
        (["restore", "--repo", "r", "--out", "f", "--branch", "b", "x"], "--branch is for a server"),
        (["restore", "--branch"], "needs a value"),
        (["backup", "create", "--db", "x.db", "--repo", "r", "--compression", "gzip"],
         'compression "gzip": expected lz4'),
        (["backup", "create", "--db", "x.db", "--repo", "r", "--compression", "zstd:0"],
         "the zstd level must be a whole number"),
        (["backup", "create", "--db", "x.db", "--repo", "r", "--compression", "lz4:x"],
         "the LZ4 acceleration must be a whole number"),
        (["backup", "create", "--compression", "lz4"], "--compression is for a standalone backup"),
    ],
)
def test_bad_command_lines_exit_2(cli, tmp_path, args, message):
    r = cli(*args, cwd=tmp_path)
    fails(r, message, code=2)
    assert "usage: cairn" in r.stderr, r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "r").exists(), "a usage error must not create the repository"


# ---------------------------------------------------------------------------
# standalone mode

def create(cli, db, repo, type_=None, json_out=True):
    args = ["backup", "create", "--db", db, "--repo", repo]
    if type_:
        args += ["--type", type_]
    if json_out:
        args.append("--json")
    return cli(*args)


def test_standalone_full_incremental_differential_and_restore(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db", rows=300)
    states = {}

    full = check_entry(one_json(ok(create(cli, db, repo))))
    assert full["type"] == "full"
    assert full["source"] == os.path.realpath(db)
    assert full["raft_index"] == 0
    assert full["history"] is None, full  # a plain SQLite file belongs to no cluster
    assert repo.name_of(full["path"]) == full["id"] + ".cbk"
    assert repo.exists(full["id"] + ".cbk")
    assert full["verified"] == "unverified" and full["verified_at"] is None
    states[full["id"]] = dump(db)

    add_rows(db, 50)
    inc = check_entry(one_json(ok(create(cli, db, repo, "incremental"))))
    assert inc["type"] == "incremental" and inc["parent_id"] == full["id"]
    assert inc["parent_digest"] == full["digest"]
    assert 0 < inc["pages"] < inc["page_count"], inc
    states[inc["id"]] = dump(db)

    add_rows(db, 50)
    inc2 = check_entry(one_json(ok(create(cli, db, repo, "incremental"))))
    assert inc2["parent_id"] == inc["id"], "an incremental backup builds on the newest one"
    states[inc2["id"]] = dump(db)

    add_rows(db, 50)
    diff = check_entry(one_json(ok(create(cli, db, repo, "differential"))))
    assert diff["type"] == "differential" and diff["parent_id"] == full["id"], \
        "a differential backup builds on the newest full one"
    assert diff["pages"] >= inc2["pages"]
    states[diff["id"]] = dump(db)

    # list: every backup, in creation order, each entry as show gives it.
    listed = one_json(ok(cli("backup", "list", "--repo", repo, "--json")))
    assert isinstance(listed, list)
    assert [e["id"] for e in listed] == [full["id"], inc["id"], inc2["id"], diff["id"]]
    for e in listed:
        check_entry(e)
        shown = one_json(ok(cli("backup", "show", "--repo", repo, e["id"], "--json")))
        assert shown == e

    # restore each: the database exactly as it was at that backup.
    for i, (bid, state) in enumerate(states.items()):
        out = tmp_path / ("restored%d.db" % i)
        r = ok(cli("restore", "--repo", repo, bid, "--out", out, "--json"))
        doc = one_json(r)
        assert set(doc) == {"restored", "out", "left_out", "check"}, doc
        assert doc["left_out"] == [], doc  # a standalone backup has no table of cairn's
        assert doc["restored"]["id"] == bid
        check_entry(doc["restored"])
        assert doc["out"] == str(out.resolve())
        assert dump(out) == state, "restore of %s differs from the source at backup time" % bid
        integrity, count, n = db_state(out)
        assert integrity == [("ok",)] and count == n


def test_standalone_files_compressed_each_their_own_way(cli, tmp_path, repo):
    """--compression per backup: a chain whose files use zstd and LZ4 at several levels
    restores every state exactly; each file's header says its codec (format version 2
    for LZ4, version 1, as older builds read, for zstd); the default is LZ4 into a
    directory and zstd into S3."""
    db = make_db(tmp_path / "src.db", rows=400)
    states = {}
    codecs = [None, "zstd:7", "lz4:4", "zstd", "lz4"]
    for i, c in enumerate(codecs):
        if i:
            add_rows(db, 40)
        args = ["backup", "create", "--db", db, "--repo", repo, "--json",
                "--type", "full" if i == 0 else "incremental"]
        if c:
            args += ["--compression", c]
        e = check_entry(one_json(ok(cli(*args))))
        head = repo.read(e["id"] + ".cbk")[:64]
        lz4 = c.startswith("lz4") if c else repo_kind_of(repo) == "dir"
        assert head[8] == (2 if lz4 else 1) and head[49] == (1 if lz4 else 0), (c, head[8], head[49])
        assert e["compression"] == ("lz4" if lz4 else "zstd"), e
        states[e["id"]] = dump(db)
    for i, (bid, state) in enumerate(states.items()):
        out = tmp_path / ("r%d.db" % i)
        ok(cli("restore", "--repo", repo, bid, "--out", out, "--json"))
        assert dump(out) == state, bid
    ok(cli("backup", "verify", "--repo", repo, list(states)[-1], "--restore"))


def repo_kind_of(repo):
    return "s3" if str(repo).startswith("s3://") else "dir"


def test_standalone_plain_output(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db")
    r = ok(create(cli, db, repo, json_out=False))
    lines = dict(re.match(r"(\w[\w ]*):\s+(.*)", l).groups() for l in r.stdout.splitlines())
    bid = lines["id"]
    assert lines["type"] == "full"
    assert re.fullmatch(r"\d+ stored of \d+ \(page size \d+\)", lines["pages"]), lines["pages"]
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB) \(\d+ bytes\)", lines["size"]), lines["size"]
    assert re.fullmatch(r"\d+ ms|[\d.]+ s", lines["duration"]), lines["duration"]
    assert lines["verified"] == "unverified"
    assert lines["source"] == os.path.realpath(db)

    add_rows(db, 10)
    ok(create(cli, db, repo, "incremental", json_out=False))
    r = ok(cli("backup", "list", "--repo", repo))
    table = r.stdout.splitlines()
    assert table[0].startswith("+-") and "| ID" in table[1] and "STATUS" in table[1]
    rows = [l for l in table[3:] if l.startswith("| ")]
    assert len(rows) == 2, r.stdout
    assert rows[0].startswith("| " + bid), r.stdout
    assert len({len(l) for l in table}) == 1, "table lines are not aligned:\n" + r.stdout
    assert "incremental" in rows[1] and bid in rows[1], "the incremental row names its parent"

    r = ok(cli("backup", "show", "--repo", repo, bid))
    assert r.stdout.startswith("id:") and bid in r.stdout and "digest:" in r.stdout
    assert re.search(r"^compression: +(lz4|zstd)$", r.stdout, re.M), r.stdout
    assert "history:" not in r.stdout, r.stdout  # a plain file's backup records none

    r = ok(cli("backup", "verify", "--repo", repo, bid))
    assert "backup %s is sound" % bid in r.stdout
    r = ok(cli("backup", "list", "--repo", repo))
    assert "verified" in r.stdout

    out = tmp_path / "out.db"
    r = ok(cli("restore", "--repo", repo, bid, "--out", out))
    assert re.match(r"restored backup %s \(full, \d+ pages, .*\) into %s in " % (bid, re.escape(str(out.resolve()))),
                    r.stdout), r.stdout


def missing_repository(repo, tmp_path):
    """A repository that is not there, and the words cairn's error must hold: a
    directory that does not exist; for S3 (where a prefix with nothing under it is an
    empty repository), a bucket that does not exist."""
    if repo.kind == "dir":
        return tmp_path / "nothing-here", ["does not exist"]
    return "s3://cairn-test-missing/nothing-here", ["cairn-test-missing", "does not exist"]


def test_standalone_list_of_an_empty_or_missing_repository(cli, tmp_path, repo):
    if repo.kind == "dir":
        repo.path.mkdir()
    r = ok(cli("backup", "list", "--repo", repo))
    assert r.stdout == "no backups\n"
    assert one_json(ok(cli("backup", "list", "--repo", repo, "--json"))) == []
    # A missing one is not an empty one (test_a_missing_repository_is_not_an_empty_one).
    missing, words = missing_repository(repo, tmp_path)
    r = cli("backup", "list", "--repo", missing)
    assert r.returncode == 1 and all(w in r.stderr for w in words), r
    assert not (tmp_path / "nothing-here").exists(), "listing must not create the repository"
    assert repo.names() == []


def test_standalone_verify_and_trial_restore(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db")
    full = one_json(ok(create(cli, db, repo)))
    add_rows(db, 30)
    inc = one_json(ok(create(cli, db, repo, "incremental")))

    doc = one_json(ok(cli("backup", "verify", "--repo", repo, inc["id"], "--json")))
    # "error" is always there (README), null when the backup is sound.
    assert doc == {"id": inc["id"], "ok": True, "trial_restore": False, "error": None}
    doc = one_json(ok(cli("backup", "verify", "--repo", repo, inc["id"], "--restore", "--json")))
    assert doc == {"id": inc["id"], "ok": True, "trial_restore": True, "error": None}
    assert repo.leftovers() == [], "the trial restore left files behind"

    shown = one_json(ok(cli("backup", "show", "--repo", repo, inc["id"], "--json")))
    assert shown["verified"] == "verified"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", shown["verified_at"]), shown
    assert full["id"] != inc["id"]


def test_standalone_restore_refuses_to_overwrite_without_force(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db")
    bid = one_json(ok(create(cli, db, repo)))["id"]
    out = tmp_path / "out.db"
    out.write_bytes(b"precious")

    r = fails(cli("restore", "--repo", repo, bid, "--out", out), "cairn: ")
    assert str(out) in r.stderr or "out.db" in r.stderr, r.stderr
    assert r.stdout == ""
    assert out.read_bytes() == b"precious", "a refused restore wrote to the file"

    r = ok(cli("restore", "--repo", repo, bid, "--out", out, "--force", "--json"))
    assert one_json(r)["restored"]["id"] == bid
    assert dump(out) == dump(db)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out.db")) == ["out.db"]


def wal_database_with_commits_in_its_wal(path):
    """A database in WAL mode whose last commits are only in its -wal (a copy of the
    files while a connection holds them, so that no checkpoint ran): 50 rows of old(x)."""
    live = path.parent / ("live-" + path.name)
    con = sqlite3.connect(str(live), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=wal")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE old(x)")
        con.executemany("INSERT INTO old VALUES(?)", [(i,) for i in range(50)])
        path.write_bytes(live.read_bytes())
        (path.parent / (path.name + "-wal")).write_bytes(
            (live.parent / (live.name + "-wal")).read_bytes())
    finally:
        con.close()
    for p in path.parent.iterdir():
        if p.name.startswith(live.name):
            p.unlink()
    assert os.path.getsize(str(path) + "-wal") > 0


def test_a_forced_restore_that_fails_at_the_last_step_leaves_the_old_database_whole(
        cli, tmp_path):
    """--force over a database whose last commits are in its -wal: the -wal must be gone
    before the new file takes the name (it would be read into it), but a restore that
    then fails to take the name (here the old file is immutable, chattr +i, so the
    rename fails) must give it back. It was removed first: the old database lost them."""
    db = make_db(tmp_path / "src.db")
    repo = tmp_path / "repo"
    bid = one_json(ok(create(cli, db, repo)))["id"]
    place = tmp_path / "place"
    place.mkdir()
    out = place / "old.db"
    wal_database_with_commits_in_its_wal(out)
    before = sorted(p.name for p in place.iterdir())
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (needs root and a file system with it)")
    try:
        r = fails(cli("restore", "--repo", repo, bid, "--out", out, "--force", "--json"),
                  "cairn: ", "old.db")
        assert r.stdout == ""
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert sorted(p.name for p in place.iterdir()) == before
    con = sqlite3.connect(str(out))
    try:
        assert con.execute("SELECT count(*) FROM old").fetchone()[0] == 50
    finally:
        con.close()

    # Replaced: the new file alone, no old -wal beside it, nothing aside left.
    ok(cli("restore", "--repo", repo, bid, "--out", out, "--force", "--json"))
    assert sorted(p.name for p in place.iterdir()) == ["old.db"]
    assert dump(out) == dump(db)


def test_standalone_restore_into_a_directory_is_refused_at_once(cli, tmp_path, repo):
    """--out naming a directory: refused before anything is read or written, with
    --force too (which replaces a file, never a directory), point in time as well."""
    db = make_db(tmp_path / "src.db")
    bid = one_json(ok(create(cli, db, repo)))["id"]
    out = tmp_path / "somedir"
    out.mkdir()
    (out / "keep").write_text("kept")
    for extra in ([bid], [bid, "--force"], ["--to-index", "5"], ["latest", "--force"]):
        r = fails(cli("restore", "--repo", repo, "--out", out, *extra),
                  "cairn: ", "somedir is a directory")
        assert r.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["keep"]
    assert not [p.name for p in tmp_path.iterdir() if "restore" in p.name]


def test_standalone_unknown_ids(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db")
    ok(create(cli, db, repo))
    bogus = "20990101T000000000Z-0001-dead"
    out = tmp_path / "out.db"
    for args in (["backup", "show", "--repo", repo, bogus],
                 ["backup", "show", "--repo", repo, bogus, "--json"],
                 ["backup", "verify", "--repo", repo, bogus],
                 ["backup", "verify", "--repo", repo, bogus, "--json"],
                 ["restore", "--repo", repo, bogus, "--out", out]):
        r = fails(cli(*args), "cairn: ", bogus)
        assert r.stdout == "", "%s printed %r" % (args, r.stdout)
    assert not out.exists()


def test_standalone_incremental_without_a_full_backup_is_taken_whole(cli, tmp_path, repo):
    """Nothing to chain to: the first incremental (or differential) of a database into
    a repository is a full backup, and says so; the next one chains to it."""
    db = make_db(tmp_path / "src.db")
    first = one_json(ok(create(cli, db, repo, "incremental")))
    assert first["type"] == "full" and first["parent_id"] is None, first
    add_rows(db, 20)
    diff = one_json(ok(create(cli, db, repo, "differential")))
    assert diff["type"] == "differential" and diff["parent_id"] == first["id"], diff
    listed = one_json(ok(cli("backup", "list", "--repo", repo, "--json")))
    assert [e["id"] for e in listed] == [first["id"], diff["id"]], listed
    assert repo.leftovers() == []


def test_standalone_backup_of_a_file_that_is_not_a_database(cli, tmp_path, repo):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a database\n" * 200)
    r = fails(create(cli, bad, repo), "cairn: ", "notes.txt")
    assert r.stdout == ""
    fails(create(cli, tmp_path / "missing.db", repo), "cairn: ", "missing.db")
    assert repo.leftovers() == []
    assert one_json(ok(cli("backup", "list", "--repo", repo, "--json"))) == []



def test_standalone_corrupted_backup_is_reported_with_its_file(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db", rows=400)
    full = one_json(ok(create(cli, db, repo)))
    add_rows(db, 20)
    inc = one_json(ok(create(cli, db, repo, "incremental")))
    full_name = os.path.basename(full["path"])

    # Damage the middle of the full backup (its page blocks, not its header).
    repo.damage(full_name, repo.size(full_name) // 2)

    r = fails(cli("backup", "verify", "--repo", repo, full["id"]), "cairn: ", full_name)
    assert r.stdout == ""
    # The incremental one is sound itself but its chain is not.
    r = fails(cli("backup", "verify", "--repo", repo, inc["id"], "--json"), "cairn: ", full_name)
    doc = one_json(r)
    assert doc["id"] == inc["id"] and doc["ok"] is False and doc["trial_restore"] is False
    assert full_name in doc["error"]

    out = tmp_path / "out.db"
    fails(cli("restore", "--repo", repo, inc["id"], "--out", out), "cairn: ", full_name)
    assert not out.exists(), "a failed restore left a file"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.db")] == []

    listed = {e["id"]: e for e in one_json(ok(cli("backup", "list", "--repo", repo, "--json")))}
    assert listed[full["id"]]["verified"] == "failed"
    assert "FAILED" in ok(cli("backup", "list", "--repo", repo)).stdout


def test_no_backup_is_written_on_a_chain_that_failed_its_verification(cli, tmp_path, repo):
    """F <- I1 <- I2 with a block of I1 damaged and I2 verified (failed, naming I1): a new
    incremental would chain to I2, through I1, and never restore. It is refused, naming
    I1, and nothing is written; a differential (on F) and a new full still are."""
    db = make_db(tmp_path / "src.db", rows=400)
    full = one_json(ok(create(cli, db, repo)))
    add_rows(db, 20)
    i1 = one_json(ok(create(cli, db, repo, "incremental")))
    add_rows(db, 20)
    i2 = one_json(ok(create(cli, db, repo, "incremental")))
    i1_name = repo.name_of(i1["path"])
    repo.damage(i1_name, 600)
    fails(cli("backup", "verify", "--repo", repo, i2["id"]), "cairn: ", i1_name)
    before = repo.backups()

    add_rows(db, 20)
    r = fails(create(cli, db, repo, "incremental"), "cairn: ", i2["id"], i1["id"],
              "failed its verification", "take a full backup")
    assert r.stdout == ""
    assert repo.backups() == before and repo.leftovers() == []

    diff = one_json(ok(create(cli, db, repo, "differential")))
    assert diff["parent_id"] == full["id"]
    new_full = one_json(ok(create(cli, db, repo, "full")))
    inc = one_json(ok(create(cli, db, repo, "incremental")))
    assert inc["parent_id"] == new_full["id"]


@pytest.mark.parametrize("damage", ["deleted", "cut"])
def test_no_backup_is_written_on_a_chain_with_a_missing_link(cli, tmp_path, repo, damage):
    """F <- I1 <- I2 with I1 deleted, or cut short (listed as damaged): a new incremental
    would chain to I2 and never restore. It is refused, naming I1, and nothing is
    written."""
    db = make_db(tmp_path / "src.db", rows=400)
    one_json(ok(create(cli, db, repo)))
    add_rows(db, 20)
    i1 = one_json(ok(create(cli, db, repo, "incremental")))
    add_rows(db, 20)
    i2 = one_json(ok(create(cli, db, repo, "incremental")))
    name = repo.name_of(i1["path"])
    if damage == "deleted":
        repo.delete(name)
    else:
        repo.truncate(name, repo.size(name) - 7)
    before = repo.backups()
    add_rows(db, 20)
    r = fails(create(cli, db, repo, "incremental"), "cairn: ", i2["id"], i1["id"],
              "take a full backup")
    assert r.stdout == ""
    assert repo.backups() == before and repo.leftovers() == []


def test_standalone_damaged_header_is_listed_and_show_fails(cli, tmp_path, repo):
    db = make_db(tmp_path / "src.db")
    full = one_json(ok(create(cli, db, repo)))
    name = repo.name_of(full["path"])
    repo.damage(name, 0, 64)

    listed = one_json(ok(cli("backup", "list", "--repo", repo, "--json")))
    assert len(listed) == 1 and listed[0].get("error"), listed
    r = ok(cli("backup", "list", "--repo", repo))
    assert "DAMAGED" in r.stdout and name in r.stdout, r.stdout
    fails(cli("backup", "show", "--repo", repo, full["id"]), "cairn: ", name)
    fails(cli("backup", "verify", "--repo", repo, full["id"]), "cairn: ", name)


WRITER = r"""
import os, sqlite3, sys
path, mode = sys.argv[1], sys.argv[2]
con = sqlite3.connect(path, timeout=60, isolation_level=None)
con.execute("PRAGMA journal_mode=%s" % mode)
i = 0
while not os.path.exists(path + ".stop"):
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t(v) VALUES(randomblob(200 + abs(random()) % 3000))")
    if i % 7 == 0:
        con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 1)")
    con.execute("UPDATE counter SET n = (SELECT count(*) FROM t)")
    con.execute("COMMIT")
    i += 1
print(i)
"""


def commits(db):
    """How many transactions the writer made so far (its change counter)."""
    con = sqlite3.connect(str(db), timeout=60)
    try:
        return con.execute("PRAGMA data_version").fetchone()[0], \
            con.execute("SELECT max(id) FROM t").fetchone()[0]
    finally:
        con.close()


# On S3 in rollback-journal mode, where the writer waits for the backup to have read the
# file: a slower repository must not hold it longer. (WAL mode reads the source the same
# way whatever the repository.)
@repo_kinds_for("journal_mode", ["wal", "delete"], s3=[1])
def test_standalone_backup_while_another_process_writes(cli, tmp_path, repo, journal_mode, wait_for,
                                                        deadline):
    db = make_db(tmp_path / "live.db", rows=500, journal_mode=journal_mode)
    start_max = commits(db)[1]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), journal_mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: writer.poll() is None and commits(db)[1] >= start_max + 20, 30,
                 "the writer to commit 20 transactions")
        made = []
        for t in ("full", "incremental", "incremental", "differential", "incremental"):
            e = check_entry(one_json(ok(create(cli, db, repo, t))))
            made.append(e)
            before = commits(db)[1]
            wait_for(lambda: writer.poll() is None and commits(db)[1] >= before + 5, 30,
                     "the writer to go on after a backup")
    finally:
        (tmp_path / "live.db.stop").touch()
        out, err = writer.communicate(timeout=deadline(60))
    assert writer.returncode == 0, "the writer failed while backups ran:\n%s" % err
    assert int(out) > 0

    # Every backup restores to a consistent database: each transaction is in or out whole.
    last_count = 0
    for i, e in enumerate(made):
        dest = tmp_path / ("r%d.db" % i)
        ok(cli("restore", "--repo", repo, e["id"], "--out", dest))
        integrity, count, n = db_state(dest)
        assert integrity == [("ok",)], integrity
        assert count == n, "backup %d (%s) holds half a transaction: %d rows, counter %d" % (
            i, e["type"], count, n)
        con = sqlite3.connect(str(dest))
        top = con.execute("SELECT max(id) FROM t").fetchone()[0]
        con.close()
        assert top >= last_count, "backup %d is older than the one before" % i
        last_count = top
    doc = one_json(ok(cli("backup", "verify", "--repo", repo, made[-1]["id"], "--restore", "--json")))
    assert doc["ok"] is True
    assert repo.leftovers() == []


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_standalone_backup_of_a_database_with_open_writes_in_its_journal(cli, tmp_path, repo,
                                                                        journal_mode):
    """A transaction left open in another connection is not in the backup."""
    db = make_db(tmp_path / "open.db", rows=100, journal_mode=journal_mode)
    committed = dump(db)
    con = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t(v) VALUES(x'00')")
        con.execute("UPDATE counter SET n = n + 1")
        e = one_json(ok(create(cli, db, repo)))
    finally:
        con.execute("ROLLBACK")
        con.close()
    out = tmp_path / "out.db"
    ok(cli("restore", "--repo", repo, e["id"], "--out", out))
    assert dump(out) == committed


# ---- progress bar and Ctrl-C (pseudo-terminal) -------------------------------------------

def big_db(path, megabytes, journal_mode="wal"):
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=%s" % journal_mode)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        con.execute("CREATE TABLE counter(n INTEGER)")
        rows = megabytes * 64
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(v) VALUES(randomblob(16000))", [()] * rows)
        con.execute("INSERT INTO counter VALUES(?)", (rows,))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return path


BAR = re.compile(r"\[#*-*\]\s+[\d.]+ (B|KiB|MiB|GiB) / [\d.]+ (B|KiB|MiB|GiB)\s+\d+%")


def test_progress_bar_on_a_terminal(cairn_bin, tmp_path, repo):
    db = big_db(tmp_path / "big.db", 24)
    began = time.monotonic()
    code, out = run_pty([cairn_bin, "backup", "create", "--db", db, "--repo", repo], timeout=120)
    took = time.monotonic() - began
    assert code == 0, out
    assert BAR.search(out), "no progress bar was drawn:\n%r" % out[:2000]
    draws = len(BAR.findall(out))
    assert draws <= 2 + 10 * took, "%d drawings in %.2fs: more than ten a second" % (draws, took)
    # The bar is erased before the entry is printed.
    last_bar = list(BAR.finditer(out))[-1].end()
    assert "\r\x1b[K" in out[last_bar:out.index("id:")], repr(out[last_bar - 200:][:400])

    bid = re.search(r"id:\s+(\S+)", out).group(1)
    code, out = run_pty([cairn_bin, "backup", "verify", "--repo", repo, bid, "--restore"], timeout=120)
    assert code == 0, out
    assert BAR.search(out), "no progress bar during verify:\n%r" % out[:2000]
    code, out = run_pty([cairn_bin, "restore", "--repo", repo, bid, "--out", tmp_path / "o.db"],
                        timeout=120)
    assert code == 0, out
    assert BAR.search(out), "no progress bar during restore:\n%r" % out[:2000]


def test_no_progress_bar_with_json_or_off_a_terminal(cli, cairn_bin, tmp_path, repo):
    db = big_db(tmp_path / "big.db", 8)
    code, out = run_pty([cairn_bin, "backup", "create", "--db", db, "--repo", repo, "--json"],
                        timeout=120)
    assert code == 0, out
    assert "\r" not in out.replace("\r\n", "\n") and "%" not in out, repr(out[:500])
    check_entry(json.loads(out))
    r = ok(cli("backup", "create", "--db", db, "--repo", repo, "--type", "incremental"))
    assert "\r" not in r.stdout + r.stderr


def test_ctrl_c_stops_a_standalone_backup_cleanly(cairn_bin, tmp_path, repo, cli):
    db = big_db(tmp_path / "big.db", 96)
    sent = []

    def interrupt_once_the_engine_runs(text, pid):
        if not sent and BAR.search(text):
            os.kill(pid, signal.SIGINT)
            sent.append(True)

    code, out = run_pty([cairn_bin, "backup", "create", "--db", db, "--repo", repo], timeout=300,
                        on_output=interrupt_once_the_engine_runs)
    assert sent, "the progress bar never appeared:\n%r" % out[-2000:]
    listed = one_json(ok(cli("backup", "list", "--repo", repo, "--json")))
    if code == 0:
        # The engine had read every page before the key: the backup stands, whole.
        assert len(listed) == 1, listed
        ok(cli("backup", "verify", "--repo", repo, listed[0]["id"]))
    else:
        assert code == 1, out
        assert "cairn: interrupted; no backup was written" in out, out[-2000:]
        assert listed == []
    assert repo.leftovers() == [], "temporary files or unfinished uploads left in the repository"


def test_ctrl_c_stops_a_standalone_restore_and_nothing_is_put_in_place(cairn_bin, tmp_path,
                                                                        repo, cli):
    """Ctrl-C stops a restore at once: its file has no name until it is placed, so the
    file it replaces (--force) is untouched and nothing is left beside it. Only a
    restore whose file is already complete, checked and being placed ends as if the
    key came after it."""
    db = big_db(tmp_path / "big.db", 64)
    bid = one_json(ok(create(cli, db, repo)))["id"]
    out = tmp_path / "out.db"
    out.write_bytes(b"the file the restore replaces")
    sent = []

    def interrupt_once(text, pid):
        if not sent and BAR.search(text):
            os.kill(pid, signal.SIGINT)
            sent.append(time.monotonic())

    code, text = run_pty([cairn_bin, "restore", "--repo", repo, bid, "--out", out, "--force"],
                         timeout=300, on_output=interrupt_once)
    ended = time.monotonic()
    assert sent, "the progress bar never appeared:\n%r" % text[-2000:]
    if code == 0:
        assert "being put in place" in text, text[-2000:]
        assert db_state(out)[0] == [("ok",)]
    else:
        assert code == 1, text[-2000:]
        assert "cairn: restore stopped; nothing was put at %s" % out in text, text[-2000:]
        assert out.read_bytes() == b"the file the restore replaces"
        assert ended - sent[0] < 5, "the restore went on %.1f s after Ctrl-C" % (ended - sent[0])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out.db"]
    assert repo.leftovers() == []


# ---------------------------------------------------------------------------
# the client side of the admin API, against a stand-in server

def fake_entry(bid, type_="full", parent=None):
    return {
        "id": bid, "type": type_, "parent_id": parent, "created": "2026-11-22T10:15:00.123Z",
        "created_ms": 1795342500123, "raft_index": 42, "raft_term": 3, "page_size": 4096,
        "page_count": 250, "pages": 250 if type_ == "full" else 12, "size_bytes": 123456,
        "path": "/srv/cairn/backups/%s.cbk" % bid, "duration_ms": 35, "verified": "unverified",
        "verified_at": None, "digest": "ab" * 16, "parent_digest": None if parent is None else "cd" * 16,
        "source": "cairnd:/srv/cairn",
    }


class FakeAdmin(http.server.BaseHTTPRequestHandler):
    """Speaks cairnd's admin API as documented; records what it was sent."""

    server_version = "fake-cairnd"

    def log_message(self, *args):
        pass

    def reply(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, final, steps=5):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        total = 10 * 1024 * 1024
        for i in range(steps + 1):
            self.wfile.write(b'{"progress":{"done":%d,"total":%d}}\n' % (total * i // steps, total))
            self.wfile.flush()
        self.wfile.write(json.dumps(final).encode() + b"\n")

    def answer(self, status, doc):
        if "progress" in self.path.partition("?")[2].split("&") and status == 200:
            self.stream(doc)
        else:
            self.reply(status, doc)

    def do_GET(self):
        self.server.log.append(("GET", self.path, None))
        path = self.path.partition("?")[0]
        if path == "/admin/backups":
            return self.reply(200, {"backups": self.server.entries})
        if path.startswith("/admin/backups/"):
            bid = path[len("/admin/backups/"):]
            for e in self.server.entries:
                if e["id"] == bid:
                    return self.reply(200, {"backup": e})
            return self.reply(404, {"error": "no backup with id %s" % bid})
        self.reply(404, {"error": "no such endpoint: %s" % path})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"null")
        self.server.log.append(("POST", self.path, body))
        path = self.path.partition("?")[0]
        if path == "/admin/backup":
            if body.get("type") == "differential":
                if "progress" in self.path:
                    return self.stream({"error": "no full backup to base a differential one on"}, 2)
                return self.reply(409, {"error": "no full backup to base a differential one on"})
            e = fake_entry("20261122T101500123Z-0003-beef", body.get("type", "full"),
                           None if body.get("type", "full") == "full" else "20261122T101500123Z-0001-aaaa")
            if body.get("to") == "/hang":
                # Progress, then nothing until the test lets go: a backup that takes long.
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                self.wfile.write(b'{"progress":{"done":1048576,"total":104857600}}\n')
                self.wfile.flush()
                self.server.release.wait(60)
                return
            if body.get("to"):
                e["path"] = body["to"] + "/" + e["id"] + ".cbk"
            return self.answer(200, {"backup": e})
        m = re.fullmatch(r"/admin/backups/([^/]+)/verify", path)
        if m:
            bid = m.group(1)
            if bid not in [e["id"] for e in self.server.entries]:
                return self.reply(404, {"error": "no backup with id %s" % bid})
            doc = {"id": bid, "ok": not bid.endswith("bad"), "trial_restore": bool(body.get("restore"))}
            if not doc["ok"]:
                doc["error"] = "/srv/cairn/backups/%s.cbk: block 3: checksum mismatch" % bid
            return self.answer(200, doc)
        if path == "/admin/restore":
            bid = body.get("backup_id")
            for e in self.server.entries:
                if e["id"] == bid:
                    return self.answer(200, {"restored": e, "branch": body.get("branch"),
                                             "raft_index": 77})
            return self.reply(404, {"error": "no backup with id %s" % bid})
        self.reply(404, {"error": "no such endpoint: %s" % path})


@pytest.fixture
def fake():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAdmin)
    srv.log = []
    srv.release = threading.Event()
    srv.entries = [fake_entry("20261122T101500123Z-0001-aaaa"),
                   fake_entry("20261122T101600123Z-0002-abad", "incremental",
                              "20261122T101500123Z-0001-aaaa")]
    srv.url = "http://127.0.0.1:%d" % srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_client_create_sends_type_and_directory(cli, fake):
    doc = one_json(ok(cli("--host", fake.url, "backup", "create", "--json")))
    assert doc == fake_entry("20261122T101500123Z-0003-beef")
    assert fake.log[-1] == ("POST", "/admin/backup", {"type": "full"})

    r = ok(cli("backup", "create", "--host", fake.url, "--type", "incremental", "--to", "/mnt/b"))
    assert fake.log[-1] == ("POST", "/admin/backup", {"type": "incremental", "to": "/mnt/b"})
    assert "raft index:    42 (term 3)" in r.stdout and "/mnt/b/" in r.stdout

    # $CAIRN_HOST as the other commands.
    ok(cli("backup", "create", "--json", env={"CAIRN_HOST": fake.url}))


def test_client_list_show_verify_restore(cli, fake):
    listed = one_json(ok(cli("--host", fake.url, "backup", "list", "--json")))
    assert listed == fake.entries
    r = ok(cli("--host", fake.url, "backup", "list"))
    assert "20261122T101500123Z-0001-aaaa" in r.stdout and "incremental" in r.stdout
    assert "121 KiB" in r.stdout and "35 ms" in r.stdout

    bid = fake.entries[0]["id"]
    assert one_json(ok(cli("--host", fake.url, "backup", "show", bid, "--json"))) == fake.entries[0]

    doc = one_json(ok(cli("--host", fake.url, "backup", "verify", bid, "--restore", "--json")))
    assert doc == {"id": bid, "ok": True, "trial_restore": True}
    assert fake.log[-1] == ("POST", "/admin/backups/%s/verify" % bid, {"restore": True})

    r = fails(cli("--host", fake.url, "backup", "verify", fake.entries[1]["id"]),
              "cairn: /srv/cairn/backups/%s.cbk: block 3: checksum mismatch" % fake.entries[1]["id"])
    assert r.stdout == ""

    doc = one_json(ok(cli("--host", fake.url, "restore", bid, "--json")))
    assert doc == {"restored": fake.entries[0], "branch": None, "raft_index": 77}
    assert fake.log[-1] == ("POST", "/admin/restore", {"backup_id": bid})
    r = ok(cli("--host", fake.url, "restore", bid, "--branch", "before-migration"))
    assert fake.log[-1] == ("POST", "/admin/restore", {"backup_id": bid, "branch": "before-migration"})
    assert "into branch before-migration" in r.stdout
    r = ok(cli("--host", fake.url, "restore", bid))
    assert "into the live database at raft index 77" in r.stdout


def test_client_reports_the_servers_errors(cli, fake, free_port):
    fails(cli("--host", fake.url, "backup", "show", "nope"), "cairn: no backup with id nope")
    fails(cli("--host", fake.url, "backup", "verify", "nope"), "cairn: no backup with id nope")
    fails(cli("--host", fake.url, "restore", "nope"), "cairn: no backup with id nope")
    fails(cli("--host", fake.url, "backup", "create", "--type", "differential"),
          "cairn: no full backup to base a differential one on")
    fails(cli("--host", "127.0.0.1:%d" % free_port(), "backup", "list"), "cairn: cannot reach cairnd")
    # An id with characters that mean something in a URL is sent escaped.
    fails(cli("--host", fake.url, "backup", "show", "a/b?c"), "cairn: no backup with id a%2Fb%3Fc")


def test_client_progress_stream_on_a_terminal(cairn_bin, fake):
    code, out = run_pty([cairn_bin, "--host", fake.url, "backup", "create"])
    assert code == 0, out
    assert fake.log[-1][1] == "/admin/backup?progress"
    assert BAR.search(out), "no progress bar:\n%r" % out
    assert "id:" in out and "20261122T101500123Z-0003-beef" in out
    assert "\r\x1b[K" in out

    bid = fake.entries[0]["id"]
    code, out = run_pty([cairn_bin, "--host", fake.url, "backup", "verify", bid])
    assert code == 0, out
    assert fake.log[-1][1] == "/admin/backups/%s/verify?progress" % bid
    assert "is sound" in out

    code, out = run_pty([cairn_bin, "--host", fake.url, "restore", bid, "--branch", "x"])
    assert code == 0, out
    assert fake.log[-1][1] == "/admin/restore?progress"
    assert "into branch x" in out

    # The stream's last line may be an error.
    code, out = run_pty([cairn_bin, "--host", fake.url, "backup", "create", "--type", "differential"])
    assert code == 1, out
    assert "cairn: no full backup to base a differential one on" in out

    # --json: no stream asked, no bar.
    code, out = run_pty([cairn_bin, "--host", fake.url, "backup", "create", "--json"])
    assert code == 0, out
    assert fake.log[-1][1] == "/admin/backup"
    assert json.loads(out)["id"] == "20261122T101500123Z-0003-beef"


def test_client_ctrl_c_abandons_the_request(cairn_bin, fake):
    sent = []

    def interrupt_once(text, pid):
        if not sent and BAR.search(text):
            os.kill(pid, signal.SIGINT)
            sent.append(True)

    code, out = run_pty([cairn_bin, "--host", fake.url, "backup", "create", "--to", "/hang"],
                        timeout=30, on_output=interrupt_once)
    assert sent, "the progress bar never appeared:\n%r" % out
    assert code == 1, out
    assert "cairn: interrupted; cairnd carries on with the backup" in out, out


# ---------------------------------------------------------------------------
# server mode against cairnd

@pytest.fixture
def backup_server(server_factory, repo):
    """cairnd with its backups in `repo` (a directory or S3)."""
    server = server_factory(extra_args=repo.server_args())
    r = server.raw("GET", "/admin/backups")
    if r.status == 404:
        pytest.skip("cairnd answers 404 on /admin/backups: its admin backup API is not there yet")
    return server


def count_rows(server, table="t"):
    return server.scalar("SELECT count(*) FROM %s" % table, level="linearizable")


def test_server_create_list_show_verify(backup_server, cli, tmp_path):
    s = backup_server
    s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
               "INSERT INTO t(v) VALUES('a')", "INSERT INTO t(v) VALUES('b')"])
    full = check_entry(one_json(ok(cli("--host", s.url, "backup", "create", "--json"))))
    assert full["type"] == "full" and full["raft_index"] > 0
    s.execute(["INSERT INTO t(v) VALUES('c')"])
    inc = check_entry(one_json(ok(cli("--host", s.url, "backup", "create", "--type", "incremental",
                                      "--json"))))
    assert inc["parent_id"] == full["id"] and inc["raft_index"] > full["raft_index"]
    diff = check_entry(one_json(ok(cli("--host", s.url, "backup", "create", "-t", "differential",
                                       "--json"))))
    assert diff["parent_id"] == full["id"]

    listed = one_json(ok(cli("--host", s.url, "backup", "list", "--json")))
    ids = [e["id"] for e in listed]
    for e in (full, inc, diff):
        assert e["id"] in ids
    for e in listed:
        check_entry(e)
    assert one_json(ok(cli("--host", s.url, "backup", "show", inc["id"], "--json")))["id"] == inc["id"]
    r = ok(cli("--host", s.url, "backup", "list"))
    assert full["id"] in r.stdout

    doc = one_json(ok(cli("--host", s.url, "backup", "verify", inc["id"], "--restore", "--json")))
    assert doc["id"] == inc["id"] and doc["ok"] is True and doc["trial_restore"] is True
    assert one_json(ok(cli("--host", s.url, "backup", "show", inc["id"], "--json")))["verified"] == "verified"
    fails(cli("--host", s.url, "backup", "show", "20990101T000000000Z-0001-dead"), "cairn: ")
    fails(cli("--host", s.url, "backup", "verify", "20990101T000000000Z-0001-dead"), "cairn: ")


def test_server_create_to_names_a_repository(backup_server, repo, cli, tmp_path):
    s = backup_server
    s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY)", "INSERT INTO t DEFAULT VALUES"])
    dest = tmp_path / "elsewhere"
    dest.mkdir()
    r = cli("--host", s.url, "backup", "create", "--to", dest)
    assert r.returncode != 0 and "not a repository of this node" in r.stderr, r
    assert list(dest.iterdir()) == []
    e = check_entry(one_json(ok(cli("--host", s.url, "backup", "create", "--to", "default", "--json"))))
    assert repo.exists(repo.name_of(e["path"]))
    e2 = check_entry(one_json(ok(cli("--host", s.url, "backup", "create", "--to", repo, "--json"))))
    assert repo.backups() == sorted([e["id"] + ".cbk", e2["id"] + ".cbk"])


def test_server_restore_live_and_into_a_branch(backup_server, cli, wait_for):
    s = backup_server
    s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
              ["INSERT INTO t(v) VALUES('%d')" % i for i in range(10)])
    bid = one_json(ok(cli("--host", s.url, "backup", "create", "--json")))["id"]
    s.execute(["INSERT INTO t(v) VALUES('later')"] * 5)
    assert count_rows(s) == 15

    doc = one_json(ok(cli("--host", s.url, "restore", bid, "--branch", "b1", "--json")))
    assert doc["restored"]["id"] == bid and doc["branch"] == "b1"
    assert count_rows(s) == 15, "a restore into a branch changed the live database"

    doc = one_json(ok(cli("--host", s.url, "restore", bid, "--json")))
    assert doc["restored"]["id"] == bid and doc["branch"] is None
    assert isinstance(doc["raft_index"], int) and doc["raft_index"] > 0
    wait_for(lambda: count_rows(s) == 10, 10, "the live database to be the backup's")
    # The catalog survives the restore.
    ids = [e["id"] for e in one_json(ok(cli("--host", s.url, "backup", "list", "--json")))]
    assert bid in ids
    fails(cli("--host", s.url, "restore", "20990101T000000000Z-0001-dead"), "cairn: ")


def test_server_progress_on_a_terminal(backup_server, cairn_bin):
    s = backup_server
    s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"] +
              ["INSERT INTO t(v) VALUES(randomblob(4000))"] * 200)
    code, out = run_pty([cairn_bin, "--host", s.url, "backup", "create"], timeout=120)
    assert code == 0, out
    assert re.search(r"id:\s+\S+", out), out
    bid = re.search(r"id:\s+(\S+)", out).group(1)
    code, out = run_pty([cairn_bin, "--host", s.url, "backup", "verify", bid], timeout=120)
    assert code == 0, out
    assert "is sound" in out


def test_a_missing_repository_is_not_an_empty_one(cli, tmp_path, repo):
    """`cairn backup list --repo /missing` printed "no backups", exit 0: a typo in a path
    looked like a repository with nothing in it. list, show, verify and restore now say
    that it does not exist, and exit non-zero. On S3, a bucket that does not exist."""
    missing, words = missing_repository(repo, tmp_path)
    for args in (["backup", "list"], ["backup", "show", "x"], ["backup", "verify", "x"],
                 ["restore", "--out", tmp_path / "o.db", "x"]):
        cmd = args[:2] if args[0] == "backup" else args[:1]
        r = cli(*cmd, "--repo", missing, *args[len(cmd):])
        assert r.returncode == 1 and all(w in r.stderr for w in words), (args, r.stdout, r.stderr)
    assert not (tmp_path / "nothing-here").exists() and not (tmp_path / "o.db").exists()


@repo_kinds()
def test_paths_are_shown_normalised(cli, tmp_path, repo):
    """Paths printed as "repo//ID.cbk" and "repo/./ID.cbk"; they read as written once.
    On S3, where an empty segment ("//") is refused as malformed, with a trailing "/",
    and a "." segment either taken the same way or refused as malformed too."""
    db = make_db(tmp_path / "src.db")
    slashes = "//" if repo.kind == "dir" else "/"
    entry = one_json(ok(create(cli, db, str(repo) + slashes)))
    assert repo.name_of(entry["path"]) == entry["id"] + ".cbk", entry
    where = entry["path"].partition("s3://")[2] if repo.kind == "s3" else entry["path"]
    assert "//" not in where and "/./" not in where, entry
    dotted = str(repo) + "/./"

    def refused_as_malformed(r):
        return repo.kind == "s3" and r.returncode != 0 and "malformed" in r.stderr

    r = cli("backup", "list", "--repo", dotted, "--json")
    if not refused_as_malformed(r):
        listed = one_json(ok(r))
        assert [e["path"] for e in listed] == [entry["path"]], listed
    r = create(cli, db, dotted, "incremental")
    if not refused_as_malformed(r):
        entry2 = one_json(ok(r))
        assert entry2["path"] == "%s/%s.cbk" % (repo, entry2["id"]), entry2
        assert entry2["parent_id"] == entry["id"], entry2


def test_default_repository_path_is_normalised(tmp_path, cairnd_bin):
    """cairnd started in its working directory with --data-dir ./data: the default
    repository is DIR/backups, not DIR/./backups (the default repository is always a
    directory beside the data directory: no S3 case)."""
    import subprocess, socket, time, json as _json
    from conftest import find_free_ports
    hp, rp = find_free_ports(2)
    p = subprocess.Popen([str(cairnd_bin), "--data-dir", "./data", "--http-addr", "127.0.0.1:%d" % hp,
                          "--raft-addr", "127.0.0.1:%d" % rp, "-q"], cwd=str(tmp_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import urllib.request
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % hp, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, "cairnd did not start"
            time.sleep(0.05)
        req = urllib.request.Request("http://127.0.0.1:%d/db/execute" % hp,
                                     data=b'["BACKUP DATABASE FULL"]', method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = _json.loads(r.read())
        path = doc["results"][0]["values"][0][6]
        assert "/./" not in path and path.startswith(str(tmp_path / "backups") + "/"), path
    finally:
        p.terminate()
        p.wait(30)


def killed_at(cairn_bin, call, args, path=None):
    """Run `cairn ARGS` under strace, killed with SIGKILL at the first CALL (on PATH when
    given): the call is not made. Skips when strace may not trace here."""
    from test_backup_readonly import usable_strace
    strace = usable_strace()
    if strace is None:
        pytest.skip("no strace that may trace here")
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    argv = [strace, "-f", "-qq", "-o", os.devnull]
    if path is not None:
        argv += ["-P", str(path)]
    argv += ["-e", "trace=" + call, "-e", "inject=%s:error=EIO:signal=SIGKILL:when=1" % call,
             str(cairn_bin)] + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0, (p.stdout, p.stderr)
    return p


def test_a_forced_restore_killed_before_its_rename_gives_the_old_wal_back(cli, cairn_bin,
                                                                         tmp_path):
    """--force moves the old database's -wal aside, then renames the new file in. Killed
    between the two, the -wal (the old database's last commits) stayed under a hidden
    name that nothing ever put back or removed: the old database, still in place, had
    lost them. The next restore to the same place (even one refused) puts it back."""
    db = make_db(tmp_path / "src.db")
    repo = tmp_path / "repo"
    bid = one_json(ok(create(cli, db, repo)))["id"]
    place = tmp_path / "place"
    place.mkdir()
    out = place / "old.db"
    wal_database_with_commits_in_its_wal(out)
    before = sorted(p.name for p in place.iterdir())
    # At its move of the -shm, the last before the rename (strace's -P matches a
    # rename's first path only).
    killed_at(cairn_bin, "rename", ["restore", "--repo", repo, bid, "--out", out, "--force"],
              path=str(out) + "-shm")
    assert "old.db-wal" not in [p.name for p in place.iterdir()], "killed before the move"
    fails(cli("restore", "--repo", repo, bid, "--out", out), "already exists")
    # (The killed restore's own new file, hidden, goes at the next restore that writes.)
    assert sorted(p.name for p in place.iterdir()
                  if not p.name.startswith(".old.db.restore-")) == before
    con = sqlite3.connect(str(out))
    try:
        assert con.execute("SELECT count(*) FROM old").fetchone()[0] == 50
    finally:
        con.close()


def test_a_forced_restore_killed_after_its_rename_leaves_no_old_wal(cli, cairn_bin, tmp_path):
    """Killed after the new file took the name, before the old -wal it moved aside was
    removed: that -wal must go (beside the new database it would be read into it), and
    nothing hidden may stay. The next restore to the same place removes it."""
    db = make_db(tmp_path / "src.db")
    repo = tmp_path / "repo"
    bid = one_json(ok(create(cli, db, repo)))["id"]
    place = tmp_path / "place"
    place.mkdir()
    out = place / "old.db"
    wal_database_with_commits_in_its_wal(out)
    killed_at(cairn_bin, "unlink", ["restore", "--repo", repo, bid, "--out", out, "--force"])
    assert dump(out) == dump(db)
    assert [p.name for p in place.iterdir() if p.name.startswith(".")], "nothing was left"
    fails(cli("restore", "--repo", repo, bid, "--out", out), "already exists")
    assert sorted(p.name for p in place.iterdir()) == ["old.db"]
    assert dump(out) == dump(db)


def test_a_forced_restore_onto_a_symbolic_link_writes_where_it_points(cli, tmp_path):
    """--force onto a symbolic link replaced the link with a regular file: the database
    it pointed to (on another disk, say) was left as it was and the restore landed where
    nobody looks. Now the restore writes the link's target, and the link stays; a link
    to nothing is refused, naming its target."""
    db = make_db(tmp_path / "src.db")
    repo = tmp_path / "repo"
    bid = one_json(ok(create(cli, db, repo)))["id"]
    disk = tmp_path / "disk"
    disk.mkdir()
    real = disk / "real.db"
    wal_database_with_commits_in_its_wal(real)
    link = tmp_path / "link.db"
    link.symlink_to(real)
    ok(cli("restore", "--repo", repo, bid, "--out", link, "--force", "--json"))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert dump(real) == dump(db)
    assert sorted(p.name for p in disk.iterdir()) == ["real.db"]
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "nowhere" / "x.db")
    r = fails(cli("restore", "--repo", repo, bid, "--out", dangling, "--force"),
              "symbolic link", str(tmp_path / "nowhere" / "x.db"))
    assert dangling.is_symlink()
