"""Limits on what one read may hold, and statements that write files outside the database.

- A read whose results would grow past --max-result-size (256 MiB by default) stops
  with an error naming the limit. Before, a query returning rows faster than its time
  limit could end it built them all in memory (a cross join of two tables: gigabytes).
- VACUUM INTO writes a file of the client's choosing on every node: refused with 400.
"""
import os

from conftest import assert_exec_ok


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_read_stops_at_the_result_size_limit(server_factory):
    s = server_factory(extra_args=["--max-result-size", "1000000"])
    assert_exec_ok(s.execute([
        "CREATE TABLE r(id INTEGER PRIMARY KEY, v TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
        "INSERT INTO r(v) SELECT printf('%0100d', i) FROM n"]))
    # 2000 x 2000 rows of 200 bytes: 800 MB if built whole.
    before = rss_kib(s.pid)
    res = s.query(["SELECT a.v, b.v FROM r a, r b"])["results"][0]
    assert "values" not in res and "--max-result-size" in res["error"], str(res)[:300]
    assert rss_kib(s.pid) - before < 200 * 1024, (before, rss_kib(s.pid))
    # Within the limit, as before; and the statements after a stopped one still run.
    res = s.query(["SELECT a.v, b.v FROM r a, r b", "SELECT count(*) FROM r"])["results"]
    assert "error" in res[0] and res[1]["values"] == [[2000]], str(res)[:300]
    res = s.query(["SELECT v FROM r LIMIT 100"])["results"][0]
    assert len(res["values"]) == 100


def test_default_result_limit_is_named_in_help(cairnd_bin):
    import subprocess
    out = subprocess.run([str(cairnd_bin), "--help"], capture_output=True, text=True).stdout
    assert "--max-result-size" in out


def test_vacuum_into_is_refused(server, tmp_path):
    s = server
    assert_exec_ok(s.execute(["CREATE TABLE v(x)", "INSERT INTO v VALUES(1)"]))
    target = tmp_path / "stolen.db"
    for path in ("/db/execute", "/db/request", "/db/query"):
        r = s.post(path, ["VACUUM INTO '%s'" % target])
        assert r.status == 400 and "statement policy" in r.json()["error"], (path, r)
    assert not os.path.exists(target)
    # Plain VACUUM rewrites the database itself and is allowed (it cannot run inside the
    # request's transaction, which SQLite says as an ordinary statement error).
    r = s.post("/db/execute", ["VACUUM"])
    assert r.status == 200, r
