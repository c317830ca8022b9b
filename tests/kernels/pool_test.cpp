#include "kernels/pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

struct Pooled {
  Vec y;
  std::vector<int32_t> argmax;
};

// The definition: build the padded image explicitly (zeros or -inf), then a pad-0 max-pool over
// it scanning (ky, kx) with a strict '>' (first maximum wins); a winner in the padding has argmax -1.
Pooled maxpool_direct(const MaxPoolShape& s, const Vec& x) {
  const int64_t ph = s.h + 2 * s.pad, pw = s.w + 2 * s.pad, oh = s.out_h(), ow = s.out_w();
  const double fill = s.pad_with_zero ? 0.0 : -std::numeric_limits<double>::infinity();
  Pooled r{Vec(size_t(s.y_numel())), std::vector<int32_t>(size_t(s.y_numel()))};
  for (int64_t n = 0; n < s.n; ++n) {
    Vec padded(size_t(ph * pw * s.c), fill);
    std::vector<int32_t> source(padded.size(), -1);
    for (int64_t iy = 0; iy < s.h; ++iy)
      for (int64_t ix = 0; ix < s.w; ++ix)
        for (int64_t c = 0; c < s.c; ++c) {
          const size_t p = size_t(((iy + s.pad) * pw + ix + s.pad) * s.c + c);
          padded[p] = x[size_t(((n * s.h + iy) * s.w + ix) * s.c + c)];
          source[p] = int32_t((iy * s.w + ix) * s.c + c);
        }
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t c = 0; c < s.c; ++c) {
          double best = -std::numeric_limits<double>::infinity();
          int32_t arg = -2;
          for (int64_t ky = 0; ky < s.k; ++ky)
            for (int64_t kx = 0; kx < s.k; ++kx) {
              const size_t p = size_t(((oy * s.stride + ky) * pw + ox * s.stride + kx) * s.c + c);
              if (arg == -2 || padded[p] > best) best = padded[p], arg = source[p];
            }
          const size_t o = size_t(((n * oh + oy) * ow + ox) * s.c + c);
          r.y[o] = best;
          r.argmax[o] = arg;
        }
  }
  return r;
}

MaxPoolShape make(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int64_t stride, int64_t pad, bool zero) {
  MaxPoolShape s;
  s.n = n, s.h = h, s.w = w, s.c = c, s.k = k, s.stride = stride, s.pad = pad, s.pad_with_zero = zero;
  return s;
}

class MaxPoolShapes : public ::testing::TestWithParam<MaxPoolShape> {};

TEST_P(MaxPoolShapes, ForwardMatchesPaddedDefinition) {
  const MaxPoolShape s = GetParam();
  const Vec x = random_vector<double>(size_t(s.n * s.h * s.w * s.c), 1);
  const Pooled expected = maxpool_direct(s, x);
  Vec y(size_t(s.y_numel()), NAN);
  std::vector<int32_t> argmax(y.size(), 12345);
  maxpool_forward_cpu<double>(s, x.data(), y.data(), argmax.data());
  EXPECT_EQ(rel_l2(y, expected.y), 0.0);
  EXPECT_EQ(argmax, expected.argmax);
  const auto xf = test::cast_vector<float>(x);
  std::vector<float> yf(y.size(), NAN);
  maxpool_forward_cpu<float>(s, xf.data(), yf.data(), argmax.data());
  EXPECT_LT(rel_l2(yf, expected.y), 1e-7);
  EXPECT_EQ(argmax, expected.argmax);
}

TEST_P(MaxPoolShapes, BackwardMatchesFiniteDifferences) {
  const MaxPoolShape s = GetParam();
  Vec x = random_vector<double>(size_t(s.n * s.h * s.w * s.c), 2);
  std::vector<int32_t> argmax(size_t(s.y_numel()));
  test::expect_gradients_match(
      {{"x", &x}},
      [&] {
        Vec y(size_t(s.y_numel()));
        maxpool_forward_cpu<double>(s, x.data(), y.data(), argmax.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec y(size_t(s.y_numel())), dx(x.size(), NAN);
        maxpool_forward_cpu<double>(s, x.data(), y.data(), argmax.data());
        maxpool_backward_cpu<double>(s, argmax.data(), dy.data(), dx.data());
        return std::vector<Vec>{dx};
      });
}

INSTANTIATE_TEST_SUITE_P(Shapes, MaxPoolShapes,
                         ::testing::Values(make(2, 7, 8, 3, 3, 2, 1, false),  // PyTorch MaxPool2d(3, 2, 1)
                                           make(2, 7, 8, 3, 3, 2, 1, true),   // BiT: zero pad 1, MaxPool2d(3, 2)
                                           make(1, 6, 6, 2, 2, 2, 0, false),  // 2x2/2, no overlap
                                           make(1, 5, 4, 4, 3, 1, 1, false),  // 3x3/1 same
                                           make(1, 5, 5, 2, 3, 2, 0, true))); // zero mode with no padding

TEST(MaxPool, ZeroPaddingWinsOverNegativeInputs) {
  const MaxPoolShape s = make(1, 3, 3, 2, 3, 2, 1, true);
  const Vec x = random_vector<double>(18, 3, -2, -1);
  Vec y(size_t(s.y_numel()));
  std::vector<int32_t> argmax(y.size());
  maxpool_forward_cpu<double>(s, x.data(), y.data(), argmax.data());
  // Every window of a 3x3 image under 3x3/2 with padding 1 touches the padding.
  for (size_t i = 0; i < y.size(); ++i) {
    EXPECT_EQ(y[i], 0.0) << i;
    EXPECT_EQ(argmax[i], -1) << i;
  }
  Vec dx(x.size(), NAN);
  const Vec dy = random_vector<double>(y.size(), 4);
  maxpool_backward_cpu<double>(s, argmax.data(), dy.data(), dx.data());
  for (double v : dx) EXPECT_EQ(v, 0.0);  // the gradient of a padding winner goes nowhere
}

TEST(MaxPool, NegativeInfinityPaddingNeverWins) {
  const MaxPoolShape s = make(1, 4, 4, 1, 3, 2, 1, false);
  const Vec x = random_vector<double>(16, 5, -2, -1);
  Vec y(size_t(s.y_numel()));
  std::vector<int32_t> argmax(y.size());
  maxpool_forward_cpu<double>(s, x.data(), y.data(), argmax.data());
  for (size_t i = 0; i < y.size(); ++i) {
    EXPECT_LT(y[i], -0.5) << i;
    EXPECT_EQ(x[size_t(argmax[i])], y[i]) << i;
  }
}

TEST(MaxPool, TiesGoToTheFirstMaximumInScanOrder) {
  // Constant image: the first tap of each window wins. With zero padding and a zero image, a
  // window starting in the padding is won by the padding (-1), as ConstantPad2d + MaxPool2d.
  const MaxPoolShape s = make(1, 5, 5, 1, 3, 2, 0, false);
  const Vec ones(25, 1.0);
  Vec y(size_t(s.y_numel()));
  std::vector<int32_t> argmax(y.size());
  maxpool_forward_cpu<double>(s, ones.data(), y.data(), argmax.data());
  EXPECT_EQ(argmax, (std::vector<int32_t>{0, 2, 10, 12}));

  const MaxPoolShape z = make(1, 4, 4, 1, 3, 2, 1, true);
  const Vec zeros(16, 0.0);
  Vec yz(size_t(z.y_numel()));
  std::vector<int32_t> az(yz.size());
  maxpool_forward_cpu<double>(z, zeros.data(), yz.data(), az.data());
  EXPECT_EQ(az, (std::vector<int32_t>{-1, -1, -1, 5}));  // window (1,1) starts at pixel (1,1)
}

TEST(MaxPool, RejectsPaddingWiderThanHalfTheWindow) {
  try {
    validate(make(1, 8, 8, 1, 3, 2, 2, false));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds half the window"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(validate(make(1, 8, 8, 1, 3, 2, 2, true)));  // zeros may pad further
}

TEST(MaxPool, RejectsEmptyOutput) {
  EXPECT_THROW(validate(make(1, 2, 2, 1, 3, 2, 0, false)), Error);
  EXPECT_THROW(validate(make(1, 4, 4, 1, 3, 0, 1, false)), Error);
  EXPECT_THROW(validate(make(1, 4, 4, 0, 3, 2, 1, false)), Error);
}

TEST(GlobalAvgPool, ForwardMatchesDefinition) {
  const int64_t n = 3, hw = 10, c = 4;
  const Vec x = random_vector<double>(size_t(n * hw * c), 6);
  Vec expected(size_t(n * c), 0.0), y(size_t(n * c), NAN);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t ch = 0; ch < c; ++ch) expected[size_t(i * c + ch)] += x[size_t((i * hw + p) * c + ch)] / double(hw);
  global_avgpool_forward_cpu<double>(n, hw, c, x.data(), y.data());
  EXPECT_LT(rel_l2(y, expected), 1e-12);
  const auto xf = test::cast_vector<float>(x);
  std::vector<float> yf(y.size());
  global_avgpool_forward_cpu<float>(n, hw, c, xf.data(), yf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-5);
}

TEST(GlobalAvgPool, BackwardMatchesFiniteDifferences) {
  const int64_t n = 2, hw = 6, c = 3;
  Vec x = random_vector<double>(size_t(n * hw * c), 7);
  test::expect_gradients_match(
      {{"x", &x}},
      [&] {
        Vec y(size_t(n * c));
        global_avgpool_forward_cpu<double>(n, hw, c, x.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dx(x.size(), NAN);
        global_avgpool_backward_cpu<double>(n, hw, c, dy.data(), dx.data());
        return std::vector<Vec>{dx};
      });
}

TEST(GlobalAvgPool, RejectsEmptyImages) {
  std::vector<float> x(4), y(4);
  EXPECT_THROW(global_avgpool_forward_cpu<float>(1, 0, 4, x.data(), y.data()), Error);
  EXPECT_THROW(global_avgpool_backward_cpu<float>(1, 4, 0, y.data(), x.data()), Error);
}

}  // namespace
}  // namespace kd
