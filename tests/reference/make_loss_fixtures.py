"""PyTorch reference for kd's losses and optimizers: writes DIR/loss.safetensors.

Everything is computed in float64 from float32 inputs (st.save stores float32), so the file holds
the exact answers to the float32 inputs and the C++ side compares its float path against them.

Tensors (R rows, C classes, K = 3 teachers; teacher logits are [K, R, C]):
  softmax/{x, y}, softmax/log_y
  ce/{logits, labels (i32), loss, loss_rows, dlogits}, ce/*_ls      cross-entropy (mean and per row)
      without and with label smoothing CE_LS (torch's: eps / C on every class), gradient of the mean
  distill/{student, teachers}                                      shared inputs
  distill/<dist>_k<n>_t<T>/{loss, dstudent}                        per-row loss and the gradient of
      the mean over rows, for dist in kl, hard, hardls (label smoothing HARD_LS), l2, euclidean,
      logsoftmax_euclidean and n in 1, 3 (the first n teachers); kl at T = 1 and 4, the others at 1
  distill/top1_k<n> (i32)                                          argmax of the mean softmax
  adamw/{w0, grads [S, N], w, m, v}                                torch.optim.AdamW after S steps
  sgd/{w0, grads [S, N], w, buf}                                   torch.optim.SGD with momentum
      (weight_decay = 0: torch's SGD decay is coupled, kd's decoupled; see below)
Scalars (lr, betas, ...) are in the metadata.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

import st

ROWS, CLASSES, TEACHERS = 12, 37, 3
STEPS, PARAMS = 5, 257
EPSILON = float(np.float32(1e-12))  # kd's DistillLossOptions::epsilon, a float
HARD_LS = float(np.float32(0.1))     # label smoothing of the "hardls" runs
CE_LS = float(np.float32(0.1))       # label smoothing of ce/*_ls


def as_f32(x):
    return float(np.float32(x))


# kd's hyperparameters are floats (0.999f is 0.99899995...), so torch gets the same float32 values:
# the comparison is of the update arithmetic, not of how 0.999 rounds.
ADAM = dict(lr=as_f32(3e-3), betas=(as_f32(0.9), as_f32(0.999)), eps=as_f32(1e-8), weight_decay=as_f32(0.05))
SGD = dict(lr=as_f32(0.05), momentum=as_f32(0.9), nesterov=False, weight_decay=0.0)


def f32(a):
    """Round to float32 (what the file stores), then compute in float64."""
    return torch.from_numpy(np.asarray(a, dtype=np.float32)).double()


def grad_of(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.mean(), x)
    return y.detach(), g


# ---- big_vision's distances (evaluators/proj/distill/distance.py), one teacher ----

def dist_kl(student, teacher_probs, t):
    # t^2 * KL(p_t || softmax(s / t)) per row; with an ensemble, teacher_probs is the mean softmax
    return t * t * F.kl_div(F.log_softmax(student / t, -1), teacher_probs, reduction="none").sum(-1)


def dist_hard(student, pseudo_label):
    return F.cross_entropy(student, pseudo_label, reduction="none")


def dist_l2(student, teacher):
    diff = student - teacher
    return (diff * diff).sum(-1)


def dist_euclidean(student, teacher):
    diff = student - teacher
    return torch.sqrt((diff * diff).sum(-1) + EPSILON)


def dist_hard_smoothed(student, pseudo_label, ls):
    # big_vision: (1 - ls) onehot + ls / (C - 1) elsewhere, then the KL (softmax_xent kl=True)
    onehot = F.one_hot(pseudo_label, student.shape[-1]).double()
    target = (1 - ls) * onehot + ls / (student.shape[-1] - 1) * (1 - onehot)
    return F.kl_div(F.log_softmax(student, -1), target, reduction="none").sum(-1)


def dist_logsoftmax_euclidean(student, teacher):
    diff = F.log_softmax(student, -1) - F.log_softmax(teacher, -1)
    return torch.sqrt((diff * diff).sum(-1) + EPSILON)


def distill_fixtures(rng, out):
    student = f32(rng.normal(0, 2, (ROWS, CLASSES)))
    teachers = f32(rng.normal(0, 2, (TEACHERS, ROWS, CLASSES)))
    out["distill/student"], out["distill/teachers"] = student.numpy(), teachers.numpy()
    for n in (1, 3):
        ts = teachers[:n]
        runs = {}
        for temp in (1.0, 4.0):
            probs = torch.softmax(ts / temp, -1).mean(0)  # ensemble: the mean of the softmaxes
            runs[f"kl_k{n}_t{temp:g}"] = lambda s, p=probs, t=temp: dist_kl(s, p, t)
        top1 = torch.softmax(ts, -1).mean(0).argmax(-1)
        runs[f"hard_k{n}_t1"] = lambda s: dist_hard(s, top1)
        runs[f"hardls_k{n}_t1"] = lambda s: dist_hard_smoothed(s, top1, HARD_LS)
        # ensembles of the other distances: the mean of the per-teacher distances
        runs[f"l2_k{n}_t1"] = lambda s: torch.stack([dist_l2(s, t) for t in ts]).mean(0)
        runs[f"euclidean_k{n}_t1"] = lambda s: torch.stack([dist_euclidean(s, t) for t in ts]).mean(0)
        runs[f"logsoftmax_euclidean_k{n}_t1"] = (
            lambda s: torch.stack([dist_logsoftmax_euclidean(s, t) for t in ts]).mean(0))
        for name, fn in runs.items():
            loss, g = grad_of(fn, student)
            out[f"distill/{name}/loss"], out[f"distill/{name}/dstudent"] = loss.numpy(), g.numpy()
        out[f"distill/top1_k{n}"] = top1.numpy().astype(np.int32)


def softmax_and_ce_fixtures(rng, out):
    x = f32(rng.normal(0, 3, (ROWS, CLASSES)))
    out["softmax/x"] = x.numpy()
    out["softmax/y"] = torch.softmax(x, -1).numpy()
    out["softmax/log_y"] = torch.log_softmax(x, -1).numpy()
    logits = f32(rng.normal(0, 2, (ROWS, CLASSES)))
    labels = torch.from_numpy(rng.integers(0, CLASSES, ROWS))
    out["ce/logits"], out["ce/labels"] = logits.numpy(), labels.numpy().astype(np.int32)
    for suffix, ls in (("", 0.0), ("_ls", CE_LS)):
        lg = logits.clone().requires_grad_(True)
        loss = F.cross_entropy(lg, labels, label_smoothing=ls)  # mean over rows
        (g,) = torch.autograd.grad(loss, lg)
        out[f"ce/loss{suffix}"] = loss.detach().reshape(1).numpy()
        out[f"ce/loss_rows{suffix}"] = F.cross_entropy(logits, labels, label_smoothing=ls, reduction="none").numpy()
        out[f"ce/dlogits{suffix}"] = g.numpy()


def optimizer_fixtures(rng, out):
    grads = f32(rng.normal(0, 1, (STEPS, PARAMS)))
    # AdamW: decoupled decay, w <- w (1 - lr wd) before the Adam step, as kd's optim.h.
    w0 = f32(rng.normal(0, 1, PARAMS))
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([w], **ADAM)
    for s in range(STEPS):
        w.grad = grads[s].clone()
        opt.step()
    state = opt.state[w]
    out.update({"adamw/w0": w0.numpy(), "adamw/grads": grads.numpy(), "adamw/w": w.detach().numpy(),
                "adamw/m": state["exp_avg"].numpy(), "adamw/v": state["exp_avg_sq"].numpy()})
    # SGD: torch adds wd * w to the gradient (coupled, so it also enters the momentum buffer);
    # kd decays outside the momentum. The two agree only at weight_decay = 0, which is compared.
    w0 = f32(rng.normal(0, 1, PARAMS))
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], **SGD)
    for s in range(STEPS):
        w.grad = grads[s].clone()
        opt.step()
    out.update({"sgd/w0": w0.numpy(), "sgd/grads": grads.numpy(), "sgd/w": w.detach().numpy(),
                "sgd/buf": opt.state[w]["momentum_buffer"].numpy()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    rng = np.random.default_rng(20240611)
    out = {}
    softmax_and_ce_fixtures(rng, out)
    distill_fixtures(rng, out)
    optimizer_fixtures(rng, out)
    meta = {"rows": ROWS, "classes": CLASSES, "teachers": TEACHERS, "steps": STEPS, "params": PARAMS,
            "epsilon": EPSILON, "hard_ls": HARD_LS, "ce_ls": CE_LS, "adam_lr": ADAM["lr"], "adam_beta1": ADAM["betas"][0],
            "adam_beta2": ADAM["betas"][1], "adam_eps": ADAM["eps"], "adam_wd": ADAM["weight_decay"],
            "sgd_lr": SGD["lr"], "sgd_momentum": SGD["momentum"], "torch": torch.__version__}
    os.makedirs(args.out, exist_ok=True)
    st.save(os.path.join(args.out, "loss.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to {os.path.join(args.out, 'loss.safetensors')}")


if __name__ == "__main__":
    main()
