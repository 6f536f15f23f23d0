"""Scheduled backups and drills inside cairnd (issue 19): --backup-config names, per
repository, a schedule per backup type (an interval or a five-field cron expression),
a retention policy applied after each scheduled backup, restore drills and an alert
webhook. Exactly one node of a cluster runs a schedule; after a failover the new
leader continues it from the repository's catalog (an overdue run at once, once; no
run twice). /status has a `backups` section, GET /admin/backup-config shows the
configuration with its secrets masked, SIGHUP reloads it, and a configuration that is
not valid stops the start with a message naming the key.

Schedules are in seconds here, not hours. The cron arithmetic has unit tests of its own
(tests/unit/test_cron.c, and tests/unit/test_tz.c for time zones); here a configuration
with zones is shown and its next runs computed in UTC, and a zone that is not there
stops the start."""
import datetime
import json
import os
import re
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


def test_a_run_recorded_in_the_future_does_not_hold_the_schedule_back(server_factory,
                                                                      tmp_path, cairn_bin):
    """The clock stepped back (it ran a year ahead when the last drill was recorded, or
    another node's did): the newest verification in the catalog is stamped a year from
    now. The drills run a period from now, not from that time (before: none for a year,
    and nothing said)."""
    import sqlite3
    repo = tmp_path / "repo"
    db = tmp_path / "plain.db"
    h = sqlite3.connect(str(db))
    h.execute("CREATE TABLE t(x)")
    h.commit()
    h.close()
    r = subprocess.run([str(cairn_bin), "backup", "create", "--db", str(db), "--repo",
                        str(repo)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ids = [p.name[:-4] for p in repo.iterdir() if p.name.endswith(".cbk")]
    r = subprocess.run([str(cairn_bin), "backup", "verify", "--repo", str(repo)] + ids,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sidecars = [p for p in repo.iterdir() if p.name.endswith(".verified")]
    assert len(sidecars) == 1, list(repo.iterdir())
    doc = json.loads(sidecars[0].read_text())
    year_ms = 365 * 86400 * 1000
    doc["verified_ms"] += year_ms
    sidecars[0].write_text(json.dumps(doc))
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "1h"}, "drill": "2s"}}})
    s = server_factory(extra_args=["--backup-dir", str(repo), "--backup-config", cfg])
    wait_configured(s)
    # The schedule plans its runs once the node knows it runs them, a moment after the
    # configuration shows.
    d = wait_until(lambda: (lambda d: d if d["drill"]["next_run"] is not None else None)(
        status_backups(s)["repositories"]["default"]), 20, "the drill's next run to be planned")
    year = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=300)
    assert d["drill"]["next_run"] < year.strftime("%Y-%m-%dT%H:%M:%S"), d["drill"]
    wait_until(lambda: status_backups(s)["repositories"]["default"]["drill"]["runs"] >= 1
               or None, 20, "a drill, though the last one is stamped a year from now")


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


def next_local(zone, hour, minute, now, weekdays=range(7)):
    """The next hour:minute wall-clock time in `zone` after the instant `now` (an aware
    datetime), on one of `weekdays` (Monday 0), as a UTC datetime: Python's own zoneinfo,
    not cairn's, does the zone arithmetic."""
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(zone)
    day = now.astimezone(tz).date()
    for k in range(8):
        d = day + datetime.timedelta(days=k)
        t = datetime.datetime(d.year, d.month, d.day, hour, minute, tzinfo=tz)
        if d.weekday() in weekdays and t > now:
            return t.astimezone(datetime.timezone.utc)
    raise AssertionError("no such time within a week")


@pytest.mark.skipif(not os.path.isdir("/usr/share/zoneinfo"),
                    reason="/usr/share/zoneinfo absent: install tzdata (scripts/deps.sh)")
def test_cron_schedules_in_a_time_zone(server_factory, tmp_path):
    """A repository's time_zone applies to its cron schedules, CRON_TZ= to one; both are
    shown by GET /admin/backup-config, and /status gives the next runs in UTC. SIGHUP
    reads the zones again; a reload naming an unknown zone is refused."""
    doc = {"repositories": {"default": {
        "time_zone": "Europe/Paris",
        "schedules": {"full": "0 3 * * *",
                      "incremental": "CRON_TZ=America/New_York 0 9 * * 1-5"},
        "drill": "off"}}}
    cfg = write_config(tmp_path / "backup.json", doc)
    s = server_factory(extra_args=["--backup-config", cfg])
    wait_configured(s)
    t0 = datetime.datetime.now(datetime.timezone.utc)
    shown = s.get_json("/admin/backup-config")["repositories"]["default"]
    assert shown["time_zone"] == "Europe/Paris", shown
    assert shown["schedules"] == {"full": "0 3 * * *",
                                  "incremental": "CRON_TZ=America/New_York 0 9 * * 1-5"}, shown

    def types():
        return status_backups(s)["repositories"]["default"]["types"]
    wait_until(lambda: all(types()[k]["next_run"] for k in ("full", "incremental")), 10,
               "the next runs in /status")
    t1 = datetime.datetime.now(datetime.timezone.utc)
    ty = types()
    assert ty["full"]["schedule"] == "0 3 * * *", ty

    def check(kind, zone, hour, minute, weekdays=range(7)):
        got = ty[kind]["next_run"]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", got), got  # UTC
        got = datetime.datetime.strptime(got, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc)
        # computed after some instant between t0 - 10 s and t1
        want = {next_local(zone, hour, minute, t, weekdays)
                for t in (t0 - datetime.timedelta(seconds=10), t1)}
        assert got in want, (kind, got, want)
    check("full", "Europe/Paris", 3, 0)
    check("incremental", "America/New_York", 9, 0, range(5))
    assert ty["full"]["next_run"][11:16] in ("01:00", "02:00"), ty  # 03:00 CEST / CET

    # SIGHUP: another zone is read.
    doc["repositories"]["default"]["time_zone"] = "Asia/Kolkata"
    write_config(cfg, doc)
    s.kill(signal.SIGHUP, wait=False)
    wait_until(lambda: s.get_json("/admin/backup-config")["reloads"] == 1, 10, "the reload")
    assert s.get_json("/admin/backup-config")["repositories"]["default"]["time_zone"] == \
        "Asia/Kolkata"
    wait_until(lambda: (types()["full"]["next_run"] or "")[11:16] == "21:30", 10,
               "03:00 in Kolkata (21:30 UTC) as the next full backup")

    # A reload naming a zone that is not there is refused; the running one stays.
    doc["repositories"]["default"]["time_zone"] = "Europe/Atlantis"
    write_config(cfg, doc)
    s.kill(signal.SIGHUP, wait=False)
    wait_until(lambda: "reload refused" in s.stderr_text(), 10, "the refusal in the log")
    assert ('repositories.default.time_zone: time zone "Europe/Atlantis": unknown zone'
            in s.stderr_text()), s.stderr_text()
    shown = s.get_json("/admin/backup-config")
    assert shown["reloads"] == 1 and shown["repositories"]["default"]["time_zone"] == \
        "Asia/Kolkata", shown
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
    """An incremental schedule whose repository cannot be opened (its path is a file)
    fails, says why in /status and the log, and runs again; once the repository can be
    written it succeeds: first as a full backup, there being nothing to chain to, then
    as incrementals on it."""
    repo = tmp_path / "repo"
    repo.write_text("not a directory")
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"incremental": "1s"}, "drill": "off",
        "webhook": "http://alerts.example/hook?key=$$secret"}}})
    s = server_factory(extra_args=["--backup-config", cfg, "--backup-dir", repo])
    wait_configured(s)

    def ty():
        return status_backups(s)["repositories"]["default"]["types"]["incremental"]
    wait_until(lambda: ty()["failures"] >= 2, 15, "two failed incremental runs")
    t = ty()
    assert t["last_success"] is None and t["runs"] == 0, t
    assert "Not a directory" in t["last_failure"]["message"], t
    assert t["last_failure"]["time"], t
    assert t["next_run"] > t["last_failure"]["time"], t
    log = s.stderr_text()
    assert "backup schedule failed: cannot read the catalog: " in log, log
    # Tried again when a run would be, not at every turn of the schedule's loop.
    assert log.count("cannot read the catalog") <= ty()["failures"] + 1, log
    assert "http://alerts.example/hook?key=***" in log and "secret" not in log, log
    repo.unlink()
    repo.mkdir()
    wait_until(lambda: ty()["runs"] >= 2, 15, "two incremental runs once the repository works")
    listed = sorted(s.get_json("/admin/backups?local")["backups"], key=lambda e: e["id"])
    assert [e["type"] for e in listed[:2]] == ["full", "incremental"], listed
    assert listed[1]["parent_id"] == listed[0]["id"], listed
    assert "taken as a full backup" in s.stderr_text()


def test_a_scheduled_incremental_on_a_broken_chain_takes_a_full_backup(server_factory, tmp_path):
    """The chain's newest incremental failed its verification (a damaged block): an
    incremental on it could never be restored, and a schedule that refused until its next
    full run would leave the database without a backup meanwhile. The scheduled run takes
    a full backup instead, says why in the log and its alert, and the runs after it chain
    to that full backup."""
    repo = tmp_path / "repo"
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"incremental": "2s"}, "drill": "off"}}})
    s = server_factory(extra_args=["--backup-config", cfg, "--backup-dir", repo])
    wait_configured(s)
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    assert_exec_ok(s.execute([["INSERT INTO t(v) VALUES(?)", "row %d %s" % (i, "x" * 300)]
                              for i in range(300)]))

    def backups():
        return sorted(s.get_json("/admin/backups?local")["backups"], key=lambda e: e["id"])
    wait_until(lambda: len(backups()) >= 2, 20, "a full backup and an incremental on it")
    inc = [e for e in backups() if e["type"] == "incremental"][0]
    with open(inc["path"], "r+b") as fh:  # a block: past the header, before the manifest
        fh.seek(600)
        b = fh.read(16)
        fh.seek(600)
        fh.write(bytes(x ^ 0xFF for x in b))
    r = s.raw("POST", "/admin/backups/%s/verify" % inc["id"], {})
    assert r.status == 200 and r.json()["ok"] is False, r
    seen = {e["id"] for e in backups()}
    wait_until(lambda: any(e["id"] not in seen and e["type"] == "full" for e in backups()), 20,
               "a full backup in place of the scheduled incremental")
    new_full = [e for e in backups() if e["id"] not in seen and e["type"] == "full"][0]
    log = s.stderr_text()
    assert "failed its verification" in log and "a full backup, %s, was taken instead" % \
        new_full["id"] in log, log
    wait_until(lambda: any(e["type"] == "incremental" and e["parent_id"] == new_full["id"]
                           for e in backups()), 20, "an incremental on the new full backup")
    # No backup was written on the broken chain.
    assert not [e for e in backups() if e["parent_id"] == inc["id"]], backups()


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
    ("unknown zone", {"repositories": {"default": {"schedules": {"full": "0 3 * * *"},
                                                   "time_zone": "Mars/Olympus_Mons"}}},
     # "unknown zone (...)", or without tzdata "/usr/share/zoneinfo is missing: ..."
     "repositories.default.time_zone: time zone \"Mars/Olympus_Mons\": "),
    ("unknown CRON_TZ", {"repositories": {"default": {"schedules": {
        "full": "CRON_TZ=Europe/Pariss 0 3 * * *"}}}},
     "repositories.default.schedules.full: CRON_TZ: time zone \"Europe/Pariss\": "),
    ("zone name", {"repositories": {"default": {"schedules": {"full": "1h"},
                                                "time_zone": "../../etc/passwd"}}},
     "repositories.default.time_zone: time zone \"../../etc/passwd\": not an IANA zone name"),
    ("zone type", {"repositories": {"default": {"schedules": {"full": "1h"}, "time_zone": 1}}},
     "repositories.default.time_zone: expected a zone name"),
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

# Issue 19: incrementals every 2 s and a full every 10 s, with retention, for a minute
# under a write load in a 3-node cluster, the leader killed in the middle: 25 s of
# schedule before the kill and 35 s after the new leader takes over (the election's few
# seconds come on top). Runs fall on both sides of the failover, an overdue run after it,
# incrementals chain across leaders, whole chains expire (the old leader's and the new
# one's), both leaders drill. The 35 s after the failover give the new leader at least
# three fulls, so that keep_full 2 expires one of its own: a full that only the count of
# keep_full lets go (the old leader's newest full stays whatever the count).
FULL_S, INC_S = 10, 2
BEFORE_KILL_S, AFTER_FAILOVER_S = 25, 35


def retention_keeps(entries, policy):
    """The backups `policy` keeps among `entries` ({id: catalog entry}), decided as
    src/backup/expire.h says, independently of its C code: {id: [reasons]}, reasons in
    expireDecide's words. Only the rules this file's cluster test uses are modelled
    (keep_full: the newest N full backups by creation time and every backup whose chain
    ends at one); then, whatever the rules, the newest backup of each source and its
    newest full (by id, which sorts by creation), and every ancestor of a kept backup
    ("needed by"). A damaged entry is never judged: kept."""
    assert set(policy) <= {"keep_full"}, "the model knows keep_full only: %r" % (policy,)
    good = {i: e for i, e in entries.items() if not e.get("error")}
    keeps = {i: ["damaged"] for i in entries if i not in good}

    def keep(i, why):
        keeps.setdefault(i, []).append(why)

    def root(i):
        cur, steps = good.get(i), 0
        while cur is not None and cur["type"] != "full" and steps <= len(good):
            cur, steps = good.get(cur.get("parent_id") or ""), steps + 1
        return cur["id"] if cur is not None and cur["type"] == "full" else None

    newest_first = sorted(good.values(), key=lambda e: (e["created_ms"], e["id"]), reverse=True)
    fulls = [e["id"] for e in newest_first if e["type"] == "full"][:policy.get("keep_full", 0)]
    for i in sorted(good):
        r = root(i)
        if r in fulls:
            k = fulls.index(r) + 1
            keep(i, "keep-full #%d of %d" % (k, policy["keep_full"]) if i == r else
                 "chain of keep-full #%d (%s)" % (k, r))
    for src in {e["source"] for e in good.values()}:
        mine = sorted(i for i, e in good.items() if e["source"] == src)
        keep(mine[-1], "newest of its source")
        mine_full = [i for i in mine if good[i]["type"] == "full"]
        if mine_full and mine_full[-1] != mine[-1]:
            keep(mine_full[-1], "newest full of its source")
    for i in sorted(keeps, reverse=True):
        cur = good.get(i)
        while cur is not None and cur.get("parent_id") in good:
            keep(cur["parent_id"], "needed by %s" % cur["id"])
            cur = good[cur["parent_id"]]
    return keeps


# How expireDecide words the reason a backup stays: a rule, or an ancestor's need.
KEEP_REASON = (r"^(keep-full #\d+ of \d+|chain of keep-full #\d+ \(\S+\)|newest of its source"
               r"|newest full of its source|needed by \S+)$")


def quiet_catalog(node, quiet=2.0, timeout=60):
    """The repository's listing (GET /admin/backups?local) once it has not changed, not
    even a verification, for `quiet` seconds: a scheduled run (its backup, then its
    expiry) or a drill that was under way when the schedule was taken away has ended."""
    last, since, t_end = None, time.monotonic(), time.monotonic() + timeout
    while True:
        listed = {e["id"]: e for e in node.get_json("/admin/backups?local")["backups"]}
        shape = sorted((i, e["verified"], e["verified_at"]) for i, e in listed.items())
        now = time.monotonic()
        if shape != last:
            last, since = shape, now
        elif now - since >= quiet:
            return listed
        assert now < t_end, "the catalog of %s still changing after %ds" % (node.name, timeout)
        time.sleep(0.25)  # spaces the reads; the condition is the catalog's stillness


def iso_seconds(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def scrape_metrics(node):
    """GET /metrics parsed with prometheus_client's own parser: {(name, labels): value}
    and the time of the scrape."""
    from prometheus_client.parser import text_string_to_metric_families
    r = node.raw("GET", "/metrics")
    at = time.time()
    assert r.status == 200, (node.name, r)
    samples = {}
    for fam in text_string_to_metric_families(r.text):
        assert fam.name.startswith("cairn_"), fam.name
        for smp in fam.samples:
            key = (smp.name, tuple(sorted(smp.labels.items())))
            assert key not in samples, "%s: sample %r given twice" % (node.name, key)
            samples[key] = smp.value
    return samples, at


def metrics_disagree(node, repo="default"):
    """Where node's /metrics and its catalog of `repo` (GET /admin/backups?local, read
    after the scrape) disagree: a list of what differs, empty when they agree."""
    samples, at = scrape_metrics(node)
    cat = [e for e in node.get_json("/admin/backups?local")["backups"]
           if e.get("repository", repo) == repo]
    bad = []

    def check(name, want, approx=0.0, **labels):
        key = (name, tuple(sorted(dict(repository=repo, **labels).items())))
        got = samples.get(key)
        if want is None:
            if got is not None:
                bad.append("%s%r is %r, expected no sample" % (name, labels, got))
        elif got is None or abs(got - want) > approx:
            bad.append("%s%r is %r, the catalog says %r" % (name, labels, got, want))

    check("cairn_repository_up", 1)
    check("cairn_backups", len(cat))
    check("cairn_backup_bytes", sum(e["size_bytes"] for e in cat))
    check("cairn_backup_verify_failed", sum(e["verified"] == "failed" for e in cat))
    for kind in ("full", "incremental", "differential"):
        of = [e for e in cat if e["type"] == kind and not e.get("error")]
        newest = max(of, key=lambda e: e["created_ms"]) if of else None
        check("cairn_backup_last_timestamp_seconds",
              newest and newest["created_ms"] / 1000.0, 0.0005, type=kind)
        check("cairn_backup_last_size_bytes", newest and newest["size_bytes"], type=kind)
        check("cairn_backup_last_index", newest and newest["raft_index"], type=kind)
        check("cairn_backup_last_duration_seconds", newest and newest["duration_ms"] / 1000.0,
              0.0005, type=kind)
        check("cairn_backup_last_age_seconds", newest and at - newest["created_ms"] / 1000.0,
              5, type=kind)
        checked = [e for e in of if e["verified"] != "unverified"]
        last = max(checked, key=lambda e: iso_seconds(e["verified_at"])) if checked else None
        check("cairn_backup_last_verify_timestamp_seconds",
              last and iso_seconds(last["verified_at"]), 0.0015, type=kind)
        check("cairn_backup_last_verify_age_seconds",
              last and at - iso_seconds(last["verified_at"]), 5, type=kind)
        check("cairn_backup_last_verify_success", last and int(last["verified"] == "verified"),
              type=kind)
    return bad, samples, cat


@pytest.mark.cluster
def test_cluster_schedule_survives_a_failover(make_cluster, tmp_path, cairn_bin):
    shared = tmp_path / "shared-backups"  # the repository every node uses (as S3 would be)
    policy = {"keep_full": 2}
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "%ds" % FULL_S, "incremental": "%ds" % INC_S},
        "retention": policy,
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
        deadline = time.monotonic() + BEFORE_KILL_S
        wait_until(lambda: time.monotonic() >= deadline and writers.count > 0,
                   BEFORE_KILL_S + 10, "%d s of schedule under load" % BEFORE_KILL_S)
        t_kill = time.time()
        leader.kill()
        survivors = [n for n in c.nodes if n is not leader]
        new = c.leader(among=survivors, timeout=30)
        wait_until(lambda: status_backups(new)["repositories"]["default"]["runner"], 15,
                   "the new leader running the schedule")
        failover = time.time() - t_kill
        deadline = time.monotonic() + AFTER_FAILOVER_S
        wait_until(lambda: time.monotonic() >= deadline, AFTER_FAILOVER_S + 10,
                   "%d s more of schedule" % AFTER_FAILOVER_S)
        writers.wait_more(10)
        b = status_backups(new)["repositories"]["default"]
        leader.start()
        wait_configured(leader)  # its SIGHUP handler in place, for the reload below
    finally:
        seen = watch.stop()
        writers.stop()

    # The schedule taken away (a reload with no schedule and no drill; an empty
    # "repositories" would be refused), so that the catalog stops changing: the run or
    # drill under way at the reload ends (its backup, then the expiry after it), and
    # nothing starts after it. The retention and /metrics checks below need a catalog
    # that holds still.
    write_config(cfg, {"repositories": {"default": {
        "schedules": {}, "retention": policy, "drill": "off"}}})
    for n in c.nodes:
        n.kill(signal.SIGHUP, wait=False)
    for n in c.nodes:
        wait_until(lambda: n.get_json("/admin/backup-config")["reloads"] == 1, 10,
                   "%s to reload its backup configuration" % n.name)
    final = quiet_catalog(new)

    # The catalog has the expected runs: none doubled, none missed (the failover's time
    # aside), on both sides of the kill.
    sources = {e["source"] for e in seen.values()}
    assert len(sources) == 2, sources  # two leaders took them
    for kind, interval in (("full", FULL_S), ("incremental", INC_S)):
        runs = runs_of(seen, kind)
        # a minute of schedule: a run per interval, less the one the failover may take and
        # the one each end may cut
        assert len(runs) >= (BEFORE_KILL_S + AFTER_FAILOVER_S) // interval - 2, (
            kind, [e["id"] for e in runs])
        check_spacing(runs, interval, interval + failover + 3, kind)
        assert any(e["created_ms"] / 1000.0 > t_kill for e in runs), (kind, "none after the kill")
    assert b["types"]["full"]["failures"] == 0, b
    assert b["types"]["incremental"]["failures"] == 0, b
    # Drills ran and are recorded in the catalog.
    assert b["drill"]["last"] is not None and b["drill"]["last"]["result"] == "passed", b
    # Retention: the expired are gone, the kept restore and verify.
    assert any(e["verified"] == "verified" for e in final.values()), final
    fulls_seen = runs_of(seen, "full")
    fulls_kept = runs_of(final, "full")
    assert len(fulls_kept) < len(fulls_seen), "nothing expired"
    assert len(fulls_kept) <= 2 + len(sources), [e["id"] for e in fulls_kept]

    # Retention deleted exactly what the policy says. Two checks, the first the stronger:
    # (1) the policy decided here, in Python, from the documented rules (expire.h,
    # OPERATIONS.md "Retention"), not from the C code under test, over every backup that
    # was ever in the repository (the watcher's, and what the quiet catalog holds, which
    # adds the run the reload caught), must keep exactly what the repository holds:
    # nothing kept that should have gone, nothing gone that should have stayed. Deciding
    # over all of them is the same as deciding over what the last expiry saw: what went
    # before it would have gone then too (a full leaves the newest two and never comes
    # back; a source's newest backup stays its newest), and no backup was taken after it.
    # keep_full does not depend on the time, so the last expiry's time does not enter.
    # (2) `cairn backup expire --dry-run` with the same policy (the C decision a second
    # time, through the CLI) would expire nothing more, and gives each survivor the
    # reason (1) found: a rule, or a kept backup that needs it; never "no rule keeps it".
    everything = dict(seen)
    everything.update(final)
    keeps = retention_keeps(everything, policy)
    should_have_gone = sorted(set(final) - set(keeps))
    should_have_stayed = sorted(set(keeps) - set(final))
    assert not should_have_gone and not should_have_stayed, (
        "retention: kept but the policy lets them go: %r; gone but the policy keeps them: %r"
        % (should_have_gone, {i: keeps[i] for i in should_have_stayed}))
    assert set(everything) - set(final), "the expiry deleted nothing"
    # ...and the run tells keep_full 2 from keep_full 3: a full that only the count lets go.
    more = dict(policy, keep_full=policy["keep_full"] + 1)
    assert set(retention_keeps(everything, more)) - set(final), (
        "no full expired by the count of keep_full alone", sorted(everything))
    p = subprocess.run([str(cairn_bin), "backup", "expire", "--repo", str(shared),
                        "--keep-full", str(policy["keep_full"]), "--dry-run", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr)
    report = {e["id"]: e for e in json.loads(p.stdout)["backups"]}
    assert set(report) == set(final), (sorted(report), sorted(final))
    for i, e in sorted(report.items()):
        assert e["action"] == "keep" and not e["damaged"], e
        reasons = e["reason"].split("; ")
        assert all(re.match(KEEP_REASON, r) for r in reasons), e
        for why in keeps[i]:
            if not why.startswith("needed by"):  # expireDecide names one child only
                assert why in reasons, (i, why, e["reason"])
        assert any(r.startswith("needed by") for r in reasons) == any(
            w.startswith("needed by") for w in keeps[i]), (i, keeps[i], e["reason"])

    # /metrics, on every node (all three list the shared repository), parsed with
    # prometheus_client's text parser, against the node's catalog: counts and bytes, the
    # newest backup of each type, and the newest verification of each type, which the
    # drills made (no other verification has run yet): passed, and since the failover.
    # The catalog holds still by now, so they agree at once; should a listing lag, the
    # comparison is made again (scrape, then catalog) until they agree, for 20 s at most.
    for n in c.nodes:
        t_end = time.monotonic() + 20
        while True:
            disagreement, samples, cat = metrics_disagree(n)
            if not disagreement:
                break
            assert time.monotonic() < t_end, (n.name, disagreement)
            time.sleep(0.25)  # spaces the comparisons
        assert {e["id"] for e in cat} == set(final), n.name
        for kind in ("full", "incremental"):
            key = tuple(sorted(dict(repository="default", type=kind).items()))
            assert samples[("cairn_backup_last_verify_success", key)] == 1, (n.name, kind)
            assert samples[("cairn_backup_last_verify_timestamp_seconds", key)] > t_kill, (
                n.name, kind, "no drill by the new leader")

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
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "1h"}, "drill": "1s"}}})
    s = server_factory(extra_args=["--backup-dir", tmp_path / "repo", "--backup-config", cfg],
                       start=False)
    # The drill's scratch space, DATA.drill beside the data directory, on a small disk.
    small = s.data_dir.parent / (s.data_dir.name + ".drill")
    mount_tmpfs(small, 4)
    try:
        s.start()
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
            return last is not None and last["result"] == "failed" and d
        d = wait_until(refused, 15, "the drill of %s refused" % bid)
        # The newest backup: this one, or the scheduled full taken at the start when it
        # ran after this one (with the same 8 MB).
        bid = d["last"]["backup"]
        msg = d["last"]["message"]
        assert "drill of %s refused: the trial restore needs" % bid in msg, d
        assert str(small) in msg and "are free" in msg, d
        assert "drill failed: drill of %s refused" % bid in s.stderr_text()
        # Nothing left behind in the scratch space (a mount point: emptied, kept).
        assert os.listdir(small) == [], os.listdir(small)
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


# ---- drills: scratch space beside the data directory, point-in-time drills ---------------


def drill_scratch(node):
    """A drill's scratch space: DATA.drill, beside the node's data directory."""
    return node.data_dir.parent / (node.data_dir.name + ".drill")


def test_drill_scratch_space_is_beside_the_data_directory_and_removed(server_factory,
                                                                     tmp_path):
    repo = tmp_path / "repo"
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": {
        "schedules": {"full": "1h"}, "drill": "1s"}}})
    s = server_factory(extra_args=["--backup-dir", repo, "--backup-config", cfg], start=False)
    scratch = drill_scratch(s)
    # Leftovers of drills killed mid-way: removed by the next drill. A trial restore's
    # file, and a point-in-time drill's scratch directory (pitrRestore's, beside its
    # pitr.db) with the database it was replaying into.
    scratch.mkdir(parents=True)
    (scratch / ".db.verify-crashed").write_bytes(b"left by a killed drill")
    (scratch / ".pitr.db.pitr-crashd").mkdir()
    (scratch / ".pitr.db.pitr-crashd" / "db").write_bytes(b"left by a killed PITR drill")
    s.start()
    wait_configured(s)
    # A few MB: a trial restore long enough to be seen under way.
    assert_exec_ok(s.execute([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000) "
        "INSERT INTO t SELECT x, randomblob(1000) FROM c"]))
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    bid = r.json()["backup"]["id"]
    wait_until(lambda: not (scratch / ".db.verify-crashed").exists()
               and not (scratch / ".pitr.db.pitr-crashd").exists(), 15,
               "the next drill to remove a killed drill's leftovers")
    # The scratch directory exists while a drill runs (observed), and not between drills.
    wait_until(scratch.exists, 15, "a drill's scratch space %s to appear" % scratch,
               interval=0.002)

    def passed():
        d = status_backups(s)["repositories"]["default"]["drill"]
        return d["runs"] >= 2 and d["last"]["result"] == "passed" and d
    d = wait_until(passed, 20, "two drills passed")
    # The newest backup: this one, or the scheduled full of the start when it ran after.
    assert d["last"]["backup"] >= bid and d["last"]["pitr"] is None, d  # no archive
    bid = d["last"]["backup"]
    log = s.stderr_text()
    assert "drill of %s passed (trial restore in %s, integrity_check" % (bid, scratch) in log, log
    s.stop()  # a drill under way finishes first
    assert not scratch.exists(), sorted(os.listdir(scratch))
    # Nothing of a drill in the repository or in the data directory.
    assert all(p.endswith((".cbk", ".verified")) for p in os.listdir(repo)), os.listdir(repo)
    assert not [p for p in os.listdir(s.data_dir) if "drill" in p or "verify" in p], \
        os.listdir(s.data_dir)
    s.start()
    listed = {e["id"]: e for e in s.get_json("/admin/backups?local")["backups"]}
    assert listed[bid]["verified"] == "verified" and listed[bid]["verified_at"], listed[bid]


def start_archiving_node(server_factory, tmp_path, extra=(), webhook=None):
    """A node archiving to a directory repository, a full backup taken after the archive
    began and writes after it: a window of several indexes to drill. Drills every second."""
    from test_archive import wait_archived, wait_archiving
    repo = tmp_path / "repo"
    doc = {"schedules": {"full": "1h"}, "drill": "1s"}
    if webhook is not None:
        doc["webhook"] = webhook
    cfg = write_config(tmp_path / "backup.json", {"repositories": {"default": doc}})
    s = server_factory(extra_args=["--backup-dir", repo, "--backup-config", cfg, "--archive",
                                   "--archive-interval", "100ms"] + list(extra))
    wait_configured(s)
    wait_archiving(s)
    assert_exec_ok(s.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
    r = s.raw("POST", "/admin/backup", {"type": "full"})
    assert r.status == 200, r
    base = r.json()["backup"]
    for i in range(20):
        assert_exec_ok(s.execute([["INSERT INTO t(v) VALUES(?)", "row %d" % i]]))
    wait_archived(s, base["raft_index"] + 20)
    return s, repo, base


def test_drill_restores_the_archive_to_a_random_index_in_the_window(server_factory, tmp_path):
    from test_archive import status
    s, repo, base = start_archiving_node(server_factory, tmp_path)
    scratch = drill_scratch(s)

    def pitr_passed():
        d = status_backups(s)["repositories"]["default"]["drill"]
        last = d["last"]
        return (last is not None and last["pitr"] is not None and last["backup"] == base["id"]
                and last["pitr"]["target_index"] > base["raft_index"] and d)
    d = wait_until(pitr_passed, 20, "a PITR drill after the writes")
    head = status(s)["archive"]["head_index"]  # it only grows
    last = d["last"]
    p = last["pitr"]
    assert last["result"] == "passed" and p["result"] == "passed" and p["message"] == "", d
    # Inside the window: from the base backup's index to the archive's head.
    assert base["raft_index"] <= p["target_index"] <= head, (base["raft_index"], head, p)
    # At the last archived entry up to the target (configuration changes and barriers
    # take indexes the archive does not hold): the drill checks it is exactly that one.
    assert p["stopped_index"] <= p["target_index"], p
    assert p["time"] and p["time"].endswith("Z"), p  # the moment restored to
    log = s.stderr_text()
    found = re.findall(r"drill of %s passed \(trial restore in %s, integrity_check\); PITR drill "
                       r"to index (\d+) passed \(stopped at index (\d+), " % (
                           base["id"], re.escape(str(scratch))), log)
    assert (str(p["target_index"]), str(p["stopped_index"])) in found, (p, found, log)
    assert all(int(b) <= int(a) <= head for a, b in found), (found, head)
    # Nothing of the restore left behind.
    s.stop()
    assert not scratch.exists(), sorted(os.listdir(scratch))
    assert all(p.endswith((".cbk", ".verified", ".seg")) for p in os.listdir(repo)), \
        os.listdir(repo)


def test_a_damaged_archive_segment_fails_the_pitr_drill(server_factory, tmp_path, free_port):
    hook = WebhookReceiver(free_port())
    try:
        s, repo, base = start_archiving_node(
            server_factory, tmp_path,
            webhook="http://127.0.0.1:%d/hook" % hook.server.server_port)

        def pitr_result():
            last = status_backups(s)["repositories"]["default"]["drill"]["last"]
            return last is not None and last["pitr"] is not None and last["pitr"]["result"]
        assert wait_until(pitr_result, 20, "a PITR drill") == "passed"
        assert s.raw("GET", "/readyz?backups").status == 200
        # One byte flipped in the middle of the newest segment (no write since: it stays
        # the newest).
        segs = sorted(p for p in os.listdir(repo) if p.startswith("archive-")
                      and p.endswith(".seg"))
        assert segs, os.listdir(repo)
        victim = repo / segs[-1]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))

        def failed():
            last = status_backups(s)["repositories"]["default"]["drill"]["last"]
            return (last is not None and last["pitr"] is not None
                    and last["pitr"]["result"] == "failed" and last)
        last = wait_until(failed, 20, "a PITR drill failed by %s" % victim.name)
        assert last["result"] == "failed", last
        assert victim.name in last["pitr"]["message"], last
        assert last["pitr"]["message"] in last["message"], last
        wait_until(lambda: hook.alerts("drill_failed"), 15, "a drill_failed alert")
        a = hook.alerts("drill_failed")[0]
        assert a["what"] == "restore drill" and victim.name in a["message"], a
        r = s.raw("GET", "/readyz?backups")
        assert r.status == 503 and "drill" in r.text, r
        # The chain itself still verifies: the catalog keeps the backup verified.
        listed = {e["id"]: e for e in s.get_json("/admin/backups?local")["backups"]}
        assert listed[base["id"]]["verified"] == "verified", listed[base["id"]]
        s.stop()
        assert not drill_scratch(s).exists()
    finally:
        hook.close()
