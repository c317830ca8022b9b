#!/usr/bin/env bash
# Adam vs Shampoo with patience (issue 21, item 3): the demo's function-matching student at
# several schedule lengths with each optimizer, each length its own run (the cosine schedule
# depends on it), at each optimizer's best learning rate of docs/optimizers.md's sweep (3e-2 for
# both). Reports test top-1 per (optimizer, epochs) as mean +- sd over the seeds, and the epochs
# Shampoo needs to reach Adam's top-1 at the longest length Adam ran (interpolated on a log axis
# between Shampoo's lengths). Resumable (a run with a summary.json is skipped); two runs at a time,
# one thread each. Writes <out>/optimizer_patience.md and its figure optimizer_patience.png. Not
# part of CI.
#   tools/experiments/optimizer_patience.sh ["150 300 600" (Shampoo)] ["600" (Adam)]
#   env: KD_BIN, KD_TEACHER, KD_OUT, KD_SEEDS ("0 1 2"), KD_ADAM_LR, KD_SHAMPOO_LR
set -euo pipefail
cd "$(dirname "$0")/../.."
shampoo_lengths=${1:-"150 300 600"}
adam_lengths=${2:-600}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/optimizer_patience}
seeds=${KD_SEEDS:-0 1 2}
. tools/experiments/common.sh
require_kd_and_teacher optimizer_patience.sh "$kd" "$teacher"
mkdir -p "$out"

run_job() {
  local opt=$1 e=$2 s=$3 name="${1}_${2}_s${3}" lr
  [ -f "$out/$name/summary.json" ] && return 0
  [ "$opt" = adam ] && lr=${KD_ADAM_LR:-3e-2} || lr=${KD_SHAMPOO_LR:-3e-2}
  OMP_NUM_THREADS=1 "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" \
    run.epochs="$e" run.seed="$s" run.threads=1 optim.name="$opt" optim.lr="$lr" teacher.weights="$teacher" \
    eval.every=100000 run.log_every=1000 > "$out/$name.log" 2>&1
  echo "done: $name"
}
jobs=()
for s in $seeds; do
  for e in $adam_lengths; do jobs+=("adam $e $s"); done
  for e in $shampoo_lengths; do jobs+=("shampoo $e $s"); done
done
# Longest first, over two workers.
mapfile -t longest_first < <(printf '%s\n' "${jobs[@]}" | sort -k2,2nr)
run_on_two_workers run_job "$out" "${longest_first[@]}"

/usr/bin/python3 - "$out" <<'PY' | tee "$out/optimizer_patience.md"
import glob, json, math, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "*_s*/summary.json")):
    opt, epochs, _ = os.path.basename(os.path.dirname(path)).split("_")
    s = json.load(open(path))
    runs.setdefault((opt, int(epochs)), []).append((100 * s["student_top1"], 100 * s["agreement"], s.get("wall_s", 0)))
def stat(v):
    return f"{statistics.mean(v):.2f} +- {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
print("| optimizer | epochs | seeds | student top-1 | agreement | wall per run |")
print("|---|---|---|---|---|---|")
for (opt, epochs) in sorted(runs):
    r = runs[(opt, epochs)]
    print(f"| {opt} | {epochs} | {len(r)} | {stat([x[0] for x in r])} | {stat([x[1] for x in r])} | "
          f"{statistics.mean([x[2] for x in r]):.0f} s |")
adam = sorted(e for o, e in runs if o == "adam")
shampoo = sorted(e for o, e in runs if o == "shampoo")
if adam and shampoo:
    target_epochs = adam[-1]
    target = statistics.mean(x[0] for x in runs[("adam", target_epochs)])
    curve = [(e, statistics.mean(x[0] for x in runs[("shampoo", e)])) for e in shampoo]
    found = None
    if curve[0][1] >= target:
        found = f"<= {curve[0][0]} (Shampoo's shortest run already reaches it)"
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        if found is None and a0 < target <= a1:
            t = (target - a0) / (a1 - a0)
            found = f"~{math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0))):.0f}"
    print()
    print(f"Adam's top-1 at {target_epochs} epochs: {target:.2f}. Epochs Shampoo needs for it "
          f"(its seed means, log-linear between its lengths): {found or 'more than ' + str(curve[-1][0])}.")
PY
/usr/bin/python3 tools/experiments/plot_runs.py optimizers "$out" -o "$out/optimizer_patience.png"
