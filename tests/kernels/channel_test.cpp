// Squeeze-excite's channel scale on the CPU: against its definition, against finite differences,
// and the properties the layers rely on (dx may alias dy, thread-count independent sums).
#include "kernels/channel.h"

#include <gtest/gtest.h>
#include <omp.h>

#include "engine/ops.h"
#include "kernels/check.h"
#include "tests/support/gradcheck.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;
using test::Vec;

TEST(ChannelScale, IndexPicksTheImagesGateOfTheElementsChannel) {
  // x [2, 3, 4]: element (img 1, pixel 2, channel 3) scales by s[1, 3].
  EXPECT_EQ(channel_scale_index((1 * 3 + 2) * 4 + 3, 3, 4), 1 * 4 + 3);
  EXPECT_EQ(channel_scale_index(0, 3, 4), 0);
  EXPECT_EQ(channel_scale_index(11, 3, 4), 3);  // last element of image 0
  EXPECT_EQ(channel_scale_index(12, 3, 4), 4);  // first of image 1
  EXPECT_EQ(channel_of(13, 4), 1);
}

TEST(ChannelScale, ForwardMatchesDefinition) {
  const ChannelScaleShape s{3, 70, 5};
  const Vec x = random_vector<double>(size_t(s.numel()), 1), g = random_vector<double>(size_t(s.n * s.c), 2, 0, 1);
  Vec y(x.size(), NAN), expected(x.size());
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t p = 0; p < s.hw; ++p)
      for (int64_t c = 0; c < s.c; ++c)
        expected[size_t((n * s.hw + p) * s.c + c)] = x[size_t((n * s.hw + p) * s.c + c)] * g[size_t(n * s.c + c)];
  channel_scale_forward_cpu<double>(s, x.data(), g.data(), y.data());
  EXPECT_EQ(rel_l2(y, expected), 0.0);
}

TEST(ChannelScale, BackwardMatchesFiniteDifferences) {
  const ChannelScaleShape s{2, 90, 3};  // 90 pixels: two blocks of sum_rows_cpu's reduction
  Vec x = random_vector<double>(size_t(s.numel()), 3), g = random_vector<double>(size_t(s.n * s.c), 4, 0, 1);
  test::expect_gradients_match(
      {{"x", &x}, {"s", &g}},
      [&] {
        Vec y(x.size());
        channel_scale_forward_cpu<double>(s, x.data(), g.data(), y.data());
        return y;
      },
      [&](const Vec& dy) {
        Vec dx(x.size(), NAN), ds(g.size(), NAN);
        channel_scale_backward_cpu<double>(s, x.data(), g.data(), dy.data(), dx.data(), ds.data());
        return std::vector<Vec>{dx, ds};
      });
}

TEST(ChannelScale, BackwardAllowsDxToAliasDy) {
  const ChannelScaleShape s{2, 33, 4};
  const Vec x = random_vector<double>(size_t(s.numel()), 5), g = random_vector<double>(size_t(s.n * s.c), 6);
  const Vec dy = random_vector<double>(x.size(), 7);
  Vec dx(x.size()), ds(g.size()), in_place = dy, ds_in_place(g.size());
  channel_scale_backward_cpu<double>(s, x.data(), g.data(), dy.data(), dx.data(), ds.data());
  channel_scale_backward_cpu<double>(s, x.data(), g.data(), in_place.data(), in_place.data(), ds_in_place.data());
  EXPECT_EQ(in_place, dx);
  EXPECT_EQ(ds_in_place, ds);
}

TEST(ChannelScale, GateGradientIsBitwiseIndependentOfTheThreadCount) {
  const ChannelScaleShape s{2, 5000, 3};
  const auto x = random_vector<float>(size_t(s.numel()), 8), g = random_vector<float>(size_t(s.n * s.c), 9);
  const auto dy = random_vector<float>(x.size(), 10);
  std::vector<float> dx(x.size()), one(g.size()), two(g.size());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  channel_scale_backward_cpu<float>(s, x.data(), g.data(), dy.data(), dx.data(), one.data());
  omp_set_num_threads(2);
  channel_scale_backward_cpu<float>(s, x.data(), g.data(), dy.data(), dx.data(), two.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(one, two);
}

TEST(ChannelScale, RejectsEmptyShapesNamingTheOp) {
  std::vector<float> v(4);
  const std::string msg = test::error_of([&] {
    channel_scale_forward_cpu<float>({1, 0, 4}, v.data(), v.data(), v.data());
  });
  EXPECT_NE(msg.find("channel_scale_forward"), std::string::npos) << msg;
  EXPECT_THROW(channel_scale_backward_cpu<float>({1, 1, -1}, v.data(), v.data(), v.data(), v.data(), v.data()), Error);
}

// The op layer checks the gate's shape against x (one gate per image and channel) and the bias
// against the channel count, naming the op.
TEST(ChannelScale, OpsRejectMismatchedGateAndBiasShapes) {
  auto ctx = Context::cpu(DType::f32);
  const Tensor x = Tensor::zeros_cpu({2, 3, 3, 4}, DType::f32);
  const std::string gate = test::error_of([&] { ops::channel_scale(*ctx, x, Tensor::zeros_cpu({2, 4}, DType::f32)); });
  EXPECT_NE(gate.find("channel_scale"), std::string::npos) << gate;
  EXPECT_THROW(ops::channel_scale(*ctx, x, Tensor::zeros_cpu({1, 1, 1, 4}, DType::f32)), Error);
  Tensor y = x;
  const std::string bias = test::error_of([&] { ops::bias_add(*ctx, y, Tensor::zeros_cpu({3}, DType::f32)); });
  EXPECT_NE(bias.find("bias_add"), std::string::npos) << bias;
  const Tensor ok = ops::channel_scale(*ctx, x, Tensor::zeros_cpu({2, 1, 1, 4}, DType::f32));
  EXPECT_EQ(ok.shape(), x.shape());
}

}  // namespace
}  // namespace kd
