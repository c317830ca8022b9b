// Row-major matrix product on the GPU with cuBLASLt, mirroring gemm_cpu:
//   C = alpha * op(A) * op(B) + beta * C,   op(A) [m, k], op(B) [k, n], C [m, n],
// bf16 A and B, fp32 accumulation (CUBLAS_COMPUTE_32F), C in bf16 or fp32. With beta == 0, C is
// not read (it may hold NaN). Leading dimensions in elements. Descriptors and the heuristic's
// algorithm are cached per shape; the workspace comes from CudaHandles.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

void gemm_cuda(const CudaHandles& h, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, bf16* c, int64_t ldc);
void gemm_cuda(const CudaHandles& h, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The row-major product as the column-major one cuBLAS computes. A row-major matrix with leading
// dimension ld is, read column-major, its transpose; so C^T = op(B)^T op(A)^T, i.e. cuBLAS's
// first operand is our B buffer and its second our A buffer. Shared with the CPU tests.
struct ColumnMajorOperand {
  bool transpose;  // cuBLAS op: CUBLAS_OP_T when true
  int64_t rows;    // of the stored column-major matrix (before op)
  int64_t cols;
  int64_t ld;
};
struct ColumnMajorGemm {
  int64_t m, n, k;              // cuBLAS's: D (m x n) = op(A) (m x k) * op(B) (k x n)
  ColumnMajorOperand a, b, c;   // a <- our B buffer, b <- our A buffer, c <- our C buffer
};

inline ColumnMajorGemm row_major_as_column_major(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                                                 int64_t lda, int64_t ldb, int64_t ldc) {
  ColumnMajorGemm g;
  g.m = n;
  g.n = m;
  g.k = k;
  // Our B is stored row-major as [k, n] (or [n, k] when transposed): column-major [n, k] (or [k, n]).
  g.a = trans_b ? ColumnMajorOperand{true, k, n, ldb} : ColumnMajorOperand{false, n, k, ldb};
  // Our A is stored row-major as [m, k] (or [k, m]): column-major [k, m] (or [m, k]).
  g.b = trans_a ? ColumnMajorOperand{true, m, k, lda} : ColumnMajorOperand{false, k, m, lda};
  g.c = ColumnMajorOperand{false, n, m, ldc};
  return g;
}

// Leading dimensions must cover a row of each row-major matrix; false names the first bad one.
inline bool gemm_leading_dims_ok(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                                 int64_t ldb, int64_t ldc, const char** bad = nullptr) {
  const char* which = nullptr;
  if (lda < (trans_a ? m : k) || lda < 1) which = "lda";
  else if (ldb < (trans_b ? k : n) || ldb < 1) which = "ldb";
  else if (ldc < n || ldc < 1) which = "ldc";
  if (bad) *bad = which;
  return which == nullptr;
}

}  // namespace kd
