#include "kernels/linear.h"

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

Vec linear_direct(const LinearShape& s, const Vec& x, const Vec& w, const Vec* bias) {
  Vec y(size_t(s.rows * s.out));
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t o = 0; o < s.out; ++o) {
      double acc = bias ? (*bias)[size_t(o)] : 0.0;
      for (int64_t i = 0; i < s.in; ++i) acc += x[size_t(r * s.in + i)] * w[size_t(o * s.in + i)];
      y[size_t(r * s.out + o)] = acc;
    }
  return y;
}

const LinearShape kShape{6, 13, 5};

TEST(Linear, ForwardMatchesDefinitionWithAndWithoutBias) {
  const LinearShape s = kShape;
  const Vec x = random_vector<double>(size_t(s.rows * s.in), 1), w = random_vector<double>(size_t(s.out * s.in), 2),
            b = random_vector<double>(size_t(s.out), 3);
  for (const Vec* bias : {static_cast<const Vec*>(nullptr), &b}) {
    const Vec expected = linear_direct(s, x, w, bias);
    Vec y(expected.size(), NAN);
    linear_forward_cpu<double>(s, x.data(), w.data(), bias ? bias->data() : nullptr, y.data());
    EXPECT_LT(rel_l2(y, expected), 1e-12) << "bias " << (bias != nullptr);
    const auto xf = test::cast_vector<float>(x), wf = test::cast_vector<float>(w), bf = test::cast_vector<float>(b);
    std::vector<float> yf(expected.size(), NAN);
    linear_forward_cpu<float>(s, xf.data(), wf.data(), bias ? bf.data() : nullptr, yf.data());
    EXPECT_LT(rel_l2(yf, expected), 1e-5) << "bias " << (bias != nullptr);
  }
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const LinearShape s = kShape;
  Vec x = random_vector<double>(size_t(s.rows * s.in), 4), w = random_vector<double>(size_t(s.out * s.in), 5),
      b = random_vector<double>(size_t(s.out), 6);
  test::expect_gradients_match(
      {{"x", &x}, {"w", &w}, {"bias", &b}},
      [&] {
        Vec y(size_t(s.rows * s.out));
        linear_forward_cpu<double>(s, x.data(), w.data(), b.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dx(x.size(), NAN), dw(w.size(), 0.5), db(b.size(), 0.5);  // dw, db accumulate
        linear_backward_cpu<double>(s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
        for (double& v : dw) v -= 0.5;
        for (double& v : db) v -= 0.5;
        return std::vector<Vec>{dx, dw, db};
      });
}

TEST(Linear, BackwardSkipsTheInputAndBiasGradientsWhenNotWanted) {
  const LinearShape s = kShape;
  const Vec x = random_vector<double>(size_t(s.rows * s.in), 7), w = random_vector<double>(size_t(s.out * s.in), 8),
            dy = random_vector<double>(size_t(s.rows * s.out), 9);
  Vec dx(x.size()), dw_full(w.size(), 0.0), db(size_t(s.out), 0.0), dw_only(w.size(), 0.0);
  linear_backward_cpu<double>(s, x.data(), w.data(), dy.data(), dx.data(), dw_full.data(), db.data());
  linear_backward_cpu<double>(s, x.data(), w.data(), dy.data(), nullptr, dw_only.data(), nullptr);
  EXPECT_EQ(dw_only, dw_full);
}

TEST(Linear, RejectsEmptyShapes) {
  std::vector<float> x(4), w(4), y(4);
  try {
    linear_forward_cpu<float>(LinearShape{2, 0, 2}, x.data(), w.data(), nullptr, y.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kd
