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

// ---- running softmax statistics, as the CUDA row kernels gather them ----

// Pushes x into `parts` partial statistics the way a block's threads do (element c to part
// c % parts, in increasing c), then merges the parts pairwise as a reduction tree does.
SoftmaxStats stats_by_parts(const std::vector<float>& x, const SoftmaxStatsSpec& spec, size_t parts) {
  std::vector<SoftmaxStats> p(parts, softmax_stats_empty());
  for (size_t c = 0; c < x.size(); ++c) softmax_stats_push(p[c % parts], spec, x[c], int32_t(c));
  for (size_t width = 1; width < parts; width *= 2)
    for (size_t i = 0; i + width < parts; i += 2 * width) p[i] = softmax_stats_merge(p[i], p[i + width], spec);
  return p[0];
}

TEST(SoftmaxStats, AnySplitMatchesTwoPassLogSumExpAndArgmax) {
  for (int64_t classes : {1, 10, 1000, 21843}) {
    const std::vector<float> x = random_vector<float>(size_t(classes), uint64_t(classes), -6, 6);
    int32_t argmax = 0;
    argmax_rows_cpu<float>(1, classes, x.data(), &argmax);
    const double max = double(x[size_t(argmax)]), temperature = 4;
    double sum_t = 0, sum_1 = 0;
    for (float v : x) sum_t += std::exp((v - max) / temperature), sum_1 += std::exp(v - max);
    SoftmaxStatsSpec spec;
    spec.inv_temperature = float(1 / temperature), spec.sum_t = spec.sum_1 = true;
    for (size_t parts : {1, 3, 128, 512}) {
      SoftmaxStats s = stats_by_parts(x, spec, parts);
      EXPECT_EQ(s.max, x[size_t(argmax)]) << classes << " classes, " << parts << " parts";
      EXPECT_EQ(s.argmax, argmax) << classes << " classes, " << parts << " parts";
      // float sums: a long serial run drifts (~1e-5 over 21843 terms); the kernels' split over
      // 128-512 threads and a tree stays near float precision
      const double tol = parts >= 128 ? 1e-6 : 5e-5;
      EXPECT_NEAR(std::log(s.sum_t), std::log(sum_t), tol) << classes << " classes, " << parts << " parts";
      EXPECT_NEAR(std::log(s.sum_1), std::log(sum_1), tol) << classes << " classes, " << parts << " parts";
      EXPECT_NEAR(log_softmax_from_stats(x[0], s.max, spec.inv_temperature, std::log(s.sum_t)),
                  (x[0] - max) / temperature - std::log(sum_t), tol + 1e-6);
      // the merge is symmetric: the reverse order gives the same statistics
      const SoftmaxStats a = stats_by_parts(std::vector<float>(x.begin(), x.begin() + classes / 2), spec, 1);
      SoftmaxStats b = softmax_stats_empty();
      for (int64_t c = classes / 2; c < classes; ++c) softmax_stats_push(b, spec, x[size_t(c)], int32_t(c));
      const SoftmaxStats ab = softmax_stats_merge(a, b, spec), ba = softmax_stats_merge(b, a, spec);
      EXPECT_EQ(ab.argmax, argmax);
      EXPECT_EQ(ba.argmax, argmax);
      EXPECT_EQ(ab.sum_t, ba.sum_t);
      s = stats_by_parts(x, SoftmaxStatsSpec(), parts);
      EXPECT_EQ(s.argmax, argmax);
      EXPECT_EQ(s.sum_t, 0.0f) << "sums that were not asked for stay empty";
      EXPECT_EQ(s.sum_1, 0.0f);
    }
  }
}

TEST(SoftmaxStats, TiesGoToTheLowestIndexWhicheverPartHoldsIt) {
  const std::vector<float> x = {1, 7, 3, 7, 7, -2, 7, 0};
  SoftmaxStatsSpec spec;
  spec.sum_1 = true;
  for (size_t parts : {1, 2, 3, 4, 8}) {
    const SoftmaxStats s = stats_by_parts(x, spec, parts);
    EXPECT_EQ(s.argmax, 1) << parts << " parts";
    EXPECT_FLOAT_EQ(s.sum_1, 4 + std::exp(-4.0f) + std::exp(-6.0f) + std::exp(-9.0f) + std::exp(-7.0f));
  }
  // pushed out of order: a later push of an equal value at a lower index takes over
  SoftmaxStats s = softmax_stats_empty();
  softmax_stats_push(s, spec, 5.0f, 9);
  softmax_stats_push(s, spec, 5.0f, 2);
  EXPECT_EQ(s.argmax, 2);
  EXPECT_FLOAT_EQ(s.sum_1, 2.0f);
}

TEST(SoftmaxStats, EmptyStatsAreTheIdentityOfMergeAndNanPropagates) {
  SoftmaxStatsSpec spec;
  spec.inv_temperature = 0.5f, spec.sum_t = spec.sum_1 = true;
  const SoftmaxStats empty = softmax_stats_empty();
  const SoftmaxStats both_empty = softmax_stats_merge(empty, empty, spec);
  EXPECT_EQ(both_empty.max, -INFINITY);
  EXPECT_EQ(both_empty.sum_t, 0.0f);  // no exp(-inf - -inf) = NaN
  EXPECT_EQ(both_empty.sum_1, 0.0f);
  SoftmaxStats one = softmax_stats_empty();
  softmax_stats_push(one, spec, -3.0f, 4);
  one.aux = 2.5f;
  for (const SoftmaxStats& m : {softmax_stats_merge(one, empty, spec), softmax_stats_merge(empty, one, spec)}) {
    EXPECT_EQ(m.max, -3.0f);
    EXPECT_EQ(m.argmax, 4);
    EXPECT_EQ(m.sum_t, 1.0f);
    EXPECT_EQ(m.sum_1, 1.0f);
    EXPECT_EQ(m.aux, 2.5f);
  }
  softmax_stats_push(one, spec, NAN, 5);
  EXPECT_TRUE(std::isnan(one.sum_t));
  EXPECT_TRUE(std::isnan(one.sum_1));
  EXPECT_EQ(one.argmax, 4) << "NaN never becomes the max";
}


// Masked classes (-inf logits) add nothing wherever they fall: first in a part (its max still
// -inf), between finite ones, or a whole part of them; the statistics are those of the finite
// logits alone, at every split (the CUDA kernels' -inf rows were NaN before this rule).
TEST(SoftmaxStats, MinusInfinityLogitsAddNothingInAnyPosition) {
  const std::vector<float> finite = random_vector<float>(37, 91, -5, 5);
  std::vector<float> x;
  std::vector<int32_t> index_of;  // x's position of each finite logit
  for (size_t i = 0; i < finite.size(); ++i) {
    for (size_t k = 0; k < i % 3; ++k) x.push_back(-INFINITY);
    index_of.push_back(int32_t(x.size()));
    x.push_back(finite[i]);
  }
  for (int k = 0; k < 9; ++k) x.push_back(-INFINITY);  // a tail of them: whole parts at 8+ parts
  SoftmaxStatsSpec spec;
  spec.inv_temperature = 0.25f, spec.sum_t = spec.sum_1 = true;
  int32_t best = 0;
  argmax_rows_cpu<float>(1, int64_t(finite.size()), finite.data(), &best);
  double sum_t = 0, sum_1 = 0;
  for (float v : finite) {
    sum_t += std::exp((double(v) - finite[size_t(best)]) * 0.25);
    sum_1 += std::exp(double(v) - finite[size_t(best)]);
  }
  for (size_t parts : {1, 2, 5, 16, 64}) {
    const SoftmaxStats s = stats_by_parts(x, spec, parts);
    EXPECT_EQ(s.max, finite[size_t(best)]) << parts << " parts";
    EXPECT_EQ(s.argmax, index_of[size_t(best)]) << parts << " parts";
    EXPECT_NEAR(s.sum_t, sum_t, 1e-5 * sum_t) << parts << " parts";
    EXPECT_NEAR(s.sum_1, sum_1, 1e-5 * sum_1) << parts << " parts";
  }
  SoftmaxStats masked = softmax_stats_empty();  // -inf alone: an empty part that still merges
  softmax_stats_push(masked, spec, -INFINITY, 3);
  EXPECT_EQ(masked.sum_t, 0.0f);
  EXPECT_EQ(masked.sum_1, 0.0f);
  EXPECT_EQ(masked.argmax, 3);
}

}  // namespace
}  // namespace kd
