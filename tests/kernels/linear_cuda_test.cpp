// The linear layer on the GPU against linear_*_cpu on the same bf16-rounded x and W: y in fp32
// (only the summation order differs), dx and dW through bf16 dy (bf16 tolerance), dbias from the
// fp32 dy (fp32 tolerance). Gradients accumulate (+=) from random starting values, and the
// increments are compared on their own. CPU side: the column walk behind dbias.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/linear.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

TEST(LinearCudaIndex, ColumnWalkVisitsColumnAfterColumn) {
  for (int64_t rows : {1, 2, 7})
    for (int64_t cols : {1, 3, 10}) {
      std::vector<int> seen(size_t(rows * cols), 0);
      for (int64_t j = 0; j < rows * cols; ++j) {
        const int64_t e = column_walk_index(j, rows, cols);
        ASSERT_GE(e, 0);
        ASSERT_LT(e, rows * cols);
        ++seen[size_t(e)];
        EXPECT_EQ(e % cols, j / rows) << "segment j / rows must be column e % cols";
        EXPECT_EQ(e / cols, j % rows);
      }
      for (int count : seen) EXPECT_EQ(count, 1);
    }
}

#if KD_HAVE_CUDA
using test::DeviceArray;

// rows, in, out: odd sizes, one element, a classifier head.
const LinearShape kShapes[] = {{37, 53, 11}, {1, 1, 1}, {5, 8, 3}, {128, 512, 1000}, {3, 2048, 10}};

std::string describe(const LinearShape& s) {
  return detail::concat("linear rows ", s.rows, " in ", s.in, " out ", s.out);
}

std::vector<double> difference(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = double(a[i]) - double(b[i]);
  return d;
}
#endif

TEST(LinearCuda, ForwardMatchesCpuWithAndWithoutBias) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const LinearShape& s : kShapes)
    for (bool with_bias : {true, false}) {
      const test::Bf16Input x = test::random_bf16(size_t(s.rows * s.in), 1), w = test::random_bf16(size_t(s.out * s.in), 2);
      const std::vector<float> bias = random_vector<float>(size_t(s.out), 3);
      std::vector<float> expected(size_t(s.rows * s.out));
      linear_forward_cpu<float>(s, x.values.data(), w.values.data(), with_bias ? bias.data() : nullptr,
                                expected.data());
      DeviceArray<bf16> dx(x.bits), dw(w.bits);
      DeviceArray<float> dbias(bias), dy(expected.size());
      dy.poison();
      linear_forward_cuda(h, s, dx.get(), dw.get(), with_bias ? dbias.get() : nullptr, dy.get());
      // Same bf16 operands, exact products, fp32 sums in another order: far inside bf16's 1e-2.
      EXPECT_LE(rel_l2(dy.download(), expected), 1e-4) << describe(s) << (with_bias ? " with bias" : "");
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(LinearCuda, BackwardMatchesCpuAndAccumulates) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (const LinearShape& s : kShapes) {
    const std::string what = describe(s);
    const test::Bf16Input x = test::random_bf16(size_t(s.rows * s.in), 4), w = test::random_bf16(size_t(s.out * s.in), 5);
    const std::vector<float> dy = random_vector<float>(size_t(s.rows * s.out), 6);
    const std::vector<float> dw0 = random_vector<float>(size_t(s.out * s.in), 7);
    const std::vector<float> dbias0 = random_vector<float>(size_t(s.out), 8);
    std::vector<float> dx(size_t(s.rows * s.in)), dw = dw0, dbias = dbias0;
    linear_backward_cpu<float>(s, x.values.data(), w.values.data(), dy.data(), dx.data(), dw.data(), dbias.data());

    DeviceArray<bf16> d_x(x.bits), d_w(w.bits), d_dx(dx.size());
    DeviceArray<float> d_dy(dy), d_dw(dw0), d_dbias(dbias0);
    d_dx.poison();
    linear_backward_cuda(h, s, d_x.get(), d_w.get(), d_dy.get(), d_dx.get(), d_dw.get(), d_dbias.get());
    const std::vector<float> got_dw = d_dw.download(), got_dbias = d_dbias.download();
    EXPECT_LE(rel_l2(test::to_f32(d_dx.download()), dx), 1e-2) << what << ": dx";
    EXPECT_LE(rel_l2(got_dw, dw), 1e-2) << what << ": dw";
    EXPECT_LE(rel_l2(difference(got_dw, dw0), difference(dw, dw0)), 1e-2) << what << ": dw increment";
    EXPECT_LE(rel_l2(got_dbias, dbias), 1e-5) << what << ": dbias";
    EXPECT_LE(rel_l2(difference(got_dbias, dbias0), difference(dbias, dbias0)), 1e-5) << what << ": dbias increment";

    // Again from the same start: the bias gradient is deterministic to the bit.
    d_dbias.upload(dbias0);
    linear_backward_cuda(h, s, d_x.get(), d_w.get(), d_dy.get(), d_dx.get(), d_dw.get(), d_dbias.get());
    EXPECT_EQ(d_dbias.download(), got_dbias) << what;
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(LinearCuda, BackwardWithoutInputAndBiasGradients) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const LinearShape s{37, 53, 11};
  const test::Bf16Input x = test::random_bf16(size_t(s.rows * s.in), 9), w = test::random_bf16(size_t(s.out * s.in), 10);
  const std::vector<float> dy = random_vector<float>(size_t(s.rows * s.out), 11);
  const std::vector<float> dw0 = random_vector<float>(size_t(s.out * s.in), 12);
  std::vector<float> dw = dw0;
  linear_backward_cpu<float>(s, x.values.data(), w.values.data(), dy.data(), nullptr, dw.data(), nullptr);
  DeviceArray<bf16> d_x(x.bits), d_w(w.bits);
  DeviceArray<float> d_dy(dy), d_dw(dw0);
  linear_backward_cuda(h, s, d_x.get(), d_w.get(), d_dy.get(), nullptr, d_dw.get(), nullptr);
  const std::vector<float> got = d_dw.download();
  EXPECT_LE(rel_l2(difference(got, dw0), difference(dw, dw0)), 1e-2);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
