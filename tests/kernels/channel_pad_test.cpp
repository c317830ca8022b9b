// Channel padding and slicing (kernels/channel_pad.h): the index math and the CPU reference
// against explicit loops, round trips, errors; the CUDA kernels against the CPU reference (bf16
// activations and fp32 gradients, bit for bit: they only move values).
#include "kernels/channel_pad.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(ChannelPad, IndexMathMapsEveryRealValueOnceAndLeavesThePaddingZero) {
  for (int64_t c : {1, 3, 5, 8})
    for (int64_t c_pad : {c, c + 1, int64_t(8), int64_t(16)}) {
      if (c_pad < c) continue;
      const int64_t rows = 7;
      std::vector<int> hit(size_t(rows * c), 0);
      for (int64_t i = 0; i < rows * c_pad; ++i) {
        const int64_t from = channel_pad_source(i, c, c_pad);
        if (i % c_pad < c) {
          ASSERT_EQ(from, (i / c_pad) * c + i % c_pad);
          ++hit[size_t(from)];
          ASSERT_EQ(channel_slice_source(from, c, c_pad), i) << "slice inverts pad";
        } else {
          ASSERT_EQ(from, -1);
        }
      }
      for (int h : hit) ASSERT_EQ(h, 1);
    }
}

TEST(ChannelPad, CpuPadsWithZerosAndSlicesBack) {
  const int64_t rows = 2 * 5 * 3, c = 3, c_pad = 8;  // an NHWC [2, 5, 3, 3] image batch
  const std::vector<float> x = test::random_vector<float>(size_t(rows * c), 31);
  std::vector<float> padded(size_t(rows * c_pad), -7.0f), back(x.size(), -7.0f);
  pad_channels_cpu(rows, c, c_pad, x.data(), padded.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c_pad; ++j)
      ASSERT_EQ(padded[size_t(r * c_pad + j)], j < c ? x[size_t(r * c + j)] : 0.0f) << "row " << r << ", channel " << j;
  slice_channels_cpu(rows, c, c_pad, padded.data(), back.data());
  EXPECT_EQ(back, x);
  std::vector<double> xd(x.begin(), x.end()), pd(size_t(rows * c_pad));
  pad_channels_cpu(rows, c, c_pad, xd.data(), pd.data());
  EXPECT_EQ(pd[size_t(c_pad + 1)], xd[size_t(c + 1)]);
}

TEST(ChannelPad, BadSizesAreNamedErrors) {
  float v = 0;
  const std::string msg = test::error_of([&] { pad_channels_cpu<float>(1, 8, 3, &v, &v); });
  EXPECT_NE(msg.find("pad_channels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c_pad 3"), std::string::npos) << msg;
  EXPECT_THROW(slice_channels_cpu<float>(1, 0, 8, &v, &v), Error);
  EXPECT_THROW(pad_channels_cpu<float>(-1, 3, 8, &v, &v), Error);
}

TEST(ChannelPadCuda, MatchesTheCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t c : {1, 3, 5}) {
    const int64_t rows = 1000 + c, c_pad = 8;  // the grid-stride loop's tail, odd sizes
    const test::Bf16Input x = test::random_bf16(size_t(rows * c), 41 + uint64_t(c), -2.0, 2.0);
    std::vector<float> want(size_t(rows * c_pad));
    pad_channels_cpu(rows, c, c_pad, x.values.data(), want.data());
    test::DeviceArray<bf16> dx(x.bits), dpad(size_t(rows * c_pad)), dback(size_t(rows * c));
    dpad.poison();
    dback.poison();
    pad_channels_cuda(h, rows, c, c_pad, dx.get(), dpad.get());
    EXPECT_EQ(test::to_f32(dpad.download()), want) << "c " << c;
    slice_channels_cuda(h, rows, c, c_pad, dpad.get(), dback.get());
    const std::vector<bf16> back = dback.download();
    EXPECT_EQ(std::memcmp(back.data(), x.bits.data(), back.size() * sizeof(bf16)), 0) << "c " << c;

    // fp32 (weight gradients): slice of a padded gradient.
    const std::vector<float> g = test::random_vector<float>(size_t(rows * c_pad), 43);
    std::vector<float> g_want(size_t(rows * c));
    slice_channels_cpu(rows, c, c_pad, g.data(), g_want.data());
    test::DeviceArray<float> dg(g), dg_sliced(size_t(rows * c));
    slice_channels_cuda(h, rows, c, c_pad, dg.get(), dg_sliced.get());
    EXPECT_EQ(dg_sliced.download(), g_want);
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
