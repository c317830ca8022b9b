#!/usr/bin/env python3
"""tools/forecast.py on synthetic runs whose curve is known: y(E) = a - b E^-c plus seeded noise.

- Six schedule lengths, 100 to 3,200 epochs (3 seeds each): the fitted asymptote is within 0.5
  points of the true one and the true value at 2x and 4x the longest schedule lies inside the forecast's 68%
  interval widened by the noise (checked over 20 synthetic setups, at most 4 misses allowed:
  a 68% interval misses about a third of the time, the widening makes misses rare).
- Two lengths: the exponent is fixed and said to be.
- Run folders: summary.json + config.toml read as kd writes them; a setup that differs in more
  than its schedule is warned about; one run alone forecasts from its evaluation curve, marked
  provisional.
Exits non-zero on any failure.
"""
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import forecast  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def curve(a, b, c, E):
    return a - b * np.asarray(E, float) ** (-c)


rng = np.random.default_rng(7)
misses = 0
for trial in range(20):
    a, b, c = rng.uniform(70, 95), rng.uniform(10, 60), rng.uniform(0.5, 1.0)
    lengths = [100, 200, 400, 800, 1600, 3200]
    noise = 0.1
    points = [(E, float(curve(a, b, c, [E])[0] + rng.normal(0, noise))) for E in lengths for _ in range(3)]
    r = forecast.forecast(points, [6400, 12800], noise_floor=0.05, seed=trial, draws=300)
    check(abs(r["params"]["a"] - a) < 0.5,
          f"trial {trial}: asymptote {r['params']['a']:.2f} vs true {a:.2f}")
    check(r["noise_from"] in ("seed spread", "floor"), f"trial {trial}: noise from {r['noise_from']}")
    for f, E in zip(r["forecasts"], [6400, 12800]):
        truth = float(curve(a, b, c, [E])[0])
        if not (f["low"] - 2 * noise <= truth <= f["high"] + 2 * noise):
            misses += 1
            print(f"miss: trial {trial} at {E}: {truth:.2f} outside [{f['low']:.2f}, {f['high']:.2f}]")
        check(f["gain"] >= -0.05, f"trial {trial}: patience forecast to lose {f['gain']:.2f}")
check(misses <= 4, f"{misses} of 40 forecasts missed the truth")

two = forecast.forecast([(300, 80.0), (600, 81.0)], [1200, 2400], seed=1, draws=200)
check(two["fixed_exponent"] and abs(two["params"]["c"] - forecast.FIXED_EXPONENT) < 1e-12, "two lengths fix c")
check(two["forecasts"][1]["value"] > 81.0, "two lengths still forecast a gain")


def write_run(root, name, epochs, top1, agreement, lr="0.01", evals=()):
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"epochs": epochs, "student_top1": top1, "agreement": agreement}, f)
    with open(os.path.join(d, "config.toml"), "w") as f:
        f.write(f'[run]\nepochs = {epochs}\nname = "{name}"\n[optim]\nlr = {lr}\n')
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for e, t, g in evals:
            f.write(json.dumps({"step": 1, "epoch": e, "eval": {"student_top1": t, "agreement": g}}) + "\n")
    return d


with tempfile.TemporaryDirectory() as root:
    runs = [write_run(root, f"fm{E}", E, float(curve(86, 30, 0.5, [E])[0]) / 100,
                      float(curve(95, 20, 0.5, [E])[0]) / 100) for E in (150, 300, 600)]
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = forecast.main(runs + ["--json"])
    result = json.loads(out.getvalue())
    check(rc == 0 and not result["provisional"] and not result["warnings"], "three runs of one setup")
    check(set(result["metrics"]) == {"student_top1", "agreement"}, "both metrics forecast")
    check(abs(result["metrics"]["student_top1"]["params"]["a"] - 86) < 0.5, "asymptote from run folders")
    odd = write_run(root, "other_lr", 1200, 0.85, 0.94, lr="0.02")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        forecast.main(runs + [odd])
    check("differ in more than their schedule: optim.lr" in out.getvalue(), "a different setup is warned about")
    check("4x the epochs" in out.getvalue(), "the plain sentence: " + out.getvalue())
    single = write_run(root, "single", 600, 0.85, 0.94,
                       evals=[(e, float(curve(86, 30, 0.5, [e])[0]) / 100, 0.9) for e in (100, 200, 300, 400, 500, 600)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        forecast.main([single])
    check("Provisional" in out.getvalue(), "one run is provisional: " + out.getvalue())

print("forecast_test:", "FAILED" if failures else "ok", f"({misses} interval misses of 40)")
sys.exit(1 if failures else 0)
