"""The embedded-API example (examples/embedded.c, built as $CAIRN_BUILD/example_embedded)
opens a cairn database in a data directory, writes, and prints what it reads back."""

import subprocess

import pytest

from conftest import BUILD, deadline_seconds

EXAMPLE = BUILD / "example_embedded"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="%s was not built" % EXAMPLE)
def test_example_embedded(tmp_path):
    data = tmp_path / "embedded-data"
    p = subprocess.run([str(EXAMPLE), str(data)], capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=deadline_seconds(60))
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, "example_embedded exited %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, out, err)
    assert out.strip(), "example_embedded printed nothing; stderr:\n%s" % err
    assert (data / "db.sqlite").exists(), list(data.iterdir()) if data.exists() else "no data dir"
