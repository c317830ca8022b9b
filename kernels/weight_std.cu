// Weight standardisation on the GPU: one block per output channel (row of k fp32 weights, k up
// to 4608 in BiT). A row is at most a few tens of KB, so the block reads it once per pass and the
// later passes find it in L1/L2. Sums are in double, as on the CPU: the mean first, then the
// squares around it (no cancellation), then w_hat; the backward sums g and g * w_hat, then adds
// into dw. The per-element formulas are normalize.h's, the ones the CPU version calls.
#include <algorithm>
#include <cub/block/block_reduce.cuh>

#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/weight_std.h"

namespace kd {
namespace {

struct DoublePair {
  double a, b;
};
KD_HD DoublePair operator+(const DoublePair& x, const DoublePair& y) { return {x.a + y.a, x.b + y.b}; }

// VEC consecutive floats from p (VEC 4: one 16-byte load).
template <int VEC>
__device__ __forceinline__ void load_f32(const float* p, float (&v)[VEC]) {
  if constexpr (VEC == 4) {
    const float4 u = *reinterpret_cast<const float4*>(p);
    v[0] = u.x, v[1] = u.y, v[2] = u.z, v[3] = u.w;
  } else {
    static_assert(VEC == 1, "vectors of 4 or 1 floats");
    v[0] = *p;
  }
}

template <int VEC>
__device__ __forceinline__ void store_f32(float* p, const float (&v)[VEC]) {
  if constexpr (VEC == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    *p = v[0];
  }
}

// Rounded as the CPU rounds (common.h's float_to_bf16); VEC 4: one 8-byte store.
template <int VEC>
__device__ __forceinline__ void store_bf16(bf16* p, const float (&v)[VEC]) {
  if constexpr (VEC == 4) {
    uint2 u;
    u.x = uint32_t(float_to_bf16(v[0]).bits) | uint32_t(float_to_bf16(v[1]).bits) << 16;
    u.y = uint32_t(float_to_bf16(v[2]).bits) | uint32_t(float_to_bf16(v[3]).bits) << 16;
    *reinterpret_cast<uint2*>(p) = u;
  } else {
    *p = float_to_bf16(v[0]);
  }
}

template <int THREADS, int VEC>
__global__ void __launch_bounds__(THREADS)
    weight_std_forward_kernel(int64_t k, double eps, const float* __restrict__ w, bf16* __restrict__ w_hat,
                              float* __restrict__ mean, float* __restrict__ rstd) {
  using BlockReduce = cub::BlockReduce<double, THREADS>;
  __shared__ typename BlockReduce::TempStorage storage;
  __shared__ double row_mean;
  __shared__ float row_stats[2];
  const int64_t o = blockIdx.x, first = int64_t(threadIdx.x) * VEC, stride = int64_t(THREADS) * VEC;
  const float* row = w + o * k;

  double sum = 0;
  for (int64_t i = first; i < k; i += stride) {
    float v[VEC];
    load_f32<VEC>(row + i, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) sum += double(v[j]);
  }
  sum = BlockReduce(storage).Sum(sum);
  if (threadIdx.x == 0) row_mean = sum / double(k);
  __syncthreads();  // also ends the first use of `storage`
  const double mu = row_mean;

  double sq = 0;
  for (int64_t i = first; i < k; i += stride) {
    float v[VEC];
    load_f32<VEC>(row + i, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) sq += (double(v[j]) - mu) * (double(v[j]) - mu);
  }
  sq = BlockReduce(storage).Sum(sq);
  if (threadIdx.x == 0) {
    row_stats[0] = mean[o] = float(mu);
    row_stats[1] = rstd[o] = float(norm_rstd(sq / double(k), eps));
  }
  __syncthreads();
  const float m = row_stats[0], r = row_stats[1];

  bf16* out = w_hat + o * k;
  for (int64_t i = first; i < k; i += stride) {
    float v[VEC];
    load_f32<VEC>(row + i, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = norm_x_hat(v[j], m, r);
    store_bf16<VEC>(out + i, v);
  }
}

template <int THREADS, int VEC>
__global__ void __launch_bounds__(THREADS)
    weight_std_backward_kernel(int64_t k, const float* __restrict__ w, const float* __restrict__ mean,
                               const float* __restrict__ rstd, const float* __restrict__ dw_hat,
                               float* __restrict__ dw) {
  using BlockReduce = cub::BlockReduce<DoublePair, THREADS>;
  __shared__ typename BlockReduce::TempStorage storage;
  __shared__ float row_means[2];
  const int64_t o = blockIdx.x, first = int64_t(threadIdx.x) * VEC, stride = int64_t(THREADS) * VEC;
  const float* row = w + o * k;
  const float* g = dw_hat + o * k;
  const float m = mean[o], r = rstd[o];

  DoublePair sums{0.0, 0.0};
  for (int64_t i = first; i < k; i += stride) {
    float wv[VEC], gv[VEC];
    load_f32<VEC>(row + i, wv);
    load_f32<VEC>(g + i, gv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      sums.a += double(gv[j]);
      sums.b += double(gv[j]) * double(norm_x_hat(wv[j], m, r));
    }
  }
  sums = BlockReduce(storage).Sum(sums);
  if (threadIdx.x == 0) {
    row_means[0] = float(sums.a / double(k));
    row_means[1] = float(sums.b / double(k));
  }
  __syncthreads();
  const float mean_g = row_means[0], mean_g_w_hat = row_means[1];

  float* out = dw + o * k;
  for (int64_t i = first; i < k; i += stride) {
    float wv[VEC], gv[VEC], dv[VEC];
    load_f32<VEC>(row + i, wv);
    load_f32<VEC>(g + i, gv);
    load_f32<VEC>(out + i, dv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) dv[j] += norm_input_grad(gv[j], norm_x_hat(wv[j], m, r), mean_g, mean_g_w_hat, r);
    store_f32<VEC>(out + i, dv);
  }
}

// Rows of up to 512 vectors take a block of 64 threads (at most 8 vectors each), longer rows 256.
constexpr int kSmallRowThreads = 64, kLargeRowThreads = 256;
constexpr int64_t kSmallRowVectors = 512;

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

void check_sizes(int64_t c_out, int64_t k, const char* op) {
  KD_CHECK(c_out > 0 && k > 0, op, ": sizes must be positive, got c_out ", c_out, ", k ", k);
  KD_CHECK(c_out < (int64_t(1) << 31), op, ": ", c_out, " output channels do not fit one grid");
}

}  // namespace

void weight_std_forward_cuda(const CudaHandles& h, int64_t c_out, int64_t k, float eps, const float* w, bf16* w_hat,
                             float* mean, float* rstd) {
  check_sizes(c_out, k, "weight_std_forward_cuda");
  KD_CHECK(eps >= 0.0f, "weight_std_forward_cuda: eps must be non-negative, got ", eps);
  const bool vec = k % 4 == 0 && aligned(w, 16) && aligned(w_hat, 8);
  const bool small = (vec ? k / 4 : k) <= kSmallRowVectors;
  const unsigned grid = unsigned(c_out);
  const double e = double(eps);
  if (vec && small)
    weight_std_forward_kernel<kSmallRowThreads, 4><<<grid, kSmallRowThreads, 0, h.stream>>>(k, e, w, w_hat, mean, rstd);
  else if (vec)
    weight_std_forward_kernel<kLargeRowThreads, 4><<<grid, kLargeRowThreads, 0, h.stream>>>(k, e, w, w_hat, mean, rstd);
  else if (small)
    weight_std_forward_kernel<kSmallRowThreads, 1><<<grid, kSmallRowThreads, 0, h.stream>>>(k, e, w, w_hat, mean, rstd);
  else
    weight_std_forward_kernel<kLargeRowThreads, 1><<<grid, kLargeRowThreads, 0, h.stream>>>(k, e, w, w_hat, mean, rstd);
  KD_CUDA_LAUNCH_CHECK("weight_std_forward_kernel");
}

void weight_std_backward_cuda(const CudaHandles& h, int64_t c_out, int64_t k, const float* w, const float* mean,
                              const float* rstd, const float* dw_hat, float* dw) {
  check_sizes(c_out, k, "weight_std_backward_cuda");
  const bool vec = k % 4 == 0 && aligned(w, 16) && aligned(dw_hat, 16) && aligned(dw, 16);
  const bool small = (vec ? k / 4 : k) <= kSmallRowVectors;
  const unsigned grid = unsigned(c_out);
  if (vec && small)
    weight_std_backward_kernel<kSmallRowThreads, 4>
        <<<grid, kSmallRowThreads, 0, h.stream>>>(k, w, mean, rstd, dw_hat, dw);
  else if (vec)
    weight_std_backward_kernel<kLargeRowThreads, 4>
        <<<grid, kLargeRowThreads, 0, h.stream>>>(k, w, mean, rstd, dw_hat, dw);
  else if (small)
    weight_std_backward_kernel<kSmallRowThreads, 1>
        <<<grid, kSmallRowThreads, 0, h.stream>>>(k, w, mean, rstd, dw_hat, dw);
  else
    weight_std_backward_kernel<kLargeRowThreads, 1>
        <<<grid, kLargeRowThreads, 0, h.stream>>>(k, w, mean, rstd, dw_hat, dw);
  KD_CUDA_LAUNCH_CHECK("weight_std_backward_kernel");
}

}  // namespace kd
