"""Float64 PyTorch reference of kd's Shampoo optimizer, written from docs/shampoo.md (the
specification), and a plain AdamW step (kernels/optim.h's formula) to compare it with.

Parameters are given by name as float64 tensors: 2-D tensors are matrix views [rows, cols]
(preconditioned, block by block), 1-D tensors have no view (grafted optimizer alone).

    opt = ReferenceShampoo(params, decay, config)   # params: {name: tensor}, decay: {name: bool}
    opt.step(grads)                                 # grads: {name: tensor}; updates params in place

Config keys (all required, see DEFAULTS for an example): lr, weight_decay, clip_norm (<= 0: off),
beta1, beta2, eps (Adam / AdaGrad grafting), momentum, nesterov (SGD grafting only), graft
("adam" | "adagrad" | "sgd"), block_size, shampoo_beta2, shampoo_eps (relative damping),
statistics_every, precondition_every, start_step, root_delay, p (root order).
"""
import math

import torch

LAMBDA_FLOOR = 1e-16  # floor on lambda_max in the damping (kernels/shampoo.h)

DEFAULTS = dict(lr=1e-3, weight_decay=0.0, clip_norm=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
                momentum=0.9, nesterov=False, graft="adam", block_size=1024, shampoo_beta2=0.999,
                shampoo_eps=1e-4, statistics_every=1, precondition_every=20, start_step=25,
                root_delay=1, p=4)


def blocks(rows, cols, block_size):
    """The block grid of a [rows, cols] view in row-major grid order: (row0, col0, nrows, ncols);
    the last block row / column holds the remainder."""
    return [(r0, c0, min(block_size, rows - r0), min(block_size, cols - c0))
            for r0 in range(0, rows, block_size) for c0 in range(0, cols, block_size)]


def damped_root(a, p, eps, floor=LAMBDA_FLOOR):
    """X = (A + d I)^(-1/p) with d = eps * max(lambda_max, floor), by eigh of the symmetrized A
    (eigenvalues below 0, rounding, taken as 0). Returns (X, d)."""
    lam, q = torch.linalg.eigh(0.5 * (a + a.T))
    lam = lam.clamp(min=0)
    d = eps * max(lam.max().item(), floor)
    return (q * (lam + d).pow(-1.0 / p)) @ q.T, d


def clip_scale(grads, clip_norm):
    """(s, norm): the global gradient norm over all parameters (float64) and the clip factor."""
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    s = clip_norm / norm if 0 < clip_norm < norm else 1.0
    return s, norm


def frob(x):
    return float(torch.linalg.norm(x))


class _Block:
    """One block's Shampoo state: statistics, installed roots (None until the first one), the
    roots waiting for their install step, and the last computed root of each side (for checks)."""

    def __init__(self, r0, c0, r, c):
        self.rows, self.cols = slice(r0, r0 + r), slice(c0, c0 + c)
        self.L = torch.zeros(r, r, dtype=torch.float64)
        self.R = torch.zeros(c, c, dtype=torch.float64)
        self.Linv = self.Rinv = None
        self.pending = []      # [(install_step, side, X)], side "L" or "R"
        self.last_root = {}    # side -> (A, d, X) of the latest root computation


class ReferenceShampoo:
    def __init__(self, params, decay, config):
        self.params = params
        self.decay = decay
        self.cfg = dict(config)
        missing = set(DEFAULTS) - set(self.cfg)
        assert not missing, f"config lacks {sorted(missing)}"
        assert self.cfg["graft"] in ("adam", "adagrad", "sgd"), self.cfg["graft"]
        self.t = 0  # steps done; step t (1-based) is the (t)-th call that did not skip
        self.state = {n: {} for n in params}
        self.blocks = {}
        for n, w in params.items():
            assert w.dtype == torch.float64 and w.dim() in (1, 2), (n, w.dtype, w.shape)
            if w.dim() == 2:
                self.blocks[n] = [_Block(*b) for b in blocks(*w.shape, self.cfg["block_size"])]
        # Per step, for the checks: {name: [(||D||, ||a||, preconditioned)]} per block
        self.last_block_norms = {}
        self.last_grad_norm = self.last_clip_scale = None
        self.roots_rejected = 0

    # -- grafting: returns (a, G~) for the clipped gradient g of parameter n at step t --
    def _graft(self, n, g, t):
        c, st = self.cfg, self.state[n]
        if c["graft"] == "adam":
            m = st.setdefault("m", torch.zeros_like(g))
            v = st.setdefault("v", torch.zeros_like(g))
            m.mul_(c["beta1"]).add_((1 - c["beta1"]) * g)
            v.mul_(c["beta2"]).add_((1 - c["beta2"]) * g * g)
            m_hat = m / (1 - c["beta1"] ** t)
            v_hat = v / (1 - c["beta2"] ** t)
            return m_hat / (v_hat.sqrt() + c["eps"]), m_hat
        if c["graft"] == "adagrad":
            h = st.setdefault("h", torch.zeros_like(g))
            h.add_(g * g)
            return g / (h.sqrt() + c["eps"]), g
        return g, g  # sgd

    # -- statistics, roots and the preconditioned direction of one matrix parameter --
    def _matrix_direction(self, n, g, a, gt, t):
        c = self.cfg
        b2 = c["shampoo_beta2"]
        w = 1.0 if b2 == 1.0 else 1.0 - b2
        D = torch.empty_like(a)
        norms = []
        for blk in self.blocks[n]:
            G = g[blk.rows, blk.cols]
            if t % c["statistics_every"] == 0:
                blk.L = b2 * blk.L + w * (G @ G.T)
                blk.R = b2 * blk.R + w * (G.T @ G)
            if t % c["precondition_every"] == 0:
                for side, A in (("L", blk.L), ("R", blk.R)):
                    X, d = damped_root(A, c["p"], c["shampoo_eps"])
                    blk.last_root[side] = (A.clone(), d, X)
                    if torch.isfinite(X).all():
                        blk.pending.append((t + c["root_delay"], side, X))
                    else:
                        self.roots_rejected += 1  # the previous root stays
            # Install every root whose step has come (delay 0: the one just computed). Nothing
            # before this point of the step reads the roots, so this is "the start of the step".
            due = [e for e in blk.pending if e[0] <= t]
            blk.pending = [e for e in blk.pending if e[0] > t]
            for _, side, X in due:  # in computation order, so a later root wins
                setattr(blk, side + "inv", X)
            a_blk = a[blk.rows, blk.cols]
            use = t >= c["start_step"] and blk.Linv is not None and blk.Rinv is not None
            if use:
                P = blk.Linv @ gt[blk.rows, blk.cols] @ blk.Rinv
                p_norm = frob(P)
                # Shampoo's direction with the grafted step's Frobenius norm (0 when P = 0)
                P = P * (frob(a_blk) / p_norm) if p_norm > 0 else torch.zeros_like(P)
            else:
                P = a_blk
            D[blk.rows, blk.cols] = P
            norms.append((frob(P), frob(a_blk), use))
        self.last_block_norms[n] = norms
        return D

    def step(self, grads, lr=None):
        """One optimizer step; lr overrides config lr (a schedule). Returns False (and changes
        nothing, the step counter included) when the gradient norm is not finite."""
        c = self.cfg
        lr = c["lr"] if lr is None else lr
        s, norm = clip_scale(grads, c["clip_norm"])
        self.last_grad_norm, self.last_clip_scale = norm, s
        if not math.isfinite(norm):
            return False
        self.t += 1
        t = self.t
        self.last_block_norms = {}
        for n, w in self.params.items():
            g = s * grads[n].double()
            a, gt = self._graft(n, g, t)
            D = self._matrix_direction(n, g, a, gt, t) if n in self.blocks else a
            if c["graft"] == "sgd":  # momentum: u = mu u + D (u = D at t = 1)
                st = self.state[n]
                st["u"] = D.clone() if t == 1 else c["momentum"] * st["u"] + D
                D = D + c["momentum"] * st["u"] if c["nesterov"] else st["u"]
            if self.decay[n]:
                w.sub_(lr * (D + c["weight_decay"] * w))
            else:
                w.sub_(lr * D)
        return True


class ReferenceAdamW:
    """kd's AdamW (kernels/optim.h) in float64 with the same global-norm clipping:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    w -= lr ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd w)   (wd only where decay)."""

    def __init__(self, params, decay, config):
        self.params, self.decay, self.cfg = params, decay, dict(config)
        self.m = {n: torch.zeros_like(w) for n, w in params.items()}
        self.v = {n: torch.zeros_like(w) for n, w in params.items()}
        self.t = 0

    def step(self, grads, lr=None):
        c = self.cfg
        lr = c["lr"] if lr is None else lr
        s, norm = clip_scale(grads, c["clip_norm"])
        if not math.isfinite(norm):
            return False
        self.t += 1
        b1, b2, t = c["beta1"], c["beta2"], self.t
        for n, w in self.params.items():
            g = s * grads[n].double()
            m, v = self.m[n], self.v[n]
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            step = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + c["eps"])
            wd = c["weight_decay"] if self.decay[n] else 0.0
            w.sub_(lr * (step + wd * w))
        return True
