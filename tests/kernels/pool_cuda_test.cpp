// Pooling: pool.h's index helpers on the CPU (which outputs cover an input, flat NHWC positions),
// then the CUDA kernels against the CPU reference. Max-pool is a selection and its backward a sum
// in the CPU's order, so both must match the CPU bit for bit (after one bf16 rounding).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/pool.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

MaxPoolShape make(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int64_t stride, int64_t pad, bool zero) {
  MaxPoolShape s;
  s.n = n, s.h = h, s.w = w, s.c = c, s.k = k, s.stride = stride, s.pad = pad, s.pad_with_zero = zero;
  return s;
}

// ---- CPU: the index math the kernels share -------------------------------------------------

TEST(MaxPoolGather, CoverIsExactlyTheOutputsWhoseWindowsHoldTheInput) {
  for (int64_t k = 1; k <= 5; ++k)
    for (int64_t stride = 1; stride <= 4; ++stride)
      for (int64_t pad = 0; pad <= 3; ++pad)
        for (int64_t size = 1; size <= 12; ++size) {
          if (size + 2 * pad < k) continue;
          const int64_t out = (size + 2 * pad - k) / stride + 1;
          for (int64_t i = 0; i < size; ++i) {
            const MaxPoolCover cover = maxpool_cover(i, k, stride, pad, out);
            for (int64_t o = 0; o < out; ++o) {
              const bool holds = o * stride - pad <= i && i < o * stride - pad + k;
              const bool in_cover = o >= cover.first && o <= cover.last;
              ASSERT_EQ(holds, in_cover) << "k " << k << " stride " << stride << " pad " << pad << " size " << size
                                         << " i " << i << " o " << o;
            }
            ASSERT_GE(cover.first, 0);
          }
        }
}

TEST(MaxPoolGather, RowsAndColumnsUseTheirOwnOutputExtent) {
  const MaxPoolShape s = make(1, 9, 4, 1, 3, 2, 1, false);  // out 5 x 2
  EXPECT_EQ(maxpool_cover_rows(s, 8).last, 4);
  EXPECT_EQ(maxpool_cover_cols(s, 3).last, 1);
  EXPECT_EQ(maxpool_cover_cols(s, 3).first, 1);
}

TEST(MaxPoolGather, GatherOutputAddsOnlyWhereTheArgmaxPointsAtTheInput) {
  const int32_t arg[4] = {10, 99, 12, -1};
  const float dy[4] = {1.5f, 2.0f, -3.0f, 4.0f};
  float acc[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  maxpool_gather_output(arg, dy, 10, 4, acc);  // channel ch is input 10 + ch
  EXPECT_EQ(acc[0], 2.5f);
  EXPECT_EQ(acc[1], 1.0f);
  EXPECT_EQ(acc[2], -2.0f);
  EXPECT_EQ(acc[3], 1.0f);
}

TEST(MaxPoolGather, FoldTapKeepsTheFirstMaximumAndMarksPaddingWinners) {
  float best[3];
  int32_t arg[3];
  const float a[3] = {1.0f, -1.0f, 0.5f}, b[3] = {1.0f, -2.0f, 0.75f};
  maxpool_fold_tap(true, a, 20, 3, best, arg);
  maxpool_fold_tap(false, b, 40, 3, best, arg);          // tie, smaller, larger
  maxpool_fold_tap<float>(false, nullptr, -1, 3, best, arg);  // a zero-padding tap
  EXPECT_EQ(arg[0], 20);
  EXPECT_EQ(arg[1], -1);  // 0 > -1
  EXPECT_EQ(arg[2], 42);
  EXPECT_EQ(best[1], 0.0f);
  EXPECT_EQ(best[2], 0.75f);
}

TEST(PoolIndex, NhwcPositionInvertsTheFlatIndex) {
  const int64_t n = 3, h = 4, w = 5, c = 6;
  int64_t i = 0;
  for (int64_t img = 0; img < n; ++img)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < c; ++ch, ++i) {
          const NhwcPosition p = nhwc_position(i, h, w, c);
          ASSERT_TRUE(p.img == img && p.y == y && p.x == x && p.ch == ch) << i;
          ASSERT_EQ(global_avgpool_dy_index(i, h * w, c), img * c + ch) << i;
        }
}

// ---- CUDA against the CPU reference ---------------------------------------------------------

#if KD_HAVE_CUDA
using test::DeviceArray;

const MaxPoolShape kShapes[] = {
    make(2, 7, 8, 3, 3, 2, 1, false),     // PyTorch MaxPool2d(3, 2, 1), odd channels
    make(2, 7, 8, 3, 3, 2, 1, true),      // BiT: zero pad 1
    make(1, 6, 6, 2, 2, 2, 0, false),     // 2x2/2, no overlap
    make(1, 5, 5, 2, 3, 2, 0, true),      // zero mode with no padding
    make(1, 1, 1, 1, 1, 1, 0, false),     // one element
    make(1, 8, 8, 24, 2, 3, 0, false),    // stride > k: some inputs lie in no window
    make(3, 9, 9, 16, 3, 1, 1, false),    // stride 1: every input in up to 9 windows; 16-byte groups
    make(2, 30, 30, 8, 5, 2, 2, true),    // 5x5 windows, zero padding
    make(2, 17, 15, 64, 3, 2, 1, true),   // BiT stem, odd image
    make(8, 56, 56, 64, 3, 2, 1, false),  // several grid strides in the scalar backward
};

std::string describe(const MaxPoolShape& s, size_t offset) {
  return detail::concat("maxpool ", s.k, "/", s.stride, " pad ", s.pad, s.pad_with_zero ? " zeros" : "", " [", s.n,
                        ",", s.h, ",", s.w, ",", s.c, "] offset ", offset);
}

// Whole numbers in [-2, 2]: many ties, and zeros that tie with a zero padding.
std::vector<float> coarse_values(size_t n, uint64_t seed) {
  std::vector<float> v = test::random_vector<float>(n, seed, -2.5, 2.5);
  for (float& x : v) x = float(int(x));
  return v;
}

size_t bf16_mismatches(const std::vector<bf16>& got, const std::vector<float>& expected) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i].bits != float_to_bf16(expected[i]).bits;
  return bad;
}

void check_maxpool_forward(const CudaHandles& h, const MaxPoolShape& s, const std::vector<float>& values,
                           size_t offset) {
  const std::string what = describe(s, offset);
  const std::vector<bf16> bits = test::to_bf16(values);
  const std::vector<float> x = test::to_f32(bits);
  std::vector<float> y(size_t(s.y_numel()));
  std::vector<int32_t> argmax(y.size());
  maxpool_forward_cpu<float>(s, x.data(), y.data(), argmax.data());
  DeviceArray<bf16> d_x(bits, offset), d_y(y.size(), offset), d_y_inference(y.size(), offset);
  DeviceArray<int32_t> d_arg(y.size(), offset);
  d_y.poison(), d_arg.poison(), d_y_inference.poison();
  maxpool_forward_cuda(h, s, d_x.get(), d_y.get(), d_arg.get());
  maxpool_forward_cuda(h, s, d_x.get(), d_y_inference.get(), nullptr);
  EXPECT_EQ(bf16_mismatches(d_y.download(), y), 0u) << what;
  EXPECT_EQ(d_arg.download(), argmax) << what;
  EXPECT_EQ(bf16_mismatches(d_y_inference.download(), y), 0u) << what << " without argmax";
}
#endif

TEST(MaxPoolCuda, ForwardMatchesCpuValuesAndArgmax) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const MaxPoolShape& s : kShapes)
    for (size_t offset : {size_t(0), size_t(1)}) {  // offset 1: misaligned, one channel per thread
      const size_t n = size_t(s.n * s.h * s.w * s.c);
      check_maxpool_forward(h, s, test::random_vector<float>(n, 1 + n), offset);
      check_maxpool_forward(h, s, coarse_values(n, 2 + n), offset);  // ties: first maximum wins
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(MaxPoolCuda, BackwardMatchesCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const MaxPoolShape& s : kShapes)
    for (size_t offset : {size_t(0), size_t(1)}) {
      const std::string what = describe(s, offset);
      const size_t n = size_t(s.n * s.h * s.w * s.c);
      // Coarse inputs: ties and zero-padding winners (argmax -1) in the argmax the gather reads.
      const std::vector<float> x = coarse_values(n, 3 + n);
      std::vector<float> y(size_t(s.y_numel()));
      std::vector<int32_t> argmax(y.size());
      maxpool_forward_cpu<float>(s, x.data(), y.data(), argmax.data());
      const test::Bf16Input dy = test::random_bf16(y.size(), 4 + n);
      std::vector<float> expected(n);
      maxpool_backward_cpu<float>(s, argmax.data(), dy.values.data(), expected.data());
      DeviceArray<int32_t> d_arg(argmax, offset);
      DeviceArray<bf16> d_dy(dy.bits, offset), d_dx(n, offset);
      d_dx.poison();
      maxpool_backward_cuda(h, s, d_arg.get(), d_dy.get(), d_dx.get());
      const std::vector<bf16> got = d_dx.download();
      EXPECT_LE(test::rel_l2(test::to_f32(got), expected), 1e-2) << what;
      EXPECT_EQ(bf16_mismatches(got, expected), 0u) << what;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(GlobalAvgPoolCuda, ForwardAndBackwardMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  struct Case {
    int64_t n, hw, c;
  };
  const Case cases[] = {{3, 10, 4}, {4, 49, 64}, {2, 7, 2048}, {1, 1, 1}, {5, 3, 9}, {2, 4096, 8}, {256, 49, 512}};
  for (const Case& k : cases)
    for (size_t offset : {size_t(0), size_t(1)}) {
      const std::string what = detail::concat("global_avgpool [", k.n, ",", k.hw, ",", k.c, "] offset ", offset);
      const size_t in_n = size_t(k.n * k.hw * k.c), out_n = size_t(k.n * k.c);
      const test::Bf16Input x = test::random_bf16(in_n, 5 + in_n), dy = test::random_bf16(out_n, 6 + out_n);
      std::vector<float> y(out_n), dx(in_n);
      global_avgpool_forward_cpu<float>(k.n, k.hw, k.c, x.values.data(), y.data());
      global_avgpool_backward_cpu<float>(k.n, k.hw, k.c, dy.values.data(), dx.data());

      DeviceArray<bf16> d_x(x.bits, offset), d_y(out_n, offset);
      d_y.poison();
      global_avgpool_forward_cuda(h, k.n, k.hw, k.c, d_x.get(), d_y.get());
      EXPECT_LE(test::rel_l2(test::to_f32(d_y.download()), y), 1e-2) << what;

      DeviceArray<bf16> d_dy(dy.bits, offset), d_dx(in_n, offset);
      d_dx.poison();
      global_avgpool_backward_cuda(h, k.n, k.hw, k.c, d_dy.get(), d_dx.get());
      const std::vector<bf16> got = d_dx.download();
      EXPECT_LE(test::rel_l2(test::to_f32(got), dx), 1e-2) << what;
      EXPECT_EQ(bf16_mismatches(got, dx), 0u) << what;  // dy / hw, rounded once
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
