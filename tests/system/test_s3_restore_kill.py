"""A restore from S3 killed while its read-ahead spool is in use leaves nothing behind.

`cairn restore --repo s3://BUCKET/PREFIX ID --out FILE` of a chain (a full backup and
incrementals, a few tens of MiB) reads the objects with ranged GETs whose read-ahead is
spooled in an unnamed file (O_TMPFILE) of $TMPDIR (src/backup/readahead.c, and
repo_s3.c), while it writes the database into an unnamed file beside FILE. Killed with
SIGKILL in the middle of that, with a TMPDIR of its own, it leaves nothing at the
destination and nothing in its TMPDIR (unnamed files go with their last descriptor),
and a second restore writes the source database byte for byte.

Against s3rver behind the SigV4-checking proxy (tests/system/s3util.py), as every S3
test. No test waits by sleeping: each kill waits for a condition seen in
/proc/PID/fd (the spool open in TMPDIR with bytes in it, a page of the new file beside
FILE written at a given offset), polled against a deadline.
"""
import json
import os
import random
import subprocess

from conftest import StopWaiting, deadline_seconds, wait_until
from s3util import s3, s3env  # noqa: F401 (fixtures)
from test_restore_kill import change, fds_of, make_source, same_bytes

INCREMENTALS = 3


def cairn(cairn_bin, s3, *args, env=None, timeout=180):
    e = s3.env(env)
    e.pop("CAIRN_HOST", None)
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args] +
                          ["--s3-endpoint", s3.endpoint], capture_output=True, text=True,
                          env=e, stdin=subprocess.DEVNULL, timeout=deadline_seconds(timeout))


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout,
                                                                    r.stderr)
    return r


def open_files(pid, under):
    """(path, size) of every file process pid holds open under directory `under`, unnamed
    ones included ("DIR/#12345 (deleted)"): their size through /proc, which reaches an
    open file that has no name."""
    out = []
    for fd, target in fds_of(pid):
        if target.startswith(str(under) + "/"):
            try:
                out.append((target, os.stat(fd).st_size))
            except OSError:
                pass  # closed meanwhile
    return out


def written_at(pid, under, offset):
    """Whether a file pid holds open under `under` has a page written at offset: the new
    file is preallocated to its final size (zeros) and written in ascending runs, so a
    page of data there says the restore has written that far."""
    for fd_path, target in fds_of(pid):
        if not target.startswith(str(under) + "/"):
            continue
        try:
            fd = os.open(fd_path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if any(os.pread(fd, 4096, offset)):
                return True
        finally:
            os.close(fd)
    return False


def test_a_restore_from_s3_killed_while_spooling_leaves_nothing(cairn_bin, s3, tmp_path):
    rng = random.Random(23)
    db = tmp_path / "source.db"
    make_source(db, rng)
    chain = []
    for i in range(INCREMENTALS + 1):
        if i > 0:
            change(db, rng)
        chain.append(json.loads(ok(cairn(
            cairn_bin, s3, "backup", "create", "--db", db, "--repo", s3.url, "--type",
            "full" if i == 0 else "incremental", "--json")).stdout))
    assert [e["parent_id"] for e in chain[1:]] == [e["id"] for e in chain[:-1]], chain
    last = chain[-1]
    size = db.stat().st_size
    assert size > 24 << 20, size

    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "out.db"
    tmpdir = tmp_path / "tmpdir"  # the restore's own TMPDIR: where its spool goes
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    argv = [str(cairn_bin), "restore", "--repo", s3.url, last["id"], "--out", str(out),
            "--s3-endpoint", s3.endpoint, "--json"]

    # Killed once early in the writing and once past half of it (a page written there),
    # each time with the spool open and holding bytes.
    for fraction in (0.1, 0.5):
        e = s3.env(env)
        e.pop("CAIRN_HOST", None)
        p = subprocess.Popen(argv, env=e, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        seen = {}

        def spooling_and_written():
            if p.poll() is not None:
                raise StopWaiting("the restore ended (exit %s) before it was killed"
                                  % p.returncode)
            spool = open_files(p.pid, tmpdir)
            new = open_files(p.pid, dest)
            if spool:
                seen["spool"] = spool
            if new:
                seen["new"] = new
            return (any(s > 0 for _, s in spool) and
                    written_at(p.pid, dest, int(fraction * size) // 4096 * 4096))

        try:
            wait_until(spooling_and_written, 120,
                       "the restore to spool in TMPDIR with %d%% of the file written"
                       % (100 * fraction), interval=0.001)
        finally:
            if p.poll() is None:
                p.kill()
            stdout, stderr = p.communicate(timeout=deadline_seconds(30))
        assert p.returncode == -9, (fraction, p.returncode, stdout, stderr)
        # What it held was unnamed: a spool in TMPDIR, a new file beside --out.
        assert all(t.endswith("(deleted)") for t, _ in seen["spool"]), seen
        assert all(t.endswith("(deleted)") for t, _ in seen["new"]), seen
        assert os.listdir(dest) == [], (fraction, os.listdir(dest))
        assert os.listdir(tmpdir) == [], (fraction, os.listdir(tmpdir))

    # The next restore, to the same place with the same TMPDIR, is the source.
    r = ok(subprocess.run(argv, env={k: v for k, v in s3.env(env).items() if k != "CAIRN_HOST"},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=deadline_seconds(180)))
    assert json.loads(r.stdout)["restored"]["id"] == last["id"], r.stdout
    assert os.listdir(dest) == ["out.db"], os.listdir(dest)
    assert os.listdir(tmpdir) == [], os.listdir(tmpdir)
    assert same_bytes(db, out) is None, same_bytes(db, out)
    # Nothing was written to the bucket by the restores.
    assert s3.pending_uploads() == []
