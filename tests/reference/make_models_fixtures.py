"""Parity fixtures for whole models, computed by timm itself (pinned in tools/install_deps.sh).

For each model: random input images (NHWC), timm's forward in float64, a random upstream
gradient on the logits, and the gradients of every parameter and of the input. Parameters are
timm's own initialisation, with the GroupNorm affine parameters and the head randomised so that
their gradients are exercised. Saved as safetensors:
  input [n, h, w, 3] NHWC, logits [n, classes], dlogits, dinput [n, h, w, 3] NHWC,
  param.<timm name> (timm layout: conv OIHW), grad.<timm name>; metadata: arch, num_classes.
Stored as F32 (inputs and parameters exactly, outputs rounded once); timm computed in float64.
"""
import argparse
import collections
import json
import os
from functools import partial

import numpy as np
import torch
import timm
from timm.layers.norm_act import GroupNormAct
from timm.layers.std_conv import StdConv2d
from timm.models.resnetv2 import ResNetV2

import st


def group_norm_act(max_groups):
    """kd's rule for custom networks: GroupNorm + ReLU with `max_groups` groups (BiT: 32), or the
    largest divisor of the channel count below it (timm's default rejects narrower layers)."""
    def make(num_channels, **kwargs):
        kwargs.pop("num_groups", None)
        groups = max(g for g in range(1, min(max_groups, num_channels) + 1) if num_channels % g == 0)
        return GroupNormAct(num_channels, num_groups=groups, **kwargs)
    return make


def custom_resnetv2(depths, width, stem, num_classes, groups=32):
    """The kd arch 'resnetv2(depths=..., width=W, stem=..., groups=G)' from timm's ResNetV2 class."""
    model = ResNetV2(layers=depths, channels=tuple(4 * width * 2 ** i for i in range(len(depths))),
                     num_classes=num_classes, stem_chs=width, stem_type="fixed",
                     conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=group_norm_act(groups))
    if stem == "conv3":  # one 3x3/2 weight-standardised conv, no pool
        model.stem = torch.nn.Sequential(collections.OrderedDict(
            conv=StdConv2d(3, width, kernel_size=3, stride=2, padding=1, eps=1e-8)))
    return model


def is_norm(pname):
    """GroupNorm (ResNetV2) and BatchNorm (ResNet: bn*, downsample.1) affine parameters."""
    return (".norm" in pname or pname.startswith("norm.") or pname.startswith("bn") or ".bn" in pname
            or ".downsample.1." in pname)


def make(name, arch, model, n, size, seed, out_dir):
    """Models with BatchNorm also get: random running statistics (param.<buffer>), the logits of an
    eval-mode forward with them (eval_logits, before training), and the running statistics after
    the training-mode forward (after.<buffer>, PyTorch's momentum update)."""
    torch.manual_seed(seed)
    model = model.double().train()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if is_norm(pname):
                p.copy_((1.0 if pname.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif pname.startswith("head.") or pname.startswith("fc.") or pname.startswith("classifier."):
                p.copy_(0.05 * torch.randn_like(p))
            elif pname.endswith(".bias"):  # convolution biases (squeeze-excite, MobileNetV3's conv_head)
                p.copy_(0.1 * torch.randn_like(p))
        for bname, b in model.named_buffers():
            if bname.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif bname.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
            elif bname.endswith("num_batches_tracked"):
                b.fill_(3)
    # Parameters and inputs are rounded to float32 first, so the stored F32 values are exactly
    # what the float64 computation used.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(b.float().double())
    x = torch.randn(n, 3, size, size).double().requires_grad_(True)
    buffers = {bname: b.detach().clone() for bname, b in model.named_buffers()}
    eval_logits = None
    if buffers:
        model.eval()
        with torch.no_grad():
            eval_logits = model(x).numpy()
        model.train()
    logits = model(x)
    dlogits = torch.randn(logits.shape).double()
    logits.backward(dlogits)
    nhwc = lambda t: t.detach().permute(0, 2, 3, 1).contiguous().numpy()
    tensors = {"input": nhwc(x), "logits": logits.detach().numpy(), "dlogits": dlogits.numpy(),
               "dinput": nhwc(x.grad)}
    for pname, p in model.named_parameters():
        tensors["param." + pname] = p.detach().numpy()
        tensors["grad." + pname] = p.grad.numpy()
    for bname, b in model.named_buffers():
        tensors["param." + bname] = buffers[bname].numpy()
        tensors["after." + bname] = b.detach().numpy()
    if eval_logits is not None:
        tensors["eval_logits"] = eval_logits
    st.save(os.path.join(out_dir, name + ".safetensors"), tensors,
            {"arch": arch, "num_classes": logits.shape[1], "timm": timm.__version__})
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, logits {tuple(logits.shape)}")


def forward_fixture(out_dir):
    """What a user brings to `kd forward`: timm's own state dict of resnetv2_50x1_bit (plain names,
    OIHW) and float32 NHWC images; the expected logits are timm's, computed in float64."""
    torch.manual_seed(5)
    model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ".norm" in pname or pname.startswith("norm.") or pname.startswith("head."):
                p.add_(0.1 * torch.randn_like(p))
    st.save(os.path.join(out_dir, "resnetv2_50x1_bit.weights.safetensors"),
            {k: v.numpy() for k, v in model.state_dict().items()}, {"format": "pt"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model.double()(x.double())
    st.save(os.path.join(out_dir, "resnetv2_50x1_bit.forward.safetensors"),
            {"images": x.permute(0, 2, 3, 1).contiguous().numpy(), "logits": logits.numpy()})


def mobilenetv3_forward_fixture(out_dir):
    """`kd forward` on timm's own mobilenetv3_small_100 state dict (10 classes), BatchNorm in eval
    mode: its affine parameters, running statistics and the convolution biases randomised."""
    torch.manual_seed(8)
    model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if is_norm(pname) or pname.endswith(".bias") or pname.startswith("classifier."):
                p.add_(0.1 * torch.randn_like(p))
        for bname, b in model.named_buffers():
            if bname.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif bname.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
    st.save(os.path.join(out_dir, "mobilenetv3_small_100.weights.safetensors"),
            {k: v.numpy() for k, v in model.state_dict().items()}, {"format": "pt"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model.double()(x.double())
    st.save(os.path.join(out_dir, "mobilenetv3_small_100.forward.safetensors"),
            {"images": x.permute(0, 2, 3, 1).contiguous().numpy(), "logits": logits.numpy()})


def mobilenetv3_layouts(out_dir):
    """Every timm MobileNetV3 kd builds, at 1000 classes: its parameter and buffer names and shapes
    in state-dict order, the parameter count, and the multiply-adds of one 224x224 image counted
    by hooks on every Conv2d (out_h * out_w * k * k * c_in / groups * c_out) and Linear
    (in * out), written to mobilenetv3_layouts.json."""
    layouts = {}
    for arch in ["mobilenetv3_large_100", "mobilenetv3_large_075", "mobilenetv3_small_100",
                 "mobilenetv3_small_075", "mobilenetv3_small_050"]:
        model = timm.create_model(arch, pretrained=False).eval()
        macs = []

        def count(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                macs.append(output.shape[2] * output.shape[3] * k * module.in_channels // module.groups
                            * module.out_channels)
            else:
                macs.append(module.in_features * module.out_features)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.register_forward_hook(count)
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
        layouts[arch] = {
            "params": [[n, list(p.shape)] for n, p in model.named_parameters()],
            "buffers": [[n, list(b.shape)] for n, b in model.named_buffers()],
            "num_params": sum(p.numel() for p in model.parameters()),
            "macs_224": sum(macs),
        }
        print(f"{arch}: {layouts[arch]['num_params']} parameters, {sum(macs) / 1e9:.3f} GMACs at 224")
    with open(os.path.join(out_dir, "mobilenetv3_layouts.json"), "w") as f:
        json.dump(layouts, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    # The paper's student, exactly as timm registers it.
    forward_fixture(args.out)
    make("resnetv2_50x1_bit", "resnetv2_50x1_bit",
         timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=10), 2, 64, 0, args.out)
    # The demo's teacher and student shapes (custom depth/width, both stems).
    make("resnetv2_demo_teacher", "resnetv2(depths=1-1-1, width=32, stem=conv3)",
         custom_resnetv2([1, 1, 1], 32, "conv3", 10), 3, 32, 1, args.out)
    make("resnetv2_fixed_small", "resnetv2(depths=2-1, width=16, stem=fixed)",
         custom_resnetv2([2, 1], 16, "fixed", 7), 2, 40, 2, args.out)
    make("resnetv2_demo_student", "resnetv2(depths=1-1-1, width=8, stem=conv3, groups=4)",
         custom_resnetv2([1, 1, 1], 8, "conv3", 10, groups=4), 4, 32, 3, args.out)
    # ResNet with BatchNorm, as timm registers it (BasicBlock and Bottleneck).
    make("resnet18", "resnet18", timm.create_model("resnet18", pretrained=False, num_classes=10), 2, 64, 4, args.out)
    make("resnet50", "resnet50", timm.create_model("resnet50", pretrained=False, num_classes=10), 2, 64, 5, args.out)
    # MobileNetV3 (squeeze-excite, hard-swish, depthwise convolutions, the conv head with a bias).
    for seed, arch in enumerate(["mobilenetv3_large_100", "mobilenetv3_small_100"], start=6):
        make(arch, arch, timm.create_model(arch, pretrained=False, num_classes=10), 2, 64, seed, args.out)
    mobilenetv3_layouts(args.out)
    mobilenetv3_forward_fixture(args.out)


if __name__ == "__main__":
    main()
