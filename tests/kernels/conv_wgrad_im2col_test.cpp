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

// What the CUDA kernel's 16-byte copies rely on: with c_in % 8 == 0, the 8 columns from a
// multiple of 8 on come from one tap, so their sources are 8 consecutive elements of x (or all in
// the padding). Every row and column block of padded, strided shapes.
TEST(ConvWgradIm2col, EightChannelsFromAMultipleOfEightAreContiguousInX) {
  for (const Conv2dShape& s : {conv_shape(2, 6, 6, 16, 8, 3, 1, 1), conv_shape(2, 7, 5, 8, 4, 3, 2, 2),
                               conv_shape(3, 9, 7, 24, 8, 7, 2, 3)}) {
    const int64_t rows = (s.n - 1) * s.out_h() * s.out_w(), K = s.kh * s.kw * s.c_in;  // images 1 .. n - 1
    int64_t padded = 0, inside = 0;
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t k = 0; k < K; k += 8) {
        const int64_t first = im2col_source(s, 1, row, k);
        (first < 0 ? padded : inside) += 1;
        for (int64_t j = 1; j < 8; ++j) {
          ASSERT_EQ(im2col_source(s, 1, row, k + j), first < 0 ? -1 : first + j)
              << s.describe() << " row " << row << " column " << k + j;
        }
        if (first >= 0) {
          ASSERT_EQ(first % 8, 0) << "16-byte aligned in an aligned x";
        }
      }
    EXPECT_GT(padded, 0) << s.describe();
    EXPECT_GT(inside, 0) << s.describe();
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
    for (size_t offset : {0, 1}) {  // 16-byte copies where c_in % 8 == 0; x only 2-byte aligned: per element
      test::DeviceArray<bf16> d_x(x.bits, offset), d_dy(dy.bits);
      test::DeviceArray<float> d_dw(dw0);
      conv2d_backward_filter_im2col_cuda(h, s, d_x.get(), d_dy.get(), d_dw.get());
      EXPECT_LE(test::rel_l2(d_dw.download(), want), 1e-4) << s.describe() << ", x offset " << offset;
    }
  }
}
#endif

}  // namespace
}  // namespace kd
