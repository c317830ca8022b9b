// BatchNorm over NHWC activations viewed as [rows = n*h*w, c], as PyTorch's BatchNorm2d.
// Training: batch statistics (biased variance for normalising), running statistics updated
//   running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
// Eval: the running statistics.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/normalize.h"  // the per-element formulas, shared with the CUDA kernels

namespace kd {

struct BatchNormShape {
  int64_t rows = 1, c = 1;
};

// mean, rstd [c]: saved batch statistics. running_mean/var may be null (not tracked).
template <typename T>
void batchnorm_forward_train_cpu(const BatchNormShape& s, T eps, T momentum, const T* x, const T* gamma, const T* beta,
                                 T* y, T* mean, T* rstd, T* running_mean, T* running_var);
template <typename T>
void batchnorm_forward_eval_cpu(const BatchNormShape& s, T eps, const T* x, const T* gamma, const T* beta,
                                const T* running_mean, const T* running_var, T* y);
// Training-mode backward (through the batch statistics). dx = ; dgamma, dbeta += .
template <typename T>
void batchnorm_backward_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* mean, const T* rstd,
                            const T* dy, T* dx, T* dgamma, T* dbeta);

// ---- Statistics over several ranks' batches (SyncBatchNorm), in stages around collectives ----
// Forward:  batchnorm_moments (this rank's rows) -> all-gather over the ranks ->
//           batchnorm_finish_moments (every rank combines the same gathered values in rank order,
//           so mean, rstd and running statistics agree bit for bit across ranks) -> batchnorm_normalize.
// Backward: batchnorm_grad_sums (this rank's rows) -> all-reduce (sum) -> batchnorm_backward_from_sums.
// dx on a rank is then the gradient of the whole batch's normalisation at its rows (the means
// of g and g * x_hat run over every rank's rows); dgamma and dbeta take this rank's sums only, as
// any parameter gradient, and are averaged by the gradient all-reduce. The single-batch
// functions above are these stages with one rank.
//
// moments, per rank: [count, mean[c], m2[c]] in double, m2 = sum over rows of (x - mean)^2.
inline int64_t batchnorm_moments_size(int64_t c) { return 1 + 2 * c; }
// grad sums: [c] pairs (sum g, sum g * x_hat) in double, g = dL/dy.
inline int64_t batchnorm_grad_sums_size(int64_t c) { return 2 * c; }

// Channel ch's mean and biased variance over every rank's rows from the gathered moments
// [ranks, batchnorm_moments_size(c)] (Chan et al.'s pairwise combination, in rank order:
// mean = sum_r (n_r / n) mean_r, m2 = sum_r m2_r + n_r (mean_r - mean)^2). With one rank it
// returns that rank's mean and m2 / n exactly.
KD_HD void batchnorm_combine_moments(const double* gathered, int64_t ranks, int64_t c, int64_t ch, double* mean,
                                     double* var, double* count) {
  const int64_t stride = 1 + 2 * c;
  double n = 0;
  for (int64_t r = 0; r < ranks; ++r) n += gathered[r * stride];
  double mu = 0;
  for (int64_t r = 0; r < ranks; ++r) mu += gathered[r * stride] / n * gathered[r * stride + 1 + ch];
  double m2 = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    const double d = gathered[r * stride + 1 + ch] - mu;
    m2 += gathered[r * stride + 1 + c + ch] + gathered[r * stride] * d * d;
  }
  *mean = mu, *var = m2 / n, *count = n;
}

// running = (1 - momentum) running + momentum batch, with the unbiased variance (as PyTorch).
KD_HD void batchnorm_update_running(double mean, double var, double count, double momentum, double* running_mean,
                                    double* running_var) {
  *running_mean = (1 - momentum) * *running_mean + momentum * mean;
  *running_var = (1 - momentum) * *running_var + momentum * var * (count / (count - 1));
}

template <typename T>
void batchnorm_moments_cpu(const BatchNormShape& s, const T* x, double* moments);
// total_count [1]: the rows of every rank (the backward's means divide by it).
template <typename T>
void batchnorm_finish_moments_cpu(int64_t c, int64_t ranks, const double* gathered, T eps, T momentum, T* mean,
                                  T* rstd, double* total_count, T* running_mean, T* running_var);
template <typename T>
void batchnorm_normalize_cpu(const BatchNormShape& s, const T* x, const T* mean, const T* rstd, const T* gamma,
                             const T* beta, T* y);
template <typename T>
void batchnorm_grad_sums_cpu(const BatchNormShape& s, const T* x, const T* mean, const T* rstd, const T* dy,
                             double* sums);
// dx = ; dgamma, dbeta += this rank's sums. total_sums: every rank's, total_count: every rank's rows.
template <typename T>
void batchnorm_backward_from_sums_cpu(const BatchNormShape& s, const T* x, const T* gamma, const T* mean,
                                      const T* rstd, const T* dy, const double* local_sums, const double* total_sums,
                                      double total_count, T* dx, T* dgamma, T* dbeta);

// CUDA: bf16 activations, fp32 statistics, running statistics and affine parameters.
void batchnorm_forward_train_cuda(const CudaHandles& h, const BatchNormShape& s, float eps, float momentum,
                                  const bf16* x, const float* gamma, const float* beta, bf16* y, float* mean,
                                  float* rstd, float* running_mean, float* running_var);
void batchnorm_forward_eval_cuda(const CudaHandles& h, const BatchNormShape& s, float eps, const bf16* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, bf16* y);
void batchnorm_backward_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* gamma,
                             const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* dgamma,
                             float* dbeta);
// The stages on the GPU; moments, gathered, sums and total_count are device buffers of doubles.
// batchnorm_grad_sums_cuda also copies the sums to sums_copy (when not null), in stream order.
void batchnorm_moments_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, double* moments);
void batchnorm_finish_moments_cuda(const CudaHandles& h, int64_t c, int64_t ranks, const double* gathered, float eps,
                                   float momentum, float* mean, float* rstd, double* total_count, float* running_mean,
                                   float* running_var);
void batchnorm_normalize_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* mean,
                              const float* rstd, const float* gamma, const float* beta, bf16* y);
void batchnorm_grad_sums_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* gamma,
                              const float* mean, const float* rstd, const bf16* dy, double* sums,
                              double* sums_copy);
void batchnorm_backward_from_sums_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x,
                                       const float* gamma, const float* mean, const float* rstd, const bf16* dy,
                                       const double* local_sums, const double* total_sums,
                                       const double* total_count, bf16* dx, float* dgamma, float* dbeta);

}  // namespace kd
