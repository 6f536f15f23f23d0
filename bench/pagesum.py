#!/usr/bin/python3
"""`make bench-pagesum`: what page checksums cost. Two single-node cairnd side by side on
this machine, the same build: one on a database with a checksum in every page (the
default), one started with --no-page-checksums. Both are loaded with the same rows
(larger than SQLite's page cache, so that reads reach the file, where pages are
verified) and then take turns, round after round, order reversed every other round, on
the two workloads of the target: single-row INSERTs (16 clients; every checkpoint seals
the pages it writes) and primary-key SELECTs of random keys (16 clients; every page read
from the file is verified). Rates are summed over the rounds of each side. Target: the
checksummed side within 5% of the other on both.

Settings (environment): BENCH_ROUNDS=5, BENCH_DURATION=5 (seconds per run),
BENCH_LOAD_ROWS=400000, BENCH_CLIENTS=16, BENCH_WRITE_DOC=1 (0: print only),
BUILD=build. Writes the table into docs/BENCHMARKS.md under "## Page checksums".
"""
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = (REPO / os.environ.get("BUILD", "build")).resolve()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DURATION = float(os.environ.get("BENCH_DURATION", "5"))
LOAD_ROWS = int(os.environ.get("BENCH_LOAD_ROWS", "400000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
WRITE_DOC = os.environ.get("BENCH_WRITE_DOC", "1") != "0"
SECTION = "## Page checksums (issue: no request may stop the cluster)"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, work, name, extra):
        self.name = name
        self.dir = work / name
        self.http = free_port()
        self.raft = free_port()
        self.log = open(work / (name + ".log"), "w")
        self.proc = subprocess.Popen(
            [str(BUILD / "cairnd"), "--data-dir", str(self.dir), "--http-addr",
             "127.0.0.1:%d" % self.http, "--raft-addr", "127.0.0.1:%d" % self.raft, "-q"] + extra,
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.http, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: %s did not start (see %s.log)" % (name, name))
            time.sleep(0.05)

    def post(self, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.http, path),
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            doc = json.loads(r.read())
        for res in doc.get("results", []):
            if "error" in res:
                raise SystemExit("bench: %s: %s" % (self.name, res["error"]))
        return doc

    def status(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/status" % self.http, timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def bench_http(node, *args):
    out = subprocess.run([str(BUILD / "bench_http"), "--url", "127.0.0.1:%d" % node.http] +
                         [str(a) for a in args], capture_output=True, text=True, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    if line["errors"]:
        raise SystemExit("bench: %s: %d errors, first: %s" % (node.name, line["errors"],
                                                               line["first_error"]))
    return line


def main():
    for b in ("cairnd", "bench_http"):
        if not (BUILD / b).exists():
            raise SystemExit("bench: %s is missing; build first (make)" % (BUILD / b))
    work = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-pagesum."))
    nodes = []
    try:
        on = Node(work, "checksums", [])
        nodes.append(on)
        off = Node(work, "plain", ["--no-page-checksums"])
        nodes.append(off)
        assert on.status()["store"]["page_checksums"] is True
        assert off.status()["store"]["page_checksums"] is False
        keys = {}
        for n in (on, off):
            n.post("/db/execute", ["CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)"])
            line = bench_http(n, "--mode", "txn", "--rows", 10000, "--requests",
                              LOAD_ROWS // 10000, "--key-start", 1)
            keys[n.name] = line["key_end"]
        sizes = {}
        for n in (on, off):
            doc = n.post("/db/query", ["PRAGMA page_count"])
            sizes[n.name] = doc["results"][0]["values"][0][0]
        print("bench: loaded %d rows into each (database files: %s)" % (LOAD_ROWS, sizes),
              file=sys.stderr)
        totals = {(w, n.name): [0.0, 0.0] for w in ("insert", "select") for n in (on, off)}
        lat = {(w, n.name): [] for w in ("insert", "select") for n in (on, off)}
        for r in range(ROUNDS):
            order = (on, off) if r % 2 == 0 else (off, on)
            for n in order:
                line = bench_http(n, "--mode", "insert", "--clients", CLIENTS, "--duration",
                                  DURATION, "--key-start", keys[n.name])
                keys[n.name] = line["key_end"]
                totals[("insert", n.name)][0] += line["window_rows"]
                totals[("insert", n.name)][1] += line["window_s"]
                lat[("insert", n.name)].append(line["p50_ms"])
            for n in order:
                line = bench_http(n, "--mode", "select", "--clients", CLIENTS, "--duration",
                                  DURATION, "--key-min", 1, "--key-max", LOAD_ROWS)
                totals[("select", n.name)][0] += line["window_rows"]
                totals[("select", n.name)][1] += line["window_s"]
                lat[("select", n.name)].append(line["p50_ms"])
            print("bench: round %d of %d done" % (r + 1, ROUNDS), file=sys.stderr)
        failures = on.status()["store"]["checksum_failures"]
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(work, ignore_errors=True)

    def rate(w, name):
        rows, secs = totals[(w, name)]
        return rows / secs if secs else 0.0

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else 0.0

    rows = []
    verdicts = []
    for w, label in (("insert", "single-row INSERT, %d clients" % CLIENTS),
                     ("select", "PK SELECT of a random key, %d clients" % CLIENTS)):
        a, b = rate(w, "checksums"), rate(w, "plain")
        ratio = a / b if b else 0.0
        ok = ratio >= 0.95
        verdicts.append(ok)
        rows.append("| %s | %s | %s | %.3fx | %.2f / %.2f | %s |" % (
            label, "{:,.0f}".format(a), "{:,.0f}".format(b), ratio,
            median(lat[(w, "checksums")]), median(lat[(w, "plain")]), "PASS" if ok else "FAIL"))
    table = "\n".join([
        "| workload | with checksums (rows/s) | without (rows/s) | ratio | p50 ms (with / without) | target >= 0.95x |",
        "|---|---|---|---|---|---|"] + rows)
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    text = "\n".join([
        SECTION, "",
        "Command: `make bench-pagesum` (bench/pagesum.py): two single-node cairnd of the same "
        "build side by side, one on a database with page checksums (the default) and one "
        "started with `--no-page-checksums`, each loaded with %d rows (%s pages of 4 KiB: "
        "larger than SQLite's page cache, so reads reach the file, where every page "
        "is verified), then %d rounds of %g s per workload and side, taking turns, order "
        "reversed every other round; rates over the summed time." % (
            LOAD_ROWS, " and ".join("{:,}".format(v) for v in sizes.values()), ROUNDS, DURATION),
        "",
        "Machine: %s, %d CPUs, %s. Pages refused during the run: %d." % (
            cpu or platform.machine(), os.cpu_count() or 0, platform.platform(), failures),
        "", table, ""])
    print(text)
    if WRITE_DOC:
        doc = REPO / "docs" / "BENCHMARKS.md"
        body = doc.read_text()
        if SECTION in body:
            start = body.index(SECTION)
            nxt = body.find("\n## ", start + len(SECTION))
            body = body[:start] + text + ("\n" + body[nxt + 1:] if nxt >= 0 else "")
        else:
            body = body.rstrip("\n") + "\n\n" + text
        doc.write_text(body)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
