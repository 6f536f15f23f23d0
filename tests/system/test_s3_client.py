"""The S3 client (src/backup/s3.c), driven through build/s3_exercise against a real S3 API:
s3rver behind a proxy that checks every SigV4 signature with botocore and injects faults
(tests/system/s3util.py, tests/s3/). What the client writes is read back with boto3, to
prove it is ordinary S3 objects. First part of issue 16: no cairn command uses the
client yet."""

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SANITIZED, deadline_seconds, wait_until
from s3util import BUCKET, KEY_ID, REGION, SECRET, s3, s3env  # noqa: F401 (fixtures)

MiB = 1 << 20
# Fast retry budgets for the fault tests (the default is 60 s).
FAST = ["--retry-ms", "4000", "--stall-ms", "1000", "--connect-ms", "1000"]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def body(s3, rel):
    return s3.boto().get_object(Bucket=BUCKET, Key=s3.key(rel))["Body"].read()


def requests(s3, method=None, contains=None):
    return [e for e in s3.log()
            if (method is None or e["method"] == method)
            and (contains is None or contains in e["query"] or contains in e["path"])]


# ---------------------------------------------------------------------------------------
# round trips


@pytest.mark.smoke
def test_small_object_round_trip(s3, tmp_path):
    data = os.urandom(100 * 1024 + 7)
    src = write(tmp_path / "in", data)
    r = s3.run("put", "dir/small.bin", src).ok()
    assert r["bytes"] == len(data) and r["requests"] == 1 and r["retries"] == 0
    assert body(s3, "dir/small.bin") == data  # boto3 reads an ordinary object

    head = s3.run("head", "dir/small.bin").ok()
    assert head["size"] == len(data)
    assert head["etag"] == hashlib.md5(data).hexdigest()
    assert abs(head["mtime_ms"] / 1000 - time.time()) < 120

    out = tmp_path / "out"
    assert s3.run("get", "dir/small.bin", out).ok()["bytes"] == len(data)
    assert out.read_bytes() == data

    # written by boto3, read by the client
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("from-boto"), Body=b"hello from boto3")
    s3.run("get", "from-boto", out).ok()
    assert out.read_bytes() == b"hello from boto3"

    assert s3.run("delete", "dir/small.bin").ok()
    assert not s3.exists("dir/small.bin")
    assert s3.run("delete", "dir/small.bin").ok()  # deleting nothing succeeds, as in S3
    err = s3.run("head", "dir/small.bin").failed("CAIRN_ENOTFOUND")
    assert "HEAD s3://%s/%s" % (BUCKET, s3.key("dir/small.bin")) in err and "404" in err

    # an empty object, and one that fits in one part, go up as single PUTs
    empty = write(tmp_path / "empty", b"")
    r = s3.run("upload", "empty", empty).ok()
    assert r["bytes"] == 0 and r["parts"] == 0
    assert body(s3, "empty") == b""
    assert s3.run("get", "empty", out).ok()["bytes"] == 0


def test_large_multipart_round_trip_in_bounded_memory(s3, tmp_path):
    """100 MiB through multipart upload, 4 parts of 8 MiB in flight: an ordinary object
    for boto3, nothing left pending, and the process stays under 64 MiB."""
    data = os.urandom(100 * MiB + 12345)
    src = write(tmp_path / "big", data)
    r = s3.run("upload", "big.bin", src, watch_rss=True, timeout=300)
    j = r.ok()
    assert j["bytes"] == len(data)
    assert j["parts"] == 13  # 12 x 8 MiB + the rest
    print("100 MiB upload: peak RSS %d KiB polled, VmHWM %d KiB, %d ms"
          % (r.peak_rss_kib, j["vm_hwm_kib"], j["ms"]))
    if not SANITIZED:  # ASan's shadow memory is no measure of the client's
        assert r.peak_rss_kib < 64 * 1024, "peak RSS %d KiB (polled)" % r.peak_rss_kib
        assert j["vm_hwm_kib"] < 64 * 1024, "VmHWM %d KiB" % j["vm_hwm_kib"]

    got = body(s3, "big.bin")
    assert len(got) == len(data) and sha(got) == sha(data)
    assert s3.pending_uploads() == []

    # several parts were in flight at once
    parts = requests(s3, "PUT", "partNumber=")
    assert len(parts) == 13
    events = sorted([(p["t"], 1) for p in parts] + [(p["t_end"], -1) for p in parts])
    most = cur = 0
    for _, d in events:
        cur += d
        most = max(most, cur)
    assert 2 <= most <= 4, "at most %d part uploads were in flight at once" % most

    # read back whole by the client, in bounded memory too
    out = tmp_path / "big.out"
    r = s3.run("get", "big.bin", out, watch_rss=True, timeout=300)
    assert r.ok()["bytes"] == len(data)
    print("100 MiB get: peak RSS %d KiB polled, %d ms" % (r.peak_rss_kib, r.json["ms"]))
    if not SANITIZED:
        assert r.peak_rss_kib < 64 * 1024
    assert sha(out.read_bytes()) == sha(data)


def test_ranged_gets(s3, tmp_path):
    data = os.urandom(3 * MiB + 17)
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("r.bin"), Body=data)
    out = tmp_path / "out"
    n = len(data)
    for off, ln, want in [(0, 1, data[:1]), (100, 1000, data[100:1100]),
                          (n - 10, 10, data[-10:]), (n - 10, 100, data[-10:]),
                          (MiB, "end", data[MiB:]), (0, "end", data)]:
        r = s3.run("get", "r.bin", out, off, ln).ok()
        assert out.read_bytes() == want, (off, ln)
        assert r["bytes"] == len(want)
    err = s3.run("get", "r.bin", out, n, 10).failed("CAIRN_EINVAL")
    assert "past the end" in err and "416" in err and s3.key("r.bin") in err
    err = s3.run("get", "missing.bin", out).failed("CAIRN_ENOTFOUND")
    assert "404" in err and "NoSuchKey" in err and s3.key("missing.bin") in err


def test_listing_pages_and_keys_needing_escaping(s3):
    # (no "./" or "../" segments: s3rver's file store folds them; the client sends them as
    # given, CURLOPT_PATH_AS_IS, checked below)
    odd = ["a&b", "lt<gt>", 'quote"apos\'', "sp ace", "plus+pct%25", "caf\u00e9",
           "\u6f22\u5b57", "tab\tkey", "semi;colon=eq?q#h", "~tilde", "new\nline"]
    keys = ["many/%04d" % i for i in range(1001)] + ["many/odd/" + k for k in odd]
    c = s3.boto()

    def put(k):
        c.put_object(Bucket=BUCKET, Key=s3.key(k), Body=k.encode())

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(put, keys))
    s3.clear_log()
    r = s3.run("list", "many/").ok()
    got = [o["key"] for o in r["objects"]]
    assert got == sorted(keys, key=lambda k: k.encode())
    assert all(o["size"] == len(o["key"].encode()) for o in r["objects"])
    lists = requests(s3, "GET", "list-type=2")
    assert len(lists) == 2 and "continuation-token=" in lists[1]["query"]

    # the odd keys read back, by the names the listing gave
    for k in odd:
        out = s3.base / "odd.out"
        s3.run("get", "many/odd/" + k, out).ok()
        assert out.read_bytes() == ("many/odd/" + k).encode()

    # dot segments go out as given, never folded by the client
    s3.clear_log()
    s3.run("delete", "many/./x/../y").ok()
    assert [e["path"] for e in s3.log()] == ["/%s/%s" % (BUCKET, s3.key("many/./x/../y"))]

    # a prefix selects; an empty listing is no error
    assert [o["key"] for o in s3.run("list", "many/odd/caf").ok()["objects"]] == \
        ["many/odd/caf\u00e9"]
    assert s3.run("list", "nothing-here/").ok()["count"] == 0


def test_threads_share_one_client(s3):
    """Several threads on one client at once (the share handle's connections, DNS and TLS
    sessions are locked), with faults on some of their requests."""
    data = os.urandom(2 * MiB + 1)
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("shared"), Body=data)
    s3.fault(action="status", status=503, method="GET", count=3)
    s3.fault(action="cut_response", method="GET", query="", after_bytes=MiB, count=2)
    r = s3.run("parallel", "shared", 8, 5, options=FAST).ok()
    assert r["bytes"] == 8 * 5 * len(data)
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & (2 ** 64 - 1)
    assert r["fnv1a"] == "%016x" % h
    assert r["retries"] >= 5


# ---------------------------------------------------------------------------------------
# credentials and configuration


def test_wrong_credentials_get_403_and_a_clear_error(s3, tmp_path):
    src = write(tmp_path / "in", b"x")
    r = s3.run("put", "k", src, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    err = r.failed("CAIRN_EIO")
    assert "PUT s3://%s/%s" % (BUCKET, s3.key("k")) in err
    assert "HTTP 403 SignatureDoesNotMatch" in err and "check the credentials" in err
    assert KEY_ID in err and "not-the-secret" not in err and SECRET not in err
    assert r.json["requests"] == 1  # a refusal is not retried
    assert [e["sig"] for e in s3.log()] == ["bad"]
    assert not s3.exists("k")

    err = s3.run("list", env={"AWS_ACCESS_KEY_ID": "NOSUCHKEY"}).failed("CAIRN_EIO")
    assert "HTTP 403 InvalidAccessKeyId" in err

    # a region the server is not in: the signature's scope is refused
    err = s3.run("list", options=["--region", "eu-west-3"]).failed("CAIRN_EIO")
    assert "AuthorizationHeaderMalformed" in err and "us-east-1" in err


def test_bad_urls_and_missing_credentials_send_nothing(s3):
    cases = [
        ("file:///var/backups", "unknown scheme 'file'"),
        ("gs://bucket/prefix", "unknown scheme 'gs'"),
        ("s3:///prefix", "names no bucket"),
        ("s3://", "names no bucket"),
        ("bucket/prefix", "malformed"),
        ("s3:/bucket", "malformed"),
        ("s3://bu/p", "3 to 63 characters"),
        ("s3://buc ket/p", "malformed"),
        ("s3://bucket//p", "empty path segment"),
        ("s3://bucket/p?x=1", "malformed"),
    ]
    for url, want in cases:
        err = s3.run("list", url=url).failed("CAIRN_EINVAL")
        assert want in err, (url, err)
    err = s3.run("list", creds=False).failed("CAIRN_EINVAL")
    assert "no S3 credentials" in err and "AWS_ACCESS_KEY_ID" in err
    assert str(s3.home / ".aws" / "credentials") in err
    err = s3.run("list", creds=False, env={"AWS_ACCESS_KEY_ID": KEY_ID}).failed("CAIRN_EINVAL")
    assert "AWS_SECRET_ACCESS_KEY is not" in err
    err = s3.run("list", endpoint="ftp://127.0.0.1:1").failed("CAIRN_EINVAL")
    assert "not an http:// or https:// URL" in err
    err = s3.run("list", endpoint="http://127.0.0.1:1/some/path").failed("CAIRN_EINVAL")
    assert "HOST[:PORT]" in err
    err = s3.run("list", options=["--part-size", "1000"]).failed("CAIRN_EINVAL")
    assert "part size" in err
    assert s3.log() == []  # nothing was sent


def test_credentials_region_and_endpoint_from_the_aws_files(s3, tmp_path):
    creds = tmp_path / "credentials"
    conf = tmp_path / "config"
    creds.write_text("# test\n[default]\naws_access_key_id = WRONG\naws_secret_access_key = x\n\n"
                     "; another comment\n[ cairn ]\naws_access_key_id=%s\n"
                     "AWS_Secret_Access_Key = %s  \n" % (KEY_ID, SECRET))
    conf.write_text("[profile cairn]\nregion = %s\nendpoint_url = %s\ns3 =\n"
                    "  endpoint_url = http://127.0.0.1:1\n"
                    "[profile sso]\nsso_start_url = https://example.com\n"
                    "[profile onlyid]\naws_access_key_id = X\n" % (REGION, s3.endpoint))
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(conf)}
    src = write(tmp_path / "in", b"from files")

    # profile from AWS_PROFILE; credentials, region and endpoint all from the files
    s3.run("put", "f", src, endpoint=None, creds=False,
           env=dict(files, AWS_PROFILE="cairn")).ok()
    assert body(s3, "f") == b"from files"
    # the default profile's wrong key is refused by the proxy
    err = s3.run("list", creds=False, env=files).failed("CAIRN_EIO")
    assert "InvalidAccessKeyId" in err and "WRONG" in err
    # the environment wins over the files; endpoint from AWS_ENDPOINT_URL_S3
    s3.run("list", endpoint=None, env=dict(files, AWS_ENDPOINT_URL_S3=s3.endpoint)).ok()
    s3.run("list", endpoint=None, env={"AWS_ENDPOINT_URL": s3.endpoint}).ok()
    # ~/.aws/credentials by default
    (s3.home / ".aws").mkdir(exist_ok=True)
    (s3.home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (KEY_ID, SECRET))
    try:
        s3.run("list", creds=False).ok()
    finally:
        (s3.home / ".aws" / "credentials").unlink()
    # a session token is sent, and signed (the proxy refuses unsigned x-amz-* headers)
    s3.clear_log()
    s3.run("list", env={"AWS_SESSION_TOKEN": "token/with+odd=chars"}).ok()
    assert [e["sig"] for e in s3.log()] == ["ok"]

    err = s3.run("list", creds=False, env=dict(files, AWS_PROFILE="sso")).failed("CAIRN_EINVAL")
    assert "sso_start_url" in err and "does not read" in err
    err = s3.run("list", creds=False, env=dict(files, AWS_PROFILE="nope")).failed("CAIRN_EINVAL")
    assert "profile 'nope'" in err and str(creds) in err
    err = s3.run("list", creds=False, env=dict(files, AWS_PROFILE="onlyid")).failed("CAIRN_EINVAL")
    assert "has aws_access_key_id but not aws_secret_access_key" in err


# ---------------------------------------------------------------------------------------
# faults: retries that succeed


@pytest.mark.smoke
def test_retries_through_503s_and_500s(s3, tmp_path):
    data = os.urandom(50000)
    src = write(tmp_path / "in", data)
    s3.fault(action="status", status=503, code="SlowDown", method="PUT", count=3)
    r = s3.run("put", "k", src, options=FAST).ok()
    assert r["retries"] == 3 and body(s3, "k") == data
    s3.fault(action="status", status=500, code="InternalError", method="GET", count=2)
    s3.fault(action="status", status=429, code="TooManyRequests", method="GET", count=1)
    out = tmp_path / "out"
    assert s3.run("get", "k", out, options=FAST).ok()["retries"] == 3
    assert out.read_bytes() == data
    s3.fault(action="status", status=503, code="SlowDown", method="GET", query="list-type", count=2)
    assert s3.run("list", options=FAST).ok()["count"] == 1
    # a 400 RequestTimeout (S3's word for a client too slow to send) is retried too
    s3.fault(action="status", status=400, code="RequestTimeout", method="DELETE")
    assert s3.run("delete", "k", options=FAST).ok()["retries"] == 1


def test_get_resumes_after_cut_and_stalled_connections(s3, tmp_path):
    data = os.urandom(4 * MiB + 3)
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("g.bin"), Body=data)
    out = tmp_path / "out"
    s3.faults([{"action": "cut_response", "method": "GET", "after_bytes": MiB + 5},
               {"action": "stall", "method": "GET", "after_bytes": 2 * MiB, "seconds": 20}])
    r = s3.run("get", "g.bin", out, options=FAST).ok()
    assert out.read_bytes() == data and r["retries"] == 2
    gets = requests(s3, "GET")
    assert [g["range"] for g in gets] == [None, "bytes=%d-" % (MiB + 5),
                                          "bytes=%d-" % (3 * MiB + 5)]
    assert r["ms"] < deadline_seconds(10) * 1000

    # a reset connection loses what was in flight: the read resumes from what arrived
    s3.clear_log()
    s3.fault(action="cut_response", method="GET", after_bytes=2 * MiB, reset=True)
    s3.run("get", "g.bin", out, options=FAST).ok()
    assert out.read_bytes() == data
    ranges = [g["range"] for g in requests(s3, "GET")]
    assert len(ranges) == 2 and ranges[0] is None
    assert 0 < int(ranges[1][len("bytes="):-1]) <= 2 * MiB, ranges

    # a ranged read resumes within its range
    s3.clear_log()
    s3.fault(action="cut_response", method="GET", after_bytes=1000)
    s3.run("get", "g.bin", out, 500, 5000, options=FAST).ok()
    assert out.read_bytes() == data[500:5500]
    assert [g["range"] for g in requests(s3, "GET")] == ["bytes=500-5499", "bytes=1500-5499"]

    # the object replaced between the cut and the resume: the read fails, it never mixes
    # versions (If-Match on the ETag first seen). The resumed GET is held by the proxy
    # while the object is replaced.
    s3.clear_log()
    s3.fault(action="cut_response", method="GET", after_bytes=MiB, count=1)
    s3.fault(action="delay", method="GET", seconds=2, count=1)

    def replace():
        wait_until(lambda: len(requests(s3, "GET")) == 2, 20, "the resumed GET")
        s3.boto().put_object(Bucket=BUCKET, Key=s3.key("g.bin"), Body=os.urandom(len(data)))
    t = threading.Thread(target=replace)
    t.start()
    err = s3.run("get", "g.bin", out, options=["--stall-ms", "10000"]).failed("CAIRN_EIO")
    t.join()
    assert "changed while it was read" in err and "412 PreconditionFailed" in err, err
    gets = requests(s3, "GET")
    assert len(gets) == 2 and gets[1]["range"].startswith("bytes="), gets


def test_upload_retries_cut_requests_stalls_and_completes(s3, tmp_path):
    data = os.urandom(20 * MiB + 99)
    src = write(tmp_path / "in", data)
    s3.faults([
        {"action": "cut_request", "method": "PUT", "query": "partNumber=2"},
        {"action": "status", "status": 503, "code": "SlowDown", "method": "PUT",
         "query": "partNumber=3", "count": 2},
        {"action": "stall", "method": "PUT", "query": "partNumber=1", "seconds": 20},
        {"action": "status", "status": 500, "code": "InternalError", "method": "POST",
         "query": "uploads="},
        # CompleteMultipartUpload: 200 with an error in the body, then a plain 503
        {"action": "error_200", "method": "POST", "query": "uploadId="},
        {"action": "status", "status": 503, "method": "POST", "query": "uploadId="},
    ])
    r = s3.run("upload", "u.bin", src, options=FAST).ok()
    assert r["parts"] == 3 and r["retries"] == 7, r
    assert sha(body(s3, "u.bin")) == sha(data)
    assert s3.pending_uploads() == []
    assert s3.pending_faults() == []


def test_nothing_is_visible_before_the_commit(s3, tmp_path):
    data = os.urandom(20 * MiB)
    src = write(tmp_path / "in", data)
    # part 3 is slow: look at the bucket while the upload is under way
    s3.fault(action="delay", method="PUT", query="partNumber=3", seconds=3)
    seen = {}

    def look():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "pending" not in seen:
            p = s3.pending_uploads()
            if p:
                seen["pending"] = p
                seen["exists"] = s3.exists("atomic.bin")
            time.sleep(0.05)
    t = threading.Thread(target=look)
    t.start()
    r = s3.run("upload", "atomic.bin", src, options=["--stall-ms", "10000"]).ok()
    t.join()
    assert r["parts"] == 3
    assert seen.get("pending") and seen["pending"][0][0] == s3.key("atomic.bin"), seen
    assert seen["exists"] is False
    assert s3.exists("atomic.bin") and s3.pending_uploads() == []


def test_no_replace_and_pinned_versions(s3, tmp_path):
    """What a repository needs: a commit that never replaces an object (If-None-Match),
    and ranged reads pinned to the version opened (If-Match)."""
    small = write(tmp_path / "small", b"first")
    big = os.urandom(12 * MiB)
    bigf = write(tmp_path / "big", big)
    for rel, src, want, parts in [("s.bin", small, b"first", 0), ("b.bin", bigf, big, 2)]:
        assert s3.run("upload", rel, src, options=["--no-replace"]).ok()["parts"] == parts
        err = s3.run("upload", rel, write(tmp_path / "other", b"second"),
                     options=["--no-replace"]).failed("CAIRN_EEXIST")
        assert "already exists" in err and "412 PreconditionFailed" in err
        err = s3.run("upload", rel, write(tmp_path / "other2", os.urandom(11 * MiB)),
                     options=["--no-replace"]).failed("CAIRN_EEXIST")
        assert "the multipart upload was aborted" in err
        assert body(s3, rel) == want and s3.pending_uploads() == []
    # without the flag an upload replaces
    s3.run("upload", "s.bin", write(tmp_path / "third", b"third")).ok()
    assert body(s3, "s.bin") == b"third"

    # a write whose answer was lost, retried, finds its own object: no false "exists"
    s3.fault(action="cut_response", method="PUT", after_bytes=0)
    r = s3.run("upload", "lost.bin", small, options=["--no-replace"] + FAST).ok()
    assert r["retries"] == 1 and body(s3, "lost.bin") == b"first"
    s3.fault(action="cut_response", method="POST", query="uploadId=", after_bytes=0)
    r = s3.run("upload", "lost2.bin", bigf, options=["--no-replace"] + FAST).ok()
    assert r["retries"] == 1 and sha(body(s3, "lost2.bin")) == sha(big)
    s3.fault(action="cut_response", method="POST", query="uploadId=", after_bytes=0)
    r = s3.run("upload", "lost3.bin", bigf, options=FAST).ok()  # NoSuchUpload, then HEAD
    assert r["retries"] == 1 and sha(body(s3, "lost3.bin")) == sha(big)
    assert s3.pending_uploads() == []

    etag = s3.run("head", "b.bin").ok()["etag"]
    out = tmp_path / "out"
    s3.run("get", "b.bin", out, 100, 1000, options=["--etag", etag]).ok()
    assert out.read_bytes() == big[100:1100]
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("b.bin"), Body=b"replaced")
    err = s3.run("get", "b.bin", out, 0, 10, options=["--etag", etag]).failed("CAIRN_EIO")
    assert "changed since its ETag was read" in err and "412" in err


# ---------------------------------------------------------------------------------------
# faults: failures that end clearly and leave nothing behind


def test_persistent_500_on_parts_fails_in_bounded_time_and_leaves_nothing(s3, tmp_path):
    src = write(tmp_path / "in", os.urandom(20 * MiB))
    s3.fault(action="status", status=500, code="InternalError", method="PUT",
             query="partNumber=", count=-1)
    t0 = time.monotonic()
    r = s3.run("upload", "fail.bin", src, options=["--retry-ms", "3000"])
    elapsed = time.monotonic() - t0
    err = r.failed("CAIRN_EIO")
    assert elapsed < deadline_seconds(10), elapsed
    assert "s3://%s/%s" % (BUCKET, s3.key("fail.bin")) in err
    assert "gave up after" in err and "HTTP 500 InternalError" in err
    assert "the multipart upload was aborted" in err
    assert not s3.exists("fail.bin")
    assert s3.pending_uploads() == []
    assert requests(s3, "DELETE", "uploadId=")  # aborted by the client itself


def test_persistent_500_on_complete_aborts(s3, tmp_path):
    src = write(tmp_path / "in", os.urandom(12 * MiB))
    s3.fault(action="status", status=500, code="InternalError", method="POST",
             query="uploadId=", count=-1)
    r = s3.run("upload", "fail2.bin", src, options=["--retry-ms", "2000"])
    err = r.failed("CAIRN_EIO")
    assert "complete multipart upload" in err and "gave up" in err and "aborted" in err
    assert not s3.exists("fail2.bin") and s3.pending_uploads() == []

    # an error answered with 200 that is not worth retrying: aborted at once
    s3.clear_faults()
    s3.fault(action="error_200", method="POST", query="uploadId=", code="InvalidPart",
             message="One or more of the specified parts could not be found.")
    err = s3.run("upload", "fail3.bin", src).failed("CAIRN_EIO")
    assert "HTTP 200 InvalidPart" in err and "aborted" in err
    assert not s3.exists("fail3.bin") and s3.pending_uploads() == []


def test_persistent_503_on_a_small_put_and_a_failed_abort(s3, tmp_path):
    src = write(tmp_path / "in", b"small")
    s3.fault(action="status", status=503, code="SlowDown", method="PUT", count=-1)
    t0 = time.monotonic()
    err = s3.run("put", "p", src, options=["--retry-ms", "2000"]).failed("CAIRN_EIO")
    assert time.monotonic() - t0 < deadline_seconds(8)
    assert "PUT s3://%s/%s: gave up after" % (BUCKET, s3.key("p")) in err
    assert "last answer: HTTP 503 SlowDown" in err
    assert not s3.exists("p")

    # parts and the abort fail alike: the error names the upload left pending, which
    # the listing of pending uploads finds and s3AbortUpload sweeps
    s3.clear_faults()
    big = write(tmp_path / "big", os.urandom(12 * MiB))
    s3.fault(action="status", status=500, code="InternalError", method="PUT",
             query="partNumber=", count=-1)
    s3.fault(action="status", status=500, code="InternalError", method="DELETE", count=-1)
    err = s3.run("upload", "orphan.bin", big, options=["--retry-ms", "1500"]).failed("CAIRN_EIO")
    assert "left pending" in err
    s3.clear_faults()
    pending = s3.run("uploads").ok()["uploads"]
    assert [p["key"] for p in pending] == ["orphan.bin"] and pending[0]["upload_id"] in err
    s3.run("abort", "orphan.bin", pending[0]["upload_id"]).ok()
    assert s3.pending_uploads() == []
    s3.run("abort", "orphan.bin", pending[0]["upload_id"]).ok()  # gone already: fine


def test_abort_leaves_no_object_and_no_pending_upload(s3):
    r = s3.run("abort-test", "ab.bin", 20 * MiB + 1).ok()
    assert r["aborted"] is True
    assert requests(s3, "POST", "uploads=")  # a multipart upload was begun
    assert not s3.exists("ab.bin") and s3.pending_uploads() == []


def test_stop_ends_an_upload_quickly_and_aborts_it(s3, tmp_path):
    src = write(tmp_path / "in", os.urandom(20 * MiB))
    s3.fault(action="delay", method="PUT", query="partNumber=", seconds=30, count=-1)
    argv = [str(s3.exercise_bin), "--url", s3.url, "--endpoint", s3.endpoint,
            "upload", "stopped.bin", src]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=s3.env())
    wait_until(lambda: requests(s3, "PUT", "partNumber="), 20, "a part upload")
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert time.monotonic() - t0 < deadline_seconds(4)
    j = json.loads(out)
    assert p.returncode == 1 and j["code"] == "CAIRN_ESHUTDOWN", (out, err)
    assert "stopped" in j["error"] and "the multipart upload was aborted" in j["error"]
    assert s3.pending_uploads() == [] and not s3.exists("stopped.bin")


def test_endpoint_down_is_a_clear_error(s3, tmp_path, free_port):
    port = free_port()
    t0 = time.monotonic()
    r = s3.run("put", "k", write(tmp_path / "in", b"x"), endpoint="http://127.0.0.1:%d" % port,
               options=["--retry-ms", "2000"])
    err = r.failed("CAIRN_EIO")
    assert time.monotonic() - t0 < deadline_seconds(8)
    assert "PUT s3://%s/%s: gave up after" % (BUCKET, s3.key("k")) in err
    assert "127.0.0.1 port %d" % port in err and "onnect" in err
    assert r.json["requests"] >= 2


def test_stalled_server_is_cut_and_the_budget_ends_it(s3, tmp_path):
    src = write(tmp_path / "in", b"x" * 1000)
    s3.fault(action="stall", method="PUT", seconds=30, count=-1)
    t0 = time.monotonic()
    r = s3.run("put", "st", src, options=["--retry-ms", "2500", "--stall-ms", "1000"])
    err = r.failed("CAIRN_ETIMEOUT")
    assert time.monotonic() - t0 < deadline_seconds(10)
    assert "gave up after" in err and "stalled: no data moved for 1.0 s" in err


# ---------------------------------------------------------------------------------------
# hostile and odd answers


LIST_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
             '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
             '<Name>%s</Name>' % BUCKET)


def listing(s3, *contents, extra=""):
    items = "".join("<Contents><Key>%s</Key><Size>%d</Size><ETag>&quot;e&quot;</ETag>"
                    "<LastModified>2024-01-02T03:04:05.678Z</LastModified></Contents>" % c
                    for c in contents)
    return LIST_HEAD + extra + items + "</ListBucketResult>"


def hostile_list(s3, body, status=200, headers=None, count=1):
    s3.clear_faults()
    s3.fault(action="raw", method="GET", query="list-type", status=status, body=body,
             headers=headers or {"Content-Type": "application/xml"}, count=count)
    return s3.run("list", options=FAST)


def test_listing_parser_takes_entities_cdata_and_url_encoding(s3):
    p = s3.prefix + "/"
    r = hostile_list(s3, listing(
        s3, (p + "a&amp;b&#x4E2D;&#25991;<![CDATA[<c>&amp;]]>", 3),
        (p + "x&lt;y&gt;&quot;&apos;", 4))).ok()
    assert [o["key"] for o in r["objects"]] == ["a&b\u4e2d\u6587<c>&amp;", "x<y>\"'"]
    assert r["objects"][0]["etag"] == "e"
    assert r["objects"][0]["mtime_ms"] == 1704164645678
    enc = p.replace("/", "%2F")
    r = hostile_list(s3, listing(s3, (enc + "a%20b%2Bc+d%25", 1),
                                 extra="<EncodingType>url</EncodingType>")).ok()
    assert [o["key"] for o in r["objects"]] == ["a b+c d%"]
    # comments and processing instructions are skipped; the prefix itself is no key
    r = hostile_list(s3, LIST_HEAD + "<!-- hi -->" + "<?pi x?><Contents><Key>%s</Key>"
                     "<Size>0</Size></Contents></ListBucketResult>" % p).ok()
    assert r["count"] == 0


@pytest.mark.parametrize("name,body,want", [
    ("truncated", None, "truncated"),
    ("doctype", '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                '<!ENTITY lol2 "&lol;&lol;&lol;">]><ListBucketResult><Contents><Key>&lol2;'
                '</Key></Contents></ListBucketResult>', "document type declarations"),
    ("unknown entity", None, "unknown entity"),
    ("mismatched tags", "<ListBucketResult><Contents></Key></ListBucketResult>",
     "does not match"),
    ("two roots", "<ListBucketResult/><ListBucketResult/>", "more than one root"),
    ("not xml", "this is not XML at all", "text outside the root"),
    ("error body", "<Error><Code>InternalError</Code></Error>", "not a ListBucketResult"),
    ("deep", "<ListBucketResult>" + "<a>" * 40 + "</a>" * 40 + "</ListBucketResult>",
     "nested too deeply"),
    ("bad size", None, "valid Size"),
    ("outside prefix", None, "outside the prefix"),
    ("no token", None, "without a marker"),
    ("bad char ref", None, "character reference to no character"),
])
def test_hostile_listings_fail_clearly(s3, name, body, want):
    p = s3.prefix + "/"
    if name == "truncated":
        body = listing(s3, (p + "a", 1))[:-25]
    elif name == "unknown entity":
        body = listing(s3, (p + "a&nbsp;b", 1))
    elif name == "bad size":
        body = listing(s3, (p + "a", 1)).replace("<Size>1</Size>", "<Size>-1</Size>")
    elif name == "outside prefix":
        body = listing(s3, ("elsewhere/a", 1))
    elif name == "no token":
        body = listing(s3, (p + "a", 1), extra="<IsTruncated>true</IsTruncated>")
    elif name == "bad char ref":
        body = listing(s3, (p + "a&#xD800;", 1))
    r = hostile_list(s3, body)
    err = r.failed("CAIRN_EIO")
    assert want in err, err
    assert "LIST s3://%s/%s" % (BUCKET, p) in err
    assert r.json["requests"] == 1  # a malformed answer is not retried


def test_hostile_listing_sizes_and_loops(s3):
    p = s3.prefix + "/"
    # an answer larger than any listing page is cut off, never held whole
    huge = LIST_HEAD + "<Junk>" + "x" * (20 * MiB) + "</Junk></ListBucketResult>"
    err = hostile_list(s3, huge).failed("CAIRN_EIO")
    assert "longer than" in err
    # a key longer than S3 allows
    err = hostile_list(s3, listing(s3, (p + "k" * 2000, 1))).failed("CAIRN_EIO")
    assert "cannot be read" in err
    # a server that hands back the same continuation token forever
    loop = listing(s3, (p + "a", 1), extra="<IsTruncated>true</IsTruncated>"
                   "<NextContinuationToken>abc+/=</NextContinuationToken>")
    s3.clear_log()
    r = hostile_list(s3, loop, count=2)
    err = r.failed("CAIRN_EIO")
    assert "same continuation twice" in err
    assert "continuation-token=abc%2B%2F%3D" in requests(s3, "GET", "list-type")[1]["query"]
    # continuations that run in a cycle, A, B, C, A, ...: caught, not listed forever
    s3.clear_faults()
    s3.clear_log()
    s3.faults([{"action": "raw", "method": "GET", "query": "list-type", "status": 200,
                "headers": {"Content-Type": "application/xml"},
                "body": listing(s3, (p + "k%d" % i, 1), extra="<IsTruncated>true</IsTruncated>"
                                "<NextContinuationToken>%s</NextContinuationToken>" % tok)}
               for i, tok in enumerate("ABC" * 6)])
    err = s3.run("list", options=FAST).failed("CAIRN_EIO")
    assert "continuations run in a cycle" in err, err
    assert len(requests(s3, "GET", "list-type")) < 10


def test_redirects_garbage_and_odd_ranges(s3, tmp_path):
    err = hostile_list(s3, "<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message>"
                           "</Error>", status=301,
                       headers={"x-amz-bucket-region": "eu-west-1"}).failed("CAIRN_EIO")
    assert "301 PermanentRedirect" in err and "set the region to eu-west-1" in err
    # a Location back at the proxy: a followed redirect would show in its log
    s3.clear_log()
    err = hostile_list(s3, "", status=307, headers={
        "Location": s3.endpoint + "/" + BUCKET + "/followed-redirect"}).failed("CAIRN_EIO")
    assert "307" in err and "redirects are not followed" in err
    assert [e["path"] for e in s3.log()] == ["/" + BUCKET]

    s3.clear_faults()
    s3.fault(action="garbage", method="GET", query="list-type")
    r = s3.run("list", options=FAST)
    err = r.failed("CAIRN_EIO")
    assert "LIST s3://" in err
    # a server answering 500 with no XML at all still gets a clear message
    s3.fault(action="raw", method="GET", query="list-type", status=500,
             body="<html>oops</html>", count=-1)
    err = s3.run("list", options=["--retry-ms", "1000"]).failed("CAIRN_EIO")
    assert "gave up" in err and "HTTP 500" in err
    s3.clear_faults()

    # a server that ignores Range and sends the whole object: the client skips
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key("d"), Body=b"0123456789")
    out = tmp_path / "out"
    s3.fault(action="raw", method="GET", status=200, body="0123456789",
             headers={"Content-Type": "application/octet-stream"})
    s3.run("get", "d", out, 5, 3).ok()
    assert out.read_bytes() == b"567"
    # a 206 whose Content-Range is not the range asked for
    s3.fault(action="raw", method="GET", status=206, body="89",
             headers={"Content-Range": "bytes 8-9/10"})
    err = s3.run("get", "d", out, 2, 2).failed("CAIRN_EIO")
    assert "Content-Range" in err
    # an UploadId nobody can use
    s3.fault(action="raw", method="POST", query="uploads=", status=200,
             body="<InitiateMultipartUploadResult><Bucket>b</Bucket>"
                  "</InitiateMultipartUploadResult>")
    err = s3.run("upload", "noid", write(tmp_path / "big", os.urandom(9 * MiB))).failed("CAIRN_EIO")
    assert "no UploadId" in err


def test_the_test_server_takes_parts_in_the_sdks_element_order(s3):
    """The AWS SDKs send each part's <ETag> before its <PartNumber> in
    CompleteMultipartUpload; S3 takes either order, and so must the test server (it
    refused that order, which broke Litestream in the benchmark)."""
    b = s3.boto()
    key = s3.key("sdk-multipart")
    up = b.create_multipart_upload(Bucket=BUCKET, Key=key)
    part = os.urandom(5 * MiB)
    e1 = b.upload_part(Bucket=BUCKET, Key=key, UploadId=up["UploadId"], PartNumber=1,
                       Body=part)["ETag"]
    e2 = b.upload_part(Bucket=BUCKET, Key=key, UploadId=up["UploadId"], PartNumber=2,
                       Body=b"tail")["ETag"]
    b.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"ETag": e1, "PartNumber": 1},
                                                           {"ETag": e2, "PartNumber": 2}]})
    assert body(s3, "sdk-multipart") == part + b"tail"
