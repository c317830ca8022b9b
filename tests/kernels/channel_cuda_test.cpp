// CUDA channel scale and convolution bias against the CPU references on the same bf16-rounded
// inputs. The pointwise results (y = x * s, dx = dy * s, y + bias) are one fp32 operation on both
// sides, rounded once: bit-equal. The sums (gate gradient, bias gradient) run in another order
// (fp32 partials added in double, against the CPU's double), so they are held to a tolerance, and
// to bitwise reproducibility from run to run. Channel counts cover the 16-byte vector path (c % 8
// == 0), the scalar path (odd c, and a misaligned pointer), and more than one 32-channel tile;
// sizes cover more than one chunk of rows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/channel.h"
#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::rel_l2;

// {n, hw, c}: vectors, scalar (odd c), several channel tiles and many rows per image.
const ChannelScaleShape kShapes[] = {{2, 49, 72}, {3, 25, 5}, {2, 3136, 96}, {4, 1, 960}};

size_t bit_mismatches(const std::vector<bf16>& got, const std::vector<float>& expected) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i].bits != float_to_bf16(expected[i]).bits;
  return bad;
}

std::string describe(const ChannelScaleShape& s, size_t offset) {
  return "n " + std::to_string(s.n) + ", hw " + std::to_string(s.hw) + ", c " + std::to_string(s.c) + ", offset " +
         std::to_string(offset);
}
#endif

TEST(ChannelCuda, ScaleForwardAndBackwardMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const ChannelScaleShape& s : kShapes)
    for (size_t offset : {size_t(0), size_t(1)}) {  // offset 1: 2-byte aligned, the scalar path
      const std::string what = describe(s, offset);
      const size_t numel = size_t(s.numel()), gates = size_t(s.n * s.c);
      const test::Bf16Input x = test::random_bf16(numel, 1), g = test::random_bf16(gates, 2, 0.0, 1.0);
      const test::Bf16Input dy = test::random_bf16(numel, 3);
      std::vector<float> y(numel), dx(numel), ds(gates);
      channel_scale_forward_cpu<float>(s, x.values.data(), g.values.data(), y.data());
      channel_scale_backward_cpu<float>(s, x.values.data(), g.values.data(), dy.values.data(), dx.data(), ds.data());

      DeviceArray<bf16> d_x(x.bits, offset), d_g(g.bits, offset), d_dy(dy.bits, offset);
      DeviceArray<bf16> d_y(numel, offset), d_dx(numel, offset), d_ds(gates, offset);
      d_y.poison(), d_dx.poison(), d_ds.poison();
      channel_scale_forward_cuda(h, s, d_x.get(), d_g.get(), d_y.get());
      channel_scale_backward_cuda(h, s, d_x.get(), d_g.get(), d_dy.get(), d_dx.get(), d_ds.get());
      EXPECT_EQ(bit_mismatches(d_y.download(), y), 0u) << "y, " << what;
      EXPECT_EQ(bit_mismatches(d_dx.download(), dx), 0u) << "dx, " << what;
      const std::vector<bf16> ds1 = d_ds.download();
      EXPECT_LE(rel_l2(test::to_f32(ds1), ds), 8e-3) << "ds (bf16 rounding of the sums), " << what;

      channel_scale_backward_cuda(h, s, d_x.get(), d_g.get(), d_dy.get(), d_dx.get(), d_ds.get());
      const std::vector<bf16> ds2 = d_ds.download();
      size_t differ = 0;
      for (size_t i = 0; i < gates; ++i) differ += ds1[i].bits != ds2[i].bits;
      EXPECT_EQ(differ, 0u) << "ds is reproducible, " << what;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ChannelCuda, ScaleBackwardAllowsDxToAliasDy) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const ChannelScaleShape s{2, 49, 72};
  const size_t numel = size_t(s.numel()), gates = size_t(s.n * s.c);
  const test::Bf16Input x = test::random_bf16(numel, 4), g = test::random_bf16(gates, 5, 0.0, 1.0);
  const test::Bf16Input dy = test::random_bf16(numel, 6);
  std::vector<float> dx(numel), ds(gates);
  channel_scale_backward_cpu<float>(s, x.values.data(), g.values.data(), dy.values.data(), dx.data(), ds.data());
  DeviceArray<bf16> d_x(x.bits), d_g(g.bits), d_dy(dy.bits), d_ds(gates);
  channel_scale_backward_cuda(h, s, d_x.get(), d_g.get(), d_dy.get(), d_dy.get(), d_ds.get());
  EXPECT_EQ(bit_mismatches(d_dy.download(), dx), 0u);
  EXPECT_LE(rel_l2(test::to_f32(d_ds.download()), ds), 8e-3);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ChannelCuda, BiasAddAndBackwardMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  // {rows, c}: the SE and head convolutions ([n, 1, 1, c]), odd channels, many rows.
  const std::pair<int64_t, int64_t> shapes[] = {{4, 1280}, {8, 24}, {300, 5}, {2 * 56 * 56, 40}};
  for (const auto& [rows, c] : shapes)
    for (size_t offset : {size_t(0), size_t(1)}) {
      const std::string what =
          "rows " + std::to_string(rows) + ", c " + std::to_string(c) + ", offset " + std::to_string(offset);
      const size_t numel = size_t(rows * c);
      const test::Bf16Input y0 = test::random_bf16(numel, 7), dy = test::random_bf16(numel, 8);
      const std::vector<float> bias = test::random_vector<float>(size_t(c), 9);
      const std::vector<float> dbias0 = test::random_vector<float>(size_t(c), 10);  // accumulates
      std::vector<float> y = y0.values, dbias = dbias0;
      bias_add_cpu<float>(rows, c, bias.data(), y.data());
      bias_backward_cpu<float>(rows, c, dy.values.data(), dbias.data());

      DeviceArray<bf16> d_y(y0.bits, offset), d_dy(dy.bits, offset);
      DeviceArray<float> d_bias(bias), d_dbias(dbias0);
      bias_add_cuda(h, rows, c, d_bias.get(), d_y.get());
      bias_backward_cuda(h, rows, c, d_dy.get(), d_dbias.get());
      EXPECT_EQ(bit_mismatches(d_y.download(), y), 0u) << "y, " << what;
      EXPECT_LE(rel_l2(d_dbias.download(), dbias), 1e-6) << "dbias, " << what;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ChannelCuda, RejectsEmptyShapes) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  EXPECT_THROW(channel_scale_forward_cuda(h, {0, 1, 1}, nullptr, nullptr, nullptr), Error);
  EXPECT_THROW(bias_add_cuda(h, 1, 0, nullptr, nullptr), Error);
  EXPECT_THROW(bias_backward_cuda(h, -1, 4, nullptr, nullptr), Error);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
