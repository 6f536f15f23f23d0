#!/usr/bin/env bash
# `make bench-cluster`: a three-node cairnd cluster on loopback against a single node,
# side by side in one run: single-row INSERTs at 64 clients and 10,000-row transactions
# (bench_http, as in bench/run.sh), then the failover time (leader SIGKILL to the first
# acknowledged write) over 10 trials. bench/cluster.py does the work: it starts and stops
# every cairnd (also on failure or Ctrl-C), prints the table and writes it into
# docs/BENCHMARKS.md under "## High availability (issue: HA)", keeping the other
# sections. Raw JSON lines and the nodes' logs go to bench/results/ (not committed).
#
# Builds nothing: `make bench-cluster` runs `make` first. Settings, from the environment:
#   BENCH_DURATION=10          seconds of each INSERT run
#   BENCH_CLIENTS=64           concurrent clients of the INSERT runs
#   BENCH_TXN_ROWS=10000       rows per transaction request
#   BENCH_TXN_REPS=50          transaction requests, one after another
#   BENCH_FAILOVER_TRIALS=10   leader kills
#   BENCH_ROUNDS=5             rounds of each workload; single node and cluster take turns
#   BENCH_WRITE_DOC=1          0: print the table only, leave docs/BENCHMARKS.md alone
#   BUILD=build                where the binaries are
#   TMPDIR=/tmp                where the nodes' data directories go
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

cmd="make bench-cluster"
[ -n "${MAKELEVEL:-}" ] || cmd="bash bench/cluster.sh"
envs=$(env | grep -E '^(BENCH_[A-Z_]+|TMPDIR|BUILD)=' | sort | tr '\n' ' ' || true)
args=(--build "$BUILD" --duration "${BENCH_DURATION:-10}" --clients "${BENCH_CLIENTS:-64}"
      --txn-rows "${BENCH_TXN_ROWS:-10000}" --txn-reps "${BENCH_TXN_REPS:-50}"
      --trials "${BENCH_FAILOVER_TRIALS:-10}" --rounds "${BENCH_ROUNDS:-5}" --results bench/results --command "${envs}${cmd}")
if [ "${BENCH_WRITE_DOC:-1}" = 1 ]; then args+=(--doc docs/BENCHMARKS.md); fi
# exec: Ctrl-C and SIGTERM reach the driver, whose finally stops every cairnd it started.
exec "$PYTHON" bench/cluster.py "${args[@]}"
