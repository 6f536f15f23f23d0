"""What bench/live_restore.py and bench/rto.py share (issue 17): cairnd processes on
127.0.0.1 with ports of their own, HTTP calls, the machine's facts, percentiles, and
replacing one section of docs/BENCHMARKS.md. Only the Python standard library."""

import http.client as httpc
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")


def make_logger(prefix):
    def log(msg):
        print("%s: %s" % (prefix, msg), file=sys.stderr, flush=True)
    return log


def build_dir(arg):
    """The build directory: --build, else $BUILD, else build/; a relative path is taken
    from the current directory when it has cairnd there, else from the repository."""
    b = arg or os.environ.get("BUILD") or "build"
    if os.path.isabs(b):
        return b
    if os.access(os.path.join(os.path.abspath(b), "cairnd"), os.X_OK):
        return os.path.abspath(b)
    return os.path.join(REPO, b)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name, default):
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


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


def request(port, method, path, body=None, timeout=10.0):
    """(status, bytes) of one request on a connection of its own; body: JSON-able."""
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


def execute(port, stmts, path="/db/execute", timeout=300.0):
    """The results of a write request; raises on an HTTP error or any statement's error."""
    st, body = request(port, "POST", path, stmts, timeout)
    if st != 200:
        raise RuntimeError("POST %s: HTTP %d %r" % (path, st, body[:400]))
    doc = json.loads(body)
    for r in doc.get("results", []):
        if "error" in r:
            raise RuntimeError("POST %s: %s" % (path, r["error"]))
    if "error" in doc:
        raise RuntimeError("POST %s: %s" % (path, doc["error"]))
    return doc["results"]


def query(port, sql, level="none", timeout=60.0):
    """The rows of one read at `level` on this node."""
    st, body = request(port, "POST", "/db/query?level=%s" % level, [sql], timeout)
    if st != 200:
        raise RuntimeError("query %r: HTTP %d %r" % (sql, st, body[:400]))
    r = json.loads(body)["results"][0]
    if "error" in r:
        raise RuntimeError("query %r: %s" % (sql, r["error"]))
    return r.get("values", [])


def wait(pred, timeout, what, interval=0.02):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Node:
    """One cairnd on 127.0.0.1 with ports of its own; its stdout and stderr in DIR/cairnd.log."""

    def __init__(self, build, work, node_id, extra=()):
        self.build = build
        self.id = node_id
        self.dir = os.path.join(work, "node%d" % node_id)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.backups = os.path.join(self.dir, "backups")
        self.http_port, self.raft_port = free_ports(2)
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(self.dir, "cairnd.log")

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.http_port

    def argv(self, more=()):
        return [os.path.join(self.build, "cairnd"), "--node-id", str(self.id), "--data-dir", self.data,
                "--backup-dir", self.backups, "--http-addr", self.addr,
                "--raft-addr", "127.0.0.1:%d" % self.raft_port] + self.extra + list(more)

    def start(self, more=()):
        argv = self.argv(more)
        with open(self.log_path, "ab") as f:
            f.write(("==== %s\n" % " ".join(argv)).encode())
            f.flush()
            self.proc = subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL)
        return self.proc

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout=2.0):
        return try_json(self.http_port, "/status", timeout) or {}

    def raft(self, timeout=2.0):
        return self.status(timeout).get("raft") or {}

    def leader_id(self):
        r = self.raft()
        lid = r.get("leader_id")
        if lid is None and isinstance(r.get("leader"), dict):
            lid = r["leader"].get("id")
        return int(lid or 0)

    def proc_status(self, field):
        """A field of /proc/PID/status in KiB (VmHWM, VmRSS), or None."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError, AttributeError, IndexError):
            pass
        return None

    def cpu_seconds(self):
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return 0.0

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout; the exit status (or a note)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after %d s" % timeout


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
    """Waits until every node has applied the leader's commit index; returns it."""
    def same():
        figs = [n.raft(5.0) for n in nodes]
        if not all(f.get("applied_index") is not None for f in figs):
            return None
        lead = [f for f in figs if f.get("state") == "leader"]
        applied = {f["applied_index"] for f in figs}
        if len(applied) == 1 and lead and lead[0].get("commit_index") == next(iter(applied)):
            return next(iter(applied))
        return None
    return wait(same, timeout, "every node to apply the same index", interval=0.05)


class DirWatch:
    """Lists some directories every `interval` s in a thread of its own and keeps, for
    every file name seen, when it was first and last seen, its largest size and when it
    last grew: how a restore's temporary files, copies and snapshots come and go, seen
    from outside."""

    def __init__(self, dirs, t0, interval=0.01):
        import threading
        self.dirs = dict(dirs)  # label -> path
        self.t0 = t0
        self.interval = interval
        self.seen = {}  # (label, name) -> [first, last, max size, last growth]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic() - self.t0
            for label, path in self.dirs.items():
                try:
                    with os.scandir(path) as it:
                        for e in it:
                            try:
                                size = e.stat(follow_symlinks=False).st_size
                            except OSError:
                                continue
                            s = self.seen.get((label, e.name))
                            if s is None:
                                self.seen[(label, e.name)] = [now, now, size, now]
                            else:
                                s[1] = now
                                if size > s[2]:
                                    s[2], s[3] = size, now
                except OSError:
                    pass
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def events(self, since=0.0):
        """[(first, last, label, name, size, last growth)] of the names first seen at or
        after since."""
        return sorted((v[0], v[1], k[0], k[1], v[2], v[3]) for k, v in self.seen.items() if v[0] >= since)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def build_source(build):
    """What the binaries of build were built from: "COMMIT", "COMMIT (+ uncommitted changes
    in src/ or include/)", or, for a build of another source tree (CMakeCache.txt's
    CMAKE_HOME_DIRECTORY), that tree's commit (its .git, or a file .source-commit beside
    an export) and where it is."""
    src = REPO
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_HOME_DIRECTORY:INTERNAL="):
                    src = line.split("=", 1)[1].strip()
                    break
    except OSError:
        pass

    def git(*argv):
        p = subprocess.run(["git", "-C", src] + list(argv), capture_output=True, text=True)
        return p.returncode, p.stdout.strip()
    same = os.path.realpath(src) == os.path.realpath(REPO)
    rc_, head = git("rev-parse", "--short", "HEAD")
    if rc_ == 0 and head and (same or os.path.isdir(os.path.join(src, ".git"))):
        dirty = git("diff", "--quiet", "HEAD", "--", "src", "include")[0] != 0
        out = head + (" (+ uncommitted changes in src/ or include/)" if dirty else "")
        return out if same else "%s of %s" % (out, src)
    try:
        with open(os.path.join(src, ".source-commit")) as f:
            return "%s (binaries built from an export of that commit in %s)" % (f.read().strip()[:7], src)
    except OSError:
        return "unknown (binaries built from %s)" % src


def machine(work, build=None):
    def sh(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
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
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except (OSError, ValueError, IndexError):
        pass
    fs = sh("findmnt", "-no", "FSTYPE,SOURCE,TARGET", "-T", work).split()
    disk = "?"
    if len(fs) >= 2:
        d = sh("lsblk", "-dno", "NAME,ROTA,SIZE", fs[1]).split()
        if len(d) >= 3:
            disk = "%s, %s, %s" % (d[0], "rotational" if d[1] == "1" else "non-rotational", d[2])
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": "Linux " + platform.release(),
        "filesystem": "%s (%s mounted on %s)" % tuple(fs[:3]) if len(fs) >= 3 else "?",
        "disk": disk, "sqlite": sqlite3.sqlite_version,
        "commit": build_source(build or os.path.join(REPO, "build")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine_line(meta, who):
    return ("Machine: %s CPUs (%s), %s RAM, %s; data on %s, disk %s; SQLite %s. %s share these "
            "CPUs and this disk with whatever else ran on the machine; load average (1, 5, 15 min) "
            "%s before the run, %s at its end."
            % (meta["nproc"], meta["cpu"], meta["memory"], meta["kernel"], meta["filesystem"],
               meta["disk"], meta["sqlite"], who, meta["load_before"], meta.get("load_after", "?")))


def percentile(sorted_xs, p):
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(-(-p * len(sorted_xs) // 100)) - 1))
    return sorted_xs[k]


def fmt_ms(v):
    if v != v:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def replace_section(heading, text, before=None, doc_path=DOC):
    """Puts text (starting with heading) in place of the section `heading` of the doc, or,
    when there is none, before the section `before` if there is one, else at the end."""
    with open(doc_path) as f:
        old = f.read()
    lines = old.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    elif before is not None and any(ln.strip() == before for ln in lines):
        start = end = next(i for i, ln in enumerate(lines) if ln.strip() == before)
    else:
        start = end = len(lines)
    head = "\n".join(lines[:start]).rstrip("\n")
    tail = "\n".join(lines[end:]).strip("\n")
    new = (head + "\n\n" if head else "") + text.rstrip("\n") + "\n" + ("\n" + tail + "\n" if tail else "")
    tmp = doc_path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(new.rstrip("\n") + "\n")
    os.replace(tmp, doc_path)
