#!/usr/bin/env bash
# Build the libFuzzer targets of fuzz/ with clang into build-fuzz/ and run each for
# SECONDS (default 60), as many at once as there are CPUs: `bash fuzz/run.sh [SECONDS]
# [TARGET...]` (targets: arcseg catidx cbk command request s3xml sqlfront tz; all by
# default). See fuzz/README.md.
#
# Each target starts from its seed corpus fuzz/corpus/<target>/ and the saved crashes
# of fuzz/regress/<target>/; what it learns goes to build-fuzz/corpus/<target>/ (not
# the repository's corpus), what crashes it to build-fuzz/crashes/<target>/, its log
# to build-fuzz/logs/<target>.log. Prints one line per target (executions per second,
# corpus, coverage, crashes) and exits 1 if any target crashed or leaked, 2 if the
# build failed.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(arcseg catidx cbk command request s3xml sqlfront tz)
fi
out=${FUZZ_BUILD:-build-fuzz}

if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz: clang is missing (scripts/deps.sh installs it)" >&2
  exit 2
fi
if [ ! -f "$out/CMakeCache.txt" ]; then
  CC=clang cmake -S . -B "$out" -DCAIRN_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >"$out.configure.log" 2>&1 ||
    { cat "$out.configure.log" >&2; echo "fuzz: configure failed" >&2; exit 2; }
  rm -f "$out.configure.log"
fi
if ! cmake --build "$out" -j "$(nproc 2>/dev/null || echo 2)" --target fuzzers >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log" >&2
  echo "fuzz: build failed (log: $out/build.log)" >&2
  exit 2
fi

# One target, its summary line into $out/logs/<target>.summary and a nonzero
# $out/logs/<target>.failed when it crashed or leaked.
runTarget() {
  local t=$1 bin="$out/fuzz_$1" log="$out/logs/$1.log" rc
  local dict=() seeds=(fuzz/corpus/"$1")
  mkdir -p "$out/corpus/$t" "$out/crashes/$t" "$out/logs"
  rm -f "$out/logs/$t.failed"
  if [ -f "fuzz/$t.dict" ]; then
    dict=(-dict="fuzz/$t.dict")
  fi
  if [ -d "fuzz/regress/$t" ]; then
    seeds+=(fuzz/regress/"$t")
  fi
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$bin" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/crashes/$t/" \
    "${dict[@]}" "$out/corpus/$t" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  # The last status line: "#N DONE cov: C ft: F corp: U/Sb ... exec/s: E rss: R".
  local last cov corp execs rate crashes
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log")
  rate=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$last")
  crashes=$(find "$out/crashes/$t" -type f | wc -l)
  printf 'fuzz %-8s %6ss  execs %-9s exec/s %-6s corpus %-12s cov %-5s crashes %s\n' \
    "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${corp:-?}" "${cov:-?}" "$crashes" \
    >"$out/logs/$t.summary"
  if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
    echo "$rc" >"$out/logs/$t.failed"
  fi
}

for t in "${targets[@]}"; do
  if [ ! -x "$out/fuzz_$t" ]; then
    echo "fuzz: no target $t" >&2
    exit 2
  fi
done
# As many targets at once as there are CPUs: each is one process on one core.
jobs_max=$(nproc 2>/dev/null || echo 2)
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs_max" ]; then
    wait -n
    running=$((running - 1))
  fi
  runTarget "$t" &
  running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
  cat "$out/logs/$t.summary"
  if [ -f "$out/logs/$t.failed" ]; then
    failed=1
    echo "fuzz: $t FAILED (exit $(cat "$out/logs/$t.failed")); log $out/logs/$t.log, inputs in $out/crashes/$t/:" >&2
    grep -E 'ERROR|SUMMARY|invariant|Test unit written' "$out/logs/$t.log" | head -10 >&2
  fi
done
exit $failed
