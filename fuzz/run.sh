#!/usr/bin/env bash
# Build the libFuzzer targets of fuzz/ with clang into build-fuzz/ and run each for
# SECONDS (default 60): `bash fuzz/run.sh [SECONDS] [TARGET...]` (targets: arcseg catidx
# cbk command request s3xml sqlfront tz; all by default). See fuzz/README.md.
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

failed=0
for t in "${targets[@]}"; do
  bin="$out/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: no target $t" >&2
    exit 2
  fi
  mkdir -p "$out/corpus/$t" "$out/crashes/$t" "$out/logs"
  dict=()
  if [ -f "fuzz/$t.dict" ]; then
    dict=(-dict="fuzz/$t.dict")
  fi
  seeds=(fuzz/corpus/"$t")
  if [ -d "fuzz/regress/$t" ]; then
    seeds+=(fuzz/regress/"$t")
  fi
  log="$out/logs/$t.log"
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$bin" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/crashes/$t/" \
    "${dict[@]}" "$out/corpus/$t" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  # The last status line: "#N DONE cov: C ft: F corp: U/Sb ... exec/s: E rss: R".
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log")
  rate=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$last")
  crashes=$(find "$out/crashes/$t" -type f | wc -l)
  printf 'fuzz %-8s %6ss  execs %-9s exec/s %-6s corpus %-12s cov %-5s crashes %s\n' \
    "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${corp:-?}" "${cov:-?}" "$crashes"
  if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); log $log, inputs in $out/crashes/$t/:" >&2
    grep -E 'ERROR|SUMMARY|invariant|Test unit written' "$log" | head -10 >&2
  fi
done
exit $failed
