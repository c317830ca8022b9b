#!/usr/bin/env python3
"""kd's Fashion-MNIST demo protocol (tools/run_demo.sh) in plain PyTorch: the peer it is timed against.

What is trained is kd's demo, read from the same configs (configs/fashion_mnist_{teacher,distill,
baseline}.toml: arch, epochs, batch, optimizer, schedule, augmentation, eval settings):
  1. teacher   from labels on all 60,000 training images;
  2. student   by function matching on the 1,020-image class-balanced subset (the same images as
               kd: kd's choice, std::mt19937_64 with data.subset_seed, reproduced here bit for bit);
  3. baseline  the same student from labels on the same 1,020 images;
  4. eval      all three on the 10,000 test images, and each student's agreement with the teacher.
As kd does it (every setting checked against kd's code):
  - networks: kd's "resnetv2(...)" archs as timm ResNetV2s (torch_step.py's builder: StdConv2d with
    eps 1e-8, pre-activation bottlenecks, GroupNorm with at most `groups` groups, 3x3/2 stem, final
    GroupNorm + ReLU, average pool, dense head); timm's init (kaiming fan-out convolutions, head
    N(0, 0.01)), zero head where the config says student.zero_head;
  - data: the IDX gz files, grey replicated to 3 channels, normalised to [-1, 1] (mean = std = 0.5);
  - training views: inception crop (integer box: 10 attempts of area in [area_min, 1], log-uniform
    aspect in [3/4, 4/3], else the centre crop), horizontal flip, bilinear resize to `resolution`
    with half-pixel centres and clamped edges (kd's augment geometry = grid_sample, border padding,
    align_corners False);
  - function matching: one view per image shared by teacher and student, mixed with its
    neighbour (roll by one: image i takes 1 - lambda of image i - 1), lambda = max(a, 1 - a),
    a ~ Beta(1, 1) once per batch; loss T^2 KL(softmax(t / T) || softmax(s / T)), batch mean;
  - labels: cross-entropy (no label smoothing: kd's default), crop + flip, no mixup;
  - sample order: kd's sampler, a stream of per-epoch permutations cut into full batches, steps =
    ceil(epochs * images / batch);
  - optimizer: AdamW (kd's adam: decoupled decay on conv and dense kernels only, betas 0.9/0.999,
    eps 1e-8), global gradient-norm clipping at optim.clip_norm (kd's default 1.0), linear warmup
    lr * (step + 1) / warmup_steps over warmup_fraction of the steps, then cosine to 0;
  - eval: the centred square of side short_side * eval_crop_fraction resized to `resolution`
    (kd's eval.resize = direct), batch eval.batch_size.
What a competent PyTorch user picks on the CPU: contiguous (NCHW) tensors, not channels_last
(PyTorch 1.13's slow CPU path at these small channel counts), fp32, torch.set_num_threads(every
core); the teacher's evaluation logits are computed once and reused for both agreements.
What differs from kd by construction: the random streams (initial weights, crops, flips, lambda,
sample order) are PyTorch's, so single runs differ by run-to-run noise (about +-0.3 points).

Prints a table (per phase: steps, train seconds, images/s, eval seconds) and a RESULT line (JSON).
--scale S multiplies every epoch count (as KD_DEMO_SCALE does for tools/run_demo.sh; at least
0.01 epochs, as there).
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time
import tomllib

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_step import build_model  # noqa: E402  kd's custom resnetv2 arch as a timm ResNetV2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "/usr/share/datasets/fashion-mnist"
PHASES = ("teacher", "student_fm", "student_labels")  # kd's run folder names


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=float(os.environ.get("KD_DEMO_SCALE", "1")),
                   help="multiplies every epoch count (default: KD_DEMO_SCALE or 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: every core this process may use)")
    p.add_argument("--data", default=DATASET, help="folder of the Fashion-MNIST IDX gz files")
    p.add_argument("--configs", default=os.path.join(ROOT, "configs"), help="folder of fashion_mnist_*.toml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-limit", type=int, default=0,
                   help="evaluate on the first N test images (0: all; kd's data.test_limit; for quick checks)")
    p.add_argument("--log-every", type=int, default=0, help="print the loss every N steps (0: never)")
    return p.parse_args(argv)


# ---- configuration: kd's TOML files, with kd's defaults for keys they leave out ----

KD_DEFAULTS = {  # train/options.h, engine/optim/optimizer.h
    "area_min": 0.05, "area_max": 1.0, "aspect_min": 0.75, "aspect_max": 4.0 / 3.0, "flip": True,
    "mixup_alpha": 1.0, "mixup_per_sample": False, "eval_crop_fraction": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3,
    "lr": 1e-3, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "clip_norm": 1.0,
    "warmup_fraction": 0.0, "decay": "cosine", "final_fraction": 0.0, "label_smoothing": 0.0,
    "train_subset": 0, "subset_seed": 0, "batch_size": 128, "eval_batch": 256, "zero_head": False,
    "temperature": 1.0, "strategy": "function_matching", "distance": "kl",
}


def load_config(path, scale):
    with open(path, "rb") as f:
        t = tomllib.load(f)
    sec = lambda name: t.get(name, {})  # noqa: E731
    c = dict(KD_DEFAULTS)
    c.update({k: v for k, v in sec("augment").items() if k in c})
    c.update({k: v for k, v in sec("optim").items() if k in c and k != "name"})
    c.update({k: v for k, v in sec("schedule").items() if k in c})
    c.update({k: v for k, v in sec("distill").items() if k in c})
    c["label_smoothing"] = sec("run").get("label_smoothing", 0.0)
    data = sec("data")
    c.update({k: data[k] for k in ("train_subset", "subset_seed", "batch_size") if k in data})
    c["eval_batch"] = sec("eval").get("batch_size", KD_DEFAULTS["eval_batch"])
    model = sec("student") if "student" in t else sec("model")
    c["arch"], c["zero_head"] = model["arch"], model.get("zero_head", False)
    c["resolution"] = sec("augment").get("resolution", 224)
    c["epochs"] = max(0.01, float(sec("run")["epochs"]) * scale)  # as run_demo.sh's epochs()
    c["distill"] = "distill" in t
    c["path"] = path
    for key, want in (("optim", "adam"), ("decay", "cosine")):
        got = sec("optim").get("name", "adam") if key == "optim" else c["decay"]
        if got != want:
            raise SystemExit(f"torch_demo.py: {path}: {key} '{got}' is not supported here (only '{want}')")
    if c["distill"] and (c["strategy"] != "function_matching" or c["distance"] != "kl" or c["mixup_per_sample"]):
        raise SystemExit(f"torch_demo.py: {path}: only function matching with the kl distance, one lambda per batch")
    if "teacher_resolution" in sec("augment") or sec("schedule").get("warmup_steps", 0):
        raise SystemExit(f"torch_demo.py: {path}: augment.teacher_resolution / schedule.warmup_steps not supported")
    return c


# ---- data ----

def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"torch_demo.py: {path} is not an IDX file of uint8")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_split(folder, split):
    stem = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(folder, f"{stem}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(folder, f"{stem}-labels-idx1-ubyte.gz")).long()
    return images.unsqueeze(1).contiguous(), labels  # N x 1 x H x W (grey: replicated to 3 channels later)


class Mt19937_64:
    """std::mt19937_64, bit for bit (kd's balanced subset draws from it)."""
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, 312):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.index = 312

    def __call__(self):
        if self.index >= 312:
            mt, upper, lower = self.mt, 0xFFFFFFFF80000000, 0x7FFFFFFF
            for i in range(312):
                x = (mt[i] & upper) | (mt[(i + 1) % 312] & lower)
                mt[i] = mt[(i + 156) % 312] ^ (x >> 1) ^ (0xB5026F5AA96619E9 if x & 1 else 0)
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        return y ^ (y >> 43)


def balanced_indices(labels, count, seed):
    """kd's data.train_subset choice (data/source.cpp balanced_indices): per class count / C images
    (the first count % C classes one more) by a partial Fisher-Yates over the class's indices in
    file order, drawing from mt19937_64(seed) with rejection sampling; returned sorted."""
    classes = int(labels.max()) + 1
    by_class = [[] for _ in range(classes)]
    for i, label in enumerate(labels.tolist()):
        by_class[label].append(i)
    rng, chosen = Mt19937_64(seed), []
    for c in range(classes):
        want, pool = count // classes + (1 if c < count % classes else 0), by_class[c]
        for k in range(want):
            n = len(pool) - k
            limit = Mt19937_64.MASK - Mt19937_64.MASK % n
            x = rng()
            while x >= limit:
                x = rng()
            j = k + x % n
            pool[k], pool[j] = pool[j], pool[k]
            chosen.append(pool[k])
    return torch.tensor(sorted(chosen))


def sample_order(n, batch, steps, gen):
    """kd's EpochSampler: per-epoch permutations concatenated, cut into full batches."""
    pending = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while pending.numel() < batch:
            pending = torch.cat([pending, torch.randperm(n, generator=gen)])
        yield pending[:batch]
        pending = pending[batch:]


# ---- augmentation (kd's data/recipe.cpp and kernels/augment.h) ----

def inception_boxes(n, h, w, c, gen):
    """Integer crop boxes (y0, x0, bh, bw) as kd's sample_inception_crop: the first of 10 attempts
    that fits, else the centre crop with the aspect ratio clamped into range."""
    u = torch.rand(n, 10, 4, generator=gen, dtype=torch.float64)
    target = h * w * (c["area_min"] + (c["area_max"] - c["area_min"]) * u[..., 0])
    log_lo, log_hi = math.log(c["aspect_min"]), math.log(c["aspect_max"])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    bw, bh = torch.floor(torch.sqrt(target * ratio) + 0.5), torch.floor(torch.sqrt(target / ratio) + 0.5)
    ok = (bw > 0) & (bh > 0) & (bw <= w) & (bh <= h)
    y0 = torch.minimum(h - bh, torch.floor(u[..., 2] * (h - bh + 1)))
    x0 = torch.minimum(w - bw, torch.floor(u[..., 3] * (w - bw + 1)))
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    pick = lambda t: t.gather(1, first).squeeze(1)  # noqa: E731
    boxes = torch.stack([pick(y0), pick(x0), pick(bh), pick(bw)], dim=1)
    fallback = ~ok.any(dim=1)
    if fallback.any():
        fh, fw = h, w
        if w / h < c["aspect_min"]:
            fh = math.floor(w / c["aspect_min"] + 0.5)
        elif w / h > c["aspect_max"]:
            fw = math.floor(h * c["aspect_max"] + 0.5)
        boxes[fallback] = torch.tensor([(h - fh) // 2, (w - fw) // 2, fh, fw], dtype=torch.float64)
    return boxes


def render(sources, boxes, flips, res):
    """Bilinear resize of each box to res x res, half-pixel centres, edges clamped, optional flip
    (kd's view geometry), normalised to [-1, 1]; 3 channels, contiguous NCHW."""
    n, _, h, w = sources.shape
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = boxes[:, 3] / w * torch.where(flips, -1.0, 1.0).double()
    theta[:, 0, 2] = (2 * boxes[:, 1] + boxes[:, 3]) / w - 1
    theta[:, 1, 1] = boxes[:, 2] / h
    theta[:, 1, 2] = (2 * boxes[:, 0] + boxes[:, 2]) / h - 1
    grid = F.affine_grid(theta.float(), (n, 1, res, res), align_corners=False)
    out = F.grid_sample(sources.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (out * (2.0 / 255.0) - 1.0).expand(-1, 3, -1, -1).contiguous()


def train_views(sources, c, gen):
    n, _, h, w = sources.shape
    boxes = inception_boxes(n, h, w, c, gen)
    flips = torch.rand(n, generator=gen) < 0.5 if c["flip"] else torch.zeros(n, dtype=torch.bool)
    return render(sources, boxes, flips, c["resolution"])


def eval_views(sources, c):
    n, _, h, w = sources.shape
    side = min(h, w) * c["eval_crop_fraction"]
    boxes = torch.tensor([[(h - side) / 2, (w - side) / 2, side, side]], dtype=torch.float64).expand(n, 4)
    return render(sources, boxes, torch.zeros(n, dtype=torch.bool), c["resolution"])


# ---- training ----

def make_model(c, classes):
    model = build_model(c["arch"], classes)
    if c["zero_head"]:
        head = model.get_classifier()
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
    return model


def scheduled_lr(c, step, total, warmup):
    """kd's scheduled_lr (engine/optim/optimizer.cpp): linear warmup, then cosine to the floor."""
    peak = c["lr"]
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * c["final_fraction"]
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def train(c, model, images, labels, gen, teacher=None, log_every=0, name=""):
    """kd train (teacher is None) or kd distill by function matching; returns (steps, seconds)."""
    n, batch = images.shape[0], c["batch_size"]
    steps = max(1, math.ceil(c["epochs"] * n / batch))
    warmup = int(c["warmup_fraction"] * steps)
    decay = [p for p in model.parameters() if p.ndim > 1]  # kd decays conv and dense kernels only
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    temperature = c["temperature"]
    model.train()
    start = time.perf_counter()
    for step, idx in enumerate(sample_order(n, batch, steps, gen)):
        x = train_views(images[idx], c, gen)
        if teacher is None:
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=c["label_smoothing"])
        else:
            a = float(torch.rand(1, generator=gen))  # Beta(1, 1)
            lam = max(a, 1 - a)
            x = lam * x + (1 - lam) * x.roll(1, dims=0)  # image i with image i - 1
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = model(x)
            loss = temperature ** 2 * F.kl_div(F.log_softmax(s_logits / temperature, dim=-1),
                                               F.log_softmax(t_logits / temperature, dim=-1),
                                               reduction="batchmean", log_target=True)
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(c, step, steps, warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if c["clip_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip_norm"])
        opt.step()
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            print(f"  {name} step {step + 1}/{steps} loss {float(loss):.4f} "
                  f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    seconds = time.perf_counter() - start
    if not math.isfinite(float(loss)):
        raise SystemExit(f"torch_demo.py: {name}: the loss is {float(loss)}")
    return steps, seconds


@torch.no_grad()
def evaluate(c, model, images):
    """Logits of every test image (centre crop); returns (logits, seconds)."""
    model.eval()
    start = time.perf_counter()
    out = [model(eval_views(images[i:i + c["eval_batch"]], c)) for i in range(0, images.shape[0], c["eval_batch"])]
    return torch.cat(out), time.perf_counter() - start


def main(argv):
    args = parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    configs = {name: load_config(os.path.join(args.configs, f"fashion_mnist_{file}.toml"), args.scale)
               for name, file in zip(PHASES, ("teacher", "distill", "baseline"))}
    started = time.perf_counter()
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "test")
    if args.test_limit:
        test_images, test_labels = test_images[:args.test_limit], test_labels[:args.test_limit]
    classes = int(train_labels.max()) + 1
    print(f"torch_demo: PyTorch {torch.__version__}, {threads} threads, contiguous NCHW fp32, scale {args.scale:g}; "
          f"{train_images.shape[0]} training / {test_images.shape[0]} test images", file=sys.stderr)

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    report, logits = {}, {}
    teacher = None
    for name in PHASES:
        c = configs[name]
        if c["train_subset"]:
            subset = balanced_indices(train_labels, c["train_subset"], c["subset_seed"])
            images, labels = train_images[subset].contiguous(), train_labels[subset]
        else:
            images, labels = train_images, train_labels
        model = make_model(c, classes)
        print(f"== {name}: {c['arch']}, {images.shape[0]} images, {c['epochs']:g} epochs", file=sys.stderr)
        steps, train_s = train(c, model, images, labels, gen, teacher if c["distill"] else None,
                               args.log_every, name)
        logits[name], eval_s = evaluate(c, model, test_images)
        report[name] = {"steps": steps, "batch": c["batch_size"], "images": steps * c["batch_size"],
                        "train_s": round(train_s, 3), "images_per_s": round(steps * c["batch_size"] / train_s, 1),
                        "eval_s": round(eval_s, 3), "epochs": c["epochs"]}
        if name == "teacher":
            teacher = model.eval().requires_grad_(False)
    wall = time.perf_counter() - started

    top1 = {name: float((logits[name].argmax(1) == test_labels).float().mean()) for name in PHASES}
    agree = {name: float((logits[name].argmax(1) == logits["teacher"].argmax(1)).float().mean())
             for name in PHASES[1:]}
    eval_s = sum(r["eval_s"] for r in report.values())
    print(f"\n| phase | steps | train s | images/s | eval s | test top-1 | agreement with teacher |")
    print("|---|---|---|---|---|---|---|")
    for name in PHASES:
        r = report[name]
        agreement = f"{100 * agree[name]:.2f}%" if name in agree else "-"
        print(f"| {name} | {r['steps']} | {r['train_s']:.1f} | {r['images_per_s']:.0f} | {r['eval_s']:.1f} | "
              f"{100 * top1[name]:.2f}% | {agreement} |")
    print(f"| eval (all three, {test_images.shape[0]:,} test images) | | | | {eval_s:.1f} | | |")
    print(f"\nfunction matching vs labels: {100 * (top1['student_fm'] - top1['student_labels']):+.2f} points top-1; "
          f"whole protocol {wall:.1f} s (data loading included)")
    result = {"tool": "torch-demo", "torch": torch.__version__, "threads": threads, "scale": args.scale,
              "memory_format": "contiguous", "test_images": test_images.shape[0], "phases": report, "eval_s": round(eval_s, 3), "wall_s": round(wall, 3),
              "teacher_top1": top1["teacher"], "student_top1": top1["student_fm"],
              "baseline_top1": top1["student_labels"], "agreement": agree["student_fm"],
              "baseline_agreement": agree["student_labels"],
              "student_gain_over_baseline": top1["student_fm"] - top1["student_labels"]}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
