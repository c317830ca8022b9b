#!/usr/bin/python3
"""Images of another source for distilling the Fashion-MNIST teacher without its data (issue 21,
item 5; the paper's "distilling on out-of-domain data"): grayscale 28x28 crops of the photographs
that ship with scikit-image (and matplotlib's Grace Hopper), written as PNG files into one folder
(kd's `data.train_kind = "images"`: no labels, none are used).

Each crop: a random square of 4-60% of the photo's shorter side at a random place, area-resized
to 28x28, converted to luminance, with its contrast stretched to 0..255 (Fashion-MNIST's images
span the full range). With --invert half of them are inverted, so dark backgrounds like
Fashion-MNIST's occur as often as bright ones.

  tools/experiments/make_other_data.py OUT [--count 1020] [--seed 0] [--invert]
Needs python3-skimage and python3-pil (tools/make_jpeg_fixture.py installs them).
"""
import argparse
import os
import random
import sys


def photographs():
    import numpy as np
    from skimage import data
    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "camera", "coins", "moon", "page", "text", "clock",
             "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left", "horse", "grass", "gravel",
             "brick"]
    photos = []
    for n in names:
        try:
            img = getattr(data, n)()
        except Exception:  # absent in this scikit-image, or needs a download: skip it
            continue
        if isinstance(img, tuple):
            img = img[0]
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 3:
            img = img[:, :, :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        photos.append((n, img.astype(np.float64)))
    hopper = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
    if os.path.exists(hopper):
        from PIL import Image
        photos.append(("grace_hopper", np.asarray(Image.open(hopper).convert("L"), dtype=np.float64)))
    if not photos:
        sys.exit("make_other_data: no sample photographs found (install python3-skimage)")
    return photos


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=1020)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--invert", action="store_true", help="invert every second crop")
    args = ap.parse_args()
    import numpy as np
    from PIL import Image
    photos = photographs()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.count):
        name, img = photos[i % len(photos)]
        h, w = img.shape
        side = max(8, int(min(h, w) * rng.uniform(0.04, 0.6)))
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        crop = Image.fromarray(img[y:y + side, x:x + side].astype(np.float32), mode="F")
        small = np.asarray(crop.resize((28, 28), Image.BOX), dtype=np.float64)
        lo, hi = small.min(), small.max()
        small = (small - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(small)
        if args.invert and i % 2 == 1:
            small = 255.0 - small
        Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8), mode="L").save(
            os.path.join(args.out, f"{i:05d}_{name}.png"))
    print(f"make_other_data: {args.count} crops of 28x28 from {len(photos)} photographs in {args.out}")


if __name__ == "__main__":
    main()
