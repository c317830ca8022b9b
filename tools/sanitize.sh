#!/usr/bin/env bash
# The CPU tests again under sanitizers; tools/test.sh runs this after the main suite. Any report
# fails: UBSan does not recover, ASan and TSan stop at the first error.
#  1. AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer included) in its own build
#     folder, over the tests of the layers that read outside bytes and do kd's own memory
#     arithmetic: kernels, engine and data (ctest labels), and the fuzz replays, without the
#     exclusions below. models, train and tools are built from those layers; with them the ASan
#     build and run would take longer than the rest of CI together on 2 cores.
#  2. ThreadSanitizer: the loader and prefetch tests (the threaded code of kd's data path), in a
#     third build of just their binary, one OpenMP thread (libgomp is not built for TSan).
#   tools/sanitize.sh [asan|tsan]...     both by default
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
asan_build=${KD_ASAN_BUILD_DIR:-build-asan}
tsan_build=${KD_TSAN_BUILD_DIR:-build-tsan}
# CPU only, and without MPI: mpirun's processes would need Open MPI built for the sanitizers too.
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DKD_CUDA=OFF -DKD_MPI=OFF)

asan_labels='^(kernels|engine|data|fuzz)$'
asan_targets=(test_kernels test_engine test_data)
for f in tests/fuzz/*_fuzz.cpp; do asan_targets+=("$(basename "$f" .cpp)_replay"); done
# Excluded from the ASan run, with the reason (a ctest -E regex each):
asan_excluded=(

)
exclude=()  # ctest -E "" would exclude everything
[ ${#asan_excluded[@]} -eq 0 ] || exclude=(-E "$(IFS='|'; echo "${asan_excluded[*]}")")

run_asan() {
  cmake -S . -B "$asan_build" "${common[@]}" -DKD_SANITIZE=address,undefined >/dev/null
  cmake --build "$asan_build" -j "$jobs" --target "${asan_targets[@]}"
  # Leaks are reported too (detect_leaks); UBSan prints the stack of what it finds.
  (cd "$asan_build" &&
   ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j "$jobs" -L "$asan_labels" "${exclude[@]}")
}

run_tsan() {
  cmake -S . -B "$tsan_build" "${common[@]}" -DKD_SANITIZE=thread >/dev/null
  cmake --build "$tsan_build" -j "$jobs" --target test_data
  (cd "$tsan_build" &&
   TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j "$jobs" -R '[Ll]oader|[Pp]refetch')
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan tsan)
for step in "${steps[@]}"; do
  case "$step" in
    asan) run_asan ;;
    tsan) run_tsan ;;
    *) echo "sanitize.sh: unknown step '$step' (asan, tsan)" >&2; exit 2 ;;
  esac
done
