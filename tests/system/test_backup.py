"""Backups in cairnd: the SQL statements (BACKUP DATABASE, RESTORE DATABASE, DROP BRANCH,
the cairn_backups table), branches, the admin API (/admin/backup, /admin/backups,
/admin/restore, /admin/snapshot), rqlite's /db/backup and /db/load; consistency of
backups taken under 16 concurrent writers, restores through the Raft log, bounded memory
on a large database and corrupted backup files.

Backups are restored to files with the standalone `cairn restore --repo REPO --out FILE`
(read here with Python's sqlite3) and into branches read over HTTP. Every test of the
repository runs twice (issue 16): with `--backup-dir` a directory in its tmp dir, and an
S3 prefix on the module's s3rver (backuputil's `repo` fixture); the few that are about
a local directory say so. Tests of what never touches the repository (Raft snapshots,
GET /db/backup, request routing) run once. Nothing waits by sleeping.
"""

import gzip
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sqlite3
import threading
import time
import urllib.parse

import pytest

from backuputil import (  # noqa: F401 (repo, repo_kind: fixtures)
    BACKUP_COLUMNS, UNKNOWN_ID, Writers, admin_backup, admin_entry, admin_list,
    applied_index, assert_same_pages, backup_sql, branch_rows, catalog, check_backup_row,
    check_entry, cli_restore, dump, file_rows, integrity, make_repo, only_result, proc_status,
    repo, repo_kind, repo_kinds, repo_kinds_for, request_errors, sql_error, sql_quote, sql_result, sql_row,
    status_branches,
)
from conftest import SANITIZED, ServerFactory, assert_exec_ok, deadline_seconds
from s3util import s3env  # noqa: F401 (fixture)


@pytest.fixture
def bserver(server_factory, repo):
    """A fresh cairnd whose backup repository is `repo` (a directory or S3)."""
    return server_factory(extra_args=repo.server_args())


@pytest.fixture
def dserver(server_factory, tmp_path):
    """A fresh cairnd with a directory repository, for the tests of what does not touch
    the repository (Raft snapshots, GET /db/backup, routing): they run once."""
    return server_factory(extra_args=["--backup-dir", tmp_path / "repo"])


def check_restore_row(row, bid, branch=None):
    """The row RESTORE DATABASE answers. The spec names the live form's operation
    ("restore"); for a branch any "restore..." operation is taken."""
    if branch is None:
        assert row["operation"] == "restore", row
        assert isinstance(row.get("raft_index"), int) and row["raft_index"] > 0, row
    else:
        assert str(row["operation"]).startswith("restore"), row
        if "branch" in row:
            assert row["branch"] == branch, row
    assert row["backup_id"] == bid, row
    return row


def fill(s, first, last, table="t"):
    """Rows first..last (inclusive) of table(id, v): v is 'row-<id>'."""
    assert_exec_ok(s.execute([["INSERT INTO %s(id, v) VALUES(?, ?)" % table, i, "row-%d" % i]
                              for i in range(first, last + 1)]))


def ids(s, table="t", **params):
    return [r[0] for r in s.rows("SELECT id FROM %s ORDER BY id" % table, **params)]


def make_t(s):
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]))


def sqlite_file(path, rows, table="loaded"):
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT, b BLOB)" % table)
        con.execute("BEGIN")
        for i in range(1, rows + 1):
            con.execute("INSERT INTO %s VALUES(?, ?, randomblob(100))" % table, (i, "v%d" % i))
        con.execute("COMMIT")
    finally:
        con.close()
    return path


# ---------------------------------------------------------------------------
# BACKUP DATABASE in SQL


@repo_kinds(smoke=True)
def test_backup_sql_full_result_row(bserver, repo):
    s = bserver
    make_t(s)
    body = s.execute([["INSERT INTO t(v) VALUES(?)", "a"]], raft_index=True)
    write_index = body.get("raft_index", body["results"][0].get("raft_index"))
    assert isinstance(write_index, int) and write_index > 0, body

    res = sql_result(s, "BACKUP DATABASE")
    assert res["columns"] == BACKUP_COLUMNS, res
    assert res["types"][BACKUP_COLUMNS.index("backup_id")] == "text", res
    assert res["types"][BACKUP_COLUMNS.index("pages")] == "integer", res
    row = check_backup_row(dict(zip(res["columns"], res["values"][0])), "full")
    assert len(res["values"]) == 1, res
    assert row["raft_index"] >= write_index, (row, write_index)
    # Default repository: the --backup-dir repository, object named <id>.cbk.
    assert repo.name_of(row["path"]) == row["backup_id"] + ".cbk", row
    assert repo.backups() == [row["backup_id"] + ".cbk"]
    assert repo.leftovers() == []
    # The live database is unchanged and still writable.
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES('b')"]))
    assert [r[0] for r in s.rows("SELECT v FROM t ORDER BY id")] == ["a", "b"]


def test_backup_sql_keywords_endpoints_and_parents(bserver, repo):
    """Keywords in any case, comments, whitespace and a trailing ';', on /db/execute,
    /db/request and /db/query; incremental takes the newest backup as its parent,
    differential the newest full one."""
    s = bserver
    make_t(s)
    fill(s, 1, 50)
    full = check_backup_row(sql_row(s, "  backup\n\tdatabase   FULL ;  ", columns=BACKUP_COLUMNS), "full")
    fill(s, 51, 60)
    inc1 = check_backup_row(sql_row(s, "/* nightly */ Backup Database Incremental; -- done",
                                    "/db/request", columns=BACKUP_COLUMNS), "incremental")
    assert inc1["parent_id"] == full["backup_id"], (inc1, full)
    assert inc1["raft_index"] > full["raft_index"], (inc1, full)
    assert inc1["pages"] > 0, inc1
    fill(s, 61, 70)
    # A backup does not change the database: /db/query takes it.
    inc2 = check_backup_row(sql_row(s, "BACKUP DATABASE INCREMENTAL", "/db/query",
                                    columns=BACKUP_COLUMNS), "incremental")
    assert inc2["parent_id"] == inc1["backup_id"], (inc2, inc1)
    diff = check_backup_row(sql_row(s, "backup database differential;", columns=BACKUP_COLUMNS),
                            "differential")
    assert diff["parent_id"] == full["backup_id"], (diff, full)
    # No write since inc2: an incremental stores next to nothing (page 1 and cairn's
    # own bookkeeping page at most).
    inc3 = check_backup_row(sql_row(s, "BACKUP DATABASE INCREMENTAL", columns=BACKUP_COLUMNS),
                            "incremental")
    assert inc3["parent_id"] == diff["backup_id"], (inc3, diff)
    assert inc3["pages"] <= 2, inc3
    # ?associative gives the row as an object, like any query's.
    r = s.post("/db/execute", ["BACKUP DATABASE INCREMENTAL"], associative=True)
    assert r.status == 200, r
    res = only_result(r.json())
    assert "error" not in res and len(res.get("rows", [])) == 1, res
    inc4 = res["rows"][0]
    assert set(inc4) == set(BACKUP_COLUMNS) and inc4["operation"] == "backup", inc4
    assert inc4["parent_id"] == inc3["backup_id"], inc4
    made = [full, inc1, inc2, diff, inc3, inc4]
    assert repo.backups() == sorted(b["backup_id"] + ".cbk" for b in made)
    assert [b["backup_id"] for b in made] == sorted(b["backup_id"] for b in made), \
        "ids do not sort by creation"


def test_backup_sql_to_names_a_configured_repository(bserver, repo, tmp_path, cairn_bin):
    """TO names a repository cairnd was configured with, by name or by path; any other
    place is refused before anything is written (issue 15, point 2)."""
    s = bserver
    make_t(s)
    fill(s, 1, 20)
    dest = tmp_path / "elsewhere" / "it's nested"  # a quote in the name
    msg = sql_error(s, "BACKUP DATABASE FULL TO %s" % sql_quote(str(dest)))
    assert "not a repository of this node" in msg and str(repo) in msg and "default" in msg, msg
    assert not (tmp_path / "elsewhere").exists()
    # Another prefix of the same bucket is another place too.
    if repo.kind == "s3":
        other = repo.url + "-not"
        msg = sql_error(s, "BACKUP DATABASE FULL TO %s" % sql_quote(other))
        assert "not a repository of this node" in msg and other in msg, msg
    assert repo.backups() == []
    row = backup_sql(s, "full", to=repo)
    assert repo.name_of(row["path"]) == row["backup_id"] + ".cbk", row
    fill(s, 21, 30)
    inc = backup_sql(s, "incremental", to="default")
    assert inc["parent_id"] == row["backup_id"], inc
    assert repo.backups() == sorted([row["backup_id"] + ".cbk", inc["backup_id"] + ".cbk"])
    # The restored chain is the database at the incremental.
    out = tmp_path / "restored.db"
    cli_restore(cairn_bin, repo, inc["backup_id"], out)
    assert file_rows(out, "SELECT count(*) FROM t") == [[30]]


@repo_kinds(dir_only="names a local file where a directory belongs; TO with any "
           "other place than the node's repository is refused alike on S3 "
           "(test_backup_sql_to_names_a_configured_repository)")
def test_backup_to_a_path_that_is_a_file(bserver, repo, tmp_path):
    """The user named a file where a directory belongs: a client error (4xx or a
    per-statement error) naming it, not a server failure, and the file is untouched."""
    s = bserver
    make_t(s)
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    msg = sql_error(s, "BACKUP DATABASE TO %s" % sql_quote(str(afile)))
    assert str(afile) in msg, msg
    r = s.raw("POST", "/admin/backup", {"to": str(afile)})
    assert 400 <= r.status < 500 and str(afile) in r.json().get("error", ""), r
    assert afile.read_text() == "not a directory"


@repo_kinds(dir_only="a FIFO is a local file")
def test_restore_from_a_fifo_is_refused_not_waited_on(bserver, repo, tmp_path):
    """A FIFO named as the backup (by path, or as a backup file of the repository) is no
    backup: refused naming it, at once, not opened and waited on for a writer for ever
    (the request's thread held, the node's stop waiting on it)."""
    s = bserver
    make_t(s)
    full = backup_sql(s, "full")
    pipe = tmp_path / "pipe.cbk"
    os.mkfifo(pipe)
    fake = "20260101T000000000Z-0000-f1f0"
    inrepo = repo.path / (fake + ".cbk")
    os.mkfifo(inrepo)
    try:
        for ref, where in ((str(pipe), str(pipe)), (fake, str(inrepo))):
            r = s.raw("POST", "/db/execute",
                      ["RESTORE DATABASE FROM %s TO BRANCH 'p'" % sql_quote(ref)], timeout=10)
            msg = " ".join(request_errors(r))
            assert where in msg and "not a regular file" in msg, (ref, r)
        assert status_branches(s) == []
        sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'p'" % sql_quote(full["backup_id"]))
        assert status_branches(s) == ["p"]
    finally:
        # Before the fix a reader waits in open(): a writer's open lets it go.
        for f in (pipe, inrepo):
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            os.unlink(f)


@repo_kinds(smoke=True)
def test_cairn_backups_table(bserver, repo):
    s = bserver
    make_t(s)
    assert catalog(s) == [], "a fresh repository lists backups"
    fill(s, 1, 10)
    full = backup_sql(s, "full")
    fill(s, 11, 20)
    inc = backup_sql(s, "incremental", endpoint="/db/request")
    diff = backup_sql(s, "differential")
    want = [full, inc, diff]
    for how in ("GET", "/db/query", "/db/request", "/db/execute"):
        rows = catalog(s, how)
        assert [r["id"] for r in rows] == [b["backup_id"] for b in want], (how, rows)
        for r, b in zip(rows, want):
            assert r["type"] == b["type"] and r["parent_id"] == b["parent_id"], (r, b)
            assert r["raft_index"] == b["raft_index"] and r["pages"] == b["pages"], (r, b)
            assert r["size_bytes"] == b["size_bytes"] and r["path"] == b["path"], (r, b)
            assert r["verified"] == "unverified", r
            assert r["page_count"] >= r["pages"] > 0, r
    # It is a table: WHERE, ORDER BY and aggregates work on it.
    assert s.rows("SELECT id FROM cairn_backups WHERE type = 'incremental'") == [[inc["backup_id"]]]
    assert s.rows("SELECT count(*) FROM cairn_backups") == [[3]]
    assert s.rows("SELECT type FROM cairn_backups ORDER BY raft_index DESC, id DESC LIMIT 1") == \
        [["differential"]]


def test_cairn_statement_mixed_with_others_is_refused(bserver, repo):
    """A cairn statement must be alone in its request. Choice where the spec allows a 400
    or per-statement errors: nothing of the request runs (the INSERT beside it is not
    applied), as a user sending them together would expect."""
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    bid = backup_sql(s, "full")["backup_id"]
    cases = [
        ("/db/execute", ["INSERT INTO t(v) VALUES('x')", "BACKUP DATABASE"]),
        ("/db/execute", ["BACKUP DATABASE", "INSERT INTO t(v) VALUES('x')"]),
        ("/db/request", ["SELECT 1", "BACKUP DATABASE INCREMENTAL"]),
        ("/db/request", ["INSERT INTO t(v) VALUES('x')", "RESTORE DATABASE FROM %s" % sql_quote(bid)]),
        ("/db/execute", ["RESTORE DATABASE FROM %s TO BRANCH 'mixed'" % sql_quote(bid),
                         "INSERT INTO t(v) VALUES('x')"]),
        ("/db/query", ["SELECT 1", "SELECT * FROM cairn_backups", "BACKUP DATABASE"]),
        ("/db/execute", ["BACKUP DATABASE; INSERT INTO t(v) VALUES('x')"]),
    ]
    for endpoint, stmts in cases:
        msg = sql_error(s, stmts, endpoint, statuses=(400,))
        low = msg.lower()
        assert any(w in low for w in ("backup", "restore", "alone", "only", "own", "mixed")), (stmts, msg)
        assert "syntax error" not in low, (stmts, msg)
        assert ids(s) == [1, 2, 3], "%r on %s changed the database" % (stmts, endpoint)
        assert len(repo.backups()) == 1, "%r on %s made a backup" % (stmts, endpoint)
        assert status_branches(s) == [], "%r on %s made a branch" % (stmts, endpoint)


def test_cairn_statement_with_parameters_is_refused(bserver, repo):
    """cairn's statements bind nothing: parameters given with one are refused, as they
    are for an SQL statement with fewer placeholders, not ignored (DROP BRANCH 'b1' with
    a parameter "b2" would drop b1)."""
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    bid = backup_sql(s, "full")["backup_id"]
    sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'b1'" % sql_quote(bid))
    cases = [
        ("/db/execute", [["DROP BRANCH 'b1'", "b2"]]),
        ("/db/request", [["BACKUP DATABASE", 1]]),
        ("/db/query", [["BACKUP DATABASE", "offsite"]]),
        ("/db/execute", [["RESTORE DATABASE FROM %s TO BRANCH 'b3'" % sql_quote(bid), "x"]]),
        ("/db/execute", [["DROP BRANCH 'b1'", {"name": "b2"}]]),
    ]
    for endpoint, stmts in cases:
        msg = sql_error(s, stmts, endpoint, statuses=(400,))
        assert "parameters" in msg and "cairn statement" in msg, (stmts, msg)
    assert len(repo.backups()) == 1
    assert status_branches(s) == ["b1"]


def test_cairn_statement_after_another_in_one_string(bserver, repo):
    """'INSERT ...; BACKUP DATABASE' in one string: refused as a cairn statement mixed
    with another, not reported as SQLite's syntax error near BACKUP, and the INSERT is
    not kept."""
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    for endpoint in ("/db/execute", "/db/request"):
        msg = sql_error(s, ["INSERT INTO t(v) VALUES('x'); BACKUP DATABASE"], endpoint)
        assert "syntax error" not in msg.lower() and "backup" in msg.lower(), msg
        assert ids(s) == [1, 2, 3] and repo.names() == []


# Statements refused by the parser, before a repository is opened: on S3, one case shows
# that a refused statement leaves the bucket as it was.
@repo_kinds_for("sql,needles", [
    ("BACKUP DATABASE SIDEWAYS", ["sideways"]),
    ("BACKUP DATABASE FULL INCREMENTAL", ["incremental"]),
    ("BACKUP DATABASE TO", ["to"]),
    ("BACKUP DATABASE TO 'unterminated", ["unterminated", "quote", "unclosed", "string"]),
    ("BACKUP DATABASE TO nodir", ["quote", "string", "nodir"]),
    ("BACKUP DATABASE FULL TO '/tmp/x' EXTRA", ["extra"]),
    ("RESTORE DATABASE FROM", ["id", "expected", "missing"]),
    ("RESTORE DATABASE FROM 'abc", ["unterminated", "quote", "unclosed", "string"]),
    ("RESTORE DATABASE FROM 'x' TO BRANCH", ["branch"]),
    ("RESTORE DATABASE FROM 'x' TO SOMEWHERE 'y'", ["somewhere"]),
    ("DROP BRANCH", ["branch", "name", "expected"]),
    ("DROP BRANCH 'x", ["unterminated", "quote", "unclosed", "string"]),
], s3=[5])
def test_malformed_statements_name_the_problem(bserver, repo, sql, needles):
    s = bserver
    make_t(s)
    fill(s, 1, 2)
    msg = sql_error(s, sql)
    low = msg.lower()
    assert any(n in low for n in needles), "%r: error %r names none of %r" % (sql, msg, needles)
    # Not SQLite's own complaint: cairn recognised its statement.
    assert not low.startswith('near "backup"') and not low.startswith('near "restore"'), msg
    assert repo.names() == [] and ids(s) == [1, 2] and status_branches(s) == []


def test_unknown_backup_id_is_named(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 2)
    backup_sql(s, "full")
    for sql in ("RESTORE DATABASE FROM %s" % sql_quote(UNKNOWN_ID),
                "RESTORE DATABASE FROM %s TO BRANCH 'b'" % sql_quote(UNKNOWN_ID)):
        msg = sql_error(s, sql)
        assert UNKNOWN_ID in msg, msg
    assert ids(s) == [1, 2] and status_branches(s) == []
    r = s.raw("POST", "/admin/restore", {"backup_id": UNKNOWN_ID})
    assert r.status in (400, 404) and UNKNOWN_ID in r.json().get("error", ""), r
    r = s.raw("GET", "/admin/backups/%s" % UNKNOWN_ID)
    assert r.status == 404 and UNKNOWN_ID in r.json().get("error", ""), r
    r = s.raw("POST", "/admin/backups/%s/verify" % UNKNOWN_ID, {})
    assert r.status == 404 and UNKNOWN_ID in r.json().get("error", ""), r


# Branch names are checked before the backup is read: one case on S3.
@repo_kinds_for("name", ["../x", "a/b", "", "/abs", ".", "..", "x\\y", "nul\x01"], s3=[0])
def test_branch_names_with_path_characters_are_refused(bserver, repo, tmp_path, name):
    s = bserver
    make_t(s)
    fill(s, 1, 2)
    bid = backup_sql(s, "full")["backup_id"]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    msg = sql_error(s, "RESTORE DATABASE FROM %s TO BRANCH %s" % (sql_quote(bid), sql_quote(name)))
    assert "branch" in msg.lower(), msg
    r = s.raw("POST", "/admin/restore", {"backup_id": bid, "branch": name})
    assert r.status == 400 and "branch" in r.json().get("error", "").lower(), r
    msg = sql_error(s, "DROP BRANCH %s" % sql_quote(name))
    assert "branch" in msg.lower(), msg
    assert status_branches(s) == []
    new = set(str(p) for p in tmp_path.rglob("*")) - set(before)
    # Only the server's own bookkeeping (logs, Raft segments) may have appeared: nothing
    # named after the refused branch, anywhere.
    stems = {"x", "b", "y", "abs", "", "x\\y", "nul\x01"}
    assert not [p for p in new if pathlib.Path(p).name.split(".")[0] in stems], new
    assert ids(s) == [1, 2]


def test_restore_and_drop_branch_are_writes_refused_on_db_query(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    bid = backup_sql(s, "full")["backup_id"]
    fill(s, 4, 5)
    for sql in ("RESTORE DATABASE FROM %s" % sql_quote(bid),
                "RESTORE DATABASE FROM %s TO BRANCH 'q'" % sql_quote(bid)):
        msg = sql_error(s, sql, "/db/query").lower()
        assert any(w in msg for w in ("read", "/db/execute", "write", "change")), msg
    assert ids(s) == [1, 2, 3, 4, 5] and status_branches(s) == []
    sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'q'" % sql_quote(bid))
    msg = sql_error(s, "DROP BRANCH 'q'", "/db/query")
    assert status_branches(s) == ["q"], msg


def test_restore_of_a_chain_with_a_missing_file_names_the_parent(bserver, repo, tmp_path):
    s = bserver
    make_t(s)
    fill(s, 1, 10)
    full = backup_sql(s, "full")
    fill(s, 11, 20)
    inc1 = backup_sql(s, "incremental")
    fill(s, 21, 30)
    inc2 = backup_sql(s, "incremental")
    assert inc2["parent_id"] == inc1["backup_id"]
    fill(s, 31, 40)
    repo.delete(repo.name_of(inc1["path"]))
    msg = sql_error(s, "RESTORE DATABASE FROM %s" % sql_quote(inc2["backup_id"]))
    assert inc1["backup_id"] in msg, msg
    assert ids(s) == list(range(1, 41)), "a refused restore changed the live database"
    msg = sql_error(s, "RESTORE DATABASE FROM %s TO BRANCH 'b'" % sql_quote(inc2["backup_id"]))
    assert inc1["backup_id"] in msg, msg
    assert status_branches(s) == []
    r = s.raw("POST", "/admin/backups/%s/verify" % inc2["backup_id"], {"restore": False})
    assert r.status == 200, r
    doc = r.json()
    assert doc["ok"] is False and inc1["backup_id"] in doc["error"], doc
    # Still serving, and the rest of the chain still restores.
    fill(s, 41, 41)
    sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'ok'" % sql_quote(full["backup_id"]))
    assert [r[0] for r in branch_rows(s, "ok", "SELECT id FROM t ORDER BY id")] == list(range(1, 11))
    assert ids(s) == list(range(1, 42))


# ---------------------------------------------------------------------------
# branches


@repo_kinds(smoke=True)
def test_branch_restore_query_and_drop(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 10)
    full = backup_sql(s, "full")
    fill(s, 11, 15)
    row = sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'b1'" % sql_quote(full["backup_id"]))
    check_restore_row(row, full["backup_id"], "b1")
    assert ids(s) == list(range(1, 16)), "a branch restore changed the live database"

    # Reads: GET and POST forms, ?branch=NAME.
    assert [r[0] for r in branch_rows(s, "b1", "SELECT id FROM t ORDER BY id")] == list(range(1, 11))
    assert branch_rows(s, "b1", "SELECT count(*), max(v) FROM t", method="POST") == [[10, "row-9"]]
    assert status_branches(s) == ["b1"]

    # Writes to a branch are refused, and change neither the branch nor the live database.
    for endpoint in ("/db/execute", "/db/request", "/db/query"):
        r = s.post(endpoint, ["INSERT INTO t(v) VALUES('into-branch')"], branch="b1")
        assert r.status in (200, 400, 403, 405), r
        assert request_errors(r) if r.status == 200 else r.json().get("error"), \
            "a write to a branch on %s was accepted: %r" % (endpoint, r)
    assert [r[0] for r in branch_rows(s, "b1", "SELECT count(*) FROM t")] == [10]
    assert ids(s) == list(range(1, 16))

    # An unknown branch: 404 with a JSON error naming it.
    for method in ("GET", "POST"):
        if method == "GET":
            r = s.raw("GET", "/db/query?branch=nope&q=SELECT%201")
        else:
            r = s.post("/db/query", ["SELECT 1"], branch="nope")
        assert r.status == 404 and "nope" in r.json().get("error", ""), r

    # A second branch from another backup.
    inc = backup_sql(s, "incremental")
    row = sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'b2'" % sql_quote(inc["backup_id"]),
                  "/db/request")
    check_restore_row(row, inc["backup_id"], "b2")
    assert branch_rows(s, "b2", "SELECT count(*) FROM t") == [[15]]
    assert status_branches(s) == ["b1", "b2"]
    # An existing branch is not silently replaced.
    msg = sql_error(s, "RESTORE DATABASE FROM %s TO BRANCH 'b2'" % sql_quote(full["backup_id"]))
    assert "b2" in msg, msg
    assert branch_rows(s, "b2", "SELECT count(*) FROM t") == [[15]]

    sql_result(s, "DROP BRANCH 'b1'")
    r = s.raw("GET", "/db/query?branch=b1&q=SELECT%201")
    assert r.status == 404, r
    assert status_branches(s) == ["b2"]
    assert branch_rows(s, "b2", "SELECT count(*) FROM t") == [[15]]
    msg = sql_error(s, "DROP BRANCH 'b1'")
    assert "b1" in msg, msg
    assert ids(s) == list(range(1, 16))


def test_two_restores_into_one_new_branch_one_wins_the_other_is_told_why(bserver, repo):
    """Two restores into the same new branch at once: one makes it, the other is refused
    saying the branch exists, never with the advice of --force, which branches do not
    take; the branch holds the backup's rows. (Over HTTP the server runs them one after
    the other, and the loser is refused before it starts; admin.c restoreBranch also
    words the refusal of a loser that started before the winner ended.)"""
    s = bserver
    make_t(s)
    # Large enough (about 20 MiB) that the two restores run at the same time.
    assert_exec_ok(s.execute(["WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
                              "WHERE i < 4000) INSERT INTO t(id, v) SELECT i, "
                              "hex(randomblob(2500)) FROM c"]))
    full = backup_sql(s, "full")
    for round_ in range(2):
        name = "race%d" % round_
        sql = "RESTORE DATABASE FROM %s TO BRANCH '%s'" % (sql_quote(full["backup_id"]), name)
        answers = [None, None]

        def send(i):
            answers[i] = s.post("/db/execute", [sql])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(a is not None for a in answers), "a restore did not answer"
        errors = [request_errors(a, (400, 404, 409, 422)) for a in answers]
        made = [e for e in errors if not e]
        refused = [" | ".join(e) for e in errors if e]
        assert len(made) == 1 and len(refused) == 1, (name, answers)
        assert name in refused[0] and "exists" in refused[0], refused[0]
        assert "force" not in refused[0].lower(), refused[0]
        assert branch_rows(s, name, "SELECT count(*) FROM t") == [[4000]]
    assert status_branches(s) == ["race0", "race1"]


def test_cairn_statements_on_a_branch_are_refused_naming_it(bserver, repo):
    """BACKUP, RESTORE and DROP BRANCH work on the live database: sent with ?branch=NAME
    they are refused naming the statement and the branch, not as SQLite's syntax error,
    and neither the branch nor the repository changes."""
    s = bserver
    make_t(s)
    fill(s, 1, 5)
    full = backup_sql(s, "full")
    sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'b1'" % sql_quote(full["backup_id"]))
    before = repo.names()
    for sql in ("BACKUP DATABASE", "DROP BRANCH 'b1'",
                "RESTORE DATABASE FROM %s TO BRANCH 'b9'" % sql_quote(full["backup_id"])):
        for method in ("GET", "POST"):
            if method == "GET":
                r = s.raw("GET", "/db/query?branch=b1&q=" + urllib.parse.quote(sql))
            else:
                r = s.post("/db/query", [sql], branch="b1")
            msg = r.json().get("error", "") if r.status != 200 else str(request_errors(r))
            assert r.status == 400 and "cairn statement" in msg and "b1" in msg, (sql, r)
    assert repo.names() == before
    assert status_branches(s) == ["b1"]
    assert branch_rows(s, "b1", "SELECT count(*) FROM t") == [[5]]


def test_branch_survives_restart_and_drop_too(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 20)
    bid = backup_sql(s, "full")["backup_id"]
    fill(s, 21, 25)
    r = s.raw("POST", "/admin/restore", {"backup_id": bid, "branch": "keep"})
    assert r.status == 200, r
    doc = r.json()
    assert doc["branch"] == "keep" and check_entry(doc["restored"])["id"] == bid, doc
    row = sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'gone'" % sql_quote(bid))
    # Both forms report the same index for a branch: the backup's (HTTP said 0).
    assert doc["raft_index"] == row["raft_index"] == doc["restored"]["raft_index"] > 0, (doc, row)
    assert status_branches(s) == ["gone", "keep"]

    s.restart()
    assert status_branches(s) == ["gone", "keep"]
    assert branch_rows(s, "keep", "SELECT count(*) FROM t") == [[20]]
    assert ids(s) == list(range(1, 26))
    sql_result(s, "drop branch 'gone';")
    s.restart(sig=signal.SIGKILL)
    assert status_branches(s) == ["keep"]
    assert branch_rows(s, "keep", "SELECT count(*) FROM t") == [[20]]
    assert s.raw("GET", "/db/query?branch=gone&q=SELECT%201").status == 404


# ---------------------------------------------------------------------------
# live restore through the log


# On S3: the two that rebuild the database from the log after a clean stop, whose
# restore entry reads the backup from the bucket again (or finds it gone); a plain
# restart, killed or not, and a snapshot read nothing more of the repository.
@repo_kinds_for("how", ["sigterm", "sigkill", "snapshot-then-sigkill", "rebuild-from-log",
                        "rebuild-after-the-backup-file-is-deleted"], s3=[3, 4], smoke=[0])
def test_live_restore_through_the_log(bserver, repo, how):
    """RESTORE DATABASE FROM id: later rows are gone, earlier ones present; writes go on;
    a restart (clean, killed, after a snapshot, or rebuilding the database file from the
    log) gives the same state; the catalog keeps backups made after the restored one."""
    s = bserver
    make_t(s)
    fill(s, 1, 10)
    a = backup_sql(s, "full")
    fill(s, 11, 20)
    b = backup_sql(s, "incremental")
    body = s.execute([["INSERT INTO t(id, v) VALUES(?, ?)", i, "row-%d" % i] for i in range(21, 26)],
                     raft_index=True)
    last_write = body.get("raft_index", body["results"][0].get("raft_index"))

    row = sql_row(s, "RESTORE DATABASE FROM %s" % sql_quote(a["backup_id"]))
    check_restore_row(row, a["backup_id"])
    assert isinstance(row["raft_index"], int) and row["raft_index"] > last_write, (row, last_write)
    # Acknowledged means applied: the next read sees the restored database.
    assert ids(s) == list(range(1, 11))
    assert ids(s, level="linearizable") == list(range(1, 11))

    # Writes go on from the restored state (rowids reused from 11).
    body = s.execute(["INSERT INTO t(v) VALUES('after')"])
    assert body["results"][0].get("last_insert_id") == 11, body
    fill(s, 100, 104)
    want = list(range(1, 12)) + list(range(100, 105))
    assert ids(s) == want

    # Restoring never rewinds the catalog.
    listed = [e["id"] for e in admin_list(s)]
    assert a["backup_id"] in listed and b["backup_id"] in listed, listed
    assert [r["id"] for r in catalog(s)] == [a["backup_id"], b["backup_id"]]

    if how == "sigterm":
        s.restart()
    elif how == "sigkill":
        s.restart(sig=signal.SIGKILL)
    elif how == "snapshot-then-sigkill":
        r = s.raw("POST", "/admin/snapshot")
        assert r.status == 200, r
        fill(s, 200, 201)
        want += [200, 201]
        s.restart(sig=signal.SIGKILL)
    else:
        assert s.stop() == 0
        if how == "rebuild-after-the-backup-file-is-deleted":
            # Retention removed the restored backup; the node must still recover.
            repo.delete(repo.name_of(a["path"]))
        for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
            p = s.data_dir / name
            if p.exists():
                p.unlink()
        s.start()
    assert ids(s, level="linearizable") == want, "the restore was undone by the %s restart" % how
    if how != "rebuild-after-the-backup-file-is-deleted":
        assert [r["id"] for r in catalog(s)] == [a["backup_id"], b["backup_id"]]
    fill(s, 300, 300)
    assert ids(s)[-1] == 300


def test_admin_restore_live_of_an_incremental(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 5)
    admin_backup(s)
    fill(s, 6, 7)
    e = admin_backup(s, {"type": "incremental"})
    fill(s, 8, 9)
    r = s.raw("POST", "/admin/restore", {"backup_id": e["id"]})
    assert r.status == 200, r
    doc = r.json()
    assert set(doc) >= {"restored", "branch", "raft_index"}, doc
    assert doc["branch"] is None and check_entry(doc["restored"])["id"] == e["id"], doc
    assert isinstance(doc["raft_index"], int) and doc["raft_index"] > e["raft_index"], doc
    assert ids(s) == [1, 2, 3, 4, 5, 6, 7]
    st = s.get_json("/status")["raft"]
    assert st["applied_index"] >= doc["raft_index"], st


def test_incremental_after_a_live_restore_to_a_smaller_database(bserver, repo, cairn_bin, tmp_path):
    """After restoring an old, smaller backup, the next incremental's parent is a newer,
    bigger backup: it must record the smaller page count and every page that differs
    from that parent, so that its chain restores exactly the live database."""
    s = bserver
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]))
    fill(s, 1, 20)
    small = backup_sql(s, "full")
    assert_exec_ok(s.execute(["CREATE TABLE bulk (b BLOB)",
                              "INSERT INTO bulk SELECT randomblob(2000) FROM "
                              "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                              "WHERE x < 2000) SELECT x FROM c)",
                              "UPDATE t SET v = 'changed' WHERE id <= 10"]))
    big = backup_sql(s, "incremental")
    sql_row(s, "RESTORE DATABASE FROM %s" % sql_quote(small["backup_id"]))
    fill(s, 21, 25)
    inc = backup_sql(s, "incremental")
    assert inc["parent_id"] == big["backup_id"], (inc, big)
    rows = {r["id"]: r for r in catalog(s)}
    assert rows[inc["backup_id"]]["page_count"] < rows[big["backup_id"]]["page_count"], rows
    out = cli_restore(cairn_bin, repo, inc["backup_id"], tmp_path / "r.db")
    assert integrity(out) == [["ok"]]
    assert file_rows(out, "SELECT id, v FROM t ORDER BY id") == s.rows("SELECT id, v FROM t ORDER BY id")
    assert file_rows(out, "SELECT count(*) FROM sqlite_schema WHERE name = 'bulk'") == [[0]]
    diff = backup_sql(s, "differential")
    out2 = cli_restore(cairn_bin, repo, diff["backup_id"], tmp_path / "d.db")
    assert dump(out2, skip_meta=True) == dump(out, skip_meta=True)


def test_live_restore_while_clients_write(bserver, repo):
    """Writes acknowledged before the restore entry are replaced by the backup's image,
    writes acknowledged after it are kept: the restore is one point in the log."""
    s = bserver
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL, pad BLOB)"]))
    writers = Writers(s, "t", clients=8, pad=100).start()
    try:
        writers.wait_more(200)
        a = backup_sql(s, "full")
        writers.wait_more(200)
        row = sql_row(s, "RESTORE DATABASE FROM %s" % sql_quote(a["backup_id"]))
        check_restore_row(row, a["backup_id"])
        writers.wait_more(200)
    finally:
        acked = writers.stop()
    restore_index = row["raft_index"]
    want = {k for k, i in acked.items() if i <= a["raft_index"] or i > restore_index}
    got = {(c, seq) for c, seq in s.rows("SELECT client, seq FROM t")}
    assert got == want, "%d rows missing (e.g. %r), %d rows that should be gone (e.g. %r)" % (
        len(want - got), sorted((k, acked.get(k)) for k in want - got)[:5],
        len(got - want), sorted((k, acked.get(k)) for k in got - want)[:5])
    assert any(i > restore_index for i in acked.values()), "no write after the restore"
    s.restart(sig=signal.SIGKILL)
    assert {(c, seq) for c, seq in s.rows("SELECT client, seq FROM t")} == want


def test_disaster_recovery_into_a_new_server(server_factory, repo, tmp_path):
    """The data directory is lost: a new cairnd on a new data directory with the same
    repository restores the last backup. Its own log is shorter than the old server's:
    writes after the restore must still be applied and kept across restarts."""
    old = server_factory(extra_args=repo.server_args())
    make_t(old)
    for i in range(1, 301):  # many log entries: the old log runs far ahead
        old.execute([["INSERT INTO t(id, v) VALUES(?, ?)", i, "row-%d" % i]])
    backup_sql(old, "full")
    fill(old, 301, 310)
    last = backup_sql(old, "incremental")
    assert old.stop() == 0

    new = server_factory(extra_args=repo.server_args())
    assert [r["id"] for r in catalog(new)][-1] == last["backup_id"]
    row = sql_row(new, "RESTORE DATABASE FROM %s" % sql_quote(last["backup_id"]))
    check_restore_row(row, last["backup_id"])
    assert row["raft_index"] < last["raft_index"], "the new server's log is not shorter: %r" % row
    assert ids(new) == list(range(1, 311))
    body = new.execute(["INSERT INTO t(v) VALUES('after')"])
    assert body["results"][0].get("last_insert_id") == 311, body
    fill(new, 400, 409)
    want = list(range(1, 312)) + list(range(400, 410))
    assert ids(new) == want
    new.restart(sig=signal.SIGKILL)
    assert ids(new) == want
    assert backup_sql(new, "full")["raft_index"] > row["raft_index"]


def test_db_load_of_an_image_from_a_server_further_ahead(server_factory, repo, tmp_path):
    """rqlite's migration path: GET /db/backup from one server, POST /db/load into a
    fresh one whose log is much shorter (its repository `repo`: the load is kept there,
    and a rebuild from the log reads it back). Later writes are applied and survive
    restarts."""
    a = server_factory()
    make_t(a)
    for i in range(1, 201):
        a.execute([["INSERT INTO t(id, v) VALUES(?, ?)", i, "row-%d" % i]])
    image = a.raw("GET", "/db/backup").body
    b = server_factory(extra_args=repo.server_args())
    r = b.raw("POST", "/db/load", image, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert ids(b) == list(range(1, 201))
    # The catalog entry of the load records the real term (it said 0).
    loads = [e for e in b.get_json("/admin/backups")["backups"]]
    assert loads and all(e["raft_term"] >= 1 for e in loads), loads
    assert repo.backups() == sorted(e["id"] + ".cbk" for e in loads)
    fill(b, 500, 504)
    want = list(range(1, 201)) + list(range(500, 505))
    assert ids(b) == want
    b.restart(sig=signal.SIGKILL)
    assert ids(b) == want
    assert b.stop() == 0
    for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
        if (b.data_dir / name).exists():
            (b.data_dir / name).unlink()
    b.start()
    assert ids(b) == want, "rebuilding from the log lost the load or the writes after it"


def test_backup_and_restore_of_a_fresh_database(bserver, repo):
    s = bserver
    empty = backup_sql(s, "full", fresh=True)
    make_t(s)
    fill(s, 1, 3)
    sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH 'empty'" % sql_quote(empty["backup_id"]))
    assert branch_rows(s, "empty", "SELECT count(*) FROM sqlite_schema WHERE name = 't'") == [[0]]
    sql_row(s, "RESTORE DATABASE FROM %s" % sql_quote(empty["backup_id"]))
    assert "no such table" in only_result(s.query("SELECT * FROM t"))["error"]
    make_t(s)
    fill(s, 1, 1)
    assert ids(s) == [1]


def test_concurrent_backups_while_clients_write(bserver, repo, cairn_bin, tmp_path):
    """Several backups at once, of every type, while 4 clients write: each succeeds or is
    refused with a clear client-side status (409/503, never a 500), ids are distinct, and
    every backup made restores exactly the writes acknowledged up to its index."""
    s = bserver
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL, pad BLOB)"]))
    writers = Writers(s, "t", clients=4, pad=200).start()
    kinds = ["FULL", "INCREMENTAL", "DIFFERENTIAL", "FULL"]
    made, refused = [], []
    try:
        writers.wait_more(100)
        backup_sql(s, "full")
        for _ in range(3):
            out = [None] * len(kinds)

            def one(i):
                out[i] = s.post("/db/execute", ["BACKUP DATABASE " + kinds[i]])

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(kinds))]
            for th in threads:
                th.start()
            for th in threads:
                th.join(deadline_seconds(120))
            for kind, r in zip(kinds, out):
                assert r is not None, "a concurrent backup did not answer"
                if r.status == 200 and "error" not in only_result(r.json()):
                    res = only_result(r.json())
                    made.append(check_backup_row(dict(zip(res["columns"], res["values"][0])), kind))
                else:
                    refused.append(request_errors(r, (409, 503)))
            writers.wait_more(50)
    finally:
        acked = writers.stop()
    assert made, "no backup succeeded: %r" % refused
    assert len({m["backup_id"] for m in made}) == len(made)
    for i, m in enumerate(made):
        f = cli_restore(cairn_bin, repo, m["backup_id"], tmp_path / ("c%d.db" % i))
        got = {(c, seq) for c, seq in file_rows(f, "SELECT client, seq FROM t")}
        want = {k for k, idx in acked.items() if idx <= m["raft_index"]}
        assert got == want, "%s backup %s at %d: %d missing, %d extra" % (
            m["type"], m["backup_id"], m["raft_index"], len(want - got), len(got - want))
    print("%d concurrent backups made, %d refused: %r" % (len(made), len(refused), refused[:3]))


# ---------------------------------------------------------------------------
# the admin API


@repo_kinds(smoke=True)
def test_admin_backup_list_show(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 10)
    t0 = int(time.time() * 1000)
    full = admin_backup(s, {"type": "full"})
    t1 = int(time.time() * 1000)
    assert full["type"] == "full" and full["verified"] == "unverified", full
    assert t0 - 2000 <= full["created_ms"] <= t1 + 2000, (t0, full["created_ms"], t1)
    assert repo.size(repo.name_of(full["path"])) == full["size_bytes"], full
    assert full["raft_index"] > 0 and full["raft_term"] > 0, full
    fill(s, 11, 20)
    inc = admin_backup(s, {"type": "incremental"})
    assert inc["parent_id"] == full["id"] and inc["parent_digest"] == full["digest"], (inc, full)
    assert inc["source"] == full["source"] and inc["raft_index"] > full["raft_index"], (inc, full)
    diff = admin_backup(s, {"type": "differential"})
    assert diff["parent_id"] == full["id"] and diff["parent_digest"] == full["digest"], diff
    # No body at all: a full backup.
    r = s.raw("POST", "/admin/backup")
    assert r.status == 200 and check_entry(r.json()["backup"])["type"] == "full", r
    last = r.json()["backup"]

    listed = admin_list(s)
    assert [e["id"] for e in listed] == [full["id"], inc["id"], diff["id"], last["id"]], listed
    for made in (full, inc, diff, last):
        assert admin_entry(s, made["id"]) == made
        assert [e for e in listed if e["id"] == made["id"]] == [made]


def test_admin_backup_to_names_a_configured_repository(bserver, repo, tmp_path):
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    e = admin_backup(s, {"to": str(repo)})
    assert repo.name_of(e["path"]) == e["id"] + ".cbk", e
    e2 = admin_backup(s, {"type": "incremental", "to": "default"})
    assert e2["parent_id"] == e["id"], e2
    for to in (str(tmp_path / "to" / "here"), "void", str(repo) + "-not"):
        r = s.raw("POST", "/admin/backup", {"type": "incremental", "to": to})
        assert r.status == 400 and "not a repository of this node" in r.json().get("error"), r
    assert not (tmp_path / "to").exists() and not (tmp_path / "void").exists()
    assert repo.names() == sorted([e["id"] + ".cbk", e2["id"] + ".cbk"])


# Bodies refused before a repository is opened: on S3, a backup's and a restore's.
@repo_kinds_for("method,path,body", [
    ("POST", "/admin/backup", b"{"),
    ("POST", "/admin/backup", b"[]"),
    ("POST", "/admin/backup", b'"full"'),
    ("POST", "/admin/backup", {"type": 5}),
    ("POST", "/admin/backup", {"type": "sideways"}),
    ("POST", "/admin/backup", {"to": 7}),
    ("POST", "/admin/backup", {"to": ""}),
    ("POST", "/admin/backups/ID/verify", b"{nope"),
    ("POST", "/admin/backups/ID/verify", {"restore": "yes"}),
    ("POST", "/admin/backups/ID/verify", {"restore": 1}),
    ("POST", "/admin/restore", b""),
    ("POST", "/admin/restore", b"{"),
    ("POST", "/admin/restore", {}),
    ("POST", "/admin/restore", {"backup_id": 5}),
    ("POST", "/admin/restore", {"backup_id": ""}),
    ("POST", "/admin/restore", {"backup_id": "ID", "branch": 3}),
    ("POST", "/admin/restore", [{"backup_id": "ID"}]),
], s3=[6, 15])
def test_admin_bad_requests_are_400(bserver, repo, method, path, body):
    s = bserver
    make_t(s)
    fill(s, 1, 3)
    bid = admin_backup(s)["id"]
    path = path.replace("ID", bid)
    if isinstance(body, dict) and body.get("backup_id") == "ID":
        body = dict(body, backup_id=bid)
    if isinstance(body, list):
        body = [dict(x, backup_id=bid) for x in body]
    r = s.raw(method, path, body)
    assert r.status == 400, r
    err = r.json().get("error")
    assert isinstance(err, str) and err, r
    assert repo.names() == [bid + ".cbk"] and ids(s) == [1, 2, 3] and status_branches(s) == []


@pytest.mark.parametrize("method,path", [
    ("GET", "/admin/backup"),
    ("DELETE", "/admin/backups"),
    ("GET", "/admin/restore"),
    ("GET", "/admin/snapshot"),
    ("POST", "/admin/snapshots"),
    ("GET", "/admin/backups/ID/verify"),
    ("POST", "/db/backup"),
    ("GET", "/db/load"),
])
def test_admin_wrong_methods_are_405(dserver, method, path):
    s = dserver
    if "ID" in path:
        path = path.replace("ID", admin_backup(s)["id"])
    r = s.raw(method, path)
    assert r.status == 405, r
    assert r.headers.get("allow"), r


def test_admin_verify(bserver, repo):
    s = bserver
    make_t(s)
    fill(s, 1, 50)
    full = admin_backup(s)
    fill(s, 51, 60)
    inc = admin_backup(s, {"type": "incremental"})
    r = s.raw("POST", "/admin/backups/%s/verify" % inc["id"], {"restore": False})
    assert r.status == 200, r
    doc = r.json()
    assert doc["id"] == inc["id"] and doc["ok"] is True and doc["trial_restore"] is False, doc
    assert "error" not in doc or doc["error"] in (None, ""), doc
    e = admin_entry(s, inc["id"])
    assert e["verified"] == "verified" and e["verified_at"], e
    r = s.raw("POST", "/admin/backups/%s/verify" % full["id"], {"restore": True})
    doc = r.json()
    assert r.status == 200 and doc["ok"] is True and doc["trial_restore"] is True, r
    # No body: a plain check.
    r = s.raw("POST", "/admin/backups/%s/verify" % full["id"])
    assert r.status == 200 and r.json()["ok"] is True and r.json()["trial_restore"] is False, r
    rows = {x["id"]: x for x in catalog(s)}
    assert rows[full["id"]]["verified"] == "verified" and rows[inc["id"]]["verified"] == "verified", rows
    # The verified state is kept across a restart.
    s.restart()
    assert admin_entry(s, inc["id"])["verified"] == "verified"
    # Verification leaves nothing behind in the repository but its records.
    assert repo.leftovers() == []


@pytest.mark.smoke
def test_admin_snapshot(dserver):
    s = dserver
    make_t(s)
    body = s.execute(["INSERT INTO t(v) VALUES('x')"], raft_index=True)
    idx = body.get("raft_index", body["results"][0].get("raft_index"))
    r = s.raw("POST", "/admin/snapshot")
    assert r.status == 200, r
    snap = r.json().get("snapshot")
    assert isinstance(snap, dict) and isinstance(snap.get("index"), int), r
    assert snap["index"] >= idx, (snap, idx)
    snaps = s.get_json("/admin/snapshots").get("snapshots")
    assert isinstance(snaps, list) and snaps, snaps
    assert all(isinstance(x.get("index"), int) for x in snaps), snaps
    assert snap["index"] in [x["index"] for x in snaps], (snap, snaps)
    # The shape the README documents: the backup each snapshot names, as the catalog has it.
    for x in snaps:
        b = x["backup"]
        assert os.path.exists(b["path"]) and b["size_bytes"] > 0 and b["id"] in b["path"], x
    assert [p for p in (s.data_dir / "snapshots").iterdir() if p.is_file()], "no snapshot file"
    s.restart(sig=signal.SIGKILL)
    assert s.rows("SELECT v FROM t") == [["x"]]


def test_forced_snapshot_after_a_large_transaction(dserver):
    """POST /admin/snapshot right after a 10,000-row transaction (about 10 MiB of WAL,
    which the checkpointer may still be copying) answers promptly with a snapshot that
    covers it, and the server then stops cleanly."""
    s = dserver
    assert_exec_ok(s.execute(["CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)"]))
    body = s.execute(["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000) "
                      "INSERT INTO big(b) SELECT randomblob(1024) FROM c"], raft_index=True)
    idx = body.get("raft_index", body["results"][0].get("raft_index"))
    t0 = time.monotonic()
    try:
        r = s.raw("POST", "/admin/snapshot", timeout=15)
    except OSError as e:
        raise AssertionError("POST /admin/snapshot after a large transaction did not answer within "
                             "%.0fs (%r)" % (deadline_seconds(15), e)) from None
    assert r.status == 200, r
    assert r.json()["snapshot"]["index"] >= idx, (r, idx)
    assert idx <= max(x["index"] for x in s.get_json("/admin/snapshots")["snapshots"])
    print("forced snapshot in %.2fs" % (time.monotonic() - t0))
    assert s.stop() == 0


# ---------------------------------------------------------------------------
# rqlite's /db/backup and /db/load


@pytest.mark.smoke
def test_db_backup_streams_a_sqlite_file(dserver, tmp_path):
    s = dserver
    make_t(s)
    fill(s, 1, 300)
    r = s.raw("GET", "/db/backup")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/octet-stream"), r.headers
    assert r.body[:16] == b"SQLite format 3\x00", r.body[:100]
    plain = tmp_path / "plain.db"
    plain.write_bytes(r.body)
    assert integrity(plain) == [["ok"]]
    assert file_rows(plain, "SELECT id, v FROM t ORDER BY id") == [[i, "row-%d" % i] for i in range(1, 301)]
    for query in ("?compress", "?compress=true"):
        r = s.raw("GET", "/db/backup" + query)
        assert r.status == 200, r
        assert r.body[:2] == b"\x1f\x8b", "not gzip: %r" % r.body[:20]
        z = tmp_path / "z.db"
        z.write_bytes(gzip.decompress(r.body))
        assert integrity(z) == [["ok"]] and dump(z) == dump(plain)


def test_exports_hold_the_users_schema_only(bserver, repo, tmp_path, cairn_bin):
    """GET /db/backup and `cairn restore --out` give a user's file: cairn's own table
    _cairn_meta is left out (and the CLI says so); ?internal and --keep-internal give the
    exact image the server has (issue 15, point 6)."""
    s = bserver
    make_t(s)
    fill(s, 1, 50)
    tables = "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
    assert "_cairn_meta" in [r[0] for r in s.rows(tables)]
    exported = {}
    for query in ("", "?compress"):
        r = s.raw("GET", "/db/backup" + query)
        assert r.status == 200, r
        path = tmp_path / ("export%d.db" % len(exported))
        path.write_bytes(gzip.decompress(r.body) if query else r.body)
        exported[query] = path
        assert file_rows(path, tables) == [["t"]], query
        assert integrity(path) == [["ok"]]
        assert file_rows(path, "SELECT count(*) FROM t") == [[50]]
        assert file_rows(path, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%cairn%'") == [[0]]
        # Nothing of the table is left in the file's bytes either (secure delete).
        assert b"applied_index" not in path.read_bytes(), query
    r = s.raw("GET", "/db/backup?internal")
    whole = tmp_path / "whole.db"
    whole.write_bytes(r.body)
    assert [x[0] for x in file_rows(whole, tables)] == ["_cairn_meta", "t"]
    # No scratch copy is left in the data directory.
    assert [p.name for p in s.data_dir.iterdir() if p.name.startswith("export-")] == []
    # An export loads into a server again, and so does its page-checksummed copy.
    r = s.raw("POST", "/db/load", exported[""].read_bytes(),
              headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert s.rows("SELECT count(*) FROM t") == [[50]]

    bid = backup_sql(s, "full")["backup_id"]
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    out = tmp_path / "restored.db"
    p = subprocess.run([str(cairn_bin), "restore", "--repo", str(repo), "--out", str(out), bid],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p
    assert "_cairn_meta left out" in p.stdout, p.stdout
    assert file_rows(out, tables) == [["t"]] and integrity(out) == [["ok"]]
    out2 = tmp_path / "restored.json.db"
    p = subprocess.run([str(cairn_bin), "restore", "--repo", str(repo), "--out", str(out2), bid,
                        "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["left_out"] == ["_cairn_meta"], p
    kept = cli_restore(cairn_bin, repo, bid, tmp_path / "kept.db", keep_internal=True)
    assert [x[0] for x in file_rows(kept, tables)] == ["_cairn_meta", "t"]
    assert applied_index(kept) > 0


@repo_kinds(smoke=True)
def test_db_load_replaces_the_database(bserver, repo, tmp_path):
    s = bserver
    make_t(s)
    fill(s, 1, 5)
    src = sqlite_file(tmp_path / "src.db", 500)
    r = s.raw("POST", "/db/load", src.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert s.rows("SELECT count(*), max(v) FROM loaded") == [[500, "v99"]]
    assert "no such table" in only_result(s.query("SELECT * FROM t"))["error"]
    assert_exec_ok(s.execute(["INSERT INTO loaded(v) VALUES('new')"]))
    s.restart(sig=signal.SIGKILL)
    assert s.rows("SELECT count(*) FROM loaded") == [[501]]
    # What /db/backup gives back loads again.
    image = s.raw("GET", "/db/backup").body
    assert_exec_ok(s.execute(["DELETE FROM loaded"]))
    r = s.raw("POST", "/db/load", image, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert s.rows("SELECT count(*) FROM loaded") == [[501]]
    # Each load is kept in the repository as a full backup.
    loads = admin_list(s)
    assert [e["type"] for e in loads] == ["full", "full"], loads
    assert repo.backups() == sorted(e["id"] + ".cbk" for e in loads)


def test_db_load_of_a_wal_mode_file(bserver, repo, tmp_path):
    s = bserver
    path = tmp_path / "wal.db"
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE w (x)")
    con.execute("INSERT INTO w VALUES (1), (2)")
    con.close()
    assert not (tmp_path / "wal.db-wal").exists()
    r = s.raw("POST", "/db/load", path.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert s.rows("SELECT x FROM w ORDER BY x") == [[1], [2]]
    assert len(repo.backups()) == 1


# The upload is checked before anything is written to the repository: one case on S3.
@repo_kinds_for("what", ["text", "empty", "truncated", "header-only"], s3=[2])
def test_db_load_of_something_else_is_refused(bserver, repo, tmp_path, what):
    s = bserver
    make_t(s)
    fill(s, 1, 5)
    good = sqlite_file(tmp_path / "good.db", 2000).read_bytes()
    body = {
        "text": b"this is not a database, just some text\n" * 50,
        "empty": b"",
        "truncated": good[:len(good) // 2],
        "header-only": good[:100],
    }[what]
    r = s.raw("POST", "/db/load", body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 400, r
    err = r.json().get("error", "")
    assert err and ("sqlite" in err.lower() or "database" in err.lower()), r
    assert ids(s) == [1, 2, 3, 4, 5]
    assert repo.names() == [], "a refused load left something in the repository"
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES('still')"]))


# ---------------------------------------------------------------------------
# backups while 16 clients write


class Workload:
    """A server written by 16 clients while a full backup, 5 incrementals and a
    differential are taken, and while GET /db/backup streams a copy."""


# The workload checks that an image taken while 16 clients write holds exactly the writes
# acknowledged up to its index: how the image is read, not where it goes. Backups to S3
# under concurrent writers, restored and compared with the acknowledged writes, are
# test_concurrent_backups_while_clients_write[s3] and test_live_restore_while_clients_write[s3].
@pytest.fixture(scope="module", params=[
    "dir", pytest.param("s3", marks=pytest.mark.skip(
        reason="local repository only: the workload checks how an image is taken under 16 "
               "writers, not where it goes; on S3: test_concurrent_backups_while_clients_write"))])
def workload(request, tmp_path_factory, cairnd_bin):
    base = tmp_path_factory.mktemp("workload")
    factory = ServerFactory(base)
    w = Workload()
    w.repo = make_repo(request.param, request, base / "repo", "workload")
    w.base = base
    with w.repo.environ():  # cairnd keeps the environment it starts with
        s = w.server = factory(extra_args=w.repo.server_args())
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
                              "seq INTEGER NOT NULL, pad BLOB)", "CREATE INDEX t_cs ON t(client, seq)"]))
    writers = Writers(s, "t", clients=16).start()
    w.backups = []
    try:
        writers.wait_more(300)
        w.backups.append(backup_sql(s, "full"))
        for k in range(5):
            writers.wait_more(150)
            if k % 3 == 0:
                w.backups.append(backup_sql(s, "incremental", endpoint="/db/request"))
            elif k % 3 == 1:
                e = admin_backup(s, {"type": "incremental"})
                w.backups.append({"backup_id": e["id"], "type": e["type"], "parent_id": e["parent_id"],
                                  "raft_index": e["raft_index"], "pages": e["pages"], "path": e["path"]})
            else:
                w.backups.append(backup_sql(s, "incremental"))
        writers.wait_more(150)
        w.acked_before_stream = writers.acked_now()
        r = s.raw("GET", "/db/backup", timeout=120)
        w.stream = (r.status, r.headers, r.body)
        writers.wait_more(100)
        w.backups.append(backup_sql(s, "differential"))
        writers.wait_more(100)
    finally:
        w.acked = writers.stop()
    w.live = {(c, seq) for c, seq in s.rows("SELECT client, seq FROM t")}
    yield w
    problems = factory.teardown()
    w.repo.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def wserver(workload):
    """The workload's server, named in the test's arguments so that its logs are
    attached to a failure report."""
    return workload.server


def expected_at(w, index):
    return {k for k, i in w.acked.items() if i <= index}


def compare_rows(got, w, b, where):
    want = expected_at(w, b["raft_index"])
    lost = want - got
    future = {k for k in got if k in w.acked and w.acked[k] > b["raft_index"]}
    unknown = {k for k in got if k not in w.acked}
    assert not lost and not future and not unknown, (
        "%s of %s backup %s at index %d: %d acknowledged rows missing (e.g. %r), %d rows written "
        "after it (e.g. %r), %d rows never acknowledged (e.g. %r)"
        % (where, b["type"], b["backup_id"], b["raft_index"], len(lost), sorted(lost)[:5],
           len(future), sorted((k, w.acked[k]) for k in future)[:5], len(unknown), sorted(unknown)[:5]))
    assert got == want


def test_workload_chain_and_live_database(workload, wserver):
    w = workload
    assert w.live == set(w.acked), "the live database differs from the acknowledged writes"
    types = [b["type"] for b in w.backups]
    assert types == ["full"] + ["incremental"] * 5 + ["differential"], types
    full = w.backups[0]
    for prev, b in zip(w.backups[:6], w.backups[1:6]):
        assert b["parent_id"] == prev["backup_id"], (b, prev)
    assert w.backups[6]["parent_id"] == full["backup_id"], w.backups[6]
    indexes = [b["raft_index"] for b in w.backups]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes), indexes
    rows = catalog(wserver)
    assert [r["id"] for r in rows] == [b["backup_id"] for b in w.backups], rows
    # Incrementals and the differential store only what changed, not every page.
    for r in rows[1:]:
        assert 0 < r["pages"] < r["page_count"], r
    assert rows[0]["pages"] == rows[0]["page_count"], rows[0]
    # The differential holds at least what the incrementals since the full one changed.
    assert rows[6]["pages"] >= max(r["pages"] for r in rows[1:6]), rows
    print("%d acknowledged writes (indexes %d..%d); backups (index, pages/page_count): %s" % (
        len(w.acked), min(w.acked.values()), max(w.acked.values()),
        ", ".join("%s %d %d/%d" % (r["type"][:4], r["raft_index"], r["pages"], r["page_count"])
                  for r in rows)))


def test_workload_restored_files_hold_exactly_the_acknowledged_rows(workload, wserver, cairn_bin, tmp_path):
    w = workload
    for n, b in enumerate(w.backups):
        out = cli_restore(cairn_bin, w.repo, b["backup_id"], tmp_path / ("r%d.db" % n),
                          keep_internal=True)
        assert integrity(out) == [["ok"]], b
        got = {(c, seq) for c, seq in file_rows(out, "SELECT client, seq FROM t")}
        compare_rows(got, w, b, "file restore")
        assert applied_index(out) == b["raft_index"], (b, applied_index(out))
        assert file_rows(out, "SELECT count(*) FROM t WHERE length(pad) = 300") == [[len(got)]]


def test_workload_branches_hold_exactly_the_acknowledged_rows(workload, wserver):
    w, s = workload, wserver
    for n, b in enumerate(w.backups):
        name = "w%d" % n
        row = sql_row(s, "RESTORE DATABASE FROM %s TO BRANCH %s" % (sql_quote(b["backup_id"]), sql_quote(name)))
        check_restore_row(row, b["backup_id"], name)
        got = {(c, seq) for c, seq in branch_rows(s, name, "SELECT client, seq FROM t")}
        compare_rows(got, w, b, "branch restore")
        sql_result(s, "DROP BRANCH %s" % sql_quote(name))
    assert status_branches(s) == []
    assert {(c, seq) for c, seq in s.rows("SELECT client, seq FROM t")} == set(w.acked)


def test_workload_db_backup_stream_holds_every_acknowledged_row(workload, wserver, tmp_path):
    w = workload
    status, headers, body = w.stream
    assert status == 200, (status, body[:500])
    path = tmp_path / "stream.db"
    path.write_bytes(body)
    assert integrity(path) == [["ok"]]
    got = {(c, seq) for c, seq in file_rows(path, "SELECT client, seq FROM t")}
    missing = set(w.acked_before_stream) - got
    assert not missing, "%d rows acknowledged before GET /db/backup are missing, e.g. %r" % (
        len(missing), sorted(missing)[:5])
    assert got <= set(w.acked), "rows never acknowledged: %r" % sorted(got - set(w.acked))[:5]
    # A consistent image: a prefix of each client's sequence.
    by_client = {}
    for c, seq in got:
        by_client.setdefault(c, []).append(seq)
    for c, seqs in by_client.items():
        assert sorted(seqs) == list(range(len(seqs))), "client %d: holes in %r" % (c, sorted(seqs)[:50])


# ---------------------------------------------------------------------------
# quiescent equality


def test_quiescent_backup_restores_the_same_pages(bserver, repo, cairn_bin, tmp_path):
    s = bserver
    assert_exec_ok(s.execute([
        "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT, r REAL, b BLOB, n)",
        "CREATE INDEX a_name ON a(name)",
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
        "CREATE VIEW big_a AS SELECT * FROM a WHERE length(b) > 500",
    ]))
    for chunk in range(4):
        assert_exec_ok(s.execute([["INSERT INTO a(name, r, b, n) VALUES(?, ?, randomblob(?), NULL)",
                                   "n\u00e9-%d" % i, i / 7, (i * 37) % 1500]
                                  for i in range(chunk * 500, chunk * 500 + 500)], transaction=True))
    assert_exec_ok(s.execute([["INSERT INTO kv VALUES(?, ?)", "k%04d" % i, i * i] for i in range(800)]))
    # Free pages and rewritten pages too.
    assert_exec_ok(s.execute(["DELETE FROM a WHERE id % 3 = 0", "UPDATE kv SET v = -v WHERE k < 'k0300'"]))
    full = backup_sql(s, "full")
    assert_exec_ok(s.execute(["INSERT INTO kv VALUES('late', 1)", "DELETE FROM a WHERE id < 100"]))
    inc = backup_sql(s, "incremental")

    r = s.raw("GET", "/db/backup?internal")
    assert r.status == 200, r
    live_copy = tmp_path / "live-stream.db"
    live_copy.write_bytes(r.body)
    restored = cli_restore(cairn_bin, repo, inc["backup_id"], tmp_path / "restored.db",
                           keep_internal=True)
    assert integrity(restored) == [["ok"]]
    assert dump(restored) == dump(live_copy)
    assert applied_index(restored) == inc["raft_index"]
    assert_same_pages(restored, live_copy)

    # The database file of the stopped server, page by page.
    assert s.stop() == 0
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("db.sqlite", "db.sqlite-wal"):
        if (s.data_dir / name).exists():
            shutil.copy(s.data_dir / name, stopped / name)
    if (stopped / "db.sqlite-wal").exists() and (stopped / "db.sqlite-wal").stat().st_size > 0:
        con = sqlite3.connect(str(stopped / "db.sqlite"))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    assert dump(restored) == dump(stopped / "db.sqlite")
    assert_same_pages(restored, stopped / "db.sqlite")

    # The full backup alone restores the state before the last changes.
    before = cli_restore(cairn_bin, repo, full["backup_id"], tmp_path / "before.db",
                         keep_internal=True)
    assert file_rows(before, "SELECT count(*) FROM kv WHERE k = 'late'") == [[0]]
    assert file_rows(before, "SELECT count(*) FROM a WHERE id < 100") != [[0]]
    assert applied_index(before) == full["raft_index"]


# ---------------------------------------------------------------------------
# memory: a database larger than the process may hold


BIG_ROWS_PER_TXN = 10000
BIG_TXNS = 16  # ~16 x 10,000 x 1 KiB blobs: about 220 MiB of pages
HEADROOM = 128 << 20  # address space allowed beyond what the server has mapped


def _set_soft_as(pid, soft):
    _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(SANITIZED, reason="address-space limits and peak RSS do not mean much under ASan")
def test_backup_of_a_database_larger_than_allowed_memory(server_factory, repo):
    # Values up to SQLite's own maximum, so that the read below runs into the address
    # space limit rather than cairnd's value size limit (64 MiB by default).
    s = server_factory(extra_args=repo.server_args() + ["--max-value-size", "2147483647"])
    assert_exec_ok(s.execute(["CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)"]))
    fill_sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
                "INSERT INTO big(b) SELECT randomblob(1024) FROM c" % BIG_ROWS_PER_TXN)
    for _ in range(BIG_TXNS):
        r = s.post("/db/execute", [fill_sql])
        assert r.status == 200 and "error" not in r.json()["results"][0], r
    assert s.scalar("SELECT count(*) FROM big") == BIG_ROWS_PER_TXN * BIG_TXNS

    pid = s.pid
    vm = proc_status(pid)
    limit = vm["VmSize"] * 1024 + HEADROOM
    _set_soft_as(pid, limit)
    try:
        with open("/proc/%d/limits" % pid) as f:
            line = [ln for ln in f if ln.startswith("Max address space")][0]
        assert line.split()[3] == str(limit), line
        # The limit bites: the database's content does not fit in what is allowed.
        res = only_result(s.query("SELECT length(group_concat(hex(b))) FROM big"))
        assert "out of memory" in res.get("error", ""), res
        # Peak RSS from now on (clear_refs 5 resets VmHWM to the current RSS).
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        base_rss = proc_status(pid)["VmHWM"]
        t0 = time.monotonic()
        e = admin_backup(s, {"type": "full"}, timeout=300)
        elapsed = time.monotonic() - t0
        # A read-only check of the whole file under the same limit.
        r = s.raw("POST", "/admin/backups/%s/verify" % e["id"], {"restore": False}, timeout=300)
        assert r.status == 200 and r.json()["ok"] is True, r
    finally:
        _set_soft_as(pid, resource.RLIM_INFINITY)
    db_bytes = e["page_count"] * e["page_size"]
    assert db_bytes >= 200 << 20, e
    assert db_bytes > HEADROOM + (64 << 20), "the database would fit in the allowed memory"
    peak = proc_status(pid)["VmHWM"]
    grew = (peak - base_rss) * 1024
    assert grew < 64 << 20, "peak RSS grew by %.1f MiB during the backup of %.0f MiB and its check" % (
        grew / 1048576, db_bytes / 1048576)
    print("backup of %.0f MiB in %.1fs under RLIMIT_AS %.0f MiB (VmSize before %.0f MiB); peak RSS +%.1f MiB"
          % (db_bytes / 1048576, elapsed, limit / 1048576, vm["VmSize"] / 1024, grew / 1048576))
    # Still serving after.
    assert_exec_ok(s.execute(["INSERT INTO big(b) VALUES(x'00')"]))


# ---------------------------------------------------------------------------
# corrupted backup files


def _flip_middle_byte(repo, path):
    name = repo.name_of(path)
    repo.damage(name, repo.size(name) // 2, 1)


@repo_kinds(smoke=True)
def test_corrupted_backup_is_reported_and_not_restored(bserver, repo):
    s = bserver
    assert_exec_ok(s.execute(["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]))
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES(randomblob(3000))"] * 200))
    full = admin_backup(s)
    assert_exec_ok(s.execute(["UPDATE t SET v = randomblob(3000) WHERE id % 2 = 0"]))
    inc = admin_backup(s, {"type": "incremental"})
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES(x'01')"]))
    before = s.rows("SELECT id, hex(v) FROM t ORDER BY id")

    _flip_middle_byte(repo, inc["path"])
    name = os.path.basename(inc["path"])
    r = s.raw("POST", "/admin/backups/%s/verify" % inc["id"], {"restore": False})
    assert r.status == 200, r
    doc = r.json()
    assert doc["id"] == inc["id"] and doc["ok"] is False, doc
    assert isinstance(doc.get("error"), str) and name in doc["error"], doc
    assert admin_entry(s, inc["id"])["verified"] == "failed"
    assert {x["id"]: x["verified"] for x in catalog(s)}[inc["id"]] == "failed"

    msg = sql_error(s, "RESTORE DATABASE FROM %s" % sql_quote(inc["id"]))
    assert inc["id"] in msg or name in msg, msg
    r = s.raw("POST", "/admin/restore", {"backup_id": inc["id"]})
    assert r.status >= 400 and r.json().get("error"), r
    msg = sql_error(s, "RESTORE DATABASE FROM %s TO BRANCH 'c'" % sql_quote(inc["id"]))
    assert status_branches(s) == []
    assert s.rows("SELECT id, hex(v) FROM t ORDER BY id") == before, "a refused restore changed the database"
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES(x'02')"]))

    # A backup whose end is cut off: still listed (with an error naming the file), the
    # others too; it cannot be restored.
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES(x'03')"]))
    cut = admin_backup(s, {"type": "differential"})
    repo.truncate(repo.name_of(cut["path"]), cut["size_bytes"] - 7)
    r = s.raw("GET", "/admin/backups")
    assert r.status == 200, r
    listed = {e["id"]: e for e in r.json()["backups"]}
    assert set(listed) == {full["id"], inc["id"], cut["id"]}, listed
    assert listed[cut["id"]].get("error") and listed[cut["id"]]["path"] == cut["path"], listed[cut["id"]]
    msg = sql_error(s, "RESTORE DATABASE FROM %s TO BRANCH 'cut'" % sql_quote(cut["id"]))
    assert cut["id"] in msg or os.path.basename(cut["path"]) in msg, msg
    assert status_branches(s) == []

    # The full backup is sound; once it is damaged, verifying the incremental names it.
    r = s.raw("POST", "/admin/backups/%s/verify" % full["id"], {"restore": True})
    assert r.status == 200 and r.json()["ok"] is True, r
    _flip_middle_byte(repo, full["path"])
    r = s.raw("POST", "/admin/backups/%s/verify" % full["id"], {})
    assert r.status == 200 and r.json()["ok"] is False, r
    assert os.path.basename(full["path"]) in r.json()["error"], r
