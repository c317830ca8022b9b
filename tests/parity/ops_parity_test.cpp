// Op-level parity with PyTorch: every CPU kernel (float) against PyTorch computed in float64 from
// the same float32 inputs (tests/reference/make_ops_fixtures.py, which documents the tensors and
// their layouts). Outputs and every gradient within 1e-5 relative L2. Images are NHWC in the
// file; conv weights are PyTorch's OIHW and are permuted to kd's OHWI here.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/batchnorm.h"
#include "kernels/channel.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/groupnorm.h"
#include "kernels/linear.h"
#include "kernels/pool.h"
#include "kernels/weight_std.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using Floats = std::vector<float>;

constexpr double kTolerance = 1e-5;

const SafetensorsFile& fixtures() {
  static const SafetensorsFile file = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/ops.safetensors");
  return file;
}

const Shape& shape_of(const std::string& name) { return fixtures().entry(name).shape; }

Floats load(const std::string& name) {
  const Tensor t = fixtures().tensor_f32(name, shape_of(name));
  const float* p = t.data<float>();
  return Floats(p, p + t.numel());
}

std::vector<int64_t> load_i64(const std::string& name) {
  const Tensor t = fixtures().tensor(name);
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

// Case names under `prefix` ("conv/" -> {"1x1s2", "3x3s1", ...}), from their "params" tensors.
std::vector<std::string> cases(const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& n : fixtures().names())
    if (n.rfind(prefix, 0) == 0 && n.size() > prefix.size() + 7 && n.compare(n.size() - 7, 7, "/params") == 0)
      out.push_back(n.substr(prefix.size(), n.size() - prefix.size() - 7));
  return out;
}

// Relative L2 error of `got` against the fixture tensor `name`; printed, and checked.
void expect_matches(const std::string& name, const Floats& got) {
  const Floats expected = load(name);
  ASSERT_EQ(got.size(), expected.size()) << name;
  const double err = test::rel_l2(got, expected);
  std::printf("[ parity ] %-34s rel L2 %.2e\n", name.c_str(), err);
  EXPECT_LE(err, kTolerance) << name;
}

// [o, i, kh, kw] <-> [o, kh, kw, i]
Floats oihw_to_ohwi(const Floats& w, const Shape& oihw) {
  const int64_t o = oihw[0], ci = oihw[1], kh = oihw[2], kw = oihw[3];
  Floats r(w.size());
  for (int64_t a = 0; a < o; ++a)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) r[size_t(((a * kh + y) * kw + x) * ci + c)] = w[size_t(((a * ci + c) * kh + y) * kw + x)];
  return r;
}

Floats ohwi_to_oihw(const Floats& w, const Shape& oihw) {
  const int64_t o = oihw[0], ci = oihw[1], kh = oihw[2], kw = oihw[3];
  Floats r(w.size());
  for (int64_t a = 0; a < o; ++a)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) r[size_t(((a * ci + c) * kh + y) * kw + x)] = w[size_t(((a * kh + y) * kw + x) * ci + c)];
  return r;
}

// The conv of case `p` ("conv/3x3s1/"): x NHWC and w OIHW shapes plus [stride, pad, groups, dilation].
Conv2dShape conv_shape(const std::string& p) {
  const Shape& x = shape_of(p + "x");
  const Shape& w = shape_of(p + "w");
  const std::vector<int64_t> prm = load_i64(p + "params");
  Conv2dShape s;
  s.n = x[0], s.h = x[1], s.w = x[2], s.c_in = x[3];
  s.c_out = w[0], s.kh = w[2], s.kw = w[3];
  s.stride_h = s.stride_w = prm[0], s.pad_h = s.pad_w = prm[1], s.groups = prm[2];
  s.dilation_h = s.dilation_w = prm[3];
  return s;
}

TEST(Ops, Conv2dForwardAndBackwardMatchPyTorch) {
  const std::vector<std::string> names = cases("conv/");
  ASSERT_GE(names.size(), 6u);
  for (const std::string& name : names) {
    const std::string p = "conv/" + name + "/";
    const Conv2dShape s = conv_shape(p);
    const Floats x = load(p + "x"), w = oihw_to_ohwi(load(p + "w"), shape_of(p + "w")), dy = load(p + "dy");
    Floats y(size_t(s.y_numel())), dx(x.size()), dw(w.size(), 0.f);
    conv2d_forward_cpu<float>(s, x.data(), w.data(), y.data());
    conv2d_backward_data_cpu<float>(s, dy.data(), w.data(), dx.data());
    conv2d_backward_filter_cpu<float>(s, x.data(), dy.data(), dw.data());
    expect_matches(p + "y", y);
    expect_matches(p + "dx", dx);
    expect_matches(p + "dw", ohwi_to_oihw(dw, shape_of(p + "w")));
  }
}

TEST(Ops, WeightStandardisationMatchesTimm) {
  const Shape& oihw = shape_of("weight_std/w");
  const int64_t c_out = oihw[0], k = oihw[1] * oihw[2] * oihw[3];
  const Floats w = oihw_to_ohwi(load("weight_std/w"), oihw);
  const Floats dw_hat = oihw_to_ohwi(load("weight_std/dw_hat"), oihw);
  Floats w_hat(w.size()), mean(static_cast<size_t>(c_out)), rstd(mean.size()), dw(w.size(), 0.f);
  weight_std_forward_cpu<float>(c_out, k, 1e-8f, w.data(), w_hat.data(), mean.data(), rstd.data());
  weight_std_backward_cpu<float>(c_out, k, w.data(), mean.data(), rstd.data(), dw_hat.data(), dw.data());
  expect_matches("weight_std/w_hat", ohwi_to_oihw(w_hat, oihw));
  expect_matches("weight_std/dw", ohwi_to_oihw(dw, oihw));
}

// timm's StdConv2d end to end: standardise, convolve; backward through both.
TEST(Ops, StdConv2dMatchesTimm) {
  const Conv2dShape s = conv_shape("stdconv/");
  const Shape& oihw = shape_of("stdconv/w");
  const int64_t k = s.kh * s.kw * s.c_in_per_group();
  const Floats x = load("stdconv/x"), w = oihw_to_ohwi(load("stdconv/w"), oihw), dy = load("stdconv/dy");
  Floats w_hat(w.size()), mean(size_t(s.c_out)), rstd(mean.size()), y(size_t(s.y_numel()));
  weight_std_forward_cpu<float>(s.c_out, k, 1e-8f, w.data(), w_hat.data(), mean.data(), rstd.data());
  conv2d_forward_cpu<float>(s, x.data(), w_hat.data(), y.data());
  Floats dx(x.size()), dw_hat(w.size(), 0.f), dw(w.size(), 0.f);
  conv2d_backward_data_cpu<float>(s, dy.data(), w_hat.data(), dx.data());
  conv2d_backward_filter_cpu<float>(s, x.data(), dy.data(), dw_hat.data());
  weight_std_backward_cpu<float>(s.c_out, k, w.data(), mean.data(), rstd.data(), dw_hat.data(), dw.data());
  expect_matches("stdconv/y", y);
  expect_matches("stdconv/dx", dx);
  expect_matches("stdconv/dw", ohwi_to_oihw(dw, oihw));
}

TEST(Ops, GroupNormReluMatchesTimmGroupNormAct) {
  const std::vector<std::string> names = cases("groupnorm/");
  ASSERT_GE(names.size(), 1u);
  for (const std::string& name : names) {
    const std::string p = "groupnorm/" + name + "/";
    const Shape& xs = shape_of(p + "x");
    GroupNormShape s;
    s.n = xs[0], s.hw = xs[1] * xs[2], s.c = xs[3], s.groups = load_i64(p + "params")[0];
    const Floats x = load(p + "x"), gamma = load(p + "gamma"), beta = load(p + "beta"), dy = load(p + "dy");
    Floats y(x.size()), mean(size_t(s.n * s.groups)), rstd(mean.size());
    groupnorm_forward_cpu<float>(s, 1e-5f, x.data(), gamma.data(), beta.data(), true, y.data(), mean.data(),
                                 rstd.data());
    Floats dx(x.size()), dgamma(gamma.size(), 0.f), dbeta(beta.size(), 0.f);
    groupnorm_backward_cpu<float>(s, x.data(), gamma.data(), beta.data(), mean.data(), rstd.data(), true, dy.data(),
                                  dx.data(), dgamma.data(), dbeta.data());
    expect_matches(p + "y", y);
    expect_matches(p + "dx", dx);
    expect_matches(p + "dgamma", dgamma);
    expect_matches(p + "dbeta", dbeta);
  }
}

TEST(Ops, BatchNormTrainingMatchesPyTorch) {
  const std::string p = "batchnorm/train/";
  const Shape& xs = shape_of(p + "x");
  const BatchNormShape s{xs[0] * xs[1] * xs[2], xs[3]};
  const Floats x = load(p + "x"), gamma = load(p + "gamma"), beta = load(p + "beta"), dy = load(p + "dy");
  Floats running_mean = load(p + "running_mean0"), running_var = load(p + "running_var0");
  Floats y(x.size()), mean(size_t(s.c)), rstd(mean.size());
  batchnorm_forward_train_cpu<float>(s, 1e-5f, 0.1f, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                     rstd.data(), running_mean.data(), running_var.data());
  Floats dx(x.size()), dgamma(gamma.size(), 0.f), dbeta(beta.size(), 0.f);
  batchnorm_backward_cpu<float>(s, x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                                dgamma.data(), dbeta.data());
  expect_matches(p + "y", y);
  expect_matches(p + "running_mean", running_mean);
  expect_matches(p + "running_var", running_var);
  expect_matches(p + "dx", dx);
  expect_matches(p + "dgamma", dgamma);
  expect_matches(p + "dbeta", dbeta);
}

TEST(Ops, BatchNormEvalMatchesPyTorch) {
  const std::string p = "batchnorm/eval/";
  const Shape& xs = shape_of(p + "x");
  const BatchNormShape s{xs[0] * xs[1] * xs[2], xs[3]};
  const Floats x = load(p + "x"), gamma = load(p + "gamma"), beta = load(p + "beta");
  const Floats running_mean = load(p + "running_mean"), running_var = load(p + "running_var");
  Floats y(x.size());
  batchnorm_forward_eval_cpu<float>(s, 1e-5f, x.data(), gamma.data(), beta.data(), running_mean.data(),
                                    running_var.data(), y.data());
  expect_matches(p + "y", y);
}

TEST(Ops, ActivationsMatchPyTorch) {
  const std::pair<const char*, Activation> acts[] = {{"relu", Activation::relu},
                                                     {"hardswish", Activation::hardswish},
                                                     {"sigmoid", Activation::sigmoid},
                                                     {"hardsigmoid", Activation::hardsigmoid}};
  for (const auto& [name, a] : acts) {
    const std::string p = std::string("act/") + name + "/";
    const Floats x = load(p + "x"), dy = load(p + "dy");
    Floats y(x.size()), dx(x.size());
    activation_forward_cpu<float>(a, int64_t(x.size()), x.data(), y.data());
    activation_backward_cpu<float>(a, int64_t(x.size()), x.data(), dy.data(), dx.data());
    expect_matches(p + "y", y);
    expect_matches(p + "dx", dx);
  }
}

// "torch": MaxPool2d(3, 2, padding=1), -inf padding; "bit": ConstantPad2d(1, 0) + MaxPool2d(3, 2).
TEST(Ops, MaxPoolMatchesPyTorchWithInfAndZeroPadding) {
  const std::vector<std::string> names = cases("maxpool/");
  ASSERT_EQ(names.size(), 2u);
  for (const std::string& name : names) {
    const std::string p = "maxpool/" + name + "/";
    const Shape& xs = shape_of(p + "x");
    const std::vector<int64_t> prm = load_i64(p + "params");
    MaxPoolShape s;
    s.n = xs[0], s.h = xs[1], s.w = xs[2], s.c = xs[3];
    s.k = prm[0], s.stride = prm[1], s.pad = prm[2], s.pad_with_zero = prm[3] != 0;
    const Floats x = load(p + "x"), dy = load(p + "dy");
    Floats y(size_t(s.y_numel())), dx(x.size());
    std::vector<int32_t> argmax(y.size());
    maxpool_forward_cpu<float>(s, x.data(), y.data(), argmax.data());
    maxpool_backward_cpu<float>(s, argmax.data(), dy.data(), dx.data());
    expect_matches(p + "y", y);
    expect_matches(p + "dx", dx);
  }
}

TEST(Ops, GlobalAveragePoolMatchesPyTorch) {
  const Shape& xs = shape_of("avgpool/x");
  const int64_t n = xs[0], hw = xs[1] * xs[2], c = xs[3];
  const Floats x = load("avgpool/x"), dy = load("avgpool/dy");
  Floats y(size_t(n * c)), dx(x.size());
  global_avgpool_forward_cpu<float>(n, hw, c, x.data(), y.data());
  global_avgpool_backward_cpu<float>(n, hw, c, dy.data(), dx.data());
  expect_matches("avgpool/y", y);
  expect_matches("avgpool/dx", dx);
}

TEST(Ops, LinearMatchesPyTorch) {
  const Shape& xs = shape_of("linear/x");
  const LinearShape s{xs[0], xs[1], shape_of("linear/w")[0]};
  const Floats x = load("linear/x"), w = load("linear/w"), b = load("linear/b"), dy = load("linear/dy");
  Floats y(size_t(s.rows * s.out)), dx(x.size()), dw(w.size(), 0.f), db(b.size(), 0.f);
  linear_forward_cpu<float>(s, x.data(), w.data(), b.data(), y.data());
  linear_backward_cpu<float>(s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
  expect_matches("linear/y", y);
  expect_matches("linear/dx", dx);
  expect_matches("linear/dw", dw);
  expect_matches("linear/db", db);
}

// Addition's backward is the identity on each input: kd passes dy on to both, as PyTorch does.
TEST(Ops, AddMatchesPyTorch) {
  const Floats a = load("add/a"), b = load("add/b"), dy = load("add/dy");
  Floats y(a.size());
  add_cpu<float>(int64_t(a.size()), a.data(), b.data(), y.data());
  expect_matches("add/y", y);
  expect_matches("add/da", dy);
  expect_matches("add/db", dy);
}

// Squeeze-excite's gate times x, and both gradients (the gate's summed over h, w).
TEST(Ops, ChannelScaleMatchesPyTorch) {
  const Shape& xs = shape_of("channel_scale/x");
  const ChannelScaleShape s{xs[0], xs[1] * xs[2], xs[3]};
  const Floats x = load("channel_scale/x"), gate = load("channel_scale/s"), dy = load("channel_scale/dy");
  Floats y(x.size()), dx(x.size()), ds(gate.size());
  channel_scale_forward_cpu<float>(s, x.data(), gate.data(), y.data());
  channel_scale_backward_cpu<float>(s, x.data(), gate.data(), dy.data(), dx.data(), ds.data());
  expect_matches("channel_scale/y", y);
  expect_matches("channel_scale/dx", dx);
  expect_matches("channel_scale/ds", ds);
}

// A convolution with a bias, as kd's Conv2d runs it: conv2d, then bias_add over the NHWC rows.
TEST(Ops, ConvWithBiasMatchesPyTorch) {
  const std::string p = "conv_bias/";
  const Conv2dShape s = conv_shape(p);
  const Floats x = load(p + "x"), w = oihw_to_ohwi(load(p + "w"), shape_of(p + "w")), b = load(p + "b");
  const Floats dy = load(p + "dy");
  Floats y(size_t(s.y_numel())), dx(x.size()), dw(w.size(), 0.f), db(b.size(), 0.f);
  const int64_t rows = s.n * s.out_h() * s.out_w();
  conv2d_forward_cpu<float>(s, x.data(), w.data(), y.data());
  bias_add_cpu<float>(rows, s.c_out, b.data(), y.data());
  conv2d_backward_data_cpu<float>(s, dy.data(), w.data(), dx.data());
  conv2d_backward_filter_cpu<float>(s, x.data(), dy.data(), dw.data());
  bias_backward_cpu<float>(rows, s.c_out, dy.data(), db.data());
  expect_matches(p + "y", y);
  expect_matches(p + "dx", dx);
  expect_matches(p + "dw", ohwi_to_oihw(dw, shape_of(p + "w")));
  expect_matches(p + "db", db);
}

}  // namespace
}  // namespace kd
