"""Fixtures for cairn's system tests: real cairnd processes spoken to over HTTP.

Only the Python standard library is used (Debian's python3 + python3-pytest).

Environment:
  CAIRN_BUILD      directory holding the cairnd and cairn binaries (default: <repo>/build)
  CAIRN_SANITIZED  "1" when the binaries are an ASan/UBSan build: deadlines are stretched

Fixtures other test files can reuse (tests/system/test_cli.py among them):
  cairn_build     pathlib.Path of the build directory
  cairnd_bin      pathlib.Path of cairnd (the test fails if it is missing)
  cairn_bin       pathlib.Path of the cairn CLI (the test fails if it is missing)
  server          a fresh, ready single-node cairnd in the test's tmp_path
  server_factory  start(**options) -> Server; every server it made is stopped at teardown
  free_port       function returning a free TCP port on 127.0.0.1
  deadline        function(seconds) -> seconds stretched for sanitizer builds
  wait_for        function(predicate, timeout, what) polling until predicate() is truthy

Every server is stopped at teardown (SIGTERM, wait, SIGKILL on timeout). A server that
exits non-zero on that SIGTERM, or whose stderr holds a sanitizer report, fails the test.
When a test fails, the tail of each of its servers' stdout/stderr logs is attached to the
report.
"""

import atexit
import fcntl
import hashlib
import http.client
import json
import os
import pathlib
import signal
import random
import socket
import struct
import subprocess
import time
import urllib.parse

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("CAIRN_BUILD") or (REPO / "build")).resolve()
SANITIZED = os.environ.get("CAIRN_SANITIZED", "") not in ("", "0")

# Sanitizer builds run several times slower; every deadline is multiplied by this.
SLOWDOWN = 4.0 if SANITIZED else 1.0

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "ERROR: ThreadSanitizer",
    "WARNING: ThreadSanitizer",
)


def deadline_seconds(seconds):
    return seconds * SLOWDOWN


class StopWaiting(AssertionError):
    """Raised by a wait_until predicate when waiting longer cannot help."""


def flip(path, offset, n=16):
    """Corrupts n bytes of the file at offset (each byte XOR 0xFF): every byte changes."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(n))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))

def mount_tmpfs(path, size_mib):
    """Makes the directory `path` and mounts a fresh tmpfs of size_mib MiB on it: a small
    disk a test can fill. Skips the test, saying why, where mounting is not allowed (the
    tests run as root in CI). The caller unmounts it."""
    path = pathlib.Path(path)
    path.mkdir(parents=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mib, "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip("cannot mount a tmpfs for a disk-full test: %r" % (e,))
    if r.returncode != 0:
        pytest.skip("cannot mount a %d MiB tmpfs on %s for a disk-full test (needs root or "
                    "CAP_SYS_ADMIN; running as uid %d): mount exited %d: %s"
                    % (size_mib, path, os.getuid(), r.returncode,
                       " ".join((r.stderr or r.stdout).split())))


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a truthy value, which is returned.

    Raises AssertionError naming `what` when `timeout` seconds (stretched for
    sanitizer builds) pass first; a StopWaiting raised by predicate ends the wait at
    once. Never a fixed sleep: the interval only spaces polls.
    """
    end = time.monotonic() + deadline_seconds(timeout)
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except StopWaiting:
            raise
        except Exception as e:  # noqa: BLE001 - reported below if the deadline passes
            last_exc = e
        if time.monotonic() >= end:
            msg = "timed out after %.1fs waiting for %s" % (deadline_seconds(timeout), what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise AssertionError(msg)
        time.sleep(interval)


# Every port find_free_ports has handed out in this run. The kernel gives a port it just
# closed to the next bind as readily as any other, so two servers made one after the
# other (the nodes of a cluster, none started yet) could get the same one: node 1's
# Raft port came back as node 2's HTTP port, and node 1 failed to start.
_PORTS_GIVEN = set()

# Under pytest-xdist (make system runs the tests in several processes) each process
# takes only the ports p with p % workers == its index: a port one process has handed
# out and not yet bound cannot be handed out by another.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_WORKER = int((os.environ.get("PYTEST_XDIST_WORKER", "gw0") or "gw0").lstrip("gw") or 0)


# Ports are taken below the range the system hands out to outgoing connections (its
# ephemeral ports, /proc/sys/net/ipv4/ip_local_port_range): a port from that range, free
# when it was picked, could be given to any connection opened before the server bound it
# (a node forming a cluster connects to its peers, and peers reconnect to a restarted
# node), and the server then failed to bind it ("Raft start: I/O error", seen twice).
def _port_span():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    end = min(low, 32768)
    return (10000, end) if end > 11000 else None


_SPAN = _port_span()
_CURSOR = [random.Random(os.getpid()).randrange(*_SPAN) if _SPAN else 0]


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def find_free_ports(n):
    """Returns n TCP ports that were free on 127.0.0.1 a moment ago and that no earlier
    call of this run has returned: from below the system's ephemeral ports (see
    _port_span), walking on from where the last call stopped; from the ephemeral ports
    (a bind to port 0) only when there is no such span."""
    ports = []
    if _SPAN is not None:
        lo, hi = _SPAN
        for _ in range(hi - lo):
            port = _CURSOR[0]
            _CURSOR[0] = lo if port + 1 >= hi else port + 1
            if port % _WORKERS == _WORKER and port not in _PORTS_GIVEN and _bindable(port):
                _PORTS_GIVEN.add(port)
                ports.append(port)
                if len(ports) == n:
                    return ports
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)  # held until the end: this call cannot get it twice either
            port = s.getsockname()[1]
            if port % _WORKERS == _WORKER and port not in _PORTS_GIVEN:
                _PORTS_GIVEN.add(port)
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def find_free_port():
    return find_free_ports(1)[0]


def _tail(path, max_bytes=20000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    text = data.decode("utf-8", "replace")
    if size > max_bytes:
        text = "[... %d earlier bytes cut ...]\n" % (size - max_bytes) + text
    return text


class HTTPResult:
    """One HTTP exchange: status, headers (lowercased names), raw body, parsed JSON."""

    def __init__(self, method, path, status, headers, body):
        self.method = method
        self.path = path
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as strict JSON: UTF-8, and no NaN/Infinity tokens."""
        def no_constants(name):
            raise ValueError("non-standard JSON constant %s" % name)

        try:
            return json.loads(self.body.decode("utf-8"), parse_constant=no_constants)
        except ValueError as e:
            raise AssertionError(
                "%s %s -> %d: body is not JSON (%s): %r"
                % (self.method, self.path, self.status, e, self.body[:2000])
            ) from None

    def __iter__(self):
        """Unpacks as (status, headers, body): `status, headers, body = s.raw(...)`."""
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return "<%s %s -> %d %r>" % (self.method, self.path, self.status, self.body[:500])


def _encode_params(params):
    """rqlite-style URL flags: True -> bare key (?transaction), others -> key=value."""
    parts = []
    for k, v in params.items():
        if v is None or v is False:
            continue
        if v is True:
            parts.append(urllib.parse.quote(k))
        else:
            parts.append("%s=%s" % (urllib.parse.quote(k), urllib.parse.quote(str(v), safe="")))
    return "&".join(parts)


class Server:
    """A cairnd process with its data directory and logs under `workdir`.

    The HTTP and Raft ports are chosen once (free on 127.0.0.1) and kept across
    restarts, so node.json stays valid.
    """

    _counter = 0

    def __init__(self, workdir, data_dir=None, extra_args=(), node_id=None, name=None,
                 ready_timeout=20.0):
        Server._counter += 1
        self.name = name or "cairnd-%d" % Server._counter
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = pathlib.Path(data_dir) if data_dir else self.workdir / "data"
        self.http_port, self.raft_port = find_free_ports(2)
        self.extra_args = [str(a) for a in extra_args]
        self.node_id = node_id
        self.ready_timeout = ready_timeout
        self.proc = None
        self.starts = 0
        self.stdout_path = self.workdir / ("%s.stdout.log" % self.name)
        self.stderr_path = self.workdir / ("%s.stderr.log" % self.name)
        self.exit_codes = []  # exit status of each stopped incarnation, in order

    # ---- process control -------------------------------------------------

    @property
    def binary(self):
        return BUILD / "cairnd"

    @property
    def http_addr(self):
        return "127.0.0.1:%d" % self.http_port

    @property
    def raft_addr(self):
        return "127.0.0.1:%d" % self.raft_port

    @property
    def url(self):
        return "http://%s" % self.http_addr

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        argv = [
            str(self.binary),
            "--data-dir", str(self.data_dir),
            "--http-addr", self.http_addr,
            "--raft-addr", self.raft_addr,
        ]
        if self.node_id is not None:
            argv += ["--node-id", str(self.node_id)]
        return argv + self.extra_args

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True):
        assert not self.running(), "%s is already running" % self.name
        if not self.binary.exists():
            pytest.fail("cairnd binary not found at %s (set CAIRN_BUILD)" % self.binary)
        self.starts += 1
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            banner = ("\n==== start #%d: %s ====\n" % (self.starts, " ".join(self.argv()))).encode()
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=str(self.workdir)
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=None):
        timeout = self.ready_timeout if timeout is None else timeout

        def ready():
            if self.proc.poll() is not None:
                raise StopWaiting("%s exited with status %s before becoming ready"
                                  % (self.name, self.proc.returncode))
            try:
                r = self.raw("GET", "/readyz", timeout=2)
            except OSError:
                return False
            return r.status == 200

        try:
            wait_until(ready, timeout, "%s to answer 200 on /readyz" % self.name, interval=0.02)
        except AssertionError as e:
            raise AssertionError("%s\nstderr of %s:\n%s" % (e, self.name, self.stderr_tail())) from None

    def wait_exit(self, timeout=15.0):
        """Waits for the process to exit; returns its status (AssertionError on timeout)."""
        try:
            rc = self.proc.wait(timeout=deadline_seconds(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError("%s (pid %d) did not exit within %.1fs"
                                 % (self.name, self.proc.pid, deadline_seconds(timeout))) from None
        self.exit_codes.append(rc)
        return rc

    def stop(self, timeout=15.0):
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status.

        Raises AssertionError if SIGKILL was needed (a clean shutdown must not hang).
        """
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except AssertionError:
            self.proc.kill()
            self.proc.wait()
            self.exit_codes.append(self.proc.returncode)
            raise AssertionError("%s did not exit within %.1fs of SIGTERM; killed"
                                 % (self.name, deadline_seconds(timeout))) from None

    def kill(self, sig=signal.SIGKILL, wait=True):
        """Sends `sig`; with wait, waits for the exit and returns the status."""
        assert self.running(), "%s is not running" % self.name
        self.proc.send_signal(sig)
        if wait:
            return self.wait_exit()
        return None

    def restart(self, sig=signal.SIGTERM, extra_args=None, wait=True):
        """Stops (SIGTERM, or kill with `sig`), then starts again on the same data dir."""
        if self.running():
            if sig == signal.SIGTERM:
                rc = self.stop()
                assert rc == 0, "%s exited with %s on SIGTERM; stderr:\n%s" % (
                    self.name, rc, self.stderr_tail())
            else:
                self.kill(sig)
        if extra_args is not None:
            self.extra_args = [str(a) for a in extra_args]
        return self.start(wait=wait)

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, max_bytes=20000):
        return _tail(self.stderr_path, max_bytes)

    def stdout_tail(self, max_bytes=20000):
        return _tail(self.stdout_path, max_bytes)

    def sanitizer_reports(self):
        text = self.stderr_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    # ---- HTTP ------------------------------------------------------------

    def raw(self, method, path, body=None, headers=None, timeout=30.0):
        """One request on a new connection. Returns an HTTPResult, which unpacks as
        (status, headers, body) and also has .status, .headers, .body, .text, .json().

        `body` may be bytes, str, or any other value (sent as JSON).
        """
        if body is not None and not isinstance(body, (bytes, bytearray)):
            if isinstance(body, str):
                body = body.encode("utf-8")
            else:
                body = json.dumps(body).encode("utf-8")
        hdrs = {}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port,
                                          timeout=deadline_seconds(timeout))
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            rh = {k.lower(): v for k, v in resp.getheaders()}
            return HTTPResult(method, path, resp.status, rh, data)
        finally:
            conn.close()

    def post(self, path, stmts, **params):
        qs = _encode_params(params)
        return self.raw("POST", path + ("?" + qs if qs else ""), stmts)

    def _ok_json(self, r):
        assert r.status == 200, "%s %s -> HTTP %d, body %r" % (r.method, r.path, r.status, r.body[:2000])
        return r.json()

    def execute(self, stmts, **params):
        """POST /db/execute; `stmts` is the JSON array (a lone str is wrapped). Expects 200."""
        if isinstance(stmts, str):
            stmts = [stmts]
        return self._ok_json(self.post("/db/execute", stmts, **params))

    def query(self, stmts, **params):
        """A lone str -> GET /db/query?q=...; a list -> POST /db/query. Expects 200."""
        if isinstance(stmts, str):
            qs = _encode_params(dict(params, q=stmts))
            return self._ok_json(self.raw("GET", "/db/query?" + qs))
        return self._ok_json(self.post("/db/query", stmts, **params))

    def request(self, stmts, **params):
        """POST /db/request (unified endpoint). Expects 200."""
        if isinstance(stmts, str):
            stmts = [stmts]
        return self._ok_json(self.post("/db/request", stmts, **params))

    def get_json(self, path):
        return self._ok_json(self.raw("GET", path))

    def rows(self, sql, *args, **params):
        """Runs one query and returns its `values` (a list of rows; [] when none)."""
        body = self.query([[sql] + list(args)] if args else sql, **params)
        res = body["results"]
        assert len(res) == 1, body
        assert "error" not in res[0], "query %r failed: %r" % (sql, res[0])
        return res[0].get("values", [])

    def scalar(self, sql, *args, **params):
        rows = self.rows(sql, *args, **params)
        assert len(rows) == 1 and len(rows[0]) == 1, "expected one value from %r, got %r" % (sql, rows)
        return rows[0][0]

    def __repr__(self):
        return "<Server %s pid=%s %s>" % (self.name, self.pid, self.url)


def assert_exec_ok(body, n=None):
    """Checks an execute response: every result is free of errors; returns the results."""
    assert isinstance(body, dict) and isinstance(body.get("results"), list), body
    results = body["results"]
    if n is not None:
        assert len(results) == n, "expected %d results, got %r" % (n, body)
    for r in results:
        assert "error" not in r, "unexpected error in %r" % (body,)
    return results


# ---- pytest plumbing --------------------------------------------------------

_LIVE = []  # every Server not yet torn down


@atexit.register
def _kill_leftovers():
    """Last resort (e.g. an interrupted run): no cairnd outlives the test session."""
    for s in list(_LIVE):
        if s.running():
            s.proc.kill()
            s.proc.wait()


# SQLite's lock bytes (os.h): a connection's SHARED lock is a read lock on one byte of
# this range; struct flock on Linux x86-64/arm64 is type, whence, start, len, pid.
SQLITE_SHARED_FIRST = 0x40000000 + 2
SQLITE_SHARED_SIZE = 510
_FLOCK = "hhqqi"


def sqlite_lock_holder(path):
    """The pid of a process holding a lock on SQLite's shared range of path (that a write
    lock there would meet), None when none does. F_GETLK never reports the caller's own."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        want = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, SQLITE_SHARED_FIRST,
                           SQLITE_SHARED_SIZE, 0)
        got = fcntl.fcntl(fd, fcntl.F_GETLK, want)
        kind, _, _, _, pid = struct.unpack(_FLOCK, got[:struct.calcsize(_FLOCK)])
        return None if kind == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)


def lock_problems(server):
    """A running cairnd holds SQLite's lock on its db.sqlite for as long as it runs: with
    it gone, another process's sqlite3 closing the file would checkpoint the WAL into it
    unsealed and delete the WAL under the node (docs/OPERATIONS.md, "Reading db.sqlite
    from another process"). Checked for every node at every test's end."""
    db = server.data_dir / "db.sqlite"
    if not server.running() or not db.exists():
        return []
    try:
        holder = sqlite_lock_holder(db)
    except OSError:
        return []  # removed meanwhile
    if holder == server.pid:
        return []
    return ["%s (pid %d) holds no SQLite lock on %s (holder: %r): another process's sqlite3 "
            "closing the file would checkpoint it and delete its WAL"
            % (server.name, server.pid, db, holder)]


def _shutdown(server):
    """Stops a server at teardown; returns a list of problems to report."""
    problems = lock_problems(server)
    if server.running():
        try:
            rc = server.stop()
        except AssertionError as e:
            problems.append(str(e))
        else:
            if rc != 0:
                problems.append("%s exited with status %s on SIGTERM at teardown" % (server.name, rc))
    reports = server.sanitizer_reports()
    if reports:
        problems.append("%s: sanitizer report in stderr (%s)" % (server.name, ", ".join(reports)))
    if problems:
        problems.append("stderr of %s:\n%s" % (server.name, server.stderr_tail()))
    return problems


class ServerFactory:
    def __init__(self, base_dir, owner=None):
        self.base_dir = pathlib.Path(base_dir)
        self.servers = []
        self.owner = owner

    def __call__(self, extra_args=(), data_dir=None, node_id=None, name=None, start=True,
                 ready_timeout=20.0):
        idx = len(self.servers) + 1
        workdir = self.base_dir / ("server%d" % idx)
        s = Server(workdir, data_dir=data_dir, extra_args=extra_args, node_id=node_id, name=name,
                   ready_timeout=ready_timeout)
        self.servers.append(s)
        _LIVE.append(s)
        if self.owner is not None:
            self.owner.setdefault("servers", []).append(s)
        if start:
            s.start()
        return s

    def teardown(self):
        problems = []
        for s in self.servers:
            problems += _shutdown(s)
            if s in _LIVE:
                _LIVE.remove(s)
        return problems


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        seen = set()
        servers = list(getattr(item, "_cairn_servers", {}).get("servers", []))
        for v in getattr(item, "funcargs", {}).values():
            if isinstance(v, Server):
                servers.append(v)
            elif isinstance(v, ServerFactory):
                servers += v.servers
        for s in servers:
            if id(s) in seen:
                continue
            seen.add(id(s))
            rep.sections.append(("cairnd %s stderr (tail)" % s.name, s.stderr_tail()))
            out = s.stdout_tail(8000).strip()
            if out:
                rep.sections.append(("cairnd %s stdout (tail)" % s.name, out))


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: quick, broad tests also run against the sanitizer build")


@pytest.fixture(scope="session")
def cairn_build():
    return BUILD


@pytest.fixture(scope="session")
def cairnd_bin():
    p = BUILD / "cairnd"
    if not p.exists():
        pytest.fail("cairnd binary not found at %s (build it, or set CAIRN_BUILD)" % p)
    return p


@pytest.fixture(scope="session")
def cairn_bin():
    p = BUILD / "cairn"
    if not p.exists():
        pytest.fail("cairn binary not found at %s (build it, or set CAIRN_BUILD)" % p)
    return p


@pytest.fixture(scope="session")
def sanitized():
    return SANITIZED


@pytest.fixture
def free_port():
    return find_free_port


@pytest.fixture
def deadline():
    return deadline_seconds


@pytest.fixture
def wait_for():
    return wait_until


@pytest.fixture
def server_factory(request, tmp_path, cairnd_bin):
    owner = {}
    request.node._cairn_servers = owner
    factory = ServerFactory(tmp_path, owner)
    yield factory
    problems = factory.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(server_factory):
    """A fresh single-node cairnd, ready, in this test's tmp_path."""
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(request, tmp_path_factory, cairnd_bin):
    """One cairnd shared by a whole test module (tests use their own table names)."""
    base = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    factory = ServerFactory(base)
    s = factory()
    yield s
    problems = factory.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def table(request):
    """A table name unique to this test, for tests sharing a server."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.originalname)[:40]
    return "t_%s_%s" % (base, hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8])


@pytest.fixture
def make_cluster(request, tmp_path, cairnd_bin):
    """make(n=3, mode="expect", extra_args=(), name=None) -> a started Cluster
    (clusterutil) in the test's directory; every process of every cluster made is stopped
    at teardown, and a problem found then (a node that exited badly) fails the test."""
    from clusterutil import Cluster, ClusterOwner
    clusters = []
    request.node._cairn_servers = ClusterOwner(clusters)

    def make(n=3, mode="expect", extra_args=(), name=None):
        c = Cluster(tmp_path, n=n, mode=mode, extra_args=extra_args,
                    name=name or "r%d" % (len(clusters) + 1))
        clusters.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        problems = []
        for c in clusters:
            problems += c.teardown()
        if problems:
            pytest.fail("\n".join(problems) + "\n" + "\n".join(c.logs() for c in clusters),
                        pytrace=False)
