// Weight standardisation (BiT's StdConv2d): per output channel o, over its k = kh*kw*c_in/groups
// weights, w_hat = (w - mean_o) / sqrt(var_o + eps) with the biased variance. BiT uses eps 1e-8.
// Weights are [c_out, k] rows (OHWI flattened). mean/rstd [c_out] are saved for the backward
// pass, which recomputes w_hat from w so a bf16 forward copy is never differentiated.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/normalize.h"

namespace kd {

template <typename T>
void weight_std_forward_cpu(int64_t c_out, int64_t k, T eps, const T* w, T* w_hat, T* mean, T* rstd);

// dw += rstd * (g - mean(g) - w_hat * mean(g * w_hat)), per row, with g = dL/dw_hat
// (norm_input_grad in kernels/normalize.h).
template <typename T>
void weight_std_backward_cpu(int64_t c_out, int64_t k, const T* w, const T* mean, const T* rstd, const T* dw_hat,
                             T* dw);

// CUDA: from the fp32 master weights straight to the bf16 compute copy; statistics fp32.
// Backward as the CPU version, all fp32.
void weight_std_forward_cuda(const CudaHandles& h, int64_t c_out, int64_t k, float eps, const float* w, bf16* w_hat,
                             float* mean, float* rstd);
void weight_std_backward_cuda(const CudaHandles& h, int64_t c_out, int64_t k, const float* w, const float* mean,
                              const float* rstd, const float* dw_hat, float* dw);

}  // namespace kd
