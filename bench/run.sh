#!/usr/bin/env bash
# `make bench`: cairnd (one node, over HTTP) against the SQLite C API on a file in the same
# filesystem, side by side in one run on one machine. Starts a fresh cairnd on 127.0.0.1,
# runs the workloads with build/bench_http and build/bench_sqlite, stops everything (also
# on failure or Ctrl-C), prints the table and writes it into docs/BENCHMARKS.md under
# "## cairnd single node (issue: server foundation)". Raw JSON lines and cairnd's log are
# kept in bench/results/ (not committed).
#
# Builds nothing: `make bench` runs `make` first. Settings, from the environment:
#   BENCH_DURATION=10          seconds per timed run (INSERT and SELECT runs)
#   BENCH_CLIENTS="1 16 64"    concurrent clients (HTTP) / threads (SQLite) for INSERTs
#   BENCH_SELECT_CLIENTS=16    clients / threads for the primary-key SELECTs
#   BENCH_TXN_ROWS=10000       rows per transaction request
#   BENCH_TXN_REPS=50          transaction requests, one after another
#   BENCH_WRITE_DOC=1          0: print the table only, leave docs/BENCHMARKS.md alone
#   BUILD=build                where the binaries are
#   TMPDIR=/tmp                where cairnd's data directory and the SQLite file go
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
DURATION=${BENCH_DURATION:-10}
CLIENTS=${BENCH_CLIENTS:-1 16 64}
SELECT_CLIENTS=${BENCH_SELECT_CLIENTS:-16}
TXN_ROWS=${BENCH_TXN_ROWS:-10000}
TXN_REPS=${BENCH_TXN_REPS:-50}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-30}
STOP_TIMEOUT=${BENCH_STOP_TIMEOUT:-30}
# A run may overrun its duration by the slowest request; past this it is stuck.
RUN_TIMEOUT=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d * 3 + 120 }')

for b in cairnd bench_http bench_sqlite; do
    if [ ! -x "$BUILD/$b" ]; then
        echo "bench: $BUILD/$b is missing; build first (make)" >&2
        exit 1
    fi
done

log() { echo "bench: $*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench.XXXXXX")
RESULTS=bench/results
mkdir -p "$RESULTS" "$WORK/cairnd" "$WORK/sqlite"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
JSONL=$RESULTS/$STAMP.jsonl
META=$WORK/meta
: >"$JSONL"
: >"$META"
CAIRND_PID=""
CHILD_PID=""
CAIRND_STOP="not started"

# Stops cairnd with SIGTERM and waits for it; SIGKILL after STOP_TIMEOUT seconds.
stop_cairnd() {
    local pid=$CAIRND_PID deadline status=0
    [ -n "$pid" ] || return 0
    CAIRND_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        CAIRND_STOP="did not exit within ${STOP_TIMEOUT} s of SIGTERM; killed with SIGKILL"
        return 0
    fi
    wait "$pid" 2>/dev/null || status=$?
    if [ "$status" -eq 0 ]; then
        CAIRND_STOP="exited with status 0 after SIGTERM"
    else
        CAIRND_STOP="exited with status $status after SIGTERM"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD_PID" ]; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    stop_cairnd || true
    if [ -s "$WORK/cairnd.log" ]; then cp "$WORK/cairnd.log" "$RESULTS/$STAMP.cairnd.log"; fi
    rm -rf "$WORK"
    if [ "$rc" -ne 0 ]; then
        log "failed (status $rc); raw results so far in $JSONL, cairnd's log in $RESULTS/$STAMP.cairnd.log"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits, so that a signal reaches the traps at once.
run_child() {
    "$@" &
    CHILD_PID=$!
    local status=0
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    return "$status"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { # json_field NAME LINE: a number field of a bench_* JSON line
    printf '%s\n' "$2" | grep -o "\"$1\":[-0-9.]*" | head -n1 | cut -d: -f2
}

machine_ticks() { # user + system CPU time of every process so far (kernel threads too), in ticks
    awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat
}

kthread_ticks() { # CPU time of the kernel's threads (children of kthreadd), in ticks
    # Processes come and go while cat reads: a vanished one is not an error.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed 's/^\([0-9]*\) .*) /\1 /' |
        awk '$1 == 2 || $3 == 2 { t += $13 + $14 } END { print t + 0 }'
}

cairnd_ticks() { # cairnd's CPU time so far (utime + stime), in clock ticks
    if [ -n "$CAIRND_PID" ] && [ -r "/proc/$CAIRND_PID/stat" ]; then
        sed 's/.*) //' "/proc/$CAIRND_PID/stat" | awk '{ print $12 + $13 }'
    else
        echo 0
    fi
}

# bench TOOL ARGS...: one run of build/bench_TOOL; appends its JSON line, with the CPU
# time cairnd and every other process used meanwhile, to $JSONL and leaves it in $LAST.
bench() {
    local tool=$1 out m0 c0 k0 m1 c1 k1 hz
    shift
    out=$WORK/run.out
    m0=$(machine_ticks)
    c0=$(cairnd_ticks)
    k0=$(kthread_ticks)
    if ! run_child timeout --signal=TERM --kill-after=10 "$RUN_TIMEOUT" "$BUILD/bench_$tool" "$@" >"$out"; then
        log "bench_$tool $* failed"
        return 1
    fi
    m1=$(machine_ticks)
    c1=$(cairnd_ticks)
    k1=$(kthread_ticks)
    hz=$(getconf CLK_TCK)
    LAST=$(tail -n1 "$out")
    # Others: every process but the driver, cairnd and the kernel's threads (whose I/O work
    # the benchmark causes itself), short-lived ones included since /proc/stat counts them.
    LAST=$(printf '%s' "$LAST" | awk -v m="$((m1 - m0))" -v c="$((c1 - c0))" -v k="$((k1 - k0))" \
        -v hz="$hz" '{
        match($0, /"cpu_s":[0-9.]+/); self = substr($0, RSTART + 8, RLENGTH - 8)
        other = (m - c - k) / hz - self; if (other < 0) other = 0
        sub(/}$/, sprintf(",\"cairnd_cpu_s\":%.2f,\"kernel_threads_cpu_s\":%.2f,\"other_cpu_s\":%.2f}",
            c / hz, k / hz, other)); print }')
    printf '%s\n' "$LAST" >>"$JSONL"
    log "$(printf '%-6s %-6s %3s clients: %10s rows/s  p50 %8s ms  p99 %8s ms  errors %s' \
        "$(printf '%s' "$LAST" | grep -o '"tool":"[a-z]*"' | cut -d'"' -f4)" \
        "$(printf '%s' "$LAST" | grep -o '"mode":"[a-z]*"' | cut -d'"' -f4)" \
        "$(json_field clients "$LAST")" "$(json_field rows_per_s "$LAST")" \
        "$(json_field p50_ms "$LAST")" "$(json_field p99_ms "$LAST")" "$(json_field errors "$LAST")")"
    if [ "$(json_field errors "$LAST")" != "0" ]; then
        log "  first error: $(printf '%s' "$LAST" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["first_error"])')"
    fi
}

proc_kib() { # proc_kib PID FIELD: VmHWM or VmRSS of PID in KiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"

# --- cairnd -----------------------------------------------------------------------------
HTTP_PORT=$(free_port)
RAFT_PORT=$(free_port)
while [ "$RAFT_PORT" = "$HTTP_PORT" ]; do RAFT_PORT=$(free_port); done
URL=127.0.0.1:$HTTP_PORT
log "starting cairnd on http://$URL (raft 127.0.0.1:$RAFT_PORT), data in $WORK/cairnd"
"$BUILD/cairnd" --data-dir "$WORK/cairnd" --http-addr "$URL" --raft-addr "127.0.0.1:$RAFT_PORT" \
    >"$WORK/cairnd.log" 2>&1 &
CAIRND_PID=$!
CAIRND_STOP="still running"

deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$URL/readyz" || true)" = 200 ]; do
    if ! kill -0 "$CAIRND_PID" 2>/dev/null; then
        log "cairnd exited before it was ready; its log:"
        tail -n 30 "$WORK/cairnd.log" >&2 || true
        exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
        log "cairnd not ready (GET /readyz != 200) within ${READY_TIMEOUT} s; its log:"
        tail -n 30 "$WORK/cairnd.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
log "cairnd ready (pid $CAIRND_PID)"

create=$(curl -sS --max-time 30 -w '\n%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "http://$URL/db/execute" -d '["CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)"]')
if [ "$(printf '%s' "$create" | tail -n1)" != 200 ] || printf '%s' "$create" | grep -q '"error"'; then
    log "CREATE TABLE failed: $create"
    exit 1
fi
DB=$WORK/sqlite/bench.db

# --- (a) single-row INSERTs ----------------------------------------------------------------
HTTP_KEY=1
SQLITE_KEY=1
for c in $CLIENTS; do
    bench http --url "$URL" --mode insert --clients "$c" --duration "$DURATION" --key-start "$HTTP_KEY"
    HTTP_KEY=$(json_field key_end "$LAST")
    bench sqlite --db "$DB" --mode insert --clients "$c" --duration "$DURATION" --key-start "$SQLITE_KEY"
    SQLITE_KEY=$(json_field key_end "$LAST")
done
# Peak RSS of cairnd since it started, read before (b) sends its 1.5 MB bodies.
echo "rss_peak_a_kib=$(proc_kib "$CAIRND_PID" VmHWM)" >>"$META"
echo "rss_after_a_kib=$(proc_kib "$CAIRND_PID" VmRSS)" >>"$META"

# --- (b) one request = one transaction of TXN_ROWS rows --------------------------------------
HTTP_TXN_KEY=$HTTP_KEY
SQLITE_TXN_KEY=$SQLITE_KEY
bench http --url "$URL" --mode txn --rows "$TXN_ROWS" --requests "$TXN_REPS" --key-start "$HTTP_KEY"
HTTP_KEY=$(json_field key_end "$LAST")
bench sqlite --db "$DB" --mode txn --rows "$TXN_ROWS" --requests "$TXN_REPS" --key-start "$SQLITE_KEY"
SQLITE_KEY=$(json_field key_end "$LAST")

# --- (c) primary-key SELECTs of random keys of the populated table -------------------------
# Keys come from (b)'s range: all of it is there unless (b) reported errors, whereas a
# failed INSERT of (a) leaves a hole that would show up here a second time as "no row".
bench http --url "$URL" --mode select --clients "$SELECT_CLIENTS" --duration "$DURATION" \
    --key-min "$HTTP_TXN_KEY" --key-max $((HTTP_KEY - 1))
bench sqlite --db "$DB" --mode select --clients "$SELECT_CLIENTS" --duration "$DURATION" \
    --key-min "$SQLITE_TXN_KEY" --key-max $((SQLITE_KEY - 1))

echo "rss_peak_all_kib=$(proc_kib "$CAIRND_PID" VmHWM)" >>"$META"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"
stop_cairnd
log "cairnd $CAIRND_STOP"

# --- report ------------------------------------------------------------------------------
cmd="make bench"
[ -n "${MAKELEVEL:-}" ] || cmd="bash bench/run.sh"
envs=$(env | grep -E '^(BENCH_[A-Z_]+|TMPDIR)=' | sort | tr '\n' ' ' || true)
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command=${envs}${cmd}"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo ' (+ uncommitted changes in src/ or include/)')"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel=$(uname -sr)"
    echo "filesystem=$(findmnt -no FSTYPE,SOURCE,TARGET -T "$WORK" | awk '{ print $1 " (" $2 " mounted on " $3 ")" }')"
    echo "sqlite=$(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || pkg-config --modversion sqlite3)"
    echo "duration=$DURATION"
    echo "txn_rows=$TXN_ROWS"
    echo "txn_reps=$TXN_REPS"
    echo "cairnd_stop=$CAIRND_STOP"
} >>"$META"
report_args=(--jsonl "$JSONL" --meta "$META")
if [ "$WRITE_DOC" = 1 ]; then report_args+=(--doc docs/BENCHMARKS.md); fi
"$PYTHON" bench/report.py "${report_args[@]}"
cp "$META" "$RESULTS/$STAMP.meta"
if [ "$WRITE_DOC" = 1 ]; then log "table written into docs/BENCHMARKS.md"; fi
log "raw results: $JSONL"
