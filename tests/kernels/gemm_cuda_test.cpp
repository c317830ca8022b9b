// cuBLASLt products against gemm_cpu. GemmCudaMapping runs everywhere: it evaluates the
// column-major problem gemm.cu hands to cuBLASLt, exactly as cuBLAS reads it, and compares it with
// the row-major product. The GemmCuda tests need a device.
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/gemm.h"
#include "kernels/gemm_cuda.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

struct GemmCase {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t pad;  // extra elements per row of A, B and C: leading dimensions larger than a row
};

std::vector<GemmCase> cases() {
  std::vector<GemmCase> all;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      all.push_back({ta, tb, 64, 96, 128, 0});
      all.push_back({ta, tb, 37, 53, 71, 3});  // odd sizes, odd leading dimensions
    }
  all.push_back({false, true, 128, 1000, 512, 0});  // a classifier head: x W^T
  all.push_back({true, false, 1000, 512, 128, 0});  // its weight gradient: dy^T x
  all.push_back({false, false, 128, 512, 1000, 0});  // its input gradient: dy W
  return all;
}

// Row-major storage of op(X) [rows, cols]: X itself is [cols, rows] when transposed.
int64_t stored_rows(bool trans, int64_t rows, int64_t cols) { return trans ? cols : rows; }
int64_t stored_cols(bool trans, int64_t rows, int64_t cols) { return trans ? rows : cols; }

struct Layout {
  int64_t lda, ldb, ldc, a_size, b_size, c_size;
};
Layout layout_of(const GemmCase& c) {
  Layout l;
  l.lda = stored_cols(c.trans_a, c.m, c.k) + c.pad;
  l.ldb = stored_cols(c.trans_b, c.k, c.n) + c.pad;
  l.ldc = c.n + c.pad;
  l.a_size = stored_rows(c.trans_a, c.m, c.k) * l.lda;
  l.b_size = stored_rows(c.trans_b, c.k, c.n) * l.ldb;
  l.c_size = c.m * l.ldc;
  return l;
}

// ---- CPU: the row-major -> column-major mapping -----------------------------------------------

// cuBLAS's definition: X(i, j) = X[i + j * ld] column-major; op transposes; D = alpha op(A) op(B) + beta C.
void column_major_gemm(const ColumnMajorGemm& g, double alpha, const double* a, const double* b, double beta,
                       double* c) {
  auto at = [](const ColumnMajorOperand& o, const double* x, int64_t i, int64_t j) {
    return o.transpose ? x[j + i * o.ld] : x[i + j * o.ld];
  };
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < g.k; ++p) acc += at(g.a, a, i, p) * at(g.b, b, p, j);
      double& out = c[i + j * g.c.ld];
      out = alpha * acc + beta * out;
    }
}

TEST(GemmCudaMapping, ColumnMajorProblemEqualsRowMajorProduct) {
  for (const GemmCase& c : cases()) {
    if (c.m * c.n * c.k > 2000000) continue;  // the naive loop stays quick
    const Layout l = layout_of(c);
    const ColumnMajorGemm g = row_major_as_column_major(c.trans_a, c.trans_b, c.m, c.n, c.k, l.lda, l.ldb, l.ldc);
    SCOPED_TRACE(testing::Message() << "ta " << c.trans_a << " tb " << c.trans_b << " m " << c.m << " n " << c.n
                                    << " k " << c.k << " pad " << c.pad);
    // What cuBLASLt's layouts promise: op(A) is m x k, op(B) k x n, C m x n, ld >= rows, in bounds.
    EXPECT_EQ(g.a.transpose ? g.a.cols : g.a.rows, g.m);
    EXPECT_EQ(g.a.transpose ? g.a.rows : g.a.cols, g.k);
    EXPECT_EQ(g.b.transpose ? g.b.cols : g.b.rows, g.k);
    EXPECT_EQ(g.b.transpose ? g.b.rows : g.b.cols, g.n);
    EXPECT_EQ(g.c.rows, g.m);
    EXPECT_EQ(g.c.cols, g.n);
    const std::pair<ColumnMajorOperand, int64_t> buffers[] = {{g.a, l.b_size}, {g.b, l.a_size}, {g.c, l.c_size}};
    for (const auto& [o, size] : buffers) {
      EXPECT_GE(o.ld, o.rows);
      EXPECT_LE((o.rows - 1) + (o.cols - 1) * o.ld, size - 1);
    }
    const auto a = random_vector<double>(size_t(l.a_size), 1), b = random_vector<double>(size_t(l.b_size), 2);
    auto expected = random_vector<double>(size_t(l.c_size), 3);
    auto got = expected;
    gemm_cpu<double>(c.trans_a, c.trans_b, c.m, c.n, c.k, 1.5, a.data(), l.lda, b.data(), l.ldb, 0.5,
                     expected.data(), l.ldc);
    column_major_gemm(g, 1.5, b.data(), a.data(), 0.5, got.data());  // cuBLAS's A is our B
    EXPECT_LT(rel_l2(got, expected), 1e-12);
  }
}

TEST(GemmCudaMapping, LeadingDimensionsShorterThanARowAreRejected) {
  const char* bad = nullptr;
  EXPECT_TRUE(gemm_leading_dims_ok(false, false, 4, 5, 6, 6, 5, 5, &bad));
  EXPECT_FALSE(gemm_leading_dims_ok(false, false, 4, 5, 6, 5, 5, 5, &bad));
  EXPECT_STREQ(bad, "lda");
  EXPECT_TRUE(gemm_leading_dims_ok(true, true, 4, 5, 6, 4, 6, 5, &bad));
  EXPECT_FALSE(gemm_leading_dims_ok(true, true, 4, 5, 6, 4, 5, 5, &bad));
  EXPECT_STREQ(bad, "ldb");
  EXPECT_FALSE(gemm_leading_dims_ok(false, false, 4, 5, 6, 6, 5, 4, &bad));
  EXPECT_STREQ(bad, "ldc");
}

// ---- GPU: against gemm_cpu -----------------------------------------------------------------

class GemmCuda : public ::testing::TestWithParam<GemmCase> {};

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::random_bf16;

template <typename C>
std::vector<C> host_c(const std::vector<float>& v);
template <>
std::vector<float> host_c<float>(const std::vector<float>& v) { return v; }
template <>
std::vector<bf16> host_c<bf16>(const std::vector<float>& v) { return test::to_bf16(v); }

float as_float(float v) { return v; }
float as_float(bf16 v) { return bf16_to_float(v); }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits(bf16 a, bf16 b) { return a.bits == b.bits; }

// C = alpha op(A) op(B) + beta C; with beta == 0 the old C is all NaN and must not leak in.
// Elements between n and ldc must keep their old bits. offset > 0 misaligns every pointer.
template <typename C>
void check_gemm(const GemmCase& c, float alpha, float beta, size_t offset = 0) {
  const Layout l = layout_of(c);
  const auto a = random_bf16(size_t(l.a_size), 51), b = random_bf16(size_t(l.b_size), 52);
  std::vector<C> c0 = host_c<C>(random_vector<float>(size_t(l.c_size), 53));
  if (beta == 0.0f) std::memset(c0.data(), 0xFF, c0.size() * sizeof(C));
  DeviceArray<bf16> da(a.bits, offset), db(b.bits, offset);
  DeviceArray<C> dc(c0, offset);
  gemm_cuda(test::cuda_test_context().cuda_handles(), c.trans_a, c.trans_b, c.m, c.n, c.k, alpha, da.get(), l.lda,
            db.get(), l.ldb, beta, dc.get(), l.ldc);
  const std::vector<C> got = dc.download();

  std::vector<float> expected(size_t(l.c_size));
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = beta == 0.0f ? 0.0f : as_float(c0[i]);
  gemm_cpu<float>(c.trans_a, c.trans_b, c.m, c.n, c.k, alpha, a.values.data(), l.lda, b.values.data(), l.ldb, beta,
                  expected.data(), l.ldc);
  std::vector<float> got_mn, expected_mn;
  bool padding_kept = true;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < l.ldc; ++j) {
      const size_t at = size_t(i * l.ldc + j);
      if (j < c.n) {
        got_mn.push_back(as_float(got[at]));
        expected_mn.push_back(expected[at]);
      } else {
        padding_kept = padding_kept && same_bits(got[at], c0[at]);
      }
    }
  EXPECT_LT(rel_l2(got_mn, expected_mn), 1e-2) << "alpha " << alpha << " beta " << beta << " offset " << offset;
  EXPECT_TRUE(padding_kept) << "elements between n and ldc were written";
}
#endif

TEST_P(GemmCuda, Bf16OutputMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_gemm<bf16>(GetParam(), 1.5f, 0.0f);
  check_gemm<bf16>(GetParam(), 1.0f, 0.5f);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(GemmCuda, Fp32OutputMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_gemm<float>(GetParam(), 1.5f, 0.0f);
  check_gemm<float>(GetParam(), 1.0f, 1.0f);  // gradient accumulation
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmCuda, ::testing::ValuesIn(cases()));

TEST(GemmCudaEdges, MisalignedPointersMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_gemm<bf16>({false, true, 37, 53, 71, 3}, 1.0f, 0.0f, 1);
  check_gemm<float>({true, false, 64, 96, 128, 0}, 1.0f, 1.0f, 1);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(GemmCudaEdges, EmptyInnerDimensionScalesC) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_gemm<float>({false, false, 7, 9, 0, 2}, 1.0f, 0.5f);
  check_gemm<bf16>({false, false, 7, 9, 0, 2}, 1.0f, 0.0f);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
