"""How far bf16 rounding alone moves a whole network's forward and backward (not a test).

Builds timm's resnetv2_50x1_bit (10 classes) with the randomised parameters of
tests/models/resnetv2_cuda_test.cpp (GroupNorm scales in [0.5, 1.5], biases in [-0.2, 0.2], the
head uniform with variance 1/in), runs forward + backward from a random dL/dlogits on 2x64x64 images
in float64, and again in float32 with every leaf module's output and input gradient rounded to
bf16 (what kd's CUDA path stores), and prints the relative L2 distances: the noise floor the
GPU-vs-CPU whole-network test must allow. Measured with Debian's torch 1.13 and timm 1.0.29:
logits 1.1e-1, parameter gradients 0.80 (cosine 0.67), input gradient 0.80, head.fc.bias exact,
head.fc.weight 0.11.   Usage: python3 tests/reference/bf16_noise.py [--arch ARCH] [--images N --size S] [--eval]
With --arch mobilenetv3_large_100 (or another timm arch), the same for that network: BatchNorm in
training mode, its scales and the biases randomised alike, the classifier as the head
(tests/models/mobilenet_v3_cuda_test.cpp); --arch resnet18 / resnet50: fc as the head
(tests/models/resnet_cuda_test.cpp).
"""
import argparse
import math

import timm
import torch


def build(arch):
    m = timm.create_model(arch, pretrained=False, num_classes=10)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 1 and n.endswith("weight"):  # norm scales
                p.uniform_(0.5, 1.5, generator=g)
            elif n.endswith("bias"):
                p.uniform_(-0.2, 0.2, generator=g)
            elif (n.startswith("head") or n.startswith("classifier") or n.startswith("fc.")) and p.dim() >= 2:
                b = math.sqrt(3.0 / p.shape[1])
                p.uniform_(-b, b, generator=g)
    for mod in m.modules():  # hooks cannot wrap in-place activations
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m.double()


def run(m, x, dy, dtype, bf16, tensor_hooks=False):
    m = m.to(dtype)
    m.zero_grad()
    hooks = []
    if bf16:
        def round_out(mod, inp, out):
            return out.to(torch.bfloat16).to(dtype)

        def round_grad(mod, gin, gout):
            return tuple(None if g is None else g.to(torch.bfloat16).to(dtype) for g in gin)

        def round_in(mod, inp):  # the input gradient rounded by a hook on the (rounded) input itself
            out = []
            for t in inp:
                r = t.to(torch.bfloat16).to(dtype)
                if r.requires_grad:
                    r.register_hook(lambda g: g.to(torch.bfloat16).to(dtype))
                out.append(r)
            return tuple(out)

        for mod in m.modules():
            if not list(mod.children()):
                hooks.append(mod.register_forward_hook(round_out))
                # timm's ResNet adds the shortcut in place into a leaf's output, which a full
                # backward hook forbids; there the input-side hook does the same rounding.
                hooks.append(mod.register_forward_pre_hook(round_in) if tensor_hooks
                             else mod.register_full_backward_hook(round_grad))
    xi = x.to(dtype).detach().requires_grad_(True)
    y = m(xi)
    y.backward(dy.to(dtype))
    grads = {n: p.grad.double().flatten() for n, p in m.named_parameters()}
    for h in hooks:
        h.remove()
    return y.double().detach(), grads, xi.grad.double()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnetv2_50x1_bit")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--eval", action="store_true",
                    help="eval mode instead: running statistics from 3 training forwards on other images, then "
                         "the logits with every leaf module's output rounded to bf16 (the frozen-teacher path)")
    args = ap.parse_args()
    arch = args.arch
    head = "classifier" if arch.startswith("mobilenetv3") else "fc" if arch.startswith("resnet") and \
        not arch.startswith("resnetv2") else "head.fc"
    torch.manual_seed(0)
    m = build(arch)
    x = (torch.rand(args.images, 3, args.size, args.size, dtype=torch.float64) * 2 - 1).to(torch.bfloat16).double()
    if args.eval:
        warmup = (torch.rand(args.images, 3, args.size, args.size, dtype=torch.float64) * 2 - 1).double()
        with torch.no_grad():
            for _ in range(3):
                m(warmup)
            m.eval()
            y64 = m(x)
            m.float()
            hooks = [mod.register_forward_hook(lambda mod, inp, out: out.to(torch.bfloat16).float())
                     for mod in m.modules() if not list(mod.children())]
            y = m(x.float()).double()
            for h in hooks:
                h.remove()
        print(f" bf16-rounded vs float64, eval mode: logits {rel(y, y64):.2e}")
        return
    dy = torch.randn(args.images, 10, dtype=torch.float64)
    y64, g64, dx64 = run(m, x, dy, torch.float64, False)
    for name, dtype, bf16 in [("float32", torch.float32, False), ("bf16-rounded", torch.float32, True)]:
        y, g, dx = run(m, x, dy, dtype, bf16, tensor_hooks=head == "fc")
        flat, flat64 = torch.cat(list(g.values())), torch.cat(list(g64.values()))
        cos = float(flat @ flat64 / flat.norm() / flat64.norm())
        print(f"{name:>13} vs float64: logits {rel(y, y64):.2e}, parameter gradients {rel(flat, flat64):.2e} "
              f"(cosine {cos:.3f}), input gradient {rel(dx, dx64):.2e} (cosine "
              f"{float((dx * dx64).sum() / dx.norm() / dx64.norm()):.3f}, norm ratio {float(dx.norm() / dx64.norm()):.3f}), "
              f"{head}.weight "
              f"{rel(g[head + '.weight'], g64[head + '.weight']):.2e}, {head}.bias "
              f"{rel(g[head + '.bias'], g64[head + '.bias']):.2e}")


if __name__ == "__main__":
    main()
