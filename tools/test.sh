#!/usr/bin/env bash
# Builds kd (CUDA code too, when nvcc is present) and runs every test in parallel.
# GPU tests skip with a reason where no GPU is usable. Then the CPU tests again under sanitizers
# (tools/sanitize.sh: ASan+UBSan, TSan for the loader), unless ctest arguments were given or
# KD_SANITIZE_TESTS=0.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh --test
build=${KD_BUILD_DIR:-build}
jobs=$(nproc)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${KD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$jobs"
# One thread per test: tests run side by side instead.
(cd "$build" && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j "$jobs" "$@")
if [ $# -eq 0 ] && [ "${KD_SANITIZE_TESTS:-1}" != 0 ]; then
  tools/sanitize.sh
fi
