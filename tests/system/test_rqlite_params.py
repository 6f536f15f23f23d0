"""rqlite query parameters that cairn does not implement are refused, never ignored.

Before, `?queue` ran the write synchronously and answered with full results, which
gorqlite's queued calls read as an acknowledgement and panicked on; `?freshness`,
`?qualify_columns` and the others were silently ignored, so the answer did not mean what
the client asked. Each now gets 400 naming the parameter, and nothing is written.
`-q` prints nothing but errors (it printed the "node ready" lines).
"""
import subprocess

import pytest

from conftest import assert_exec_ok

UNSUPPORTED = ["queue", "wait", "freshness=1s", "freshness_strict", "blob_array",
               "qualify_columns", "noleader", "vacuum"]


@pytest.mark.parametrize("param", UNSUPPORTED)
def test_unimplemented_rqlite_parameter_is_refused(shared_server, table, param):
    s = shared_server
    assert_exec_ok(s.execute(['CREATE TABLE "%s" (x)' % table]))
    for method, path, body in (("POST", "/db/execute", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("POST", "/db/request", ['INSERT INTO "%s" VALUES(1)' % table]),
                               ("GET", "/db/query?q=SELECT%201", None)):
        sep = "&" if "?" in path else "?"
        r = s.raw(method, path + sep + param, body)
        name = param.split("=")[0]
        assert r.status == 400 and "?%s" % name in r.json()["error"], (path, param, r)
    assert s.scalar('SELECT count(*) FROM "%s"' % table) == 0


def test_quiet_prints_only_errors(server_factory):
    s = server_factory(extra_args=["-q"])
    assert_exec_ok(s.execute(["CREATE TABLE q(x)"]))
    s.stop()
    text = s.stderr_text()
    assert "node ready" not in text and "try  curl" not in text, text[-2000:]
