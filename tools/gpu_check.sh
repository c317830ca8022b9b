#!/usr/bin/env bash
# The one command for a machine with an NVIDIA GPU: build, every test with the GPU present (none
# may skip for lack of a device), the kernel benchmarks, kd bench on the default step, PyTorch side
# by side (eager and torch.compile), the GPU tests under compute-sanitizer. Prints one table; logs
# go to $OUT (the device tool's output folder) if set, else build-gpu/check/.
#
# On the lent GPU machine (no apt, no network; a fresh machine per call): run tools/gpu_prepare.sh
# on the dev machine first, then
#   device run:  carry [".deps"]  command "tools/gpu_check.sh"
# The build takes ~1 min on its 16 cores and the whole check ~8 min. Stages can be picked:
#   tools/gpu_check.sh build tests        (stages: build tests bench torch sanitizer; default all)
# KD_GPU_TORCH_MODES="eager compile" picks PyTorch's modes; torch needs no build of kd.
# KD_GPU_TARGETS="kd test_tools" builds only those targets (a short check of a few tests);
# KD_GPU_TESTS_REGEX='Jpeg|BatchNorm' runs only the tests whose names match (ctest -R).
# Each stage runs under a time limit (KD_GPU_LIMIT_<STAGE>=seconds) so the call ends inside the
# device tool's 10 minutes with a table even when something hangs; a limit of 0 skips a bench row.
# KD_GPU_BENCH_FILTER=groupnorm runs only the bench_kernels rows whose names contain it.
# KD_GPU_SANITIZER_TOOLS="memcheck" and KD_GPU_SANITIZER_FILTER='*ShampooCuda*' narrow the
# sanitizer stage when the call has little time left.
set -uo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} = 0 ] && stages=(build tests bench torch sanitizer)
for s in "${stages[@]}"; do
  case "$s" in build|tests|bench|torch|sanitizer) ;;
    *) echo "usage: tools/gpu_check.sh [build] [tests] [bench] [torch] [sanitizer]" >&2; exit 2 ;; esac
done
want() { [[ " ${stages[*]} " == *" $1 "* ]]; }
build=${KD_GPU_BUILD:-build-gpu}
out=${OUT:-$build/check}
mkdir -p "$out"
jobs=$(nproc)
py=$(command -v python3 || echo /usr/bin/python3)
# kd's Python tools (forecast, plot, the timm parity scripts) run on the one with torch and timm,
# not on /usr/bin/python3, which there lacks numpy and matplotlib.
export KD_PYTHON=${KD_PYTHON:-$py}
summary=()
failed=0
note() { summary+=("$1|$2|$3"); [ "$2" = FAIL ] && failed=1; echo "-- $1: $2 $3"; }
limit() { local v="KD_GPU_LIMIT_$1"; echo "${!v:-$2}"; }
skipped() { [ "$(limit "$1" 1)" = 0 ] && { note "$2" SKIP "KD_GPU_LIMIT_$1=0"; true; }; }
# kd bench with flags, as one row beside the default run (kd_ips): kd_variant ROW LIMIT LOG LABEL FLAGS...
kd_variant() {
  local row=$1 lim=$2 log=$3 label=$4 rc ips
  shift 4
  skipped "$lim" "$row" && return 0
  echo "== kd bench $*"
  timeout "$(limit "$lim" 150)" "$build/kd" bench --device cuda "$@" > "$out/$log" 2>&1
  rc=$?
  tail -12 "$out/$log"
  ips=$(grep -o '"images_per_sec": [0-9.]*' "$out/$log" | cut -d' ' -f2)
  [ -n "$ips" ] && note "$row" PASS "$ips img/s ($label: ${kd_ips:-?})" || note "$row" FAIL "rc $rc, see $log"
}

# --- environment: libraries from .deps (gpu_prepare.sh) and from the pip wheels of PyTorch -------
if [ -d .deps/root ]; then
  deps=$(pwd)/.deps/root
  export CMAKE_PREFIX_PATH="$deps/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # The multiarch folder too: jpeglib.h includes jconfig.h, and the machine's own (Ubuntu's
  # libjpeg-turbo8, version 80) must not pair with the carried libjpeg62 (the first GPU run of
  # the JPEG tests failed with "library is 62, caller expects 80").
  export CPATH="$deps/usr/include/x86_64-linux-gnu:$deps/usr/include${CPATH:+:$CPATH}"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/usr/lib/x86_64-linux-gnu/openblas-openmp:$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -2
  g++ --version | head -1; "$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cudnn', torch.backends.cudnn.version())"
} > "$out/machine.log" 2>&1
cat "$out/machine.log"

if want build; then
  echo "== build ($build)"
  start=$(date +%s)
  if timeout "$(limit BUILD 400)" cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKD_CUDA=ON \
       -DKD_PYTHON="$py" "${cmake_extra[@]}" > "$out/build.log" 2>&1 &&
     timeout "$(limit BUILD 400)" cmake --build "$build" -j "$jobs" ${KD_GPU_TARGETS:+--target $KD_GPU_TARGETS} \
       >> "$out/build.log" 2>&1; then
    note build PASS "$(( $(date +%s) - start ))s"
  else
    tail -40 "$out/build.log"
    note build FAIL "see build.log"
  fi
fi
if [ ! -x "$build/kd" ]; then
  if want tests || want bench || want sanitizer; then note kd FAIL "$build/kd missing: tests and benchmarks cannot run"; fi
  keep=(); want torch && keep=(torch); stages=("${keep[@]}")
else
  "$build/kd" info > "$out/info.log" 2>&1
  cat "$out/info.log" >> "$out/machine.log"
  cat "$out/info.log"
  grep -q "OLDER MAJOR" "$out/info.log" && note versions FAIL "cuDNN older than the headers" ||
    note versions PASS "$(grep -E '^(cudnn|cuda|device)' "$out/info.log" | tr '\n' ' ')"
  rm -f "$out/info.log"
fi

if want tests; then
  echo "== tests with the GPU"
  # One OpenMP thread per test process: ctest runs one process per core.
  (cd "$build" && OMP_NUM_THREADS=2 timeout "$(limit TESTS 300)" ctest -j "$(( jobs / 2 ))" --output-on-failure --timeout 240 ${KD_GPU_TESTS_REGEX:+-R "$KD_GPU_TESTS_REGEX"}) > "$out/tests.log" 2>&1
  tests_rc=$?
  passed=$(grep -Eo "[0-9]+% tests passed(, [0-9]+ tests failed)? out of [0-9]+" "$out/tests.log" | tail -1)
  no_device=$(grep -c "no CUDA device\|built without CUDA" "$out/tests.log")
  if [ "$tests_rc" = 0 ] && [ "$no_device" = 0 ]; then note tests PASS "$passed"
  else note tests FAIL "${passed:-rc $tests_rc}; $no_device skipped for lack of a device"; grep -E "^\s+[0-9]+ - |\(Failed\)|\(Timeout\)|SEGFAULT|Exception" "$out/tests.log" | head -40; fi
fi

if want bench; then
  if ! skipped BENCH_KERNELS bench_kernels; then
  echo "== bench_kernels"
  timeout "$(limit BENCH_KERNELS 150)" "$build/bench_kernels" --device cuda ${KD_GPU_BENCH_FILTER:+--filter "$KD_GPU_BENCH_FILTER"} \
    > "$out/bench_kernels.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] && note bench_kernels PASS "$(grep -c '^RESULT' "$out/bench_kernels.log") kernels" || note bench_kernels FAIL "rc $rc, see bench_kernels.log"
  grep -v '^RESULT' "$out/bench_kernels.log" | tail -40
  fi
  echo "== kd bench (teacher resnetv2_152x2_bit @224, student resnetv2_50x1_bit @160, batch 128)"
  # --ops 40: one more step timed op by op (the table that directs the convolution work).
  timeout "$(limit KD_BENCH 150)" "$build/kd" bench --device cuda --ops 40 > "$out/kd_bench.log" 2>&1
  rc=$?
  grep -v -E '^conv2d_(forward|backward_data|backward_filter)_cuda ' "$out/kd_bench.log" | tail -75  # (plans: in the log)
  kd_ips=$(grep -o '"images_per_sec": [0-9.]*' "$out/kd_bench.log" | cut -d' ' -f2)
  [ -n "$kd_ips" ] && note "kd bench" PASS "$kd_ips img/s, $(grep -o '"mfu": [0-9.]*' "$out/kd_bench.log" | cut -d' ' -f2) MFU" ||
    note "kd bench" FAIL "rc $rc, see kd_bench.log"
  # kd bench with one optimisation switched (each beside the default run above).
  kd_variant "kd bench gn two pass" KD_BENCH_GN_TWO_PASS kd_bench_gn_two_pass.log "one pass" --no-groupnorm-one-pass
  kd_variant "kd bench conv pad" KD_BENCH_CONV_PAD kd_bench_conv_pad.log "unpadded" --conv-pad-channels
  # The step that reads its loss and gradient norm back every step (run.step_stats = host), against
  # the default one that never waits for the host.
  kd_variant "kd bench host stats" KD_BENCH_HOST_STATS kd_bench_host_stats.log "device stats" --step-stats host
  # Weight gradients of patch convolutions as im2col + GEMM instead of cuDNN's (if faster: default).
  kd_variant "kd bench wgrad im2col" KD_BENCH_WGRAD_IM2COL kd_bench_wgrad_im2col.log "cuDNN wgrad" --conv-wgrad-im2col
  # The step uncaptured (launched kernel by kernel) against the default CUDA graph replay; the
  # log's "host: one step enqueued in" line is the host's cost per step either way.
  kd_variant "kd bench no cuda graph" KD_BENCH_NO_GRAPH kd_bench_no_graph.log "cuda graph" --cuda-graph off
  # Pixel uploads on the compute stream instead of a copy stream of their own.
  kd_variant "kd bench no copy stream" KD_BENCH_NO_COPY_STREAM kd_bench_no_copy_stream.log "copy stream" --no-copy-stream
  # The FP8 teacher (cuDNN's FP8 convolutions; a warning in the log if they fell back to emulation).
  kd_variant "kd bench teacher fp8" KD_BENCH_FP8 kd_bench_fp8.log "bf16 teacher" --teacher-precision fp8
  # Autotuning's worth: the same step with cuDNN's first engine per convolution (the run above
  # autotuned and filled the cache, so it timed the candidates during its warm-up).
  kd_variant "kd bench no autotune" KD_BENCH_NO_TUNE kd_bench_no_autotune.log "autotuned" --no-autotune
  if [ -d .deps/jpegfix ] && ! skipped KD_BENCH_LOADER "kd bench-loader"; then
    echo "== kd bench-loader (CPU decoders per thread, nvJPEG on the GPU)"
    timeout "$(limit KD_BENCH_LOADER 120)" "$build/kd" bench-loader .deps/jpegfix --threads 1,$jobs > "$out/bench_loader.log" 2>&1
    rc=$?
    tail -14 "$out/bench_loader.log"
    nvjpeg_ips=$(grep -o '"decoder": "nvjpeg", "hardware": [a-z]*, "images_per_sec": [0-9.]*' "$out/bench_loader.log" | grep -o '[0-9.]*$')
    [ "$rc" = 0 ] && [ -n "$nvjpeg_ips" ] && note "kd bench-loader" PASS "nvJPEG $nvjpeg_ips img/s" ||
      note "kd bench-loader" FAIL "rc $rc, see bench_loader.log"
  fi
  # The data-parallel path on one GPU: NCCL with one rank (buckets reduce to themselves), its
  # all-reduce bandwidth (device copies with one rank), and the step with and without buckets.
  if ! skipped KD_BENCH_NCCL "kd bench nccl"; then
  echo "== kd bench over NCCL (1 rank, --comm --compare-overlap)"
  timeout "$(limit KD_BENCH_NCCL 150)" "$build/kd" bench --device cuda --backend nccl --comm --compare-overlap \
    --steps 5 > "$out/kd_bench_nccl.log" 2>&1
  rc=$?
  tail -30 "$out/kd_bench_nccl.log"
  nccl_ips=$(grep '"tool": "kd"' "$out/kd_bench_nccl.log" | grep -o '"images_per_sec": [0-9.]*' | cut -d' ' -f2 | tr '\n' '/')
  [ "$rc" = 0 ] && [ -n "$nccl_ips" ] && note "kd bench nccl" PASS "${nccl_ips%/} img/s (buckets during / after backward)" ||
    note "kd bench nccl" FAIL "rc $rc, see kd_bench_nccl.log"
  fi
fi

if want torch; then
  # KD_IPS: kd bench's images/s from an earlier call, when this one runs PyTorch alone.
  kd_ips=${kd_ips:-${KD_IPS:-$(grep -o '"images_per_sec": [0-9.]*' "$out/kd_bench.log" 2>/dev/null | cut -d' ' -f2)}}
  : > "$out/torch_step.log"
  for mode in ${KD_GPU_TORCH_MODES:-eager compile}; do
    flag=(); [ "$mode" = compile ] && flag=(--compile)
    echo "== torch_step.py $mode"
    PYTHONUNBUFFERED=1 timeout "$(limit TORCH 200)" "$py" tools/torch_step.py --device cuda "${flag[@]}" > "$out/step.tmp" 2>&1
    rc=$?
    ips=$(grep -o '"images_per_sec": [0-9.]*' "$out/step.tmp" | cut -d' ' -f2)
    tail -12 "$out/step.tmp"; [ "$rc" = 124 ] && echo "torch_step.py $mode: timed out after $(limit TORCH 200) s" | tee -a "$out/step.tmp"
    { echo "==== torch_step.py $mode"; cat "$out/step.tmp"; } >> "$out/torch_step.log"
    if [ -n "$ips" ]; then
      ratio=$(awk -v a="${kd_ips:-0}" -v b="$ips" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
      note "torch $mode" PASS "$ips img/s (kd/torch = $ratio)"
    else
      note "torch $mode" FAIL "see torch_step.log"
    fi
  done
  rm -f "$out/step.tmp"
fi

if want sanitizer; then
  # memcheck and initcheck over every CUDA kernel test; racecheck (shared-memory hazards, slow)
  # over the tests of kd's own kernels: cuDNN's and cuBLAS's are not ours to fix.
  echo "== compute-sanitizer (the CUDA kernel tests)"
  own='*NormCuda*:*AugmentCuda*:*DistillLossCuda*:*CrossEntropyCuda*:*WeightStdCuda*:*PoolCuda*:*OptimCuda*:*ElementwiseCuda*:*CastCuda*:*GraftCuda*:*ShampooCuda*:*Fp8Cuda*:*ChannelPadCuda*:*ChannelCuda*:*StepStatsCuda*:*ConvWgradIm2colCuda*'
  san_detail=()
  : > "$out/sanitizer.log"
  for tool in ${KD_GPU_SANITIZER_TOOLS:-memcheck racecheck initcheck}; do
    filter=${KD_GPU_SANITIZER_FILTER:-'*Cuda*'}; [ "$tool" = racecheck ] && filter=${KD_GPU_SANITIZER_FILTER:-$own}
    echo "==== $tool ($filter)" >> "$out/sanitizer.log"
    timeout "$(limit SANITIZER 120)" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$build/tests/test_kernels" --gtest_filter="$filter" --gtest_brief=1 >> "$out/sanitizer.log" 2>&1
    rc=$?
    case $rc in
      0) san_detail+=("$tool clean") ;;
      9) san_detail+=("$tool FOUND ERRORS") ;;
      124) san_detail+=("$tool timed out") ;;
      *) san_detail+=("$tool: tests failed under it (rc $rc)") ;;
    esac
    echo "==== $tool rc $rc" >> "$out/sanitizer.log"
  done
  detail=$(IFS=,; echo "${san_detail[*]}")
  [[ "$detail" == *FOUND* || "$detail" == *timed* || "$detail" == *rc* ]] && note sanitizer FAIL "$detail" || note sanitizer PASS "$detail"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race reported|Uninitialized" "$out/sanitizer.log" | sort | uniq -c | head -20
fi

{
  echo "| check | result | detail |"
  echo "|---|---|---|"
  for row in "${summary[@]}"; do IFS='|' read -r a b c <<< "$row"; echo "| $a | $b | $c |"; done
} | tee "$out/gpu_check_summary.md"
exit $failed
