// The GroupNorm/BatchNorm kernels (see norm_cuda.h for the passes, normalize.h for the block
// partition and the per-element math, which the CPU references run too).
//
// Streaming kernels (column sums, apply) use the 2-D blocks of NormTiling: a warp reads whole
// 16-byte vectors of consecutive channels, each thread keeps its channels' parameters and sums
// in registers over the rows it visits. A block's column sums are added over its rows in shared
// memory in a fixed order and written once per (segment, chunk, channel); the finishing kernels
// add those partials in double with CUB warp and block reductions. No atomics: every result is
// the same from run to run.
#include <cuda_bf16.h>

#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "kernels/batchnorm.h"
#include "kernels/bf16_vectors.cuh"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/norm_cuda.h"

namespace kd::norm_cuda {
namespace {

using gpu::load_bf16;
using gpu::store_bf16;

constexpr int kWarpThreads = 32;
constexpr int kFinishThreads = 256;  // finishing kernels: one block per (segment, group)
constexpr int kFinishWarps = kFinishThreads / kWarpThreads;
constexpr int kParamThreads = 256;

// Per-channel parameters and per-(segment, group) statistics of the VEC channels from ch0.
template <int VEC>
struct ChannelParams {
  float gamma[VEC], beta[VEC], mean[VEC], rstd[VEC];
  __device__ void load(const NormAffine& p, int64_t groups, int64_t segment, int64_t ch0) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t ch = ch0 + j, stat = segment * groups + ch / p.channels_per_group;
      gamma[j] = p.gamma[ch];
      beta[j] = p.beta ? p.beta[ch] : 0.0f;
      mean[j] = p.mean[stat];
      rstd[j] = p.rstd[stat];
    }
  }
};

// ---- column sums (pass 1 of forward and backward) -----------------------------------------
// Adds the threads_y row-lanes of each channel of the block's tile in a fixed order and writes
// one pair per (segment, chunk, channel). Every thread of the block must call it.
template <int VEC>
__device__ void write_block_column_sums(const NormTiling& t, const NormBlock& k, const float (&a)[VEC],
                                        const float (&b)[VEC], SumPairF* __restrict__ partials) {
  __shared__ SumPairF lanes[kNormBlockThreads * VEC];  // [threads_y][tile_channels]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t width = t.tile_channels();
#pragma unroll
  for (int j = 0; j < VEC; ++j) lanes[ty * width + tx * VEC + j] = SumPairF{a[j], b[j]};
  __syncthreads();
  const int tid = ty * t.threads_x + tx, threads = t.threads_x * t.threads_y;
  for (int64_t i = tid; i < k.col_end - k.col_begin; i += threads) {
    SumPairF s{0.0f, 0.0f};
    for (int y = 0; y < t.threads_y; ++y) {
      s.a += lanes[y * width + i].a;
      s.b += lanes[y * width + i].b;
    }
    partials[norm_partial_index(t, k.segment, k.chunk, k.col_begin + i)] = s;
  }
}

template <int VEC>
__global__ void __launch_bounds__(kNormBlockThreads)
    moment_sums_kernel(NormTiling t, int64_t cpg, const bf16* __restrict__ x, SumPairF* __restrict__ partials) {
  const NormBlock k = norm_block(t, blockIdx.x);
  const int64_t ch0 = norm_thread_channel(t, k, threadIdx.x);
  float a[VEC], b[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) a[j] = b[j] = 0.0f;
  if (ch0 < k.col_end) {
    float shift[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j)
      shift[j] = bf16_to_float(x[norm_element_index(t, k.segment, 0, norm_group_first_channel(ch0 + j, cpg))]);
#pragma unroll 4
    for (int64_t r = k.row_begin + threadIdx.y; r < k.row_end; r += t.threads_y) {
      float v[VEC];
      load_bf16<VEC, false>(x + norm_element_index(t, k.segment, r, ch0), v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float d = v[j] - shift[j];
        a[j] += d;
        b[j] += d * d;
      }
    }
  }
  write_block_column_sums<VEC>(t, k, a, b, partials);
}

template <int VEC>
__global__ void __launch_bounds__(kNormBlockThreads)
    grad_sums_kernel(NormTiling t, NormAffine p, const bf16* __restrict__ x, const bf16* __restrict__ dy,
                     SumPairF* __restrict__ partials) {
  const NormBlock k = norm_block(t, blockIdx.x);
  const int64_t ch0 = norm_thread_channel(t, k, threadIdx.x);
  float a[VEC], b[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) a[j] = b[j] = 0.0f;
  if (ch0 < k.col_end) {
    ChannelParams<VEC> q;
    q.load(p, t.c / p.channels_per_group, k.segment, ch0);
#pragma unroll 2
    for (int64_t r = k.row_begin + threadIdx.y; r < k.row_end; r += t.threads_y) {
      const int64_t i = norm_element_index(t, k.segment, r, ch0);
      float xv[VEC], dyv[VEC];
      load_bf16<VEC, false>(x + i, xv);
      load_bf16<VEC, false>(dy + i, dyv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float g = norm_upstream_grad(dyv[j], xv[j], q.mean[j], q.rstd[j], q.gamma[j], q.beta[j], p.relu);
        a[j] += g;
        b[j] += g * norm_x_hat(xv[j], q.mean[j], q.rstd[j]);
      }
    }
  }
  write_block_column_sums<VEC>(t, k, a, b, partials);
}

// ---- finishing: one block per (segment, group) --------------------------------------------
// Sums the partials of the group's channels: warp w takes channels w, w + 8, ...; its lanes add
// the channel's chunks in double and a warp reduction gives the channel's total, which lane 0
// hands to per_channel(ch, total) and adds what that returns. The block's total (of what
// per_channel returned) is valid in thread 0.
template <typename PerChannel>
__device__ SumPairD sum_group(const NormTiling& t, int64_t segment, int64_t group, int64_t cpg,
                              const SumPairF* __restrict__ partials, PerChannel per_channel) {
  using WarpReduce = cub::WarpReduce<SumPairD>;
  using BlockReduce = cub::BlockReduce<SumPairD, kFinishThreads>;
  __shared__ typename WarpReduce::TempStorage warp_storage[kFinishWarps];
  __shared__ typename BlockReduce::TempStorage block_storage;
  const int warp = threadIdx.x / kWarpThreads, lane = threadIdx.x % kWarpThreads;
  SumPairD mine{0.0, 0.0};
  for (int64_t j = warp; j < cpg; j += kFinishWarps) {
    const int64_t ch = group * cpg + j;
    SumPairD s{0.0, 0.0};
    for (int64_t chunk = lane; chunk < t.chunks; chunk += kWarpThreads) {
      const SumPairF v = partials[norm_partial_index(t, segment, chunk, ch)];
      s.a += double(v.a);
      s.b += double(v.b);
    }
    s = WarpReduce(warp_storage[warp]).Sum(s);
    __syncwarp();
    if (lane == 0) mine = mine + per_channel(ch, s);
  }
  return BlockReduce(block_storage).Sum(mine);
}

__global__ void __launch_bounds__(kFinishThreads)
    finish_moments_kernel(NormTiling t, int64_t cpg, double eps, const bf16* __restrict__ x,
                          const SumPairF* __restrict__ partials, float* __restrict__ mean, float* __restrict__ rstd,
                          double momentum, float* __restrict__ running_mean, float* __restrict__ running_var) {
  const int64_t groups = t.c / cpg, segment = blockIdx.x / groups, group = blockIdx.x % groups;
  const SumPairD total = sum_group(t, segment, group, cpg, partials, [](int64_t, SumPairD s) { return s; });
  if (threadIdx.x != 0) return;
  const double shift = bf16_to_float(x[norm_element_index(t, segment, 0, group * cpg)]);
  const double count = double(t.rows_per_seg) * double(cpg);
  double mu = 0, var = 0;
  norm_moments_from_shifted_sums(shift, total.a, total.b, count, &mu, &var);
  const int64_t i = segment * groups + group;
  mean[i] = float(mu);
  rstd[i] = float(norm_rstd(var, eps));
  if (running_mean) {
    running_mean[i] = float((1 - momentum) * double(running_mean[i]) + momentum * mu);
    running_var[i] = float((1 - momentum) * double(running_var[i]) + momentum * var * (count / (count - 1)));
  }
}

__global__ void __launch_bounds__(kFinishThreads)
    finish_grads_kernel(NormTiling t, int64_t cpg, const float* __restrict__ gamma,
                        const SumPairF* __restrict__ partials, SumPairD* __restrict__ channel_sums,
                        SumPairF* __restrict__ group_means) {
  const int64_t groups = t.c / cpg, segment = blockIdx.x / groups, group = blockIdx.x % groups;
  const SumPairD total = sum_group(t, segment, group, cpg, partials, [&](int64_t ch, SumPairD s) {
    channel_sums[segment * t.c + ch] = s;
    const double g = double(gamma[ch]);
    return SumPairD{g * s.a, g * s.b};
  });
  if (threadIdx.x != 0) return;
  const double count = double(t.rows_per_seg) * double(cpg);
  group_means[segment * groups + group] = SumPairF{float(total.a / count), float(total.b / count)};
}

// SyncBatchNorm's local moments (one segment, one channel per group, one block per channel):
// moments = [count, mean[c], m2[c]] in double (kernels/batchnorm.h).
__global__ void __launch_bounds__(kFinishThreads)
    local_moments_kernel(NormTiling t, const bf16* __restrict__ x, const SumPairF* __restrict__ partials,
                         double* __restrict__ moments) {
  const int64_t ch = blockIdx.x;
  const SumPairD total = sum_group(t, 0, ch, 1, partials, [](int64_t, SumPairD s) { return s; });
  if (threadIdx.x != 0) return;
  const double shift = bf16_to_float(x[norm_element_index(t, 0, 0, ch)]);
  const double count = double(t.rows_per_seg);
  double mu = 0, var = 0;
  norm_moments_from_shifted_sums(shift, total.a, total.b, count, &mu, &var);
  moments[1 + ch] = mu;
  moments[1 + t.c + ch] = var * count;
  if (ch == 0) moments[0] = count;
}

// ---- apply (pass 2 of forward and backward) -----------------------------------------------
template <int VEC>
__global__ void __launch_bounds__(kNormBlockThreads)
    apply_forward_kernel(NormTiling t, NormAffine p, const bf16* __restrict__ x, bf16* __restrict__ y) {
  const NormBlock k = norm_block(t, blockIdx.x);
  const int64_t ch0 = norm_thread_channel(t, k, threadIdx.x);
  if (ch0 >= k.col_end) return;
  ChannelParams<VEC> q;
  q.load(p, t.c / p.channels_per_group, k.segment, ch0);
#pragma unroll 4
  for (int64_t r = k.row_begin + threadIdx.y; r < k.row_end; r += t.threads_y) {
    const int64_t i = norm_element_index(t, k.segment, r, ch0);
    float v[VEC];
    load_bf16<VEC, true>(x + i, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = norm_affine_act(v[j], q.mean[j], q.rstd[j], q.gamma[j], q.beta[j], p.relu);
    store_bf16<VEC>(y + i, v);
  }
}

template <int VEC>
__global__ void __launch_bounds__(kNormBlockThreads)
    apply_backward_kernel(NormTiling t, NormAffine p, const SumPairF* __restrict__ group_means,
                          const bf16* __restrict__ x, const bf16* __restrict__ dy, bf16* __restrict__ dx) {
  const NormBlock k = norm_block(t, blockIdx.x);
  const int64_t ch0 = norm_thread_channel(t, k, threadIdx.x);
  if (ch0 >= k.col_end) return;
  const int64_t groups = t.c / p.channels_per_group;
  ChannelParams<VEC> q;
  q.load(p, groups, k.segment, ch0);
  float mean_dxh[VEC], mean_dxh_xh[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const SumPairF m = group_means[k.segment * groups + (ch0 + j) / p.channels_per_group];
    mean_dxh[j] = m.a;
    mean_dxh_xh[j] = m.b;
  }
#pragma unroll 2
  for (int64_t r = k.row_begin + threadIdx.y; r < k.row_end; r += t.threads_y) {
    const int64_t i = norm_element_index(t, k.segment, r, ch0);
    float xv[VEC], g[VEC];
    load_bf16<VEC, true>(x + i, xv);
    load_bf16<VEC, true>(dy + i, g);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float up = norm_upstream_grad(g[j], xv[j], q.mean[j], q.rstd[j], q.gamma[j], q.beta[j], p.relu);
      g[j] = norm_affine_input_grad(up, q.gamma[j], norm_x_hat(xv[j], q.mean[j], q.rstd[j]), mean_dxh[j],
                                    mean_dxh_xh[j], q.rstd[j]);
    }
    store_bf16<VEC>(dx + i, g);
  }
}

// ---- per-channel kernels ------------------------------------------------------------------
__global__ void __launch_bounds__(kParamThreads)
    add_param_grads_kernel(int64_t segments, int64_t c, const SumPairD* __restrict__ channel_sums,
                           float* __restrict__ dgamma, float* __restrict__ dbeta) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  SumPairD s{0.0, 0.0};
  for (int64_t seg = 0; seg < segments; ++seg) s = s + channel_sums[seg * c + ch];
  dbeta[ch] += float(s.a);
  dgamma[ch] += float(s.b);
}

__global__ void __launch_bounds__(kParamThreads)
    rstd_from_variance_kernel(int64_t c, double eps, const float* __restrict__ var, float* __restrict__ rstd) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch < c) rstd[ch] = float(norm_rstd(double(var[ch]), eps));
}

__global__ void __launch_bounds__(kParamThreads)
    finish_synced_moments_kernel(int64_t c, int64_t ranks, const double* __restrict__ gathered, double eps,
                                 double momentum, float* __restrict__ mean, float* __restrict__ rstd,
                                 double* __restrict__ total_count, float* __restrict__ running_mean,
                                 float* __restrict__ running_var) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double mu = 0, var = 0, count = 0;
  batchnorm_combine_moments(gathered, ranks, c, ch, &mu, &var, &count);
  mean[ch] = float(mu);
  rstd[ch] = float(norm_rstd(var, eps));
  if (running_mean) {
    double rm = double(running_mean[ch]), rv = double(running_var[ch]);
    batchnorm_update_running(mu, var, count, momentum, &rm, &rv);
    running_mean[ch] = float(rm), running_var[ch] = float(rv);
  }
  if (ch == 0) *total_count = count;
}

__global__ void __launch_bounds__(kParamThreads)
    means_from_sums_kernel(int64_t c, const float* __restrict__ gamma, const SumPairD* __restrict__ total_sums,
                           const double* __restrict__ total_count, SumPairF* __restrict__ means) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  const double g = double(gamma[ch]), n = *total_count;
  means[ch] = SumPairF{float(g * total_sums[ch].a / n), float(g * total_sums[ch].b / n)};
}

dim3 tile_block(const NormTiling& t) { return dim3(unsigned(t.threads_x), unsigned(t.threads_y)); }

void check_tiling(const NormTiling& t, const char* op) {
  KD_CHECK(t.blocks() > 0 && t.blocks() < (int64_t(1) << 31), op, ": ", t.blocks(), " blocks do not fit one grid");
  KD_CHECK(t.vec == 1 || t.vec == 8, op, ": vectors of ", t.vec, " channels");
  KD_CHECK(int64_t(t.threads_x) * t.threads_y <= kNormBlockThreads && t.threads_y * t.tile_channels() <=
               int64_t(kNormBlockThreads) * t.vec,
           op, ": block of ", t.threads_x, " x ", t.threads_y, " threads");
}

unsigned finish_grid(const NormTiling& t, int64_t cpg, const char* op) {
  KD_CHECK(cpg > 0 && t.c % cpg == 0, op, ": ", cpg, " channels per group do not divide ", t.c);
  const int64_t blocks = t.segments * (t.c / cpg);
  KD_CHECK(blocks < (int64_t(1) << 31), op, ": ", blocks, " groups do not fit one grid");
  return unsigned(blocks);
}

unsigned channel_grid(int64_t c) { return unsigned(std::max<int64_t>(1, ceil_div(c, kParamThreads))); }

}  // namespace

int64_t target_blocks(const CudaHandles& h) { return int64_t(h.sm_count > 0 ? h.sm_count : 132) * 8; }

void moment_sums(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, const bf16* x,
                 SumPairF* partials) {
  check_tiling(t, "moment_sums");
  if (t.vec == 8)
    moment_sums_kernel<8><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, channels_per_group, x, partials);
  else
    moment_sums_kernel<1><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, channels_per_group, x, partials);
  KD_CUDA_LAUNCH_CHECK("moment_sums_kernel");
}

void finish_moments(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, float eps, const bf16* x,
                    const SumPairF* partials, float* mean, float* rstd, float momentum, float* running_mean,
                    float* running_var) {
  const unsigned grid = finish_grid(t, channels_per_group, "finish_moments");
  KD_CHECK(!running_mean || (t.segments == 1 && channels_per_group == 1 && running_var),
           "finish_moments: running statistics are per channel of one segment");
  finish_moments_kernel<<<grid, kFinishThreads, 0, h.stream>>>(t, channels_per_group, double(eps), x, partials, mean,
                                                               rstd, double(momentum), running_mean, running_var);
  KD_CUDA_LAUNCH_CHECK("finish_moments_kernel");
}

void apply_forward(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const bf16* x, bf16* y) {
  check_tiling(t, "apply_forward");
  if (t.vec == 8)
    apply_forward_kernel<8><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, x, y);
  else
    apply_forward_kernel<1><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, x, y);
  KD_CUDA_LAUNCH_CHECK("apply_forward_kernel");
}

void grad_sums(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const bf16* x, const bf16* dy,
               SumPairF* partials) {
  check_tiling(t, "grad_sums");
  if (t.vec == 8)
    grad_sums_kernel<8><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, x, dy, partials);
  else
    grad_sums_kernel<1><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, x, dy, partials);
  KD_CUDA_LAUNCH_CHECK("grad_sums_kernel");
}

void finish_grads(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, const float* gamma,
                  const SumPairF* partials, SumPairD* channel_sums, SumPairF* group_means) {
  const unsigned grid = finish_grid(t, channels_per_group, "finish_grads");
  finish_grads_kernel<<<grid, kFinishThreads, 0, h.stream>>>(t, channels_per_group, gamma, partials, channel_sums,
                                                             group_means);
  KD_CUDA_LAUNCH_CHECK("finish_grads_kernel");
}

void apply_backward(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const SumPairF* group_means,
                    const bf16* x, const bf16* dy, bf16* dx) {
  check_tiling(t, "apply_backward");
  if (t.vec == 8)
    apply_backward_kernel<8><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, group_means, x, dy, dx);
  else
    apply_backward_kernel<1><<<unsigned(t.blocks()), tile_block(t), 0, h.stream>>>(t, p, group_means, x, dy, dx);
  KD_CUDA_LAUNCH_CHECK("apply_backward_kernel");
}

void add_param_grads(const CudaHandles& h, int64_t segments, int64_t c, const SumPairD* channel_sums, float* dgamma,
                     float* dbeta) {
  add_param_grads_kernel<<<channel_grid(c), kParamThreads, 0, h.stream>>>(segments, c, channel_sums, dgamma, dbeta);
  KD_CUDA_LAUNCH_CHECK("add_param_grads_kernel");
}

void rstd_from_variance(const CudaHandles& h, int64_t c, float eps, const float* var, float* rstd) {
  rstd_from_variance_kernel<<<channel_grid(c), kParamThreads, 0, h.stream>>>(c, double(eps), var, rstd);
  KD_CUDA_LAUNCH_CHECK("rstd_from_variance_kernel");
}

void local_moments(const CudaHandles& h, const NormTiling& t, const bf16* x, const SumPairF* partials,
                   double* moments) {
  KD_CHECK(t.segments == 1, "local_moments: BatchNorm's statistics are over one segment, got ", t.segments);
  const unsigned grid = finish_grid(t, 1, "local_moments");
  local_moments_kernel<<<grid, kFinishThreads, 0, h.stream>>>(t, x, partials, moments);
  KD_CUDA_LAUNCH_CHECK("local_moments_kernel");
}

void finish_synced_moments(const CudaHandles& h, int64_t c, int64_t ranks, const double* gathered, float eps,
                           float momentum, float* mean, float* rstd, double* total_count, float* running_mean,
                           float* running_var) {
  KD_CHECK(c > 0 && ranks > 0, "finish_synced_moments: need c > 0 and ranks > 0, got c ", c, ", ranks ", ranks);
  KD_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "finish_synced_moments: running mean and running variance must be given together");
  finish_synced_moments_kernel<<<channel_grid(c), kParamThreads, 0, h.stream>>>(
      c, ranks, gathered, double(eps), double(momentum), mean, rstd, total_count, running_mean, running_var);
  KD_CUDA_LAUNCH_CHECK("finish_synced_moments_kernel");
}

void means_from_sums(const CudaHandles& h, int64_t c, const float* gamma, const SumPairD* total_sums,
                     const double* total_count, SumPairF* means) {
  means_from_sums_kernel<<<channel_grid(c), kParamThreads, 0, h.stream>>>(c, gamma, total_sums, total_count, means);
  KD_CUDA_LAUNCH_CHECK("means_from_sums_kernel");
}

}  // namespace kd::norm_cuda
