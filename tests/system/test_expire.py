"""`cairn backup expire`: retention of a repository's backups (issue 19).

Real chains made with `cairn backup create --db FILE --repo URL` (fulls, incrementals,
differentials) on a directory and on an S3 prefix of the module's s3rver (backuputil's
`repo` fixture), then expired by policy: exactly the backups the policy lets go are
deleted (with their `<id>.verified` records), every survivor verifies and every kept
chain restores to the rows it was taken with; a dry run deletes nothing and says why
each backup stays or goes; --json parses; a kill -9 at random moments of an expiry
(slowed by its test hook, CAIRN_EXPIRE_TEST_PAUSE_MS, which makes each removal wait)
leaves no chain pointing at a missing parent, and a second expiry finishes the work;
bad input is refused before anything is deleted. The policy itself, archive segments
included, is unit-tested in tests/unit/test_expire.c.

No test waits by sleeping: processes are polled against a deadline.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from backuputil import repo, repo_kind, repo_kinds  # noqa: F401 (fixtures)
from conftest import deadline_seconds, wait_until
from s3util import s3env  # noqa: F401 (fixture)


# ---------------------------------------------------------------------------
# helpers


class Chains:
    """A SQLite file and the backups made of it: each backup is taken after one more row
    is inserted, so that the rows a restore gives say which backup it restored."""

    def __init__(self, cairn_bin, repo, tmp_path):
        self.cairn = str(cairn_bin)
        self.repo = repo
        self.db = tmp_path / "db.sqlite"
        self.tmp = tmp_path
        self.rows = {}   # id -> rows in the database when it was taken
        self.type = {}
        self.parent = {}
        self.order = []
        c = sqlite3.connect(self.db)
        c.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)")
        c.commit()
        c.close()
        self.n = 0

    def run(self, *args, env=None, timeout=60):
        e = dict(os.environ)
        e.pop("CAIRN_HOST", None)
        e.update(env or {})
        return subprocess.run([self.cairn] + [str(a) for a in args], capture_output=True,
                              text=True, env=e, timeout=deadline_seconds(timeout))

    def backup(self, kind):
        self.n += 1
        c = sqlite3.connect(self.db)
        c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (self.n,))
        c.commit()
        c.close()
        r = self.run("backup", "create", "--db", self.db, *self.repo.cli_args(), "--type", kind,
                     "--json")
        assert r.returncode == 0, r.stderr
        e = json.loads(r.stdout)
        self.rows[e["id"]] = self.n
        self.type[e["id"]] = kind
        self.parent[e["id"]] = e["parent_id"]
        self.order.append(e["id"])
        return e["id"]

    def expire(self, *args, env=None, timeout=60):
        return self.run("backup", "expire", *self.repo.cli_args(), *args, env=env,
                        timeout=timeout)

    def listing(self):
        r = self.run("backup", "list", *self.repo.cli_args(), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def ids(self):
        return sorted(n[:-4] for n in self.repo.backups())

    def verify(self, bid):
        r = self.run("backup", "verify", *self.repo.cli_args(), bid)
        assert r.returncode == 0, "verify %s: %s" % (bid, r.stderr)

    def restore_rows(self, bid):
        out = self.tmp / ("restored-%s.db" % bid)
        r = self.run("restore", *self.repo.cli_args(), "--out", out, "--force", bid)
        assert r.returncode == 0, "restore %s: %s" % (bid, r.stderr)
        c = sqlite3.connect(out)
        try:
            return c.execute("SELECT count(*), max(x) FROM t").fetchone()
        finally:
            c.close()
            out.unlink()


def assert_sound(ch):
    """Nothing broken: every listed backup reads, every parent is there, every backup
    verifies (each leaf's whole chain). Returns the ids listed."""
    entries = ch.listing()
    ids = {e["id"] for e in entries}
    for e in entries:
        assert not e.get("error"), e
        assert e["parent_id"] is None or e["parent_id"] in ids, (
            "%s points at a missing parent %s" % (e["id"], e["parent_id"]))
    children = {e["parent_id"] for e in entries}
    for e in entries:
        if e["id"] not in children:  # a leaf: verify checks its whole chain
            ch.verify(e["id"])
    return ids


def make_chains(ch):
    """F1 <- I1 <- I2;  F2 <- D1;  F3 <- I3 (in that order)."""
    f1 = ch.backup("full")
    i1 = ch.backup("incremental")
    i2 = ch.backup("incremental")
    f2 = ch.backup("full")
    d1 = ch.backup("differential")
    f3 = ch.backup("full")
    i3 = ch.backup("incremental")
    assert ch.parent[i1] == f1 and ch.parent[i2] == i1
    assert ch.parent[d1] == f2 and ch.parent[i3] == f3
    return f1, i1, i2, f2, d1, f3, i3


# ---------------------------------------------------------------------------
# the policy, applied


@repo_kinds(smoke=True)
def test_retention_deleted_exactly_what_the_policy_says(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    f1, i1, i2, f2, d1, f3, i3 = make_chains(ch)
    ch.verify(i2)  # records <id>.verified (of I2 only, the backup verified)
    assert repo.exists(i2 + ".verified")

    r = ch.expire("--keep-full", "2")
    assert r.returncode == 0, r.stderr
    assert ch.ids() == sorted([f2, d1, f3, i3])
    assert not repo.exists(i2 + ".verified")
    assert {n for n in repo.names() if n.endswith(".verified")} <= {
        b + ".verified" for b in (f2, d1, f3, i3)}
    assert repo.leftovers() == []
    for bid in (f1, i1, i2):
        assert "EXPIRED" in [line.split("|")[5].strip() for line in r.stdout.splitlines()
                             if bid in line][0]
    assert "3 deleted" in r.stdout

    assert assert_sound(ch) == {f2, d1, f3, i3}
    for bid in (d1, i3):  # the chains' leaves: every file of both is read
        assert ch.restore_rows(bid) == (ch.rows[bid], ch.rows[bid])

    r = ch.expire("--keep-full", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {b["id"] for b in doc["backups"] if b["action"] == "expire"} == {f2, d1}
    assert all(b["removed"] for b in doc["backups"] if b["action"] == "expire")
    assert doc["totals"]["removed"] == 2 and doc["totals"]["kept"] == 2
    assert ch.ids() == sorted([f3, i3])
    assert_sound(ch)
    assert ch.restore_rows(i3) == (ch.rows[i3], ch.rows[i3])

    # Nothing more to do: the same policy again deletes nothing.
    r = ch.expire("--keep-full", "1")
    assert r.returncode == 0, r.stderr
    assert "0 deleted" in r.stdout
    assert ch.ids() == sorted([f3, i3])


@repo_kinds()
def test_dry_run_deletes_nothing_and_says_why(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    f1, i1, i2, f2, d1, f3, i3 = make_chains(ch)
    before = repo.names()

    r = ch.expire("--keep-full", "1", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dry_run"] is True
    assert doc["policy"] == {"keep_full": 1}
    why = {b["id"]: (b["action"], b["reason"]) for b in doc["backups"]}
    assert {k for k, v in why.items() if v[0] == "expire"} == {f1, i1, i2, f2, d1}
    assert "keep-full #1 of 1" in why[f3][1]
    assert "needed by %s" % i3 in why[f3][1]
    assert "newest of its source" in why[i3][1]
    assert not any(b["removed"] for b in doc["backups"])
    assert doc["totals"]["expired"] == 5 and doc["totals"]["removed"] == 0
    assert repo.names() == before

    r = ch.expire("--keep-full", "1", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would be deleted" in r.stdout and "nothing deleted" in r.stdout
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines()
            if line.startswith("| 2")}
    assert set(rows) == set(ch.order)
    for bid in (f1, i1, i2, f2, d1):
        assert "| EXPIRE " in rows[bid]
    assert "| KEEP " in rows[f3] and "| KEEP " in rows[i3]
    assert repo.names() == before


@repo_kinds(smoke=True)
def test_time_rules_judge_as_of_now(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    f1, i1, i2, f2, d1, f3, i3 = make_chains(ch)
    before = repo.names()
    later = str(int(time.time() * 1000) + 10 * 86400 * 1000)

    # Ten days on, "within a day" keeps nothing: refused, nothing deleted.
    r = ch.expire("--keep-within", "1d", "--now", later)
    assert r.returncode == 1
    assert "keeps no backup" in r.stderr and "nothing deleted" in r.stderr
    assert repo.names() == before

    # Within 2w keeps everything.
    r = ch.expire("--keep-within", "2w", "--now", later, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["expired"] == 0
    assert repo.names() == before

    # One daily: today's newest backup (I3) and its chain.
    r = ch.expire("--keep-daily", "1", "--now", later, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    kept = {b["id"]: b["reason"] for b in doc["backups"] if b["action"] == "keep"}
    assert set(kept) == {f3, i3}
    assert "daily " in kept[i3]
    assert ch.ids() == sorted([f3, i3])
    assert_sound(ch)


# ---------------------------------------------------------------------------
# kill -9


@repo_kinds(smoke=True)
def test_kill_9_during_expiry_leaves_nothing_broken(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    for _ in range(3):
        ch.backup("full")
        ch.backup("incremental")
        ch.backup("differential")
    for bid in ch.order[:6:2]:
        ch.verify(bid)  # records <id>.verified: removed with its backup
    keep = set(ch.order[-3:])
    seed = int(os.environ.get("CAIRN_TEST_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    pause_ms = 25
    env = {"CAIRN_EXPIRE_TEST_PAUSE_MS": str(pause_ms)}
    cmd = [ch.cairn, "backup", "expire", *repo.cli_args(), "--keep-full", "1"]
    kills = 0
    for round_ in range(5):
        remaining = len(ch.ids()) - len(keep)
        if remaining == 0:
            break
        e = dict(os.environ)
        e.update(env)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        # Somewhere within the time the removals take (each of a backup's two objects
        # waits pause_ms first): often between a backup and its verification record.
        at = time.monotonic() + rnd.uniform(0, remaining * 2 * pause_ms / 1000.0)
        wait_until(lambda: time.monotonic() >= at or p.poll() is not None, 30,
                   "the moment to kill the expiry (seed %d)" % seed)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=deadline_seconds(30))
        p.stderr.close()
        ids = assert_sound(ch)
        assert keep <= ids, "seed %d: a kept backup was deleted" % seed
    assert kills > 0, "seed %d: every expiry finished before its kill" % seed
    r = ch.expire("--keep-full", "1")
    assert r.returncode == 0, r.stderr
    assert set(ch.ids()) == keep
    # Every verification record left is a kept backup's (verify wrote some for them).
    assert {n for n in repo.names() if n.endswith(".verified")} <= {b + ".verified" for b in keep}
    assert repo.leftovers() == []
    assert_sound(ch)
    leaf = ch.order[-1]
    assert ch.restore_rows(leaf) == (ch.rows[leaf], ch.rows[leaf])


# ---------------------------------------------------------------------------
# bad input


BAD = [
    (["--keep-within", "7x"], 2, "--keep-within takes a duration"),
    (["--keep-within", "0d"], 2, "--keep-within takes a duration"),
    (["--keep-within=-1d"], 2, "--keep-within takes a duration"),
    (["--keep-full=-1"], 2, "--keep-full takes a whole number"),
    (["--keep-daily", "three"], 2, "--keep-daily takes a whole number"),
    (["--keep-weekly", "1.5"], 2, "--keep-weekly takes a whole number"),
    (["--keep-monthly", "99999999999"], 2, "--keep-monthly takes a whole number"),
    ([], 2, "no retention rule given"),
    (["--keep-full", "0"], 2, "no retention rule given"),
    (["--keep-full", "1", "--now", "yesterday"], 2, "--now takes"),
    # Never clamped or normalised into another moment (an overflow once read as the
    # largest time, a 30th of February as March 2nd).
    (["--keep-full", "1", "--now", "99999999999999999999"], 2, "--now takes"),
    (["--keep-full", "1", "--now=-5"], 2, "--now takes"),
    (["--keep-full", "1", "--now", "2026-02-30T00:00:00Z"], 2, "--now takes"),
    (["--keep-full", "1", "extra"], 2, "unexpected argument"),
]


@repo_kinds(smoke=True)
def test_bad_input_gets_a_clear_error_and_deletes_nothing(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    ch.backup("full")
    ch.backup("full")
    before = repo.names()
    for args, code, words in BAD:
        r = ch.expire(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert words in r.stderr, (args, r.stderr)
        assert repo.names() == before, args
    # No repository given, or one that is not there.
    r = ch.run("backup", "expire", "--keep-full", "1")
    assert r.returncode == 2 and "--repo" in r.stderr
    r = ch.run("backup", "expire", "--repo", tmp_path / "nowhere", "--keep-full", "1")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = ch.run("backup", "expire", "--repo", tmp_path / "nowhere", "--s3-endpoint",
               "http://x", "--keep-full", "1")
    assert r.returncode == 2 and "--s3-endpoint" in r.stderr
    r = ch.run("backup", "expire", "--repo", "ftp://host/x", "--keep-full", "1")
    assert r.returncode == 1 and "unknown scheme" in r.stderr
    r = ch.run("backup", "expire", "--help")
    assert r.returncode == 0 and "--keep-within" in r.stdout
    assert repo.names() == before


@repo_kinds(smoke=True)
@pytest.mark.parametrize("part", ["trailer", "header"])
def test_a_chain_through_a_damaged_backup_keeps_its_ancestors(cairn_bin, repo, tmp_path, part):
    """F1 <- I1 <- I2 <- I3, F2, with I2 damaged (one byte of its trailer's magic, or of
    its header) and a rule that keeps I3 and F2 only: I2 stays for an operator to look
    at, and so do F1 and I1, which I2 and I3 need (from I2's header, or when that cannot
    be read, as every older backup may be). With I2 mended, I3 restores."""
    ch = Chains(cairn_bin, repo, tmp_path)
    f1 = ch.backup("full")
    i1 = ch.backup("incremental")
    i2 = ch.backup("incremental")
    i3 = ch.backup("incremental")
    f2 = ch.backup("full")
    assert ch.parent[i3] == i2 and ch.parent[i2] == i1 and ch.parent[i1] == f1
    created = {e["id"]: e["created_ms"] for e in ch.listing()}
    assert created[i2] < created[i3]
    name = i2 + ".cbk"
    offset = repo.size(name) - 32 if part == "trailer" else 200
    repo.damage(name, offset, 1)
    r = ch.expire("--keep-within", "1s", "--now", str(created[i3] + 1000), "--json")
    assert r.returncode == 0, r.stderr
    doc = {b["id"]: b for b in json.loads(r.stdout)["backups"]}
    assert doc[i2]["damaged"] and doc[i2]["action"] == "keep"
    for bid in (f1, i1):
        assert doc[bid]["action"] == "keep", doc[bid]
        assert ("needed by" if part == "trailer" else "through damaged " + i2) in \
            doc[bid]["reason"], doc[bid]
    assert ch.ids() == sorted([f1, i1, i2, i3, f2])
    repo.damage(name, offset, 1)  # mended: the chain restores
    assert ch.restore_rows(i3) == (4, 4)


@repo_kinds(smoke=True)
def test_a_backup_that_failed_verification_does_not_count_for_the_policy(cairn_bin, repo,
                                                                         tmp_path):
    """F1 <- I1, then F2 with a block damaged, which `verify` found: --keep-full 1 keeps
    F2 (for an operator to look at) but counts F1 as the newest full, so the one chain
    that restores stays, and restores."""
    ch = Chains(cairn_bin, repo, tmp_path)
    f1 = ch.backup("full")
    i1 = ch.backup("incremental")
    f2 = ch.backup("full")
    repo.damage(f2 + ".cbk", 600, 1)
    r = ch.run("backup", "verify", *repo.cli_args(), f2)
    assert r.returncode == 1 and f2 in r.stderr, r.stderr
    r = ch.expire("--keep-full", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = {b["id"]: b for b in json.loads(r.stdout)["backups"]}
    assert doc[f2]["action"] == "keep" and "verification failed" in doc[f2]["reason"], doc[f2]
    assert doc[f1]["action"] == "keep" and "keep-full #1" in doc[f1]["reason"], doc[f1]
    assert doc[i1]["action"] == "keep", doc[i1]
    assert ch.ids() == sorted([f1, i1, f2])
    assert ch.restore_rows(i1) == (2, 2)


# ---------------------------------------------------------------------------
# restores racing an expiry


@repo_kinds()
def test_a_restore_racing_the_expiry_is_right_or_fails_clearly(cairn_bin, repo, tmp_path):
    ch = Chains(cairn_bin, repo, tmp_path)
    f1 = ch.backup("full")
    i1 = ch.backup("incremental")
    i2 = ch.backup("incremental")
    f2 = ch.backup("full")
    e = dict(os.environ)
    e["CAIRN_EXPIRE_TEST_PAUSE_MS"] = "150"
    p = subprocess.Popen([ch.cairn, "backup", "expire", *repo.cli_args(), "--keep-full", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e, text=True)
    outcomes = {"ok": 0, "failed": 0}
    out = tmp_path / "raced.db"
    try:
        while True:
            done = p.poll() is not None
            for bid in (i2, i1, f1):
                r = ch.run("restore", *repo.cli_args(), "--out", out, "--force", bid)
                if r.returncode == 0:
                    c = sqlite3.connect(out)
                    got = c.execute("SELECT count(*), max(x) FROM t").fetchone()
                    c.close()
                    assert got == (ch.rows[bid], ch.rows[bid]), (bid, got)
                    out.unlink()
                    outcomes["ok"] += 1
                else:
                    assert r.returncode == 1, r.stderr
                    assert any(w in r.stderr for w in (
                        "no backup with id", "is not in", "cannot be read", "read failed",
                        "not found", "404", "NoSuchKey", "No such file or directory")), r.stderr
                    assert not out.exists(), r.stderr
                    outcomes["failed"] += 1
            if done:
                break
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=deadline_seconds(30))
    assert p.returncode == 0, p.stderr.read()
    p.stderr.close()
    assert outcomes["failed"] > 0, outcomes  # at least the round after it finished
    assert ch.ids() == [f2]


# ---------------------------------------------------------------------------
# backups racing an expiry


@repo_kinds(smoke=True)
def test_backups_taken_during_the_expiry_chain_to_what_stays(cairn_bin, repo, tmp_path):
    """Incremental and differential backups written while an expiry deletes: each chains
    to the newest backup (or the newest full) of its source, which the expiry always
    keeps, so none ends up pointing at a deleted parent."""
    ch = Chains(cairn_bin, repo, tmp_path)
    f1, i1, i2, f2, d1, f3, i3 = make_chains(ch)
    e = dict(os.environ)
    e["CAIRN_EXPIRE_TEST_PAUSE_MS"] = "60"
    p = subprocess.Popen([ch.cairn, "backup", "expire", *repo.cli_args(), "--keep-full", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e, text=True)
    made = []
    try:
        while p.poll() is None or not made:
            made.append(ch.backup("incremental" if len(made) % 2 == 0 else "differential"))
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=deadline_seconds(30))
    assert p.returncode == 0, p.stderr.read()
    p.stderr.close()
    ids = assert_sound(ch)
    assert ids == {f3, i3} | set(made), (sorted(ids), made)
    for bid in made:
        assert ch.parent[bid] in ids
    leaf = made[-1]
    assert ch.restore_rows(leaf) == (ch.rows[leaf], ch.rows[leaf])


# ---------------------------------------------------------------------------
# the continuous archive


def _status(node):
    r = node.raw("GET", "/status", timeout=5)
    assert r.status == 200, r
    return r.json()


def _wait_archived(node, index):
    return wait_until(lambda: _status(node)["archive"]["head_index"] >= index or None, 20,
                      "the archive's head to reach index %d" % index)


def _rows(path):
    c = sqlite3.connect(str(path))
    try:
        return c.execute("SELECT count(*), max(v) FROM t").fetchone()
    finally:
        c.close()


@repo_kinds(smoke=True, dir_only="the segment rule is the same on S3 (unit-tested); one "
                                  "server run is enough")
def test_archive_segments_a_kept_backup_needs_stay(server_factory, repo, cairn_bin, tmp_path):
    """cairnd --archive into the repository: its base backup, writes in several segments,
    a full backup, more segments. Expiring all but the newest full deletes the old base
    and exactly the segments whose entries all lie at or before the kept backup's index;
    the archive still verifies, and point-in-time restores from the kept backup work up
    to the head while targets before it are refused."""
    ch = Chains(cairn_bin, repo, tmp_path)
    s = server_factory(extra_args=repo.server_args() + ["--archive", "--archive-interval",
                                                        "100ms"])
    wait_until(lambda: _status(s)["archive"]["timeline"] or None, 20, "the archiver's timeline")
    s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)"])
    v = 0
    for _ in range(3):  # each batch waits for its upload: several segments
        for _ in range(2):
            v += 1
            s.execute(["INSERT INTO t(v) VALUES(%d)" % v])
        _wait_archived(s, _status(s)["store"]["applied_index"])
    s.execute(["BACKUP DATABASE"])
    kept_index = _status(s)["store"]["applied_index"]
    for _ in range(2):
        for _ in range(2):
            v += 1
            s.execute(["INSERT INTO t(v) VALUES(%d)" % v])
        _wait_archived(s, _status(s)["store"]["applied_index"])
    s.stop()
    backups = ch.listing()
    assert len(backups) == 2, backups
    newest = backups[-1]
    assert newest["type"] == "full" and newest["raft_index"] <= kept_index, newest

    r = ch.expire("--keep-full", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [b["id"] for b in doc["backups"] if b["action"] == "expire"] == [backups[0]["id"]]
    segs = doc["archive"]["segments"]
    assert len(segs) >= 4, segs
    for sg in segs[:-1]:  # the last is the archive's head: it always stays
        want = "expire" if sg["last"] <= newest["raft_index"] else "keep"
        assert sg["action"] == want, (sg, newest["raft_index"])
    assert any(sg["action"] == "expire" for sg in segs), segs
    assert any(sg["action"] == "keep" for sg in segs), segs
    left = sorted(n for n in repo.names() if n.startswith("archive-"))
    assert left == sorted(sg["name"] for sg in segs if sg["action"] == "keep")

    r = ch.run("archive", "verify", *repo.cli_args(), "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = tmp_path / "pitr.db"
    r = ch.run("restore", *repo.cli_args(), "--out", out, "--force", "latest")
    assert r.returncode == 0, r.stderr
    assert _rows(out) == (v, v)
    r = ch.run("restore", *repo.cli_args(), "--out", out, "--force", "--to-index",
               newest["raft_index"] - 1)
    assert r.returncode == 1 and "restorable" in r.stderr, r.stderr
