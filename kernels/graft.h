// The element-wise parts of Shampoo (docs/shampoo.md): the grafted optimizer's step `a` and the
// matrix Shampoo preconditions `G~` from the clipped gradient, then the update of the weights
// from the direction D (SGD momentum, decoupled weight decay). One contiguous range at a time.
// The per-element math lives in KD_HD functions the CUDA kernels share; the CPU versions are
// templated on float and double (a double CPU context is the reference the PyTorch test uses).
//
//   adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  a = m^ / (sqrt(v^) + eps);  G~ = m^
//   adagrad   h = h + g^2;            a = g / (sqrt(h) + eps);                             G~ = g
//   sgd       a = g;                                                                      G~ = g
//   update    u = mu u + D (u = D on the first step), D' = nesterov ? D + mu u : u  (momentum > 0)
//             w = w - lr (D' + wd w)
// g = grad_scale * gradient (the clipping factor). With adam and D = a, the update is bit for bit
// kd's AdamW (kernels/optim.h).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/optim.h"

namespace kd {

enum class GraftKind : uint8_t { adam, adagrad, sgd };

// Hyperparameters in double: the float path rounds each once (as AdamW does), the double path
// (the reference) keeps them exact.
struct GraftHyper {
  GraftKind kind = GraftKind::adam;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t step = 1;  // 1-based (Adam's bias corrections)
};

struct UpdateHyper {
  double lr = 1e-3, weight_decay = 0.0, momentum = 0.0;
  bool nesterov = false;
  bool first = true;  // the first step: the momentum buffer starts at D
};

// sqrt in the element's own precision (an unqualified sqrt(float) may widen to double).
KD_HD float graft_sqrt(float x) { return sqrtf(x); }
KD_HD double graft_sqrt(double x) { return sqrt(x); }

template <typename T>
KD_HD void graft_adam_element(T beta1, T beta2, T eps, T bias1, T bias2, T g, T& m, T& v, T& a, T& filtered) {
  m = beta1 * m + (T(1) - beta1) * g;
  v = beta2 * v + (T(1) - beta2) * g * g;
  const T m_hat = m / bias1, v_hat = v / bias2;
  a = m_hat / (graft_sqrt(v_hat) + eps);
  filtered = m_hat;
}

template <typename T>
KD_HD void graft_adagrad_element(T eps, T g, T& h, T& a) {
  h = h + g * g;
  a = g / (graft_sqrt(h) + eps);
}

template <typename T>
KD_HD void update_element(T lr, T weight_decay, T momentum, bool nesterov, bool first, T d, T* u, T& w) {
  if (u) {
    *u = first ? d : momentum * *u + d;
    d = nesterov ? d + momentum * *u : *u;
  }
  w -= lr * (d + weight_decay * w);
}

// a and filtered [n]; state1 = m (adam) or h (adagrad), state2 = v (adam); unused ones may be null.
template <typename T>
void graft_cpu(int64_t n, const GraftHyper& h, T grad_scale, const T* grad, T* state1, T* state2, T* a, T* filtered);
// u may be null (no momentum).
template <typename T>
void apply_update_cpu(int64_t n, const UpdateHyper& h, const T* d, T* u, T* w);

// CUDA, fp32. apply_update_cuda also writes the bf16 compute copy (w_compute, may be null).
void graft_cuda(const CudaHandles& ch, int64_t n, const GraftHyper& h, float grad_scale, const float* grad,
                float* state1, float* state2, float* a, float* filtered);
void apply_update_cuda(const CudaHandles& ch, int64_t n, const UpdateHyper& h, const float* d, float* u, float* w,
                       bf16* w_compute);

}  // namespace kd
