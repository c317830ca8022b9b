#!/usr/bin/env bash
# Ensembles and resolution (issue 21, item 4; the paper's best students learn from an ensemble of
# a 224 px and a 384 px teacher): the demo's student distilled by function matching from teacher
# A alone (KD_TEACHER, trained at 32 px), from teacher B alone (trained here: another seed, at
# KD_B_RESOLUTION px), and from both (the mean of their softmaxes, each teacher seeing the
# student's view rendered at its own resolution). Same student, data, epochs and settings; 3
# seeds each. Resumable (a run with a summary.json is skipped, teacher B too); two runs at a
# time, one thread each. Writes <out>/ensemble.md and ensemble.png. Not part of CI.
#   tools/experiments/ensemble.sh [epochs (300)] ; env: KD_BIN, KD_TEACHER (teacher A), KD_OUT,
#   KD_SEEDS ("0 1 2"), KD_B_RESOLUTION (40), KD_B_SEED (1), KD_B_EPOCHS (8)
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-300}
kd=${KD_BIN:-build-demo/kd}
teacher_a=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/ensemble}
seeds=${KD_SEEDS:-"0 1 2"}
b_res=${KD_B_RESOLUTION:-40}
. tools/experiments/common.sh
require_kd_and_teacher ensemble.sh "$kd" "$teacher_a"
mkdir -p "$out"

# Teacher B: the demo teacher's recipe at another seed and resolution (2 threads: nothing else
# runs yet). Its evaluation views are rendered at its own resolution too.
teacher_b=$out/teacher_b/model.safetensors
if [ ! -f "$out/teacher_b/summary.json" ]; then
  OMP_NUM_THREADS=2 "$kd" train -c configs/fashion_mnist_teacher.toml run.out_dir="$out" run.name=teacher_b \
    run.epochs="${KD_B_EPOCHS:-8}" run.seed="${KD_B_SEED:-1}" augment.resolution="$b_res" \
    > "$out/teacher_b.log" 2>&1
  echo "done: teacher_b"
fi

run_job() {
  local v=$1 s=$2 name="${1}_s${2}" teachers=()
  [ -f "$out/$name/summary.json" ] && return 0
  case $v in
    a) teachers=("teacher.weights=$teacher_a" "teacher.resolution=[32]") ;;
    b) teachers=("teacher.weights=$teacher_b" "teacher.resolution=[$b_res]") ;;
    ab) teachers=("teacher.weights=[\"$teacher_a\", \"$teacher_b\"]" "teacher.resolution=[32, $b_res]"
                  distill.ensemble=softmax) ;;
  esac
  OMP_NUM_THREADS=1 "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" \
    run.epochs="$epochs" run.seed="$s" run.threads=1 "${teachers[@]}" > "$out/$name.log" 2>&1
  echo "done: $name"
}
jobs=()
for v in ab b a; do for s in $seeds; do jobs+=("$v $s"); done; done
run_on_two_workers run_job "$out" "${jobs[@]}"

/usr/bin/python3 - "$out" "$epochs" "$b_res" "$seeds" <<'PY' | tee "$out/ensemble.md"
import json, os, statistics, sys
out, epochs, b_res, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
what = {"a": "teacher A alone (seed 0, 32 px)", "b": f"teacher B alone (seed 1, {b_res} px)",
        "ab": f"ensemble A + B (mean softmax; 32 and {b_res} px)"}
def stat(xs):
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"
print(f"| distilled from ({epochs} epochs) | teacher(s) top-1 | student top-1 (seeds) | mean +- sd "
      "| agreement with its teacher(s) | agreement with A, with B | wall per run |")
print("|---|---|---|---|---|---|---|")
for v in ("a", "b", "ab"):
    ran = [s for s in seeds if os.path.exists(os.path.join(out, f"{v}_s{s}", "summary.json"))]
    runs = [json.load(open(os.path.join(out, f"{v}_s{s}", "summary.json"))) for s in ran]
    if not runs:
        continue
    top1 = [100 * r["student_top1"] for r in runs]
    agree = [100 * r["agreement"] for r in runs]
    each = ""
    if v == "ab":
        # summary.json carries each member's agreement (since round 2); older runs: the last eval record.
        for s, r in zip(ran, runs):
            if "each_agreement" not in r:
                evals = [json.loads(line)["eval"] for line in open(os.path.join(out, f"ab_s{s}", "metrics.jsonl"))
                         if '"each_agreement"' in line]
                if evals:
                    r["each_agreement"], r["each_teacher_top1"] = evals[-1]["each_agreement"], evals[-1]["each_teacher_top1"]
        if all("each_agreement" in r for r in runs):
            each = ", ".join(stat([100 * r["each_agreement"][m] for r in runs]) for m in (0, 1))
    teachers = f"{100 * runs[0]['teacher_top1']:.2f}"
    if "each_teacher_top1" in runs[0]:
        teachers += " (" + ", ".join(f"{100 * t:.2f}" for t in runs[0]["each_teacher_top1"]) + ")"
    print(f"| {what[v]} | {teachers} | {', '.join(f'{x:.2f}' for x in top1)} | {stat(top1)} | {stat(agree)} "
          f"| {each or '-'} | {statistics.mean(r['wall_s'] for r in runs):.0f} s |")
PY
/usr/bin/python3 tools/experiments/plot_runs.py ensemble "$out" -o "$out/ensemble.png"
