// Weight standardisation on the GPU against the CPU reference on the same fp32 master weights.
// Tolerances (relative L2): the bf16 w_hat 1e-2 against the CPU's fp32 w_hat; mean, rstd and
// dw (all fp32) 1e-5. Outputs are poisoned (NaN) first; dw starts from non-zero values.
#include <gtest/gtest.h>

#include <ostream>

#include "kernels/weight_std.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

struct WsCase {
  int64_t c_out, k;
  size_t offset;  // elements in front of every array: 1 makes them unaligned (scalar kernels)
  const char* what;
};

void PrintTo(const WsCase& k, std::ostream* os) {
  *os << k.what << " [c_out " << k.c_out << ", k " << k.k << "] offset " << k.offset;
}

class WeightStdCuda : public ::testing::TestWithParam<WsCase> {};

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::random_vector;
using test::rel_l2;

const CudaHandles& handles() { return test::cuda_test_context().cuda_handles(); }
#endif

TEST_P(WeightStdCuda, ForwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const WsCase k = GetParam();
  const size_t n = size_t(k.c_out * k.k), rows = size_t(k.c_out);
  const std::vector<float> w = random_vector<float>(n, 1, -0.3, 0.7);
  std::vector<float> w_hat_ref(n), mean_ref(rows), rstd_ref(rows);
  weight_std_forward_cpu<float>(k.c_out, k.k, 1e-8f, w.data(), w_hat_ref.data(), mean_ref.data(), rstd_ref.data());
  DeviceArray<float> dw(w, k.offset), mean(rows, k.offset), rstd(rows, k.offset);
  DeviceArray<bf16> w_hat(n, k.offset);
  w_hat.poison();
  mean.poison();
  rstd.poison();
  weight_std_forward_cuda(handles(), k.c_out, k.k, 1e-8f, dw.get(), w_hat.get(), mean.get(), rstd.get());
  EXPECT_LE(rel_l2(test::to_f32(w_hat.download()), w_hat_ref), 1e-2);
  EXPECT_LE(rel_l2(mean.download(), mean_ref), 1e-5);
  EXPECT_LE(rel_l2(rstd.download(), rstd_ref), 1e-5);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(WeightStdCuda, BackwardMatchesCpuAndAccumulates) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const WsCase k = GetParam();
  const size_t n = size_t(k.c_out * k.k), rows = size_t(k.c_out);
  const std::vector<float> w = random_vector<float>(n, 2, -0.3, 0.7), g = random_vector<float>(n, 3);
  std::vector<float> w_hat(n), mean_ref(rows), rstd_ref(rows);
  weight_std_forward_cpu<float>(k.c_out, k.k, 1e-8f, w.data(), w_hat.data(), mean_ref.data(), rstd_ref.data());
  const std::vector<float> dw0 = random_vector<float>(n, 4);
  std::vector<float> dw_ref = dw0;
  weight_std_backward_cpu<float>(k.c_out, k.k, w.data(), mean_ref.data(), rstd_ref.data(), g.data(), dw_ref.data());
  DeviceArray<float> dw_master(w, k.offset), mean(mean_ref, k.offset), rstd(rstd_ref, k.offset), dg(g, k.offset),
      dw(dw0, k.offset);
  weight_std_backward_cuda(handles(), k.c_out, k.k, dw_master.get(), mean.get(), rstd.get(), dg.get(), dw.get());
  EXPECT_LE(rel_l2(dw.download(), dw_ref), 1e-5);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Shapes, WeightStdCuda,
                         ::testing::Values(WsCase{256, 3 * 3 * 512, 0, "bit_3x3x512"},        // 256-thread blocks
                                           WsCase{128, 3 * 3 * 64, 0, "bit_3x3x64"},          // 64-thread blocks
                                           WsCase{64, 7 * 7 * 3, 0, "stem_k_not_multiple_of_4"},
                                           WsCase{5, 2049, 0, "long_odd_rows"},               // scalar, 256 threads
                                           WsCase{3, 4, 0, "tiny"},
                                           WsCase{96, 1024, 1, "unaligned_scalar"}),
                         [](const ::testing::TestParamInfo<WsCase>& info) { return std::string(info.param.what); });

}  // namespace
}  // namespace kd
