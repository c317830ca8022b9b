// GroupNorm in one pass over memory (issue 16, item 1): one CUDA block per (image, span of G
// adjacent groups) copies the span's values into shared memory while it sums them, reduces the
// sums to each group's statistics, then works from its copy. DRAM sees each input read once and
// each output written once, in one launch (plus, for the backward, a small kernel that adds the
// per-image channel sums into dgamma/dbeta); the two-pass path (groupnorm.cu) reads its inputs
// twice (the second time mostly from L2) and launches three kernels per L2 slab of images.
//
// Layout, NHWC: a span is channels [g0 * cpg, (g0 + G) * cpg) of every pixel of one image. Its
// values are read in chunks of `vec` consecutive channels (8 bf16 = one 16-byte load, or 1):
// with K = span / vec chunks per pixel, chunk q is pixel q / K, channels g0 * cpg + (q % K) * vec
// ... + vec - 1, and lands at q * vec in shared memory. Thread t takes chunks t, t + threads, ...;
// where K divides the thread count, thread t's chunks all hold the same channels (q % K = t % K),
// so its per-channel sums and parameters stay in registers.
//
// Why spans of several groups: a block reads span * 2 bytes of every c * 2-byte pixel row. With 8
// channels a group that is 16 bytes, half of a 32-byte DRAM sector (measured on an H200: the
// one-pass forward at 20.8% of copy bandwidth, slower than the two-pass path's 25.4%); the plan
// takes G adjacent groups so that a span covers >= 16 channels (whole sectors) where shared memory
// allows.
//
// Shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KB on Hopper): the span's
// values as bf16, twice that in the backward (x and dy). Where a span does not fit, the plan
// takes fewer groups, and where one group does not fit, the two-pass path runs.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/groupnorm.h"

namespace kd {

// The kernels exist for G = 1, 2, 4 and 8 (one channel a group: 8 groups, one 16-byte chunk).
constexpr int kGroupNormMaxGroupsPerBlock = 8;

struct GroupNormOnePassPlan {
  bool fits = false;        // false: run the two-pass path (why_not says why)
  bool backward = false;    // a backward plan: x and dy on chip, 16-byte chunks only
  int vec = 1;              // channels per chunk: 8 (16-byte loads and stores) or 1
  int threads = 256;        // per block
  int groups_per_block = 1; // G: adjacent groups a block keeps on chip
  int64_t span = 0;         // channels of a block's span: G * cpg
  int64_t chunks = 0;       // chunks per block: hw * span / vec
  int64_t blocks = 0;       // n * groups / G
  int64_t smem_bytes = 0;   // dynamic shared memory per block
  std::string why_not;
  int64_t chunks_per_pixel() const { return span / vec; }
};

// aligned16: every activation pointer 16-byte aligned. max_smem_bytes: the device's opt-in limit
// per block (groupnorm_one_pass_smem_limit). A backward plan fits only with 16-byte chunks and
// K = span / 8 a power of two <= 32 (the per-channel sums are reduced within warps). threads: 0
// for the plan's block size, or 256 / 512 (CudaHandles::groupnorm_threads).
GroupNormOnePassPlan groupnorm_one_pass_plan(const GroupNormShape& s, bool aligned16, int64_t max_smem_bytes,
                                             bool backward = false, int threads = 0);

// What block b of a plan's n * groups / G blocks normalises: its image and the first group of
// its span (blocks of one image are consecutive, spans in group order).
struct GroupNormSpan {
  int64_t image, g0;
};
KD_HD GroupNormSpan groupnorm_block_span(const GroupNormShape& s, int groups_per_block, int64_t block) {
  const int64_t spans = s.groups / groups_per_block;
  return {block / spans, (block % spans) * groups_per_block};
}

// Channel of value j (< vec) of chunk q of the span that starts at group g0 (span channels).
KD_HD int64_t groupnorm_chunk_channel(const GroupNormShape& s, int vec, int64_t span, int64_t g0, int64_t q, int j) {
  return g0 * (s.c / s.groups) + (q % (span / vec)) * vec + j;
}

// Element offset of chunk q of that span from the image's first value: its pixel's row of c
// channels, then its first channel.
KD_HD int64_t groupnorm_chunk_offset(const GroupNormShape& s, int vec, int64_t span, int64_t g0, int64_t q) {
  return (q / (span / vec)) * s.c + groupnorm_chunk_channel(s, vec, span, g0, q, 0);
}

// Thread t's chunks t, t + threads, ... when K = span / vec divides the thread count (every
// 16-byte plan): chunk t + i * threads starts at first + i * stride elements from the image's
// first value, so the kernels walk their chunks without a division. (Computing
// groupnorm_chunk_offset per chunk put a 64-bit division and a branch between consecutive loads,
// and no thread ever had two loads in flight.)
struct GroupNormChunkWalk {
  int64_t first, stride;
};
KD_HD GroupNormChunkWalk groupnorm_chunk_walk(const GroupNormShape& s, int vec, int64_t span, int64_t g0, int64_t t,
                                              int threads) {
  return {groupnorm_chunk_offset(s, vec, span, g0, t), int64_t(threads) / (span / vec) * s.c};
}

// How many of a thread's 16-byte chunks the kernels load before using the first: the forward
// 4 (64 bytes in flight a thread), the backward 2 of x and 2 of dy (its sums already hold ~100
// registers a thread).
constexpr int kGroupNormForwardLoadsInFlight = 4;
constexpr int kGroupNormBackwardLoadsInFlight = 2;

// Which of the span's groups (0 .. G-1) value j of a chunk at position k (= q % K) of its pixel
// belongs to.
KD_HD int groupnorm_lane_group(const GroupNormShape& s, int vec, int64_t k, int j) {
  return int((k * vec + j) / (s.c / s.groups));
}

// The one-pass forward (same contract as groupnorm_forward_cuda; mean/rstd may be null). The plan
// must fit (groupnorm_one_pass_plan with the device's limit).
void groupnorm_forward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                     float eps, const bf16* x, const float* gamma, const float* beta, bool relu,
                                     bf16* y, float* mean, float* rstd);

// The one-pass backward (same contract as groupnorm_backward_cuda: dx overwritten, dgamma and
// dbeta added to; uses h.workspace for the [n, c] channel sums). The plan must be a backward one
// that fits.
void groupnorm_backward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                      const bf16* x, const float* gamma, const float* beta, const float* mean,
                                      const float* rstd, bool relu, const bf16* dy, bf16* dx, float* dgamma,
                                      float* dbeta);

// The device's opt-in shared memory per block, in bytes, less the kernels' static shared memory
// (queried once per device, when the kernels are also allowed to use that much).
int64_t groupnorm_one_pass_smem_limit(const CudaHandles& h);

}  // namespace kd
