// Shampoo's damped inverse p-th root against PyTorch: tests/reference/make_shampoo_fixtures.py
// writes symmetric PSD matrices and their roots from torch.linalg.eigh in float64 (F64 tensors).
// The double eigen root must match to 1e-10 (relative Frobenius); the fp32 Newton iteration, on
// the float32-rounded matrix, within shampoo_test.cpp's bounds (1e-3 up to condition 1e4 after
// damping, else 3e-2). Each comparison prints its measured error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/shampoo.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

const SafetensorsFile& fixtures() {
  static const SafetensorsFile file = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/shampoo.safetensors");
  return file;
}

std::vector<double> doubles(const std::string& name) {
  const Shape shape = fixtures().entry(name).shape;
  const Tensor t = fixtures().tensor_as(name, shape, DType::f64);
  const double* p = t.data<double>();
  return std::vector<double>(p, p + t.numel());
}

// Case names: "shampoo/<name>/params" -> <name>.
std::vector<std::string> cases() {
  std::vector<std::string> out;
  const std::string prefix = "shampoo/", suffix = "/params";
  for (const std::string& n : fixtures().names())
    if (n.rfind(prefix, 0) == 0 && n.size() > prefix.size() + suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n.substr(prefix.size(), n.size() - prefix.size() - suffix.size()));
  return out;
}

TEST(Shampoo, DampedInverseRootsMatchTorchEigh) {
  const std::vector<std::string> names = cases();
  ASSERT_GE(names.size(), 6u);
  for (const std::string& name : names) {
    const std::string p = "shampoo/" + name + "/";
    const std::vector<double> a = doubles(p + "a"), want = doubles(p + "x"), params = doubles(p + "params");
    const int64_t n = fixtures().entry(p + "a").shape[0];
    InverseRootConfig cfg;
    cfg.p = int(params[0]), cfg.eps = params[1], cfg.lambda_floor = params[2];

    std::vector<double> x(a.size());
    const InverseRootInfo info = inverse_root_eigen_cpu(n, a.data(), cfg, x.data());
    const double err = test::rel_l2(x, want);

    // the condition number after damping, for the Newton bound
    std::vector<double> v = a, w(static_cast<size_t>(n));
    ASSERT_TRUE(symmetric_eigen_cpu(n, v.data(), w.data()));
    const double cond = (info.lambda_max + info.damping) / (std::max(w[0], 0.0) + info.damping);
    const std::vector<float> af(a.begin(), a.end());
    std::vector<float> xf(a.size());
    const InverseRootInfo ni = inverse_root_newton_cpu(n, af.data(), cfg, xf.data());
    const double newton_err = test::rel_l2(xf, want), newton_bound = cond <= 1.01e4 ? 1e-3 : 3e-2;

    std::printf("[ parity ] %-20s n %2lld p %d cond %.1e: eigen rel L2 %.2e, newton (fp32) %.2e in %d iterations\n",
                name.c_str(), (long long)n, cfg.p, cond, err, newton_err, ni.iterations);
    EXPECT_LE(err, 1e-10) << name;
    EXPECT_LE(newton_err, newton_bound) << name;
    EXPECT_TRUE(inverse_root_ok(ni.error, 1e-3f)) << name << ": max|M - I| " << ni.error;
  }
}

}  // namespace
}  // namespace kd
