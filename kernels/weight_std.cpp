// Weight standardisation on the CPU: one row of the [c_out, k] weight matrix per output channel,
// rows in parallel. Statistics are accumulated in double and the variance is taken around the
// mean (two passes), so a row with a large common offset loses no precision.
#include "kernels/weight_std.h"

#include "kernels/check.h"

namespace kd {

namespace {

void check_sizes(int64_t c_out, int64_t k) {
  KD_CHECK(c_out > 0 && k > 0, "weight_std: sizes must be positive, got c_out ", c_out, ", k ", k);
}

}  // namespace

template <typename T>
void weight_std_forward_cpu(int64_t c_out, int64_t k, T eps, const T* w, T* w_hat, T* mean, T* rstd) {
  check_sizes(c_out, k);
  KD_CHECK(eps >= T(0), "weight_std: eps must be non-negative, got ", eps);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < c_out; ++o) {
    const T* row = w + o * k;
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += double(row[i]);
    const double mu = sum / double(k);
    double sq = 0;
    for (int64_t i = 0; i < k; ++i) sq += (double(row[i]) - mu) * (double(row[i]) - mu);
    const T m = T(mu), r = T(norm_rstd(sq / double(k), double(eps)));
    mean[o] = m;
    rstd[o] = r;
    T* out = w_hat + o * k;
    for (int64_t i = 0; i < k; ++i) out[i] = norm_x_hat(row[i], m, r);
  }
}

template <typename T>
void weight_std_backward_cpu(int64_t c_out, int64_t k, const T* w, const T* mean, const T* rstd, const T* dw_hat,
                             T* dw) {
  check_sizes(c_out, k);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < c_out; ++o) {
    const T* row = w + o * k;
    const T* g = dw_hat + o * k;
    const T m = mean[o], r = rstd[o];
    double sum_g = 0, sum_g_w_hat = 0;
    for (int64_t i = 0; i < k; ++i) {
      sum_g += double(g[i]);
      sum_g_w_hat += double(g[i]) * double(norm_x_hat(row[i], m, r));
    }
    const T mean_g = T(sum_g / double(k)), mean_g_w_hat = T(sum_g_w_hat / double(k));
    T* out = dw + o * k;
    for (int64_t i = 0; i < k; ++i) out[i] += norm_input_grad(g[i], norm_x_hat(row[i], m, r), mean_g, mean_g_w_hat, r);
  }
}

#define KD_INSTANTIATE_WEIGHT_STD(T)                                                                    \
  template void weight_std_forward_cpu<T>(int64_t, int64_t, T, const T*, T*, T*, T*);                   \
  template void weight_std_backward_cpu<T>(int64_t, int64_t, const T*, const T*, const T*, const T*, T*);
KD_INSTANTIATE_WEIGHT_STD(float)
KD_INSTANTIATE_WEIGHT_STD(double)

}  // namespace kd
