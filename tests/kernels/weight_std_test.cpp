#include "kernels/weight_std.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

struct Standardised {
  Vec w_hat, mean, rstd;
};

// The definition: per row, mean and biased variance, then (w - mean) / sqrt(var + eps).
Standardised standardise_direct(int64_t c_out, int64_t k, double eps, const Vec& w) {
  Standardised r{Vec(w.size()), Vec(size_t(c_out)), Vec(size_t(c_out))};
  for (int64_t o = 0; o < c_out; ++o) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < k; ++i) mean += w[size_t(o * k + i)] / double(k);
    for (int64_t i = 0; i < k; ++i) var += std::pow(w[size_t(o * k + i)] - mean, 2) / double(k);
    r.mean[size_t(o)] = mean;
    r.rstd[size_t(o)] = 1 / std::sqrt(var + eps);
    for (int64_t i = 0; i < k; ++i) r.w_hat[size_t(o * k + i)] = (w[size_t(o * k + i)] - mean) / std::sqrt(var + eps);
  }
  return r;
}

TEST(WeightStd, ForwardMatchesDefinition) {
  const int64_t c_out = 5, k = 3 * 3 * 4;
  const Vec w = random_vector<double>(size_t(c_out * k), 1, -0.3, 0.7);
  const Standardised expected = standardise_direct(c_out, k, 1e-8, w);
  Vec w_hat(w.size(), NAN), mean(size_t(c_out), NAN), rstd(size_t(c_out), NAN);
  weight_std_forward_cpu<double>(c_out, k, 1e-8, w.data(), w_hat.data(), mean.data(), rstd.data());
  EXPECT_LT(rel_l2(w_hat, expected.w_hat), 1e-12);
  EXPECT_LT(rel_l2(mean, expected.mean), 1e-12);
  EXPECT_LT(rel_l2(rstd, expected.rstd), 1e-12);

  const auto wf = test::cast_vector<float>(w);
  std::vector<float> w_hat_f(w.size(), NAN), mean_f(size_t(c_out), NAN), rstd_f(size_t(c_out), NAN);
  weight_std_forward_cpu<float>(c_out, k, 1e-8f, wf.data(), w_hat_f.data(), mean_f.data(), rstd_f.data());
  EXPECT_LT(rel_l2(w_hat_f, expected.w_hat), 1e-5);
  EXPECT_LT(rel_l2(rstd_f, expected.rstd), 1e-5);
}

TEST(WeightStd, EpsEntersUnderTheSquareRoot) {
  const int64_t c_out = 2, k = 6;
  const Vec w = random_vector<double>(size_t(c_out * k), 2, -1e-2, 1e-2);  // variance ~ eps
  const double eps = 3e-5;
  Vec w_hat(w.size()), mean(2), rstd(2);
  weight_std_forward_cpu<double>(c_out, k, eps, w.data(), w_hat.data(), mean.data(), rstd.data());
  EXPECT_LT(rel_l2(w_hat, standardise_direct(c_out, k, eps, w).w_hat), 1e-12);
}

// A float row with a large common offset: the variance must be taken around the mean in double,
// not as E[w^2] - E[w]^2 in float, or the spread loses every digit. (w_hat itself is computed
// from the mean rounded to float, as PyTorch does, so it is only as exact as that rounding.)
TEST(WeightStd, FloatStatisticsStayAccurateWithLargeCommonOffset) {
  const int64_t c_out = 3, k = 64;
  std::vector<float> wf = random_vector<float>(size_t(c_out * k), 3, 1000.0, 1000.01);
  const Standardised expected = standardise_direct(c_out, k, 1e-8, test::cast_vector<double>(wf));
  std::vector<float> w_hat(wf.size()), mean(3), rstd(3);
  weight_std_forward_cpu<float>(c_out, k, 1e-8f, wf.data(), w_hat.data(), mean.data(), rstd.data());
  EXPECT_LT(rel_l2(rstd, expected.rstd), 1e-6);
  EXPECT_LT(rel_l2(mean, expected.mean), 1e-7);
}

TEST(WeightStd, BackwardMatchesFiniteDifferences) {
  const int64_t c_out = 4, k = 2 * 2 * 5;
  Vec w = random_vector<double>(size_t(c_out * k), 4);
  test::expect_gradients_match(
      {{"w", &w}},
      [&] {
        Vec w_hat(w.size()), mean(w_hat.size() / size_t(k)), rstd(mean.size());
        weight_std_forward_cpu<double>(c_out, k, 1e-8, w.data(), w_hat.data(), mean.data(), rstd.data());
        return w_hat;
      },
      [&](const Vec& dw_hat) {
        Vec w_hat(w.size()), mean(w_hat.size() / size_t(k)), rstd(mean.size());
        weight_std_forward_cpu<double>(c_out, k, 1e-8, w.data(), w_hat.data(), mean.data(), rstd.data());
        Vec dw(w.size(), 0.25);  // accumulates: start from a known value
        weight_std_backward_cpu<double>(c_out, k, w.data(), mean.data(), rstd.data(), dw_hat.data(), dw.data());
        for (double& v : dw) v -= 0.25;
        return std::vector<Vec>{dw};
      });
}

TEST(WeightStd, RejectsEmptyRows) {
  std::vector<float> w(4), w_hat(4), mean(4), rstd(4);
  try {
    weight_std_forward_cpu<float>(4, 0, 1e-8f, w.data(), w_hat.data(), mean.data(), rstd.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("k 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(weight_std_backward_cpu<float>(0, 4, w.data(), mean.data(), rstd.data(), w.data(), w_hat.data()),
               Error);
}

}  // namespace
}  // namespace kd
