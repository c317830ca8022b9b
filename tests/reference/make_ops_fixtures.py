"""PyTorch reference for kd's CPU kernels: writes DIR/ops.safetensors.

Inputs are drawn in float32 (what the file stores), then every op runs in float64 with autograd
and a random float32 upstream gradient `dy`, so the file holds the exact answers to the stored
inputs; the C++ side (tests/parity/ops_parity_test.cpp) runs its float path and compares.

Layout: PyTorch computes NCHW; every image-shaped tensor (x, y, dy, dx, a, b, ...) is saved NHWC
[n, h, w, c]. Conv and StdConv weights (w, w_hat, dw, dw_hat) stay OIHW [c_out, c_in/g, kh, kw],
as in PyTorch and timm checkpoints; the C++ test permutes them to kd's OHWI. Vectors (gamma,
beta, running stats, bias) are [c]; linear tensors are [rows, in] / [out, in] as in PyTorch.

Tensors (<name> picks a case):
  conv/<name>/{x, w, y, dy, dx, dw, params}  F.conv2d, params (i64) = [stride, pad, groups, dilation]
  weight_std/{w, w_hat, dw_hat, dw}          StdConv2d's standardisation (F.batch_norm on the
                                             [1, c_out, k] view, eps 1e-8), dw_hat is the upstream
  stdconv/{x, w, y, dy, dx, dw, params}      timm.layers.StdConv2d(eps=1e-8): standardise + conv
  groupnorm/<name>/{x, gamma, beta, y, dy, dx, dgamma, dbeta, params}
                                             timm GroupNormAct (ReLU), params = [groups] (eps 1e-5)
  batchnorm/train/{x, gamma, beta, running_mean0, running_var0, y, running_mean, running_var,
                   dy, dx, dgamma, dbeta}    BatchNorm2d in training mode, momentum 0.1, eps 1e-5
  batchnorm/eval/{x, gamma, beta, running_mean, running_var, y}
  act/<relu|hardswish|sigmoid|hardsigmoid>/{x, y, dy, dx}
                                             hardsigmoid's x holds +-3 exactly (PyTorch: gradient 0)
  maxpool/<torch|bit>/{x, y, dy, dx, params} params = [k, stride, pad, pad_with_zero]:
                                             torch = MaxPool2d(3, 2, padding 1) (-inf padding),
                                             bit = ConstantPad2d(1, 0) + MaxPool2d(3, 2)
  avgpool/{x, y, dy, dx}                     x NHWC -> y [n, c] (mean over h, w)
  linear/{x, w, b, y, dy, dx, dw, db}        F.linear
  add/{a, b, y, dy, da, db}
  channel_scale/{x, s, y, dy, dx, ds}        squeeze-excite's x * s, x NHWC, the gate s [n, 1, 1, c]
  conv_bias/{x, w, b, y, dy, dx, dw, db, params}  F.conv2d with a bias, params as conv/
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import GroupNormAct
from timm.layers.std_conv import StdConv2d

import st

WS_EPS = 1e-8   # BiT's StdConv2d eps
GN_EPS = 1e-5   # timm GroupNormAct default, BiT
BN_EPS, BN_MOMENTUM = 1e-5, 0.1

gen = torch.Generator().manual_seed(20240611)


def rand(*shape, scale=1.0, shift=0.0):
    """Normal samples rounded to float32 (what the file stores), returned as float64."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).float().double()


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def arr(t):
    return t.detach().contiguous().numpy()


def with_grads(fn, *inputs):
    """y = fn(*inputs); returns y, the random upstream dy and d(sum(y * dy))/d(each input)."""
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    dy = rand(*y.shape)
    grads = torch.autograd.grad(y, leaves, dy)
    return y.detach(), dy, grads


def conv_cases(out):
    # name: (n, c_in, h, w, c_out, k, stride, pad, groups, dilation)
    cases = {
        "3x3s1": (2, 5, 7, 6, 4, 3, 1, 1, 1, 1),
        "3x3s2": (2, 4, 9, 8, 6, 3, 2, 1, 1, 1),
        "7x7s2": (1, 3, 13, 12, 8, 7, 2, 3, 1, 1),   # BiT stem
        "1x1s2": (2, 6, 6, 7, 5, 1, 2, 0, 1, 1),     # projection shortcut
        "grouped": (1, 8, 6, 6, 6, 3, 1, 1, 2, 1),
        "depthwise": (2, 6, 7, 7, 6, 3, 2, 1, 6, 1),
        "depthwise_mult2": (1, 4, 6, 5, 8, 5, 1, 2, 4, 1),
        "dilated": (1, 3, 9, 9, 4, 3, 1, 2, 1, 2),
    }
    for name, (n, cin, h, w, cout, k, stride, pad, groups, dil) in cases.items():
        x, wt = rand(n, cin, h, w), rand(cout, cin // groups, k, k, scale=0.3)
        y, dy, (dx, dw) = with_grads(
            lambda a, b: F.conv2d(a, b, None, stride, pad, dil, groups), x, wt)
        p = f"conv/{name}/"
        out.update({p + "x": nhwc(x), p + "w": arr(wt), p + "y": nhwc(y), p + "dy": nhwc(dy),
                    p + "dx": nhwc(dx), p + "dw": arr(dw),
                    p + "params": np.array([stride, pad, groups, dil], dtype=np.int64)})


def standardise(w):
    """timm's StdConv2d.forward, the weight part, verbatim in effect."""
    return F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, training=True, momentum=0.0,
                        eps=WS_EPS).reshape_as(w)


def weight_std_cases(out):
    w = rand(8, 6, 3, 3, scale=0.2, shift=0.05)
    w_hat, dw_hat, (dw,) = with_grads(standardise, w)
    out.update({"weight_std/w": arr(w), "weight_std/w_hat": arr(w_hat),
                "weight_std/dw_hat": arr(dw_hat), "weight_std/dw": arr(dw)})

    # The real module: standardise, then convolve (3x3, stride 2, padding 1).
    conv = StdConv2d(6, 8, 3, stride=2, padding=1, eps=WS_EPS).double()
    x, w = rand(2, 6, 9, 9), rand(8, 6, 3, 3, scale=0.2)
    conv.weight = nn.Parameter(w.clone())
    xl = x.clone().requires_grad_(True)
    y = conv(xl)
    dy = rand(*y.shape)
    y.backward(dy)
    out.update({"stdconv/x": nhwc(x), "stdconv/w": arr(w), "stdconv/y": nhwc(y), "stdconv/dy": nhwc(dy),
                "stdconv/dx": nhwc(xl.grad), "stdconv/dw": arr(conv.weight.grad),
                "stdconv/params": np.array([2, 1, 1, 1], dtype=np.int64)})


def groupnorm_cases(out):
    # name: (n, c, h, w, groups)
    for name, (n, c, h, w, groups) in {"c64": (2, 64, 5, 5, 32), "c96": (1, 96, 3, 4, 32)}.items():
        gn = GroupNormAct(c, num_groups=groups, eps=GN_EPS, inplace=False).double()
        x = rand(n, c, h, w, scale=2.0, shift=0.5)
        gamma, beta = rand(c, scale=0.3, shift=1.0), rand(c, scale=0.5)

        gn.weight, gn.bias = nn.Parameter(gamma.clone()), nn.Parameter(beta.clone())
        xl = x.clone().requires_grad_(True)
        y = gn(xl)
        dy = rand(*y.shape)
        y.backward(dy)
        p = f"groupnorm/{name}/"
        out.update({p + "x": nhwc(x), p + "gamma": arr(gamma), p + "beta": arr(beta), p + "y": nhwc(y),
                    p + "dy": nhwc(dy), p + "dx": nhwc(xl.grad), p + "dgamma": arr(gn.weight.grad),
                    p + "dbeta": arr(gn.bias.grad), p + "params": np.array([groups], dtype=np.int64)})


def batchnorm_cases(out):
    n, c, h, w = 4, 6, 5, 3
    bn = nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM).double().train()
    x, gamma, beta = rand(n, c, h, w, scale=1.5, shift=-0.3), rand(c, scale=0.3, shift=1.0), rand(c, scale=0.5)
    rm0, rv0 = rand(c, scale=0.2), rand(c, scale=0.2, shift=1.0).abs()
    bn.running_mean.copy_(rm0)
    bn.running_var.copy_(rv0)
    bn.weight, bn.bias = nn.Parameter(gamma.clone()), nn.Parameter(beta.clone())
    xl = x.clone().requires_grad_(True)
    y = bn(xl)
    dy = rand(*y.shape)
    y.backward(dy)
    p = "batchnorm/train/"
    out.update({p + "x": nhwc(x), p + "gamma": arr(gamma), p + "beta": arr(beta), p + "running_mean0": arr(rm0),
                p + "running_var0": arr(rv0), p + "y": nhwc(y), p + "running_mean": arr(bn.running_mean),
                p + "running_var": arr(bn.running_var), p + "dy": nhwc(dy), p + "dx": nhwc(xl.grad),
                p + "dgamma": arr(bn.weight.grad), p + "dbeta": arr(bn.bias.grad)})

    bn.eval()
    x = rand(n, c, h, w)
    with torch.no_grad():
        y = bn(x)
    p = "batchnorm/eval/"
    out.update({p + "x": nhwc(x), p + "gamma": arr(gamma), p + "beta": arr(beta),
                p + "running_mean": arr(bn.running_mean), p + "running_var": arr(bn.running_var), p + "y": nhwc(y)})


def activation_cases(out):
    for name, fn in {"relu": F.relu, "hardswish": F.hardswish, "sigmoid": torch.sigmoid}.items():
        x = rand(2, 5, 4, 3, scale=3.0)  # reaches both hardswish kinks' outer pieces
        y, dy, (dx,) = with_grads(fn, x)
        p = f"act/{name}/"
        out.update({p + "x": nhwc(x), p + "y": nhwc(y), p + "dy": nhwc(dy), p + "dx": nhwc(dx)})


def pool_cases(out):
    pools = {"torch": (nn.MaxPool2d(3, 2, padding=1), [3, 2, 1, 0]),
             "bit": (nn.Sequential(nn.ConstantPad2d(1, 0.0), nn.MaxPool2d(3, 2, padding=0)), [3, 2, 1, 1])}
    for name, (pool, params) in pools.items():
        x = rand(2, 4, 9, 8, shift=-0.3)  # mostly negative borders: zero padding wins sometimes
        y, dy, (dx,) = with_grads(pool, x)
        p = f"maxpool/{name}/"
        out.update({p + "x": nhwc(x), p + "y": nhwc(y), p + "dy": nhwc(dy), p + "dx": nhwc(dx),
                    p + "params": np.array(params, dtype=np.int64)})

    x = rand(3, 7, 4, 5)
    y, dy, (dx,) = with_grads(lambda t: t.mean(dim=(2, 3)), x)
    out.update({"avgpool/x": nhwc(x), "avgpool/y": arr(y), "avgpool/dy": arr(dy), "avgpool/dx": nhwc(dx)})


def linear_and_add_cases(out):
    x, w, b = rand(6, 20), rand(11, 20, scale=0.3), rand(11)
    y, dy, (dx, dw, db) = with_grads(F.linear, x, w, b)
    out.update({"linear/x": arr(x), "linear/w": arr(w), "linear/b": arr(b), "linear/y": arr(y),
                "linear/dy": arr(dy), "linear/dx": arr(dx), "linear/dw": arr(dw), "linear/db": arr(db)})

    a, b = rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    y, dy, (da, db) = with_grads(torch.add, a, b)
    out.update({"add/a": nhwc(a), "add/b": nhwc(b), "add/y": nhwc(y), "add/dy": nhwc(dy),
                "add/da": nhwc(da), "add/db": nhwc(db)})


def squeeze_excite_cases(out):
    """MobileNetV3's ops: the hard-sigmoid gate, the channel scale, a convolution with a bias."""
    x = rand(2, 5, 4, 3, scale=3.0)
    x.view(-1)[:4] = torch.tensor([-3.0, 3.0, -3.0, 3.0], dtype=torch.float64)  # the kinks, exactly
    y, dy, (dx,) = with_grads(F.hardsigmoid, x)
    out.update({"act/hardsigmoid/x": nhwc(x), "act/hardsigmoid/y": nhwc(y), "act/hardsigmoid/dy": nhwc(dy),
                "act/hardsigmoid/dx": nhwc(dx)})

    x, s = rand(2, 6, 5, 4), torch.rand(2, 6, 1, 1, generator=gen, dtype=torch.float64).float().double()
    y, dy, (dx, ds) = with_grads(lambda a, b: a * b, x, s)
    out.update({"channel_scale/x": nhwc(x), "channel_scale/s": nhwc(s), "channel_scale/y": nhwc(y),
                "channel_scale/dy": nhwc(dy), "channel_scale/dx": nhwc(dx), "channel_scale/ds": nhwc(ds)})

    x, wt, b = rand(2, 5, 6, 7), rand(4, 5, 3, 3, scale=0.3), rand(4)
    y, dy, (dx, dw, db) = with_grads(lambda a, w, c: F.conv2d(a, w, c, 1, 1), x, wt, b)
    out.update({"conv_bias/x": nhwc(x), "conv_bias/w": arr(wt), "conv_bias/b": arr(b), "conv_bias/y": nhwc(y),
                "conv_bias/dy": nhwc(dy), "conv_bias/dx": nhwc(dx), "conv_bias/dw": arr(dw),
                "conv_bias/db": arr(db), "conv_bias/params": np.array([1, 1, 1, 1], dtype=np.int64)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {}
    conv_cases(out)
    weight_std_cases(out)
    groupnorm_cases(out)
    batchnorm_cases(out)
    activation_cases(out)
    pool_cases(out)
    linear_and_add_cases(out)
    squeeze_excite_cases(out)  # last: the cases above draw the same random numbers as before
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ops.safetensors")
    st.save(path, out, metadata={"torch": torch.__version__, "layout": "images NHWC, conv weights OIHW",
                                 "ws_eps": WS_EPS, "gn_eps": GN_EPS, "bn_eps": BN_EPS,
                                 "bn_momentum": BN_MOMENTUM})
    print(f"wrote {len(out)} tensors to {path}")


if __name__ == "__main__":
    main()
