// The weight gradient as im2col + GEMM (kernels/conv_wgrad_im2col.h): on the CPU the algorithm
// (im2col_source's index math, chunks of images, dw +=) against the reference weight gradient on
// stride-2, padded, odd-sized and 3-channel shapes; on a GPU the CUDA path against the CPU.
#include "kernels/conv_wgrad_im2col.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/kernels/conv_shapes.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::conv_shape;

std::vector<Conv2dShape> shapes() {
  return {conv_shape(3, 9, 7, 3, 8, 7, 2, 3),   // a stem: 7x7/2 on 3 channels, odd sizes
          conv_shape(2, 6, 6, 16, 8, 3, 1, 1),  // 3x3 same
          conv_shape(2, 7, 5, 5, 4, 3, 2, 0),   // unpadded, stride 2, rows cut off
          conv_shape(4, 5, 5, 8, 6, 1, 2, 0)};  // 1x1 stride 2: still patches
}

TEST(ConvWgradIm2col, ChunkedIm2colGemmIsTheReferenceWeightGradient) {
  for (const Conv2dShape& s : shapes()) {
    const std::vector<double> x = test::random_vector<double>(size_t(s.x_numel()), 1, -1, 1);
    const std::vector<double> dy = test::random_vector<double>(size_t(s.y_numel()), 2, -1, 1);
    const std::vector<double> dw0 = test::random_vector<double>(size_t(s.w_numel()), 3, -1, 1);  // += onto this
    std::vector<double> want = dw0;
    conv2d_backward_filter_cpu<double>(s, x.data(), dy.data(), want.data());
    const int64_t per_image = s.out_h() * s.out_w() * s.kh * s.kw * s.c_in;
    for (int64_t max_elements : {per_image, 2 * per_image + 1, int64_t(1) << 30}) {  // 1, 2 and all images a chunk
      std::vector<double> got = dw0;
      conv2d_backward_filter_im2col_cpu<double>(s, x.data(), dy.data(), got.data(), max_elements);
      EXPECT_LT(test::rel_l2(got, want), 1e-13) << s.describe() << " chunk of " << max_elements;
    }
  }
}

TEST(ConvWgradIm2col, AppliesToPatchesOfOneGroupOnly) {
  EXPECT_TRUE(conv_wgrad_im2col_applies(conv_shape(1, 8, 8, 3, 64, 7, 2, 3)));
  EXPECT_TRUE(conv_wgrad_im2col_applies(conv_shape(1, 8, 8, 64, 64, 1, 2, 0)));
  EXPECT_FALSE(conv_wgrad_im2col_applies(conv_shape(1, 8, 8, 64, 64, 1, 1, 0))) << "x is its own column matrix";
  EXPECT_FALSE(conv_wgrad_im2col_applies(conv_shape(1, 8, 8, 64, 64, 3, 1, 1, 64))) << "depthwise";
  EXPECT_EQ(conv_images_per_chunk(conv_shape(10, 8, 8, 4, 4, 3, 1, 1), 8 * 8 * 36 * 3 + 5), 3);
  EXPECT_EQ(conv_images_per_chunk(conv_shape(10, 8, 8, 4, 4, 3, 1, 1), 1), 1) << "at least one image";
}

#if KD_HAVE_CUDA
TEST(ConvWgradIm2colCuda, MatchesTheCpuReference) {
  KD_REQUIRE_CUDA();
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  std::vector<Conv2dShape> all = shapes();
  all.push_back(conv_shape(8, 40, 40, 64, 64, 3, 1, 1));  // the student's stage-1 3x3
  for (const Conv2dShape& s : all) {
    const test::Bf16Input x = test::random_bf16(size_t(s.x_numel()), 4), dy = test::random_bf16(size_t(s.y_numel()), 5);
    const std::vector<float> dw0 = test::random_vector<float>(size_t(s.w_numel()), 6, -1, 1);
    std::vector<float> want = dw0;
    conv2d_backward_filter_cpu<float>(s, x.values.data(), dy.values.data(), want.data());
    test::DeviceArray<bf16> d_x(x.bits, 1), d_dy(dy.bits);  // x only 2-byte aligned
    test::DeviceArray<float> d_dw(dw0);
    conv2d_backward_filter_im2col_cuda(h, s, d_x.get(), d_dy.get(), d_dw.get());
    EXPECT_LE(test::rel_l2(d_dw.download(), want), 1e-4) << s.describe();
  }
}
#endif

}  // namespace
}  // namespace kd
