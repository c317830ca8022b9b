// The FP8 teacher's emulation (engine/fp8_teacher.h): rounding to E4M3 with per-tensor and
// per-channel scales, which convolutions take FP8, calibration, and a calibrated convolution
// computing exactly conv(round(x), round(w)). On the GPU the same path runs in bf16 (checked
// against the CPU when a device is present).
#include "engine/fp8_teacher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/layers.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

Tensor host(const Shape& shape, uint64_t seed, float lo = -1, float hi = 1) {
  Tensor t = Tensor::zeros_cpu(shape, DType::f32);
  const std::vector<float> v = test::random_vector<float>(size_t(t.numel()), seed, lo, hi);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

std::vector<float> values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

// A frozen convolution with random weights (standardised as BiT's are).
struct FrozenConv {
  ParamStore store;
  std::unique_ptr<Conv2d> conv;
  FrozenConv(Context& ctx, int64_t c_in, int64_t c_out, int64_t groups = 1, uint64_t seed = 5) {
    ConvSpec s;
    s.c_in = c_in, s.c_out = c_out, s.kernel = 3, s.groups = groups, s.weight_std = true;
    conv = std::make_unique<Conv2d>(store, "stage.conv", s);
    store.allocate(ctx, /*trainable=*/false);
    store.init(seed, ctx);
    conv->set_frozen(true);
  }
};

TEST(Fp8Teacher, RoundTripGivesE4M3ValuesWithinHalfAStep) {
  auto ctx = Context::cpu();
  const Tensor x = host({4, 5, 6, 7}, 1, -30, 30);
  float largest = 0;
  for (float v : values(x)) largest = std::max(largest, std::fabs(v));
  EXPECT_EQ(amax(*ctx, x), largest);
  const float scale = e4m3_scale_for_amax(largest, 0);
  const Tensor y = fp8_round_trip(*ctx, x, scale);
  ASSERT_EQ(y.shape(), x.shape());
  int64_t changed = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float xi = x.data<float>()[i] * scale, yi = y.data<float>()[i] * scale;
    EXPECT_NEAR(yi, e4m3_to_float(float_to_e4m3(yi)), 1e-5f * std::fabs(yi)) << "an E4M3 value at " << i;
    // E4M3 keeps 3 mantissa bits: a normal value moves by at most half a step (2^-4 relative);
    // below 2^-6 the steps are 2^-9 absolute.
    EXPECT_LE(std::fabs(yi - xi), std::max(std::fabs(xi) / 16.0f, 1.0f / 1024.0f) * 1.0001f) << i;
    changed += yi != xi;
  }
  EXPECT_GT(changed, x.numel() / 2) << "random values are rarely E4M3 values already";
  // Beyond the calibrated range values saturate at 448 / scale.
  const Tensor big = fp8_round_trip(*ctx, host({8}, 2, 100, 200), scale);
  for (float v : values(big)) EXPECT_NEAR(v * scale, 448.0f, 1e-3f);
}

TEST(Fp8Teacher, PerChannelWeightScalesKeepEachChannelsOwnRange) {
  auto ctx = Context::cpu();
  Tensor w = host({3, 2, 2, 5}, 3);
  for (int64_t i = 20; i < 40; ++i) w.data<float>()[i] *= 1e5f;  // channel 1 is 10^5 x larger
  std::vector<float> amax_rows;
  const Tensor rows = fp8_round_trip_rows(*ctx, w, 3, &amax_rows);
  ASSERT_EQ(amax_rows.size(), 3u);
  for (int64_t r = 0; r < 3; ++r) {
    const std::vector<float> v = values(w);
    const float m = *std::max_element(v.begin() + r * 20, v.begin() + r * 20 + 20,
                                      [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    EXPECT_FLOAT_EQ(amax_rows[size_t(r)], std::fabs(m));
    // Each row alone, rounded with its own scale, is what the per-row rounding gives.
    Tensor row = Tensor::zeros_cpu({20}, DType::f32);
    std::copy(v.begin() + r * 20, v.begin() + r * 20 + 20, row.data<float>());
    const Tensor own = fp8_round_trip(*ctx, row, e4m3_scale_for_amax(std::fabs(m), 0));
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(rows.data<float>()[r * 20 + i], own.data<float>()[i]) << r << "," << i;
  }
  // One scale for the whole tensor would put channel 0 among the subnormals (steps of 2^-9).
  const Tensor one = fp8_round_trip(*ctx, w, e4m3_scale_for_amax(amax(*ctx, w), 0));
  auto channel0 = [](const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + 20); };
  EXPECT_GT(test::rel_l2(channel0(one), channel0(w)), 10 * test::rel_l2(channel0(rows), channel0(w)));
}

TEST(Fp8Teacher, OnlyWideUngroupedConvolutionsTakeFp8) {
  auto ctx = Context::cpu();
  FrozenConv wide(*ctx, 16, 32), stem(*ctx, 3, 32), narrow(*ctx, 16, 8), depthwise(*ctx, 32, 32, 32),
      unaligned_in(*ctx, 24, 32), unaligned_out(*ctx, 32, 40);
  EXPECT_EQ(enable_fp8(*wide.conv, 2).fp8_convs, 1);
  EXPECT_EQ(enable_fp8(*stem.conv, 2).other_convs, 1);
  EXPECT_EQ(enable_fp8(*narrow.conv, 2).other_convs, 1);
  EXPECT_EQ(enable_fp8(*depthwise.conv, 2).other_convs, 1);
  EXPECT_EQ(enable_fp8(*unaligned_in.conv, 2).other_convs, 1) << "24 channels: rows of 24 bytes";
  EXPECT_EQ(enable_fp8(*unaligned_out.conv, 2).other_convs, 1);
  EXPECT_NE(wide.conv->fp8(), nullptr);
  EXPECT_EQ(stem.conv->fp8(), nullptr);
  EXPECT_EQ(enable_fp8(*wide.conv, 2).describe(), "FP8 (E4M3) in 1 of 1 convolutions");
  wide.conv->set_frozen(false);
  EXPECT_EQ(wide.conv->fp8(), nullptr) << "unfrozen weights may change: the scales are dropped";
  EXPECT_THROW(enable_fp8(*wide.conv, 2), Error) << "not frozen";
}

TEST(Fp8Teacher, CalibratedConvolutionComputesConvOfRoundedInputAndWeights) {
  auto ctx = Context::cpu();
  FrozenConv c(*ctx, 16, 32);
  enable_fp8(*c.conv, 2);
  const Tensor x1 = host({2, 6, 5, 16}, 11, 0, 3), x2 = host({2, 6, 5, 16}, 12, 0, 5),
               x3 = host({3, 6, 5, 16}, 13, 0, 4);
  EXPECT_THROW(finish_fp8_calibration(*c.conv), Error) << "no calibration batch seen";
  // Calibration batches run unrounded and record the inputs' largest magnitude.
  c.conv->forward(*ctx, x1, Mode::eval);
  c.conv->forward(*ctx, x2, Mode::eval);
  c.conv->forward(*ctx, x2, Mode::eval);  // beyond the 2 calibration batches: not observed
  finish_fp8_calibration(*c.conv);
  const Fp8ConvState& st = *c.conv->fp8();
  EXPECT_EQ(st.input.seen(), 2);
  EXPECT_FLOAT_EQ(st.input.amax(), std::max(amax(*ctx, x1), amax(*ctx, x2)));
  // Then the convolution reads rounded inputs and per-channel rounded weights.
  const Tensor y3 = c.conv->forward(*ctx, x3, Mode::eval);
  const Tensor w_rounded = st.weight;
  ASSERT_TRUE(w_rounded.defined());
  const Conv2dShape s = ops::conv_shape_for(x3, c.conv->geometry());
  const Tensor expected = ops::conv2d(*ctx, fp8_round_trip(*ctx, x3, st.input.scale()), w_rounded, s);
  ASSERT_EQ(y3.shape(), expected.shape());
  EXPECT_EQ(values(y3), values(expected));
  // ... which is close to, but not, the full-precision convolution: each operand carries up to
  // 2^-4 relative rounding (~3.6% rms), and a sum of 144 products of either sign keeps that order.
  c.conv->set_fp8(nullptr);
  const Tensor exact = c.conv->forward(*ctx, x3, Mode::eval);
  const double err = test::rel_l2(values(y3), values(exact));
  EXPECT_GT(err, 1e-4);
  EXPECT_LT(err, 0.1);
}

TEST(Fp8Teacher, TrainingModeAndNonFiniteCalibrationAreRefused) {
  auto ctx = Context::cpu();
  FrozenConv c(*ctx, 16, 16);
  enable_fp8(*c.conv, 1);
  Tensor x = host({1, 4, 4, 16}, 21);
  x.data<float>()[3] = NAN;
  EXPECT_THROW(c.conv->forward(*ctx, x, Mode::eval), Error) << "a NaN cannot be scaled into FP8";
  auto ctx64 = Context::cpu(DType::f64);
  EXPECT_THROW(amax(*ctx64, Tensor::zeros_cpu({4}, DType::f64)), Error) << "FP8 emulation reads f32 on the CPU";
}

// The GPU runs the emulation in bf16: its rounding of bf16 inputs equals the CPU's rounding of the
// same values, within one bf16 step of the dequantised result; a calibrated convolution on the
// GPU matches the CPU's within bf16 noise.
TEST(Fp8Teacher, OnTheGpuTheEmulationMatchesTheCpu) {
  KD_REQUIRE_CUDA();
  auto gpu = Context::cuda(0);
  auto cpu = Context::cpu();
  Tensor x = host({2, 7, 5, 16}, 31, 0, 6);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = bf16_to_float(float_to_bf16(x.data<float>()[i]));
  Tensor x16 = Tensor::zeros_cpu(x.shape(), DType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) x16.data<bf16>()[i] = float_to_bf16(x.data<float>()[i]);
  const Tensor xg = x16.to(Device::cuda, gpu.get());
  EXPECT_EQ(amax(*gpu, xg), amax(*cpu, x));
  const float scale = e4m3_scale_for_amax(amax(*cpu, x), 0);
  const Tensor yg = fp8_round_trip(*gpu, xg, scale).to(Device::cpu, gpu.get());
  const Tensor yc = fp8_round_trip(*cpu, x, scale);
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_NEAR(bf16_to_float(yg.data<bf16>()[i]), yc.data<float>()[i], std::fabs(yc.data<float>()[i]) / 128.0f) << i;

  FrozenConv c_gpu(*gpu, 16, 32), c_cpu(*cpu, 16, 32);  // same seed: the same weights
  enable_fp8(*c_gpu.conv, 1), enable_fp8(*c_cpu.conv, 1);
  c_gpu.conv->forward(*gpu, xg, Mode::eval), c_cpu.conv->forward(*cpu, x, Mode::eval);
  finish_fp8_calibration(*c_gpu.conv), finish_fp8_calibration(*c_cpu.conv);
  EXPECT_EQ(c_gpu.conv->fp8()->input.scale(), c_cpu.conv->fp8()->input.scale());
  const Tensor og = c_gpu.conv->forward(*gpu, xg, Mode::eval).to(Device::cpu, gpu.get());
  const Tensor oc = c_cpu.conv->forward(*cpu, x, Mode::eval);
  std::vector<float> og_f(size_t(og.numel()));
  for (int64_t i = 0; i < og.numel(); ++i) og_f[size_t(i)] = bf16_to_float(og.data<bf16>()[i]);
  EXPECT_LT(test::rel_l2(og_f, values(oc)), 1e-2);
}

}  // namespace
}  // namespace kd
