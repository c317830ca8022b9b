// FP8 E4M3 on the GPU: amax, quantize and dequantize with fp8.h's arithmetic (the CPU twins'),
// and the hardware conversion the tests compare it with.
#include <cuda_fp8.h>

#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <cuda/functional>

#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/fp8.h"

namespace kd {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(const CudaHandles& h, int64_t n) {
  const int64_t cap = int64_t(std::max(h.sm_count, 1)) * 16;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, kThreads), cap)));
}

// |x| as bits: for non-negative floats (and NaN, above +inf) the unsigned order is the float order.
__device__ __forceinline__ unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }

__global__ void __launch_bounds__(kThreads) amax_kernel(int64_t n, const bf16* __restrict__ x, unsigned* amax_bits) {
  unsigned m = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    m = max(m, abs_bits(bf16_to_float(x[i])));
  using Reduce = cub::BlockReduce<unsigned, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const unsigned block = Reduce(storage).Reduce(m, ::cuda::maximum<>{});
  if (threadIdx.x == 0) atomicMax(amax_bits, block);
}

template <typename T>
__device__ __forceinline__ float load(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load<float>(const float* p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float load<bf16>(const bf16* p, int64_t i) { return bf16_to_float(p[i]); }

template <typename T>
__global__ void quantize_kernel(int64_t n, const T* __restrict__ x, float scale, uint8_t* __restrict__ q) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    q[i] = float_to_e4m3(load(x, i) * scale);
}

__global__ void dequantize_kernel(int64_t n, const uint8_t* __restrict__ q, float inv_scale, float* __restrict__ y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = e4m3_to_float(q[i]) * inv_scale;
}

__global__ void hardware_encode_kernel(int64_t n, const float* __restrict__ x, uint8_t* __restrict__ q) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    q[i] = uint8_t(__nv_cvt_float_to_fp8(x[i], __NV_SATFINITE, __NV_E4M3));
}

void check_scale(float scale, const char* op) {
  KD_CHECK(scale > 0.0f && scale < INFINITY, op, ": scale must be positive and finite, got ", scale);
}

}  // namespace

void amax_cuda(const CudaHandles& h, int64_t n, const bf16* x, float* amax) {
  KD_CHECK(n >= 0, "amax_cuda: negative size ", n);
  KD_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), h.stream));  // bits 0 = +0.0f
  if (n == 0) return;
  amax_kernel<<<grid_for(h, n), kThreads, 0, h.stream>>>(n, x, reinterpret_cast<unsigned*>(amax));
  KD_CUDA_LAUNCH_CHECK("amax_kernel");
}

void fp8_quantize_cuda(const CudaHandles& h, int64_t n, const float* x, float scale, uint8_t* q) {
  check_scale(scale, "fp8_quantize_cuda");
  if (n <= 0) return;
  quantize_kernel<float><<<grid_for(h, n), kThreads, 0, h.stream>>>(n, x, scale, q);
  KD_CUDA_LAUNCH_CHECK("quantize_kernel<float>");
}

void fp8_quantize_cuda(const CudaHandles& h, int64_t n, const bf16* x, float scale, uint8_t* q) {
  check_scale(scale, "fp8_quantize_cuda");
  if (n <= 0) return;
  quantize_kernel<bf16><<<grid_for(h, n), kThreads, 0, h.stream>>>(n, x, scale, q);
  KD_CUDA_LAUNCH_CHECK("quantize_kernel<bf16>");
}

void fp8_dequantize_cuda(const CudaHandles& h, int64_t n, const uint8_t* q, float scale, float* y) {
  check_scale(scale, "fp8_dequantize_cuda");
  if (n <= 0) return;
  dequantize_kernel<<<grid_for(h, n), kThreads, 0, h.stream>>>(n, q, 1.0f / scale, y);
  KD_CUDA_LAUNCH_CHECK("dequantize_kernel");
}

void fp8_hardware_encode_cuda(const CudaHandles& h, int64_t n, const float* x, uint8_t* q) {
  if (n <= 0) return;
  hardware_encode_kernel<<<grid_for(h, n), kThreads, 0, h.stream>>>(n, x, q);
  KD_CUDA_LAUNCH_CHECK("hardware_encode_kernel");
}

}  // namespace kd
