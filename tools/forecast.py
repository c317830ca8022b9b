#!/usr/bin/env python3
"""Patience forecast: what longer training would likely buy, from finished runs of one setup.

`kd forecast RUN [RUN ...]` runs this. Each RUN is a kd run folder (summary.json, config.toml).
Runs of the same setup at different schedule lengths give points (epochs E, final value y) for
the test top-1 and, for distillation, the agreement with the teacher. The model is a saturating
power law in the schedule length,

    y(E) = a - b * E^(-c),   a: the value infinite patience approaches, b, c > 0,

fitted by least squares: for a fixed exponent c the model is linear in (a, b), solved in closed
form, and c is found by a log-spaced grid refined by golden-section search. Uncertainty is a
parametric bootstrap: the values are perturbed by their noise and refitted 1,000 times; the noise
is the spread between seeds of the same length where there are several, else the fit's residual
standard deviation (with its degrees of freedom), never below a floor (--noise, default 0.15
points: the seed-to-seed spread of the demo's runs). The forecast at 2x and 4x the longest
schedule is the bootstrap median with a 68% interval, stated as a gain over the longest run;
predictions are clipped to [0, 100] (percentages).

With fewer than three schedule lengths the exponent is not identified: two lengths fit with c
fixed at 0.5 (say so), and one run uses its own evaluation curve (eval every N epochs), which is
not a shorter schedule (the cosine decay differs), so that forecast is marked provisional.

Only numpy. Values are in percent (kd's summary holds fractions).
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

DEFAULT_NOISE = 0.15  # points
FIXED_EXPONENT = 0.5


def fit_linear(E, y, c):
    """Best (a, b) for y = a - b x, x = E^-c, at fixed c (c may be an array: one fit per row), and
    the sums of squared residuals. Closed form: b = -cov(x, y) / var(x), a = mean(y) + b mean(x)."""
    x = E[None, :] ** (-np.atleast_1d(np.asarray(c, float))[:, None])
    xm, ym = x.mean(axis=1, keepdims=True), y.mean()
    b = -((x - xm) * (y - ym)).sum(axis=1) / np.maximum(((x - xm) ** 2).sum(axis=1), 1e-300)
    a = ym + b * xm[:, 0]
    sse = ((y[None, :] - a[:, None] + b[:, None] * x) ** 2).sum(axis=1)
    return a, b, sse


GRID = np.exp(np.linspace(math.log(0.02), math.log(4.0), 60))


def fit_power_law(E, y, fixed_c=None):
    """(a, b, c) of y = a - b E^-c by least squares (b >= 0: more patience never hurts the fit)."""
    E, y = np.asarray(E, float), np.asarray(y, float)
    if fixed_c is not None:
        a, b, _ = fit_linear(E, y, fixed_c)
        return float(a[0]), max(float(b[0]), 0.0), fixed_c
    sse = fit_linear(E, y, GRID)[2]
    i = int(np.argmin(sse))
    lo, hi = GRID[max(i - 1, 0)], GRID[min(i + 1, len(GRID) - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(40):  # golden section on [lo, hi]
        c1, c2 = hi - g * (hi - lo), lo + g * (hi - lo)
        s1, s2 = fit_linear(E, y, [c1, c2])[2]
        if s1 < s2:
            hi = c2
        else:
            lo = c1
    c = (lo + hi) / 2
    a, b, _ = fit_linear(E, y, c)
    if b[0] < 0:  # values that fall with patience: no saturating gain to forecast
        return float(np.mean(y)), 0.0, c
    return float(a[0]), float(b[0]), c


def predict(params, E):
    """The curve at E, clipped to [0, 100]: the values are percentages, and a curve fitted to a
    few noisy points can overshoot."""
    a, b, c = params
    return np.clip(a - b * np.asarray(E, float) ** (-c), 0.0, 100.0)


def forecast(points, horizons, noise_floor=DEFAULT_NOISE, seed=0, draws=1000):
    """points: list of (epochs, value). Returns a dict with the fit and the forecasts."""
    E = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    lengths = sorted(set(E.tolist()))
    fixed_c = None if len(lengths) >= 3 else FIXED_EXPONENT
    params = fit_power_law(E, y, fixed_c)
    # Noise: the spread of seeds at equal lengths, else the residuals' (dof-corrected).
    spreads = [np.std(y[E == L], ddof=1) for L in lengths if np.sum(E == L) >= 2]
    if spreads:
        noise, noise_from = float(np.sqrt(np.mean(np.square(spreads)))), "seed spread"
    else:
        dof = len(y) - (2 if fixed_c is not None else 3)
        r = y - predict(params, E)
        noise = float(np.sqrt(r @ r / dof)) if dof > 0 else 0.0
        noise_from = "fit residuals" if dof > 0 else "floor"
    if noise < noise_floor:
        noise, noise_from = noise_floor, "floor"
    rng = np.random.default_rng(seed)
    longest = max(lengths)
    # Each draw predicts the longest schedule and the horizons with one fit, so a gain's interval
    # is that of the difference, not of the two values.
    samples = np.array([predict(fit_power_law(E, y + rng.normal(0, noise, size=y.shape), fixed_c),
                                [longest] + list(horizons)) for _ in range(draws)])
    out = {"params": {"a": params[0], "b": params[1], "c": params[2]}, "fixed_exponent": fixed_c is not None,
           "noise": noise, "noise_from": noise_from, "longest": longest,
           "at_longest": float(predict(params, [longest])[0]), "forecasts": []}
    for k, h in enumerate(horizons):
        value, gain = samples[:, k + 1], samples[:, k + 1] - samples[:, 0]
        lo, hi = np.percentile(value, [16, 84])
        glo, ghi = np.percentile(gain, [16, 84])
        out["forecasts"].append({"epochs": h, "value": float(np.median(value)), "low": float(lo), "high": float(hi),
                                 "gain": float(np.median(gain)), "gain_spread": float((ghi - glo) / 2)})
    return out


# ---- kd run folders -------------------------------------------------------------------------

SCHEDULE_KEYS = {"run.epochs", "run.steps", "run.name", "run.out_dir", "run.seed", "run.stop_after",
                 "eval.every", "checkpoint.every", "run.log_every"}


def read_config(run):
    """The resolved config as {key: value text}, from config.toml's `key = value` lines in tables."""
    path = os.path.join(run, "config.toml")
    if not os.path.exists(path):
        return {}
    table, out = "", {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            table = m.group(1) + "."
        elif "=" in line:
            k, v = line.split("=", 1)
            out[table + k.strip()] = v.strip()
    return out


def read_run(run):
    path = os.path.join(run, "summary.json")
    if not os.path.exists(path):
        raise SystemExit(f"kd forecast: {run} has no summary.json (not a finished kd run)")
    with open(path) as f:
        s = json.load(f)
    if "epochs" not in s or "student_top1" not in s:
        raise SystemExit(f"kd forecast: {path} lacks epochs or student_top1")
    return s


def eval_curve(run):
    """(epochs, top1 %, agreement % or None) of a run's evaluations, from metrics.jsonl."""
    path = os.path.join(run, "metrics.jsonl")
    out = []
    if os.path.exists(path):
        for line in open(path):
            rec = json.loads(line)
            if "eval" in rec:
                e = rec["eval"]
                agree = e.get("agree_top1", e.get("agreement"))
                out.append((rec["epoch"], 100 * e["student_top1"], None if agree is None else 100 * agree))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="kd forecast", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="kd run folders of one setup at different schedule lengths")
    ap.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="noise floor, points (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the forecast as JSON")
    a = ap.parse_args(argv)

    summaries = [read_run(r) for r in a.runs]
    configs = [read_config(r) for r in a.runs]
    differ = sorted({k for c in configs for k in c if k not in SCHEDULE_KEYS and
                     len({cc.get(k) for cc in configs}) > 1})
    warnings = []
    if differ:
        warnings.append("the runs differ in more than their schedule: " + ", ".join(differ[:8]))
    lengths = sorted({round(s["epochs"], 6) for s in summaries})
    provisional = len(lengths) == 1
    metrics = {"student_top1": [], "agreement": []}
    if provisional:
        curve = [p for r in a.runs for p in eval_curve(r)]
        if len(curve) < 3:
            raise SystemExit("kd forecast: one schedule length and fewer than 3 evaluations in its metrics.jsonl; "
                             "run the setup at other lengths (run.epochs) or evaluate during training (eval.every)")
        metrics["student_top1"] = [(e, t) for e, t, _ in curve]
        metrics["agreement"] = [(e, g) for e, _, g in curve if g is not None]
    else:
        for s in summaries:
            metrics["student_top1"].append((s["epochs"], 100 * s["student_top1"]))
            if "agreement" in s and s["agreement"] is not None:
                metrics["agreement"].append((s["epochs"], 100 * s["agreement"]))
    longest = max(e for e, _ in metrics["student_top1"])
    horizons = [2 * longest, 4 * longest]
    result = {"runs": a.runs, "provisional": provisional, "warnings": warnings, "metrics": {}}
    for name, points in metrics.items():
        if len(points) >= 2:
            result["metrics"][name] = forecast(points, horizons, a.noise)
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    for w in warnings:
        print("warning:", w)
    label = {"student_top1": "test top-1", "agreement": "agreement"}
    print(f"{len(a.runs)} runs, schedule lengths (epochs): " + ", ".join(f"{e:g}" for e in lengths))
    print("| metric | at the longest (fit) | 2x epochs | 4x epochs | asymptote | exponent | noise |")
    print("|---|---|---|---|---|---|---|")
    for name, f in result["metrics"].items():
        f2, f4 = f["forecasts"]
        print(f"| {label[name]} | {f['at_longest']:.2f} | {f2['value']:.2f} [{f2['low']:.2f}, {f2['high']:.2f}] | "
              f"{f4['value']:.2f} [{f4['low']:.2f}, {f4['high']:.2f}] | "
              f"{f['params']['a']:.2f}{'' if f['params']['a'] <= 100 else ' (unbounded: too few points)'} | "
              f"{f['params']['c']:.2f}{' (fixed)' if f['fixed_exponent'] else ''} | {f['noise']:.2f} ({f['noise_from']}) |")
    for name, f in result["metrics"].items():
        f4 = f["forecasts"][1]
        print(f"{'Provisional (one run: its own evaluation curve, not shorter schedules): ' if provisional else ''}"
              f"4x the epochs ({f4['epochs']:g}) would likely give {f4['gain']:+.1f} +- {f4['gain_spread']:.1f} points "
              f"of {label[name]}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
