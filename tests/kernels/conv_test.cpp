#include "kernels/conv.h"

#include <gtest/gtest.h>

#include "kernels/gemm.h"
#include "tests/support/gradcheck.h"
#include "tests/kernels/conv_shapes.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

// The definition, written as plainly as possible: seven loops, zero padding, groups.
Vec conv_direct(const Conv2dShape& s, const Vec& x, const Vec& w) {
  const int64_t oh = s.out_h(), ow = s.out_w(), cg = s.c_in_per_group(), cog = s.c_out_per_group();
  Vec y(size_t(s.y_numel()), 0.0);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t co = 0; co < s.c_out; ++co) {
          const int64_t g = co / cog;
          double acc = 0;
          for (int64_t ky = 0; ky < s.kh; ++ky)
            for (int64_t kx = 0; kx < s.kw; ++kx)
              for (int64_t ci = 0; ci < cg; ++ci) {
                const int64_t iy = oy * s.stride_h - s.pad_h + ky * s.dilation_h;
                const int64_t ix = ox * s.stride_w - s.pad_w + kx * s.dilation_w;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                acc += x[size_t(((n * s.h + iy) * s.w + ix) * s.c_in + g * cg + ci)] *
                       w[size_t(((co * s.kh + ky) * s.kw + kx) * cg + ci)];
              }
          y[size_t(((n * oh + oy) * ow + ox) * s.c_out + co)] = acc;
        }
  return y;
}

using test::conv_shape;

class ConvShapes : public ::testing::TestWithParam<Conv2dShape> {};

TEST_P(ConvShapes, ForwardMatchesDirectDefinition) {
  const Conv2dShape s = GetParam();
  const Vec x = random_vector<double>(size_t(s.x_numel()), 1), w = random_vector<double>(size_t(s.w_numel()), 2);
  const Vec expected = conv_direct(s, x, w);
  Vec y(size_t(s.y_numel()), NAN);
  conv2d_forward_cpu<double>(s, x.data(), w.data(), y.data());
  EXPECT_LT(rel_l2(y, expected), 1e-12) << s.describe();
  // float path, same tolerance as every fp32 op
  auto xf = test::cast_vector<float>(x), wf = test::cast_vector<float>(w);
  std::vector<float> yf(size_t(s.y_numel()), NAN);
  conv2d_forward_cpu<float>(s, xf.data(), wf.data(), yf.data());
  EXPECT_LT(rel_l2(yf, expected), 1e-5) << s.describe();
}

TEST_P(ConvShapes, BackwardMatchesFiniteDifferences) {
  const Conv2dShape s = GetParam();
  Vec x = random_vector<double>(size_t(s.x_numel()), 3), w = random_vector<double>(size_t(s.w_numel()), 4);
  test::expect_gradients_match(
      {{"x", &x}, {"w", &w}},
      [&] {
        Vec y(size_t(s.y_numel()));
        conv2d_forward_cpu<double>(s, x.data(), w.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dx(x.size(), NAN), dw(w.size(), 0.5);  // dw accumulates: start from a known value
        conv2d_backward_data_cpu<double>(s, dy.data(), w.data(), dx.data());
        conv2d_backward_filter_cpu<double>(s, x.data(), dy.data(), dw.data());
        for (double& v : dw) v -= 0.5;
        return std::vector<Vec>{dx, dw};
      });
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvShapes,
    ::testing::Values(conv_shape(2, 5, 6, 4, 3, 1, 1, 0),            // pointwise: plain GEMM
                      conv_shape(2, 7, 7, 3, 4, 3, 1, 1),            // 3x3 same
                      conv_shape(1, 9, 8, 3, 5, 3, 2, 1),            // 3x3 stride 2
                      conv_shape(1, 11, 11, 3, 4, 7, 2, 3),          // BiT stem 7x7/2 pad 3
                      conv_shape(2, 6, 6, 4, 6, 1, 2, 0),            // 1x1 stride 2 projection
                      conv_shape(1, 6, 7, 4, 6, 3, 1, 1, 2),         // grouped
                      conv_shape(2, 7, 6, 4, 4, 3, 2, 1, 4),         // depthwise
                      conv_shape(1, 6, 6, 3, 6, 5, 1, 2, 3),         // depthwise, channel multiplier 2
                      conv_shape(1, 9, 9, 2, 3, 3, 1, 2, 1, 2)));     // dilation 2

TEST(Conv, AsymmetricStrideAndPadding) {
  Conv2dShape s = conv_shape(1, 8, 9, 3, 2, 3, 1, 1);
  s.kw = 2, s.stride_w = 2, s.pad_w = 0;
  const Vec x = random_vector<double>(size_t(s.x_numel()), 5), w = random_vector<double>(size_t(s.w_numel()), 6);
  Vec y(size_t(s.y_numel()));
  conv2d_forward_cpu<double>(s, x.data(), w.data(), y.data());
  EXPECT_LT(rel_l2(y, conv_direct(s, x, w)), 1e-12);
}

TEST(Conv, RejectsGroupsThatDoNotDivideChannels) {
  Conv2dShape s = conv_shape(1, 4, 4, 6, 4, 3, 1, 1, 4);
  std::vector<float> x(size_t(s.x_numel())), w(96), y(64);
  try {
    conv2d_forward_cpu<float>(s, x.data(), w.data(), y.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("groups"), std::string::npos) << e.what();
  }
}

TEST(Conv, RejectsEmptyOutput) {
  Conv2dShape s = conv_shape(1, 2, 2, 1, 1, 5, 1, 0);
  EXPECT_THROW(validate(s), Error);
}

TEST(Gemm, BlasMatchesBuiltinLoopForAllTransposes) {
  const int64_t m = 37, n = 29, k = 53;
  const auto a = random_vector<float>(size_t(m * k), 8), b = random_vector<float>(size_t(k * n), 9);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      std::vector<float> c1 = random_vector<float>(size_t(m * n), 10), c2 = c1;
      gemm_cpu<float>(ta, tb, m, n, k, 0.5f, a.data(), ta ? m : k, b.data(), tb ? k : n, 2.0f, c1.data(), n);
      gemm_cpu_fallback<float>(ta, tb, m, n, k, 0.5f, a.data(), ta ? m : k, b.data(), tb ? k : n, 2.0f, c2.data(), n);
      EXPECT_LT(rel_l2(c1, c2), 1e-5) << "trans_a " << ta << " trans_b " << tb;
    }
}

}  // namespace
}  // namespace kd
