#!/usr/bin/python3
"""Figures of the optimizer and ensemble experiments (issue 21, items 3 and 4) from their run
folders (<name>_s<seed>/summary.json):

  plot_runs.py optimizers RUNS -o optimizer_patience.png   (<opt>_<epochs>_s<seed>: top-1 and
      agreement against epochs on a log axis, one line per optimizer, dots for the seeds)
  plot_runs.py ensemble RUNS -o ensemble.png                (a, b, ab _s<seed>: bars of the seed
      means, dots for the seeds; each bar labelled with its teacher(s)' top-1)
"""
import argparse
import glob
import json
import os
import re
import statistics


def load(runs, pattern):
    out = {}
    for path in sorted(glob.glob(os.path.join(runs, "*_s*", "summary.json"))):
        m = re.fullmatch(pattern, os.path.basename(os.path.dirname(path)))
        if m:
            out.setdefault(m.groups()[:-1], []).append(json.load(open(path)))
    return out


def optimizers(runs, out, plt):
    results = load(runs, r"([a-z]+)_(\d+)_s(\d+)")
    if not results:
        raise SystemExit(f"plot_runs: no <optimizer>_<epochs>_s<seed> runs in {runs}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "student_top1", "student test top-1 (%)"),
                           (axes[1], "agreement", "agreement with the teacher (%)")):
        for opt, marker in (("adam", "s"), ("shampoo", "o")):
            lengths = sorted(int(e) for o, e in results if o == opt)
            if not lengths:
                continue
            means = [statistics.mean(100 * r[key] for r in results[(opt, str(e))]) for e in lengths]
            ax.plot(lengths, means, marker=marker, label=opt)
            for e in lengths:
                ax.scatter([e] * len(results[(opt, str(e))]), [100 * r[key] for r in results[(opt, str(e))]],
                           s=10, alpha=0.5, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel("epochs (each its own run)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Adam vs Shampoo with patience (lines: seed means; dots: seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def ensemble(runs, out, plt):
    results = load(runs, r"(a|b|ab)_s(\d+)")
    names = [v for v in ("a", "b", "ab") if (v,) in results]
    if not names:
        raise SystemExit(f"plot_runs: no a/b/ab_s<seed> runs in {runs}")
    labels = {"a": "teacher A\n(32 px)", "b": "teacher B\n(40 px)", "ab": "ensemble\nA + B"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, title in ((axes[0], "student_top1", "student test top-1 (%)"),
                           (axes[1], "agreement", "agreement with its teacher(s) (%)")):
        for i, v in enumerate(names):
            vals = [100 * r[key] for r in results[(v,)]]
            ax.bar(i, statistics.mean(vals), color="C%d" % i, alpha=0.6)
            ax.scatter([i] * len(vals), vals, color="k", s=12)
            if key == "student_top1":
                ax.text(i, min(vals) - 0.6, "teacher %.2f" % (100 * results[(v,)][0]["teacher_top1"]), ha="center",
                        fontsize=8)
        ax.set_xticks(range(len(names)), [labels[v] for v in names])
        lo = min(100 * r[key] for v in names for r in results[(v,)])
        ax.set_ylim(lo - 2, None)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Distilling from one teacher or an ensemble at two resolutions (300 epochs)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["optimizers", "ensemble"])
    ap.add_argument("runs")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (optimizers if args.what == "optimizers" else ensemble)(args.runs, args.out, plt)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
