#include "kernels/distill_loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

// ---- the definitions, written directly from big_vision's `dist` (plus the mean over teachers) ----

Vec softmax(const double* x, int64_t n, double temperature = 1) {
  Vec p(static_cast<size_t>(n));
  double z = 0;
  for (int64_t c = 0; c < n; ++c) z += p[size_t(c)] = std::exp(x[c] / temperature);
  for (double& v : p) v /= z;
  return p;
}

int64_t first_argmax(const Vec& p) {
  int64_t best = 0;
  for (size_t c = 1; c < p.size(); ++c)
    if (p[c] > p[size_t(best)]) best = int64_t(c);
  return best;
}

struct Expected {
  Vec loss, grad;
  std::vector<int32_t> top1, rank;
};

Expected distill_definition(const DistillLossShape& sh, const DistillLossOptions& o, const Vec& t, const Vec& s) {
  const int64_t R = sh.rows, C = sh.classes, K = sh.teachers;
  const double T = o.temperature, gs = o.grad_scale, ls = o.label_smoothing, eps = o.epsilon;
  Expected e{Vec(size_t(R)), Vec(size_t(R * C)), std::vector<int32_t>(size_t(R)), std::vector<int32_t>(size_t(R))};
  for (int64_t r = 0; r < R; ++r) {
    const double* sr = s.data() + r * C;
    auto tk = [&](int64_t k) { return t.data() + (k * R + r) * C; };
    auto mean_probs = [&](double temp) {
      Vec m(size_t(C), 0.0);
      for (int64_t k = 0; k < K; ++k) {
        const Vec p = softmax(tk(k), C, temp);
        for (int64_t c = 0; c < C; ++c) m[size_t(c)] += p[size_t(c)] / double(K);
      }
      return m;
    };
    const int64_t top1 = first_argmax(mean_probs(1));
    e.top1[size_t(r)] = int32_t(top1);
    int32_t above = 0;
    for (int64_t c = 0; c < C; ++c) above += sr[c] > sr[top1] || (sr[c] == sr[top1] && c < top1);
    e.rank[size_t(r)] = above;
    double loss = 0;
    double* g = e.grad.data() + r * C;
    switch (o.distance) {
      case DistillDistance::kl: {  // t^2 * softmax_xent(student / t, softmax(teacher / t), kl=True)
        const Vec pt = mean_probs(T), ps = softmax(sr, C, T);
        for (int64_t c = 0; c < C; ++c) {
          loss += pt[size_t(c)] * (std::log(pt[size_t(c)]) - std::log(ps[size_t(c)]));
          g[c] = T * (ps[size_t(c)] - pt[size_t(c)]);
        }
        loss *= T * T;
        break;
      }
      case DistillDistance::hard: {  // one-hot pseudo-label, (1 - ls) pl + ls / (C - 1) (1 - pl)
        const Vec ps = softmax(sr, C);
        for (int64_t c = 0; c < C; ++c) {
          const double pl = c == top1 ? 1 : 0, q = (1 - ls) * pl + ls / double(C - 1) * (1 - pl);
          if (q > 0) loss += q * (std::log(q) - std::log(ps[size_t(c)]));
          g[c] = ps[size_t(c)] - q;
        }
        break;
      }
      case DistillDistance::l2:
      case DistillDistance::euclidean:
      case DistillDistance::logsoftmax_euclidean: {
        std::fill(g, g + C, 0.0);
        const Vec ps = softmax(sr, C);
        for (int64_t k = 0; k < K; ++k) {
          const Vec pt = softmax(tk(k), C);
          Vec diff(static_cast<size_t>(C));
          double sq = 0;
          for (int64_t c = 0; c < C; ++c) {
            diff[size_t(c)] = o.distance == DistillDistance::logsoftmax_euclidean
                                  ? std::log(ps[size_t(c)]) - std::log(pt[size_t(c)])
                                  : sr[c] - tk(k)[c];
            sq += diff[size_t(c)] * diff[size_t(c)];
          }
          if (o.distance == DistillDistance::l2) {
            loss += sq / double(K);
            for (int64_t c = 0; c < C; ++c) g[c] += 2 * diff[size_t(c)] / double(K);
          } else {
            const double d = std::sqrt(sq + eps);
            loss += d / double(K);
            double sum_diff = 0;
            for (double v : diff) sum_diff += v;
            for (int64_t c = 0; c < C; ++c)
              g[c] += (o.distance == DistillDistance::euclidean ? diff[size_t(c)]
                                                                : diff[size_t(c)] - ps[size_t(c)] * sum_diff) /
                      (d * double(K));
          }
        }
        break;
      }
    }
    e.loss[size_t(r)] = loss;
    for (int64_t c = 0; c < C; ++c) g[c] *= gs;
  }
  return e;
}

struct Outputs {
  Vec loss, grad;
  std::vector<int32_t> top1, rank;
};

template <typename T>
Outputs run(const DistillLossShape& sh, const DistillLossOptions& o, const Vec& t, const Vec& s) {
  const auto tt = test::cast_vector<T>(t), ss = test::cast_vector<T>(s);
  std::vector<T> loss(size_t(sh.rows), T(NAN)), grad(s.size(), T(NAN));
  std::vector<int32_t> top1(size_t(sh.rows), -9), rank(size_t(sh.rows), -9);
  distill_loss_cpu<T>(sh, o, tt.data(), ss.data(), loss.data(), grad.data(), top1.data(), rank.data());
  return {test::cast_vector<double>(loss), test::cast_vector<double>(grad), top1, rank};
}

DistillLossOptions options(DistillDistance d, float temperature, float grad_scale = 1, float ls = 0) {
  DistillLossOptions o;
  o.distance = d, o.temperature = temperature, o.grad_scale = grad_scale, o.label_smoothing = ls;
  return o;
}

// Inputs drawn as floats, so the float and double runs see the same numbers.
Vec random_logits(int64_t n, uint64_t seed, double scale = 3) {
  return test::cast_vector<double>(random_vector<float>(size_t(n), seed, -scale, scale));
}

// ---- every distance x {1, 3} teachers x temperature {1, 4} ----

using Case = std::tuple<DistillDistance, int, float>;

class DistillCases : public ::testing::TestWithParam<Case> {
 protected:
  DistillLossShape shape() const {
    DistillLossShape sh;
    sh.rows = 5, sh.classes = 13, sh.teachers = std::get<1>(GetParam());
    return sh;
  }
  DistillLossOptions opts(float grad_scale = 0.37f) const {
    const float ls = std::get<0>(GetParam()) == DistillDistance::hard ? 0.1f : 0.0f;
    return options(std::get<0>(GetParam()), std::get<2>(GetParam()), grad_scale, ls);
  }
};

TEST_P(DistillCases, ForwardGradientAndAgreementMatchDefinition) {
  const DistillLossShape sh = shape();
  const DistillLossOptions o = opts();
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 1), s = random_logits(sh.rows * sh.classes, 2);
  const Expected e = distill_definition(sh, o, t, s);
  const Outputs d = run<double>(sh, o, t, s), f = run<float>(sh, o, t, s);
  EXPECT_LT(rel_l2(d.loss, e.loss), 1e-12);
  EXPECT_LT(rel_l2(d.grad, e.grad), 1e-12);
  EXPECT_LT(rel_l2(f.loss, e.loss), 1e-6);
  EXPECT_LT(rel_l2(f.grad, e.grad), 1e-6);
  EXPECT_EQ(d.top1, e.top1);
  EXPECT_EQ(d.rank, e.rank);
  EXPECT_EQ(f.top1, e.top1);
  EXPECT_EQ(f.rank, e.rank);
}

TEST_P(DistillCases, GradientMatchesFiniteDifferences) {
  const DistillLossShape sh = shape();
  const DistillLossOptions o = opts(1.0f);
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 3);
  Vec s = random_logits(sh.rows * sh.classes, 4);
  const int64_t C = sh.classes;
  test::expect_gradients_match(
      {{"student", &s}},
      [&] {
        Vec loss(size_t(sh.rows));
        distill_loss_cpu<double>(sh, o, t.data(), s.data(), loss.data(), nullptr, nullptr, nullptr);
        return loss;
      },
      [&](const Vec& dloss) {
        // loss_r depends on student row r only, so the probe scales each row's gradient
        Vec ds(s.size(), NAN);
        distill_loss_cpu<double>(sh, o, t.data(), s.data(), nullptr, ds.data(), nullptr, nullptr);
        for (size_t i = 0; i < ds.size(); ++i) ds[i] *= dloss[i / size_t(C)];
        return std::vector<Vec>{ds};
      });
}

INSTANTIATE_TEST_SUITE_P(Distances, DistillCases,
                         ::testing::Combine(::testing::Values(DistillDistance::kl, DistillDistance::hard,
                                                              DistillDistance::l2, DistillDistance::euclidean,
                                                              DistillDistance::logsoftmax_euclidean),
                                            ::testing::Values(1, 3), ::testing::Values(1.0f, 4.0f)),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(distill_distance_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "teachers_T" +
                                  std::to_string(int(std::get<2>(info.param)));
                         });

// ---- kl specifics ----

TEST(DistillKl, ScalesWithTemperatureSquaredAndGradientIsTTimesProbabilityGap) {
  DistillLossShape sh;
  sh.rows = 4, sh.classes = 20;
  const Vec t = random_logits(sh.rows * sh.classes, 5), s = random_logits(sh.rows * sh.classes, 6);
  const double T = 4, gs = 0.125;
  const Outputs d = run<double>(sh, options(DistillDistance::kl, float(T), float(gs)), t, s);
  for (int64_t r = 0; r < sh.rows; ++r) {
    const Vec pt = softmax(t.data() + r * sh.classes, sh.classes, T),
              ps = softmax(s.data() + r * sh.classes, sh.classes, T);
    double kl = 0;
    for (int64_t c = 0; c < sh.classes; ++c) kl += pt[size_t(c)] * std::log(pt[size_t(c)] / ps[size_t(c)]);
    EXPECT_NEAR(d.loss[size_t(r)], T * T * kl, 1e-12 * T * T) << "row " << r;
    for (int64_t c = 0; c < sh.classes; ++c)
      EXPECT_NEAR(d.grad[size_t(r * sh.classes + c)], T * (ps[size_t(c)] - pt[size_t(c)]) * gs, 1e-15);
  }
}

TEST(DistillKl, IsZeroWithZeroGradientWhenStudentEqualsTeacher) {
  DistillLossShape sh;
  sh.rows = 6, sh.classes = 1000;
  const Vec s = random_logits(sh.rows * sh.classes, 7, 8);
  for (float T : {1.0f, 4.0f}) {
    const Outputs d = run<double>(sh, options(DistillDistance::kl, T), s, s);
    const Outputs f = run<float>(sh, options(DistillDistance::kl, T), s, s);
    for (double v : d.loss) EXPECT_NEAR(v, 0.0, 1e-13) << "T " << T;
    for (double v : f.loss) EXPECT_NEAR(v, 0.0, 1e-13) << "T " << T;
    for (double v : d.grad) ASSERT_EQ(v, 0.0) << "T " << T;
    for (double v : f.grad) ASSERT_EQ(v, 0.0) << "T " << T;
    for (int32_t rank : d.rank) EXPECT_EQ(rank, 0);
  }
}

TEST(DistillKl, EnsembleGradientIsMeanOfPerTeacherGradients) {
  // the KL to the mean distribution: T (p_s - mean_k p_k) = mean_k T (p_s - p_k)
  DistillLossShape sh;
  sh.rows = 3, sh.classes = 17, sh.teachers = 3;
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 8), s = random_logits(sh.rows * sh.classes, 9);
  const DistillLossOptions o = options(DistillDistance::kl, 2.0f, 0.5f);
  const Outputs ens = run<double>(sh, o, t, s);
  DistillLossShape one = sh;
  one.teachers = 1;
  Vec mean(s.size(), 0.0);
  for (int64_t k = 0; k < sh.teachers; ++k) {
    const Vec tk(t.begin() + k * sh.rows * sh.classes, t.begin() + (k + 1) * sh.rows * sh.classes);
    const Outputs single = run<double>(one, o, tk, s);
    for (size_t i = 0; i < mean.size(); ++i) mean[i] += single.grad[i] / 3;
  }
  EXPECT_LT(rel_l2(ens.grad, mean), 1e-13);
}

TEST(DistillLoss, DistancesOtherThanKlIgnoreTemperature) {
  DistillLossShape sh;
  sh.rows = 3, sh.classes = 9, sh.teachers = 2;
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 10), s = random_logits(sh.rows * sh.classes, 11);
  for (DistillDistance d : {DistillDistance::hard, DistillDistance::l2, DistillDistance::euclidean,
                            DistillDistance::logsoftmax_euclidean}) {
    const Outputs a = run<double>(sh, options(d, 1.0f), t, s), b = run<double>(sh, options(d, 7.0f), t, s);
    EXPECT_EQ(a.loss, b.loss) << distill_distance_name(d);
    EXPECT_EQ(a.grad, b.grad) << distill_distance_name(d);
  }
}

// ---- agreement outputs on crafted rows ----

TEST(DistillAgreement, TeacherTopOneAndStudentRankBreakTiesTowardLowerIndex) {
  DistillLossShape sh;
  sh.rows = 3, sh.classes = 4;
  const Vec t = {1, 4, 4, 0,   // top-1 is class 1 (tie with class 2)
                 7, 7, 7, 7,   // all tied: class 0
                 0, 0, 0, 3};  // class 3
  const Vec s = {4, 2, 2, 9,   // above class 1: class 0 (4 > 2) and class 3; class 2 ties at a higher index
                 5, 5, 5, 5,   // class 0 is first among equals: rank 0
                 2, 2, 2, 2};  // all equal: classes 0, 1, 2 come before class 3
  for (DistillDistance d : {DistillDistance::kl, DistillDistance::l2}) {
    const Outputs o = run<float>(sh, options(d, 1.0f), t, s);
    EXPECT_EQ(o.top1, (std::vector<int32_t>{1, 0, 3})) << distill_distance_name(d);
    EXPECT_EQ(o.rank, (std::vector<int32_t>{2, 0, 3})) << distill_distance_name(d);
  }
}

TEST(DistillAgreement, EnsembleTopOneAveragesProbabilitiesAtTemperatureOne) {
  // Mean logits [6.7, 0, 2] would pick class 0; mean probabilities at T = 1 pick class 2
  // (one confident teacher cannot outvote two); at T = 4 they would pick class 0.
  DistillLossShape sh;
  sh.rows = 1, sh.classes = 3, sh.teachers = 3;
  const Vec t = {20, 0, 0, 0, 0, 3, 0, 0, 3};
  const Vec s = {1, 0, 2};
  for (float T : {1.0f, 4.0f}) {
    const Outputs o = run<double>(sh, options(DistillDistance::kl, T), t, s);
    EXPECT_EQ(o.top1[0], 2) << "T " << T;
    EXPECT_EQ(o.rank[0], 0) << "T " << T;
  }
  // hard's pseudo-label is that same class: loss = -log softmax(s)[2]
  const Outputs h = run<double>(sh, options(DistillDistance::hard, 4.0f), t, s);
  const Vec ps = softmax(s.data(), 3);
  EXPECT_NEAR(h.loss[0], -std::log(ps[2]), 1e-14);
}

TEST(DistillAgreement, RankZeroExactlyWhenStudentArgmaxIsTeacherTopOne) {
  DistillLossShape sh;
  sh.rows = 64, sh.classes = 5, sh.teachers = 2;
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 12), s = random_logits(sh.rows * sh.classes, 13);
  const Outputs o = run<float>(sh, options(DistillDistance::kl, 1.0f), t, s);
  int agree = 0;
  for (int64_t r = 0; r < sh.rows; ++r) {
    const Vec row(s.begin() + r * sh.classes, s.begin() + (r + 1) * sh.classes);
    EXPECT_EQ(o.rank[size_t(r)] == 0, first_argmax(row) == o.top1[size_t(r)]) << "row " << r;
    EXPECT_LT(o.rank[size_t(r)], sh.classes);
    agree += o.rank[size_t(r)] == 0;
  }
  EXPECT_GT(agree, 0);  // the crafted data exercises both branches
  EXPECT_LT(agree, sh.rows);
}

// ---- scale and robustness ----

TEST(DistillLoss, FloatMatchesDoubleAt21kClassesAndStaysFiniteForHugeLogits) {
  DistillLossShape sh;
  sh.rows = 2, sh.classes = 21843, sh.teachers = 2;
  const Vec t = random_logits(sh.teachers * sh.rows * sh.classes, 14, 6),
            s = random_logits(sh.rows * sh.classes, 15, 6);
  const DistillLossOptions o = options(DistillDistance::kl, 2.0f, 1.0f / 2);
  const Outputs d = run<double>(sh, o, t, s), f = run<float>(sh, o, t, s);
  EXPECT_LT(rel_l2(f.loss, d.loss), 1e-6);
  EXPECT_LT(rel_l2(f.grad, d.grad), 1e-6);
  Vec t_huge = t, s_huge = s;
  for (double& v : t_huge) v *= 300;  // |logit| up to 1800: exp overflows without max subtraction
  for (double& v : s_huge) v *= 300;
  for (DistillDistance dist : {DistillDistance::kl, DistillDistance::hard, DistillDistance::logsoftmax_euclidean}) {
    const Outputs h = run<float>(sh, options(dist, 1.0f), t_huge, s_huge);
    for (double v : h.loss) ASSERT_TRUE(std::isfinite(v)) << distill_distance_name(dist);
    for (double v : h.grad) ASSERT_TRUE(std::isfinite(v)) << distill_distance_name(dist);
  }
}

// A masked teacher class (-inf logit) is a class of probability exactly 0: the loss, gradient and
// agreement are those with the logit at -1e4 (whose exp underflows to 0 in float and double
// alike), in float and double, for KL and hard targets, one teacher and three.
TEST(DistillLoss, MaskedTeacherClassesHaveProbabilityZero) {
  for (int teachers : {1, 3}) {
    DistillLossShape sh;
    sh.rows = 4, sh.classes = 23, sh.teachers = teachers;
    const Vec s = random_logits(sh.rows * sh.classes, 31);
    Vec masked = random_logits(sh.teachers * sh.rows * sh.classes, 32), far = masked;
    for (size_t i = 0; i < masked.size(); ++i)
      if (i % size_t(sh.classes) % 3 == 0) masked[i] = -INFINITY, far[i] = -1e4;
    for (DistillDistance d : {DistillDistance::kl, DistillDistance::hard}) {
      const DistillLossOptions o = options(d, 2.0f, 0.5f, d == DistillDistance::hard ? 0.1f : 0.0f);
      const std::string what = std::string(distill_distance_name(d)) + ", " + std::to_string(teachers) + " teachers";
      const Outputs want = run<double>(sh, o, far, s);
      for (const Outputs& got : {run<double>(sh, o, masked, s), run<float>(sh, o, masked, s)}) {
        for (double v : got.loss) ASSERT_TRUE(std::isfinite(v)) << what;
        EXPECT_LT(rel_l2(got.loss, want.loss), 1e-6) << what;
        EXPECT_LT(rel_l2(got.grad, want.grad), 1e-6) << what;
        EXPECT_EQ(got.top1, want.top1) << what;
        EXPECT_EQ(got.rank, want.rank) << what;
      }
    }
  }
}

TEST(DistillLoss, NullOutputsAreSkipped) {
  DistillLossShape sh;
  sh.rows = 3, sh.classes = 6;
  const Vec t = random_logits(sh.rows * sh.classes, 16), s = random_logits(sh.rows * sh.classes, 17);
  const Outputs all = run<double>(sh, options(DistillDistance::hard, 1.0f), t, s);
  std::vector<int32_t> rank(3, -1);
  distill_loss_cpu<double>(sh, options(DistillDistance::hard, 1.0f), t.data(), s.data(), nullptr, nullptr, nullptr,
                           rank.data());
  EXPECT_EQ(rank, all.rank);
  Vec loss(3);
  distill_loss_cpu<double>(sh, options(DistillDistance::hard, 1.0f), t.data(), s.data(), loss.data(), nullptr, nullptr,
                           nullptr);
  EXPECT_EQ(loss, all.loss);
}

// ---- names and errors ----

TEST(DistillDistanceNames, RoundTripAndUnknownNameListsTheValidOnes) {
  for (DistillDistance d : {DistillDistance::kl, DistillDistance::hard, DistillDistance::l2, DistillDistance::euclidean,
                            DistillDistance::logsoftmax_euclidean})
    EXPECT_EQ(parse_distill_distance(distill_distance_name(d)), d);
  try {
    parse_distill_distance("cosine");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cosine"), std::string::npos) << what;
    EXPECT_NE(what.find("logsoftmax_euclidean"), std::string::npos) << what;
  }
}

TEST(DistillLoss, RejectsBadShapesAndOptions) {
  DistillLossShape sh;
  sh.rows = 2, sh.classes = 3;
  const std::vector<float> t(6, 0.5f), s(6, 0.25f);
  std::vector<float> loss(2);
  auto call = [&](const DistillLossShape& shape, const DistillLossOptions& o) {
    distill_loss_cpu<float>(shape, o, t.data(), s.data(), loss.data(), nullptr, nullptr, nullptr);
  };
  DistillLossShape no_teachers = sh;
  no_teachers.teachers = 0;
  EXPECT_THROW(call(no_teachers, options(DistillDistance::kl, 1.0f)), Error);
  DistillLossShape no_classes = sh;
  no_classes.classes = 0;
  EXPECT_THROW(call(no_classes, options(DistillDistance::kl, 1.0f)), Error);
  EXPECT_THROW(call(sh, options(DistillDistance::kl, 0.0f)), Error);
  EXPECT_THROW(call(sh, options(DistillDistance::kl, -2.0f)), Error);
  EXPECT_THROW(call(sh, options(DistillDistance::kl, NAN)), Error);
  EXPECT_THROW(call(sh, options(DistillDistance::hard, 1.0f, 1.0f, 1.0f)), Error);
  DistillLossOptions neg_eps = options(DistillDistance::euclidean, 1.0f);
  neg_eps.epsilon = -1e-3f;
  EXPECT_THROW(call(sh, neg_eps), Error);
  EXPECT_THROW(call(sh, options(DistillDistance(42), 1.0f)), Error);
}

// ---- how the CUDA kernel runs a shape (checked here, where CI runs) ----

TEST(DistillLossCudaPlan, StagesRowsInSharedMemoryOnlyWhenTheyFit) {
  auto plan = [](int64_t classes, int64_t teachers, int64_t budget) {
    DistillLossShape sh;
    sh.rows = 256, sh.classes = classes, sh.teachers = teachers;
    return distill_loss_cuda_plan(sh, budget);
  };
  const int64_t base = LogitRowsPlan::kDefaultSharedBytes, hopper = 227 * 1024;
  const LogitRowsPlan imagenet = plan(1000, 1, base), ensemble = plan(1000, 3, base);
  EXPECT_TRUE(imagenet.cache_rows);
  EXPECT_EQ(imagenet.shared_bytes, 32 + 2 * 1004 * 4) << "rows at a stride of whole quads with room for the shift";
  EXPECT_TRUE(ensemble.cache_rows);
  EXPECT_EQ(ensemble.shared_bytes, 3 * 32 + 4 * 1004 * 4);
  EXPECT_FALSE(plan(21843, 1, base).cache_rows) << "21843 classes re-read global memory without the opt-in";
  EXPECT_EQ(plan(21843, 1, base).shared_bytes, 32);
  EXPECT_TRUE(plan(21843, 1, hopper).cache_rows) << "one teacher at 21843 classes fits Hopper's opt-in";
  EXPECT_EQ(plan(21843, 1, hopper).threads, 1024);
  EXPECT_FALSE(plan(5003, 3, base).cache_rows);
  for (int64_t classes : {1, 10, 1000, 1531, 4096, 5003, 21843})
    for (int64_t teachers : {1, 2, 3, 8}) {
      const LogitRowsPlan p = plan(classes, teachers, base);
      EXPECT_LE(p.shared_bytes, base);
      EXPECT_EQ(p.cache_rows, (teachers + 1) * p.row_stride * 4 + teachers * 32 <= base);
    }
}

}  // namespace
}  // namespace kd
