// bf16 <-> fp32 casts: the CPU twins against common.h's conversions, the CUDA versions against
// the CPU twins bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cast.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

// Random values over many magnitudes plus the awkward ones: zeros, infinities, NaN, overflow to
// infinity, subnormals, exact ties.
std::vector<float> awkward_floats(size_t n, uint64_t seed) {
  std::vector<float> v = test::random_vector<float>(n, seed);
  for (size_t i = 0; i < n; ++i) v[i] = std::ldexp(v[i], int(i % 61) - 30);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            3.4e38f, -3.4e38f, 1e-40f, -1e-45f, 1.00390625f /* tie: 1 + 2^-8 */,
                            1.01171875f /* tie, rounds up to even */};
  for (size_t i = 0; i < sizeof specials / sizeof specials[0] && i * 7919 < n; ++i) v[i * 7919] = specials[i];
  return v;
}

TEST(CastCpu, Fp32ToBf16RoundsAsCommonH) {
  const std::vector<float> in = awkward_floats(100003, 1);
  std::vector<bf16> out(in.size());
  cast_f32_to_bf16_cpu(int64_t(in.size()), in.data(), out.data());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i].bits, float_to_bf16(in[i]).bits) << in[i];
  EXPECT_EQ(float_to_bf16(1.00390625f).bits, 0x3f80);  // ties to even: down
  EXPECT_EQ(float_to_bf16(1.01171875f).bits, 0x3f82);  // ties to even: up
  std::vector<float> back(in.size());
  cast_bf16_to_f32_cpu(int64_t(in.size()), out.data(), back.data());
  for (size_t i = 0; i < in.size(); ++i) {
    if (std::isnan(in[i])) {
      ASSERT_TRUE(std::isnan(back[i]));
      continue;
    }
    ASSERT_EQ(back[i], bf16_to_float(out[i]));
    if (std::isfinite(back[i]) && std::fabs(in[i]) > 1e-30f) {
      ASSERT_LE(std::fabs(back[i] - in[i]), std::fabs(in[i]) / 256) << in[i];
    }
  }
}

#if KD_HAVE_CUDA
using test::DeviceArray;
#endif

TEST(CastCuda, Fp32ToBf16MatchesCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const std::vector<float> in = awkward_floats((size_t(3) << 20) + 7, 2);  // several grid strides
  std::vector<bf16> expected(in.size());
  cast_f32_to_bf16_cpu(int64_t(in.size()), in.data(), expected.data());
  DeviceArray<float> din(in);
  DeviceArray<bf16> dout(in.size());
  dout.poison();
  cast_f32_to_bf16_cuda(test::cuda_test_context().cuda_handles(), int64_t(in.size()), din.get(), dout.get());
  const std::vector<bf16> got = dout.download();
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) mismatches += got[i].bits != expected[i].bits;
  EXPECT_EQ(mismatches, 0u);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(CastCuda, Bf16ToFp32MatchesCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  std::vector<bf16> in(size_t(1) << 16);  // every bf16 bit pattern, NaNs included
  for (size_t i = 0; i < in.size(); ++i) in[i].bits = uint16_t(i);
  std::vector<float> expected(in.size());
  cast_bf16_to_f32_cpu(int64_t(in.size()), in.data(), expected.data());
  DeviceArray<bf16> din(in);
  DeviceArray<float> dout(in.size());
  dout.poison();
  cast_bf16_to_f32_cuda(test::cuda_test_context().cuda_handles(), int64_t(in.size()), din.get(), dout.get());
  const std::vector<float> got = dout.download();
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
