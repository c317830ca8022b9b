#!/usr/bin/python3
"""The other-data figure (issue 21, item 5): a sample of the images each variant distilled on, and
test top-1 and agreement on Fashion-MNIST per variant (bars: mean over seeds; dots: seeds), from
the run folders tools/experiments/other_data.sh writes (<variant>_s<seed>/summary.json and the
image folders photos/, photos_inverted/).

  tools/experiments/plot_other_data.py RUNS_DIR -o other_data.png
"""
import argparse
import glob
import json
import os
import re
import statistics

LABELS = {"fashion": "Fashion-MNIST\n(1,020 images)", "photos": "photo crops\n(1,020)",
          "photos_inverted": "photo crops,\nhalf inverted (1,020)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("-o", "--out", default="other_data.png")
    args = ap.parse_args()
    results = {}
    for path in sorted(glob.glob(os.path.join(args.runs, "*_s*", "summary.json"))):
        m = re.fullmatch(r"(.+)_s(\d+)", os.path.basename(os.path.dirname(path)))
        if m:
            results.setdefault(m.group(1), []).append(json.load(open(path)))
    variants = [v for v in LABELS if v in results]
    if not variants:
        raise SystemExit(f"plot_other_data: no <variant>_s<seed> runs in {args.runs}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    fig = plt.figure(figsize=(12, 4.2))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.1, 1, 1])
    sample = fig.add_subplot(grid[0])
    rows = []
    for folder in ("photos", "photos_inverted"):
        files = sorted(glob.glob(os.path.join(args.runs, folder, "*.png")))[:8]
        if files:
            rows.append(np.concatenate([np.asarray(Image.open(f).convert("L")) for f in files], axis=1))
    if rows:
        sample.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=255)
        sample.set_title("what the student saw (photos; half inverted)", fontsize=9)
    sample.axis("off")
    for i, (key, title) in enumerate((("student_top1", "Fashion-MNIST test top-1 (%)"),
                                      ("agreement", "agreement with the teacher (%)"))):
        ax = fig.add_subplot(grid[i + 1])
        for x, v in enumerate(variants):
            values = [100 * r[key] for r in results[v]]
            ax.bar(x, statistics.mean(values), color="tab:blue" if v == "fashion" else "tab:green", alpha=0.6)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(variants)), [LABELS[v] for v in variants], fontsize=8)
        ax.set_ylabel(title)
        ax.set_ylim(0, 100)
        ax.axhline(10, color="gray", linestyle=":", linewidth=1)  # chance: 10 classes
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Distilling the Fashion-MNIST teacher on other images (300 epochs; dots: seeds; dotted: chance)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot_other_data: {args.out}")


if __name__ == "__main__":
    main()
