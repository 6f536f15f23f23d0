"""A restore that fails or is killed leaves nothing at the destination (issue 17).

`cairn restore --repo DIR ID --out FILE` of a chain of a few tens of MiB (a full backup
and incrementals), run as a real process:

  - its output is the source database, byte for byte, at every backup of the chain;
  - killed with SIGKILL at several points of its run (as soon as it starts, once it has
    the chain open, once it has made the new file, and after delays spread over the
    time a whole restore takes, up to its last steps), it leaves nothing at --out (or,
    killed after its rename, the whole file), and no file beside it when the file
    system has O_TMPFILE (the new file has no name until it is complete); without it
    (CAIRN_RESTORE_TMPFILE=off, the same code path), the hidden file it leaves is
    removed by the next restore to the same place, which succeeds;
  - a hidden file that a live restore holds is left alone;
  - a damaged byte anywhere in the chain (a block of any file, a manifest, a trailer),
    and a page whose bytes do not match its hash under valid checksums, are refused
    with the file and the place named, leaving nothing;
  - a restore that runs out of space leaves nothing;
  - a chain of a full backup and incrementals is written once: the bytes the restore
    writes are the database's size, not the chain's pages.

No test waits by sleeping: every wait polls a condition against a deadline. Kill points
that depend on time are chosen by delays, but nothing asserted depends on where a kill
lands: a restore that finished before its kill must have produced the whole file.
"""

import ctypes
import fcntl
import json
import os
import random
import sqlite3
import struct
import subprocess
import time

import pytest

from conftest import deadline_seconds, flip, mount_tmpfs, wait_until

ROWS = 40000
ROUNDS = 5
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]


def run_cairn(cairn_bin, *args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    e.update(env or {})
    return subprocess.run([str(cairn_bin)] + [str(a) for a in args], capture_output=True,
                          text=True, env=e, stdin=subprocess.DEVNULL,
                          timeout=deadline_seconds(timeout))


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout,
                                                                    r.stderr)
    return r


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_source(path, rng):
    """A database of a few tens of MiB that compresses like real data: text, and blobs
    half random."""
    con = sqlite3.connect(str(path))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, txt TEXT, n REAL, data BLOB)")
    con.execute("CREATE INDEX items_n ON items(n)")
    batch = []
    for i in range(ROWS):
        blob = rng.randbytes(200) + bytes(200) if i % 2 == 0 else None
        batch.append((text(rng, rng.randint(20, 120)), rng.random(), blob))
        if len(batch) == 5000:
            con.executemany("INSERT INTO items(txt, n, data) VALUES(?, ?, ?)", batch)
            batch = []
    con.executemany("INSERT INTO items(txt, n, data) VALUES(?, ?, ?)", batch)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def change(path, rng, fraction=0.03):
    con = sqlite3.connect(str(path))
    ids = rng.sample(range(1, ROWS + 1), int(ROWS * fraction))
    con.executemany("UPDATE items SET txt = ? WHERE id = ?",
                    [(text(rng, rng.randint(20, 140)), i) for i in ids])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def backup(cairn_bin, db, repo, kind, compression=None):
    extra = ["--compression", compression] if compression else []
    return json.loads(ok(run_cairn(cairn_bin, "backup", "create", "--db", db, "--repo", repo,
                                   "--type", kind, "--json", *extra)).stdout)


@pytest.fixture(scope="module")
def chain(cairn_bin, tmp_path_factory):
    """A full backup and ROUNDS incrementals of a database changed between them, with a
    copy of the database at each: [(entry, copy path)], oldest first. Compressed as
    cairn does by default into a directory (LZ4)."""
    return make_chain(cairn_bin, tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def zstd_chain(cairn_bin, tmp_path_factory):
    """The same chain compressed with zstd (--compression zstd)."""
    return make_chain(cairn_bin, tmp_path_factory.mktemp("zstd-chain"), "zstd")


def make_chain(cairn_bin, base, compression=None):
    rng = random.Random(17)
    db = base / "source.db"
    make_source(db, rng)
    repo = base / "repo"
    out = []
    for i in range(ROUNDS + 1):
        if i > 0:
            change(db, rng)
        e = backup(cairn_bin, db, repo, "full" if i == 0 else "incremental", compression)
        copy = base / ("source-%d.db" % i)
        copy.write_bytes(db.read_bytes())
        out.append((e, copy))
    assert db.stat().st_size > 24 << 20, db.stat().st_size
    return repo, out


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return "differ at byte %d (page %d of 4096 bytes)" % (
                            pos + i, (pos + i) // 4096 + 1)
                return "differ in length: %d and %d bytes" % (a.stat().st_size, b.stat().st_size)
            if not x:
                return None
            pos += len(x)


def test_every_backup_of_the_chain_restores_byte_for_byte(cairn_bin, chain, tmp_path):
    repo, entries = chain
    for e, copy in entries:
        out = tmp_path / ("r-%s.db" % e["id"])
        got = json.loads(ok(run_cairn(cairn_bin, "restore", "--repo", repo, e["id"], "--out",
                                      out, "--json")).stdout)
        assert got["restored"]["id"] == e["id"], got
        assert same_bytes(copy, out) is None, (e["id"], same_bytes(copy, out))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        "r-%s.db" % e["id"] for e, _ in entries)


def test_a_chain_is_written_once(cairn_bin, chain, tmp_path):
    """The pages of a chain are written once each, the newest copy only: a restore of
    the full backup and its incrementals writes the database's size, as the full backup
    alone does (ru_oublock: bytes the process dirtied, counted by the kernel)."""
    repo, entries = chain
    size = entries[-1][1].stat().st_size
    e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    written = {}
    for label, bid in (("full", entries[0][0]["id"]), ("chain", entries[-1][0]["id"])):
        out = tmp_path / ("%s.db" % label)
        p = subprocess.Popen([str(cairn_bin), "restore", "--repo", str(repo), bid, "--out",
                              str(out), "--keep-internal"], env=e, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        assert p.returncode == 0, p.stderr.read()
        written[label] = usage.ru_oublock * 512
    if written["chain"] == 0:
        pytest.skip("this file system does not count the bytes a process writes")
    assert written["chain"] <= size * 1.05 + (1 << 20), (written, size)


# ---------------------------------------------------------------------------
# killed restores


def tmpfile_supported(d):
    try:
        fd = os.open(str(d), os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        return False
    os.close(fd)
    return True


def fds_of(pid):
    """(the /proc path of each descriptor process pid holds, what it opens): a file with
    no name shows as "DIR/#12345 (deleted)" or "PATH (deleted)". Descriptors closed
    meanwhile, or a process gone, are left out."""
    fds = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fds)
    except OSError:
        return []
    out = []
    for n in names:
        try:
            out.append((os.path.join(fds, n), os.readlink(os.path.join(fds, n))))
        except OSError:
            pass
    return out


def fd_targets(pid):
    return [target for _, target in fds_of(pid)]


def hidden_files(dest, out):
    return sorted(n for n in os.listdir(dest) if n.startswith("." + out.name + ".restore-"))


def spawn(cairn_bin, repo, bid, out, env):
    e = {k: v for k, v in os.environ.items() if k != "CAIRN_HOST"}
    e.update(env)
    return subprocess.Popen([str(cairn_bin), "restore", "--repo", str(repo), bid, "--out",
                             str(out), "--json"], env=e, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when(p, cond, what, timeout=60):
    """SIGKILL p once cond() holds (or p has ended on its own): True when the kill
    ended it."""
    wait_until(lambda: p.poll() is not None or cond(), timeout, what, interval=0.001)
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=deadline_seconds(30))
    return p.returncode == -9


@pytest.mark.parametrize("tmpfile", ["auto", "off"])
def test_a_restore_killed_at_any_point_leaves_nothing(cairn_bin, chain, tmp_path, tmpfile):
    repo, entries = chain
    last, copy = entries[-1]
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "out.db"
    env = {"CAIRN_RESTORE_TMPFILE": tmpfile}
    anonymous = tmpfile == "auto" and tmpfile_supported(dest)

    # How long a whole restore takes here (the quickest of three), to spread the kills
    # over it.
    whole = None
    for _ in range(3):
        t0 = time.monotonic()
        ok(run_cairn(cairn_bin, "restore", "--repo", repo, last["id"], "--out", out, env=env))
        took = time.monotonic() - t0
        whole = took if whole is None else min(whole, took)
        assert same_bytes(copy, out) is None
        out.unlink()

    points = [("at once", lambda: True),
              ("with the chain open", lambda: any(t.endswith(".cbk") for t in fd_targets(p.pid))),
              ("with the new file made", lambda: any(t.startswith(str(dest) + "/")
                                                     for t in fd_targets(p.pid)))]
    if not anonymous:
        points.append(("with the hidden file there", lambda: hidden_files(dest, out)))
    timed = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
    for f in timed:
        points.append(("after %.0f%% of a restore's time" % (100 * f),
                       (lambda f: lambda: time.monotonic() >= start + f * whole)(f)))

    killed, left_behind = [], []
    for what, cond in points:
        start = time.monotonic()
        p = spawn(cairn_bin, repo, last["id"], out, env)
        if kill_when(p, cond, "a restore %s" % what):
            killed.append(what)
            # Nothing at --out; or, killed after its rename (its last steps are the
            # directory's fsync and the answer), the whole file.
            there = [out.name] if out.exists() else []
            if there:
                assert same_bytes(copy, out) is None, "killed %s: a partial %s" % (what, out)
            left = hidden_files(dest, out)
            if anonymous:
                assert os.listdir(dest) == there, "killed %s: %r left" % (what, os.listdir(dest))
            else:
                assert sorted(os.listdir(dest)) == sorted(left + there), os.listdir(dest)
                left_behind += left
        else:
            assert p.returncode == 0, (what, p.returncode, p.stderr)
            assert same_bytes(copy, out) is None
        # The next restore to the same place succeeds, and removes what a killed one
        # left.
        r = run_cairn(cairn_bin, "restore", "--repo", repo, last["id"], "--out", out,
                      "--force", env=env)
        ok(r)
        assert os.listdir(dest) == ["out.db"], (what, os.listdir(dest))
        assert same_bytes(copy, out) is None
        out.unlink()
    # The kills land while the restore runs: those that wait for a condition, and most
    # of those spread over its time (a late one may find it done on a quick run).
    assert killed[:3] == [w for w, _ in points[:3]], killed
    assert len(killed) >= len(points) - len(timed) // 2, (killed, whole)
    # Without O_TMPFILE, kills left hidden files, which the next restore removed.
    assert anonymous or left_behind, killed


def test_a_dead_restores_hidden_file_is_removed_and_a_live_ones_kept(cairn_bin, chain,
                                                                     tmp_path):
    repo, entries = chain
    last, copy = entries[-1]
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "out.db"
    dead = dest / ".out.db.restore-Dead01"
    dead.write_bytes(b"half a database")
    (dest / ".out.db.restore-Dead01-journal").write_bytes(b"a journal")
    orphan = dest / ".out.db.restore-Gone02-journal"  # its file is gone
    orphan.write_bytes(b"a journal")
    live = dest / ".out.db.restore-Live03"
    live.write_bytes(b"being written")
    other = dest / ".other.db.restore-Else04"  # another destination's
    other.write_bytes(b"not ours")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        ok(run_cairn(cairn_bin, "restore", "--repo", repo, last["id"], "--out", out,
                     env={"CAIRN_RESTORE_TMPFILE": "off"}))
    assert sorted(os.listdir(dest)) == sorted([out.name, live.name, other.name])
    assert same_bytes(copy, out) is None


# ---------------------------------------------------------------------------
# damage


class Native:
    """libzstd, liblz4 and libxxhash through ctypes: to rewrite a .cbk file as its
    writer would, around a changed page (its codec: header byte 49 of version 2)."""

    class XXH128(ctypes.Structure):
        _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]

    def __init__(self):
        try:
            self.z = ctypes.CDLL("libzstd.so.1")
            self.x = ctypes.CDLL("libxxhash.so.0")
            self.l = ctypes.CDLL("liblz4.so.1")
        except OSError as e:
            pytest.skip("libzstd, liblz4 or libxxhash not loadable: %s" % e)
        for f in ("LZ4_compress_default", "LZ4_decompress_safe"):
            getattr(self.l, f).restype = ctypes.c_int
            getattr(self.l, f).argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                           ctypes.c_int]
        self.z.ZSTD_compress.restype = ctypes.c_size_t
        self.z.ZSTD_compress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                         ctypes.c_size_t, ctypes.c_int]
        self.z.ZSTD_decompress.restype = ctypes.c_size_t
        self.z.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                           ctypes.c_size_t]
        self.z.ZSTD_compressBound.restype = ctypes.c_size_t
        self.z.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        self.x.XXH3_64bits.restype = ctypes.c_uint64
        self.x.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.x.XXH3_128bits.restype = Native.XXH128
        self.x.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

    def decompress(self, frame, n, lz4=False):
        buf = ctypes.create_string_buffer(n)
        if lz4:
            got = self.l.LZ4_decompress_safe(frame, buf, len(frame), n)
        else:
            got = self.z.ZSTD_decompress(buf, n, frame, len(frame))
        assert got == n, got
        return buf.raw

    def compress(self, data, lz4=False):
        if lz4:
            cap = len(data) + len(data) // 255 + 16
            buf = ctypes.create_string_buffer(cap)
            got = self.l.LZ4_compress_default(data, buf, len(data), cap)
            assert 0 < got <= cap, got
            return buf.raw[:got]
        cap = self.z.ZSTD_compressBound(len(data))
        buf = ctypes.create_string_buffer(cap)
        got = self.z.ZSTD_compress(buf, cap, data, len(data), 3)
        assert got < cap, got
        return buf.raw[:got]

    def xxh64(self, data):
        return self.x.XXH3_64bits(data, len(data))

    def digest(self, data):
        h = self.x.XXH3_128bits(data, len(data))
        return struct.pack(">QQ", h.high64, h.low64)


def blocks_of(data):
    """(offset, n, page numbers, head size, compressed length) of each block."""
    footer = len(data) - 96
    manifest = struct.unpack_from("<Q", data, footer + 48)[0]
    off, out = 512, []
    while off < manifest:
        n = struct.unpack_from("<I", data, off + 4)[0]
        pgnos = struct.unpack_from("<%dI" % n, data, off + 8)
        head = 16 + 4 * n
        comp = struct.unpack_from("<I", data, off + head - 4)[0]
        out.append((off, n, pgnos, head, comp))
        off += head + comp + 8
    assert off == manifest
    return out, manifest


def tamper_page(path, which_block):
    """Change one byte of a page inside block `which_block` of the .cbk at path, and
    write the file again as the writer would have: the block's frame, lengths and
    checksum, the footer and the trailer's digest all consistent. Only the page's hash
    in the manifest tells. Returns (block index, block offset, page number)."""
    nat = Native()
    data = open(path, "rb").read()
    blocks, manifest = blocks_of(data)
    idx = which_block if which_block >= 0 else len(blocks) + which_block
    off, n, pgnos, head, comp = blocks[idx]
    lz4 = struct.unpack_from("<I", data, 8)[0] == 2 and data[49] == 1
    raw = bytearray(nat.decompress(data[off + head:off + head + comp], n * 4096, lz4))
    k = n // 2
    raw[k * 4096 + 2000] ^= 0x5A
    frame = nat.compress(bytes(raw), lz4)
    block = bytearray(data[off:off + head])
    struct.pack_into("<I", block, head - 4, len(frame))
    block += frame
    block += struct.pack("<Q", nat.xxh64(bytes(block)))
    body = bytearray(data[:off]) + block + data[off + head + comp + 8:len(data) - 96]
    footer = bytearray(data[len(data) - 96:len(data) - 32])
    compressed = struct.unpack_from("<Q", footer, 32)[0] - comp + len(frame)
    struct.pack_into("<Q", footer, 32, compressed)
    struct.pack_into("<Q", footer, 48, manifest - comp + len(frame))
    struct.pack_into("<Q", footer, 56, nat.xxh64(bytes(footer[:56])))
    body += footer
    trailer = b"CAIRNEND" + struct.pack("<Q", len(body) + 32) + nat.digest(bytes(body))
    open(path, "wb").write(bytes(body) + trailer)
    return idx, off, pgnos[k]


@pytest.fixture(params=["lz4", "zstd"])
def chain_copy(request, tmp_path):
    """A copy of the chain's repository (LZ4, as by default, or zstd), for a test to
    damage."""
    repo, entries = request.getfixturevalue("chain" if request.param == "lz4" else "zstd_chain")
    mine = tmp_path / "repo"
    mine.mkdir()
    for p in repo.iterdir():
        (mine / p.name).write_bytes(p.read_bytes())
    return mine, [(e, c) for e, c in entries]


def refused(cairn_bin, repo, bid, tmp_path, env=None):
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    r = run_cairn(cairn_bin, "restore", "--repo", repo, bid, "--out", dest / "out.db",
                  env=env)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert os.listdir(dest) == [], os.listdir(dest)
    return r.stderr


@pytest.mark.parametrize("member", [0, 2, ROUNDS])
@pytest.mark.parametrize("part", ["first block", "middle block", "last block", "manifest",
                                  "trailer"])
def test_a_damaged_byte_anywhere_in_the_chain_is_refused_with_its_place(
        cairn_bin, chain_copy, tmp_path, member, part):
    repo, entries = chain_copy
    victim = entries[member][0]
    path = repo / os.path.basename(victim["path"])
    data = path.read_bytes()
    blocks, manifest = blocks_of(data)
    if part == "manifest":
        at, words = manifest + 16 + 8 * 7, ["manifest"]
    elif part == "trailer":
        at, words = len(data) - 4, ["digest"]  # in the digest itself
    else:
        b = blocks[{"first block": 0, "middle block": len(blocks) // 2, "last block": -1}[part]]
        idx = blocks.index(b)
        at, words = b[0] + b[3] + b[4] // 2, ["block %d at offset %d" % (idx, b[0]), "checksum"]
    flip(path, at, 1)
    err = refused(cairn_bin, repo, entries[-1][0]["id"], tmp_path)
    assert str(path) in err or victim["id"] in err, err
    assert all(w in err for w in words), (words, err)


def test_a_page_that_does_not_match_its_hash_is_refused_with_its_page(cairn_bin, chain_copy,
                                                                      tmp_path):
    """Checksums and digests that add up around a changed page: only the page's hash
    can tell. In the backup restored (the newest), and in the full backup restored
    alone; in a parent, the child's parent digest tells first."""
    repo, entries = chain_copy
    newest, full = entries[-1][0], entries[0][0]
    path = repo / os.path.basename(newest["path"])
    idx, off, pg = tamper_page(path, 1)
    err = refused(cairn_bin, repo, newest["id"], tmp_path)
    assert str(path) in err, err
    assert "block %d at offset %d: page %d does not match" % (idx, off, pg) in err, err

    path = repo / os.path.basename(full["path"])
    idx, off, pg = tamper_page(path, -2)
    err = refused(cairn_bin, repo, full["id"], tmp_path)
    assert "block %d at offset %d: page %d does not match" % (idx, off, pg) in err, err
    err = refused(cairn_bin, repo, entries[1][0]["id"], tmp_path)
    assert str(path) in err and "digest" in err, err


def test_a_restore_out_of_space_leaves_nothing(cairn_bin, chain, tmp_path):
    repo, entries = chain
    small = tmp_path / "small"
    mount_tmpfs(small, 8)
    try:
        for env in ({}, {"CAIRN_RESTORE_TMPFILE": "off"}):
            r = run_cairn(cairn_bin, "restore", "--repo", repo, entries[-1][0]["id"], "--out",
                          small / "out.db", env=env)
            assert r.returncode == 1, r
            assert "no space left" in r.stderr, r.stderr
            assert os.listdir(small) == [], os.listdir(small)
    finally:
        subprocess.run(["umount", str(small)], check=False)
