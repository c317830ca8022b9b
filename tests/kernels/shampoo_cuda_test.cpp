// Shampoo's CUDA kernels against the CPU reference: batched statistics over the blocks of one
// block row, the batched Newton root (against the double eigen root with shampoo_test.cpp's
// bounds, and against the CPU Newton iteration's iteration counts) including identity padding,
// zero and NaN matrices, accepting roots, direction, Frobenius norms and grafting.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/shampoo.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/shampoo_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

#if KD_HAVE_CUDA
using test::DeviceArray;

template <typename T>
std::vector<T> slice(const std::vector<T>& v, size_t at, size_t count) {
  return std::vector<T>(v.begin() + long(at), v.begin() + long(at + count));
}
#endif

TEST(ShampooCuda, StatsUpdateMatchesCpuOverTheBlocksOfABlockRow) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  // Three 10 x 12 blocks side by side in a 10 x 40 gradient: g_stride 12, ldg 40.
  const int64_t rows = 10, cols = 12, ldg = 40, batch = 3;
  const std::vector<float> g = random_vector<float>(size_t(rows * ldg), 1);
  for (float beta2 : {0.95f, 1.0f}) {
    std::vector<float> l = random_vector<float>(size_t(batch * rows * rows), 2);
    std::vector<float> r = random_vector<float>(size_t(batch * cols * cols), 3);
    DeviceArray<float> d_g(g), d_l(l), d_r(r);
    shampoo_stats_update_cuda(h, batch, rows, cols, d_g.get(), ldg, cols, beta2, d_l.get(), d_r.get());
    for (int64_t b = 0; b < batch; ++b)
      shampoo_stats_update_cpu<float>(rows, cols, g.data() + b * cols, ldg, beta2, l.data() + b * rows * rows,
                                      r.data() + b * cols * cols);
    EXPECT_LE(rel_l2(d_l.download(), l), 1e-5) << "L, beta2 " << beta2;
    EXPECT_LE(rel_l2(d_r.download(), r), 1e-5) << "R, beta2 " << beta2;
    // A null side is skipped.
    const std::vector<float> r_now = d_r.download();
    shampoo_stats_update_cuda(h, batch, rows, cols, d_g.get(), ldg, cols, beta2, d_l.get(), nullptr);
    EXPECT_EQ(d_r.download(), r_now);
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ShampooCuda, BatchedNewtonRootMatchesTheReference) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t n = 96, nn = n * n;
  const double conds[] = {1e2, 1e4, 1e6, 1e8};
  // batch: the four condition numbers, then an identity pad, an all-zero and a NaN matrix
  const int64_t batch = 7;
  std::vector<float> a;
  for (size_t k = 0; k < 4; ++k) {
    const std::vector<double> ad =
        test::from_spectrum(n, test::random_orthogonal(n, 10 + k), test::geometric_spectrum(n, conds[k], 2.0));
    a.insert(a.end(), ad.begin(), ad.end());
  }
  std::vector<float> eye(size_t(nn), 0.0f);
  for (int64_t i = 0; i < n; ++i) eye[size_t(i * n + i)] = 1.0f;
  a.insert(a.end(), eye.begin(), eye.end());
  a.insert(a.end(), size_t(nn), 0.0f);
  a.insert(a.end(), eye.begin(), eye.end());
  a[size_t(6 * nn + 5)] = std::numeric_limits<float>::quiet_NaN();
  for (int p : {4, 2}) {
    InverseRootConfig cfg;
    cfg.p = p, cfg.eps = 1e-6;
    DeviceArray<float> d_a(a), d_x(static_cast<size_t>(batch * nn)), d_err(static_cast<size_t>(batch));
    DeviceArray<int> d_iters(static_cast<size_t>(batch));
    d_x.poison();
    const int ran = inverse_root_newton_cuda(h, n, batch, d_a.get(), cfg, d_x.get(), d_err.get(), d_iters.get());
    const std::vector<float> x = d_x.download(), err = d_err.download();
    const std::vector<int> iters = d_iters.download();
    int most = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const std::vector<float> ab = slice(a, size_t(b * nn), size_t(nn)), xb = slice(x, size_t(b * nn), size_t(nn));
      std::vector<float> cpu(static_cast<size_t>(nn)), ref(static_cast<size_t>(nn));
      const InverseRootInfo ci = inverse_root_newton_cpu(n, ab.data(), cfg, cpu.data());
      inverse_root_eigen_cpu(n, ab.data(), cfg, ref.data());
      const std::string what = detail::concat("p ", p, " matrix ", b);
      if (b == 6) {  // NaN input
        EXPECT_FALSE(inverse_root_ok(err[size_t(b)], 1e30f)) << what << ": error " << err[size_t(b)];
        continue;
      }
      const double e = rel_l2(xb, ref);
      std::printf("[ newton cuda ] %s: rel err %.2e (cpu newton %.2e), %d iterations (cpu %d), max|M-I| %.1e\n",
                  what.c_str(), e, rel_l2(cpu, ref), iters[size_t(b)], ci.iterations, err[size_t(b)]);
      EXPECT_LE(e, b < 2 ? 1e-3 : 3e-2) << what;
      EXPECT_TRUE(inverse_root_ok(err[size_t(b)], 1e-3f)) << what << ": error " << err[size_t(b)];
      EXPECT_NEAR(iters[size_t(b)], ci.iterations, 2) << what;
      most = std::max(most, iters[size_t(b)]);
    }
    EXPECT_GE(ran, most);
    EXPECT_LE(ran, most + cfg.check_every + 1) << "the convergence poll stops the loop";
    // Without polling the loop runs max_iters; converged matrices stay frozen.
    cfg.check_every = 0, cfg.max_iters = ran + 6;
    DeviceArray<float> d_x2(static_cast<size_t>(batch * nn));
    EXPECT_EQ(inverse_root_newton_cuda(h, n, batch, d_a.get(), cfg, d_x2.get(), d_err.get(), nullptr), ran + 6);
    const std::vector<float> x2 = d_x2.download();
    EXPECT_LE(rel_l2(slice(x2, 0, size_t(6 * nn)), slice(x, 0, size_t(6 * nn))), 1e-7) << "p " << p;
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ShampooCuda, AcceptCopiesOnlyGoodRoots) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t n = 5, batch = 4;
  const std::vector<float> cand = random_vector<float>(size_t(batch * n * n), 4);
  const std::vector<float> old = random_vector<float>(size_t(batch * n * n), 5);
  const std::vector<float> errors = {5e-4f, std::numeric_limits<float>::quiet_NaN(), 2e-3f,
                                     std::numeric_limits<float>::infinity()};
  DeviceArray<float> d_cand(cand), d_roots(old), d_err(errors);
  inverse_root_accept_cuda(h, n, batch, d_cand.get(), d_err.get(), 1e-3f, d_roots.get());
  const std::vector<float> roots = d_roots.download();
  for (int64_t b = 0; b < batch; ++b) {
    const auto want = slice(b == 0 ? cand : old, size_t(b * n * n), size_t(n * n));
    EXPECT_EQ(slice(roots, size_t(b * n * n), size_t(n * n)), want) << "matrix " << b;
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ShampooCuda, DirectionNormsAndGraftingMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  // Two 9 x 7 blocks one above the other in an 18 x 11 gradient (g_stride 9 * 11), D stacked with
  // ldd 8 and stride 80.
  const int64_t rows = 9, cols = 7, ldg = 11, batch = 2, ldd = 8, ds = 80;
  const std::vector<float> g = random_vector<float>(size_t(2 * rows * ldg), 6);
  const std::vector<float> l = random_vector<float>(size_t(batch * rows * rows), 7);
  const std::vector<float> r = random_vector<float>(size_t(batch * cols * cols), 8);
  DeviceArray<float> d_g(g), d_l(l), d_r(r), d_d(static_cast<size_t>(batch * ds));
  for (int sides = 0; sides < 4; ++sides) {
    const bool use_l = sides & 1, use_r = sides & 2;
    d_d.poison();
    shampoo_direction_cuda(h, batch, rows, cols, use_l ? d_l.get() : nullptr, d_g.get(), ldg, rows * ldg,
                           use_r ? d_r.get() : nullptr, d_d.get(), ldd, ds);
    const std::vector<float> got = d_d.download();
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<float> want(static_cast<size_t>(rows * ldd));
      shampoo_direction_cpu<float>(rows, cols, use_l ? l.data() + b * rows * rows : nullptr, g.data() + b * rows * ldg,
                                   ldg, use_r ? r.data() + b * cols * cols : nullptr, want.data(), ldd);
      std::vector<float> got_b, want_b;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          got_b.push_back(got[size_t(b * ds + i * ldd + j)]), want_b.push_back(want[size_t(i * ldd + j)]);
      EXPECT_LE(rel_l2(got_b, want_b), 1e-5) << "sides " << sides << " block " << b;
    }
  }
  // Norms of the blocks of g, then D rescaled to them.
  DeviceArray<double> d_gsq(static_cast<size_t>(batch)), d_dsq(static_cast<size_t>(batch));
  frobenius_norm_sq_cuda(h, batch, rows, cols, d_g.get(), ldg, rows * ldg, d_gsq.get());
  frobenius_norm_sq_cuda(h, batch, rows, cols, d_d.get(), ldd, ds, d_dsq.get());
  const std::vector<double> gsq = d_gsq.download(), dsq = d_dsq.download();
  std::vector<float> d_before = d_d.download();
  for (int64_t b = 0; b < batch; ++b) {
    const double want_g = frobenius_norm_sq_cpu<float>(rows, cols, g.data() + b * rows * ldg, ldg);
    const double want_d = frobenius_norm_sq_cpu<float>(rows, cols, d_before.data() + b * ds, ldd);
    EXPECT_NEAR(gsq[size_t(b)], want_g, 1e-12 * want_g);
    EXPECT_NEAR(dsq[size_t(b)], want_d, 1e-12 * want_d);
  }
  graft_rescale_cuda(h, batch, rows, cols, d_gsq.get(), d_dsq.get(), d_d.get(), ldd, ds);
  const std::vector<float> after = d_d.download();
  for (int64_t b = 0; b < batch; ++b) {
    const float s = float(graft_scale(gsq[size_t(b)], dsq[size_t(b)]));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < ldd; ++j) {
        const size_t k = size_t(b * ds + i * ldd + j);
        if (j < cols)
          EXPECT_EQ(after[k], d_before[k] * s);
        else
          EXPECT_TRUE(std::isnan(after[k])) << "padding written";  // still poisoned
      }
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
