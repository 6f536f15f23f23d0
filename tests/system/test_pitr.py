"""Point-in-time restore everywhere (issue 18): the same archive points (an index, a
time, the latest state) through `cairn restore`, `RESTORE DATABASE ... AS OF` into a
branch and into the live database, and POST /admin/restore; and the two procedures of
docs/OPERATIONS.md ("Undo a bad write at 10:02", "The whole cluster is gone") run as
written there.

PITR exactness: a single node archives a workload of inserts (RETURNING random(),
datetime('now'), strftime('%f')), updates and deletes, with a full backup early, an
incremental one in the middle, a live restore of a backup and a live restore AS OF an
earlier index in the middle of it. After every write the test records the node's rows,
its applied index and the clock before and after the request; the state at any index
is then the rows of the last write at or before it, and at any time between the answer
of one write and the start of the next, that write's rows. Restores to random indexes
and times (seeded; the seed is printed; CAIRN_PITR_SEED reruns one) are compared row by
row with it, in a directory and in S3. Rows, not pages: a node commits a loop turn's
entries together, so its pages may legitimately differ from a replay's. Waiting is a
poll with a deadline.
"""
import json
import os
import pathlib
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import time

import pytest

from backuputil import DirRepo, repo, repo_kind, repo_kinds, sql_quote  # noqa: F401 (fixtures)
from s3util import s3, s3env  # noqa: F401 (fixtures)
from conftest import BUILD, wait_until
from test_archive import cairn, status, wait_archived, wait_archiving
from test_cluster import cluster_factory  # noqa: F401 (fixture)

ARCHIVE_ARGS = ["--archive", "--archive-interval", "100ms"]
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, r INTEGER, ts TEXT, f TEXT)"
COLS = "SELECT id, v, r, ts, f FROM t ORDER BY id"
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def now_ms():
    return int(time.time() * 1000)


def next_ms(t):
    """The first millisecond after t on the clock (a write proposed from now on is
    stamped after t). Polls the clock only: a millisecond at most."""
    while now_ms() <= t:
        pass
    return now_ms()


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def rows_of(node, branch=None):
    params = {"level": "strong"} if branch is None else {"branch": branch}
    body = node.query(COLS, **params)
    res = body["results"][0]
    assert "error" not in res, (branch, res)
    return [tuple(v) for v in res.get("values", [])]


def file_rows(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [tuple(v) for v in db.execute(COLS)]
    finally:
        db.close()


def one_row(body, what):
    res = body["results"][0]
    assert "error" not in res, (what, res)
    assert len(res["values"]) == 1, (what, res)
    return dict(zip(res["columns"], res["values"][0]))


class History:
    """What the node had: (index, clock before the request, clock after the answer,
    rows) per write, in order."""

    def __init__(self):
        self.h = []

    def record(self, node, before):
        idx = status(node)["store"]["applied_index"]
        assert not self.h or idx >= self.h[-1][0], (idx, self.h[-1][0])
        self.h.append((idx, before, now_ms(), rows_of(node)))

    def at_index(self, idx):
        best = None
        for e in self.h:
            if e[0] <= idx:
                best = e
        assert best is not None, idx
        return best[3]

    def time_targets(self, rng, n):
        """n (time, rows) pairs: a time between one write's answer and the next
        write's request."""
        out = []
        for k in rng.sample(range(len(self.h) - 1), n):
            lo, hi = self.h[k][2], self.h[k + 1][1] - 1
            assert lo <= hi, (self.h[k], self.h[k + 1])
            out.append((rng.randint(lo, hi), self.h[k][3]))
        return out


def write(node, rng, i):
    k = rng.random()
    if k < 0.55 or i < 3:
        sql = ("INSERT INTO t(v, r, ts, f) VALUES(%d, random(), datetime('now'), "
               "strftime('%%f', 'now')) RETURNING r" % i)
        body = node.request([sql])
    elif k < 0.8:
        body = node.execute(["UPDATE t SET v = v + 100, r = random(), f = strftime('%f', 'now') "
                             "WHERE id = (SELECT id FROM t ORDER BY r LIMIT 1)"])
    else:
        body = node.execute(["DELETE FROM t WHERE id = (SELECT id FROM t ORDER BY r DESC LIMIT 1)"])
    assert "error" not in body["results"][0], body


def workload(node, n, rng, hist):
    for i in range(n):
        before = next_ms(hist.h[-1][2] if hist.h else 0)
        write(node, rng, len(hist.h) + i)
        hist.record(node, before)


def operation(node, hist, stmt):
    """A cairn statement between writes, recorded as a step of the history."""
    before = next_ms(hist.h[-1][2])
    body = node.execute([stmt])
    row = one_row(body, stmt)
    hist.record(node, before)
    return row


def admin_restore(node, body, status_code=200):
    r = node.raw("POST", "/admin/restore", body, timeout=60)
    assert r.status == status_code, (body, r.status, r.body[:2000])
    return r.json()


@repo_kinds(smoke=True)
def test_pitr_exactness_cli_sql_and_http(server_factory, repo, tmp_path, cairn_bin):
    seed = int(os.environ.get("CAIRN_PITR_SEED", random.randrange(1 << 30)))
    print("PITR exactness seed: %d (CAIRN_PITR_SEED=%d reruns it)" % (seed, seed))
    rng = random.Random(seed)
    # 20 targets of each kind each way on a directory; S3 (every restore reads objects
    # through the HTTP proxy) a few, to keep the file within a minute.
    k = 20 if repo.kind == "dir" else 5
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    hist = History()
    before = now_ms()
    s.execute([SCHEMA])
    hist.record(s, before)

    full = operation(s, hist, "BACKUP DATABASE FULL")["backup_id"]
    workload(s, 14, rng, hist)
    operation(s, hist, "BACKUP DATABASE INCREMENTAL")
    workload(s, 10, rng, hist)
    # A live restore of the early full backup: its entries are replayed by every PITR
    # that crosses them.
    operation(s, hist, "RESTORE DATABASE FROM %s" % sql_quote(full))
    assert hist.h[-1][3] == hist.h[1][3]
    workload(s, 10, rng, hist)
    # A live restore AS OF an index of the past: the state the node had then.
    wait_archived(s, hist.h[-1][0])
    back = hist.h[len(hist.h) // 3]
    row = operation(s, hist, "RESTORE DATABASE FROM 'default' AS OF INDEX %d" % back[0])
    assert row["as_of_index"] == back[0] and row["kept_as"], row
    assert hist.h[-1][3] == back[3], "the live restore AS OF INDEX %d" % back[0]
    workload(s, 14, rng, hist)
    head = wait_archived(s, hist.h[-1][0])["head_index"]
    lo = hist.h[0][0]

    # The CLI: k indexes, k times.
    out = tmp_path / "pitr.db"
    for idx in [rng.randint(lo, head) for _ in range(k - 1)] + [head]:
        r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force",
                                                               "--to-index", idx], env=repo.env())
        assert r.returncode == 0, (idx, r.stdout, r.stderr)
        assert file_rows(out) == hist.at_index(idx), ("cli index %d" % idx, r.stdout)
    for t, rows in hist.time_targets(rng, k):
        r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force",
                                                               "--to-time", iso(t)], env=repo.env())
        assert r.returncode == 0, (iso(t), r.stdout, r.stderr)
        assert file_rows(out) == rows, ("cli time %s" % iso(t), r.stdout)

    # SQL AS OF into branches.
    n = 0
    for idx in [rng.randint(lo, head) for _ in range(k)]:
        n += 1
        row = one_row(s.execute(["RESTORE DATABASE FROM %s TO BRANCH 'i%d' AS OF INDEX %d"
                                 % (sql_quote(repo.url), n, idx)]), idx)
        assert row["operation"] == "restore to branch" and row["branch"] == "i%d" % n, row
        assert row["as_of_index"] <= idx and row["raft_index"] == row["as_of_index"], row
        assert rows_of(s, "i%d" % n) == hist.at_index(idx), ("sql index %d" % idx, row)
        s.execute(["DROP BRANCH 'i%d'" % n])
    for t, rows in hist.time_targets(rng, k):
        n += 1
        row = one_row(s.execute(["RESTORE DATABASE FROM 'default' TO BRANCH t%d AS OF '%s'"
                                 % (n, iso(t))]), iso(t))
        assert row["as_of_time"] is None or row["as_of_time"] <= iso(t), (iso(t), row)
        assert rows_of(s, "t%d" % n) == rows, ("sql time %s" % iso(t), row)
        s.execute(["DROP BRANCH 't%d'" % n])

    # POST /admin/restore into branches.
    for idx in [rng.randint(lo, head) for _ in range(k)]:
        n += 1
        doc = admin_restore(s, {"branch": "h%d" % n, "to_index": idx})
        a = doc["as_of"]
        assert doc["branch"] == "h%d" % n and a["index"] <= idx and a["target_index"] == idx, doc
        assert doc["restored"]["id"] == a["base"]["id"], doc
        assert a["base"]["raft_index"] <= a["index"], doc
        assert rows_of(s, "h%d" % n) == hist.at_index(idx), ("http index %d" % idx, doc)
        s.execute(["DROP BRANCH 'h%d'" % n])
    for t, rows in hist.time_targets(rng, k):
        n += 1
        doc = admin_restore(s, {"branch": "h%d" % n, "to_time": iso(t),
                                "repository": repo.url})
        a = doc["as_of"]
        assert a["time"] is None or (a["time"] <= iso(t) and a["time_ms"] <= t), (iso(t), doc)
        assert rows_of(s, "h%d" % n) == rows, ("http time %s" % iso(t), doc)
        s.execute(["DROP BRANCH 'h%d'" % n])
    doc = admin_restore(s, {"branch": "newest", "latest": True})
    assert doc["as_of"]["index"] == head and rows_of(s, "newest") == hist.h[-1][3], doc

    # Refusals: past the head, before the oldest base; with the restorable range.
    r = s.post("/db/execute", ["RESTORE DATABASE FROM 'default' TO BRANCH x AS OF INDEX %d"
                               % (head + 1000)])
    err = r.json()["results"][0].get("error", "") if r.status == 200 else r.json()["error"]
    assert "cannot be restored" in err and "restorable: timeline" in err, (r.status, err)
    assert "indexes " in err, err
    for body in ({"to_index": head + 1000}, {"to_time": "2001-01-01T00:00:00Z", "branch": "x"},
                 {"to_time": iso(now_ms() + 3600 * 1000)}):
        r = s.raw("POST", "/admin/restore", body)
        assert r.status in (404, 422) and "restorable" in r.json()["error"], (body, r.status, r.body)
    assert "x" not in [b["name"] for b in status(s).get("branches", [])]
    assert rows_of(s) == hist.h[-1][3]  # nothing changed by a refusal
    # Malformed bodies: 400 naming the field.
    for body, field in (({"to_index": "5"}, "to_index"), ({"to_index": -3}, "to_index"),
                        ({"to_index": 1.5}, "to_index"), ({"to_time": 5}, "to_time"),
                        ({"to_time": "yesterday"}, "to_time"), ({"latest": "yes"}, "latest"),
                        ({"to_index": 5, "to_time": "2026-01-01T00:00:00Z"}, "to_time"),
                        ({"to_index": 5, "latest": True}, "latest"),
                        ({"to_index": 5, "repository": 7}, "repository"),
                        ({"to_index": 5, "repository": "x", "backup_id": "y"}, "repository"),
                        ({"repository": "default"}, "repository")):
        r = s.raw("POST", "/admin/restore", body)
        assert r.status == 400 and field in r.json()["error"], (body, r.status, r.body)
    for stmt, what in (("RESTORE DATABASE FROM 'default' AS OF INDEX x", "a log index"),
                       ("RESTORE DATABASE FROM 'default' AS OF 'tomorrow'", "not a time"),
                       ("RESTORE DATABASE FROM 'nosuch' TO BRANCH y AS OF 'latest'",
                        "no repository of this node"),
                       ("RESTORE DATABASE FROM '%s' TO BRANCH y AS OF 'latest'"
                        % (tmp_path / "nothing-here"), "does not exist")):
        r = s.post("/db/execute", [stmt])
        err = r.json()["results"][0].get("error", "") if r.status == 200 else r.json()["error"]
        assert what in err, (stmt, r.status, err)
    assert not (tmp_path / "nothing-here").exists()

    # The live database, over HTTP, as of a time: the node serves that state.
    t, rows = hist.time_targets(rng, 1)[0]
    doc = admin_restore(s, {"to_time": iso(t)})
    assert doc["branch"] is None and doc["raft_index"] > head, doc
    assert doc["restored"]["id"] != doc["as_of"]["base"]["id"], doc  # kept as a backup
    assert rows_of(s) == rows, ("live time %s" % iso(t), doc)


def test_cluster_live_restore_as_of_makes_the_same_file_on_every_node(cluster_factory, tmp_path):
    """Three nodes, each with its own repository; the leader archives into its own. A
    live RESTORE AS OF (SQL, then POST /admin/restore sent to a follower) makes the
    state on the leader, keeps it as a full backup there, and restores it through the
    log: the followers fetch it from the leader and every node ends with the same rows
    and, once stopped, the same pages."""
    seed = int(os.environ.get("CAIRN_PITR_SEED", random.randrange(1 << 30)))
    print("PITR cluster seed: %d" % seed)
    rng = random.Random(seed)
    c = cluster_factory(3, extra_args=ARCHIVE_ARGS)
    leader = c.leader()
    wait_archiving(leader)
    hist = History()
    before = now_ms()
    leader.execute([SCHEMA])
    hist.record(leader, before)
    workload(leader, 12, rng, hist)
    wait_archived(leader, hist.h[-1][0])
    back = hist.h[5]
    row = operation(leader, hist, "RESTORE DATABASE FROM 'default' AS OF INDEX %d" % back[0])
    assert row["as_of_index"] == back[0] and hist.h[-1][3] == back[3], row
    kept = row["kept_as"]
    workload(leader, 6, rng, hist)
    wait_archived(leader, hist.h[-1][0])
    follower = [n for n in c.nodes if n is not leader][0]
    t, rows = hist.time_targets(rng, 1)[0]
    r = follower.raw("POST", "/admin/restore", {"to_time": iso(t)}, timeout=60)
    assert r.status == 200, (r.status, r.body)
    doc = r.json()
    assert doc["as_of"]["time_ms"] <= t, doc
    c.wait_converged(timeout=60)
    for n in c.nodes:
        assert [tuple(v) for v in n.local_rows(COLS)] == rows, (n.name, iso(t), doc)
        assert os.path.exists(os.path.join(n.backup_dir, kept + ".cbk")), (n.name, kept)
    rcs = c.stop_all()
    assert all(rc == 0 for rc in rcs.values()), rcs
    c.assert_same_pages(c.nodes, tmp_path / "pages")


# ---- the procedures of docs/OPERATIONS.md, as written -------------------------------

def procedure(title):
    """The commands of the sh blocks of the section `### title`: one per line, in
    order, the `export` lines included."""
    text = DOCS.read_text()
    start = text.index("### " + title)
    end = text.find("\n#", start + 4)
    section = text[start:end if end >= 0 else len(text)]
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    assert cmds, "no commands under %s in %s" % (title, DOCS)
    return cmds


def run_steps(cmds, env, tmp_path, start_cairnd=None):
    """Run each command with bash (cairn and cairnd from the build), the documented
    `export` and `VAR=...` lines replaced by env; a cairnd line is handed to
    start_cairnd(argv) (the harness picks its ports). Returns the outputs."""
    outs = []
    path = "%s:%s" % (BUILD, os.environ.get("PATH", ""))
    for cmd in cmds:
        if cmd.startswith("export ") or re.match(r"^[A-Z_]+=\S+$", cmd):
            continue  # the test's own values stand in for the example's
        expanded = subprocess.run(["bash", "-c", "printf '%s\\n' " + cmd], env=dict(env, PATH=path),
                                  capture_output=True, text=True).stdout.splitlines()
        if cmd.startswith("cairnd "):
            start_cairnd(expanded[1:])
            continue
        if cmd.startswith("sqlite3 ") and shutil.which("sqlite3") is None:
            db = sqlite3.connect(str(tmp_path / expanded[1]))
            outs.append("\n".join(str(r[0]) for r in db.execute(expanded[2])))
            db.close()
            continue
        r = subprocess.run(["bash", "-c", cmd], env=dict(env, PATH=path), cwd=str(tmp_path),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        outs.append(r.stdout)
    return outs


def count_in(out):
    nums = re.findall(r"\b(\d+)\b", out)
    assert nums, out
    return int(nums[-1])


def test_operations_procedures_as_documented(server_factory, tmp_path, cairn_bin):
    repo = DirRepo(tmp_path / "repo")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, at TEXT)"])
    for i in range(30):
        s.execute([["INSERT INTO orders(item, at) VALUES(?, datetime('now'))", "item %d" % i]])
    before = next_ms(now_ms())
    next_ms(before)
    s.execute(["DELETE FROM orders WHERE id % 3 = 0"])  # the bad write
    for i in range(3):
        s.execute([["INSERT INTO orders(item, at) VALUES(?, datetime('now'))", "later %d" % i]])
    assert s.rows("SELECT count(*) FROM orders")[0][0] == 23
    wait_archived(s, status(s)["store"]["applied_index"])

    # Undo a bad write: the branch holds the 30 rows, then the live database does.
    env = dict(os.environ, CAIRN_HOST=s.url, REPO=str(repo.path), BEFORE=iso(before))
    cmds = procedure("Undo a bad write at 10:02")
    outs = run_steps(cmds, env, tmp_path)
    by_cmd = dict(zip([c for c in cmds if not c.startswith("export ") and
                       not re.match(r"^[A-Z_]+=\S+$", c)], outs))
    assert "restorable: indexes" in by_cmd['cairn archive list --repo "$REPO"'], by_cmd
    restore_branch = [o for c, o in by_cmd.items() if "TO BRANCH before AS OF" in c]
    assert restore_branch and "restore to branch" in restore_branch[0], by_cmd
    assert count_in([o for c, o in by_cmd.items() if "--branch before" in c][0]) == 30, by_cmd
    live_count = [o for c, o in by_cmd.items() if c == 'cairn sql "SELECT count(*) FROM orders"']
    assert live_count and count_in(live_count[0]) == 30, by_cmd
    assert s.rows("SELECT count(*) FROM orders")[0][0] == 30
    assert "before" not in [b["name"] for b in status(s).get("branches", [])]
    s.execute([["INSERT INTO orders(item, at) VALUES(?, datetime('now'))", "after the undo"]])
    last = status(s)["store"]["applied_index"]
    wait_archived(s, last)

    # The whole cluster is gone: the node killed, its data directory deleted.
    s.kill()
    shutil.rmtree(s.data_dir)
    new, newrepo = tmp_path / "new-data", tmp_path / "new-repo"
    started = []

    def start_cairnd(argv):
        args = list(argv)
        i = args.index("--data-dir")
        data = args[i + 1]
        del args[i:i + 2]
        n = server_factory(extra_args=args, data_dir=data)
        started.append(n)
        env["CAIRN_HOST"] = n.url

    env.update(REPO=str(repo.path), NEW=str(new), NEWREPO=str(newrepo))
    env.pop("BEFORE")
    cmds = procedure("The whole cluster is gone")
    outs = run_steps(cmds, env, tmp_path, start_cairnd)
    assert started and started[0].data_dir == new, started
    assert file_rows_count(tmp_path / "db.sqlite") == 31
    assert count_in(outs[-1]) == 31, outs  # the new node's answer, through the CLI
    assert started[0].rows("SELECT count(*) FROM orders")[0][0] == 31
    assert "restored %s as of index" % repo.path in started[0].stderr_text()


def file_rows_count(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        db.close()


def test_a_forced_point_in_time_restore_leaves_no_old_wal_beside_its_file(
        server_factory, tmp_path, cairn_bin):
    """`cairn restore --to-index N --out FILE --force` over a database in WAL mode whose
    last commits are in its -wal: the -wal belongs to the file replaced and must go
    with it. It stayed beside the new file, and SQLite read it into it: the restore
    said index N and the file held the old file's rows."""
    def count(path):
        con = sqlite3.connect(str(path))
        try:
            return con.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            con.close()

    repo = DirRepo(tmp_path / "backups")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    s.execute(["BACKUP DATABASE FULL"])
    marks = []
    for i in range(6):
        s.execute(["INSERT INTO t(v) VALUES(%d)" % i])
        marks.append(status(s)["store"]["applied_index"])
    wait_archived(s, marks[-1])

    out = tmp_path / "out.db"
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--to-index", marks[-1]])
    assert r.returncode == 0, (r.stdout, r.stderr)
    # The user's program writes the restored file in WAL mode and dies before a
    # checkpoint: its commits are in out.db-wal (a copy taken while it has them).
    live = tmp_path / "live.db"
    shutil.copy(out, live)
    con = sqlite3.connect(str(live), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=wal")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("INSERT INTO t(v) SELECT v + 100 FROM t")
        shutil.copy(live, out)
        shutil.copy(str(live) + "-wal", str(out) + "-wal")
    finally:
        con.close()
    shutil.copy(out, tmp_path / "check.db")
    shutil.copy(str(out) + "-wal", tmp_path / "check.db-wal")
    assert count(tmp_path / "check.db") == 12

    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", out, "--force",
                                                           "--to-index", marks[1]])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out.db")) == \
        ["out.db"]
    assert count(out) == 2


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_latest_is_refused_when_the_archive_cannot_be_listed(server_factory, repo, tmp_path,
                                                              cairn_bin):
    """`cairn restore latest` looks for an archive in the repository: the newest state
    is then the archive's head, not the newest backup. A listing of the archive that
    failed (here refused once, 403) was taken for "no archive": the restore wrote the
    newest backup, an older state, and said it had restored "latest"."""
    def count(path):
        con = sqlite3.connect(str(path))
        try:
            return con.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            con.close()

    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    s.execute(["BACKUP DATABASE FULL"])
    for i in range(5):
        s.execute(["INSERT INTO t(v) VALUES(%d)" % i])
    wait_archived(s, status(s)["store"]["applied_index"])

    out = tmp_path / "latest.db"
    repo.s3env.fault(action="status", status=403, code="AccessDenied", method="GET",
                     query="archive-")
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["latest", "--out", out],
              env=repo.env())
    assert repo.s3env.pending_faults() == [], "the archive was not listed"
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "archive" in r.stderr and "AccessDenied" in r.stderr, r.stderr
    assert not out.exists()

    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["latest", "--out", out],
              env=repo.env())
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert count(out) == 5


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_restore_from_stops_when_the_archive_cannot_be_listed(server_factory, repo):
    """`cairnd --restore-from REPO` starts an empty node at the archive's head when the
    repository holds an archive. A listing of the archive that failed (refused once,
    403) was taken for "no archive": the node started from the newest backup, an older
    state, and served it. Now the start stops, saying why; the next start restores the
    head."""
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    s.execute(["BACKUP DATABASE FULL"])
    for i in range(5):
        s.execute(["INSERT INTO t(v) VALUES(%d)" % i])
    wait_archived(s, status(s)["store"]["applied_index"])
    assert s.stop() == 0

    b = server_factory(extra_args=["--restore-from", repo.url, "--s3-endpoint", repo.endpoint],
                       start=False)
    repo.s3env.fault(action="status", status=403, code="AccessDenied", method="GET",
                     query="archive-")
    b.start(wait=False)
    assert b.wait_exit(30) != 0, "the node started"
    assert repo.s3env.pending_faults() == [], "the archive was not listed"
    err = b.stderr_text()
    assert "archive" in err and "AccessDenied" in err, err

    b.start()
    assert b.query("SELECT count(*) FROM t")["results"][0]["values"] == [[5]]


def test_a_forced_point_in_time_restore_onto_a_symbolic_link_writes_where_it_points(
        server_factory, tmp_path, cairn_bin):
    """`cairn restore --to-index N --out LINK --force` renamed the new file over the
    link: the link became a regular file and the database it pointed to was left as it
    was. Now the restore writes the link's target and the link stays; a link to nothing
    is refused, naming its target."""
    repo = DirRepo(tmp_path / "backups")
    s = server_factory(extra_args=repo.server_args() + ARCHIVE_ARGS)
    wait_archiving(s)
    s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"])
    s.execute(["BACKUP DATABASE FULL"])
    s.execute(["INSERT INTO t(v) VALUES(1)", "INSERT INTO t(v) VALUES(2)"])
    head = status(s)["store"]["applied_index"]
    wait_archived(s, head)
    disk = tmp_path / "disk"
    disk.mkdir()
    real = disk / "real.db"
    sqlite3.connect(str(real)).close()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", link, "--force",
                                                           "--to-index", head])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert link.is_symlink() and os.readlink(link) == str(real)
    con = sqlite3.connect("file:%s?mode=ro" % real, uri=True)
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    finally:
        con.close()
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "nowhere" / "x.db")
    r = cairn(cairn_bin, ["restore"] + repo.cli_args() + ["--out", dangling, "--force",
                                                           "--to-index", head])
    assert r.returncode == 1 and "symbolic link" in r.stderr, (r.stdout, r.stderr)
    assert str(tmp_path / "nowhere" / "x.db") in r.stderr, r.stderr
    assert dangling.is_symlink()
