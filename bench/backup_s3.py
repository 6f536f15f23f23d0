#!/usr/bin/env python3
"""cairn's backups to S3 against curl moving the same database file as one object, and
Litestream restoring the same database, side by side in one run, against s3rver on
loopback (issue 16, "Benchmark").

    /usr/bin/python3 bench/backup_s3.py [--mb N] [--runs 5] [--incrementals 10]
                                        [--build build] [--no-litestream] [--no-doc]

--mb defaults to $BENCH_S3_MIB, else 512; --runs to $BENCH_S3_RUNS, else 5.

s3rver (npm, pinned and installed by tests/s3/setup.sh) is started as the S3 tests start
it (tests/s3/s3rver_main.js, see tests/system/s3util.py) but straight, without the
signature-checking proxy (a Python proxy would dominate every figure), with a small
preloaded hook (written into the scratch directory) that logs each request's method,
URL, size and time to answer, so that the CompleteMultipartUpload requests can be timed.

The source is bench/backup_data.py's database (WAL mode; built once and cached in
bench/results/backup-cache/, shared with `make bench-backup`), copied into a scratch
directory and warm in the page cache. Phases, each tool taking turns run by run:

  full      curl --aws-sigv4 -T DB (one PutObject of the file), against
            cairn backup create --db DB --repo s3://BUCKET/full-N --type full;
  chain     10 times: 1% of the rows changed (bench/backup_data.py update), then
            cairn backup create --type incremental into the last full's repository;
  restore   curl (signed GET of the final database file, uploaded once) + sync, against
            cairn restore --repo ... LAST --out FILE (the full and 10 incrementals), and,
            without a target, the same with --check full, cairn restoring the full
            backup alone, the chain from a local directory, sqlite3's quick_check and
            integrity_check of the database alone, and litestream restore of the same
            final database from the same s3rver; then, when perf is installed, one more
            chain restore under `perf record` (not timed) says where cairn's CPU went.

Each figure is the median (min-max) of --runs runs after one warm-up run; peak RSS is
/usr/bin/time's %M. Every restored file is compared with the source page by page.
Writes the section "## Backups to S3 (issue 16)" of docs/BENCHMARKS.md (unless --no-doc)
and raw JSON lines to bench/results/backup-s3-STAMP.jsonl."""

import argparse
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import backup_busy  # noqa: E402  (cached_source, machine, loadavg)

SECTION = "## Backups to S3 (issue 16)"
S3DIR = os.path.join(REPO, "tests", "s3")
BUCKET = "cairn-bench"
REGION = "us-east-1"
KEY_ID = "CAIRNBENCHKEY"
SECRET = "cairn/Bench+Secret=0123456789abcdef"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TARGET_TIME = 1.5
TARGET_RSS_MIB = 64
LITESTREAM_PKG = "@flydotio/litestream@1.0.1"
MIB = 1048576

# Preloaded into s3rver (node -r): one JSON line per request, written once the answer
# has been sent: start (Unix seconds), milliseconds to answer, method, URL, body size,
# status, Range header. It only listens: the request and its body are left to s3rver.
REQLOG_JS = r"""'use strict';
const http = require('http');
const fs = require('fs');
const fd = fs.openSync(process.env.CAIRN_BENCH_REQLOG, 'a');
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (ev, req, res) {
  if (ev === 'request') {
    const t = Date.now() / 1000;
    const h0 = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - h0) / 1e6;
      fs.writeSync(fd, JSON.stringify({ t, ms, m: req.method, u: req.url,
        n: Number(req.headers['content-length'] || 0), s: res.statusCode,
        r: req.headers['range'] || null }) + '\n');
    });
  }
  return emit.apply(this, arguments);
};
"""

# s3rver as the package ships it, without tests/s3/s3rver_main.js's additions, for
# Litestream's upload only (see litestream_setup).
PLAIN_S3RVER_JS = r"""'use strict';
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const [dir, bucket, key] = process.argv.slice(2);
const i = key.indexOf(':');
AWSAccount.DUMMY_ACCOUNT.createKeyPair(key.slice(0, i), key.slice(i + 1));
const server = new S3rver({ address: '127.0.0.1', port: 0, directory: dir, silent: true,
  vhostBuckets: false, configureBuckets: [{ name: bucket, configs: [] }] });
server.run((err, address) => {
  if (err) { console.error(String(err.stack || err)); process.exit(1); }
  process.stdout.write(`listening ${address.port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
"""


def log(msg):
    print("bench-backup-s3: " + msg, file=sys.stderr, flush=True)


backup_busy.log = log


class Failed(Exception):
    pass


# ---- processes -----------------------------------------------------------------------

def read_port(proc, what, timeout=60):
    end = time.monotonic() + timeout
    line = b""
    import select
    while time.monotonic() < end:
        if proc.poll() is not None:
            break
        if select.select([proc.stdout], [], [], 0.1)[0]:
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                break
            if ch == b"\n":
                if line.startswith(b"listening "):
                    return int(line.split()[1])
                line = b""
            else:
                line += ch
    raise Failed("%s did not start (exit %r, %r)" % (what, proc.poll(), line))


def stop_proc(p, grace=10):
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cpu_of(pid):
    """User + system CPU seconds of a live process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class S3rver:
    """s3rver started as tests/system/s3util.py starts it, without the proxy."""

    def __init__(self, work):
        self.work = work
        self.data = os.path.join(work, "s3rver-data")
        self.reqlog = os.path.join(work, "s3rver-requests.jsonl")
        self.hook = os.path.join(work, "reqlog.js")
        self.p = None
        self.port = None

    def start(self):
        r = subprocess.run(["bash", os.path.join(S3DIR, "setup.sh")], capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise Failed("tests/s3/setup.sh failed: %s%s" % (r.stdout, r.stderr))
        os.makedirs(self.data, exist_ok=True)
        with open(self.hook, "w") as f:
            f.write(REQLOG_JS)
        env = dict(os.environ, CAIRN_BENCH_REQLOG=self.reqlog)
        self.errlog = open(os.path.join(self.work, "s3rver.log"), "wb")
        self.p = subprocess.Popen(
            ["node", "-r", self.hook, "--openssl-legacy-provider",
             os.path.join(S3DIR, "s3rver_main.js"), "--directory", self.data, "--port", "0",
             "--bucket", BUCKET, "--key", "%s:%s" % (KEY_ID, SECRET)],
            stdout=subprocess.PIPE, stderr=self.errlog, cwd=S3DIR, env=env)
        self.port = read_port(self.p, "s3rver")

    def stop(self):
        stop_proc(self.p)
        if self.p is not None and self.p.stdout is not None:
            self.p.stdout.close()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def url(self, key):
        return "%s/%s/%s" % (self.endpoint, BUCKET, key)

    def requests(self, t0, t1):
        """The requests s3rver started answering between Unix times t0 and t1."""
        out = []
        try:
            with open(self.reqlog) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if t0 - 0.002 <= r["t"] <= t1:
                        out.append(r)
        except OSError:
            pass
        return out

    def cpu(self):
        return cpu_of(self.p.pid)

    def boto(self):
        import boto3
        from botocore.config import Config
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}))

    def objects(self, prefix):
        c = self.boto()
        out = []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        return out

    def delete_prefix(self, prefix):
        c = self.boto()
        keys = [k for k, _ in self.objects(prefix)]
        for i in range(0, len(keys), 1000):
            c.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


# ---- measuring -----------------------------------------------------------------------

class Bench:
    def __init__(self, work, s3, cairn_env):
        self.work = work
        self.s3 = s3
        self.env = cairn_env
        self.rows = []
        self.src = None

    def measure(self, op, tool, run, argv, env=None):
        """One timed command under /usr/bin/time; returns its row (wall from the
        monotonic clock, peak RSS and CPU from time)."""
        # Write back what earlier commands left dirty, so that none pays for another's writes.
        os.sync()
        tfile = os.path.join(self.work, "time.out")
        cpu0 = self.s3.cpu()
        w0 = time.time()
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", tfile] + argv,
                           capture_output=True, env=env or self.env)
        wall = time.monotonic() - t0
        w1 = time.time()
        s3cpu = self.s3.cpu() - cpu0
        if p.returncode != 0:
            raise Failed("%s (%s, run %s) failed (%d): %s\n%s" % (
                tool, op, run, p.returncode, " ".join(argv), (p.stderr or b"").decode()[-3000:]))
        with open(tfile) as f:
            _, rss, user, sys_ = f.read().split()[-4:]
        row = {"op": op, "tool": tool, "run": run, "seconds": wall, "rss_kib": int(rss),
               "db_bytes": os.path.getsize(self.src),
               "cpu_s": float(user) + float(sys_), "s3rver_cpu_s": s3cpu, "window": [w0, w1],
               "stdout": p.stdout.decode(errors="replace")}
        self.rows.append(row)
        log("%-11s %-15s %-5s %7.2f s  %6.1f MiB peak RSS  %5.2f CPU s  s3rver %5.2f CPU s" % (
            op, tool, run, wall, int(rss) / 1024, row["cpu_s"], s3cpu))
        return row

    def annotate(self):
        """s3rver's requests of each command, from its log. Done once the run is over:
        s3rver logs a request once its answer has gone, which may be a moment after the
        client has read it and exited."""
        for row in self.rows:
            reqs = self.s3.requests(*row["window"])
            completes = [r for r in reqs if r["m"] == "POST" and "uploadId=" in r["u"]]
            parts = [r for r in reqs if r["m"] == "PUT" and "partNumber=" in r["u"]]
            puts = [r for r in reqs if r["m"] == "PUT"]
            gets = [r for r in reqs if r["m"] == "GET" and "?" not in r["u"].split("/", 2)[-1]]
            row["requests"] = len(reqs)
            row["complete_ms"] = sum(r["ms"] for r in completes)
            row["completes"] = len(completes)
            row["parts"] = len(parts)
            row["put_bytes"] = sum(r["n"] for r in puts)
            row["get_requests"] = len(gets)
            sizes = [range_bytes(r.get("r")) for r in gets]
            row["get_max_bytes"] = max([n for n in sizes if n is not None], default=0)
            row["get_small"] = sum(1 for n in sizes if n is not None and n <= 65536)
            # The most requests s3rver was answering at once.
            ev = sorted([(r["t"], 1) for r in reqs] + [(r["t"] + r["ms"] / 1000, -1) for r in reqs],
                        key=lambda e: (e[0], e[1]))
            cur = peak = 0
            for _, d in ev:
                cur += d
                peak = max(peak, cur)
            row["max_in_flight"] = peak
            if row["op"] == "full" and row["tool"] == "cairn" and len(completes) != 1:
                raise Failed("cairn's full backup (run %s) made %d CompleteMultipartUpload "
                             "requests, not 1" % (row["run"], len(completes)))
            if row["tool"] == "curl" and len(reqs) != 1:
                raise Failed("curl's %s (run %s) made %d requests, not 1" % (
                    row["op"], row["run"], len(reqs)))


def profile_restore(work, argv, env):
    """perf's view of one more restore (not timed): where cairn's CPU went, as a
    sentence for the notes; None when perf cannot run here."""
    import re
    if shutil.which("perf") is None:
        return None
    data = os.path.join(work, "perf.data")
    r = subprocess.run(["perf", "record", "-g", "-F", "1999", "-o", data, "--"] + argv,
                       capture_output=True, env=env)
    if r.returncode != 0:
        log("perf record failed (%d): %s" % (r.returncode, r.stderr.decode(errors="replace")[-300:]))
        return None

    def report(*args):
        return subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none"] + list(args),
                              capture_output=True, text=True).stdout

    dsos, syms = {}, {}
    for line in report("--no-children", "--sort", "dso").splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)", line)
        if m:
            dsos[m.group(2)] = dsos.get(m.group(2), 0) + float(m.group(1))
    for line in report("--children", "--sort", "sym").splitlines():
        m = re.match(r"\s+([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(\S+)", line)
        if m:
            syms.setdefault(m.group(2), float(m.group(1)))

    def dso(prefix):
        return sum(v for k, v in dsos.items() if k.startswith(prefix))

    return ("perf (one more restore, not timed, all of cairn's threads): %.0f%% of cairn's CPU "
            "time in the kernel, of which writing the file (pwrite) %.0f%%, quick_check "
            "reading it (pread) %.0f%%, receiving from s3rver (recv) %.0f%%, fsync %.0f%% of "
            "the whole; zstd %.0f%%, SQLite %.0f%%, XXH3 %.0f%%, libc (copies) %.0f%%, libcurl "
            "%.0f%%, cairn's own code %.0f%%." % (
                dso("[kernel"), syms.get("__libc_pwrite", 0), syms.get("__libc_pread", 0),
                syms.get("__libc_recv", 0), syms.get("fsync", 0), dso("libzstd"),
                dso("libsqlite3"), dso("libxxhash"), dso("libc.so"), dso("libcurl"),
                dso("cairn")))


def range_bytes(header):
    """The bytes a Range header "bytes=A-B" asks for; None without one."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[6:].partition("-")
    try:
        return int(last) - int(first) + 1 if last else None
    except ValueError:
        return None


def same_db(expected, actual):
    """None when ACTUAL is EXPECTED byte for byte, "counters" when only the header's
    counters that a copy made with SQLite's backup API may change differ, else what
    differs."""
    with open(expected, "rb") as a, open(actual, "rb") as b:
        page = int.from_bytes(a.read(100)[16:18], "big") or 65536
        a.seek(0)
        sa, sb = os.fstat(a.fileno()).st_size, os.fstat(b.fileno()).st_size
        if sa != sb:
            return "sizes differ: %d and %d bytes" % (sa, sb)
        x, y = a.read(page), b.read(page)
        counters = set(range(24, 28)) | set(range(40, 44)) | set(range(92, 96))
        first = None
        for i in range(page):
            if x[i] != y[i]:
                if i not in counters:
                    return "page 1 differs at byte %d" % i
                first = "counters"
        off = page
        chunk = page * 4096
        while True:
            x, y = a.read(chunk), b.read(chunk)
            if x != y:
                for i in range(0, len(x), page):
                    if x[i:i + page] != y[i:i + page]:
                        return "page %d differs" % ((off + i) // page + 1)
            if not x:
                return first
            off += len(x)


def summary(con):
    return con.execute("SELECT count(*), sum(length(txt)), total(num), sum(qty), "
                       "sum(length(data)) FROM items").fetchone()


def db_summary(path):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return summary(con)
    finally:
        con.close()


# ---- Litestream ------------------------------------------------------------------------

def litestream_binary(args):
    """(path, None) or (None, why not)."""
    if args.litestream:
        return (args.litestream, None) if os.access(args.litestream, os.X_OK) else \
            (None, "%s is not an executable" % args.litestream)
    d = os.environ.get("BENCH_S3_LITESTREAM_DIR", "/tmp/cairn-bench-litestream")
    binary = os.path.join(d, "node_modules", "@flydotio", "litestream-linux-x64", "litestream")
    if not os.access(binary, os.X_OK):
        if shutil.which("npm") is None:
            return None, "npm is not installed"
        os.makedirs(d, exist_ok=True)
        log("installing %s into %s (npm)" % (LITESTREAM_PKG, d))
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                            "--prefix", d, LITESTREAM_PKG], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            return None, "`npm install %s` failed: %s" % (LITESTREAM_PKG,
                                                         (r.stderr or r.stdout)[-500:])
        if not os.access(binary, os.X_OK):
            return None, ("%s installed, but not its linux-x64 binary (%s)" %
                          (LITESTREAM_PKG, binary))
    try:
        v = subprocess.run([binary, "version"], capture_output=True, text=True,
                           timeout=30).stdout.strip()
    except OSError as e:
        return None, "%s does not run: %s" % (binary, e)
    if not v:
        return None, "%s printed no version" % binary
    return binary, None


def litestream_config(path, db, endpoint, prefix):
    with open(path, "w") as f:
        f.write("dbs:\n  - path: %s\n    replicas:\n      - type: s3\n        bucket: %s\n"
                "        path: %s\n        endpoint: %s\n        region: %s\n"
                "        force-path-style: true\n        access-key-id: %s\n"
                "        secret-access-key: '%s'\n" % (db, BUCKET, prefix, endpoint, REGION,
                                                       KEY_ID, SECRET))


def litestream_setup(binary, work, s3, src, notes, n_incrementals):
    """Replicate a copy of the final database into the bucket, and return the config
    to restore it with from the benchmark's s3rver, or raise Failed."""
    d = os.path.join(work, "litestream")
    os.makedirs(d)
    db = os.path.join(d, "source.db")
    shutil.copyfile(src, db)
    # 1. The upload, through s3rver as the package ships it (same package and version,
    # same data directory): tests/s3/s3rver_main.js's CompleteMultipartUpload takes the
    # parts only as <Part><PartNumber/><ETag/></Part>, and aws-sdk-go (Litestream's)
    # sends <ETag> first, which it answers with 400 MalformedXML.
    js = os.path.join(work, "plain_s3rver.js")
    with open(js, "w") as f:
        f.write(PLAIN_S3RVER_JS)
    env = dict(os.environ, NODE_PATH=os.path.join(S3DIR, "node_modules"),
               CAIRN_BENCH_REQLOG=s3.reqlog)
    plain = subprocess.Popen(["node", "-r", s3.hook, "--openssl-legacy-provider", js, s3.data,
                              BUCKET, "%s:%s" % (KEY_ID, SECRET)], stdout=subprocess.PIPE,
                             stderr=open(os.path.join(work, "plain_s3rver.log"), "wb"),
                             cwd=S3DIR, env=env)
    rep = None
    try:
        port = read_port(plain, "s3rver (plain)")
        cfg_up = os.path.join(d, "upload.yml")
        litestream_config(cfg_up, db, "http://127.0.0.1:%d" % port, "ls")
        lslog = os.path.join(work, "litestream-replicate.log")
        t0 = time.monotonic()
        rep = subprocess.Popen([binary, "replicate", "-config", cfg_up], stdout=open(lslog, "wb"),
                               stderr=subprocess.STDOUT)
        snap = None
        while time.monotonic() - t0 < 1800:
            time.sleep(0.2)
            with open(lslog) as f:
                text = f.read()
            if "snapshot written" in text and "wal segment written" in text.split("snapshot written", 1)[1]:
                snap = [l for l in text.splitlines() if "snapshot written" in l][0]
                break
            if rep.poll() is not None or "level=ERROR" in text:
                raise Failed("litestream replicate: " + text[-1500:])
        if snap is None:
            raise Failed("litestream replicate wrote no snapshot within 30 minutes")
        upload_s = time.monotonic() - t0
        stop_proc(rep, 60)
        with open(lslog) as f:
            text = f.read()
        if "level=ERROR" in text:
            raise Failed("litestream replicate: " + text[-1500:])
        elapsed = sz = None
        for kv in snap.split():
            if kv.startswith("elapsed="):
                elapsed = kv.split("=", 1)[1]
            if kv.startswith("sz="):
                sz = int(kv.split("=", 1)[1])
        notes["litestream_replicate_s"] = upload_s
        notes["litestream_snapshot_elapsed"] = elapsed
        notes["litestream_snapshot_bytes"] = sz
        log("litestream: snapshot of %.1f MiB written in %s (replicate ran %.1f s)" % (
            (sz or 0) / MIB, elapsed, upload_s))
    finally:
        stop_proc(rep, 30)
        stop_proc(plain)
        if plain.stdout is not None:
            plain.stdout.close()
    # 2. s3rver 3.7.1 lists a common prefix (ListObjects with delimiter "/") only when an
    # object sits directly under it; Litestream keeps its objects two levels below the
    # generation (ls/generations/G/snapshots/...), so its restore would find no
    # generation. An empty marker object directly under the generation makes s3rver
    # list it; Litestream reads only snapshots/ and wal/ below it.
    objs = s3.objects("ls/generations/")
    gens = sorted({k.split("/")[2] for k, _ in objs})
    if len(gens) != 1:
        raise Failed("expected one Litestream generation in the bucket, found %r" % gens)
    s3.boto().put_object(Bucket=BUCKET, Key="ls/generations/%s/marker" % gens[0], Body=b"")
    notes["litestream_objects"] = len(objs)
    notes["litestream_stored_bytes"] = sum(s for _, s in objs)
    cfg = os.path.join(d, "restore.yml")
    litestream_config(cfg, db, s3.endpoint, "ls")
    notes["litestream_how"] = (
        "%s, the linux-x64 binary of npm's `%s` (run directly: the package's `litestream` "
        "script is a Node.js wrapper that exits 0 whatever the binary's status), installed into "
        "a scratch directory outside the repository. After the chain, a copy of the final "
        "database was replicated (`litestream replicate`, not timed: %.1f s until its snapshot, "
        "%.1f MiB of lz4, and the WAL segment after it were written), then stopped; the timed "
        "command is `litestream restore -config FILE -o FILE DB && sync FILE` against the same "
        "s3rver as cairn and curl (parallelism 8, its default). Two things of s3rver's had to be "
        "worked around, neither on the timed path: (1) the upload went through a second s3rver "
        "process of the same package and version on the same data directory, without "
        "tests/s3/s3rver_main.js's additions, whose CompleteMultipartUpload parser takes a "
        "part only as `<Part><PartNumber/><ETag/></Part>` and answers aws-sdk-go's "
        "`<Part><ETag/><PartNumber/></Part>` (Litestream's) with 400 MalformedXML; (2) s3rver "
        "3.7.1 lists a common prefix only when an object sits directly under it, and "
        "Litestream's objects sit two levels below their generation "
        "(`generations/G/snapshots/…`), so its restore finds no generation (`no matching "
        "backups found`): an empty object `generations/G/marker` makes s3rver list it. "
        "Litestream's copy holds its two tables (`_litestream_seq`, `_litestream_lock`) besides "
        "the data; its restore is one snapshot and one WAL segment, where cairn's is %d "
        "backups." % (
            subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip(),
            LITESTREAM_PKG, upload_s, (sz or 0) / MIB, n_incrementals + 1))
    # Litestream added its tables to this copy; the restore is compared with it.
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return cfg, db


# ---- report ----------------------------------------------------------------------------

def fmt(xs, digits=2):
    if not xs:
        return "–"
    f = "%%.%df" % digits
    return (f + " (" + f + "–" + f + ")") % (statistics.median(xs), min(xs), max(xs))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def section(meta, rows, notes):
    def sel(op, tool, measured=True):
        return [r for r in rows if r["op"] == op and r["tool"] == tool
                and (not measured or r["run"] != "warm")]

    def secs(op, tool):
        return [r["seconds"] for r in sel(op, tool)]

    dbmib = meta["db_bytes"] / MIB
    fullmib = meta["db_bytes_full"] / MIB
    out = [SECTION, ""]
    out.append("Measured %s with `%s` at commit %s; the run took %d s." % (
        meta["date"], meta["command"], meta["commit"], meta["total_s"]))
    out.append("")
    out.append("Machine: %s CPUs (%s), %s RAM, %s; every file (the database, s3rver's "
               "objects, the restored files) on %s; SQLite %s, curl %s, Node.js %s, s3rver "
               "%s. cairn, curl, Litestream and s3rver share these CPUs and this disk; load "
               "average (1, 5, 15 min) %s before the run, %s at its end." % (
                   meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"],
                   meta["filesystem"], meta["sqlite"], meta["curl"], meta["node"],
                   meta["s3rver"], meta["load_before"], meta["load_after"]))
    out.append("")
    out.append("Database: %.1f MiB (%s bytes, %s rows, %s-byte pages, WAL mode) when backed up "
               "in full, %.1f MiB (%s bytes) after the %d changes of the chain, when restored; "
               "bench/backup_data.py's data at %d MiB%s. Warm in the page cache for every "
               "run (copied, then read once), as are the objects s3rver serves back." % (
                   fullmib, format(meta["db_bytes_full"], ","), format(meta["rows"], ","),
                   meta["page_size"], dbmib, format(meta["db_bytes"], ","),
                   meta["incrementals"], meta["mb"], meta["size_note"]))
    out.append("")
    out.append("| operation | tool | seconds: median (min–max) | MiB/s of the database | "
               "bytes sent or received | peak RSS | CPU s | s3rver CPU s | time ÷ baseline |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|")

    def line(opname, tool, name, base, bytes_, digits=2):
        rs = sel(opname, tool)
        if not rs:
            return
        s = [r["seconds"] for r in rs]
        ratio = "baseline" if base is None else "—" if base is False else "%.2f×" % (med(s) / base)
        out.append("| %s | %s | %s | %.0f | %s | %.1f MiB | %.2f | %.2f | %s |" % (
            OPNAMES[opname] % meta, name, fmt(s, digits),
            med([r["db_bytes"] for r in rs]) / MIB / med(s), bytes_,
            max(r["rss_kib"] for r in rs) / 1024, med([r["cpu_s"] for r in rs]),
            med([r["s3rver_cpu_s"] for r in rs]), ratio))

    curl_put = med(secs("full", "curl"))
    line("full", "curl", "`curl --aws-sigv4 -T DB` (one PutObject)", None,
         "%.1f MiB" % fullmib)
    cf = sel("full", "cairn")
    line("full", "cairn", "**cairn** `backup create --db DB --repo s3://… --type full`",
         curl_put, "%.1f MiB in %d parts" % (med([r["put_bytes"] for r in cf]) / MIB,
                                             med([r["parts"] for r in cf])))
    net = [r["seconds"] - r["complete_ms"] / 1000 for r in cf]
    if cf:
        out.append("| %s | **cairn**, less its CompleteMultipartUpload request (see below) | "
                   "%s | %.0f | | | | | %.2f× |" % (OPNAMES["full"] % meta, fmt(net),
                                                   fullmib / med(net), med(net) / curl_put))
    inc = sel("incremental", "cairn")
    line("incremental", "cairn", "**cairn** `backup create --type incremental` (1% of rows "
         "changed before each)", False,
         "%.1f MiB (median)" % (med([r["put_bytes"] for r in inc]) / MIB) if inc else "")
    curl_get = med(secs("restore", "curl"))
    line("restore", "curl", "`curl --aws-sigv4 -o FILE` (one GetObject) + `sync FILE`", None,
         "%.1f MiB" % dbmib)
    line("restore", "cairn", "**cairn** `restore --repo s3://… LAST --out FILE` (full + %d "
         "incrementals; PRAGMA quick_check)" % meta["incrementals"], curl_get,
         "%.1f MiB in %d objects" % (notes["chain_bytes"] / MIB, meta["incrementals"] + 1))
    line("restore", "cairn-check-full", "**cairn** the same restore with `--check full` (PRAGMA "
         "integrity_check; no target)", curl_get,
         "%.1f MiB in %d objects" % (notes["chain_bytes"] / MIB, meta["incrementals"] + 1))
    line("restore", "cairn-full", "**cairn** `restore` of the full backup alone (no target)",
         curl_get, "%.1f MiB" % (notes["full_bytes"] / MIB))
    line("restore", "cairn-local", "**cairn** `restore` of the same full + %d from a directory "
         "holding the same objects (no target)" % meta["incrementals"], curl_get,
         "(local files)")
    line("restore", "quick-check", "`sqlite3 DB 'PRAGMA quick_check'` alone (a restore runs it "
         "on its output; no target)", curl_get, "")
    line("restore", "integrity-check", "`sqlite3 DB 'PRAGMA integrity_check'` alone (what "
         "`--check full` runs instead; no target)", curl_get, "")
    if sel("restore", "litestream"):
        line("restore", "litestream", "Litestream %s `restore -o FILE` + `sync FILE` (no target)"
             % meta.get("litestream_version", ""), curl_get,
             "%.1f MiB" % (notes.get("litestream_stored_bytes", 0) / MIB))
    out.append("")

    cairn_rows = [r for r in rows if r["tool"].startswith("cairn")]
    rss_max = max(r["rss_kib"] for r in cairn_rows) / 1024 if cairn_rows else float("nan")
    by_op = {}
    for r in cairn_rows:
        k = {"full": "full", "incremental": "incremental", "restore": "restore"}[r["op"]]
        if r["tool"] == "cairn-full":
            k = "restore of the full alone"
        elif r["tool"] == "cairn-check-full":
            k = "restore with --check full"
        by_op[k] = max(by_op.get(k, 0), r["rss_kib"] / 1024)
    full_ratio = med(secs("full", "cairn")) / curl_put
    rest_ratio = med(secs("restore", "cairn")) / curl_get
    verdict = lambda ok: "PASS" if ok else "**FAIL**"  # noqa: E731
    out.append("| target | measured | result |")
    out.append("|---|---|---|")
    out.append("| full backup within %.1f× of `curl -T` | %.2f s vs %.2f s: %.2f× | %s |" % (
        TARGET_TIME, med(secs("full", "cairn")), curl_put, full_ratio,
        verdict(full_ratio <= TARGET_TIME)))
    out.append("| restore of full + %d incrementals within %.1f× of curl's download + sync | "
               "%.2f s vs %.2f s: %.2f× | %s |" % (
                   meta["incrementals"], TARGET_TIME, med(secs("restore", "cairn")), curl_get,
                   rest_ratio, verdict(rest_ratio <= TARGET_TIME)))
    out.append("| peak RSS of every cairn process under %d MiB | %s; largest %.1f MiB | %s |" % (
        TARGET_RSS_MIB, ", ".join("%s %.1f MiB" % kv for kv in by_op.items()), rss_max,
        verdict(rss_max < TARGET_RSS_MIB)))
    out.append("")
    missed = []
    if full_ratio > TARGET_TIME:
        missed.append("full backup")
    if rest_ratio > TARGET_TIME:
        missed.append("restore")
    if rss_max >= TARGET_RSS_MIB:
        missed.append("peak RSS")
    out.append("**Targets missed:** %s." % ", ".join(missed) if missed else "All targets met.")
    out.append("")
    out.append("Every file restored by curl and by cairn (each of its three restores) was "
               "compared with the database it stands for page by page: %s. Litestream's was "
               "compared by a summary of every row (count and sums of every column): %s." % (
                   notes["compare"], notes.get("litestream_compare", "not run")))
    out.append("")
    out.append("### s3rver's own costs")
    out.append("")
    cm = [r["complete_ms"] / 1000 for r in cf]
    share = [r["complete_ms"] / 1000 / r["seconds"] for r in cf]
    out.append("- **CompleteMultipartUpload.** s3rver makes the object at completion by "
               "reading every part back from its disk, hashing it (MD5) and writing it again "
               "as one file; real S3 only records the parts. Timed by s3rver itself (a "
               "preloaded hook logs when each request arrives and when its answer is sent): "
               "the one Complete of cairn's full backup took %s s (median (min–max)), %.0f%% "
               "of cairn's time (%.0f–%.0f%%); cairn without it would take %.2f s, %.2f× "
               "curl's PutObject. s3rver writes cairn's %.1f MiB twice (parts, then the "
               "object), curl's %.1f MiB once." % (
                   fmt(cm), 100 * med(share), 100 * min(share), 100 * max(share), med(net),
                   med(net) / curl_put, med([r["put_bytes"] for r in cf]) / MIB, fullmib))
    incm = [r["complete_ms"] / 1000 for r in inc if r["completes"]]
    if incm:
        out.append("- %s of the %d incrementals %s multipart uploads too%s: their Complete took "
                   "%s s, of incrementals taking %s s." % (
                       "All" if len(incm) == len(inc) else str(len(incm)), len(inc),
                       "were" if len(incm) > 1 else "was",
                       "" if len(incm) == len(inc) else " (the others, smaller than a part, one "
                       "PutObject each)", fmt(incm, 3), fmt([r["seconds"] for r in inc], 3)))
    cput = [r["s3rver_cpu_s"] for r in sel("full", "curl")]
    out.append("- s3rver is one Node.js process: it used %.2f CPU-seconds to take curl's "
               "PutObject and %.2f for cairn's full backup (median), and %.2f and %.2f to "
               "serve curl's download and cairn's restore. On this machine's %s CPUs it "
               "competes with the client for them; with the server on another machine the "
               "client would have them to itself." % (
                   med(cput), med([r["s3rver_cpu_s"] for r in cf]),
                   med([r["s3rver_cpu_s"] for r in sel("restore", "curl")]),
                   med([r["s3rver_cpu_s"] for r in sel("restore", "cairn")]), meta["nproc"]))
    rg = sel("restore", "cairn")
    if rg:
        out.append("- cairn's restore of the chain made %d GETs of its %d objects (%.1f MiB in "
                   "all), %d of them of 64 KiB or less (headers, footers, manifest heads, for "
                   "the catalogue and the files' opening), the others ranged GETs of up to "
                   "%.1f MiB read ahead, at most %d in flight at once (median over the runs), "
                   "and %d HEADs; s3rver spent %.2f CPU-seconds serving them, against %.2f for "
                   "curl's one GET of the %.1f MiB database (%.2f and %.2f ms per MiB). Its full "
                   "backup had at most %d requests in flight (parts)." % (
                       med([r["get_requests"] for r in rg]), meta["incrementals"] + 1,
                       notes["chain_bytes"] / MIB, med([r["get_small"] for r in rg]),
                       max(r["get_max_bytes"] for r in rg) / MIB,
                       med([r["max_in_flight"] for r in rg]),
                       med([r["requests"] - r["get_requests"] for r in rg]),
                       med([r["s3rver_cpu_s"] for r in rg]),
                       med([r["s3rver_cpu_s"] for r in sel("restore", "curl")]), dbmib,
                       1000 * med([r["s3rver_cpu_s"] for r in rg]) / (notes["chain_bytes"] / MIB),
                       1000 * med([r["s3rver_cpu_s"] for r in sel("restore", "curl")]) / dbmib,
                       med([r["max_in_flight"] for r in cf])))
    out.append("")
    out.append("Notes on this run:")
    out.append("")
    for n in reading(meta, rows, notes, sel, secs):
        out.append("- " + n)
    out.append("")
    out.append("### What was measured")
    out.append("")
    out.append("- **s3rver** 3.7.1 (npm, installed by tests/s3/setup.sh) on 127.0.0.1, started "
               "as the S3 tests start it (tests/s3/s3rver_main.js) but straight: no "
               "signature-checking proxy in front (it is Python, and would be the bottleneck "
               "of every figure). It stores each object as a file in a directory on the same "
               "disk, and fsyncs nothing. Path-style URLs; every client signs with SigV4 "
               "(s3rver does not check signatures).")
    out.append("- **Full backup**: curl %s `--aws-sigv4 aws:amz:%s:s3 -T DB URL` (one "
               "PutObject of the whole file, `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as "
               "cairn sends) and `cairn backup create --db DB --repo s3://%s/full-N "
               "--s3-endpoint URL --type full --json` (reads the database, compresses it with "
               "zstd and sends it as one multipart upload of 8 MiB parts, 4 in flight, into a "
               "fresh prefix each run). One warm-up run each, then %d runs, the two tools "
               "taking turns (the order swapped every run). The file and the backups stay in "
               "s3rver until the next run. Before each command every dirty page is written "
               "back (sync), so that no run pays for another's writes; s3rver's own writes are "
               "then left to the kernel (it fsyncs nothing) for both tools alike." % (
                   meta["curl"], REGION, BUCKET, meta["runs"]))
    out.append("- **Chain**: %d times: `UPDATE items SET txt = <new text>` for a random 1%% of "
               "the keys, checkpoint (bench/backup_data.py update), then `cairn backup create "
               "--type incremental` into the last full backup's repository. Each is measured "
               "once." % meta["incrementals"])
    out.append("- **Restore**: the final database file is uploaded once with curl (not timed); "
               "then, one warm-up run and %d runs each, taking turns: `curl -o FILE URL && "
               "sync FILE` (a signed GetObject, then an fsync, since cairn fsyncs its output); "
               "`cairn restore --repo s3://… LAST --out FILE --json` (the full backup and %d "
               "incrementals, each read once in order with ranged GETs read ahead, several in "
               "flight, every page checked against its hash as it is written, fsynced, checked "
               "with `PRAGMA quick_check`, renamed into place); the same with `--check full` "
               "(`PRAGMA integrity_check` instead); the same restore of the full backup "
               "alone; the same restore from a directory holding the same objects (fetched "
               "with boto3 beforehand, not timed), to tell what S3 adds; `sqlite3 "
               "'file:DB?immutable=1' 'PRAGMA quick_check'` and `'PRAGMA integrity_check'` of "
               "the source, the checks a restore runs on its output; Litestream's restore "
               "(below). Times are wall-clock; peak RSS is "
               "`/usr/bin/time`'s %%M (the largest process of the command); CPU s is its user + "
               "system time; s3rver CPU s is what s3rver used meanwhile (/proc)." % (
                   meta["runs"], meta["incrementals"]))
    out.append("- **Litestream**: %s" % notes.get("litestream_how", "not run."))
    out.append("")
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out.append("| operation | tool | run | seconds | peak RSS MiB | CPU s | s3rver CPU s | "
               "requests | bytes sent (PUT) | CompleteMultipartUpload s |")
    out.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        out.append("| %s | %s | %s | %.2f | %.1f | %.2f | %.2f | %d | %s | %s |" % (
            r["op"], r["tool"], r["run"], r["seconds"], r["rss_kib"] / 1024, r["cpu_s"],
            r["s3rver_cpu_s"], r["requests"],
            "%.1f MiB" % (r["put_bytes"] / MIB) if r["put_bytes"] else "",
            "%.2f" % (r["complete_ms"] / 1000) if r["completes"] else ""))
    out.append("")
    out.append("</details>")
    out.append("")
    return "\n".join(out)


def reading(meta, rows, notes, sel, secs):
    """The notes under the table, from the figures."""
    db = meta["db_bytes_full"]
    out = []
    cf = sel("full", "cairn")
    if cf:
        sent = med([r["put_bytes"] for r in cf])
        out.append("cairn's full backup sent %.1f MiB, %.0f%% of the database (its pages "
                   "compressed with zstd), where curl sends the whole file; it used %.2f "
                   "CPU-seconds in %.2f s (reading, compressing, sending), curl %.2f." % (
                       sent / MIB, 100 * sent / db, med([r["cpu_s"] for r in cf]),
                       med(secs("full", "cairn")), med([r["cpu_s"] for r in sel("full", "curl")])))
    curl_put = med(secs("full", "curl"))
    ratio = med(secs("full", "cairn")) / curl_put
    net = med([r["seconds"] - r["complete_ms"] / 1000 for r in cf])
    if cf and ratio <= TARGET_TIME:
        out.append("The full backup meets its target%s (%.2f× against %.1f×), and about a third "
                   "of its time is s3rver's CompleteMultipartUpload: without it, %.2f× curl." % (
                       " by a narrow margin" if ratio > 0.9 * TARGET_TIME else "", ratio,
                       TARGET_TIME, net / curl_put))
    elif cf:
        out.append("The full backup misses its target (%.2f× against %.1f×); without s3rver's "
                   "CompleteMultipartUpload it would take %.2f× curl." % (
                       ratio, TARGET_TIME, net / curl_put))
    chain = med(secs("restore", "cairn"))
    curl_get = med(secs("restore", "curl"))
    local = med(secs("restore", "cairn-local"))
    quick = med(secs("restore", "quick-check"))
    check = med(secs("restore", "integrity-check"))
    check_full = med(secs("restore", "cairn-check-full"))
    full_only = med(secs("restore", "cairn-full"))
    rg = sel("restore", "cairn")
    if rg:
        ratio = chain / curl_get
        out.append("Restore (%s: %.2f× curl's download + sync, against %.1f×): cairn reads each "
                   "of the %d files once, in order, with ranged GETs read ahead (several in "
                   "flight), checks every page against its hash before it writes it, then "
                   "fsyncs the file while `PRAGMA quick_check` reads it (%.2f s alone here) and "
                   "renames it into place. From a directory holding the same objects it takes "
                   "%.2f s (%.2f× curl), from s3rver %.2f s: fetching over S3 adds %.2f s. With "
                   "`--check full` (`PRAGMA integrity_check`, %.2f s alone) it takes %.2f s." % (
                       "meets its target" if ratio <= TARGET_TIME else "**misses its target**",
                       ratio, TARGET_TIME, meta["incrementals"] + 1, quick, local,
                       local / curl_get, chain, chain - local, check, check_full))
        cc = med([r["cpu_s"] for r in rg])
        cs = med([r["s3rver_cpu_s"] for r in rg])
        uc = med([r["cpu_s"] for r in sel("restore", "curl")])
        us = med([r["s3rver_cpu_s"] for r in sel("restore", "curl")])
        lc = med([r["cpu_s"] for r in sel("restore", "cairn-local")])
        ncpu = int(meta["nproc"])
        out.append("Where the time goes: the restore and s3rver share this machine's %d CPUs. "
                   "cairn used %.2f CPU-seconds (%.2f from a directory: decompressing and "
                   "hashing every page, writing the file, quick_check reading it back; S3 adds "
                   "receiving, and the read-ahead's threads) and s3rver %.2f serving it: %.2f "
                   "in all, at least %.2f s of wall time on %d CPUs however well they overlap. "
                   "curl and s3rver used %.2f and %.2f (%.2f in all) for curl's download, which "
                   "only copies the bytes to the file. s3rver serves many ranged GETs at a "
                   "higher cost per byte than one GET of the whole file (the last line on "
                   "s3rver's costs, above), a cost of this test server, not of S3 itself.%s" % (
                       ncpu, cc, lc, cs, cc + cs, (cc + cs) / ncpu, ncpu, uc, us, uc + us,
                       " " + notes["profile"] if notes.get("profile") else ""))
        inc_mib = (notes["chain_bytes"] - notes["full_bytes"]) / MIB
        out.append("The full backup alone (%.1f MiB) restores from s3rver in %.2f s (%.2f× "
                   "curl), the full and %d incrementals in %.2f s: the incrementals, %d files "
                   "of %.1f MiB in all, cost %.2f s more, %.0f ms a file. Besides their "
                   "bytes, each file costs requests in a row before its blocks flow (opening "
                   "it, its footer, its manifest; the next file's are made while one is "
                   "applied), the ramp of its read-ahead, and the drain of the decompressing "
                   "workers at its end; an incremental's pages, scattered over the database, "
                   "are written one pwrite each." % (
                       notes["full_bytes"] / MIB, full_only, full_only / curl_get,
                       meta["incrementals"], chain, meta["incrementals"], inc_mib,
                       chain - full_only, 1000 * (chain - full_only) / meta["incrementals"]))
    ls = sel("restore", "litestream")
    if ls:
        out.append("Litestream restored the same database in %.2f s (%.2f× curl, %.2f× cairn's "
                   "restore of its full backup alone): it downloads one lz4 snapshot and a WAL "
                   "segment and writes the file; it runs no integrity check, at peak RSS %.1f "
                   "MiB." % (med([r["seconds"] for r in ls]), med([r["seconds"] for r in ls]) / curl_get,
                             med([r["seconds"] for r in ls]) / full_only,
                             max(r["rss_kib"] for r in ls) / 1024))
    inc = sel("incremental", "cairn")
    if inc:
        out.append("Each incremental (1%% of the rows changed before it) took %s s and sent "
                   "%.1f MiB (median)." % (fmt([r["seconds"] for r in inc]),
                                           med([r["put_bytes"] for r in inc]) / MIB))
    return out


OPNAMES = {
    "full": "full backup, median of %(runs)d",
    "incremental": "incremental, median of %(incrementals)d",
    "restore": "restore, median of %(runs)d",
}


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


# ---- main ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=int(os.environ.get("BENCH_S3_MIB", "512")))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_S3_RUNS", "5")))
    ap.add_argument("--incrementals", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=os.environ.get("BUILD", os.path.join(REPO, "build")))
    ap.add_argument("--cache", default=os.path.join(REPO, "bench", "results", "backup-cache"))
    ap.add_argument("--litestream", default=os.environ.get("BENCH_S3_LITESTREAM"),
                    help="a litestream binary (default: npm install %s into "
                         "$BENCH_S3_LITESTREAM_DIR or /tmp/cairn-bench-litestream)" % LITESTREAM_PKG)
    ap.add_argument("--no-litestream", action="store_true")
    ap.add_argument("--compression", default=None,
                    help="cairn backup create --compression C (default: cairn's own)")
    ap.add_argument("--size-note", default=None,
                    help="why this size, for the doc (default: says the issue's is 1 GiB)")
    ap.add_argument("--no-doc", action="store_true", help="print the section only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--report", metavar="JSONL",
                    help="measure nothing: write the section again from a run's raw results "
                         "(bench/results/backup-s3-*.jsonl)")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        text = section(lines[-1]["meta"], lines[:-1], lines[-1]["notes"])
        print(text)
        if not args.no_doc:
            replace_section(os.path.join(REPO, "docs", "BENCHMARKS.md"), text)
        return 0

    t_start = time.monotonic()
    cairn = os.path.join(os.path.abspath(args.build), "cairn")
    for what, ok in ((cairn, os.access(cairn, os.X_OK)), ("/usr/bin/time", os.access("/usr/bin/time", os.X_OK)),
                     ("curl", shutil.which("curl")), ("node", shutil.which("node"))):
        if not ok:
            raise SystemExit("bench-backup-s3: %s is missing (make deps; make)" % what)
    work = tempfile.mkdtemp(prefix="cairn-bench-s3.", dir=os.environ.get("TMPDIR", "/tmp"))
    meta = backup_busy.machine(work)
    meta["load_before"] = backup_busy.loadavg()
    meta.update(mb=args.mb, runs=args.runs, incrementals=args.incrementals)
    meta["curl"] = subprocess.run(["curl", "--version"], capture_output=True,
                                  text=True).stdout.split()[1]
    meta["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    notes = {"text": []}
    s3 = S3rver(work)
    home = os.path.join(work, "home")  # an empty HOME: no ~/.aws of the machine's
    os.makedirs(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=home, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_REGION=REGION)
    bench = Bench(work, s3, env)
    status = 0
    try:
        cached = backup_busy.cached_source(args.mb, args.seed, args.cache, work)
        src = os.path.join(work, "source.db")
        shutil.copyfile(cached, src)
        bench.src = src
        meta["db_bytes_full"] = os.path.getsize(src)
        with open(src, "rb") as f:
            while f.read(1 << 24):
                pass
        with open(cached + ".json") as f:
            meta["rows"] = json.load(f)["rows"]
        con = sqlite3.connect(src)
        meta["page_size"] = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        s3.start()
        with open(os.path.join(S3DIR, "node_modules", "s3rver", "package.json")) as f:
            meta["s3rver"] = json.load(f)["version"]
        log("s3rver on %s, data in %s; source %s (%.1f MiB), warm" % (
            s3.endpoint, s3.data, src, os.path.getsize(src) / MIB))
        sigv4 = ["--aws-sigv4", "aws:amz:%s:s3" % REGION, "--user", "%s:%s" % (KEY_ID, SECRET)]
        ep = ["--s3-endpoint", s3.endpoint]
        comp = ["--compression", args.compression] if args.compression else []
        out = os.path.join(work, "out")
        os.makedirs(out)

        # -- full backups ------------------------------------------------------------
        last_repo = None
        full_id = None
        full_bytes = 0
        for i in range(args.runs + 1):
            run = "warm" if i == 0 else str(i)
            order = ("curl", "cairn") if i % 2 == 0 else ("cairn", "curl")
            for tool in order:
                if tool == "curl":
                    key = "curl/full-%d.db" % i
                    bench.measure("full", "curl", run, ["curl", "-sS", "--fail"] + sigv4 + [
                        "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-o", "/dev/null",
                        "-T", src, s3.url(key)])
                    got = s3.objects(key)
                    if got != [(key, os.path.getsize(src))]:
                        raise Failed("curl's object is not the database: %r" % got)
                    s3.delete_prefix(key)
                else:
                    repo = "full-%d" % i
                    row = bench.measure("full", "cairn", run, [
                        cairn, "backup", "create", "--db", src, "--repo",
                        "s3://%s/%s" % (BUCKET, repo)] + ep + comp + ["--type", "full", "--json"])
                    entry = json.loads(row["stdout"])
                    row["id"] = entry["id"]
                    row["size_bytes"] = entry["size_bytes"]
                    if last_repo is not None:
                        s3.delete_prefix(last_repo + "/")
                    last_repo, full_id, full_bytes = repo, entry["id"], entry["size_bytes"]
        repo_url = "s3://%s/%s" % (BUCKET, last_repo)
        notes["full_bytes"] = full_bytes

        # -- the chain: incrementals ---------------------------------------------------
        last_id = full_id
        chain_bytes = full_bytes
        for n in range(1, args.incrementals + 1):
            upd = subprocess.run([sys.executable, os.path.join(REPO, "bench", "backup_data.py"),
                                  "update", "--db", src, "--fraction", "0.01", "--seed",
                                  str(args.seed * 1000 + n), "--vocab-seed", str(args.seed)],
                                 check=True, capture_output=True, text=True)
            row = bench.measure("incremental", "cairn", str(n), [
                cairn, "backup", "create", "--db", src, "--repo", repo_url] + ep + comp + [
                "--type", "incremental", "--json"])
            entry = json.loads(row["stdout"])
            row["id"] = entry["id"]
            row["size_bytes"] = entry["size_bytes"]
            row["update"] = json.loads(upd.stdout)
            if entry.get("parent_id") != last_id:
                raise Failed("incremental %d's parent is %s, not %s" % (
                    n, entry.get("parent_id"), last_id))
            last_id = entry["id"]
            chain_bytes += entry["size_bytes"]
        notes["chain_bytes"] = chain_bytes
        listing = subprocess.run([cairn, "backup", "list", "--repo", repo_url] + ep + ["--json"],
                                 capture_output=True, text=True, env=env)
        types = [e["type"] for e in json.loads(listing.stdout)]
        if types != ["full"] + ["incremental"] * args.incrementals:
            raise Failed("the repository holds %r, not one full and %d incrementals" % (
                types, args.incrementals))
        meta["db_bytes"] = os.path.getsize(src)

        # -- Litestream: replicate the final database (not timed) -------------------------
        ls_cfg = ls_db = None
        if args.no_litestream:
            notes["litestream_how"] = "not run (--no-litestream)."
        else:
            binary, why = litestream_binary(args)
            if binary is None:
                notes["litestream_how"] = "could not be run here: %s." % why
                log("litestream: " + why)
            else:
                meta["litestream_version"] = subprocess.run(
                    [binary, "version"], capture_output=True, text=True).stdout.strip()
                try:
                    ls_cfg, ls_db = litestream_setup(binary, work, s3, src, notes,
                                                     args.incrementals)
                except (Failed, OSError, subprocess.SubprocessError) as e:
                    notes["litestream_how"] = "could not be run here: %s" % str(e)[-800:]
                    log("litestream failed: %s" % e)

        # -- restores ---------------------------------------------------------------------
        final_key = "curl/final.db"
        r = subprocess.run(["curl", "-sS", "--fail"] + sigv4 + [
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-o", "/dev/null", "-T", src,
            s3.url(final_key)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Failed("uploading the final database with curl: " + r.stderr)
        # Warm: what s3rver will serve is in the page cache.
        for root, _, files in os.walk(s3.data):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 24):
                        pass
        src_summary = db_summary(src)
        ls_summary = db_summary(ls_db) if ls_db else None
        compare = {}
        # The same objects in a directory: cairn's restore without S3 in the way.
        local_repo = os.path.join(work, "local-repo")
        os.makedirs(local_repo)
        c = s3.boto()
        for key, _ in s3.objects(last_repo + "/"):
            c.download_file(BUCKET, key, os.path.join(local_repo, key.split("/", 1)[1]))
        counters = False
        tools = ["curl", "cairn", "cairn-check-full", "cairn-full", "cairn-local", "quick-check",
                 "integrity-check"] + (
            ["litestream"] if ls_cfg else [])
        for i in range(args.runs + 1):
            run = "warm" if i == 0 else str(i)
            k = i % len(tools)
            for tool in tools[k:] + tools[:k]:
                dest = os.path.join(out, "restored-%s.db" % tool)
                if tool == "curl":
                    bench.measure("restore", "curl", run, [
                        "sh", "-c", 'curl "$@" && sync "$0"', dest, "-sS", "--fail"] + sigv4 + [
                        "-H", "x-amz-content-sha256: " + EMPTY_SHA256, "-o", dest,
                        s3.url(final_key)])
                    expected = src
                elif tool == "cairn":
                    bench.measure("restore", "cairn", run, [
                        cairn, "restore", "--repo", repo_url, last_id, "--out", dest] + ep + [
                        "--json"])
                    expected = src
                elif tool == "cairn-check-full":
                    bench.measure("restore", "cairn-check-full", run, [
                        cairn, "restore", "--repo", repo_url, last_id, "--out", dest] + ep + [
                        "--check", "full", "--json"])
                    expected = src
                elif tool == "cairn-full":
                    bench.measure("restore", "cairn-full", run, [
                        cairn, "restore", "--repo", repo_url, full_id, "--out", dest] + ep + [
                        "--json"])
                    expected = cached
                elif tool == "cairn-local":
                    bench.measure("restore", "cairn-local", run, [
                        cairn, "restore", "--repo", local_repo, last_id, "--out", dest,
                        "--json"])
                    expected = src
                elif tool in ("quick-check", "integrity-check"):
                    pragma = tool.replace("-", "_")
                    row = bench.measure("restore", tool, run, [
                        "sqlite3", "file:%s?immutable=1" % src, "PRAGMA " + pragma])
                    if row["stdout"].strip() != "ok":
                        raise Failed("PRAGMA %s of the source: %s" % (pragma, row["stdout"][:300]))
                    continue
                else:
                    try:
                        bench.measure("restore", "litestream", run, [
                            "sh", "-c", '"$@" && sync "$0"', dest, binary, "restore",
                            "-config", ls_cfg, "-o", dest, ls_db])
                        got = db_summary(dest)
                        if got != ls_summary or got != src_summary:
                            raise Failed("Litestream's restore holds %r, not %r" % (
                                got, src_summary))
                    except Failed as e:
                        # No target rides on it: say why, drop it, go on.
                        notes["litestream_how"] += (" Its restore failed in run %s, and its "
                                                    "runs were dropped: %s" % (run, str(e)[-600:]))
                        log("litestream restore failed: %s" % e)
                        bench.rows = [r for r in bench.rows if r["tool"] != "litestream"]
                        tools.remove("litestream")
                    else:
                        compare["litestream"] = "the same rows"
                    for p in (dest, dest + "-wal", dest + "-shm"):
                        if os.path.exists(p):
                            os.unlink(p)
                    continue
                diff = same_db(expected, dest)
                if diff == "counters":
                    counters = True
                elif diff is not None:
                    raise Failed("%s's restore is not the database: %s" % (tool, diff))
                os.unlink(dest)
        dest = os.path.join(out, "restored-profiled.db")
        notes["profile"] = profile_restore(work, [
            cairn, "restore", "--repo", repo_url, last_id, "--out", dest] + ep + ["--json"], env)
        if os.path.exists(dest):
            os.unlink(dest)
        time.sleep(1)
        bench.annotate()
        notes["compare"] = ("identical but for the header's change counters in some" if counters
                            else "identical byte for byte")
        if "litestream" in compare:
            notes["litestream_compare"] = "the same rows"
    except Failed as e:
        log("FAILED: %s" % e)
        status = 1
    finally:
        s3.stop()
        if args.keep:
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if status != 0:
        return status

    meta["load_after"] = backup_busy.loadavg()
    meta["total_s"] = int(time.monotonic() - t_start)
    meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "make bench-backup-s3" if os.environ.get("MAKELEVEL") else "/usr/bin/python3 bench/backup_s3.py"
    envs = " ".join("%s=%s" % (k, os.environ[k]) for k in ("BENCH_S3_MIB", "BENCH_S3_RUNS")
                    if k in os.environ)
    meta["command"] = (envs + " " if envs else "") + cmd
    meta["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip() or "?"
    # As bench/backup.sh says it: the figures are of the working tree's code.
    if subprocess.run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--", "src", "include"],
                      capture_output=True).returncode != 0:
        meta["commit"] += " (+ uncommitted changes in src/ or include/)"
    meta["size_note"] = args.size_note if args.size_note is not None else (
        "" if args.mb >= 1024 else " (the issue names 1 GiB: `BENCH_S3_MIB=1024 make "
        "bench-backup-s3` measures that, in about twice the time: 6 minutes on this machine, "
        "against the 3 this benchmark is meant to take, hence the default of 512 MiB)")
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(REPO, "bench", "results", "backup-s3-%s.jsonl" % stamp), "w") as f:
        for r in bench.rows:
            f.write(json.dumps({k: v for k, v in r.items() if k != "stdout"}) + "\n")
        f.write(json.dumps({"meta": meta, "notes": notes}) + "\n")
    text = section(meta, bench.rows, notes)
    print(text)
    if not args.no_doc:
        replace_section(os.path.join(REPO, "docs", "BENCHMARKS.md"), text)
        log("section written into docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
