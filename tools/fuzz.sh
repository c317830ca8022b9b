#!/usr/bin/env bash
# Fuzzes kd's parsers of outside bytes (tests/fuzz/*_fuzz.cpp) with libFuzzer under AddressSanitizer
# and UndefinedBehaviorSanitizer, one target after another, and prints executions and crashes per
# target. Not part of CI: CI replays the committed corpora and regressions (ctest -L fuzz).
#   tools/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 60); all targets by default
# New corpus entries go to a scratch folder ($KD_FUZZ_BUILD_DIR/new-corpus/<target>, default
# build-fuzz), never into tests/fuzz/corpus; crashing inputs to build-fuzz/artifacts/<target>/.
# A crash: minimise it (the binary with -minimize_crash=1 -runs=100000 CRASH), fix the parser,
# and commit the input to tests/fuzz/regressions/<target>/ so CI replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh --fuzz
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cpp; do targets+=("$(basename "$f" _fuzz.cpp)"); done
fi
build=${KD_FUZZ_BUILD_DIR:-build-fuzz}

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKD_CUDA=OFF -DKD_FUZZ=ON -DKD_TESTS=OFF -DKD_MPI=OFF -DKD_ONEDNN=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" --target "${targets[@]/%/_fuzz}"

# Limits: a parser that needs more than 1 GiB in one allocation, or 2 GiB in all, for inputs of a
# few KiB is a finding (kd refuses images over 16384 x 16384 before allocating them); so is one
# input that takes 10 s.
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
rows=()
for t in "${targets[@]}"; do
  new="$build/new-corpus/$t" artifacts="$build/artifacts/$t" log="$build/logs/$t.log"
  mkdir -p "$new" "$artifacts" "$(dirname "$log")"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  status=ok
  "$build/tests/fuzz/${t}_fuzz" "$new" "tests/fuzz/corpus/$t" -max_total_time="$seconds" "${limits[@]}" \
    "${dict[@]}" -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=FAILED
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  [ "$status" = ok ] || failed=1
  rows+=("$(printf '%-12s %8ss %14s %8s %8s  %s' "$t" "$seconds" "${execs:-?}" "$crashes" "$status" "$log")")
done
printf '%-12s %9s %14s %8s %8s  %s\n' target time executions crashes result log
printf '%s\n' "${rows[@]}"
exit "$failed"
