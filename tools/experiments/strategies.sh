#!/usr/bin/env bash
# The paper's comparison of teaching strategies (its Figure 3) on kd's Fashion-MNIST setting:
# fixed teacher, independent noise, consistent teaching and function matching, each distilling
# the demo's teacher into the demo's student on the same 1,020 images with the same budget.
# Writes <out>/strategies.md (final numbers) and <out>/strategies.png (kd plot: training loss,
# student top-1 and agreement against steps; the points in strategies.csv).
# Not part of CI. Needs a trained teacher (tools/run_demo.sh makes one).
#   tools/experiments/strategies.sh [epochs] ; env: KD_BIN, KD_TEACHER, KD_OUT, KD_EVAL_EVERY
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-300}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/strategies}
eval_every=${KD_EVAL_EVERY:-240}
[ -x "$kd" ] || { echo "strategies.sh: no kd binary at $kd (build it, or set KD_BIN)" >&2; exit 2; }
[ -f "$teacher" ] || { echo "strategies.sh: no teacher at $teacher (run tools/run_demo.sh, or set KD_TEACHER)" >&2; exit 2; }
mkdir -p "$out"
for s in fixed independent consistent function_matching; do
  echo "== $s ($epochs epochs)"
  "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$s" run.epochs="$epochs" \
    distill.strategy="$s" teacher.weights="$teacher" eval.every="$eval_every" run.log_every=1000
done
/usr/bin/python3 - "$out" "$epochs" <<'PY'
import json, os, sys
out, epochs = sys.argv[1], sys.argv[2]
names = ["fixed", "independent", "consistent", "function_matching"]
rows = []
for n in names:
    s = json.load(open(os.path.join(out, n, "summary.json")))
    rows.append((n, 100 * s["student_top1"], 100 * s["agreement"], s["kl"], s["wall_s"]))
with open(os.path.join(out, "strategies.md"), "w") as f:
    f.write(f"| strategy ({epochs} epochs, 1,020 images) | student top-1 | agreement | KL | wall |\n|---|---|---|---|---|\n")
    for n, top1, agree, kl, wall in rows:
        f.write(f"| {n} | {top1:.2f}% | {agree:.2f}% | {kl:.4f} | {wall:.0f}s |\n")
print(open(os.path.join(out, "strategies.md")).read())
PY
"$kd" plot "$out/fixed" "$out/independent" "$out/consistent" "$out/function_matching" -o "$out/strategies.png"
