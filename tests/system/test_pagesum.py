"""Page checksums on the live database (src/lib/pagesum.c).

Every page of a database cairnd creates carries an XXH3-64 of its contents in its 8
reserved bytes, sealed when a checkpoint writes the page into the database file and
verified whenever it is read from there. Before, a flipped byte inside a row was served
as data, replicas differed, and `cairn check` said healthy. Now:
- a bad page is never data: the read fails naming the page and the file;
- a database damaged while the node was stopped is refused at start, with the repair
  command, instead of being served;
- `cairn check` verifies every page and names the bad ones; `cairn repair` rebuilds;
- a database made without checksums is converted by `cairn repair --add-checksums`.
"""
import json
import os
import struct
import subprocess

import pytest

from conftest import assert_exec_ok

PAGE = 4096


def run_cli(cairn_bin, *args):
    p = subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def header(path):
    with open(path, "rb") as f:
        return f.read(100)


def load_rows(server, n=3000):
    assert_exec_ok(server.execute([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < %d) "
        "INSERT INTO t(v) SELECT printf('row-%%08d-%%s', i, hex(randomblob(20))) FROM r" % n]))


def flip_byte_in_rows(path, page_no):
    """Flip one bit inside the cell area of page page_no (1-based), away from the page
    header and the reserved bytes: a change SQLite itself would serve as data."""
    off = (page_no - 1) * PAGE + PAGE // 2
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x01]))


def find_page_with(path, needle):
    data = open(path, "rb").read()
    at = data.find(needle)
    assert at > 0, "%r not found in %s" % (needle, path)
    return at // PAGE + 1


def test_new_database_has_checksums_and_a_bad_page_is_refused_at_start(server, cairn_bin):
    s = server
    load_rows(s)
    st = s.get_json("/status")["store"]
    assert st["page_checksums"] is True and st["checksum_failures"] == 0, st
    want = s.scalar("SELECT count(*) || ':' || total(length(v)) FROM t")
    s.stop()
    db = s.data_dir / "db.sqlite"
    assert header(db)[20] == 8, "reserved bytes per page: %d" % header(db)[20]
    rc, out, err = run_cli(cairn_bin, "check", s.data_dir)
    assert rc == 0 and "match their checksums" in out, (rc, out, err)

    page = find_page_with(db, b"row-00001000-")
    flip_byte_in_rows(db, page)
    # cairn check names the page; before, integrity_check said ok (the bit was inside a
    # row's text).
    rc, out, err = run_cli(cairn_bin, "check", "--json", s.data_dir)
    assert rc == 1, (out, err)
    items = [i for i in json.loads(out)["items"] if i["check"] == "page checksums"]
    assert items and items[0]["status"] == "DAMAGED", items
    assert "(page %d)" % page in items[0]["message"], items
    # The node refuses to start on it, naming the file, the page and the repair.
    p = subprocess.run([str(s.binary)] + s.argv()[1:], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "page %d fails its checksum" % page in p.stderr and "cairn repair" in p.stderr, p.stderr
    # cairn repair rebuilds it from the log; every row is back, and the check is clean.
    rc, out, err = run_cli(cairn_bin, "repair", s.data_dir)
    assert rc == 0, (out, err)
    rc, out, err = run_cli(cairn_bin, "check", s.data_dir)
    assert rc == 0, (out, err)
    s.start()
    assert s.scalar("SELECT count(*) || ':' || total(length(v)) FROM t") == want


def test_a_bad_page_read_while_running_is_an_error_naming_it_never_data(server_factory):
    """A database larger than what the start check reads (its first and last 8192
    pages): a page in the middle, damaged while the node was stopped, is found when a
    read reaches it."""
    s = server_factory()
    assert_exec_ok(s.execute([
        "CREATE TABLE big(id INTEGER PRIMARY KEY, tag TEXT, b BLOB)",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000) "
        "INSERT INTO big(tag, b) SELECT printf('tag-%08d', i), randomblob(3000) FROM r"]))
    s.stop()
    db = s.data_dir / "db.sqlite"
    pages = os.path.getsize(db) // PAGE
    assert pages > 2 * 8192 + 100, pages
    # A leaf in the middle of the file.
    data = open(db, "rb").read()
    at = data.find(b"tag-00010000")
    assert at > 0
    page = at // PAGE + 1
    assert 8192 < page <= pages - 8192, (page, pages)
    flip_byte_in_rows(db, page)
    s.start()
    res = s.query(["SELECT tag, length(b) FROM big WHERE id = 10000"])["results"][0]
    assert "values" not in res, res
    assert "page %d of %s" % (page, db) in res["error"] and "checksum" in res["error"], res
    # Other rows are served; the count of refused pages shows in /status.
    assert s.scalar("SELECT tag FROM big WHERE id = 1") == "tag-00000001"
    assert s.get_json("/status")["store"]["checksum_failures"] >= 1
    # A backup never copies the damaged page: it fails naming it, and leaves no file.
    repo = s.data_dir.parent / "backups"
    before = sorted(os.listdir(repo)) if os.path.isdir(repo) else []
    r = s.post("/db/execute", ["BACKUP DATABASE FULL"])
    body = r.json()
    err = body.get("error") or body["results"][0].get("error", "")
    assert "page %d" % page in err and "checksum" in err, body
    after = sorted(p for p in os.listdir(repo) if not p.endswith(".tmp")) if os.path.isdir(repo) else []
    assert [p for p in after if p.endswith(".cbk")] == [p for p in before if p.endswith(".cbk")], after


def test_no_page_checksums_then_repair_adds_them(server_factory, cairn_bin):
    s = server_factory(extra_args=["--no-page-checksums"])
    load_rows(s)
    want = s.scalar("SELECT count(*) || ':' || total(length(v)) FROM t")
    assert s.get_json("/status")["store"]["page_checksums"] is False
    s.stop()
    db = s.data_dir / "db.sqlite"
    assert header(db)[20] == 0
    rc, out, err = run_cli(cairn_bin, "check", s.data_dir)
    assert rc == 0 and "--add-checksums" in out, (out, err)
    # A damaged database is not converted: repair it first.
    rc, out, err = run_cli(cairn_bin, "repair", "--add-checksums", "--json", s.data_dir)
    assert rc == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] is True and "checksum" in report["action"], report
    assert report["moved_database"].endswith("-db.sqlite"), report
    assert header(db)[20] == 8
    rc, out, err = run_cli(cairn_bin, "check", s.data_dir)
    assert rc == 0 and "match their checksums" in out, (out, err)
    # Twice is harmless.
    rc, out, err = run_cli(cairn_bin, "repair", "--add-checksums", "--json", s.data_dir)
    assert rc == 0 and "already" in json.loads(out)["action"], (out, err)
    # The node runs on it, writes are sealed, and the check stays clean.
    s.start()
    assert s.get_json("/status")["store"]["page_checksums"] is True
    assert s.scalar("SELECT count(*) || ':' || total(length(v)) FROM t") == want
    assert_exec_ok(s.execute(["UPDATE t SET v = v || 'z' WHERE id % 3 = 0",
                              "DELETE FROM t WHERE id % 7 = 0"]))
    s.stop()
    rc, out, err = run_cli(cairn_bin, "check", s.data_dir)
    assert rc == 0 and "match their checksums" in out, (out, err)


def test_a_damaged_header_is_refused_at_start(server, cairn_bin):
    s = server
    load_rows(s, 200)
    s.stop()
    db = s.data_dir / "db.sqlite"
    with open(db, "r+b") as f:
        f.seek(0)
        f.write(b"XQLite")
    p = subprocess.run([str(s.binary)] + s.argv()[1:], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "header" in p.stderr and "cairn repair" in p.stderr, p.stderr


def test_a_follower_with_a_damaged_page_heals_from_the_leader(tmp_path, cairnd_bin):
    """A follower whose database file was damaged while it was stopped (in the middle of a
    database larger than the start check reads) applies a write that reads the damaged
    page. Before: the page was served as data or the write recorded a failure that the
    other nodes did not have. Now the apply fails without recording anything, the
    follower takes the leader's healthy copy, applies on top of it, and ends with the
    same rows and pages as the others; the damaged file is kept in DATA/corrupt/."""
    from clusterutil import Cluster
    c = Cluster(tmp_path / "c", 3)
    try:
        leader = c.start()
        f = c.followers(leader)[0]
        assert_exec_ok(leader.execute([
            "CREATE TABLE big(id INTEGER PRIMARY KEY, tag TEXT, b BLOB)",
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000) "
            "INSERT INTO big(tag, b) SELECT printf('tag-%08d', i), randomblob(3000) FROM r"]))
        c.wait_converged()
        assert f.stop() == 0
        db = f.db_path
        data = open(db, "rb").read()
        at = data.find(b"tag-00010000")
        assert at > 0
        page = at // PAGE + 1
        pages = len(data) // PAGE
        assert 8192 < page <= pages - 8192, (page, pages)
        del data
        flip_byte_in_rows(db, page)
        f.start(wait=True)
        # A write that reads the damaged page on every node.
        assert_exec_ok(leader.execute(["UPDATE big SET tag = 'changed' WHERE id = 10000"]))
        c.wait_converged(timeout=60)
        assert f.local_rows("SELECT tag FROM big WHERE id = 10000") == [["changed"]]
        assert "database healed" in f.stderr_text(), f.stderr_tail()
        assert list((f.data_dir / "corrupt").glob("*-db.sqlite"))
        rcs = c.stop_all()
        assert all(rc == 0 for rc in rcs.values()), rcs
        c.assert_same_pages(c.nodes, tmp_path / "pages")
    finally:
        c.teardown()
