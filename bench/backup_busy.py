#!/usr/bin/env python3
"""A standalone backup of a database another program is replicating, against the same
backup of the same database left idle, side by side in one run (issue 15, point 4).

    /usr/bin/python3 bench/backup_busy.py [--mb 256] [--runs 7] [--build build] [--no-doc]
                                         [--old-cairn PATH [--old-label TEXT]]

The source is bench/backup_data.py's database (WAL mode; built once and cached in
bench/results/backup-cache/, shared with `make bench-backup`), copied into a scratch
directory. Each run changes 1% of its rows (one transaction, then a TRUNCATE checkpoint)
and times, in turn:

  idle   nothing else has the database open;
  busy   a second process (LOAD below) keeps it the way a replication tool (Litestream)
         does: a read transaction held open on one connection, renewed every second with
         a PASSIVE checkpoint in between, and an application writing on another
         connection (a small transaction every 5 ms, automatic checkpoints off). The
         backup starts once the load has run for a second: the WAL then holds frames no
         checkpoint has copied, and a reader holds them.

and in each state: `cairn backup create --db SRC --repo DIR --type incremental` (the
changed 1% and whatever the load wrote), the same `--type full` into a second repository,
and, as the obvious alternative that also reads a live database in one transaction
without writing it, `sqlite3 SRC "VACUUM INTO 'copy'"`. Wall time, and CPU time from
getrusage(RUSAGE_CHILDREN); the table gives the median (min-max) of the runs and the
ratio busy / idle. Target: the busy incremental within 1.2x of the idle one. The last busy incremental
is verified with `cairn backup verify --restore` (the chain restored, integrity_check).

--old-cairn PATH also times a busy incremental with another cairn binary (e.g. one built
from the commit before this benchmark existed, whose standalone backup retried a TRUNCATE
checkpoint, then made a copy), once, and adds it to the notes.

Writes the section "## Standalone backups of a busy database (issue 15, point 4)" of
docs/BENCHMARKS.md (unless --no-doc) and raw JSON lines to bench/results/."""

import argparse
import datetime
import hashlib
import json
import os
import platform
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Standalone backups of a busy database (issue 15, point 4)"
TARGET = 1.2

LOAD = r"""
import os, random, select, sqlite3, sys, time
path, period = sys.argv[1], float(sys.argv[2])
writer = sqlite3.connect(path, isolation_level=None, timeout=60)
writer.execute("PRAGMA synchronous=NORMAL")
writer.execute("PRAGMA wal_autocheckpoint=0")
reader = sqlite3.connect(path, isolation_level=None, timeout=60)
ckpt = sqlite3.connect(path, isolation_level=None, timeout=60)
n = writer.execute("SELECT max(k) FROM items").fetchone()[0]
rng = random.Random(7)
def hold():
    reader.execute("BEGIN")
    reader.execute("SELECT k FROM items LIMIT 1").fetchone()
hold()
commits, t0, renewed, said, wal_max = 0, time.monotonic(), time.monotonic(), False, 0
while True:
    writer.execute("BEGIN IMMEDIATE")
    for _ in range(5):
        writer.execute("UPDATE items SET qty = qty + 1 WHERE k = ?", (rng.randint(1, n),))
    writer.execute("COMMIT")
    commits += 1
    now = time.monotonic()
    if now - renewed >= 1.0:
        # As Litestream does: let go of the read lock, checkpoint what it may, hold again.
        reader.execute("COMMIT")
        ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        hold()
        renewed = now
    if not said and now - t0 >= 1.0:
        print("ready", flush=True)
        said = True
    wal_max = max(wal_max, os.path.getsize(path + "-wal"))
    if select.select([sys.stdin], [], [], period)[0]:
        break
sys.stdin.readline()
dt = time.monotonic() - t0
reader.execute("COMMIT")
ckpt.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
print('{"commits": %d, "seconds": %.3f, "wal_max": %d}' % (commits, dt, wal_max), flush=True)
"""


def log(msg):
    print("bench-backup-busy: " + msg, file=sys.stderr, flush=True)


def run_timed(argv, env=None):
    """(wall seconds, stdout) of one command; fails loudly. Its CPU time is what
    Children.delta() counts next."""
    # Write back what earlier commands left dirty, so that none pays for another's writes.
    os.sync()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("bench-backup-busy: %s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                                     err.decode()[-2000:]))
    return wall, out.decode()


class Children:
    """CPU seconds of the child processes reaped since the last call (RUSAGE_CHILDREN)."""

    def __init__(self):
        import resource
        self.resource = resource
        self.last = resource.getrusage(resource.RUSAGE_CHILDREN)

    def delta(self):
        now = self.resource.getrusage(self.resource.RUSAGE_CHILDREN)
        cpu = (now.ru_utime - self.last.ru_utime) + (now.ru_stime - self.last.ru_stime)
        self.last = now
        return cpu


class Load:
    def __init__(self, db, period):
        self.p = subprocess.Popen([sys.executable, "-c", LOAD, db, str(period)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)
        self._line("ready", 60)

    def _line(self, what, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([self.p.stdout], [], [], end - time.monotonic())[0]:
                line = self.p.stdout.readline()
                if not line:
                    raise SystemExit("bench-backup-busy: the load ended: " + self.p.stderr.read())
                return line.strip()
        raise SystemExit("bench-backup-busy: the load did not say %s within %d s" % (what, timeout))

    def stop(self):
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        stats = json.loads(self._line("its figures", 120))
        self.p.wait(timeout=60)
        return stats


def cached_source(mb, seed, cache, work):
    with open(os.path.join(REPO, "bench", "backup_data.py"), "rb") as f:
        key = hashlib.sha256(("mb=%d seed=%d\n" % (mb, seed)).encode() + f.read()).hexdigest()[:12]
    if cache in ("", "none"):
        path = os.path.join(work, "source-%s.db" % key)
    else:
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, "source-%dmib-seed%d-%s.db" % (mb, seed, key))
    if not (os.path.getsize(path) if os.path.exists(path) else 0) or not os.path.exists(path + ".json"):
        log("building the %d MiB source database in %s (once)" % (mb, path))
        for p in (path, path + "-wal", path + "-shm", path + ".tmp"):
            if os.path.exists(p):
                os.unlink(p)
        out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "backup_data.py"),
                              "generate", "--out", path + ".tmp", "--mb", str(mb), "--seed",
                              str(seed)], check=True, capture_output=True, text=True).stdout
        os.replace(path + ".tmp", path)
        with open(path + ".json", "w") as f:
            f.write(out)
    else:
        log("source database: %s (cached)" % path)
    return path


def machine(work):
    def sh(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kib / 1048576)
    except (OSError, ValueError, IndexError):
        pass
    fs = sh("findmnt", "-no", "FSTYPE,SOURCE,TARGET", "-T", work).split()
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": "Linux " + platform.release(),
        "filesystem": "%s (%s mounted on %s)" % tuple(fs[:3]) if len(fs) >= 3 else "?",
        "sqlite": sqlite3.sqlite_version,
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def fmt(xs):
    if not xs:
        return "–"
    return "%.3f (%.3f–%.3f)" % (statistics.median(xs), min(xs), max(xs))


def section(meta, results, load_stats, old):
    def med(key):
        return statistics.median(results[key]) if results.get(key) else float("nan")

    out = [SECTION, ""]
    out.append("Measured %s with `%s` at commit %s; the run took %d s." % (
        meta["date"], meta["command"], meta["commit"], meta["total_s"]))
    out.append("")
    out.append("Machine: %s CPUs (%s), %s RAM, %s; every file on %s; SQLite %s. The load, "
               "cairn and sqlite3 share these CPUs and this disk; load average (1, 5, 15 min) "
               "%s before the run, %s at its end." % (
                   meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"], meta["filesystem"],
                   meta["sqlite"], meta["load_before"], meta["load_after"]))
    out.append("")
    out.append("Database: %.1f MiB (%s bytes, %s rows, %s-byte pages, WAL mode), bench/backup_data.py's "
               "data at %d MiB: a size at which the whole run takes about a minute here (the issue's "
               "database is 1 GiB; `--mb 1024` measures that)." % (
                   meta["db_bytes"] / 1048576, format(meta["db_bytes"], ","),
                   format(meta["rows"], ","), meta["page_size"], meta["mb"]))
    out.append("")
    out.append("| operation, %d runs each | idle: seconds, median (min–max) | busy: seconds, "
               "median (min–max) | busy ÷ idle | CPU s, idle / busy (median) | pages stored, "
               "idle / busy (median) |" % meta["runs"])
    out.append("|---|--:|--:|--:|--:|--:|")
    names = [("inc", "**cairn** `backup create --db SRC --type incremental` (1% of rows changed)"),
             ("full", "**cairn** `backup create --db SRC --type full`"),
             ("vacuum", "`sqlite3 SRC \"VACUUM INTO 'copy'\"` (a full copy, one read transaction)")]
    for key, name in names:
        i, b = results.get(key + "_idle", []), results.get(key + "_busy", [])
        ratio = statistics.median(b) / statistics.median(i) if i and b else float("nan")
        ci, cb = results.get(key + "_idle_cpu", []), results.get(key + "_busy_cpu", [])
        pi, pb = results.get(key + "_idle_pages", []), results.get(key + "_busy_pages", [])
        pages = "%s / %s" % (format(int(statistics.median(pi)), ","),
                             format(int(statistics.median(pb)), ",")) if pi and pb else ""
        out.append("| %s | %s | %s | %.2f× | %.2f / %.2f | %s |" % (
            name, fmt(i), fmt(b), ratio, statistics.median(ci) if ci else float("nan"),
            statistics.median(cb) if cb else float("nan"), pages))
    out.append("")
    ratio = med("inc_busy") / med("inc_idle")
    out.append("| target | measured | result |")
    out.append("|---|---|---|")
    out.append("| busy incremental within %.1f× of idle (median) | %.3f s vs %.3f s: %.2f× | %s |" % (
        TARGET, med("inc_busy"), med("inc_idle"), ratio, "PASS" if ratio <= TARGET else "**FAIL**"))
    out.append("")
    out.append("Notes on this run:")
    out.append("")
    commits = [s["commits"] / s["seconds"] for s in load_stats]
    wal = [s["wal_max"] for s in load_stats]
    out.append("- Each incremental stores the pages changed since the backup before it: the 1% of "
               "rows its run rewrote, and what the load changed meanwhile (a busy incremental's own "
               "load; for an idle one, the load of the busy run before it).")
    out.append("- The load committed %.0f transactions a second (median over the busy runs) while "
               "it ran, and its WAL reached %.1f MiB at most: every busy backup read a snapshot "
               "whose newest pages were in WAL frames no checkpoint had copied, while a reader "
               "held them." % (statistics.median(commits), max(wal) / 1048576))
    out.append("- The last busy incremental was verified: `cairn backup verify --restore` restored "
               "its chain and ran `PRAGMA integrity_check`: %s." % meta["verify"])
    if old is not None:
        out.append("- The cairn before this change (%s), whose standalone backup retried a "
                   "TRUNCATE checkpoint of the source and then copied it, took %.2f s for one busy "
                   "incremental of the same database (%.1f× today's busy median), and its "
                   "checkpoints wrote into the source." % (old["label"], old["seconds"],
                                                           old["seconds"] / med("inc_busy")))
    out.append("")
    out.append("### What was measured")
    out.append("")
    out.append("- **Idle**: nothing else has the database open (no `-wal`, no `-shm`): the backup "
               "takes the file's shared lock itself and creates nothing beside it. **Busy**: a "
               "second process holds a "
               "read transaction on one connection, renewed every second after a PASSIVE "
               "checkpoint (as Litestream does), and commits a transaction of 5 row updates every "
               "5 ms on another connection with automatic checkpoints off; each backup starts "
               "after it has run for a second and it stops when the backup ends.")
    out.append("- Each run first rewrites the text of a random 1% of the rows in one transaction "
               "and checkpoints (bench/backup_data.py update), then times, idle and busy in turn, "
               "the incremental (parent: the previous backup of the first repository), a full "
               "backup into a second repository, and `VACUUM INTO` a new file. Everything is warm "
               "in the page cache, and written back (sync) before each timed command; times are "
               "wall-clock, CPU is user + system of the command.")
    out.append("- A standalone backup never writes the source (src/backup/snapread.h): it opens the file "
               "read-only, holds one read transaction, and reads each page from the newest WAL "
               "frame of its snapshot, or from the database file. tests/system/"
               "test_backup_readonly.py checks that it does not write, that it is prompt, and "
               "that the backup is the committed state it was taken at.")
    out.append("")
    return "\n".join(out)


def replace_section(doc_path, text):
    with open(doc_path) as f:
        old = f.read()
    lines = old.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        new = before + "\n\n" + text + ("\n" + after + "\n" if after else "")
    tmp = doc_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new.rstrip("\n") + "\n")
    os.replace(tmp, doc_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=os.environ.get("BUILD", os.path.join(REPO, "build")))
    ap.add_argument("--cache", default=os.path.join(REPO, "bench", "results", "backup-cache"))
    ap.add_argument("--period", type=float, default=0.005,
                    help="seconds between the load's transactions")
    ap.add_argument("--old-cairn", help="another cairn binary to time one busy incremental with")
    ap.add_argument("--old-label", default=None, help="what --old-cairn is, for the notes")
    ap.add_argument("--no-doc", action="store_true", help="print the section only")
    args = ap.parse_args()

    t_start = time.monotonic()
    cairn = os.path.join(os.path.abspath(args.build), "cairn")
    if not os.access(cairn, os.X_OK):
        raise SystemExit("bench-backup-busy: %s is missing; build first (make)" % cairn)
    if shutil.which("sqlite3") is None:
        raise SystemExit("bench-backup-busy: sqlite3 is missing (make deps)")
    work = tempfile.mkdtemp(prefix="cairn-bench-busy.", dir=os.environ.get("TMPDIR", "/tmp"))
    results = {}
    load_stats = []
    old = None
    meta = machine(work)
    meta["load_before"] = loadavg()
    try:
        cached = cached_source(args.mb, args.seed, args.cache, work)
        src = os.path.join(work, "source.db")
        shutil.copyfile(cached, src)
        with open(src, "rb") as f:
            while f.read(1 << 24):
                pass
        with open(cached + ".json") as f:
            gen = json.load(f)
        con = sqlite3.connect(src)
        meta["page_size"] = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        meta["rows"] = gen["rows"]
        repo_inc = os.path.join(work, "repo-inc")
        repo_full = os.path.join(work, "repo-full")
        children = Children()

        def cairn_backup(repo, type_):
            wall, out = run_timed([cairn, "backup", "create", "--db", src, "--repo", repo,
                                   "--type", type_, "--json"])
            return wall, children.delta(), json.loads(out)

        def vacuum():
            dest = os.path.join(work, "copy.db")
            wall, _ = run_timed(["sqlite3", src, "VACUUM INTO '%s'" % dest])
            os.unlink(dest)
            return wall, children.delta()

        cairn_backup(repo_inc, "full")
        children.delta()
        last_busy = None
        jsonl = []
        for run in range(1, args.runs + 1):
            for state in ("idle", "busy"):
                subprocess.run([sys.executable, os.path.join(REPO, "bench", "backup_data.py"),
                                "update", "--db", src, "--fraction", "0.01", "--seed",
                                str(1000 * args.seed + 2 * run + (state == "busy")),
                                "--vocab-seed", str(args.seed)], check=True, capture_output=True)
                children.delta()
                load = Load(src, args.period) if state == "busy" else None
                try:
                    w, c, entry = cairn_backup(repo_inc, "incremental")
                    results.setdefault("inc_" + state, []).append(w)
                    results.setdefault("inc_%s_cpu" % state, []).append(c)
                    results.setdefault("inc_%s_pages" % state, []).append(entry["pages"])
                    if state == "busy":
                        last_busy = entry["id"]
                    wf, cf, fentry = cairn_backup(repo_full, "full")
                    results.setdefault("full_" + state, []).append(wf)
                    results.setdefault("full_%s_pages" % state, []).append(fentry["pages"])
                    results.setdefault("full_%s_cpu" % state, []).append(cf)
                    wv, cv = vacuum()
                    results.setdefault("vacuum_" + state, []).append(wv)
                    results.setdefault("vacuum_%s_cpu" % state, []).append(cv)
                finally:
                    if load is not None:
                        load_stats.append(load.stop())
                jsonl.append({"run": run, "state": state, "incremental_s": w, "incremental_cpu": c,
                              "incremental_pages": entry["pages"], "full_s": wf, "vacuum_s": wv})
                log("run %d %-4s incremental %.2f s (%d pages)  full %.2f s  vacuum into %.2f s" % (
                    run, state, w, entry["pages"], wf, wv))
        r = subprocess.run([cairn, "backup", "verify", "--repo", repo_inc, last_busy, "--restore",
                            "--json"], capture_output=True, text=True)
        doc = json.loads(r.stdout) if r.stdout.strip() else {}
        meta["verify"] = "ok" if r.returncode == 0 and doc.get("ok") else "**FAILED** " + r.stderr
        if args.old_cairn:
            subprocess.run([sys.executable, os.path.join(REPO, "bench", "backup_data.py"),
                            "update", "--db", src, "--fraction", "0.01", "--seed", "99999",
                            "--vocab-seed", str(args.seed)], check=True, capture_output=True)
            load = Load(src, args.period)
            try:
                repo_old = os.path.join(work, "repo-old")
                run_timed([args.old_cairn, "backup", "create", "--db", src, "--repo", repo_old,
                           "--type", "full"])
                w, _ = run_timed([args.old_cairn, "backup", "create", "--db", src, "--repo",
                                  repo_old, "--type", "incremental"])
            finally:
                load.stop()
            old = {"label": args.old_label or args.old_cairn, "seconds": w}
            log("old cairn: busy incremental %.2f s" % w)
        meta["db_bytes"] = os.path.getsize(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = loadavg()
    meta["mb"] = args.mb
    meta["runs"] = args.runs
    meta["total_s"] = int(time.monotonic() - t_start)
    meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "/usr/bin/python3 bench/backup_busy.py"
    if args.mb != 256:
        cmd += " --mb %d" % args.mb
    if args.runs != 7:
        cmd += " --runs %d" % args.runs
    meta["command"] = cmd
    meta["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip() or "?"
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(REPO, "bench", "results", "backup-busy-%s.jsonl" % stamp), "w") as f:
        for line in jsonl:
            f.write(json.dumps(line) + "\n")
        f.write(json.dumps({"meta": meta, "load": load_stats}) + "\n")
    text = section(meta, results, load_stats, old)
    print(text)
    if not args.no_doc:
        replace_section(os.path.join(REPO, "docs", "BENCHMARKS.md"), text)
    ratio = statistics.median(results["inc_busy"]) / statistics.median(results["inc_idle"])
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
