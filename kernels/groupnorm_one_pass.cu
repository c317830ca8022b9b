// The one-pass GroupNorm forward (see groupnorm_one_pass.h for the layout and the plan).
//
// Block b = (image b / groups, group b % groups), THREADS threads:
//   1. each thread copies its chunks (q = t, t + THREADS, ...) to shared memory and adds
//      d = x - K and d^2 in float, K = the group's first value (pixel 0, channel g * cpg), as the
//      two-pass path does (normalize.h: norm_moments_from_shifted_sums);
//   2. one CUB block reduction of the (a, b) pairs in double, in a fixed order; thread 0 turns
//      them into mean and rstd and shares them through shared memory;
//   3. each thread normalises its chunks from the copy and writes y with 16-byte stores.
// Deterministic: the same inputs give the same bits on every run.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <mutex>

#include "kernels/bf16_vectors.cuh"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/groupnorm_one_pass.h"
#include "kernels/norm_cuda.h"

namespace kd {
namespace {

using norm_cuda::SumPairD;

template <int VEC, int THREADS>
__global__ void __launch_bounds__(THREADS)
    groupnorm_one_pass_forward_kernel(GroupNormShape s, int64_t chunks, double eps, const bf16* __restrict__ x,
                                      const float* __restrict__ gamma, const float* __restrict__ beta, bool relu,
                                      bf16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  extern __shared__ uint4 smem_vectors[];  // 16-byte aligned: the group's values as bf16
  bf16* copy = reinterpret_cast<bf16*>(smem_vectors);
  using BlockReduce = cub::BlockReduce<SumPairD, THREADS>;
  __shared__ typename BlockReduce::TempStorage reduce_storage;
  __shared__ float stats[2];

  const int64_t image = blockIdx.x / s.groups, g = blockIdx.x % s.groups;
  const int64_t image_offset = image * s.hw * s.c;
  const bf16* xi = x + image_offset;
  bf16* yi = y + image_offset;
  const float shift = bf16_to_float(xi[g * s.channels_per_group()]);

  // 1. copy and sum
  float a = 0.0f, b = 0.0f;
  for (int64_t q = threadIdx.x; q < chunks; q += THREADS) {
    const int64_t at = groupnorm_chunk_offset(s, VEC, g, q);
    float v[VEC];
    if constexpr (VEC == 8) {
      const uint4 u = __ldcs(reinterpret_cast<const uint4*>(xi + at));  // read once from DRAM
      smem_vectors[q] = u;
      gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(&u), v);
    } else {
      copy[q] = xi[at];
      v[0] = bf16_to_float(copy[q]);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float d = v[j] - shift;
      a += d;
      b += d * d;
    }
  }

  // 2. the group's statistics
  const SumPairD total = BlockReduce(reduce_storage).Sum(SumPairD{double(a), double(b)});
  if (threadIdx.x == 0) {
    double mu = 0, var = 0;
    norm_moments_from_shifted_sums(shift, total.a, total.b, double(s.group_size()), &mu, &var);
    stats[0] = float(mu);
    stats[1] = float(norm_rstd(var, eps));
    if (mean) {
      mean[blockIdx.x] = stats[0];
      rstd[blockIdx.x] = stats[1];
    }
  }
  __syncthreads();  // also orders every thread's copy before the reads below
  const float mu = stats[0], rs = stats[1];

  // 3. normalise the copy
  for (int64_t q = threadIdx.x; q < chunks; q += THREADS) {
    float v[VEC];
    if constexpr (VEC == 8)
      gpu::load_bf16<8, false>(copy + q * 8, v);
    else
      v[0] = bf16_to_float(copy[q]);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t ch = groupnorm_chunk_channel(s, VEC, g, q, j);
      v[j] = norm_affine_act(v[j], mu, rs, gamma[ch], beta ? beta[ch] : 0.0f, relu);
    }
    gpu::store_bf16<VEC>(yi + groupnorm_chunk_offset(s, VEC, g, q), v);
  }
}

template <int VEC, int THREADS>
void launch(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s, float eps, const bf16* x,
            const float* gamma, const float* beta, bool relu, bf16* y, float* mean, float* rstd) {
  groupnorm_one_pass_forward_kernel<VEC, THREADS><<<unsigned(s.n * s.groups), THREADS, size_t(plan.smem_bytes),
                                                     h.stream>>>(s, plan.chunks, double(eps), x, gamma, beta, relu, y,
                                                                 mean, rstd);
  KD_CUDA_LAUNCH_CHECK("groupnorm_one_pass_forward_kernel");
}

// Above 48 KB a kernel must ask for its dynamic shared memory: every instantiation may use up to
// `bytes`, set once per device (groupnorm_one_pass_smem_limit), not on every launch.
void allow_dynamic_smem(int64_t bytes) {
  for (const void* kernel : {reinterpret_cast<const void*>(&groupnorm_one_pass_forward_kernel<8, 512>),
                             reinterpret_cast<const void*>(&groupnorm_one_pass_forward_kernel<8, 256>),
                             reinterpret_cast<const void*>(&groupnorm_one_pass_forward_kernel<1, 512>),
                             reinterpret_cast<const void*>(&groupnorm_one_pass_forward_kernel<1, 256>)})
    KD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace

int64_t groupnorm_one_pass_smem_limit(const CudaHandles& h) {
  static std::mutex mutex;
  static int64_t limits[64] = {};
  KD_CHECK(h.device >= 0 && h.device < 64, "groupnorm_one_pass_smem_limit: device index ", h.device);
  std::lock_guard<std::mutex> lock(mutex);
  if (limits[h.device] == 0) {
    int v = 0;
    KD_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, h.device));
    // What the kernel's static shared memory (CUB's reduction, the two statistics) leaves.
    limits[h.device] = int64_t(v) - 1024;
    allow_dynamic_smem(limits[h.device]);
  }
  return limits[h.device];
}

void groupnorm_forward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                     float eps, const bf16* x, const float* gamma, const float* beta, bool relu,
                                     bf16* y, float* mean, float* rstd) {
  KD_CHECK(plan.fits, "groupnorm_forward_one_pass_cuda: the plan does not fit: ", plan.why_not);
  // (Also makes sure the kernels may use that much shared memory on this device.)
  const int64_t limit = groupnorm_one_pass_smem_limit(h);
  KD_CHECK(plan.smem_bytes <= limit, "groupnorm_forward_one_pass_cuda: the plan's ", plan.smem_bytes,
           " bytes of shared memory exceed the device's ", limit);
  KD_CHECK((mean == nullptr) == (rstd == nullptr), "groupnorm_forward_one_pass_cuda: mean and rstd are saved together");
  KD_CHECK(plan.vec == 1 || (norm_cuda::aligned16(x) && norm_cuda::aligned16(y)),
           "groupnorm_forward_one_pass_cuda: a plan of 16-byte chunks needs 16-byte aligned x and y");
  if (plan.vec == 8)
    plan.threads == 512 ? launch<8, 512>(h, plan, s, eps, x, gamma, beta, relu, y, mean, rstd)
                        : launch<8, 256>(h, plan, s, eps, x, gamma, beta, relu, y, mean, rstd);
  else
    plan.threads == 512 ? launch<1, 512>(h, plan, s, eps, x, gamma, beta, relu, y, mean, rstd)
                        : launch<1, 256>(h, plan, s, eps, x, gamma, beta, relu, y, mean, rstd);
}

}  // namespace kd
