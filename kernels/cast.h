// bf16 <-> fp32 conversion of n contiguous elements, with common.h's rounding (nearest, ties to
// even; NaN stays NaN). The CPU and CUDA versions produce identical bits.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

void cast_f32_to_bf16_cpu(int64_t n, const float* in, bf16* out);
void cast_bf16_to_f32_cpu(int64_t n, const bf16* in, float* out);

void cast_f32_to_bf16_cuda(const CudaHandles& h, int64_t n, const float* in, bf16* out);
void cast_bf16_to_f32_cuda(const CudaHandles& h, int64_t n, const bf16* in, float* out);

}  // namespace kd
