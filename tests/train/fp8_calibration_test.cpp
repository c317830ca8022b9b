// The FP8 teacher's check after calibration (train/fp8_calibration.h): the comparison of full-
// precision and FP8 logits against a direct computation in double, its summary line, and the
// refusal that names the teacher, its figures and the option. The whole path (calibration, the
// second pass, a run refused before its first step) runs in tests/tools/trainer_test.cpp.
#include "train/fp8_calibration.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/support/testing.h"

namespace kd {
namespace {

// KL(softmax(p) || softmax(q)) of one row, in double.
double kl_row(const float* p, const float* q, int64_t n) {
  double mp = p[0], mq = q[0];
  for (int64_t i = 1; i < n; ++i) mp = std::max(mp, double(p[i])), mq = std::max(mq, double(q[i]));
  double zp = 0, zq = 0;
  for (int64_t i = 0; i < n; ++i) zp += std::exp(p[i] - mp), zq += std::exp(q[i] - mq);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double lp = p[i] - mp - std::log(zp), lq = q[i] - mq - std::log(zq);
    kl += std::exp(lp) * (lp - lq);
  }
  return kl;
}

int64_t argmax(const float* p, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (p[i] > p[best]) best = i;
  return best;
}

TEST(Fp8Check, TheComparisonIsTheAgreementAndMeanKlComputedDirectly) {
  const int64_t rows = 40, classes = 37;
  const std::vector<float> full = test::random_vector<float>(size_t(rows * classes), 1, -4, 4);
  // "FP8" logits: the full ones moved by noise large enough to flip some rows' top-1.
  const std::vector<float> noise = test::random_vector<float>(size_t(rows * classes), 2, -1.5, 1.5);
  std::vector<float> fp8(full.size());
  for (size_t i = 0; i < full.size(); ++i) fp8[i] = full[i] + noise[i];
  double kl = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    kl += kl_row(&full[size_t(r * classes)], &fp8[size_t(r * classes)], classes);
    agree += argmax(&full[size_t(r * classes)], classes) == argmax(&fp8[size_t(r * classes)], classes);
  }
  ASSERT_GT(agree, 0);
  ASSERT_LT(agree, rows) << "the noise should flip some rows' top-1, else agreement is not tested";
  const LogitComparison c = compare_logits(full.data(), fp8.data(), rows, classes);
  EXPECT_DOUBLE_EQ(c.agreement, double(agree) / double(rows));
  EXPECT_NEAR(c.kl, kl / double(rows), 1e-5 * kl / double(rows) + 1e-7);
  EXPECT_GT(c.kl, 0.01);

  const LogitComparison same = compare_logits(full.data(), full.data(), rows, classes);
  EXPECT_EQ(same.agreement, 1.0);
  EXPECT_NEAR(same.kl, 0.0, 1e-6);
}

TEST(Fp8Check, TheSummaryNamesTheWorstTeacherOfSeveral) {
  Fp8Check one;
  one.images = 512;
  one.teachers = {LogitComparison{0.99414, 0.00071}};
  EXPECT_EQ(one.describe(), "top-1 agreement with full precision 99.41%, KL 0.00071, on 512 calibration images");
  Fp8Check two = one;
  two.teachers = {LogitComparison{0.999, 0.004}, LogitComparison{0.98, 0.001}};
  EXPECT_EQ(two.describe(),
            "top-1 agreement with full precision 98.00% (lowest: teacher 1), KL 0.004 (largest: teacher 0), on 512 "
            "calibration images");
}

TEST(Fp8Check, ATeacherMovedBeyondTheLimitsIsRefusedByName) {
  Fp8Check check;
  check.images = 256;
  check.teachers = {LogitComparison{0.999, 0.001}, LogitComparison{0.90, 0.002}};
  EXPECT_NO_THROW(require_fp8_fidelity(check, 0.9, 0.1));
  // Teacher 1 agrees on 90% only.
  const std::string low = test::error_of([&] { require_fp8_fidelity(check, 0.95, 0.1); });
  EXPECT_NE(low.find("teacher 1"), std::string::npos) << low;
  EXPECT_NE(low.find("90.00%"), std::string::npos) << low;
  EXPECT_NE(low.find("256 calibration images"), std::string::npos) << low;
  EXPECT_NE(low.find("teacher.fp8_min_agreement"), std::string::npos) << low;
  // Teacher 1's KL 0.002 is above 0.0015.
  const std::string far = test::error_of([&] { require_fp8_fidelity(check, 0.5, 0.0015); });
  EXPECT_NE(far.find("teacher 1"), std::string::npos) << far;
  EXPECT_NE(far.find("teacher.fp8_max_kl"), std::string::npos) << far;
  check.teachers.resize(1);
  check.teachers[0].agreement = 0.5;
  const std::string one = test::error_of([&] { require_fp8_fidelity(check, 0.95, 0.1); });
  EXPECT_NE(one.find("the teacher's function"), std::string::npos) << one;
}

}  // namespace
}  // namespace kd
