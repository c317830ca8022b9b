#!/usr/bin/env bash
# Distilling on other data (issue 21, item 5; the paper's out-of-domain distillation): the demo's
# teacher distilled into the demo's student by function matching on images of another source
# (grayscale crops of scikit-image's photographs, tools/experiments/make_other_data.py; no labels
# used), evaluated on Fashion-MNIST's test split, against the same run on the demo's 1,020
# Fashion-MNIST training images. Same teacher, student, epochs and settings; 3 seeds each.
# Resumable (a run with a summary.json is skipped); two runs at a time, one thread each.
# Writes <out>/other_data.md. Not part of CI.
#   tools/experiments/other_data.sh [epochs] ; env: KD_BIN, KD_TEACHER, KD_OUT, KD_SEEDS ("0 1 2"),
#   KD_VARIANTS ("fashion photos photos_inverted"), KD_TABLE_ONLY=1 (only the table of the runs
#   that exist: e.g. after running a variant with fewer seeds)
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-300}
kd=${KD_BIN:-build-demo/kd}
teacher=${KD_TEACHER:-runs/demo/teacher/model.safetensors}
out=${KD_OUT:-runs/other_data}
seeds=${KD_SEEDS:-"0 1 2"}
variants=${KD_VARIANTS:-"fashion photos photos_inverted"}
. tools/experiments/common.sh
require_kd_and_teacher other_data.sh "$kd" "$teacher"
mkdir -p "$out"
[ -d "$out/photos" ] || /usr/bin/python3 tools/experiments/make_other_data.py "$out/photos" --count 1020
[ -d "$out/photos_inverted" ] || /usr/bin/python3 tools/experiments/make_other_data.py "$out/photos_inverted" --count 1020 --invert

run_job() {
  local v=$1 s=$2 name="${1}_s${2}"
  [ -f "$out/$name/summary.json" ] && return 0
  local data=()
  [ "$v" != fashion ] && data=(data.train_kind=images data.train="$out/$v")
  OMP_NUM_THREADS=1 "$kd" distill -c configs/fashion_mnist_distill.toml run.out_dir="$out" run.name="$name" \
    run.epochs="$epochs" run.seed="$s" run.threads=1 teacher.weights="$teacher" "${data[@]}" > "$out/$name.log" 2>&1
  echo "done: $name"
}
jobs=()
for s in $seeds; do for v in $variants; do jobs+=("$v $s"); done; done
[ "${KD_TABLE_ONLY:-0}" = 1 ] || run_on_two_workers run_job "$out" "${jobs[@]}"

/usr/bin/python3 - "$out" "$epochs" "$variants" "$seeds" <<'PY' | tee "$out/other_data.md"
import json, os, statistics, sys
out, epochs, variants, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
what = {"fashion": "Fashion-MNIST, 1,020 training images (the demo)",
        "photos": "photo crops, 1,020 (no Fashion-MNIST image)",
        "photos_inverted": "photo crops, half inverted, 1,020"}
print(f"| distilled on ({epochs} epochs) | student top-1 (seeds) | mean | agreement (seeds) | mean |")
print("|---|---|---|---|---|")
for v in variants:
    runs = [json.load(open(os.path.join(out, f"{v}_s{s}", "summary.json")))
            for s in seeds if os.path.exists(os.path.join(out, f"{v}_s{s}", "summary.json"))]
    if not runs:
        continue
    top1 = [100 * r["student_top1"] for r in runs]
    agree = [100 * r["agreement"] for r in runs]
    spread = lambda xs: f" +- {statistics.stdev(xs):.2f}" if len(xs) > 1 else ""
    print(f"| {what.get(v, v)} | {', '.join(f'{x:.2f}' for x in top1)} | {statistics.mean(top1):.2f}{spread(top1)} "
          f"| {', '.join(f'{x:.2f}' for x in agree)} | {statistics.mean(agree):.2f}{spread(agree)} |")
PY
