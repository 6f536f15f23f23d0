"""Scheduled backups and drills inside cairnd (issue 19): --backup-config names, per
repository, a schedule per backup type (an interval or a five-field cron expression),
a retention policy applied after each scheduled backup, restore drills and an alert
webhook. Exactly one node of a cluster runs a schedule; after a failover the new
leader continues it from the repository's catalog (an overdue run at once, once; no
run twice). /status has a `backups` section, GET /admin/backup-config shows the
configuration with its secrets masked, SIGHUP reloads it, and a configuration that is
not valid stops the start with a message naming the key.

Schedules are in seconds here, not hours. The cron arithmetic has unit tests of its own
(tests/unit/test_cron.c)."""
import datetime
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from clusterutil import ClusterWriters
from conftest import assert_exec_ok, wait_until

SLACK = 0.05  # seconds: ids and created times are the same machine's clock


def write_config(path, doc):
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def status_backups(node):
    return node.get_json("/status")["backups"]


def wait_configured(node):
    """cairnd starts its schedules right after the node opens: /readyz may answer a
    moment before."""
    wait_until(lambda: node.raw("GET", "/admin/backup-config").status == 200, 10,
               "%s to show its backup configuration" % node.name)


class CatalogWatcher:
    """Polls a node's repository listing (GET /admin/backups?local) and keeps every entry
    ever seen, so that backups an expiry removed later still count."""

    def __init__(self, nodes, interval=0.2):
        self.nodes = list(nodes)
        self.interval = interval
        self.seen = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def poll_once(self):
        for n in self.nodes:
            if not n.running():
                continue
            try:
                r = n.raw("GET", "/admin/backups?local", timeout=5)
            except OSError:
                continue
            if r.status != 200:
                continue
            with self.lock:
                for e in r.json()["backups"]:
                    self.seen.setdefault(e["id"], e)
            return

    def _run(self):
        while not self.stopping.is_set():
            self.poll_once()
            self.stopping.wait(self.interval)  # the polling period, not synchronisation

    def stop(self):
        self.stopping.set()
        self.thread.join(30)
        self.poll_once()
        with self.lock:
            return dict(self.seen)


def runs_of(entries, kind):
    return sorted((e for e in entries.values() if e["type"] == kind and not e.get("error")),
                  key=lambda e: e["created_ms"])


def check_spacing(runs, interval, longest, what):
    """Consecutive runs of one schedule: never closer than the interval (no run twice),
    never further apart than `longest` (no run missed)."""
    times = [e["created_ms"] / 1000.0 for e in runs]
    gaps = [b - a for a, b in zip(times, times[1:])]
    ids = [e["id"] for e in runs]
    for g, a, b in zip(gaps, ids, ids[1:]):
        assert g >= interval - SLACK, "%s: %s and %s %.3fs apart, under the %gs interval" % (
            what, a, b, g, interval)
        assert g <= longest, "%s: %.3fs between %s and %s (at most %.1fs expected)" % (
            what, g, a, b, longest)
    return gaps


# ---- a single node -------------------------------------------------------------------


def test_single_node_runs_its_schedule_drills_and_reports_in_status(server_factory, tmp_path):
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "4s", "incremental": "1s", "differential": "3s"},
        "drill": "2s",
        "retention": {"keep_full": 2}}}})
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    t0 = time.time()

    def enough():
        b = status_backups(s)["repositories"]["default"]
        assert_exec_ok(s.execute([["INSERT INTO t(v) VALUES(?)", "x" * 100]]))
        return (b["types"]["full"]["runs"] >= 3 and b["types"]["incremental"]["runs"] >= 8
                and b["types"]["differential"]["runs"] >= 2 and b["drill"]["runs"] >= 2)
    wait_until(enough, 30, "3 full, 2 differential and 8 incremental scheduled backups and "
               "2 drills")

    b = status_backups(s)
    assert b["config"].endswith("backup.json"), b
    d = b["repositories"]["default"]
    assert d["runner"] is True, d
    for kind, interval in (("full", 4), ("incremental", 1), ("differential", 3)):
        ty = d["types"][kind]
        assert ty["schedule"] == "%ds" % interval, ty
        assert ty["last_failure"] is None, ty
        assert ty["failures"] == 0, ty
        last = ty["last_success"]
        assert last["id"] and last["time"].endswith("Z") and 0 <= last["age_s"] < 30, ty
        assert ty["next_run"] is not None and ty["next_run"] > last["time"], ty
    drill = d["drill"]
    assert drill["schedule"] == "2s" and drill["last"]["result"] == "passed", drill
    assert drill["failures"] == 0 and drill["next_run"] is not None, drill
    assert d["expiry"]["error"] == "" and d["expiry"]["last_run"] is not None, d

    listed = {e["id"]: e for e in s.get_json("/admin/backups?local")["backups"]}
    # Retention: at most the two newest fulls' chains remain (3 were taken).
    fulls = runs_of(listed, "full")
    assert 1 <= len(fulls) <= 2, [e["id"] for e in fulls]
    # The drill's result is in the catalog.
    drilled = listed.get(drill["last"]["backup"])
    if drilled is not None:
        assert drilled["verified"] == "verified" and drilled["verified_at"], drilled
    assert any(e["verified"] == "verified" for e in listed.values()), listed
    # Spacing of what is left: never twice within an interval.
    check_spacing(runs_of(listed, "incremental"), 1, 1 + 5, "incremental")
    check_spacing(runs_of(listed, "differential"), 3, 3 + 5, "differential")
    # A differential chains to a full backup.
    for e in runs_of(listed, "differential"):
        assert e["parent_id"] in listed and listed[e["parent_id"]]["type"] == "full", e
    assert time.time() - t0 < 60


def test_backup_config_is_shown_masked_and_sighup_reloads_it(server_factory, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("CAIRN_TEST_HOOK_TOKEN", "s3cr3t-t0ken")
    monkeypatch.setenv("CAIRN_TEST_HOOK_PASS", "hunter2")
    doc = {"repositories": {"default": {
        "schedules": {"full": "1h", "incremental": "0 3 * * 1-5"},
        "from": "leader",
        "retention": {"keep_full": 4, "keep_within": "7d"},
        "drill": "off",
        "webhook": "https://ops:${CAIRN_TEST_HOOK_PASS}@alerts.example/hook?token="
                   "$CAIRN_TEST_HOOK_TOKEN&team=db"}}}
    cfg = write_config(tmp_path / "backup.json", doc)
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)
    r = s.raw("GET", "/admin/backup-config")
    assert r.status == 200, r
    assert "s3cr3t" not in r.text and "hunter2" not in r.text, r.text
    shown = r.json()
    d = shown["repositories"]["default"]
    assert d["webhook"] == "https://ops:***@alerts.example/hook?token=***&team=***", d
    assert d["schedules"] == {"full": "1h", "incremental": "0 3 * * 1-5"}, d
    assert d["retention"]["keep_full"] == 4 and d["drill"] == "off" and d["from"] == "leader", d
    assert d["url"] == str(s.data_dir.parent / "backups"), d
    assert shown["reloads"] == 0 and shown["shape"] == "cairn", shown
    assert s.raw("POST", "/admin/backup-config").status == 405
    pretty = s.raw("GET", "/admin/backup-config?pretty")
    assert pretty.status == 200 and pretty.json() == shown and "\n  " in pretty.text, pretty
    # The status names the next cron run: 03:00 UTC on a weekday.
    inc = status_backups(s)["repositories"]["default"]["types"]["incremental"]
    wait_until(lambda: status_backups(s)["repositories"]["default"]["types"]["incremental"]
               ["next_run"] is not None, 10, "the next cron run in /status")
    inc = status_backups(s)["repositories"]["default"]["types"]["incremental"]
    assert inc["next_run"][11:19] == "03:00:00", inc

    # SIGHUP: a change is picked up.
    doc["repositories"]["default"]["schedules"]["incremental"] = "5m"
    write_config(cfg, doc)
    s.kill(signal.SIGHUP, wait=False)
    wait_until(lambda: s.get_json("/admin/backup-config")["reloads"] == 1, 10, "the reload")
    d = s.get_json("/admin/backup-config")["repositories"]["default"]
    assert d["schedules"]["incremental"] == "5m", d

    # A broken file is refused: the configuration in use stays, and the log says why.
    write_config(cfg, {"repositories": {"default": {"schedules": {"full": "every day"}}}})
    s.kill(signal.SIGHUP, wait=False)
    wait_until(lambda: "reload refused" in s.stderr_text(), 10, "the refusal in the log")
    assert "repositories.default.schedules.full" in s.stderr_text()
    shown = s.get_json("/admin/backup-config")
    assert shown["reloads"] == 1 and shown["repositories"]["default"]["schedules"][
        "incremental"] == "5m", shown
    assert s.running()


def test_a_restart_continues_the_schedule_from_the_catalog(server_factory, tmp_path):
    """Not due: nothing is taken again; overdue: taken at once, once."""
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "1h"}, "drill": "off"}}})
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)
    wait_until(lambda: status_backups(s)["repositories"]["default"]["types"]["full"]["runs"] == 1,
               10, "the first full backup")
    first = status_backups(s)["repositories"]["default"]["types"]["full"]["last_success"]
    s.restart()
    wait_configured(s)
    wait_until(lambda: status_backups(s)["repositories"]["default"]["types"]["full"]["next_run"],
               10, "the schedule computed from the catalog")
    full = status_backups(s)["repositories"]["default"]["types"]["full"]
    assert full["runs"] == 0 and full["last_success"]["id"] == first["id"], full
    # Due an hour after the backup the catalog holds, not an hour after the restart.
    def t(iso):
        return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert (t(full["next_run"]) - t(first["time"])).total_seconds() == 3600, full
    # Overdue (the configuration now says every second, the last was a while ago): once,
    # at once, then every second.
    write_config(cfg, {"repositories": {"default": {"schedules": {"full": "3s"}, "drill": "off"}}})
    s.kill(signal.SIGHUP, wait=False)
    wait_until(lambda: status_backups(s)["repositories"]["default"]["types"]["full"]["runs"] >= 1,
               10, "the overdue full backup")
    listed = {e["id"]: e for e in s.get_json("/admin/backups?local")["backups"]}
    check_spacing(runs_of(listed, "full"), 3, 3600, "full")


def test_a_failed_run_is_recorded_and_retried(server_factory, tmp_path):
    """An incremental schedule with no full backup to chain to fails, says why in
    /status and the log, and runs again; once there is a full backup it succeeds."""
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"incremental": "1s"}, "drill": "off",
        "webhook": "http://alerts.example/hook?key=$$secret"}}})
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)

    def ty():
        return status_backups(s)["repositories"]["default"]["types"]["incremental"]
    wait_until(lambda: ty()["failures"] >= 2, 15, "two failed incremental runs")
    t = ty()
    assert t["last_success"] is None and t["runs"] == 0, t
    assert t["last_failure"]["time"] and t["last_failure"]["message"], t
    assert t["next_run"] > t["last_failure"]["time"], t
    log = s.stderr_text()
    assert "scheduled incremental failed: " in log, log
    assert "http://alerts.example/hook?key=***" in log and "secret" not in log, log
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    wait_until(lambda: ty()["runs"] >= 1, 15, "an incremental once there is a full backup")
    t = ty()
    full_id = r.json()["backup"]["id"]
    entry = s.get_json("/admin/backups/%s" % t["last_success"]["id"])["backup"]
    assert entry["type"] == "incremental" and entry["parent_id"] >= full_id, entry


def test_rqlite_auto_backup_shape_is_accepted(server_factory, tmp_path):
    cfg = write_config(tmp_path / "auto.json", {
        "version": 1, "type": "file", "interval": "1s", "no_compress": True,
        "sub": {"path": str(tmp_path / "server1" / "backups")}})
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)
    shown = s.get_json("/admin/backup-config")
    assert shown["shape"] == "rqlite", shown
    assert shown["repositories"]["default"]["schedules"] == {"full": "1s"}, shown
    wait_until(lambda: status_backups(s)["repositories"]["default"]["types"]["full"]["runs"] >= 2,
               15, "two full backups from the rqlite-shaped configuration")


def test_without_backup_config(server):
    assert server.get_json("/status")["backups"] is None
    r = server.raw("GET", "/admin/backup-config")
    assert r.status == 404 and "--backup-config" in r.json()["error"], r


# ---- configurations refused ---------------------------------------------------------------

BAD = [
    ("not json", "{", "not valid JSON"),
    ("unknown repository", {"repositories": {"offsite": {"schedules": {"full": "1h"}}}},
     "repositories.offsite: no repository of this node is named 'offsite'"),
    ("bad interval", {"repositories": {"default": {"schedules": {"full": "1 hour"}}}},
     "repositories.default.schedules.full: cron expression \"1 hour\": 2 fields"),
    ("bad word", {"repositories": {"default": {"schedules": {"full": "hourly"}}}},
     "repositories.default.schedules.full: \"hourly\" is neither an interval"),
    ("bad cron field", {"repositories": {"default": {"schedules": {"full": "0 25 * * *"}}}},
     "repositories.default.schedules.full: hour field \"25\": 25 is out of range (0-23)"),
    ("bad cron name", {"repositories": {"default": {"schedules": {"full": "0 3 * * MON-FRX"}}}},
     "day-of-week field \"MON-FRX\": unknown name \"FRX\""),
    ("never", {"repositories": {"default": {"schedules": {"full": "0 0 30 2 *"}}}},
     "matches no date"),
    ("zone", {"repositories": {"default": {"schedules": {"full": "CRON_TZ=Europe/Paris 0 3 * * *"}}}},
     "zone \"Europe/Paris\": cron schedules run in UTC only"),
    ("type", {"repositories": {"default": {"schedules": {"log": "1h"}}}},
     "repositories.default.schedules.log: unknown backup type"),
    ("unknown key", {"repositories": {"default": {"schedule": {"full": "1h"}}}},
     "repositories.default.schedule: unknown key"),
    ("from", {"repositories": {"default": {"schedules": {"full": "1h"}, "from": "any"}}},
     "repositories.default.from: expected \"leader\" or \"follower\""),
    ("retention", {"repositories": {"default": {"schedules": {"full": "1h"},
                                                "retention": {"keep_fulls": 2}}}},
     "repositories.default.retention"),
    ("drill", {"repositories": {"default": {"schedules": {"full": "1h"}, "drill": "daily"}}},
     "repositories.default.drill:"),
    ("webhook", {"repositories": {"default": {"schedules": {"full": "1h"},
                                              "webhook": "ftp://x"}}},
     "repositories.default.webhook: expected an http:// or https:// URL"),
    ("unset variable", {"repositories": {"default": {"schedules": {"full": "1h"},
                                                     "webhook": "http://h/?k=$CAIRN_TEST_UNSET_VAR"}}},
     "repositories.default.webhook: environment variable CAIRN_TEST_UNSET_VAR is not set"),
    ("rqlite without interval", {"version": 1, "type": "file", "sub": "default"},
     "interval: missing"),
    ("rqlite keys", {"version": 1, "type": "s3", "interval": "1h",
                     "sub": {"bucket": "b", "path": "p", "secret_access_key": "k"}},
     "sub: access keys"),
    ("both shapes", {"interval": "1h", "repositories": {"default": {}}},
     "interval: unknown key beside \"repositories\""),
]


@pytest.mark.parametrize("what,doc,message", BAD, ids=[b[0] for b in BAD])
def test_invalid_configuration_stops_the_start(cairnd_bin, tmp_path, free_port, what, doc,
                                               message):
    cfg = write_config(tmp_path / "bad.json", doc)
    env = dict(os.environ)
    env.pop("CAIRN_TEST_UNSET_VAR", None)
    p = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "data"),
                        "--http-addr", "127.0.0.1:%d" % free_port(),
                        "--raft-addr", "127.0.0.1:%d" % free_port(),
                        "--backup-config", str(cfg)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "cannot start: --backup-config %s: " % cfg in p.stderr, p.stderr
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "data").exists(), "the node started before the check"


def test_missing_configuration_file(cairnd_bin, tmp_path, free_port):
    p = subprocess.run([str(cairnd_bin), "--data-dir", str(tmp_path / "data"),
                        "--http-addr", "127.0.0.1:%d" % free_port(),
                        "--raft-addr", "127.0.0.1:%d" % free_port(),
                        "--backup-config", str(tmp_path / "none.json")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "none.json: No such file or directory" in p.stderr, p.stderr


# ---- a cluster, under load, with a failover -------------------------------------------------

FULL_S, INC_S = 8, 2


@pytest.mark.cluster
def test_cluster_schedule_survives_a_failover(make_cluster, tmp_path):
    shared = tmp_path / "shared-backups"  # the repository every node uses (as S3 would be)
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "%ds" % FULL_S, "incremental": "%ds" % INC_S},
        "retention": {"keep_full": 2},
        "drill": "5s"}}})
    c = make_cluster(3, extra_args=["--backup-dir", shared, "--backup-config", cfg])
    leader = c.leader()
    for n in c.nodes:
        wait_configured(n)
    assert_exec_ok(leader.execute(
        ["CREATE TABLE t(client INTEGER, seq INTEGER, pad BLOB, UNIQUE(client, seq))"]))
    writers = ClusterWriters(c.nodes, clients=4, pad=256).start()
    watch = CatalogWatcher(c.nodes).start()
    try:
        # Only the leader runs the schedule.
        def one_runner():
            runners = [n for n in c.nodes
                       if status_backups(n)["repositories"]["default"]["runner"]]
            return runners == [leader]
        wait_until(one_runner, 10, "the leader alone running the schedule")
        deadline = time.monotonic() + 14
        wait_until(lambda: time.monotonic() >= deadline and writers.count > 0, 20,
                   "14 s of schedule under load")
        t_kill = time.time()
        leader.kill()
        survivors = [n for n in c.nodes if n is not leader]
        new = c.leader(among=survivors, timeout=30)
        wait_until(lambda: status_backups(new)["repositories"]["default"]["runner"], 15,
                   "the new leader running the schedule")
        failover = time.time() - t_kill
        deadline = time.monotonic() + 14
        wait_until(lambda: time.monotonic() >= deadline, 20, "14 s more of schedule")
        writers.wait_more(10)
        b = status_backups(new)["repositories"]["default"]
        leader.start()
    finally:
        seen = watch.stop()
        writers.stop()

    # The catalog has the expected runs: none doubled, none missed (the failover's time
    # aside), on both sides of the kill.
    sources = {e["source"] for e in seen.values()}
    assert len(sources) == 2, sources  # two leaders took them
    for kind, interval in (("full", FULL_S), ("incremental", INC_S)):
        runs = runs_of(seen, kind)
        assert len(runs) >= (28 // interval) - 2, (kind, [e["id"] for e in runs])
        check_spacing(runs, interval, interval + failover + 3, kind)
        assert any(e["created_ms"] / 1000.0 > t_kill for e in runs), (kind, "none after the kill")
    assert b["types"]["full"]["failures"] == 0, b
    assert b["types"]["incremental"]["failures"] == 0, b
    # Drills ran and are recorded in the catalog.
    assert b["drill"]["last"] is not None and b["drill"]["last"]["result"] == "passed", b
    # Retention: the expired are gone, the kept restore and verify.
    final = {e["id"]: e for e in c.leader().get_json("/admin/backups?local")["backups"]}
    assert any(e["verified"] == "verified" for e in final.values()), final
    fulls_seen = runs_of(seen, "full")
    fulls_kept = runs_of(final, "full")
    assert len(fulls_kept) < len(fulls_seen), "nothing expired"
    assert len(fulls_kept) <= 2 + len(sources), [e["id"] for e in fulls_kept]
    node = c.leader()
    kept_ids = set(final)
    leaves = [e for e in final.values()
              if not any(o.get("parent_id") == e["id"] for o in final.values())]
    for e in leaves:
        # Every chain still in the repository is whole and restores.
        chain, cur = [], e
        while cur is not None:
            chain.append(cur["id"])
            cur = final.get(cur["parent_id"]) if cur.get("parent_id") else None
        assert final[chain[-1]]["type"] == "full", (e["id"], chain, kept_ids)
        r = node.raw("POST", "/admin/backups/%s/verify" % e["id"], {"restore": True}, timeout=120)
        assert r.status == 200 and r.json()["ok"] is True, (e["id"], r)


@pytest.mark.cluster
def test_from_follower_runs_on_the_designated_follower_only(make_cluster, tmp_path):
    shared = tmp_path / "shared-backups"
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "2s"}, "from": "follower", "drill": "off"}}})
    c = make_cluster(3, extra_args=["--backup-dir", shared, "--backup-config", cfg])
    leader = c.leader()
    for n in c.nodes:
        wait_configured(n)
    designated = min((n for n in c.nodes if n is not leader), key=lambda n: n.id)

    def runners():
        return [n for n in c.nodes if status_backups(n)["repositories"]["default"]["runner"]]
    wait_until(lambda: runners() == [designated], 15, "%s alone running the schedule"
               % designated.name)
    wait_until(lambda: status_backups(designated)["repositories"]["default"]["types"]["full"]
               ["runs"] >= 2, 15, "two backups by the designated follower")
    assert runners() == [designated]
    entries = {e["id"]: e for e in designated.get_json("/admin/backups?local")["backups"]}
    sources = {e["source"] for e in entries.values()}
    assert len(sources) == 1 and str(designated.data_dir) in sources.pop(), entries
    st = status_backups(leader)["repositories"]["default"]
    assert st["types"]["full"]["next_run"] is None and "designated follower" in st["role"], st

    # The designated follower down: the leader stands in, and the schedule goes on.
    designated.kill()
    wait_until(lambda: status_backups(leader)["repositories"]["default"]["runner"], 15,
               "the leader standing in for the designated follower")
    st = status_backups(leader)["repositories"]["default"]
    assert "designated follower %d is down or behind" % designated.id in st["role"], st
    wait_until(lambda: status_backups(leader)["repositories"]["default"]["types"]["full"]
               ["runs"] >= 1, 15, "a backup by the leader meanwhile")
    # Back and caught up: it runs the schedule again, the leader no longer.
    designated.start()
    wait_until(lambda: [n for n in c.nodes
                        if status_backups(n)["repositories"]["default"]["runner"]] == [designated],
               30, "%s running the schedule again, alone" % designated.name)


def test_drill_refused_when_its_scratch_space_has_no_room(server_factory, tmp_path):
    from conftest import mount_tmpfs
    small = tmp_path / "small"
    mount_tmpfs(small, 4)
    try:
        cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
            "schedules": {"full": "1h"}, "drill": "1s"}}})
        s = server_factory(extra_args=["--backup-dir", small, "--backup-config", cfg])
        wait_configured(s)
        # 8 MB of zeros: a small backup (it compresses), a big restored file.
        assert_exec_ok(s.execute([
            "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 8000) "
            "INSERT INTO t SELECT x, zeroblob(1000) FROM c"]))
        r = s.raw("POST", "/admin/backup", {"type": "full"})
        assert r.status == 200, r
        bid = r.json()["backup"]["id"]

        def refused():
            d = status_backups(s)["repositories"]["default"]["drill"]
            last = d["last"]
            return last is not None and last["backup"] == bid and last["result"] == "failed" and d
        d = wait_until(refused, 15, "the drill of %s refused" % bid)
        msg = d["last"]["message"]
        assert "drill of %s refused: the trial restore needs" % bid in msg, d
        assert str(small) in msg and "are free" in msg, d
        assert "drill failed: drill of %s refused" % bid in s.stderr_text()
        # Nothing left behind in the repository but the backups.
        assert all(p.endswith((".cbk", ".verified")) or p.startswith(".")
                   for p in os.listdir(small)), os.listdir(small)
        s.stop()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=30)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON document POSTed to it."""

    def __init__(self, port):
        import http.server
        received = self.received = []
        lock = self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append((self.path, self.headers.get("Content-Type"),
                                     json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, kind=None):
        with self.lock:
            return [d for _, _, d in self.received if kind is None or d["alert"] == kind]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_alerts_reach_the_webhook_and_readyz_when_the_repository_fails(server_factory, tmp_path,
                                                                        free_port):
    """The repository made unusable (a file where its directory was): the failed backups
    are POSTed to the webhook, then, once no backup has been taken for two periods of the
    schedule, that it is stale; /readyz?backups is 503 naming the repository meanwhile,
    and 200 again once backups succeed."""
    hook = WebhookReceiver(free_port())
    try:
        repo = tmp_path / "repo"
        cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
            "schedules": {"full": "1s"}, "drill": "off",
            "webhook": "http://127.0.0.1:%d/hook?token=$$secret" % hook.server.server_port}}})
        s = server_factory(extra_args=["--backup-dir", repo, "--backup-config", cfg])
        wait_configured(s)
        assert_exec_ok(s.execute(["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]))

        def full():
            return status_backups(s)["repositories"]["default"]["types"]["full"]
        wait_until(lambda: full()["runs"] >= 1, 15, "a scheduled full backup")
        assert s.raw("GET", "/readyz?backups").status == 200
        assert not hook.alerts()

        moved = tmp_path / "repo.moved"
        os.rename(repo, moved)
        repo.write_text("not a directory")
        wait_until(lambda: hook.alerts("backup_failed"), 15, "a backup_failed alert")
        a = hook.alerts("backup_failed")[0]
        assert a["repository"] == "default" and a["what"] == "scheduled full", a
        assert a["message"] and a["node_id"] == s.get_json("/status")["node"]["id"], a
        r = s.raw("GET", "/readyz?backups")
        assert r.status == 503 and "repository 'default'" in r.text and "failed" in r.text, r
        assert s.raw("GET", "/readyz").status == 200  # the node itself is fine
        # Two periods (2 s) after the last good backup: stale, alerted once.
        wait_until(lambda: hook.alerts("backup_stale"), 15, "a backup_stale alert")
        assert full()["stale"] is True
        assert len(hook.alerts("backup_stale")) == 1
        path, ctype, _ = hook.received[0]
        assert path == "/hook?token=$secret" and ctype == "application/json"
        log = s.stderr_text()
        assert "alert backup_failed to http://127.0.0.1:%d/hook?token=***" % \
            hook.server.server_port in log, log
        assert "alert delivered to" in log and "secret" not in log

        repo.unlink()
        os.rename(moved, repo)
        wait_until(lambda: s.raw("GET", "/readyz?backups").status == 200, 15,
                   "/readyz?backups to be 200 once backups succeed again")
        assert full()["stale"] is False
    finally:
        hook.close()
