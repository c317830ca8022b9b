#!/usr/bin/env bash
# Patience (the paper's central claim) and the forecast's backtest, on kd's Fashion-MNIST setting:
# the demo's function-matching student (and, with KD_LABELS=1, its label baseline) at several
# schedule lengths and seeds, each its own run (the cosine schedule depends on the length).
# Resumable: a run with a summary.json is skipped, so re-running continues where it stopped.
# Then kd forecast is fitted on the runs up to KD_FIT_MAX epochs and compared with the longer
# runs: <out>/backtest.md; the figure <out>/patience.png (tools/experiments/plot_patience.py) and
# its table <out>/patience.md. Two runs at a time, one thread each (2 cores). Not part of CI.
#   tools/experiments/patience.sh "25 50 100 200 400" ; env: KD_BIN, KD_TEACHER, KD_OUT,
#   KD_SEEDS ("0"; fitting lengths also get "1"), KD_FIT_MAX (100), KD_LABELS (0: 1 adds the label
#   baseline), KD_FM (1: 0 runs no function-matching run, e.g. to add baseline seeds)
set -euo pipefail
cd "$(dirname "$0")/../.."
lengths=${1:-"150 300 600 1200 2400"}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/patience}
fit_max=${KD_FIT_MAX:-600}
. tools/experiments/common.sh
require_kd_and_teacher patience.sh "$kd" "$teacher"
mkdir -p "$out"

jobs=()
for e in $lengths; do
  seeds=${KD_SEEDS:-0}
  [ "$e" -le "$fit_max" ] && [ -z "${KD_SEEDS:-}" ] && seeds="0 1"
  for s in $seeds; do
    [ "${KD_FM:-1}" = 1 ] && jobs+=("fm $e $s")
    [ "${KD_LABELS:-0}" = 1 ] && jobs+=("labels $e $s")
  done
done
run_job() {
  local kind=$1 e=$2 s=$3 name="${1}_${2}_s${3}"
  [ -f "$out/$name/summary.json" ] && return 0
  if [ "$kind" = fm ]; then
    OMP_NUM_THREADS=1 "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" \
      run.epochs="$e" run.seed="$s" teacher.weights="$teacher" > "$out/$name.log" 2>&1
  else
    OMP_NUM_THREADS=1 "$kd" train -c configs/fashion_mnist_baseline.toml run.out_dir="$out" run.name="$name" \
      run.epochs="$e" run.seed="$s" > "$out/$name.log" 2>&1
  fi
  # The baseline's agreement with the teacher (a label run's summary has none), for the figure.
  [ "$kind" = labels ] && OMP_NUM_THREADS=1 "$kd" eval "$out/$name/model.safetensors" --teacher "$teacher" \
    --device cpu --json > "$out/$name/eval_vs_teacher.json" 2>> "$out/$name.log"
  echo "done: $name"
}
# Longest first, over two workers.
mapfile -t longest_first < <(printf '%s\n' "${jobs[@]}" | sort -k2,2nr)
run_on_two_workers run_job "$out" "${longest_first[@]}"

# The backtest: fit on the runs up to fit_max epochs, forecast 2x and 4x, compare with the runs.
fit=() ; longer=()
for d in "$out"/fm_*_s*; do
  [ -f "$d/summary.json" ] || continue
  e=$(basename "$d" | cut -d_ -f2)
  if [ "$e" -le "$fit_max" ]; then fit+=("$d"); else longer+=("$d"); fi
done
"$kd" forecast "${fit[@]}" --json > "$out/forecast.json"
"$kd" forecast "${fit[@]}" | tee "$out/forecast.txt"
/usr/bin/python3 - "$out" "${longer[@]}" > "$out/backtest.md" <<'PY'
import json, os, sys
out, longer = sys.argv[1], sys.argv[2:]
f = json.load(open(os.path.join(out, "forecast.json")))
print("| metric | epochs | forecast (68% interval) | measured | error |")
print("|---|---|---|---|---|")
for run in sorted(longer, key=lambda d: int(os.path.basename(d).split("_")[1])):
    s = json.load(open(os.path.join(run, "summary.json")))
    for metric, key in (("student_top1", "student_top1"), ("agreement", "agreement")):
        m = f["metrics"].get(metric)
        if not m:
            continue
        for fc in m["forecasts"]:
            if abs(fc["epochs"] - s["epochs"]) / s["epochs"] < 0.02:
                got = 100 * s[key]
                print(f"| {metric} | {s['epochs']:.0f} | {fc['value']:.2f} [{fc['low']:.2f}, {fc['high']:.2f}] | "
                      f"{got:.2f} | {got - fc['value']:+.2f} |")
PY
cat "$out/backtest.md"
# The figure and its table: top-1 and agreement against epochs, both students, every seed.
/usr/bin/python3 tools/experiments/plot_patience.py "$out" -o "$out/patience.png" | tee "$out/patience.md"
