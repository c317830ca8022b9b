"""Fixtures for reading BiT's original .npz weights (models/bit_npz.h): small timm ResNetV2 models
whose weights are written in BiT's npz format (the inverse of timm's resnetv2._load_weights), then
read back by timm's own _load_weights into a fresh model, which must reproduce every parameter
(a naming or layout mistake in the writer fails here, in timm, not in kd). For each model:
  <name>.npz           the BiT archive (np.savez: stored members; np.savez_compressed: deflated)
  <name>.safetensors   input [n, h, w, 3] NHWC, logits [n, classes] (timm in float64, from the
                       weights timm loaded out of the npz), param.<timm name> (the state dict timm
                       holds after loading, OIHW); metadata arch, num_classes, npz.
"""
import argparse
import os

import numpy as np
import torch
import timm
from timm.models.resnetv2 import _load_weights

import st
from make_models_fixtures import custom_resnetv2

PREFIX = "resnet/"


def hwio(w):
    """timm's OIHW -> TensorFlow's HWIO (timm's t2p transposes back with (3, 2, 0, 1))."""
    return w.detach().numpy().transpose(2, 3, 1, 0)


def vec(t):
    return t.detach().numpy()


def bit_arrays(model):
    """The BiT npz arrays of a timm ResNetV2, named as timm's _load_weights reads them."""
    out = {
        f"{PREFIX}root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
        f"{PREFIX}group_norm/gamma": vec(model.norm.weight),
        f"{PREFIX}group_norm/beta": vec(model.norm.bias),
        f"{PREFIX}head/conv2d/kernel": hwio(model.head.fc.weight),
        f"{PREFIX}head/conv2d/bias": vec(model.head.fc.bias),
    }
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            p = f"{PREFIX}block{i + 1}/unit{j + 1:02d}/"
            for part, conv, norm in (("a", block.conv1, block.norm1), ("b", block.conv2, block.norm2),
                                     ("c", block.conv3, block.norm3)):
                out[f"{p}{part}/standardized_conv2d/kernel"] = hwio(conv.weight)
                out[f"{p}{part}/group_norm/gamma"] = vec(norm.weight)
                out[f"{p}{part}/group_norm/beta"] = vec(norm.bias)
            if block.downsample is not None:
                out[f"{p}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def randomize(model, seed):
    """timm's init leaves GroupNorm at (1, 0) and may zero the head: perturb them so that a
    swapped gamma/beta or a dropped head shows in the logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name or name.startswith("norm."):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.startswith("head."):
                p.copy_(0.05 * torch.randn_like(p))


def make(name, arch, build, compressed, n, size, seed, out_dir):
    original = build()
    randomize(original, seed)
    npz_path = os.path.join(out_dir, name + ".npz")
    (np.savez_compressed if compressed else np.savez)(npz_path, **bit_arrays(original))

    torch.manual_seed(seed + 1000)
    loaded = build()  # fresh, different initial values
    with torch.no_grad():
        _load_weights(loaded, npz_path, prefix=PREFIX)
    for (pname, p), (_, q) in zip(original.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), f"{name}: timm's _load_weights read {pname} differently from what was written"

    state = {k: v.numpy() for k, v in loaded.state_dict().items()}
    torch.manual_seed(seed + 2000)
    x = torch.randn(n, 3, size, size)
    with torch.no_grad():
        logits = loaded.double().eval()(x.double())
    tensors = {"input": x.permute(0, 2, 3, 1).contiguous().numpy(), "logits": logits.numpy()}
    tensors.update({"param." + k: v for k, v in state.items()})
    st.save(os.path.join(out_dir, name + ".safetensors"), tensors, {
        "arch": arch, "num_classes": logits.shape[1], "npz": os.path.basename(npz_path), "timm": timm.__version__},
        keep_float64=True)
    print(f"{name}: {len(state)} tensors ({'deflated' if compressed else 'stored'}), logits {tuple(logits.shape)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    # BiT's stem (7x7 conv + pool) and two units in stage 1; members stored, as np.savez writes.
    make("bit_npz_small", "resnetv2(depths=2-1, width=16, stem=fixed)",
         lambda: custom_resnetv2([2, 1], 16, "fixed", 10), False, 2, 32, 0, args.out)
    # Twelve units in stage 2 (unit10..unit12: two-digit names), deflated as np.savez_compressed.
    make("bit_npz_deep", "resnetv2(depths=1-12, width=8, stem=fixed, groups=4)",
         lambda: custom_resnetv2([1, 12], 8, "fixed", 5, groups=4), True, 2, 32, 1, args.out)


if __name__ == "__main__":
    main()
