"""Helpers for cairnd's backup system tests (tests/system/test_backup.py).

SQLite files are read with Python's sqlite3; the server is spoken to through
conftest.Server; writer threads keep one HTTP/1.1 connection each.

Repositories of two kinds (issue 16): a directory, or an S3 prefix on the module's
s3rver (s3util.S3Env, behind the SigV4-checking proxy). A test that takes the `repo`
fixture runs once on each ("dir" and "s3"); `repo` is a Repo (see below): the cairnd
and cairn arguments and environment for it, and inspection of what it holds through
the filesystem or boto3. Import the fixtures with
`from backuputil import repo, repo_kind` and `from s3util import s3env`.

  repo_kind       "dir" or "s3"; parametrised over both. A test overrides it with
                  @repo_kinds(smoke=True) (the "dir" case is a smoke test: the sanitizer
                  run has no S3 server), @repo_kinds(dir_only="why") (the "s3" case is
                  skipped, saying why the test is about a local directory),
                  @repo_kinds(s3_defect="what") (the "s3" case is a strict xfail: a known
                  cairn defect), or @repo_kinds_for(argnames, cases, s3=[indexes]) (a
                  family of cases, a few of them on S3)
  repo            a fresh, empty Repo of that kind for the test; for "s3" the test's
                  environment (os.environ, so every cairnd and cairn it starts) carries
                  the credentials, the region and the endpoint

A module-scoped fixture makes its own with make_repo(kind, request, path, name) and
starts its servers inside `with repo.environ():`.
"""

import contextlib
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import re
import sqlite3
import subprocess
import threading

import pytest

from conftest import StopWaiting, deadline_seconds, wait_until

ENTRY_KEYS = {
    "id", "type", "parent_id", "created", "created_ms", "raft_index", "raft_term",
    "page_size", "page_count", "pages", "size_bytes", "path", "duration_ms", "verified",
    "verified_at", "digest", "parent_digest", "source", "history", "compression",
}
BACKUP_COLUMNS = ["operation", "backup_id", "type", "parent_id", "pages", "size_bytes", "path",
                  "duration_ms", "raft_index", "repository"]
CATALOG_COLUMNS = ["id", "type", "parent_id", "created", "raft_index", "page_count", "pages",
                   "size_bytes", "path", "duration_ms", "verified"]
UNKNOWN_ID = "20990101T000000000Z-0001-dead"


# ---------------------------------------------------------------------------
# SQL over HTTP


def only_result(body):
    assert isinstance(body, dict), body
    res = body.get("results")
    assert isinstance(res, list) and len(res) == 1, body
    return res[0]


def sql_result(s, sql, endpoint="/db/execute", **params):
    """Sends one statement; expects HTTP 200 and no error. Returns its result object."""
    r = s.post(endpoint, [sql], **params)
    assert r.status == 200, "%r on %s -> HTTP %d %r" % (sql, endpoint, r.status, r.body[:2000])
    res = only_result(r.json())
    assert "error" not in res, "%r on %s failed: %r" % (sql, endpoint, res)
    return res


def sql_row(s, sql, endpoint="/db/execute", columns=None, **params):
    """Sends one statement answered by one row; returns the row as a dict."""
    res = sql_result(s, sql, endpoint, **params)
    return row_dict(res, columns, what=sql)


def row_dict(res, columns=None, what=""):
    assert isinstance(res.get("columns"), list), "%s: no columns in %r" % (what, res)
    if columns is not None:
        assert res["columns"] == columns, "%s: columns %r, want %r" % (what, res["columns"], columns)
    types = res.get("types")
    assert isinstance(types, list) and len(types) == len(res["columns"]), "%s: types %r" % (what, res)
    values = res.get("values")
    assert isinstance(values, list) and len(values) == 1, "%s: want one row, got %r" % (what, res)
    return dict(zip(res["columns"], values[0]))


def rows_dicts(res):
    return [dict(zip(res["columns"], v)) for v in res.get("values", [])]


def request_errors(r, statuses=(400, 404, 409, 422)):
    """The error messages of a refused request: the JSON body of an error status among
    `statuses`, or the per-statement errors of a 200. Empty when nothing was refused."""
    if r.status in statuses:
        body = r.json()
        assert isinstance(body.get("error"), str) and body["error"], r
        return [body["error"]]
    assert r.status == 200, "unexpected HTTP %d: %r" % (r.status, r.body[:2000])
    res = r.json().get("results")
    assert isinstance(res, list), r
    return [x["error"] for x in res if isinstance(x, dict) and "error" in x]


def sql_error(s, stmts, endpoint="/db/execute", statuses=(400, 404, 409, 422), **params):
    """Sends statements that must be refused; returns the error text (all messages).
    The refusal is either per-statement errors in a 200 or an error status among
    `statuses` with a JSON {"error"}."""
    if isinstance(stmts, str):
        stmts = [stmts]
    r = s.post(endpoint, stmts, **params)
    errors = request_errors(r, statuses)
    assert errors, "%r on %s was not refused: %r" % (stmts, endpoint, r.body[:2000])
    for e in errors:
        assert isinstance(e, str) and e.strip(), r
    return " | ".join(errors)


def sql_quote(text):
    return "'" + text.replace("'", "''") + "'"


def backup_sql(s, kind=None, to=None, endpoint="/db/execute", fresh=False):
    sql = "BACKUP DATABASE"
    if kind:
        sql += " " + kind.upper()
    if to is not None:
        sql += " TO " + sql_quote(str(to))
    return check_backup_row(sql_row(s, sql, endpoint, columns=BACKUP_COLUMNS), kind or "full", fresh)


def check_backup_row(row, kind, fresh=False):
    """Checks a BACKUP DATABASE result row. fresh: the database has had no write yet, so
    the image's index may be 0."""
    assert row["operation"] == "backup", row
    assert row["type"] == kind.lower(), row
    assert isinstance(row["backup_id"], str) and row["backup_id"], row
    for k in ("pages", "size_bytes", "duration_ms", "raft_index"):
        assert isinstance(row[k], int) and row[k] >= 0, (k, row)
    assert fresh or row["raft_index"] > 0, row
    if kind.lower() == "full":
        assert row["parent_id"] is None, row
        assert row["pages"] > 0, row
    else:
        assert isinstance(row["parent_id"], str) and row["parent_id"], row
    assert os.path.basename(row["path"]) == row["backup_id"] + ".cbk", row
    assert object_size(row["path"]) == row["size_bytes"], row
    return row


def catalog(s, endpoint="/db/query"):
    if endpoint == "GET":
        body = s.query("SELECT * FROM cairn_backups")
        res = only_result(body)
        assert "error" not in res, res
    else:
        res = sql_result(s, "SELECT * FROM cairn_backups", endpoint)
    # The specified columns, in order; cairnd adds "error" (set for a file it cannot read).
    cols = res.get("columns")
    assert isinstance(cols, list) and cols[:len(CATALOG_COLUMNS)] == CATALOG_COLUMNS, res
    assert set(cols[len(CATALOG_COLUMNS):]) <= {"error", "repository"}, res
    return rows_dicts(res)


def check_entry(e):
    """Checks the shape of a catalog entry of the admin API; returns it."""
    assert isinstance(e, dict), e
    assert ENTRY_KEYS <= set(e), "missing keys %s in %r" % (ENTRY_KEYS - set(e), e)
    assert e["type"] in ("full", "incremental", "differential"), e
    assert isinstance(e["id"], str) and e["id"] and "/" not in e["id"], e
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", e["created"]), e["created"]
    for k in ("created_ms", "raft_index", "raft_term", "page_size", "page_count", "pages",
              "size_bytes", "duration_ms"):
        assert isinstance(e[k], int) and not isinstance(e[k], bool) and e[k] >= 0, (k, e)
    assert e["page_size"] in [1 << i for i in range(9, 17)], e
    created = datetime.datetime.strptime(e["created"][:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert abs(created * 1000 - e["created_ms"]) < 1000, (e["created"], e["created_ms"])
    assert e["verified"] in ("unverified", "verified", "failed"), e
    if e["verified"] == "unverified":
        assert e["verified_at"] is None, e
    else:
        assert isinstance(e["verified_at"], str) and e["verified_at"], e
    assert re.fullmatch(r"[0-9a-f]{32}", e["digest"]), e["digest"]
    # The history: the cluster id of the server that took it; none for a plain file.
    assert e["history"] is None or re.fullmatch(r"[0-9a-f]{32}", e["history"]), e
    assert e["compression"] in ("lz4", "zstd"), e
    assert isinstance(e["source"], str) and e["source"], e
    assert os.path.basename(e["path"]) == e["id"] + ".cbk", e
    if e["type"] == "full":
        assert e["parent_id"] is None and e["parent_digest"] is None, e
        assert e["pages"] == e["page_count"], e
    else:
        assert isinstance(e["parent_id"], str) and e["parent_id"], e
        assert re.fullmatch(r"[0-9a-f]{32}", e["parent_digest"]), e
        assert e["pages"] <= e["page_count"], e
    return e


def admin_backup(s, body=None, timeout=120):
    r = s.raw("POST", "/admin/backup", body if body is not None else {}, timeout=timeout)
    assert r.status == 200, "POST /admin/backup %r -> %r" % (body, r)
    doc = r.json()
    assert set(doc) == {"backup"}, doc
    return check_entry(doc["backup"])


def admin_entry(s, bid):
    doc = s.get_json("/admin/backups/%s" % bid)
    assert set(doc) == {"backup"}, doc
    return check_entry(doc["backup"])


def admin_list(s):
    doc = s.get_json("/admin/backups")
    assert isinstance(doc.get("backups"), list), doc
    return [check_entry(e) for e in doc["backups"]]


def find_key(doc, key):
    """The value of the first `key` found in a JSON document, depth first; None if none."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for v in doc.values():
            found = find_key(v, key)
            if found is not None:
                return found
    elif isinstance(doc, list):
        for v in doc:
            found = find_key(v, key)
            if found is not None:
                return found
    return None


def status_branches(s):
    st = s.get_json("/status")
    branches = st.get("branches", find_key(st, "branches"))
    assert isinstance(branches, list), "no list under \"branches\" in /status: %r" % st
    for b in branches:
        assert isinstance(b, dict) and isinstance(b.get("name"), str), branches
    return sorted(b["name"] for b in branches)


def branch_rows(s, branch, sql, method="GET"):
    """A query on a branch; returns its values."""
    if method == "GET":
        body = s.query(sql, branch=branch)
    else:
        body = s.query([sql], branch=branch)
    res = only_result(body)
    assert "error" not in res, "%r on branch %s: %r" % (sql, branch, res)
    return res.get("values", [])


def live_rows(s, sql, level=None):
    return s.rows(sql, **({"level": level} if level else {}))


# ---------------------------------------------------------------------------
# SQLite files


def file_rows(path, sql):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [list(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def integrity(path):
    return file_rows(path, "PRAGMA integrity_check")


def dump(path, skip_meta=False):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        lines = list(con.iterdump())
    finally:
        con.close()
    if skip_meta:
        lines = [ln for ln in lines if "_cairn_meta" not in ln]
    return lines


def applied_index(path):
    rows = file_rows(path, "SELECT value FROM _cairn_meta WHERE key = 'applied_index'")
    assert len(rows) == 1, rows
    return rows[0][0]


# Bytes of page 1 that differ between two copies of the same content: the read/write
# format versions (WAL or rollback journal), the change counter, and the two fields that
# record which SQLite wrote the file last.
_HEADER_BOOKKEEPING = [(18, 20), (24, 28), (92, 100)]


def page_hashes(path, ignore_tail=0):
    """sha256 of each page, with page 1's bookkeeping fields zeroed and, with
    ignore_tail, each page's last ignore_tail bytes (the reserved bytes where cairn keeps
    page checksums, which cover those bookkeeping fields too) zeroed."""
    data = open(path, "rb").read()
    assert data[:16] == b"SQLite format 3\x00", "%s is not a SQLite file" % path
    ps = int.from_bytes(data[16:18], "big")
    ps = 65536 if ps == 1 else ps
    assert len(data) % ps == 0, "%s: size %d is not a multiple of the page size %d" % (path, len(data), ps)
    header_pages = int.from_bytes(data[28:32], "big")
    assert header_pages == len(data) // ps, "%s: header says %d pages, file has %d" % (
        path, header_pages, len(data) // ps)
    out = []
    for off in range(0, len(data), ps):
        page = bytearray(data[off:off + ps])
        if off == 0:
            for a, b in _HEADER_BOOKKEEPING:
                page[a:b] = bytes(b - a)
        if ignore_tail:
            page[ps - ignore_tail:] = bytes(ignore_tail)
        out.append(hashlib.sha256(bytes(page)).hexdigest())
    return out


def assert_same_pages(a, b):
    # Page checksums (the reserved bytes, when the file has 8) cover page 1's
    # bookkeeping fields, which page_hashes masks: they are masked with them.
    with open(a, "rb") as f:
        reserve = f.read(100)[20]
    ha, hb = page_hashes(a, ignore_tail=reserve), page_hashes(b, ignore_tail=reserve)
    differ = [i + 1 for i in range(min(len(ha), len(hb))) if ha[i] != hb[i]]
    assert len(ha) == len(hb) and not differ, (
        "%s (%d pages) and %s (%d pages) differ; differing pages: %r"
        % (a, len(ha), b, len(hb), differ[:30]))


def cli_restore(cairn_bin, repo, bid, out, timeout=120, keep_internal=False):
    """`cairn restore --repo REPO --out OUT ID` (the standalone restore); with
    keep_internal, the exact page image (cairn's _cairn_meta kept). REPO a path or a
    Repo (its arguments and environment)."""
    if isinstance(repo, Repo):
        args, env = repo.cli_args(), repo.env()
    else:
        args, env = ["--repo", str(repo)], dict(os.environ)
    env.pop("CAIRN_HOST", None)
    r = subprocess.run([str(cairn_bin), "restore"] + args + ["--out", str(out), bid] +
                       (["--keep-internal"] if keep_internal else []),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                       timeout=deadline_seconds(timeout))
    assert r.returncode == 0, "cairn restore %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        bid, r.returncode, r.stdout, r.stderr)
    return out


def proc_status(pid):
    """/proc/PID/status as {field: kB} for the Vm* lines."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.startswith("Vm"):
                out[k] = int(v.split()[0])
    return out


# ---------------------------------------------------------------------------
# concurrent writers


class Writers:
    """`clients` threads, each inserting rows (client, seq) into `table` one request at a
    time on its own keep-alive connection, with ?raft_index. acked maps (client, seq) to
    the log index the server answered. Any failure is an anomaly and ends that thread."""

    INSERT = "INSERT INTO %s(client, seq, pad) VALUES(?, ?, randomblob(?))"

    def __init__(self, server, table="t", clients=16, pad=300):
        self.s = server
        self.table = table
        self.clients = clients
        self.pad = pad
        self.lock = threading.Lock()
        self.acked = {}
        self.count = 0
        self.anomalies = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._worker, args=(c,), daemon=True)
                        for c in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _worker(self, c):
        conn = http.client.HTTPConnection("127.0.0.1", self.s.http_port, timeout=deadline_seconds(60))
        seq = 0
        try:
            while not self.stopping.is_set():
                body = json.dumps([[self.INSERT % self.table, c, seq, self.pad]])
                try:
                    conn.request("POST", "/db/execute?raft_index", body=body,
                                  headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    self.anomalies.append("client %d seq %d: %r" % (c, seq, e))
                    return
                if resp.status != 200:
                    self.anomalies.append("client %d seq %d: HTTP %d %r" % (c, seq, resp.status, data[:300]))
                    return
                try:
                    doc = json.loads(data)
                    res = doc["results"][0]
                except (ValueError, KeyError, IndexError):
                    self.anomalies.append("client %d seq %d: bad body %r" % (c, seq, data[:300]))
                    return
                idx = doc.get("raft_index", res.get("raft_index"))
                if "error" in res or res.get("rows_affected") != 1 or not isinstance(idx, int) or idx <= 0:
                    self.anomalies.append("client %d seq %d: %r" % (c, seq, doc))
                    return
                with self.lock:
                    self.acked[(c, seq)] = idx
                    self.count += 1
                seq += 1
        finally:
            conn.close()

    def acked_now(self):
        with self.lock:
            return dict(self.acked)

    def wait_more(self, n, timeout=60):
        """Waits until n more writes than now are acknowledged."""
        with self.lock:
            target = self.count + n

        def reached():
            if self.anomalies:
                raise StopWaiting("writers failed: %r" % self.anomalies[:5])
            if not any(t.is_alive() for t in self.threads):
                raise StopWaiting("every writer stopped")
            return self.count >= target

        wait_until(reached, timeout, "%d acknowledged writes" % target)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(deadline_seconds(60))
            assert not t.is_alive(), "a writer thread hangs"
        assert not self.anomalies, self.anomalies[:10]
        return self.acked_now()


# ---------------------------------------------------------------------------
# repositories: a directory or an S3 prefix (issue 16)

REPO_KINDS = ("dir", "s3")

# Every Repo a test has open, by URL: an entry's path names an object of one of them.
_OPEN = {}


def object_size(path):
    """The size of the object a catalog entry's path names: a file, or an object of a
    Repo the test has open (an s3:// URL)."""
    for url, r in _OPEN.items():
        if path.startswith(url + "/"):
            return r.size(r.name_of(path))
    assert "://" not in path, ("%s is in no repository this test opened (open it as a "
                               "backuputil Repo: the repo fixture or make_repo)" % path)
    return os.path.getsize(path)


class Repo:
    """A backup repository of a test. str(repo) is what cairnd's --backup-dir and
    cairn's --repo take: a directory path or s3://BUCKET/PREFIX. Objects are named as
    cairn names them (`<id>.cbk`, `<id>.verified`); the inspection methods read and
    change them as a user of the storage could (the filesystem, or boto3 through the
    SigV4 proxy), so that a test damages, cuts or removes a backup the same way on
    both kinds."""

    kind = None
    url = None

    def __str__(self):
        return self.url

    def __repr__(self):
        return "<%s repository %s>" % (self.kind, self.url)

    # -- how cairnd and cairn are told about it ----------------------------------------

    def server_args(self):
        """cairnd's arguments for a node whose --backup-dir this is."""
        return ["--backup-dir", self.url]

    def cli_args(self):
        """cairn's arguments naming this repository (`cairn restore` + these + ...)."""
        return ["--repo", self.url]

    def env_changes(self):
        """Environment variables a process needs to reach it: name -> value, or None
        for a variable that must be unset."""
        return {}

    def env(self, base=None):
        """A copy of `base` (default os.environ) with env_changes() applied."""
        env = dict(os.environ if base is None else base)
        for k, v in self.env_changes().items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    @contextlib.contextmanager
    def environ(self):
        """os.environ with env_changes() while the block runs (for a server a
        module-scoped fixture starts: cairnd keeps the environment it started with)."""
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env())
        try:
            yield self
        finally:
            os.environ.clear()
            os.environ.update(saved)

    # -- what it holds ---------------------------------------------------------------------

    def name_of(self, path):
        """The object name of a catalog entry's path (asserting it is in here)."""
        raise NotImplementedError

    def names(self):
        """Every object's name, sorted."""
        raise NotImplementedError

    def backups(self):
        """The names of the backup objects (`<id>.cbk`), sorted."""
        return [n for n in self.names() if n.endswith(".cbk")]

    def leftovers(self):
        """What is neither a backup nor its verification record: temporary files,
        anything else; for S3 also multipart uploads never completed nor aborted."""
        return [n for n in self.names() if not n.endswith((".cbk", ".verified"))]

    def read(self, name):
        raise NotImplementedError

    def write(self, name, data):
        """Replaces (or creates) object `name` with `data`."""
        raise NotImplementedError

    def size(self, name):
        raise NotImplementedError

    def exists(self, name):
        raise NotImplementedError

    def delete(self, name):
        raise NotImplementedError

    def damage(self, name, offset, n=16):
        """Corrupts n bytes of object `name` at offset (each byte XOR 0xFF)."""
        data = bytearray(self.read(name))
        assert 0 <= offset and offset + n <= len(data), (name, offset, n, len(data))
        for i in range(offset, offset + n):
            data[i] ^= 0xFF
        self.write(name, bytes(data))

    def truncate(self, name, size):
        """Cuts object `name` to its first `size` bytes."""
        data = self.read(name)
        assert size <= len(data), (name, size, len(data))
        self.write(name, data[:size])

    def close(self):
        _OPEN.pop(self.url, None)


class DirRepo(Repo):
    kind = "dir"

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.url = str(self.path)

    def name_of(self, path):
        p = pathlib.Path(path)
        assert p.parent.resolve() == self.path.resolve(), "%s is not in %s" % (path, self.path)
        return p.name

    def names(self):
        if not self.path.exists():
            return []
        return sorted(p.name for p in self.path.iterdir())

    def _file(self, name):
        return self.path / name

    def read(self, name):
        return self._file(name).read_bytes()

    def write(self, name, data):
        self._file(name).write_bytes(data)

    def size(self, name):
        return self._file(name).stat().st_size

    def exists(self, name):
        return self._file(name).exists()

    def delete(self, name):
        self._file(name).unlink()

    def damage(self, name, offset, n=16):
        with open(self._file(name), "r+b") as f:  # in place: the same inode
            f.seek(offset)
            data = f.read(n)
            assert len(data) == n, (name, offset, n)
            f.seek(offset)
            f.write(bytes(b ^ 0xFF for b in data))

    def truncate(self, name, size):
        os.truncate(self._file(name), size)


class S3Repo(Repo):
    """s3://BUCKET/PREFIX on the module's s3rver (an s3util.S3Env). The prefix is the
    Repo's own (not the S3Env's, which the `s3` fixture moves for each test)."""

    kind = "s3"

    def __init__(self, s3env, prefix):
        from s3util import BUCKET
        self.s3env = s3env
        self.bucket = BUCKET
        self.prefix = prefix
        self.url = "s3://%s/%s" % (BUCKET, prefix)
        self._client = None
        _OPEN[self.url] = self

    @property
    def endpoint(self):
        return self.s3env.endpoint

    def server_args(self):
        return ["--backup-dir", self.url, "--s3-endpoint", self.endpoint]

    def cli_args(self):
        return ["--repo", self.url, "--s3-endpoint", self.endpoint]

    def env_changes(self):
        from s3util import KEY_ID, REGION, SECRET
        # None of the machine's AWS settings (a profile, a token): the test server's.
        changes = {k: None for k in os.environ if k.startswith("AWS_")}
        changes.update({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_REGION": REGION, "AWS_ENDPOINT_URL_S3": self.endpoint})
        return changes

    def boto(self):
        if self._client is None:
            self._client = self.s3env.boto()
        return self._client

    def key(self, name):
        return "%s/%s" % (self.prefix, name)

    def name_of(self, path):
        assert path.startswith(self.url + "/"), "%s is not in %s" % (path, self.url)
        name = path[len(self.url) + 1:]
        assert name and "/" not in name, "%s is not an object of %s" % (path, self.url)
        return name

    def names(self):
        # Not the catalog index, a cache any listing may (re)write beside the backups
        # (tests/system/test_s3_catalog.py tests it).
        out = []
        kw = {"Bucket": self.bucket, "Prefix": self.prefix + "/"}
        while True:
            r = self.boto().list_objects_v2(**kw)
            out += [o["Key"][len(self.prefix) + 1:] for o in r.get("Contents", [])
                    if o["Key"][len(self.prefix) + 1:] != "catalog.idx"]
            if not r.get("IsTruncated"):
                return sorted(out)
            kw["ContinuationToken"] = r["NextContinuationToken"]

    def pending_uploads(self):
        r = self.boto().list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/")
        return sorted(u["Key"][len(self.prefix) + 1:] for u in r.get("Uploads", []))

    def leftovers(self):
        return super().leftovers() + ["unfinished upload of %s" % n for n in self.pending_uploads()]

    def read(self, name):
        return self.boto().get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()

    def write(self, name, data):
        self.boto().put_object(Bucket=self.bucket, Key=self.key(name), Body=bytes(data))

    def size(self, name):
        return self.boto().head_object(Bucket=self.bucket, Key=self.key(name))["ContentLength"]

    def exists(self, name):
        from botocore.exceptions import ClientError
        try:
            self.boto().head_object(Bucket=self.bucket, Key=self.key(name))
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, name):
        assert self.exists(name), "no object %s in %s" % (name, self.url)
        self.boto().delete_object(Bucket=self.bucket, Key=self.key(name))


def make_repo(kind, request, path, name):
    """A Repo of `kind`: the directory `path`, or the prefix `repo/NAME` of the
    module's s3rver (the s3env fixture, which the test module imports)."""
    if kind == "dir":
        return DirRepo(path)
    assert kind == "s3", kind
    # Readable, and unique: parameters that differ in punctuation only stay apart.
    tag = hashlib.sha1(name.encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80]
    return S3Repo(request.getfixturevalue("s3env"), "repo/%s-%s" % (name, tag))


@pytest.fixture(params=REPO_KINDS)
def repo_kind(request):
    return request.param


@pytest.fixture
def repo(repo_kind, request, tmp_path, monkeypatch):
    """A fresh repository of kind repo_kind (not created yet: a directory that does not
    exist, an S3 prefix with nothing under it). For S3, os.environ holds the
    credentials, region and endpoint for the whole test, so every cairnd and cairn the
    test starts reaches it as a user's would."""
    r = make_repo(repo_kind, request, tmp_path / "repo", request.node.name)
    for k, v in r.env_changes().items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    yield r
    r.close()


def repo_kinds(smoke=False, dir_only=None, s3_defect=None):
    """Parametrises a test over both kinds of repository, overriding the repo_kind
    fixture: smoke marks the "dir" case (the sanitizer build's run has no S3 server);
    dir_only="why" skips the "s3" case, saying why the test is about a local directory;
    s3_defect="what" marks the "s3" case as a known cairn defect (strict xfail)."""
    s3_marks = []
    if dir_only:
        s3_marks.append(pytest.mark.skip(reason="local repository only: " + dir_only))
    if s3_defect:
        s3_marks.append(pytest.mark.xfail(strict=True, reason="cairn defect on S3: " + s3_defect))
    return pytest.mark.parametrize("repo_kind", [
        pytest.param("dir", marks=[pytest.mark.smoke] if smoke else []),
        pytest.param("s3", marks=s3_marks)])


def _case_id(argname, value, i):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", "backslashreplace")
    if isinstance(value, str):
        return value  # pytest escapes what needs it
    if isinstance(value, (int, float, bool)) or value is None:
        return str(value)
    return "%s%d" % (argname, i)


def repo_kinds_for(argnames, cases, s3=None, smoke=()):
    """Parametrises a family of cases (argnames and cases as pytest.mark.parametrize takes
    them) over both kinds of repository, as repo_kinds does, with the "s3" kind for the
    cases at the indexes in `s3` only (every case when None): for a family whose cases
    differ in what happens before or after the repository is used (a request refused
    before it is read, a restart that does not read it), a few cases show the S3 side.
    `smoke`: the indexes of the cases whose "dir" case is a smoke test."""
    names = [a.strip() for a in argnames.split(",")]
    params = []
    for kind in REPO_KINDS:
        for i, case in enumerate(cases):
            if kind == "s3" and s3 is not None and i not in s3:
                continue
            case = tuple(case) if len(names) > 1 else (case,)
            marks = [pytest.mark.smoke] if kind == "dir" and i in smoke else []
            ident = "-".join([kind] + [_case_id(n, v, i) for n, v in zip(names, case)])
            params.append(pytest.param(kind, *case, marks=marks, id=ident))
    return pytest.mark.parametrize(",".join(["repo_kind"] + names), params)
