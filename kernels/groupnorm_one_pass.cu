// The one-pass GroupNorm kernels (see groupnorm_one_pass.h for the layout and the plan).
//
// Forward, block b = (image, span of G groups starting at g0), THREADS threads:
//   1. each thread copies its chunks to shared memory and adds d = x - K and d^2 in float per
//      value of its chunk, K = the value's group's first value (pixel 0, channel g * cpg), as the
//      two-pass path does (normalize.h: norm_moments_from_shifted_sums);
//   2. one CUB block reduction of the G groups' (a, b) pairs in double, in a fixed order; threads
//      0 .. G-1 turn them into mean and rstd and share them through shared memory;
//   3. each thread normalises its chunks from the copy and writes y.
// Backward, same blocks, x and dy copied to shared memory:
//   1. per value g = dL/d(gamma x_hat + beta) (the ReLU mask recomputed) and g * x_hat are summed
//      per channel in float, in registers (a thread's chunks all hold the same 8 channels);
//   2. the per-channel sums are reduced across the warp's lanes that hold the same channels, then
//      across warps in warp order in double: the image's channel sums (-> dgamma, dbeta, added
//      over images by add_param_grads) and, over each group's channels, the group means of
//      dL/dx_hat = gamma g and of dL/dx_hat * x_hat;
//   3. dx from the copies.
// Deterministic: the same inputs give the same bits on every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <mutex>
#include <type_traits>

#include "kernels/bf16_vectors.cuh"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/groupnorm_one_pass.h"
#include "kernels/norm_cuda.h"

namespace kd {
namespace {

using norm_cuda::SumPairD;

// The (a, b) sums of a span's G groups.
template <int G>
struct GroupSums {
  double a[G], b[G];
};
template <int G>
__device__ GroupSums<G> operator+(const GroupSums<G>& x, const GroupSums<G>& y) {
  GroupSums<G> r;
#pragma unroll
  for (int i = 0; i < G; ++i) r.a[i] = x.a[i] + y.a[i], r.b[i] = x.b[i] + y.b[i];
  return r;
}

// This block's image and span (groupnorm_block_span, host-tested).
__device__ __forceinline__ GroupNormSpan block_of(const GroupNormShape& s, int groups_per_block) {
  return groupnorm_block_span(s, groups_per_block, int64_t(blockIdx.x));
}

// Thread threadIdx.x's 16-byte chunks of `values` (walk: groupnorm_chunk_walk), kIn loads issued
// before the first is used; f(q, chunk) for each, in chunk order.
template <int THREADS, int kIn, typename F>
__device__ __forceinline__ void for_each_loaded_chunk(const bf16* __restrict__ values, const GroupNormChunkWalk& walk,
                                                      int64_t chunks, F&& f) {
  for (int64_t q0 = threadIdx.x, at = walk.first; q0 < chunks; q0 += kIn * THREADS, at += kIn * walk.stride) {
    uint4 u[kIn];
#pragma unroll
    for (int i = 0; i < kIn; ++i)
      u[i] = q0 + i * THREADS < chunks ? __ldcs(reinterpret_cast<const uint4*>(values + at + i * walk.stride))
                                       : make_uint4(0, 0, 0, 0);  // (read once from DRAM: streaming loads)
#pragma unroll
    for (int i = 0; i < kIn; ++i)
      if (q0 + i * THREADS < chunks) f(q0 + i * THREADS, u[i]);
  }
}

// ---- forward, 16-byte chunks, G > 1 groups a block -----------------------------------------
template <int THREADS, int G>
__global__ void __launch_bounds__(THREADS)
    forward_vec8_kernel(GroupNormShape s, int64_t span, int64_t chunks, double eps, const bf16* __restrict__ x,
                        const float* __restrict__ gamma, const float* __restrict__ beta, bool relu,
                        bf16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  extern __shared__ uint4 smem_vectors[];  // the span's values as bf16, chunk q at [q]
  using BlockReduce = cub::BlockReduce<GroupSums<G>, THREADS>;
  __shared__ typename BlockReduce::TempStorage reduce_storage;
  __shared__ float stats[2 * G];

  const GroupNormSpan blk = block_of(s, G);
  const int64_t cpg = s.channels_per_group(), k = threadIdx.x % (span / 8);
  const bf16* xi = x + blk.image * s.hw * s.c;
  bf16* yi = y + blk.image * s.hw * s.c;
  int group[8];  // of each of the thread's 8 channels, within the span
  float shift[8], a[8], b[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    group[j] = groupnorm_lane_group(s, 8, k, j);
    shift[j] = bf16_to_float(xi[(blk.g0 + group[j]) * cpg]);
    a[j] = 0.0f, b[j] = 0.0f;
  }

  // 1. copy and sum: several chunks loaded before the first is used (a thread's walk has no
  // division between them), then summed in chunk order as before
  const GroupNormChunkWalk walk = groupnorm_chunk_walk(s, 8, span, blk.g0, threadIdx.x, THREADS);
  for_each_loaded_chunk<THREADS, kGroupNormForwardLoadsInFlight>(xi, walk, chunks, [&](int64_t q, const uint4& u) {
    smem_vectors[q] = u;
    float v[8];
    gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(&u), v);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float d = v[j] - shift[j];
      a[j] += d;
      b[j] += d * d;
    }
  });

  // 2. the groups' statistics: each thread's 8 channels folded into their groups, in channel order
  GroupSums<G> mine;
#pragma unroll
  for (int i = 0; i < G; ++i) {
    mine.a[i] = 0.0, mine.b[i] = 0.0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (group[j] == i) mine.a[i] += double(a[j]), mine.b[i] += double(b[j]);
  }
  const GroupSums<G> total = BlockReduce(reduce_storage).Sum(mine);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < G; ++i) {
      double mu = 0, var = 0;
      norm_moments_from_shifted_sums(bf16_to_float(xi[(blk.g0 + i) * cpg]), total.a[i], total.b[i],
                                     double(s.group_size()), &mu, &var);
      stats[2 * i] = float(mu);
      stats[2 * i + 1] = float(norm_rstd(var, eps));
      if (mean) {
        mean[blk.image * s.groups + blk.g0 + i] = stats[2 * i];
        rstd[blk.image * s.groups + blk.g0 + i] = stats[2 * i + 1];
      }
    }
  }
  __syncthreads();  // also orders every thread's copy before the reads below

  // 3. normalise the copy: the thread's channels' parameters once, then every chunk
  const int64_t ch0 = groupnorm_chunk_channel(s, 8, span, blk.g0, k, 0);
  float mu[8], rs[8], ga[8], be[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    mu[j] = stats[2 * group[j]], rs[j] = stats[2 * group[j] + 1];
    ga[j] = gamma[ch0 + j], be[j] = beta ? beta[ch0 + j] : 0.0f;
  }
  const bf16* copy = reinterpret_cast<const bf16*>(smem_vectors);
  for (int64_t q = threadIdx.x, at = walk.first; q < chunks; q += THREADS, at += walk.stride) {
    float v[8];
    gpu::load_bf16<8, false>(copy + q * 8, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = norm_affine_act(v[j], mu[j], rs[j], ga[j], be[j], relu);
    gpu::store_bf16<8>(yi + at, v);
  }
}

// ---- forward, one group a block (16-byte chunks or single values) ----------------------------
// One shift and one (a, b) pair per thread: fewer registers than the span kernel above, so more
// blocks per SM (with 128 channels a group the span kernel's per-channel sums ran 7x7x4096 at
// 27.6% of copy bandwidth on an H200, this one at 38.1%).
template <int VEC, int THREADS>
__global__ void __launch_bounds__(THREADS)
    forward_one_group_kernel(GroupNormShape s, int64_t chunks, double eps, const bf16* __restrict__ x,
                             const float* __restrict__ gamma, const float* __restrict__ beta, bool relu,
                             bf16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  extern __shared__ uint4 smem_vectors[];  // the group's values as bf16
  bf16* copy = reinterpret_cast<bf16*>(smem_vectors);
  using BlockReduce = cub::BlockReduce<SumPairD, THREADS>;
  __shared__ typename BlockReduce::TempStorage reduce_storage;
  __shared__ float stats[2];

  const GroupNormSpan blk = block_of(s, 1);
  const int64_t cpg = s.channels_per_group();
  const bf16* xi = x + blk.image * s.hw * s.c;
  bf16* yi = y + blk.image * s.hw * s.c;
  const float shift = bf16_to_float(xi[blk.g0 * cpg]);

  float a = 0.0f, b = 0.0f;
  // 16-byte chunks: several loads in flight, as in the span kernel; single values: one at a time
  // (K = cpg values a pixel need not divide the thread count there, so no walk either).
  [[maybe_unused]] const GroupNormChunkWalk walk = groupnorm_chunk_walk(s, VEC, cpg, blk.g0, threadIdx.x, THREADS);
  if constexpr (VEC == 8) {
    for_each_loaded_chunk<THREADS, kGroupNormForwardLoadsInFlight>(xi, walk, chunks, [&](int64_t q, const uint4& u) {
      smem_vectors[q] = u;
      float v[8];
      gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(&u), v);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float d = v[j] - shift;
        a += d;
        b += d * d;
      }
    });
  } else {
    for (int64_t q = threadIdx.x; q < chunks; q += THREADS) {
      copy[q] = xi[groupnorm_chunk_offset(s, 1, cpg, blk.g0, q)];
      const float d = bf16_to_float(copy[q]) - shift;
      a += d;
      b += d * d;
    }
  }
  const SumPairD total = BlockReduce(reduce_storage).Sum(SumPairD{double(a), double(b)});
  if (threadIdx.x == 0) {
    double mu = 0, var = 0;
    norm_moments_from_shifted_sums(shift, total.a, total.b, double(s.group_size()), &mu, &var);
    stats[0] = float(mu);
    stats[1] = float(norm_rstd(var, eps));
    if (mean) mean[blockIdx.x] = stats[0], rstd[blockIdx.x] = stats[1];
  }
  __syncthreads();  // also orders every thread's copy before the reads below
  const float mu = stats[0], rs = stats[1];
  if constexpr (VEC == 8) {
    // A thread's chunks all hold the same 8 channels (K divides the thread count).
    const int64_t ch0 = groupnorm_chunk_channel(s, 8, cpg, blk.g0, threadIdx.x, 0);
    float ga[8], be[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) ga[j] = gamma[ch0 + j], be[j] = beta ? beta[ch0 + j] : 0.0f;
    for (int64_t q = threadIdx.x, at = walk.first; q < chunks; q += THREADS, at += walk.stride) {
      float v[8];
      gpu::load_bf16<8, false>(copy + q * 8, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = norm_affine_act(v[j], mu, rs, ga[j], be[j], relu);
      gpu::store_bf16<8>(yi + at, v);
    }
  } else {
    for (int64_t q = threadIdx.x; q < chunks; q += THREADS) {
      const int64_t ch = groupnorm_chunk_channel(s, 1, cpg, blk.g0, q, 0);
      float v[1] = {norm_affine_act(bf16_to_float(copy[q]), mu, rs, gamma[ch], beta ? beta[ch] : 0.0f, relu)};
      gpu::store_bf16<1>(yi + groupnorm_chunk_offset(s, 1, cpg, blk.g0, q), v);
    }
  }
}

// ---- backward, 16-byte chunks, G groups a block --------------------------------------------
template <int THREADS, int G>
__global__ void __launch_bounds__(THREADS)
    backward_vec8_kernel(GroupNormShape s, int64_t span, int64_t chunks, const bf16* __restrict__ x,
                         const float* __restrict__ gamma, const float* __restrict__ beta,
                         const float* __restrict__ mean, const float* __restrict__ rstd, bool relu,
                         const bf16* __restrict__ dy, bf16* __restrict__ dx, SumPairD* __restrict__ channel_sums) {
  constexpr int kWarps = THREADS / 32;
  extern __shared__ uint4 smem_vectors[];  // x chunks [chunks], dy chunks [chunks], then the sums below
  uint4* x_copy = smem_vectors;
  uint4* dy_copy = smem_vectors + chunks;
  float2* warp_sums = reinterpret_cast<float2*>(smem_vectors + 2 * chunks);  // [kWarps][span]
  SumPairD* span_sums = reinterpret_cast<SumPairD*>(warp_sums + kWarps * span);  // [span]
  __shared__ float group_means[2 * G];  // of dL/dx_hat and of dL/dx_hat * x_hat

  const GroupNormSpan blk = block_of(s, G);
  const int64_t cpg = s.channels_per_group(), chunks_per_pixel = span / 8, k = threadIdx.x % chunks_per_pixel;
  const int64_t at = blk.image * s.hw * s.c, ch0 = groupnorm_chunk_channel(s, 8, span, blk.g0, k, 0);
  float mu[8], rs[8], ga[8], be[8], sum_g[8], sum_gx[8];
  int group[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    group[j] = groupnorm_lane_group(s, 8, k, j);
    const int64_t stat = blk.image * s.groups + blk.g0 + group[j];
    mu[j] = mean[stat], rs[j] = rstd[stat];
    ga[j] = gamma[ch0 + j], be[j] = beta ? beta[ch0 + j] : 0.0f;
    sum_g[j] = 0.0f, sum_gx[j] = 0.0f;
  }

  // 1. copy x and dy (kIn chunks of each loaded before the first is used); per-channel sums of g
  // and g * x_hat, in chunk order
  constexpr int kIn = kGroupNormBackwardLoadsInFlight;
  const GroupNormChunkWalk walk = groupnorm_chunk_walk(s, 8, span, blk.g0, threadIdx.x, THREADS);
  for (int64_t q0 = threadIdx.x, off = at + walk.first; q0 < chunks; q0 += kIn * THREADS, off += kIn * walk.stride) {
    uint4 ux[kIn], ud[kIn];
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      const bool here = q0 + i * THREADS < chunks;
      ux[i] = here ? __ldcs(reinterpret_cast<const uint4*>(x + off + i * walk.stride)) : make_uint4(0, 0, 0, 0);
      ud[i] = here ? __ldcs(reinterpret_cast<const uint4*>(dy + off + i * walk.stride)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      if (q0 + i * THREADS >= chunks) break;
      x_copy[q0 + i * THREADS] = ux[i], dy_copy[q0 + i * THREADS] = ud[i];
      float xv[8], dv[8];
      gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(&ux[i]), xv);
      gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(&ud[i]), dv);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float g = norm_upstream_grad(dv[j], xv[j], mu[j], rs[j], ga[j], be[j], relu);
        sum_g[j] += g;
        sum_gx[j] += g * norm_x_hat(xv[j], mu[j], rs[j]);
      }
    }
  }

  // 2a. across the lanes that hold the same channels (lane % K): a butterfly over offsets 16 .. K.
  // (CUB's WarpReduce reduces contiguous lanes; these are strided.) x + y == y + x in IEEE
  // arithmetic, so every lane of a set ends with the same bits.
  for (int off = 16; off >= chunks_per_pixel; off /= 2)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sum_g[j] += __shfl_xor_sync(0xffffffffu, sum_g[j], off);
      sum_gx[j] += __shfl_xor_sync(0xffffffffu, sum_gx[j], off);
    }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane < chunks_per_pixel)
#pragma unroll
    for (int j = 0; j < 8; ++j) warp_sums[warp * span + lane * 8 + j] = make_float2(sum_g[j], sum_gx[j]);
  __syncthreads();
  // 2b. across warps, in warp order: the image's channel sums
  if (threadIdx.x < span) {
    SumPairD t{0.0, 0.0};
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float2 p = warp_sums[w * span + threadIdx.x];
      t.a += double(p.x), t.b += double(p.y);
    }
    span_sums[threadIdx.x] = t;
    channel_sums[blk.image * s.c + blk.g0 * cpg + threadIdx.x] = t;
  }
  __syncthreads();
  // 2c. the groups' means of dL/dx_hat and dL/dx_hat * x_hat, channels in order
  if (threadIdx.x < G) {
    double a = 0, b = 0;
    for (int64_t j = threadIdx.x * cpg; j < (threadIdx.x + 1) * cpg; ++j) {
      const double gm = double(gamma[blk.g0 * cpg + j]);
      a += gm * span_sums[j].a;
      b += gm * span_sums[j].b;
    }
    group_means[2 * threadIdx.x] = float(a / double(s.group_size()));
    group_means[2 * threadIdx.x + 1] = float(b / double(s.group_size()));
  }
  __syncthreads();

  // 3. dx from the copies
  float mean_dxh[8], mean_dxh_xh[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) mean_dxh[j] = group_means[2 * group[j]], mean_dxh_xh[j] = group_means[2 * group[j] + 1];
  for (int64_t q = threadIdx.x, off = at + walk.first; q < chunks; q += THREADS, off += walk.stride) {
    float xv[8], dv[8];
    gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(x_copy + q), xv);
    gpu::load_bf16<8, false>(reinterpret_cast<const bf16*>(dy_copy + q), dv);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float g = norm_upstream_grad(dv[j], xv[j], mu[j], rs[j], ga[j], be[j], relu);
      dv[j] = norm_affine_input_grad(g, ga[j], norm_x_hat(xv[j], mu[j], rs[j]), mean_dxh[j], mean_dxh_xh[j], rs[j]);
    }
    gpu::store_bf16<8>(dx + off, dv);
  }
}

// ---- launch --------------------------------------------------------------------------------
// Calls fn with the kernel that a plan selects, as a function pointer of its type.
template <typename Fn>
void with_forward_kernel(const GroupNormOnePassPlan& p, Fn&& fn) {
  const bool wide = p.threads == 512;
  if (p.vec == 1) return wide ? fn(&forward_one_group_kernel<1, 512>) : fn(&forward_one_group_kernel<1, 256>);
  switch (p.groups_per_block) {
    case 1: return wide ? fn(&forward_one_group_kernel<8, 512>) : fn(&forward_one_group_kernel<8, 256>);
    case 2: return wide ? fn(&forward_vec8_kernel<512, 2>) : fn(&forward_vec8_kernel<256, 2>);
    case 4: return wide ? fn(&forward_vec8_kernel<512, 4>) : fn(&forward_vec8_kernel<256, 4>);
    case 8: return wide ? fn(&forward_vec8_kernel<512, 8>) : fn(&forward_vec8_kernel<256, 8>);
    default: KD_FAIL("groupnorm one pass: no kernel for ", p.groups_per_block, " groups a block");
  }
}
template <typename Fn>
void with_backward_kernel(const GroupNormOnePassPlan& p, Fn&& fn) {
  const bool wide = p.threads == 512;
  switch (p.groups_per_block) {
    case 1: return wide ? fn(&backward_vec8_kernel<512, 1>) : fn(&backward_vec8_kernel<256, 1>);
    case 2: return wide ? fn(&backward_vec8_kernel<512, 2>) : fn(&backward_vec8_kernel<256, 2>);
    case 4: return wide ? fn(&backward_vec8_kernel<512, 4>) : fn(&backward_vec8_kernel<256, 4>);
    case 8: return wide ? fn(&backward_vec8_kernel<512, 8>) : fn(&backward_vec8_kernel<256, 8>);
    default: KD_FAIL("groupnorm one pass: no kernel for ", p.groups_per_block, " groups a block");
  }
}

// Every kernel the plans may select, for the shared-memory limit below.
template <typename Fn>
void for_each_kernel(Fn&& fn) {
  for (int threads : {256, 512})
    for (int g : {1, 2, 4, 8}) {
      GroupNormOnePassPlan p;
      p.threads = threads, p.groups_per_block = g, p.vec = 8;
      with_forward_kernel(p, fn);
      with_backward_kernel(p, fn);
      p.vec = 1;
      if (g == 1) with_forward_kernel(p, fn);
    }
}

void check_launch(const GroupNormOnePassPlan& plan, const CudaHandles& h, const char* what) {
  KD_CHECK(plan.fits, what, ": the plan does not fit: ", plan.why_not);
  // (Also makes sure the kernels may use that much shared memory on this device.)
  const int64_t limit = groupnorm_one_pass_smem_limit(h);
  KD_CHECK(plan.smem_bytes <= limit, what, ": the plan's ", plan.smem_bytes, " bytes of shared memory exceed the ",
           limit, " this device allows");
}

}  // namespace

int64_t groupnorm_one_pass_smem_limit(const CudaHandles& h) {
  static std::mutex mutex;
  static int64_t limits[64] = {};
  KD_CHECK(h.device >= 0 && h.device < 64, "groupnorm_one_pass_smem_limit: device index ", h.device);
  std::lock_guard<std::mutex> lock(mutex);
  if (limits[h.device] == 0) {
    int optin = 0;
    KD_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, h.device));
    // What the largest static shared memory of the kernels (CUB's reduction, the statistics) leaves.
    int64_t static_bytes = 0;
    for_each_kernel([&](auto kernel) {
      cudaFuncAttributes attr{};
      KD_CUDA_CHECK(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kernel)));
      static_bytes = std::max<int64_t>(static_bytes, int64_t(attr.sharedSizeBytes));
    });
    const int64_t limit = int64_t(optin) - static_bytes;
    // Above 48 KB a kernel must ask for its dynamic shared memory: once per device, not per launch.
    for_each_kernel([&](auto kernel) {
      KD_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)));
    });
    limits[h.device] = limit;
  }
  return limits[h.device];
}

void groupnorm_forward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                     float eps, const bf16* x, const float* gamma, const float* beta, bool relu,
                                     bf16* y, float* mean, float* rstd) {
  check_launch(plan, h, "groupnorm_forward_one_pass_cuda");
  KD_CHECK(!plan.backward, "groupnorm_forward_one_pass_cuda: a backward plan");
  KD_CHECK((mean == nullptr) == (rstd == nullptr), "groupnorm_forward_one_pass_cuda: mean and rstd are saved together");
  KD_CHECK(plan.vec == 1 || (norm_cuda::aligned16(x) && norm_cuda::aligned16(y)),
           "groupnorm_forward_one_pass_cuda: a plan of 16-byte chunks needs 16-byte aligned x and y");
  with_forward_kernel(plan, [&](auto kernel) {
    if constexpr (std::is_same_v<decltype(kernel), decltype(&forward_one_group_kernel<8, 256>)>)
      kernel<<<unsigned(plan.blocks), plan.threads, size_t(plan.smem_bytes), h.stream>>>(
          s, plan.chunks, double(eps), x, gamma, beta, relu, y, mean, rstd);
    else
      kernel<<<unsigned(plan.blocks), plan.threads, size_t(plan.smem_bytes), h.stream>>>(
          s, plan.span, plan.chunks, double(eps), x, gamma, beta, relu, y, mean, rstd);
  });
  KD_CUDA_LAUNCH_CHECK("groupnorm one-pass forward");
}

void groupnorm_backward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                      const bf16* x, const float* gamma, const float* beta, const float* mean,
                                      const float* rstd, bool relu, const bf16* dy, bf16* dx, float* dgamma,
                                      float* dbeta) {
  check_launch(plan, h, "groupnorm_backward_one_pass_cuda");
  KD_CHECK(plan.backward && plan.vec == 8, "groupnorm_backward_one_pass_cuda: needs a backward plan of 16-byte chunks");
  KD_CHECK(norm_cuda::aligned16(x) && norm_cuda::aligned16(dy) && norm_cuda::aligned16(dx),
           "groupnorm_backward_one_pass_cuda: needs 16-byte aligned x, dy and dx");
  KD_CHECK(mean && rstd, "groupnorm_backward_one_pass_cuda: needs the mean and rstd saved by the forward pass");
  KD_CHECK(h.workspace, "groupnorm_backward_one_pass_cuda: CudaHandles without a workspace");
  auto* channel_sums = static_cast<SumPairD*>(h.workspace->get(size_t(s.n * s.c) * sizeof(SumPairD)));
  with_backward_kernel(plan, [&](auto kernel) {
    kernel<<<unsigned(plan.blocks), plan.threads, size_t(plan.smem_bytes), h.stream>>>(
        s, plan.span, plan.chunks, x, gamma, beta, mean, rstd, relu, dy, dx, channel_sums);
  });
  KD_CUDA_LAUNCH_CHECK("groupnorm one-pass backward");
  norm_cuda::add_param_grads(h, s.n, s.c, channel_sums, dgamma, dbeta);
}

}  // namespace kd
