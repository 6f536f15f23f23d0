"""A real S3 API for the S3 client's system tests (tests/system/test_s3_client.py).

s3rver (npm, installed by tests/s3/setup.sh, started through tests/s3/s3rver_main.js)
on a free 127.0.0.1 port in a temporary directory, behind tests/s3/sigproxy.py, which
checks every request's SigV4 signature with botocore and injects faults on request.
The C client is driven through build/s3_exercise; what it wrote is read back with
boto3 (Debian's python3-boto3), through the proxy, so botocore's own signatures pass the
same check.

Fixtures (import them into a test module: `from s3util import s3env, s3`):
  s3env  module-scoped S3Env: both processes, stopped at teardown
  s3     per test: the same S3Env with a key prefix of the test's own, faults and the
         proxy's log cleared before and after
"""

import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import BUILD, REPO, deadline_seconds, find_free_ports

S3DIR = REPO / "tests" / "s3"
BUCKET = "cairn-test"
REGION = "us-east-1"
KEY_ID = "CAIRNTESTKEY1"
# A secret with the characters that trip hand-written signers.
SECRET = "cairn/Test+Secret=0123456789abcdefghij"
PYTHON = "/usr/bin/python3"


class ExerciseResult:
    def __init__(self, args, rc, out, err, elapsed, peak_rss_kib):
        self.args = args
        self.rc = rc
        self.stdout = out
        self.stderr = err
        self.elapsed = elapsed
        self.peak_rss_kib = peak_rss_kib
        try:
            self.json = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except ValueError:
            self.json = {}

    @property
    def error(self):
        return self.json.get("error", "")

    def ok(self):
        assert self.rc == 0, "s3_exercise %s failed (exit %d): %s %s" % (
            " ".join(self.args), self.rc, self.stdout, self.stderr)
        return self.json

    def failed(self, code=None):
        assert self.rc == 1, "s3_exercise %s: expected a failure, got exit %d: %s %s" % (
            " ".join(self.args), self.rc, self.stdout, self.stderr)
        assert self.error, self.stdout
        if code is not None:
            assert self.json.get("code") == code, self.json
        return self.error

    def __repr__(self):
        return "<s3_exercise %s -> %d %s %s>" % (" ".join(self.args), self.rc, self.stdout,
                                                 self.stderr)


def _read_port(proc, what, timeout):
    """The port from the process's first stdout line "listening PORT"."""
    end = time.monotonic() + timeout
    line = b""
    while time.monotonic() < end:
        if proc.poll() is not None:
            break
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                break
            if ch == b"\n":
                m = re.match(rb"listening (\d+)", line)
                if m:
                    return int(m.group(1))
                line = b""
            else:
                line += ch
    raise AssertionError("%s did not start (exit %r, output %r)" % (what, proc.poll(), line))


def ensure_s3rver():
    if shutil.which("node") is None:
        pytest.fail("node not found on PATH: the S3 tests need Node.js for s3rver "
                    "(scripts/deps.sh installs it)", pytrace=False)
    try:
        p = subprocess.run(["bash", str(S3DIR / "setup.sh")], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/s3/setup.sh did not finish within 300s", pytrace=False)
    if p.returncode != 0:
        pytest.fail("could not install s3rver (tests/s3/setup.sh exited %d):\n%s%s"
                    % (p.returncode, p.stdout.decode(errors="replace"),
                       p.stderr.decode(errors="replace")), pytrace=False)
    try:
        import boto3  # noqa: F401
        import botocore  # noqa: F401
    except ImportError as e:
        pytest.fail("python3-boto3 and python3-botocore are needed (scripts/deps.sh installs "
                    "them): %s" % e, pytrace=False)


class S3Env:
    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.data = self.base / "s3rver-data"
        self.home = self.base / "home"  # an empty HOME: no ~/.aws of the machine's
        self.procs = []
        self.prefix = "p"
        self.s3rver_port = None
        self.proxy_port = None
        self.exercise_bin = BUILD / "s3_exercise"

    # -- processes --------------------------------------------------------------------

    def start(self):
        ensure_s3rver()
        if not self.exercise_bin.exists():
            pytest.fail("s3_exercise not found at %s (build it, or set CAIRN_BUILD)"
                        % self.exercise_bin, pytrace=False)
        self.data.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        up_port, proxy_port = find_free_ports(2)
        s3rver_log = open(self.base / "s3rver.log", "wb")
        p = subprocess.Popen(
            ["node", "--openssl-legacy-provider", str(S3DIR / "s3rver_main.js"),
             "--directory", str(self.data),
             "--port", str(up_port), "--bucket", BUCKET, "--key", "%s:%s" % (KEY_ID, SECRET)],
            stdout=subprocess.PIPE, stderr=s3rver_log, cwd=str(S3DIR))
        self.procs.append(p)
        self.s3rver_port = _read_port(p, "s3rver", deadline_seconds(30))
        proxy_log = open(self.base / "sigproxy.log", "wb")
        p = subprocess.Popen(
            [PYTHON, str(S3DIR / "sigproxy.py"), "--upstream", "127.0.0.1:%d" % self.s3rver_port,
             "--key", "%s:%s" % (KEY_ID, SECRET), "--region", REGION,
             "--port", str(proxy_port)],
            stdout=subprocess.PIPE, stderr=proxy_log)
        self.procs.append(p)
        self.proxy_port = _read_port(p, "sigproxy", deadline_seconds(30))

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.proxy_port

    @property
    def url(self):
        return "s3://%s/%s" % (BUCKET, self.prefix)

    def key(self, rel):
        """The full key of a key relative to this test's prefix."""
        return "%s/%s" % (self.prefix, rel)

    # -- the C client -------------------------------------------------------------------

    def env(self, extra=None, creds=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HOME"] = str(self.home)
        if creds:
            env["AWS_ACCESS_KEY_ID"] = KEY_ID
            env["AWS_SECRET_ACCESS_KEY"] = SECRET
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, *args, url=None, endpoint=True, options=(), env=None, creds=True,
            timeout=120, watch_rss=False):
        """Run s3_exercise; endpoint True means the proxy's, None none at all."""
        argv = [str(self.exercise_bin)]
        argv += ["--url", url if url is not None else self.url]
        if endpoint is True:
            argv += ["--endpoint", self.endpoint]
        elif endpoint:
            argv += ["--endpoint", endpoint]
        argv += list(options) + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env(env, creds))
        peak = [0]
        done = threading.Event()

        def watch():
            path = "/proc/%d/status" % p.pid
            while not done.is_set():
                try:
                    with open(path) as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                peak[0] = max(peak[0], int(line.split()[1]))
                except OSError:
                    return
                done.wait(0.01)

        t = threading.Thread(target=watch, daemon=True) if watch_rss else None
        if t is not None:
            t.start()
        try:
            out, err = p.communicate(timeout=deadline_seconds(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("s3_exercise %s did not finish in %ss: %s %s"
                                 % (" ".join(argv[1:]), timeout, out, err))
        finally:
            done.set()
            if t is not None:
                t.join()
        return ExerciseResult(argv[1:], p.returncode, out.decode(errors="replace"),
                              err.decode(errors="replace"), time.monotonic() - t0, peak[0])

    # -- boto3, through the proxy ----------------------------------------------------------

    def boto(self):
        import boto3
        from botocore.config import Config
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          max_pool_connections=16))

    def exists(self, rel):
        from botocore.exceptions import ClientError
        try:
            self.boto().head_object(Bucket=BUCKET, Key=self.key(rel))
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def pending_uploads(self):
        r = self.boto().list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix + "/")
        return [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]

    # -- the proxy's control endpoint ------------------------------------------------------

    def _control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def fault(self, **spec):
        """Queue one fault (see tests/s3/sigproxy.py); several with faults([...])."""
        self._control("POST", "/__proxy/faults", spec)

    def faults(self, specs):
        self._control("POST", "/__proxy/faults", specs)

    def clear_faults(self):
        self._control("DELETE", "/__proxy/faults")

    def pending_faults(self):
        return self._control("GET", "/__proxy/faults")

    def log(self):
        return self._control("GET", "/__proxy/log")

    def clear_log(self):
        self._control("DELETE", "/__proxy/log")


@pytest.fixture(scope="module")
def s3env(tmp_path_factory):
    env = S3Env(tmp_path_factory.mktemp("s3"))
    try:
        env.start()
        yield env
    finally:
        env.stop()


@pytest.fixture
def s3(s3env, request):
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    s3env.prefix = "t/" + name
    s3env.clear_faults()
    s3env.clear_log()
    yield s3env
    s3env.clear_faults()
