"""Table and figure of tools/experiments/optimizers.sh: per optimizer the lr with the lowest final
training KL, its curves (drawn by `kd plot`), and the steps Shampoo needs to reach Adam's final
training KL.
Usage: plot_optimizers.py OUT "LR LR ..." SEED KD_BIN"""
import json
import os
import subprocess
import sys


def load(run_dir):
    train, evals = [], []
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        m = json.loads(line)
        if "eval" in m:
            evals.append((m["step"], 100 * m["eval"]["student_top1"], 100 * m["eval"]["agreement"]))
        elif "loss" in m:
            train.append((m["step"], m["loss"], m.get("shampoo_root_ms")))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    return train, evals, summary


def smooth(values, k=5):
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1]) for i in range(len(values))]


def main():
    out, lrs, seed, kd = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
    runs = {}
    for opt in ("adam", "shampoo"):
        for lr in lrs:
            d = os.path.join(out, f"{opt}_lr{lr}_s{seed}")
            if os.path.exists(os.path.join(d, "summary.json")):
                runs[(opt, lr)] = load(d)
    best = {}
    rows = ["| optimizer | lr | final training KL (mean of the last 5 logs) | test top-1 | agreement | wall |",
            "|---|---|---|---|---|---|"]
    for (opt, lr), (train, evals, s) in sorted(runs.items()):
        final_kl = sum(v for _, v, _ in train[-5:]) / len(train[-5:])
        rows.append(f"| {opt} | {lr} | {final_kl:.5f} | {100 * s['student_top1']:.2f}% | "
                    f"{100 * s['agreement']:.2f}% | {s['wall_s']:.0f}s |")
        if opt not in best or final_kl < best[opt][1]:
            best[opt] = (lr, final_kl)
    text = "\n".join(rows) + "\n"
    if "adam" in best and "shampoo" in best:
        adam_lr, adam_kl = best["adam"]
        sh_train = runs[("shampoo", best["shampoo"][0])][0]
        adam_train = runs[("adam", adam_lr)][0]
        steps_adam = adam_train[-1][0]
        sm = smooth([v for _, v, _ in sh_train])
        reach = next((sh_train[i][0] for i, v in enumerate(sm) if v <= adam_kl), None)
        if reach is None:
            text += (f"\nShampoo (lr {best['shampoo'][0]}) did not reach Adam's final training KL {adam_kl:.5f} "
                     f"(lr {adam_lr}) within {sh_train[-1][0]} steps.\n")
        else:
            text += (f"\nShampoo (lr {best['shampoo'][0]}) reaches Adam's final training KL {adam_kl:.5f} (lr "
                     f"{adam_lr}, {steps_adam} steps) after {reach} steps: {reach / steps_adam:.2f} of Adam's "
                     f"steps (smoothed over 5 logs).\n")
    with open(os.path.join(out, "optimizers.md"), "w") as f:
        f.write(text)
    print(text)
    # The best lr of each optimizer, overlaid: training KL, test top-1 and agreement against steps.
    plot = [kd, "plot", "-o", os.path.join(out, "optimizers.png")]
    for opt in ("adam", "shampoo"):
        if opt in best:
            plot += [os.path.join(out, f"{opt}_lr{best[opt][0]}_s{seed}"), "--label", f"{opt} (lr {best[opt][0]})"]
    subprocess.run(plot, check=True)


if __name__ == "__main__":
    main()
