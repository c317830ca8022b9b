// Shampoo's CPU kernels: block partition, statistics, the damped inverse p-th root (double eigen
// reference against roots built from a known eigendecomposition; the fp32 Newton iteration against
// that reference at condition numbers 1e2..1e8), degenerate inputs, direction and grafting.
#include "kernels/shampoo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "kernels/check.h"
#include "tests/kernels/shampoo_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

// ---- partition ----

TEST(ShampooBlocks, CoverEveryElementExactlyOnce) {
  struct Shape {
    int64_t rows, cols, block;
  };
  for (const Shape s : {Shape{1, 1, 4}, Shape{1, 37, 8}, Shape{37, 1, 8}, Shape{64, 128, 32}, Shape{65, 130, 32},
                        Shape{5, 7, 100}, Shape{100, 3, 7}, Shape{128, 128, 128}}) {
    const std::vector<ShampooBlock> blocks = shampoo_blocks(s.rows, s.cols, s.block);
    const int64_t grid_rows = ceil_div(s.rows, s.block), grid_cols = ceil_div(s.cols, s.block);
    ASSERT_EQ(int64_t(blocks.size()), grid_rows * grid_cols) << s.rows << "x" << s.cols << " / " << s.block;
    std::vector<int> seen(size_t(s.rows * s.cols), 0);
    for (size_t k = 0; k < blocks.size(); ++k) {
      const ShampooBlock& b = blocks[k];
      ASSERT_GT(b.rows, 0);
      ASSERT_GT(b.cols, 0);
      ASSERT_LE(b.rows, s.block);
      ASSERT_LE(b.cols, s.block);
      ASSERT_EQ(b.row0, int64_t(k) / grid_cols * s.block) << "row-major grid order";
      ASSERT_EQ(b.col0, int64_t(k) % grid_cols * s.block);
      for (int64_t i = b.row0; i < b.row0 + b.rows; ++i)
        for (int64_t j = b.col0; j < b.col0 + b.cols; ++j) {
          ASSERT_TRUE(i < s.rows && j < s.cols) << "block " << k << " leaves the matrix";
          ++seen[size_t(i * s.cols + j)];
        }
    }
    for (size_t e = 0; e < seen.size(); ++e) ASSERT_EQ(seen[e], 1) << "element " << e;
  }
}

TEST(ShampooBlocks, RejectsEmptyShapesAndBlockSizes) {
  EXPECT_NE(test::error_of([] { shampoo_blocks(0, 4, 2); }).find("shampoo_blocks"), std::string::npos);
  EXPECT_NE(test::error_of([] { shampoo_blocks(4, 4, 0); }).find("block_size"), std::string::npos);
}

// ---- statistics ----

template <typename T>
void check_stats_update(double tol) {
  // A 9 x 13 block at (2, 3) of a 16 x 20 matrix: ldg = 20.
  const int64_t ld = 20, rows = 9, cols = 13;
  const std::vector<T> big = random_vector<T>(16 * 20, 11);
  const T* g = big.data() + 2 * ld + 3;
  for (double beta2 : {0.9, 1.0}) {
    std::vector<T> l = random_vector<T>(size_t(rows * rows), 12), r = random_vector<T>(size_t(cols * cols), 13);
    std::vector<double> l_ref(l.begin(), l.end()), r_ref(r.begin(), r.end());
    const double w = beta2 == 1.0 ? 1.0 : 1.0 - beta2;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < rows; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < cols; ++k) dot += double(g[i * ld + k]) * double(g[j * ld + k]);
        l_ref[size_t(i * rows + j)] = beta2 * l_ref[size_t(i * rows + j)] + w * dot;
      }
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < rows; ++k) dot += double(g[k * ld + i]) * double(g[k * ld + j]);
        r_ref[size_t(i * cols + j)] = beta2 * r_ref[size_t(i * cols + j)] + w * dot;
      }
    const std::vector<T> r_before = r;
    shampoo_stats_update_cpu<T>(rows, cols, g, ld, T(beta2), l.data(), nullptr);  // R skipped
    EXPECT_EQ(r, r_before);
    shampoo_stats_update_cpu<T>(rows, cols, g, ld, T(beta2), nullptr, r.data());
    EXPECT_LE(rel_l2(l, l_ref), tol) << "L, beta2 " << beta2;
    EXPECT_LE(rel_l2(r, r_ref), tol) << "R, beta2 " << beta2;
  }
}

TEST(ShampooStats, UpdateMatchesNaiveLoopsOnASubBlock) {
  check_stats_update<float>(1e-6);
  check_stats_update<double>(1e-14);
}

// ---- eigendecomposition ----

TEST(ShampooEigen, LapackAndJacobiDecomposeAKnownSpectrum) {
  for (int64_t n : {1, 2, 17, 40}) {
    const std::vector<double> q = test::random_orthogonal(n, 21 + uint64_t(n));
    std::vector<double> lambda = test::geometric_spectrum(n, 1e3, 2.5);
    lambda[0] = 0;  // a zero eigenvalue as well
    const std::vector<double> a = test::from_spectrum(n, q, lambda);
    for (bool jacobi : {false, true}) {
      std::vector<double> v = a, w(static_cast<size_t>(n));
      ASSERT_TRUE(jacobi ? symmetric_eigen_jacobi_cpu(n, v.data(), w.data())
                         : symmetric_eigen_cpu(n, v.data(), w.data()));
      std::vector<double> sorted = lambda;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_LE(rel_l2(w, sorted), 1e-13) << "eigenvalues, n " << n << (jacobi ? " jacobi" : " lapack");
      // Rows of v: unit eigenvectors, A v_k = w_k v_k.
      double residual = 0, orth = 0;
      for (int64_t k = 0; k < n; ++k) {
        for (int64_t i = 0; i < n; ++i) {
          double av = 0;
          for (int64_t j = 0; j < n; ++j) av += a[size_t(i * n + j)] * v[size_t(k * n + j)];
          residual = std::max(residual, std::fabs(av - w[size_t(k)] * v[size_t(k * n + i)]));
        }
        for (int64_t l = 0; l < n; ++l) {
          double dot = 0;
          for (int64_t j = 0; j < n; ++j) dot += v[size_t(k * n + j)] * v[size_t(l * n + j)];
          orth = std::max(orth, std::fabs(dot - (k == l ? 1.0 : 0.0)));
        }
      }
      EXPECT_LE(residual, 1e-13 * 2.5) << "n " << n << (jacobi ? " jacobi" : " lapack");
      EXPECT_LE(orth, 1e-13) << "n " << n << (jacobi ? " jacobi" : " lapack");
    }
  }
}

// ---- the damped inverse root ----

struct Conditioned {
  double cond, eps;
};
// cond 1e8 is damped to ~1e6 (eps 1e-6); the others barely (eps 1e-10).
constexpr Conditioned kConds[] = {{1e2, 1e-10}, {1e4, 1e-10}, {1e6, 1e-10}, {1e8, 1e-6}};

TEST(ShampooEigenRoot, MatchesRootsBuiltFromTheKnownDecomposition) {
  const int64_t n = 48;
  const std::vector<double> q = test::random_orthogonal(n, 31);
  for (int p : {4, 2, 1, 3})
    for (const Conditioned& c : kConds) {
      const std::vector<double> lambda = test::geometric_spectrum(n, c.cond, 3.7);
      const std::vector<double> a = test::from_spectrum(n, q, lambda);
      InverseRootConfig cfg;
      cfg.p = p, cfg.eps = c.eps;
      std::vector<double> x(size_t(n * n));
      const InverseRootInfo info = inverse_root_eigen_cpu(n, a.data(), cfg, x.data());
      const double d = c.eps * 3.7;
      const std::vector<double> want = test::known_root(n, q, lambda, d, p);
      const double err = rel_l2(x, want);
      std::printf("[ eigen root ] p %d cond %.0e (damped %.1e): rel err %.2e\n", p, c.cond,
                  (3.7 + d) / (3.7 / c.cond + d), err);
      EXPECT_LE(err, 1e-9) << "p " << p << " cond " << c.cond;
      EXPECT_NEAR(info.lambda_max, 3.7, 1e-12 * 3.7);
      EXPECT_NEAR(info.damping, d, 1e-12 * d);
      EXPECT_EQ(info.error, 0.0f);
    }
}

TEST(ShampooEigenRoot, FloatEntryPointMatchesDoubleOnTheSameInput) {
  const int64_t n = 24;
  const std::vector<double> ad =
      test::from_spectrum(n, test::random_orthogonal(n, 41), test::geometric_spectrum(n, 1e3, 1.0));
  const std::vector<float> af(ad.begin(), ad.end());
  const std::vector<double> af_d(af.begin(), af.end());
  InverseRootConfig cfg;
  std::vector<float> x(size_t(n * n));
  std::vector<double> want(size_t(n * n));
  inverse_root_eigen_cpu(n, af.data(), cfg, x.data());
  inverse_root_eigen_cpu(n, af_d.data(), cfg, want.data());
  EXPECT_LE(rel_l2(x, want), 1e-7);
}

// The fp32 Newton iteration against the double eigen root of the same (fp32) matrix.
TEST(ShampooNewton, MatchesTheEigenRootAcrossConditionNumbers) {
  for (int64_t n : {64, 129}) {
    const std::vector<double> q = test::random_orthogonal(n, 51 + uint64_t(n));
    for (int p : {4, 2})
      for (const Conditioned& c : kConds) {
        const std::vector<double> lambda = test::geometric_spectrum(n, c.cond, 0.8);
        const std::vector<double> ad = test::from_spectrum(n, q, lambda);
        const std::vector<float> a(ad.begin(), ad.end());
        InverseRootConfig cfg;
        cfg.p = p, cfg.eps = c.eps;
        std::vector<float> x(size_t(n * n));
        const InverseRootInfo info = inverse_root_newton_cpu(n, a.data(), cfg, x.data());
        std::vector<double> want(size_t(n * n));
        const std::vector<double> a_rounded(a.begin(), a.end());
        inverse_root_eigen_cpu(n, a_rounded.data(), cfg, want.data());
        const double err = rel_l2(x, want);
        const double damped = (0.8 + c.eps * 0.8) / (0.8 / c.cond + c.eps * 0.8);
        const double exact_err = rel_l2(x, test::known_root(n, q, lambda, c.eps * 0.8, p));
        std::printf(
            "[ newton ] n %3lld p %d cond %.0e (damped %.1e): rel err %.2e (vs exact A: %.2e), %d iterations, "
            "max|M-I| %.1e, lambda_max %.6g\n",
            (long long)n, p, c.cond, damped, err, exact_err, info.iterations, info.error, info.lambda_max);
        const double bound = damped <= 1.01e4 ? 1e-3 : 3e-2;
        EXPECT_LE(err, bound) << "n " << n << " p " << p << " cond " << c.cond;
        EXPECT_TRUE(inverse_root_ok(info.error, 1e-3f)) << "error " << info.error;
        EXPECT_LT(info.iterations, cfg.max_iters);
        EXPECT_NEAR(info.lambda_max, 0.8, 1e-5 * 0.8);
      }
  }
}

TEST(ShampooNewton, OneByOneAndIdentity) {
  InverseRootConfig cfg;
  const float a1 = 16.0f;
  float x1 = 0;
  const InverseRootInfo info = inverse_root_newton_cpu(1, &a1, cfg, &x1);
  EXPECT_NEAR(x1, std::pow(16.0 * (1 + 1e-6), -0.25), 1e-6);
  EXPECT_LE(info.error, 1e-6f);
  const int64_t n = 33;  // the identity blocks that pad a batch
  std::vector<float> eye(size_t(n * n), 0.0f), x(size_t(n * n));
  for (int64_t i = 0; i < n; ++i) eye[size_t(i * n + i)] = 1.0f;
  inverse_root_newton_cpu(n, eye.data(), cfg, x.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(x[size_t(i * n + j)], i == j ? std::pow(1 + 1e-6, -0.25) : 0.0, 1e-6);
}

TEST(ShampooNewton, SingularStatisticsGiveFiniteRootsMatchingTheReference) {
  // A = G G^T of rank 10 in 48 dimensions; eps 1e-4 damps it to condition ~1e4.
  const int64_t n = 48, k = 10;
  const std::vector<float> g = random_vector<float>(size_t(n * k), 61);
  std::vector<float> a(size_t(n * n), 0.0f);
  shampoo_stats_update_cpu<float>(n, k, g.data(), k, 1.0f, a.data(), nullptr);
  InverseRootConfig cfg;
  cfg.eps = 1e-4;
  std::vector<float> x(size_t(n * n)), want(size_t(n * n));
  const InverseRootInfo info = inverse_root_newton_cpu(n, a.data(), cfg, x.data());
  const InverseRootInfo ref = inverse_root_eigen_cpu(n, a.data(), cfg, want.data());
  const double err = rel_l2(x, want);
  std::printf("[ newton ] rank %lld of %lld, eps 1e-4: rel err %.2e, %d iterations, lambda_max %.8g (exact %.8g)\n",
              (long long)k, (long long)n, err, info.iterations, info.lambda_max, ref.lambda_max);
  EXPECT_LE(err, 1e-3);
  EXPECT_TRUE(inverse_root_ok(info.error, 1e-3f));
}

TEST(ShampooNewton, AllZeroStatisticsGiveTheFlooredScaledIdentity) {
  const int64_t n = 16;
  const std::vector<float> zero(size_t(n * n), 0.0f);
  for (int p : {4, 2}) {
    InverseRootConfig cfg;
    cfg.p = p;
    const double expected = std::pow(cfg.eps * cfg.lambda_floor, -1.0 / p);  // 3.2e5 for p = 4
    std::vector<float> newton(size_t(n * n)), eigen(size_t(n * n));
    const InverseRootInfo ni = inverse_root_newton_cpu(n, zero.data(), cfg, newton.data());
    const InverseRootInfo ei = inverse_root_eigen_cpu(n, zero.data(), cfg, eigen.data());
    EXPECT_EQ(ni.lambda_max, 0.0);
    EXPECT_EQ(ei.lambda_max, 0.0);
    EXPECT_TRUE(inverse_root_ok(ni.error, 1e-6f));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double want = i == j ? expected : 0.0;
        EXPECT_NEAR(newton[size_t(i * n + j)], want, 1e-6 * expected) << "newton p " << p;
        EXPECT_NEAR(eigen[size_t(i * n + j)], want, 1e-6 * expected) << "eigen p " << p;
      }
  }
}

TEST(ShampooNewton, NonFiniteInputIsReportedAsFailed) {
  const int64_t n = 8;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> a(size_t(n * n), 0.0f), x(size_t(n * n));
    for (int64_t i = 0; i < n; ++i) a[size_t(i * n + i)] = 1.0f;
    a[size_t(3 * n + 5)] = bad;
    InverseRootConfig cfg;
    const InverseRootInfo ni = inverse_root_newton_cpu(n, a.data(), cfg, x.data());
    EXPECT_FALSE(inverse_root_ok(ni.error, 1e30f)) << "newton, input " << bad << ": error " << ni.error;
    EXPECT_FALSE(std::isfinite(ni.error));
    const InverseRootInfo ei = inverse_root_eigen_cpu(n, a.data(), cfg, x.data());
    EXPECT_TRUE(std::isnan(ei.error)) << "eigen, input " << bad;
    EXPECT_TRUE(std::isnan(x[0]));
  }
}

TEST(ShampooNewton, StopsAtMaxItersWithTheMatchingError) {
  const int64_t n = 32;
  const std::vector<double> ad =
      test::from_spectrum(n, test::random_orthogonal(n, 71), test::geometric_spectrum(n, 1e4, 1.0));
  const std::vector<float> a(ad.begin(), ad.end());
  InverseRootConfig cfg;
  cfg.max_iters = 0;  // X_0 = s^(-1/p) I
  std::vector<float> x(size_t(n * n));
  const InverseRootInfo i0 = inverse_root_newton_cpu(n, a.data(), cfg, x.data());
  EXPECT_EQ(i0.iterations, 0);
  EXPECT_GT(i0.error, 0.9f);  // the smallest eigenvalue of M_0 is ~1e-4
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_GT(x[0], 0.0f);
  cfg.max_iters = 5;
  const InverseRootInfo i5 = inverse_root_newton_cpu(n, a.data(), cfg, x.data());
  EXPECT_EQ(i5.iterations, 5);
  EXPECT_LT(i5.error, i0.error);
  EXPECT_FALSE(inverse_root_ok(i5.error, 1e-3f)) << "5 iterations cannot converge at condition 1e4";
}

TEST(ShampooNewton, RejectsBadArguments) {
  float a = 1, x = 0;
  InverseRootConfig cfg;
  EXPECT_NE(test::error_of([&] { inverse_root_newton_cpu(0, &a, cfg, &x); }).find("n must be positive"),
            std::string::npos);
  cfg.p = 0;
  EXPECT_NE(test::error_of([&] { inverse_root_newton_cpu(1, &a, cfg, &x); }).find("p must be >= 1"), std::string::npos);
  EXPECT_NE(test::error_of([&] { inverse_root_eigen_cpu(1, &a, cfg, &x); }).find("inverse_root_eigen"),
            std::string::npos);
  cfg.p = 4;
  EXPECT_NE(test::error_of([&] { inverse_root_newton_cpu(1, &a, cfg, &a); }).find("alias"), std::string::npos);
}

TEST(ShampooNewton, PowerPlanComputesThePthPowerWithBinaryPowering) {
  for (int p = 1; p <= 12; ++p) {
    const MatrixPowerPlan plan = matrix_power_plan(p);
    int exponent[4] = {1, -1, -1, -1};  // slot 0 holds M_i^1; scratch undefined until written
    for (const MatrixPowerPlan::Step& s : plan.steps) {
      ASSERT_TRUE(s.dst >= 1 && s.dst <= 3) << "p " << p << ": writes slot " << s.dst;
      ASSERT_NE(s.dst, s.a);
      ASSERT_NE(s.dst, s.b);
      ASSERT_GE(exponent[s.a], 1) << "p " << p << ": reads an unwritten slot";
      ASSERT_GE(exponent[s.b], 1);
      exponent[s.dst] = exponent[s.a] + exponent[s.b];
      ASSERT_LE(s.dst, plan.scratch);
    }
    EXPECT_EQ(exponent[plan.result], p);
    int bits = 0, top = 0;
    for (int e = p; e; e >>= 1) bits += e & 1, ++top;
    EXPECT_EQ(int(plan.steps.size()), top - 1 + bits - 1) << "p " << p;
  }
  EXPECT_EQ(matrix_power_plan(4).steps.size(), 2u);
}

TEST(ShampooNewton, LanczosEstimatesLambdaMax) {
  // A flat top of the spectrum (129 eigenvalues from 5 down to 0.05): slow for power iteration.
  const int64_t n = 129;
  std::vector<double> lambda = test::geometric_spectrum(n, 1e2, 5.0);
  const std::vector<double> ad = test::from_spectrum(n, test::random_orthogonal(n, 81), lambda);
  const std::vector<float> a(ad.begin(), ad.end());
  const double est = lanczos_lambda_max_cpu(n, a.data(), 32);
  std::printf("[ lanczos ] 32 steps, n 129 geometric 5 .. 0.05: relative error %.1e\n", std::fabs(est - 5.0) / 5.0);
  EXPECT_NEAR(est, 5.0, 1e-5 * 5.0);
  const std::vector<float> zero(size_t(n * n), 0.0f);
  EXPECT_EQ(lanczos_lambda_max_cpu(n, zero.data(), 32), 0.0);
  const float three = 3.0f;
  EXPECT_NEAR(lanczos_lambda_max_cpu(1, &three, 32), 3.0, 1e-6);
  // the tridiagonal solver alone: [[2, 1], [1, 2]] has eigenvalues 1 and 3
  const double alpha[2] = {2, 2}, beta[1] = {1};
  EXPECT_NEAR(tridiagonal_max_eigenvalue(2, alpha, beta), 3.0, 1e-14);
  const double nan_alpha[2] = {2, std::numeric_limits<double>::quiet_NaN()};
  EXPECT_TRUE(std::isnan(tridiagonal_max_eigenvalue(2, nan_alpha, beta)));
}

// ---- direction and grafting ----

template <typename T>
void check_direction(double tol) {
  const int64_t rows = 7, cols = 11, ldg = 15, ldd = 13;
  const std::vector<T> l = random_vector<T>(size_t(rows * rows), 91), r = random_vector<T>(size_t(cols * cols), 92);
  const std::vector<T> g = random_vector<T>(size_t(rows * ldg), 93);
  for (int sides = 0; sides < 4; ++sides) {
    const bool use_l = sides & 1, use_r = sides & 2;
    std::vector<double> want(size_t(rows * cols));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double sum = 0;
        for (int64_t a = 0; a < rows; ++a)
          for (int64_t b = 0; b < cols; ++b) {
            const double lv = use_l ? double(l[size_t(i * rows + a)]) : (i == a ? 1.0 : 0.0);
            const double rv = use_r ? double(r[size_t(b * cols + j)]) : (b == j ? 1.0 : 0.0);
            sum += lv * double(g[size_t(a * ldg + b)]) * rv;
          }
        want[size_t(i * cols + j)] = sum;
      }
    std::vector<T> d(size_t(rows * ldd), T(-7));
    shampoo_direction_cpu<T>(rows, cols, use_l ? l.data() : nullptr, g.data(), ldg, use_r ? r.data() : nullptr,
                             d.data(), ldd);
    std::vector<double> got;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < ldd; ++j) {
        if (j < cols)
          got.push_back(double(d[size_t(i * ldd + j)]));
        else
          EXPECT_EQ(d[size_t(i * ldd + j)], T(-7)) << "padding written";
      }
    EXPECT_LE(rel_l2(got, want), tol) << "sides " << sides;
  }
}

TEST(ShampooDirection, MatchesNaiveLoops) {
  check_direction<float>(1e-6);
  check_direction<double>(1e-14);
}

TEST(ShampooGraft, NormAndScaleMatchTheDefinition) {
  const int64_t rows = 5, cols = 6, ld = 9;
  const std::vector<float> x = random_vector<float>(size_t(rows * ld), 101, -3, 3);
  long double want = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) want += (long double)x[size_t(i * ld + j)] * x[size_t(i * ld + j)];
  EXPECT_NEAR(frobenius_norm_sq_cpu<float>(rows, cols, x.data(), ld), double(want), 1e-13 * double(want));
  EXPECT_EQ(graft_scale(9.0, 4.0), 1.5);
  EXPECT_EQ(graft_scale(9.0, 0.0), 0.0);
  EXPECT_EQ(graft_scale(0.0, 4.0), 0.0);
  EXPECT_TRUE(std::isnan(graft_scale(1.0, std::numeric_limits<double>::quiet_NaN())));
}

}  // namespace
}  // namespace kd
