// CPU optimizer updates: the KD_HD per-element functions of the header over a contiguous tensor,
// elements in parallel (each element's update is independent, so the result does not depend on
// the thread count).
#include "kernels/optim.h"

#include "kernels/check.h"
#include "kernels/reduce_cpu.h"

namespace kd {

void adam_update_cpu(int64_t n, const AdamHyper& h, float weight_decay, float grad_scale, float* w, const float* g,
                     float* m, float* v) {
  KD_CHECK(n >= 0, "adam_update: negative size ", n);
  KD_CHECK(h.step >= 1, "adam_update: step is 1-based, got ", h.step);
  const float bias1 = adam_bias_correction(h.beta1, h.step), bias2 = adam_bias_correction(h.beta2, h.step);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) adam_update_element(h, bias1, bias2, weight_decay, w[i], grad_scale * g[i], m[i], v[i]);
}

void sgd_update_cpu(int64_t n, const SgdHyper& h, float weight_decay, float grad_scale, float* w, const float* g,
                    float* buf) {
  KD_CHECK(n >= 0, "sgd_update: negative size ", n);
  KD_CHECK(h.step >= 1, "sgd_update: step is 1-based, got ", h.step);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) sgd_update_element(h, weight_decay, w[i], grad_scale * g[i], buf[i]);
}

// Deterministic for any thread count: fixed blocks summed in order (sum_rows_cpu), in double.
double sum_squares_cpu(int64_t n, const float* x) {
  KD_CHECK(n >= 0, "sum_squares: negative size ", n);
  double total = 0;
  sum_rows_cpu(
      n, 1,
      [x](int64_t i, double* acc) {
        const double v = double(x[i]);
        acc[0] += v * v;
      },
      &total);
  return total;
}

void scale_cpu(int64_t n, float s, float* x) {
  KD_CHECK(n >= 0, "scale: negative size ", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void accumulate_cpu(int64_t n, const float* src, float* dst) {
  KD_CHECK(n >= 0, "accumulate: negative size ", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace kd
