#!/usr/bin/env python3
"""`make bench-live-restore` (issue 17): a live `RESTORE DATABASE FROM 'ID'` on a
three-node cluster under a write load, against the same load alone, side by side in
one run.

  setup   three cairnd on 127.0.0.1 (--bootstrap-expect 3 --join), a table `big` filled
          through the leader to BENCH_LIVE_MIB MiB (rows of words, bench/backup_data.py's
          vocabulary), the load's table `load` created empty, then `BACKUP DATABASE`
          (full) on the leader: the backup holds both tables.
  rounds  BENCH_LIVE_ROUNDS times on the same cluster, run A then run B, the load aimed
          at the leader of the moment (a restore may move it):
  run A   BENCH_LIVE_CLIENTS threads, each with one keep-alive connection to the leader,
          each sending single-row INSERTs into `load` (POST /db/execute?raft_index) one
          after another for BENCH_LIVE_SECONDS s; every write's latency is taken with a
          monotonic clock.
  run B   the same load; BENCH_LIVE_RESTORE_AT s into it `RESTORE DATABASE FROM 'ID'` (the
          full backup) is sent to the leader's /db/execute; the load runs on until
          BENCH_LIVE_SECONDS s have passed and at least BENCH_LIVE_TAIL s after every node
          has applied the restore.
  check   after each round: every node applies the same index; per table count(*) and
          sums on each node (level=none), a digest entry through the log (POST
          /admin/digest) compared across the nodes, and the rows of `load` against the
          writes acknowledged at a log index after the restore's (those before it are
          rolled back by design; a write answered with an error may be either).

Target (issue 17): no write waits more than 250 ms longer than it would without the
restore: (max latency of the writes that overlap the restore window) - (max latency of
run A) <= 250 ms, and the same for p99, in every round. The restore window runs from
sending the RESTORE until the last node has applied it (or the RESTORE is answered, if
later). Exit status: 0 every target met, 3 one missed (the section is written all the
same), 1 the run could not be made.

Settings, from the environment: BENCH_LIVE_MIB=200, BENCH_LIVE_CLIENTS=16,
BENCH_LIVE_SECONDS=10, BENCH_LIVE_RESTORE_AT (default 0.4 x SECONDS), BENCH_LIVE_TAIL=2,
BENCH_LIVE_ROUNDS=3, BENCH_LIVE_PREFETCH=0 (1: the followers fetch the backup before the
first round, through POST /admin/backups/ID/verify, so that no restore includes a fetch;
without it only the first round's does),
BENCH_WRITE_DOC=1 (0: print the section only), BUILD=build, TMPDIR=/tmp.

Writes the section "## Live restore under write load (issue 17)" of docs/BENCHMARKS.md,
raw JSON lines and the nodes' logs to bench/results/. Every cairnd is stopped at the
end, also on failure, Ctrl-C or SIGTERM. Only the Python standard library."""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restore_common as rc  # noqa: E402
from backup_data import Words  # noqa: E402

SECTION = "## Live restore under write load (issue 17)"
NEXT_SECTION = "## Recovery time: --restore-from to first query (issue 17)"
TARGET_MS = 250.0
log = rc.make_logger("bench-live-restore")
VALUE = "x" * 100


# --- the write load -------------------------------------------------------------------

class Load:
    """clients threads, each with one keep-alive HTTP/1.1 connection to port (TCP_NODELAY,
    as bench_http), sending one single-row INSERT at a time; every write recorded as
    (start, end, ok, raft index, error, client, n), start and end in seconds of
    time.monotonic() from t0. The
    HTTP is written by hand (http.client parses headers through the email package, and
    at a few thousand requests a second that cost, under the GIL, shows in the latency)."""

    def __init__(self, port, clients, t0, timeout=60.0):
        self.port = port
        self.clients = clients
        self.t0 = t0
        self.timeout = timeout
        self.stop_ev = threading.Event()
        self.records = [[] for _ in range(clients)]
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(clients)]

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    @staticmethod
    def _response(sock, buf):
        """(status, body, rest of buf) of one response read from sock."""
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by cairnd")
            buf += chunk
        head = buf[:i]
        status = int(head[9:12])
        j = head.lower().find(b"content-length:")
        if j < 0:
            raise ValueError("response without Content-Length: %r" % head[:200])
        length = int(head[j + 15:].split(b"\r\n", 1)[0])
        close = b"connection: close" in head.lower()
        buf = buf[i + 4:]
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by cairnd in a response")
            buf += chunk
        return status, buf[:length], buf[length:], close

    def _client(self, ci):
        recs = self.records[ci]
        sock = None
        buf = b""
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            body = ('[["INSERT INTO load(c, n, v) VALUES(?, ?, ?)", %d, %d, "%s"]]' % (ci, n, VALUE)).encode()
            req = (b"POST /db/execute?raft_index HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
            t_start = time.monotonic()
            ok, index, err = False, 0, None
            try:
                if sock is None:
                    sock, buf = self._connect(), b""
                sock.sendall(req)
                status, data, buf, close = self._response(sock, buf)
                if status != 200:
                    err = "HTTP %d: %s" % (status, data[:200].decode(errors="replace"))
                elif b'"error"' in data:
                    err = data[:200].decode(errors="replace")
                elif b'"rows_affected":1}' not in data:
                    err = "unexpected answer: " + data[:200].decode(errors="replace")
                else:
                    ok = True
                    k = data.rfind(b'"raft_index":')
                    if k >= 0:
                        index = int(data[k + 13:].split(b"}", 1)[0].split(b",", 1)[0])
                if close:
                    sock.close()
                    sock = None
            except (OSError, ValueError) as e:
                err = "%s: %s" % (type(e).__name__, e)
                if sock is not None:
                    sock.close()
                sock = None
            t_end = time.monotonic()
            recs.append((t_start - self.t0, t_end - self.t0, ok, index, err, ci, n))
        if sock is not None:
            sock.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 10)
        return sorted((r for recs in self.records for r in recs), key=lambda r: r[0])


def stats(recs, duration=None):
    """Figures of a list of write records; latencies in ms over the successful writes."""
    lat = sorted((r[1] - r[0]) * 1000.0 for r in recs if r[2])
    errs = [r for r in recs if not r[2]]
    kinds = {}
    for r in errs:
        k = " ".join((r[4] or "?").split())[:60]
        kinds[k] = kinds.get(k, 0) + 1
    out = {
        "writes": len(lat), "errors": len(errs),
        "first_error": errs[0][4] if errs else None, "error_kinds": kinds,
        "error_max_ms": max(((r[1] - r[0]) * 1000.0 for r in errs), default=float("nan")),
        "p50_ms": rc.percentile(lat, 50), "p90_ms": rc.percentile(lat, 90),
        "p99_ms": rc.percentile(lat, 99), "p999_ms": rc.percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) if lat else float("nan"),
    }
    if duration:
        out["duration_s"] = duration
        out["writes_per_s"] = len(lat) / duration
    return out


def longest_gap(recs, t_from, t_to):
    """The longest interval in [t_from, t_to] with no write completing: (ms, start, end)."""
    ends = sorted(r[1] for r in recs if r[2] and t_from <= r[1] <= t_to)
    pts = [t_from] + ends + [t_to]
    best = (0.0, t_from, t_from)
    for a, b in zip(pts, pts[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best[0] * 1000.0, best[1], best[2]


def timeline(recs, t_from, t_to, step=0.25):
    """Writes completed per `step` s from t_from to t_to."""
    n = max(1, int((t_to - t_from) / step + 0.999))
    buckets = [0] * n
    for r in recs:
        if r[2] and t_from <= r[1] < t_to:
            buckets[min(n - 1, int((r[1] - t_from) / step))] += 1
    return buckets


# --- cluster set-up -------------------------------------------------------------------

def fill(leader, mib, log_every=10):
    """Fills `big` with rows of words until the database holds mib MiB; (rows, bytes)."""
    rng = random.Random(17)
    words = Words(random.Random(1))
    k, reqs, batch = 0, 0, 4000
    target = mib * 1048576
    t0 = time.monotonic()
    while True:
        stmts = []
        for _ in range(batch):
            k += 1
            stmts.append(["INSERT INTO big(k, txt, num, qty) VALUES(?, ?, ?, ?)", k,
                          words.text(rng, 6, 70), round(rng.lognormvariate(3, 1.2), 2),
                          rng.randint(0, 500)])
        rc.execute(leader.http_port, stmts, "/db/execute?transaction")
        reqs += 1
        if reqs % 5 == 0:
            (pc,), = rc.query(leader.http_port, "PRAGMA page_count")
            (ps,), = rc.query(leader.http_port, "PRAGMA page_size")
            if reqs % (5 * log_every) == 0:
                log("filling: %d rows, %.0f MiB, %.0f s" % (k, pc * ps / 1048576, time.monotonic() - t0))
            if pc * ps >= target:
                return k, pc * ps, ps, time.monotonic() - t0


def table_figures(node):
    """{table: [count, sums...]} of this node's copy, read at level none."""
    return {
        "big": rc.query(node.http_port, "SELECT count(*), total(k), total(length(txt)), total(num), "
                                        "total(qty) FROM big", timeout=300)[0],
        "load": rc.query(node.http_port, "SELECT count(*), total(c), total(n), total(length(v)) FROM load",
                         timeout=300)[0],
    }


def digests(nodes, leader):
    st, body = rc.request(leader.http_port, "POST", "/admin/digest", timeout=120)
    if st != 200:
        raise RuntimeError("POST /admin/digest: HTTP %d %r" % (st, body[:300]))
    index = json.loads(body)["digest"]["index"]
    out = {}
    for n in nodes:
        def done():
            d = rc.try_json(n.http_port, "/admin/digest?index=%d" % index, 10)
            return d if d and d.get("state") in ("done", "failed") else None
        d = rc.wait(done, 300, "node %d's digest at index %d" % (n.id, index), interval=0.2)
        out[n.id] = d.get("digest") if d.get("state") == "done" else "failed: %s" % d.get("error")
    return index, out


def snapshots_in(text):
    return [ln for ln in text.splitlines() if "snapshot" in ln and "written" in ln]


# --- the runs -------------------------------------------------------------------------

def run_load(args, nodes, leader, label, restore_id=None):
    """One run of the load; with restore_id, the restore in its middle. Returns its figures."""
    logs_before = {n.id: len(n.log_text()) for n in nodes}
    cpu_before = {n.id: n.cpu_seconds() for n in nodes}
    t0 = time.monotonic()
    watch = rc.DirWatch({"%d:%s" % (n.id, label): path for n in nodes
                         for label, path in (("data", n.data), ("snapshots", os.path.join(n.data, "snapshots")),
                                             ("backups", n.backups))}, t0).start()
    load = Load(leader.http_port, args.clients, t0).start()
    res = {"run": label}
    try:
        if restore_id is None:
            time.sleep(args.seconds)
            end = time.monotonic() - t0
        else:
            time.sleep(args.restore_at)
            # Each node's applied index, polled from the moment the RESTORE is sent.
            samples = {n.id: [] for n in nodes}
            poll_stop = threading.Event()

            def poll(n):
                while not poll_stop.is_set():
                    f = n.raft(5.0)
                    if f.get("applied_index") is not None:
                        samples[n.id].append((time.monotonic() - t0, f["applied_index"]))
                    poll_stop.wait(0.02)
            pollers = [threading.Thread(target=poll, args=(n,), daemon=True) for n in nodes]
            for p in pollers:
                p.start()
            rs = time.monotonic() - t0
            st, body = rc.request(leader.http_port, "POST", "/db/execute?raft_index",
                                  ["RESTORE DATABASE FROM '%s'" % restore_id], timeout=900)
            re_ = time.monotonic() - t0
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            r0 = (doc.get("results") or [{}])[0]
            row, index, restore_error = {}, None, None
            if st != 200 or "error" in r0 or "error" in doc or "values" not in r0:
                # Reported (a FAIL), not raised: the load's figures still say what it did.
                restore_error = "HTTP %d %s" % (st, body[:400].decode(errors="replace"))
                log("run %s: RESTORE failed after %.2f s: %s" % (label, re_ - rs, restore_error))
            else:
                row = dict(zip(r0["columns"], r0["values"][0]))
                index = int(row["raft_index"]) if row.get("raft_index") is not None else None
                log("run %s: RESTORE answered after %.2f s (its duration_ms %s, log index %s)"
                    % (label, re_ - rs, row.get("duration_ms"), index))

            def all_applied():
                when = []
                for n in nodes:
                    t = next((t for t, a in samples[n.id] if a >= index), None)
                    if t is None:
                        return None
                    when.append((n.id, t))
                return when
            applied = (rc.wait(all_applied, 600, "every node to apply the restore", interval=0.05)
                       if index is not None else [])
            poll_stop.set()
            for p in pollers:
                p.join(10)
            win_end = max([re_] + [t for _, t in applied])
            res.update({"restore_sent_s": rs, "restore_answered_s": re_, "restore_s": re_ - rs,
                        "restore_row": row, "restore_index": index, "restore_error": restore_error,
                        "applied_s": {nid: t - rs for nid, t in applied},
                        "window": [rs, win_end]})
            remaining = max(args.seconds - (time.monotonic() - t0), win_end + args.tail - (time.monotonic() - t0))
            time.sleep(max(0.0, remaining))
            end = time.monotonic() - t0
    finally:
        recs = load.stop()
        watch.stop()
    res["records"] = recs
    res["end_s"] = end
    res["cpu_s"] = {n.id: round(n.cpu_seconds() - cpu_before[n.id], 2) for n in nodes}
    res["log_lines"] = {n.id: n.log_text()[logs_before[n.id]:].splitlines() for n in nodes}
    res["snapshots"] = {nid: snapshots_in("\n".join(lines)) for nid, lines in res["log_lines"].items()}
    res["files"] = watch.events()
    res["all"] = stats([r for r in recs if r[0] < end], end)
    res["gap"] = longest_gap(recs, 0.0, end)
    if "window" in res:
        ws, we = res["window"]
        res["overlap"] = stats([r for r in recs if r[0] <= we and r[1] >= ws])
        res["issued_in"] = stats([r for r in recs if ws <= r[0] <= we])
        res["before"] = stats([r for r in recs if r[1] < ws], ws)
        res["after"] = stats([r for r in recs if r[0] > we], end - we)
        res["timeline"] = timeline(recs, max(0.0, ws - 1.0), min(end, we + 1.5))
        res["timeline_from"] = max(0.0, ws - 1.0)
    a = res["all"]
    log("run %s: %d writes in %.1f s (%.0f/s), p50 %.2f ms, p99 %.2f ms, max %.0f ms, errors %d, longest gap %.0f ms"
        % (label, a["writes"], end, a["writes_per_s"], a["p50_ms"], a["p99_ms"], a["max_ms"], a["errors"],
           res["gap"][0]))
    return res


# --- the report -----------------------------------------------------------------------

def describe_files(events, node_id, t_ref, since):
    """What the files a node's directories showed say, in s from t_ref: [(t, text)]."""
    out = []
    tmp_snaps = set()
    for first, last, label, name, size, grew in events:
        nid, where = label.split(":", 1)
        if int(nid) != node_id or first < since:
            continue
        a, b, mib = first - t_ref, last - t_ref, size / 1048576
        if where == "data" and name.startswith(".db.sqlite.restored"):
            out.append((a, "the chain's pages written into a temporary file and checked (`PRAGMA quick_check`) "
                           "%.2f–%.2f s, %.0f MiB" % (a, b, mib)))
        elif where == "data" and name == "db.sqlite.restored":
            out.append((a, "`db.sqlite.restored` (applied index set, then moved into place) %.2f–%.2f s" % (a, b)))
        elif where == "snapshots" and name.startswith(".") and name.endswith(".tmp"):
            tmp_snaps.add(name[1:-4])
            out.append((a, "Raft snapshot (a backup into DATA/snapshots) written %.2f–%.2f s, %.0f MiB" % (a, b, mib)))
        elif where == "snapshots" and name.endswith(".cbk") and name not in tmp_snaps:
            out.append((a, "Raft snapshot `%s` there at %.2f s, %.0f MiB" % (name, a, mib)))
        elif where == "backups" and name.startswith(".") and name.endswith(".tmp"):
            out.append((a, "backup file fetched from a peer %.2f–%.2f s, %.0f MiB" % (a, b, mib)))
        elif where == "backups" and name.endswith(".verified"):
            out.append((a, "the chain's verification recorded (`.verified`) at %.2f s" % a))
    return sorted(out)


def phases(res, nodes, leader):
    """Lines on what the restore's files show, node by node, in s from sending RESTORE."""
    rs = res["restore_sent_s"]
    out = []
    for n in [leader] + [x for x in nodes if x is not leader]:
        parts = [t for _, t in describe_files(res["files"], n.id, rs, rs - 0.05)]
        parts += ["its log: `%s`" % ln.split("cairnd: ", 1)[-1] for ln in res["log_lines"][n.id]
                  if "fetch" in ln or "restor" in ln]
        role = "leader" if n is leader else "follower"
        applied = res["applied_s"].get(n.id)
        if applied is not None:
            parts.append("its applied index reached the restore's entry by %.2f s (GET /status)" % applied)
        out.append("node %d (%s): %s." % (n.id, role, "; ".join(parts)))
    return out


def verdict(ok):
    return "PASS" if ok else "**FAIL**"


def signed_ms(v):
    return rc.fmt_ms(v) if v >= 0 else "−" + rc.fmt_ms(-v)


def check_round(nodes, leader, b, rows):
    """After run B of a round: every node the same (digest through the log, per-table
    figures), and the rows of `load` what the acknowledged writes say they must be."""
    leader_after = rc.leader_of(nodes, 60)
    order = [leader] + [n for n in nodes if n is not leader]
    figs = {n.id: table_figures(n) for n in nodes}
    dindex, dig = digests(nodes, leader_after)
    same_figs = all(figs[n.id] == figs[leader.id] for n in nodes)
    same_dig = len(set(dig.values())) == 1 and not any(str(v).startswith("failed") for v in dig.values())
    big_ok = all(figs[n.id]["big"][0] == rows for n in nodes)
    # The writes acknowledged at a log index after the restore's must all be in `load`;
    # the others (acknowledged before the restore, or in run A) are rolled back by it; a
    # failed write (outcome unknown) may be either.
    present = {(c, k) for c, k in rc.query(leader_after.http_port, "SELECT c, n FROM load", timeout=300)}
    ri = b["restore_index"] if b["restore_index"] is not None else float("inf")
    after = {(r[5], r[6]) for r in b["records"] if r[2] and r[3] > ri}
    unknown = {(r[5], r[6]) for r in b["records"] if not r[2]}
    no_index = [r for r in b["records"] if r[2] and r[3] == 0]
    missing = after - present
    extra = present - after
    extra_unknown = extra & unknown
    extra_other = extra - unknown
    load_ok = not missing and not extra_other and not no_index and b["restore_index"] is not None
    chk = {"ok": same_figs and same_dig and big_ok and load_ok, "notes": [], "figs": figs, "digests": dig,
           "leader_before": leader.id, "leader_after": leader_after.id}
    chk["summary"] = (
        "digest at log index %d `%s` on %s; `big` %s rows on each node, `load` %s (%s); all %s writes "
        "acknowledged after the restore's log index are there%s%s"
        % (dindex, "`/`".join(sorted(set(str(v) for v in dig.values()))),
           "every node" if same_dig else "**not every node**",
           "/".join(f"{figs[n.id]['big'][0]:,}" for n in order),
           "/".join(f"{figs[n.id]['load'][0]:,}" for n in order),
           "same sums everywhere" if same_figs else "**sums differ**", f"{len(after):,}",
           "" if not missing else " — **but %d are missing**" % len(missing),
           (", and %d rows more, writes answered with an error whose outcome was unknown (committed after all)"
            % len(extra_unknown)) if extra_unknown else ""))
    if extra_other:
        chk["notes"].append("**%d rows of `load` are writes acknowledged before the restore's log index: the "
                            "restore should have rolled them back.**" % len(extra_other))
    if no_index:
        chk["notes"].append("%d acknowledged writes had no raft_index in their answer." % len(no_index))
    if not same_figs:
        chk["notes"].append("Per-node figures: %s" % json.dumps(figs))
    if b["restore_index"] is None:
        chk["notes"].append("The RESTORE failed or answered no log index, so the rows of `load` could not be "
                            "checked against it.")
    chk["terms"] = [(n.id, ln.split("cairnd: ", 1)[-1]) for n in nodes for ln in b["log_lines"][n.id]
                    if "leader for term" in ln]
    return chk


def table_row(rnd, name, s, gap=None):
    return "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
        rnd, name, f"{s['writes']:,}", s["errors"], "%.2f" % s["duration_s"] if "duration_s" in s else "",
        f"{s['writes_per_s']:,.0f}" if "writes_per_s" in s else "", rc.fmt_ms(s["p50_ms"]),
        rc.fmt_ms(s["p90_ms"]), rc.fmt_ms(s["p99_ms"]), rc.fmt_ms(s["max_ms"]),
        rc.fmt_ms(gap) if gap is not None else "")


TABLE_HEAD = ["| round | run | writes | errors | duration s | writes/s | p50 ms | p90 ms | p99 ms | max ms | "
              "longest gap without a completed write, ms |",
              "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]


def reading(rnd, setup):
    """One paragraph on a round's run B: the restore, the stall, who restored when."""
    a, b, chk = rnd["a"], rnd["b"], rnd["check"]
    rs = b["restore_sent_s"]
    ws, we = b["window"]
    gap_ms, g0, g1 = b["gap"]
    if b["restore_error"]:
        text = "Round %d: the RESTORE **failed** after %.2f s: `%s`." % (
            rnd["n"], b["restore_s"], " ".join(b["restore_error"].replace("`", "'").split()))
    else:
        row_ = b["restore_row"]
        text = ("Round %d: the RESTORE (leader node %d) was answered %.2f s after it was sent (its `duration_ms` %s, "
                "log index %s), and seen applied (GET /status every 20 ms) by %s s after it was sent."
                % (rnd["n"], rnd["leader"].id, b["restore_s"], row_.get("duration_ms"), b["restore_index"],
                   ", ".join("node %d at %.2f" % (nid, t) for nid, t in sorted(b["applied_s"].items()))
                   or "(no log index in the answer: not tracked)"))
    text += (" The longest time without a write completing was %s ms, from %.2f to %.2f s after the RESTORE was "
             "sent (run A's longest: %s ms)." % (rc.fmt_ms(gap_ms), g0 - rs, g1 - rs, rc.fmt_ms(a["gap"][0])))
    pages, spans = [], {}
    for n in rnd["order"]:
        ev = [e for e in b["files"] if e[2] == "%d:data" % n.id and e[3].startswith(".db.sqlite.restored")
              and e[0] >= rs - 0.05]
        if ev:
            spans[n.id] = (ev[0][0] - rs, max(e[1] for e in ev) - rs)
            pages.append("node %d %s %.2f–%.2f s" % (n.id, "(leader)" if n is rnd["leader"] else "(follower)",
                                                     spans[n.id][0], spans[n.id][1]))
    if pages:
        text += " Restored database written and checked: %s." % "; ".join(pages)
    lead = spans.get(rnd["leader"].id)
    follow = [spans[n.id][0] for n in rnd["order"][1:] if n.id in spans]
    if lead and follow and min(follow) >= lead[1]:
        text += (" The followers started theirs %.2f s after the leader's was done: the restores ran one after "
                 "the other, not side by side." % (min(follow) - lead[1]))
    fetched = [n.id for n in rnd["order"] if any("fetched backups" in ln for ln in b["log_lines"][n.id])]
    if fetched:
        text += " Node%s %s fetched the backup from a peer first (their logs)." % (
            "s" if len(fetched) > 1 else "", " and ".join(str(x) for x in fetched))
    else:
        text += " No node had to fetch the backup (each held it already)."
    if chk["leader_after"] != chk["leader_before"] or chk["terms"]:
        text += (" **Leadership moved** from node %d to node %d (%s); the load kept sending to node %d."
                 % (chk["leader_before"], chk["leader_after"],
                    "; ".join("node %d: `%s`" % t for t in chk["terms"]) or "no election logged",
                    chk["leader_before"]))
    if b["all"]["errors"]:
        text += " %d writes failed: %s." % (b["all"]["errors"], "; ".join(
            "%d × `%s…`" % (v, k.replace("|", "/").replace("`", "'")) for k, v in b["all"]["error_kinds"].items()))
    text += (" Writes completed per 250 ms from %.2f s into the run (the RESTORE sent at %.2f s, the window "
             "closed at %.2f s): %s." % (b["timeline_from"], ws, we, " ".join(str(x) for x in b["timeline"])))
    return text


def section(args, meta, setup, rounds, notes):
    out = [SECTION, ""]
    out.append("Measured %s with `%s` at commit %s; the run took %d s." % (
        meta["date"], args.command, meta["commit"], meta["total_s"]))
    out.append("")
    out.append(rc.machine_line(meta, "The three cairnd, the load's %d client threads (one Python process) and "
                                     "the fill" % args.clients))
    out.append("")
    out.append("Cluster: three cairnd on 127.0.0.1 (`--bootstrap-expect 3 --join`), defaults otherwise. "
               "Database: table `big(k INTEGER PRIMARY KEY, txt TEXT, num REAL, qty INTEGER)` filled through "
               "the leader with %s rows of words (bench/backup_data.py's vocabulary, 6–70 words a row) to "
               "%.0f MiB (%s bytes; %.0f s), and the load's table `load(id INTEGER PRIMARY KEY, c, n, v)` "
               "created empty before the backup, so that it survives the restore. Backup: `BACKUP DATABASE "
               "FULL` on the leader, %s pages, %.0f MiB in the repository, %.2f s. %s"
               % (f"{setup['rows']:,}", setup["bytes"] / 1048576, f"{setup['bytes']:,}", setup["fill_s"],
                  f"{setup['backup']['pages']:,}", setup["backup"]["size_bytes"] / 1048576,
                  setup["backup"]["duration_ms"] / 1000.0,
                  "Before the runs each follower fetched the backup (POST /admin/backups/ID/verify), so a restore "
                  "does not include a fetch." if args.prefetch else
                  "Only the leader holds the backup: a follower fetches it from a peer when it first applies a "
                  "restore entry."))
    out.append("")
    out.append("Load: %d client threads, each with one keep-alive connection to the leader (TCP_NODELAY) and one "
               "`POST /db/execute?raft_index` of `[[\"INSERT INTO load(c, n, v) VALUES(?, ?, ?)\", ...]]` "
               "(100-byte value) in flight; latency per write from a monotonic clock, send to full response. "
               "A write counts when the answer is 200 with `rows_affected` 1 and no error; anything else is "
               "an error (counted, never retried). %d rounds on the same cluster, each: run A, the load alone "
               "for %s s; run B, the same load, %.1f s into it `RESTORE DATABASE FROM '%s'` sent to the "
               "leader's `/db/execute`, the load going on until %s s have passed and %.1f s after every node "
               "has applied the restore. The restore window runs from sending the RESTORE until the last node "
               "was seen (GET /status every 20 ms) to have applied its entry, or until the answer if later; "
               "\"overlapping\" writes are those in flight at any moment of it. Every restore brings back the "
               "same full backup (`load` empty)."
               % (args.clients, len(rounds), "%g" % args.seconds, args.restore_at, setup["backup"]["id"],
                  "%g" % args.seconds, args.tail))
    out.append("")
    out += TABLE_HEAD
    for rnd in rounds:
        a, b = rnd["a"], rnd["b"]
        ws, we = b["window"]
        out.append(table_row(rnd["n"], "A: load alone", a["all"], a["gap"][0]))
        out.append(table_row(rnd["n"], "B: load + live restore, whole run", b["all"], b["gap"][0]))
        out.append(table_row(rnd["n"], "B: writes overlapping the restore window (%.2f s)" % (we - ws), b["overlap"]))
    out.append("")
    dmax = [r["b"]["overlap"]["max_ms"] - r["a"]["all"]["max_ms"] for r in rounds]
    dp99 = [r["b"]["overlap"]["p99_ms"] - r["a"]["all"]["p99_ms"] for r in rounds]
    errs = [r["a"]["all"]["errors"] + r["b"]["all"]["errors"] for r in rounds]
    out.append("| target (issue 17), every round | measured | result |")
    out.append("|---|---|---|")
    out.append("| max latency of the writes overlapping the restore − max latency of run A ≤ %.0f ms | %s | %s |"
               % (TARGET_MS, "; ".join("round %d: %s − %s = %s ms" % (
                   r["n"], rc.fmt_ms(r["b"]["overlap"]["max_ms"]), rc.fmt_ms(r["a"]["all"]["max_ms"]), signed_ms(d))
                   for r, d in zip(rounds, dmax)), verdict(all(d <= TARGET_MS for d in dmax))))
    out.append("| p99 latency of the writes overlapping the restore − p99 of run A ≤ %.0f ms | %s | %s |"
               % (TARGET_MS, "; ".join("round %d: %s − %s = %s ms" % (
                   r["n"], rc.fmt_ms(r["b"]["overlap"]["p99_ms"]), rc.fmt_ms(r["a"]["all"]["p99_ms"]), signed_ms(d))
                   for r, d in zip(rounds, dp99)), verdict(all(d <= TARGET_MS for d in dp99))))
    worst_err = max((s["error_max_ms"] for r in rounds for s in (r["a"]["all"], r["b"]["all"]) if s["errors"]),
                    default=float("nan"))
    out.append("| no write fails | %s%s | %s |" % (
        "; ".join("round %d: %d errors" % (r["n"], e) for r, e in zip(rounds, errs)),
        " (the failed writes waited up to %s ms for their answer)" % rc.fmt_ms(worst_err) if sum(errs) else "",
        verdict(sum(errs) == 0)))
    out.append("| the three nodes hold the same data after each round | %s | %s |" % (
        "; ".join("round %d: %s" % (r["n"], r["check"]["summary"]) for r in rounds),
        verdict(all(r["check"]["ok"] for r in rounds))))
    out.append("")
    for rnd in rounds:
        out.append(reading(rnd, setup))
        out.append("")
    worst = max(rounds, key=lambda r: r["b"]["gap"][0])
    out.append("Where the time goes in round %d (the longest stall), from the files seen in each node's data and "
               "backup directories every 10 ms and its log, in s from sending the RESTORE:" % worst["n"])
    out.append("")
    for ln in phases(worst["b"], setup["nodes"], worst["leader"]):
        out.append("- " + ln)
    out.append("")
    out.append("A write is acknowledged once the leader has applied it and a majority (the leader and one "
               "follower) has it in its log: wherever a restore holds up the log on the leader, or on both "
               "followers at once, every write waits; a node that exchanges no Raft message for longer than the "
               "election timeout (1 s, src/node.c) can also cost the cluster its leader.")
    out.append("")
    out.append("Raft snapshots written (`snapshot N written` in the nodes' logs), run A / run B: %s; the leader "
               "also takes one right after a restore. CPU seconds of the nodes (that round's leader first), "
               "run A / run B: %s."
               % ("; ".join("round %d: %d / %d" % (r["n"], sum(len(v) for v in r["a"]["snapshots"].values()),
                                                  sum(len(v) for v in r["b"]["snapshots"].values()))
                            for r in rounds),
                  "; ".join("round %d: %s / %s" % (r["n"],
                                                   " + ".join("%.1f" % r["a"]["cpu_s"][n.id] for n in r["order"]),
                                                   " + ".join("%.1f" % r["b"]["cpu_s"][n.id] for n in r["order"]))
                            for r in rounds)))
    out.append("")
    for n in notes + [x for r in rounds for x in r["check"]["notes"]]:
        out.append(n)
        out.append("")
    firsts = [s["first_error"] for r in rounds for s in (r["a"]["all"], r["b"]["all"]) if s["first_error"]]
    if firsts:
        out.append("First failed write: `%s`" % " ".join(firsts[0].replace("`", "'").split()))
        out.append("")
    out.append("<details><summary>Run B before, inside and after the restore window; the nodes' log lines during "
               "each run B</summary>")
    out.append("")
    out += TABLE_HEAD
    for rnd in rounds:
        b = rnd["b"]
        out.append(table_row(rnd["n"], "B: completed before the RESTORE was sent", b["before"]))
        out.append(table_row(rnd["n"], "B: issued inside the restore window", b["issued_in"]))
        out.append(table_row(rnd["n"], "B: issued after the restore window", b["after"]))
    out.append("")
    for rnd in rounds:
        for n in rnd["order"]:
            for ln in rnd["b"]["log_lines"][n.id]:
                if ln.strip() and not ln.startswith("===="):
                    out.append("    round %d, node %d: %s" % (rnd["n"], n.id, ln.strip()))
    out.append("")
    out.append("</details>")
    out.append("")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=None)
    ap.add_argument("--mib", type=int, default=rc.env_int("BENCH_LIVE_MIB", 200))
    ap.add_argument("--clients", type=int, default=rc.env_int("BENCH_LIVE_CLIENTS", 16))
    ap.add_argument("--seconds", type=float, default=rc.env_float("BENCH_LIVE_SECONDS", 10))
    ap.add_argument("--restore-at", type=float, default=rc.env_float("BENCH_LIVE_RESTORE_AT", -1))
    ap.add_argument("--tail", type=float, default=rc.env_float("BENCH_LIVE_TAIL", 2))
    ap.add_argument("--rounds", type=int, default=rc.env_int("BENCH_LIVE_ROUNDS", 3))
    ap.add_argument("--prefetch", type=int, default=rc.env_int("BENCH_LIVE_PREFETCH", 0))
    ap.add_argument("--no-doc", action="store_true", default=os.environ.get("BENCH_WRITE_DOC", "1") == "0")
    args = ap.parse_args()
    if args.restore_at < 0:
        args.restore_at = round(0.4 * args.seconds, 2)
    args.build = rc.build_dir(args.build)
    envs = " ".join("%s=%s" % (k, os.environ[k]) for k in sorted(os.environ)
                    if k.startswith("BENCH_LIVE_") or k == "BUILD")
    args.command = (envs + " " if envs else "") + ("make bench-live-restore" if os.environ.get("MAKELEVEL")
                                                   else "/usr/bin/python3 bench/live_restore.py")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.access(os.path.join(args.build, "cairnd"), os.X_OK):
        log("%s/cairnd is missing; build first (make, or BUILD=DIR)" % args.build)
        return 1
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="cairn-bench-live-restore.", dir=os.environ.get("TMPDIR", "/tmp"))
    meta = rc.machine(work, args.build)
    meta["load_before"] = rc.loadavg()
    results = os.path.join(rc.REPO, "bench", "results")
    os.makedirs(results, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    nodes = []
    status = 0
    text = None
    try:
        nodes = [rc.Node(args.build, work, i) for i in (1, 2, 3)]
        join = ",".join(n.addr for n in nodes)
        for n in nodes:
            n.start(["--bootstrap-expect", "3", "--join", join])
        leader = rc.leader_of(nodes, 60)
        log("cluster up in %s, leader node %d (%s)" % (work, leader.id, leader.addr))
        rc.execute(leader.http_port, ["CREATE TABLE big(k INTEGER PRIMARY KEY, txt TEXT, num REAL, qty INTEGER)",
                                      "CREATE TABLE load(id INTEGER PRIMARY KEY, c INTEGER, n INTEGER, v TEXT)"])
        rows, nbytes, page_size, fill_s = fill(leader, args.mib)
        log("filled: %d rows, %.1f MiB in %.0f s" % (rows, nbytes / 1048576, fill_s))
        rc.caught_up(nodes, 600)
        res = rc.execute(leader.http_port, ["BACKUP DATABASE FULL"], timeout=900)[0]
        backup = dict(zip(res["columns"], res["values"][0]))
        log("full backup %s: %d pages, %.1f MiB, %d ms" % (backup["backup_id"], backup["pages"],
                                                          backup["size_bytes"] / 1048576, backup["duration_ms"]))
        backup["id"] = backup["backup_id"]
        if args.prefetch:
            for n in nodes:
                if n is leader:
                    continue
                st, body = rc.request(n.http_port, "POST", "/admin/backups/%s/verify" % backup["id"], {}, 900)
                if st != 200 or not json.loads(body).get("ok"):
                    raise RuntimeError("prefetch on node %d: HTTP %d %r" % (n.id, st, body[:300]))
            log("the followers fetched and verified the backup")
        setup = {"rows": rows, "bytes": nbytes, "page_size": page_size, "fill_s": fill_s, "backup": backup,
                 "nodes": nodes}
        rounds = []
        for k in range(1, args.rounds + 1):
            rc.caught_up(nodes, 600)
            # The load goes to the leader of the moment: a restore may have moved it.
            leader = rc.leader_of(nodes, 60)
            order = [leader] + [n for n in nodes if n is not leader]
            time.sleep(1.0)
            a = run_load(args, nodes, leader, "%d A" % k)
            rc.caught_up(nodes, 600)
            time.sleep(1.0)
            b = run_load(args, nodes, leader, "%d B" % k, backup["id"])
            rc.caught_up(nodes, 600)
            chk = check_round(nodes, leader, b, rows)
            log("round %d check: %s" % (k, chk["summary"]))
            rounds.append({"n": k, "leader": leader, "order": order, "a": a, "b": b, "check": chk})
        notes = []
        meta["load_after"] = rc.loadavg()
        stops = {n.id: n.stop() for n in nodes}
        if any(v != 0 for v in stops.values()):
            notes.append("Exit status of the nodes on SIGTERM at the end: %s." % stops)
        said = [ln.strip() for n in nodes for ln in n.log_text().splitlines()
                if any(w in ln.lower() for w in ("error", "failed", "cannot", "diverged", "warning", "not taken"))]
        if said:
            notes.append("The nodes' logs said: %s" % "; ".join("`%s`" % ln for ln in said[:8]))
        meta["total_s"] = time.monotonic() - t_start
        with open(os.path.join(results, "live-restore-%s.jsonl" % stamp), "w") as f:
            for rnd in rounds:
                for r in (rnd["a"], rnd["b"]):
                    r2 = {k: v for k, v in r.items() if k != "records"}
                    r2["round"] = rnd["n"]
                    r2["leader"] = rnd["leader"].id
                    r2["latencies_ms"] = [round((x[1] - x[0]) * 1000, 3) for x in r["records"]]
                    r2["starts_s"] = [round(x[0], 4) for x in r["records"]]
                    f.write(json.dumps(r2, default=str) + "\n")
                f.write(json.dumps({"round": rnd["n"], "check": rnd["check"]}, default=str) + "\n")
            f.write(json.dumps({"meta": meta, "backup": backup, "rows": rows, "bytes": nbytes}, default=str) + "\n")
        text = section(args, meta, setup, rounds, notes)
        ok = all(r["check"]["ok"] and r["a"]["all"]["errors"] + r["b"]["all"]["errors"] == 0
                 and r["b"]["overlap"]["max_ms"] - r["a"]["all"]["max_ms"] <= TARGET_MS
                 and r["b"]["overlap"]["p99_ms"] - r["a"]["all"]["p99_ms"] <= TARGET_MS for r in rounds)
        status = 0 if ok else 3
    except Exception as e:  # noqa: BLE001 - reported; every node is stopped below
        log("failed: %s: %s" % (type(e).__name__, e))
        status = 1
    finally:
        for n in nodes:
            if n.running():
                n.stop()
        with open(os.path.join(results, "live-restore-%s.logs" % stamp), "w") as out:
            for n in nodes:
                out.write("\n#### node %d: %s\n%s" % (n.id, n.log_path, n.log_text()))
        shutil.rmtree(work, ignore_errors=True)
    if text is None:
        log("no result; the nodes' logs are in bench/results/live-restore-%s.logs" % stamp)
        return status
    print(text)
    if not args.no_doc:
        rc.replace_section(SECTION, text, before=NEXT_SECTION)
        log("section written into docs/BENCHMARKS.md")
    if status == 3:
        log("a target was missed (see the table); exit status 3")
    return status


if __name__ == "__main__":
    sys.exit(main())
