// Small helpers shared by the tests: seeded random fills and error norms.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/context.h"

namespace kd::test {

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = T(u(rng));
  return v;
}

// ||a - b|| / ||b||; NaN anywhere gives +inf so that a NaN never passes.
template <typename A, typename B>
double rel_l2(const A* a, const B* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = double(a[i]), y = double(b[i]);
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

template <typename A, typename B>
double rel_l2(const std::vector<A>& a, const std::vector<B>& b) {
  return a.size() == b.size() ? rel_l2(a.data(), b.data(), a.size()) : INFINITY;
}

// For a failure message: how many elements differ by more than atol + rtol * |want|, and the
// first few as [index] (row, column of a row-major matrix `columns` wide): got vs want.
template <typename A, typename B>
std::string mismatches(const std::vector<A>& got, const std::vector<B>& want, double rtol, double atol,
                       size_t columns) {
  if (got.size() != want.size()) return "sizes differ";
  size_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (std::fabs(g - w) <= atol + rtol * std::fabs(w)) continue;
    if (bad++ < 6)
      first += " [" + std::to_string(i) + "] (" + std::to_string(i / columns) + ", " + std::to_string(i % columns) +
               "): " + std::to_string(g) + " vs " + std::to_string(w) + ";";
  }
  return std::to_string(bad) + " of " + std::to_string(got.size()) + " elements off;" + first;
}

template <typename To, typename From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// The message of the kd::Error that `f` throws, or "(no error)" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Skips the current test with a reason when no CUDA device is usable.
#define KD_REQUIRE_CUDA()                                   \
  do {                                                      \
    std::string kd_why_;                                    \
    if (!::kd::cuda_available(&kd_why_)) GTEST_SKIP() << kd_why_; \
  } while (0)

}  // namespace kd::test
