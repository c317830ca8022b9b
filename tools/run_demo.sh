#!/usr/bin/env bash
# kd's main job on its built-in default: the paper's claim on Fashion-MNIST, on the CPU.
#   1. train a BiT ResNetV2 teacher from labels on all 60,000 training images;
#   2. distill a 15x smaller student by function matching on 1,020 training images only;
#   3. train the same student from labels on the same 1,020 images (the baseline);
#   4. evaluate all three on the 10,000 test images and print a table;
#   5. draw the three runs' curves (kd plot): runs/demo/curves.png, the numbers in curves.csv;
#      and the patience forecast of the distilled student (kd forecast): runs/demo/forecast.txt.
# Everything lands in runs/demo (KD_DEMO_OUT overrides); runs/demo/summary.json holds the numbers.
# Options (environment): KD_DEMO_OUT=dir, KD_BIN=path/to/kd (skip the build),
#   KD_DEMO_SCALE=0.05 (shorter schedules, for a smoke test), KD_DEVICE=cpu|cuda|auto (default
#   cpu: the demo is the CPU path's job, and the CUDA path has not been validated on a GPU yet),
#   KD_DEMO_SEED=N (run.seed of all three runs: initialisation, sample order, augmentation;
#   default 0), KD_DEMO_THREADS=N (run.threads: OpenMP threads of each run; default every core).
# The schedules (epochs) are the configs' run.epochs, times KD_DEMO_SCALE.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
out=${KD_DEMO_OUT:-runs/demo}
scale=${KD_DEMO_SCALE:-1}
device=${KD_DEVICE:-cpu}

if [ -z "${KD_BIN:-}" ]; then
  tools/install_deps.sh --build
  # Only the CPU path is built unless the GPU is asked for (tools/test.sh builds and tests the
  # CUDA code).
  cuda=OFF
  if [ "$device" != cpu ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
  cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DKD_CUDA=$cuda -DKD_TESTS=OFF >/dev/null
  cmake --build build-demo -j "$(nproc)" --target kd
  KD_BIN=build-demo/kd
fi
kd=$KD_BIN
built=$(date +%s)

epochs() { awk -v e="$1" -v s="$scale" 'BEGIN { v = e * s; if (v < 0.01) v = 0.01; print v }'; }
common=(run.out_dir="$out" run.device="$device" run.seed="${KD_DEMO_SEED:-0}" run.threads="${KD_DEMO_THREADS:-0}")
config_epochs() { sed -n 's/^epochs = \([0-9.]*\).*/\1/p' "$1" | head -1; }
teacher_epochs=$(config_epochs configs/fashion_mnist_teacher.toml)
student_epochs=$(config_epochs configs/fashion_mnist_distill.toml)
baseline_epochs=$(config_epochs configs/fashion_mnist_baseline.toml)

echo "== 1/4 teacher: labels, 60,000 images"
"$kd" train -c configs/fashion_mnist_teacher.toml "${common[@]}" run.epochs="$(epochs "$teacher_epochs")"
echo "== 2/4 student: function matching on 1,020 images"
# Six evaluations along the way (1,020 images in batches of 128): the curve kd forecast reads.
# (Not at the tiny scales of the tests, where evaluating 10,000 images would cost more than the
# training; there is no forecast then.)
fm_eval_every=$(awk -v e="$(epochs "$student_epochs")" -v s="$scale" \
  'BEGIN { n = int(e * 1020 / 128 / 6); if (n < 1) n = 1; print (s < 0.1 ? 0 : n) }')
"$kd" distill -c configs/fashion_mnist_distill.toml "${common[@]}" run.epochs="$(epochs "$student_epochs")" \
  teacher.weights="$out/teacher/model.safetensors" eval.every="$fm_eval_every"
echo "== 3/4 student: labels on the same 1,020 images (baseline)"
"$kd" train -c configs/fashion_mnist_baseline.toml "${common[@]}" run.epochs="$(epochs "$baseline_epochs")"
echo "== 4/4 agreement of the baseline with the teacher"
"$kd" eval "$out/student_labels/model.safetensors" --teacher "$out/teacher/model.safetensors" \
  --device "$device" --json > "$out/student_labels/eval_vs_teacher.json"

echo "== curves of the three runs"
"$kd" plot "$out/teacher" "$out/student_fm" "$out/student_labels" -o "$out/curves.png" \
  --label "teacher (labels)" --label "student (function matching)" --label "student (labels)" ||
  echo "no curves.png: kd plot failed (the table below does not need it)" >&2
if [ "$fm_eval_every" -gt 0 ]; then
  echo "== what more patience would likely buy (kd forecast, from the student's own curve: provisional)"
  "$kd" forecast "$out/student_fm" | tee "$out/forecast.txt" ||
    echo "no forecast: kd forecast failed (the table below does not need it)" >&2
fi

# Numbers from the runs' JSON (one "key": value per line, or one object per line).
get() { grep -o "\"$2\": [-0-9.eE+]*" "$1" | head -1 | sed 's/.*: //'; }
pct() { awk -v v="$1" 'BEGIN { printf "%.2f%%", 100 * v }'; }
teacher_top1=$(get "$out/teacher/summary.json" student_top1)
student_top1=$(get "$out/student_fm/summary.json" student_top1)
agreement=$(get "$out/student_fm/summary.json" agreement)
baseline_top1=$(get "$out/student_labels/summary.json" student_top1)
baseline_agreement=$(get "$out/student_labels/eval_vs_teacher.json" agreement)
finished=$(date +%s)
wall=$((finished - started))

cat > "$out/summary.json" <<JSON
{
  "teacher_top1": $teacher_top1,
  "student_top1": $student_top1,
  "baseline_top1": $baseline_top1,
  "agreement": $agreement,
  "baseline_agreement": $baseline_agreement,
  "student_gain_over_baseline": $(awk -v a="$student_top1" -v b="$baseline_top1" 'BEGIN { print a - b }'),
  "build_s": $((built - started)),
  "wall_s": $wall
}
JSON

echo
echo "| model | trained on | test top-1 | agreement with teacher |"
echo "|---|---|---|---|"
echo "| teacher $(sed -n 's/^arch = "\(.*\)"/\1/p' configs/fashion_mnist_teacher.toml) | labels, 60,000 images | $(pct "$teacher_top1") | - |"
echo "| student, function matching | teacher, 1,020 images | $(pct "$student_top1") | $(pct "$agreement") |"
echo "| student, labels (baseline) | labels, 1,020 images | $(pct "$baseline_top1") | $(pct "$baseline_agreement") |"
echo
echo "function matching vs labels on the same 1,020 images: $(awk -v a="$student_top1" -v b="$baseline_top1" 'BEGIN { printf "%+.2f", 100 * (a - b) }') points top-1"
echo "wall time ${wall}s (build $((built - started))s); everything is in $out (summary.json, curves.png)"
