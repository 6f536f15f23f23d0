"""The statement policy and bounded execution (src/policy.c): what user SQL may do, and for
how long, seen from outside a real cairnd.

- Statement text: a NUL byte or an empty statement is a 400 before anything is proposed
  (it used to spin the node at 100% CPU forever).
- The policy: statements whose effect the database file does not carry (temp objects,
  connection PRAGMAs, ATTACH, transaction control, cairn's own tables, load_extension)
  are a 400 naming the statement, and nothing of the request is written.
- Limits: the longest value (--max-value-size), the VM steps of one write statement
  (--write-step-limit, carried in the log entry), the time of a read (--query-timeout,
  ?db_timeout=, ?timeout=), a read whose client goes away, and SIGTERM while something
  long runs (a second SIGTERM exits at once).
"""

import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

from backuputil import backup_sql, cli_restore
from conftest import assert_exec_ok, deadline_seconds

# Never ends (until a limit stops it): as a read and as a write.
ENDLESS_READ = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r) SELECT count(*) FROM r"
ENDLESS_WRITE = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r) INSERT INTO {t} SELECT i FROM r"
POLICY = "refused by cairn's statement policy"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- helpers ------------------------------------------------------------------------


def log_position(s):
    """(Raft last log index, store applied index) from GET /status: any proposed entry
    moves the first, any applied write the second."""
    st = s.get_json("/status")
    return st["raft"]["last_log_index"], st["store"]["applied_index"]


def count(s, t):
    return s.scalar('SELECT count(*) FROM "%s"' % t)


def error_of(r, status=400):
    """The JSON "error" of a response that must have HTTP `status`."""
    assert r.status == status, "%s %s: expected HTTP %d, got %r" % (r.method, r.path, status, r)
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), r
    return body["error"]


def cpu_seconds(pid):
    """User + system CPU time of every thread of process pid (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmHWM in /proc/%d/status" % pid)


def send_request(s, method, path, body=None):
    """Sends one HTTP request on a raw socket and returns the socket unread: the request
    keeps running on the server while the test does something else."""
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, s.http_addr)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    sock = socket.create_connection(("127.0.0.1", s.http_port), timeout=deadline_seconds(10))
    sock.sendall(head.encode() + b"\r\n" + data)
    return sock


def wait_busy(s, since, wait_for, cpu=0.3):
    """Waits until cairnd has used `cpu` more seconds of CPU than `since`: the long
    statement just sent is running."""
    wait_for(lambda: cpu_seconds(s.pid) - since >= cpu, 10, "cairnd to run the long statement")


def query_path(sql, **params):
    return "/db/query?" + urllib.parse.urlencode(dict(params, q=sql))


# ---- fixtures -----------------------------------------------------------------------


@pytest.fixture
def t(shared_server, table):
    """A fresh table with one row on the module's shared server."""
    assert_exec_ok(shared_server.execute(['CREATE TABLE "%s" (a)' % table,
                                          'INSERT INTO "%s" VALUES(0)' % table]))
    return table


# ---- 1. statement text --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/db/execute", "/db/query", "/db/request"])
def test_nul_byte_in_statement_is_refused_and_nothing_is_proposed(shared_server, t, path):
    """A NUL byte in a statement used to spin the node at 100% CPU forever (the splitter
    never advanced past it): now a prompt 400 naming the statement, nothing proposed, and
    the node answers normally afterwards."""
    s = shared_server
    before = log_position(s)
    for body, number in ([["SELECT 1\u0000"], 1],
                         [['INSERT INTO "%s" VALUES(1)' % t, "INSERT INTO \"%s\" VALUES(2)\u0000 x" % t], 2],
                         [[['INSERT INTO "%s" VALUES(?)\u0000' % t, 3]], 1]):
        err = error_of(s.raw("POST", path, body, timeout=5))
        assert "statement %d" % number in err and "NUL byte" in err, err
    assert log_position(s) == before, "a refused request was proposed or applied"
    assert count(s, t) == 1
    # The node is not busy with it: a write and a read answer at once, and that write is
    # exactly one more entry (so the position above would have seen one).
    assert_exec_ok(s.execute('INSERT INTO "%s" VALUES(9)' % t), 1)
    assert log_position(s)[0] == before[0] + 1
    assert s.rows('SELECT a FROM "%s" ORDER BY a' % t) == [[0], [9]]


def test_nul_byte_in_get_query_is_refused(shared_server, t):
    """GET /db/query?q=SELECT%201%00: MHD hands the value over as a C string; the NUL is
    found and refused instead of silently cutting the statement or spinning."""
    s = shared_server
    before = log_position(s)
    for level in ("none", "strong"):
        err = error_of(s.raw("GET", "/db/query?q=SELECT%201%00&level=" + level, timeout=5))
        assert "statement 1" in err and "NUL byte" in err, err
    assert log_position(s) == before
    assert s.scalar("SELECT 41 + 1") == 42


def test_nul_byte_in_a_parameter_and_trailing_comments_are_fine(shared_server, t):
    """What the text checks must not refuse: a NUL byte inside a bound parameter (the
    error message's own advice), and statements ending in blanks, ';' or a comment."""
    s = shared_server
    assert_exec_ok(s.execute([['INSERT INTO "%s" VALUES(?)' % t, "a\u0000b"]]), 1)
    assert s.rows('SELECT hex(a) FROM "%s" WHERE a <> 0' % t) == [["610062"]]
    assert_exec_ok(s.execute(['INSERT INTO "%s" VALUES(1); ' % t, 'INSERT INTO "%s" VALUES(2);;' % t,
                              'INSERT INTO "%s" VALUES(3) -- c' % t,
                              '/* c */ INSERT INTO "%s" VALUES(4)' % t]), 4)
    assert count(s, t) == 6
    body = s.query(["SELECT 1;", "SELECT 2 -- x", "SELECT 3; /* y */"])
    assert [r.get("values") for r in body["results"]] == [[[1]], [[2]], [[3]]], body


@pytest.mark.parametrize("path", ["/db/execute", "/db/query", "/db/request"])
@pytest.mark.parametrize("sql", ["", "   ", ";", " ; ;\n", "-- only a comment",
                                 "/* a comment */", "\t/* c */ ; -- c\n"])
def test_empty_statement_is_refused(shared_server, t, path, sql):
    """A statement that is nothing but blanks, comments or ';' is a 400 ("is empty"),
    also second in a batch after a write, of which nothing is written."""
    s = shared_server
    before = log_position(s)
    err = error_of(s.raw("POST", path, [sql], timeout=5))
    assert "statement 1" in err and "is empty" in err, err
    err = error_of(s.raw("POST", path, ['INSERT INTO "%s" VALUES(1)' % t, sql], timeout=5))
    assert "statement 2" in err and "is empty" in err, err
    assert log_position(s) == before
    assert count(s, t) == 1
    assert_exec_ok(s.execute('INSERT INTO "%s" VALUES(2)' % t), 1)
    assert count(s, t) == 2


# ---- 2. the statement policy --------------------------------------------------------

REFUSED = [
    "CREATE TEMP TABLE x(a)",
    "CREATE TABLE temp.x(a)",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON {t} BEGIN SELECT 1; END",
    "CREATE TEMP VIEW v AS SELECT 1",
    "PRAGMA case_sensitive_like=1",
    "PRAGMA recursive_triggers=1",
    "PRAGMA hard_heap_limit=1000000",
    "PRAGMA soft_heap_limit=1000",
    "PRAGMA schema_version=5",
    "PRAGMA cache_size=10",
    "PRAGMA mmap_size=0",
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA writable_schema=1",
    "ATTACH DATABASE '/tmp/x' AS x",
    "SAVEPOINT a",
    "RELEASE a",
    "BEGIN",
    "COMMIT",
    "INSERT INTO _cairn_meta VALUES('x',1)",
    "CREATE TRIGGER tr AFTER INSERT ON {t} BEGIN UPDATE _cairn_meta SET value=1; END",
    "SELECT load_extension('x')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_policy_refuses_statement_and_writes_nothing(shared_server, t, sql):
    """Each of these has an effect the database file does not carry (so replicas and
    restarts would differ) or touches cairn's own state. Before the policy most of them
    ran; now each is a 400 naming the statement, on every endpoint, and the INSERT before
    it in the same request is not written either. Inserts keep working afterwards (a
    trigger writing _cairn_meta, had it been created, would break every one of them)."""
    s = shared_server
    sql = sql.format(t='"%s"' % t)
    before = log_position(s)
    for path in ("/db/execute", "/db/request", "/db/query"):
        err = error_of(s.raw("POST", path, [sql]))
        assert "statement 1" in err and POLICY in err, (path, err)
        if path != "/db/query":
            err = error_of(s.raw("POST", path, ['INSERT INTO "%s" VALUES(1)' % t, sql]))
            assert "statement 2" in err and POLICY in err, (path, err)
    assert log_position(s) == before, "a refused request was proposed"
    assert count(s, t) == 1
    assert_exec_ok(s.execute('INSERT INTO "%s" VALUES(2)' % t), 1)
    assert s.rows('SELECT a FROM "%s" ORDER BY a' % t) == [[0], [2]]


@pytest.mark.parametrize("level", ["none", "strong"])
@pytest.mark.parametrize("sql", ["PRAGMA cache_size=10", "PRAGMA foreign_keys=ON",
                                 "PRAGMA case_sensitive_like=1", "PRAGMA query_only=0"])
def test_policy_refuses_state_setting_pragma_as_a_read(shared_server, sql, level):
    """A PRAGMA that sets connection state is not a write, so it used to run on a reader
    connection (changing how that connection answers later reads): now a 400."""
    s = shared_server
    err = error_of(s.raw("GET", query_path(sql, level=level)))
    assert "statement 1" in err and POLICY in err, err
    assert s.scalar("PRAGMA foreign_keys") == 0
    assert s.rows("SELECT 'a' LIKE 'A'") == [[1]]


def test_allowed_pragmas_work_and_header_pragmas_replicate(server):
    """PRAGMAs that only read, and the two that write the database header, stay allowed;
    user_version and application_id go through the log and survive a restart."""
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE t (a INTEGER PRIMARY KEY, b)", "CREATE INDEX tb ON t(b)"]))
    assert [r[1] for r in s.rows("PRAGMA table_info(t)")] == ["a", "b"]
    assert s.rows("PRAGMA integrity_check") == [["ok"]]
    assert s.scalar("PRAGMA user_version") == 0
    assert s.scalar("PRAGMA foreign_keys") == 0
    assert "tb" in [r[1] for r in s.rows("PRAGMA index_list(t)")]
    assert_exec_ok(s.execute(["PRAGMA user_version=7", "PRAGMA application_id=5"]), 2)
    assert s.scalar("PRAGMA user_version") == 7
    assert s.scalar("PRAGMA application_id") == 5
    s.restart()
    assert s.scalar("PRAGMA user_version") == 7
    assert s.scalar("PRAGMA application_id") == 5
    assert_exec_ok(s.execute("INSERT INTO t(b) VALUES('x')"), 1)


def test_alter_table_is_not_refused(shared_server, t):
    """ALTER TABLE ... RENAME TO, RENAME COLUMN and DROP COLUMN change the main schema
    only (SQLite's implementation also visits the temp schema, which is empty) and worked
    before the policy: they must not be refused as "writing the temp schema"."""
    s = shared_server
    new = t + "_renamed"
    assert_exec_ok(s.execute(['ALTER TABLE "%s" ADD COLUMN b' % t, 'ALTER TABLE "%s" ADD COLUMN c' % t,
                              'UPDATE "%s" SET b = 1, c = 2' % t]))
    for sql in ('ALTER TABLE "%s" RENAME COLUMN b TO bb' % t,
                'ALTER TABLE "%s" DROP COLUMN c' % t,
                'ALTER TABLE "%s" RENAME TO "%s"' % (t, new)):
        r = s.post("/db/execute", [sql])
        assert r.status == 200 and "error" not in r.json()["results"][0], (sql, r)
    assert s.rows('SELECT * FROM "%s"' % new) == [[0, 1]]
    assert [r[1] for r in s.rows("PRAGMA table_info(\"%s\")" % new)] == ["a", "bb"]


def test_trigger_calling_a_refused_function_is_refused(shared_server, t):
    """A trigger body is only authorized when it fires. A trigger on t calling
    load_extension() must be refused when created (as one naming _cairn_meta is);
    accepted, it makes every later INSERT INTO t fail."""
    s = shared_server
    try:
        r = s.post("/db/execute", ['INSERT INTO "%s" VALUES(1)' % t,
                                   'CREATE TRIGGER "%s_tr" AFTER INSERT ON "%s" BEGIN '
                                   "SELECT load_extension('x'); END" % (t, t)])
        err = error_of(r)
        assert "statement 2" in err and POLICY in err, err
        assert count(s, t) == 1
        assert_exec_ok(s.execute('INSERT INTO "%s" VALUES(2)' % t), 1)
        assert count(s, t) == 2
    finally:
        s.execute('DROP TRIGGER IF EXISTS "%s_tr"' % t)


# ---- 2b. full-text search and other virtual tables -----------------------------------

FTS_DOCS = ["the quick brown fox", "a lazy dog sleeps", "quick thinking saves the day",
            "brown bread and butter", "the fox and the dog"]


def fts_results(s):
    """What a client reads of docs: MATCH with bm25(), highlight(), snippet()."""
    return s.rows("SELECT rowid, highlight(docs, 0, '[', ']'), snippet(docs, 0, '<', '>', '...', 3), "
                  "round(bm25(docs), 6) FROM docs WHERE docs MATCH 'quick OR fox' ORDER BY rank, rowid")


def test_fts5_writes_and_reads_work_also_after_a_restart(server):
    """FTS5 reads PRAGMA data_version for itself (whether its cached index structure is
    stale), which the policy took for the request's own read of node-local state: every
    FTS5 write failed, on the connection that created the table and on a restarted
    node's. They work as in SQLite, queries with MATCH, bm25(), highlight(), snippet()
    included; the user's own PRAGMA data_version, and pragma_data_version, stay refused
    in a write (the value is the node's own)."""
    s = server
    assert_exec_ok(s.execute(["CREATE VIRTUAL TABLE docs USING fts5(body)"] +
                             [["INSERT INTO docs VALUES(?)", d] for d in FTS_DOCS[:3]] +
                             ["CREATE TABLE hits(r INTEGER, h TEXT)",
                              "INSERT INTO hits SELECT rowid, highlight(docs, 0, '[', ']') FROM docs "
                              "WHERE docs MATCH 'quick' ORDER BY rowid"]), 6)
    assert s.rows("SELECT * FROM hits") == [[1, "the [quick] brown fox"], [3, "[quick] thinking saves the day"]]
    for cmd in ("optimize", "rebuild", "integrity-check", "merge"):
        sql = "INSERT INTO docs(docs) VALUES('%s')" % cmd if cmd != "merge" else \
            "INSERT INTO docs(docs, rank) VALUES('merge', 16)"
        assert_exec_ok(s.execute(sql), 1)
    before = fts_results(s)
    assert [r[0] for r in before] == [1, 3], before
    s.restart()
    # A fresh writer connects to the table while it prepares the statement.
    assert fts_results(s) == before
    assert_exec_ok(s.execute([["INSERT INTO docs VALUES(?)", d] for d in FTS_DOCS[3:]] +
                             ["UPDATE docs SET body = 'the quick end' WHERE rowid = 2",
                              "INSERT INTO hits SELECT rowid, snippet(docs, 0, '<', '>', '', 2) FROM docs "
                              "WHERE docs MATCH 'fox' ORDER BY rowid",
                              "PRAGMA table_info(docs)"]), 5)
    assert s.rows("SELECT r FROM hits ORDER BY rowid") == [[1], [3], [1], [5]]
    assert sorted(r[0] for r in fts_results(s)) == [1, 2, 3, 5]
    assert_exec_ok(s.execute("INSERT INTO docs(docs) VALUES('integrity-check')"), 1)
    for sql in ("PRAGMA data_version", "PRAGMA main.data_version", "/* */ PRAGMA data_version",
                "INSERT INTO hits(r) SELECT * FROM pragma_data_version",
                "INSERT INTO hits(h) SELECT fts5_source_id()"):
        pos = log_position(s)
        err = error_of(s.post("/db/execute", [sql]))
        assert POLICY in err and "differs from node to node" in err, (sql, err)
        assert log_position(s) == pos, sql
    # Refused by the writer itself (the view is new to the check before it), in full words.
    res = s.execute(["CREATE VIEW dv AS SELECT * FROM pragma_data_version",
                     "INSERT INTO hits(r) SELECT * FROM dv"])["results"]
    assert res[1]["error"].endswith("a request that writes may not read it, or the replicas would differ"), res
    # A request that only reads may.
    assert s.scalar("PRAGMA data_version") >= 1


def test_inconsistent_virtual_table_fails_its_statement_not_the_node(server):
    """A contentless FTS5 table told to delete a row twice finds its index inconsistent
    and answers SQLITE_CORRUPT_VTAB, from the same rows on every node: taken for damage
    of the node's own file, the entry was retried for ever and the node (every node of
    a cluster) applied nothing more. It is the statement's error, said in words; the
    request's other statements, later writes and the rebuild go on."""
    s = server
    r = s.execute(["CREATE VIRTUAL TABLE c USING fts5(a, content='')",
                   "CREATE TABLE after(x)",
                   "INSERT INTO c(rowid, a) VALUES(1, 'alpha')",
                   "INSERT INTO c(c, rowid, a) VALUES('delete', 1, 'alpha')",
                   "INSERT INTO c(c, rowid, a) VALUES('delete', 1, 'alpha')",
                   "INSERT INTO after VALUES(1)"])
    res = r["results"]
    assert all("error" not in x for x in res[:4] + res[5:]), res
    assert "virtual table found its own data inconsistent" in res[4]["error"], res
    pos = log_position(s)
    assert_exec_ok(s.execute("INSERT INTO after VALUES(2)"), 1)
    assert log_position(s)[1] > pos[1]
    assert s.rows("SELECT x FROM after ORDER BY x") == [[1], [2]]
    assert_exec_ok(s.execute(["INSERT INTO c(c) VALUES('delete-all')",
                              "INSERT INTO c(rowid, a) VALUES(2, 'alpha')",
                              "INSERT INTO after SELECT rowid FROM c WHERE c MATCH 'alpha'"]), 3)
    assert s.rows("SELECT x FROM after ORDER BY x") == [[1], [2], [2]]
    assert s.get_json("/status")["raft"]["applied_index"] == log_position(s)[1]


def test_fts5_table_survives_backup_and_restore(server_factory, tmp_path, cairn_bin):
    """A database with an FTS5 table, backed up with BACKUP DATABASE (a full backup, then
    an incremental one after more writes and an optimize) and restored with cairn
    restore, passes quick_check and the FTS5 integrity-check, and answers the same MATCH
    query."""
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", str(repo)])
    assert_exec_ok(s.execute(["CREATE VIRTUAL TABLE docs USING fts5(body)"] +
                             [["INSERT INTO docs VALUES(?)", d] for d in FTS_DOCS * 40]))
    assert_exec_ok(s.execute("DELETE FROM docs WHERE rowid % 7 = 0"))
    backup_sql(s, "full")
    assert_exec_ok(s.execute([["INSERT INTO docs VALUES(?)", d + " again"] for d in FTS_DOCS * 10] +
                             ["INSERT INTO docs(docs) VALUES('optimize')"]))
    want = s.rows("SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH 'quick' ORDER BY rank, rowid")
    row = backup_sql(s, "incremental")
    out = cli_restore(cairn_bin, repo, row["backup_id"], tmp_path / "restored.db")
    con = sqlite3.connect(str(out))
    try:
        assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        con.execute("INSERT INTO docs(docs) VALUES('integrity-check')")
        got = [list(r) for r in con.execute(
            "SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH 'quick' ORDER BY rank, rowid")]
    finally:
        con.close()
    assert got == want and len(want) > 60, (len(got), len(want))


def test_a_loaded_dbstat_table_is_not_read_by_writes(server, tmp_path):
    """CREATE VIRTUAL TABLE ... USING dbstat is refused, but a file loaded with POST
    /db/load may hold one under a name of its own: writes read it as an ordinary table
    and stored the node's own page layout (unused bytes, offsets; nodes with and without
    page checksums differ). Now a write that reads it, directly or through a view,
    fails, the same on every node; a read answers; the table can be dropped."""
    s = server
    src = tmp_path / "src.db"
    con = sqlite3.connect(str(src))
    con.executescript("CREATE TABLE t(x); CREATE VIRTUAL TABLE pages USING dbstat; "
                      "CREATE TABLE big(b); INSERT INTO big VALUES(randomblob(10000));")
    con.close()
    r = s.raw("POST", "/db/load", src.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    res = s.execute(["INSERT INTO t SELECT sum(unused) FROM pages",
                     "CREATE VIEW pv AS SELECT * FROM pages",
                     "INSERT INTO t SELECT count(*) FROM pv",
                     "INSERT INTO t VALUES(1)"])["results"]
    for k in (0, 2):
        assert POLICY in res[k].get("error", "") and "dbstat" in res[k]["error"], res
    assert "error" not in res[1] and "error" not in res[3], res
    assert s.rows("SELECT x FROM t") == [[1]]
    assert s.scalar("SELECT count(*) FROM pages") > 0
    assert_exec_ok(s.execute(["DROP VIEW pv", "DROP TABLE pages", "INSERT INTO t VALUES(2)"]), 3)
    assert s.rows("SELECT x FROM t") == [[1], [2]]


# ---- 3. value size ------------------------------------------------------------------


def test_huge_values_are_refused_without_allocating_them(server):
    """SQLite's own limit is 1e9 bytes: randomblob(500000000) used to be allocated (and
    then encoded as JSON). With the 64 MiB default it is a per-statement error, and the
    process never grows anywhere near that size."""
    s = server
    for sql in ("SELECT randomblob(500000000)", "SELECT zeroblob(200000000)"):
        for level in ("none", "strong"):
            body = s.query(sql, level=level)
            assert "string or blob too big" in body["results"][0].get("error", ""), (sql, level, body)
    assert_exec_ok(s.execute("CREATE TABLE t (v)"))
    body = s.execute(["INSERT INTO t VALUES(randomblob(300000000))", "INSERT INTO t VALUES(1)"])
    assert "string or blob too big" in body["results"][0].get("error", ""), body
    assert "error" not in body["results"][1], body
    assert s.scalar("SELECT count(*) FROM t") == 1
    assert s.running()
    assert peak_rss_mib(s.pid) < 500, "cairnd's peak RSS reached %.0f MiB" % peak_rss_mib(s.pid)


def test_like_and_glob_that_would_run_for_minutes_are_refused_at_once(server):
    """SQLite's LIKE and GLOB take time in proportion to the product of the value's and
    the pattern's lengths: 16 s for this pair, as one VM instruction that no limit stops,
    in a write on every node and at every replay. Refused at once, saying why, in a
    write and in a read; the node goes on; a short pattern on a large value matches."""
    s = server
    assert_exec_ok(s.execute("CREATE TABLE t (v)"))
    value = "printf('%.*c', 400000, 'a')"
    pattern = "'%' || printf('%.*c', 48000, 'a') || 'b'"
    t0 = time.monotonic()
    body = s.execute(["INSERT INTO t SELECT 1 WHERE %s LIKE %s" % (value, pattern),
                      "INSERT INTO t VALUES(2)"])
    err = body["results"][0].get("error", "")
    assert "LIKE of a 400000-byte value with a 48002-byte pattern" in err, body
    assert "error" not in body["results"][1], body
    body = s.query("SELECT %s GLOB %s" % (value, pattern.replace("'%'", "'*'")))
    assert "GLOB of a 400000-byte value" in body["results"][0].get("error", ""), body
    assert time.monotonic() - t0 < 10
    assert s.rows("SELECT v FROM t") == [[2]]
    assert s.rows("SELECT printf('%.*c', 2000000, 'a') || 'foo' LIKE '%FOO%'") == [[1]]


def test_max_value_size_flag(server_factory):
    """--max-value-size 1000: a 2000-byte blob is refused in a write and in a read, a
    500-byte one is fine."""
    s = server_factory(["--max-value-size", "1000"])
    assert_exec_ok(s.execute("CREATE TABLE t (v)"))
    body = s.execute(["INSERT INTO t VALUES(randomblob(2000))", "INSERT INTO t VALUES(randomblob(500))"])
    assert "string or blob too big" in body["results"][0].get("error", ""), body
    assert "error" not in body["results"][1], body
    assert s.rows("SELECT length(v) FROM t") == [[500]]
    body = s.query(["SELECT length(randomblob(2000))", "SELECT length(randomblob(500))"])
    assert "string or blob too big" in body["results"][0].get("error", ""), body
    assert body["results"][1].get("values") == [[500]], body


# ---- 4. bounded writes --------------------------------------------------------------


def test_write_step_limit_fails_one_statement_the_same_way_on_replay(server_factory):
    """An endless write used to block the node's apply loop forever (and be replayed
    forever after a restart). Under --write-step-limit it fails alone, rolled back, and
    the limit travels in the log entry: a replay with a different flag gives the same
    outcome, promptly."""
    s = server_factory(["--write-step-limit", "10000000"])
    assert_exec_ok(s.execute("CREATE TABLE t (a)"))
    r = s.raw("POST", "/db/execute", [ENDLESS_WRITE.format(t="t"), "INSERT INTO t VALUES(5)"], timeout=20)
    assert r.status == 200, r
    res = r.json()["results"]
    assert len(res) == 2, res
    assert "write step limit" in res[0].get("error", "") and "--write-step-limit" in res[0]["error"], res
    assert "error" not in res[1], res
    assert s.rows("SELECT a FROM t") == [[5]]

    s.restart()
    assert s.rows("SELECT a FROM t") == [[5]]

    # Rebuild the database from the log alone, with a flag that would let the endless
    # write run for minutes: the entry's own limit holds.
    s.stop()
    for p in s.data_dir.iterdir():
        if p.name.startswith("db.sqlite"):
            p.unlink()
    s.extra_args = ["--write-step-limit", "5000000000"]
    s.start()
    assert s.rows("SELECT a FROM t") == [[5]]
    assert s.rows("PRAGMA integrity_check") == [["ok"]]


# ---- 5. bounded reads ---------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"db_timeout": "1s"},
    {"db_timeout": "1s", "level": "strong"},
    {"db_timeout": "500ms", "level": "linearizable"},
    {"timeout": "0.5"},
    {"timeout": "2m", "db_timeout": "300ms"},  # db_timeout wins
], ids=lambda p: "&".join("%s=%s" % kv for kv in p.items()))
def test_read_time_limit_per_request(shared_server, params):
    """An endless read used to hold its reader (and, at level=strong, the log) forever.
    With ?db_timeout= (or rqlite's ?timeout=) it answers 200 with a per-statement error."""
    s = shared_server
    t0 = time.monotonic()
    r = s.raw("GET", query_path(ENDLESS_READ, **params), timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    err = r.json()["results"][0].get("error", "")
    assert "time limit" in err, r
    assert elapsed < deadline_seconds(5), "the read took %.1fs" % elapsed
    assert s.scalar("SELECT 1") == 1


@pytest.mark.parametrize("param", ["db_timeout=abc", "db_timeout=0", "db_timeout=-1s", "timeout=abc",
                                   "db_timeout=", "db_timeout=1x", "db_timeout=25h"])
@pytest.mark.parametrize("path", ["/db/query?q=SELECT%201&", "/db/execute?", "/db/request?"])
def test_malformed_timeout_is_400(shared_server, t, path, param):
    """A request time limit that is not a duration from 1 ms to 24 h is a 400 naming the
    parameter (it was ignored before), and a write carrying it is not proposed."""
    s = shared_server
    before = log_position(s)
    body = None if path.startswith("/db/query") else ['INSERT INTO "%s" VALUES(1)' % t]
    err = error_of(s.raw("GET" if body is None else "POST", path + param, body))
    assert param.split("=")[0] in err, err
    assert log_position(s) == before
    assert count(s, t) == 1


def test_query_timeout_flag(server_factory):
    """cairnd --query-timeout 1s bounds a read that sets no limit of its own."""
    s = server_factory(["--query-timeout", "1s"])
    t0 = time.monotonic()
    r = s.raw("GET", query_path(ENDLESS_READ), timeout=15)
    assert r.status == 200, r
    assert "time limit" in r.json()["results"][0].get("error", ""), r
    assert time.monotonic() - t0 < deadline_seconds(5)
    # A request may still ask for less.
    r = s.raw("GET", query_path(ENDLESS_READ, db_timeout="200ms"), timeout=15)
    assert "0.2" in r.json()["results"][0].get("error", ""), r


def test_strong_read_never_enters_the_log(server):
    """A strong read used to be proposed as SQL: an endless one was run by every node on
    every replay, so the node could never start again. Now only a barrier enters the log:
    the read's text is nowhere in the Raft log, and a restart is prompt."""
    s = server
    marker = "strong_read_marker_7f3a"
    sql = ENDLESS_READ.replace("count(*)", "count(*) AS " + marker)
    r = s.raw("GET", query_path(sql, level="strong", db_timeout="500ms"), timeout=15)
    assert r.status == 200, r
    assert "time limit" in r.json()["results"][0].get("error", ""), r
    raft_dir = pathlib.Path(s.get_json("/status")["raft"]["dir"])
    for p in raft_dir.iterdir():
        assert marker.encode() not in p.read_bytes(), "the strong read's SQL is in %s" % p
    s.restart()
    assert s.scalar("SELECT 1") == 1


# ---- 6. a read whose client goes away -----------------------------------------------


def test_read_stops_when_its_client_goes_away(server, wait_for):
    """An abandoned endless read used to keep a core busy until its time limit (or
    forever). Now the node notices the closed connection and stops it."""
    s = server
    c0 = cpu_seconds(s.pid)
    sock = send_request(s, "GET", query_path(ENDLESS_READ, db_timeout="60s"))
    wait_busy(s, c0, wait_for)  # the read runs: ~1 s of CPU per second
    sock.close()

    def idle():
        a = cpu_seconds(s.pid)
        time.sleep(0.5)  # a measuring interval, not a synchronisation
        return cpu_seconds(s.pid) - a < 0.2

    wait_for(idle, 3, "cairnd to stop the read whose client closed its connection")
    assert s.scalar("SELECT 1") == 1


# ---- 7. signals ---------------------------------------------------------------------


def test_sigterm_interrupts_an_endless_read(server, wait_for):
    """SIGTERM used to wait for running statements: with an endless read the node never
    stopped. Now it exits 0 within a few seconds."""
    s = server
    c0 = cpu_seconds(s.pid)
    sock = send_request(s, "GET", query_path(ENDLESS_READ, db_timeout="60s"))
    wait_busy(s, c0, wait_for)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit(5) == 0, s.stderr_tail()
    sock.close()


def test_sigterm_interrupts_a_long_write_which_is_applied_again(server_factory, wait_for):
    """SIGTERM during a long write: the node exits 0 within a few seconds, the write is
    rolled back whole, and the next start applies the entry again (under the entry's own
    step limit) to the same outcome, leaving a consistent database."""
    s = server_factory(["--write-step-limit", "100000000"], ready_timeout=60)
    assert_exec_ok(s.execute(["CREATE TABLE t (a)", "INSERT INTO t VALUES(1)"]))
    c0 = cpu_seconds(s.pid)
    sock = send_request(s, "POST", "/db/execute", [ENDLESS_WRITE.format(t="t")])
    wait_busy(s, c0, wait_for)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit(5) == 0, s.stderr_tail()
    sock.close()
    s.start()  # replays the interrupted entry to its step limit
    assert s.rows("SELECT a FROM t") == [[1]]
    assert s.rows("PRAGMA integrity_check") == [["ok"]]
    assert_exec_ok(s.execute("INSERT INTO t VALUES(2)"), 1)
    assert s.scalar("SELECT count(*) FROM t") == 2


def test_second_sigterm_exits_at_once(server_factory, wait_for):
    """While the node stops, a second SIGTERM ends the process at once. The stop is held
    here by the sort of 3,000,000 rows: SQLite sorts inside one VM instruction, which no
    progress handler interrupts (every other long operation is interrupted at once, so a
    single SIGTERM would stop the node before a second could be sent)."""
    s = server_factory(extra_args=["--write-step-limit", "1000000000"])
    assert_exec_ok(s.execute([
        "CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES(1)",
        "CREATE TABLE filler (c TEXT)",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 3000000) "
        "INSERT INTO filler SELECT printf('%032x', (i * 40503) % 4294967296) FROM r"]))
    c0 = cpu_seconds(s.pid)
    sock = send_request(s, "POST", "/db/query",
                        ["SELECT count(*) FROM (SELECT c FROM filler ORDER BY c LIMIT -1 "
                         "OFFSET 2999999)"])
    wait_busy(s, c0, wait_for, cpu=0.8)  # past filling the sorter: sorting
    s.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM: stopping" in s.stderr_text() or s.proc.poll() is not None, 5,
             "cairnd to log that it stops")
    assert s.proc.poll() is None, "precondition: cairnd stopped before a second SIGTERM could be sent"
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait_exit(2)
    assert rc != 0, "status %s after the second SIGTERM" % rc
    assert time.monotonic() - t0 < deadline_seconds(2)
    assert "second SIGTERM" in s.stderr_text(), s.stderr_tail()
    sock.close()
    s.start()  # as after a crash: the data are safe
    assert s.rows("SELECT a FROM t") == [[1]]
    assert s.scalar("SELECT count(*) FROM filler") == 3000000


# ---- 8. flags -----------------------------------------------------------------------


def test_help_mentions_the_limits(cairnd_bin):
    """--help documents the three new limit flags (unknown options before)."""
    r = subprocess.run([str(cairnd_bin), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    for flag in ("--write-step-limit", "--max-value-size", "--query-timeout"):
        assert flag in r.stdout, (flag, r.stdout)


@pytest.mark.parametrize("args", [
    ["--query-timeout", "0"], ["--query-timeout", "abc"], ["--query-timeout", "-1s"],
    ["--query-timeout", "25h"], ["--write-step-limit", "-1"], ["--write-step-limit", "abc"],
    ["--write-step-limit", "0"], ["--max-value-size", "0"], ["--max-value-size", "3000000000"],
], ids=" ".join)
def test_bad_limit_flags_are_usage_errors(cairnd_bin, free_port, tmp_path, args):
    """A bad limit is a usage error (status 2, a message naming the flag) before the
    node touches its data directory."""
    data = tmp_path / "data"
    argv = [str(cairnd_bin), "--data-dir", str(data), "--http-addr", "127.0.0.1:%d" % free_port(),
            "--raft-addr", "127.0.0.1:%d" % free_port()] + args
    r = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (args, r)
    assert args[0] in r.stderr, r.stderr
    assert not data.exists()
