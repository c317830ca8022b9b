// SyncBatchNorm's stages on the GPU: a bf16 batch split over "ranks" of unequal size, the
// collectives done by hand (moments gathered in rank order in one device buffer, gradient sums
// added on the host), against the CPU's single-batch BatchNorm of the whole batch on the same
// bf16-rounded values. Tolerances (relative L2): y and dx 1e-2 (bf16), statistics, running
// statistics and the rank-summed dgamma, dbeta 1e-5. Every rank's statistics agree bit for bit.
#include <gtest/gtest.h>

#include <numeric>
#include <ostream>

#include "kernels/batchnorm.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

struct SyncCase {
  int64_t c;
  std::vector<int64_t> rank_rows;
  const char* what;
};

void PrintTo(const SyncCase& k, std::ostream* os) {
  *os << k.what << " [c " << k.c << ", " << k.rank_rows.size() << " ranks]";
}

class BatchNormSyncCuda : public ::testing::TestWithParam<SyncCase> {};

TEST_P(BatchNormSyncCuda, RanksTogetherMatchTheWholeBatchOnTheCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  using test::DeviceArray;
  const SyncCase k = GetParam();
  const int64_t c = k.c, ranks = int64_t(k.rank_rows.size());
  const int64_t rows = std::accumulate(k.rank_rows.begin(), k.rank_rows.end(), int64_t(0));
  const size_t numel = size_t(rows * c), uc = size_t(c);
  const test::Bf16Input x = test::random_bf16(numel, 1, -1.0, 3.0), dy = test::random_bf16(numel, 2, -1.0, 1.0);
  const std::vector<float> gamma = test::random_vector<float>(uc, 3, 0.5, 1.5),
                           beta = test::random_vector<float>(uc, 4, -0.5, 0.5),
                           rm0 = test::random_vector<float>(uc, 5), rv0 = test::random_vector<float>(uc, 6, 0.5, 2.0);

  // The whole batch on the CPU.
  std::vector<float> y_ref(numel), mean_ref(uc), rstd_ref(uc), rm_ref = rm0, rv_ref = rv0;
  batchnorm_forward_train_cpu<float>({rows, c}, 1e-5f, 0.1f, x.values.data(), gamma.data(), beta.data(),
                                     y_ref.data(), mean_ref.data(), rstd_ref.data(), rm_ref.data(), rv_ref.data());
  std::vector<float> dx_ref(numel), dgamma_ref(uc, 0.0f), dbeta_ref(uc, 0.0f);
  batchnorm_backward_cpu<float>({rows, c}, x.values.data(), gamma.data(), mean_ref.data(), rstd_ref.data(),
                                dy.values.data(), dx_ref.data(), dgamma_ref.data(), dbeta_ref.data());

  // The ranks on the GPU, one after another on one stream.
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t stride = batchnorm_moments_size(c);
  DeviceArray<float> d_gamma(gamma), d_beta(beta);
  DeviceArray<double> gathered(size_t(ranks * stride));
  gathered.poison();
  struct Rank {
    std::unique_ptr<DeviceArray<bf16>> x, dy, y, dx;
    std::unique_ptr<DeviceArray<float>> mean, rstd, rm, rv, dgamma, dbeta;
    std::unique_ptr<DeviceArray<double>> sums, sums_copy, total_count;
    BatchNormShape shape;
  };
  std::vector<Rank> rs(static_cast<size_t>(ranks));
  int64_t first = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    Rank& R = rs[size_t(r)];
    R.shape = {k.rank_rows[size_t(r)], c};
    // This rank's rows [first, first + rows): `first` moves on only after the uploads (the first
    // GPU run found it moved before them, so every rank read the next rank's rows).
    const auto slice = [&](const std::vector<bf16>& v) {
      return std::vector<bf16>(v.begin() + first * c, v.begin() + (first + R.shape.rows) * c);
    };
    const size_t n = size_t(R.shape.rows * c);
    R.x = std::make_unique<DeviceArray<bf16>>(slice(x.bits));
    R.dy = std::make_unique<DeviceArray<bf16>>(slice(dy.bits));
    R.y = std::make_unique<DeviceArray<bf16>>(n);
    R.dx = std::make_unique<DeviceArray<bf16>>(n);
    R.mean = std::make_unique<DeviceArray<float>>(uc);
    R.rstd = std::make_unique<DeviceArray<float>>(uc);
    R.rm = std::make_unique<DeviceArray<float>>(rm0);
    R.rv = std::make_unique<DeviceArray<float>>(rv0);
    R.dgamma = std::make_unique<DeviceArray<float>>(std::vector<float>(uc, 0.0f));
    R.dbeta = std::make_unique<DeviceArray<float>>(std::vector<float>(uc, 0.0f));
    R.sums = std::make_unique<DeviceArray<double>>(size_t(batchnorm_grad_sums_size(c)));
    R.sums_copy = std::make_unique<DeviceArray<double>>(size_t(batchnorm_grad_sums_size(c)));
    R.total_count = std::make_unique<DeviceArray<double>>(1);
    R.y->poison(), R.dx->poison(), R.mean->poison(), R.rstd->poison(), R.sums_copy->poison();
    batchnorm_moments_cuda(h, R.shape, R.x->get(), gathered.get() + r * stride);
    first += R.shape.rows;
  }
  // Stage by stage, so a failure names the stage: each rank's moments against the CPU's on its
  // rows (rel. L2 1e-6: float partials, double totals), then every rank's combination.
  const std::vector<double> gathered_gpu = gathered.download();
  std::vector<double> gathered_cpu(gathered_gpu.size());
  first = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    batchnorm_moments_cpu<float>(rs[size_t(r)].shape, x.values.data() + first * c, gathered_cpu.data() + r * stride);
    first += rs[size_t(r)].shape.rows;
    const auto part = [&](const std::vector<double>& v) {
      return std::vector<double>(v.begin() + r * stride, v.begin() + (r + 1) * stride);
    };
    ASSERT_LE(test::rel_l2(part(gathered_gpu), part(gathered_cpu)), 1e-6)
        << "rank " << r << "'s moments [count, mean[c], m2[c]]: "
        << test::mismatches(part(gathered_gpu), part(gathered_cpu), 1e-6, 1e-6, size_t(stride));
  }
  std::vector<double> total(size_t(batchnorm_grad_sums_size(c)), 0.0);
  for (Rank& R : rs) {
    batchnorm_finish_moments_cuda(h, c, ranks, gathered.get(), 1e-5f, 0.1f, R.mean->get(), R.rstd->get(),
                                  R.total_count->get(), R.rm->get(), R.rv->get());
    ASSERT_LE(test::rel_l2(R.mean->download(), mean_ref), 1e-5) << "the combined moments' mean";
    batchnorm_normalize_cuda(h, R.shape, R.x->get(), R.mean->get(), R.rstd->get(), d_gamma.get(), d_beta.get(),
                             R.y->get());
    batchnorm_grad_sums_cuda(h, R.shape, R.x->get(), d_gamma.get(), R.mean->get(), R.rstd->get(), R.dy->get(),
                             R.sums->get(), R.sums_copy->get());
    const std::vector<double> local = R.sums->download();
    EXPECT_EQ(R.sums_copy->download(), local);
    for (size_t i = 0; i < total.size(); ++i) total[i] += local[i];
  }
  DeviceArray<double> d_total(total);
  std::vector<float> y, dx, dgamma(uc, 0.0f), dbeta(uc, 0.0f);
  for (Rank& R : rs) {
    batchnorm_backward_from_sums_cuda(h, R.shape, R.x->get(), d_gamma.get(), R.mean->get(), R.rstd->get(),
                                      R.dy->get(), R.sums->get(), d_total.get(), R.total_count->get(), R.dx->get(),
                                      R.dgamma->get(), R.dbeta->get());
    EXPECT_EQ(R.total_count->download()[0], double(rows));
    EXPECT_EQ(R.mean->download(), rs[0].mean->download());
    EXPECT_EQ(R.rstd->download(), rs[0].rstd->download());
    EXPECT_EQ(R.rm->download(), rs[0].rm->download());
    EXPECT_EQ(R.rv->download(), rs[0].rv->download());
    const std::vector<float> ry = test::to_f32(R.y->download()), rdx = test::to_f32(R.dx->download());
    y.insert(y.end(), ry.begin(), ry.end());
    dx.insert(dx.end(), rdx.begin(), rdx.end());
    const std::vector<float> g = R.dgamma->download(), b = R.dbeta->download();
    for (size_t i = 0; i < uc; ++i) dgamma[i] += g[i], dbeta[i] += b[i];
  }
  EXPECT_LE(test::rel_l2(rs[0].mean->download(), mean_ref), 1e-5);
  EXPECT_LE(test::rel_l2(rs[0].rstd->download(), rstd_ref), 1e-5);
  EXPECT_LE(test::rel_l2(rs[0].rm->download(), rm_ref), 1e-5);
  EXPECT_LE(test::rel_l2(rs[0].rv->download(), rv_ref), 1e-5);
  EXPECT_LE(test::rel_l2(y, y_ref), 1e-2) << test::mismatches(y, y_ref, 2e-2, 2e-2, uc);
  EXPECT_LE(test::rel_l2(dx, dx_ref), 1e-2) << test::mismatches(dx, dx_ref, 2e-2, 2e-2, uc);
  EXPECT_LE(test::rel_l2(dgamma, dgamma_ref), 1e-5);
  EXPECT_LE(test::rel_l2(dbeta, dbeta_ref), 1e-5);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormSyncCuda,
                         ::testing::Values(SyncCase{5, {100, 37, 163}, "channels_not_multiple_of_8"},
                                           SyncCase{64, {2 * 56 * 56, 3001, 17}, "resnet_stage1_uneven"},
                                           SyncCase{2048, {98, 2}, "wide_two_rows_on_a_rank"},
                                           SyncCase{264, {1000}, "one_rank"}),
                         [](const ::testing::TestParamInfo<SyncCase>& info) { return std::string(info.param.what); });

}  // namespace
}  // namespace kd
