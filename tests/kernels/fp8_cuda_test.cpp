// FP8 on the GPU: kd's encoder (fp8.h, run in a CUDA kernel) equals the hardware's conversion
// (cuda_fp8.h, cvt.rn.satfinite) on every code's value, every midpoint between neighbouring
// codes and random floats over the whole range; quantize, dequantize and amax equal the CPU
// reference exactly (the same arithmetic on the same inputs).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/fp8.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(Fp8Cuda, KdsEncoderEqualsTheHardwareConversion) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  std::vector<float> x;
  for (int c = 0; c < 256; ++c) {  // every value, and the midpoints to the next code up
    const float v = e4m3_to_float(uint8_t(c));
    if (std::isnan(v)) continue;
    x.push_back(v);
    const float next = e4m3_to_float(uint8_t(c + 1));
    if ((c & 0x7F) < 0x7E && !std::isnan(next)) x.push_back((v + next) / 2);
  }
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> log2_mag(-14.0, 11.0);
  for (int i = 0; i < 100000; ++i) x.push_back(float((rng() & 1 ? -1 : 1) * std::exp2(log2_mag(rng))));
  x.push_back(INFINITY), x.push_back(-INFINITY), x.push_back(1e30f), x.push_back(-0.0f);
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  test::DeviceArray<float> dx(x);
  test::DeviceArray<uint8_t> mine(x.size()), theirs(x.size());
  fp8_quantize_cuda(h, int64_t(x.size()), dx.get(), 1.0f, mine.get());
  fp8_hardware_encode_cuda(h, int64_t(x.size()), dx.get(), theirs.get());
  const std::vector<uint8_t> a = mine.download(), b = theirs.download();
  int differ = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (a[i] != b[i] && differ++ < 10)
      ADD_FAILURE() << x[i] << ": kd " << int(a[i]) << ", hardware " << int(b[i]);
  EXPECT_EQ(differ, 0);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(int(a[i]), int(float_to_e4m3(x[i]))) << x[i] << " (CPU vs GPU)";
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(Fp8Cuda, QuantizeDequantizeAndAmaxEqualTheCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const test::Bf16Input x = test::random_bf16(100003, 5, -6.0, 6.0);  // not a multiple of the block
  const float amax_ref = amax_cpu(int64_t(x.values.size()), x.values.data());
  const float scale = e4m3_scale_for_amax(amax_ref, 1);
  std::vector<uint8_t> q_ref(x.values.size());
  std::vector<float> y_ref(x.values.size());
  fp8_quantize_cpu(int64_t(q_ref.size()), x.values.data(), scale, q_ref.data());
  fp8_dequantize_cpu(int64_t(q_ref.size()), q_ref.data(), scale, y_ref.data());

  test::DeviceArray<bf16> dx(x.bits);
  test::DeviceArray<float> amax(1), y(x.values.size()), dxf(x.values);
  test::DeviceArray<uint8_t> q(x.values.size()), qf(x.values.size());
  amax.poison(), y.poison();
  amax_cuda(h, int64_t(x.values.size()), dx.get(), amax.get());
  fp8_quantize_cuda(h, int64_t(x.values.size()), dx.get(), scale, q.get());
  fp8_quantize_cuda(h, int64_t(x.values.size()), dxf.get(), scale, qf.get());
  fp8_dequantize_cuda(h, int64_t(x.values.size()), q.get(), scale, y.get());
  EXPECT_EQ(amax.download()[0], amax_ref);
  EXPECT_EQ(q.download(), q_ref);
  EXPECT_EQ(qf.download(), q_ref) << "fp32 and bf16 inputs of the same values";
  EXPECT_EQ(y.download(), y_ref);

  // A NaN anywhere makes amax NaN (the calibration then refuses it).
  std::vector<bf16> bits = x.bits;
  bits[77777] = bf16{0x7FC0};
  test::DeviceArray<bf16> with_nan(bits);
  amax_cuda(h, int64_t(bits.size()), with_nan.get(), amax.get());
  EXPECT_TRUE(std::isnan(amax.download()[0]));
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
