// BatchNorm on the CPU over a [rows, c] matrix (NHWC activations with n*h*w rows). Per-channel
// statistics are column sums, taken with sum_rows_cpu: blocks of rows in parallel, sums in
// double, added in a fixed order. The variance is a second pass around the mean (no
// cancellation). Writing y and dx is a parallel sweep over rows.
#include "kernels/batchnorm.h"

#include <vector>

#include "kernels/check.h"
#include "kernels/reduce_cpu.h"

namespace kd {

namespace {

void check_sizes(const BatchNormShape& s, int64_t min_rows) {
  KD_CHECK(s.c > 0 && s.rows >= min_rows, "batchnorm: need c > 0 and at least ", min_rows, " rows, got rows ",
           s.rows, ", c ", s.c, min_rows > 1 ? " (training statistics need more than one value per channel)" : "");
}

// y[r, ch] = gamma * (x - mean) * rstd + beta with per-channel mean and rstd.
template <typename T>
void normalize_rows(const BatchNormShape& s, const T* x, const T* mean, const T* rstd, const T* gamma, const T* beta,
                    T* y) {
  const int64_t c = s.c;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch)
      y[r * c + ch] = norm_affine(x[r * c + ch], mean[ch], rstd[ch], gamma[ch], beta[ch]);
}

}  // namespace

template <typename T>
void batchnorm_forward_train_cpu(const BatchNormShape& s, T eps, T momentum, const T* x, const T* gamma, const T* beta,
                                 T* y, T* mean, T* rstd, T* running_mean, T* running_var) {
  check_sizes(s, 2);
  KD_CHECK(eps >= T(0), "batchnorm: eps must be non-negative, got ", eps);
  KD_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "batchnorm: running mean and running variance must be given together");
  const int64_t c = s.c;
  std::vector<double> mu(static_cast<size_t>(c)), sq(static_cast<size_t>(c));
  sum_rows_cpu(
      s.rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) acc[ch] += double(x[r * c + ch]);
      },
      mu.data());
  for (double& m : mu) m /= double(s.rows);
  sum_rows_cpu(
      s.rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const double d = double(x[r * c + ch]) - mu[size_t(ch)];
          acc[ch] += d * d;
        }
      },
      sq.data());
  const double m = double(momentum), unbias = double(s.rows) / double(s.rows - 1);
  for (int64_t ch = 0; ch < c; ++ch) {
    const double var = sq[size_t(ch)] / double(s.rows);
    mean[ch] = T(mu[size_t(ch)]);
    rstd[ch] = T(norm_rstd(var, double(eps)));
    if (running_mean) {
      running_mean[ch] = T((1 - m) * double(running_mean[ch]) + m * mu[size_t(ch)]);
      running_var[ch] = T((1 - m) * double(running_var[ch]) + m * var * unbias);
    }
  }
  normalize_rows(s, x, mean, rstd, gamma, beta, y);
}

template <typename T>
void batchnorm_forward_eval_cpu(const BatchNormShape& s, T eps, const T* x, const T* gamma, const T* beta,
                                const T* running_mean, const T* running_var, T* y) {
  check_sizes(s, 1);
  KD_CHECK(eps >= T(0), "batchnorm: eps must be non-negative, got ", eps);
  std::vector<T> rstd(size_t(s.c));
  for (int64_t ch = 0; ch < s.c; ++ch) {
    KD_CHECK(double(running_var[ch]) + double(eps) > 0, "batchnorm: running variance of channel ", ch, " is ",
             running_var[ch], " (eps ", eps, ")");
    rstd[size_t(ch)] = T(norm_rstd(double(running_var[ch]), double(eps)));
  }
  normalize_rows(s, x, running_mean, rstd.data(), gamma, beta, y);
}

template <typename T>
void batchnorm_backward_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* mean, const T* rstd,
                            const T* dy, T* dx, T* dgamma, T* dbeta) {
  check_sizes(s, 2);
  const int64_t c = s.c;
  // sums[ch] = sum dy, sums[c + ch] = sum dy * x_hat (= dbeta, dgamma of this batch).
  std::vector<double> sums(size_t(2 * c));
  sum_rows_cpu(
      s.rows, 2 * c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const double g = double(dy[r * c + ch]);
          acc[ch] += g;
          acc[c + ch] += g * double(norm_x_hat(x[r * c + ch], mean[ch], rstd[ch]));
        }
      },
      sums.data());
  // Means over the batch of dL/dx_hat = gamma * dy and of dL/dx_hat * x_hat.
  std::vector<T> mean_dxh(static_cast<size_t>(c)), mean_dxh_xh(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    dbeta[ch] += T(sums[size_t(ch)]);
    dgamma[ch] += T(sums[size_t(c + ch)]);
    mean_dxh[size_t(ch)] = T(double(gamma[ch]) * sums[size_t(ch)] / double(s.rows));
    mean_dxh_xh[size_t(ch)] = T(double(gamma[ch]) * sums[size_t(c + ch)] / double(s.rows));
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t i = r * c + ch;
      dx[i] = norm_affine_input_grad(dy[i], gamma[ch], norm_x_hat(x[i], mean[ch], rstd[ch]), mean_dxh[size_t(ch)],
                                     mean_dxh_xh[size_t(ch)], rstd[ch]);
    }
}

#define KD_INSTANTIATE_BATCHNORM(T)                                                                             \
  template void batchnorm_forward_train_cpu<T>(const BatchNormShape&, T, T, const T*, const T*, const T*, T*, T*, \
                                               T*, T*, T*);                                                     \
  template void batchnorm_forward_eval_cpu<T>(const BatchNormShape&, T, const T*, const T*, const T*, const T*,   \
                                              const T*, T*);                                                    \
  template void batchnorm_backward_cpu<T>(const BatchNormShape&, const T*, const T*, const T*, const T*, const T*, \
                                          T*, T*, T*);
KD_INSTANTIATE_BATCHNORM(float)
KD_INSTANTIATE_BATCHNORM(double)

}  // namespace kd
