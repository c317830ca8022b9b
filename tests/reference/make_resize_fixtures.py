"""Resize fixtures from PyTorch: F.interpolate(..., antialias=True, align_corners=False) for
bilinear and bicubic, and mode="area" (adaptive average pooling), on a random HWC image with
values 0..255, down- and upscaling, non-square. Saved as resize.safetensors:
  image [37, 53, 3]; <filter>_<h>x<w> [h, w, 3] (float32, unrounded)."""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

import st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    image = torch.randint(0, 256, (37, 53, 3)).float()
    x = image.permute(2, 0, 1).unsqueeze(0).double()
    tensors = {"image": image.numpy()}
    for h, w in [(20, 30), (9, 11), (37, 53), (60, 80), (16, 64)]:
        for mode in ("bilinear", "bicubic"):
            y = F.interpolate(x, size=(h, w), mode=mode, antialias=True, align_corners=False)
            tensors[f"{mode}_{h}x{w}"] = y[0].permute(1, 2, 0).float().numpy()
        y = F.interpolate(x, size=(h, w), mode="area")
        tensors[f"area_{h}x{w}"] = y[0].permute(1, 2, 0).float().numpy()
    st.save(os.path.join(args.out, "resize.safetensors"), tensors, {"torch": torch.__version__})
    print(f"resize: {len(tensors) - 1} resized views")


if __name__ == "__main__":
    main()
