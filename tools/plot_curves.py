"""kd plot: training loss, eval top-1 and agreement against steps for one or several kd runs,
overlaid, one colour per run. Reads each run's metrics.jsonl; writes the PNG and, beside it, the
plotted series as CSV (run, series, step, epoch, value; values exactly as metrics.jsonl has them).
Series: loss (train records' "loss"), top1 (eval records' "student_top1"), agreement (eval
records' "agreement", distill runs only). When every run has the same epochs per step, the loss
panel also carries an epoch axis.
kd embeds this script and runs it with python3 (tools/cli/plot.cpp).
Usage: plot_curves.py -o OUT.png --run LABEL DIR [--run LABEL DIR ...]"""
import argparse
import csv
import json
import os
import sys

SERIES = (("loss", "training loss (log window mean)", lambda r: None if "eval" in r else r.get("loss")),
          ("top1", "student eval top-1", lambda r: r["eval"].get("student_top1") if "eval" in r else None),
          ("agreement", "agreement with the teacher (eval top-1)",
           lambda r: r["eval"].get("agreement") if "eval" in r else None))


def read_series(run_dir):
    """{series: [(step, epoch, value)]} of a run folder, in file order; null values skipped."""
    series = {name: [] for name, _, _ in SERIES}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            for name, _, pick in SERIES:
                value = pick(record)
                if value is not None:
                    series[name].append((record["step"], record.get("epoch"), value))
    return series


def epochs_per_step(runs):
    """The common epochs/step of all runs (from their last loss point), or None."""
    ratios = set()
    for _, series in runs:
        points = [(s, e) for s, e, _ in series["loss"] if e is not None and s > 0]
        if not points:
            return None
        ratios.add(round(points[-1][1] / points[-1][0], 9))
    return ratios.pop() if len(ratios) == 1 else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--run", nargs=2, action="append", metavar=("LABEL", "DIR"), required=True)
    a = p.parse_args()
    runs = [(label, read_series(d)) for label, d in a.run]
    csv_path = os.path.splitext(a.out)[0] + ".csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["run", "series", "step", "epoch", "value"])
        for label, series in runs:
            for name, _, _ in SERIES:
                for step, epoch, value in series[name]:
                    w.writerow([label, name, step, "" if epoch is None else repr(epoch), repr(value)])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"kd plot: wrote {csv_path}, but {sys.executable} has no matplotlib for the PNG "
              "(apt-get install python3-matplotlib, or set KD_PYTHON to a Python that has it)", file=sys.stderr)
        return 2
    shown = [s for s in SERIES if any(series[s[0]] for _, series in runs)]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(5 * max(1, len(shown)), 4), squeeze=False)
    # One colour per run in every panel (a panel where some runs have no series keeps the others').
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, title, _) in zip(axes[0], shown):
        for index, (label, series) in enumerate(runs):
            if series[name]:
                steps = [s for s, _, _ in series[name]]
                values = [v for _, _, v in series[name]]
                ax.plot(steps, values, marker="o" if name != "loss" else None, markersize=3, label=label,
                        color=colours[index % len(colours)])
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
        ax.legend()
        ratio = epochs_per_step(runs) if name == "loss" else None
        if name == "loss":
            ax.set_yscale("log")
        if ratio:
            top = ax.secondary_xaxis("top", functions=(lambda s, r=ratio: s * r, lambda e, r=ratio: e / r))
            top.set_xlabel("epochs")
        ax.set_title(title, pad=30 if ratio else 6)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"kd plot: {a.out} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
