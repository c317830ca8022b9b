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

}  // namespace

template <typename T>
void batchnorm_moments_cpu(const BatchNormShape& s, const T* x, double* moments) {
  check_sizes(s, 1);
  const int64_t c = s.c;
  double* mean = moments + 1;
  double* m2 = moments + 1 + c;
  sum_rows_cpu(
      s.rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) acc[ch] += double(x[r * c + ch]);
      },
      mean);
  for (int64_t ch = 0; ch < c; ++ch) mean[ch] /= double(s.rows);
  sum_rows_cpu(
      s.rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const double d = double(x[r * c + ch]) - mean[ch];
          acc[ch] += d * d;
        }
      },
      m2);
  moments[0] = double(s.rows);
}

template <typename T>
void batchnorm_finish_moments_cpu(int64_t c, int64_t ranks, const double* gathered, T eps, T momentum, T* mean,
                                  T* rstd, double* total_count, T* running_mean, T* running_var) {
  KD_CHECK(c > 0 && ranks > 0, "batchnorm: need c > 0 and ranks > 0, got c ", c, ", ranks ", ranks);
  KD_CHECK(eps >= T(0), "batchnorm: eps must be non-negative, got ", eps);
  KD_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "batchnorm: running mean and running variance must be given together");
  double count = 0;
  for (int64_t ch = 0; ch < c; ++ch) {
    double mu = 0, var = 0;
    batchnorm_combine_moments(gathered, ranks, c, ch, &mu, &var, &count);
    KD_CHECK(count > 1, "batchnorm: training statistics need more than one value per channel, got ", count);
    mean[ch] = T(mu);
    rstd[ch] = T(norm_rstd(var, double(eps)));
    if (running_mean) {
      double rm = double(running_mean[ch]), rv = double(running_var[ch]);
      batchnorm_update_running(mu, var, count, double(momentum), &rm, &rv);
      running_mean[ch] = T(rm), running_var[ch] = T(rv);
    }
  }
  if (total_count) *total_count = count;
}

// y[r, ch] = gamma * (x - mean) * rstd + beta with per-channel mean and rstd.
template <typename T>
void batchnorm_normalize_cpu(const BatchNormShape& s, const T* x, const T* mean, const T* rstd, const T* gamma,
                             const T* beta, T* y) {
  const int64_t c = s.c;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch)
      y[r * c + ch] = norm_affine(x[r * c + ch], mean[ch], rstd[ch], gamma[ch], beta[ch]);
}

template <typename T>
void batchnorm_forward_train_cpu(const BatchNormShape& s, T eps, T momentum, const T* x, const T* gamma, const T* beta,
                                 T* y, T* mean, T* rstd, T* running_mean, T* running_var) {
  check_sizes(s, 2);
  std::vector<double> moments(size_t(batchnorm_moments_size(s.c)));
  batchnorm_moments_cpu(s, x, moments.data());
  batchnorm_finish_moments_cpu(s.c, 1, moments.data(), eps, momentum, mean, rstd, nullptr, running_mean, running_var);
  batchnorm_normalize_cpu(s, x, mean, rstd, gamma, beta, y);
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
  batchnorm_normalize_cpu(s, x, running_mean, rstd.data(), gamma, beta, y);
}

template <typename T>
void batchnorm_grad_sums_cpu(const BatchNormShape& s, const T* x, const T* mean, const T* rstd, const T* dy,
                             double* sums) {
  check_sizes(s, 1);
  const int64_t c = s.c;
  sum_rows_cpu(
      s.rows, 2 * c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const double g = double(dy[r * c + ch]);
          acc[2 * ch] += g;
          acc[2 * ch + 1] += g * double(norm_x_hat(x[r * c + ch], mean[ch], rstd[ch]));
        }
      },
      sums);
}

template <typename T>
void batchnorm_backward_from_sums_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* mean,
                                      const T* rstd, const T* dy, const double* local_sums, const double* total_sums,
                                      double total_count, T* dx, T* dgamma, T* dbeta) {
  check_sizes(s, 1);
  KD_CHECK(total_count >= double(s.rows), "batchnorm: the batch over every rank (", total_count,
           " rows) is smaller than this rank's (", s.rows, ")");
  const int64_t c = s.c;
  // Means over the whole batch of dL/dx_hat = gamma * dy and of dL/dx_hat * x_hat.
  std::vector<T> mean_dxh(static_cast<size_t>(c)), mean_dxh_xh(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    dbeta[ch] += T(local_sums[2 * ch]);
    dgamma[ch] += T(local_sums[2 * ch + 1]);
    mean_dxh[size_t(ch)] = T(double(gamma[ch]) * total_sums[2 * ch] / total_count);
    mean_dxh_xh[size_t(ch)] = T(double(gamma[ch]) * total_sums[2 * ch + 1] / total_count);
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t i = r * c + ch;
      dx[i] = norm_affine_input_grad(dy[i], gamma[ch], norm_x_hat(x[i], mean[ch], rstd[ch]), mean_dxh[size_t(ch)],
                                     mean_dxh_xh[size_t(ch)], rstd[ch]);
    }
}

template <typename T>
void batchnorm_backward_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* mean, const T* rstd,
                            const T* dy, T* dx, T* dgamma, T* dbeta) {
  check_sizes(s, 2);
  std::vector<double> sums(size_t(batchnorm_grad_sums_size(s.c)));
  batchnorm_grad_sums_cpu(s, x, mean, rstd, dy, sums.data());
  batchnorm_backward_from_sums_cpu(s, x, gamma, mean, rstd, dy, sums.data(), sums.data(), double(s.rows), dx, dgamma,
                                   dbeta);
}

#define KD_INSTANTIATE_BATCHNORM(T)                                                                             \
  template void batchnorm_forward_train_cpu<T>(const BatchNormShape&, T, T, const T*, const T*, const T*, T*, T*, \
                                               T*, T*, T*);                                                     \
  template void batchnorm_forward_eval_cpu<T>(const BatchNormShape&, T, const T*, const T*, const T*, const T*,   \
                                              const T*, T*);                                                    \
  template void batchnorm_backward_cpu<T>(const BatchNormShape&, const T*, const T*, const T*, const T*, const T*, \
                                          T*, T*, T*);                                                          \
  template void batchnorm_moments_cpu<T>(const BatchNormShape&, const T*, double*);                             \
  template void batchnorm_finish_moments_cpu<T>(int64_t, int64_t, const double*, T, T, T*, T*, double*, T*, T*); \
  template void batchnorm_normalize_cpu<T>(const BatchNormShape&, const T*, const T*, const T*, const T*,        \
                                           const T*, T*);                                                       \
  template void batchnorm_grad_sums_cpu<T>(const BatchNormShape&, const T*, const T*, const T*, const T*,        \
                                           double*);                                                            \
  template void batchnorm_backward_from_sums_cpu<T>(const BatchNormShape&, const T*, const T*, const T*,         \
                                                    const T*, const T*, const double*, const double*, double, T*, \
                                                    T*, T*);
KD_INSTANTIATE_BATCHNORM(float)
KD_INSTANTIATE_BATCHNORM(double)

}  // namespace kd
