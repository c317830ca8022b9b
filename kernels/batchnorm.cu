// BatchNorm launchers: GroupNorm's kernels (norm_cuda.cu) on one segment of rows = n*h*w rows
// with one channel per group, so the statistics are per-channel column reductions.
#include "kernels/batchnorm.h"
#include "kernels/check.h"
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
  KD_CHECK(h.workspace, "batchnorm_backward_cuda: CudaHandles without a workspace");
  const NormTiling t =
      make_norm_tiling(1, s.rows, s.c, aligned16(x) && aligned16(dy) && aligned16(dx), target_blocks(h));
  SumPairF *partials = nullptr, *channel_means = nullptr;
  SumPairD* channel_sums = nullptr;
  auto layout = [&](ScratchCarver& scratch) {
    partials = scratch.take<SumPairF>(partial_count(t));
    channel_means = scratch.take<SumPairF>(size_t(s.c));
    channel_sums = scratch.take<SumPairD>(size_t(s.c));
  };
  ScratchCarver sizes;
  layout(sizes);
  ScratchCarver scratch(h.workspace->get(sizes.bytes()));
  layout(scratch);
  const NormAffine p = per_channel(gamma, nullptr, mean, rstd);
  grad_sums(h, t, p, x, dy, partials);
  finish_grads(h, t, 1, gamma, partials, channel_sums, channel_means);
  apply_backward(h, t, p, channel_means, x, dy, dx);
  add_param_grads(h, 1, s.c, channel_sums, dgamma, dbeta);
}

}  // namespace kd
