#!/usr/bin/env python3
"""The data of `make bench-backup` (bench/backup.sh): builds the source database and
changes a fraction of its rows between backups.

  generate --out FILE --mb N --seed S    a WAL-mode database of about N MiB
  update --db FILE --fraction F --seed S  new text for a random F of the rows

Both are deterministic for a given seed, end with a TRUNCATE checkpoint (so the main
file alone holds the whole database, for `cp` and restic) and print one JSON object.

The rows are meant to compress like real data, neither random nor zero: an integer
key, a text of words drawn from a Zipf-like vocabulary of made-up words (about 3:1
under zstd), a price-like real and a small integer, and for a quarter of the rows a
blob that is one third random bytes (a token, a digest) and two thirds a JSON-like
record. Uses only Python's standard library and the system's SQLite."""

import argparse
import json
import os
import random
import sqlite3
import sys
import time

SCHEMA = """
CREATE TABLE items(
    k INTEGER PRIMARY KEY,
    txt TEXT NOT NULL,
    num REAL NOT NULL,
    qty INTEGER NOT NULL,
    data BLOB
);
"""
BATCH = 20000
# The index on num is built after the load, then adds about this fraction of the size.
INDEX_SHARE = 0.045


class Words:
    """A vocabulary of made-up words with Zipf-like frequencies."""

    def __init__(self, rng, n=6000):
        syll = ["ka", "lo", "mi", "ser", "tu", "ven", "dra", "po", "ne", "qui", "ro", "sta",
                "be", "ga", "lin", "mor", "ph", "ta", "ul", "wen", "xi", "yo", "zar", "ch",
                "en", "is", "ot", "ar", "um", "el"]
        words = set()
        while len(words) < n:
            words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        w = [1.0 / (i + 1) ** 1.07 for i in range(n)]
        self.cum = []
        acc = 0.0
        for x in w:
            acc += x
            self.cum.append(acc)

    def text(self, rng, lo, hi):
        ws = rng.choices(self.words, cum_weights=self.cum, k=rng.randint(lo, hi))
        # Now and then a number or a capitalised word, as in real prose.
        if rng.random() < 0.5:
            ws[rng.randrange(len(ws))] = str(rng.randint(1, 99999))
        ws[0] = ws[0].capitalize()
        return " ".join(ws) + "."


def row_text(rng, words):
    return words.text(rng, 6, 70)


def row_blob(rng, words):
    if rng.random() >= 0.25:
        return None
    token = rng.randbytes(rng.randint(16, 600))
    rec = json.dumps({"id": rng.randint(1, 1 << 40), "tags": words.text(rng, 2, 8).split(),
                      "note": words.text(rng, 10, 120), "score": round(rng.random(), 4)})
    return token + rec.encode()


def open_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def checkpoint(db):
    busy, log, done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy or log != done:
        raise SystemExit(f"backup_data: checkpoint incomplete (busy {busy}, log {log}, "
                         f"checkpointed {done})")


def size_of(db):
    ps = db.execute("PRAGMA page_size").fetchone()[0]
    pc = db.execute("PRAGMA page_count").fetchone()[0]
    return ps, pc


def generate(args):
    if os.path.exists(args.out):
        raise SystemExit(f"backup_data: {args.out} exists")
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    words = Words(rng)
    db = open_db(args.out)
    db.executescript(SCHEMA)
    target = args.mb * 1024 * 1024 * (1 - INDEX_SHARE)
    k = 0
    while True:
        rows = []
        for _ in range(BATCH):
            k += 1
            rows.append((k, row_text(rng, words), round(rng.lognormvariate(3, 1.2), 2),
                         rng.randint(0, 500), row_blob(rng, words)))
        db.execute("BEGIN")
        db.executemany("INSERT INTO items VALUES(?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        ps, pc = size_of(db)
        if ps * pc >= target:
            break
    db.execute("CREATE INDEX items_num ON items(num)")
    checkpoint(db)
    ps, pc = size_of(db)
    db.close()
    print(json.dumps({"rows": k, "page_size": ps, "page_count": pc, "bytes": ps * pc,
                      "seconds": round(time.monotonic() - t0, 2)}))


def update(args):
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    words = Words(random.Random(args.vocab_seed))
    db = open_db(args.db)
    n = db.execute("SELECT max(k) FROM items").fetchone()[0]
    keys = rng.sample(range(1, n + 1), max(1, round(n * args.fraction)))
    db.execute("BEGIN")
    cur = db.executemany("UPDATE items SET txt = ? WHERE k = ?",
                         ((row_text(rng, words), key) for key in keys))
    changed = cur.rowcount
    db.execute("COMMIT")
    checkpoint(db)
    ps, pc = size_of(db)
    db.close()
    if changed != len(keys):
        raise SystemExit(f"backup_data: updated {changed} rows, meant {len(keys)}")
    print(json.dumps({"rows_changed": changed, "rows": n, "page_size": ps, "page_count": pc,
                      "bytes": ps * pc, "seconds": round(time.monotonic() - t0, 2)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--mb", type=int, default=1024)
    g.add_argument("--seed", type=int, default=1)
    u = sub.add_parser("update")
    u.add_argument("--db", required=True)
    u.add_argument("--fraction", type=float, default=0.01)
    u.add_argument("--seed", type=int, required=True)
    u.add_argument("--vocab-seed", type=int, default=1,
                   help="the seed the database was generated with (same vocabulary)")
    args = ap.parse_args()
    if args.cmd == "generate":
        generate(args)
    else:
        update(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
