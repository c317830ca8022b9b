// Per-element math shared by every "subtract the mean, divide by the standard deviation" op:
// GroupNorm, BatchNorm and weight standardisation, on the CPU and in the CUDA kernels.
//
// Forward, over a set S of m values with mean mu and biased variance var:
//   x_hat = (x - mu) * rstd,  rstd = 1 / sqrt(var + eps),   y = gamma * x_hat + beta  [, relu]
// Backward, with g = dL/dx_hat for every value of S (for an affine norm g = gamma * dL/dy):
//   dL/dx = rstd * (g - mean_S(g) - x_hat * mean_S(g * x_hat))
// (the two means are the gradient flowing through mu and through rstd; S's size is folded in).
#pragma once
#include <cmath>

#include "kernels/common.h"

namespace kd {

template <typename T>
KD_HD T norm_x_hat(T x, T mean, T rstd) {
  return (x - mean) * rstd;
}

// gamma * x_hat + beta, before any activation. The forward pass and the backward pass's
// recomputed ReLU mask both call this, so they agree bit for bit on which outputs were > 0.
template <typename T>
KD_HD T norm_affine(T x, T mean, T rstd, T gamma, T beta) {
  return gamma * norm_x_hat(x, mean, rstd) + beta;
}

// With the fused ReLU, a NaN stays NaN (as torch.relu), so a diverging run shows in the loss.
template <typename T>
KD_HD T norm_affine_act(T x, T mean, T rstd, T gamma, T beta, bool relu) {
  const T y = norm_affine(x, mean, rstd, gamma, beta);
  return relu && y < T(0) ? T(0) : y;
}

// dL/d(gamma * x_hat + beta): dy where the output was > 0 (or no ReLU), else zero, as PyTorch's
// threshold_backward.
template <typename T>
KD_HD T norm_upstream_grad(T dy, T x, T mean, T rstd, T gamma, T beta, bool relu) {
  return relu && !(norm_affine(x, mean, rstd, gamma, beta) > T(0)) ? T(0) : dy;
}

// dL/dx from g = dL/dx_hat and the set's means of g and g * x_hat (see the top of the file).
template <typename T>
KD_HD T norm_input_grad(T g, T x_hat, T mean_g, T mean_g_x_hat, T rstd) {
  return rstd * (g - mean_g - x_hat * mean_g_x_hat);
}

// 1 / sqrt(var + eps), computed in double whatever T is (statistics are accumulated in double).
KD_HD double norm_rstd(double var, double eps) { return 1.0 / sqrt(var + eps); }

}  // namespace kd
