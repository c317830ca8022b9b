"""Function matching's mixed views, computed independently in PyTorch: crops resized with
torchvision's roi_align (aligned=True, one bilinear sample at each output pixel's centre: the
half-pixel convention of kernels/augment.h), flipped, then mixed as big_vision does it, with the
batch rolled by one: mixed[i] = lam * view[i] + (1 - lam) * view[i - 1] (view[-1] = the last).
kd's renderer must give the same pixels from the same boxes (tests/parity/mixup_parity_test.cpp).
Saved as mixup.safetensors:
  images [6, 37, 53, 3] (uint8 values as float32), boxes [6, 4] (y0, x0, h, w in source pixels),
  flips [6], lam [1], mixed_<h>x<w> [6, h, w, 3] for a teacher (24x24) and a student (16x16) view
  of the same recipes (0..255 units, float32)."""
import argparse
import os

import numpy as np
import torch
from torchvision.ops import roi_align

import st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator().manual_seed(21)
    n, height, width = 6, 37, 53
    images = torch.randint(0, 256, (n, height, width, 3), generator=g).double()
    # Boxes inside the image (every sample coordinate >= -0.5, where roi_align and kd both clamp).
    h = height * (0.3 + 0.7 * torch.rand(n, generator=g, dtype=torch.float64))
    w = width * (0.3 + 0.7 * torch.rand(n, generator=g, dtype=torch.float64))
    y0 = (height - h) * torch.rand(n, generator=g, dtype=torch.float64)
    x0 = (width - w) * torch.rand(n, generator=g, dtype=torch.float64)
    # float32 boxes: the values kd reads.
    boxes = torch.stack([y0, x0, h, w], 1).float().double()
    flips = torch.tensor([0, 1, 1, 0, 1, 0])
    lam = 0.6875  # a big_vision lambda: max(a, 1 - a), a ~ Beta(alpha, alpha)
    nchw = images.permute(0, 3, 1, 2).contiguous()
    rois = torch.cat([torch.arange(n, dtype=torch.float64)[:, None], boxes[:, 1:2], boxes[:, 0:1],
                      boxes[:, 1:2] + boxes[:, 3:4], boxes[:, 0:1] + boxes[:, 2:3]], 1)
    tensors = {"images": images.float().numpy(), "boxes": boxes.float().numpy(),
               "flips": flips.float().numpy(), "lam": np.array([lam], dtype=np.float32)}
    for out_h, out_w in [(24, 24), (16, 16)]:
        views = roi_align(nchw, rois, output_size=(out_h, out_w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
        views = torch.where(flips[:, None, None, None].bool(), views.flip(-1), views)
        mixed = lam * views + (1 - lam) * views.roll(1, 0)
        tensors[f"mixed_{out_h}x{out_w}"] = mixed.permute(0, 2, 3, 1).float().numpy()
    st.save(os.path.join(args.out, "mixup.safetensors"), tensors, {"torch": torch.__version__})


if __name__ == "__main__":
    main()
