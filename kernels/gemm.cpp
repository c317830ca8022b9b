#include "kernels/gemm.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu_backend.h"

#if KD_HAVE_OPENBLAS
#include <cblas.h>
#endif
#if KD_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace kd {

template <typename T>
void gemm_cpu_fallback(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                       int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  auto A = [&](int64_t i, int64_t p) { return trans_a ? a[p * lda + i] : a[i * lda + p]; };
  auto B = [&](int64_t p, int64_t j) { return trans_b ? b[j * ldb + p] : b[p * ldb + j]; };
  // Rows of C in parallel; within a row, k in blocks so a block of B's rows stays in cache.
  const int64_t kb = 256;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    T* crow = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) crow[j] = beta == T(0) ? T(0) : beta * crow[j];
    for (int64_t p0 = 0; p0 < k; p0 += kb) {
      const int64_t p1 = std::min(k, p0 + kb);
      for (int64_t p = p0; p < p1; ++p) {
        const T av = alpha * A(i, p);
        if (av == T(0)) continue;
        for (int64_t j = 0; j < n; ++j) crow[j] += av * B(p, j);
      }
    }
  }
}

#if KD_HAVE_OPENBLAS
namespace {
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
               const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
}  // namespace
#endif

template <typename T>
void gemm_cpu(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
#if KD_HAVE_ONEDNN
  // oneDNN's JIT sgemm (same row-major contract): 2-4x OpenBLAS 0.3.21 on the CPU path's skinny
  // products, and it does not depend on OpenBLAS knowing the CPU (cpu_backend.h).
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_backend() == CpuBackend::onednn) {
      const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                          beta, c, ldc);
      KD_CHECK(st == dnnl_success, "gemm (oneDNN sgemm) failed with status ", int(st), " for m ", m, " n ", n, " k ",
               k);
      return;
    }
  }
#endif
#if KD_HAVE_OPENBLAS
  blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
  gemm_cpu_fallback(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

#define KD_INSTANTIATE_GEMM(T)                                                                              \
  template void gemm_cpu<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, \
                            T*, int64_t);                                                                   \
  template void gemm_cpu_fallback<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,   \
                                     int64_t, T, T*, int64_t);
KD_INSTANTIATE_GEMM(float)
KD_INSTANTIATE_GEMM(double)

}  // namespace kd
