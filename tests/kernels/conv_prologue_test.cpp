// The convolution with a scale-shift-ReLU prologue (kernels/conv_prologue.h): the CPU reference
// against a direct sum, both forms; on a GPU, cuDNN's fused graph against the CPU reference for
// the per-channel form (cuDNN's documented prologue: it must run and match) and the per-sample
// form (GroupNorm's): it either runs and matches, or cuDNN refuses it with an error naming the
// prologue, and the test prints which (issue 16 item 1 asks which).
#include "kernels/conv_prologue.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "tests/kernels/conv_shapes.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

Conv2dShape shape(int64_t n, int64_t hw, int64_t c_in, int64_t c_out, int64_t k) {
  Conv2dShape s;
  s.n = n, s.h = hw, s.w = hw + 2, s.c_in = c_in, s.c_out = c_out, s.kh = s.kw = k, s.pad_h = s.pad_w = k / 2;
  return s;
}

TEST(ConvPrologue, CpuReferenceIsTheConvolutionOfTheRectifiedAffineInput) {
  const Conv2dShape s = shape(2, 4, 5, 3, 3);
  const std::vector<double> x = test::random_vector<double>(size_t(s.x_numel()), 1, -1, 1);
  const std::vector<double> w = test::random_vector<double>(size_t(s.w_numel()), 2, -1, 1);
  for (bool per_sample : {false, true}) {
    const size_t rows = per_sample ? size_t(s.n) : 1;
    const std::vector<float> scale = test::random_vector<float>(rows * size_t(s.c_in), 3, 0.5, 2);
    const std::vector<float> shift = test::random_vector<float>(rows * size_t(s.c_in), 4, -0.5, 0.5);
    std::vector<double> y(size_t(s.y_numel()));
    conv2d_prologue_forward_cpu<double>(s, per_sample, x.data(), scale.data(), shift.data(), w.data(), y.data());
    double worst = 0;
    int64_t clipped = 0;
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t p = 0; p < s.out_h(); ++p)
        for (int64_t q = 0; q < s.out_w(); ++q)
          for (int64_t o = 0; o < s.c_out; ++o) {
            const double sum = test::direct_conv_output(
                s, n, p, q, o,
                [&](int64_t i) {
                  const size_t f = size_t((per_sample ? n : 0) * s.c_in + i % s.c_in);
                  const double a = x[size_t(i)] * scale[f] + shift[f];
                  clipped += a < 0;
                  return std::max(a, 0.0);
                },
                [&](int64_t i) { return w[size_t(i)]; });
            worst = std::max(worst, std::fabs(y[size_t(((n * s.out_h() + p) * s.out_w() + q) * s.c_out + o)] - sum));
          }
    EXPECT_LT(worst, 1e-12) << "per_sample " << per_sample;
    EXPECT_GT(clipped, 0) << "the ReLU was exercised";
  }
}

#if KD_HAVE_CUDA
TEST(ConvPrologueCuda, TheFusedGraphMatchesTheCpuOrIsRefusedByName) {
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const Conv2dShape& s : {shape(4, 8, 64, 64, 3), shape(2, 7, 32, 128, 1)})
    for (bool per_sample : {false, true}) {
      const size_t rows = per_sample ? size_t(s.n) : 1;
      const test::Bf16Input x = test::random_bf16(size_t(s.x_numel()), 5, -1, 1);
      const test::Bf16Input w = test::random_bf16(size_t(s.w_numel()), 6, -0.2, 0.2);
      const std::vector<float> scale = test::random_vector<float>(rows * size_t(s.c_in), 7, 0.5, 2);
      const std::vector<float> shift = test::random_vector<float>(rows * size_t(s.c_in), 8, -0.5, 0.5);
      std::vector<float> want(size_t(s.y_numel()));
      conv2d_prologue_forward_cpu<float>(s, per_sample, x.values.data(), scale.data(), shift.data(), w.values.data(),
                                         want.data());
      test::DeviceArray<bf16> d_x(x.bits), d_w(w.bits), d_y(size_t(s.y_numel()));
      test::DeviceArray<float> d_scale(scale), d_shift(shift);
      d_y.poison();
      const std::string form = per_sample ? "per-sample" : "per-channel";
      std::string refused;
      try {
        conv2d_prologue_forward_cuda(h, s, per_sample, d_x.get(), d_scale.get(), d_shift.get(), d_w.get(), d_y.get());
      } catch (const Error& e) {
        refused = e.what();
      }
      std::printf("conv prologue, %s scale and shift, %s: %s\n", form.c_str(), s.describe().c_str(),
                  refused.empty() ? "fused by cuDNN" : ("refused: " + refused).c_str());
      if (!per_sample) {
        // EXPECT and go on: the per-sample answer is printed for every shape either way
        EXPECT_TRUE(refused.empty()) << "cuDNN's documented per-channel prologue: " << refused;
        if (!refused.empty()) continue;
      } else if (!refused.empty()) {
        EXPECT_NE(refused.find("no cuDNN engine for the convolution prologue with per-sample"), std::string::npos)
            << refused;
        continue;
      }
      EXPECT_LE(test::rel_l2(test::to_f32(d_y.download()), want), 2e-2) << form << " " << s.describe();
    }
}
#endif

}  // namespace
}  // namespace kd
