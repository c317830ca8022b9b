// BatchNorm on the GPU against the CPU reference, on the same bf16-rounded inputs. Tolerances
// (relative L2): bf16 outputs (y, dx) 1e-2; fp32 outputs (mean, rstd, running statistics,
// dgamma, dbeta) 1e-5. Outputs are poisoned (NaN) first, so an unwritten element fails.
#include <gtest/gtest.h>

#include <ostream>

#include "kernels/batchnorm.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

struct BnCase {
  int64_t rows, c;
  size_t offset;  // elements in front of x, y, dy, dx: 1 makes them unaligned (scalar kernels)
  const char* what;
};

void PrintTo(const BnCase& k, std::ostream* os) {
  *os << k.what << " [rows " << k.rows << ", c " << k.c << "] offset " << k.offset;
}

class BatchNormCuda : public ::testing::TestWithParam<BnCase> {};

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::random_vector;
using test::rel_l2;

using test::Bf16Input;
using test::random_bf16;

const CudaHandles& handles() { return test::cuda_test_context().cuda_handles(); }

struct BnInputs {
  Bf16Input x;
  std::vector<float> gamma, beta;
};

BnInputs random_inputs(const BatchNormShape& s, uint64_t seed) {
  return {random_bf16(size_t(s.rows * s.c), seed, -1.0, 3.0), random_vector<float>(size_t(s.c), seed + 1, 0.5, 1.5),
          random_vector<float>(size_t(s.c), seed + 2, -0.5, 0.5)};
}
#endif

TEST_P(BatchNormCuda, TrainForwardMatchesCpuAndUpdatesRunningStatistics) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const BnCase k = GetParam();
  const BatchNormShape s{k.rows, k.c};
  const BnInputs in = random_inputs(s, 1);
  const size_t numel = size_t(s.rows * s.c), c = size_t(s.c);
  const std::vector<float> rm0 = random_vector<float>(c, 4), rv0 = random_vector<float>(c, 5, 0.5, 2.0);
  std::vector<float> y_ref(numel), mean_ref(c), rstd_ref(c), rm_ref = rm0, rv_ref = rv0;
  batchnorm_forward_train_cpu<float>(s, 1e-5f, 0.1f, in.x.values.data(), in.gamma.data(), in.beta.data(),
                                     y_ref.data(), mean_ref.data(), rstd_ref.data(), rm_ref.data(), rv_ref.data());

  DeviceArray<bf16> x(in.x.bits, k.offset), y(numel, k.offset);
  DeviceArray<float> gamma(in.gamma), beta(in.beta), mean(c), rstd(c), rm(rm0), rv(rv0);
  y.poison();
  mean.poison();
  rstd.poison();
  batchnorm_forward_train_cuda(handles(), s, 1e-5f, 0.1f, x.get(), gamma.get(), beta.get(), y.get(), mean.get(),
                               rstd.get(), rm.get(), rv.get());
  EXPECT_LE(rel_l2(test::to_f32(y.download()), y_ref), 1e-2)
      << test::mismatches(test::to_f32(y.download()), y_ref, 2e-2, 2e-2, size_t(s.c));
  EXPECT_LE(rel_l2(mean.download(), mean_ref), 1e-5);
  EXPECT_LE(rel_l2(rstd.download(), rstd_ref), 1e-5);
  EXPECT_LE(rel_l2(rm.download(), rm_ref), 1e-5);
  EXPECT_LE(rel_l2(rv.download(), rv_ref), 1e-5);

  // Without running statistics: the same outputs, nothing else touched.
  y.poison();
  batchnorm_forward_train_cuda(handles(), s, 1e-5f, 0.1f, x.get(), gamma.get(), beta.get(), y.get(), mean.get(),
                               rstd.get(), nullptr, nullptr);
  EXPECT_LE(rel_l2(test::to_f32(y.download()), y_ref), 1e-2)
      << test::mismatches(test::to_f32(y.download()), y_ref, 2e-2, 2e-2, size_t(s.c));
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(BatchNormCuda, EvalForwardUsesRunningStatistics) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const BnCase k = GetParam();
  const BatchNormShape s{k.rows, k.c};
  const BnInputs in = random_inputs(s, 6);
  const size_t numel = size_t(s.rows * s.c), c = size_t(s.c);
  const std::vector<float> rm = random_vector<float>(c, 7), rv = random_vector<float>(c, 8, 0.1, 3.0);
  std::vector<float> y_ref(numel);
  batchnorm_forward_eval_cpu<float>(s, 1e-5f, in.x.values.data(), in.gamma.data(), in.beta.data(), rm.data(),
                                    rv.data(), y_ref.data());
  DeviceArray<bf16> x(in.x.bits, k.offset), y(numel, k.offset);
  DeviceArray<float> gamma(in.gamma), beta(in.beta), drm(rm), drv(rv);
  y.poison();
  batchnorm_forward_eval_cuda(handles(), s, 1e-5f, x.get(), gamma.get(), beta.get(), drm.get(), drv.get(), y.get());
  EXPECT_LE(rel_l2(test::to_f32(y.download()), y_ref), 1e-2)
      << test::mismatches(test::to_f32(y.download()), y_ref, 2e-2, 2e-2, size_t(s.c));
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(BatchNormCuda, BackwardMatchesCpuAndAccumulatesParameterGradients) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const BnCase k = GetParam();
  const BatchNormShape s{k.rows, k.c};
  const BnInputs in = random_inputs(s, 9);
  const Bf16Input dy = random_bf16(size_t(s.rows * s.c), 10, -1.0, 1.0);
  const size_t numel = size_t(s.rows * s.c), c = size_t(s.c);
  std::vector<float> y_ref(numel), mean_ref(c), rstd_ref(c);
  batchnorm_forward_train_cpu<float>(s, 1e-5f, 0.1f, in.x.values.data(), in.gamma.data(), in.beta.data(),
                                     y_ref.data(), mean_ref.data(), rstd_ref.data(), nullptr, nullptr);
  const std::vector<float> dgamma0 = random_vector<float>(c, 11), dbeta0 = random_vector<float>(c, 12);
  std::vector<float> dx_ref(numel), dgamma_ref = dgamma0, dbeta_ref = dbeta0;
  batchnorm_backward_cpu<float>(s, in.x.values.data(), in.gamma.data(), mean_ref.data(), rstd_ref.data(),
                                dy.values.data(), dx_ref.data(), dgamma_ref.data(), dbeta_ref.data());

  DeviceArray<bf16> x(in.x.bits, k.offset), ddy(dy.bits, k.offset), dx(numel, k.offset);
  DeviceArray<float> gamma(in.gamma), mean(mean_ref), rstd(rstd_ref), dgamma(dgamma0), dbeta(dbeta0);
  dx.poison();
  batchnorm_backward_cuda(handles(), s, x.get(), gamma.get(), mean.get(), rstd.get(), ddy.get(), dx.get(),
                          dgamma.get(), dbeta.get());
  EXPECT_LE(rel_l2(test::to_f32(dx.download()), dx_ref), 1e-2)
      << test::mismatches(test::to_f32(dx.download()), dx_ref, 2e-2, 2e-2, size_t(s.c));
  EXPECT_LE(rel_l2(dgamma.download(), dgamma_ref), 1e-5);
  EXPECT_LE(rel_l2(dbeta.download(), dbeta_ref), 1e-5);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormCuda,
                         ::testing::Values(BnCase{2 * 56 * 56, 64, 0, "resnet_stage1"},
                                           BnCase{2 * 7 * 7, 2048, 0, "wide_few_rows"},
                                           BnCase{200003, 8, 0, "many_rows_many_chunks"},
                                           BnCase{300, 5, 0, "channels_not_multiple_of_8"},
                                           BnCase{2, 16, 0, "two_rows"},
                                           BnCase{1000, 264, 0, "partial_channel_tile"},
                                           BnCase{4096, 64, 1, "unaligned_scalar"}),
                         [](const ::testing::TestParamInfo<BnCase>& info) { return std::string(info.param.what); });

}  // namespace
}  // namespace kd
