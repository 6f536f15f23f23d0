#!/usr/bin/env python3
"""The catalog of a repository of 10,000 backups (issue 16: "the catalog must be readable
from the repository alone ... whichever is faster at 10,000 backups"): `cairn backup list`,
`cairn restore ... latest` and an incremental backup (which lists the repository to choose
its parent) against an S3 prefix on s3rver, and against a directory holding the same
objects, side by side in one run.

    /usr/bin/python3 bench/catalog_s3.py [--backups 10000] [--runs 3] [--chain 10]
                                         [--build build] [--before BUILD_DIR]
                                         [--no-doc] [--keep]

--backups defaults to $BENCH_CATALOG_BACKUPS, else 10000; --before to
$BENCH_CATALOG_BEFORE (a build of cairn to measure beside --build, e.g. one without the
catalog index; measured once per operation, since it may be slow).

The backups are real `.cbk` files: a small database (about 1 MiB) is backed up with
`cairn backup create` into a scratch directory, once in full and then --chain - 1 times
incrementally after changing a few rows; these templates are then stamped out N times
under new ids (`<time>-<counter>-<hex>`, one minute apart), in chains of --chain (each
incremental naming the one before it by id and by trailer digest), rewriting the header's
id, parent id, parent digest and creation time, its checksum and the trailer's digest
(XXH3, through libxxhash with ctypes), so that every file checks out as cairn reads it and
every chain restores. They are PUT into s3rver (16 at a time, boto3) and written into a
directory; neither is timed.

s3rver (tests/s3/setup.sh) is started as bench/backup_s3.py starts it (its S3rver class:
no signature-checking proxy, a hook logging each request), and commands are timed by its
Bench class (/usr/bin/time: wall clock, peak RSS, CPU; s3rver's requests and CPU).

Each run, on the S3 prefix: the listing with no index object (deleted first: what the
first listing pays, reading every backup's header, footer and sidecar), the listing with
the index the previous one wrote, `restore latest`, an incremental backup of the template
database, and the listing after it (one object the index does not know). Then the same
commands on the directory. Writes the section "## The catalog of a repository at 10,000
backups (issue 16)" of docs/BENCHMARKS.md (unless --no-doc) and raw JSON lines to
bench/results/catalog-s3-STAMP.jsonl."""

import argparse
import concurrent.futures
import ctypes
import datetime
import json
import os
import random
import shlex
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import backup_busy  # noqa: E402  (machine, loadavg)
import backup_s3  # noqa: E402  (S3rver, Bench, Failed, replace_section)
from backup_s3 import BUCKET, KEY_ID, REGION, SECRET, Bench, Failed, S3rver  # noqa: E402

SECTION = "## The catalog of a repository at 10,000 backups (issue 16)"
INDEX = "catalog.idx"
MIB = 1048576


def log(msg):
    print("bench-catalog-s3: " + msg, file=sys.stderr, flush=True)


backup_s3.log = log
backup_busy.log = log


# ---- stamping backups out --------------------------------------------------------------

class _XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_xxh.XXH3_128bits.restype = _XXH128
_xxh.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def restamp(template, new_id, parent_id, parent_digest, created_ms):
    """The template `.cbk` (bytes) as backup new_id (docs/FORMAT.md): header id, parent id
    and digest, creation time and checksum, and the trailer's digest. Returns (bytes,
    digest)."""
    b = bytearray(template)
    b[16:48] = new_id.encode().ljust(32, b"\0")
    b[56:88] = (parent_id or "").encode().ljust(32, b"\0")
    b[88:104] = parent_digest or bytes(16)
    b[392:400] = struct.pack("<q", created_ms)
    b[504:512] = struct.pack("<Q", _xxh.XXH3_64bits(bytes(b[:504]), 504))
    n = len(b) - 32
    h = _xxh.XXH3_128bits(bytes(b[:n]), n)
    digest = struct.pack(">QQ", h.high64, h.low64)
    b[n + 16:n + 32] = digest
    return bytes(b), digest


def make_templates(cairn, work, chain):
    """One full backup of a small database and chain - 1 incrementals after it, made by
    cairn into a scratch directory; returns ([file bytes, in chain order], db path)."""
    db = os.path.join(work, "template.db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    rnd = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "cairn", "stone", "river", "north", "field"]
    con.executemany("INSERT INTO t(v) VALUES(?)",
                    [(" ".join(rnd.choice(words) for _ in range(30)),) for _ in range(4000)])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    tdir = os.path.join(work, "templates")
    out = []
    for i in range(chain):
        if i > 0:
            con = sqlite3.connect(db)
            con.execute("UPDATE t SET v = v || ' x' WHERE id % 97 = ?", (i,))
            con.commit()
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.close()
        p = subprocess.run([cairn, "backup", "create", "--db", db, "--repo", tdir, "--type",
                            "full" if i == 0 else "incremental", "--json"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise Failed("making the template backups: " + p.stderr)
        with open(json.loads(p.stdout)["path"], "rb") as f:
            out.append(f.read())
    return out, db


def stamp_all(templates, n, start_ms):
    """n backups in chains of len(templates), ids one minute apart: [(name, bytes)]."""
    rnd = random.Random(11)
    out = []
    parent = pdigest = None
    for i in range(n):
        ms = start_ms + i * 60000
        t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
        bid = "%s%03dZ-%04x-%04x" % (t.strftime("%Y%m%dT%H%M%S"), ms % 1000, i % 65536,
                                     rnd.randrange(65536))
        k = i % len(templates)
        data, digest = restamp(templates[k], bid, parent if k else None,
                               pdigest if k else None, ms)
        out.append((bid + ".cbk", data))
        parent, pdigest = bid, digest
    return out


def upload(s3, prefix, objects, threads=16):
    c = s3.boto()

    def put(item):
        name, data = item
        c.put_object(Bucket=BUCKET, Key="%s/%s" % (prefix, name), Body=data)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(put, objects):
            pass


# ---- the report ---------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(xs, digits=2):
    if not xs:
        return "—"
    f = "%%.%df" % digits
    if len(xs) == 1:
        return f % xs[0]
    return "%s (%s–%s)" % (f % med(xs), f % min(xs), f % max(xs))


OPS = [
    ("list-cold", "`backup list --json`, no index object (deleted before)"),
    ("list", "`backup list --json`, the index up to date"),
    ("restore", "`restore latest --out FILE` (a chain of %(chain)d)"),
    ("incremental", "`backup create --type incremental` (lists to choose its parent)"),
    ("list-1new", "`backup list --json` after that backup (1 object not in the index)"),
]


def notes(meta, rows, sel):
    """What the table says, in words (from the medians)."""
    out = []

    def m(op, tool, where, key="seconds"):
        rs = sel(op, tool, where)
        return med([r.get(key, 0) for r in rs]) if rs else None

    n = meta["backups"]
    warm, cold = m("list", "cairn", "s3"), m("list-cold", "cairn", "s3")
    if warm is not None:
        out.append(
            "With the index up to date, `backup list` of %d backups in S3 takes %.2f s: its LIST "
            "requests (%d) and one GET of the index (%d requests in all; s3rver spent %.2f CPU s "
            "answering them, most of it the LIST: it reads a metadata file per key)." % (
                n, warm, m("list", "cairn", "s3", "lists"), m("list", "cairn", "s3", "requests"),
                m("list", "cairn", "s3", "s3rver_cpu_s")))
    if cold is not None:
        out.append(
            "With no index object (the first listing of a repository, or after it was "
            "deleted), every backup's header, footer and trailer is read, 8 objects at a "
            "time: %.1f s and %d requests, s3rver busy %.1f CPU s of it (one Node.js process "
            "sharing the 2 CPUs: it, not the requests in flight, is the bound here; against S3, "
            "where each request waits on the network, 8 at a time is what pays). The listing "
            "then writes the index (%d PUT)." % (
                cold, m("list-cold", "cairn", "s3", "requests"),
                m("list-cold", "cairn", "s3", "s3rver_cpu_s"), m("list-cold", "cairn", "s3", "puts")))
    per = {t: m("list", t, "s3", "requests") for t in ("before", "noindex")}
    if per["before"] and per["noindex"]:
        out.append(
            "Reading an object costs this build %.1f requests a backup (one GET of its first "
            "bytes, which hold the header and, in a small file, the footer; its sidecar only "
            "when one is listed), the build before %.1f (a HEAD, ranged GETs, and a GET of a "
            "sidecar that is seldom there)." % (per["noindex"] / n, per["before"] / n))
    new1 = m("list-1new", "cairn", "s3")
    if new1 is not None:
        out.append(
            "After a backup the index does not know (the incremental above), the next listing "
            "reads that one object and writes the index again: %.2f s, %d requests." % (
                new1, m("list-1new", "cairn", "s3", "requests")))
    def versus(tool, what):
        b = m("list", tool, "s3")
        if b is None or not warm:
            return
        out.append(
            "%s: %.1f s and %d requests for `backup list`, %.1f s for `restore latest`, %.1f s "
            "for an incremental (it lists to choose its parent): %.0f×, %.0f× and %.0f× the "
            "time with the index." % (
                what, b, m("list", tool, "s3", "requests"), m("restore", tool, "s3"),
                m("incremental", tool, "s3"), b / warm,
                m("restore", tool, "s3") / m("restore", "cairn", "s3"),
                m("incremental", tool, "s3") / m("incremental", "cairn", "s3")))

    if meta.get("before"):
        versus("before", "The build before this change reads every object at every listing, one "
               "after another (%s)" % meta["before_note"])
    versus("noindex", "This build with `CAIRN_CATALOG_INDEX=off` reads every object at every "
           "listing too, 8 at a time")
    peak = {tool: max([r["rss_kib"] for r in rows if r["tool"] == tool] or [0]) / 1024
            for tool in ("cairn", "before")}
    line = "Peak RSS of every command of this build: at most %.1f MiB (the budget is 64 MiB)" % (
        peak["cairn"])
    if meta.get("before") and peak["before"]:
        line += "; of the build before: %.1f MiB" % peak["before"]
    out.append(line + ". A catalog entry holds its path in 1280 bytes, no longer PATH_MAX "
               "(4096), and `backup list --json` prints entry by entry.")
    d = m("list", "cairn", "dir")
    if d is not None:
        out.append(
            "A directory has no index (the default): its %d backups are listed in %.2f s, "
            "their headers read from the page cache." % (n, d))
    return out


def section(meta, rows):
    chain = meta["chain"]
    n = meta["backups"]

    def sel(op, tool, where):
        return [r for r in rows if r["op"] == op and r["tool"] == tool and r["where"] == where]

    lines = [SECTION, ""]
    lines.append("Measured %s with `%s` (what `make bench-catalog-s3` runs, on build/) at "
                 "commit %s; the run took %.0f s." % (
                     meta["when"], meta["command"], meta["commit"], meta["elapsed"]))
    lines.append("")
    lines.append("Machine: %d CPUs (%s), %s RAM, %s; %s; SQLite %s, Node.js %s, s3rver %s. "
                 "cairn and s3rver share these CPUs; load average %s before the run, %s at "
                 "its end." % (
                     meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"],
                     meta["filesystem"], meta["sqlite"], meta["node"], meta["s3rver"],
                     meta["load_before"], meta["load_after"]))
    lines.append("")
    lines.append(
        "Repository: %d backups (`.cbk` objects, %d full and %d incremental, in chains of %d; "
        "%.1f MiB in all, %d–%d bytes each), made as the script's docstring says: real "
        "files of a %.1f MiB database, stamped out under new ids. The same objects in an "
        "S3 prefix (s3rver on 127.0.0.1, no proxy) and in a directory (%s)." % (
            n, meta["fulls"], n - meta["fulls"], chain, meta["total_bytes"] / MIB,
            meta["min_bytes"], meta["max_bytes"], meta["db_bytes"] / MIB, meta["dir_fs"]))
    lines.append("")
    tools = [("noindex", "this build, `CAIRN_CATALOG_INDEX=off`"),
             ("cairn", "**this build** (%s)" % meta["build_note"])]
    if meta.get("before"):
        tools.insert(0, ("before", "before (%s)" % meta["before_note"]))
    lines.append("| where | operation | build | seconds: median (min–max) | requests to S3 | "
                 "peak RSS MiB | CPU s | s3rver CPU s |")
    lines.append("|---|---|---|--:|--:|--:|--:|--:|")
    for where in ("s3", "dir"):
        for op, what in OPS:
            for tool, tname in tools:
                rs = sel(op, tool, where)
                if not rs:
                    continue
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    "S3" if where == "s3" else "directory", what % {"chain": chain}, tname,
                    fmt([r["seconds"] for r in rs]),
                    fmt([r.get("requests", 0) for r in rs], 0) if where == "s3" else "",
                    fmt([r["rss_kib"] / 1024 for r in rs], 1),
                    fmt([r["cpu_s"] for r in rs]),
                    fmt([r["s3rver_cpu_s"] for r in rs]) if where == "s3" else ""))
    lines.append("")
    for note in notes(meta, rows, sel):
        lines.append("- " + note)
    lines.append("")
    lines.append("<details><summary>Every run</summary>")
    lines.append("")
    lines.append("| where | operation | build | run | seconds | requests | LIST | GET | PUT | "
                 "peak RSS MiB | CPU s |")
    lines.append("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        lines.append("| %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %.1f | %.2f |" % (
            r["where"], r["op"], r["tool"], r["run"], r["seconds"], r.get("requests", ""),
            r.get("lists", ""), r.get("gets", ""), r.get("puts", ""), r["rss_kib"] / 1024,
            r["cpu_s"]))
    lines.append("")
    lines.append("</details>")
    return "\n".join(lines) + "\n"


def replace_section(doc_path, text):
    saved = backup_s3.SECTION
    backup_s3.SECTION = SECTION
    try:
        backup_s3.replace_section(doc_path, text)
    finally:
        backup_s3.SECTION = saved


# ---- main ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backups", type=int,
                    default=int(os.environ.get("BENCH_CATALOG_BACKUPS", "10000")))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_CATALOG_RUNS", "3")))
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--build", default=os.environ.get("BUILD", os.path.join(REPO, "build")))
    ap.add_argument("--before", default=os.environ.get("BENCH_CATALOG_BEFORE"),
                    help="another build directory whose cairn is measured beside --build's")
    ap.add_argument("--before-note", default="the build given by --before",
                    help="what --before is, for the doc")
    ap.add_argument("--no-doc", action="store_true", help="print the section only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--report", metavar="JSONL",
                    help="measure nothing: write the section again from a run's raw results")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        text = section(lines[-1]["meta"], lines[:-1])
        print(text)
        if not args.no_doc:
            replace_section(os.path.join(REPO, "docs", "BENCHMARKS.md"), text)
        return 0

    t_start = time.monotonic()
    cairn = os.path.join(os.path.abspath(args.build), "cairn")
    builds = [("cairn", cairn)]
    if args.before:
        builds.insert(0, ("before", os.path.join(os.path.abspath(args.before), "cairn")))
    for what, ok in [(b, os.access(b, os.X_OK)) for _, b in builds] + [
            ("/usr/bin/time", os.access("/usr/bin/time", os.X_OK)),
            ("node", shutil.which("node"))]:
        if not ok:
            raise SystemExit("bench-catalog-s3: %s is missing (make deps; make)" % what)
    work = tempfile.mkdtemp(prefix="cairn-bench-catalog.", dir=os.environ.get("TMPDIR", "/tmp"))
    meta = backup_busy.machine(work)
    meta["load_before"] = " ".join("%.2f" % x for x in os.getloadavg())
    meta.update(backups=args.backups, runs=args.runs, chain=args.chain)
    meta["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    meta["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    meta["build_note"] = "%s%s" % (meta["commit"], " with uncommitted changes" if dirty else "")
    meta["before_note"] = args.before_note
    meta["before"] = bool(args.before)
    meta["command"] = shlex.join(["bench/catalog_s3.py"] + sys.argv[1:])
    s3 = S3rver(work)
    home = os.path.join(work, "home")  # an empty HOME: no ~/.aws of the machine's
    os.makedirs(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=home, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_REGION=REGION)
    bench = Bench(work, s3, env)
    status = 0
    try:
        templates, db = make_templates(cairn, work, args.chain)
        bench.src = db
        meta["db_bytes"] = os.path.getsize(db)
        t0 = time.monotonic()
        objects = stamp_all(templates, args.backups,
                            int(time.time() * 1000) - (args.backups + 10) * 60000)
        log("%d backups stamped out in %.1f s" % (len(objects), time.monotonic() - t0))
        sizes = [len(d) for _, d in objects]
        meta.update(total_bytes=sum(sizes), min_bytes=min(sizes), max_bytes=max(sizes),
                    fulls=(args.backups + args.chain - 1) // args.chain)
        latest = {"s3": objects[-1][0][:-4], "dir": objects[-1][0][:-4]}

        local = os.path.join(work, "dir-repo")
        os.makedirs(local)
        for name, data in objects:
            with open(os.path.join(local, name), "wb") as f:
                f.write(data)
        fs = backup_busy.machine(local)["filesystem"]
        meta["dir_fs"] = fs
        s3.start()
        with open(os.path.join(backup_s3.S3DIR, "node_modules", "s3rver", "package.json")) as f:
            meta["s3rver"] = json.load(f)["version"]
        prefix = "cat"
        t0 = time.monotonic()
        upload(s3, prefix, objects)
        log("%d objects PUT into s3rver in %.1f s" % (len(objects), time.monotonic() - t0))
        del objects
        url = "s3://%s/%s" % (BUCKET, prefix)
        ep = ["--s3-endpoint", s3.endpoint]
        out = os.path.join(work, "out")
        os.makedirs(out)
        boto = s3.boto()

        def drop_index():
            boto.delete_object(Bucket=BUCKET, Key="%s/%s" % (prefix, INDEX))

        def check_list(row, at_least):
            got = json.loads(row["stdout"])
            bad = [e for e in got if e.get("error")]
            if len(got) < at_least or bad:
                raise Failed("the listing holds %d backups (%d unreadable: %s), not %d" % (
                    len(got), len(bad), bad[:1], at_least))
            row["stdout"] = ""  # megabytes of JSON: not kept

        expect = args.backups
        # Each build in turn: the one before (if given), this one with the index off
        # (every object read, 8 at a time), this one; one run each but this one's.
        variants = [(tool, binary, None) for tool, binary in builds if tool == "before"]
        variants.append(("noindex", cairn, dict(env, CAIRN_CATALOG_INDEX="off")))
        variants.append(("cairn", cairn, None))
        for tool, binary, venv in variants:
            runs = [str(i + 1) for i in range(args.runs)] if tool == "cairn" else ["1"]
            places = (("s3", url),) if tool == "noindex" else (("s3", url), ("dir", local))
            for run in runs:
                for where, repo in places:
                    extra = ep if where == "s3" else []

                    def timed(op, argv):
                        row = bench.measure(op, tool, run, argv + extra, env=venv)
                        row["where"] = where
                        return row

                    if where == "s3" and tool != "noindex":
                        drop_index()
                        check_list(timed("list-cold", [
                            binary, "backup", "list", "--repo", repo, "--json"]), expect)
                    check_list(timed("list", [
                        binary, "backup", "list", "--repo", repo, "--json"]), expect)
                    target = os.path.join(out, "r.db")
                    if os.path.exists(target):
                        os.unlink(target)
                    timed("restore", [binary, "restore", "--repo", repo, "latest", "--out",
                                      target, "--json"])["stdout"] = ""
                    row = timed("incremental", [binary, "backup", "create", "--db", db, "--repo",
                                                repo, "--type", "incremental", "--json"])
                    e = json.loads(row["stdout"])
                    if e.get("parent_id") != latest[where]:
                        raise Failed("the incremental's parent is %s, not %s" % (
                            e.get("parent_id"), latest[where]))
                    latest[where] = e["id"]  # the next restore restores it
                    row["stdout"] = ""
                    if tool != "noindex":
                        check_list(timed("list-1new", [
                            binary, "backup", "list", "--repo", repo, "--json"]), expect + 1)
                expect += 1  # each repository gained one backup (s3 only for noindex)
                if tool == "noindex":
                    # The directory did not: give it one too, so that both stay alike.
                    p = subprocess.run([cairn, "backup", "create", "--db", db, "--repo", local,
                                        "--type", "incremental", "--json"],
                                       capture_output=True, text=True, env=env)
                    if p.returncode != 0:
                        raise Failed("an incremental into the directory: " + p.stderr)
                    latest["dir"] = json.loads(p.stdout)["id"]
        bench.annotate()
        for r in bench.rows:
            reqs = s3.requests(*r["window"])
            r["lists"] = sum(1 for q in reqs if q["m"] == "GET" and "list-type=2" in q["u"])
            r["gets"] = sum(1 for q in reqs if q["m"] in ("GET", "HEAD")
                            and "list-type=2" not in q["u"] and "uploads" not in q["u"])
            r["puts"] = sum(1 for q in reqs if q["m"] == "PUT")
        meta["load_after"] = " ".join("%.2f" % x for x in os.getloadavg())
        meta["elapsed"] = time.monotonic() - t_start
        meta["when"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        raw = os.path.join(REPO, "bench", "results", "catalog-s3-%s.jsonl" % stamp)
        with open(raw, "w") as f:
            for r in bench.rows:
                f.write(json.dumps(r) + "\n")
            f.write(json.dumps({"meta": meta}) + "\n")
        text = section(meta, bench.rows)
        print(text)
        if not args.no_doc:
            replace_section(os.path.join(REPO, "docs", "BENCHMARKS.md"), text)
        log("raw results in %s" % raw)
    except Failed as e:
        log("FAILED: %s" % e)
        status = 1
    finally:
        s3.stop()
        if args.keep:
            log("scratch directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
