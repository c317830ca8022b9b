// The one-pass GroupNorm forward's host-side parts, on the CPU: its launch plan, its chunk
// mapping (every value of an image in exactly one chunk of its own group) and its arithmetic.
// The kernel's algorithm is replayed here thread by thread with the same helpers (per-thread float
// sums around the group's first value, a double reduction, the normalisation of the copy) and
// compared with groupnorm_forward_cpu. The kernel itself runs in groupnorm_cuda_test.cpp.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/groupnorm_one_pass.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

GroupNormShape shape(int64_t n, int64_t hw, int64_t c, int64_t groups) {
  GroupNormShape s;
  s.n = n, s.hw = hw, s.c = c, s.groups = groups;
  return s;
}

constexpr int64_t kHopperLimit = 227 * 1024 - 1024;  // groupnorm_one_pass_smem_limit on an H100/H200

TEST(GroupNormOnePassPlan, VectorsWhereChannelsAndPointersAllowThem) {
  const GroupNormOnePassPlan p = groupnorm_one_pass_plan(shape(128, 3136, 512, 32), true, kHopperLimit);
  EXPECT_TRUE(p.fits) << p.why_not;
  EXPECT_EQ(p.vec, 8);
  EXPECT_EQ(p.chunks, 3136 * 16 / 8);
  EXPECT_EQ(p.smem_bytes, 3136 * 16 * 2);  // BiT R152x2 stage 1: 98 KB, the largest BiT group
  EXPECT_EQ(p.threads, 512);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(128, 3136, 512, 32), false, kHopperLimit).vec, 1) << "unaligned";
  const GroupNormOnePassPlan odd = groupnorm_one_pass_plan(shape(2, 9, 72, 4), true, kHopperLimit);
  EXPECT_EQ(odd.vec, 1) << "18 channels per group: no 8-channel chunks";
  EXPECT_EQ(odd.chunks, 9 * 18);
  EXPECT_EQ(odd.smem_bytes, 336) << "162 values = 324 bytes, rounded up to 16";
  EXPECT_EQ(odd.threads, 256);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(128, 49, 4096, 32), true, kHopperLimit).threads, 256)
      << "49 x 128 / 8 = 784 chunks";
}

TEST(GroupNormOnePassPlan, GroupsLargerThanSharedMemoryTakeTheTwoPassPath) {
  const GroupNormOnePassPlan p = groupnorm_one_pass_plan(shape(1, 65539, 8, 1), true, kHopperLimit);
  EXPECT_FALSE(p.fits);
  EXPECT_NE(p.why_not.find("524312 values"), std::string::npos) << p.why_not;
  // 384 px inputs: stage 1 at 96x96 x 16 channels = 147,456 values, 288 KB.
  EXPECT_FALSE(groupnorm_one_pass_plan(shape(8, 96 * 96, 512, 32), true, kHopperLimit).fits);
  EXPECT_TRUE(groupnorm_one_pass_plan(shape(8, 96 * 96, 512, 32), true, 300 * 1024).fits);
  EXPECT_THROW(groupnorm_one_pass_plan(shape(1, 4, 10, 3), true, kHopperLimit), Error) << "3 does not divide 10";
}

TEST(GroupNormOnePassMapping, EveryValueIsInExactlyOneChunkOfItsOwnGroup) {
  for (const GroupNormShape& s : {shape(1, 7, 64, 4), shape(1, 5, 12, 3), shape(1, 3, 24, 24), shape(1, 2, 4096, 32)})
    for (int vec : {1, 8}) {
      const int64_t cpg = s.channels_per_group();
      if (vec == 8 && cpg % 8 != 0) continue;
      std::vector<int> seen(size_t(s.hw * s.c), 0);
      for (int64_t g = 0; g < s.groups; ++g)
        for (int64_t q = 0; q < s.hw * cpg / vec; ++q) {
          const int64_t at = groupnorm_chunk_offset(s, vec, g, q);
          for (int j = 0; j < vec; ++j) {
            const int64_t ch = groupnorm_chunk_channel(s, vec, g, q, j);
            ASSERT_EQ(ch, (at + j) % s.c) << "chunk " << q << " of group " << g;
            ASSERT_EQ(ch / cpg, g) << "a value of another group";
            ++seen[size_t(at + j)];
          }
        }
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "value " << i << ", vec " << vec;
    }
}

// The kernel's arithmetic, thread by thread: what groupnorm_one_pass.cu computes for one block,
// with the reduction over threads in thread order (CUB's tree order differs only in the last
// bits of a double sum).
void one_pass_forward_replayed(const GroupNormShape& s, const GroupNormOnePassPlan& p, float eps,
                               const std::vector<float>& x, const std::vector<float>& gamma,
                               const std::vector<float>& beta, bool relu, std::vector<float>& y,
                               std::vector<float>& mean, std::vector<float>& rstd) {
  for (int64_t image = 0; image < s.n; ++image)
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* xi = x.data() + image * s.hw * s.c;
      const float shift = xi[g * s.channels_per_group()];
      double sum_a = 0, sum_b = 0;
      std::vector<float> copy(size_t(p.chunks * p.vec));
      for (int t = 0; t < p.threads; ++t) {
        float a = 0, b = 0;
        for (int64_t q = t; q < p.chunks; q += p.threads)
          for (int j = 0; j < p.vec; ++j) {
            const float v = xi[groupnorm_chunk_offset(s, p.vec, g, q) + j];
            copy[size_t(q * p.vec + j)] = v;
            const float d = v - shift;
            a += d;
            b += d * d;
          }
        sum_a += double(a), sum_b += double(b);
      }
      double mu = 0, var = 0;
      norm_moments_from_shifted_sums(shift, sum_a, sum_b, double(s.group_size()), &mu, &var);
      const float m = float(mu), r = float(norm_rstd(var, eps));
      mean[size_t(image * s.groups + g)] = m, rstd[size_t(image * s.groups + g)] = r;
      for (int64_t q = 0; q < p.chunks; ++q)
        for (int j = 0; j < p.vec; ++j) {
          const int64_t ch = groupnorm_chunk_channel(s, p.vec, g, q, j);
          y[size_t(image * s.hw * s.c + groupnorm_chunk_offset(s, p.vec, g, q) + j)] =
              norm_affine_act(copy[size_t(q * p.vec + j)], m, r, gamma[size_t(ch)], beta[size_t(ch)], relu);
        }
    }
}

TEST(GroupNormOnePassArithmetic, TheKernelsStepsGiveTheReferenceForward) {
  for (const GroupNormShape& s : {shape(2, 3136, 64, 8), shape(3, 49, 512, 32), shape(2, 5, 12, 3), shape(2, 1, 16, 2)})
    for (bool aligned : {true, false})
      for (bool relu : {false, true}) {
        const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, aligned, kHopperLimit);
        ASSERT_TRUE(p.fits) << p.why_not;
        // Activations with a large common offset: the shifted sums must not lose the variance.
        const std::vector<float> x = test::random_vector<float>(size_t(s.numel()), 3, 40.0, 44.0),
                                 gamma = test::random_vector<float>(size_t(s.c), 4, 0.5, 1.5),
                                 beta = test::random_vector<float>(size_t(s.c), 5, -0.5, 0.5);
        const size_t stats = size_t(s.n * s.groups);
        std::vector<float> y(x.size()), mean(stats), rstd(stats), y_ref(x.size()), mean_ref(stats), rstd_ref(stats);
        one_pass_forward_replayed(s, p, 1e-5f, x, gamma, beta, relu, y, mean, rstd);
        groupnorm_forward_cpu<float>(s, 1e-5f, x.data(), gamma.data(), beta.data(), relu, y_ref.data(),
                                     mean_ref.data(), rstd_ref.data());
        SCOPED_TRACE(::testing::Message() << "hw " << s.hw << ", c " << s.c << ", vec " << p.vec << ", relu " << relu);
        EXPECT_LE(test::rel_l2(mean, mean_ref), 1e-6);
        EXPECT_LE(test::rel_l2(rstd, rstd_ref), 1e-4) << "a variance of ~1.3 around 42, from float sums";
        EXPECT_LE(test::rel_l2(y, y_ref), 1e-4);
      }
}

}  // namespace
}  // namespace kd
