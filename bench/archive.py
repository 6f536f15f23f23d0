#!/usr/bin/python3
"""`make bench-archive`: what the continuous archive costs and what it saves (issue 18).

Throughput: three single-node cairnd of the same build side by side on this machine,
each archiving (or not) into its own local repository directory: `off` (no archive),
`on` (--archive, default settings: a segment every 1 s) and `sync` (--archive-sync: a
write is answered once its segment is in the repository). They take turns, round after
round, order rotated every round, on two workloads: single-row INSERTs from 64 clients,
and 10,000-row transactions (POST /db/execute?transaction) from 4 clients, both driven
by bench_http. Rates are summed over the rounds of each side. Targets: on >= 0.9x off,
sync >= 0.5x off, on both workloads.

RPO: the total-loss procedure of docs/OPERATIONS.md ("The whole cluster is gone") on a
single node: 16 writer threads log the time of every acknowledged INSERT; at a random
moment after 3-5 s of load the node is killed with SIGKILL and its data directory
deleted; `cairn restore --repo DIR latest --out FILE` restores the repository alone; the
RPO of a run is the kill time minus the acknowledgement time of the oldest acknowledged
write missing from FILE (0 when none is). Median over BENCH_RPO_RUNS runs with default
settings (target <= 1 s) and with --archive-sync (target 0).

Settings (environment): BENCH_ROUNDS=3, BENCH_DURATION=4 (seconds per run),
BENCH_CLIENTS=64, BENCH_TXN_CLIENTS=4, BENCH_RPO_RUNS=3, BENCH_WRITE_DOC=1 (0: print
only), BUILD=build. Writes its table at the end of docs/BENCHMARKS.md under
"## Continuous archive (issue 18)". Standard library only.
"""
import http.client
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = (REPO / os.environ.get("BUILD", "build")).resolve()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = float(os.environ.get("BENCH_DURATION", "4"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "64"))
TXN_CLIENTS = int(os.environ.get("BENCH_TXN_CLIENTS", "4"))
RPO_RUNS = int(os.environ.get("BENCH_RPO_RUNS", "3"))
WRITE_DOC = os.environ.get("BENCH_WRITE_DOC", "1") != "0"
SECTION = "## Continuous archive (issue 18)"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, work, name, extra):
        self.name = name
        self.dir = work / name / "data"
        self.repo = work / name / "repo"
        self.http = free_port()
        self.raft = free_port()
        self.log = open(work / (name + ".log"), "a")
        self.proc = subprocess.Popen(
            [str(BUILD / "cairnd"), "--data-dir", str(self.dir), "--http-addr",
             "127.0.0.1:%d" % self.http, "--raft-addr", "127.0.0.1:%d" % self.raft,
             "--backup-dir", str(self.repo), "-q"] + extra,
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
            time.sleep(0.05)  # polling a start, not synchronisation
        if "--archive" in extra or "--archive-sync" in extra:
            self.wait(lambda: self.status()["archive"]["timeline"], "its archive timeline")

    def wait(self, pred, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise SystemExit("bench: %s: no %s within %d s" % (self.name, what, timeout))
            time.sleep(0.02)

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

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()


def bench_http(node, *args):
    out = subprocess.run([str(BUILD / "bench_http"), "--url", "127.0.0.1:%d" % node.http] +
                         [str(a) for a in args], capture_output=True, text=True, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    if line["errors"]:
        raise SystemExit("bench: %s: %d errors, first: %s" % (node.name, line["errors"],
                                                               line["first_error"]))
    return line


SIDES = (("off", []), ("on", ["--archive"]), ("sync", ["--archive-sync"]))


def throughput(work):
    nodes = [Node(work, name, extra) for name, extra in SIDES]
    totals = {(w, n.name): [0.0, 0.0] for w in ("insert", "txn") for n in nodes}
    lat = {(w, n.name): [] for w in ("insert", "txn") for n in nodes}
    keys = {n.name: 1 for n in nodes}
    try:
        for n in nodes:
            n.post("/db/execute", ["CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)"])
        for r in range(ROUNDS):
            order = nodes[r % 3:] + nodes[:r % 3]
            for w, args in (("insert", ["--mode", "insert", "--clients", CLIENTS]),
                            ("txn", ["--mode", "txn", "--rows", 10000, "--clients",
                                     TXN_CLIENTS])):
                for n in order:
                    line = bench_http(n, *(args + ["--duration", DURATION, "--key-start",
                                                   keys[n.name]]))
                    keys[n.name] = line["key_end"]
                    totals[(w, n.name)][0] += line["window_rows"]
                    totals[(w, n.name)][1] += line["window_s"]
                    lat[(w, n.name)].append(line["p50_ms"])
            print("bench: round %d of %d done" % (r + 1, ROUNDS), file=sys.stderr)
        arch = {n.name: n.status()["archive"] for n in nodes}
    finally:
        for n in nodes:
            n.stop()
    return totals, lat, arch


def rpo_run(work, name, extra, seed):
    """One total loss: returns (RPO seconds, acknowledged writes, missing)."""
    rng = random.Random(seed)
    n = Node(work, name, extra)
    n.post("/db/execute", ["CREATE TABLE loss(client INTEGER, seq INTEGER, "
                           "PRIMARY KEY(client, seq))"])
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(c):
        conn = http.client.HTTPConnection("127.0.0.1", n.http, timeout=10)
        seq = 0
        while not stop.is_set():
            body = json.dumps([["INSERT INTO loss(client, seq) VALUES(?, ?)", c, seq]])
            try:
                conn.request("POST", "/db/execute", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                return  # the node is gone
            now = time.monotonic()
            if r.status == 200 and b'"error"' not in data:
                with lock:
                    acked[(c, seq)] = now
            seq += 1

    threads = [threading.Thread(target=writer, args=(c,), daemon=True) for c in range(16)]
    for t in threads:
        t.start()
    kill_at = time.monotonic() + rng.uniform(3.0, 5.0)
    while time.monotonic() < kill_at:
        time.sleep(0.01)  # the moment of the kill, not synchronisation
    t_kill = time.monotonic()
    n.kill()
    stop.set()
    for t in threads:
        t.join(15)
    shutil.rmtree(n.dir)
    out = work / (name + ".restored.db")
    r = subprocess.run([str(BUILD / "cairn"), "restore", "--repo", str(n.repo), "latest",
                        "--out", str(out), "--force"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("bench: restore of %s failed: %s" % (name, r.stderr))
    db = sqlite3.connect(str(out))
    present = set(db.execute("SELECT client, seq FROM loss"))
    db.close()
    lost = [t for k, t in acked.items() if k not in present]
    shutil.rmtree(work / name)
    out.unlink()
    return (t_kill - min(lost)) if lost else 0.0, len(acked), len(lost)


def main():
    for b in ("cairnd", "cairn", "bench_http"):
        if not (BUILD / b).exists():
            raise SystemExit("bench: %s is missing; build first (make)" % (BUILD / b))
    load_before = os.getloadavg()
    work = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-archive."))
    try:
        totals, lat, arch = throughput(work)
        rpo = {}
        for label, extra in (("default", ["--archive"]), ("sync", ["--archive-sync"])):
            runs = []
            for i in range(RPO_RUNS):
                runs.append(rpo_run(work, "rpo-%s-%d" % (label, i), extra, 100 + i))
                print("bench: RPO %s run %d: %.3f s (%d acknowledged, %d lost)" % (
                    label, i + 1, runs[-1][0], runs[-1][1], runs[-1][2]), file=sys.stderr)
            rpo[label] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def rate(w, name):
        rows, secs = totals[(w, name)]
        return rows / secs if secs else 0.0

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else 0.0

    rows = []
    verdicts = []
    for w, label in (("insert", "single-row INSERT, %d clients" % CLIENTS),
                     ("txn", "10,000-row transactions, %d clients" % TXN_CLIENTS)):
        off, on, sync = rate(w, "off"), rate(w, "on"), rate(w, "sync")
        r_on = on / off if off else 0.0
        r_sync = sync / off if off else 0.0
        ok_on, ok_sync = r_on >= 0.9, r_sync >= 0.5
        verdicts += [ok_on, ok_sync]
        rows.append("| %s | %s | %s (%.3fx, %s) | %s (%.3fx, %s) | %.2f / %.2f / %.2f |" % (
            label, "{:,.0f}".format(off), "{:,.0f}".format(on), r_on,
            "PASS" if ok_on else "FAIL", "{:,.0f}".format(sync), r_sync,
            "PASS" if ok_sync else "FAIL", median(lat[(w, "off")]), median(lat[(w, "on")]),
            median(lat[(w, "sync")])))
    table = "\n".join([
        "| workload | off (rows/s) | --archive (target >= 0.9x) | --archive-sync (target >= 0.5x) | p50 ms off / on / sync |",
        "|---|---|---|---|---|"] + rows)
    rpo_rows = []
    for label, target in (("default (`--archive`, 1 s interval)", "default"),
                          ("`--archive-sync`", "sync")):
        runs = rpo[target]
        med = median([r[0] for r in runs])
        ok = med <= 1.0 if target == "default" else med == 0.0
        verdicts.append(ok)
        rpo_rows.append("| %s | %s | %.3f s | %s | %s |" % (
            label, ", ".join("%.3f" % r[0] for r in runs), med,
            ", ".join("%d/%d" % (r[2], r[1]) for r in runs),
            ("<= 1 s" if target == "default" else "0") + (" PASS" if ok else " FAIL")))
    rpo_table = "\n".join([
        "| settings | RPO per run (s) | median | lost / acknowledged per run | target |",
        "|---|---|---|---|---|"] + rpo_rows)
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    text = "\n".join([
        SECTION, "",
        "Command: `make bench-archive` (bench/archive.py). Throughput: three single-node "
        "cairnd of the same build side by side, each with its own local repository "
        "directory: no archive, `--archive` (default settings) and `--archive-sync`; "
        "%d rounds of %g s per workload and side, order rotated every round, driven by "
        "bench_http; rates over the summed time. RPO: the total-loss procedure of "
        "docs/OPERATIONS.md on a single node (16 writer threads logging every "
        "acknowledgement, SIGKILL after a random 3-5 s, data directory deleted, `cairn "
        "restore --repo DIR latest`), %d runs per setting; a run's RPO is the kill time "
        "minus the acknowledgement of the oldest acknowledged write missing." % (
            ROUNDS, DURATION, RPO_RUNS),
        "",
        "Machine: %s, %d CPUs, %s; load average %.2f before, %.2f after (shared with "
        "other work). Segments uploaded during the throughput runs: on %d, sync %d." % (
            cpu or platform.machine(), os.cpu_count() or 0, platform.platform(),
            load_before[0], load_after[0], arch["on"]["segments_uploaded"],
            arch["sync"]["segments_uploaded"]),
        "", table, "", rpo_table, "",
        "Overall: %s." % ("PASS" if all(verdicts) else "FAIL"), ""])
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
