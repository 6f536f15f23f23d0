"""Helpers for cairn's cluster system tests (tests/system/test_cluster.py).

A Cluster is N cairnd processes on 127.0.0.1, each a conftest.Server (free HTTP and Raft
ports chosen once and kept across restarts, data and logs in its own directory under the
test's tmp_path), formed either way cairnd offers:

  * "expect": every node started at once with --bootstrap-expect N --join <all HTTP addrs>;
  * "join":   node 1 alone (a one-node cluster), then each other node with --join.

Synchronisation is always a poll with a deadline (conftest.wait_until) on /status,
/nodes or /readyz, never a sleep. Every process a Cluster starts is stopped by
Cluster.teardown() (SIGCONT first for a frozen one), which the `cluster_factory`
fixture of test_cluster.py calls in a finally.

Databases are compared three ways: rows through /db/query?level=none (each node's own
copy), the file DATA/db.sqlite read with Python's sqlite3 opened read-only
(`file:...?mode=ro`), and, once nodes are stopped, page hashes of a checkpointed copy
of each file (backuputil.page_hashes, which masks the header's bookkeeping bytes).
Only the Python standard library is used.
"""

import http.client
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
import urllib.parse

from conftest import (
    SANITIZER_MARKERS,
    Server,
    StopWaiting,
    _LIVE,
    deadline_seconds,
    lock_problems,
    wait_until,
)
import backuputil

LEVELS = ("none", "weak", "linearizable", "strong")


# ---------------------------------------------------------------------------
# HTTP without the Server class's asserts


def http_call(port, method, path, body=None, timeout=10.0, headers=None):
    """One request on a new connection to 127.0.0.1:port. Returns (status, headers, body
    bytes, seconds); raises OSError / http.client.HTTPException on a transport error."""
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = (body if isinstance(body, str) else json.dumps(body)).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - t0
    finally:
        conn.close()


def json_or_none(data):
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------
# processes


def proc_rss_kib(pid):
    """VmRSS of pid in KiB from /proc/PID/status; None when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """A thread sampling the VmRSS of some nodes every `interval` seconds. samples maps
    node name -> list of KiB values (in order)."""

    def __init__(self, nodes, interval=0.05):
        self.nodes = list(nodes)
        self.interval = interval
        self.samples = {n.name: [] for n in self.nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for n in self.nodes:
                if n.pid is not None:
                    v = proc_rss_kib(n.pid)
                    if v is not None:
                        self.samples[n.name].append(v)
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        return self.samples

    def growth_kib(self):
        """name -> (first sample, max sample, max - first)."""
        out = {}
        for name, s in self.samples.items():
            if s:
                out[name] = (s[0], max(s), max(s) - s[0])
        return out


class Node(Server):
    """A cairnd of a cluster: a Server with a node id (always passed as --node-id) and
    the cluster flags kept apart from the other arguments so they can change between
    starts (a restart with or without --join)."""

    def __init__(self, workdir, node_id, cluster_args=(), extra_args=(), name=None):
        super().__init__(workdir, extra_args=extra_args, node_id=node_id,
                         name=name or "node%d" % node_id, ready_timeout=30.0)
        self.id = int(node_id)
        self.cluster_args = [str(a) for a in cluster_args]
        self.frozen = False

    def argv(self):
        return super().argv() + self.cluster_args

    @property
    def backup_dir(self):
        """Where the backups of this node go: its --backup-dir, or DATA/../backups."""
        args = self.extra_args
        for i, a in enumerate(args):
            if a == "--backup-dir" and i + 1 < len(args):
                return os_path(args[i + 1])
            if a.startswith("--backup-dir="):
                return os_path(a.split("=", 1)[1])
        return os_path(self.data_dir.parent / "backups")

    @property
    def db_path(self):
        return self.data_dir / "db.sqlite"

    def wait_ready(self, timeout=None):
        """Waits until the node runs, knows a leader and has applied what it knows is
        committed. (GET /readyz is checked by the tests themselves, so that a wrong
        /readyz fails the test about it and not every test.)"""
        timeout = self.ready_timeout if timeout is None else timeout

        def caught_up():
            if self.proc.poll() is not None:
                raise StopWaiting("%s exited with status %s before it was ready"
                                  % (self.name, self.proc.returncode))
            r = self.raft()
            lid = r.get("leader_id")
            if lid is None and isinstance(r.get("leader"), dict):
                lid = r["leader"].get("id")
            return bool(lid) and r.get("applied_index") is not None and \
                r.get("applied_index") >= (r.get("commit_index") or 0)

        try:
            wait_until(caught_up, timeout, "%s to know a leader and apply its log" % self.name,
                       interval=0.02)
        except AssertionError as e:
            raise AssertionError("%s\nstderr of %s:\n%s" % (e, self.name, self.stderr_tail())) from None

    def freeze(self):
        """SIGSTOP, and wait until every thread of the process is stopped: the signal is
        only queued when kill() returns, and a thread starved of CPU can still run (and
        answer the leader) for a moment after it."""
        assert self.running(), "%s is not running" % self.name
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

        def all_stopped():
            task = "/proc/%d/task" % self.pid
            try:
                for tid in os.listdir(task):
                    with open("%s/%s/stat" % (task, tid)) as f:
                        if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                            return False
            except FileNotFoundError:
                return False  # a thread ended while being read: look again
            return True
        wait_until(all_stopped, 10, "every thread of %s to stop" % self.name, interval=0.001)

    def thaw(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def rss_kib(self):
        return proc_rss_kib(self.pid) if self.running() else None

    # -- what the node says about itself (no asserts: used in polls) --------

    def try_json(self, path, timeout=2.0):
        """GET path -> parsed JSON on 200, None on anything else (transport errors too)."""
        try:
            st, _, data, _ = http_call(self.http_port, "GET", path, timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None
        return json_or_none(data) if st == 200 else None

    def status(self, timeout=2.0):
        return self.try_json("/status", timeout)

    def nodes(self, timeout=2.0):
        return self.try_json("/nodes", timeout)

    def raft(self, timeout=2.0):
        st = self.status(timeout)
        return (st or {}).get("raft") or {}

    def leader_id(self, timeout=2.0):
        """The leader this node knows of (0 when none), from /status."""
        r = self.raft(timeout)
        lid = r.get("leader_id")
        if lid is None and isinstance(r.get("leader"), dict):
            lid = r["leader"].get("id")
        return int(lid or 0)

    def state(self, timeout=2.0):
        return self.raft(timeout).get("state")

    def applied_index(self, timeout=2.0):
        r = self.raft(timeout)
        return r.get("applied_index")

    def ready(self):
        try:
            st, _, _, _ = http_call(self.http_port, "GET", "/readyz", timeout=2)
        except (OSError, http.client.HTTPException):
            return False
        return st == 200

    def local_rows(self, sql):
        """Rows of sql read from this node's own database (?level=none)."""
        return self.rows(sql, level="none")


def os_path(p):
    import pathlib
    return pathlib.Path(p)


# ---------------------------------------------------------------------------
# the cluster


class Cluster:
    """N cairnd nodes under base_dir. Node ids are 1..N; nodes[i].id == i + 1 initially;
    add_node() appends more. Nothing starts until start() / add_node()."""

    def __init__(self, base_dir, n=3, mode="expect", extra_args=(), name="c"):
        import pathlib
        assert mode in ("expect", "join"), mode
        self.base_dir = pathlib.Path(base_dir)
        self.mode = mode
        self.extra_args = [str(a) for a in extra_args]
        self.name = name
        self.nodes = []
        self.all_nodes = []  # every node ever made (removed ones too), for teardown
        for i in range(n):
            self._make(i + 1)

    def _make(self, node_id, extra_args=None, name=None):
        # A second node made with an id already used (a duplicate-id test) gets its own
        # directory and name: "c1-node2", then "c1-node2b", ...
        base = name or "%s-node%d" % (self.name, node_id)
        taken = {n.name for n in self.all_nodes}
        name, k = base, 0
        while name in taken or (self.base_dir / name).exists():
            k += 1
            name = base + chr(ord("a") + k)
        node = Node(self.base_dir / name, node_id,
                    extra_args=self.extra_args if extra_args is None else extra_args, name=name)
        self.nodes.append(node)
        self.all_nodes.append(node)
        _LIVE.append(node)
        return node

    # -- forming -----------------------------------------------------------

    def http_addrs(self, nodes=None):
        return ",".join(n.http_addr for n in (nodes or self.nodes))

    def start(self, timeout=40):
        """Starts every node the way self.mode says; returns the leader once every node is
        ready (/readyz 200) and lists all the others in its /nodes."""
        if self.mode == "expect":
            addrs = self.http_addrs()
            for n in self.nodes:
                n.cluster_args = ["--bootstrap-expect", str(len(self.nodes)), "--join", addrs]
            for n in self.nodes:
                n.start(wait=False)
        else:
            first = self.nodes[0]
            first.cluster_args = []
            first.start(wait=True)
            for i, n in enumerate(self.nodes[1:]):
                # Alternate the member asked: the first joiner goes through node 1 (the
                # leader), later ones through the previous joiner (a follower).
                via = self.nodes[i] if i > 0 else first
                n.cluster_args = ["--join", via.url]
                n.start(wait=False)
                self.wait_members(len(self.nodes[: i + 2]), timeout=timeout)
        for n in self.nodes:
            n.wait_ready(timeout=deadline_seconds(timeout))
        self.wait_members(len(self.nodes), timeout=timeout)
        return self.leader(timeout=timeout)

    def add_node(self, via=None, start=True, extra_args=None, node_id=None,
                 wait=True, timeout=60):
        """Makes node N+1 (or node_id) and starts it with --join via.url (default: every
        running member's address). With wait, returns once it is ready."""
        nid = node_id if node_id is not None else max(n.id for n in self.all_nodes) + 1
        node = self._make(nid, extra_args=extra_args)
        join = via.url if via is not None else self.http_addrs([n for n in self.nodes if n.running()])
        node.cluster_args = ["--join", join]
        if start:
            node.start(wait=False)
            if wait:
                node.wait_ready(timeout=deadline_seconds(timeout))
        return node

    def forget(self, node):
        """Takes node out of self.nodes (after DELETE /remove); it is still torn down."""
        self.nodes = [n for n in self.nodes if n is not node]

    def node(self, node_id):
        for n in self.nodes:
            if n.id == int(node_id):
                return n
        raise KeyError(node_id)

    def running(self):
        return [n for n in self.nodes if n.running() and not n.frozen]

    # -- leadership ----------------------------------------------------------

    def leader(self, timeout=20, among=None):
        """The node that is leader and that every other running node among `among`
        (default: the running, unfrozen ones) agrees on. Polls until then."""
        def agreed():
            nodes = among if among is not None else self.running()
            seen = set()
            for n in nodes:
                lid = n.leader_id()
                if not lid:
                    return None
                seen.add(lid)
            if len(seen) != 1:
                return None
            lid = seen.pop()
            for n in nodes:
                if n.id == lid and n.state() == "leader":
                    return n
            return None
        return wait_until(agreed, timeout, "the nodes %s to agree on a leader"
                          % [n.name for n in (among or self.running())], interval=0.02)

    def followers(self, leader=None):
        leader = leader or self.leader()
        return [n for n in self.running() if n is not leader]

    def nodes_doc(self, node=None):
        """GET /nodes on node (default: the leader), as a dict keyed by id string."""
        node = node or self.leader()
        return node.get_json("/nodes")

    def wait_members(self, count, timeout=30, node=None, voters=True):
        """Waits until some running node's /nodes lists `count` nodes, all reachable and
        (with voters) all voters: a joiner is a standby until the leader promotes it."""
        def check():
            candidates = [node] if node is not None else self.running()
            for n in candidates:
                doc = n.nodes()
                if isinstance(doc, dict) and len(doc) == count and all(
                        isinstance(v, dict) and v.get("reachable") and v.get("api_addr")
                        and (v.get("voter") or not voters)
                        for v in doc.values()):
                    return doc
            return None
        return wait_until(check, timeout, "/nodes to list %d reachable%s nodes"
                          % (count, " voting" if voters else ""), interval=0.05)

    # -- catching up ---------------------------------------------------------

    def wait_converged(self, nodes=None, timeout=60):
        """Waits until every node of `nodes` (default: the running ones) has applied the
        same index, and that index is the leader's commit index; returns it."""
        def check():
            ns = nodes if nodes is not None else self.running()
            figures = []
            for n in ns:
                r = n.raft()
                if not r or r.get("applied_index") is None:
                    return None
                figures.append(r)
            leaders = [r for r in figures if r.get("state") == "leader"]
            applied = {r["applied_index"] for r in figures}
            if len(applied) != 1:
                return None
            idx = applied.pop()
            if leaders and leaders[0].get("commit_index") not in (None, idx):
                return None
            # A leader newly elected still has its predecessor's commit index until
            # its term's start barrier commits: every node may then report that same
            # old index while entries past it are not applied anywhere yet.
            if leaders and leaders[0].get("ready") is False:
                return None
            return idx or None
        return wait_until(check, timeout, "nodes %s to apply the same index" % [
            n.name for n in (nodes or self.running())], interval=0.05)

    # -- comparing databases -------------------------------------------------

    def table_rows(self, table, nodes=None, order="rowid"):
        """{node name: rows of SELECT * FROM table ORDER BY order} read with ?level=none."""
        return {n.name: n.local_rows("SELECT * FROM %s ORDER BY %s" % (table, order))
                for n in (nodes or self.running())}

    def assert_same_rows(self, table, nodes=None, order="rowid"):
        got = self.table_rows(table, nodes, order)
        names = list(got)
        ref = got[names[0]]
        for name in names[1:]:
            if got[name] != ref:
                diff = first_difference(ref, got[name])
                raise AssertionError("table %s differs between %s (%d rows) and %s (%d rows): %s"
                                     % (table, names[0], len(ref), name, len(got[name]), diff))
        return ref

    def file_dumps(self, nodes=None):
        """{node name: the SQL dump of DATA/db.sqlite, read-only}, for running nodes at the
        same applied index (the dump includes _cairn_meta and so that index)."""
        return {n.name: file_dump(n.db_path) for n in (nodes or self.running())}

    def assert_same_files(self, nodes=None, timeout=60):
        """Waits for convergence, then compares the dumps of every node's file."""
        nodes = nodes or self.running()
        self.wait_converged(nodes, timeout=timeout)
        dumps = self.file_dumps(nodes)
        names = list(dumps)
        for name in names[1:]:
            if dumps[name] != dumps[names[0]]:
                raise AssertionError("the databases of %s and %s differ: %s" % (
                    names[0], name, first_difference(dumps[names[0]], dumps[name])))
        return dumps[names[0]]

    def assert_same_pages(self, nodes, scratch):
        """For STOPPED nodes: checkpoints a copy of each database and compares page hashes."""
        hashes = {}
        for n in nodes:
            assert not n.running(), "%s must be stopped to compare pages" % n.name
            hashes[n.name] = checkpointed_page_hashes(n.db_path, scratch / n.name)
        names = list(hashes)
        for name in names[1:]:
            a, b = hashes[names[0]], hashes[name]
            differ = [i + 1 for i in range(min(len(a), len(b))) if a[i] != b[i]]
            assert len(a) == len(b) and not differ, (
                "pages of %s (%d pages) and %s (%d pages) differ; differing pages: %r"
                % (names[0], len(a), name, len(b), differ[:30]))
        return hashes[names[0]]

    # -- stopping ----------------------------------------------------------

    def stop_all(self, leader_last=True):
        """SIGTERM every running node (thawing frozen ones), followers first; returns
        {name: exit status}."""
        rcs = {}
        for n in self.all_nodes:
            if n.frozen:
                n.thaw()
        live = [n for n in self.all_nodes if n.running()]
        if leader_last:
            live.sort(key=lambda n: n.state(timeout=1) == "leader")
        for n in live:
            rcs[n.name] = n.stop(timeout=20)
        return rcs

    def teardown(self):
        """Stops every process this cluster started; returns a list of problems."""
        problems = []
        for n in self.all_nodes:
            if n.frozen or (n.proc is not None and n.proc.poll() is None):
                n.thaw()
        live = [n for n in self.all_nodes if n.running()]
        for n in live:
            problems += lock_problems(n)
        for n in live:
            try:
                rc = n.stop(timeout=20)
            except AssertionError as e:
                problems.append(str(e))
                continue
            if rc != 0:
                problems.append("%s exited with status %s on SIGTERM at teardown" % (n.name, rc))
        for n in self.all_nodes:
            text = n.stderr_text()
            found = [m for m in SANITIZER_MARKERS if m in text]
            if found:
                problems.append("%s: sanitizer report in stderr (%s)" % (n.name, ", ".join(found)))
            if n in _LIVE:
                _LIVE.remove(n)
        return problems

    def logs(self, max_bytes=6000):
        return "\n".join("---- %s stderr (tail) ----\n%s" % (n.name, n.stderr_tail(max_bytes))
                         for n in self.all_nodes)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "first difference at item %d: %r != %r" % (i, x, y)
    return "lengths %d and %d" % (len(a), len(b))


def file_dump(path):
    """The SQL dump of a SQLite file opened read-only (iterdump)."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def checkpointed_page_hashes(path, scratch):
    """Copies db.sqlite (and its -wal) into scratch, checkpoints the copy (so the pages
    are the ones a reader sees) and returns its page hashes."""
    scratch.mkdir(parents=True, exist_ok=True)
    dst = scratch / "db.sqlite"
    shutil.copyfile(path, dst)
    wal = str(path) + "-wal"
    if os.path.exists(wal):
        shutil.copyfile(wal, str(dst) + "-wal")
    con = sqlite3.connect(str(dst))
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        con.execute("PRAGMA journal_mode=DELETE").fetchall()
    finally:
        con.close()
    # This checkpoint ran outside cairn's page-checksum VFS: pages it copied from the
    # WAL hold whatever their reserved bytes held there (cairn seals a page when its own
    # checkpoint writes it into the database file). Compare what the pages hold.
    with open(dst, "rb") as f:
        reserve = f.read(100)[20]
    return backuputil.page_hashes(dst, ignore_tail=reserve)


# ---------------------------------------------------------------------------
# clients that write through every node, with retries


class ClusterWriters:
    """`clients` threads inserting (client, seq) rows into `table` (which must have
    UNIQUE(client, seq), so that a retry of a write whose answer was lost is a no-op:
    INSERT OR IGNORE). Client c sends to node c % len(nodes) first; on a transport
    error, a timeout or a non-200 it retries the same row on the next node, until
    acknowledged or `give_up` seconds pass (then it is an anomaly).

    acked: (client, seq) -> time.monotonic() of the acknowledgement.
    ack_times: every acknowledgement time, in order (for gap measurements).
    sent_acks: (time the acknowledged attempt was sent, time of its acknowledgement).
    With raft_index=True, writes ask for ?raft_index and acked_index maps (client, seq)
    -> the log index of the entry that was acknowledged (assert_applied_means_present).
    """

    def __init__(self, nodes, table="t", clients=16, pad=64, timeout=3.0, give_up=30.0,
                 raft_index=False):
        self.nodes = list(nodes)
        self.table = table
        self.clients = clients
        self.pad = pad
        self.timeout = timeout
        self.give_up = give_up
        self.lock = threading.Lock()
        self.acked = {}
        self.raft_index = raft_index
        self.acked_index = {}
        self.ack_times = []
        self.sent_acks = []
        self.errors = []  # (time, client, what) of every failed attempt (retried)
        self.anomalies = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._worker, args=(c,), daemon=True)
                        for c in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _attempt(self, node, body, key=None):
        path = "/db/execute?raft_index" if self.raft_index else "/db/execute"
        st, _, data, _ = http_call(node.http_port, "POST", path, body, timeout=self.timeout)
        if st != 200:
            return "HTTP %d %r" % (st, data[:200])
        doc = json_or_none(data)
        try:
            res = doc["results"][0]
        except (TypeError, KeyError, IndexError):
            return "bad body %r" % data[:200]
        if "error" in res:
            return "error %r" % res["error"]
        if self.raft_index:
            idx = res.get("raft_index") or doc.get("raft_index")
            if not isinstance(idx, int):
                return "no raft_index in %r" % data[:200]
            with self.lock:
                self.acked_index[key] = idx
        return None

    def _worker(self, c):
        seq = 0
        target = c % len(self.nodes)
        sql = "INSERT OR IGNORE INTO %s(client, seq, pad) VALUES(?, ?, randomblob(?))" % self.table
        while not self.stopping.is_set():
            body = json.dumps([[sql, c, seq, self.pad]])
            first_try = time.monotonic()
            while True:
                node = self.nodes[target % len(self.nodes)]
                sent = time.monotonic()
                try:
                    problem = self._attempt(node, body, (c, seq))
                except (OSError, http.client.HTTPException) as e:
                    problem = "%s: %r" % (node.name, e)
                if problem is None:
                    now = time.monotonic()
                    with self.lock:
                        self.acked[(c, seq)] = now
                        self.ack_times.append(now)
                        self.sent_acks.append((sent, now))
                    break
                with self.lock:
                    self.errors.append((time.monotonic(), c, "%s: %s" % (node.name, problem)))
                if time.monotonic() - first_try > self.give_up:
                    self.anomalies.append("client %d seq %d not acknowledged within %.0fs; last: %s"
                                          % (c, seq, self.give_up, problem))
                    return
                if self.stopping.is_set():
                    return
                target += 1  # the next node
                time.sleep(0.02)  # pacing between retries, not synchronisation
            seq += 1

    @property
    def count(self):
        with self.lock:
            return len(self.acked)

    def wait_more(self, n, timeout=60):
        target = self.count + n

        def reached():
            if self.anomalies:
                raise StopWaiting("writers failed: %r" % self.anomalies[:5])
            if not any(t.is_alive() for t in self.threads):
                raise StopWaiting("every writer stopped")
            return self.count >= target
        wait_until(reached, timeout, "%d acknowledged writes" % target, interval=0.02)

    def first_ack_after(self, t0):
        """The earliest acknowledgement of a write SENT after t0 (an answer in flight at
        t0 does not count)."""
        with self.lock:
            later = [a for s, a in self.sent_acks if s > t0]
        return min(later) if later else None

    def max_gap(self, t0, t1):
        """The longest time in [t0, t1] without any acknowledgement."""
        with self.lock:
            times = sorted(t for t in self.ack_times if t0 <= t <= t1)
        points = [t0] + times + [t1]
        return max(b - a for a, b in zip(points, points[1:]))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(deadline_seconds(self.give_up + self.timeout + 10))
            assert not t.is_alive(), "a writer thread hangs"
        assert not self.anomalies, self.anomalies[:10]
        with self.lock:
            return dict(self.acked)


def assert_acked_present(node, table, acked, context=""):
    """Every acknowledged (client, seq) is in node's own copy of table, once."""
    rows = node.local_rows("SELECT client, seq FROM %s" % table)
    present = set()
    dups = []
    for c, s in rows:
        if (c, s) in present:
            dups.append((c, s))
        present.add((c, s))
    assert not dups, "%s %s: duplicated rows %r" % (context, node.name, dups[:10])
    missing = sorted(k for k in acked if k not in present)
    assert not missing, "%s %s: %d of %d acknowledged writes missing, e.g. %r" % (
        context, node.name, len(missing), len(acked), missing[:10])
    return len(rows)


def assert_applied_means_present(node, table, writers, context="", only=None):
    """What node says it applied (/status applied_index, read first) is in its database:
    every write of `writers` (a ClusterWriters with raft_index=True) acknowledged at a log
    index at or below it (and in `only`, when given: say, the writes after a restore) is
    in node's own copy of table (read second). Returns (the applied index, how many
    acknowledged writes that covered), or None when the node did not answer /status."""
    r = node.raft()
    applied = r.get("applied_index")
    if applied is None:
        return None
    rows = node.local_rows("SELECT client, seq FROM %s" % table)
    present = {(c, s) for c, s in rows}
    with writers.lock:
        covered = [k for k, i in writers.acked_index.items()
                   if i <= applied and (only is None or k in only)]
    missing = sorted((writers.acked_index[k], k) for k in covered if k not in present)
    assert not missing, (
        "%s %s: /status said applied_index %d, but %d of the %d writes acknowledged at or "
        "below it are not in its database, e.g. (index, (client, seq)) %r"
        % (context, node.name, applied, len(missing), len(covered), missing[:10]))
    return applied, len(covered)


def url_of(node):
    return "http://%s" % node.http_addr


def parse_location(loc):
    u = urllib.parse.urlsplit(loc)
    return u.scheme, u.netloc, u.path, u.query


class ClusterOwner(dict):
    """What conftest's report hook reads (request.node._cairn_servers) to attach the
    logs of every node of these clusters to a failed test."""

    def __init__(self, clusters):
        super().__init__()
        self.clusters = clusters

    def get(self, key, default=None):
        if key == "servers":
            return [n for c in self.clusters for n in c.all_nodes]
        return super().get(key, default)
