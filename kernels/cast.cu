// bf16 <-> fp32 casts: grid-stride loops over common.h's conversions (the CPU twins' arithmetic).
#include <algorithm>

#include "kernels/cast.h"
#include "kernels/cuda_check.h"

namespace kd {
namespace {

constexpr int kThreads = 256;

__global__ void f32_to_bf16_kernel(int64_t n, const float* __restrict__ in, bf16* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = float_to_bf16(in[i]);
}

__global__ void bf16_to_f32_kernel(int64_t n, const bf16* __restrict__ in, float* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bf16_to_float(in[i]);
}

// Enough blocks to fill the device a few times over; the loops stride over the rest.
unsigned grid_for(const CudaHandles& h, int64_t n) {
  const int64_t cap = int64_t(std::max(h.sm_count, 1)) * 16;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, kThreads), cap)));
}

}  // namespace

void cast_f32_to_bf16_cuda(const CudaHandles& h, int64_t n, const float* in, bf16* out) {
  KD_CHECK(n >= 0, "cast_f32_to_bf16_cuda: negative size ", n);
  if (n == 0) return;
  f32_to_bf16_kernel<<<grid_for(h, n), kThreads, 0, h.stream>>>(n, in, out);
  KD_CUDA_LAUNCH_CHECK("f32_to_bf16_kernel");
}

void cast_bf16_to_f32_cuda(const CudaHandles& h, int64_t n, const bf16* in, float* out) {
  KD_CHECK(n >= 0, "cast_bf16_to_f32_cuda: negative size ", n);
  if (n == 0) return;
  bf16_to_f32_kernel<<<grid_for(h, n), kThreads, 0, h.stream>>>(n, in, out);
  KD_CUDA_LAUNCH_CHECK("bf16_to_f32_kernel");
}

}  // namespace kd
