// GroupNorm on the GPU against the CPU reference, on the same bf16-rounded inputs. Tolerances
// (relative L2): bf16 outputs (y, dx) 1e-2; fp32 outputs (mean, rstd, dgamma, dbeta) 1e-5.
// Outputs are poisoned (NaN) first, so an element the kernels never write fails.
#include <gtest/gtest.h>

#include <cstring>
#include <ostream>

#include "kernels/groupnorm.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

struct GnCase {
  int64_t n, hw, c, groups;
  size_t offset;  // elements in front of x, y, dy, dx: 1 makes them unaligned (scalar kernels)
  const char* what;
};

void PrintTo(const GnCase& k, std::ostream* os) {
  *os << k.what << " [n " << k.n << ", hw " << k.hw << ", c " << k.c << "] groups " << k.groups << " offset "
      << k.offset;
}

class GroupNormCuda : public ::testing::TestWithParam<GnCase> {};

#if KD_HAVE_CUDA
GroupNormShape shape_of(const GnCase& k) {
  GroupNormShape s;
  s.n = k.n, s.hw = k.hw, s.c = k.c, s.groups = k.groups;
  return s;
}

using test::DeviceArray;
using test::random_vector;
using test::rel_l2;

using test::Bf16Input;
using test::random_bf16;

// x with a non-zero mean (as activations have), gamma around 1, beta around 0: the ReLU clips
// some outputs, not all.
struct GnInputs {
  Bf16Input x;
  std::vector<float> gamma, beta;
};

GnInputs random_inputs(const GroupNormShape& s, uint64_t seed) {
  return {random_bf16(size_t(s.numel()), seed, -1.0, 3.0), random_vector<float>(size_t(s.c), seed + 1, 0.5, 1.5),
          random_vector<float>(size_t(s.c), seed + 2, -0.5, 0.5)};
}

const CudaHandles& handles() { return test::cuda_test_context().cuda_handles(); }

// one_pass: CudaHandles::groupnorm_one_pass (kernels/groupnorm_one_pass.h; groups too large for
// shared memory still take the two-pass path). Returns y's bits.
std::vector<bf16> check_forward(const GnCase& k, bool relu, bool save_stats, bool one_pass = false) {
  SCOPED_TRACE(::testing::Message() << "relu " << relu << ", save_stats " << save_stats << ", one_pass " << one_pass);
  const GroupNormShape s = shape_of(k);
  const GnInputs in = random_inputs(s, 11 + uint64_t(relu));
  const size_t numel = size_t(s.numel()), stats = size_t(s.n * s.groups);
  std::vector<float> y_ref(numel), mean_ref(stats), rstd_ref(stats);
  groupnorm_forward_cpu<float>(s, 1e-5f, in.x.values.data(), in.gamma.data(), in.beta.data(), relu, y_ref.data(),
                               mean_ref.data(), rstd_ref.data());

  DeviceArray<bf16> x(in.x.bits, k.offset), y(numel, k.offset);
  DeviceArray<float> gamma(in.gamma), beta(in.beta), mean(stats), rstd(stats);
  y.poison();
  mean.poison();
  rstd.poison();
  CudaHandles h = handles();
  h.groupnorm_one_pass = one_pass;
  groupnorm_forward_cuda(h, s, 1e-5f, x.get(), gamma.get(), beta.get(), relu, y.get(), save_stats ? mean.get() : nullptr,
                         save_stats ? rstd.get() : nullptr);
  const std::vector<bf16> y_bits = y.download();
  const std::vector<float> y_got = test::to_f32(y_bits);
  EXPECT_LE(rel_l2(y_got, y_ref), 1e-2) << test::mismatches(y_got, y_ref, 2e-2, 2e-2, size_t(s.c));
  if (save_stats) {
    EXPECT_LE(rel_l2(mean.download(), mean_ref), 1e-5);
    EXPECT_LE(rel_l2(rstd.download(), rstd_ref), 1e-5);
  }
  return y_bits;
}

struct BackwardResult {
  std::vector<bf16> dx;
  std::vector<float> dgamma, dbeta;
};

// Runs the GPU backward on the CPU forward's statistics; checks it against the CPU backward.
// dgamma and dbeta start from non-zero values: both must add to them.
BackwardResult check_backward(const GnCase& k, bool relu, bool one_pass = false) {
  SCOPED_TRACE(::testing::Message() << "relu " << relu << ", one_pass " << one_pass);
  const GroupNormShape s = shape_of(k);
  const GnInputs in = random_inputs(s, 21 + uint64_t(relu));
  const Bf16Input dy = random_bf16(size_t(s.numel()), 24, -1.0, 1.0);
  const size_t numel = size_t(s.numel()), stats = size_t(s.n * s.groups);
  std::vector<float> y_ref(numel), mean_ref(stats), rstd_ref(stats);
  groupnorm_forward_cpu<float>(s, 1e-5f, in.x.values.data(), in.gamma.data(), in.beta.data(), relu, y_ref.data(),
                               mean_ref.data(), rstd_ref.data());
  const std::vector<float> dgamma0 = random_vector<float>(size_t(s.c), 25), dbeta0 = random_vector<float>(size_t(s.c), 26);
  std::vector<float> dx_ref(numel), dgamma_ref = dgamma0, dbeta_ref = dbeta0;
  groupnorm_backward_cpu<float>(s, in.x.values.data(), in.gamma.data(), in.beta.data(), mean_ref.data(),
                                rstd_ref.data(), relu, dy.values.data(), dx_ref.data(), dgamma_ref.data(),
                                dbeta_ref.data());

  DeviceArray<bf16> x(in.x.bits, k.offset), ddy(dy.bits, k.offset), dx(numel, k.offset);
  DeviceArray<float> gamma(in.gamma), beta(in.beta), mean(mean_ref), rstd(rstd_ref), dgamma(dgamma0), dbeta(dbeta0);
  dx.poison();
  CudaHandles h = handles();
  h.groupnorm_one_pass = one_pass;
  groupnorm_backward_cuda(h, s, x.get(), gamma.get(), beta.get(), mean.get(), rstd.get(), relu, ddy.get(),
                          dx.get(), dgamma.get(), dbeta.get());
  BackwardResult r{dx.download(), dgamma.download(), dbeta.download()};
  EXPECT_LE(rel_l2(test::to_f32(r.dx), dx_ref), 1e-2) << test::mismatches(test::to_f32(r.dx), dx_ref, 2e-2, 2e-2, size_t(s.c));
  EXPECT_LE(rel_l2(r.dgamma, dgamma_ref), 1e-5);
  EXPECT_LE(rel_l2(r.dbeta, dbeta_ref), 1e-5);
  return r;
}
#endif

TEST_P(GroupNormCuda, ForwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (bool relu : {false, true}) check_forward(GetParam(), relu, true);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(GroupNormCuda, OnePassForwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (bool relu : {false, true}) check_forward(GetParam(), relu, true, true);
  check_forward(GetParam(), true, false, true);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(GroupNormCuda, InferenceForwardWithoutSavedStatisticsMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_forward(GetParam(), true, false);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(GroupNormCuda, BackwardMatchesCpuAndAccumulatesParameterGradients) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (bool relu : {false, true}) check_backward(GetParam(), relu);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(GroupNormCuda, OnePassBackwardMatchesCpuAndAccumulatesParameterGradients) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (bool relu : {false, true}) check_backward(GetParam(), relu, true);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GroupNormCuda,
    ::testing::Values(GnCase{2, 3136, 256, 32, 0, "resnet50_224px"},      // many small groups
                      GnCase{2, 49, 4096, 32, 0, "r152x2_stage4"},        // few big groups, 16 tiles
                      GnCase{14, 3136, 256, 32, 0, "several_l2_slabs"},   // forward 2 slabs, backward 3
                      GnCase{1, 3136, 256, 32, 1, "unaligned_scalar"},    // 16-byte loads impossible
                      GnCase{1, 5, 12, 3, 0, "channels_not_multiple_of_8"},
                      GnCase{3, 17, 24, 24, 0, "one_channel_per_group"},
                      GnCase{2, 9, 72, 4, 0, "groups_of_18_split_vectors"},
                      GnCase{1, 7, 40, 5, 0, "one_image_partial_tile"},
                      GnCase{2, 1, 12, 3, 0, "one_pixel"},
                      GnCase{1, 65539, 8, 1, 0, "large_hw_one_group"},
                      // One-pass spans of several groups: 8 groups of 2 channels (R50x1 at 160 px),
                      // 4 of 4 (R152x2's 56x56x128); 32 chunks a pixel (256 channels a group).
                      GnCase{2, 1600, 64, 32, 0, "eight_groups_a_block"},
                      GnCase{2, 3136, 128, 32, 0, "four_groups_a_block"},
                      GnCase{2, 49, 8192, 32, 0, "thirty_two_chunks_a_pixel"},
                      GnCase{2, 9, 32, 32, 0, "eight_one_channel_groups_a_block"}),
    [](const ::testing::TestParamInfo<GnCase>& info) { return std::string(info.param.what); });

TEST(GroupNormCudaDeterminism, OnePassForwardGivesTheSameBitsTwice) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const GnCase k{3, 3136, 512, 32, 0, "r152x2_stage1"};  // 512 threads a block, 98 KB of shared memory
  const std::vector<bf16> a = check_forward(k, true, true, true), b = check_forward(k, true, true, true);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(bf16)), 0);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(GroupNormCudaDeterminism, BackwardGivesTheSameBitsTwice) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const GnCase k{3, 3136, 256, 32, 0, "resnet50_224px"};
  for (bool one_pass : {false, true}) {
    const BackwardResult a = check_backward(k, true, one_pass), b = check_backward(k, true, one_pass);
    ASSERT_EQ(a.dx.size(), b.dx.size());
    EXPECT_EQ(std::memcmp(a.dx.data(), b.dx.data(), a.dx.size() * sizeof(bf16)), 0);
    EXPECT_EQ(std::memcmp(a.dgamma.data(), b.dgamma.data(), a.dgamma.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(a.dbeta.data(), b.dbeta.data(), a.dbeta.size() * sizeof(float)), 0);
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
