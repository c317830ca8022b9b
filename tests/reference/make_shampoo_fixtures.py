"""PyTorch reference for Shampoo's damped inverse p-th root: writes DIR/shampoo.safetensors.

Each case holds a symmetric PSD matrix and its damped root, both float64 (stored as F64):
  X = (A + d I)^(-1/p),  d = eps * max(lambda_max(A), floor)
computed with torch.linalg.eigh in float64 (eigenvalues below 0 taken as 0), the definition in
kernels/shampoo.h. The C++ side (tests/parity/shampoo_parity_test.cpp) runs
inverse_root_eigen_cpu on the same matrices.

Tensors, per case <name>:
  shampoo/<name>/a        [n, n] float64
  shampoo/<name>/x        [n, n] float64, the root
  shampoo/<name>/params   [3] float64: p, eps, floor
"""
import argparse
import os

import numpy as np
import torch

import st

FLOOR = 1e-16  # kernels/shampoo.h's InverseRootConfig::lambda_floor

gen = torch.Generator().manual_seed(20240917)


def damped_root(a, p, eps, floor=FLOOR):
    w, v = torch.linalg.eigh(0.5 * (a + a.T))
    w = w.clamp(min=0)
    d = eps * max(w.max().item(), floor)
    return (v * (w + d).pow(-1.0 / p)) @ v.T


def spd(n, cond, top):
    """Q diag(top * cond^(-k/(n-1))) Q^T with a random orthogonal Q."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = top * torch.logspace(0, -np.log10(cond), n, dtype=torch.float64)
    return (q * lam) @ q.T


def gram(n, rank):
    g = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    return g @ g.T


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # name: (matrix, p, eps)
    cases = {
        "spd16_cond1e3_p4": (spd(16, 1e3, 2.0), 4, 1e-6),
        "spd12_cond1e5_p2": (spd(12, 1e5, 0.3), 2, 1e-8),
        "spd20_cond1e2_p3": (spd(20, 1e2, 7.0), 3, 1e-6),
        "rank6_of_24_p4": (gram(24, 6), 4, 1e-4),
        "one_p4": (torch.tensor([[2.5]], dtype=torch.float64), 4, 1e-6),
        "zero8_p4": (torch.zeros(8, 8, dtype=torch.float64), 4, 1e-6),
    }
    out = {}
    for name, (a, p, eps) in cases.items():
        prefix = f"shampoo/{name}/"
        out[prefix + "a"] = a.numpy()
        out[prefix + "x"] = damped_root(a, p, eps).numpy()
        out[prefix + "params"] = np.array([p, eps, FLOOR], dtype=np.float64)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "shampoo.safetensors")
    st.save(path, out, metadata={"torch": torch.__version__}, keep_float64=True)
    print(f"wrote {len(out)} tensors to {path}")


if __name__ == "__main__":
    main()
