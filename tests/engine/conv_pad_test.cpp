// run.conv_pad_channels at the op level (engine/ops.cpp): a 7x7 stride-2 stem on 3 channels gives
// the same output, input gradient and (accumulated) weight gradient on 8 zero-padded channels as
// on its own 3. The path is device-independent, so the CPU checks it; the GPU runs the same ops
// with channel_pad.cu (tests/kernels/channel_pad_test.cpp) and cuDNN.
#include <gtest/gtest.h>

#include "engine/ops.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

Tensor host(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::zeros_cpu(shape, DType::f32);
  const std::vector<float> v = test::random_vector<float>(size_t(t.numel()), seed);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

std::vector<float> values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

TEST(ConvPadChannels, TheStemOnEightPaddedChannelsIsTheStemOnThree) {
  auto ctx = Context::cpu();
  Conv2dShape s;
  s.n = 2, s.h = 13, s.w = 11, s.c_in = 3, s.c_out = 5, s.kh = s.kw = 7, s.stride_h = s.stride_w = 2;
  s.pad_h = s.pad_w = 3;
  const Tensor x = host({s.n, s.h, s.w, s.c_in}, 51), w = host({s.c_out, s.kh, s.kw, s.c_in}, 52);
  const Tensor dy = host({s.n, s.out_h(), s.out_w(), s.c_out}, 53), dw0 = host({s.c_out, s.kh, s.kw, s.c_in}, 54);

  auto run = [&](bool pad, Tensor* y, Tensor* dx, Tensor* dw) {
    ctx->set_conv_pad_channels(pad);
    EXPECT_EQ(ops::conv_compute_channels(*ctx, s), pad ? 8 : 3);
    *y = ops::conv2d(*ctx, x, w, s);
    *dx = ops::conv2d_backward_data(*ctx, dy, w, s);
    *dw = dw0.clone_cpu();
    ops::conv2d_backward_filter(*ctx, x, dy, s, *dw);
  };
  Tensor y3, dx3, dw3, y8, dx8, dw8;
  run(false, &y3, &dx3, &dw3);
  run(true, &y8, &dx8, &dw8);
  EXPECT_EQ(y8.shape(), y3.shape());
  EXPECT_EQ(dx8.shape(), dx3.shape());
  EXPECT_EQ(dw8.shape(), dw3.shape());
  EXPECT_LE(test::rel_l2(values(y8), values(y3)), 1e-6);
  EXPECT_LE(test::rel_l2(values(dx8), values(dx3)), 1e-6);
  EXPECT_LE(test::rel_l2(values(dw8), values(dw3)), 1e-6) << "added to dw's values, as without padding";
  EXPECT_GT(test::rel_l2(values(dw3), values(dw0)), 1e-2) << "the gradient is not negligible";
}

TEST(ConvPadChannels, OnlyUngroupedConvolutionsOnFewerThanEightChannelsArePadded) {
  auto ctx = Context::cpu();
  ctx->set_conv_pad_channels(true);
  Conv2dShape s;
  s.c_in = 8, s.c_out = 8;
  EXPECT_EQ(ops::conv_compute_channels(*ctx, s), 8);
  s.c_in = 16;
  EXPECT_EQ(ops::conv_compute_channels(*ctx, s), 16);
  s.c_in = 4, s.c_out = 4, s.groups = 4;  // depthwise
  EXPECT_EQ(ops::conv_compute_channels(*ctx, s), 4);
  s.groups = 1, s.c_in = 1;
  EXPECT_EQ(ops::conv_compute_channels(*ctx, s), 8);
  ctx->set_conv_pad_channels(false);
  EXPECT_EQ(ops::conv_compute_channels(*ctx, s), 1);
}

TEST(ConvPadChannels, PadAndSliceNameWhatTheyCannotDo) {
  auto ctx = Context::cpu();
  const Tensor t = host({2, 3}, 55);
  const std::string msg = test::error_of([&] { ops::pad_channels(*ctx, t, 2); });
  EXPECT_NE(msg.find("pad_channels: cannot pad f32[2, 3]"), std::string::npos) << msg;
  EXPECT_THROW(ops::slice_channels(*ctx, t, 4), Error);
  const Tensor p = ops::pad_channels(*ctx, t, 8);
  EXPECT_EQ(p.shape(), Shape({2, 8}));
  EXPECT_EQ(p.data<float>()[8 + 2], t.data<float>()[3 + 2]);
  EXPECT_EQ(p.data<float>()[8 + 5], 0.0f);
  EXPECT_EQ(values(ops::slice_channels(*ctx, p, 3)), values(t));
}

}  // namespace
}  // namespace kd
