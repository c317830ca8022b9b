// The one-pass GroupNorm kernels' host-side parts, on the CPU: the launch plan (spans of several
// groups, the shared-memory budget), the chunk mapping (every value of an image in exactly one
// chunk of its own span; a thread's chunks all hold the same channels) and the arithmetic. The
// kernels' algorithms are replayed here thread by thread with the same helpers (per-thread float
// sums, the warp butterfly of the backward, double reductions in the kernels' orders) and compared
// with groupnorm_forward_cpu / groupnorm_backward_cpu. The kernels run in groupnorm_cuda_test.cpp.
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

constexpr int64_t kHopperLimit = 227 * 1024 - 4096;  // about groupnorm_one_pass_smem_limit on an H100/H200

TEST(GroupNormOnePassPlan, VectorsWhereChannelsAndPointersAllowThem) {
  const GroupNormOnePassPlan p = groupnorm_one_pass_plan(shape(128, 3136, 512, 32), true, kHopperLimit);
  EXPECT_TRUE(p.fits) << p.why_not;
  EXPECT_EQ(p.vec, 8);
  EXPECT_EQ(p.groups_per_block, 1) << "16 channels a group already cover a sector";
  EXPECT_EQ(p.chunks, 3136 * 16 / 8);
  EXPECT_EQ(p.smem_bytes, 3136 * 16 * 2);  // BiT R152x2 stage 1: 98 KB
  EXPECT_EQ(p.threads, 512);
  EXPECT_EQ(p.blocks, 128 * 32);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(128, 3136, 512, 32), false, kHopperLimit).vec, 1) << "unaligned";
  const GroupNormOnePassPlan odd = groupnorm_one_pass_plan(shape(2, 9, 72, 4), true, kHopperLimit);
  EXPECT_EQ(odd.vec, 1) << "18 channels per group: no 8-channel chunks";
  EXPECT_EQ(odd.groups_per_block, 1);
  EXPECT_EQ(odd.chunks, 9 * 18);
  EXPECT_EQ(odd.smem_bytes, 336) << "162 values = 324 bytes, rounded up to 16";
  EXPECT_EQ(odd.threads, 256);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(128, 49, 4096, 32), true, kHopperLimit).threads, 256)
      << "49 x 128 / 8 = 784 chunks";
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 4, 24 * 8, 8), true, kHopperLimit).vec, 1)
      << "24 channels a group: 3 chunks a pixel, which do not divide the threads";
}

TEST(GroupNormOnePassPlan, SmallGroupsShareABlockSoThatItReadsWholeSectors) {
  // R152x2 stage 1 at 224 px: 8 and 4 channels a group; R50x1 at 160 px: 2.
  const GroupNormOnePassPlan p8 = groupnorm_one_pass_plan(shape(128, 3136, 256, 32), true, kHopperLimit);
  EXPECT_TRUE(p8.fits) << p8.why_not;
  EXPECT_EQ(p8.groups_per_block, 2);
  EXPECT_EQ(p8.span, 16);
  EXPECT_EQ(p8.blocks, 128 * 16);
  EXPECT_EQ(p8.smem_bytes, 3136 * 16 * 2);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(128, 3136, 128, 32), true, kHopperLimit).groups_per_block, 4);
  const GroupNormOnePassPlan p2 = groupnorm_one_pass_plan(shape(128, 1600, 64, 32), true, kHopperLimit, true);
  EXPECT_TRUE(p2.fits) << p2.why_not;
  EXPECT_EQ(p2.groups_per_block, 8);
  EXPECT_EQ(p2.vec, 8);
  EXPECT_EQ(p2.threads, 256) << "1600 x 2 chunks";
  EXPECT_EQ(p2.smem_bytes, 2 * 1600 * 16 * 2 + 8 * 16 * 8 + 16 * 16) << "x and dy, then the warps' channel sums";
  // Fewer groups where a wider span would not fit, and where the groups do not divide evenly.
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 3136, 256, 32), true, 60000).groups_per_block, 1);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 3136, 256, 32), true, 60000).vec, 8);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 10, 24, 3), true, kHopperLimit).groups_per_block, 1);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 10, 24, 3), true, kHopperLimit).vec, 8);
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 10, 8, 2), true, kHopperLimit).groups_per_block, 2)
      << "4 channels in 2 groups: one span of 8 channels";
  EXPECT_EQ(groupnorm_one_pass_plan(shape(1, 10, 8, 2), true, kHopperLimit).vec, 8);
}

TEST(GroupNormOnePassPlan, EveryPlanNamesAKernelThatExists) {
  // One channel a group (found on the GPU: the plan took 16 groups a block, and no kernel had 16).
  for (int64_t groups : {1, 2, 3, 8, 24, 32, 64})
    for (int64_t cpg : {1, 2, 3, 4, 8, 16, 24, 128})
      for (bool backward : {false, true}) {
        const GroupNormOnePassPlan p = groupnorm_one_pass_plan(shape(2, 9, groups * cpg, groups), true, kHopperLimit, backward);
        SCOPED_TRACE(::testing::Message() << groups << " groups of " << cpg << ", backward " << backward);
        EXPECT_TRUE(p.groups_per_block == 1 || p.groups_per_block == 2 || p.groups_per_block == 4 ||
                    p.groups_per_block == 8);
        EXPECT_LE(p.groups_per_block, kGroupNormMaxGroupsPerBlock);
        EXPECT_EQ(groups % p.groups_per_block, 0);
        EXPECT_TRUE(p.vec == 8 || p.groups_per_block == 1) << "a span of several groups is read in 16-byte chunks";
        if (backward) {
          EXPECT_EQ(p.fits, p.vec == 8) << p.why_not;
        }
      }
  EXPECT_EQ(groupnorm_one_pass_plan(shape(2, 9, 32, 32), true, kHopperLimit).groups_per_block, 8);
}

TEST(GroupNormOnePassPlan, TheBackwardNeedsSixteenByteChunks) {
  const GroupNormOnePassPlan unaligned = groupnorm_one_pass_plan(shape(2, 49, 256, 32), false, kHopperLimit, true);
  EXPECT_FALSE(unaligned.fits);
  EXPECT_NE(unaligned.why_not.find("16-byte aligned"), std::string::npos) << unaligned.why_not;
  EXPECT_FALSE(groupnorm_one_pass_plan(shape(2, 9, 72, 4), true, kHopperLimit, true).fits) << "18 channels a group";
  EXPECT_TRUE(groupnorm_one_pass_plan(shape(2, 49, 8192, 32), true, kHopperLimit, true).fits) << "K = 32";
  EXPECT_FALSE(groupnorm_one_pass_plan(shape(2, 49, 16384, 32), true, kHopperLimit, true).fits) << "K = 64";
  // A backward span holds x and dy: R152x2's stage-1 group (98 KB) fits twice, a 64x64-pixel one
  // of 16 channels (128 KB) only once.
  EXPECT_TRUE(groupnorm_one_pass_plan(shape(2, 3136, 512, 32), true, kHopperLimit, true).fits);
  EXPECT_FALSE(groupnorm_one_pass_plan(shape(2, 4096, 512, 32), true, kHopperLimit, true).fits);
  EXPECT_TRUE(groupnorm_one_pass_plan(shape(2, 4096, 512, 32), true, kHopperLimit).fits);
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

TEST(GroupNormOnePassMapping, EveryImageAndSpanHasExactlyOneBlock) {
  for (const GroupNormShape& s : {shape(3, 7, 64, 4), shape(2, 5, 12, 3), shape(4, 2, 4096, 32), shape(5, 3, 128, 32)})
    for (bool backward : {false, true}) {
      const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, true, kHopperLimit, backward);
      if (!p.fits) continue;
      std::vector<int> seen(size_t(s.n * s.groups), 0);
      for (int64_t b = 0; b < p.blocks; ++b) {
        const GroupNormSpan span = groupnorm_block_span(s, p.groups_per_block, b);
        ASSERT_LT(span.image, s.n);
        ASSERT_EQ(span.g0 % p.groups_per_block, 0);
        for (int g = 0; g < p.groups_per_block; ++g) ++seen.at(size_t(span.image * s.groups + span.g0 + g));
      }
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "image " << i / size_t(s.groups) << " group "
                                                                       << i % size_t(s.groups);
    }
}

TEST(GroupNormOnePassMapping, EveryValueIsInExactlyOneChunkOfItsOwnSpan) {
  for (const GroupNormShape& s : {shape(1, 7, 64, 4), shape(1, 5, 12, 3), shape(1, 3, 24, 24), shape(1, 2, 4096, 32),
                                  shape(1, 5, 64, 32), shape(1, 3, 128, 32)})
    for (bool aligned : {false, true}) {
      const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, aligned, kHopperLimit);
      const int64_t cpg = s.channels_per_group(), K = p.chunks_per_pixel();
      SCOPED_TRACE(::testing::Message() << "c " << s.c << ", groups " << s.groups << ", G " << p.groups_per_block);
      std::vector<int> seen(size_t(s.hw * s.c), 0);
      for (int64_t g0 = 0; g0 < s.groups; g0 += p.groups_per_block)
        for (int64_t q = 0; q < p.chunks; ++q) {
          const int64_t at = groupnorm_chunk_offset(s, p.vec, p.span, g0, q);
          for (int j = 0; j < p.vec; ++j) {
            const int64_t ch = groupnorm_chunk_channel(s, p.vec, p.span, g0, q, j);
            ASSERT_EQ(ch, (at + j) % s.c) << "chunk " << q << " of the span at group " << g0;
            ASSERT_EQ(ch / cpg, g0 + groupnorm_lane_group(s, p.vec, q % K, j)) << "the value's group";
            ASSERT_LT(ch / cpg, g0 + p.groups_per_block) << "a value of another span";
            // With 16-byte chunks a thread (q % threads) keeps its channels across its chunks.
            if (p.vec == 8) {
              ASSERT_EQ(ch, groupnorm_chunk_channel(s, p.vec, p.span, g0, q % p.threads, j));
            }
            ++seen[size_t(at + j)];
          }
        }
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "value " << i;
    }
}

// The 16-byte kernels walk a thread's chunks by a stride instead of dividing per chunk, and load
// kIn of them before using the first: the walk must reach exactly the chunks, in the order, that
// groupnorm_chunk_offset gives, with the kernels' own loop bounds.
TEST(GroupNormOnePassMapping, TheStridedWalkVisitsEachThreadsChunksInOrder) {
  int walked_plans = 0;
  for (const GroupNormShape& s :
       {shape(2, 3136, 64, 8), shape(1, 49, 4096, 32), shape(1, 7, 64, 4), shape(1, 5, 128, 32), shape(1, 1, 16, 2),
        shape(1, 100, 256, 32), shape(1, 9, 32, 32), shape(1, 6400, 512, 32)})
    for (bool backward : {false, true})
      for (int threads : {0, 256, 512}) {
        const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, true, kHopperLimit, backward, threads);
        if (!p.fits || p.vec != 8) continue;
        ++walked_plans;
        const int in_flight = backward ? kGroupNormBackwardLoadsInFlight : kGroupNormForwardLoadsInFlight;
        SCOPED_TRACE(::testing::Message() << "hw " << s.hw << ", c " << s.c << ", G " << p.groups_per_block
                                          << (backward ? ", backward" : ", forward"));
        ASSERT_EQ(p.threads % p.chunks_per_pixel(), 0) << "the walk needs K to divide the thread count";
        for (int64_t g0 = 0; g0 < s.groups; g0 += p.groups_per_block)
          for (int t = 0; t < p.threads; ++t) {
            const GroupNormChunkWalk w = groupnorm_chunk_walk(s, 8, p.span, g0, t, p.threads);
            int64_t expected = t;  // the next chunk of thread t
            for (int64_t q0 = t, at = w.first; q0 < p.chunks; q0 += in_flight * p.threads, at += in_flight * w.stride)
              for (int i = 0; i < in_flight && q0 + i * p.threads < p.chunks; ++i) {
                ASSERT_EQ(q0 + i * p.threads, expected);
                ASSERT_EQ(at + i * w.stride, groupnorm_chunk_offset(s, 8, p.span, g0, expected))
                    << "chunk " << expected;
                expected += p.threads;
              }
            ASSERT_GE(expected, p.chunks) << "thread " << t << " stopped before its last chunk";
          }
      }
  EXPECT_GE(walked_plans, 30);
}

// CudaHandles::groupnorm_threads: bench_kernels' rows force blocks of 256 where the plan takes
// 512; the span and its shared memory stay (the backward's per-warp sums shrink), other sizes are
// an error.
TEST(GroupNormOnePassPlan, TheBlockSizeCanBeForcedTo256Or512) {
  const GroupNormShape s = shape(128, 56 * 56, 256, 32);
  for (bool backward : {false, true}) {
    const GroupNormOnePassPlan chosen = groupnorm_one_pass_plan(s, true, kHopperLimit, backward);
    const GroupNormOnePassPlan forced = groupnorm_one_pass_plan(s, true, kHopperLimit, backward, 256);
    ASSERT_TRUE(chosen.fits && forced.fits) << chosen.why_not << forced.why_not;
    EXPECT_EQ(chosen.threads, 512) << "6,272 chunks a block";
    EXPECT_EQ(forced.threads, 256);
    EXPECT_EQ(forced.span, chosen.span);
    EXPECT_EQ(forced.chunks, chosen.chunks);
    if (backward)
      EXPECT_EQ(chosen.smem_bytes - forced.smem_bytes, (512 - 256) / 32 * chosen.span * 8) << "per-warp sums";
    else
      EXPECT_EQ(forced.smem_bytes, chosen.smem_bytes);
    EXPECT_EQ(groupnorm_one_pass_plan(s, true, kHopperLimit, backward, 512).threads, 512);
  }
  EXPECT_EQ(groupnorm_one_pass_plan(shape(2, 49, 4096, 32), true, kHopperLimit, false, 512).threads, 512)
      << "forced up as well as down";
  EXPECT_THROW(groupnorm_one_pass_plan(s, true, kHopperLimit, false, 128), Error);
}

// Inputs of one test case; activations with a large common offset, so that the shifted sums must
// not lose the variance.
struct Case {
  GroupNormShape s;
  std::vector<float> x, gamma, beta, dy;
};
Case make_case(const GroupNormShape& s) {
  return {s, test::random_vector<float>(size_t(s.numel()), 3, 40.0, 44.0),
          test::random_vector<float>(size_t(s.c), 4, 0.5, 1.5), test::random_vector<float>(size_t(s.c), 5, -0.5, 0.5),
          test::random_vector<float>(size_t(s.numel()), 6, -1.0, 1.0)};
}

const std::vector<GroupNormShape>& arithmetic_shapes() {
  static const std::vector<GroupNormShape> shapes = {shape(2, 3136, 64, 8),  shape(3, 49, 512, 32), shape(2, 5, 12, 3),
                                                     shape(2, 1, 16, 2),     shape(2, 100, 64, 32), shape(2, 36, 128, 32),
                                                     shape(1, 300, 256, 32), shape(2, 3, 4096, 32), shape(2, 7, 32, 32)};
  return shapes;
}

// The forward kernels' arithmetic, thread by thread, with the reduction over threads in thread
// order (CUB's tree order differs only in the last bits of a double sum).
void forward_replayed(const Case& k, const GroupNormOnePassPlan& p, float eps, bool relu, std::vector<float>& y,
                      std::vector<float>& mean, std::vector<float>& rstd) {
  const GroupNormShape& s = k.s;
  const int64_t cpg = s.channels_per_group(), K = p.chunks_per_pixel(), G = p.groups_per_block;
  for (int64_t image = 0; image < s.n; ++image)
    for (int64_t g0 = 0; g0 < s.groups; g0 += G) {
      const float* xi = k.x.data() + image * s.hw * s.c;
      std::vector<double> ta(size_t(G), 0.0), tb(size_t(G), 0.0);
      for (int t = 0; t < p.threads; ++t) {
        // One group a block: one (a, b) pair a thread; a span: one pair per channel of the chunk.
        const size_t lanes = G == 1 ? 1 : size_t(p.vec);
        std::vector<float> a(lanes, 0.0f), b(lanes, 0.0f);
        for (int64_t q = t; q < p.chunks; q += p.threads)
          for (int j = 0; j < p.vec; ++j) {
            const int grp = groupnorm_lane_group(s, p.vec, t % K, j);
            const float d = xi[groupnorm_chunk_offset(s, p.vec, p.span, g0, q) + j] - xi[(g0 + grp) * cpg];
            a[size_t(j) % lanes] += d;
            b[size_t(j) % lanes] += d * d;
          }
        for (int64_t i = 0; i < G; ++i)
          for (size_t j = 0; j < lanes; ++j)
            if (G == 1 || groupnorm_lane_group(s, p.vec, t % K, int(j)) == i) ta[size_t(i)] += double(a[j]), tb[size_t(i)] += double(b[j]);
      }
      for (int64_t i = 0; i < G; ++i) {
        double mu = 0, var = 0;
        norm_moments_from_shifted_sums(xi[(g0 + i) * cpg], ta[size_t(i)], tb[size_t(i)], double(s.group_size()), &mu, &var);
        mean[size_t(image * s.groups + g0 + i)] = float(mu);
        rstd[size_t(image * s.groups + g0 + i)] = float(norm_rstd(var, eps));
      }
      for (int64_t q = 0; q < p.chunks; ++q)
        for (int j = 0; j < p.vec; ++j) {
          const int64_t ch = groupnorm_chunk_channel(s, p.vec, p.span, g0, q, j), at = groupnorm_chunk_offset(s, p.vec, p.span, g0, q) + j;
          const size_t stat = size_t(image * s.groups + ch / cpg);
          y[size_t(image * s.hw * s.c + at)] = norm_affine_act(xi[at], mean[stat], rstd[stat], k.gamma[size_t(ch)], k.beta[size_t(ch)], relu);
        }
    }
}

TEST(GroupNormOnePassArithmetic, TheForwardKernelsStepsGiveTheReference) {
  for (const GroupNormShape& s : arithmetic_shapes())
    for (bool aligned : {true, false})
      for (bool relu : {false, true}) {
        const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, aligned, kHopperLimit);
        ASSERT_TRUE(p.fits) << p.why_not;
        const Case k = make_case(s);
        const size_t stats = size_t(s.n * s.groups);
        std::vector<float> y(k.x.size()), mean(stats), rstd(stats), y_ref(k.x.size()), mean_ref(stats), rstd_ref(stats);
        forward_replayed(k, p, 1e-5f, relu, y, mean, rstd);
        groupnorm_forward_cpu<float>(s, 1e-5f, k.x.data(), k.gamma.data(), k.beta.data(), relu, y_ref.data(),
                                     mean_ref.data(), rstd_ref.data());
        SCOPED_TRACE(::testing::Message() << "hw " << s.hw << ", c " << s.c << ", vec " << p.vec << ", G "
                                          << p.groups_per_block << ", relu " << relu);
        EXPECT_LE(test::rel_l2(mean, mean_ref), 1e-6);
        EXPECT_LE(test::rel_l2(rstd, rstd_ref), 1e-4) << "a variance of ~1.3 around 42, from float sums";
        EXPECT_LE(test::rel_l2(y, y_ref), 1e-4);
      }
}

// The backward kernel's arithmetic: per-thread float channel sums, the warp butterfly over lanes
// K apart, the warps in order in double, then dx; dgamma/dbeta as add_param_grads adds them.
void backward_replayed(const Case& k, const GroupNormOnePassPlan& p, const std::vector<float>& mean,
                       const std::vector<float>& rstd, bool relu, std::vector<float>& dx, std::vector<float>& dgamma,
                       std::vector<float>& dbeta) {
  const GroupNormShape& s = k.s;
  const int64_t cpg = s.channels_per_group(), K = p.chunks_per_pixel(), G = p.groups_per_block;
  std::vector<double> sum_g(size_t(s.n * s.c)), sum_gx(size_t(s.n * s.c));
  for (int64_t image = 0; image < s.n; ++image)
    for (int64_t g0 = 0; g0 < s.groups; g0 += G) {
      const int64_t at = image * s.hw * s.c;
      auto grad = [&](int64_t off, int64_t ch, float* x_hat) {
        const size_t stat = size_t(image * s.groups + ch / cpg);
        *x_hat = norm_x_hat(k.x[size_t(at + off)], mean[stat], rstd[stat]);
        return norm_upstream_grad(k.dy[size_t(at + off)], k.x[size_t(at + off)], mean[stat], rstd[stat],
                                  k.gamma[size_t(ch)], k.beta[size_t(ch)], relu);
      };
      // [thread][lane j] float sums, then the butterfly within each warp of 32 threads.
      std::vector<float> tg(size_t(p.threads * 8), 0.0f), tgx(size_t(p.threads * 8), 0.0f);
      for (int t = 0; t < p.threads; ++t)
        for (int64_t q = t; q < p.chunks; q += p.threads)
          for (int j = 0; j < 8; ++j) {
            float x_hat = 0;
            const float g = grad(groupnorm_chunk_offset(s, 8, p.span, g0, q) + j,
                                 groupnorm_chunk_channel(s, 8, p.span, g0, q, j), &x_hat);
            tg[size_t(t * 8 + j)] += g;
            tgx[size_t(t * 8 + j)] += g * x_hat;
          }
      for (int off = 16; off >= K; off /= 2) {
        const std::vector<float> g_before = tg, gx_before = tgx;
        for (int t = 0; t < p.threads; ++t)
          for (int j = 0; j < 8; ++j) {
            tg[size_t(t * 8 + j)] = g_before[size_t(t * 8 + j)] + g_before[size_t((t ^ off) * 8 + j)];
            tgx[size_t(t * 8 + j)] = gx_before[size_t(t * 8 + j)] + gx_before[size_t((t ^ off) * 8 + j)];
          }
      }
      std::vector<double> span_g(size_t(p.span), 0.0), span_gx(size_t(p.span), 0.0);
      for (int64_t c = 0; c < p.span; ++c) {
        for (int w = 0; w < p.threads / 32; ++w) {  // lane c / 8 of warp w holds chunk position c / 8
          span_g[size_t(c)] += double(tg[size_t((w * 32 + c / 8) * 8 + c % 8)]);
          span_gx[size_t(c)] += double(tgx[size_t((w * 32 + c / 8) * 8 + c % 8)]);
        }
        sum_g[size_t(image * s.c + g0 * cpg + c)] = span_g[size_t(c)];
        sum_gx[size_t(image * s.c + g0 * cpg + c)] = span_gx[size_t(c)];
      }
      std::vector<float> mean_dxh(static_cast<size_t>(G)), mean_dxh_xh(static_cast<size_t>(G));
      for (int64_t i = 0; i < G; ++i) {
        double a = 0, b = 0;
        for (int64_t c = i * cpg; c < (i + 1) * cpg; ++c) {
          a += double(k.gamma[size_t(g0 * cpg + c)]) * span_g[size_t(c)];
          b += double(k.gamma[size_t(g0 * cpg + c)]) * span_gx[size_t(c)];
        }
        mean_dxh[size_t(i)] = float(a / double(s.group_size()));
        mean_dxh_xh[size_t(i)] = float(b / double(s.group_size()));
      }
      for (int64_t q = 0; q < p.chunks; ++q)
        for (int j = 0; j < 8; ++j) {
          const int64_t ch = groupnorm_chunk_channel(s, 8, p.span, g0, q, j), off = groupnorm_chunk_offset(s, 8, p.span, g0, q) + j;
          const size_t i = size_t(ch / cpg - g0);
          float x_hat = 0;
          const float g = grad(off, ch, &x_hat);
          dx[size_t(at + off)] = norm_affine_input_grad(g, k.gamma[size_t(ch)], x_hat, mean_dxh[i], mean_dxh_xh[i],
                                                        rstd[size_t(image * s.groups + ch / cpg)]);
        }
    }
  for (int64_t ch = 0; ch < s.c; ++ch) {
    double a = 0, b = 0;
    for (int64_t image = 0; image < s.n; ++image) a += sum_g[size_t(image * s.c + ch)], b += sum_gx[size_t(image * s.c + ch)];
    dbeta[size_t(ch)] += float(a);
    dgamma[size_t(ch)] += float(b);
  }
}

TEST(GroupNormOnePassArithmetic, TheBackwardKernelsStepsGiveTheReference) {
  int checked = 0;
  for (const GroupNormShape& s : arithmetic_shapes()) {
    const GroupNormOnePassPlan p = groupnorm_one_pass_plan(s, true, kHopperLimit, true);
    if (!p.fits) continue;  // 12 channels in 3 groups: the two-pass path
    ++checked;
    for (bool relu : {false, true}) {
      const Case k = make_case(s);
      const size_t stats = size_t(s.n * s.groups);
      std::vector<float> y(k.x.size()), mean(stats), rstd(stats);
      groupnorm_forward_cpu<float>(s, 1e-5f, k.x.data(), k.gamma.data(), k.beta.data(), relu, y.data(), mean.data(),
                                   rstd.data());
      const std::vector<float> dgamma0 = test::random_vector<float>(size_t(s.c), 7),
                               dbeta0 = test::random_vector<float>(size_t(s.c), 8);
      std::vector<float> dx(k.x.size()), dgamma = dgamma0, dbeta = dbeta0;
      std::vector<float> dx_ref(k.x.size()), dgamma_ref = dgamma0, dbeta_ref = dbeta0;
      backward_replayed(k, p, mean, rstd, relu, dx, dgamma, dbeta);
      groupnorm_backward_cpu<float>(s, k.x.data(), k.gamma.data(), k.beta.data(), mean.data(), rstd.data(), relu,
                                    k.dy.data(), dx_ref.data(), dgamma_ref.data(), dbeta_ref.data());
      SCOPED_TRACE(::testing::Message() << "hw " << s.hw << ", c " << s.c << ", G " << p.groups_per_block << ", K "
                                        << p.chunks_per_pixel() << ", threads " << p.threads << ", relu " << relu);
      EXPECT_LE(test::rel_l2(dx, dx_ref), 1e-4);
      EXPECT_LE(test::rel_l2(dgamma, dgamma_ref), 1e-5);
      EXPECT_LE(test::rel_l2(dbeta, dbeta_ref), 1e-5);
    }
  }
  EXPECT_EQ(checked, 8);
}

}  // namespace
}  // namespace kd
