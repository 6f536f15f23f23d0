"""rqlite client compatibility: the real rqlite-js package (from the npm registry,
installed by tests/compat/setup.sh) runs tests/compat/rqlite_js_compat.js against a
real cairnd. A missing Node.js or a failed install fails the test; it never skips."""

import shutil
import subprocess

import pytest

from conftest import REPO, deadline_seconds

COMPAT = REPO / "tests" / "compat"
SCRIPT = COMPAT / "rqlite_js_compat.js"


def _ensure_client():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH: the rqlite-js compatibility test needs Node.js "
                    "(scripts/deps.sh installs it)", pytrace=False)
    # setup.sh returns at once, offline, when rqlite-js is installed already.
    try:
        p = subprocess.run(["bash", str(COMPAT / "setup.sh")], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/compat/setup.sh did not finish within 300s", pytrace=False)
    if p.returncode != 0:
        pytest.fail("could not install rqlite-js (tests/compat/setup.sh exited %d):\n%s%s"
                    % (p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")),
                    pytrace=False)
    return node


def test_rqlite_js_data_api(server):
    node = _ensure_client()
    try:
        p = subprocess.run([node, str(SCRIPT), server.url], capture_output=True, cwd=str(COMPAT),
                           timeout=deadline_seconds(120))
    except subprocess.TimeoutExpired as e:
        pytest.fail("rqlite-js script did not finish in time; output so far:\n%s"
                    % ((e.stdout or b"").decode(errors="replace")), pytrace=False)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    assert p.returncode == 0, "rqlite-js compatibility script failed (exit %d):\n%s" % (p.returncode, out)
    assert "0 failed" in out and "FAIL" not in out, out
