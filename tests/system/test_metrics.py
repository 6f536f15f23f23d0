"""GET /metrics (issue 19): the node's state in Prometheus's text format, parsed here with
prometheus_client's own parser (Debian's python3-prometheus-client), and its values
checked against what the node says elsewhere: /status, and the catalog of its
repositories (GET /admin/backups?local)."""
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backuputil import repo  # noqa: F401 (fixture)
from conftest import assert_exec_ok, wait_until
from s3util import s3env  # noqa: F401 (fixture)


def scrape(s):
    r = s.raw("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), r.headers
    samples = {}
    families = {}
    for fam in text_string_to_metric_families(r.text):
        assert fam.name.startswith("cairn_"), fam.name
        families[fam.name] = fam
        for smp in fam.samples:
            key = (smp.name, tuple(sorted(smp.labels.items())))
            assert key not in samples, "sample %r given twice" % (key,)
            samples[key] = smp.value
    return samples, families


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_parse_and_agree_with_status(server_factory):
    s = server_factory()
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    for i in range(5):
        assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES('row %d')" % i]))
    s.query(["SELECT count(*) FROM t"])
    samples, families = scrape(s)
    st = s.get_json("/status")

    assert value(samples, "cairn_raft_state", state="leader") == 1
    assert value(samples, "cairn_raft_state", state="follower") == 0
    assert value(samples, "cairn_raft_term") == st["raft"]["term"]
    assert value(samples, "cairn_raft_applied_index") >= 7
    assert value(samples, "cairn_db_size_bytes") > 0
    info = [k for k in samples if k[0] == "cairn_info"]
    assert len(info) == 1 and dict(info[0][1])["node_id"] == str(st["node"]["id"])
    # Six writes and a read answered by this node, each counted with its time.
    assert value(samples, "cairn_http_data_requests_total", endpoint="/db/execute") == 6
    assert value(samples, "cairn_http_data_requests_total", endpoint="/db/query") == 1
    assert value(samples, "cairn_http_data_request_seconds_total", endpoint="/db/execute") > 0
    assert families["cairn_http_data_requests"].type == "counter"
    assert families["cairn_raft_term"].type == "gauge"
    # No backups yet: the repository is listed, and says so.
    assert value(samples, "cairn_backups", repository="default") == 0
    assert value(samples, "cairn_repository_up", repository="default") == 1
    assert not [k for k in samples if k[0] == "cairn_backup_last_timestamp_seconds"]

    # Counters only grow.
    assert_exec_ok(s.execute(["INSERT INTO t(v) VALUES('more')"]))
    again, _ = scrape(s)
    assert value(again, "cairn_http_data_requests_total", endpoint="/db/execute") == 7
    assert value(again, "cairn_http_requests_total") > value(samples, "cairn_http_requests_total")

    r = s.raw("POST", "/metrics", {})
    assert r.status == 405, r


def test_backup_metrics_match_the_catalog(server_factory, tmp_path, cairn_bin):
    repo = tmp_path / "repo"
    offsite = tmp_path / "offsite"
    s = server_factory(extra_args=["--backup-dir", str(repo), "--repo", "offsite=" + str(offsite)])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"] +
                             ["INSERT INTO t(v) VALUES('row %d')" % i for i in range(100)]))
    for kind in ("full", "incremental"):
        r = s.raw("POST", "/admin/backup", {"type": kind})
        assert r.status == 200, r
        assert_exec_ok(s.execute(["UPDATE t SET v = v || '!' WHERE id % 7 = 0"]))
    r = s.raw("POST", "/admin/backup", {"type": "full", "to": "offsite"})
    assert r.status == 200, r
    before = time.time()
    # A verification (what a restore drill records), of the incremental.
    cat = s.get_json("/admin/backups?local")["backups"]
    inc = [b for b in cat if b["type"] == "incremental"][0]
    p = subprocess.run([str(cairn_bin), "backup", "verify", "--repo", str(repo), inc["id"]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr

    samples, _ = scrape(s)
    cat = s.get_json("/admin/backups?local")["backups"]
    for name in ("default", "offsite"):
        mine = [b for b in cat if b["repository"] == name]
        assert value(samples, "cairn_backups", repository=name) == len(mine)
        assert value(samples, "cairn_backup_bytes", repository=name) == sum(
            b["size_bytes"] for b in mine)
        assert value(samples, "cairn_repository_up", repository=name) == 1
        for kind in ("full", "incremental"):
            of = [b for b in mine if b["type"] == kind]
            key = dict(repository=name, type=kind)
            if not of:
                assert ("cairn_backup_last_timestamp_seconds",
                        tuple(sorted(key.items()))) not in samples
                continue
            newest = max(of, key=lambda b: b["id"])
            assert value(samples, "cairn_backup_last_size_bytes", **key) == newest["size_bytes"]
            assert value(samples, "cairn_backup_last_index", **key) == newest["raft_index"]
            assert value(samples, "cairn_backup_last_duration_seconds", **key) == pytest.approx(
                newest["duration_ms"] / 1000.0, abs=0.001)
            ts = value(samples, "cairn_backup_last_timestamp_seconds", **key)
            age = value(samples, "cairn_backup_last_age_seconds", **key)
            assert abs(ts + age - time.time()) < 5
            assert 0 <= age < 120
    key = dict(repository="default", type="incremental")
    assert value(samples, "cairn_backup_last_verify_success", **key) == 1
    assert value(samples, "cairn_backup_last_verify_timestamp_seconds", **key) >= before - 1
    assert value(samples, "cairn_backup_verify_failed", repository="default") == 0
    # Verifying the incremental checked its chain: the full backup it rests on too.
    assert value(samples, "cairn_backup_last_verify_success", repository="default",
                 type="full") == 1
    assert ("cairn_backup_last_verify_success",
            tuple(sorted(dict(repository="offsite", type="full").items()))) not in samples


def test_a_failed_verification_shows(server_factory, tmp_path, cairn_bin):
    repo = tmp_path / "repo"
    s = server_factory(extra_args=["--backup-dir", str(repo)])
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"] +
                             ["INSERT INTO t(v) VALUES(randomblob(3000))" for _ in range(200)]))
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    b = r.json()["backup"]
    path = repo / (b["id"] + ".cbk")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a byte inside a block
    path.write_bytes(bytes(data))
    p = subprocess.run([str(cairn_bin), "backup", "verify", "--repo", str(repo), b["id"]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0

    def failed_shows():
        samples, _ = scrape(s)
        return value(samples, "cairn_backup_verify_failed", repository="default") == 1 and \
            value(samples, "cairn_backup_last_verify_success", repository="default",
                  type="full") == 0
    wait_until(failed_shows, timeout=10, what="the failed verification in /metrics")


@pytest.mark.parametrize("repo_kind", ["s3"])
def test_a_slow_catalog_is_listed_at_most_a_tenth_of_the_time(server_factory, repo):
    """A scrape lists the repositories' catalogs and keeps the figures for ten times as
    long as the listing took: with every S3 request of the repository slowed by 0.3 s
    (the test server's proxy), a scrape right after another is answered from the kept
    figures, without a request to S3, and says how old they are; once that time has
    passed, a scrape lists again."""
    s = server_factory(extra_args=repo.server_args())
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r.text
    s3 = repo.s3env
    s3.fault(action="delay", seconds=0.3, path=repo.prefix, count=-1)
    try:
        scrape(s)  # lists, slowly, and keeps the figures
        s3.clear_log()
        t0 = time.monotonic()
        samples, _ = scrape(s)
        took = time.monotonic() - t0
        assert [e for e in s3.log() if repo.prefix in e["path"]] == [], s3.log()
        assert took < 0.3, took
        assert value(samples, "cairn_backups", repository="default") == 1
        assert 0 <= value(samples, "cairn_repository_listed_age_seconds") < 10

        def listed_again():
            scrape(s)
            return [e for e in s3.log() if repo.prefix in e["path"]]
        wait_until(listed_again, 60, "a scrape to list the catalog again")
    finally:
        s3.clear_faults()
