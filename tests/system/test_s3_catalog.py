"""The catalog of an S3 repository read from the bucket alone, through its index (issue
16): `catalog.idx` caches what each backup object's header and footer and each sidecar
say, keyed by object name, ETag and size; the LIST stays the truth of what exists. Every
listing (`backup list`, `restore latest`, an incremental choosing its parent) uses what
the index says of an object only while the object is listed with the same ETag and
size, reads the rest, and writes the index again when it learnt anything. Against
s3rver behind the SigV4-checking proxy (tests/system/s3util.py); the objects are read
and changed behind cairn's back with boto3."""
import json
import os
import sqlite3

from backuputil import file_rows, integrity
from s3util import BUCKET, s3, s3env  # noqa: F401 (fixtures)
from test_s3_repository import cairn, make_db, ok

INDEX = "catalog.idx"


def create(cairn_bin, s3, db, kind="full", repo=None):
    repo = str(repo or s3.url)
    return json.loads(ok(cairn(cairn_bin, s3, "backup", "create", "--db", db, "--repo", repo,
                               "--type", kind, "--json",
                               endpoint=repo.startswith("s3://"))).stdout)


def listing(cairn_bin, s3, repo=None, env=None):
    repo = str(repo or s3.url)
    return json.loads(ok(cairn(cairn_bin, s3, "backup", "list", "--repo", repo, "--json",
                               env=env, endpoint=repo.startswith("s3://"))).stdout)


def head(s3, rel):
    """(ETag, size) of an object of the test's prefix, None when there is none."""
    from botocore.exceptions import ClientError
    try:
        h = s3.boto().head_object(Bucket=BUCKET, Key=s3.key(rel))
        return h["ETag"], h["ContentLength"]
    except ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def get(s3, rel):
    return s3.boto().get_object(Bucket=BUCKET, Key=s3.key(rel))["Body"].read()


def put(s3, rel, data):
    s3.boto().put_object(Bucket=BUCKET, Key=s3.key(rel), Body=data)


def object_requests(s3):
    """The requests the proxy saw for backup objects and sidecars (not LIST, not the
    index): (method, object name)."""
    out = []
    for e in s3.log():
        name = e["path"].rsplit("/", 1)[-1]
        if name.endswith(".cbk") or name.endswith(".verified"):
            out.append((e["method"], name))
    return out


def grow(db, n):
    con = sqlite3.connect(str(db))
    con.execute("UPDATE t SET v = randomblob(300) WHERE id %% 7 = %d" % (n % 7))
    con.execute("INSERT INTO t(v) VALUES(randomblob(500))")
    con.commit()
    con.close()


def test_an_empty_prefix_lists_nothing_and_gets_no_index(cairn_bin, s3):
    assert listing(cairn_bin, s3) == []
    r = ok(cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url))
    assert "no backups" in r.stdout
    assert head(s3, INDEX) is None
    r = cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest", "--out", "/nonexistent/x.db")
    assert r.returncode == 1 and "no readable backup" in r.stderr, r


def test_the_index_is_written_then_used_instead_of_the_objects(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 500)
    made = [create(cairn_bin, s3, db)]
    assert head(s3, INDEX) is None  # a backup does not write it: a listing does
    for i in range(2):
        grow(db, i)
        made.append(create(cairn_bin, s3, db, "incremental"))
    # The incrementals listed the repository to choose their parents: the index holds
    # the backups before the last one, which this listing alone reads.
    assert head(s3, INDEX) is not None
    s3.clear_log()
    first = listing(cairn_bin, s3)
    assert [e["id"] for e in first] == [e["id"] for e in made]
    assert {n for _, n in object_requests(s3)} == {made[-1]["id"] + ".cbk"}
    etag = head(s3, INDEX)
    assert etag is not None and get(s3, INDEX)[:8] == b"CAIRNIDX"

    # The second listing reads the index, not the objects, and rewrites nothing.
    s3.clear_log()
    assert listing(cairn_bin, s3) == first
    assert object_requests(s3) == []
    assert [e["method"] for e in s3.log() if e["path"].endswith("/" + INDEX)] == ["GET"]
    assert head(s3, INDEX) == etag

    # A verification writes a sidecar: the next listing reads it (once), then the index
    # holds it too.
    v = json.loads(ok(cairn(cairn_bin, s3, "backup", "verify", "--repo", s3.url,
                            made[1]["id"], "--json")).stdout)
    assert v["ok"] is True, v
    for _ in range(2):
        s3.clear_log()
        got = {e["id"]: e["verified"] for e in listing(cairn_bin, s3)}
        assert got == {made[0]["id"]: "verified", made[1]["id"]: "verified",
                       made[2]["id"]: "unverified"}, got
    assert object_requests(s3) == []

    # An incremental chooses its parent through the index, and restore latest finds it.
    grow(db, 5)
    s3.clear_log()
    inc = create(cairn_bin, s3, db, "incremental")
    assert inc["parent_id"] == made[-1]["id"]
    assert ("HEAD", made[0]["id"] + ".cbk") not in object_requests(s3)
    out = tmp_path / "latest.db"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest", "--out", out))
    assert file_rows(out, "SELECT count(*) FROM t") == file_rows(db, "SELECT count(*) FROM t")


def test_a_backup_the_index_does_not_know_is_listed(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 300)
    a = create(cairn_bin, s3, db)
    listing(cairn_bin, s3)
    etag = head(s3, INDEX)
    # Another writer (here: another repository's backup, copied in with boto3) that
    # knows nothing of the index.
    other = s3.url + "-other"
    b = create(cairn_bin, s3, db, repo=other)
    s3.boto().copy_object(Bucket=BUCKET, Key=s3.key(b["id"] + ".cbk"),
                          CopySource={"Bucket": BUCKET,
                                      "Key": s3.prefix + "-other/" + b["id"] + ".cbk"})
    assert head(s3, INDEX) == etag
    s3.clear_log()
    got = listing(cairn_bin, s3)
    assert [e["id"] for e in got] == [a["id"], b["id"]]
    assert got[1]["digest"] == b["digest"] and got[1]["path"] == "%s/%s.cbk" % (s3.url, b["id"])
    # Only the new object was read; the index was written again, with it.
    assert {n for _, n in object_requests(s3)} == {b["id"] + ".cbk"}
    assert head(s3, INDEX) != etag
    s3.clear_log()
    assert listing(cairn_bin, s3) == got
    assert object_requests(s3) == []


def test_an_object_replaced_under_its_name_is_read_again(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 300)
    a = create(cairn_bin, s3, db)
    grow(db, 1)
    b = create(cairn_bin, s3, db, "incremental")
    ok(cairn(cairn_bin, s3, "backup", "verify", "--repo", s3.url, a["id"]))
    before = listing(cairn_bin, s3)
    assert [e["error"] if "error" in e else None for e in before] == [None, None]
    assert before[0]["verified"] == "verified"

    # Same name, same size, one byte of the header changed: another ETag.
    data = bytearray(get(s3, a["id"] + ".cbk"))
    data[200] ^= 0x01
    put(s3, a["id"] + ".cbk", bytes(data))
    got = listing(cairn_bin, s3)
    assert got[0]["id"] == a["id"] and "header" in got[0].get("error", ""), got[0]
    assert got[1].get("error") is None
    r = cairn(cairn_bin, s3, "backup", "verify", "--repo", s3.url, a["id"])
    assert r.returncode == 1 and a["id"] in r.stderr, r
    out = tmp_path / "r.db"
    r = cairn(cairn_bin, s3, "restore", "--repo", s3.url, b["id"], "--out", out)
    assert r.returncode == 1 and not out.exists(), r
    # The damage is what the index now remembers: the next listing says the same
    # without reading the object.
    s3.clear_log()
    assert listing(cairn_bin, s3) == got
    assert object_requests(s3) == []

    # Put back whole, it is a good backup again (another PUT: another version), and its
    # old sidecar still vouches for it (same digest).
    put(s3, a["id"] + ".cbk", bytes(data[:200]) + bytes([data[200] ^ 0x01]) + bytes(data[201:]))
    got = listing(cairn_bin, s3)
    assert got[0].get("error") is None and got[0]["digest"] == a["digest"]
    assert got[0]["verified"] == "verified"


def test_a_deleted_object_disappears(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 300)
    a = create(cairn_bin, s3, db)
    grow(db, 2)
    b = create(cairn_bin, s3, db)
    assert [e["id"] for e in listing(cairn_bin, s3)] == [a["id"], b["id"]]
    s3.boto().delete_object(Bucket=BUCKET, Key=s3.key(b["id"] + ".cbk"))
    assert [e["id"] for e in listing(cairn_bin, s3)] == [a["id"]]
    out = tmp_path / "r.db"
    restored = json.loads(ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest",
                                   "--out", out, "--json")).stdout)
    assert json.dumps(restored).count(a["id"]) >= 1 and b["id"] not in json.dumps(restored)
    s3.clear_log()
    assert [e["id"] for e in listing(cairn_bin, s3)] == [a["id"]]
    assert object_requests(s3) == []


def test_a_garbage_index_is_ignored_and_written_again(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 300)
    made = [create(cairn_bin, s3, db)]
    grow(db, 3)
    made.append(create(cairn_bin, s3, db, "incremental"))
    expected = listing(cairn_bin, s3)
    good = get(s3, INDEX)
    for garbage in (b"", b"not an index", good[:-1], good[:40] + bytes([good[40] ^ 0xFF]) +
                    good[41:], os.urandom(5000)):
        put(s3, INDEX, garbage)
        assert listing(cairn_bin, s3) == expected
        assert get(s3, INDEX)[:8] == b"CAIRNIDX", garbage[:16]
    # A directory is not an index's place: listing it writes none (it reads its files).
    local = tmp_path / "dir-repo"
    e = create(cairn_bin, s3, db, repo=local)
    assert [x["id"] for x in listing(cairn_bin, s3, repo=local)] == [e["id"]]
    assert sorted(os.listdir(local)) == [e["id"] + ".cbk"]


def test_restore_latest_from_the_bucket_alone_on_a_new_machine(cairn_bin, s3, tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 1000)
    made = [create(cairn_bin, s3, db)]
    for i in range(3):
        grow(db, i)
        made.append(create(cairn_bin, s3, db, "incremental"))
    rows = file_rows(db, "SELECT id, hex(v) FROM t ORDER BY id")
    listing(cairn_bin, s3)  # the index exists, as it would after any listing

    # A new machine: an empty HOME, another working directory, nothing but the
    # credentials (environment) and the endpoint.
    home = tmp_path / "newhome"
    home.mkdir()
    work = tmp_path / "newwork"
    work.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(work)}
    got = listing(cairn_bin, s3, env=env)
    assert [e["id"] for e in got] == [e["id"] for e in made]
    r = cairn(cairn_bin, s3, "backup", "list", "--repo", s3.url, env=env)
    assert r.returncode == 0 and made[-1]["id"] in r.stdout, r
    out = work / "db.sqlite"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest", "--out", out, env=env))
    assert integrity(out) == [["ok"]]
    assert file_rows(out, "SELECT id, hex(v) FROM t ORDER BY id") == rows
    assert os.listdir(home) == []
    # Without an index at all (deleted): the same, from the objects.
    s3.boto().delete_object(Bucket=BUCKET, Key=s3.key(INDEX))
    out2 = work / "db2.sqlite"
    ok(cairn(cairn_bin, s3, "restore", "--repo", s3.url, "latest", "--out", out2, env=env))
    assert file_rows(out2, "SELECT id, hex(v) FROM t ORDER BY id") == rows
