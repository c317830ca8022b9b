"""PyTorch reference trajectories of kd's Shampoo optimizer: writes DIR/shampoo_optim.safetensors.

A small deterministic problem, a quadratic per parameter, run for STEPS steps by the float64
reference (shampoo_reference.py, the algorithm of docs/shampoo.md), once per grafting type. The
C++ test (f64 CPU context) rebuilds the gradients from the stored problem, runs kd's Shampoo with
the stored config and compares the parameters after every step (relative tolerance ~1e-9).

Parameters (float64, stored as F64; 2-D ones are matrix views, row-major):
  conv  [12, 18]  decay     (the view [c_out, kh*kw*c_in] of an OHWI [12, 3, 3, 2] kernel)
  dense [7, 12]   decay
  bias  [7]       no decay
  scale [12]      no decay
Gradients: grad(W) = A @ W @ B + C for a matrix W (A rows x rows, B cols x cols, both symmetric
positive definite), grad(w) = a * w + c elementwise for a vector w. Matrix products in float64.

Tensors:
  problem/<param>/init                 initial value (shape of the parameter)
  problem/<param>/A, /B, /C            matrices: A [rows, rows], B [cols, cols], C [rows, cols]
  problem/<param>/a, /c                vectors: a [n], c [n]
  optim/<case>/step_<k>/<param>        parameter after step k = 1..STEPS (k not zero-padded)
  optim/<case>/grad_norm               [STEPS] global norm of the raw gradient at each step
  optim/<case>/clip_scale              [STEPS] s of each step (1 when not clipped)
  adamw/step_<k>/<param>               plain AdamW (same config) after step k = 1..ADAMW_STEPS;
                                       equals optim/adam/step_<k> since ADAMW_STEPS < start_step
<case> is adam, adagrad, sgd: the config's graft.
Metadata (JSON strings): cases (list), params (list of {name, shape, decay} in the order the
reference visits them), steps, adamw_steps, config/<case> (the config dict, keys as in
shampoo_reference.py), problem (the gradient formulas), torch (version).
"""
import argparse
import json
import os

import numpy as np
import torch

import st
from shampoo_reference import ReferenceAdamW, ReferenceShampoo, blocks

STEPS = 30
ADAMW_STEPS = 6
SEED = 20241125
PARAMS = [("conv", (12, 18), True), ("dense", (7, 12), True), ("bias", (7,), False),
          ("scale", (12,), False)]
BASE = dict(lr=0.05, weight_decay=0.01, clip_norm=5.0, beta1=0.9, beta2=0.999, eps=1e-8,
            momentum=0.9, nesterov=True, block_size=8, shampoo_beta2=0.99, shampoo_eps=1e-3,
            statistics_every=1, precondition_every=5, start_step=7, root_delay=1, p=4)
CASES = ["adam", "adagrad", "sgd"]


def spd(n):
    """Q diag(U[0.5, 2]) Q^T with a random orthogonal Q (symmetric by construction)."""
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    lam = 0.5 + 1.5 * torch.rand(n, dtype=torch.float64)
    a = (q * lam) @ q.T
    return 0.5 * (a + a.T)


def make_problem():
    torch.manual_seed(SEED)
    prob = {}
    for name, shape, _ in PARAMS:
        e = {"init": 0.5 * torch.randn(*shape, dtype=torch.float64)}
        if len(shape) == 2:
            e["A"], e["B"] = spd(shape[0]), spd(shape[1])
            e["C"] = torch.randn(*shape, dtype=torch.float64)
        else:
            e["a"] = 0.5 + 1.5 * torch.rand(*shape, dtype=torch.float64)
            e["c"] = torch.randn(*shape, dtype=torch.float64)
        prob[name] = e
    return prob


def gradients(prob, params):
    return {n: prob[n]["A"] @ w @ prob[n]["B"] + prob[n]["C"] if w.dim() == 2
            else prob[n]["a"] * w + prob[n]["c"] for n, w in params.items()}


def loss(prob, params):
    """The quadratic whose gradient gradients() is: 0.5 <W, A W B> + <C, W> (a, c alike)."""
    total = 0.0
    for n, w in params.items():
        e = prob[n]
        if w.dim() == 2:
            total += float(0.5 * (w * (e["A"] @ w @ e["B"])).sum() + (e["C"] * w).sum())
        else:
            total += float(0.5 * (e["a"] * w * w).sum() + (e["c"] * w).sum())
    return total


def fresh(prob):
    return {n: prob[n]["init"].clone() for n, _, _ in PARAMS}


DECAY = {n: d for n, _, d in PARAMS}


def run(prob, cfg, steps, check=False):
    """Runs the reference; returns (trajectory [{name: array}], grad norms, clip scales)."""
    params = fresh(prob)
    opt = ReferenceShampoo(params, DECAY, cfg)
    traj, norms, scales = [], [], []
    for _ in range(steps):
        assert opt.step(gradients(prob, params))
        norms.append(opt.last_grad_norm)
        scales.append(opt.last_clip_scale)
        traj.append({n: w.clone() for n, w in params.items()})
        if check:
            check_step(opt)
    return traj, np.array(norms), np.array(scales)


def check_step(opt):
    """The grafted direction has the grafted step's norm per block, Shampoo takes over from
    start_step (precondition_every < start_step here), and every root just computed satisfies
    X^p (A + d I) = I."""
    c, t = opt.cfg, opt.t
    for n, norms in opt.last_block_norms.items():
        for d_norm, a_norm, used in norms:
            assert abs(d_norm - a_norm) <= 1e-12 * max(a_norm, 1e-300), (n, t, d_norm, a_norm)
            assert used == (t >= c["start_step"]), (n, t, used)
    if t % c["precondition_every"] == 0:
        for blks in opt.blocks.values():
            for blk in blks:
                for A, d, X in blk.last_root.values():
                    eye = torch.eye(A.shape[0], dtype=torch.float64)
                    err = (torch.linalg.matrix_power(X, c["p"]) @ (A + d * eye) - eye).abs().max()
                    assert err <= 1e-9, (t, A.shape, float(err))


def self_checks(prob):
    # Blocks cover every element exactly once (remainders in the last block row / column).
    for rows, cols, bs in [(12, 18, 8), (7, 12, 8), (8, 8, 8), (1, 1, 8), (17, 5, 4), (3, 30, 7)]:
        count = torch.zeros(rows, cols, dtype=torch.int64)
        for r0, c0, r, c in blocks(rows, cols, bs):
            assert 0 < r <= bs and 0 < c <= bs
            count[r0:r0 + r, c0:c0 + c] += 1
        assert (count == 1).all(), (rows, cols, bs)
    # With start_step beyond the run, Shampoo with Adam grafting is AdamW exactly.
    cfg = dict(BASE, graft="adam", start_step=STEPS + 1)
    traj, _, _ = run(prob, cfg, STEPS)
    params = fresh(prob)
    adamw = ReferenceAdamW(params, DECAY, cfg)
    for k in range(STEPS):
        adamw.step(gradients(prob, params))
        for n, w in params.items():
            assert (w - traj[k][n]).abs().max() <= 1e-15, (k + 1, n)
    # The step counter does not advance on a non-finite gradient, and nothing changes.
    params = fresh(prob)
    opt = ReferenceShampoo(params, DECAY, dict(BASE, graft="adam"))
    bad = gradients(prob, params)
    bad["bias"] = bad["bias"].clone()
    bad["bias"][0] = float("nan")
    assert not opt.step(bad) and opt.t == 0
    assert all((params[n] == prob[n]["init"]).all() for n in params)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prob = make_problem()
    self_checks(prob)

    out, meta = {}, {}
    for n, e in prob.items():
        for k, v in e.items():
            out[f"problem/{n}/{k}"] = v.numpy()
    print(f"initial loss {loss(prob, fresh(prob)):.6f}")
    for case in CASES:
        cfg = dict(BASE, graft=case)
        traj, norms, scales = run(prob, cfg, STEPS, check=True)
        for k, params in enumerate(traj, start=1):
            for n, w in params.items():
                out[f"optim/{case}/step_{k}/{n}"] = w.numpy()
        out[f"optim/{case}/grad_norm"] = norms
        out[f"optim/{case}/clip_scale"] = scales
        meta[f"config/{case}"] = json.dumps(cfg, sort_keys=True)
        clipped = int((scales < 1).sum())
        assert clipped >= 3, f"{case}: clipping active on only {clipped} steps"
        final = traj[-1]
        gnorm = float(np.sqrt(sum((g.numpy() ** 2).sum() for g in gradients(prob, final).values())))
        print(f"{case:8s} clipped {clipped:2d}/{STEPS} steps (first unclipped: "
              f"{next((k + 1 for k in range(STEPS) if scales[k] == 1), None)}), "
              f"grad norm {norms[0]:.4f} -> {gnorm:.4f}, final loss {loss(prob, final):.6f}")

    # Plain AdamW: identical to Shampoo(adam) before start_step, different at start_step (Shampoo's
    # direction takes over). The first ADAMW_STEPS are stored.
    cfg = dict(BASE, graft="adam")
    assert ADAMW_STEPS < cfg["start_step"] <= STEPS
    params = fresh(prob)
    adamw = ReferenceAdamW(params, DECAY, cfg)
    for k in range(1, cfg["start_step"] + 1):
        adamw.step(gradients(prob, params))
        diff = max(np.abs(w.numpy() - out[f"optim/adam/step_{k}/{n}"]).max() for n, w in params.items())
        assert diff <= 1e-15 if k < cfg["start_step"] else diff > 1e-6, (k, diff)
        for n, w in params.items():
            if k <= ADAMW_STEPS:
                out[f"adamw/step_{k}/{n}"] = w.numpy().copy()

    meta.update(cases=json.dumps(CASES), steps=str(STEPS), adamw_steps=str(ADAMW_STEPS),
                params=json.dumps([{"name": n, "shape": list(s), "decay": d} for n, s, d in PARAMS]),
                problem="matrix: grad = A @ W @ B + C; vector: grad = a * w + c", torch=torch.__version__)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "shampoo_optim.safetensors")
    st.save(path, out, metadata=meta, keep_float64=True)
    print(f"wrote {len(out)} tensors ({os.path.getsize(path) / 1024:.0f} KiB) to {path}")


if __name__ == "__main__":
    main()
