#include "kernels/groupnorm.h"

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

struct Normalised {
  Vec y, mean, rstd;
};

// The definition, one (image, group) at a time: gather its hw * c/groups values, biased
// variance, affine per channel, then the optional ReLU.
Normalised groupnorm_direct(const GroupNormShape& s, double eps, const Vec& x, const Vec& gamma, const Vec& beta,
                            bool relu) {
  Normalised r{Vec(x.size()), Vec(size_t(s.n * s.groups)), Vec(size_t(s.n * s.groups))};
  const int64_t cpg = s.c / s.groups;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t g = 0; g < s.groups; ++g) {
      auto at = [&](int64_t p, int64_t j) { return size_t((n * s.hw + p) * s.c + g * cpg + j); };
      double mean = 0, var = 0;
      for (int64_t p = 0; p < s.hw; ++p)
        for (int64_t j = 0; j < cpg; ++j) mean += x[at(p, j)];
      mean /= double(s.hw * cpg);
      for (int64_t p = 0; p < s.hw; ++p)
        for (int64_t j = 0; j < cpg; ++j) var += (x[at(p, j)] - mean) * (x[at(p, j)] - mean);
      var /= double(s.hw * cpg);
      r.mean[size_t(n * s.groups + g)] = mean;
      r.rstd[size_t(n * s.groups + g)] = 1 / std::sqrt(var + eps);
      for (int64_t p = 0; p < s.hw; ++p)
        for (int64_t j = 0; j < cpg; ++j) {
          const double v = gamma[size_t(g * cpg + j)] * (x[at(p, j)] - mean) / std::sqrt(var + eps) +
                           beta[size_t(g * cpg + j)];
          r.y[at(p, j)] = relu ? std::max(v, 0.0) : v;
        }
    }
  return r;
}

GroupNormShape make(int64_t n, int64_t hw, int64_t c, int64_t groups) {
  GroupNormShape s;
  s.n = n, s.hw = hw, s.c = c, s.groups = groups;
  return s;
}

struct Inputs {
  Vec x, gamma, beta;
};

// gamma around 1 and beta around 0, as trained norms are: the ReLU clips some outputs, not all.
Inputs random_inputs(const GroupNormShape& s, uint64_t seed) {
  return {random_vector<double>(size_t(s.numel()), seed, -2, 3), random_vector<double>(size_t(s.c), seed + 1, 0.5, 1.5),
          random_vector<double>(size_t(s.c), seed + 2, -0.5, 0.5)};
}

class GroupNormShapes : public ::testing::TestWithParam<GroupNormShape> {};

TEST_P(GroupNormShapes, ForwardMatchesDefinitionWithAndWithoutRelu) {
  const GroupNormShape s = GetParam();
  const Inputs in = random_inputs(s, 1);
  for (bool relu : {false, true}) {
    const Normalised expected = groupnorm_direct(s, 1e-5, in.x, in.gamma, in.beta, relu);
    Vec y(in.x.size(), NAN), mean(size_t(s.n * s.groups), NAN), rstd(mean.size(), NAN);
    groupnorm_forward_cpu<double>(s, 1e-5, in.x.data(), in.gamma.data(), in.beta.data(), relu, y.data(), mean.data(),
                                  rstd.data());
    EXPECT_LT(rel_l2(y, expected.y), 1e-12) << "relu " << relu;
    EXPECT_LT(rel_l2(mean, expected.mean), 1e-12);
    EXPECT_LT(rel_l2(rstd, expected.rstd), 1e-12);

    const auto xf = test::cast_vector<float>(in.x), gf = test::cast_vector<float>(in.gamma),
               bf = test::cast_vector<float>(in.beta);
    std::vector<float> yf(in.x.size(), NAN), mf(mean.size(), NAN), rf(mean.size(), NAN);
    groupnorm_forward_cpu<float>(s, 1e-5f, xf.data(), gf.data(), bf.data(), relu, yf.data(), mf.data(), rf.data());
    EXPECT_LT(rel_l2(yf, expected.y), 1e-5) << "relu " << relu;
    EXPECT_LT(rel_l2(rf, expected.rstd), 1e-5);
  }
}

void check_backward(const GroupNormShape& s, bool relu, uint64_t seed) {
  Inputs in = random_inputs(s, seed);
  const size_t stats = size_t(s.n * s.groups);
  auto forward = [&](Vec& y, Vec& mean, Vec& rstd) {
    y.assign(in.x.size(), 0), mean.assign(stats, 0), rstd.assign(stats, 0);
    groupnorm_forward_cpu<double>(s, 1e-5, in.x.data(), in.gamma.data(), in.beta.data(), relu, y.data(), mean.data(),
                                  rstd.data());
  };
  test::expect_gradients_match(
      {{"x", &in.x}, {"gamma", &in.gamma}, {"beta", &in.beta}},
      [&] {
        Vec y, mean, rstd;
        forward(y, mean, rstd);
        return y;
      },
      [&](const Vec& dy) {
        Vec y, mean, rstd;
        forward(y, mean, rstd);
        Vec dx(in.x.size(), NAN), dgamma(in.gamma.size(), 0.5), dbeta(in.beta.size(), -0.5);
        groupnorm_backward_cpu<double>(s, in.x.data(), in.gamma.data(), in.beta.data(), mean.data(), rstd.data(), relu,
                                       dy.data(), dx.data(), dgamma.data(), dbeta.data());
        for (double& v : dgamma) v -= 0.5;  // parameter gradients accumulate
        for (double& v : dbeta) v += 0.5;
        return std::vector<Vec>{dx, dgamma, dbeta};
      });
}

TEST_P(GroupNormShapes, BackwardMatchesFiniteDifferences) { check_backward(GetParam(), false, 3); }

TEST_P(GroupNormShapes, FusedReluBackwardMatchesFiniteDifferences) { check_backward(GetParam(), true, 5); }

INSTANTIATE_TEST_SUITE_P(Shapes, GroupNormShapes,
                         ::testing::Values(make(2, 6, 8, 4),    // 2 channels per group
                                           make(1, 5, 64, 32),  // BiT: 32 groups
                                           make(3, 4, 6, 1),    // one group: every value of the image
                                           make(2, 3, 6, 6),    // one channel per group
                                           make(2, 1, 12, 3))); // 1x1 spatial

TEST(GroupNorm, ReluMaskIsRecomputedFromTheSavedStatistics) {
  // Where the forward ReLU clipped, the backward must give no gradient to gamma and beta.
  const GroupNormShape s = make(1, 4, 4, 2);
  const Inputs in = random_inputs(s, 7);
  const Vec beta(size_t(s.c), -10.0);  // every output clipped
  Vec y(in.x.size()), mean(2), rstd(2), dx(in.x.size()), dgamma(4, 0.0), dbeta(4, 0.0);
  groupnorm_forward_cpu<double>(s, 1e-5, in.x.data(), in.gamma.data(), beta.data(), true, y.data(), mean.data(),
                                rstd.data());
  const Vec dy = random_vector<double>(in.x.size(), 8);
  groupnorm_backward_cpu<double>(s, in.x.data(), in.gamma.data(), beta.data(), mean.data(), rstd.data(), true,
                                 dy.data(), dx.data(), dgamma.data(), dbeta.data());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], 0.0);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_EQ(dx[i], 0.0);
  for (size_t ch = 0; ch < 4; ++ch) {
    EXPECT_EQ(dgamma[ch], 0.0);
    EXPECT_EQ(dbeta[ch], 0.0);
  }
}

TEST(GroupNorm, RejectsGroupsThatDoNotDivideChannels) {
  try {
    validate(make(1, 4, 6, 4));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4 groups do not divide 6 channels"), std::string::npos) << e.what();
  }
}

TEST(GroupNorm, RejectsEmptyShapes) {
  EXPECT_THROW(validate(make(0, 4, 4, 2)), Error);
  EXPECT_THROW(validate(make(1, 4, 4, 0)), Error);
  std::vector<float> x(8), p(8), y(8), stats(8);
  EXPECT_THROW(groupnorm_forward_cpu<float>(make(1, 2, 4, 3), 1e-5f, x.data(), p.data(), p.data(), false, y.data(),
                                            stats.data(), stats.data()),
               Error);
}

}  // namespace
}  // namespace kd
