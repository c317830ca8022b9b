// GroupNorm launchers: the one-pass kernels (groupnorm_one_pass.h) where a span of groups fits on
// chip and run.groupnorm_one_pass is on, else the two-pass path of norm_cuda.cu's kernels. That
// path takes the images in slabs of about kL2SlabBytes: the second pass over a slab (apply after
// the statistics) reads it back from L2 (50 MB on an H100) rather than from memory, so a forward
// moves about x + y through DRAM and a backward x + dy + dx, plus what does not stay in L2.
#include <algorithm>

#include "kernels/check.h"
#include "kernels/groupnorm.h"
#include "kernels/groupnorm_one_pass.h"
#include "kernels/norm_cuda.h"

namespace kd {

namespace {

constexpr int64_t kL2SlabBytes = int64_t(20) << 20;

}  // namespace

void groupnorm_forward_cuda(const CudaHandles& h, const GroupNormShape& s, float eps, const bf16* x, const float* gamma,
                            const float* beta, bool relu, bf16* y, float* mean, float* rstd) {
  using namespace norm_cuda;
  validate(s);
  KD_CHECK(eps >= 0.0f, "groupnorm_forward_cuda: eps must be non-negative, got ", eps);
  KD_CHECK((mean == nullptr) == (rstd == nullptr), "groupnorm_forward_cuda: mean and rstd are saved together");
  if (h.groupnorm_one_pass) {
    const GroupNormOnePassPlan plan = groupnorm_one_pass_plan(
        s, aligned16(x) && aligned16(y), groupnorm_one_pass_smem_limit(h), false, h.groupnorm_threads);
    if (plan.fits) return groupnorm_forward_one_pass_cuda(h, plan, s, eps, x, gamma, beta, relu, y, mean, rstd);
  }
  KD_CHECK(h.workspace, "groupnorm_forward_cuda: CudaHandles without a workspace");
  const int64_t cpg = s.channels_per_group(), stats = s.n * s.groups;
  const int64_t slab = norm_slab_segments(s.n, s.hw * s.c * int64_t(sizeof(bf16)), kL2SlabBytes);
  const NormTiling t = make_norm_tiling(slab, s.hw, s.c, aligned16(x) && aligned16(y), target_blocks(h));

  SumPairF* partials = nullptr;
  float *mean_all = mean, *rstd_all = rstd;  // inference: statistics in the workspace
  auto layout = [&](ScratchCarver& scratch) {
    partials = scratch.take<SumPairF>(partial_count(t));
    if (!mean) mean_all = scratch.take<float>(size_t(stats)), rstd_all = scratch.take<float>(size_t(stats));
  };
  ScratchCarver sizes;
  layout(sizes);
  ScratchCarver scratch(h.workspace->get(sizes.bytes()));
  layout(scratch);

  for (int64_t first = 0; first < s.n; first += slab) {
    NormTiling ts = t;
    ts.segments = std::min(slab, s.n - first);
    const int64_t at = first * s.hw * s.c, stat = first * s.groups;
    moment_sums(h, ts, cpg, x + at, partials);
    finish_moments(h, ts, cpg, eps, x + at, partials, mean_all + stat, rstd_all + stat, 0.0f, nullptr, nullptr);
    NormAffine p;
    p.channels_per_group = cpg, p.gamma = gamma, p.beta = beta, p.relu = relu;
    p.mean = mean_all + stat, p.rstd = rstd_all + stat;
    apply_forward(h, ts, p, x + at, y + at);
  }
}

void groupnorm_backward_cuda(const CudaHandles& h, const GroupNormShape& s, const bf16* x, const float* gamma,
                             const float* beta, const float* mean, const float* rstd, bool relu, const bf16* dy,
                             bf16* dx, float* dgamma, float* dbeta) {
  using namespace norm_cuda;
  validate(s);
  KD_CHECK(mean && rstd, "groupnorm_backward_cuda: needs the mean and rstd saved by the forward pass");
  KD_CHECK(h.workspace, "groupnorm_backward_cuda: CudaHandles without a workspace");
  if (h.groupnorm_one_pass) {
    const GroupNormOnePassPlan plan = groupnorm_one_pass_plan(
        s, aligned16(x) && aligned16(dy) && aligned16(dx), groupnorm_one_pass_smem_limit(h), true, h.groupnorm_threads);
    if (plan.fits)
      return groupnorm_backward_one_pass_cuda(h, plan, s, x, gamma, beta, mean, rstd, relu, dy, dx, dgamma, dbeta);
  }
  const int64_t cpg = s.channels_per_group();
  const int64_t slab = norm_slab_segments(s.n, 2 * s.hw * s.c * int64_t(sizeof(bf16)), kL2SlabBytes);
  const NormTiling t =
      make_norm_tiling(slab, s.hw, s.c, aligned16(x) && aligned16(dy) && aligned16(dx), target_blocks(h));

  SumPairF *partials = nullptr, *group_means = nullptr;
  SumPairD* channel_sums = nullptr;  // [n, c]: kept for dgamma/dbeta until every slab is done
  auto layout = [&](ScratchCarver& scratch) {
    partials = scratch.take<SumPairF>(partial_count(t));
    group_means = scratch.take<SumPairF>(size_t(slab * s.groups));
    channel_sums = scratch.take<SumPairD>(size_t(s.n * s.c));
  };
  ScratchCarver sizes;
  layout(sizes);
  ScratchCarver scratch(h.workspace->get(sizes.bytes()));
  layout(scratch);

  for (int64_t first = 0; first < s.n; first += slab) {
    NormTiling ts = t;
    ts.segments = std::min(slab, s.n - first);
    const int64_t at = first * s.hw * s.c, stat = first * s.groups;
    NormAffine p;
    p.channels_per_group = cpg, p.gamma = gamma, p.beta = beta, p.relu = relu;
    p.mean = mean + stat, p.rstd = rstd + stat;
    grad_sums(h, ts, p, x + at, dy + at, partials);
    finish_grads(h, ts, cpg, gamma, partials, channel_sums + first * s.c, group_means);
    apply_backward(h, ts, p, group_means, x + at, dy + at, dx + at);
  }
  add_param_grads(h, s.n, s.c, channel_sums, dgamma, dbeta);
}

}  // namespace kd
