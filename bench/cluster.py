#!/usr/bin/env python3
"""`make bench-cluster` (through bench/cluster.sh): a three-node cairnd cluster on
loopback against a single node, side by side in one run on one machine, and the time
a cluster takes to take writes again after its leader is killed.

  (a) single-row INSERTs, 64 clients, for --duration seconds     (bench_http --mode insert)
  (b) one request = one transaction of --txn-rows rows, --txn-reps requests (--mode txn)
  (a') as (a), with the clients on a follower (each write forwarded to the leader)
  (f) failover, --trials times: SIGKILL the leader; a prober writes through the
      survivors every 10 ms (1 s timeout each) until one write is acknowledged; the
      time from the kill to that acknowledgement. The killed node is restarted and
      caught up before the next trial.

Single node first, then the cluster; every process is stopped at the end, also on
failure or Ctrl-C. Prints the markdown section "## High availability (issue: HA)" and,
with --doc, replaces that section of docs/BENCHMARKS.md. Raw JSON lines and the nodes'
logs go to --results. Only the Python standard library."""

import argparse
import http.client as httpc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SECTION = "## High availability (issue: HA)"
DOC_HEADER = """# Benchmarks

Each section below is written by the benchmark that measures it, with the machine it ran
on; rerun the command it names to reproduce it. Numbers from different machines are not
comparable: compare within a section, where every figure comes from the same run.
"""
THROUGHPUT_TARGET = 0.6
FAILOVER_TARGET_S = 3.0


def log(msg):
    print("bench-cluster: " + msg, file=sys.stderr, flush=True)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def request(port, method, path, body=None, timeout=5.0):
    data = json.dumps(body).encode() if body is not None else None
    conn = httpc.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data is not None else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def try_json(port, path, timeout=2.0):
    try:
        st, data = request(port, "GET", path, timeout=timeout)
        return json.loads(data) if st == 200 else None
    except (OSError, httpc.HTTPException, ValueError):
        return None


def wait(pred, timeout, what, interval=0.02):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Node:
    def __init__(self, build, work, node_id, extra):
        self.build = build
        self.id = node_id
        self.dir = os.path.join(work, "node%d" % node_id)
        os.makedirs(self.dir, exist_ok=True)
        self.http_port, self.raft_port = free_ports(2)
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(self.dir, "cairnd.log")

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.http_port

    def start(self, cluster_args=()):
        argv = [os.path.join(self.build, "cairnd"), "--node-id", str(self.id), "--data-dir",
                os.path.join(self.dir, "data"), "--http-addr", self.addr,
                "--raft-addr", "127.0.0.1:%d" % self.raft_port] + self.extra + list(cluster_args)
        with open(self.log_path, "ab") as f:
            f.write(("==== %s\n" % " ".join(argv)).encode())
            f.flush()
            self.proc = subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def raft(self):
        return (try_json(self.http_port, "/status") or {}).get("raft") or {}

    def leader_id(self):
        r = self.raft()
        lid = r.get("leader_id")
        if lid is None and isinstance(r.get("leader"), dict):
            lid = r["leader"].get("id")
        return int(lid or 0)

    def stop(self, timeout=30):
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after %ds" % timeout


def leader_of(nodes, timeout=30):
    def agreed():
        live = [n for n in nodes if n.running()]
        ids = {n.leader_id() for n in live}
        if len(ids) != 1 or 0 in ids:
            return None
        lid = ids.pop()
        for n in live:
            if n.id == lid and n.raft().get("state") == "leader":
                return n
        return None
    return wait(agreed, timeout, "a leader")


def caught_up(nodes, timeout=120):
    def same():
        figs = [n.raft() for n in nodes]
        if not all(f.get("applied_index") is not None for f in figs):
            return None
        lead = [f for f in figs if f.get("state") == "leader"]
        applied = {f["applied_index"] for f in figs}
        return len(applied) == 1 and lead and lead[0].get("commit_index") == applied.pop()
    wait(same, timeout, "every node to apply the same index", interval=0.05)


def create_table(port):
    st, body = request(port, "POST", "/db/execute", ["CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)"], 30)
    if st != 200 or b'"error"' in body:
        raise RuntimeError("CREATE TABLE failed: HTTP %d %r" % (st, body[:300]))


def bench_http(args, url, *extra):
    argv = [os.path.join(args.build, "bench_http"), "--url", url] + [str(x) for x in extra]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration * 3 + 300)
    if out.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), out.returncode, out.stderr[-2000:]))
    line = out.stdout.strip().splitlines()[-1]
    return json.loads(line)


def cpu_seconds(nodes):
    """User + system CPU seconds each running node's process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for n in nodes:
        try:
            with open("/proc/%d/stat" % n.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError, AttributeError):
            out.append(0.0)
    return out


def measured(nodes, fn):
    """Runs fn() and adds to its result the CPU seconds each of nodes used meanwhile."""
    before = cpu_seconds(nodes)
    r = fn()
    r["node_cpu_s"] = [round(a - b, 3) for a, b in zip(cpu_seconds(nodes), before)]
    return r


def merge_rounds(parts):
    """One result from the rounds of one workload on one setup: rates over the summed
    time, latency p50 and p90 the median of the rounds', p99 and max the highest."""
    rows = sum(p["rows"] for p in parts)
    rated = sum(p.get("window_rows") or p["rows"] for p in parts)
    secs = sum((p.get("window_rows") or p["rows"]) / p["rows_per_s"] for p in parts if p["rows_per_s"] > 0)
    out = dict(parts[-1])
    out.update({
        "rounds": len(parts),
        "requests": sum(p["requests"] for p in parts),
        "rows": rows,
        "elapsed_s": round(sum(p["elapsed_s"] for p in parts), 3),
        "rows_per_s": rated / secs if secs > 0 else 0.0,
        "p50_ms": statistics.median(p["p50_ms"] for p in parts),
        "p90_ms": statistics.median(p["p90_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "max_ms": max(p["max_ms"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "node_cpu_s": [round(sum(x), 3) for x in zip(*(p["node_cpu_s"] for p in parts))],
        "round_rows_per_s": [round(p["rows_per_s"]) for p in parts],
    })
    return out


def run_workloads(args, setups, jsonl, runs):
    """(a), (b) and (b') on every setup [(label, url, nodes)], in args.rounds rounds in
    which the setups take turns (the order reversed every other round): the machine's
    speed drifts over a run (the same cluster used 26 to 42 ms of CPU per (b) request
    from one minute to the next), and taking turns puts that drift on both sides alike.
    nodes: every process of the setup, whose CPU time each run records. Returns the
    next free key of each label."""
    keys = {label: 1 for label, _, _ in setups}
    rounds = max(1, args.rounds)
    per = max(1, args.txn_reps // rounds)
    workloads = [
        ("insert", "insert x%d" % args.clients,
         lambda key: ["--mode", "insert", "--clients", args.clients, "--duration",
                      "%.2f" % (args.duration / rounds), "--key-start", key]),
        ("txn", "txn %d rows" % args.txn_rows,
         lambda key: ["--mode", "txn", "--rows", args.txn_rows, "--requests", per, "--key-start", key]),
        # (b'): values that differ row to row, so that the log entries compress as
        # text does rather than as one repeated value.
        ("txn-words", "txn %d rows, words" % args.txn_rows,
         lambda key: ["--mode", "txn", "--rows", args.txn_rows, "--requests", per, "--key-start", key,
                      "--values", "words"]),
    ]
    for mode, what, argv in workloads:
        parts = {label: [] for label, _, _ in setups}
        for rnd in range(rounds):
            for label, url, nodes in (setups if rnd % 2 == 0 else setups[::-1]):
                r = measured(nodes, lambda: bench_http(args, url, *argv(keys[label])))
                keys[label] = r["key_end"]
                parts[label].append(r)
        for label, _, _ in setups:
            r = merge_rounds(parts[label])
            r["setup"] = label
            r["mode"] = mode
            runs.append(r)
            jsonl.write(json.dumps(r) + "\n")
            log("%-26s %s: %10.0f rows/s  p50 %.2f ms  p99 %.2f ms  errors %s  rounds %s"
                % (label, what, r["rows_per_s"], r["p50_ms"], r["p99_ms"], r["errors"],
                   " ".join(str(x) for x in r["round_rows_per_s"])))
    return keys


def failover_trial(nodes, key):
    """Kills the leader; returns (seconds to the first acknowledged write, the new
    leader's id, the killed node)."""
    leader = leader_of(nodes)
    survivors = [n for n in nodes if n is not leader]
    t0 = time.monotonic()
    leader.proc.kill()
    leader.proc.wait()
    i = 0
    while True:
        n = survivors[i % len(survivors)]
        i += 1
        try:
            st, body = request(n.http_port, "POST", "/db/execute",
                            [["INSERT INTO bench(k, v) VALUES(?, ?)", key, "failover"]], timeout=1.0)
            if st == 200 and b'"error"' not in body:
                return time.monotonic() - t0, leader
            if b"UNIQUE" in body:  # an earlier attempt of this key was applied after all
                return time.monotonic() - t0, leader
        except (OSError, httpc.HTTPException):
            pass
        if time.monotonic() - t0 > 60:
            raise RuntimeError("no write acknowledged within 60 s of the leader's SIGKILL")
        time.sleep(0.01)


def cpu_bound_note(s, c, meta):
    """What the nodes' CPU time per (b) request says about the ratio this machine allows:
    three nodes sharing its CPUs each checksum and apply every entry."""
    try:
        ncpu = int(meta.get("nproc") or 0)
    except ValueError:
        ncpu = 0
    if not s or not c or ncpu <= 0 or not s.get("node_cpu_s") or not c.get("node_cpu_s") \
            or not s.get("requests") or not c.get("requests") or not s.get("rows_per_s"):
        return ""
    s_cpu = 1000.0 * sum(s["node_cpu_s"]) / s["requests"]
    c_each = [1000.0 * x / c["requests"] for x in c["node_cpu_s"]]
    c_cpu = sum(c_each)
    s_wall = 1000.0 * s["rows_per_request"] / s["rows_per_s"]
    floor = c_cpu / ncpu
    return ("CPU per (b) request: the single node used %.1f ms (its requests took %.1f ms each, its threads "
            "working side by side); the three nodes used %.1f ms together (leader %s, followers %s), since "
            "every node writes the entry to its log and runs its SQL. On this machine's %d "
            "CPUs that is at least %.1f ms of wall time per request, so 3 nodes ÷ single cannot exceed "
            "%.2f× here however the work is scheduled; with a machine per node the bound is the leader's own "
            "work plus a network round trip."
            % (s_cpu, s_wall, c_cpu, "%.1f ms" % c_each[0],
               " and ".join("%.1f ms" % x for x in c_each[1:]), ncpu, floor,
               s_wall / floor if floor > 0 else 0.0))


def machine(work):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    meta = {
        "nproc": sh("nproc"),
        "cpu": sh("awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo"),
        "memory": sh("awk '/^MemTotal/ { printf \"%.1f GiB\", $2 / 1048576 }' /proc/meminfo"),
        "kernel": sh("uname -sr"),
        "filesystem": sh("findmnt -no FSTYPE,SOURCE,TARGET -T %s | awk '{ print $1 \" (\" $2 \" mounted on \" $3 \")\" }'" % work),
        "disk": sh("lsblk -dno NAME,ROTA,SIZE,MODEL \"$(findmnt -no SOURCE -T %s)\" 2>/dev/null | head -n1" % work),
        "load": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "commit": sh("git rev-parse --short HEAD") + ("" if subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "src", "include"]).returncode == 0
            else " (+ uncommitted changes in src/ or include/)"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return meta


def fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_ms(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def section(args, runs, failovers, meta, notes):
    by = {(r["setup"], r["mode"]): r for r in runs}
    out = [SECTION, ""]
    out.append("Measured %s with `%s` at commit %s." % (meta["date"], args.command, meta["commit"]))
    out.append("")
    rota = meta.get("disk", "").split()
    disk = meta.get("disk") or "unknown"
    if len(rota) >= 2:
        disk = "%s (%s, %s%s)" % (rota[0], "rotational" if rota[1] == "1" else "non-rotational", rota[2] if len(rota) > 2 else "",
                                  (", " + " ".join(rota[3:])) if len(rota) > 3 else "")
    out.append("Machine: %s CPUs (%s), %s RAM, %s; data on %s, disk %s. All three nodes, the "
               "single node and the load generator share these CPUs and this disk; load average "
               "(1, 5, 15 min) %s before the run, %s at its end."
               % (meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"], meta["filesystem"], disk,
                  meta["load"], meta.get("load_after", "?")))
    out.append("")
    try:
        busy = float(meta["load"].split()[0]) > float(meta["nproc"])
    except (ValueError, IndexError, KeyError):
        busy = False
    if busy:
        out.append("The machine was busy with other work when the run started (load average above its CPU "
                   "count): the rates vary from run to run; compare the two sides of one run, not runs.")
        out.append("")
    out.append("| workload | single node rows/s | p50 ms | p99 ms | errors | 3 nodes rows/s | p50 ms | p99 ms "
               "| errors | 3 nodes ÷ single | target | result |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
    verdicts = []
    rows = [("insert", "(a) INSERT, 1 row per request, %d clients, on the leader" % args.clients, True),
            ("txn", "(b) one request = one transaction of %s rows, on the leader" % f"{args.txn_rows:,}", True),
            ("txn-words", "(b') as (b), each row's value its own 100 bytes of words", False)]
    for mode, name, target in rows:
        s, c = by.get(("single", mode)), by.get(("cluster", mode))
        if not s or not c:
            continue
        ratio = c["rows_per_s"] / s["rows_per_s"] if s["rows_per_s"] else 0.0
        ok = ratio >= THROUGHPUT_TARGET and c["errors"] == 0
        if target:
            verdicts.append((name, ok))
        out.append("| %s | %s | %s | %s | %d | %s | %s | %s | %d | %.2f× | %s | %s |" % (
            name, fmt_rate(s["rows_per_s"]), fmt_ms(s["p50_ms"]), fmt_ms(s["p99_ms"]), s["errors"],
            fmt_rate(c["rows_per_s"]), fmt_ms(c["p50_ms"]), fmt_ms(c["p99_ms"]), c["errors"], ratio,
            "≥ %.1f× single node" % THROUGHPUT_TARGET if target else "—",
            ("PASS" if ok else "FAIL") if target else "—"))
    f = by.get(("cluster-follower", "insert"))
    s = by.get(("single", "insert"))
    if f and s:
        out.append("| (a') as (a), the clients on a follower (forwarded to the leader) | | | | | %s | %s | %s | %d | %.2f× | — | — |"
                   % (fmt_rate(f["rows_per_s"]), fmt_ms(f["p50_ms"]), fmt_ms(f["p99_ms"]), f["errors"],
                      f["rows_per_s"] / s["rows_per_s"] if s["rows_per_s"] else 0.0))
    if failovers:
        med = statistics.median(failovers)
        ok = med < FAILOVER_TARGET_S
        verdicts.append(("failover", ok))
        out.append("| (f) failover: leader SIGKILL → first acknowledged write, %d trials | | | | | "
                   "median %.2f s, max %.2f s | | | | | median < %.0f s | %s |"
                   % (len(failovers), med, max(failovers), FAILOVER_TARGET_S, "PASS" if ok else "FAIL"))
    out.append("")
    if meta.get("commit", "").endswith("src/ or include/)"):
        out.append("(The build had changes in src/ or include/ not yet committed at that commit.)")
        out.append("")
    missed = [n for n, ok in verdicts if not ok]
    out.append("**Targets missed:** %s." % ", ".join(missed) if missed else "Every target met.")
    out.append("")
    if failovers:
        out.append("Failover trials (s): %s." % ", ".join("%.2f" % x for x in failovers))
        out.append("")
    cpu_note = cpu_bound_note(by.get(("single", "txn")), by.get(("cluster", "txn")), meta)
    if cpu_note:
        out.append(cpu_note)
        out.append("")
    for n in notes:
        out.append(n)
        out.append("")
    out.append("### What was measured")
    out.append("")
    out.append("- The cluster is three cairnd processes on 127.0.0.1, formed with `--bootstrap-expect 3 --join` "
               "(each a separate data directory on the same disk); the single node is one cairnd. Each starts "
               "empty with `CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)`.")
    out.append("- (a) and (b) are bench/run.sh's workloads, driven by `build/bench_http` against the leader's "
               "HTTP address: (a) `POST /db/execute` of one 100-byte INSERT, %d clients each with one keep-alive "
               "connection and one request in flight, for %d s; (b) `POST /db/execute?transaction` with %s "
               "INSERTs in one body, %d requests one after another (rows/s = rows over the summed request times). "
               "In the cluster a write is acknowledged once a majority (2 of 3) has it in its log and the leader "
               "has applied it."
               % (args.clients, args.duration, f"{args.txn_rows:,}", max(1, args.txn_reps // args.rounds) * args.rounds))
    out.append("- The single node and the cluster run side by side, each idle while the other is measured, and "
               "take turns: every workload runs in %d rounds (the order reversed every other round), so that "
               "a drift in the machine's speed during the run falls on both alike (the same cluster used 26 to "
               "42 ms of CPU per (b) request from one minute to the next). rows/s is over the summed time of the "
               "rounds; p50 is the median of the rounds' p50, p99 the highest round's. Every round's rate is in "
               "the JSON lines in bench/results/." % args.rounds)
    out.append("- (a') runs (a) against a follower, which forwards every write to the leader.")
    out.append("- (b') runs (b) with `--values words`: each row's value is 100 bytes of words picked at random "
               "(a PRNG seeded with the key), so that the log entries compress about 4x, as text does; in (b) "
               "every row has the same value and an entry of 10,000 rows (1.15 MB) compresses 69x "
               "(docs/FORMAT.md, log entry).")
    out.append("- (f): in the same cluster, %d times: the leader is killed with SIGKILL; a prober sends one INSERT "
               "every 10 ms to the survivors in turn (1 s timeout per request) and the time from the kill to the "
               "first 200 without an error is recorded; the killed node is then restarted and the run waits until "
               "every node has applied the same index before the next trial." % args.trials)
    out.append("")
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out.append("| setup | mode | clients | requests | rows | wall s | rows/s | p50 ms | p90 ms | p99 ms | max ms | errors "
               "| cairnd CPU s (leader first) |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in runs:
        out.append("| %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s |" % (
            r["setup"], r["mode"], r.get("clients", ""), f"{r.get('requests', 0):,}", f"{r.get('rows', 0):,}",
            r.get("elapsed_s", 0.0), fmt_rate(r["rows_per_s"]), fmt_ms(r["p50_ms"]), fmt_ms(r.get("p90_ms", 0)),
            fmt_ms(r["p99_ms"]), fmt_ms(r.get("max_ms", 0)), r["errors"],
            " + ".join("%.2f" % x for x in r.get("node_cpu_s", [])) or "—"))
    out.append("")
    out.append("</details>")
    out.append("")
    return "\n".join(out)


def replace_section(doc_path, text):
    old = open(doc_path).read() if os.path.exists(doc_path) else DOC_HEADER
    lines = old.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        new = (before + "\n\n" if before else "") + text + ("\n" + after + "\n" if after else "")
    tmp = doc_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new.rstrip("\n") + "\n")
    os.replace(tmp, doc_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--txn-rows", type=int, default=10000)
    ap.add_argument("--txn-reps", type=int, default=20)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of each workload, single node and cluster taking turns")
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--doc")
    ap.add_argument("--command", default="make bench-cluster")
    args = ap.parse_args()
    # SIGTERM ends the run like Ctrl-C: through the finally below, which stops every node.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for b in ("cairnd", "bench_http"):
        if not os.access(os.path.join(args.build, b), os.X_OK):
            log("%s/%s is missing; build first (make)" % (args.build, b))
            return 1
    os.makedirs(args.results, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = tempfile.mkdtemp(prefix="cairn-bench-cluster.", dir=os.environ.get("TMPDIR", "/tmp"))
    meta = machine(work)
    runs, failovers, notes, nodes = [], [], [], []
    jsonl = open(os.path.join(args.results, "%s.cluster.jsonl" % stamp), "w")
    rc = 0
    try:
        # --- single node ---------------------------------------------------------------
        single = Node(args.build, os.path.join(work, "single"), 1, [])
        nodes.append(single)
        single.start()
        wait(lambda: single.raft().get("state") == "leader" and single.raft().get("ready"), 60, "the single node")
        create_table(single.http_port)

        # --- three nodes, up at the same time: the two setups take turns -----------------
        cl = [Node(args.build, os.path.join(work, "cluster"), i, []) for i in (1, 2, 3)]
        nodes += cl
        join = ",".join(n.addr for n in cl)
        cargs = ["--bootstrap-expect", "3", "--join", join]
        for n in cl:
            n.start(cargs)
        leader = leader_of(cl, 60)
        create_table(leader.http_port)
        caught_up(cl)
        keys = run_workloads(args, [("single", single.addr, [single]),
                                    ("cluster", leader.addr, [leader] + [n for n in cl if n is not leader])],
                             jsonl, runs)
        single.stop()
        key = keys["cluster"]
        follower = [n for n in cl if n is not leader][0]
        r = bench_http(args, follower.addr, "--mode", "insert", "--clients", args.clients, "--duration",
                       args.duration, "--key-start", key)
        r["setup"] = "cluster-follower"
        runs.append(r)
        jsonl.write(json.dumps(r) + "\n")
        log("%-26s insert x%d: %10.0f rows/s  p50 %.2f ms  p99 %.2f ms  errors %s"
            % ("cluster via a follower", args.clients, r["rows_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]))
        key = r["key_end"] + 1000

        # --- failover --------------------------------------------------------------------
        for t in range(args.trials):
            caught_up(cl)
            secs, killed = failover_trial(cl, key)
            key += 1
            failovers.append(secs)
            jsonl.write(json.dumps({"setup": "cluster", "mode": "failover", "trial": t + 1, "seconds": secs,
                                    "killed": killed.id}) + "\n")
            log("failover trial %d: node %d killed, first write after %.2f s" % (t + 1, killed.id, secs))
            killed.start(cargs)
            wait(lambda: killed.leader_id() != 0, 60, "node %d to rejoin" % killed.id)
        caught_up(cl)
        meta["load_after"] = subprocess.run(["cut", "-d", " ", "-f1-3", "/proc/loadavg"], capture_output=True,
                                            text=True).stdout.strip()
        stops = {n.id: n.stop() for n in cl}
        if any(v != 0 for v in stops.values()):
            notes.append("Exit status of the cluster's nodes on SIGTERM at the end: %s." % stops)
    except Exception as e:  # noqa: BLE001 - reported, and the processes stopped below
        log("failed: %s" % e)
        rc = 1
    finally:
        for n in nodes:
            if n.running():
                n.stop()
        jsonl.close()
        with open(os.path.join(args.results, "%s.cluster.logs" % stamp), "wb") as out:
            for n in nodes:
                try:
                    out.write(("\n#### %s\n" % n.log_path).encode() + open(n.log_path, "rb").read())
                except OSError:
                    pass
        subprocess.run(["rm", "-rf", work])
    if rc != 0:
        log("raw results so far in %s/%s.cluster.jsonl, node logs in %s.cluster.logs" % (args.results, stamp, stamp))
        return rc
    text = section(args, runs, failovers, meta, notes)
    print(text)
    if args.doc:
        replace_section(args.doc, text)
        log("section written into %s" % args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
