#!/usr/bin/env python3
"""Turns the JSON lines of one `make bench-backup` run (bench/backup.sh) into the section
"## Backups (issue: backups)" of docs/BENCHMARKS.md, prints it, and (with --doc) replaces
that section in the file, keeping every other section as it is, and the section's own
text written by hand above the line HAND_MARK.

--jsonl holds one line per timed run ({"op": "full" | "incremental" | "restore", "tool",
"run", "seconds", "rss_kib", "bytes", ...}) and one per change of the data ({"op":
"change", "round", "update", "pages"}); --meta holds KEY=VALUE lines about the machine
and the run."""

import argparse
import json
import os
import statistics
import sys

SECTION = "## Backups (issue: backups)"
# In the section, the line that ends the text written by hand: a run replaces only what
# follows it.
HAND_MARK = "<!-- bench/backup_report.py replaces what follows this line -->"
DOC_HEADER = """# Benchmarks

Each section below is written by the benchmark that measures it, with the machine it ran
on; rerun the command it names to reproduce it. Numbers from different machines are not
comparable: compare within a section, where every figure comes from the same run.
"""
MIB = 1024 * 1024
RSS_LIMIT_MIB = 64.0
FULL_VS_CP = 2.0
INCR_VS_PAGES = 2.0
RESTORE_VS_CP = 1.5  # issue 17

# (op, tool) -> how the table names it; the first of each op is its baseline.
NAMES = {
    ("full", "cp"): "`cp` + `sync` of the file",
    ("full", "sqlite3-backup"): "`sqlite3 DB .backup` + `sync`",
    ("full", "vacuum-into"): "`sqlite3 DB 'VACUUM INTO'` + `sync`",
    ("full", "restic"): "`restic backup` (new repository)",
    ("full", "cairn"): "**cairn** `backup create --type full`",
    ("incremental", "restic"): "`restic backup` (next snapshot)",
    ("incremental", "cairn"): "**cairn** `backup create --type incremental`",
    ("restore", "cp"): "`cp` + `sync` of the file",
    ("restore", "restic"): "`restic restore latest` + `sync`",
    ("restore", "quick-check"): "`sqlite3 DB 'PRAGMA quick_check'` alone (a restore runs it on its output)",
    ("restore", "integrity-check"): "`sqlite3 DB 'PRAGMA integrity_check'` alone (what `--check full` runs instead)",
    ("restore", "cairn"): "**cairn** `restore` (full + incrementals)",
    ("restore", "cairn-full"): "**cairn** `restore` of the full backup alone (the database before the changes)",
    ("restore", "cairn-check-full"): "**cairn** `restore --check full` (full + incrementals; "
                                     "PRAGMA integrity_check of the output; no target)",
}
OPS = [("full", "Full backup", "cp"), ("incremental", "Incremental", "restic"),
       ("restore", "Restore", "cp")]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def mib(b):
    return f"{b / MIB:,.1f} MiB"


def secs(s):
    return f"{s:.2f}"


def ratio(x):
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


class Stat:
    """The measured runs of one tool at one operation."""

    def __init__(self, runs):
        self.runs = runs
        self.seconds = statistics.median(r["seconds"] for r in runs)
        self.lo = min(r["seconds"] for r in runs)
        self.hi = max(r["seconds"] for r in runs)
        self.bytes = statistics.median(r["bytes"] for r in runs)
        self.rss_kib = max(r["rss_kib"] for r in runs)
        self.db_bytes = statistics.median(r["db_bytes"] for r in runs)
        self.cpu = statistics.median(r["user_s"] + r["sys_s"] for r in runs)
        self.mib_s = self.db_bytes / MIB / self.seconds if self.seconds > 0 else float("inf")


def stats(runs):
    out = {}
    for op, _, _ in OPS:
        for r in runs:
            if r.get("op") == op and r["run"] != "warm":
                out.setdefault((op, r["tool"]), []).append(r)
    return {k: Stat(v) for k, v in out.items()}


def main_table(st, changes, meta):
    lines = ["| operation | tool | seconds: median (min–max) | MiB/s of the database "
             "| bytes written | peak RSS | CPU s | time ÷ baseline |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    runs = meta.get("runs", "3")
    rounds = meta.get("rounds", "10")
    what = {
        "full": f"full backup, median of {runs}",
        "incremental": f"incremental after {pct(meta)} of rows changed, median of {rounds}",
        "restore": f"restore of the last incremental (full + {rounds}), median of {runs}",
    }
    for op, _, base_tool in OPS:
        base = st.get((op, base_tool))
        for (o, tool), name in NAMES.items():
            if o != op:
                continue
            s = st.get((op, tool))
            if s is None:
                if tool == "cairn":
                    lines.append(f"| {what[op]} | {name} | not measured | | | | | |")
                continue
            rel = ("baseline" if tool == base_tool else
                   ratio(s.seconds / base.seconds) if base and base.seconds > 0 else "—")
            spread = f" ({secs(s.lo)}–{secs(s.hi)})" if len(s.runs) > 1 else ""
            lines.append(f"| {what[op]} | {name} | {secs(s.seconds)}{spread} | {s.mib_s:,.0f} | "
                         f"{mib(s.bytes)} | {s.rss_kib / 1024:.1f} MiB | {s.cpu:.2f} | {rel} |")
        if op == "incremental" and changes:
            z = statistics.median(c["pages"]["compressed_bytes"] for c in changes)
            raw = statistics.median(c["pages"]["changed_bytes"] for c in changes)
            lines.append(f"| {what[op]} | the changed pages ({mib(raw)}) at zstd level "
                         f"{meta.get('cairn_level', '?')}, the yardstick | | | {mib(z)} | | | |")
    return lines


def pct(meta):
    f = float(meta.get("fraction", "0.01"))
    return f"{100 * f:g}%"


def targets(st, changes, meta):
    rows = []  # (target, measured, result)

    def cairn(op):
        return st.get((op, "cairn"))

    full, sq, cp = cairn("full"), st.get(("full", "sqlite3-backup")), st.get(("full", "cp"))
    if full and sq:
        rows.append(("full backup at least as fast as `sqlite3 .backup`",
                     f"{secs(full.seconds)} s vs {secs(sq.seconds)} s: "
                     f"{ratio(full.seconds / sq.seconds)}",
                     full.seconds <= sq.seconds))
    else:
        rows.append(("full backup at least as fast as `sqlite3 .backup`", "cairn not measured",
                     None))
    if full and cp:
        rows.append((f"full backup within {FULL_VS_CP:g}× of `cp`",
                     f"{secs(full.seconds)} s vs {secs(cp.seconds)} s: "
                     f"{ratio(full.seconds / cp.seconds)}",
                     full.seconds <= FULL_VS_CP * cp.seconds))
    else:
        rows.append((f"full backup within {FULL_VS_CP:g}× of `cp`", "cairn not measured", None))
    incr = [r for r in cairn("incremental").runs] if cairn("incremental") else []
    by_round = {c["round"]: c for c in changes}
    ratios = [r["bytes"] / by_round[int(r["run"])]["pages"]["compressed_bytes"]
              for r in incr if int(r["run"]) in by_round
              and by_round[int(r["run"])]["pages"]["compressed_bytes"] > 0]
    name = (f"incremental bytes at most {INCR_VS_PAGES:g}× the compressed size of the changed "
            f"pages (zstd level {meta.get('cairn_level', '?')}, every incremental)")
    if ratios:
        rows.append((name, f"worst {ratio(max(ratios))}, median "
                     f"{ratio(statistics.median(ratios))} over {len(ratios)} incrementals",
                     max(ratios) <= INCR_VS_PAGES))
    else:
        rows.append((name, "cairn not measured", None))
    rest, rcp = cairn("restore"), st.get(("restore", "cp"))
    qck = st.get(("restore", "quick-check"))
    if rest and rcp:
        floor = (f"; `PRAGMA quick_check` alone {secs(qck.seconds)} s, "
                 f"{ratio(qck.seconds / rcp.seconds)}" if qck and rcp.seconds > 0 else "")
        # The medians decide. The fastest runs are given beside them: writing 1 GiB
        # through the page cache swings by several times on a virtual machine whose
        # host takes freed memory back, and the best run of each is the one the host
        # disturbed least.
        best = (f"; fastest runs {secs(rest.lo)} s vs {secs(rcp.lo)} s: "
                f"{ratio(rest.lo / rcp.lo)}" if rcp.lo > 0 else "")
        rows.append((f"restore of the chain within {RESTORE_VS_CP:g}× of `cp`",
                     f"{secs(rest.seconds)} s vs {secs(rcp.seconds)} s: "
                     f"{ratio(rest.seconds / rcp.seconds)}{best}{floor}",
                     rest.seconds <= RESTORE_VS_CP * rcp.seconds))
    else:
        rows.append((f"restore of the chain within {RESTORE_VS_CP:g}× of `cp`",
                     "cairn not measured", None))
    peaks = [(op, cairn(op).rss_kib / 1024) for op, _, _ in OPS if cairn(op)]
    if st.get(("restore", "cairn-full")):
        peaks.append(("restore of the full alone", st[("restore", "cairn-full")].rss_kib / 1024))
    if st.get(("restore", "cairn-check-full")):
        peaks.append(("restore with --check full",
                      st[("restore", "cairn-check-full")].rss_kib / 1024))
    if peaks:
        worst = max(p for _, p in peaks)
        rows.append((f"peak RSS under {RSS_LIMIT_MIB:g} MiB (every cairn command)",
                     ", ".join(f"{op} {p:.1f} MiB" for op, p in peaks), worst < RSS_LIMIT_MIB))
    else:
        rows.append((f"peak RSS under {RSS_LIMIT_MIB:g} MiB", "cairn not measured", None))
    return rows


def rounds_table(runs, changes):
    tool_run = {(r["op"], r["tool"], r["run"]): r for r in runs if "tool" in r}
    out = ["| change | rows changed | pages changed | of the pages | changed bytes | at zstd "
           "| cairn bytes | cairn ÷ zstd | cairn s | restic bytes | restic s |",
           "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c in changes:
        p, u = c["pages"], c["update"]
        cr = tool_run.get(("incremental", "cairn", str(c["round"])))
        rr = tool_run.get(("incremental", "restic", str(c["round"])))
        z = p["compressed_bytes"]
        out.append("| " + " | ".join([
            str(c["round"]), f"{u['rows_changed']:,}", f"{p['changed_pages']:,}",
            f"{100 * p['changed_pages'] / p['page_count']:.1f}%", mib(p["changed_bytes"]),
            mib(z), mib(cr["bytes"]) if cr else "—",
            ratio(cr["bytes"] / z) if cr and z else "—", secs(cr["seconds"]) if cr else "—",
            mib(rr["bytes"]) if rr else "—", secs(rr["seconds"]) if rr else "—",
        ]) + " |")
    return out


def every_run(runs):
    out = ["| operation | tool | run | seconds | peak RSS MiB | bytes written | dirtied in the "
           "page cache | user s | system s |",
           "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        if r.get("op") == "change":
            continue
        out.append("| " + " | ".join([
            r["op"], r["tool"], r["run"], secs(r["seconds"]), f"{r['rss_kib'] / 1024:.1f}",
            mib(r["bytes"]), mib(r["io_bytes"]), f"{r['user_s']:.2f}", f"{r['sys_s']:.2f}",
        ]) + " |")
    return out


def notes(st, meta):
    """Observations that follow from the figures of this run."""
    out = []
    db = int(meta.get("source_bytes", "0"))
    rf, ri = st.get(("full", "restic")), st.get(("incremental", "restic"))
    if rf and ri and rf.bytes > 0:
        out.append(f"- restic's next snapshot after a change added {mib(ri.bytes)}, "
                   f"{100 * ri.bytes / rf.bytes:.0f}% of its full backup: its content-defined "
                   "chunks average 1 MiB, and a change that touches a few percent of the pages, "
                   "spread over the file, touches nearly every chunk.")
    for op in ("full", "incremental"):
        c = st.get((op, "cairn"))
        if c and db:
            dirtied = statistics.median(r["io_bytes"] for r in c.runs)
            extra = dirtied - c.bytes
            if extra > 0.5 * db:
                out.append(f"- cairn's {op} backup wrote {mib(dirtied)} in all but kept "
                           f"{mib(c.bytes)}: {mib(extra)} more than its backup file (a "
                           "standalone backup reads the source in place and writes nothing "
                           "else, src/backup/snapread.h: look for what else wrote).")
    for op in ("full", "incremental", "restore"):
        c = st.get((op, "cairn"))
        if c and c.cpu > 1.3 * c.seconds:
            out.append(f"- cairn's {op} used {c.cpu:.1f} CPU-seconds in {c.seconds:.1f} s: more "
                       "than one CPU.")
    rest, rfull = st.get(("restore", "cairn")), st.get(("restore", "cairn-full"))
    if rest and rfull:
        dirtied = statistics.median(r["io_bytes"] for r in rest.runs)
        dirtied_full = statistics.median(r["io_bytes"] for r in rfull.runs)
        out.append(f"- Written once: the restore of the full backup and {meta.get('rounds', '10')} "
                   f"incrementals dirtied {mib(dirtied)} in the page cache for a database of "
                   f"{mib(rest.bytes)}; the full backup alone, {mib(dirtied_full)} for "
                   f"{mib(rfull.bytes)}. Each page is taken from the newest backup that holds "
                   f"it and written once, the files of the chain merged in page order (the "
                   f"full backup alone restores in {secs(rfull.seconds)} s, the chain in "
                   f"{secs(rest.seconds)} s: the incrementals add their reading and "
                   "decompressing, not writing).")
    qck, rcp = st.get(("restore", "quick-check")), st.get(("restore", "cp"))
    if rest and qck and rcp:
        out.append(f"- `PRAGMA quick_check`, which a restore runs on the file it writes, takes "
                   f"{secs(qck.seconds)} s alone here ({ratio(qck.seconds / rcp.seconds)} `cp`; "
                   f"single-threaded). It reads the file twice: SQLite 3.40's b-tree pass takes "
                   f"each page's children from the last to the first, so it goes down the file "
                   f"from its end; then the scan of each table goes up it. A restore starts it "
                   f"with the writing, each read waiting for its page, but the b-tree pass wants "
                   f"the end of the file first, so the check runs after the last page is "
                   f"written, beside the fsync. There a thread of the restore reads the file "
                   f"ahead of it (in 256 KiB chunks, in the direction it goes) on the other "
                   f"CPU, so that the check's own CPU goes to SQLite rather than to the kernel's "
                   f"copies. The {RESTORE_VS_CP:g}× target leaves "
                   f"{secs(max(0.0, RESTORE_VS_CP * rcp.seconds - qck.seconds))} s for the rest.")
        nproc = int(meta.get("nproc", "0") or 0)
        if nproc > 0 and rest.cpu / nproc > RESTORE_VS_CP * rcp.seconds:
            by = [kv.rsplit(":", 1) for kv in meta.get("restore_cpu_by_dso", "").split(",") if ":" in kv]
            where = ""
            if by:
                where = (" Where it went (perf, one more restore): " + ", ".join(
                    f"{name} {float(share):.0f}% ({float(share) * rest.cpu / 100:.2f} CPU-s)"
                    for name, share in by[:5]) + ".")
            out.append(f"- A floor under the restore's time on this machine: it used "
                       f"{rest.cpu:.2f} CPU-seconds, so on {nproc} CPUs it cannot take less than "
                       f"{secs(rest.cpu / nproc)} s however well its parts overlap, "
                       f"{ratio(rest.cpu / nproc / rcp.seconds)} `cp`, against the "
                       f"{RESTORE_VS_CP:g}× target ({secs(RESTORE_VS_CP * rcp.seconds)} s).{where}")
        if rest.cpu > 1.3 * rest.seconds and rest.cpu > 2 * rcp.cpu:
            out.append(f"- The restore keeps more than one of the {meta.get('nproc', '?')} CPUs "
                       f"busy, `cp` waits on the disk: cairn used {rest.cpu:.2f} CPU-seconds in "
                       f"{secs(rest.seconds)} s (decompressing and hashing every page of every "
                       f"file applied, {mib(rest.bytes)} copied into the page cache, the backups "
                       f"and the check's reads), `cp` + `sync` {rcp.cpu:.2f} in "
                       f"{secs(rcp.seconds)} s.")
    if out:
        out.insert(0, "Notes on this run:")
        out.insert(1, "")
        out.append("")
    return out


def section(runs, meta):
    st = stats(runs)
    changes = sorted((r for r in runs if r.get("op") == "change"), key=lambda c: c["round"])
    db = int(meta.get("source_bytes", "0"))
    rows = int(meta.get("source_rows", "0"))
    nruns = meta.get("runs", "3")
    nrounds = meta.get("rounds", "10")
    level = meta.get("cairn_level", "?")
    out = [SECTION, ""]
    out.append(f"Measured {meta.get('date', '?')} with "
               f"`{meta.get('command', 'make bench-backup')}` at commit {meta.get('commit', '?')}; "
               f"the run took {meta.get('total_s', '?')} s.")
    out.append("")
    out.append(f"Machine: {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), "
               f"{meta.get('memory', '?')} RAM, {meta.get('kernel', '?')}; every file on "
               f"{meta.get('filesystem', '?')}; sqlite3 {meta.get('sqlite', '?')}, restic "
               f"{meta.get('restic', '?')} (repository format "
               f"{meta.get('restic_repository_version', '?')}, compression auto), zstd "
               f"{meta.get('zstd', '?')}, coreutils {meta.get('coreutils', '?')}. Every tool "
               "shares these CPUs and this disk with the rest of the machine: load average "
               f"(1, 5, 15 min) "
               f"{meta.get('load_before', '?')} before the run, {meta.get('load_after', '?')} "
               "at its end.")
    out.append("")
    out.append(f"Database: {mib(db)} ({db:,} bytes, {rows:,} rows, "
               f"{meta.get('source_page_size', '?')}-byte pages, WAL mode).")
    out.append("")
    if meta.get("baselines_only") == "1":
        out.append("**cairn was not measured in this run** (`BENCH_BACKUP_BASELINES_ONLY=1`: "
                   "its backup commands were not built yet); the baselines were.")
        out.append("")
    out += main_table(st, changes, meta)
    out.append("")
    out.append("| target | measured | result |")
    out.append("|---|---|---|")
    tg = targets(st, changes, meta)
    for name, measured, ok in tg:
        res = "not measured" if ok is None else ("PASS" if ok else "**FAIL**")
        out.append(f"| {name} | {measured} | {res} |")
    out.append("")
    missed = [n for n, _, ok in tg if ok is False]
    if any(ok is None for _, _, ok in tg):
        out.append("Targets not measured: cairn's backup commands were not part of this run.")
    elif missed:
        out.append("**Targets missed:** " + "; ".join(missed) + ".")
    else:
        out.append("All targets met.")
    out.append("")
    cmp_note = {"identical": "identical byte for byte",
                "counters": "identical but for the three counters of the database header "
                            "that SQLite's online backup API rewrites in its copy (file change "
                            "counter, schema cookie, version-valid-for)"}
    out.append(f"Every restored file was compared with the source page by page: "
               f"{cmp_note.get(meta.get('restore_compare', ''), meta.get('restore_compare', '?'))}"
               ". A difference anywhere else fails the run.")
    out.append("")
    out += notes(st, meta)
    out.append("### What was measured")
    out.append("")
    out.append(
        "- **Database**: one table `items(k INTEGER PRIMARY KEY, txt TEXT, num REAL, qty "
        "INTEGER, data BLOB)` and an index on `num`, built by `bench/backup_data.py`: text of "
        "6 to 70 words from a Zipf-like vocabulary of made-up words, and for a quarter of the "
        "rows a blob that is one third random bytes and two thirds a JSON-like record, so that "
        "the file compresses about 3:1 with zstd, like real data. WAL mode, checkpointed "
        "(TRUNCATE) after every change, so the main file alone is the database for `cp` and "
        "restic. Built once and cached by its parameters; every run works on a fresh copy.")
    out.append(
        f"- **Full backup**: each tool reads the same file and writes into the same directory "
        f"on the same disk, into a fresh destination (a new file, a new restic repository "
        f"(its `init` not timed), a new cairn repository). Each tool runs once to warm up, "
        f"then {nruns} times, the tools in another order each run (rotated, and reversed "
        f"every other run, so that none always follows the same one); the table gives the median time, the largest peak "
        f"RSS. Nothing "
        f"is dropped from the page cache: the source file is in memory for every tool (both "
        f"sides run warm), so the figures are CPU and write bound, not read bound.")
    out.append(
        f"- **Incremental**: {nrounds} times: `UPDATE items SET txt = <new text>` for a random "
        f"{pct(meta)} of the keys in one transaction, checkpoint, then restic's next snapshot of "
        f"the file (parent: the previous snapshot) and cairn's incremental (parent: the previous "
        f"backup). Each incremental is a different backup, so each is measured once and the "
        f"table gives the median of the {nrounds}; bytes written are the bytes added to the "
        f"repository. The yardstick is computed by `bench/backup_pages.c`: the pages whose "
        f"XXH3-128 differs from the previous version (and any page past its end), concatenated "
        f"in page order and compressed with zstd at level {level} in independent blocks of "
        f"{meta.get('cairn_block_pages', '?')} pages, cairn's block size and the zstd level "
        f"it uses when asked for zstd. cairn compresses with LZ4 by default into a directory "
        f"(faster to restore, about an eighth larger), so the yardstick is smaller than its "
        f"files could be: the target holds with that margin.")
    out.append(
        f"- **Restore**: cairn restores the last incremental (its chain: the full backup and "
        f"{nrounds} incrementals) into a new file (`cairn restore --repo DIR ID --out FILE`: "
        f"every page checked against its hash and the chain's digests, then `PRAGMA "
        f"quick_check`, the default); `cp` copies the database file; restic restores its "
        f"latest snapshot into a new directory; `sqlite3` runs `PRAGMA quick_check` and "
        f"`PRAGMA integrity_check` on the source (read-only), the checks a restore runs on "
        f"its output before it renames it into place, by default and with `--check full`; "
        f"cairn restores the chain's full backup alone (compared with the database before the "
        f"changes), and the chain again with `--check full` (`PRAGMA integrity_check` of its "
        f"output instead of `quick_check`, what scheduled drills run; no target). Warm-up run, then {nruns} measured, in a rotated order as above; each "
        f"output is compared with the source, then deleted.")
    out.append(
        "- **Durability** is the same on every side: `cp`, `sqlite3 .backup`, `VACUUM INTO` "
        "and `restic restore` are followed by `sync FILE` (an fsync of the output) inside the "
        "timed command; `restic backup` fsyncs its own files; cairn fsyncs its files and "
        "directory before it returns. Times are wall-clock (`/usr/bin/time -f %e`, 10 ms "
        "resolution), peak RSS is its `%M` (the largest process of the command's tree); CPU s "
        "is the user + system time of all its processes (above the wall time when it uses "
        "more than one CPU).")
    out.append(
        "- MiB/s is the size of the database over the time, for every operation (an "
        "incremental reads the whole database too). \"Dirtied in the page cache\" below is "
        "`%O` × 512: the bytes the command wrote, temporary files included.")
    out.append("")
    if changes:
        out.append("<details><summary>Every change and incremental</summary>")
        out.append("")
        out += rounds_table(runs, changes)
        out.append("")
        out.append("</details>")
        out.append("")
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out += every_run(runs)
    out.append("")
    out.append("</details>")
    out.append("")
    return "\n".join(out)


def replace_section(doc_path, text):
    if os.path.exists(doc_path):
        with open(doc_path) as f:
            old = f.read()
    else:
        old = DOC_HEADER
    lines = old.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        # What engineers wrote by hand at the top of the section (findings, experiments)
        # stays: everything above the marker line, which the new text then follows.
        mark = next((i for i in range(start + 1, end) if lines[i].strip() == HAND_MARK), None)
        if mark is not None:
            assert text.startswith(SECTION + "\n")
            text = "\n".join(lines[start:mark + 1]) + "\n" + text[len(SECTION) + 1:]
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        new = (before + "\n\n" if before else "") + text + ("\n" + after + "\n" if after else "")
    tmp = doc_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new.rstrip("\n") + "\n")
    os.replace(tmp, doc_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--doc")
    args = ap.parse_args()
    runs = load(args.jsonl)
    if not any(r.get("op") in ("full", "incremental", "restore") for r in runs):
        print("backup_report: no runs in " + args.jsonl, file=sys.stderr)
        return 1
    text = section(runs, load_meta(args.meta))
    print(text)
    if args.doc:
        replace_section(args.doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
