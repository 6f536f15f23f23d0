"""Point-in-time restores in a repository that holds two histories.

A cluster restored from a repository numbers its Raft entries from 1 again; when it
archives and backs up into the same repository (what an operator does who keeps one
bucket), the repository holds two histories whose indexes mean different things: the
old cluster's index 20 and the new cluster's index 20 are different writes. A restore
must never base one history's timeline on the other history's backup, nor call the old
history "latest" because its indexes are larger. Each check compares rows with what the
node held at that index, recorded as the writes were acknowledged.
"""
import datetime
import json
import subprocess
import time

from backuputil import DirRepo
from conftest import wait_until
from test_archive_loss import file_keys, status

TABLE = "CREATE TABLE t (client INTEGER, seq INTEGER, UNIQUE(client, seq))"


def applied(node):
    return status(node)["store"]["applied_index"]


def wait_archived(node):
    idx = applied(node)
    wait_until(lambda: status(node)["archive"]["head_index"] >= idx, 30,
               "the archive to reach index %d on %s" % (idx, node.name))


def run_restore(cairn_bin, repo, out, *target):
    return subprocess.run([str(cairn_bin), "restore", "--repo", str(repo), "--out", str(out),
                           "--force"] + [str(a) for a in target],
                          capture_output=True, text=True, timeout=120)


def restore(cairn_bin, repo, out, *target):
    r = run_restore(cairn_bin, repo, out, *target)
    assert r.returncode == 0, (target, r.stdout, r.stderr)
    return file_keys(out)


def now_ms_after_ack():
    """This moment in ms, once the clock has moved past it: a write sent after this
    returns is stamped later than the time returned (the entries' times are cairnd's
    clock, the same machine's)."""
    t = int(time.time() * 1000)
    while int(time.time() * 1000) <= t:
        pass
    return t


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_two_histories_in_one_repository_are_never_mixed(server_factory, tmp_path, cairn_bin):
    repo = DirRepo(tmp_path / "repo")
    args = ["--backup-dir", repo.path, "--archive", "--archive-interval", "50ms"]

    # History A: 40 writes, the rows after each recorded by index.
    a = server_factory(extra_args=args)
    wait_until(lambda: status(a)["archive"]["timeline"] or None, 30, "A's timeline")
    a.execute([TABLE])
    rows, at, at_time = set(), {}, []
    for i in range(40):
        body = a.execute([["INSERT INTO t(client, seq) VALUES(0, ?)", i]])
        assert "error" not in body["results"][0], body
        rows.add((0, i))
        at[applied(a)] = set(rows)
        if i % 10 == 5:
            at_time.append((now_ms_after_ack(), set(rows)))
    wait_archived(a)
    a_head = applied(a)
    a.kill()

    # History B: restored from the repository into a new node (its log starts at 1
    # again), then archiving and backing up into the same repository.
    b = server_factory(extra_args=args + ["--restore-from", repo.path])
    b_timeline = wait_until(lambda: status(b)["archive"]["timeline"] or None, 30, "B's timeline")
    for j in range(5):
        body = b.execute([["INSERT INTO t(client, seq) VALUES(1, ?)", j]])
        assert "error" not in body["results"][0], body
    r = b.raw("POST", "/admin/backup", {"type": "full"}, timeout=60)
    assert r.status == 200, r
    b_backup_index = r.json()["backup"]["raft_index"]
    body = b.execute([["INSERT INTO t(client, seq) VALUES(1, 5)"]])
    assert "error" not in body["results"][0], body
    wait_archived(b)
    b_rows = rows | {(1, j) for j in range(6)}
    b_head = applied(b)
    assert b_backup_index < b_head < a_head, (b_backup_index, b_head, a_head)

    # A's timeline at indexes past B's head: A's rows as A had them, never based on B's
    # backup (which an index alone would pick: the newest at or before the target).
    targets = [i for i in sorted(at) if i > b_head][:3] + [a_head]
    for idx in targets:
        got = restore(cairn_bin, repo.path, tmp_path / "a.db", "--to-index", idx)
        assert got == at[idx], "as of index %d of A's history: %d rows, extra %r, missing %r" % (
            idx, len(got), sorted(got - at[idx])[:5], sorted(at[idx] - got)[:5])
    # An index both histories hold is refused as ambiguous, naming the windows.
    both = [i for i in sorted(at) if b_backup_index <= i <= b_head][0]
    r = run_restore(cairn_bin, repo.path, tmp_path / "x.db", "--to-index", both)
    assert r.returncode != 0 and "ambiguous" in r.stderr and "restore to a time" in r.stderr, (
        r.returncode, r.stderr)
    assert not (tmp_path / "x.db").exists()
    # Times are not ambiguous: A's rows at A's times.
    for ms, want in at_time:
        got = restore(cairn_bin, repo.path, tmp_path / "t.db", "--to-time", iso(ms))
        assert got == want, "as of %s: %d rows, want %d" % (iso(ms), len(got), len(want))

    # latest is B's state: the newest, though A's indexes are larger.
    got = restore(cairn_bin, repo.path, tmp_path / "latest.db", "latest")
    assert got == b_rows, "latest: extra %r, missing %r" % (sorted(got - b_rows)[:5],
                                                           sorted(b_rows - got)[:5])

    # Retention in the mixed repository: each timeline's segments are kept for its own
    # base (A's first backup; B's archive base, its second full), never for a backup of
    # the other history that an index would pick; both timelines still restore.
    r = subprocess.run([str(cairn_bin), "backup", "expire", "--repo", str(repo.path),
                        "--keep-full", "2", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    exp = json.loads(r.stdout)
    fulls = sorted((b for b in exp["backups"] if b["type"] == "full"), key=lambda b: b["created_ms"])
    a_base = fulls[0]["id"]
    for seg in exp["archive"]["segments"]:
        if seg["timeline"] != b_timeline and "roll forward" in seg["reason"]:
            assert a_base in seg["reason"], (seg, a_base)
        elif seg["timeline"] == b_timeline:
            assert a_base not in seg["reason"], seg
    r = subprocess.run([str(cairn_bin), "archive", "verify", "--repo", str(repo.path), "--json"],
                       capture_output=True, text=True, timeout=120)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"], (r.stdout, r.stderr)
    assert restore(cairn_bin, repo.path, tmp_path / "a2.db", "--to-index", a_head) == at[a_head]
    assert restore(cairn_bin, repo.path, tmp_path / "latest2.db", "latest") == b_rows
    b.stop()


def test_a_rebuilt_cluster_restores_from_its_own_later_backup(server_factory, tmp_path,
                                                              cairn_bin):
    """Every backup records its history (the cluster id of the node that took it), so that
    after a rebuild into the same repository a point in the new history is restored from
    the newest backup of that history before it, not from the backup its timeline was
    started on (whose replay would grow with the timeline)."""
    repo = DirRepo(tmp_path / "repo")
    args = ["--backup-dir", repo.path, "--archive", "--archive-interval", "50ms"]

    a = server_factory(extra_args=args)
    wait_until(lambda: status(a)["archive"]["timeline"] or None, 30, "A's timeline")
    a_id = a.get_json("/cluster/identity")["cluster_id"]
    a.execute([TABLE])
    rows = set()
    for i in range(20):
        body = a.execute([["INSERT INTO t(client, seq) VALUES(0, ?)", i]])
        assert "error" not in body["results"][0], body
        rows.add((0, i))
    wait_archived(a)
    a.kill()

    b = server_factory(extra_args=args + ["--restore-from", repo.path])
    b_timeline = wait_until(lambda: status(b)["archive"]["timeline"] or None, 30, "B's timeline")
    b_id = b.get_json("/cluster/identity")["cluster_id"]
    assert len(b_id) == 32 and b_id != a_id, (a_id, b_id)
    for j in range(5):
        body = b.execute([["INSERT INTO t(client, seq) VALUES(1, ?)", j]])
        assert "error" not in body["results"][0], body
        rows.add((1, j))
    r = b.raw("POST", "/admin/backup", {"type": "full"}, timeout=60)
    assert r.status == 200, r
    later = r.json()["backup"]
    assert later["history"] == b_id, later
    for j in range(5, 10):
        body = b.execute([["INSERT INTO t(client, seq) VALUES(1, ?)", j]])
        assert "error" not in body["results"][0], body
        rows.add((1, j))
    at_ms, want = now_ms_after_ack(), set(rows)
    body = b.execute([["INSERT INTO t(client, seq) VALUES(1, 10)"]])
    assert "error" not in body["results"][0], body
    wait_archived(b)

    # The catalog says each backup's history and compression. B's timeline starts after
    # the base its archiver took; the later backup is past it.
    r = subprocess.run([str(cairn_bin), "backup", "list", "--repo", str(repo.path), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    listed = json.loads(r.stdout)
    assert {e["history"] for e in listed} <= {a_id, b_id}, listed
    assert all(e["compression"] in ("lz4", "zstd") for e in listed), listed
    b_start = int(b_timeline[1:21])
    b_bases = [e for e in listed if e["history"] == b_id and e["raft_index"] + 1 >= b_start]
    assert later["id"] in {e["id"] for e in b_bases}, (later, b_bases)
    first = min(b_bases, key=lambda e: e["raft_index"])
    assert first["raft_index"] + 1 == b_start and first["id"] != later["id"], (first, later)

    # A time in B's history after the later backup: restored from it, the entries after
    # it replayed, and the rows B had then.
    out = tmp_path / "b.db"
    r = run_restore(cairn_bin, repo.path, out, "--to-time", iso(at_ms), "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["timeline"] == b_timeline, doc
    assert doc["base"]["id"] == later["id"], (doc, later, first)
    assert doc["base"]["index"] == later["raft_index"], doc
    assert doc["entries"] >= 5, doc
    assert file_keys(out) == want

    # Retention agrees: keeping only the newest full backup (the later one), B's segments
    # are kept to roll forward from it, and those it holds are not needed.
    r = subprocess.run([str(cairn_bin), "backup", "expire", "--repo", str(repo.path),
                        "--keep-full", "1", "--dry-run", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    exp = json.loads(r.stdout)
    kept = {e["id"] for e in exp["backups"] if e["action"] == "keep"}
    assert later["id"] in kept and first["id"] not in kept, exp["backups"]
    b_segs = [s for s in exp["archive"]["segments"] if s["timeline"] == b_timeline]
    assert any("roll forward from %s" % later["id"] in s["reason"] for s in b_segs), b_segs
    assert all(s["action"] == "keep" for s in b_segs if s["last"] > later["raft_index"]), b_segs
    b.stop()
