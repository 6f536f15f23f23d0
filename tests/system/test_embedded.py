"""The embedded-API example (examples/embedded.c, built as $CAIRN_BUILD/example_embedded):
it opens a single-node cairn on a data directory, inserts a row with parameters of
every type, and prints what it reads back. Run twice, the first run's row is kept; the
directory it leaves is one cairnd can serve."""

import base64
import subprocess

import pytest

from conftest import BUILD, deadline_seconds

EXAMPLE = BUILD / "example_embedded"
BLOB = bytes([0xCA, 0x1F, 0x00, 0x01])


def run_example(data):
    p = subprocess.run([str(EXAMPLE), str(data)], capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=deadline_seconds(60))
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, "example_embedded exited %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, out, err)
    return out.splitlines()


def expected_row(i):
    return "row id=%d title=h\u00e9llo from C score=9.5 data=4 bytes (ca1f...) extra=NULL" % i


@pytest.mark.skipif(not EXAMPLE.exists(), reason="%s was not built" % EXAMPLE)
def test_example_embedded_reads_back_and_persists(tmp_path, server_factory):
    data = tmp_path / "embedded-data"
    assert run_example(data) == ["inserted row 1", expected_row(1), "1 rows"]
    assert (data / "db.sqlite").exists() and (data / "raft").is_dir(), sorted(p.name for p in data.iterdir())
    assert run_example(data) == ["inserted row 2", expected_row(1), expected_row(2), "2 rows"]

    # The same directory served by cairnd: the rows are there, values intact.
    s = server_factory(data_dir=data)
    body = s.query("SELECT id, title, score, data, extra FROM notes ORDER BY id")
    r = body["results"][0]
    assert r["types"] == ["integer", "text", "real", "blob", "text"], r
    b64 = base64.b64encode(BLOB).decode()
    assert r["values"] == [[1, "h\u00e9llo from C", 9.5, b64, None],
                           [2, "h\u00e9llo from C", 9.5, b64, None]], r
