// GroupNorm forward in one pass over memory (issue 16, item 1): one CUDA block per (image, group)
// copies the group's values into shared memory while it sums them, reduces the sums to the
// group's mean and rstd, then normalises its copy and writes y. DRAM sees x read once and y
// written once, one launch per call; the two-pass path (groupnorm.cu) reads x twice (the second
// time mostly from L2) and launches three kernels per L2 slab of images.
//
// The group's values, NHWC: pixel p, channel g * cpg + j (j < cpg) of one image. They are read in
// chunks of `vec` consecutive channels (8 bf16 = one 16-byte load, or 1); chunk q is pixel
// q / (cpg / vec), channels g * cpg + (q % (cpg / vec)) * vec ... + vec - 1, and lands at
// q * vec in shared memory. Thread t of the block takes chunks t, t + threads, ...
//
// A group must fit in a block's shared memory (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KB on
// Hopper, i.e. ~113,000 bf16 values; BiT's largest group, 56x56 pixels x 16 channels, is 50,176).
// Where it does not, groupnorm_forward_cuda runs the two-pass path. Behind
// CudaHandles::groupnorm_one_pass (run.groupnorm_one_pass) until a GPU has validated it.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/groupnorm.h"

namespace kd {

struct GroupNormOnePassPlan {
  bool fits = false;       // false: run the two-pass path (why_not says why)
  int vec = 1;             // channels per chunk: 8 (16-byte loads and stores) or 1
  int threads = 256;       // per block
  int64_t chunks = 0;      // chunks per group: hw * cpg / vec
  int64_t smem_bytes = 0;  // dynamic shared memory per block: the group's values as bf16
  std::string why_not;
};

// aligned16: x and y both 16-byte aligned. max_smem_bytes: the device's opt-in limit per block.
GroupNormOnePassPlan groupnorm_one_pass_plan(const GroupNormShape& s, bool aligned16, int64_t max_smem_bytes);

// Channel of value j (< vec) of chunk q of group g.
KD_HD int64_t groupnorm_chunk_channel(const GroupNormShape& s, int vec, int64_t g, int64_t q, int j) {
  const int64_t cpg = s.c / s.groups;
  return g * cpg + (q % (cpg / vec)) * vec + j;
}

// Element offset of chunk q of group g from the image's first value: its pixel's row of c
// channels, then its first channel.
KD_HD int64_t groupnorm_chunk_offset(const GroupNormShape& s, int vec, int64_t g, int64_t q) {
  return (q / (s.c / s.groups / vec)) * s.c + groupnorm_chunk_channel(s, vec, g, q, 0);
}

// The one-pass forward (same contract as groupnorm_forward_cuda; mean/rstd may be null). The plan
// must fit (groupnorm_one_pass_plan with the device's limit).
void groupnorm_forward_one_pass_cuda(const CudaHandles& h, const GroupNormOnePassPlan& plan, const GroupNormShape& s,
                                     float eps, const bf16* x, const float* gamma, const float* beta, bool relu,
                                     bf16* y, float* mean, float* rstd);

// The device's opt-in shared memory per block, in bytes, less the kernel's static shared memory
// (queried once per device, when the kernels are also allowed to use that much).
int64_t groupnorm_one_pass_smem_limit(const CudaHandles& h);

}  // namespace kd
