// The FP8 forward convolution (kernels/conv_fp8.h): the CPU reference against a direct sum over
// decoded codes, and cuDNN's FP8 graph against the CPU reference (GPU only; Hopper or newer).
#include "kernels/conv_fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/fp8.h"
#include "tests/kernels/conv_shapes.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

// Random E4M3 codes of values in [-max, max] (never the NaN code).
std::vector<uint8_t> random_codes(int64_t n, uint64_t seed, float max) {
  const std::vector<float> v = test::random_vector<float>(size_t(n), seed, -max, max);
  std::vector<uint8_t> q(v.size());
  for (size_t i = 0; i < v.size(); ++i) q[i] = float_to_e4m3(v[i]);
  return q;
}

Conv2dShape shape(int64_t n, int64_t hw, int64_t c_in, int64_t c_out, int64_t k, int64_t stride) {
  Conv2dShape s;
  s.n = n, s.h = hw, s.w = hw + 1, s.c_in = c_in, s.c_out = c_out, s.kh = s.kw = k;
  s.stride_h = s.stride_w = stride, s.pad_h = s.pad_w = k / 2;
  return s;
}

TEST(ConvFp8, CpuReferenceIsTheDescaledSumOfDecodedProducts) {
  const Conv2dShape s = shape(2, 5, 16, 8, 3, 2);
  const std::vector<uint8_t> x = random_codes(s.x_numel(), 1, 100), w = random_codes(s.w_numel(), 2, 100);
  const std::vector<float> descale = test::random_vector<float>(size_t(s.c_out), 3, 0.001f, 0.01f);
  std::vector<float> y(size_t(s.y_numel()));
  conv2d_fp8_forward_cpu(s, x.data(), w.data(), descale.data(), y.data());
  double worst = 0;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t p = 0; p < s.out_h(); ++p)
      for (int64_t q = 0; q < s.out_w(); ++q)
        for (int64_t o = 0; o < s.c_out; ++o) {
          const double sum = test::direct_conv_output(
              s, n, p, q, o, [&](int64_t i) { return e4m3_to_float(x[size_t(i)]); },
              [&](int64_t i) { return e4m3_to_float(w[size_t(i)]); });
          const double want = sum * descale[size_t(o)];
          const double got = y[size_t(((n * s.out_h() + p) * s.out_w() + q) * s.c_out + o)];
          worst = std::max(worst, std::fabs(got - want) / (std::fabs(want) + 1.0));
        }
  EXPECT_LT(worst, 1e-5);
  EXPECT_THROW(conv2d_fp8_forward_cpu(
                   [] {
                     Conv2dShape g = shape(1, 4, 16, 16, 3, 1);
                     g.groups = 2;
                     return g;
                   }(),
                   x.data(), w.data(), descale.data(), y.data()),
               Error);
}

TEST(ConvFp8Cuda, MatchesTheCpuReference) {
#if KD_HAVE_CUDA
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  if (!cuda_device_has_fp8(h.device)) GTEST_SKIP() << "no FP8 tensor cores on this device";
  for (const Conv2dShape& s : {shape(4, 14, 64, 64, 3, 1), shape(3, 9, 32, 64, 1, 1), shape(2, 15, 16, 48, 3, 2),
                               shape(1, 1, 128, 256, 1, 1)}) {
    const std::vector<uint8_t> x = random_codes(s.x_numel(), 11, 8), w = random_codes(s.w_numel(), 12, 8);
    const std::vector<float> descale = test::random_vector<float>(size_t(s.c_out), 13, 0.01f, 0.1f);
    std::vector<float> want(size_t(s.y_numel()));
    conv2d_fp8_forward_cpu(s, x.data(), w.data(), descale.data(), want.data());
    test::DeviceArray<uint8_t> dx(x), dw(w);
    test::DeviceArray<float> dd(descale);
    test::DeviceArray<bf16> dy(size_t(s.y_numel()));
    dy.poison();
    conv2d_fp8_forward_cuda(h, s, dx.get(), dw.get(), dd.get(), dy.get());
    const std::vector<bf16> got16 = dy.download();
    std::vector<float> got(got16.size());
    for (size_t i = 0; i < got.size(); ++i) got[i] = bf16_to_float(got16[i]);
    // Exact products, fp32 sums in another order, one bf16 rounding of the result.
    EXPECT_LT(test::rel_l2(got, want), 4e-3) << s.describe();
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
