#!/usr/bin/env python3
"""The distillation step of `kd bench`, in PyTorch: the peer kd is measured against.

One step, as kd runs it (tools/cli/bench.cpp, tools/train/step.cpp):
  augment   one batch of uint8 source images (random, --source-px square) -> per image one recipe
            (inception crop: 8%-100% of the area, aspect 3/4-4/3; horizontal flip; mixup with the
            next image of the batch, lambda uniform in [0.1, 0.9]) rendered at the teacher's and at
            the student's resolution, normalised to [-1, 1], bf16, in --memory-format. Done on the
            device with torch.nn.functional.affine_grid + grid_sample (bilinear, align_corners
            False, border padding: kd's half-pixel geometry and edge clamping), one call per
            (view, source): 4 grid_samples, then the mix. The sources are converted to float once
            per step (grid_sample does not take uint8).
  teacher   forward, eval, no grad (timm resnetv2_152x2_bit at 224 px by default)
  student   forward + T^2 KL(softmax(t/T) || softmax(s/T)) (batchmean), train mode, head zeroed
  backward  of the student
  optimizer Adam (fused=True on CUDA when this PyTorch has it), zero_grad(set_to_none=True)
bf16 autocast on CUDA (--precision), --compile for torch.compile.

Memory format (--memory-format): what a competent PyTorch user picks on each device.
  CUDA: channels_last (auto). cuDNN's bf16 tensor-core convolutions are NHWC kernels; NCHW
        tensors pay a transpose around every convolution.
  CPU:  auto measures both and reports both (a RESULT line each, the faster first), the faster
        labelled "PyTorch": the peer kd is compared with. PyTorch 1.13's CPU (oneDNN) path is
        slow in channels_last at the demo's small channel counts (8-512 channels at 32 px: about
        half the images/s of contiguous NCHW), so a fixed channels_last would compare kd with a
        handicapped peer; on other CPUs, networks or versions the order can flip, hence both.

Prints images/s, ms/step, per-phase times (CUDA events), model FLOPs utilisation against the
matrix-product rate measured in the same run (bf16 8192^3 on a GPU, fp32 1024^3 on the CPU, as
kd bench), peak memory, and a RESULT line with kd bench's keys.

Models: timm names (created without pretrained weights), or kd's custom arch strings
"resnetv2(depths=1-1-1, width=32, stem=conv3[, groups=4])", or the aliases below (the CPU demo's
networks, BASELINES.md), so that this also runs on the CPU with Debian's torch 1.13.
"""
import argparse
import inspect
import json
import math
import re
import resource
import os
import sys
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

ALIASES = {
    "resnetv2_demo_teacher": "resnetv2(depths=1-1-1, width=32, stem=conv3)",
    "resnetv2_demo_student": "resnetv2(depths=1-1-1, width=8, stem=conv3, groups=4)",
    "resnetv2_tiny": "resnetv2(depths=1-1, width=8, stem=conv3, groups=4)",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="resnetv2_152x2_bit")
    p.add_argument("--student", default="resnetv2_50x1_bit")
    p.add_argument("--teacher-res", type=int, default=224)
    p.add_argument("--student-res", type=int, default=160)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--source-px", type=int, default=256, help="side of the synthetic uint8 source images")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="autocast dtype; auto: bf16 on CUDA, fp32 on the CPU (kd's CPU path is fp32; "
                        "PyTorch 1.13's CPU autocast lacks group_norm, so bf16 fails there)")
    p.add_argument("--compile", action="store_true", help="torch.compile teacher and student")
    p.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"], default="auto",
                   help="tensor layout; auto: channels_last on CUDA, both measured on the CPU (the faster "
                        "is the peer)")
    return p.parse_args(argv)


# ---- models ----

def group_norm_act(max_groups):
    """GroupNorm + ReLU with max_groups groups, or the largest divisor of the channels below it
    (kd's rule for narrow custom networks)."""
    from timm.layers.norm_act import GroupNormAct

    def make(num_channels, **kwargs):
        kwargs.pop("num_groups", None)
        groups = max(g for g in range(1, min(max_groups, num_channels) + 1) if num_channels % g == 0)
        return GroupNormAct(num_channels, num_groups=groups, **kwargs)
    return make


def custom_resnetv2(spec, classes):
    """kd's 'resnetv2(depths=D1-D2-..., width=W, stem=fixed|conv3[, groups=G])' as a timm ResNetV2."""
    from timm.layers.std_conv import StdConv2d
    from timm.models.resnetv2 import ResNetV2
    fields = dict(kv.split("=", 1) for kv in re.sub(r"\s+", "", spec).split(",") if kv)
    depths = [int(d) for d in fields["depths"].split("-")]
    width, groups, stem = int(fields["width"]), int(fields.get("groups", 32)), fields.get("stem", "fixed")
    if stem not in ("fixed", "conv3"):
        raise SystemExit(f"torch_step.py: unknown stem '{stem}' in '{spec}' (fixed or conv3)")
    model = ResNetV2(layers=depths, channels=tuple(4 * width * 2 ** i for i in range(len(depths))),
                     num_classes=classes, stem_chs=width, stem_type="fixed",
                     conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=group_norm_act(groups))
    if stem == "conv3":  # a single 3x3/2 weight-standardised conv, no pool (small images)
        model.stem = torch.nn.Sequential()
        model.stem.add_module("conv", StdConv2d(3, width, kernel_size=3, stride=2, padding=1, eps=1e-8))
        # timm's init of the other convolutions, as kd initialises every one (kaiming, fan out)
        torch.nn.init.kaiming_normal_(model.stem.conv.weight, mode="fan_out", nonlinearity="relu")
    return model


def build_model(arch, classes):
    arch = ALIASES.get(arch, arch)
    match = re.fullmatch(r"\s*resnetv2\((.*)\)\s*", arch)
    if match:
        return custom_resnetv2(match.group(1), classes)
    import timm
    return timm.create_model(arch, pretrained=False, num_classes=classes)


def forward_macs(model, res, device):
    """Multiply-adds of one res x res image through the model's convolutions and linear layers."""
    total = [0]

    def conv(m, inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inputs, out):
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, res, res, device=device).contiguous(memory_format=torch.channels_last))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]


# ---- augmentation on the device ----

def crop_thetas(n, device):
    """Per image an inception crop and a flip as affine_grid matrices: normalised output
    coordinate u in [-1, 1] maps to source coordinate a * u + b with a = +-w, b = 2 x0 + w - 1
    (w, x0 as fractions of the image), which is kd's box mapping at half-pixel centres."""
    area = torch.empty(n, device=device).uniform_(0.08, 1.0)
    aspect = torch.exp(torch.empty(n, device=device).uniform_(math.log(3 / 4), math.log(4 / 3)))
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    x0 = torch.rand(n, device=device) * (1 - w)
    y0 = torch.rand(n, device=device) * (1 - h)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    return theta


def augment(sources_u8, resolutions, dtype, memory_format):
    """Both views of the same recipes: crop + resize + flip of sources a (image i) and b (image
    i + 1), mixed, normalised to [-1, 1]."""
    n = sources_u8.shape[0]
    src = sources_u8.float()
    theta_a, theta_b = crop_thetas(n, src.device), crop_thetas(n, src.device)
    lam = torch.empty(n, 1, 1, 1, device=src.device).uniform_(0.1, 0.9)
    views = []
    for res in resolutions:
        size = (n, 3, res, res)
        va = F.grid_sample(src, F.affine_grid(theta_a, size, align_corners=False), mode="bilinear",
                           padding_mode="border", align_corners=False)
        vb = F.grid_sample(src, F.affine_grid(theta_b, size, align_corners=False), mode="bilinear",
                           padding_mode="border", align_corners=False).roll(-1, dims=0)
        mixed = torch.lerp(vb, va, lam) * (2.0 / 255.0) - 1.0  # lam * a + (1 - lam) * b
        views.append(mixed.to(dtype=dtype, memory_format=memory_format))
    return views


# ---- timing ----

class Phases:
    """Per-phase time: CUDA events on a GPU (read once at the end), perf_counter on the CPU."""

    def __init__(self, cuda):
        self.cuda, self.marks, self.totals = cuda, [], {}

    def mark(self, name):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, event))
        else:
            self.marks.append((name, time.perf_counter()))

    def collect(self):
        if self.cuda:
            torch.cuda.synchronize()
        for (name, start), (_, end) in zip(self.marks, self.marks[1:]):
            if name is not None:
                ms = start.elapsed_time(end) if self.cuda else (end - start) * 1e3
                self.totals[name] = self.totals.get(name, 0.0) + ms
        self.marks = []
        return self.totals


def matmul_rate(device):
    """Dense matrix-product FLOP/s as kd defines it (engine/gemm_rate.h): C = A B^T, bf16 8192^3 on a
    GPU (fp32 1024^3 on the CPU), A and B distinct, uniform in [-1, 1); two warm-up runs, three to
    estimate one run's time, then as many as fill ~0.25 s (10 to 200), each timed alone; 2 n^3
    over the median run."""
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    dtype = torch.bfloat16 if cuda else torch.float32
    gen = torch.Generator(device="cpu").manual_seed(11)
    a, b = ((torch.rand(n, n, generator=gen) * 2 - 1).to(device=device, dtype=dtype) for _ in range(2))

    def series(reps):
        times = []
        for _ in range(reps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                a @ b.T
                end.record()
                times.append((start, end))
            else:
                t0 = time.perf_counter()
                a @ b.T
                times.append(time.perf_counter() - t0)
        if cuda:
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) * 1e-3 for s, e in times]
        return statistics.median(times)

    a @ b.T
    a @ b.T
    estimate = series(3)
    reps = int(min(max(0.25 / estimate, 10), 200)) if estimate > 0 else 200
    return 2.0 * n ** 3 / series(reps)


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def measure(args, device, precision, fmt, peak):
    """Times args.steps steps with tensors and models in memory format `fmt`; prints the step's
    figures and returns the RESULT dict."""
    cuda = device.type == "cuda"
    tool = "torch-compile" if args.compile else "torch-eager"
    memory_format = MEMORY_FORMATS[fmt]
    act_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.manual_seed(0)
    teacher = build_model(args.teacher, args.classes).to(device, memory_format=memory_format)
    teacher.eval().requires_grad_(False)
    student = build_model(args.student, args.classes).to(device, memory_format=memory_format).train()
    head = student.get_classifier()
    with torch.no_grad():  # distillation students start from a zero head (the paper's recipe)
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    flops = 2.0 * forward_macs(teacher, args.teacher_res, device) + 6.0 * forward_macs(student, args.student_res, device)

    fused = cuda and "fused" in inspect.signature(torch.optim.Adam).parameters
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    teacher_fn, student_fn = (torch.compile(teacher), torch.compile(student)) if args.compile else (teacher, student)
    sources = torch.randint(0, 256, (args.batch, 3, args.source_px, args.source_px), dtype=torch.uint8, device=device)
    temperature = args.temperature

    def step(phases):
        phases.mark("augment")
        x_teacher, x_student = augment(sources, (args.teacher_res, args.student_res), act_dtype, memory_format)
        phases.mark("teacher")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), torch.no_grad():
            t_logits = teacher_fn(x_teacher)
        phases.mark("student+loss")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            s_logits = student_fn(x_student)
        loss = temperature ** 2 * F.kl_div(F.log_softmax(s_logits.float() / temperature, dim=-1),
                                           F.log_softmax(t_logits.float() / temperature, dim=-1),
                                           reduction="batchmean", log_target=True)
        phases.mark("backward")
        loss.backward()
        phases.mark("optimizer")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases.mark(None)
        return loss

    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"torch_step ({tool}, {fmt}): teacher {args.teacher} @{args.teacher_res} px, student {args.student} "
          f"@{args.student_res} px, batch {args.batch} on {name}; PyTorch {torch.__version__}, {precision}, "
          f"Adam{' (fused)' if fused else ''}", file=sys.stderr)
    warm = Phases(cuda)
    for _ in range(args.warmup):
        step(warm)
    warm.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    phases = Phases(cuda)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(phases)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    totals = phases.collect()
    if not math.isfinite(float(loss)):
        raise SystemExit(f"torch_step.py: the loss is {float(loss)} ({fmt})")

    images_per_s = args.batch * args.steps / seconds
    mfu = flops * images_per_s / peak
    if cuda:
        peak_gib, memory_what = torch.cuda.max_memory_allocated(device) / 2 ** 30, "max_memory_allocated"
    else:
        peak_gib, memory_what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "peak RSS"
    print(f"[{fmt}] images/s {images_per_s:.1f} | step {1e3 * seconds / args.steps:.2f} ms | model "
          f"{flops / 1e9:.4g} GFLOP/image | MFU {100 * mfu:.1f}% of {peak / 1e12:.1f} TFLOP/s (measured "
          f"{'bf16 8192^3' if cuda else 'fp32 1024^3'}) | peak memory {peak_gib:.2f} GiB ({memory_what})")
    phase_total = sum(totals.values())
    print(f"{'phase':<16} {'ms/step':>10} {'share':>7}")
    for phase, ms in totals.items():
        print(f"{phase:<16} {ms / args.steps:10.2f} {100 * ms / phase_total:6.1f}%")
    return {"tool": tool, "device": name, "images_per_sec": round(images_per_s, 2), "mfu": round(mfu, 4),
            "peak_tflops": round(peak / 1e12, 2), "peak_memory_gib": round(peak_gib, 3), "batch": args.batch,
            "ms_per_step": round(1e3 * seconds / args.steps, 3), "teacher": args.teacher, "student": args.student,
            "teacher_res": args.teacher_res, "student_res": args.student_res, "precision": precision,
            "fused_adam": fused, "torch": torch.__version__, "memory_format": fmt,
            "phases_ms": {k: round(v / args.steps, 3) for k, v in totals.items()}}


def main(argv):
    args = parse_args(argv)
    if args.compile and not hasattr(torch, "compile"):
        print(f"torch_step.py: --compile needs torch.compile (PyTorch >= 2.0); this is PyTorch {torch.__version__}",
              file=sys.stderr)
        return 3
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # as kd: every core (Debian's torch defaults to 1)
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    if args.memory_format != "auto":
        formats = [args.memory_format]
    else:
        formats = ["channels_last"] if cuda else ["contiguous", "channels_last"]

    peak = matmul_rate(device)
    results = [measure(args, device, precision, fmt, peak) for fmt in formats]
    results.sort(key=lambda r: -r["images_per_sec"])  # the faster first: the peer
    for i, result in enumerate(results):
        result["label"] = "PyTorch" if i == 0 else f"PyTorch ({result['memory_format']}, slower)"
    if len(results) > 1:
        best, other = results
        print(f"PyTorch = {best['memory_format']}: {best['images_per_sec']:.1f} images/s; "
              f"{other['memory_format']} {other['images_per_sec']:.1f} images/s "
              f"({other['images_per_sec'] / best['images_per_sec']:.2f}x of it)")
    for result in results:
        print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
