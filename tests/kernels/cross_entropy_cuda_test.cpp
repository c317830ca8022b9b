// cross_entropy_cuda against cross_entropy_cpu on fresh random logits: class counts from 10 to
// 21843 (rows staged in shared memory and rows re-read from global memory), with and without
// label smoothing, outputs poisoned with 0xFF bytes first; fp32 within 1e-5 relative L2 error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/softmax.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::rel_l2;

std::vector<int32_t> random_labels(int64_t rows, int64_t classes, uint64_t seed) {
  const std::vector<double> u = test::random_vector<double>(size_t(rows), seed, 0.0, 1.0);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (size_t r = 0; r < labels.size(); ++r) labels[r] = int32_t(std::min<double>(u[r] * double(classes), double(classes - 1)));
  return labels;
}

struct Result {
  std::vector<float> loss, grad;
};

Result run_cuda(int64_t rows, int64_t classes, const std::vector<float>& x, const std::vector<int32_t>& labels,
                float eps, float grad_scale, bool want_loss = true, bool want_grad = true) {
  DeviceArray<float> dx(x), loss(static_cast<size_t>(rows)), grad(x.size());
  DeviceArray<int32_t> dl(labels);
  loss.poison(), grad.poison();
  cross_entropy_cuda(test::cuda_test_context().cuda_handles(), rows, classes, dx.get(), dl.get(), eps, grad_scale,
                     want_loss ? loss.get() : nullptr, want_grad ? grad.get() : nullptr);
  return Result{loss.download(), grad.download()};
}

#endif

TEST(CrossEntropyCuda, MatchesCpuReferenceWithAndWithoutSmoothing) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  for (int64_t classes : {3, 10, 1000, 5003, 8193, 21843})
    for (float eps : {0.0f, 0.1f}) {
      const int64_t rows = classes > 5000 ? 5 : 17;
      const std::vector<float> x = test::random_vector<float>(size_t(rows * classes), uint64_t(classes), -4, 4);
      const std::vector<int32_t> labels = random_labels(rows, classes, uint64_t(classes) + 1);
      std::vector<float> loss(static_cast<size_t>(rows)), grad(x.size());
      cross_entropy_cpu<float>(rows, classes, x.data(), labels.data(), eps, 0.5f, loss.data(), grad.data());
      const std::string what = std::to_string(classes) + " classes, smoothing " + std::to_string(eps);
      const Result got = run_cuda(rows, classes, x, labels, eps, 0.5f);
      EXPECT_LT(rel_l2(got.loss, loss), 1e-5) << what;
      EXPECT_LT(rel_l2(got.grad, grad), 1e-5) << what;
      const Result loss_only = run_cuda(rows, classes, x, labels, eps, 0.5f, true, false);
      EXPECT_LT(rel_l2(loss_only.loss, loss), 1e-5) << what;
      EXPECT_TRUE(test::all_poisoned(loss_only.grad)) << what;
      const Result grad_only = run_cuda(rows, classes, x, labels, eps, 0.5f, false, true);
      EXPECT_LT(rel_l2(grad_only.grad, grad), 1e-5) << what;
      EXPECT_TRUE(test::all_poisoned(grad_only.loss)) << what;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(CrossEntropyCuda, HugeLogitsStayFiniteAndBadLabelsGiveNaN) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const int64_t rows = 4, classes = 1000;
  std::vector<float> x = test::random_vector<float>(size_t(rows * classes), 3, -4, 4);
  for (float& v : x) v *= 400;  // exp overflows without max subtraction
  std::vector<int32_t> labels = {3, 999, 0, 500};
  const Result big = run_cuda(rows, classes, x, labels, 0.1f, 1.0f);
  for (float v : big.loss) EXPECT_TRUE(std::isfinite(v));
  for (float v : big.grad) ASSERT_TRUE(std::isfinite(v));
  labels = {3, -1, 1000, 5};
  const Result bad = run_cuda(rows, classes, x, labels, 0.0f, 1.0f);
  EXPECT_TRUE(std::isfinite(bad.loss[0]) && std::isfinite(bad.loss[3]));
  EXPECT_TRUE(std::isnan(bad.loss[1]) && std::isnan(bad.loss[2]));
  EXPECT_TRUE(std::isnan(bad.grad[size_t(classes + 7)]) && std::isnan(bad.grad[size_t(2 * classes)]));
  EXPECT_TRUE(std::isfinite(bad.grad[0]));
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
