// The CUDA engine behind GroupNorm and BatchNorm (kernels/norm_cuda.cu); groupnorm.cu and
// batchnorm.cu are its launchers. BatchNorm is GroupNorm with one segment of n*h*w rows and one
// channel per group, so both run the same kernels on a NormTiling (kernels/normalize.h):
//   forward:  moment_sums -> finish_moments -> apply_forward
//   backward: grad_sums -> finish_grads -> apply_backward, then add_param_grads
// Every reduction is two-level and in a fixed order (no atomics): results are deterministic.
// Each function launches one kernel on h.stream and checks the launch; none synchronises.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"
#include "kernels/normalize.h"

namespace kd::norm_cuda {

struct SumPairF {
  float a, b;
};
struct SumPairD {
  double a, b;
};
KD_HD SumPairD operator+(const SumPairD& x, const SumPairD& y) { return {x.a + y.a, x.b + y.b}; }

// Per-channel parameters and per-(segment, group) statistics, groups of `channels_per_group`
// contiguous channels (groups = c / channels_per_group per segment). beta may be null without relu.
struct NormAffine {
  int64_t channels_per_group = 1;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* mean = nullptr;  // [segments, groups]
  const float* rstd = nullptr;  // [segments, groups]
  bool relu = false;
};

// Column sums per (segment, chunk, channel): [t.segments, t.chunks, t.c] pairs.
inline size_t partial_count(const NormTiling& t) { return size_t(t.segments * t.chunks * t.c); }

// Blocks per launch the tiling aims at: enough to fill every SM several times.
int64_t target_blocks(const CudaHandles& h);

// True when p is 16-byte aligned (the vectorised kernels' loads and stores).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Pass 1 of the forward: per (segment, chunk, channel), a = sum(x - K), b = sum((x - K)^2),
// K = the segment's first value of the channel's group.
void moment_sums(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, const bf16* x,
                 SumPairF* partials);

// Per (segment, group): mean and rstd (fp32) from the partials. With running statistics
// (BatchNorm: one segment, one channel per group) also running = (1 - momentum) * running +
// momentum * batch, with the unbiased variance.
void finish_moments(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, float eps, const bf16* x,
                    const SumPairF* partials, float* mean, float* rstd, float momentum, float* running_mean,
                    float* running_var);

// y = act(gamma * x_hat + beta).
void apply_forward(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const bf16* x, bf16* y);

// Pass 1 of the backward: per (segment, chunk, channel), a = sum(g), b = sum(g * x_hat), with
// g = dL/d(gamma * x_hat + beta) (dy, or zero where the recomputed ReLU output was not > 0).
void grad_sums(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const bf16* x, const bf16* dy,
               SumPairF* partials);

// channel_sums [t.segments, c]: the partials summed over chunks in double; group_means
// [t.segments, groups]: means over the group of gamma * g and gamma * g * x_hat.
void finish_grads(const CudaHandles& h, const NormTiling& t, int64_t channels_per_group, const float* gamma,
                  const SumPairF* partials, SumPairD* channel_sums, SumPairF* group_means);

// dx = norm_affine_input_grad(g, gamma, x_hat, group means, rstd).
void apply_backward(const CudaHandles& h, const NormTiling& t, const NormAffine& p, const SumPairF* group_means,
                    const bf16* x, const bf16* dy, bf16* dx);

// dbeta[ch] += sum over segments of channel_sums.a, dgamma[ch] += ... .b, segments in order.
void add_param_grads(const CudaHandles& h, int64_t segments, int64_t c, const SumPairD* channel_sums, float* dgamma,
                     float* dbeta);

// rstd[ch] = norm_rstd(var[ch], eps) (BatchNorm in eval mode).
void rstd_from_variance(const CudaHandles& h, int64_t c, float eps, const float* var, float* rstd);

// ---- SyncBatchNorm's stages (kernels/batchnorm.h has the layouts) ----
// This rank's moments [count, mean[c], m2[c]] from moment_sums' partials (one segment).
void local_moments(const CudaHandles& h, const NormTiling& t, const bf16* x, const SumPairF* partials,
                   double* moments);
// mean, rstd, running statistics and the total row count from every rank's gathered moments.
void finish_synced_moments(const CudaHandles& h, int64_t c, int64_t ranks, const double* gathered, float eps,
                           float momentum, float* mean, float* rstd, double* total_count, float* running_mean,
                           float* running_var);
// means[ch] = (gamma * sum g, gamma * sum g * x_hat) / total_count: apply_backward's group means
// (one channel per group) over every rank's rows.
void means_from_sums(const CudaHandles& h, int64_t c, const float* gamma, const SumPairD* total_sums,
                     const double* total_count, SumPairF* means);

// Carves 256-byte aligned arrays out of one workspace buffer: count the sizes with a null
// base, get() that many bytes, then carve the same sequence again from the real base.
class ScratchCarver {
 public:
  explicit ScratchCarver(void* base = nullptr) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* take(size_t count) {
    char* p = base_ ? base_ + used_ : nullptr;
    used_ += (count * sizeof(T) + 255) / 256 * 256;
    return reinterpret_cast<T*>(p);
  }
  size_t bytes() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace kd::norm_cuda
