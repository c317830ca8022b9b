#include "kernels/batchnorm.h"

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

struct Stats {
  Vec mean, var;  // biased variance
};

Stats column_stats(const BatchNormShape& s, const Vec& x) {
  Stats st{Vec(size_t(s.c), 0.0), Vec(size_t(s.c), 0.0)};
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.c; ++c) st.mean[size_t(c)] += x[size_t(r * s.c + c)] / double(s.rows);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.c; ++c)
      st.var[size_t(c)] += std::pow(x[size_t(r * s.c + c)] - st.mean[size_t(c)], 2) / double(s.rows);
  return st;
}

Vec normalise_direct(const BatchNormShape& s, double eps, const Vec& x, const Vec& mean, const Vec& var,
                     const Vec& gamma, const Vec& beta) {
  Vec y(x.size());
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.c; ++c) {
      const size_t i = size_t(r * s.c + c), k = size_t(c);
      y[i] = gamma[k] * (x[i] - mean[k]) / std::sqrt(var[k] + eps) + beta[k];
    }
  return y;
}

// 300 rows: several blocks of the row reduction.
const BatchNormShape kShape{300, 5};

TEST(BatchNorm, TrainForwardMatchesDefinitionAndUpdatesRunningStatistics) {
  const BatchNormShape s = kShape;
  const Vec x = random_vector<double>(size_t(s.rows * s.c), 1, -1, 3), gamma = random_vector<double>(5, 2, 0.5, 1.5),
            beta = random_vector<double>(5, 3);
  const Vec rm0 = random_vector<double>(5, 4), rv0 = random_vector<double>(5, 5, 0.5, 2);
  const double eps = 1e-5, momentum = 0.1;
  const Stats st = column_stats(s, x);
  const Vec expected = normalise_direct(s, eps, x, st.mean, st.var, gamma, beta);
  Vec exp_rm(5), exp_rv(5), exp_rstd(5);
  for (size_t c = 0; c < 5; ++c) {
    exp_rm[c] = (1 - momentum) * rm0[c] + momentum * st.mean[c];
    exp_rv[c] = (1 - momentum) * rv0[c] + momentum * st.var[c] * double(s.rows) / double(s.rows - 1);
    exp_rstd[c] = 1 / std::sqrt(st.var[c] + eps);
  }

  Vec y(x.size(), NAN), mean(5, NAN), rstd(5, NAN), rm = rm0, rv = rv0;
  batchnorm_forward_train_cpu<double>(s, eps, momentum, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                      rstd.data(), rm.data(), rv.data());
  EXPECT_LT(rel_l2(y, expected), 1e-12);
  EXPECT_LT(rel_l2(mean, st.mean), 1e-12);
  EXPECT_LT(rel_l2(rstd, exp_rstd), 1e-12);
  EXPECT_LT(rel_l2(rm, exp_rm), 1e-12);
  EXPECT_LT(rel_l2(rv, exp_rv), 1e-12);

  const auto xf = test::cast_vector<float>(x), gf = test::cast_vector<float>(gamma), bf = test::cast_vector<float>(beta);
  std::vector<float> yf(x.size()), mf(5), rf(5), rmf = test::cast_vector<float>(rm0), rvf = test::cast_vector<float>(rv0);
  batchnorm_forward_train_cpu<float>(s, 1e-5f, 0.1f, xf.data(), gf.data(), bf.data(), yf.data(), mf.data(), rf.data(),
                                     rmf.data(), rvf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-5);
  EXPECT_LT(rel_l2(rvf, exp_rv), 1e-5);
}

TEST(BatchNorm, TrainForwardWithoutRunningStatistics) {
  const BatchNormShape s{7, 3};
  const Vec x = random_vector<double>(21, 6), gamma = random_vector<double>(3, 7), beta = random_vector<double>(3, 8);
  const Stats st = column_stats(s, x);
  Vec y(21), mean(3), rstd(3);
  batchnorm_forward_train_cpu<double>(s, 1e-3, 0.1, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                      rstd.data(), nullptr, nullptr);
  EXPECT_LT(rel_l2(y, normalise_direct(s, 1e-3, x, st.mean, st.var, gamma, beta)), 1e-12);
}

TEST(BatchNorm, EvalForwardUsesRunningStatistics) {
  const BatchNormShape s{11, 4};
  const Vec x = random_vector<double>(44, 9), gamma = random_vector<double>(4, 10), beta = random_vector<double>(4, 11);
  const Vec rm = random_vector<double>(4, 12), rv = random_vector<double>(4, 13, 0.1, 3);
  Vec y(44, NAN);
  batchnorm_forward_eval_cpu<double>(s, 1e-5, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), y.data());
  const Vec expected = normalise_direct(s, 1e-5, x, rm, rv, gamma, beta);
  EXPECT_LT(rel_l2(y, expected), 1e-12);
  const auto xf = test::cast_vector<float>(x), gf = test::cast_vector<float>(gamma), bf = test::cast_vector<float>(beta),
             rmf = test::cast_vector<float>(rm), rvf = test::cast_vector<float>(rv);
  std::vector<float> yf(44);
  batchnorm_forward_eval_cpu<float>(s, 1e-5f, xf.data(), gf.data(), bf.data(), rmf.data(), rvf.data(), yf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-5);
}

TEST(BatchNorm, BackwardMatchesFiniteDifferences) {
  const BatchNormShape s{150, 3};
  Vec x = random_vector<double>(450, 14, -1, 2), gamma = random_vector<double>(3, 15, 0.5, 1.5),
      beta = random_vector<double>(3, 16);
  auto forward = [&](Vec& y, Vec& mean, Vec& rstd) {
    y.assign(x.size(), 0), mean.assign(3, 0), rstd.assign(3, 0);
    batchnorm_forward_train_cpu<double>(s, 1e-5, 0.1, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                        rstd.data(), nullptr, nullptr);
  };
  test::expect_gradients_match(
      {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}},
      [&] {
        Vec y, mean, rstd;
        forward(y, mean, rstd);
        return y;
      },
      [&](const Vec& dy) {
        Vec y, mean, rstd;
        forward(y, mean, rstd);
        Vec dx(x.size(), NAN), dgamma(3, 0.5), dbeta(3, 0.5);
        batchnorm_backward_cpu<double>(s, x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                                       dgamma.data(), dbeta.data());
        for (double& v : dgamma) v -= 0.5;  // parameter gradients accumulate
        for (double& v : dbeta) v -= 0.5;
        return std::vector<Vec>{dx, dgamma, dbeta};
      });
}

TEST(BatchNorm, TrainingRejectsASingleValuePerChannel) {
  std::vector<float> x(3), p(3), y(3), st(3);
  try {
    batchnorm_forward_train_cpu<float>(BatchNormShape{1, 3}, 1e-5f, 0.1f, x.data(), p.data(), p.data(), y.data(),
                                       st.data(), st.data(), nullptr, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than one value per channel"), std::string::npos) << e.what();
  }
}

TEST(BatchNorm, RejectsRunningMeanWithoutRunningVariance) {
  std::vector<float> x(6), p(3), y(6), st(3);
  EXPECT_THROW(batchnorm_forward_train_cpu<float>(BatchNormShape{2, 3}, 1e-5f, 0.1f, x.data(), p.data(), p.data(),
                                                  y.data(), st.data(), st.data(), st.data(), nullptr),
               Error);
}

}  // namespace
}  // namespace kd
