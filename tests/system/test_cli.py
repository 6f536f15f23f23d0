"""The `cairn` command against a real cairnd: `cairn sql`, the shell fed through a pipe,
the usage texts, and once the interactive shell under tmux.

Servers come from conftest.py (shared_server for most tests, a fresh `server` where the
whole schema is compared). The CLI runs with HOME in the test's tmp dir and without
CAIRN_HOST, so the developer's own settings never leak in.
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import unicodedata
import uuid

import pytest


@pytest.fixture
def cli(cairn_bin, tmp_path, deadline):
    """run(*args, input=None, env=None) -> CompletedProcess of the cairn command (text)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(*args, input=None, env=None, timeout=30):
        e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
        e["HOME"] = str(home)
        e.update(env or {})
        return subprocess.run(
            [str(cairn_bin)] + [str(a) for a in args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=e,
            timeout=deadline(timeout),
        )

    return run


def display_width(s):
    """Terminal columns of s: East Asian wide/fullwidth count 2, combining marks 0."""
    w = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def assert_ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    assert r.stderr == "", r.stderr


def server_error(server, sql):
    """The message cairnd itself gives for sql, to compare with what the CLI prints."""
    res = server.request([sql])["results"][0]
    assert "error" in res, res
    return res["error"]


# ---------------------------------------------------------------------------
# usage, version, bad command lines (no server needed)

HELP_CASES = {
    "top --help": (["--help"], ["--host", "--help", "--version", "--level", "--mode", "sql", "help"]),
    "top -h": (["-h"], ["--host", "--version", "sql"]),
    "help": (["help"], ["--host", "--help", "--version", "--level", "--mode", "sql"]),
    "help shell": (["help", "shell"], ["--host", "--level", "--mode"]),
    "shell --help": (["shell", "--help"], ["--host", "--level", "--mode", "--help", "--version"]),
    "sql --help": (["sql", "--help"], ["--host", "--json", "--level", "--mode", "--timer", "--help"]),
    "sql -h": (["sql", "-h"], ["--host", "--json", "--level"]),
    "help sql": (["help", "sql"], ["--host", "--json", "--level", "--mode", "--timer", "--help"]),
    "help help": (["help", "--help"], ["usage: cairn help"]),
    "--help sql": (["--help", "sql"], ["usage: cairn sql", "--json"]),
}


@pytest.mark.smoke
@pytest.mark.parametrize("case", sorted(HELP_CASES))
def test_help_documents_every_flag(cli, case):
    args, needles = HELP_CASES[case]
    r = cli(*args)
    assert_ok(r)
    assert r.stdout.startswith("usage: cairn"), r.stdout
    for n in needles:
        assert n in r.stdout, "%r missing from the output of cairn %s:\n%s" % (n, " ".join(args), r.stdout)


def test_sql_help_lists_levels_and_exit_codes(cli):
    r = cli("sql", "--help")
    assert_ok(r)
    for word in ("none", "weak", "linearizable", "strong", "auto", "exit status"):
        assert word in r.stdout, r.stdout


def test_version(cli):
    for flag in ("--version", "-V"):
        r = cli(flag)
        assert_ok(r)
        assert re.fullmatch(r"cairn \d+\.\d+\.\d+\n", r.stdout), r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus"], "unknown command 'bogus'"),
        (["help", "bogus"], "unknown command 'bogus'"),
        (["--bogus"], "unknown option '--bogus'"),
        (["sql", "--bogus", "SELECT 1"], "unknown option '--bogus'"),
        (["sql", "-x", "SELECT 1"], "unknown option '-x'"),
        (["sql"], "no SQL statement given"),
        (["sql", "--level", "bogus", "SELECT 1"], "invalid level 'bogus'"),
        (["sql", "--mode", "yaml", "SELECT 1"], "invalid mode 'yaml'"),
        (["sql", "--json=yes", "SELECT 1"], "takes no value"),
        (["sql", "SELECT 1", "--host"], "needs a value"),
        (["sql", '["SELECT ?", 1'], "not valid JSON"),
        (["--level", "bogus"], "invalid level 'bogus'"),
        (["--host"], "needs a value"),
    ],
)
def test_bad_command_line_exits_2_with_usage(cli, args, message):
    r = cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert "usage: cairn" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout


# ---------------------------------------------------------------------------
# cairn sql


@pytest.mark.smoke
def test_sql_prints_an_aligned_table(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT)" % table])
    s.execute([
        ["INSERT INTO %s VALUES(?, ?, ?, ?)" % table, 1, "fiona", 3.5, None],
        ["INSERT INTO %s VALUES(?, ?, ?, ?)" % table, 2, "sinéad", 10.25, "x"],
    ])
    r = cli("sql", "--host", s.url, "SELECT * FROM %s ORDER BY id" % table)
    assert_ok(r)
    # Numbers right-aligned, text left-aligned, NULL spelled out; "sinéad" is 6 columns
    # wide though 7 bytes long.
    assert r.stdout == (
        "+----+--------+-------+------+\n"
        "| id | name   | score | note |\n"
        "+----+--------+-------+------+\n"
        "|  1 | fiona  |   3.5 | NULL |\n"
        "|  2 | sinéad | 10.25 | x    |\n"
        "+----+--------+-------+------+\n"
    ), r.stdout


def test_sql_table_is_aligned_for_wide_characters(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (city TEXT, n INTEGER)" % table])
    cities = ["東京", "Zürich", "a", "mañana", "Ελλάδα", "😀x"]
    s.execute([["INSERT INTO %s VALUES(?, ?)" % table, c, i] for i, c in enumerate(cities)])
    r = cli("sql", "--host", s.url, "SELECT city, n FROM %s ORDER BY n" % table)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert len(lines) == 4 + len(cities), r.stdout
    widths = {display_width(line) for line in lines}
    assert len(widths) == 1, "lines of different widths:\n%s" % r.stdout
    for c in cities:
        assert any(("| %s " % c) in line for line in lines), (c, r.stdout)


def test_sql_shows_values_as_the_server_gives_them(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (b BLOB, r REAL, i INTEGER, t TEXT)" % table])
    s.execute(["INSERT INTO %s VALUES(x'00ff10', 0.1, -9223372036854775808, 'line1\nline2')" % table])
    blob = s.rows("SELECT b FROM %s" % table)[0][0]
    r = cli("sql", "--host", s.url, "SELECT b, r, i, t FROM %s" % table)
    assert_ok(r)
    row = r.stdout.splitlines()[3]
    # The blob is the server's base64 text; 0.1 is not printed as 0.1000000000000000055;
    # a newline inside a value is escaped so the borders hold.
    assert row == "| %s | 0.1 | -9223372036854775808 | line1\\nline2 |" % blob, r.stdout


def test_sql_reals_stay_reals(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (r REAL, i INTEGER)" % table, "INSERT INTO %s VALUES (2.0, 2)" % table])
    sql = "SELECT r, i, r * 3 AS x FROM %s" % table
    r = cli("sql", "--host", s.url, sql)
    assert_ok(r)
    # JSON writes the real 2.0 as 2; the column's type says it is a real.
    assert r.stdout.splitlines()[3] == "| 2.0 | 2 | 6.0 |", r.stdout
    r = cli("sql", "--host", s.url, "--mode", "csv", sql)
    assert_ok(r)
    assert r.stdout == "r,i,x\n2.0,2,6.0\n", r.stdout


def test_sql_empty_result_prints_the_header(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (a INTEGER, bb TEXT)" % table])
    r = cli("sql", "--host", s.url, "SELECT a, bb FROM %s" % table)
    assert_ok(r)
    assert r.stdout == "+---+----+\n| a | bb |\n+---+----+\n", r.stdout


def test_sql_writes_report_rows_affected(shared_server, table, cli):
    s = shared_server
    r = cli("sql", "--host", s.url,
            "CREATE TABLE %s (v INTEGER)" % table,
            "INSERT INTO %s VALUES (1), (2), (3)" % table,
            "UPDATE %s SET v = v + 10 WHERE v >= 2" % table,
            "DELETE FROM %s WHERE v = 1" % table,
            "DELETE FROM %s WHERE v = 1" % table)
    assert_ok(r)
    assert r.stdout == (
        "0 rows affected\n3 rows affected\n2 rows affected\n1 row affected\n0 rows affected\n"
    ), r.stdout
    assert s.rows("SELECT v FROM %s ORDER BY v" % table) == [[12], [13]]


def test_sql_several_statements_run_in_order(shared_server, table, cli):
    s = shared_server
    r = cli("sql", "--host", s.url,
            "CREATE TABLE %s (v TEXT)" % table,
            "INSERT INTO %s VALUES ('one')" % table,
            "SELECT v FROM %s" % table,
            "INSERT INTO %s VALUES ('two')" % table,
            "SELECT count(*) AS n FROM %s" % table)
    assert_ok(r)
    assert r.stdout == (
        "0 rows affected\n1 row affected\n"
        "+-----+\n| v   |\n+-----+\n| one |\n+-----+\n"
        "1 row affected\n"
        "+---+\n| n |\n+---+\n| 2 |\n+---+\n"
    ), r.stdout


def test_sql_json_prints_the_server_response_as_one_document(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT)" % table])
    s.execute(["INSERT INTO %s(name) VALUES ('fiona'), ('東京')" % table])
    r = cli("sql", "--host", s.url, "--json",
            "SELECT id, name FROM %s ORDER BY id" % table,
            "INSERT INTO %s(name) VALUES ('x')" % table)
    assert_ok(r)
    doc = json.loads(r.stdout)  # one document, nothing around it
    res = doc["results"]
    assert len(res) == 2, doc
    assert res[0]["columns"] == ["id", "name"], doc
    assert res[0]["values"] == [[1, "fiona"], [2, "東京"]], doc
    assert res[1]["rows_affected"] == 1 and res[1]["last_insert_id"] == 3, doc
    assert isinstance(doc.get("time"), float), doc  # the CLI asks for ?timings


def test_sql_error_prints_the_server_message_and_exits_1(shared_server, cli):
    s = shared_server
    sql = "SELECT * FROM no_such_table_for_cli"
    msg = server_error(s, sql)
    r = cli("sql", "--host", s.url, sql)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr == "error: %s\n" % msg, r.stderr
    assert r.stdout == "", r.stdout

    r = cli("sql", "--host", s.url, "SELEC 1")
    assert r.returncode == 1
    assert r.stderr == "error: %s\n" % server_error(s, "SELEC 1"), r.stderr


def test_sql_error_in_one_statement_still_prints_the_others(shared_server, cli):
    s = shared_server
    r = cli("sql", "--host", s.url, "SELECT 1 AS a", "SELECT nope_column", "SELECT 2 AS b")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "+---+\n| a |\n+---+\n| 1 |\n+---+\n+---+\n| b |\n+---+\n| 2 |\n+---+\n", r.stdout
    assert r.stderr == "error: %s\n" % server_error(s, "SELECT nope_column"), r.stderr


def test_sql_json_error_still_prints_the_document(shared_server, cli):
    s = shared_server
    r = cli("sql", "--host", s.url, "--json", "SELECT nope_column")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    msg = doc["results"][0]["error"]
    assert r.stderr == "error: %s\n" % msg, r.stderr


def test_sql_unreachable_server(cli, free_port):
    port = free_port()
    r = cli("sql", "--host", "http://127.0.0.1:%d" % port, "SELECT 1", timeout=20)
    assert r.returncode == 1, (r.stdout, r.stderr)
    prefix = "error: cannot reach cairnd at http://127.0.0.1:%d: " % port
    assert r.stderr.startswith(prefix), r.stderr
    assert len(r.stderr) > len(prefix) + 5 and r.stderr.count("\n") == 1, r.stderr  # curl's reason
    assert r.stdout == ""


@pytest.mark.parametrize("host", ["", "/", "http://", "http:///"])
@pytest.mark.parametrize("command", [["sql", "SELECT 1"], ["node", "list"], ["backup", "list"], []])
def test_a_host_without_a_host_name_is_a_usage_error(cli, host, command):
    r = cli("--host", host, *command)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "invalid host URL '%s': no host" % host in r.stderr, r.stderr
    assert r.stdout == "", r.stdout


def test_sql_host_forms_and_environment(shared_server, cli):
    s = shared_server
    for host in (s.url, s.url + "/", s.http_addr):
        r = cli("sql", "--host", host, "SELECT 7 AS x")
        assert_ok(r)
        assert "| 7 |" in r.stdout, (host, r.stdout)
    r = cli("sql", "SELECT 8 AS x", env={"CAIRN_HOST": s.url})
    assert_ok(r)
    assert "| 8 |" in r.stdout
    # The global form, before the command, works too; --host after it wins.
    r = cli("--host", s.url, "sql", "SELECT 9 AS x")
    assert_ok(r)
    assert "| 9 |" in r.stdout
    r = cli("--host", "127.0.0.1:1", "sql", "--host=" + s.url, "SELECT 10 AS x")
    assert_ok(r)
    assert "| 10 |" in r.stdout


@pytest.mark.parametrize("level", ["none", "weak", "linearizable", "strong", "auto"])
def test_sql_levels(shared_server, table, cli, level):
    s = shared_server
    s.execute(["CREATE TABLE %s (v INTEGER)" % table, "INSERT INTO %s VALUES (5)" % table])
    r = cli("sql", "--host", s.url, "--level", level, "SELECT v FROM %s" % table)
    assert_ok(r)
    assert "| 5 |" in r.stdout, r.stdout


def test_sql_parameterised_statement(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (a INTEGER, b TEXT)" % table])
    r = cli("sql", "--host", s.url,
            json.dumps(["INSERT INTO %s VALUES(?, ?)" % table, 4, "it's; \"quoted\""]),
            json.dumps(["SELECT b FROM %s WHERE a = ?" % table, 4]))
    assert_ok(r)
    assert s.rows("SELECT a, b FROM %s" % table) == [[4, "it's; \"quoted\""]]
    assert "| it's; \"quoted\" |" in r.stdout, r.stdout


def test_sql_statement_starting_with_a_dash(shared_server, cli):
    r = cli("sql", "--host", shared_server.url, "--", "-- a comment\nSELECT 3 AS c")
    assert_ok(r)
    assert "| 3 |" in r.stdout, r.stdout


def test_sql_text_holding_a_nul_byte_is_printed_not_refused(shared_server, cli):
    # cairnd sends it as "\u0000", which is valid JSON: not "a response that is not JSON".
    sql = "SELECT 'a' || char(0) || 'b' AS v, 7 AS n"
    r = cli("sql", "--host", shared_server.url, "--mode", "json", sql)
    assert_ok(r)
    assert json.loads(r.stdout) == [{"v": "a\x00b", "n": 7}], r.stdout
    r = cli("sql", "--host", shared_server.url, sql)
    assert_ok(r)
    assert "| 7 |" in r.stdout, r.stdout
    r = cli("--host", shared_server.url, input=sql + ";\n")
    assert_ok(r)
    assert "| 7 |" in r.stdout, r.stdout


def test_sql_csv_and_json_modes(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER, t TEXT)" % table])
    s.execute([["INSERT INTO %s VALUES(?, ?)" % table, 1, 'a,"b"'], ["INSERT INTO %s VALUES(?, ?)" % table, 2, None]])
    sql = "SELECT id, t FROM %s ORDER BY id" % table
    r = cli("sql", "--host", s.url, "--mode", "csv", sql)
    assert_ok(r)
    assert list(csv.reader(io.StringIO(r.stdout))) == [["id", "t"], ["1", 'a,"b"'], ["2", ""]], r.stdout
    r = cli("sql", "--host", s.url, "--mode=json", sql)
    assert_ok(r)
    assert json.loads(r.stdout) == [{"id": 1, "t": 'a,"b"'}, {"id": 2, "t": None}], r.stdout


def test_sql_timer(shared_server, cli):
    r = cli("sql", "--host", shared_server.url, "--timer", "SELECT 1 AS one")
    assert_ok(r)
    assert re.search(r"^Run Time: \d+\.\d{6} s$", r.stdout, re.M), r.stdout


# ---------------------------------------------------------------------------
# the shell, fed through a pipe


@pytest.mark.smoke
def test_shell_pipe_multiline_statements(shared_server, table, cli):
    s = shared_server
    script = (
        "CREATE TABLE %(t)s (\n"
        "  id INTEGER PRIMARY KEY,\n"
        "  name TEXT\n"
        ");\n"
        "\n"
        "-- a comment line between statements\n"
        "INSERT INTO %(t)s(name) VALUES ('a;b'),\n"
        "  ('c');  INSERT INTO %(t)s(name) VALUES ('d'); -- trailing comment\n"
        "SELECT id,\n"
        "       name\n"
        "  FROM %(t)s\n"
        " ORDER BY id;\n"
    ) % {"t": table}
    r = cli("--host", s.url, input=script)
    assert_ok(r)
    # No prompts and no row counts when reading a script: only the rows.
    assert r.stdout == (
        "+----+------+\n"
        "| id | name |\n"
        "+----+------+\n"
        "|  1 | a;b  |\n"
        "|  2 | c    |\n"
        "|  3 | d    |\n"
        "+----+------+\n"
    ), r.stdout


def test_shell_several_statements_on_one_line_each_print(shared_server, cli):
    # Each statement gets its own result, as if typed on its own line.
    r = cli("--host", shared_server.url, input="SELECT 'x;y' AS p; SELECT 2 AS q; /* c; */ SELECT 3 AS z;\n")
    assert_ok(r)
    assert r.stdout == (
        "+-----+\n| p   |\n+-----+\n| x;y |\n+-----+\n"
        "+---+\n| q |\n+---+\n| 2 |\n+---+\n"
        "+---+\n| z |\n+---+\n| 3 |\n+---+\n"
    ), r.stdout


def test_shell_last_statement_may_lack_the_semicolon(shared_server, cli):
    r = cli("--host", shared_server.url, input="SELECT 41 + 1 AS n\n")
    assert_ok(r)
    assert "| 42 |" in r.stdout, r.stdout


def test_shell_trigger_bodies_keep_their_semicolons(shared_server, table, cli):
    s = shared_server
    script = (
        "CREATE TABLE %(t)s (x INTEGER);\n"
        "CREATE TABLE %(t)s_log (x INTEGER);\n"
        "CREATE TRIGGER %(t)s_tr AFTER INSERT ON %(t)s BEGIN\n"
        "  INSERT INTO %(t)s_log VALUES (new.x);\n"
        "  INSERT INTO %(t)s_log VALUES (new.x * 10);\n"
        "END;\n"
        "INSERT INTO %(t)s VALUES (7);\n"
    ) % {"t": table}
    r = cli("--host", s.url, input=script)
    assert_ok(r)
    assert s.rows("SELECT x FROM %s_log ORDER BY x" % table) == [[7], [70]]


def test_shell_input_with_a_nul_byte_is_an_error_not_a_silent_skip(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (x INTEGER)" % table])
    script = ("INSERT INTO %(t)s VALUES (1);\n"
              "INSERT INTO %(t)s VALUES (2);\x00INSERT INTO %(t)s VALUES (3);\n"
              "INSERT INTO %(t)s\nVALUES (4)\x00;\n"
              "INSERT INTO %(t)s VALUES (5);\n") % {"t": table}
    r = cli("--host", s.url, input=script)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    col = len("INSERT INTO %s VALUES (2);" % table) + 1
    assert "line 2 holds a NUL byte at column %d" % col in r.stderr, r.stderr
    assert "line 4 holds a NUL byte at column 11" in r.stderr, r.stderr
    # Neither line ran in part; the lines after them did.
    assert s.rows("SELECT x FROM %s ORDER BY x" % table) == [[1], [5]]


def test_shell_errors_make_the_exit_status_1(shared_server, cli):
    s = shared_server
    script = "SELECT 1 AS a;\nSELECT nope FROM nowhere_for_cli;\nSELECT 2 AS b;\n"
    r = cli("--host", s.url, input=script)
    assert r.returncode == 1, (r.stdout, r.stderr)
    # The statements after the failing one still ran.
    assert r.stdout == "+---+\n| a |\n+---+\n| 1 |\n+---+\n+---+\n| b |\n+---+\n| 2 |\n+---+\n", r.stdout
    msg = server_error(s, "SELECT nope FROM nowhere_for_cli")
    assert r.stderr == "error: near line 2: %s\n" % msg, r.stderr


def test_shell_incomplete_input_is_an_error(shared_server, cli):
    r = cli("--host", shared_server.url, input="SELECT 'never closed;\n")
    assert r.returncode == 1
    assert "incomplete SQL" in r.stderr, r.stderr


def test_shell_unknown_dot_command(shared_server, cli):
    r = cli("--host", shared_server.url, input=".bogus\nSELECT 1 AS a;\n")
    assert r.returncode == 1
    assert 'unknown command ".bogus"' in r.stderr, r.stderr
    assert "| 1 |" in r.stdout


def test_shell_unreachable_reports_once(cli, free_port):
    port = free_port()
    r = cli("--host", "127.0.0.1:%d" % port, input="SELECT 1;\nSELECT 2;\nSELECT 3;\n", timeout=20)
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot reach cairnd at http://127.0.0.1:%d: " % port), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_shell_tables_schema_indexes(server, cli):
    s = server
    script = (
        "CREATE TABLE beta (x);\n"
        "CREATE TABLE alpha (id INTEGER PRIMARY KEY, name TEXT);\n"
        "CREATE INDEX alpha_name ON alpha(name);\n"
        "CREATE VIEW v_alpha AS SELECT name FROM alpha;\n"
    )
    assert_ok(cli("--host", s.url, input=script))
    # Whatever bookkeeping tables cairnd keeps (_cairn*), they are not listed.
    r = cli("--host", s.url, input=".tables\n")
    assert_ok(r)
    assert r.stdout == "alpha\nbeta\nv_alpha\n", r.stdout
    all_names = [row[0] for row in s.rows("SELECT name FROM sqlite_master")]
    for name in all_names:
        if name.startswith("_cairn"):
            assert name not in r.stdout.split()

    r = cli("--host", s.url, input=".tables a%\n")
    assert_ok(r)
    assert r.stdout == "alpha\n", r.stdout

    r = cli("--host", s.url, input=".schema alpha\n")
    assert_ok(r)
    assert r.stdout == (
        "CREATE TABLE alpha (id INTEGER PRIMARY KEY, name TEXT);\n"
        "CREATE INDEX alpha_name ON alpha(name);\n"
    ), r.stdout

    r = cli("--host", s.url, input=".schema\n")
    assert_ok(r)
    assert r.stdout == (
        "CREATE TABLE beta (x);\n"
        "CREATE TABLE alpha (id INTEGER PRIMARY KEY, name TEXT);\n"
        "CREATE INDEX alpha_name ON alpha(name);\n"
        "CREATE VIEW v_alpha AS SELECT name FROM alpha;\n"
    ), r.stdout

    r = cli("--host", s.url, input=".indexes\n")
    assert_ok(r)
    assert r.stdout == "alpha_name\n", r.stdout


def test_shell_help_lists_the_dot_commands(shared_server, cli):
    r = cli("--host", shared_server.url, input=".help\n")
    assert_ok(r)
    for cmd in (".tables", ".schema", ".indexes", ".timer", ".mode", ".status", ".help", ".quit", ".exit"):
        assert re.search(r"^%s\b" % re.escape(cmd), r.stdout, re.M), (cmd, r.stdout)


def test_shell_timer(shared_server, cli):
    r = cli("--host", shared_server.url, input="SELECT 1 AS a;\n.timer on\nSELECT 2 AS b;\n.timer off\nSELECT 3 AS c;\n")
    assert_ok(r)
    assert len(re.findall(r"^Run Time: \d+\.\d{6} s$", r.stdout, re.M)) == 1, r.stdout
    assert r.stdout.index("| 2 |") < r.stdout.index("Run Time") < r.stdout.index("| 3 |"), r.stdout


def test_shell_status(shared_server, cli):
    status = shared_server.get_json("/status")
    r = cli("--host", shared_server.url, input=".status\n")
    assert_ok(r)
    top = [line.split(":")[0] for line in r.stdout.splitlines() if line and not line.startswith(" ")]
    assert set(top) == set(status), (top, list(status))


def test_shell_modes(shared_server, table, cli):
    s = shared_server
    s.execute(["CREATE TABLE %s (id INTEGER, t TEXT)" % table])
    s.execute([["INSERT INTO %s VALUES(?, ?)" % table, 1, "x, y"]])
    sql = "SELECT id, t FROM %s;\n" % table
    r = cli("--host", s.url, input=".mode csv\n" + sql + ".mode json\n" + sql + ".mode table\n" + sql)
    assert_ok(r)
    assert r.stdout == (
        'id,t\n1,"x, y"\n'
        '[{"id":1,"t":"x, y"}]\n'
        "+----+------+\n| id | t    |\n+----+------+\n|  1 | x, y |\n+----+------+\n"
    ), r.stdout
    r = cli("--host", s.url, "--mode", "csv", input=sql)
    assert_ok(r)
    assert r.stdout == 'id,t\n1,"x, y"\n', r.stdout


def test_shell_quit_stops_reading(shared_server, cli):
    r = cli("--host", shared_server.url, input="SELECT 1 AS a;\n.quit\nSELECT nope;\n")
    assert_ok(r)
    assert "| 1 |" in r.stdout
    r = cli("--host", shared_server.url, input=".exit 3\nSELECT 1;\n")
    assert r.returncode == 3 and r.stdout == "", (r.returncode, r.stdout)


def test_shell_read_runs_a_file(shared_server, table, cli, tmp_path):
    s = shared_server
    f = tmp_path / "script.sql"
    f.write_text("CREATE TABLE %s (v INTEGER);\nINSERT INTO %s VALUES (6);\n" % (table, table))
    r = cli("--host", s.url, input=".read %s\nSELECT v FROM %s;\n" % (f, table))
    assert_ok(r)
    assert "| 6 |" in r.stdout, r.stdout
    r = cli("--host", s.url, input=".read %s\n" % (tmp_path / "missing.sql"))
    assert r.returncode == 1 and "cannot open" in r.stderr, r.stderr
    # A directory opens, but reads nothing: an error, not an empty script that passed.
    r = cli("--host", s.url, input=".read %s\nSELECT 1 AS one;\n" % tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "cannot read %s: Is a directory" % tmp_path in r.stderr, r.stderr
    assert "| one |" in r.stdout, r.stdout


# ---------------------------------------------------------------------------
# the interactive shell, on a real terminal (tmux)


class Tmux:
    """A private tmux server (own socket) running one command in a detached session."""

    def __init__(self, command, env, deadline):
        self.sock = "cairn-test-%s" % uuid.uuid4().hex[:12]
        self.env = env
        self.deadline = deadline
        self._tmux("new-session", "-d", "-s", "cli", "-x", "160", "-y", "50", command)

    def _tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null"] + list(args),
                              capture_output=True, text=True, env=self.env, check=True,
                              timeout=self.deadline(10))

    def type(self, text, enter=True):
        # tmux takes an argument ending in ';' as a command separator: escape it.
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        if text:
            self._tmux("send-keys", "-t", "cli", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "cli", "Enter")

    def key(self, name):
        self._tmux("send-keys", "-t", "cli", name)

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", "cli", "-S", "-200").stdout

    def close(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True,
                       timeout=self.deadline(10))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_interactive_shell_under_a_terminal(shared_server, table, cairn_bin, tmp_path, wait_for, deadline):
    s = shared_server
    home = tmp_path / "tty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CAIRN_HOST", "TMUX")}
    env["HOME"] = str(home)
    env["TERM"] = "xterm"
    # The shell's exit status is shown on the screen once it exits.
    command = "%s --host %s; echo CAIRN_EXITED=$?; read _" % (cairn_bin, s.url)
    t = Tmux(command, env, deadline)
    try:
        # capture-pane drops trailing blanks, so the prompts are looked for without them.
        prompt = "%s>" % s.http_addr

        def screen_has(text):
            return lambda: text in t.screen()

        wait_for(screen_has(prompt), 10, "the prompt")
        t.type("CREATE TABLE %s (" % table)
        wait_for(screen_has("   ...>"), 10, "the continuation prompt")
        t.type("  id INTEGER PRIMARY KEY, name TEXT);")
        t.type("INSERT INTO %s(name) VALUES ('fiona');" % table)
        wait_for(screen_has("1 row affected"), 10, "the row count of the INSERT")
        t.type("SELECT * FROM %s;" % table)
        wait_for(screen_has("|  1 | fiona |"), 10, "the query's table")

        # Ctrl-C drops the unfinished statement: the next one runs on its own.
        t.type("SELECT 'never finished")
        t.key("C-c")
        t.type("SELECT 99 AS n;")
        wait_for(screen_has("| 99 |"), 10, "the statement typed after Ctrl-C")

        t.type(".tables")
        wait_for(lambda: re.search(r"^%s$" % table, t.screen(), re.M), 10, ".tables output")
        t.type(".quit")
        wait_for(screen_has("CAIRN_EXITED=0"), 10, "the shell to exit with status 0")
    finally:
        t.close()
    history = (home / ".cairn_history").read_text(errors="replace")
    # libedit encodes spaces as \040 in its history file.
    assert "99" in history and "fiona" in history, history
