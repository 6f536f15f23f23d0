#!/usr/bin/env python3
"""Turns the JSON lines of one `make bench` run into the markdown section of
docs/BENCHMARKS.md, prints it, and (with --doc) replaces that section in the file,
keeping every other section as it is.

Called by bench/run.sh; --jsonl holds one line per run of bench_http or bench_sqlite,
--meta holds KEY=VALUE lines about the machine and the run."""

import argparse
import json
import os
import sys

SECTION = "## cairnd single node (issue: server foundation)"
DOC_HEADER = """# Benchmarks

Each section below is written by the benchmark that measures it, with the machine it ran
on; rerun the command it names to reproduce it. Numbers from different machines are not
comparable: compare within a section, where every figure comes from the same run.
"""
RSS_LIMIT_MIB = 100.0
INSERT_TARGET_CLIENTS = 64
INSERT_TARGET = 1.0
TXN_TARGET = 0.5


def fmt_rate(v):
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def fmt_ms(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(v):
    return f"{v:.2f}×" if v < 10 else f"{v:.1f}×"


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def workload_name(mode, clients, rows):
    if mode == "insert":
        return f"(a) INSERT, 1 row per request, {clients} client{'s' if clients > 1 else ''}"
    if mode == "txn":
        return f"(b) one request = one transaction of {rows:,} rows"
    return f"(c) primary-key SELECT, {clients} client{'s' if clients > 1 else ''}"


def errors_cell(run):
    return "0" if run["errors"] == 0 else f"**{run['errors']}**"


def build(runs, meta):
    pairs = []  # (name, cairnd run, sqlite run) in the order cairnd ran them
    for r in runs:
        if r["tool"] != "cairnd":
            continue
        base = next((s for s in runs if s["tool"] == "sqlite" and s["mode"] == r["mode"]
                     and s["clients"] == r["clients"]), None)
        pairs.append((workload_name(r["mode"], r["clients"], r["rows_per_request"]), r, base))

    sqlite_inserts = [s for s in runs if s["tool"] == "sqlite" and s["mode"] == "insert"]
    best_insert = max(sqlite_inserts, key=lambda s: s["rows_per_s"], default=None)

    lines = []
    verdicts = []
    lines.append("| workload | cairnd rows/s | p50 ms | p99 ms | errors | SQLite rows/s | p50 ms "
                 "| p99 ms | errors | cairnd ÷ SQLite | target | result |")
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
    for name, r, s in pairs:
        ratio = r["rows_per_s"] / s["rows_per_s"] if s and s["rows_per_s"] > 0 else None
        target, result = "", ""
        if r["mode"] == "insert" and r["clients"] == INSERT_TARGET_CLIENTS and best_insert:
            goal = INSERT_TARGET * best_insert["rows_per_s"]
            vs_best = r["rows_per_s"] / best_insert["rows_per_s"] if best_insert["rows_per_s"] else 0
            target = (f"≥ {INSERT_TARGET:g}× the best SQLite autocommit rate "
                      f"({fmt_rate(best_insert['rows_per_s'])} rows/s, {best_insert['clients']} "
                      f"thread{'s' if best_insert['clients'] > 1 else ''}): "
                      f"{fmt_ratio(vs_best)}")
            ok = r["rows_per_s"] >= goal
            result = verdict(ok, r, best_insert)
            verdicts.append((name, result))
        elif r["mode"] == "txn" and s:
            target = f"≥ {TXN_TARGET:g}× SQLite"
            ok = ratio is not None and ratio >= TXN_TARGET
            result = verdict(ok, r, s)
            verdicts.append((name, result))
        else:
            notes = []
            if r["errors"]:
                notes.append(f"cairnd: {plural(r['errors'], 'error')}")
            if s and s["errors"]:
                notes.append(f"SQLite: {plural(s['errors'], 'error')}")
            result = "; ".join(notes)
        lines.append("| " + " | ".join([
            name,
            fmt_rate(r["rows_per_s"]), fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]), errors_cell(r),
            fmt_rate(s["rows_per_s"]) if s else "—", fmt_ms(s["p50_ms"]) if s else "—",
            fmt_ms(s["p99_ms"]) if s else "—", errors_cell(s) if s else "—",
            fmt_ratio(ratio) if ratio is not None else "—", target or "—", result or "—",
        ]) + " |")

    rss = meta.get("rss_peak_a_kib", "")
    if rss.isdigit():
        mib = int(rss) / 1024
        ok = mib < RSS_LIMIT_MIB
        result = "PASS" if ok else "FAIL"
        verdicts.append(("cairnd peak RSS during (a)", result))
        lines.append(f"| cairnd peak RSS (VmHWM) at the end of (a) | {mib:.1f} MiB | | | | | | | | "
                     f"| < {RSS_LIMIT_MIB:g} MiB | {result} |")
    else:
        verdicts.append(("cairnd peak RSS during (a)", "not measured"))
    return lines, pairs, verdicts


def plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def verdict(ok, r, base):
    if r["errors"]:
        return f"FAIL ({plural(r['errors'], 'error')})"
    if base and base["errors"]:
        return ("PASS" if ok else "FAIL") + f" (baseline had {plural(base['errors'], 'error')})"
    return "PASS" if ok else "FAIL"


def details(runs):
    out = ["| tool | mode | clients | requests | rows | duration s | wall s | req/s | p50 ms "
           "| p90 ms | p99 ms | p99.9 ms | max ms | errors | reconnects | CPU s: driver "
           "| cairnd | kernel threads | others |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        out.append("| " + " | ".join([
            r["tool"], r["mode"], str(r["clients"]), f"{r['requests']:,}", f"{r['rows']:,}",
            f"{r['window_s']:g}" if r.get("window_s") else "—",
            f"{r['elapsed_s']:.2f}", fmt_rate(r["requests_per_s"]), fmt_ms(r["p50_ms"]),
            fmt_ms(r["p90_ms"]), fmt_ms(r["p99_ms"]), fmt_ms(r["p999_ms"]), fmt_ms(r["max_ms"]),
            str(r["errors"]), str(r.get("reconnects", 0)), f"{r.get('cpu_s', 0):.1f}",
            f"{r.get('cairnd_cpu_s', 0):.1f}", f"{r.get('kernel_threads_cpu_s', 0):.1f}",
            f"{r.get('other_cpu_s', 0):.1f}",
        ]) + " |")
    return out


def section(runs, meta):
    table, pairs, verdicts = build(runs, meta)
    dur = meta.get("duration", "?")
    reps = meta.get("txn_reps", "?")
    rows = int(meta.get("txn_rows", "10000"))
    out = [SECTION, ""]
    out.append(f"Measured {meta.get('date', '?')} with `{meta.get('command', 'make bench')}` "
               f"at commit {meta.get('commit', '?')}.")
    out.append("")
    out.append(f"Machine: {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), "
               f"{meta.get('memory', '?')} RAM, {meta.get('kernel', '?')}; "
               f"data on {meta.get('filesystem', '?')}; SQLite {meta.get('sqlite', '?')}. "
               "The load generator, cairnd and the SQLite baseline share these CPUs; load "
               f"average (1, 5, 15 min) {meta.get('load_before', '?')} before the run, "
               f"{meta.get('load_after', '?')} at its end.")
    out.append("")
    out += table
    out.append("")
    failed = [n for n, v in verdicts if not v.startswith("PASS")]
    with_errors = [r for r in runs if r["errors"]]
    if failed:
        out.append("**Targets missed:** " + "; ".join(
            f"{n} ({v})" for n, v in verdicts if not v.startswith("PASS")) + ".")
    else:
        out.append("All targets met.")
    if with_errors:
        out.append("")
        out.append("**Runs with errors** (their figures count successful requests only):")
        out.append("")
        for r in with_errors:
            kinds = ", ".join(f"{k} {v}" for k, v in r["error_kinds"].items() if v)
            out.append(f"- {r['tool']} {r['mode']} at {r['clients']} clients: {r['errors']} "
                       f"errors ({kinds}); first: `{r['first_error']}`")
    other = sum(r.get("other_cpu_s", 0) for r in runs)
    wall = sum(r["elapsed_s"] for r in runs)
    ncpu = int(meta.get("nproc", "1") or 1)
    if wall > 0:
        out.append("")
        out.append(f"Processes other than the benchmark, cairnd and the kernel's threads used "
                   f"{other:.1f} CPU-seconds during the {wall:.0f} s of the runs "
                   f"({100 * other / (wall * ncpu):.1f}% of the machine); the table of every "
                   "run shows where.")
    out.append("")
    out.append(f"cairnd after the run: {meta.get('cairnd_stop', '?')}.")
    rss_all = meta.get("rss_peak_all_kib", "")
    if rss_all.isdigit():
        mib = int(rss_all) / 1024
        out.append(f"Its peak RSS over the whole run, (b) and (c) included, was {mib:.1f} MiB"
                   + (f", above the {RSS_LIMIT_MIB:g} MiB that the target sets for (a)."
                      if mib >= RSS_LIMIT_MIB else "."))
    out.append("")
    out.append("### What was measured")
    out.append("")
    out.append(
        f"- **(a)** `POST /db/execute` with body `[[\"INSERT INTO bench(k, v) VALUES(?, ?)\", k, "
        f"\"<100-byte value>\"]]`, for {dur} s at each concurrency; every client is a thread "
        "with one keep-alive HTTP/1.1 connection and one request in flight (closed loop). "
        "Baseline: the same INSERT in autocommit, prepared once, `PRAGMA journal_mode=WAL`, "
        "`PRAGMA synchronous=FULL`, one connection per thread with `busy_timeout` 10 s.")
    out.append(
        f"- **(b)** `POST /db/execute?transaction` with {rows:,} such statements in one body, "
        f"{reps} requests one after another; latency is per request. Baseline: `BEGIN "
        f"IMMEDIATE`, {rows:,} prepared INSERTs, `COMMIT`, same pragmas.")
    out.append(
        f"- **(c)** `POST /db/query` with `[[\"SELECT k, v FROM bench WHERE k = ?\", k]]` for "
        f"{dur} s, keys drawn uniformly from the keys inserted by (b) (all present unless (b) "
        "failed; a failed INSERT of (a) would leave a hole), in the table that holds every row "
        "of (a) and (b); default read consistency. Baseline: the same prepared SELECT, one "
        "connection per thread.")
    out.append(
        "- rows/s of a timed run ((a), (c)) is the rows of successful requests completed "
        "within its duration divided by that duration (a request still in flight at the "
        "deadline, such as an SQLite writer asleep in its busy handler, counts for latency "
        "only); for (b) it is all rows over the summed request times (rows per request ÷ "
        "request latency, so building the 1.5 MB body between requests is not charged to "
        "cairnd). p50/p99 are per request "
        "(per statement or transaction for SQLite), from a log-linear histogram accurate to "
        "1%. A response counts only if "
        "its status is 200, its body has no `\"error\"` and it holds one `rows_affected` per "
        "row inserted (or, for a SELECT, the stored row). cairnd ÷ SQLite compares the same "
        "workload at the same concurrency; the (a) target compares cairnd at 64 clients with "
        "the best SQLite autocommit rate of any thread count.")
    out.append(
        "- The baseline's errors, if any, are SQLite's own: with many writer connections its "
        "busy handler (sleep and retry) is not fair, and a writer that waits longer than "
        "`busy_timeout` (10 s) gets SQLITE_BUSY. They are counted, not retried.")
    out.append(
        "- Durability differs by design: cairnd commits when the Raft log entry is fsynced "
        "(its SQLite file runs with `synchronous=NORMAL`), the baseline fsyncs SQLite's WAL on "
        "every commit. Each side starts from an empty database; (a), (b), (c) run in that "
        "order on the same table, cairnd and SQLite alternating run by run.")
    out.append("")
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out += details(runs)
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
    if not runs:
        print("report: no runs in " + args.jsonl, file=sys.stderr)
        return 1
    text = section(runs, load_meta(args.meta))
    print(text)
    if args.doc:
        replace_section(args.doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
