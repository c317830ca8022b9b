// distill_loss_cuda against distill_loss_cpu on fresh random logits: every distance, 1 and 3
// teachers, T 1 and 4, class counts from 10 to 21843 (rows staged in shared memory and rows
// re-read from global memory), outputs poisoned with 0xFF bytes first. fp32 outputs within
// 1e-5 relative L2 error, teacher top-1 and student rank exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/distill_loss.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::rel_l2;

// 3: a row shorter than its head; 8193: 1,024 threads with the rows staged (up to 3 teachers);
// 21843: staged with one teacher on Hopper, re-read from L2 with three; odd counts: rows at
// every 16-byte phase.
constexpr int64_t kClassCounts[] = {3, 10, 1000, 1531, 5003, 8193, 21843};

#if KD_HAVE_CUDA
int64_t rows_for(int64_t classes) { return classes > 5000 ? 3 : 9; }

DistillLossShape shape_of(int64_t classes, int64_t teachers) {
  DistillLossShape sh;
  sh.rows = rows_for(classes), sh.classes = classes, sh.teachers = teachers;
  return sh;
}

// Teacher and student logits in [-3, 3); the seed depends on the shape only, so every distance
// and temperature sees the same rows.
struct Logits {
  std::vector<float> teacher, student;
};
Logits random_logits(const DistillLossShape& sh, double scale = 1) {
  const uint64_t seed = uint64_t(sh.classes * 10 + sh.teachers);
  Logits l{test::random_vector<float>(size_t(sh.teachers * sh.rows * sh.classes), seed, -3, 3),
           test::random_vector<float>(size_t(sh.rows * sh.classes), seed + 5, -3, 3)};
  for (float& v : l.teacher) v = float(v * scale);
  for (float& v : l.student) v = float(v * scale);
  return l;
}

DistillLossOptions options_for(DistillDistance d, float temperature) {
  DistillLossOptions o;
  o.distance = d, o.temperature = temperature, o.grad_scale = 0.37f;
  o.label_smoothing = d == DistillDistance::hard ? 0.1f : 0.0f;
  return o;
}

struct Outputs {
  std::vector<float> loss, grad;
  std::vector<int32_t> top1, rank;
};

Outputs run_cpu(const DistillLossShape& sh, const DistillLossOptions& o, const Logits& l) {
  Outputs out{std::vector<float>(size_t(sh.rows)), std::vector<float>(l.student.size()),
              std::vector<int32_t>(size_t(sh.rows)), std::vector<int32_t>(size_t(sh.rows))};
  distill_loss_cpu<float>(sh, o, l.teacher.data(), l.student.data(), out.loss.data(), out.grad.data(),
                          out.top1.data(), out.rank.data());
  return out;
}

// The top-1 class of an ensemble is the argmax of a mean of probabilities, which fp32 and the
// CPU's double can only agree on when it is not a near-tie. Checked here (on the CPU, in CI) for
// the inputs the GPU cases use, so that they can demand exact equality.
TEST(DistillLossCudaInputs, EnsembleTopOneIsNeverANearTie) {
  for (int64_t classes : kClassCounts) {
    const DistillLossShape sh = shape_of(classes, 3);
    const Logits l = random_logits(sh);
    for (int64_t r = 0; r < sh.rows; ++r) {
      std::vector<double> mean(size_t(classes), 0.0);
      for (int64_t k = 0; k < sh.teachers; ++k) {
        const float* t = l.teacher.data() + (k * sh.rows + r) * classes;
        const double max = *std::max_element(t, t + classes);
        double sum = 0;
        for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(t[c]) - max);
        for (int64_t c = 0; c < classes; ++c) mean[size_t(c)] += std::exp(double(t[c]) - max) / sum;
      }
      std::partial_sort(mean.begin(), mean.begin() + 2, mean.end(), std::greater<double>());
      EXPECT_GT((mean[0] - mean[1]) / mean[0], 1e-5) << classes << " classes, row " << r;
    }
  }
}

#endif

#if KD_HAVE_CUDA
using test::DeviceArray;

// Runs the CUDA op with every output poisoned; a null in `want` skips that output.
struct Want {
  bool loss = true, grad = true, top1 = true, rank = true;
};
Outputs run_cuda(const DistillLossShape& sh, const DistillLossOptions& o, const Logits& l, Want want = {}) {
  DeviceArray<float> t(l.teacher), s(l.student), loss(size_t(sh.rows)), grad(l.student.size());
  DeviceArray<int32_t> top1(size_t(sh.rows)), rank(size_t(sh.rows));
  loss.poison(), grad.poison(), top1.poison(), rank.poison();
  distill_loss_cuda(test::cuda_test_context().cuda_handles(), sh, o, t.get(), s.get(), want.loss ? loss.get() : nullptr,
                    want.grad ? grad.get() : nullptr, want.top1 ? top1.get() : nullptr,
                    want.rank ? rank.get() : nullptr);
  return Outputs{loss.download(), grad.download(), top1.download(), rank.download()};
}

#endif

using Case = std::tuple<DistillDistance, int, float, int64_t>;
class DistillLossCuda : public ::testing::TestWithParam<Case> {};

TEST_P(DistillLossCuda, MatchesCpuReference) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const auto [distance, teachers, temperature, classes] = GetParam();
  const DistillLossShape sh = shape_of(classes, teachers);
  const DistillLossOptions o = options_for(distance, temperature);
  const Logits l = random_logits(sh);
  const Outputs want = run_cpu(sh, o, l), got = run_cuda(sh, o, l);
  EXPECT_LT(rel_l2(got.loss, want.loss), 1e-5);
  EXPECT_LT(rel_l2(got.grad, want.grad), 1e-5);
  EXPECT_EQ(got.top1, want.top1);
  EXPECT_EQ(got.rank, want.rank);
  const Outputs again = run_cuda(sh, o, l);  // deterministic: the same bits
  EXPECT_EQ(std::memcmp(again.loss.data(), got.loss.data(), got.loss.size() * 4), 0);
  EXPECT_EQ(std::memcmp(again.grad.data(), got.grad.data(), got.grad.size() * 4), 0);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(AllDistances, DistillLossCuda,
                         ::testing::Combine(::testing::Values(DistillDistance::kl, DistillDistance::hard,
                                                              DistillDistance::l2, DistillDistance::euclidean,
                                                              DistillDistance::logsoftmax_euclidean),
                                            ::testing::Values(1, 3), ::testing::Values(1.0f, 4.0f),
                                            ::testing::ValuesIn(kClassCounts)),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(distill_distance_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "teachers_T" +
                                  std::to_string(int(std::get<2>(info.param))) + "_" +
                                  std::to_string(std::get<3>(info.param)) + "classes";
                         });

TEST(DistillLossCudaOutputs, NullOutputsAreSkippedAndTheOthersStillMatch) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (int64_t classes : {int64_t(1000), int64_t(21843)})
    for (DistillDistance d : {DistillDistance::kl, DistillDistance::hard, DistillDistance::logsoftmax_euclidean}) {
      const DistillLossShape sh = shape_of(classes, 2);
      const DistillLossOptions o = options_for(d, 2.0f);
      const Logits l = random_logits(sh);
      const Outputs want = run_cpu(sh, o, l);
      const std::string what = std::string(distill_distance_name(d)) + ", " + std::to_string(classes) + " classes";
      Want only_top1;
      only_top1.loss = only_top1.grad = only_top1.rank = false;
      Outputs got = run_cuda(sh, o, l, only_top1);
      EXPECT_EQ(got.top1, want.top1) << what;
      EXPECT_TRUE(test::all_poisoned(got.loss) && test::all_poisoned(got.grad)) << what;
      EXPECT_EQ(got.rank, std::vector<int32_t>(size_t(sh.rows), -1)) << what;
      Want only_rank = only_top1;
      only_rank.top1 = false, only_rank.rank = true;
      got = run_cuda(sh, o, l, only_rank);
      EXPECT_EQ(got.rank, want.rank) << what;
      Want loss_only = only_top1;
      loss_only.top1 = false, loss_only.loss = true;
      got = run_cuda(sh, o, l, loss_only);
      EXPECT_LT(rel_l2(got.loss, want.loss), 1e-5) << what;
      EXPECT_TRUE(test::all_poisoned(got.grad)) << what;
      Want grad_only = only_top1;
      grad_only.top1 = false, grad_only.grad = true;
      got = run_cuda(sh, o, l, grad_only);
      EXPECT_LT(rel_l2(got.grad, want.grad), 1e-5) << what;
      EXPECT_TRUE(test::all_poisoned(got.loss)) << what;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(DistillLossCudaNumerics, HugeLogitsStayFiniteAndEqualRowsGiveZeroKl) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (int64_t classes : {int64_t(1000), int64_t(21843)}) {
    const DistillLossShape sh = shape_of(classes, 2);
    const Logits huge = random_logits(sh, 600);  // |logit| up to 1800
    for (DistillDistance d : {DistillDistance::kl, DistillDistance::hard, DistillDistance::logsoftmax_euclidean}) {
      const Outputs got = run_cuda(sh, options_for(d, 1.0f), huge);
      for (float v : got.loss) ASSERT_TRUE(std::isfinite(v)) << distill_distance_name(d) << " " << classes;
      for (float v : got.grad) ASSERT_TRUE(std::isfinite(v)) << distill_distance_name(d) << " " << classes;
    }
    DistillLossShape one = sh;
    one.teachers = 1;
    Logits same = random_logits(one);
    same.teacher = same.student;
    for (float T : {1.0f, 4.0f}) {
      const Outputs got = run_cuda(one, options_for(DistillDistance::kl, T), same);
      for (float v : got.loss) EXPECT_NEAR(v, 0.0f, 1e-5f) << "T " << T;
      // identical rows, identical arithmetic: zero, up to a fused multiply-add taken on one side only
      for (float v : got.grad) ASSERT_LE(std::fabs(v), 1e-6f) << "T " << T;
      for (int32_t rank : got.rank) EXPECT_EQ(rank, 0);
    }
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

// Masked teacher classes (-inf logits: a 21k teacher restricted to a label subset) have zero
// probability; the kernels' online softmax once turned such rows into NaN (exp(-inf - -inf) while
// a thread's max was still -inf). Every third class masked, from the first one on, so each thread
// starts on masked classes; KL and hard targets (the distances defined on masked logits).
TEST(DistillLossCudaNumerics, MaskedTeacherClassesMatchTheCpuReference) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (int64_t classes : {int64_t(10), int64_t(1000), int64_t(21843)})
    for (int teachers : {1, 3}) {
      const DistillLossShape sh = shape_of(classes, teachers);
      Logits l = random_logits(sh);
      for (size_t i = 0; i < l.teacher.size(); ++i)
        if (i % size_t(classes) % 3 == 0) l.teacher[i] = -INFINITY;
      for (DistillDistance d : {DistillDistance::kl, DistillDistance::hard}) {
        const DistillLossOptions o = options_for(d, 2.0f);
        const Outputs want = run_cpu(sh, o, l), got = run_cuda(sh, o, l);
        const std::string what = std::string(distill_distance_name(d)) + ", " + std::to_string(classes) +
                                 " classes, " + std::to_string(teachers) + " teachers";
        for (float v : want.loss) ASSERT_TRUE(std::isfinite(v)) << what << ": the reference itself";
        EXPECT_LT(rel_l2(got.loss, want.loss), 1e-5) << what;
        EXPECT_LT(rel_l2(got.grad, want.grad), 1e-5) << what;
        EXPECT_EQ(got.top1, want.top1) << what;
        for (int32_t c : got.top1) EXPECT_NE(c % 3, 0) << what << ": a masked class came out on top";
      }
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
