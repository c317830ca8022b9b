#!/usr/bin/env bash
# Adam vs Shampoo on the demo's distillation (function matching of the demo's teacher into the
# demo's student on 1,020 Fashion-MNIST images): a small learning-rate sweep for each, then the
# training KL and test top-1 against steps, and how many steps Shampoo (at its best lr) needs to
# reach the final training KL of Adam (at its best lr). The paper reports ~4x fewer steps.
# Writes <out>/optimizers.md and <out>/optimizers.png (kd plot of each optimizer's best lr). Not
# part of CI. Re-runnable: finished runs (summary.json) are skipped, interrupted ones resume.
#   tools/experiments/optimizers.sh [epochs] ; env: KD_BIN, KD_TEACHER, KD_OUT, KD_LRS, KD_SEED
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-300}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/optimizers}
lrs=${KD_LRS:-"3e-3 1e-2 3e-2"}
seed=${KD_SEED:-0}
. tools/experiments/common.sh
require_kd_and_teacher optimizers.sh "$kd" "$teacher"
mkdir -p "$out"
for opt in adam shampoo; do
  for lr in $lrs; do
    name="${opt}_lr${lr}_s${seed}"
    [ -f "$out/$name/summary.json" ] && { echo "== $name: done"; continue; }
    echo "== $name ($epochs epochs)"
    "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" run.epochs="$epochs" \
      run.seed="$seed" optim.name="$opt" optim.lr="$lr" teacher.weights="$teacher" eval.every=400 run.log_every=20 \
      checkpoint.every=500 --resume
  done
done
/usr/bin/python3 tools/experiments/plot_optimizers.py "$out" "$lrs" "$seed" "$kd"
