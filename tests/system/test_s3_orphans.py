"""Orphaned multipart uploads in an S3 repository (issue 16): a writer killed with -9 in
the middle of an upload leaves no object and no catalog entry, only an unfinished
multipart upload, which S3 keeps (and bills) until someone aborts it. cairn sweeps
such uploads at the end of every backup into an S3 repository and when cairnd starts
after an unclean stop, aborting only uploads of its own backup objects (`<id>.cbk`
with a generated id, directly under the repository's prefix) begun more than
CAIRN_S3_SWEEP_AGE_MS ago (6 h by default): a young upload, perhaps a live writer's,
and every foreign upload are left alone.

Against s3rver behind the SigV4-checking, fault-injecting proxy (tests/system/s3util.py):
a stall on the second part holds the writer reliably mid-upload while it is killed."""
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading

from backuputil import admin_backup, admin_list
from conftest import assert_exec_ok, deadline_seconds, wait_until
from s3util import BUCKET, s3, s3env  # noqa: F401 (fixtures)

# The key of a backup object as the engine names it (backupNewId, then ".cbk").
OWN_KEY = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{4}-[0-9a-f]{4}\.cbk$")

# Uploads of other programs in the same bucket and prefix, which no sweep may touch: a
# plain name, a backup's name under a longer prefix (another repository, or not
# cairn's at all), and names that only resemble a backup object's.
FOREIGN = ["notes.bin", "sub/20260101T000000000Z-0000-abcd.cbk",
           "20260101T000000000Z-0000-abcd.cbk.part", "mine.cbk"]


def cairn(cairn_bin, s3, *args, env=None, timeout=120):
    argv = [str(cairn_bin)] + [str(a) for a in args] + ["--s3-endpoint", s3.endpoint]
    e = s3.env(env)
    e.pop("CAIRN_HOST", None)
    return subprocess.run(argv, capture_output=True, text=True, env=e, stdin=subprocess.DEVNULL,
                          timeout=deadline_seconds(timeout))


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout,
                                                                    r.stderr)
    return r


def make_db(path, rows):
    con = sqlite3.connect(str(path))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t(v) VALUES(?)", [(os.urandom(300),) for _ in range(rows)])
    con.commit()
    con.close()


def visible_keys(s3):
    """The repository's objects, but its catalog index (which any listing may write,
    tests/system/test_s3_catalog.py)."""
    r = s3.boto().list_objects_v2(Bucket=BUCKET, Prefix=s3.prefix + "/")
    return sorted(o["Key"][len(s3.prefix) + 1:] for o in r.get("Contents", [])
                  if o["Key"] != s3.prefix + "/catalog.idx")


def pending(s3):
    """The repository's unfinished uploads: {relative key: upload id}."""
    return {k[len(s3.prefix) + 1:]: u for k, u in s3.pending_uploads()}


def start_foreign_uploads(s3):
    """Begin a multipart upload (one part sent, never completed) under each FOREIGN key,
    as another program sharing the bucket would; returns {key: upload id}."""
    b = s3.boto()
    ids = {}
    for key in FOREIGN:
        u = b.create_multipart_upload(Bucket=BUCKET, Key=s3.key(key))["UploadId"]
        b.upload_part(Bucket=BUCKET, Key=s3.key(key), UploadId=u, PartNumber=1, Body=b"x" * 1024)
        ids[key] = u
    return ids


def abort_foreign_uploads(s3, ids):
    b = s3.boto()
    for key, u in ids.items():
        b.abort_multipart_upload(Bucket=BUCKET, Key=s3.key(key), UploadId=u)


def hold_mid_upload(s3):
    """Queue a stall of the second part's answer: the writer has begun its multipart
    upload and stays in the middle of it until killed."""
    s3.fault(query="partNumber=2", action="stall", seconds=120, count=1)


def wait_mid_upload(s3, what):
    """Until the writer's multipart upload is pending and its second part on its way."""
    def mid():
        return (any(OWN_KEY.match(k) for k in pending(s3)) and
                any("partNumber=2" in x["query"] for x in s3.log()))
    wait_until(mid, 60, what)
    [key] = [k for k in pending(s3) if OWN_KEY.match(k)]
    return key


def test_a_killed_standalone_backup_is_swept_by_a_later_backup(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 60000)  # ~20 MiB: a multipart upload of several 8 MiB parts
    hold_mid_upload(s3)
    argv = [str(cairn_bin), "backup", "create", "--db", str(db), "--repo", s3.url,
            "--s3-endpoint", s3.endpoint]
    p = subprocess.Popen(argv, env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        orphan = wait_mid_upload(s3, "the standalone backup's upload to be under way")
    finally:
        p.kill()  # kill -9
        p.communicate()
    s3.clear_faults()
    assert p.returncode == -9

    # Nothing visible, nothing in the catalog: only the unfinished upload.
    assert visible_keys(s3) == []
    assert json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                               "--json")).stdout) == []
    assert list(pending(s3)) == [orphan]
    foreign = start_foreign_uploads(s3)
    try:
        # At the default age (6 h) the orphan is young: perhaps a live writer's. Left.
        first = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo",
                                    s3.url, "--json")).stdout)
        assert set(pending(s3)) == {orphan} | set(foreign)

        # Old enough: the next backup succeeds and sweeps it, and nothing foreign.
        second = json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo",
                                     s3.url, "--json",
                                     env={"CAIRN_S3_SWEEP_AGE_MS": "1"})).stdout)
        assert pending(s3) == foreign
        assert visible_keys(s3) == sorted([first["id"] + ".cbk", second["id"] + ".cbk"])
        listed = json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                                     "--json")).stdout)
        assert [e["id"] for e in listed] == [first["id"], second["id"]]
        assert all(not e.get("error") for e in listed), listed
        # One abort, of the orphan.
        log = s3.log()
        aborts = [x for x in log if x["method"] == "DELETE" and "uploadId=" in x["query"]]
        assert [x["path"].rsplit("/", 1)[-1] for x in aborts] == [orphan], aborts
    finally:
        abort_foreign_uploads(s3, foreign)
    assert pending(s3) == {}


def test_ctrl_c_stops_a_standalone_backup_whose_upload_is_held(cairn_bin, s3, tmp_path):
    """Ctrl-C of `cairn backup create --repo s3://...` while its upload waits on a part the
    server holds (the engine has read every page of this small database into the parts
    by then): the backup stops at once, as Ctrl-C promises, with its upload aborted and
    the repository as it was, rather than committing once the stall is cut and retried."""
    db = tmp_path / "app.db"
    make_db(db, 60000)  # ~20 MiB: three parts, all read before the second is answered
    hold_mid_upload(s3)
    argv = [str(cairn_bin), "backup", "create", "--db", str(db), "--repo", s3.url,
            "--s3-endpoint", s3.endpoint]
    p = subprocess.Popen(argv, env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_mid_upload(s3, "the standalone backup's upload to be under way")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=deadline_seconds(10))
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        s3.clear_faults()
    assert p.returncode == 1, (p.returncode, out, err)
    assert "interrupted; no backup was written" in err, err
    assert visible_keys(s3) == []
    assert pending(s3) == {}


def test_the_sweep_age_is_checked(cairn_bin, s3):
    for bad in ("0", "-5", "abc", "12ms", "99999999999999999999", ""):
        r = cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
                  env={"CAIRN_S3_SWEEP_AGE_MS": bad})
        assert r.returncode != 0, (bad, r)
        assert "CAIRN_S3_SWEEP_AGE_MS" in r.stderr, (bad, r.stderr)
    ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url,
             env={"CAIRN_S3_SWEEP_AGE_MS": "3600000"}))


def s3_server_env(s3, monkeypatch):
    for k, v in s3.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("CAIRN_S3_SWEEP_AGE_MS", raising=False)


def test_a_killed_server_backup_is_swept_at_the_next_start(s3, server_factory, monkeypatch):
    """kill -9 of cairnd during a backup into S3: no object, no entry; the restart after
    that unclean stop sweeps the orphan once it is old enough, leaves foreign uploads,
    and the next backup succeeds."""
    s3_server_env(s3, monkeypatch)
    s = server_factory(extra_args=["--backup-dir", s3.url, "--s3-endpoint", s3.endpoint])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
                              "INSERT INTO t(v) SELECT randomblob(1000) FROM "
                              "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                              "WHERE i < 20000) SELECT i FROM c)"]))
    hold_mid_upload(s3)
    answer = {}

    def backup():
        try:
            answer["r"] = s.raw("POST", "/admin/backup", {"type": "full"}, timeout=300)
        except (OSError, http.client.HTTPException) as e:  # killed under it
            answer["e"] = e

    th = threading.Thread(target=backup)
    th.start()
    try:
        orphan = wait_mid_upload(s3, "the server's backup upload to be under way")
    finally:
        s.kill()  # kill -9
        th.join()
    s3.clear_faults()
    assert "r" not in answer, answer
    assert visible_keys(s3) == []
    assert list(pending(s3)) == [orphan]
    foreign = start_foreign_uploads(s3)
    try:
        # Restarted after the unclean stop at the default age: the orphan is young, and
        # stays; a backup meanwhile succeeds (and sweeps nothing either).
        s.start()
        assert admin_list(s) == []
        e1 = admin_backup(s, {"type": "full"})
        assert set(pending(s3)) == {orphan} | set(foreign)

        # Killed again, restarted with a short age: the start sweeps the orphan, before
        # any backup, and nothing foreign.
        s.kill()
        monkeypatch.setenv("CAIRN_S3_SWEEP_AGE_MS", "1")
        s.start()
        assert pending(s3) == foreign
        assert "1 temporary file(s) and unfinished upload(s)" in s.stderr_text(), \
            s.stderr_tail()
        e2 = admin_backup(s, {"type": "incremental"})
        assert e2["parent_id"] == e1["id"]
        assert [e["id"] for e in admin_list(s)] == [e1["id"], e2["id"]]
        assert visible_keys(s3) == sorted([e1["id"] + ".cbk", e2["id"] + ".cbk"])
        assert pending(s3) == foreign
    finally:
        abort_foreign_uploads(s3, foreign)
    assert pending(s3) == {}


def test_a_node_killed_while_putting_a_fetched_backup_into_s3_leaves_no_copy(
        s3, make_cluster, monkeypatch):
    """A leader whose backups are in S3 fetches the parent it lacks from a peer: the
    download is kept in its data directory while it is uploaded into its prefix. Killed
    with -9 during that upload, the restart after the unclean stop removes the download
    (a copy as large as the backup), and the next backup fetches and chains again."""
    s3_server_env(s3, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    c = make_cluster(3, extra_args=[])
    for n in c.nodes:
        n.extra_args = list(n.extra_args) + ["--backup-dir", "%s/node%d" % (s3.url, n.id)]
        n.restart()
    c.wait_converged()
    old = c.leader()
    assert_exec_ok(old.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
                                "INSERT INTO t(v) SELECT randomblob(1000) FROM "
                                "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                                "WHERE i < 2000) SELECT i FROM c)"]))
    full = admin_backup(old, {"type": "full"})
    old.kill()
    leader = c.leader(among=[n for n in c.nodes if n is not old], timeout=30)
    old.start()
    c.wait_converged()
    # The fetched full backup's upload into the new leader's prefix is held.
    target = "/node%d/%s.cbk" % (leader.id, full["id"])
    s3.fault(method="PUT", path=target, action="delay", seconds=120, count=1)
    answer = {}

    def backup():
        try:
            answer["r"] = leader.raw("POST", "/admin/backup", {"type": "incremental"},
                                     timeout=300)
        except (OSError, http.client.HTTPException) as e:  # killed under it
            answer["e"] = e

    def local_copies():
        return sorted(f for f in os.listdir(leader.data_dir) if full["id"] in f)

    th = threading.Thread(target=backup)
    th.start()
    try:
        wait_until(lambda: local_copies() and
                   any(x["method"] == "PUT" and target in x["path"] for x in s3.log()),
                   60, "the fetched backup's upload to be under way")
    finally:
        leader.kill()  # kill -9
        th.join()
    s3.clear_faults()
    assert "r" not in answer, answer
    assert local_copies() != [], "nothing was left to sweep: the test saw no copy"
    leader.start()
    assert local_copies() == [], local_copies()
    c.wait_converged()
    now = c.leader(timeout=30)
    inc = admin_backup(now, {"type": "incremental"})
    assert inc["parent_id"] == full["id"], inc
    assert s3.exists("node%d/%s.cbk" % (now.id, full["id"]))
    assert local_copies() == [], local_copies()


def test_sigterm_during_a_backup_into_a_stalled_bucket_stops_at_once(s3, server_factory,
                                                                     monkeypatch):
    """SIGTERM while a backup waits on a part the server does not answer: the node stops
    within the usual few seconds (not when the stall is detected and retried, tens of
    seconds later), aborts the upload, and lists nothing; restarted, it backs up."""
    s3_server_env(s3, monkeypatch)
    s = server_factory(extra_args=["--backup-dir", s3.url, "--s3-endpoint", s3.endpoint])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
                              "INSERT INTO t(v) SELECT randomblob(1000) FROM "
                              "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                              "WHERE i < 20000) SELECT i FROM c)"]))
    hold_mid_upload(s3)
    answer = {}

    def backup():
        try:
            answer["r"] = s.raw("POST", "/admin/backup", {"type": "full"}, timeout=300)
        except (OSError, http.client.HTTPException) as e:  # the node stopped under it
            answer["e"] = e

    th = threading.Thread(target=backup)
    th.start()
    try:
        wait_mid_upload(s3, "the server's backup upload to be under way")
    finally:
        rc = s.stop(timeout=10)  # fails the test if it takes longer
        th.join()
    s3.clear_faults()
    assert rc == 0, s.stderr_tail()
    assert "r" not in answer or answer["r"].status >= 500, answer
    assert visible_keys(s3) == []
    assert pending(s3) == {}  # aborted, not left to a sweep
    s.start()
    assert admin_list(s) == []
    e = admin_backup(s, {"type": "full"})
    assert visible_keys(s3) == [e["id"] + ".cbk"]
