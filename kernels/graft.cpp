// CPU grafting and update: the KD_HD element functions of graft.h over a contiguous range,
// elements in parallel (independent, so the result does not depend on the thread count).
#include "kernels/graft.h"

#include <cmath>

#include "kernels/check.h"

namespace kd {

template <typename T>
void graft_cpu(int64_t n, const GraftHyper& h, T grad_scale, const T* grad, T* state1, T* state2, T* a, T* filtered) {
  KD_CHECK(n >= 0 && h.step >= 1, "graft: size ", n, ", step ", h.step);
  switch (h.kind) {
    case GraftKind::adam: {
      KD_CHECK(state1 && state2, "graft adam: needs m and v");
      // float: as AdamW (kernels/optim.h), bias corrections in float; double: exact.
      const bool single = sizeof(T) == sizeof(float);
      const T bias1 =
          single ? T(adam_bias_correction(float(h.beta1), h.step)) : T(1.0 - std::pow(h.beta1, double(h.step)));
      const T bias2 =
          single ? T(adam_bias_correction(float(h.beta2), h.step)) : T(1.0 - std::pow(h.beta2, double(h.step)));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        graft_adam_element<T>(T(h.beta1), T(h.beta2), T(h.eps), bias1, bias2, grad_scale * grad[i], state1[i],
                              state2[i], a[i], filtered[i]);
      break;
    }
    case GraftKind::adagrad:
      KD_CHECK(state1, "graft adagrad: needs the sum of squares");
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T g = grad_scale * grad[i];
        graft_adagrad_element<T>(T(h.eps), g, state1[i], a[i]);
        filtered[i] = g;
      }
      break;
    case GraftKind::sgd:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) a[i] = filtered[i] = grad_scale * grad[i];
      break;
  }
}

template <typename T>
void apply_update_cpu(int64_t n, const UpdateHyper& h, const T* d, T* u, T* w) {
  KD_CHECK(n >= 0, "apply_update: negative size ", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    update_element<T>(T(h.lr), T(h.weight_decay), T(h.momentum), h.nesterov, h.first, d[i], u ? u + i : nullptr, w[i]);
}

template void graft_cpu<float>(int64_t, const GraftHyper&, float, const float*, float*, float*, float*, float*);
template void graft_cpu<double>(int64_t, const GraftHyper&, double, const double*, double*, double*, double*, double*);
template void apply_update_cpu<float>(int64_t, const UpdateHyper&, const float*, float*, float*);
template void apply_update_cpu<double>(int64_t, const UpdateHyper&, const double*, double*, double*);

}  // namespace kd
