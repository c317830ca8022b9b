#!/usr/bin/env bash
# The one command for a machine with an NVIDIA GPU: build, every test with the GPU present (none
# may skip for lack of a device), the GPU tests under compute-sanitizer (memcheck, racecheck),
# the kernel benchmarks, kd bench on the default step, and PyTorch side by side (eager and
# torch.compile). Prints one table; logs go to $OUT (the device tool's output folder) if set,
# else build-gpu/check/.
#
# On the lent GPU machine (no apt, no network): first run tools/gpu_prepare.sh on the dev machine,
# then  device run: carry [".deps"]  command "tools/gpu_check.sh"   (or stage by stage:
# "tools/gpu_check.sh build", then "tools/gpu_check.sh check" -- each device call is <= 10 min).
# On a machine with Debian's packages it needs no .deps.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
case "$stage" in all|build|check) ;; *) echo "usage: tools/gpu_check.sh [all|build|check]" >&2; exit 2 ;; esac
build=${KD_GPU_BUILD:-build-gpu}
out=${OUT:-$build/check}
mkdir -p "$out"
jobs=$(nproc)
py=$(command -v python3 || echo /usr/bin/python3)
summary=()
failed=0
note() { summary+=("$1|$2|$3"); [ "$2" = FAIL ] && failed=1; }

# --- environment: libraries from .deps (gpu_prepare.sh) and from the pip wheels of PyTorch -------
if [ -d .deps/root ]; then
  deps=$(pwd)/.deps/root
  export CMAKE_PREFIX_PATH="$deps/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
pip_dir() { "$py" -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])" 2>/dev/null; }
cmake_extra=()
for pkg in nvidia.cudnn nvidia.nccl nvidia.cublas nvidia.cu13; do
  d=$(pip_dir "$pkg") || continue
  [ -n "$d" ] && [ -d "$d/lib" ] && export LD_LIBRARY_PATH="$d/lib:${LD_LIBRARY_PATH:-}"
  case "$pkg" in
    nvidia.cudnn) [ -n "$d" ] && cmake_extra+=(-DKD_CUDNN_ROOT="$d") ;;
    nvidia.nccl) [ -n "$d" ] && cmake_extra+=(-DKD_NCCL_ROOT="$d") ;;
  esac
done
export PATH="/usr/local/cuda/bin:$PATH"

if [ "$stage" != check ]; then
  echo "== build ($build)"
  start=$(date +%s)
  if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKD_CUDA=ON -DKD_PYTHON="$py" "${cmake_extra[@]}" \
       > "$out/build.log" 2>&1 && cmake --build "$build" -j "$jobs" >> "$out/build.log" 2>&1; then
    note build PASS "$(( $(date +%s) - start ))s"
  else
    tail -40 "$out/build.log"
    note build FAIL "see build.log"
  fi
fi

if [ "$stage" != build ] && [ "$failed" = 0 ]; then
  "$build/kd" info | tee -a "$out/build.log"
  grep -q "OLDER MAJOR" "$out/build.log" && note versions FAIL "cuDNN older than the headers" || note versions PASS "$(grep -E '^(cudnn|cuda):' "$out/build.log" | tr '\n' ' ')"

  echo "== tests with the GPU"
  (cd "$build" && ctest -j 8 --output-on-failure --timeout 900) > "$out/tests.log" 2>&1
  tests_rc=$?
  passed=$(grep -Eo "[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+" "$out/tests.log" | tail -1)
  no_device=$(grep -c "no CUDA device\|built without CUDA" "$out/tests.log")
  if [ "$tests_rc" = 0 ] && [ "$no_device" = 0 ]; then note tests PASS "$passed"
  else note tests FAIL "$passed; $no_device skipped for lack of a device"; fi

  echo "== compute-sanitizer"
  san_ok=1
  : > "$out/sanitizer.log"
  for tool in memcheck racecheck initcheck; do
    echo "==== $tool" >> "$out/sanitizer.log"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$build/tests/test_kernels" --gtest_filter='*Cuda*' \
      >> "$out/sanitizer.log" 2>&1 || { san_ok=0; echo "==== $tool FAILED" >> "$out/sanitizer.log"; }
  done
  [ "$san_ok" = 1 ] && note sanitizer PASS "memcheck, racecheck, initcheck clean" || note sanitizer FAIL "see sanitizer.log"

  echo "== bench_kernels"
  if [ -x "$build/bench_kernels" ]; then
    echo "==== bench_kernels" > "$out/bench.log"
    "$build/bench_kernels" --device cuda > "$out/bench_kernels.tmp" 2>&1 && note bench_kernels PASS "$(grep -c '^RESULT' "$out/bench_kernels.tmp") kernels" || note bench_kernels FAIL "see bench.log"
    cat "$out/bench_kernels.tmp" >> "$out/bench.log" && rm -f "$out/bench_kernels.tmp"
  else
    note bench_kernels FAIL "not built"
  fi

  echo "== kd bench vs PyTorch (teacher resnetv2_152x2_bit @224, student resnetv2_50x1_bit @160, batch 128)"
  "$build/kd" bench --device cuda > "$out/step.tmp" 2>&1
  kd_ips=$(grep -o '"images_per_sec": [0-9.]*' "$out/step.tmp" | cut -d' ' -f2)
  [ -n "$kd_ips" ] && note "kd bench" PASS "$kd_ips img/s, $(grep -o '"mfu": [0-9.]*' "$out/step.tmp" | cut -d' ' -f2) MFU" || note "kd bench" FAIL "see bench.log"
  { echo "==== kd bench"; cat "$out/step.tmp"; } >> "$out/bench.log"
  for mode in eager compile; do
    flag=(); [ "$mode" = compile ] && flag=(--compile)
    "$py" tools/torch_step.py --device cuda "${flag[@]}" > "$out/step.tmp" 2>&1
    ips=$(grep -o '"images_per_sec": [0-9.]*' "$out/step.tmp" | cut -d' ' -f2)
    { echo "==== torch_step.py $mode"; cat "$out/step.tmp"; } >> "$out/bench.log"
    if [ -n "$ips" ]; then
      ratio=$(awk -v a="${kd_ips:-0}" -v b="$ips" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
      note "torch $mode" PASS "$ips img/s (kd/torch = $ratio)"
    else
      note "torch $mode" FAIL "see bench.log"
    fi
  done
  rm -f "$out/step.tmp"
fi

{
  echo "| check | result | detail |"
  echo "|---|---|---|"
  for row in "${summary[@]}"; do IFS='|' read -r a b c <<< "$row"; echo "| $a | $b | $c |"; done
} | tee "$out/gpu_check_summary.md"
exit $failed
