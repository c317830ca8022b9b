"""Reads a kd run folder with TensorBoard's own reader and checks it against metrics.jsonl: every
numeric field of every record is a scalar (train/<key>, eval/<key>, arrays /<index>) at the
record's step with the record's value rounded to float32, no other scalar exists, and each
(tag, step) appears once in both. With --same-as REF, the deterministic numbers (all but the
timings) must equal REF's metrics.jsonl exactly: a resumed run against an uninterrupted one.
Prints the tags and exits 1 on the first kind of mismatch it finds.
Usage: check_tensorboard.py RUN [--same-as REF]"""
import argparse
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TIMINGS = {"train/images_per_sec", "train/data_wait_share", "eval/wall_s"}


def is_timing(tag):
    return tag in TIMINGS or tag.startswith("train/ms_")  # per-phase times (run.profile_phases)


def flatten(value, tag, out):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        out.append((tag, value))
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{tag}/{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            flatten(v, f"{tag}/{i}", out)


def metrics_scalars(run):
    """{(tag, step): value} from metrics.jsonl, and the (tag, step) pairs seen more than once."""
    scalars, repeated = {}, []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            step, fields = record.pop("step"), []
            prefix = "eval" if "eval" in record else "train"
            for key, value in record.items():
                flatten(value, prefix if key == "eval" else f"{prefix}/{key}", fields)
            for tag, value in fields:
                if (tag, step) in scalars:
                    repeated.append((tag, step))
                scalars[(tag, step)] = value
    return scalars, repeated


def tensorboard_scalars(run):
    acc = EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    scalars, repeated = {}, []
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            if (tag, e.step) in scalars:
                repeated.append((tag, e.step))
            scalars[(tag, e.step)] = e.value
    return scalars, repeated


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--same-as")
    a = p.parse_args()
    errors = []
    expected, repeated = metrics_scalars(a.run)
    errors += [f"metrics.jsonl holds {t} at step {s} more than once" for t, s in repeated]
    shown, repeated = tensorboard_scalars(a.run)
    errors += [f"TensorBoard shows {t} at step {s} more than once" for t, s in repeated]
    for key in sorted(set(expected) - set(shown)):
        errors.append(f"TensorBoard lacks {key[0]} at step {key[1]}")
    for key in sorted(set(shown) - set(expected)):
        errors.append(f"TensorBoard shows {key[0]} at step {key[1]}, which metrics.jsonl does not hold")
    for key in sorted(set(shown) & set(expected)):
        if shown[key] != float(np.float32(expected[key])):
            errors.append(f"{key[0]} at step {key[1]}: TensorBoard {shown[key]!r}, metrics.jsonl {expected[key]!r}")
    if a.same_as:
        reference, _ = metrics_scalars(a.same_as)
        if set(reference) != set(expected):
            errors.append(f"the (tag, step) pairs differ from {a.same_as}: "
                          f"{sorted(set(reference) ^ set(expected))[:10]}")
        for key in sorted(set(reference) & set(expected)):
            if not is_timing(key[0]) and reference[key] != expected[key]:
                errors.append(f"{key[0]} at step {key[1]}: {expected[key]!r}, uninterrupted {reference[key]!r}")
    tags = sorted({t for t, _ in shown})
    steps = sorted({s for _, s in shown})
    print(f"{len(shown)} scalars, {len(tags)} tags at steps {steps}: {' '.join(tags)}")
    for e in errors[:20]:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
