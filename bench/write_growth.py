#!/usr/bin/python3
"""`make bench-write-growth`: what the write growth bound costs (--max-write-growth,
counted by a preupdate hook on every row a write changes). Two single-node cairnd of the
same build, started in turns: one with the default bound, one with --max-write-growth 0.
Each takes BENCH_ROUNDS bulk writes (one INSERT ... SELECT of 200,000 rows of an integer,
a text and a real) and 500 single-row INSERTs from one client; medians and totals are
printed side by side. BUILD=build picks the build.
"""
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

from restore_common import free_ports

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = (REPO / os.environ.get("BUILD", "build")).resolve()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BULK = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
        "INSERT INTO t(a, b, c) SELECT x, printf('row-%08d', x), x * 0.5 FROM c")


def side(extra, work):
    data = pathlib.Path(work) / "data"
    shutil.rmtree(data, ignore_errors=True)
    hp, rp = free_ports(2)
    proc = subprocess.Popen([str(BUILD / "cairnd"), "--data-dir", str(data), "--http-addr",
                             "127.0.0.1:%d" % hp, "--raft-addr", "127.0.0.1:%d" % rp] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def post(stmts):
        req = urllib.request.Request("http://127.0.0.1:%d/db/execute" % hp,
                                     data=json.dumps(stmts).encode(),
                                     headers={"Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(req, timeout=300).read())
        assert all("error" not in r for r in body["results"]), body
        return body

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                post(["CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL)"])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling the server's start
        bulk = []
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            post([BULK])
            bulk.append(time.monotonic() - t0)
        t0 = time.monotonic()
        for i in range(500):
            post([["INSERT INTO t(a, b, c) VALUES(?, ?, ?)", i, "s%d" % i, 1.5]])
        return statistics.median(bulk), time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait()


def main():
    sides = [("bound (default, 1 GiB)", []), ("no bound (--max-write-growth 0)",
                                              ["--max-write-growth", "0"])]
    got = {name: ([], []) for name, _ in sides}
    with tempfile.TemporaryDirectory() as work:
        for rnd in range(2):
            for name, extra in (sides if rnd % 2 == 0 else sides[::-1]):
                b, s = side(extra, work)
                got[name][0].append(b)
                got[name][1].append(s)
    print("machine: %s, %d CPUs" % (platform.platform(), os.cpu_count()))
    print("| side | 200,000-row INSERT ... SELECT (median of %d, 2 starts) | 500 single-row "
          "INSERTs |" % ROUNDS)
    print("|---|---|---|")
    for name, _ in sides:
        b, s = got[name]
        print("| %s | %.3f s | %.2f s |" % (name, statistics.median(b), statistics.median(s)))


if __name__ == "__main__":
    main()
