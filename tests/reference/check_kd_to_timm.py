"""kd's own model files load in timm: for each architecture, `kd train` runs a few steps on a
small synthetic image folder (so BatchNorm statistics move), the model.safetensors it writes is
loaded into timm.create_model(arch) with load_state_dict(strict=True), and kd forward's logits on
random images equal timm's (1e-4 relative, kd in float32 on the CPU).
Usage: check_kd_to_timm.py KD_BINARY WORK_DIR"""
import os
import subprocess
import sys

import numpy as np
import timm
import torch
from PIL import Image

import st

ARCHS = [("resnet18", "resnet18"), ("resnetv2_50x1_bit", "resnetv2_50x1_bit"),
         ("mobilenetv3_small_100", "mobilenetv3_small_100")]


def main():
    kd, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(0)
    for c in range(3):  # 3 classes x 4 images of 40x40
        os.makedirs(os.path.join(work, "data", f"class{c}"), exist_ok=True)
        for i in range(4):
            px = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(px).save(os.path.join(work, "data", f"class{c}", f"{i}.png"))
    images = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    st.save(os.path.join(work, "images.safetensors"), {"images": images})
    worst = 0.0
    for arch, timm_name in ARCHS:
        run = subprocess.run([kd, "train", f"model.arch={arch}", "run.device=cpu", "run.steps=3", "run.log_every=1",
                              f"run.out_dir={work}/runs", f"run.name={arch}", "data.kind=image_folder",
                              f"data.train={work}/data", f"data.test={work}/data", "data.batch_size=6",
                              "augment.resolution=32", "eval.batch_size=12"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        weights = os.path.join(work, "runs", arch, "model.safetensors")
        out = os.path.join(work, arch + "_logits.safetensors")
        run = subprocess.run([kd, "forward", "--arch", arch, "--num-classes", "3", "--weights", weights, "--input",
                              os.path.join(work, "images.safetensors"), "--output", out, "--device", "cpu"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        kd_logits = st.load(out)["logits"]
        model = timm.create_model(timm_name, pretrained=False, num_classes=3)
        state = {k: torch.from_numpy(np.array(v)) for k, v in st.load(weights).items()}
        missing, unexpected = model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        err = float(np.linalg.norm(kd_logits - ref) / np.linalg.norm(ref))
        worst = max(worst, err)
        print(f"{arch}: kd's model.safetensors loads in timm (strict); logits relative L2 {err:.2e}")
        assert err < 1e-4, (arch, err)
    print(f"all {len(ARCHS)} architectures: worst {worst:.2e}")


if __name__ == "__main__":
    main()
