#!/usr/bin/env bash
# The paper's comparison of teaching strategies (its Figure 3) on kd's Fashion-MNIST setting:
# fixed teacher, independent noise, consistent teaching and function matching, each distilling
# the demo's teacher into the demo's student on the same 1,020 images with the same budget, at
# one or more seeds. Resumable (a run with a summary.json is skipped); two runs at a time, one
# thread each. Writes <out>/strategies.md (per seed, and mean +- sd over the seeds) and
# <out>/strategies.png (kd plot of the first seed's runs: training loss, student top-1 and
# agreement against steps; the points in strategies.csv).
# Not part of CI. Needs a trained teacher (tools/run_demo.sh makes one).
#   tools/experiments/strategies.sh [epochs] ; env: KD_BIN, KD_TEACHER, KD_OUT, KD_EVAL_EVERY,
#   KD_SEEDS ("0"), KD_STRATEGIES (all four; e.g. "consistent function_matching" for long schedules)
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-300}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/strategies}
eval_every=${KD_EVAL_EVERY:-240}
seeds=${KD_SEEDS:-0}
. tools/experiments/common.sh
require_kd_and_teacher strategies.sh "$kd" "$teacher"
mkdir -p "$out"
strategies=${KD_STRATEGIES:-fixed independent consistent function_matching}

run_job() {
  local st=$1 s=$2 name="${1}_s${2}"
  [ -f "$out/$name/summary.json" ] && return 0
  OMP_NUM_THREADS=1 "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" \
    run.epochs="$epochs" run.seed="$s" run.threads=1 distill.strategy="$st" teacher.weights="$teacher" \
    eval.every="$eval_every" run.log_every=1000 > "$out/$name.log" 2>&1
  echo "done: $name"
}
jobs=()
for s in $seeds; do for st in $strategies; do jobs+=("$st $s"); done; done
run_on_two_workers run_job "$out" "${jobs[@]}"

/usr/bin/python3 - "$out" "$epochs" "$strategies" "$seeds" <<'PY' | tee "$out/strategies.md"
import json, os, statistics, sys
out, epochs, names, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
print(f"| strategy ({epochs} epochs, 1,020 images) | seed | student top-1 | agreement | KL | wall |")
print("|---|---|---|---|---|---|")
means = []
for n in names:
    runs = [(s, json.load(open(os.path.join(out, f"{n}_s{s}", "summary.json")))) for s in seeds]
    for s, r in runs:
        print(f"| {n} | {s} | {100 * r['student_top1']:.2f}% | {100 * r['agreement']:.2f}% | {r['kl']:.4f} "
              f"| {r['wall_s']:.0f}s |")
    top1 = [100 * r["student_top1"] for _, r in runs]
    agree = [100 * r["agreement"] for _, r in runs]
    means.append((n, top1, agree))
if len(seeds) > 1:
    print(f"\n| strategy ({epochs} epochs, {len(seeds)} seeds) | student top-1, mean +- sd | agreement, mean +- sd |")
    print("|---|---|---|")
    for n, top1, agree in means:
        print(f"| {n} | {statistics.mean(top1):.2f} +- {statistics.stdev(top1):.2f} "
              f"| {statistics.mean(agree):.2f} +- {statistics.stdev(agree):.2f} |")
PY
first=$(echo "$seeds" | cut -d' ' -f1)
firsts=()
for st in $strategies; do firsts+=("$out/${st}_s$first"); done
"$kd" plot "${firsts[@]}" -o "$out/strategies.png"
