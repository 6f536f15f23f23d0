"""What a restore asks SQLite to check (issue 17's decision, docs/OPERATIONS.md
"Restore"): every page is checked against its hash and the chain's digests, then the
file passes PRAGMA quick_check by default, PRAGMA integrity_check with `--check full`.
A database whose index does not match its table tells them apart: quick_check does not
compare indexes with tables, integrity_check does. A damaged file in the chain is
refused at either level, leaving nothing at --out."""
import json
import os
import sqlite3
import subprocess

import pytest

from conftest import deadline_seconds, flip


def cairn(cairn_bin, *args, timeout=120):
    env = dict(os.environ)
    env.pop("CAIRN_HOST", None)
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=deadline_seconds(timeout))


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout,
                                                                    r.stderr)
    return r


def rows(path, sql):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [list(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def make_db(path, n=3000, index_lies=False):
    """A table with an index. With index_lies, the schema says the index is on another
    column than the one it holds: every page is sound (quick_check passes), but the
    index does not match its table (integrity_check fails)."""
    con = sqlite3.connect(str(path))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a INT, b INT, v BLOB)")
    con.execute("CREATE INDEX i ON t(a)")
    con.executemany("INSERT INTO t(a, b, v) VALUES(?, ?, randomblob(200))",
                    [(k, 10 ** 6 - k) for k in range(n)])
    con.commit()
    if index_lies:
        con.execute("PRAGMA writable_schema=ON")
        con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX i ON t(b)' WHERE name = 'i'")
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def backup(cairn_bin, db, repo, kind="full"):
    return json.loads(ok(cairn(cairn_bin, "backup", "create", "--db", db, "--repo", repo,
                               "--type", kind, "--json")).stdout)


def test_the_default_is_quick_check_and_full_is_integrity_check(cairn_bin, tmp_path):
    db = tmp_path / "lying-index.db"
    make_db(db, index_lies=True)
    assert rows(db, "PRAGMA quick_check") == [["ok"]]
    assert rows(db, "PRAGMA integrity_check") != [["ok"]]
    repo = tmp_path / "repo"
    e = backup(cairn_bin, db, repo)
    dest = tmp_path / "dest"
    dest.mkdir()

    # The default: quick_check, which passes the file.
    out = dest / "quick.db"
    got = json.loads(ok(cairn(cairn_bin, "restore", "--repo", repo, e["id"], "--out", out,
                              "--json")).stdout)
    assert got["check"] == "quick_check", got
    assert got["restored"]["id"] == e["id"]
    assert rows(out, "PRAGMA integrity_check") != [["ok"]]  # the very image, index and all
    assert rows(out, "SELECT count(*) FROM t") == [[3000]]
    out2 = dest / "quick2.db"
    got = json.loads(ok(cairn(cairn_bin, "restore", "--repo", repo, e["id"], "--out", out2,
                              "--check", "quick", "--json")).stdout)
    assert got["check"] == "quick_check", got
    # Said in words without --json too.
    out3 = dest / "quick3.db"
    r = ok(cairn(cairn_bin, "restore", "--repo", repo, e["id"], "--out", out3))
    assert "PRAGMA quick_check ok" in r.stdout, r.stdout

    # --check full: integrity_check, which refuses it; nothing is left at --out.
    before = sorted(os.listdir(dest))
    full = dest / "full.db"
    r = cairn(cairn_bin, "restore", "--repo", repo, e["id"], "--out", full, "--check", "full",
              "--json")
    assert r.returncode == 1, r
    assert "integrity_check" in r.stderr and "missing from index i" in r.stderr, r.stderr
    assert sorted(os.listdir(dest)) == before

    # A sound database passes either.
    good = tmp_path / "good.db"
    make_db(good)
    g = backup(cairn_bin, good, tmp_path / "repo2")
    got = json.loads(ok(cairn(cairn_bin, "restore", "--repo", tmp_path / "repo2", g["id"],
                              "--out", full, "--check", "full", "--json")).stdout)
    assert got["check"] == "integrity_check", got
    assert rows(full, "PRAGMA integrity_check") == [["ok"]]


@pytest.mark.parametrize("args,words", [
    (["--check", "fast"], ["--check", "quick or full", "fast"]),
    (["--check", "full"], ["--check", "standalone"]),
])
def test_bad_check_levels_are_usage_errors(cairn_bin, tmp_path, args, words):
    argv = ["restore"] + args + ["20260101T000000000Z-0000-abcd"]
    if "fast" in args:
        argv[1:1] = ["--repo", tmp_path / "repo", "--out", tmp_path / "o.db"]
    r = cairn(cairn_bin, *argv)
    assert r.returncode == 2, r
    assert all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "o.db").exists()


@pytest.mark.parametrize("level", [None, "quick", "full"])
@pytest.mark.parametrize("damaged", ["full", "incremental"])
def test_a_damaged_file_in_the_chain_is_refused_at_any_level(cairn_bin, tmp_path, level,
                                                              damaged):
    db = tmp_path / "app.db"
    make_db(db, n=6000)
    repo = tmp_path / "repo"
    chain = [backup(cairn_bin, db, repo)]
    con = sqlite3.connect(str(db))
    con.execute("UPDATE t SET v = randomblob(200) WHERE id % 7 = 0")
    con.commit()
    con.close()
    chain.append(backup(cairn_bin, db, repo, "incremental"))
    victim = chain[0] if damaged == "full" else chain[1]
    flip(victim["path"], victim["size_bytes"] // 3)
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "r.db"
    r = cairn(cairn_bin, "restore", "--repo", repo, chain[1]["id"], "--out", out,
              *(["--check", level] if level else []))
    assert r.returncode == 1, r
    assert victim["id"] in r.stderr, r.stderr
    assert list(dest.iterdir()) == []
