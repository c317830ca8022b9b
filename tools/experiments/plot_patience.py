#!/usr/bin/python3
"""The patience figure (issue 21, item 1): test top-1 and agreement with the teacher against the
schedule length (log axis) for function matching and the label baseline, from the run folders
tools/experiments/patience.sh writes (fm_<epochs>_s<seed>, labels_<epochs>_s<seed>, each with a
summary.json; a baseline's agreement from the eval_vs_teacher.json patience.sh writes beside it).
Each seed is a dot, the mean over seeds a line. Prints the table it plots.

  tools/experiments/plot_patience.py RUNS_DIR -o patience.png
"""
import argparse
import collections
import json
import os
import re
import statistics


def load(runs):
    table = collections.defaultdict(dict)  # (kind, epochs) -> seed -> summary
    for name in sorted(os.listdir(runs)):
        m = re.fullmatch(r"(fm|labels)_(\d+)_s(\d+)", name)
        path = os.path.join(runs, name, "summary.json")
        if m and os.path.exists(path):
            summary = json.load(open(path))
            # A label baseline's agreement comes from `kd eval ... --teacher T --json` beside it.
            extra = os.path.join(runs, name, "eval_vs_teacher.json")
            if summary.get("agreement") is None and os.path.exists(extra):
                summary["agreement"] = json.load(open(extra))["agreement"]
            table[(m.group(1), int(m.group(2)))][int(m.group(3))] = summary
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("-o", "--out", default="patience.png")
    args = ap.parse_args()
    table = load(args.runs)
    if not table:
        raise SystemExit(f"plot_patience: no fm_<epochs>_s<seed> or labels_<epochs>_s<seed> runs in {args.runs}")
    print("| epochs | function matching top-1 (seeds) | labels top-1 (seeds) | FM agreement (seeds) "
          "| labels agreement (seeds) |")
    print("|---|---|---|---|---|")
    for e in sorted({e for _, e in table}):
        cell = lambda kind, key: ", ".join(f"{100 * s[key]:.2f}" for _, s in sorted(table.get((kind, e), {}).items())
                                           if s.get(key) is not None) or "-"
        print(f"| {e:,} | {cell('fm', 'student_top1')} | {cell('labels', 'student_top1')} | {cell('fm', 'agreement')} "
              f"| {cell('labels', 'agreement')} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"fm": ("function matching", "tab:blue"), "labels": ("labels (baseline)", "tab:orange")}
    for ax, key, title in ((axes[0], "student_top1", "test top-1 (%)"), (axes[1], "agreement", "agreement with the teacher (%)")):
        for kind, (label, colour) in styles.items():
            points = sorted((e, [100 * s[key] for s in seeds.values() if s.get(key) is not None])
                            for (k, e), seeds in table.items() if k == kind)
            points = [(e, v) for e, v in points if v]
            if not points:
                continue
            for e, values in points:
                ax.scatter([e] * len(values), values, color=colour, s=14, alpha=0.6)
            ax.plot([e for e, _ in points], [statistics.mean(v) for _, v in points], color=colour, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("epochs on the 1,020 training images")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Patience on Fashion-MNIST (dots: seeds; lines: their mean)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nplot_patience: {args.out}")


if __name__ == "__main__":
    main()
