#!/usr/bin/env python3
"""Point-in-time restore to latest: cairn against Litestream restoring the same state,
side by side in one run (issue 18, "Benchmark").

    /usr/bin/python3 bench/pitr_restore.py [--mb 256] [--runs 5] [--txns 10000]
                                           [--clients 8] [--cases dir,s3] [--build build]
                                           [--no-perf] [--no-doc] [--keep]

--runs defaults to $BENCH_PITR_RUNS, else 5; --cases to $BENCH_PITR_CASES, else dir,s3.

For each repository kind (a local directory; S3, that is s3rver on loopback started as
bench/backup_s3.py starts it), set up, not timed:

  cairn       a single-node cairnd with --archive into the repository; POST /db/load of
              bench/backup_data.py's database (cached, shared with the other backup
              benchmarks), a full backup (POST /admin/backup), then --txns single-row
              write transactions (an INSERT/UPDATE mix, one POST /db/execute each) from
              --clients threads; wait until /status says the archive's lag is 0; stop.
  Litestream  v0.3.13 (npm @flydotio/litestream, as bench/backup_s3.py installs and runs
              it) replicating a plain SQLite copy of the same database file to the same
              repository kind (a `file` replica; the same s3rver), while the same
              transactions are applied to that copy one by one, in the same order per
              row and paced to the times cairnd acknowledged them (so that both archives
              cut their segments over the same stretch of time); then stopped.

Timed, one warm-up run and --runs runs, the order rotated every run:

  cairn       `cairn restore --repo URL latest --out FILE --json` (the newest base backup
              plus every archived entry after it, replayed; PRAGMA quick_check; fsynced);
  base        `cairn restore --repo URL BASE --out FILE` of that base backup alone (no
              target: tells the base restore from the replay);
  litestream  `litestream restore -config CFG -o FILE DB && sync FILE`;
  cp          `cp FINAL FILE && sync FILE` of the final database file (the floor).

Wall time (monotonic clock), peak RSS and CPU (/usr/bin/time). Every output of cairn and
Litestream is checked against the reference (the plain copy the transactions were
applied to): the row count and a SHA-256 of every row of `items` in key order; any
difference fails the run. Targets: cairn <= 0.5x Litestream (median) and cairn's peak
RSS < 64 MiB. With perf installed, one more cairn restore (not timed) runs under
`perf record -g`; its top symbols go into the notes.

Writes the section "## Point-in-time restore (issue 18)" of docs/BENCHMARKS.md (unless
--no-doc) and raw JSON lines to bench/results/pitr-restore-STAMP.jsonl."""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import backup_busy  # noqa: E402  (cached_source)
import backup_data  # noqa: E402  (Words, row_text: the same kind of text as the rows)
import backup_s3  # noqa: E402  (s3rver, Litestream, Bench.measure)
import restore_common as rc  # noqa: E402  (Node, HTTP, machine, replace_section)

SECTION = "## Point-in-time restore (issue 18)"
TARGET_RATIO = 0.5
TARGET_RSS_MIB = 64
MIB = 1048576
BUCKET = backup_s3.BUCKET

log = rc.make_logger("bench-pitr")
backup_s3.log = log
backup_busy.log = log


Failed = backup_s3.Failed


class NoS3:
    """Stands in for backup_s3.S3rver in Bench.measure for the directory case."""

    def cpu(self):
        return 0.0


# ---- the transactions ------------------------------------------------------------------

def make_txns(n, clients, max_k, seed):
    """n single-row writes, half INSERTs of new keys, half UPDATEs of existing rows.
    Transaction i goes to client i % clients, and an UPDATE of client c touches only keys
    k with k % clients == c: every row is written by one client only, in the order of
    the list, so any interleaving of the clients leaves the same rows, and applying the
    list in order to a plain SQLite file gives the state cairnd reached."""
    rng = random.Random(seed)
    words = backup_data.Words(random.Random(seed + 1))
    out = []
    for i in range(n):
        c = i % clients
        if rng.random() < 0.5:
            k = max_k + 1 + i
            blob = rng.randbytes(rng.randint(16, 200)) if rng.random() < 0.25 else None
            out.append(("INSERT INTO items(k, txt, num, qty, data) VALUES(?, ?, ?, ?, ?)",
                        [k, backup_data.row_text(rng, words), round(rng.uniform(0, 1000), 2),
                         rng.randint(0, 500), blob]))
        else:
            k = rng.randint(1, max_k)
            k = k - (k % clients) + c
            if k < 1:
                k += clients
            if k > max_k:
                k -= clients
            out.append(("UPDATE items SET txt = ?, qty = qty + ? WHERE k = ?",
                        [backup_data.row_text(rng, words), rng.randint(1, 9), k]))
    return out


def http_params(params):
    return [("x'%s'" % p.hex()) if isinstance(p, bytes) else p for p in params]


def run_txns(port, txns, clients):
    """Sends the transactions from `clients` threads, one keep-alive connection each;
    returns (seconds, acknowledgement times from the start, sorted)."""
    acks = []
    errors = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        try:
            for i in range(c, len(txns), clients):
                sql, params = txns[i]
                conn.request("POST", "/db/execute", json.dumps([[sql] + http_params(params)]),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                doc = json.loads(body) if r.status == 200 else {}
                res = doc.get("results") or [{}]
                if r.status != 200 or "error" in doc or "error" in res[0]:
                    raise Failed("transaction %d: HTTP %d %r" % (i, r.status, body[:300]))
                if sql.startswith("INSERT") and res[0].get("rows_affected") != 1:
                    raise Failed("transaction %d inserted %r rows" % (i, res[0]))
                mine.append(time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)
        finally:
            conn.close()
        with lock:
            acks.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failed("the write load failed: %s" % errors[0])
    return time.monotonic() - t0, sorted(acks)


def apply_paced(path, txns, acks):
    """Applies the transactions to a plain SQLite file in list order, each in its own
    transaction (autocommit, WAL, synchronous=NORMAL), transaction j no earlier than
    acks[j] seconds after the start."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    t0 = time.monotonic()
    for j, (sql, params) in enumerate(txns):
        wait = acks[j] - (time.monotonic() - t0)
        if wait > 0:
            time.sleep(wait)  # pacing to cairnd's timeline, not synchronisation
        db.execute(sql, params)
    db.close()
    return time.monotonic() - t0


def items_digest(path):
    """(row count, SHA-256 of every row of items in key order)."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        h = hashlib.sha256()
        n = 0
        for row in con.execute("SELECT k, txt, num, qty, data FROM items ORDER BY k"):
            h.update(repr(row).encode())
            n += 1
        return n, h.hexdigest()
    finally:
        con.close()


# ---- set-up: cairn -----------------------------------------------------------------------

def cairn_setup(args, work, case, repo_url, extra, src, txns):
    """A cairnd archiving into repo_url: load, full backup, the transactions, lag 0.
    Returns a dict of what the section reports."""
    node = rc.Node(args.build, work, 1 if case == "dir" else 2, ["-q", "--archive"] + extra)
    node.backups = repo_url
    info = {}
    node.start()
    try:
        rc.wait(lambda: (node.status().get("archive") or {}).get("timeline"), 60,
                "cairnd's archive timeline")
        with open(src, "rb") as f:
            body = f.read()
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=600)
        conn.request("POST", "/db/load", body, {"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        del body
        if r.status != 200:
            raise Failed("POST /db/load: HTTP %d %r" % (r.status, data[:400]))
        info["load_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        st, data = rc.request(node.http_port, "POST", "/admin/backup", {"type": "full"}, 600)
        if st != 200:
            raise Failed("POST /admin/backup: HTTP %d %r" % (st, data[:400]))
        base = json.loads(data)["backup"]
        info["backup_s"] = time.monotonic() - t0
        info["base_id"] = base["id"]
        info["base_index"] = base["raft_index"]
        info["base_bytes"] = base["size_bytes"]
        log("%s: loaded in %.1f s, full backup %s (%.1f MiB) in %.1f s" % (
            case, info["load_s"], base["id"], base["size_bytes"] / MIB, info["backup_s"]))
        cpu0 = node.cpu_seconds()
        info["load_seconds"], acks = run_txns(node.http_port, txns, args.clients)
        info["acks"] = acks
        info["cairnd_cpu_load"] = node.cpu_seconds() - cpu0
        log("%s: %d transactions from %d clients in %.1f s (%.0f/s)" % (
            case, len(txns), args.clients, info["load_seconds"],
            len(txns) / info["load_seconds"]))
        t0 = time.monotonic()

        def drained():
            s = node.status(5.0)
            a, r_ = s.get("archive") or {}, s.get("raft") or {}
            return (a.get("lag_entries") == 0 and r_.get("commit_index") is not None
                    and a.get("head_index", 0) >= r_["commit_index"] - 1 and a)
        arch = rc.wait(drained, 300, "the archive's lag to reach 0", 0.05)
        info["drain_s"] = time.monotonic() - t0
        info["archive"] = {k: arch.get(k) for k in ("head_index", "segments_uploaded",
                                                    "bytes_uploaded", "entries_uploaded",
                                                    "timeline")}
        info["live_count"] = rc.query(node.http_port, "SELECT count(*) FROM items")[0][0]
        info["vmhwm_kib"] = node.proc_status("VmHWM")
    finally:
        info["exit"] = node.stop()
    return info


# ---- set-up: Litestream --------------------------------------------------------------------

def litestream_file_config(path, db, replica_dir):
    with open(path, "w") as f:
        f.write("dbs:\n  - path: %s\n    replicas:\n      - type: file\n        path: %s\n" % (
            db, replica_dir))


def litestream_setup(args, binary, work, case, s3, src, txns, acks):
    """Replicates a copy of src while the transactions are applied to it; returns
    (restore config, the copy, facts). The copy ends as the reference database."""
    d = os.path.join(work, "litestream-" + case)
    os.makedirs(d)
    db = os.path.join(d, "source.db")
    shutil.copyfile(src, db)
    facts = {}
    plain = None
    if case == "dir":
        replica = os.path.join(d, "replica")
        cfg = os.path.join(d, "litestream.yml")
        litestream_file_config(cfg, db, replica)
        cfg_up = cfg
    else:
        # The upload through s3rver as the package ships it, on the same data directory:
        # bench/backup_s3.py's litestream_setup says why (aws-sdk-go's
        # CompleteMultipartUpload body).
        js = os.path.join(work, "plain_s3rver.js")
        with open(js, "w") as f:
            f.write(backup_s3.PLAIN_S3RVER_JS)
        env = dict(os.environ, NODE_PATH=os.path.join(backup_s3.S3DIR, "node_modules"),
                   CAIRN_BENCH_REQLOG=s3.reqlog)
        plain = subprocess.Popen(["node", "-r", s3.hook, "--openssl-legacy-provider", js,
                                  s3.data, BUCKET, "%s:%s" % (backup_s3.KEY_ID, backup_s3.SECRET)],
                                 stdout=subprocess.PIPE,
                                 stderr=open(os.path.join(work, "plain_s3rver.log"), "wb"),
                                 cwd=backup_s3.S3DIR, env=env)
        port = backup_s3.read_port(plain, "s3rver (plain)")
        cfg_up = os.path.join(d, "upload.yml")
        backup_s3.litestream_config(cfg_up, db, "http://127.0.0.1:%d" % port, "ls")
        cfg = os.path.join(d, "restore.yml")
        backup_s3.litestream_config(cfg, db, s3.endpoint, "ls")
    lslog = os.path.join(d, "replicate.log")
    rep = None
    try:
        t0 = time.monotonic()
        rep = subprocess.Popen([binary, "replicate", "-config", cfg_up],
                               stdout=open(lslog, "wb"), stderr=subprocess.STDOUT)

        def text():
            with open(lslog) as f:
                return f.read()
        while "snapshot written" not in text():
            if rep.poll() is not None or "level=ERROR" in text():
                raise Failed("litestream replicate: " + text()[-1500:])
            if time.monotonic() - t0 > 600:
                raise Failed("litestream wrote no snapshot within 10 minutes")
            time.sleep(0.1)
        facts["snapshot_s"] = time.monotonic() - t0
        facts["apply_s"] = apply_paced(db, txns, acks)
        # Its sync interval is 1 s: let it ship the last WAL frames, then stop it (it
        # syncs once more as it closes).
        time.sleep(3)
        backup_s3.stop_proc(rep, 60)
        t = text()
        if "level=ERROR" in t:
            raise Failed("litestream replicate: " + t[-1500:])
        facts["wal_segments"] = t.count("wal segment written")
        facts["snapshots"] = t.count("snapshot written")
    finally:
        backup_s3.stop_proc(rep, 30)
        if plain is not None:
            backup_s3.stop_proc(plain)
            plain.stdout.close()
    if case == "s3":
        # bench/backup_s3.py: s3rver 3.7.1 lists a generation only when an object sits
        # directly under it; an empty marker makes it list Litestream's.
        objs = s3.objects("ls/generations/")
        gens = sorted({k.split("/")[2] for k, _ in objs})
        if len(gens) != 1:
            raise Failed("expected one Litestream generation in the bucket, found %r" % gens)
        s3.boto().put_object(Bucket=BUCKET, Key="ls/generations/%s/marker" % gens[0], Body=b"")
        facts["objects"] = len(objs)
        facts["stored_bytes"] = sum(s for _, s in objs)
    else:
        files = [os.path.join(r, f) for r, _, fs in os.walk(replica) for f in fs]
        facts["objects"] = len(files)
        facts["stored_bytes"] = sum(os.path.getsize(p) for p in files)
    # The reference: the copy, checkpointed into its main file (the floor's cp copies it).
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return cfg, db, facts


# ---- measuring ---------------------------------------------------------------------------

def perf_summary(work, argv, env, top=10):
    """perf's view of one more restore (not timed): the top symbols by self time, CPU
    share by object, and the wall-clock span of each phase on the restore's main thread
    (from the samples' times and call chains); None without perf."""
    if shutil.which("perf") is None:
        return None
    data = os.path.join(work, "pitr.perf")
    r = subprocess.run(["perf", "record", "--call-graph", "dwarf,16384", "-F", "999", "-o", data,
                        "--"] + argv, capture_output=True, env=env)
    if r.returncode != 0:
        log("perf record failed (%d): %s" % (r.returncode, r.stderr.decode(errors="replace")[-300:]))
        return None
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--no-children",
                          "--sort", "dso,sym"], capture_output=True, text=True).stdout
    syms, dsos = [], {}
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
            dsos[dso] = dsos.get(dso, 0.0) + pct
            if not sym.startswith("0x"):
                syms.append((pct, sym, dso))
    syms.sort(reverse=True)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--children",
                          "--sort", "sym"], capture_output=True, text=True).stdout
    children = {}
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(\S+)", line)
        if m:
            children.setdefault(m.group(2), float(m.group(1)))
    # Phases: each sample's call chain says what it was part of.
    script = subprocess.run(["perf", "script", "-i", data, "-F", "tid,time,ip,sym"],
                            capture_output=True, text=True).stdout
    first = {}
    t0 = t1 = None
    for blk in script.split("\n\n"):
        lines = [ln for ln in blk.strip().split("\n") if ln.strip()]
        m = re.match(r"\s*(\d+)\s+([\d.]+):", lines[0]) if lines else None
        if not m:
            continue
        t = float(m.group(2))
        t0 = t if t0 is None else min(t0, t)
        t1 = t if t1 is None else max(t1, t)
        chain = " ".join(lines[1:])
        for phase, marks in (("settle", ("settle",)), ("replay", ("replay", "storeApply")),
                             ("ckpt", ("ckptMain",))):
            if any(re.search(r"\b%s\b" % mk, chain) for mk in marks):
                first[phase] = min(first.get(phase, t), t)
                break
    phases = None
    if t0 is not None and "replay" in first and "settle" in first:
        phases = {"base": first["replay"] - t0, "replay": first["settle"] - first["replay"],
                  "settle": t1 - first["settle"], "total": t1 - t0}
    return {"top": syms[:top], "dsos": sorted(dsos.items(), key=lambda kv: -kv[1])[:6],
            "children": {k: children.get(k, 0.0) for k in (
                "backupRestoreIn", "replay", "storeApply", "sqlite3VdbeHalt", "sqlite3WalFrames",
                "ckptMain", "settle", "sqlite3BtreeIntegrityCheck", "ZSTD_decompress_usingDDict")},
            "phases": phases}


def strace_counts(work, argv, env):
    """System calls of one more restore (not timed, under strace -f -c): {name: calls}."""
    if shutil.which("strace") is None:
        return None
    out = os.path.join(work, "strace.txt")
    r = subprocess.run(["strace", "-f", "-c", "-o", out] + argv, capture_output=True, env=env)
    if r.returncode != 0:
        return None
    counts = {}
    with open(out) as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and p[0][0].isdigit() and p[-1].isidentifier():
                try:
                    counts[p[-1]] = int(p[3])
                except ValueError:
                    pass
    return counts


def run_case(args, work, case, binary, src, txns, env, meta):
    """Set-up and timed runs of one repository kind; returns (rows, facts)."""
    facts = {"case": case}
    s3 = None
    try:
        if case == "s3":
            s3 = backup_s3.S3rver(work)
            s3.start()
            with open(os.path.join(backup_s3.S3DIR, "node_modules", "s3rver", "package.json")) as f:
                meta["s3rver"] = json.load(f)["version"]
            repo_url = "s3://%s/pitr" % BUCKET
            extra = ["--s3-endpoint", s3.endpoint]
            ep = ["--s3-endpoint", s3.endpoint]
        else:
            repo_url = os.path.join(work, "repo-dir")
            extra, ep = [], []
        facts["cairn"] = cairn_setup(args, work, case, repo_url, extra, src, txns)
        facts["litestream_cfg"], ref_db, facts["litestream"] = litestream_setup(
            args, binary, work, case, s3, src, txns, facts["cairn"]["acks"])
        ref = items_digest(ref_db)
        facts["reference"] = ref
        facts["final_bytes"] = os.path.getsize(ref_db)
        if facts["cairn"]["live_count"] != ref[0]:
            raise Failed("%s: cairnd holds %d rows, the reference %d" % (
                case, facts["cairn"]["live_count"], ref[0]))
        log("%s: reference %d rows, %s…; Litestream %d WAL segments, %.1f MiB stored" % (
            case, ref[0], ref[1][:12], facts["litestream"]["wal_segments"],
            facts["litestream"]["stored_bytes"] / MIB))
        bench = backup_s3.Bench(work, s3 or NoS3(), env)
        bench.src = ref_db
        out = os.path.join(work, "out-" + case)
        os.makedirs(out)
        tools = ["cairn", "litestream", "cp", "base"]
        for i in range(args.runs + 1):
            run = "warm" if i == 0 else str(i)
            k = i % len(tools)
            order = tools[k:] + tools[:k]
            if i % 2:
                order.reverse()
            for tool in order:
                dest = os.path.join(out, "%s.db" % tool)
                if tool == "cairn":
                    row = bench.measure(case, tool, run, [
                        args.cairn, "restore", "--repo", repo_url, "latest", "--out", dest] +
                        ep + ["--json"])
                    res = json.loads(row["stdout"])
                    row["entries"] = res.get("entries")
                    row["stop_index"] = res.get("stop_index")
                    row["base"] = (res.get("base") or {}).get("id")
                    if row["base"] != facts["cairn"]["base_id"]:
                        raise Failed("cairn's restore took base %s, not %s" % (
                            row["base"], facts["cairn"]["base_id"]))
                elif tool == "base":
                    row = bench.measure(case, tool, run, [
                        args.cairn, "restore", "--repo", repo_url, facts["cairn"]["base_id"],
                        "--out", dest] + ep + ["--json"])
                elif tool == "litestream":
                    row = bench.measure(case, tool, run, [
                        "sh", "-c", '"$@" && sync "$0"', dest, binary, "restore", "-config",
                        facts["litestream_cfg"], "-o", dest, ref_db])
                else:
                    row = bench.measure(case, tool, run, [
                        "sh", "-c", 'cp "$0" "$1" && sync "$1"', ref_db, dest])
                if tool in ("cairn", "litestream"):
                    got = items_digest(dest)
                    row["rows_ok"] = got == ref
                    if got != ref:
                        raise Failed("%s: %s's restore (run %s) holds %d rows, digest %s; the "
                                     "reference %d rows, %s" % (case, tool, run, got[0], got[1],
                                                                ref[0], ref[1]))
                row["out_bytes"] = os.path.getsize(dest)
                for p in (dest, dest + "-wal", dest + "-shm"):
                    if os.path.exists(p):
                        os.unlink(p)
        if s3 is not None:
            time.sleep(1)
            bench.annotate()
        if case == "dir" and not args.no_perf:
            dest = os.path.join(out, "profiled.db")
            argv = [args.cairn, "restore", "--repo", repo_url, "latest", "--out", dest, "--json"]
            facts["perf"] = perf_summary(work, argv, env)
            if os.path.exists(dest):
                os.unlink(dest)
            facts["strace"] = strace_counts(work, argv, env)
            if os.path.exists(dest):
                os.unlink(dest)
        if case == "dir":
            facts["repo_bytes"] = sum(os.path.getsize(os.path.join(repo_url, f))
                                      for f in os.listdir(repo_url))
            facts["segments"] = len([f for f in os.listdir(repo_url) if f.endswith(".seg")])
            facts["segment_bytes"] = sum(os.path.getsize(os.path.join(repo_url, f))
                                         for f in os.listdir(repo_url) if f.endswith(".seg"))
        else:
            objs = s3.objects("pitr/")
            facts["repo_bytes"] = sum(s for _, s in objs)
            segs = [(k_, s_) for k_, s_ in objs if k_.endswith(".seg")]
            facts["segments"] = len(segs)
            facts["segment_bytes"] = sum(s_ for _, s_ in segs)
        for r in bench.rows:
            r["case"] = case
        return bench.rows, facts
    finally:
        if s3 is not None:
            s3.stop()


# ---- report ------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(xs):
    if not xs:
        return "–"
    return "%.2f (%.2f–%.2f)" % (med(xs), min(xs), max(xs))


CASE_NAMES = {"dir": "local directory", "s3": "S3 (s3rver on loopback)"}


def section(meta, rows, cases):
    out = [SECTION, ""]
    out.append("Measured %s with `%s` at commit %s; the run took %d s." % (
        meta["date"], meta["command"], meta["commit"], meta["total_s"]))
    out.append("")
    out.append("Machine: %s CPUs (%s), %s RAM, %s; every file (databases, repositories, "
               "s3rver's objects, the restored files) on %s, disk %s; SQLite %s, %s, Node.js "
               "%s%s. cairn, Litestream, cp, s3rver and the rest of the machine (other "
               "engineers' builds and tests) share these CPUs and this disk: load average "
               "(1, 5, 15 min) %s before the run, %s at its end." % (
                   meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"],
                   meta["filesystem"], meta["disk"], meta["sqlite"],
                   meta.get("litestream_version", "Litestream ?"), meta.get("node", "?"),
                   ", s3rver " + meta["s3rver"] if meta.get("s3rver") else "",
                   meta["load_before"], meta["load_after"]))
    out.append("")
    out.append("Database: bench/backup_data.py's at %d MiB (table `items`: integer key, text "
               "of words, a real, an integer, a blob in a quarter of the rows; an index on the "
               "real), %s rows, %s bytes, loaded into cairnd with `POST /db/load`; then a full "
               "backup and %s write transactions, each one statement (half `INSERT` of a new "
               "row with 6 to 70 words of text, a quarter of them with a blob of 16 to 200 "
               "bytes; half `UPDATE items SET txt = ?, qty = qty + ? WHERE k = ?` of an "
               "existing row), one `POST /db/execute` each from %d client threads. The restored "
               "state: %s rows, %s bytes as a plain SQLite file." % (
                   meta["mb"], format(meta["rows"], ","), format(meta["db_bytes"], ","),
                   format(meta["txns"], ","), meta["clients"],
                   format(cases[0][1]["reference"][0], ","),
                   format(cases[0][1]["final_bytes"], ",")))
    out.append("")
    out.append("| repository | tool | seconds: median (min–max) | peak RSS | CPU s | s3rver CPU s "
               "| time ÷ Litestream |")
    out.append("|---|---|--:|--:|--:|--:|--:|")
    verdicts = []
    targets = []
    for case, facts in cases:
        def sel(tool):
            return [r for r in rows if r["case"] == case and r["tool"] == tool and r["run"] != "warm"]
        ls = med([r["seconds"] for r in sel("litestream")])
        names = [
            ("cairn", "**cairn** `restore --repo %s latest --out FILE` (base + %s archived "
             "entries replayed; quick_check)" % ("DIR" if case == "dir" else "s3://…",
                                                  format(int(med([r["entries"] for r in sel("cairn")])), ","))),
            ("base", "cairn `restore` of the base backup alone (no target)"),
            ("litestream", "Litestream `restore -o FILE` + `sync FILE` (snapshot + %d WAL "
             "segments)" % facts["litestream"]["wal_segments"]),
            ("cp", "`cp` + `sync` of the final database file (the floor)"),
        ]
        for tool, name in names:
            rs = sel(tool)
            if not rs:
                continue
            s = [r["seconds"] for r in rs]
            out.append("| %s | %s | %s | %.1f MiB | %.2f | %s | %.2f× |" % (
                CASE_NAMES[case], name, fmt(s), max(r["rss_kib"] for r in rs) / 1024,
                med([r["cpu_s"] for r in rs]),
                "%.2f" % med([r["s3rver_cpu_s"] for r in rs]) if case == "s3" else "",
                med(s) / ls))
        c = sel("cairn")
        ratio = med([r["seconds"] for r in c]) / ls
        rss = max(r["rss_kib"] for r in c) / 1024
        targets.append((case, ratio, rss, med([r["seconds"] for r in c]), ls))
    out.append("")
    out.append("| target | repository | measured | result |")
    out.append("|---|---|---|---|")
    for case, ratio, rss, cs, ls in targets:
        ok = ratio <= TARGET_RATIO
        verdicts.append(ok)
        out.append("| cairn ≤ %.1f× Litestream | %s | %.2f s vs %.2f s: %.2f× | %s |" % (
            TARGET_RATIO, CASE_NAMES[case], cs, ls, ratio, "PASS" if ok else "**FAIL**"))
    for case, ratio, rss, cs, ls in targets:
        ok = rss < TARGET_RSS_MIB
        verdicts.append(ok)
        out.append("| peak RSS < %d MiB | %s | %.1f MiB | %s |" % (
            TARGET_RSS_MIB, CASE_NAMES[case], rss, "PASS" if ok else "**FAIL**"))
    out.append("")
    out.append("All targets met." if all(verdicts) else "**Targets missed.**")
    out.append("")
    out.append("Every output of cairn and Litestream (every run, warm-up included) held the "
               "same rows as the reference: the same row count and the same SHA-256 of every "
               "row of `items` in key order (the reference is the plain SQLite copy the "
               "transactions were applied to; cairnd's live database held the same count).")
    out.append("")
    out.append("Notes on this run:")
    out.append("")
    for case, facts in cases:
        def sel(tool):
            return [r for r in rows if r["case"] == case and r["tool"] == tool and r["run"] != "warm"]
        cf = facts["cairn"]
        c, b = sel("cairn"), sel("base")
        cs, bs = med([r["seconds"] for r in c]), med([r["seconds"] for r in b])
        ccpu, bcpu = med([r["cpu_s"] for r in c]), med([r["cpu_s"] for r in b])
        lsf = facts["litestream"]
        out.append("- **%s**: cairn's archive holds the base backup (%.1f MiB, index %d) and "
                   "%d segments of %.2f MiB in all for the %s transactions; set-up: load %.1f "
                   "s, full backup %.1f s, the transactions %.1f s (%.0f/s from %d clients; "
                   "cairnd used %.1f CPU-seconds), archive lag 0 %.2f s after the last. Where "
                   "cairn's restore goes: the base alone restores in %.2f s (%.2f CPU-s); "
                   "replaying the %s entries on top adds %.2f s (%.2f CPU-s), %.0f µs an entry. "
                   "Litestream: initial snapshot after %.1f s, then the same transactions "
                   "applied over %.1f s (paced to cairnd's acknowledgements), %d WAL segments; "
                   "its replica holds %d files of %.1f MiB." % (
                       CASE_NAMES[case], cf["base_bytes"] / MIB, cf["base_index"],
                       facts["segments"], facts["segment_bytes"] / MIB, format(meta["txns"], ","),
                       cf["load_s"], cf["backup_s"], cf["load_seconds"],
                       meta["txns"] / cf["load_seconds"], meta["clients"], cf["cairnd_cpu_load"],
                       cf["drain_s"], bs, bcpu, format(int(med([r["entries"] for r in c])), ","),
                       cs - bs, ccpu - bcpu, 1e6 * (cs - bs) / max(1, med([r["entries"] for r in c])),
                       lsf["snapshot_s"], lsf["apply_s"], lsf["wal_segments"], lsf["objects"],
                       lsf["stored_bytes"] / MIB))
        if case == "s3":
            ls_rows = sel("litestream")
            out.append("- Requests to s3rver per restore (median): cairn's %d (%d GETs, at most "
                       "%d in flight; the base backup alone %d), the segments' read ahead, up to 4 "
                       "at a time from the start of the restore, while the base backup is "
                       "restored; Litestream's "
                       "%d (%d GETs, at most %d in flight). s3rver used %.2f CPU-seconds serving "
                       "cairn's restore, %.2f serving Litestream's." % (
                           med([r["requests"] for r in c]), med([r["get_requests"] for r in c]),
                           med([r["max_in_flight"] for r in c]), med([r["requests"] for r in b]),
                           med([r["requests"] for r in ls_rows]),
                           med([r["get_requests"] for r in ls_rows]),
                           med([r["max_in_flight"] for r in ls_rows]),
                           med([r["s3rver_cpu_s"] for r in c]),
                           med([r["s3rver_cpu_s"] for r in ls_rows])))
        p = facts.get("perf")
        if p:
            ph, ch = p["phases"], p["children"]
            if ph:
                out.append("- Phases of one more cairn restore from the %s under perf (not "
                           "timed; %.2f s in all, from the samples' times on its main thread): "
                           "the base backup restored (every page checked against its hash, no "
                           "SQLite check) %.2f s; the replay of the entries %.2f s, applied by "
                           "`storeApply` in groups of up to 1024 entries within a segment, one "
                           "transaction each, on the scratch file in exclusive locking mode with "
                           "a rollback journal and no sync (store.h `STORE_OPEN_SCRATCH`: no "
                           "WAL, no checkpoint thread); `settle` (the "
                           "one `PRAGMA quick_check` of the whole file, the file's one fsync "
                           "beside it on a thread of its own) %.2f s." % (
                               CASE_NAMES[case], ph["total"], ph["base"], ph["replay"],
                               ph["settle"]))
            out.append("- CPU of that run by function, callees included (every thread): "
                       "replay %.0f%% (`storeApply` %.0f%%, of which SQLite's commits "
                       "(`sqlite3VdbeHalt`) %.0f%%, writing WAL frames %.0f%%), the checkpoint "
                       "thread %.0f%% (both 0 since the replay runs without a WAL), `settle` "
                       "%.0f%% (of which `PRAGMA quick_check` %.0f%%), "
                       "zstd decompressing the base %.0f%%. By object: %s. Top symbols by self "
                       "time: %s." % (
                           ch["replay"], ch["storeApply"], ch["sqlite3VdbeHalt"],
                           ch["sqlite3WalFrames"], ch["ckptMain"], ch["settle"],
                           ch["sqlite3BtreeIntegrityCheck"], ch["ZSTD_decompress_usingDDict"],
                           ", ".join("%s %.0f%%" % (os.path.basename(d), v) for d, v in p["dsos"]),
                           ", ".join("`%s` %.1f%%" % (s_, v) for v, s_, _ in p["top"])))
        sc = facts.get("strace")
        if sc:
            n = max(1, meta["txns"])
            out.append("- System calls of one more restore (strace -f -c, not timed): %s "
                       "`pread64`, %s `pwrite64`, %s `fcntl` (SQLite's file locks: the replay "
                       "holds its file in exclusive locking mode), %s `fdatasync`, %s `fsync`: per "
                       "replayed entry about %.0f reads, %.0f writes and %.0f lock calls." % (
                           format(sc.get("pread64", 0), ","), format(sc.get("pwrite64", 0), ","),
                           format(sc.get("fcntl", 0), ","), format(sc.get("fdatasync", 0), ","),
                           format(sc.get("fsync", 0), ","), sc.get("pread64", 0) / n,
                           sc.get("pwrite64", 0) / n, sc.get("fcntl", 0) / n))
    for n in meta.get("extra_notes", []):
        out.append("- " + n)
    out.append("")
    out.append("### What was measured")
    out.append("")
    out.append("- **cairn**: a single-node cairnd (`--archive`, default settings: a segment "
               "every 1 s) whose default repository is a directory, or `s3://%s/pitr` on "
               "s3rver. The database goes in with `POST /db/load` (kept as a full backup, "
               "restored through the log), then `POST /admin/backup` takes the full backup "
               "that is the restore's base, then the transactions; the node is stopped once "
               "`/status` shows the archive's lag at 0 and its head at the commit index. "
               "Timed: `cairn restore --repo URL latest --out FILE --json`, which restores the "
               "newest base backup, checks every page against its hash, replays every archived "
               "entry after it with cairn's own apply, runs `PRAGMA quick_check`, fsyncs and "
               "renames the file into place. The same restore of the base backup alone, by id, "
               "tells the base from the replay." % BUCKET)
    out.append("- **Litestream**: %s, the linux-x64 binary of npm's `%s` as bench/backup_s3.py "
               "installs and runs it. `litestream replicate` of a plain SQLite copy of the same "
               "file (a `file` replica in a directory; or the same s3rver, path-style), started "
               "before the transactions (not timed: its initial snapshot), then the same "
               "transactions applied to the copy, each in its own transaction (WAL, "
               "`synchronous=NORMAL`), in list order, the j-th no earlier than cairnd's j-th "
               "acknowledgement (so that both archives see the writes arrive over the same "
               "stretch of time); stopped 3 s after the last. Timed: `litestream restore -config CFG "
               "-o FILE DB && sync FILE` (it downloads the snapshot, replays the WAL segments "
               "into it, and runs no integrity check). For S3, bench/backup_s3.py's two "
               "workarounds of s3rver apply, neither on the timed path: the upload goes through "
               "a plain s3rver process on the same data directory, and an empty marker object "
               "makes s3rver list Litestream's generation." % (
                   meta.get("litestream_version", "?"), backup_s3.LITESTREAM_PKG))
    out.append("- The transactions: every row is written by one client thread only (an "
               "UPDATE of client c touches keys k with k mod %d = c; INSERTs take new keys), so "
               "the rows cairnd ends with do not depend on how the clients interleave, and the "
               "plain copy, which applies the list in order, reaches the same state." % (
                   meta["clients"]))
    out.append("- Each tool runs once to warm up, then %d times, the four in another order each "
               "run (rotated, reversed every other run); `sync` before each command so that "
               "none pays for another's writes; everything is warm in the page cache. Wall time "
               "from the monotonic clock; peak RSS is `/usr/bin/time`'s %%M (the largest "
               "process of the command); CPU s is user + system of the command; s3rver CPU s "
               "is what s3rver used meanwhile." % meta["runs"])
    out.append("")
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out.append("| repository | tool | run | seconds | peak RSS MiB | CPU s | s3rver CPU s | "
               "entries replayed | rows checked |")
    out.append("|---|---|---|--:|--:|--:|--:|--:|---|")
    for r in rows:
        out.append("| %s | %s | %s | %.2f | %.1f | %.2f | %s | %s | %s |" % (
            r["case"], r["tool"], r["run"], r["seconds"], r["rss_kib"] / 1024, r["cpu_s"],
            "%.2f" % r["s3rver_cpu_s"] if r["case"] == "s3" else "",
            format(r["entries"], ",") if r.get("entries") is not None else "",
            {True: "same", False: "DIFFERENT"}.get(r.get("rows_ok"), "")))
    out.append("")
    out.append("</details>")
    out.append("")
    return "\n".join(out), all(verdicts)


# ---- main --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=rc.env_int("BENCH_PITR_RUNS", 5))
    ap.add_argument("--txns", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--cases", default=os.environ.get("BENCH_PITR_CASES", "dir,s3"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=None)
    ap.add_argument("--cache", default=os.path.join(REPO, "bench", "results", "backup-cache"))
    ap.add_argument("--litestream", default=os.environ.get("BENCH_S3_LITESTREAM"))
    ap.add_argument("--no-perf", action="store_true")
    ap.add_argument("--no-doc", action="store_true", help="print the section only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    args.build = rc.build_dir(args.build)
    args.cairn = os.path.join(args.build, "cairn")
    if args.runs < 1 or args.txns < 1 or args.clients < 1:
        raise SystemExit("bench-pitr: --runs, --txns and --clients must be at least 1")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASE_NAMES:
            raise SystemExit("bench-pitr: unknown case %r (dir, s3)" % c)
    for what in (args.cairn, os.path.join(args.build, "cairnd"), "/usr/bin/time"):
        if not os.access(what, os.X_OK):
            raise SystemExit("bench-pitr: %s is missing (make)" % what)
    binary, why = backup_s3.litestream_binary(args)
    if binary is None:
        raise SystemExit("bench-pitr: Litestream cannot run here: %s" % why)

    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="cairn-bench-pitr.", dir=os.environ.get("TMPDIR", "/tmp"))
    meta = rc.machine(work, args.build)
    meta["load_before"] = rc.loadavg()
    meta.update(mb=args.mb, runs=args.runs, txns=args.txns, clients=args.clients)
    meta["litestream_version"] = "Litestream " + subprocess.run(
        [binary, "version"], capture_output=True, text=True).stdout.strip()
    meta["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip() if shutil.which("node") else "?"
    # Credentials for s3rver (it checks none), and no ~/.aws of the machine's.
    home = os.path.join(work, "home")
    os.makedirs(home)
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[k]
    os.environ.update(HOME=home, AWS_ACCESS_KEY_ID=backup_s3.KEY_ID,
                      AWS_SECRET_ACCESS_KEY=backup_s3.SECRET, AWS_REGION=backup_s3.REGION)
    env = dict(os.environ)
    rows, results = [], []
    status = 0
    try:
        cached = backup_busy.cached_source(args.mb, args.seed, args.cache, work)
        src = os.path.join(work, "source.db")
        shutil.copyfile(cached, src)
        with open(src, "rb") as f:
            while f.read(1 << 24):
                pass
        meta["db_bytes"] = os.path.getsize(src)
        con = sqlite3.connect(src)
        meta["rows"], max_k = con.execute("SELECT count(*), max(k) FROM items").fetchone()
        con.close()
        txns = make_txns(args.txns, args.clients, max_k, args.seed)
        for case in cases:
            log("case %s" % case)
            r, facts = run_case(args, work, case, binary, src, txns, env, meta)
            rows += r
            results.append((case, facts))
    except (Failed, RuntimeError, subprocess.SubprocessError, OSError) as e:
        log("FAILED: %s" % e)
        status = 1
    finally:
        if args.keep:
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if status:
        return status
    meta["load_after"] = rc.loadavg()
    meta["total_s"] = int(time.monotonic() - t_start)
    cmd = "make bench-pitr" if os.environ.get("MAKELEVEL") else "/usr/bin/python3 bench/pitr_restore.py"
    envs = " ".join("%s=%s" % (k, os.environ[k]) for k in ("BENCH_PITR_RUNS", "BENCH_PITR_CASES")
                    if k in os.environ)
    meta["command"] = (envs + " " if envs else "") + cmd
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(REPO, "bench", "results", "pitr-restore-%s.jsonl" % stamp), "w") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k != "stdout"}) + "\n")
        slim = [(c, {k: v for k, v in fx.items() if k != "cairn"} | {
            "cairn": {k: v for k, v in fx["cairn"].items() if k != "acks"}}) for c, fx in results]
        f.write(json.dumps({"meta": meta, "cases": slim}) + "\n")
    text, ok = section(meta, rows, results)
    print(text)
    if not args.no_doc:
        rc.replace_section(SECTION, text)
        log("section written into docs/BENCHMARKS.md")
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
