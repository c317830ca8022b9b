// Row-major matrix product on the CPU: C = alpha * op(A) * op(B) + beta * C, with op(X) = X or
// X^T, leading dimensions in elements. fp32: oneDNN's sgemm under the onednn CPU backend
// (cpu_backend.h), else OpenBLAS when available, else a blocked loop. fp64: OpenBLAS or the loop.
// T is float (the CPU path) or double (the gradient checker).
#pragma once
#include <cstdint>

namespace kd {

template <typename T>
void gemm_cpu(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// The same product with the built-in loop, whatever the build: the test compares the two.
template <typename T>
void gemm_cpu_fallback(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                       int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace kd
