// Symmetric test matrices with a known eigendecomposition, for the Shampoo root tests (CPU and
// GPU): A = Q diag(lambda) Q^T with Q a random orthogonal matrix, and its exact damped root.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace kd::test {

// n x n row-major orthogonal matrix: Gram-Schmidt (twice, for orthogonality to rounding) on the
// rows of a Gaussian matrix.
inline std::vector<double> random_orthogonal(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> q(size_t(n * n));
  for (double& v : q) v = normal(rng);
  for (int64_t i = 0; i < n; ++i) {
    double* row = q.data() + i * n;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t k = 0; k < i; ++k) {
        const double* prev = q.data() + k * n;
        double dot = 0;
        for (int64_t j = 0; j < n; ++j) dot += row[j] * prev[j];
        for (int64_t j = 0; j < n; ++j) row[j] -= dot * prev[j];
      }
    double norm = 0;
    for (int64_t j = 0; j < n; ++j) norm += row[j] * row[j];
    for (int64_t j = 0; j < n; ++j) row[j] /= std::sqrt(norm);
  }
  return q;
}

// top * cond^(-k / (n - 1)), k = 0..n-1: from top down to top / cond, evenly in log scale.
inline std::vector<double> geometric_spectrum(int64_t n, double cond, double top) {
  std::vector<double> lambda(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) lambda[size_t(k)] = top * (n == 1 ? 1.0 : std::pow(cond, -double(k) / double(n - 1)));
  return lambda;
}

// Q^T diag(f) Q with Q's rows the eigenvectors.
inline std::vector<double> from_spectrum(int64_t n, const std::vector<double>& q, const std::vector<double>& f) {
  std::vector<double> a(size_t(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < n; ++i) {
      const double s = f[size_t(k)] * q[size_t(k * n + i)];
      for (int64_t j = 0; j < n; ++j) a[size_t(i * n + j)] += s * q[size_t(k * n + j)];
    }
  return a;
}

// (A + d I)^(-1/p) for A = from_spectrum(n, q, lambda).
inline std::vector<double> known_root(int64_t n, const std::vector<double>& q, const std::vector<double>& lambda,
                                      double d, int p) {
  std::vector<double> f(lambda.size());
  for (size_t k = 0; k < f.size(); ++k) f[k] = std::pow(lambda[k] + d, -1.0 / p);
  return from_spectrum(n, q, f);
}

}  // namespace kd::test
