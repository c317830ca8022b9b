// The compute floor's definition (engine/gemm_rate.h): operands, the series length, and a
// measurement on the CPU (the GPU's runs in kd bench and bench_kernels on the device machine).
#include "engine/gemm_rate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace kd {
namespace {

TEST(GemmRate, OperandsAreDistinctAndUniformInMinusOneToOne) {
  const int64_t n = 1 << 16;
  double sum = 0, sum_sq = 0;
  int64_t equal = 0;
  std::set<float> seen;
  for (int64_t i = 0; i < n; ++i) {
    const float a = gemm_rate_operand(0, i), b = gemm_rate_operand(1, i);
    ASSERT_GE(a, -1.0f);
    ASSERT_LT(a, 1.0f);
    ASSERT_GE(b, -1.0f);
    ASSERT_LT(b, 1.0f);
    equal += a == b;
    sum += a, sum_sq += double(a) * a;
    seen.insert(a);
    ASSERT_EQ(a, gemm_rate_operand(0, i)) << "the same values every time";
  }
  EXPECT_LT(equal, 16) << "A and B are different matrices (an A A^T probe ran 15% faster than A B^T)";
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum_sq / n, 1.0 / 3.0, 0.01) << "the variance of uniform [-1, 1)";
  EXPECT_GT(seen.size(), size_t(n * 9 / 10));
}

TEST(GemmRate, TheSeriesFillsAQuarterSecondWithinItsBounds) {
  EXPECT_EQ(gemm_rate_reps(1.6e-3, 0.25, false), 156) << "bf16 8192^3 on an H200";
  EXPECT_EQ(gemm_rate_reps(1.0, 0.25, false), 10);
  EXPECT_EQ(gemm_rate_reps(1e-6, 0.25, false), 200);
  EXPECT_EQ(gemm_rate_reps(0.0, 0.25, false), 200);
  EXPECT_EQ(gemm_rate_reps(1e-3, 0.01, true), 10);
  EXPECT_EQ(gemm_rate_reps(0.1, 0.01, true), 3);
}

TEST(GemmRate, MeasuresTheCpuProduct) {
  auto ctx = Context::cpu();
  const GemmRate r = measure_gemm_rate(*ctx, true);
  EXPECT_EQ(r.n, 512);
  EXPECT_EQ(r.what, "fp32 512^3");
  EXPECT_GE(r.reps, 3);
  EXPECT_LE(r.reps, 10);
  EXPECT_GT(r.median_s, 0.0);
  EXPECT_NEAR(r.flops_per_s, 2.0 * 512.0 * 512.0 * 512.0 / r.median_s, 1e-6 * r.flops_per_s);
  EXPECT_GT(r.flops_per_s, 1e8) << "a 512^3 product in under 2.7 s";
}

TEST(GemmRate, MedianOfASeries) {
  EXPECT_EQ(median_of({3.0, 1.0, 2.0}), 2.0);
  EXPECT_EQ(median_of({4.0, 1.0, 3.0, 2.0}), 2.5) << "an even count: the mean of the middle two";
  EXPECT_EQ(median_of({}), 0.0);
}

}  // namespace
}  // namespace kd
