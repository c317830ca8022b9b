#!/usr/bin/python3
"""ImageNet-like JPEGs from real photographs, for `kd bench-decode` (not for the tests).

Noise-like synthetic images decode very differently from photos, so the fixture is made of the
photographs that ship in Debian packages: scikit-image's sample images (python3-skimage) and
matplotlib's grace_hopper.jpg. Each output is a random crop (60-100% of the area) of one of them,
resized to a short side of 333-500 px (ImageNet's typical 500x375 and its range), flipped at
random and re-encoded at quality 75-95 with 4:2:0 chroma, as most ImageNet JPEGs are.

Usage (as root the first time: it installs python3-skimage and python3-pil with apt-get):
    tools/make_jpeg_fixture.py OUT_DIR [--count 500] [--seed 0]
"""
import argparse
import os
import random
import subprocess
import sys


def ensure_packages():
    try:
        import PIL  # noqa: F401
        import skimage  # noqa: F401
    except ImportError:
        print("make_jpeg_fixture: installing python3-skimage python3-pil (apt-get)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-skimage",
                        "python3-pil"], check=True, stdout=subprocess.DEVNULL)


def photographs():
    import numpy as np
    from PIL import Image
    from skimage import data
    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
             "retina", "motorcycle_left", "motorcycle_right"]
    photos = []
    for n in names:
        try:
            img = getattr(data, n)()
        except Exception:  # some need pooch downloads in newer versions; skip what is absent
            continue
        if isinstance(img, tuple):
            img = img[0]
        if img.ndim == 3 and img.shape[2] >= 3:
            photos.append(Image.fromarray(np.ascontiguousarray(img[:, :, :3])))
    hopper = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
    if os.path.exists(hopper):
        photos.append(Image.open(hopper).convert("RGB"))
    if not photos:
        sys.exit("make_jpeg_fixture: no sample photographs found")
    return photos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ensure_packages()
    from PIL import Image
    photos = photographs()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for i in range(args.count):
        src = photos[i % len(photos)]
        w, h = src.size
        frac = rng.uniform(0.6, 1.0) ** 0.5
        cw, ch = int(w * frac), int(h * frac)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = src.crop((x, y, x + cw, y + ch))
        short = rng.randint(333, 500)
        s = short / min(cw, ch)
        img = img.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = os.path.join(args.out, f"{i:06d}.jpg")
        img.save(path, quality=rng.randint(75, 95), subsampling=2)
        total += os.path.getsize(path)
    print(f"make_jpeg_fixture: {args.count} JPEGs from {len(photos)} photographs in {args.out}, "
          f"{total / args.count / 1e3:.0f} KB each")


if __name__ == "__main__":
    main()
