#include "kernels/softmax.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

// The definitions, in long double and without max subtraction (inputs are kept small).
Vec softmax_definition(int64_t rows, int64_t classes, const Vec& x) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    long double z = 0;
    for (int64_t c = 0; c < classes; ++c) z += std::exp((long double)x[size_t(r * classes + c)]);
    for (int64_t c = 0; c < classes; ++c)
      y[size_t(r * classes + c)] = double(std::exp((long double)x[size_t(r * classes + c)]) / z);
  }
  return y;
}

// -sum_c q_c log p_c with q = (1 - eps) onehot + eps / classes, PyTorch's label smoothing.
Vec cross_entropy_definition(int64_t rows, int64_t classes, const Vec& x, const std::vector<int32_t>& labels,
                             double eps) {
  const Vec p = softmax_definition(rows, classes, x);
  Vec loss(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double l = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const double q = (c == labels[size_t(r)] ? 1 - eps : 0) + eps / double(classes);
      l -= q * std::log(p[size_t(r * classes + c)]);
    }
    loss[size_t(r)] = l;
  }
  return loss;
}

std::vector<int32_t> random_labels(int64_t rows, int64_t classes, uint64_t seed) {
  const Vec u = random_vector<double>(size_t(rows), seed, 0.0, 1.0);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (size_t r = 0; r < labels.size(); ++r)
    labels[r] = int32_t(std::min<double>(u[r] * double(classes), double(classes - 1)));
  return labels;
}

TEST(Softmax, MatchesDefinitionForSmallAndLargeClassCounts) {
  for (int64_t classes : {10, 1000, 21843}) {
    const int64_t rows = classes > 1000 ? 3 : 7;
    const Vec x = random_vector<double>(size_t(rows * classes), 1, -4, 4);
    const Vec expected = softmax_definition(rows, classes, x);
    Vec y(x.size(), NAN);
    softmax_cpu<double>(rows, classes, x.data(), y.data());
    EXPECT_LT(rel_l2(y, expected), 1e-13) << classes << " classes";
    const auto xf = test::cast_vector<float>(x);
    std::vector<float> yf(x.size(), NAN);
    softmax_cpu<float>(rows, classes, xf.data(), yf.data());
    EXPECT_LT(rel_l2(yf, expected), 1e-5) << classes << " classes";
  }
}

TEST(Softmax, IsShiftInvariantAndFiniteForHugeLogits) {
  const int64_t rows = 4, classes = 50;
  const Vec x = random_vector<double>(size_t(rows * classes), 2, -3, 3);
  Vec shifted = x;
  for (double& v : shifted) v += 5000;  // exp(5000) overflows: only the max-subtracted form survives
  Vec y(x.size()), ys(x.size());
  softmax_cpu<double>(rows, classes, x.data(), y.data());
  softmax_cpu<double>(rows, classes, shifted.data(), ys.data());
  EXPECT_LT(rel_l2(ys, y), 1e-12);
  Vec ly(x.size());
  log_softmax_cpu<double>(rows, classes, shifted.data(), ly.data());
  for (double v : ly) ASSERT_TRUE(std::isfinite(v));
}

TEST(LogSoftmax, MatchesLogOfDefinition) {
  const int64_t rows = 5, classes = 300;
  const Vec x = random_vector<double>(size_t(rows * classes), 3, -6, 6);
  Vec expected = softmax_definition(rows, classes, x);
  for (double& v : expected) v = std::log(v);
  Vec y(x.size(), NAN);
  log_softmax_cpu<double>(rows, classes, x.data(), y.data());
  EXPECT_LT(rel_l2(y, expected), 1e-13);
  const auto xf = test::cast_vector<float>(x);
  std::vector<float> yf(x.size(), NAN);
  log_softmax_cpu<float>(rows, classes, xf.data(), yf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-6);
}

TEST(CrossEntropy, LossMatchesDefinitionWithAndWithoutSmoothing) {
  const int64_t rows = 9, classes = 37;
  const Vec x = random_vector<double>(size_t(rows * classes), 4, -3, 3);
  const auto labels = random_labels(rows, classes, 5);
  for (double eps : {0.0, 0.1, 1.0}) {
    const Vec expected = cross_entropy_definition(rows, classes, x, labels, eps);
    Vec loss(size_t(rows), NAN);
    cross_entropy_cpu<double>(rows, classes, x.data(), labels.data(), eps, 1.0, loss.data(), nullptr);
    EXPECT_LT(rel_l2(loss, expected), 1e-13) << "eps " << eps;
    const auto xf = test::cast_vector<float>(x);
    std::vector<float> lf(size_t(rows), NAN);
    cross_entropy_cpu<float>(rows, classes, xf.data(), labels.data(), float(eps), 1.0f, lf.data(), nullptr);
    EXPECT_LT(rel_l2(lf, expected), 1e-6) << "eps " << eps;
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t rows = 4, classes = 11;
  const auto labels = random_labels(rows, classes, 6);
  for (double eps : {0.0, 0.2}) {
    Vec x = random_vector<double>(size_t(rows * classes), 7, -2, 2);
    test::expect_gradients_match(
        {{"logits", &x}},
        [&] {
          Vec loss(static_cast<size_t>(rows));
          cross_entropy_cpu<double>(rows, classes, x.data(), labels.data(), eps, 1.0, loss.data(), nullptr);
          return loss;
        },
        [&](const Vec& dloss) {
          // row r's loss depends on row r only: d sum_r dloss_r loss_r / d x_r = dloss_r * d loss_r / d x_r
          Vec dx(x.size(), NAN);
          cross_entropy_cpu<double>(rows, classes, x.data(), labels.data(), eps, 1.0, nullptr, dx.data());
          for (int64_t i = 0; i < rows * classes; ++i) dx[size_t(i)] *= dloss[size_t(i / classes)];
          return std::vector<Vec>{dx};
        });
  }
}

TEST(CrossEntropy, GradScaleMultipliesTheGradient) {
  const int64_t rows = 3, classes = 8;
  const Vec x = random_vector<double>(size_t(rows * classes), 8);
  const auto labels = random_labels(rows, classes, 9);
  Vec d1(x.size()), dq(x.size());
  cross_entropy_cpu<double>(rows, classes, x.data(), labels.data(), 0.1, 1.0, nullptr, d1.data());
  cross_entropy_cpu<double>(rows, classes, x.data(), labels.data(), 0.1, 0.25, nullptr, dq.data());
  for (double& v : d1) v *= 0.25;
  EXPECT_LT(rel_l2(dq, d1), 1e-15);
}

TEST(CrossEntropy, RejectsOutOfRangeLabelsNamingRowAndLabel) {
  const int64_t rows = 3, classes = 10;
  const auto x = random_vector<float>(size_t(rows * classes), 10);
  std::vector<float> loss(static_cast<size_t>(rows));
  for (int32_t bad : {10, -1}) {
    const std::vector<int32_t> labels = {0, 9, bad};
    try {
      cross_entropy_cpu<float>(rows, classes, x.data(), labels.data(), 0.0f, 1.0f, loss.data(), nullptr);
      FAIL() << "expected an error for label " << bad;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("row 2"), std::string::npos) << what;
      EXPECT_NE(what.find("label " + std::to_string(bad)), std::string::npos) << what;
    }
  }
}

TEST(TopkCorrect, CountsTiesTowardTheLowerClassIndex) {
  // one row [1, 3, 3, 2]: ranks 3 (class 0), 0 (class 1), 1 (class 2), 2 (class 3)
  const std::vector<float> x = {1, 3, 3, 2, 1, 3, 3, 2, 1, 3, 3, 2, 1, 3, 3, 2};
  const std::vector<int32_t> labels = {1, 2, 3, 0};
  std::vector<int32_t> top1(4), top2(4), top3(4), top9(4);
  topk_correct_cpu<float>(4, 4, x.data(), labels.data(), 1, top1.data());
  topk_correct_cpu<float>(4, 4, x.data(), labels.data(), 2, top2.data());
  topk_correct_cpu<float>(4, 4, x.data(), labels.data(), 3, top3.data());
  topk_correct_cpu<float>(4, 4, x.data(), labels.data(), 9, top9.data());
  EXPECT_EQ(top1, (std::vector<int32_t>{1, 0, 0, 0}));
  EXPECT_EQ(top2, (std::vector<int32_t>{1, 1, 0, 0}));
  EXPECT_EQ(top3, (std::vector<int32_t>{1, 1, 1, 0}));
  EXPECT_EQ(top9, (std::vector<int32_t>{1, 1, 1, 1}));
}

TEST(TopkCorrect, RejectsBadLabelAndK) {
  const std::vector<double> x(6, 0.5);
  std::vector<int32_t> out(2);
  const std::vector<int32_t> bad_label = {0, 3}, good = {0, 2};
  EXPECT_THROW(topk_correct_cpu<double>(2, 3, x.data(), bad_label.data(), 1, out.data()), Error);
  EXPECT_THROW(topk_correct_cpu<double>(2, 3, x.data(), good.data(), 0, out.data()), Error);
}

TEST(ArgmaxRows, ReturnsLowestIndexAmongTies) {
  const std::vector<float> x = {0, 2, 2, 1, 5, 5, 5, -1, -3, -2, -1, -1};
  std::vector<int32_t> out(3, -7);
  argmax_rows_cpu<float>(3, 4, x.data(), out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 0, 2}));
}

TEST(ArgmaxRows, AgreesWithTopOneOnRandomRows) {
  const int64_t rows = 16, classes = 100;
  const auto x = random_vector<double>(size_t(rows * classes), 11);
  std::vector<int32_t> arg(static_cast<size_t>(rows)), correct(static_cast<size_t>(rows));
  argmax_rows_cpu<double>(rows, classes, x.data(), arg.data());
  topk_correct_cpu<double>(rows, classes, x.data(), arg.data(), 1, correct.data());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(correct[size_t(r)], 1);
    for (int64_t c = 0; c < classes; ++c)
      EXPECT_LE(x[size_t(r * classes + c)], x[size_t(r * classes + arg[size_t(r)])]);
  }
}

}  // namespace
}  // namespace kd
