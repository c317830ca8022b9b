#include "kernels/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/check.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using Vec = std::vector<double>;

constexpr int64_t kSize = 1000;
constexpr int kSteps = 6;

// A different random gradient at each step.
std::vector<float> gradient_at(int step) { return random_vector<float>(size_t(kSize), 100 + uint64_t(step), -2, 2); }

// AdamW, transcribed in double from the formulas (Loshchilov & Hutter; PyTorch's AdamW):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  m^ = m / (1 - b1^t);  v^ = v / (1 - b2^t)
//   w = w - lr wd w - lr m^ / (sqrt(v^) + eps)
TEST(Adam, MatchesFormulasOverSeveralStepsWithAndWithoutWeightDecay) {
  for (float wd : {0.0f, 0.05f}) {
    AdamHyper h;
    h.lr = 0.01f, h.beta1 = 0.9f, h.beta2 = 0.99f, h.eps = 1e-6f;
    std::vector<float> w = random_vector<float>(size_t(kSize), 1), m(size_t(kSize), 0.0f), v(size_t(kSize), 0.0f);
    Vec w_ref = test::cast_vector<double>(w), m_ref(size_t(kSize), 0.0), v_ref(size_t(kSize), 0.0);
    const double b1 = h.beta1, b2 = h.beta2, lr = h.lr, eps = h.eps;
    for (int t = 1; t <= kSteps; ++t) {
      const std::vector<float> g = gradient_at(t);
      h.step = t;
      adam_update_cpu(kSize, h, wd, 1.0f, w.data(), g.data(), m.data(), v.data());
      for (size_t i = 0; i < size_t(kSize); ++i) {
        m_ref[i] = b1 * m_ref[i] + (1 - b1) * g[i];
        v_ref[i] = b2 * v_ref[i] + (1 - b2) * double(g[i]) * g[i];
        const double m_hat = m_ref[i] / (1 - std::pow(b1, t)), v_hat = v_ref[i] / (1 - std::pow(b2, t));
        w_ref[i] -= lr * double(wd) * w_ref[i] + lr * m_hat / (std::sqrt(v_hat) + eps);
      }
      EXPECT_LT(rel_l2(m, m_ref), 1e-6) << "step " << t << " wd " << wd;
      EXPECT_LT(rel_l2(v, v_ref), 1e-6) << "step " << t << " wd " << wd;
      EXPECT_LT(rel_l2(w, w_ref), 1e-6) << "step " << t << " wd " << wd;
    }
  }
}

TEST(Adam, FirstStepMovesEveryWeightByAboutLearningRate) {
  // bias correction makes m^ / sqrt(v^) = sign(g) at step 1, whatever the betas
  AdamHyper h;
  h.lr = 0.001f;
  std::vector<float> w(size_t(kSize), 0.5f), m(static_cast<size_t>(kSize)), v(static_cast<size_t>(kSize));
  const std::vector<float> g = gradient_at(0);
  adam_update_cpu(kSize, h, 0.0f, 1.0f, w.data(), g.data(), m.data(), v.data());
  for (size_t i = 0; i < size_t(kSize); ++i) EXPECT_NEAR(w[i], 0.5f - 0.001f * std::copysign(1.0f, g[i]), 1e-6f);
}

// PyTorch's SGD momentum: buf = g at the first step, then buf = mu buf + g; the update direction is
// buf (or g + mu buf with Nesterov); weight decay is decoupled: w -= lr (d + wd w).
TEST(Sgd, MatchesFormulasOverSeveralStepsForMomentumNesterovAndWeightDecay) {
  for (bool nesterov : {false, true})
    for (float wd : {0.0f, 0.01f}) {
      SgdHyper h;
      h.lr = 0.05f, h.momentum = 0.9f, h.nesterov = nesterov;
      std::vector<float> w = random_vector<float>(size_t(kSize), 2), buf(size_t(kSize), 123.0f);  // ignored at step 1
      Vec w_ref = test::cast_vector<double>(w), buf_ref(static_cast<size_t>(kSize));
      for (int t = 1; t <= kSteps; ++t) {
        const std::vector<float> g = gradient_at(t);
        h.step = t;
        sgd_update_cpu(kSize, h, wd, 1.0f, w.data(), g.data(), buf.data());
        for (size_t i = 0; i < size_t(kSize); ++i) {
          buf_ref[i] = t == 1 ? g[i] : 0.9 * buf_ref[i] + g[i];
          const double d = nesterov ? g[i] + 0.9 * buf_ref[i] : buf_ref[i];
          w_ref[i] -= 0.05 * (d + double(wd) * w_ref[i]);
        }
        EXPECT_LT(rel_l2(buf, buf_ref), 1e-6) << "step " << t << " nesterov " << nesterov << " wd " << wd;
        EXPECT_LT(rel_l2(w, w_ref), 1e-6) << "step " << t << " nesterov " << nesterov << " wd " << wd;
      }
    }
}

TEST(Optim, RejectsStepZero) {
  std::vector<float> w(4), g(4), m(4), v(4);
  AdamHyper a;
  a.step = 0;
  EXPECT_THROW(adam_update_cpu(4, a, 0.0f, 1.0f, w.data(), g.data(), m.data(), v.data()), Error);
  SgdHyper s;
  s.step = 0;
  EXPECT_THROW(sgd_update_cpu(4, s, 0.0f, 1.0f, w.data(), g.data(), m.data()), Error);
}

TEST(Optim, SumSquaresMatchesDoubleSumAndIsExactForLargeCounts) {
  const auto x = random_vector<float>(size_t(100003), 3, -3, 3);
  long double expected = 0;
  for (float v : x) expected += (long double)v * v;
  const double got = sum_squares_cpu(int64_t(x.size()), x.data());
  EXPECT_NEAR(got, double(expected), 1e-12 * double(expected));
  // 2^24 + 8 ones: a float accumulator would stop at 2^24
  const std::vector<float> ones((size_t(1) << 24) + 8, 1.0f);
  EXPECT_EQ(sum_squares_cpu(int64_t(ones.size()), ones.data()), double(ones.size()));
  EXPECT_EQ(sum_squares_cpu(0, nullptr), 0.0);
}

TEST(Optim, ScaleMultipliesEveryElement) {
  auto x = random_vector<float>(size_t(kSize), 4);
  const auto before = x;
  scale_cpu(kSize, 0.3f, x.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], before[i] * 0.3f);
}

TEST(Optim, AccumulateAddsEveryElement) {
  auto dst = random_vector<float>(size_t(kSize), 5);
  const auto src = random_vector<float>(size_t(kSize), 6);
  const auto before = dst;
  accumulate_cpu(kSize, src.data(), dst.data());
  for (size_t i = 0; i < dst.size(); ++i) EXPECT_EQ(dst[i], before[i] + src[i]);
}

}  // namespace
}  // namespace kd
