#include "kernels/elementwise.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

// The definitions as PyTorch documents them.
double definition(Activation a, double x) {
  switch (a) {
    case Activation::relu: return std::max(x, 0.0);
    case Activation::hardswish: return x * std::min(std::max(x + 3, 0.0), 6.0) / 6;
    case Activation::sigmoid: return 1 / (1 + std::exp(-x));
    case Activation::hardsigmoid: return std::min(std::max(x + 3, 0.0), 6.0) / 6;
    case Activation::identity: break;
  }
  return x;
}

const char* name(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::hardswish: return "hardswish";
    case Activation::sigmoid: return "sigmoid";
    case Activation::hardsigmoid: return "hardsigmoid";
    case Activation::identity: break;
  }
  return "identity";
}

class Activations : public ::testing::TestWithParam<Activation> {};

TEST_P(Activations, ForwardMatchesDefinition) {
  const Activation a = GetParam();
  const int64_t n = 70000;  // above the threshold where the loop goes parallel
  const Vec x = random_vector<double>(size_t(n), 1, -5, 5);
  Vec expected(x.size()), y(x.size(), NAN);
  for (size_t i = 0; i < x.size(); ++i) expected[i] = definition(a, x[i]);
  activation_forward_cpu<double>(a, n, x.data(), y.data());
  EXPECT_LT(rel_l2(y, expected), 1e-12) << name(a);
  const auto xf = test::cast_vector<float>(x);
  std::vector<float> yf(x.size(), NAN);
  activation_forward_cpu<float>(a, n, xf.data(), yf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-5) << name(a);
}

TEST_P(Activations, BackwardMatchesFiniteDifferences) {
  const Activation a = GetParam();
  Vec x = random_vector<double>(200, 2, -5, 5);
  test::expect_gradients_match(
      {{"x", &x}},
      [&] {
        Vec y(x.size());
        activation_forward_cpu<double>(a, int64_t(x.size()), x.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dx(x.size(), NAN);
        activation_backward_cpu<double>(a, int64_t(x.size()), x.data(), dy.data(), dx.data());
        return std::vector<Vec>{dx};
      });
}

INSTANTIATE_TEST_SUITE_P(All, Activations,
                         ::testing::Values(Activation::identity, Activation::relu, Activation::hardswish,
                                           Activation::sigmoid, Activation::hardsigmoid),
                         [](const ::testing::TestParamInfo<Activation>& info) { return std::string(name(info.param)); });

TEST(Activation, GradientsAtTheKinksFollowPyTorch) {
  // PyTorch: relu'(0) = 0; hardswish'(-3) = -0.5 and hardswish'(3) = 1.5 (the middle formula
  // applies on the closed interval [-3, 3]).
  const Vec x = {0.0, -3.0, 3.0}, dy = {1.0, 1.0, 1.0};
  Vec dx(3);
  activation_backward_cpu<double>(Activation::relu, 1, x.data(), dy.data(), dx.data());
  EXPECT_EQ(dx[0], 0.0);
  activation_backward_cpu<double>(Activation::hardswish, 2, x.data() + 1, dy.data(), dx.data());
  EXPECT_EQ(dx[0], -0.5);
  EXPECT_EQ(dx[1], 1.5);
  Vec y(2);
  activation_forward_cpu<double>(Activation::hardswish, 2, x.data() + 1, y.data());
  EXPECT_EQ(y[0], 0.0);
  EXPECT_EQ(y[1], 3.0);
}

TEST(Activation, HardsigmoidGradientAtTheKinksFollowsPyTorch) {
  // PyTorch 1.13's hardsigmoid_backward: dy / 6 strictly inside (-3, 3), zero at +-3 and beyond.
  const Vec x = {-3.0, 3.0, -3.0 + 1e-9, 3.0 - 1e-9, -7.0, 7.0, 0.0}, dy(7, 1.0);
  Vec y(7), dx(7);
  activation_forward_cpu<double>(Activation::hardsigmoid, 7, x.data(), y.data());
  activation_backward_cpu<double>(Activation::hardsigmoid, 7, x.data(), dy.data(), dx.data());
  const Vec expected_y = {0.0, 1.0, 1e-9 / 6, 1.0 - 1e-9 / 6, 0.0, 1.0, 0.5};
  const Vec expected_dx = {0.0, 0.0, 1.0 / 6, 1.0 / 6, 0.0, 0.0, 1.0 / 6};
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(y[i], expected_y[i], 1e-15) << "x = " << x[i];
    EXPECT_EQ(dx[i], expected_dx[i]) << "x = " << x[i];
  }
}

TEST(Activation, SigmoidSaturatesWithoutNaN) {
  const std::vector<float> x = {-1000.f, 1000.f, -88.f, 88.f}, dy = {1.f, 1.f, 1.f, 1.f};
  std::vector<float> y(4), dx(4);
  activation_forward_cpu<float>(Activation::sigmoid, 4, x.data(), y.data());
  activation_backward_cpu<float>(Activation::sigmoid, 4, x.data(), dy.data(), dx.data());
  EXPECT_EQ(y[0], 0.f);
  EXPECT_EQ(y[1], 1.f);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isfinite(dx[size_t(i)]) && dx[size_t(i)] >= 0.f) << i;
}

TEST(Add, MatchesDefinitionAndAllowsTheOutputToAliasAnInput) {
  const Vec a = random_vector<double>(1000, 3), b = random_vector<double>(1000, 4);
  Vec expected(1000), y = a;
  for (size_t i = 0; i < a.size(); ++i) expected[i] = a[i] + b[i];
  add_cpu<double>(1000, y.data(), b.data(), y.data());  // in place: y = y + b
  EXPECT_EQ(rel_l2(y, expected), 0.0);
}

TEST(BiasAdd, AddsTheBiasToEveryRow) {
  const int64_t rows = 9, c = 5;
  const Vec x = random_vector<double>(size_t(rows * c), 5), bias = random_vector<double>(size_t(c), 6);
  Vec y = x, expected(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) expected[size_t(r * c + ch)] = x[size_t(r * c + ch)] + bias[size_t(ch)];
  bias_add_cpu<double>(rows, c, bias.data(), y.data());
  EXPECT_EQ(rel_l2(y, expected), 0.0);
}

TEST(BiasAdd, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 300, c = 4;  // several blocks of the row reduction
  Vec bias = random_vector<double>(size_t(c), 7);
  const Vec x = random_vector<double>(size_t(rows * c), 8);
  test::expect_gradients_match(
      {{"bias", &bias}},
      [&] {
        Vec y = x;
        bias_add_cpu<double>(rows, c, bias.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dbias(size_t(c), 1.0);  // accumulates
        bias_backward_cpu<double>(rows, c, dy.data(), dbias.data());
        for (double& v : dbias) v -= 1.0;
        return std::vector<Vec>{dbias};
      });
}

TEST(BiasAdd, BackwardIsBitwiseIndependentOfTheThreadCount) {
  const int64_t rows = 5000, c = 3;
  const auto dy = random_vector<float>(size_t(rows * c), 9);
  std::vector<float> one(size_t(c), 0.f), two(size_t(c), 0.f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  bias_backward_cpu<float>(rows, c, dy.data(), one.data());
  omp_set_num_threads(2);
  bias_backward_cpu<float>(rows, c, dy.data(), two.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(one, two);
}

TEST(BiasAdd, RejectsZeroChannels) {
  std::vector<float> y(4), b(1);
  EXPECT_THROW(bias_add_cpu<float>(4, 0, b.data(), y.data()), Error);
  EXPECT_THROW(bias_backward_cpu<float>(-1, 1, y.data(), b.data()), Error);
}

}  // namespace
}  // namespace kd
