// normalize.h on the CPU: the per-element helpers the CUDA norm kernels share with the CPU
// references, and the block partition of the CUDA GroupNorm/BatchNorm kernels (which element,
// which partial sum each block and thread owns), checked for exact coverage.
#include "kernels/normalize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/groupnorm.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

struct TilingCase {
  int64_t segments, rows_per_seg, c;
  bool vectorised;
  int64_t target_blocks;
};

std::ostream& operator<<(std::ostream& os, const TilingCase& k) {
  return os << "[" << k.segments << " x " << k.rows_per_seg << ", c " << k.c << "] vec " << k.vectorised
            << " target " << k.target_blocks;
}

class NormTilingCases : public ::testing::TestWithParam<TilingCase> {};

// Walks every block and thread exactly as the kernels do (norm_block, norm_thread_channel, the
// row loop from row_begin + ty in steps of threads_y, vec channels from the thread's first).
TEST_P(NormTilingCases, EveryElementAndEveryPartialSumHasExactlyOneOwner) {
  const TilingCase k = GetParam();
  const NormTiling t = make_norm_tiling(k.segments, k.rows_per_seg, k.c, k.vectorised, k.target_blocks);
  ASSERT_TRUE(t.vec == 1 || t.vec == 8);
  EXPECT_EQ(t.vec == 8, k.vectorised && k.c % 8 == 0);
  EXPECT_LE(int64_t(t.threads_x) * t.threads_y, kNormBlockThreads);
  EXPECT_GE(t.threads_x, 1);
  EXPECT_LE(t.threads_x, 32);
  EXPECT_EQ(t.rows_per_chunk % t.threads_y, 0);
  EXPECT_GE(t.chunks * t.rows_per_chunk, t.rows_per_seg);
  EXPECT_LT((t.chunks - 1) * t.rows_per_chunk, t.rows_per_seg);  // no empty chunk

  std::vector<int> element_owners(size_t(k.segments * k.rows_per_seg * k.c), 0);
  std::vector<int> partial_owners(size_t(t.segments * t.chunks * t.c), 0);
  for (int64_t b = 0; b < t.blocks(); ++b) {
    const NormBlock blk = norm_block(t, b);
    ASSERT_LT(blk.segment, t.segments);
    ASSERT_LT(blk.row_begin, blk.row_end);
    ASSERT_LT(blk.col_begin, blk.col_end);
    ASSERT_LE(blk.col_end - blk.col_begin, t.tile_channels());
    for (int64_t ch = blk.col_begin; ch < blk.col_end; ++ch)
      ++partial_owners[size_t(norm_partial_index(t, blk.segment, blk.chunk, ch))];
    for (int tx = 0; tx < t.threads_x; ++tx) {
      const int64_t ch0 = norm_thread_channel(t, blk, tx);
      if (ch0 >= blk.col_end) continue;
      ASSERT_LE(ch0 + t.vec, blk.col_end) << "a thread owns all of its vector or none of it";
      for (int ty = 0; ty < t.threads_y; ++ty)
        for (int64_t r = blk.row_begin + ty; r < blk.row_end; r += t.threads_y)
          for (int j = 0; j < t.vec; ++j) {
            const int64_t i = norm_element_index(t, blk.segment, r, ch0 + j);
            ASSERT_GE(i, 0);
            ASSERT_LT(i, int64_t(element_owners.size()));
            ++element_owners[size_t(i)];
          }
    }
  }
  for (size_t i = 0; i < element_owners.size(); ++i) ASSERT_EQ(element_owners[i], 1) << "element " << i;
  for (size_t i = 0; i < partial_owners.size(); ++i) ASSERT_EQ(partial_owners[i], 1) << "partial " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, NormTilingCases,
    ::testing::Values(TilingCase{4, 3136, 256, true, 1056},     // ResNet-50 GroupNorm, 224 px
                      TilingCase{3, 49, 4096, true, 1056},      // R152x2 stage 4: 16 channel tiles
                      TilingCase{2, 49, 4096, false, 1056},     // the same, unaligned: scalar
                      TilingCase{1, 5, 12, true, 1056},         // c not a multiple of 8
                      TilingCase{3, 17, 24, true, 1056},        // 3 vectors per row
                      TilingCase{1, 7, 40, true, 1056},         // 5 vectors: tile of 5 threads
                      TilingCase{2, 1, 12, true, 1056},         // one row per segment
                      TilingCase{1, 100003, 64, true, 1056},    // BatchNorm: one long segment
                      TilingCase{1, 2, 3, false, 1056},         // smallest BatchNorm
                      TilingCase{5, 333, 264, true, 7},         // 33 vectors: a partial second tile
                      TilingCase{2, 1000, 100, false, 100000},  // target beyond the rows
                      TilingCase{70, 9, 8, true, 1}));          // more segments than the target

TEST(NormTiling, ResNetShapesFillTheDeviceWithVectorLoads) {
  const int64_t target = 132 * 8;
  // ResNet-50 at 224 px, batch 64: one tile of 256 channels, row chunks to reach the target.
  NormTiling t = make_norm_tiling(64, 3136, 256, true, target);
  EXPECT_EQ(t.vec, 8);
  EXPECT_EQ(t.threads_x, 32);
  EXPECT_EQ(t.threads_y, 8);
  EXPECT_EQ(t.col_tiles, 1);
  EXPECT_EQ(t.chunks, 17);
  EXPECT_EQ(t.rows_per_chunk, 192);
  // R152x2 stage 4, batch 64: 16 tiles per image nearly fill the device; 49 rows stay one chunk.
  t = make_norm_tiling(64, 49, 4096, true, target);
  EXPECT_EQ(t.col_tiles, 16);
  EXPECT_EQ(t.chunks, 1);
  EXPECT_EQ(t.blocks(), 64 * 16);
  // BatchNorm over ResNet's stem output, batch 256: 8 threads across 64 channels, 32 rows deep.
  t = make_norm_tiling(1, 256 * 3136, 64, true, target);
  EXPECT_EQ(t.threads_x, 8);
  EXPECT_EQ(t.threads_y, 32);
  EXPECT_EQ(t.rows_per_chunk, 768);
  EXPECT_EQ(t.chunks, 1046);
}

TEST(NormSlabs, SlabsStayWithinTheBudgetAndTakeAtLeastOneSegment) {
  EXPECT_EQ(norm_slab_segments(64, 1 << 20, 20 << 20), 16);  // 4 slabs of 16, not 20 + 20 + 20 + 4
  EXPECT_EQ(norm_slab_segments(64, 401408, 20 << 20), 32);   // R152x2 stage 4: 2 slabs of 32
  EXPECT_EQ(norm_slab_segments(14, 1605632, 20 << 20), 7);   // ResNet-50 stage 1: 2 slabs of 7
  EXPECT_EQ(norm_slab_segments(8, 1 << 20, 20 << 20), 8);
  EXPECT_EQ(norm_slab_segments(8, 64 << 20, 20 << 20), 1);
  EXPECT_EQ(norm_slab_segments(3, 0, 20 << 20), 3);
}

// Values far from zero with a small spread: float sums of x and x^2 would lose the variance;
// sums around one of the values keep it.
TEST(NormMoments, ShiftedFloatSumsKeepTheVarianceOfOffsetData) {
  const std::vector<float> x = random_vector<float>(5000, 1, 1000.0, 1000.5);
  double mean = 0, var = 0;
  for (float v : x) mean += v / double(x.size());
  for (float v : x) var += (v - mean) * (v - mean) / double(x.size());
  float s1 = 0, s2 = 0;  // as one thread of moment_sums_kernel accumulates
  for (float v : x) {
    const float d = v - x[0];
    s1 += d;
    s2 += d * d;
  }
  double m = 0, v = 0;
  norm_moments_from_shifted_sums(x[0], s1, s2, double(x.size()), &m, &v);
  EXPECT_NEAR(m, mean, 1e-9 * mean);
  EXPECT_NEAR(v, var, 1e-5 * var);
  norm_moments_from_shifted_sums(1.0, 0.0, -1e-30, 4.0, &m, &v);  // rounding below zero
  EXPECT_EQ(v, 0.0);
}

// The statistics pipeline of the CUDA kernels, run on the CPU through the same index helpers:
// per (segment, chunk, channel) float sums around the group's first value, then per group in
// double over its channels and chunks. It must give GroupNorm's mean and rstd.
TEST(NormMoments, PartialSumsPerChunkAndChannelGiveTheGroupStatistics) {
  GroupNormShape s;
  s.n = 3, s.hw = 1001, s.c = 48, s.groups = 4;
  const int64_t cpg = s.channels_per_group();
  const std::vector<float> x = random_vector<float>(size_t(s.numel()), 2, -1.0, 3.0);
  const NormTiling t = make_norm_tiling(s.n, s.hw, s.c, true, 40);
  ASSERT_GT(t.chunks, 1);
  std::vector<float> s1(size_t(t.segments * t.chunks * t.c), 0.0f), s2(s1.size(), 0.0f);
  for (int64_t b = 0; b < t.blocks(); ++b) {
    const NormBlock blk = norm_block(t, b);
    for (int64_t ch = blk.col_begin; ch < blk.col_end; ++ch) {
      const float shift = x[size_t(norm_element_index(t, blk.segment, 0, norm_group_first_channel(ch, cpg)))];
      const size_t p = size_t(norm_partial_index(t, blk.segment, blk.chunk, ch));
      for (int64_t r = blk.row_begin; r < blk.row_end; ++r) {
        const float d = x[size_t(norm_element_index(t, blk.segment, r, ch))] - shift;
        s1[p] += d;
        s2[p] += d * d;
      }
    }
  }
  std::vector<float> mean(size_t(s.n * s.groups)), rstd(mean.size());
  for (int64_t seg = 0; seg < s.n; ++seg)
    for (int64_t g = 0; g < s.groups; ++g) {
      double a = 0, b = 0;
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t chunk = 0; chunk < t.chunks; ++chunk) {
          a += s1[size_t(norm_partial_index(t, seg, chunk, ch))];
          b += s2[size_t(norm_partial_index(t, seg, chunk, ch))];
        }
      double m = 0, v = 0;
      norm_moments_from_shifted_sums(x[size_t(norm_element_index(t, seg, 0, g * cpg))], a, b,
                                     double(s.group_size()), &m, &v);
      mean[size_t(seg * s.groups + g)] = float(m);
      rstd[size_t(seg * s.groups + g)] = float(norm_rstd(v, 1e-5));
    }
  std::vector<float> y(x.size()), gamma(size_t(s.c), 1.0f), beta(size_t(s.c), 0.0f), ref_mean(mean.size()),
      ref_rstd(mean.size());
  groupnorm_forward_cpu<float>(s, 1e-5f, x.data(), gamma.data(), beta.data(), false, y.data(), ref_mean.data(),
                               ref_rstd.data());
  EXPECT_LT(rel_l2(mean, ref_mean), 1e-6);
  EXPECT_LT(rel_l2(rstd, ref_rstd), 1e-6);
}

TEST(NormMath, AffineInputGradIsTheInputGradOfGammaTimesG) {
  const std::vector<float> v = random_vector<float>(6 * 100, 3);
  for (size_t i = 0; i < 100; ++i) {
    const float g = v[6 * i], gamma = v[6 * i + 1], x_hat = v[6 * i + 2], m1 = v[6 * i + 3], m2 = v[6 * i + 4],
                r = 1.5f + v[6 * i + 5];
    EXPECT_EQ(norm_affine_input_grad(g, gamma, x_hat, m1, m2, r), norm_input_grad(gamma * g, x_hat, m1, m2, r));
    EXPECT_EQ(norm_input_grad(g, x_hat, m1, m2, r), r * (g - m1 - x_hat * m2));
    EXPECT_EQ(norm_affine(g, m1, r, gamma, x_hat), gamma * ((g - m1) * r) + x_hat);
  }
  EXPECT_EQ(norm_mul(3.0f, 0.5f), 1.5f);
  EXPECT_EQ(norm_mul(3.0, 0.25), 0.75);
}

TEST(NormMath, ReluMaskOfTheBackwardIsTheForwardsPositiveOutputs) {
  const std::vector<float> v = random_vector<float>(4 * 1000, 4);
  for (size_t i = 0; i < 1000; ++i) {
    const float x = v[4 * i], mean = 0.1f, rstd = 1.3f, gamma = v[4 * i + 1], beta = v[4 * i + 2];
    const float y = norm_affine_act(x, mean, rstd, gamma, beta, true);
    EXPECT_EQ(norm_upstream_grad(2.0f, x, mean, rstd, gamma, beta, true), y > 0 ? 2.0f : 0.0f);
    EXPECT_EQ(norm_upstream_grad(2.0f, x, mean, rstd, gamma, beta, false), 2.0f);
  }
  EXPECT_TRUE(std::isnan(norm_affine_act(NAN, 0.0f, 1.0f, 1.0f, 0.0f, true)));
}

}  // namespace
}  // namespace kd
