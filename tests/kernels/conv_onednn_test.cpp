// The CPU path's fast convolutions and sgemm (oneDNN) against kd's reference (im2col + OpenBLAS,
// run under CpuBackend::reference), on random inputs: odd channel counts, strides, groups,
// depthwise, dilation, 1-pixel maps. The reference itself is checked against the seven-loop
// definition and finite differences in conv_test.cpp, so these comparisons carry that check over.
#include "kernels/conv_onednn.h"

#include <gtest/gtest.h>

#include "kernels/cpu_backend.h"
#include "kernels/gemm.h"
#include "tests/kernels/conv_shapes.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

using test::conv_shape;

#define KD_SKIP_WITHOUT_ONEDNN() \
  if (!onednn_built()) GTEST_SKIP() << "kd was built without oneDNN (libdnnl-dev): no fast CPU path to test"

struct Results {
  std::vector<float> y, dx, dw;
};

// Forward, backward data and backward filter (dw starts at a known non-zero value: it accumulates).
Results run_all(CpuBackend backend, const Conv2dShape& s, bool fast) {
  ScopedCpuBackend scoped(backend);
  const auto x = random_vector<float>(size_t(s.x_numel()), 1), w = random_vector<float>(size_t(s.w_numel()), 2);
  const auto dy = random_vector<float>(size_t(s.y_numel()), 3);
  Results r{std::vector<float>(size_t(s.y_numel()), NAN), std::vector<float>(size_t(s.x_numel()), NAN),
            random_vector<float>(size_t(s.w_numel()), 4)};
  if (fast) {
    EXPECT_TRUE(conv2d_forward_onednn(s, x.data(), w.data(), r.y.data())) << conv2d_onednn_describe(s);
    EXPECT_TRUE(conv2d_backward_data_onednn(s, dy.data(), w.data(), r.dx.data())) << conv2d_onednn_describe(s);
    EXPECT_TRUE(conv2d_backward_filter_onednn(s, x.data(), dy.data(), r.dw.data())) << conv2d_onednn_describe(s);
  } else {
    conv2d_forward_cpu<float>(s, x.data(), w.data(), r.y.data());
    conv2d_backward_data_cpu<float>(s, dy.data(), w.data(), r.dx.data());
    conv2d_backward_filter_cpu<float>(s, x.data(), dy.data(), r.dw.data());
  }
  return r;
}

class OnednnConv : public ::testing::TestWithParam<Conv2dShape> {};

TEST_P(OnednnConv, MatchesReferenceInAllThreeOps) {
  KD_SKIP_WITHOUT_ONEDNN();
  const Conv2dShape s = GetParam();
  {
    ScopedCpuBackend fast(CpuBackend::onednn);
    ASSERT_TRUE(conv2d_onednn_takes(s)) << s.describe() << ": " << conv2d_onednn_describe(s);
  }
  const Results ref = run_all(CpuBackend::reference, s, false);
  const Results got = run_all(CpuBackend::onednn, s, true);
  // fp32 sums of up to kh*kw*c_in (forward, backward data) or n*oh*ow (filter) products in
  // another order: the bound every fp32 op in kd's tests uses.
  EXPECT_LT(rel_l2(got.y, ref.y), 1e-5) << s.describe();
  EXPECT_LT(rel_l2(got.dx, ref.dx), 1e-5) << s.describe();
  EXPECT_LT(rel_l2(got.dw, ref.dw), 1e-5) << s.describe();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, OnednnConv,
    ::testing::Values(conv_shape(2, 7, 7, 3, 4, 3, 1, 1),          // 3x3, odd channel counts
                      conv_shape(3, 9, 8, 5, 7, 3, 2, 1),          // 3x3 stride 2, odd sizes
                      conv_shape(1, 11, 11, 3, 16, 7, 2, 3),       // BiT stem 7x7/2 pad 3
                      conv_shape(4, 16, 16, 32, 32, 3, 1, 1),      // the demo's 3x3 (blocked layouts)
                      conv_shape(2, 8, 8, 64, 48, 3, 2, 1),        // strided, more channels than one block
                      conv_shape(1, 6, 7, 4, 6, 3, 1, 1, 2),       // grouped
                      conv_shape(2, 7, 6, 16, 16, 3, 2, 1, 16),    // depthwise
                      conv_shape(1, 6, 6, 3, 6, 5, 1, 2, 3),       // depthwise, channel multiplier 2
                      conv_shape(1, 9, 9, 2, 3, 3, 1, 2, 1, 2),    // dilation 2
                      conv_shape(3, 1, 1, 8, 5, 3, 1, 1),          // 1-pixel map: only the centre tap reads
                      conv_shape(2, 5, 5, 6, 4, 3, 2, 0),          // no padding, stride 2
                      conv_shape(2, 4, 4, 6, 6, 1, 1, 0, 3)));     // 1x1 grouped (pointwise ones are kd's)

TEST(OnednnConv, AsymmetricKernelStrideAndPadding) {
  KD_SKIP_WITHOUT_ONEDNN();
  Conv2dShape s = conv_shape(2, 8, 9, 3, 5, 3, 1, 1);
  s.kw = 2, s.stride_w = 2, s.pad_w = 0;
  const Results ref = run_all(CpuBackend::reference, s, false);
  const Results got = run_all(CpuBackend::onednn, s, true);
  EXPECT_LT(rel_l2(got.y, ref.y), 1e-5);
  EXPECT_LT(rel_l2(got.dx, ref.dx), 1e-5);
  EXPECT_LT(rel_l2(got.dw, ref.dw), 1e-5);
}

TEST(OnednnConv, PointwiseAndReferenceBackendAreNotTaken) {
  const Conv2dShape pointwise = conv_shape(2, 5, 5, 8, 4, 1, 1, 0), strided_1x1 = conv_shape(2, 6, 6, 4, 8, 1, 2, 0),
                    spatial = conv_shape(2, 5, 5, 8, 4, 3, 1, 1);
  std::vector<float> x(400, 1.0f), w(400, 1.0f), y(400, 0.0f);
  {
    ScopedCpuBackend reference(CpuBackend::reference);
    EXPECT_FALSE(conv2d_onednn_takes(spatial));
    EXPECT_FALSE(conv2d_forward_onednn(spatial, x.data(), w.data(), y.data()));
    EXPECT_NE(conv2d_onednn_describe(spatial).find(onednn_built() ? "reference" : "without oneDNN"),
              std::string::npos)
        << conv2d_onednn_describe(spatial);
  }
  if (!onednn_built()) return;
  ScopedCpuBackend fast(CpuBackend::onednn);
  EXPECT_FALSE(conv2d_onednn_takes(pointwise));
  EXPECT_FALSE(conv2d_onednn_takes(strided_1x1));
  EXPECT_TRUE(conv2d_onednn_takes(spatial));
  EXPECT_NE(conv2d_onednn_describe(spatial).find("forward"), std::string::npos) << conv2d_onednn_describe(spatial);
}

// Repeated calls with the same inputs give the same bits (the plans and scratch are reused), as
// bitwise resume on the CPU path needs for a fixed thread count.
TEST(OnednnConv, RepeatedCallsAreBitwiseEqual) {
  KD_SKIP_WITHOUT_ONEDNN();
  const Conv2dShape s = conv_shape(4, 12, 12, 24, 40, 3, 1, 1);
  const Results a = run_all(CpuBackend::onednn, s, true);
  const Results b = run_all(CpuBackend::onednn, s, true);
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.dx, b.dx);
  EXPECT_EQ(a.dw, b.dw);
}

TEST(CpuBackend, ParsesNamesAndRejectsUnknownOnes) {
  EXPECT_EQ(parse_cpu_backend("reference"), CpuBackend::reference);
  EXPECT_EQ(parse_cpu_backend("auto"), onednn_built() ? CpuBackend::onednn : CpuBackend::reference);
  try {
    parse_cpu_backend("mkl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'mkl'"), std::string::npos) << e.what();
  }
  if (!onednn_built()) {
    EXPECT_THROW(parse_cpu_backend("onednn"), Error);
  }
  EXPECT_FALSE(cpu_backend_describe().empty());
}

TEST(Gemm, OnednnSgemmMatchesBuiltinLoopForAllTransposes) {
  KD_SKIP_WITHOUT_ONEDNN();
  ScopedCpuBackend fast(CpuBackend::onednn);
  // Sizes that are not multiples of any vector width, leading dimensions wider than the matrix.
  const int64_t m = 37, n = 29, k = 53, pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      const auto a = random_vector<float>(size_t((ta ? k : m) * lda), 8);
      const auto b = random_vector<float>(size_t((tb ? n : k) * ldb), 9);
      std::vector<float> c1 = random_vector<float>(size_t(m * ldc), 10), c2 = c1;
      gemm_cpu<float>(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 2.0f, c1.data(), ldc);
      gemm_cpu_fallback<float>(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 2.0f, c2.data(), ldc);
      EXPECT_LT(rel_l2(c1, c2), 1e-5) << "trans_a " << ta << " trans_b " << tb;
    }
}

}  // namespace
}  // namespace kd
