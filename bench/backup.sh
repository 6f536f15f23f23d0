#!/usr/bin/env bash
# `make bench-backup`: cairn's backups of a 1 GiB SQLite database against the obvious
# alternatives, side by side in one run on one machine:
#   full backup   cairn backup create --type full | sqlite3 .backup | VACUUM INTO |
#                 cp + sync | restic backup (a fresh repository each time)
#   incremental   after 1% of the rows changed: cairn backup create --type incremental
#                 vs restic's next snapshot, time and bytes added to the repository,
#                 against the zstd size of the pages that changed (bench/backup_pages.c)
#   restore       the last of 10 incrementals (cairn restore of full + 10 incrementals)
#                 vs cp + sync of the database file vs restic restore of the latest
#                 snapshot, beside SQLite's quick_check and integrity_check of the source
#                 alone (what a restore runs on its output by default, and with --check
#                 full), cairn's restore of the full backup alone (the pages a chain
#                 writes: each once, as one full backup's) and cairn's restore of the
#                 chain with --check full (no target); every restored file is compared
#                 with the source, page by page
# each under /usr/bin/time (wall time, peak RSS). Prints the table and writes it into
# docs/BENCHMARKS.md under "## Backups (issue: backups)" (bench/backup_report.py);
# raw JSON lines go to bench/results/ (not committed).
#
# Builds nothing but its own helper: `make bench-backup` runs `make` first. The source
# database is built once by bench/backup_data.py and cached, keyed by its parameters
# and the generator's text, in $BENCH_BACKUP_CACHE; each run works on a copy of it.
# Settings, from the environment:
#   BENCH_BACKUP_MB=1024        size of the database, MiB
#   BENCH_BACKUP_RUNS=3         measured runs of each full backup and restore (median;
#                               one unmeasured warm-up run of each tool comes first)
#   BENCH_BACKUP_ROUNDS=10      incrementals in the chain (each after a change)
#   BENCH_BACKUP_FRACTION=0.01  fraction of the rows whose text each change rewrites
#   BENCH_BACKUP_SEED=1         seed of the data and of the changes
#   BENCH_BACKUP_CACHE=bench/results/backup-cache   where the source database is kept
#                               between runs ("" or "none": build it in the run's
#                               directory and delete it at the end)
#   BENCH_BACKUP_KEEP=0         1: keep the run's directory (backups, repositories)
#   BENCH_BACKUP_BASELINES_ONLY=0  1: run without cairn (before its backup commands exist)
#   BENCH_WRITE_DOC=1           0: print the table only, leave docs/BENCHMARKS.md alone
#   BUILD=build                 where cairn is
#   TMPDIR=/tmp                 where the run's directory goes (needs 8 GiB free)
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
MB=${BENCH_BACKUP_MB:-1024}
RUNS=${BENCH_BACKUP_RUNS:-3}
ROUNDS=${BENCH_BACKUP_ROUNDS:-10}
FRACTION=${BENCH_BACKUP_FRACTION:-0.01}
SEED=${BENCH_BACKUP_SEED:-1}
CACHE=${BENCH_BACKUP_CACHE-bench/results/backup-cache}
KEEP=${BENCH_BACKUP_KEEP:-0}
BASELINES_ONLY=${BENCH_BACKUP_BASELINES_ONLY:-0}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
MIN_FREE_GIB=8
# cairn's compression, which the yardstick of the incremental target must use too: the
# engine's default zstd level and block size, read from src/backup/backup.c (the CLI has no
# option for them); BENCH_BACKUP_CAIRN_LEVEL and BENCH_BACKUP_CAIRN_BLOCK_BYTES override.
CAIRN_LEVEL=${BENCH_BACKUP_CAIRN_LEVEL:-$(sed -n 's/^#define DEFAULT_LEVEL (\{0,1\}\(-\{0,1\}[0-9]\{1,\}\))\{0,1\}.*/\1/p' src/backup/backup.c 2>/dev/null || true)}
CAIRN_BLOCK_BYTES=${BENCH_BACKUP_CAIRN_BLOCK_BYTES:-$(sed -n 's/^#define DEFAULT_BLOCK_BYTES (\{0,1\}\([0-9]\{1,\}\)u\{0,1\} << \([0-9]\{1,\}\))\{0,1\}.*/\1 << \2/p' src/backup/backup.c 2>/dev/null || true)}
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-cairn-bench}
export RESTIC_PROGRESS_FPS=0.0001

log() { echo "bench-backup: $*" >&2; }
fail() {
    log "$*"
    exit 1
}

# --- preconditions -------------------------------------------------------------------
for tool in /usr/bin/time sqlite3 restic cc cmp; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (make deps installs sqlite3 and restic; /usr/bin/time is Debian's package 'time')"
done
CAIRN=$BUILD/cairn
if [ "$BASELINES_ONLY" != 1 ]; then
    [ -x "$CAIRN" ] || fail "$CAIRN is missing; build first (make), or BENCH_BACKUP_BASELINES_ONLY=1"
    "$CAIRN" backup --help >/dev/null 2>&1 ||
        fail "'$CAIRN backup --help' fails: this cairn has no backup commands (BENCH_BACKUP_BASELINES_ONLY=1 measures the baselines alone)"
fi

if [ "$BASELINES_ONLY" = 1 ]; then
    CAIRN_LEVEL=${CAIRN_LEVEL:-1}
    CAIRN_BLOCK_BYTES=${CAIRN_BLOCK_BYTES:-1048576}
elif [ -z "$CAIRN_LEVEL" ] || [ -z "$CAIRN_BLOCK_BYTES" ]; then
    fail "cannot read cairn's default zstd level and block size (DEFAULT_LEVEL, DEFAULT_BLOCK_BYTES) from src/backup/backup.c; set BENCH_BACKUP_CAIRN_LEVEL and BENCH_BACKUP_CAIRN_BLOCK_BYTES"
fi
CAIRN_BLOCK_BYTES=$((CAIRN_BLOCK_BYTES))

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-backup.XXXXXX")
RESULTS=bench/results
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
JSONL=$RESULTS/backup-$STAMP.jsonl
META=$WORK/meta
: >"$JSONL"
: >"$META"
CHILD_PID=""
T_START=$SECONDS

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD_PID" ]; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then
        log "kept the run's directory $WORK (delete it by hand)"
    else
        rm -rf "$WORK"
    fi
    if [ "$rc" -ne 0 ]; then log "failed (status $rc); raw results so far in $JSONL"; fi
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

free_bytes() { df -P -B1 "$1" | awk 'NR == 2 { print $4 }'; }
need=$((MIN_FREE_GIB * 1024 * 1024 * 1024))
have=$(free_bytes "$WORK")
if [ "$have" -lt "$need" ]; then
    fail "only $((have / 1048576)) MiB free on $(findmnt -no TARGET -T "$WORK") (for $WORK); the run needs ${MIN_FREE_GIB} GiB (the database, its copies, the backups). Free some space or point TMPDIR elsewhere."
fi

# Bytes in a file, or in the regular files under a directory (a repository).
bytes_of() {
    if [ -d "$1" ]; then
        find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }' # %d stops at 2^31 in mawk
    elif [ -e "$1" ]; then
        stat -c %s "$1"
    else
        echo 0
    fi
}

OUT=$WORK/out # every tool writes here: the same directory on the same disk
mkdir -p "$OUT"
PAGES=$WORK/backup_pages
cc -O2 -Wall -Wextra -Werror -o "$PAGES" bench/backup_pages.c -lzstd -lxxhash ||
    fail "cannot build bench/backup_pages.c (needs libzstd-dev and libxxhash-dev: make deps)"

# --- the source database -------------------------------------------------------------
key=$( { echo "mb=$MB seed=$SEED"; cat bench/backup_data.py; } | sha256sum | cut -c1-12)
if [ -z "$CACHE" ] || [ "$CACHE" = none ]; then
    CACHED=$WORK/source-$key.db
else
    mkdir -p "$CACHE"
    CACHED=$CACHE/source-${MB}mib-seed$SEED-$key.db
fi
if [ -s "$CACHED" ] && [ -s "$CACHED.json" ]; then
    log "source database: $CACHED (cached)"
else
    rm -f "$CACHED" "$CACHED-wal" "$CACHED-shm" "$CACHED.json"
    [ "$(free_bytes "$(dirname "$CACHED")")" -ge "$need" ] ||
        fail "less than ${MIN_FREE_GIB} GiB free for the cached database in $(dirname "$CACHED")"
    log "building the ${MB} MiB source database in $CACHED (once; about a minute per GiB)"
    run_child "$PYTHON" bench/backup_data.py generate --out "$CACHED.tmp" --mb "$MB" --seed "$SEED" \
        >"$WORK/gen.json"
    mv "$CACHED.tmp" "$CACHED"
    mv "$WORK/gen.json" "$CACHED.json"
fi
SRC=$WORK/source.db
cp "$CACHED" "$SRC"
SRC_BYTES=$(stat -c %s "$SRC")
echo "source_bytes=$SRC_BYTES" >>"$META"
echo "source_rows=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"])' "$CACHED.json")" >>"$META"
echo "source_journal_mode=$(sqlite3 "$SRC" 'PRAGMA journal_mode')" >>"$META"
PAGE_SIZE=$(sqlite3 "$SRC" 'PRAGMA page_size')
echo "source_page_size=$PAGE_SIZE" >>"$META"
CAIRN_BLOCK_PAGES=$((CAIRN_BLOCK_BYTES / PAGE_SIZE))
# Warm: the copy just written is in the page cache; read it once more to be sure.
cat "$SRC" >/dev/null
log "source: $SRC ($((SRC_BYTES / 1048576)) MiB, WAL mode, checkpointed), warm in the page cache"

# measure OP TOOL RUN OUTPUT CMD...: one run of CMD under /usr/bin/time; OUTPUT is the
# file or repository whose growth counts as the bytes written. Appends a JSON line.
measure() {
    local op=$1 tool=$2 run=$3 output=$4 before after line wall rss blocks user sys
    shift 4
    before=$(bytes_of "$output")
    # Write back what earlier runs (and the rm of their outputs) left dirty, so that no
    # run pays for another's writes.
    sync -f "$OUT"
    if ! run_child /usr/bin/time -f '%e %M %O %U %S' -o "$WORK/time.out" "$@" \
        >"$WORK/cmd.out" 2>"$WORK/cmd.err"; then
        log "$tool ($op, run $run) failed: $*"
        tail -n 20 "$WORK/cmd.err" >&2 || true
        exit 1
    fi
    after=$(bytes_of "$output")
    read -r wall rss blocks user sys < <(tail -n1 "$WORK/time.out")
    line=$(printf '{"op":"%s","tool":"%s","run":"%s","seconds":%s,"rss_kib":%s,"bytes":%d,"io_bytes":%d,"user_s":%s,"sys_s":%s,"db_bytes":%d}' \
        "$op" "$tool" "$run" "$wall" "$rss" "$((after - before))" "$((blocks * 512))" "$user" "$sys" \
        "$(stat -c %s "$SRC")")
    printf '%s\n' "$line" >>"$JSONL"
    log "$(printf '%-11s %-16s %-5s %7.2f s %8.1f MiB written %7.1f MiB peak RSS' "$op" "$tool" \
        "$run" "$wall" "$(awk -v b="$((after - before))" 'BEGIN { print b / 1048576 }')" \
        "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')")"
}

# rotate N WORD...: the words, starting from the (N mod count)th, backwards when N is
# odd. Each run takes the tools in another order, so that none always comes after the
# same one: what a command leaves behind (pages to write back, memory freed) costs the
# next one (on a virtual machine, memory the host took back while it was free costs a
# fault to take again).
rotate() {
    local n=$1
    shift
    local -a w=("$@") out=()
    local k=$((n % ${#w[@]})) i
    for ((i = 0; i < ${#w[@]}; i++)); do
        if ((n % 2)); then
            out+=("${w[(k - i + ${#w[@]}) % ${#w[@]}]}")
        else
            out+=("${w[(k + i) % ${#w[@]}]}")
        fi
    done
    echo "${out[@]}"
}

# The id of the backup a `cairn ... --json` command printed (in $WORK/cmd.out).
cairn_id() {
    "$PYTHON" - "$WORK/cmd.out" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for obj in (doc, doc.get("backup") or {}, doc.get("restored") or {}):
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        print(obj["id"])
        sys.exit(0)
sys.exit("no backup id in the output of cairn: " + open(sys.argv[1]).read()[:300])
EOF
}

# check_same EXPECTED ACTUAL WHAT: fail loudly unless ACTUAL is the database EXPECTED is.
check_same() {
    local status=0 res
    res=$("$PAGES" same "$1" "$2") || status=$?
    case $status in
    0) ;;
    3) SAME_NOTE="counters" ;; # see backup_pages.c: the header counters only
    *) fail "$3 is NOT the source database: $res" ;;
    esac
}
SAME_NOTE=""

TOOLS_FULL="cp sqlite3-backup vacuum-into restic"
[ "$BASELINES_ONLY" = 1 ] || TOOLS_FULL="$TOOLS_FULL cairn"
echo "tools=$TOOLS_FULL" >>"$META"
echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"

# --- full backups --------------------------------------------------------------------
T0=$SECONDS
CAIRN_REPO=""
CAIRN_FULL_ID=""
RESTIC_REPO=""
for run in $(seq 0 "$RUNS"); do
    label=$run
    [ "$run" = 0 ] && label=warm
    # shellcheck disable=SC2086 # word lists
    for tool in $(rotate "$run" $TOOLS_FULL); do
        case $tool in
        cp)
            measure full cp "$label" "$OUT/copy.db" \
                sh -c 'cp "$1" "$2" && sync "$2"' sh "$SRC" "$OUT/copy.db"
            check_same "$SRC" "$OUT/copy.db" "cp's copy"
            rm -f "$OUT/copy.db"
            ;;
        sqlite3-backup)
            measure full sqlite3-backup "$label" "$OUT/backup.db" \
                sh -c 'sqlite3 "$1" ".backup $2" && sync "$2"' sh "$SRC" "$OUT/backup.db"
            rm -f "$OUT/backup.db"
            ;;
        vacuum-into)
            measure full vacuum-into "$label" "$OUT/vacuum.db" \
                sh -c 'sqlite3 "$1" "VACUUM INTO '"'"'$2'"'"'" && sync "$2"' sh "$SRC" "$OUT/vacuum.db"
            rm -f "$OUT/vacuum.db"
            ;;
        restic)
            repo=$OUT/restic-$run
            restic -r "$repo" init -q >/dev/null
            measure full restic "$label" "$repo" \
                restic -r "$repo" --no-cache backup -q --host bench "$SRC"
            [ -z "$RESTIC_REPO" ] || rm -rf "$RESTIC_REPO"
            RESTIC_REPO=$repo # the last one is the base of restic's snapshots below
            ;;
        cairn)
            repo=$OUT/cairn-$run
            measure full cairn "$label" "$repo" \
                "$CAIRN" backup create --db "$SRC" --repo "$repo" --type full --json
            [ -z "$CAIRN_REPO" ] || rm -rf "$CAIRN_REPO"
            CAIRN_REPO=$repo
            CAIRN_FULL_ID=$(cairn_id) # of $CACHED's pages: $SRC before the changes
            ;;
        esac
    done
done
echo "phase_full_s=$((SECONDS - T0))" >>"$META"
echo "restic_repository_version=$(restic -r "$RESTIC_REPO" --no-cache cat config | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["version"])')" >>"$META"

# --- incrementals: ROUNDS changes, each followed by a cairn incremental and a restic
# snapshot; the changed pages are found and compressed by backup_pages ------------------
T0=$SECONDS
"$PAGES" manifest "$SRC" "$WORK/manifest.0" >/dev/null
LAST_ID=""
for round in $(seq 1 "$ROUNDS"); do
    upd=$(run_child "$PYTHON" bench/backup_data.py update --db "$SRC" --fraction "$FRACTION" \
        --seed $((SEED * 1000 + round)) --vocab-seed "$SEED")
    diff=$("$PAGES" diff "$WORK/manifest.$((round - 1))" "$SRC" "$WORK/manifest.$round" \
        "$CAIRN_LEVEL" "$CAIRN_BLOCK_PAGES")
    rm -f "$WORK/manifest.$((round - 1))"
    printf '{"op":"change","round":%d,"update":%s,"pages":%s}\n' "$round" "$upd" "$diff" >>"$JSONL"
    log "change $round: $(printf '%s' "$upd" | grep -o '"rows_changed": [0-9]*' | cut -d' ' -f2) rows, $(printf '%s' "$diff" | grep -o '"changed_pages":[0-9]*' | cut -d: -f2) pages changed, $(printf '%s' "$diff" | grep -o '"compressed_bytes":[0-9]*' | cut -d: -f2) bytes at zstd level $CAIRN_LEVEL"
    measure incremental restic "$round" "$RESTIC_REPO" \
        restic -r "$RESTIC_REPO" --no-cache backup -q --host bench "$SRC"
    if [ "$BASELINES_ONLY" != 1 ]; then
        measure incremental cairn "$round" "$CAIRN_REPO" \
            "$CAIRN" backup create --db "$SRC" --repo "$CAIRN_REPO" --type incremental --json
        LAST_ID=$(cairn_id)
    fi
done
echo "phase_incremental_s=$((SECONDS - T0))" >>"$META"
restic -r "$RESTIC_REPO" --no-cache snapshots --json >"$WORK/snapshots.json"
echo "restic_snapshots=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/snapshots.json")" >>"$META"
if [ "$BASELINES_ONLY" != 1 ]; then
    "$CAIRN" backup list --repo "$CAIRN_REPO" --json >"$WORK/list.json"
    cp "$WORK/list.json" "$RESULTS/backup-$STAMP.cairn-list.json"
    # The restore below must be of a chain of one full backup and ROUNDS incrementals.
    chain=$("$PYTHON" - "$WORK/list.json" "$LAST_ID" "$ROUNDS" <<'PYEOF'
import json, sys
entries = {e["id"]: e for e in json.load(open(sys.argv[1]))}
ref, rounds = sys.argv[2], int(sys.argv[3])
chain = []
while ref:
    e = entries.get(ref)
    if e is None:
        sys.exit(f"backup {ref} is not in the catalog")
    chain.append(e)
    ref = e.get("parent_id")
types = [e["type"] for e in reversed(chain)]
if types != ["full"] + ["incremental"] * rounds:
    sys.exit(f"the chain of the last backup is {types}, not one full and {rounds} incrementals")
print(len(chain))
PYEOF
    ) || fail "cairn's catalog does not hold the expected chain"
    echo "cairn_chain=$chain" >>"$META"
fi

# --- restore of the chain's end --------------------------------------------------------
T0=$SECONDS
cat "$SRC" >/dev/null
# quick-check: SQLite's PRAGMA quick_check of the source alone, which a restore runs on
# the file it wrote before it renames it into place (integrity-check: what it runs with
# --check full): a floor under cairn's restore time, measured beside it.
# cairn-full: the restore of the chain's full backup alone, the pages of one full
# backup, which the chain's restore must not write more of.
# cairn-check-full: the chain's restore with --check full (PRAGMA integrity_check of
# the restored file instead of quick_check; what scheduled drills run), recorded
# without a target.
TOOLS_RESTORE="cp restic quick-check integrity-check"
[ "$BASELINES_ONLY" = 1 ] || TOOLS_RESTORE="$TOOLS_RESTORE cairn cairn-full cairn-check-full"
for run in $(seq 0 "$RUNS"); do
    label=$run
    [ "$run" = 0 ] && label=warm
    # shellcheck disable=SC2086 # word lists
    for tool in $(rotate "$run" $TOOLS_RESTORE); do
        case $tool in
        cp)
            measure restore cp "$label" "$OUT/copy.db" \
                sh -c 'cp "$1" "$2" && sync "$2"' sh "$SRC" "$OUT/copy.db"
            check_same "$SRC" "$OUT/copy.db" "cp's copy"
            rm -f "$OUT/copy.db"
            ;;
        restic)
            target=$OUT/restic-restore
            measure restore restic "$label" "$target" \
                sh -c 'restic -r "$1" --no-cache restore -q latest --target "$2" && sync "$2$3"' \
                sh "$RESTIC_REPO" "$target" "$SRC"
            check_same "$SRC" "$target$SRC" "restic's restored file"
            rm -rf "$target"
            ;;
        quick-check)
            measure restore quick-check "$label" "$OUT/none" \
                sqlite3 "file:$SRC?immutable=1" "PRAGMA quick_check"
            [ "$(cat "$WORK/cmd.out")" = ok ] || fail "PRAGMA quick_check of $SRC: $(head -c 300 "$WORK/cmd.out")"
            ;;
        integrity-check)
            measure restore integrity-check "$label" "$OUT/none" \
                sqlite3 "file:$SRC?immutable=1" "PRAGMA integrity_check"
            [ "$(cat "$WORK/cmd.out")" = ok ] || fail "PRAGMA integrity_check of $SRC: $(head -c 300 "$WORK/cmd.out")"
            ;;
        cairn)
            measure restore cairn "$label" "$OUT/restored.db" \
                "$CAIRN" restore --repo "$CAIRN_REPO" "$LAST_ID" --out "$OUT/restored.db" --json
            check_same "$SRC" "$OUT/restored.db" "cairn's restore of $LAST_ID"
            rm -f "$OUT/restored.db"
            ;;
        cairn-check-full)
            measure restore cairn-check-full "$label" "$OUT/restored-checked.db" \
                "$CAIRN" restore --repo "$CAIRN_REPO" "$LAST_ID" --out "$OUT/restored-checked.db" \
                --check full --json
            check_same "$SRC" "$OUT/restored-checked.db" "cairn's restore of $LAST_ID with --check full"
            rm -f "$OUT/restored-checked.db"
            ;;
        cairn-full)
            measure restore cairn-full "$label" "$OUT/restored-full.db" \
                "$CAIRN" restore --repo "$CAIRN_REPO" "$CAIRN_FULL_ID" --out "$OUT/restored-full.db" --json
            check_same "$CACHED" "$OUT/restored-full.db" "cairn's restore of $CAIRN_FULL_ID"
            rm -f "$OUT/restored-full.db"
            ;;
        esac
    done
done
echo "phase_restore_s=$((SECONDS - T0))" >>"$META"
# Where the chain's restore spends its CPU: one more restore (not timed) under perf, its
# samples by shared object (libzstd, the kernel, SQLite, ...) into the notes.
if [ "$BASELINES_ONLY" != 1 ] && command -v perf >/dev/null 2>&1; then
    if perf record -q -F 999 -o "$WORK/perf.restore" -- \
        "$CAIRN" restore --repo "$CAIRN_REPO" "$LAST_ID" --out "$OUT/profiled.db" --json \
        >/dev/null 2>"$WORK/perf.err"; then
        dso=$(perf report -i "$WORK/perf.restore" --no-children --sort dso --stdio 2>/dev/null |
            awk '/^ *[0-9.]+%/ { sub(/%/, "", $1); printf "%s%s:%s", sep, $2, $1; sep = "," }')
        echo "restore_cpu_by_dso=$dso" >>"$META"
    else
        log "perf record of the restore failed: $(tail -c 300 "$WORK/perf.err")"
    fi
    rm -f "$OUT/profiled.db" "$WORK/perf.restore"
fi
echo "restore_compare=${SAME_NOTE:-identical}" >>"$META"

# --- report ----------------------------------------------------------------------------
cmd="make bench-backup"
[ -n "${MAKELEVEL:-}" ] || cmd="bash bench/backup.sh"
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
    echo "sqlite=$(sqlite3 --version | cut -d' ' -f1)"
    echo "restic=$(restic version | cut -d' ' -f2)"
    echo "zstd=$("$PAGES" version | sed 's/^zstd \([^,]*\),.*/\1/')"
    echo "coreutils=$(cp --version | head -n1 | awk '{ print $NF }')"
    echo "runs=$RUNS"
    echo "rounds=$ROUNDS"
    echo "fraction=$FRACTION"
    echo "cairn_level=$CAIRN_LEVEL"
    echo "cairn_block_pages=$CAIRN_BLOCK_PAGES"
    echo "baselines_only=$BASELINES_ONLY"
    echo "total_s=$((SECONDS - T_START))"
    echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$META"
report_args=(--jsonl "$JSONL" --meta "$META")
if [ "$WRITE_DOC" = 1 ]; then report_args+=(--doc docs/BENCHMARKS.md); fi
"$PYTHON" bench/backup_report.py "${report_args[@]}"
cp "$META" "$RESULTS/backup-$STAMP.meta"
if [ "$WRITE_DOC" = 1 ]; then log "table written into docs/BENCHMARKS.md"; fi
log "raw results: $JSONL; the run took $((SECONDS - T_START)) s"
if [ -n "$CACHE" ] && [ "$CACHE" != none ]; then
    log "the source database stays cached in $CACHED ($((SRC_BYTES / 1048576)) MiB; BENCH_BACKUP_CACHE=none does without)"
fi
