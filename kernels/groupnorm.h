// GroupNorm over NHWC activations, with optional fused ReLU (timm's GroupNormAct).
// x, y [n, hw, c]; the c channels form `groups` contiguous groups; statistics per (image, group)
// over hw * c/groups values (biased variance), then y = act(gamma[c] * x_hat + beta[c]).
// mean, rstd [n, groups] are saved for the backward pass.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/normalize.h"  // the per-element formulas, shared with the CUDA kernels

namespace kd {

struct GroupNormShape {
  int64_t n = 1, hw = 1, c = 1, groups = 1;
  KD_HD int64_t channels_per_group() const { return c / groups; }
  KD_HD int64_t group_size() const { return hw * (c / groups); }  // values per statistic
  KD_HD int64_t numel() const { return n * hw * c; }
};

void validate(const GroupNormShape& s);

template <typename T>
void groupnorm_forward_cpu(const GroupNormShape& s, T eps, const T* x, const T* gamma, const T* beta, bool relu, T* y,
                           T* mean, T* rstd);

// dx = (overwrite); dgamma, dbeta += . With relu, the ReLU mask is recomputed from x, the saved
// statistics, gamma and beta (y itself need not be kept).
template <typename T>
void groupnorm_backward_cpu(const GroupNormShape& s, const T* x, const T* gamma, const T* beta, const T* mean,
                            const T* rstd, bool relu, const T* dy, T* dx, T* dgamma, T* dbeta);

// CUDA: bf16 activations, fp32 statistics and affine parameters, fp32 math. mean/rstd may be
// null (inference: nothing is saved).
void groupnorm_forward_cuda(const CudaHandles& h, const GroupNormShape& s, float eps, const bf16* x, const float* gamma,
                            const float* beta, bool relu, bf16* y, float* mean, float* rstd);
void groupnorm_backward_cuda(const CudaHandles& h, const GroupNormShape& s, const bf16* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd, bool relu, const bf16* dy,
                             bf16* dx, float* dgamma, float* dbeta);

}  // namespace kd
