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

}  // namespace kd
