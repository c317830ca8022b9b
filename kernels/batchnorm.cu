// BatchNorm launchers: GroupNorm's kernels (norm_cuda.cu) on one segment of rows = n*h*w rows
// with one channel per group, so the statistics are per-channel column reductions.
#include "kernels/batchnorm.h"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/norm_cuda.h"

namespace kd {

namespace {

void check_shape(const BatchNormShape& s, int64_t min_rows, const char* op) {
  KD_CHECK(s.c > 0 && s.rows >= min_rows, op, ": need c > 0 and at least ", min_rows, " rows, got rows ", s.rows,
           ", c ", s.c);
}

norm_cuda::NormAffine per_channel(const float* gamma, const float* beta, const float* mean, const float* rstd) {
  norm_cuda::NormAffine p;
  p.channels_per_group = 1, p.gamma = gamma, p.beta = beta, p.mean = mean, p.rstd = rstd, p.relu = false;
  return p;
}

// The backward's workspace: the row-block partial sums, the per-channel means and, when the
// caller does not give a buffer of its own, the per-channel sums.
struct GradScratch {
  norm_cuda::SumPairF *partials = nullptr, *means = nullptr;
  norm_cuda::SumPairD* sums = nullptr;
};

GradScratch grad_scratch(const CudaHandles& h, const NormTiling& t, int64_t c, bool with_sums,
                         const char* op) {
  using namespace norm_cuda;
  KD_CHECK(h.workspace, op, ": CudaHandles without a workspace");
  GradScratch g;
  auto layout = [&](ScratchCarver& scratch) {
    g.partials = scratch.take<SumPairF>(partial_count(t));
    g.means = scratch.take<SumPairF>(size_t(c));
    if (with_sums) g.sums = scratch.take<SumPairD>(size_t(c));
  };
  ScratchCarver sizes;
  layout(sizes);
  ScratchCarver scratch(h.workspace->get(sizes.bytes()));
  layout(scratch);
  return g;
}

}  // namespace

void batchnorm_forward_train_cuda(const CudaHandles& h, const BatchNormShape& s, float eps, float momentum,
                                  const bf16* x, const float* gamma, const float* beta, bf16* y, float* mean,
                                  float* rstd, float* running_mean, float* running_var) {
  using namespace norm_cuda;
  check_shape(s, 2, "batchnorm_forward_train_cuda");
  KD_CHECK(eps >= 0.0f, "batchnorm_forward_train_cuda: eps must be non-negative, got ", eps);
  KD_CHECK(mean && rstd, "batchnorm_forward_train_cuda: mean and rstd are saved for the backward pass");
  KD_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "batchnorm_forward_train_cuda: running mean and running variance must be given together");
  KD_CHECK(h.workspace, "batchnorm_forward_train_cuda: CudaHandles without a workspace");
  const NormTiling t = make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(y), target_blocks(h));
  auto* partials = static_cast<SumPairF*>(h.workspace->get(partial_count(t) * sizeof(SumPairF)));
  moment_sums(h, t, 1, x, partials);
  finish_moments(h, t, 1, eps, x, partials, mean, rstd, momentum, running_mean, running_var);
  apply_forward(h, t, per_channel(gamma, beta, mean, rstd), x, y);
}

// A running variance with var + eps <= 0 gives inf/NaN outputs here (the CPU version throws;
// checking on the device would need a synchronisation).
void batchnorm_forward_eval_cuda(const CudaHandles& h, const BatchNormShape& s, float eps, const bf16* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, bf16* y) {
  using namespace norm_cuda;
  check_shape(s, 1, "batchnorm_forward_eval_cuda");
  KD_CHECK(eps >= 0.0f, "batchnorm_forward_eval_cuda: eps must be non-negative, got ", eps);
  KD_CHECK(h.workspace, "batchnorm_forward_eval_cuda: CudaHandles without a workspace");
  const NormTiling t = make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(y), target_blocks(h));
  auto* rstd = static_cast<float*>(h.workspace->get(size_t(s.c) * sizeof(float)));
  rstd_from_variance(h, s.c, eps, running_var, rstd);
  apply_forward(h, t, per_channel(gamma, beta, running_mean, rstd), x, y);
}

void batchnorm_backward_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* gamma,
                             const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* dgamma,
                             float* dbeta) {
  using namespace norm_cuda;
  check_shape(s, 2, "batchnorm_backward_cuda");
  const NormTiling t =
      make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(dy) && aligned16(dx), target_blocks(h));
  const GradScratch g = grad_scratch(h, t, s.c, true, "batchnorm_backward_cuda");
  const NormAffine p = per_channel(gamma, nullptr, mean, rstd);
  grad_sums(h, t, p, x, dy, g.partials);
  finish_grads(h, t, 1, gamma, g.partials, g.sums, g.means);
  apply_backward(h, t, p, g.means, x, dy, dx);
  add_param_grads(h, 1, s.c, g.sums, dgamma, dbeta);
}

// ---- SyncBatchNorm's stages ----

void batchnorm_moments_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, double* moments) {
  using namespace norm_cuda;
  check_shape(s, 1, "batchnorm_moments_cuda");
  KD_CHECK(h.workspace, "batchnorm_moments_cuda: CudaHandles without a workspace");
  const NormTiling t = make_norm_tiling(1, s.rows, s.c, aligned16(x), target_blocks(h));
  auto* partials = static_cast<SumPairF*>(h.workspace->get(partial_count(t) * sizeof(SumPairF)));
  moment_sums(h, t, 1, x, partials);
  local_moments(h, t, x, partials, moments);
}

void batchnorm_finish_moments_cuda(const CudaHandles& h, int64_t c, int64_t ranks, const double* gathered, float eps,
                                   float momentum, float* mean, float* rstd, double* total_count, float* running_mean,
                                   float* running_var) {
  KD_CHECK(eps >= 0.0f, "batchnorm_finish_moments_cuda: eps must be non-negative, got ", eps);
  KD_CHECK(total_count, "batchnorm_finish_moments_cuda: total_count is saved for the backward pass");
  norm_cuda::finish_synced_moments(h, c, ranks, gathered, eps, momentum, mean, rstd, total_count, running_mean,
                                   running_var);
}

void batchnorm_normalize_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* mean,
                              const float* rstd, const float* gamma, const float* beta, bf16* y) {
  using namespace norm_cuda;
  check_shape(s, 1, "batchnorm_normalize_cuda");
  const NormTiling t = make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(y), target_blocks(h));
  apply_forward(h, t, per_channel(gamma, beta, mean, rstd), x, y);
}

void batchnorm_grad_sums_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x, const float* gamma,
                              const float* mean, const float* rstd, const bf16* dy, double* sums,
                              double* sums_copy) {
  using namespace norm_cuda;
  check_shape(s, 1, "batchnorm_grad_sums_cuda");
  const NormTiling t = make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(dy), target_blocks(h));
  const GradScratch g = grad_scratch(h, t, s.c, false, "batchnorm_grad_sums_cuda");
  // The sums are of dy itself; gamma only scales finish_grads' means, which this stage drops.
  const NormAffine p = per_channel(gamma, nullptr, mean, rstd);
  grad_sums(h, t, p, x, dy, g.partials);
  finish_grads(h, t, 1, gamma, g.partials, reinterpret_cast<SumPairD*>(sums), g.means);
  if (sums_copy)
    KD_CUDA_CHECK(cudaMemcpyAsync(sums_copy, sums, size_t(2 * s.c) * sizeof(double), cudaMemcpyDeviceToDevice,
                                  h.stream));
}

void batchnorm_backward_from_sums_cuda(const CudaHandles& h, const BatchNormShape& s, const bf16* x,
                                       const float* gamma, const float* mean, const float* rstd, const bf16* dy,
                                       const double* local_sums, const double* total_sums,
                                       const double* total_count, bf16* dx, float* dgamma, float* dbeta) {
  using namespace norm_cuda;
  check_shape(s, 1, "batchnorm_backward_from_sums_cuda");
  KD_CHECK(h.workspace, "batchnorm_backward_from_sums_cuda: CudaHandles without a workspace");
  const NormTiling t =
      make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(dy) && aligned16(dx), target_blocks(h));
  auto* means = static_cast<SumPairF*>(h.workspace->get(size_t(s.c) * sizeof(SumPairF)));
  means_from_sums(h, s.c, gamma, reinterpret_cast<const SumPairD*>(total_sums), total_count, means);
  apply_backward(h, t, per_channel(gamma, nullptr, mean, rstd), means, x, dy, dx);
  add_param_grads(h, 1, s.c, reinterpret_cast<const SumPairD*>(local_sums), dgamma, dbeta);
}

}  // namespace kd
